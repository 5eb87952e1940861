"""The action digest's canonical JSON by orjson (`engine.digests.flat_canonical`) is the C
encoder's, byte for byte, wherever it is used: an approval names the digest, so one byte of
difference would make the engine refuse (or, worse, accept) the wrong approval. Structural:
every code point, and hypothesis-generated flat objects of every value type, including the
ones orjson must refuse (floats are never given to it; big ints and lone surrogates make it
raise, and the C encoder decides)."""

from __future__ import annotations

import hashlib
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy_engine.engine import digests
from policy_engine.engine.digests import PendingDigest, action_digest, deferred_digest, flat_canonical


def stdlib(data) -> bytes:
    return digests._canonical(data).encode("utf-8", "surrogatepass")


def reference_digest(data) -> str | None:
    try:
        return "sha256:" + hashlib.sha256(stdlib(data)).hexdigest()
    except (TypeError, ValueError, RecursionError):
        return None


def test_orjson_is_there():
    assert digests._orjson_dumps is not None  # a dependency: the fast path is what runs


def test_every_code_point_as_key_and_value():
    cps = [cp for cp in range(sys.maxunicode + 1) if not 0xD800 <= cp <= 0xDFFF]
    for i in range(0, len(cps), 512):  # 512 code points per object: keys and values
        chunk = "".join(map(chr, cps[i:i + 512]))
        data = {chr(cp): chr(cp) + "x" for cp in cps[i:i + 512]}
        data["all"] = chunk
        blob = flat_canonical(data)
        assert blob is not None
        assert blob == stdlib(data)


@pytest.mark.parametrize("value", [
    1.5, 0.00001, 1e16, float("nan"), float("inf"),  # floats: never orjson's
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


_TEXT = st.one_of(st.text(max_size=8), st.sampled_from(["\ud800", "\x00\"\\/\u2028\u2029\x7f", "é漢🙂"]))
_VALUE = st.one_of(st.none(), st.booleans(), st.text(max_size=12), _TEXT,
                   st.integers(min_value=-(2**70), max_value=2**70),
                   st.sampled_from([2**63 - 1, -(2**63), 2**64 - 1, 2**64, -(2**63) - 1, 0, -1]),
                   st.floats(allow_nan=True, allow_infinity=True))


@settings(max_examples=1500, deadline=None)
@given(st.dictionaries(_TEXT, _VALUE, max_size=10))
def test_flat_objects_are_written_byte_for_byte(data):
    blob = flat_canonical(data)
    want = reference_digest(data)
    if blob is not None:
        assert blob == stdlib(data)
        assert not any(type(v) is float for v in data.values())
    assert action_digest(data) == want
    d = deferred_digest(data)
    frozen = dict(data)
    data["late"] = "a change after the decision"  # the frozen copy does not move
    assert (d.resolve() if isinstance(d, PendingDigest) else d) == reference_digest(frozen)
