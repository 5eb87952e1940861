"""``stopline report`` (registered by ``policy_engine.cli``): the rollback metrics as
HTML (``--out``) or JSON. A long report shows progress on stderr. Exit 2 with one line
for an unreachable ledger or a bad time."""

from __future__ import annotations

import json
import sys

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
    executions, missing receipt fields; with --policies, what the rollbacks cost."""
    from ..diagnostics import PolicyError
    from ..ledger import LedgerError
    from ..replay_cli import _time
    from .compute import compute_report

    s, u = _time(since, "--since"), _time(until, "--until")
    from ..replay import _ts

    show = sys.stderr.isatty()

    def progress(i, n):
        if show:
            click.echo(f"\rreading the ledger: {i}/{n} entries", err=True, nl=False)
    try:
        r = compute_report(url, since=_ts(s), until=_ts(u), progress=progress, policies=policies)
    except LedgerError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except PolicyError as e:
        click.echo(str(e), err=True)
        sys.exit(2)
    if show:
        click.echo("", err=True)
    if fmt == "json" and out is None:
        click.echo(json.dumps(r, indent=2, sort_keys=True))
        return
    if out is None:
        raise click.UsageError("give --out FILE for the HTML page (or --format json)")
    if fmt == "json":
        text = json.dumps(r, indent=2, sort_keys=True)
    else:
        from .html import render_html

        text = render_html(r)
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)
    click.echo(f"wrote {out}: {r['totals']['executions']} executions, {r['totals']['rollbacks']} rollbacks")
