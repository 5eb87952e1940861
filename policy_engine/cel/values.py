"""CEL values on plain Python values, and the operations every evaluator shares.

    null -> None      bool -> bool      int -> int        uint -> CelUint(int)
    double -> float   string -> str     bytes -> bytes    list -> list
    map -> dict       timestamp -> datetime (tz-aware)    duration -> timedelta
    type -> CelType   net.IP -> CelIP     net.CIDR -> CelCIDR
    optional(T) -> CelOptional (made only by the optional functions and `.?`/`[?`, never
    an input)

Type names and ``type()``, normalisation of unusual Python types (``_norm``), equality
(``_eq``, maps), ordering, overflow checks, arithmetic, selection, indexing, ``size`` and
``in``. Both the reference closures (compile.py) and the generated fast path (codegen.py)
call these very helpers, so the two agree by construction.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from ..limits import INT64_MAX, INT64_MIN
from .errors import _BudgetFail, _Fail

__all__ = ["CelUint", "CelType", "CelIP", "CelCIDR", "CelOptional"]

# ---------------------------------------------------------------------------
# Public value and error types
# ---------------------------------------------------------------------------

UINT64_MAX = 2**64 - 1
_DUR_MAX_US = INT64_MAX // 1000  # cel-go durations are int64 nanoseconds (~292 years)


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
        return type(other) is CelType and other.name == self.name

    def __hash__(self) -> int:
        return hash(("CelType", self.name))

    def __repr__(self) -> str:
        return f"CelType({self.name!r})"


class CelOptional:
    """A CEL optional value (cel-go's optional types): ``present`` and the ``value`` it
    holds; ``OPT_NONE`` is `optional.none()`. Selecting or indexing one selects in what it
    holds, giving an optional (see optional.py)."""

    __slots__ = ("present", "value")

    def __init__(self, present: bool, value: Any = None) -> None:
        self.present = present
        self.value = value

    def __eq__(self, other: object) -> bool:
        if type(other) is not CelOptional:
            return False
        if not (self.present and other.present):
            return self.present is other.present
        return _eq(self.value, other.value)

    __hash__ = None  # type: ignore[assignment]  # (no map key: _check_key refuses it)

    def __repr__(self) -> str:
        return f"optional.of({self.value!r})" if self.present else "optional.none()"


OPT_NONE = CelOptional(False)


# ---------------------------------------------------------------------------
# The network extension's values (cel-go ext.Network): net.IP and net.CIDR. The functions
# that make and read them are in conversions.py (`network_tables`).
# ---------------------------------------------------------------------------

Addr = ipaddress.IPv4Address | ipaddress.IPv6Address


def _unmapped(a: Addr) -> Addr:
    if a.version == 6:
        m = a.ipv4_mapped
        if m is not None:
            return m
    return a


def _addr_text(a: Addr) -> str:
    """Go's ``netip.Addr.String()``: dotted quad, RFC 5952 IPv6, ``::ffff:1.2.3.4`` mapped."""
    if a.version == 6:
        m = a.ipv4_mapped
        if m is not None:
            return f"::ffff:{m}"
        return a.compressed
    return str(a)


class CelIP:
    """A CEL ``net.IP`` value (immutable)."""

    __slots__ = ("addr", "_key")

    def __init__(self, addr: Addr) -> None:
        self.addr = addr
        u = _unmapped(addr)
        self._key = (u.version, int(u))

    def __eq__(self, other: object) -> bool:
        return type(other) is CelIP and other._key == self._key

    def __hash__(self) -> int:
        return hash(("CelIP", self._key))

    def __str__(self) -> str:
        return _addr_text(self.addr)

    def __repr__(self) -> str:
        return f"ip({str(self)!r})"


class CelCIDR:
    """A CEL ``net.CIDR`` value (immutable): an address and a prefix length, the address as
    written (``masked()`` clears its host bits)."""

    __slots__ = ("addr", "bits")

    def __init__(self, addr: Addr, bits: int) -> None:
        self.addr = addr
        self.bits = bits

    def __eq__(self, other: object) -> bool:
        return type(other) is CelCIDR and other.addr == self.addr and other.bits == self.bits

    def __hash__(self) -> int:
        return hash(("CelCIDR", self.addr, self.bits))

    def __str__(self) -> str:
        return f"{_addr_text(self.addr)}/{self.bits}"

    def __repr__(self) -> str:
        return f"cidr({str(self)!r})"


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
TYPE_NET_IP = CelType("net.IP")  # the network extension (conversions.py)
TYPE_NET_CIDR = CelType("net.CIDR")
TYPE_OPTIONAL = CelType("optional_type")

_TYPE_IDENTS: dict[str, CelType] = {
    t.name: t
    for t in (
        TYPE_INT, TYPE_UINT, TYPE_DOUBLE, TYPE_BOOL, TYPE_STRING, TYPE_BYTES, TYPE_LIST,
        TYPE_MAP, TYPE_NULL, TYPE_TYPE, TYPE_TIMESTAMP, TYPE_DURATION, TYPE_NET_IP, TYPE_NET_CIDR,
        TYPE_OPTIONAL,
    )
}


def _no_overload(op: str, *args: Any) -> _Fail:
    return _Fail(f"no such overload: {op}({', '.join(_type_name(a) for a in args)})")


# ---------------------------------------------------------------------------
# Value helpers
# ---------------------------------------------------------------------------

_NUM = (int, CelUint, float)
_NUMSET = frozenset(_NUM)


def _exact_num_const(k: Any) -> bool:
    """True when Python's `==` of any number with the constant `k` is CEL's (as double with
    a double: `_eq`): `k` is no number beyond 2^53 in size, where an int and a double that
    are not the same number may be the same double."""
    return -(2**53) < k < 2**53 or k != k or k in (math.inf, -math.inf)


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
    CelIP: TYPE_NET_IP, CelCIDR: TYPE_NET_CIDR, CelOptional: TYPE_OPTIONAL,
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
        if tx is float or ty is float:
            # as double, as `<`, `<=`, `>`, `>=` compare (deviation 6): Python's exact
            # `9007199254740993 == 9007199254740992.0` is false where both `<=` and `>=` hold
            return float(x) == float(y)
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
            if y == -1 and x == INT64_MIN:  # as cel-go: the quotient overflows, so does the remainder
                raise _Fail("return error for overflow")
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
    if type(v) is CelOptional:  # `optional.of(m).f` is `optional.of(m).?f`
        return _opt_select(v, name)
    if isinstance(v, Mapping):
        try:
            return v[name]
        except KeyError:
            raise _Fail(f"no such key: '{name}'") from None
    raise _Fail(f"type '{_type_name(v)}' does not support field selection")


def _has_field(v: Any, name: str) -> bool:
    if isinstance(v, Mapping):
        return name in v
    if type(v) is CelOptional:  # `has(o.f)`: o holds a value that has the field
        return v.present and _has_field(v.value, name)
    raise _Fail(f"type '{_type_name(v)}' does not support field selection")


def _opt_select(v: Any, name: str) -> CelOptional:
    """`v.?name`: optional.of(the field) when `v` (or what the optional `v` holds) is a map
    with that key, optional.none() when it has none (or `v` is none); else the select's error."""
    if type(v) is CelOptional:
        if not v.present:
            return OPT_NONE
        v = v.value
    if isinstance(v, Mapping):
        return CelOptional(True, v[name]) if name in v else OPT_NONE
    raise _Fail(f"no such key: '{name}' (type '{_type_name(v)}' does not support field selection)")


def _opt_index(v: Any, k: Any) -> CelOptional:
    """`v[?k]`: optional.of(the element) when the list index or map key is there,
    optional.none() when not (or `v` is none); an index of the wrong type is an error."""
    if type(v) is CelOptional:
        if not v.present:
            return OPT_NONE
        v = v.value
    tv = type(v)
    if tv is list or tv is tuple:
        i = k if type(k) is int or type(k) is CelUint else None
        if type(k) is float and k.is_integer():
            i = int(k)
        if i is None:
            raise _no_overload("_[?_]", v, k)
        return CelOptional(True, v[i]) if 0 <= i < len(v) else OPT_NONE
    if isinstance(v, Mapping):
        found, r = _map_lookup(v, k)
        return CelOptional(True, r) if found else OPT_NONE
    raise _no_overload("_[?_]", v, k)


def _index(v: Any, k: Any) -> Any:
    tv = type(v)
    if tv is CelOptional:  # `optional.of(l)[0]` is `optional.of(l)[?0]`
        return _opt_index(v, k)
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

