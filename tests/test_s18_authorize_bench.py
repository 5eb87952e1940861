"""benchmarks/bench_authorize.py --quick runs, checks both paths agree and reports every
line (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_authorize.py"


def test_bench_authorize_quick_run_reports_every_figure():
    p = subprocess.run([sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    for text in ("recorded decision:", "Engine.authorize_action, none approval(s): reference",
                 "Engine.authorize_action, one approval(s): reference", "Runtime.approve (SQLite, durability normal)",
                 "inside authorize_action (2.0 calls per approve)"):
        assert text in p.stdout, text


def test_bench_authorize_json_holds_the_figures():
    p = subprocess.run([sys.executable, str(BENCH), "--quick", "--json"], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert set(out["authorize_action"]) >= {"none", "one", "decision_json_bytes"}
    assert out["approve"]["authorize_calls_per_approve"] == 2.0
    assert all(out["approve"][k] > 0 for k in ("approve_fast_us", "approve_reference_us", "append_us"))
