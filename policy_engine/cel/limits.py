"""The CEL limits: what ``compile_cel`` refuses and what one evaluation may spend.

The default values are ``policy_engine.limits``' (every limit of the package lives there once).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits", "DEFAULT_LIMITS"]


@dataclass(frozen=True)
class Limits:
    """Compile-time limits and per-evaluation budgets."""

    max_expression_length: int = 4096  # characters of CEL source
    max_nesting_depth: int = 64  # brackets/parentheses/braces, checked before parsing
    max_iterations: int = 100_000  # comprehension iterations per evaluation
    max_size: int = 1_000_000  # length of any string/bytes/list produced


DEFAULT_LIMITS = Limits()
