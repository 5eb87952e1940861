"""A warm engine's conditions (issue 16, goal 5, "after its first evaluations"): a fused
function inlines a type's conditions (`cel.fuse`), which then keep their closures and own
fast paths only while among the last `api.INLINED_KEPT` inlined conditions to need them
(`CompiledExpr._inline`, `_keep`, `_evict`); the reference gate compiles them again when
the fused function turns an input away (and keeps them then). Dropping and rebuilding
must never change a value or a decision, also while other threads evaluate. Structural,
no timing."""

from __future__ import annotations

import gc
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from policy_engine.cel import CelError, api, compile_cel
from policy_engine.cel.fuse import fuse
from policy_engine.engine import Engine
from policy_engine.language.loader import load_text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT))
from benchmarks.gen_policies import large_type_requests, large_type_text, policy_text  # noqa: E402

NOW = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)

# measured: 12,628 tracked objects for the 1,000-rule engine after one action of every type,
# three times (its fused gates built; 9,540 just loaded), 30,775 when the inlined
# conditions kept their closures and own fast paths (and every fragment, one set per
# shape): the bound leaves ~20% margin and fails if the closures come back (~14,000)
WARM_TRACKED_BOUND = 15_000


def _engine(text: str, accelerate: bool = True) -> Engine:
    return Engine.from_load_result(load_text(text, "gen.policy"), accelerate=accelerate)


def _every_type(engine: Engine) -> list:
    """One action of every declared type, without the fields its rules read (error paths)."""
    return [({"id": "x", "type": t, "workflow": w}, None, NOW)
            for w, cw in engine.compiled.workflows.items() for t in cw.actions]


def _decide(engine: Engine, reqs: list) -> list:
    return [engine.evaluate(a, s, n).model_dump(mode="json") for a, s, n in reqs]


def _conditions(engine: Engine) -> list:
    seen: dict = {}
    for w in engine.compiled.workflows.values():
        for a in w.actions.values():
            for c in (*a.rules, *w.stops):
                if c.fn is not None:
                    seen[id(c.fn)] = c.fn
    return list(seen.values())


@pytest.fixture(autouse=True)
def _collector_sees_everything(monkeypatch):
    """These count the objects the engine is made of: with the native helpers, a loaded
    engine takes them out of the collector's lists (`native.quiet`), which would hide them."""
    monkeypatch.setenv("STOPLINE_GC_QUIET", "0")


@pytest.fixture(scope="module")
def big_text() -> str:
    return policy_text(1000)


# -- the warm engine -------------------------------------------------------------------


def test_a_warm_engine_tracks_few_objects(big_text):
    Engine.from_load_result(load_text(big_text, "gen.policy"))  # imports, caches
    gc.collect()
    before = len(gc.get_objects())
    engine = Engine.from_load_result(load_text(big_text, "gen.policy"))
    reqs = _every_type(engine)
    for _ in range(3):
        for a, s, n in reqs:
            engine.evaluate(a, s, n)
    gc.collect()
    n = len(gc.get_objects()) - before
    assert n < WARM_TRACKED_BOUND, n
    exprs = _conditions(engine)
    assert len(exprs) > 1000
    fused = [fz for fz in engine.accelerator.lanes.values()]
    assert fused and all(fz.fn is not None for fz in fused)  # every type's fused gate built
    # every condition evaluated is inlined (one stop trigger is `false` by its type guard
    # for every declared type): no trees, and closures or fast paths for a bounded few
    assert sum(e._cache != 0 for e in exprs) > 1000  # a cache entry (1), or evicted (2)
    # none compiled again since (they would be kept: 2 and holding them)
    assert all(e._cache == 1 or (e._fn is None and e._fast is None) for e in exprs)
    assert all(e._plan is api._UNBUILT for e in exprs if e._accel)
    holding = [e for e in exprs if e._fn is not None or e._fast is not None]
    assert len(holding) <= api.INLINED_KEPT
    # and they still decide as an engine that never dropped anything
    eager = _engine(big_text, accelerate=False)
    assert _decide(engine, reqs) == _decide(eager, reqs)


def test_the_kept_closures_are_the_last_needed(monkeypatch):
    monkeypatch.setattr(api, "INLINED_KEPT", 3)
    exprs = [compile_cel(f"action.n > {i}") for i in range(6)]
    for e in exprs:
        assert e({"action": {"n": 4}}) is (4 > int(e.source.split()[-1]))
        e._fast_fn()
    fn, _ = fuse(exprs[:3], ("action",))
    fn2, _ = fuse(exprs[3:], ("action",))
    assert fn is not None and fn({"n": 4}) == 0b111 and fn2({"n": 4}) == 0b1
    # each held its closures and fast path: the fuses noted them in order, the last 3 stay
    assert [e._fn is not None for e in exprs] == [False, False, False, True, True, True]
    assert [e._fast is not None for e in exprs] == [False, False, False, True, True, True]
    assert [e._cache for e in exprs] == [2, 2, 2, 1, 1, 1]
    # needed again: compiled again and kept for good (no cache entry: evicts none)
    assert exprs[0]({"action": {"n": 4}}) is True
    assert exprs[0]._fn is not None and all(e._fn is not None for e in exprs[3:])
    # the fast path too, after the warm-up, exactly
    e = exprs[0]
    for _ in range(3):
        assert e({"action": {"n": 4}}) is True and e({"action": {"n": 0}}) is False
    assert e._fast is not None and e._fast({"action": {"n": 4}}) is True
    # inlined again (a rebuild): still kept; its tree compiled for the build, not kept
    fuse(exprs[:3], ("action",))
    assert e._cache == 2 and e._fn is not None and e._plan is api._UNBUILT
    # an evicted one rebuilt into a fused function: the build compiles its tree, not its
    # closures (the fused function evaluates it)
    assert exprs[1]._fn is None and exprs[1]._cache == 2


def test_a_large_fused_function_leaves_its_conditions_closures_alone(monkeypatch):
    monkeypatch.setattr(api, "INLINED_KEPT", 3)
    exprs = [compile_cel(f"action.n > {i}") for i in range(4)]
    for e in exprs:
        e({"action": {"n": 1}})
    fn, _ = fuse(exprs, ("action",))
    assert fn is not None
    # more than INLINED_KEPT inlined: one input turned away would compile them all again
    assert all(e._cache == 0 and e._fn is not None and e._plan is api._UNBUILT for e in exprs)


def test_inlined_conditions_rebuilt_give_the_same_values(monkeypatch):
    """Every condition released, inlined, evicted and compiled again evaluates exactly as a
    fresh compilation: values, errors (an absent field), fast path."""
    monkeypatch.setattr(api, "INLINED_KEPT", 1)
    sources = ['action.amount > 10 && action.tenant != "t1"', 'action.tags.exists(t, t.startsWith("x"))',
               'action.type in ["a", "b"] && action.n > 2', 'size(action.tags) == 2 || action.amount < 0',
               'action.tags.all(t, t.endsWith(":*")) && action.amount <= 90', 'action.body.matches("^a+$")']
    acts = [{"action": {}}, {"action": {"amount": 11, "tenant": "t2", "tags": ["xa", "b"], "type": "a", "n": 3,
                                         "body": "aa"}},
            {"action": {"amount": -1, "tags": [1]}}, {"action": {"amount": "x", "tags": "s", "type": 3}}]
    fresh = [compile_cel(s) for s in sources]
    lazy = [compile_cel(s) for s in sources]
    for e in lazy:
        e._release()
        fuse([e], ("action",))  # inlined (a cache entry): each evicts the one before
    assert [e._cache for e in lazy] == [2] * 5 + [1]
    for r in range(6):  # before and after their own fast paths come back
        if r % 2:
            for e in lazy:
                e._evict()
        for act in acts:
            for f, e in zip(fresh, lazy):
                a, b = f(act), e(act)
                assert type(a) is type(b) and (a.message == b.message if type(a) is CelError else a == b), \
                    (e.source, act)
                b2 = e._slow(act)
                assert type(a) is type(b2) and (a.message == b2.message if type(a) is CelError else a == b2)
    assert all(e._cache == 2 and e._fn is not None for e in lazy)  # needed again: kept


# -- an engine's decisions -------------------------------------------------------------


@pytest.mark.parametrize("kept", [2, 8, 64])
def test_decisions_are_unchanged_by_evicting(monkeypatch, kept):
    """With room for 2, 8 or the default number of inlined conditions' closures, every
    decision equals the reference gate's over closures that are never dropped: error paths
    (the generated policy's bare actions: every fused function turns them away; evicted,
    compiled again), the benchmark mix (stopped workflows, undeclared types) and a large
    type (its closures left alone)."""
    import policy_engine
    from benchmarks.requests import make_mix

    monkeypatch.setattr(api, "INLINED_KEPT", kept)
    text = policy_text(200)
    lazy, ref = _engine(text), _engine(text, accelerate=False)
    reqs = _every_type(lazy)
    for _ in range(4):  # before, while and after the fused gates are built
        assert _decide(lazy, reqs) == _decide(ref, reqs)
    lazy = policy_engine.load(ROOT / "benchmarks" / "policies")
    ref = policy_engine.load(ROOT / "benchmarks" / "policies", accelerate=False)
    mix = make_mix(300)
    for _ in range(4):
        assert _decide(lazy, mix) == _decide(ref, mix)
    text = large_type_text(300)
    lazy, ref = _engine(text), _engine(text, accelerate=False)
    big = [(a, None, NOW) for a in large_type_requests(300, 150)]
    for _ in range(3):
        assert _decide(lazy, big) == _decide(ref, big)


def test_threads_racing_evictions_agree_with_the_reference(monkeypatch):
    """Threads evaluating (fused functions, and the reference gate for the inputs they turn
    away) while another drops every condition's closures and fast path over and over:
    every decision equals the reference engine's."""
    monkeypatch.setattr(api, "INLINED_KEPT", 2)
    import policy_engine
    from benchmarks.requests import make_mix

    text = policy_text(100)
    lazy, ref = _engine(text), _engine(text, accelerate=False)
    reqs: list[Any] = _every_type(lazy)
    bench, bench_ref = policy_engine.load(ROOT / "benchmarks" / "policies"), \
        policy_engine.load(ROOT / "benchmarks" / "policies", accelerate=False)
    mix = make_mix(200)
    want = _decide(ref, reqs)
    want_mix = _decide(bench_ref, mix)
    exprs = _conditions(lazy) + _conditions(bench)
    stop = threading.Event()
    bad: list = []

    def evict() -> None:
        while not stop.is_set():
            for e in exprs:
                e._evict()

    def work() -> None:
        try:
            for _ in range(5):
                if _decide(lazy, reqs) != want:
                    bad.append("generated")
                if _decide(bench, mix) != want_mix:
                    bad.append("mix")
        except Exception as ex:  # noqa: BLE001 - reported below
            bad.append(repr(ex))

    ev = threading.Thread(target=evict)
    ev.start()
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often: inside the gate, between reads
    try:
        ts = [threading.Thread(target=work) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    finally:
        sys.setswitchinterval(old)
        stop.set()
        ev.join()
    assert not bad, bad[:3]


def test_decision_fragments_are_built_one_by_one(big_text):
    """A rule's or stop trigger's fragments are built when a decision shows them, each on
    its own: an erring rule's `TraceEntry` is the decision's own, so neither of its kept
    ones is built."""
    engine = _engine(big_text)
    wf = next(iter(engine.compiled.workflows.values()))
    ca = next(iter(wf.actions.values()))
    items = [item for _, item in ca.gate]
    assert all(i._ref is None and i._trace_true is None and i._trace_false is None for i in items)
    d = engine.evaluate({"id": "x", "type": ca.name, "workflow": wf.name}, None, NOW)
    errs = {e.rule for e in d.errors}
    assert errs
    for item in items:
        assert item._trace_true is None
        if item.name in errs:
            assert item._trace_false is None
        else:
            assert item._trace_false is not None
        assert (item._ref is not None) == any(m is item._ref for m in d.matched)


def test_shared_sets_are_equal_str_sets_only_and_bounded(monkeypatch):
    import importlib

    from policy_engine.engine.accel import shapes

    fuse_mod = importlib.import_module("policy_engine.cel.fuse")
    monkeypatch.setattr(fuse_mod, "_SHARED", {})
    a, b = frozenset({"x", "y"}), frozenset({"y", "x"})
    assert fuse_mod._shared(a) is a and fuse_mod._shared(b) is a
    one, true = frozenset({1}), frozenset({True})
    assert fuse_mod._shared(one) is one and fuse_mod._shared(true) is true  # equal, not the same
    monkeypatch.setattr(fuse_mod, "_SHARED", {})
    monkeypatch.setattr(fuse_mod, "_SHARED_MAX", 1)
    c = frozenset({"c"})
    assert fuse_mod._shared(c) is c and fuse_mod._shared(frozenset({"c"})) is c
    d = frozenset({"d"})
    assert fuse_mod._shared(d) is d and len(fuse_mod._SHARED) == 1  # full: not added
    monkeypatch.setattr(shapes, "_WIDE", {})
    assert shapes.widen(None, str) is shapes.widen(frozenset(), str) == {str}
