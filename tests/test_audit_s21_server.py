"""Audit S21 of the HTTP service, as a security reviewer and as an AuthZEN 1.0 implementer:
every case runs on the fast path and behind FastAPI routing (``--no-fast-path``), which must
answer alike (in-process, Starlette's test client; the fast path is the ASGI application
``create_app`` returns, the same one uvicorn serves).

- a bad ``X-Request-ID`` is never echoed, not even on a 413 (the size was checked first);
- AuthZEN takes a body as JSON only when its Content-Type names JSON as ``/v1`` does
  (``text/json``, ``application/x-ndjson`` were taken: anything ending in "json");
- ``evaluations: null`` is refused as the published schema refuses it (it was one evaluation);
- a trailing slash is a 404 problem, never a 307 to a URL made from the ``Host`` header
  (a POST and its credential sent on, past ``--public-url``);
- every API answer (a decision, a problem, a runtime read) is ``Cache-Control: no-store``
  and ``X-Content-Type-Options: nosniff``; the reviewer's page keeps its own headers;
- ``HEAD`` is served wherever ``GET`` is (a load balancer's health check), without a body;
- a 500 is titled "Internal Server Error"; a problem's ``instance`` is the request's path on
  both paths (a ``%3F`` in it is not read as a query);
- what held: the AuthZEN defaults and semantics, the search APIs (not implemented: absent
  from the metadata, a 404), strict JSON, chunked bodies over the limit, JWT refusals.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
from server_support import bearer, server_policy_dir, write_identities  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from policy_engine.server import ServerConfig, create_app  # noqa: E402

PROBLEM = "application/problem+json"
EV = {"subject": {"type": "user", "id": "a"}, "action": {"name": "log"}, "resource": {"type": "t", "id": "1"},
      "context": {"workflow": "replies"}}
PATHS = ("/access/v1/evaluation", "/access/v1/evaluations")
MAX_BODY = 4096


@pytest.fixture(params=[True, False], ids=["fast path", "no fast path"])
def fast_path(request):
    return request.param


@pytest.fixture
def c(tmp_path, fast_path):
    ids = str(write_identities(tmp_path / "ids.yaml"))
    app = create_app(ServerConfig(str(server_policy_dir(tmp_path)), ledger=f"sqlite:///{tmp_path / 'l.db'}",
                                  identities=ids, reload_interval=0, fast_path=fast_path, max_body=MAX_BODY,
                                  public_url="https://pdp.example.com"))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def size(c) -> int:
    return c.get("/v1/ledger/head", headers=bearer("ops")).json()["size"]


def is_problem(r, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["content-type"] == PROBLEM, r.headers
    p = r.json()
    assert set(p) >= {"type", "title", "status", "detail"} and p["status"] == status
    if code is not None:
        assert p["type"].endswith("/" + code), p
    return p


# ---------------------------------------------------------------------------------- X-Request-ID
def test_a_bad_request_id_is_not_echoed_on_a_body_too_large(c):
    # the size was checked before the identifier, and the 413 echoed `a b` (documented: refused
    # on every route with a 400, never echoed); now it is the 400, and nothing is read or decided
    before = size(c)
    for path in (*PATHS, "/v1/gate"):
        r = c.post(path, content=b"{" + b" " * (2 * MAX_BODY) + b"}",
                   headers={**bearer("ops"), "content-type": "application/json", "X-Request-ID": "a b"})
        is_problem(r, 400, "bad-request-id")
        assert "x-request-id" not in r.headers
        # (a good one on the same oversized body: the 413, echoed)
        r = c.post(path, content=b"{" + b" " * (2 * MAX_BODY) + b"}",
                   headers={**bearer("ops"), "content-type": "application/json", "X-Request-ID": "r-9"})
        is_problem(r, 413, "body-too-large")
        assert r.headers["x-request-id"] == "r-9"
    assert size(c) == before


def test_a_chunked_body_over_the_limit_is_a_413_on_both_paths(c):
    def chunks():
        for _ in range(4):
            yield b" " * MAX_BODY

    before = size(c)
    for path in (*PATHS, "/v1/gate"):
        r = c.post(path, content=chunks(), headers={**bearer("ops"), "content-type": "application/json",
                                                    "X-Request-ID": "r-1"})
        is_problem(r, 413, "body-too-large")
        assert r.headers["x-request-id"] == "r-1"
    assert size(c) == before


# ---------------------------------------------------------------------------------- content types
@pytest.mark.parametrize("ctype", ["text/json", "application/x-ndjson", "application/geojson-seq", "json"])
def test_authzen_takes_json_content_types_only_as_v1_does(c, ctype):
    before = size(c)
    for path in PATHS:
        r = c.post(path, content=json.dumps(EV).encode(), headers={**bearer("ops"), "content-type": ctype})
        is_problem(r, 415, "unsupported-media-type")
    r = c.post("/v1/gate", content=json.dumps({"action": {"workflow": "replies", "type": "log"}}).encode(),
               headers={**bearer("ops"), "content-type": ctype})
    is_problem(r, 415, "unsupported-media-type")
    assert size(c) == before


@pytest.mark.parametrize("ctype", [None, "application/json", "application/json; charset=utf-8",
                                   "APPLICATION/JSON", "application/authzen+json"])
def test_authzen_takes_json_and_a_body_without_a_content_type(c, ctype):
    headers = bearer("ops") if ctype is None else {**bearer("ops"), "content-type": ctype}
    r = c.post("/access/v1/evaluation", content=json.dumps(EV).encode(), headers=headers)
    assert r.status_code == 200 and r.json()["decision"] is True, r.text


# ---------------------------------------------------------------------------------- AuthZEN
def test_evaluations_null_is_refused_as_the_schema_refuses_it(c):
    schema = c.get("/openapi.json").json()["components"]["schemas"]["EvaluationsRequest"]
    assert schema["properties"]["evaluations"]["type"] == "array"
    before = size(c)
    r = c.post("/access/v1/evaluations", json={**EV, "evaluations": None}, headers=bearer("ops"))
    p = is_problem(r, 400, "invalid-authzen-request")
    assert p["errors"][0]["pointer"] == "/evaluations"
    assert size(c) == before


def test_defaults_are_replaced_per_key_and_every_semantic_answers_in_order(c):
    # AuthZEN 1.0, "Default values": a key given in an item overrides the top-level one as a
    # whole (the item's context has no workflow: the server's default, the set's only one)
    body = {"subject": {"type": "user", "id": "a"}, "context": {"workflow": "nope"}, "action": {"name": "log"},
            "evaluations": [{"resource": {"type": "t", "id": "1"}},
                            {"resource": {"type": "t", "id": "2"}, "context": {}},
                            {"resource": {"type": "t", "id": "3"}, "context": {}, "action": {"name": "undeclared"}},
                            {"resource": {"type": "t", "id": "4"}, "context": {}, "action": {"name": "other"}}],
            "options": {"evaluations_semantic": "execute_all", "another_option": "value"}}
    r = c.post("/access/v1/evaluations", json=body, headers=bearer("ops"))
    assert r.status_code == 200, r.text
    got = r.json()["evaluations"]
    assert [e["decision"] for e in got] == [False, True, False, True]  # (`nope` is no workflow: denied)
    effects = [e["context"]["effect"] for e in got]
    assert effects[1] == effects[3] == "allow"
    for sem, n in (("deny_on_first_deny", 1), ("permit_on_first_permit", 2)):
        r = c.post("/access/v1/evaluations", json={**body, "options": {"evaluations_semantic": sem}},
                   headers=bearer("ops"))
        assert [e["context"]["effect"] for e in r.json()["evaluations"]] == effects[:n], (sem, r.text)
    is_problem(c.post("/access/v1/evaluations", json={**body, "options": {"evaluations_semantic": "any"}},
                      headers=bearer("ops")), 400, "invalid-authzen-request")


def test_the_search_apis_are_not_served_nor_advertised(c):
    meta = c.get("/.well-known/authzen-configuration").json()
    assert meta == {"policy_decision_point": "https://pdp.example.com",
                    "access_evaluation_endpoint": "https://pdp.example.com/access/v1/evaluation",
                    "access_evaluations_endpoint": "https://pdp.example.com/access/v1/evaluations"}
    for what in ("subject", "resource", "action"):
        is_problem(c.post(f"/access/v1/search/{what}", json=EV, headers=bearer("ops")), 404, "not-found")


# ---------------------------------------------------------------------------------- trailing slashes
@pytest.mark.parametrize("path", ["/access/v1/evaluation/", "/access/v1/evaluations/", "/v1/gate/"])
def test_a_trailing_slash_is_a_404_never_a_redirect_made_from_the_host_header(c, path):
    before = size(c)
    body = EV if path.startswith("/access") else {"action": {"workflow": "replies", "type": "log"}}
    r = c.post(path, json=body, headers={**bearer("ops"), "host": "evil.example", "X-Request-ID": "r-2"},
               follow_redirects=False)
    is_problem(r, 404, "not-found")
    assert "location" not in r.headers and r.headers["x-request-id"] == "r-2"
    r = c.get("/.well-known/authzen-configuration/", headers={"host": "evil.example"}, follow_redirects=False)
    is_problem(r, 404, "not-found")
    assert "location" not in r.headers
    assert size(c) == before
    # (a workflow whose name ends with a slash is still read by its name)
    r = c.get("/v1/workflows/replies/", headers=bearer("ops"), follow_redirects=False)
    assert r.status_code == 200 and r.json()["workflow"] == "replies/", r.text


# ---------------------------------------------------------------------------------- headers
def test_every_api_answer_is_no_store_and_nosniff(c):
    answers = [
        c.post("/access/v1/evaluation", json=EV, headers=bearer("ops")),  # a decision
        c.post("/access/v1/evaluations", json={"evaluations": [EV]}, headers=bearer("ops")),
        c.post("/access/v1/evaluation", json=EV),  # a 401
        c.post("/access/v1/evaluation", content=b"{", headers=bearer("ops")),  # a 400
        c.post("/v1/gate", json={"action": {"workflow": "replies", "type": "log"}}, headers=bearer("ops")),
        c.get("/v1/queue", headers=bearer("ops")),
        c.get("/v1/subjects/nope", headers=bearer("ops")),  # a 404
        c.get("/healthz"),
        c.get("/.well-known/authzen-configuration"),
    ]
    for r in answers:
        assert r.headers.get("cache-control") == "no-store", (r.request.url, r.headers)
        assert r.headers.get("x-content-type-options") == "nosniff", (r.request.url, r.headers)
        assert len(r.headers.get_list("cache-control")) == 1
    page = c.get("/ui/login")  # the reviewer's page sets its own (not doubled)
    assert page.status_code == 200
    assert page.headers.get_list("cache-control") == ["no-store"]
    assert page.headers.get_list("x-content-type-options") == ["nosniff"]


@pytest.mark.parametrize("path", ["/healthz", "/.well-known/authzen-configuration", "/metrics"])
def test_head_is_served_where_get_is(c, path):
    g = c.get(path)
    h = c.head(path, headers={"X-Request-ID": "r-3"})
    assert g.status_code == h.status_code == 200, (h.status_code, h.headers)
    assert h.content == b"" and h.headers["content-type"] == g.headers["content-type"]
    assert h.headers["x-request-id"] == "r-3"
    # (a route without GET: a 405 naming what it takes, as before)
    r = c.head("/access/v1/evaluation")
    assert r.status_code == 405 and r.headers["allow"] == "POST" and r.content == b""
    r = c.options("/access/v1/evaluation")
    is_problem(r, 405, "method-not-allowed")


# ---------------------------------------------------------------------------------- problems
def test_a_problem_instance_is_the_request_path_on_both_paths(c):
    r = c.get("/v1/subjects/a%3Fb", headers=bearer("ops"))
    p = is_problem(r, 404)
    assert p["instance"] == "/v1/subjects/a?b"
    r = c.post("/v1/nope%3Fx", json={}, headers=bearer("ops"))
    assert is_problem(r, 404)["instance"] == "/v1/nope?x"


def test_a_500_is_titled_and_says_nothing_of_the_server(c, monkeypatch):
    st = c.app.app.state.stopline

    def boom(*a, **k):
        raise RuntimeError("/secret/path/of/the/server")

    monkeypatch.setattr(st.runtime, "workflow_status", boom)
    r = c.get("/v1/workflows/replies", headers={**bearer("ops"), "X-Request-ID": "r-5"})
    p = is_problem(r, 500, "internal-error")
    assert p["title"] == "Internal Server Error" and "/secret" not in r.text and "Traceback" not in r.text
    assert r.headers["x-request-id"] == "r-5"


# ---------------------------------------------------------------------------------- configuration
@pytest.mark.parametrize("value", [float("inf"), float("nan"), -1.0, 86401.0])
def test_a_reload_interval_that_cannot_be_waited_on_is_a_configuration_error(tmp_path, value):
    from policy_engine.server.state import ServerConfigError

    with pytest.raises(ServerConfigError, match=r"--reload-interval .*: a number of seconds from 0"):
        create_app(ServerConfig(str(server_policy_dir(tmp_path)), reload_interval=value))


@pytest.mark.parametrize("value", ["inf", "nan", "1e308"])
def test_serve_with_a_reload_interval_it_cannot_wait_on_fails_in_one_line(value):
    # `inf` (or 1e308) killed the poller's thread with a traceback while the server went on
    # without hot reload; `nan` turned polling off without a word
    import subprocess
    import sys

    from server_support import ROOT, free_port

    r = subprocess.run([sys.executable, "-m", "policy_engine.cli", "serve", "examples/authzen-todo/",
                        "--reload-interval", value, "--port", str(free_port())],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"error: --reload-interval {float(value)!r}: a number of seconds from 0 (no polling) to 86400"]
