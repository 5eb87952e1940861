"""Session 22 audit of the report, on SQLite and PostgreSQL: ``compute_report``'s
``since``/``until`` given as text with digits below the microsecond round up, as the
command's do (an entry at 12:00:02 is before 12:00:02.0000005: out for ``since``, in for
``until``). The API truncated them, so the entry at 12:00:02 was inside a ``since`` it
is before, and the API and ``stopline report`` answered differently for one bound."""

from __future__ import annotations

import json

from click.testing import CliRunner
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import RECEIPT, at, policy_path, rt, send  # noqa: F401  (fixtures)

from policy_engine.cli import main
from policy_engine.report.compute import compute_report

JUST_AFTER = "2026-11-26T12:00:02.0000005Z"  # half a microsecond after at(2)


def test_bounds_below_the_microsecond_round_up_in_the_api_as_in_the_command(rt, ledger_url):  # noqa: F811
    for i in range(3):
        g = rt.gate(send(50.0, id=f"s{i}"), now=at(2 * i))
        rt.executed(g.decision_id, receipt=RECEIPT, now=at(2 * i))  # executions at at(0), at(2), at(4)
    api = compute_report(rt.ledger, since=JUST_AFTER, now=at(100))
    assert api["totals"]["executions"] == 1 and api["window"]["since"] == "2026-11-26T12:00:02.000001Z"
    assert compute_report(rt.ledger, until=JUST_AFTER, now=at(100))["totals"]["executions"] == 2
    assert compute_report(rt.ledger, since="2026-11-26T12:00:02Z", now=at(100))["totals"]["executions"] == 2
    res = CliRunner().invoke(main, ["report", "--ledger", ledger_url, "--since", JUST_AFTER, "--format", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["totals"]["executions"] == api["totals"]["executions"]


def test_a_clock_ahead_of_the_runtime_never_makes_an_interval_negative(rt):  # noqa: F811
    """An agent whose clock is 30 s ahead reports `executed_at` 30 s after the runtime's time
    (within the skew the runtime accepts); the rollback requested 5 s later read as requested
    25 s *before* the action ran (a negative minimum and median). Each interval is at least 0."""
    g = rt.gate(send(50.0), now=at(0))
    x = rt.executed(g.decision_id, receipt=RECEIPT, executed_at=at(30), now=at(0)).execution_id
    p = rt.request_rollback(x, scenario="customer_request", requested_by="rita", reason="r", now=at(5))
    rt.approve(p.rollback_id, principal="cs-1", roles=["customer_service"], now=at(6))
    for k, duty in enumerate(rt.ledger.get(p.rollback_id).body["duties"]):
        rt.step(p.rollback_id, duty, "completed", key=f"k{k}", now=at(7))
    r = compute_report(rt.ledger, now=at(100))
    assert r["time_to_rollback_request_s"]["min"] == 0.0 and r["time_to_rollback_request_s"]["count"] == 1
    assert r["time_to_rollback_completion_s"]["min"] == 0.0
    assert r["approval_latency_s"]["min"] == 1.0  # (one clock: as it was)
