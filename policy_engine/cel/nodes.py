"""The compiled tree's node (``_N``): a closure and a description of what it computes.

A leaf of the compiler: compile.py builds these; codegen.py (the fast path) and analysis.py
(type guards) read the ``op`` descriptions afterwards, never the other way round.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .errors import _Fail


class _N:
    """A compiled sub-expression: the closure ``fn(activation, ctx)``, its value if it is a
    constant, and ``op``: what the node computes, for the passes that read the tree after
    compilation (codegen.py, analysis.py), e.g. ``("eq", left, right, negated)``,
    ``("logic", operands, is_and)``, ``("apply", helper, args)``; None for a node no pass
    looks into (the closure is all there is: map literals, unbound functions, errors).
    The closure is the meaning; ``op`` only describes it.
    """

    __slots__ = ("fn", "const", "value", "depth", "op", "path", "refi")

    def __init__(self, fn: Callable, const: bool = False, value: Any = None, depth: int = 1) -> None:
        self.fn = fn
        self.const = const
        self.value = value
        self.depth = depth
        self.op: tuple | None = None
        self.path: tuple[str, ...] | None = None  # a free variable's field chain, e.g. ("action", "type")
        self.refi = -1  # for a bare free variable: the index of its Reference


def _const(value: Any) -> _N:
    def fn(a: Any, c: Any, value: Any = value) -> Any:
        return value

    n = _N(fn, True, value, 1)
    n.op = ("const",)
    return n


def _constfail(message: str) -> _N:
    def fn(a: Any, c: Any) -> Any:
        raise _Fail(message)

    return _N(fn, False, None, 1)


_ACTION_TYPE = ("action", "type")

_PASSTHRU = frozenset(
    {"expr", "conditionalor", "conditionaland", "relation", "addition", "multiplication",
     "unary", "member", "primary"}
)
_MACROS = frozenset(
    {"all", "exists", "exists_one", "existsOne", "map", "filter", "transformList", "transformMap"}
)


def _const_value(v: Any) -> Any:
    """A constant as CEL sees it: tuples become lists, mappings dicts (shared, never mutated)."""
    if type(v) is tuple or type(v) is list:
        return [_const_value(x) for x in v]
    if isinstance(v, Mapping):
        return {k: _const_value(x) for k, x in v.items()}
    return v


