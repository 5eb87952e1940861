"""CEL timestamps and durations: parsing, formatting, time zones, the accessors.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Callable

from .errors import _Fail
from .values import _DUR_MAX_US, _no_overload

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


