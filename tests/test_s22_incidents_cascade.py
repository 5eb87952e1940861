"""Session 22 audit of the incident features, on SQLite and PostgreSQL: a record of an
incident's cascade whose only cover is a rollback the clock expired (never authorized by its
deadline, the sweeper not run yet) is rolled back by the batch. Before, the batch listed it
as `covered` by that dead rollback and left it out: no open rollback would ever reverse it."""

from __future__ import annotations

from datetime import timedelta

from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import RECEIPT, WF, at, policy_path, rt, send  # noqa: F401  (fixtures)

SEND = 'original.type == "send"'


def _send_and_log(rt, i: int) -> tuple[str, str]:  # noqa: F811
    g = rt.gate(send(50.0, id=f"s{i}"), now=at(10 * i))
    x = rt.executed(g.decision_id, receipt=RECEIPT, now=at(10 * i + 1)).execution_id
    lg = rt.gate({"workflow": WF, "type": "log"}, now=at(10 * i + 2))
    y = rt.executed(lg.decision_id, receipt={"note": "n"}, caused_by=x, now=at(10 * i + 3)).execution_id
    return x, y


def test_a_cascade_record_held_by_a_rollback_the_clock_expired_is_planned(rt):  # noqa: F811
    x, y = _send_and_log(rt, 0)
    x2, y2 = _send_and_log(rt, 1)
    dead = rt.request_rollback(y, scenario="customer_request", requested_by="rita", reason="r", now=at(5)).rollback_id
    later = at(5) + rt.rollback_ttl + timedelta(seconds=1)  # never authorized: its deadline passed
    live = rt.request_rollback(
        y2, scenario="customer_request", requested_by="rita", reason="r", now=later - timedelta(seconds=2)
    ).rollback_id  # still open at `later`
    assert rt.authorization(dead, now=later).status == "expired"

    dry = rt.request_bulk_rollback(SEND, "customer_request", "ops", "incident", now=later, dry_run=True)
    real = rt.request_bulk_rollback(SEND, "customer_request", "ops", "incident", now=later)
    assert dry.batch_hash == real.batch_hash and dry.records == real.records == 3  # x with y; x2 alone
    plans = {rt.ledger.get(r).body["original"]: rt.ledger.get(r).body for r in real.rollbacks}
    assert plans[x]["cascade"] == [y] and "covered" not in plans[x]
    # the open rollback still covers its record: listed, not planned twice
    assert plans[x2]["cascade"] == [] and plans[x2]["covered"] == [{"record": y2, "rollback": live, "parent": x2}]
    # the dead rollback's expiry is recorded (as the sweeper would), in the ledger before the batch
    assert rt.authorization(dead, now=later).status == "expired"
    assert any(
        e.body.get("to") == "expired" for e in rt.ledger.entries(kind="transition") if e.body.get("subject") == dead
    )
    assert rt.batch_status(real.batch_id, now=later)["rollbacks"] == 2
