"""An action that ran before its decision was approved is not authorized by an approval
given after it ran (session 27). `executed(executed_at=...)` was judged only at the time it
was reported: a require_approval decision approved by then recorded the execution as
authorized even though it ran, by the caller's own `executed_at`, while nobody had approved
it. The check only narrows: within the clock skew the runtime accepts (60 s) it holds as
before, and the decision's approvals stay unused for a run made with them."""

from __future__ import annotations

from datetime import timedelta

from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import RECEIPT, at, policy_path, rt, send  # noqa: F401  (fixtures)


def test_a_run_before_the_approval_is_flagged(rt):  # noqa: F811
    g = rt.gate(send(500.0), now=at(0))
    assert g.effect == "require_approval"
    rt.approve(g.decision_id, principal="sam", roles=["reviewer"], now=at(500))
    x = rt.executed(g.decision_id, receipt=RECEIPT, executed_at=at(400), now=at(600))
    assert not x.authorized
    assert "unauthorized" in x.flags
    assert any("before its approvals were satisfied" in r for r in x.reasons), x.reasons
    # the approvals were not used by it: the decision is still approved, and a run made now is authorized
    assert rt.authorization(g.decision_id, now=at(601)).status == "approved"
    y = rt.executed(g.decision_id, receipt=RECEIPT, now=at(602))
    assert y.authorized, y.reasons


def test_a_run_after_the_approval_and_within_the_skew_stays_authorized(rt):  # noqa: F811
    g = rt.gate(send(500.0), now=at(0))
    rt.approve(g.decision_id, principal="sam", roles=["reviewer"], now=at(50))
    # ran 40 s before the approval was recorded: within the 60 s two clocks may differ
    x = rt.executed(g.decision_id, receipt=RECEIPT, executed_at=at(10), now=at(100))
    assert x.authorized, x.reasons
    g2 = rt.gate(send(500.0, id="b"), now=at(0))
    rt.approve(g2.decision_id, principal="sam", roles=["reviewer"], now=at(50))
    x2 = rt.executed(g2.decision_id, receipt=RECEIPT, executed_at=at(60), now=at(5000))
    assert x2.authorized, x2.reasons


def test_an_approval_needing_two_counts_only_those_given_before_the_run(rt, tmp_path):  # noqa: F811
    g = rt.gate(send(500.0), now=at(0))
    # a deny after the run still closes it (nothing here widens what `authorization` says now)
    rt.approve(g.decision_id, principal="sam", roles=["reviewer"], now=at(100), expires_in=timedelta(hours=1))
    rt.approve(g.decision_id, principal="fiona", roles=["reviewer"], verdict="deny", now=at(300))
    x = rt.executed(g.decision_id, receipt=RECEIPT, executed_at=at(200), now=at(400))
    assert not x.authorized
