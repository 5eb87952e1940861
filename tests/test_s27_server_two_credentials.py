"""Session 27: a request with two ``Authorization`` header lines is refused (401), not
authenticated as the first.

The AuthZEN fast path took the first ``Authorization`` line and the FastAPI routes
(``request.headers.get``) did too, ignoring the second: ``Bearer <casey's token>`` followed by
``Bearer <anything>`` was casey, and a gate decision was recorded with casey as its caller. Two
lines are two credentials (a client's, and one a proxy or gateway in front added): which one is
the caller is not for the server to guess, and a front end that checks the last one while the
server takes the first lets a client be whoever it names first (RFC 9110, 5.3: a field that is
a single value, sent twice, is an error a recipient may reject). As ``Idempotency-Key`` given
twice is refused, so is a second credential: 401 on every authenticated route, on the fast
path and behind FastAPI routing alike, nothing decided or recorded.
"""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import pytest

pytest.importorskip("fastapi")
from server_support import TOKENS, serve, server_policy_dir, write_identities  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from policy_engine.server import ServerConfig, create_app  # noqa: E402

EVALUATION = {"subject": {"type": "user", "id": "u1"}, "action": {"name": "log"},
              "resource": {"type": "note", "id": "n1"}, "context": {"workflow": "replies"}}
GATE = {"action": {"workflow": "replies", "type": "log"}}
CASEY, RITA = (f"Bearer {TOKENS[w][0]}" for w in ("casey", "rita"))


def _post(base: str, path: str, body: dict, credentials: list[str]) -> tuple[int, dict]:
    """POST over a real connection, each credential on its own ``Authorization`` line."""
    u = urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        data = json.dumps(body).encode()
        conn.putrequest("POST", path)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(data)))
        for c in credentials:
            conn.putheader("Authorization", c)
        conn.endheaders(data)
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"null")
    finally:
        conn.close()


def _size(base: str) -> int:
    return _get_json(base, "/v1/ledger/head")["size"]


def _get_json(base: str, path: str) -> dict:
    u = urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request("GET", path, headers={"Authorization": CASEY})
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("two-credentials")
    ids = write_identities(tmp / "ids.yaml")
    ids.chmod(0o600)
    with serve(str(server_policy_dir(tmp)), "--ledger", f"sqlite:///{tmp}/ledger.db", "--identities", str(ids),
               "--reload-interval", "0") as base:
        yield base


@pytest.mark.parametrize("path,body", [("/access/v1/evaluation", EVALUATION), ("/v1/gate", GATE)])
@pytest.mark.parametrize("credentials", [[CASEY, "Bearer nope"], ["Bearer nope", CASEY], [CASEY, RITA], [CASEY, CASEY]])
def test_two_credentials_are_refused_and_nothing_is_recorded(server, path, body, credentials):
    before = _size(server)
    status, problem = _post(server, path, body, credentials)
    assert status == 401, problem
    assert "more than one Authorization header" in problem["detail"]
    assert _size(server) == before  # nothing decided, nothing recorded


@pytest.mark.parametrize("path,body", [("/access/v1/evaluation", EVALUATION), ("/v1/gate", GATE)])
def test_one_credential_is_taken_as_before(server, path, body):
    status, answer = _post(server, path, body, [CASEY])
    assert status == 200, answer


@pytest.mark.parametrize("fast_path", [True, False])
def test_both_paths_refuse_two_credentials(tmp_path, fast_path):
    """The raw ASGI fast path and the FastAPI routes (``--no-fast-path``) judge alike."""
    ids = write_identities(tmp_path / "ids.yaml")
    ids.chmod(0o600)
    cfg = ServerConfig(str(server_policy_dir(tmp_path)), ledger=f"sqlite:///{tmp_path}/ledger.db",
                       identities=str(ids), reload_interval=0, fast_path=fast_path)
    with TestClient(create_app(cfg)) as c:
        for path, body in (("/access/v1/evaluation", EVALUATION), ("/v1/gate", GATE)):
            one = c.post(path, json=body, headers=[("authorization", CASEY)])
            assert one.status_code == 200, one.text
            two = c.post(path, json=body, headers=[("authorization", CASEY), ("authorization", RITA)])
            assert two.status_code == 401, two.text
            assert two.headers["www-authenticate"] == "Bearer"
        two = c.get("/v1/ledger/head", headers=[("authorization", CASEY), ("authorization", CASEY)])
        assert two.status_code == 401
