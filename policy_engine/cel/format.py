"""string.format (cel-go ext.Strings): the verbs %s %d %f %e %x %o %b.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from .conversions import _format_double, _to_string
from .errors import _BudgetFail, _Fail
from .values import CelType, CelUint, _no_overload, _Sizes, _type_name

# ---------------------------------------------------------------------------
# Function tables
# ---------------------------------------------------------------------------


def _fmt_nonfinite(x: float) -> str | None:
    if x != x:
        return "NaN"
    if x in (math.inf, -math.inf):
        return "Infinity" if x > 0 else "-Infinity"
    return None


class _TooLong(Exception):
    """A `%s` text outgrew the room left in the result (see `_fmt_s`)."""


def _fmt_s(v: Any, room: int | None = None) -> str:
    """``%s`` of the strings extension's ``format``: ``string()``'s text for scalars,
    lists as ``[a, b]``, maps as ``{k: v}`` sorted by the keys' text. With `room`: raises
    `_TooLong` as soon as the text would be longer (a list of a thousand strings of a
    million characters is not built first and measured after)."""
    out = _fmt_s_text(v, room)
    if room is not None and len(out) > room:
        raise _TooLong
    return out


def _fmt_s_text(v: Any, room: int | None) -> str:
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
        return "[" + ", ".join(_parts((_fmt_s(x, room) for x in v), room)) + "]"
    if isinstance(v, Mapping):
        pairs = ((_fmt_s(k, room), x) for k, x in v.items())
        items = sorted(_pairs(pairs, room))
        return "{" + ", ".join(f"{k}: {x}" for k, x in items) + "}"
    if t in (bool, int, CelUint, bytes, datetime, timedelta):
        return _to_string(v)
    raise _Fail("error during formatting: string clause can only be used on strings, bools, bytes, ints, "
                f"doubles, maps, lists, types, durations, and timestamps, was given {_type_name(v)}")


def _parts(texts: Any, room: int | None) -> list[str]:
    """The texts, stopping with `_TooLong` once they and their `, ` outgrow `room`."""
    out: list[str] = []
    used = 2  # the brackets
    for p in texts:
        out.append(p)
        used += len(p) + 2
        if room is not None and used > room + 2:
            raise _TooLong
    return out


def _pairs(pairs: Any, room: int | None) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    used = 2
    for k, x in pairs:
        xs = _fmt_s(x, room)
        out.append((k, xs))
        used += len(k) + len(xs) + 4
        if room is not None and used > room + 2:
            raise _TooLong
    return out


def _fmt_clause(verb: str, prec: int | None, v: Any, room: int | None = None) -> str:
    t = type(v)
    is_int = t is int or t is CelUint
    if verb == "s":
        return _fmt_s(v, room)
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
        raise _Fail(
            f"error during formatting: only integers and bools can be formatted as binary, was given {_type_name(v)}"
        )
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
        raise _Fail(
            "error during formatting: only integers, byte buffers, and strings can be formatted as hex, "
            f"was given {_type_name(v)}"
        )
    return out.upper() if verb == "X" else out


def _finite_number(v: Any) -> bool:
    """An int, a uint or a finite double: what `%.Nf` / `%.Ne` print with N digits after the point
    (NaN and the infinities print as words, whatever the precision)."""
    t = type(v)
    return t is int or t is CelUint or (t is float and math.isfinite(v))


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
                prec = int(s[k + 1 : m])
                k = m
            verb = s[k : k + 1]
            if verb == "%" and prec is None:
                out.append("%")
            elif verb and verb in "sdfeboxX":
                if prec is not None and verb not in "fe":
                    raise _Fail(
                        f"could not parse formatting clause: precision is only allowed for %f and %e, not %{verb}"
                    )
                if n >= len(args):
                    raise _Fail(f"index {n} out of range")
                if prec is not None and size + prec + 2 > sizes.max_size and _finite_number(args[n]):
                    # refused before formatting: `%.1000000000f` would build a gigabyte of digits first
                    raise _BudgetFail(f"result of size at least {size + prec + 2} exceeds max_size {sizes.max_size}",
                                      "max_size")
                try:
                    piece = _fmt_clause(verb, prec, args[n], sizes.max_size - size)
                except _TooLong:
                    raise _BudgetFail(f"result of format exceeds max_size {sizes.max_size}", "max_size") from None
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
