"""Load-time machinery shared by the loader and the engine's accelerators: where the two
Lark parsers keep their tables (below), and `collector_paused` (the cyclic garbage
collector paused while a policy set loads or a large fused gate is built).

Where the two Lark parsers (the policy grammar, cel-python's CEL grammar) keep their
analysed LALR tables between processes, so a fresh process does not rebuild them (about
0.2 s of every `stopline` command and of the first `load()`). Valid policy files and the
common CEL subset are parsed by hand (`language/rdparse.py`, `cel/rdparse.py`), so a
process builds (or loads) a Lark parser only for a file or condition that needs it: a
syntax error to report, or something outside the hand-written parsers.

Lark's own `cache=` option does the work: the file starts with a SHA-256 of the grammar,
the options, Lark's and Python's versions, and a file that does not match (another
version, a torn write, garbage) is ignored and rewritten, so a bad cache costs only the
rebuild. The file is a pickle, so it is kept only in a directory private to the user:
`$STOPLINE_CACHE_DIR`, else `$XDG_CACHE_HOME/stopline`, else `~/.cache/stopline`,
created with mode 0700 and used only if it is owned by the user and not writable by
group or others (never the shared temporary directory Lark would use by default).
`STOPLINE_CACHE_DIR=""` (empty) turns the cache off; so does any problem with the
directory.
"""

from __future__ import annotations

import gc
import os
import stat
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def cache_dir() -> Path | None:
    """The private cache directory, created if needed; None when there is none to use."""
    env = os.environ.get("STOPLINE_CACHE_DIR")
    if env is not None:
        if not env.strip():
            return None
        d = Path(env)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or ""
        d = (Path(base) if base.strip() else Path.home() / ".cache") / "stopline"
    try:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = d.stat()
        if not stat.S_ISDIR(st.st_mode):
            return None
        if hasattr(os, "getuid") and st.st_uid != os.getuid():
            return None
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return None
        return d
    except (OSError, RuntimeError):  # no home, read-only file system, ...
        return None


def lark_cache(name: str) -> str | bool:
    """The `cache=` argument for the Lark parser `name`: a file in the private cache
    directory, or False (no cache). The file is named for the Python version too: Lark
    refuses another version's file, so processes of two Pythons on one machine would
    otherwise rewrite each other's and each rebuild its parser."""
    d = cache_dir()
    return str(d / f"{name}-py{sys.version_info[0]}{sys.version_info[1]}.lark-cache") if d is not None else False


_PAUSE_LOCK = threading.Lock()
_PAUSES = [0]  # loads running with the collector paused by us


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a policy set loads (or a large fused
    gate is built: the same burst of objects that all stay alive).

    A load builds hundreds of thousands of small objects that all stay alive (trees,
    closures, the IR); the collector, triggered by the allocations, walked the growing
    heap again and again and took half of a 1,000-rule load. Nothing it could free is made
    while loading, so it is paused: only when it was enabled, and enabled again when the
    last concurrent load ends (a host that disabled it keeps it disabled). Reference
    counting frees everything as usual meanwhile; garbage cycles made by other threads
    during the load are collected afterwards."""
    with _PAUSE_LOCK:
        mine = _PAUSES[0] > 0 or gc.isenabled()
        if mine:
            _PAUSES[0] += 1
            gc.disable()
    try:
        yield
    finally:
        if mine:
            with _PAUSE_LOCK:
                _PAUSES[0] -= 1
                if _PAUSES[0] == 0:
                    gc.enable()
