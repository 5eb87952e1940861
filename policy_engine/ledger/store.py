"""The ``Ledger``: append-only, verifiable, on SQLite (embedded) or PostgreSQL (shared).

    from policy_engine.ledger import Ledger
    with Ledger.open("sqlite:///stopline.db", create=True) as led:
        d = led.append("decision", {"action": {...}, "decision": {...}, "policy_hash": "..."})
        a = led.append("approval", {...}, links=[d.id])
        led.history(d.id).entries          # d and a
        led.verify().ok                    # True

**Appends** serialise on one row lock per log (``ledger_heads``): ``BEGIN IMMEDIATE`` on
SQLite, ``SELECT ... FOR UPDATE`` on PostgreSQL (which also works on its wire-compatible
distributed peers). Under the lock an append reads the head (size, last hash, Merkle
frontier), writes the entry at ``seq = size`` with ``prev`` = the last hash, its links,
the Merkle nodes it closes, and the new head, then commits. So threads and processes
produce one chain: no gap (``seq`` is the head's size), no fork (one writer at a time).

**Durability**: an append returns only after its transaction committed. SQLite runs in
WAL mode with ``synchronous=FULL``: the WAL is fsynced at every commit, so an
acknowledged append survives ``kill -9`` of the writer *and* an OS crash or power loss
(``NORMAL`` would survive ``kill -9`` only). PostgreSQL commits with its defaults
(``synchronous_commit=on``, ``fsync=on``); a server configured with
``synchronous_commit=off`` weakens this, and that is the operator's choice.
``append_many`` writes a batch in one transaction (one fsync): all or nothing.

**Ids**: every entry gets a random UUID (version 4) as ``id``, fixed at append time and
covered by its hash; ``seq`` is its 0-based position (the Merkle leaf index).

**Idempotency**: an append whose ``key`` exists returns the existing entry, unchanged, if
kind, workflow, links and body are the same; otherwise it raises
:class:`IdempotencyConflict` (a reused key never silently means something else).

A ``Ledger`` is thread-safe. Do not carry one across ``fork()``: open one per process.
"""

from __future__ import annotations

import functools
import json
import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from sqlalchemy import and_, create_engine, event, insert, or_, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Engine, make_url

from . import merkle, schema
from .canonical import ZERO_HASH, canonical_text, leaf_data, parse_body
from .errors import (EntryNotFound, IdempotencyConflict, InvalidEntry, LedgerError, LedgerNotFound, LedgerUnavailable,
                     SchemaError)
from .kinds import check_entry
from .note import Checkpoint, SigningKey, VerifierKey, sign_checkpoint
from .verify import VerifyReport, verify_ledger

__all__ = ["Ledger", "Entry", "NewEntry", "History", "format_time"]

E, L, N, H = schema.entries, schema.links, schema.nodes, schema.heads
_MAX_LINKS = 64
_PG_MIGRATION_LOCK = 0x5710_1E5E


def format_time(t: datetime) -> str:
    """RFC 3339 UTC with microseconds and ``Z``: the stored, hashed form of an entry's time."""
    if t.tzinfo is None or t.utcoffset() is None:
        raise InvalidEntry("an entry time must be timezone-aware")
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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

    def leaf_data(self) -> bytes:
        """The RFC 8785 bytes whose leaf hash is ``hash``."""
        return leaf_data(self.body_json, seq=self.seq, id=self.id, kind=self.kind, workflow=self.workflow,
                         links=self.links, key=self.key, time=self.time, prev=self.prev)

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "id": self.id, "kind": self.kind, "workflow": self.workflow, "links": list(self.links),
                "key": self.key, "time": self.time, "prev": self.prev, "hash": self.hash, "body": self.body}


@dataclass(frozen=True)
class NewEntry:
    """An append request (what :meth:`Ledger.append_many` takes)."""

    kind: str
    body: Any
    workflow: str | None = None
    links: Sequence[str] = ()
    key: str | None = None
    time: datetime | None = None


@dataclass(frozen=True)
class History:
    """An entry with everything linked to it: ``upstream`` (what it links to, transitively)
    and ``downstream`` (what links to it, transitively), each in ``seq`` order."""

    entry: Entry
    upstream: tuple[Entry, ...]
    downstream: tuple[Entry, ...]

    @property
    def entries(self) -> tuple[Entry, ...]:
        """All of them in ``seq`` order, the entry included."""
        return tuple(sorted((self.entry, *self.upstream, *self.downstream), key=lambda e: e.seq))


@dataclass
class _Prepared:
    kind: str
    body: Any
    body_json: str
    workflow: str | None
    links: tuple[str, ...]
    key: str | None
    time: str


def _short(e: BaseException) -> str:
    orig = getattr(e, "orig", None) or e
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


def _db(fn):
    """Translate driver errors (a server gone, a corrupt file, a lock timeout) into LedgerUnavailable."""
    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except LedgerError:
            raise
        except (sa_exc.DBAPIError, sa_exc.InterfaceError, sa_exc.ResourceClosedError, OSError) as e:
            raise LedgerUnavailable(f"ledger {self.url}: {_short(e)}") from None
    return wrapper


class Ledger:
    """An open ledger. Make one with :meth:`Ledger.open`; close it with :meth:`close` (or ``with``)."""

    def __init__(self, engine: Engine, url: str, *, log_id: str, origin: str) -> None:
        self._engine = engine
        self.url = url  #: the URL, password hidden
        self.log_id = log_id  #: a UUID made when the ledger was initialised
        self.origin = origin  #: the checkpoint origin line (``stopline.dev/ledger/<log_id>``)
        self.backend = engine.dialect.name  #: ``sqlite`` or ``postgresql``

    # ------------------------------------------------------------------ open / close
    @classmethod
    def open(cls, url: str, *, create: bool = False, lock_timeout: float = 60.0) -> "Ledger":
        """Open the ledger at ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``).

        With ``create=False`` (the default) a missing ledger is an error
        (:class:`LedgerNotFound`), never a silently empty one; ``create=True`` initialises
        it. Older schemas are migrated; a newer schema, a corrupt file, a wrong URL or an
        unreachable server raise :class:`LedgerUnavailable` (one-line message).
        ``lock_timeout`` bounds the wait for the append lock (seconds).
        """
        try:
            u = make_url(url) if isinstance(url, str) else url
        except (sa_exc.ArgumentError, ValueError):
            raise LedgerUnavailable(f"not a ledger URL: {url!r} (expected sqlite:///PATH or "
                                    "postgresql+psycopg://USER@HOST:PORT/DB)") from None
        shown = u.render_as_string(hide_password=True)
        engine = cls._make_engine(u, shown, create, lock_timeout)
        try:
            log_id, origin = cls._prepare(engine, shown, create)
        except LedgerError:
            engine.dispose()
            raise
        except (sa_exc.DBAPIError, sa_exc.InterfaceError, OSError) as e:
            engine.dispose()
            raise LedgerUnavailable(f"cannot open ledger {shown}: {_short(e)}") from None
        return cls(engine, shown, log_id=log_id, origin=origin)

    @staticmethod
    def _make_engine(u: URL, shown: str, create: bool, lock_timeout: float) -> Engine:
        backend = u.get_backend_name()
        if backend == "sqlite":
            if u.drivername not in ("sqlite", "sqlite+pysqlite"):
                raise LedgerUnavailable(f"unsupported SQLite driver in {shown} (use sqlite:///PATH)")
            db = u.database
            if not db or db == ":memory:" or db.startswith("file:"):
                raise LedgerUnavailable(f"{shown}: give a file path (sqlite:///PATH); an in-memory ledger is not durable")
            path = Path(db)
            if not create and not path.exists():
                raise LedgerNotFound(f"no ledger at {shown} (the file {db} does not exist; run `stopline ledger init`)")
            if path.exists() and path.is_dir():
                raise LedgerUnavailable(f"{shown}: {db} is a directory")
            engine = create_engine(u, connect_args={"timeout": lock_timeout, "check_same_thread": False})

            @event.listens_for(engine, "connect")
            def _on_connect(dbapi_conn, _record):  # pragma: no branch
                dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
                cur = dbapi_conn.cursor()
                try:
                    cur.execute("PRAGMA journal_mode=WAL")
                    cur.execute("PRAGMA synchronous=FULL")
                    cur.execute(f"PRAGMA busy_timeout={int(lock_timeout * 1000)}")
                finally:
                    cur.close()

            @event.listens_for(engine, "begin")
            def _on_begin(conn):
                conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("ledger_write") else "BEGIN")

            return engine
        if backend == "postgresql":
            if u.drivername not in ("postgresql", "postgresql+psycopg"):
                raise LedgerUnavailable(f"unsupported PostgreSQL driver in {shown} (use postgresql+psycopg://...)")
            u = u.set(drivername="postgresql+psycopg")
            args: dict[str, Any] = {"connect_timeout": 10}
            return create_engine(u, connect_args=args, pool_pre_ping=False)
        raise LedgerUnavailable(f"unsupported ledger URL {shown} (expected sqlite:///PATH or postgresql+psycopg://...)")

    @classmethod
    def _prepare(cls, engine: Engine, shown: str, create: bool) -> tuple[str, str]:
        with engine.connect() as c:
            with c.begin():
                version = schema.read_version(c)
        if version != schema.SCHEMA_VERSION:
            if version is None and not create:
                with engine.connect() as c:
                    with c.begin():
                        tables = schema.inspect_tables(c)
                if tables:
                    raise SchemaError(f"{shown} is not a Stopline ledger (it has other tables and no ledger_meta)")
                raise LedgerNotFound(f"no ledger at {shown} (run `stopline ledger init`)")
            if version is not None and version > schema.SCHEMA_VERSION:
                raise SchemaError(f"the ledger at {shown} has schema version {version}, newer than this Stopline "
                                  f"supports ({schema.SCHEMA_VERSION}); upgrade Stopline")
            with engine.connect() as c:
                c = c.execution_options(ledger_write=True)
                with c.begin():
                    if c.dialect.name == "postgresql":
                        c.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
                    version = schema.read_version(c)
                    if version is None or version < schema.SCHEMA_VERSION:
                        schema.migrate(c, version or 0)
        with engine.connect() as c:
            with c.begin():
                rows = dict(c.execute(select(schema.meta.c.name, schema.meta.c.value)).all())
        return rows["log_id"], rows["origin"]

    def close(self) -> None:
        """Release every connection."""
        self._engine.dispose()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({self.url!r})"

    # ------------------------------------------------------------------ transactions
    @contextmanager
    def _read(self, *, snapshot: bool = False) -> Iterator[Connection]:
        with self._engine.connect() as c:
            if snapshot and self.backend == "postgresql":
                c = c.execution_options(isolation_level="REPEATABLE READ")
            with c.begin():
                yield c

    @contextmanager
    def _write(self) -> Iterator[tuple[Connection, list]]:
        """A write transaction holding the log's row lock; yields the connection and head state."""
        with self._engine.connect() as c:
            c = c.execution_options(ledger_write=True)
            with c.begin():
                q = select(H.c.size, H.c.head, H.c.frontier).where(H.c.log == schema.LOG)
                if self.backend == "postgresql":
                    q = q.with_for_update()
                row = c.execute(q).one()
                yield c, [row.size, row.head, merkle.CompactRange.decode(row.size, row.frontier)]

    # ------------------------------------------------------------------ appending
    @staticmethod
    def _prepare_entry(n: NewEntry) -> _Prepared:
        links = tuple(n.links)
        if len(links) > _MAX_LINKS or not all(isinstance(x, str) and x for x in links):
            raise InvalidEntry(f"links are at most {_MAX_LINKS} entry ids (strings)")
        if len(set(links)) != len(links):
            raise InvalidEntry("an entry links to each entry at most once")
        for name, v in (("workflow", n.workflow), ("key", n.key)):
            if v is not None and (not isinstance(v, str) or not v or len(v) > 256):
                raise InvalidEntry(f"`{name}` is a non-empty string of at most 256 characters")
        for v in (n.workflow, n.key, *links):
            if v is not None:
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError:
                    raise InvalidEntry("workflow, key and links must be valid Unicode (no lone surrogates)") from None
        check_entry(n.kind, n.body, n.workflow, links)
        text = canonical_text(n.body)
        t = format_time(n.time if n.time is not None else datetime.now(timezone.utc))
        return _Prepared(n.kind, parse_body(text), text, n.workflow, links, n.key, t)

    def append(self, kind: str, body: Any, *, workflow: str | None = None, links: Sequence[str] = (),
               key: str | None = None, time: datetime | None = None) -> Entry:
        """Append one entry and return it once it is committed.

        ``body`` is a JSON object with at least the kind's keys (:data:`kinds.KINDS`);
        ``links`` are ids of existing entries; ``key`` is an idempotency key; ``time``
        pins the recorded time (default: now, UTC). Raises :class:`InvalidEntry`,
        :class:`IdempotencyConflict` or :class:`LedgerUnavailable`.
        """
        return self.append_many([NewEntry(kind, body, workflow, links, key, time)])[0]

    @_db
    def append_many(self, items: Iterable[NewEntry]) -> list[Entry]:
        """Append a batch in one transaction (one lock, one commit): all of it or none.

        Entries in the batch may link to earlier entries of the same batch. Returns the
        entries in order (an existing entry for each key that was already used).
        """
        prepared = [self._prepare_entry(n) for n in items]
        if not prepared:
            return []
        with self._write() as (c, state):
            return self._insert(c, state, prepared)

    @_db
    def transact(self, build: Callable[[Connection], Sequence[NewEntry] | None], *,
                 after: Callable[[Connection, list[Entry]], None] | None = None) -> list[Entry]:
        """A conditional append: ``build(conn)`` runs *inside* the append lock (the log's row
        lock: ``BEGIN IMMEDIATE`` on SQLite, ``SELECT ... FOR UPDATE`` on PostgreSQL), reads
        what it needs through ``conn`` and returns the entries to append (or nothing, or
        raises to abort: nothing is written). ``after(conn, new_entries)`` then runs in the
        same transaction (for caches kept beside the log, e.g. the runtime's projections).
        Concurrent ``transact`` calls run one at a time, so a check and its append are one
        step: of two writers racing on the same state, exactly one sees the old state.
        Returns the entries as :meth:`append_many` does (an existing entry for a used key).
        A link given as an ``int`` ``i`` names the ``i``-th entry of the same batch.
        """
        with self._write() as (c, state):
            items = list(build(c) or ())
            if not items:
                return []
            first_new = state[0]
            out: list[Entry] = []
            group: list[_Prepared] = []

            def flush() -> None:
                if group:
                    for e in self._insert(c, state, group):
                        if e.seq >= state[0]:
                            state[0], state[1] = e.seq + 1, e.hash
                        out.append(e)
                    group.clear()

            for n in items:  # runs of entries in one insert; an int link waits for its target's id
                if any(isinstance(x, int) and not isinstance(x, bool) for x in n.links):
                    flush()
                    links = [out[x].id if isinstance(x, int) and not isinstance(x, bool) else x for x in n.links]
                    n = NewEntry(n.kind, n.body, n.workflow, links, n.key, n.time)
                group.append(self._prepare_entry(n))
            flush()
            if after is not None:
                after(c, [e for e in out if e.seq >= first_new])
            return out

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read-only transaction (one snapshot on PostgreSQL) for indexed queries over
        :mod:`schema`'s tables; rows become entries with :meth:`fetch`."""
        try:
            with self._read(snapshot=True) as c:
                yield c
        except (sa_exc.DBAPIError, sa_exc.InterfaceError, sa_exc.ResourceClosedError, OSError) as e:
            raise LedgerUnavailable(f"ledger {self.url}: {_short(e)}") from None

    def fetch(self, c: Connection, *where: Any, order: Any = None, limit: int | None = None) -> list[Entry]:
        """Entries matching SQLAlchemy ``where`` clauses over ``schema.entries``, in ``seq`` order."""
        return self._fetch(c, *where, order=order, limit=limit)

    def _insert(self, c: Connection, state: list, prepared: list[_Prepared]) -> list[Entry]:
        size, head, cr = state
        keys = [p.key for p in prepared if p.key is not None]
        existing: dict[str, Entry] = {}
        if keys:
            existing = {e.key: e for e in self._fetch(c, E.c.key.in_(keys))}  # type: ignore[misc]
        wanted = {x for p in prepared for x in p.links}
        seq_of = dict(c.execute(select(E.c.id, E.c.seq).where(E.c.id.in_(wanted))).all()) if wanted else {}
        out: list[Entry] = []
        e_rows: list[dict] = []
        l_rows: list[dict] = []
        n_rows: list[dict] = []
        for p in prepared:
            if p.key is not None and p.key in existing:
                old = existing[p.key]
                if (old.kind, old.workflow, old.links, old.body_json) != (p.kind, p.workflow, p.links, p.body_json):
                    raise IdempotencyConflict(f"the idempotency key `{p.key}` was used by entry {old.seq} "
                                              f"(`{old.kind}`) with a different kind, workflow, links or body")
                out.append(old)
                continue
            missing = [x for x in p.links if x not in seq_of]
            if missing:
                raise InvalidEntry(f"link to unknown entry `{missing[0]}`")
            eid = str(uuid.uuid4())
            fields = dict(seq=size, id=eid, kind=p.kind, workflow=p.workflow, links=p.links, key=p.key, time=p.time,
                          prev=head)
            h = merkle.leaf_hash(leaf_data(p.body_json, **fields)).hex()
            entry = Entry(body=p.body, body_json=p.body_json, hash=h, **fields)
            e_rows.append({"seq": size, "id": eid, "kind": p.kind, "workflow": p.workflow, "key": p.key,
                           "links": json.dumps(list(p.links), separators=(",", ":")), "body": p.body_json,
                           "time": p.time, "prev": head, "hash": h})
            l_rows.extend({"from_seq": size, "pos": i, "to_seq": seq_of[x]} for i, x in enumerate(p.links))
            n_rows.extend({"leaf": size, "level": lv, "hash": nh.hex()}
                          for lv, _idx, nh in cr.append(bytes.fromhex(h)))
            seq_of[eid] = size
            if p.key is not None:
                existing[p.key] = entry
            out.append(entry)
            size, head = size + 1, h
        if e_rows:
            c.execute(insert(E), e_rows)
            if l_rows:
                c.execute(insert(L), l_rows)
            if n_rows:
                c.execute(insert(N), n_rows)
            c.execute(update(H).where(H.c.log == schema.LOG).values(size=size, head=head, frontier=cr.encode()))
        return out

    # ------------------------------------------------------------------ reading
    @staticmethod
    def _entry(r: Any) -> Entry:
        return Entry(seq=r.seq, id=r.id, kind=r.kind, body=parse_body(r.body), body_json=r.body, workflow=r.workflow,
                     links=tuple(json.loads(r.links)), key=r.key, time=r.time, prev=r.prev, hash=r.hash)

    def _fetch(self, c: Connection, *where: Any, order=None, limit: int | None = None) -> list[Entry]:
        q = select(E).where(*where).order_by(order if order is not None else E.c.seq)
        if limit is not None:
            q = q.limit(limit)
        return [self._entry(r) for r in c.execute(q)]

    @property
    @_db
    def size(self) -> int:
        """The number of entries (the tree size)."""
        with self._read() as c:
            return c.execute(select(H.c.size).where(H.c.log == schema.LOG)).scalar_one()

    @staticmethod
    def _where_ref(ref: str | int) -> Any:
        if isinstance(ref, bool):
            raise EntryNotFound(f"no entry {ref!r}")
        if isinstance(ref, int):
            return E.c.seq == ref
        if isinstance(ref, str) and ref.isdigit():
            return E.c.seq == int(ref)
        return E.c.id == str(ref)

    @_db
    def get(self, ref: str | int) -> Entry:
        """The entry with id ``ref`` (or sequence number, an int or a string of digits)."""
        with self._read() as c:
            found = self._fetch(c, self._where_ref(ref))
        if not found:
            raise EntryNotFound(f"no entry `{ref}` in the ledger")
        return found[0]

    @_db
    def entries(self, *, kind: str | None = None, workflow: str | None = None, link: str | None = None,
                since: datetime | str | None = None, until: datetime | str | None = None,
                after: int | None = None, limit: int | None = None, reverse: bool = False) -> list[Entry]:
        """Entries in ``seq`` order (newest first with ``reverse``), filtered by kind,
        workflow, ``link`` (entries that link to that id), time (``since <= time < until``)
        and ``after`` (seq greater than; for paging)."""
        where: list[Any] = []
        if kind is not None:
            where.append(E.c.kind == kind)
        if workflow is not None:
            where.append(E.c.workflow == workflow)
        if since is not None:
            where.append(E.c.time >= (format_time(since) if isinstance(since, datetime) else since))
        if until is not None:
            where.append(E.c.time < (format_time(until) if isinstance(until, datetime) else until))
        if after is not None:
            where.append(E.c.seq < after if reverse else E.c.seq > after)
        with self._read() as c:
            if link is not None:
                target = c.execute(select(E.c.seq).where(E.c.id == link)).scalar()
                if target is None:
                    raise EntryNotFound(f"no entry `{link}` in the ledger")
                where.append(E.c.seq.in_(select(L.c.from_seq).where(L.c.to_seq == target)))
            return self._fetch(c, *where, order=E.c.seq.desc() if reverse else E.c.seq, limit=limit)

    @_db
    def history(self, ref: str | int, *, limit: int = 10_000) -> History:
        """The entry, everything it links to and everything that links to it (both transitively)."""
        with self._read(snapshot=True) as c:
            found = self._fetch(c, self._where_ref(ref))
            if not found:
                raise EntryNotFound(f"no entry `{ref}` in the ledger")
            start = found[0].seq
            sides = []
            for src_col, dst_col in ((L.c.from_seq, L.c.to_seq), (L.c.to_seq, L.c.from_seq)):
                seen, frontier = {start}, {start}
                while frontier and len(seen) <= limit:
                    nxt = set(c.execute(select(dst_col).where(src_col.in_(frontier))).scalars()) - seen
                    seen |= nxt
                    frontier = nxt
                seen.discard(start)
                sides.append(tuple(self._fetch(c, E.c.seq.in_(sorted(seen)))) if seen else ())
        return History(found[0], sides[0], sides[1])

    # ------------------------------------------------------------------ Merkle tree
    def _nodes(self, c: Connection, wanted: set[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        out: dict[tuple[int, int], bytes] = {}
        leaves = sorted(i for lv, i in wanted if lv == 0)
        for i in range(0, len(leaves), 500):
            out.update({(0, s): bytes.fromhex(h)
                        for s, h in c.execute(select(E.c.seq, E.c.hash).where(E.c.seq.in_(leaves[i:i + 500])))})
        inner = sorted(((((i + 1) << lv) - 1, lv) for lv, i in wanted if lv > 0))
        for i in range(0, len(inner), 200):
            chunk = inner[i:i + 200]
            cond = or_(*(and_(N.c.leaf == lf, N.c.level == lv) for lf, lv in chunk))
            out.update({(lv, (lf + 1 >> lv) - 1): bytes.fromhex(h)
                        for lf, lv, h in c.execute(select(N.c.leaf, N.c.level, N.c.hash).where(cond))})
        missing = wanted - out.keys()
        if missing:
            raise LedgerUnavailable(f"ledger {self.url}: Merkle node {sorted(missing)[0]} is missing; run `stopline ledger verify`")
        return out

    def _tree_size(self, c: Connection, size: int | None) -> int:
        current = c.execute(select(H.c.size).where(H.c.log == schema.LOG)).scalar_one()
        if size is None:
            return current
        if not 0 <= size <= current:
            raise EntryNotFound(f"the ledger has {current} entries, not {size}")
        return size

    @_db
    def root(self, size: int | None = None) -> bytes:
        """The Merkle root of the first ``size`` entries (default: all)."""
        with self._read(snapshot=True) as c:
            n = self._tree_size(c, size)
            return merkle.prefetch(lambda s: merkle.root(s, n), lambda w: self._nodes(c, w))

    @_db
    def prove(self, ref: str | int, *, size: int | None = None) -> merkle.InclusionProof:
        """An inclusion proof of the entry in the tree of ``size`` entries (default: all)."""
        with self._read(snapshot=True) as c:
            found = self._fetch(c, self._where_ref(ref))
            if not found:
                raise EntryNotFound(f"no entry `{ref}` in the ledger")
            e = found[0]
            n = self._tree_size(c, size)
            if e.seq >= n:
                raise EntryNotFound(f"entry {e.seq} is not in the tree of size {n}")
            path, r = merkle.prefetch(lambda s: (merkle.inclusion_path(s, e.seq, n), merkle.root(s, n)),
                                      lambda w: self._nodes(c, w))
        return merkle.InclusionProof(e.seq, n, bytes.fromhex(e.hash), tuple(path), r)

    @_db
    def prove_consistency(self, old_size: int, new_size: int | None = None) -> merkle.ConsistencyProof:
        """A consistency proof: the tree of ``old_size`` entries is a prefix of the tree of ``new_size``."""
        with self._read(snapshot=True) as c:
            n = self._tree_size(c, new_size)
            if not 0 <= old_size <= n:
                raise EntryNotFound(f"no consistency proof from size {old_size} to size {n}")
            path, r_old, r_new = merkle.prefetch(
                lambda s: (merkle.consistency_path(s, old_size, n), merkle.root(s, old_size), merkle.root(s, n)),
                lambda w: self._nodes(c, w))
        return merkle.ConsistencyProof(old_size, n, r_old, r_new, tuple(path))

    # ------------------------------------------------------------------ checkpoints
    @_db
    def checkpoint(self, key: SigningKey, *, path: str | os.PathLike[str] | None = None,
                   time: datetime | None = None) -> tuple[Checkpoint, Entry]:
        """Sign the current tree head (C2SP signed note, Ed25519), record it as a
        ``checkpoint`` entry and, with ``path``, write the note to that file.

        The note signs the tree *before* the checkpoint entry (size ``n``, the entry is
        ``seq = n``). Keep the written file outside the database: ``verify(checkpoint=...)``
        against it detects a truncated tail or a fork.
        """
        with self._write() as (c, state):
            size, cr = state[0], state[2]
            root = cr.root()
            note = sign_checkpoint(key, self.origin, size, root)
            body = {"origin": self.origin, "size": size, "root": root.hex(), "note": note}
            entry = self._insert(c, state, [self._prepare_entry(NewEntry("checkpoint", body, time=time))])[0]
        cp = Checkpoint(self.origin, size, root, note)
        if path is not None:
            tmp = Path(f"{path}.tmp{os.getpid()}")
            tmp.write_text(note, encoding="utf-8")
            os.replace(tmp, path)
        return cp, entry

    # ------------------------------------------------------------------ verification
    @_db
    def verify(self, *, checkpoint: str | bytes | None = None, key: VerifierKey | None = None) -> VerifyReport:
        """Recompute everything and report the first bad sequence number, if any.

        Checks, entry by entry in one snapshot: contiguous ``seq``; each hash against the
        entry's content; each ``prev`` against the previous hash; the kind's required body
        keys; the link rows; every stored Merkle node; each stored checkpoint entry's size
        and root (and signature, with ``key``); then the head row. With ``checkpoint`` (a
        signed note, checked with ``key``, which is then required) also that the ledger
        still holds that tree: fewer entries is a truncation, a different root a fork.
        """
        return verify_ledger(self, checkpoint=checkpoint, key=key)

