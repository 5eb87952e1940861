"""A newcomer's slips in a .policy file get one located diagnostic that names the real cause.

A condition whose closing backtick is missing used to run on to the next condition's
opening backtick, and `stopline check` then blamed the next condition's first word
("unknown statement `action`", with the help "did you mean `action`?"), once per later
condition.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from policy_engine.cli import main
from policy_engine.language.loader import load_text

POLICY = """roles [reviewer, support_manager]

workflow "discount-codes" {
  version "1.0.0"
  owners { business "Growth lead" technical "Checkout team" }
  default require_approval

  action issue_discount_code {
    system "checkout"
    reversible full via "checkout.disable_code" within 7d
    prerequisite unused `original.redemptions == 0`
    allow small when `action.percent <= 15`
    require_approval big by 1 support_manager when `action.percent > 15`
  }

  stop discount_to_staff {
    when `action.type == "issue_discount_code" && action.customer_email.endsWith("@stopline.example")`
    severity medium
    owner "Growth lead"
    notify [support_manager]
    evidence {
      staff_filter: {
        enabled: bool
      }
    }
    resume when {
      staff_filter_enabled: `evidence.staff_filter.enabled`
    }
  }
}
"""

# (the condition left open, its line, its column, the line of the backtick it runs on to)
SLIPS = [
    ("`action.percent <= 15`", 12, 22, 13),  # a rule: runs on to the next rule's condition
    ('endsWith("@stopline.example")`', 17, 10, 27),  # a stop trigger: on to a criterion's
    ("`original.redemptions == 0`", 11, 25, 12),  # a prerequisite
]


def test_the_policy_is_valid() -> None:
    assert not load_text(POLICY, "d.policy").diagnostics


@pytest.mark.parametrize(("cond", "line", "col", "runs_to"), SLIPS)
def test_an_unclosed_condition_is_named_at_its_backtick(cond: str, line: int, col: int, runs_to: int) -> None:
    assert cond.endswith("`") and cond in POLICY
    text = POLICY.replace(cond, cond[:-1], 1)  # the closing backtick dropped
    result = load_text(text, "d.policy")
    (d,) = result.diagnostics  # one error, not one per later condition
    assert (d.code, d.message) == ("E002", "condition is not closed")
    assert (d.span.line, d.span.col) == (line, col)
    assert text.splitlines()[line - 1][col - 1] == "`"
    assert d.help is not None and f"line {runs_to}" in d.help and f"on line {line}" in d.help
    assert "did you mean" not in (d.help or "")


def test_check_prints_one_located_error_with_a_caret(tmp_path: Path) -> None:
    (tmp_path / "d.policy").write_text(POLICY.replace("`action.percent <= 15`", "`action.percent <= 15", 1))
    r = CliRunner().invoke(main, ["check", str(tmp_path)])
    assert r.exit_code == 1
    assert "Traceback" not in r.output
    assert "error[E002]: condition is not closed" in r.output
    assert "d.policy:12:22" in r.output
    assert "     allow small when `action.percent <= 15\n   |                      ^ " in r.output
    assert r.output.count("error[") == 1


def test_a_multi_line_condition_is_still_valid() -> None:
    text = POLICY.replace("`action.percent <= 15`", "`action.percent\n      <= 15`", 1)
    assert not load_text(text, "d.policy").diagnostics


def test_an_exact_keyword_is_not_offered_as_its_own_correction() -> None:
    # a condition's first word where a statement belongs: no "did you mean `action`?"
    text = POLICY.replace("    allow small when", "    action.percent when", 1)
    result = load_text(text, "d.policy")
    assert result.diagnostics
    assert all("did you mean `action`" not in (d.help or "") for d in result.diagnostics)


@pytest.mark.parametrize("command", ["check", "fmt"])
def test_a_suite_given_as_a_policy_is_one_usage_error(command: str, tmp_path: Path) -> None:
    """`stopline check x.policy-test.yaml` parsed the YAML as a policy: an E001 per key."""
    (tmp_path / "d.policy").write_text(POLICY)
    suite = tmp_path / "d.policy-test.yaml"
    suite.write_text('suite: s\nnow: "2026-11-24T10:00:00Z"\ncases: []\n')
    r = CliRunner().invoke(main, [command, str(suite)])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert r.output.strip() == (f"error: {suite} is a fixture suite, not a policy: run `stopline test {suite}`, "
                                "or name the .policy files (or their directory)")
    assert "error[E001]" not in r.output


def test_the_python_api_says_the_same(tmp_path: Path) -> None:
    import policy_engine

    suite = tmp_path / "d.policy-test.yaml"
    suite.write_text("suite: s\n")
    with pytest.raises(policy_engine.PolicyError, match="is a fixture suite, not a policy"):
        policy_engine.load(str(suite))
