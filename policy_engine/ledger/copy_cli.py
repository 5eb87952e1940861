"""``stopline ledger copy``: the command of :mod:`.copy` (registered on the ``ledger`` group)."""

from __future__ import annotations

import json
import sys

import click

from .cli import EXIT_OK, EXIT_USAGE, _guarded, _open


@click.command("copy")
@click.option("--from", "src_url", required=True, metavar="URL",
              help="The ledger to copy: sqlite:///PATH or postgresql+psycopg://... (never written to).")
@click.option("--to", "dst_url", required=True, metavar="URL",
              help="The destination: created if missing; else it must be a copy the source extends.")
@click.option("--upto", type=click.IntRange(min=0), default=None, metavar="N",
              help="Copy up to N entries in all (default: every entry the source has when read).")
@click.option("--batch", type=click.IntRange(min=1, max=100_000), default=1000, show_default=True, metavar="N",
              help="Entries per transaction of the destination.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@_guarded
def copy(src_url: str, dst_url: str, upto: int | None, batch: int, fmt: str) -> None:
    """Copy a ledger into another database, verifiably (the same ids, hashes and root; its
    checkpoints verify on the copy): a move from SQLite to PostgreSQL, a backup, or a mirror
    brought up to date by running it again. Exit 2, naming why, when the destination is not a
    copy of the source or a source entry is not what its hash says."""
    from .copy import copy_ledger

    with _open(src_url) as src, _open(dst_url, create=True, allow_other_tables=False) as dst:
        r = copy_ledger(src, dst, upto=upto, batch=batch)
        if fmt == "json":
            click.echo(json.dumps({"copied": r.copied, "size": r.size, "root": r.root, "adopted": r.adopted,
                                   "log_id": dst.log_id, "destination": dst.url}, sort_keys=True))
        else:
            n = f"{r.copied} {'entry' if r.copied == 1 else 'entries'}"
            click.echo(f"copied {n}: {dst.url} has {r.size} entries, root {r.root or '(empty)'} "
                       f"(the source's), log {dst.log_id}")
    sys.exit(EXIT_OK)


__all__ = ["copy", "EXIT_USAGE"]
