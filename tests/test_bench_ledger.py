"""Smoke test of the ledger benchmark (no timing assertions: the machine is shared)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_ledger_quick_run_reports_every_figure(tmp_path):
    out_json = tmp_path / "l.json"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_ledger.py"), "--quick", "--json-out",
                        str(out_json)], capture_output=True, text=True, cwd=str(ROOT), timeout=600)
    out = p.stdout
    assert p.returncode == 0, out + p.stderr
    assert re.search(r"^  append \(1 per transaction\)\s+[\d,]+/s\s+baseline plain INSERT\s+[\d,]+/s\s+ratio [\d.]+x$",
                     out, re.M), out
    assert re.search(r"^goal sqlite one writer >= 5,000/s durable: .* -- (met|met with batching|MISSED)", out, re.M)
    rows = re.findall(r"^\s+([\d,]+)  append\s+[\d,]+/s, in 2,000s\s+[\d,]+/s  verify\s+[\d.]+ s "
                      r"\([\d.]+ s per 10\^5\)  prove\s+[\d.]+ ms\s+\d+ B", out, re.M)
    assert "10,000" in rows, out
    assert '"sqlite_growth"' in out_json.read_text()
