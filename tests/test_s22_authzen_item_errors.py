"""One AuthZEN batch item that cannot be decided (its ledger write fails, the recorder has
stopped, the evaluation raised) is that item's deny: ``decision: false`` with the problem
as ``context.error`` (AuthZEN 1.0, "Errors": errors in individual evaluations are answered
in the payload), not recorded, while every other item is answered with its decision, each
recorded once. Only when no item at all was decided is the request answered with the
problem, as one evaluation is (nothing was recorded: sending it again is safe). The same
rule under the three semantics: a failed item counts as a deny (it stops
``deny_on_first_deny``, never ends ``permit_on_first_permit``). SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
from ledger_fixtures import ledger_url  # noqa: E402,F401  (the parametrised backend fixture)
from server_support import bearer, server_policy_dir, write_identities  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from policy_engine.ledger import LedgerUnavailable  # noqa: E402
from policy_engine.server import ServerConfig, create_app  # noqa: E402

TOP = {"subject": {"type": "user", "id": "a"}, "action": {"name": "log"}, "context": {"workflow": "replies"}}
OK, BOOM = {"resource": {"type": "t", "id": "ok"}}, {"resource": {"type": "t", "id": "boom"}}
PATH = "/access/v1/evaluations"


def _client(tmp_path, ledger, fast_path=True):
    ids = str(write_identities(tmp_path / "ids.yaml"))
    app = create_app(
        ServerConfig(
            str(server_policy_dir(tmp_path)), ledger=ledger, identities=ids, reload_interval=0, fast_path=fast_path
        )
    )
    return TestClient(app, raise_server_exceptions=False)


def _boom(action) -> bool:
    return isinstance(action, dict) and action.get("resource", {}).get("id") == "boom"


def fail_boom(rt, exc: Exception) -> None:
    """The ledger write of every action on resource `boom` fails with ``exc`` (a batch
    holding one fails whole, records nothing, and the recorder gates its items one by one)."""
    many, one = rt.gate_many, rt.gate

    def gate_many(actions, **kw):
        actions = list(actions)
        if any(_boom(a) for a in actions):
            raise exc
        return many(actions, **kw)

    def gate(action, **kw):
        if _boom(action):
            raise exc
        return one(action, **kw)

    rt.gate_many, rt.gate = gate_many, gate


def size(c) -> int:
    return c.get("/v1/ledger/head", headers=bearer("ops")).json()["size"]


def post(c, items, sem=None):
    body = {**TOP, "evaluations": items, **({"options": {"evaluations_semantic": sem}} if sem else {})}
    return c.post(PATH, json=body, headers={**bearer("ops"), "X-Request-ID": "batch-1"})


def assert_failed(item, status):
    assert item["decision"] is False
    ctx = item["context"]
    assert ctx["effect"] == "deny" and ctx["recorded"] is False and ctx["error"]["status"] == status
    assert ctx["reason"].startswith("not decided: ") and ctx["policy_hash"].startswith("sha256:")


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast path", "no fast path"])
def test_execute_all_answers_a_failed_item_as_its_deny_and_the_others_recorded_once(
    tmp_path,
    ledger_url,  # noqa: F811
    fast_path,
):
    with _client(tmp_path, ledger_url, fast_path) as c:
        fail_boom(c.app.state.runtime, RuntimeError("the write of this one failed (simulated)"))
        before = size(c)
        r = post(c, [OK, BOOM, OK, OK])
        assert r.status_code == 200 and r.headers["x-request-id"] == "batch-1", r.text
        evs = r.json()["evaluations"]
        assert [e["decision"] for e in evs] == [True, False, True, True]
        assert_failed(evs[1], 500)
        ok = [e["context"] for i, e in enumerate(evs) if i != 1]
        assert all(x["recorded"] for x in ok) and len({x["decision_id"] for x in ok}) == 3
        assert size(c) == before + 3  # the three decided items, each once; the failed one not at all
        assert 'stopline_problems_total{status="500"} 1.0' in c.get("/metrics").text


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast path", "no fast path"])
def test_an_unavailable_ledger_fails_the_items_of_its_transaction_and_records_none_twice(
    tmp_path,
    ledger_url,  # noqa: F811
    fast_path,
):
    """The ledger unavailable (perhaps after the commit landed): the recorder answers every
    item of that transaction with the 503 and gates none again (session 22: a retry could
    record what landed a second time). Items the recorder took in another transaction are
    answered with their decisions; none is recorded twice."""
    with _client(tmp_path, ledger_url, fast_path) as c:
        fail_boom(c.app.state.runtime, LedgerUnavailable("could not connect (simulated)"))
        before = size(c)
        r = post(c, [OK, BOOM, OK, OK])
        if r.status_code == 503:  # (all four in one transaction: nothing decided, the request's problem)
            assert size(c) == before
            return
        assert r.status_code == 200, r.text
        evs = r.json()["evaluations"]
        assert_failed(evs[1], 503)
        decided = [e["context"] for e in evs if e["decision"]]
        for e in evs:
            if not e["decision"]:
                assert_failed(e, 503)
        assert all(x["recorded"] for x in decided) and size(c) == before + len(decided)


def test_an_unexpected_failure_of_one_item_is_a_500_in_that_item_never_a_traceback(tmp_path, ledger_url):  # noqa: F811
    with _client(tmp_path, ledger_url) as c:
        fail_boom(c.app.state.runtime, RuntimeError("secret internals"))
        before = size(c)
        r = post(c, [BOOM, OK])
        assert r.status_code == 200, r.text
        evs = r.json()["evaluations"]
        assert_failed(evs[0], 500)
        assert "secret" not in r.text and "Traceback" not in r.text and "RuntimeError" in r.text
        assert evs[1]["decision"] is True and size(c) == before + 1


def test_deny_on_first_deny_stops_at_a_failed_item(tmp_path, ledger_url):  # noqa: F811
    with _client(tmp_path, ledger_url) as c:
        fail_boom(c.app.state.runtime, LedgerUnavailable("down (simulated)"))
        before = size(c)
        evs = post(c, [OK, BOOM, OK], "deny_on_first_deny").json()["evaluations"]
        assert [e["decision"] for e in evs] == [True, False]  # the third never decided, never recorded
        assert evs[0]["context"]["recorded"] is True
        assert_failed(evs[1], 503)
        assert size(c) == before + 1


def test_permit_on_first_permit_goes_past_a_failed_item(tmp_path, ledger_url):  # noqa: F811
    with _client(tmp_path, ledger_url) as c:
        fail_boom(c.app.state.runtime, LedgerUnavailable("down (simulated)"))
        before = size(c)
        evs = post(c, [BOOM, OK, OK], "permit_on_first_permit").json()["evaluations"]
        assert [e["decision"] for e in evs] == [False, True]  # a failure never permits, nor ends the search
        assert_failed(evs[0], 503)
        assert size(c) == before + 1


@pytest.mark.parametrize("sem", [None, "deny_on_first_deny", "permit_on_first_permit"])
def test_a_batch_in_which_nothing_was_decided_is_the_requests_problem(tmp_path, sem):
    with _client(tmp_path, f"sqlite:///{tmp_path / 'l.db'}") as c:
        fail_boom(c.app.state.runtime, LedgerUnavailable("could not connect (simulated)"))
        before = size(c)
        items = [BOOM, OK] if sem == "deny_on_first_deny" else [BOOM, BOOM]  # (stopped at the first)
        r = post(c, items, sem)
        assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json", r.text
        assert r.json()["type"].endswith("/ledger-unavailable") and r.headers["x-request-id"] == "batch-1"
        assert size(c) == before  # nothing recorded: the PEP may send it again


class _Raising:
    """An engine whose evaluation of resource `boom` raises (the rest as the real one)."""

    def __init__(self, engine) -> None:
        self._engine = engine

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def evaluate(self, action, *args, **kwargs):
        if _boom(action):
            raise ValueError("evaluation failed (simulated)")
        return self._engine.evaluate(action, *args, **kwargs)


@pytest.mark.parametrize("sem", ["execute_all", "deny_on_first_deny", "permit_on_first_permit"])
def test_an_evaluation_error_without_a_ledger_is_that_items_deny(tmp_path, sem):
    with _client(tmp_path, None) as c:
        store = c.app.state.store
        store._engine = _Raising(store._engine)
        evs = post(c, [OK, BOOM, OK], sem).json()["evaluations"]
        want = {
            "execute_all": [True, False, True],
            "deny_on_first_deny": [True, False],
            "permit_on_first_permit": [True],
        }[sem]
        assert [e["decision"] for e in evs] == want
        if len(evs) > 1:
            assert_failed(evs[1], 500)
            assert evs[1]["context"]["error"]["message"].endswith("(ValueError)")
