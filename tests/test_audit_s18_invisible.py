"""Audit s18: permission-widening hazards a policy author cannot see.

- a string of a policy (a constant list item, a rule's or a declaration's string) or a CEL
  string literal in a condition holding an invisible or format character typed into the file
  (a zero-width space or joiner, a soft hyphen, another Default_Ignorable code point) or a raw
  control character: `const blocked = ["evil.com<U+200B>"]` looks right, and a `deny ... when
  action.domain in policy.blocked` never matches `evil.com`. W217 at the character, naming
  it; written as an escape (`\\u200b`) it is meant, and not reported. (A bidirectional control
  anywhere in the file, a comment included, is already E002: "Trojan Source".)
- a lone-surrogate escape in a policy string (`"\\ud800"`) loaded as the escape's text: it is
  E002 at the escape.

Refresh the snapshots with `python -m pytest tests/test_audit_s18_invisible.py
--snapshot-update` and review the diff.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from policy_engine.diagnostics import render_all
from policy_engine.language.loader import load_paths, load_text

ROOT = Path(__file__).resolve().parents[1]
HEAD = 'roles [reviewer]\n\nworkflow "w" {\n  version "1"\n  owners { business "b" technical "t" }\n'


def _const(value: str) -> str:
    return f"const blocked = {value}\n" + HEAD + "}\n"


def _rule(cond: str) -> str:
    return HEAD + f'  action a {{\n    system "s"\n    reversible full via "x"\n    deny d when `{cond}`\n  }}\n}}\n'


def _w217(text: str):
    res = load_text(text, "x.policy")
    return res, [d for d in res.diagnostics if d.code == "W217"]


# ------------------------------------------------------------------ W217: invisible characters in strings

@pytest.mark.parametrize("ch, name", [
    ("\u200b", "U+200B ZERO WIDTH SPACE"),
    ("\u200c", "U+200C ZERO WIDTH NON-JOINER"),
    ("\u200d", "U+200D ZERO WIDTH JOINER"),
    ("\u2060", "U+2060 WORD JOINER"),
    ("\ufeff", "U+FEFF ZERO WIDTH NO-BREAK SPACE"),
    ("\u00ad", "U+00AD SOFT HYPHEN"),
    ("\u034f", "U+034F COMBINING GRAPHEME JOINER"),
    ("\U000e0041", "U+E0041 TAG LATIN CAPITAL LETTER A"),
    ("\x07", "U+0007 control character BELL"),
    ("\x1b", "U+001B control character ESCAPE"),
    ("\x7f", "U+007F control character DELETE"),
    ("\x85", "U+0085 control character NEXT LINE"),
])
def test_an_invisible_character_in_a_constant_is_w217_at_the_character(ch, name):
    text = _const(f'["ok.example", "evil.com{ch}"]')
    res, [d] = _w217(text)
    assert d.severity == "warning"
    assert text[d.span.start:d.span.end] == ch
    assert (d.span.line, d.span.col) == (1, 1 + text.index(ch))
    assert name in d.message
    assert "\\u" in d.help
    assert res.policy_set is not None  # a warning: it loads (and `check --strict` fails)


@pytest.mark.parametrize("where", [
    'workflow "w\u200b" {', 'version "1\u200b"', 'system "s\u200b"', 'via "x\u200b"',
])
def test_every_string_of_the_language_is_read(where):
    text = _rule("action.amount > 1.0")
    old = where.replace("\u200b", "")
    assert old in text
    text = text.replace(old, where, 1)
    _, [d] = _w217(text)
    assert text[d.span.start:d.span.end] == "\u200b"


@pytest.mark.parametrize("lit", ['"evil\u200b.com"', "'evil\u200b.com'", '"""evil\u200b.com"""',
                                 'r"evil\u200b.com"', 'b"evil\u200b.com"', '"evil\x85.com"', '"evil\u00ad.com"'])
def test_an_invisible_character_in_a_cel_string_is_w217_at_the_character(lit):
    text = _rule(f"action.domain == {lit}")
    _, [d] = _w217(text)
    ch = next(c for c in lit if c in "\u200b\x85\u00ad")
    assert text[d.span.start:d.span.end] == ch
    assert (d.span.line, d.span.col) == (9, 1 + text.split("\n")[8].index(ch))


def test_several_characters_are_each_reported():
    text = _const('["a\u200bb\u200dc", "d\u00ad"]')
    _, ds = _w217(text)
    assert [text[d.span.start] for d in ds] == ["\u200b", "\u200d", "\u00ad"]


@pytest.mark.parametrize("text", [
    _const('["evil.com\\u200b", "a\\u00ad", "\\u0007", "\\ufeff"]'),
    _rule('action.domain == "evil\\u200b.com" || action.domain == \'\\u00ad\''),
    _const('["caf\u00e9", "\u4e2d\u6587", "a\tb"]'),  # visible text, and a typed tab: nothing to say
    "# a comment with a zero\u200bwidth space says nothing\n" + _const('["x"]'),
])
def test_written_as_an_escape_or_visible_it_is_not_reported(text):
    res, ds = _w217(text)
    assert ds == []
    assert not res.errors, [(d.code, d.message) for d in res.errors]


def test_outside_a_string_it_stays_an_error_not_also_a_warning():
    res, ds = _w217(_rule("action.domain ==\u200b \"evil.com\""))
    assert ds == [] and [d.code for d in res.errors] == ["E101"]
    res, ds = _w217("const blo\u200bcked = [\"x\"]\n" + HEAD + "}\n")
    assert ds == [] and [d.code for d in res.errors] == ["E002"]


@pytest.mark.parametrize("text", [
    "# look \u202e here\n" + _const('["x"]'),
    _const('["evil.com\u2066"]'),
    _rule('action.domain == "evil\u202e.com"'),
])
def test_a_bidi_control_anywhere_is_an_error(text):
    res = load_text(text, "x.policy")
    assert [d.code for d in res.errors] == ["E002"]
    assert "\u202e" in text[res.errors[0].span.start:res.errors[0].span.end] or \
        "\u2066" in text[res.errors[0].span.start:res.errors[0].span.end]


def test_the_hidden_deny_would_never_match():
    """The widening: the constant looks like `evil.com`, and the rule never fires for it."""
    from policy_engine.cel import compile_cel

    res, [d] = _w217(_const('["evil.com\u200b"]'))
    blocked = res.policy_set.files[0].constants[0].value
    assert compile_cel('"evil.com" in blocked')({"blocked": blocked}) is False
    assert d.code == "W217"


def test_check_strict_fails_on_it(tmp_path):
    from click.testing import CliRunner

    from policy_engine.cli import main

    p = tmp_path / "x.policy"
    p.write_text(_const('["evil.com\u200b"]'), encoding="utf-8")
    r = CliRunner().invoke(main, ["check", "--strict", str(p)])
    assert r.exit_code != 0 and "W217" in r.output
    p.write_text(_const('["evil.com\\u200b"]'), encoding="utf-8")
    r = CliRunner().invoke(main, ["check", "--strict", str(p)])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("d", ["policies", "examples"])
def test_the_shipped_policies_have_none(d):
    res = load_paths([ROOT / d])
    assert [x for x in res.diagnostics if x.code == "W217"] == []


def test_the_rendered_warning(snapshot):
    res = load_text(_const('["competitor.example", "evil.com\u200b"]'), "x.policy")
    assert render_all(res.diagnostics, res.sources) == snapshot


def test_the_rendered_warning_in_a_condition(snapshot):
    res = load_text(_rule('action.domain == "evil\u00ad.com"'), "x.policy")
    assert render_all(res.diagnostics, res.sources) == snapshot


# ------------------------------------------------------------------ E002: a lone-surrogate escape

@pytest.mark.parametrize("value, escape", [
    ('"\\ud800"', "\\ud800"), ('"a\\udfffb"', "\\udfff"), ('"\\ud83d"', "\\ud83d"),
    ('"\\ude00\\ud83d"', "\\ude00"),  # the halves the wrong way round: the first is reported
])
def test_a_lone_surrogate_escape_is_e002_at_the_escape(value, escape):
    text = _const(f"[{value}]")
    res = load_text(text, "x.policy")
    assert res.policy_set is None
    d = res.errors[0]
    assert d.code == "E002" and "surrogate" in d.message
    assert text[d.span.start:d.span.end] == escape
    assert d.help


@pytest.mark.parametrize("value, decoded", [
    ('"\\ud83d\\ude00"', "\U0001F600"), ('"\\\\ud800"', "\\ud800"), ('"\\uD83D\\uDE00"', "\U0001F600"),
])
def test_a_surrogate_pair_and_an_escaped_backslash_still_load(value, decoded):
    res = load_text(_const(f"[{value}]"), "x.policy")
    assert not res.errors
    assert res.policy_set.files[0].constants[0].value == (decoded,)


def test_the_rendered_surrogate_error(snapshot):
    res = load_text(_const('["ok", "a\\ud800b"]'), "x.policy")
    assert render_all(res.diagnostics, res.sources) == snapshot


@pytest.mark.parametrize("text, raw", [
    (_rule('action.domain == r"a\u200b"'), True), (_rule('action.domain == br"a\u200b"'), True),
    (_rule('action.domain == b"a\u200b"'), False), (_const('["br\u200b"]'), False),
])
def test_the_hint_says_when_a_raw_string_takes_no_escape(text, raw):
    _, [d] = _w217(text)
    assert ("not raw" in d.help) is raw


def test_the_warnings_of_one_file_are_capped():
    _, ds = _w217(_const("[" + ", ".join(['"a\u200b"'] * 50) + "]"))
    assert len(ds) == 20


def test_the_table_of_default_ignorables_is_the_engines():
    """The language and the engine read one table (the leaf `source`), the same ranges
    `unicodedata` knows as format characters where it has them."""
    import unicodedata

    from policy_engine.engine.authorize import DEFAULT_IGNORABLE
    from policy_engine.language.invisible import DEFAULT_IGNORABLE as LANG

    assert LANG is DEFAULT_IGNORABLE
    assert all(unicodedata.category(chr(c)) == "Cf" for c in (0x00AD, 0x200B, 0x2060, 0xFEFF, 0xE0001))


def test_after_a_backslash_in_a_raw_string_it_is_still_reported():
    """In `r"..."` a backslash escapes nothing: the character after it is typed text."""
    text = _rule('action.domain == r"evil\\\u200b.com"')
    res, [d] = _w217(text)
    assert text[d.span.start:d.span.end] == "\u200b" and not res.errors
