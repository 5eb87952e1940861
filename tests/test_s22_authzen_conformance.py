"""Audit S22 of the AuthZEN decision point against AuthZEN 1.0 (SQLite and PostgreSQL):

- a ``context.workflow`` that is not a workflow's name (a number, null, a list, an object)
  is denied saying so, recorded as such: it was read as "none given" and the request was
  decided by the server's default workflow (an allow the caller never asked for);
- a batch of the largest size (1000 items) is answered in order and recorded once per
  item; one more item is a 400 that records nothing;
- the published response schema describes the ``context.error`` of a batch item that
  could not be decided (``tests/test_s22_authzen_item_errors.py``).
"""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
from ledger_fixtures import ledger_url  # noqa: E402,F401  (the parametrised backend fixture)
from server_support import bearer, server_policy_dir, write_identities  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from policy_engine.server import ServerConfig, create_app  # noqa: E402
from policy_engine.server.authzen import MAX_EVALUATIONS  # noqa: E402

EV = {"subject": {"type": "user", "id": "a"}, "action": {"name": "log"}, "resource": {"type": "t", "id": "1"}}


@pytest.fixture
def c(tmp_path, ledger_url):  # noqa: F811
    ids = str(write_identities(tmp_path / "ids.yaml"))
    # the policy set has one workflow (`replies`): the default of a request that names none
    app = create_app(
        ServerConfig(str(server_policy_dir(tmp_path)), ledger=ledger_url, identities=ids, reload_interval=0)
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def size(c) -> int:
    return c.get("/v1/ledger/head", headers=bearer("ops")).json()["size"]


@pytest.mark.parametrize(
    "wf",
    [5, None, ["replies"], {"name": "replies"}, True],
    ids=["a number", "null", "a list", "an object", "a boolean"],
)
def test_a_context_workflow_that_is_not_a_name_is_denied_never_decided_by_the_default(c, wf):
    assert c.post("/access/v1/evaluation", json=EV, headers=bearer("ops")).json()["decision"] is True  # (default)
    before = size(c)
    r = c.post("/access/v1/evaluation", json={**EV, "context": {"workflow": wf}}, headers=bearer("ops"))
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["decision"] is False and got["context"]["effect"] == "deny", got
    assert "workflow" in got["context"]["reason"] and got["context"]["recorded"] is True
    # in a batch: the item's own context, or the top-level default one
    body = {
        "subject": EV["subject"],
        "action": EV["action"],
        "context": {"workflow": wf},
        "evaluations": [
            {"resource": {"type": "t", "id": "2"}},
            {"resource": {"type": "t", "id": "3"}, "context": {"workflow": "replies"}},
            {"resource": {"type": "t", "id": "4"}, "context": {}},
        ],
    }
    evs = c.post("/access/v1/evaluations", json=body, headers=bearer("ops")).json()["evaluations"]
    assert [e["decision"] for e in evs] == [False, True, True]  # (the last names none: the default)
    assert size(c) == before + 4


def test_the_largest_batch_is_answered_in_order_and_recorded_once_per_item(c):
    before = size(c)
    items = [
        {"resource": {"type": "t", "id": str(i)}, **({"action": {"name": "nope"}} if i % 7 == 3 else {})}
        for i in range(MAX_EVALUATIONS)
    ]
    body = {"subject": EV["subject"], "action": EV["action"], "context": {"workflow": "replies"}, "evaluations": items}
    r = c.post("/access/v1/evaluations", json=body, headers={**bearer("ops"), "X-Request-ID": "big"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "big"
    evs = r.json()["evaluations"]
    assert [e["decision"] for e in evs] == [i % 7 != 3 for i in range(MAX_EVALUATIONS)]
    assert all(e["context"]["recorded"] for e in evs)
    assert len({e["context"]["decision_id"] for e in evs}) == MAX_EVALUATIONS
    assert size(c) == before + MAX_EVALUATIONS
    r = c.post("/access/v1/evaluations", json={**body, "evaluations": [*items, {}]}, headers=bearer("ops"))
    assert r.status_code == 400 and r.json()["errors"][0]["pointer"] == "/evaluations"
    assert size(c) == before + MAX_EVALUATIONS


def test_the_published_schema_describes_an_items_error(c):
    schemas = c.get("/openapi.json").json()["components"]["schemas"]
    ctx = schemas["EvaluationResponse"]["properties"]["context"]["properties"]
    assert ctx["error"]["required"] == ["status", "message"]
    assert (
        schemas["EvaluationsResponse"]["oneOf"][0]["properties"]["evaluations"]["items"]
        == schemas["EvaluationResponse"]
    )
