"""A step report the state machine refuses (tests/test_s24_steps_machine.py) is refused the
same way over HTTP (422 ``runtime-usage``, the message that says why) and by ``stopline rt
step`` (exit 2, one line, no traceback), recording nothing."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from runtime_support import write_policy

from policy_engine.cli import main

pytest.importorskip("fastapi")
from server_support import bearer, server_policy_dir, write_identities  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from policy_engine.server import ServerConfig, create_app  # noqa: E402


def _send(amount: float, **extra) -> dict:
    return {"workflow": "replies", "type": "send", "amount": amount, "promise": False, **extra}


def test_http_refuses_an_illegal_step_with_a_problem(tmp_path):
    ids = str(write_identities(tmp_path / "ids.yaml"))
    app = create_app(ServerConfig(str(server_policy_dir(tmp_path)), ledger=f"sqlite:///{tmp_path / 'l.db'}",
                                  identities=ids, reload_interval=0))
    with TestClient(app) as c:
        g = c.post("/v1/gate", json={"action": _send(50, id="m1")}, headers=bearer("ops")).json()
        x = c.post("/v1/executions", json={"decision_id": g["decision_id"], "receipt": {"message": "hi", "ticket": 1}},
                   headers=bearer("ops")).json()
        rb = c.post("/v1/rollbacks", json={"execution_id": x["execution_id"], "scenario": "customer_request",
                                           "reason": "asked"}, headers=bearer("rita")).json()["rollback_id"]
        assert c.post("/v1/approvals", json={"subject": rb}, headers=bearer("casey")).json()["status"] == "approved"
        duty = x["execution_id"]
        for s in ("completed", "verified"):
            r = c.post(f"/v1/rollbacks/{rb}/steps", json={"duty": duty, "status": s}, headers=bearer("ops"))
            assert r.status_code == 200, r.text
        size = c.get("/v1/ledger/head", headers=bearer("ops")).json()["size"]
        r = c.post(f"/v1/rollbacks/{rb}/steps", json={"duty": duty, "status": "failed"}, headers=bearer("ops"))
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"].endswith("runtime-usage")
        assert "a verified step is final" in r.json()["detail"] and "nothing was recorded" in r.json()["detail"]
        assert c.get("/v1/ledger/head", headers=bearer("ops")).json()["size"] == size


def test_the_cli_refuses_an_illegal_step_in_one_line(tmp_path):
    pol = write_policy(tmp_path)
    url = f"sqlite:///{tmp_path / 'l.db'}"
    runner = CliRunner()
    assert runner.invoke(main, ["ledger", "init", "--ledger", url]).exit_code == 0

    def rt(op, payload):
        r = runner.invoke(main, ["rt", op, "-p", str(pol), "--ledger", url, "-i", "-"], input=json.dumps(payload))
        return r

    now = "2026-11-26T12:00:00Z"
    g = json.loads(rt("gate", {"action": _send(10.0), "now": now}).output)
    x = json.loads(rt("executed", {"decision": g["decision_id"], "receipt": {"message": "m", "ticket": "t"},
                                   "now": now}).output)
    p = json.loads(rt("request_rollback", {"execution": x["execution_id"], "scenario": "customer_request",
                                           "requested_by": "rita", "reason": "r", "now": now}).output)
    rid = p["rollback_id"]
    a = rt("approve", {"subject": rid, "principal": "cs-1", "roles": ["customer_service"], "now": now})
    assert a.exit_code == 0, a.output
    ok = rt("step", {"rollback": rid, "duty": "notify:customer", "status": "completed", "now": now})
    assert ok.exit_code == 0, ok.output
    before = runner.invoke(main, ["ledger", "verify", "--ledger", url]).output
    r = rt("step", {"rollback": rid, "duty": "notify:customer", "status": "started", "now": now})
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "`notify:customer`" in r.output and "is `completed`" in r.output and "not started again" in r.output
    assert runner.invoke(main, ["ledger", "verify", "--ledger", url]).output == before  # nothing recorded
