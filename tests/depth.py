"""How many examples the heaviest property tests draw.

The suite runs in CI within its time budget on a two-core machine (`.ci/run`, pytest-xdist).
The randomized differential and byte-for-byte tests dominate its time, so their default
counts are sized for that budget, and `STOPLINE_TEST_DEPTH` scales every count given
through `examples` for a deeper run (at `STOPLINE_TEST_DEPTH=4`, about the counts these
tests had before the budget):

    STOPLINE_TEST_DEPTH=4 python -m pytest -q tests/test_cel_differential.py

The long campaigns are `tests/fuzz/` (docs/limits.md, section "Fuzz campaigns"), not these.
"""

from __future__ import annotations

import os


def _depth() -> float:
    raw = os.environ.get("STOPLINE_TEST_DEPTH", "1")
    try:
        v = float(raw)
    except ValueError:
        raise SystemExit(f"STOPLINE_TEST_DEPTH must be a number, not {raw!r}") from None
    if not v > 0:
        raise SystemExit(f"STOPLINE_TEST_DEPTH must be positive, not {raw!r}")
    return v


DEPTH = _depth()


def examples(n: int) -> int:
    """`n` examples at the default depth; scaled by `STOPLINE_TEST_DEPTH`, at least 1."""
    return max(1, round(n * DEPTH))
