"""Hostile requests and configurations (in-process ASGI client, and ``stopline serve`` as a
subprocess): bodies that are not strict JSON (NaN or Infinity in any spelling, integers
beyond +/-(2^53-1), a key given twice, a lone surrogate, not UTF-8) are a 400 problem on
every route and record nothing; a /v1 body sent as another content type is a 415; the
reviewer's forms never answer a 500 (a CSRF field that is not ASCII, a server without a
ledger); an identities file that cannot be used is refused in one line, on start and on
reload (a NaN or infinite `leeway` would accept expired JWTs); a port that cannot be
listened on stops `stopline serve` in one line."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi")
import jwt  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from server_support import ROOT, TOKENS, bearer, server_policy_dir, write_identities  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from policy_engine.server import ServerConfig, create_app  # noqa: E402
from policy_engine.server.identity import Identities, IdentityConfigError  # noqa: E402

PROBLEM = "application/problem+json"
JSON = {"content-type": "application/json"}


@pytest.fixture
def policy_dir(tmp_path):
    return server_policy_dir(tmp_path)


def client(tmp_path, policy_dir, *, ledger=True) -> TestClient:
    ids = str(write_identities(tmp_path / "ids.yaml"))
    app = create_app(ServerConfig(str(policy_dir), ledger=f"sqlite:///{tmp_path / 'l.db'}" if ledger else None,
                                  identities=ids, reload_interval=0))
    return TestClient(app, raise_server_exceptions=False)


def authzen(value: bytes) -> bytes:
    """An AuthZEN evaluation of the repair action `log` (allowed) carrying ``value``."""
    return (b'{"subject": {"type": "u", "id": "a"}, "action": {"name": "log", "properties": {"v": ' + value
            + b'}}, "resource": {"type": "t", "id": "1"}, "context": {"workflow": "replies"}}')


def gate(value: bytes) -> bytes:
    return b'{"action": {"workflow": "replies", "type": "log", "v": ' + value + b"}}"


NOT_STRICT_JSON = {
    "NaN": b"NaN",
    "Infinity": b"-Infinity",
    "a number too large for a double (Infinity)": b"1e400",
    "an integer beyond 2^53-1": b"9007199254740992",
    "a negative integer beyond -(2^53-1)": b"-18446744073709551616",
    "a key given twice": b'{"k": 1, "k": 2}',
    "a lone surrogate": b'"\\ud800"',
    "a lone low surrogate": b'"x\\uDC00y"',
}


@pytest.mark.parametrize("value", list(NOT_STRICT_JSON.values()), ids=list(NOT_STRICT_JSON))
def test_bodies_that_are_not_strict_json_are_a_400_everywhere_and_record_nothing(tmp_path, policy_dir, value):
    with client(tmp_path, policy_dir) as c:
        h = {**bearer("ops"), **JSON}
        size = c.get("/v1/ledger/head", headers=h).json()["size"]
        answers = {
            "authzen": c.post("/access/v1/evaluation", content=authzen(value), headers=h),
            "authzen batch": c.post("/access/v1/evaluations", content=b'{"evaluations": [' + authzen(value) + b"]}",
                                    headers=h),
            "gate": c.post("/v1/gate", content=gate(value), headers=h),
            "gate batch": c.post("/v1/gate/batch", content=b'{"actions": [' + gate(value)[11:-1] + b"]}", headers=h),
            "execution": c.post("/v1/executions", content=b'{"receipt": {"v": ' + value + b'}, "action": '
                                b'{"workflow": "replies", "type": "log"}}', headers=h),
            "resume": c.post("/v1/workflows/replies/resume", content=b'{"evidence": {"v": ' + value + b"}}",
                             headers=h),
            "approval": c.post("/v1/approvals", content=b'{"subject": "x", "reason": ' + value + b"}", headers=h),
        }
        for where, r in answers.items():
            assert r.status_code == 400, (where, r.status_code, r.text)
            assert r.headers["content-type"] == PROBLEM, where
            assert r.json()["type"].endswith("/malformed-json") and "decision" not in r.json(), where
        assert c.get("/v1/ledger/head", headers=h).json()["size"] == size  # nothing recorded


def test_a_lone_surrogate_in_the_workflow_is_a_400_not_a_500(tmp_path, policy_dir):
    with client(tmp_path, policy_dir) as c:
        h = {**bearer("ops"), **JSON}
        ctx = b'{"subject": {"type": "u", "id": "a"}, "action": {"name": "log"}, "resource": {"type": "t", "id": "1"}, '
        for path, body in (("/v1/gate", b'{"action": {"workflow": "\\ud800", "type": "log"}}'),
                           ("/v1/gate/batch", b'{"actions": [{"workflow": "\\ud800", "type": "log"}]}'),
                           ("/access/v1/evaluation", ctx + b'"context": {"workflow": "\\ud800"}}')):
            r = c.post(path, content=body, headers=h)
            assert r.status_code == 400 and "surrogate" in r.json()["detail"], (path, r.text)


@pytest.mark.parametrize("body", [
    json.dumps({"subject": {"type": "u", "id": "\u00e9"}, "action": {"name": "log"},
                "resource": {"type": "t", "id": "1"}}).encode("utf-16"),
    '{"subject": {"type": "u", "id": "\u00e9"}, "action": {"name": "log"}, "resource": {"type": "t", "id": "1"}}'
    .encode("latin-1"),
], ids=["utf-16", "latin-1"])
def test_a_body_that_is_not_utf8_is_a_400(tmp_path, policy_dir, body):
    with client(tmp_path, policy_dir) as c:
        h = {**bearer("ops"), **JSON}
        assert c.post("/access/v1/evaluation", content=body, headers=h).status_code == 400
        assert c.post("/v1/gate", content=body, headers=h).status_code == 400


def test_strict_json_still_takes_what_json_allows(tmp_path, policy_dir):
    with client(tmp_path, policy_dir) as c:
        h = {**bearer("ops"), **JSON}
        for value in (b"9007199254740991", b"-9007199254740991", b"1.5e300", b'"\\ud83d\\ude00"', b'"\\\\ud800"',
                      b'{"a": 1, "b": {"a": 2}}'):
            r = c.post("/access/v1/evaluation", content=authzen(value), headers=h)
            assert r.status_code == 200 and r.json()["decision"] is True, (value, r.text)
            r = c.post("/v1/gate", content=gate(value), headers=h)
            assert r.status_code == 200 and r.json()["decision"]["effect"] == "allow", (value, r.text)


def test_a_runtime_body_in_another_content_type_is_a_415(tmp_path, policy_dir):
    with client(tmp_path, policy_dir) as c:
        body = json.dumps({"action": {"workflow": "replies", "type": "log"}})
        for headers in ({"content-type": "text/plain"}, {"content-type": "application/x-www-form-urlencoded"}, {}):
            r = c.post("/v1/gate", content=body, headers={**bearer("ops"), **headers})
            assert r.status_code == 415 and r.headers["content-type"] == PROBLEM, (headers, r.text)
        r = c.post("/v1/gate", content=body,
                   headers={**bearer("ops"), "content-type": "application/json; charset=utf-8"})
        assert r.status_code == 200
        assert c.post("/v1/expire", headers=bearer("ops")).status_code == 200  # (no body, no content type)


# ---------------------------------------------------------------------------------- the reviewer's forms
def _plan(c) -> str:
    h = bearer("rita")
    g = c.post("/v1/gate", json={"action": {"workflow": "replies", "type": "send", "amount": 50, "promise": False}},
               headers=h).json()
    x = c.post("/v1/executions", json={"decision_id": g["decision_id"], "receipt": {"message": "m", "ticket": "t"}},
               headers=h).json()
    return c.post("/v1/rollbacks", json={"execution_id": x["execution_id"], "scenario": "customer_request",
                                         "reason": "wrong"}, headers=h).json()["rollback_id"]


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def sign_in(c, who: str) -> str:
    """Sign in through the form; the session's CSRF token (from the queue page)."""
    r = c.post("/ui/login", data={"token": TOKENS[who][0], "csrf": csrf_of(c.get("/ui/login").text)})
    assert r.status_code == 200 and r.url.path == "/ui", r.text[:300]
    return csrf_of(r.text)


def test_a_csrf_field_that_is_not_ascii_is_refused_not_a_500(tmp_path, policy_dir):
    with client(tmp_path, policy_dir) as c:
        rb = _plan(c)
        csrf = sign_in(c, "casey")
        for bad in ("\u00e9", "\u00e9" * 64, "\U0001f600"):
            r = c.post(f"/ui/plans/{rb}", data={"verdict": "approve", "csrf": bad}, follow_redirects=False)
            assert r.status_code == 403 and "the form expired" in r.text, r.text[:300]
            r = c.post("/ui/batches/nope", data={"verdict": "approve", "csrf": bad}, follow_redirects=False)
            assert r.status_code == 404 and r.headers["content-type"] == PROBLEM
        assert c.get(f"/v1/subjects/{rb}", headers=bearer("rita")).json()["status"] == "pending"  # nothing recorded
        r = c.post(f"/ui/plans/{rb}", data={"verdict": "approve", "csrf": csrf}, follow_redirects=False)
        assert r.status_code == 303  # the session's own token still works


def test_deciding_on_a_server_without_a_ledger_is_a_404_not_a_500(tmp_path, policy_dir):
    with client(tmp_path, policy_dir, ledger=False) as c:
        form = {"verdict": "approve", "csrf": sign_in(c, "casey")}
        for path in ("/ui/plans/x", "/ui/batches/x"):
            r = c.post(path, data=form, follow_redirects=False)
            assert r.status_code == 404 and r.json()["type"].endswith("/no-ledger"), (path, r.text)


# ---------------------------------------------------------------------------------- identities files
BAD_IDENTITIES = {
    "tokens not a list": "tokens: 5\n",
    "leeway not a number": "jwt:\n  public_key: k.pem\n  leeway: soon\n",
    "leeway NaN": "jwt:\n  public_key: k.pem\n  leeway: .nan\n",
    "leeway infinite": "jwt:\n  public_key: k.pem\n  leeway: .inf\n",
    "leeway negative": "jwt:\n  public_key: k.pem\n  leeway: -5\n",
    "an algorithm that is a list": "jwt:\n  public_key: k.pem\n  algorithms: [[RS256]]\n",
    "a key path that is a list": "jwt:\n  public_key: [k.pem]\n",
    "a principal claim that is a list": "jwt:\n  public_key: k.pem\n  principal_claim: [sub]\n",
    "an audience that is a number": "jwt:\n  public_key: k.pem\n  audience: 5\n",
    "keys of mixed types": "1: x\nfoo: y\n",
}


def _pem(tmp_path):
    key = Ed25519PrivateKey.generate()
    (tmp_path / "k.pem").write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    return key


@pytest.mark.parametrize("text", list(BAD_IDENTITIES.values()), ids=list(BAD_IDENTITIES))
def test_an_identities_file_that_cannot_be_used_is_a_configuration_error(tmp_path, text):
    _pem(tmp_path)
    p = tmp_path / "ids.yaml"
    p.write_text(text)
    with pytest.raises(IdentityConfigError, match="ids.yaml"):
        Identities.load(p)


def test_an_identities_file_that_is_not_utf8_is_a_configuration_error(tmp_path):
    p = tmp_path / "ids.yaml"
    p.write_bytes(b"\xff\xfetokens: []\n")
    with pytest.raises(IdentityConfigError, match="not UTF-8"):
        Identities.load(p)


def test_a_year_old_jwt_is_refused_whatever_the_leeway_allows(tmp_path):
    key = _pem(tmp_path)
    token = jwt.encode({"sub": "jules", "exp": int(time.time()) - 365 * 86400}, key, algorithm="EdDSA")
    p = tmp_path / "ids.yaml"
    for leeway in (".nan", ".inf", "100000000"):
        p.write_text(f"jwt:\n  public_key: k.pem\n  algorithms: [EdDSA]\n  leeway: {leeway}\n")
        try:
            ids = Identities.load(p)
        except IdentityConfigError:
            continue  # refused: the server does not start with it, and a reload keeps the last good version
        with pytest.raises(PermissionError):
            ids.authenticate(f"Bearer {token}")


def test_reloading_a_broken_identities_file_is_reported_not_a_500(tmp_path, policy_dir):
    with client(tmp_path, policy_dir) as c:
        (tmp_path / "ids.yaml").write_text("tokens: 5\n")
        r = c.post("/v1/identities/reload", headers=bearer("ops"))
        assert r.status_code == 200 and r.json()["ok"] is False and "tokens" in r.json()["error"]
        health = c.get("/healthz").json()["identities"]["last_reload"]
        assert health["ok"] is False and "ids.yaml" in health["error"]
        assert c.get("/v1/queue", headers=bearer("ops")).status_code == 200  # the last good version stays


# ---------------------------------------------------------------------------------- stopline serve
def _serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "policy_engine.cli", "serve", *args, "--reload-interval", "0"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_serve_on_a_port_in_use_fails_in_one_line(policy_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = _serve(str(policy_dir), "--port", str(port))
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"


def test_serve_on_a_host_that_does_not_resolve_fails_in_one_line(policy_dir, tmp_path):
    ids = write_identities(tmp_path / "ids.yaml")
    r = _serve(str(policy_dir), "--host", "no-such-host.invalid", "--port", "0", "--identities", str(ids))
    assert r.returncode == 2 and r.stderr.startswith("error: cannot listen on no-such-host.invalid:0")
    assert len(r.stderr.strip().splitlines()) == 1


def test_serve_with_a_broken_identities_file_fails_in_one_line(policy_dir, tmp_path):
    (tmp_path / "ids.yaml").write_text("tokens: 5\n")
    r = _serve(str(policy_dir), "--port", "0", "--identities", str(tmp_path / "ids.yaml"))
    assert r.returncode == 2 and "internal error" not in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: ") and "ids.yaml" in r.stderr and "`tokens` is a list" in r.stderr
