"""`strings.quote` escapes a string as its definition does, in time that does not grow by
a Python loop per character: the loop it replaced cost 0.2 s per call and condition for a
field of 4 million characters (the input limit), so an agent's input could make each gate
call cost seconds (the ninth session's note; fixed in the tenth)."""

from __future__ import annotations

import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from policy_engine.cel import compile_cel
from policy_engine.cel.strings import _quote

_ESC = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v", "\\": "\\\\",
        '"': '\\"'}


def _quote_by_definition(s: str) -> str:
    """The definition, character by character: the escapes, a lone surrogate as U+FFFD."""
    return '"' + "".join(_ESC.get(c, "\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c) for c in s) + '"'


# every code point, with the escaped characters, lone surrogates and astral ones often
_TEXT = st.text(alphabet=st.one_of(st.characters(), st.sampled_from('\a\b\f\n\r\t\v\\"\'é\ud800\udfff\U0001F600')),
                max_size=40)


@settings(max_examples=600, deadline=None)
@given(_TEXT)
def test_quote_is_its_definition(s: str) -> None:
    assert _quote(s) == _quote_by_definition(s)


def test_escapes_are_not_escaped_twice() -> None:
    assert _quote('\\n"') == '"\\\\n\\""'  # a backslash, then an n: not a newline
    assert _quote("\n\\") == '"\\n\\\\"'
    assert _quote("\ud800x\udc00") == '"\ufffdx\ufffd"'  # lone surrogates, not a pair


def test_in_a_condition() -> None:
    e = compile_cel('strings.quote(action.s) == "\\"a\\\\nb\\""')
    assert e({"action": {"s": "a\nb"}}) is True


def test_a_long_string_is_not_walked_in_python() -> None:
    """Structural (no timing): a string of 4 million characters, every kind of character
    in it, is quoted by a handful of calls, Python's or C's: their count does not grow
    with its length (the loop made two C calls per character)."""
    calls = []

    def count(frame, event, arg):  # noqa: ARG001
        if event in ("call", "c_call"):
            calls.append(event)

    s = 'ab\n"é\ud800\\\U0001F600' * 500_000
    sys.setprofile(count)
    try:
        out = _quote(s)
    finally:
        sys.setprofile(None)
    assert out == _quote_by_definition(s)
    assert len(calls) < 40, len(calls)
