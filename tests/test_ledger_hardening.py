"""Regressions found by an adversarial pass over the ledger: reads that gave wrong answers or
crashed on out-of-range or corrupt input, tampering `verify` missed, files changed or left
half-made by a refused command, and a committed append reported as failed."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import UTC, datetime

import pytest
from ledger_fixtures import body, guards_off, ledger_url, one_line_error, raw, run_ledger_cli  # noqa: F401  (fixture)
from sqlalchemy import text

from policy_engine.ledger import (
    CheckpointError,
    Entry,
    EntryNotFound,
    InvalidQuery,
    KeyFileError,
    Ledger,
    LedgerUnavailable,
    SchemaError,
    generate_key,
)
from policy_engine.ledger.note import write_key

KEY = generate_key("test-log")


@pytest.fixture
def led(ledger_url):
    with Ledger.open(ledger_url, create=True) as led:
        yield led


# ------------------------------------------------------------------ time filters compare instants
def test_since_and_until_compare_instants_not_spellings(led):
    at = datetime(2026, 11, 26, 10, 0, 0, 500000, tzinfo=UTC)  # half a second into 10:00:00
    e = led.append("stop", body("stop"), workflow="w", time=at)
    led.append("stop", body("stop"), workflow="w", time=datetime(2026, 11, 26, 11, 0, tzinfo=UTC))

    def seqs(**kw):
        return [x.seq for x in led.entries(**kw)]

    # a whole-second RFC 3339 time: the entry half a second later is after it
    assert seqs(since="2026-11-26T10:00:00Z") == [0, 1]
    assert seqs(until="2026-11-26T10:00:00Z") == []
    assert seqs(until="2026-11-26T10:00:01Z") == [0]
    # the same instants in other spellings
    assert seqs(since="2026-11-26T12:00:00.5+02:00") == [0, 1]
    assert seqs(since="2026-11-26T12:00:00.500001+02:00") == [1]
    assert seqs(since="2026-11-26t10:00:00.500000000z", until="2026-11-26T10:00:00.500001Z") == [e.seq]
    # digits below the microsecond round up: the entry at .500000 is before .5000005
    assert seqs(until="2026-11-26T10:00:00.5000005Z") == [0]
    assert seqs(since="2026-11-26T10:00:00.5000005Z") == [1]
    assert seqs(since=at) == [0, 1]
    for bad in ("garbage", "2026-11-26", "2026-11-26T10:00:00", datetime(2026, 11, 26)):
        with pytest.raises(InvalidQuery, match="RFC 3339"):
            led.entries(since=bad)


def test_log_with_a_bad_time_is_one_line(led, ledger_url):
    one_line_error(*run_ledger_cli("log", "--ledger", ledger_url, "--since", "yesterday"), "`since`")
    code, out, _ = run_ledger_cli("log", "--ledger", ledger_url, "--until", "2999-01-01T00:00:00+01:00")
    assert code == 0


# ------------------------------------------------------------------ out-of-range references
def test_references_beyond_any_seq_are_not_found(led, ledger_url):
    led.append("stop", body("stop"), workflow="w")
    for ref in (10**30, str(10**30), -(10**30), "²", "٣"):  # (str.isdigit is true for the last two)
        with pytest.raises(EntryNotFound):
            led.get(ref)
        with pytest.raises(EntryNotFound):
            led.prove(ref)
    assert [e.seq for e in led.entries(limit=10**30)] == [0]
    assert led.entries(after=10**30) == [] and [e.seq for e in led.entries(after=-(10**30))] == [0]
    assert [e.seq for e in led.entries(after=10**30, reverse=True)] == [0]
    one_line_error(*run_ledger_cli("show", str(10**30), "--ledger", ledger_url), "no entry")
    code, out, _ = run_ledger_cli("log", "--limit", str(10**30), "--ledger", ledger_url)
    assert code == 0 and out.count("\n") == 1


# ------------------------------------------------------------------ a corrupt row
def test_a_corrupt_row_is_a_one_line_error_not_a_crash(led, ledger_url):
    d = led.append("decision", body("decision"))
    led.append("approval", body("approval"), links=[d.id])
    with guards_off(ledger_url) as c:
        c.execute(text("UPDATE ledger_entries SET body = '{not json' WHERE seq = 0"))
        c.execute(text("UPDATE ledger_entries SET links = '[1, 2]' WHERE seq = 1"))
    for read in (lambda: led.get(0), lambda: led.entries(), lambda: led.prove(0), lambda: led.history(d.id),
                 lambda: led.get(1)):
        with pytest.raises(LedgerUnavailable, match=r"entry [01] is corrupt.*stopline ledger verify"):
            read()
    for cmd in (["log"], ["show", "0"], ["show", "1"], ["prove", "0"]):
        one_line_error(*run_ledger_cli(*cmd, "--ledger", ledger_url), "is corrupt")
    assert run_ledger_cli("verify", "--ledger", ledger_url)[0] == 1


def test_a_damaged_head_or_meta_is_refused_clearly(ledger_url):
    Ledger.open(ledger_url, create=True).close()
    with raw(ledger_url) as c:
        c.execute(text("UPDATE ledger_meta SET value = 'three' WHERE name = 'schema_version'"))
    with pytest.raises(SchemaError, match="schema version is 'three'"):
        Ledger.open(ledger_url)
    one_line_error(*run_ledger_cli("log", "--ledger", ledger_url), "damaged")
    with raw(ledger_url) as c:
        c.execute(text("UPDATE ledger_meta SET value = '3' WHERE name = 'schema_version'"))
        c.execute(text("DELETE FROM ledger_meta WHERE name = 'log_id'"))
    with pytest.raises(SchemaError, match="no log_id"):
        Ledger.open(ledger_url)
    with raw(ledger_url) as c:
        c.execute(text("INSERT INTO ledger_meta (name, value) VALUES ('log_id', 'x')"))
        c.execute(text("DELETE FROM ledger_heads"))
    with pytest.raises(SchemaError, match="head row"):
        Ledger.open(ledger_url)
    one_line_error(*run_ledger_cli("verify", "--ledger", ledger_url), "head row")


def test_a_corrupt_frontier_stops_appends_with_a_clear_error(led, ledger_url):
    led.append("stop", body("stop"), workflow="w")
    with raw(ledger_url) as c:
        c.execute(text("UPDATE ledger_heads SET frontier = 'zz'"))
    with pytest.raises(LedgerUnavailable):
        led.append("stop", body("stop"), workflow="w")
    with pytest.raises(LedgerUnavailable, match="head row is corrupt"):
        led.transact(lambda c: [])
    with pytest.raises(LedgerUnavailable, match="head row is corrupt"):
        led.checkpoint(KEY)
    with raw(ledger_url) as c:
        assert c.execute(text("SELECT count(*) FROM ledger_entries")).scalar_one() == 1
    assert run_ledger_cli("verify", "--ledger", ledger_url)[0] == 1


def test_a_corrupt_frontier_on_sqlite_is_named(tmp_path):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    with Ledger.open(url, create=True) as led:
        led.append("stop", body("stop"), workflow="w")
        with raw(url) as c:
            c.execute(text("UPDATE ledger_heads SET frontier = 'zz'"))
        with pytest.raises(LedgerUnavailable, match="head row is corrupt"):
            led.append("stop", body("stop"), workflow="w")
    b = tmp_path / "b.json"
    b.write_text('{"trigger": "t"}')
    one_line_error(*run_ledger_cli("append", "stop", str(b), "--workflow", "w", "--ledger", url), "head row is corrupt")


# ------------------------------------------------------------------ a file that is not a ledger is left alone
def test_opening_a_file_that_is_not_a_ledger_leaves_it_unchanged(tmp_path):
    other = tmp_path / "app.db"
    c = sqlite3.connect(other)
    c.execute("CREATE TABLE t (x)")
    c.commit()
    c.close()
    before = other.read_bytes()
    empty = tmp_path / "empty.db"
    empty.touch()
    for cmd in (["verify"], ["log"], ["show", "0"], ["prove", "0"]):
        one_line_error(*run_ledger_cli(*cmd, "--ledger", f"sqlite:///{other}"), "not a Stopline ledger")
        one_line_error(*run_ledger_cli(*cmd, "--ledger", f"sqlite:///{empty}"), "no ledger")
    c = sqlite3.connect(other)
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not switched to WAL
    c.close()
    assert other.read_bytes() == before and not (tmp_path / "app.db-wal").exists()
    assert empty.stat().st_size == 0
    # a ledger is still opened in WAL mode, and init still makes one
    assert run_ledger_cli("init", "--ledger", f"sqlite:///{empty}")[0] == 0
    with Ledger.open(f"sqlite:///{empty}") as led:
        with led.reading() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"


# ------------------------------------------------------------------ tampering verify missed
def test_a_link_row_to_no_entry_is_found(led, ledger_url):
    d = led.append("decision", body("decision"))
    led.append("approval", body("approval"), links=[d.id])
    for _ in range(3):
        led.append("stop", body("stop"), workflow="w")
    with guards_off(ledger_url) as c:  # an extra link row of entry 1, to a seq that does not exist (yet)
        c.execute(text("INSERT INTO ledger_links (from_seq, pos, to_seq) VALUES (1, 1, 5)"))
    r = led.verify()
    assert not r.ok and r.first_bad == 1 and "link rows of entry 1" in r.problem
    with guards_off(ledger_url) as c:  # a link row of an entry without links
        c.execute(text("DELETE FROM ledger_links WHERE from_seq = 1 AND pos = 1"))
        c.execute(text("INSERT INTO ledger_links (from_seq, pos, to_seq) VALUES (3, 0, 999)"))
    r = led.verify()
    assert not r.ok and r.first_bad == 3
    with guards_off(ledger_url) as c:  # beyond the last entry
        c.execute(text("DELETE FROM ledger_links WHERE from_seq = 3"))
        c.execute(text("INSERT INTO ledger_links (from_seq, pos, to_seq) VALUES (40, 0, 41)"))
    r = led.verify()
    assert not r.ok and r.first_bad == 40 and "has no entry" in r.problem


def test_a_checkpoint_entry_of_another_log_is_found(led, ledger_url):
    led.append("stop", body("stop"), workflow="w")
    led.checkpoint(KEY)
    led.append("stop", body("stop"), workflow="w")
    assert led.verify(key=KEY.verifier).ok
    with raw(ledger_url) as c:  # the ledger's identity changed under its checkpoints (or they are another log's)
        c.execute(text("UPDATE ledger_meta SET value = 'stopline.dev/ledger/other' WHERE name = 'origin'"))
    with Ledger.open(ledger_url) as moved:
        for key in (None, KEY.verifier):
            r = moved.verify(key=key)
            assert not r.ok and r.first_bad == 1 and "stopline.dev/ledger/other" in r.problem


# ------------------------------------------------------------------ files written by commands
def test_a_checkpoint_whose_note_cannot_be_written_records_nothing(led, ledger_url, tmp_path):
    led.append("stop", body("stop"), workflow="w")
    for bad in (tmp_path / "no" / "such" / "dir" / "cp.note", tmp_path):
        with pytest.raises(CheckpointError, match="nothing was recorded"):
            led.checkpoint(KEY, path=bad)
        assert led.size == 1
    key = tmp_path / "k.key"
    write_key(KEY, key)
    one_line_error(*run_ledger_cli("checkpoint", "--ledger", ledger_url, "--key", str(key), "--out",
                         str(tmp_path / "nope" / "cp.note")), "cannot write the checkpoint", "nothing was recorded")
    assert led.size == 1
    cp, entry = led.checkpoint(KEY, path=tmp_path / "cp.note")
    assert (tmp_path / "cp.note").read_text() == cp.note and entry.seq == 1
    assert not [p.name for p in tmp_path.iterdir() if ".tmp" in p.name]  # no temp file left


def test_keygen_leaves_no_half_made_key_pair(tmp_path):
    (tmp_path / "k.key.pub").mkdir()
    with pytest.raises(KeyFileError, match="k.key.pub"):
        write_key(generate_key("x"), tmp_path / "k.key")
    assert not (tmp_path / "k.key").exists()
    one_line_error(*run_ledger_cli("keygen", "--out", str(tmp_path / "k.key")), "k.key.pub")
    assert not (tmp_path / "k.key").exists()


# ------------------------------------------------------------------ group commit on PostgreSQL
def test_a_failed_retry_is_reported_to_its_own_caller_only(led, monkeypatch):
    """Two requests share one PostgreSQL transaction; one reuses an idempotency key, so the
    server function leaves it to a second transaction, which fails. The other request was
    committed by the first: its caller gets its entry, not the other request's error (a
    committed append answered with an error is appended again by a retrying caller)."""
    if led.backend != "postgresql":
        pytest.skip("PostgreSQL only (the server-side append function)")
    import psycopg

    led.append("stop", body("stop"), workflow="w", key="used")

    def broken(groups):
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(led, "_append_direct", broken)
    out: dict[str, object] = {}

    def append(name, **kw):
        try:
            out[name] = led.append("stop", body("stop", n=name), workflow="w", **kw)
        except Exception as e:  # noqa: BLE001 - compared below
            out[name] = e

    with led._gc:  # hold the leader's place so that both requests queue up for one transaction
        led._gc_leader = True
    threads = [threading.Thread(target=append, args=("fresh",)),
               threading.Thread(target=append, args=("reused",), kwargs={"key": "used"})]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while True:
        with led._gc:
            if len(led._gc_pending) == 2:
                led._gc_leader = False
                led._gc.notify_all()
                break
        assert time.monotonic() < deadline
        time.sleep(0.01)
    for t in threads:
        t.join()
    fresh, reused = out["fresh"], out["reused"]
    assert isinstance(reused, LedgerUnavailable) and "server closed" in str(reused)
    assert isinstance(fresh, Entry), fresh
    assert led.get(fresh.id).body == {"trigger": "t", "n": "fresh"} and led.size == 2
