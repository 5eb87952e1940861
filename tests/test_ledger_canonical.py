"""The ledger's canonical JSON is exactly RFC 8785: the fast path (the C JSON encoder)
against the ``rfc8785`` package on arbitrary JSON values, hostile strings, every kind of
float, and astral object keys (RFC 8785 sorts keys by UTF-16 code units)."""

from __future__ import annotations

import math

import pytest
import rfc8785
from depth import examples
from hypothesis import example, given, settings
from hypothesis import strategies as st

from policy_engine.ledger import canonical
from policy_engine.ledger.canonical import canonical_json
from policy_engine.ledger.errors import InvalidEntry

# every code point class that matters: controls, DEL, quotes, backslash, line/paragraph
# separators, BOM, the surrogate-adjacent private-use block, astral characters
_hostile = st.sampled_from(["\x00", "\x1f", "\x7f", '"', "\\", "/", "\u2028", "\u2029", "\ufeff", "\ue000", "\uffff",
                            "\U00010000", "\U0001f600", "\U0010ffff", "é", "\b\f\n\r\t"])
texts = st.lists(st.one_of(st.characters(blacklist_categories=("Cs",)), _hostile), max_size=8).map("".join)
floats = st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                   st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e21, 1e20, 1e16, 1e15, 1e-6, 1e-7, 1e-5, 0.1, 5e-324,
                                    1.7976931348623157e308, 2.0**53, 120.5, 123456789012345.6]))
ints = st.integers(min_value=-(2**53 - 1), max_value=2**53 - 1)
scalars = st.one_of(st.none(), st.booleans(), ints, floats, texts)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                         st.dictionaries(texts, inner, max_size=5)), max_leaves=30)


@settings(max_examples=examples(400), deadline=None)
@given(values)
@example({"\U0001f600": 1, "\ufb01": 2, "\ue000": 3})  # astral key sorts before U+E000.. in UTF-16
@example({"a": [1.0, -0.0, 1e-7, 1e20, 1e21]})
def test_canonical_json_is_byte_identical_to_rfc8785(value):
    assert canonical_json(value) == rfc8785.dumps(value)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(texts, scalars, max_size=6))
def test_the_fast_path_is_taken_only_when_it_is_exact(value):
    """When _check says fast, json.dumps alone is RFC 8785 (the fallback is not hiding a difference)."""
    if canonical._check(value, "body"):
        assert canonical._FAST_DUMPS(value).encode("utf-8") == rfc8785.dumps(value)


def test_astral_keys_and_ecmascript_floats_take_the_fallback():
    assert not canonical._check({"\U0001f600": 1}, "body")
    for f in (1.0, -0.0, 1e-7, 1e20):
        assert not canonical._check({"x": f}, "body")
    assert canonical._check({"x": 120.5, "é": ["\u2028", None, True, 2**53 - 1]}, "body")


@pytest.mark.parametrize("bad", [{"x": math.nan}, {"x": math.inf}, {"x": 2**53}, {1: 2}, {"x": b"a"},
                                 {"x": "\ud800"}, {"\udfff": 1}, {"x": {1, 2}}])
def test_non_interoperable_values_are_refused_on_both_paths(bad):
    with pytest.raises(InvalidEntry):
        canonical_json(bad)


@pytest.mark.parametrize("v", [10.0, -0.0, 0.0, 1.0, -3.0, 2.0**53 - 1, -(2.0**53 - 1), 2.0**53, 1e16, 1e20, 1e21,
                               1e22, 0.5, 1e-7, 123.456, -2.5e-300])
def test_integral_floats_are_written_as_rfc8785_writes_them(v):
    """RFC 8785 writes an integral number below 10^21 as its integer digits (`10.0` as `10`,
    `-0.0` as `0`): such a float goes to the C encoder as the int; anything else as before."""
    for value in ({"amount": v}, [v, {"x": [v, "s"]}], {"a": {"b": [1, v, 2.5]}, "c": None}):
        assert canonical_json(value) == rfc8785.dumps(value), value


def test_a_body_with_integral_floats_takes_the_fast_encoder_and_is_left_as_it_was(monkeypatch):
    def slow(value):
        raise AssertionError("the rfc8785 package was used")

    monkeypatch.setattr(canonical.rfc8785, "dumps", slow)
    value = {"amount": 10.0, "items": [1.0, 2.5, {"n": -0.0}], "s": "x"}
    assert canonical_json(value) == b'{"amount":10,"items":[1,2.5,{"n":0}],"s":"x"}'
    assert value == {"amount": 10.0, "items": [1.0, 2.5, {"n": -0.0}], "s": "x"}
    assert type(value["amount"]) is float and type(value["items"][0]) is float  # the caller's value untouched
