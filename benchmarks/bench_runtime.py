"""Benchmarks of the Runtime on the ledger (issue 17).

    python benchmarks/bench_runtime.py            # full run (a few minutes on 2 cores)
    python benchmarks/bench_runtime.py --quick    # smoke run (tests/test_benchmarks.py style)
    python benchmarks/bench_runtime.py --json     # the figures as JSON on stdout

Lines (each with a baseline measured in the same run):

- recorded gate decisions per second, one process, SQLite: ``Runtime.gate`` (read the
  workflow's state, evaluate, append the decision under the append lock, commit with
  fsync) against ``Ledger.append`` of the same decision body (the ledger's floor) and
  ``Engine.evaluate`` alone. Goal >= 3,000/s.
- the same with 8 processes on PostgreSQL (skipped when unreachable). Goal >= 1,000/s.
- ``queue(route)`` with 10^4 pending plans: p50/p99 of the whole listing (kept, cold, after a
  gate append, after a claim merged into it) and of the first 50; goal p99 <= 50 ms.
- ``request_rollback`` over a recorded 1,000-record cascade, against
  ``Engine.classify_rollback`` of the same request with the cascade supplied by the caller.

Asserts no timing: prints each goal as `met` or `MISSED` with the load average.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # this checkout's package, before an installed one (an A/B from a worktree)
    sys.path.insert(0, str(ROOT))
POLICIES = str(ROOT / "policies")
WF = "support-replies"
T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
# the queue's clock: its plans still pending (the real clock would expire them a week after T0)
QNOW = T0 + timedelta(seconds=3)
PG_URL = os.environ.get("STOPLINE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def reply(i: int) -> dict:
    return {"workflow": WF, "type": "send_customer_reply", "id": f"r{i}", "recipient": {"domain": "acme.example"},
            "claims": [{"kind": "timeline", "sourced": True}], "customer": {"tier": "smb"}, "confidence": 0.95}


def note(i: int) -> dict:
    return {"workflow": WF, "type": "log_crm_activity", "id": f"n{i}", "note_kind": "reply_summary"}


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def bench_gate_sqlite(n: int, durability: str = "full") -> dict:
    from policy_engine import Runtime
    from policy_engine.ledger import Ledger

    with tempfile.TemporaryDirectory() as d:
        rt = Runtime.open(POLICIES, ledger=f"sqlite:///{d}/rt.db?durability={durability}")
        eng = rt.engine
        acts = [note(i) for i in range(n)]
        for a in acts[:50]:  # warm-up (fused gate built)
            rt.gate(a, now=T0)
        dec = eng.evaluate(acts[0], None, T0)
        body = {"action": acts[0], "decision": dec.model_dump(mode="json"), "policy_hash": dec.policy_hash}
        led = Ledger.open(f"sqlite:///{d}/plain.db?durability={durability}", create=True)
        # gate and the plain append alternate in tenths, so both meet the same disk (its fsync
        # rate swings within seconds on a shared machine) and their ratio means something
        gate_s = append_s = gate_cpu = append_cpu = 0.0
        step = max(1, n // 10)
        for i in range(0, n, step):
            t, c = time.perf_counter(), time.process_time()  # CPU time: what the load does not change
            for a in acts[i:i + step]:
                rt.gate(a, now=T0)
            gate_s += time.perf_counter() - t
            gate_cpu += time.process_time() - c
            t, c = time.perf_counter(), time.process_time()
            for _ in acts[i:i + step]:
                led.append("decision", body, workflow=WF, time=T0)
            append_s += time.perf_counter() - t
            append_cpu += time.process_time() - c
        t = time.perf_counter()
        for i in range(0, n, 100):
            rt.gate_many(acts[i:i + 100], now=T0)
        many_s = time.perf_counter() - t
        # 8 threads of one process, each gating one action at a time: their appends share
        # commits (the ledger's group commit), each gate returns after the commit holding it
        threads = 8
        per = n // threads
        go = threading.Barrier(threads + 1)

        def worker(k: int) -> None:
            mine = acts[k * per:(k + 1) * per]
            go.wait()
            for a in mine:
                rt.gate(a, now=T0)

        ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
        for th in ts:
            th.start()
        go.wait()
        t = time.perf_counter()
        for th in ts:
            th.join()
        threads_s = time.perf_counter() - t
        t = time.perf_counter()
        for a in acts:
            eng.evaluate(a, None, T0)
        eval_s = time.perf_counter() - t
        assert rt.ledger.size == 2 * n + 50 + threads * per
        # a stopped workflow: an unsourced promise fires `unsupported_promise`; every reply
        # after it is answered `stop` (recorded like any decision), in chunks as above
        first = reply(-1)
        first["claims"] = [{"kind": "timeline", "sourced": False}]
        assert rt.gate(first, now=T0).stopped
        replies = [reply(i) for i in range(n)]
        stopped_cpu = 0.0
        for i in range(0, n, step):
            c = time.process_time()
            for a in replies[i:i + step]:
                rt.gate(a, now=T0)
            stopped_cpu += time.process_time() - c
        assert rt.gate(replies[0], now=T0).decision.effect == "stop"
        rt.close()
        led.close()
    return {
        "n": n,
        "durability": durability,
        "gate_per_s": n / gate_s,
        "gate_many_per_s": n / many_s,
        "gate_8_threads_per_s": threads * per / threads_s,
        "append_per_s": n / append_s,
        "evaluate_per_s": n / eval_s,
        "gate_vs_append": append_s / gate_s,
        "gate_cpu_us": gate_cpu / n * 1e6,
        "append_cpu_us": append_cpu / n * 1e6,
        "gate_stopped_cpu_us": stopped_cpu / n * 1e6,
    }


def bench_lifecycle(n: int) -> dict:
    """CPU per call of the lifecycle after a gate, on SQLite with durability normal (no fsync
    counted: the commit's wait is the disk's, not ours): a reply that needs a reviewer is
    gated, approved by a reviewer and its execution recorded with its receipt; against
    `Ledger.append` alone of an execution body like it in the same run (the floor of any
    recorded write). Interleaved in tenths, like the gate line."""
    from policy_engine import Runtime
    from policy_engine.ledger import Ledger

    receipt = {"final_message": "Your refund of $40 is on its way.", "reviewer_decision": "approved by sam",
               "policy_rule": "promise_needs_review", "source_excerpts": ["refund policy"], "ticket_id": "T-1",
               "recipient": "dana@acme.example", "recipient_opened": False, "channel": "email", "reviewer": "sam"}
    cpu = {"gate": 0.0, "approve": 0.0, "claim": 0.0, "executed": 0.0, "append": 0.0}
    with tempfile.TemporaryDirectory() as d:
        rt = Runtime.open(POLICIES, ledger=f"sqlite:///{d}/rt.db?durability=normal")
        led = Ledger.open(f"sqlite:///{d}/plain.db?durability=normal", create=True)
        acts = [{**reply(i), "claims": [{"kind": "refund", "sourced": True}]} for i in range(n + 20)]
        for a in acts[:20]:  # warm-up
            g = rt.gate(a, now=T0)
            rt.approve(g.decision_id, principal="sam", roles=["reviewer"], now=T0)
            rt.executed(g.decision_id, receipt=receipt, now=T0)
        assert g.effect == "require_approval"
        body = {"decision": g.decision_id, "receipt": receipt, "authorized": True}  # (an execution's body)
        step = max(1, n // 10)
        for i in range(20, n + 20, step):
            gates = []
            c = time.process_time()
            for a in acts[i:i + step]:
                gates.append(rt.gate(a, now=T0))
            cpu["gate"] += time.process_time() - c
            c = time.process_time()
            for g in gates:
                r = rt.approve(g.decision_id, principal="sam", roles=["reviewer"], now=T0)
            cpu["approve"] += time.process_time() - c
            assert r.status == "approved"
            c = time.process_time()
            for g in gates:  # the decision's one use, claimed right before the action runs
                k = rt.claim_execution(g.decision_id, principal="worker-1", now=T0)
            cpu["claim"] += time.process_time() - c
            assert k.recorded
            c = time.process_time()
            for g in gates:
                x = rt.executed(g.decision_id, receipt=receipt, now=T0)
            cpu["executed"] += time.process_time() - c
            assert x.authorized
            c = time.process_time()
            for _ in gates:
                led.append("execution", body, workflow=WF, time=T0)
            cpu["append"] += time.process_time() - c
        rt.close()
        led.close()
    return {"n": n, **{f"{k}_cpu_us": v / n * 1e6 for k, v in cpu.items()}}


def _pg_worker(url, n, barrier, out, threads=4):
    from policy_engine import Runtime

    with Runtime.open(POLICIES, ledger=url) as rt:
        rt.gate(note(0), now=T0)
        barrier.wait()
        t = time.perf_counter()
        for i in range(n):
            rt.gate(note(i), now=T0)
        t1 = time.perf_counter()
        barrier.wait()
        t2 = time.perf_counter()
        acts = [note(i) for i in range(n * 5)]
        for i in range(0, len(acts), 50):
            rt.gate_many(acts[i : i + 50], now=T0)
        t3 = time.perf_counter()
        # the floor in the same run: Ledger.append of a recorded decision's body, one per transaction
        body = rt.ledger.get(0).body
        barrier.wait()
        t4 = time.perf_counter()
        for _ in range(n):
            rt.ledger.append("decision", body, workflow=WF, time=T0)
        t5 = time.perf_counter()
        # `threads` threads of this process gating one action at a time: more decisions in
        # flight per process, each returned once committed (the ledger's group commit shares
        # one round trip and one WAL flush between them)
        per = n // threads
        ths = [threading.Thread(target=lambda k: [rt.gate(note(k * per + i), now=T0) for i in range(per)], args=(k,))
               for k in range(threads)]
        barrier.wait()
        t6 = time.perf_counter()
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        out.put((t, t1, t2, t3, t4, t5, t6, time.perf_counter(), per * threads))


def _pg_schema():
    try:
        import psycopg
        from sqlalchemy.engine import make_url

        u = make_url(PG_URL)
        name = "b_" + uuid.uuid4().hex[:12]
        with psycopg.connect(
            host=u.host, port=u.port or 5432, user=u.username, dbname=u.database, autocommit=True, connect_timeout=3
        ) as c:
            c.execute(f"CREATE SCHEMA {name}")
        sep = "&" if "?" in PG_URL else "?"
        return PG_URL + sep + "options=" + quote(f"-csearch_path={name}"), name
    except Exception as e:  # noqa: BLE001
        return None, f"{type(e).__name__}: {str(e)[:80]}"


def _pg_drop(name):
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(PG_URL)
    with psycopg.connect(host=u.host, port=u.port or 5432, user=u.username, dbname=u.database, autocommit=True) as c:
        c.execute(f"DROP SCHEMA {name} CASCADE")


def bench_gate_pg(procs: int, n: int) -> dict | None:
    url, name = _pg_schema()
    if url is None:
        return {"skipped": name}
    try:
        from policy_engine import Runtime

        Runtime.open(POLICIES, ledger=url).close()  # create the ledger and projections once
        ctx = mp.get_context("spawn")
        barrier, out = ctx.Barrier(procs), ctx.Queue()
        ps = [ctx.Process(target=_pg_worker, args=(url, n, barrier, out)) for _ in range(procs)]
        for p in ps:
            p.start()
        spans = [out.get(timeout=600) for _ in ps]
        for p in ps:
            p.join()
        wall = max(x[1] for x in spans) - min(x[0] for x in spans)
        wall_many = max(x[3] for x in spans) - min(x[2] for x in spans)
        wall_append = max(x[5] for x in spans) - min(x[4] for x in spans)
        wall_threads = max(x[7] for x in spans) - min(x[6] for x in spans)
        return {
            "processes": procs,
            "n_each": n,
            "gate_per_s": procs * n / wall,
            "gate_many_per_s": procs * n * 5 / wall_many,
            "append_per_s": procs * n / wall_append,
            "threads_each": 4,
            "gate_threads_per_s": sum(x[8] for x in spans) / wall_threads,
        }
    finally:
        _pg_drop(name)


def bench_queue(pending: int, reps: int) -> dict:
    """10^4 pending plans: real rollback entries (a real plan body per record) appended in
    batches through the same transact + projection path the runtime uses."""
    from policy_engine import Runtime
    from policy_engine.ledger import NewEntry
    from policy_engine.runtime import projections as P

    with tempfile.TemporaryDirectory() as d:
        rt = Runtime.open(POLICIES, ledger=f"sqlite:///{d}/q.db")
        g = rt.gate(note(0), now=T0)
        x = rt.executed(g.decision_id, receipt={"activity_id": "a", "note_text": "t", "ticket_id": "T"}, now=T0)
        p = rt.request_rollback(
            x.execution_id, scenario="customer_request", requested_by="rita", reason="r", now=T0 + timedelta(seconds=1)
        )
        template = rt.ledger.get(p.rollback_id).body
        batch = 1000
        for start in range(0, pending - 1, batch):
            k = min(batch, pending - 1 - start)
            execs = [
                NewEntry(
                    "execution",
                    {"receipt": {"activity_id": f"a{start + i}"}, "authorized": True, "type": "log_crm_activity"},
                    workflow=WF,
                    time=T0,
                )
                for i in range(k)
            ]
            made = rt.ledger.transact(
                lambda c, entries=execs: entries, after=lambda c, new: [P.apply(c, e) for e in new], projected=True
            )
            rbs = [
                NewEntry(
                    "rollback",
                    {**template, "original": e.id, "cascade": [], "duties": [e.id]},
                    workflow=WF,
                    links=[e.id],
                    time=T0 + timedelta(seconds=2),
                )
                for e in made
            ]
            rt.ledger.transact(lambda c, entries=rbs: entries, after=lambda c, new: [P.apply(c, e) for e in new],
                               projected=True)
        route = p.route
        assert len(rt.queue(route, now=QNOW)) == pending
        full, first, raw, cold, pages, walks, gated, changed = [], [], [], [], [], [], [], []
        claimable = [i.rollback_id for i in rt.queue(route, now=QNOW)]
        sql = (
            "SELECT id, route, scenario, workflow, original, requested_by, requested_at, deadline, expires_at, "
            "status, claimed_by FROM rt_rollbacks WHERE open = 1 AND route = ? ORDER BY seq"
        )
        for _ in range(reps):
            with rt.ledger.reading() as c:  # the baseline: the same query through the driver, no objects built
                t = time.perf_counter()
                c.exec_driver_sql(sql, (route,)).fetchall()
                raw.append(time.perf_counter() - t)
            # the whole list in pages of 500 by key (every page read cold)
            after, t_walk = None, time.perf_counter()
            while True:
                rt._queue_cache.clear()
                t = time.perf_counter()
                page = rt.queue(route, now=QNOW, limit=500, after=after)
                pages.append(time.perf_counter() - t)
                if not page:
                    break
                after = page[-1].rollback_id
            walks.append(time.perf_counter() - t_walk)
            rt._queue_cache.clear()  # cold: no kept listing (a new runtime, or a merge given up)
            t = time.perf_counter()
            rt.queue(route, now=QNOW)
            cold.append(time.perf_counter() - t)
            t = time.perf_counter()  # warm: the log did not grow, the kept listing
            rt.queue(route, now=QNOW)
            full.append(time.perf_counter() - t)
            t = time.perf_counter()
            rt.queue(route, now=QNOW, limit=50)
            first.append(time.perf_counter() - t)
            rt.gate(note(len(gated) + 1), now=T0)  # the log grows by a gate decision: the queue is the same
            t = time.perf_counter()
            rt.queue(route, now=QNOW)
            gated.append(time.perf_counter() - t)
            rt.claim(claimable[len(changed)], principal="cs", now=T0)  # one row changes: merged into the listing
            t = time.perf_counter()
            rt.queue(route, now=QNOW)
            changed.append(time.perf_counter() - t)
        rt.close()
    ms = 1000
    return {
        "pending": pending,
        "full_p50_ms": statistics.median(full) * ms,
        "full_p99_ms": pct(full, 99) * ms,
        "first50_p50_ms": statistics.median(first) * ms,
        "gate_after_p50_ms": statistics.median(gated) * ms,
        "gate_after_p99_ms": pct(gated, 99) * ms,
        "changed_p50_ms": statistics.median(changed) * ms,
        "changed_p99_ms": pct(changed, 99) * ms,
        "first50_p99_ms": pct(first, 99) * ms,
        "cold_p50_ms": statistics.median(cold) * ms,
        "cold_p99_ms": pct(cold, 99) * ms,
        "page500_p50_ms": statistics.median(pages) * ms,
        "page500_p99_ms": pct(pages, 99) * ms,
        "walk_p50_ms": statistics.median(walks) * ms,
        "raw_sql_p50_ms": statistics.median(raw) * ms,
        "raw_sql_p99_ms": pct(raw, 99) * ms,
    }


def bench_cascade(records: int, reps: int) -> dict:
    from policy_engine import Runtime
    from policy_engine.ledger import NewEntry

    with tempfile.TemporaryDirectory() as d:
        rt = Runtime.open(POLICIES, ledger=f"sqlite:///{d}/c.db")
        eng = rt.engine
        rr, cr, req = [], [], None
        for r in range(reps):
            g = rt.gate(reply(r), now=T0)
            rt.approve(g.decision_id, principal="sam", roles=["reviewer"], now=T0)
            x = rt.executed(
                g.decision_id, receipt={"final_message": "m", "recipient_opened": False, "channel": "email"}, now=T0
            )
            kids = [
                NewEntry(
                    "execution",
                    {
                        "receipt": {"activity_id": f"a{i}", "note_text": "t", "ticket_id": "T"},
                        "authorized": True,
                        "type": "log_crm_activity",
                        "caused_by": x.execution_id,
                        "executed_at": "2026-11-26T12:00:00Z",
                    },
                    workflow=WF,
                    links=[x.execution_id],
                    time=T0,
                )
                for i in range(records)
            ]
            made = rt.ledger.append_many(kids)
            now = T0 + timedelta(seconds=10)
            t = time.perf_counter()
            p = rt.request_rollback(
                x.execution_id, scenario="customer_request", requested_by="rita", reason="r", now=now
            )
            rr.append(time.perf_counter() - t)
            assert len(p.plan.cascade.steps) >= records and not p.existing
            req = {
                "workflow": WF,
                "scenario": "customer_request",
                "requested_by": "rita",
                "reason": "r",
                "original": {
                    "id": x.execution_id,
                    "type": "send_customer_reply",
                    "executed_at": "2026-11-26T12:00:00Z",
                    "recipient_opened": False,
                    "channel": "email",
                    "downstream": [
                        {"id": e.id, "type": "log_crm_activity", "executed_at": "2026-11-26T12:00:00Z"} for e in made
                    ],
                },
            }
            t = time.perf_counter()
            eng.classify_rollback(req, now)
            cr.append(time.perf_counter() - t)
        rt.close()
    return {
        "records": records,
        "request_rollback_ms": statistics.median(rr) * 1000,
        "classify_rollback_ms": statistics.median(cr) * 1000,
        "ratio": statistics.median(rr) / statistics.median(cr),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: small sizes (figures are rough)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--no-pg", action="store_true", help="skip the PostgreSQL line")
    ap.add_argument(
        "--durability",
        choices=("full", "normal"),
        default="full",
        help="the SQLite gate lines' ledger durability (default full)",
    )
    ap.add_argument("--gate-only", action="store_true", help="only the gate lines (for repeated runs)")
    a = ap.parse_args(argv)
    q = a.quick
    out = {"load": os.getloadavg()[0], "quick": q}
    out["gate_sqlite"] = bench_gate_sqlite(100 if q else 2000, a.durability)
    out["gate_pg"] = {"skipped": "--no-pg"} if a.no_pg else bench_gate_pg(2 if q else 8, 20 if q else 100)
    if a.gate_only:
        out["queue"] = out["cascade"] = out["lifecycle"] = {"skipped": "--gate-only"}
    else:
        out["lifecycle"] = bench_lifecycle(50 if q else 500)
        out["queue"] = bench_queue(500 if q else 10_000, 5 if q else 100)
        out["cascade"] = bench_cascade(100 if q else 1000, 1 if q else 3)
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    g, pg, qu, ca = out["gate_sqlite"], out["gate_pg"], out["queue"], out["cascade"]

    def goal(ok):
        return "met" if ok else "MISSED"

    print(f"load average at start: {out['load']:.2f}" + ("  (quick: rough figures)" if q else ""))
    print(
        f"gate + append, 1 process, SQLite (durability={g['durability']}): {g['gate_per_s']:,.0f}/s  (goal >= 3,000/s: "
        f"{goal(g['gate_per_s'] >= 3000)}); Ledger.append alone {g['append_per_s']:,.0f}/s "
        f"(gate at {g['gate_vs_append']:.2f}x of it); evaluate alone {g['evaluate_per_s']:,.0f}/s; CPU per gate "
        f"{g['gate_cpu_us']:.0f} us, per append {g['append_cpu_us']:.0f} us"
    )
    print(
        f"gate + append of a stopped workflow (every action answered stop, the stop's template), SQLite: CPU per "
        f"gate {g['gate_stopped_cpu_us']:.0f} us, {g['gate_stopped_cpu_us'] / g['gate_cpu_us']:.2f}x a running "
        f"workflow's"
    )
    print(
        f"gate + append, 1 process of 8 threads (group commit), SQLite: {g['gate_8_threads_per_s']:,.0f}/s  "
        f"(goal >= 3,000/s: {goal(g['gate_8_threads_per_s'] >= 3000)})"
    )
    print(
        f"gate_many (batches of 100, one commit each), 1 process, SQLite: {g['gate_many_per_s']:,.0f}/s  "
        f"(goal >= 3,000/s: {goal(g['gate_many_per_s'] >= 3000)})"
    )
    if "skipped" in pg:
        print(f"gate + append, PostgreSQL: skipped ({pg['skipped']})")
    else:
        print(
            f"gate + append, {pg['processes']} processes, PostgreSQL: {pg['gate_per_s']:,.0f}/s  "
            f"(goal >= 1,000/s: {goal(pg['gate_per_s'] >= 1000)}); Ledger.append alone by the same processes "
            f"{pg['append_per_s']:,.0f}/s (gate at {pg['gate_per_s'] / pg['append_per_s']:.2f}x of it); "
            f"gate_many (batches of 50): "
            f"{pg['gate_many_per_s']:,.0f}/s ({goal(pg['gate_many_per_s'] >= 1000)}); gate from "
            f"{pg['threads_each']} threads in each process: {pg['gate_threads_per_s']:,.0f}/s "
            f"({goal(pg['gate_threads_per_s'] >= 1000)})"
        )
    if "skipped" in qu:
        return 0
    lc = out["lifecycle"]
    print(
        f"the lifecycle after a gate, SQLite (durability normal), CPU per call: gate {lc['gate_cpu_us']:.0f} us, "
        f"approve {lc['approve_cpu_us']:.0f} us, claim_execution {lc['claim_cpu_us']:.0f} us, executed "
        f"{lc['executed_cpu_us']:.0f} us; Ledger.append alone "
        f"{lc['append_cpu_us']:.0f} us (approve at {lc['approve_cpu_us'] / lc['append_cpu_us']:.1f}x of it, "
        f"claim_execution at {lc['claim_cpu_us'] / lc['append_cpu_us']:.1f}x, "
        f"executed at {lc['executed_cpu_us'] / lc['append_cpu_us']:.1f}x)"
    )
    print(
        f"queue(route), {qu['pending']:,} pending: whole list p50 {qu['full_p50_ms']:.1f} ms, p99 "
        f"{qu['full_p99_ms']:.1f} ms (unchanged log: the kept listing; goal p99 <= 50 ms: "
        f"{goal(qu['full_p99_ms'] <= 50)}); read cold (no kept listing) p50 {qu['cold_p50_ms']:.1f} ms, p99 "
        f"{qu['cold_p99_ms']:.1f} ms ({goal(qu['cold_p99_ms'] <= 50)}); by pages of 500 (after=, cold): page p50 "
        f"{qu['page500_p50_ms']:.1f} ms, p99 {qu['page500_p99_ms']:.1f} ms ({goal(qu['page500_p99_ms'] <= 50)}), "
        f"the walk p50 {qu['walk_p50_ms']:.0f} ms; first 50: p50 "
        f"{qu['first50_p50_ms']:.2f} ms, p99 {qu['first50_p99_ms']:.2f} ms (goal: "
        f"{goal(qu['first50_p99_ms'] <= 50)}); the same SQL through the driver alone: p50 "
        f"{qu['raw_sql_p50_ms']:.1f} ms, p99 {qu['raw_sql_p99_ms']:.1f} ms"
    )
    print(
        f"queue(route), {qu['pending']:,} pending, the kept listing after a gate append: p50 "
        f"{qu['gate_after_p50_ms']:.2f} ms, p99 {qu['gate_after_p99_ms']:.2f} ms "
        f"({goal(qu['gate_after_p99_ms'] <= 50)}); "
        f"after a claim (one row merged): p50 {qu['changed_p50_ms']:.2f} ms, p99 {qu['changed_p99_ms']:.2f} ms "
        f"({goal(qu['changed_p99_ms'] <= 50)})"
    )
    print(
        f"request_rollback, {ca['records']:,}-record cascade from the ledger: {ca['request_rollback_ms']:.0f} ms "
        f"(classify_rollback of the same request given by the caller: {ca['classify_rollback_ms']:.0f} ms; "
        f"{ca['ratio']:.1f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
