"""``Runtime.batch_counts`` counts each plan of a batch under the status ``Runtime.authorization``
gives it at the same ``now``: a pending plan whose standard reversal window lapsed before it
was authorized is ``expired`` (by the clock, not yet recorded), as is one past its
``pending_until``; one authorized in time stays ``approved``. On SQLite and PostgreSQL, at
fixed instants and over random ones (hypothesis), on a batch with verified, completed,
in-progress, partial, approved, denied, cancelled, recorded-expired and pending plans."""

from __future__ import annotations

import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import policy_engine  # noqa: E402
from benchmarks import bench_incidents as B  # noqa: E402
from policy_engine import Runtime  # noqa: E402
from policy_engine.ledger import Ledger  # noqa: E402

LEAD = ["incident_lead"]
ROOTS = 12  # executions of a0 at T0 + i seconds: plan i's reversal window ends at T0 + 1h + i s
REQUESTED = B.T0 + timedelta(minutes=10)  # every plan requested inside its window: `standard`
WINDOW_END = [B.T0 + timedelta(hours=1, seconds=i) for i in range(ROOTS)]
SWEPT = WINDOW_END[7] + timedelta(milliseconds=500)  # the sweeper records plan 7's expiry (only its)
PENDING_UNTIL = REQUESTED + timedelta(days=7)  # the runtime's rollback_ttl
LAST = B.T0 + timedelta(days=9)


def _policy(tmp_path):
    text = B.POLICY
    for i in range(B.DEPTH + 1):  # a reversal window on every action
        text = text.replace(f'reversible full via "undo.a{i}"', f'reversible full via "undo.a{i}" within 1h')
    (tmp_path / "ops.policy").write_text(text)
    return policy_engine.load(str(tmp_path / "ops.policy"))


def _per_plan(rt, b, now) -> dict:
    return dict(sorted(Counter(rt.authorization(rid, now=now).status for rid in b.rollbacks).items()))


def test_batch_counts_says_what_each_plan_says_when_windows_lapse(tmp_path, ledger_url):  # noqa: F811
    led = Ledger.open(ledger_url, create=True)
    B.fill_executions(led, ROOTS, 0)
    # approvals outlive the range judged here: an approved plan stays approved (its approval
    # lapsing after `approval_ttl` is another question, see the report)
    rt = Runtime(_policy(tmp_path), led, approval_ttl=timedelta(days=30))
    try:
        b = rt.request_bulk_rollback('original.type == "a0"', "incident", "ops", "lapse", now=REQUESTED)
        rb = list(b.rollbacks)
        assert len(rb) == ROOTS
        assert all(led.get(r).body["plan"]["window"] == "standard" for r in rb)
        for rid in rb[:5]:
            assert rt.approve(rid, principal="lee", roles=LEAD, now=REQUESTED).counted
        duties = {rid: rt.authorization(rid, now=REQUESTED).duties for rid in rb[:4]}
        for d in duties[rb[0]]:  # verified
            rt.step(rb[0], d, "completed", now=REQUESTED)
            rt.step(rb[0], d, "verified", now=REQUESTED)
        for d in duties[rb[1]]:  # completed
            rt.step(rb[1], d, "completed", now=REQUESTED)
        rt.step(rb[2], duties[rb[2]][0], "completed", now=REQUESTED)  # in progress
        rt.step(rb[3], duties[rb[3]][0], "completed", now=REQUESTED)  # partial
        rt.step(rb[3], duties[rb[3]][1], "failed", now=REQUESTED)
        # rb[4]: approved in time, stays approved once its window has passed
        rt.approve(rb[5], principal="dee", roles=LEAD, verdict="deny", now=REQUESTED)  # denied
        assert rt.cancel(rb[6], principal="ops", now=REQUESTED).recorded  # cancelled
        # rb[7..11] stay pending; the sweeper records rb[7]'s lapse, the others lapse unrecorded
        swept = rt.expire(now=SWEPT)
        assert [r.subject for r in swept] == [rb[7]]

        # the defect: a window-lapsed pending plan, its pending_until far off, counted `pending`
        mid = WINDOW_END[9] + timedelta(microseconds=1)  # rb[8], rb[9] lapsed; rb[10], rb[11] not yet
        want = {"approved": 1, "cancelled": 1, "completed": 1, "denied": 1, "expired": 3, "in_progress": 1,
                "partial": 1, "pending": 2, "verified": 1}
        assert _per_plan(rt, b, mid) == want
        assert rt.batch_counts(b.batch_id, now=mid)["by_status"] == want
        counts = rt.batch_counts(b.batch_id, now=mid)
        # closed (denied, cancelled, expired) plans are not remaining: 12 = 2 done + 5 closed + 5 remaining
        assert (counts["rollbacks"], counts["done"], counts["partial"], counts["remaining"]) == (12, 2, 1, 5)
        assert counts["closed"] == 5
        status = rt.batch_status(b.batch_id, now=mid)
        assert {k: v for k, v in status.items() if k != "duties"} == counts

        @settings(max_examples=40, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
        @given(st.one_of(
            st.integers(min_value=0, max_value=int((LAST - SWEPT).total_seconds() * 1_000_000)).map(
                lambda us: SWEPT + timedelta(microseconds=us)),
            st.sampled_from([*WINDOW_END[8:], PENDING_UNTIL]).flatmap(
                lambda t: st.integers(-2, 2).map(lambda us: t + timedelta(microseconds=us)))))
        @example(SWEPT)
        @example(WINDOW_END[8])  # its deadline itself: not lapsed yet (`now > reversible_until`)
        @example(WINDOW_END[11] + timedelta(microseconds=1))
        @example(PENDING_UNTIL)
        @example(LAST)
        def agrees(now):
            by = rt.batch_counts(b.batch_id, now=now)["by_status"]
            assert by == _per_plan(rt, b, now), now
            assert rt.batch_status(b.batch_id, now=now)["by_status"] == by

        agrees()
    finally:
        rt.close()
        led.close()
