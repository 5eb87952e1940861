"""The toolkit of generated code: ``_Gen`` collects the statements, temporaries and bound
values of one generated function; the globals every generated function runs with (the
value helpers of values.py, type sets, ``_fb()`` to fall back). Used by codegen.py and
fuse.py only: part of the fast path, not of the meaning.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .values import _contains_in, _eq, _ge, _gt, _index, _le, _lt, _neg

_FAST_MAX_LIST = 1000  # comprehension ranges longer than this go to the closures (budgets)


class _FastFallback(Exception):
    """Raised by generated code: evaluate this input with the closures."""


def _fb() -> Any:
    raise _FastFallback


_NONE_T = type(None)
# types for which `x == y` (same type) is exactly `_eq(x, y)`
_FAST_SCALARS = frozenset({str, int, float, bool, _NONE_T, bytes})
# plain types: Python `==` between one of these and a str is False unless both are str
_FAST_PLAIN = frozenset({str, bytes, int, float, bool, _NONE_T, list, dict, tuple})
_FAST_NUM = frozenset({int, float})
_FAST_ORD = frozenset({int, float, str})
_FAST_SIZED = frozenset({list, str, dict, bytes})

_FAST_GLOBALS: dict[str, Any] = {
    "type": type, "len": len, "float": float, "int": int, "str": str, "bool": bool,
    "bytes": bytes, "list": list, "dict": dict,
    "_fb": _fb, "_FB": _FastFallback, "_eq": _eq, "_lt": _lt, "_le": _le, "_gt": _gt,
    "_ge": _ge, "_contains_in": _contains_in, "_index": _index, "_neg": _neg,
    "_SCALARS": _FAST_SCALARS, "_PLAIN": _FAST_PLAIN, "_NUM": _FAST_NUM, "_ORD": _FAST_ORD,
    "_SIZED": _FAST_SIZED,
}
_FAST_CMP = {"relation_lt": ("<", "_lt"), "relation_le": ("<=", "_le"),
             "relation_gt": (">", "_gt"), "relation_ge": (">=", "_ge")}


class _Gen:
    """Collects the generated statements, temporaries and bound values of one ``fast``."""

    def __init__(self, maxit: int) -> None:
        self.lines: list[tuple[int, str]] = []  # (relative indentation, text)
        self.ind = 0
        self.ntmp = 0
        self.ns: dict[str, Any] = {}
        self.byid: dict[int, str] = {}
        self.atoms: set[str] = set()  # names and literals: cheap to repeat, no side effects
        self.maxit = maxit
        self.loops = False
        self.roots: dict[str, list] = {}  # free variable -> [local name, guarded as a dict]
        self.dotted: dict[str, None] = {}  # activation keys that would resolve a chain
        # (variable, field) -> a local the prologue set to the field's value, or to _MISS
        # if absent; and (variable, field) -> the repr of a str the field is known to hold
        # (a key (variable, field, key) is a key of a field the prologue proved an object)
        self.fields: dict[tuple[str, ...], tuple[str, str | None, bool]] = {}
        self.known: dict[tuple[str, str], str] = {}
        # a local the prologue proved a list of items of one kind (a list of strings: "str"),
        # and the kind of a macro's variable while its body is generated over such a list
        self.items: dict[str, str] = {}
        self.local_kinds: dict[str, str | None] = {}

    def root(self, name: str, as_dict: bool) -> tuple[str, str | None]:
        """A free variable, looked up once in the prologue (a missing one falls back)."""
        r = self.roots.get(name)
        if r is None:
            r = self.roots[name] = [f"_r{len(self.roots)}", False]
            self.atoms.add(r[0])
        if as_dict:
            r[1] = True  # the prologue checks it is a dict
        return r[0], "dict" if as_dict else None

    def tmp(self) -> str:
        self.ntmp += 1
        name = f"_t{self.ntmp}"
        self.atoms.add(name)
        return name

    def emit(self, line: str) -> None:
        self.lines.append((self.ind, line))

    def bind(self, value: Any) -> str:
        """A global name for a value (never pasted into the source)."""
        name = self.byid.get(id(value))
        if name is None:
            name = f"_k{len(self.ns)}"
            self.ns[name] = value
            self.byid[id(value)] = name
            self.atoms.add(name)
        return name

    def lit(self, text: str) -> str:
        self.atoms.add(text)
        return text

    def is_literal(self, e: str) -> bool:
        return e in self.atoms and (not e.isidentifier() or e in ("True", "False", "None"))

    def sub(self, g: Callable) -> tuple[tuple[str, str | None], list[tuple[int, str]]]:
        """Run a generator into a fresh statement list (to place it under a condition)."""
        saved, ind = self.lines, self.ind
        self.lines, self.ind = [], 0
        try:
            return g(self), self.lines
        finally:
            self.lines, self.ind = saved, ind

    def splice(self, lines: list[tuple[int, str]]) -> None:
        for i, text in lines:
            self.lines.append((self.ind + i, text))

    def guard(self, e: str, test: Callable[[str, str], str], use: Callable[[str], str],
              other: str | Callable[[str], str] = "_fb()") -> str:
        """``(use(x) if test(x) else other)`` with ``e`` evaluated once, first, into ``x``."""
        if e in self.atoms:
            x = first = e
        else:
            x = self.tmp()
            first = f"({x} := {e})"
        return f"({use(x)} if {test(first, x)} else {other(x) if callable(other) else other})"

    def value(self, e: str) -> str:
        """``e`` as an atom, assigned by a statement if needed."""
        if e in self.atoms:
            return e
        t = self.tmp()
        self.emit(f"{t} = {e}")
        return t

    def as_bool(self, e: str, kind: str | None) -> str:
        if kind == "bool":
            return e
        return self.guard(e, lambda f, x: f"type({f}) is bool", lambda x: x)

    def source(self, e: str) -> str:
        # Prologue: hoisting is safe because failing early only means falling back.
        out = ["def fast(a):"]
        if self.dotted:
            out.append("    if " + " or ".join(f"{k!r} in a" for k in self.dotted) + ": _fb()")
        for name, (var, as_dict) in self.roots.items():
            out.append(f"    {var} = a[{name!r}]")
            if as_dict:
                out.append(f"    if type({var}) is not dict: _fb()")
        if self.loops:
            out.append("    _it = 0")
        out += ["    " * (1 + i) + text for i, text in self.lines]
        out.append(f"    return {e}")
        return "\n".join(out) + "\n"


