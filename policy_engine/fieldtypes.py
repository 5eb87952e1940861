"""Declared field types (`fields { ... }` of an action type, `evidence { ... }` of a stop
trigger): the type model, its text, and the run-time check of a value against it.

A leaf: the checker (language/check.py) builds these from the IR, the CEL type checker
(cel/typecheck.py) reads them, the engine checks inputs with `value_problem`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

SCALARS = ("string", "int", "double", "bool", "timestamp", "duration", "any")
CONTAINERS = ("list", "map")
TYPE_NAMES = SCALARS + CONTAINERS

# Names other languages use for ours, for "did you mean" help.
TYPE_SYNONYMS = {
    "str": "string", "text": "string", "integer": "int", "long": "int", "int64": "int",
    "float": "double", "number": "double", "decimal": "double", "boolean": "bool",
    "datetime": "timestamp", "date": "timestamp", "time": "timestamp", "timedelta": "duration",
    "array": "list", "set": "list", "dict": "map", "object": "map", "record": "map", "dyn": "any",
}


@dataclass(frozen=True, slots=True)
class FType:
    """A declared type: a scalar kind, `list` (of `item`), `map` (string keys, `item`
    values) or `object` (`fields`, in declaration order; other keys are allowed)."""

    kind: str
    item: FType | None = None
    fields: tuple[FField, ...] | None = None

    def field(self, name: str) -> FField | None:
        for f in self.fields or ():
            if f.name == name:
                return f
        return None

    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields or ())

    def describe(self) -> str:
        if self.kind == "list":
            return f"list<{self.item.describe() if self.item else 'any'}>"
        if self.kind == "map":
            return f"map<string, {self.item.describe() if self.item else 'any'}>"
        if self.kind == "object":
            return "{" + ", ".join(f.describe() for f in self.fields or ()) + "}"
        return self.kind


@dataclass(frozen=True, slots=True)
class FField:
    name: str
    type: FType
    optional: bool = False

    def describe(self) -> str:
        return f"{self.name}{'?' if self.optional else ''}: {self.type.describe()}"


ANY = FType("any")

# A duration's JSON form: CEL's duration text (`"90s"`, `"1h30m"`, what `to_cel_json` writes
# and `duration()` reads); the pattern `stopline schema` writes for a `duration` field.
DURATION_PATTERN = r"^-?([0-9]+(\.[0-9]+)?(h|m|s|ms|us|ns))+$"


def _kind_of(v: Any) -> str:
    t = type(v)
    if t is bool:
        return "bool"
    if t is int:
        return "int"
    if t is float:
        return "double"
    if t is str:
        return "string"
    if v is None:
        return "null"
    if t is datetime:
        return "timestamp" if v.tzinfo is not None else "a timestamp without a time zone (a naive datetime)"
    if t is timedelta:
        return "duration"
    if isinstance(v, Mapping):
        return "object"
    if t is list or t is tuple:
        return "list"
    return t.__name__


def _fits(kind: str, v: Any) -> bool:
    t = type(v)
    if kind == "any":
        return True
    if kind == "string":
        return t is str
    if kind == "int":
        return t is int
    if kind == "double":
        return t is float or t is int  # JSON has one number type: `100` is a double here
    if kind == "bool":
        return t is bool
    if kind == "timestamp":
        return t is datetime and v.tzinfo is not None
    if kind == "duration":
        return t is timedelta
    if kind in ("map", "object"):
        return isinstance(v, Mapping)
    if kind == "list":
        return t is list or t is tuple
    return False  # pragma: no cover - the checker refuses other kinds


def value_problem(t: FType, value: Any, path: str) -> str | None:
    """Why `value` (at `path`, e.g. `action`) does not have type `t`, or None. Never raises.

    Iterative over the value; the depth of the type bounds the work per value."""
    stack: list[tuple[FType, Any, str]] = [(t, value, path)]
    while stack:
        ft, v, where = stack.pop()
        if not _fits(ft.kind, v):
            return f"`{where}` must be {ft.describe() if ft.kind != 'object' else 'an object'}, not {_kind_of(v)}"
        if ft.kind == "object":
            for f in reversed(ft.fields or ()):
                if f.name not in v:
                    if not f.optional:
                        return f"`{where}.{f.name}` is missing (declared `{f.describe()}`)"
                    continue
                stack.append((f.type, v[f.name], f"{where}.{f.name}"))
        elif ft.kind == "list" and ft.item is not None and ft.item.kind != "any":
            for i in range(len(v) - 1, -1, -1):
                stack.append((ft.item, v[i], f"{where}[{i}]"))
        elif ft.kind == "map" and ft.item is not None:
            for k in v:
                if type(k) is not str:
                    return f"`{where}` must have string keys, not {_kind_of(k)}"
                if ft.item.kind != "any":
                    stack.append((ft.item, v[k], f"{where}[{k!r}]"))
    return None


def value_type(v: Any) -> FType:
    """The type of a constant's value (for `policy.NAME`), as far as it is uniform."""
    k = _kind_of(v)
    if k in ("bool", "int", "double", "string", "timestamp", "duration"):
        return FType(k)
    if k == "list":
        items = {value_type(x) for x in v}
        return FType("list", items.pop() if len(items) == 1 else ANY)
    if k == "object":
        items = {value_type(x) for x in v.values()}
        return FType("map", items.pop() if len(items) == 1 else ANY)
    return ANY
