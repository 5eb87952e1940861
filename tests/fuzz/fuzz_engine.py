#!/usr/bin/env python
"""Long fuzz campaign for the evaluators (evaluate, classify_rollback, authorize_rollback,
may_resume): never raise, and no input turns into `allow` unless the oracle allows it.

    python tests/fuzz/fuzz_engine.py --seconds 300

Runs the property tests of tests/test_fuzz_engine.py with a large budget, in rounds
with fresh seeds, and prints the number of inputs tried and the time spent (record
them in the README, section "Hostile input").
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--per-round", type=int, default=1000)
    args = ap.parse_args()

    import os

    os.environ["STOPLINE_FUZZ_EXAMPLES"] = str(args.per_round)
    import test_fuzz_engine as tfe
    from hypothesis import seed as hyp_seed

    counts = {name: 0 for name in PROPERTIES}
    crashes = 0
    rnd = random.Random(args.seed)
    t0 = time.perf_counter()
    rounds = 0
    while time.perf_counter() - t0 < args.seconds:
        name = PROPERTIES[rounds % len(PROPERTIES)]
        rounds += 1
        test = getattr(tfe, name)
        inner = test.hypothesis.inner_test

        def counted(*a, _inner=inner, _name=name, **k):
            counts[_name] += 1
            return _inner(*a, **k)

        test.hypothesis.inner_test = counted
        try:
            hyp_seed(rnd.getrandbits(64))(test)()
        except Exception as e:  # noqa: BLE001 - report and keep fuzzing
            crashes += 1
            print(f"FAILURE in {name}: {type(e).__name__}: {str(e)[:2000]}", flush=True)
        finally:
            test.hypothesis.inner_test = inner
        total = sum(counts.values())
        print(f"[{time.perf_counter() - t0:7.1f}s] {total} inputs, failures={crashes}", flush=True)
    elapsed = time.perf_counter() - t0
    total = sum(counts.values())
    print("per property:", counts)
    print(f"DONE engine: {total} inputs in {elapsed:.0f}s ({total / elapsed:.0f}/s), failures={crashes}")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
