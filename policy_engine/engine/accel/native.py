"""The gate's native helpers (`_speedups.c`, issue 16, goals 1 and 5): an optional C
extension, built at install when a compiler is there (`setup.py`), where the interpreter's
own steps were most of the cost:

- the input check of a type whose fields are all present scalars of one shape each
  (`shapes.lane_prologue`): one `Checker` call fetches the fields, proves their types,
  refuses unpaired surrogates and non-finite floats and counts the characters, in the order
  and with the exceptions of the lines it replaces (`ShapeMiss`, the fallback);
- the decision (`templates.lane_epilogue`): one `Maker` call makes the `Decision` from its
  template, as `object.__new__` and the two slot setters do (and, for a decision that
  needs nothing else, copies the template and sets the action's id first);
- `Engine.evaluate`'s and `Engine.evaluate_json`'s quick path (`gate`): the commonest
  call (a plain dict of a type whose fused gate is built, no workflow state, `now` a
  datetime in UTC or omitted) goes to the fused function without the interpreter's
  dispatch; every other call, and every result the quick path does not return as it is,
  is the Python method's, as before;
- a loaded engine's objects kept out of the cyclic collector's walks while it lives
  (`quiet`, issue 16, goal 5): a full collection of the host no longer walks them.

They change no decision: the generated source is the same but for the first two's lines, and
`tests/test_native_speedups.py` runs both forms of every fused gate function over the same
inputs. `STOPLINE_NATIVE=0` in the environment (read at import) switches them off; so
does an install without the extension (`AVAILABLE` False). `ENABLED` is read when a fused
gate function is generated: a test may set it and rebuild.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterable
from typing import Any

try:  # an optional extension (setup.py): absent without a C compiler
    from ._speedups import Checker as _Checker
    from ._speedups import Gate as _Gate
    from ._speedups import Maker as _Maker
    from ._speedups import Quiet as _Quiet
    from ._speedups import since as _since
except ImportError:  # pragma: no cover - the install without a compiler
    _Checker = _Gate = _Maker = _Quiet = _since = None  # type: ignore[assignment,misc]

__all__ = ["AVAILABLE", "ENABLED", "KINDS", "enabled", "checker", "maker", "gate", "quiet", "young", "made"]

AVAILABLE = _Checker is not None
ENABLED = AVAILABLE and os.environ.get("STOPLINE_NATIVE", "1").strip() not in ("0", "false", "no", "off")

# a field's shape -> its code in a Checker's kinds (the scalars `lane_prologue` specialises)
KINDS = {str: "s", int: "i", bool: "b", float: "f", type(None): "n"}


def enabled() -> bool:
    """`ENABLED`, read now (a test sets it, then builds a fused gate function)."""
    return ENABLED


def checker(keys: tuple, spec: tuple, base_items: int, max_items: int, base_chars: int, max_chars: int,
            shape_miss: type, fallback: type) -> Any:
    """A `_speedups.Checker` (see `_speedups.c`: one spec per key); None when not `ENABLED`."""
    if not ENABLED:
        return None
    return _Checker(keys, spec, base_items, max_items, base_chars, max_chars, shape_miss, fallback)


def maker(cls: type, key: str | None) -> Any:
    """A `_speedups.Maker` of pydantic model `cls` (see the module's docstring); None when
    not `ENABLED` or pydantic's slots are not where this expects them."""
    if not ENABLED:
        return None
    from pydantic import BaseModel

    d, fs = BaseModel.__dict__.get("__dict__"), BaseModel.__dict__.get("__pydantic_fields_set__")
    if getattr(type(d), "__set__", None) is None or getattr(type(fs), "__set__", None) is None:
        return None  # pragma: no cover - another pydantic layout
    return _Maker(cls, d, fs, key)


def gate(engine_type: type, name: str, fz_type: type, utc: Any, clock: Any) -> Any:
    """A `_speedups.Gate` in front of `engine_type.evaluate` or `.evaluate_json` (`name`),
    the Python method, which it calls for every call it does not take (see `_speedups.c`);
    None when not `ENABLED`."""
    if not ENABLED:
        return None
    ed, fd = engine_type.__dict__, fz_type.__dict__
    return _Gate(ed[name], engine_type, ed["_quick"], fz_type, fd["fn"], fd["wname"], fd["running"], fd["policy"],
                 utc, clock, name == "evaluate_json")


def quiet(roots: tuple) -> Any:
    """A `_speedups.Quiet` over `roots` (a new engine's compiled policy and lanes), or None
    when not `ENABLED`, when `STOPLINE_GC_QUIET=0`, on a Python whose collector it does not
    know (NotImplementedError: not 3.11-3.13 with the GIL), or if the walk failed (nothing
    is then changed).

    Every full collection walks every object the collector tracks, and a 1,000-rule engine
    is about 10,000 of them that can never be garbage while the engine lives: its frozen
    compiled policy. `Quiet` takes those (exact tuples, dicts and frozensets, and instances
    of this package's classes without a finaliser) out of the collector's generations into
    a list of its own, as `gc.freeze()` does with every object, and keeps a reference to
    each, so none can be garbage unseen; they stay tracked (`gc.is_tracked()`), so what a
    host makes of them (a tuple of them, a copy of a dict) is tracked as before. When the
    engine goes, it puts every one back before letting go, and they are freed as before.
    The host's own objects are never touched (unlike `gc.freeze()`), and a forked worker's
    collections no longer write to the engine's pages. `gc.get_objects()` and
    `gc.get_referrers()` do not list them while the engine lives (`obj in engine._quiet`
    tells)."""
    if not ENABLED or os.environ.get("STOPLINE_GC_QUIET", "1").strip() in ("0", "false", "no", "off"):
        return None
    try:
        return _Quiet(roots, "policy_engine.")
    except Exception:  # noqa: BLE001 - (a MemoryError): the engine works as it did, tracked
        return None


def young() -> list:
    """Before a build that `made` then looks at, the collector paused (`collector_paused`): a
    mark, the last object of the collector's youngest generation now (a new list)."""
    return []


def made(roots: tuple, mark: list | None, leave: Iterable = (), also: Iterable = ()) -> Any:
    """A `_speedups.Quiet` over what a build made of its result, which it keeps as long as
    the result lives (see `native.quiet`, and `fused.FusedGate.build`; issue 16, goal 5: the
    objects a loaded engine makes on its first evaluations out of the host's full
    collections too), or None (`mark` None, a failure: they stay in the walks).

    The objects taken are those made since `young()` returned `mark` (the collector paused
    between: every object made since is after it in the youngest generation, `since`,
    unless a collection another thread asked for moved them, and then none is taken) and
    reachable from `roots` through such objects alone, but for `leave` (the caller's
    caches): so never an object the host or anything else made before, and never one made
    meanwhile by another thread that the result does not hold. Then each object of `also`,
    which the caller vouches for (its own, immutable, living as long as the result).
    `Quiet.add` takes only tracked objects of the kinds it knows (no list nor set; see
    `_speedups.c`)."""
    if mark is None:
        return None
    try:
        loose: list = []  # (the addresses of tuples nothing held: perhaps another thread's, being built)
        since = _since(mark, loose)
        new = {id(o): o for o in since} if since is not None else {}
        del since
        made_ids = set(new).union(loose) if loose else set(new)  # (a loose tuple met held: the result's)
        for o in leave:
            new.pop(id(o), None)
            made_ids.discard(id(o))
        take: list = []
        stack = [r for r in roots if id(r) in made_ids]
        seen: set = set()
        while stack:
            o = stack.pop()
            if id(o) in seen:
                continue
            seen.add(id(o))
            take.append(o)
            stack.extend(r for r in gc.get_referents(o) if id(r) in made_ids and id(r) not in seen)
        del new, stack
        q = _Quiet((), "policy_engine.")
        q.add(take)
        q.add(also)
        return q
    except Exception:  # noqa: BLE001 - (a MemoryError): the objects stay in the collector's walks
        return None

