"""Session 22 audit: a look-alike principal over HTTP (the API and the reviewer's sign-in),
a session made for one before names were checked, and the JWT attacks that must stay
refused (algorithm confusion, an embedded key, `kid` tricks, times)."""

from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("fastapi")
import jwt  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from server_support import bearer, server_policy_dir, write_identities  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from policy_engine.server import ServerConfig, create_app  # noqa: E402
from policy_engine.server.identity import Identities  # noqa: E402
from policy_engine.server.session import Sessions  # noqa: E402

SESSION = "stopline_session"
EVALUATION = "/access/v1/evaluation"
ASK = {"subject": {"type": "agent", "id": "a1"}, "action": {"name": "log"}, "resource": {"type": "ticket", "id": "t1"}}


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _ids(tmp_path, key, how: str = "pem") -> str:
    if how == "pem":
        (tmp_path / "idp.pem").write_bytes(_pem(key))
        conf = "jwt:\n  public_key: idp.pem\n"
    else:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "k1"}]}), encoding="utf-8")
        conf = "jwt:\n  jwks: jwks.json\n"
    return str(write_identities(tmp_path / "ids.yaml", conf + "  algorithms: [RS256, ES256]\n  audience: stopline\n"))


def _tok(key, sub: str = "jules", alg: str = "RS256", headers: dict | None = None, **claims) -> str:
    body = {"sub": sub, "roles": ["reviewer"], "aud": "stopline", "exp": int(time.time()) + 600, **claims}
    return jwt.encode(body, key, algorithm=alg, headers=headers)


def test_a_lookalike_principal_is_a_401_on_the_api_and_at_sign_in(tmp_path, rsa_key):
    app = create_app(
        ServerConfig(str(server_policy_dir(tmp_path)), identities=_ids(tmp_path, rsa_key), reload_interval=0)
    )
    with TestClient(app) as c:
        ok = c.post(EVALUATION, json=ASK, headers={"Authorization": f"Bearer {_tok(rsa_key, 'rita')}"})
        assert ok.status_code == 200
        bad = c.post(EVALUATION, json=ASK, headers={"Authorization": f"Bearer {_tok(rsa_key, 'rita' + chr(0x200B))}"})
        assert bad.status_code == 401 and "U+200B" in bad.json()["detail"]
        assert bad.headers["www-authenticate"] == "Bearer"
        page = c.get("/ui/login")
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        r = c.post("/ui/login", data={"token": _tok(rsa_key, "\uff52ita"), "csrf": csrf}, follow_redirects=False)
        assert r.status_code == 401 and "NFKC" in r.text
        assert not any(v.startswith(SESSION + "=") for v in r.headers.get_list("set-cookie"))


def test_a_session_signed_in_under_a_lookalike_before_the_check_ends(tmp_path, rsa_key):
    # a --session-key keeps sessions across an upgrade: one made for `rita\u200b` by a server
    # that took the name must not outlive it
    ids = Identities.load(_ids(tmp_path, rsa_key))
    sessions = Sessions(b"k" * 32)
    caller, cookie = sessions.issue(ids, _tok(rsa_key, "rita"))
    assert sessions.resume(ids, cookie).caller == caller
    _, binding = ids.bind(_tok(rsa_key, "rita"))
    assert ids.rebind(binding, "rita", ["reviewer"]) is not None
    assert ids.rebind(binding, "rita\u200b", ["reviewer"]) is None
    assert ids.rebind(binding, "rita", ["reviewer\u202e"]) is None


# ---------------------------------------------------------------- attacks that stay refused (guards)


@pytest.mark.parametrize("how", ["pem", "jwks"])
def test_jwt_algorithm_confusion_and_embedded_keys_are_refused(tmp_path, rsa_key, how):
    ids = Identities.load(_ids(tmp_path, rsa_key, how))
    assert ids.verify(_tok(rsa_key, headers={"kid": "k1"})).principal == "jules"
    pem = _pem(rsa_key)
    refused = [
        jwt.encode({"sub": "jules", "aud": "stopline", "exp": int(time.time()) + 60}, None, algorithm="none"),
    ]
    # HS256 signed with the server's public key as the HMAC secret (PyJWT refuses to sign with
    # a PEM as an HMAC secret, so the token is made by hand)
    import base64
    import hashlib
    import hmac

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    for secret in (pem, pem.strip()):
        head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
        body = b64(
            json.dumps({"sub": "rita", "roles": ["reviewer"], "aud": "stopline", "exp": int(time.time()) + 60}).encode()
        )
        sig = b64(hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest())
        refused.append(f"{head}.{body}.{sig}")
    mine = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    my_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(mine.public_key()))
    refused += [
        _tok(mine, headers={"jwk": my_jwk, "kid": "k1"}),  # a key of the token's own
        _tok(mine, headers={"jku": "https://attacker.example/jwks.json", "kid": "k1"}),
        _tok(mine, headers={"kid": "../../../../dev/null"}),
        _tok(rsa_key, headers={"kid": "k1", "crit": ["x-unknown"], "x-unknown": 1}),
        _tok(rsa_key, exp=int(time.time()) - 3600),  # expired (beyond the leeway)
        _tok(rsa_key, nbf=int(time.time()) + 3600),  # not yet valid
        _tok(rsa_key, iat=int(time.time()) + 3600),  # issued in the future
        _tok(rsa_key, aud="another-service"),
    ]
    for t in refused:
        with pytest.raises(PermissionError):
            ids.verify(t)


def test_a_refused_credential_is_answered_the_same_whoever_it_names(tmp_path, rsa_key):
    # the sign-in takes a credential, never a user name: a wrong token says nothing of who exists
    app = create_app(
        ServerConfig(str(server_policy_dir(tmp_path)), identities=_ids(tmp_path, rsa_key), reload_interval=0)
    )
    with TestClient(app) as c:
        answers = {
            (r.status_code, r.json()["detail"])
            for r in (
                c.post(EVALUATION, json=ASK, headers={"Authorization": f"Bearer {tok}"})
                for tok in ("tok-rita-22c0x", "tok-nobody", "stl_" + "A" * 43)
            )
        }
        assert answers == {(401, "unknown or revoked token")}
        assert c.post(EVALUATION, json=ASK, headers=bearer("rita")).status_code == 200
