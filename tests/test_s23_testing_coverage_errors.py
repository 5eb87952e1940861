"""Session 23 audit of `stopline test --coverage` accounting: a condition whose evaluation
failed took neither branch. The engine fails closed (an erroring deny rule or stop trigger
"matches", an erroring allow rule does not, a criterion with an error or a bad input is
unmet); coverage read `matched`/`met` alone, so one case with an incomplete action showed
both rules of the policy covered, and `--min-coverage 50` passed, though no condition had
been evaluated."""

from __future__ import annotations

import json

from click.testing import CliRunner

from policy_engine.cli import main

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
    allow small when `action.amount < 10 && action.note == "x"`
    deny big when `action.amount > 100`
  }
  stop leak {
    when `action.type == "send" && action.secret`
    severity critical
    owner "o"
    notify [b]
    resume when {
      fixed: `evidence.fixed` "the leak is fixed"
    }
  }
}
"""

HEAD = """\
suite: errors
now: "2026-11-24T10:00:00Z"
cases:
"""

ERRORING = """\
  - name: no amount, no note, no secret
    gate: {action: {workflow: w, type: send}}
    expect: {effect: stop}  # the erroring trigger stops it (fail closed)
  - name: resume without the evidence it reads
    resume: {workflow: w, stop: leak, evidence: {}}
    expect: {allowed: false}
"""

EVALUATED = """\
  - name: a small note
    gate: {action: {workflow: w, type: send, amount: 5, note: x, secret: false}}
    expect: {effect: allow}
  - name: a big one
    gate: {action: {workflow: w, type: send, amount: 500, note: y, secret: false}}
    expect: {effect: deny, rule: big}
"""


def _coverage(tmp_path, cases: str) -> dict:
    (tmp_path / "p.policy").write_text(POLICY, encoding="utf-8")
    (tmp_path / "p.policy-test.yaml").write_text(HEAD + cases, encoding="utf-8")
    res = CliRunner().invoke(main, ["test", "--coverage", "--format", "json", str(tmp_path)])
    assert res.exit_code == 0, res.output
    cov = json.loads(res.stdout)["coverage"]
    return {i["name"]: i["hit"] for i in cov["items"]}


def test_an_erroring_condition_covers_no_branch(tmp_path):
    hit = _coverage(tmp_path, ERRORING)
    assert hit["send.big"] == []  # errored ("matched", fail closed): not "fired"
    assert hit["send.small"] == []  # errored: not "not fired"
    assert hit["leak"] == []
    assert hit["leak.fixed"] == []  # `evidence.fixed` missing: an error, not "unmet"


def test_evaluated_conditions_still_count(tmp_path):
    hit = _coverage(tmp_path, EVALUATED)
    assert hit["send.big"] == ["fired", "not fired"]
    assert hit["send.small"] == ["fired", "not fired"]
    assert hit["leak"] == ["not fired"]


def test_min_coverage_is_not_met_by_errors(tmp_path):
    (tmp_path / "p.policy").write_text(POLICY, encoding="utf-8")
    (tmp_path / "p.policy-test.yaml").write_text(HEAD + ERRORING, encoding="utf-8")
    res = CliRunner().invoke(main, ["test", "--min-coverage", "25", str(tmp_path)])
    assert res.exit_code == 1, res.output
    assert "2 passed, 0 failed" in res.output
