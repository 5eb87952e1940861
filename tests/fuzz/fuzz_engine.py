#!/usr/bin/env python
"""Long fuzz campaign for the evaluators (evaluate, classify_rollback, authorize_rollback,
may_resume): never raise, and no input turns into `allow` unless the oracle allows it.

    python tests/fuzz/fuzz_engine.py --seconds 300

Runs the property tests of tests/test_fuzz_engine.py with a large budget, in rounds
with fresh seeds, and prints the number of inputs tried and the time spent (record a
campaign's run in CHANGELOG.md; the campaigns: docs/limits.md, section "Fuzz campaigns").
`--seconds` bounds the whole campaign: the time is checked before every input (a round
the limit cuts short ends there; a failure found in it is still reported).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from budget import Budget, Failures, TimeUp  # noqa: E402

PROPERTIES = [
    "test_evaluate_never_raises_on_junk",
    "test_mutations_never_widen",
    "test_non_allow_decision_is_not_turned_into_allow",
    "test_classify_rollback_never_raises",
    "test_authorize_never_raises_and_junk_never_satisfies",
    "test_authorize_with_junk_plan",
    "test_may_resume_never_raises",
    "test_hostile_input_decisions_are_deterministic",
]


def main(argv: list[str] | None = None, clock: Callable[[], float] = time.perf_counter) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=300, help="the whole campaign's time (default: 300)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--per-round", type=int, default=1000)
    args = ap.parse_args(argv)
    budget = Budget(args.seconds, clock)

    os.environ["STOPLINE_FUZZ_EXAMPLES"] = str(args.per_round)  # (read when test_fuzz_engine is imported)
    import test_fuzz_engine as tfe
    from hypothesis import seed as hyp_seed

    counts = {name: 0 for name in PROPERTIES}
    crashes = 0
    failures = Failures()
    rnd = random.Random(args.seed)
    rounds = 0
    while not budget.spent():
        name = PROPERTIES[rounds % len(PROPERTIES)]
        rounds += 1
        test = getattr(tfe, name)
        inner = test.hypothesis.inner_test

        def counted(*a, _inner=inner, _name=name, **k):
            budget.check()  # every input, not every round: raises TimeUp once the time is spent
            counts[_name] += 1
            try:
                return _inner(*a, **k)
            except BaseException as exc:
                failures.saw(exc, f"args={a!r} kwargs={k!r}")
                raise

        test.hypothesis.inner_test = counted
        try:
            hyp_seed(rnd.getrandbits(64))(test)()
        except TimeUp:  # the time ran out in the round: a failure it found is still one
            found = failures.take()
            if found is not None:
                crashes += 1
                e, shown = found
                print(f"FAILURE in {name} (not shrunk: the time ran out): {type(e).__name__}: {str(e)[:2000]}\n"
                      f"  input: {shown}", flush=True)
            break
        except Exception as e:  # noqa: BLE001 - report and keep fuzzing
            crashes += 1
            print(f"FAILURE in {name}: {type(e).__name__}: {str(e)[:2000]}", flush=True)
        finally:
            test.hypothesis.inner_test = inner
        failures.take()
        total = sum(counts.values())
        print(f"[{budget.elapsed():7.1f}s] {total} inputs, failures={crashes}", flush=True)
    elapsed = max(budget.elapsed(), 1e-9)
    total = sum(counts.values())
    print("per property:", counts)
    print(f"DONE engine: {total} inputs in {elapsed:.0f}s ({total / elapsed:.0f}/s), failures={crashes}")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
