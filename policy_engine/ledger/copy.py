"""Copy a ledger into another database, verifiably: a backup, a mirror kept up to date, or the
move from the embedded SQLite file to a shared PostgreSQL server.

    from policy_engine.ledger import Ledger
    from policy_engine.ledger.copy import copy_ledger
    with Ledger.open("sqlite:///stopline.db") as src, \\
         Ledger.open("postgresql+psycopg://...", create=True) as dst:
        r = copy_ledger(src, dst)      # r.copied, r.size, r.root

The destination gets each entry the source holds beyond the destination's size, with its
id, kind, workflow, key, links, body and time, appended through the destination's own write
path: it computes each entry's hash over its predecessor and its Merkle nodes as any append
does, and the copy checks, entry by entry, that the hash is the one the source stored (so a
source entry edited in its database stops the copy, naming it, before anything of its batch
is written). So the destination holds the same chain and the same tree: the same hashes, the
same root at every size, and the source's checkpoints verify on it (it takes the source's
log id and origin, the name its checkpoints sign). Every batch is one transaction of the
destination under its append lock.

The destination is empty, or a copy the source extends (the same log id, and its last hash
the source's at that size): running the copy again appends what the source gained since
(a mirror). A destination that holds anything else (another log, entries the source does
not have) is refused with :class:`CopyError`, writing nothing. A runtime reading the
destination folds the copied entries into its projections (they are appended beside it).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import update

from . import schema
from .errors import LedgerError
from .store import Ledger
from .writer import _marks_of, _Prepared

__all__ = ["CopyError", "CopyResult", "copy_ledger"]


class CopyError(LedgerError):
    """The destination cannot take the source's entries (another log, a fork, a source entry
    whose stored hash is not its content's): nothing of the refused batch was written."""


@dataclass(frozen=True)
class CopyResult:
    copied: int  #: entries appended to the destination by this call
    size: int  #: the destination's size after it (the source's size when the copy read it, or ``upto``)
    root: str  #: the destination's Merkle root at ``size`` (hex), equal to the source's
    adopted: bool  #: the destination took the source's log id and origin (it was empty)


def copy_ledger(src: Ledger, dst: Ledger, *, upto: int | None = None, batch: int = 1000,
                progress: object = None) -> CopyResult:
    """Append to ``dst`` the entries ``src`` holds beyond ``dst``'s size, up to ``upto``
    entries in all (default: the source's size when read), ``batch`` entries a transaction.
    ``progress(size, target)``, if given, is called after each batch. Raises
    :class:`CopyError` (nothing of the failing batch written; the batches before it stay, a
    prefix of the source, so the copy can be run again) or :class:`LedgerError`."""
    if batch < 1:
        raise CopyError("the batch size is at least 1")
    if src.url == dst.url:
        raise CopyError(f"the source and the destination are the same ledger ({src.url})")
    target = src.size
    if upto is not None:
        if upto < 0:
            raise CopyError(f"--upto is a number of entries (0 or more), not {upto}")
        target = min(target, upto)
    adopted = False
    if dst.log_id != src.log_id:
        if dst.size != 0:
            raise CopyError(f"the destination {dst.url} holds another log ({dst.log_id}, {dst.size} entries), "
                            f"not a copy of {src.log_id}: copy into an empty ledger")
        _adopt(src, dst)
        adopted = True
    copied = 0
    while True:
        with dst._write() as (c, state):
            size = state[0]
            if size > target:
                if size > src.size:
                    raise CopyError(f"the destination holds {size} entries, more than the source's "
                                    f"{src.size}: it is not a copy of this source")
                break  # (a copy ahead of `upto`)
            if size:
                theirs = src.get(size - 1)
                if theirs.hash != state[1]:
                    raise CopyError(f"the destination forked from the source at seq {size - 1} (its hash "
                                    f"{state[1][:16]}..., the source's {theirs.hash[:16]}...): not a copy of it")
            if size == target:
                break
            with src.reading() as rc:
                chunk = src.fetch(rc, schema.entries.c.seq >= size, schema.entries.c.seq < min(size + batch, target),
                                  limit=batch)
            if [e.seq for e in chunk] != list(range(size, size + len(chunk))) or not chunk:
                raise CopyError(f"the source lacks entries from seq {size} (run `stopline ledger verify` on it)")
            made = dst._insert(c, state, [_Prepared(e.kind, e.body_json, e.workflow, tuple(e.links), e.key, e.time,
                                                    e.id) for e in chunk])
            for theirs, ours in zip(chunk, made):
                if ours.seq != theirs.seq or ours.hash != theirs.hash:
                    raise CopyError(f"the source's entry {theirs.seq} is not what its hash says (stored "
                                    f"{theirs.hash[:16]}..., its content hashes to {ours.hash[:16]}...): "
                                    "run `stopline ledger verify` on the source; nothing of this batch was copied")
            if dst._marks:  # (appended beside a runtime that keeps projections of the destination)
                for sql, params in _marks_of([e.id for e in made]):
                    c.exec_driver_sql(sql.replace("?", dst._ph), tuple(params))
            copied += len(made)
            size = state[0]
        if callable(progress):
            progress(size, target)
    root = dst.root(size).hex() if size else ""
    if size and root != src.root(size).hex():  # (follows from the hashes; checked as the promise it is)
        raise CopyError(f"the destination's root at size {size} differs from the source's")
    return CopyResult(copied, size, root, adopted)


def _adopt(src: Ledger, dst: Ledger) -> None:
    """Give the empty ``dst`` the source's log id and origin (under its append lock)."""
    with dst._write() as (c, state):
        if state[0] != 0:
            raise CopyError(f"the destination {dst.url} is no longer empty")
        for name, value in (("log_id", src.log_id), ("origin", src.origin)):
            c.execute(update(schema.meta).where(schema.meta.c.name == name).values(value=value))
    dst.log_id, dst.origin = src.log_id, src.origin
