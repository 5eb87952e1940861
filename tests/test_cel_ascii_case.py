"""`lowerAscii` / `upperAscii` change the ASCII letters alone, for any string, in time that
does not grow by a Python loop per character (a field of 4 million characters, the input
limit, took 0.17 s per call and condition: an agent's input could make each gate call cost
seconds; differential fuzzer, 2026-11-27)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from policy_engine.cel import compile_cel
from policy_engine.cel.strings import _lower_ascii, _upper_ascii


def _lower_by_definition(s: str) -> str:
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in s)


def _upper_by_definition(s: str) -> str:
    return "".join(chr(ord(c) - 32) if "a" <= c <= "z" else c for c in s)


# every code point, lone surrogates and astral ones included, and letters whose Unicode
# case mapping differs from ASCII's (ß, İ, ǅ, the ligature ﬀ, the Kelvin sign)
_TEXT = st.text(alphabet=st.one_of(st.characters(), st.sampled_from("AZazßİǅﬀ\u212aΩ\ud800\udc00\U0001F600")),
                max_size=40)


@settings(max_examples=500, deadline=None)
@given(_TEXT)
def test_ascii_case_is_its_definition(s: str) -> None:
    assert _lower_ascii(s) == _lower_by_definition(s)
    assert _upper_ascii(s) == _upper_by_definition(s)


def test_unicode_letters_keep_their_case() -> None:
    assert _lower_ascii("ÄÖÜ ABC İ \u212a") == "ÄÖÜ abc İ \u212a"  # (the Kelvin sign)
    assert _upper_ascii("ßäöü abc ﬀ") == "ßäöü ABC ﬀ"
    assert _lower_ascii("\ud800\udc00A") == "\ud800\udc00a"  # two lone surrogates stay two


def test_in_a_condition() -> None:
    e = compile_cel('action.s.lowerAscii() == "héllo wörld" && action.s.upperAscii() == "HéLLO WöRLD"')
    assert e({"action": {"s": "HéLLo WöRLD"}}) is True


def test_a_long_non_ascii_string_is_not_walked_in_python() -> None:
    """Structural (no timing): the non-ASCII path maps the string's bytes in C; a string of
    4 million characters is converted by a handful of C calls, so the count of Python-level
    calls made while converting it is independent of its length."""
    import sys

    calls = []

    def count(frame, event, arg):  # noqa: ARG001
        if event == "call":
            calls.append(frame.f_code.co_name)

    s = "Hé " * 1_333_333
    sys.setprofile(count)
    try:
        low = _lower_ascii(s)
    finally:
        sys.setprofile(None)
    assert low == s.replace("H", "h")
    assert len(calls) < 10, calls[:20]
