"""The server's security promises (SECURITY.md, "The server"): which routes are open with an
identities file, symmetric JWT algorithms refused, the session cookie's flags, and a log
that carries no credential and no request body, even at debug level."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402
from server_support import ROOT, TOKENS, bearer, free_port, server_policy_dir, write_identities  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from policy_engine.server import ServerConfig, create_app  # noqa: E402
from policy_engine.server.identity import Identities, IdentityConfigError  # noqa: E402

SECRET = "s3cr3t-marker-7c1e"


@pytest.fixture
def policy_dir(tmp_path):
    return server_policy_dir(tmp_path)


def test_with_identities_only_health_metrics_and_descriptions_are_open(tmp_path, policy_dir):
    ids = str(write_identities(tmp_path / "ids.yaml"))
    app = create_app(ServerConfig(str(policy_dir), ledger=f"sqlite:///{tmp_path / 'l.db'}", identities=ids,
                                  reload_interval=0))
    ev = {"subject": {"type": "u", "id": "a"}, "action": {"name": "send"}, "resource": {"type": "t", "id": "1"}}
    with TestClient(app) as c:
        for path in ("/healthz", "/metrics", "/.well-known/authzen-configuration", "/openapi.json", "/ui/login"):
            assert c.get(path).status_code == 200, path
        closed = [c.post("/access/v1/evaluation", json=ev), c.post("/access/v1/evaluations", json=ev),
                  c.post("/v1/gate", json={"action": {"workflow": "replies", "type": "log"}}),
                  c.get("/v1/queue"), c.get("/v1/ledger/head"), c.post("/v1/policies/reload"),
                  c.get("/v1/rollbacks/batches/x")]
        assert [r.status_code for r in closed] == [401] * len(closed)
        assert all(r.headers["www-authenticate"] == "Bearer" for r in closed)
        # the login sets the session cookie HttpOnly, SameSite=Strict, for /ui only, and it is
        # not the token (tests/test_server_sessions.py: what it is, Secure, CSRF)
        csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/ui/login").text).group(1)
        r = c.post("/ui/login", data={"token": TOKENS["rita"][0], "csrf": csrf}, follow_redirects=False)
        cookie = next(v for v in r.headers.get_list("set-cookie") if v.startswith("stopline_session=")).lower()
        assert r.status_code == 303 and "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie
        assert TOKENS["rita"][0].lower() not in cookie


def test_symmetric_or_unsigned_jwt_algorithms_are_refused_in_the_identities_file(tmp_path):
    (tmp_path / "k.pem").write_text("unused")
    for algs in ("[HS256]", "[none]", "[RS256, HS512]"):
        p = tmp_path / "ids.yaml"
        p.write_text(f"jwt:\n  public_key: k.pem\n  algorithms: {algs}\n")
        with pytest.raises(IdentityConfigError, match="asymmetric"):
            Identities.load(p)


def test_the_log_carries_no_credential_and_no_body(tmp_path, policy_dir):
    ids = write_identities(tmp_path / "ids.yaml")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "policy_engine.cli", "serve", str(policy_dir), "--port", str(port),
                             "--ledger", f"sqlite:///{tmp_path / 'l.db'}", "--identities", str(ids),
                             "--reload-interval", "0", "--log-level", "debug"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # (a bound on the start, on a loaded machine too)
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.1)
        body = {"subject": {"type": "user", "id": SECRET}, "action": {"name": "send"},
                "resource": {"type": "t", "id": SECRET}, "context": {"workflow": "replies", "note": SECRET}}
        r = httpx.post(base + "/access/v1/evaluation", json=body, headers=bearer("ops"), timeout=60)
        assert r.status_code == 200
        for auth in (f"Bearer {SECRET}", f"Bearer {SECRET}.{SECRET}.{SECRET}", f"Basic {SECRET}"):
            assert httpx.post(base + "/access/v1/evaluation", json=body,
                              headers={"Authorization": auth}, timeout=60).status_code == 401
            assert httpx.get(base + "/v1/queue", headers={"Authorization": auth}, timeout=60).status_code == 401
        r = httpx.post(base + "/v1/gate", content=b'{"action": {"x": "' + SECRET.encode() + b'"',
                       headers={**bearer("ops"), "content-type": "application/json"}, timeout=60)
        assert r.status_code == 400
        with httpx.Client(base_url=base, timeout=60) as ui:  # (httpx's default is 5 s)
            csrf = re.search(r'name="csrf" value="([^"]+)"', ui.get("/ui/login").text).group(1)
            assert ui.post("/ui/login", data={"token": SECRET, "csrf": csrf}).status_code == 401
            assert ui.post("/ui/login", data={"token": SECRET}).status_code == 403  # (no CSRF token)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    log = out + err
    assert "Uvicorn running" in log or "Application startup complete" in log  # debug logging was on
    assert SECRET not in log
    assert not any(tok in log for tok, _ in TOKENS.values())
