"""CEL's conversion functions: int(), uint(), double(), string(), bytes(), bool(), timestamp(), duration().
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from typing import Any

from .datetimes import (
    _EPOCH,
    _format_duration,
    _format_timestamp,
    _parse_duration,
    _parse_timestamp,
)
from .errors import _Fail
from .values import (
    _PYTYPE_TO_CEL,
    INT64_MAX,
    INT64_MIN,
    UINT64_MAX,
    CelUint,
    _check_dur,
    _no_overload,
    _norm,
)

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



