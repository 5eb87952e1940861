"""``stopline replay`` and ``stopline ledger export-case`` (registered by ``policy_engine.cli``).

Exit codes: 0 ok (replay: whether or not verdicts changed), 1 ``--as-rollback`` could not
plan some of the executions it should cover (each listed with the reason), 2 the policy does not load,
the ledger cannot be read, an unknown id or bad input (one line on stderr, never a
traceback).
"""

from __future__ import annotations

import functools
import json
import os
import sys

import click

EXIT_USAGE = 2
DEFAULT_URL = "sqlite:///stopline.db"


def _guarded(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .cases import ExportError
        from .diagnostics import PolicyError
        from .ledger import LedgerError
        from .runtime import RuntimeUsageError

        try:
            return fn(*args, **kwargs)
        except (LedgerError, RuntimeUsageError, ExportError) as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(EXIT_USAGE)
        except PolicyError as e:  # every diagnostic: file, line, column, the caret, the hint
            click.echo(e.render(), err=True)
            sys.exit(EXIT_USAGE)
        except OSError as e:  # a suite that cannot be written or read (a missing or read-only directory)
            what = f"{e.filename}: " if e.filename else ""
            click.echo(f"error: {what}{e.strerror or e}", err=True)
            sys.exit(EXIT_USAGE)
    return wrapper


def _text(value, what):
    """A command-line value that goes to the ledger or a file as text: one the shell passed
    as bytes that are not UTF-8 (Python reads them as surrogates) is refused, not sent on."""
    if value is None:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise click.BadParameter(f"not UTF-8 text: {value!r}", param_hint=what) from None
    return value


def _time(value, what):
    if value is None:
        return None
    from datetime import datetime

    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"not an RFC 3339 time: {value!r}", param_hint=what) from None
    if t.tzinfo is None:
        raise click.BadParameter(f"give a time zone (e.g. `Z`): {value!r}", param_hint=what)
    from .timestamps import parse_rfc3339

    try:  # RFC 3339 text goes as written: replay rounds digits below the microsecond up (a datetime drops them)
        parse_rfc3339(value, allow_space=True)
    except ValueError:
        return t
    return value


def _window(since, until, s, u) -> None:
    """``--since`` later than ``--until`` selects nothing: refused (the instants compared, not the text)."""
    if s is None or u is None:
        return
    from datetime import datetime

    def instant(v):
        return v if isinstance(v, datetime) else datetime.fromisoformat(v.replace("Z", "+00:00"))

    if instant(s) > instant(u):
        raise click.BadParameter(f"{since} is later than --until {until}: no entry can be in that window",
                                 param_hint="--since")


@click.command("replay")
@click.argument("policy", type=click.Path(exists=True))
@click.option("--ledger", "url", envvar="STOPLINE_LEDGER", default=DEFAULT_URL, show_default=True, metavar="URL",
              help="The ledger whose decisions to replay (env STOPLINE_LEDGER).")
@click.option("--since", metavar="TIME", help="Only decisions at or after this RFC 3339 time.")
@click.option("--until", metavar="TIME", help="Only decisions before this RFC 3339 time.")
@click.option("--workflow", metavar="W", help="Only decisions of this workflow.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes (default: the cores, from 5,000 decisions).")
@click.option("--as-rollback", "as_rollback", metavar="SCENARIO",
              help="Plan the changed, executed decisions whose verdict got stricter as one batch under this "
                   "rollback scenario (e.g. policy_reversal), planned by POLICY.")
@click.option("--recorded-state", "recorded_state", is_flag=True,
              help="Replay every decision under the workflow state the ledger recorded: a stop the candidate "
                   "fires does not stop the decisions after it, a stop of the record it would not fire is not "
                   "lifted, one it fires by another trigger keeps the record's, and every allowed resume of the "
                   "record lifts its stop, even one the candidate refuses (by default all are applied, until the "
                   "next allowed resume the candidate does not refuse).")
@click.option("--requested-by", default="stopline replay", show_default=True, help="With --as-rollback.")
@click.option("--reason", default=None, help="With --as-rollback (default: names the policy).")
@_guarded
def replay_cmd(policy, url, since, until, workflow, fmt, workers, as_rollback, recorded_state, requested_by, reason):
    """Re-evaluate every recorded decision under POLICY (its recorded action and `now`)
    and list each changed verdict, grouped and counted."""
    from .replay import changed_executions, replay

    for v, what in ((url, "--ledger"), (workflow, "--workflow"), (as_rollback, "--as-rollback"),
                    (requested_by, "--requested-by"), (reason, "--reason")):
        _text(v, what)
    s, u = _time(since, "--since"), _time(until, "--until")
    _window(since, until, s, u)
    progress = None
    if fmt == "text" and sys.stderr.isatty():
        def progress(i, n):
            click.echo(f"\rreplaying: {i}/{n} parts", err=True, nl=i == n)
    r = replay(policy, url, since=s, until=u, workflow=workflow, workers=workers, progress=progress,
               carry_stops=not recorded_state)
    batch = None
    if as_rollback:
        from .runtime import Runtime

        ids = changed_executions(r)
        if ids:
            with Runtime.open(policy, ledger=url, create=False) as rt:
                # (POLICY is a candidate: a pending rollback classified under the deployed policy
                # is listed as existing, never withdrawn in favour of a plan only POLICY can approve)
                batch = rt.request_bulk_rollback(None, as_rollback, requested_by,
                                                 reason or f"policy reversal: replay under {r.policy_hash[:19]}",
                                                 executions=ids, supersede=False)
    if fmt == "json":
        out = r.to_json()
        if as_rollback:
            out["batch"] = batch.to_json() if batch is not None else None
        click.echo(json.dumps(out, indent=2, sort_keys=True, ensure_ascii=False))
        if batch is not None and batch.refused:
            sys.exit(1)
        return
    click.echo(r.text())
    if as_rollback:
        if batch is None:
            click.echo("\nno batch: no decision whose verdict got stricter was executed")
        elif batch.batch_id is None:
            click.echo(f"\nno batch: {len(batch.existing)} execution(s) already being rolled back, "
                       f"{len(batch.refused)} could not be planned")
        else:
            again = " (recorded before by this same request: nothing recorded now)" if batch.existing_batch else ""
            click.echo(f"\nbatch {batch.batch_id} ({as_rollback}){again}: {len(batch.rollbacks)} rollback(s) over "
                       f"{batch.records} record(s); approve it by its digest {batch.batch_hash}"
                       + (f"; {len(batch.existing)} execution(s) already being rolled back" if batch.existing
                          else ""))
        if batch is not None:
            for x in batch.refused[:10]:
                click.echo(f"  not planned {x['execution']}: {x['reason']}")
            if len(batch.refused) > 10:
                click.echo(f"  … {len(batch.refused) - 10} more not planned (--format json lists every one)")
            if batch.refused:
                sys.exit(1)


@click.command("export-case")
@click.argument("decision_id")
@click.option("--expect", required=True, type=click.Choice(["allow", "require_approval", "deny", "stop"]),
              help="The effect the decision should have had.")
@click.option("--suite", "suite", required=True, type=click.Path(dir_okay=False),
              help="The suite file (*.policy-test.yaml); created when missing.")
@click.option("--name", default=None, help="The case's name (default: names the decision).")
@click.option("--policies", default=None, type=click.Path(exists=True),
              help="For a new suite: its `policies:` (relative to the suite).")
@click.option("--ledger", "url", envvar="STOPLINE_LEDGER", default=DEFAULT_URL, show_default=True, metavar="URL",
              help="sqlite:///PATH or postgresql+psycopg://... (env STOPLINE_LEDGER).")
@_guarded
def export_case_cmd(decision_id, expect, suite, name, policies, url):
    """Append a recorded decision to a suite as a case expecting EFFECT (it fails until
    the policy changes). An existing suite keeps its comments and layout."""
    from .cases import export_case

    for v, what in ((url, "--ledger"), (decision_id, "DECISION_ID"), (name, "--name")):
        _text(v, what)
    if policies is not None and not os.path.exists(suite):
        # the new suite's `policies:`: they compile, or nothing is written (the diagnostics, with
        # file, line and column, now rather than at the first `stopline test`)
        from . import load

        load(policies)
    r = export_case(url, decision_id, expect, suite, name=name, policies=policies)
    click.echo(f"{'created' if r['created'] else 'appended to'} {r['suite']}: case `{r['case']['name']}`")
