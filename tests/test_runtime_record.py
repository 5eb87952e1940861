"""The runtime's promise that state comes from the record, held against an adversarial
caller (SQLite and PostgreSQL): a step reported before approval authorizes nothing, an
execution is rolled back once even inside another's cascade, the original's reviewers
come from the ledger, and an execution of another action than the one decided is flagged."""

from __future__ import annotations

import pytest
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import POLICY, RECEIPT, WF, at, policy_path, rt, send, write_policy  # noqa: F401  (fixtures)

from policy_engine import Runtime


def _executed_send(rt, t=0, amount=10.0, **receipt):
    g = rt.gate(send(amount, id=f"s{t}"), now=at(t))
    assert g.effect == "allow"
    return rt.executed(g.decision_id, receipt={**RECEIPT, **receipt}, now=at(t + 1))


def _request(rt, execution_id, t, by="rita"):
    return rt.request_rollback(execution_id, scenario="customer_request", requested_by=by, reason="r", now=at(t))


# ------------------------------------------------------------ steps before approval authorize nothing
@pytest.mark.parametrize("verdict", ["deny", None])
def test_steps_of_a_denied_or_pending_rollback_never_become_authorized(rt, verdict):
    x = _executed_send(rt)
    p = _request(rt, x.execution_id, 10)
    if verdict:
        assert rt.approve(p.rollback_id, principal="casey", roles=["customer_service"], verdict=verdict,
                          now=at(11)).status == "denied"
    before = "denied" if verdict else "pending"
    duties = rt.authorization(p.rollback_id, now=at(12)).duties
    for i, d in enumerate(duties):  # a first unauthorized step must not authorize the next ones
        s = rt.step(p.rollback_id, d, "completed", now=at(13 + i))
        assert (s.authorized, s.rollback_status) == (False, before)
        assert rt.ledger.get(s.step_id).body["flags"] == ["unauthorized"]
    st = rt.authorization(p.rollback_id, now=at(30))
    assert st.status == before and st.remaining == () and set(st.steps) == set(duties)  # listed, not counted
    assert {i.rollback_id: i.status for i in rt.queue(now=at(30))}.get(p.rollback_id) == (None if verdict else before)
    if verdict:  # a denied rollback stays closed: the execution can be planned again
        assert not _request(rt, x.execution_id, 31, by="bo").existing
    else:  # the pending one still takes its approval, and only then do steps count
        a = rt.approve(p.rollback_id, principal="casey", roles=["customer_service"], now=at(31))
        assert (a.recorded, a.status) == (True, "approved")
        s = rt.step(p.rollback_id, duties[0], "completed", now=at(32))
        assert s.authorized and s.rollback_status == "completed"  # the earlier reports are what happened
    snap = rt.projection_snapshot()
    rt.rebuild()
    assert rt.projection_snapshot() == snap


# ------------------------------------------------------------ one rollback per execution, cascades included
INCIDENT = POLICY.replace("  rollback customer_request {",
                          "  rollback incident {\n    authorize 1 reviewer\n    cascade depth 2\n  }\n\n"
                          "  rollback customer_request {")


def _send_with_log(rt, i):
    x = _executed_send(rt, 10 * i)
    lg = rt.gate({"workflow": WF, "type": "log", "id": f"l{i}"}, now=at(10 * i + 2))
    child = rt.executed(lg.decision_id, receipt={"note": "n"}, caused_by=x.execution_id, now=at(10 * i + 3))
    return x.execution_id, child.execution_id


def _covering(rt):
    """record -> the rollbacks (not denied, expired or cancelled) whose plans cover it."""
    out: dict[str, list[str]] = {}
    for rb in rt.ledger.entries(kind="rollback"):
        if rt.authorization(rb.id, now=at(100)).status not in ("denied", "expired", "cancelled"):
            for r in [rb.body["original"], *rb.body["cascade"]]:
                out.setdefault(r, []).append(rb.id)
    return out


def test_a_cascade_record_already_rolled_back_is_not_planned_again(rt):
    parent, child = _send_with_log(rt, 0)
    first = _request(rt, child, 10)
    p = _request(rt, parent, 11)
    assert p.rollback_id and not p.existing
    body = rt.ledger.get(p.rollback_id).body
    assert child not in body["cascade"] and child not in body["duties"]
    assert body["covered"] == [{"record": child, "rollback": first.rollback_id, "parent": parent}]
    assert all(len(v) == 1 for v in _covering(rt).values())
    # once the child's own rollback is cancelled, a plan of the parent takes it again
    rt.cancel(p.rollback_id, principal="rita", now=at(12))
    rt.cancel(first.rollback_id, principal="rita", now=at(13))
    again = _request(rt, parent, 14)
    assert child in rt.ledger.get(again.rollback_id).body["cascade"]


class _Racing:
    """The runtime's engine, whose first classify_rollback lets ``meanwhile`` run first (another
    request recorded between the plan's read and its append)."""

    def __init__(self, engine, meanwhile, calls):
        self._engine, self._meanwhile, self._calls = engine, meanwhile, calls

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def classify_rollback(self, request, now=None):
        self._calls.append(request["original"]["id"])
        if len(self._calls) == 1:
            self._meanwhile()
        return self._engine.classify_rollback(request, now)


def _race(rt, monkeypatch, meanwhile):
    calls: list[str] = []
    eng = rt.engine

    def run():
        monkeypatch.setattr(rt, "_policies", eng)
        meanwhile()
        monkeypatch.setattr(rt, "_policies", racing)

    racing = _Racing(eng, run, calls)
    monkeypatch.setattr(rt, "_policies", racing)
    return calls


def test_a_cascade_record_rolled_back_while_the_plan_was_made_is_planned_again(rt, monkeypatch):
    parent, child = _send_with_log(rt, 0)
    calls = _race(rt, monkeypatch, lambda: _request(rt, child, 10, by="bo"))
    p = _request(rt, parent, 11)
    assert calls == [parent, parent]  # planned twice: the first plan's child was taken meanwhile
    assert child not in rt.ledger.get(p.rollback_id).body["cascade"]
    assert all(len(v) == 1 for v in _covering(rt).values())


@pytest.fixture
def incident_rt(ledger_url, tmp_path):  # noqa: F811
    with Runtime.open(str(write_policy(tmp_path, INCIDENT)), ledger=ledger_url) as r:
        yield r


def test_an_incident_never_plans_a_record_another_rollback_covers(incident_rt):
    rt = incident_rt
    pairs = [_send_with_log(rt, i) for i in range(3)]
    single = _request(rt, pairs[0][1], 40)  # the first send's log, on its own
    b = rt.request_bulk_rollback('original.type == "send"', "incident", "ops", "r", now=at(41))
    assert len(b.rollbacks) == 3 and b.records == 5
    by_original = {rt.ledger.get(r).body["original"]: rt.ledger.get(r).body for r in b.rollbacks}
    assert by_original[pairs[0][0]]["cascade"] == []
    assert by_original[pairs[0][0]]["covered"] == [{"record": pairs[0][1], "rollback": single.rollback_id,
                                                    "parent": pairs[0][0]}]
    assert all(len(v) == 1 for v in _covering(rt).values())
    # selecting the logs too: each is covered (one by the single rollback, two by the batch)
    again = rt.request_bulk_rollback("true", "incident", "ops", "r", now=at(42))
    assert again.batch_id is None and len(again.existing) == 6


def test_an_incident_whose_cascade_is_taken_while_it_plans_plans_again(incident_rt, monkeypatch):
    rt = incident_rt
    parent, child = _send_with_log(rt, 0)
    calls = _race(rt, monkeypatch, lambda: _request(rt, child, 10, by="bo"))
    b = rt.request_bulk_rollback('original.type == "send"', "incident", "ops", "r", now=at(11))
    assert calls == [parent, parent] and b.records == 1
    assert all(len(v) == 1 for v in _covering(rt).values())


# ------------------------------------------------------------ the original's reviewers come from the ledger
TWO = POLICY.replace("require_approval big by 1 reviewer", "require_approval big by 2 reviewer").replace(
    "  rollback customer_request {",
    "  rollback reviewer_error {\n    route verification\n"
    "    authorize 1 reviewer distinct from original.reviewer, original.requester, request.requested_by\n  }\n\n"
    "  rollback customer_request {")


@pytest.fixture
def two_rt(ledger_url, tmp_path):  # noqa: F811
    with Runtime.open(str(write_policy(tmp_path, TWO)), ledger=ledger_url) as r:
        yield r


def _counts(rt, rollback_id, who, t):
    st = rt.authorization(rollback_id, now=at(t))
    v = rt.engine.authorize_rollback(rt.ledger.get(rollback_id).body["plan"],
                                     [{"principal": who, "roles": ["reviewer"], "plan_hash": st.digest}], at(t))
    return who in v.accepted


@pytest.mark.parametrize("receipt", [{}, {"reviewer": "someone-else", "requester": "another"}])
def test_no_approver_of_the_original_nor_its_requester_counts_for_its_rollback(two_rt, receipt):
    rt = two_rt
    g = rt.gate(send(500.0, id="s1", requested_by="agent-7"), now=at(0))
    for who in ("fiona", "sam"):
        rt.approve(g.decision_id, principal=who, roles=["reviewer"], now=at(1))
    x = rt.executed(g.decision_id, receipt={**RECEIPT, **receipt}, now=at(2))
    assert x.authorized
    body = rt.ledger.get(x.execution_id).body
    assert body["reviewer"] == "fiona, sam"  # who approved it, from the ledger (the report's column)
    p = rt.request_rollback(x.execution_id, scenario="reviewer_error", requested_by="rita", reason="r", now=at(3))
    assert p.rollback_id
    excluded = ["fiona", "sam", "agent-7", "rita", *receipt.values()]
    assert sorted(p.plan.authorization.excluded_principals) == sorted(excluded)
    for who in excluded:
        assert not _counts(rt, p.rollback_id, who, 4), who
        a = rt.approve(p.rollback_id, principal=who, roles=["reviewer"], now=at(4))
        assert not a.counted and a.status == "pending"
    assert rt.approve(p.rollback_id, principal="zed", roles=["reviewer"], now=at(5)).status == "approved"


# ------------------------------------------------------------ what ran is what was decided
def test_an_execution_of_another_action_than_the_decided_one_is_flagged(rt):
    g = rt.gate(send(500.0, id="a1"), now=at(0))
    rt.approve(g.decision_id, principal="sam", roles=["reviewer"], now=at(1))
    other = send(900.0, id="a2")
    x = rt.executed(g.decision_id, receipt=RECEIPT, action=other, now=at(2))
    assert (x.authorized, x.flags) == (False, ("unauthorized",))
    assert "not the action decided" in x.reasons[0]
    assert rt.ledger.get(x.execution_id).body["action"] == other  # what ran is on the record
    assert rt.authorization(g.decision_id, now=at(3)).status == "approved"  # its approval was not used
    same = rt.executed(g.decision_id, receipt=RECEIPT, action=send(500.0, id="a1"), now=at(3))
    assert same.authorized and "action" not in rt.ledger.get(same.execution_id).body


# ------------------------------------------------------------ a decision made before a stop
def test_a_decision_made_before_a_stop_does_not_run_after_the_resume(rt):
    ok = rt.gate(send(10.0, id="early"), now=at(0))
    rt.gate(send(promise=True), now=at(1))  # stops the workflow
    assert rt.resume(WF, evidence={"fixed": True}, principal="ops", now=at(2)).allowed
    x = rt.executed(ok.decision_id, receipt=RECEIPT, now=at(3))
    assert not x.authorized and "stopped by `bad_promise`" in x.reasons[0] and "resumed since" in x.reasons[0]
    fresh = rt.gate(send(10.0, id="early"), now=at(4))  # gated again after the resume: it runs
    assert rt.executed(fresh.decision_id, receipt=RECEIPT, now=at(5)).authorized
    # a repair action (runs_while_stopped) decided before a stop still runs
    log = rt.gate({"workflow": WF, "type": "log", "id": "l1"}, now=at(6))
    rt.gate(send(promise=True), now=at(7))
    assert rt.executed(log.decision_id, receipt={"note": "n"}, now=at(8)).authorized
