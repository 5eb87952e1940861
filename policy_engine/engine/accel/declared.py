"""Declared fields in the fused gate function: an action type that declares its fields
(`fields { ... }`) has every action checked against them before any condition
(`inputs.declared_problem`, by `fieldtypes.value_problem`: a generic walk of the type, about
3 us for a type of ten fields, two to three times the rest of the decision). Here the
check is unrolled into the type's fused gate function (`declared_lines`): one type test
per declared field, the object and list items walked by generated loops. An action that
fails any test makes the function fall back (`_fb()`), and the reference gate decides it
and says why, with `value_problem`'s message; an action that passes every test is one
`value_problem` passes, so the fused function may decide it, and the type takes the
engine's quick path like any other (`lanes.Accelerator.quick`).

The tests are those of `fieldtypes._fits`, made stricter only where the generic check
accepts a Mapping or a tuple that is not a dict or a list: such an action falls back
(decided exactly, slower). `ENABLED = False` (before an engine is loaded) restores the
generic check on every call."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from ...fieldtypes import FType
from .shapes import _Missing

__all__ = ["ENABLED", "declared_lines"]

ENABLED = True  # False: a type with declared fields is checked by `value_problem` on every call

# the plain types whose shape, once a fused function's prologue proved it (a field of one
# shape, see `shapes.lane_prologue`), proves the declared scalar kind too
_PROVES = {"string": (str,), "int": (int,), "double": (float, int), "bool": (bool,), "duration": (timedelta,)}
# (a timestamp is not proven by its shape: the declared kind wants a time zone as well)


def _proves(ft: FType, tag: Any, optional: bool) -> bool:
    """Whether a field the prologue proved of the one shape `tag` (see `shapes._tag`) is
    surely of the declared type `ft` (`optional`: it may be absent)."""
    kind = ft.kind
    if kind == "any":
        return True
    if tag is _Missing:
        return optional
    if isinstance(tag, type):
        return tag in _PROVES.get(kind, ())
    if type(tag) is not tuple:  # pragma: no cover - no other tags
        return False
    if tag[0] == "dict":  # a flat object: exactly these keys, each of this plain type
        items = dict(tag[1])
        if kind == "map":  # (the keys: exact `str`s, the prologue proved)
            return ft.item is None or all(_proves(ft.item, t, False) for t in items.values())
        if kind != "object":
            return False
        for f in ft.fields or ():
            if f.name in items:
                if not _proves(f.type, items[f.name], f.optional):
                    return False
            elif not f.optional:
                return False
        return True
    if tag[0] == "list" and kind == "list":  # a list of one item shape (empty: checked as strings)
        return ft.item is None or _proves(ft.item, str if tag[1] is None else tag[1], False)
    return False


def declared_lines(t: FType, shapes: Mapping | None = None, reads: tuple | None = None) -> tuple[list, dict]:
    """Source lines (at the fused function's top level, the action in `_p0`, a plain dict)
    that fall back (`_fb()`) unless `value_problem(t, action, "action")` is None, and their
    globals. `shapes` and `reads` are those the function's prologue was built from: a
    field it proves of one plain type that fits the declared kind is not tested again."""
    lines: list = []
    names = iter(range(1 << 30))
    proven = {k: next(iter(seen)) for k, seen in (shapes or {}).items()
              if reads is not None and k in reads and seen is not None and len(seen) == 1}

    def check(ft: FType, x: str, ind: str) -> None:
        kind = ft.kind
        if kind == "any":
            return
        if kind == "string":
            lines.append(f"{ind}if type({x}) is not str: _fb()")
        elif kind == "int":
            lines.append(f"{ind}if type({x}) is not int: _fb()")
        elif kind == "double":  # JSON has one number type: an int is a double here
            lines.append(f"{ind}if type({x}) is not float and type({x}) is not int: _fb()")
        elif kind == "bool":
            lines.append(f"{ind}if type({x}) is not bool: _fb()")
        elif kind == "timestamp":
            lines.append(f"{ind}if type({x}) is not _DT or {x}.tzinfo is None: _fb()")
        elif kind == "duration":
            lines.append(f"{ind}if type({x}) is not _TD: _fb()")
        elif kind == "object":
            lines.append(f"{ind}if type({x}) is not dict: _fb()")
            for f in ft.fields or ():
                if x == "_p0" and f.name in proven and _proves(f.type, proven[f.name], f.optional):
                    continue  # the prologue proved it (present and of this shape, or it raised)
                v = f"_d{next(names)}"
                lines.append(f"{ind}{v} = {x}.get({f.name!r}, _MISS)")
                if f.optional:
                    at = len(lines)
                    lines.append(f"{ind}if {v} is not _MISS:")
                    check(f.type, v, ind + "    ")
                    if len(lines) == at + 1:  # nothing to test: any value
                        lines.pop()
                else:
                    lines.append(f"{ind}if {v} is _MISS: _fb()")
                    check(f.type, v, ind)
        elif kind == "map":
            lines.append(f"{ind}if type({x}) is not dict: _fb()")
            if ft.item is not None:  # (value_problem checks the keys of a map of a declared item alone)
                v = f"_d{next(names)}"
                lines.append(f"{ind}for _dk, {v} in {x}.items():")
                lines.append(f"{ind}    if type(_dk) is not str: _fb()")
                check(ft.item, v, ind + "    ")
        elif kind == "list":
            lines.append(f"{ind}if type({x}) is not list: _fb()")
            if ft.item is not None and ft.item.kind != "any":
                v = f"_d{next(names)}"
                at = len(lines)
                lines.append(f"{ind}for {v} in {x}:")
                check(ft.item, v, ind + "    ")
                if len(lines) == at + 1:  # pragma: no cover - an item of kind any is skipped above
                    lines.pop()
        else:  # a kind this file does not know: the generic check, always
            lines.append(f"{ind}_fb()")

    check(t, "_p0", "")
    ns: dict[str, Any] = {"_DT": datetime, "_TD": timedelta}
    return lines, ns
