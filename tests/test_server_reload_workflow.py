"""The implicit AuthZEN default workflow across hot reloads.

Without ``--workflow``, the set's only workflow when the server starts is the default for
the life of the server: a reload that adds a workflow keeps AuthZEN requests without a
workflow going to it (and says so in the log: a restart with the new set would have no
default), a reload that removes it is refused like one that drops ``--workflow`` (the old
set keeps deciding), and ``stopline serve --workers N`` hands the default to its workers,
so a worker restarted after the reload keeps it too."""

from __future__ import annotations

import logging
import os
import signal
import time

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402
from server_support import (  # noqa: E402
    SERVER_POLICY,
    bearer,
    decisions_by_worker,
    serve_process,
    server_policy_dir,
    workers_of,
    write_identities,
)
from starlette.testclient import TestClient  # noqa: E402

from policy_engine.server import ServerConfig, create_app  # noqa: E402

# no `context.workflow`: the server's default workflow decides (`log` is allowed in "replies")
EV = {"subject": {"type": "user", "id": "a"}, "action": {"name": "log"}, "resource": {"type": "t", "id": "1"}}
REFUNDS = '''workflow "refunds" {
  version "1.0"
  owners {
    business "Finance lead"
    technical "Platform"
  }
  default deny

  action refund {
    system "billing"
    reversible full via "billing.reverse"
    receipt [amount]

    allow any when `true`
  }
}
'''
REFUND = {"subject": {"type": "user", "id": "a"}, "action": {"name": "refund"}, "resource": {"type": "t", "id": "1"},
          "context": {"workflow": "refunds"}}


def test_a_reload_that_adds_a_workflow_keeps_the_default_and_one_removing_it_is_refused(tmp_path, caplog):
    policy_dir = server_policy_dir(tmp_path)
    ids = str(write_identities(tmp_path / "ids.yaml"))
    app = create_app(ServerConfig(str(policy_dir), identities=ids, reload_interval=0))
    h = bearer("ops")
    with TestClient(app) as c:
        first = c.post("/access/v1/evaluation", json=EV, headers=h).json()
        assert first["decision"] is True
        assert c.get("/v1/policies").json()["default_workflow"] == "replies"
        # a second workflow arrives: the default stays, and the log says what a restart would do
        (policy_dir / "refunds.policy").write_text(REFUNDS)
        with caplog.at_level(logging.INFO, logger="policy_engine.server"):
            r = c.post("/v1/policies/reload", headers=h).json()
        assert r["ok"] is True and r["changed"] is True, r
        added = r["policy_hash"]
        info = c.get("/v1/policies").json()
        assert info["workflows"] == ["refunds", "replies"] and info["default_workflow"] == "replies"
        again = c.post("/access/v1/evaluation", json=EV, headers=h).json()
        assert again["decision"] is True and again["context"]["policy_hash"] == added
        assert c.post("/access/v1/evaluation", json=REFUND, headers=h).json()["decision"] is True
        warned = [rec for rec in caplog.records
                  if rec.levelno == logging.WARNING and rec.name == "policy_engine.server"]
        assert len(warned) == 1, caplog.text
        msg = warned[0].getMessage()
        assert "workflows now refunds, replies" in msg and "still go to `replies`" in msg
        assert "start it with --workflow replies" in msg
        # the default's workflow is removed: refused, the set with it keeps deciding
        (policy_dir / "replies.policy").unlink()
        r = c.post("/v1/policies/reload", headers=h).json()
        assert r["ok"] is False and r["changed"] is False and r["policy_hash"] == added
        assert r["error"] == (f"the AuthZEN default workflow `replies` (the policy set's only workflow when the server "
                              f"started) is not in the policy set {policy_dir} (its workflows: refunds): AuthZEN "
                              "requests without a workflow would have no default; keep the workflow, or restart the "
                              "server with the new set (give --workflow NAME to choose the default)")
        assert r["diagnostics"] == r["error"]
        again = c.post("/access/v1/evaluation", json=EV, headers=h).json()
        assert again["decision"] is True and again["context"]["policy_hash"] == added
        assert c.get("/v1/policies").json()["workflows"] == ["refunds", "replies"]
        assert c.get("/healthz").json()["last_reload"] == {"ok": False,
                                                           "error": r["error"].replace(str(policy_dir), ".")}
        assert 'stopline_policy_reloads_total{result="rejected"} 1.0' in c.get("/metrics").text
        app.state._reload_if_changed()  # the poller's path refuses it too
        assert c.get("/v1/policies").json()["last_reload"]["error"] == r["error"].replace(str(policy_dir), ".")
        assert c.get("/v1/policies").json()["policy_hash"] == added
        # back with it (and without the other): taken, the default unchanged
        (policy_dir / "replies.policy").write_text(SERVER_POLICY.replace("within 1d", "within 2d"))
        (policy_dir / "refunds.policy").unlink()
        r = c.post("/v1/policies/reload", headers=h).json()
        assert r["ok"] is True and r["changed"] is True, r
        assert c.get("/v1/policies").json() | {"last_reload": None} == {
            "policy_hash": r["policy_hash"], "workflows": ["replies"], "default_workflow": "replies",
            "last_reload": None}
        assert c.post("/access/v1/evaluation", json=EV, headers=h).json()["decision"] is True


def test_a_server_started_with_several_workflows_has_no_default_after_a_reload_to_one(tmp_path, caplog):
    """The default is decided at the start: a set that had two workflows then gives none,
    and a reload to one does not make one up (workers that reloaded at different times
    would disagree); the log says how to give one."""
    policy_dir = server_policy_dir(tmp_path)
    (policy_dir / "refunds.policy").write_text(REFUNDS)
    app = create_app(ServerConfig(str(policy_dir), reload_interval=0))
    with TestClient(app) as c:
        assert c.get("/v1/policies").json()["default_workflow"] is None
        (policy_dir / "refunds.policy").unlink()
        with caplog.at_level(logging.WARNING, logger="policy_engine.server"):
            assert c.post("/v1/policies/reload").json()["ok"] is True
        assert c.get("/v1/policies").json()["default_workflow"] is None
        assert "still have no default" in caplog.text and "--workflow NAME" in caplog.text
        d = c.post("/access/v1/evaluation", json=EV).json()
        assert d["decision"] is False and d["context"]["effect"] == "deny"


def test_a_workflow_added_under_two_workers_keeps_the_default_in_a_restarted_worker(tmp_path):
    """``--workers 2``: the parent decides the default and hands it to its workers, so a
    worker that uvicorn restarts after the reload (it loads the two-workflow set afresh)
    still sends AuthZEN requests without a workflow to `replies`."""
    policy_dir = server_policy_dir(tmp_path)
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
    with serve_process(str(policy_dir), "--workers", "2", "--reload-interval", "0.2", env=env) as (base, proc):
        deadline = time.monotonic() + 120  # (spawned workers import everything: slow on a loaded machine)
        while len(workers_of(proc.pid)) < 2:
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.1)
        (policy_dir / "refunds.policy").write_text(REFUNDS)
        # both workers poll their files: wait until every answer shows the new set
        seen = 0
        while seen < 20:
            assert time.monotonic() < deadline, "the workers did not reload"
            ws = httpx.get(base + "/v1/policies", timeout=10).json()["workflows"]
            seen = seen + 1 if ws == ["refunds", "replies"] else 0
        old = workers_of(proc.pid)
        victim = min(old)
        os.kill(victim, signal.SIGKILL)  # (a child of the server this test started)
        while True:  # uvicorn starts another in its place
            assert time.monotonic() < deadline, "no worker replaced the one killed"
            now = workers_of(proc.pid)
            if len(now) == 2 and victim not in now:
                break
            time.sleep(0.2)
        (fresh,) = now - old
        while decisions_by_worker(metrics).get(fresh, {}).get("allow", 0) == 0:
            assert time.monotonic() < deadline, "the restarted worker answered no evaluation"
            r = httpx.post(base + "/access/v1/evaluation", json=EV, timeout=10)  # a new connection each
            assert r.status_code == 200
            assert r.json()["decision"] is True, r.json()  # every worker, the restarted one too
        assert decisions_by_worker(metrics)[fresh] == {"allow": decisions_by_worker(metrics)[fresh]["allow"]}
