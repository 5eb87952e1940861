"""A loaded engine's objects kept out of the cyclic collector's lists while it lives
(`native.quiet`, `_speedups.Quiet`; issue 16, goal 5: a loaded engine adds no
full-collection pause to its host). Structural, no timing: what the collector tracks, what
is put back when the engine goes, and that nothing the engine made outlives it."""

from __future__ import annotations

import gc
import subprocess
import sys
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


def _every_type(engine):
    for w, cw in engine.compiled.workflows.items():
        for t in cw.actions:
            yield {"id": "x", "type": t, "workflow": w}


def test_a_loaded_engine_leaves_its_compiled_objects_untracked():
    engine = policy_engine.load(str(ROOT / "policies"))
    q = engine._quiet
    assert q is not None and len(q) > 100
    p = engine.compiled
    wf = next(iter(p.workflows.values()))
    action = next(iter(wf.actions.values()))
    rule = action.rules[0]
    for o in (p, wf, action, rule, action.rules, action.gate):
        # out of the collector's walks, yet tracked (an untracked tuple or dict would be
        # taken for one of atoms by CPython, and what is made of it left untracked for good)
        assert o in q and gc.is_tracked(o), type(o).__name__
    # what the collector still tracks of it is a handful, not one per rule
    gc.collect()
    before = len(gc.get_objects())
    other = policy_engine.load(str(ROOT / "policies"))
    gc.collect()
    assert len(gc.get_objects()) - before < len(other._quiet) // 5
    del other


def test_the_objects_are_tracked_again_when_the_engine_goes():
    engine = policy_engine.load(str(ROOT / "policies"))
    for a in list(_every_type(engine)):
        engine.evaluate(a, None, NOW)
    p = engine.compiled
    action = next(iter(next(iter(p.workflows.values())).actions.values()))
    assert action in engine._quiet
    q = weakref.ref(engine._quiet)
    del engine
    gc.collect()
    assert q() is None  # nothing it took keeps the engine alive
    walked = {id(o) for o in gc.get_objects()}
    assert id(action) in walked and id(p) in walked  # put back before their last reference goes


def test_quiet_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("STOPLINE_GC_QUIET", "0")
    engine = policy_engine.load(str(ROOT / "policies"))
    assert engine._quiet is None
    assert gc.is_tracked(next(iter(engine.compiled.workflows.values())))


def test_decisions_do_not_change(monkeypatch):
    quiet = policy_engine.load(str(ROOT / "policies"))
    monkeypatch.setenv("STOPLINE_GC_QUIET", "0")
    plain = policy_engine.load(str(ROOT / "policies"))
    assert quiet._quiet is not None and plain._quiet is None
    for a in _every_type(quiet):
        for _ in range(3):  # the fused gates built on the way
            assert quiet.evaluate_json(a, None, NOW) == plain.evaluate_json(a, None, NOW)


# -- Quiet itself, over objects of this module's classes ---------------------------------


class Node:
    __slots__ = ("ref", "__weakref__")

    def __init__(self, ref=None):
        self.ref = ref


class Finalised:
    __slots__ = ("ref", "__weakref__")

    def __del__(self):  # pragma: no cover - never run here while untracked
        pass


class WithDict:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def test_a_cycle_made_while_quiet_is_collected_after():
    """The reason Quiet keeps a reference to what it took and puts it back: a cycle that
    passes through an untracked object is invisible to the collector; once it is tracked
    again, the cycle is garbage like any other."""
    leaf = Node()
    root = (Node(leaf), {"k": Node()})
    q = Quiet((root,), __name__)
    assert len(q) == 5 and leaf in q  # the tuple, the dict and the three nodes
    leaf.ref = leaf  # a cycle through an untracked object
    w = weakref.ref(leaf)
    del leaf, root
    gc.collect()
    assert w() is not None  # held by q, as it must be while untracked
    del q
    gc.collect()
    assert w() is None


def test_what_quiet_takes_and_leaves():
    fin = Finalised()
    fin.ref = Node()
    lst = [Node()]
    other = WithDict(x=Node())
    node = Node()
    root = (fin, lst, other, frozenset({node}), {"a": (node,)})
    q = Quiet((root,), __name__)
    assert root in q
    assert fin not in q and fin.ref not in q  # a finaliser: left, and not walked through
    assert lst not in q and lst[0] not in q  # a list (mutable, not its kinds): left
    assert other in q and other.x in q  # an instance and its __dict__'s values
    assert node in q
    del q
    assert all(gc.is_tracked(o) for o in (root, other, other.x, node))


def test_other_modules_classes_are_left():
    outside = WithDict(x=Node())
    q = Quiet(((outside,),), "policy_engine.")
    assert len(q) == 1  # the tuple; not the instance of a class outside the prefix
    assert outside not in q


def test_a_dict_tracked_again_by_an_insertion_is_left_as_it_is():
    d = {"a": Node()}
    q = Quiet((d,), __name__)
    assert d in q and gc.is_tracked(d)
    d["b"] = [1]  # a container in it: still tracked, still out of the walks (q holds d)
    assert gc.is_tracked(d) and d in q
    del q  # (tracking it twice would abort the interpreter)
    assert gc.is_tracked(d) and any(o is d for o in gc.get_objects())


def test_quiet_refuses_what_it_cannot_take():
    with pytest.raises(TypeError):
        Quiet(42, __name__)  # not iterable
    with pytest.raises(TypeError):
        Quiet((), 42)
    with pytest.raises(TypeError):
        Quiet((), __name__, extra=1)
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(Quiet((), __name__))


def test_a_full_collection_walks_few_of_the_engines_objects_in_a_fresh_process():
    """The figure goal 5 is about, counted: the objects a loaded 1,000-rule engine adds to
    the collector's lists, with Quiet and without (the bench times the pause itself)."""
    code = (
        "import gc, sys; import policy_engine\n"
        "from benchmarks.gen_policies import policy_text\n"
        "import tempfile, os\n"
        "d = tempfile.mkdtemp(); p = os.path.join(d, 'big.policy'); open(p, 'w').write(policy_text(1000))\n"
        "policy_engine.load(os.path.join(sys.argv[1], 'policies')); gc.collect(); n0 = len(gc.get_objects())\n"
        "e = policy_engine.load(p); gc.collect(); print(len(gc.get_objects()) - n0)\n"
    )
    out = {}
    for flag in ("1", "0"):
        env = {**__import__("os").environ, "STOPLINE_GC_QUIET": flag}
        r = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, check=True,
                           cwd=str(ROOT), env=env)
        out[flag] = int(r.stdout.split()[-1])
    assert out["0"] > 8_000, out  # what the engine is made of (test_engine_tracked.py bounds it)
    assert out["1"] < 1_500, out  # what the collector still walks with Quiet


def test_a_worker_forked_after_loading_collects_and_decides():
    """`stopline serve --workers N` and a preforking host load once and fork: the child
    inherits the engine's objects out of the collector's walks, collects, decides as the
    parent does, drops the engine (its objects back in the child's generations) and exits
    cleanly."""
    import os

    engine = policy_engine.load(str(ROOT / "policies"))
    actions = list(_every_type(engine))
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
            ok = got == expected and len(engine._quiet) > 100
            action = next(iter(next(iter(engine.compiled.workflows.values())).actions.values()))
            globals().pop("engine", None)
            del engine
            gc.collect()
            ok = ok and any(o is action for o in gc.get_objects())
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
