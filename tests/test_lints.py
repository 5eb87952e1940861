"""The lints of `check --strict` that come from declared fields: W207 (a stop trigger
that errors on the action types it does not guard) and W208 (an `allow` rule that reads
an optional field without `has(...)`). Each is shown to matter at run time too: the
trap the lint names really stops the workflow, or really never matches."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import policy_engine
from policy_engine.cli import main
from policy_engine.language.loader import load_text

NOW = "2026-11-24T10:00:00Z"

POLICY = '''
roles [support_manager]

workflow "refunds" {
  version "1.0.0"
  owners {
    business "B"
    technical "T"
  }

  action issue_refund {
    system "payments"
    reversible full via "payments.reverse"
    fields {
      amount: double
      payee: string
      customer: string
      coupon?: string
    }
    require_approval by 1 support_manager when `action.amount > 100.0`
    allow small when `action.amount <= 100.0 && GUARD`
  }

  action award_points {
    system "loyalty"
    reversible full via "loyalty.cancel"
    fields {
      points: int
      customer: string
    }
    allow when `action.points < 1000`
  }

  stop payee_mismatch {
    when `STOP`
    severity critical
    owner "B"
    resume when {
      fixed: `evidence.fixed`
    }
  }
}
'''

UNGUARDED = "action.payee != action.customer"
GUARDS = ['action.type == "issue_refund" && action.payee != action.customer',
          'action.type in ["issue_refund"] && action.payee != action.customer',
          "has(action.payee) && action.payee != action.customer"]


def policy(stop: str = GUARDS[0], guard: str = "true") -> str:
    return POLICY.replace("STOP", stop).replace("GUARD", guard)


def warnings(text: str) -> list[tuple[str, int, int]]:
    return [(d.code, d.span.line, d.span.col) for d in load_text(text, "x.policy").diagnostics]


def test_unguarded_stop_read_is_w207_at_the_field() -> None:
    text = policy(UNGUARDED)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if UNGUARDED in ln)
    col = text.splitlines()[line - 1].index("payee") + 1
    (d,) = load_text(text, "x.policy").diagnostics
    assert (d.code, d.severity, d.span.line, d.span.col) == ("W207", "warning", line, col)
    assert "`award_points` does not declare it" in d.message
    assert d.help == 'guard the read: `action.type == "issue_refund" && ...` or `has(action.payee) && ...`'
    assert d.notes == ("a stop trigger whose condition errors stops the whole workflow",)


@pytest.mark.parametrize("stop", GUARDS)
def test_guarded_stop_reads_are_clean(stop: str) -> None:
    assert warnings(policy(stop)) == []


def test_the_trap_is_real_an_unguarded_stop_stops_other_types(tmp_path: Path) -> None:
    """What W207 warns about: the condition errors on `award_points`, and the workflow stops."""
    for stop, effect in ((UNGUARDED, "stop"), (GUARDS[0], "allow")):
        path = tmp_path / "p.policy"
        path.write_text(policy(stop), encoding="utf-8")
        for accelerate in (False, True):
            engine = policy_engine.load(path, accelerate=accelerate)
            d = engine.evaluate({"workflow": "refunds", "type": "award_points", "points": 10, "customer": "c"},
                                now=NOW)
            assert d.effect == effect, (stop, accelerate)


def test_strict_check_fails_on_w207_and_passes_once_guarded(tmp_path: Path) -> None:
    path = tmp_path / "p.policy"
    path.write_text(policy(UNGUARDED), encoding="utf-8")
    runner = CliRunner()
    assert runner.invoke(main, ["check", str(path)]).exit_code == 0  # a warning
    res = runner.invoke(main, ["check", "--strict", "--no-color", str(path)])
    assert res.exit_code == 1 and "warning[W207]" in res.output
    path.write_text(policy(GUARDS[0]), encoding="utf-8")
    assert runner.invoke(main, ["check", "--strict", str(path)]).exit_code == 0


def test_no_lint_without_declarations() -> None:
    bare = policy(UNGUARDED)
    for block in ("      amount: double\n      payee: string\n      customer: string\n      coupon?: string\n",
                  "      points: int\n      customer: string\n"):
        bare = bare.replace("    fields {\n" + block + "    }\n", "")
    assert "fields" not in bare
    assert warnings(bare) == []


def test_one_undeclared_type_switches_the_stop_check_off() -> None:
    """An action type without declarations may hold anything: no W207 (no false alarm)."""
    text = policy(UNGUARDED).replace("    fields {\n      points: int\n      customer: string\n    }\n", "")
    assert warnings(text) == []


def test_optional_field_in_allow_is_w208_and_the_rule_really_never_matches(tmp_path: Path) -> None:
    text = policy(guard='action.coupon == "GOODWILL"')
    assert [c for c, _, _ in warnings(text)] == ["W208"]
    assert warnings(policy(guard='has(action.coupon) && action.coupon == "GOODWILL"')) == []
    assert warnings(policy(guard='(!has(action.coupon) || action.coupon == "GOODWILL")')) == []
    # (without the parentheses `a && !has(x) || x == ...` reads x when `a` is false: W208 is right)
    assert warnings(policy(guard='!has(action.coupon) || action.coupon == "GOODWILL"'))[0][0] == "W208"
    path = tmp_path / "p.policy"
    path.write_text(text, encoding="utf-8")
    engine = policy_engine.load(path)
    refund = {"workflow": "refunds", "type": "issue_refund", "amount": 10.0, "payee": "c", "customer": "c"}
    assert engine.evaluate({**refund, "coupon": "GOODWILL"}, now=NOW).effect == "allow"
    assert engine.evaluate(refund, now=NOW).effect == "require_approval"  # absent: the allow rule errors


def test_misspelt_field_in_allow_explains_it_never_matches() -> None:
    (d,) = load_text(policy(guard='action.payeee == "x"'), "x.policy").diagnostics
    assert d.code == "E115" and d.help == "did you mean `payee`?"
    assert d.notes == ("reading an undeclared field is an error, and an `allow` rule whose condition errors "
                       "never matches",)


def test_shipped_library_is_clean_in_strict_mode() -> None:
    root = Path(__file__).resolve().parent.parent
    res = CliRunner().invoke(main, ["check", "--strict", str(root / "policies")])
    assert res.exit_code == 0, res.output
