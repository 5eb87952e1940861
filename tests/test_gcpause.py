"""policy_engine.gcpause: the collector is paused inside a phase, back on after the last of
nested or concurrent phases, and left off when the application had turned it off."""

from __future__ import annotations

import gc
import threading

from policy_engine.gcpause import paused


def test_paused_inside_restored_after_nested_and_concurrent_phases():
    assert gc.isenabled()
    with paused():
        assert not gc.isenabled()
        with paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer phase still runs
    assert gc.isenabled()
    inside, release = threading.Event(), threading.Event()

    def other():
        with paused():
            inside.set()
            release.wait(120)  # (released by the test: the timeout only bounds a failure)

    t = threading.Thread(target=other)
    t.start()
    assert inside.wait(120), "the other thread never entered its pause"
    with paused():
        pass
    assert not gc.isenabled()  # the other thread's phase is not over
    release.set()
    t.join(120)
    assert gc.isenabled()


def test_an_exception_ends_the_pause_and_a_disabled_collector_stays_disabled():
    try:
        with paused():
            raise KeyError("x")
    except KeyError:
        pass
    assert gc.isenabled()
    gc.disable()
    try:
        with paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
