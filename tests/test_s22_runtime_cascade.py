"""Session 22 audit of the runtime, on SQLite and PostgreSQL: `request_rollback` of an
execution whose cascade record is held only by a rollback the clock expired (never
authorized by its `pending_until`; `authorization` says `expired`, the sweeper has not run)
plans that record, its covering rollback's expiry recorded in the same transaction, as a
batch does (tests/test_s22_incidents_cascade.py). Before, the plan listed the record as
`covered` by that dead rollback and left it out: no open rollback would ever reverse it."""

from __future__ import annotations

from datetime import timedelta

from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import RECEIPT, WF, at, policy_path, rt, send  # noqa: F401  (fixtures)


def _send_and_log(rt, i: int) -> tuple[str, str]:  # noqa: F811
    g = rt.gate(send(50.0, id=f"s{i}"), now=at(10 * i))
    x = rt.executed(g.decision_id, receipt=RECEIPT, now=at(10 * i + 1)).execution_id
    lg = rt.gate({"workflow": WF, "type": "log"}, now=at(10 * i + 2))
    y = rt.executed(lg.decision_id, receipt={"note": "n"}, caused_by=x, now=at(10 * i + 3)).execution_id
    return x, y


def _request(rt, execution: str, now):  # noqa: F811
    return rt.request_rollback(execution, scenario="customer_request", requested_by="rita", reason="r", now=now)


def _expiries(rt, rollback: str) -> list:  # noqa: F811
    return [e for e in rt.ledger.entries(kind="transition") if e.body.get("subject") == rollback]


def test_a_cascade_record_held_by_a_rollback_the_clock_expired_is_planned(rt):  # noqa: F811
    x, y = _send_and_log(rt, 0)
    x2, y2 = _send_and_log(rt, 1)
    dead = _request(rt, y, at(5)).rollback_id
    later = at(5) + rt.rollback_ttl + timedelta(seconds=1)  # never authorized: its pending_until passed
    live = _request(rt, y2, later - timedelta(seconds=2)).rollback_id  # still open at `later`
    assert rt.authorization(dead, now=later).status == "expired" and not _expiries(rt, dead)

    r = _request(rt, x, later)
    assert r.status == "pending" and not r.existing
    assert r.covered == () and [s.record_id for s in r.plan.cascade.steps] == [x, y]
    body = rt.ledger.get(r.rollback_id).body
    assert body["cascade"] == [y] and y in body["duties"] and "covered" not in body
    # the dead rollback's expiry is recorded (as the sweeper would), in the plan's transaction
    (t,) = _expiries(rt, dead)
    assert t.body["to"] == "expired" and t.body["principal"] == "stopline"
    assert t.seq == rt.ledger.get(r.rollback_id).seq - 1
    assert rt.authorization(dead, now=later).status == "expired"
    assert {q.rollback_id for q in rt.queue(now=later)} == {r.rollback_id, live}

    # an open rollback still covers its record: listed, not planned twice (and nothing else recorded)
    r2 = _request(rt, x2, later)
    assert [s.record_id for s in r2.plan.cascade.steps] == [x2]
    assert [dict(c) for c in r2.covered] == [{"record": y2, "rollback": live, "parent": x2}]
    assert not _expiries(rt, live) and rt.authorization(live, now=later).status == "pending"


def test_a_single_request_and_a_batch_plan_the_same(rt):  # noqa: F811
    """The same case through both paths: the single request's plan is the one the batch
    plans (its digest over the same plan hash), and both record what they record alike."""
    from policy_engine.runtime.bulk import _batch_hash

    xa, ya = _send_and_log(rt, 0)
    xb, yb = _send_and_log(rt, 1)
    dead_a = _request(rt, ya, at(5)).rollback_id
    dead_b = _request(rt, yb, at(15)).rollback_id
    later = at(15) + rt.rollback_ttl + timedelta(seconds=1)  # both expired by the clock, unrecorded

    dry = rt.request_bulk_rollback(None, "customer_request", "rita", "r", executions=[xa], now=later, dry_run=True)
    single = _request(rt, xa, later)
    assert dry.batch_hash == _batch_hash("customer_request", None, [(xa, single.plan.plan_hash)])

    batch = rt.request_bulk_rollback(None, "customer_request", "rita", "r", executions=[xb], now=later)
    (rb,) = batch.rollbacks
    a, b = rt.ledger.get(single.rollback_id).body, rt.ledger.get(rb).body
    assert (a["cascade"], b["cascade"]) == ([ya], [yb])
    assert "covered" not in a and "covered" not in b
    for dead in (dead_a, dead_b):
        assert [e.body["to"] for e in _expiries(rt, dead)] == ["expired"]
