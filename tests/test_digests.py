"""The action digest's canonical JSON by orjson (`engine.digests.flat_canonical`,
`exact_canonical`) is the C encoder's, byte for byte, wherever it is used: an approval names
the digest, so one byte of difference would make the engine refuse (or, worse, accept) the
wrong approval. Structural: every code point, floats of every binary exponent, and
hypothesis-generated flat and nested objects of every value type, including the ones orjson
must not write (a float it writes otherwise leaves a mark in its text; NaN and Infinity
become `null`; big ints, lone surrogates, other types make it raise: the C encoder decides)."""

from __future__ import annotations

import enum
import hashlib
import json
import marshal
import math
import random
import struct
import sys
import uuid
from datetime import UTC, datetime

import pytest
from depth import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from policy_engine.engine import digests
from policy_engine.engine.digests import (
    PendingDigest,
    action_digest,
    deferred_digest,
    deferred_digest_nested,
    exact_canonical,
    flat_canonical,
)


def stdlib(data) -> bytes:
    return digests._canonical(data).encode("utf-8", "surrogatepass")


def reference_digest(data) -> str | None:
    try:
        return "sha256:" + hashlib.sha256(stdlib(data)).hexdigest()
    except (TypeError, ValueError, RecursionError):
        return None


def test_orjson_is_there():
    assert digests._orjson_dumps is not None  # a dependency: the fast path is what runs
    assert digests._ORJSON_FLOATS  # this orjson writes floats as Python does (but for the marked ones)


def test_an_orjson_writing_floats_otherwise_is_never_given_one(monkeypatch):
    real = digests._orjson_dumps

    def odd(v, option=None):  # an orjson that writes 1e+16 as 1e16
        blob = real(v) if option is None else real(v, option=option)
        return blob.replace(b"e+", b"e")

    monkeypatch.setattr(digests, "_orjson_dumps", odd)
    assert not digests._orjson_floats_agree()
    monkeypatch.setattr(digests, "_ORJSON_FLOATS", False)
    data = {"id": "a", "v": 1e16, "w": [1e16]}
    assert flat_canonical({"id": "a", "v": 1e16}) is None
    assert exact_canonical(data) == stdlib(data)


def test_every_code_point_as_key_and_value():
    cps = [cp for cp in range(sys.maxunicode + 1) if not 0xD800 <= cp <= 0xDFFF]
    for i in range(0, len(cps), 512):  # 512 code points per object: keys and values
        chunk = "".join(map(chr, cps[i:i + 512]))
        data = {chr(cp): chr(cp) + "x" for cp in cps[i:i + 512]}
        data["all"] = chunk
        blob = flat_canonical(data)
        assert blob is not None
        assert blob == stdlib(data)


def _floats_of_every_exponent(per: int = 48):
    rnd = random.Random(16)
    for e in range(2047):
        for k in range(per):
            m = (0, 1, (1 << 52) - 1, 1 << 51)[k] if k < 4 else rnd.getrandbits(52)
            x = struct.unpack("<d", struct.pack("<Q", (rnd.getrandbits(1) << 63) | (e << 52) | m))[0]
            if math.isfinite(x):
                yield x
    for i in range(-323, 308):  # decimal powers and their neighbours
        for s in (1.0, 1.5, 2.5, 9.999999999999999):
            x = s * float(f"1e{i}")
            if math.isfinite(x):
                yield x
                yield math.nextafter(x, math.inf)
                yield math.nextafter(x, -math.inf)


def test_every_float_orjson_writes_otherwise_is_marked():
    n = marked = 0
    for x in _floats_of_every_exponent():
        n += 1
        o = digests._orjson_dumps(x)
        if o != json.dumps(x).encode():  # only ever 0 < |x| < 1e-4, and then marked
            assert 0 < abs(x) < 1e-4 and (b"e-" in o or b"0.0000" in o), (x, o)
            marked += 1
        data = {"v": x, "w": [x, -x]}
        blob = digests._orjson_marked(data)
        assert blob is None or blob == stdlib(data)
        assert exact_canonical(data) == stdlib(data)
    assert n > 100_000 and marked > 0


@pytest.mark.parametrize("value", [
    0.00001, 2.5e-07, -1e-05, float("nan"), float("inf"), float("-inf"),  # floats orjson writes otherwise: marked
    2**64, -(2**63) - 1, 10**40,  # outside orjson's ints: it raises
    "\ud800", "a\udfffb",  # lone surrogates: it raises
    [1, 2], {"a": 1}, (1,), b"x",  # not flat
])
def test_what_orjson_must_not_write_is_written_by_the_c_encoder(value):
    data = {"id": "a1", "v": value}
    assert flat_canonical(data) is None
    assert action_digest(data) == reference_digest(data)
    d = deferred_digest(dict(data))
    assert (d.resolve() if isinstance(d, PendingDigest) else d) == reference_digest(data)


def test_subclasses_and_other_keys_are_not_flat():
    class Text(str):
        pass

    class Obj(dict):
        def items(self):  # what the C encoder reads when it sorts
            return [("z", 1)]

    for data in ({"id": Text("x")}, {Text("k"): 1}, {1: "a"}, {None: 1}, Obj(a=1)):
        assert flat_canonical(data) is None
        assert action_digest(data) == reference_digest(data)


class Colour(enum.Enum):
    RED = "red"


class Level(str, enum.Enum):  # noqa: UP042 - the str-mixin enum itself (orjson writes it as a str)
    HIGH = "high"


class Count(int):
    pass


@pytest.mark.parametrize("inner", [
    uuid.UUID(int=7), Colour.RED, Level.HIGH, Count(3), datetime(2026, 1, 1, tzinfo=UTC),
    b"x", {1, 2}, 1j, float("nan"), 1e-05, 2**70, "\ud800", {1: "int key"}, {"k": (1, 2)},
])
def test_nested_values_orjson_would_write_and_json_refuses_give_the_reference_digest(inner):
    # orjson writes a UUID, an enum, a datetime natively; the canonical JSON refuses them
    data = {"id": "a1", "type": "t", "items": [{"v": inner}], "meta": {"x": inner}}
    assert action_digest(data) == reference_digest(data)
    assert digests.digest_now(data) == digests.digest_now_nested(data) == reference_digest(data)
    d = deferred_digest(data)
    assert (d.resolve() if isinstance(d, PendingDigest) else d) == reference_digest(data)
    d = deferred_digest_nested(data)
    assert (d.resolve() if isinstance(d, PendingDigest) else d) == reference_digest(data)


def test_a_typical_nested_action_is_written_by_orjson():
    data = {"id": "a-1", "type": "send_customer_reply", "workflow": "support", "body": "Hello, é漢🙂 \n \"x\"",
            "cc": ["a@x.example", "b@y.example"], "claims": [{"kind": "promise", "sourced": True}],
            "recipient": {"domain": "x.example", "verified": False}, "promised_amount": 12.5,
            "credits": [25.0, 0.5, 1e16, 123.456], "n": None}
    # (a None beside a float: the marshal image shows no non-finite float, so `null` is a None)
    assert digests._orjson_marked(data) == stdlib(data)
    assert PendingDigest(marshal.dumps(data, 2)).resolve() == reference_digest(data)


def _nans():
    yield from (float("nan"), float("inf"), float("-inf"), -float("nan"))
    for payload in (1, 0x7FFFF, 1 << 51, (1 << 52) - 1):  # NaNs with other payloads, either sign
        for sign in (0, 1):
            yield struct.unpack("<d", struct.pack("<Q", (sign << 63) | (0x7FF << 52) | payload))[0]


@pytest.mark.parametrize("where", ["top", "list", "nested"])
def test_a_non_finite_float_beside_a_none_is_never_written_by_orjson(where):
    for x in _nans():
        data = {"a": None, "b": x} if where == "top" else \
            {"a": None, "b": ["x", 1, x]} if where == "list" else {"a": [{"n": None}], "b": {"c": {"d": [0.5, x]}}}
        assert digests._orjson_marked(data) is None
        assert digests._NONFINITE.search(marshal.dumps(data, 2))
        with pytest.raises(ValueError):
            exact_canonical(data)
        assert action_digest(data) is None and reference_digest(data) is None
        assert PendingDigest(marshal.dumps(data, 2)).resolve() is None


def test_plan_hash_is_the_c_encoders_hash_of_every_plan():
    from engine_support import NOW, load_engine, request

    eng = load_engine()
    for scenario in ("reviewer_error", "customer_request", "incident"):
        plan = eng.classify_rollback(request(scenario), now=NOW)
        data = plan.model_dump(mode="json")
        for k in ("plan_hash", "evaluated_at"):
            data.pop(k)
        if not data.get("duties"):
            data.pop("duties", None)
        assert b"null" in digests._orjson_marked(data)  # (plans hold nulls: orjson writes them)
        assert digests.plan_hash(plan) == plan.plan_hash == reference_digest(digests._without_locations(data))
        assert digests.legacy_plan_hash(plan) == reference_digest(data)  # (the form before session 22)


_TEXT = st.one_of(st.text(max_size=8), st.sampled_from(["\ud800", "\x00\"\\/\u2028\u2029\x7f", "é漢🙂"]))
_VALUE = st.one_of(st.none(), st.booleans(), st.text(max_size=12), _TEXT,
                   st.integers(min_value=-(2**70), max_value=2**70),
                   st.sampled_from([2**63 - 1, -(2**63), 2**64 - 1, 2**64, -(2**63) - 1, 0, -1]),
                   st.floats(allow_nan=True, allow_infinity=True))


@settings(max_examples=examples(400), deadline=None)
@given(st.dictionaries(_TEXT, _VALUE, max_size=10))
def test_flat_objects_are_written_byte_for_byte(data):
    blob = flat_canonical(data)
    want = reference_digest(data)
    if blob is not None:
        assert blob == stdlib(data)
    assert action_digest(data) == want
    assert digests.digest_now(data) == want and digests.digest_now_nested(data) == want
    d = deferred_digest(data)
    frozen = dict(data)
    data["late"] = "a change after the decision"  # the frozen copy does not move
    assert (d.resolve() if isinstance(d, PendingDigest) else d) == reference_digest(frozen)


_LEAF = st.one_of(st.none(), st.booleans(), _TEXT, st.integers(min_value=-(2**70), max_value=2**70),
                  st.floats(allow_nan=True, allow_infinity=True),
                  st.sampled_from([1e-05, 9.99e-05, 0.0001, 1e16, 1e-07, 5e-324, -0.0, 2**63 - 1, 2**64]))
_NESTED = st.recursive(_LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.tuples(inner, inner), st.dictionaries(_TEXT, inner, max_size=4)), max_leaves=16)


@settings(max_examples=examples(200), deadline=None)
@given(st.dictionaries(_TEXT, _NESTED, max_size=6))
def test_nested_objects_are_written_byte_for_byte(data):
    want = reference_digest(data)
    try:
        assert exact_canonical(data) == stdlib(data)
    except (TypeError, ValueError, RecursionError):
        assert want is None
    assert action_digest(data) == want
    assert digests.digest_now(data) == want and digests.digest_now_nested(data) == want
    d = deferred_digest_nested(data)
    image = marshal.dumps(data, 2)
    data["late"] = ["a change after the decision"]  # the frozen image does not move
    assert (d.resolve() if isinstance(d, PendingDigest) else d) == want
    assert marshal.dumps(marshal.loads(image), 2) == image


@settings(max_examples=examples(150), deadline=None)
@given(st.dictionaries(_TEXT, _NESTED, max_size=6))
def test_plan_hash_of_any_mapping_is_the_c_encoders(data):
    ref = {k: v for k, v in data.items() if k not in ("plan_hash", "evaluated_at")}
    if not ref.get("duties"):
        ref.pop("duties", None)
    want = reference_digest(ref)
    try:
        got = digests.plan_hash(data)
    except (TypeError, ValueError, RecursionError):
        assert want is None
    else:
        assert got == want
