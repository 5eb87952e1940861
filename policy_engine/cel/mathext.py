"""The math extension (cel-go ext.Math): greatest/least, rounding, bit operations, sqrt...
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .errors import _Fail
from .values import _NUMSET, UINT64_MAX, CelUint, _no_overload, _ovf_int

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



