"""Acknowledged warnings: `# stopline: acknowledge W202 -- reason` (policy_engine/language/acknowledge.py).

What a policy author reads (the `stopline check` output) is a syrupy snapshot; where each
diagnostic points, what is acknowledged and with which reason are asserted separately.
Refresh with: python -m pytest tests/test_lint_acknowledge.py --snapshot-update (and review the diff).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import policy_engine
from policy_engine.cli import main
from policy_engine.diagnostics import PolicyError
from policy_engine.language.fmt import format_text
from policy_engine.language.loader import load_text

ROOT = Path(__file__).resolve().parent.parent
REASON = "refunds under 5.00 are written off, not reviewed"

# One irreversible action type with an `allow` rule: W202 on `small` (line 10, column 5).
BASE = """roles [reviewer]

workflow "payouts" {
  version "1.0.0"
  owners { business "Finance lead" technical "Payments platform" }
  action wire_refund {
    system "payments"
    irreversible
    require_approval big by 1 reviewer when `action.amount >= 5.0`
    allow small when `action.amount < 5.0`
  }
}
"""
SMALL = "    allow small when `action.amount < 5.0`\n"


def above_small(directive: str, text: str = BASE) -> str:
    """`text` with `directive` on its own line directly above rule `small`."""
    assert SMALL in text
    return text.replace(SMALL, f"    {directive}\n{SMALL}")


def codes(result) -> list[tuple[str, int, int]]:
    return [(d.code, d.span.line, d.span.col) for d in result.diagnostics]


def check(tmp_path: Path, monkeypatch, text: str, *args: str) -> tuple[int, str]:
    """`stopline check --no-color ARGS p.policy`, run in `tmp_path` (stable paths in the output)."""
    (tmp_path / "p.policy").write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["check", "--no-color", *args, "p.policy"])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert "Traceback" not in res.output
    return res.exit_code, res.output


# ------------------------------------------------------------------ acknowledged
def test_the_base_policy_warns_and_fails_strict(tmp_path, monkeypatch, snapshot) -> None:
    """The control: without a directive, W202 is printed and `--strict` fails."""
    assert codes(load_text(BASE)) == [("W202", 10, 5)]
    code, out = check(tmp_path, monkeypatch, BASE, "--strict")
    assert code == 1
    assert out == snapshot


def test_acknowledged_warning_is_not_printed_and_strict_passes(tmp_path, monkeypatch, snapshot) -> None:
    text = above_small(f"# stopline: acknowledge W202 -- {REASON}")
    result = load_text(text, "p.policy")
    assert result.diagnostics == []
    (a,) = result.acknowledged
    assert (a.diagnostic.code, a.diagnostic.span.line, a.diagnostic.span.col) == ("W202", 11, 5)
    assert a.reason == REASON
    assert (a.directive.line, a.directive.col) == (10, 5)
    code, out = check(tmp_path, monkeypatch, text, "--strict")
    assert code == 0
    assert out == snapshot
    assert out.strip() == "ok: 1 file, 1 workflow, 1 acknowledged"


def test_show_acknowledged_prints_them_with_the_reason(tmp_path, monkeypatch, snapshot) -> None:
    text = above_small(f"# stopline: acknowledge W202 -- {REASON}")
    code, out = check(tmp_path, monkeypatch, text, "--strict", "--show-acknowledged")
    assert code == 0
    assert out == snapshot
    assert "acknowledged[W202]: irreversible action `wire_refund` is allowed without approval" in out
    assert f"= note: acknowledged at p.policy:10:5: {REASON}" in out
    assert "warning[W202]" not in out


def test_json_lists_acknowledged_ones_apart_with_the_reason(tmp_path, monkeypatch) -> None:
    text = above_small(f"# stopline: acknowledge W202 -- {REASON}")
    code, out = check(tmp_path, monkeypatch, text, "--strict", "--format", "json")
    assert code == 0
    payload = json.loads(out)
    assert payload["ok"] is True and payload["diagnostics"] == []
    (a,) = payload["acknowledged"]
    assert (a["code"], a["severity"], a["file"], a["line"], a["col"]) == ("W202", "warning", "p.policy", 11, 5)
    assert a["acknowledged"]["reason"] == REASON
    assert (a["acknowledged"]["file"], a["acknowledged"]["line"], a["acknowledged"]["col"]) == ("p.policy", 10, 5)
    # without one, the list is there and empty; the warning is among the diagnostics
    _, out = check(tmp_path, monkeypatch, BASE, "--format", "json")
    payload = json.loads(out)
    assert payload["acknowledged"] == [] and [d["code"] for d in payload["diagnostics"]] == ["W202"]


def test_a_summary_with_other_warnings_counts_the_acknowledged(tmp_path, monkeypatch) -> None:
    text = above_small(f"# stopline: acknowledge W202 -- {REASON}").replace('    system "payments"\n', "")
    code, out = check(tmp_path, monkeypatch, text, "--strict")
    assert code == 1
    assert "warning[W204]" in out and "warning[W202]" not in out
    assert out.rstrip().endswith("1 warning found, 1 acknowledged")
    code, out = check(tmp_path, monkeypatch, text)
    assert code == 0
    assert out.rstrip().endswith("ok: 1 file, 1 workflow, 1 warning, 1 acknowledged")


def test_trailing_directive_on_the_first_line(tmp_path, monkeypatch) -> None:
    text = BASE.replace(SMALL, SMALL.rstrip("\n") + f"  # stopline: acknowledge W202 -- {REASON}\n")
    result = load_text(text)
    assert result.diagnostics == [] and [a.diagnostic.code for a in result.acknowledged] == ["W202"]
    assert check(tmp_path, monkeypatch, text, "--strict")[0] == 0


def test_comment_lines_may_sit_between_the_directive_and_its_declaration() -> None:
    text = above_small(f"# stopline: acknowledge W202 -- {REASON}\n    # (the limit is set by finance)")
    result = load_text(text)
    assert result.diagnostics == [] and len(result.acknowledged) == 1


def test_several_codes_comma_separated() -> None:
    # `small` is irreversible and allowed (W202), and shadowed by an unconditional deny (W210)
    text = BASE.replace("    require_approval big by 1 reviewer when `action.amount >= 5.0`\n",
                        "    deny frozen when `true`\n")
    assert sorted(c for c, _, _ in codes(load_text(text))) == ["W202", "W210"]
    result = load_text(above_small(f"# stopline: acknowledge W202, W210 -- {REASON}", text))
    assert result.diagnostics == []
    assert sorted(a.diagnostic.code for a in result.acknowledged) == ["W202", "W210"]
    # naming only one acknowledges only that one
    result = load_text(above_small(f"# stopline: acknowledge W210 -- {REASON}", text))
    assert [d.code for d in result.diagnostics] == ["W202"]
    assert [a.diagnostic.code for a in result.acknowledged] == ["W210"]


# ------------------------------------------------------------------ scope
TWO_RULES = BASE.replace(SMALL, SMALL + "    allow tiny when `action.amount < 1.0`\n")
ON_ACTION = f"  # stopline: acknowledge W202 -- {REASON}\n  action wire_refund {{"


def test_a_directive_above_rule_a_does_not_acknowledge_rule_b(tmp_path, monkeypatch, snapshot) -> None:
    text = above_small(f"# stopline: acknowledge W202 -- {REASON}", TWO_RULES)
    result = load_text(text, "p.policy")
    assert codes(result) == [("W202", 12, 5)]  # rule `tiny`: still reported
    assert [(a.diagnostic.span.line, a.diagnostic.span.col) for a in result.acknowledged] == [(11, 5)]
    code, out = check(tmp_path, monkeypatch, text, "--strict")
    assert code == 1
    assert out == snapshot


def test_a_directive_on_the_action_type_covers_all_of_its_rules() -> None:
    text = TWO_RULES.replace("  action wire_refund {", ON_ACTION)
    result = load_text(text)
    assert result.diagnostics == []
    assert [a.diagnostic.span.line for a in result.acknowledged] == [11, 12]


def test_a_directive_on_one_action_type_does_not_cover_another() -> None:
    other = '  action card_refund {\n    system "payments"\n    irreversible\n    allow when `true`\n  }\n}\n'
    text = BASE.replace("  action wire_refund {", ON_ACTION)
    text = text[: text.rstrip().rfind("}")] + other
    result = load_text(text)
    assert [(d.code, d.message) for d in result.diagnostics] == [
        ("W202", "irreversible action `card_refund` is allowed without approval")]
    assert len(result.acknowledged) == 1


def test_the_innermost_directive_acknowledges_and_a_redundant_outer_one_is_stale() -> None:
    text = above_small(f"# stopline: acknowledge W202 -- {REASON}")
    text = text.replace("  action wire_refund {", "  # stopline: acknowledge W202 -- also here\n  action wire_refund {")
    result = load_text(text, "p.policy")
    (a,) = result.acknowledged
    assert a.reason == REASON
    (d,) = result.diagnostics
    assert (d.code, d.span.line, d.span.col) == ("W215", 6, 27)
    assert "acknowledged by another directive" in d.message
    assert "p.policy:11:5" in (d.help or "")


def test_multi_line_rule_a_directive_inside_belongs_to_it_and_fmt_keeps_that() -> None:
    text = BASE.replace(
        SMALL,
        "    allow small when `action.amount < 5.0 &&\n"
        f"      # stopline: acknowledge W202 -- {REASON}\n"  # inside the condition: CEL, not a comment
        "      action.amount >= 0.0`\n",
    )
    assert [c for c, _, _ in codes(load_text(text))] == ["W202", "E101"]  # `#` is not CEL; no directive there
    text = BASE.replace(
        "    require_approval big by 1 reviewer when `action.amount >= 5.0`\n",
        "    require_approval big by 1 of [\n"
        f"      # stopline: acknowledge W202 -- {REASON}\n"
        "      reviewer,\n"
        "    ] when `action.amount >= 5.0`\n",
    ).replace("    allow small when", "    allow small when")
    # the directive sits inside `big` (which has no W202): it belongs to `big`, so it is stale
    result = load_text(text)
    assert [(d.code, d.span.line) for d in result.diagnostics] == [("W215", 10), ("W202", 13)]
    formatted = format_text(text)
    assert formatted.index("# stopline: acknowledge") < formatted.index("require_approval big")
    again = load_text(formatted)
    assert [d.code for d in again.diagnostics] == ["W215", "W202"]


# ------------------------------------------------------------------ problems with a directive
def test_no_reason_is_w214_and_acknowledges_nothing(tmp_path, monkeypatch, snapshot) -> None:
    text = above_small("# stopline: acknowledge W202")
    result = load_text(text, "p.policy")
    assert codes(result) == [("W214", 10, 5), ("W202", 11, 5)]
    assert result.acknowledged == []
    (d, _) = result.diagnostics
    assert d.severity == "warning"
    assert "# stopline: acknowledge W202 -- <reason>" in (d.help or "")
    code, out = check(tmp_path, monkeypatch, text, "--strict")
    assert code == 1
    assert out == snapshot


@pytest.mark.parametrize("directive", ["# stopline: acknowledge W202 --", "# stopline: acknowledge W202 --   ",
                                       "# stopline: acknowledge W202 because"])
def test_an_empty_or_missing_reason_is_w214(directive: str) -> None:
    result = load_text(above_small(directive))
    assert [c for c, _, _ in codes(result)][:1] == ["W214"] and codes(result)[-1] == ("W202", 11, 5)
    assert result.acknowledged == []


def test_a_single_dash_is_no_separator() -> None:
    result = load_text(above_small("# stopline: acknowledge W202 - a reason"))
    assert codes(result) == [("W214", 10, 5), ("W216", 10, 29), ("W202", 11, 5)]
    assert result.acknowledged == []


def test_an_error_code_is_e139_and_the_error_stays(tmp_path, monkeypatch, snapshot) -> None:
    text = BASE.replace("by 1 reviewer", "by 1 approver").replace(
        "    require_approval big", f"    # stopline: acknowledge E110 -- {REASON}\n    require_approval big")
    result = load_text(text, "p.policy")
    assert codes(result) == [("E139", 9, 29), ("E110", 10, 31), ("W202", 11, 5)]
    (d, _, _) = result.diagnostics
    assert d.severity == "error" and "only warnings" in (d.help or "")
    assert result.policy_set is None and result.acknowledged == []
    code, out = check(tmp_path, monkeypatch, text)
    assert code == 1
    assert out == snapshot
    with pytest.raises(PolicyError) as ei:
        policy_engine.load(tmp_path / "p.policy")
    assert {"E139", "E110"} <= {d.code for d in ei.value.diagnostics}


def test_an_error_code_beside_a_warning_code_acknowledges_nothing() -> None:
    result = load_text(above_small(f"# stopline: acknowledge W202, E102 -- {REASON}"))
    assert [c for c, _, _ in codes(result)] == ["E139", "W202"]
    assert result.acknowledged == []


def test_an_unknown_code_is_w216(tmp_path, monkeypatch, snapshot) -> None:
    text = above_small(f"# stopline: acknowledge W2O2 -- {REASON}")
    result = load_text(text, "p.policy")
    assert codes(result) == [("W216", 10, 29), ("W202", 11, 5)]
    assert result.diagnostics[0].help == "did you mean `W202`?"
    assert result.acknowledged == []
    code, out = check(tmp_path, monkeypatch, text, "--strict")
    assert code == 1
    assert out == snapshot


@pytest.mark.parametrize(("directive", "col", "help_has"), [
    ("# stopline: acknowledge w202 -- r", 29, "did you mean `W202`?"),
    ("# stopline: acknowledge W299 -- r", 29, "docs/diagnostics.md"),
    ("# stopline: acknowledge T001 -- r", 29, "docs/diagnostics.md"),
    ("# stopline: acknowledge W202 W210 -- r", 29, "separate the codes with commas"),
    ("# stopline: acknowledge W215 -- r", 29, "only the warnings of the policy"),
    ("# stopline: acknowledge -- r", 17, "name the code"),
    ("# stopline: allow W202 -- r", 17, "# stopline: acknowledge W202 --"),
    ("# stopline: ignore W202 -- r", 17, "# stopline: acknowledge W202 --"),
])
def test_malformed_directives_are_w216_at_the_culprit(directive: str, col: int, help_has: str) -> None:
    result = load_text(above_small(directive))
    assert [(c, ln, cl) for c, ln, cl in codes(result)] == [("W216", 10, col), ("W202", 11, 5)]
    assert help_has in (result.diagnostics[0].help or "")
    assert result.acknowledged == []


def test_a_stale_directive_is_w215(tmp_path, monkeypatch, snapshot) -> None:
    text = above_small(f"# stopline: acknowledge W202, W203 -- {REASON}")
    result = load_text(text, "p.policy")
    assert codes(result) == [("W215", 10, 35)]  # on `W203`; W202 is acknowledged
    assert "no W203 is reported in rule `small`" in result.diagnostics[0].message
    assert [a.diagnostic.code for a in result.acknowledged] == ["W202"]
    # the warning fixed: the whole directive is stale
    fixed = text.replace("    irreversible\n", '    reversible full via "payments.reverse"\n')
    result = load_text(fixed, "p.policy")
    assert codes(result) == [("W215", 10, 29)]  # one, over both codes
    assert result.diagnostics[0].message == "stale acknowledgement: no W202 or W203 is reported in rule `small`"
    code, out = check(tmp_path, monkeypatch, fixed, "--strict")
    assert code == 1
    assert out == snapshot


def test_stale_is_not_reported_while_the_set_has_errors() -> None:
    text = above_small(f"# stopline: acknowledge W203 -- {REASON}").replace("by 1 reviewer", "by 1 approver")
    assert [c for c, _, _ in codes(load_text(text))] == ["E110", "W202"]


def test_a_directive_attached_to_nothing_is_w215(tmp_path, monkeypatch, snapshot) -> None:
    text = above_small(f"# stopline: acknowledge W202 -- {REASON}\n")  # a blank line below it
    result = load_text(text, "p.policy")
    assert codes(result) == [("W215", 10, 5), ("W202", 12, 5)]
    assert "attached to no declaration" in result.diagnostics[0].message
    code, out = check(tmp_path, monkeypatch, text, "--strict")
    assert code == 1
    assert out == snapshot
    # above a statement that is no declaration (`irreversible`), or at the end of the file
    text = BASE.replace("    irreversible\n", f"    # stopline: acknowledge W202 -- {REASON}\n    irreversible\n")
    assert [c for c, _, _ in codes(load_text(text))] == ["W215", "W202"]
    text = BASE + f"# stopline: acknowledge W202 -- {REASON}\n"
    assert [c for c, _, _ in codes(load_text(text))] == ["W202", "W215"]


def test_plain_comments_mentioning_stopline_are_left_alone() -> None:
    text = above_small("# see the stopline: acknowledge docs; stopline check --strict runs in CI")
    assert [c for c, _, _ in codes(load_text(text))] == ["W202"]


# ------------------------------------------------------------------ fmt, the engine, the hash
UNFORMATTED = """roles [reviewer]
workflow "payouts" {
  version "1.0.0"
  owners { business "Finance lead" technical "Payments platform" }
      # stopline: acknowledge W202 -- refunds under 5.00 are written off, not reviewed
  action wire_refund {
      system "payments"
    irreversible
        require_approval big by 1 reviewer when `action.amount >= 5.0`
    allow small when `action.amount < 5.0`
    allow tiny when `action.amount < 5.0`    # stopline: acknowledge W203 -- kept twice on purpose
  }
}
"""


def test_fmt_keeps_the_directives_and_what_they_acknowledge(tmp_path, monkeypatch) -> None:
    before = load_text(UNFORMATTED, "p.policy")
    assert before.diagnostics == []
    assert sorted(a.diagnostic.code for a in before.acknowledged) == ["W202", "W202", "W203"]
    assert codes(load_text(UNFORMATTED.replace("# stopline:", "# no:"))) != []  # the control
    formatted = format_text(UNFORMATTED, "p.policy")
    assert formatted != UNFORMATTED
    assert format_text(formatted, "p.policy") == formatted  # idempotent
    for line in ("  # stopline: acknowledge W202 -- refunds under 5.00 are written off, not reviewed\n  action",
                 "allow tiny when `action.amount < 5.0`  # stopline: acknowledge W203 -- kept twice on purpose"):
        assert line in formatted
    after = load_text(formatted, "p.policy")

    def seen(r):
        return ([(d.code, d.message) for d in r.diagnostics],
                [(a.diagnostic.code, a.diagnostic.message, a.reason) for a in r.acknowledged])

    assert seen(after) == seen(before)
    assert after.policy_set.content_hash == before.policy_set.content_hash
    # through the CLI: `fmt` rewrites the file, `check --strict` passes before and after
    (tmp_path / "p.policy").write_text(UNFORMATTED, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    first = runner.invoke(main, ["check", "--no-color", "--strict", "p.policy"])
    assert runner.invoke(main, ["fmt", "p.policy"]).exit_code == 0
    assert (tmp_path / "p.policy").read_text(encoding="utf-8") == formatted
    assert runner.invoke(main, ["fmt", "--check", "p.policy"]).exit_code == 0
    second = runner.invoke(main, ["check", "--no-color", "--strict", "p.policy"])
    assert (first.exit_code, first.output) == (second.exit_code, second.output) == (
        0, "ok: 1 file, 1 workflow, 3 acknowledged\n")


def test_an_acknowledgement_changes_no_decision_and_not_the_hash(tmp_path) -> None:
    plain = load_text(BASE)
    acked = load_text(above_small(f"# stopline: acknowledge W202 -- {REASON}"))
    assert plain.policy_set.content_hash == acked.policy_set.content_hash
    (tmp_path / "p.policy").write_text(above_small(f"# stopline: acknowledge W202 -- {REASON}"), encoding="utf-8")
    engine = policy_engine.load(tmp_path / "p.policy")
    assert engine.policy_hash == plain.policy_set.content_hash
    assert engine.diagnostics == ()  # the engine's warnings are check's: the acknowledged one left out
    (tmp_path / "p.policy").write_text(BASE, encoding="utf-8")
    assert [d.code for d in policy_engine.load(tmp_path / "p.policy").diagnostics] == ["W202"]


# ------------------------------------------------------------------ the examples
def test_the_examples_check_strictly(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    res = CliRunner().invoke(main, ["check", "--strict", "--no-color", "--format", "json", "examples/"])
    payload = json.loads(res.output)
    assert res.exit_code == 0, res.output
    assert payload["ok"] is True and payload["diagnostics"] == []
    acked = payload["acknowledged"]
    assert [(a["code"], a["file"]) for a in acked] == [("W202", "examples/integrations/agent_tools.policy")]
    src = (ROOT / acked[0]["file"]).read_text(encoding="utf-8").splitlines()
    assert src[acked[0]["line"] - 1].strip().startswith("allow small_refund when")
    assert all(len(a["acknowledged"]["reason"]) > 20 for a in acked)
    res = CliRunner().invoke(main, ["check", "--strict", "--no-color", "examples/"])
    assert (res.exit_code, res.output) == (0, "ok: 2 files, 3 workflows, 1 acknowledged\n")
