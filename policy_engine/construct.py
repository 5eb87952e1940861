"""Building pydantic models from values the engine made, without validating them again.

A leaf beside `models`: the compiler builds the output fragments decisions share with it,
and the engine every decision, plan and verdict.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from pydantic import BaseModel

M = TypeVar("M", bound="BaseModel")

__all__ = ["fast", "fields_set", "set_dict", "set_fields_set", "set_extra", "set_private", "new", "none_until_set"]


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
