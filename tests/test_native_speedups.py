"""The fused gate functions' native helpers (`engine/accel/_speedups.c`, `accel/native.py`):
the input check (`Checker`) does what the generated lines it replaces do, value for value
and exception for exception; the decision (`Maker`) is the one the Python lines make; the
native quick path of `Engine.evaluate` and `Engine.evaluate_json` (`Gate`) answers exactly
as the Python methods and the reference gate do, and leaks nothing."""

from __future__ import annotations

import gc
import math
import os
import subprocess
import sys
import tracemalloc
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from engine_support import engine_from_texts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy_engine.cel import emit
from policy_engine.engine import Engine
from policy_engine.engine.accel import fused as fused_mod
from policy_engine.engine.accel import native
from policy_engine.engine.accel.shapes import ShapeMiss, _tag, lane_prologue, widen
from policy_engine.engine.inputs import MAX_INPUT_CHARS, MAX_INPUT_ITEMS

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
# STOPLINE_NATIVE=0 (a run of the suite on the generated Python alone): nothing here to test
OFF = os.environ.get("STOPLINE_NATIVE", "1").strip() in ("0", "false", "no", "off")
pytestmark = pytest.mark.skipif(OFF, reason="STOPLINE_NATIVE=0: the native helpers are switched off")


def test_the_extension_is_built_and_on():
    # CI builds it (setup.py; gcc is there): were it silently not built (an optional
    # extension), everything below would test the Python lines against themselves
    assert native.AVAILABLE and native.ENABLED
    assert type(Engine.__dict__["evaluate"]).__name__ == "Gate"
    assert type(Engine.__dict__["evaluate_json"]).__name__ == "Gate"


# ---------------------------------------------------------------- the input check

def _prologue(keys: tuple, shapes: dict, on: bool, monkeypatch) -> tuple:
    """The prologue `lane_prologue` generates for `shapes`, as a function of the action
    returning every field local it leaves (in `fields` order); and `fields`."""
    monkeypatch.setattr(native, "ENABLED", on)
    lines, ns, fields, _ = lane_prologue(keys, (("workflow", "w"), ("type", "t")), shapes)
    names = [f[0] for f in fields.values()]
    src = "def _f(_p0):\n" + "".join(f"    {x}\n" for x in lines) + f"    return ({''.join(n + ', ' for n in names)})\n"
    g = dict(ns)
    g["_fb"] = emit._fb
    exec(src, g)  # noqa: S102
    return g["_f"], fields, src


def _outcome(fn, action):
    try:
        return ("ok", fn(action))
    except ShapeMiss:
        return ("shape miss",)
    except emit._FastFallback:
        return ("fallback",)


class _Str(str):
    pass


SAMPLE = {"s": "héllo", "i": 3, "b": True, "f": 1.5, "n": None, "ls": ["a", "bé"], "li": [1, 2], "lf": [0.5],
          "lb": [True], "le": [], "d": {"x": "y", "z": 2, "q": None}, "r": [{"k": "v", "n": 1.0}, {"k": "w", "n": 2.0}]}
KEYS = tuple(sorted(SAMPLE))


def _shapes_of(action: dict) -> dict:
    return {k: widen(None, _tag(action[k])) for k in KEYS}


def test_the_native_prologue_is_taken_for_every_shape_it_knows(monkeypatch):
    shapes = _shapes_of(SAMPLE)
    fn_n, fields_n, src_n = _prologue(KEYS, shapes, True, monkeypatch)
    fn_p, fields_p, src_p = _prologue(KEYS, shapes, False, monkeypatch)
    assert "_CK(_p0)" in src_n and "_CK" not in src_p
    assert fields_n == fields_p  # the same locals, of the same kinds, for the conditions
    assert _outcome(fn_n, SAMPLE) == _outcome(fn_p, SAMPLE)
    assert _outcome(fn_n, SAMPLE)[0] == "ok"


def test_a_field_of_several_shapes_or_unspecialised_keeps_the_generated_lines(monkeypatch):
    shapes = _shapes_of(SAMPLE)
    shapes["i"] = widen(shapes["i"], _tag("x"))  # int or str
    _, _, src = _prologue(KEYS, shapes, True, monkeypatch)
    assert "_CK" not in src
    del shapes["i"]  # never seen: every plain type
    _, _, src = _prologue(KEYS, shapes, True, monkeypatch)
    assert "_CK" not in src


# values that pass or fail each check: the same type, another type, a subclass, a
# surrogate, a non-finite float, a missing key, an extra key, a str-subclass key
_ODD = st.sampled_from([
    "x", "é", "\ud800", "a\udfffb", _Str("x"), 1, True, False, 0, 1.5, math.inf, -math.inf, math.nan, None,
    [], ["a"], ["\ud800"], [_Str("a")], [1], [1.0], [math.nan], [True], [1, "a"], {}, {"x": "y"},
])


def _mutations(base: dict):
    scalar = st.one_of(_ODD, st.text(max_size=4), st.integers(), st.floats())

    def mutate_dict(d: dict) -> st.SearchStrategy:
        return st.fixed_dictionaries({}, optional={k: scalar for k in ("x", "z", "q", "extra")}) | st.just(d) | \
            st.just({_Str("x"): "y", "z": 2, "q": None}) | st.just({"x": "\ud800", "z": 2, "q": None}) | \
            st.just({"x": "y", "z": 2.0, "q": None})

    def record(n_val: st.SearchStrategy) -> st.SearchStrategy:
        return st.fixed_dictionaries({"k": st.one_of(st.just("v"), _ODD)}, optional={"n": n_val, "o": scalar})

    fields = {k: st.one_of(st.just(v), _ODD, scalar) for k, v in base.items()}
    fields["d"] = st.one_of(mutate_dict(base["d"]), _ODD)
    fields["r"] = st.one_of(st.lists(record(st.one_of(st.floats(), _ODD)), max_size=3), _ODD)
    fields["ls"] = st.one_of(st.lists(st.one_of(st.text(max_size=3), _ODD), max_size=3), _ODD)
    fields["lf"] = st.one_of(st.lists(st.one_of(st.floats(), _ODD), max_size=3), _ODD)
    fields["li"] = st.one_of(st.lists(st.one_of(st.integers(), _ODD), max_size=3), _ODD)
    return st.fixed_dictionaries({}, optional=fields)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(action=_mutations(SAMPLE))
def test_the_native_check_is_the_generated_lines_value_for_value(action):
    # (a fixture cannot be given to a @given test once per example: the patch by hand)
    shapes = _shapes_of(SAMPLE)
    mp = pytest.MonkeyPatch()
    try:
        fn_n, _, _ = _prologue(KEYS, shapes, True, mp)
        fn_p, _, _ = _prologue(KEYS, shapes, False, mp)
    finally:
        mp.undo()
    a = {"workflow": "w", "type": "t", **action}
    n, p = _outcome(fn_n, a), _outcome(fn_p, a)
    if n[0] == "ok" and p[0] == "ok":  # the same objects, in the same order (nan is not equal to itself)
        assert len(n[1]) == len(p[1]) and all(x is y for x, y in zip(n[1], p[1], strict=True))
    else:
        assert n == p


def test_the_limits_fall_back_as_the_generated_lines_do(monkeypatch):
    shapes = _shapes_of(SAMPLE)
    fn_n, _, _ = _prologue(KEYS, shapes, True, monkeypatch)
    fn_p, _, _ = _prologue(KEYS, shapes, False, monkeypatch)
    big = dict(SAMPLE, workflow="w", type="t")
    for k, v in (("s", "x" * (int(MAX_INPUT_CHARS) + 1)), ("ls", ["x"] * (int(MAX_INPUT_ITEMS) + 1)),
                 ("li", [1] * (int(MAX_INPUT_ITEMS) + 1)), ("r", [{"k": "v", "n": 1.0}] * (int(MAX_INPUT_ITEMS) // 2))):
        a = dict(big, **{k: v})
        assert _outcome(fn_n, a) == _outcome(fn_p, a) == ("fallback",), k
    # over the items only by counting the records' keys (each record counts 3)
    a = dict(big, r=[{"k": "v", "n": 1.0}] * (int(MAX_INPUT_ITEMS) // 3 + 1))
    assert _outcome(fn_n, a) == _outcome(fn_p, a) == ("fallback",)
    # an action that is a Mapping but not a dict: fetched as the lines fetch it
    from types import MappingProxyType
    assert _outcome(fn_n, MappingProxyType(big)) == _outcome(fn_p, MappingProxyType(big))
    assert _outcome(fn_n, MappingProxyType({"type": "t"})) == ("shape miss",)


def test_a_checker_refuses_a_spec_it_cannot_check():
    from policy_engine.engine.accel import _speedups as S

    ok = (("a",), (("s",),), 1, 10, 1, 10, ShapeMiss, emit._FastFallback)
    assert S.Checker(*ok)({"a": "x"}) == ("x",)
    for bad in ((("a",), (("q",),)), (("a",), (("L", "n"),)), (("a",), (("D", ()),)), (("a", "b"), (("s",),)),
                ((1,), (("s",),)), (("a",), (("D", (("k", "s", "x"),)),))):
        with pytest.raises((ValueError, TypeError)):
            S.Checker(bad[0], bad[1], 1, 10, 1, 10, ShapeMiss, emit._FastFallback)
    with pytest.raises(TypeError):
        S.Checker(("a",), (("s",),), 1, 10, 1, 10, "not a class", emit._FastFallback)


# ----------------------------------------------------------------- the engine

POLICY = """roles [manager]
workflow "w" {
  version "1"
  owners { business "b" technical "t" }
  default deny
  action tag {
    deny reserved when `action.tags.exists(t, t.startsWith("internal-"))`
    allow tagging when `size(action.tags) < 10`
  }
  action pay {
    require_approval big by 1 manager when `action.amount > 100.0`
    allow paying when `action.customer.tier != "blocked"`
  }
}
"""


@pytest.fixture(scope="module")
def engines():
    return engine_from_texts({"p.policy": POLICY}), engine_from_texts({"p.policy": POLICY}, accelerate=False)


def _warm(e, actions):
    for _ in range(fused_mod.FUSE_AFTER + 2):
        for a in actions:
            e.evaluate(a, None, T0)
            e.evaluate_json(a, None, T0)


TAG = {"workflow": "w", "type": "tag", "id": "a1", "tags": ["x", "y"]}
PAY = {"workflow": "w", "type": "pay", "id": "p1", "amount": 250.0, "customer": {"tier": "gold", "id": "c"}}


def test_the_quick_path_runs_the_native_check_and_answers_as_the_reference(engines):
    e, ref = engines
    _warm(e, [TAG, PAY])
    for t in ("tag", "pay"):
        src = e.accelerator.gate("w", t).source
        assert "_CK(_p0)" in src and "_MK" in src
    for a in (TAG, PAY, dict(TAG, tags=["internal-1"]), dict(PAY, amount=5.0), dict(PAY, customer={"tier": "blocked",
                                                                                                   "id": "c"})):
        want = ref.evaluate(a, None, T0)
        assert e.evaluate(a, None, T0).model_dump() == want.model_dump()
        assert e.evaluate(a, now=T0).model_dump() == want.model_dump()  # (a keyword: the Python method's)
        assert e.evaluate_json(a, None, T0) == want.model_dump_json()
        assert Engine.evaluate(e, a, None, T0).model_dump() == want.model_dump()  # (through the class)


@pytest.mark.parametrize("odd", [
    {"tags": ["\ud800"]}, {"tags": [_Str("internal-x")]}, {"tags": "internal-x"}, {"tags": None}, {},
    {"amount": math.nan}, {"amount": math.inf}, {"amount": 250}, {"customer": {"tier": "gold"}},
    {"customer": {"tier": "\udc00", "id": "c"}}, {"customer": {_Str("tier"): "blocked", "id": "c"}},
    {"id": 5}, {"id": None}, {"workflow": "other"}, {"workflow": _Str("w")}, {"type": _Str("tag")},
])
def test_odd_inputs_on_the_quick_path_are_decided_as_the_reference_decides_them(engines, odd):
    e, ref = engines
    _warm(e, [TAG, PAY])
    for base in (TAG, PAY):
        a = {**base, **odd}
        for now in (T0, T0 + timedelta(seconds=7), T0.astimezone(timezone(timedelta(hours=2))), "2026-03-01T12:00:00Z"):
            want = ref.evaluate(a, None, now)
            assert e.evaluate(a, None, now).model_dump() == want.model_dump(), (a, now)
            assert e.evaluate_json(a, None, now) == want.model_dump_json(), (a, now)


def test_the_clock_on_the_native_path(engines):
    e, ref = engines
    _warm(e, [TAG, PAY])
    for a in (TAG, PAY):
        before = datetime.now(UTC)
        d = e.evaluate(a)
        after = datetime.now(UTC)
        at = datetime.fromisoformat(d.evaluated_at.replace("Z", "+00:00"))
        assert before - timedelta(seconds=1) <= at <= after  # (as written: whole milliseconds at most)
        assert d.model_dump() == ref.evaluate(a, None, d.evaluated_at).model_dump()
        j = e.evaluate_json(a)
        assert j.startswith('{"effect":')


def test_each_decision_has_its_own_fields(engines):
    # Maker copies the template for a decision that needs nothing else: two decisions of
    # the same outcome share no dict, and changing one leaves the next as it was
    e, _ = engines
    _warm(e, [TAG])
    d1 = e.evaluate(TAG, None, T0)
    d2 = e.evaluate(dict(TAG, id="a2"), None, T0)
    assert d1.__dict__ is not d2.__dict__
    assert (d1.action_id, d2.action_id) == ("a1", "a2")
    d1.__dict__["reason"] = "changed"
    assert e.evaluate(TAG, None, T0).reason != "changed"


def test_the_native_path_leaks_nothing(engines):
    e, _ = engines
    acts = [TAG, PAY, dict(TAG, tags=["\ud800"]), dict(PAY, amount=math.nan), {"type": "tag"}]
    _warm(e, acts)
    for a in acts * 200:  # every cache filled
        e.evaluate(a, None, T0)
        e.evaluate(a)
        e.evaluate_json(a, None, T0)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(4000):
            for a in acts:
                e.evaluate(a, None, T0)
                e.evaluate_json(a, None, T0)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    # 40,000 calls: a reference leaked per call would be a megabyte and more
    assert grown < 64 * 1024, grown


def test_switched_off_by_the_environment(tmp_path):
    code = ("from policy_engine.engine import Engine; from policy_engine.engine.accel import native;"
            "print(native.AVAILABLE, native.ENABLED, type(Engine.__dict__['evaluate']).__name__)")
    # (the package this process imported, wherever that is)
    env = dict(os.environ, STOPLINE_NATIVE="0", PYTHONPATH=str(Path(native.__file__).parents[3]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=tmp_path).stdout
    assert out.split() == ["True", "False", "function"]
