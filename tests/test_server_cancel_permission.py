"""Who may cancel over HTTP. Before, any authenticated principal, one with no role at all
(an agent's credential), could withdraw anyone's rollbacks and decisions: during an
incident, one compromised agent token could cancel every pending rollback. Now a rollback's
requester, or a principal holding a role of the subject's approval slots (someone who could
approve or deny it), may; anyone else gets 403 and nothing is recorded."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
from server_support import bearer, server_policy_dir, write_identities  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from policy_engine.server import ServerConfig, create_app  # noqa: E402

SEND = {"workflow": "replies", "type": "send", "promise": False}


@pytest.fixture
def c(tmp_path):
    ids = str(write_identities(tmp_path / "ids.yaml"))
    app = create_app(ServerConfig(str(server_policy_dir(tmp_path)), ledger=f"sqlite:///{tmp_path / 'l.db'}",
                                  identities=ids, reload_interval=0))
    with TestClient(app) as client:
        yield client


def _rollback(c) -> str:
    g = c.post("/v1/gate", json={"action": {**SEND, "amount": 10.0}}, headers=bearer("ops")).json()
    x = c.post("/v1/executions", json={"decision_id": g["decision_id"],
                                       "receipt": {"message": "m", "ticket": "T"}}, headers=bearer("ops")).json()
    r = c.post("/v1/rollbacks", json={"execution_id": x["execution_id"], "scenario": "customer_request",
                                      "reason": "asked"}, headers=bearer("rita"))
    assert r.status_code == 200, r.text
    return r.json()["rollback_id"]


def _cancel(c, sid, who):
    return c.post(f"/v1/subjects/{sid}/cancel", json={"reason": "r"}, headers=bearer(who))


def test_a_rollback_is_cancelled_by_its_requester_or_an_approver_only(c):
    led = c.app.state.runtime.ledger
    rid = _rollback(c)
    n = led.size
    r = _cancel(c, rid, "ops")  # no role: not an approver, not the requester
    assert r.status_code == 403 and "customer_service" in r.json()["detail"], r.text
    assert led.size == n
    assert _cancel(c, rid, "rita").json()["status"] == "cancelled"  # its requester
    other = _rollback(c)
    assert _cancel(c, other, "cleo").json()["status"] == "cancelled"  # a customer_service approver


def test_a_decision_awaiting_approval_is_cancelled_by_an_approver_only(c):
    g = c.post("/v1/gate", json={"action": {**SEND, "amount": 500.0}}, headers=bearer("ops")).json()
    assert g["decision"]["effect"] == "require_approval"
    assert _cancel(c, g["decision_id"], "ops").status_code == 403
    assert _cancel(c, g["decision_id"], "casey").status_code == 403  # customer_service: not this one's role
    assert _cancel(c, g["decision_id"], "rita").json()["status"] == "cancelled"  # a reviewer
