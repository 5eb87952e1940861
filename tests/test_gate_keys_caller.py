"""Idempotency keys for a batch of gates, and the gate's caller in the record (issue 20),
on SQLite and PostgreSQL, over the Python API and the real FastAPI application.

A queue consumer that gates a batch, loses the answer and retries must not record its
decisions twice (nor put a `require_approval` twice before the reviewers): ``gate_many``
and ``POST /v1/gate/batch`` take a key per action, with ``gate``'s rule (the recorded
decision back, nothing recorded; a key used for anything else is a conflict and the whole
batch records nothing). And the system of record says who asked: the authenticated caller
of ``/v1/gate``, ``/v1/gate/batch`` and the AuthZEN routes is in the decision entry; a
server without identities records exactly what it recorded before."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import WF, at, policy_path, rt, send  # noqa: F401  (fixtures)

from policy_engine.ledger import IdempotencyConflict, InvalidEntry
from policy_engine.ledger.canonical import canonical_text
from policy_engine.runtime import RuntimeUsageError


def _size(rt) -> int:
    return rt.ledger.size


def _entries(rt) -> list:
    return rt.ledger.entries(limit=10_000)


# ---------------------------------------------------------------------- A. keys in a batch (Python API)
def test_a_retried_keyed_batch_records_nothing_new_and_returns_the_same_ids(rt):
    batch = [send(10.0, id="m1"), send(500.0, id="m2"), send(2000.0, id="m3"), {"workflow": WF, "type": "log"}]
    keys = ["q-1", "q-2", "q-3", "q-4"]
    first = rt.gate_many(batch, keys=keys, now=at(0))
    assert [g.effect for g in first] == ["allow", "require_approval", "deny", "allow"]
    assert not any(g.replayed for g in first)
    assert [rt.ledger.get(g.decision_id).key for g in first] == keys
    size = _size(rt)
    # the consumer lost the answer: the same batch, later (another `now`)
    again = rt.gate_many(batch, keys=keys, now=at(30))
    assert _size(rt) == size  # nothing recorded: not a decision, not a second pending approval
    assert [g.decision_id for g in again] == [g.decision_id for g in first]
    assert all(g.replayed for g in again)
    assert [g.decision.model_dump(mode="json") for g in again] == [g.decision.model_dump(mode="json") for g in first]
    # one decision awaits the reviewers, not two
    assert [e.body["decision"]["effect"] for e in _entries(rt) if e.kind == "decision"].count("require_approval") == 1
    assert rt.authorization(first[1].decision_id, now=at(31)).status == "pending"
    # one key of the batch gated alone: the same record too, as `gate` answers a retry
    assert rt.gate(batch[1], key="q-2", now=at(40)).decision_id == first[1].decision_id
    assert _size(rt) == size


def test_a_batch_mixing_keyed_new_and_unkeyed_actions(rt):
    first = rt.gate_many([send(10.0, id="a")], keys=["k-a"], now=at(0))
    size = _size(rt)
    res = rt.gate_many([send(10.0, id="a"), send(20.0, id="b"), send(30.0, id="c")], keys=["k-a", None, "k-c"],
                       now=at(1))
    assert [g.replayed for g in res] == [True, False, False]
    assert res[0].decision_id == first[0].decision_id
    assert _size(rt) == size + 2  # b (no key) and c (a new key): recorded
    assert [rt.ledger.get(g.decision_id).key for g in res] == ["k-a", None, "k-c"]
    # again: the keyed ones replayed, the unkeyed one decided and recorded again (no key, no identity)
    res2 = rt.gate_many([send(10.0, id="a"), send(20.0, id="b"), send(30.0, id="c")], keys=["k-a", None, "k-c"],
                        now=at(2))
    assert [g.replayed for g in res2] == [True, False, True]
    assert res2[2].decision_id == res[2].decision_id and res2[1].decision_id != res[1].decision_id
    assert _size(rt) == size + 3


def test_a_key_used_for_another_action_fails_the_whole_batch_and_records_nothing(rt):
    rt.gate(send(10.0, id="x"), key="used", now=at(0))
    size, before = _size(rt), [e.id for e in _entries(rt)]
    with pytest.raises(IdempotencyConflict, match="used"):
        rt.gate_many([send(20.0, id="new"), send(500.0, id="pending"), send(11.0, id="x")],
                     keys=["fresh", None, "used"], now=at(1))
    assert _size(rt) == size and [e.id for e in _entries(rt)] == before  # all or none: none
    # `fresh` was not taken by the failed batch: it records now
    g = rt.gate(send(20.0, id="new"), key="fresh", now=at(2))
    assert not g.replayed and _size(rt) == size + 1
    # a key of another kind of entry (an execution's) is a conflict too
    rt.executed(g.decision_id, receipt={"message": "m", "ticket": "t"}, key="exec-key", now=at(3))
    size = _size(rt)
    with pytest.raises(IdempotencyConflict):
        rt.gate_many([send(20.0)], keys=["exec-key"], now=at(4))
    assert _size(rt) == size


def test_a_key_twice_in_one_batch(rt):
    # the same action twice under one key (a queue that delivered a message twice): one
    # decision, the second answered with it as a retry would be
    res = rt.gate_many([send(500.0, id="d"), send(10.0, id="other"), send(500.0, id="d")], keys=["dup", None, "dup"],
                       now=at(0))
    assert res[2].decision_id == res[0].decision_id and res[2].replayed and not res[0].replayed
    assert res[2].effect == "require_approval"
    decisions = [e for e in _entries(rt) if e.kind == "decision"]
    assert len(decisions) == 2
    # another action under the same key in one batch: a conflict, nothing recorded
    size = _size(rt)
    with pytest.raises(IdempotencyConflict, match="twice"):
        rt.gate_many([send(10.0, id="p"), send(11.0, id="q")], keys=["twin", "twin"], now=at(1))
    # the same action, 7 and 7.0 (the engine decides them differently): not the same
    with pytest.raises(IdempotencyConflict):
        rt.gate_many([send(7, id="p"), send(7.0, id="p")], keys=["twin", "twin"], now=at(1))
    # the same action from two callers under one key: not the same request
    with pytest.raises(IdempotencyConflict):
        rt.gate_many([send(10.0, id="p"), send(10.0, id="p")], keys=["twin", "twin"], caller=["casey", "cleo"],
                     now=at(1))
    assert _size(rt) == size


def test_keys_are_checked_before_anything_is_read_or_recorded(rt):
    size = _size(rt)
    with pytest.raises(RuntimeUsageError, match="one per action"):
        rt.gate_many([send(), send()], keys=["a"], now=at(0))
    for bad in ("", "x" * 257, "\ud800", 5):
        with pytest.raises(InvalidEntry):
            rt.gate_many([send(), send()], keys=["ok", bad], now=at(0))
    with pytest.raises(RuntimeUsageError, match="caller"):
        rt.gate_many([send(), send()], caller=["casey"], now=at(0))
    with pytest.raises(RuntimeUsageError, match="caller"):
        rt.gate(send(), caller="", now=at(0))
    assert _size(rt) == size


def test_a_stop_in_a_keyed_batch_still_stops_the_rest_and_on_replay(rt):
    batch = [send(10.0, id="before"), send(promise=True, id="trigger"), send(10.0, id="after")]
    keys = ["s-1", "s-2", "s-3"]
    first = rt.gate_many(batch, keys=keys, now=at(0))
    assert [g.effect for g in first] == ["allow", "stop", "stop"]
    assert first[1].stopped and first[1].stop_id is not None
    assert first[2].decision.deciding.kind == "stopped" and first[2].workflow_status == "stopped"
    size = _size(rt)
    # the retry with one more (unkeyed) action: the replayed stop still stops it
    again = rt.gate_many([*batch, send(10.0, id="late")], keys=[*keys, None], now=at(5))
    assert [g.replayed for g in again] == [True, True, True, False]
    assert [g.decision_id for g in again[:3]] == [g.decision_id for g in first]
    assert again[1].stopped and again[1].stop_id == first[1].stop_id
    assert again[3].effect == "stop" and again[3].decision.deciding.name == "bad_promise"
    assert _size(rt) == size + 1  # only the new action's decision (no second stop)
    assert len([e for e in _entries(rt) if e.kind == "stop"]) == 1


# ---------------------------------------------------------------------- B. the caller (Python API)
def test_the_caller_is_recorded_and_shown_in_history_and_the_log(rt, ledger_url):
    from policy_engine.cli import main

    g = rt.gate(send(500.0, id="c1"), caller="casey", now=at(0))
    many = rt.gate_many([send(10.0, id="c2"), send(10.0, id="c3")], caller=["ops", None], now=at(1))
    one = rt.gate_many([send(10.0, id="c4")], caller="rita", now=at(2))
    assert rt.ledger.get(g.decision_id).body["caller"] == "casey"
    assert [rt.ledger.get(x.decision_id).body.get("caller") for x in (*many, *one)] == ["ops", None, "rita"]
    assert "caller" not in rt.ledger.get(many[1].decision_id).body
    assert rt.history(g.decision_id)["decision"]["entry"]["body"]["caller"] == "casey"
    # where a decision stands says who asked (a reviewer deciding on it sees it)
    assert rt.authorization(g.decision_id).caller == "casey"
    assert [rt.authorization(x.decision_id).caller for x in (*many, *one)] == ["ops", None, "rita"]
    runner = CliRunner()
    log = runner.invoke(main, ["ledger", "log", "--kind", "decision", "--format", "json", "--ledger", ledger_url])
    assert log.exit_code == 0, log.output
    assert [e["body"].get("caller") for e in json.loads(log.output)] == ["casey", "ops", None, "rita"]
    h = runner.invoke(main, ["history", g.decision_id, "--ledger", ledger_url])
    assert h.exit_code == 0, h.output
    assert json.loads(h.output)["decision"]["entry"]["body"]["caller"] == "casey"


def test_a_keyed_retry_by_another_caller_is_a_conflict(rt):
    g = rt.gate(send(500.0, id="k"), key="mine", caller="casey", now=at(0))
    size = _size(rt)
    assert rt.gate(send(500.0, id="k"), key="mine", caller="casey", now=at(1)).decision_id == g.decision_id
    for other in ("cleo", None):
        with pytest.raises(IdempotencyConflict, match="another caller"):
            rt.gate(send(500.0, id="k"), key="mine", caller=other, now=at(1))
        with pytest.raises(IdempotencyConflict, match="another caller"):
            rt.gate_many([send(10.0), send(500.0, id="k")], keys=[None, "mine"], caller=other, now=at(1))
    # a key recorded without a caller is not taken over by one either
    rt.gate(send(10.0, id="anon"), key="anon", now=at(2))
    with pytest.raises(IdempotencyConflict, match="another caller"):
        rt.gate(send(10.0, id="anon"), key="anon", caller="casey", now=at(3))
    assert _size(rt) == size + 1
    got = rt.gate_many([send(500.0, id="k")], keys=["mine"], caller="casey", now=at(4))
    assert got[0].decision_id == g.decision_id and got[0].replayed


def _old_body(entry) -> str:
    """The body the gate recorded before callers were recorded, by the reference encoder."""
    b = entry.body
    old = {"action": b["action"], "decision": b["decision"], "now": b["now"], "policy_hash": b["policy_hash"]}
    for k in ("action_doubles", "action_error", "action_repr_sha256", "pending_until"):
        if k in b:
            old[k] = b[k]
    return canonical_text(old)


def test_without_a_caller_the_body_is_byte_identical_to_before(rt):
    gs = [rt.gate(send(500.0, id="p"), now=at(0)), rt.gate(send(10.0, id="q"), key="kq", now=at(0)),
          rt.gate(send(7.0, id="r", extra={"n": 1.0}), now=at(0)), rt.gate(send(float("nan")), now=at(0)),
          *rt.gate_many([send(500.0), send(promise=True), send(3.0)], keys=["b1", None, None], now=at(0))]
    for g in gs:
        e = rt.ledger.get(g.decision_id)
        assert "caller" not in e.body
        assert e.body_json == _old_body(e)
    # and with a caller: the same text plus the one field, where RFC 8785 orders it
    for g in (rt.gate(send(500.0, id="p"), caller="casey", now=at(0)),
              rt.gate(send(7.0, extra={"n": 1.0}), caller="é\"\\", now=at(0)),
              rt.gate(send(float("inf")), caller="casey", now=at(0)),
              *rt.gate_many([send(500.0)], caller="ops", now=at(0))):
        e = rt.ledger.get(g.decision_id)
        assert e.body_json == canonical_text(e.body)
        assert json.loads(e.body_json)["caller"] in ("casey", "é\"\\", "ops")


@pytest.mark.parametrize("caller", ["casey", 'q"\\/', "é\u2028\U0001f600", "\x00\x1f\x7f", "x" * 256])
def test_the_fast_body_with_a_caller_is_rfc8785_of_the_body(policy_path, caller):
    rfc8785 = pytest.importorskip("rfc8785")
    from policy_engine import load
    from policy_engine.ledger.canonical import Canonical
    from policy_engine.runtime import gatejson
    from policy_engine.runtime.results import _ts

    eng = load(str(policy_path))
    for a, pending in ((send(500.0, id="f"), "2026-11-27T12:00:00.000000Z"), (send(10.0), None)):
        for _ in range(3):  # (the engine makes a decision template after its first decisions of a kind)
            d = eng.evaluate(a, None, at(0))
        text, recorded, problem = gatejson.recordable(a)
        fast = gatejson.gate_body(text, recorded, problem, d, _ts(at(0)), pending, caller)
        assert isinstance(fast, Canonical)  # the fast path was taken, with the caller
        body = {"action": a, "caller": caller, "decision": d.model_dump(mode="json"), "now": _ts(at(0)),
                "policy_hash": d.policy_hash, **({"pending_until": pending} if pending else {})}
        assert fast.text == rfc8785.dumps(body).decode()
        assert set(fast.keys) == set(body)
        # and without one: the text of before, which has no such key
        del body["caller"]
        assert gatejson.gate_body(text, recorded, problem, d, _ts(at(0)), pending).text == rfc8785.dumps(body).decode()


# ---------------------------------------------------------------------- over HTTP (the real FastAPI app)
@pytest.fixture
def app_factory(tmp_path, ledger_url):
    pytest.importorskip("fastapi")
    from server_support import server_policy_dir, write_identities
    from starlette.testclient import TestClient

    from policy_engine.server import ServerConfig, create_app

    policies = server_policy_dir(tmp_path)

    def make(identities: bool = True, extra_ids: str = "", **kw):
        ids = str(write_identities(tmp_path / "ids.yaml", extra_ids)) if identities else None
        app = create_app(ServerConfig(str(policies), ledger=ledger_url, identities=ids, reload_interval=0, **kw))
        return TestClient(app)

    return make


def _hsend(amount: float, **extra) -> dict:
    return {"workflow": "replies", "type": "send", "amount": amount, "promise": False, **extra}


def _head(c, headers=None) -> int:
    return c.get("/v1/ledger/head", headers=headers).json()["size"]


def test_http_a_retried_keyed_batch_records_nothing_new(app_factory):
    from server_support import bearer

    with app_factory() as c:
        body = {"actions": [_hsend(10, id="h1"), _hsend(500, id="h2"), _hsend(20, id="h3")],
                "keys": ["h-1", "h-2", None]}
        r = c.post("/v1/gate/batch", json=body, headers=bearer("ops"))
        assert r.status_code == 200, r.text
        first = r.json()["results"]
        size = _head(c, bearer("ops"))
        r = c.post("/v1/gate/batch", json=body, headers=bearer("ops"))
        assert r.status_code == 200
        again = r.json()["results"]
        assert [g["decision_id"] for g in again[:2]] == [g["decision_id"] for g in first[:2]]
        assert [g["replayed"] for g in again] == [True, True, False]
        assert _head(c, bearer("ops")) == size + 1  # the unkeyed one only
        # a key used for another action: 409, nothing at all recorded
        size = _head(c, bearer("ops"))
        bad = {"actions": [_hsend(30, id="new"), _hsend(11, id="h1")], "keys": ["h-new", "h-1"]}
        r = c.post("/v1/gate/batch", json=bad, headers=bearer("ops"))
        assert r.status_code == 409 and r.json()["type"].endswith("idempotency-conflict")
        assert _head(c, bearer("ops")) == size
        # keys not one per action: 422, nothing recorded
        r = c.post("/v1/gate/batch", json={"actions": [_hsend(1)], "keys": ["a", "b"]}, headers=bearer("ops"))
        assert r.status_code == 422 and _head(c, bearer("ops")) == size
        r = c.post("/v1/gate/batch", json={"actions": [_hsend(1)], "keys": [""]}, headers=bearer("ops"))
        assert r.status_code == 422 and _head(c, bearer("ops")) == size
        # another caller retrying the batch: a conflict (the key is not theirs), nothing recorded
        r = c.post("/v1/gate/batch", json=body, headers=bearer("casey"))
        assert r.status_code == 409 and _head(c, bearer("ops")) == size


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "fastapi-routes"])
def test_http_the_caller_is_recorded_from_the_credential(app_factory, fast_path):
    from server_support import bearer

    with app_factory(fast_path=fast_path) as c:
        g = c.post("/v1/gate", json={"action": _hsend(500, id="g1"), "key": "g-1"}, headers=bearer("casey")).json()
        gs = c.post("/v1/gate/batch", json={"actions": [_hsend(10), _hsend(20)]}, headers=bearer("ops")).json()
        ev = c.post("/access/v1/evaluation", json={"subject": {"type": "agent", "id": "a1"},
                                                   "action": {"name": "send", "properties": {"amount": 5.0}},
                                                   "resource": {"type": "ticket", "id": "t1"}},
                    headers=bearer("rita")).json()
        evs = c.post("/access/v1/evaluations", json={
            "subject": {"type": "agent", "id": "a1"}, "resource": {"type": "ticket", "id": "t1"},
            "evaluations": [{"action": {"name": "log"}}, {"action": {"name": "other"}}]}, headers=bearer("cleo")).json()
        ids = [g["decision_id"], *(x["decision_id"] for x in gs["results"]), ev["context"]["decision_id"],
               *(x["context"]["decision_id"] for x in evs["evaluations"])]
        callers = [c.get(f"/v1/history/{i}", headers=bearer("ops")).json()["decision"]["entry"]["body"].get("caller")
                   for i in ids]
        assert callers == ["casey", "ops", "ops", "rita", "cleo", "cleo"]
        # where a decision stands says who asked
        assert c.get(f"/v1/subjects/{g['decision_id']}", headers=bearer("ops")).json()["caller"] == "casey"
        # a body cannot name the caller
        r = c.post("/v1/gate", json={"action": _hsend(1), "caller": "rita"}, headers=bearer("casey"))
        assert r.status_code == 422
        # the keyed gate retried by its caller: replayed; by another: 409
        again = c.post("/v1/gate", json={"action": _hsend(500, id="g1"), "key": "g-1"}, headers=bearer("casey"))
        assert again.status_code == 200 and again.json()["decision_id"] == g["decision_id"] and again.json()["replayed"]
        r = c.post("/v1/gate", json={"action": _hsend(500, id="g1"), "key": "g-1"}, headers=bearer("cleo"))
        assert r.status_code == 409 and r.json()["type"].endswith("idempotency-conflict")


def test_http_without_identities_records_what_it_recorded_before(app_factory):
    with app_factory(identities=False) as c:
        g = c.post("/v1/gate", json={"action": _hsend(500, id="u1"), "key": "u-1"}).json()
        gs = c.post("/v1/gate/batch", json={"actions": [_hsend(10), _hsend(2000)], "keys": [None, "u-2"]}).json()
        ev = c.post("/access/v1/evaluation", json={"subject": {"type": "agent", "id": "a1"},
                                                   "action": {"name": "send", "properties": {"amount": 5.0}},
                                                   "resource": {"type": "ticket", "id": "t1"}}).json()
        ids = [g["decision_id"], *(x["decision_id"] for x in gs["results"]), ev["context"]["decision_id"]]
        rt = c.app.state.runtime  # (the app is the AuthZEN fast path in front of FastAPI)
        for i in ids:
            e = rt.ledger.get(i)
            assert "caller" not in e.body and e.body_json == _old_body(e)


def test_http_a_principal_the_ledger_cannot_hold_records_nothing(app_factory):
    from policy_engine.server.identity import hash_token

    extra = f'  - principal: "nul\\0name"\n    roles: []\n    sha256: {hash_token("tok-nul")}\n'
    with app_factory(extra_ids=extra) as c:
        h = {"Authorization": "Bearer tok-nul"}
        size = _head(c, h)
        r = c.post("/v1/gate", json={"action": _hsend(5)}, headers=h)
        assert r.status_code == 422 and "NUL" in r.json()["detail"]
        r = c.post("/v1/gate/batch", json={"actions": [_hsend(5)]}, headers=h)
        assert r.status_code == 422
        r = c.post("/access/v1/evaluation", json={"subject": {"type": "agent", "id": "a1"}, "action": {"name": "log"},
                                                  "resource": {"type": "ticket", "id": "t1"}}, headers=h)
        assert r.status_code == 422 and "principal" in r.json()["detail"]  # (not a 500)
        assert _head(c, h) == size
