"""Session 27 audit of `stopline test --min-coverage`: click's range check lets `nan` through
(every comparison with NaN is false), and so did the threshold test: `--min-coverage nan`
passed a CI gate at any coverage, exit 0 with half the branches never taken. It is now not
met, saying why (exit 1, as any threshold not met)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from policy_engine.cli import main

POLICY = """\
workflow "w" {
  version "1"
  owners {
    business "b"
    technical "t"
  }
  default require_approval
  action send {
    system "s"
    irreversible
    deny big when `action.amount > 100.0`
    deny odd when `action.amount == 7.0`
  }
}
"""

SUITE = """\
suite: half
now: "2026-11-24T10:00:00Z"
cases:
  - name: big is denied
    gate: {action: {workflow: w, type: send, amount: 500.0}}
    expect: {effect: deny, rule: big}
"""


@pytest.mark.parametrize("threshold", ["nan", "NaN", "-nan"])
def test_a_nan_threshold_is_never_met(tmp_path, threshold):
    (tmp_path / "p.policy").write_text(POLICY, encoding="utf-8")
    (tmp_path / "p.policy-test.yaml").write_text(SUITE, encoding="utf-8")
    res = CliRunner().invoke(main, ["test", "--no-color", str(tmp_path), "--min-coverage", threshold])
    assert "Traceback" not in res.output, res.output
    assert res.exit_code == 2, res.output  # (stopped at the option: a usage error)
    assert "Invalid value for '--min-coverage': nan is not a percentage" in res.output
    # a real threshold behaves as before
    ok = CliRunner().invoke(main, ["test", "--no-color", str(tmp_path), "--min-coverage", "10"])
    assert ok.exit_code == 0, ok.output
    low = CliRunner().invoke(main, ["test", "--no-color", str(tmp_path), "--min-coverage", "90"])
    assert low.exit_code == 1 and "is below --min-coverage 90%" in low.output, low.output
