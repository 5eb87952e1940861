"""Who is calling: identity comes from authentication, never from a request body.

An identities file (YAML or JSON, ``stopline serve --identities FILE``)::

    tokens:                       # API tokens, stored hashed (sha256 hex of the token)
      - principal: casey
        roles: [customer_service]
        sha256: 4b2c0d3c5f0e1f6c2f4c5e6b7a8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f809  # (new_token())
    jwt:                          # optional: signed JWTs, verified offline
      public_key: jwt.pub.pem     # a PEM public key, or
      jwks: jwks.json             # a JWKS file (the key chosen by the token's `kid`)
      algorithms: [RS256, ES256, EdDSA]
      issuer: https://idp.example # checked when given
      audience: stopline          # required: the `aud` this server's tokens carry (a string or a list)
      # accept_any_audience: true # instead of `audience`: any `aud` taken (warned at start and reload)
      principal_claim: sub        # default sub
      roles_claim: roles          # default roles (a list of strings)

Paths are relative to the file. Nothing is fetched over the network. Only asymmetric
algorithms are accepted (no ``none``, no HMAC with a public key); an RSA key is at least
2048 bits; of a JWKS, only the signature keys are used (not ``use: enc``, nor a
``key_ops`` without ``verify``, nor a symmetric ``oct`` key), each only with the ``alg``
it names. The file and its key file must not be writable by every user of the host.
A credential gives the principal and its roles; ``Caller`` is what every handler sees.
A principal or role name is written one way only (:func:`name_problem`): no invisible
characters (nor, in a JWT, control characters), no spaces at its ends, NFKC-normal; two
token principals of a file are never one name to the engine (``canonical_principal``)
without being the same.

The server keeps the file in an ``IdentityStore``: loaded at start (it must load), then
loaded again whenever it, or the key file it names, changes: a token removed from the file
is revoked, a rotated JWKS is used, without a restart. A version that does not load is
reported and never used (see ``IdentityStore``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..source import DEFAULT_IGNORABLE

ASYMMETRIC = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})
MAX_TOKEN = 8192
MAX_LEEWAY = 3600  #: seconds of clock skew a JWT's `exp`/`nbf` may be given at most
MIN_RSA_BITS = 2048  #: an RSA verification key shorter than this is refused (NIST SP 800-131A)
#: characters no one sees (Unicode's Default_Ignorable_Code_Point: zero-width spaces and
#: joiners, soft hyphen, bidi marks and overrides, tags, variation selectors)
_IGNORABLE_RE = re.compile("[" + "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in DEFAULT_IGNORABLE) + "]")


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


def name_problem(v: str, controls: bool = True) -> str | None:
    """Why ``v`` is not a principal or role name written one way only, else None: a name
    with a character no one sees (``casey\\u200b``, a bidi override), a line separator,
    a lone surrogate, a space at either end, or a form NFKC changes (fullwidth ``ｃａｓｅｙ``,
    a no-break space) reads as another name in a record, a log or a list of approvers.
    ``controls``: C0/C1 control characters too (a JWT's claims; an identities file may hold
    them, as it always could: the ledger refuses a NUL, and every display escapes them)."""
    if v != v.strip():
        return "begins or ends with a space"
    if v.isascii():  # (the common case, at every JWT and JWT session: ASCII is NFKC, and sees all but C0)
        bad = next((ch for ch in v if ch < " " or ch == "\x7f"), None) if controls and not v.isprintable() else None
    else:
        cats = ("Cf", "Zl", "Zp", "Cs", "Cc") if controls else ("Cf", "Zl", "Zp", "Cs")
        m = _IGNORABLE_RE.search(v)
        bad = m.group() if m else next((ch for ch in v if unicodedata.category(ch) in cats), None)
        if bad is None and not unicodedata.is_normalized("NFKC", v):
            return "is not in NFKC form (a fullwidth letter, a no-break space, a ligature: it reads as another name)"
    return None if bad is None else f"holds U+{ord(bad):04X}, a character no one sees"


def _name(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v.strip() or len(v) > 256:
        raise IdentityConfigError(f"{where}: a principal or role is a non-empty string of at most 256 characters")
    why = name_problem(v, controls=False)
    if why is not None:
        # (no name in the message: /healthz shows a reload's error to anyone)
        raise IdentityConfigError(f"{where}: a principal or role {why}: write it one way only")
    return v


def _not_world_writable(p: Path, what: str) -> None:
    """Refuse a file (or the file a link names) every user of the host may change: whoever
    can write the identities file can list a token of their own, and whoever can write its
    key file can sign a JWT for anyone. (Group write is the operator's choice; not checked.)"""
    if os.name != "posix":
        return
    try:
        mode = stat.S_IMODE(os.stat(p).st_mode)
    except OSError:
        return  # (reading it says why)
    if mode & 0o002:
        raise IdentityConfigError(f"{p}: {what} can be changed by every user of this host (mode {mode:04o}): "
                                  f"chmod o-w {p}")


def _weak(key: Any) -> bool:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS


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
        """One line when JWTs are verified without an ``audience`` (the file says
        ``accept_any_audience: true``; without either it does not load), else None: the
        token's ``aud`` is then not checked, and any token the key signs is taken, one the
        identity provider issued for another service (its API, its own audience) too."""
        if self._jwt is None or self._jwt["audience"] is not None:
            return None
        where = self.sources[0] if self.sources else "the identities file"
        return (f"{where}: jwt has `accept_any_audience: true`: every token the key signs is accepted, one issued "
                "for another service too; give `audience` (the `aud` this server's tokens carry) instead")

    @classmethod
    def load(cls, path: str | Path) -> Identities:
        import yaml

        p = Path(path)
        _not_world_writable(p, "the identities file")
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
        _one_spelling(p, [c.principal for c in tokens.values()])
        jwt_conf = data.get("jwt")
        sources = [p]
        if jwt_conf is not None:
            jwt_conf = cls._load_jwt(p, jwt_conf)
            if jwt_conf.pop("any_audience") is False and jwt_conf["audience"] is None:
                # (a token the identity provider issued for another service would be taken here)
                raise IdentityConfigError(
                    f"{p}{_line_of(p, 'jwt')}: jwt has no `audience`, so a token issued for another service would "
                    "be accepted: give `audience: <the aud of this server's tokens>` (or, to accept any, "
                    "`accept_any_audience: true`)")
            sources.append(jwt_conf.pop("source"))
        if not tokens and jwt_conf is None:
            raise IdentityConfigError(f"{p}: no tokens and no jwt: nobody could sign in")
        return cls(tokens, jwt_conf, tuple(sources))

    @staticmethod
    def _load_jwt(p: Path, conf: Any) -> dict:
        where = f"{p}: jwt"
        known = {"public_key", "jwks", "algorithms", "issuer", "audience", "accept_any_audience", "principal_claim",
                 "roles_claim", "leeway"}
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
        any_aud = conf.get("accept_any_audience", False)
        if not isinstance(any_aud, bool):
            raise IdentityConfigError(f"{where}: `accept_any_audience` is true or false")
        if any_aud and aud is not None:
            raise IdentityConfigError(f"{where}: give `audience` or `accept_any_audience: true`, not both")
        for k in ("principal_claim", "roles_claim"):
            if k in conf and (not isinstance(conf[k], str) or not conf[k]):
                raise IdentityConfigError(f"{where}: `{k}` is the name of a claim (a non-empty string)")
        leeway = conf.get("leeway", 30)
        # (NaN or infinity would let an expired token through: `exp` is compared with now - leeway)
        if isinstance(leeway, bool) or not isinstance(leeway, (int, float)) or not 0 <= leeway <= MAX_LEEWAY:
            raise IdentityConfigError(f"{where}: `leeway` is a number of seconds from 0 to {MAX_LEEWAY}")
        out = {"algorithms": algs, "issuer": conf.get("issuer"), "audience": aud,
               "principal_claim": conf.get("principal_claim", "sub"), "roles_claim": conf.get("roles_claim", "roles"),
               "leeway": float(leeway), "key": None, "jwks": None, "any_audience": any_aud}
        out["source"] = src = p.parent / str(conf["public_key"] if "public_key" in conf else conf["jwks"])
        _not_world_writable(src, "the jwt key file")
        try:
            text = src.read_text(encoding="utf-8")
            if "public_key" in conf:
                from cryptography.hazmat.primitives.serialization import load_pem_public_key

                out["key"] = load_pem_public_key(text.encode())
            else:
                out["jwks"] = _signature_keys(json.loads(text), algs)
        except OSError as e:
            raise IdentityConfigError(f"{where}: cannot read the key file: {e.strerror or e}") from None
        except Exception as e:  # noqa: BLE001 - a bad key file is a configuration error, one line
            raise IdentityConfigError(f"{where}: not a usable public key or JWKS: {e}") from None
        if out["key"] is not None and _weak(out["key"]):
            raise IdentityConfigError(f"{where}: the RSA key has {out['key'].key_size} bits; at least {MIN_RSA_BITS}")
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
                # (a session signed in before names were checked, under a --session-key, ends)
                if all(name_problem(n) is None for n in (principal, *roles)):
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
            keys = [c["key"]] if c["key"] is not None else [k.key for k, _ in c["jwks"]]
            fps = self._fps = frozenset(self._jwt_fingerprint(k) for k in keys)
        return fps

    def _verify_jwt(self, cred: str) -> tuple[Caller, Any, dict]:
        import jwt

        c = self._jwt
        if c is None:  # pragma: no cover - called only when JWT verification is configured
            raise PermissionError("JWT verification is not configured")
        options: jwt.types.Options = {"require": ["exp", c["principal_claim"]], "verify_aud": c["audience"] is not None}
        try:
            key, algs = c["key"], c["algorithms"]
            if key is None:
                header = jwt.get_unverified_header(cred)
                kid, alg = header.get("kid"), header.get("alg")
                # (a key that names its `alg` is used with that one only, and chosen by it)
                matches = [(k, a) for k, a in c["jwks"] if (kid is None or k.key_id == kid) and a in (None, alg)]
                if len(matches) != 1:
                    raise PermissionError("no single key in the JWKS file matches the token's `kid` and `alg`")
                key, named = matches[0][0].key, matches[0][1]
                algs = [named] if named is not None else algs
            claims = jwt.decode(cred, key, algorithms=algs, audience=c["audience"], issuer=c["issuer"],
                                leeway=c["leeway"], options=options)
        except (jwt.PyJWTError, ValueError, TypeError) as e:  # a malformed token or a key of the wrong type
            raise PermissionError(f"the token does not verify: {e}") from None
        principal = claims.get(c["principal_claim"])
        roles = claims.get(c["roles_claim"], [])
        if not isinstance(principal, str) or not principal or len(principal) > 256:
            raise PermissionError(f"the token's `{c['principal_claim']}` is not a principal name")
        if not isinstance(roles, list) or any(not isinstance(r, str) or not r or len(r) > 256 for r in roles):
            raise PermissionError(f"the token's `{c['roles_claim']}` is not a list of role names")
        # (refused, never normalized: normalizing would make `ｃａｓｅｙ` the principal `casey`)
        for claim, v in ((c["principal_claim"], principal), *((c["roles_claim"], r) for r in roles)):
            why = name_problem(v)
            if why is not None:
                raise PermissionError(f"the token's `{claim}` {why}")
        return Caller(principal, tuple(roles), "jwt"), key, claims


def _line_of(p: Path, key: str) -> str:
    """``:LINE`` of the top-level ``key`` of the file (read again: only for a message), or ""."""
    import yaml

    try:
        node = yaml.compose(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return ""
    for k, _ in getattr(node, "value", None) or ():
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return f":{k.start_mark.line + 1}"
    return ""


def _one_spelling(p: Path, principals: list[str]) -> None:
    """Two token principals the engine counts as one person (``canonical_principal``: case,
    width, spaces and invisible characters aside) must be the same name: ``Casey`` and
    ``casey`` would be two callers to the server (a rollback's requester, a cancel) and one
    to every approval rule."""
    from ..engine.util import canonical_principal

    seen: dict[str, tuple[int, str]] = {}
    for i, name in enumerate(principals):
        j, other = seen.setdefault(canonical_principal(name), (i, name))
        if other != name:  # (indices, not names: /healthz shows a reload's error to anyone)
            raise IdentityConfigError(f"{p}: tokens[{j}] and tokens[{i}] name one principal in two spellings (they "
                                      "differ in case, width or spaces only; the engine counts them as one): spell "
                                      "them alike")


def _signature_keys(jwks: Any, algs: list[str]) -> list[tuple[Any, str | None]]:
    """The keys of a JWKS that may verify a token signed with one of ``algs``, each with the
    `alg` it names (None: any of ``algs`` its type allows). Not used: a key for encryption
    (``use: enc``; ``key_ops`` without ``verify``), a symmetric one (``oct``), one naming an
    `alg` not in ``algs``, an RSA key under :data:`MIN_RSA_BITS`, one PyJWT cannot read."""
    import jwt

    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise ValueError("a JWKS is an object with a `keys` list")
    out: list[tuple[Any, str | None]] = []
    for d in jwks["keys"]:
        if not isinstance(d, dict) or d.get("kty") not in ("RSA", "EC", "OKP") or d.get("use", "sig") != "sig":
            continue
        ops, alg = d.get("key_ops"), d.get("alg")
        if (ops is not None and (not isinstance(ops, list) or "verify" not in ops)) or (
                alg is not None and alg not in algs):
            continue
        try:
            k = jwt.PyJWK(d)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError):
            continue
        if not _weak(k.key):
            out.append((k, alg))
    if not out:
        raise ValueError(f"no key in it verifies signatures with {', '.join(algs)}")
    return out


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
