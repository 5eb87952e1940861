"""benchmarks/bench_runtime.py --quick runs and reports every line (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_runtime.py"


def test_bench_runtime_quick_run_reports_every_figure():
    p = subprocess.run([sys.executable, str(BENCH), "--quick", "--no-pg"], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr
    for text in ("gate + append, 1 process, SQLite (durability=full):", "gate_many (batches of 100",
                 "PostgreSQL: skipped", "queue(route), 500 pending", "request_rollback, 100-record cascade",
                 "the lifecycle after a gate, SQLite (durability normal), CPU per call: gate"):
        assert text in p.stdout, text
