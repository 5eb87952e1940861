"""Claims in doubt: a gate decision claimed for its execution whose execution no entry
records (its worker died before the action ran, or after it ran and before it reported).
Before, nothing listed them and nothing could close one: the decision stayed claimed for
ever (no approval, deny, cancel or expiry changes a claimed decision), invisible to the
operators. Now `claims_in_doubt(older_than=)` lists them from the `rt_claims` projection,
`executed` resolves one that ran (authorized by its claim) and `abandon_claim` one that did
not (the decision is cancelled; a late execution is then recorded as unauthorized).
SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from click.testing import CliRunner
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import RECEIPT, WF, at, policy_path, rt, send  # noqa: F401  (fixtures)
from sqlalchemy import text

from policy_engine import Runtime
from policy_engine.cli import main
from policy_engine.runtime import RuntimeUsageError
from policy_engine.runtime import projections as P


def _claimed(rt, t=0, worker="worker-1"):
    g = rt.gate(send(500.0), now=at(t))
    assert rt.approve(g.decision_id, principal="sam", roles=["reviewer"], now=at(t + 1)).status == "approved"
    c = rt.claim_execution(g.decision_id, principal=worker, now=at(t + 2))
    assert c.recorded
    return g.decision_id, c.transition_id


def test_a_claim_with_no_execution_is_listed_once_old_enough_and_leaves_when_it_reports(rt):
    d1, c1 = _claimed(rt, 0)
    d2, _c2 = _claimed(rt, 100, "worker-2")
    a = rt.gate(send(10.0), now=at(150))  # an allowed decision, claimed, executed at once: never in doubt
    assert rt.claim_execution(a.decision_id, principal="w", now=at(151)).recorded
    rt.executed(a.decision_id, receipt=RECEIPT, now=at(152))
    got = rt.claims_in_doubt(now=at(200))
    assert [(c.decision_id, c.workflow, c.claimed_by, c.turns, c.claim_id) for c in got] == [
        (d1, WF, "worker-1", 1, c1), (d2, WF, "worker-2", 1, got[1].claim_id)]
    assert got[0].claimed_at == "2026-11-26T12:00:02.000000Z"
    # `older_than`: claimed at or before now - older_than
    assert [c.decision_id for c in rt.claims_in_doubt(older_than=timedelta(seconds=98), now=at(200))] == [d1, d2]
    assert [c.decision_id for c in rt.claims_in_doubt(older_than=timedelta(seconds=99), now=at(200))] == [d1]
    assert [c.decision_id for c in rt.claims_in_doubt(now=at(200), limit=1)] == [d1]
    # it ran: its execution resolves it (authorized by the claim)
    x = rt.executed(d1, receipt=RECEIPT, now=at(300))
    assert x.authorized
    assert [c.decision_id for c in rt.claims_in_doubt(now=at(301))] == [d2]
    assert json.loads(json.dumps(rt.claims_in_doubt(now=at(301))[0].to_json()))["decision_id"] == d2


def test_abandoning_a_claim_cancels_the_decision_and_a_late_execution_is_unauthorized(rt):
    d, c = _claimed(rt)
    r = rt.abandon_claim(d, principal="ops", reason="worker-1 crashed before the call", now=at(60))
    assert (r.recorded, r.status, r.claimed_by) == (True, "cancelled", "worker-1")
    entry = rt.ledger.get(r.transition_id)
    assert entry.body["abandons"] == c and set(entry.links) == {d, c}
    st = rt.authorization(d, now=at(61))
    assert st.status == "cancelled"
    assert "abandoned by ops" in st.reason and "worker-1 crashed" in st.reason
    assert rt.claims_in_doubt(now=at(61)) == []
    # nothing can run under it any more
    assert not rt.claim_execution(d, principal="worker-1", now=at(62)).recorded
    assert not rt.approve(d, principal="sam2", roles=["reviewer"], now=at(62)).recorded
    late = rt.executed(d, receipt=RECEIPT, now=at(63))
    assert late.authorized is False and "unauthorized" in late.flags
    assert rt.authorization(d, now=at(64)).status == "cancelled"
    assert rt.claims_in_doubt(now=at(64)) == []


def test_an_allowed_decision_claimed_and_abandoned_is_cancelled(rt):
    a = rt.gate(send(10.0), now=at(0))
    assert rt.claim_execution(a.decision_id, principal="w", now=at(1)).recorded
    assert rt.abandon_claim(a.decision_id, principal="ops", reason="never started", now=at(2)).recorded
    assert rt.authorization(a.decision_id, now=at(3)).status == "cancelled"
    assert not rt.executed(a.decision_id, receipt=RECEIPT, now=at(4)).authorized


def test_there_is_nothing_to_abandon_without_a_claim_or_after_its_execution(rt):
    g = rt.gate(send(500.0), now=at(0))
    r = rt.abandon_claim(g.decision_id, principal="ops", reason="r", now=at(1))
    assert (r.recorded, r.status) == (False, "pending") and "not claimed" in r.reason
    d, _ = _claimed(rt, 10)
    rt.executed(d, receipt=RECEIPT, now=at(20))
    r = rt.abandon_claim(d, principal="ops", reason="r", now=at(21))
    assert not r.recorded and "is recorded" in r.reason
    assert rt.authorization(d, now=at(22)).status == "executed"
    with pytest.raises(RuntimeUsageError, match="reason"):
        rt.abandon_claim(d, principal="ops", reason="  ", now=at(23))
    with pytest.raises(RuntimeUsageError, match="older_than"):
        rt.claims_in_doubt(older_than=timedelta(seconds=-1))
    with pytest.raises(RuntimeUsageError, match="no entry"):
        rt.abandon_claim("nope", principal="ops", reason="r")


def test_an_adapters_turns_count_and_the_latest_holder_shows(rt):
    g = rt.gate(send(10.0), now=at(0))

    def take(claims, stop_after, nonce):  # a holder's claims alternate, as LangGraph's turns do
        return "node-1", "runs" if not claims else "continues"

    for t in (1, 2, 3):
        assert rt.claim_turn(g.decision_id, take, now=at(t))[1] == "node-1"
    (c,) = rt.claims_in_doubt(now=at(10))
    assert (c.turns, c.claimed_by, c.claimed_at, c.last_at) == (
        3, "node-1", "2026-11-26T12:00:01.000000Z", "2026-11-26T12:00:03.000000Z")


def test_the_projection_a_rebuild_makes_is_the_live_one_and_an_older_one_is_rebuilt(ledger_url, policy_path):  # noqa: F811
    with Runtime.open(str(policy_path), ledger=ledger_url) as rt:
        _claimed(rt, 0)
        d2, _ = _claimed(rt, 10)
        rt.abandon_claim(d2, principal="ops", reason="r", now=at(20))
        d3, _ = _claimed(rt, 30)
        rt.executed(d3, receipt=RECEIPT, now=at(40))
        with rt.ledger.reading() as c:
            live = P.snapshot(c)
        assert len(live["rt_claims"]) == 1
        rt.rebuild()
        with rt.ledger.reading() as c:
            assert P.snapshot(c) == live
        rt.ledger.transact(lambda c: [c.execute(text("DROP TABLE rt_claims")), []][1])
    with Runtime.open(str(policy_path), ledger=ledger_url) as again:
        with again.ledger.reading() as c:
            assert P.outdated(c) == [] and P.snapshot(c) == live
        assert len(again.claims_in_doubt(now=at(100))) == 1


def test_the_rt_command_lists_and_abandons(ledger_url, policy_path):  # noqa: F811
    with Runtime.open(str(policy_path), ledger=ledger_url) as rt:
        d, _ = _claimed(rt, 0)
    run = CliRunner()
    ls = run.invoke(main, ["rt", "claims_in_doubt", "--ledger", ledger_url],
                    input=json.dumps({"older_than": 60, "now": "2026-11-26T12:01:02Z"}))
    assert ls.exit_code == 0, ls.output
    assert [c["decision_id"] for c in json.loads(ls.output)] == [d]
    young = run.invoke(main, ["rt", "claims_in_doubt", "--ledger", ledger_url],
                       input=json.dumps({"older_than": 61, "now": "2026-11-26T12:01:02Z"}))
    assert young.exit_code == 0 and json.loads(young.output) == []
    bad = run.invoke(main, ["rt", "claims_in_doubt", "--ledger", ledger_url], input=json.dumps({"older_than": "x"}))
    assert bad.exit_code == 2 and "`older_than` is a number of seconds" in bad.output
    ab = run.invoke(main, ["rt", "abandon_claim", "--ledger", ledger_url, "--policies", str(policy_path)],
                    input=json.dumps({"decision": d, "principal": "ops", "reason": "the worker died"}))
    assert ab.exit_code == 0, ab.output
    assert json.loads(ab.output)["status"] == "cancelled"
