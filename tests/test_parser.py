"""Parser: worded syntax errors, and malformed input never escapes as anything but diagnostics."""

from __future__ import annotations

import random

import pytest
from update_golden import CASES

from policy_engine.diagnostics import PolicyError
from policy_engine.language.loader import load_text, require_ok
from policy_engine.language.parser import comments_of, get_parser
from policy_engine.source import SourceFile

VALID = (CASES / "fmt" / "comments.policy").read_text(encoding="utf-8")


def diags(text: str):
    return load_text(text, "x.policy").diagnostics


def only(text: str):
    ds = [d for d in diags(text) if d.severity == "error"]
    assert len(ds) == 1, ds
    return ds[0]


def test_valid_policy_parses() -> None:
    assert load_text(VALID, "x.policy").errors == []


def test_parser_is_built_once() -> None:
    assert get_parser() is get_parser()


def test_expected_tokens_in_words() -> None:
    d = only('workflow "w" { action a { allow `x` } }')
    assert d.code == "E001"
    assert d.message == "unexpected condition `x`"
    assert d.label == "expected `by`, `when` or a name"
    assert (d.span.line, d.span.col) == (1, 33)


def test_misspelled_keyword_gets_did_you_mean() -> None:
    d = only('workflow "w" {\n  action a {\n    descripton "x"\n  }\n}\n')
    assert (d.code, d.message, d.help) == ("E001", "unknown statement `descripton`", "did you mean `description`?")
    assert (d.span.line, d.span.col) == (3, 5)


def test_unclosed_block_names_the_opener() -> None:
    d = only('workflow "w" {\n  action a {\n    system "s"\n')
    assert d.code == "E003"
    assert "line 2 (`action a {`)" in d.help


@pytest.mark.parametrize("text,code", [
    ('workflow "w" { version 1 }', "E001"),
    ("workflow 'w' {}", "E002"),
    ('workflow "w" { action a { allow when `x }', "E002"),
    ('workflow "w" {', "E003"),
    ('workflow "w" { action a { reversible full via "x" within 10 } }', "E108"),  # a duration without a unit
])
def test_syntax_error_codes(text: str, code: str) -> None:
    assert only(text).code == code


def test_comments_of_skips_strings_and_conditions() -> None:
    src = SourceFile("x", 'a "# no" `# no` # yes\n# also\n')
    assert [c[2] for c in comments_of(src)] == ["# yes", "# also"]


def test_deep_nesting_is_bounded() -> None:
    d = only("const x = " + "[" * 5000 + "]" * 5000)
    assert d.code == "E005"


# ------------------------------------------------------------------ malformed input
def _tokens(text: str) -> list[tuple[int, int]]:
    return [(t.start_pos, t.end_pos) for t in get_parser().lex(text)]


def _assert_located(text: str) -> None:
    try:
        result = load_text(text, "x.policy")
        if result.errors:
            with pytest.raises(PolicyError):
                require_ok(result)
    except PolicyError:  # the only exception allowed out of loading
        return
    src = SourceFile("x.policy", text)
    for d in result.diagnostics:
        assert d.span.path == "x.policy"
        if d.code == "W206":  # about the set as a whole (no workflow): no position
            assert not d.span.located
            continue
        assert 1 <= d.span.line <= text.count("\n") + 1
        assert 1 <= d.span.col
        assert 0 <= d.span.start <= d.span.end <= len(text)
        assert src.line_col(d.span.start) == (d.span.line, d.span.col)


def test_truncation_at_every_token_boundary() -> None:
    bounds = sorted({e for _, e in _tokens(VALID)} | {s for s, _ in _tokens(VALID)})
    assert len(bounds) > 100
    for b in bounds:
        text = VALID[:b]
        _assert_located(text)
        if b < len(VALID.rstrip()) and VALID[:b].count("{") > VALID[:b].count("}"):
            assert load_text(text, "x.policy").errors, f"truncation at {b} should not load"


def test_random_token_deletions() -> None:
    rng = random.Random(20261124)
    toks = _tokens(VALID)
    for _ in range(150):
        s, e = toks[rng.randrange(len(toks))]
        _assert_located(VALID[:s] + VALID[e:])


def test_random_character_edits() -> None:
    rng = random.Random(7)
    alphabet = '{}[]`"#:,.=\n x09_'
    for _ in range(150):
        text = list(VALID)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(text))
            op = rng.random()
            if op < 0.4:
                del text[i]
            elif op < 0.8:
                text.insert(i, rng.choice(alphabet))
            else:
                text[i] = rng.choice(alphabet)
        _assert_located("".join(text))


@pytest.mark.parametrize("text", ["", "\n", "}", "{", "`", '"', "workflow", "workflow \"w\" { } }",
                                  "\ufeffworkflow \"w\" {}", "roles [a,,b]", "const x = {\"a\": }",
                                  "workflow \"w\" { stop s { resume when { c: } } }", "#" * 10000])
def test_odd_inputs(text: str) -> None:
    _assert_located(text)


def test_language_reference_examples_load() -> None:
    """Every ```stopline block of the language reference (docs/language.md) is a complete, valid file."""
    import re
    from pathlib import Path

    from policy_engine.language.fmt import format_text

    doc = (Path(__file__).resolve().parent.parent / "docs" / "language.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```stopline\n(.*?)```", doc, re.S)
    assert len(blocks) >= 5
    for block in blocks:
        result = load_text(block, "language.md")
        assert result.errors == [], result.errors
        assert format_text(block) == block  # the reference is written in the canonical layout


def test_independent_syntax_errors_are_all_reported() -> None:
    """After a syntax error the parser blanks the line (offsets kept) and looks for more."""
    text = ('roles [reviewer]\n\nworkflow "w" {\n  version "1"\n  owners { business "b" technical "t" }\n'
            '  action a {\n    sytem "helpdesk"\n    reversible full via "x"\n    allow when `true`\n'
            '    deny blocked blocked when `false`\n    allow when true\n  }\n}\n')
    ds = load_text(text, "x.policy").diagnostics
    assert [(d.code, d.span.line) for d in ds] == [("E001", 7), ("E001", 10), ("E001", 11)]
    assert ds[0].help == "did you mean `system`?"


def test_recovery_reports_the_unclosed_block_once() -> None:
    text = 'workflow "w" {\n  action a {\n    sytem "x"\n'
    ds = load_text(text, "x.policy").diagnostics
    assert [d.code for d in ds] == ["E001", "E003"]  # the typo, then the real missing `}`; nothing more
