"""Eight processes resolving the same subjects on PostgreSQL: exactly one transition wins
(one authorized execution of an approved decision, one claim, one rollback recorded)."""

from __future__ import annotations

import multiprocessing as mp

import pytest
from ledger_fixtures import _pg_admin, _postgres_url
from runtime_support import at, send, write_policy

from policy_engine import Runtime


def _worker(url, pol, decision_id, execution_id, barrier, out):
    with Runtime.open(pol, ledger=url) as rt:
        barrier.wait()
        x = rt.executed(decision_id, receipt={"message": "m", "ticket": "t"}, now=at(5))
        p = rt.request_rollback(execution_id, scenario="customer_request", requested_by="rita", reason="r",
                                now=at(6))
        c = rt.claim(p.rollback_id, principal=f"cs-{mp.current_process().pid}", now=at(7))
        out.put((x.authorized, p.rollback_id, p.existing, c.recorded))


@pytest.fixture
def pg_url():
    url, name = _postgres_url()
    yield url
    _pg_admin(f"DROP SCHEMA {name} CASCADE")


def test_eight_processes_exactly_one_transition_wins(pg_url, tmp_path):
    pol = str(write_policy(tmp_path))
    with Runtime.open(pol, ledger=pg_url) as rt:
        g = rt.gate(send(500.0), now=at(0))
        rt.approve(g.decision_id, principal="sam", roles=["reviewer"], now=at(1))
        a = rt.gate(send(10.0), now=at(2))
        x0 = rt.executed(a.decision_id, receipt={"message": "m", "ticket": "t"}, now=at(3))
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(8), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(pg_url, pol, g.decision_id, x0.execution_id, barrier, out))
             for _ in range(8)]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sum(r[0] for r in results) == 1  # one authorized execution
    assert len({r[1] for r in results}) == 1 and sum(not r[2] for r in results) == 1  # one rollback
    assert sum(r[3] for r in results) == 1  # one claim
    with Runtime.open(pol, ledger=pg_url) as rt:
        assert len(rt.ledger.entries(kind="execution")) == 9
        assert len(rt.ledger.entries(kind="rollback")) == 1
        assert rt.ledger.verify().ok
