"""``stopline report`` (registered by ``policy_engine.cli``): the rollback metrics as
HTML (``--out``) or JSON. A long report shows progress on stderr. Exit 2 with one line
for an unreachable ledger, a bad time or policy, or an ``--out`` that cannot be written or
that names the ledger, a policy file or any SQLite database (never written over)."""

from __future__ import annotations

import json
import os
import sys
from typing import NoReturn

import click


@click.command("report")
@click.option("--ledger", "url", envvar="STOPLINE_LEDGER", default="sqlite:///stopline.db", show_default=True,
              metavar="URL", help="sqlite:///PATH or postgresql+psycopg://... (env STOPLINE_LEDGER).")
@click.option("--since", metavar="TIME", help="Only entries at or after this RFC 3339 time.")
@click.option("--until", metavar="TIME", help="Only entries before this RFC 3339 time.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Write the HTML page here (never over the ledger, a policy or a SQLite database).")
@click.option("--format", "fmt", type=click.Choice(["html", "json"]), default="html", show_default=True)
@click.option("--policies", "-p", "policies", envvar="STOPLINE_POLICIES", default=None, metavar="PATH",
              type=click.Path(exists=True),
              help="The policy that prices rollbacks (its scenarios' and action types' `cost`; env STOPLINE_POLICIES).")
def report(url, since, until, out, fmt, policies):
    """Rollback metrics from the ledger: rates by action type and reviewer, times to
    rollback, scenarios, windows, approval latency, open/partial/failed, unauthorized
    executions, missing receipt fields; with --policies, what the rollbacks cost.

    Statuses are as of --until (or now): a rollback not authorized when its window or
    deadline passed counts as expired whether or not the sweeper recorded it (`expired`
    says which were derived)."""
    from ..diagnostics import PolicyError
    from ..ledger import LedgerError
    from ..replay_cli import _text, _time, _window
    from .compute import compute_report

    _text(url, "--ledger")
    s, u = _time(since, "--since"), _time(until, "--until")
    _window(since, until, s, u)
    if fmt == "html" and out is None:  # before reading the ledger, not after
        raise click.UsageError("give --out FILE for the HTML page (or --format json)")
    if out is not None:  # (before reading too: the page would replace the system of record)
        why = _kept(out, url, policies)
        if why is not None:
            raise click.BadParameter(f"{out} is {why}: the report does not overwrite it; give another file",
                                     param_hint="--out")
    from ..replay import _ts

    show = sys.stderr.isatty()
    shown = [False]

    def progress(i, n):
        if show:
            shown[0] = True
            click.echo(f"\rreading the ledger: {i}/{n} entries", err=True, nl=False)

    def fail(msg: str) -> NoReturn:
        if shown[0]:
            click.echo("", err=True)  # end the progress line first
        click.echo(msg, err=True)
        sys.exit(2)
    try:
        r = compute_report(url, since=_ts(s, "since"), until=_ts(u, "until"), progress=progress, policies=policies)
    except LedgerError as e:
        fail(f"error: {e}")
    except PolicyError as e:  # every diagnostic: file, line, column, the caret, the hint
        fail(e.render())
    if shown[0]:
        click.echo("", err=True)
    if fmt == "json" and out is None:
        click.echo(json.dumps(r, indent=2, sort_keys=True))
        return
    if fmt == "json":
        text = json.dumps(r, indent=2, sort_keys=True)
    else:
        from .html import render_html

        text = render_html(r)
    try:
        with open(out, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        fail(f"error: cannot write {out}: {e.strerror or e}")
    derived = r["expired"]["derived"]
    click.echo(f"wrote {out}: {r['totals']['executions']} executions, {r['totals']['rollbacks']} rollbacks"
               + (f" ({derived} expired as of {r['window']['as_of']} by the clock, not yet recorded)"
                  if derived else ""))


def _same(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):  # (one of them missing: the same path, spelt otherwise)
        try:
            return os.path.realpath(a) == os.path.realpath(b)
        except (OSError, ValueError):
            return False


def _kept(out: str, url: str, policies: str | None) -> str | None:
    """Why ``--out`` must not be written, or None: it is the SQLite ledger being read (or its
    journal), a policy file of ``--policies``, or any SQLite database (another ledger: opening
    it for writing would truncate it, and a ledger is the system of record)."""
    from sqlalchemy.engine import make_url

    try:
        u = make_url(url)
        db = u.database if u.get_backend_name() == "sqlite" else None
    except Exception:  # noqa: BLE001 - a bad URL is the ledger's to report, once it is opened
        db = None
    if db and any(_same(out, db + suffix) for suffix in ("", "-wal", "-shm", "-journal")):
        return "the ledger"
    if policies is not None and (_same(out, policies) or (
            os.path.isdir(policies) and out.endswith(".policy") and os.path.isfile(out)
            and os.path.realpath(out).startswith(os.path.join(os.path.realpath(policies), "")))):
        return "a policy file"
    try:  # (a regular file only: `/dev/stdout` or a pipe is read by nobody here)
        if not os.path.isfile(out):
            return None
        with open(out, "rb") as f:
            head = f.read(16)
    except (OSError, ValueError):  # (unreadable: the write says why)
        return None
    return "a SQLite database" if head == b"SQLite format 3\x00" else None
