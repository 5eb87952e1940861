"""What a loaded engine builds on its first evaluations, out of the cyclic collector's walks
too (session 26; issue 16, goal 5: "a loaded engine adds no full-collection pause to its
host"). Session 25 took the engine's compiled objects out of the collector's generations
at load (`native.quiet`); a fused gate's build (`FusedGate.build`) then made ~3,500 more
that stayed in them (its function, globals, defaults, Makers, the conditions' closures it
holds) and the decision fragments (`compiled._Fragments`) its templates read. Each build now
keeps a `Quiet` (in `Accelerator.quiets`, by fused gate) of exactly what it made that its
function holds (`native.made`) and of its type's fragments (`Quiet.add`); a rebuild's
replaces it, the engine's end puts everything back and frees it all. Never the host's
objects nor a decision returned. Structural, no timing (the bench times the pause)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
import weakref
from datetime import UTC, datetime
from pathlib import Path

import pytest

import policy_engine
from policy_engine.engine.accel import native

pytestmark = pytest.mark.skipif(not native.AVAILABLE, reason="the native helpers are not built")

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
Quiet = native._Quiet
Maker = native._Maker


def _every_type(engine):
    return [{"id": "x", "type": t, "workflow": w} for w, cw in engine.compiled.workflows.items() for t in cw.actions]


def _warm(engine):
    out = []
    for _ in range(3):  # the third evaluation of a type builds its fused gate (FUSE_AFTER)
        out += [engine.evaluate(a, None, NOW) for a in _every_type(engine)]
    return out


def _walked(o) -> bool:
    return any(x is o for x in gc.get_objects())


def _built(engine):
    return [fz for fz in engine.accelerator.lanes.values() if fz.fn is not None]


def _q(engine, fz):
    return engine.accelerator.quiets.get(fz)


def _fragments(fz):
    return [x for e in fz.action.gate for x in (e[-1]._ref, e[-1]._trace_true, e[-1]._trace_false) if x is not None]


def test_what_a_build_makes_is_out_of_the_walks_yet_tracked():
    engine = policy_engine.load(str(ROOT / "policies"))
    decisions = _warm(engine)
    built = _built(engine)
    assert built
    quiets = list(engine.accelerator.quiets.values())
    for fz in built:
        q = _q(engine, fz)
        assert type(q) is Quiet, fz.wname
        fn = fz.fn
        glob = fn.__globals__
        makers = [v for v in glob.values() if type(v) is Maker]
        assert makers
        for o in (fn, glob, fn.__defaults__, *makers, fz.shapes):
            assert o in q and gc.is_tracked(o), type(o).__name__
        frags = _fragments(fz)  # (a stop trigger's: in the Quiet of one of its workflow's types)
        assert frags and all(gc.is_tracked(f) and any(f in x for x in quiets) for f in frags)
        # neither the engine's caches (their entries come and go) nor shared objects
        for c in fz.caches():
            assert c not in q
        assert glob["_FZ"] not in q and glob["_FZ"] in engine._quiet  # (the load's)
    gc.collect()
    fz = built[0]
    assert not _walked(fz.fn) and not _walked(fz.fn.__globals__)
    # what the caller got is the caller's: every decision returned is in the walks
    walked = {id(o) for o in gc.get_objects()}
    assert all(id(d) in walked for d in decisions[-5:])
    assert all(d not in _q(engine, fz) for fz in built for d in decisions[-5:])


def test_the_hosts_objects_are_never_taken():
    engine = policy_engine.load(str(ROOT / "policies"))
    held = []
    for _ in range(3):
        for a in _every_type(engine):
            a = {**a, "meta": {"k": [1]}}  # the host's action, with containers in it
            held.append(a)
            held.append(engine.evaluate(a, None, NOW))
    built = _built(engine)
    assert built
    for o in held:
        assert all(o not in _q(engine, fz) for fz in built) and o not in engine._quiet
        assert gc.is_tracked(o)


def test_everything_is_put_back_when_the_engine_goes():
    engine = policy_engine.load(str(ROOT / "policies"))
    _warm(engine)
    fz = _built(engine)[0]
    maker = next(v for v in fz.fn.__globals__.values() if type(v) is Maker)
    defaults, frag = fz.fn.__defaults__, _fragments(fz)[0]
    assert maker in _q(engine, fz) and defaults in _q(engine, fz)
    assert any(frag in q for q in engine.accelerator.quiets.values())
    w = weakref.ref(fz.fn)
    qs = [weakref.ref(_q(engine, f)) for f in _built(engine)] + [weakref.ref(engine._quiet)]
    del engine, fz
    gc.collect()
    assert all(q() is None for q in qs) and w() is None  # nothing it took keeps anything alive
    for o in (maker, defaults, frag):  # put back before their last reference went
        assert _walked(o) and gc.is_tracked(o)


def test_a_rebuild_lets_go_of_the_old_functions_objects():
    engine = policy_engine.load(str(ROOT / "policies"))
    _warm(engine)
    fz = next(f for f in _built(engine) if f.reads and f.shapes)
    field = next(k for k in fz.reads if k not in ("workflow", "type", "id"))
    old_fn, old_q = fz.fn, _q(engine, fz)
    frags = _fragments(fz)
    old_maker = next(v for v in old_fn.__globals__.values() if type(v) is Maker)
    assert old_maker in old_q
    w_fn, w_q = weakref.ref(old_fn), weakref.ref(old_q)
    del old_fn, old_q
    a = {"id": "x", "type": fz.action.name, "workflow": fz.wname, field: 12.5}  # a shape it was not built for
    b = {**a, field: [1]}
    for x in (a, b):
        engine.evaluate(x, None, NOW)
    gc.collect()  # (a function and its globals: a cycle)
    assert fz.fn is not None and w_fn() is None and w_q() is None, fz.rebuilds  # the old one's Quiet went with it
    assert _walked(old_maker)  # put back (its last reference is here)
    q = _q(engine, fz)
    assert fz.fn.__globals__ in q and fz.fn in q
    assert all(not _walked(f) for f in frags)  # taken over by the new one, not put back


def test_quiet_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("STOPLINE_GC_QUIET", "0")
    engine = policy_engine.load(str(ROOT / "policies"))
    _warm(engine)
    assert engine.accelerator.quiets is None
    for fz in _built(engine):
        assert fz.quiet is False
        assert gc.is_tracked(fz.fn)
    gc.collect()
    assert _walked(_built(engine)[0].fn)


def test_unaccelerated_and_unquiet_engines_decide_the_same(monkeypatch):
    quiet = policy_engine.load(str(ROOT / "policies"))
    monkeypatch.setenv("STOPLINE_GC_QUIET", "0")
    plain = policy_engine.load(str(ROOT / "policies"))
    for a in _every_type(quiet) * 4:
        assert quiet.evaluate_json(a, None, NOW) == plain.evaluate_json(a, None, NOW)
    assert all(type(_q(quiet, fz)) is Quiet for fz in _built(quiet))


def test_two_threads_first_evaluating_at_once():
    engine = policy_engine.load(str(ROOT / "policies"))
    reference = policy_engine.load(str(ROOT / "policies"), accelerate=False)
    actions = _every_type(engine)
    expected = [reference.evaluate_json(a, None, NOW) for a in actions]
    barrier = threading.Barrier(2)
    got: list = [None, None]

    def run(i, engine):
        barrier.wait()
        out = []
        for _ in range(4):
            out.append([engine.evaluate_json(a, None, NOW) for a in (actions if i == 0 else actions[::-1])])
        got[i] = out

    ts = [threading.Thread(target=run, args=(i, engine)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert all(r == expected for r in got[0]) and all(r[::-1] == expected for r in got[1])
    for fz in _built(engine):
        assert type(_q(engine, fz)) is Quiet and fz.fn.__globals__ in _q(engine, fz)
    w = weakref.ref(engine._quiet)
    del engine
    gc.collect()
    assert w() is None


def test_a_worker_forked_after_warming_collects_decides_and_lets_go():
    engine = policy_engine.load(str(ROOT / "policies"))
    _warm(engine)
    actions = _every_type(engine)
    expected = [engine.evaluate_json(a, None, NOW) for a in actions]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(r)
            gc.collect()
            got = [engine.evaluate_json(a, None, NOW) for a in actions]
            gc.collect()
            fz = _built(engine)[0]
            glob, frag = fz.fn.__globals__, _fragments(fz)[0]
            ok = got == expected and glob in _q(engine, fz)
            del fz
            globals().pop("engine", None)
            del engine
            gc.collect()
            ok = ok and _walked(glob) and _walked(frag)
            os.write(w, b"ok" if ok else b"differs")
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        said = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert said == b"ok"


def test_a_warm_engine_adds_few_objects_to_the_walks_in_a_fresh_process():
    """The figure, counted: the objects the 1,000-rule engine adds to the collector's
    generations after its first evaluations (every type's fused gate built). Measured:
    4,220 before this session (675 just loaded), 1,756 now; what is left is the conditions'
    own closures and fast paths (`cel.api`: evicted and built again, not the engine's for
    life), their values kept (`faults`) and the caches' containers."""
    code = textwrap.dedent("""
        import gc, sys, os, tempfile
        from datetime import UTC, datetime
        import policy_engine
        from benchmarks.gen_policies import policy_text, large_type_text
        d = tempfile.mkdtemp(); p = os.path.join(d, 'big.policy'); open(p, 'w').write(policy_text(1000))
        s = os.path.join(d, 's.policy'); open(s, 'w').write(large_type_text(10))
        policy_engine.load(s); gc.collect(); n0 = len(gc.get_objects())
        e = policy_engine.load(p)
        now = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
        for _ in range(3):
            for w, cw in e.compiled.workflows.items():
                for t in cw.actions:
                    e.evaluate({"id": "x", "type": t, "workflow": w}, None, now)
        gc.collect(); print(len(gc.get_objects()) - n0)
    """)
    out = {}
    for flag in ("1", "0"):
        env = {**os.environ, "STOPLINE_GC_QUIET": flag}
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=str(ROOT),
                           env=env)
        out[flag] = int(r.stdout.split()[-1])
    assert out["0"] > 12_000, out  # the engine and what its first evaluations make
    assert out["1"] < 2_500, out  # what the collector still walks of it


# -- Quiet.add ----------------------------------------------------------------------------


class Node:
    __slots__ = ("ref", "__weakref__")

    def __init__(self, ref=None):
        self.ref = ref


_HELD = (Node(),)


def _made():
    def f(x, _d=_HELD):
        return x

    return f


def test_add_takes_exactly_what_it_is_given_of_the_kinds_it_knows():
    f = _made()
    inner = Node()
    t = (inner,)
    lst = [Node()]
    q = Quiet((), __name__)
    assert len(q) == 0
    assert q.add([f, f.__defaults__, t, lst, 5, "s", f, ()]) == 3  # once each; no list, no atom
    assert f in q and f.__defaults__ in q and t in q
    assert inner not in q and f.__defaults__[0] not in q  # no walk: exactly these
    assert lst not in q and _walked(lst)
    assert q.add([f, t]) == 0 and len(q) == 3  # held already
    gc.collect()
    assert not _walked(f) and gc.is_tracked(f)
    del q
    assert _walked(f) and _walked(t) and gc.is_tracked(t)


def test_add_after_a_walk_and_another_quiet():
    shared = (Node(),)
    a = Quiet((shared,), __name__)
    assert a.add([shared, shared[0]]) == 0  # the walk took them
    b = Quiet((), __name__)
    assert b.add([shared]) == 1 and shared in b and shared not in a  # moved, as Quiet() moves them
    del b
    assert _walked(shared)
    del a
    assert gc.is_tracked(shared)


def test_add_runs_no_python_code():
    calls = []

    class Meta(type):
        def __getattribute__(cls, name):
            calls.append(name)
            return type.__getattribute__(cls, name)

        def __hash__(cls):
            calls.append("__hash__")
            return id(cls)

    class Model(metaclass=Meta):
        __slots__ = ("ref",)

    objs = [Model(), Model()]
    q = Quiet((), __name__)
    calls.clear()
    assert q.add(objs) == 2
    assert calls == []


def test_since_lists_what_joined_the_youngest_generation_after_the_mark():
    since = native._since
    gc.disable()  # (as a build runs: the collector paused)
    try:
        mark = []
        a, b = [1], {"k": [2]}
        got = since(mark)
        assert any(o is a for o in got) and any(o is b for o in got) and any(o is b["k"] for o in got)
        assert not any(o is mark for o in got) and not any(o is got for o in got)  # nor itself
        old = (Node(),)  # made before the next mark: not listed
        mark2 = []
        assert not any(o is old or o is a for o in since(mark2))
        gc.collect()  # the mark moved to an older generation: what was made since is elsewhere
        assert since(mark) is None and since(mark2) is None
        mark3 = []
        gc.freeze()
        try:
            assert since(mark3) is None
        finally:
            gc.unfreeze()
    finally:
        gc.enable()
    with pytest.raises(TypeError):
        since(())  # not a list
    with pytest.raises(TypeError):
        since(42)


def test_a_collection_during_a_build_takes_nothing_made_and_decides_the_same():
    mark = native.young()
    made = (Node(), {"k": (Node(),)})
    gc.collect()  # (another thread's explicit collection)
    q = native.made((made,), mark, (), ())
    assert q is not None and len(q) == 0
    q = native.made((made,), native.young(), (), ())  # made before the mark: never taken
    assert q is not None and len(q) == 0


def test_add_refuses_what_is_not_iterable():
    q = Quiet((), __name__)
    with pytest.raises(TypeError):
        q.add(42)


def _run(code: str) -> str:
    env = {**os.environ, "PYTHONMALLOC": "debug"}
    r = subprocess.run([sys.executable, "-X", "dev", "-c", textwrap.dedent(code), str(ROOT)], capture_output=True,
                       text=True, cwd=str(ROOT), env=env, timeout=600)
    assert r.returncode == 0, (r.returncode, r.stdout[-2000:], r.stderr[-4000:])
    return r.stdout


def test_an_error_mid_add_changes_nothing():
    """Every allocation of `add` failed in turn (MemoryError): nothing it was given is left
    out of the walks, and the add that succeeds takes them all (debug allocator)."""
    out = _run("""
        import gc, _testcapi
        from policy_engine.engine.accel._speedups import Quiet
        class Node:
            __slots__ = ("ref", "__weakref__")
            def __init__(self, ref=None): self.ref = ref
        base = tuple(Node() for _ in range(30))
        objs = [(Node(), i) for i in range(300)]
        made = failed = 0
        for start in range(1, 3000):
            q = Quiet((base,), __name__)  # taken: the first add builds its set of them
            _testcapi.set_nomemory(start, 0)
            try:
                n = q.add(objs)
            except MemoryError:
                n = None
            finally:
                _testcapi.remove_mem_hooks()
            walked = {id(o) for o in gc.get_objects()}
            if n is None:
                failed += 1
                assert all(id(o) in walked for o in objs) and len(q) == 31
                assert q.add(objs) == 300  # and it works after
            else:
                made += 1
                assert n == 300 and all(id(o) not in walked for o in objs)
            assert all(o in q for o in objs) and all(o in q for o in base)
            del q
            walked = {id(o) for o in gc.get_objects()}
            assert all(id(o) in walked for o in objs) and all(id(o) in walked for o in base)
            if made > 3:
                break
        print(failed, made)
    """)
    failed, made = map(int, out.split())
    assert failed > 3 and made > 3


def test_engines_warming_in_threads_and_dropped_in_cycles_free_everything():
    """Under `-X dev` with the debug allocator: engines warmed by two threads at once,
    rebuilt wider, dropped in garbage cycles (their Quiets put back by the collector's
    tp_clear of the engine, mid-collection); everything they made is freed (by the next
    collection, for what a build's Quiet put back then)."""
    out = _run("""
        import gc, sys, threading
        import policy_engine
        from datetime import UTC, datetime
        NOW = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
        root = sys.argv[1] + "/policies"
        def types(e):
            return [{"id": "x", "type": t, "workflow": w} for w, cw in e.compiled.workflows.items() for t in cw.actions]
        def work(e, n):
            for _ in range(n):
                for a in types(e):
                    e.evaluate(a, None, NOW)
                    e.evaluate({**a, "amount": 1.5, "x": [1]}, None, NOW)
        for i in range(3):
            e = policy_engine.load(root)
            ts = [threading.Thread(target=work, args=(e, 4)) for _ in range(2)]
            for t in ts: t.start()
            for t in ts: t.join()
            e.sources["self"] = e  # a garbage cycle once dropped
            del e
            if i % 2:
                gc.collect()
        gc.collect()
        # the objects a build's Quiet puts back while the collector frees the engine are looked
        # at by the next collection (a function and its globals are a cycle)
        gc.collect()
        alive = sum(type(o).__name__ in ("CompiledPolicy", "Accelerator", "FusedGate") for o in gc.get_objects())
        print(alive)
    """)
    assert out.split()[-1] == "0"
