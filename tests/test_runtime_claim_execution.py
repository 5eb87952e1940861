"""A gate decision's one use, claimed in the ledger (`Runtime.claim_execution`): exactly one
claim wins across threads (and, on PostgreSQL, connections); the claim closes the decision,
so a deny, a cancel, an approval's expiry or a stop that comes while the action runs does not
turn its recorded execution into an unauthorized one; and a decision that may not run now
(pending, denied, stopped after it, already claimed) is not claimed. SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import RECEIPT, WF, at, policy_path, rt, send  # noqa: F401  (fixtures)

from policy_engine import Runtime
from policy_engine.ledger import NewEntry, schema
from policy_engine.runtime import RuntimeUsageError

DAY = 86_400


def _approved(rt, t=0):
    g = rt.gate(send(500.0), now=at(t))
    assert g.effect == "require_approval"
    assert rt.approve(g.decision_id, principal="sam", roles=["reviewer"], now=at(t + 1)).status == "approved"
    return g


def test_one_claim_wins_and_a_retry_by_its_holder_says_it_holds_it(rt):
    g = _approved(rt)
    c = rt.claim_execution(g.decision_id, principal="worker-1", now=at(2))
    assert (c.recorded, c.status, c.claimed_by) == (True, "approved", "worker-1")
    entry = rt.ledger.get(c.transition_id)
    assert entry.key == f"stopline:claim:{g.decision_id}:1" and entry.body["claim"] == 1
    assert entry.links == (g.decision_id,)
    other = rt.claim_execution(g.decision_id, principal="worker-2", now=at(3))
    assert (other.recorded, other.claimed_by, other.transition_id) == (False, "worker-1", None)
    assert "already claimed by worker-1" in other.reason
    again = rt.claim_execution(g.decision_id, principal="worker-1", now=at(3))
    assert (again.recorded, again.claimed_by, again.transition_id) == (False, "worker-1", c.transition_id)
    st = rt.authorization(g.decision_id, now=at(4))
    assert (st.status, st.claimed_by, st.claim_id, st.claimed_at) == (
        "approved", "worker-1", c.transition_id, entry.body["at"])
    x = rt.executed(g.decision_id, receipt=RECEIPT, now=at(5))
    assert x.authorized
    assert rt.authorization(g.decision_id, now=at(6)).status == "executed"
    late = rt.claim_execution(g.decision_id, principal="worker-3", now=at(7))
    assert (late.recorded, late.status) == (False, "executed")


def test_an_allowed_decision_is_claimed_and_shows_its_holder(rt):
    g = rt.gate(send(20.0), now=at(0))
    assert g.effect == "allow"
    assert rt.authorization(g.decision_id, now=at(1)).claimed_by is None
    c = rt.claim_execution(g.decision_id, principal="worker-1", now=at(1))
    assert (c.recorded, c.status) == (True, "allowed")
    st = rt.authorization(g.decision_id, now=at(2))
    assert (st.status, st.claimed_by, st.claim_id) == ("allowed", "worker-1", c.transition_id)
    # `claim` on a decision is this claim
    assert rt.claim(g.decision_id, principal="worker-2", now=at(3)).claimed_by == "worker-1"


@pytest.mark.parametrize("how", ["pending", "denied", "cancelled", "refused", "expired"])
def test_a_decision_that_may_not_run_now_is_not_claimed(rt, how):
    if how == "refused":
        d = rt.gate(send(5000.0), now=at(0)).decision_id
    else:
        d = rt.gate(send(500.0), now=at(0)).decision_id
    when = 5
    if how == "denied":
        rt.approve(d, principal="sam", roles=["reviewer"], verdict="deny", now=at(1))
    elif how == "cancelled":
        rt.cancel(d, principal="ops", now=at(1))
    elif how == "expired":
        rt.approve(d, principal="sam", roles=["reviewer"], now=at(1))
        when = DAY + 10  # the decision's (and the approval's) 24 hours passed unused
    size = rt.ledger.size
    c = rt.claim_execution(d, principal="worker-1", now=at(when))
    assert (c.recorded, c.status, c.claimed_by) == (False, how, None)
    assert f"`{how}`" in c.reason
    assert rt.ledger.size == size


def test_a_claimed_decision_is_closed_a_deny_or_cancel_while_it_runs_is_refused(rt):
    g = _approved(rt)
    assert rt.claim_execution(g.decision_id, principal="worker-1", now=at(2)).recorded
    size = rt.ledger.size
    deny = rt.approve(g.decision_id, principal="rev-2", roles=["reviewer"], verdict="deny", now=at(3))
    assert (deny.recorded, deny.status) == (False, "approved")
    assert "claimed for its execution by worker-1" in deny.reason
    more = rt.approve(g.decision_id, principal="rev-3", roles=["reviewer"], now=at(3))
    assert not more.recorded
    cancel = rt.cancel(g.decision_id, principal="ops", now=at(3))
    assert (cancel.recorded, cancel.claimed_by) == (False, "worker-1")
    assert rt.ledger.size == size  # nothing recorded
    x = rt.executed(g.decision_id, receipt=RECEIPT, now=at(4))
    assert x.authorized and not x.reasons


def test_a_deny_recorded_after_a_claim_in_an_older_ledger_does_not_count(rt):
    """A ledger written before claims closed a decision may hold a deny after the claim:
    the decision stands as it stood when claimed."""
    g = _approved(rt)
    assert rt.claim_execution(g.decision_id, principal="worker-1", now=at(2)).recorded
    digest = rt.authorization(g.decision_id, now=at(2)).digest
    rt.transact(lambda c: [NewEntry("approval", {
        "subject": g.decision_id, "digest": digest, "principal": "rev-2", "roles": ["reviewer"],
        "verdict": "deny", "at": "2026-11-26T12:00:03Z", "subject_kind": "decision"},
        workflow=WF, links=[g.decision_id], time=at(3))])
    st = rt.authorization(g.decision_id, now=at(4))
    assert (st.status, st.denied_by) == ("approved", ())
    assert rt.executed(g.decision_id, receipt=RECEIPT, now=at(5)).authorized


def test_a_claimed_decision_does_not_expire_while_its_action_runs(rt):
    g = _approved(rt)
    assert rt.claim_execution(g.decision_id, principal="worker-1", now=at(2)).recorded
    late = DAY + 60  # the decision's pending_until and the approval's expiry both passed
    st = rt.authorization(g.decision_id, now=at(late))
    assert (st.status, st.unrecorded) == ("approved", False)
    assert g.decision_id not in [r.subject for r in rt.expire(now=at(late))]
    assert rt.executed(g.decision_id, receipt=RECEIPT, now=at(late)).authorized
    # an unclaimed one expires as before
    h = _approved(rt, t=10)
    assert rt.authorization(h.decision_id, now=at(late + 20)).status == "expired"


def test_a_stop_after_the_claim_came_while_the_action_ran_one_before_it_refuses_the_claim(rt):
    ran = _approved(rt)
    assert rt.claim_execution(ran.decision_id, principal="worker-1", now=at(2)).recorded
    waiting = _approved(rt, t=3)
    stop = rt.gate(send(promise=True), now=at(10))
    assert stop.stopped
    # claimed before the stop: its execution is authorized, and the incident's rollback sees it
    x = rt.executed(ran.decision_id, receipt=RECEIPT, now=at(11))
    assert x.authorized and not x.reasons
    # not claimed before the stop: not claimed now, and running it anyway is flagged
    c = rt.claim_execution(waiting.decision_id, principal="worker-2", now=at(12))
    assert (c.recorded, c.status) == (False, "approved")
    assert "was stopped by `bad_promise` after it" in c.reason
    assert not rt.executed(waiting.decision_id, receipt=RECEIPT, now=at(13)).authorized


def test_an_action_that_runs_while_stopped_is_claimed_after_the_stop(rt):
    d = rt.gate({"workflow": WF, "type": "log"}, now=at(0)).decision_id
    assert rt.gate(send(promise=True), now=at(1)).stopped
    c = rt.claim_execution(d, principal="worker-1", now=at(2))
    assert c.recorded, c.reason


def test_concurrent_claims_exactly_one_wins(ledger_url, policy_path):  # noqa: F811
    with Runtime.open(str(policy_path), ledger=ledger_url) as setup:
        g = _approved(setup)
    results, barrier = [], threading.Barrier(8)

    def worker(i: int) -> None:
        with Runtime.open(str(policy_path), ledger=ledger_url) as mine:  # its own connections
            barrier.wait()
            results.append(mine.claim_execution(g.decision_id, principal=f"worker-{i}", now=at(5)))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [r for r in results if r.recorded]
    assert len(results) == 8 and len(won) == 1
    assert {r.claimed_by for r in results} == {won[0].claimed_by}
    with Runtime.open(str(policy_path), ledger=ledger_url) as check:
        with check.ledger.reading() as c:
            claims = [e for e in check.ledger.fetch(c, schema.entries.c.kind == "transition")
                      if e.body.get("to") == "claimed" and e.body.get("subject") == g.decision_id]
        assert [e.id for e in claims] == [won[0].transition_id]
        st = check.authorization(g.decision_id, now=at(6))
        assert st.claimed_by == won[0].claimed_by and st.claim_id == won[0].transition_id


def test_claim_execution_refuses_a_rollback_and_bad_principals(rt):
    g = _approved(rt)
    x = rt.executed(g.decision_id, receipt=RECEIPT, now=at(2))
    p = rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita", reason="r", now=at(3))
    with pytest.raises(RuntimeUsageError, match="not a `decision`"):
        rt.claim_execution(p.rollback_id, principal="w", now=at(4))
    with pytest.raises(RuntimeUsageError, match="principal"):
        rt.claim_execution(g.decision_id, principal="", now=at(4))
    # a rollback's claim is the reviewer's, as before
    assert rt.claim(p.rollback_id, principal="cs-1", now=at(4)).recorded


def test_claim_and_executed_judge_a_stop_after_the_decision_alike(tmp_path, ledger_url):  # noqa: F811
    """An action type that runs while stopped, whose own rules deny it while stopped: a
    decision made before the stop is neither claimed after it nor, run anyway, authorized
    (`executed` asked the declaration only, the claim the engine)."""
    from runtime_support import POLICY, write_policy

    text = POLICY.replace('''    runs_while_stopped
    reversible full via "crm.amend"
    receipt [note]

    allow any when `true`''', '''    runs_while_stopped
    reversible full via "crm.amend"
    receipt [note]

    deny while_stopped when `workflow.status == "stopped"`
    allow any when `true`''')
    assert text != POLICY
    with Runtime.open(str(write_policy(tmp_path, text)), ledger=ledger_url) as rt:
        d = rt.gate({"workflow": WF, "type": "log"}, now=at(0)).decision_id
        assert rt.gate(send(promise=True), now=at(1)).stopped
        c = rt.claim_execution(d, principal="worker-1", now=at(2))
        assert not c.recorded and "was stopped by `bad_promise` after it" in c.reason
        x = rt.executed(d, receipt={"note": "n"}, now=at(3))
        assert not x.authorized and "stopped by `bad_promise`" in x.reasons[0]


def test_a_claimed_decision_leaves_the_sweepers_list_and_a_rebuild_agrees(rt):
    from policy_engine.runtime import projections as P

    g = _approved(rt)
    h = _approved(rt, t=5)

    def waiting():
        with rt.ledger.reading() as c:
            return {r[0] for r in c.execute(P.pending.select().with_only_columns(P.pending.c.id))}

    assert waiting() == {g.decision_id, h.decision_id}
    assert rt.claim_execution(g.decision_id, principal="worker-1", now=at(10)).recorded
    assert waiting() == {h.decision_id}
    with rt.ledger.reading() as c:
        live = P.snapshot(c)
    rt.rebuild()
    with rt.ledger.reading() as c:
        assert P.snapshot(c) == live
    assert [r.subject for r in rt.expire(now=at(DAY + 60))] == [h.decision_id]
