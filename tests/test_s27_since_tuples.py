"""`_speedups.since` never takes a reference to a tuple another thread is still building
(session 27). A fused gate's build reads the objects made since a mark (`native.made`),
while other threads may evaluate: one of them inside `tuple(generator)` has a tracked tuple
of refcount 1 that it resizes at the end, and the generator lets the thread go mid-way. The
reference `since` took made that resize fail with `SystemError: bad argument to internal
function` in the other thread (CI: `test_lanes_built_and_filled_from_8_threads_agree_with_one_thread`)."""

from __future__ import annotations

import gc
import threading

import pytest

from policy_engine.engine.accel import native

_speedups = pytest.importorskip("policy_engine.engine.accel._speedups")
if not native.AVAILABLE:  # pragma: no cover - an install without a compiler
    pytest.skip("the native helpers are not built", allow_module_level=True)


def test_a_tuple_another_thread_is_building_is_not_taken():
    started, go = threading.Event(), threading.Event()
    out: dict = {}

    def gen():
        yield "a"
        started.set()
        go.wait(60)  # (the thread is let go with its tuple half built: 10 slots, 1 filled)
        yield "b"

    def build():
        try:
            out["tuple"] = tuple(gen())
        except BaseException as e:  # noqa: BLE001 - what the building thread met
            out["error"] = e

    was = gc.isenabled()
    gc.disable()  # (no collection moves the mark meanwhile)
    try:
        mark = native.young()
        t = threading.Thread(target=build)
        t.start()
        assert started.wait(60)
        loose: list = []
        held = _speedups.since(mark, loose)
        assert held is not None and loose  # (the tuple being built: its address only)
        go.set()
        t.join(60)
        assert not t.is_alive()
        del held
    finally:
        if was:
            gc.enable()
    assert "error" not in out, out.get("error")
    assert out["tuple"] == ("a", "b")


def test_a_tuple_something_else_holds_is_still_taken():
    was = gc.isenabled()
    gc.disable()
    try:
        mark = native.young()
        pair = tuple(str(i) for i in range(2))
        also = pair  # (two references: no thread is building it)
        loose: list = []
        got = _speedups.since(mark, loose)
    finally:
        if was:
            gc.enable()
    assert got is not None
    assert any(o is also for o in got) and id(also) not in loose


def test_a_build_still_takes_a_defaults_tuple_only_its_function_holds():
    """What a build makes that only one object holds (a function's `__defaults__`) is still
    the build's: met through its holder, known by its address."""
    was = gc.isenabled()
    gc.disable()
    try:
        mark = native.young()
        ns: dict = {}
        exec("def f(a, b=(1, 2)):\n    return a", ns)  # noqa: S102 - a function made here
        fn = ns["f"]
        q = native.made((fn,), mark)
    finally:
        if was:
            gc.enable()
    assert q is not None and fn.__defaults__ in q
