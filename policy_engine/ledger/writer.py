"""The appending half of the ``Ledger``: an entry prepared and checked, the write
transaction under the log's row lock, in-process group commit, the PostgreSQL queue
and its sequencer, ``transact`` and ``checkpoint``. ``LedgerWriter`` is a base of
``Ledger`` (store.py) and builds on ``LedgerReader``."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from . import merkle, schema
from .canonical import canonical_text, leaf_data, parse_body
from .errors import IdempotencyConflict, InvalidEntry
from .kinds import check_entry
from .note import Checkpoint, SigningKey, sign_checkpoint
from .reader import LedgerReader
from .records import _MAX_LINKS, _PG_SEQUENCER_LOCK, E, Entry, H, NewEntry, _db, format_time


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



class LedgerWriter(LedgerReader):
    """Appends to an open ledger (a base of :class:`~policy_engine.ledger.store.Ledger`)."""

    origin: str
    # set by Ledger.__init__ (store.py): the statements rendered once, the group-commit state
    _ph: str
    _q: Callable[[str], str]
    _sql_ins_e: str
    _sql_ins_l: str
    _sql_ins_n: str
    _sql_ins_q: str
    _sql_head: str
    _sql_set_head: str
    _e_select: str
    _gc: threading.Condition
    _gc_pending: list[_Group]
    _gc_leader: bool

    # ------------------------------------------------------------------ transactions
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
        given = tuple(n.links)  # int links were resolved to ids by append_many
        links = tuple(x for x in given if isinstance(x, str) and x)
        if len(given) > _MAX_LINKS or len(links) != len(given):
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
        t = format_time(n.time if n.time is not None else datetime.now(UTC))
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
            cur: Any = raw.cursor()  # the driver's cursor (sqlite3 or psycopg)
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
            pg: Any = raw.dbapi_connection  # a psycopg connection (pipeline() is psycopg's)
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
                    e_rows.append(
                        (
                            size,
                            eid,
                            p.kind,
                            p.workflow,
                            p.key,
                            json.dumps(list(p.links), separators=(",", ":")),
                            p.body_json,
                            p.time,
                            head,
                            h,
                        )
                    )
                    l_rows.extend((size, i, new_ids[x] if x in new_ids else seq_of[x]) for i, x in enumerate(p.links))
                    n_rows.extend((size, lv, nh.hex()) for lv, _idx, nh in cr.append(bytes.fromhex(h)))
                    new_ids[eid] = size
                    if p.key is not None:
                        new_keys[p.key] = entry
                    out.append(entry)
                    size, head = size + 1, h
            except (InvalidEntry, IdempotencyConflict) as err:
                del e_rows[marks[0] :], l_rows[marks[1] :], n_rows[marks[2] :]
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

    # ------------------------------------------------------------------ checkpoints
    @_db
    def checkpoint(
        self, key: SigningKey, *, path: str | os.PathLike[str] | None = None, time: datetime | None = None
    ) -> tuple[Checkpoint, Entry]:
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
