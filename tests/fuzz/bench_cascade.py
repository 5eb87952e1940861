#!/usr/bin/env python
"""Cascade planning time for 10k vs 100k distinct records (input and plan limits lifted).

    python tests/fuzz/bench_cascade.py
    python tests/fuzz/bench_cascade.py --quick      # 2k vs 20k, one run each (the smoke test's)

One original with N distinct downstream records, each pointing back at itself (N loops),
planned by `Engine.classify_rollback`; the best of a few runs, the collector paused.
Linear planning gives a ratio near 10; record the numbers in
benchmarks/results/README.md, section "Hostile-input timings". Self-contained (the smoke
test, tests/test_fuzz_cli.py, runs `--quick`).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout's policy_engine

NOW = "2026-07-02T10:00:00Z"

POLICY = """
roles [reviewer]
workflow "ops" {
  version "1"
  owners { business "b" technical "t" }
  default deny
  action a {
    system "s"
    reversible full via "a.undo"
    verify "a is gone"
    side_effects [a, b]
    allow when `false`
  }
  action b {
    system "s"
    irreversible
    allow when `false`
  }
  rollback customer_request {
    route q
    authorize 1 reviewer
    cascade depth 64
  }
}
"""


def lift_limits() -> None:
    """The input and plan limits, lifted where they are read (the modules' own names)."""
    from policy_engine.engine import inputs, rollback

    inputs.MAX_INPUT_ITEMS = 10_000_000
    inputs.MAX_INPUT_CHARS = 10**9
    rollback.MAX_CASCADE_RECORDS = 10_000_000
    rollback.MAX_LOOPS_LISTED = 10_000_000


def make_engine():
    from policy_engine.engine import Engine
    from policy_engine.language.loader import load_text

    r = load_text(POLICY, "ops.policy")
    if r.policy_set is None:
        raise SystemExit("bench_cascade: the policy does not load: " + "; ".join(d.message for d in r.errors))
    return Engine.from_load_result(r)


def rec(rid: str, downstream: list | None = None) -> dict:
    r: dict = {"id": rid, "type": "a", "executed_at": "2026-07-02T09:00:00Z"}
    if downstream is not None:
        r["downstream"] = downstream
    return r


def fan_out_with_loops(n: int) -> dict:
    """root -> n distinct children, each pointing back at itself (n loops)."""
    return rec("root", downstream=[rec(f"c{i}", downstream=[rec(f"c{i}")]) for i in range(n)])


def plan_time(engine, n: int) -> float:
    """Seconds to plan `fan_out_with_loops(n)`; the plan must hold every record and loop
    (else the limits were not lifted and the number would measure a refusal)."""
    request = {"workflow": "ops", "scenario": "customer_request", "requested_by": "u",
               "original": fan_out_with_loops(n)}
    gc.collect()
    gc.disable()  # measure the algorithm, not when the collector happens to run
    try:
        t0 = time.perf_counter()
        plan = engine.classify_rollback(request, NOW)
        elapsed = time.perf_counter() - t0
    finally:
        gc.enable()
    steps, loops = len(plan.cascade.steps), len(plan.cascade.loops)
    if steps != n + 1 or loops != n or plan.errors:
        raise SystemExit(f"bench_cascade: {n} records planned as {steps} steps and {loops} loops "
                         f"(want {n + 1} and {n}); errors: {[e.message for e in plan.errors][:3]}")
    return elapsed


def _k(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs=2, default=(10_000, 100_000), metavar=("SMALL", "BIG"),
                    help="the two record counts (default: 10000 100000)")
    ap.add_argument("--runs", type=int, default=0, help="runs per size, the best kept (default: 3 and 2)")
    ap.add_argument("--quick", action="store_true", help="2000 vs 20000 records, one run each")
    args = ap.parse_args(argv)
    sizes = (2_000, 20_000) if args.quick else tuple(args.sizes)
    if min(sizes) < 1 or args.runs < 0:
        ap.error("sizes must be positive, runs not negative")
    runs = (1, 1) if args.quick else ((args.runs, args.runs) if args.runs else (3, 2))

    lift_limits()
    engine = make_engine()
    rows = []
    for n, k in zip(sizes, runs):
        best = min(plan_time(engine, n) for _ in range(k))
        rows.append((n, best))
        print(f"{n:>7} records: {best:.3f}s ({best / n * 1e6:.1f} us/record)")
    print(f"ratio {_k(rows[1][0])}/{_k(rows[0][0])}: {rows[1][1] / rows[0][1]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
