"""Session 23: a run reported failed, in the incident tools.

``Runtime.executed(outcome="failed", error=)`` records a run that failed. The report counts
those runs apart (``failed_executions``: count and ids) and does not count the receipt fields
a failed run never produced as under-reporting (``missing_receipt_fields``); a bulk rollback's
``select`` reads ``original.outcome`` and ``original.error``, so an incident's select can take
the runs that failed (a tool that timed out may still have had its effect). A run an adapter
of session 22 recorded with a ``tool_error`` receipt field reads as failed in both. SQLite and
PostgreSQL."""

from __future__ import annotations

from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import RECEIPT, at, policy_path, rt, send  # noqa: F401  (fixtures)

from policy_engine.report.compute import compute_report


def _runs(rt):  # noqa: F811
    ok = rt.executed(rt.gate(send(50.0), now=at(0)).decision_id, receipt=RECEIPT, now=at(1))
    bad = rt.executed(rt.gate(send(60.0), now=at(0)).decision_id, receipt={}, now=at(1), outcome="failed",
                      error="SMTPError: timeout")
    legacy = rt.executed(rt.gate(send(70.0), now=at(0)).decision_id, receipt={**RECEIPT, "tool_error": "E: x"},
                         now=at(1))
    short = rt.executed(rt.gate(send(80.0), now=at(0)).decision_id, receipt={}, now=at(1))
    return ok, bad, legacy, short


def test_the_report_counts_failed_runs_apart(rt, ledger_url):  # noqa: F811
    ok, bad, legacy, short = _runs(rt)
    rep = compute_report(ledger_url, now=at(20))
    assert rep["totals"]["executions"] == 4
    assert rep["failed_executions"]["count"] == 2
    assert sorted(rep["failed_executions"]["ids"]) == sorted([bad.execution_id, legacy.execution_id])
    # a run that succeeded without its receipt fields is under-reporting; a failed one is not
    assert rep["missing_receipt_fields"]["executions"] == 1


def test_a_select_reads_the_outcome_and_the_error(rt):  # noqa: F811
    ok, bad, legacy, short = _runs(rt)
    b = rt.request_bulk_rollback('original.outcome == "failed"', scenario="customer_request",
                                 requested_by="rita", reason="the runs that failed", dry_run=True, now=at(10))
    assert sorted(b.originals) == sorted([bad.execution_id, legacy.execution_id]) and b.errors == ()
    b = rt.request_bulk_rollback('original.error != null && original.error.startsWith("SMTPError")',
                                 scenario="customer_request", requested_by="rita", reason="smtp", dry_run=True,
                                 now=at(10))
    assert b.originals == (bad.execution_id,) and b.errors == ()
