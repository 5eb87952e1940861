"""Session 22 audit of `stopline test --coverage`: with no branch to cover (every suite
errored before a policy was read) the coverage is not applicable: `n/a` in the text,
`"percent": null` in JSON. Before, it showed 100.0%, as if every branch had been taken."""

from __future__ import annotations

import json

from click.testing import CliRunner

from policy_engine.cli import main
from policy_engine.testing.coverage import Coverage

BROKEN = """\
suite: broken
policies: [missing.policy]
now: "2026-11-26T12:00:00Z"
cases:
  - name: never runs
    gate: {action: {workflow: replies, type: send}}
    expect: {effect: deny}
"""


def test_no_branches_is_not_applicable_not_full():
    cov = Coverage()
    assert cov.branches == 0 and not cov.applicable
    assert cov.to_json()["percent"] is None
    total = cov.render().splitlines()[-1]
    assert total.split() == ["total", "0", "0", "0", "0", "n/a"] and "100.0" not in cov.render()


def test_every_suite_errored_shows_coverage_as_not_applicable(tmp_path):
    suite = tmp_path / "broken.policy-test.yaml"
    suite.write_text(BROKEN, encoding="utf-8")
    res = CliRunner().invoke(main, ["test", "--coverage", str(suite)])
    assert res.exit_code == 2, res.output  # the suite cannot run
    total = [ln for ln in res.output.splitlines() if ln.startswith("total")]
    assert total and total[0].split()[-1] == "n/a" and "100.0%" not in res.output
    res = CliRunner().invoke(main, ["test", "--coverage", "--format", "json", str(suite)])
    assert res.exit_code == 2
    report = json.loads(res.output)
    assert report["coverage"]["percent"] is None and report["coverage"]["files"] == []
