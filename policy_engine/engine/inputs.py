"""The input checks, before any conversion or evaluation: JSON-like values only, within
the limits (`check_size`, `check_fields`). Never raises; the problem as text, or None."""

from __future__ import annotations

from collections.abc import Mapping as _Mapping
from datetime import datetime, timedelta
from math import isfinite
from typing import Any

from ..fieldtypes import value_problem
from ..limits import MAX_INPUT_CHARS, MAX_INPUT_DEPTH, MAX_INPUT_ITEMS
from .util import SURROGATE_RE as _SURROGATE_RE

__all__ = ["MAX_INPUT_ITEMS", "MAX_INPUT_DEPTH", "MAX_INPUT_CHARS", "check_size", "check_fields", "plain_flat",
           "declared_problem", "quick_walk"]


# NaN compares false with everything, so `deny when `action.amount > 1000.0`` would not match it.
_NONFINITE = "input holds a non-finite number (NaN or Infinity); numbers must be finite"
# A JSON `"\ud800"` escape decodes to a lone surrogate: no decision holding it can be encoded.
_SURROGATE = "input holds an unpaired surrogate (`\\ud800`-`\\udfff`): text must be valid Unicode"

# Values are JSON-like: exactly dict (or a Mapping), list, tuple, str, int, float, bool,
# None, plus the CEL kinds datetime, timedelta and bytes. Anything else is an input error,
# never evaluated: an arbitrary object brings its own `__eq__`/`__hash__` (an object equal
# to everything would match `action.tier == "gold"`), and a subclass of str, int or float
# (a StrEnum, an IntEnum) can override what `==`, `in` and the input check itself call, so
# membership and equality could disagree about it. Subclasses are refused, not converted:
# the caller passes the plain value (`member.value`). See docs/values.md.
_LEAVES = frozenset({int, bool, type(None), datetime, timedelta, bytes})
_KEYS = frozenset({str, int, bool})  # map keys: JSON's strings, and CEL's int and bool keys


# The plain values a map key cannot be (what each is, in the message), and why.
_KEY_KINDS = {float: "a float", bytes: "bytes", tuple: "a tuple", datetime: "a datetime",
              timedelta: "a timedelta", type(None): "None"}
_KEYS_ARE = ("map keys must be strings, ints or bools (JSON's object keys are strings, and a CEL map "
             "has keys of no other kind)")


def _not_json(v: Any, key: bool = False) -> str:
    t = type(v)
    what = "a map key" if key else "a value"
    if key and t in _KEY_KINDS:  # a plain value of a kind no map key may be: not a subclass
        return f"input holds {_KEY_KINDS[t]} as a map key (type `{t.__name__}`): {_KEYS_ARE}"
    for base in (str, bool, int, float, bytes, list, tuple, datetime, timedelta):
        if isinstance(v, base):
            if key and base not in _KEYS:  # refused as a key even as the plain value
                return (f"input holds a map key of type `{t.__name__}`, a subclass of {base.__name__}: "
                        f"{_KEYS_ARE}")
            return (f"input holds {what} of type `{t.__name__}`, a subclass of {base.__name__}: subclasses are "
                    f"not accepted (pass the plain {base.__name__}, e.g. an enum member's `.value`)")
    return (f"input holds {what} of type `{t.__name__}`: values must be JSON-like (object, list, string, "
            f"number, bool, null)" + ("; map keys strings, ints or bools" if key else ""))


def check_size(root: Any) -> str | None:
    """Why `root` exceeds the input limits, or None.

    A quick pass (`_quick_walk`) first: for the usual input (a dict of plain JSON values,
    not deeply nested) it proves, more cheaply, that there is no problem. When it cannot
    (anything unusual, or a limit it cannot rule out), the exact walk below decides, so
    the answer and the message are always the exact walk's.
    """
    if type(root) is dict:
        try:
            items, chars = _quick_walk(root, 1)
            if items <= MAX_INPUT_ITEMS and chars <= MAX_INPUT_CHARS:
                return None
        except (_NotPlain, TypeError):
            pass
    return _check_size(root)


class _NotPlain(Exception):
    pass


_QUICK_DEPTH = 32  # deeper than this: the exact walk decides (the limit is MAX_INPUT_DEPTH)
_join = "".join
_surrogate = _SURROGATE_RE.search


def _quick_walk(v: Any, d: int, _type=type, _str=str, _int=int, _bool=bool, _float=float, _dict=dict,
                _list=list, _len=len, _join=_join, _surrogate=_surrogate) -> tuple[int, int]:
    """(values, characters) in `v` (a dict or list at depth `d`), counting what the exact
    walk counts; raises _NotPlain (or TypeError) on anything the exact walk might refuse
    or count differently: a key that is not exactly a str, a value of a type other than
    dict, list, str, int, bool, None and float (subclasses included), a non-finite float, an
    unpaired surrogate, nesting deeper than _QUICK_DEPTH. Builtins are bound as defaults
    (local lookups: this runs for every value of every input)."""
    n = _len(v)
    if n > MAX_INPUT_ITEMS:  # over the limit alone: the exact walk stops early and says so
        raise _NotPlain
    if _type(v) is _dict:
        for k in v:  # a key of another type, a str subclass among them: the exact walk decides
            if _type(k) is not _str:
                raise _NotPlain
        keys = _join(v)
        c = _len(keys)
        if not keys.isascii() and _surrogate(keys):  # (str.isascii is O(1))
            raise _NotPlain
        v = v.values()
    else:
        c = 0
    for x in v:
        t = _type(x)
        if t is _str:
            c += _len(x)
            if not x.isascii() and _surrogate(x):
                raise _NotPlain
        elif t is _int or t is _bool or x is None:
            pass
        elif t is _float:
            if x - x != 0.0:  # NaN or +-Infinity (a finite float minus itself is 0.0)
                raise _NotPlain
        elif t is _dict or t is _list:
            if d >= _QUICK_DEPTH:
                raise _NotPlain
            n2, c2 = _quick_walk(x, d + 1)
            n += n2
            c += c2
        else:
            raise _NotPlain
    return n, c


_MISSING: Any = object()  # (plain_flat: a field absent)


def plain_flat(d: dict, keys: tuple | None = None, _type: Any = type, _str: type = str, _len: Any = len,
               _miss: Any = _MISSING) -> bool:
    """True when `check_fields(d, keys)` (`check_size(d)` for `keys` None) is surely None:
    the fields looked at are exact `str` keys holding scalars (exact str, int, bool, None,
    a finite float), no lone surrogate, within the limits. False says nothing: the exact
    check then decides. About a third of its cost for the small flat objects a lane checks
    on every call (a stopped workflow's state, an action's id, type and workflow)."""
    c = 0
    if keys is None and _len(d) > MAX_INPUT_ITEMS:
        return False
    get = d.get
    for k in d if keys is None else keys:
        v = get(k, _miss)
        if v is _miss:
            continue
        if _type(k) is not _str:
            return False
        c += _len(k)
        if not k.isascii() and _surrogate(k):
            return False
        t = _type(v)
        if t is _str:
            c += _len(v)
            if not v.isascii() and _surrogate(v):
                return False
        elif t is int or t is bool or v is None:
            pass
        elif t is float:
            if v - v != 0.0:
                return False
        else:
            return False
    return c <= MAX_INPUT_CHARS


def check_fields(action: dict, keys: tuple | None) -> str | None:
    """Why the fields `keys` of `action` (all of it if None) exceed the input limits, or None.

    The gate checks only the fields its conditions can read, and those a decision shows
    (`compiler.reads_of`): a field no condition reads cannot change the decision, so it
    is never looked at (a NaN or a megabyte of text in it costs nothing and denies
    nothing). The limits apply to the checked fields together, as to one object."""
    if keys is None:
        return check_size(action)
    return check_size({k: action[k] for k in keys if k in action})


def _check_size(root: Any) -> str | None:
    """Why `root` exceeds the input limits, or None. Iterative: no recursion, stops early.

    Runs on every call, so the common leaves (str, int, bool, None) are handled before any
    isinstance check; floats are checked for NaN/Infinity (they compare false with
    everything, so a NaN amount could slip past `deny when `action.amount > 1000.0``).
    """
    items = 0
    chars = 0
    stack = [(root, 0)]
    pop = stack.pop
    push = stack.append
    while stack:
        v, d = pop()
        t = type(v)
        if t is dict:
            vals = v.values()
            for k in v:
                tk = type(k)
                if tk is str:
                    chars += len(k)
                    if not k.isascii() and _SURROGATE_RE.search(k):
                        return _SURROGATE
                elif tk not in _KEYS:
                    return _not_json(k, True)
        elif t is list or t is tuple:
            vals = v
        elif t is str:
            chars += len(v)
            if not v.isascii() and _SURROGATE_RE.search(v):
                return _SURROGATE
            continue
        elif t is float:
            if not isfinite(v):
                return _NONFINITE
            continue
        elif isinstance(v, _Mapping):
            vals = list(v.values())
            for k in v:
                tk = type(k)
                if tk is str:
                    chars += len(k)
                    if not k.isascii() and _SURROGATE_RE.search(k):
                        return _SURROGATE
                elif tk not in _KEYS:
                    return _not_json(k, True)
        elif t in _LEAVES:
            continue
        else:  # an arbitrary object, or a subclass of a plain type: never evaluated
            return _not_json(v)
        if d >= MAX_INPUT_DEPTH:
            return f"input nests more than {MAX_INPUT_DEPTH} levels deep"
        items += len(vals)
        if items > MAX_INPUT_ITEMS:
            return f"input has more than {MAX_INPUT_ITEMS} values"
        d1 = d + 1
        for x in vals:
            tx = type(x)
            if tx is str:
                chars += len(x)
                if not x.isascii() and _SURROGATE_RE.search(x):
                    return _SURROGATE
            elif tx is int or tx is bool or x is None:
                pass
            elif tx is float:
                if not isfinite(x):
                    return _NONFINITE
            else:
                push((x, d1))
        if chars > MAX_INPUT_CHARS:
            return f"input holds more than {MAX_INPUT_CHARS} characters of text"
    if chars > MAX_INPUT_CHARS:
        return f"input holds more than {MAX_INPUT_CHARS} characters of text"
    return None


def declared_problem(ca: Any, action: dict) -> str | None:
    """Why `action` does not have its type's declared shape (`fields { ... }`), or None
    (also when the type declares none). Every path checks this before any condition."""
    if ca is None or ca.fields is None:
        return None
    return value_problem(ca.fields, action, "action")


quick_walk = _quick_walk  # (the fused gate's prologue calls it for nested values)
