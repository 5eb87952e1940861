"""The reviewer's sessions across workers and replicas, against real ``stopline serve``
processes on SQLite and PostgreSQL.

- A sign-out is recorded in the ledger's database (``ledger_ended_sessions``), which every
  worker and replica reads at each request with a session: with ``--workers 2`` a copy of
  the cookie made before the sign-out is refused by both workers (each worker's own
  requests are counted from its metrics file, so the test knows both answered).
- ``--session-key FILE``: two separate server processes given the same file accept each
  other's sessions and forms, and each sees the other's sign-outs; a server with another
  key does not take the cookie.
- A bad key file (missing, a directory, too short, not hex, readable by others) stops
  ``stopline serve`` with one line naming the file, exit 2, no traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi")
from ledger_fixtures import ledger_url  # noqa: E402,F401  (the parametrised backend fixture)
from server_support import (  # noqa: E402
    ROOT,
    requests_by_worker,
    serve,
    serve_process,
    server_policy_dir,
    servers,
    ui_csrf,
    ui_page,
    ui_sign_in,
    ui_sign_out,
    write_identities,
    write_session_key,
)

KEY = "5e" * 32
OTHER_KEY = "a7" * 32


@pytest.fixture
def policy_dir(tmp_path):
    return server_policy_dir(tmp_path)


@pytest.fixture
def ids(tmp_path):
    return str(write_identities(tmp_path / "ids.yaml"))


def _both_workers(base: str, cookie: str, metrics, workers: set[int] | None, want: int,
                  timeout: float = 120.0) -> tuple[set[int], list[int]]:
    """``GET /ui`` with ``cookie`` on new connections until each of two workers answered
    at least once more (read from their metrics files); the workers and every status."""
    before = requests_by_worker(metrics, "/ui")
    statuses: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        statuses.append(ui_page(base, cookie).status_code)
        now = requests_by_worker(metrics, "/ui")
        grew = {pid for pid, n in now.items() if n > before.get(pid, 0.0)}
        if len(grew) >= 2 and len(statuses) >= want:
            return grew, statuses
        assert time.monotonic() < deadline, f"only workers {grew} answered in {len(statuses)} requests"


def test_a_cookie_copied_before_sign_out_is_refused_by_every_worker(tmp_path, ledger_url, policy_dir, ids):  # noqa: F811
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
    with serve(str(policy_dir), "--ledger", ledger_url, "--identities", ids, "--workers", "2",
               "--reload-interval", "0", env=env) as base:
        cookie = ui_sign_in(base, "casey")
        # the session is good in both workers (one key for the workers)
        workers, statuses = _both_workers(base, cookie, metrics, None, want=6)
        assert set(statuses) == {200}, statuses
        copy = cookie  # what a thief (or another tab) kept
        r = ui_sign_out(base, cookie)
        assert r.status_code == 303 and r.headers["location"] == "/ui/login"
        # the copy is refused by every worker, whichever signed out
        after, statuses = _both_workers(base, copy, metrics, workers, want=10)
        assert after == workers and set(statuses) == {303}, statuses
        # a new sign-in of the same reviewer is a new session, good everywhere
        fresh = ui_sign_in(base, "casey")
        _, statuses = _both_workers(base, fresh, metrics, workers, want=4)
        assert set(statuses) == {200}, statuses


def test_two_replicas_with_one_session_key_share_sessions_and_sign_outs(tmp_path, ledger_url, policy_dir, ids):  # noqa: F811
    key = str(write_session_key(tmp_path / "session.key", KEY))
    common = (str(policy_dir), "--ledger", ledger_url, "--identities", ids, "--reload-interval", "0")
    with servers((*common, "--session-key", key), (*common, "--session-key", key), common) as started:
        (a, _), (b, _), (stranger, _) = started
        cookie = ui_sign_in(a, "casey")
        assert ui_page(b, cookie).status_code == 200  # signed in on A, known to B
        assert ui_page(stranger, cookie).status_code == 303  # a replica with another key is not
        # a form A rendered is good on B (its CSRF token is bound to the session, under the shared key)
        csrf_from_a = ui_csrf(ui_page(a, cookie))
        r = ui_sign_out(b, cookie, csrf=csrf_from_a)
        assert r.status_code == 303
        # signed out on B: refused by A too, and by B
        assert ui_page(a, cookie).status_code == 303 and ui_page(b, cookie).status_code == 303
        # the other way round: signed in on B, out on A
        other = ui_sign_in(b, "cleo")
        assert ui_page(a, other).status_code == 200
        assert ui_sign_out(a, other).status_code == 303
        assert ui_page(b, other).status_code == 303 and ui_page(a, other).status_code == 303


def test_a_restart_with_the_same_key_file_keeps_sessions(tmp_path, policy_dir, ids):
    key = str(write_session_key(tmp_path / "session.key", KEY))
    common = (str(policy_dir), "--ledger", f"sqlite:///{tmp_path / 'l.db'}", "--identities", ids,
              "--reload-interval", "0")
    with serve(*common, "--session-key", key) as a:
        cookie = ui_sign_in(a, "casey")
        signed_out = ui_sign_in(a, "cleo")
        assert ui_sign_out(a, signed_out).status_code == 303
    with servers((*common, "--session-key", key), common) as [(again, _), (random_key, _)]:
        assert ui_page(again, cookie).status_code == 200  # a restart (a deploy) signs nobody out
        assert ui_page(again, signed_out).status_code == 303  # and forgets no sign-out
        assert ui_page(random_key, cookie).status_code == 303


def _serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "policy_engine.cli", "serve", *args, "--port", "0",
                           "--reload-interval", "0"], capture_output=True, text=True, cwd=ROOT, timeout=60)


@pytest.mark.parametrize("case, expected", [
    ("missing", "error: cannot read session key file {f}: No such file or directory"),
    ("directory", "error: session key file {f} is not a regular file"),
    ("short", "error: {f}:1: a session key is at least 32 bytes (64 hex digits); this one has 16"),
    ("not hex", "error: {f}:1: not a session key (expected hex digits, e.g. from `openssl rand -hex 32`)"),
    ("empty", "error: {f} holds no session key (expected 64 or more hex digits, e.g. from `openssl rand -hex 32`)"),
    ("group readable", "error: session key file {f} can be read or changed by other users (mode 0640): make it "
                       "readable by its owner only (chmod 600 {f})"),
    ("world readable", "error: session key file {f} can be read or changed by other users (mode 0644): make it "
                       "readable by its owner only (chmod 600 {f})"),
])
def test_a_bad_session_key_file_is_a_one_line_startup_error(tmp_path, policy_dir, case, expected):
    f = tmp_path / "session.key"
    if case == "directory":
        f.mkdir()
    elif case == "short":
        write_session_key(f, "ab" * 16)
    elif case == "not hex":
        write_session_key(f, "not a key, just a password of some length that is long enough " * 2)
    elif case == "empty":
        write_session_key(f, "# a comment")
    elif case == "group readable":
        write_session_key(f, KEY, mode=0o640)
    elif case == "world readable":
        write_session_key(f, KEY, mode=0o644)
    r = _serve(str(policy_dir), "--session-key", str(f))
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == expected.format(f=f), r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_a_good_key_file_starts_and_its_key_signs(tmp_path, policy_dir, ids):
    """Mode 0400 is taken, comments and blank lines are skipped; the second key of a file is
    accepted but does not sign (a rotation): a server whose file lists the old key first
    accepts the new server's sessions only once the new key is in its file too."""
    old_only = write_session_key(tmp_path / "old.key", "# rotated 2026-11-26", "", OTHER_KEY, mode=0o400)
    both = write_session_key(tmp_path / "both.key", KEY, OTHER_KEY)
    common = (str(policy_dir), "--ledger", f"sqlite:///{tmp_path / 'l.db'}", "--identities", ids,
              "--reload-interval", "0")
    with servers((*common, "--session-key", str(old_only)), (*common, "--session-key", str(both))) as started:
        (old, _), (new, _) = started
        from_old = ui_sign_in(old, "casey")
        assert ui_page(new, from_old).status_code == 200  # the old key is still accepted by the new replica
        from_new = ui_sign_in(new, "cleo")  # signed with the new key, which the old replica lacks
        assert ui_page(old, from_new).status_code == 303
        assert ui_page(new, from_new).status_code == 200


def test_without_a_ledger_the_limit_is_said_at_start(tmp_path, policy_dir, ids):
    key = str(write_session_key(tmp_path / "session.key", KEY))
    with serve_process(str(policy_dir), "--identities", ids, "--session-key", key, "--reload-interval", "0") as (_, p):
        p.terminate()
        err = p.stderr.read().decode()
    assert "without --ledger a reviewer's sign-out is known only to the process that handled it" in err
