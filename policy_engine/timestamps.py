"""RFC 3339 timestamps and durations, once.

A leaf module (imports nothing of the package). One parser serves every reader of a timestamp:
the engine (`parse_ts`: action times, `now`, executed_at, approvals), CEL's `timestamp()` and the
test suites' `now`. Where readers accept different spellings today, the difference is an explicit
parameter, not a second parser:

- `allow_space`: the engine accepts `2026-07-02 10:00:00Z` (a space for the `T`, as RFC 3339
  section 5.6 permits); CEL's `timestamp()` follows cel-go and accepts `T`/`t` only.
- `trim_fraction` when formatting: the engine's JSON writes microseconds as six digits
  (`fmt_ts`), CEL's string conversion drops trailing zeros as cel-go does.

Durations: the policy language's reversal windows (`60s`, `15m`, `2h`, `7d`) and CEL's Go-style
durations (`1h30m`, `1.5s`, `-250ms`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from .limits import INT64_MAX

__all__ = [
    "UTC",
    "WINDOW_UNITS",
    "duration_micros",
    "fmt_ts",
    "fmt_ts_pair",
    "format_cel_duration",
    "format_micros",
    "format_micros_after",
    "format_rfc3339",
    "parse_cel_duration",
    "parse_rfc3339",
    "parse_ts",
    "parse_window",
]

UTC = timezone.utc  # noqa: UP017 (datetime.UTC is the same object; this name is the one the package imports)

# ASCII digits only ([0-9], not \d: str patterns match every Unicode digit class).
_TS_RE = re.compile(
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})([Tt ])([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_MAX_TS_CHARS = 40  # longer than any RFC 3339 timestamp (35): refused before matching


_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)
_PARSED: dict = {}  # text -> its datetime, for the texts with a `T` or `t` (valid either way)
_PARSED_MAX = 4096  # (emptied when full: a bound, not an LRU)


def parse_rfc3339(text: str, *, allow_space: bool = False) -> datetime:
    """An RFC 3339 timestamp -> tz-aware datetime in UTC; nanoseconds truncated to microseconds.

    Raises ValueError (`cannot parse timestamp ...` / `invalid timestamp ...`). `allow_space`: accept a
    space as the date/time separator (the engine does; CEL does not).

    A text parsed once is looked up afterwards (`_PARSED`, exact `str`s only): the same
    text is the same instant, and a gate reads the same timestamps over and over (an
    embargo, a `stopped_at`, the `now` a runtime sends as text); the parse costs about
    0.8 us, the lookup a hash."""
    short_str = type(text) is str and len(text) <= _MAX_TS_CHARS  # (never a long text hashed)
    if short_str:
        got = _PARSED.get(text)
        if got is not None:
            return got
    got = _parse_rfc3339(text, allow_space)
    if short_str and text[10:11] in ("T", "t"):
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[text] = got
    return got


def _parse_rfc3339(text: str, allow_space: bool) -> datetime:
    m = _TS_RE.match(text) if len(text) <= _MAX_TS_CHARS else None
    if m is None or (m.group(4) == " " and not allow_space):
        raise ValueError(f"cannot parse timestamp {text!r}")
    if m.group(5) == "24":  # some Pythons' fromisoformat read 24:00 as the next midnight; RFC 3339 does not
        raise ValueError(f"invalid timestamp {text!r}")
    # validated above; datetime.fromisoformat (C) does the arithmetic: T, Z, at most 6 digits of fraction
    norm = text if m.group(4) == "T" else f"{text[:10]}T{text[11:]}"
    if m.group(9) == "z":
        norm = norm[:-1] + "Z"
    frac = m.group(8)
    if frac is not None and len(frac) > 6:  # nanoseconds: truncated to microseconds
        cut = m.start(8) + 6
        norm = norm[:cut] + norm[m.end(8):]
    try:
        return datetime.fromisoformat(norm).astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError(f"invalid timestamp {text!r}") from None


def parse_ts(value: Any, what: str = "timestamp") -> datetime:
    """An RFC 3339 string (`T`, `t` or a space between date and time) or a datetime -> tz-aware UTC
    datetime. Naive datetimes are UTC. Raises ValueError with a message naming `what`."""
    if type(value) is datetime and value.tzinfo is None:  # (as `replace(tzinfo=UTC)`, in a tenth of its time)
        return _EPOCH_UTC + (value - _EPOCH_NAIVE)
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, str):
        try:
            return parse_rfc3339(value, allow_space=True)
        except ValueError:
            raise ValueError(
                f"{what} {short(value)} is not an RFC 3339 timestamp (e.g. 2026-07-02T10:00:00Z)") from None
    raise ValueError(f"{what} must be an RFC 3339 string, not {type_name(value)}")


SURROGATE_RE = re.compile("[\ud800-\udfff]")


def short(v: Any, limit: int = 60) -> str:
    """A value as it is shown in a message: JSON, cut at `limit`, in backticks, always
    encodable (a lone surrogate escaped). Used by the engine's messages too."""
    try:
        s = json.dumps(v, ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        s = repr(type(v))
    if not s.isascii() and SURROGATE_RE.search(s):  # keep messages encodable
        s = s.encode("utf-8", "backslashreplace").decode("utf-8")
    return "`" + (s if len(s) <= limit else s[: limit - 3] + "...") + "`"


def type_name(v: Any) -> str:
    """A value's JSON type, as a message names it ("a number", "an object", ...)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a bool"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, (list, tuple)):
        return "a list"
    if isinstance(v, Mapping):
        return "an object"
    return f"a {type(v).__name__}"


_D2 = tuple(f"{i:02d}" for i in range(100))  # "00".."99": the seconds' text without %-formatting
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# the fraction's text from its two halves: ".123" + "456Z" (the fraction is written only when non-zero)
_MS = tuple(f".{i:03d}" for i in range(1000))
_US = tuple(f"{i:03d}Z" for i in range(1000))
_SECONDS: dict[int, str] = {}  # seconds since the epoch -> "YYYY-MM-DDTHH:MM:SS" (see fmt_ts)
_SECONDS_MAX = 4096


def _second_text(t: datetime, sec: int) -> str:
    """`t`'s text to the second (`t` in UTC), kept per second: a clock and the times near
    it repeat their second thousands of times."""
    y = t.year
    if y < 1000:
        text = format_rfc3339(t.replace(microsecond=0))[:-1]
    else:
        d2 = _D2
        text = f"{y}-{d2[t.month]}-{d2[t.day]}T{d2[t.hour]}:{d2[t.minute]}:{d2[t.second]}"
    if len(_SECONDS) >= _SECONDS_MAX:
        _SECONDS.clear()
    _SECONDS[sec] = text
    return text


def fmt_ts(t: datetime) -> str:
    """RFC 3339 in UTC with a `Z` suffix; microseconds only when non-zero (six digits).

    Exactly `format_rfc3339(t)` (a property test holds it), in about a third of its time:
    the text to the second is kept per second (`_SECONDS`), the fraction is two table
    lookups. A naive `t` is UTC, as `parse_ts` reads one (not local time, as
    `datetime.astimezone` would)."""
    if t.tzinfo is not UTC:
        t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    d = t - _EPOCH  # (same tzinfo object: no offset arithmetic)
    sec = d.days * 86400 + d.seconds
    text = _SECONDS.get(sec)
    if text is None:
        text = _second_text(t, sec)
    us = d.microseconds
    if us:
        return text + _MS[us // 1000] + _US[us % 1000]
    return text + "Z"


def fmt_ts_pair(t: datetime, later: timedelta) -> tuple[str, str]:
    """`(fmt_ts(t), fmt_ts(t + later))` in one pass (a decision's `evaluated_at` and
    `reversible_until`): for a `later` of whole seconds the two share the fraction, and the
    second's text comes from the per-second cache. Raises OverflowError as `t + later` does."""
    if t.tzinfo is not UTC:
        t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    if later.microseconds:
        return fmt_ts(t), fmt_ts(t + later)
    d = t - _EPOCH
    sec = d.days * 86400 + d.seconds
    us = d.microseconds
    frac = _MS[us // 1000] + _US[us % 1000] if us else "Z"
    text = _SECONDS.get(sec)
    if text is None:
        text = _second_text(t, sec)
    sec2 = sec + later.days * 86400 + later.seconds
    text2 = _SECONDS.get(sec2)
    if text2 is None:
        text2 = _second_text(t + later, sec2)
    return text + frac, text2 + frac


MAX_MICROS_TEXT = "9999-12-31T23:59:59.999999Z"  # the latest time `format_micros` writes


def format_micros(t: datetime) -> str:
    """RFC 3339 in UTC with six fraction digits and a `Z`, the form the ledger and the
    runtime record times in: `t` is timezone-aware (converted to UTC). `strftime("%Y")`
    leaves a year before 1000 unpadded (`999-05-01...`, which no RFC 3339 reader takes):
    here the year always has four digits."""
    u = t.astimezone(UTC)
    text = u.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return text if u.year >= 1000 else f"{u.year:04d}{text[text.index('-'):]}"


def format_micros_after(t: datetime, later: timedelta) -> str:
    """`format_micros(t + later)`, or `MAX_MICROS_TEXT` when that is past year 9999 (an
    expiry that far off: the latest time there is, as a reversal window's end is)."""
    try:
        return format_micros(t + later)
    except OverflowError:
        return MAX_MICROS_TEXT


def format_rfc3339(t: datetime, *, trim_fraction: bool = False) -> str:
    """RFC 3339 in UTC with a `Z`; the fraction only when non-zero: six digits, or without trailing
    zeros when `trim_fraction` (CEL's string conversion). A naive `t` is UTC (see `fmt_ts`)."""
    t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    base = f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
    if t.microsecond:
        frac = f".{t.microsecond:06d}"
        base += frac.rstrip("0") if trim_fraction else frac
    return base + "Z"


# --- durations -----------------------------------------------------------------------------

WINDOW_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}  # units of a reversal window


def parse_window(text: str) -> int:
    """A policy window as written (`<digits><unit>`, unit in WINDOW_UNITS; the grammar guarantees
    the form) -> seconds. Huge digit strings give a huge number (callers bound it), never an error."""
    digits = text[:-1].lstrip("0") or "0"
    amount = int(digits) if len(digits) <= 19 else 10**19  # int() refuses > 4300 digits
    return amount * WINDOW_UNITS[text[-1]]


_DUR_RE = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_DUR_UNITS_US = {
    "ns": 0.001, "us": 1, "µs": 1, "μs": 1, "ms": 1000, "s": 1_000_000,
    "m": 60_000_000, "h": 3_600_000_000,
}
_DUR_MAX_US = INT64_MAX // 1000  # cel-go durations are int64 nanoseconds (~292 years)


def parse_cel_duration(s: str) -> timedelta:
    """A Go-style duration (`1h30m`, `1.5s`, `-250ms`, `0`) -> timedelta (microsecond precision).
    Raises ValueError: `invalid duration '...'` or `range error: duration out of range`."""
    body = s
    sign = 1
    if body[:1] in ("-", "+"):
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return timedelta(0)
    if not body:
        raise ValueError(f"invalid duration {s!r}")
    pos = 0
    total_us = 0.0
    total_exact = 0
    for m in _DUR_RE.finditer(body):
        if m.start() != pos or m.group(1) in ("", "."):
            raise ValueError(f"invalid duration {s!r}")
        pos = m.end()
        num, unit = m.group(1), m.group(2)
        scale = _DUR_UNITS_US[unit]
        if "." in num or unit == "ns":
            total_us += float(num) * scale
        else:
            total_exact += int(num) * int(scale)
    if pos != len(body):
        raise ValueError(f"invalid duration {s!r}")
    us = sign * (total_exact + int(total_us))
    if abs(us) > _DUR_MAX_US:
        raise ValueError("range error: duration out of range")
    return timedelta(microseconds=us)


def duration_micros(d: timedelta) -> int:
    """A timedelta as whole microseconds."""
    return (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds


def format_cel_duration(d: timedelta) -> str:
    """A duration as CEL writes it: seconds with the fraction's trailing zeros dropped (`1.5s`)."""
    us = duration_micros(d)
    sign = "-" if us < 0 else ""
    s, frac = divmod(abs(us), 1_000_000)
    if frac:
        return f"{sign}{s}.{frac:06d}".rstrip("0") + "s"
    return f"{sign}{s}s"
