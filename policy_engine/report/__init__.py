"""``stopline report``: rollback metrics from the ledger (DESIGN.md, "Rollbacks at scale,
replay, and learning from a miss"). ``compute`` reads the ledger into plain numbers (the
JSON report); ``html`` draws them as one self-contained page with inline SVG plots
(matplotlib, the optional extra ``stopline[report]``; tables only without it)."""

from .compute import compute_report

__all__ = ["compute_report"]
