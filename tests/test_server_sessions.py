"""The reviewer's sign-in, sign-out and session cookie (in-process, Starlette's test client;
the same in Chromium: tests/test_server_ui.py).

Sign-in and sign-out are protected against cross-site requests like every other form
(login CSRF: a form another site posts must not sign this browser in as the attacker):
a CSRF token bound to a cookie of the sign-in form's own, and the browser's
``Sec-Fetch-Site`` / ``Origin``. The session cookie is not the credential but a signed
value bound to it: HttpOnly, SameSite=Strict, Secure over HTTPS (or with
``secure_cookies``), ended by a revocation, a reload of the identities file without the
token, a rotated JWT key, sign-out, or its lifetime. With a ledger, sign-outs are rows of
its ``ledger_ended_sessions`` table (made on a ledger that predates it, pruned, never an
entry); the keys of a ``--session-key`` file sign and verify sessions and forms (across
real workers and replicas: tests/test_server_replicas.py)."""

from __future__ import annotations

import base64
import re
import time

import pytest

pytest.importorskip("fastapi")
import jwt  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from ledger_fixtures import ledger_url  # noqa: E402,F401  (the parametrised backend fixture: SQLite, PostgreSQL)
from server_support import TOKENS, bearer, server_policy_dir, write_identities  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from policy_engine.server import ServerConfig, create_app  # noqa: E402
from policy_engine.server.identity import hash_token  # noqa: E402
from policy_engine.server.session import SESSION_TTL, LedgerSignOuts  # noqa: E402

SESSION, LOGIN = "stopline_session", "stopline_login"


@pytest.fixture
def policy_dir(tmp_path):
    return server_policy_dir(tmp_path)


def make(tmp_path, policy_dir, *, base_url: str = "http://testserver", **config) -> TestClient:
    ids = config.pop("identities", None) or str(write_identities(tmp_path / "ids.yaml"))
    app = create_app(ServerConfig(str(policy_dir), identities=ids, reload_interval=0, **config))
    return TestClient(app, base_url=base_url)


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def login_form(c: TestClient) -> str:
    """Open the sign-in page as a browser does (its cookie lands in the client); its CSRF token."""
    r = c.get("/ui/login")
    assert r.status_code == 200
    return csrf_of(r.text)


def sign_in(c: TestClient, token: str, **headers: str):
    return c.post("/ui/login", data={"token": token, "csrf": login_form(c)}, headers=headers, follow_redirects=False)


def set_cookies(r) -> dict[str, str]:
    """name -> the whole Set-Cookie line (lower case), of one response."""
    return {v.split("=", 1)[0]: v.lower() for v in r.headers.get_list("set-cookie")}


def set_value(r, name: str) -> str:
    """The value a response sets a cookie to (as sent, whatever the client's jar keeps)."""
    line = next(v for v in r.headers.get_list("set-cookie") if v.startswith(name + "="))
    return line.split("=", 1)[1].split(";", 1)[0]


def use(c: TestClient, cookie: str) -> None:
    """Make the client present this session cookie (and no other)."""
    c.cookies.clear()
    c.cookies.set(SESSION, cookie, path="/ui")


def signed_in(c: TestClient) -> bool:
    r = c.get("/ui", follow_redirects=False)
    assert r.status_code in (200, 303), r.text[:300]
    return r.status_code == 200


# ---------------------------------------------------------------------------------- login CSRF
def test_a_sign_in_without_the_forms_token_is_refused_and_signs_nobody_in(tmp_path, policy_dir):
    with make(tmp_path, policy_dir) as c:
        # what an attacker's page posts: its own valid token, no (or its own) CSRF token
        r = c.post("/ui/login", data={"token": TOKENS["ops"][0]}, follow_redirects=False)
        assert r.status_code == 403 and "the sign-in form expired" in r.text
        assert SESSION not in set_cookies(r) and not signed_in(c)
        theirs = login_form(TestClient(c.app))  # the token of the form in the attacker's own browser
        r = c.post("/ui/login", data={"token": TOKENS["ops"][0], "csrf": theirs}, follow_redirects=False)
        assert r.status_code == 403 and SESSION not in set_cookies(r) and not signed_in(c)
        # the page answered with a fresh form: signing in from it works, and the form's cookie is spent
        r = c.post("/ui/login", data={"token": TOKENS["casey"][0], "csrf": csrf_of(r.text)}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/ui"
        assert set_cookies(r)[LOGIN].startswith(f'{LOGIN}=""') and signed_in(c)


@pytest.mark.parametrize("headers, ok", [
    ({"Sec-Fetch-Site": "cross-site"}, False),
    ({"Sec-Fetch-Site": "same-site"}, False),  # e.g. another port of the same host: it can toss cookies
    ({"Sec-Fetch-Site": "same-site", "Origin": "http://testserver"}, False),
    ({"Origin": "http://evil.example"}, False),  # a browser without Fetch Metadata
    ({"Origin": "null"}, False),
    ({"Sec-Fetch-Site": "same-origin", "Origin": "http://testserver"}, True),
    ({"Origin": "http://testserver"}, True),
    ({}, True),  # not a browser's cross-site form (the CSRF token still counts)
])
def test_a_sign_in_the_browser_says_came_from_another_site_is_refused(tmp_path, policy_dir, headers, ok):
    with make(tmp_path, policy_dir) as c:
        r = sign_in(c, TOKENS["casey"][0], **headers)
        if ok:
            assert r.status_code == 303 and signed_in(c)
        else:
            assert r.status_code == 403 and "sent from another site" in r.text
            assert SESSION not in set_cookies(r) and not signed_in(c)


def test_a_failed_sign_in_answers_a_form_that_can_be_used_again(tmp_path, policy_dir):
    with make(tmp_path, policy_dir) as c:
        r = sign_in(c, "not-a-token")
        assert r.status_code == 401 and "unknown or revoked token" in r.text
        r = c.post("/ui/login", data={"token": TOKENS["casey"][0], "csrf": csrf_of(r.text)}, follow_redirects=False)
        assert r.status_code == 303 and signed_in(c)


# ---------------------------------------------------------------------------------- sign-out
def test_sign_out_needs_the_sessions_token_and_ends_the_session_on_the_server(tmp_path, policy_dir):
    with make(tmp_path, policy_dir) as c:
        assert sign_in(c, TOKENS["casey"][0]).status_code == 303
        cookie = c.cookies[SESSION]
        csrf = csrf_of(c.get("/ui").text)
        # a forged sign-out (another site's form, or no token): refused, the session stays
        for data, headers in (({}, {}), ({"csrf": "x" * 43}, {}), ({"csrf": csrf}, {"Sec-Fetch-Site": "cross-site"})):
            r = c.post("/ui/logout", data=data, headers=headers, follow_redirects=False)
            assert r.status_code == 403 and SESSION not in set_cookies(r), (data, headers)
            assert signed_in(c)
        r = c.post("/ui/logout", data={"csrf": csrf}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/ui/login"
        assert set_cookies(r)[SESSION].startswith(f'{SESSION}=""') and not signed_in(c)
        use(c, cookie)  # a copy of the cookie made before: over too
        assert not signed_in(c)
        # without a session there is nothing to protect: the cookie is cleared
        r = c.post("/ui/logout", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/ui/login"


# ---------------------------------------------------------------------------------- the cookie
def _payload(cookie: str) -> bytes:
    body = cookie.split(".")[0]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


def test_the_session_cookie_is_a_signed_value_not_the_token(tmp_path, policy_dir):
    with make(tmp_path, policy_dir) as c:
        token = TOKENS["casey"][0]
        r = sign_in(c, token)
        line = set_cookies(r)[SESSION]
        assert "httponly" in line and "samesite=strict" in line and "path=/ui" in line and "secure" not in line
        cookie = c.cookies[SESSION]
        assert token not in cookie and token.encode() not in _payload(cookie)
        assert hash_token(token).encode() in _payload(cookie)  # bound to it by the hash the file lists
        assert signed_in(c)
        for forged in (cookie.replace(".", ".x", 1), cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB"),
                       token, "", "a.b", cookie + "." + cookie):
            use(c, forged)
            assert not signed_in(c), forged
        # another server (another key) does not take it
        with make(tmp_path, policy_dir) as other:
            use(other, cookie)
            assert not signed_in(other)
        # nor does this one once its lifetime is over
        use(c, cookie)
        assert signed_in(c)
        c.app.state.sessions.clock = lambda: time.time() + SESSION_TTL + 1
        assert not signed_in(c)


@pytest.mark.parametrize("base_url, secure_cookies, secure", [
    ("http://testserver", False, False),
    ("https://testserver", False, True),  # the request came over HTTPS (or a trusted proxy said so)
    ("http://testserver", True, True),  # configured to be behind TLS (--secure-cookies)
])
def test_cookies_are_secure_over_https_or_when_configured(tmp_path, policy_dir, base_url, secure_cookies, secure):
    with make(tmp_path, policy_dir, base_url=base_url, secure_cookies=secure_cookies) as c:
        r = c.get("/ui/login")
        assert ("; secure" in set_cookies(r)[LOGIN]) is secure
        # (sent by hand: a client keeps a Secure cookie from plain HTTP, as a browser behind a TLS proxy would not see)
        r = c.post("/ui/login", data={"token": TOKENS["casey"][0], "csrf": csrf_of(r.text)},
                   headers={"cookie": f"{LOGIN}={set_value(r, LOGIN)}"}, follow_redirects=False)
        assert r.status_code == 303
        assert ("; secure" in set_cookies(r)[SESSION]) is secure
        if base_url.startswith("https"):
            assert signed_in(c)
            r = c.post("/ui/logout", data={"csrf": csrf_of(c.get("/ui").text)}, follow_redirects=False)
            assert "; secure" in set_cookies(r)[SESSION]


def test_a_session_ends_when_its_token_is_revoked_and_its_roles_follow_the_file(tmp_path, policy_dir):
    ids = write_identities(tmp_path / "ids.yaml")
    listed = hash_token(TOKENS["casey"][0])
    with make(tmp_path, policy_dir, identities=str(ids)) as c:
        assert sign_in(c, TOKENS["casey"][0]).status_code == 303 and signed_in(c)
        assert "(customer_service)" in c.get("/ui").text
        ids.write_text(ids.read_text().replace(f"roles: [customer_service]\n    sha256: {listed}",
                                               f"roles: [reviewer]\n    sha256: {listed}"))
        assert c.post("/v1/identities/reload", headers=bearer("ops")).json()["changed"] is True
        assert signed_in(c) and "(reviewer)" in c.get("/ui").text  # the roles the file gives now
        # the identities file reloads without the token (revoked): the session is over
        ids.write_text(ids.read_text().replace(listed, hash_token("another-token")))
        assert c.post("/v1/identities/reload", headers=bearer("ops")).json()["ok"] is True
        assert not signed_in(c)


def _pem(path, key) -> None:
    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))


def test_a_jwt_session_holds_no_jwt_and_ends_with_its_key_or_its_expiry(tmp_path, policy_dir):
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    _pem(tmp_path / "idp.pem", old)
    ids = write_identities(tmp_path / "ids.yaml",
                           "jwt:\n  public_key: idp.pem\n  algorithms: [EdDSA]\n  audience: stopline\n")
    exp = int(time.time()) + 600
    token = jwt.encode({"sub": "jules", "roles": ["reviewer"], "aud": "stopline", "exp": exp}, old, algorithm="EdDSA")
    with make(tmp_path, policy_dir, identities=str(ids)) as c:
        assert sign_in(c, token).status_code == 303 and signed_in(c)
        assert "signed in as <strong>jules</strong> (reviewer)" in c.get("/ui").text
        cookie = c.cookies[SESSION]
        assert token not in cookie and token.split(".")[2] not in cookie and b"jules" in _payload(cookie)
        c.app.state.sessions.clock = lambda: exp + 1  # the session ends with the JWT
        assert not signed_in(c)
        c.app.state.sessions.clock = time.time
        assert signed_in(c)
        _pem(tmp_path / "idp.pem", new)  # the IdP's key rotated: sessions signed in with the old one end
        assert c.post("/v1/identities/reload", headers=bearer("ops")).json()["changed"] is True
        assert not signed_in(c)


# ---------------------------------------------------------------------------------- sign-outs in the ledger
def _tables(url: str) -> set[str]:
    from ledger_fixtures import raw

    from policy_engine.ledger import schema

    with raw(url) as c:
        return set(schema.inspect_tables(c))


def test_sign_outs_are_kept_in_the_ledgers_database_not_in_its_log(tmp_path, policy_dir, ledger_url):
    """The table is part of the ledger's schema (`stopline ledger init` makes it, and takes it
    for the ledger's own); a ledger made before it gets it when the server starts, and
    `verify` holds. A sign-out writes one row, no entry; rows of sessions that ran out are
    pruned at the next sign-out."""
    from ledger_fixtures import raw, run_ledger_cli
    from sqlalchemy import text

    from policy_engine.ledger import Ledger

    code, _, err = run_ledger_cli("init", "--ledger", ledger_url)
    assert code == 0, err
    assert "ledger_ended_sessions" in _tables(ledger_url)
    with raw(ledger_url) as c:  # a ledger made before the table
        c.execute(text("DROP TABLE ledger_ended_sessions"))
    with make(tmp_path, policy_dir, ledger=ledger_url) as c:
        assert "ledger_ended_sessions" in _tables(ledger_url)
        signouts = c.app.state.sessions.signouts
        assert sign_in(c, TOKENS["casey"][0]).status_code == 303
        casey = c.cookies[SESSION]
        c.cookies.clear()
        assert sign_in(c, TOKENS["cleo"][0]).status_code == 303
        cleo = c.cookies[SESSION]
        with Ledger.open(ledger_url) as led:
            size = led.size
        use(c, casey)
        r = c.post("/ui/logout", data={"csrf": csrf_of(c.get("/ui").text)}, follow_redirects=False)
        assert r.status_code == 303 and signouts.count() == 1
        use(c, casey)
        assert not signed_in(c)
        use(c, cleo)
        assert signed_in(c)
        with Ledger.open(ledger_url) as led:
            assert led.size == size  # a sign-out is not an entry
        # casey's session has run out (its row's end moved into the past: the database's clock
        # and the server's both decide when a row goes): its row stays a few minutes more
        # (another replica's clock may be behind), then the next sign-out prunes it
        later = []
        for margin in (60, LedgerSignOuts.PRUNE_MARGIN + 60):
            with raw(ledger_url) as db:
                db.execute(text("UPDATE ledger_ended_sessions SET ended_until = :t WHERE sid = :s"),
                           {"t": int(time.time()) - margin, "s": _sid(casey)})
            c.cookies.clear()
            assert sign_in(c, TOKENS["cleo"][0]).status_code == 303
            later.append(c.cookies[SESSION])
            r = c.post("/ui/logout", data={"csrf": csrf_of(c.get("/ui").text)}, follow_redirects=False)
            assert r.status_code == 303
            assert signouts.ended(_sid(casey)) is (margin < LedgerSignOuts.PRUNE_MARGIN)
        assert signouts.count() == 2 and all(signouts.ended(_sid(x)) for x in later)
    code, out, err = run_ledger_cli("verify", "--ledger", ledger_url)
    assert code == 0, (out, err)
    code, _, err = run_ledger_cli("init", "--ledger", ledger_url)  # harmless, the table is the ledger's
    assert code == 0 and "warning" not in err, err


def _sid(cookie: str) -> str:
    import json

    return json.loads(_payload(cookie))["sid"]


def test_a_session_whose_sign_out_cannot_be_checked_is_not_taken(tmp_path, policy_dir):
    from policy_engine.ledger import LedgerUnavailable

    with make(tmp_path, policy_dir, ledger=f"sqlite:///{tmp_path / 'l.db'}") as c:
        assert sign_in(c, TOKENS["casey"][0]).status_code == 303 and signed_in(c)
        signouts = c.app.state.sessions.signouts

        def down(sid: str, exp: int | None = None) -> bool:
            raise LedgerUnavailable("ledger sqlite:///l.db: disk I/O error")

        signouts.ended = down
        r = c.get("/ui", follow_redirects=False)
        assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
        assert "disk I/O error" in r.json()["detail"] and "signed in as" not in r.text


def test_the_keys_of_a_session_key_file_sign_and_verify(tmp_path, policy_dir):
    """The first key signs; the others are accepted, for sessions and for the forms' CSRF
    tokens (a page rendered by a replica that still signs with the old key), so a rotation
    across replicas signs nobody out. A bad file is a one-line error of the configuration."""
    from server_support import write_session_key

    from policy_engine.server.state import ServerConfigError

    old, new = "0f" * 32, "e1" * 40
    with make(tmp_path, policy_dir, session_key_file=str(write_session_key(tmp_path / "old.key", old))) as a, \
            make(tmp_path, policy_dir, session_key_file=str(write_session_key(tmp_path / "both.key", new, old))) as b:
        login = a.get("/ui/login")
        r = b.post("/ui/login", data={"token": TOKENS["casey"][0], "csrf": csrf_of(login.text)},
                   headers={"cookie": f"{LOGIN}={set_value(login, LOGIN)}"}, follow_redirects=False)
        assert r.status_code == 303  # a sign-in form A rendered, posted to B
        from_b = set_value(r, SESSION)
        use(a, from_b)
        assert not signed_in(a)  # signed with the new key, which A does not have
        a.cookies.clear()
        r = sign_in(a, TOKENS["cleo"][0])
        assert r.status_code == 303
        from_a = set_value(r, SESSION)
        use(b, from_a)
        assert signed_in(b)
        use(a, from_a)
        r = b.post("/ui/logout", data={"csrf": csrf_of(a.get("/ui").text)}, follow_redirects=False)
        assert r.status_code == 303  # a form A rendered, posted to B
        use(b, from_a)
        assert not signed_in(b)
    with pytest.raises(ServerConfigError, match=r"no-such\.key: No such file"):
        make(tmp_path, policy_dir, session_key_file=str(tmp_path / "no-such.key"))
