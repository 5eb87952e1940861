"""CEL optional values (cel-go's optional types): the functions, and the `.?` / `[?` syntax.

`optional.of(x)`, `optional.none()`, `optional.ofNonZeroValue(x)`; the methods
`.hasValue()`, `.value()`, `.orValue(d)`, `.or(o)`; `x.?f` and `x[?k]` (an optional of the
field or element, none when it is absent); `type(o) == optional_type`. The values are
``CelOptional`` (values.py), where selection and indexing of an optional live.

cel-python's grammar has no `?` selection: ``optional_markers`` finds each `.?`, `[?` and
optional entry (`[?x]`, `{?k: v}`) in the source and the text is parsed with the `?`
blanked out (same length, so every offset stays); ``mark_optional`` then renames the
nodes they selected (`member_dot_opt`, `member_index_opt`) and wraps an optional entry
(its element, its key) in an `opt_entry` node. A `?` that selects nothing is refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from .errors import CelCompileError, _Fail
from .values import OPT_NONE, CelOptional, _check_key, _fmt_key, _map_lookup, _no_overload

# ---------------------------------------------------------------------------
# The functions
# ---------------------------------------------------------------------------


def _of(v: Any) -> CelOptional:
    return CelOptional(True, v)


def _none() -> CelOptional:
    return OPT_NONE


def _is_zero(v: Any) -> bool:
    if v is None or v is False:
        return True
    t = type(v)
    if t is int or t is float or t is str or t is bytes or t is list or t is dict or t is tuple:
        return not v
    if t is timedelta:
        return v == timedelta(0)
    if t is datetime:  # (cel-go: Go's zero time, 0001-01-01T00:00:00Z)
        return v.year == 1 and v.month == 1 and v.day == 1 and v.hour == v.minute == v.second == 0 \
            and v.microsecond == 0
    if isinstance(v, int):  # (a uint)
        return not v
    if t is CelOptional:
        return not v.present
    if isinstance(v, Mapping):
        return not v
    return False


def _of_non_zero(v: Any) -> CelOptional:
    return OPT_NONE if _is_zero(v) else CelOptional(True, v)


def _opt(v: Any, name: str) -> CelOptional:
    if type(v) is not CelOptional:
        raise _no_overload(name, v)
    return v


def _has_value(o: Any) -> bool:
    return _opt(o, "hasValue").present


def _value(o: Any) -> Any:
    o = _opt(o, "value")
    if not o.present:
        raise _Fail("optional.none() dereference")
    return o.value


def _or_value(o: Any, d: Any) -> Any:
    o = _opt(o, "orValue")
    return o.value if o.present else d


def _or(o: Any, p: Any) -> CelOptional:
    o = _opt(o, "or")
    if o.present:
        return o
    return _opt(p, "or")


def optional_tables() -> tuple[dict[str, Callable], dict[str, Callable]]:
    """(global functions, methods) of the optional types, for builtins.py."""
    return (
        {"optional.of": _of, "optional.none": _none, "optional.ofNonZeroValue": _of_non_zero},
        {"hasValue": _has_value, "value": _value, "orValue": _or_value, "or": _or},
    )


def list_with_entries(items: tuple[tuple[Callable, bool], ...]) -> Callable:
    """A list literal's closure with optional entries (`[a, ?o]`): an entry whose optional
    is none is left out."""

    def lst(a: Any, c: Any) -> Any:
        out = []
        for F, opt in items:
            v = F(a, c)
            if opt:
                if type(v) is not CelOptional:
                    raise _no_overload("[?_]", v)
                if not v.present:
                    continue
                v = v.value
            out.append(v)
        return out

    return lst


def map_with_entries(items: tuple[tuple[Callable, Callable, bool], ...]) -> Callable:
    """A map literal's closure with optional entries (`{?k: o}`): an entry whose optional
    is none is left out."""

    def mp(a: Any, c: Any) -> Any:
        out: dict = {}
        for K, V, opt in items:
            k = _check_key(K(a, c))
            if _map_lookup(out, k)[0] or (k in out):
                raise _Fail(f"Failed with repeated key: {_fmt_key(k)}")
            v = V(a, c)
            if opt:
                if type(v) is not CelOptional:
                    raise _no_overload("{?_: _}", v)
                if not v.present:
                    continue
                v = v.value
            out[k] = v
        return out

    return mp


# ---------------------------------------------------------------------------
# The syntax: `x.?f`, `x[?k]`, `[?x]`, `{?k: v}`
# ---------------------------------------------------------------------------

Markers = tuple[dict[int, int], dict[int, int], dict[tuple[int, int], int]]


def _next_token(source: str, i: int) -> int:
    while i < len(source) and source[i] in " \t\r\n":
        i += 1
    return i


MAYBE = re.compile(r"[.\[{,][ \t\r\n]*\?")  # (no match: no marker; a ternary's `?` follows an operand)


def skip_literal(source: str, i: int) -> int | None:
    """Where a `//` comment or a string literal starting at ``i`` ends (the offset after it:
    a comment ends at its line's end, an unclosed string at its line's end or the source's),
    or None when none starts there. A backslash escapes the next character, in a raw string
    too, as in cel.lark's lexer (the marker scan here and ``parse._quoted_fields`` skip
    literals alike)."""
    ch, n = source[i], len(source)
    if ch == "/" and source.startswith("//", i):
        j = source.find("\n", i)
        return n if j < 0 else j
    if ch not in "\"'":
        return None
    q = source[i : i + 3] if source[i : i + 3] in ('"""', "'''") else ch
    j = i + len(q)
    while j < n and not source.startswith(q, j):
        if len(q) == 1 and source[j] == "\n":
            break
        j += 2 if source[j] == "\\" else 1
    return j + len(q)


def optional_markers(source: str) -> Markers:
    """The `?` of each `.?`, `[?` and optional entry in ``source`` (outside strings and
    comments), as ({offset of the name after `.?`: offset of `?`}, {offset of the `]`
    closing `[?`: its `?`}, {(offset of the `[` or `{`, the entry's index): the `?` of an
    entry of a list or map literal}) (a `[?` is in both: an index or a list's first entry)."""
    dots: dict[int, int] = {}
    closes: dict[int, int] = {}
    entries: dict[tuple[int, int], int] = {}
    stack: list[list] = []  # [open bracket, offset of its `?` or -1, its offset, commas seen]
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        end = skip_literal(source, i)
        if end is not None:
            i = end
            continue
        if ch in "([{":
            stack.append([ch, -1, i, 0])
        elif ch in ")]}":
            if stack:
                op, q, _, _ = stack.pop()
                if ch == "]" and q >= 0:
                    closes[i] = q
        elif ch == "?":
            before = source[:i].rstrip(" \t\r\n")
            prev = before[-1:]
            if prev == ".":
                dots[_next_token(source, i + 1)] = i
            elif prev == "[" and stack and stack[-1][:2] == ["[", -1]:
                stack[-1][1] = i
                entries[(stack[-1][2], 0)] = i
            elif prev in ",{" and stack and stack[-1][0] in "[{":
                entries[(stack[-1][2], stack[-1][3])] = i
        elif ch == "," and stack:
            stack[-1][3] += 1
        i += 1
    return dots, closes, entries


def blank_markers(source: str, dots: dict[int, int], closes: dict[int, int],
                  entries: dict[tuple[int, int], int]) -> str:
    """``source`` with the `?` of each marker replaced by a space (offsets unchanged)."""
    chars = list(source)
    for q in list(dots.values()) + list(closes.values()) + list(entries.values()):
        chars[q] = " "
    return "".join(chars)


def mark_optional(source: str, tree: Any, dots: dict[int, int], closes: dict[int, int],
                  entries: dict[tuple[int, int], int],
                  span: Callable[[Any, int], tuple[int, int]]) -> None:
    """Rename the nodes the markers select: `member_dot` -> `member_dot_opt`,
    `member_index` -> `member_index_opt`; wrap an optional entry's element (list) or key
    (map) in an `opt_entry` node. A marker that selects nothing (`x.?f()`, `f(?x)`, a
    leading `.?x`) is refused at its `?`."""
    from lark import Tree

    n = len(source)
    claimed: set[int] = set()
    for node in list(tree.iter_subtrees()):
        d = node.data
        if d in ("member_dot", "member_dot_arg") and len(node.children) > 1:
            q = dots.get(getattr(node.children[1], "start_pos", -2))
            if q is None:
                continue
            if d == "member_dot_arg":
                raise CelCompileError("`.?` selects a field: it cannot call a method", q, q + 1,
                                      "call the method without `?`: `x.?f.orValue(d).size()`")
            node.data = "member_dot_opt"
            claimed.add(q)
        elif d == "member_index":
            q = closes.get(span(node, n)[1] - 1)
            if q is not None:
                node.data = "member_index_opt"
                claimed.add(q)
        elif d in ("list_lit", "map_lit") and node.children:
            items = node.children[0].children
            start, step = span(node, n)[0], 1 if d == "list_lit" else 2  # (a map: its keys)
            for i in range(0, len(items), step):
                q = entries.get((start, i // step))
                if q is not None:
                    items[i] = Tree("opt_entry", [items[i]])
                    claimed.add(q)
    for q in sorted((set(dots.values()) | set(closes.values()) | set(entries.values())) - claimed):
        raise CelCompileError("unexpected `?`", q, q + 1,
                              "`?` makes an optional selection or entry: `x.?f`, `x[?k]`, `[?o]`, `{?k: o}`")
