"""benchmarks/bench_incidents.py --quick runs and reports every line (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_incidents.py"


def test_bench_incidents_quick_run_reports_every_line():
    p = subprocess.run([sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    for line in ("incident plan", "incident recorded", "replay 2,000 decisions, 1 process",
                 "replay 2,000 decisions, 2 processes", "report over"):
        assert line in p.stdout, line
