"""A Decision built by the engine's fast lanes sets two of pydantic's four slots
(`__dict__`, `__pydantic_fields_set__`); `__pydantic_extra__` and `__pydantic_private__`
read None until set (`construct.none_until_set`: a Decision has neither extra fields nor
private attributes). Everything pydantic and a caller do with a decision must see no
difference from one pydantic built itself."""

from __future__ import annotations

import copy
import pickle
from datetime import UTC, datetime

import pytest
from engine_support import ROOT
from pydantic import BaseModel, ValidationError

import policy_engine
from policy_engine.engine.accel.templates import DECISION_SLOTS_NONE
from policy_engine.models import Decision

T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
_EXTRA = BaseModel.__dict__["__pydantic_extra__"]
_PRIVATE = BaseModel.__dict__["__pydantic_private__"]


def _unset(d: Decision) -> bool:
    try:
        _EXTRA.__get__(d, Decision)
    except AttributeError:
        return True
    return False


@pytest.fixture(scope="module")
def pairs():
    """(lane decision, reference decision) for each effect of the benchmark's mix."""
    from benchmarks.requests import make_mix

    fast = policy_engine.load(str(ROOT / "benchmarks/policies"))
    slow = policy_engine.load(str(ROOT / "benchmarks/policies"), accelerate=False)
    mix = make_mix(200)
    for _ in range(4):  # the fused gates built, their templates filled
        for a, s, n in mix:
            fast.evaluate(a, s, n)
    out = {}
    for a, s, n in mix:
        d = fast.evaluate(a, s, n)
        if d.effect not in out and _unset(d):
            out[d.effect] = (d, slow.evaluate(a, s, n))
    return out


def test_the_fast_lanes_build_decisions_with_two_slots(pairs):
    assert DECISION_SLOTS_NONE  # this pydantic's layout: the descriptors are installed
    assert set(pairs) == {"allow", "deny", "require_approval", "stop"}
    for d, _ in pairs.values():
        assert d.__pydantic_extra__ is None and d.__pydantic_private__ is None and d.model_extra is None


def test_a_decision_of_two_slots_is_a_decision_in_every_way(pairs):
    for d, ref in pairs.values():
        assert not _unset(ref)  # pydantic's own, every slot set
        assert d == ref and ref == d and hash(d) == hash(ref)
        assert repr(d) == repr(ref) and str(d) == str(ref)
        assert d.model_dump() == ref.model_dump() and d.model_dump(mode="json") == ref.model_dump(mode="json")
        assert d.model_dump_json() == ref.model_dump_json() == d.to_json()
        assert d.__getstate__() == ref.__getstate__()
        for proto in range(2, pickle.HIGHEST_PROTOCOL + 1):
            back = pickle.loads(pickle.dumps(d, proto))
            assert back == ref and not _unset(back) and back.__pydantic_extra__ is None
        for c in (copy.copy(d), copy.deepcopy(d), d.model_copy(), d.model_copy(deep=True)):
            assert c == ref and c.__pydantic_private__ is None
        changed = d.model_copy(update={"reason": "r"})
        assert changed.reason == "r" and changed != ref
        assert Decision.model_validate_json(d.model_dump_json()) == ref
        assert Decision.model_validate(d) == ref
        with pytest.raises(ValidationError):  # frozen, as ever
            d.reason = "x"


def test_the_slots_still_store_and_a_class_read_is_the_slot():
    d = Decision.model_validate_json(
        '{"effect": "allow", "deciding": {"kind": "rule", "name": "r", "effect": "allow"}, "reason": "ok", '
        '"evaluated_at": "2026-03-02T14:30:00Z", "policy_hash": "sha256:00"}')
    assert not _unset(d) and d.__pydantic_extra__ is None
    assert Decision.__pydantic_extra__ is _EXTRA and Decision.__pydantic_private__ is _PRIVATE
    object.__setattr__(d, "__pydantic_private__", None)  # what pydantic's copy and unpickling do
    assert _PRIVATE.__get__(d, Decision) is None
