"""Building pydantic models from values the engine made, without validating them again.

A leaf beside `models`: the compiler builds the output fragments decisions share with it,
and the engine every decision, plan and verdict.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

if TYPE_CHECKING:
    from .models import ReversibilityInfo

M = TypeVar("M", bound="BaseModel")

__all__ = ["fast", "fields_set", "set_dict", "set_fields_set", "set_extra", "set_private", "new", "none_until_set",
           "Deferred", "DeferredTimes", "DeferredField", "resolve_digest", "resolved_dict", "raw_dict", "set_raw_dict",
           "DEFERRABLE", "SNAPSHOT_DIGEST"]


def _slot_setter(name: str) -> Callable[[Any, Any], None]:
    """The C-level setter of one of pydantic's `BaseModel` slots (`__dict__`,
    `__pydantic_fields_set__`, ...): what `object.__setattr__(m, name, v)` ends up calling,
    without the attribute lookup. Falls back to `object.__setattr__` if pydantic changes."""
    from pydantic import BaseModel

    d = getattr(BaseModel.__dict__.get(name), "__set__", None)
    if d is None:  # pragma: no cover - another pydantic layout
        return lambda m, v: object.__setattr__(m, name, v)
    return d


_new = object.__new__
_set_dict = _slot_setter("__dict__")
_set_fields_set = _slot_setter("__pydantic_fields_set__")
_set_extra = _slot_setter("__pydantic_extra__")
_set_private = _slot_setter("__pydantic_private__")
# the same, public: generated code (the fused gate's epilogue) builds a Decision with them
new = _new
set_dict = _set_dict
set_fields_set = _set_fields_set
set_extra = _set_extra
set_private = _set_private


def fast(cls: type[M], data: dict) -> M:
    """Build a pydantic model from already-valid data without validation.

    `data` must hold every field (by field name). Cheaper than `model_construct`
    (which resolves defaults and aliases); used only with values the engine made.
    Same result as `cls.__new__(cls)` then `object.__setattr__` of the four slots.
    """
    m: M = _new(cls)
    _set_dict(m, data)
    fs = _FIELDS_SET.get(cls)
    _set_fields_set(m, fs if fs is not None else _fields_set(cls))
    _set_extra(m, None)
    _set_private(m, None)
    return m


_FIELDS_SET: dict = {}


def fields_set(cls: type[BaseModel]) -> set:
    """The `__pydantic_fields_set__` `fast` gives every `cls` (built once)."""
    s = _FIELDS_SET.get(cls)
    if s is not None:
        return s
    return _fields_set(cls)


def _fields_set(cls: type[BaseModel]) -> set:
    s = set(cls.model_fields)
    _FIELDS_SET[cls] = s
    return s


class _NoneUntilSet:
    """One of pydantic's slots `__pydantic_extra__` and `__pydantic_private__` on a model (Decision)
    that has neither extra fields (`extra="forbid"`) nor private attributes, so both are
    always None: a data descriptor that reads None from an instance that never set it, and
    else does what the slot does. The engine's fast lanes then build a Decision with two
    slot stores fewer (`engine.accel.templates`: about 80 ns of a decision's ~1 us).
    Reads (pydantic's ==, copy, pickle, serializers) go through it; every write (validation,
    copy, unpickling) stores into the slot as before."""

    __slots__ = ("slot",)

    def __init__(self, slot: Any) -> None:
        self.slot = slot

    def __get__(self, obj: Any, cls: Any = None) -> Any:
        if obj is None:
            return self.slot
        try:
            return self.slot.__get__(obj, cls)
        except AttributeError:
            return None

    def __set__(self, obj: Any, value: Any) -> None:
        self.slot.__set__(obj, value)

    def __delete__(self, obj: Any) -> None:
        self.slot.__delete__(obj)


def none_until_set(cls: type[BaseModel]) -> bool:
    """Install `_NoneUntilSet` for `cls`'s extra and private slots; False (nothing done)
    where pydantic lays its models out otherwise, or `cls` could hold either."""
    from pydantic import BaseModel

    slots = [BaseModel.__dict__.get(n) for n in ("__pydantic_extra__", "__pydantic_private__")]
    if (any(type(d).__name__ != "member_descriptor" for d in slots) or cls.model_config.get("extra") != "forbid"
            or cls.__private_attributes__):
        return False  # pragma: no cover - another pydantic, or another model
    for n, d in zip(("__pydantic_extra__", "__pydantic_private__"), slots):
        type.__setattr__(cls, n, _NoneUntilSet(d))
    return True


# ------------------------------------------------- values a Decision computes on first read
# (`models.Decision` reads its fields through these)

class Deferred:
    """A field value a `Decision` computes on first read (`resolve()`): the engine's fast
    lane stores one instead of the value when computing it costs more than deciding (the
    action digest, see `engine.digests`). Every way of reading the decision resolves it
    first: the attribute, `__dict__`, `model_dump`, `model_dump_json`, `to_json`, `==`,
    `hash`, `repr`, copies and pickles; so no reader ever sees a `Deferred`."""

    __slots__ = ()

    def resolve(self) -> Any:  # pragma: no cover - every subclass defines it
        raise NotImplementedError


class DeferredTimes(Deferred):
    """A decision's `evaluated_at` and, for an action type with a reversal window, its
    `reversibility` (whose `reversible_until` is `now` + the window), rendered on first
    read: the same object stands in both fields. `resolve()` gives `(evaluated_at,
    reversibility)`; `texts()` gives `(evaluated_at, reversible_until)` as text, what
    `Decision.to_json` writes, without building the `ReversibilityInfo`; `base` is the
    action type's `ReversibilityInfo` (every field but `reversible_until`)."""

    __slots__ = ()
    base: ReversibilityInfo | None

    def texts(self) -> tuple[str, str | None]:  # pragma: no cover - every subclass defines it
        raise NotImplementedError


raw_dict = BaseModel.__dict__["__dict__"].__get__  # the instance's own dict, as stored
set_raw_dict = BaseModel.__dict__["__dict__"].__set__
# the Decision fields that may hold a Deferred: the action digest; the time and the
# reversibility (one DeferredTimes in `evaluated_at`, and in `reversibility` when windowed)
DEFERRABLE = ("action_digest", "evaluated_at", "reversibility")


def _unregistered(snap: dict) -> str | None:  # pragma: no cover - engine.digests replaces it on import
    raise RuntimeError("a frozen action copy with no digest function registered")


# A pending action digest may also be the frozen copy itself, a `dict`: a fused gate function
# stores the copy it made with no object around it (one allocation and one Python-level
# `__init__` less per require_approval decision); `engine.digests` sets the function that
# resolves it (`snapshot_digest`: what a `PendingDigest` of that copy resolves to).
SNAPSHOT_DIGEST: Callable[[dict], str | None] = _unregistered


def resolve_digest(v: Any) -> Any:
    """A decision's stored `action_digest`, resolved: a `Deferred`'s value, a frozen copy's
    digest (see `SNAPSHOT_DIGEST`), anything else as it is."""
    if type(v) is dict:
        return SNAPSHOT_DIGEST(v)
    if isinstance(v, Deferred):
        return v.resolve()
    return v


def resolved_dict(m: Any) -> dict:
    """A Decision's `__dict__` with every Deferred value resolved (stored back: one store per
    field of a value equal whichever thread computes it; `reversibility` before
    `evaluated_at`, which says whether the times are resolved)."""
    d = raw_dict(m)
    v = d.get("action_digest")
    if v is not None and type(v) is not str:
        d["action_digest"] = resolve_digest(v)
    v = d.get("evaluated_at")
    if type(v) is not str and isinstance(v, Deferred):
        ev, rev = v.resolve()
        if d.get("reversibility") is v:
            d["reversibility"] = rev
        d["evaluated_at"] = ev
    return d


class DeferredField:
    """The attribute of a field that may hold a Deferred (a data descriptor, so it comes
    before the instance dict): the resolved value."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, cls: Any = None) -> Any:
        if obj is None:  # like every pydantic field: no class attribute
            raise AttributeError(self.name)
        try:
            return resolved_dict(obj)[self.name]
        except KeyError:
            raise AttributeError(self.name) from None

    def __set__(self, obj: Any, value: Any) -> None:  # what object.__setattr__ did (pydantic refuses first: frozen)
        raw_dict(obj)[self.name] = value
