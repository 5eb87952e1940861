"""The slips a new user makes (issue 15, item 4): each gets a diagnostic that names
file:line:column, puts the caret on the slip and says how to fix it.

Each case is a small policy with one slip; the rendered text (what the author reads) is a
syrupy snapshot, and where the caret points, the code and the help are asserted separately.
Refresh with: python -m pytest tests/test_slips.py --snapshot-update (and review the diff).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import policy_engine
from policy_engine.diagnostics import PolicyError, render_all
from policy_engine.language.fmt import format_text
from policy_engine.language.loader import load_text

BASE = """roles [reviewer]

workflow "refunds" {
  version "1.0.0"
  owners { business "Support lead" technical "Payments platform" }
  action issue_refund {
    system "payments"
    reversible full via "payments.reverse_refund" within 30d
    RULE
  }
}
"""
DEFAULT_RULE = "require_approval by 1 reviewer when `action.amount > 100.0`"


def policy(rule: str = DEFAULT_RULE, **replace: str) -> str:
    text = BASE.replace("RULE", rule)
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


# name -> (policy text, code, the text under the caret, a word the help must contain)
CASES: dict[str, tuple[str, str, str, str]] = {
    # `=` for `==` and friends, inside a condition
    "equals_for_compare": (policy("deny when `action.amount = 100.0`"), "E101", "=", "use `==` to compare"),
    "arrow_for_at_least": (policy("deny when `action.amount => 100.0`"), "E101", "=>", "use `>=`"),
    "triple_equals": (policy("deny when `action.currency === \"EUR\"`"), "E101", "===", "use `==`"),
    # and / or / not
    "and_for_ampersands": (
        policy("deny when `action.amount > 100.0 and action.currency == \"EUR\"`"), "E101", "and", "use `&&`"),
    "or_for_bars": (
        policy("deny when `action.amount > 100.0 or action.currency == \"EUR\"`"), "E101", "or", "use `||`"),
    "not_for_bang": (policy("deny when `not action.verified`"), "E101", "not", "use `!`"),
    "not_called": (policy("deny when `not(action.verified)`"), "E101", "not", "use `!`"),
    "not_in": (policy("deny when `action.currency not in [\"EUR\"]`"), "E101", "not", "`!(x in list)`"),
    "single_ampersand": (policy("deny when `action.a & action.b`"), "E101", "&", "use `&&`"),
    # typographic quotes, in the file and in a condition
    "curly_quotes_in_condition": (
        policy("deny when `action.currency == \u201cEUR\u201d`"), "E101", "\u201c", 'written "EUR" or \'EUR\''),
    "curly_single_quotes_in_condition": (
        policy("deny when `action.currency == \u2018EUR\u2019`"), "E101", "\u2018", "straight quotes"),
    "curly_quotes_for_a_string": (
        policy(**{'system "payments"': "system \u201cpayments\u201d"}), "E002", "\u201c", 'straight double quote `"`'),
    "curly_quotes_for_a_condition": (
        policy("deny when \u201caction.amount > 100.0\u201d"), "E002", "\u201c", "backticks"),
    "string_closed_by_a_curly_quote": (
        policy(**{'system "payments"': 'system "payments\u201d'}), "E002", '"', "typographic quote `\u201d`"),
    "single_quotes_for_a_condition": (policy("deny when 'action.amount > 100.0'"), "E002", "'", "backticks"),
    "hyphen_in_a_keyword": (
        policy("side-effects [log_refund]\n    " + DEFAULT_RULE), "E002", "-", "`side_effects`"),
    # near-misses of an effect keyword
    "require_hyphen_approval": (
        policy("require-approval by 1 reviewer when `action.amount > 100.0`"), "E102", "require-approval",
        "did you mean `require_approval`?"),
    "default_require_hyphen_approval": (
        policy(**{"  action issue_refund {": "  default require-approval\n  action issue_refund {"}),
        "E106", "require-approval", "did you mean `require_approval`?"),
    "alow": (policy("alow when `action.amount < 10.0`"), "E102", "alow", "did you mean `allow`?"),
    "require_space_approval": (
        policy("require approval by 1 reviewer when `action.amount > 100.0`"), "E102", "require",
        "did you mean `require_approval`?"),
    "permit": (policy("permit when `action.amount < 10.0`"), "E102", "permit", "did you mean `allow`?"),
    # a look-alike letter from another script
    "cyrillic_a_in_effect": (
        policy("\u0430llow when `action.amount < 10.0`"), "E002", "\u0430", "retype the name as `allow`"),
    "cyrillic_a_in_condition": (
        policy("deny when `\u0430ction.amount > 100.0`"), "E101", "\u0430", "retype the name as `action`"),
    "cyrillic_o_inside_a_field": (
        policy("deny when `action.am\u043eunt > 100.0`"), "E101", "\u043e", "retype the name as `amount`"),
    "greek_omicron_in_rule_name": (
        policy("deny t\u03bfo_big when `action.amount > 100.0`"), "E002", "\u03bf", "retype the name as `too_big`"),
    "no_break_space_in_condition": (
        policy("deny when `action.amount >\u00a0100.0`"), "E101", "\u00a0", "plain space"),
    # durations
    "thirty_days": (policy(**{"within 30d": "within 30 days"}), "E108", "days", "write `30d`"),
    "four_w": (policy(**{"within 30d": "within 4w"}), "E108", "w", "write `28d`"),
    "two_weeks": (policy(**{"within 30d": "within 2 weeks"}), "E108", "weeks", "write `14d`"),
    "one_month": (policy(**{"within 30d": "within 1 month"}), "E108", "month", "write `30d`"),
    "no_unit": (policy(**{"within 30d": "within 30"}), "E108", "30", "`30d`"),
    "fraction": (policy(**{"within 30d": "within 1.5h"}), "E108", "1.5", "write `90m`"),
    # reserved words as names
    "reserved_rule_name": (policy("deny stop when `action.amount > 100.0`"), "E001", "stop", "rename the rule"),
    "reserved_rule_name_action": (
        policy("deny action when `action.amount > 100.0`"), "E001", "action", "rename the rule"),
    "reserved_role_name": (
        policy(**{"roles [reviewer]": "roles [reviewer, owner]"}), "E001", "owner", "rename the role"),
    "reserved_action_name": (
        policy(**{"action issue_refund {": "action rollback {"}), "E001", "rollback", "rename the action type"),
}


def diagnose(name: str):
    text = CASES[name][0]
    result = load_text(text, f"{name}.policy")
    return result, render_all(result.diagnostics, result.sources) + "\n"


@pytest.mark.parametrize("name", sorted(CASES))
def test_slip_is_explained(name: str, snapshot) -> None:
    text, code, under, in_help = CASES[name]
    result, rendered = diagnose(name)
    assert rendered == snapshot
    errors = [d for d in result.diagnostics if d.severity == "error"]
    assert len(errors) == 1, rendered
    (d,) = errors
    assert d.code == code, rendered
    assert text[d.span.start : d.span.end] == under, rendered  # the caret is on the slip
    assert d.help and in_help in d.help, rendered
    assert f"--> {name}.policy:{d.span.line}:{d.span.col}\n" in rendered
    assert "^" * max(1, len(under)) in rendered
    assert d.message and not d.message[0].isupper() and not d.message.endswith(".")


def test_unslipped_base_policy_is_clean() -> None:
    result = load_text(policy(), "base.policy")
    assert not result.errors, render_all(result.diagnostics, result.sources)


def test_look_alike_names_the_code_point() -> None:
    result, rendered = diagnose("cyrillic_a_in_effect")
    (d,) = result.diagnostics
    assert d.message == "`\u0430` is U+0430 CYRILLIC SMALL LETTER A, not the ASCII `a`"
    assert (d.span.line, d.span.col) == (9, 5)


def test_several_slips_in_one_file_are_all_reported() -> None:
    text = policy(
        "require-approval by 1 reviewer when `action.amount > 100.0`\n"
        "    \u0430llow when `action.amount < 10.0`",
        **{"within 30d": "within 4w", 'technical "Payments platform"': "technical \u201cPayments platform\u201d"},
    )
    result = load_text(text, "many.policy")
    got = [(d.code, d.span.line, d.span.col) for d in result.diagnostics]
    assert got == [("E002", 5, 46), ("E108", 8, 59), ("E102", 9, 5), ("E002", 10, 5)]


@pytest.mark.parametrize("window", ["9" * 400 + " weeks", "9" * 400 + ".5h", "1.25s", "1."])
def test_odd_durations_get_a_diagnostic_not_a_crash(window: str) -> None:
    result = load_text(policy(**{"within 30d": f"within {window}"}), "odd.policy")
    (d,) = result.diagnostics
    assert d.code == "E108" and d.help and len(d.message) < 80


def test_effect_named_allow_is_not_a_reserved_word() -> None:
    """Only keywords are reserved: effect words and field type names may name a rule."""
    for rule in ("deny allow when `action.amount > 100.0`", "deny string when `action.amount > 100.0`"):
        assert not load_text(policy(rule), "ok.policy").errors


def test_field_names_may_be_keywords() -> None:
    """Field names mirror the action's JSON (`owner`, `description`): never refused."""
    text = policy(
        "require_approval by 1 reviewer when `action.owner == \"x\" && action.description != \"\"`",
        **{'    system "payments"\n': '    system "payments"\n    fields {\n      owner: string\n'
           '      description: string\n    }\n'},
    )
    result = load_text(text, "fields.policy")
    assert not result.errors, render_all(result.diagnostics, result.sources)


def test_reserved_name_is_refused_by_the_engine_and_fmt() -> None:
    """Refused, not just reported: the engine does not load it and fmt does not format it."""
    text = CASES["reserved_rule_name"][0]
    with pytest.raises(PolicyError) as e:
        _load_engine(text)
    assert "reserved word" in str(e.value)
    with pytest.raises(PolicyError) as f:
        format_text(text, "x.policy")
    assert "reserved word" in str(f.value)


def _load_engine(text: str):
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.policy"
        path.write_text(text, encoding="utf-8")
        return policy_engine.load(str(path))


def test_not_called_is_refused_before_it_can_widen_anything() -> None:
    """`allow when `not(x)`` parses as a call of a function that does not exist: refused at
    load, instead of an allow rule that silently never matches."""
    with pytest.raises(PolicyError):
        _load_engine(policy("allow when `not(action.flagged)`"))


def test_check_exits_1_on_each_slip(tmp_path: Path) -> None:
    from policy_engine.cli import main

    runner = CliRunner()
    for name in ("equals_for_compare", "curly_quotes_for_a_string", "four_w", "reserved_rule_name"):
        path = tmp_path / f"{name}.policy"
        path.write_text(CASES[name][0], encoding="utf-8")
        res = runner.invoke(main, ["check", str(path)])
        assert res.exit_code == 1, res.output
        assert f"error[{CASES[name][1]}]" in res.output
        assert isinstance(res.exception, SystemExit), res.exception  # no traceback


# ---------------------------------------------------------------- `stopline test` on a policy file


def test_test_on_a_policy_file_names_its_suite(tmp_path: Path, monkeypatch) -> None:
    from policy_engine.cli import main

    (tmp_path / "refunds.policy").write_text(policy(), encoding="utf-8")
    (tmp_path / "refunds.policy-test.yaml").write_text("suite: refunds\ncases: []\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["test", "refunds.policy"])
    assert res.exit_code == 2
    assert isinstance(res.exception, SystemExit)
    assert res.output == (
        "error: refunds.policy is a policy file, not a test suite (`*.policy-test.yaml`)\n"
        "  = help: its suite is refunds.policy-test.yaml: run `stopline test refunds.policy-test.yaml`\n"
    )


def test_test_on_a_policy_file_without_a_suite(tmp_path: Path, monkeypatch) -> None:
    from policy_engine.cli import main

    (tmp_path / "refunds.policy").write_text(policy(), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["test", "refunds.policy"])
    assert res.exit_code == 2
    assert "refunds.policy is a policy file, not a test suite" in res.output
    assert "`stopline check refunds.policy`" in res.output
    assert "Traceback" not in res.output


def test_test_on_a_policy_file_finds_a_suite_that_names_it(tmp_path: Path, monkeypatch) -> None:
    from policy_engine.cli import main

    (tmp_path / "refunds.policy").write_text(policy(), encoding="utf-8")
    (tmp_path / "payments.policy-test.yaml").write_text(
        "suite: payments\npolicies: [refunds.policy]\ncases: []\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["test", "refunds.policy"])
    assert res.exit_code == 2
    assert "its suite is payments.policy-test.yaml" in res.output


def test_test_on_the_shipped_policy_file_subprocess() -> None:
    """The real command, as an author types it: exit 2, no traceback, the suite named."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, "-m", "policy_engine.cli", "test", "policies/refunds.policy"],
        cwd=root, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "policies/refunds.policy-test.yaml" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_test_on_a_glob_runs_the_suites_and_passes_over_the_policies() -> None:
    """`stopline test policies/*`: the shell hands over the policies beside their suites
    (and `roles.policy`, which has none); the suites run, as `stopline test policies/`
    runs them. A policy whose suite was left out is still the slip (exit 2)."""
    from policy_engine.cli import main

    root = Path(__file__).resolve().parent.parent
    everything = sorted(str(p.relative_to(root)) for p in (root / "policies").iterdir() if p.is_file())
    assert any(p.endswith(".policy") for p in everything) and any(p.endswith(".policy-test.yaml") for p in everything)
    cwd = Path.cwd()
    try:
        import os
        os.chdir(root)
        by_glob = CliRunner().invoke(main, ["test", *everything])
        by_dir = CliRunner().invoke(main, ["test", "policies/"])
        slip = CliRunner().invoke(main, ["test", "policies/refunds.policy", "policies/crm_updates.policy-test.yaml"])
    finally:
        os.chdir(cwd)
    assert by_glob.exit_code == 0, by_glob.output
    assert by_glob.output.strip().splitlines()[-1] == by_dir.output.strip().splitlines()[-1]  # "N passed, 0 failed"
    assert " passed, 0 failed" in by_glob.output and "policy file" not in by_glob.output
    assert slip.exit_code == 2
    assert "its suite is policies/refunds.policy-test.yaml" in slip.output
