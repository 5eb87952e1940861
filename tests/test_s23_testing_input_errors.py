"""Session 23 audit of `stopline test`: a case must not pass on its own typo. The engine
refuses an invalid input and fails closed (a gate denies an action with no `workflow`, a
resume is not allowed on evidence missing a declared field), so a case expecting `deny`
(or `allowed: false`) passed, testing no rule at all. It now fails, saying the input was
refused and why, unless its expectation says what it expects of such an answer (`rule:
undeclared`, `rule: error`, `errors: ["<input>"]`, the `unmet` criteria; `evidence: {}`,
none presented, is taken as deliberate)."""

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
  default require_approval
  action send {
    system "s"
    description "d"
    fields {
      amount: double
    }
    deny big when `action.amount > 100.0`
  }
  stop leak {
    when `action.type == "send" && action.amount > 10000.0`
    severity critical
    owner "o"
    notify [b]
    evidence {
      fixed: bool
    }
    resume when {
      fixed: `evidence.fixed` "the leak is fixed"
    }
  }
}
"""

HEAD = 'suite: inputs\nnow: "2026-11-24T10:00:00Z"\ncases:\n'


def _run(tmp_path, cases: str):
    (tmp_path / "p.policy").write_text(POLICY, encoding="utf-8")
    (tmp_path / "p.policy-test.yaml").write_text(HEAD + cases, encoding="utf-8")
    return CliRunner().invoke(main, ["test", "--no-color", str(tmp_path)])


def test_a_deny_expected_of_an_action_the_engine_refused_fails(tmp_path):
    res = _run(tmp_path, """\
  - name: a big refund is denied
    gate: {action: {type: send, amount: 500.0}}
    expect: {effect: deny}
""")
    assert res.exit_code == 1, res.output
    assert "0 passed, 1 failed" in res.output
    assert "refused the case's input (the action has no `workflow`" in res.output


def test_an_allowed_false_expected_of_evidence_the_engine_refused_fails(tmp_path):
    res = _run(tmp_path, """\
  - name: resume blocked until fixed
    resume: {workflow: w, stop: leak, evidence: {fixd: true}}
    expect: {allowed: false}
""")
    assert res.exit_code == 1, res.output
    assert "refused the case's input (`evidence.fixed` is missing" in res.output


def test_cases_that_say_they_test_the_invalid_input_still_pass(tmp_path):
    res = _run(tmp_path, """\
  - name: an undeclared type is denied
    gate: {action: {workflow: w, type: delete}}
    expect: {effect: deny, rule: undeclared}
  - name: a wrong type is an input error
    gate: {action: {workflow: w, type: send, amount: lots}}
    expect: {effect: deny, errors: ["<input>"]}
  - name: no evidence, every criterion unmet
    resume: {workflow: w, stop: leak, evidence: {}}
    expect: {allowed: false, unmet: [fixed]}
  - name: a valid big one is denied by its rule
    gate: {action: {workflow: w, type: send, amount: 500.0}}
    expect: {effect: deny}
  - name: no evidence presented at all
    resume: {workflow: w, stop: leak, evidence: {}}
    expect: {allowed: false}
""")
    assert res.exit_code == 0, res.output
    assert "5 passed, 0 failed" in res.output
