"""A require_approval decision's frozen copy (issue 16, goal 1).

The decision carries the digest of the action as it was decided (`Decision.action_digest`,
computed on first read from a frozen copy: `engine.digests.PendingDigest`, or the copy itself
in `action_digest`, `construct.resolve_digest`). A fused gate
function has proved the shape of every field its type reads; when the action holds those
fields, its workflow and type, and the other fields its type's actions were seen with
(each a scalar), it freezes the action by a copy with its containers copied again
(`shapes.frozen_copy`, `templates._frozen_lines`) instead of looking at every value's type
or making a marshal image (`digests.deferred_digest`). These tests hold that the copy is
the action as decided: whatever the caller does to its dict afterwards, at any depth, the
digest is the one the reference gate computes, and that the copy is what the gate uses.
"""

from __future__ import annotations

import copy
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from engine_support import engine_from_texts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import policy_engine
from policy_engine.engine import action_digest
from policy_engine.engine.accel import templates
from policy_engine.engine.accel.shapes import _LIST_STR, MISSING, copy_plain, frozen_copy, unread

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from depth import examples  # noqa: E402

from benchmarks.requests import make_mix  # noqa: E402

BENCH = ROOT / "benchmarks" / "policies"
MIX = make_mix(200)
NOW = datetime(2026, 7, 2, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def engines():
    return policy_engine.load(str(BENCH)), policy_engine.load(str(BENCH), accelerate=False)


def _raw(d) -> dict:
    return BaseModel.__dict__["__dict__"].__get__(d)


def _mutate(v):
    """Change every container of `v` in place, at every depth (scalars replaced)."""
    if type(v) is dict:
        for k in list(v):
            if type(v[k]) in (dict, list):
                _mutate(v[k])
            else:
                v[k] = "changed"
        v["added"] = [1]
    elif type(v) is list:
        for i, x in enumerate(v):
            if type(x) in (dict, list):
                _mutate(x)
            else:
                v[i] = "changed"
        v.append({"added": True})


def _containers(v, out: list) -> list:
    if type(v) in (dict, list):
        out.append(v)
        for x in v.values() if type(v) is dict else v:
            _containers(x, out)
    return out


def _approval_requests(engine):
    return [(a, s, n) for a, s, n in MIX if engine.evaluate(copy.deepcopy(a), s, n).effect == "require_approval"]


def test_every_require_approval_decision_of_the_mix_is_frozen_by_its_copy(engines):
    fast, ref = engines
    reqs = _approval_requests(fast)
    assert len(reqs) > 50
    for a, s, n in reqs:
        for _ in range(4):  # the type's fused gate built, its templates kept
            fast.evaluate(copy.deepcopy(a), s, n)
        action = copy.deepcopy(a)
        d = fast.evaluate(action, s, n)
        # pending: the frozen copy itself, stored as it is (no object around it)
        snap = _raw(d)["action_digest"]
        # the copy: a dict equal to the action, sharing none of its containers
        assert type(snap) is dict and snap == a
        mine = {id(c) for c in _containers(action, [])}
        assert not any(id(c) in mine for c in _containers(snap, []))
        _mutate(action)  # the caller changes everything, at every depth
        assert d.action_digest == action_digest(a) == ref.evaluate(copy.deepcopy(a), s, n).action_digest
        # the decision's JSON in one call: the digest computed at once, of the proven action,
        # by the fused function itself (it returns the fields, it does not raise)
        assert fast.evaluate_json(copy.deepcopy(a), s, n) == ref.evaluate(copy.deepcopy(a), s, n).model_dump_json()
        if s is None:
            fz = fast.accelerator.quick[a["type"]]
            fields, _ = fz.fn(copy.deepcopy(a), n, fz.running, fz.policy, False, True)
            assert fields["action_digest"] == action_digest(a)


def test_the_copy_replaces_the_generic_freeze(engines, monkeypatch):
    """Structural: with the frozen copy, the fused gate functions of the mix's types call
    neither generic freeze for a require_approval decision, nor the generic digest of a
    nested action at once (`evaluate_json`); with it off, they do."""
    calls: list = []

    def counting(f, name):
        def g(action):
            calls.append(name)
            return f(action)
        return g

    for name in ("deferred_digest", "deferred_digest_nested", "digest_now", "digest_now_nested"):
        monkeypatch.setattr(templates, name, counting(getattr(templates, name), name))
    reqs = _approval_requests(engines[1])
    for on in (True, False):
        monkeypatch.setattr(templates, "FROZEN_COPY", on)
        engine = policy_engine.load(str(BENCH))
        for _ in range(4):
            for a, s, n in reqs:
                engine.evaluate(a, s, n)
        calls.clear()
        for a, s, n in reqs:
            assert engine.evaluate(a, s, n).action_digest == action_digest(a)
            assert f'"action_digest":"{action_digest(a)}"' in engine.evaluate_json(a, s, n)
        if on:  # (a flat action's digest at once: digest_now, the faster there)
            assert set(calls) == {"digest_now"} and len(calls) < len(reqs) / 2
        else:
            assert len(calls) == 2 * len(reqs)


POLICY = """roles [reviewer]
workflow "w" {
  version "1"
  owners { business "b" technical "t" }
  default deny
  action pay {
    system "s"
    require_approval big by 1 reviewer when `action.amount > 10`
    require_approval listed by 1 reviewer when `action.items.exists(i, i.kind == "x")`
    require_approval gold by 1 reviewer when `action.meta.tier == "gold"`
    require_approval vip by 1 reviewer when `"vip" in action.tags`
    require_approval flagged by 1 reviewer when `has(action.flag) && action.flag == true`
    deny blocked when `action.note == "block"`
    allow usual when `action.note == "ok"`
  }
}
"""


class Key(str):
    """A key of a str subclass: the gate reads the field by it; the digest writes its text."""


_TEXT = st.one_of(st.text(max_size=6), st.sampled_from(["x", "vip", "gold", "\ud800", "block"]))
_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-(2**66), 2**66), st.floats(), _TEXT)  # NaN: no digest
_JSON = st.recursive(_SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(_TEXT, inner, max_size=3)), max_leaves=10)
_ITEM = st.one_of(st.fixed_dictionaries({"kind": st.sampled_from(["x", "y"])}, optional={"n": st.integers()}), _JSON)
_FIELDS = {
    "amount": st.one_of(st.integers(0, 20), st.floats(0, 20), _JSON),
    "items": st.one_of(st.lists(_ITEM, max_size=3), _JSON),
    "meta": st.one_of(st.fixed_dictionaries({"tier": st.sampled_from(["gold", "silver"])}), _JSON),
    "tags": st.one_of(st.lists(st.sampled_from(["vip", "a", "b"]), max_size=3), _JSON),
    "note": st.one_of(st.sampled_from(["ok", "block"]), _JSON),
    "flag": st.one_of(st.booleans(), _JSON),
    "ref": _JSON,  # read by no condition
    "order_id": _SCALAR,  # likewise
}


def _typical(draw) -> dict:
    return {"workflow": "w", "type": "pay", "id": draw(st.sampled_from(["a1", "a2"])),
            "amount": draw(st.integers(0, 20)), "items": [{"kind": draw(st.sampled_from(["x", "y"]))}],
            "meta": {"tier": draw(st.sampled_from(["gold", "silver"]))}, "tags": ["a", "vip"][:draw(st.integers(0, 2))],
            "note": "ok", "ref": draw(_SCALAR), "order_id": "o-1", "flag": draw(st.booleans())}


@st.composite
def _action(draw):
    """The usual action of the type, with a few changes: a field absent, of another type
    or shape, a key of a str subclass, a field nobody declared."""
    a = _typical(draw)
    for _ in range(draw(st.integers(0, 3))):
        k = draw(st.sampled_from(sorted(_FIELDS)))
        change = draw(st.integers(0, 3))
        if change == 0:
            a.pop(k, None)
        elif change == 1:
            a[k] = draw(_FIELDS[k])
        elif change == 2 and k in a:
            a[Key(k)] = a.pop(k)
        else:
            a["zz_" + k] = draw(_JSON)
    return a


_usual = st.composite(_typical)
_REF = engine_from_texts({"p.policy": POLICY}, accelerate=False)


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_usual(), min_size=4, max_size=4),
       st.lists(_action(), min_size=1, max_size=6))
def test_random_actions_are_decided_and_frozen_as_the_reference_does(warm, actions):
    """On a new engine, the type's lane built for its usual actions, then a sequence of
    actions (each may widen the lane and build it again): each decision equals the
    reference gate's on the action as it was, after the caller changed its dict at every
    depth."""
    fast = engine_from_texts({"p.policy": POLICY})
    for a in warm:
        fast.evaluate(a, None, NOW)
    for action in warm[:1] + actions:
        before = copy.deepcopy(action)
        d = fast.evaluate(action, None, NOW)
        _mutate(action)
        want = _REF.evaluate(copy.deepcopy(before), None, NOW)
        assert d.model_dump() == want.model_dump()
        if d.effect == "require_approval":
            assert d.action_digest == action_digest(before)
        try:
            text = want.model_dump_json()
        except ValueError:  # (a lone surrogate: pydantic refuses it; so must evaluate_json)
            with pytest.raises(ValueError):
                fast.evaluate_json(copy.deepcopy(before), None, NOW)
        else:
            assert fast.evaluate_json(copy.deepcopy(before), None, NOW) == text


@settings(max_examples=300, deadline=None)
@given(_JSON)
def test_copy_plain_is_a_deep_copy(v):
    c = copy_plain(v)
    assert c == v or v != v  # (a NaN is not equal to itself)
    assert type(c) is type(v)
    mine = {id(x) for x in _containers(v, [])}
    assert not any(id(x) in mine for x in _containers(c, []))


def test_frozen_copy_plans():
    skip = (("workflow", "w"), ("type", "t"))
    flat = ("dict", (("k", str),))
    plan = frozen_copy(("a", "b", "c", "d", "e", "workflow"), skip,
                       {"a": frozenset({str}), "b": frozenset({_LIST_STR}), "c": frozenset({flat}),
                        "d": frozenset({list}), "e": frozenset({type(MISSING)})}, frozenset({"x", "a"}))
    # a..d present (e proven absent), workflow and type, and x: 7 keys
    assert plan == (7, (), (("b", "_f1", "copy", False), ("c", "_f2", "copy", False), ("d", "_f3", "deep", False)),
                    ("x",))
    # several shapes, or none seen: maybe absent, copied deeply when it may be a container
    plan = frozen_copy(("a", "b"), skip, {"a": frozenset({str, type(MISSING)}), "b": frozenset({int, dict})})
    assert plan == (3, ("_f0",), (("b", "_f1", "deep", False),), ())
    assert frozen_copy(("a",), skip, None) == (2, ("_f0",), (("a", "_f0", "deep", True),), ())
    assert frozen_copy(None, skip, {}) is None  # the whole action read: its check proves nothing


def test_unread_names_are_bounded():
    keys = ("a",)
    skip = ("workflow", "type")
    seen = unread({"workflow": "w", "type": "t", "a": 1, "x": 2}, keys, skip, frozenset())
    assert seen == frozenset({"x"})
    assert unread({"a": 1, "y": [1]}, keys, skip, seen) == frozenset({"x", "y"})
    assert unread({1: 1}, keys, skip, seen) is None  # not a str key: given up
    many = {f"k{i}": i for i in range(20)}
    assert unread(many, keys, skip, frozenset()) is None
    assert unread({"z": 1}, keys, skip, None) is None  # given up stays given up


def test_an_unread_container_or_an_unseen_field_takes_the_generic_freeze():
    """The copy checks the unread fields by name and type: a list there, or a field it has
    not seen, and the generic freeze decides (the digest is right either way)."""
    fast = engine_from_texts({"p.policy": POLICY})
    base = {"workflow": "w", "type": "pay", "id": "a", "amount": 50, "items": [], "meta": {"tier": "s"},
            "tags": [], "note": "ok", "order_id": "o"}
    for _ in range(4):
        fast.evaluate(copy.deepcopy(base), None, NOW)
    for change in ({"order_id": ["o"]}, {"other": 1}, {"order_id": {"k": "v"}}):
        action = {**copy.deepcopy(base), **change}
        want = action_digest(action)
        d = fast.evaluate(action, None, NOW)
        assert d.effect == "require_approval"
        assert type(_raw(d)["action_digest"]) is not dict  # the generic freeze's
        _mutate(action)
        assert d.action_digest == want
    d = fast.evaluate(copy.deepcopy(base), None, NOW)
    assert type(_raw(d)["action_digest"]) is dict  # the copy, stored as it is


def test_a_field_that_may_be_absent_is_counted_only_when_present():
    """A field seen both present and absent: the key count holds it only when present, so
    an absent one never lets another field (a list here) into a copy that would share it."""
    fast = engine_from_texts({"p.policy": POLICY})
    base = {"workflow": "w", "type": "pay", "id": "a", "amount": 50, "items": [], "meta": {"tier": "s"},
            "tags": [], "note": "ok", "order_id": "o", "flag": False}
    lacking = {k: v for k, v in base.items() if k != "flag"}  # (`has()`: no error, the fused function decides)
    for a in (base, base, base, base, lacking, lacking, base):  # built, then widened: `flag` may be absent
        fast.evaluate(copy.deepcopy(a), None, NOW)
    assert fast.accelerator.gates()[0].shapes["flag"] == frozenset({bool, type(MISSING)})
    for action in (copy.deepcopy(base), copy.deepcopy(lacking), {**copy.deepcopy(lacking), "zz": [["x"]]}):
        want = action_digest(action)
        d = fast.evaluate(action, None, NOW)
        assert d.effect == "require_approval"
        _mutate(action)
        assert d.action_digest == want
