"""``stopline report`` (registered by ``policy_engine.cli``): the rollback metrics as
HTML (``--out``) or JSON. A long report shows progress on stderr. Exit 2 with one line
for an unreachable ledger, a bad time or policy, or an ``--out`` that cannot be written."""

from __future__ import annotations

import json
import sys
from typing import NoReturn

import click


@click.command("report")
@click.option("--ledger", "url", envvar="STOPLINE_LEDGER", default="sqlite:///stopline.db", show_default=True,
              metavar="URL")
@click.option("--since", metavar="TIME", help="Only entries at or after this RFC 3339 time.")
@click.option("--until", metavar="TIME", help="Only entries before this RFC 3339 time.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the HTML page here.")
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
