"""A new SQLite ledger is switched to WAL as it opens; two processes opening it together
(two `stopline serve` replicas started at once on a new file) each switch it. SQLite
answers "database is locked" to that switch at once while another connection reads the
file, so the switch waits for the file (`ledger.store._wal`) instead of failing the start
(CI saw `stopline serve exited 2: internal error: OperationalError: database is locked`)."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from policy_engine.ledger.store import _wal


def _reader(path):
    b = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    b.execute("BEGIN")
    b.execute("SELECT * FROM t").fetchall()  # a read transaction: a shared lock on the file
    return b


@pytest.fixture
def db(tmp_path):
    p = str(tmp_path / "l.db")
    a = sqlite3.connect(p, isolation_level=None)
    a.execute("CREATE TABLE t (x)")
    a.execute("INSERT INTO t VALUES (1)")
    a.close()
    return p


def test_the_switch_to_wal_waits_for_a_reader_and_then_succeeds(db):
    b = _reader(db)
    c = sqlite3.connect(db, isolation_level=None, timeout=0.05)
    with pytest.raises(sqlite3.OperationalError, match="locked"):  # what SQLite does without the wait
        c.execute("PRAGMA journal_mode=WAL")
    threading.Timer(0.3, lambda: b.execute("COMMIT")).start()
    _wal(c, 10)
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_switch_gives_up_at_its_deadline(db):
    b = _reader(db)
    c = sqlite3.connect(db, isolation_level=None, timeout=0.05)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        _wal(c, 0.2)
    b.execute("COMMIT")
