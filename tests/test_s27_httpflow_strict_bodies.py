"""`/v1` bodies are strict: a value of the OpenAPI schema's type or a 422 that records nothing.
pydantic's lax mode (FastAPI validates a parsed body in Python mode) took `"dry_run": "no"`
or `0` for `false` and recorded a real rollback batch, `"expires_in": "60"` for 60 s, and a
number (or a string of digits) for `since` as Unix time, where the schema says a boolean, a
number and an RFC 3339 `date-time`."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
from server_support import bearer, server_policy_dir, write_identities  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from policy_engine.server import ServerConfig, create_app  # noqa: E402

PROBLEM = "application/problem+json"
SELECT = {"select": 'original.type == "send"', "scenario": "customer_request", "reason": "run-7 misfired"}


@pytest.fixture
def c(tmp_path):
    app = create_app(ServerConfig(str(server_policy_dir(tmp_path)), ledger=f"sqlite:///{tmp_path / 'l.db'}",
                                  identities=str(write_identities(tmp_path / "ids.yaml")), reload_interval=0))
    with TestClient(app) as client:
        for i in range(2):
            g = client.post("/v1/gate", json={"action": {"workflow": "replies", "type": "send", "amount": 50,
                                                         "promise": False}}, headers=bearer("casey")).json()
            e = client.post("/v1/executions", json={"decision_id": g["decision_id"],
                                                    "receipt": {"message": f"m{i}", "ticket": "t"}},
                            headers=bearer("casey"))
            assert e.status_code == 200
        yield client


def size(c) -> int:
    return c.get("/v1/ledger/head", headers=bearer("ops")).json()["size"]


def refused(r, pointer: str) -> None:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["errors"][0]["pointer"] == pointer


@pytest.mark.parametrize("flag", ["false", "no", "off", 0, "0", "true", 1, "yes"])
def test_dry_run_is_a_json_boolean_or_nothing_is_recorded(c, flag):
    before = size(c)
    refused(c.post("/v1/rollbacks/batches", json={**SELECT, "dry_run": flag}, headers=bearer("casey")), "/dry_run")
    assert size(c) == before  # no batch, no plan: a flag that was not a boolean planned nothing


def test_a_json_boolean_is_taken_as_it_is(c):
    before = size(c)
    dry = c.post("/v1/rollbacks/batches", json={**SELECT, "dry_run": True}, headers=bearer("casey"))
    assert dry.status_code == 200 and dry.json()["batch_id"] is None and size(c) == before
    real = c.post("/v1/rollbacks/batches", json={**SELECT, "dry_run": False}, headers=bearer("casey"))
    assert real.status_code == 200 and real.json()["batch_id"] and len(real.json()["rollbacks"]) == 2


@pytest.mark.parametrize("since", [5, 1.7e9, "1700000000", "2026-01-01", "2026-01-01T00:00:00", True])
def test_since_is_an_rfc3339_string(c, since):
    before = size(c)
    r = c.post("/v1/rollbacks/batches", json={**SELECT, "since": since}, headers=bearer("casey"))
    refused(r, "/since")
    assert "RFC 3339" in r.json()["detail"]
    assert size(c) == before


def test_since_with_an_offset_selects_as_before(c):
    r = c.post("/v1/rollbacks/batches", json={**SELECT, "since": "2000-01-01T01:00:00+01:00", "until": None,
                                               "dry_run": True}, headers=bearer("casey"))
    assert r.status_code == 200 and r.json()["selected"] == 2
    r = c.post("/v1/rollbacks/batches", json={**SELECT, "until": "2000-01-01T00:00:00Z", "dry_run": True},
               headers=bearer("casey"))
    assert r.status_code == 200 and r.json()["selected"] == 0


@pytest.mark.parametrize("expires_in", ["60", True])
def test_expires_in_is_a_json_number(c, expires_in):
    g = c.post("/v1/gate", json={"action": {"workflow": "replies", "type": "send", "amount": 500, "promise": False}},
               headers=bearer("casey")).json()
    before = size(c)
    refused(c.post("/v1/approvals", json={"subject": g["decision_id"], "expires_in": expires_in},
                   headers=bearer("rita")), "/expires_in")
    assert size(c) == before
    ok = c.post("/v1/approvals", json={"subject": g["decision_id"], "expires_in": 60}, headers=bearer("rita"))
    assert ok.status_code == 200 and ok.json()["counted"] is True


def test_the_schema_says_what_is_taken(c):
    props = c.get("/openapi.json").json()["components"]["schemas"]["BatchBody"]["properties"]
    assert props["dry_run"]["type"] == "boolean"
    assert {"type": "string", "format": "date-time"} in props["since"]["anyOf"]
