"""Session 23: two keys of a suite read loosely. `inputs: []` (or `actions: []`, `inputs: 0`)
was read as "no inputs" (`... or {}`), and `skip: 5` as "skipped"; docs/testing.md says
`inputs` maps kinds to named inputs and `skip` gives the reason. Each is now a T006 at its
`file:line:col`, with the line, a caret and a help line; the suite does not run. `inputs:`
left empty (null), `skip: true` and `skip: false` keep their meaning."""

from __future__ import annotations

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

CASE = """\
cases:
  - name: small
    gate: {action: {workflow: w, type: send, amount: 5}}
    expect: {effect: allow}
"""


def run(tmp_path, suite: str):
    (tmp_path / "p.policy").write_text(POLICY, encoding="utf-8")
    (tmp_path / "p.policy-test.yaml").write_text('now: "2026-11-24T10:00:00Z"\n' + suite, encoding="utf-8")
    res = CliRunner().invoke(main, ["test", str(tmp_path / "p.policy-test.yaml")])
    assert "Traceback" not in res.output, res.output
    return res


def test_inputs_as_a_list_is_a_located_error(tmp_path):
    res = run(tmp_path, "inputs: []\n" + CASE)
    assert res.exit_code == 2, res.output
    assert "error[T006]: `inputs` must be a mapping, not a list" in res.output
    assert ":2:9\n" in res.output  # line 2 (after `now`), at the `[]`
    assert "2 | inputs: []\n  |         ^^ expected a mapping" in res.output
    assert "= help: write `inputs` as a mapping of named inputs by kind" in res.output
    assert "0 passed, 0 failed, 1 error" in res.output


def test_an_input_kind_as_a_list_is_a_located_error(tmp_path):
    res = run(tmp_path, "inputs:\n  actions: []\n" + CASE)
    assert res.exit_code == 2, res.output
    assert "error[T006]: `inputs.actions` must be a mapping, not a list" in res.output
    assert "3 |   actions: []\n  |            ^^ expected a mapping" in res.output
    assert "= help: `inputs.actions` maps each name to its value" in res.output


def test_falsy_inputs_of_other_types_are_errors_too(tmp_path):
    for bad, what in (("0", "a number"), ("false", "a boolean"), ('""', "a string")):
        res = run(tmp_path, f"inputs: {bad}\n" + CASE)
        assert res.exit_code == 2, (bad, res.output)
        assert f"`inputs` must be a mapping, not {what}" in res.output


def test_empty_inputs_still_mean_none(tmp_path):
    res = run(tmp_path, "inputs:\n  actions:\n" + CASE)
    assert res.exit_code == 0, res.output
    assert "1 passed, 0 failed" in res.output


def test_skip_as_a_number_is_a_located_error(tmp_path):
    res = run(tmp_path, CASE + "    skip: 5\n")
    assert res.exit_code == 2, res.output
    assert "error[T006]: `skip` must be a string or a boolean, not a number" in res.output
    assert "6 |     skip: 5\n  |           ^ expected a string or a boolean" in res.output
    assert '= help: write why the case is skipped (`skip: "reason"`), or remove `skip` to run it' in res.output
    assert "skipped" not in res.output.splitlines()[-1]


def test_skip_with_an_empty_reason_is_a_located_error(tmp_path):
    res = run(tmp_path, CASE + '    skip: ""\n')
    assert res.exit_code == 2, res.output
    assert "error[T006]: `skip` gives no reason" in res.output and ":6:11" in res.output


def test_skip_in_a_table_row_is_checked_too(tmp_path):
    table = """\
cases:
  - name: amounts
    gate: {action: {workflow: w, type: send}}
    table:
      - {with: {amount: 5}, expect: {effect: allow}, skip: [later]}
"""
    res = run(tmp_path, table)
    assert res.exit_code == 2, res.output
    assert "`skip` must be a string or a boolean, not a list" in res.output


def test_skip_reason_true_and_false_keep_their_meaning(tmp_path):
    res = run(tmp_path, CASE + "    skip: not yet\n")
    assert res.exit_code == 0 and "0 passed, 0 failed, 1 skipped" in res.output, res.output
    res = run(tmp_path, CASE + "    skip: true\n")
    assert res.exit_code == 0 and "0 passed, 0 failed, 1 skipped" in res.output, res.output
    res = run(tmp_path, CASE + "    skip: false\n")
    assert res.exit_code == 0 and "1 passed, 0 failed" in res.output, res.output
