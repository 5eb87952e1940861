"""The fused gate's shape speculation never changes a decision (see engine.accel).

A type's fused gate function is built for the shapes its fields were seen with (one type
test per field, objects key by key, lists of strings joined). Three things must hold:
  - passing the specialised input check proves the exact input check passes (so the
    lane can never accept what the full path would deny);
  - an input of another shape leaves the lane (ShapeMiss), the full path decides it, and
    the function is rebuilt wider, a bounded number of times;
  - whatever the history of shapes, every decision equals the full path's, byte for byte.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest
from depth import examples
from engine_support import ROOT, engine_from_texts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import policy_engine
from policy_engine.cel import _found, _re2_compile_raw, fuse
from policy_engine.engine import check_fields
from policy_engine.engine.accel import fused as fused_mod
from policy_engine.engine.accel import native
from policy_engine.engine.accel import shapes as eng

UTC = UTC
T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)


def dump(d) -> str:
    return json.dumps(d.model_dump(mode="json"), sort_keys=True)


def gate(engine, wname, tname):
    return engine.accelerator.gate(wname, tname)


# ----------------------------------------------------------------------------- tags
class S(str):
    pass


@pytest.mark.parametrize("value, tag", [
    ("x", str), (1, int), (1.5, float), (True, bool), (None, type(None)), (eng._MISS, eng._Missing),
    ([], eng._LIST_EMPTY), (["a", "b"], eng._LIST_STR), (["a", 1], list), ([["a"]], list),
    ([1, 2], ("list", int)), ([1.5], ("list", float)), ([True], ("list", bool)), ([1, 1.5], list),
    ([1, True], list), ([None], list), ([S("x")], list),
    ([{"b": 1, "a": "x"}, {"a": "y", "b": 2}], ("list", ("dict", (("a", str), ("b", int))))),
    ([{}], ("list", ("dict", ()))),
    ([{"a": 1}, {"a": "x"}], list), ([{"a": 1}, {"b": 1}], list), ([{"a": 1}, {"a": 1, "b": 1}], list),
    ([{"a": 1}, {S("a"): 1}], list), ([{"a": 1}, ["a"]], list), ([{"a": [1]}], list), ([{"a": 1}] * 257, list),
    ({"b": 1, "a": "x"}, ("dict", (("a", str), ("b", int)))), ({}, ("dict", ())),
    ({"a": [1]}, dict), ({"é": 1}, dict), ({1: 1}, dict), ({f"k{i}": 1 for i in range(17)}, dict),
    (S("x"), None), (b"x", None), ((1,), None),
    (["a"] * 1025, list),  # long lists are not scanned (a miss stays cheap)
])
def test_tag_names_the_shapes_a_lane_specialises_for(value, tag):
    assert eng._tag(value) == tag


def test_widen_merges_shapes_into_the_least_specific_that_covers_them():
    flat_a, flat_b = eng._tag({"a": 1}), eng._tag({"b": 1})
    assert eng.widen(None, str) == {str}
    assert eng.widen(frozenset({str}), int) == {str, int}
    assert eng.widen(frozenset({eng._LIST_STR}), list) == {list}
    rec_a, rec_b = eng._tag([{"a": 1}]), eng._tag([{"a": "x"}])
    assert eng.widen(frozenset({eng._LIST_EMPTY}), eng._LIST_STR) == {eng._LIST_STR}
    assert eng.widen(frozenset({eng._LIST_EMPTY}), rec_a) == {rec_a}
    assert eng.widen(frozenset({rec_a}), eng._LIST_EMPTY) == {rec_a}
    assert eng.widen(frozenset({eng._LIST_EMPTY}), list) == {list}
    assert eng.widen(frozenset({rec_a}), rec_b) == {list}
    assert eng.widen(frozenset({rec_a, eng._Missing}), eng._LIST_STR) == {list, eng._Missing}
    assert eng.widen(frozenset({("list", int)}), ("list", float)) == {list}
    assert eng.widen(frozenset({("list", int), str}), eng._LIST_EMPTY) == {("list", int), str}
    assert eng.widen(frozenset({flat_a}), flat_a) == {flat_a}
    assert eng.widen(frozenset({flat_a}), flat_b) == {dict}
    assert eng.widen(frozenset({flat_a}), dict) == {dict}
    assert eng.widen(frozenset({flat_a, eng._Missing}), str) == {flat_a, eng._Missing, str}


# ----------------------------------------------------------------------------- soundness
plain = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=True),
              st.text(alphabet=st.sampled_from("ab\u00e9\ud800"), max_size=3), st.builds(S, st.text(max_size=2)),
              st.binary(max_size=2)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.one_of(st.sampled_from(["a", "b", "\u00e9", "\ud800"]),
                                                      st.integers(0, 2)), inner, max_size=3)),
    max_leaves=8)
field_value = st.one_of(plain, st.just(eng._MISS))


def _action(values: dict) -> dict:
    return {k: v for k, v in values.items() if v is not eng._MISS}


@given(seen=st.lists(st.dictionaries(st.sampled_from("xyz"), field_value, min_size=3, max_size=3), max_size=3),
       values=st.dictionaries(st.sampled_from("xyz"), field_value, min_size=3, max_size=3))
@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_passing_the_specialised_check_proves_the_exact_check_passes(seen, values):
    keys = ("x", "y", "z")
    shapes: dict = {}
    for s in seen:
        for k, t in eng.shape_of(_action(s), keys).items():
            shapes[k] = eng.widen(shapes.get(k), t)
    prologue, ns, fields, known = eng.lane_prologue(keys, (), shapes)
    fn, src = fuse([], ("action", "workflow", "now", "policy"), prologue, ns, fields, known, dicts=("action",))
    assert fn is not None, src
    action = _action(values)
    try:
        fn(action, None, None, None)
    except Exception:  # noqa: BLE001 - turned away: the full path decides
        return
    assert check_fields(action, keys) is None, (src, action)


def test_an_object_field_is_checked_key_by_key_and_only_for_the_keys_seen():
    keys = ("o",)
    shapes = {"o": frozenset({eng._tag({"a": "x", "b": 1.5})})}
    prologue, ns, fields, known = eng.lane_prologue(keys, (), shapes)
    fn, src = fuse([], ("action", "workflow", "now", "policy"), prologue, ns, fields, known, dicts=("action",))
    assert fields[("action", "o", "a")][1] == "str" and fields[("action", "o", "b")][1] == "float"
    assert fn({"o": {"a": "y", "b": 2.0}}, None, None, None) == 0
    for bad in ({"a": "y"}, {"a": "y", "b": 2.0, "c": 1}, {"a": 1, "b": 2.0}, {"a": "y", "b": 2}, [], "s"):
        with pytest.raises(eng.ShapeMiss):
            fn({"o": bad}, None, None, None)
    for bad in ({"a": "\ud800", "b": 1.0}, {"a": "y", "b": math.nan}):
        with pytest.raises(Exception) as e:
            fn({"o": bad}, None, None, None)
        assert not isinstance(e.value, eng.ShapeMiss)  # a bad value, not a new shape


# ----------------------------------------------------------------------------- decisions
POLICY = """roles [reviewer]
workflow "w" {
  version "1"
  owners { business "b" technical "t" }
  default deny
  action pay {
    allow small when `action.amount <= 100`
    deny big when `action.amount > 100`
    require_approval vip by 1 reviewer when `action.who.level >= 3 && action.who.name != "root"`
    deny blocked when `"blocked" in action.tags`
    deny no_who when `!has(action.who.name)`
    require_approval eu by 1 reviewer when `action.region == "eu" || action.tags.exists(t, t.startsWith("eu-"))`
  }
  stop s {
    when `action.type == "pay" && action.amount > 10000`
    severity low
    owner "o"
    resume when { ok: `evidence.ok` }
  }
}
"""

who = st.one_of(
    st.fixed_dictionaries({"name": st.sampled_from(["ann", "root"]), "level": st.integers(0, 5)}),
    st.fixed_dictionaries({"name": st.sampled_from(["ann", "root"]), "level": st.one_of(st.floats(0, 5), st.none())}),
    st.fixed_dictionaries({"level": st.integers(0, 5)}),
    st.fixed_dictionaries({"name": st.just("ann"), "level": st.integers(0, 5), "x": st.just([1])}),
    st.just("ann"),
    st.none(),
)
pay = st.fixed_dictionaries(
    {
        "workflow": st.just("w"),
        "type": st.just("pay"),
        "amount": st.one_of(
            st.integers(0, 200), st.floats(0, 200), st.just(20_000), st.just(math.nan), st.text(max_size=1)
        ),
        "who": who,
        "tags": st.one_of(
            st.lists(st.sampled_from(["blocked", "eu-1", "x", "\ud800"]), max_size=3),
            st.lists(st.one_of(st.integers(0, 1), st.just("x")), max_size=2),
        ),
        "region": st.sampled_from(["eu", "us", ""]),
    },
    optional={"id": st.one_of(st.text(max_size=3), st.integers(), st.none())},
)


@given(batch=st.lists(pay, min_size=1, max_size=25))
@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_history_of_shapes_decides_like_the_full_path(batch):
    slow = engine_from_texts({"p.policy": POLICY}, accelerate=False)
    fast = engine_from_texts({"p.policy": POLICY})  # lanes built from what it sees
    for action in batch + batch:  # the second pass runs the widened functions
        assert dump(fast.evaluate(action, None, T0)) == dump(slow.evaluate(action, None, T0))
    fz = gate(fast, "w", "pay")
    assert fz.rebuilds <= fused_mod.REBUILDS_MAX + 1


def test_the_lane_specialises_misses_widens_and_stops_widening(monkeypatch):
    # the generated lines of the prologue (the native check, which replaces them where the
    # extension is built, is held to them by tests/test_native_speedups.py)
    monkeypatch.setattr(native, "ENABLED", False)
    fast = engine_from_texts({"p.policy": POLICY})
    slow = engine_from_texts({"p.policy": POLICY}, accelerate=False)
    fz = gate(fast, "w", "pay")
    base = {
        "workflow": "w",
        "type": "pay",
        "id": "a1",
        "amount": 5,
        "who": {"name": "ann", "level": 1},
        "tags": ["x"],
        "region": "us",
    }
    for _ in range(fused_mod.FUSE_AFTER):
        fast.evaluate(base, None, T0)
    assert fz.fn is not None and fz.rebuilds == 0
    assert "if type(_f0) is not int: _fs()" in fz.source  # amount, seen as an int
    assert "_join(" in fz.source and ".keys() != _K" in fz.source
    first = fz.fn
    assert dump(fast.evaluate(base, None, T0)) == dump(slow.evaluate(base, None, T0))
    assert fz.fn is first  # the same shape: no rebuild

    other = {**base, "amount": 5.5}  # a new shape: decided by the full path, then widened
    assert dump(fast.evaluate(other, None, T0)) == dump(slow.evaluate(other, None, T0))
    assert fz.rebuilds == 1 and fz.shapes["amount"] == {int, float} and fz.fn is not first
    assert dump(fast.evaluate(other, None, T0)) == dump(slow.evaluate(other, None, T0))
    assert fz.rebuilds == 1  # now in the lane

    # bad values of known shapes: no widening, denied, whichever part of the shape holds them
    big = "x" * 4_000_001
    for change in (
        {"amount": math.nan},
        {"who": {"name": big, "level": 1}},
        {"who": {"name": "\ud800", "level": 1}},
        {"tags": [big]},
        {"tags": ["x"] * 100_001},
        {"tags": ["x"] * 3_000_000},
        {"tags": ["a", "\ud800"]},
        {"region": big},
        {"who": {"name": "a" * 2_000_000, "level": 1}, "region": "b" * 2_000_000},
    ):
        a = {**base, **change}
        d = fast.evaluate(a, None, T0)
        assert d.effect == "deny" and d.errors[0].kind == "input", change.keys()
        assert dump(d) == dump(slow.evaluate(a, None, T0))
    assert fz.rebuilds == 1

    shapes = [
        {"amount": "5"},
        {"amount": None},
        {"amount": True},
        {"region": 1},
        {"region": None},
        {"who": "ann"},
        {"who": None},
        {"tags": [1]},
        {"tags": None},
        {"who": {"level": 1}},
    ]
    for change in shapes:
        a = {**base, **change}
        assert dump(fast.evaluate(a, None, T0)) == dump(slow.evaluate(a, None, T0))
    assert fz.rebuilds == fused_mod.REBUILDS_MAX + 1 and fz.shapes is None  # capped: every plain type
    assert "_fs()" not in fz.source
    for change in shapes:
        a = {**base, **change}
        assert dump(fast.evaluate(a, None, T0)) == dump(slow.evaluate(a, None, T0))


def test_the_benchmark_lanes_are_specialised_and_agree():
    from benchmarks.requests import make_mix

    mix = make_mix(200)
    slow = policy_engine.load(str(ROOT / "benchmarks/policies"), accelerate=False)
    fast = policy_engine.load(str(ROOT / "benchmarks/policies"))
    for _ in range(3):
        for r in mix:
            assert dump(fast.evaluate(*r)) == dump(slow.evaluate(*r))
    built = [fz for fz in fast.accelerator.gates() if fz.fn is not None]
    assert len(built) >= 20 and all(fz.shapes for fz in built)
    assert sum(fz.rebuilds for fz in built) <= 5  # the mix's shapes are stable


# ----------------------------------------------------------------------------- regex
PATTERNS = ["a+b", "(?i)(lawsuit|attorney)", "^$", "é.", "[0-9]{3}-[0-9]{2}", "x*", "(a)(b)?", "\\bword\\b", "$"]


@given(text=st.text(alphabet=st.sampled_from("abAB é0123-\nwordx"), max_size=12), i=st.integers(0, len(PATTERNS) - 1))
@settings(max_examples=400, deadline=None)
def test_the_direct_re2_search_agrees_with_the_public_search(text, i):
    rx = _re2_compile_raw(PATTERNS[i])
    assert _found(rx)(text) is (rx.search(text) is not None)


def test_the_direct_re2_search_refuses_a_lone_surrogate_like_the_public_one():
    rx = _re2_compile_raw("a")
    with pytest.raises(UnicodeEncodeError):
        rx.search("\ud800")
    with pytest.raises(UnicodeEncodeError):
        _found(rx)("\ud800")


TWO = """roles [reviewer]
workflow "w1" {
  version "1"
  owners { business "b" technical "t" }
  default deny
  action pay { allow small when `action.amount <= 100` }
}
workflow "w2" {
  version "1"
  owners { business "b" technical "t" }
  default deny
  action refund { allow tiny when `action.amount <= 10` }
}
"""


def test_the_lane_is_found_by_type_and_checked_against_the_workflow():
    fast = engine_from_texts({"p.policy": TWO})
    slow = engine_from_texts({"p.policy": TWO}, accelerate=False)
    assert fast.accelerator.types["pay"].wname == "w1" and fast.accelerator.types["refund"].wname == "w2"
    cases = [
        {"workflow": w, "type": t, "id": "x", "amount": n}
        for w in ("w1", "w2", "w3")
        for t in ("pay", "refund", "nope")
        for n in (5, 50)
    ]
    for _ in range(5):
        for a in cases:
            assert dump(fast.evaluate(a, None, T0)) == dump(slow.evaluate(a, None, T0))
    d = fast.evaluate({"workflow": "w2", "type": "pay", "amount": 5}, None, T0)
    assert d.effect == "deny" and d.workflow == "w2" and d.deciding.kind != "rule"  # pay is w1's
    assert fast.evaluate({"workflow": "w1", "type": "pay", "amount": 5}, None, T0).deciding.name == "small"


# ----------------------------------------------------------------------------- lists of records and scalars
RECORDS = """roles [reviewer]
workflow "w" {
  version "1"
  owners { business "b" technical "t" }
  default deny
  action post {
    allow sourced when `action.claims.all(c, c.sourced) && action.scores.all(s, s < 0.9)`
    require_approval unsourced by 1 reviewer when `action.claims.exists(c, !c.sourced && c.kind == "promise")`
    deny many when `size(action.claims) > 3`
    require_approval hi by 1 reviewer when `action.counts.exists(n, n > 5) || action.flags.exists(f, f)`
  }
}
"""

claim_ok = st.fixed_dictionaries({"text": st.text(alphabet=st.sampled_from("ab\u00e9\ud800"), max_size=3),
                                  "kind": st.sampled_from(["fact", "promise"]), "sourced": st.booleans()})
claim = st.one_of(
    claim_ok, claim_ok, claim_ok,
    st.fixed_dictionaries({"kind": st.just("fact"), "sourced": st.booleans()}),  # a key missing
    st.fixed_dictionaries({"text": st.just("t"), "kind": st.just("fact"), "sourced": st.none()}),
    st.fixed_dictionaries({"text": st.just("t"), "kind": st.just("fact"), "sourced": st.booleans(),
                           "x": st.just(1)}),  # a key more
    st.builds(lambda c: {S(k): v for k, v in c.items()}, claim_ok),  # keys of a str subclass
    st.fixed_dictionaries({"text": st.just(["t"]), "kind": st.just("fact"), "sourced": st.just(True)}),
    st.just("claim"),
)
post = st.fixed_dictionaries(
    {
        "workflow": st.just("w"),
        "type": st.just("post"),
        "id": st.sampled_from(["a1", "a2"]),
        "claims": st.one_of(st.lists(claim_ok, max_size=4), st.lists(claim, max_size=4)),
        "scores": st.one_of(st.lists(st.floats(0, 1), max_size=3),
                            st.lists(st.one_of(st.floats(0, 1), st.integers(0, 1), st.just(math.nan),
                                               st.just(math.inf)), max_size=3)),
        "counts": st.one_of(st.lists(st.integers(0, 9), max_size=3),
                            st.lists(st.one_of(st.integers(0, 9), st.booleans(), st.just(2**70)), max_size=3)),
        "flags": st.one_of(st.lists(st.booleans(), max_size=3), st.lists(st.one_of(st.booleans(), st.none()),
                                                                          max_size=3)),
    },
    optional={"ticket": st.sampled_from(["T-1", "T-2"])},
)


@given(batch=st.lists(post, min_size=1, max_size=25))
@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_lists_of_records_and_of_scalars_decide_like_the_full_path(batch):
    slow = engine_from_texts({"p.policy": RECORDS}, accelerate=False)
    fast = engine_from_texts({"p.policy": RECORDS})
    kept = []
    for action in batch + batch:  # the second pass runs the widened functions
        d = fast.evaluate(action, None, T0)
        ref = slow.evaluate(action, None, T0)
        assert dump(d) == dump(ref)
        assert fast.evaluate_json(action, None, T0) == ref.model_dump_json()
        kept.append((d, ref, action))
    for _, _, action in kept:  # the caller changes its lists and records after the call
        for k in ("claims", "scores", "counts", "flags"):
            v = action[k]
            for x in v:
                if type(x) is dict:
                    x["sourced"] = "changed"
            v.append("changed")
    for d, ref, _ in kept:  # a require_approval decision's digest: of the action as it was decided
        assert d.to_json() == ref.model_dump_json()


def test_a_list_of_records_is_checked_item_by_item_and_frozen_by_copying_each():
    fast = engine_from_texts({"p.policy": RECORDS})
    slow = engine_from_texts({"p.policy": RECORDS}, accelerate=False)
    base = {"workflow": "w", "type": "post", "id": "a1", "claims": [{"text": "t", "kind": "promise", "sourced": False}],
            "scores": [0.5], "counts": [1, 2], "flags": [False]}
    for _ in range(fused_mod.FUSE_AFTER + 1):
        assert dump(fast.evaluate(base, None, T0)) == dump(slow.evaluate(base, None, T0))
    fz = gate(fast, "w", "post")
    assert fz.rebuilds == 0 and fz.shapes["claims"] == {("list", ("dict", (("kind", str), ("sourced", bool),
                                                                            ("text", str))))}
    assert fz.shapes["scores"] == {("list", float)} and fz.shapes["counts"] == {("list", int)}
    assert "_qw(" not in fz.source and "_cpp(" not in fz.source  # no generic walk, no generic copy
    assert "_lst(_map(_dcp, " in fz.source
    d = fast.evaluate(base, None, T0)
    assert d.effect == "require_approval"
    base["claims"][0]["kind"] = "fact"  # after the call: the decision keeps the action as decided
    base["scores"].append(0.7)
    assert d.to_json() == slow.evaluate({**base, "claims": [{"text": "t", "kind": "promise", "sourced": False}],
                                         "scores": [0.5]}, None, T0).model_dump_json()
    # bad values of known shapes: no widening, denied like the full path
    for change in ({"claims": [{"text": "\ud800", "kind": "fact", "sourced": True}]},
                   {"claims": [{"text": "x" * 4_000_001, "kind": "fact", "sourced": True}]},
                   {"scores": [0.5, math.nan]}, {"scores": [math.inf]}):
        a = {**base, **change}
        d = fast.evaluate(a, None, T0)
        assert d.effect == "deny" and d.errors[0].kind == "input", change
        assert dump(d) == dump(slow.evaluate(a, None, T0))
    assert fz.rebuilds == 0
    # other shapes: decided by the full path, the lane widened
    for change in ({"claims": [{S("text"): "t", "kind": "fact", "sourced": True}]},
                   {"claims": [{"kind": "fact", "sourced": True, "txt": "t"}]}, {"counts": [True]}):
        a = {**base, **change}
        assert dump(fast.evaluate(a, None, T0)) == dump(slow.evaluate(a, None, T0))
    # (the second change is a list of another record: already walked since the first)
    assert fz.rebuilds == 2 and fz.shapes["claims"] == {list} and fz.shapes["counts"] == {list}


@pytest.mark.parametrize("field, item, chars", [
    ("r", {"ab": 1}, 0), ("r", {"ab": "xyz", "c": None}, 0), ("r", {"ab": "x" * 997, "c": 1.5}, 1),
    ("s", 1.5, 0), ("s", 7, 0), ("s", True, 0),
])
def test_the_counts_of_a_list_of_records_or_scalars_are_the_exact_walks(field, item, chars):
    """Passing the check proves the exact check passes, and the reverse: at the input
    limits (items, then characters) the check and the exact walk agree on both sides."""
    sample = {"r": [{"ab": 1}], "s": [1.5], "t": "x"} if field == "r" else {"s": [item], "t": "x"}
    sample[field] = [item]
    keys = tuple(sorted(sample))
    shapes = {k: frozenset({t}) for k, t in eng.shape_of(sample, keys).items()}
    assert all(type(t) is tuple and t[0] == "list" for k in sample if k != "t" for t in shapes[k])
    prologue, ns, fields, known = eng.lane_prologue(keys, (), shapes)
    fn, src = fuse([], ("action", "workflow", "now", "policy"), prologue, ns, fields, known, dicts=("action",))
    assert fn is not None, src

    def agree(action):
        exact = check_fields(action, keys) is None
        try:
            fn(action, None, None, None)
            lane = True
        except Exception:  # noqa: BLE001
            lane = False
        assert lane == exact, (len(action[field]), len(action["t"]))
        return exact

    per = len(item) + 1 if type(item) is dict else 1
    base = {k: v for k, v in sample.items() if k != field}
    n = (100_000 - len(keys) - sum(len(v) for v in base.values() if type(v) is list)) // per
    if not chars:  # (long strings: the characters' limit comes first)
        assert agree({**base, field: [item] * n})
        assert not agree({**base, field: [item] * (n + 1)})
    if type(item) is dict:  # the characters: the strings fill the rest
        a = {**base, field: [item] * 1000}
        used = 4_000_000 - len(a["t"]) - sum(map(len, a)) - sum(len(k) + (len(v) if type(v) is str else 0)
                                                                    for x in a[field] for k, v in x.items())
        assert agree({**a, "t": "x" * (used + 1)})
        assert not agree({**a, "t": "x" * (used + 2)})
