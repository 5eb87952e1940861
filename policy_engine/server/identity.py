"""Who is calling: identity comes from authentication, never from a request body.

An identities file (YAML or JSON, ``stopline serve --identities FILE``)::

    tokens:                       # API tokens, stored hashed (sha256 hex of the token)
      - principal: casey
        roles: [customer_service]
        sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8
    jwt:                          # optional: signed JWTs, verified offline
      public_key: jwt.pub.pem     # a PEM public key, or
      jwks: jwks.json             # a JWKS file (the key chosen by the token's `kid`)
      algorithms: [RS256, ES256, EdDSA]
      issuer: https://idp.example # checked when given
      audience: stopline          # checked when given (without it: a warning, any `aud` taken)
      principal_claim: sub        # default sub
      roles_claim: roles          # default roles (a list of strings)

Paths are relative to the file. Nothing is fetched over the network. Only asymmetric
algorithms are accepted (no ``none``, no HMAC with a public key). A credential gives
the principal and its roles; ``Caller`` is what every handler sees.

The server keeps the file in an ``IdentityStore``: loaded at start (it must load), then
loaded again whenever it, or the key file it names, changes: a token removed from the file
is revoked, a rotated JWKS is used, without a restart. A version that does not load is
reported and never used (see ``IdentityStore``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ASYMMETRIC = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})
MAX_TOKEN = 8192
MAX_LEEWAY = 3600  #: seconds of clock skew a JWT's `exp`/`nbf` may be given at most


class IdentityConfigError(ValueError):
    """The identities file cannot be used (one line naming the file and the problem)."""


@dataclass(frozen=True)
class Caller:
    principal: str
    roles: tuple[str, ...]
    via: str  #: token | jwt


def hash_token(token: str) -> str:
    """The stored form of an API token (sha256 hex)."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh API token and its stored hash."""
    t = "stl_" + secrets.token_urlsafe(32)
    return t, hash_token(t)


def _name(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v.strip() or len(v) > 256:
        raise IdentityConfigError(f"{where}: a principal or role is a non-empty string of at most 256 characters")
    return v


def _roles(v: Any, where: str) -> tuple[str, ...]:
    if v is None:
        return ()
    if not isinstance(v, list):
        raise IdentityConfigError(f"{where}: `roles` is a list of strings")
    return tuple(_name(r, where) for r in v)


class Identities:
    """Verifies a bearer credential; ``authenticate(None)`` is None (anonymous)."""

    def __init__(self, tokens: dict[str, Caller], jwt_conf: dict | None = None,
                 sources: tuple[Path, ...] = ()) -> None:
        self._tokens = tokens
        self._jwt = jwt_conf
        self._fps: frozenset[str] | None = None  # the JWT keys' fingerprints (sessions), made when first asked
        self.sources = sources  #: the files it was read from: the identities file, then its key file

    def audience_warning(self) -> str | None:
        """One line when JWTs are verified without an ``audience``, else None: the token's
        ``aud`` is then not checked, and any token the key signs is taken, one the identity
        provider issued for another service (its API, its own audience) too."""
        if self._jwt is None or self._jwt["audience"] is not None:
            return None
        where = self.sources[0] if self.sources else "the identities file"
        return (f"{where}: jwt has no `audience`: every token the key signs is accepted, one issued for another "
                "service too; give `audience` (the `aud` this server's tokens carry)")

    @classmethod
    def load(cls, path: str | Path) -> Identities:
        import yaml

        p = Path(path)
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except OSError as e:
            raise IdentityConfigError(f"{p}: cannot read: {e.strerror or e}") from None
        except UnicodeDecodeError as e:
            raise IdentityConfigError(f"{p}: not UTF-8 (byte {e.start})") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
            raise IdentityConfigError(f"{p}{at}: not YAML: {getattr(e, 'problem', None) or e}") from None
        if not isinstance(data, dict):
            raise IdentityConfigError(f"{p}: the identities file is a mapping with `tokens` and/or `jwt`")
        extra = set(data) - {"tokens", "jwt"}
        if extra:
            raise IdentityConfigError(f"{p}: unknown key `{sorted(map(str, extra))[0]}` (expected `tokens`, `jwt`)")
        tokens: dict[str, Caller] = {}
        listed = data.get("tokens") or []
        if not isinstance(listed, list):
            raise IdentityConfigError(f"{p}: `tokens` is a list of `principal`, `roles`, `sha256` entries")
        for i, t in enumerate(listed):
            where = f"{p}: tokens[{i}]"
            if not isinstance(t, dict) or set(t) - {"principal", "roles", "sha256"} or "sha256" not in t:
                raise IdentityConfigError(f"{where}: expected `principal`, `roles` and `sha256` (the token's hash)")
            h = t["sha256"]
            if not isinstance(h, str) or len(h) != 64 or any(ch not in "0123456789abcdef" for ch in h.lower()):
                raise IdentityConfigError(f"{where}: `sha256` is the 64 hex digits of the token's SHA-256")
            if h.lower() in tokens:
                raise IdentityConfigError(f"{where}: the same token hash is listed twice")
            tokens[h.lower()] = Caller(_name(t.get("principal"), where), _roles(t.get("roles"), where), "token")
        jwt_conf = data.get("jwt")
        sources = [p]
        if jwt_conf is not None:
            jwt_conf = cls._load_jwt(p, jwt_conf)
            sources.append(jwt_conf.pop("source"))
        if not tokens and jwt_conf is None:
            raise IdentityConfigError(f"{p}: no tokens and no jwt: nobody could sign in")
        return cls(tokens, jwt_conf, tuple(sources))

    @staticmethod
    def _load_jwt(p: Path, conf: Any) -> dict:
        import jwt

        where = f"{p}: jwt"
        known = {"public_key", "jwks", "algorithms", "issuer", "audience", "principal_claim", "roles_claim", "leeway"}
        if not isinstance(conf, dict) or set(conf) - known:
            raise IdentityConfigError(f"{where}: expected keys among {', '.join(sorted(known))}")
        algs = conf.get("algorithms") or ["RS256", "ES256", "EdDSA"]
        if not isinstance(algs, list) or not algs or any(not isinstance(a, str) or a not in ASYMMETRIC for a in algs):
            raise IdentityConfigError(f"{where}: `algorithms` are asymmetric ({', '.join(sorted(ASYMMETRIC))})")
        if ("public_key" in conf) == ("jwks" in conf):
            raise IdentityConfigError(f"{where}: give exactly one of `public_key` (a PEM file) or `jwks` (a JWKS file)")
        for k in ("public_key", "jwks", "issuer"):
            if k in conf and (not isinstance(conf[k], str) or not conf[k]):
                raise IdentityConfigError(f"{where}: `{k}` is a non-empty string")
        aud = conf.get("audience")
        if aud is not None and not (isinstance(aud, str) and aud) and not (
                isinstance(aud, list) and aud and all(isinstance(a, str) and a for a in aud)):
            raise IdentityConfigError(f"{where}: `audience` is a string or a list of strings")
        for k in ("principal_claim", "roles_claim"):
            if k in conf and (not isinstance(conf[k], str) or not conf[k]):
                raise IdentityConfigError(f"{where}: `{k}` is the name of a claim (a non-empty string)")
        leeway = conf.get("leeway", 30)
        # (NaN or infinity would let an expired token through: `exp` is compared with now - leeway)
        if isinstance(leeway, bool) or not isinstance(leeway, (int, float)) or not 0 <= leeway <= MAX_LEEWAY:
            raise IdentityConfigError(f"{where}: `leeway` is a number of seconds from 0 to {MAX_LEEWAY}")
        out = {"algorithms": algs, "issuer": conf.get("issuer"), "audience": aud,
               "principal_claim": conf.get("principal_claim", "sub"), "roles_claim": conf.get("roles_claim", "roles"),
               "leeway": float(leeway), "key": None, "jwks": None}
        out["source"] = p.parent / str(conf["public_key"] if "public_key" in conf else conf["jwks"])
        try:
            if "public_key" in conf:
                text = (p.parent / str(conf["public_key"])).read_text(encoding="utf-8")
                from cryptography.hazmat.primitives.serialization import load_pem_public_key

                out["key"] = load_pem_public_key(text.encode())
            else:
                text = (p.parent / str(conf["jwks"])).read_text(encoding="utf-8")
                out["jwks"] = jwt.PyJWKSet.from_dict(json.loads(text))
        except OSError as e:
            raise IdentityConfigError(f"{where}: cannot read the key file: {e.strerror or e}") from None
        except Exception as e:  # noqa: BLE001 - a bad key file is a configuration error, one line
            raise IdentityConfigError(f"{where}: not a usable public key or JWKS: {e}") from None
        return out

    # ------------------------------------------------------------------ verification
    def authenticate(self, authorization: str | None) -> Caller | None:
        """The caller of an ``Authorization: Bearer ...`` header; None without one.
        Raises ``PermissionError`` for a credential that does not verify."""
        if not authorization:
            return None
        scheme, _, cred = authorization.partition(" ")
        cred = cred.strip()
        if scheme.lower() != "bearer" or not cred or len(cred) > MAX_TOKEN:
            raise PermissionError("expected `Authorization: Bearer <token>`")
        return self.verify(cred)

    def verify(self, cred: str) -> Caller:
        if cred.count(".") == 2 and self._jwt is not None:
            return self._verify_jwt(cred)[0]
        h = hash_token(cred)
        for stored, caller in self._tokens.items():  # constant time per entry
            if hmac.compare_digest(stored, h):
                return caller
        raise PermissionError("unknown or revoked token")

    # ------------------------------------------------------------------ sessions (the reviewer's page)
    def bind(self, cred: str) -> tuple[Caller, dict[str, Any]]:
        """Verify ``cred`` (``PermissionError`` if it does not) and say what a session
        signed in with it is bound to, never the credential itself: an API token by its
        stored hash (``{"token": SHA256}``), a JWT by the key that verified it under the
        file's `jwt` settings and by its expiry (``{"jwt": FINGERPRINT, "exp": SECONDS}``)."""
        if cred.count(".") == 2 and self._jwt is not None:
            caller, key, claims = self._verify_jwt(cred)
            return caller, {"jwt": self._jwt_fingerprint(key), "exp": int(claims["exp"])}
        return self.verify(cred), {"token": hash_token(cred)}

    def rebind(self, binding: Any, principal: Any, roles: Any) -> Caller | None:
        """The caller of a session bound by :meth:`bind` if this version of the identities
        still accepts it (the token's hash is still listed, with its principal; the JWT's
        key and `jwt` settings are unchanged), else None: revoked. (The binding comes from
        a signed cookie: only the server could have made it.)"""
        if not isinstance(binding, dict):
            return None
        h = binding.get("token")
        if isinstance(h, str):
            caller = self._tokens.get(h)
            return caller if caller is not None and caller.principal == principal else None
        fp = binding.get("jwt")
        if isinstance(fp, str) and self._jwt is not None and fp in self._jwt_fingerprints():
            if isinstance(principal, str) and isinstance(roles, list) and all(isinstance(r, str) for r in roles):
                return Caller(principal, tuple(roles), "jwt")
        return None

    def _jwt_fingerprint(self, key: Any) -> str:
        """A verification key and the `jwt` settings it is used under, as one digest."""
        c = self._jwt
        assert c is not None
        try:
            from cryptography.hazmat.primitives import serialization

            der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        except (AttributeError, TypeError, ValueError):  # not an asymmetric public key (never verifies anyway)
            der = repr(key).encode()
        settings = json.dumps([c["algorithms"], c["issuer"], c["audience"], c["principal_claim"], c["roles_claim"]])
        return hashlib.sha256(der + b"\0" + settings.encode()).hexdigest()

    def _jwt_fingerprints(self) -> frozenset[str]:
        fps = self._fps
        if fps is None:
            c = self._jwt
            assert c is not None
            keys = [c["key"]] if c["key"] is not None else [k.key for k in c["jwks"].keys]
            fps = self._fps = frozenset(self._jwt_fingerprint(k) for k in keys)
        return fps

    def _verify_jwt(self, cred: str) -> tuple[Caller, Any, dict]:
        import jwt

        c = self._jwt
        if c is None:  # pragma: no cover - called only when JWT verification is configured
            raise PermissionError("JWT verification is not configured")
        options: jwt.types.Options = {"require": ["exp", c["principal_claim"]], "verify_aud": c["audience"] is not None}
        try:
            key = c["key"]
            if key is None:
                kid = jwt.get_unverified_header(cred).get("kid")
                matches = [k for k in c["jwks"].keys if kid is None or k.key_id == kid]
                if len(matches) != 1:
                    raise PermissionError("no single key in the JWKS file matches the token's `kid`")
                key = matches[0].key
            claims = jwt.decode(cred, key, algorithms=c["algorithms"], audience=c["audience"], issuer=c["issuer"],
                                leeway=c["leeway"], options=options)
        except (jwt.PyJWTError, ValueError, TypeError) as e:  # a malformed token or a key of the wrong type
            raise PermissionError(f"the token does not verify: {e}") from None
        principal = claims.get(c["principal_claim"])
        roles = claims.get(c["roles_claim"], [])
        if not isinstance(principal, str) or not principal or len(principal) > 256:
            raise PermissionError(f"the token's `{c['principal_claim']}` is not a principal name")
        if not isinstance(roles, list) or any(not isinstance(r, str) or not r or len(r) > 256 for r in roles):
            raise PermissionError(f"the token's `{c['roles_claim']}` is not a list of role names")
        return Caller(principal, tuple(roles), "jwt"), key, claims


def _fingerprint(paths: tuple[Path, ...]) -> str:
    """What the identities were loaded from, by content (a file that cannot be read counts
    as changed: the reload then says why)."""
    h = hashlib.sha256()
    for p in paths:
        try:
            data = p.read_bytes()
        except OSError as e:
            data = f"<unreadable: {e}>".encode()
        h.update(str(p).encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()


@dataclass(frozen=True)
class IdentityReload:
    """The outcome of loading the identities file again."""

    ok: bool
    changed: bool  #: a new version is in use
    error: str | None  #: why the file was not used (one line naming the file)
    at: float  #: time.time() of the attempt


class IdentityStore:
    """The identities a server uses, kept current with their files.

    ``current`` is the ``Identities`` in use, replaced in one store when ``reload`` loads a
    new version (a request reads it once: it is checked against one version or the other,
    never a mix). ``reload_if_changed`` loads again only when the identities file or its key
    file changed by content (the server's poller calls it with the policy check).

    A version that does not load (bad YAML, a bad hash, a key file that is not a key, the
    file gone) is never used: the last good version stays in use, ``last_reload`` says why
    (``/healthz``), and the server logs it and counts it. A mistake in an edit therefore
    never opens the server to anyone; it also means a token being revoked by that edit
    stays valid until the file loads, which ``/healthz`` shows."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.current = Identities.load(self.path)  # raises IdentityConfigError: the first load must succeed
        self._fingerprint = _fingerprint(self.current.sources)
        self.last_reload: IdentityReload | None = None
        self._failed: str | None = None  # the fingerprint of the content that last failed to load
        self._lock = threading.Lock()

    def reload(self) -> IdentityReload:
        with self._lock:
            old = self._fingerprint
            try:
                new = Identities.load(self.path)
            except IdentityConfigError as e:
                r = IdentityReload(False, False, str(e), time.time())
            else:
                fp = _fingerprint(new.sources)
                self.current = new
                self._fingerprint = fp
                r = IdentityReload(True, fp != old, None, time.time())
            self.last_reload = r
            return r

    def reload_if_changed(self) -> IdentityReload | None:
        """Reload when a file it was loaded from changed; None when none did (or when the
        changed content is the one that last failed: reported once, not every poll)."""
        paths = self.current.sources
        fp = _fingerprint(paths)
        last = self.last_reload
        if fp == self._fingerprint and (last is None or last.ok):
            return None
        if last is not None and not last.ok and self._failed == fp:
            return None
        r = self.reload()
        self._failed = None if r.ok else fp
        return r
