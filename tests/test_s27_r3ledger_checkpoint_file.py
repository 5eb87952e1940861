"""Session 27 (r3ledger): writers of one host that write ``checkpoint(path=...)`` to the same
file. Each writer has its own temporary file (a shared ``PATH.tmp<pid>`` was truncated,
renamed away or unlinked under the other threads of the process), and the final rename is
atomic: whoever reads the file sees one whole checkpoint that its key verifies."""

from __future__ import annotations

import threading

import pytest
from ledger_fixtures import body, ledger_url  # noqa: F401  (fixture)

from policy_engine.ledger import Ledger, generate_key
from policy_engine.ledger.note import open_checkpoint

KEY = generate_key("test-log")
WRITERS = 4
ROUNDS = 12


@pytest.fixture
def led(ledger_url):
    with Ledger.open(ledger_url, create=True) as led:
        yield led


def test_concurrent_checkpoint_writers_of_one_file_each_leave_a_whole_checkpoint(led, ledger_url, tmp_path):
    led.append("stop", body("stop"), workflow="w")
    path = tmp_path / "cp.note"
    writers = [Ledger.open(ledger_url) for _ in range(WRITERS)]
    errors: list[BaseException] = []
    reads: list[str] = []
    sizes: list[int] = []
    done = threading.Event()
    start = threading.Barrier(WRITERS + 1)

    def write(w: Ledger) -> None:
        try:
            start.wait(timeout=120)
            for _ in range(ROUNDS):
                cp, _entry = w.checkpoint(KEY, path=path)
                sizes.append(cp.size)
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    def read() -> None:
        start.wait(timeout=120)
        while not done.is_set():
            try:
                reads.append(path.read_text(encoding="utf-8"))
            except FileNotFoundError:  # not written yet
                pass

    threads = [threading.Thread(target=write, args=(w,)) for w in writers]
    reader = threading.Thread(target=read)
    try:
        for t in [*threads, reader]:
            t.start()
        for t in threads:
            t.join(timeout=600)
            assert not t.is_alive()
    finally:
        done.set()
        reader.join(timeout=600)
        for w in writers:
            w.close()
    assert errors == [], errors
    assert sorted(sizes) == list(range(1, 1 + WRITERS * ROUNDS))  # every checkpoint was recorded once
    # every read of the file, during and after, is one whole checkpoint the key verifies
    final = path.read_text(encoding="utf-8")
    for note in [*reads, final]:
        cp = open_checkpoint(note, KEY.verifier)
        assert cp.size in sizes
    assert led.verify(checkpoint=final, key=KEY.verifier).ok
    assert not [p.name for p in tmp_path.iterdir() if ".tmp" in p.name]  # no temporary file left behind


def test_a_stale_temporary_file_of_the_same_process_does_not_break_a_checkpoint(led, tmp_path):
    import os

    path = tmp_path / "cp.note"
    stale = tmp_path / f"cp.note.tmp{os.getpid()}"  # the name a crashed writer of old used
    stale.write_text("half a note")
    cp, entry = led.checkpoint(KEY, path=path)
    assert path.read_text(encoding="utf-8") == cp.note and entry.seq == 0
    assert stale.read_text() == "half a note"  # another writer's file: not ours to touch
