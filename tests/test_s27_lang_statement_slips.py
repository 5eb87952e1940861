"""Session 27 audit of the policy diagnostics: a misspelt statement keyword followed by a word
(`reversable full via "m"`, `prerequisit not_opened `...``) reads as a rule, `<effect> <name>`,
so the error was at the third word, `unexpected `via`, expected `by` or `when``, with no
hint: the author was told to write a rule. It is now `unknown statement` at the misspelt word,
with a "did you mean" (as a single misspelt word, `sytem "helpdesk"`, already was). A rule with
a real effect keeps its message."""

from __future__ import annotations

import pytest

from policy_engine.language.loader import load_text

POLICY = """\
roles [reviewer]

workflow "w" {
  version "1"
  owners {
    business "b"
    technical "t"
  }
  action send {
    system "s"
    %s
    require_approval by 1 reviewer when `true`
  }
}
"""


@pytest.mark.parametrize(
    ("line", "word", "hint"),
    [
        ('reversable full via "m" within 30d', "reversable", "did you mean `reversible`?"),
        ('reversable partial via "m"', "reversable", "did you mean `reversible`?"),
        ("prerequisit not_opened `!original.opened`", "prerequisit", "did you mean `prerequisite`?"),
        ('sytem "helpdesk"', "sytem", "did you mean `system`?"),
    ],
)
def test_a_misspelt_statement_is_named_where_it_is_written(line, word, hint):
    r = load_text(POLICY % line, "p.policy")
    (d,) = r.errors
    assert (d.code, d.message, d.help) == ("E001", f"unknown statement `{word}`", hint)
    assert (d.span.line, d.span.col, d.span.end_col) == (11, 5, 5 + len(word))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("deny big `action.amount > 1.0`", "unexpected condition `action.amount > 1.0`"),
        ("deny big via `true`", "unexpected `via`"),
        ("allow small wen `true`", "unexpected `wen`"),
    ],
)
def test_a_rule_keeps_its_own_message(line, message):
    r = load_text(POLICY % line, "p.policy")
    (d,) = r.errors
    assert d.message.startswith(message), d
