"""The ledger's tables (SQLAlchemy 2 Core), versioned migrations and the guard triggers.

One schema for both backends:

``ledger_meta``     name -> value: ``schema_version``, ``log_id`` (a UUID made at init), ``origin``
``ledger_heads``    one row per log (``log = 1``): ``size``, ``head`` (hash of the last
                    entry), ``frontier`` (the Merkle compact range). Appends serialise on
                    this row's lock; it is the only row that is ever updated.
``ledger_entries``  one row per entry: ``seq`` (0-based, the Merkle leaf index), ``id``,
                    ``kind``, ``workflow``, ``key`` (idempotency key, unique), ``links``
                    (canonical JSON array of ids), ``body`` (canonical JSON), ``time``
                    (RFC 3339 UTC, microseconds, ``Z``), ``prev`` and ``hash`` (hex SHA-256)
``ledger_links``    (``from_seq``, ``pos``) -> ``to_seq``: the links, indexed both ways
``ledger_nodes``    every complete Merkle subtree of level >= 1, keyed by the leaf that
                    closed it (``leaf``, ``level``), so a proof reads O(log² n) rows
``ledger_flush``    (version 3) one small row per connection shard, bumped by the
                    durability barrier on PostgreSQL (see ``writer``): a write whose
                    synchronous commit flushes the WAL up to and past an append that
                    committed asynchronously. Holds no history; not guarded.
``ledger_ended_sessions``  the reviewer sessions of ``stopline serve`` signed out before they
                    ran out (``sid``, ``ended_until``: the session's own end, in Unix
                    seconds), so every worker and replica refuses a copy of the cookie.
                    Not history (a sign-out is no domain event: it is not an entry); rows
                    past ``ended_until`` are pruned; not guarded. Made with the other
                    tables; a ledger made before it gets it without a version change (so
                    older Stopline versions keep reading the ledger) from
                    :func:`create_missing` (``stopline ledger init``, and every migration)
                    or, when the server's role may create tables, from the server at start
                    (``Ledger.ensure_tables``: no DDL at all when the table exists).

Version 2 added ``ledger_queue`` (a PostgreSQL sequencer's waiting appends); version 3
replaced that sequencer by the server-side append function ``ledger_append_batch``
(PostgreSQL only: one round trip per transaction, the hashing and the Merkle frontier done
under the head row lock in the server) and drops the queue.

Triggers refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL) on entries, links and
nodes: history cannot be rewritten through SQL without first dropping (or disabling) the
triggers, which needs the table owner's rights and shows in ``verify``
(:func:`guard_problems`); :func:`restore_guards` (``stopline ledger init``) puts them back.
On PostgreSQL they are ``ENABLE ALWAYS``: a superuser session with
``session_replication_role = replica`` does not skip them (:func:`weak_guards`).

Migrations: ``MIGRATIONS[v]`` brings a database from version ``v - 1`` to ``v``; they run
at open time under the append lock, and end with :func:`create_missing`. A database whose
``schema_version`` is newer than ``SCHEMA_VERSION`` is refused (never written to).

:func:`create_missing` makes every table of ``metadata`` the database lacks (a table added
to the schema without a version change, as ``ledger_ended_sessions`` was), with its
indexes, and touches nothing else: ``stopline ledger init`` runs it on an existing ledger,
so a role without the right to create tables can then run ``stopline serve``. A missing
history table (:data:`HISTORY`) is damage, never re-made empty.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    insert,
    inspect,
    text,
)

from .errors import SchemaError

__all__ = ["SCHEMA_VERSION", "metadata", "meta", "heads", "entries", "links", "nodes", "flush", "MIGRATIONS",
           "GUARDED", "LEDGER_TABLES", "guard_ddl", "guard_problems", "restore_guards", "weak_guards",
           "strengthen_guards", "append_function_ddl",
           "migrate", "ended_sessions", "create_ended_sessions", "create_missing", "missing_tables", "HISTORY",
           "unprojected"]

SCHEMA_VERSION = 3
LOG = 1  # the single log of a deployment (the heads row)

_Seq = BigInteger().with_variant(Integer(), "sqlite")  # SQLite: a rowid alias

metadata = MetaData()

meta = Table("ledger_meta", metadata,
             Column("name", String(64), primary_key=True),
             Column("value", Text, nullable=False))

heads = Table("ledger_heads", metadata,
              Column("log", Integer, primary_key=True, autoincrement=False),
              Column("size", BigInteger, nullable=False),
              Column("head", String(64), nullable=False),
              Column("frontier", Text, nullable=False))

entries = Table("ledger_entries", metadata,
                Column("seq", _Seq, primary_key=True, autoincrement=False),
                Column("id", String(64), nullable=False, unique=True),
                Column("kind", String(32), nullable=False),
                Column("workflow", String(256), nullable=True),
                Column("key", String(256), nullable=True, unique=True),
                Column("links", Text, nullable=False),
                Column("body", Text, nullable=False),
                Column("time", String(32), nullable=False),
                Column("prev", String(64), nullable=False),
                Column("hash", String(64), nullable=False),
                Index("ledger_entries_kind", "kind", "seq"),
                Index("ledger_entries_workflow", "workflow", "seq"),
                Index("ledger_entries_time", "time"),
                # (version 3) the stops and resumes of a workflow: what a fenced append checks
                Index("ledger_entries_state", "workflow", "seq",
                      sqlite_where=text("kind IN ('stop', 'resume')"),
                      postgresql_where=text("kind IN ('stop', 'resume')")))

links = Table("ledger_links", metadata,
              Column("from_seq", BigInteger, primary_key=True, autoincrement=False),
              Column("pos", Integer, primary_key=True, autoincrement=False),
              Column("to_seq", BigInteger, nullable=False),
              Index("ledger_links_to", "to_seq", "from_seq"))

nodes = Table("ledger_nodes", metadata,
              Column("leaf", BigInteger, primary_key=True, autoincrement=False),
              Column("level", SmallInteger, primary_key=True, autoincrement=False),
              Column("hash", String(64), nullable=False))

flush = Table("ledger_flush", metadata,
              Column("shard", Integer, primary_key=True, autoincrement=False),
              Column("n", BigInteger, nullable=False))

#: reviewer sessions signed out before their end (``stopline serve``): one primary-key lookup per request
ended_sessions = Table("ledger_ended_sessions", metadata,
                       Column("sid", String(64), primary_key=True),
                       Column("ended_until", BigInteger, nullable=False),
                       Index("ledger_ended_sessions_until", "ended_until"))

#: the entries a writer appended without keeping the runtime's projections (a raw append,
#: `stopline ledger append`), while a runtime keeps projections of this ledger (the
#: ``ledger_meta`` row ``projections``, which the runtime writes): the runtime folds them into
#: its projections before it reads them, then deletes their rows. A table added without a
#: version change (``create_missing``): a ledger that lacks it is given it by ``stopline
#: ledger init`` or by a runtime opening it, which then rebuilds its projections once
unprojected = Table("ledger_unprojected", metadata,
                    Column("seq", BigInteger, primary_key=True, autoincrement=False))

# version 2's sequencer queue (dropped by version 3): kept out of ``metadata`` so a new ledger never has it
_v2_metadata = MetaData()
queue = Table("ledger_queue", _v2_metadata,
              Column("qid", _Seq, primary_key=True, autoincrement=True),
              Column("grp", String(32), nullable=False),
              Column("id", String(64), nullable=False),
              Column("kind", String(32), nullable=False),
              Column("workflow", String(256), nullable=True),
              Column("key", String(256), nullable=True),
              Column("links", Text, nullable=False),
              Column("body", Text, nullable=False),
              Column("time", String(32), nullable=False))

GUARDED = ("ledger_entries", "ledger_links", "ledger_nodes")
#: the tables that hold the log and its head: a ledger lacking one is damaged (never re-made empty)
HISTORY = ("ledger_meta", "ledger_heads", *GUARDED)
#: every table a ledger has had (version 2's queue included): anything else in the database is another application's
LEDGER_TABLES = frozenset({"ledger_meta", "ledger_heads", "ledger_entries", "ledger_links", "ledger_nodes",
                           "ledger_flush", "ledger_queue", "ledger_ended_sessions", "ledger_unprojected"})
REFUSAL = "stopline ledger: entries are append-only"
_PG_REFUSE_SRC = f" BEGIN RAISE EXCEPTION '{REFUSAL}' USING ERRCODE = 'insufficient_privilege'; END "
_PG_REFUSE_FN = "ledger_refuse_change"
# pg_trigger.tgtype bits: 1 row, 2 before, 8 delete, 16 update, 32 truncate
_PG_TGTYPE = {"no_change": 1 | 2 | 8 | 16, "no_truncate": 2 | 32}


def _sqlite_guards() -> dict[str, tuple[str, str]]:
    """name -> (table, the statement that makes it)."""
    return {f"{t}_no_{op.lower()}": (t, f"CREATE TRIGGER IF NOT EXISTS {t}_no_{op.lower()} BEFORE {op} ON {t} "
                                        f"BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END")
            for t in GUARDED for op in ("UPDATE", "DELETE")}


def guard_ddl(dialect: str) -> list[str]:
    """The statements that install the UPDATE/DELETE-refusing triggers on ``dialect``."""
    out: list[str] = []
    if dialect == "sqlite":
        return [stmt for _t, stmt in _sqlite_guards().values()]
    out.append(f"CREATE OR REPLACE FUNCTION {_PG_REFUSE_FN}() RETURNS trigger LANGUAGE plpgsql AS "
               f"$${_PG_REFUSE_SRC}$$")
    for t in GUARDED:
        out.append(f"DROP TRIGGER IF EXISTS {t}_no_change ON {t}")
        out.append(f"CREATE TRIGGER {t}_no_change BEFORE UPDATE OR DELETE ON {t} "
                   f"FOR EACH ROW EXECUTE FUNCTION {_PG_REFUSE_FN}()")
        out.append(f"DROP TRIGGER IF EXISTS {t}_no_truncate ON {t}")
        out.append(f"CREATE TRIGGER {t}_no_truncate BEFORE TRUNCATE ON {t} "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION {_PG_REFUSE_FN}()")
        # ALWAYS (tgenabled ``A``): a plain ENABLE (``O``) is skipped by a session with
        # session_replication_role = replica, which leaves no trace in the catalog
        for suffix in _PG_TGTYPE:
            out.append(f"ALTER TABLE {t} ENABLE ALWAYS TRIGGER {t}_{suffix}")
    return out


def weak_guards(conn: Connection) -> list[str]:
    """The PostgreSQL guard triggers enabled the way older ledgers have them (a plain
    ``ENABLE``, ``tgenabled`` ``O``: a ``session_replication_role = replica`` session skips them)
    on tables the current role may alter (owns, or is a superuser): what
    :func:`strengthen_guards` would make ALWAYS. ``[]`` on SQLite. Not a :func:`guard_problems`
    entry: such a ledger verifies; ``stopline ledger init`` strengthens them."""
    if conn.dialect.name != "postgresql":
        return []
    rows = conn.exec_driver_sql(
        "SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "WHERE NOT t.tgisinternal AND t.tgenabled = 'O' AND pg_has_role(c.relowner, 'MEMBER') "
        "AND t.tgrelid IN (" + ", ".join(f"to_regclass('{t}')" for t in GUARDED) + ")").all()
    want = {f"{t}_{suffix}" for t in GUARDED for suffix in _PG_TGTYPE}
    return sorted(str(r[0]) for r in rows if r[0] in want)


def strengthen_guards(conn: Connection, names: Iterable[str]) -> None:
    """Make the guard triggers ``names`` (of :func:`weak_guards`) fire in every session
    (``ENABLE ALWAYS``), in the caller's (locked) transaction. Writes no entry."""
    for name in names:
        table = next(t for t in GUARDED if name.startswith(f"{t}_no_"))
        conn.exec_driver_sql(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {name}")


def _words(sql: str | None) -> str:
    return " ".join((sql or "").split())


def guard_problems(conn: Connection) -> list[str]:
    """What is wrong with the guard triggers, one phrase per trigger (``[]`` when every one is
    there, enabled and as the ledger made it). One catalog query: ``sqlite_master`` on
    SQLite (whose triggers cannot be disabled), ``pg_trigger`` on PostgreSQL, where a
    trigger must also be enabled (``tgenabled`` ``A``, as the ledger makes them, or ``O``, as
    older ledgers have them (see :func:`weak_guards`): not ``D``, disabled,
    nor ``R``, which fires only in replica sessions), fire before the right events for every
    row (no column list, no ``WHEN``) and call the refusing function unchanged."""
    out: list[str] = []
    if conn.dialect.name == "sqlite":
        want = _sqlite_guards()
        found = {name: (tbl, sql) for name, tbl, sql in conn.exec_driver_sql(
            "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'trigger'")}
        for name, (table, stmt) in want.items():
            if name not in found:
                out.append(f"`{name}` is missing")
            elif found[name][0] != table or _words(found[name][1]) != _words(stmt.replace(" IF NOT EXISTS", "")):
                out.append(f"`{name}` was changed")
        return out
    rows = conn.exec_driver_sql(
        "SELECT c.relname, t.tgname, t.tgenabled, t.tgtype, t.tgattr::text, t.tgqual IS NULL, p.proname, p.prosrc "
        "FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_proc p ON p.oid = t.tgfoid "
        "WHERE NOT t.tgisinternal AND t.tgrelid IN ("
        + ", ".join(f"to_regclass('{t}')" for t in GUARDED) + ")").all()
    found_pg = {(r[0], r[1]): r for r in rows}
    for t in GUARDED:
        for suffix, tgtype in _PG_TGTYPE.items():
            name = f"{t}_{suffix}"
            r = found_pg.get((t, name))
            if r is None:
                out.append(f"`{name}` is missing")
            elif str(r[2]) not in ("O", "A"):
                out.append(f"`{name}` is disabled")
            elif (r[3] != tgtype or (r[4] or "").strip() or not r[5] or r[6] != _PG_REFUSE_FN
                  or _words(r[7]) != _words(_PG_REFUSE_SRC)):
                out.append(f"`{name}` was changed")
    return out


def restore_guards(conn: Connection) -> None:
    """Re-create every guard trigger as the ledger makes it (enabled), in the caller's
    (locked) transaction. Writes no entry."""
    if conn.dialect.name == "sqlite":
        for name in _sqlite_guards():
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
    for stmt in guard_ddl(conn.dialect.name):
        conn.exec_driver_sql(stmt)


def _v1(conn: Connection) -> None:
    metadata.create_all(conn)
    for stmt in guard_ddl(conn.dialect.name):
        conn.exec_driver_sql(stmt)
    log_id = str(uuid.uuid4())
    conn.execute(insert(meta), [{"name": "log_id", "value": log_id},
                                {"name": "origin", "value": f"stopline.dev/ledger/{log_id}"}])
    conn.execute(insert(heads).values(log=LOG, size=0, head="0" * 64, frontier=""))


def create_ended_sessions(conn: Connection) -> None:
    """Make ``ledger_ended_sessions`` if the ledger lacks it (one made before the table
    existed), in the caller's transaction: call it under the append lock
    (``Ledger.transact``) so concurrent servers make it once."""
    ended_sessions.create(conn, checkfirst=True)


def missing_tables(conn: Connection, tables: Iterable[Table] | None = None) -> list[str]:
    """The names of ``tables`` (default: every table of the current schema) that the
    connection's default schema lacks: one catalog read, no DDL."""
    have = set(inspect_tables(conn))
    return [t.name for t in (metadata.sorted_tables if tables is None else tables) if t.name not in have]


def create_missing(conn: Connection) -> list[str]:
    """Make every table of the current schema the ledger lacks, with its indexes, in the
    caller's (locked) transaction, and return their names (``[]``: nothing done, no DDL
    issued). Rows, triggers and every existing table are left as they are. A missing
    history table (:data:`HISTORY`) raises :class:`SchemaError`: the ledger is damaged."""
    missing = missing_tables(conn)
    damaged = [n for n in missing if n in HISTORY]
    if damaged:
        raise SchemaError(f"the ledger is damaged: its table{'s' if len(damaged) > 1 else ''} "
                          f"{', '.join(f'`{n}`' for n in damaged)} {'are' if len(damaged) > 1 else 'is'} missing "
                          "(restore it from a backup; an empty one is never made in its place)")
    for t in metadata.sorted_tables:
        if t.name in missing:
            t.create(conn, checkfirst=True)
    return missing


def _v2(conn: Connection) -> None:
    queue.create(conn, checkfirst=True)
    if conn.dialect.name == "postgresql":
        # a queue table churns (every row is deleted once sequenced): vacuum it early so
        # the sequencer's scan does not wade through dead rows
        conn.exec_driver_sql("ALTER TABLE ledger_queue SET (autovacuum_vacuum_scale_factor = 0, "
                             "autovacuum_vacuum_threshold = 200, autovacuum_vacuum_cost_delay = 0)")


def _v3(conn: Connection) -> None:
    flush.create(conn, checkfirst=True)
    state = next(i for i in entries.indexes if i.name == "ledger_entries_state")
    state.create(conn, checkfirst=True)
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("DROP TABLE IF EXISTS ledger_queue")
        for ddl in append_function_ddl():
            conn.exec_driver_sql(ddl)
    else:
        conn.exec_driver_sql("DROP TABLE IF EXISTS ledger_queue")


def append_function_ddl() -> list[str]:
    """``ledger_append_batch``: the PostgreSQL append path in one statement (version 3), and
    ``ledger_append_one``, the same for a request of one entry with scalar arguments.

    Takes one request batch as parallel arrays (entry ``i`` of group ``p_grp[i]``; the
    client made each id and the RFC 8785 leaf bytes around ``prev`` and ``seq``:
    ``p_pre`` ends with ``"prev":"``, ``p_post`` starts with ``,"time":``), takes the
    head row's lock, and per group: refuses it as ``stale`` when its fence workflow has a
    ``stop`` or ``resume`` entry at or after the fence seq (or one earlier in the batch),
    leaves it to the client as ``fallback`` when an idempotency key is used or a link is
    unknown (the client's planner answers those: the existing entry or the error), else
    writes its entries (hash ``SHA-256(0x00 || pre || prev || "","seq":" || seq || post)``),
    their link rows and the Merkle nodes they close, and finally the head. Returns one row
    per entry: ``(i, status, seq, prev, hash)``. With ``p_async`` the transaction commits
    without waiting for the WAL flush (the client then runs a durability barrier)."""
    return [_APPEND_BATCH, _APPEND_ONE]


_APPEND_BATCH = r"""
CREATE OR REPLACE FUNCTION ledger_append_batch(
    p_grp int[], p_id text[], p_kind text[], p_wf text[], p_key text[], p_links text[], p_body text[],
    p_time text[], p_pre bytea[], p_post bytea[], p_fence_wf text[], p_fence_since bigint[], p_async boolean)
RETURNS TABLE(i int, status text, seq bigint, prev text, hash text)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_size bigint; v_head text; v_front text;
    n int := coalesce(array_length(p_id, 1), 0);
    g0 int := 1; g1 int; j int; bad text; lid text; hb bytea; idx bigint; lvl int; h text;
    fenced text[] := '{}'; keys text[] := '{}'; gkeys text[]; ids text[] := '{}';
BEGIN
    IF p_async THEN
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    SELECT hd.size, hd.head, hd.frontier INTO v_size, v_head, v_front FROM ledger_heads hd WHERE hd.log = 1 FOR UPDATE;
    WHILE g0 <= n LOOP
        g1 := g0;
        WHILE g1 < n AND p_grp[g1 + 1] = p_grp[g0] LOOP g1 := g1 + 1; END LOOP;
        bad := NULL;
        IF p_fence_wf[g0] IS NOT NULL AND (p_fence_wf[g0] = ANY(fenced) OR EXISTS (
                SELECT 1 FROM ledger_entries e WHERE e.workflow = p_fence_wf[g0] AND e.kind IN ('stop', 'resume')
                AND e.seq >= p_fence_since[g0])) THEN
            bad := 'stale';
        END IF;
        gkeys := '{}';
        IF bad IS NULL THEN
            FOR j IN g0..g1 LOOP
                IF p_key[j] IS NOT NULL AND (p_key[j] = ANY(keys) OR p_key[j] = ANY(gkeys) OR EXISTS (
                        SELECT 1 FROM ledger_entries e WHERE e.key = p_key[j])) THEN
                    bad := 'fallback'; EXIT;
                END IF;
                FOR lid IN SELECT l.x FROM json_array_elements_text(p_links[j]::json) AS l(x) LOOP
                    IF NOT (lid = ANY(ids) OR lid = ANY(p_id[g0:j - 1])
                            OR EXISTS (SELECT 1 FROM ledger_entries e WHERE e.id = lid)) THEN
                        bad := 'fallback'; EXIT;
                    END IF;
                END LOOP;
                EXIT WHEN bad IS NOT NULL;
                IF p_key[j] IS NOT NULL THEN gkeys := gkeys || p_key[j]; END IF;
            END LOOP;
        END IF;
        IF bad IS NOT NULL THEN
            FOR j IN g0..g1 LOOP
                i := j; status := bad; seq := NULL; prev := NULL; hash := NULL;
                RETURN NEXT;
            END LOOP;
        ELSE
            keys := keys || gkeys;
            FOR j IN g0..g1 LOOP
                hb := sha256('\x00'::bytea || p_pre[j] || convert_to(v_head || '","seq":' || v_size::text, 'UTF8')
                             || p_post[j]);
                h := encode(hb, 'hex');
                INSERT INTO ledger_entries (seq, id, kind, workflow, key, links, body, time, prev, hash)
                VALUES (v_size, p_id[j], p_kind[j], p_wf[j], p_key[j], p_links[j], p_body[j], p_time[j], v_head, h);
                INSERT INTO ledger_links (from_seq, pos, to_seq)
                SELECT v_size, l.ord - 1, e.seq
                FROM json_array_elements_text(p_links[j]::json) WITH ORDINALITY AS l(x, ord)
                JOIN ledger_entries e ON e.id = l.x;
                idx := v_size; lvl := 0;
                WHILE (idx & 1) = 1 LOOP
                    hb := sha256('\x01'::bytea || decode(right(v_front, 64), 'hex') || hb);
                    v_front := left(v_front, length(v_front) - 64);
                    idx := idx >> 1; lvl := lvl + 1;
                    INSERT INTO ledger_nodes (leaf, level, hash) VALUES (v_size, lvl, encode(hb, 'hex'));
                END LOOP;
                v_front := v_front || encode(hb, 'hex');
                i := j; status := 'ok'; seq := v_size; prev := v_head; hash := h;
                RETURN NEXT;
                ids := ids || p_id[j];
                IF p_kind[j] IN ('stop', 'resume') AND p_wf[j] IS NOT NULL THEN fenced := fenced || p_wf[j]; END IF;
                v_head := h; v_size := v_size + 1;
            END LOOP;
        END IF;
        g0 := g1 + 1;
    END LOOP;
    UPDATE ledger_heads SET size = v_size, head = v_head, frontier = v_front WHERE log = 1;
END
$fn$
"""

_APPEND_ONE = """
CREATE OR REPLACE FUNCTION ledger_append_one(
    p_id text, p_kind text, p_wf text, p_key text, p_links text, p_body text, p_time text, p_pre bytea,
    p_post bytea, p_fence_wf text, p_fence_since bigint, p_async boolean)
RETURNS TABLE(i int, status text, seq bigint, prev text, hash text)
LANGUAGE sql AS $fn$
SELECT * FROM ledger_append_batch(ARRAY[0], ARRAY[p_id], ARRAY[p_kind], ARRAY[p_wf], ARRAY[p_key], ARRAY[p_links],
    ARRAY[p_body], ARRAY[p_time], ARRAY[p_pre], ARRAY[p_post], ARRAY[p_fence_wf], ARRAY[p_fence_since], p_async)
$fn$
"""


MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _v1, 2: _v2, 3: _v3}


def migrate(conn: Connection, current: int) -> int:
    """Apply every migration after ``current`` inside the caller's (locked) transaction."""
    for v in range(current + 1, SCHEMA_VERSION + 1):
        MIGRATIONS[v](conn)
        if v == 1:
            conn.execute(insert(meta).values(name="schema_version", value=str(v)))
        else:
            conn.execute(meta.update().where(meta.c.name == "schema_version").values(value=str(v)))
    # a table added to the schema without a version change (ledger_ended_sessions), which a
    # ledger made by an older version's migrations lacks
    create_missing(conn)
    return SCHEMA_VERSION


def read_version(conn: Connection) -> int | None:
    """The schema version of the database, or None if it holds no ledger tables."""
    names = set(inspect_tables(conn))
    if "ledger_meta" not in names:
        return None
    row = conn.execute(text("SELECT value FROM ledger_meta WHERE name = 'schema_version'")).first()
    if row is None:
        if "ledger_heads" in names and "ledger_entries" in names:  # (a ledger's tables: the row was deleted)
            raise SchemaError("the ledger is damaged: `ledger_meta` has no schema_version row (deleted in the "
                              "database: restore it from a backup; nothing was changed)")
        return None
    try:
        return int(row[0])
    except (TypeError, ValueError):
        raise SchemaError(f"the ledger is damaged: its schema version is {str(row[0])[:32]!r}, not a number") from None


def inspect_tables(conn: Connection) -> list[str]:
    """The table names in the connection's default schema."""
    return list(inspect(conn).get_table_names())
