"""The ledger's entries as Python sees them (``Entry``, ``NewEntry``, ``History``, the
stored time format) and what the reading, writing and opening halves of the ``Ledger``
share: the table aliases, the column lists, the driver-error translation (``_db``)."""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import exc as sa_exc

from ..timestamps import format_micros
from . import schema
from .canonical import leaf_data, parse_body
from .errors import InvalidEntry, InvalidQuery, LedgerError, LedgerUnavailable

E, L, N, H = schema.entries, schema.links, schema.nodes, schema.heads
DURABILITY = ("full", "normal")
_E_COLS = ("seq", "id", "kind", "workflow", "key", "links", "body", "time", "prev", "hash")
_MAX_LINKS = 64
_PG_MIGRATION_LOCK = 0x5710_1E5E

BUSY_SLICE = 0.1  #: seconds of one of SQLite's busy waits for the write lock (see `begin_immediate`)


def begin_immediate(cur: Any, full: int) -> None:
    """``BEGIN IMMEDIATE`` on a SQLite cursor: the write lock, waited for as long as the
    connection's busy timeout ``full`` (ms: the ledger's ``lock_timeout``) says, but in slices of
    ``BUSY_SLICE`` with Python between them. SQLite's busy handler sleeps in C, where Python
    cannot act on a signal: a Ctrl-C during a wait behind another writer was acted on only
    once the whole wait (a minute by default) was over. Raises what ``BEGIN IMMEDIATE``
    raises (``sqlite3.OperationalError: database is locked`` at the end of the wait); the
    connection's busy timeout is as it was afterwards."""
    deadline = time.monotonic() + full / 1000
    try:
        while True:
            left = deadline - time.monotonic()
            cur.execute(f"PRAGMA busy_timeout={max(1, int(min(left, BUSY_SLICE) * 1000))}")
            try:
                cur.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as e:
                if left <= BUSY_SLICE or ("locked" not in str(e) and "busy" not in str(e)):
                    raise
    finally:
        cur.execute(f"PRAGMA busy_timeout={full}")


def format_time(t: datetime) -> str:
    """RFC 3339 UTC with microseconds and ``Z``: the stored, hashed form of an entry's time."""
    if not isinstance(t, datetime):  # (a string or a number was an AttributeError)
        raise InvalidEntry(f"an entry time is a timezone-aware datetime, not a {type(t).__name__}")
    if t.tzinfo is None or t.utcoffset() is None:
        raise InvalidEntry("an entry time must be timezone-aware")
    try:
        return format_micros(t)
    except OverflowError:  # (0001-01-01T00:00+05:00 is in year 0 in UTC: was an OverflowError)
        raise InvalidEntry(f"an entry time must fall within the years 1-9999 in UTC, not {t.isoformat()}") from None


@dataclass(frozen=True)
class Entry:
    """One recorded fact. ``hash`` is the hex RFC 6962 leaf hash of its canonical form."""

    seq: int
    id: str
    kind: str
    body: Any = field(compare=False, repr=False)
    body_json: str
    workflow: str | None
    links: tuple[str, ...]
    key: str | None
    time: str
    prev: str
    hash: str

    @classmethod
    def _unparsed(cls, **fields: Any) -> Entry:
        """An entry whose ``body`` is parsed from ``body_json`` when first read (the writer
        makes its entries so: an appender that never reads the body does not pay the parse)."""
        e = object.__new__(cls)
        e.__dict__.update(fields)  # (a frozen dataclass: its fields are plain instance attributes)
        return e

    def top(self, name: str, default: Any = None) -> Any:
        """The body's top-level field `name` (`default` when it has none). An entry just
        written from a text its producer vouched for (`Canonical`, the runtime's gate)
        knows its top-level keys and some values: those are read without parsing the body
        (a decision's is about 5 KB); anything else reads the body."""
        d = self.__dict__
        keys = d.get("_keys")
        if keys is not None and "body" not in d:
            if name not in keys:
                return default
            top = d["_top"]
            if name in top:
                return top[name]
        return self.body.get(name, default)

    def __getattr__(self, name: str) -> Any:  # only for a missing attribute: the unparsed body
        if name == "body":
            v = parse_body(self.body_json)
            object.__setattr__(self, "body", v)
            return v
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def leaf_data(self) -> bytes:
        """The RFC 8785 bytes whose leaf hash is ``hash``."""
        return leaf_data(self.body_json, seq=self.seq, id=self.id, kind=self.kind, workflow=self.workflow,
                         links=self.links, key=self.key, time=self.time, prev=self.prev)

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "id": self.id, "kind": self.kind, "workflow": self.workflow, "links": list(self.links),
                "key": self.key, "time": self.time, "prev": self.prev, "hash": self.hash, "body": self.body}


@dataclass(frozen=True)
class NewEntry:
    """An append request (what :meth:`Ledger.append_many` takes).

    A ``workflow``, ``key`` or link holding a NUL character (``"\\x00"``) is refused here
    (:class:`InvalidEntry`), before any append: no PostgreSQL text can hold one (SQLite
    can), so both backends refuse it alike, and a request the database would refuse never
    joins a group commit, where it would fail the other callers' appends with it. (A NUL
    in the body is stored: the body's canonical JSON writes it ``\\u0000``.)"""

    kind: str
    body: Any
    workflow: str | None = None
    links: Sequence[str | int] = ()  # an int i: the i-th entry of the same batch (append_many)
    key: str | None = None
    time: datetime | None = None

    def __post_init__(self) -> None:
        for name, v in (("workflow", self.workflow), ("key", self.key)):
            if type(v) is str and "\x00" in v:
                raise InvalidEntry(f"`{name}` {ascii(v[:64])} holds a NUL character (\\x00), "
                                   "which the ledger cannot store")
        links = self.links
        if links and isinstance(links, (list, tuple)):  # (an iterator is read once, by the append)
            for x in links:
                if type(x) is str and "\x00" in x:  # (no entry has such an id)
                    raise InvalidEntry(f"link to unknown entry {ascii(x[:64])}")


@dataclass(frozen=True)
class History:
    """An entry with everything linked to it: ``upstream`` (what it links to, transitively)
    and ``downstream`` (what links to it, transitively), each in ``seq`` order. A side cut
    at ``history(..., limit=)`` says so (``upstream_truncated``, ``downstream_truncated``)."""

    entry: Entry
    upstream: tuple[Entry, ...]
    downstream: tuple[Entry, ...]
    upstream_truncated: bool = False  #: more entries link upstream than ``upstream`` holds
    downstream_truncated: bool = False  #: more entries link downstream than ``downstream`` holds

    @property
    def truncated(self) -> bool:
        """Whether either side was cut at the limit (the history is then incomplete)."""
        return self.upstream_truncated or self.downstream_truncated

    @property
    def entries(self) -> tuple[Entry, ...]:
        """All of them in ``seq`` order, the entry included."""
        return tuple(sorted((self.entry, *self.upstream, *self.downstream), key=lambda e: e.seq))




def _short(e: BaseException) -> str:
    orig = getattr(e, "orig", None) or e
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


#: the ``Ledger`` methods wrapped by :func:`_db` that write (a value refused there: InvalidEntry)
_WRITES = frozenset({"append_many", "transact", "checkpoint"})


def _data_error(led: Any, e: BaseException) -> bool:
    """Whether ``e`` is the driver refusing a value given before sending it to the database
    (psycopg's DataError without an SQLSTATE: a text holding a NUL, which PostgreSQL cannot
    hold): an answer about the values given, never a sign that the database is down. (A data
    error of the server, SQLSTATE class 22, may come from what is stored, e.g. a corrupt head
    row: that stays :class:`LedgerUnavailable`.)"""
    orig = getattr(e, "orig", None) or e
    dbapi = getattr(getattr(getattr(led, "_engine", None), "dialect", None), "loaded_dbapi", None)
    cls = getattr(dbapi, "DataError", None)
    return isinstance(cls, type) and isinstance(orig, cls) and getattr(orig, "sqlstate", "") is None


def _refused(led: Any, e: BaseException, write: bool) -> LedgerError:
    """The ledger's error for a driver error: a value the driver refused to send is the
    caller's (``InvalidEntry`` for a write, ``InvalidQuery`` for a read: a 422 over HTTP),
    anything else (a server gone, a corrupt file or row, a lock timeout) ``LedgerUnavailable``."""
    if _data_error(led, e):
        what = "the entry holds" if write else "the query is given"
        return (InvalidEntry if write else InvalidQuery)(f"{what} a value the database cannot hold: {_short(e)}")
    return LedgerUnavailable(f"ledger {led.url}: {_short(e)}")


def _db(fn):
    """Translate driver errors into the ledger's: a value the driver refused to send (a text
    holding a NUL on PostgreSQL) into :class:`InvalidEntry` or :class:`InvalidQuery`, anything
    else (a server gone, a corrupt file, a lock timeout) into :class:`LedgerUnavailable`."""
    write = fn.__name__ in _WRITES

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except LedgerError:
            raise
        except (sa_exc.DBAPIError, sa_exc.InterfaceError, sa_exc.ResourceClosedError, OSError) as e:
            raise _refused(self, e, write) from None
        except self._driver_errors as e:  # the raw-cursor write path
            raise _refused(self, e, write) from None
    return wrapper

