"""Retries with an idempotency key say what they are. An `executed` retried with a used
key and another receipt (or another `caused_by`) got the old execution back silently, so the
second report was lost without a word; it is now `IdempotencyConflict`, as a gate retried
with another action is. A gate retried with a used key is marked `replayed` (nothing
recorded), and the service no longer counts it as a new decision in
`stopline_decisions_total`. SQLite and PostgreSQL (the runtime part)."""

from __future__ import annotations

import pytest
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import RECEIPT, at, policy_path, rt, send  # noqa: F401  (fixtures)

from policy_engine.ledger import IdempotencyConflict


def test_an_execution_retried_with_its_key_and_another_receipt_is_a_conflict(rt):
    g = rt.gate(send(10.0), now=at(0))
    x = rt.executed(g.decision_id, receipt=RECEIPT, key="run-1", now=at(1))
    n = rt.ledger.size
    same = rt.executed(g.decision_id, receipt=dict(RECEIPT), key="run-1", now=at(2))
    assert same.execution_id == x.execution_id and rt.ledger.size == n
    with pytest.raises(IdempotencyConflict, match="another receipt"):
        rt.executed(g.decision_id, receipt={**RECEIPT, "message": "something else"}, key="run-1", now=at(3))
    parent = rt.executed(rt.gate(send(10.0), now=at(4)).decision_id, receipt=RECEIPT, now=at(5))
    with pytest.raises(IdempotencyConflict, match="caused_by"):
        rt.executed(g.decision_id, receipt=RECEIPT, key="run-1", caused_by=parent.execution_id, now=at(6))
    other = rt.gate(send(10.0), now=at(7))
    with pytest.raises(IdempotencyConflict, match="another decision"):
        rt.executed(other.decision_id, receipt=RECEIPT, key="run-1", now=at(8))
    assert rt.ledger.size == n + 3  # the parent's gate and execution, the other gate: no execution


def test_a_gate_retried_with_its_key_is_marked_replayed(rt):
    first = rt.gate(send(10.0), key="g-1", now=at(0))
    again = rt.gate(send(10.0), key="g-1", now=at(1))
    assert (first.replayed, again.replayed) == (False, True)
    assert again.decision_id == first.decision_id
    assert again.to_json()["replayed"] is True


def test_the_service_counts_a_keyed_retry_once(tmp_path):
    pytest.importorskip("fastapi")
    from server_support import bearer, server_policy_dir, write_identities
    from starlette.testclient import TestClient

    from policy_engine.server import ServerConfig, create_app

    ids = str(write_identities(tmp_path / "ids.yaml"))
    app = create_app(ServerConfig(str(server_policy_dir(tmp_path)), ledger=f"sqlite:///{tmp_path / 'l.db'}",
                                  identities=ids, reload_interval=0))
    line = 'stopline_decisions_total{effect="allow",interface="native"}'
    with TestClient(app) as c:
        for _ in range(3):
            r = c.post("/v1/gate", json={"action": send(10.0), "key": "k-1"}, headers=bearer("ops"))
            assert r.status_code == 200, r.text
        assert r.json()["replayed"] is True
        metrics = c.get("/metrics").text
        assert f"{line} 1.0" in metrics, [m for m in metrics.splitlines() if "decisions_total" in m]
