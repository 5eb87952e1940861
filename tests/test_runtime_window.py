"""A rollback's authorization and its reversal window on the record (SQLite and PostgreSQL):
a plan whose approvals completed it within the window stays approved once the window has
passed, and its later steps are authorized; a window that passed before the approvals
completed the plan escalates it (the `after window` slots), as the engine says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)

from policy_engine import Runtime

POLICIES = Path(__file__).resolve().parent.parent / "policies"
T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
WF = "support-replies"


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def reply(rid: str) -> dict:  # (as examples/agent_runtime.py's: a require_approval, reversible within 60 s)
    return {"workflow": WF, "type": "send_customer_reply", "id": rid, "recipient": {"domain": "acme.example"},
            "claims": [{"kind": "refund", "sourced": True}], "customer": {"tier": "smb"}, "confidence": 0.95}


@pytest.fixture
def rt(ledger_url):  # noqa: F811
    with Runtime.open(str(POLICIES), ledger=ledger_url) as r:
        yield r


def _executed(rt) -> str:
    g = rt.gate(reply("reply-1"), now=at(0))
    if g.effect == "require_approval":
        assert rt.approve(g.decision_id, principal="sam", roles=["reviewer"], now=at(5)).status == "approved"
    assert g.effect in ("allow", "require_approval"), g.reason
    x = rt.executed(g.decision_id, receipt={"ticket_id": "T-1042", "reviewer": "sam"}, now=at(6))
    assert x.authorized
    return x.execution_id  # reversible within 60 s of 10:00:06


def test_a_plan_approved_within_its_window_stays_approved_after_it(rt):
    p = rt.request_rollback(_executed(rt), scenario="customer_request", requested_by="rita", reason="r", now=at(50))
    assert p.plan.window == "standard"
    assert rt.approve(p.rollback_id, principal="casey", roles=["customer_service"], now=at(55)).status == "approved"
    for t in (60, 67, 120, 3600):  # the window closed at 10:01:06
        st = rt.authorization(p.rollback_id, now=at(t))
        assert (st.status, st.verdict.satisfied) == ("approved", True), t
    duties = rt.authorization(p.rollback_id, now=at(120)).duties
    for i, d in enumerate(duties):  # the reversal carried out after the window: every step authorized
        s = rt.step(p.rollback_id, d, "completed", key=f"{d}-c", now=at(120 + i))
        assert s.authorized, d
    assert rt.authorization(p.rollback_id, now=at(200)).status == "completed"


def test_a_window_that_passed_before_the_plan_was_approved_escalates_it(rt):
    x = _executed(rt)
    p = rt.request_rollback(x, scenario="customer_request", requested_by="rita", reason="r", now=at(50))
    assert p.plan.window == "standard"
    # the standard approver, but only after the window (10:01:06): the standard plan lapsed with it
    a = rt.approve(p.rollback_id, principal="casey", roles=["customer_service"], now=at(90))
    assert a.status == "expired" and not a.recorded
    assert rt.authorization(p.rollback_id, now=at(91)).status == "expired"
    # planned again, it is escalated: the `after window` slot (a support manager) authorizes it
    q = rt.request_rollback(x, scenario="customer_request", requested_by="rita", reason="r", now=at(92))
    assert (q.plan.window, q.route) == ("escalated", "support_escalations")
    assert rt.approve(q.rollback_id, principal="casey", roles=["customer_service"], now=at(93)).status == "pending"
    assert rt.approve(q.rollback_id, principal="maria", roles=["support_manager"], now=at(95)).status == "approved"
    assert rt.authorization(q.rollback_id, now=at(5000)).status == "approved"


def test_an_approval_given_in_time_that_has_expired_since_counts_for_nothing(rt):
    p = rt.request_rollback(_executed(rt), scenario="customer_request", requested_by="rita", reason="r", now=at(40))
    a = rt.approve(p.rollback_id, principal="casey", roles=["customer_service"], expires_in=timedelta(seconds=5),
                   now=at(45))
    assert a.status == "approved"
    assert rt.authorization(p.rollback_id, now=at(49)).status == "approved"
    assert rt.authorization(p.rollback_id, now=at(51)).status == "pending"  # expired at 10:00:50, the window open
    # approved again in time; that approval expiring after the window closed leaves the plan lapsed
    a = rt.approve(p.rollback_id, principal="casey", roles=["customer_service"], expires_in=timedelta(seconds=30),
                   now=at(55))
    assert a.status == "approved"
    assert rt.authorization(p.rollback_id, now=at(80)).status == "approved"
    st = rt.authorization(p.rollback_id, now=at(90))
    assert st.status == "expired" and "window ended" in st.reason


def test_the_sweeper_records_a_lapsed_standard_plan_and_leaves_an_authorized_one(rt):
    x = _executed(rt)
    p = rt.request_rollback(x, scenario="customer_request", requested_by="rita", reason="r", now=at(50))
    assert rt.expire(now=at(60)) == []  # within the window: nothing lapsed
    swept = rt.expire(now=at(70))  # the window closed at 10:01:06, unauthorized
    assert [r.subject for r in swept] == [p.rollback_id]
    assert rt.authorization(p.rollback_id, now=at(71)).status == "expired"
    assert all(i.rollback_id != p.rollback_id for i in rt.queue(now=at(71)))
    # the next plan is escalated; once authorized, no sweep touches it (its window closed before it)
    q = rt.request_rollback(x, scenario="customer_request", requested_by="rita", reason="r", now=at(72))
    assert not q.existing and q.rollback_id != p.rollback_id and q.plan.window == "escalated"
    assert rt.expire(now=at(80)) == []
    y = rt.request_rollback(_executed_at(rt, 100), scenario="customer_request", requested_by="rita", reason="r",
                            now=at(110))
    assert rt.approve(y.rollback_id, principal="casey", roles=["customer_service"], now=at(111)).status == "approved"
    assert rt.expire(now=at(500)) == []  # authorized within its window: it stands
    assert rt.authorization(y.rollback_id, now=at(501)).status == "approved"


def _executed_at(rt, t: float) -> str:
    g = rt.gate(reply(f"reply-{t}"), now=at(t))
    if g.effect == "require_approval":
        rt.approve(g.decision_id, principal="sam", roles=["reviewer"], now=at(t + 1))
    x = rt.executed(g.decision_id, receipt={"ticket_id": "T-1042", "reviewer": "sam"}, now=at(t + 2))
    assert x.authorized
    return x.execution_id
