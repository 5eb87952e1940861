"""The identities file is kept current without a restart: a token removed from it is revoked
(the API and a signed-in reviewer's session alike), a rotated JWT key is used, and a version
that does not load is reported and never used, so a mistake in an edit opens nothing."""

from __future__ import annotations

import re
import time

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402
import jwt  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from server_support import TOKENS, bearer, serve, server_policy_dir, write_identities  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from policy_engine.server import ServerConfig, create_app  # noqa: E402
from policy_engine.server.identity import IdentityStore, hash_token  # noqa: E402

EVAL = {"subject": {"type": "user", "id": "a"}, "action": {"name": "send"}, "resource": {"type": "t", "id": "1"}}


@pytest.fixture
def policy_dir(tmp_path):
    return server_policy_dir(tmp_path)


def _without(path, who: str) -> None:
    """Rewrite the identities file without `who`'s token (what an operator does to revoke it)."""
    lines = ["tokens:"]
    for name, (tok, roles) in TOKENS.items():
        if name != who:
            lines += [f"  - principal: {name}", f"    roles: [{', '.join(roles)}]", f"    sha256: {hash_token(tok)}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _status(c, who: str) -> int:
    return c.post("/access/v1/evaluation", json=EVAL, headers=bearer(who)).status_code


def test_a_token_removed_from_the_file_is_revoked_by_a_reload(tmp_path, policy_dir):
    ids = write_identities(tmp_path / "ids.yaml")
    app = create_app(ServerConfig(str(policy_dir), identities=str(ids), reload_interval=0))
    with TestClient(app) as c:
        assert _status(c, "casey") == 200 and _status(c, "cleo") == 200
        _without(ids, "casey")
        assert _status(c, "casey") == 200  # not yet: nothing reloaded
        r = c.post("/v1/identities/reload", headers=bearer("cleo"))
        assert r.status_code == 200 and r.json() == {"ok": True, "changed": True, "error": None}
        assert _status(c, "casey") == 401
        assert _status(c, "cleo") == 200
        # the reload itself is attributed: a revoked token cannot ask for one
        assert c.post("/v1/identities/reload", headers=bearer("casey")).status_code == 401
        r = c.post("/v1/identities/reload", headers=bearer("cleo")).json()
        assert r == {"ok": True, "changed": False, "error": None}
        assert 'stopline_identity_reloads_total{result="ok"} 2.0' in c.get("/metrics").text
        assert c.get("/healthz").json()["identities"] == {"last_reload": {"ok": True, "error": None}}


@pytest.mark.parametrize("broken", [
    "tokens:\n  - principal: casey\n    sha256: not-a-hash\n",  # a bad hash
    "tokens: [\n",  # not YAML
    "",  # emptied
    None,  # removed
])
def test_a_version_that_does_not_load_is_reported_and_the_last_good_one_stays(tmp_path, policy_dir, broken):
    ids = write_identities(tmp_path / "ids.yaml")
    app = create_app(ServerConfig(str(policy_dir), identities=str(ids), reload_interval=0))
    with TestClient(app) as c:
        if broken is None:
            ids.unlink()
        else:
            ids.write_text(broken, encoding="utf-8")
        r = c.post("/v1/identities/reload", headers=bearer("cleo")).json()
        assert r["ok"] is False and r["changed"] is False and str(ids) in r["error"]
        assert _status(c, "casey") == 200 and _status(c, "cleo") == 200  # the last good version
        assert c.post("/access/v1/evaluation", json=EVAL).status_code == 401  # never opened
        h = c.get("/healthz").json()["identities"]["last_reload"]
        # (to anyone: the file by its name, never the directory the server keeps it in)
        assert h["ok"] is False and ids.name in h["error"] and str(tmp_path) not in h["error"]
        assert 'stopline_identity_reloads_total{result="rejected"} 1.0' in c.get("/metrics").text
        write_identities(ids)  # fixed: used again
        assert c.post("/v1/identities/reload", headers=bearer("cleo")).json()["ok"] is True


def test_reload_if_changed_loads_only_a_change_and_reports_a_failure_once(tmp_path):
    ids = write_identities(tmp_path / "ids.yaml")
    store = IdentityStore(ids)
    first = store.current
    assert store.reload_if_changed() is None
    ids.write_text(ids.read_text())  # touched, same content
    assert store.reload_if_changed() is None and store.current is first
    ids.write_text("tokens: [\n")
    r = store.reload_if_changed()
    assert r is not None and r.ok is False and store.current is first
    assert store.reload_if_changed() is None  # the same broken content: reported once
    _without(ids, "casey")
    r = store.reload_if_changed()
    assert r is not None and r.ok and r.changed and store.current is not first
    with pytest.raises(PermissionError):
        store.current.verify(TOKENS["casey"][0])
    assert store.current.verify(TOKENS["cleo"][0]).principal == "cleo"


def _pem(path, key) -> None:
    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))


def _jwt(key) -> str:
    return jwt.encode({"sub": "jules", "roles": ["reviewer"], "aud": "stopline", "exp": int(time.time()) + 600}, key,
                      algorithm="EdDSA")


def test_a_rotated_jwt_key_file_is_picked_up(tmp_path):
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    _pem(tmp_path / "idp.pem", old)
    ids = write_identities(tmp_path / "ids.yaml",
                           "jwt:\n  public_key: idp.pem\n  algorithms: [EdDSA]\n  audience: stopline\n")
    store = IdentityStore(ids)
    assert store.current.verify(_jwt(old)).principal == "jules"
    _pem(tmp_path / "idp.pem", new)  # only the key file changed
    r = store.reload_if_changed()
    assert r is not None and r.ok and r.changed
    assert store.current.verify(_jwt(new)).principal == "jules"
    with pytest.raises(PermissionError):
        store.current.verify(_jwt(old))


def test_the_running_server_revokes_a_token_and_a_session_within_its_poll(tmp_path, policy_dir):
    ids = write_identities(tmp_path / "ids.yaml")
    with serve(str(policy_dir), "--identities", str(ids), "--reload-interval", "0.2") as base:
        with httpx.Client(base_url=base, timeout=10) as c:
            assert c.post("/access/v1/evaluation", json=EVAL, headers=bearer("casey")).status_code == 200
            csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/ui/login").text).group(1)
            r = c.post("/ui/login", data={"token": TOKENS["casey"][0], "csrf": csrf}, follow_redirects=False)
            assert r.status_code == 303
            assert c.get("/ui", follow_redirects=False).status_code == 200  # signed in
            _without(ids, "casey")
            deadline = time.monotonic() + 120  # (a bound on the wait for the poll, on a loaded machine too)
            while c.post("/access/v1/evaluation", json=EVAL, headers=bearer("casey")).status_code != 401:
                assert time.monotonic() < deadline, "the revoked token still works"
                time.sleep(0.1)
            r = c.get("/ui", follow_redirects=False)  # the session ended: back to the login page
            assert r.status_code == 303 and r.headers["location"] == "/ui/login"
            assert c.post("/access/v1/evaluation", json=EVAL, headers=bearer("cleo")).status_code == 200
            assert c.get("/healthz").json()["identities"]["last_reload"]["ok"] is True
