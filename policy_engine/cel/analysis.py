"""Analyses of a compiled expression, read from the tree the reference compiler built:

- ``type_guard``: the action types for which a condition can be anything but ``false``,
  when the condition says so itself (the engine skips a stop trigger guarded by another
  type; see ``CompiledExpr.type_guard``);
- ``read_set``: what the expression reads of its free variables (the engine checks and
  speculates on exactly those fields; see ``CompiledExpr.reads``).
"""

from __future__ import annotations

from collections.abc import Sequence

from .compile import Reference
from .nodes import _ACTION_TYPE, _N


def type_guard(n: _N) -> frozenset[str] | None:
    """The action types for which the node may be anything but ``false``; None when not known.

    ``action.type == "t"`` -> {"t"}; ``action.type in ["t", ...]`` -> those; ``a && b`` -> a's
    (``&&`` evaluates left to right and stops at the first ``false``, before any later
    operand could raise a non-absorbable budget error: only the first operand's guard
    carries over); ``a || b || ...`` -> the union when every operand has one."""
    op = n.op
    if op is None or n.const:
        return None
    k = op[0]
    if k == "eq":
        _, ln, rn, neg = op
        if not neg:
            for x, c in ((ln, rn), (rn, ln)):
                if x.path == _ACTION_TYPE and c.const and type(c.value) is str:
                    return frozenset((c.value,))
        return None
    if k == "in_strs":
        return op[2] if op[1].path == _ACTION_TYPE else None
    if k == "logic":
        live, is_and = op[1], op[2]
        if is_and:
            return type_guard(live[0])
        guards = [type_guard(x) for x in live]
        if all(g is not None for g in guards):
            return frozenset().union(*guards)  # type: ignore[arg-type]
    return None


def read_set(refs: Sequence[Reference], has_fields: dict[int, str]) -> tuple[tuple[str, str | None], ...]:
    """(variable, top-level field) pairs the expression reads, sorted; the field is None when
    it may use the variable as a whole. ``has(x.f)`` reads only ``f`` of ``x``."""
    return tuple(sorted({
        (r.path[0], has_fields.get(i, r.path[1] if len(r.path) > 1 else None)) for i, r in enumerate(refs)
    }, key=lambda x: (x[0], x[1] or "")))
