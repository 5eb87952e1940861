"""Who reported an execution or a step is recorded, and a claimed decision's one use is its
holder's: an execution of a decision claimed by one principal and reported by another is
flagged ``unauthorized`` (the server passes the authenticated caller of ``POST
/v1/executions`` and of both step routes). Before: the runtime took no reporter, so rita
approving, ops claiming and casey recording the execution gave ``authorized: true``, and any
credential could post a ``verified`` step that named nobody. SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import RECEIPT, at, policy_path, rt, send  # noqa: F401  (fixtures)

from policy_engine.ledger import IdempotencyConflict
from policy_engine.runtime import RuntimeUsageError


def _claimed(rt, who: str = "worker-a"):  # noqa: F811
    g = rt.gate(send(500.0), now=at(0))
    assert rt.approve(g.decision_id, principal="rev", roles=["reviewer"], now=at(1)).counted
    assert rt.claim_execution(g.decision_id, principal=who, now=at(2)).recorded
    return g.decision_id


def test_an_execution_reported_by_another_than_the_claims_holder_is_unauthorized(rt):  # noqa: F811
    d = _claimed(rt)
    x = rt.executed(d, receipt=RECEIPT, now=at(3), reporter="worker-b")
    assert not x.authorized and "unauthorized" in x.flags
    assert any("claimed by worker-a; worker-b reported it" in r for r in x.reasons), x.reasons
    assert rt.ledger.get(x.execution_id).body["reporter"] == "worker-b"


def test_the_holder_reporting_its_claimed_execution_is_authorized_and_named(rt):  # noqa: F811
    d = _claimed(rt, "Worker-A")
    x = rt.executed(d, receipt=RECEIPT, now=at(3), reporter="worker-a")  # (one principal, two spellings)
    assert x.authorized, x.reasons
    assert rt.ledger.get(x.execution_id).body["reporter"] == "worker-a"


def test_without_a_reporter_the_body_is_as_before(rt):  # noqa: F811
    d = _claimed(rt)
    x = rt.executed(d, receipt=RECEIPT, now=at(3))
    assert x.authorized and "reporter" not in rt.ledger.get(x.execution_id).body


def test_a_keyed_retry_by_another_reporter_is_a_conflict(rt):  # noqa: F811
    d = _claimed(rt)
    x = rt.executed(d, receipt=RECEIPT, now=at(3), key="run-1", reporter="worker-a")
    assert rt.executed(d, receipt=RECEIPT, now=at(4), key="run-1", reporter="worker-a").execution_id == x.execution_id
    n = rt.ledger.size
    with pytest.raises(IdempotencyConflict, match="another reporter"):
        rt.executed(d, receipt=RECEIPT, now=at(4), key="run-1", reporter="worker-b")
    assert rt.ledger.size == n


def test_a_reporter_the_ledger_cannot_hold_is_refused(rt):  # noqa: F811
    d = _claimed(rt)
    n = rt.ledger.size
    for bad in (3, "", "\ud800"):
        with pytest.raises(RuntimeUsageError, match="reporter"):
            rt.executed(d, receipt=RECEIPT, now=at(3), reporter=bad)
    assert rt.ledger.size == n


def test_a_step_names_its_reporter(rt):  # noqa: F811
    g = rt.gate(send(50.0), now=at(0))
    x = rt.executed(g.decision_id, receipt=RECEIPT, now=at(1)).execution_id
    p = rt.request_rollback(x, scenario="customer_request", requested_by="rita", reason="asked", now=at(10))
    rt.approve(p.rollback_id, principal="casey", roles=["customer_service"], now=at(11))
    s = rt.step(p.rollback_id, x, "completed", now=at(12), reporter="worker-a")
    assert rt.ledger.get(s.step_id).body["reporter"] == "worker-a"
    s2 = rt.step(p.rollback_id, x, "verified", now=at(13))
    assert "reporter" not in rt.ledger.get(s2.step_id).body


# ------------------------------------------------------------------------------------ over HTTP
def test_over_http_the_caller_is_the_reporter_and_a_claim_binds_the_use(tmp_path, ledger_url):  # noqa: F811
    pytest.importorskip("fastapi")
    from server_support import bearer, server_policy_dir, write_identities
    from starlette.testclient import TestClient

    from policy_engine.server import ServerConfig, create_app

    ids, pol = str(write_identities(tmp_path / "ids.yaml")), str(server_policy_dir(tmp_path))
    for fast in (True, False):
        app = create_app(ServerConfig(pol, ledger=ledger_url, identities=ids,
                                      reload_interval=0, fast_path=fast))
        with TestClient(app) as c:
            led = c.app.state.runtime.ledger
            big = {"workflow": "replies", "type": "send", "amount": 500.0, "promise": False}
            g = c.post("/v1/gate", json={"action": big}, headers=bearer("ops")).json()
            d = g["decision_id"]
            r = c.post("/v1/approvals", json={"subject": d, "verdict": "approve"}, headers=bearer("rita"))
            assert r.status_code == 200 and r.json()["counted"], r.text
            assert c.post(f"/v1/decisions/{d}/claim", json={}, headers=bearer("ops")).json()["recorded"]
            r = c.post("/v1/executions", json={"decision_id": d, "receipt": {"message": "m", "ticket": "T"}},
                       headers=bearer("casey"))
            assert r.status_code == 200, r.text
            got = r.json()
            assert got["authorized"] is False and any("claimed by ops; casey reported it" in x for x in got["reasons"])
            assert led.get(got["execution_id"]).body["reporter"] == "casey"
            # the holder's own report of another claimed decision: authorized, and named
            g2 = c.post("/v1/gate", json={"action": {**big, "amount": 10.0}}, headers=bearer("ops")).json()
            assert c.post(f"/v1/decisions/{g2['decision_id']}/claim", json={}, headers=bearer("ops")).json()["recorded"]
            r = c.post("/v1/executions", json={"decision_id": g2["decision_id"],
                                               "receipt": {"message": "m", "ticket": "T"}}, headers=bearer("ops"))
            assert r.json()["authorized"] is True, r.text
            assert led.get(r.json()["execution_id"]).body["reporter"] == "ops"
