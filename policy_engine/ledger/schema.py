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
``ledger_queue``    (version 2) appends waiting to be sequenced on PostgreSQL: an appender
                    inserts its entries here (id and time fixed), then whoever holds the
                    log's row lock moves every queued entry into the log in one
                    transaction (the sequencer; see ``store``). Rows are deleted once
                    sequenced; nothing in it is acknowledged, so it is not guarded.

Triggers refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL) on entries, links and
nodes: history cannot be rewritten through SQL without first dropping the triggers,
which needs the table owner's rights and shows in ``verify``.

Migrations: ``MIGRATIONS[v]`` brings a database from version ``v - 1`` to ``v``; they run
at open time under the append lock. A database whose ``schema_version`` is newer than
``SCHEMA_VERSION`` is refused (never written to).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

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

__all__ = ["SCHEMA_VERSION", "metadata", "meta", "heads", "entries", "links", "nodes", "queue", "MIGRATIONS", "GUARDED",
           "guard_ddl", "migrate"]

SCHEMA_VERSION = 2
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
                Index("ledger_entries_time", "time"))

links = Table("ledger_links", metadata,
              Column("from_seq", BigInteger, primary_key=True, autoincrement=False),
              Column("pos", Integer, primary_key=True, autoincrement=False),
              Column("to_seq", BigInteger, nullable=False),
              Index("ledger_links_to", "to_seq", "from_seq"))

nodes = Table("ledger_nodes", metadata,
              Column("leaf", BigInteger, primary_key=True, autoincrement=False),
              Column("level", SmallInteger, primary_key=True, autoincrement=False),
              Column("hash", String(64), nullable=False))

queue = Table("ledger_queue", metadata,
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
REFUSAL = "stopline ledger: entries are append-only"


def guard_ddl(dialect: str) -> list[str]:
    """The statements that install the UPDATE/DELETE-refusing triggers on ``dialect``."""
    out: list[str] = []
    if dialect == "sqlite":
        for t in GUARDED:
            for op in ("UPDATE", "DELETE"):
                out.append(f"CREATE TRIGGER IF NOT EXISTS {t}_no_{op.lower()} BEFORE {op} ON {t} "
                           f"BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END")
        return out
    out.append("CREATE OR REPLACE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ "
               f"BEGIN RAISE EXCEPTION '{REFUSAL}' USING ERRCODE = 'insufficient_privilege'; END $$")
    for t in GUARDED:
        out.append(f"DROP TRIGGER IF EXISTS {t}_no_change ON {t}")
        out.append(f"CREATE TRIGGER {t}_no_change BEFORE UPDATE OR DELETE ON {t} "
                   "FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()")
        out.append(f"DROP TRIGGER IF EXISTS {t}_no_truncate ON {t}")
        out.append(f"CREATE TRIGGER {t}_no_truncate BEFORE TRUNCATE ON {t} "
                   "FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()")
    return out


def _v1(conn: Connection) -> None:
    metadata.create_all(conn)
    for stmt in guard_ddl(conn.dialect.name):
        conn.exec_driver_sql(stmt)
    log_id = str(uuid.uuid4())
    conn.execute(insert(meta), [{"name": "log_id", "value": log_id},
                                {"name": "origin", "value": f"stopline.dev/ledger/{log_id}"}])
    conn.execute(insert(heads).values(log=LOG, size=0, head="0" * 64, frontier=""))


def _v2(conn: Connection) -> None:
    queue.create(conn, checkfirst=True)
    if conn.dialect.name == "postgresql":
        # a queue table churns (every row is deleted once sequenced): vacuum it early so
        # the sequencer's scan does not wade through dead rows
        conn.exec_driver_sql("ALTER TABLE ledger_queue SET (autovacuum_vacuum_scale_factor = 0, "
                             "autovacuum_vacuum_threshold = 200, autovacuum_vacuum_cost_delay = 0)")


MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _v1, 2: _v2}


def migrate(conn: Connection, current: int) -> int:
    """Apply every migration after ``current`` inside the caller's (locked) transaction."""
    for v in range(current + 1, SCHEMA_VERSION + 1):
        MIGRATIONS[v](conn)
        if v == 1:
            conn.execute(insert(meta).values(name="schema_version", value=str(v)))
        else:
            conn.execute(meta.update().where(meta.c.name == "schema_version").values(value=str(v)))
    return SCHEMA_VERSION


def read_version(conn: Connection) -> int | None:
    """The schema version of the database, or None if it holds no ledger tables."""
    names = set(inspect_tables(conn))
    if "ledger_meta" not in names:
        return None
    row = conn.execute(text("SELECT value FROM ledger_meta WHERE name = 'schema_version'")).first()
    return None if row is None else int(row[0])


def inspect_tables(conn: Connection) -> list[str]:
    """The table names in the connection's default schema."""
    return list(inspect(conn).get_table_names())
