"""Session 27 audit of `stopline test`: "a suite with an error does not run; it counts as one
error and every problem in it is listed" (docs/testing.md). A YAML key given twice stopped
the reading of the suite at the first one: a suite with three repeated keys and a misspelt
input name showed one problem per run, the author fixing them one run at a time."""

from __future__ import annotations

from click.testing import CliRunner

from policy_engine.cli import main
from policy_engine.testing import load_suite

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
  }
}
"""

SUITE = """\
suite: dup
now: "2026-11-24T10:00:00Z"
now: "2026-11-25T10:00:00Z"
inputs:
  actions:
    big: &big {workflow: w, type: send, amount: 500.0, amount: 5.0}
    again: *big
    merged: {<<: *big, note: x}
cases:
  - name: big is denied
    gate: {action: big, action: big}
    expect: {effect: deny, effect: allow}
  - name: typo
    gate: {action: bgi}
    expect: {effect: deny}
"""


def test_every_repeated_key_is_listed_with_the_other_problems(tmp_path):
    (tmp_path / "p.policy").write_text(POLICY, encoding="utf-8")
    (tmp_path / "p.policy-test.yaml").write_text(SUITE, encoding="utf-8")
    suite = load_suite(tmp_path / "p.policy-test.yaml")
    got = sorted((d.code, d.message, d.span.line, d.span.col) for d in suite.diagnostics)
    assert got == [
        ("T008", "key `action` is given twice", 11, 25),
        ("T008", "key `amount` is given twice", 6, 56),  # once, however often its anchor is used
        ("T008", "key `effect` is given twice", 12, 28),
        ("T008", "key `now` is given twice", 3, 1),
    ]
    res = CliRunner().invoke(main, ["test", "--no-color", str(tmp_path)])
    assert res.exit_code == 2, res.output
    assert res.output.count("error[T008]") == 4, res.output
    assert "error[T003]: unknown action `bgi`" in res.output  # the suite is still read through
    assert res.output.rstrip().endswith("0 passed, 0 failed, 1 error")
