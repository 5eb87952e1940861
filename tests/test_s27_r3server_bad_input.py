"""Session 27 audit of the server's bad input (docs/server.md "Bad input"): a path with a
slash it does not have is a 404 on the workflow routes too (an empty workflow name was a
422, before any route was known to exist); a `since` later than `until` is said in RFC 3339,
never as Python prints a datetime; a query parameter that is NaN or infinite is "not a
number of seconds", never a misleading "less than or equal"."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
from server_support import bearer, server_policy_dir, write_identities  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from policy_engine.server import ServerConfig, create_app  # noqa: E402

PROBLEM = "application/problem+json"


@pytest.fixture
def c(tmp_path):
    ids = str(write_identities(tmp_path / "ids.yaml"))
    app = create_app(ServerConfig(str(server_policy_dir(tmp_path)), ledger=f"sqlite:///{tmp_path / 'l.db'}",
                                  identities=ids, reload_interval=0))
    with TestClient(app) as client:
        yield client


def size(c: TestClient) -> int:
    return c.get("/v1/ledger/head", headers=bearer("ops")).json()["size"]


def is_problem(r, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM), r.headers
    body = r.json()
    assert body["type"].endswith("/" + code) and body["status"] == status, body
    return body


@pytest.mark.parametrize("method,path", [
    ("GET", "/v1/workflows/"), ("HEAD", "/v1/workflows/"),
    ("POST", "/v1/workflows//resume"),
])
def test_an_empty_workflow_name_is_a_path_that_does_not_exist(c, method, path):
    before = size(c)
    # with a credential and a valid body, as without: the route does not exist (never a 422
    # about the name or the body, never a 401 about a credential this path does not need)
    for headers in (bearer("ops"), {}):
        r = c.request(method, path, json={"evidence": {"fixed": True}}, headers=headers, follow_redirects=False)
        assert r.status_code == 404, (headers, r.status_code, r.text)
        assert "location" not in r.headers
        if method != "HEAD":
            is_problem(r, 404, "not-found")
    assert size(c) == before
    # (a workflow whose name is a slash, or ends with one, is still read by its name)
    r = c.get("/v1/workflows/%2F", headers=bearer("ops"))
    assert r.status_code == 200 and r.json()["workflow"] == "/", r.text
    r = c.get("/v1/workflows/replies/", headers=bearer("ops"))
    assert r.status_code == 200 and r.json()["workflow"] == "replies/", r.text


def test_since_later_than_until_is_said_in_rfc3339(c):
    before = size(c)
    r = c.post("/v1/rollbacks/batches", headers=bearer("ops"), json={
        "select": "true", "scenario": "customer_request", "reason": "incident 7",
        "since": "2027-01-01T01:00:00+01:00", "until": "2026-06-01T00:00:00.25Z"})
    body = is_problem(r, 422, "invalid-request")
    assert body["detail"] == ("/since: 2027-01-01T00:00:00Z is later than `until` 2026-06-01T00:00:00.250000Z: "
                              "no execution can be in that window"), body
    assert body["errors"][0]["pointer"] == "/since", body
    assert "+00:00" not in r.text and " 00:00" not in r.text
    assert size(c) == before
    # the same instant twice is an empty window, not an error (as the runtime has it)
    r = c.post("/v1/rollbacks/batches", headers=bearer("ops"), json={
        "select": "true", "scenario": "customer_request", "reason": "incident 7", "dry_run": True,
        "since": "2027-01-01T01:00:00+01:00", "until": "2027-01-01T00:00:00Z"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("value", ["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e999"])
def test_older_than_that_is_not_a_finite_number_is_not_a_number_of_seconds(c, value):
    r = c.get(f"/v1/claims?older_than={value}", headers=bearer("ops"))
    body = is_problem(r, 422, "invalid-request")
    assert body["errors"][0]["pointer"] == "/older_than", body
    assert "not a number of seconds" in body["detail"], body
    assert "less than" not in body["detail"] and "greater than" not in body["detail"], body
    # (a number of seconds is still taken, and a number out of range still says its range)
    assert c.get("/v1/claims?older_than=3600.5", headers=bearer("ops")).status_code == 200
    assert "less than or equal" in c.get("/v1/claims?older_than=1e12", headers=bearer("ops")).json()["detail"]
    # (and the OpenAPI document still gives the range as JSON Schema does)
    params = c.get("/openapi.json").json()["paths"]["/v1/claims"]["get"]["parameters"]
    schema = next(p["schema"] for p in params if p["name"] == "older_than")
    assert schema["type"] == "number" and schema["minimum"] == 0 and schema["maximum"] == 10 * 365 * 86400, schema
