"""Session 27 audit of `stopline test`: a rollback or authorize case must not pass on its own
typo either (session 23 closed it for gate and resume cases only).

- A rollback whose record has an unreadable `executed_at` (`"2026-11-24 09:00:00"`: no `T`,
  no zone) is treated by the engine as past its window, so a case expecting
  `window: escalated` passed, testing no scenario.
- An authorize case over a gate question whose action the engine refuses (a declared field of
  the wrong type) gets a `deny` decision, which no approval releases, so a case expecting
  `satisfied: false` ("one manager is not enough") passed, testing no approval.

Both now fail saying the input was refused and why, unless the expectation says so with
`errors: ["<input>"]` (the shorthand of the gate's `errors`, now also read on a rollback's and
an authorization's answer).
"""

from __future__ import annotations

from click.testing import CliRunner

from policy_engine.cli import main

POLICY = """\
roles [manager]

workflow "w" {
  version "1"
  owners {
    business "b"
    technical "t"
  }
  default require_approval

  action refund {
    system "s"
    reversible full via "r" within 1h
    fields {
      amount: double
    }
    require_approval big by 1 manager when `action.amount > 100.0`
    allow small when `action.amount <= 100.0`
  }

  rollback customer_request {
    authorize 1 manager
    after window {
      authorize 1 manager
    }
  }
}
"""

HEAD = """\
suite: inputs
now: "2026-11-24T10:00:00Z"
inputs:
  actions:
    big: {workflow: w, type: refund, amount: 500.0}
  records:
    sent: {type: refund, executed_at: "2026-11-24T09:30:00Z"}
    typo: {type: refund, executed_at: "2026-11-24 09:30:00"}
  principals:
    mo: {roles: [manager]}
cases:
"""


def _run(tmp_path, cases: str):
    (tmp_path / "p.policy").write_text(POLICY, encoding="utf-8")
    (tmp_path / "p.policy-test.yaml").write_text(HEAD + cases, encoding="utf-8")
    res = CliRunner().invoke(main, ["test", "--no-color", str(tmp_path)])
    assert "Traceback" not in res.output, res.output
    return res


def test_a_window_expected_of_a_record_whose_time_the_engine_refused_fails(tmp_path):
    res = _run(tmp_path, """\
  - name: half an hour later it is past the window
    rollback: {workflow: w, scenario: customer_request, original: typo, requested_by: carol}
    expect: {window: escalated}
""")
    assert res.exit_code == 1, res.output
    assert "0 passed, 1 failed" in res.output
    assert "refused the case's input (`original.executed_at`" in res.output
    assert "tests no scenario" in res.output


def test_an_unsatisfied_authorization_of_an_action_the_engine_refused_fails(tmp_path):
    res = _run(tmp_path, """\
  - name: a manager releases a big refund
    authorize: {gate: {action: big, with: {amount: "500"}}, approvals: [mo]}
    expect: {satisfied: false}
""")
    assert res.exit_code == 1, res.output
    assert "0 passed, 1 failed" in res.output
    assert "refused the input of the case's gate question (`action.amount` must be double" in res.output


def test_an_authorization_over_a_refused_rollback_request_fails(tmp_path):
    res = _run(tmp_path, """\
  - name: past the window a manager is not enough
    authorize:
      rollback: {workflow: w, scenario: customer_request, original: typo, requested_by: carol}
      approvals: [mo]
    expect: {satisfied: false}
""")
    assert res.exit_code == 1, res.output
    assert "refused the input of the case's rollback request (`original.executed_at`" in res.output


def test_cases_that_say_they_test_the_invalid_input_and_sound_cases_pass(tmp_path):
    res = _run(tmp_path, """\
  - name: the refused time is what this case tests
    rollback: {workflow: w, scenario: customer_request, original: typo, requested_by: carol}
    expect: {window: escalated, errors: ["<input>"]}
  - name: the refused action is what this case tests
    authorize: {gate: {action: big, with: {amount: "500"}}, approvals: [mo]}
    expect: {satisfied: false, errors: ["<input>"]}
  - name: inside the window
    rollback: {workflow: w, scenario: customer_request, original: sent, requested_by: carol}
    expect: {window: standard, errors: []}
  - name: a manager releases a big refund
    authorize: {gate: {action: big}, approvals: [mo]}
    expect: {satisfied: true}
  - name: an allowed decision is no input error
    authorize: {gate: {action: big, with: {amount: 5.0}}, approvals: [mo]}
    expect: {satisfied: false}
""")
    assert res.exit_code == 0, res.output
    assert "5 passed, 0 failed" in res.output


def test_a_misnamed_error_still_fails(tmp_path):
    res = _run(tmp_path, """\
  - name: the refused time is what this case tests
    rollback: {workflow: w, scenario: customer_request, original: typo, requested_by: carol}
    expect: {window: escalated, errors: ["<inptu>"]}
""")
    assert res.exit_code == 1, res.output
    assert '+ errors: ["<input>"]' in res.output
