"""`explain` shows a condition written over several lines on one line (session 27). It
joined the lines by collapsing every run of whitespace, so a CEL `//` comment at the end of
a line swallowed the rest of the condition (`action.a == 1 // the a && action.b == 2`, shown
beside its value `false`, read as if the second operand were commented out), and the spaces
inside a string literal were collapsed (`"a  b"` shown as `"a b"`, another value)."""

from __future__ import annotations

from engine_support import NOW, engine_from_texts

from policy_engine.explain import explain

POLICY = '''roles [ops]
workflow "w" {
  version "1"
  owners {
    business "b"
    technical "t"
  }
  default deny
  action pay {
    system "s"
    reversible full via "m" within 60s
    allow both when `action.a == 1 // the a
        && action.b == "x  y"`
  }
}
'''


def test_a_comment_is_dropped_and_a_strings_spaces_kept_when_a_condition_is_shown_on_one_line():
    eng = engine_from_texts({"p.policy": POLICY})
    out = explain(eng.evaluate({"workflow": "w", "type": "pay", "a": 1, "b": "x"}, now=NOW))
    shown = [ln.strip() for ln in out.splitlines() if "action.a == 1" in ln]
    assert shown == ['`action.a == 1 && action.b == "x  y"`'], out
