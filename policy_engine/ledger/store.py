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

**Durability**: an append returns only after its transaction committed.
``durability="full"`` (the default; ``Ledger.open(url, durability=...)`` or
``?durability=`` in the URL): SQLite runs in WAL mode with ``synchronous=FULL`` (the WAL
is fsynced at every commit), PostgreSQL with ``synchronous_commit=on``, so an
acknowledged append survives ``kill -9`` of the writer *and* an OS crash or power loss.
``durability="normal"``: SQLite ``synchronous=NORMAL`` (a commit is written to the WAL
but fsynced only at checkpoints), PostgreSQL ``synchronous_commit=off`` for the ledger's
transactions: an acknowledged append survives ``kill -9`` of the writer, not a power
loss or an OS (or PostgreSQL server) crash, which may lose the last commits (never
corrupt the chain). ``append_many`` writes a batch in one transaction: all or nothing.

**Group commit**: concurrent appends share commits. In one process, threads that append
while another thread's transaction is running queue their requests; the next leader
writes every queued request in one transaction and one commit, and each caller returns
only after that commit (a request that fails validation, e.g. an idempotency conflict,
fails alone). On PostgreSQL, appends from any process go through the sequencer: an
appender inserts its entries into ``ledger_queue`` (their id and time fixed) and commits,
then takes the log's row lock; whoever holds it moves *every* queued entry into the log
(hash chain, links, Merkle nodes, head) in one transaction with a synchronous commit, so
one commit flush sequences the entries of many appenders (Trillian's design: queue, then
integrate under the lock). An appender returns once its entries are in a committed log
transaction (seen after the lock holder committed, or committed by itself).

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
import sqlite3
import threading
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

E, L, N, H, Q = schema.entries, schema.links, schema.nodes, schema.heads, schema.queue
DURABILITY = ("full", "normal")
_E_COLS = ("seq", "id", "kind", "workflow", "key", "links", "body", "time", "prev", "hash")
_Q_COLS = ("grp", "id", "kind", "workflow", "key", "links", "body", "time")
_MAX_LINKS = 64
_PG_MIGRATION_LOCK = 0x5710_1E5E
_PG_SEQUENCER_LOCK = 0x5710_5E90  # held (exclusive) by the appender sequencing the queue


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
    id: str | None = None  # fixed before sequencing (PostgreSQL queue), else made at insert


class _Group:
    """One append request (an atomic batch) in a group commit."""

    __slots__ = ("items", "result", "error", "done")

    def __init__(self, items: list[_Prepared]) -> None:
        self.items = items
        self.result: list[Entry] | None = None
        self.error: BaseException | None = None
        self.done = False


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
        except self._driver_errors as e:  # the raw-cursor write path
            raise LedgerUnavailable(f"ledger {self.url}: {_short(e)}") from None
    return wrapper


class Ledger:
    """An open ledger. Make one with :meth:`Ledger.open`; close it with :meth:`close` (or ``with``)."""

    def __init__(self, engine: Engine, url: str, *, log_id: str, origin: str, durability: str = "full") -> None:
        self._engine = engine
        self.url = url  #: the URL, password hidden
        self.log_id = log_id  #: a UUID made when the ledger was initialised
        self.origin = origin  #: the checkpoint origin line (``stopline.dev/ledger/<log_id>``)
        self.backend = engine.dialect.name  #: ``sqlite`` or ``postgresql``
        self.durability = durability  #: ``full`` (survives power loss) or ``normal`` (survives kill -9)
        dbapi = engine.dialect.loaded_dbapi
        self._driver_errors: tuple[type[BaseException], ...] = (dbapi.Error,) if dbapi is not None else (sqlite3.Error,)
        # statements rendered once (from the schema's tables), run on the driver's cursor
        q = engine.dialect.identifier_preparer.quote
        ph = "?" if self.backend == "sqlite" else "%s"
        self._ph = ph
        self._q = q

        def ins(t: Any, cols: Sequence[str]) -> str:
            return f"INSERT INTO {t.name} ({', '.join(q(c) for c in cols)}) VALUES ({', '.join([ph] * len(cols))})"
        self._sql_ins_e = ins(E, _E_COLS)
        self._sql_ins_l = ins(L, ("from_seq", "pos", "to_seq"))
        self._sql_ins_n = ins(N, ("leaf", "level", "hash"))
        self._sql_ins_q = ins(Q, _Q_COLS)
        self._sql_head = (f"SELECT size, head, frontier FROM {H.name} WHERE {q('log')} = {schema.LOG}"
                          + (" FOR UPDATE" if self.backend == "postgresql" else ""))
        self._sql_set_head = f"UPDATE {H.name} SET size = {ph}, head = {ph}, frontier = {ph} WHERE {q('log')} = {schema.LOG}"
        self._e_select = f"SELECT {', '.join(q(c) for c in _E_COLS)} FROM {E.name}"
        # in-process group commit
        self._gc = threading.Condition(threading.Lock())
        self._gc_pending: list[_Group] = []
        self._gc_leader = False

    # ------------------------------------------------------------------ open / close
    @classmethod
    def open(cls, url: str, *, create: bool = False, lock_timeout: float = 60.0,
             durability: str | None = None) -> "Ledger":
        """Open the ledger at ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``).

        With ``create=False`` (the default) a missing ledger is an error
        (:class:`LedgerNotFound`), never a silently empty one; ``create=True`` initialises
        it. Older schemas are migrated; a newer schema, a corrupt file, a wrong URL or an
        unreachable server raise :class:`LedgerUnavailable` (one-line message).
        ``lock_timeout`` bounds the wait for the append lock (seconds). ``durability`` is
        ``"full"`` (default: an acknowledged append survives power loss) or ``"normal"``
        (it survives ``kill -9`` of the writer); the URL may say ``?durability=normal``.
        """
        try:
            u = make_url(url) if isinstance(url, str) else url
        except (sa_exc.ArgumentError, ValueError):
            raise LedgerUnavailable(f"not a ledger URL: {url!r} (expected sqlite:///PATH or "
                                    "postgresql+psycopg://USER@HOST:PORT/DB)") from None
        shown = u.render_as_string(hide_password=True)
        in_url = u.query.get("durability")
        if isinstance(in_url, tuple):
            raise LedgerUnavailable(f"{shown}: give durability once")
        if in_url is not None:
            u = u.difference_update_query(["durability"])
        mode = durability if durability is not None else (in_url if in_url is not None else "full")
        if mode not in DURABILITY:
            raise LedgerUnavailable(f"{shown}: durability must be full or normal, not {mode!r}")
        engine = cls._make_engine(u, shown, create, lock_timeout, mode)
        try:
            log_id, origin = cls._prepare(engine, shown, create)
        except LedgerError:
            engine.dispose()
            raise
        except (sa_exc.DBAPIError, sa_exc.InterfaceError, OSError) as e:
            engine.dispose()
            raise LedgerUnavailable(f"cannot open ledger {shown}: {_short(e)}") from None
        return cls(engine, shown, log_id=log_id, origin=origin, durability=mode)

    @staticmethod
    def _make_engine(u: URL, shown: str, create: bool, lock_timeout: float, durability: str = "full") -> Engine:
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
                    cur.execute("PRAGMA synchronous=FULL" if durability == "full" else "PRAGMA synchronous=NORMAL")
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
            engine = create_engine(u, connect_args=args, pool_pre_ping=False)
            if durability == "normal":
                @event.listens_for(engine, "connect")
                def _on_pg_connect(dbapi_conn, _record):  # pragma: no branch
                    with dbapi_conn.cursor() as cur:
                        cur.execute("SET synchronous_commit = off")
                    dbapi_conn.commit()
            return engine
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

        Returns the entries in order (an existing entry for each key that was already
        used). Concurrent calls share commits (group commit, see the module doc); each
        returns only after the transaction holding its entries committed.
        """
        prepared = [self._prepare_entry(n) for n in items]
        if not prepared:
            return []
        if self.backend == "postgresql":
            return self._append_queued(prepared)
        return self._append_grouped(_Group(prepared))

    # -- in-process group commit (leader / followers)
    def _append_grouped(self, g: _Group) -> list[Entry]:
        gc = self._gc
        with gc:
            self._gc_pending.append(g)
            while not g.done and self._gc_leader:
                gc.wait()
            if g.done:
                return self._outcome(g)
            self._gc_leader = True
            batch, self._gc_pending = self._gc_pending, []
        try:
            self._append_direct(batch)
        except BaseException as e:
            for x in batch:
                if not x.done:
                    x.error = e
        finally:
            with gc:
                for x in batch:
                    x.done = True
                self._gc_leader = False
                gc.notify_all()
        return self._outcome(g)

    @staticmethod
    def _outcome(g: _Group) -> list[Entry]:
        if g.error is not None:
            raise g.error
        assert g.result is not None
        return g.result

    def _append_direct(self, groups: list[_Group]) -> None:
        """Write ``groups`` in one transaction under the log's row lock, on the driver's cursor."""
        raw = self._engine.raw_connection()
        try:
            cur = raw.cursor()
            if self.backend == "sqlite":
                cur.execute("BEGIN IMMEDIATE")
            cur.execute(self._sql_head)
            size, head, frontier = cur.fetchone()
            state = [size, head, merkle.CompactRange.decode(size, frontier)]
            self._plan_and_write(cur, state, groups)
            raw.commit()
        except BaseException:
            try:
                raw.rollback()
            except Exception:  # noqa: BLE001 - the connection may be gone; the first error is the one to report
                pass
            raise
        finally:
            raw.close()

    # -- PostgreSQL: queue, then sequence under the lock
    _SQL_PG_QUEUE = ("SELECT q.qid, q.grp, q.id, q.kind, q.workflow, q.key, q.links, q.body, q.time, "
                     "EXISTS (SELECT 1 FROM ledger_entries e WHERE e.key = q.key) AS taken, "
                     "ARRAY(SELECT e.seq FROM json_array_elements_text(q.links::json) WITH ORDINALITY AS l(id, ord) "
                     "JOIN ledger_entries e ON e.id = l.id ORDER BY l.ord) AS link_seqs "
                     "FROM ledger_queue q ORDER BY q.qid")
    _SQL_PG_MINE = "SELECT seq, id, prev, hash FROM ledger_entries WHERE id = ANY(%s)"

    def _append_queued(self, prepared: list[_Prepared]) -> list[Entry]:
        grp = uuid.uuid4().hex
        for p in prepared:
            p.id = str(uuid.uuid4())
        mine = [p.id for p in prepared]
        raw = self._engine.raw_connection()
        try:
            pg = raw.dbapi_connection
            cur = pg.cursor()
            c_lock, c_head, c_q, c_mine = pg.cursor(), pg.cursor(), pg.cursor(), pg.cursor()
            with pg.pipeline():  # queue, commit, and try the sequencer lock: one round trip
                # the queue row need not be durable: nothing is acknowledged until the
                # sequencing transaction (synchronous) has copied it into the log
                cur.execute("SET LOCAL synchronous_commit = off")
                cur.executemany(self._sql_ins_q, [(grp, p.id, p.kind, p.workflow, p.key, json.dumps(list(p.links)),
                                                   p.body_json, p.time) for p in prepared])
                pg.commit()
                c_lock.execute("SELECT pg_try_advisory_xact_lock(%s)", (_PG_SEQUENCER_LOCK,))
            got = c_lock.fetchone()[0]
            while not got:
                # another appender is sequencing (it takes every queued entry): wait until it
                # committed (a shared hold of its lock), then look for ours in the log
                with pg.pipeline():
                    pg.rollback()
                    c_lock.execute("SELECT pg_advisory_xact_lock_shared(%s)", (_PG_SEQUENCER_LOCK,))
                    c_mine.execute(self._SQL_PG_MINE, (mine,))
                    pg.rollback()
                    c_lock.execute("SELECT pg_try_advisory_xact_lock(%s)", (_PG_SEQUENCER_LOCK,))
                    c_head.execute(self._SQL_PG_MINE, (mine,))
                done = {r[1]: r for r in c_mine.fetchall()} or {r[1]: r for r in c_head.fetchall()}
                if done:  # sequenced by another appender's committed transaction
                    pg.rollback()
                    return [self._made(p, *done[p.id]) for p in prepared]
                got = c_lock.fetchone()[0]
            with pg.pipeline():
                c_mine.execute(self._SQL_PG_MINE, (mine,))
                c_head.execute(self._sql_head)
                c_q.execute(self._SQL_PG_QUEUE)
            done = {r[1]: r for r in c_mine.fetchall()}
            if done:  # sequenced by a sequencer that committed between our queueing and our lock
                pg.rollback()
                return [self._made(p, *done[p.id]) for p in prepared]
            size, head, frontier = c_head.fetchone()
            state = [size, head, merkle.CompactRange.decode(size, frontier)]
            groups: dict[str, _Group] = {}
            qids: list[int] = []
            seq_of: dict[str, int] = {}
            taken: set[str] = set()
            for qid, g, eid, kind, wf, key, links, body, t, is_taken, link_seqs in c_q.fetchall():
                qids.append(qid)
                ls = tuple(json.loads(links))
                if len(link_seqs) == len(ls):  # else a link is unknown: the plan refuses the group
                    seq_of.update(zip(ls, link_seqs))
                if key is not None and is_taken:
                    taken.add(key)
                grp_obj = groups.get(g)
                if grp_obj is None:
                    grp_obj = groups[g] = _Group([])
                grp_obj.items.append(prepared[mine.index(eid)] if g == grp
                                     else _Prepared(kind, None, body, wf, ls, key, t, eid))
            ours = groups.get(grp)
            if ours is None:  # not queued any more and not in the log: refused by the sequencer
                pg.rollback()
                return self._direct_one(prepared)
            with pg.pipeline():  # every write and the commit in one round trip
                self._plan_and_write(cur, state, list(groups.values()), seq_of=seq_of, taken=taken)
                cur.execute("DELETE FROM ledger_queue WHERE qid = ANY(%s)", (qids,))
                pg.commit()
        except BaseException:
            try:
                raw.rollback()
            except Exception:  # noqa: BLE001
                pass
            raise
        finally:
            raw.close()
        if ours.error is not None:  # a used key or an unknown link: the direct path answers it
            return self._direct_one(prepared)
        assert ours.result is not None
        return ours.result

    def _direct_one(self, prepared: list[_Prepared]) -> list[Entry]:
        for p in prepared:
            p.id = None
        g = _Group(prepared)
        self._append_direct([g])
        return self._outcome(g)

    @staticmethod
    def _made(p: _Prepared, seq: int, eid: str, prev: str, h: str) -> Entry:
        return Entry(seq=seq, id=eid, kind=p.kind, body=p.body, body_json=p.body_json, workflow=p.workflow,
                     links=p.links, key=p.key, time=p.time, prev=prev, hash=h)

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
        """Insert one atomic batch inside a SQLAlchemy write transaction (transact, checkpoint)."""
        g = _Group(prepared)
        self._plan_and_write(c.connection.cursor(), state, [g])
        return self._outcome(g)

    def _fetch_raw(self, cur: Any, col: str, values: Sequence[Any]) -> list[Entry]:
        out: list[Entry] = []
        for i in range(0, len(values), 500):
            chunk = list(values[i:i + 500])
            cur.execute(f"{self._e_select} WHERE {self._q(col)} IN ({', '.join([self._ph] * len(chunk))})", chunk)
            out.extend(self._entry_t(r) for r in cur.fetchall())
        return out

    def _plan_and_write(self, cur: Any, state: list, groups: list[_Group], *, seq_of: dict[str, int] | None = None,
                        taken: set[str] | None = None) -> None:
        """Sequence ``groups`` after ``state`` (size, head, compact range; updated in place)
        and write their rows. A group that fails validation gets its ``error`` and writes
        nothing; the others go on. With ``taken`` (the PostgreSQL sequencer) links were
        resolved by the caller (``seq_of``) and a group whose key is used is refused
        (its appender answers it on the direct path)."""
        sequencer = taken is not None
        existing: dict[str, Entry] = {}
        if seq_of is None:
            seq_of = {}
            keys = [p.key for g in groups for p in g.items if p.key is not None]
            if keys:
                existing = {e.key: e for e in self._fetch_raw(cur, "key", keys)}  # type: ignore[misc]
            wanted = list({x for g in groups for p in g.items for x in p.links})
            for i in range(0, len(wanted), 500):
                chunk = wanted[i:i + 500]
                cur.execute(f"SELECT id, seq FROM {E.name} WHERE id IN ({', '.join([self._ph] * len(chunk))})", chunk)
                seq_of.update(cur.fetchall())
        used: set[str] = set(taken or ())
        e_rows: list[tuple] = []
        l_rows: list[tuple] = []
        n_rows: list[tuple] = []
        for g in groups:
            size, head, cr = state[0], state[1], state[2].copy()
            marks = len(e_rows), len(l_rows), len(n_rows)
            new_ids: dict[str, int] = {}
            new_keys: dict[str, Entry] = {}
            out: list[Entry] = []
            try:
                for p in g.items:
                    if p.key is not None:
                        if sequencer and p.key in used | new_keys.keys():
                            raise IdempotencyConflict(f"the idempotency key `{p.key}` is used")
                        old = new_keys.get(p.key) or existing.get(p.key)
                        if old is not None:
                            if (old.kind, old.workflow, old.links, old.body_json) != (p.kind, p.workflow, p.links,
                                                                                      p.body_json):
                                raise IdempotencyConflict(
                                    f"the idempotency key `{p.key}` was used by entry {old.seq} "
                                    f"(`{old.kind}`) with a different kind, workflow, links or body")
                            out.append(old)
                            continue
                    for x in p.links:
                        if x not in seq_of and x not in new_ids:
                            raise InvalidEntry(f"link to unknown entry `{x}`")
                    eid = p.id or str(uuid.uuid4())
                    h = merkle.leaf_hash(leaf_data(p.body_json, seq=size, id=eid, kind=p.kind, workflow=p.workflow,
                                                   links=p.links, key=p.key, time=p.time, prev=head)).hex()
                    entry = Entry(seq=size, id=eid, kind=p.kind, body=p.body, body_json=p.body_json,
                                  workflow=p.workflow, links=p.links, key=p.key, time=p.time, prev=head, hash=h)
                    e_rows.append((size, eid, p.kind, p.workflow, p.key, json.dumps(list(p.links), separators=(",", ":")),
                                   p.body_json, p.time, head, h))
                    l_rows.extend((size, i, new_ids[x] if x in new_ids else seq_of[x]) for i, x in enumerate(p.links))
                    n_rows.extend((size, lv, nh.hex()) for lv, _idx, nh in cr.append(bytes.fromhex(h)))
                    new_ids[eid] = size
                    if p.key is not None:
                        new_keys[p.key] = entry
                    out.append(entry)
                    size, head = size + 1, h
            except (InvalidEntry, IdempotencyConflict) as err:
                del e_rows[marks[0]:], l_rows[marks[1]:], n_rows[marks[2]:]
                g.error = err
                continue
            state[0], state[1], state[2] = size, head, cr
            seq_of.update(new_ids)
            existing.update(new_keys)
            used.update(new_keys)
            g.result = out
        if e_rows:
            cur.executemany(self._sql_ins_e, e_rows)
            if l_rows:
                cur.executemany(self._sql_ins_l, l_rows)
            if n_rows:
                cur.executemany(self._sql_ins_n, n_rows)
            cur.execute(self._sql_set_head, (state[0], state[1], state[2].encode()))

    # ------------------------------------------------------------------ reading
    @staticmethod
    def _entry_t(r: Sequence[Any]) -> Entry:
        seq, eid, kind, wf, key, links, body, t, prev, h = r
        return Entry(seq=seq, id=eid, kind=kind, body=parse_body(body), body_json=body, workflow=wf,
                     links=tuple(json.loads(links)), key=key, time=t, prev=prev, hash=h)

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

