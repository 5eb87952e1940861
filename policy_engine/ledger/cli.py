"""``stopline ledger ...``: the ledger's command group (registered by ``policy_engine.cli``).

Every command takes ``--ledger URL`` (or ``STOPLINE_LEDGER``; default
``sqlite:///stopline.db`` in the current directory). Exit codes follow the CLI's: 0 ok,
1 a verification that failed (``verify``), 2 the ledger, a key or a checkpoint cannot be
read or the input is refused; errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import functools
import json
import sys

import click

from .errors import LedgerError
from .kinds import KINDS

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
DEFAULT_URL = "sqlite:///stopline.db"

_ledger_opt = click.option("--ledger", "url", envvar="STOPLINE_LEDGER", default=DEFAULT_URL, show_default=True,
                           metavar="URL", help="sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB "
                                               "(env STOPLINE_LEDGER).")


def _guarded(fn):
    """LedgerError -> one line on stderr, exit 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LedgerError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(EXIT_USAGE)
    return wrapper


def _open(url: str, *, create: bool = False, allow_other_tables: bool = True):
    from .store import Ledger

    return Ledger.open(url, create=create, allow_other_tables=allow_other_tables)


def read_at_most(path: str, limit: int) -> bytes:
    """At most `limit` bytes of `path` (`-`: stdin), the whole input if shorter; OSError as
    `open`/`read` raise it. Ctrl-C always ends the wait for a pipe, FIFO or terminal: a
    SIGINT that lands just before a blocking read() (or is taken by another thread) leaves
    that read waiting for input that may never come, with Python's handler already run, so
    on POSIX a read of such a file is only made once select() says it will not block, and
    select() wakes every quarter second to let Python act on a pending signal."""
    if path == "-":
        if sys.stdin is None:  # (started with its standard input closed: `<&-`)
            import errno

            raise OSError(errno.EBADF, "standard input is closed")
        return _read_fd(sys.stdin.fileno(), limit) if _waits(sys.stdin) else sys.stdin.buffer.read(limit)
    with open(path, "rb") as fh:  # (nothing read through its buffer before _read_fd reads the descriptor)
        return _read_fd(fh.fileno(), limit) if _waits(fh) else fh.read(limit)


def _waits(fh) -> bool:
    """Whether a read of `fh` can block (a pipe, FIFO, socket or terminal on POSIX)."""
    import os
    import stat

    if os.name != "posix":
        return False
    try:
        fd = fh.fileno()
        mode = os.fstat(fd).st_mode
    except (OSError, ValueError, AttributeError):  # (a replaced sys.stdin without a descriptor)
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISBLK(mode))


def _read_fd(fd: int, limit: int) -> bytes:
    import os
    import select

    chunks: list[bytes] = []
    got = 0
    while got < limit:
        try:
            ready, _, _ = select.select([fd], [], [], 0.25)  # (a pending SIGINT is acted on between waits)
        except ValueError:  # a descriptor select() cannot take (beyond FD_SETSIZE): a plain read
            ready = [fd]
        if not ready:
            continue
        try:
            chunk = os.read(fd, min(1 << 20, limit - got))
        except BlockingIOError:  # a descriptor left non-blocking by the caller: wait again
            continue
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_bounded(path: str, what: str) -> bytes:
    """The bytes of `path` (`-`: stdin), at most the CLI's input limit (read whole, a huge or
    endless input such as /dev/zero took all the memory there was); exit 2 with one line
    when it cannot be read or is larger. For `eval`, `ledger append` and `rt` alike."""
    from ..limits import MAX_INPUT_BYTES

    try:
        raw = read_at_most(path, MAX_INPUT_BYTES + 1)
    except OSError as e:
        click.echo(f"error: cannot read {what} {path}: {e.strerror or e}", err=True)
        sys.exit(EXIT_USAGE)
    if len(raw) > MAX_INPUT_BYTES:
        click.echo(f"error: {what} {path} is larger than {MAX_INPUT_BYTES} bytes", err=True)
        sys.exit(EXIT_USAGE)
    return raw


def _read_text(path: str, what: str, encoding: str = "utf-8") -> str:
    """The text of `path` (`-`: stdin), bounded like `stopline eval`'s input (``read_bounded``)."""
    raw = read_bounded(path, what)
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        click.echo(f"error: cannot read {what} {path}: not UTF-8 text (byte {e.start})", err=True)
        sys.exit(EXIT_USAGE)


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list) -> dict:
    """A JSON object's members as a dict, refusing a repeated name (`json` keeps the last one
    silently: `{"amount": 10, "amount": 1000}` was recorded as 1000, RFC 8785 forbids it)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set = set()
        for k, _ in pairs:
            if k in seen:
                raise _DuplicateKey(f"the key {json.dumps(k, ensure_ascii=True)[:80]} appears twice in one object")
            seen.add(k)
    return out


def _dump(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False)


def _escaped(text: str) -> str:
    """``text`` with each character a terminal acts on or does not show (controls, format
    characters such as bidi overrides, line and paragraph separators, spaces other than
    U+0020) written as a JSON ``\\uXXXX`` escape: a line of the listing stays one line and
    shows what is stored."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable() or ch == " ":
            out.append(ch)
        else:  # (beyond U+FFFF: the UTF-16 pair, as JSON writes it)
            b = ch.encode("utf-16-be", "surrogatepass")
            out.extend(f"\\u{int.from_bytes(b[i:i + 2], 'big'):04x}" for i in range(0, len(b), 2))
    return "".join(out)


def _shown(text: str, *, quote: bool = False) -> str:
    """A stored name as the text listing prints it: as it is when every character shows,
    else (``quote``) as a JSON string whose escapes say what the unseen characters are."""
    if text.isprintable():
        return text
    return f'"{_escaped(json.dumps(text, ensure_ascii=False)[1:-1])}"' if quote else _escaped(text)


def _body_line(body_json: str, chars: int, seq: int) -> str:
    """An entry's body for ``ledger log --body``: its canonical JSON (RFC 8785, as stored and
    hashed), the characters a terminal would act on escaped (the same JSON value), cut at
    ``chars`` characters (0: never) with how many more and where to read them all."""
    if chars and len(body_json) > chars:
        return (f"{_escaped(body_json[:chars])} … (+{len(body_json) - chars} characters: "
                f"`stopline ledger show {seq}`, or --body-chars 0)")
    return _escaped(body_json)


@click.group("ledger")
def ledger() -> None:
    """The system of record: an append-only, verifiable log (docs/ledger.md)."""


@ledger.command("init")
@_ledger_opt
@click.option("--allow-other-tables", is_flag=True,
              help="Create the ledger even in a database (PostgreSQL: schema) that already holds other tables.")
@_guarded
def init(url: str, allow_other_tables: bool) -> None:
    """Create the ledger (or migrate an older one, add the tables it lacks, or re-create its
    guard triggers); harmless on an existing ledger. Refuses another application's database
    unless --allow-other-tables."""
    with _open(url, create=True, allow_other_tables=allow_other_tables) as led:
        from ..runtime import projections as P

        added = led.add_missing_tables()
        runtime = _add_runtime_tables(led)
        rebuilt = _rebuild_if_edited(led) if not runtime else None
        weak = led.weak_guards()
        restored = led.restore_guards()
        strengthened = [] if restored else [n for n in weak if n not in led.weak_guards()]
        click.echo(f"ledger {led.url}: {led.size} {'entry' if led.size == 1 else 'entries'}, log {led.log_id}")
        if added:
            click.echo(f"added the table{'s' if len(added) > 1 else ''} it lacked: "
                       f"{', '.join(f'`{n}`' for n in added)} (no entry written)")
        if strengthened:
            click.echo(f"made the guard trigger{'s' if len(strengthened) > 1 else ''} fire in every session "
                       "(ENABLE ALWAYS: a session_replication_role = replica session no longer skips "
                       f"{'them' if len(strengthened) > 1 else 'it'}; no entry written)")
        # (a new ledger: making every one of them is expected, not news; a ledger that lacked
        # some, emptied or not, is told which)
        new = not led.size and {t.name for t in P.TABLES} <= set(runtime)
        if runtime and not new:
            click.echo(f"made the runtime's table{'s' if len(runtime) > 1 else ''} "
                       f"{', '.join(f'`{n}`' for n in runtime)} (missing, or of an older version) and filled "
                       "them from the log (no entry written)")
    if rebuilt:
        click.echo(f"warning: rebuilt the runtime's projections from the log: {rebuilt}", err=True)
    if restored:
        click.echo(f"warning: re-created the guard triggers ({'; '.join(restored)}); entries could be rewritten "
                   "while they were off: run `stopline ledger verify --checkpoint FILE --key FILE.pub`", err=True)
    sys.exit(EXIT_OK)


def _rebuild_if_edited(led) -> str | None:
    """Rebuild the runtime's projections (under the append lock) when they disagree with the
    log (``projections.workflows_problem``: a row edited or deleted beside the ledger); say why."""
    from ..runtime import projections as P

    if _projection_problem(led) is None:
        return None
    why: list[str] = []

    def build(c):
        problem = P.workflows_problem(c, led.fetch)  # (again, under the lock)
        if problem is not None:
            why.append(problem)
            P.rebuild(c, led.fetch)
        return []

    led.transact(build)
    return why[0] if why else None


def _add_runtime_tables(led) -> list[str]:
    """The runtime's projections (``rt_*``, :mod:`policy_engine.runtime.projections`: the
    caches beside the log that the runtime and ``stopline serve`` read), made when missing
    and filled from the log (a rebuild under the append lock), so a server whose database
    role may not create tables finds every table it uses. None missing: no lock, no DDL."""
    from ..runtime import projections as P

    with led.reading() as c:
        if not P.outdated(c):
            return []
    made: list[str] = []

    def build(c):
        made[:] = P.ensure(c, led.fetch)
        return []

    led.transact(build)
    return made


@ledger.command("log")
@_ledger_opt
@click.option("--kind", type=click.Choice(sorted(KINDS)),
              help="Only entries of this kind (a typo is an error, not an empty list).")
@click.option("--workflow", help="Only entries of this workflow.")
@click.option("--link", "link", metavar="ID", help="Only entries that link to this entry.")
@click.option("--since", metavar="TIME", help="Only entries at or after this RFC 3339 UTC time.")
@click.option("--until", metavar="TIME", help="Only entries before this RFC 3339 UTC time.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--reverse", is_flag=True, help="Newest first.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("-b", "--body", "with_body", is_flag=True,
              help="Text: also each entry's body, as canonical JSON on an indented line (JSON always has them).")
@click.option("--body-chars", type=click.IntRange(min=0), default=200, show_default=True, metavar="N",
              help="With --body: cut each body at N characters, saying how many more (0: never cut).")
@_guarded
def log(url: str, kind, workflow, link, since, until, limit: int, reverse: bool, fmt: str, with_body: bool,
        body_chars: int) -> None:
    """List entries in sequence order."""
    with _open(url) as led:
        found = led.entries(kind=kind, workflow=workflow, link=link, since=since, until=until, limit=limit + 1,
                            reverse=reverse)
    more = len(found) > limit
    found = found[:limit]
    if fmt == "json":
        click.echo(_dump([e.to_json() for e in found]))
    else:
        for e in found:
            links = f" -> {_shown(','.join(e.links))}" if e.links else ""
            wf = _shown(e.workflow, quote=True) if e.workflow else "-"
            click.echo(f"{e.seq:>8}  {_shown(e.time)}  {_shown(e.kind):<10} {wf:<20} {_shown(e.id)}{links}")
            if with_body:
                click.echo(f"{'':10}{_body_line(e.body_json, body_chars, e.seq)}")
    if more:  # (a listing cut without a word reads as the whole log)
        click.echo(f"warning: more entries match than the {limit} listed; raise --limit (or narrow with "
                   f"--since, --kind, ...)", err=True)
    sys.exit(EXIT_OK)


@ledger.command("show")
@_ledger_opt
@click.argument("ref", metavar="ID")
@click.option("--history", "with_history", is_flag=True, help="Also every entry linked to it, both ways.")
@click.option("--limit", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="With --history: at most this many entries on each side (a cut side is reported).")
@_guarded
def show(url: str, ref: str, with_history: bool, limit: int) -> None:
    """Print one entry (by id or sequence number) as JSON."""
    cut: list[str] = []
    with _open(url) as led:
        if with_history:
            h = led.history(ref, limit=limit)
            out = {"entry": h.entry.to_json(), "upstream": [e.to_json() for e in h.upstream],
                   "downstream": [e.to_json() for e in h.downstream],
                   "upstream_truncated": h.upstream_truncated, "downstream_truncated": h.downstream_truncated}
            cut = [side for side, t in (("upstream", h.upstream_truncated), ("downstream", h.downstream_truncated))
                   if t]
        else:
            out = led.get(ref).to_json()
    click.echo(_dump(out))
    if cut:
        click.echo(f"warning: the history is incomplete: {' and '.join(cut)} cut at {limit} entries "
                   "(the nearest kept); pass a larger --limit", err=True)
    sys.exit(EXIT_OK)


@ledger.command("append")
@_ledger_opt
@click.argument("kind")
@click.argument("body", metavar="BODY_FILE")
@click.option("--workflow")
@click.option("--link", "links", multiple=True, metavar="ID", help="An entry this one links to (repeatable).")
@click.option("--key", help="Idempotency key: an existing entry with this key is returned instead.")
@_guarded
def append(url: str, kind: str, body: str, workflow, links, key) -> None:
    """Append an entry whose body is the JSON object in BODY_FILE (- for stdin)."""
    text = _read_text(body, "body", "utf-8-sig")  # (JSON: a byte-order mark is not part of it)
    try:
        obj = json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as e:
        click.echo(f"error: {body}: {e}: which value is meant? (nothing was appended)", err=True)
        sys.exit(EXIT_USAGE)
    except ValueError as e:
        click.echo(f"error: {body}: not JSON: {e}", err=True)
        sys.exit(EXIT_USAGE)
    except RecursionError:  # (was "internal error ... a bug in Stopline")
        click.echo(f"error: {body}: the JSON nests too deeply", err=True)
        sys.exit(EXIT_USAGE)
    with _open(url) as led:
        entry = led.append(kind, obj, workflow=workflow, links=links, key=key)
    click.echo(_dump(entry.to_json()))
    sys.exit(EXIT_OK)


@ledger.command("verify")
@_ledger_opt
@click.option("--checkpoint", "cp_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="A checkpoint written earlier: detect a truncated tail or a fork against it.")
@click.option("--key", "key_paths", envvar="STOPLINE_LEDGER_PUBKEY", multiple=True, type=click.Path(dir_okay=False),
              metavar="FILE", help="Public (.pub) or signing key to check checkpoint signatures; repeat it for a log "
                                   "whose key was replaced (env STOPLINE_LEDGER_PUBKEY, several separated by `:`).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@_guarded
def verify(url: str, cp_path, key_paths, fmt: str) -> None:
    """Recompute chain, Merkle tree and checkpoints: exit 0 if all holds, 1 naming the first bad seq."""
    from .note import load_verifier_key

    key = [load_verifier_key(p) for p in key_paths] or None
    note = _read_text(cp_path, "checkpoint") if cp_path else None
    with _open(url) as led:
        report = led.verify(checkpoint=note, key=key)
        cache = _projection_problem(led)
    if fmt == "json":
        extra = {"ok": False, "projections": cache, "hint": report.hint or _PROJECTION_HINT} if cache else {}
        click.echo(_dump({**report.to_json(), **extra}))
    else:
        lines = [report.render()] if not report.ok or not cache else []
        if cache:  # (the entries may all hold: the state the runtime acts on does not)
            lines += [f"FAILED: {cache}", f"hint: {_PROJECTION_HINT}"]
        click.echo("\n".join(lines))
    sys.exit(EXIT_OK if report.ok and not cache else EXIT_FAIL)


_PROJECTION_HINT = ("`stopline ledger init` rebuilds the runtime's projections from the log (it writes no entry); "
                    "find out who changed them, and verify against your latest checkpoint")


def _projection_problem(led) -> str | None:
    """What the runtime's projection of workflow states says that the log does not (None: nothing)."""
    from ..runtime import projections as P

    with led.reading() as c:
        return P.workflows_problem(c, led.fetch)


@ledger.command("checkpoint")
@_ledger_opt
@click.option("--key", "key_path", envvar="STOPLINE_LEDGER_KEY", default="stopline.key", show_default=True,
              type=click.Path(dir_okay=False), metavar="FILE", help="The signing key (env STOPLINE_LEDGER_KEY).")
@click.option("--out", type=click.Path(dir_okay=False), metavar="FILE", help="Also write the signed note here.")
@_guarded
def checkpoint(url: str, key_path: str, out) -> None:
    """Sign the tree head, record it as a checkpoint entry and print the signed note."""
    from .note import load_signing_key

    key = load_signing_key(key_path)
    with _open(url) as led:
        cp, _entry = led.checkpoint(key, path=out)  # an --out that cannot be written: CheckpointError
    click.echo(cp.note, nl=False)
    sys.exit(EXIT_OK)


@ledger.command("prove")
@_ledger_opt
@click.argument("ref", metavar="ID", required=False)
@click.option("--size", type=click.IntRange(min=0), help="The tree size to prove against (default: now).")
@click.option("--consistency", "old", type=click.IntRange(min=0), metavar="OLD_SIZE",
              help="Instead: prove the tree of OLD_SIZE entries is a prefix of the tree of --size.")
@_guarded
def prove(url: str, ref, size, old) -> None:
    """Print an inclusion proof of entry ID (or a consistency proof) as JSON."""
    if (ref is None) == (old is None):
        click.echo("error: give an entry ID or --consistency OLD_SIZE", err=True)
        sys.exit(EXIT_USAGE)
    with _open(url) as led:
        proof = led.prove(ref, size=size) if ref is not None else led.prove_consistency(old, size)
    click.echo(_dump(proof.to_json()))
    sys.exit(EXIT_OK)


@ledger.command("keygen")
@click.option("--name", default="stopline", show_default=True, help="The key name shown in signatures.")
@click.option("--out", default="stopline.key", show_default=True, type=click.Path(dir_okay=False),
              help="The signing key file (mode 0600); the public key goes to FILE.pub.")
@_guarded
def keygen(name: str, out: str) -> None:
    """Make an Ed25519 checkpoint signing key (C2SP note key format)."""
    from .note import generate_key, write_key

    pub = write_key(generate_key(name), out)
    click.echo(f"wrote {out} (keep it secret) and {pub} (give it to whoever verifies)")
    sys.exit(EXIT_OK)


@ledger.command("copy")
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
