"""A `step` appended beside the runtime (`stopline ledger append`, another program's
`Ledger.append`) without an `authorized` field starts nothing (session 27). The runtime
writes `authorized` on every step it records; the status reading and the projections' fold
took a step without it as authorized, so such a step on a pending, never-approved rollback
made it `in_progress`, and the runtime's own next step was then recorded `authorized`:
a rollback run with nobody's approval."""

from __future__ import annotations

from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import RECEIPT, at, policy_path, send  # noqa: F401  (fixture)

from policy_engine import Runtime
from policy_engine.ledger import Ledger


def test_a_step_appended_without_authorized_does_not_start_an_unapproved_rollback(ledger_url, policy_path):  # noqa: F811
    with Runtime.open(str(policy_path), ledger=ledger_url) as rt:
        g = rt.gate(send(50.0), now=at(0))
        x = rt.executed(g.decision_id, receipt=RECEIPT, now=at(1))
        p = rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita", reason="r",
                                now=at(2))
        assert rt.authorization(p.rollback_id, now=at(3)).status == "pending"
    with Ledger.open(ledger_url) as led:
        led.append("step", {"record": x.execution_id, "status": "started"}, links=[p.rollback_id])
    with Runtime.open(str(policy_path), ledger=ledger_url) as rt:
        assert rt.authorization(p.rollback_id, now=at(4)).status == "pending"
        s = rt.step(p.rollback_id, x.execution_id, "completed", now=at(5))
        assert s.authorized is False and s.rollback_status == "pending"
        assert rt.authorization(p.rollback_id, now=at(6)).status == "pending"
        # the queue (read from the projections, which the fold made) says the same
        assert [(q.rollback_id, q.status) for q in rt.queue(now=at(7))] == [(p.rollback_id, "pending")]
