"""The recorder (``state.Recorder``) when a keyed request in its transaction is not a retry
(its key used for another action, by another caller). It used to fail the whole transaction
and every request was gated again one at a time: one commit per new request (a 1,000-item
keyed batch with one changed item, and every other client's request grouped with it). Now
the recorder's one ``gate_many`` (``conflicts="return"``) answers each conflicting request
with its conflict and records the rest in that same transaction, in order (a stop fired by
one still stops the later ones); so does a key given twice in the transaction for two
requests; a ledger lost at that commit answers every request with the 503 and gates nothing
again. SQLite and PostgreSQL, a real database."""

from __future__ import annotations

import contextlib

import pytest

pytest.importorskip("fastapi")
from ledger_fixtures import ledger_url  # noqa: E402,F401  (the parametrised backend fixture)
from server_support import bearer, server_policy_dir, write_identities  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402
from test_s22_server_recorder import commit_lost_after_it_landed  # noqa: E402

from policy_engine.ledger import IdempotencyConflict, LedgerUnavailable  # noqa: E402
from policy_engine.server import ServerConfig, create_app  # noqa: E402

MANY = "/access/v1/evaluations"


def _client(tmp_path, ledger, **config):
    ids = str(write_identities(tmp_path / "ids.yaml"))
    app = create_app(ServerConfig(str(server_policy_dir(tmp_path)), ledger=ledger, identities=ids, reload_interval=0,
                                  **config))
    return TestClient(app, raise_server_exceptions=False)


class _Loop:
    """Stands in for a request's event loop: keeps what the recorder settles."""

    def __init__(self) -> None:
        self.settled: list = []

    def call_soon_threadsafe(self, fn, settled) -> None:
        self.settled.extend(settled)


def _act(n: int, **more) -> dict:
    return {"workflow": "replies", "type": "log", "n": n, **more}


@contextlib.contextmanager
def counted(rt, lost_at: int | None = None):
    """Counts the runtime's ``gate`` (one by one) and ``gate_many`` calls; ``lost_at``: the
    commit of that ``gate_many`` call (1: the first) lands, then raises as a lost connection."""
    seen = {"gate": 0, "gate_many": 0, "lost": []}
    real_gate, real_many = rt.gate, rt.gate_many

    def gate(*a, **k):
        seen["gate"] += 1
        return real_gate(*a, **k)

    def gate_many(*a, **k):
        seen["gate_many"] += 1
        if seen["gate_many"] != lost_at:
            return real_many(*a, **k)
        with commit_lost_after_it_landed(rt.ledger) as raised:
            try:
                return real_many(*a, **k)
            finally:
                seen["lost"] = raised

    rt.gate, rt.gate_many = gate, gate_many
    try:
        yield seen
    finally:
        del rt.gate, rt.gate_many


def test_a_conflict_fails_only_its_request_and_the_rest_is_recorded_in_one_commit(tmp_path, ledger_url):  # noqa: F811
    with _client(tmp_path, ledger_url) as c:
        rt, rec = c.app.state.runtime, c.app.state.recorder
        rt.gate(_act(-1), key="authzen:used", caller="ops")
        before = rt.ledger.size
        loop = _Loop()
        batch = [(_act(i), "ops", f"k{i}", loop, f"authzen:k{i}") for i in range(20)]
        batch.insert(7, (_act(-2), "ops", "conflict", loop, "authzen:used"))  # another action under a used key
        batch.insert(3, (_act(100), "rita", "plain", loop))  # another client's unkeyed request, grouped with them
        with counted(rt) as seen:
            rec._record(batch)
        got = dict(loop.settled)
        assert isinstance(got.pop("conflict"), IdempotencyConflict)
        assert not any(isinstance(r, Exception) or r.replayed for r in got.values()), got
        assert rt.ledger.size == before + 21
        # the rest recorded in the same transaction (was: a failed one, then 21 gates, 21 commits)
        assert seen["gate"] == 0 and seen["gate_many"] == 1, seen
        # recorded in the transaction's order, each under its own key and caller
        order = [it[2] for it in batch if it[2] != "conflict"]
        entries = rt.ledger.entries(kind="decision", after=before - 1)
        assert [e.id for e in entries] == [got[r].decision_id for r in order]
        assert rt.ledger.get(got["plain"].decision_id).body["caller"] == "rita"
        assert rt.ledger.get(got["k7"].decision_id).key == "authzen:k7"


def test_a_keyed_batch_retried_with_one_item_changed_replays_the_rest_without_gating_one_by_one(
    tmp_path, ledger_url  # noqa: F811
):
    def body(rids):
        return {"subject": {"type": "user", "id": "a"}, "action": {"name": "log"}, "context": {"workflow": "replies"},
                "evaluations": [{"resource": {"type": "t", "id": r}} for r in rids]}

    with _client(tmp_path, ledger_url) as c:
        rt = c.app.state.runtime
        headers = {**bearer("ops"), "Idempotency-Key": "batch-1"}
        rids = [f"r{i}" for i in range(40)]
        first = c.post(MANY, json=body(rids), headers=headers)
        assert first.status_code == 200, first.text
        before = rt.ledger.size
        rids[17] = "changed"
        with counted(rt) as seen:
            again = c.post(MANY, json=body(rids), headers=headers)
        assert again.status_code == 200, again.text
        evs, want = again.json()["evaluations"], first.json()["evaluations"]
        assert evs[17]["context"]["error"]["status"] == 409 and evs[17]["decision"] is False
        assert [e["context"]["decision_id"] for i, e in enumerate(evs) if i != 17] == [
            e["context"]["decision_id"] for i, e in enumerate(want) if i != 17]
        assert all(e["context"]["replayed"] for i, e in enumerate(evs) if i != 17)
        assert rt.ledger.size == before and seen["gate"] == 0, seen  # (was: a gate per item)


def test_a_stop_fired_before_the_conflict_still_stops_the_later_requests(tmp_path, ledger_url):  # noqa: F811
    with _client(tmp_path, ledger_url) as c:
        rt, rec = c.app.state.runtime, c.app.state.recorder
        rt.gate(_act(-1), key="authzen:used", caller="ops")
        loop = _Loop()
        stopping = {"workflow": "replies", "type": "send", "amount": 5, "promise": True}
        after = {"workflow": "replies", "type": "send", "amount": 5, "promise": False}
        rec._record([(after, "ops", "before", loop, "authzen:a"), (stopping, "ops", "stop", loop, "authzen:s"),
                     (_act(-2), "ops", "conflict", loop, "authzen:used"), (after, "ops", "after", loop)])
        got = dict(loop.settled)
        assert isinstance(got["conflict"], IdempotencyConflict)
        assert got["before"].decision.effect == "allow" and got["stop"].stopped
        assert got["after"].decision.effect != "allow" and got["after"].workflow_status == "stopped"
        assert len(rt.ledger.entries(kind="stop")) == 1


def test_one_key_twice_in_the_transaction_for_two_requests_is_still_told_apart(tmp_path, ledger_url):  # noqa: F811
    """(No key of the ledger is involved: the first is recorded, the other is its conflict, one transaction.)"""
    with _client(tmp_path, ledger_url) as c:
        rt, rec = c.app.state.runtime, c.app.state.recorder
        before = rt.ledger.size
        loop = _Loop()
        with counted(rt) as seen:
            rec._record([(_act(1), "ops", "first", loop, "authzen:k"), (_act(2), "ops", "neighbour", loop),
                         (_act(3), "ops", "other", loop, "authzen:k")])
        assert seen["gate"] == 0 and seen["gate_many"] == 1, seen
        got = dict(loop.settled)
        assert isinstance(got["other"], IdempotencyConflict)
        assert rt.ledger.get(got["first"].decision_id).key == "authzen:k" and not got["neighbour"].replayed
        assert rt.ledger.size == before + 2


def test_a_ledger_lost_at_the_commit_answers_every_request_with_the_problem_once(tmp_path, ledger_url):  # noqa: F811
    with _client(tmp_path, ledger_url) as c:
        rt, rec = c.app.state.runtime, c.app.state.recorder
        rt.gate(_act(-1), key="authzen:used", caller="ops")
        before = rt.ledger.size
        loop = _Loop()
        batch = [(_act(1), "ops", "a", loop, "authzen:a"), (_act(-2), "ops", "conflict", loop, "authzen:used"),
                 (_act(2), "rita", "b", loop)]
        with counted(rt, lost_at=1) as seen:  # (the one transaction, the conflict's place held in it)
            rec._record(batch)
        assert seen["lost"]
        got = dict(loop.settled)
        # (the conflict too: its outcome is not known without the commit; its retry with the key is its 409)
        assert all(isinstance(r, LedgerUnavailable) for r in got.values()), got
        assert seen["gate"] == 0 and rt.ledger.size == before + 2  # (what landed, once: never gated again)
