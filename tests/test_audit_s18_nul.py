"""Audit S18: a NUL character (``"\\x00"``) in any string reaching the ledger.

PostgreSQL text cannot hold a NUL (psycopg refuses to send one: a DataError), SQLite can.
The ledger mapped that DataError to ``LedgerUnavailable`` (a 503 "ledger-unavailable" over
HTTP: "the ledger is down") and the queue let the raw ``psycopg.DataError`` out (a 500),
where SQLite answered 404/422/200. Now both backends answer alike, and nothing is lost:

- an id holding a NUL names nothing (``RuntimeUsageError`` "no entry ...", a 404);
- a gate whose workflow (or type) holds a NUL is decided as the engine decides it (an
  undeclared workflow is denied) and recorded, the action as given in its body (JSON writes
  the NUL ``\\u0000``), the entry's ``workflow`` column none (as for a lone surrogate);
- an idempotency key holding a NUL is refused (``InvalidEntry``, a 422) before anything is
  read or recorded, and so is a workflow name, route, ``after`` or duty given to a call
  (``RuntimeUsageError``, a 422);
- the ledger refuses a ``workflow``, ``key`` or link holding a NUL before any append (so it
  never joins, and fails, another caller's group commit); its reads by such a value match
  nothing; a data error of the database is the caller's (``InvalidEntry`` or
  ``InvalidQuery``), never ``LedgerUnavailable``.
"""

from __future__ import annotations

import re

import pytest
from ledger_fixtures import ledger_url  # noqa: F401  (SQLite and PostgreSQL)
from runtime_support import POLICY, T0, WF, at
from sqlalchemy import bindparam, select, text

from policy_engine.ledger import (
    EntryNotFound,
    InvalidEntry,
    InvalidQuery,
    Ledger,
    LedgerError,
    LedgerUnavailable,
    NewEntry,
)
from policy_engine.ledger import schema as lschema
from policy_engine.runtime import Runtime, RuntimeUsageError

NUL = "\x00"
E = lschema.entries


def send(amount: float, **extra) -> dict:
    return {"workflow": WF, "type": "send", "amount": amount, "promise": False, **extra}


@pytest.fixture
def policy_path(tmp_path):
    p = tmp_path / "replies.policy"
    p.write_text(POLICY, encoding="utf-8")
    return p


@pytest.fixture
def rt(policy_path, ledger_url):  # noqa: F811
    with Runtime.open(str(policy_path), ledger=ledger_url, create=True) as r:
        yield r


def _executed_and_rolled_back(rt) -> tuple[str, str, str]:
    """(decision, execution, rollback) ids: an approved send, executed, its rollback requested."""
    g = rt.gate(send(500), now=T0)
    rt.approve(g.decision_id, principal="rita", roles=["reviewer"], now=at(1))
    x = rt.executed(g.decision_id, receipt={"message": "m", "ticket": "t"}, now=at(2))
    rb = rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita", reason="oops",
                             now=at(3))
    assert rb.rollback_id is not None
    return g.decision_id, x.execution_id, rb.rollback_id


# ---------------------------------------------------------------------------------- the runtime
def test_an_id_holding_a_nul_names_nothing(rt):
    d, x, rb = _executed_and_rolled_back(rt)
    size = rt.ledger.size
    for ref in (NUL, d + NUL, NUL + d, "a" + NUL + "b"):
        calls = [
            lambda ref: rt.history(ref),
            lambda ref: rt.authorization(ref, now=at(4)),
            lambda ref: rt.approve(ref, principal="cleo", roles=["customer_service"], now=at(4)),
            lambda ref: rt.cancel(ref, principal="rita", now=at(4)),
            lambda ref: rt.claim(ref, principal="cleo", now=at(4)),
            lambda ref: rt.claim_execution(ref, principal="rita", now=at(4)),
            lambda ref: rt.executed(ref, receipt={"message": "m", "ticket": "t"}, now=at(4)),
            lambda ref: rt.executed(d, receipt={"message": "m", "ticket": "t"}, caused_by=ref, now=at(4)),
            lambda ref: rt.request_rollback(ref, scenario="customer_request", requested_by="rita", reason="r",
                                            now=at(4)),
            lambda ref: rt.step(ref, "compensate:send a correction", "started", now=at(4)),
        ]
        for call in calls:
            with pytest.raises(RuntimeUsageError, match="^no entry"):
                call(ref)
    assert rt.ledger.size == size  # nothing recorded
    # the ledger answers as before: the real ids still work
    assert rt.history(rb)["rollback"]["entry"]["id"] == rb
    assert rt.authorization(d, now=at(4)).status == "executed"
    assert rt.ledger.verify().ok


def test_a_gate_whose_workflow_holds_a_nul_is_denied_and_recorded(rt):
    g = rt.gate({"workflow": "a" + NUL, "type": "send"}, now=T0)
    assert g.effect == "deny" and g.deciding.name == "undeclared workflow"
    e = rt.ledger.get(g.decision_id)
    # the action as given, in the body; the entry's workflow column holds none (it cannot hold this one)
    assert e.workflow is None and e.body["action"]["workflow"] == "a" + NUL
    assert "\\u0000" in e.body_json
    assert rt.history(g.decision_id)["entry"]["body"]["action"]["workflow"] == "a" + NUL
    # its type holding a NUL: an undeclared action of a declared workflow, denied and recorded
    t = rt.gate(send(5, type="se" + NUL + "nd"), now=at(1))
    assert t.effect == "deny" and t.deciding.name == "undeclared action type"
    assert rt.ledger.get(t.decision_id).workflow == WF
    # a NUL in any other value of the action: recorded as given
    n = rt.gate(send(5, note="x" + NUL), now=at(2))
    assert n.effect == "allow" and rt.ledger.get(n.decision_id).body["action"]["note"] == "x" + NUL
    # in a batch (one transaction): every action decided and recorded, none lost
    gs = rt.gate_many([{"workflow": NUL, "type": "send"}, send(5), {"workflow": "b" + NUL, "type": "x"}], now=at(3))
    assert [x.effect for x in gs] == ["deny", "allow", "deny"]
    assert [rt.ledger.get(x.decision_id).workflow for x in gs] == [None, WF, None]
    # an execution reported without a decision, naming such a workflow: recorded, unauthorized
    x = rt.executed(None, action={"workflow": "a" + NUL, "type": "send"}, receipt={"message": "m"}, now=at(4))
    assert not x.authorized and rt.ledger.get(x.execution_id).workflow is None
    assert rt.workflow_status(WF)["status"] == "running"
    assert rt.ledger.verify().ok


def test_an_idempotency_key_holding_a_nul_is_refused_before_anything_is_recorded(rt):
    d, x, rb = _executed_and_rolled_back(rt)
    size = rt.ledger.size
    for key in (NUL, "k" + NUL, NUL + "k"):
        with pytest.raises(InvalidEntry, match=re.escape("`key` holds a NUL character")):
            rt.gate(send(5), key=key, now=at(4))
        with pytest.raises(InvalidEntry, match=re.escape("`key` holds a NUL character")):
            rt.executed(d, receipt={"message": "m", "ticket": "t"}, key=key, now=at(4))
        with pytest.raises(InvalidEntry, match=re.escape("`key` holds a NUL character")):
            rt.step(rb, "compensate:send a correction", "started", key=key, now=at(4))
    assert rt.ledger.size == size
    assert rt.gate(send(5), key="k", now=at(5)).effect == "allow"  # a key without one: as before


def test_a_name_given_to_a_call_holding_a_nul_is_refused(rt):
    d, x, rb = _executed_and_rolled_back(rt)
    size = rt.ledger.size
    for what, call in [
        ("route", lambda: rt.queue(route=NUL, now=at(4))),
        ("route", lambda: rt.queue(route="customer_service" + NUL, now=at(4))),
        ("after", lambda: rt.queue(after=NUL, now=at(4))),
        ("after", lambda: rt.queue(after=rb + NUL, limit=5, now=at(4))),
        ("workflow", lambda: rt.workflow_status(WF + NUL)),
        ("workflow", lambda: rt.resume(WF + NUL, evidence={"fixed": True}, principal="ops", now=at(4))),
        ("duty", lambda: rt.step(rb, "compensate" + NUL, "started", now=at(4))),
    ]:
        with pytest.raises(RuntimeUsageError, match=re.escape(f"`{what}` holds a NUL character")):
            call()
    assert rt.ledger.size == size
    assert [q.rollback_id for q in rt.queue(route="customer_service", now=at(4))] == [rb]


# ---------------------------------------------------------------------------------- the ledger
def test_the_ledger_refuses_a_nul_in_an_entrys_columns_and_reads_by_one_find_nothing(ledger_url):  # noqa: F811
    with Ledger.open(ledger_url, create=True) as led:
        first = led.append("stop", {"trigger": "t", "note": "a" + NUL}, workflow="w")
        assert led.get(first.id).body["note"] == "a" + NUL  # (in the body: stored, as \u0000)
        for kw, needle in ((dict(workflow="w" + NUL), "`workflow`"), (dict(key="k" + NUL), "`key`"),
                           (dict(links=[first.id + NUL]), "link to unknown entry")):
            with pytest.raises(InvalidEntry, match=re.escape(needle)):
                led.append("stop", {"trigger": "t"}, **kw)
        with pytest.raises(InvalidEntry):  # a batch: all or nothing
            led.append_many([NewEntry("stop", {"trigger": "t"}, workflow="w"),
                             NewEntry("stop", {"trigger": "t"}, workflow=NUL)])
        assert led.size == 1
        for ref in (NUL, first.id + NUL):
            for call in (led.get, led.history, led.prove):
                with pytest.raises(EntryNotFound):
                    call(ref)
            with pytest.raises(EntryNotFound):
                led.entries(link=ref)
        assert led.entries(workflow="w" + NUL) == [] and led.entries(kind="stop" + NUL) == []
        with led.reading() as c:
            assert led.fetch(c, E.c.id == first.id + NUL) == []
            assert led.fetch(c, E.c.workflow.in_(["w" + NUL, "x"])) == []
            assert [e.id for e in led.fetch(c, E.c.workflow == "w")] == [first.id]  # (the transaction goes on)
            stmt = select(E).where(E.c.id == bindparam("ref"))
            assert led.fetch_prepared(c, stmt, {"ref": first.id + NUL}) == []
            assert [e.id for e in led.fetch_prepared(c, stmt, {"ref": first.id})] == [first.id]
        assert led.verify().ok


def test_a_data_error_of_the_database_is_the_callers_not_an_unavailable_ledger(ledger_url):  # noqa: F811
    """What PostgreSQL cannot hold, given straight to the ledger's reads: a query error
    (``InvalidQuery``, a 422), not ``LedgerUnavailable`` (a 503: "the ledger is down").
    SQLite holds a NUL: the same statements answer there."""
    with Ledger.open(ledger_url, create=True) as led:
        pg = led.backend == "postgresql"
        ph = "%s" if pg else "?"

        def sa_read():
            with led.reading() as c:
                return c.execute(text("SELECT :x"), {"x": NUL}).scalar()

        def raw_read():  # the driver's own cursor inside `reading()` (what the queue uses)
            with led.reading() as c:
                cur = c.connection.cursor()
                try:
                    cur.execute(f"SELECT {ph}", (NUL,))
                    return cur.fetchone()[0]
                finally:
                    cur.close()

        for read in (sa_read, raw_read, lambda: led.query_one("SELECT ?", (NUL,))[0]):
            if pg:
                with pytest.raises(InvalidQuery) as got:
                    read()
                assert not isinstance(got.value, LedgerUnavailable) and "NUL" in str(got.value)
            else:
                assert read() == NUL
        # the ledger is not down: it answers at once
        assert led.size == 0 and led.verify().ok


def test_a_write_the_database_refuses_is_an_invalid_entry_not_an_unavailable_ledger(rt):
    """A value the driver refuses to send inside a write transaction (a NUL, which no
    PostgreSQL text can hold): the transaction is rolled back, and the error is the
    caller's (InvalidEntry), not a ledger gone down. (The runtime refuses such names before
    they get here: this is the ledger's own guard.)"""
    from sqlalchemy import text

    g = rt.gate(send(500), now=T0)
    size = rt.ledger.size
    try:
        rt.ledger.transact(lambda c: [c.execute(text("SELECT :v"), {"v": "p" + NUL}), []][1])
    except LedgerError as e:
        assert rt.ledger.backend == "postgresql"
        assert isinstance(e, InvalidEntry) and not isinstance(e, LedgerUnavailable)
    else:
        assert rt.ledger.backend == "sqlite"  # (SQLite text holds it)
    assert rt.ledger.size == size  # nothing recorded
    assert rt.authorization(g.decision_id, now=at(1)).status == "pending"
    assert rt.ledger.verify().ok


# ---------------------------------------------------------------------------------- over HTTP
pytest.importorskip("fastapi")
from server_support import bearer, server_policy_dir, write_identities  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from policy_engine.server import ServerConfig, create_app  # noqa: E402

PROBLEM = "application/problem+json"


@pytest.fixture
def client(tmp_path, ledger_url):  # noqa: F811
    ids = str(write_identities(tmp_path / "ids.yaml"))
    app = create_app(ServerConfig(str(server_policy_dir(tmp_path)), ledger=ledger_url, identities=ids,
                                  reload_interval=0))
    with TestClient(app) as c:
        yield c


def _problem(r, status: int, needle: str = "") -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"] == PROBLEM
    assert needle in r.json()["detail"], r.json()


def test_over_http_a_nul_is_a_client_error_never_a_503(client):
    c, ops = client, bearer("ops")
    g = c.post("/v1/gate", json={"action": send(500)}, headers=ops).json()
    d = g["decision_id"]
    size = c.get("/v1/ledger/head", headers=ops).json()["size"]
    # an id in the path holding a NUL: no entry (404)
    for ref in ("%00", f"{d}%00", "a%00b"):
        _problem(c.get(f"/v1/history/{ref}", headers=ops), 404, "no entry")
        _problem(c.get(f"/v1/subjects/{ref}", headers=ops), 404, "no entry")
        _problem(c.post(f"/v1/subjects/{ref}/cancel", json={}, headers=bearer("rita")), 404, "no entry")
        _problem(c.post(f"/v1/decisions/{ref}/claim", json={}, headers=bearer("rita")), 404, "no entry")
        _problem(c.post(f"/v1/rollbacks/{ref}/claim", json={}, headers=bearer("casey")), 404, "no entry")
        _problem(c.post(f"/v1/rollbacks/{ref}/steps", json={"duty": "x", "status": "started"}, headers=ops),
                 404, "no entry")
        _problem(c.get(f"/v1/rollbacks/batches/{ref}", headers=ops), 404, "no entry")
        _problem(c.get(f"/v1/ledger/proofs/inclusion/{ref}", headers=ops), 404)
    _problem(c.post("/v1/approvals", json={"subject": d + NUL, "principal": "rita"}, headers=bearer("rita")),
             404, "no entry")
    _problem(c.post("/v1/executions", json={"decision_id": d + NUL, "receipt": {"message": "m"}}, headers=ops),
             404, "no entry")
    _problem(c.post("/v1/rollbacks", json={"execution_id": NUL, "scenario": "customer_request", "reason": "r"},
                    headers=bearer("casey")), 404, "no entry")
    _problem(c.post("/v1/rollbacks/batches", json={"executions": [d + NUL], "scenario": "customer_request",
                                                   "reason": "r"}, headers=bearer("casey")), 422,
             "not recorded executions")
    # a route, an `after`, a workflow name holding a NUL: refused (422)
    _problem(c.get("/v1/queue?route=%00", headers=ops), 422, "`route` holds a NUL character")
    _problem(c.get("/v1/queue?after=%00&limit=5", headers=ops), 422, "`after` holds a NUL character")
    _problem(c.get("/v1/workflows/replies%00", headers=ops), 422, "`workflow` holds a NUL character")
    _problem(c.post("/v1/workflows/replies%00/resume", json={"evidence": {"fixed": True}}, headers=bearer("rita")),
             422, "`workflow` holds a NUL character")
    # an idempotency key holding a NUL: refused (422), nothing recorded
    _problem(c.post("/v1/gate", json={"action": send(5), "key": "k" + NUL}, headers=ops), 422,
             "`key` holds a NUL character")
    _problem(c.post("/v1/executions", json={"decision_id": d, "receipt": {"message": "m"}, "key": NUL},
                    headers=ops), 422, "`key` holds a NUL character")
    assert c.get("/v1/ledger/head", headers=ops).json()["size"] == size
    # a gate whose workflow holds a NUL: denied and recorded (200), the action as given
    r = c.post("/v1/gate", json={"action": {"workflow": "a" + NUL, "type": "send"}}, headers=ops)
    assert r.status_code == 200 and r.json()["decision"]["effect"] == "deny", r.text
    h = c.get(f"/v1/history/{r.json()['decision_id']}", headers=ops).json()
    assert h["entry"]["workflow"] is None and h["entry"]["body"]["action"]["workflow"] == "a" + NUL
    b = c.post("/v1/gate/batch", json={"actions": [{"workflow": NUL, "type": "send"}, send(5)]}, headers=ops)
    assert b.status_code == 200 and [x["decision"]["effect"] for x in b.json()["results"]] == ["deny", "allow"]
    # AuthZEN: context.workflow holding a NUL: decided (false) and recorded
    req = {"subject": {"type": "agent", "id": "a1"}, "action": {"name": "send"},
           "resource": {"type": "ticket", "id": "T-1"}, "context": {"workflow": "replies" + NUL}}
    for path in ("/access/v1/evaluation", "/access/v1/evaluations"):
        body = req if path.endswith("evaluation") else {"evaluations": [req, {**req, "context": {"workflow": NUL}}]}
        r = c.post(path, json=body, headers=ops)
        assert r.status_code == 200, r.text
        for one in r.json().get("evaluations") or [r.json()]:
            assert one["decision"] is False and one["context"]["recorded"] is True
            e = c.get(f"/v1/history/{one['context']['decision_id']}", headers=ops).json()["entry"]
            assert e["workflow"] is None
    assert c.get("/v1/ledger/head", headers=ops).json()["size"] == size + 6
    assert c.get("/healthz").status_code == 200


def test_the_reviewer_page_of_a_batch_id_holding_a_nul_is_not_found(client):
    from test_server_ui_batches import sign_in

    sign_in(client, "rita")
    for ref in ("%00", "a%00b"):
        r = client.get(f"/ui/batches/{ref}")
        assert r.status_code == 404 and "not a rollback batch" in r.text, r.text


def test_a_principal_or_requester_holding_nul_is_refused_alike_on_both_backends(ledger_url, tmp_path):  # noqa: F811
    """Principals land in projection columns (`claimed_by`, `requested_by`): SQLite stored a
    NUL there and PostgreSQL refused the write; both refuse it now, before anything is read
    or recorded, as for any other name."""
    from runtime_support import RECEIPT, at, send, write_policy

    from policy_engine import Runtime
    from policy_engine.runtime import RuntimeUsageError

    with Runtime.open(str(write_policy(tmp_path)), ledger=ledger_url) as rt:
        g = rt.gate(send(10.0), now=at(0))
        x = rt.executed(g.decision_id, receipt=RECEIPT, now=at(1))
        p = rt.gate(send(500.0), now=at(2))
        n = rt.ledger.size
        for call in (lambda: rt.claim_execution(p.decision_id, principal="w\x00", now=at(3)),
                     lambda: rt.approve(p.decision_id, principal="r\x00", roles=["reviewer"], now=at(3)),
                     lambda: rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="r\x00",
                                                 reason="r", now=at(3)),
                     lambda: rt.request_bulk_rollback(None, "customer_request", "r\x00", "r",
                                                      executions=[x.execution_id], now=at(3))):
            with pytest.raises(RuntimeUsageError, match="NUL"):
                call()
        assert rt.ledger.size == n
