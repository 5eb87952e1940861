"""An audit of `_speedups.Quiet` (session 25): what it keeps out of the collector's walks
must stay *tracked*, or CPython takes it for an atom and leaves what is made of it untracked
for good; the walk runs no Python code and changes nothing when it fails; and putting the
objects back is safe from a collection, a weakref callback, another Quiet over the same
objects, and interpreter exit. Structural, no timing; the stress runs in subprocesses."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import pytest

import policy_engine
from policy_engine.engine.accel import native

pytestmark = pytest.mark.skipif(not native.AVAILABLE, reason="the native helpers are not built")

ROOT = Path(__file__).resolve().parent.parent
Quiet = native._Quiet


class Node:
    __slots__ = ("ref", "__weakref__")

    def __init__(self, ref=None):
        self.ref = ref


class Inline:  # instance attributes kept inline (3.11+) until `__dict__` is asked for
    def __init__(self, t):
        self.t = t


def _in_the_walks(o) -> bool:
    return any(x is o for x in gc.get_objects())


# -- what is made of taken objects while the Quiet lives is collected after ----------------


def test_a_tuple_made_of_taken_tuples_is_collected_after():
    """A collection untracks a tuple whose items are untracked tuples; had Quiet untracked
    `inner`, `outer` would stay untracked after Quiet put `inner` back, and the cycle
    outer -> inner -> node -> outer leak."""
    inner = (Node(),)
    q = Quiet((inner,), __name__)
    outer = (inner, 1)
    gc.collect()
    tracked = gc.is_tracked(outer)
    del q
    node = inner[0]
    node.ref = outer
    w = weakref.ref(node)
    del outer, inner, node
    gc.collect()
    assert w() is None and tracked


@pytest.mark.parametrize("copy", [dict, dict.copy, lambda d: {**d}], ids=["dict", "copy", "unpack"])
def test_a_copy_of_a_taken_dict_is_collected_after(copy):
    """A copy of an untracked dict is untracked (PyDict_Copy, dict_merge into an empty
    dict): the copy of a dict Quiet took must be tracked."""
    n = Node()
    d = {"n": n}
    q = Quiet((d,), __name__)
    c = copy(d)
    del q
    n.ref = c
    w = weakref.ref(n)
    del n, d, c
    gc.collect()
    assert w() is None


def test_a_dict_of_taken_tuples_is_collected_after():
    """A dict stays untracked while its values are untracked tuples."""
    inner = (Node(),)
    q = Quiet((inner,), __name__)
    d = {"t": inner}
    del q
    inner[0].ref = d
    w = weakref.ref(inner[0])
    del inner, d
    gc.collect()
    assert w() is None


def test_an_instance_dict_made_from_its_inline_values_is_collected_after():
    """`obj.__dict__` made from inline values is tracked only if a value may be."""
    n = Node()
    m = Inline((n,))
    q = Quiet((m,), __name__)
    dd = m.__dict__
    del q, dd
    n.ref = m
    w = weakref.ref(n)
    del n, m
    gc.collect()
    assert w() is None


def test_an_engines_objects_are_out_of_the_walks_yet_tracked():
    engine = policy_engine.load(str(ROOT / "policies"))
    q = engine._quiet
    action = next(iter(next(iter(engine.compiled.workflows.values())).actions.values()))
    assert gc.is_tracked(action.rules) and not _in_the_walks(action.rules)
    held = (action.rules, action.rules)  # a host's tuple of the engine's tuples
    gc.collect()
    assert gc.is_tracked(held)
    assert action in q and action.rules in q
    del engine, q
    gc.collect()
    assert _in_the_walks(action.rules)


# -- the walk ------------------------------------------------------------------------------


def test_the_walk_runs_no_python_code():
    """Not a metaclass's attribute hook (`__module__`), nor its hash or comparison (the
    memo of types): the walk cannot be re-entered, nor anything changed under it."""
    calls = []

    class Meta(type):
        def __getattribute__(cls, name):
            calls.append(name)
            return type.__getattribute__(cls, name)

        def __hash__(cls):
            calls.append("__hash__")
            return id(cls)

        def __eq__(cls, other):
            calls.append("__eq__")
            return cls is other

    class Model(metaclass=Meta):
        __slots__ = ("ref",)

        def __init__(self, ref=None):
            self.ref = ref

    objs = (Model(Node()), Model(), Model())
    calls.clear()
    q = Quiet((objs,), __name__)
    assert calls == []
    assert all(o in q for o in objs) and objs[0].ref in q


def test_a_class_is_judged_by_its_own_module():
    class Lying(type):
        def __getattribute__(cls, name):
            return "policy_engine.fake" if name == "__module__" else type.__getattribute__(cls, name)

    class Outside(metaclass=Lying):
        pass

    o = Outside()
    q = Quiet(((o,),), "policy_engine.")
    assert len(q) == 1 and o not in q  # the tuple only


def test_quiet_shares_objects_with_another():
    shared = (Node(Node()),)
    a = Quiet((shared,), __name__)
    b = Quiet(((shared,),), __name__)  # moves them to b's list
    assert shared in b and shared not in a and len(a) == 3
    del b  # back in the collector's walks, though a still holds them
    assert _in_the_walks(shared) and _in_the_walks(shared[0])
    del a
    assert gc.is_tracked(shared)


def _run(code: str, *args: str, env_extra: dict | None = None) -> str:
    import os

    env = {**os.environ, "PYTHONMALLOC": "debug", **(env_extra or {})}
    r = subprocess.run([sys.executable, "-X", "dev", "-c", textwrap.dedent(code), str(ROOT), *args],
                       capture_output=True, text=True, cwd=str(ROOT), env=env, timeout=600)
    assert r.returncode == 0, (r.returncode, r.stdout[-2000:], r.stderr[-4000:])
    return r.stdout


def test_an_error_mid_walk_changes_nothing():
    """Every allocation of the walk failed in turn (MemoryError): nothing is left out of
    the walks, and the Quiet made when none fails puts everything back."""
    out = _run("""
        import gc, _testcapi
        from policy_engine.engine.accel._speedups import Quiet
        class Node:
            __slots__ = ("ref", "__weakref__")
            def __init__(self, ref=None): self.ref = ref
        root = tuple({"k": (Node(Node()), frozenset({i}))} for i in range(40))
        everything = [root] + [d for d in root] + [t for d in root for t in d.values()]
        made = failed = 0
        for start in range(1, 2000):
            _testcapi.set_nomemory(start, 0)
            try:
                q = Quiet((root,), __name__)
            except MemoryError:
                q = None
            finally:
                _testcapi.remove_mem_hooks()
            if q is None:
                failed += 1
                walked = {id(o) for o in gc.get_objects()}
                assert all(id(o) in walked for o in everything)
            else:
                made += 1
                assert all(o in q for o in everything)
                del q
                if made > 3:
                    break
        walked = {id(o) for o in gc.get_objects()}
        assert all(id(o) in walked for o in everything)
        print(failed, made)
    """)
    failed, made = map(int, out.split())
    assert failed > 10 and made > 3


def test_putting_back_is_safe_from_a_collection_callbacks_and_other_quiets():
    """Engines dropped in garbage cycles (their Quiet put back by the collector's tp_clear of
    the engine, mid-collection), weakref callbacks that make a new Quiet over the same
    objects while the old one lets go, two engines sharing objects, threads; under
    `-X dev` with the debug allocator. Everything the engines made is freed."""
    out = _run("""
        import gc, sys, threading, weakref
        import policy_engine
        from policy_engine.engine.accel._speedups import Quiet
        from datetime import UTC, datetime
        NOW = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
        root = sys.argv[1] + "/policies"
        class Node:
            __slots__ = ("ref", "__weakref__")
            def __init__(self, ref=None): self.ref = ref
        keep = []
        def again(_w, objs=None):
            if len(keep) < 50:
                keep.append(Quiet((objs,), __name__))
        def types(e):
            for w, cw in e.compiled.workflows.items():
                for t in cw.actions:
                    yield {"id": "x", "type": t, "workflow": w}
        def work(n):
            for i in range(n):
                e = policy_engine.load(root)
                for a in types(e):
                    e.evaluate(a, None, NOW)
                e.sources["self"] = e  # a garbage cycle once dropped
                shared = (Node(), (Node(),))
                e2 = Quiet((shared, e.compiled), __name__)
                ws = [weakref.ref(shared[0], lambda w, s=shared: again(w, s))]
                del e, e2
                if i % 2:
                    gc.collect()
        ts = [threading.Thread(target=work, args=(3,)) for _ in range(2)]
        for t in ts: t.start()
        work(3)
        for t in ts: t.join()
        keep.clear()
        gc.collect()
        alive = sum(type(o).__name__ in ("CompiledPolicy", "Accelerator") for o in gc.get_objects())
        print(alive)
    """)
    assert out.split()[-1] == "0"


def test_an_engine_alive_at_exit():
    out = _run("""
        import sys, gc, policy_engine
        e = policy_engine.load(sys.argv[1] + "/policies")
        e.sources["self"] = e
        sys.modules["__main__"].held = (e, [e])
        print(len(e._quiet) > 100)
    """)
    assert out.strip() == "True"


def test_a_deep_structure_is_walked_and_freed_without_recursion():
    out = _run("""
        import gc
        from policy_engine.engine.accel._speedups import Quiet
        t = ()
        for i in range(200_000):
            t = (t, {"i": [i]})
        q = Quiet((t,), "x")
        assert t in q and t[1] in q and t[1]["i"] not in q
        del t
        del q  # put back, then a 200,000-deep chain freed (the trashcan)
        gc.collect()
        print("ok")
    """)
    assert out.strip() == "ok"
