"""``--workflow NAME`` must name a workflow of the policy set: ``stopline serve`` refuses to
start otherwise (one line, exit 2, as the other startup errors), and a hot reload of a
policy set that drops it is refused (reported, counted, the last good set keeps
deciding) rather than denying every AuthZEN request that relies on the default."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("fastapi")
from server_support import ROOT, SERVER_POLICY, bearer, server_policy_dir, write_identities  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from policy_engine.server import ServerConfig, create_app  # noqa: E402
from policy_engine.server.state import WorkflowMissing  # noqa: E402

# no `context.workflow`: the server's default workflow decides
EV = {"subject": {"type": "user", "id": "a"}, "action": {"name": "log"}, "resource": {"type": "t", "id": "1"}}


def _serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "policy_engine.cli", "serve", *args, "--port", "0",
                           "--reload-interval", "0"], capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_serve_with_a_workflow_the_policies_lack_fails_in_one_line(tmp_path):
    policy_dir = server_policy_dir(tmp_path)
    r = _serve(str(policy_dir), "--workflow", "refunds")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == (f"error: --workflow refunds: the policy set {policy_dir} has no workflow "
                                "`refunds` (its workflows: replies)")
    with pytest.raises(WorkflowMissing, match="no workflow `refunds`"):
        create_app(ServerConfig(str(policy_dir), workflow="refunds", reload_interval=0))


def test_a_reload_that_drops_the_workflow_is_refused_and_the_last_good_set_stays(tmp_path):
    policy_dir = server_policy_dir(tmp_path)
    ids = str(write_identities(tmp_path / "ids.yaml"))
    app = create_app(ServerConfig(str(policy_dir), identities=ids, workflow="replies", reload_interval=0))
    with TestClient(app) as c:
        h = bearer("ops")
        first = c.post("/access/v1/evaluation", json=EV, headers=h).json()
        assert first["decision"] is True
        (policy_dir / "replies.policy").write_text(SERVER_POLICY.replace('workflow "replies"', 'workflow "answers"'))
        r = c.post("/v1/policies/reload", headers=h).json()
        assert r["ok"] is False and r["changed"] is False and r["policy_hash"] == first["context"]["policy_hash"]
        assert r["error"].startswith("--workflow replies: the policy set") and "(its workflows: answers)" in r["error"]
        assert r["diagnostics"] == r["error"]
        # the last good set keeps deciding, by the default workflow
        again = c.post("/access/v1/evaluation", json=EV, headers=h).json()
        assert again["decision"] is True and again["context"]["policy_hash"] == first["context"]["policy_hash"]
        assert c.get("/v1/policies").json()["last_reload"]["ok"] is False
        # (anonymous: the policy set named relative to itself, never the server's path)
        assert c.get("/healthz").json()["last_reload"] == {"ok": False,
                                                           "error": r["error"].replace(str(policy_dir), ".")}
        assert 'stopline_policy_reloads_total{result="rejected"} 1.0' in c.get("/metrics").text
        # the poller's path refuses it too
        app.state._reload_if_changed()
        assert c.get("/v1/policies").json()["last_reload"]["error"] == r["error"].replace(str(policy_dir), ".")
        assert c.get("/v1/policies").json()["policy_hash"] == first["context"]["policy_hash"]
        # a set that has it again is taken
        (policy_dir / "replies.policy").write_text(SERVER_POLICY.replace("within 1d", "within 2d"))
        r = c.post("/v1/policies/reload", headers=h).json()
        assert r["ok"] is True and r["changed"] is True and r["error"] is None, r
        assert c.get("/v1/policies").json()["workflows"] == ["replies"]
        again = c.post("/access/v1/evaluation", json=EV, headers=h).json()
        assert again["decision"] is True and again["context"]["policy_hash"] == r["policy_hash"]


def test_a_request_naming_no_workflow_with_no_default_is_denied_saying_so(tmp_path):
    """Two workflows and no --workflow: a request without `context.workflow` has no workflow.
    It was gated as the workflow "", denied as ``workflow `` is not declared``."""
    policy_dir = server_policy_dir(tmp_path)
    (policy_dir / "answers.policy").write_text(
        'workflow "answers" {\n  version "1"\n  owners {\n    business "B"\n    technical "T"\n  }\n'
        '  default deny\n\n  action answer {\n    system "s"\n    description "d"\n    irreversible\n'
        '    deny never when `false`\n  }\n}\n')
    ids = str(write_identities(tmp_path / "ids.yaml"))
    app = create_app(ServerConfig(str(policy_dir), identities=ids, reload_interval=0))
    with TestClient(app) as c:
        assert sorted(c.get("/v1/policies").json()["workflows"]) == ["answers", "replies"]
        r = c.post("/access/v1/evaluation", json=EV, headers=bearer("ops")).json()
        assert r["decision"] is False
        assert r["context"]["reason"] == "denied: the action has no `workflow` (a string naming its workflow)"


def test_a_request_naming_no_workflow_is_denied_when_a_tracer_is_configured(tmp_path):
    """With an OpenTelemetry tracer, the span's attributes were read as `action["workflow"]`
    before the decision: a request naming no workflow (and no default) was a 500 instead of
    the deny saying why (seen when another test had configured the global tracer first)."""
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()  # (this test's own: the global provider is left as it is)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    policy_dir = server_policy_dir(tmp_path)
    (policy_dir / "answers.policy").write_text(
        'workflow "answers" {\n  version "1"\n  owners {\n    business "B"\n    technical "T"\n  }\n'
        '  default deny\n\n  action answer {\n    system "s"\n    description "d"\n    irreversible\n'
        '    deny never when `false`\n  }\n}\n')
    app = create_app(ServerConfig(str(policy_dir), reload_interval=0))
    with TestClient(app) as c:
        app.state.tracer = provider.get_tracer("test")  # (the app is the AuthZEN fast path: its state)
        r = c.post("/access/v1/evaluation", json=EV)
        assert r.status_code == 200, r.text
        assert r.json()["decision"] is False
        assert r.json()["context"]["reason"] == "denied: the action has no `workflow` (a string naming its workflow)"
    [span] = [s for s in exporter.get_finished_spans() if s.name == "stopline.evaluate"]
    attrs = dict(span.attributes)
    assert "stopline.workflow" not in attrs and attrs["stopline.action_type"] == "log"
    assert attrs["stopline.effect"] == "deny"
