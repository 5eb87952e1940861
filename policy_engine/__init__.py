"""Stopline: policy-as-code for AI-agent workflows.

    import policy_engine
    engine = policy_engine.load("policies/")
    decision = engine.evaluate(action, workflow_state=None, now=None)

Heavy modules are imported lazily so the CLI starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["load", "PolicyError", "Diagnostic", "Engine", "PolicyStore", "Runtime", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .diagnostics import Diagnostic, PolicyError
    from .engine import Engine, load
    from .runtime import Runtime
    from .store import PolicyStore


def __getattr__(name: str) -> Any:
    if name in ("PolicyError", "Diagnostic"):
        from . import diagnostics

        return getattr(diagnostics, name)
    if name in ("load", "Engine"):
        from . import engine

        return getattr(engine, name)
    if name == "PolicyStore":
        from .store import PolicyStore

        return PolicyStore
    if name == "Runtime":
        from .runtime.runtime import Runtime

        return Runtime
    raise AttributeError(f"module 'policy_engine' has no attribute {name!r}")
