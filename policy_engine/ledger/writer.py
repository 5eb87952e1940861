"""The appending half of the ``Ledger``: an entry prepared and checked, the write
transaction under the log's row lock, in-process group commit, PostgreSQL's one-statement
append (the server-side function of schema v3) and its durability barrier, ``transact``
and ``checkpoint``. ``LedgerWriter`` is a base of
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
from .canonical import Canonical, canonical_text, leaf_data
from .errors import CheckpointError, IdempotencyConflict, InvalidEntry, LedgerUnavailable, StateChanged
from .kinds import check_entry
from .note import Checkpoint, SigningKey, sign_checkpoint
from .reader import LedgerReader
from .records import _MAX_LINKS, E, Entry, H, NewEntry, _db, begin_immediate, format_time


@dataclass
class _Prepared:
    kind: str
    body_json: str
    workflow: str | None
    links: tuple[str, ...]
    key: str | None
    time: str
    id: str | None = None  # made when the request is prepared (a random UUID), before the lock
    keys: tuple[str, ...] | None = None  # a Canonical body's top-level keys and vouched values (Entry.top)
    top: dict | None = None


#: the entries of ids ``?...`` listed as not projected, while a runtime keeps projections
#: (``schema.unprojected``); an id answered by an existing key is no new entry: nothing listed
_SQL_MARK = ("INSERT INTO ledger_unprojected (seq) SELECT seq FROM ledger_entries WHERE id IN ({}) "
             "AND EXISTS (SELECT 1 FROM ledger_meta WHERE name = 'projections')")


#: ``Connection.info`` key: in a write transaction, the first entry ``ledger_unprojected``
#: lists (None: none), read with the head row; ``_UNREAD`` when it was not read
UNPROJECTED = "stopline.unprojected"
_UNREAD = object()


def _marks_of(ids: Sequence[str]) -> list[tuple[str, Sequence[Any]]]:
    """The statements (``?`` placeholders) listing the entries ``ids`` in ``ledger_unprojected``."""
    return [(_SQL_MARK.format(", ".join("?" * len(ids[i:i + 500]))), list(ids[i:i + 500]))
            for i in range(0, len(ids), 500)]


_PREV_SEQ = ',"prev":"","seq":0,"time":'


def _leaf_parts(p: _Prepared) -> tuple[bytes, bytes]:
    """The entry's RFC 8785 leaf bytes around its ``prev`` and ``seq`` (known only under the
    lock): ``pre`` ends with ``"prev":"``, ``post`` starts with ``,"time":``. The header is
    after the body and its strings are escaped, so the last match is the header's."""
    data = leaf_data(p.body_json, seq=0, id=p.id, kind=p.kind, workflow=p.workflow, links=p.links, key=p.key,
                     time=p.time, prev="")
    at = data.rindex(_PREV_SEQ.encode())
    return data[:at + 9], data[at + len(_PREV_SEQ) - 8:]


def _frontier(size: Any, text: Any) -> merkle.CompactRange:
    """The head row's Merkle frontier; a row edited in the database is reported, never a crash
    (and never appended after: the chain would continue from a state nobody wrote)."""
    try:
        return merkle.CompactRange.decode(size, text)
    except (ValueError, TypeError):
        raise LedgerUnavailable("the ledger's head row is corrupt (its Merkle frontier does not fit its size); "
                                "nothing was written: run `stopline ledger verify`") from None


def _appendable(n: NewEntry) -> None:
    """Refuse a ``checkpoint`` entry from the append path: only :meth:`checkpoint` writes one
    (it signs the tree head under the append lock). One appended with any other body (a note
    signed by another key, or none) could never be removed and would fail every ``verify``
    with the log's key from then on."""
    if getattr(n, "kind", None) == "checkpoint":
        raise InvalidEntry("a `checkpoint` entry is written by `checkpoint()` (`stopline ledger checkpoint`), which "
                           "signs the tree head; it cannot be appended")


def _links_json(links: Sequence[str]) -> str:
    return json.dumps(list(links), separators=(",", ":"))


def _stale(fence: tuple[str, int] | None) -> StateChanged:
    wf, since = fence if fence is not None else ("?", 0)
    return StateChanged(f"workflow `{wf}` was stopped or resumed at or after seq {since}: read its state again")


class _Group:
    """One append request (an atomic batch) in a group commit, with its fence (a workflow
    and a seq: no ``stop`` or ``resume`` of it from there on, or the request fails with
    :class:`StateChanged`) and the statements to run after it in the same transaction."""

    __slots__ = ("items", "result", "error", "done", "fence", "then")

    def __init__(self, items: list[_Prepared], fence: tuple[str, int] | None = None,
                 then: Sequence[tuple[str, Sequence[Any]]] = ()) -> None:
        self.items = items
        self.result: list[Entry] | None = None
        self.error: BaseException | None = None
        self.done = False
        self.fence = fence
        self.then = then



class LedgerWriter(LedgerReader):
    """Appends to an open ledger (a base of :class:`~policy_engine.ledger.store.Ledger`)."""

    origin: str
    # set by Ledger.__init__ (store.py): the statements rendered once, the group-commit state
    _ph: str
    _q: Callable[[str], str]
    _sql_ins_e: str
    _sql_ins_l: str
    _sql_ins_n: str
    _sql_head: str
    _sql_set_head: str
    _sql_fence: str
    durability: str
    _e_select: str
    _gc: threading.Condition
    _gc_pending: list[_Group]
    _gc_leader: bool
    _marks: bool  # the ledger has ``ledger_unprojected`` (see ``append_many``'s ``projected``)

    # ------------------------------------------------------------------ transactions
    @contextmanager
    def _write(self) -> Iterator[tuple[Connection, list]]:
        """A write transaction holding the log's row lock; yields the connection and head state."""
        barrier = self.backend == "postgresql" and self.durability == "full"
        with self._engine.connect() as c:
            c = c.execution_options(ledger_write=True)
            with c.begin():
                if barrier:  # release the row lock at commit, not after the flush: the barrier below waits for it
                    c.exec_driver_sql("SET LOCAL synchronous_commit = off")
                marks = self._marks
                q = self._head_select(marks)
                row = c.execute(q).one()
                # the first entry waiting for the runtime's projections, read with the head (None: none
                # waits); for the runtime's fold (`projections.catch_up`), which then needs no read
                c.info[UNPROJECTED] = row[3] if marks else _UNREAD
                try:
                    yield c, [row.size, row.head, _frontier(row.size, row.frontier)]
                finally:
                    c.info.pop(UNPROJECTED, None)
            if barrier:
                c.exec_driver_sql(self._SQL_PG_BARRIER)
                c.commit()

    def _head_select(self, marks: bool) -> Any:
        """The head row under the lock, with the first entry ``ledger_unprojected`` lists when
        ``marks`` (built once per ledger, not per write)."""
        cache = self.__dict__.setdefault("_head_q", {})
        q = cache.get(marks)
        if q is None:
            U = schema.unprojected
            q = select(H.c.size, H.c.head, H.c.frontier,
                       *([select(U.c.seq).order_by(U.c.seq).limit(1).scalar_subquery()] if marks else [])
                       ).where(H.c.log == schema.LOG)
            q = cache[marks] = q.with_for_update(of=H) if self.backend == "postgresql" else q
        return q

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
        body = n.body
        if type(body) is Canonical:  # the text, vouched canonical by its producer (the runtime's gate)
            if n.kind in ("step", "approval"):
                raise InvalidEntry(f"a `{n.kind}` body is given as a value, not as canonical text")
            check_entry(n.kind, dict.fromkeys(body.keys), n.workflow, links)
            t = format_time(n.time if n.time is not None else datetime.now(UTC))
            return _Prepared(n.kind, body.text, n.workflow, links, n.key, t, str(uuid.uuid4()), body.keys, body.top)
        check_entry(n.kind, body, n.workflow, links)
        text = canonical_text(body)
        t = format_time(n.time if n.time is not None else datetime.now(UTC))
        # the entry's body is parsed from the text when first read (Entry._unparsed)
        return _Prepared(n.kind, text, n.workflow, links, n.key, t, str(uuid.uuid4()))

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
    def append_many(self, items: Iterable[NewEntry], *, fence: tuple[str, int] | None = None,
                    then: Callable[[list[str]], Sequence[tuple[str, Sequence[Any]]]] | None = None,
                    projected: bool = False) -> list[Entry]:
        """Append a batch in one transaction (one lock, one commit): all of it or none.

        Returns the entries in order (an existing entry for each key that was already
        used). Concurrent calls share commits (group commit, see the module doc); each
        returns only after the transaction holding its entries committed.

        ``fence=(workflow, seq)``: append only if the log holds no ``stop`` or ``resume``
        entry of ``workflow`` at or after ``seq`` (checked under the lock, together with
        the requests committed before this one in the same group); else nothing is written
        and :class:`StateChanged` is raised. A caller that read a workflow's state when the
        log had ``seq`` entries appends with that fence and, on ``StateChanged``, reads
        again: a check-then-append that shares the group commit (what the runtime's gate
        does). ``then(ids)``: given the ids the batch's entries will have (made before the
        lock), the statements (``?`` placeholders, no ``%``) to run after the batch in the
        same transaction, for caches kept beside the log. Write them so they change nothing
        unless those entries are in the log (``INSERT ... SELECT ... FROM ledger_entries
        WHERE id = ?``): on PostgreSQL they travel with the append in one message, and an
        entry answered by an existing idempotency key keeps its old id.

        ``projected``: the caller (the runtime) keeps its projections of these entries in the
        same transaction. Otherwise, while a runtime keeps projections of this ledger, the
        new entries are listed in ``ledger_unprojected`` (same transaction) for the runtime to
        fold in before it next reads its state: an entry appended beside the runtime (a
        ``stop`` by ``stopline ledger append``) counts as one the runtime appended.
        """
        prepared: list[_Prepared] = []
        for n in items:  # an int link i names the i-th entry of this batch (its id is made here)
            _appendable(n)
            if any(isinstance(x, int) and not isinstance(x, bool) for x in n.links):
                try:
                    links = [prepared[x].id if isinstance(x, int) and not isinstance(x, bool) and 0 <= x < len(prepared)
                             else (x if isinstance(x, str) else None) for x in n.links]
                except IndexError:
                    links = [None]
                if None in links:
                    raise InvalidEntry("an int link names an earlier entry of the same batch")
                n = NewEntry(n.kind, n.body, n.workflow, links, n.key, n.time)  # type: ignore[arg-type]
            prepared.append(self._prepare_entry(n))
        if not prepared:
            return []
        stmts: Sequence[tuple[str, Sequence[Any]]] = ()
        if then is not None:
            stmts = then([p.id for p in prepared if p.id is not None])
        if not projected and self._marks:
            stmts = [*stmts, *_marks_of([p.id for p in prepared if p.id is not None])]
        if stmts:
            if self.backend == "postgresql":
                stmts = [(sql.replace("?", "%s"), params) for sql, params in stmts]
        return self._append_grouped(_Group(prepared, fence, stmts))

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
            if self.backend == "postgresql":
                self._append_pg(batch)
            else:
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
                begin_immediate(cur, raw.info["busy_ms"])  # (in slices: a Ctrl-C is acted on during the wait)
            cur.execute(self._sql_head)
            size, head, frontier = cur.fetchone()
            state = [size, head, _frontier(size, frontier)]
            self._plan_and_write(cur, state, groups)
            for g in groups:
                if g.error is None:
                    for sql, params in g.then:
                        cur.execute(sql, params)
            raw.commit()
        except BaseException:
            try:
                raw.rollback()
            except Exception:  # noqa: BLE001 - the connection may be gone; the first error is the one to report
                pass
            raise
        finally:
            raw.close()

    # -- PostgreSQL: one round trip per transaction (schema v3's append function)
    _SQL_PG_APPEND = ("SELECT i, status, seq, prev, hash FROM ledger_append_batch("
                      "%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")
    _SQL_PG_APPEND_ONE = ("SELECT i, status, seq, prev, hash FROM ledger_append_one("
                          "%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")
    #: the durability barrier: a write whose synchronous commit flushes the WAL past an
    #: append that committed asynchronously (one row per connection shard: no shared row lock)
    _SQL_PG_BARRIER = ("INSERT INTO ledger_flush (shard, n) VALUES (mod(pg_backend_pid(), 1024), 1) "
                       "ON CONFLICT (shard) DO UPDATE SET n = ledger_flush.n + 1")

    def _append_pg(self, groups: list[_Group]) -> None:
        """Write ``groups`` with one call of the server-side append function, in one round trip.

        The function takes the head row's lock, hashes, writes the entries, links, Merkle
        nodes and head, all in the server, so the lock is held for the function's run and
        no client round trip. With ``durability="full"`` that transaction commits without
        waiting for its WAL flush (the lock is released at once), and the same message then
        runs the durability barrier: a small write committed synchronously, whose flush
        covers the append's commit record (it is later in the WAL). PostgreSQL flushes the
        barriers of concurrent appenders together (group commit in the server), so an
        append returns only once it is on disk while one flush serves many appenders.

        One simple-query message (``BEGIN; SELECT ledger_append_...; <then>; COMMIT;
        <barrier>``, arguments bound on the client by psycopg's ``ClientCursor``): one round
        trip, where the extended protocol needs a sync (a round trip) per commit. A group
        whose idempotency key is used or whose link is unknown is left by the function and
        answered here by the general planner (the existing entry or the error).
        """
        import psycopg

        flat: list[tuple[_Group, _Prepared]] = [(g, p) for g in groups for p in g.items]
        full = self.durability == "full"
        if len(flat) == 1:
            g, p = flat[0]
            pre, post = _leaf_parts(p)
            fw, fs = g.fence if g.fence is not None else (None, None)
            stmts = [self._SQL_PG_APPEND_ONE]
            params: list[Any] = [p.id, p.kind, p.workflow, p.key, _links_json(p.links), p.body_json, p.time, pre, post,
                                 fw, fs, full]
        else:
            cols: list[list[Any]] = [[] for _ in range(12)]
            for n, g in enumerate(groups):
                fw, fs = g.fence if g.fence is not None else (None, None)
                for k, p in enumerate(g.items):
                    pre, post = _leaf_parts(p)
                    for col, v in zip(cols, (n, p.id, p.kind, p.workflow, p.key, _links_json(p.links), p.body_json,
                                             p.time, pre, post, fw if k == 0 else None, fs if k == 0 else None)):
                        col.append(v)
            stmts, params = [self._SQL_PG_APPEND], [*cols, full]
        for g in groups:
            for sql, ps in g.then:
                stmts.append(sql)
                params.extend(ps)
        stmts.append("COMMIT")
        if full:
            stmts.append(self._SQL_PG_BARRIER)
        raw = self._engine.raw_connection()
        pg: Any = raw.dbapi_connection  # a psycopg connection
        rows: list[tuple] | None = None
        try:
            pg.autocommit = True  # the message says BEGIN and COMMIT itself
            cur = psycopg.ClientCursor(pg)
            cur.execute("BEGIN; " + "; ".join(stmts), params)
            while True:
                if rows is None and cur.description is not None:
                    rows = cur.fetchall()
                if not cur.nextset():
                    break
        except BaseException:
            try:
                if pg.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    pg.execute("ROLLBACK")
            except Exception:  # noqa: BLE001 - the connection may be gone; the first error is the one to report
                pass
            raise
        finally:
            try:
                pg.autocommit = False
            except Exception:  # noqa: BLE001
                raw.invalidate()
            raw.close()
        results: dict[int, list[Entry]] = {}
        retry: list[_Group] = []
        for i, status, seq, prev, h in rows or ():
            g, p = flat[i - 1]
            if status == "ok":
                results.setdefault(id(g), []).append(self._made(p, seq, prev, h))
            elif status == "stale" and g.error is None:
                g.error = _stale(g.fence)
            elif status == "fallback" and (not retry or retry[-1] is not g):
                retry.append(g)
        for g in groups:
            if g.error is None and id(g) in results:
                g.result = results[id(g)]
        if retry:
            # the groups above are committed: a failure of this second transaction is the
            # retried groups' alone (raised from here it would be reported to every caller
            # of the batch, and a committed append answered with an error is appended again)
            try:
                self._append_direct(retry)
            except Exception as e:  # noqa: BLE001 - handed to the callers of the retried groups
                for g in retry:
                    if g.error is None:
                        g.result, g.error = None, e

    @staticmethod
    def _made(p: _Prepared, seq: int, prev: str, h: str) -> Entry:
        assert p.id is not None
        return Entry._unparsed(seq=seq, id=p.id, kind=p.kind, body_json=p.body_json, workflow=p.workflow,
                               links=p.links, key=p.key, time=p.time, prev=prev, hash=h, _keys=p.keys, _top=p.top)

    @_db
    def transact(self, build: Callable[[Connection], Sequence[NewEntry] | None], *,
                 after: Callable[[Connection, list[Entry]], None] | None = None,
                 projected: bool = False) -> list[Entry]:
        """A conditional append: ``build(conn)`` runs *inside* the append lock (the log's row
        lock: ``BEGIN IMMEDIATE`` on SQLite, ``SELECT ... FOR UPDATE`` on PostgreSQL), reads
        what it needs through ``conn`` and returns the entries to append (or nothing, or
        raises to abort: nothing is written). ``after(conn, new_entries)`` then runs in the
        same transaction (for caches kept beside the log, e.g. the runtime's projections).
        Concurrent ``transact`` calls run one at a time, so a check and its append are one
        step: of two writers racing on the same state, exactly one sees the old state.
        Returns the entries as :meth:`append_many` does (an existing entry for a used key).
        A link given as an ``int`` ``i`` names the ``i``-th entry of the same batch.
        ``projected``: as for :meth:`append_many`.
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

            made: list[str | None] = []  # each item's id when known before its insert (no idempotency key)
            for n in items:  # runs of entries in one insert; an int link to a keyed entry waits for its id
                _appendable(n)
                ints = [x for x in n.links if isinstance(x, int) and not isinstance(x, bool)]
                if ints:
                    if not all(0 <= x < len(made) and made[x] is not None for x in ints):
                        flush()
                    links: list[Any] = [(made[x] if 0 <= x < len(made) and made[x] is not None else out[x].id)
                                        if isinstance(x, int) and not isinstance(x, bool) else x for x in n.links]
                    n = NewEntry(n.kind, n.body, n.workflow, links, n.key, n.time)
                p = self._prepare_entry(n)
                group.append(p)
                made.append(p.id if p.key is None else None)
            flush()
            if not projected and self._marks:
                for sql, params in _marks_of([e.id for e in out if e.seq >= first_new]):
                    c.exec_driver_sql(sql.replace("?", self._ph), tuple(params))
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

    def _plan_and_write(self, cur: Any, state: list, groups: list[_Group]) -> None:
        """Sequence ``groups`` after ``state`` (size, head, compact range; updated in place)
        and write their rows (the general planner: SQLite, ``transact``, and the requests
        PostgreSQL's append function leaves to the client). A group that fails validation
        (its fence, an idempotency conflict, an unknown link) gets its ``error`` and writes
        nothing; the others go on."""
        existing: dict[str, Entry] = {}
        seq_of: dict[str, int] = {}
        keys = [p.key for g in groups for p in g.items if p.key is not None]
        if keys:
            existing = {e.key: e for e in self._fetch_raw(cur, "key", keys)}  # type: ignore[misc]
        wanted = list({x for g in groups for p in g.items for x in p.links})
        for i in range(0, len(wanted), 500):
            chunk = wanted[i:i + 500]
            cur.execute(f"SELECT id, seq FROM {E.name} WHERE id IN ({', '.join([self._ph] * len(chunk))})", chunk)
            seq_of.update(cur.fetchall())
        fenced: set[str] = set()  # workflows stopped or resumed earlier in this batch
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
                if g.fence is not None:
                    wf, since = g.fence
                    if wf in fenced:
                        raise _stale(g.fence)
                    cur.execute(self._sql_fence, (wf, since))
                    if cur.fetchone() is not None:
                        raise _stale(g.fence)
                for p in g.items:
                    if p.key is not None:
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
                    entry = Entry._unparsed(seq=size, id=eid, kind=p.kind, body_json=p.body_json,
                                            workflow=p.workflow, links=p.links, key=p.key, time=p.time, prev=head,
                                            hash=h, _keys=p.keys, _top=p.top)
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
                    if p.kind in ("stop", "resume") and p.workflow is not None:
                        fenced.add(p.workflow)
                    if p.key is not None:
                        new_keys[p.key] = entry
                    out.append(entry)
                    size, head = size + 1, h
            except (InvalidEntry, IdempotencyConflict, StateChanged) as err:
                del e_rows[marks[0] :], l_rows[marks[1] :], n_rows[marks[2] :]
                g.error = err
                continue
            state[0], state[1], state[2] = size, head, cr
            seq_of.update(new_ids)
            existing.update(new_keys)
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
        out = tmp = None
        if path is not None:  # a file that cannot be written is refused before anything is recorded
            # a temporary file of this writer alone (threads of one process share the pid), made
            # exclusively ("x": never another writer's file truncated), renamed over ``path`` atomically
            tmp = Path(f"{path}.tmp{os.getpid()}-{uuid.uuid4().hex[:12]}")
            try:
                if Path(path).is_dir():
                    raise IsADirectoryError(21, "Is a directory")
                out = open(tmp, "x", encoding="utf-8")  # noqa: SIM115 - closed below, on every path
            except OSError as e:
                raise CheckpointError(f"cannot write the checkpoint to {path}: {e.strerror or e}; "
                                      "nothing was recorded") from None
        try:
            with self._write() as (c, state):
                size, cr = state[0], state[2]
                root = cr.root()
                note = sign_checkpoint(key, self.origin, size, root)
                body = {"origin": self.origin, "size": size, "root": root.hex(), "note": note}
                entry = self._insert(c, state, [self._prepare_entry(NewEntry("checkpoint", body, time=time))])[0]
                if self._marks:  # (folded in by the runtime as nothing: it keeps the list a tail of the log)
                    for sql, params in _marks_of([entry.id]):
                        c.exec_driver_sql(sql.replace("?", self._ph), tuple(params))
            if out is not None:
                try:
                    out.write(note)
                    out.flush()
                    os.fsync(out.fileno())
                    out.close()
                    os.replace(tmp, path)  # type: ignore[arg-type]
                except OSError as e:
                    raise CheckpointError(f"checkpoint entry {entry.seq} was recorded, but its note could not be "
                                          f"written to {path}: {e.strerror or e}") from None
        finally:
            if out is not None:
                out.close()
                if tmp is not None and tmp.exists():
                    tmp.unlink(missing_ok=True)
        return Checkpoint(self.origin, size, root, note), entry
