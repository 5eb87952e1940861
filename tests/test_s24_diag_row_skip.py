"""Session 24: `skip: false` on a table row was read "as if absent", so the row inherited its
case's `skip` and was skipped with it: the explicit spelling did nothing. A row's `skip`
overrides the case's as its `now` and `expect` do: `skip: false` runs the row, `skip:
"reason"` or `true` skips it, and a row that says nothing inherits the case's."""

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
    allow small when `action.amount < 10`
  }
}
"""

SUITE = """\
now: "2026-11-24T10:00:00Z"
cases:
  - name: amounts
    skip: "the limits are being reworked"
    gate: {action: {workflow: w, type: send}}
    table:
      - {name: inherits, with: {amount: 5}, expect: {effect: allow}}
      - {name: runs, with: {amount: 5}, expect: {effect: allow}, skip: false}
      - {name: own_reason, with: {amount: 5}, expect: {effect: allow}, skip: "flaky"}
  - name: open
    gate: {action: {workflow: w, type: send}}
    table:
      - {name: runs_too, with: {amount: 50}, expect: {effect: deny}, skip: false}
      - {name: skipped, with: {amount: 50}, expect: {effect: deny}, skip: true}
"""


def test_skip_false_on_a_row_runs_it_even_when_its_case_is_skipped(tmp_path):
    (tmp_path / "p.policy").write_text(POLICY, encoding="utf-8")
    (tmp_path / "p.policy-test.yaml").write_text(SUITE, encoding="utf-8")
    res = CliRunner().invoke(main, ["test", "--format", "json", str(tmp_path / "p.policy-test.yaml")])
    assert "Traceback" not in res.output, res.output
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    status = {c["name"]: (c["status"], c.get("message") or "")
              for s in report["suites"] for c in s["cases"]}
    assert status == {
        "amounts [inherits]": ("skipped", "the limits are being reworked"),
        "amounts [runs]": ("passed", ""),  # was skipped with its case
        "amounts [own_reason]": ("skipped", "flaky"),
        "open [runs_too]": ("passed", ""),
        "open [skipped]": ("skipped", "skipped"),
    }, status
