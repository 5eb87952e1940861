"""Issue 18 at scale, after planning: ``Runtime.approve_batch`` issues a number of SQL
statements that does not grow with the number of plans (no query or insert per plan), the
engine's answer is still per plan where the plans differ (``distinct from
original.reviewer``), plans with history are judged as one by one, and ``batch_counts``
and ``batch_status`` say what each plan's ``Runtime.authorization`` says, on batches
with approved, denied, cancelled, expired, in-progress, completed and partial plans, and on
random mixes of them (hypothesis), where a closed plan (denied, cancelled, expired) is never
counted ``remaining``.
Statements are counted with SQLAlchemy's cursor events on SQLite; no time is measured.
The semantic tests run on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as hs
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from test_bulk_queries import statements

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import policy_engine  # noqa: E402
from benchmarks import bench_incidents as B  # noqa: E402
from policy_engine import Runtime  # noqa: E402
from policy_engine.ledger import Ledger, NewEntry  # noqa: E402
from policy_engine.runtime.results import RuntimeUsageError  # noqa: E402

#: the incident may not be approved by a reviewer of the original (rev-0 .. rev-4, by execution)
DISTINCT = B.POLICY.replace("authorize 1 incident_lead\n    cascade depth 5",
                            "authorize 1 incident_lead distinct from original.reviewer\n    cascade depth 5")
#: two incident leads
TWO = B.POLICY.replace("authorize 1 incident_lead\n    cascade depth 5",
                       "authorize 2 incident_lead\n    cascade depth 5")
NOW = B.T0 + timedelta(days=1)
LEAD = ["incident_lead"]


def _engine(tmp_path, text: str):
    (tmp_path / "ops.policy").write_text(text)
    return policy_engine.load(str(tmp_path / "ops.policy"))


def _batch(rt, now=NOW):
    return rt.request_bulk_rollback('original.type == "a0"', "incident", "ops", "bench", now=now)


def _approve_statements(tmp_path, engine, roots: int) -> tuple[int, int, int, dict]:
    led = Ledger.open(f"sqlite:///{tmp_path / f'ap-{roots}.db'}", create=True)
    B.fill_executions(led, roots, 0)
    try:
        with Runtime(engine, led) as rt:
            b = _batch(rt)
            with statements() as seen:
                r = rt.approve_batch(b.batch_id, principal="lee", roles=LEAD, batch_hash=b.batch_hash, now=NOW)
            n_approve = len(seen)
            with statements() as seen:
                st = rt.batch_status(b.batch_id, now=NOW)
            n_status = len(seen)
            assert st["by_status"] == {"approved": roots} and st["duties"]["total"] == roots * (B.DEPTH + 1)
            return n_approve, n_status, r["counted"], r
    finally:
        led.close()


def test_approving_a_batch_takes_as_many_statements_for_200_plans_as_for_10(tmp_path):
    engine = _engine(tmp_path, B.POLICY)
    small, st_small, counted_small, _ = _approve_statements(tmp_path, engine, 10)
    large, st_large, counted_large, r = _approve_statements(tmp_path, engine, 200)
    assert (counted_small, counted_large) == (10, 200)
    assert (r["plans"], r["not_counted"], r["statuses"]) == (200, 0, {"approved": 200})
    assert large == small and small <= 12, (small, large)  # one insert of 201 entries, one UPDATE
    assert st_large == st_small, (st_small, st_large)


def test_the_batch_approval_is_recorded_as_before_one_entry_for_the_batch_and_one_per_plan(tmp_path, ledger_url):  # noqa: F811
    led = Ledger.open(ledger_url, create=True)
    B.fill_executions(led, 6, 0)
    with Runtime(_engine(tmp_path, B.POLICY), led) as rt:
        b = _batch(rt)
        r = rt.approve_batch(b.batch_id, principal="lee", roles=LEAD, batch_hash=b.batch_hash, now=NOW, note="n")
        head = led.get(r["approval_id"])
        assert head.kind == "approval" and head.links == (b.batch_id,)
        assert (head.body["subject_kind"], head.body["digest"], head.body["note"]) == ("batch", b.batch_hash, "n")
        per = led.entries(kind="approval", link=r["approval_id"])
        assert sorted(e.links[0] for e in per) == sorted(b.rollbacks)
        for e in per:
            assert e.links == (e.body["subject"], head.id) and e.seq > head.seq
            assert (e.body["counted"], e.body["status_after"], e.body["batch_hash"]) == (True, "approved",
                                                                                        b.batch_hash)
            a = rt.authorization(e.body["subject"], now=NOW)
            assert a.status == "approved" and e.body["digest"] == a.digest and "lee" in a.verdict.accepted
        # the projection says what the entries say (rebuilt from the log: the same rows)
        from policy_engine.runtime import projections as P

        with led.reading() as c:
            live = P.snapshot(c)
        led.transact(lambda c: P.rebuild(c, led.fetch) and [])
        with led.reading() as c:
            assert P.snapshot(c) == live
        # a second approval of the batch: each plan now has history, judged one by one (still approved)
        again = rt.approve_batch(b.batch_id, principal="kim", roles=LEAD, batch_hash=b.batch_hash, now=NOW)
        assert (again["plans"], again["statuses"]) == (6, {"approved": 6})
    led.close()


def test_a_principal_who_reviewed_some_originals_counts_only_on_the_others(tmp_path, ledger_url):  # noqa: F811
    """Plans of one batch whose answers differ (distinct from original.reviewer): the engine's
    answer is not shared between them."""
    led = Ledger.open(ledger_url, create=True)
    B.fill_executions(led, 10, 0)  # originals i = 0..9 reviewed by rev-(i % 5)
    with Runtime(_engine(tmp_path, DISTINCT), led) as rt:
        b = _batch(rt)
        r = rt.approve_batch(b.batch_id, principal="rev-2", roles=LEAD, batch_hash=b.batch_hash, now=NOW)
        assert (r["counted"], r["not_counted"], r["statuses"]) == (8, 2, {"approved": 8, "pending": 2})
        for rid in b.rollbacks:
            a = rt.authorization(rid, now=NOW)
            reviewer = a.verdict is not None and any(x.principal == "rev-2" for x in a.verdict.rejected)
            assert a.status == ("pending" if reviewer else "approved")
        assert sum(1 for rid in b.rollbacks if rt.authorization(rid, now=NOW).status == "pending") == 2
        # a deny of the batch by someone else: every plan not started is denied (as one by one)
        d = rt.approve_batch(b.batch_id, principal="dee", roles=LEAD, batch_hash=b.batch_hash, verdict="deny",
                             now=NOW)
        assert (d["plans"], d["counted"], d["statuses"], d["skipped"]) == (10, 10, {"denied": 10}, [])
        assert rt.batch_counts(b.batch_id, now=NOW)["by_status"] == {"denied": 10}
        # on a fresh batch, a reviewer's deny counts only where the reviewer could approve
        b2 = rt.request_bulk_rollback('original.type == "a0"', "incident", "ops", "again", now=NOW)
        d2 = rt.approve_batch(b2.batch_id, principal="rev-2", roles=LEAD, batch_hash=b2.batch_hash, verdict="deny",
                              now=NOW)
        assert (d2["plans"], d2["counted"], d2["statuses"]) == (10, 8, {"denied": 8, "pending": 2})
    led.close()


def test_plans_with_history_are_judged_as_one_by_one(tmp_path, ledger_url):  # noqa: F811
    """A plan approved, denied or cancelled on its own before the batch approval: the batch's
    approval records what ``Runtime.approve`` would have on each."""
    led = Ledger.open(ledger_url, create=True)
    B.fill_executions(led, 5, 0)
    with Runtime(_engine(tmp_path, TWO), led) as rt:
        b = _batch(rt)
        r0, r1, r2 = b.rollbacks[:3]
        assert rt.approve(r0, principal="ann", roles=LEAD, now=NOW).counted
        assert rt.approve(r1, principal="lee", roles=LEAD, now=NOW).counted  # lee again: not counted twice
        assert rt.cancel(r2, principal="ops", now=NOW).recorded
        r = rt.approve_batch(b.batch_id, principal="lee", roles=LEAD, batch_hash=b.batch_hash, now=NOW)
        assert r["skipped"] == [{"rollback": r2, "status": "cancelled"}]
        assert (r["plans"], r["counted"], r["statuses"]) == (4, 4, {"approved": 1, "pending": 3})
        assert rt.authorization(r0, now=NOW).status == "approved"
        assert rt.authorization(r1, now=NOW).status == "pending"  # one person, one slot
        per = {e.body["subject"]: e.body for e in led.entries(kind="approval", link=r["approval_id"])}
        assert (per[r0]["status_after"], per[r1]["status_after"]) == ("approved", "pending")
    led.close()


def _expected(rt, b, now) -> tuple[dict, dict]:
    sts = [rt.authorization(rid, now=now) for rid in b.rollbacks]
    by = dict(sorted(Counter(s.status for s in sts).items()))
    total = sum(len(s.duties) for s in sts)
    done = sum(1 for s in sts for d in s.duties if s.steps.get(d) in ("completed", "verified"))
    failed = sum(1 for s in sts for d in s.duties if s.steps.get(d) == "failed")
    return by, {"total": total, "done": done, "failed": failed, "remaining": total - done}


def test_batch_counts_and_batch_status_say_what_each_plan_says_on_mixed_batches(tmp_path, ledger_url):  # noqa: F811
    led = Ledger.open(ledger_url, create=True)
    B.fill_executions(led, 9, 3)  # 9 chains (a plan of 6 duties each) and 3 lone a1 executions
    with Runtime(_engine(tmp_path, B.POLICY), led) as rt:
        b = _batch(rt)
        lone = rt.request_bulk_rollback('original.type == "a1" && original.caused_by == null', "incident", "ops",
                                        "x", now=NOW + timedelta(days=8))  # a second batch, still pending later
        rb = list(b.rollbacks)
        for rid in rb[:6]:
            assert rt.approve(rid, principal="lee", roles=LEAD, now=NOW).counted
        rt.approve(rb[6], principal="dee", roles=LEAD, verdict="deny", now=NOW)
        rt.cancel(rb[7], principal="ops", now=NOW)  # rb[8] stays pending: expired a week later

        def duties(rid):
            return rt.authorization(rid, now=NOW).duties

        for d in duties(rb[0]):  # completed, then verified
            rt.step(rb[0], d, "completed", now=NOW)
            rt.step(rb[0], d, "verified", now=NOW)
        for d in duties(rb[1]):  # completed
            rt.step(rb[1], d, "completed", now=NOW)
        rt.step(rb[2], duties(rb[2])[0], "completed", now=NOW)  # in progress
        rt.step(rb[3], duties(rb[3])[0], "completed", now=NOW)  # partial
        rt.step(rb[3], duties(rb[3])[1], "failed", now=NOW)
        rt.batch_step(b.batch_id, duties(rb[4])[0], "failed", now=NOW)  # partial, through the batch
        by, dut = _expected(rt, b, NOW)
        st, cn = rt.batch_status(b.batch_id, now=NOW), rt.batch_counts(b.batch_id, now=NOW)
        assert st["by_status"] == by == cn["by_status"], (st["by_status"], by)
        assert st["duties"] == dut, (st["duties"], dut)
        assert {k: v for k, v in st.items() if k != "duties"} == cn
        done = by.get("completed", 0) + by.get("verified", 0)
        closed = by.get("denied", 0) + by.get("cancelled", 0) + by.get("expired", 0)  # (never `remaining`)
        assert (cn["done"], cn["closed"], cn["partial"], cn["remaining"], cn["rollbacks"]) \
            == (done, closed, by.get("partial", 0), 9 - done - closed, 9) == (2, 2, 2, 5, 9)
        later = NOW + timedelta(days=8)  # the pending plan is past its pending_until: expired in both
        assert {k: v for k, v in rt.batch_status(b.batch_id, now=later).items() if k != "duties"} \
            == rt.batch_counts(b.batch_id, now=later)
        assert rt.batch_counts(b.batch_id, now=NOW)["by_status"] == {
            "approved": 1, "cancelled": 1, "completed": 1, "denied": 1, "in_progress": 1, "partial": 2,
            "pending": 1, "verified": 1}
        # eight days on, the pending plan is past its pending_until, and so is the approved one, whose
        # approval lapsed after a day (pending again): both expired, as each plan's authorization says
        assert rt.batch_counts(b.batch_id, now=NOW + timedelta(days=8))["by_status"]["expired"] == 2
        assert _expected(rt, b, NOW + timedelta(days=8))[0]["expired"] == 2
        assert rt.batch_counts(lone.batch_id, now=NOW + timedelta(days=8))["by_status"] == {"pending": 3}
        assert rt.batch_status(lone.batch_id, now=NOW + timedelta(days=8))["duties"]["total"] == 3
    led.close()


@pytest.mark.parametrize("verdict", ["approve", "deny"])
@pytest.mark.parametrize("text", [DISTINCT, TWO], ids=["distinct-reviewer", "two-leads"])
def test_the_batch_approval_counts_on_each_plan_what_an_approval_of_that_plan_alone_counts(tmp_path, text, verdict):
    """Twin ledgers: one approval of the batch, and one ``Runtime.approve`` per plan; each plan
    gets the same ``counted`` and ``status_after``."""
    engine = _engine(tmp_path, text)
    got = []
    for mode in ("batch", "one"):
        led = Ledger.open(f"sqlite:///{tmp_path / f'{mode}.db'}", create=True)
        B.fill_executions(led, 10, 0)
        with Runtime(engine, led) as rt:
            b = _batch(rt)
            orig = dict(zip(b.rollbacks, b.originals, strict=True))
            if mode == "batch":
                r = rt.approve_batch(b.batch_id, principal="rev-3", roles=LEAD, batch_hash=b.batch_hash,
                                     verdict=verdict, now=NOW)
                bodies = [e.body for e in led.entries(kind="approval", link=r["approval_id"])]
            else:
                for rid in b.rollbacks:
                    rt.approve(rid, principal="rev-3", roles=LEAD, verdict=verdict, now=NOW)
                bodies = [e.body for e in led.entries(kind="approval") if e.body["subject"] in orig]
            with led.reading() as c:
                idx = {e.id: e.seq for e in led.fetch(c)}
            got.append(sorted((idx[orig[a["subject"]]], a["counted"], a["status_after"]) for a in bodies))
        led.close()
    assert got[0] == got[1] and len(got[0]) == 10
    assert {x[1] for x in got[0]} == ({True, False} if text == DISTINCT else {True})


# --- the counts' contract on random mixes (hypothesis) --------------------------------------
#
# ``rollbacks = done + closed + remaining``: done is completed or verified; closed is denied,
# cancelled or expired (ended before any authorized step: nothing of it will be rolled back);
# remaining is the rest (pending, approved, in progress, partial: ``partial`` is part of it).
# Each plan is counted under the status its ``Runtime.authorization`` gives it at the same ``now``.

DONE, CLOSED = ("completed", "verified"), ("denied", "cancelled", "expired")
WINDOWED = B.POLICY.replace('reversible full via "undo.a0"', 'reversible full via "undo.a0" within 1h').replace(
    'reversible full via "undo.a1"', 'reversible full via "undo.a1" within 1h')
MIX_PLANS = 5
_T = hs.sampled_from([5, 45, 50, 51, 120, 60 * 30, 60 * 24 * 8])
_T_EARLY = hs.sampled_from([5, 5, 5, 45, 50, 51, 120])  #: an approval: mostly in time
#: one plan's fate: who acts on it and when (minutes after the batch's request; the plans'
#: one-hour windows end at 50 minutes, the instant itself still inside; ``pending_until`` is
#: 7 days on), then its steps: some (record, status) reports, and whether every duty is then
#: completed, and verified
_fate = hs.one_of(
    hs.tuples(hs.just("none")),
    hs.tuples(hs.just("approve"), _T_EARLY, hs.sampled_from(["lee", "kim"]), hs.sampled_from([1, 24, 24 * 30]),
              hs.lists(hs.tuples(hs.integers(0, 2), hs.sampled_from(["started", "completed", "failed", "verified"])),
                       max_size=4), hs.booleans(), hs.booleans()),
    hs.tuples(hs.just("approve"), hs.just(5), hs.just("lee"), hs.just(24 * 30), hs.just([]), hs.just(True),
              hs.booleans()),  # approved in time and done
    hs.just(("approve", 5, "kim", 24 * 30, [(0, "completed"), (1, "failed")], False, False)),  # partial
    hs.tuples(hs.just("deny"), _T),
    hs.tuples(hs.just("cancel"), _T),
    hs.tuples(hs.just("step"), _T, hs.integers(0, 2)),  # a step before any approval (flagged, starts nothing)
)
#: the whole batch approved or denied, and the sweeper, each at some time
_batch_ops = hs.lists(hs.one_of(hs.tuples(_T, hs.sampled_from(["approve", "deny"])), hs.tuples(_T, hs.just("sweep"))),
                      max_size=2)
_mixes = hs.tuples(hs.lists(_fate, min_size=MIX_PLANS, max_size=MIX_PLANS), _batch_ops)


def _fill_tagged(led, tag: str) -> None:
    """MIX_PLANS chains a0 -> a1 (two records per plan), executed 10 minutes before the request."""
    t0 = B.T0 - timedelta(minutes=10)
    body = {"receipt": {"run": tag}, "authorized": True, "flags": [], "reasons": [], "missing_receipt": [],
            "decision": None, "action_id": None, "reviewer": "rev-0", "requester": "agent"}
    ts = t0.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    roots = led.append_many([NewEntry("execution", {**body, "type": "a0", "caused_by": None, "executed_at": ts},
                                      workflow="ops", time=t0) for _ in range(MIX_PLANS)])
    led.append_many([NewEntry("execution", {**body, "type": "a1", "caused_by": p.id, "executed_at": ts},
                              workflow="ops", links=[p.id], time=t0) for p in roots])


def _contract(rt, b, now) -> None:
    sts = [rt.authorization(rid, now=now) for rid in b.rollbacks]
    by = dict(sorted(Counter(s.status for s in sts).items()))
    cn, st = rt.batch_counts(b.batch_id, now=now), rt.batch_status(b.batch_id, now=now)
    assert cn["by_status"] == by, (now, cn["by_status"], by)
    n = len(b.rollbacks)
    done = sum(by.get(k, 0) for k in DONE)
    closed = sum(by.get(k, 0) for k in CLOSED)
    assert (cn["rollbacks"], cn["done"], cn["partial"]) == (n, done, by.get("partial", 0)), (now, cn)
    assert (cn["closed"], cn["remaining"]) == (closed, n - done - closed), (now, cn, by)  # closed: not remaining
    assert cn["rollbacks"] == cn["done"] + cn["closed"] + cn["remaining"]
    assert {k: v for k, v in st.items() if k != "duties"} == cn
    _, duties = _expected(rt, b, now)
    assert st["duties"] == duties, (now, st["duties"], duties)


def test_batch_counts_and_batch_status_agree_with_each_plan_on_random_mixes(tmp_path, ledger_url):  # noqa: F811
    """Random batches of five plans, each approved (for an hour, a day or a month) and
    stepped, denied, cancelled or left alone at some time, the batch approved or denied as
    a whole, the sweeper run: at every instant read, ``batch_counts`` and ``batch_status``
    count each plan as its ``Runtime.authorization`` says, and closed plans are not
    ``remaining``."""
    led = Ledger.open(ledger_url, create=True)
    rt = Runtime(_engine(tmp_path, WINDOWED), led)
    seen = Counter()
    try:
        @settings(max_examples=30, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
        @given(_mixes)
        @example(([("approve", 5, "lee", 24 * 30, [], True, True), ("approve", 5, "lee", 24, [], True, False),
                   ("approve", 45, "kim", 1, [(0, "completed"), (1, "failed")], False, False),
                   ("deny", 5), ("cancel", 45)], [(51, "sweep")]))
        def agrees(mix):
            fates, batch_ops = mix
            tag = f"mix-{len(seen)}"
            seen[tag] += 1
            _fill_tagged(led, tag)
            b = rt.request_bulk_rollback(f'original.receipt.run == "{tag}"', "incident", "ops", "mix", now=B.T0)
            assert len(b.rollbacks) == MIX_PLANS
            events = [(f[1], i, f) for i, f in enumerate(fates) if f[0] != "none"]
            events += [(t, -1, ("batch", op)) for t, op in batch_ops]
            last = B.T0
            for minutes, i, op in sorted(events, key=lambda e: (e[0], e[1])):
                last = B.T0 + timedelta(minutes=minutes)
                _apply(rt, b, b.rollbacks[i] if i >= 0 else None, op, last)
            for later in (timedelta(0), timedelta(minutes=30), timedelta(days=2), timedelta(days=8)):
                _contract(rt, b, last + later)

        agrees()
    finally:
        rt.close()
        led.close()


def _apply(rt, b, rid, op, t) -> None:
    """One event of a mix; what the runtime refuses (a step of a plan denied meanwhile, a
    verification of a step not completed) changes nothing and is skipped."""
    def tried(fn, *args, **kw):
        with contextlib.suppress(RuntimeUsageError):
            fn(*args, **kw)

    kind = op[0]
    if kind == "approve":
        _, _, who, hours, steps, finish, verify = op
        tried(rt.approve, rid, principal=who, roles=LEAD, now=t, expires_in=timedelta(hours=hours))
        duties = rt.authorization(rid, now=t).duties
        for k, status in steps:
            tried(rt.step, rid, duties[k % len(duties)], status, now=t)
        for d in duties if finish else ():
            tried(rt.step, rid, d, "completed", now=t)
            if verify:
                tried(rt.step, rid, d, "verified", now=t)
    elif kind == "deny":
        tried(rt.approve, rid, principal="dee", roles=LEAD, verdict="deny", now=t)
    elif kind == "cancel":
        tried(rt.cancel, rid, principal="ops", now=t)
    elif kind == "step":
        duties = rt.authorization(rid, now=t).duties
        tried(rt.step, rid, duties[op[2] % len(duties)], "completed", now=t)
    elif op[1] == "sweep":
        rt.expire(now=t)
    else:
        rt.approve_batch(b.batch_id, principal="lee", roles=LEAD, batch_hash=b.batch_hash, verdict=op[1], now=t)
