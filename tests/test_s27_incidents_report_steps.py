"""The report reads a rollback's steps as the runtime does (session 27), on SQLite and
PostgreSQL: a `step` appended beside the runtime (`stopline ledger append`, another
program's `Ledger.append`) without `authorized: true` starts nothing. The runtime stopped
counting such a step this session (`core._subject_status`, the projections); the report
still took a step without the field as authorized, so a never-approved rollback read as
`completed` in the report (not open, with a time to completion) while `Runtime.authorization`
and the review queue said `pending`."""

from __future__ import annotations

from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import RECEIPT, at, policy_path, send  # noqa: F401  (fixture)

from policy_engine import Runtime
from policy_engine.ledger import Ledger
from policy_engine.report import compute_report


def test_a_step_appended_without_authorized_does_not_complete_a_rollback_in_the_report(ledger_url,  # noqa: F811
                                                                                         policy_path):  # noqa: F811
    with Runtime.open(str(policy_path), ledger=ledger_url) as rt:
        g = rt.gate(send(50.0), now=at(0))
        x = rt.executed(g.decision_id, receipt=RECEIPT, now=at(1))
        p = rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita", reason="r",
                                now=at(2))
    with Ledger.open(ledger_url) as led:
        duties = led.get(p.rollback_id).body["duties"]
        for duty in duties:  # every duty reported done, by someone beside the runtime, never approved
            led.append("step", {"record": duty, "status": "completed"}, links=[p.rollback_id])
        # and one that says `authorized` in a way the runtime never writes (not the boolean true)
        led.append("step", {"record": duties[0], "status": "completed", "authorized": "yes"}, links=[p.rollback_id])
    with Runtime.open(str(policy_path), ledger=ledger_url) as rt:
        assert rt.authorization(p.rollback_id, now=at(6)).status == "pending"
    r = compute_report(ledger_url, now=at(10))
    assert r["rollback_status"] == {"pending": 1}
    assert r["open"] == 1
    assert r["time_to_rollback_completion_s"]["count"] == 0
    # the rollback stands (pending), so its original is still counted as rolled back
    assert r["totals"]["rolled_back_executions"] == 1


def test_steps_the_runtime_recorded_after_approval_still_complete_the_rollback(ledger_url, policy_path):  # noqa: F811
    with Runtime.open(str(policy_path), ledger=ledger_url) as rt:
        g = rt.gate(send(50.0), now=at(0))
        x = rt.executed(g.decision_id, receipt=RECEIPT, now=at(1))
        p = rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita", reason="r",
                                now=at(2))
        rt.approve(p.rollback_id, principal="cara", roles=["customer_service"], now=at(3))
        for duty in rt.ledger.get(p.rollback_id).body["duties"]:
            assert rt.step(p.rollback_id, duty, "completed", now=at(4)).authorized is True
        assert rt.authorization(p.rollback_id, now=at(5)).status == "completed"
    r = compute_report(ledger_url, now=at(10))
    assert r["rollback_status"] == {"completed": 1}
    assert r["open"] == 0
    assert r["time_to_rollback_completion_s"]["count"] == 1
