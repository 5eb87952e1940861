"""The queue's kept listing follows the log incrementally (issue 17), on SQLite and
PostgreSQL: after appends that cannot change the queue (gate decisions, executions) it is
served as kept; after appends that can (a rollback requested, approved, denied, claimed,
cancelled, expired, stepped to its end) the changed rows are read again and merged; the
result is always what a cold read gives at the same ``now``, also when the change comes
from another Runtime (another process) on the same ledger."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import WF, at, send, write_policy

from policy_engine import Runtime
from policy_engine.runtime.rollbacks import Rollbacks

RECEIPT = {"message": "hello", "ticket": "T-1"}
ROUTE = "customer_service"


@pytest.fixture
def merges(monkeypatch):
    """How many calls were answered by merging the appended changes into a kept listing."""
    seen = {"merged": 0, "unchanged": 0}
    real = Rollbacks._queue_merge

    def spy(self, cur, pg, hit, *a, **k):
        out = real(self, cur, pg, hit, *a, **k)
        if out is not None:
            seen["unchanged" if out[0] is hit[1] else "merged"] += 1
        return out

    monkeypatch.setattr(Rollbacks, "_queue_merge", spy)
    return seen


def _cold(rt, *args, **kw):
    rt._queue_cache.clear()
    return rt.queue(*args, **kw)


def _request(rt, t, n):
    g = rt.gate(send(10.0, id=f"q{n}"), now=at(t))
    x = rt.executed(g.decision_id, receipt=RECEIPT, now=at(t))
    return rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita", reason="r",
                               now=at(t)).rollback_id


def test_a_gate_append_keeps_the_listing_and_a_queue_change_is_merged(ledger_url, tmp_path, merges):  # noqa: F811
    pol = str(write_policy(tmp_path))
    with Runtime.open(pol, ledger=ledger_url) as a, Runtime.open(pol, ledger=ledger_url) as b:
        ids = [_request(a, i, i) for i in range(3)]
        first = a.queue(ROUTE, now=at(10))
        assert [i.rollback_id for i in first] == ids
        b.gate(send(10.0, id="g1"), now=at(11))  # the log grows; the queue does not change
        assert a.queue(ROUTE, now=at(12)) == first
        assert merges == {"merged": 0, "unchanged": 1}
        b.cancel(ids[1], principal="rita", now=at(13))  # another runtime changes the queue
        more = _request(b, 14, 9)
        got = a.queue(ROUTE, now=at(15))
        assert merges["merged"] == 1
        assert [i.rollback_id for i in got] == [ids[0], ids[2], more]
        assert got == _cold(b, ROUTE, now=at(15))


@pytest.mark.parametrize("seed", [1, 2])
def test_the_kept_listing_equals_a_cold_read_after_any_sequence(ledger_url, tmp_path, merges, seed):  # noqa: F811
    pol = str(write_policy(tmp_path))
    rng = random.Random(seed)
    opts = dict(rollback_ttl=timedelta(seconds=40))
    with Runtime.open(pol, ledger=ledger_url, **opts) as a, Runtime.open(pol, ledger=ledger_url, **opts) as b, \
            Runtime.open(pol, ledger=ledger_url, **opts) as cold:
        opened: list[str] = []
        approved: list[str] = []
        t, n, done, last = 0.0, 0, 0, 0.0
        for _ in range(60):
            t += rng.choice((1, 1, 2, 5, 30))
            rt = rng.choice((a, b))
            op = rng.choice(("request", "request", "gate", "approve", "approve", "deny", "claim", "cancel", "expire",
                             "complete", "complete"))
            if op == "request" or not opened:
                n += 1
                opened.append(_request(rt, t, n))
            elif op == "gate":
                rt.gate(send(10.0, id=f"g{n}-{t}"), now=at(t))
                rt.gate({"workflow": WF, "type": "log"}, now=at(t))
            elif op == "approve":
                rid = opened[-1] if rng.random() < 0.5 else rng.choice(opened)
                if rt.approve(rid, principal="cs-1", roles=[ROUTE], now=at(t)).status == "approved":
                    approved.append(rid)
                    if rng.random() < 0.5:
                        op = "complete"  # at once, before a deny or the sweep closes it
            elif op == "deny":
                rt.approve(rng.choice(opened), principal="cs-2", roles=[ROUTE], verdict="deny", now=at(t))
            elif op == "claim":
                rt.claim(rng.choice(opened), principal=rng.choice(("cs-1", "cs-2")), now=at(t))
            elif op == "cancel":
                rt.cancel(rng.choice(opened), principal="rita", now=at(t))
            elif op == "expire":
                rt.expire(now=at(t))
            if op == "complete" and approved:
                rid = approved.pop()
                auth = rt.authorization(rid, now=at(t))
                if auth.status in ("approved", "in_progress", "partial", "completed") and rng.random() < 0.3:
                    rt.step(rid, auth.duties[0], "completed", key="c0", now=at(t))  # in progress: still listed
                    approved.insert(0, rid)
                elif auth.status in ("approved", "in_progress", "partial", "completed"):
                    for k, d in enumerate(auth.duties):
                        rt.step(rid, d, "completed", key=f"c{k}", now=at(t))
                    for k, d in enumerate(auth.duties):
                        rt.step(rid, d, "verified", key=f"v{k}", now=at(t))
                    done += 1
            # both runtimes, several listings each, at a few instants (window deadlines crossed); the
            # first at the previous call's instant, so the kept items themselves are spliced
            instants = [t, t + 30, t + 90]
            rng.shuffle(instants)
            for when in [last, *instants]:
                for args, kw in (((ROUTE,), {}), ((None,), {}), ((ROUTE,), {"claimed": False}),
                                 ((ROUTE,), {"claimed": True}), (("elsewhere",), {})):
                    want = _cold(cold, *args, now=at(when), **kw)
                    assert a.queue(*args, now=at(when), **kw) == want, (op, args, kw, when)
                    assert b.queue(*args, now=at(when), **kw) == want, (op, args, kw, when)
            last = instants[-1]
        assert merges["merged"] > 10 and merges["unchanged"] > 3 and done >= 1
        assert any(i.past_window for i in a.queue(ROUTE, now=at(t + 90))) or not a.queue(ROUTE, now=at(t))
