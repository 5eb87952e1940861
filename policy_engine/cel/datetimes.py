"""CEL timestamps and durations: parsing, formatting, time zones, the accessors."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

from ..timestamps import (
    duration_micros,
    format_cel_duration,
    format_rfc3339,
    parse_cel_duration,
    parse_rfc3339,
)
from .errors import _Fail
from .values import _no_overload

# Parsing and formatting are policy_engine.timestamps' (one RFC 3339 parser for the package);
# here they take CEL's shape: errors are _Fail values with cel-go's messages.

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _parse_timestamp(s: str) -> datetime:
    """cel-go's timestamp(string): RFC 3339 with `T`/`t` (no space), ASCII digits,
    nanoseconds truncated to microseconds; the result in UTC."""
    try:
        return parse_rfc3339(s)
    except ValueError as ex:
        # parse_rfc3339 says `invalid timestamp` for a well-formed text naming no instant
        # (month 13, an offset out of range), `cannot parse timestamp` for any other text
        kind = "invalid timestamp" if str(ex).startswith("invalid timestamp") else "cannot parse timestamp"
        raise _Fail(f"range error: {kind} {s!r}") from None


def _parse_duration(s: str) -> timedelta:
    """cel-go's duration(string): `1h30m`, `1.5s`, `-250ms`, `0`."""
    try:
        return parse_cel_duration(s)
    except ValueError as ex:
        raise _Fail(str(ex)) from None


_dur_micros = duration_micros
_format_duration = format_cel_duration


def _format_timestamp(t: datetime) -> str:
    return format_rfc3339(t, trim_fraction=True)


_TZ_OFFSET_RE = re.compile(r"^([+-])?(\d{1,2}):(\d{2})$")


@lru_cache(maxsize=64)
def _tz(name: str) -> Any:
    m = _TZ_OFFSET_RE.match(name)
    if m:
        sign = -1 if m.group(1) == "-" else 1
        return timezone(sign * timedelta(hours=int(m.group(2)), minutes=int(m.group(3))))
    if name == "UTC":
        return UTC
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def _in_tz(t: datetime, args: tuple) -> datetime:
    if not args:
        return t.astimezone(UTC)
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


