"""The Runtime's lifecycle on the ledger (issue 17), the same test functions on SQLite and
PostgreSQL: state comes from the ledger, approvals are bound, expiring and single use,
plans come from the record, execution is tracked to the end, history both ways."""

from __future__ import annotations

import threading

import pytest
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import RECEIPT, WF, at, policy_path, rt, send, write_policy  # noqa: F401  (fixtures)

import policy_engine
from policy_engine import Runtime
from policy_engine.runtime import RuntimeUsageError


def _approved_send(rt, t=0):
    g = rt.gate(send(500.0), now=at(t))
    assert g.effect == "require_approval"
    assert rt.approve(g.decision_id, principal="sam", roles=["reviewer"], now=at(t + 1)).status == "approved"
    return g


# ---------------------------------------------------------------------- 1. the ledger decides state
def test_a_fired_trigger_stops_the_workflow_in_the_ledger_until_an_allowed_resume(rt, ledger_url, policy_path):
    g = rt.gate(send(promise=True), now=at(0))
    assert (g.effect, g.stopped, g.workflow_status) == ("stop", True, "stopped")
    assert rt.ledger.get(g.stop_id).body["trigger"] == "bad_promise"
    # another runtime on the same ledger, no caller state: still stopped, citing the trigger
    with Runtime.open(str(policy_path), ledger=ledger_url) as other:
        later = other.gate(send(), now=at(5))
        assert later.effect == "stop" and later.decision.deciding.kind == "stopped"
        assert later.decision.deciding.name == "bad_promise"
        assert not later.stopped  # not a new stop
        # the policy's repair action runs while stopped
        assert other.gate({"workflow": WF, "type": "log"}, now=at(6)).effect == "allow"
    st = rt.workflow_status(WF)
    assert (st["status"], st["stopped_by"], st["stop_id"]) == ("stopped", "bad_promise", g.stop_id)
    # a resume that is not allowed is recorded with each unmet criterion; still stopped
    no = rt.resume(WF, evidence={"fixed": False}, principal="ops", now=at(10))
    assert (no.recorded, no.allowed, no.unmet, no.status) == (True, False, ("fixed",), "stopped")
    entry = rt.ledger.get(no.resume_id)
    assert entry.links == (g.stop_id,) and entry.body["criteria"][0]["met"] is False
    assert rt.gate(send(), now=at(11)).effect == "stop"
    yes = rt.resume(WF, evidence={"fixed": True}, principal="ops", now=at(12))
    assert (yes.allowed, yes.status) == (True, "running")
    assert rt.gate(send(), now=at(13)).effect == "allow"
    # resuming a running workflow is answered, nothing recorded
    size = rt.ledger.size
    again = rt.resume(WF, evidence={"fixed": True}, principal="ops", now=at(14))
    assert (again.recorded, again.status) == (False, "running") and rt.ledger.size == size


def test_gate_many_is_one_transaction_and_a_stop_in_it_stops_the_rest(rt):
    size = rt.ledger.size
    res = rt.gate_many([send(10.0), send(promise=True), send(10.0), {"workflow": WF, "type": "log"}], now=at(0))
    assert [r.effect for r in res] == ["allow", "stop", "stop", "allow"]
    assert [r.stopped for r in res] == [False, True, False, False]
    assert res[2].decision.deciding.kind == "stopped"
    assert rt.ledger.size == size + 5  # four decisions and one stop
    assert rt.ledger.get(res[1].stop_id).links == (res[1].decision_id,)
    assert rt.workflow_status(WF)["stop_id"] == res[1].stop_id
    assert rt.gate(send(10.0), now=at(1)).effect == "stop"


def test_decision_entry_holds_the_action_and_the_decision(rt):
    g = rt.gate(send(20.0, id="a-1"), now=at(0))
    e = rt.ledger.get(g.decision_id)
    assert e.kind == "decision" and e.workflow == WF
    assert e.body["action"]["id"] == "a-1" and e.body["decision"]["effect"] == "allow"
    assert e.body["policy_hash"] == rt.engine.policy_hash and e.time.startswith("2026-11-26T12:00:00")


def test_a_policy_store_reload_applies_to_the_next_gate(ledger_url, tmp_path):  # noqa: F811
    path = write_policy(tmp_path)
    store = policy_engine.PolicyStore(str(path))
    with Runtime.open(store, ledger=ledger_url) as rt:
        assert rt.gate(send(50.0), now=at(0)).effect == "allow"
        path.write_text(path.read_text().replace("action.amount <= 100.0", "action.amount <= 10.0")
                        .replace("action.amount > 100.0", "action.amount > 10.0"))
        assert store.reload().ok
        assert rt.gate(send(50.0), now=at(1)).effect == "require_approval"


# ---------------------------------------------------------------------- 2. approvals
def test_gate_approvals_are_single_use(rt):
    g = _approved_send(rt)
    x = rt.executed(g.decision_id, receipt=RECEIPT, now=at(5))
    assert (x.authorized, x.flags) == (True, ())
    assert rt.authorization(g.decision_id, now=at(6)).status == "executed"
    again = rt.executed(g.decision_id, receipt=RECEIPT, now=at(7))
    assert again.authorized is False and again.flags == ("unauthorized",)
    assert x.execution_id in again.reasons[0]
    # an allow decision covers one execution too
    a = rt.gate(send(10.0), now=at(8))
    assert rt.executed(a.decision_id, receipt=RECEIPT, now=at(9)).authorized
    assert not rt.executed(a.decision_id, receipt=RECEIPT, now=at(10)).authorized


def test_approvals_bind_to_the_digest_and_need_the_role(rt):
    g = rt.gate(send(500.0), now=at(0))
    r = rt.approve(g.decision_id, principal="eve", roles=["customer_service"], now=at(1))
    assert (r.recorded, r.counted, r.status) == (True, False, "pending")
    body = rt.ledger.get(r.approval_id).body
    assert body["digest"] == g.decision.action_digest and body["subject"] == g.decision_id
    st = rt.authorization(g.decision_id, now=at(2))
    assert st.status == "pending" and st.verdict.open_slots
    x = rt.executed(g.decision_id, receipt=RECEIPT, now=at(3))
    assert not x.authorized and "approvals are not satisfied" in x.reasons[0]


def test_a_gate_records_its_decision_without_parsing_the_body(rt, monkeypatch):
    """The gate writes its decision entry from the template's canonical text and vouches for
    its top-level keys and `pending_until` (`Canonical`, `Entry.top`): the projections take
    the pending approval from there, so no body (about 5 KB) is parsed back in the append;
    the pending rows are right (the sweeper finds exactly the require_approval ones)."""
    from policy_engine.ledger import records

    parsed = []
    real = records.parse_body
    monkeypatch.setattr(records, "parse_body", lambda text: parsed.append(text) or real(text))
    ok = rt.gate(send(10.0, id="ok"), now=at(0))
    wait = rt.gate(send(500.0, id="wait"), now=at(1))
    many = rt.gate_many([send(20.0, id="ok2"), send(600.0, id="wait2")], now=at(2))
    assert [g.decision.effect for g in (ok, wait, *many)] == ["allow", "require_approval", "allow",
                                                              "require_approval"]
    assert parsed == []
    swept = rt.expire(now=at(3 * 24 * 3600))
    assert {s.subject for s in swept} == {wait.decision_id, many[1].decision_id}


def test_approvals_expire_and_are_checked_at_use(rt):
    g = rt.gate(send(500.0), now=at(0))
    from datetime import timedelta

    rt.approve(g.decision_id, principal="sam", roles=["reviewer"], now=at(1), expires_in=timedelta(seconds=10))
    assert rt.authorization(g.decision_id, now=at(5)).status == "approved"
    st = rt.authorization(g.decision_id, now=at(20))
    assert st.status == "pending" and [x.code for x in st.verdict.rejected] == ["expired"]
    assert not rt.executed(g.decision_id, receipt=RECEIPT, now=at(20)).authorized


def test_pending_approved_denied_expired_cancelled_are_distinct(rt):
    day = 24 * 3600
    pend = rt.gate(send(500.0, id="p"), now=at(0))
    appr = _approved_send(rt, 1)
    den = rt.gate(send(500.0, id="d"), now=at(2))
    rt.approve(den.decision_id, principal="sam", roles=["reviewer"], now=at(3))
    d = rt.approve(den.decision_id, principal="kim", roles=["reviewer"], verdict="deny", now=at(4))
    assert (d.counted, d.status) == (True, "denied")  # a deny from a possible approver beats the approval
    can = rt.gate(send(500.0, id="c"), now=at(5))
    assert rt.cancel(can.decision_id, principal="agent", reason="superseded", now=at(6)).recorded
    assert {k: rt.authorization(s.decision_id, now=at(10)).status for k, s in
            {"p": pend, "a": appr, "d": den, "c": can}.items()} == {
        "p": "pending", "a": "approved", "d": "denied", "c": "cancelled"}
    # the sweeper records expiry once (at use it is seen without the sweeper too)
    assert rt.authorization(pend.decision_id, now=at(day + 1)).status == "expired"
    swept = rt.expire(now=at(day + 10))
    assert {s.subject for s in swept} == {pend.decision_id, appr.decision_id}
    assert rt.expire(now=at(day + 11)) == []
    assert rt.authorization(pend.decision_id, now=at(day + 12)).status == "expired"
    # terminal subjects take no more approvals, and nothing is recorded
    size = rt.ledger.size
    for s in (pend, den, can):
        r = rt.approve(s.decision_id, principal="zed", roles=["reviewer"], now=at(day + 13))
        assert not r.recorded
    assert rt.ledger.size == size


def test_a_deny_from_someone_who_could_not_fill_a_slot_does_not_count(rt):
    g = _approved_send(rt)
    r = rt.approve(g.decision_id, principal="intern", roles=["customer_service"], verdict="deny", now=at(3))
    assert (r.recorded, r.counted, r.status) == (True, False, "approved")
    st = rt.authorization(g.decision_id, now=at(4))
    assert st.ignored_denials == ("intern",) and st.denied_by == ()


# ---------------------------------------------------------------------- 5, 6. receipts, unauthorized
def test_missing_receipt_fields_are_named(rt):
    g = rt.gate(send(10.0), now=at(0))
    x = rt.executed(g.decision_id, receipt={"message": "m"}, now=at(1))
    assert x.authorized and x.flags == ("receipt_incomplete",) and x.missing_receipt == ("ticket",)
    h = rt.history(x.execution_id)
    assert h["execution"]["missing_receipt"] == ["ticket"]


def test_executions_without_a_permitting_decision_are_recorded_and_flagged(rt):
    x = rt.executed(None, action={"workflow": WF, "type": "other"}, receipt={"note": "n"}, now=at(0))
    assert (x.authorized, x.flags) == (False, ("unauthorized",)) and "no gate decision" in x.reasons[0]
    deny = rt.gate(send(5000.0), now=at(1))
    assert deny.effect == "deny"
    y = rt.executed(deny.decision_id, receipt=RECEIPT, now=at(2))
    assert not y.authorized and rt.ledger.get(y.execution_id).body["flags"] == ["unauthorized"]
    # allowed, then the workflow stopped before it ran
    ok = rt.gate(send(10.0), now=at(3))
    rt.gate(send(promise=True), now=at(4))
    z = rt.executed(ok.decision_id, receipt=RECEIPT, now=at(5))
    assert not z.authorized and "stopped by `bad_promise`" in z.reasons[0]


# ---------------------------------------------------------------------- 3. plans from the record
def _story(rt, opened=False):
    g = rt.gate(send(10.0), now=at(0))
    x = rt.executed(g.decision_id, receipt={**RECEIPT, "opened": opened, "reviewer": "sam"}, now=at(1))
    lg = rt.gate({"workflow": WF, "type": "log"}, now=at(2))
    child = rt.executed(lg.decision_id, receipt={"note": "n"}, caused_by=x.execution_id, now=at(3))
    og = rt.gate({"workflow": WF, "type": "other"}, now=at(4))
    stray = rt.executed(og.decision_id, receipt={"note": "n"}, caused_by=x.execution_id, now=at(5))
    return x, child, stray


def test_the_plan_comes_from_the_record(rt):
    x, child, stray = _story(rt)
    p = rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita", reason="asked",
                            now=at(20))
    assert p.rollback_id and p.status == "pending" and p.route == "customer_service"
    plan = p.plan
    assert plan.original_id == x.execution_id and plan.executed_at.startswith("2026-11-26T12:00:01")
    assert [s.record_id for s in plan.cascade.steps if s.record_id != x.execution_id] == [child.execution_id]
    # the link the policy does not declare (send -> other) is listed, not followed
    assert p.undeclared == ({"record": stray.execution_id, "type": "other", "parent": x.execution_id,
                             "parent_type": "send"},)
    e = rt.ledger.get(p.rollback_id)
    assert e.links[0] == x.execution_id and e.body["plan_hash"] == plan.plan_hash
    assert e.body["duties"] == [x.execution_id, child.execution_id, "compensate:send a correction",
                                "notify:customer"]


def test_prerequisites_read_the_recorded_receipt(rt):
    x, _, _ = _story(rt, opened=True)
    p = rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita", reason="r", now=at(20))
    assert "not_opened" in p.plan.feasibility.unmet


def test_queue_lists_open_plans_oldest_first_with_the_window_and_one_claim_wins(rt):
    ids = []
    for i in range(3):
        g = rt.gate(send(10.0, id=f"s{i}"), now=at(i))
        x = rt.executed(g.decision_id, receipt=RECEIPT, now=at(i))
        ids.append(rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita",
                                       reason="r", now=at(10 + i)).rollback_id)
    q = rt.queue("customer_service", now=at(30))
    assert [i.rollback_id for i in q] == ids
    assert q[0].deadline == "2026-11-26T12:01:00.000000Z" and not q[0].past_window
    assert rt.queue("customer_service", now="2026-11-26T12:01:00.5Z")[0].past_window
    assert rt.queue("customer_service", now=at(90))[0].past_window
    assert rt.queue("elsewhere", now=at(30)) == []
    assert rt.claim(ids[0], principal="cs-1", now=at(31)).recorded
    assert not rt.claim(ids[0], principal="cs-2", now=at(32)).recorded
    assert rt.queue("customer_service", now=at(33))[0].claimed_by == "cs-1"
    assert [i.rollback_id for i in rt.queue("customer_service", claimed=False)] == ids[1:]
    rt.cancel(ids[1], principal="rita", now=at(34))
    assert [i.rollback_id for i in rt.queue("customer_service", now=at(35))] == [ids[0], ids[2]]


def test_rollback_approval_distinct_from_the_requester(rt):
    x, _, _ = _story(rt)
    p = rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita", reason="r", now=at(20))
    r = rt.approve(p.rollback_id, principal="rita", roles=["customer_service"], now=at(21))
    assert (r.counted, r.status) == (False, "pending")
    assert rt.approve(p.rollback_id, principal="cs-1", roles=["customer_service"], now=at(22)).status == "approved"


# ---------------------------------------------------------------------- 4. tracked to the end
def test_steps_partial_completed_verified_and_idempotent(rt):
    x, child, _ = _story(rt)
    p = rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita", reason="r", now=at(20))
    rt.approve(p.rollback_id, principal="cs-1", roles=["customer_service"], now=at(21))
    duties = rt.authorization(p.rollback_id, now=at(22)).duties
    rid = p.rollback_id
    assert rt.step(rid, x.execution_id, "completed", key="k1", now=at(23)).rollback_status == "in_progress"
    size = rt.ledger.size
    rep = rt.step(rid, x.execution_id, "completed", key="k1", now=at(24))
    assert rep.recorded is False and rt.ledger.size == size
    rt.step(rid, child.execution_id, "completed", key="k2", now=at(25))
    rt.step(rid, "notify:customer", "completed", key="k3", now=at(26))
    f = rt.step(rid, "compensate:send a correction", "failed", key="k4", now=at(27))
    assert (f.rollback_status, f.remaining) == ("partial", ("compensate:send a correction",))
    assert rt.queue("customer_service")[0].status == "partial"
    c = rt.step(rid, "compensate:send a correction", "completed", key="k5", now=at(28))
    assert (c.rollback_status, c.remaining) == ("completed", ())
    st = rt.authorization(rid, now=at(29))
    assert st.status == "completed" and set(st.unverified) == set(duties)
    for i, d in enumerate(duties[:-1]):
        assert rt.step(rid, d, "verified", key=f"v{i}", now=at(30)).rollback_status == "completed"
    assert rt.step(rid, duties[-1], "verified", key="vlast", now=at(31)).rollback_status == "verified"
    assert rt.queue("customer_service") == []  # verified: closed
    with pytest.raises(RuntimeUsageError, match="not a duty"):
        rt.step(rid, "notify:nobody", "completed", now=at(32))


def test_verified_needs_a_completed_step_and_unapproved_steps_are_flagged(rt):
    x, _, _ = _story(rt)
    p = rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita", reason="r", now=at(20))
    with pytest.raises(RuntimeUsageError, match="only a completed step can be verified"):
        rt.step(p.rollback_id, x.execution_id, "verified", now=at(21))
    s = rt.step(p.rollback_id, x.execution_id, "started", now=at(22))
    assert s.authorized is False and rt.ledger.get(s.step_id).body["flags"] == ["unauthorized"]


def test_rolling_back_an_already_rolled_back_execution_is_answered(rt):
    x, child, _ = _story(rt)
    p = rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita", reason="r", now=at(20))
    size = rt.ledger.size
    again = rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="bo", reason="r",
                                now=at(21))
    assert (again.existing, again.rollback_id) == (True, p.rollback_id) and "already rolled back" in again.reason
    part = rt.request_rollback(child.execution_id, scenario="customer_request", requested_by="bo", reason="r",
                               now=at(22))
    assert (part.existing, part.rollback_id) == (True, p.rollback_id)
    assert rt.ledger.size == size
    # once the first is cancelled, a new request is planned
    rt.cancel(p.rollback_id, principal="rita", now=at(23))
    assert not rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="bo", reason="r",
                                   now=at(24)).existing


# ---------------------------------------------------------------------- 7. history
def test_history_both_ways(rt):
    g = _approved_send(rt)
    x = rt.executed(g.decision_id, receipt=RECEIPT, now=at(5))
    original = rt.ledger.get(x.execution_id)
    rt.gate(send(promise=True), now=at(6))
    p = rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita", reason="r", now=at(7))
    rt.approve(p.rollback_id, principal="cs-1", roles=["customer_service"], now=at(8))
    s = rt.step(p.rollback_id, x.execution_id, "completed", key="a", now=at(9))
    h = rt.history(x.execution_id)
    ex = h["execution"]
    assert ex["entry"] == original.to_json()  # the original, unchanged
    assert ex["decision"]["entry"]["id"] == g.decision_id
    assert [a["body"]["principal"] for a in ex["decision"]["approvals"]] == ["sam"]
    (rb,) = ex["rollbacks"]
    assert rb["trigger"] == "bad_promise" and rb["status"] == "in_progress"
    assert [a["body"]["principal"] for a in rb["approvals"]] == ["cs-1"]
    assert [st["id"] for st in rb["steps"]] == [s.step_id]
    # from the step back to the original
    back = rt.history(s.step_id)
    assert back["rollback"]["entry"]["id"] == p.rollback_id
    assert back["execution"]["entry"] == original.to_json()
    # from the decision forward
    fwd = rt.history(g.decision_id)
    assert [e["entry"]["id"] for e in fwd["executions"]] == [x.execution_id]


def test_projections_are_caches_rebuilt_from_the_log(rt):
    x, _, _ = _story(rt)
    rt.gate(send(promise=True), now=at(6))
    p = rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita", reason="r", now=at(7))
    rt.claim(p.rollback_id, principal="cs-1", now=at(8))
    rt.approve(p.rollback_id, principal="cs-1", roles=["customer_service"], now=at(8))
    rt.step(p.rollback_id, x.execution_id, "failed", now=at(9))
    rt.gate(send(500.0), now=at(10))
    live = rt.projection_snapshot()
    assert rt.rebuild() > 0
    assert rt.projection_snapshot() == live
    assert rt.ledger.verify().ok


# ---------------------------------------------------------------------- concurrency (threads)
def _race(n, fn):
    barrier = threading.Barrier(n)
    out, errs = [None] * n, []

    def run(i):
        try:
            barrier.wait()
            out[i] = fn(i)
        except Exception as e:  # noqa: BLE001
            errs.append(e)
    ts = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errs, errs
    return out


def test_eight_threads_executing_one_approved_decision_exactly_one_is_authorized(rt):
    g = _approved_send(rt)
    res = _race(8, lambda i: rt.executed(g.decision_id, receipt=RECEIPT, now=at(5)))
    assert sum(r.authorized for r in res) == 1
    assert len(rt.ledger.entries(kind="execution")) == 8


def test_eight_threads_resolving_one_rollback_exactly_one_transition_wins(rt):
    x, _, _ = _story(rt)
    p = rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita", reason="r", now=at(20))
    claims = _race(8, lambda i: rt.claim(p.rollback_id, principal=f"cs-{i}", now=at(21)))
    assert sum(c.recorded for c in claims) == 1
    # approvals and denials from eight possible approvers at once: the first deny wins and
    # closes the subject; every call after it is answered, not recorded
    res = _race(8, lambda i: rt.approve(p.rollback_id, principal=f"r-{i}", roles=["customer_service"],
                                        verdict="deny" if i % 2 else "approve", now=at(22)))
    assert rt.authorization(p.rollback_id, now=at(23)).status == "denied"
    assert sum(r.recorded and r.status == "denied" for r in res) == 1
    denied_seq = next(e.seq for e in rt.ledger.entries(kind="approval") if e.body["status_after"] == "denied")
    assert all(e.seq <= denied_seq for e in rt.ledger.entries(kind="approval"))
    assert sum(not r.recorded for r in res) == 8 - len(rt.ledger.entries(kind="approval"))


def test_eight_threads_requesting_the_same_rollback_record_one(rt):
    x, _, _ = _story(rt)
    res = _race(8, lambda i: rt.request_rollback(x.execution_id, scenario="customer_request",
                                                 requested_by="rita", reason="r", now=at(20)))
    assert len({r.rollback_id for r in res}) == 1 and sum(not r.existing for r in res) == 1
    assert len(rt.ledger.entries(kind="rollback")) == 1


def test_import_policy_engine_does_not_load_sqlalchemy():
    import subprocess
    import sys

    code = "import sys, policy_engine; policy_engine.Runtime; print('sqlalchemy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", "import sys, policy_engine; print('sqlalchemy' in sys.modules)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "True"
