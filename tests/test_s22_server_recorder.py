"""The server's recorder (``state.Recorder``) when a ledger commit lands but raises (the
connection lost at COMMIT: the driver's error after the database committed, which the
ledger reports as ``LedgerUnavailable``). It used to gate each action of the batch again,
one by one, recording every request twice. Now every request of that transaction is
answered with the problem (a 503: its outcome unknown) and nothing is gated again; a batch
that fails otherwise is still retried item by item. A real database on each backend
(SQLite, PostgreSQL); only the failure is injected, at the driver's commit, after the real
commit."""

from __future__ import annotations

import contextlib

import pytest

pytest.importorskip("fastapi")
from ledger_fixtures import ledger_url  # noqa: E402,F401  (the parametrised backend fixture)
from server_support import bearer, server_policy_dir, write_identities  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from policy_engine.ledger import LedgerUnavailable  # noqa: E402
from policy_engine.server import ServerConfig, create_app  # noqa: E402


@contextlib.contextmanager
def commit_lost_after_it_landed(ledger):
    """The next commit of ``ledger``'s database lands, then raises the driver's error as a
    connection lost at COMMIT does (the client cannot tell that it landed). Yields the list
    of injected failures (one once it happened)."""
    dialect = ledger._engine.dialect
    real = dialect.do_commit
    raised: list[str] = []

    def do_commit(dbapi_connection):
        real(dbapi_connection)
        if not raised:
            raised.append("after the commit landed")
            raise dialect.loaded_dbapi.OperationalError(
                "server closed the connection unexpectedly (injected after the commit landed)"
            )

    dialect.do_commit = do_commit
    try:
        yield raised
    finally:
        del dialect.do_commit


def _client(tmp_path, ledger):
    ids = str(write_identities(tmp_path / "ids.yaml"))
    app = create_app(ServerConfig(str(server_policy_dir(tmp_path)), ledger=ledger, identities=ids, reload_interval=0))
    return TestClient(app, raise_server_exceptions=False)


def _action(n: int, **fields) -> dict:
    return {"workflow": "replies", "type": "log", "n": n, **fields}


class _Loop:
    """Stands in for a request's event loop: keeps what the recorder settles."""

    def __init__(self) -> None:
        self.settled: list = []

    def call_soon_threadsafe(self, fn, settled) -> None:
        self.settled.extend(settled)


def test_the_injected_failure_is_what_the_ledger_reports_when_a_commit_is_lost(tmp_path, ledger_url):  # noqa: F811
    """(The injection itself: the append landed, and the caller was told the ledger is unavailable.)"""
    with _client(tmp_path, ledger_url) as c:
        rt = c.app.state.runtime
        before = rt.ledger.size
        with commit_lost_after_it_landed(rt.ledger) as raised, pytest.raises(LedgerUnavailable):
            rt.gate_many([_action(1)], caller="ops")
        assert raised and rt.ledger.size == before + 1


def test_a_batch_whose_commit_landed_but_raised_is_recorded_once(tmp_path, ledger_url):  # noqa: F811
    with _client(tmp_path, ledger_url) as c:
        rt, rec = c.app.state.runtime, c.app.state.recorder
        before = rt.ledger.size
        loop = _Loop()
        batch = [(_action(i), who, f"request-{i}", loop) for i, who in enumerate(["ops", "rita", None])]
        with commit_lost_after_it_landed(rt.ledger) as raised:
            rec._record(batch)
        assert raised == ["after the commit landed"]
        answers = dict(loop.settled)
        assert list(answers) == ["request-0", "request-1", "request-2"]
        # each request answered with the problem (its outcome unknown), never gated again
        assert all(isinstance(r, LedgerUnavailable) for r in answers.values()), answers
        assert rt.ledger.size == before + 3  # (what landed, once)
        entries = rt.ledger.entries(kind="decision", after=before - 1)
        assert [e.body.get("caller") for e in entries] == ["ops", "rita", None]


def test_a_batch_whose_stop_landed_but_raised_stops_the_workflow_once(tmp_path, ledger_url):  # noqa: F811
    with _client(tmp_path, ledger_url) as c:
        rt, rec = c.app.state.runtime, c.app.state.recorder
        before = rt.ledger.size
        loop = _Loop()
        stopping = {"workflow": "replies", "type": "send", "amount": 5, "promise": True}
        after = {"workflow": "replies", "type": "send", "amount": 5}
        with commit_lost_after_it_landed(rt.ledger) as raised:
            rec._record([(stopping, "ops", "stop", loop), (after, "ops", "after", loop)])
        assert raised
        answers = dict(loop.settled)
        assert all(isinstance(r, LedgerUnavailable) for r in answers.values()), answers
        assert len(rt.ledger.entries(kind="stop", after=before - 1)) == 1
        assert len(rt.ledger.entries(kind="decision", after=before - 1)) == 2
        assert rt.workflow_status("replies")["status"] == "stopped"


def test_a_batch_that_fails_otherwise_is_still_gated_item_by_item(tmp_path, ledger_url, monkeypatch):  # noqa: F811
    """(Nothing landed: one failure that is not the ledger's does not fail the neighbours.)"""
    with _client(tmp_path, ledger_url) as c:
        rt, rec = c.app.state.runtime, c.app.state.recorder
        before = rt.ledger.size

        def refuse(*a, **k):
            raise RuntimeError("not the ledger")

        monkeypatch.setattr(rt, "gate_many", refuse)
        loop = _Loop()
        rec._record([(_action(i), "ops", f"r{i}", loop) for i in range(2)])
        answers = dict(loop.settled)
        assert all(r.decision.effect == "allow" for r in answers.values()), answers
        assert rt.ledger.size == before + 2


def test_an_authzen_decision_whose_commit_landed_but_raised_is_a_503_recorded_once(
    tmp_path,
    ledger_url,  # noqa: F811
):
    with _client(tmp_path, ledger_url) as c:
        rt = c.app.state.runtime
        body = {
            "subject": {"type": "user", "id": "a"},
            "action": {"name": "log"},
            "resource": {"type": "t", "id": "x"},
            "context": {"workflow": "replies"},
        }
        before = rt.ledger.size
        with commit_lost_after_it_landed(rt.ledger) as raised:
            r = c.post("/access/v1/evaluation", json=body, headers=bearer("ops"))
        assert raised and r.status_code == 503, r.text
        assert rt.ledger.size == before + 1
