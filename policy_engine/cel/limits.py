"""The CEL limits: what ``compile_cel`` refuses and what one evaluation may spend.

The default values are ``policy_engine.limits``' (every limit of the package lives there once).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import limits as _L

__all__ = ["Limits", "DEFAULT_LIMITS"]


@dataclass(frozen=True)
class Limits:
    """Compile-time limits and per-evaluation budgets."""

    max_expression_length: int = _L.CEL_MAX_EXPRESSION_LENGTH  # characters of CEL source
    max_nesting_depth: int = _L.CEL_MAX_NESTING_DEPTH  # brackets/parentheses/braces, checked before parsing
    max_iterations: int = _L.CEL_MAX_ITERATIONS  # comprehension iterations per evaluation
    max_size: int = _L.CEL_MAX_SIZE  # length of any string/bytes/list produced


DEFAULT_LIMITS = Limits()
