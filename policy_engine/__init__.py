"""Stopline: policy-as-code for AI-agent workflows.

    import policy_engine
    engine = policy_engine.load("policies/")
    decision = engine.evaluate(action, workflow_state=None, now=None)

Heavy modules are imported lazily so the CLI starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["load", "PolicyError", "Diagnostic", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .diagnostics import Diagnostic, PolicyError


def __getattr__(name: str) -> Any:
    if name in ("PolicyError", "Diagnostic"):
        from . import diagnostics

        return getattr(diagnostics, name)
    if name == "load":
        from .engine import load

        return load
    raise AttributeError(f"module 'policy_engine' has no attribute {name!r}")
