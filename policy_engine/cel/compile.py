"""CEL conditions compiled into Python closures.

cel-python's Lark parser (``celpy.celparser.CELParser``) is the source of truth for
CEL syntax; this module walks its parse tree once and builds a tree of closures
``fn(activation, ctx)`` that work directly on plain Python values:

    null -> None      bool -> bool      int -> int        uint -> CelUint(int)
    double -> float   string -> str     bytes -> bytes    list -> list
    map -> dict       timestamp -> datetime (tz-aware)    duration -> timedelta
    type -> CelType

Inside the closures a CEL error travels as the private ``_Fail`` exception (free on
the happy path in CPython 3.11); ``&&``, ``||``, ``?:`` and the ``all``/``exists``
macros absorb it where CEL says so, and ``CompiledExpr.__call__`` turns whatever is
left into a ``CelError`` *value*. Nothing raises out of ``__call__``.

Per-call state (comprehension variable slots, the iteration budget) lives in a small
list created per evaluation (``ctx[0]`` counts comprehension iterations, ``ctx[1:]`` holds
comprehension variables), only for expressions that need it; there is no
shared mutable state, so a compiled expression may be evaluated from many threads.

On top of the closures, each expression in a common subset also gets a generated Python
function (the "fast path", built on its second evaluation) that ``__call__`` tries first;
it raises on anything unusual and the closures, which stay the reference, decide. See
the "Fast path" section below and the README, section "CEL conditions".

Only this module imports celpy, and only lazily (inside ``compile_cel``).
"""

from __future__ import annotations

import base64
import math
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Callable

__all__ = [
    "CelError",
    "CelCompileError",
    "CelType",
    "CelUint",
    "CompiledExpr",
    "DEFAULT_LIMITS",
    "Limits",
    "Reference",
    "compile_cel",
    "to_cel_json",
]

# ---------------------------------------------------------------------------
# Public value and error types
# ---------------------------------------------------------------------------

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1
_DUR_MAX_US = (2**63 - 1) // 1000  # cel-go durations are int64 nanoseconds (~292 years)


class CelUint(int):
    """A CEL ``uint`` value (0 .. 2**64-1). Plain ``int`` is CEL ``int``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"{int(self)}u"


class CelType:
    """A CEL type value, e.g. the result of ``type(1)`` or the identifier ``int``."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __eq__(self, other: object) -> bool:
        return type(other) is CelType and other.name == self.name  # type: ignore[union-attr]

    def __hash__(self) -> int:
        return hash(("CelType", self.name))

    def __repr__(self) -> str:
        return f"CelType({self.name!r})"


class CelError:
    """A CEL evaluation error, returned as a value (never raised out of evaluation).

    ``budget`` names the exceeded limit (``"max_iterations"``, ``"max_size"``,
    ``"max_nesting_depth"``) when the error is a budget error, else ``None``.
    """

    __slots__ = ("message", "budget")

    def __init__(self, message: str, budget: str | None = None) -> None:
        self.message = message
        self.budget = budget

    def __repr__(self) -> str:
        if self.budget:
            return f"CelError({self.message!r}, budget={self.budget!r})"
        return f"CelError({self.message!r})"

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is CelError
            and other.message == self.message  # type: ignore[union-attr]
            and other.budget == self.budget  # type: ignore[union-attr]
        )

    def __hash__(self) -> int:
        return hash((self.message, self.budget))


class CelCompileError(Exception):
    """A CEL syntax or limit error. ``offset``/``end`` index into the CEL source."""

    def __init__(self, message: str, offset: int, end: int, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset
        self.end = end
        self.hint = hint

    def __repr__(self) -> str:
        return f"CelCompileError({self.message!r}, offset={self.offset}, end={self.end}, hint={self.hint!r})"


@dataclass(frozen=True)
class Reference:
    """An identifier, or a dotted select chain rooted at one, e.g. ``("action", "amount")``."""

    path: tuple[str, ...]
    offset: int
    end: int


@dataclass(frozen=True)
class Limits:
    """Compile-time limits and per-evaluation budgets."""

    max_expression_length: int = 4096  # characters of CEL source
    max_nesting_depth: int = 64  # brackets/parentheses/braces, checked before parsing
    max_iterations: int = 100_000  # comprehension iterations per evaluation
    max_size: int = 1_000_000  # length of any string/bytes/list produced


DEFAULT_LIMITS = Limits()

TYPE_INT = CelType("int")
TYPE_UINT = CelType("uint")
TYPE_DOUBLE = CelType("double")
TYPE_BOOL = CelType("bool")
TYPE_STRING = CelType("string")
TYPE_BYTES = CelType("bytes")
TYPE_LIST = CelType("list")
TYPE_MAP = CelType("map")
TYPE_NULL = CelType("null_type")
TYPE_TYPE = CelType("type")
TYPE_TIMESTAMP = CelType("google.protobuf.Timestamp")
TYPE_DURATION = CelType("google.protobuf.Duration")

_TYPE_IDENTS: dict[str, CelType] = {
    t.name: t
    for t in (
        TYPE_INT, TYPE_UINT, TYPE_DOUBLE, TYPE_BOOL, TYPE_STRING, TYPE_BYTES, TYPE_LIST,
        TYPE_MAP, TYPE_NULL, TYPE_TYPE, TYPE_TIMESTAMP, TYPE_DURATION,
    )
}

# ---------------------------------------------------------------------------
# Internal error signalling
# ---------------------------------------------------------------------------


class _Fail(Exception):
    """Carries a CelError through the closures. Never escapes ``CompiledExpr.__call__``."""

    __slots__ = ("err",)

    def __init__(self, message: str, budget: str | None = None) -> None:
        self.err = CelError(message, budget)


class _BudgetFail(_Fail):
    """A budget error: never absorbed by ``&&``, ``||`` or the macros."""


def _to_error(ex: BaseException) -> CelError:
    if isinstance(ex, _Fail):
        return ex.err
    if isinstance(ex, RecursionError):
        return CelError("expression too deeply nested for evaluation", "max_nesting_depth")
    if isinstance(ex, (OverflowError,)):
        return CelError("range error: " + str(ex))
    return CelError(f"no such overload ({type(ex).__name__}: {ex})")


def _absorbable(ex: BaseException) -> bool:
    return not isinstance(ex, (_BudgetFail, RecursionError))


def _no_overload(op: str, *args: Any) -> _Fail:
    return _Fail(f"no such overload: {op}({', '.join(_type_name(a) for a in args)})")


# ---------------------------------------------------------------------------
# Value helpers
# ---------------------------------------------------------------------------

_NUM = (int, CelUint, float)
_NUMSET = frozenset(_NUM)


def _type_of(v: Any) -> CelType:
    t = type(v)
    r = _PYTYPE_TO_CEL.get(t)
    if r is not None:
        return r
    if v is None:
        return TYPE_NULL
    if isinstance(v, bool):
        return TYPE_BOOL
    if isinstance(v, CelUint):
        return TYPE_UINT
    if isinstance(v, int):
        return TYPE_INT
    if isinstance(v, float):
        return TYPE_DOUBLE
    if isinstance(v, str):
        return TYPE_STRING
    if isinstance(v, (bytes, bytearray)):
        return TYPE_BYTES
    if isinstance(v, datetime):
        return TYPE_TIMESTAMP
    if isinstance(v, timedelta):
        return TYPE_DURATION
    if isinstance(v, Mapping):
        return TYPE_MAP
    if isinstance(v, (list, tuple)):
        return TYPE_LIST
    raise _Fail(f"unsupported value type {t.__name__}")


_PYTYPE_TO_CEL: dict[type, CelType] = {
    bool: TYPE_BOOL, int: TYPE_INT, CelUint: TYPE_UINT, float: TYPE_DOUBLE, str: TYPE_STRING,
    bytes: TYPE_BYTES, list: TYPE_LIST, tuple: TYPE_LIST, dict: TYPE_MAP, type(None): TYPE_NULL,
    datetime: TYPE_TIMESTAMP, timedelta: TYPE_DURATION, CelType: TYPE_TYPE,
}


def _type_name(v: Any) -> str:
    try:
        return _type_of(v).name
    except _Fail:
        return type(v).__name__


def _norm(v: Any) -> Any:
    """Map a value of an unusual Python type (subclass, tuple, Mapping) onto a CEL kind.

    A subclass of str, int or float (a StrEnum, an IntEnum) becomes the plain value it
    holds, read with the base type's own method (`str.__str__`, never the subclass's
    `__str__`), so `==` and `in` see the same value. Anything that is no CEL value (an
    arbitrary object, a datetime subclass) raises `_Fail`: an error, never a match.
    The engine refuses such inputs before any condition runs (see docs/values.md); this
    is for direct users of the CEL module."""
    t = type(v)
    if t in _PYTYPE_TO_CEL:
        return v
    k = _type_of(v)
    if k is TYPE_BOOL:
        return bool(v)
    if k is TYPE_UINT:
        return CelUint(int.__int__(v))
    if k is TYPE_INT:
        return int.__int__(v)
    if k is TYPE_DOUBLE:
        return float.__float__(v)
    if k is TYPE_STRING:
        return str.__str__(v)
    if k is TYPE_BYTES:
        return bytes(memoryview(v))
    if k is TYPE_LIST:
        return list(v)
    if k is TYPE_MAP:
        return dict(v)
    raise _Fail(f"unsupported value type {t.__name__}")


def _eq(x: Any, y: Any) -> bool:
    """CEL equality: heterogeneous values are unequal, numbers compare across kinds.

    Only CEL values are compared with Python's `==`: a subclass is compared as its plain
    value (`_norm`) and a value that is no CEL value raises `_Fail` (its own `__eq__` is
    never called, so an object equal to everything matches nothing)."""
    tx = type(x)
    ty = type(y)
    if tx is ty:
        if tx is list or tx is tuple:
            if len(x) != len(y):
                return False
            for a, b in zip(x, y):
                if not _eq(a, b):
                    return False
            return True
        if tx is dict:
            return _map_eq(x, y)
        if tx in _PYTYPE_TO_CEL:
            return x == y
        return _eq(_norm(x), _norm(y))
    if tx in _NUMSET and ty in _NUMSET:
        return x == y
    if tx in _PYTYPE_TO_CEL and ty in _PYTYPE_TO_CEL:
        if (tx is list or tx is tuple) and (ty is list or ty is tuple):
            return _eq(list(x), list(y))
        return False
    return _eq(_norm(x), _norm(y))  # a subclass as its plain value; no CEL value: _Fail


def _map_eq(x: Mapping, y: Mapping) -> bool:
    if len(x) != len(y):
        return False
    for k, v in x.items():
        found, w = _map_lookup(y, k)
        if not found or not _eq(v, w):
            return False
    return True


def _map_lookup(m: Mapping, k: Any) -> tuple[bool, Any]:
    """Look up a CEL key: bool keys never match numeric keys; 1 == 1u == 1.0."""
    tk = type(k)
    if tk is str:
        try:
            return True, m[k]
        except KeyError:
            return False, None
    if tk is bool:
        for kk, vv in m.items():
            if type(kk) is bool and kk == k:
                return True, vv
        return False, None
    if tk is int or tk is CelUint or tk is float:
        if tk is float:
            if not k.is_integer():
                return False, None
            k = int(k)
        try:
            v = m[k]
        except KeyError:
            return False, None
        except TypeError:
            return False, None
        if k == 0 or k == 1:  # Python hashes True/False like 1/0: make sure a number matched
            for kk, vv in m.items():
                if type(kk) is not bool and type(kk) in _NUMSET and kk == k:
                    return True, vv
            return False, None
        return True, v
    if tk in _PYTYPE_TO_CEL:
        raise _Fail(f"unsupported key type: {_type_name(k)}")
    return _map_lookup(m, _norm(k))


def _check_key(k: Any) -> Any:
    tk = type(k)
    if tk is str or tk is int or tk is bool or tk is CelUint:
        return k
    raise _Fail(f"unsupported key type: {_type_name(k)}")


def _lt(x: Any, y: Any) -> bool:
    tx = type(x)
    if tx is type(y):
        if tx in _ORDERED:
            return x < y
    elif tx in _NUMSET and type(y) in _NUMSET:
        if tx is float or type(y) is float:
            return float(x) < float(y)
        return x < y
    raise _no_overload("_<_", x, y)


def _le(x: Any, y: Any) -> bool:
    tx = type(x)
    if tx is type(y):
        if tx in _ORDERED:
            return x <= y
    elif tx in _NUMSET and type(y) in _NUMSET:
        if tx is float or type(y) is float:
            return float(x) <= float(y)
        return x <= y
    raise _no_overload("_<=_", x, y)


def _gt(x: Any, y: Any) -> bool:
    tx = type(x)
    if tx is type(y):
        if tx in _ORDERED:
            return x > y
    elif tx in _NUMSET and type(y) in _NUMSET:
        if tx is float or type(y) is float:
            return float(x) > float(y)
        return x > y
    raise _no_overload("_>_", x, y)


def _ge(x: Any, y: Any) -> bool:
    tx = type(x)
    if tx is type(y):
        if tx in _ORDERED:
            return x >= y
    elif tx in _NUMSET and type(y) in _NUMSET:
        if tx is float or type(y) is float:
            return float(x) >= float(y)
        return x >= y
    raise _no_overload("_>=_", x, y)


_ORDERED = frozenset({int, CelUint, float, str, bytes, bool, datetime, timedelta})


def _ovf_int(r: int) -> int:
    if INT64_MIN <= r <= INT64_MAX:
        return r
    raise _Fail("return error for overflow")


def _ovf_uint(r: int) -> CelUint:
    if 0 <= r <= UINT64_MAX:
        return CelUint(r)
    raise _Fail("return error for overflow")


def _check_dur(d: timedelta) -> timedelta:
    us = (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds
    if -_DUR_MAX_US <= us <= _DUR_MAX_US:
        return d
    raise _Fail("range error: duration out of range")


class _Sizes:
    """Size checks bound to one Limits instance (no per-call state)."""

    __slots__ = ("max_size",)

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size

    def check(self, v: Any) -> Any:
        if len(v) > self.max_size:
            raise _BudgetFail(
                f"result of size {len(v)} exceeds max_size {self.max_size}", "max_size"
            )
        return v


def _mixed(x: Any, y: Any) -> tuple[float, float] | None:
    """int/uint with double: promote to double (documented deviation: JSON numbers).

    JSON has one number type, so `120` and `120.5` arrive as int and double; policy
    authors expect `action.amount + action.fee` to work either way.
    """
    tx, ty = type(x), type(y)
    if tx is float and (ty is int or ty is CelUint):
        return x, float(y)
    if ty is float and (tx is int or tx is CelUint):
        return float(x), y
    return None


def _make_add(sizes: _Sizes) -> Callable[[Any, Any], Any]:
    maxs = sizes.max_size

    def add(x: Any, y: Any) -> Any:
        tx = type(x)
        if tx is type(y):
            if tx is int:
                r = x + y
                if INT64_MIN <= r <= INT64_MAX:
                    return r
                raise _Fail("return error for overflow")
            if tx is float:
                return x + y
            if tx is str or tx is bytes or tx is list:
                if len(x) + len(y) > maxs:
                    raise _BudgetFail(
                        f"result of size {len(x) + len(y)} exceeds max_size {maxs}", "max_size"
                    )
                return x + y
            if tx is CelUint:
                return _ovf_uint(x + y)
            if tx is timedelta:
                try:
                    return _check_dur(x + y)
                except OverflowError:
                    raise _Fail("range error: duration out of range") from None
            if tx is tuple:
                return add(list(x), list(y))
        elif tx is datetime and type(y) is timedelta or tx is timedelta and type(y) is datetime:
            try:
                return x + y
            except OverflowError:
                raise _Fail("range error: timestamp out of range") from None
        elif (tx is list or tx is tuple) and (type(y) is list or type(y) is tuple):
            return add(list(x), list(y))
        if tx not in _PYTYPE_TO_CEL or type(y) not in _PYTYPE_TO_CEL:
            try:
                return add(_norm(x), _norm(y))
            except _Fail:
                pass
        m = _mixed(x, y)
        if m is not None:
            return m[0] + m[1]
        raise _no_overload("_+_", x, y)

    return add


def _sub(x: Any, y: Any) -> Any:
    tx = type(x)
    if tx is type(y):
        if tx is int:
            return _ovf_int(x - y)
        if tx is float:
            return x - y
        if tx is CelUint:
            return _ovf_uint(x - y)
        if tx is timedelta:
            try:
                return _check_dur(x - y)
            except OverflowError:
                raise _Fail("range error: duration out of range") from None
        if tx is datetime:
            try:
                return _check_dur(x - y)
            except OverflowError:
                raise _Fail("range error: duration out of range") from None
    elif tx is datetime and type(y) is timedelta:
        try:
            return x - y
        except OverflowError:
            raise _Fail("range error: timestamp out of range") from None
    m = _mixed(x, y)
    if m is not None:
        return m[0] - m[1]
    raise _no_overload("_-_", x, y)


def _mul(x: Any, y: Any) -> Any:
    tx = type(x)
    if tx is type(y):
        if tx is int:
            return _ovf_int(x * y)
        if tx is float:
            return x * y
        if tx is CelUint:
            return _ovf_uint(x * y)
    m = _mixed(x, y)
    if m is not None:
        return m[0] * m[1]
    raise _no_overload("_*_", x, y)


def _div(x: Any, y: Any) -> Any:
    tx = type(x)
    if tx is type(y):
        if tx is int:
            if y == 0:
                raise _Fail("divide by zero")
            q = abs(x) // abs(y)
            if (x < 0) != (y < 0):
                q = -q
            return _ovf_int(q)
        if tx is float:
            if y == 0.0:
                if x == 0.0 or x != x:
                    return math.nan
                return math.copysign(math.inf, x) * math.copysign(1.0, y)
            return x / y
        if tx is CelUint:
            if y == 0:
                raise _Fail("divide by zero")
            return CelUint(x // y)
    m = _mixed(x, y)
    if m is not None:
        return _div(*m)
    raise _no_overload("_/_", x, y)


def _mod(x: Any, y: Any) -> Any:
    tx = type(x)
    if tx is type(y):
        if tx is int:
            if y == 0:
                raise _Fail("modulus by zero")
            r = abs(x) % abs(y)
            return -r if x < 0 else r
        if tx is CelUint:
            if y == 0:
                raise _Fail("modulus by zero")
            return CelUint(x % y)
    raise _no_overload("_%_", x, y)


def _neg(x: Any) -> Any:
    tx = type(x)
    if tx is int:
        return _ovf_int(-x)
    if tx is float:
        return -x
    if tx is timedelta:
        return -x
    raise _no_overload("-_", x)


def _select(v: Any, name: str) -> Any:
    if type(v) is dict:
        try:
            return v[name]
        except KeyError:
            raise _Fail(f"no such key: '{name}'") from None
    if isinstance(v, Mapping):
        try:
            return v[name]
        except KeyError:
            raise _Fail(f"no such key: '{name}'") from None
    raise _Fail(f"type '{_type_name(v)}' does not support field selection")


def _has_field(v: Any, name: str) -> bool:
    if isinstance(v, Mapping):
        return name in v
    raise _Fail(f"type '{_type_name(v)}' does not support field selection")


def _index(v: Any, k: Any) -> Any:
    tv = type(v)
    if tv is list or tv is tuple:
        tk = type(k)
        if tk is int or tk is CelUint:
            i = k
        elif tk is float:
            if not k.is_integer():
                raise _Fail("invalid_argument: list index is not an integer")
            i = int(k)
        else:
            raise _no_overload("_[_]", v, k)
        if 0 <= i < len(v):
            return v[i]
        raise _Fail(f"index out of range: {i}")
    if tv is dict or isinstance(v, Mapping):
        found, r = _map_lookup(v, k)
        if found:
            return r
        raise _Fail(f"no such key: {_fmt_key(k)}")
    raise _no_overload("_[_]", v, k)


def _fmt_key(k: Any) -> str:
    if type(k) is str:
        return f"'{k}'"
    return repr(k)


def _contains_in(x: Any, coll: Any) -> bool:
    tc = type(coll)
    if tc is list or tc is tuple:
        for e in coll:
            if _eq(x, e):
                return True
        return False
    if tc is dict or isinstance(coll, Mapping):
        tk = type(x)
        if tk is str or tk is bool or tk in _NUMSET:
            return _map_lookup(coll, x)[0]
        if tk in _PYTYPE_TO_CEL:
            return False
        return _contains_in(_norm(x), coll)  # a subclass as its plain value, as `==` has it
    raise _no_overload("@in", x, coll)


def _size(v: Any) -> int:
    t = type(v)
    if t is str or t is bytes or t is list or t is dict or t is tuple:
        return len(v)
    if isinstance(v, (str, bytes, list, tuple, Mapping)):
        return len(v)
    raise _no_overload("size", v)


def _truth(v: Any, op: str) -> bool:
    """The bool value of a logical operand, or a _Fail."""
    if v is True or v is False:
        return v
    raise _no_overload(op, v)


# ---------------------------------------------------------------------------
# Timestamps and durations
# ---------------------------------------------------------------------------

_TS_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$"
)
_DUR_RE = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_DUR_UNITS_US = {
    "ns": 0.001, "us": 1, "µs": 1, "μs": 1, "ms": 1000, "s": 1_000_000,
    "m": 60_000_000, "h": 3_600_000_000,
}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _parse_timestamp(s: str) -> datetime:
    m = _TS_RE.match(s)
    if not m:
        raise _Fail(f"range error: cannot parse timestamp {s!r}")
    y, mo, d, h, mi, sec, frac, tz = m.groups()
    us = int((frac or "0").ljust(9, "0")[:6])  # nanoseconds truncated to microseconds
    try:
        if tz in ("Z", "z"):
            tzinfo = timezone.utc
        else:
            sign = 1 if tz[0] == "+" else -1
            tzinfo = timezone(sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6])))
        t = datetime(int(y), int(mo), int(d), int(h), int(mi), int(sec), us, tzinfo=tzinfo)
        return t.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise _Fail(f"range error: invalid timestamp {s!r}") from None


def _parse_duration(s: str) -> timedelta:
    body = s
    sign = 1
    if body[:1] in ("-", "+"):
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return timedelta(0)
    if not body:
        raise _Fail(f"invalid duration {s!r}")
    pos = 0
    total_us = 0.0
    total_exact = 0
    for m in _DUR_RE.finditer(body):
        if m.start() != pos or m.group(1) in ("", "."):
            raise _Fail(f"invalid duration {s!r}")
        pos = m.end()
        num, unit = m.group(1), m.group(2)
        scale = _DUR_UNITS_US[unit]
        if "." in num or unit == "ns":
            total_us += float(num) * scale
        else:
            total_exact += int(num) * int(scale)
    if pos != len(body):
        raise _Fail(f"invalid duration {s!r}")
    us = sign * (total_exact + int(total_us))
    if abs(us) > _DUR_MAX_US:
        raise _Fail("range error: duration out of range")
    return timedelta(microseconds=us)


def _dur_micros(d: timedelta) -> int:
    return (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds


def _format_duration(d: timedelta) -> str:
    us = _dur_micros(d)
    sign = "-" if us < 0 else ""
    us = abs(us)
    s, frac = divmod(us, 1_000_000)
    if frac:
        return f"{sign}{s}.{frac:06d}".rstrip("0") + "s"
    return f"{sign}{s}s"


def _format_timestamp(t: datetime) -> str:
    t = t.astimezone(timezone.utc)
    base = f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
    if t.microsecond:
        base += f".{t.microsecond:06d}".rstrip("0")
    return base + "Z"


_TZ_OFFSET_RE = re.compile(r"^([+-])?(\d{1,2}):(\d{2})$")


@lru_cache(maxsize=64)
def _tz(name: str) -> Any:
    m = _TZ_OFFSET_RE.match(name)
    if m:
        sign = -1 if m.group(1) == "-" else 1
        return timezone(sign * timedelta(hours=int(m.group(2)), minutes=int(m.group(3))))
    if name == "UTC":
        return timezone.utc
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def _in_tz(t: datetime, args: tuple) -> datetime:
    if not args:
        return t.astimezone(timezone.utc)
    (name,) = args
    if type(name) is not str:
        raise _no_overload("timezone", name)
    try:
        return t.astimezone(_tz(name))
    except Exception:
        raise _Fail(f"invalid timezone {name!r}") from None


def _ts_accessor(name: str, fn: Callable[[datetime], int]) -> Callable[..., int]:
    def acc(t: Any, *args: Any) -> int:
        if type(t) is datetime and len(args) <= 1:
            return fn(_in_tz(t, args))
        if type(t) is timedelta and not args and name in _DUR_ACCESSORS:
            return _DUR_ACCESSORS[name](t)
        raise _no_overload(name, t, *args)

    return acc


_DUR_ACCESSORS: dict[str, Callable[[timedelta], int]] = {
    "getHours": lambda d: int(_dur_micros(d) / 3_600_000_000),
    "getMinutes": lambda d: int(_dur_micros(d) / 60_000_000),
    "getSeconds": lambda d: int(_dur_micros(d) / 1_000_000),
    "getMilliseconds": lambda d: int(math.fmod(_dur_micros(d), 1_000_000) / 1000),
}

# ---------------------------------------------------------------------------
# Regular expressions (RE2: linear time)
# ---------------------------------------------------------------------------


def _re2_compile_raw(pattern: str) -> Any:
    import re2

    opts = re2.Options()
    opts.max_mem = 8 << 20
    opts.never_capture = True  # `matches` needs no groups; 10k nested groups made one search take seconds
    opts.log_errors = False  # hostile patterns must not flood stderr
    return re2.compile(pattern, opts)


def _found(rx: Any) -> Callable[[str], bool]:
    """``rx.search(s) is not None`` for a str ``s``, the same RE2 call without the
    wrapper's generator and match object (3 us -> 0.5 us a search): what
    ``re2._Regexp.search`` does for a whole str is encode it as UTF-8 and run
    ``Match(UNANCHORED, text, 0, len(text))``; no match is the span (-1, -1). That wrapper
    is google-re2's own Python code, so it is checked once per pattern on probes, and
    if anything differs (another google-re2) the public ``search`` is used."""
    search = rx.search
    try:
        import re2

        match = rx._regexp.Match
        anchor = re2._Anchor.UNANCHORED
        null = re2._NULL_SPAN

        def found(s: str) -> bool:
            b = s.encode("utf-8")  # (a lone surrogate raises here, as in the wrapper)
            return match(anchor, b, 0, len(b))[0] != null

        for probe in ("", "a", "0", "-", " \u00e9\n", rx.pattern):
            if found(probe) is not (search(probe) is not None):
                raise ValueError(probe)
        return found
    except Exception:  # noqa: BLE001 - keep the public API
        return lambda s: search(s) is not None


# RE2 is linear in the text, but when its DFA cache overflows it falls back to an NFA
# whose cost is len(text) * program size: 'a' * 20000 over 100k characters takes ~1 s.
# Above this product a match is a budget error (fails closed); ~0.5 s worst case.
REGEX_MAX_COST = 1_000_000_000


def _regex_cost_check(s: str, rx: Any) -> None:
    if len(s) * rx.programsize > REGEX_MAX_COST:
        raise _BudgetFail(f"regular expression match too costly ({len(s)} characters x program size "
                          f"{rx.programsize} > {REGEX_MAX_COST})", "max_regex_cost")


@lru_cache(maxsize=256)  # bounded; lru_cache is thread-safe
def _re2_cached(pattern: str) -> Any:
    try:
        rx = _re2_compile_raw(pattern)
        return rx, _found(rx)
    except Exception as ex:  # re2.error and friends
        return _Fail(f"invalid regular expression {pattern!r}: {ex}")


def _regex(pattern: Any) -> Any:
    """(the compiled pattern, its search as a bool function)."""
    if type(pattern) is not str:
        raise _no_overload("matches", pattern)
    r = _re2_cached(pattern)
    if isinstance(r, _Fail):
        raise _Fail(r.err.message)
    return r


def _matches(s: Any, pattern: Any) -> bool:
    if type(s) is not str:
        raise _no_overload("matches", s, pattern)
    rx, found = _regex(pattern)
    _regex_cost_check(s, rx)
    return found(s)


# ---------------------------------------------------------------------------
# Conversions
# ---------------------------------------------------------------------------

_INT_STR_RE = re.compile(r"^[+-]?[0-9]+$")
_FLOAT_STR_RE = re.compile(
    r"^[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[Ii]nf(?:inity)?|NaN|nan)$"
)
_BOOL_STRS = {
    "1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
    "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False,
}


def _to_int(v: Any) -> int:
    t = type(v)
    if t is int:
        return v
    if t is CelUint:
        if v > INT64_MAX:
            raise _Fail("range error: uint out of int range")
        return int(v)
    if t is float:
        if not (-9.223372036854775808e18 < v < 9.223372036854775808e18):
            raise _Fail("range error: double out of int range")
        return int(v)
    if t is str:
        if not _INT_STR_RE.match(v):
            raise _Fail(f"type conversion error: cannot convert {v!r} to int")
        return _ovf_range_int(int(v))
    if t is datetime:
        return (v - _EPOCH) // timedelta(seconds=1)
    if t is bool or t is bytes:
        raise _no_overload("int", v)
    if t not in _PYTYPE_TO_CEL:
        return _to_int(_norm(v))
    raise _no_overload("int", v)


def _ovf_range_int(r: int) -> int:
    if INT64_MIN <= r <= INT64_MAX:
        return r
    raise _Fail("range error: int out of range")


def _to_uint(v: Any) -> CelUint:
    t = type(v)
    if t is CelUint:
        return v
    if t is int:
        if 0 <= v <= UINT64_MAX:
            return CelUint(v)
        raise _Fail("range error: int out of uint range")
    if t is float:
        if not (-1.0 < v < 1.8446744073709551616e19):
            raise _Fail("range error: double out of uint range")
        return CelUint(int(v))
    if t is str:
        if not _INT_STR_RE.match(v) or v.startswith("-"):
            raise _Fail(f"type conversion error: cannot convert {v!r} to uint")
        r = int(v)
        if r > UINT64_MAX:
            raise _Fail("range error: uint out of range")
        return CelUint(r)
    if t not in _PYTYPE_TO_CEL:
        return _to_uint(_norm(v))
    raise _no_overload("uint", v)


def _to_double(v: Any) -> float:
    t = type(v)
    if t is float:
        return v
    if t is int or t is CelUint:
        return float(v)
    if t is str:
        if not _FLOAT_STR_RE.match(v):
            raise _Fail(f"type conversion error: cannot convert {v!r} to double")
        return float(v)
    if t not in _PYTYPE_TO_CEL:
        return _to_double(_norm(v))
    raise _no_overload("double", v)


def _format_double(f: float) -> str:
    if f != f:
        return "NaN"
    if f in (math.inf, -math.inf):
        return "+Inf" if f > 0 else "-Inf"
    if f.is_integer() and abs(f) < 1e21:
        return str(int(f))
    r = repr(f)
    if "e" in r:
        mant, exp = r.split("e")
        e = int(exp)
        if -4 <= e < 21:
            return format(f, "f").rstrip("0").rstrip(".") if e < 0 else r
        return f"{mant}e{'+' if e >= 0 else '-'}{abs(e):02d}"
    return r


def _to_string(v: Any) -> str:
    t = type(v)
    if t is str:
        return v
    if t is int or t is CelUint:
        return str(int(v))
    if t is float:
        return _format_double(v)
    if t is bool:
        return "true" if v else "false"
    if t is bytes:
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            raise _Fail("invalid UTF-8 in bytes") from None
    if t is datetime:
        return _format_timestamp(v)
    if t is timedelta:
        return _format_duration(v)
    if t not in _PYTYPE_TO_CEL:
        return _to_string(_norm(v))
    raise _no_overload("string", v)


def _to_bytes(v: Any) -> bytes:
    t = type(v)
    if t is bytes:
        return v
    if t is str:
        return v.encode("utf-8")
    if t not in _PYTYPE_TO_CEL:
        return _to_bytes(_norm(v))
    raise _no_overload("bytes", v)


def _to_bool(v: Any) -> bool:
    if v is True or v is False:
        return v
    if type(v) is str:
        r = _BOOL_STRS.get(v)
        if r is None:
            raise _Fail(f"type conversion error: cannot convert {v!r} to bool")
        return r
    raise _no_overload("bool", v)


def _to_timestamp(v: Any) -> datetime:
    t = type(v)
    if t is datetime:
        return v
    if t is str:
        return _parse_timestamp(v)
    if t is int:
        try:
            return _EPOCH + timedelta(seconds=v)
        except OverflowError:
            raise _Fail("range error: timestamp out of range") from None
    raise _no_overload("timestamp", v)


def _to_duration(v: Any) -> timedelta:
    t = type(v)
    if t is timedelta:
        return v
    if t is str:
        return _parse_duration(v)
    if t is int:
        return _check_dur(timedelta(seconds=v))
    raise _no_overload("duration", v)


# ---------------------------------------------------------------------------
# String extension helpers (cel-go ext.Strings)
# ---------------------------------------------------------------------------


def _req(t: type, v: Any, fn: str) -> None:
    if type(v) is not t:
        raise _no_overload(fn, v)


def _str_method(name: str, *types: type) -> Callable:
    def deco(f: Callable) -> Callable:
        def wrapped(*args: Any) -> Any:
            if len(args) != len(types):
                raise _no_overload(name, *args)
            for a, t in zip(args, types):
                if type(a) is not t:
                    raise _no_overload(name, *args)
            return f(*args)

        wrapped.__name__ = name
        return wrapped

    return deco


def _char_at(s: Any, i: Any) -> str:
    if type(s) is not str or type(i) is not int:
        raise _no_overload("charAt", s, i)
    if i < 0 or i > len(s):
        raise _Fail(f"index out of range: {i}")
    return s[i : i + 1]


def _index_of(s: Any, sub: Any, *start: Any) -> int:
    if type(s) is not str or type(sub) is not str or len(start) > 1 or (start and type(start[0]) is not int):
        raise _no_overload("indexOf", s, sub, *start)
    st = start[0] if start else 0
    if st < 0 or st > len(s):
        raise _Fail(f"index out of range: {st}")
    return s.find(sub, st)


def _last_index_of(s: Any, sub: Any, *start: Any) -> int:
    if type(s) is not str or type(sub) is not str or len(start) > 1 or (start and type(start[0]) is not int):
        raise _no_overload("lastIndexOf", s, sub, *start)
    if start:
        st = start[0]
        if st < 0 or st >= len(s) and not (len(s) == 0 and st == 0):
            raise _Fail(f"index out of range: {st}")
        return s.rfind(sub, 0, st + len(sub))
    return s.rfind(sub)


def _substring(s: Any, a: Any, *b: Any) -> str:
    if type(s) is not str or type(a) is not int or len(b) > 1 or (b and type(b[0]) is not int):
        raise _no_overload("substring", s, a, *b)
    end = b[0] if b else len(s)
    if a < 0 or a > len(s):
        raise _Fail(f"index out of range: {a}")
    if end < 0 or end > len(s):
        raise _Fail(f"index out of range: {end}")
    if end < a:
        raise _Fail(f"invalid substring range. start: {a}, end: {end}")
    return s[a:end]


_UNICODE_WS = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


def _trim(s: Any) -> str:
    _req(str, s, "trim")
    return s.strip(_UNICODE_WS)


def _lower_ascii(s: Any) -> str:
    _req(str, s, "lowerAscii")
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in s)


def _upper_ascii(s: Any) -> str:
    _req(str, s, "upperAscii")
    return "".join(chr(ord(c) - 32) if "a" <= c <= "z" else c for c in s)


def _make_replace(sizes: _Sizes) -> Callable:
    def replace(s: Any, old: Any, new: Any, *n: Any) -> str:
        if type(s) is not str or type(old) is not str or type(new) is not str or len(n) > 1 or (
            n and type(n[0]) is not int
        ):
            raise _no_overload("replace", s, old, new, *n)
        count = n[0] if n else -1
        occurrences = (len(s) + 1) if old == "" else s.count(old)
        if count >= 0:
            occurrences = min(occurrences, count)
        if len(s) + occurrences * (len(new) - len(old)) > sizes.max_size:
            raise _BudgetFail("replace result exceeds max_size", "max_size")
        return s.replace(old, new, count)

    return replace


def _split(s: Any, sep: Any, *n: Any) -> list:
    if type(s) is not str or type(sep) is not str or len(n) > 1 or (n and type(n[0]) is not int):
        raise _no_overload("split", s, sep, *n)
    lim = n[0] if n else -1
    if lim == 0:
        return []
    if sep == "":
        chars = list(s)
        if lim > 0 and len(chars) > lim:
            chars = chars[: lim - 1] + ["".join(chars[lim - 1 :])]
        return chars
    return s.split(sep, lim - 1 if lim > 0 else -1)


def _make_join(sizes: _Sizes) -> Callable:
    def join(lst: Any, *sep: Any) -> str:
        if type(lst) not in (list, tuple) or len(sep) > 1 or (sep and type(sep[0]) is not str):
            raise _no_overload("join", lst, *sep)
        for e in lst:
            if type(e) is not str:
                raise _no_overload("join", lst, *sep)
        r = (sep[0] if sep else "").join(lst)
        return sizes.check(r)

    return join


def _reverse(s: Any) -> str:
    _req(str, s, "reverse")
    return s[::-1]


def _quote(s: Any) -> str:
    _req(str, s, "strings.quote")
    out = ['"']
    esc = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
           "\v": "\\v", "\\": "\\\\", '"': '\\"'}
    for c in s:
        if c in esc:
            out.append(esc[c])
        elif 0xD800 <= ord(c) <= 0xDFFF:
            out.append("\ufffd")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def _b64encode(b: Any) -> str:
    _req(bytes, b, "base64.encode")
    return base64.b64encode(b).decode("ascii")


def _b64decode(s: Any) -> bytes:
    _req(str, s, "base64.decode")
    try:
        return base64.b64decode(s + "=" * (-len(s) % 4), validate=True)
    except Exception:
        raise _Fail("invalid base64 input") from None


def _contains(s: Any, sub: Any) -> bool:
    if type(s) is str and type(sub) is str:
        return sub in s
    raise _no_overload("contains", s, sub)


def _starts_with(s: Any, sub: Any) -> bool:
    if type(s) is str and type(sub) is str:
        return s.startswith(sub)
    raise _no_overload("startsWith", s, sub)


def _ends_with(s: Any, sub: Any) -> bool:
    if type(s) is str and type(sub) is str:
        return s.endswith(sub)
    raise _no_overload("endsWith", s, sub)


# ---------------------------------------------------------------------------
# Math extension helpers (cel-go ext.Math)
# ---------------------------------------------------------------------------


def _num_args(name: str, args: tuple) -> list:
    flat: list = []
    if len(args) == 1 and type(args[0]) in (list, tuple):
        args = tuple(args[0])
        if not args:
            raise _Fail(f"{name}(list) argument must not be empty")
    for a in args:
        if type(a) not in _NUMSET:
            raise _no_overload(name, *args)
        flat.append(a)
    if not flat:
        raise _no_overload(name)
    return flat


def _greatest(*args: Any) -> Any:
    vals = _num_args("math.greatest", args)
    best = vals[0]
    for v in vals[1:]:
        if v > best or (v != v):
            best = v
    return best


def _least(*args: Any) -> Any:
    vals = _num_args("math.least", args)
    best = vals[0]
    for v in vals[1:]:
        if v < best or (v != v):
            best = v
    return best


def _float_fn(name: str, f: Callable[[float], Any]) -> Callable:
    def g(x: Any) -> Any:
        if type(x) is not float:
            raise _no_overload(name, x)
        return f(x)

    return g


def _round_half_away(x: float) -> float:
    if x != x or x in (math.inf, -math.inf):
        return x
    r = math.floor(abs(x) + 0.5)
    return math.copysign(float(r), x)


def _math_abs(x: Any) -> Any:
    t = type(x)
    if t is int:
        return _ovf_int(abs(x))
    if t is float:
        return abs(x)
    if t is CelUint:
        return x
    raise _no_overload("math.abs", x)


def _math_sign(x: Any) -> Any:
    t = type(x)
    if t is int:
        return (x > 0) - (x < 0)
    if t is CelUint:
        return CelUint(1 if x > 0 else 0)
    if t is float:
        if x != x:
            return x
        return 1.0 if x > 0 else (-1.0 if x < 0 else 0.0)
    raise _no_overload("math.sign", x)


def _int_fn(name: str, fi: Callable, fu: Callable | None = None) -> Callable:
    def g(*args: Any) -> Any:
        if all(type(a) is int for a in args):
            return fi(*args)
        if fu is not None and all(type(a) is CelUint for a in args):
            return fu(*args)
        raise _no_overload(name, *args)

    return g


def _shift(name: str, left: bool) -> Callable:
    def g(x: Any, n: Any) -> Any:
        if type(n) is not int or type(x) not in (int, CelUint):
            raise _no_overload(name, x, n)
        if n < 0:
            raise _Fail(f"{name}() negative offset: {n}")
        if type(x) is int:
            if n > 63:
                return 0
            if left:
                r = (x << n) & 0xFFFFFFFFFFFFFFFF
                return r - (1 << 64) if r >= 1 << 63 else r
            return (x & 0xFFFFFFFFFFFFFFFF) >> n if x < 0 else x >> n
        if n > 63:
            return CelUint(0)
        return CelUint(((x << n) & UINT64_MAX) if left else x >> n)

    return g


def _is_fn(name: str, f: Callable[[float], bool]) -> Callable:
    def g(x: Any) -> bool:
        if type(x) is not float:
            raise _no_overload(name, x)
        return f(x)

    return g


def _sqrt(x: Any) -> float:
    if type(x) not in _NUMSET:
        raise _no_overload("math.sqrt", x)
    x = float(x)
    if x < 0:
        return math.nan
    return math.sqrt(x)


# ---------------------------------------------------------------------------
# Function tables
# ---------------------------------------------------------------------------


def _fmt_nonfinite(x: float) -> str | None:
    if x != x:
        return "NaN"
    if x in (math.inf, -math.inf):
        return "Infinity" if x > 0 else "-Infinity"
    return None


def _fmt_s(v: Any) -> str:
    """``%s`` of the strings extension's ``format``: ``string()``'s text for scalars,
    lists as ``[a, b]``, maps as ``{k: v}`` sorted by the keys' text."""
    t = type(v)
    if t is str:
        return v
    if v is None:
        return "null"
    if t is float:
        return _fmt_nonfinite(v) or _format_double(v)
    if t is CelType:
        return v.name
    if t is list or t is tuple:
        return "[" + ", ".join(_fmt_s(x) for x in v) + "]"
    if isinstance(v, Mapping):
        items = sorted((_fmt_s(k), _fmt_s(x)) for k, x in v.items())
        return "{" + ", ".join(f"{k}: {x}" for k, x in items) + "}"
    if t in (bool, int, CelUint, bytes, datetime, timedelta):
        return _to_string(v)
    raise _Fail("error during formatting: string clause can only be used on strings, bools, bytes, ints, "
                f"doubles, maps, lists, types, durations, and timestamps, was given {_type_name(v)}")


def _fmt_clause(verb: str, prec: int | None, v: Any) -> str:
    t = type(v)
    is_int = t is int or t is CelUint
    if verb == "s":
        return _fmt_s(v)
    if verb == "d":
        if is_int:
            return str(int(v))
        if t is float and _fmt_nonfinite(v):
            return _fmt_nonfinite(v)  # type: ignore[return-value]
        raise _Fail(f"error during formatting: decimal clause can only be used on integers, was given {_type_name(v)}")
    if verb in "fe":
        if is_int or t is float:
            x = float(v)
            return _fmt_nonfinite(x) or format(x, f".{6 if prec is None else prec}{verb}")
        what = "fixed-point" if verb == "f" else "scientific"
        raise _Fail(f"error during formatting: {what} clause can only be used on doubles, was given {_type_name(v)}")
    if verb == "b":
        if is_int:
            return format(int(v), "b")
        if t is bool:
            return "1" if v else "0"
        raise _Fail(f"error during formatting: only integers and bools can be formatted as binary, was given {_type_name(v)}")
    if verb == "o":
        if is_int:
            return format(int(v), "o")
        raise _Fail(f"error during formatting: octal clause can only be used on integers, was given {_type_name(v)}")
    # x / X
    if is_int:
        out = format(int(v), "x")
    elif t is str:
        out = v.encode("utf-8", "surrogatepass").hex()
    elif t is bytes:
        out = v.hex()
    else:
        raise _Fail("error during formatting: only integers, byte buffers, and strings can be formatted as hex, "
                    f"was given {_type_name(v)}")
    return out.upper() if verb == "X" else out


def _make_format(sizes: _Sizes) -> Callable:
    def fmt(s: Any, args: Any) -> str:
        """``"...".format([args])``: the strings extension's formatter. Clauses: ``%s``,
        ``%d``, ``%f``/``%e`` (with an optional ``.N`` precision, default 6), ``%b``, ``%o``,
        ``%x``/``%X``; ``%%`` is a percent sign."""
        if type(s) is not str or type(args) is not list:
            raise _no_overload("format", s, args)
        out: list[str] = []
        i = n = 0
        size = 0
        while True:
            j = s.find("%", i)
            if j < 0:
                out.append(s[i:])
                break
            out.append(s[i:j])
            k = j + 1
            prec = None
            if s.startswith(".", k):
                m = k + 1
                while m < len(s) and s[m].isdigit():
                    m += 1
                if m == k + 1:
                    raise _Fail("could not parse formatting clause: missing precision after `.`")
                prec = int(s[k + 1:m])
                k = m
            verb = s[k:k + 1]
            if verb == "%" and prec is None:
                out.append("%")
            elif verb and verb in "sdfeboxX":
                if prec is not None and verb not in "fe":
                    raise _Fail(f"could not parse formatting clause: precision is only allowed for %f and %e, not %{verb}")
                if n >= len(args):
                    raise _Fail(f"index {n} out of range")
                piece = _fmt_clause(verb, prec, args[n])
                n += 1
                size += len(piece)
                if size > sizes.max_size:
                    raise _BudgetFail(f"result of size {size} exceeds max_size {sizes.max_size}", "max_size")
                out.append(piece)
            else:
                raise _Fail(f'could not parse formatting clause: unrecognized formatting clause "{verb}"')
            i = k + 1
        return sizes.check("".join(out))

    return fmt


def _builtin_tables(sizes: _Sizes) -> tuple[dict[str, Callable], dict[str, Callable]]:
    """(global functions, receiver-style methods). Methods get the receiver first."""
    replace = _make_replace(sizes)
    join = _make_join(sizes)
    fmt = _make_format(sizes)
    glob: dict[str, Callable] = {
        "size": _size,
        "int": _to_int,
        "uint": _to_uint,
        "double": _to_double,
        "string": _to_string,
        "bytes": _to_bytes,
        "bool": _to_bool,
        "timestamp": _to_timestamp,
        "duration": _to_duration,
        "type": _type_of,
        "dyn": lambda v: v,
        "matches": _matches,
        "strings.quote": _quote,
        "base64.encode": _b64encode,
        "base64.decode": _b64decode,
        "math.greatest": _greatest,
        "math.least": _least,
        "math.ceil": _float_fn("math.ceil", lambda x: float(math.ceil(x)) if math.isfinite(x) else x),
        "math.floor": _float_fn("math.floor", lambda x: float(math.floor(x)) if math.isfinite(x) else x),
        "math.round": _float_fn("math.round", _round_half_away),
        "math.trunc": _float_fn("math.trunc", lambda x: float(math.trunc(x)) if math.isfinite(x) else x),
        "math.abs": _math_abs,
        "math.sign": _math_sign,
        "math.isInf": _is_fn("math.isInf", math.isinf),
        "math.isNaN": _is_fn("math.isNaN", math.isnan),
        "math.isFinite": _is_fn("math.isFinite", math.isfinite),
        "math.bitAnd": _int_fn("math.bitAnd", lambda a, b: a & b, lambda a, b: CelUint(a & b)),
        "math.bitOr": _int_fn("math.bitOr", lambda a, b: a | b, lambda a, b: CelUint(a | b)),
        "math.bitXor": _int_fn("math.bitXor", lambda a, b: a ^ b, lambda a, b: CelUint(a ^ b)),
        "math.bitNot": _int_fn("math.bitNot", lambda a: ~a, lambda a: CelUint(UINT64_MAX ^ a)),
        "math.bitShiftLeft": _shift("math.bitShiftLeft", True),
        "math.bitShiftRight": _shift("math.bitShiftRight", False),
        "math.sqrt": _sqrt,
    }
    meth: dict[str, Callable] = {
        "size": _size,
        "contains": _contains,
        "startsWith": _starts_with,
        "endsWith": _ends_with,
        "matches": _matches,
        "charAt": _char_at,
        "indexOf": _index_of,
        "lastIndexOf": _last_index_of,
        "lowerAscii": _lower_ascii,
        "upperAscii": _upper_ascii,
        "replace": replace,
        "split": _split,
        "substring": _substring,
        "trim": _trim,
        "join": join,
        "reverse": _reverse,
        "format": fmt,
    }
    for name, fn in (
        ("getFullYear", lambda t: t.year),
        ("getMonth", lambda t: t.month - 1),
        ("getDate", lambda t: t.day),
        ("getDayOfMonth", lambda t: t.day - 1),
        ("getDayOfWeek", lambda t: (t.weekday() + 1) % 7),
        ("getDayOfYear", lambda t: t.timetuple().tm_yday - 1),
        ("getHours", lambda t: t.hour),
        ("getMinutes", lambda t: t.minute),
        ("getSeconds", lambda t: t.second),
        ("getMilliseconds", lambda t: t.microsecond // 1000),
    ):
        meth[name] = _ts_accessor(name, fn)
    return glob, meth


# ---------------------------------------------------------------------------
# Literals
# ---------------------------------------------------------------------------

_SIMPLE_ESCAPES = {
    "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
    "\\": "\\", "'": "'", '"': '"', "`": "`", "?": "?",
}


def _unescape(body: str, is_bytes: bool) -> Any:
    """Decode a CEL (non-raw) string or bytes literal body. Raises ValueError."""
    out: list = []  # str pieces, or ints (bytes) for byte literals
    i = 0
    n = len(body)

    def emit_char(c: str) -> None:
        if is_bytes:
            out.extend(c.encode("utf-8"))
        else:
            out.append(c)

    while i < n:
        c = body[i]
        if c != "\\":
            emit_char(c)
            i += 1
            continue
        i += 1
        if i >= n:
            raise ValueError("trailing backslash")
        e = body[i]
        if e in _SIMPLE_ESCAPES:
            emit_char(_SIMPLE_ESCAPES[e])
            i += 1
        elif e in "xX":
            h = body[i + 1 : i + 3]
            if len(h) != 2:
                raise ValueError("bad \\x escape")
            v = int(h, 16)
            if is_bytes:
                out.append(v)
            else:
                out.append(chr(v))
            i += 3
        elif e in "uU":
            if is_bytes:
                raise ValueError("\\u escape in bytes literal")
            width = 4 if e == "u" else 8
            h = body[i + 1 : i + 1 + width]
            if len(h) != width:
                raise ValueError("bad unicode escape")
            v = int(h, 16)
            if 0xD800 <= v <= 0xDFFF or v > 0x10FFFF:
                raise ValueError("invalid unicode code point")
            out.append(chr(v))
            i += 1 + width
        elif e in "0123":
            o = body[i : i + 3]
            if len(o) != 3 or any(ch not in "01234567" for ch in o):
                raise ValueError("bad octal escape")
            v = int(o, 8)
            if is_bytes:
                out.append(v)
            else:
                out.append(chr(v))
            i += 3
        else:
            raise ValueError(f"invalid escape \\{e}")
    if is_bytes:
        return bytes(out)
    return "".join(out)


def _string_literal(text: str) -> Any:
    is_bytes = False
    raw = False
    i = 0
    while text[i] in "bBrR":
        if text[i] in "bB":
            is_bytes = True
        else:
            raw = True
        i += 1
    q = text[i : i + 3]
    if q in ('"""', "'''"):
        body = text[i + 3 : -3]
    else:
        body = text[i + 1 : -1]
    if raw:
        return body.encode("utf-8") if is_bytes else body
    return _unescape(body, is_bytes)


# ---------------------------------------------------------------------------
# Fast path: Python source generated for a common subset
# ---------------------------------------------------------------------------
#
# Besides the closure tree, compile_cel tries to generate the source of one plain Python
# function ``fast(a)`` (a = the activation) for the expression. Every node of the subset
# has a generator ``_N.g(em) -> (expression, kind)`` that may also emit statements (loops
# of the macros) into ``em``; ``kind`` is "bool", "int", "float", "str" or "list" when the
# generated expression can only produce that Python type, else None.
#
# The contract: whenever ``fast(a)`` returns, its value is exactly the closures' value.
# The generated code guards every type it relies on and raises (``_fb()``, or any Python
# exception such as KeyError) on anything unusual: a wrong type, a missing key, a
# non-bool operand of ``&&``, a comprehension range that is not a list or is longer than
# ``_FAST_MAX_LIST``, the iteration budget, any error at all. ``CompiledExpr.__call__``
# then evaluates the closures, which are exact and turn errors into ``CelError`` values.
# So the fast path never has to get error semantics (absorption by ``&&``/``||``/``exists``,
# error messages, budgets) right: it only ever produces the values of the error-free path.
#
# Operations whose semantics live in a helper (``_eq``, ``_lt``, ``_contains_in``,
# ``_index``, arithmetic, conversions, string and timestamp functions) call the very helper
# the closure calls, so they are exact by construction; the generated code inlines only
# the common, fully guarded cases. Safety: the source contains only generated names
# (``a``, ``_tN``, ``_sN``, ``_kN`` and the helpers of ``_FAST_GLOBALS``), numbers,
# ``repr()`` of strings and bytes, and fixed operators; every other value (floats that are
# not finite, uints, timestamps, lists, maps, functions) is bound by name, never pasted.
# The function runs with empty ``__builtins__``.

_FAST_MAX_LIST = 1000  # comprehension ranges longer than this go to the closures (budgets)
_FAST_MAX_DEPTH = 48  # closure trees deeper than this get no fast path
# Python's compile() costs ~0.1 ms per condition (a third of parsing CEL), so the fast path
# is built on the second evaluation, not at load time: loading/checking policies pays nothing.
_FAST_WARMUP = 2


class _FastFallback(Exception):
    """Raised by generated code: evaluate this input with the closures."""


def _fb() -> Any:
    raise _FastFallback


_NONE_T = type(None)
# types for which `x == y` (same type) is exactly `_eq(x, y)`
_FAST_SCALARS = frozenset({str, int, float, bool, _NONE_T, bytes})
# plain types: Python `==` between one of these and a str is False unless both are str
_FAST_PLAIN = frozenset({str, bytes, int, float, bool, _NONE_T, list, dict, tuple})
_FAST_NUM = frozenset({int, float})
_FAST_ORD = frozenset({int, float, str})
_FAST_SIZED = frozenset({list, str, dict, bytes})

_FAST_GLOBALS: dict[str, Any] = {
    "type": type, "len": len, "float": float, "int": int, "str": str, "bool": bool,
    "bytes": bytes, "list": list, "dict": dict,
    "_fb": _fb, "_FB": _FastFallback, "_eq": _eq, "_lt": _lt, "_le": _le, "_gt": _gt,
    "_ge": _ge, "_contains_in": _contains_in, "_index": _index, "_neg": _neg,
    "_SCALARS": _FAST_SCALARS, "_PLAIN": _FAST_PLAIN, "_NUM": _FAST_NUM, "_ORD": _FAST_ORD,
    "_SIZED": _FAST_SIZED,
}
_FAST_CMP = {"relation_lt": ("<", "_lt"), "relation_le": ("<=", "_le"),
             "relation_gt": (">", "_gt"), "relation_ge": (">=", "_ge")}


class _Gen:
    """Collects the generated statements, temporaries and bound values of one ``fast``."""

    def __init__(self, maxit: int) -> None:
        self.lines: list[tuple[int, str]] = []  # (relative indentation, text)
        self.ind = 0
        self.ntmp = 0
        self.ns: dict[str, Any] = {}
        self.byid: dict[int, str] = {}
        self.atoms: set[str] = set()  # names and literals: cheap to repeat, no side effects
        self.maxit = maxit
        self.loops = False
        self.roots: dict[str, list] = {}  # free variable -> [local name, guarded as a dict]
        self.dotted: dict[str, None] = {}  # activation keys that would resolve a chain
        # (variable, field) -> a local the prologue set to the field's value, or to _MISS
        # if absent; and (variable, field) -> the repr of a str the field is known to hold
        self.fields: dict[tuple[str, str], str] = {}
        self.known: dict[tuple[str, str], str] = {}

    def root(self, name: str, as_dict: bool) -> tuple[str, str | None]:
        """A free variable, looked up once in the prologue (a missing one falls back)."""
        r = self.roots.get(name)
        if r is None:
            r = self.roots[name] = [f"_r{len(self.roots)}", False]
            self.atoms.add(r[0])
        if as_dict:
            r[1] = True  # the prologue checks it is a dict
        return r[0], "dict" if as_dict else None

    def tmp(self) -> str:
        self.ntmp += 1
        name = f"_t{self.ntmp}"
        self.atoms.add(name)
        return name

    def emit(self, line: str) -> None:
        self.lines.append((self.ind, line))

    def bind(self, value: Any) -> str:
        """A global name for a value (never pasted into the source)."""
        name = self.byid.get(id(value))
        if name is None:
            name = f"_k{len(self.ns)}"
            self.ns[name] = value
            self.byid[id(value)] = name
            self.atoms.add(name)
        return name

    def lit(self, text: str) -> str:
        self.atoms.add(text)
        return text

    def is_literal(self, e: str) -> bool:
        return e in self.atoms and (not e.isidentifier() or e in ("True", "False", "None"))

    def sub(self, g: Callable) -> tuple[tuple[str, str | None], list[tuple[int, str]]]:
        """Run a generator into a fresh statement list (to place it under a condition)."""
        saved, ind = self.lines, self.ind
        self.lines, self.ind = [], 0
        try:
            return g(self), self.lines
        finally:
            self.lines, self.ind = saved, ind

    def splice(self, lines: list[tuple[int, str]]) -> None:
        for i, text in lines:
            self.lines.append((self.ind + i, text))

    def guard(self, e: str, test: Callable[[str, str], str], use: Callable[[str], str],
              other: str | Callable[[str], str] = "_fb()") -> str:
        """``(use(x) if test(x) else other)`` with ``e`` evaluated once, first, into ``x``."""
        if e in self.atoms:
            x = first = e
        else:
            x = self.tmp()
            first = f"({x} := {e})"
        return f"({use(x)} if {test(first, x)} else {other(x) if callable(other) else other})"

    def value(self, e: str) -> str:
        """``e`` as an atom, assigned by a statement if needed."""
        if e in self.atoms:
            return e
        t = self.tmp()
        self.emit(f"{t} = {e}")
        return t

    def as_bool(self, e: str, kind: str | None) -> str:
        if kind == "bool":
            return e
        return self.guard(e, lambda f, x: f"type({f}) is bool", lambda x: x)

    def source(self, e: str) -> str:
        # Prologue: hoisting is safe because failing early only means falling back.
        out = ["def fast(a):"]
        if self.dotted:
            out.append("    if " + " or ".join(f"{k!r} in a" for k in self.dotted) + ": _fb()")
        for name, (var, as_dict) in self.roots.items():
            out.append(f"    {var} = a[{name!r}]")
            if as_dict:
                out.append(f"    if type({var}) is not dict: _fb()")
        if self.loops:
            out.append("    _it = 0")
        out += ["    " * (1 + i) + text for i, text in self.lines]
        out.append(f"    return {e}")
        return "\n".join(out) + "\n"


def _g_const(value: Any) -> Callable:
    t = type(value)
    if value is None or t is bool or t is str or t is bytes or t is int or (
        t is float and math.isfinite(value)
    ):
        text = repr(value)
        if text.startswith("-"):
            text = f"({text})"
        kind = {bool: "bool", int: "int", float: "float", str: "str"}.get(t)

        def g(em: _Gen) -> tuple[str, str | None]:
            return em.lit(text), kind

    elif t is list:

        def g(em: _Gen) -> tuple[str, str | None]:
            return f"list({em.bind(value)})", "list"  # a fresh list, like the closures

    else:

        def g(em: _Gen) -> tuple[str, str | None]:
            return em.bind(value), None

    return g


def _g_sel(em: _Gen, e: str, name: str, kind: str | None = None) -> str:
    """Field selection on a dict (anything else: fall back)."""
    if kind == "dict":
        return f"{e}[{name!r}]"
    if em.is_literal(e):  # never a dict (and `1['a']` would be a SyntaxWarning)
        return "_fb()"
    return em.guard(e, lambda f, x: f"type({f}) is dict", lambda x: f"{x}[{name!r}]")


def _g_call(em: _Gen, f: Callable, args: list[str]) -> str:
    """Call the very helper the closure calls (exact by construction)."""
    return f"{em.bind(f)}({', '.join(args)})"


def _g_ternary(C: Callable, T: Callable, E: Callable) -> Callable:
    def g(em: _Gen) -> tuple[str, str | None]:
        ce, ck = C(em)
        (te, tk), tl = em.sub(T)
        (ee, ek), el = em.sub(E)
        kind = tk if tk == ek else None
        cb = em.as_bool(ce, ck)
        if not tl and not el:
            return f"({te} if {cb} else {ee})", kind
        c = em.value(cb)
        r = em.tmp()
        em.emit(f"if {c}:")
        em.ind += 1
        em.splice(tl)
        em.emit(f"{r} = {te}")
        em.ind -= 1
        em.emit("else:")
        em.ind += 1
        em.splice(el)
        em.emit(f"{r} = {ee}")
        em.ind -= 1
        return r, kind

    return g


def _g_logic(gs: list[Callable], stop: bool) -> Callable:
    """``&&`` (stop=False) / ``||`` (stop=True): left to right, every operand a bool."""
    pyop = " or " if stop else " and "

    neutral = "False" if stop else "True"  # `true && x` is x, `false || x` is x

    def g(em: _Gen) -> tuple[str, str | None]:
        parts = [p for p in (em.sub(x) for x in gs) if p[1] or p[0][0] != neutral]
        if not parts:
            return em.lit(neutral), "bool"
        if not any(lines for _, lines in parts):
            return "(" + pyop.join(em.as_bool(e, k) for (e, k), _ in parts) + ")", "bool"
        r = em.tmp()
        opened = 0
        i = 0
        while i < len(parts):
            (e, k), lines = parts[i]
            em.splice(lines)
            group = [em.as_bool(e, k)]
            i += 1
            while i < len(parts) and not parts[i][1]:
                (e, k), _ = parts[i]
                group.append(em.as_bool(e, k))
                i += 1
            em.emit(f"{r} = {pyop.join(group)}")
            if i < len(parts):
                em.emit(f"if {'not ' if stop else ''}{r}:")
                em.ind += 1
                opened += 1
        em.ind -= opened
        return r, "bool"

    return g


def _g_pair(em: _Gen, le: str, re_: str) -> tuple[str, str, str, str]:
    """(first x, x, first y, y): two operands evaluated once each, x before y."""
    if le in em.atoms:
        fx = x = le
    else:
        x = em.tmp()
        fx = f"({x} := {le})"
    if re_ in em.atoms:
        fy = y = re_
    else:
        y = em.tmp()
        fy = f"({y} := {re_})"
    return fx, x, fy, y


def _literal(text: str) -> Any:
    import ast

    return ast.literal_eval(text)


def _g_eq(ln: _N, rn: _N, neg: bool) -> Callable | None:
    """Mirrors ``_Compiler._eq_fn`` (called with the operands already swapped)."""
    L, R = ln.g, rn.g
    if L is None or R is None:
        return None
    op = "!=" if neg else "=="
    if rn.const and type(rn.value) in (str, bytes):

        def g(em: _Gen) -> tuple[str, str | None]:
            e, ek = L(em)
            k, _ = R(em)
            if ek == "str":
                if em.is_literal(e) and e[:1] in "'\"":  # a str every caller guarantees: decided here
                    return em.lit(repr((_literal(e) == rn.value) != neg)), "bool"
                return f"({e} {op} {k})", "bool"
            return em.guard(e, lambda f, x: f"type({f}) in _PLAIN", lambda x: f"({x} {op} {k})"), "bool"

        return g
    if rn.const and type(rn.value) in (int, float, CelUint):
        other = "True" if neg else "False"  # _eq of a number and a non-number

        def g(em: _Gen) -> tuple[str, str | None]:
            e, ek = L(em)
            k, _ = R(em)
            if ek == "int" or ek == "float":
                return f"({e} {op} {k})", "bool"
            return em.guard(
                e, lambda f, x: f"type({f}) in _NUM", lambda x: f"({x} {op} {k})",
                lambda x: f"({other} if type({x}) in _PLAIN else _fb())",
            ), "bool"

        return g
    if rn.const and (rn.value is None or type(rn.value) is bool):
        isop = "is not" if neg else "is"

        def g(em: _Gen) -> tuple[str, str | None]:
            e, _ = L(em)
            k, _ = R(em)
            return f"({e} {isop} {k})", "bool"

        return g
    call = "(not _eq({x}, {y}))" if neg else "_eq({x}, {y})"

    def g(em: _Gen) -> tuple[str, str | None]:
        le, lk = L(em)
        re_, rk = R(em)
        if lk == rk and lk in ("str", "int", "float", "bool") and le in em.atoms and re_ in em.atoms:
            return f"({le} {op} {re_})", "bool"  # one scalar type: Python's == is _eq
        fx, x, fy, y = _g_pair(em, le, re_)
        return (
            f"(({x} {op} {y}) if type({fx}) is type({fy}) and type({x}) in _SCALARS "
            f"else {call.format(x=x, y=y)})"
        ), "bool"

    return g


def _g_cmp(op: str, ln: _N, rn: _N) -> Callable | None:
    """Mirrors ``_Compiler.relop`` for ``< <= > >=``."""
    L, R = ln.g, rn.g
    if L is None or R is None:
        return None
    sym, helper = _FAST_CMP[op]
    if rn.const and type(rn.value) in (int, float) and not ln.const:
        kf = type(rn.value) is float  # the closure (_cmp_num_const) compares float(int) then

        def g(em: _Gen) -> tuple[str, str | None]:
            e, ek = L(em)
            k, _ = R(em)
            if ek == "float" or ek == "int" and not kf:
                return f"({e} {sym} {k})", "bool"
            if ek == "int":
                return f"(float({e}) {sym} {k})", "bool"
            if kf:
                return em.guard(
                    e, lambda f, x: f"type({f}) is float", lambda x: f"({x} {sym} {k})",
                    lambda x: f"((float({x}) {sym} {k}) if type({x}) is int else _fb())",
                ), "bool"
            return em.guard(e, lambda f, x: f"type({f}) in _NUM", lambda x: f"({x} {sym} {k})"), "bool"

        return g

    def g(em: _Gen) -> tuple[str, str | None]:
        le, _ = L(em)
        re_, _ = R(em)
        fx, x, fy, y = _g_pair(em, le, re_)
        return (
            f"(({x} {sym} {y}) if type({fx}) is type({fy}) and type({x}) in _ORD "
            f"else {helper}({x}, {y}))"
        ), "bool"

    return g


def _g_str_method(name: str, recv: _N, arg: _N) -> Callable | None:
    """contains / startsWith / endsWith on two strings (else fall back)."""
    S, P = recv.g, arg.g
    if S is None or P is None:
        return None
    use = {"contains": "({y} in {x})", "startsWith": "{x}.startswith({y})",
           "endsWith": "{x}.endswith({y})"}[name]

    def g(em: _Gen) -> tuple[str, str | None]:
        se, sk = S(em)
        pe, pk = P(em)
        fx, x, fy, y = _g_pair(em, se, pe)
        tests = []
        if not (sk == "str" and fx == x):  # a str atom needs no check
            tests.append(f"type({fx}) is str")
        if not (pk == "str" and fy == y):
            tests.append(f"type({fy}) is str")
        if not tests:
            return use.format(x=x, y=y), "bool"
        return f"({use.format(x=x, y=y)} if {' and '.join(tests)} else _fb())", "bool"

    return g


def _g_macro(kind: str, T: Callable, P: Callable, M: Callable | None, slot: int, maxit: int) -> Callable:
    """One-variable all / exists / exists_one / filter / map over a list."""
    var = f"_s{slot}"

    def g(em: _Gen) -> tuple[str, str | None]:
        te, tk = T(em)
        seq = em.value(te)
        em.loops = True
        if tk == "list":
            em.emit(f"if len({seq}) > {_FAST_MAX_LIST}: _fb()")
        else:
            em.emit(f"if type({seq}) is not list or len({seq}) > {_FAST_MAX_LIST}: _fb()")
        em.emit(f"_it += len({seq})")
        em.emit(f"if _it > {maxit}: _fb()")
        em.lit(var)
        r = em.tmp()
        em.emit(f"{r} = " + {"all": "True", "exists": "False", "exists_one": "0"}.get(kind, "[]"))
        em.emit(f"for {var} in {seq}:")
        em.ind += 1
        pe, pk = P(em)
        if kind == "map" and M is None:
            em.emit(f"{r}.append({pe})")
        else:
            pb = em.as_bool(pe, pk)
            if kind == "exists":
                em.emit(f"if {pb}:")
                em.emit(f"    {r} = True")
                em.emit("    break")
            elif kind == "all":
                em.emit(f"if not {pb}:")
                em.emit(f"    {r} = False")
                em.emit("    break")
            elif kind == "exists_one":
                em.emit(f"if {pb}:")
                em.emit(f"    {r} += 1")
            elif kind == "filter":
                em.emit(f"if {pb}:")
                em.emit(f"    {r}.append({var})")
            else:  # map with a filter
                assert M is not None
                em.emit(f"if {pb}:")
                em.ind += 1
                me, _ = M(em)
                em.emit(f"{r}.append({me})")
                em.ind -= 1
        em.ind -= 1
        if kind == "exists_one":
            return f"({r} == 1)", "bool"
        return r, ("bool" if kind in ("all", "exists") else "list")

    return g


def _g_in_strs(ln: _N, fs: frozenset) -> Callable | None:
    """``x in [constant strings]``: the closure's own frozenset test."""
    L = ln.g
    if L is None:
        return None

    def g(em: _Gen) -> tuple[str, str | None]:
        e, ek = L(em)
        k = em.bind(fs)
        if ek == "str":
            return f"({e} in {k})", "bool"
        # another plain type is in no list of strings; a subclass or a non-CEL value: the closure
        return em.guard(e, lambda f, x: f"type({f}) is str", lambda x: f"({x} in {k})",
                        lambda x: f"(False if type({x}) in _PLAIN else _fb())"), "bool"

    return g


def _g_in(ln: _N, rn: _N) -> Callable | None:
    L, R = ln.g, rn.g
    if L is None or R is None:
        return None

    def g(em: _Gen) -> tuple[str, str | None]:
        e, _ = L(em)
        r = em.bind(rn.value) if rn.const else R(em)[0]  # a constant list is never mutated
        return f"_contains_in({e}, {r})", "bool"

    return g


_FAST_FLOAT_OPS = {"addition_add": "+", "addition_sub": "-", "multiplication_mul": "*"}


def _g_binop(opname: str, f: Callable, L: Callable | None, R: Callable | None) -> Callable | None:
    """Arithmetic: float op float inline (what the helpers do), anything else the helper."""
    if L is None or R is None:
        return None
    sym = _FAST_FLOAT_OPS.get(opname)

    def g(em: _Gen) -> tuple[str, str | None]:
        le, _ = L(em)
        re_, _ = R(em)
        fn = em.bind(f)
        if sym is None:
            return f"{fn}({le}, {re_})", None
        fx, x, fy, y = _g_pair(em, le, re_)
        return f"(({x} {sym} {y}) if type({fx}) is float and type({fy}) is float else {fn}({x}, {y}))", None

    return g


def _g_chain(first: Callable | None, rest: list[tuple[Callable, Callable | None]]) -> Callable | None:
    if first is None or any(R is None for _, R in rest):
        return None

    def g(em: _Gen) -> tuple[str, str | None]:
        e, _ = first(em)
        for f, R in rest:
            assert R is not None
            e = f"{em.bind(f)}({e}, {R(em)[0]})"
        return e, None

    return g


def _g_not(F: Callable | None, count: int) -> Callable | None:
    if F is None:
        return None

    def g(em: _Gen) -> tuple[str, str | None]:
        e, k = F(em)
        if count % 2 == 0:
            return em.as_bool(e, k), "bool"
        if k == "bool":
            return f"(not {e})", "bool"
        return em.guard(e, lambda f, x: f"type({f}) is bool", lambda x: f"(not {x})"), "bool"

    return g


def _g_neg(F: Callable | None, count: int) -> Callable | None:
    if F is None:
        return None

    def g(em: _Gen) -> tuple[str, str | None]:
        e, _ = F(em)
        for _ in range(count):
            e = f"_neg({e})"
        return e, None

    return g


def _g_select(F: Callable | None, name: str) -> Callable | None:
    if F is None:
        return None

    def g(em: _Gen) -> tuple[str, str | None]:
        e, _ = F(em)
        return _g_sel(em, e, name), None

    return g


def _g_apply(f: Callable, gs: list[Callable | None]) -> Callable | None:
    """Any function or method: call the closure's own helper."""
    if any(x is None for x in gs):
        return None

    def g(em: _Gen) -> tuple[str, str | None]:
        args = [x(em)[0] for x in gs]  # type: ignore[misc]
        return _g_call(em, f, args), None

    return g


def _g_ident(path: tuple[str, ...], dotted: list[str]) -> Callable:
    """A free variable and its field chain; any dotted activation key that could resolve
    the chain (qualified names) makes it fall back."""
    root = path[0]

    def g(em: _Gen) -> tuple[str, str | None]:
        e, kind = em.root(root, len(path) > 1)
        for k in dotted:
            em.dotted[k] = None
        for i, name in enumerate(path[1:]):
            if i <= 1 and kind == "dict":
                # fields the fused function's prologue has read (see ``fuse``)
                lit = em.known.get((root, name)) if i == 0 else None
                if lit is not None:
                    e, kind = em.lit(lit), "str"
                    continue
                f = em.fields.get((root, name) if i == 0 else (root, path[1], name))
                if f is not None:
                    var, fkind, missing = f
                    if missing:  # it may be absent: reading it falls back (a missing key)
                        e, kind = f"({var} if {var} is not _MISS else _fb())", None
                    else:
                        e, kind = em.lit(var), fkind
                    continue
            e = _g_sel(em, e, name, kind)
            kind = None
        return e, kind

    return g


def _g_local(slot: int, fields: tuple[str, ...]) -> Callable:
    var = f"_s{slot}"

    def g(em: _Gen) -> tuple[str, str | None]:
        e = em.lit(var)
        for name in fields:
            e = _g_sel(em, e, name)
        return e, None

    return g


def _g_size(R: Callable | None) -> Callable | None:
    if R is None:
        return None

    def g(em: _Gen) -> tuple[str, str | None]:
        e, k = R(em)
        if k == "list" or k == "str" or k == "dict":
            return f"len({e})", "int"
        return em.guard(e, lambda f, x: f"type({f}) in _SIZED", lambda x: f"len({x})"), "int"

    return g


def _g_has(F: Callable | None, field: str) -> Callable | None:
    if F is None:
        return None

    def g(em: _Gen) -> tuple[str, str | None]:
        e, k = F(em)
        if em.is_literal(e):
            return "_fb()", "bool"
        if k == "dict":
            return f"({field!r} in {e})", "bool"
        return em.guard(e, lambda f, x: f"type({f}) is dict", lambda x: f"({field!r} in {x})"), "bool"

    return g


def _g_search(S: Callable | None, rx: Any, found: Callable) -> Callable | None:
    """A constant regex: the closure's cost check (raises a budget error; inlined as the
    length it allows), then the search."""
    if S is None:
        return None

    def g(em: _Gen) -> tuple[str, str | None]:
        e, ek = S(em)
        k = em.bind(rx)
        search = em.bind(found)
        cost = em.bind(_regex_cost_check)
        limit = REGEX_MAX_COST // max(1, rx.programsize)  # len(s) * size > MAX <=> len(s) > MAX // size

        def use(x: str) -> str:
            return f"((len({x}) > {limit} and {cost}({x}, {k})) or {search}({x}))"

        if ek == "str" and e in em.atoms:
            return use(e), "bool"
        return em.guard(e, lambda f, x: f"type({f}) is str", use), "bool"

    return g


def _g_list(gs: list[Callable | None]) -> Callable | None:
    if any(x is None for x in gs):
        return None

    def g(em: _Gen) -> tuple[str, str | None]:
        return "[" + ", ".join(x(em)[0] for x in gs) + "]", "list"  # type: ignore[misc]

    return g


def _g_bind(slot: int, I: Callable | None, B: Callable | None) -> Callable | None:
    if I is None or B is None:
        return None

    def g(em: _Gen) -> tuple[str, str | None]:
        ie, _ = I(em)
        em.emit(f"_s{slot} = {ie}")
        em.lit(f"_s{slot}")
        return B(em)

    return g


def _build_fast(gen: Callable, limits: Limits) -> tuple[Callable | None, str | None]:
    """Generate and compile ``fast(a)`` from a node's generator; (None, None) if that fails."""
    try:
        em = _Gen(limits.max_iterations)
        e, _ = gen(em)
        src = em.source(e)
        ns: dict[str, Any] = {"__builtins__": {}}
        ns.update(_FAST_GLOBALS)
        ns.update(em.ns)
        exec(compile(src, "<cel-fast>", "exec"), ns)  # noqa: S102 - generated, see above
        return ns["fast"], src
    except Exception:  # too deep for Python's compiler, etc.: no fast path
        return None, None


_FUSE_MAX = 256  # conditions per fused function


def fuse(exprs: Sequence["CompiledExpr"], params: Sequence[str], prologue: Sequence[str] = (),
         ns: Mapping[str, Any] | None = None,
         fields: Mapping[tuple[str, str], tuple[str, str | None, bool]] | None = None,
         known: Mapping[tuple[str, str], str] | None = None,
         dicts: Sequence[str] = (), epilogue: Sequence[str] = (),
         defaults: Mapping[str, str] | None = None) -> tuple[Callable | None, str | None]:
    """One generated function evaluating several conditions over the same activation.

    ``fused(*values)`` takes the activation's values in the order of ``params`` (its
    names, e.g. ``("action", "workflow", "now", "policy")``) and returns an int whose bit
    ``i`` is set when ``exprs[i]`` is ``true`` and clear when it is ``false``. Anything
    else (a condition erring or not returning a bool, any unusual input the fast paths
    guard against) raises, and the caller evaluates the conditions one by one: so when
    ``fused`` returns, every bit is exactly the value ``exprs[i](activation)`` has.

    The body is each condition's fast path (see ``_Gen``) in turn, sharing the prologue
    (free variables are the parameters, checked once) and one namespace; a condition
    outside the fast-path subset is called as itself. ``prologue`` lines run first (the
    parameters are ``_p0``, ``_p1``...; they may raise, with the same meaning), with the
    names of ``ns`` as globals. ``fields`` maps (variable, field) to (a local the prologue
    has set to that field's value, or to ``_MISS`` (in ``ns``) when the field is absent;
    the kind the prologue has proved the value has, or None; whether it may be ``_MISS``):
    the conditions read the local instead (absent: as a missing key, they raise) and
    drop the type tests the kind makes needless. A key (variable, field, key) is the
    same for a key of a field the prologue has proved an object with exactly the keys
    it lists. ``known`` maps (variable, field) to the
    ``repr`` of the str every caller guarantees the field holds (the action's own type).
    ``dicts`` names the parameters every caller passes as a dict. ``epilogue`` lines run
    after the conditions, with the mask in ``_m``; they may return something else (the
    caller's contract). ``defaults`` maps parameters to the names (in ``ns``) of their
    default values: those come last in the signature, in the order of ``params``.
    (None, None) if generation fails.
    """
    if len(exprs) > _FUSE_MAX:
        return None, None
    try:
        pnames = {name: f"_p{i}" for i, name in enumerate(params)}
        em = _Gen(0)
        em.fields = dict(fields or {})
        em.known = dict(known or {})
        body: list[str] = []
        act = None
        for i, ex in enumerate(exprs):
            bit = 1 << i
            g = ex._gen_kept
            em.lines, em.ind, em.loops = [], 0, False
            if g is None:
                if act is None:  # the activation, built once, for the conditions called as such
                    act = "_act"
                    body.append("_act = {" + ", ".join(f"{n!r}: {v}" for n, v in pnames.items()) + "}")
                e, kind = f"{em.bind(ex)}(_act)", None
            else:
                e, kind = g(em)
            if em.loops:
                body.append("_it = 0")  # the iteration budget is per condition
            body += ["    " * ind + text for ind, text in em.lines]
            if kind == "bool":
                body += [f"if {e}:", f"    _m |= {bit}"]
            else:
                body += [f"_v = {e}", "if _v is True:", f"    _m |= {bit}", "elif _v is not False:", "    _fb()"]
        defaults = dict(defaults or {})
        sig = [p for n, p in pnames.items() if n not in defaults]
        sig += [f"{p}={defaults[n]}" for n, p in pnames.items() if n in defaults]
        out = [f"def fused({', '.join(sig)}):"]
        used = set(re.findall(r"\b_r\d+\b", "\n".join(body + list(epilogue))))
        for name, (var, as_dict) in em.roots.items():
            p = pnames.get(name)
            if p is None:  # a name the activation does not have: no fused function
                return None, None
            if var not in used and not (as_dict and name not in dicts):
                continue  # read only through the prologue's locals
            out.append(f"    {var} = {p}")
            if as_dict and name not in dicts:
                out.append(f"    if type({var}) is not dict: _fb()")
        out += ["    " + line for line in prologue]
        out.append("    _m = 0")
        out += ["    " + line for line in body]
        out += ["    " + line for line in epilogue]
        out.append("    return _m")
        src = "\n".join(out) + "\n"
        glob: dict[str, Any] = {"__builtins__": {}}
        glob.update(_FAST_GLOBALS)
        glob.update(ns or {})
        glob.update(em.ns)
        exec(compile(src, "<cel-fused>", "exec"), glob)  # noqa: S102 - generated, see _Gen
        return glob["fused"], src
    except Exception:  # too large for Python's compiler, etc.: no fused function
        return None, None


# ---------------------------------------------------------------------------
# Compilation
# ---------------------------------------------------------------------------


class _N:
    """A compiled sub-expression: the closure, and its value if it is a constant.

    ``g`` is the fast-path code generator of the node (see ``_Gen``), or ``None`` when the
    node is outside the fast-path subset.
    """

    __slots__ = ("fn", "const", "value", "depth", "g", "path", "tg", "refi")

    def __init__(self, fn: Callable, const: bool = False, value: Any = None, depth: int = 1) -> None:
        self.fn = fn
        self.const = const
        self.value = value
        self.depth = depth
        self.g: Callable[[_Gen], tuple[str, str | None]] | None = None
        self.path: tuple[str, ...] | None = None  # a free variable's field chain, e.g. ("action", "type")
        # the type guard (see ``CompiledExpr.type_guard``): the action types for which this
        # node may be anything but ``false``; None when that is not known
        self.tg: frozenset[str] | None = None
        self.refi = -1  # for a bare free variable: the index of its Reference


def _const(value: Any) -> _N:
    def fn(a: Any, c: Any) -> Any:
        return value

    n = _N(fn, True, value, 1)
    n.g = _g_const(value)
    return n


def _constfail(message: str) -> _N:
    def fn(a: Any, c: Any) -> Any:
        raise _Fail(message)

    return _N(fn, False, None, 1)


_ACTION_TYPE = ("action", "type")

_PASSTHRU = frozenset(
    {"expr", "conditionalor", "conditionaland", "relation", "addition", "multiplication",
     "unary", "member", "primary"}
)
_MACROS = frozenset(
    {"all", "exists", "exists_one", "existsOne", "map", "filter", "transformList", "transformMap"}
)


def _const_value(v: Any) -> Any:
    """A constant as CEL sees it: tuples become lists, mappings dicts (shared, never mutated)."""
    if type(v) is tuple or type(v) is list:
        return [_const_value(x) for x in v]
    if isinstance(v, Mapping):
        return {k: _const_value(x) for k, x in v.items()}
    return v


class _Compiler:
    def __init__(self, source: str, limits: Limits, constants: Mapping[str, Any] | None = None) -> None:
        self.source = source
        self.limits = limits
        self.constants = constants
        self.sizes = _Sizes(limits.max_size)
        self.glob, self.meth = _builtin_tables(self.sizes)
        self.add = _make_add(self.sizes)
        self.refs: list[Reference] = []
        self.has_fields: dict[int, str] = {}  # Reference index -> the field a has() tests
        # spans that only the parse tree with positions gives exactly (see compile_cel)
        self.exact = False
        self.scopes: list[dict[str, int]] = []
        self.nslots = 1  # ctx[0] is the iteration count, ctx[1:] the variable slots
        self.needs_ctx = False
        self.max_depth = max(4 * limits.max_nesting_depth, 64)

    # -- errors ------------------------------------------------------------

    def err(self, node: Any, message: str, hint: str | None = None) -> CelCompileError:
        s, e = _span(node, len(self.source))
        return CelCompileError(message, s, e, hint)

    def mk(self, fn: Callable, *kids: _N, node: Any = None) -> _N:
        depth = 1 + max((k.depth for k in kids), default=0)
        if depth > self.max_depth:
            raise self.err(node, "expression is too deeply nested", "split the condition up")
        return _N(fn, False, None, depth)

    def fold(self, n: _N, kids: tuple[_N, ...]) -> _N:
        """Evaluate an operator over constant children at compile time, if it succeeds."""
        if kids and all(k.const for k in kids):
            try:
                v = n.fn(None, None)
            except Exception:
                return n
            if type(v) in (list, dict):
                return n  # mutable results are rebuilt per call
            return _const(v)
        return n

    # -- dispatch ----------------------------------------------------------

    def c(self, node: Any) -> _N:
        from lark import Token

        while True:
            if isinstance(node, Token):
                raise self.err(node, f"unexpected token {node.value!r}")
            d = node.data
            if d in _PASSTHRU and len(node.children) == 1:
                node = node.children[0]
                continue
            break
        handler = getattr(self, "c_" + d, None)
        if handler is None:
            raise self.err(node, f"unsupported syntax ({d})")
        return handler(node)

    # -- ternary / logic ---------------------------------------------------

    def c_expr(self, node: Any) -> _N:
        # flatten `a ? b : c ? d : e` iteratively
        pairs = []
        while node.data == "expr" and len(node.children) == 3:
            cond, then, rest = node.children
            pairs.append((self.c(cond), self.c(then), cond))
            node = rest
            while node.data == "expr" and len(node.children) == 1:
                node = node.children[0]
        other = self.c(node)
        for cn, tn, cnode in reversed(pairs):
            other = self.ternary(cn, tn, other, cnode)
        return other

    def ternary(self, cn: _N, tn: _N, en: _N, node: Any) -> _N:
        if cn.const and (cn.value is True or cn.value is False):
            return tn if cn.value else en
        C, T, E = cn.fn, tn.fn, en.fn

        def fn(a: Any, c: Any) -> Any:
            v = C(a, c)
            if v is True:
                return T(a, c)
            if v is False:
                return E(a, c)
            raise _no_overload("_?_:_", v)

        n = self.mk(fn, cn, tn, en, node=node)
        if cn.g and tn.g and en.g:
            n.g = _g_ternary(cn.g, tn.g, en.g)
        return n

    def _flatten(self, node: Any, name: str) -> list:
        items = []
        while node.data == name and len(node.children) == 2:
            items.append(node.children[1])
            node = node.children[0]
            while node.data == name and len(node.children) == 1 and getattr(
                node.children[0], "data", None
            ) == name:
                node = node.children[0]
        items.append(node)
        items.reverse()
        return items

    def c_conditionalor(self, node: Any) -> _N:
        return self.logic(node, "conditionalor", False)

    def c_conditionaland(self, node: Any) -> _N:
        return self.logic(node, "conditionaland", True)

    def logic(self, node: Any, name: str, is_and: bool) -> _N:
        kids = [self.c(k) for k in self._flatten(node, name)]
        n = self._logic(kids, is_and, node)
        # the same operands as the closures: constant identity elements dropped
        live = [k for k in kids if not (k.const and k.value is is_and)]
        if not n.const and live and all(k.g for k in live):
            n.g = _g_logic([k.g for k in live], not is_and)
        if not n.const and live:
            if is_and:
                # `&&` evaluates left to right and stops at the first `false`, before any
                # later operand could raise a (non-absorbable) budget error: only the first
                # operand's guard carries over
                n.tg = live[0].tg
            elif all(k.tg is not None for k in live):
                n.tg = frozenset().union(*(k.tg for k in live))  # type: ignore[union-attr]
        return n

    def _logic(self, kids: list[_N], is_and: bool, node: Any) -> _N:
        stop = not is_and  # the deciding value: False for &&, True for ||
        op = "_&&_" if is_and else "_||_"
        live: list[_N] = []
        for k in kids:
            if k.const and k.value is stop:
                return _const(stop)
            if k.const and k.value is (not stop):
                continue  # identity element
            live.append(k)
        if not live:
            return _const(not stop)
        fns = tuple(k.fn for k in live)
        if len(fns) == 1:
            (F,) = fns

            def one(a: Any, c: Any) -> Any:
                v = F(a, c)
                if v is True or v is False:
                    return v
                raise _no_overload(op, v)

            return self.mk(one, *live, node=node)
        if 2 < len(fns) <= 8:
            # (a && b) && c has the same commutative error semantics as the n-ary form,
            # and nested binary closures avoid a loop per call
            acc = live[0]
            for k in live[1:]:
                acc = self._logic2(acc, k, stop, op, node)
            return acc
        if len(fns) == 2:
            return self._logic2(live[0], live[1], stop, op, node)

        def many(a: Any, c: Any) -> Any:
            err = None
            for F in fns:
                try:
                    v = F(a, c)
                except Exception as ex:
                    if not _absorbable(ex):
                        raise
                    if err is None:
                        err = ex
                    continue
                if v is stop:
                    return stop
                if v is not (not stop) and err is None:
                    err = _no_overload(op, v)
            if err is not None:
                raise err
            return not stop

        return self.mk(many, *live, node=node)

    def _logic2(self, ln: _N, rn: _N, stop: bool, op: str, node: Any) -> _N:
        L, R = ln.fn, rn.fn

        def two(a: Any, c: Any) -> Any:
            try:
                l = L(a, c)
            except Exception as ex:
                if not _absorbable(ex):
                    raise
                r = R(a, c)
                if r is stop:
                    return stop
                raise
            if l is stop:
                return stop
            if l is not (not stop):
                r = R(a, c)
                if r is stop:
                    return stop
                raise _no_overload(op, l)
            r = R(a, c)
            if r is True or r is False:
                return r
            raise _no_overload(op, r)

        return self.mk(two, ln, rn, node=node)

    # -- relations ---------------------------------------------------------

    def c_relation(self, node: Any) -> _N:
        ops = []
        while node.data == "relation" and len(node.children) == 2:
            opnode, right = node.children
            ops.append((opnode.data, right, opnode))
            node = opnode.children[0]
        left = self.c(node)
        for opname, right, opnode in reversed(ops):
            left = self.relop(opname, left, self.c(right), opnode)
        return left

    def relop(self, op: str, ln: _N, rn: _N, node: Any) -> _N:
        L, R = ln.fn, rn.fn
        if op == "relation_in":
            return self.c_in(ln, rn, node)
        g = None
        if op in ("relation_eq", "relation_ne"):
            neg = op == "relation_ne"
            fn = self._eq_fn(ln, rn, neg)
            if ln.const and not rn.const:  # _eq_fn swaps the same way
                g = _g_eq(rn, ln, neg)
            else:
                g = _g_eq(ln, rn, neg)
        else:
            g = _g_cmp(op, ln, rn)
            cmp = {"relation_lt": _lt, "relation_le": _le, "relation_gt": _gt, "relation_ge": _ge}[op]
            fn = None
            if rn.const and type(rn.value) in (int, float) and not ln.const:
                fn = self._cmp_num_const(op, L, rn.value)
            if fn is None:

                def fn(a: Any, c: Any) -> Any:
                    return cmp(L(a, c), R(a, c))

        n = self.mk(fn, ln, rn, node=node)
        n.g = g
        if op == "relation_eq":
            for x, k in ((ln, rn), (rn, ln)):
                if x.path == _ACTION_TYPE and k.const and type(k.value) is str:
                    n.tg = frozenset((k.value,))
        return self.fold(n, (ln, rn))

    def _cmp_num_const(self, op: str, L: Callable, k: Any) -> Callable | None:
        sym = {"relation_lt": "<", "relation_le": "<=", "relation_gt": ">", "relation_ge": ">="}[op]
        cmp = {"relation_lt": _lt, "relation_le": _le, "relation_gt": _gt, "relation_ge": _ge}[op]
        kf = type(k) is float
        # specialised closure per operator (avoids a dispatch per call)
        if sym == "<":

            def fn(a: Any, c: Any) -> Any:
                v = L(a, c)
                t = type(v)
                if t is float:
                    return v < k
                if t is int or t is CelUint:
                    return (float(v) if kf else v) < k
                return cmp(v, k)

        elif sym == "<=":

            def fn(a: Any, c: Any) -> Any:
                v = L(a, c)
                t = type(v)
                if t is float:
                    return v <= k
                if t is int or t is CelUint:
                    return (float(v) if kf else v) <= k
                return cmp(v, k)

        elif sym == ">":

            def fn(a: Any, c: Any) -> Any:
                v = L(a, c)
                t = type(v)
                if t is float:
                    return v > k
                if t is int or t is CelUint:
                    return (float(v) if kf else v) > k
                return cmp(v, k)

        else:

            def fn(a: Any, c: Any) -> Any:
                v = L(a, c)
                t = type(v)
                if t is float:
                    return v >= k
                if t is int or t is CelUint:
                    return (float(v) if kf else v) >= k
                return cmp(v, k)

        return fn

    def _eq_fn(self, ln: _N, rn: _N, neg: bool) -> Callable:
        L, R = ln.fn, rn.fn
        if ln.const and not rn.const:
            ln, rn, L, R = rn, ln, R, L
        if rn.const and type(rn.value) in (str, bytes):
            k = rn.value
            tk = type(k)

            def eqs(a: Any, c: Any) -> Any:  # Python's == for the same type alone, else _eq
                v = L(a, c)
                if type(v) is tk:
                    return (v != k) if neg else (v == k)
                return (not _eq(v, k)) if neg else _eq(v, k)

            return eqs
        if rn.const and type(rn.value) in (int, float, CelUint):
            k = rn.value

            def eqn(a: Any, c: Any) -> Any:
                v = L(a, c)
                t = type(v)
                if t is int or t is float or t is CelUint:
                    return (v != k) if neg else (v == k)
                return (not _eq(v, k)) if neg else _eq(v, k)

            return eqn
        if rn.const and (rn.value is None or type(rn.value) is bool):
            k = rn.value
            if neg:
                return lambda a, c: L(a, c) is not k
            return lambda a, c: L(a, c) is k
        if neg:
            return lambda a, c: not _eq(L(a, c), R(a, c))
        return lambda a, c: _eq(L(a, c), R(a, c))

    def c_in(self, ln: _N, rn: _N, node: Any) -> _N:
        L, R = ln.fn, rn.fn
        if rn.const and type(rn.value) is list and rn.value and all(
            type(e) is str for e in rn.value
        ):
            fs = frozenset(rn.value)
            strs = rn.value

            def fn(a: Any, c: Any) -> Any:
                v = L(a, c)
                if type(v) is str:
                    return v in fs
                return _contains_in(v, strs)  # element by element, as `==` compares

            g = _g_in_strs(ln, fs)
            tg = fs if ln.path == _ACTION_TYPE else None
        else:
            tg = None

            def fn(a: Any, c: Any) -> Any:
                return _contains_in(L(a, c), R(a, c))

            g = _g_in(ln, rn)
        n = self.mk(fn, ln, rn, node=node)
        n.g = g
        n.tg = tg
        return self.fold(n, (ln, rn))

    # -- arithmetic --------------------------------------------------------

    def c_addition(self, node: Any) -> _N:
        return self.arith(node, "addition")

    def c_multiplication(self, node: Any) -> _N:
        return self.arith(node, "multiplication")

    def arith(self, node: Any, name: str) -> _N:
        ops = []
        while node.data == name and len(node.children) == 2:
            opnode, right = node.children
            ops.append((opnode.data, right, opnode))
            node = opnode.children[0]
        left = self.c(node)
        ops.reverse()
        if len(ops) > 8:
            # long chains: one loop closure keeps the closure tree shallow
            kids = [left] + [self.c(r) for _, r, _ in ops]
            fns = [self.binfn(o) for o, _, _ in ops]
            first = kids[0].fn
            rest = tuple(zip(fns, (k.fn for k in kids[1:])))

            def chain(a: Any, c: Any) -> Any:
                v = first(a, c)
                for f, R in rest:
                    v = f(v, R(a, c))
                return v

            n = self.mk(chain, *kids, node=node)
            n.g = _g_chain(kids[0].g, [(f, k.g) for f, k in zip(fns, kids[1:])])
            return self.fold(n, tuple(kids))
        for opname, right, opnode in ops:
            rn = self.c(right)
            f = self.binfn(opname)
            L, R = left.fn, rn.fn

            def fn(a: Any, c: Any, f: Callable = f, L: Callable = L, R: Callable = R) -> Any:
                return f(L(a, c), R(a, c))

            n = self.mk(fn, left, rn, node=opnode)
            n.g = _g_binop(opname, f, left.g, rn.g)
            left = self.fold(n, (left, rn))
        return left

    def binfn(self, opname: str) -> Callable:
        return {
            "addition_add": self.add,
            "addition_sub": _sub,
            "multiplication_mul": _mul,
            "multiplication_div": _div,
            "multiplication_mod": _mod,
        }[opname]

    def c_unary(self, node: Any) -> _N:
        ops = []
        while node.data == "unary" and len(node.children) == 2:
            ops.append(node.children[0].data)
            node = node.children[1]
        inner = self.c(node)
        nots = sum(1 for o in ops if o == "unary_not")
        if nots and nots != len(ops):
            # mixed: apply one by one (rare)
            for o in reversed(ops):
                inner = self._unary1(o, inner, node)
            return inner
        F = inner.fn
        count = len(ops)
        if nots:

            def fn(a: Any, c: Any) -> Any:
                v = F(a, c)
                if v is True or v is False:
                    return v if count % 2 == 0 else not v
                raise _no_overload("!_", v)

        else:

            def fn(a: Any, c: Any) -> Any:
                v = F(a, c)
                for _ in range(count):
                    v = _neg(v)
                return v

        n = self.mk(fn, inner, node=node)
        n.g = _g_not(inner.g, count) if nots else _g_neg(inner.g, count)
        return self.fold(n, (inner,))

    def _unary1(self, op: str, inner: _N, node: Any) -> _N:
        F = inner.fn
        if op == "unary_not":

            def fn(a: Any, c: Any) -> Any:
                v = F(a, c)
                if v is True or v is False:
                    return not v
                raise _no_overload("!_", v)

        else:

            def fn(a: Any, c: Any) -> Any:
                return _neg(F(a, c))

        n = self.mk(fn, inner, node=node)
        n.g = _g_not(inner.g, 1) if op == "unary_not" else _g_neg(inner.g, 1)
        return self.fold(n, (inner,))

    # -- members -----------------------------------------------------------

    def c_member(self, node: Any) -> _N:
        # collect the postfix operations from the innermost primary outwards
        ops = []
        while node.data in ("member", "member_dot", "member_dot_arg", "member_index", "member_object"):
            if node.data == "member":
                if len(node.children) != 1:
                    raise self.err(node, "unsupported member syntax")
                node = node.children[0]
                continue
            ops.append(node)
            node = node.children[0]
        ops.reverse()
        base = node  # a 'primary' (or deeper) node
        while getattr(base, "data", None) == "primary" and len(base.children) == 1:
            base = base.children[0]

        i = 0
        cur: _N | None = None
        bd = getattr(base, "data", None)
        if bd in ("ident", "dot_ident"):
            name = base.children[0].value
            path = [name]
            j = 0
            while j < len(ops) and ops[j].data == "member_dot":
                path.append(ops[j].children[1].value)
                j += 1
            # `math.greatest(...)`, `strings.quote(...)`: a namespaced global function
            if (
                j < len(ops)
                and ops[j].data == "member_dot_arg"
                and self.lookup_local(name) is None
            ):
                fq = ".".join(path + [ops[j].children[1].value])
                if fq == "cel.bind":
                    cur = self.bind_macro(self.argnodes(ops[j]), ops[j])
                    i = j + 1
                elif fq in self.glob:
                    cur = self.call_global(fq, self.args(ops[j]), ops[j])
                    i = j + 1
            if cur is None:
                end_node = ops[j - 1] if j > 0 else base
                cur = self.ident_chain(tuple(path), base, end_node)
                i = j
        else:
            cur = self.c(base)
        for op in ops[i:]:
            cur = self.postfix(cur, op)
        return cur

    c_member_dot = c_member
    c_member_dot_arg = c_member
    c_member_index = c_member
    c_member_object = c_member

    def postfix(self, cur: _N, op: Any) -> _N:
        d = op.data
        if d == "member_dot":
            name = op.children[1].value
            F = cur.fn

            def sel(a: Any, c: Any) -> Any:
                v = F(a, c)
                if type(v) is dict:
                    try:
                        return v[name]
                    except KeyError:
                        raise _Fail(f"no such key: '{name}'") from None
                return _select(v, name)

            n = self.mk(sel, cur, node=op)
            n.g = _g_select(cur.g, name)
            return self.fold(n, (cur,))
        if d == "member_index":
            kn = self.c(op.children[1])
            F, K = cur.fn, kn.fn

            def idx(a: Any, c: Any) -> Any:
                return _index(F(a, c), K(a, c))

            n = self.mk(idx, cur, kn, node=op)
            n.g = _g_apply(_index, [cur.g, kn.g])
            return self.fold(n, (cur, kn))
        if d == "member_dot_arg":
            name = op.children[1].value
            argnodes = self.argnodes(op)
            if name in _MACROS:
                return self.macro(name, cur, argnodes, op)
            return self.call_method(name, cur, [self.c(x) for x in argnodes], op)
        if d == "member_object":
            raise self.err(
                op, "message construction is not supported",
                "Stopline conditions work on maps and lists; use a map literal `{...}`",
            )
        raise self.err(op, f"unsupported syntax ({d})")

    def argnodes(self, node: Any) -> list:
        for ch in node.children:
            if getattr(ch, "data", None) == "exprlist":
                return list(ch.children)
        return []

    def args(self, node: Any) -> list[_N]:
        return [self.c(x) for x in self.argnodes(node)]

    def lookup_local(self, name: str) -> int | None:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return None

    def ident_chain(self, path: tuple[str, ...], first: Any, last: Any) -> _N:
        root = path[0]
        slot = self.lookup_local(root)
        if slot is not None:
            self.needs_ctx = True

            def local(a: Any, c: Any) -> Any:
                return c[slot]

            cur = self.mk(local)
            cur.g = _g_local(slot, ())
            if len(path) >= 2:
                f1 = path[1]

                def local1(a: Any, c: Any) -> Any:
                    v = c[slot]
                    if type(v) is dict:
                        try:
                            return v[f1]
                        except KeyError:
                            raise _Fail(f"no such key: '{f1}'") from None
                    return _select(v, f1)

                cur = self.mk(local1)
                cur.g = _g_local(slot, path[1:2])
            for name in path[2:]:
                F = cur.fn

                def sel(a: Any, c: Any, F: Callable = F, name: str = name) -> Any:
                    v = F(a, c)
                    if type(v) is dict:
                        try:
                            return v[name]
                        except KeyError:
                            raise _Fail(f"no such key: '{name}'") from None
                    return _select(v, name)

                cur = self.mk(sel, cur)
            cur.g = _g_local(slot, path[1:])
            return cur
        start, _ = _span(first, len(self.source))
        _, end = _span(last, len(self.source))
        full = ".".join(path)
        if full in _TYPE_IDENTS or root in _TYPE_IDENTS and len(path) == 1:
            t = _TYPE_IDENTS.get(full)
            if t is not None:
                return _const(t)
        if root == "google" and len(path) >= 3 and ".".join(path[:3]) in _TYPE_IDENTS:
            t = _TYPE_IDENTS[".".join(path[:3])]
            cur = _const(t)
            for name in path[3:]:
                cur = self.postfix_select(cur, name)
            return cur
        self.refs.append(Reference(path, start, end))
        if self.constants is not None and root in self.constants:
            # Compile-time constants (e.g. `policy.refund_limit`): fold the chain into a literal,
            # so `x in policy.blocked` gets the same fast paths as a literal list.
            val = self.constants[root]
            for name in path[1:]:
                if isinstance(val, Mapping) and name in val:
                    val = val[name]
                else:
                    break
            else:
                return _const(_const_value(val))
        # candidates for qualified-name resolution: the longest dotted prefix wins
        cands = tuple((".".join(path[:k]), path[k:]) for k in range(len(path), 0, -1))
        if len(path) == 1:

            def ident(a: Any, c: Any) -> Any:
                try:
                    return a[root]
                except KeyError:
                    raise _Fail(f"undeclared reference to '{root}'") from None
                except TypeError:
                    raise _Fail(f"undeclared reference to '{root}'") from None

            n = self.mk(ident)
            n.g = _g_ident(path, [])
            n.path = path
            n.refi = len(self.refs) - 1
            return n
        if len(path) == 2:
            dotted = full
            field = path[1]

            def ident2(a: Any, c: Any) -> Any:
                if dotted in a:
                    return a[dotted]
                try:
                    v = a[root]
                except KeyError:
                    raise _Fail(f"undeclared reference to '{root}'") from None
                if type(v) is dict:
                    try:
                        return v[field]
                    except KeyError:
                        raise _Fail(f"no such key: '{field}'") from None
                return _select(v, field)

            n = self.mk(ident2)
            n.g = _g_ident(path, [dotted])
            n.path = path
            return n

        def identn(a: Any, c: Any) -> Any:
            for key, rest in cands:
                if key in a:
                    v = a[key]
                    for name in rest:
                        if type(v) is dict:
                            try:
                                v = v[name]
                            except KeyError:
                                raise _Fail(f"no such key: '{name}'") from None
                        else:
                            v = _select(v, name)
                    return v
            raise _Fail(f"undeclared reference to '{root}'")

        n = self.mk(identn)
        n.g = _g_ident(path, [key for key, _ in cands if "." in key])
        return n

    def postfix_select(self, cur: _N, name: str) -> _N:
        F = cur.fn

        def sel(a: Any, c: Any) -> Any:
            return _select(F(a, c), name)

        n = self.mk(sel, cur)
        n.g = _g_apply(_select, [cur.g, _g_const(name)])
        return n

    # -- calls -------------------------------------------------------------

    def call_global(self, name: str, args: list[_N], node: Any) -> _N:
        f = self.glob.get(name)
        if f is None:
            return self.unbound(name, args, node)
        if name == "matches" and len(args) == 2 and args[1].const:
            return self.matches_const(args[0], args[1], node)
        return self.apply(f, args, node)

    def unbound(self, name: str, args: list[_N], node: Any) -> _N:
        fns = tuple(a.fn for a in args)

        def fn(a: Any, c: Any) -> Any:
            for F in fns:
                F(a, c)
            raise _Fail(f"unbound function: {name}")

        return self.mk(fn, *args, node=node)

    def apply(self, f: Callable, args: list[_N], node: Any) -> _N:
        fns = tuple(a.fn for a in args)
        if len(fns) == 1:
            (A,) = fns

            def fn(a: Any, c: Any) -> Any:
                return f(A(a, c))

        elif len(fns) == 2:
            A, B = fns

            def fn(a: Any, c: Any) -> Any:
                return f(A(a, c), B(a, c))

        else:

            def fn(a: Any, c: Any) -> Any:
                return f(*[F(a, c) for F in fns])

        n = self.mk(fn, *args, node=node)
        n.g = _g_apply(f, [x.g for x in args])
        return self.fold(n, tuple(args))

    def matches_const(self, sn: _N, pn: _N, node: Any) -> _N:
        pat = pn.value
        if type(pat) is not str:
            return self.apply(_matches, [sn, pn], node)
        try:
            rx = _re2_compile_raw(pat)
        except Exception as ex:
            msg = f"invalid regular expression {pat!r}: {ex}"
            S = sn.fn

            def bad(a: Any, c: Any) -> Any:
                S(a, c)
                raise _Fail(msg)

            return self.mk(bad, sn, node=node)
        found = _found(rx)
        S = sn.fn

        def fn(a: Any, c: Any) -> Any:
            s = S(a, c)
            if type(s) is not str:
                raise _no_overload("matches", s)
            _regex_cost_check(s, rx)
            return found(s)

        n = self.mk(fn, sn, node=node)
        n.g = _g_search(sn.g, rx, found)
        return self.fold(n, (sn,))

    def call_method(self, name: str, recv: _N, args: list[_N], node: Any) -> _N:
        f = self.meth.get(name)
        if f is None:
            return self.unbound(name, [recv] + args, node)
        if name == "matches" and len(args) == 1 and args[0].const:
            return self.matches_const(recv, args[0], node)
        if name == "size" and not args:
            R = recv.fn

            def size(a: Any, c: Any) -> Any:
                v = R(a, c)
                t = type(v)
                if t is list or t is str or t is dict or t is bytes:
                    return len(v)
                return _size(v)

            n = self.mk(size, recv, node=node)
            n.g = _g_size(recv.g)
            return self.fold(n, (recv,))
        n = self.apply(f, [recv] + args, node)
        if name in ("contains", "startsWith", "endsWith") and len(args) == 1 and not n.const:
            n.g = _g_str_method(name, recv, args[0])
        return n

    def c_ident_arg(self, node: Any) -> _N:
        name = node.children[0].value
        argnodes = self.argnodes(node)
        if name == "has":
            return self.has_macro(argnodes, node)
        args = [self.c(x) for x in argnodes]
        if name == "size" and len(args) == 1:
            return self.call_method("size", args[0], [], node)
        return self.call_global(name, args, node)

    def c_dot_ident_arg(self, node: Any) -> _N:
        self.exact = True  # the span of `.name` starts at a dot the tree does not keep
        return self.c_ident_arg(node)

    def has_macro(self, argnodes: list, node: Any) -> _N:
        if len(argnodes) != 1:
            raise self.err(node, "has() takes exactly one argument")
        arg = argnodes[0]
        while getattr(arg, "data", None) in _PASSTHRU and len(arg.children) == 1:
            arg = arg.children[0]
        if getattr(arg, "data", None) != "member_dot":
            raise self.err(
                node, "invalid argument to has() macro", "has() takes a field selection like `has(a.b)`"
            )
        field = arg.children[1].value
        inner = self.c(arg.children[0])
        F = inner.fn
        if inner.refi >= 0:  # `has(x.f)` reads only the field `f` of the variable `x`
            self.has_fields[inner.refi] = field

        def fn(a: Any, c: Any) -> Any:
            v = F(a, c)
            if type(v) is dict:
                return field in v
            return _has_field(v, field)

        n = self.mk(fn, inner, node=node)
        n.g = _g_has(inner.g, field)
        return self.fold(n, (inner,))

    # -- macros ------------------------------------------------------------

    def macro_var(self, argnode: Any, name: str) -> str | None:
        var = argnode
        while getattr(var, "data", None) in _PASSTHRU and len(var.children) == 1:
            var = var.children[0]
        if getattr(var, "data", None) != "ident":
            return None
        return var.children[0].value

    def macro(self, name: str, target: _N, argnodes: list, node: Any) -> _N:
        nargs = len(argnodes)
        two = False
        if name in ("all", "exists", "exists_one", "existsOne"):
            if nargs == 3:
                two = True
            elif nargs != 2 or name == "existsOne":
                return self.call_method(name, target, [self.c(x) for x in argnodes], node)
        elif name in ("map", "filter"):
            if not (nargs == 2 or name == "map" and nargs == 3):
                return self.call_method(name, target, [self.c(x) for x in argnodes], node)
        elif name in ("transformList", "transformMap"):
            if nargs not in (3, 4):
                return self.call_method(name, target, [self.c(x) for x in argnodes], node)
            two = True
        nvars = 2 if two else 1
        vnames = []
        for k in range(nvars):
            vn = self.macro_var(argnodes[k], name)
            if vn is None:
                raise self.err(
                    argnodes[k], f"argument is not an identifier in {name}() macro",
                    f"write `list.{name}(x, ...)` with a simple variable name",
                )
            vnames.append(vn)
        if two and vnames[0] == vnames[1]:
            raise self.err(argnodes[1], f"duplicate variable name `{vnames[0]}` in {name}() macro")
        slots = list(range(self.nslots, self.nslots + nvars))
        self.nslots += nvars
        self.needs_ctx = True
        self.scopes.append(dict(zip(vnames, slots)))
        try:
            body = [self.c(x) for x in argnodes[nvars:]]
        finally:
            self.scopes.pop()
        T = target.fn
        maxit = self.limits.max_iterations
        s0 = slots[0]
        s1 = slots[1] if two else -1

        def items(a: Any, c: Any) -> Any:
            """The iteration range as a sequence of (first var, second var) or of elements."""
            return items2(T(a, c), c)

        def items2(r: Any, c: Any) -> Any:
            t = type(r)
            if t is list or t is tuple:
                seq = list(enumerate(r)) if two else r
            elif t is dict or isinstance(r, Mapping):
                seq = list(r.items()) if two else list(r)
            else:
                raise _no_overload(name, r)
            n = c[0] + len(seq)
            if n > maxit:
                raise _BudgetFail(
                    f"comprehension iterations exceed max_iterations {maxit}", "max_iterations"
                )
            c[0] = n
            return seq

        def bind(v: list, e: Any) -> Any:
            if two:
                v[s0], v[s1] = e
                return e[1]
            v[s0] = e
            return e

        P = body[0].fn
        kind = {"existsOne": "exists_one", "transformList": "map", "transformMap": "tmap"}.get(name, name)
        if kind in ("all", "exists"):
            stop = kind == "exists"

            def quant(a: Any, c: Any) -> Any:
                seq = items(a, c)
                v = c
                err = None
                for e in seq:
                    if two:
                        v[s0], v[s1] = e
                    else:
                        v[s0] = e
                    try:
                        r = P(a, c)
                    except Exception as ex:
                        if not _absorbable(ex):
                            raise
                        if err is None:
                            err = ex
                        continue
                    if r is stop:
                        return stop
                    if r is not (not stop) and err is None:
                        err = _no_overload(name, r)
                if err is not None:
                    raise err
                return not stop

            fn = quant
        elif kind == "exists_one":

            def one(a: Any, c: Any) -> Any:
                seq = items(a, c)
                v = c
                count = 0
                for e in seq:
                    bind(v, e)
                    r = P(a, c)
                    if r is True:
                        count += 1
                    elif r is not False:
                        raise _no_overload(name, r)
                return count == 1

            fn = one
        elif kind == "filter":

            def filt(a: Any, c: Any) -> Any:
                seq = T(a, c)
                if type(seq) is not list:
                    seq = items2(seq, c)
                else:
                    n = c[0] + len(seq)
                    if n > maxit:
                        raise _BudgetFail(
                            f"comprehension iterations exceed max_iterations {maxit}", "max_iterations"
                        )
                    c[0] = n
                v = c
                out = []
                for e in seq:
                    v[s0] = e
                    r = P(a, c)
                    if r is True:
                        out.append(e)
                    elif r is not False:
                        raise _no_overload(name, r)
                return out

            fn = filt
        elif len(body) == 1:
            as_map = kind == "tmap"

            def mapf(a: Any, c: Any) -> Any:
                seq = items(a, c)
                v = c
                out = []
                keys = []
                for e in seq:
                    bind(v, e)
                    out.append(P(a, c))
                    if as_map:
                        keys.append(e[0])
                return dict(zip(keys, out)) if as_map else out

            fn = mapf
        else:
            M = body[1].fn
            as_map = kind == "tmap"

            def mapf3(a: Any, c: Any) -> Any:
                seq = items(a, c)
                v = c
                out = []
                keys = []
                for e in seq:
                    bind(v, e)
                    r = P(a, c)
                    if r is True:
                        out.append(M(a, c))
                        if as_map:
                            keys.append(e[0])
                    elif r is not False:
                        raise _no_overload(name, r)
                return dict(zip(keys, out)) if as_map else out

            fn = mapf3
        n = self.mk(fn, target, *body, node=node)
        if not two and kind in ("all", "exists", "exists_one", "filter", "map") and target.g and all(
            b.g for b in body
        ):
            n.g = _g_macro(kind, target.g, body[0].g, body[1].g if len(body) > 1 else None,  # type: ignore[arg-type]
                           s0, maxit)
        return n

    def bind_macro(self, argnodes: list, node: Any) -> _N:
        """cel.bind(name, init, body): evaluate init once, bind it to name in body."""
        if len(argnodes) != 3:
            raise self.err(node, "cel.bind() takes three arguments")
        vn = self.macro_var(argnodes[0], "cel.bind")
        if vn is None:
            raise self.err(argnodes[0], "argument is not an identifier in cel.bind() macro")
        init = self.c(argnodes[1])
        slot = self.nslots
        self.nslots += 1
        self.needs_ctx = True
        self.scopes.append({vn: slot})
        try:
            body = self.c(argnodes[2])
        finally:
            self.scopes.pop()
        I, B = init.fn, body.fn

        def fn(a: Any, c: Any) -> Any:
            c[slot] = I(a, c)
            return B(a, c)

        n = self.mk(fn, init, body, node=node)
        n.g = _g_bind(slot, init.g, body.g)
        return n

    # -- primaries ---------------------------------------------------------

    def c_primary(self, node: Any) -> _N:
        return self.c_member(node)

    def c_ident(self, node: Any) -> _N:
        return self.c_member(node)

    def c_dot_ident(self, node: Any) -> _N:
        self.exact = True  # the span of `.name` starts at a dot the tree does not keep
        return self.c_member(node)

    def c_paren_expr(self, node: Any) -> _N:
        return self.c(node.children[0])

    def c_list_lit(self, node: Any) -> _N:
        kids = self.args(node)
        fns = tuple(k.fn for k in kids)
        if kids and all(k.const for k in kids):
            vals = [k.value for k in kids]

            def const_list(a: Any, c: Any) -> Any:
                return list(vals)  # a fresh list per call: results may be mutated by callers

            n = self.mk(const_list, *kids, node=node)
            n.const, n.value = True, vals
            n.g = _g_const(vals)
            return n

        def lst(a: Any, c: Any) -> Any:
            return [F(a, c) for F in fns]

        n = self.mk(lst, *kids, node=node)
        n.g = _g_list([k.g for k in kids])
        return n

    def c_map_lit(self, node: Any) -> _N:
        inits = node.children[0].children if node.children else []
        kids = [self.c(x) for x in inits]
        pairs = tuple((kids[i].fn, kids[i + 1].fn) for i in range(0, len(kids), 2))

        def mp(a: Any, c: Any) -> Any:
            out: dict = {}
            for K, V in pairs:
                k = _check_key(K(a, c))
                if _map_lookup(out, k)[0] or (k in out):
                    raise _Fail(f"Failed with repeated key: {_fmt_key(k)}")
                out[k] = V(a, c)
            return out

        return self.mk(mp, *kids, node=node)

    def c_literal(self, node: Any) -> _N:
        tok = node.children[0]
        t = tok.type
        text = tok.value
        try:
            if t == "INT_LIT":
                v = _parse_int_lit(text)
                if not (INT64_MIN <= v <= INT64_MAX):
                    raise self.err(tok, f"integer literal out of range: {text}", "int is 64-bit signed")
                return _const(v)
            if t == "UINT_LIT":
                v = _parse_int_lit(text[:-1])
                if not (0 <= v <= UINT64_MAX):
                    raise self.err(tok, f"uint literal out of range: {text}")
                return _const(CelUint(v))
            if t == "FLOAT_LIT":
                return _const(float(text))
            if t in ("STRING_LIT", "MLSTRING_LIT", "BYTES_LIT"):
                return _const(_string_literal(text))
            if t == "BOOL_LIT":
                return _const(text == "true")
            if t == "NULL_LIT":
                return _const(None)
        except ValueError as ex:
            raise self.err(tok, f"invalid literal: {ex}") from None
        raise self.err(tok, f"unsupported literal {text!r}")


def _parse_int_lit(text: str) -> int:
    neg = text.startswith("-")
    body = text[1:] if neg else text
    v = int(body[2:], 16) if body[:2].lower() == "0x" else int(body, 10)
    return -v if neg else v


def _span(node: Any, n: int) -> tuple[int, int]:
    s = getattr(node, "start_pos", None)
    e = getattr(node, "end_pos", None)
    if s is None:
        meta = getattr(node, "meta", None)
        if meta is not None and not getattr(meta, "empty", True):
            s, e = meta.start_pos, meta.end_pos
        elif getattr(node, "children", None):  # parsed without positions: its tokens have them
            s = _edge_token(node, 0)
            e = _edge_token(node, -1)
            s = getattr(s, "start_pos", None)
            e = getattr(e, "end_pos", None)
    if s is None:
        return 0, n
    return s, e if e is not None else s + 1


def _edge_token(node: Any, i: int) -> Any:
    """The first (i=0) or last (i=-1) token of a subtree: where Lark's position
    propagation takes a subtree's start and end from. Depth-first, iterative."""
    stack = [node]
    while stack:
        x = stack.pop()
        kids = getattr(x, "children", None)
        if kids is None:
            if getattr(x, "start_pos", None) is not None:
                return x
            continue
        stack.extend(reversed(kids) if i == 0 else kids)
    return None


# ---------------------------------------------------------------------------
# Pre-parse checks and parse errors
# ---------------------------------------------------------------------------


def _bracket_depth(src: str, limit: int) -> tuple[int, int] | None:
    """Return (offset, depth) of the first bracket beyond ``limit``, skipping strings."""
    depth = 0
    i = 0
    n = len(src)
    while i < n:
        ch = src[i]
        if ch in "([{":
            depth += 1
            if depth > limit:
                return i, depth
        elif ch in ")]}":
            depth -= 1
        elif ch == "/" and src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
            continue
        elif ch in "\"'":
            raw = i > 0 and src[i - 1] in "rR"
            q = src[i : i + 3] if src[i : i + 3] in ('"""', "'''") else ch
            j = i + len(q)
            while j < n:
                if not raw and src[j] == "\\":
                    j += 2
                    continue
                if src.startswith(q, j):
                    break
                if len(q) == 1 and src[j] == "\n":
                    break
                j += 1
            i = j + len(q)
            continue
        i += 1
    return None


_PARSER_LOCK = threading.Lock()
_PARSER: list = []
_FAST_PARSER: list = []


def _fast_parser() -> Any:
    """cel-python's grammar (``celpy/cel.lark``) with cel-python's own Lark options, minus
    position propagation, which is half of the parse time. Tokens keep their positions;
    ``_span`` finds a subtree's from its first and last token, as propagation would."""
    if not _FAST_PARSER:
        import re
        from pathlib import Path

        import celpy.celparser
        from lark import Lark

        from ..lark_cache import lark_cache

        grammar = (Path(celpy.celparser.__file__).parent / "cel.lark").read_text()
        _FAST_PARSER.append(Lark(
            grammar, parser="lalr", start="expr", debug=True, g_regex_flags=re.M,
            lexer_callbacks={"IDENT": celpy.celparser.CELParser.ambiguous_literals},
            propagate_positions=False, maybe_placeholders=False, priority="invert",
            cache=lark_cache("cel-grammar")))  # the analysed tables, kept between processes
    return _FAST_PARSER[0]


def _parse(source: str, exact: bool = False) -> Any:
    """The parse tree of ``source``, without positions unless ``exact``. A syntax error is
    reported by cel-python's own parser (``CELParser``, built only then), so its messages
    and positions are the reference's."""
    from celpy.celparser import CELParseError, CELParser

    with _PARSER_LOCK:
        if not exact:
            try:
                return _fast_parser().parse(source)
            except Exception:  # noqa: BLE001 - the reference parser decides and reports
                pass
        if not _PARSER:
            _PARSER.append(CELParser())
        parser = _PARSER[0]  # (it keeps the text on the instance: hence the lock)
        try:
            return parser.parse(source)
        except CELParseError as ex:
            raise _convert_parse_error(source, ex) from None


def _convert_parse_error(source: str, ex: Exception) -> CelCompileError:
    from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedToken

    cause = ex.__context__
    line = getattr(ex, "line", None)
    col = getattr(ex, "column", None)
    offset = _line_col_to_offset(source, line, col) if line and col and line > 0 else len(source)
    end = offset + 1
    hint = None
    if isinstance(cause, UnexpectedToken):
        tok = cause.token
        if tok.type == "$END":
            msg = "unexpected end of expression"
            offset = len(source)
            end = offset
        else:
            if tok.start_pos is not None:
                offset = tok.start_pos
                end = tok.end_pos if tok.end_pos is not None else offset + len(tok.value)
            msg = f"unexpected `{tok.value}`"
            if tok.type == "RESERVED":
                msg = f"`{tok.value}` is a reserved word"
        expected = set(getattr(cause, "expected", ()) or ())
        if expected:
            hint = _expected_hint(expected)
    elif isinstance(cause, UnexpectedCharacters):
        ch = source[offset : offset + 1]
        msg = f"unexpected character `{ch}`"
        if ch == "`":
            hint = "backquoted field names are not supported; use m['field-name']"
    elif isinstance(cause, UnexpectedEOF):
        msg = "unexpected end of expression"
        offset = end = len(source)
    else:
        msg = "syntax error: " + str(ex).splitlines()[0]
    offset = max(0, min(offset, len(source)))
    end = max(offset, min(end, len(source)))
    return CelCompileError(msg, offset, end, hint)


_TERMINAL_NAMES = {
    "RPAR": "`)`", "LPAR": "`(`", "RSQB": "`]`", "LSQB": "`[`", "RBRACE": "`}`", "LBRACE": "`{`",
    "COMMA": "`,`", "COLON": "`:`", "DOT": "`.`", "IDENT": "a name", "INT_LIT": "a number",
    "UINT_LIT": "a number", "FLOAT_LIT": "a number", "STRING_LIT": "a string", "MLSTRING_LIT": "a string",
    "BYTES_LIT": "a bytes literal", "BOOL_LIT": "`true` or `false`", "NULL_LIT": "`null`",
    "BANG": "`!`", "MINUS": "`-`", "QUESTION": "`?`", "$END": "the end of the condition",
    "EQ": "`==`", "NE": "`!=`", "LT": "`<`", "LE": "`<=`", "GT": "`>`", "GE": "`>=`",
    "PLUS": "`+`", "STAR": "`*`", "SLASH": "`/`", "PERCENT": "`%`", "IN": "`in`",
    "COND_AND": "`&&`", "COND_OR": "`||`",
}
_OPERAND_STARTS = {"IDENT", "INT_LIT", "UINT_LIT", "FLOAT_LIT", "STRING_LIT", "MLSTRING_LIT", "BYTES_LIT",
                   "BOOL_LIT", "NULL_LIT", "LPAR", "LSQB", "LBRACE", "BANG", "MINUS", "DOT"}


def _expected_hint(expected: set) -> str:
    """What the CEL parser wanted next, in words a policy author reads."""
    words: list[str] = []
    rest = set(expected)
    if len(rest & _OPERAND_STARTS) >= 4:
        words.append("a value (a name, a number, a string, `true`, `null`, a list `[..]`, `(`, `!` or `-`)")
        rest -= _OPERAND_STARTS
    for e in sorted(rest):
        w = _TERMINAL_NAMES.get(e)
        if w is None:
            continue  # internal terminal names help nobody
        if w not in words:
            words.append(w)
    if not words:
        return "check the condition's syntax (CEL)"
    if len(words) > 10:
        words = words[:10] + ["..."]
    return "expected " + (words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1])


def _line_col_to_offset(src: str, line: int, col: int) -> int:
    off = 0
    for _ in range(line - 1):
        j = src.find("\n", off)
        if j < 0:
            return len(src)
        off = j + 1
    return off + col - 1


# ---------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------


class CompiledExpr:
    """A compiled CEL expression. Call it with an activation (a mapping of names)."""

    __slots__ = ("source", "references", "limits", "type_guard", "reads", "_fn", "_nslots", "_needs_ctx", "_fast",
                 "_fast_source", "_gen", "_pending", "_gen_kept")

    def __init__(
        self, source: str, references: tuple[Reference, ...], limits: Limits,
        fn: Callable, nslots: int, needs_ctx: bool, gen: Callable | None = None,
        type_guard: frozenset[str] | None = None, reads: tuple[tuple[str, str | None], ...] = (),
    ) -> None:
        self.source = source
        # What the expression reads of its free variables: (variable, top-level field), the
        # field None when it may use the variable as a whole (`size(action)`,
        # `action["k"]`, `action.exists(..)`, passing it to a function...).
        self.reads = reads
        # The action types for which this condition can be anything but `false`, when the
        # condition says so itself: its first `&&` operand (or every `||` operand) is
        # `action.type == "t"` or `action.type in ["t", ...]`. With `action.type` a string
        # naming another type, the condition is `false`, with no error and nothing else
        # evaluated. None: not known (any type).
        self.type_guard = type_guard
        self._gen_kept = gen  # for ``fuse`` (the generator is consumed by ``_fast_fn``)
        self.references = references
        self.limits = limits
        self._fn = fn
        self._nslots = nslots
        self._needs_ctx = needs_ctx
        self._fast: Callable | None = None  # generated ``fast(a)`` (see _Gen), once built
        self._fast_source: str | None = None
        self._gen = gen  # its generator until built; None outside the subset
        self._pending = _FAST_WARMUP

    def __call__(self, activation: Mapping[str, Any]) -> Any:
        """Evaluate. Returns the value, or a ``CelError``; never raises."""
        fast = self._fast
        if fast is not None:
            try:
                return fast(activation)
            except Exception:  # anything unusual: the closures decide, exactly
                pass
        elif self._gen is not None:
            self._pending -= 1
            if self._pending <= 0:
                self._fast_fn()
        try:
            if self._needs_ctx:
                return self._fn(activation, [0] * self._nslots)
            return self._fn(activation, None)
        except _Fail as ex:
            return ex.err
        except Exception as ex:  # a Python error in an unusual input: still an error value
            return _to_error(ex)

    def _fast_fn(self) -> Callable | None:
        """The generated fast path, built now if it was not yet; None outside the subset."""
        gen, self._gen = self._gen, None
        if gen is not None:  # (another thread may see no fast path meanwhile: harmless)
            fast, self._fast_source = _build_fast(gen, self.limits)
            self._fast = fast
        return self._fast

    def _slow(self, activation: Mapping[str, Any]) -> Any:
        """The closures alone (the reference the fast path is tested against)."""
        try:
            if self._needs_ctx:
                return self._fn(activation, [0] * self._nslots)
            return self._fn(activation, None)
        except _Fail as ex:
            return ex.err
        except Exception as ex:
            return _to_error(ex)

    def __repr__(self) -> str:
        return f"CompiledExpr({self.source!r})"


def compile_cel(
    source: str, *, limits: Limits = DEFAULT_LIMITS, constants: Mapping[str, Any] | None = None
) -> CompiledExpr:
    """Compile CEL source text. Raises ``CelCompileError`` (offsets into ``source``).

    ``constants`` maps root names to values known at compile time (the policy's
    ``policy`` constants): a reference chain that resolves fully inside them is folded
    into a literal; one that does not is looked up in the activation at run time.
    """
    if not isinstance(source, str):
        raise CelCompileError("CEL source must be a string", 0, 0)
    if len(source) > limits.max_expression_length:
        raise CelCompileError(
            f"expression is {len(source)} characters long, more than the limit of "
            f"{limits.max_expression_length}",
            limits.max_expression_length, len(source), "split the condition into smaller rules",
        )
    if not source.strip():
        raise CelCompileError("empty expression", 0, len(source))
    deep = _bracket_depth(source, limits.max_nesting_depth)
    if deep is not None:
        off, _ = deep
        raise CelCompileError(
            f"expression nested more than {limits.max_nesting_depth} levels deep",
            off, off + 1, "simplify the expression",
        )
    try:
        try:
            tree = _parse(source)
            comp = _Compiler(source, limits, constants)
            node = comp.c(tree)
            exact = comp.exact
        except CelCompileError:
            exact = True
        if exact:
            # The tree without positions takes a subtree's span from its first and last
            # kept token; a dropped `)` or leading `.` would shift it. Errors and the rare
            # `.name` are compiled again from the tree with positions, exactly.
            tree = _parse(source, exact=True)
            comp = _Compiler(source, limits, constants)
            node = comp.c(tree)
    except RecursionError:
        raise CelCompileError(
            "expression is too deeply nested", 0, len(source), "simplify the expression"
        ) from None
    gen = node.g if node.depth <= _FAST_MAX_DEPTH else None
    reads = tuple(sorted({
        (r.path[0], comp.has_fields.get(i, r.path[1] if len(r.path) > 1 else None)) for i, r in enumerate(comp.refs)
    }, key=lambda x: (x[0], x[1] or "")))
    return CompiledExpr(source, tuple(comp.refs), limits, node.fn, comp.nslots, comp.needs_ctx, gen,
                        node.tg if not node.const else None, reads)


def to_cel_json(value: Any) -> Any:
    """Render a CEL result for JSON: RFC 3339 timestamps, "1.5s" durations, base64 bytes."""
    t = type(value)
    if value is None or t is bool or t is str or t is int:
        return value
    if t is CelUint:
        return int(value)
    if t is float:
        if value != value:
            return "NaN"
        if value in (math.inf, -math.inf):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if t is bytes or t is bytearray:
        return base64.b64encode(bytes(value)).decode("ascii")
    if t is datetime:
        return _format_timestamp(value)
    if t is timedelta:
        return _format_duration(value)
    if t is CelType:
        return value.name
    if t is CelError:
        return {"error": value.message, "budget": value.budget} if value.budget else {"error": value.message}
    if isinstance(value, Mapping):
        return {(k if type(k) is str else to_cel_json(_to_string(k)) if type(k) is not bool else ("true" if k else "false")): to_cel_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_cel_json(v) for v in value]
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return to_cel_json(float(value))
    return str(value)
