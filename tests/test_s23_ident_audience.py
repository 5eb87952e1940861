"""Session 23: a JWT's audience is required.

Without ``audience`` the token's ``aud`` was not checked (the server only warned at start):
a token the identity provider minted for another service (its own API, its own audience)
was accepted by this one. An identities file with ``jwt`` and no ``audience`` now does not
load: ``stopline serve`` stops with one line naming the file, the line of its ``jwt`` and
the fix, and a reload to such a version keeps the last good one. Taking any audience is
still possible, said on purpose: ``accept_any_audience: true`` (warned at start, as before).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
import jwt  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from server_support import server_policy_dir, write_identities  # noqa: E402

from policy_engine.server.identity import Identities, IdentityConfigError, IdentityStore  # noqa: E402

DOCS = Path(__file__).resolve().parent.parent / "docs" / "server.md"
NO_AUDIENCE = ("jwt has no `audience`, so a token issued for another service would be accepted: give "
               "`audience: <the aud of this server's tokens>` (or, to accept any, `accept_any_audience: true`)")


def _key(tmp_path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    (tmp_path / "idp.pem").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return key


def _token(key: Ed25519PrivateKey, aud: str | None) -> str:
    claims = {"sub": "jules", "roles": ["reviewer"], "exp": int(time.time()) + 600}
    if aud is not None:
        claims["aud"] = aud
    return jwt.encode(claims, key, algorithm="EdDSA")


def test_jwt_without_an_audience_does_not_load_and_says_where_and_how(tmp_path):
    _key(tmp_path)
    ids = write_identities(tmp_path / "ids.yaml", "jwt:\n  public_key: idp.pem\n  algorithms: [EdDSA]\n")
    line = ids.read_text().splitlines().index("jwt:") + 1
    with pytest.raises(IdentityConfigError) as e:
        Identities.load(ids)
    assert str(e.value) == f"{ids}:{line}: {NO_AUDIENCE}"
    # written out as null, it is no audience either (the opt-out is `accept_any_audience: true`)
    ids.write_text('{"jwt": {"public_key": "idp.pem", "audience": null}}')
    with pytest.raises(IdentityConfigError, match=re.escape(f"{ids}:1: jwt has no `audience`")):
        Identities.load(ids)


@pytest.mark.parametrize("conf, why", [
    ("  audience: stopline\n  accept_any_audience: true\n", "give `audience` or `accept_any_audience: true`, not both"),
    ("  accept_any_audience: yes please\n", "`accept_any_audience` is true or false"),
    ("  accept_any_audience: 1\n", "`accept_any_audience` is true or false"),
    ("  accept_any_audience: false\n", "jwt has no `audience`"),
])
def test_the_opt_out_is_a_plain_true_and_never_beside_an_audience(tmp_path, conf, why):
    _key(tmp_path)
    ids = write_identities(tmp_path / "ids.yaml", "jwt:\n  public_key: idp.pem\n  algorithms: [EdDSA]\n" + conf)
    with pytest.raises(IdentityConfigError, match=re.escape(why)):
        Identities.load(ids)


def test_a_token_for_another_service_is_refused_unless_any_audience_is_accepted_on_purpose(tmp_path):
    key = _key(tmp_path)
    ids = write_identities(tmp_path / "ids.yaml", "jwt:\n  public_key: idp.pem\n  algorithms: [EdDSA]\n"
                                                  "  audience: stopline\n")
    checked = Identities.load(ids)
    assert checked.verify(_token(key, "stopline")).principal == "jules"
    for other in ("billing-api", None):  # minted for another service; minted for no audience
        with pytest.raises(PermissionError):
            checked.verify(_token(key, other))
    assert checked.audience_warning() is None
    ids.write_text(ids.read_text().replace("audience: stopline", "accept_any_audience: true"))
    anyone = Identities.load(ids)
    assert anyone.verify(_token(key, "billing-api")).principal == "jules"
    assert anyone.audience_warning() == (f"{ids}: jwt has `accept_any_audience: true`: every token the key signs is "
                                         "accepted, one issued for another service too; give `audience` (the `aud` "
                                         "this server's tokens carry) instead")


def test_a_reload_to_a_file_without_an_audience_keeps_the_last_good_version(tmp_path):
    key = _key(tmp_path)
    ids = write_identities(tmp_path / "ids.yaml", "jwt:\n  public_key: idp.pem\n  algorithms: [EdDSA]\n"
                                                  "  audience: stopline\n")
    store = IdentityStore(ids)
    ids.write_text(ids.read_text().replace("  audience: stopline\n", ""))
    r = store.reload_if_changed()
    assert r is not None and not r.ok and r.error is not None and NO_AUDIENCE in r.error
    assert store.current.verify(_token(key, "stopline")).principal == "jules"
    with pytest.raises(PermissionError):  # (still checked: the file that would not check it is not used)
        store.current.verify(_token(key, "billing-api"))


def _documented_error() -> str:
    text = DOCS.read_text(encoding="utf-8")
    m = re.search(r"<!-- snippet: an error message \(tests/test_s23_ident_audience\.py checks it\) -->\n"
                  r"<!-- illustrative -->\n```text\n"
                  r"(.*?)\n```", text, re.S)
    assert m is not None, "the error is shown in docs/server.md"
    return m.group(1)


def test_serve_stops_in_one_line_as_the_docs_show(tmp_path):
    _key(tmp_path)
    policies = server_policy_dir(tmp_path)
    (tmp_path / "ids.yaml").write_text("# the reviewers' identity provider\n\njwt:\n  public_key: idp.pem\n"
                                       "  algorithms: [EdDSA]\n")
    r = subprocess.run([sys.executable, "-m", "policy_engine.cli", "serve", str(policies.relative_to(tmp_path)),
                        "--identities", "ids.yaml", "--port", "0"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines() == [_documented_error()], r.stderr
    assert r.stderr == f"error: ids.yaml:3: {NO_AUDIENCE}\n"
