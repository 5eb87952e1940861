"""The reviewer's session cookie behind a TLS proxy, and a sign-in over a session.

- ``--public-url https://...`` says a proxy in front ends TLS, so the request the server
  sees is plain HTTP: the cookies are ``Secure`` by default then; ``--no-secure-cookies``
  (``secure_cookies=False``) turns that off, ``--secure-cookies`` keeps them Secure always.
- Signing in while signed in ends the session before on the server (as a sign-out does):
  a copy of its cookie is refused, with and without a ledger (SQLite, PostgreSQL)."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("fastapi")
from ledger_fixtures import ledger_url  # noqa: E402,F401  (the parametrised backend fixture)
from server_support import TOKENS, server_policy_dir, write_identities  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from policy_engine.server import ServerConfig, create_app  # noqa: E402

SESSION, LOGIN = "stopline_session", "stopline_login"


def make(tmp_path, *, base_url: str = "http://testserver", **config) -> TestClient:
    ids = str(write_identities(tmp_path / "ids.yaml"))
    app = create_app(ServerConfig(str(server_policy_dir(tmp_path)), identities=ids, reload_interval=0, **config))
    return TestClient(app, base_url=base_url)


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def set_cookies(r) -> dict[str, str]:
    return {v.split("=", 1)[0]: v.lower() for v in r.headers.get_list("set-cookie")}


def set_value(r, name: str) -> str:
    line = next(v for v in r.headers.get_list("set-cookie") if v.startswith(name + "="))
    return line.split("=", 1)[1].split(";", 1)[0]


def sign_in(c: TestClient, who: str, session: str | None = None):
    """Sign in with ``who``'s token, the cookies sent by hand (the sign-in cookie, and the
    session cookie ``session`` the browser holds, if any): a client keeps a Secure cookie
    from plain HTTP, as a browser behind a TLS proxy does not see."""
    c.cookies.clear()
    form = c.get("/ui/login")
    assert form.status_code == 200
    headers = {"cookie": f"{LOGIN}={set_value(form, LOGIN)}" + (f"; {SESSION}={session}" if session else "")}
    c.cookies.clear()
    r = c.post(
        "/ui/login", data={"token": TOKENS[who][0], "csrf": csrf_of(form.text)}, headers=headers, follow_redirects=False
    )
    assert r.status_code == 303, r.text
    c.cookies.clear()
    return r


def signed_in_with(c: TestClient, cookie: str) -> bool:
    c.cookies.clear()
    r = c.get("/ui", headers={"cookie": f"{SESSION}={cookie}"}, follow_redirects=False)
    assert r.status_code in (200, 303), r.text
    return r.status_code == 200


# ---------------------------------------------------------------------------------- 1. Secure behind a proxy
@pytest.mark.parametrize(
    "public_url, secure_cookies, base_url, secure",
    [
        ("https://pdp.example.com", None, "http://testserver", True),  # a TLS proxy in front: Secure by default
        ("HTTPS://pdp.example.com/stopline", None, "http://testserver", True),
        ("https://pdp.example.com", False, "http://testserver", False),  # turned off (--no-secure-cookies)
        ("https://pdp.example.com", False, "https://testserver", True),  # ... yet Secure over HTTPS
        ("http://pdp.example.com", None, "http://testserver", False),  # a public URL over plain HTTP
        (None, None, "http://testserver", False),
        (None, True, "http://testserver", True),  # --secure-cookies
        ("http://pdp.example.com", True, "http://testserver", True),
    ],
)
def test_cookies_are_secure_by_default_behind_an_https_public_url(
    tmp_path, public_url, secure_cookies, base_url, secure
):
    with make(tmp_path, base_url=base_url, public_url=public_url, secure_cookies=secure_cookies) as c:
        r = c.get("/ui/login")
        assert ("; secure" in set_cookies(r)[LOGIN]) is secure
        r = sign_in(c, "rita")
        assert ("; secure" in set_cookies(r)[SESSION]) is secure
        cookie = set_value(r, SESSION)
        c.cookies.clear()
        page = c.get("/ui", headers={"cookie": f"{SESSION}={cookie}"})
        assert page.status_code == 200
        c.cookies.clear()
        r = c.post(
            "/ui/logout",
            data={"csrf": csrf_of(page.text)},
            headers={"cookie": f"{SESSION}={cookie}"},
            follow_redirects=False,
        )
        assert r.status_code == 303 and ("; secure" in set_cookies(r)[SESSION]) is secure


def test_the_command_line_keeps_the_default_unless_told():
    from policy_engine.server.cli import serve

    def given(*args: str):
        return serve.make_context("serve", ["policies/", *args]).params["secure_cookies"]

    assert given() is None  # (the default: as --public-url says)
    assert given("--secure-cookies") is True
    assert given("--no-secure-cookies") is False


# ---------------------------------------------------------------------------------- 2. a sign-in over a session
def _sign_in_twice(tmp_path, url, second) -> None:
    with make(tmp_path, ledger=url) as c:
        first = set_value(sign_in(c, "cleo"), SESSION)
        assert signed_in_with(c, first)
        r = sign_in(c, second, first)  # (the browser sends the session it holds)
        now = set_value(r, SESSION)
        assert now != first
        assert signed_in_with(c, now)
        assert not signed_in_with(c, first)  # a copy of the cookie before is refused
        if url is not None:  # (recorded where every worker and replica sees it)
            assert c.app.state.sessions.signouts.count() == 1


@pytest.mark.parametrize("second", ["rita", "cleo"], ids=["another reviewer", "the same reviewer"])
def test_signing_in_over_a_session_ends_it_on_the_server(tmp_path, second):
    _sign_in_twice(tmp_path, None, second)


def test_signing_in_over_a_session_ends_it_on_the_ledger(tmp_path, ledger_url):  # noqa: F811
    _sign_in_twice(tmp_path, ledger_url, "rita")


def test_a_sign_in_over_a_cookie_that_is_no_session_ends_nothing(tmp_path):
    with make(tmp_path) as c:
        now = set_value(sign_in(c, "rita", "not.a-session"), SESSION)
        assert signed_in_with(c, now)
