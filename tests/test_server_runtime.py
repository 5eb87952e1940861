"""The runtime over HTTP (in-process ASGI client): identity from authentication only
(hashed API tokens, JWTs against a PEM key or a JWKS file), the lifecycle through the
native endpoints, recorded AuthZEN decisions, proofs, hot reload, metrics, problems."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi")
import jwt  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from server_support import ROOT, SERVER_POLICY, bearer, server_policy_dir, write_identities  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from policy_engine.server import ServerConfig, create_app  # noqa: E402

PROBLEM = "application/problem+json"


def send(amount: float, **extra) -> dict:
    return {"workflow": "replies", "type": "send", "amount": amount, "promise": False, **extra}


@pytest.fixture
def policy_dir(tmp_path):
    return server_policy_dir(tmp_path)


def client(tmp_path, policy_dir, *, identities=True, extra_ids: str = "", **kw) -> TestClient:
    ids = str(write_identities(tmp_path / "ids.yaml", extra_ids)) if identities else None
    app = create_app(ServerConfig(str(policy_dir), ledger=f"sqlite:///{tmp_path / 'l.db'}", identities=ids,
                                  reload_interval=0, **kw))
    return TestClient(app)


def test_without_identities_gates_but_refuses_approvals(tmp_path, policy_dir):
    with client(tmp_path, policy_dir, identities=False) as c:
        g = c.post("/v1/gate", json={"action": send(500)})
        assert g.status_code == 200 and g.json()["decision"]["effect"] == "require_approval"
        r = c.post("/v1/approvals", json={"subject": g.json()["decision_id"], "principal": "rita"})
        assert r.status_code == 403 and r.headers["content-type"] == PROBLEM
        assert "--identities" in r.json()["detail"]
        assert c.get(f"/v1/subjects/{g.json()['decision_id']}").json()["status"] == "pending"
        assert c.post("/ui/login", data={"token": "anything"}).status_code == 403


def test_identity_comes_from_the_credential(tmp_path, policy_dir):
    with client(tmp_path, policy_dir) as c:
        assert c.post("/v1/gate", json={"action": send(500)}).status_code == 401
        assert (
            c.post("/v1/gate", json={"action": send(500)}, headers={"Authorization": "Bearer nope"}).status_code == 401
        )
        d = c.post("/v1/gate", json={"action": send(500)}, headers=bearer("ops")).json()["decision_id"]
        # another principal named in the body: refused, nothing recorded
        r = c.post("/v1/approvals", json={"subject": d, "principal": "rita"}, headers=bearer("casey"))
        assert r.status_code == 403 and r.json()["type"].endswith("principal-mismatch")
        r = c.post("/v1/approvals", json={"subject": d, "roles": ["reviewer"]}, headers=bearer("casey"))
        assert r.status_code == 403
        # a caller without the role: recorded, not counted
        r = c.post("/v1/approvals", json={"subject": d}, headers=bearer("casey")).json()
        assert r["counted"] is False and r["status"] == "pending"
        r = c.post("/v1/approvals", json={"subject": d, "principal": "rita", "reason": "ok"}, headers=bearer("rita"))
        assert r.status_code == 200 and r.json()["counted"] is True and r.json()["status"] == "approved"
        hist = c.get(f"/v1/history/{d}", headers=bearer("ops")).json()
        assert [a["body"]["principal"] for a in hist["decision"]["approvals"]] == ["casey", "rita"]


def test_lifecycle_over_http(tmp_path, policy_dir):
    with client(tmp_path, policy_dir) as c:
        g = c.post("/v1/gate", json={"action": send(50, id="m1")}, headers=bearer("ops")).json()
        assert g["decision"]["effect"] == "allow"
        x = c.post(
            "/v1/executions",
            json={"decision_id": g["decision_id"], "receipt": {"message": "hi", "ticket": 1}},
            headers=bearer("ops"),
        ).json()
        assert x["authorized"] is True
        r = c.post(
            "/v1/rollbacks",
            json={
                "execution_id": x["execution_id"],
                "scenario": "customer_request",
                "reason": "asked",
                "requested_by": "casey",
            },
            headers=bearer("rita"),
        )
        assert r.status_code == 403  # the requester is the caller
        r = c.post(
            "/v1/rollbacks",
            json={"execution_id": x["execution_id"], "scenario": "customer_request", "reason": "asked"},
            headers=bearer("rita"),
        ).json()
        rb = r["rollback_id"]
        assert 'stopline_queue_depth{route="customer_service"} 1.0' in c.get("/metrics").text
        q = c.get("/v1/queue", params={"route": "customer_service"}, headers=bearer("ops")).json()["queue"]
        assert [i["rollback_id"] for i in q] == [rb] and q[0]["requested_by"] == "rita"
        assert c.post(f"/v1/rollbacks/{rb}/claim", json={}, headers=bearer("casey")).json()["recorded"] is True
        a = c.post("/v1/approvals", json={"subject": rb}, headers=bearer("casey")).json()
        assert a["status"] == "approved"
        duties = c.get(f"/v1/subjects/{rb}", headers=bearer("ops")).json()["duties"]
        for duty in duties:
            s = c.post(
                f"/v1/rollbacks/{rb}/steps",
                json={"duty": duty, "status": "completed", "key": duty},
                headers=bearer("ops"),
            )
            assert s.status_code == 200
        assert c.get(f"/v1/subjects/{rb}", headers=bearer("ops")).json()["status"] == "completed"
        assert c.get("/v1/workflows/replies", headers=bearer("ops")).json()["status"] == "running"
        assert (
            c.post("/v1/workflows/replies/resume", json={"evidence": {}}, headers=bearer("ops")).json()["recorded"]
            is False
        )
        # the ledger's proofs
        head = c.get("/v1/ledger/head", headers=bearer("ops")).json()
        from policy_engine.ledger import ConsistencyProof, InclusionProof

        p = c.get(f"/v1/ledger/proofs/inclusion/{rb}", headers=bearer("ops")).json()
        assert InclusionProof.from_json(p).verify() and p["root"] == head["root"]
        p = c.get("/v1/ledger/proofs/consistency", params={"old_size": 2}, headers=bearer("ops")).json()
        assert ConsistencyProof.from_json(p).verify()
        assert c.get("/v1/ledger/checkpoints", headers=bearer("ops")).json() == {"checkpoints": []}
        # metrics: the queue depth per route is there (the plan is completed: not open)
        assert "stopline_ledger_append_duration_seconds" in c.get("/metrics").text


def test_recorded_authzen_decisions_are_ledger_entries(tmp_path, policy_dir):
    with client(tmp_path, policy_dir) as c:
        req = {
            "subject": {"type": "agent", "id": "a1"},
            "action": {"name": "send"},
            "resource": {"type": "ticket", "id": "T-1"},
            "context": {"workflow": "replies"},
        }
        r = c.post("/access/v1/evaluation", json=req, headers=bearer("ops"))
        body = r.json()
        # no amount: the rules error and the workflow default (require_approval) applies: never allow
        assert r.status_code == 200 and body["decision"] is False and body["context"]["recorded"] is True
        h = c.get(f"/v1/history/{body['context']['decision_id']}", headers=bearer("ops")).json()
        assert h["entry"]["kind"] == "decision"
        assert h["entry"]["body"]["action"]["subject"] == {"type": "agent", "id": "a1"}
        assert c.post("/access/v1/evaluation", json=req).status_code == 401


def _appends(c) -> float:
    """The recorder's ledger transactions so far (`stopline_ledger_append_duration_seconds`)."""
    for line in c.get("/metrics").text.splitlines():
        if line.startswith("stopline_ledger_append_duration_seconds_count"):
            return float(line.split()[-1])
    return 0.0


def test_a_recorded_authzen_batch_shares_ledger_transactions_in_order(tmp_path):
    """An `execute_all` batch hands every item to the recorder at once: a few ledger
    transactions for 300 items, not one each; each answer is the one the item gets alone,
    and the entries follow the request's order. An item missing a part is a 400 before any
    item is recorded; `deny_on_first_deny` records nothing after its first deny."""
    rick = "CiRmZDA2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"
    beth = "CiRmZDM2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"
    todo = {"type": "todo", "id": "t1", "properties": {"ownerID": "rick@the-citadel.com"}}
    items = [{"subject": {"type": "user", "id": (rick, beth, "nobody")[i % 3]},
              "action": {"name": ("can_read_todos", "can_delete_todo")[i % 2]}, "resource": todo} for i in range(300)]
    with client(tmp_path, ROOT / "examples" / "authzen-todo") as c:
        h = bearer("ops")
        alone = [c.post("/access/v1/evaluation", json=it, headers=h).json()["decision"] for it in items[:6]]
        assert alone == [True, False, False, True, True, False]
        before = _appends(c)
        r = c.post("/access/v1/evaluations", json={"evaluations": items}, headers=h)
        assert r.status_code == 200, r.text
        out = r.json()["evaluations"]
        assert [e["decision"] for e in out] == alone * 50
        assert all(e["context"]["recorded"] for e in out) and len({e["context"]["decision_id"] for e in out}) == 300
        grouped = _appends(c) - before
        assert 1 <= grouped <= 100, grouped  # (one transaction per item before)
        seqs = [c.get(f"/v1/history/{e['context']['decision_id']}", headers=h).json()["entry"]["seq"]
                for e in out[::37]]
        assert seqs == sorted(seqs)
        head = c.get("/v1/ledger/head", headers=h).json()["size"]
        bad = c.post("/access/v1/evaluations", json={"evaluations": items[:5] + [{"action": {"name": "x"}}]},
                     headers=h)
        assert bad.status_code == 400 and bad.json()["detail"].startswith("/evaluations/5/subject")
        assert c.get("/v1/ledger/head", headers=h).json()["size"] == head  # nothing recorded
        first = c.post("/access/v1/evaluations", json={"evaluations": items[:6],
                                                        "options": {"evaluations_semantic": "deny_on_first_deny"}},
                       headers=h).json()["evaluations"]
        assert [e["decision"] for e in first] == [True, False]
        assert c.get("/v1/ledger/head", headers=h).json()["size"] == head + 2


def test_unknown_ids_and_bad_bodies_are_problems(tmp_path, policy_dir):
    with client(tmp_path, policy_dir) as c:
        h = bearer("rita")
        for r in (
            c.get("/v1/history/nope", headers=h),
            c.get("/v1/subjects/nope", headers=h),
            c.post("/v1/approvals", json={"subject": "nope"}, headers=h),
        ):
            assert r.status_code == 404 and r.headers["content-type"] == PROBLEM
        r = c.post("/v1/gate", content=b"{", headers={**h, "content-type": "application/json"})
        assert r.status_code == 400 and r.headers["content-type"] == PROBLEM
        r = c.post("/v1/gate", json={"action": send(1), "now": "2020-01-01T00:00:00Z"}, headers=h)
        assert r.status_code == 422 and r.json()["errors"][0]["pointer"] == "/now"
        r = c.post("/v1/rollbacks/x/steps", json={"duty": "d", "status": "done"}, headers=h)
        assert r.status_code == 422


def _ed25519(tmp_path, name: str):
    key = Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / f"{name}.pem").write_bytes(pem)
    return key


def _token(key, sub: str = "jules", roles=("reviewer",), **claims) -> str:
    body = {"sub": sub, "roles": list(roles), "exp": int(time.time()) + 600, "aud": "stopline", **claims}
    return jwt.encode(body, key, algorithm="EdDSA")


@pytest.mark.parametrize("source", ["pem", "jwks"])
def test_jwt_gives_principal_and_roles(tmp_path, policy_dir, source):
    key = _ed25519(tmp_path, "idp")
    if source == "pem":
        conf = "jwt:\n  public_key: idp.pem\n  algorithms: [EdDSA]\n  audience: stopline\n"
    else:
        jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key()))
        (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "k1"}]}))
        conf = "jwt:\n  jwks: jwks.json\n  algorithms: [EdDSA]\n  audience: stopline\n"
    other = Ed25519PrivateKey.generate()
    with client(tmp_path, policy_dir, extra_ids=conf) as c:
        d = c.post("/v1/gate", json={"action": send(500)}, headers=bearer("ops")).json()["decision_id"]

        def approve(tok: str, **body):
            return c.post("/v1/approvals", json={"subject": d, **body}, headers={"Authorization": f"Bearer {tok}"})

        assert approve(_token(other)).status_code == 401  # signed by another key
        assert approve(_token(key, exp=int(time.time()) - 3600)).status_code == 401  # expired
        assert approve(_token(key, aud="elsewhere")).status_code == 401
        unsigned = jwt.encode(
            {"sub": "jules", "roles": ["reviewer"], "exp": int(time.time()) + 60, "aud": "stopline"},
            None,
            algorithm="none",
        )
        assert approve(unsigned).status_code == 401
        assert approve(_token(key), principal="rita").status_code == 403
        r = approve(_token(key, headers=None) if False else _token(key))
        assert r.status_code == 200 and r.json()["counted"] is True
        assert (
            c.get(f"/v1/history/{d}", headers=bearer("ops")).json()["decision"]["approvals"][0]["body"]["principal"]
            == "jules"
        )


def test_hot_reload_keeps_the_last_good_set_and_says_why(tmp_path, policy_dir):
    with client(tmp_path, policy_dir, identities=False) as c:
        before = c.get("/healthz").json()["policy_hash"]
        (policy_dir / "replies.policy").write_text(SERVER_POLICY.replace("allow small when", "allow small whn"))
        r = c.post("/v1/policies/reload").json()
        assert r["ok"] is False and r["policy_hash"] == before
        assert "replies.policy:" in r["diagnostics"]
        assert c.get("/healthz").json()["last_reload"]["ok"] is False
        g = c.post("/v1/gate", json={"action": send(50)}).json()
        assert g["decision"]["policy_hash"] == before and g["decision"]["effect"] == "allow"
        (policy_dir / "replies.policy").write_text(SERVER_POLICY.replace("amount <= 100.0", "amount <= 10.0"))
        r = c.post("/v1/policies/reload").json()
        assert r["ok"] is True and r["changed"] is True and r["policy_hash"] != before
        g = c.post("/v1/gate", json={"action": send(50)}).json()
        assert g["decision"]["policy_hash"] == r["policy_hash"] and g["decision"]["effect"] == "require_approval"
        assert 'stopline_policy_reloads_total{result="rejected"} 1.0' in c.get("/metrics").text


def test_openapi_describes_every_runtime_operation(tmp_path, policy_dir):
    with client(tmp_path, policy_dir, identities=False) as c:
        paths = c.get("/openapi.json").json()["paths"]
    for p in (
        "/v1/gate",
        "/v1/gate/batch",
        "/v1/approvals",
        "/v1/subjects/{subject_id}",
        "/v1/executions",
        "/v1/rollbacks",
        "/v1/rollbacks/{rollback_id}/claim",
        "/v1/decisions/{decision_id}/claim",
        "/v1/rollbacks/{rollback_id}/steps",
        "/v1/subjects/{subject_id}/cancel",
        "/v1/queue",
        "/v1/expire",
        "/v1/workflows/{workflow}/resume",
        "/v1/history/{entry_id}",
        "/v1/ledger/proofs/inclusion/{entry_id}",
        "/v1/ledger/proofs/consistency",
        "/v1/ledger/checkpoints",
        "/access/v1/evaluation",
        "/access/v1/evaluations",
    ):
        assert p in paths, p


def test_importing_policy_engine_does_not_load_the_web_stack():
    code = (
        "import sys, policy_engine, policy_engine.cli, policy_engine.server; "
        "print(any(m.split('.')[0] in ('fastapi', 'starlette', 'uvicorn', 'jinja2') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_serve_refuses_bad_configuration_in_one_line(tmp_path, policy_dir):
    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "policy_engine.cli", "serve", str(policy_dir), *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )

    r = run("--host", "0.0.0.0")
    assert r.returncode == 2 and "--identities" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "bad.yaml").write_text("tokens:\n  - principal: x\n    sha256: abc\n")
    r = run("--identities", str(tmp_path / "bad.yaml"))
    assert r.returncode == 2 and "bad.yaml" in r.stderr and "64 hex" in r.stderr and "Traceback" not in r.stderr
    (policy_dir / "replies.policy").write_text("workflow {")
    r = run()
    assert r.returncode == 2 and "replies.policy:1:" in r.stderr and "Traceback" not in r.stderr


def test_opentelemetry_span_per_evaluation_when_a_tracer_is_configured(tmp_path):
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with TestClient(create_app(ServerConfig(str(ROOT / "examples" / "authzen-todo"), reload_interval=0))) as c:
        req = {
            "subject": {"type": "user", "id": "beth@the-smiths.com"},
            "action": {"name": "can_create_todo"},
            "resource": {"type": "todo", "id": "1"},
        }
        body = c.post("/access/v1/evaluation", json=req).json()
    spans = [s for s in exporter.get_finished_spans() if s.name == "stopline.evaluate"]
    assert len(spans) == 1
    attrs = dict(spans[0].attributes)
    assert attrs["stopline.effect"] == "deny" and attrs["stopline.action_type"] == "can_create_todo"
    assert attrs["stopline.decision_id"] == body["context"]["decision_id"]


def test_only_the_server_package_imports_the_web_stack():
    import re

    pat = re.compile(r"^\s*(?:from|import)\s+(fastapi|starlette|uvicorn|jinja2|prometheus_client|jwt)\b", re.M)
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "policy_engine").rglob("*.py")
        if "server" not in p.relative_to(ROOT / "policy_engine").parts and pat.search(p.read_text())
    ]
    assert offenders == []


def test_every_route_is_timed_under_its_template_and_each_evaluation_is_timed(tmp_path, policy_dir):
    with client(tmp_path, policy_dir, identities=False) as c:
        c.get("/v1/subjects/0d9609ff-secret-id")
        c.get("/v1/history/another-raw-id")
        c.get("/no/such/route")
        ev = {"subject": {"type": "agent", "id": "a1"}, "action": {"name": "log"},
              "resource": {"type": "t", "id": "1"}, "context": {"workflow": "replies"}}
        c.post("/access/v1/evaluations", json={"evaluations": [ev, ev, ev]})
        text = c.get("/metrics").text
    count = 'stopline_request_duration_seconds_count{route="%s"} 1.0'
    for route in ("/v1/subjects/{subject_id}", "/v1/history/{entry_id}", "unmatched", "/access/v1/evaluations"):
        assert count % route in text, route
    assert "stopline_evaluation_duration_seconds_count 3.0" in text
    assert "secret-id" not in text and "another-raw-id" not in text and "/no/such" not in text


def test_an_executor_claims_a_decision_once_over_http(tmp_path, policy_dir):
    with client(tmp_path, policy_dir) as c:
        d = c.post("/v1/gate", json={"action": send(500)}, headers=bearer("ops")).json()["decision_id"]
        early = c.post(f"/v1/decisions/{d}/claim", json={}, headers=bearer("ops")).json()
        assert (early["recorded"], early["status"]) == (False, "pending")
        assert c.post("/v1/approvals", json={"subject": d}, headers=bearer("rita")).json()["status"] == "approved"
        r = c.post(f"/v1/decisions/{d}/claim", json={"principal": "rita"}, headers=bearer("ops"))
        assert r.status_code == 403  # the claimant is the caller, never the body
        won = c.post(f"/v1/decisions/{d}/claim", json={}, headers=bearer("ops")).json()
        assert (won["recorded"], won["claimed_by"]) == (True, "ops")
        lost = c.post(f"/v1/decisions/{d}/claim", json={}, headers=bearer("casey")).json()
        assert (lost["recorded"], lost["claimed_by"]) == (False, "ops")
        deny = c.post("/v1/approvals", json={"subject": d, "verdict": "deny"}, headers=bearer("rita")).json()
        assert deny["recorded"] is False and "claimed for its execution by ops" in deny["reason"]
        st = c.get(f"/v1/subjects/{d}", headers=bearer("ops")).json()
        assert (st["status"], st["claimed_by"], st["claim_id"]) == ("approved", "ops", won["transition_id"])
        x = c.post("/v1/executions", json={"decision_id": d, "receipt": {"message": "hi", "ticket": 1}},
                   headers=bearer("ops")).json()
        assert x["authorized"] is True
        rb = c.post(f"/v1/decisions/{x['execution_id']}/claim", json={}, headers=bearer("ops"))
        assert rb.status_code == 422 and "not a `decision`" in rb.json()["detail"]
