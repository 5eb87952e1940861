"""Released conditions (issue 16, goal 5): a loaded engine's `CompiledExpr`s keep only what
compiles them again (source, constants, limits) and what is read without evaluating
(`type_guard`, `reads`); the closures and the compiled tree are compiled again on first
need. A released expression must behave exactly as the one compile_cel made: same values,
same errors, same fast path, same references, and so must an engine's decisions.
Structural, no timing."""

from __future__ import annotations

import inspect
import json
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from shared_data import require
from test_cel_conformance import CONF_DIR, FILES, Skip, convert, is_plain
from test_cel_fastpath import CONSTANTS, _compile, activations, expressions, plain_activations, same, typed_expressions

from policy_engine.cel import CelCompileError, CelError, compile_cel
from policy_engine.cel.codegen import generator_of
from policy_engine.cel.fuse import fuse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from depth import examples  # noqa: E402

from benchmarks.gen_policies import large_type_requests, large_type_text, policy_text  # noqa: E402


def released(e: Any) -> Any:
    """A second, released compilation of `e`'s source (same constants and limits)."""
    r = compile_cel(e.source, limits=e.limits, constants=e._constants, accelerate=e._accel)
    r._release()
    assert r._fn is None and r._refs is None
    return r


def equal(a: Any, b: Any) -> bool:
    if type(a) is CelError or type(b) is CelError:
        return type(a) is type(b) and a.message == b.message and a.budget == b.budget
    return same(a, b)


def check_pair(eager: Any, act: Any) -> None:
    """A released twin evaluates exactly as `eager`: called, alone (closures), by its fast path."""
    lazy = released(eager)
    assert equal(lazy._slow(act), eager._slow(act)), (eager.source, act)
    assert lazy._fn is not None  # materialized, and kept
    twin = released(eager)
    assert equal(twin(act), eager(act)), (eager.source, act)
    assert lazy.references == eager.references
    assert lazy.type_guard == eager.type_guard and lazy.reads == eager.reads
    third = released(eager)
    fe, fl = eager._fast_fn(), third._fast_fn()
    assert (fe is None) == (fl is None)
    assert eager._fast_source == third._fast_source  # the same tree generates the same code
    for e in (eager, third):
        e._fast = None  # compare the generated functions' values too, where they return
    if fe is not None:
        try:
            want: Any = fe(act)
        except Exception as ex:  # noqa: BLE001
            want = type(ex)
        try:
            got: Any = fl(act)
        except Exception as ex:  # noqa: BLE001
            got = type(ex)
        assert got == want if isinstance(want, type) else same(got, want), (eager.source, act)


# -- the conformance corpus ---------------------------------------------------------


def _cases() -> list[tuple[str, dict]]:
    out = []
    for name in FILES:
        data = json.loads((CONF_DIR / f"{name}.json").read_text())
        for section in data.get("section", []):
            for t in section.get("test", []):
                if not is_plain(t) or t.get("check_only"):
                    continue
                try:
                    act = {k: convert(v["value"]) for k, v in t.get("bindings", {}).items()}
                except Skip:
                    continue
                out.append((t["expr"], act))
    return out


def test_released_expressions_equal_eager_ones_over_the_conformance_corpus():
    require(CONF_DIR)  # (skips, or fails under STOPLINE_REQUIRE_SHARED=1, without the suite)
    n = 0
    for src, act in _cases():
        try:
            eager = compile_cel(src)
        except CelCompileError:
            continue
        check_pair(eager, act)
        n += 1
    assert n > 1000, n  # the corpus was really walked


# -- random expressions --------------------------------------------------------------


@settings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(src=expressions, act=activations)
def test_released_equals_eager_on_random_expressions(src: str, act: dict) -> None:
    check_pair(_compile(src, True), act)


@settings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(src=typed_expressions, act=plain_activations)
def test_released_equals_eager_on_typed_expressions(src: str, act: dict) -> None:
    check_pair(_compile(src, True), act)


def test_constants_and_accelerate_flag_are_kept():
    e = compile_cel("action.amount > policy.limit && action.type in policy.names", constants=CONSTANTS)
    lazy = released(e)
    assert lazy._constants is CONSTANTS
    act = {"action": {"amount": 10**9, "type": "a"}}
    assert lazy(act) == e(act)
    slow = compile_cel("action.amount > 1", accelerate=False)
    slow._release()
    assert slow._plan is None  # never a tree to rebuild: no fast path, ever
    assert slow({"action": {"amount": 2}}) is True
    assert slow._fast_fn() is None and generator_of(slow) is None


def test_references_come_back_without_keeping_the_closures():
    e = compile_cel("action.a.b == request.user && has(action.c)")
    lazy = released(e)
    assert lazy.references == e.references
    assert lazy._fn is None  # reading references compiles, but keeps only the references


# -- threads and deep stacks -----------------------------------------------------------


def test_threads_materializing_at_once_all_get_the_right_value():
    src = "action.items.exists(i, i.price > 10 && i.sku.startsWith('x')) || action.amount > 3"
    act = {"action": {"items": [{"price": 11, "sku": "xy"}], "amount": 1}}
    for _ in range(20):
        e = compile_cel(src)
        e._release()
        barrier = threading.Barrier(8)
        out: list = []

        def run() -> None:
            barrier.wait()  # noqa: B023
            out.append((e(act), e._slow(act), e.references))  # noqa: B023

        ts = [threading.Thread(target=run) for _ in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert len(out) == 8 and all(v == (True, True, e.references) for v in out), out


def test_a_deep_condition_materialized_deep_in_the_stack_does_not_raise():
    # it compiles at load time with a short stack (about 140 frames); materialized with
    # fewer frames left than that (evaluating takes about 5), it compiles again in a fresh
    # thread (an empty stack) instead of failing
    src = "(" * 30 + "action.a == 1" + ")" * 30 + " && " + " && ".join(f"action.f{i} > {i}" for i in range(40))
    e = compile_cel(src)
    act = {"action": {"a": 1, **{f"f{i}": i + 1 for i in range(40)}}}
    assert e(act) is True
    e._release()
    room = 40

    def deep(n: int, f: Any) -> Any:
        if n > 0:
            return deep(n - 1, f)
        return f()

    def compiled_here() -> bool:
        try:
            compile_cel(src)
        except CelCompileError:
            return False
        return True

    n = sys.getrecursionlimit() - len(inspect.stack(0)) - room
    assert deep(n, compiled_here) is False  # where compiling does not fit...
    assert deep(n, lambda: e(act)) is True  # ...the released condition still evaluates
    assert e._fn is not None


# -- fused functions -------------------------------------------------------------------


def test_fuse_reads_released_trees_and_drops_the_trees_it_inlined():
    from policy_engine.cel.api import _UNBUILT

    a = compile_cel("action.amount > 10")
    b = compile_cel("action.tags.exists(t, t == 'x')")
    c = compile_cel("action.amount > 1", accelerate=False)  # called as itself
    eager_fn, eager_src = fuse([a, b, c], ("action",))
    assert a._plan is _UNBUILT and b._plan is _UNBUILT  # dropped by the fuse: not kept
    assert a._fn is not None and b._fn is not None  # the closures stay (a cache: tests/test_gc_warm.py)
    for e in (a, b, c):
        e._release()
    fn, src = fuse([a, b, c], ("action",))
    assert fn is not None and src == eager_src  # generated from equal trees
    assert a._plan is _UNBUILT and b._plan is _UNBUILT and c._plan is None
    # compiled again for the build, the closures not kept: inlined before, the fused
    # function evaluates them (tests/test_gc_warm.py)
    assert a._fn is None and b._fn is None
    assert c._fn is None  # its closures are compiled on its first call
    act = {"action": {"amount": 11, "tags": ["x"]}}
    assert fn(act["action"]) == eager_fn(act["action"]) == 0b111
    assert c._fn is not None
    # a dropped tree is compiled again when read, and still not kept
    again, src2 = fuse([a, b], ("action",))
    assert again is not None and a._plan is _UNBUILT
    assert a._fast_fn() is not None and a._plan is _UNBUILT
    assert a._fast_source == _fast_source_of("action.amount > 10") and src2


def _fast_source_of(src: str) -> str | None:
    e = compile_cel(src)
    e._fast_fn()
    return e._fast_source


# -- an engine's decisions -------------------------------------------------------------


def _engines(load: Any, monkeypatch: Any) -> tuple[Any, Any]:
    """(released, eager): the same policy loaded twice, the second time not released."""
    from policy_engine import compiler

    lazy = load()
    with monkeypatch.context() as m:
        m.setattr(compiler, "release", lambda exprs: None)
        eager = load()
    for engine, kept in ((lazy, False), (eager, True)):
        exprs = [r.fn for w in engine.compiled.workflows.values() for a in w.actions.values() for r in a.rules]
        assert exprs and all((e._fn is not None) is kept for e in exprs)
    return lazy, eager


def _text(text: str) -> Any:
    from policy_engine.engine import Engine
    from policy_engine.language.loader import load_text

    return lambda: Engine.from_load_result(load_text(text, "gen.policy"))


def _decide(engine: Any, reqs: list) -> list:
    return [engine.evaluate(a, s, n).model_dump(mode="json") for a, s, n in reqs]


NOW = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)


def test_engine_decisions_are_unchanged_by_releasing(monkeypatch):
    import policy_engine
    from benchmarks.requests import make_mix

    lazy, eager = _engines(lambda: policy_engine.load(ROOT / "benchmarks" / "policies"), monkeypatch)
    mix = make_mix(300)
    for _ in range(4):  # before, while and after the fused gates are built
        assert _decide(lazy, mix) == _decide(eager, mix)


def test_large_type_decisions_are_unchanged_by_releasing(monkeypatch):
    lazy, eager = _engines(_text(large_type_text(300)), monkeypatch)
    reqs = [(a, None, NOW) for a in large_type_requests(300, 150)]
    for _ in range(3):
        assert _decide(lazy, reqs) == _decide(eager, reqs)


def test_every_type_of_the_generated_policy_decides_the_same(monkeypatch):
    lazy, eager = _engines(_text(policy_text(300)), monkeypatch)
    reqs = [({"id": "x", "type": t, "workflow": w}, None, NOW)
            for w, cw in lazy.compiled.workflows.items() for t in cw.actions]
    for _ in range(4):
        assert _decide(lazy, reqs) == _decide(eager, reqs)
