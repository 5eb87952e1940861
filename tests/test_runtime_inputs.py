"""Bad input at the runtime's edge (SQLite and PostgreSQL): a lone surrogate anywhere gets a
clear error or a recorded deny, never the database driver's encoding error; an action the
ledger cannot record exactly is never permitted (gate, gate_many, the gate's body encoder);
an idempotency key names one request of one kind for one subject (executed and step, as
gate); a workflow name that is not a string is refused; a plan shows what another rollback
already covers."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import RECEIPT, WF, at, policy_path, rt, send, write_policy  # noqa: F401  (fixtures)

from policy_engine.cli import main
from policy_engine.ledger import IdempotencyConflict, InvalidEntry
from policy_engine.replay import replay
from policy_engine.runtime import RuntimeUsageError, gatejson
from policy_engine.runtime.runtime import dumps

LONE = "\ud800"


def _unchanged(rt, fn, err, match=None):
    """``fn()`` raises ``err`` (matching) and records nothing."""
    size = rt.ledger.size
    with pytest.raises(err, match=match):
        fn()
    assert rt.ledger.size == size


# ------------------------------------------------------------------ 1. lone surrogates
@pytest.mark.parametrize("field", ["workflow", "type", "id", "note", "key"])
def test_a_lone_surrogate_in_a_gated_action_is_a_recorded_deny_not_an_encoding_error(rt, field):
    a = send(10.0)
    if field == "key":
        a["nested"] = {f"k{LONE}": 1}
    else:
        a[field] = f"x{LONE}"
    size = rt.ledger.size
    g = rt.gate(a, now=at(0))
    assert g.effect == "deny" and rt.ledger.size == size + 1
    e = rt.ledger.get(g.decision_id)
    assert e.body["decision"]["effect"] == "deny" and "lone surrogate" in e.body["action_error"]
    assert isinstance(e.body["action"], str) and "\\ud800" in e.body["action"]  # the repr, escaped
    assert e.workflow == (None if field == "workflow" else WF)  # a name the ledger cannot store: none
    [m] = rt.gate_many([a], now=at(1))
    assert m.effect == "deny" and rt.ledger.get(m.decision_id).body["decision"]["effect"] == "deny"
    x = rt.executed(g.decision_id, receipt=RECEIPT, now=at(2))
    assert not x.authorized
    assert rt.ledger.verify().ok


def test_a_lone_surrogate_in_an_argument_is_a_clear_error_and_records_nothing(rt):
    g = rt.gate(send(10.0), now=at(0))
    _unchanged(rt, lambda: rt.gate(send(10.0), key=f"k{LONE}", now=at(1)), InvalidEntry, "`key`")
    _unchanged(rt, lambda: rt.executed(g.decision_id, receipt=RECEIPT, key=LONE, now=at(1)), InvalidEntry, "`key`")
    _unchanged(rt, lambda: rt.executed(None, receipt=RECEIPT, action={"workflow": LONE, "type": "send"}, now=at(1)),
               InvalidEntry, "lone surrogate")
    _unchanged(rt, lambda: rt.workflow_status(LONE), RuntimeUsageError, "`workflow`")
    _unchanged(rt, lambda: rt.resume(LONE, evidence={}, principal="ops", now=at(1)), RuntimeUsageError, "`workflow`")
    _unchanged(rt, lambda: rt.queue(LONE), RuntimeUsageError, "`route`")
    _unchanged(rt, lambda: rt.queue(after=LONE), RuntimeUsageError, "`after`")
    for call in (lambda: rt.history(LONE), lambda: rt.authorization(LONE),
                 lambda: rt.approve(LONE, principal="sam", roles=["reviewer"], now=at(1)),
                 lambda: rt.executed(LONE, receipt=RECEIPT, now=at(1)),
                 lambda: rt.request_rollback(LONE, scenario="customer_request", requested_by="r", reason="r"),
                 lambda: rt.step(LONE, "notify:customer", "completed"),
                 lambda: rt.batch_status(LONE), lambda: rt.batch_step(LONE, "d", "completed"),
                 lambda: rt.approve_batch(LONE, principal="sam", batch_hash="h"),
                 lambda: rt.request_bulk_rollback(None, "customer_request", "rita", "r", executions=[LONE])):
        _unchanged(rt, call, RuntimeUsageError)
    x = rt.executed(g.decision_id, receipt=RECEIPT, now=at(2))
    p = rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita", reason="r", now=at(3))
    _unchanged(rt, lambda: rt.step(p.rollback_id, f"notify:{LONE}", "completed", now=at(4)), RuntimeUsageError,
               "`duty`")
    _unchanged(rt, lambda: rt.step(p.rollback_id, "notify:customer", "completed", key=LONE, now=at(4)), InvalidEntry)
    # every message is printable and sendable (UTF-8): no lone surrogate echoed back
    for call in (lambda: rt.history(LONE), lambda: rt.gate(send(10.0), key=LONE)):
        with pytest.raises((RuntimeUsageError, InvalidEntry)) as info:
            call()
        str(info.value).encode("utf-8")
    assert rt.ledger.verify().ok


# ------------------------------------------------------------------ 2. what the ledger cannot record exactly
UNRECORDABLE = {"nan": math.nan, "inf": -math.inf, "int": 2**60, "surrogate": LONE}


@pytest.mark.parametrize("kind", sorted(UNRECORDABLE))
@pytest.mark.parametrize("amount", [10.0, 500.0])  # the policy says allow, require_approval
def test_an_action_the_ledger_cannot_record_exactly_is_denied_by_gate_and_gate_many(rt, kind, amount):
    a = send(amount, note={"deep": [UNRECORDABLE[kind]]})  # a field no rule reads
    assert rt.engine.evaluate(a, None, at(0)).effect == ("allow" if amount < 100 else "require_approval")
    out = [rt.gate(a, now=at(0)), *rt.gate_many([send(20.0), a], now=at(1))]
    assert [g.effect for g in out] == ["deny", "allow", "deny"]
    for g in (out[0], out[2]):
        assert g.decision.deciding.kind == "error" and g.decision.deciding.name == "unrecordable action"
        assert "`action.note.deep[0]`" in g.reason and g.decision.approvals == () and g.decision.action_digest is None
        e = rt.ledger.get(g.decision_id)
        assert e.body["decision"] == g.decision.model_dump(mode="json")  # what was returned is what was recorded
        assert e.body["action_error"] in g.reason and e.top("pending_until") is None  # nothing awaits approval
        assert rt.authorization(g.decision_id, now=at(2)).status == "refused"
        x = rt.executed(g.decision_id, receipt=RECEIPT, now=at(3))
        assert not x.authorized and "the decision is `deny`" in x.reasons
    r = replay(rt.engine, rt.ledger)  # a replay cannot re-evaluate them: listed, never counted as unchanged
    assert {u["decision_id"] for u in r.unreplayable} == {out[0].decision_id, out[2].decision_id}
    assert rt.ledger.verify().ok


def test_a_stop_trigger_still_stops_the_workflow_on_an_unrecordable_action(rt):
    g = rt.gate(send(10.0, promise=True, note=math.nan), now=at(0))
    assert g.effect == "stop" and g.stopped and rt.workflow_status(WF)["status"] == "stopped"
    assert "not finite" in rt.ledger.get(g.decision_id).body["action_error"]


def test_the_gate_body_encoder_refuses_a_permitting_decision_of_an_unrecordable_action(rt):
    a = send(10.0, note=math.nan)
    text, shown, problem = gatejson.recordable(a)
    assert text is None and problem and "`action.note` is not finite" in problem and "nan" in shown
    d = rt.engine.evaluate(a, None, at(0))
    assert d.effect == "allow"
    with pytest.raises(InvalidEntry, match="only with a deny or a stop"):
        gatejson.gate_body(None, shown, problem, d, "2026-11-26T12:00:00.000000Z", None)
    denied = gatejson.fail_closed(d, problem)
    assert denied.effect == "deny" and problem in denied.reason and "`allow`" in denied.reason
    assert gatejson.fail_closed(denied, problem) is denied and gatejson.fail_closed(d, None) is d
    assert isinstance(gatejson.gate_body(None, shown, problem, denied, "2026-11-26T12:00:00.000000Z", None), dict)


# ------------------------------------------------------------------ 3. idempotency keys
def test_executed_with_a_used_key_answers_only_the_same_request(rt):
    g1, g2 = rt.gate(send(10.0, id="a"), now=at(0)), rt.gate(send(20.0, id="b"), now=at(0))
    gk = rt.gate(send(30.0, id="c"), key="g-key", now=at(0))
    x = rt.executed(g1.decision_id, receipt=RECEIPT, key="x-key", now=at(1))
    again = rt.executed(g1.decision_id, receipt=RECEIPT, key="x-key", now=at(2))
    assert again.execution_id == x.execution_id and again.authorized
    size = rt.ledger.size
    with pytest.raises(IdempotencyConflict, match="another decision"):
        rt.executed(g2.decision_id, receipt=RECEIPT, key="x-key", now=at(3))
    with pytest.raises(IdempotencyConflict, match="`decision`"):  # a key of a gate decision
        rt.executed(gk.decision_id, receipt=RECEIPT, key="g-key", now=at(3))
    with pytest.raises(IdempotencyConflict):  # the same key without a decision: another request
        rt.executed(None, receipt=RECEIPT, action={"workflow": WF, "type": "send"}, key="x-key", now=at(3))
    assert rt.ledger.size == size
    act = {"workflow": WF, "type": "other", "id": "o1"}
    u = rt.executed(None, receipt={"note": "n"}, action=act, key="u-key", now=at(4))
    assert rt.executed(None, receipt={"note": "n"}, action=dict(act), key="u-key", now=at(5)).execution_id \
        == u.execution_id
    with pytest.raises(IdempotencyConflict, match="another action"):
        rt.executed(None, receipt={"note": "n"}, action={**act, "id": "o2"}, key="u-key", now=at(6))
    with pytest.raises(IdempotencyConflict):
        rt.executed(g1.decision_id, receipt=RECEIPT, key="u-key", now=at(6))
    with pytest.raises(IdempotencyConflict):  # and gate, as before: a key of an execution
        rt.gate(send(10.0, id="a"), key="x-key", now=at(6))
    assert rt.ledger.size == size + 1 and not rt.executed(g2.decision_id, receipt=RECEIPT, now=at(7)).flags


def test_step_with_a_used_key_answers_only_the_same_report(rt):
    g = rt.gate(send(10.0), now=at(0))
    x = rt.executed(g.decision_id, receipt=RECEIPT, now=at(1))
    p = rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita", reason="r", now=at(2))
    rt.approve(p.rollback_id, principal="casey", roles=["customer_service"], now=at(3))
    rid = p.rollback_id
    s = rt.step(rid, x.execution_id, "started", key="k", now=at(4))
    again = rt.step(rid, x.execution_id, "started", key="k", now=at(5))
    assert (again.recorded, again.step_id) == (False, s.step_id)
    size = rt.ledger.size
    for duty, status in ((x.execution_id, "completed"), ("notify:customer", "started")):
        with pytest.raises(IdempotencyConflict, match="`started` of"):
            rt.step(rid, duty, status, key="k", now=at(6))
    rt.gate(send(10.0), key=f"step:{rid}:g", now=at(6))  # a gate's key where a step's would be
    with pytest.raises(IdempotencyConflict, match="a `decision`"):
        rt.step(rid, x.execution_id, "completed", key="g", now=at(7))
    assert rt.ledger.size == size + 1
    assert rt.step(rid, x.execution_id, "completed", key="k2", now=at(8)).recorded
    # keys are per rollback: another rollback's `k` is its own
    g2 = rt.gate(send(10.0, id="two"), now=at(9))
    x2 = rt.executed(g2.decision_id, receipt=RECEIPT, now=at(10))
    p2 = rt.request_rollback(x2.execution_id, scenario="customer_request", requested_by="rita", reason="r",
                             now=at(11))
    assert rt.step(p2.rollback_id, x2.execution_id, "started", key="k", now=at(12)).recorded


# ------------------------------------------------------------------ 5. a workflow name is a string
def test_workflow_status_refuses_what_is_not_a_workflow_name(rt, ledger_url, policy_path):  # noqa: F811
    for bad in (5, None, "", ["replies"], {"name": "replies"}, True):
        with pytest.raises(RuntimeUsageError, match="`workflow` is a non-empty string"):
            rt.workflow_status(bad)
    assert rt.workflow_status(WF)["status"] == "running"
    runner = CliRunner()
    for payload, msg in (({"workflow": 5}, "`workflow` is a non-empty string, not 5"),
                         ({"workflow": None}, "not null"), ({"workflow": LONE}, "lone surrogate")):
        r = runner.invoke(main, ["rt", "status", "--ledger", ledger_url, "-i", "-"], input=json.dumps(payload))
        assert r.exit_code == 2 and r.output.count("\n") == 1 and msg in r.output, r.output
        assert "running" not in r.output and "Traceback" not in r.output
    r = runner.invoke(main, ["rt", "status", "--ledger", ledger_url, "-i", "-"], input=json.dumps({"workflow": WF}))
    assert r.exit_code == 0 and json.loads(r.output)["status"] == "running"


# ------------------------------------------------------------------ 6. what another rollback covers
def test_a_rollback_request_shows_the_cascade_records_another_rollback_covers(rt):
    g = rt.gate(send(10.0), now=at(0))
    x = rt.executed(g.decision_id, receipt=RECEIPT, now=at(1))
    lg = rt.gate({"workflow": WF, "type": "log", "id": "l"}, now=at(2))
    child = rt.executed(lg.decision_id, receipt={"note": "n"}, caused_by=x.execution_id, now=at(3))
    first = rt.request_rollback(child.execution_id, scenario="customer_request", requested_by="rita", reason="r",
                                now=at(4))
    assert first.covered == ()
    p = rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita", reason="r", now=at(5))
    want = ({"record": child.execution_id, "rollback": first.rollback_id, "parent": x.execution_id},)
    assert p.covered == want and tuple(rt.ledger.get(p.rollback_id).body["covered"]) == want
    assert json.loads(dumps(p))["covered"] == list(want)
    same = rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="bo", reason="r", now=at(6))
    assert same.existing and same.covered == want  # the rollback answered is that plan, covered records too
