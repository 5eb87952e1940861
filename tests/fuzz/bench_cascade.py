#!/usr/bin/env python
"""Cascade planning time for 10k vs 100k distinct records (input and plan limits lifted).

    python tests/fuzz/bench_cascade.py

Linear planning gives a ratio near 10; record the numbers in the README, section "Hostile input".
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class _MP:  # a tiny stand-in for pytest's monkeypatch
    def setattr(self, obj, name, value):
        setattr(obj, name, value)


def main() -> int:
    import test_cascade_attacks as t

    t.lift_limits(_MP())
    rows = []
    for n in (10_000, 100_000):
        best = min(t.plan_time(n) for _ in range(2 if n > 10_000 else 3))
        rows.append((n, best))
        print(f"{n:>7} records: {best:.3f}s ({best / n * 1e6:.1f} us/record)")
    print(f"ratio 100k/10k: {rows[1][1] / rows[0][1]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
