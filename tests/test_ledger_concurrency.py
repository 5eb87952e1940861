"""Durability and concurrency on both backends: `kill -9` of a writer at random points
(50 times) loses nothing acknowledged, and 8 processes x 1,000 appends make one chain.

Writers are processes started by multiprocessing's `forkserver` (Python 3.14's default on
Linux): a single-threaded server process, started once with the ledger modules preloaded,
forks each writer, so a writer starts in milliseconds and no thread of the test process
(pytest-xdist's included) is ever forked: `os.fork()` of a multi-threaded process is
deprecated since Python 3.12 and can deadlock. Each writer (`ledger_fixtures.ledger_writer`)
writes the seq and id of every append that returned to a pipe, so the parent knows
exactly what was acknowledged. The kill test appends one entry per transaction (`append`);
the 8-process test appends in batches of 10 (`append_many`, one transaction and one lock
hold per batch: 800 interleaved lock holds) so that 8,000 fsynced appends on each backend
fit the test budget on a slow disk.

On PostgreSQL a killed writer's server session can still be running the writer's last
message after the process is gone (a busy server notices the closed socket late), so it
may commit one more (unacknowledged) append after the kill. The checks therefore wait
until the writers' sessions ended and read the head and the entries in one snapshot:
the assertions are the same, a late commit can no longer fall between two reads."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
import uuid

import pytest
from ledger_fixtures import ledger_url, ledger_writer  # noqa: F401  (fixture)

from policy_engine.ledger import Ledger
from policy_engine.ledger.schema import entries as E
from policy_engine.ledger.schema import heads as H

_CTX = multiprocessing.get_context("forkserver")
# Imported once, by the server, not by every writer. Only installed modules: the server
# does not get the tests' sys.path (it is given it but, up to Python 3.13 at least, does not
# apply it), so each writer imports `ledger_fixtures` itself, cheaply, over these.
_CTX.set_forkserver_preload(["pytest", "policy_engine.ledger.store", "sqlalchemy.dialects.sqlite.pysqlite",
                             "sqlalchemy.dialects.postgresql.psycopg", "psycopg"])


def _spawn(url: str, tag: str, count: int, batch: int = 1):
    """A started writer and the reading end of its acknowledgement pipe."""
    r, w = _CTX.Pipe(duplex=False)
    proc = _CTX.Process(target=ledger_writer, args=(url, tag, count, batch, w), daemon=True)
    proc.start()
    w.close()  # the writer holds the only writing end: its death is the reader's end of file
    return proc, r


def _wait_ready(r) -> bytes:
    got = b""
    while not got.startswith(b"ready\n"):
        b = os.read(r.fileno(), 6 - len(got))
        assert b, "the writer died before it was ready"
        got += b
    return got


def _wait_acks(r, n: int) -> bytes:
    """What the writer wrote once it has acknowledged ``n`` appends (its ``ready`` line
    read before): the kill then lands in the stream of appends, however slow the machine."""
    got = b""
    while got.count(b"\n") < n:
        b = os.read(r.fileno(), 65536)
        assert b, "the writer died before its first appends"
        got += b
    return got


def _acks(r, got: bytes = b"") -> list[tuple[int, str]]:
    chunks = [got]
    while True:
        b = os.read(r.fileno(), 65536)
        if not b:
            break
        chunks.append(b)
    r.close()
    text = b"".join(chunks).decode()
    lines = [ln for ln in text.split("\n")[:-1] if ln != "ready"]  # a torn last line was never acknowledged
    return [(int(s), i) for s, i in (ln.split() for ln in lines)]


def _all_ids(led: Ledger) -> tuple[int, dict[int, str]]:
    """The head's size and every entry's id, read in one snapshot."""
    with led.reading() as c:
        size = c.exec_driver_sql(f"SELECT size FROM {H.name} WHERE log = 1").scalar_one()
        return size, dict(c.exec_driver_sql(f"SELECT seq, id FROM {E.name}").all())


def _tagged(url: str) -> tuple[str, str]:
    """On PostgreSQL, the URL with an application_name that marks the writers' sessions."""
    if not url.startswith("postgresql"):
        return url, ""
    tag = "stopline-kill-" + uuid.uuid4().hex[:12]
    return url + ("&" if "?" in url else "?") + f"application_name={tag}", tag


def _wait_sessions_gone(url: str, tag: str, timeout: float = 60.0) -> None:
    """Wait until no server session of the killed writers is left (each is rolled back or
    finishes its last message once the server sees the closed socket)."""
    if not tag:
        return
    deadline = time.monotonic() + timeout
    while True:
        with Ledger.open(url) as led:
            with led.reading() as c:
                n = c.exec_driver_sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                                      "AND pid <> pg_backend_pid()", (tag,)).scalar_one()
        if n == 0:
            return
        assert time.monotonic() < deadline, f"{n} killed writers' sessions still open after {timeout} s"
        time.sleep(0.1)


@pytest.mark.parametrize("durability", ["full", "normal"])
def test_kill_minus_9_at_random_points_loses_nothing_acknowledged(ledger_url, durability):
    ledger_url += ("&" if "?" in ledger_url else "?") + f"durability={durability}"
    Ledger.open(ledger_url, create=True).close()
    writer_url, tag = _tagged(ledger_url)
    rnd = random.Random(int(os.environ.get("STOPLINE_TEST_SEED", "1414")))
    acked: list[tuple[int, str]] = []
    kills = 0
    for round_ in range(50):
        proc, r = _spawn(writer_url, f"w{round_}", 10**6)
        _wait_ready(r)
        # (two appends acknowledged first: a random sleep alone could end before the first on
        # a loaded machine, and the kills then tested nothing; the kill still lands at a random
        # point of the appends that follow)
        got = _wait_acks(r, 2)
        time.sleep(rnd.uniform(0.0, 0.12))
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        kills += proc.exitcode == -signal.SIGKILL
        proc.close()
        acked += _acks(r, got)
    assert kills == 50
    _wait_sessions_gone(ledger_url, tag)
    with Ledger.open(ledger_url) as led:
        report = led.verify()
        assert report.ok, report.render()
        size, ids = _all_ids(led)
        assert sorted(ids) == list(range(size)) and size == report.size
        assert all(ids.get(s) == i for s, i in acked), "an acknowledged append is missing"
        assert len(acked) > 50  # the writers did get appends in before the kills


def test_eight_processes_by_1000_appends_make_one_chain(ledger_url):
    Ledger.open(ledger_url, create=True).close()
    procs = [_spawn(ledger_url, f"p{k}", 1000, batch=10) for k in range(8)]
    acked = {}
    for k, (proc, r) in enumerate(procs):
        acked[k] = _acks(r)
        proc.join()
        assert proc.exitcode == 0
        proc.close()
    with Ledger.open(ledger_url) as led:
        assert led.size == 8000
        report = led.verify()
        assert report.ok and report.size == 8000, report.render()
        es = led.entries(limit=10**6)
        assert [e.seq for e in es] == list(range(8000))  # no gap
        assert all(b.prev == a.hash for a, b in zip(es, es[1:]))  # no fork
        ids = {e.seq: e.id for e in es}
        for k in range(8):
            assert len(acked[k]) == 1000 and all(ids[s] == i for s, i in acked[k])
            mine = [e.body["i"] for e in es if e.workflow == f"p{k}"]
            assert mine == list(range(1000))  # each writer's appends in its own order
