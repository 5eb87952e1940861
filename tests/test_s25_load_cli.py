"""`stopline check` imports neither SQLAlchemy nor the ledger's schema (issue 16, goal 5,
without timing anything): the CLI registers `stopline report` from `report/cli.py`, and
importing it ran `report/__init__.py`, which imported `report.compute` and with it
`runtime.results`, `ledger.schema` and SQLAlchemy (about 0.2 s of a fresh `stopline check`).
`compute_report` is still importable from `policy_engine.report`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHECK = """
import sys
from policy_engine.cli import main
try:
    main(["check", sys.argv[1]])
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in ("sqlalchemy", "policy_engine.ledger.schema", "policy_engine.report.compute",
                           "policy_engine.runtime.results") if m in sys.modules)
print(code, *heavy, file=sys.stderr)
"""


def test_stopline_check_does_not_import_sqlalchemy():
    out = subprocess.run([sys.executable, "-c", _CHECK, str(ROOT / "benchmarks" / "policies")], capture_output=True,
                         text=True, cwd=str(ROOT), env={**os.environ, "STOPLINE_CACHE_DIR": ""}, timeout=120)
    assert out.stderr.strip().splitlines()[-1] == "0", out.stderr


def test_compute_report_is_still_exported():
    from policy_engine import report
    from policy_engine.report.compute import compute_report

    assert report.compute_report is compute_report
    assert "compute_report" in report.__all__
