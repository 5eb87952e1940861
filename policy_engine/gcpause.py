"""Pause Python's cyclic garbage collector around a bulk read-and-compute phase.

Planning an incident over 10^4 executions, replaying 10^5 decisions or computing the
report allocates millions of small dicts and lists that stay alive until the phase ends;
each allocation threshold crossed makes the collector walk all of them again, which cost
40% of the incident plan's CPU time (0.66 s -> 0.37 s with it paused, same run).
Reference counting still frees everything that is not in a cycle; the collector runs
again when the last paused phase ends. Nested and concurrent phases (threads) share one
pause: it ends with the last of them, and a collector the application had disabled stays
disabled.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["paused"]

_lock = threading.Lock()
_depth = 0
_was_enabled = False


@contextmanager
def paused() -> Iterator[None]:
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()
