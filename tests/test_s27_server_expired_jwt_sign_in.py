"""Session 27: signing in to the reviewer's page with a JWT past its ``exp`` says so.

A JWT is verified with the identities file's ``leeway`` (30 s by default) of clock skew, so a
token a few seconds past its ``exp`` still verifies; but a session ends at the JWT's ``exp``
(docs/server.md, "The session"). Signing in with such a token answered 303 to the queue with a
session cookie that was already over, and the queue sent the reviewer back to the sign-in page
with no word of why: to them the page simply did not sign in. Now the sign-in is refused (401)
on the sign-in page, saying the token has expired; no session is made.
"""

from __future__ import annotations

import re
import time

import pytest

pytest.importorskip("fastapi")
import jwt  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from server_support import server_policy_dir, write_identities  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from policy_engine.server import ServerConfig, create_app  # noqa: E402

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def idp(tmp_path):
    key = Ed25519PrivateKey.generate()
    (tmp_path / "idp.pem").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    ids = write_identities(tmp_path / "ids.yaml",
                           "jwt:\n  public_key: idp.pem\n  algorithms: [EdDSA]\n  audience: stopline\n  leeway: 60\n")
    ids.chmod(0o600)
    cfg = ServerConfig(str(server_policy_dir(tmp_path)), identities=str(ids), reload_interval=0)
    with TestClient(create_app(cfg)) as c:
        yield c, key


def _token(key, exp: int) -> str:
    return jwt.encode({"sub": "jules", "roles": ["reviewer"], "aud": "stopline", "exp": exp}, key, algorithm="EdDSA")


def _sign_in(c: TestClient, token: str):
    form = c.get("/ui/login")
    return c.post("/ui/login", data={"token": token, "csrf": _CSRF.search(form.text).group(1)},
                  follow_redirects=False)


def test_a_jwt_past_its_exp_is_refused_at_sign_in_with_the_reason(idp):
    c, key = idp
    late = _token(key, int(time.time()) - 20)  # within the 60 s leeway: the API still takes it
    assert c.get("/v1/policies", headers={"Authorization": f"Bearer {late}"}).status_code == 200
    r = _sign_in(c, late)
    assert r.status_code == 401, (r.status_code, r.headers.get("location"))
    assert "the token has expired" in r.text
    assert "stopline_session" not in r.headers.get("set-cookie", "")
    assert c.get("/ui", follow_redirects=False).headers["location"] == "/ui/login"


def test_a_jwt_within_its_exp_signs_in_as_before(idp):
    c, key = idp
    r = _sign_in(c, _token(key, int(time.time()) + 600))
    assert r.status_code == 303 and r.headers["location"] == "/ui"
    page = c.get("/ui", follow_redirects=False)
    assert page.status_code == 200 and "signed in as <strong>jules</strong>" in page.text
