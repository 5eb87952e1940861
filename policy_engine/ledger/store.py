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
fails alone). On PostgreSQL a transaction is one round trip: a server-side function
(schema v3) takes the head row's lock, hashes and writes the entries, links, Merkle nodes
and head; with ``durability="full"`` it commits without waiting for the WAL flush (the
lock is released at once) and a durability barrier in the same message (a synchronous
one-row write) returns only once the flush covers the append, PostgreSQL flushing the
barriers of concurrent processes together (see ``writer``).

**Ids**: every entry gets a random UUID (version 4) as ``id``, fixed at append time and
covered by its hash; ``seq`` is its 0-based position (the Merkle leaf index).

**Idempotency**: an append whose ``key`` exists returns the existing entry, unchanged, if
kind, workflow, links and body are the same; otherwise it raises
:class:`IdempotencyConflict` (a reused key never silently means something else).

A ``Ledger`` is thread-safe. Do not carry one across ``fork()``: open one per process.

The class is built in layers, each a module: ``records`` (the entry types and shared helpers),
``reader.LedgerReader`` (queries, history, Merkle proofs, verify), ``writer.LedgerWriter`` (the
append path, group commit, the PostgreSQL sequencer, checkpoints) and here ``Ledger`` (open,
migrate, close). Every name stays importable from this module.
"""

from __future__ import annotations

import select as _sel
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Engine, make_url

from . import schema
from .errors import LedgerError, LedgerNotFound, LedgerUnavailable, SchemaError
from .records import (
    _E_COLS,
    _PG_MIGRATION_LOCK,
    DURABILITY,
    E,
    Entry,
    H,
    History,
    L,
    N,
    NewEntry,
    _db,
    _short,
    begin_immediate,
    format_time,
)
from .writer import LedgerWriter, _Group

_WAL_WAIT = 60.0  #: seconds a new ledger's switch to WAL waits for other connections (the default lock_timeout)


def _wal(dbapi_conn: Any, wait: float) -> None:
    """``PRAGMA journal_mode=WAL`` on a SQLite connection, retried while another process
    holds the file: the switch needs the file to itself, and SQLite answers "database is
    locked" at once, without its busy handler, when another connection is reading it (two
    processes opening a new ledger together: each switches it as it opens). Once the mode
    is WAL, the pragma succeeds at once."""
    import time

    deadline = time.monotonic() + wait
    delay = 0.01
    while True:
        try:
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.25)


def _no_create_right(e: BaseException) -> bool:
    """A driver error saying the database role lacks a right (PostgreSQL's SQLSTATE 42501,
    insufficient_privilege: e.g. no CREATE on the schema)."""
    orig = getattr(e, "orig", None) or e
    return getattr(orig, "sqlstate", None) == "42501"


__all__ = ["Ledger", "Entry", "NewEntry", "History", "format_time"]


def _pg_checkout(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
    """A pooled PostgreSQL connection that the server has closed (a restart, an idle timeout,
    ``pg_terminate_backend``) is replaced at checkout instead of failing the caller's first
    statement. No round trip: an idle connection has nothing to read, so a socket that is
    readable holds the server's goodbye (or end of file) and the connection is discarded
    (SQLAlchemy then checks out another). A connection cut without a word (a network
    partition) still fails its first statement, as :class:`LedgerUnavailable`."""
    try:
        conn = dbapi_conn  # a psycopg.Connection
        if conn.closed or conn.pgconn.transaction_status != 0:  # psycopg.pq.TransactionStatus.IDLE
            raise sa_exc.DisconnectionError("the connection is closed or not idle")
        ready, _, _ = _sel.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError) as e:  # a closed descriptor
        raise sa_exc.DisconnectionError(str(e)) from None
    if ready:
        raise sa_exc.DisconnectionError("the server closed the connection")


class Ledger(LedgerWriter):
    """An open ledger. Make one with :meth:`Ledger.open`; close it with :meth:`close` (or ``with``)."""

    def __init__(self, engine: Engine, url: str, *, log_id: str, origin: str, durability: str = "full") -> None:
        self._engine = engine
        self._marks = False
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
        self._sql_fence = (f"SELECT 1 FROM {E.name} WHERE workflow = {ph} AND kind IN ('stop', 'resume') "
                           f"AND seq >= {ph} LIMIT 1")
        self._sql_head = (f"SELECT size, head, frontier FROM {H.name} WHERE {q('log')} = {schema.LOG}"
                          + (" FOR UPDATE" if self.backend == "postgresql" else ""))
        self._sql_set_head = (
            f"UPDATE {H.name} SET size = {ph}, head = {ph}, frontier = {ph} WHERE {q('log')} = {schema.LOG}"
        )
        self._e_select = f"SELECT {', '.join(q(c) for c in _E_COLS)} FROM {E.name}"
        # in-process group commit
        self._gc = threading.Condition(threading.Lock())
        self._gc_pending: list[_Group] = []
        self._gc_leader = False

    # ------------------------------------------------------------------ open / close
    @classmethod
    def open(
        cls, url: str, *, create: bool = False, lock_timeout: float = 60.0, durability: str | None = None,
        allow_other_tables: bool = True,
    ) -> Ledger:
        """Open the ledger at ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``).

        With ``create=False`` (the default) a missing ledger is an error
        (:class:`LedgerNotFound`), never a silently empty one; ``create=True`` initialises
        it. Older schemas are migrated; a newer schema, a corrupt file, a wrong URL or an
        unreachable server raise :class:`LedgerUnavailable` (one-line message).
        ``lock_timeout`` bounds the wait for the append lock (seconds). ``durability`` is
        ``"full"`` (default: an acknowledged append survives power loss) or ``"normal"``
        (it survives ``kill -9`` of the writer); the URL may say ``?durability=normal``, the
        only option a SQLite URL takes (any other is refused). With ``create`` and
        ``allow_other_tables=False`` (what ``stopline ledger init`` does unless told
        otherwise) a new ledger is made only in a database (on PostgreSQL: the schema of
        the search path) that holds no other application's tables (:class:`SchemaError`).
        """
        if isinstance(url, str):
            try:
                url.encode("utf-8")
            except UnicodeEncodeError:  # (a shell's bytes that are not UTF-8: no path or server has that name)
                raise LedgerUnavailable(f"not a ledger URL: {url!r} is not UTF-8 text") from None
        try:
            u = make_url(url) if isinstance(url, str) else url
        except (sa_exc.ArgumentError, ValueError):
            raise LedgerUnavailable(
                f"not a ledger URL: {url!r} (expected sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB)"
            ) from None
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
            log_id, origin = cls._prepare(engine, shown, create, allow_other_tables)
        except LedgerError:
            engine.dispose()
            raise
        except (sa_exc.DBAPIError, sa_exc.InterfaceError, OSError) as e:
            engine.dispose()
            raise LedgerUnavailable(f"cannot open ledger {shown}: {_short(e)}") from None
        led = cls(engine, shown, log_id=log_id, origin=origin, durability=mode)
        try:
            led.refresh_marks()
        except LedgerError:
            led.close()
            raise
        return led

    def refresh_marks(self) -> bool:
        """Read again whether the ledger has ``ledger_unprojected`` (one catalog read; done
        at open): while it has, an entry appended without ``projected=True`` is listed there
        for the runtime's projections (see ``append_many``). A runtime that gives an older
        ledger the table calls this."""
        self._marks = not self.missing_tables([schema.unprojected])
        return self._marks

    @staticmethod
    def _make_engine(u: URL, shown: str, create: bool, lock_timeout: float, durability: str = "full") -> Engine:
        backend = u.get_backend_name()
        if backend == "sqlite":
            if u.drivername not in ("sqlite", "sqlite+pysqlite"):
                raise LedgerUnavailable(f"unsupported SQLite driver in {shown} (use sqlite:///PATH)")
            db = u.database
            if not db or db == ":memory:" or db.startswith("file:"):
                raise LedgerUnavailable(
                    f"{shown}: give a file path (sqlite:///PATH); an in-memory ledger is not durable"
                )
            unknown = sorted(k for k in u.query if k != "durability")
            if unknown:
                raise LedgerUnavailable(
                    f"{shown}: unknown option{'s' if len(unknown) > 1 else ''} "
                    f"{', '.join(f'`{k}`' for k in unknown)} in a SQLite ledger URL (the only one accepted is "
                    "`durability`: ?durability=full or ?durability=normal)"
                )
            path = Path(db)
            try:  # stat, not Path.exists(): a path this user may not reach raises (PermissionError)
                exists = path.exists()
                is_dir = exists and path.is_dir()
            except OSError as e:
                raise LedgerUnavailable(f"cannot open ledger {shown}: {e.strerror or e} ({db})") from None
            if not create and not exists:
                raise LedgerNotFound(f"no ledger at {shown} (the file {db} does not exist; run `stopline ledger init`)")
            if is_dir:
                raise LedgerUnavailable(f"{shown}: {db} is a directory")
            engine = create_engine(u, connect_args={"timeout": lock_timeout, "check_same_thread": False})

            @event.listens_for(engine, "connect")
            def _on_connect(dbapi_conn, _record):  # pragma: no branch
                dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
                cur = dbapi_conn.cursor()
                _record.info["busy_ms"] = int(lock_timeout * 1000)  # (what `begin_immediate` waits in all)
                try:
                    cur.execute(f"PRAGMA busy_timeout={int(lock_timeout * 1000)}")
                    # WAL is a persistent change of the file: only for a ledger (a new one is
                    # switched once made, by _prepare), so opening another application's
                    # database (or an empty file), which is refused, leaves that file as it was
                    if cur.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                                   "AND name = 'ledger_meta'").fetchone() is not None:
                        _wal(dbapi_conn, lock_timeout)
                    cur.execute("PRAGMA synchronous=FULL" if durability == "full" else "PRAGMA synchronous=NORMAL")
                finally:
                    cur.close()

            @event.listens_for(engine, "begin")
            def _on_begin(conn):
                if not conn.get_execution_options().get("ledger_write"):
                    conn.exec_driver_sql("BEGIN")
                    return
                cur = conn.connection.driver_connection.cursor()
                full = conn.connection.info.get("busy_ms", int(lock_timeout * 1000))
                try:
                    try:  # (the wait in slices: a Ctrl-C is acted on during it)
                        begin_immediate(cur, full)
                        return
                    except sqlite3.OperationalError:
                        pass
                    # the wait is over: once more without waiting, for the error as SQLAlchemy raises it
                    cur.execute("PRAGMA busy_timeout=0")
                    try:
                        conn.exec_driver_sql("BEGIN IMMEDIATE")
                    finally:
                        cur.execute(f"PRAGMA busy_timeout={full}")
                finally:
                    cur.close()

            return engine
        if backend == "postgresql":
            if u.drivername not in ("postgresql", "postgresql+psycopg"):
                raise LedgerUnavailable(f"unsupported PostgreSQL driver in {shown} (use postgresql+psycopg://...)")
            u = u.set(drivername="postgresql+psycopg")
            args: dict[str, Any] = {"connect_timeout": 10}
            engine = create_engine(u, connect_args=args, pool_pre_ping=False)
            event.listen(engine, "checkout", _pg_checkout)
            wait_ms = max(1, int(lock_timeout * 1000))

            @event.listens_for(engine, "connect")
            def _on_pg_connect(dbapi_conn, _record):  # pragma: no branch
                with dbapi_conn.cursor() as cur:
                    # the bound of a wait for the append lock (the head row's), as SQLite's busy_timeout
                    # (before: none on PostgreSQL, a writer waited behind a stuck holder for ever)
                    cur.execute(f"SET lock_timeout = {wait_ms}")
                    if durability == "normal":
                        cur.execute("SET synchronous_commit = off")
                dbapi_conn.commit()

            return engine
        raise LedgerUnavailable(f"unsupported ledger URL {shown} (expected sqlite:///PATH or postgresql+psycopg://...)")

    @classmethod
    def _prepare(cls, engine: Engine, shown: str, create: bool, allow_other_tables: bool = True) -> tuple[str, str]:
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
                raise SchemaError(
                    f"the ledger at {shown} has schema version {version}, newer than this Stopline "
                    f"supports ({schema.SCHEMA_VERSION}); upgrade Stopline"
                )
            try:
                cls._create_or_migrate(engine, shown, allow_other_tables)
            except sa_exc.DBAPIError as e:
                if not _no_create_right(e):
                    raise
                what = ("there is no ledger at " + shown if version is None else
                        f"the ledger at {shown} has schema version {version}, older than this Stopline's "
                        f"({schema.SCHEMA_VERSION}),")
                raise SchemaError(f"{what} and this database role may not "
                                  f"{'create one' if version is None else 'migrate it'} ({_short(e)}): run "
                                  "`stopline ledger init` with a role that may create tables") from None
            if engine.dialect.name == "sqlite":
                with engine.connect() as c:  # a new ledger: WAL from now on (outside a transaction)
                    dbapi_conn: Any = c.connection.driver_connection
                    _wal(dbapi_conn, _WAL_WAIT)
        with engine.connect() as c:
            with c.begin():
                rows = dict(c.execute(select(schema.meta.c.name, schema.meta.c.value)).all())
                head = c.execute(select(schema.heads.c.size, schema.heads.c.frontier)
                                 .where(schema.heads.c.log == schema.LOG)).first()
        log_id, origin = rows.get("log_id"), rows.get("origin")
        if not log_id or not origin:
            raise SchemaError(f"the ledger at {shown} is damaged: `ledger_meta` has no "
                              f"{'log_id' if not log_id else 'origin'}")
        if head is None:
            raise SchemaError(f"the ledger at {shown} is damaged: its head row (`ledger_heads`) is missing")
        return log_id, origin

    @staticmethod
    def _create_or_migrate(engine: Engine, shown: str, allow_other_tables: bool) -> None:
        """Make the ledger, or migrate an older one, under the migration lock."""
        with engine.connect() as c:
            c = c.execution_options(ledger_write=True)
            with c.begin():
                if c.dialect.name == "postgresql":
                    c.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
                version = schema.read_version(c)
                if version is None and not allow_other_tables:
                    others = sorted(t for t in schema.inspect_tables(c) if t not in schema.LEDGER_TABLES)
                    if others:
                        where = "database" if c.dialect.name == "sqlite" else "schema"
                        names = ", ".join(f"`{t}`" for t in others[:5]) + (
                            f" and {len(others) - 5} more" if len(others) > 5 else "")
                        raise SchemaError(
                            f"{shown} already holds tables that are not the ledger's ({names}): refusing to add "
                            f"a ledger to another application's {where} (use a new {where}, or pass "
                            "--allow-other-tables to add it anyway)"
                        )
                if version is None or version < schema.SCHEMA_VERSION:
                    schema.migrate(c, version or 0)

    # ------------------------------------------------------------------ guards
    @_db
    def guard_problems(self) -> list[str]:
        """What is wrong with the triggers that refuse UPDATE and DELETE of entries, link
        rows and Merkle nodes (``[]`` when each is there, enabled and unchanged); ``verify``
        fails on any."""
        with self._read() as c:
            return schema.guard_problems(c)

    @_db
    def weak_guards(self) -> list[str]:
        """The PostgreSQL guard triggers of an older ledger that a session with
        ``session_replication_role = replica`` skips (a plain ``ENABLE``; the ledger now makes
        them ``ENABLE ALWAYS``) and that this role may change; ``[]`` on SQLite. Not a
        ``verify`` failure: :meth:`restore_guards` (``stopline ledger init``) strengthens them."""
        with self._read() as c:
            return schema.weak_guards(c)

    @_db
    def restore_guards(self) -> list[str]:
        """Re-create the guard triggers if any is missing, disabled or changed (under the
        append lock; no entry is written) and return what was wrong (``[]``: nothing wrong).
        Guards that are only :meth:`weak_guards` are made ``ENABLE ALWAYS`` in place (not
        reported: nothing was wrong). On PostgreSQL this needs the tables' owner.
        ``stopline ledger init`` calls it."""
        with self._engine.connect() as c:
            c = c.execution_options(ledger_write=True)
            with c.begin():
                if c.dialect.name == "postgresql":
                    c.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
                problems = schema.guard_problems(c)
                if problems:
                    schema.restore_guards(c)
                else:
                    schema.strengthen_guards(c, schema.weak_guards(c))
        return problems

    # ------------------------------------------------------------------ tables
    @_db
    def missing_tables(self, tables: Iterable[Any] | None = None) -> list[str]:
        """The names of ``tables`` (SQLAlchemy tables; default: every table of the ledger's
        current schema) that the database lacks (on PostgreSQL: in the schema of the search
        path). One catalog read: no lock, no DDL."""
        with self._read() as c:
            return schema.missing_tables(c, tables)

    @_db
    def add_missing_tables(self) -> list[str]:
        """Make every table of the ledger's current schema that the database lacks (a
        ledger made before a table was added to the schema without a version change, as
        ``ledger_ended_sessions`` was), under the append lock (an advisory lock on
        PostgreSQL), and return their names (``[]``: nothing done). Rows, entries, guards
        and existing tables are left as they are; no entry is written. Needs a role that
        may create tables (else :class:`SchemaError`, naming the tables). ``stopline
        ledger init`` calls it."""
        missing = self.missing_tables()
        return self._create_locked(missing, schema.create_missing) if missing else []

    @_db
    def ensure_tables(self, tables: Sequence[Any]) -> list[str]:
        """Make sure the tables ``tables`` (kept beside the log: the server's sign-outs, the
        runtime's projections) exist before they are used, and return the names made.
        When every one exists (the common case) this is one catalog read: no lock, and no
        DDL, so a database role without the right to create tables can use the ledger.
        The missing ones are made under the advisory lock (PostgreSQL), re-checked there
        (another process may have made them). If the role may not create them:
        :class:`SchemaError`, one line naming each table and telling the operator to run
        ``stopline ledger init`` with a role that may create tables."""
        missing = self.missing_tables(tables)

        def make(c: Any) -> list[str]:
            made = schema.missing_tables(c, tables)  # (again, under the lock: another process may have)
            for t in tables:
                if t.name in made:
                    t.create(c, checkfirst=True)
            return made

        return self._create_locked(missing, make) if missing else []

    def _create_locked(self, missing: list[str], make: Any) -> list[str]:
        """``make(connection)`` in one transaction under the migration lock (PostgreSQL's
        advisory lock): a role that may not create tables gets :class:`SchemaError`
        naming ``missing`` and `stopline ledger init`."""
        with self._engine.connect() as c:
            c = c.execution_options(ledger_write=True)
            try:
                with c.begin():
                    if c.dialect.name == "postgresql":
                        c.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
                    return make(c)
            except sa_exc.DBAPIError as e:
                if _no_create_right(e):
                    raise SchemaError(self._cannot_create(missing, e)) from None
                raise

    def _cannot_create(self, names: list[str], e: BaseException) -> str:
        which = ", ".join(f"`{n}`" for n in names) or "a table it needs"
        many = len(names) > 1
        return (f"the ledger at {self.url} has no table{'s' if many else ''} {which}, and this database role may "
                f"not create {'them' if many else 'it'} ({_short(e)}): run `stopline ledger init` with a role that "
                "may create tables, then start again")

    def close(self) -> None:
        """Release every connection."""
        self._engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({self.url!r})"
