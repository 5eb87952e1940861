"""Ctrl-C always ends a command waiting for its input (twenty-sixth session).

CI failed once on `test_ctrl_c_is_one_line_and_exit_130`: `stopline eval --input FIFO` took
the SIGINT and went on waiting for the question for 120 s. A SIGINT that lands just before a
blocking read() runs Python's C handler (which only sets a flag) and leaves the read() waiting
for input that may never come; a SIGINT the kernel gives to another thread of the process does
the same every time. These tests make the second, deterministic form of that state: the child
blocks SIGINT in its main thread and keeps a thread that takes it, so the read is never
interrupted and only a command that wakes to act on the flag can exit. They hung before the
input was read through `read_at_most` (select() with a quarter-second wake).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(os.name != "posix" or not hasattr(signal, "pthread_sigmask"),
                                reason="POSIX signals and FIFOs")

# the child: a thread that takes process-directed signals (started before the main thread
# blocks SIGINT, so it does not inherit the mask), then the CLI in the main thread
CHILD = """
import signal, sys, threading, time
threading.Thread(target=lambda: time.sleep(3600), daemon=True).start()
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
from policy_engine.cli import main
sys.argv = ["stopline", *sys.argv[1:]]
main()
"""


def _interrupt_while_reading(args: list[str], fifo: Path, tmp_path: Path) -> tuple[int, bytes, bytes]:
    env = {**os.environ, "STOPLINE_LEDGER": f"sqlite:///{tmp_path / 'ledger.db'}"}
    env.pop("STOPLINE_DEBUG", None)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    opened, done = threading.Event(), threading.Event()

    def writer() -> None:  # holds the FIFO open, writing nothing: the command waits for its input
        with open(fifo, "w"):
            opened.set()
            done.wait(60)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        assert opened.wait(120), "the command never opened its input"
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail(f"`stopline {' '.join(args)}` took Ctrl-C and went on waiting for its input")
    finally:
        done.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        t.join(10)
    return proc.returncode, out, err


@pytest.mark.parametrize("command", [
    ["eval", "policies", "--input"],
    ["rt", "status", "--policies", "policies", "--input"],
    ["ledger", "append", "note"],
], ids=["eval", "rt", "ledger-append"])
def test_ctrl_c_taken_by_another_thread_still_ends_the_wait(command, tmp_path):
    fifo = tmp_path / "input.json"
    os.mkfifo(fifo)
    code, out, err = _interrupt_while_reading([*command, str(fifo)], fifo, tmp_path)
    assert code == 130, (code, err)
    assert err.strip() == b"stopline: interrupted", err
    assert out == b""


def _main_thread_sleeps(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "S"


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc to see the command waiting")
def test_ctrl_c_ends_a_wait_on_stdin(tmp_path):
    # stdin a pipe the test never writes to or closes: the command waits on it
    env = {**os.environ}
    env.pop("STOPLINE_DEBUG", None)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, "eval", "policies", "--input", "-"], cwd=ROOT, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline, asleep = time.monotonic() + 120, 0
        while asleep < 10 and time.monotonic() < deadline:  # asleep for 10 samples in a row: waiting, not loading
            asleep = asleep + 1 if _main_thread_sleeps(proc.pid) else 0
            time.sleep(0.05)
        assert asleep >= 10, "the command never waited for its input"
        proc.send_signal(signal.SIGINT)
        try:  # (not communicate(): it would close stdin, and the EOF would end the wait)
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("`stopline eval --input -` took Ctrl-C and went on waiting on stdin")
        err = proc.stderr.read()  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, (proc.returncode, err)
    assert err.strip() == b"stopline: interrupted", err


def test_input_read_through_the_wait_is_whole(tmp_path):
    # the select() loop returns every byte of a large input written in pieces, and stops at the limit
    import json

    question = {"question": "gate", "action": {"type": "send_customer_message", "body": "x" * 3_000_000},
                "now": "2026-07-02T10:00:00Z"}
    data = json.dumps(question).encode()
    proc = subprocess.Popen([sys.executable, "-m", "policy_engine.cli", "eval", "policies", "--input", "-"],
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None

    def feed() -> None:
        assert proc.stdin is not None
        for i in range(0, len(data), 65536):
            proc.stdin.write(data[i:i + 65536])
            proc.stdin.flush()
        proc.stdin.close()

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    proc.wait(120)
    t.join(10)
    assert proc.returncode == 0, err
    assert json.loads(out)["effect"] in ("allow", "deny", "require_approval")


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names a pipe by its /proc path")
def test_read_at_most_stops_at_its_limit_on_a_pipe():
    from policy_engine.ledger.cli import read_at_most

    r, w = os.pipe()
    try:
        os.write(w, b"a" * 5000)
        assert read_at_most(f"/proc/self/fd/{r}", 1000) == b"a" * 1000  # the writer still open: no EOF needed
    finally:
        os.close(w)
    try:
        assert read_at_most(f"/proc/self/fd/{r}", 10_000) == b"a" * 4000  # the rest, then EOF
    finally:
        os.close(r)


@pytest.mark.parametrize("command", [
    ["eval", "policies", "--input", "-"],
    ["rt", "status", "--policies", "policies", "--input", "-"],
    ["ledger", "append", "note", "-"],
], ids=["eval", "rt", "ledger-append"])
def test_a_closed_stdin_is_one_line_and_exit_2(command, tmp_path):
    # `stopline eval policies -i - <&-`: was "internal error: AttributeError: 'NoneType' object has no attribute ..."
    env = {**os.environ, "STOPLINE_LEDGER": f"sqlite:///{tmp_path / 'ledger.db'}"}
    r = subprocess.run([sys.executable, "-m", "policy_engine.cli", *command], cwd=ROOT, env=env,
                       capture_output=True, timeout=120, preexec_fn=lambda: os.close(0))
    assert r.returncode == 2, r.stderr
    assert b"internal error" not in r.stderr and b"Traceback" not in r.stderr, r.stderr
    assert b"standard input is closed" in r.stderr, r.stderr


# the child waits behind another writer for SQLite's write lock, for up to ten minutes
LOCK_CHILD = """
import sys
from policy_engine.ledger import Ledger
led = Ledger.open(sys.argv[1], lock_timeout=600)
print("waiting", flush=True)
try:
    if sys.argv[2] == "append":  # the writer's own transaction (its driver cursor)
        led.append("stop", {"trigger": "t"}, workflow="w")
    else:  # a conditional append (SQLAlchemy's transaction)
        led.transact(lambda conn: [])
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc to see the child waiting")
@pytest.mark.parametrize("path", ["append", "transact"])
def test_ctrl_c_ends_a_wait_for_the_sqlite_write_lock(path, tmp_path):
    # SQLite's busy handler sleeps in C: a Ctrl-C behind another writer was acted on only when the
    # whole wait was over (57 s of `stopline rt gate`'s minute); now between slices of 0.1 s
    import sqlite3

    from policy_engine.ledger import Ledger

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    Ledger.open(url, create=True).close()
    holder = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock for the whole test
    proc = subprocess.Popen([sys.executable, "-c", LOCK_CHILD, url, path], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"waiting\n", proc.stderr.read()  # type: ignore[union-attr]
        deadline, asleep = time.monotonic() + 120, 0
        while asleep < 10 and time.monotonic() < deadline:  # asleep for 10 samples in a row: in the lock's wait
            asleep = asleep + 1 if _main_thread_sleeps(proc.pid) else 0
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)  # (the wait it was in lasts ten minutes)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`{path}` took Ctrl-C and went on waiting for the write lock")
        assert proc.returncode == 130 and proc.stdout.read() == b"interrupted\n", proc.stderr.read()  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        holder.execute("ROLLBACK")
        holder.close()
    # the lock's wait is as long as before, and the connection's busy timeout as it was
    led = Ledger.open(url, lock_timeout=0.5)
    try:
        holder = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(Exception, match="database is locked"):
            led.append("stop", {"trigger": "t"}, workflow="w") if path == "append" else led.transact(lambda c: [])
        holder.execute("ROLLBACK")
        holder.close()
        assert led.append("stop", {"trigger": "t"}, workflow="w").kind == "stop"
        with led._engine.connect() as c:
            assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() == 500
    finally:
        led.close()
