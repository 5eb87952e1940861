"""A retry of a batch request whose answer was lost names the batch that request recorded.

A client whose answer to ``POST /v1/rollbacks/batches`` was lost (a timeout, a reset
connection) sends the same request again. It used to get ``batch_id: null`` with every plan
listed in ``existing``: it never learnt the id of the batch it had created, so it could not
approve it or follow it. Now the same request (the same select or executions, scenario,
requester, reason, window and trigger) whose every selected execution is held by that batch's
open plans is answered with that batch (``existing_batch: true``), as it was recorded, and
records nothing; another request, a dry run, or one that leaves something to plan, is
answered as before. Over HTTP (a real ``stopline serve``) on SQLite and PostgreSQL, the
runtime API and ``stopline rollback``."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from ledger_fixtures import ledger_url  # noqa: E402,F401  (SQLite and PostgreSQL)
from server_support import bearer, serve, server_policy_dir, write_identities  # noqa: E402

from policy_engine.cli import main  # noqa: E402

SENDS = 'original.type == "send"'
SENDS_AND_LOGS = 'original.type == "send" || original.type == "log"'


@pytest.fixture
def server(tmp_path, ledger_url):  # noqa: F811
    ids = write_identities(tmp_path / "ids.yaml")
    with serve(str(server_policy_dir(tmp_path)), "--ledger", ledger_url, "--identities", str(ids),
               "--reload-interval", "0") as base:
        with httpx.Client(base_url=base, timeout=60.0) as c:
            yield c


def _record(c: httpx.Client) -> tuple[list[str], list[str], str]:
    """Two executed sends, each with a log it caused, and an executed `other`."""
    h = bearer("ops")
    sends, logs = [], []
    for i in range(2):
        g = c.post("/v1/gate", json={"action": {"workflow": "replies", "type": "send", "amount": 50.0,
                                                "promise": False, "id": f"s{i}"}}, headers=h).json()
        x = c.post("/v1/executions", json={"decision_id": g["decision_id"],
                                           "receipt": {"message": "hi", "ticket": i}}, headers=h).json()
        lg = c.post("/v1/gate", json={"action": {"workflow": "replies", "type": "log"}}, headers=h).json()
        y = c.post("/v1/executions", json={"decision_id": lg["decision_id"], "receipt": {"note": "n"},
                                           "caused_by": x["execution_id"]}, headers=h).json()
        sends.append(x["execution_id"])
        logs.append(y["execution_id"])
    o = c.post("/v1/gate", json={"action": {"workflow": "replies", "type": "other"}}, headers=h).json()
    other = c.post("/v1/executions", json={"decision_id": o["decision_id"], "receipt": {"note": "n"}},
                   headers=h).json()["execution_id"]
    return sends, logs, other


def _size(c: httpx.Client) -> int:
    return c.get("/v1/ledger/head", headers=bearer("ops")).json()["size"]


def _batch(c: httpx.Client, body: dict, who: str = "rita") -> dict:
    r = c.post("/v1/rollbacks/batches", json=body, headers=bearer(who))
    assert r.status_code == 200, r.text
    return r.json()


def test_a_retried_batch_request_names_the_batch_it_recorded(server):
    c = server
    sends, logs, other = _record(c)
    req = {"select": SENDS_AND_LOGS, "scenario": "customer_request", "reason": "run-7"}
    first = _batch(c, req)
    assert first["batch_id"] and not first.get("existing_batch")
    assert sorted(first["originals"]) == sorted(sends) and first["records"] == 4
    assert sorted(x["execution"] for x in first["covered"]) == sorted(logs)
    size = _size(c)
    # the answer was lost: the same request again names that batch, as recorded, and records nothing
    again = _batch(c, req)
    assert again["batch_id"] == first["batch_id"], again
    assert again["existing_batch"] is True
    for k in ("batch_hash", "rollbacks", "originals", "covered", "existing", "refused", "errors", "records",
              "selected", "scenario", "select"):
        assert again[k] == first[k], k
    assert _size(c) == size
    # which the client can approve and follow
    url = f"/v1/rollbacks/batches/{again['batch_id']}/approvals"
    a = c.post(url, json={"batch_hash": again["batch_hash"]}, headers=bearer("casey"))
    assert a.status_code == 200 and a.json()["counted"] == 2, a.text
    st = c.get(f"/v1/rollbacks/batches/{again['batch_id']}", headers=bearer("ops")).json()
    assert st["rollbacks"] == 2 and st["by_status"] == {"approved": 2}
    # still named once approved (its plans are still open)
    assert _batch(c, req)["batch_id"] == first["batch_id"]
    size = _size(c)
    # another request (another reason, requester, select) is not that retry: nothing planned, no batch named
    for body, who in (({**req, "reason": "other"}, "rita"), (req, "casey"), ({**req, "select": SENDS}, "rita")):
        r = _batch(c, body, who)
        assert r["batch_id"] is None and r["existing_batch"] is False and r["rollbacks"] == [], (body, who, r)
        assert {x["execution"] for x in r["existing"]} >= set(sends)
    # a dry run of the same request names no batch (a dry run never does)
    dry = _batch(c, {**req, "dry_run": True})
    assert dry["batch_id"] is None and dry["existing_batch"] is False
    assert _size(c) == size


def test_a_retry_keeps_the_rollbacks_of_others_in_existing(server):
    c = server
    sends, _logs, other = _record(c)
    single = c.post("/v1/rollbacks", json={"execution_id": other, "scenario": "customer_request",
                                           "reason": "on its own"}, headers=bearer("rita")).json()
    req = {"executions": [*sends, other], "scenario": "customer_request", "reason": "by id"}
    first = _batch(c, req)
    assert first["batch_id"] and sorted(first["originals"]) == sorted(sends)
    assert first["existing"] == [{"execution": other, "rollback": single["rollback_id"]}]
    size = _size(c)
    again = _batch(c, req)
    assert again["batch_id"] == first["batch_id"] and again["existing_batch"] is True
    assert again["existing"] == first["existing"] and again["rollbacks"] == first["rollbacks"]
    assert _size(c) == size
    # fewer executions than the batch's plans: not that request
    fewer = _batch(c, {**req, "executions": [sends[0]]})
    assert fewer["batch_id"] is None and fewer["existing_batch"] is False
    # once one of its plans is cancelled, the retry plans that execution again: a new batch
    gone = first["rollbacks"][0]
    r = c.post(f"/v1/subjects/{gone}/cancel", json={"reason": "wrong"}, headers=bearer("rita"))
    assert r.status_code == 200, r.text
    new = _batch(c, req)
    assert new["batch_id"] not in (None, first["batch_id"]) and new["existing_batch"] is False
    assert new["originals"] == [first["originals"][0]]


def test_stopline_rollback_run_again_prints_the_batch(tmp_path, ledger_url):  # noqa: F811
    """`stopline rollback` run again after its output was lost prints the batch it recorded."""
    from policy_engine.runtime import Runtime

    pol = server_policy_dir(tmp_path)
    with Runtime.open(str(pol), ledger=ledger_url) as rt:
        g = rt.gate({"workflow": "replies", "type": "send", "amount": 50.0, "promise": False, "id": "s0"})
        x = rt.executed(g.decision_id, receipt={"message": "hi", "ticket": 0})
        first = rt.request_bulk_rollback(SENDS, "customer_request", "ops", "run-7")
        again = rt.request_bulk_rollback(SENDS, "customer_request", "ops", "run-7")
        assert (again.batch_id, again.batch_hash) == (first.batch_id, first.batch_hash)
        assert again.existing_batch is True
        assert again.originals == first.originals == (x.execution_id,)
    args = ["rollback", "-p", str(pol), "--ledger", ledger_url, "--select", SENDS, "--scenario", "customer_request",
            "--requested-by", "ops", "--reason", "run-7"]
    r = CliRunner().invoke(main, [*args, "--format", "json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert (out["batch_id"], out["existing_batch"]) == (first.batch_id, True)
    r = CliRunner().invoke(main, args, catch_exceptions=False)
    assert r.exit_code == 0 and f"batch {first.batch_id}" in r.output and first.batch_hash in r.output, r.output
