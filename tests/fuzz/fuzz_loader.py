#!/usr/bin/env python
"""Long fuzz campaign for the policy loader (parser, lowering, checker, CEL compile).

Property: every input (any bytes) yields a policy set or located diagnostics, never
another exception, within a time bound (tests/fuzz/hostile_common.py).

    python tests/fuzz/fuzz_loader.py --engine hypothesis --seconds 300
    python tests/fuzz/fuzz_loader.py --engine atheris --seconds 300   # pip install atheris

`--seconds` bounds the whole campaign: the time is checked before every input (a round
the limit cuts short ends there; a failure found in it is still reported). Prints the
number of inputs tried and the time spent; record a campaign's run in CHANGELOG.md (the
campaigns: docs/limits.md, section "Fuzz campaigns"). Crashing inputs are written to
tests/fuzz/crashes/ (hypothesis also prints a minimal one).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from budget import Budget, Failures, TimeUp  # noqa: E402

CRASH_DIR = HERE / "crashes"


def save_crash(data: bytes, exc: BaseException) -> Path:
    CRASH_DIR.mkdir(exist_ok=True)
    import hashlib

    p = CRASH_DIR / f"crash-{hashlib.sha256(data).hexdigest()[:12]}.policy"
    p.write_bytes(data)
    (p.with_suffix(".txt")).write_text("".join(traceback.format_exception(exc)))
    return p


def run_hypothesis(budget: Budget, seed: int) -> int:
    import hostile_common as hc
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hyp_seed
    from hypothesis import strategies as st

    seeds = hc.seed_files()
    count = 0
    crashes = 0
    strategies = {
        "grammar": hc.policy_texts().map(lambda t: t.encode("utf-8", errors="surrogatepass")),
        "soup": hc.token_soup().map(lambda t: t.encode("utf-8", errors="surrogatepass")),
        "mutate": st.sampled_from(seeds).flatmap(lambda s: hc.mutations(s[1].encode("utf-8"))),
        "bytes": st.binary(max_size=4000),
    }
    per = {k: 0 for k in strategies}
    failures = Failures()

    def make_prop(name: str):  # one round's property, bound to its strategy's name
        @settings(max_examples=500, deadline=None, database=None, derandomize=False,
                  suppress_health_check=list(HealthCheck))
        @given(strategies[name])
        def prop(data):
            nonlocal count
            budget.check()  # every input, not every round: raises TimeUp once the time is spent
            count += 1
            per[name] += 1
            try:
                hc.check_bytes(data)
            except BaseException as e:
                failures.saw(e, repr(data))
                save_crash(data, e)
                raise

        return prop

    rnd = random.Random(seed)
    rounds = 0
    while not budget.spent():
        name = list(strategies)[rounds % len(strategies)]
        rounds += 1
        prop = hyp_seed(rnd.getrandbits(64))(make_prop(name))  # reproducible rounds
        try:
            prop()
        except TimeUp:  # the time ran out in the round: a failure it found is still one
            found = failures.take()
            if found is not None:
                crashes += 1
                e, data = found
                print(f"CRASH in {name} (not shrunk: the time ran out): {type(e).__name__}: {str(e)[:300]}; "
                      f"input {data[:300]} (saved in {CRASH_DIR})", flush=True)
            break
        except Exception as e:  # noqa: BLE001 - report and keep fuzzing
            crashes += 1
            print(f"CRASH in {name}: {type(e).__name__}: {str(e)[:300]}", flush=True)
        failures.take()
        print(f"[{budget.elapsed():7.1f}s] {count} inputs ({per}) crashes={crashes}", flush=True)
    elapsed = max(budget.elapsed(), 1e-9)
    print(f"DONE hypothesis: {count} inputs in {elapsed:.0f}s ({count / elapsed:.0f}/s), crashes={crashes}")
    return 1 if crashes else 0


def run_atheris(budget: Budget, seed: int) -> int:
    import atheris

    with atheris.instrument_imports(include=["policy_engine", "lark"]):
        import hostile_common as hc  # noqa: F401

        from policy_engine import cel  # noqa: F401
        from policy_engine.language import check, loader, lower, parser  # noqa: F401

    corpus = Path(tempfile.mkdtemp(prefix="stopline-fuzz-corpus-"))
    for i, (_, text) in enumerate(hc.seed_files()):
        (corpus / f"seed{i}.policy").write_bytes(text.encode("utf-8"))
    # Grammar-driven seeds too, so libFuzzer starts from structured inputs.

    gen = hc.policy_texts()
    for i in range(200):
        if budget.elapsed() > budget.left():  # (the seeds take at most half the time)
            break
        try:
            (corpus / f"gen{i}.policy").write_bytes(gen.example().encode("utf-8", errors="surrogatepass"))
        except Exception:  # noqa: BLE001
            pass
    def one(data: bytes) -> None:
        try:
            hc.check_bytes(data)
        except BaseException as e:
            save_crash(data, e)
            raise

    # libFuzzer prints the totals itself (stat::number_of_executed_units) and exits.
    # (libFuzzer's -max_total_time is whole seconds, and 0 means no limit)
    seconds = max(1, math.ceil(budget.left()))
    atheris.Setup([sys.argv[0], f"-max_total_time={seconds}", f"-seed={seed}", "-max_len=20000",
                   "-timeout=20", "-rss_limit_mb=4096", "-print_final_stats=1", str(corpus)], one)
    atheris.Fuzz()
    return 0


def main(argv: list[str] | None = None, clock: Callable[[], float] = time.perf_counter) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", choices=["hypothesis", "atheris"], default="hypothesis")
    ap.add_argument("--seconds", type=float, default=300, help="the whole campaign's time (default: 300)")
    ap.add_argument("--seed", type=int, default=int(os.environ.get("FUZZ_SEED", "1")))
    args = ap.parse_args(argv)
    budget = Budget(args.seconds, clock)
    if args.engine == "atheris":
        try:
            import atheris  # noqa: F401
        except ImportError:
            print("error: --engine atheris needs atheris, which is not installed (pip install atheris)",
                  file=sys.stderr)
            return 2
        return run_atheris(budget, args.seed)
    return run_hypothesis(budget, args.seed)


if __name__ == "__main__":
    sys.exit(main())
