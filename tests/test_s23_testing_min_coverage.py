"""Session 23 audit of `stopline test --min-coverage`: a threshold with nothing to measure
is not met. A policy set that declares no rule, stop trigger, criterion or scenario has no
branch; its coverage showed `n/a` and `--min-coverage 80` exited 0, so a CI gate asking for
80% went green on nothing. Now it exits 1 with one line saying why (`--min-coverage 0`,
no threshold, still passes)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from policy_engine.cli import main
from policy_engine.testing.coverage import Coverage

POLICY = """\
workflow "w" {
  version "1"
  owners {
    business "b"
    technical "t"
  }
  default deny
  action send {
    system "s"
    description "d"
  }
}
"""

SUITE = """\
suite: no branches
now: "2026-11-24T10:00:00Z"
cases:
  - name: denied by the default
    gate: {action: {workflow: w, type: send}}
    expect: {effect: deny}
"""


def _tree(tmp_path):
    (tmp_path / "p.policy").write_text(POLICY, encoding="utf-8")
    (tmp_path / "p.policy-test.yaml").write_text(SUITE, encoding="utf-8")
    return str(tmp_path)


def test_a_threshold_with_no_branch_to_measure_fails(tmp_path):
    path = _tree(tmp_path)
    res = CliRunner().invoke(main, ["test", "--min-coverage", "80", path])
    assert res.exit_code == 1, res.output
    assert "1 passed, 0 failed" in res.output  # the case passed: it is the threshold that is not met
    assert "nothing to measure" in res.output
    # the reason printed is the one it fails for, never "coverage 0.0% is below" under an n/a table
    assert "coverage is not applicable, so --min-coverage 80% is not met" in res.output
    assert "0.0%" not in res.output
    res = CliRunner().invoke(main, ["test", "--min-coverage", "80", "--format", "json", path])
    assert res.exit_code == 1
    assert "coverage is not applicable, so --min-coverage 80% is not met" in res.stderr
    assert json.loads(res.stdout)["coverage"]["percent"] is None  # still shown as not applicable


def test_no_threshold_or_a_zero_one_still_passes(tmp_path):
    path = _tree(tmp_path)
    assert CliRunner().invoke(main, ["test", "--coverage", path]).exit_code == 0
    assert CliRunner().invoke(main, ["test", "--min-coverage", "0", path]).exit_code == 0


def test_shortfall_says_why_in_one_line():
    cov = Coverage()
    why = cov.shortfall(80)
    assert why is not None and "\n" not in why
    assert "not applicable" in why and "--min-coverage 80%" in why
    assert cov.shortfall(0) is None and cov.shortfall(None) is None
