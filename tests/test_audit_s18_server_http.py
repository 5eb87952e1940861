"""Audit of the runtime over HTTP (session 18): answers that must agree with the in-process
``Runtime`` on the same ledger, and routes that must not answer without a credential.

- ``GET /v1/queue`` pages as ``Runtime.queue`` does (``limit``, then ``after`` the last id,
  which the answer names as ``next``; ``claimed``): an ``after`` used to be ignored, so a
  client asking for page 2 silently got page 1 again.
- A workflow whose name holds ``/`` (any string is a workflow name) can be read and resumed
  over HTTP, as it can be stopped there.
- ``GET /v1/policies`` quoted the policy files' lines (a failed reload's diagnostics: the
  constants, limits and lists of the policy) to anyone who could reach the server, without a
  credential: now only to an authenticated caller (anonymous callers get what ``/healthz``
  says, and the workflows).
"""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
from server_support import bearer, server_policy_dir, write_identities  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from policy_engine.server import ServerConfig, create_app  # noqa: E402


def send(amount: float, **extra) -> dict:
    return {"workflow": "replies", "type": "send", "amount": amount, "promise": False, **extra}


@pytest.fixture
def http(tmp_path):
    ids = str(write_identities(tmp_path / "ids.yaml"))
    app = create_app(ServerConfig(str(server_policy_dir(tmp_path)), ledger=f"sqlite:///{tmp_path / 'l.db'}",
                                  identities=ids, reload_interval=0))
    with TestClient(app) as c:
        yield c


def _rollbacks(c: TestClient, n: int) -> list[str]:
    out = []
    for i in range(n):
        g = c.post("/v1/gate", json={"action": send(10 + i, id=f"m{i}")}, headers=bearer("ops")).json()
        x = c.post("/v1/executions", json={"decision_id": g["decision_id"],
                                           "receipt": {"message": "hi", "ticket": i}}, headers=bearer("ops")).json()
        r = c.post("/v1/rollbacks", json={"execution_id": x["execution_id"], "scenario": "customer_request",
                                          "reason": f"r{i}"}, headers=bearer("rita"))
        assert r.status_code == 200, r.text
        out.append(r.json()["rollback_id"])
    return out


def test_the_queue_pages_over_http_as_the_runtime_pages_it(http):
    c = http
    ids = _rollbacks(c, 5)
    rt = c.app.state.runtime
    assert c.post(f"/v1/rollbacks/{ids[1]}/claim", json={}, headers=bearer("cleo")).json()["recorded"] is True
    whole = c.get("/v1/queue", headers=bearer("ops")).json()
    assert [i["rollback_id"] for i in whole["queue"]] == ids == [i.rollback_id for i in rt.queue()]
    assert whole["next"] is None  # (no limit: the whole listing)

    pages, after = [], None
    while True:
        params = {"limit": 2} | ({"after": after} if after else {})
        page = c.get("/v1/queue", params=params, headers=bearer("ops")).json()
        got = [i["rollback_id"] for i in page["queue"]]
        assert got == [i.rollback_id for i in rt.queue(limit=2, after=after)]
        pages.append(got)
        after = page["next"]
        if after is None:
            break
        assert after == got[-1]
    assert pages == [ids[0:2], ids[2:4], ids[4:5]]

    # the page after the second one is the third, not the first one again
    second = c.get("/v1/queue", params={"limit": 2, "after": ids[1]}, headers=bearer("ops")).json()
    assert [i["rollback_id"] for i in second["queue"]] == ids[2:4]

    claimed = c.get("/v1/queue", params={"claimed": "true"}, headers=bearer("ops")).json()["queue"]
    assert [(i["rollback_id"], i["claimed_by"]) for i in claimed] == [(ids[1], "cleo")]
    unclaimed = c.get("/v1/queue", params={"claimed": "false"}, headers=bearer("ops")).json()["queue"]
    assert [i["rollback_id"] for i in unclaimed] == [i.rollback_id for i in rt.queue(claimed=False)]
    assert ids[1] not in [i["rollback_id"] for i in unclaimed] and len(unclaimed) == 4

    r = c.get("/v1/queue", params={"after": "no-such-rollback"}, headers=bearer("ops"))
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"


SLASHED = '''roles [reviewer]

workflow "ops/replies v2" {
  version "1.0"
  owners {
    business "Support lead"
    technical "Platform"
  }
  default require_approval

  action send {
    system "helpdesk"
    reversible full via "x.undo"
    receipt [message]
    allow small when `action.amount <= 100.0`
  }

  stop too_much {
    when `action.amount > 5000.0`
    severity high
    owner "Support lead"
    affects [helpdesk]
    receipt [message]
    rollback "undo"
    notify [customer]
    evidence {
      fixed: bool
    }
    resume when {
      fixed: `evidence.fixed == true` "the limit is enforced"
    }
  }
}
'''


@pytest.mark.parametrize("path", ["ops%2Freplies%20v2", "ops/replies%20v2"])
def test_a_workflow_named_with_a_slash_is_read_and_resumed_over_http(tmp_path, path):
    pol = tmp_path / "policies"
    pol.mkdir()
    (pol / "w.policy").write_text(SLASHED, encoding="utf-8")
    ids = str(write_identities(tmp_path / "ids.yaml"))
    app = create_app(ServerConfig(str(pol), ledger=f"sqlite:///{tmp_path / 'l.db'}", identities=ids,
                                  reload_interval=0))
    wf = "ops/replies v2"
    with TestClient(app) as c:
        g = c.post("/v1/gate", json={"action": {"workflow": wf, "type": "send", "amount": 9000}},
                   headers=bearer("ops")).json()
        assert g["decision"]["effect"] == "stop" and g["workflow_status"] == "stopped"
        r = c.get(f"/v1/workflows/{path}", headers=bearer("ops"))
        assert r.status_code == 200, r.text
        assert r.json() == c.app.state.runtime.workflow_status(wf) and r.json()["status"] == "stopped"
        r = c.post(f"/v1/workflows/{path}/resume", json={"evidence": {"fixed": True}}, headers=bearer("ops"))
        assert r.status_code == 200, r.text
        assert r.json()["allowed"] is True and r.json()["workflow"] == wf
        assert c.get(f"/v1/workflows/{path}", headers=bearer("ops")).json()["status"] == "running"
        g = c.post("/v1/gate", json={"action": {"workflow": wf, "type": "send", "amount": 5}},
                   headers=bearer("ops")).json()
        assert g["decision"]["effect"] == "allow"
        # the OpenAPI document and the metrics keep the route templates (no converter name)
        paths = c.get("/openapi.json").json()["paths"]
        assert "/v1/workflows/{workflow}" in paths and "/v1/workflows/{workflow}/resume" in paths
        metrics = c.get("/metrics").text
        assert 'route="/v1/workflows/{workflow}"' in metrics and ":path" not in metrics


def test_the_policy_files_are_not_quoted_without_a_credential(http, tmp_path):
    c = http
    pol = tmp_path / "policies" / "replies.policy"
    good = pol.read_text(encoding="utf-8")
    pol.write_text(good + '\nconst secret_limit = "do-not-show-4711" garbage\n', encoding="utf-8")
    r = c.post("/v1/policies/reload", headers=bearer("ops")).json()
    assert r["ok"] is False and "4711" in r["diagnostics"]  # (the source line, to an authenticated caller)
    # anonymous: what /healthz says (the hash, the last reload's one line), never the files' lines
    r = c.get("/v1/policies")
    assert r.status_code == 200 and "4711" not in r.text
    assert r.json()["last_reload"] == {"ok": False, "error": c.get("/healthz").json()["last_reload"]["error"],
                                       "diagnostics": None}
    assert r.json()["workflows"] == ["replies"] and r.json()["default_workflow"] == "replies"
    # a credential that is given must verify
    r = c.get("/v1/policies", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    r = c.get("/v1/policies", headers=bearer("ops"))
    assert r.status_code == 200 and r.json()["last_reload"]["ok"] is False
    assert "4711" in r.json()["last_reload"]["diagnostics"]


def test_without_identities_the_policy_set_is_served_to_the_loopback(tmp_path):
    app = create_app(ServerConfig(str(server_policy_dir(tmp_path)), reload_interval=0))
    with TestClient(app) as c:
        pol = tmp_path / "policies" / "replies.policy"
        pol.write_text(pol.read_text(encoding="utf-8") + "\ngarbage {\n", encoding="utf-8")
        assert c.post("/v1/policies/reload").json()["ok"] is False
        r = c.get("/v1/policies")
        assert r.status_code == 200 and r.json()["workflows"] == ["replies"]
        assert "garbage" in r.json()["last_reload"]["diagnostics"]
