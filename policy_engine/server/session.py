"""The reviewer's session (``/ui``): a signed cookie that is not the credential.

Signing in verifies the credential once. The session cookie then holds what the session
is bound to (``Identities.bind``: an API token's stored SHA-256, or for a JWT the key that
verified it, its expiry, the principal and the roles), a random session id, and when it
was issued and when it ends (at most :data:`SESSION_TTL` later, never after a JWT's
``exp``), signed with HMAC-SHA256 under a key only the server holds. On every request the
signature and the times are checked and the identities in use are asked whether the
binding still stands (``Identities.rebind``): a token removed from the identities file,
or a JWT key that left it, ends the session at its next request. A copied cookie never
gives the token itself, so it cannot be used against the API.

Signing out records the session id until the session's own end in a :class:`SignOuts`:
with a ledger, its table ``ledger_ended_sessions`` (:class:`LedgerSignOuts`), which every
worker and replica on that ledger reads at every request with a session (one primary-key
lookup), so a copy of the cookie made before is refused everywhere; without a ledger, this
process's memory (:class:`LocalSignOuts`). A sign-out is not a domain event: it is not an
entry of the hash-chained log, and its rows are pruned once the session would have ended.
Replicas' clocks may disagree: the lookup also reads the database's clock, and a session
is over once either clock passes its end, and a row is pruned only once both the pruning
server's clock and the database's have passed its end (and a margin); so a replica whose
clock is ahead cannot prune the row of a session another still takes, and one whose clock
is behind cannot take a session whose row was pruned.

Forms carry a CSRF token that is an HMAC of the session id; the sign-in form, before
there is a session, one that is an HMAC of a random value held in a cookie of its own
(:data:`LOGIN_COOKIE`, SameSite=Strict, for ``/ui/login`` only).

The key is random per server start unless given: ``stopline serve --workers N`` hands one
key to its workers, and ``--session-key FILE`` (:func:`load_session_key`) reads it from a
file, so separate replicas share sessions. A file may list several keys, one a line: the
first signs, every one is accepted (a rotation across replicas without signing anyone out:
add the new key second, restart every replica, move it first, restart, drop the old one).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .identity import Caller, Identities

COOKIE = "stopline_session"
LOGIN_COOKIE = "stopline_login"
SESSION_TTL = 12 * 3600  #: seconds a session lasts at most after sign-in
MAX_COOKIE = 3800  #: a session cookie longer than this would be dropped by browsers (4 KiB with its attributes)
_NONCE_LEN = 43  # secrets.token_urlsafe(32)
_SID_MAX = 64  # characters of a session id at most (``ledger_ended_sessions.sid``; one made here has 22)
_URLSAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
MIN_KEY = 32  #: bytes a session key has at least
_MAX_KEY_FILE = 4096


class SessionKeyError(ValueError):
    """A session key file cannot be used (one line naming the file and the problem)."""


def load_session_key(path: str | os.PathLike[str]) -> tuple[bytes, ...]:
    """The keys of a session key file: hex digits (at least 64, i.e. 32 bytes), one key a
    line, the first the one that signs (blank lines and ``#`` comments are skipped). The
    file must be a regular file that only its owner can read or change (mode 0600 or 0400,
    as ssh asks of a private key), owned by the user the server runs as (or root: a file
    another user owns is one that user can change), since whoever holds the key can make a
    session for any token the identities file lists. A UTF-8 byte order mark (an editor's)
    is skipped. Raises :class:`SessionKeyError`."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # (a FIFO must not hang the start)
    except OSError as e:
        raise SessionKeyError(f"cannot read session key file {path}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SessionKeyError(f"session key file {path} is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if os.name == "posix" and mode & 0o077:
            raise SessionKeyError(f"session key file {path} can be read or changed by other users (mode "
                                  f"{mode:04o}): make it readable by its owner only (chmod 600 {path})")
        if os.name == "posix" and st.st_uid not in (os.geteuid(), 0):
            raise SessionKeyError(f"session key file {path} is owned by another user (uid {st.st_uid}), who can "
                                  f"change it: make it owned by the user the server runs as (uid {os.geteuid()}) "
                                  "or root")
        if st.st_size > _MAX_KEY_FILE:
            raise SessionKeyError(f"{path} is not a session key file (too large)")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(_MAX_KEY_FILE + 1)
    except OSError as e:
        raise SessionKeyError(f"cannot read session key file {path}: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if len(data) > _MAX_KEY_FILE:
        raise SessionKeyError(f"{path} is not a session key file (too large)")
    if data.startswith(b"\xef\xbb\xbf"):  # (a UTF-8 byte order mark, as some editors save)
        data = data[3:]
    try:
        lines = [ln.strip() for ln in data.decode("ascii").splitlines()]
    except UnicodeDecodeError:
        raise SessionKeyError(f"{path} is not a session key file (not ASCII hex digits)") from None
    keys: list[bytes] = []
    for n, ln in enumerate(lines, 1):
        if not ln or ln.startswith("#"):
            continue
        try:
            key = bytes.fromhex(ln)
        except ValueError:
            raise SessionKeyError(f"{path}:{n}: not a session key (expected hex digits, e.g. from "
                                  "`openssl rand -hex 32`)") from None
        if len(key) < MIN_KEY:
            raise SessionKeyError(f"{path}:{n}: a session key is at least {MIN_KEY} bytes ({2 * MIN_KEY} hex "
                                  f"digits); this one has {len(key)}")
        keys.append(key)
    if not keys:
        raise SessionKeyError(f"{path} holds no session key (expected {2 * MIN_KEY} or more hex digits, e.g. "
                              "from `openssl rand -hex 32`)")
    return tuple(keys)


class SignOuts(Protocol):
    """Where sign-outs are kept: a session id is refused from its sign-out until ``until``
    (the session's own end, Unix seconds), after which its cookie has run out anyway.
    ``ended(sid, exp)`` is also true once the store's own clock has passed ``exp`` (a
    shared store's clock: see :class:`LedgerSignOuts`)."""

    def ended(self, sid: str, exp: int | None = None) -> bool: ...

    def end(self, sid: str, until: int, now: float) -> None: ...


class LocalSignOuts:
    """Sign-outs in this process's memory (a server without a ledger): another worker or
    replica does not see them."""

    def __init__(self) -> None:
        self._ended: dict[str, int] = {}  # session id -> its end
        self._lock = threading.Lock()

    def ended(self, sid: str, exp: int | None = None) -> bool:
        return sid in self._ended  # (one process, one clock: the caller's)

    def end(self, sid: str, until: int, now: float) -> None:
        with self._lock:
            for s in [s for s, exp in self._ended.items() if exp <= now]:
                del self._ended[s]
            self._ended[sid] = until


class LedgerSignOuts:
    """Sign-outs in the ledger's database (``ledger_ended_sessions``), which every worker and
    replica on that ledger shares: :meth:`ended` is one primary-key lookup
    (``Ledger.query_one``: one round trip); :meth:`end` writes the row and prunes the rows
    whose session has run out, in one transaction under the append lock (a sign-out is
    rare). The table is the ledger's (``stopline ledger init`` makes it); on a ledger made
    before it, the server makes it at start if its database role may create tables, and
    otherwise does not start (``SchemaError``, naming the table). Not entries: the
    hash-chained log records domain events, and a sign-out is none. A ledger error
    propagates (``LedgerUnavailable``): a session whose sign-out cannot be checked is not
    taken."""

    #: the database's clock, in Unix seconds (one clock for every replica on the ledger)
    _DB_NOW = {"sqlite": "CAST(strftime('%s', 'now') AS INTEGER)",
               "postgresql": "CAST(floor(extract(epoch FROM clock_timestamp())) AS BIGINT)"}
    #: seconds a row is kept past its session's end (by the database's clock and the pruning
    #: server's, whichever is behind)
    PRUNE_MARGIN = 300

    def __init__(self, ledger: Any) -> None:
        from ..ledger import schema

        self._ledger = ledger
        self._t = schema.ended_sessions
        self._now_sql = self._DB_NOW["postgresql" if ledger.backend == "postgresql" else "sqlite"]
        # one statement, one round trip: the sign-out's row, and the database's clock
        self._lookup = f"SELECT (SELECT 1 FROM ledger_ended_sessions WHERE sid = ?), {self._now_sql}"
        # a ledger made before the table: made here if this role may (else one line naming
        # it and `stopline ledger init`); when it exists, one catalog read, no lock, no DDL
        ledger.ensure_tables([schema.ended_sessions])

    def ended(self, sid: str, exp: int | None = None) -> bool:
        """``sid`` was signed out, or (given its end ``exp``) the database's clock has passed
        it: a replica whose own clock is behind does not take a session whose row another
        replica may have pruned."""
        row = self._ledger.query_one(self._lookup, (sid,))
        if row is None or row[0] is not None:
            return True
        return exp is not None and int(row[1]) >= exp

    def end(self, sid: str, until: int, now: float) -> None:
        from sqlalchemy import delete, insert, select, text

        t = self._t

        def write(c: Any) -> None:
            # pruned by the clock that is behind, this server's or the database's: a server
            # whose clock runs ahead does not delete the row of a session others still take
            db_now = int(c.execute(text(f"SELECT {self._now_sql}")).scalar_one())
            c.execute(delete(t).where(t.c.ended_until <= min(int(now), db_now) - self.PRUNE_MARGIN))
            if c.execute(select(t.c.sid).where(t.c.sid == sid)).first() is None:
                c.execute(insert(t).values(sid=sid, ended_until=until))

        self._ledger.transact(write)

    def count(self) -> int:
        """Rows kept (for tests and operators)."""
        row = self._ledger.query_one("SELECT count(*) FROM ledger_ended_sessions")
        return int(row[0]) if row else 0


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
    def __init__(self, key: bytes | Sequence[bytes], ttl: int = SESSION_TTL, clock: Callable[[], float] = time.time,
                 signouts: SignOuts | None = None) -> None:
        keys = (key,) if isinstance(key, (bytes, bytearray)) else tuple(key)
        if not keys or any(len(k) < MIN_KEY for k in keys):
            raise ValueError(f"a session key is at least {MIN_KEY} bytes")
        self._keys = tuple(bytes(k) for k in keys)  # the first signs; every one is accepted
        self.ttl = ttl
        self.clock = clock
        self.signouts: SignOuts = signouts if signouts is not None else LocalSignOuts()

    def _mac(self, purpose: bytes, data: bytes, key: bytes | None = None) -> str:
        return _b64(hmac.new(key or self._keys[0], purpose + b"\0" + data, hashlib.sha256).digest())

    def _token(self, purpose: bytes, data: bytes, key: bytes | None = None) -> str:
        """A form's CSRF token (hex, as the forms have always carried)."""
        return hmac.new(key or self._keys[0], purpose + b"\0" + data, hashlib.sha256).hexdigest()

    def _token_ok(self, given: str, purpose: bytes, data: bytes) -> bool:
        """``given`` is the token of ``data`` under one of the keys (a page rendered by a
        replica that signs with another key of the file)."""
        ok = False
        for k in self._keys:  # (every key, so the time does not say which one matched)
            ok |= _same(given, self._token(purpose, data, k))
        return ok

    # ------------------------------------------------------------------ sessions
    def issue(self, ids: Identities, credential: str) -> tuple[Caller, str]:
        """Verify ``credential`` (``PermissionError`` if it does not) and make the cookie
        value of a new session for it."""
        caller, binding = ids.bind(credential)
        now = int(self.clock())
        exp = now + self.ttl
        if "exp" in binding:
            exp = min(exp, int(binding["exp"]))
        if exp <= now:  # (a JWT past its `exp`, taken within the leeway: its session would be over at once, and
            # the reviewer sent back to sign in without a word)
            raise PermissionError("the token has expired (its `exp` has passed): sign in with a fresh one")
        body: dict[str, Any] = {"sid": secrets.token_urlsafe(16), "iat": now, "exp": exp, "bind": binding,
                                "p": caller.principal}
        if caller.via == "jwt":  # (a token's roles are read from the identities file at every request)
            body["r"] = list(caller.roles)
        payload = _b64(json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode())
        return caller, f"{payload}.{self._mac(b'session', payload.encode())}"

    def resume(self, ids: Identities | None, cookie: str | None) -> Session | None:
        """The session a cookie value carries, if it is signed by one of this server's keys,
        has not run out nor been signed out, and the identities in use still accept its
        binding; else None. Asks the sign-outs (the ledger: one lookup) only for a cookie
        whose signature and times hold; a ledger error propagates."""
        if ids is None:
            return None
        body = self._signed(cookie)
        if body is None:
            return None
        sid, exp, binding = body["sid"], body["exp"], body["bind"]
        if self.signouts.ended(sid, exp):
            return None
        caller = ids.rebind(binding, body.get("p"), body.get("r"))
        if caller is None:
            return None
        return Session(caller, sid, exp, self._token(b"csrf", sid.encode()))

    def _signed(self, cookie: str | None) -> dict | None:
        """The body of a session cookie signed by one of this server's keys that has not run
        out (its session id one this server makes), else None. Sign-outs not asked."""
        if not cookie or len(cookie) > MAX_COOKIE or cookie.count(".") != 1:
            return None
        payload, mac = cookie.split(".")
        raw = payload.encode("utf-8", "surrogateescape")
        ok = False
        for k in self._keys:
            ok |= _same(mac, self._mac(b"session", raw, k))
        if not ok:
            return None
        try:
            body = json.loads(_unb64(payload))
            sid, iat, exp = body["sid"], body["iat"], body["exp"]
        except (ValueError, KeyError, TypeError):  # (signed by us: only an older format could get here)
            return None
        if "bind" not in body:
            return None
        if not isinstance(sid, str) or not isinstance(iat, int) or not isinstance(exp, int):
            return None
        if not 0 < len(sid) <= _SID_MAX or not _URLSAFE.issuperset(sid):
            return None  # (not a session id this server makes: one its sign-out could not record)
        if self.clock() >= exp:
            return None
        return body

    def end(self, session: Session) -> None:
        """Sign out: the session is over wherever its sign-outs are seen (every worker and
        replica on the ledger; without one, this process), even if its cookie was copied."""
        self.signouts.end(session.sid, session.exp, self.clock())

    def end_cookie(self, cookie: str | None) -> bool:
        """End the session a cookie value carries, as :meth:`end` does, whether or not the
        identities still accept it (a token removed, then given back, must not bring a
        replaced session back): a sign-in over a session ends the one before. False when
        the value is no session of this server's (unsigned, run out): nothing to end."""
        body = self._signed(cookie)
        if body is None:
            return False
        self.signouts.end(body["sid"], body["exp"], self.clock())
        return True

    def csrf_ok(self, session: Session, given: str) -> bool:
        return self._token_ok(given, b"csrf", session.sid.encode())

    # ------------------------------------------------------------------ the sign-in form
    def message_token(self, session: Session, msg: str) -> str:
        """The token that vouches for a message the server put in a redirect for this
        session (``?msg=...&sig=...``): a page shows a message only with it, so a link
        someone else made cannot show a reviewer words the server never said."""
        return self._token(b"msg", session.sid.encode() + b"\0" + msg.encode("utf-8", "surrogateescape"))

    def message_ok(self, session: Session, msg: str, given: str | None) -> bool:
        return given is not None and self._token_ok(
            given, b"msg", session.sid.encode() + b"\0" + msg.encode("utf-8", "surrogateescape"))

    @staticmethod
    def new_login_nonce() -> str:
        return secrets.token_urlsafe(32)

    @staticmethod
    def is_login_nonce(v: str | None) -> bool:
        return v is not None and len(v) == _NONCE_LEN and all(c.isascii() and (c.isalnum() or c in "-_") for c in v)

    def login_csrf(self, nonce: str) -> str:
        return self._token(b"login", nonce.encode())

    def login_ok(self, nonce: str | None, given: str) -> bool:
        return self.is_login_nonce(nonce) and self._token_ok(given, b"login", (nonce or "").encode())
