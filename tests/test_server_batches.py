"""Bulk rollback batches over HTTP (issue 18's ``Runtime.request_bulk_rollback`` behind
``/v1/rollbacks/batches``): the requester and the approver are the authenticated caller,
never a name in the body; one approval binds to the batch digest; done / partial /
remaining counts; bad requests are problems, never a 5xx."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
from server_support import bearer, server_policy_dir, write_identities  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from policy_engine.server import ServerConfig, create_app  # noqa: E402

PROBLEM = "application/problem+json"
SENDS = 'original.type == "send"'


@pytest.fixture
def policy_dir(tmp_path):
    return server_policy_dir(tmp_path)


def client(tmp_path, policy_dir, *, identities: bool = True) -> TestClient:
    ids = str(write_identities(tmp_path / "ids.yaml")) if identities else None
    return TestClient(create_app(ServerConfig(str(policy_dir), ledger=f"sqlite:///{tmp_path / 'l.db'}",
                                              identities=ids, reload_interval=0)))


def _executions(c: TestClient, h: dict) -> list[str]:
    """Two allowed and executed sends, each with a log it caused, and an executed `other`."""
    out = []
    for i in range(2):
        g = c.post("/v1/gate", json={"action": {"workflow": "replies", "type": "send", "amount": 50.0,
                                                "promise": False, "id": f"s{i}"}}, headers=h).json()
        x = c.post("/v1/executions", json={"decision_id": g["decision_id"],
                                           "receipt": {"message": "hi", "ticket": i}}, headers=h).json()
        lg = c.post("/v1/gate", json={"action": {"workflow": "replies", "type": "log"}}, headers=h).json()
        c.post("/v1/executions", json={"decision_id": lg["decision_id"], "receipt": {"note": "n"},
                                       "caused_by": x["execution_id"]}, headers=h)
        out.append(x["execution_id"])
    o = c.post("/v1/gate", json={"action": {"workflow": "replies", "type": "other"}}, headers=h).json()
    c.post("/v1/executions", json={"decision_id": o["decision_id"], "receipt": {"note": "n"}}, headers=h)
    return out


def test_a_batch_is_requested_approved_and_stepped_as_the_caller(tmp_path, policy_dir):
    with client(tmp_path, policy_dir) as c:
        sends = _executions(c, bearer("ops"))
        size = c.get("/v1/ledger/head", headers=bearer("ops")).json()["size"]
        # the requester is the caller: a body naming someone else is refused, nothing recorded
        r = c.post("/v1/rollbacks/batches", json={"select": SENDS, "scenario": "customer_request",
                                                  "reason": "run-7", "requested_by": "casey"}, headers=bearer("rita"))
        assert r.status_code == 403 and r.json()["type"].endswith("principal-mismatch")
        # a dry run plans and records nothing
        dry = c.post("/v1/rollbacks/batches", json={"select": SENDS, "scenario": "customer_request",
                                                    "reason": "run-7", "dry_run": True}, headers=bearer("rita")).json()
        assert dry["batch_id"] is None and sorted(dry["originals"]) == sorted(sends)
        assert c.get("/v1/ledger/head", headers=bearer("ops")).json()["size"] == size
        b = c.post("/v1/rollbacks/batches", json={"select": SENDS, "scenario": "customer_request",
                                                  "reason": "run-7"}, headers=bearer("rita"))
        assert b.status_code == 200, b.text
        b = b.json()
        assert sorted(b["originals"]) == sorted(sends) and len(b["rollbacks"]) == 2 and b["records"] == 4
        assert b["batch_hash"] == dry["batch_hash"]
        batch = c.get(f"/v1/history/{b['batch_id']}", headers=bearer("ops")).json()["entry"]
        assert batch["body"]["requested_by"] == "rita"
        st = c.get(f"/v1/rollbacks/batches/{b['batch_id']}", headers=bearer("ops")).json()
        assert (st["rollbacks"], st["done"], st["partial"], st["remaining"]) == (2, 0, 0, 2)
        assert st["by_status"] == {"pending": 2}
        url = f"/v1/rollbacks/batches/{b['batch_id']}/approvals"
        # another principal or roles in the body: refused
        r = c.post(url, json={"batch_hash": b["batch_hash"], "principal": "cleo"}, headers=bearer("casey"))
        assert r.status_code == 403 and r.json()["type"].endswith("principal-mismatch")
        r = c.post(url, json={"batch_hash": b["batch_hash"], "roles": ["customer_service"]}, headers=bearer("rita"))
        assert r.status_code == 403
        # an approval binds to the digest it was shown
        r = c.post(url, json={"batch_hash": "sha256:" + "0" * 64}, headers=bearer("casey"))
        assert r.status_code == 422 and "binds to the batch" in r.json()["detail"]
        # the requester's own approval is recorded, not counted (distinct from request.requested_by);
        # and she has not the role anyway
        a = c.post(url, json={"batch_hash": b["batch_hash"]}, headers=bearer("rita")).json()
        assert (a["plans"], a["counted"]) == (2, 0)
        a = c.post(url, json={"batch_hash": b["batch_hash"], "reason": "checked"}, headers=bearer("casey")).json()
        assert (a["counted"], a["statuses"]) == (2, {"approved": 2})
        approvals = c.get(f"/v1/history/{b['rollbacks'][0]}", headers=bearer("ops")).json()["rollback"]["approvals"]
        assert [x["body"]["principal"] for x in approvals] == ["rita", "casey"]
        # steps: one plan done, the other partial (a step failed)
        first = c.get(f"/v1/subjects/{b['rollbacks'][0]}", headers=bearer("ops")).json()["duties"]
        for d in first:
            duty = d if not d.startswith(("compensate:", "notify:")) else f"{b['rollbacks'][0]}/{d}"
            s = c.post(f"/v1/rollbacks/batches/{b['batch_id']}/steps",
                       json={"duty": duty, "status": "completed", "key": f"k-{d}"}, headers=bearer("ops"))
            assert s.status_code == 200, s.text
        other = c.get(f"/v1/history/{b['rollbacks'][1]}", headers=bearer("ops")).json()["rollback"]["entry"]
        s = c.post(f"/v1/rollbacks/batches/{b['batch_id']}/steps",
                   json={"duty": other["body"]["original"], "status": "failed"}, headers=bearer("ops"))
        assert s.status_code == 200
        st = c.get(f"/v1/rollbacks/batches/{b['batch_id']}", headers=bearer("ops")).json()
        assert (st["done"], st["partial"], st["remaining"]) == (1, 1, 1)
        assert (st["duties"]["done"], st["duties"]["failed"]) == (len(first), 1)
        # a duty of no plan of the batch
        s = c.post(f"/v1/rollbacks/batches/{b['batch_id']}/steps", json={"duty": "nope", "status": "completed"},
                   headers=bearer("ops"))
        assert s.status_code == 422 and s.headers["content-type"] == PROBLEM


def test_batches_need_identities_and_bad_requests_are_problems(tmp_path, policy_dir):
    with client(tmp_path, policy_dir, identities=False) as c:
        r = c.post("/v1/rollbacks/batches", json={"select": "true", "scenario": "customer_request", "reason": "x"})
        assert r.status_code == 403 and "--identities" in r.json()["detail"]
    with client(tmp_path, policy_dir) as c:
        h = bearer("rita")
        assert c.post("/v1/rollbacks/batches", json={"select": "true", "scenario": "customer_request",
                                                      "reason": "x"}).status_code == 401

        def req(**body):
            return c.post("/v1/rollbacks/batches", json={"scenario": "customer_request", "reason": "x", **body},
                          headers=h)

        for r in (
            req(),  # neither select nor executions
            req(select="true", executions=["a"]),  # both
            req(select="original.type =="),  # does not compile
            req(select="true", since="2026-11-26T12:00:00"),  # no offset
            req(select="true", since="0001-01-01T00:00:00+05:00"),  # not representable in UTC
            req(executions=["not-recorded"]),
            req(select="true", extra=1),  # the body is closed
        ):
            assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, r.text
        assert "column" in req(select="original.type ==").json()["detail"]
        # nothing selected: answered, nothing recorded
        r = req(select="false").json()
        assert r["batch_id"] is None and r["selected"] == 0
        for r in (
            c.get("/v1/rollbacks/batches/nope", headers=h),
            c.post("/v1/rollbacks/batches/nope/approvals", json={"batch_hash": "x"}, headers=h),
        ):
            assert r.status_code == 404 and r.headers["content-type"] == PROBLEM
        g = c.post("/v1/gate", json={"action": {"workflow": "replies", "type": "other"}}, headers=h).json()
        r = c.get(f"/v1/rollbacks/batches/{g['decision_id']}", headers=h)
        assert r.status_code == 422 and "not a `batch`" in r.json()["detail"]


def test_openapi_describes_the_batch_operations(tmp_path, policy_dir):
    with client(tmp_path, policy_dir, identities=False) as c:
        paths = c.get("/openapi.json").json()["paths"]
    assert set(paths["/v1/rollbacks/batches"]) == {"post"}
    assert set(paths["/v1/rollbacks/batches/{batch_id}"]) == {"get"}
    assert set(paths["/v1/rollbacks/batches/{batch_id}/approvals"]) == {"post"}
    assert set(paths["/v1/rollbacks/batches/{batch_id}/steps"]) == {"post"}


def test_a_batch_approval_may_lapse_as_one_approval_may(tmp_path, policy_dir):
    """`expires_in` on a batch's approval (as `POST /v1/approvals` takes it): each plan's
    approval records its `expires_at`; 0, negative or beyond 30 days is a 422."""
    with client(tmp_path, policy_dir) as c:
        _executions(c, bearer("ops"))
        b = c.post("/v1/rollbacks/batches", json={"select": SENDS, "scenario": "customer_request",
                                                  "reason": "run-8"}, headers=bearer("rita")).json()
        url = f"/v1/rollbacks/batches/{b['batch_id']}/approvals"
        size = c.get("/v1/ledger/head", headers=bearer("ops")).json()["size"]
        for bad in (0, -5, 31 * 86400):
            r = c.post(url, json={"batch_hash": b["batch_hash"], "expires_in": bad}, headers=bearer("casey"))
            assert r.status_code == 422, r.text
        assert c.get("/v1/ledger/head", headers=bearer("ops")).json()["size"] == size
        a = c.post(url, json={"batch_hash": b["batch_hash"], "expires_in": 3600}, headers=bearer("casey"))
        assert a.status_code == 200, a.text
        for rb in b["rollbacks"]:
            [mine] = [x for x in c.get(f"/v1/history/{rb}", headers=bearer("ops")).json()["rollback"]["approvals"]
                      if x["body"]["principal"] == "casey"]
            assert mine["body"].get("expires_at")
