"""The AuthZEN routes answer alike on the fast path and behind FastAPI routing
(``--no-fast-path``): X-Request-ID as the OpenAPI document describes it (visible ASCII,
at most 256: anything else a 400, never echoed), an empty ``evaluations`` array answered
with an empty ``evaluations`` array (AuthZEN 1.0, 7.1), a body in another content type a
415, and a ledger that cannot be reached a 503 (in-process, Starlette's test client)."""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("fastapi")
from server_support import bearer, server_policy_dir, write_identities  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from policy_engine.ledger import LedgerUnavailable  # noqa: E402
from policy_engine.server import ServerConfig, create_app  # noqa: E402

PROBLEM = "application/problem+json"
EV = {"subject": {"type": "user", "id": "a"}, "action": {"name": "log"}, "resource": {"type": "t", "id": "1"},
      "context": {"workflow": "replies"}}
PATHS = ("/access/v1/evaluation", "/access/v1/evaluations")


@pytest.fixture(params=[True, False], ids=["fast path", "no fast path"])
def fast_path(request):
    return request.param


@pytest.fixture
def c(tmp_path, fast_path):
    ids = str(write_identities(tmp_path / "ids.yaml"))
    app = create_app(ServerConfig(str(server_policy_dir(tmp_path)), ledger=f"sqlite:///{tmp_path / 'l.db'}",
                                  identities=ids, reload_interval=0, fast_path=fast_path))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def size(c) -> int:
    return c.get("/v1/ledger/head", headers=bearer("ops")).json()["size"]


# ---------------------------------------------------------------------------------- X-Request-ID
@pytest.mark.parametrize("rid", [b"two words", b"tab\there", b"x" * 257, "caf\u00e9".encode()],
                         ids=["a space", "a tab", "too long", "not ASCII"])
def test_a_request_id_off_the_documented_pattern_is_a_400_and_not_echoed(c, rid):
    schema = c.get("/openapi.json").json()["paths"]["/access/v1/evaluation"]["post"]["parameters"][0]["schema"]
    assert schema == {"type": "string", "maxLength": 256, "pattern": "^[\\x21-\\x7e]*$"}
    text = rid.decode("latin-1")  # (what the description says of it)
    assert re.fullmatch(schema["pattern"][1:-1], text) is None or len(text) > schema["maxLength"]
    before = size(c)
    for path in (*PATHS, "/v1/gate"):
        body = EV if path.startswith("/access") else {"action": {"workflow": "replies", "type": "log"}}
        r = c.post(path, json=body, headers={**bearer("ops"), "X-Request-ID": rid})
        assert r.status_code == 400 and r.headers["content-type"] == PROBLEM, (path, r.text)
        p = r.json()
        assert p["type"].endswith("/bad-request-id") and "no spaces, tabs or control characters" in p["detail"]
        assert "x-request-id" not in r.headers
    assert size(c) == before  # nothing decided, nothing recorded


def test_a_request_id_on_the_pattern_is_echoed(c):
    rid = "!~" + "".join(chr(i) for i in range(0x21, 0x7F))[:200]
    for path in PATHS:
        r = c.post(path, json=EV, headers={**bearer("ops"), "X-Request-ID": rid})
        assert r.status_code == 200 and r.headers["x-request-id"] == rid


# ---------------------------------------------------------------------------------- an empty batch
def test_an_empty_evaluations_array_is_answered_with_an_empty_array(c):
    before = size(c)
    # the top-level keys are defaults for the items: with no items, nothing is decided or recorded
    for body in ({**EV, "evaluations": []}, {"evaluations": []},
                 {**EV, "evaluations": [], "options": {"evaluations_semantic": "deny_on_first_deny"}}):
        r = c.post("/access/v1/evaluations", json=body, headers=bearer("ops"))
        assert r.status_code == 200 and r.json() == {"evaluations": []}, r.text
    assert size(c) == before
    # (without the key the request is one evaluation, as before; a list of one is a list of one)
    r = c.post("/access/v1/evaluations", json=EV, headers=bearer("ops")).json()
    assert r["decision"] is True and "evaluations" not in r
    r = c.post("/access/v1/evaluations", json={**EV, "evaluations": [{}]}, headers=bearer("ops")).json()
    assert [e["decision"] for e in r["evaluations"]] == [True]
    # defaults are still checked when there are no items
    r = c.post("/access/v1/evaluations", json={"subject": {"type": "u"}, "evaluations": []}, headers=bearer("ops"))
    assert r.status_code == 400 and r.json()["errors"][0]["pointer"] == "/subject/id"


# ---------------------------------------------------------------------------------- the same answers
def test_a_body_in_another_content_type_is_a_415_on_both_paths(c):
    for path in PATHS:
        for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
            r = c.post(path, content=json.dumps(EV), headers={**bearer("ops"), "content-type": ctype,
                                                                "X-Request-ID": "r-415"})
            assert r.status_code == 415 and r.headers["content-type"] == PROBLEM, (path, ctype, r.text)
            assert r.json()["type"].endswith("/unsupported-media-type") and r.headers["x-request-id"] == "r-415"
        for ctype in ("application/json", "application/json; charset=utf-8", None):  # none: taken as JSON
            headers = {**bearer("ops"), **({"content-type": ctype} if ctype else {})}
            assert c.post(path, content=json.dumps(EV), headers=headers).status_code == 200, (path, ctype)
    # authentication comes first, as on every route
    r = c.post(PATHS[0], content=json.dumps(EV), headers={"content-type": "text/plain"})
    assert r.status_code == 401


def test_an_unreachable_ledger_is_a_503_on_both_paths(c):
    rt = c.app.state.runtime

    def down(*args, **kwargs):
        raise LedgerUnavailable("could not connect to the ledger (simulated)")

    rt.gate_many = rt.gate = down  # what the recorder calls
    for path in PATHS:
        r = c.post(path, json=EV, headers={**bearer("ops"), "X-Request-ID": "r-503"})
        assert r.status_code == 503 and r.headers["content-type"] == PROBLEM, (path, r.text)
        p = r.json()
        assert p["type"].endswith("/ledger-unavailable") and "could not connect" in p["detail"], p
        assert "decision" not in p and r.headers["x-request-id"] == "r-503"
    assert 'stopline_problems_total{status="503"} 2.0' in c.get("/metrics").text
