"""Audit of `claim_execution` (a claim closes its decision) and of rollback approval lapse
(`approved_until` / `rt_rollbacks.lapses_at`): regressions and a seeded random sequence
checking that every view agrees with `Runtime.authorization` at the same `now`.
SQLite and PostgreSQL."""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta

from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import POLICY, RECEIPT, WF, at, policy_path, rt, send, write_policy  # noqa: F401  (fixtures)

from policy_engine import Runtime
from policy_engine.runtime import projections as P
from policy_engine.runtime.results import RuntimeUsageError
from policy_engine.timestamps import parse_rfc3339


def test_a_claimed_decision_takes_no_deny_or_cancel_after_a_policy_reload(ledger_url, rt, tmp_path):  # noqa: F811
    """The claim closes the decision whatever its verdict reads later: after the policy
    changed (its approvals now judged against another hash, `pending`), a deny, an
    approval or a cancel was recorded (and the cancel answered `cancelled`)."""
    g = rt.gate(send(500), now=at(0))
    assert rt.approve(g.decision_id, principal="rev", roles=["reviewer"], now=at(1)).status == "approved"
    assert rt.claim_execution(g.decision_id, principal="w1", now=at(2)).recorded
    (tmp_path / "v2").mkdir()
    other = write_policy(tmp_path / "v2", POLICY.replace('business "Support lead"', 'business "Support lead 2"'))
    with Runtime.open(str(other), ledger=ledger_url) as rt2:
        assert rt2.engine.policy_hash != rt.engine.policy_hash
        n = rt2.ledger.size
        d = rt2.approve(g.decision_id, principal="rev2", roles=["reviewer"], verdict="deny", now=at(3))
        a = rt2.approve(g.decision_id, principal="rev2", roles=["reviewer"], now=at(3))
        c = rt2.cancel(g.decision_id, principal="x", now=at(4))
        assert (d.recorded, a.recorded, c.recorded) == (False, False, False)
        assert "claimed for its execution by w1" in c.reason
        assert rt2.ledger.size == n  # nothing recorded
        assert rt2.claim_execution(g.decision_id, principal="w2", now=at(5)).recorded is False


# ---------------------------------------------------------------- seeded random sequences
def _random_run(rt, seed: int, steps: int = 45) -> None:  # noqa: F811
    r = random.Random(seed)
    t = 0.0
    rbs: list[str] = []
    decs: list[str] = []
    execs: list[str] = []
    batches: list = []
    for i in range(steps):
        t += r.choice([0, 1, 5, 30, 59, 61, 600, 3600, 3601, 7200, 86400, 86401, 3 * 86400])
        now = at(t)
        op = r.choice(["gate", "gate", "approve_d", "claim", "exec", "rb", "rb", "appr", "appr", "appr", "deny",
                       "step", "expire", "cancel", "stop", "resume", "rclaim", "batch"])
        try:
            if op == "gate":
                a = send(r.choice([50, 500])) if r.random() < .5 else {"workflow": WF, "type": "other"}
                decs.append(rt.gate(a, now=now).decision_id)
            elif op == "approve_d" and decs:
                rt.approve(r.choice(decs), principal=r.choice(["rev", "rev2"]), roles=["reviewer"], now=now,
                           verdict=r.choice(["approve", "approve", "deny"]),
                           expires_in=timedelta(seconds=r.choice([1, 60, 3600, 2 * 86400])) if r.random() < .7
                           else None)
            elif op == "claim" and decs:
                rt.claim_execution(r.choice(decs), principal=r.choice(["w1", "w2"]), now=now)
            elif op == "exec" and decs:
                execs.append(rt.executed(r.choice(decs), receipt={"note": "n", **RECEIPT}, now=now).execution_id)
            elif op == "rb" and execs:
                p = rt.request_rollback(r.choice(execs), scenario="customer_request", requested_by="rita",
                                        reason="r", now=now)
                if p.rollback_id and p.rollback_id not in rbs:
                    rbs.append(p.rollback_id)
            elif op in ("appr", "deny") and rbs:
                rt.approve(r.choice(rbs), principal=r.choice(["cs-1", "cs-2", "rita"]), roles=["customer_service"],
                           now=now, verdict="deny" if op == "deny" else "approve",
                           expires_in=timedelta(seconds=r.choice([-5, 0, 1, 60, 3600, 3 * 86400]))
                           if r.random() < .8 else None)
            elif op == "step" and rbs:
                rid = r.choice(rbs)
                rt.step(rid, r.choice(rt.ledger.get(rid).body["duties"]), r.choice(["started", "completed"]), now=now)
            elif op == "expire":
                # (an unauthorized step on a rollback expired by the clock records its expiry with
                # it: none is closed in the projection without one)
                want = {s for s in rbs + decs if (st := rt.authorization(s, now=now)).status == "expired"
                        and st.unrecorded}
                got = {x.subject for x in rt.expire(now=now)}
                assert got == want, (seed, i, now, got ^ want, [(s, rt.authorization(s, now=now)) for s in got ^ want])
            elif op == "cancel" and (rbs or decs):
                rt.cancel(r.choice(rbs + decs), principal="x", now=now)
            elif op == "stop":
                rt.gate(send(50, promise=True), now=now)
            elif op == "resume":
                rt.resume(WF, evidence={"fixed": True}, principal="ops", now=now)
            elif op == "rclaim" and rbs:
                rt.claim(r.choice(rbs), principal=r.choice(["q1", "q2"]), now=now)
            elif op == "batch" and execs:
                b = rt.request_bulk_rollback("true", "customer_request", "rita", "r", executions=execs[-3:], now=now)
                if b.batch_id:
                    batches.append(b)
                    rt.approve_batch(b.batch_id, principal=r.choice(["cs-1", "cs-2"]), roles=["customer_service"],
                                     batch_hash=b.batch_hash, now=now)
        except RuntimeUsageError:
            pass
        rbs = sorted(set(rbs) | {x[0] for x in _rows(rt)})
        with rt.ledger.reading() as c:
            laps = [parse_rfc3339(x[0]) for x in c.execute(P.rollbacks.select().with_only_columns(
                P.rollbacks.c.lapses_at)) if x[0]]
        eps = timedelta(microseconds=1)
        probes = sorted({now} | {lp + d for lp in laps for d in (-eps, timedelta(0), eps) if lp + d >= now})
        for T in [*probes[:6], now]:  # (no append in between: kept listings must not hold across a lapse)
            auth = {rid: rt.authorization(rid, now=T) for rid in rbs}
            for kw in ({}, {"claimed": False}, {"route": "customer_service"}):
                for it in rt.queue(now=T, **kw):
                    s = auth[it.rollback_id]
                    assert (it.status, it.unrecorded) == (s.status, bool(s.unrecorded)), (seed, i, op, T, kw)
            for b in batches:
                got = rt.batch_counts(b.batch_id, now=T)["by_status"]
                members = [x[0] for x in _members(rt, b.batch_id)]
                assert got == dict(sorted(Counter(auth[m].status for m in members).items())), (seed, i, op, T)
        with rt.ledger.reading() as c:
            snap = P.snapshot(c)
        rt.ledger.transact(lambda c: [P.rebuild(c, rt.ledger.fetch), []][1])
        with rt.ledger.reading() as c:
            assert P.snapshot(c) == snap, (seed, i, op)


def _rows(rt, open_=None):
    q = P.rollbacks.select().with_only_columns(P.rollbacks.c.id)
    if open_ is not None:
        q = q.where(P.rollbacks.c.open == open_)
    with rt.ledger.reading() as c:
        return list(c.execute(q))


def _members(rt, batch_id):
    from sqlalchemy import select

    from policy_engine.runtime.results import E, L

    with rt.ledger.reading() as c:
        b = rt.ledger.get(batch_id)
        return list(c.execute(select(E.c.id).where(E.c.kind == "rollback", E.c.seq.in_(
            select(L.c.from_seq).where(L.c.to_seq == b.seq)))))


def test_random_sequences_every_view_agrees_with_authorization(rt):  # noqa: F811
    for seed in range(3):
        _random_run(rt, seed)


def test_a_claimed_decision_keeps_its_standing_after_a_policy_reload(ledger_url, rt, tmp_path):  # noqa: F811
    """Claimed while approved: its execution, recorded after the policy changed (the new
    engine no longer counts approvals given under the old hash), is authorized; one not
    claimed is judged by the new policy, as before."""
    g = rt.gate(send(500), now=at(0))
    h = rt.gate(send(500), now=at(0))
    for d in (g, h):
        assert rt.approve(d.decision_id, principal="rev", roles=["reviewer"], now=at(1)).status == "approved"
    c = rt.claim_execution(g.decision_id, principal="w1", now=at(2))
    assert rt.ledger.get(c.transition_id).body["standing"] == "approved"
    (tmp_path / "v2").mkdir()
    other = write_policy(tmp_path / "v2", POLICY.replace('business "Support lead"', 'business "Support lead 2"'))
    with Runtime.open(str(other), ledger=ledger_url) as rt2:
        assert rt2.authorization(g.decision_id, now=at(3)).status == "approved"
        assert rt2.authorization(h.decision_id, now=at(3)).status == "pending"
        x = rt2.executed(g.decision_id, receipt=RECEIPT, now=at(4))
        assert x.authorized and not x.reasons
        assert not rt2.executed(h.decision_id, receipt=RECEIPT, now=at(4)).authorized
