"""The native quick path of `Engine.evaluate` / `evaluate_json` (`_speedups.Gate`) under
hostile calls: a key of the action whose `__eq__` rebuilds the type's fused gate during
the call (the objects the gate read from it must stay alive: it once used them borrowed,
a use after free), odd `now`s, dict subclasses, subclasses of Engine; and the method as a
value (pickled, copied, its signature). Each decision is the reference engine's."""

from __future__ import annotations

import copy
import inspect
import json
import os
import pickle
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from engine_support import engine_from_texts

from policy_engine.engine import Engine
from policy_engine.engine.accel import fused as fused_mod
from policy_engine.engine.accel import native

OFF = os.environ.get("STOPLINE_NATIVE", "1").strip() in ("0", "false", "no", "off")
pytestmark = pytest.mark.skipif(OFF, reason="STOPLINE_NATIVE=0: the native helpers are switched off")

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
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TAG = {"workflow": "w", "type": "tag", "id": "a1", "tags": ["x", "y"]}
PAY = {"workflow": "w", "type": "pay", "id": "p1", "amount": 250.0, "customer": {"tier": "gold", "id": "c"}}


@pytest.fixture(scope="module")
def engines():
    e = engine_from_texts({"p.policy": POLICY})
    for _ in range(fused_mod.FUSE_AFTER + 2):
        for a in (TAG, PAY):
            e.evaluate(a, None, T0)
            e.evaluate_json(a, None, T0)
    return e, engine_from_texts({"p.policy": POLICY}, accelerate=False)


# ------------------------------------------------- a rebuild during the call (a crash)

_REBUILD = textwrap.dedent('''
    import gc
    import json
    import sys
    from datetime import UTC, datetime
    from types import MappingProxyType
    from engine_support import engine_from_texts
    from policy_engine.engine.accel import fused as fused_mod

    T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    TAG = {"workflow": "w", "type": "tag", "id": "a1", "tags": ["x", "y"]}
    e = engine_from_texts({"p.policy": sys.argv[1]})
    for _ in range(fused_mod.FUSE_AFTER + 2):
        e.evaluate(TAG, None, T0)
    fz = e._quick["tag"]
    assert fz.fn is not None and fz.source and "_CK(_p0)" in fz.source
    armed = []

    def rebuild():  # each slot a new object: the old one's last reference dropped
        fz.fn = fz.generate(True)[0]
        fz.wname = "".join(["w"])
        fz.running = dict(fz.running)
        fz.policy = MappingProxyType(dict(fz.policy))
        gc.collect()  # (a generated function is in a cycle with its globals)

    class K(str):  # looked at when the action's "workflow" is: after the gate read fz's slots
        def __hash__(self):
            return hash("workflow")

        def __eq__(self, other):
            if armed:
                armed.clear()
                rebuild()
            return False

    for now in (T0, None, T0, None):
        for call in (e.evaluate, e.evaluate_json):
            a = {K("k"): 1}
            a.update(TAG)
            rebuild()
            armed.append(1)
            r = call(a, None, now)
            d = json.loads(r if type(r) is str else r.model_dump_json())
            d.pop("evaluated_at")
            print(json.dumps(d, sort_keys=True))
''')


def test_a_rebuild_by_a_key_of_the_action_during_the_call_frees_nothing_in_use(engines, tmp_path):
    # the gate read the fused gate's function (and its workflow name, running state and
    # policy) from its slots, then looked up the action's "workflow", which ran the key's
    # __eq__: the slots replaced, the old function freed, then called. Under the debug
    # allocator (freed memory overwritten) that was a segfault
    script = tmp_path / "rebuild.py"
    script.write_text(_REBUILD)
    tests = Path(__file__).parent
    env = dict(os.environ, PYTHONMALLOC="debug", PYTHONPATH=os.pathsep.join([str(tests), str(tests.parent)]))
    proc = subprocess.run([sys.executable, "-X", "dev", str(script), POLICY], env=env, capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    _, ref = engines
    want = json.loads(ref.evaluate(TAG, None, T0).model_dump_json())
    want.pop("evaluated_at")
    assert proc.stdout.splitlines() == [json.dumps(want, sort_keys=True)] * 8


# ------------------------------------------------------------- odd calls, decided alike

class _DT(datetime):
    pass


class _D(dict):
    pass


class _Sub(Engine):
    __slots__ = ()


class _Over(Engine):
    __slots__ = ()

    def evaluate(self, action, workflow_state=None, now=None):
        return super().evaluate(action, workflow_state, now)


@pytest.mark.parametrize("now", [
    T0, _DT(2026, 3, 1, 12, 0, tzinfo=UTC), T0.replace(tzinfo=timezone(timedelta(0))),
    T0.replace(tzinfo=ZoneInfo("UTC")), T0.replace(tzinfo=None), "2026-03-01T12:00:00Z",
])
def test_odd_nows_are_decided_as_the_reference_decides_them(engines, now):
    e, ref = engines
    for a in (TAG, PAY, _D(TAG), _D(PAY)):
        want = ref.evaluate(a, None, now)
        assert e.evaluate(a, None, now).model_dump() == want.model_dump()
        assert e.evaluate_json(a, None, now) == want.model_dump_json()
        assert Engine.evaluate(e, a, None, now).model_dump() == want.model_dump()


def test_subclasses_of_engine_answer_as_the_engine(engines):
    e, ref = engines
    for cls in (_Sub, _Over):
        sub = object.__new__(cls)
        for name in Engine.__slots__:
            object.__setattr__(sub, name, getattr(e, name))
        for a in (TAG, PAY, dict(PAY, amount=5.0)):
            want = ref.evaluate(a, None, T0)
            assert sub.evaluate(a, None, T0).model_dump() == want.model_dump()
            assert sub.evaluate_json(a, None, T0) == want.model_dump_json()


def test_keys_that_raise_or_lie_are_decided_as_the_reference_decides_them(engines):
    e, ref = engines
    armed = []

    class Liar(str):  # once armed, equal to everything of its hash: the action's "type" among them
        def __hash__(self):
            return hash("type")

        def __eq__(self, other):
            return bool(armed) or str.__eq__(self, other)

    class Raiser(str):
        def __hash__(self):
            return hash("workflow")

        def __eq__(self, other):
            if armed:
                raise ValueError("no")
            return False

    for k in (Liar("x"), Raiser("x")):
        for base in (TAG, PAY):
            a = {k: "pay"}
            a.update(base)
            armed.append(1)
            try:
                want = ref.evaluate(a, None, T0)
                assert e.evaluate(a, None, T0).model_dump() == want.model_dump()
                assert e.evaluate_json(a, None, T0) == want.model_dump_json()
            finally:
                armed.clear()


def test_an_interrupt_from_a_key_goes_through_as_from_the_method(engines):
    e, _ = engines
    armed = []

    class Stop(str):
        def __hash__(self):
            return hash("type")

        def __eq__(self, other):
            if armed:
                raise KeyboardInterrupt
            return False

    a = {Stop("x"): 1}
    a.update(TAG)
    armed.append(1)
    for call in (e.evaluate, e.evaluate_json, Engine.__dict__["evaluate"].__wrapped__.__get__(e)):
        with pytest.raises(KeyboardInterrupt):
            call(a, None, T0)


# ----------------------------------------------------------------- the method as a value

def test_the_method_pickles_and_copies_as_a_function_does():
    assert native.ENABLED and type(Engine.__dict__["evaluate"]).__name__ == "Gate"
    for name in ("evaluate", "evaluate_json"):
        m = getattr(Engine, name)
        for proto in range(pickle.HIGHEST_PROTOCOL + 1):
            assert pickle.loads(pickle.dumps(m, proto)) is m
        assert copy.copy(m) is m and copy.deepcopy(m) is m


def test_the_methods_signature_and_names_are_the_python_methods(engines):
    e, _ = engines
    for name in ("evaluate", "evaluate_json"):
        py = Engine.__dict__[name].__wrapped__
        assert inspect.signature(getattr(Engine, name)) == inspect.signature(py)
        assert str(inspect.signature(getattr(e, name))).startswith("(action")
        assert getattr(Engine, name).__qualname__ == f"Engine.{name}"
        assert getattr(Engine, name).__doc__ == py.__doc__


# ------------------------------- a key whose __eq__ raises once: one lookup, as the method

class _Once(str):
    """A key hashed like `type` whose comparison raises the first time only."""

    def __new__(cls, text: str, like: str):
        k = super().__new__(cls, text)
        k.like = like
        k.raised = False
        return k

    def __hash__(self):
        return hash(self.like)

    def __eq__(self, other):
        if not self.raised:
            self.raised = True
            raise RuntimeError("a key that fails once")
        return str.__eq__(self, other)


def _armed(like: str) -> dict:
    k = _Once("zz", like)
    k.raised = True  # (quiet while the dict is built: inserting it compares it too)
    a = {k: 1, **TAG}  # (first: a lookup of `like` meets it before the real key)
    k.raised = False
    return a


@pytest.mark.parametrize("like", ["type", "workflow"])
def test_a_key_that_raises_once_is_looked_up_once_as_the_python_method_does(engines, like):
    # the Python method's lookup of `type` (or `workflow`) meets the error and fails closed;
    # the native path must not look first, swallow the error and let the method decide
    # normally on its second, now quiet, lookup
    e, _ = engines
    want = Engine.__dict__["evaluate"].__wrapped__(e, _armed(like), None, T0)
    got = e.evaluate(_armed(like), None, T0)
    assert got.effect == want.effect == "deny" and got.deciding == want.deciding
    assert got.reason == want.reason and "a key that fails once" in got.reason
    want_j = Engine.__dict__["evaluate_json"].__wrapped__(e, _armed(like), None, T0)
    assert json.loads(e.evaluate_json(_armed(like), None, T0))["reason"] == json.loads(want_j)["reason"]
