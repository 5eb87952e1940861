"""The runtime under concurrency (the nineteenth session's audit): several runtimes (threads
of one process, or processes) on one ledger, racing on the same subjects, on SQLite and
PostgreSQL. What each call returns is what the ledger then says, and the projections equal
a rebuild from the log.

- a reviewer's claim of a rollback is a single-use reservation: the same reviewer claiming
  it again (a retry, two of its workers at once) was recorded again each time, and the
  result of a recorded claim did not name its holder;
- a principal or a requester longer than a projection column holds (256 characters) was a
  ``LedgerUnavailable`` on PostgreSQL (the database's "value too long") and recorded on
  SQLite: now a ``RuntimeUsageError`` on both, nothing recorded;
- a deny recorded by a runtime deciding under another policy version than the rollback's
  (a reload, or two processes of a rolling deploy) wrote its status under that version
  (``pending``) into the projection, so back under the rollback's own version the queue
  said ``pending`` while ``authorization`` said ``approved``;
- sweepers racing (``expire`` on two hosts), or requests planning an expired rollback again,
  each appended their own ``expired`` transition of the same subject and reported it;
- ``approve(expires_in=60)`` was a TypeError traceback, and a ``cancel`` naming no principal
  was recorded.
"""

from __future__ import annotations

import threading

import pytest
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import POLICY, RECEIPT, WF, at, policy_path, rt, send  # noqa: F401  (fixtures)

import policy_engine
from policy_engine import Runtime
from policy_engine.runtime import RuntimeUsageError


def _race(fns: list) -> list:
    """Run ``fns`` at once (one thread each, released together); their results (or errors)."""
    barrier = threading.Barrier(len(fns))
    out: list = [None] * len(fns)

    def run(i: int) -> None:
        barrier.wait()
        try:
            out[i] = fns[i]()
        except Exception as e:  # noqa: BLE001 - returned to the test
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _projections_are_a_rebuild(r: Runtime) -> None:
    live = r.projection_snapshot()
    r.rebuild()
    assert r.projection_snapshot() == live


def _rollback(r: Runtime, t: float = 0) -> tuple[str, str]:
    g = r.gate({"workflow": WF, "type": "other"}, now=at(t))
    x = r.executed(g.decision_id, receipt={"note": "n"}, now=at(t + 1))
    p = r.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita", reason="r",
                           now=at(t + 2))
    return x.execution_id, p.rollback_id


def test_a_reviewer_claims_a_rollback_once_however_many_of_its_workers_race(ledger_url, policy_path):  # noqa: F811
    runtimes = [Runtime.open(str(policy_path), ledger=ledger_url) for _ in range(4)]
    try:
        first = runtimes[0]
        _x, rid = _rollback(first)
        got = _race([lambda r=r: r.claim(rid, principal="cs-1", now=at(5)) for r in runtimes])
        assert not [g for g in got if isinstance(g, Exception)], got
        assert sum(g.recorded for g in got) == 1  # one reservation, however many asked
        assert {g.claimed_by for g in got} == {"cs-1"}  # each is told who holds it: the caller
        claims = [e for e in first.ledger.entries(kind="transition") if e.body["subject"] == rid]
        assert [(e.body["to"], e.body["principal"]) for e in claims] == [("claimed", "cs-1")]
        won = next(g for g in got if g.recorded)
        assert won.transition_id == claims[0].id
        # later: the holder again, and someone else, are answered; nothing more is recorded
        again = first.claim(rid, principal="cs-1", now=at(6))
        other = first.claim(rid, principal="cs-2", now=at(6))
        assert (again.recorded, again.claimed_by, other.recorded, other.claimed_by) == (False, "cs-1", False, "cs-1")
        assert len([e for e in first.ledger.entries(kind="transition") if e.body["subject"] == rid]) == 1
        assert [(i.rollback_id, i.claimed_by) for i in first.queue(claimed=True, now=at(7))] == [(rid, "cs-1")]
        _projections_are_a_rebuild(first)
    finally:
        for r in runtimes:
            r.close()


def test_a_name_longer_than_a_projection_column_is_a_usage_error_on_both_backends(rt):  # noqa: F811
    long = "p" * 257
    g = rt.gate(send(10.0), now=at(0))
    x = rt.executed(rt.gate(send(10.0), now=at(0)).decision_id, receipt=RECEIPT, now=at(1))
    p = rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita", reason="r",
                            now=at(2))
    n = rt.ledger.size
    calls = {
        "claim_execution": lambda: rt.claim_execution(g.decision_id, principal=long, now=at(3)),
        "claim": lambda: rt.claim(p.rollback_id, principal=long, now=at(3)),
        "request_rollback": lambda: rt.request_rollback(x.execution_id, scenario="customer_request",
                                                        requested_by=long, reason="r", now=at(3)),
        "approve": lambda: rt.approve(p.rollback_id, principal=long, roles=["customer_service"], now=at(3)),
    }
    for name, call in calls.items():
        with pytest.raises(RuntimeUsageError, match="at most 256 characters"):
            call()
        assert rt.ledger.size == n, name  # nothing recorded
    # 256 is a name the ledger holds, on both backends
    c = rt.claim_execution(g.decision_id, principal="w" * 256, now=at(4))
    assert c.recorded and rt.claims_in_doubt(now=at(5))[0].claimed_by == "w" * 256
    _projections_are_a_rebuild(rt)


def test_a_deny_under_another_policy_version_leaves_the_queue_agreeing_with_authorization(ledger_url, tmp_path):  # noqa: F811
    """Two runtimes on one ledger, one deciding under the policy's version 1.0 and one under
    1.1 (a rolling deploy; or one runtime reloaded and reloaded back)."""
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    v1.mkdir()
    v2.mkdir()
    (v1 / "replies.policy").write_text(POLICY, encoding="utf-8")
    (v2 / "replies.policy").write_text(POLICY.replace('version "1.0"', 'version "1.1"'), encoding="utf-8")
    with Runtime.open(policy_engine.PolicyStore(str(v1)), ledger=ledger_url) as old, \
            Runtime.open(policy_engine.PolicyStore(str(v2)), ledger=ledger_url) as new:
        assert old.engine.policy_hash != new.engine.policy_hash
        _x, rid = _rollback(old)
        assert old.approve(rid, principal="cs-1", roles=["customer_service"], now=at(10)).status == "approved"
        d = new.approve(rid, principal="cs-2", roles=["customer_service"], verdict="deny", now=at(11))
        # stale under 1.1: the deny closes it (cancelled) under both versions, so the runtime of 1.0
        # cannot go on with the approval given before it
        assert (d.recorded, d.counted, d.status) == (True, True, "cancelled")
        for r in (old, new):
            assert r.authorization(rid, now=at(12)).status == "cancelled"
            assert [(i.rollback_id, i.status) for i in r.queue(now=at(12))] == []
        _projections_are_a_rebuild(old)
        # and the sweeper of the rollback's own version leaves it be
        assert old.expire(now=at(13)) == []


def test_sweepers_racing_record_each_expiry_once(ledger_url, policy_path):  # noqa: F811
    """Two sweepers (``expire``: a cron on two hosts) and requests planning an expired rollback
    again, at once: each expiry is recorded once, and only its recorder says it recorded it
    (before, every racer appended its own `expired` transition and reported it)."""
    runtimes = [Runtime.open(str(policy_path), ledger=ledger_url) for _ in range(3)]
    try:
        first = runtimes[0]
        g = first.gate(send(500.0), now=at(0))  # awaiting approval: expires after decision_ttl
        _x, rid = _rollback(first)  # pending: expires after rollback_ttl
        late = at(30 * 24 * 3600)
        swept = _race([lambda r=r: r.expire(now=late) for r in runtimes])
        assert not [s for s in swept if isinstance(s, Exception)], swept
        assert sorted(t.subject for s in swept for t in s) == sorted([g.decision_id, rid])
        assert all(t.recorded for s in swept for t in s)
        expired = [e.body["subject"] for e in first.ledger.entries(kind="transition") if e.body["to"] == "expired"]
        assert sorted(expired) == sorted([g.decision_id, rid])  # one entry each
        # a rollback expired by the clock, planned again by three requests at once
        x2, rid2 = _rollback(first, 100)
        got = _race([lambda r=r: r.request_rollback(x2, scenario="customer_request", requested_by="rita",
                                                    reason="again", now=late) for r in runtimes])
        assert not [x for x in got if isinstance(x, Exception)], got
        assert len({x.rollback_id for x in got}) == 1 and sum(not x.existing for x in got) == 1
        ends = [e.body["to"] for e in first.ledger.entries(kind="transition") if e.body["subject"] == rid2]
        assert ends == ["expired"]
        assert first.authorization(rid2, now=late).status == "expired"
        _projections_are_a_rebuild(first)
    finally:
        for r in runtimes:
            r.close()


def test_an_approval_lifetime_or_a_cancel_without_a_principal_is_a_usage_error(rt):  # noqa: F811
    """``approve(expires_in=60)`` (seconds, not a duration) was a TypeError traceback, and a
    ``cancel`` naming nobody was recorded with no principal: both refused, nothing recorded."""
    from datetime import timedelta

    g = rt.gate(send(500.0), now=at(0))
    n = rt.ledger.size
    for bad in (60, -timedelta(seconds=1), "1h"):
        with pytest.raises(RuntimeUsageError, match="`expires_in` is a duration"):
            rt.approve(g.decision_id, principal="sam", roles=["reviewer"], expires_in=bad, now=at(1))
    for nobody in (None, ""):
        with pytest.raises(RuntimeUsageError, match="`principal` is a non-empty string"):
            rt.cancel(g.decision_id, principal=nobody, now=at(1))
    assert rt.ledger.size == n
    a = rt.approve(g.decision_id, principal="sam", roles=["reviewer"], expires_in=timedelta(minutes=5), now=at(1))
    assert (a.recorded, a.status) == (True, "approved")
    assert rt.authorization(g.decision_id, now=at(1 + 301)).status == "pending"  # its approval lapsed


def _process(url: str, pol: str, ids: dict, barrier, out) -> None:
    """One OS process of the race below: the same calls on the same subjects as its peers."""
    with Runtime.open(pol, ledger=url) as r:
        barrier.wait()
        late = at(30 * 24 * 3600)
        res = {
            "claim_execution": r.claim_execution(ids["approved"], principal="worker", now=at(20)).recorded,
            "executed": r.executed(ids["approved"], receipt=RECEIPT, now=at(21)).authorized,
            "claim": r.claim(ids["queued"], principal="cs-1", now=at(22)).recorded,
        }
        barrier.wait()  # then every process sweeps, and plans an expired rollback again
        res |= {
            "expired": sorted(t.subject for t in r.expire(now=late)),
            "again": r.request_rollback(ids["lapsing"], scenario="customer_request", requested_by="rita",
                                        reason="again", now=late).existing,
        }
        out.put(res)


def test_processes_racing_on_one_ledger_record_each_transition_once(ledger_url, policy_path):  # noqa: F811
    import multiprocessing as mp

    pol = str(policy_path)
    with Runtime.open(pol, ledger=ledger_url) as r:
        g = r.gate(send(500.0), now=at(0))
        r.approve(g.decision_id, principal="sam", roles=["reviewer"], now=at(1))
        waiting = r.gate(send(500.0), now=at(2)).decision_id  # never approved: expires
        _x, queued = _rollback(r, 3)
        lapsing, _rid = _rollback(r, 6)
    ids = {"approved": g.decision_id, "queued": queued, "lapsing": lapsing}
    ctx = mp.get_context("spawn")
    n = 4
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_process, args=(ledger_url, pol, ids, barrier, out)) for _ in range(n)]
    for p in procs:
        p.start()
    got = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sum(x["claim_execution"] for x in got) == 1
    assert sum(x["executed"] for x in got) == 1  # one authorized execution
    assert sum(x["claim"] for x in got) == 1  # the same reviewer in four processes: one claim
    swept = [s for x in got for s in x["expired"]]
    assert len(swept) == len(set(swept))  # each expiry reported by its recorder alone
    assert sum(not x["again"] for x in got) == 1  # planned again once
    with Runtime.open(pol, ledger=ledger_url) as r:
        ends = [(e.body["subject"], e.body["to"]) for e in r.ledger.entries(kind="transition")]
        assert len(ends) == len(set(ends)), ends  # no transition recorded twice
        assert (waiting, "expired") in ends and (queued, "expired") in ends
        assert len([e for e in r.ledger.entries(kind="rollback") if e.body["original"] == lapsing]) == 2
        _projections_are_a_rebuild(r)
        assert r.ledger.verify().ok
