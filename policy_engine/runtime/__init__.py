"""The runtime: gate, approve, execute, stop, roll back and resume as one lifecycle
recorded in the ledger. ``from policy_engine import Runtime``; see docs/runtime.md.

Modules: ``projections`` (the state caches beside the log), ``results`` (what the calls
return, the shared helpers), ``core`` (state and plumbing), ``executions``, ``approvals``,
``rollbacks`` and ``bulk`` (the parts of ``Runtime``), ``runtime`` (``Runtime``, built from them),
``cli`` (``stopline queue``, ``stopline history``, ``stopline rt``). Imported lazily:
``import policy_engine`` does not load SQLAlchemy.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Runtime", "RuntimeUsageError"]


def __getattr__(name: str) -> Any:
    if name in ("Runtime", "RuntimeUsageError", "GateResult", "ApprovalResult", "SubjectStatus", "ExecutionResult",
                "RollbackRequestResult", "StepResult", "ResumeResult", "QueueItem", "TransitionResult",
                "ClaimInDoubt"):
        from . import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'policy_engine.runtime' has no attribute {name!r}")
