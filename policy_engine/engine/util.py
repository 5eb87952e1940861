"""Helpers every part of the engine shares: `now` (RFC 3339 by `policy_engine.timestamps`,
the one parser), messages, errors, the reversibility of an action type at a time, and the
canonical form of a principal id (`canonical_principal`: rollback's `distinct from` and
authorization's matching compare principals in it)."""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from ..compiled import CAction
from ..construct import fast
from ..limits import MAX_CLOCK_SKEW_SECONDS
from ..models import Action, DeferredTimes, EvalError, ReversibilityInfo, WorkflowState
from ..source import DEFAULT_IGNORABLE
from ..timestamps import SURROGATE_RE, UTC, fmt_ts, fmt_ts_pair, parse_ts, type_name
from ..timestamps import short as short  # re-exported: the engine's modules take their message helpers from here

_UTC = UTC
_MICROSECOND = timedelta(microseconds=1)
_SKEW = timedelta(seconds=MAX_CLOCK_SKEW_SECONDS)
_SURROGATE_RE = SURROGATE_RE


# ============================================================================ small helpers


def now_of(now: Any) -> tuple[datetime, str | None]:
    """`now` as a UTC datetime (the clock's when None), and why it is unreadable (or None)."""
    if now is None:
        return datetime.now(_UTC), None
    if type(now) is datetime and now.tzinfo is _UTC:
        return now, None
    try:
        return parse_ts(now, "`now`"), None
    except ValueError as e:
        return datetime.now(_UTC), str(e)
    except OverflowError:  # a datetime whose offset moves it out of range (year 1 at +14:00)
        return datetime.now(_UTC), "`now` is out of the representable range (0001-01-01 to 9999-12-31 in UTC)"


def after_now(t: datetime, now_dt: datetime, what: str) -> str | None:
    """Why the recorded time `t` (when something happened: an execution, a stop) cannot be
    believed at `now_dt`: it is more than `MAX_CLOCK_SKEW_SECONDS` after it. None when it
    is not: a time up to that far ahead is a difference between two clocks and stands as
    recorded (as JWT readers allow a leeway on `iat`/`nbf`). The caller fails closed on a
    problem (the window is expired, the workflow stays stopped)."""
    ahead = t - now_dt
    if ahead <= _SKEW:
        return None
    return (f"{what} {fmt_ts(t)} is after now ({fmt_ts(now_dt)}) by {_span(ahead)}, more than the "
            f"{MAX_CLOCK_SKEW_SECONDS} s allowed for clock differences: a time something happened at cannot be "
            "in the future")


def _span(d: timedelta) -> str:
    """A positive duration, roughly, for a message: `3 d`, `2 h`, `90 s`."""
    s = d.days * 86400 + d.seconds
    if s >= 2 * 86400:
        return f"{s // 86400} d"
    if s >= 2 * 3600:
        return f"{s // 3600} h"
    return f"{s} s" if not d.microseconds else f"{s + d.microseconds / 1e6:.6f} s"


_SUB_MICRO = re.compile(r"\d\d:\d\d:\d\d[.,]\d{6}(\d+)")


def window_now(now: Any, now_dt: datetime) -> datetime:
    """The time to compare with a window's end: `now_dt`, or the next microsecond when
    `now` is RFC 3339 text with digits below the microsecond that `now_dt` (truncated to
    microseconds, like every time the engine reads) dropped. `10:00:30.0000001Z` is after a
    window that ends at `10:00:30Z`, though its `now_dt` is `10:00:30Z`: rounded down, it
    would get the standard path. Never earlier than `now_dt`, so never more permissive."""
    if type(now) is str:
        m = _SUB_MICRO.search(now)
        if m is not None and m.group(1).strip("0"):
            try:
                return now_dt + _MICROSECOND
            except OverflowError:
                return now_dt
    return now_dt


def utc_now(now: Any) -> datetime | None:
    """`now` (given, not None) as the reference gate reads it (`now_of`), when that is a
    `datetime` of exact type whose tzinfo is `UTC`, what the fast lanes take: an RFC 3339
    string, a naive time, another zone's are converted (the same decision, at the same
    instant); None when `now` is unreadable or converts to anything else (the reference
    gate then decides, and says why)."""
    if type(now) is datetime and now.tzinfo is _UTC:
        return now
    try:
        dt = parse_ts(now, "`now`")
    except Exception:  # noqa: BLE001 - unreadable: the reference says why
        return None
    return dt if type(dt) is datetime and dt.tzinfo is _UTC else None


def safe_now(now: Any) -> datetime:
    try:
        return now_of(now)[0]
    except Exception:  # noqa: BLE001
        return datetime.now(_UTC)


def reversibility(ca: CAction | None, now_dt: datetime) -> ReversibilityInfo | None:
    """The action type's reversibility, with `reversible_until` for an execution at `now_dt`."""
    if ca is None or ca.reversibility is None:
        return None
    rev = ca.reversibility
    td = ca.window_td
    if td is None:
        return rev
    d = rev.__dict__.copy()
    try:
        d["reversible_until"] = fmt_ts(now_dt + td)
    except OverflowError:
        d["reversible_until"] = "9999-12-31T23:59:59Z"
    return fast(ReversibilityInfo, d)


def times(ca: CAction | None, now_dt: datetime) -> tuple[str, ReversibilityInfo | None]:
    """`(fmt_ts(now_dt), reversibility(ca, now_dt))`, the two renderings in one pass
    (`timestamps.fmt_ts_pair`): a decision's time fields when `now` is the clock's, or new."""
    if ca is None or ca.reversibility is None:
        return fmt_ts(now_dt), None
    rev = ca.reversibility
    td = ca.window_td
    if td is None:
        return fmt_ts(now_dt), rev
    try:
        ev, until = fmt_ts_pair(now_dt, td)
    except OverflowError:
        ev, until = fmt_ts(now_dt), "9999-12-31T23:59:59Z"
    d = rev.__dict__.copy()
    d["reversible_until"] = until
    return ev, fast(ReversibilityInfo, d)


class PendingTimes(DeferredTimes):
    """A decision's time fields at `now`, rendered on first read (`times`): what the fast
    lane stores for the clock's time and for a `now` seen once (see `models.DeferredTimes`)."""

    __slots__ = ("ca", "now", "base")

    def __init__(self, ca: CAction, now: datetime) -> None:
        self.ca = ca
        self.now = now
        self.base = ca.reversibility

    def resolve(self) -> tuple[str, ReversibilityInfo | None]:
        return times(self.ca, self.now)

    def texts(self) -> tuple[str, str | None]:
        ca = self.ca
        td = ca.window_td
        if ca.reversibility is None or td is None:
            return fmt_ts(self.now), None
        try:
            return fmt_ts_pair(self.now, td)
        except OverflowError:
            return fmt_ts(self.now), "9999-12-31T23:59:59Z"

    def __repr__(self) -> str:
        return "<pending times>"


def deferred_times(ca: CAction, d: dict, now_dt: datetime) -> None:
    """Set the time fields of a decision's fields `d` (its template's copy) at `now_dt`,
    deferred: `evaluated_at` and, when the type has a reversal window, `reversibility`
    (without one, the template's `reversibility` is the type's, for every `now`)."""
    pt = PendingTimes(ca, now_dt)
    d["evaluated_at"] = pt
    if ca.window_td is not None and ca.reversibility is not None:
        d["reversibility"] = pt


def internal(e: BaseException) -> str:
    try:
        text = str(e)
    except Exception:  # noqa: BLE001 - str() of a hostile exception may raise too
        text = "<unprintable>"
    return f"internal error while evaluating ({type(e).__name__}: {text[:200]}); the result fails closed"




def as_dict(value: Any) -> Any:
    """Models -> dicts (JSON-like, extras kept); everything else unchanged (no copy)."""
    if type(value) in _READ_DIRECT:  # (before isinstance: BaseModel's is an ABC's check)
        d = plain_action(value)
        return d if d is not None else value.model_dump(mode="python", by_alias=True)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="python", by_alias=True)
    return value


_SCALARS = frozenset({str, float, int, bool, type(None)})
# the input models whose fields have no alias, no serializer and no validator that stores
# anything but what it was given: `plain_action` reads them from the instance
_READ_DIRECT = (Action, WorkflowState)
_scalars_only = _SCALARS.issuperset


def plain_action(action: Action | WorkflowState) -> dict | None:
    """`action.model_dump(mode="python", by_alias=True)` of an `Action` or a `WorkflowState`
    (exactly those types, `_READ_DIRECT`) whose every value, field or extra, is a scalar of
    an exact type (str, float, int, bool, None), read from the instance: its fields
    (`__dict__`, in declaration order), then its extras in their order, the values as they
    are, as the serializer returns such a scalar. Anything else (a list, an object, a
    datetime, a str subclass, an enum, another model: what the serializer copies or
    converts, and faster than Python would walk it): None, and `model_dump` it is. About
    0.4-0.6x `model_dump`'s time."""
    d = action.__dict__.copy()
    x = action.__pydantic_extra__
    if x:
        d.update(x)
    return d if _scalars_only(map(type, d.values())) else None


def value_text(v: Any) -> str | None:
    try:
        from ..cel import to_cel_json

        s = json.dumps(to_cel_json(v), ensure_ascii=False, sort_keys=True)
    except Exception:  # noqa: BLE001 - a display helper never fails the decision
        try:
            s = repr(v)
        except Exception:  # noqa: BLE001 - e.g. an int of more than 4300 digits
            s = f"<{type(v).__name__}>"
    return s if len(s) <= 200 else s[:197] + "..."


def cond_outcome(v: Any) -> tuple[bool | None, str | None, str | None]:
    """(truth or None on error, error message, budget)."""
    if v is True:
        return True, None, None
    if v is False:
        return False, None, None
    msg = getattr(v, "message", None)
    if msg is not None and type(v).__name__ == "CelError":
        return None, msg, getattr(v, "budget", None)
    return None, f"condition returned {type_name(v)} ({value_text(v)}), not a bool", None


def err(rule: str, kind: str, message: str | None, location: str | None = None,
         budget: str | None = None) -> EvalError:
    # a condition error always has a message; `or` keeps the type honest, never drops the error
    return fast(EvalError, {"rule": rule, "kind": kind, "message": message or "error", "location": location,
                            "budget": budget})


_IGNORABLE_RE = re.compile("[" + "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in DEFAULT_IGNORABLE) + "]")
# whitespace (Unicode's, as str.isspace) and the C0/C1 controls: `rita `, `\trita` and `ri ta`
# are `rita` written another way, as `Rita` is
_BLANK_RE = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")


def canonical_principal(principal: str) -> str:
    """The form under which two spellings of one principal id are the same person: NFKC,
    case folded, default-ignorable code points removed (Unicode's NFKC_Casefold, in
    effect), then whitespace and control characters removed. Exact ids still identify
    principals; this form only keeps one person from counting twice, or approving their own
    rollback, under another spelling."""
    s = principal
    for _ in range(4):  # to a fixed point: removing a blank may let marks compose (`a \u0301`)
        t = _BLANK_RE.sub("", _IGNORABLE_RE.sub("", s))
        t = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", t).casefold())
        t = _BLANK_RE.sub("", _IGNORABLE_RE.sub("", t))
        if t == s:
            break
        s = t
    return s
