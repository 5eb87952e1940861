"""An approved rollback whose approvals lapse (each expires) before it starts is pending
again, and every view says so at the same `now`: `authorization`, the queue (also from a
listing kept since before the lapse), `batch_counts` / `batch_status`, the sweeper (which
then expires it at its deadline instead of leaving it open for ever) and the projection a
rebuild makes. A projection of an older version (no `lapses_at`) is rebuilt on open.
SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import WF, at, policy_path, rt, write_policy  # noqa: F401  (fixtures)
from sqlalchemy import text

from policy_engine import Runtime
from policy_engine.runtime import projections as P

HOUR = 3600
DAY = 24 * HOUR


def _requested(rt, t=0):
    g = rt.gate({"workflow": WF, "type": "other"}, now=at(t))
    x = rt.executed(g.decision_id, receipt={"note": "n"}, now=at(t + 1))
    p = rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita", reason="r",
                            now=at(t + 2))
    assert p.status == "pending"
    return p.rollback_id


def _queued(rt, rid, t):
    return {i.rollback_id: i for i in rt.queue(now=at(t))}.get(rid)


def test_a_lapsed_approval_makes_the_rollback_pending_in_every_view(rt):
    rid = _requested(rt)
    a = rt.approve(rid, principal="cs-1", roles=["customer_service"], expires_in=timedelta(hours=1), now=at(10))
    assert a.status == "approved"
    assert rt.ledger.get(a.approval_id).body["approved_until"] == "2026-11-26T13:00:10.000000Z"
    assert _queued(rt, rid, 20).status == "approved"  # a listing kept from before the lapse
    later = HOUR + 11
    assert rt.authorization(rid, now=at(later)).status == "pending"
    item = _queued(rt, rid, later)  # nothing appended since: the kept listing must not hold across the lapse
    assert (item.status, item.unrecorded) == ("pending", False)
    assert rt.expire(now=at(later)) == []  # pending again, its deadline (7 days) not passed
    # at its deadline: expired by the clock, then recorded by the sweeper; no longer open
    end = 8 * DAY
    st = rt.authorization(rid, now=at(end))
    assert (st.status, st.unrecorded) == ("expired", True)
    item = _queued(rt, rid, end)
    assert (item.status, item.unrecorded) == ("expired", True)
    assert [r.subject for r in rt.expire(now=at(end))] == [rid]
    assert rt.authorization(rid, now=at(end)).status == "expired"
    assert _queued(rt, rid, end + 1) is None


def test_a_new_approval_after_the_lapse_authorizes_it_again_and_moves_the_lapse(rt):
    rid = _requested(rt)
    rt.approve(rid, principal="cs-1", roles=["customer_service"], expires_in=timedelta(hours=1), now=at(10))
    a = rt.approve(rid, principal="cs-2", roles=["customer_service"], expires_in=timedelta(hours=5),
                   now=at(2 * HOUR))
    assert a.status == "approved"
    assert rt.ledger.get(a.approval_id).body["approved_until"] == "2026-11-26T19:00:00.000000Z"
    for t, want in ((3 * HOUR, "approved"), (7 * HOUR - 1, "approved"), (7 * HOUR, "pending")):
        assert rt.authorization(rid, now=at(t)).status == want, t
        assert _queued(rt, rid, t).status == want, t


def test_two_approvals_the_later_expiry_holds_it(rt):
    """One approver needed, two gave it: it lapses when the last of them expires."""
    rid = _requested(rt)
    rt.approve(rid, principal="cs-1", roles=["customer_service"], expires_in=timedelta(hours=5), now=at(10))
    a = rt.approve(rid, principal="cs-2", roles=["customer_service"], expires_in=timedelta(hours=1), now=at(20))
    assert rt.ledger.get(a.approval_id).body["approved_until"] == "2026-11-26T17:00:10.000000Z"
    assert _queued(rt, rid, 2 * HOUR).status == "approved"
    assert _queued(rt, rid, 5 * HOUR + 10).status == "pending"


def test_a_started_rollback_does_not_lapse(rt):
    rid = _requested(rt)
    rt.approve(rid, principal="cs-1", roles=["customer_service"], expires_in=timedelta(hours=1), now=at(10))
    duty = rt.authorization(rid, now=at(11)).duties[0]
    assert rt.step(rid, duty, "started", now=at(12)).authorized
    assert rt.authorization(rid, now=at(DAY)).status == "in_progress"
    assert _queued(rt, rid, DAY).status == "in_progress"
    assert rt.expire(now=at(9 * DAY)) == []


def test_the_projection_a_rebuild_makes_is_the_live_one(rt):
    for t in (0, 100):
        rid = _requested(rt, t)
        rt.approve(rid, principal="cs-1", roles=["customer_service"], expires_in=timedelta(hours=1), now=at(t + 10))
    with rt.ledger.reading() as c:
        live = P.snapshot(c)
    lapse = [c.name for c in P.rollbacks.columns].index("lapses_at")
    assert any(r[lapse] is not None for r in live["rt_rollbacks"])  # the lapses are projected
    rt.rebuild()
    with rt.ledger.reading() as c:
        assert P.snapshot(c) == live


def _an_older_projection(rt) -> tuple[str, dict]:
    """An approved rollback, the projection's rows, then its table as an older Stopline
    made it (no `lapses_at`)."""
    rid = _requested(rt)
    rt.approve(rid, principal="cs-1", roles=["customer_service"], expires_in=timedelta(hours=1), now=at(10))
    with rt.ledger.reading() as c:
        live = P.snapshot(c)
    rt.ledger.transact(lambda c: [c.execute(text("ALTER TABLE rt_rollbacks DROP COLUMN lapses_at")), []][1])
    return rid, live


def test_an_older_projection_is_rebuilt_on_open(ledger_url, policy_path):  # noqa: F811
    with Runtime.open(str(policy_path), ledger=ledger_url) as rt:
        rid, live = _an_older_projection(rt)
    with Runtime.open(str(policy_path), ledger=ledger_url) as again:
        with again.ledger.reading() as c:
            assert P.outdated(c) == [] and P.snapshot(c) == live
        assert _queued(again, rid, HOUR + 11).status == "pending"


def test_a_batch_whose_approval_lapsed_is_counted_pending(tmp_path, ledger_url):  # noqa: F811
    path = write_policy(tmp_path)
    with Runtime.open(str(path), ledger=ledger_url, approval_ttl=timedelta(hours=1)) as rt:
        for t in (0, 10):
            g = rt.gate({"workflow": WF, "type": "other"}, now=at(t))
            rt.executed(g.decision_id, receipt={"note": "n"}, now=at(t + 1))
        b = rt.request_bulk_rollback('original.type == "other"', "customer_request", "rita", "r", now=at(20))
        assert len(b.rollbacks) == 2
        ap = rt.approve_batch(b.batch_id, principal="cs-1", roles=["customer_service"], batch_hash=b.batch_hash,
                              now=at(30))
        assert ap["statuses"] == {"approved": 2}
        for t, want in ((HOUR + 29, "approved"), (HOUR + 30, "pending")):
            assert {rt.authorization(r, now=at(t)).status for r in b.rollbacks} == {want}
            assert rt.batch_counts(b.batch_id, now=at(t))["by_status"] == {want: 2}
            assert {i.status for i in rt.queue(now=at(t))} == {want}


def test_the_report_as_of_a_time_after_the_lapse_counts_it_pending(ledger_url, policy_path):  # noqa: F811
    from policy_engine.report.compute import compute_report

    with Runtime.open(str(policy_path), ledger=ledger_url) as rt:
        rid = _requested(rt)
        rt.approve(rid, principal="cs-1", roles=["customer_service"], expires_in=timedelta(hours=1), now=at(10))
        for t, want in ((HOUR, "approved"), (HOUR + 10, "pending"), (8 * DAY, "expired")):
            assert rt.authorization(rid, now=at(t)).status == want
            assert compute_report(ledger_url, now=at(t))["rollback_status"] == {want: 1}, t


def test_ledger_init_brings_an_older_projection_up_to_date(ledger_url, policy_path):  # noqa: F811
    from click.testing import CliRunner

    from policy_engine.cli import main

    with Runtime.open(str(policy_path), ledger=ledger_url) as rt:
        _rid, live = _an_older_projection(rt)
        with rt.ledger.reading() as c:
            assert P.outdated(c) == ["rt_rollbacks"]
        r = CliRunner().invoke(main, ["ledger", "init", "--ledger", ledger_url])
        assert r.exit_code == 0, r.output
        assert "`rt_rollbacks`" in r.output
        with rt.ledger.reading() as c:
            assert P.outdated(c) == [] and P.snapshot(c) == live
        again = CliRunner().invoke(main, ["ledger", "init", "--ledger", ledger_url])
        assert again.exit_code == 0 and "rt_rollbacks" not in again.output


def test_a_step_on_a_rollback_expired_by_the_clock_records_the_expiry(rt):
    """An unauthorized step on a rollback expired by the clock but not recorded (its approvals
    lapsed, then its deadline passed) closed its projection row with no `expired` entry: the
    sweeper (which reads open rows) never recorded it, and `authorization` said `unrecorded`
    for ever."""
    rid = _requested(rt)
    rt.approve(rid, principal="cs-1", roles=["customer_service"], expires_in=timedelta(hours=1), now=at(10))
    end = 8 * DAY
    assert rt.authorization(rid, now=at(end)).unrecorded
    duty = rt.authorization(rid, now=at(end)).duties[0]
    s = rt.step(rid, duty, "completed", now=at(end))
    assert s.recorded and not s.authorized and rt.ledger.get(s.step_id).kind == "step"
    st = rt.authorization(rid, now=at(end + 1))
    assert (st.status, st.unrecorded) == ("expired", False)
    assert rt.expire(now=at(end + 2)) == [] and _queued(rt, rid, end + 2) is None
