#!/usr/bin/env python
"""Long differential campaign for the gate: per round, a random policy (tests/fuzz/diffgen.py),
two engines built from it (accelerated and the reference, `accelerate=False`), and one long
random sequence of `evaluate()` / `evaluate_json()` calls on both; every decision's JSON
(`model_dump_json`, `to_json`, `evaluate_json`, and the other ways of reading it) must be
the reference's, byte for byte.

    python tests/fuzz/fuzz_differential.py --seconds 600 --seed 1
    python tests/fuzz/fuzz_differential.py --replay 1:17        # one round again (seed:round)

A third of the rounds run with every bounded cache of the accelerators made tiny
(`diffgen.tiny_caches`: emptied, refused and rebuilt often). A mismatch is shrunk (a
delta loop over the calls, the policy's lines and each call's details) and written as a
pytest test to --out (default /tmp/fuzzdiff/), then the campaign goes on with the next
round. Prints the rounds, policies, calls and mismatches, and what the accelerators
held at the end of the rounds (fused functions built, rebuilds, templates...), the
declared timestamp, duration and map fields of the policies and the values sent to them
(fitting or refused), and how often `runtime.gatejson.body_text` gave the recorded body's
text (each compared with the reference's), so a campaign that never reaches a cache says so.

`--seconds` bounds the whole campaign: the time is checked before every call (a round the
limit cuts short ends there, its calls counted) and before every replay of a shrink (a
mismatch found late is written as far as it shrank; `--replay` runs its round again).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import diffgen as dg  # noqa: E402
from budget import Budget, TimeUp  # noqa: E402


def engine_stats(fast) -> dict:
    """What the accelerated engine's caches hold (summed over its types)."""
    out = {"types": 0, "fused": 0, "rebuilt": 0, "any_shape": 0, "patterns": 0, "now_entries": 0, "faults": 0,
           "memo": 0, "stopped_templates": 0, "undeclared_templates": 0, "declared_types": 0, "fused_declared": 0,
           "fused_records": 0, "fused_nums": 0}
    acc = fast.accelerator
    for fz in acc.gates():
        out["types"] += 1
        out["fused"] += fz.fn is not None
        out["rebuilt"] += fz.rebuilds > 0
        out["any_shape"] += fz.shapes is None
        out["patterns"] += len(fz.patterns)
        out["now_entries"] += len(fz.now_full)
        out["faults"] += len(fz.faults)
        out["memo"] += len(fz.memo)
        out["declared_types"] += fz.action.fields is not None
        if fz.fn is not None:  # what its function (as last built) specialises
            kinds = dg.shape_kinds(fz)
            out["fused_declared"] += "declared" in kinds
            out["fused_records"] += "records" in kinds
            out["fused_nums"] += "nums" in kinds
    st = fast._stopped
    out["stopped_templates"] = len(st.templates) if st is not None else 0
    ul = fast._undeclared
    out["undeclared_templates"] = len(ul.templates) if ul is not None else 0
    return out


def one_round(seed: int, r: int, steps_n: int | None, tiny_share: float, paths: dict | None = None,
              timed_share: float = 0.0, tick: Callable[[], None] | None = None,
              ) -> tuple[dg.Policy, list, bool, list, dict]:
    rng = random.Random(f"{seed}:{r}")
    tiny = rng.random() < tiny_share
    # (drawn apart, so the rest of a round replays as before when the share changes)
    timed = random.Random(f"timed:{seed}:{r}").random() < timed_share
    n = steps_n or rng.choice([50, 150, 300, 600, 1000])
    ctx = dg.tiny_caches() if tiny else None
    if ctx is not None:
        ctx.__enter__()
    try:
        pol, fast, ref = dg.round_of(rng, (seed, r), timed)
        steps = dg.gen_steps(rng, pol, n)
        mism = dg.run_sequence(pol, steps, (fast, ref), stats=paths, tick=tick)
        stats = engine_stats(fast)
        stats["timed policies"] = int(timed)
        for fs in dg._timed_fields(ref).values():  # the declared timestamp, duration and map fields
            for ft in fs.values():
                key = f"declared {dg._type_label(ft)} fields"
                stats[key] = stats.get(key, 0) + 1
    finally:
        if ctx is not None:
            ctx.__exit__(None, None, None)
    return pol, steps, tiny, mism, stats


def report(out: Path, seed: int, r: int, pol: dg.Policy, steps: list, tiny: bool, mism: list,
           shrink_budget: int, until: Callable[[], bool] | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"seed{seed}-round{r}.py"
    if until is not None and until():  # the time is spent: the round as it ran, unshrunk
        text, small, left = pol.text, [], []
    else:
        text, small, left = dg.shrink(pol.text, steps, tiny=tiny, budget=shrink_budget, until=until)
    if not left:  # did not shrink to anything that still fails (flaky?): keep the whole round
        text, small, left = pol.text, steps[: max(mism[0].step, mism[0].seen_at) + 1], mism
    body = [
        f"# seed {seed} round {r} (tiny caches: {tiny}); replay: python tests/fuzz/fuzz_differential.py "
        f"--replay {seed}:{r}",
        f"# the first mismatch of the round (of {len(steps)} calls):",
        "# " + str(mism[0]).replace("\n", "\n# "),
        f"# shrunk to {len(small)} calls:",
        "import sys",
        f"sys.path.insert(0, {str(HERE)!r})",
        "from datetime import UTC, date, datetime, timedelta, timezone  # noqa: F401",
        "from zoneinfo import ZoneInfo  # noqa: F401",
        "from diffgen import DT, TD, F, I, S, Step, WorkflowState, nest, run_sequence, tiny_caches  # noqa: F401",
        "",
        "",
        dg.repro_text(text, small, left, name=f"test_seed{seed}_round{r}", tiny=tiny),
    ]
    path.write_text("\n".join(body), encoding="utf-8")
    return path


def main(argv: list[str] | None = None, clock: Callable[[], float] = time.perf_counter) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=300, help="the whole campaign's time (default: 300)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--steps", type=int, default=0, help="calls per round (default: random, 50-1000)")
    ap.add_argument("--tiny", type=float, default=0.33, help="share of rounds with tiny caches")
    ap.add_argument("--timed", type=float, default=0.3,
                    help="share of rounds whose policy declares timestamps, durations and maps on every type")
    ap.add_argument("--out", default="/tmp/fuzzdiff")
    ap.add_argument("--shrink-budget", type=int, default=600, help="replays a shrink may take")
    ap.add_argument("--replay", default=None, help="seed:round: run that round alone and print its mismatch")
    args = ap.parse_args(argv)
    out = Path(args.out)

    if args.replay:
        seed, r = (int(x) for x in args.replay.split(":"))
        pol, steps, tiny, mism, stats = one_round(seed, r, args.steps or None, args.tiny, timed_share=args.timed)
        print(pol.text)
        print(f"{len(steps)} calls, tiny caches: {tiny}, stats: {stats}")
        for m in mism:
            print(m)
        return 1 if mism else 0

    budget = Budget(args.seconds, clock)
    rounds = calls = failures = crashes = 0
    totals: dict = {}
    paths: dict = {}
    seen: dict = {}
    lanes: dict = {}
    r = 0
    counting = dg.lane_counts(lanes)  # (shrinking replays count too: a few calls more, no harm)
    counting.__enter__()
    ran = [0]  # the calls of the round under way (a round the time limit cuts short counts those)

    def tick() -> None:
        budget.check()  # before every call: raises TimeUp once the time is spent
        ran[0] += 1

    while not budget.spent():
        r += 1
        ran[0] = 0
        try:
            pol, steps, tiny, mism, stats = one_round(args.seed, r, args.steps or None, args.tiny, paths, args.timed,
                                                      tick)
        except TimeUp:
            calls += ran[0]
            print(f"round {r}: cut short by --seconds after {ran[0]} calls", flush=True)
            break
        except Exception:  # noqa: BLE001 - the fuzzer itself: report and go on
            crashes += 1
            print(f"round {r}: the campaign crashed:\n{traceback.format_exc()}", flush=True)
            continue
        rounds += 1
        calls += (max(mism[0].step, mism[0].seen_at) + 1) if mism else len(steps)
        for k, v in stats.items():
            totals[k] = totals.get(k, 0) + v
        if mism:
            failures += 1
            sig = mism[0].what.split(" (")[0]
            seen[sig] = seen.get(sig, 0) + 1
            path = report(out, args.seed, r, pol, steps, tiny, mism, args.shrink_budget, budget.spent)
            print(f"round {r}: MISMATCH ({mism[0].what}) -> {path}", flush=True)
        if rounds % 20 == 0:
            el = budget.elapsed()
            print(f"[{el:7.1f}s] {rounds} rounds, {calls} calls ({calls / el:.0f}/s), mismatches={failures}",
                  flush=True)
    el = budget.elapsed()
    counting.__exit__(None, None, None)
    print("accelerator state summed over rounds:", totals)
    print("accelerated decisions:", dict(sorted(paths.items())))
    print("lanes (undeclared-type, stopped-workflow) and fused functions built:", dict(sorted(lanes.items())))
    print("mismatches by kind:", seen)
    bt = dg.BODY_TEXT
    print(f"runtime.gatejson.body_text on accelerated decisions: {bt['text']} gave text (each compared with the "
          f"reference body's rfc8785 text), {bt['none']} gave None (the generic encoder's: nothing to compare)")
    print("policy texts the loader crashed on (skipped):", dg.LOADER_CRASHES[0])
    print(f"DONE differential seed={args.seed} pid={os.getpid()}: {rounds} rounds (= policies), {calls} calls in "
          f"{el:.0f}s ({calls / max(el, 1e-9):.0f}/s), mismatching rounds={failures}, campaign crashes={crashes}")
    return 1 if failures or crashes else 0


if __name__ == "__main__":
    sys.exit(main())
