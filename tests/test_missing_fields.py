"""Actions lacking fields decide exactly as the reference gate decides, in the fast lane.

An action that lacks a field a condition reads (an optional field a runtime omits) makes
that condition an error in CEL ("no such key: ..."), absorbed or not by `&&`, `||` and the
macros. The fused gate function runs each condition under its own `try` (`cel.fuse`,
`isolate`): one that raises sets its fault bit, and the caller evaluates it alone, by its
closures, keeping the values of the conditions that read only action fields per those
fields' values (`engine.accel.faults`); the decision of an outcome with errors comes from
a template kept per outcome (`templates.fault_template`). Before, the whole action went to
the reference gate (6-7x slower).

Each test compares the fast engine with the reference gate (`accelerate=False`): the
decision's `model_dump()` and its `to_json()` bytes, and `evaluate_json()`. The structural
tests check that these inputs stay in the fast lane (no reference gate call once warm).
"""

from __future__ import annotations

import functools
import random
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import policy_engine
from policy_engine.cel import compile_cel, fuse
from policy_engine.engine.accel import faults as faults_mod
from policy_engine.engine.accel import fused as fused_mod
from policy_engine.engine.accel import templates as templates_mod

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.gen_policies import large_type_requests, large_type_text  # noqa: E402
from benchmarks.requests import make_mix  # noqa: E402
from tests.engine_support import engine_from_texts  # noqa: E402

IDENTITY = ("workflow", "type", "id")
DIRS = ("benchmarks/policies", "policies")
T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
WEIRD = [None, "", "x", 0, 1, -1, 1.5, 10**30, True, False, [], {}, ["a", 1], {"k": "v"}, [{"sourced": False}],
         "2026-01-01T00:00:00Z", float("inf"), float("nan"), "\ud800"]


@functools.cache
def mix() -> list:
    return make_mix(200)


def _fixture_requests() -> list:
    """The actions of the shipped policies' test suites, with their `now` and state."""
    out = []
    for f in sorted((ROOT / "policies").glob("*.policy-test.yaml")):
        suite = yaml.safe_load(f.read_text())
        now = suite.get("now", T0)
        if type(now) is str:  # a datetime in UTC: the fast lane's `now` (a text is the reference gate's)
            now = datetime.fromisoformat(now.replace("Z", "+00:00")).astimezone(UTC)
        state = suite.get("workflow_state")
        for a in ((suite.get("inputs") or {}).get("actions") or {}).values():
            if isinstance(a, dict):
                out.append((a, state, now))
    return out


@functools.cache
def requests(d: str) -> list:
    return mix() + (_fixture_requests() if d == "policies" else [])


@functools.cache
def engines(d: str):
    """(fast, reference) for a policy directory; the fast one warmed on the intact
    requests (every fused gate built for the shapes they have)."""
    fast = policy_engine.load(str(ROOT / d))
    ref = policy_engine.load(str(ROOT / d), accelerate=False)
    for _ in range(4):
        for r in requests(d):
            fast.evaluate(*r)
    return fast, ref


def same(fast, ref, action, state, now) -> None:
    got = fast.evaluate(action, state, now)
    want = ref.evaluate(action, state, now)
    assert got.model_dump() == want.model_dump(), (action, state)
    try:
        text = want.to_json()
    except Exception as e:  # noqa: BLE001 - a lone surrogate: both refuse alike
        with pytest.raises(type(e)):
            got.to_json()
        return
    assert got.to_json() == text, action
    assert fast.evaluate_json(action, state, now) == text, action


def without(action: dict, drop) -> dict:
    return {k: v for k, v in action.items() if k not in drop}


def single_drops(reqs) -> list:
    out = []
    for a, s, n in reqs:
        for k in a:
            if k not in IDENTITY:
                out.append((without(a, {k}), s, n))
    return out


def all_drops(reqs) -> list:
    return [({k: a[k] for k in IDENTITY if k in a}, s, n) for a, s, n in reqs]


# ----------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("d", DIRS)
def test_each_single_field_missing_decides_as_the_reference(d):
    fast, ref = engines(d)
    cases = single_drops(requests(d))
    assert len(cases) > 500
    for _ in range(2):  # the first pass widens shapes and fills templates and kept values, the second reads them
        for r in cases:
            same(fast, ref, *r)


@pytest.mark.parametrize("d", DIRS)
def test_every_field_missing_decides_as_the_reference(d):
    fast, ref = engines(d)
    for _ in range(2):
        for r in all_drops(requests(d)):
            same(fast, ref, *r)


@pytest.mark.parametrize("d", DIRS)
def test_missing_fields_with_a_clock_and_other_states(d):
    fast, ref = engines(d)
    states = [None, {"status": "running"}, {"status": "running", "extra": [1, 2]},
              {"status": "stopped", "stopped_by": "nope"}]
    for a, _, _ in requests(d)[:60]:
        keys = [k for k in a if k not in IDENTITY]
        for drop in ({*keys[:1]}, {*keys[1:3]}, set(keys)):
            b = without(a, drop)
            for s in states:
                for now in (T0, "2026-03-02T14:30:00Z"):
                    same(fast, ref, b, s, now)
                got, want = fast.evaluate(b, s), ref.evaluate(b, s)  # the clock: all but the time
                got = got.model_copy(update={"evaluated_at": want.evaluated_at, "reversibility": want.reversibility})
                assert got.model_dump() == want.model_dump()


def test_repair_actions_in_a_stopped_workflow_with_fields_missing():
    """A type that runs while stopped is decided by its own rules, with the stopped state
    as `workflow` (the reference gate's hook runs its fused gate on that state)."""
    fast, ref = engines("policies")
    p = ref.compiled
    cases = []
    for a, _, n in _fixture_requests():
        wf = p.workflows.get(a.get("workflow"))
        ca = wf.actions.get(a.get("type")) if wf is not None else None
        if ca is None or not ca.runs_while_stopped:
            continue
        keys = [k for k in a if k not in IDENTITY]
        for trigger in [*(s.name for s in wf.stops), "nope"]:
            state = {"status": "stopped", "stopped_by": trigger, "stopped_at": "2026-03-01T00:00:00Z"}
            for drop in [set(), *({k} for k in keys), set(keys)]:
                cases.append((without(a, drop), state, n))
    assert len(cases) > 20
    for _ in range(4):
        for r in cases:
            same(fast, ref, *r)


_PICK = st.integers(min_value=0, max_value=10**6)


@pytest.mark.parametrize("d", DIRS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pick=_PICK, drop=st.lists(st.integers(min_value=0, max_value=30), max_size=6),
       wrong=st.lists(st.tuples(st.integers(min_value=0, max_value=30), st.sampled_from(WEIRD)), max_size=2),
       twice=st.booleans())
def test_random_subsets_missing_and_wrong_types_decide_as_the_reference(d, pick, drop, wrong, twice):
    fast, ref = engines(d)
    reqs = requests(d)
    a, s, n = reqs[pick % len(reqs)]
    keys = [k for k in a if k not in IDENTITY]
    b = dict(a)
    if keys:
        for i in drop:
            b.pop(keys[i % len(keys)], None)
        for i, v in wrong:
            b[keys[i % len(keys)]] = v
    for _ in range(2 if twice else 1):
        same(fast, ref, b, s, n)


def test_a_large_type_in_chunks_with_fields_missing():
    text = large_type_text(600)  # chunks, indexed conditions, fault bits past the inline bits
    fast = engine_from_texts({"p.policy": text})
    ref = engine_from_texts({"p.policy": text}, accelerate=False)
    reqs = large_type_requests(600, 40, seed=11)
    for _ in range(3):
        for a in reqs:
            fast.evaluate(a, None, T0)
    rng = random.Random(3)
    cases = []
    for a in reqs:
        keys = [k for k in a if k not in IDENTITY]
        cases.append(without(a, set(keys)))
        for _ in range(3):
            cases.append(without(a, set(rng.sample(keys, rng.randint(1, len(keys))))))
    for _ in range(2):
        for b in cases:
            same(fast, ref, b, None, T0)
    fz = fast.accelerator.gate("tools", "call_tool")
    assert len(fz.exprs) > 512 and fz.fn is not None and "except _EXC:" in fz.source


def test_the_kept_values_and_templates_may_be_emptied_at_any_time(monkeypatch):
    monkeypatch.setattr(faults_mod, "MEMO_MAX", 3)
    monkeypatch.setattr(templates_mod, "FAULTS_MAX", 2)
    d = "benchmarks/policies"
    fast = policy_engine.load(str(ROOT / d))
    ref = policy_engine.load(str(ROOT / d), accelerate=False)
    cases = single_drops(mix()[:80]) + all_drops(mix()[:80])
    for _ in range(3):
        for r in cases:
            same(fast, ref, *r)
    assert all(len(fz.memo) <= 3 and len(fz.faults) <= 2 for fz in fast.accelerator.gates())


def test_a_condition_that_reads_the_workflow_or_now_is_never_kept():
    text = """workflow "w" {
  version "1"
  owners { business "B" technical "T" }
  default deny

  action a {
    system "s"
    allow zero when `action.x == 0`
    deny late when `action.x > 1 && now.getHours() > 20`
    deny flag when `action.y == workflow.flag || action.x > 5`
    deny plain when `action.x > 3 || action.z == policy.limit`
  }
  const limit = 4
}
"""
    fast = engine_from_texts({"p.policy": text})
    ref = engine_from_texts({"p.policy": text}, accelerate=False)
    assert not fast.diagnostics or all(x.severity != "error" for x in fast.diagnostics)
    fz = fast.accelerator.gate("w", "a")
    alone = {ex.source: fields for ex, fields in zip(fz.exprs, fz.alone)}
    assert alone == {"action.x > 1 && now.getHours() > 20": None, "action.y == workflow.flag || action.x > 5": None,
                     "action.x > 3 || action.z == policy.limit": ("x", "z"), "action.x == 0": ("x",)}
    night = T0.replace(hour=23)
    cases = [({"workflow": "w", "type": "a", "id": "1", **f}, s, n)
             for f in ({"x": 2, "y": 1}, {"y": 1}, {"x": 2}, {}, {"x": 9}, {"x": "2"}, {"z": 4}, {"x": 2, "z": 4.0},
                       {"x": 0}, {"x": 0.0}, {"x": False}, {"x": 0, "y": 1})
             for s in (None, {"status": "running", "flag": 1}, {"status": "running"})
             for n in (T0, night)]
    for _ in range(4):
        for r in cases:
            same(fast, ref, *r)


# ----------------------------------------------------------------------------- the fast lane is taken
@pytest.mark.parametrize("d", DIRS)
def test_missing_fields_stay_in_the_fast_lane(d, monkeypatch):
    """Once warm, an action lacking fields never reaches the reference gate: its faulted
    conditions are evaluated alone (`faults.resolve`). Fails if the whole action fell back."""
    fast, ref = engines(d)
    acc = fast.accelerator
    def lane(r) -> bool:  # a declared type without declared fields, a running workflow
        fz = acc.lanes.get((r[0]["workflow"], r[0]["type"]))
        return fz is not None and fz.action.fields is None and (r[1] is None or r[1] == {"status": "running"})

    cases = [r for r in single_drops(requests(d)) + all_drops(requests(d)) if lane(r)]
    assert len(cases) > (500 if d == "benchmarks/policies" else 100)
    for r in cases:  # warm: shapes widened, templates and kept values made
        fast.evaluate(*r)
    reference = []
    resolved = []
    real_reference, real_resolve = acc._reference, templates_mod.resolve
    monkeypatch.setattr(acc, "_reference", lambda *x: reference.append(x) or real_reference(*x))
    monkeypatch.setattr(templates_mod, "resolve", lambda *x: resolved.append(x) or real_resolve(*x))
    for r in cases:
        same(fast, ref, *r)
    assert reference == []
    assert len(resolved) > len(cases) // 2  # most of them have a faulted condition
    assert sum(len(fz.faults) for fz in acc.gates()) > 10  # outcomes with errors, from templates


def test_without_isolation_missing_fields_go_to_the_reference_gate(monkeypatch):
    """The switch (`fused.ISOLATE`): off, a condition that raises turns the whole input
    away, as before; the decisions are the same, and the structural check above sees it."""
    monkeypatch.setattr(fused_mod, "ISOLATE", False)
    d = "benchmarks/policies"
    fast = policy_engine.load(str(ROOT / d))
    ref = policy_engine.load(str(ROOT / d), accelerate=False)
    cases = [r for r in single_drops(mix()[:60]) if r[1] is None]
    for _ in range(3):
        for r in cases:
            fast.evaluate(*r)
    acc = fast.accelerator
    reference = []
    real_reference = acc._reference
    monkeypatch.setattr(acc, "_reference", lambda *x: reference.append(x) or real_reference(*x))
    for r in cases:
        same(fast, ref, *r)
    assert len(reference) > len(cases) // 2
    assert all("except _EXC:" not in (fz.source or "") for fz in acc.gates())


def test_a_missing_field_costs_its_conditions_alone_not_the_gate():
    """Warm, an action lacking a field evaluates no condition twice and calls the closures
    of none whose value is kept (a condition that reads only action fields)."""
    fast, ref = engines("benchmarks/policies")
    a = next(a for a, s, _ in mix() if s is None and a["type"] == "issue_goodwill_credit")
    b = without(a, {"amount"})
    for _ in range(4):
        same(fast, ref, b, None, T0)
    fz = fast.accelerator.gate(a["workflow"], a["type"])
    calls = []
    for ex in fz.exprs:
        ex_cls = type(ex)
        break
    real = ex_cls._slow
    try:
        ex_cls._slow = lambda self, act: calls.append(self) or real(self, act)
        same(fast, ref, b, None, T0)
    finally:
        ex_cls._slow = real
    assert not [ex for ex in calls if fz.alone[fz.exprs.index(ex)] is not None]


# ----------------------------------------------------------------------------- fuse(isolate=True)
def test_fuse_isolates_each_condition_with_a_fault_bit():
    srcs = ["action.a > 1", "action.b == 'x' || action.a > 5", "action.c", "now.getHours() < 6"]
    exprs = [compile_cel(s) for s in srcs]
    fn, src = fuse(exprs, ("action", "workflow", "now", "policy"), isolate=True)
    # every condition that reads an action field the prologue has not proved present;
    # the one reading `now` alone (never absent) runs without a `try`
    assert fn is not None and src.count("except _EXC:") == 3
    n = len(srcs)
    assert fn({"a": 2, "b": "x", "c": True}, {}, T0, {}) == 0b0111
    # `a` missing: conditions 0 and 1 raise (fault bits), 2 and 3 keep their values
    assert fn({"b": "y", "c": False}, {}, T0, {}) == (0b011 << n)
    # a non-bool value is a fault too; the others are decided
    assert fn({"a": 0, "b": "y", "c": 7}, {}, T0.replace(hour=3), {}) == 0b1000 | (0b100 << n)
    plain, _ = fuse(exprs, ("action", "workflow", "now", "policy"))
    with pytest.raises(KeyError):
        plain({"b": "y", "c": False}, {}, T0, {})  # without `isolate`: the whole function raises


def test_fuse_isolates_only_the_conditions_that_may_read_an_absent_field():
    """A `try` costs a dispatch per condition even when nothing raises: the conditions that
    read only fields the prologue proved present (or `now`, or the policy's constants) run
    without one; one of them that raises still turns the whole input away."""
    exprs = [compile_cel(s) for s in ("action.a > 1", "action.b == 'x'", "now.getHours() < 6")]
    prologue = ["_f0 = _p0['a']", "if type(_f0) is not int: _fb()", "_f1 = _p0.get('b', _MISS)"]
    fields = {("action", "a"): ("_f0", "int", False), ("action", "b"): ("_f1", None, True)}
    fn, src = fuse(exprs, ("action", "workflow", "now", "policy"), prologue, {"_MISS": object()}, fields,
                   isolate=True)
    assert fn is not None and src.count("except _EXC:") == 1  # `b` alone may be absent
    assert fn({"a": 2, "b": "x"}, {}, T0, {}) == 0b011
    assert fn({"a": 2}, {}, T0, {}) == 0b001 | (0b010 << 3)  # `b` absent: its fault bit


# ----------------------------------------------------------------------------- kept values
_KEYS_POLICY = """workflow "w" {
  version "1"
  owners { business "B" technical "T" }
  default deny

  action a {
    system "s"
    allow sign when `action.y > 1 || 1.0 / action.x > 0.0`
    deny same when `action.y == 2 || action.x == 1`
    deny text when `action.y || action.x == "0"`
  }
}
"""


def test_kept_values_tell_equal_values_of_other_types_and_signed_zeros_apart():
    fast = engine_from_texts({"p.policy": _KEYS_POLICY})
    ref = engine_from_texts({"p.policy": _KEYS_POLICY}, accelerate=False)
    xs = [0.0, -0.0, 1, 1.0, True, "1", "0", None, float("nan"), float("inf"), 2**70, ""]
    for _ in range(4):
        for x in xs:
            for a in ({"x": x}, {"x": x, "y": 0}, {"x": x, "y": 3}, {"x": x, "y": "a"}):
                same(fast, ref, {"workflow": "w", "type": "a", "id": "i", **a}, None, T0)
    fz = fast.accelerator.gate("w", "a")
    assert fz.memo  # values were kept (and told apart: the decisions above are the reference's)
    assert {k[2] for k in fz.memo if k[1] == 5} >= {"0.0", "-0.0"}  # a float zero keyed by its text


def test_once_evaluates_a_released_condition_without_keeping_its_closures():
    fast = engine_from_texts({"p.policy": _KEYS_POLICY})
    ref = engine_from_texts({"p.policy": _KEYS_POLICY}, accelerate=False)
    wf = fast.compiled.workflows["w"]
    for r in wf.actions["a"].rules:
        ex = r.fn
        ex._release()
        for action in ({}, {"x": 0.0}, {"x": "0", "y": True}, {"y": 3}):
            act = {"action": action, "workflow": wf.running_state, "now": T0, "policy": wf.policy}
            got = ex._once(act)
            assert ex._fn is None  # not kept
            want = next(x for x in ref.compiled.workflows["w"].actions["a"].rules if x.name == r.name).fn(act)
            assert type(got) is type(want) and (got == want or got is want)


def test_an_outcome_with_errors_gets_its_template_on_its_second_sighting():
    fast = engine_from_texts({"p.policy": _KEYS_POLICY})
    ref = engine_from_texts({"p.policy": _KEYS_POLICY}, accelerate=False)
    a = {"workflow": "w", "type": "a", "id": "i", "x": 1.5}  # `y` missing: errors
    want = ref.evaluate(a, None, T0).model_dump()
    for _ in range(3):  # the fused gate is built on the third, which it decides
        assert fast.evaluate(a, None, T0).model_dump() == want
    fz = fast.accelerator.gate("w", "a")
    assert fz.fn is not None and len(fz.faults) == 1 and next(iter(fz.faults.values())) is None
    assert fast.evaluate(a, None, T0).model_dump() == want
    assert len(fz.faults) == 1 and next(iter(fz.faults.values())) is not None
    for i in range(3):
        same(fast, ref, {**a, "id": f"k{i}"}, None, T0)
