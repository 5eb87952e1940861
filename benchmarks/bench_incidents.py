"""Issue 18 at scale: an incident batch over recorded cascades, replay of recorded
decisions under a candidate policy, and the rollback report.

    python benchmarks/bench_incidents.py            # full run (10,000-execution incident, 10^5 decisions and entries)
    python benchmarks/bench_incidents.py --quick    # smoke run (small sizes; tests/test_benchmarks style)
    python benchmarks/bench_incidents.py --json     # the figures as JSON on stdout
    python benchmarks/bench_incidents.py --growth   # the growth table (three sizes per line)

Ledgers are SQLite files in a temporary directory, filled with ``Ledger.append_many``
(the fill is not measured). Each line is the median of ``--repeat`` runs with a
same-run baseline and the ratio:

  incident plan     Runtime.request_bulk_rollback(select, dry_run=True) over N executions in
                    chains of depth 5; baseline: Engine.classify_rollback of the same trees given
                    by the caller (the engine's share)
  incident record   the same call recorded (plan + one transaction); baseline: the plan
  approve           Runtime.approve_batch of that batch by one principal; baseline: its recording;
                    batch_status of it before and after, and Runtime.batch_counts
                    (--incident-only: these lines alone; --plans N: N chains instead of 1,666)
  replay, 1 and 2 processes   replay() of M decisions; baseline: Engine.evaluate of the same
                    actions in one process (no ledger)
  report            compute_report + render_html over a ledger of M entries; baseline: reading
                    the same entries with Ledger.fetch alone
  --growth          each line at three sizes instead (plan/record 10^2, 10^3, 10^4 executions;
                    replay 10^3, 10^4, 10^5 decisions in 2 processes; report 10^3, 10^4, 10^5 entries),
                    one run each, bounded by --budget seconds
No figure is asserted; goals are reported as met or missed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
DEPTH = 5
GOALS = {"incident_plan_s": 2.0, "incident_record_s": 10.0, "replay_s": 60.0, "report_s": 10.0}

POLICY = (
    """roles [incident_lead, reviewer]

workflow "ops" {
  version "1"
  owners {
    business "Ops lead"
    technical "Platform"
  }
  default deny
"""
    + "".join(
        f"""
  action a{i} {{
    system "s"
    reversible full via "undo.a{i}"
    {f"side_effects [a{i + 1}]" if i < DEPTH else ""}
    receipt [run]
    require_approval big by 1 reviewer when `action.amount > 100.0`
    deny huge when `action.amount > 10000.0`
    allow small when `action.amount <= 100.0`
  }}
"""
        for i in range(DEPTH + 1)
    )
    + """
  rollback incident {
    route ops
    authorize 1 incident_lead
    cascade depth 5
  }
  rollback policy_reversal {
    route ops
    authorize 1 incident_lead
  }
}
"""
)
CANDIDATE = POLICY.replace("action.amount > 10000.0", "action.amount > 5000.0")


def _median(xs):
    return statistics.median(xs)


def fill_executions(led, roots: int, extra: int) -> None:
    from policy_engine.ledger import NewEntry

    def body(t, i, parent=None):
        return {
            "receipt": {"run": f"run-{i % 7}"},
            "authorized": True,
            "flags": [],
            "reasons": [],
            "missing_receipt": [],
            "decision": None,
            "caused_by": parent,
            "type": t,
            "action_id": None,
            "executed_at": (T0 + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "reviewer": f"rev-{i % 5}",
            "requester": "agent",
        }

    level = led.append_many(
        [NewEntry("execution", body("a0", i), workflow="ops", time=T0 + timedelta(seconds=i)) for i in range(roots)]
    )
    for d in range(1, DEPTH + 1):
        level = led.append_many(
            [
                NewEntry(
                    "execution",
                    body(f"a{d}", i, p.id),
                    workflow="ops",
                    links=[p.id],
                    time=T0 + timedelta(seconds=i, milliseconds=d),
                )
                for i, p in enumerate(level)
            ]
        )
    for k in range(0, extra, 5000):
        led.append_many(
            [
                NewEntry(
                    "execution", body("a1", roots + k + j), workflow="ops", time=T0 + timedelta(seconds=roots + k + j)
                )
                for j in range(min(5000, extra - k))
            ]
        )


def fill_decisions(led, engine, n: int) -> list[dict]:
    from policy_engine.ledger import NewEntry

    actions = [{"workflow": "ops", "type": f"a{i % (DEPTH + 1)}", "amount": float((i * 37) % 12000)} for i in range(n)]
    for k in range(0, n, 5000):
        items = []
        for j, a in enumerate(actions[k : k + 5000]):
            now = T0 + timedelta(seconds=k + j)
            d = engine.evaluate(a, None, now)
            items.append(
                NewEntry(
                    "decision",
                    {
                        "action": a,
                        "decision": d.model_dump(mode="json"),
                        "policy_hash": d.policy_hash,
                        "now": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    },
                    workflow="ops",
                    time=now,
                )
            )
        led.append_many(items)
    return actions


def bench_incident(tmp: Path, engine, roots: int, rep: int, tag: str = "") -> dict:
    """Plan (dry run) and record the incident over ``roots`` chains of depth 5; baseline:
    classify_rollback of the same trees given by the caller (first 500 scaled)."""
    from policy_engine import Runtime
    from policy_engine.ledger import Ledger, schema
    from policy_engine.runtime.bulk import _executions, _graphs

    plan_t, rec_t, base_t, ap_t, st_t, st2_t, cn_t = [], [], [], [], [], [], []
    for r in range(rep):
        url = f"sqlite:///{tmp}/inc{tag}-{r}.db"
        led = Ledger.open(url, create=True)
        fill_executions(led, roots, 0)
        with Runtime(engine, led) as rt:
            t = time.perf_counter()
            b = rt.request_bulk_rollback('original.type == "a0"', "incident", "ops", "bench", dry_run=True)
            plan_t.append(time.perf_counter() - t)
            with led.reading() as c:
                xs = _executions(c, schema.entries.c.id.in_(b.originals[:500]))
                trees, _ = _graphs(c, engine, xs, {})
            t = time.perf_counter()
            for x in xs:
                engine.classify_rollback(
                    {"workflow": "ops", "scenario": "incident", "requested_by": "ops", "reason": "bench",
                     "original": trees[x.id]}
                )
            base_t.append((time.perf_counter() - t) * len(b.originals) / max(1, len(xs)))
            t = time.perf_counter()
            b2 = rt.request_bulk_rollback('original.type == "a0"', "incident", "ops", "bench")
            rec_t.append(time.perf_counter() - t)
            assert len(b2.rollbacks) == roots and b2.records == roots * (DEPTH + 1), (b2.records,)
            t = time.perf_counter()
            st = rt.batch_status(b2.batch_id)
            st_t.append(time.perf_counter() - t)
            assert st["by_status"] == {"pending": roots}, st["by_status"]
            t = time.perf_counter()
            a = rt.approve_batch(b2.batch_id, principal="lee", roles=["incident_lead"], batch_hash=b2.batch_hash)
            ap_t.append(time.perf_counter() - t)
            assert a["counted"] == roots, a["statuses"]
            t = time.perf_counter()
            st = rt.batch_status(b2.batch_id)
            st2_t.append(time.perf_counter() - t)
            assert st["by_status"] == {"approved": roots}, st["by_status"]
            if hasattr(rt, "batch_counts"):  # (not in a tree before it)
                t = time.perf_counter()
                rt.batch_counts(b2.batch_id)
                cn_t.append(time.perf_counter() - t)
        led.close()
    return {"executions": roots * (DEPTH + 1), "originals": roots, "depth": DEPTH, "plan_s": _median(plan_t),
            "record_s": _median(rec_t), "classify_only_s": _median(base_t), "approve_s": _median(ap_t),
            "status_s": _median(st_t), "status_after_s": _median(st2_t),
            "counts_s": _median(cn_t) if cn_t else None}


def bench_replay(tmp: Path, engine, cand: Path, n_dec: int, rep: int, tag: str = "", one: bool = True) -> dict:
    """replay() of n_dec decisions in 1 and 2 processes; baseline: Engine.evaluate of the same actions."""
    import policy_engine
    from policy_engine.ledger import Ledger
    from policy_engine.replay import replay

    url = f"sqlite:///{tmp}/dec{tag}.db"
    led = Ledger.open(url, create=True)
    actions = fill_decisions(led, engine, n_dec)
    led.close()
    r1, r2, ev = [], [], []
    changed = None
    for _ in range(rep):
        res = None
        if one:
            t = time.perf_counter()
            res = replay(str(cand), url, workers=1)
            r1.append(time.perf_counter() - t)
        t = time.perf_counter()
        res2 = replay(str(cand), url, workers=2)
        r2.append(time.perf_counter() - t)
        if res is not None:
            assert res2.to_json() | {"workers": 1} == res.to_json()
        changed = len(res2.changed)
        ce = policy_engine.load(str(cand))
        t = time.perf_counter()
        for i, x in enumerate(actions):
            ce.evaluate(x, None, T0 + timedelta(seconds=i))
        ev.append(time.perf_counter() - t)
    return {"decisions": n_dec, "changed": changed, "one_process_s": _median(r1) if r1 else None,
            "two_processes_s": _median(r2), "evaluate_only_s": _median(ev)}


def bench_report(tmp: Path, engine, n_entries: int, rep: int, tag: str = "") -> dict:
    """compute_report + render_html over a ledger of about n_entries entries (executions in chains and
    singles, one incident batch); baseline: reading the same entries with Ledger.fetch alone."""
    from policy_engine import Runtime
    from policy_engine.ledger import Ledger, schema
    from policy_engine.report.compute import compute_report
    from policy_engine.report.html import render_html

    roots = max(1, n_entries // 60)
    url = f"sqlite:///{tmp}/rep{tag}.db"
    led = Ledger.open(url, create=True)
    fill_executions(led, roots, max(0, n_entries - roots * (DEPTH + 1)))
    with Runtime(engine, led) as rt:
        rt.request_bulk_rollback('original.type == "a0" && original.receipt.run == "run-3"', "incident", "ops", "x")
    size = led.size
    rp, rb, rc = [], [], []
    for _ in range(rep):
        t = time.perf_counter()
        rr = compute_report(led)
        t1 = time.perf_counter()
        render_html(rr)
        rp.append(time.perf_counter() - t)
        rc.append(t1 - t)
        t = time.perf_counter()
        after = -1
        while True:
            with led.reading() as c:
                page = led.fetch(c, schema.entries.c.seq > after, limit=5000)
            if not page:
                break
            after = page[-1].seq
        rb.append(time.perf_counter() - t)
    led.close()
    return {"entries": size, "report_s": _median(rp), "compute_s": _median(rc), "fetch_only_s": _median(rb)}


def growth(tmp: Path, engine, cand: Path, budget: float) -> dict:
    """Each line at three sizes (one run each, the largest last); a size is skipped once the
    run has used ``budget`` seconds, so the table stays bounded in time on a busy machine."""
    start = time.perf_counter()
    out: dict = {"incident": [], "replay": [], "report": [], "skipped": []}
    plan = [("incident", n) for n in (100, 1_000, 10_000)] + [("replay", n) for n in (1_000, 10_000, 100_000)] \
        + [("report", n) for n in (1_000, 10_000, 100_000)]
    for what, n in plan:
        if time.perf_counter() - start > budget:
            out["skipped"].append(f"{what} {n}")
            continue
        if what == "incident":
            out[what].append(bench_incident(tmp, engine, max(1, n // (DEPTH + 1)), 1, tag=f"g{n}"))
        elif what == "replay":
            out[what].append(bench_replay(tmp, engine, cand, n, 1, tag=f"g{n}", one=False))
        else:
            out[what].append(bench_report(tmp, engine, n, 1, tag=f"g{n}"))
    return out


def growth_lines(g: dict) -> list[str]:
    def per(x: float, n: int) -> str:
        return f"{x / n * 1e6:,.0f} us"

    lines = ["| line | size | median | per item | baseline |", "|---|---|---|---|---|"]
    for x in g["incident"]:
        lines.append(f"| incident plan | {x['executions']:,} executions | {x['plan_s']:.2f} s | "
                     f"{per(x['plan_s'], x['executions'])} | classify_rollback only: {x['classify_only_s']:.2f} s |")
    for x in g["incident"]:
        lines.append(f"| incident recorded | {x['executions']:,} executions | {x['record_s']:.2f} s | "
                     f"{per(x['record_s'], x['executions'])} | plan: {x['plan_s']:.2f} s |")
    for x in g["replay"]:
        lines.append(f"| replay, 2 processes | {x['decisions']:,} decisions | {x['two_processes_s']:.2f} s | "
                     f"{per(x['two_processes_s'], x['decisions'])} | evaluate only: {x['evaluate_only_s']:.2f} s |")
    for x in g["report"]:
        lines.append(f"| report (compute + HTML) | {x['entries']:,} entries | {x['report_s']:.2f} s | "
                     f"{per(x['report_s'], x['entries'])} | compute alone: {x['compute_s']:.2f} s; "
                     f"Ledger.fetch of every entry: {x['fetch_only_s']:.2f} s |")
    if g["skipped"]:
        lines.append(f"skipped (time budget): {', '.join(g['skipped'])}")
    return lines


def _approve_lines(inc: dict) -> list[str]:
    cn = f"batch_counts: {inc['counts_s'] * 1000:.0f} ms" if inc.get("counts_s") is not None else "no batch_counts"
    return [
        f"| approve the incident batch ({inc['originals']:,} plans, one approval) | {inc['approve_s']:.2f} s | "
        f"record: {inc['record_s']:.2f} s | {inc['approve_s'] / max(inc['record_s'], 1e-9):.2f}x | |",
        f"| batch_status of it (pending; approved) | {inc['status_s'] * 1000:.0f} ms; "
        f"{inc['status_after_s'] * 1000:.0f} ms | {cn} | | |",
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--repeat", type=int, default=None)
    ap.add_argument("--growth", action="store_true",
                    help="the growth table instead: each line at three sizes (10^2-10^4 executions, 10^3-10^5 "
                         "decisions and entries), one run each")
    ap.add_argument("--incident-only", action="store_true",
                    help="only the incident lines (plan, record, approve, batch_status)")
    ap.add_argument("--plans", type=int, default=None,
                    help="chains (plans) of the incident batch (default 10,000 executions / 6)")
    ap.add_argument("--budget", type=float, default=600.0,
                    help="--growth: skip the remaining sizes after this many seconds (default 600)")
    a = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-incidents-"))
    try:
        return _main(a, tmp)
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)  # the full run's ledgers are ~1.5 GB


def _main(a, tmp: Path) -> int:
    import policy_engine

    q = a.quick
    roots = a.plans or (100 if q else 10_000 // (DEPTH + 1))
    n_dec = 2_000 if q else 100_000
    rep = a.repeat or (1 if q else 3)
    out: dict = {"load": os.getloadavg()[0], "quick": q, "cores": os.cpu_count()}
    pol = tmp / "ops.policy"
    pol.write_text(POLICY)
    cand = tmp / "cand.policy"
    cand.write_text(CANDIDATE)
    engine = policy_engine.load(str(pol))
    head = f"load average at start: {out['load']:.2f} on {out['cores']} cores"

    if a.growth:
        g = growth(tmp, engine, cand, a.budget)
        out["growth"] = g
        out["load_end"] = os.getloadavg()[0]
        if a.json:
            print(json.dumps(out, indent=2))
        else:
            print("\n".join([head + f", at the end: {out['load_end']:.2f}", *growth_lines(g)]))
        return 0

    out["incident"] = inc = bench_incident(tmp, engine, roots, rep)
    if a.incident_only:
        if a.json:
            print(json.dumps(out, indent=2))
        else:
            print("\n".join([head, "| line | median | same-run baseline | ratio | goal |", "|---|---|---|---|---|",
                             f"| incident recorded, {inc['executions']:,} executions | {inc['record_s']:.2f} s | "
                             f"plan: {inc['plan_s']:.2f} s | | |", *_approve_lines(inc)]))
        return 0
    out["replay"] = rpl = bench_replay(tmp, engine, cand, n_dec, rep)
    out["report"] = rpt = bench_report(tmp, engine, n_dec, rep)
    out["load_end"] = os.getloadavg()[0]
    lines = [
        head + f", at the end: {out['load_end']:.2f}" + ("  (quick: rough figures)" if q else ""),
        "| line | median | same-run baseline | ratio | goal |",
        "|---|---|---|---|---|",
        f"| incident plan, {inc['executions']:,} executions ({inc['originals']:,} chains, depth {DEPTH}) | "
        f"{inc['plan_s']:.2f} s | classify_rollback only: {inc['classify_only_s']:.2f} s | "
        f"{inc['plan_s'] / max(inc['classify_only_s'], 1e-9):.1f}x | "
        f"≤ 2 s: {'met' if inc['plan_s'] <= 2 else 'missed'} |",
        f"| incident recorded (plan + one transaction) | {inc['record_s']:.2f} s | plan: {inc['plan_s']:.2f} s | "
        f"{inc['record_s'] / max(inc['plan_s'], 1e-9):.1f}x | "
        f"≤ 10 s: {'met' if inc['record_s'] <= 10 else 'missed'} |",
        *_approve_lines(inc),
        f"| replay {rpl['decisions']:,} decisions, 1 process | {rpl['one_process_s']:.2f} s | evaluate only: "
        f"{rpl['evaluate_only_s']:.2f} s | {rpl['one_process_s'] / max(rpl['evaluate_only_s'], 1e-9):.1f}x | |",
        f"| replay {rpl['decisions']:,} decisions, 2 processes | {rpl['two_processes_s']:.2f} s | 1 process: "
        f"{rpl['one_process_s']:.2f} s | {rpl['two_processes_s'] / max(rpl['one_process_s'], 1e-9):.2f}x | ≤ 60 s: "
        f"{'met' if rpl['two_processes_s'] <= 60 else 'missed'} |",
        f"| report over {rpt['entries']:,} entries (compute + HTML) | {rpt['report_s']:.2f} s | fetch only: "
        f"{rpt['fetch_only_s']:.2f} s | {rpt['report_s'] / max(rpt['fetch_only_s'], 1e-9):.1f}x | ≤ 10 s: "
        f"{'met' if rpt['report_s'] <= 10 else 'missed'} |",
    ]
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
