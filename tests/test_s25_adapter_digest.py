"""The adapters' call digest (`integrations.common._digest`) tells apart arguments that
differ only in an int longer than Python will print (json.dumps refuses it, so the digest is
of the arguments' text): two such calls are two calls, not one recorded call answered twice."""

from __future__ import annotations

import sys

from policy_engine.integrations.common import _digest


def test_two_huge_ints_are_two_digests():
    limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 4300
    a = 10 ** (limit + 10)
    b = a + 1
    assert _digest({"n": a}) != _digest({"n": b})
    assert _digest({"n": a}) == _digest({"n": a})  # stable: a retry finds its call


def test_json_values_keep_their_digest():
    # (the JSON path is unchanged: a recorded call's key is found again after the upgrade)
    import hashlib
    import json

    x = {"b": [1, 2.5, "x"], "a": None}
    assert _digest(x) == hashlib.sha256(json.dumps(x, sort_keys=True, separators=(",", ":"),
                                                   default=str).encode()).hexdigest()
