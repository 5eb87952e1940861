"""``stopline report``: rollback metrics from the ledger (DESIGN.md, "Rollbacks at scale,
replay, and learning from a miss"). ``compute`` reads the ledger into plain numbers (the
JSON report); ``html`` draws them as one self-contained page with inline SVG plots
(matplotlib, the optional extra ``stopline[report]``; tables only without it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .compute import compute_report

__all__ = ["compute_report"]


def __getattr__(name: str) -> Any:
    # `compute` (and with it the ledger's schema and SQLAlchemy) is imported when asked for:
    # the CLI imports `report.cli` to register `stopline report`, and `stopline check` does
    # not read a ledger (issue 16, goal 5)
    if name == "compute_report":
        from .compute import compute_report

        return compute_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
