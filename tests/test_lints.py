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
    evidence {
      fixed: bool
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


# ------------------------------------------------------------------ W209-W211 (language/lints.py)
LINTED = '''
roles [support_manager, legal, executive]
const limit = 100.0
const off = false

workflow "refunds" {
  version "1.0.0"
  owners {
    business "B"
    technical "T"
  }

  action issue_refund {
    system "payments"
    reversible full via "payments.reverse"
    require_approval by 1 support_manager when `action.amount > 1000.0`
    allow small when `COND`
  }

  action award_points {
    system "loyalty"
    reversible full via "loyalty.cancel"
    require_approval by 1 support_manager when `action.points > 10`
  }
}
'''


def linted(cond: str) -> str:
    return LINTED.replace("COND", cond)


def codes(text: str) -> list[tuple[str, int, int]]:
    return [(d.code, d.span.line, d.span.col) for d in load_text(text, "x.policy").diagnostics]


NEVER = [
    # (condition, the text the caret is under)
    ("action.amount > 100.0 && action.amount < 10.0", "action.amount < 10.0"),
    ("action.amount < 10 && 50 < action.amount", "50 < action.amount"),
    ("action.amount >= 5 && action.amount < 5", "action.amount < 5"),
    ("action.amount == 7 && action.amount > 7", "action.amount > 7"),
    # the constant left of `==` (the loader raised KeyError here: differential fuzzer, 2026-11-27)
    ("7 == action.amount && action.amount > 7", "action.amount > 7"),
    ("action.amount < 3 && 7 == action.amount", "7 == action.amount"),
    ('"late" == action.reason && action.reason == "damaged"', 'action.reason == "damaged"'),
    ('action.reason == "damaged" && action.reason == "late"', 'action.reason == "late"'),
    ("action.amount > policy.limit && action.amount <= 50.0", "action.amount <= 50.0"),
    ("policy.limit < 10.0", "policy.limit < 10.0"),
    ("policy.off", "policy.off"),
    ("action.amount < 10.0 && policy.off", "policy.off"),
    ("action.amount < 10.0 && false", "false"),
    ('action.type == "award_points" && action.amount < 10.0', 'action.type == "award_points"'),
    ('action.type in ["award_points"]', 'action.type in ["award_points"]'),
    ('action.type != "issue_refund"', 'action.type != "issue_refund"'),
    ("(action.amount > 5.0 && action.amount < 1.0) || false", None),
]
SATISFIABLE = [
    "action.amount >= 5 && action.amount <= 5",
    "action.amount > 5 && action.amount < 6",
    "action.amount == 5 && action.amount > 4",
    "5 == action.amount && action.amount > 4",
    "5 == action.amount && action.amount == 5",
    "action.amount > 100.0 || action.amount < 10.0",
    'action.reason == "damaged" && action.note == "late"',
    'action.type == "issue_refund" && action.amount < 10.0',
    'action.type in ["issue_refund", "award_points"]',
    "action.amount > policy.limit && action.amount <= 500.0",
    "policy.limit > 10.0 && action.amount < 5.0",
    "size(action.items) > 5 && size(action.items) < 3",  # not a field: not decided (no warning)
    "action.lines.exists(l, l.qty > 5 && l.qty < 3) || action.amount < 5.0",
]


@pytest.mark.parametrize(("cond", "at"), NEVER, ids=[c for c, _ in NEVER])
def test_a_rule_that_can_never_match_is_w209_at_the_reason(cond: str, at: str | None) -> None:
    text = linted(cond)
    (d,) = load_text(text, "x.policy").diagnostics
    assert (d.code, d.severity) == ("W209", "warning")
    assert d.message.startswith("rule `small` can never match: ")
    assert d.help
    line = text.splitlines()[d.span.line - 1]
    start = line.index("`" + cond) + 1 + (cond.index(at) if at else 0)
    assert d.span.col == start + 1
    assert line[start:start + len(at or cond)] == (at or cond)


@pytest.mark.parametrize("cond", SATISFIABLE)
def test_satisfiable_rules_are_clean(cond: str) -> None:
    assert codes(linted(cond)) == []


AMOUNTS = [-1e9, -1.0, 0, 1, 4.99, 5, 5.0, 6.5, 7, 10, 49.5, 50, 99.99, 100, 100.5, 999, 1e9]


@pytest.mark.parametrize("cond", [c for c, _ in NEVER if "reason" not in c])
def test_what_w209_says_is_true_no_refund_is_ever_allowed(cond: str, tmp_path: Path) -> None:
    path = tmp_path / "p.policy"
    path.write_text(linted(cond), encoding="utf-8")
    engine = policy_engine.load(path)
    for amount in AMOUNTS:
        d = engine.evaluate({"workflow": "refunds", "type": "issue_refund", "amount": amount}, now=NOW)
        assert d.effect != "allow" and all(m.name != "small" for m in d.matched), (cond, amount)


def test_w209_on_a_deny_rule_and_a_stop_trigger_notes_the_error_path() -> None:
    text = linted("true").replace(
        "    allow small when `true`",
        "    deny nothing when `action.amount > 5000.0 && action.amount < 1.0`",
    ).replace("  action award_points", '''  stop never {
    when `action.amount > 5.0 && action.amount < 1.0`
    severity low
    owner "B"
    resume when {
      ok: `evidence.ok`
    }
    evidence {
      ok: bool
    }
  }

  action award_points''')
    ds = load_text(text, "x.policy").diagnostics
    assert [d.code for d in ds] == ["W209", "W209"]
    assert ds[0].message.startswith("rule `nothing` can never match")
    assert ds[0].notes == ("only an error could make it match (an erroring condition counts as matched for `deny`)",)
    assert ds[1].message.startswith("stop trigger `never` can never match")
    assert "fire" in ds[1].notes[0]


def test_shadowed_rule_is_w210_and_never_decides(tmp_path: Path) -> None:
    text = linted("action.amount > 1000.0").replace("`action.amount > 1000.0`", "`action.amount>1000.0`", 1)
    (d,) = load_text(text, "x.policy").diagnostics
    assert d.code == "W210" and "rule `small` is shadowed by require_approval rule" in d.message
    assert "(the same condition)" in d.message
    assert text.splitlines()[d.span.line - 1][d.span.col - 1:].startswith("allow small")
    path = tmp_path / "p.policy"
    path.write_text(text, encoding="utf-8")
    engine = policy_engine.load(path)
    for amount in AMOUNTS:
        d2 = engine.evaluate({"workflow": "refunds", "type": "issue_refund", "amount": amount}, now=NOW)
        assert d2.deciding.name != "small"


@pytest.mark.parametrize("deny", ["true", "policy.limit > 1.0"])
def test_an_unconditional_deny_shadows_every_lower_rule(deny: str) -> None:
    text = linted("action.amount < 10.0").replace(
        "    allow small", f"    deny everything when `{deny}`\n    allow small")
    ds = load_text(text, "x.policy").diagnostics
    shadowed = sorted(d.message.split("`")[1] for d in ds)
    assert [d.code for d in ds] == ["W210", "W210"]
    assert shadowed[0].startswith("require_approval_") and shadowed[1] == "small"
    assert all("(an unconditional condition)" in d.message and "`everything`" in d.message for d in ds)


def test_no_w210_for_lower_precedence_or_same_effect_or_different_conditions() -> None:
    # a deny after an allow with the same condition is not shadowed (deny outranks allow)
    text = linted("action.amount < 10.0").replace(
        "    allow small", "    deny low when `action.amount < 10.0`\n    allow small")
    assert [d.code for d in load_text(text, "x.policy").diagnostics] == ["W210"]  # only `small`
    assert codes(linted("action.amount < 10.0")) == []
    # two allow rules with one condition: W203's business (identical rule), not W210
    text = linted("action.amount < 10.0").replace(
        "    allow small", "    allow also when `action.amount < 10.0`\n    allow small")
    assert "W210" not in [c for c, _, _ in codes(text)]
    # a rule that can never match is reported once (W209), not also as shadowed
    text = linted("false").replace("    allow small", "    deny nope when `false`\n    allow small")
    assert sorted(c for c, _, _ in codes(text)) == ["W209", "W209"]


def test_normalised_conditions() -> None:
    from policy_engine.language.lints import normalise

    assert normalise("action.amount  >  5") == normalise("action.amount>5")
    assert normalise('action.x == "a  b"') != normalise('action.x == "a b"')
    assert normalise("a in b") != normalise("ain b")


SCENARIO = '''
roles [legal, executive]

workflow "refunds" {
  version "1.0.0"
  owners {
    business "B"
    technical "T"
  }

  action issue_refund {
    system "payments"
    reversible full via "payments.reverse" within 30d
    require_approval by BY when `true`
  }

  rollback regulatory_order {
    authorize AUTH
    ESC
  }
}
'''


def scenario(auth: str, esc: str = "", by: str = "1 legal") -> str:
    return SCENARIO.replace("AUTH", auth).replace("ESC", esc).replace("BY", by)


def test_unfillable_authorizations_are_w211() -> None:
    assert [c for c, _, _ in codes(scenario("1 legal and 1 of [legal, executive]"))] == ["W205"]
    got = [(d.code, d.message) for d in load_text(scenario("1 legal and 2 of []"), "x.policy").diagnostics
           if d.code != "W205"]
    assert got == [("W211", "rollback scenario `regulatory_order` asks for 2 approvers of no role")]
    got = [(d.code, d.message) for d in load_text(scenario("1 legal", by="1 of []"), "x.policy").diagnostics
           if d.code != "W205"]
    assert got == [("W211", "rule `require_approval_" + got[0][1].split("require_approval_")[1][:6]
                    + "` asks for 1 approver of no role")]
    # the engine reads at most MAX_APPROVALS approvals: more slots than that are never filled
    many = " and ".join(["100 legal"] * 10)
    assert [c for c, _, _ in codes(scenario(many))] == ["W205"]  # exactly 1,000: fillable
    text = scenario(many, "after window {\n      authorize 1 executive\n    }")
    (d,) = [d for d in load_text(text, "x.policy").diagnostics if d.code != "W205"]
    assert d.code == "W211" and "after its window needs 1001 approvals in all; at most 1000 are read" in d.message
    text = scenario(many + " and 1 executive", "after window {\n      authorize 1 executive\n    }")
    assert [d.code for d in load_text(text, "x.policy").diagnostics if d.code != "W205"] == ["W211"]  # once


def test_benchmark_policies_are_clean_in_strict_mode() -> None:
    root = Path(__file__).resolve().parent.parent
    res = CliRunner().invoke(main, ["check", "--strict", str(root / "benchmarks" / "policies")])
    assert res.exit_code == 0, res.output
