"""Session 22 audit of how the server authenticates: principal names written one way only,
which keys of a JWKS verify, weak keys, identities files anyone may change."""

from __future__ import annotations

import json
import os
import time

import pytest

pytest.importorskip("fastapi")
import jwt  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from server_support import TOKENS, write_identities  # noqa: E402

from policy_engine.server.identity import (  # noqa: E402
    Identities,
    IdentityConfigError,
    IdentityStore,
    hash_token,
)

LOOKALIKES = {
    "zero-width space": "casey\u200b",
    "bidi override": "ca\u202esey",
    "soft hyphen": "ca\u00adsey",
    "fullwidth": "\uff43\uff41\uff53\uff45\uff59",
    "trailing space": "casey ",
    "no-break space": "casey\u00a0smith",
    "line separator": "casey\u2028",
}


def _ed_ids(tmp_path, extra: str = "") -> tuple[Ed25519PrivateKey, Identities]:
    key = Ed25519PrivateKey.generate()
    (tmp_path / "idp.pem").write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    ids = write_identities(
        tmp_path / "ids.yaml", "jwt:\n  public_key: idp.pem\n  algorithms: [EdDSA]\n  audience: stopline\n" + extra
    )
    return key, Identities.load(ids)


def _claims(sub: str = "jules", roles: list | None = None, **more) -> dict:
    return {
        "sub": sub,
        "roles": ["reviewer"] if roles is None else roles,
        "aud": "stopline",
        "exp": int(time.time()) + 600,
        **more,
    }


# ---------------------------------------------------------------- principal names


@pytest.mark.parametrize("name", list(LOOKALIKES.values()), ids=list(LOOKALIKES))
def test_a_jwt_whose_principal_reads_as_another_is_refused(tmp_path, name):
    key, ids = _ed_ids(tmp_path)
    good = jwt.encode(_claims("casey"), key, algorithm="EdDSA")
    assert ids.verify(good).principal == "casey"
    with pytest.raises(PermissionError, match="`sub`"):
        ids.verify(jwt.encode(_claims(name), key, algorithm="EdDSA"))
    # (a session cannot be made with it either)
    with pytest.raises(PermissionError):
        ids.bind(jwt.encode(_claims(name), key, algorithm="EdDSA"))


@pytest.mark.parametrize("role", ["reviewer\u200b", "review\u202eer", "reviewer\n", "\uff52eviewer"])
def test_a_jwt_role_that_reads_as_another_is_refused_not_dropped(tmp_path, role):
    # (dropping it could widen a decision a policy makes on a role's absence: the token is refused)
    key, ids = _ed_ids(tmp_path)
    with pytest.raises(PermissionError, match="`roles`"):
        ids.verify(jwt.encode(_claims(roles=["customer_service", role]), key, algorithm="EdDSA"))


def test_a_jwt_principal_with_a_control_character_is_refused_before_any_route(tmp_path):
    key, ids = _ed_ids(tmp_path)
    for name in ("rita\x00", "rita\x1b[2K", "rita\r\nrole: admin", "ri\ud800ta"):
        with pytest.raises(PermissionError):
            ids.authenticate("Bearer " + jwt.encode(_claims(name), key, algorithm="EdDSA"))


def test_names_in_any_script_and_in_nfc_are_principals(tmp_path):
    key, ids = _ed_ids(tmp_path)
    for name in ("José", "Zoë Lee", "李小龙", "ops-bot@example.com", "auth0|5f7c8ec7c33c6c004bbafe82"):
        assert ids.verify(jwt.encode(_claims(name, roles=[name]), key, algorithm="EdDSA")).principal == name


@pytest.mark.parametrize("name", list(LOOKALIKES.values()), ids=list(LOOKALIKES))
def test_an_identities_file_naming_a_principal_that_reads_as_another_does_not_load(tmp_path, name):
    extra = f"  - principal: {json.dumps(name)}\n    roles: [reviewer]\n    sha256: {hash_token('tok-x')}\n"
    with pytest.raises(IdentityConfigError, match=r"tokens\[4\]: a principal or role .* write it one way only") as e:
        Identities.load(write_identities(tmp_path / "ids.yaml", extra))
    assert name not in str(e.value) and json.dumps(name) not in str(e.value)  # (/healthz shows it to anyone)
    role = f"  - principal: xavier\n    roles: [{json.dumps(name)}]\n    sha256: {hash_token('tok-x')}\n"
    with pytest.raises(IdentityConfigError, match=r"tokens\[4\]"):
        Identities.load(write_identities(tmp_path / "ids.yaml", role))


def test_two_spellings_of_one_principal_in_a_file_do_not_load(tmp_path):
    # `Casey` and `casey` are two callers to the server (a rollback's requester may cancel
    # it) yet one principal to every approval rule: the file must spell them alike
    extra = f"  - principal: Casey\n    roles: [reviewer]\n    sha256: {hash_token('tok-Casey')}\n"
    with pytest.raises(IdentityConfigError, match=r"tokens\[0\] and tokens\[4\] name one principal") as e:
        Identities.load(write_identities(tmp_path / "ids.yaml", extra))
    assert "asey" not in str(e.value)  # (/healthz shows it to anyone)
    # one principal with two tokens is what it always was
    same = f"  - principal: casey\n    roles: [reviewer]\n    sha256: {hash_token('tok-casey-2')}\n"
    ids = Identities.load(write_identities(tmp_path / "ids.yaml", same))
    assert ids.verify("tok-casey-2").principal == ids.verify(TOKENS["casey"][0]).principal == "casey"


def test_a_reload_to_a_file_with_a_lookalike_keeps_the_last_good_version(tmp_path):
    path = write_identities(tmp_path / "ids.yaml")
    store = IdentityStore(path)
    first = store.current
    write_identities(path, f'  - principal: "rita\\u200b"\n    roles: [reviewer]\n    sha256: {hash_token("t")}\n')
    r = store.reload_if_changed()
    assert r is not None and not r.ok and "U+200B" in (r.error or "")
    assert store.current is first
    with pytest.raises(PermissionError):
        store.current.verify("t")


# ---------------------------------------------------------------- which keys verify


def _rsa(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def _jwk(key, **extra) -> dict:
    return {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())), **extra}


def _jwks_ids(tmp_path, keys: list[dict], algs: str = "[RS256, PS256]") -> Identities:
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": keys}), encoding="utf-8")
    return Identities.load(
        write_identities(
            tmp_path / "ids.yaml", f"jwt:\n  jwks: jwks.json\n  algorithms: {algs}\n  audience: stopline\n"
        )
    )


def test_a_jwks_encryption_key_never_verifies_a_token(tmp_path):
    sig, enc, ops = _rsa(), _rsa(), _rsa()
    ids = _jwks_ids(
        tmp_path,
        [
            _jwk(sig, kid="sig", use="sig"),
            _jwk(enc, kid="enc", use="enc"),
            _jwk(ops, kid="ops", key_ops=["encrypt", "wrapKey"]),
            {"kty": "oct", "kid": "sym", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"},
        ],
    )
    for key, kid in ((enc, "enc"), (ops, "ops")):
        with pytest.raises(PermissionError, match="no single key"):
            ids.verify(jwt.encode(_claims(), key, algorithm="RS256", headers={"kid": kid}))
    with pytest.raises(PermissionError):
        ids.verify(
            jwt.encode(_claims(), "secret-secret-secret-secret-secret", algorithm="HS256", headers={"kid": "sym"})
        )
    assert ids.verify(jwt.encode(_claims(), sig, algorithm="RS256", headers={"kid": "sig"})).principal == "jules"
    # a token without `kid` is verified by the JWKS's one signature key (before: "no single key")
    assert ids.verify(jwt.encode(_claims(), sig, algorithm="RS256")).principal == "jules"


def test_a_jwk_that_names_its_alg_verifies_that_alg_only(tmp_path):
    key = _rsa()
    ids = _jwks_ids(tmp_path, [_jwk(key, kid="k1", alg="RS256")])
    assert ids.verify(jwt.encode(_claims(), key, algorithm="RS256", headers={"kid": "k1"})).principal == "jules"
    with pytest.raises(PermissionError):
        ids.verify(jwt.encode(_claims(), key, algorithm="PS256", headers={"kid": "k1"}))


def test_a_jwks_whose_keys_are_all_for_other_uses_does_not_load(tmp_path):
    with pytest.raises(IdentityConfigError, match="no key in it verifies signatures"):
        _jwks_ids(tmp_path, [_jwk(_rsa(), kid="enc", use="enc"), _jwk(_rsa(), kid="es", alg="ES256")])


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_an_rsa_key_under_2048_bits_is_not_used(tmp_path):
    weak = _rsa(1024)
    (tmp_path / "idp.pem").write_bytes(
        weak.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(IdentityConfigError, match="1024 bits"):
        Identities.load(write_identities(tmp_path / "ids.yaml", "jwt:\n  public_key: idp.pem\n  algorithms: [RS256]\n"))
    strong = _rsa()
    ids = _jwks_ids(tmp_path, [_jwk(weak, kid="weak"), _jwk(strong, kid="strong")])
    with pytest.raises(PermissionError):
        ids.verify(jwt.encode(_claims(), weak, algorithm="RS256", headers={"kid": "weak"}))
    assert ids.verify(jwt.encode(_claims(), strong, algorithm="RS256")).principal == "jules"


def test_a_session_made_with_a_key_that_is_no_longer_a_signature_key_ends(tmp_path):
    # the JWKS's key is re-published as an encryption key: sessions it verified end
    key = _rsa()
    ids = _jwks_ids(tmp_path, [_jwk(key, kid="k1")])
    caller, binding = ids.bind(jwt.encode(_claims(), key, algorithm="RS256", headers={"kid": "k1"}))
    assert ids.rebind(binding, caller.principal, list(caller.roles)) == caller
    other = _rsa()
    again = _jwks_ids(tmp_path, [_jwk(key, kid="k1", use="enc"), _jwk(other, kid="k2")])
    assert again.rebind(binding, caller.principal, list(caller.roles)) is None


# ---------------------------------------------------------------- files


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_an_identities_or_key_file_every_user_may_change_does_not_load(tmp_path):
    key, ids = _ed_ids(tmp_path)
    path, pem = tmp_path / "ids.yaml", tmp_path / "idp.pem"
    for p in (path, pem):
        p.chmod(0o666)
        with pytest.raises(IdentityConfigError, match=r"every user of this host \(mode 0666\): chmod o-w"):
            Identities.load(path)
        p.chmod(0o644)
    path.chmod(0o664)  # (group write: the operator's choice)
    assert Identities.load(path).verify(TOKENS["rita"][0]).principal == "rita"


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_a_reload_of_an_identities_file_made_world_writable_is_refused(tmp_path):
    path = write_identities(tmp_path / "ids.yaml")
    store = IdentityStore(path)
    write_identities(path, f"  - principal: mallory\n    roles: [reviewer]\n    sha256: {hash_token('tok-m')}\n")
    path.chmod(0o666)
    r = store.reload_if_changed()
    assert r is not None and not r.ok and "chmod o-w" in (r.error or "")
    with pytest.raises(PermissionError):
        store.current.verify("tok-m")
