"""The reviewer's session (``/ui``): a signed cookie that is not the credential.

Signing in verifies the credential once. The session cookie then holds what the session
is bound to (``Identities.bind``: an API token's stored SHA-256, or for a JWT the key that
verified it, its expiry, the principal and the roles), a random session id, and when it
was issued and when it ends (at most :data:`SESSION_TTL` later, never after a JWT's
``exp``), signed with HMAC-SHA256 under a key only the server holds. On every request the
signature and the times are checked and the identities in use are asked whether the
binding still stands (``Identities.rebind``): a token removed from the identities file,
or a JWT key that left it, ends the session at its next request. Signing out ends the
session in this process. A copied cookie never gives the token itself, so it cannot be
used against the API.

Forms carry a CSRF token that is an HMAC of the session id; the sign-in form, before
there is a session, one that is an HMAC of a random value held in a cookie of its own
(:data:`LOGIN_COOKIE`, SameSite=Strict, for ``/ui/login`` only).

The key is random per server start unless given (``ServerConfig.session_key``: ``stopline
serve --workers N`` hands one key to its workers so a session is good in all of them).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .identity import Caller, Identities

COOKIE = "stopline_session"
LOGIN_COOKIE = "stopline_login"
SESSION_TTL = 12 * 3600  #: seconds a session lasts at most after sign-in
MAX_COOKIE = 3800  #: a session cookie longer than this would be dropped by browsers (4 KiB with its attributes)
_NONCE_LEN = 43  # secrets.token_urlsafe(32)


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _same(given: str, expected: str) -> bool:
    """Compared as bytes in constant time (a form may send any text)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


@dataclass(frozen=True)
class Session:
    caller: Caller
    sid: str
    exp: int
    csrf: str  #: the token the session's forms carry


class Sessions:
    def __init__(self, key: bytes, ttl: int = SESSION_TTL, clock: Callable[[], float] = time.time) -> None:
        if len(key) < 32:
            raise ValueError("a session key is at least 32 bytes")
        self._key = key
        self.ttl = ttl
        self.clock = clock
        self._ended: dict[str, int] = {}  # session id -> its end (signed out here before it ran out)
        self._lock = threading.Lock()

    def _mac(self, purpose: bytes, data: bytes) -> str:
        return _b64(hmac.new(self._key, purpose + b"\0" + data, hashlib.sha256).digest())

    def _token(self, purpose: bytes, data: bytes) -> str:
        """A form's CSRF token (hex, as the forms have always carried)."""
        return hmac.new(self._key, purpose + b"\0" + data, hashlib.sha256).hexdigest()

    # ------------------------------------------------------------------ sessions
    def issue(self, ids: Identities, credential: str) -> tuple[Caller, str]:
        """Verify ``credential`` (``PermissionError`` if it does not) and make the cookie
        value of a new session for it."""
        caller, binding = ids.bind(credential)
        now = int(self.clock())
        exp = now + self.ttl
        if "exp" in binding:
            exp = min(exp, int(binding["exp"]))
        body: dict[str, Any] = {"sid": secrets.token_urlsafe(16), "iat": now, "exp": exp, "bind": binding,
                                "p": caller.principal}
        if caller.via == "jwt":  # (a token's roles are read from the identities file at every request)
            body["r"] = list(caller.roles)
        payload = _b64(json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode())
        return caller, f"{payload}.{self._mac(b'session', payload.encode())}"

    def resume(self, ids: Identities | None, cookie: str | None) -> Session | None:
        """The session a cookie value carries, if it is this server's, has not ended, and
        the identities in use still accept its binding; else None."""
        if ids is None or not cookie or len(cookie) > MAX_COOKIE or cookie.count(".") != 1:
            return None
        payload, mac = cookie.split(".")
        if not _same(mac, self._mac(b"session", payload.encode("utf-8", "surrogateescape"))):
            return None
        try:
            body = json.loads(_unb64(payload))
            sid, iat, exp, binding = body["sid"], body["iat"], body["exp"], body["bind"]
        except (ValueError, KeyError, TypeError):  # (signed by us: only an older format could get here)
            return None
        if not isinstance(sid, str) or not isinstance(iat, int) or not isinstance(exp, int):
            return None
        if self.clock() >= exp or sid in self._ended:
            return None
        caller = ids.rebind(binding, body.get("p"), body.get("r"))
        if caller is None:
            return None
        return Session(caller, sid, exp, self._token(b"csrf", sid.encode()))

    def end(self, session: Session) -> None:
        """Sign out: the session is over in this process even if its cookie was copied."""
        now = self.clock()
        with self._lock:
            for sid in [s for s, exp in self._ended.items() if exp <= now]:
                del self._ended[sid]
            self._ended[session.sid] = session.exp

    @staticmethod
    def csrf_ok(session: Session, given: str) -> bool:
        return _same(given, session.csrf)

    # ------------------------------------------------------------------ the sign-in form
    @staticmethod
    def new_login_nonce() -> str:
        return secrets.token_urlsafe(32)

    @staticmethod
    def is_login_nonce(v: str | None) -> bool:
        return v is not None and len(v) == _NONCE_LEN and all(c.isascii() and (c.isalnum() or c in "-_") for c in v)

    def login_csrf(self, nonce: str) -> str:
        return self._token(b"login", nonce.encode())

    def login_ok(self, nonce: str | None, given: str) -> bool:
        return self.is_login_nonce(nonce) and _same(given, self.login_csrf(nonce or ""))
