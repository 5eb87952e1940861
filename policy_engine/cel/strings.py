"""The string extension (cel-go ext.Strings): charAt, indexOf, replace, split, join, quote...
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

from .errors import _BudgetFail, _Fail
from .values import _no_overload, _Sizes

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


_UNICODE_WS = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)


def _trim(s: Any) -> str:
    _req(str, s, "trim")
    return s.strip(_UNICODE_WS)


# `lowerAscii` / `upperAscii` change the ASCII letters alone. An ASCII string: `str.lower`
# and `str.upper` (they change nothing else there). Any other: its UTF-8 bytes mapped and
# decoded again (no byte of a multi-byte sequence is an ASCII letter; `surrogatepass`
# keeps a lone surrogate as it was). All in C: a loop in Python over each character cost
# about 40 ns a character, 0.17 s for a field of 4 million (the input limit), per call.
_TO_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")
_TO_UPPER = bytes.maketrans(b"abcdefghijklmnopqrstuvwxyz", b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _lower_ascii(s: Any) -> str:
    _req(str, s, "lowerAscii")
    if s.isascii():
        return s.lower()
    return s.encode("utf-8", "surrogatepass").translate(_TO_LOWER).decode("utf-8", "surrogatepass")


def _upper_ascii(s: Any) -> str:
    _req(str, s, "upperAscii")
    if s.isascii():
        return s.upper()
    return s.encode("utf-8", "surrogatepass").translate(_TO_UPPER).decode("utf-8", "surrogatepass")


def _make_replace(sizes: _Sizes) -> Callable:
    def replace(s: Any, old: Any, new: Any, *n: Any) -> str:
        if (
            type(s) is not str
            or type(old) is not str
            or type(new) is not str
            or len(n) > 1
            or (n and type(n[0]) is not int)
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
        total = 0
        for e in lst:
            if type(e) is not str:
                raise _no_overload("join", lst, *sep)
            total += len(e)
        glue = sep[0] if sep else ""
        if lst:
            total += len(glue) * (len(lst) - 1)
        if total > sizes.max_size:  # weighed before it is built (100,000 strings of a million: 100 GB)
            raise _BudgetFail(f"result of size {total} exceeds max_size {sizes.max_size}", "max_size")
        return glue.join(lst)

    return join


def _reverse(s: Any) -> str:
    _req(str, s, "reverse")
    return s[::-1]


# strings.quote: the escapes, backslash first (the others' replacements hold one); lone
# surrogates (which no UTF-8 text holds) become U+FFFD. All in C: str.replace per escape
# present and one regex substitution when a surrogate is, where a loop in Python over each
# character cost 0.2 s for a field of 4 million characters, per call and condition.
_QUOTE_ESC = (("\\", "\\\\"), ('"', '\\"'), ("\a", "\\a"), ("\b", "\\b"), ("\f", "\\f"),
              ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"), ("\v", "\\v"))
_QUOTE_SUR = re.compile("[\ud800-\udfff]")


def _quote(s: Any) -> str:
    _req(str, s, "strings.quote")
    if not s.isascii() and _QUOTE_SUR.search(s) is not None:
        s = _QUOTE_SUR.sub("\ufffd", s)
    for c, e in _QUOTE_ESC:
        if c in s:
            s = s.replace(c, e)
    return '"' + s + '"'


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
