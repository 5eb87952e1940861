"""`benchmarks/bench_serve.py`'s recorded-batch measurement runs against a real server and
reports both forms (no timing asserted: the figures are the benchmark's)."""

from __future__ import annotations

import sys

import pytest

pytest.importorskip("fastapi")
from server_support import ROOT, serve  # noqa: E402

sys.path.insert(0, str(ROOT))
from benchmarks import bench_serve  # noqa: E402


def test_the_recorded_batch_line_measures_both_forms(tmp_path):
    with serve("examples/authzen-todo/", "--ledger", f"sqlite:///{tmp_path / 'l.db'}") as base:
        b = bench_serve.batches(int(base.rsplit(":", 1)[1]), 20, 1)
    assert b["items"] == 20 and b["grouped_ms"] > 0 and b["one_by_one_ms"] > 0
