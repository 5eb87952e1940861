"""``Ledger.verify``: recompute the chain, the Merkle tree and the checkpoints in one pass.

Reads three ordered streams in one snapshot (entries by ``seq``; link rows joined to the
id they point at, by ``(from_seq, pos)``; Merkle nodes by ``(leaf, level)``) and stops at
the first problem, reporting its sequence number and what is wrong:

- ``seq s is missing``: a deleted entry (a gap);
- ``entry s does not match its hash``: an edited byte (body, id, kind, time, ...), or an
  entry moved to another position (the hash covers ``seq``);
- ``entry s does not chain``: its ``prev`` is not the hash of entry ``s - 1`` (an entry
  inserted, removed or reordered before it, with recomputed hashes);
- link rows, Merkle nodes, stored checkpoint entries or the head row that disagree with
  the entries;
- against an external checkpoint (a signed note from ``checkpoint()``): fewer entries than
  it records is a **truncation** (the first missing ``seq``); a different root over its
  size is a **fork**, located after the last checkpoint entry in the ledger that still
  verifies (the first ``seq`` that no signed tree head vouches for); a checkpoint of
  another log (its origin is not this ledger's) vouches for none of it (seq 0).

It also checks that the database still refuses to rewrite history: the guard triggers
(``schema.guard_problems``, one catalog query) must be there, enabled and unchanged. A
missing or disabled guard fails the report (``guards`` names them, with a ``hint``) even
when every entry holds, since nothing then stops an edit that has not happened yet.

Memory is constant in the ledger's size; time is linear (see docs/ledger.md for figures).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import select

from . import merkle, schema
from .canonical import ZERO_HASH, leaf_data, parse_body
from .errors import CheckpointError, InvalidEntry
from .kinds import check_entry
from .note import Checkpoint, VerifierKey, open_checkpoint

if TYPE_CHECKING:  # pragma: no cover
    from .reader import LedgerReader

__all__ = ["VerifyReport", "verify_ledger"]

_BATCH = 2000


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of :meth:`Ledger.verify`. Truthy when everything holds."""

    ok: bool
    size: int  #: entries read
    root: str | None  #: hex Merkle root of the entries read (None when a problem stopped the pass)
    first_bad: int | None  #: the first bad sequence number
    problem: str | None  #: what is wrong there (one line)
    checkpoints: int = 0  #: stored checkpoint entries checked
    signatures: bool = False  #: whether checkpoint signatures were checked (a key was given)
    against: int | None = None  #: the size of the external checkpoint checked against
    #: each guard trigger that is missing, disabled or changed (then ``ok`` is False)
    guards: tuple[str, ...] = ()
    hint: str | None = None  #: what to do about a failure, when there is something to say

    def __bool__(self) -> bool:
        return self.ok

    def render(self) -> str:
        """For people: one line when all holds; when not, ``FAILED ...`` lines (the first bad
        seq, then the guards) and a ``hint:`` line."""
        if not self.ok:
            lines = []
            if self.first_bad is not None:
                lines.append(f"FAILED at seq {self.first_bad}: {self.problem}")
            if self.guards:
                lines.append(f"FAILED: {_guards_problem(self.guards)}")
            if self.hint:
                lines.append(f"hint: {self.hint}")
            return "\n".join(lines)
        parts = [f"ok: {self.size} entr{'y' if self.size == 1 else 'ies'}", f"root {self.root}",
                 f"{self.checkpoints} checkpoint entr{'y' if self.checkpoints == 1 else 'ies'}"
                 + (" (signatures checked)" if self.signatures else " (signatures not checked: no key)")]
        if self.against is not None:
            parts.append(f"consistent with the checkpoint of size {self.against}")
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "size": self.size, "root": self.root, "first_bad": self.first_bad,
                "problem": self.problem, "checkpoints": self.checkpoints, "signatures": self.signatures,
                "against": self.against, "guards": list(self.guards), "hint": self.hint}


def _guards_problem(guards: tuple[str, ...]) -> str:
    return f"the database no longer refuses to change or delete entries (guard trigger {'; '.join(guards)})"


_GUARDS_HINT = ("`stopline ledger init` re-creates the guard triggers (it writes no entry; on PostgreSQL it needs "
                "the tables' owner); entries could be rewritten while they were off, so verify against your latest "
                "external checkpoint (--checkpoint FILE --key FILE.pub) and find out who removed them")


class _Bad(Exception):
    def __init__(self, seq: int, problem: str) -> None:
        super().__init__(problem)
        self.seq, self.problem = seq, problem


def _stream(c, q) -> Iterator[Any]:
    return iter(c.execute(q, execution_options={"yield_per": _BATCH}))


def verify_ledger(
    led: LedgerReader,
    *,
    checkpoint: str | bytes | None = None,
    key: VerifierKey | Sequence[VerifierKey] | None = None,
) -> VerifyReport:
    keys = None if key is None else (key,) if isinstance(key, VerifierKey) else tuple(key)
    if keys and not all(isinstance(k, VerifierKey) for k in keys):  # (a str is a sequence too: of characters)
        raise TypeError("`key` is a VerifierKey or a sequence of them (load_verifier_key(PATH))")
    ext: Checkpoint | None = None
    if checkpoint is not None:
        if not keys:
            raise CheckpointError("a checkpoint is checked against a public key: give the key (--key FILE)")
        # a note that cannot be read or whose signature the key does not verify is refused
        # (CheckpointError: the input is wrong); one of another log is a failed verification
        ext = open_checkpoint(checkpoint, keys)
    try:
        return _verify(led, ext, keys or None, lenient=False)
    except sa_exc.OperationalError as e:
        # SQLite: a text column holding bytes that are not UTF-8 (written around the ledger)
        # stops the driver's fetch; read again with such bytes kept as lone surrogates, which
        # no entry's hash can cover, so the pass names the first entry that holds them
        if led.backend != "sqlite" or "decode to UTF-8" not in str(e):
            raise
    return _verify(led, ext, keys or None, lenient=True)


def _verify(led: LedgerReader, ext: Checkpoint | None, key: tuple[VerifierKey, ...] | None, *,
            lenient: bool) -> VerifyReport:
    E, L, N, H = schema.entries, schema.links, schema.nodes, schema.heads
    with led._read(snapshot=True) as c, _lenient_text(c, lenient):
        guards = tuple(schema.guard_problems(c))
        hint = _GUARDS_HINT if guards else None
        if ext is not None and ext.origin != led.origin:  # read and signed, but true of another log
            return VerifyReport(
                False, 0, None, 0,
                f"the checkpoint is for the log `{ext.origin[:200]}`, not this ledger's `{led.origin}`: it vouches "
                "for none of its entries (a checkpoint of another ledger, or this ledger's identity in "
                "`ledger_meta` was changed)",
                0, True, ext.size, guards, hint,
            )
        head = c.execute(select(H.c.size, H.c.head, H.c.frontier).where(H.c.log == schema.LOG)).one()
        rows = _stream(
            c,
            select(
                E.c.seq, E.c.id, E.c.kind, E.c.workflow, E.c.key, E.c.links, E.c.body, E.c.time, E.c.prev, E.c.hash
            ).order_by(E.c.seq),
        )
        link_rows = _stream(  # an outer join: a link row to no entry is a link row that does not match
            c,
            select(L.c.from_seq, L.c.pos, E.c.id)
            .select_from(L.outerjoin(E, E.c.seq == L.c.to_seq))
            .order_by(L.c.from_seq, L.c.pos),
        )
        node_rows = _stream(c, select(N.c.leaf, N.c.level, N.c.hash).order_by(N.c.leaf, N.c.level))
        state: dict[str, Any] = {"n": 0, "checkpoints": 0, "good_cp": 0}
        try:
            cr = _walk(rows, link_rows, node_rows, ext, key, state, led.origin)
            n = cr.size
            if ext is not None and n < ext.size:
                raise _Bad(
                    n, f"truncated: the checkpoint records {ext.size} entries, the ledger has {n}; seq {n} is missing"
                )
            if head.size > n:
                raise _Bad(
                    n,
                    f"seq {n} is missing: the head records {head.size} entries, the ledger has {n} (a truncated tail)",
                )
            if head.size < 0:  # (edited: reported at seq 0, not at "seq -1")
                raise _Bad(0, f"the head row records a negative size ({head.size}): it was edited")
            if head.size < n:
                raise _Bad(head.size, f"entry {head.size} is beyond the recorded head (size {head.size})")
            link, node = state["left_link"], state["left_node"]
            if link is not None:
                raise _Bad(link[0], f"a link row of entry {link[0]} has no entry")
            if node is not None:
                raise _Bad(node[0], f"a Merkle node closed by leaf {node[0]} has no entry")
            if head.head != (state.get("last") or ZERO_HASH) or head.frontier != cr.encode():
                raise _Bad(max(n - 1, 0), "the head row does not match the last entry")
        except _Bad as b:
            return VerifyReport(
                False,
                state["n"],
                None,
                b.seq,
                b.problem,
                state["checkpoints"],
                key is not None,
                ext.size if ext else None,
                guards,
                hint,
            )
    if guards:
        return VerifyReport(False, n, cr.root().hex(), None, _guards_problem(guards), state["checkpoints"],
                            key is not None, ext.size if ext else None, guards, hint)
    return VerifyReport(
        True, n, cr.root().hex(), None, None, state["checkpoints"], key is not None, ext.size if ext else None
    )


@contextmanager
def _lenient_text(c, on: bool) -> Iterator[None]:
    """SQLite only, when ``on``: decode stored text with ``surrogateescape`` for this pass."""
    if not on:
        yield
        return
    raw = c.connection.driver_connection
    before = raw.text_factory
    raw.text_factory = lambda b: b.decode("utf-8", "surrogateescape")
    try:
        yield
    finally:
        raw.text_factory = before


def _walk(
    rows, link_rows, node_rows, ext: Checkpoint | None, key: tuple[VerifierKey, ...] | None, state: dict, origin: str
) -> merkle.CompactRange:
    cr = merkle.CompactRange()
    prev = ZERO_HASH
    link = next(link_rows, None)
    node = next(node_rows, None)
    expected = 0
    leaf_hash, fromhex = merkle.leaf_hash, bytes.fromhex
    for r in rows:
        s = r.seq
        if s != expected:
            raise _Bad(expected, f"seq {expected} is missing (a deleted entry: the next entry is {s})")
        if ext is not None and s == ext.size:
            _check_ext(cr, ext, state)
        try:
            if not isinstance(r.body, str) or not isinstance(r.links, str):  # (SQLite: a BLOB or a number)
                raise TypeError
            links = tuple(json.loads(r.links))
            h = leaf_hash(
                leaf_data(
                    r.body,
                    seq=s,
                    id=r.id,
                    kind=r.kind,
                    workflow=r.workflow,
                    links=links,
                    key=r.key,
                    time=r.time,
                    prev=r.prev,
                )
            ).hex()
        except (ValueError, TypeError, UnicodeError, RecursionError):
            raise _Bad(s, f"entry {s} is not readable (its links or body were edited)") from None
        if h != r.hash:
            raise _Bad(s, f"entry {s} does not match its hash (an edited byte, or an entry moved to seq {s})")
        if r.prev != prev:
            raise _Bad(
                s,
                f"entry {s} does not chain: its prev is not the hash of entry {s - 1} "
                "(an entry inserted, deleted or reordered before it)",
            )
        try:
            body = parse_body(r.body)
            check_entry(r.kind, body, r.workflow, links)
        except (ValueError, InvalidEntry) as e:
            raise _Bad(s, f"entry {s} is not a valid entry: {e}") from None
        except RecursionError:  # (a body nested deeper than any parser here goes: never written by the ledger)
            raise _Bad(s, f"entry {s} is not a valid entry: its body nests too deeply") from None
        got = []
        while link is not None and link[0] == s:
            got.append(link[2])
            link = next(link_rows, None)
        if link is not None and link[0] < s:
            raise _Bad(link[0], f"a link row of entry {link[0]} does not match its entry")
        if tuple(got) != links:
            raise _Bad(s, f"the link rows of entry {s} do not match its links")
        if r.kind == "checkpoint":
            _check_stored(cr, s, body, key, state, origin)
        leaf = fromhex(h)
        for level, _idx, nh in cr.append(leaf):
            if node is None or node[0] != s or node[1] != level or node[2] != nh.hex():
                raise _Bad(s, f"the Merkle node of level {level} closed by entry {s} is missing or wrong")
            node = next(node_rows, None)
        if node is not None and node[0] == s:
            raise _Bad(s, f"an extra Merkle node is recorded at entry {s}")
        prev = h
        expected += 1
        state["n"] = expected
        state["last"] = h
    if ext is not None and cr.size == ext.size:
        _check_ext(cr, ext, state)
    # rows left over (link rows or Merkle nodes beyond the last entry) are judged by the caller,
    # after the truncation and head checks: when the tail was cut, the first bad seq is the
    # first missing entry, not the first leftover node (a leaf that closes no subtree leaves none)
    state["left_link"], state["left_node"] = link, node
    return cr


def _check_stored(
    cr: merkle.CompactRange, s: int, body: dict, key: tuple[VerifierKey, ...] | None, state: dict, origin: str
) -> None:
    root = cr.root().hex()
    if body.get("size") != s or body.get("root") != root:
        raise _Bad(s, f"checkpoint entry {s} does not match the tree of size {s} (entries before it changed)")
    if body.get("origin") != origin:  # another log's checkpoint, or this ledger's identity (ledger_meta) changed
        raise _Bad(s, f"checkpoint entry {s} is for the log `{str(body.get('origin'))[:200]}`, not `{origin}`")
    if not isinstance(body.get("note"), str):
        raise _Bad(s, f"checkpoint entry {s} has no signed note")
    if key is not None:
        try:
            cp = open_checkpoint(body["note"], key, origin=origin)
        except CheckpointError as e:
            raise _Bad(s, f"checkpoint entry {s}: {e}") from None
        if cp.size != s or cp.root.hex() != root:
            raise _Bad(s, f"checkpoint entry {s}: its signed note does not match its body")
    state["checkpoints"] += 1
    state["good_cp"] = s


def _check_ext(cr: merkle.CompactRange, ext: Checkpoint, state: dict) -> None:
    if cr.root() != ext.root:
        j = state["good_cp"]
        raise _Bad(
            j,
            f"fork: the first {ext.size} entries do not have the checkpoint's root; the ledger still "
            f"matches its own signed tree head of size {j}, so the first bad entry is at seq {j} or later "
            "(no signed tree head vouches for it)",
        )
