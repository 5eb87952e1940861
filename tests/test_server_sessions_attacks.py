"""The reviewer's sessions across workers and replicas, attacked (`--session-key FILE`,
sign-outs in the ledger's ``ledger_ended_sessions``; policy_engine/server/session.py).

Defects found, each with its test (they failed before the fix):

- Clock skew between replicas: rows were pruned by the pruning server's clock alone, and a
  session was checked against the checking server's clock alone. A replica whose clock ran
  ahead by more than the five-minute margin deleted the row of a session that the other
  replicas still took, so a cookie copied before its sign-out worked again there; a
  replica whose clock was behind took a copied cookie whose row a correct replica had
  rightly pruned. Now the lookup also reads the database's clock (one statement, one round
  trip): a session is over once either clock passes its end, and a row is pruned only
  once both the pruning server's clock and the database's have passed its end plus the
  margin.
- A session id that is not one this server makes (longer than the table's column, or
  with characters a token never has) was taken when the cookie's signature held (a key
  shared with another tool, another version): on PostgreSQL its sign-out could not be
  recorded, so such a session could not be ended. Now it is refused before any lookup.
- A key file saved with a UTF-8 byte order mark (some editors) was refused as "not ASCII
  hex digits"; it is read as the key it holds.
- A key file owned by another user (mode 0600, the server run as root) was taken, though
  that user can change the key and so make a session for any token. It is refused.

The rest are attacks that found nothing, kept as tests: who can write a row (no session,
no CSRF token, another site, a replay), a cookie signed by a key rotated out, the key
file's spelling (CRLF, spaces, uppercase), symlinks, what the errors and the debug log
print (never a key, a cookie or a token), and the ledger that cannot answer (a 503).
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from ledger_fixtures import ledger_url  # noqa: E402,F401  (the parametrised backend fixture: SQLite, PostgreSQL)
from server_support import (  # noqa: E402
    TOKENS,
    serve_process,
    server_policy_dir,
    ui_page,
    ui_sign_in,
    ui_sign_out,
    write_identities,
    write_session_key,
)
from starlette.testclient import TestClient  # noqa: E402

from policy_engine.server import ServerConfig, create_app  # noqa: E402
from policy_engine.server.session import LedgerSignOuts, SessionKeyError, load_session_key  # noqa: E402

SESSION, LOGIN = "stopline_session", "stopline_login"
KEY = "5e" * 32
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def policy_dir(tmp_path):
    return server_policy_dir(tmp_path)


def make(tmp_path: Path, policy_dir: Path, **config) -> TestClient:
    ids = str(tmp_path / "ids.yaml")
    if not os.path.exists(ids):
        write_identities(Path(ids))
    return TestClient(create_app(ServerConfig(str(policy_dir), identities=ids, reload_interval=0, **config)))


def sign_in(c: TestClient, who: str) -> str:
    c.cookies.clear()
    form = c.get("/ui/login")
    r = c.post("/ui/login", data={"token": TOKENS[who][0], "csrf": _CSRF.search(form.text).group(1)},
               follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui", r.text[:300]
    cookie = c.cookies[SESSION]
    c.cookies.clear()
    return cookie


def page(c: TestClient, cookie: str, **headers: str) -> int:
    r = c.get("/ui", headers={"cookie": f"{SESSION}={cookie}", **headers}, follow_redirects=False)
    assert r.status_code in (200, 303, 503), r.text[:300]
    return r.status_code


def csrf(c: TestClient, cookie: str) -> str:
    """The sign-out form's token of this session (as the server computes it, page or not)."""
    return c.app.state.sessions._token(b"csrf", body(cookie)["sid"].encode())


def sign_out(c: TestClient, cookie: str, token: str | None = None, **headers: str):
    return c.post("/ui/logout", data={"csrf": csrf(c, cookie) if token is None else token},
                  headers={"cookie": f"{SESSION}={cookie}", **headers}, follow_redirects=False)


def body(cookie: str) -> dict:
    payload = cookie.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def resign(c: TestClient, cookie: str, **changes) -> str:
    """The cookie with its body changed, signed with the server's key (what a holder of the
    key, another tool or another version, could make)."""
    b = {**body(cookie), **changes}
    payload = base64.urlsafe_b64encode(json.dumps(b, separators=(",", ":")).encode()).rstrip(b"=").decode()
    return f"{payload}.{c.app.state.sessions._mac(b'session', payload.encode())}"


# ---------------------------------------------------------------------------------- clock skew
def test_a_replica_whose_clock_is_ahead_does_not_prune_a_sign_out_others_still_need(
        tmp_path, policy_dir, ledger_url):  # noqa: F811
    """Replica A's clock runs 1000 s ahead (more than the five-minute margin). A session made
    on B (10-minute sessions) is signed out there; a sign-out on A then prunes. Before, A
    pruned by its own clock and deleted that row while the session had minutes left on B's
    clock, so a copy of the cookie was taken by B again."""
    with make(tmp_path, policy_dir, ledger=ledger_url, session_key=KEY) as a, \
            make(tmp_path, policy_dir, ledger=ledger_url, session_key=KEY) as b:
        a.app.state.sessions.clock = lambda: time.time() + 1000
        b.app.state.sessions.ttl = 600
        copy = sign_in(b, "casey")
        assert page(b, copy) == 200 and page(a, copy) == 303  # (over, by A's clock)
        assert sign_out(b, copy).status_code == 303
        assert page(b, copy) == 303 and page(a, copy) == 303
        other = sign_in(a, "cleo")
        assert page(a, other) == 200
        assert sign_out(a, other).status_code == 303  # prunes what has run out
        signouts = b.app.state.sessions.signouts
        assert signouts.ended(body(copy)["sid"])  # the row is kept
        assert page(b, copy) == 303, "a copy of a signed-out cookie was taken again"
        assert signouts.count() == 2


def test_a_replica_whose_clock_is_behind_does_not_take_a_session_whose_row_was_pruned(
        tmp_path, policy_dir, ledger_url):  # noqa: F811
    """Replica B's clock runs 1000 s behind. Its 10-minute session has, by every other clock,
    ended 400 s ago; a correct replica's sign-out prunes its row (past the margin). Before, B
    still took the cookie by its own clock: signed out, and taken."""
    with make(tmp_path, policy_dir, ledger=ledger_url, session_key=KEY) as a, \
            make(tmp_path, policy_dir, ledger=ledger_url, session_key=KEY) as b:
        b.app.state.sessions.clock = lambda: time.time() - 1000
        b.app.state.sessions.ttl = 600
        copy = sign_in(b, "casey")
        assert body(copy)["exp"] <= time.time() - 399
        assert sign_out(b, copy).status_code == 303
        other = sign_in(a, "cleo")
        assert sign_out(a, other).status_code == 303  # prunes the rows of sessions over by 300 s
        assert page(b, copy) == 303, "a replica with a slow clock took a signed-out, pruned session"
        assert page(a, copy) == 303
        # by the database's clock the session is over: refused from the start, row or not
        fresh = sign_in(b, "casey")
        assert page(b, fresh) == 303 and not b.app.state.sessions.signouts.ended(body(fresh)["sid"])


def test_with_clocks_that_agree_a_session_and_its_sign_out_are_as_before(tmp_path, policy_dir, ledger_url):  # noqa: F811
    """The control: the database's clock changes nothing for servers whose clocks are right."""
    with make(tmp_path, policy_dir, ledger=ledger_url, session_key=KEY) as a, \
            make(tmp_path, policy_dir, ledger=ledger_url, session_key=KEY) as b:
        cookie = sign_in(a, "casey")
        assert page(a, cookie) == 200 and page(b, cookie) == 200
        signouts = a.app.state.sessions.signouts
        assert not signouts.ended(body(cookie)["sid"], body(cookie)["exp"])
        assert signouts.ended(body(cookie)["sid"], int(time.time()) - 1)  # an end the database's clock has passed
        assert sign_out(b, cookie).status_code == 303
        assert page(a, cookie) == 303 and page(b, cookie) == 303


# ---------------------------------------------------------------------------------- session ids
@pytest.mark.parametrize("sid", [
    "x" * 65,  # longer than ledger_ended_sessions.sid
    "a'; DROP TABLE ledger_ended_sessions; --",
    "abc def",
    "",
    "\u00e9" * 22,
])
def test_a_session_id_this_server_does_not_make_is_refused(tmp_path, policy_dir, ledger_url, sid):  # noqa: F811
    with make(tmp_path, policy_dir, ledger=ledger_url) as c:
        good = sign_in(c, "casey")
        assert page(c, good) == 200
        assert page(c, resign(c, good, sid="A" * 64)) == 200  # the longest the table holds: taken
        forged = resign(c, good, sid=sid)
        assert page(c, forged) == 303
        assert sign_out(c, good).status_code == 303  # the table is there, and works
        assert page(c, good) == 303 and c.app.state.sessions.signouts.count() == 1


# ---------------------------------------------------------------------------------- who writes rows
def test_only_a_signed_in_same_site_form_with_its_token_writes_a_row(tmp_path, policy_dir, ledger_url):  # noqa: F811
    with make(tmp_path, policy_dir, ledger=ledger_url) as c:
        signouts = c.app.state.sessions.signouts
        cookie = sign_in(c, "casey")
        token = csrf(c, cookie)
        # no session, a forged one, a session without the token, another site with the token
        assert c.post("/ui/logout", data={"csrf": token}, follow_redirects=False).status_code == 303
        assert sign_out(c, resign(c, cookie, sid="Z" * 22)[:-2] + "AA", token).status_code == 303
        assert sign_out(c, cookie, "").status_code == 403
        assert sign_out(c, cookie, token, **{"Sec-Fetch-Site": "cross-site"}).status_code == 403
        assert sign_out(c, cookie, token, Origin="http://evil.example").status_code == 403
        assert signouts.count() == 0 and page(c, cookie) == 200
        # the form: one row; replayed: no other
        assert sign_out(c, cookie, token).status_code == 303
        for _ in range(5):
            assert sign_out(c, cookie, token).status_code == 303
        assert signouts.count() == 1 and page(c, cookie) == 303


def test_a_cookie_signed_by_a_key_rotated_out_is_refused(tmp_path, policy_dir):
    old, new = "0f" * 32, "e1" * 32
    ledger = f"sqlite:///{tmp_path / 'l.db'}"
    with make(tmp_path, policy_dir, ledger=ledger, session_key=f"{new},{old}") as both, \
            make(tmp_path, policy_dir, ledger=ledger, session_key=old) as before:
        from_old = sign_in(before, "casey")
        assert page(both, from_old) == 200
        with make(tmp_path, policy_dir, ledger=ledger, session_key=new) as after:
            assert page(after, from_old) == 303
            # nor is a form token made under the old key
            cookie = sign_in(after, "cleo")
            old_token = before.app.state.sessions._token(b"csrf", body(cookie)["sid"].encode())
            assert sign_out(after, cookie, old_token).status_code == 403


def test_a_ledger_that_cannot_answer_refuses_every_session(tmp_path, policy_dir):
    """The table gone (a restore from an old backup, a role without the grant): 503 on the
    page and on sign-out, never a session taken unchecked."""
    import sqlite3

    with make(tmp_path, policy_dir, ledger=f"sqlite:///{tmp_path / 'l.db'}") as c:
        cookie = sign_in(c, "casey")
        db = sqlite3.connect(tmp_path / "l.db")
        db.execute("ALTER TABLE ledger_ended_sessions RENAME TO elsewhere")
        db.commit()
        db.close()
        assert page(c, cookie) == 503
        r = sign_out(c, cookie)
        assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
        assert cookie not in r.text and KEY not in r.text


# ---------------------------------------------------------------------------------- the key file
def _key_file(tmp_path: Path, data: bytes, mode: int = 0o600, name: str = "session.key") -> Path:
    f = tmp_path / name
    f.write_bytes(data)
    f.chmod(mode)
    return f


def test_a_key_file_with_a_byte_order_mark_is_read(tmp_path):
    f = _key_file(tmp_path, b"\xef\xbb\xbf" + KEY.encode() + b"\r\n")
    assert load_session_key(f) == (bytes.fromhex(KEY),)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown needs root")
def test_a_key_file_another_user_owns_is_refused(tmp_path):
    f = _key_file(tmp_path, KEY.encode())
    os.chown(f, 65534, 65534)
    with pytest.raises(SessionKeyError) as ei:
        load_session_key(f)
    assert str(ei.value) == (f"session key file {f} is owned by another user (uid 65534), who can change it: make "
                             f"it owned by the user the server runs as (uid 0) or root")
    link = tmp_path / "link.key"  # through a symlink: the file's owner counts
    link.symlink_to(f)
    with pytest.raises(SessionKeyError, match="owned by another user"):
        load_session_key(link)


@pytest.mark.parametrize("data", [
    (KEY + "\r\n").encode(),
    KEY.upper().encode(),
    (" ".join(KEY[i:i + 2] for i in range(0, 64, 2)) + "\n").encode(),
    ("\t" + KEY + "  \n\n# a comment\n").encode(),
])
def test_the_spellings_of_one_key_are_one_key(tmp_path, data):
    assert load_session_key(_key_file(tmp_path, data)) == (bytes.fromhex(KEY),)


def test_a_symlink_is_judged_by_the_file_it_names(tmp_path):
    good = _key_file(tmp_path, KEY.encode(), name="good.key")
    (tmp_path / "good.link").symlink_to(good)
    assert load_session_key(tmp_path / "good.link") == (bytes.fromhex(KEY),)
    loose = _key_file(tmp_path, KEY.encode(), mode=0o644, name="loose.key")
    (tmp_path / "loose.link").symlink_to(loose)
    with pytest.raises(SessionKeyError, match="can be read or changed by other users"):
        load_session_key(tmp_path / "loose.link")
    (tmp_path / "fifo.key").unlink(missing_ok=True)
    os.mkfifo(tmp_path / "fifo.key", 0o600)
    with pytest.raises(SessionKeyError, match="not a regular file"):  # (and does not hang)
        load_session_key(tmp_path / "fifo.key")


@pytest.mark.parametrize("line", ["ab" * 31, "secret-password-" * 5, "ab" * 32 + "c", KEY + " # new"])
def test_a_bad_key_file_error_never_prints_its_content(tmp_path, line):
    f = _key_file(tmp_path, (line + "\n").encode())
    with pytest.raises(SessionKeyError) as ei:
        load_session_key(f)
    assert line[:16] not in str(ei.value).replace(str(f), "")


def test_the_debug_log_prints_no_key_cookie_or_token(tmp_path, policy_dir):
    ids = str(write_identities(tmp_path / "ids.yaml"))
    key = str(write_session_key(tmp_path / "session.key", KEY))
    with serve_process(str(policy_dir), "--ledger", f"sqlite:///{tmp_path / 'l.db'}", "--identities", ids,
                       "--session-key", key, "--log-level", "debug", "--reload-interval", "0") as (base, p):
        cookie = ui_sign_in(base, "casey")
        assert ui_page(base, cookie).status_code == 200
        assert ui_sign_out(base, cookie).status_code == 303
        assert ui_page(base, cookie).status_code == 303
        p.terminate()
        err = p.stderr.read().decode()
    assert err  # (the debug log said something)
    for secret in (KEY, KEY.upper(), cookie, cookie.split(".")[1], TOKENS["casey"][0]):
        assert secret not in err


def test_the_sign_outs_table_takes_a_prune_margin_of_minutes():
    """The margin stays what docs/server.md says (five minutes)."""
    assert LedgerSignOuts.PRUNE_MARGIN == 300
