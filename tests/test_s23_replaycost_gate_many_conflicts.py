"""``gate_many(conflicts="return")`` and the replays' stops read together (session 23).

A keyed action that is not a retry (its key used for another action or by another caller,
or given twice in the batch for two requests) used to refuse the whole batch (the default,
kept); with ``conflicts="return"`` its place holds its ``IdempotencyConflict`` and the rest is
decided and recorded in the same transaction. The server's recorder uses it: a keyed
conflict costs no failed first attempt, no second commit. And a retried batch reads the
stops its replayed decisions fired with one read (per ``_STOPS_CHUNK``), not one per item.
SQLite and PostgreSQL, a real database."""

from __future__ import annotations

import contextlib

import pytest
from ledger_fixtures import ledger_url  # noqa: F401  (the parametrised backend fixture)
from runtime_support import WF, at, policy_path, rt, send  # noqa: F401  (fixtures)

from policy_engine.ledger import IdempotencyConflict, LedgerUnavailable
from policy_engine.runtime import RuntimeUsageError
from policy_engine.runtime import executions as X


def _log(n: int) -> dict:
    return {"workflow": WF, "type": "log", "n": n}


def _decisions(rt) -> list:
    return rt.ledger.entries(kind="decision", limit=10_000)


# ---------------------------------------------------------------------- the option
def test_a_conflict_holds_its_place_and_the_rest_is_recorded_once_in_order(rt):
    rt.gate(_log(-1), key="used", caller="ops", now=at(0))
    size = rt.ledger.size
    acts = [_log(0), _log(-2), _log(2), send(10.0, id="x"), _log(4)]
    keys = ["k0", "used", None, "k3", "k4"]
    got = rt.gate_many(acts, keys=keys, caller="ops", now=at(1), conflicts="return")
    assert isinstance(got[1], IdempotencyConflict) and "`used`" in str(got[1])
    new = [g for i, g in enumerate(got) if i != 1]
    assert not any(g.replayed for g in new) and rt.ledger.size == size + 4
    # recorded in the batch's order, each under its own key
    assert [e.id for e in _decisions(rt)[-4:]] == [g.decision_id for g in new]
    assert [rt.ledger.get(g.decision_id).key for g in new] == ["k0", None, "k3", "k4"]
    # the same batch again: the same ids (replayed), the same conflict, only the unkeyed one recorded
    again = rt.gate_many(acts, keys=keys, caller="ops", now=at(2), conflicts="return")
    assert isinstance(again[1], IdempotencyConflict) and rt.ledger.size == size + 5
    assert [again[i].decision_id for i in (0, 3, 4)] == [got[i].decision_id for i in (0, 3, 4)]
    assert all(again[i].replayed for i in (0, 3, 4))
    assert not again[2].replayed and again[2].decision_id != got[2].decision_id  # (no key: decided anew)


def test_another_caller_under_a_used_key_is_a_conflict_in_its_place(rt):
    first = rt.gate_many([_log(1), _log(2)], keys=["a", "b"], caller="ops", now=at(0))
    got = rt.gate_many([_log(1), _log(2)], keys=["a", "b"], caller=["rita", "ops"], now=at(1), conflicts="return")
    assert isinstance(got[0], IdempotencyConflict) and "another caller" in str(got[0])
    assert got[1].replayed and got[1].decision_id == first[1].decision_id


def test_one_key_twice_for_two_requests_records_the_first_and_the_later_is_the_conflict(rt):
    size = rt.ledger.size
    got = rt.gate_many([_log(1), _log(9), _log(2), _log(1)], keys=["k", None, "k", "k"], caller="ops", now=at(0),
                       conflicts="return")
    assert isinstance(got[2], IdempotencyConflict) and "given twice" in str(got[2])
    assert got[3].replayed and got[3].decision_id == got[0].decision_id  # (the same request twice: its twin)
    assert rt.ledger.size == size + 2 and rt.ledger.get(got[0].decision_id).key == "k"


def test_a_conflicting_stop_decides_nothing_and_stops_nothing(rt):
    rt.gate(_log(-1), key="used", now=at(0))
    got = rt.gate_many([send(10.0, promise=True), send(10.0)], keys=["used", None], now=at(1), conflicts="return")
    assert isinstance(got[0], IdempotencyConflict)
    assert got[1].effect == "allow" and got[1].workflow_status == "running"
    assert rt.ledger.entries(kind="stop") == [] and rt.workflow_status(WF)["status"] == "running"


def test_every_action_a_conflict_records_nothing(rt):
    rt.gate(_log(-1), key="used", now=at(0))
    size = rt.ledger.size
    got = rt.gate_many([_log(5)], keys=["used"], now=at(1), conflicts="return")
    assert isinstance(got[0], IdempotencyConflict) and rt.ledger.size == size


def test_the_default_still_refuses_the_whole_batch(rt):
    rt.gate(_log(-1), key="used", now=at(0))
    size = rt.ledger.size
    for kw in ({}, {"conflicts": "raise"}):
        with pytest.raises(IdempotencyConflict):
            rt.gate_many([_log(0), _log(-2)], keys=["k0", "used"], now=at(1), **kw)
        with pytest.raises(IdempotencyConflict):
            rt.gate_many([_log(0), _log(1)], keys=["k", "k"], now=at(1), **kw)
    assert rt.ledger.size == size


@pytest.mark.parametrize("bad", ["ignore", None, True])
def test_another_value_of_conflicts_is_a_usage_error_recording_nothing(rt, bad):
    size = rt.ledger.size
    with pytest.raises(RuntimeUsageError, match="`conflicts`"):
        rt.gate_many([_log(0)], keys=["k"], now=at(0), conflicts=bad)
    assert rt.ledger.size == size


# ---------------------------------------------------------------------- replays' stops, read together
def _three_stops(rt) -> tuple[list, list, list]:
    """Three keyed batches, each firing a stop (resumed after), then the lot retried as one."""
    acts, keys, firsts = [], [], []
    for r in range(3):
        a, k = [_log(r), send(10.0, promise=True, r=r)], [f"l{r}", f"s{r}"]
        firsts += rt.gate_many(a, keys=k, now=at(r * 10))
        assert rt.resume(WF, evidence={"fixed": True}, principal="lead", now=at(r * 10 + 1)).allowed
        acts, keys = acts + a, keys + k
    return acts, keys, firsts


def test_a_retried_batch_reads_its_replays_stops_together_and_answers_each_with_its_own(rt, monkeypatch):
    acts, keys, firsts = _three_stops(rt)
    assert [g.stopped for g in firsts] == [False, True] * 3
    monkeypatch.setattr(X, "_STOPS_CHUNK", 2)  # (a chunk's edge between two stops)
    reads: list = []
    real = rt.ledger.fetch_prepared

    def counted(c, stmt, params):
        reads.append(stmt)
        return real(c, stmt, params)

    monkeypatch.setattr(rt.ledger, "fetch_prepared", counted)
    size = rt.ledger.size
    again = rt.gate_many(acts, keys=keys, now=at(100))
    assert rt.ledger.size == size and all(g.replayed for g in again)
    assert [(g.decision_id, g.stopped, g.stop_id) for g in again] == [
        (g.decision_id, g.stopped, g.stop_id) for g in firsts]
    assert all(g.workflow_status == "running" for g in again)  # (resumed since)
    # one read of stops per chunk of 2 replayed decisions (was: one per replayed decision)
    assert len(reads) == 3 and all(s is X._STOPS_OF for s in reads), reads


def test_a_single_keyed_gate_still_answers_its_stop(rt):
    first = rt.gate(send(10.0, promise=True), key="s", now=at(0))
    again = rt.gate(send(10.0, promise=True), key="s", now=at(5))
    assert again.replayed and again.stopped and again.stop_id == first.stop_id
    assert again.workflow_status == "stopped"


# ---------------------------------------------------------------------- the recorder
pytest.importorskip("fastapi")
from server_support import server_policy_dir, write_identities  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402
from test_s22_server_recorder import commit_lost_after_it_landed  # noqa: E402

from policy_engine.server import ServerConfig, create_app  # noqa: E402


class _Loop:
    def __init__(self) -> None:
        self.settled: list = []

    def call_soon_threadsafe(self, fn, settled) -> None:
        self.settled.extend(settled)


@contextlib.contextmanager
def _server(tmp_path, ledger):
    ids = str(write_identities(tmp_path / "ids.yaml"))
    app = create_app(ServerConfig(str(server_policy_dir(tmp_path)), ledger=ledger, identities=ids, reload_interval=0))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c.app.state.runtime, c.app.state.recorder


@contextlib.contextmanager
def _calls(rt, lose: bool = False):
    seen = {"gate": 0, "gate_many": 0, "lost": []}
    real_gate, real_many = rt.gate, rt.gate_many

    def gate(*a, **k):
        seen["gate"] += 1
        return real_gate(*a, **k)

    def gate_many(*a, **k):
        seen["gate_many"] += 1
        if not lose:
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


def test_the_recorder_answers_a_keyed_conflict_without_a_failed_first_attempt(tmp_path, ledger_url):  # noqa: F811
    with _server(tmp_path, ledger_url) as (rt, rec):
        rt.gate(_log(-1), key="authzen:used", caller="ops")
        before = rt.ledger.size
        loop = _Loop()
        batch = [(_log(i), "ops", f"k{i}", loop, f"authzen:k{i}") for i in range(6)]
        batch.insert(2, (_log(-2), "ops", "conflict", loop, "authzen:used"))
        batch.insert(4, (_log(3), "ops", "twice", loop, "authzen:k0"))  # (k0 given again, for another request)
        batch.insert(1, (_log(100), "rita", "plain", loop))
        with _calls(rt) as seen:
            rec._record(batch)
        got = dict(loop.settled)
        assert isinstance(got.pop("conflict"), IdempotencyConflict)
        assert isinstance(got.pop("twice"), IdempotencyConflict)
        assert not any(isinstance(r, Exception) or r.replayed for r in got.values()), got
        assert seen == {"gate": 0, "gate_many": 1, "lost": []}  # one transaction (was: a failed one first)
        assert rt.ledger.size == before + 7
        order = [it[2] for it in batch if it[2] not in ("conflict", "twice")]
        assert [e.id for e in rt.ledger.entries(kind="decision", after=before - 1)] == [got[r].decision_id
                                                                                       for r in order]


def test_a_ledger_lost_at_the_recorders_one_commit_answers_every_request_with_the_problem(
    tmp_path, ledger_url  # noqa: F811
):
    """(What landed, once: nothing gated again. The conflicting request is answered with the
    503 too: its retry with the same key is then its 409.)"""
    with _server(tmp_path, ledger_url) as (rt, rec):
        rt.gate(_log(-1), key="authzen:used", caller="ops")
        before = rt.ledger.size
        loop = _Loop()
        batch = [(_log(1), "ops", "a", loop, "authzen:a"), (_log(-2), "ops", "conflict", loop, "authzen:used"),
                 (_log(2), "rita", "b", loop)]
        with _calls(rt, lose=True) as seen:
            rec._record(batch)
        assert seen["lost"] and seen["gate"] == 0 and seen["gate_many"] == 1
        assert all(isinstance(r, LedgerUnavailable) for _, r in loop.settled), loop.settled
        assert rt.ledger.size == before + 2
        loop.settled.clear()
        rec._record(batch[:2])  # the keyed ones retried: the first replayed, the other its conflict
        got = dict(loop.settled)
        assert got["a"].replayed and isinstance(got["conflict"], IdempotencyConflict)
        assert rt.ledger.size == before + 2


def test_rt_gate_many_prints_a_conflict_slot_as_its_message(tmp_path):
    """`stopline rt gate_many` with `"conflicts": "return"` recorded the batch, then failed
    printing the conflict (exit 2, "Object of type IdempotencyConflict is not JSON
    serializable") after the write; now the slot prints as `{"conflict": message}`."""
    import json

    from click.testing import CliRunner
    from runtime_support import write_policy

    from policy_engine.cli import main

    pol, url = write_policy(tmp_path), f"sqlite:///{tmp_path / 'cli.db'}"
    small = {"workflow": "replies", "type": "send", "amount": 10.0, "promise": False}

    def rt(payload):
        return CliRunner().invoke(main, ["rt", "gate_many", "-p", str(pol), "--ledger", url, "-i", "-"],
                                  input=json.dumps(payload))

    assert CliRunner().invoke(main, ["ledger", "init", "--ledger", url]).exit_code == 0
    first = rt({"actions": [small], "keys": ["k1"], "now": "2026-11-26T12:00:00Z"})
    assert first.exit_code == 0, first.output
    again = rt({"actions": [{**small, "amount": 11.0}, small], "keys": ["k1", "k2"], "conflicts": "return",
                "now": "2026-11-26T12:00:01Z"})
    assert again.exit_code == 0, again.output
    slots = json.loads(again.output)
    assert "idempotency key `k1`" in slots[0]["conflict"] and slots[1]["decision"]["effect"] == "allow"
