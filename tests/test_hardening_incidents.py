"""Hardening of incident batches, replay, export-case and Runtime.history (issue 18), on
SQLite and PostgreSQL: each test is a defect found by trying to break them."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import yaml
from click.testing import CliRunner
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import POLICY, RECEIPT, WF, at, policy_path, rt, send, write_policy  # noqa: F401  (fixtures)

from policy_engine.cli import main
from policy_engine.replay import changed_executions, replay
from policy_engine.runtime import RuntimeUsageError

STRICTER = POLICY.replace("action.amount > 1000.0", "action.amount > 400.0")
REVERSAL = ("rollback policy_reversal {\n    route customer_service\n    authorize 1 customer_service\n  }\n\n"
            "  rollback customer_request {")


def _sends(rt, amounts=(500.0, 450.0, 60.0), receipt=None):
    """Executed sends (one every 10 s from at(0)); returns amount -> (decision, execution)."""
    out = {}
    for i, amount in enumerate(amounts):
        g = rt.gate(send(amount, id=f"s{i}"), now=at(10 * i))
        if g.effect == "require_approval":
            rt.approve(g.decision_id, principal="sam", roles=["reviewer"], now=at(10 * i + 1))
        x = rt.executed(g.decision_id, receipt=receipt or RECEIPT, now=at(10 * i + 2))
        out[amount] = (g.decision_id, x.execution_id)
    return out


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


# ------------------------------------------------------------------------------ incident batches
def test_a_select_that_errors_on_some_executions_records_no_batch_and_names_each(rt, ledger_url, policy_path):  # noqa: F811
    """A receipt field missing on one execution and of the wrong type on another: the
    select cannot tell whether they belong to the incident. Before, the batch was recorded
    with the others (the approver saw no sign of the gap); now nothing is recorded and
    every execution it failed on is named (the CLI exits 1)."""
    h = _sends(rt, receipt={**RECEIPT, "amount": 5000})
    g = rt.gate(send(50.0, id="str"), now=at(40))
    odd = rt.executed(g.decision_id, receipt={**RECEIPT, "amount": "5000"}, now=at(41)).execution_id
    g = rt.gate(send(50.0, id="none"), now=at(42))
    bare = rt.executed(g.decision_id, receipt=RECEIPT, now=at(43)).execution_id
    n = rt.ledger.size
    for dry in (True, False):
        b = rt.request_bulk_rollback("original.receipt.amount > 1000", "customer_request", "rita", "r", now=at(100),
                                     dry_run=dry)
        assert b.batch_id is None and b.rollbacks == () and b.originals == () and b.batch_hash == ""
        assert b.selected == 3
        assert {e["execution"]: e["error"] for e in b.errors} == {odd: "no such overload: _>_(string, int)",
                                                                 bare: "no such key: 'amount'"}
    assert rt.ledger.size == n
    args = ["rollback", "--select", "original.receipt.amount > 1000", "--scenario", "customer_request",
            "--requested-by", "rita", "--reason", "r", "-p", policy_path, "--ledger", ledger_url]
    res = _cli(*args)
    assert res.exit_code == 1 and "the select failed on 2 execution(s)" in res.output
    assert odd in res.output and bare in res.output and "Traceback" not in res.output
    res = _cli(*args, "--format", "json")
    assert res.exit_code == 1 and len(json.loads(res.output)["errors"]) == 2
    assert rt.ledger.size == n
    # a select that decides every execution plans them all
    ok = "has(original.receipt.amount) && type(original.receipt.amount) == int && original.receipt.amount > 1000"
    b = rt.request_bulk_rollback(ok, "customer_request", "rita", "r", now=at(100))
    assert b.errors == () and sorted(b.originals) == sorted(x for _, x in h.values())


def test_odd_execution_bodies_fail_closed_per_execution_never_crash_the_batch(rt):
    """Execution entries written by another recorder (`stopline ledger append execution`)
    with flags that are not a list, a receipt that is not an object, a `caused_by` or
    `type` that is not a string: a select that reads them errors on that execution alone
    (named), a plan reads no receipt fields from a non-object, and the cascade walk skips
    links it cannot read. Before, each was a TypeError or AttributeError for the whole batch."""
    h = _sends(rt, (60.0,))
    parent = h[60.0][1]
    led = rt.ledger
    flags = led.append("execution", {"type": "send", "receipt": RECEIPT, "authorized": True, "flags": 5},
                       workflow=WF).id
    listed = led.append("execution", {"type": "send", "receipt": ["a"], "authorized": True}, workflow=WF).id
    led.append("execution", {"type": "log", "receipt": {"note": "n"}, "authorized": True, "caused_by": [parent]},
               workflow=WF, links=[parent])
    typed = led.append("execution", {"type": ["send"], "receipt": RECEIPT, "authorized": True}, workflow=WF,
                       links=[parent]).id
    led.append("execution", {"type": "log", "receipt": {"note": "n"}, "authorized": True, "caused_by": typed},
               workflow=WF, links=[typed])
    b = rt.request_bulk_rollback("original.flags.size() == 0", "customer_request", "rita", "r", now=at(100),
                                 dry_run=True)
    assert [e["execution"] for e in b.errors] == [flags] and b.batch_id is None
    b = rt.request_bulk_rollback("original.type == 'send' && original.receipt.ticket == 'T-1'", "customer_request",
                                 "rita", "r", now=at(100), dry_run=True)
    assert {e["execution"] for e in b.errors} == {listed}
    # selected by id: planned (or refused by the engine), never a crash
    b = rt.request_bulk_rollback(f"original.id in ['{parent}', '{listed}', '{typed}']", "customer_request", "rita",
                                 "r", now=at(100))
    assert b.errors == () and b.batch_id is not None and parent in b.originals
    assert {r["execution"] for r in b.refused} >= {typed}
    plan = led.get(b.rollbacks[b.originals.index(parent)]).body
    assert plan["cascade"] == []  # the child whose `caused_by` is a list was not followed
    assert listed in b.originals or listed in {r["execution"] for r in b.refused}


def test_a_single_rollback_skips_a_child_whose_caused_by_it_cannot_read(rt):
    """The same odd child under a single `request_rollback`: not followed (it was a TypeError)."""
    h = _sends(rt, (60.0,))
    parent = h[60.0][1]
    rt.ledger.append("execution", {"type": "log", "receipt": {"note": "n"}, "authorized": True,
                                   "caused_by": [parent]}, workflow=WF, links=[parent])
    p = rt.request_rollback(parent, scenario="customer_request", requested_by="rita", reason="r", now=at(100))
    assert p.rollback_id is not None and rt.ledger.get(p.rollback_id).body["cascade"] == []


def test_since_and_until_below_the_microsecond_keep_an_execution_on_its_side_of_the_bound(rt):
    """An execution recorded at 12:00:02.000000 is before 12:00:02.0000005: `until` that
    instant takes it, `since` it does not. The bounds were truncated to the microsecond
    (the execution was on the wrong side of both)."""
    h = _sends(rt)
    first = h[500.0][1]  # recorded at at(2)

    def originals(**kw):
        return set(rt.request_bulk_rollback('original.type == "send"', "customer_request", "rita", "r",
                                            now=at(100), dry_run=True, **kw).originals)

    assert first in originals(until="2026-11-26T12:00:02.0000005Z")
    assert first not in originals(since="2026-11-26T12:00:02.0000005Z")
    assert first in originals(since="2026-11-26T12:00:02.000000000Z")  # exactly the bound: in
    assert first not in originals(until="2026-11-26T14:00:02+02:00")  # the same instant in another zone: out
    assert first in originals(since=at(2).astimezone(__import__("datetime").timezone(timedelta(hours=-5))))
    b = rt.request_bulk_rollback('original.type == "send"', "customer_request", "rita", "r", now=at(100),
                                 until="2026-11-26T12:00:02.0000005Z")
    assert rt.ledger.get(b.batch_id).body["until"] == "2026-11-26T12:00:02.000001Z"


def test_replay_bounds_below_the_microsecond_round_up_in_the_api_and_the_cli(rt, ledger_url, policy_path):  # noqa: F811
    _sends(rt)  # decisions at at(0), at(10), at(20)
    assert replay(str(policy_path), ledger_url, until="2026-11-26T12:00:00.0000001Z").replayed == 1
    assert replay(str(policy_path), ledger_url, since="2026-11-26T12:00:00.0000001Z").replayed == 2
    for flag, want in (("--until", 1), ("--since", 2)):
        res = _cli("replay", policy_path, "--ledger", ledger_url, "--format", "json", flag,
                   "2026-11-26T12:00:00.0000001Z")
        assert res.exit_code == 0 and json.loads(res.output)["replayed"] == want, res.output


# ------------------------------------------------------------------------------ replay
def test_replay_counts_add_up_and_an_odd_recorded_decision_is_unreplayable_not_a_crash(rt, ledger_url,  # noqa: F811
                                                                                       policy_path, tmp_path):
    """replayed = changed + unchanged + unreplayable (the unreplayable were left out of
    `replayed`); a decision another recorder wrote with a policy hash or an effect that is
    not a string crashed the replay (unhashable list)."""
    _sends(rt)
    rt.ledger.append("decision", {"action": "text", "action_error": "not JSON", "decision": {"effect": "deny"},
                                  "policy_hash": "h"}, workflow=WF)
    odd = rt.ledger.append("decision", {"action": send(500.0), "decision": {"effect": ["allow"]},
                                        "policy_hash": ["h"]}, workflow=WF).id
    cand = tmp_path / "cand.policy"
    cand.write_text(STRICTER)
    for pol in (policy_path, cand):
        r = replay(str(pol), ledger_url)
        assert r.replayed == 5 == len(r.changed) + r.unchanged + len(r.unreplayable)
        assert len(r.unreplayable) == 1
        assert odd in {c.decision_id for c in r.changed}  # its recorded effect is unknown: `?`
        assert next(c for c in r.changed if c.decision_id == odd).old_effect == "?"
    res = _cli("replay", cand, "--ledger", ledger_url)
    assert res.exit_code == 0 and "replayed 5 decision(s)" in res.output and "1 unreplayable" in res.output


def test_replay_as_rollback_that_cannot_plan_says_so_and_exits_1(rt, ledger_url, tmp_path):  # noqa: F811
    """A candidate without the scenario: every stricter execution is refused. It said `no
    changed decision was executed` and exited 0; run again after a batch, the executions
    already being rolled back were reported the same way."""
    h = _sends(rt)
    cand = tmp_path / "cand.policy"
    cand.write_text(STRICTER)  # declares no policy_reversal
    res = _cli("replay", cand, "--ledger", ledger_url, "--as-rollback", "policy_reversal")
    assert res.exit_code == 1, res.output
    assert "2 could not be planned" in res.output and "not declared" in res.output
    res = _cli("replay", cand, "--ledger", ledger_url, "--as-rollback", "policy_reversal", "--format", "json")
    assert res.exit_code == 1 and len(json.loads(res.output)["batch"]["refused"]) == 2
    cand.write_text(STRICTER.replace("rollback customer_request {", REVERSAL))
    res = _cli("replay", cand, "--ledger", ledger_url, "--as-rollback", "policy_reversal")
    assert res.exit_code == 0 and "2 rollback(s)" in res.output, res.output
    first_batch = res.output.split("\nbatch ", 1)[1].split(" ", 1)[0]  # run again: that batch is named
    res = _cli("replay", cand, "--ledger", ledger_url, "--as-rollback", "policy_reversal")
    assert res.exit_code == 0 and "recorded before by this same request" in res.output, res.output
    assert "2 rollback(s)" in res.output and first_batch in res.output
    assert sorted(changed_executions(replay(str(cand), ledger_url))) == sorted([h[500.0][1], h[450.0][1]])


# ------------------------------------------------------------------------------ export-case
SUITE_STOPPED = """\
suite: stopped by default
policies: [replies.policy]
now: "2026-11-26T12:00:00Z"
workflow_state: {status: stopped, stopped_by: bad_promise, stopped_at: "2026-11-26T11:00:00Z"}

cases:
  - name: while stopped
    gate: {action: {workflow: replies, type: send, amount: 5.0, promise: false}}
    expect: {effect: stop}
"""


def test_an_exported_case_keeps_the_running_state_it_was_decided_in(rt, ledger_url, tmp_path):  # noqa: F811
    """A decision taken while the workflow ran, exported into a suite whose default
    `workflow_state` is stopped: the case had no state of its own, so it ran as stopped and
    passed under the old policy (`expect stop` for a recorded `allow`). It says null now."""
    g = rt.gate(send(50.0, id="r1"), now=at(0))
    assert g.effect == "allow"
    suite = tmp_path / "s.policy-test.yaml"
    suite.write_text(SUITE_STOPPED)
    res = _cli("ledger", "export-case", g.decision_id, "--expect", "stop", "--suite", suite, "--ledger", ledger_url)
    assert res.exit_code == 0, res.output
    new = yaml.safe_load(suite.read_text())["cases"][-1]
    assert "workflow_state" in new["gate"] and new["gate"]["workflow_state"] is None
    assert set(new) == {"name", "now", "gate", "expect"} and set(new["gate"]) == {"action", "workflow_state"}
    res = _cli("test", suite)
    assert res.exit_code == 1 and "1 passed, 1 failed" in res.output, res.output  # fails under the old policy


def test_an_odd_action_round_trips_into_the_case_exactly(rt, ledger_url, tmp_path):  # noqa: F811
    from policy_engine.runtime.recorded import recorded_action
    from policy_engine.testing import load_suite
    from policy_engine.testing.resolve import Resolver

    act = send(500.0, id="u1", note="héllo \u2028 line\x85next \t tab \U0001F600 \"q\" 'q' #c : y",
               nested={"a": [1, {"b": [[[{"c": None}]]]}], "<<": "merge", "=": "v", "yes": "no", "on": True,
                       "~": None, "1e3": "1e3", "": "empty"},
               big=2**53 - 1, small=-(2**53 - 1), f=1e300, tiny=5e-324, s1="0x1F", s2="2026-11-26", s3="null",
               s4="a\nb", s5=" lead", s6="trail ")
    g = rt.gate(act, now=at(0))
    suite = tmp_path / "m.policy-test.yaml"
    res = _cli("ledger", "export-case", g.decision_id, "--expect", "deny", "--suite", suite, "--ledger", ledger_url,
               "--policies", tmp_path / "replies.policy")
    assert res.exit_code == 0, res.output
    s = load_suite(suite)
    assert s.ok and s.doc is not None
    resolved = Resolver(s).gate(s.doc.data["cases"][0]["gate"], ("cases", 0, "gate"))
    assert resolved is not None
    # the action as gated (`500.0` a double again: runtime.recorded; tests/test_recorded_doubles.py)
    recorded = recorded_action(rt.ledger.get(g.decision_id).body)
    assert json.dumps(resolved["action"], sort_keys=True) == json.dumps(recorded, sort_keys=True)
    assert resolved["workflow_state"] is None
    res = _cli("test", suite)
    assert res.exit_code == 1 and "0 passed, 1 failed" in res.output


# ------------------------------------------------------------------------------ Runtime.history
def test_runtime_history_is_bounded_and_says_when_it_was_cut(rt):
    """A decision with many executions (each with its own view, approvals, rollbacks) was
    walked whole; now at most `limit` linked entries, the lowest seq first, and
    `truncated` says when the history is incomplete."""
    g = rt.gate(send(500.0), now=at(0))
    rt.approve(g.decision_id, principal="sam", roles=["reviewer"], now=at(1))
    xs = [rt.executed(g.decision_id, receipt=RECEIPT, now=at(2 + i)).execution_id for i in range(6)]
    full = rt.history(g.decision_id)
    assert full["truncated"] is False and full["limit"] == 10_000
    assert [x["entry"]["id"] for x in full["executions"]] == xs
    assert rt.history(g.decision_id, limit=None)["truncated"] is False
    cut = rt.history(g.decision_id, limit=4)
    assert cut["truncated"] is True and cut["limit"] == 4
    assert len(cut["decision"]["approvals"]) == 1  # the nearest first: the approval, then executions
    assert [x["entry"]["id"] for x in cut["executions"]] == xs[:3]
    exact = rt.history(xs[0], limit=2)  # its decision's approval and its (no) links: all of it
    assert exact["truncated"] is False
    for bad in (-1, "3", True, 1.5):
        with pytest.raises(RuntimeUsageError, match="`limit`"):
            rt.history(g.decision_id, limit=bad)


def test_a_large_ledger_is_judged_page_by_page_and_not_held_whole(rt, monkeypatch):
    """The select's pool was the whole (time-bounded) ledger in memory, chosen or not:
    91 MB at 40,000 executions for a select that matched none (measured with tracemalloc;
    45 MB now, and 45 MB at 80,000). The executions not chosen are kept only up to
    `_HOLD` (for the cascades; the rest are read again), and the plan is the same."""
    from policy_engine.runtime import bulk

    xs = []
    for i in range(6):
        g = rt.gate(send(60.0, id=f"s{i}"), now=at(10 * i))
        x = rt.executed(g.decision_id, receipt=RECEIPT, now=at(10 * i + 1)).execution_id
        lg = rt.gate({"workflow": WF, "type": "log"}, now=at(10 * i + 2))
        rt.executed(lg.decision_id, receipt={"note": "n"}, caused_by=x, now=at(10 * i + 3))
        xs.append(x)
    sel = 'original.type == "send"'
    want = rt.request_bulk_rollback(sel, "customer_request", "rita", "r", now=at(100), dry_run=True)
    held: list[int] = []
    real = bulk._graphs

    def graphs(c, eng, roots, known, *a):
        held.append(len(known))
        return real(c, eng, roots, known, *a)

    monkeypatch.setattr(bulk, "_graphs", graphs)
    monkeypatch.setattr(bulk, "_HOLD", 2)
    monkeypatch.setattr(bulk, "_PAGE", 3)
    got = rt.request_bulk_rollback(sel, "customer_request", "rita", "r", now=at(100), dry_run=True)
    assert held == [6 + 2]  # the six chosen and two others, not all twelve
    assert (got.originals, got.records, got.batch_hash) == (want.originals, want.records, want.batch_hash)
    assert got.records == 12 and sorted(got.originals) == sorted(xs)
