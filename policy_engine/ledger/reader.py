"""The reading half of the ``Ledger``: snapshots, queries (``get``, ``entries``,
``history``, ``fetch``), the Merkle tree (``root``, ``prove``, ``prove_consistency``) and
``verify``. ``LedgerReader`` is a base of ``Ledger`` (store.py); it appends nothing."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, false, or_, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from ..timestamps import parse_rfc3339
from . import merkle, schema
from .canonical import parse_body
from .errors import EntryNotFound, InvalidQuery, LedgerUnavailable
from .note import VerifierKey
from .records import E, Entry, H, History, L, N, _db, _refused, format_time
from .verify import VerifyReport, verify_ledger

_MAX_SEQ = 2**63 - 1  # the largest integer both databases store
HISTORY_LIMIT = 10_000  # entries per side of a history, by default
_IN_CHUNK = 1000  # values per IN (...) list: within every SQLite build's and PostgreSQL's parameter limits


# a bound just after the latest time there is: every stored time sorts before it ("...59.999999Z" < "...Z~")
_LAST = datetime.max.replace(tzinfo=UTC)
_AFTER_LAST = "9999-12-31T23:59:59.999999Z~"
_SUB_MICRO = re.compile(r"\d\d:\d\d:\d\d[.,]\d{6}(\d+)")  # a fraction's digits below the microsecond


def time_arg(t: datetime | str, name: str) -> str:
    """A query's ``since``/``until`` as the stored form of a time (RFC 3339 UTC, six fraction
    digits, ``Z``), so that comparing the texts compares the instants: an RFC 3339 string
    in any spelling (``...T10:00:00Z``, ``...+02:00``, a fraction of any length) or an
    aware datetime. Raises :class:`InvalidQuery` for anything else."""
    try:
        if isinstance(t, datetime) and t.tzinfo is not None and t.utcoffset() is not None:
            return format_time(t)
        if isinstance(t, str):  # digits below the microsecond round up: an entry just before
            # the bound stays before it (`until`: in; `since`: out), never on its wrong side
            dt = parse_rfc3339(t)  # (aware, in UTC)
            m = _SUB_MICRO.search(t)
            if m is not None and m.group(1).strip("0"):
                if dt == _LAST:  # (rounded up past year 9999: after every stored time, an OverflowError)
                    return _AFTER_LAST
                dt += timedelta(microseconds=1)
            return format_time(dt)
    except (ValueError, OverflowError):
        pass
    raise InvalidQuery(f"`{name}` is not an RFC 3339 time (e.g. 2026-11-26T10:00:00Z): {str(t)[:64]!r}")


def _has_nul(v: Any) -> bool:
    """Whether a query's value is, or holds, a text with a NUL character (``"\\x00"``)."""
    if isinstance(v, str):
        return "\x00" in v
    if isinstance(v, (list, tuple)):
        return any(_has_nul(x) for x in v)
    return False


def _names_nothing(e: BaseException, params: Any) -> bool:
    """Whether ``e`` is the driver refusing, before sending the query, a value holding a NUL
    (psycopg: "PostgreSQL text fields cannot contain NUL"; a client-side error, so no SQLSTATE
    and the transaction goes on): no ledger column holds a NUL (appends refuse one), so such a
    query matches nothing, as SQLite answers it."""
    orig = getattr(e, "orig", None) or e
    if getattr(orig, "sqlstate", "") is not None:  # (an error of the server, or not psycopg's)
        return False
    try:
        return any(_has_nul(v) for v in params.values())
    except Exception:  # noqa: BLE001 - the question only: the error stands
        return False


def _parse_stored(seq: Any, body: Any, links: Any) -> tuple[Any, tuple[str, ...]]:
    """An entry row's body and links, parsed; a row whose stored text is not what the ledger
    writes (edited in the database) is reported as corrupt, not as a crash."""
    try:
        parsed = parse_body(body)
        link_ids = tuple(json.loads(links))
        if all(isinstance(x, str) for x in link_ids):
            return parsed, link_ids
    except (ValueError, TypeError, RecursionError):
        pass
    raise LedgerUnavailable(f"entry {seq} is corrupt (its stored body or links are not what the ledger wrote); "
                            "run `stopline ledger verify`")


class LedgerReader:
    """Reads of an open ledger (a base of :class:`~policy_engine.ledger.store.Ledger`)."""

    _engine: Engine
    _driver_errors: tuple[type[BaseException], ...]  # read by _db
    url: str
    backend: str
    origin: str  # the checkpoint origin line (read by verify)

    # ------------------------------------------------------------------ transactions
    @contextmanager
    def _read(self, *, snapshot: bool = False) -> Iterator[Connection]:
        with self._engine.connect() as c:
            if snapshot and self.backend == "postgresql":
                c = c.execution_options(isolation_level="REPEATABLE READ")
            with c.begin():
                yield c

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read-only transaction (one snapshot on PostgreSQL) for indexed queries over
        :mod:`schema`'s tables; rows become entries with :meth:`fetch`. A driver error in it
        is :class:`LedgerUnavailable`, except a value the driver refuses to send (a text
        holding a NUL on PostgreSQL), which is :class:`InvalidQuery`."""
        try:
            with self._read(snapshot=True) as c:
                yield c
        except (sa_exc.DBAPIError, sa_exc.InterfaceError, sa_exc.ResourceClosedError, OSError) as e:
            # a value the driver refused to send (a NUL on PostgreSQL) is the caller's: InvalidQuery
            raise _refused(self, e, False) from None
        except self._driver_errors as e:  # a statement run on the driver's own cursor
            raise _refused(self, e, False) from None

    @_db
    def query_one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        """The first row of one read statement (``?`` placeholders, no ``%``) over the
        ledger's tables and the caches kept beside them, on the driver's cursor: one
        statement is one snapshot on both backends, and one round trip (no BEGIN/COMMIT of
        its own). For hot paths such as the runtime's gate reading a workflow's state with
        the log's size."""
        raw = self._engine.raw_connection()
        try:
            if self.backend == "postgresql":
                pg: Any = raw.dbapi_connection
                pg.autocommit = True
                try:
                    cur = pg.execute(sql.replace("?", "%s"), params, prepare=True)
                    row = cur.fetchone()
                finally:
                    pg.autocommit = False
            else:
                cur = raw.cursor()
                cur.execute(sql, params)
                row = cur.fetchone()
            return None if row is None else tuple(row)
        finally:
            raw.close()

    def fetch(self, c: Connection, *where: Any, order: Any = None, limit: int | None = None) -> list[Entry]:
        """Entries matching SQLAlchemy ``where`` clauses over ``schema.entries``, in ``seq`` order."""
        return self._fetch(c, *where, order=order, limit=limit)

    def fetch_prepared(self, c: Connection, stmt: Any, params: dict[str, Any]) -> list[Entry]:
        """Entries of a prepared ``select(schema.entries)`` with bound parameters (built
        once by its caller: building the expression is most of a small read's cost). A
        parameter holding a NUL character matches nothing (none is stored), on both backends."""
        try:
            rows = c.execute(stmt, params)
        except sa_exc.DataError as e:
            if _names_nothing(e, params):
                return []
            raise
        return [self._entry(r) for r in rows]

    # ------------------------------------------------------------------ reading
    @staticmethod
    def _entry_t(r: Sequence[Any]) -> Entry:
        seq, eid, kind, wf, key, links, body, t, prev, h = r
        parsed, link_ids = _parse_stored(seq, body, links)
        return Entry(seq=seq, id=eid, kind=kind, body=parsed, body_json=body, workflow=wf,
                     links=link_ids, key=key, time=t, prev=prev, hash=h)

    @staticmethod
    def _entry(r: Any) -> Entry:
        parsed, link_ids = _parse_stored(r.seq, r.body, r.links)
        return Entry(seq=r.seq, id=r.id, kind=r.kind, body=parsed, body_json=r.body, workflow=r.workflow,
                     links=link_ids, key=r.key, time=r.time, prev=r.prev, hash=r.hash)

    def _fetch(self, c: Connection, *where: Any, order=None, limit: int | None = None) -> list[Entry]:
        q = select(E).where(*where).order_by(order if order is not None else E.c.seq)
        if limit is not None:
            q = q.limit(limit)
        try:
            rows = c.execute(q)
        except sa_exc.DataError as e:  # a value holding a NUL matches nothing (none is stored)
            if _names_nothing(e, q.compile().params):
                return []
            raise
        return [self._entry(r) for r in rows]

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
        if isinstance(ref, str) and ref.isascii() and ref.isdigit():  # (str.isdigit alone takes "²" and "٣")
            ref = int(ref)
        if isinstance(ref, int):
            # beyond any seq (and beyond the database's integers, which would refuse the query)
            return E.c.seq == ref if 0 <= ref <= _MAX_SEQ else false()
        ref = str(ref)
        # no entry has an id with a NUL (PostgreSQL would refuse the query, SQLite answer it)
        return E.c.id == ref if "\x00" not in ref else false()

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
        # (no entry's kind, workflow or id holds a NUL: such a filter matches nothing, on both backends)
        if kind is not None:
            where.append(E.c.kind == kind if not _has_nul(kind) else false())
        if workflow is not None:
            where.append(E.c.workflow == workflow if not _has_nul(workflow) else false())
        if since is not None:
            where.append(E.c.time >= time_arg(since, "since"))
        if until is not None:
            where.append(E.c.time < time_arg(until, "until"))
        if after is not None:
            after = max(min(after, _MAX_SEQ), -_MAX_SEQ)
            where.append(E.c.seq < after if reverse else E.c.seq > after)
        if limit is not None:  # (-1 was every entry on SQLite, LedgerUnavailable on PostgreSQL)
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise InvalidQuery(f"`limit` is a number of entries (0 or more) or None, not {str(limit)[:32]!r}")
            limit = min(limit, _MAX_SEQ)
        with self._read() as c:
            if link is not None:
                target = c.execute(select(E.c.seq).where(E.c.id == link)).scalar() if not _has_nul(link) else None
                if target is None:
                    raise EntryNotFound(f"no entry `{link}` in the ledger")
                where.append(E.c.seq.in_(select(L.c.from_seq).where(L.c.to_seq == target)))
            return self._fetch(c, *where, order=E.c.seq.desc() if reverse else E.c.seq, limit=limit)

    @_db
    def history(self, ref: str | int, *, limit: int | None = HISTORY_LIMIT) -> History:
        """The entry, everything it links to and everything that links to it (both transitively).

        Each side holds at most ``limit`` entries (``None``: no bound). A side that reaches
        more is cut, the nearest links kept (breadth first; at the level where it is cut,
        the lowest ``seq``), and says so: ``upstream_truncated`` / ``downstream_truncated``
        (``truncated``: either). Pass a larger ``limit`` (or ``None``) for all of it."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise InvalidQuery(f"`limit` is a number of entries (0 or more) or None, not {str(limit)[:32]!r}")
        with self._read(snapshot=True) as c:
            found = self._fetch(c, self._where_ref(ref))
            if not found:
                raise EntryNotFound(f"no entry `{ref}` in the ledger")
            start = found[0].seq
            sides: list[tuple[Entry, ...]] = []
            cut: list[bool] = []
            for src_col, dst_col in ((L.c.from_seq, L.c.to_seq), (L.c.to_seq, L.c.from_seq)):
                seen, frontier, truncated = {start}, [start], False
                while frontier:
                    nxt: set[int] = set()
                    for i in range(0, len(frontier), _IN_CHUNK):
                        nxt.update(c.execute(select(dst_col).where(src_col.in_(frontier[i:i + _IN_CHUNK]))).scalars())
                    new = sorted(nxt - seen)
                    if limit is not None and len(seen) - 1 + len(new) > limit:
                        new, truncated = new[:limit - (len(seen) - 1)], True
                    seen.update(new)
                    frontier = [] if truncated else new
                seen.discard(start)
                got: list[Entry] = []
                ordered = sorted(seen)
                for i in range(0, len(ordered), _IN_CHUNK):
                    got += self._fetch(c, E.c.seq.in_(ordered[i:i + _IN_CHUNK]))
                sides.append(tuple(got))
                cut.append(truncated)
        return History(found[0], sides[0], sides[1], upstream_truncated=cut[0], downstream_truncated=cut[1])

    # ------------------------------------------------------------------ Merkle tree
    def _nodes(self, c: Connection, wanted: set[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        out: dict[tuple[int, int], bytes] = {}
        leaves = sorted(i for lv, i in wanted if lv == 0)
        for i in range(0, len(leaves), 500):
            out.update({(0, s): self._stored_hash(h, f"entry {s}")
                        for s, h in c.execute(select(E.c.seq, E.c.hash).where(E.c.seq.in_(leaves[i:i + 500])))})
        inner = sorted(((((i + 1) << lv) - 1, lv) for lv, i in wanted if lv > 0))
        for i in range(0, len(inner), 200):
            chunk = inner[i:i + 200]
            cond = or_(*(and_(N.c.leaf == lf, N.c.level == lv) for lf, lv in chunk))
            out.update({(lv, (lf + 1 >> lv) - 1): self._stored_hash(h, f"Merkle node {(lv, (lf + 1 >> lv) - 1)}")
                        for lf, lv, h in c.execute(select(N.c.leaf, N.c.level, N.c.hash).where(cond))})
        missing = wanted - out.keys()
        if missing:
            raise LedgerUnavailable(
                f"ledger {self.url}: Merkle node {sorted(missing)[0]} is missing; run `stopline ledger verify`"
            )
        return out

    def _stored_hash(self, h: Any, what: str) -> bytes:
        """A stored hash (64 hex digits, as the ledger writes them) as bytes; anything else was
        edited in the database: :class:`LedgerUnavailable`, not a ``ValueError`` from a proof."""
        try:
            b = bytes.fromhex(h)
            if len(b) == 32:
                return b
        except (TypeError, ValueError):
            pass
        raise LedgerUnavailable(
            f"ledger {self.url}: the stored hash of {what} is not a SHA-256 hash (edited in the database); "
            "run `stopline ledger verify`"
        )

    @staticmethod
    def _holds_its_hash(e: Entry) -> bool:
        """Whether the entry's content (body, header, ``prev``) hashes to its stored ``hash``."""
        try:
            return merkle.leaf_hash(e.leaf_data()).hex() == e.hash
        except (ValueError, TypeError, UnicodeError):
            return False

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
            if not self._holds_its_hash(e):  # a proof of the stored hash would vouch for the edited content
                raise LedgerUnavailable(f"ledger {self.url}: entry {e.seq} does not match its stored hash (edited in "
                                        "the database): no proof of it is given; run `stopline ledger verify`")
            path, r = merkle.prefetch(
                lambda s: (merkle.inclusion_path(s, e.seq, n), merkle.root(s, n)), lambda w: self._nodes(c, w)
            )
        return merkle.InclusionProof(e.seq, n, self._stored_hash(e.hash, f"entry {e.seq}"), tuple(path), r)

    @_db
    def prove_consistency(self, old_size: int, new_size: int | None = None) -> merkle.ConsistencyProof:
        """A consistency proof: the tree of ``old_size`` entries is a prefix of the tree of ``new_size``."""
        with self._read(snapshot=True) as c:
            n = self._tree_size(c, new_size)
            if not 0 <= old_size <= n:
                raise EntryNotFound(f"no consistency proof from size {old_size} to size {n}")
            path, r_old, r_new = merkle.prefetch(
                lambda s: (merkle.consistency_path(s, old_size, n), merkle.root(s, old_size), merkle.root(s, n)),
                lambda w: self._nodes(c, w),
            )
        return merkle.ConsistencyProof(old_size, n, r_old, r_new, tuple(path))

    # ------------------------------------------------------------------ verification
    @_db
    def verify(self, *, checkpoint: str | bytes | None = None,
               key: VerifierKey | Sequence[VerifierKey] | None = None) -> VerifyReport:
        """Recompute everything and report the first bad sequence number, if any.

        Checks, entry by entry in one snapshot: contiguous ``seq``; each hash against the
        entry's content; each ``prev`` against the previous hash; the kind's required body
        keys; the link rows; every stored Merkle node; each stored checkpoint entry's size
        and root (and signature, with ``key``); then the head row. With ``checkpoint`` (a
        signed note, checked with ``key``, which is then required) also that the ledger
        still holds that tree: fewer entries is a truncation, a different root a fork, and
        a checkpoint of another log (another origin) fails at seq 0; a note that cannot be
        read or whose signature ``key`` does not verify raises :class:`CheckpointError`.
        Also that the guard triggers are there, enabled and unchanged (``guards``, ``hint``).
        ``key`` may be several keys (a log whose signing key was replaced: its older
        checkpoints are signed by the old key): each checkpoint must be signed by one of them.
        """
        return verify_ledger(self, checkpoint=checkpoint, key=key)
