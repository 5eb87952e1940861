"""``stopline rollback``: plan a batch of rollbacks chosen by a CEL select over the
recorded executions (registered by ``policy_engine.cli``); ``--status BATCH`` shows one.
Output is JSON with ``--format json``; ``--dry-run`` plans and shows without recording.
Exit codes: 0 ok, 1 the select failed on some executions (nothing is recorded; each is
listed with its error) or some selected executions could not be planned (``refused``: each
is listed with the reason; as ``stopline replay --as-rollback``), 2 usage, a select that
does not compile, an unknown id or an unreachable ledger (one line on stderr).

After a batch is recorded the text says what to run next (the ``stopline rt approve_batch``
line with the batch id and digest, a ``batch_step`` line, ``--status``); the JSON has the same
under ``next`` (``null`` when nothing was recorded: a dry run, nothing planned)."""

from __future__ import annotations

import json
import sys

import click

from .cli import _echo, _guarded, _ledger_opt, _policies_opt, _runtime


@click.command("rollback")
@click.option("--select", "select", default=None, metavar="CEL",
              help='A CEL condition over each recorded execution as `original`, e.g. \'original.type == "refund"\'.')
@click.option("--scenario", default=None, help="The rollback scenario (e.g. incident).")
@click.option("--requested-by", default=None, help="Who asks.")
@click.option("--reason", default=None, help="Why.")
@click.option("--since", metavar="TIME", help="Only executions that ran (`original.time`) at or after this time.")
@click.option("--until", metavar="TIME", help="Only executions that ran (`original.time`) before this time.")
@click.option("--status", "status_of", metavar="BATCH", default=None, help="Show a batch: done, partial, remaining.")
@click.option("--dry-run", "dry_run", is_flag=True,
              help="Plan and show the batch (its originals, records and digest) without recording anything.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@_policies_opt
@_ledger_opt
@_guarded
def rollback(select, scenario, requested_by, reason, since, until, status_of, dry_run, fmt, policies, url):
    """Plan every execution SELECT matches as one batch of rollbacks (an incident)."""
    rt = _runtime(url, policies, need_policies=status_of is None)
    with rt:
        if status_of is not None:
            st = rt.batch_status(status_of)
            if fmt == "json":
                _echo(st)
            else:
                click.echo(f"batch {st['batch_id']} ({st['scenario']}): {st['rollbacks']} rollback(s), "
                           f"{st['done']} done, {st['partial']} partial, {st['remaining']} remaining, "
                           f"{st['closed']} closed (denied, cancelled or expired); duties "
                           f"{st['duties']['done']}/{st['duties']['total']} done, {st['duties']['failed']} failed\n"
                           f"  by status: " + (", ".join(f"{k} {n}" for k, n in st["by_status"].items()) or "none"))
            return
        missing = [n for n, v in (("--select", select), ("--scenario", scenario), ("--requested-by", requested_by),
                                  ("--reason", reason)) if not v]
        if missing:
            raise click.UsageError(f"give {', '.join(missing)}")
        b = rt.request_bulk_rollback(select, scenario, requested_by, reason, since=since, until=until,
                                     dry_run=dry_run)
        nxt = _next(rt, b, policies, url) if b.batch_id is not None and not dry_run else None
        if fmt == "json":
            _echo({**b.to_json(), "next": nxt})
            if b.errors or b.refused:
                sys.exit(1)
            return
        if b.errors:  # fail closed: nothing was planned
            click.echo(f"nothing planned: the select failed on {len(b.errors)} execution(s) ({b.selected} matched); "
                       "make it decide them (e.g. `has(original.receipt.FIELD) && ...`):")
            for x in b.errors[:10]:
                click.echo(f"  select failed on {x['execution']}: {x['error']}")
            if len(b.errors) > 10:
                click.echo(f"  … {len(b.errors) - 10} more (--format json lists every one)")
            sys.exit(1)
        if dry_run and b.originals:
            click.echo(f"dry run, nothing recorded: {len(b.originals)} rollback(s) over {b.records} record(s) "
                       f"({b.selected} selected, {len(b.covered)} inside another's cascade, {len(b.existing)} "
                       f"already being rolled back)\ndigest if recorded now: {b.batch_hash}")
        elif b.batch_id is None:
            click.echo(f"{'dry run: ' if dry_run else ''}nothing planned: {b.selected} execution(s) selected, "
                       f"{len(b.existing)} already being "
                       f"rolled back, {len(b.refused)} refused")
        else:
            again = " (recorded before by this same request: nothing recorded now)" if b.existing_batch else ""
            click.echo(f"batch {b.batch_id}{again}: {len(b.rollbacks)} rollback(s) over {b.records} record(s) "
                       f"({b.selected} selected, {len(b.covered)} inside another's cascade, {len(b.existing)} "
                       f"already being rolled back)\napprove it by its digest: {b.batch_hash}")
        if nxt is not None:  # what to run next, from the shell alone
            needs = "; ".join(f"{n['count']} {(' or ' if n['any_of'] else ' and ').join(n['roles'])}"
                              for n in nxt["slots"]) or "no approval open"
            click.echo(f"next: each approver approves the batch (it needs {needs}); then report each record's "
                       "steps and read where it stands:")
            for line in nxt["commands"].values():
                click.echo(f"  {line}")
        for x in b.refused[:10]:
            click.echo(f"  not planned {x['execution']}: {x['reason']}")
        if len(b.refused) > 10:
            click.echo(f"  … {len(b.refused) - 10} more not planned (--format json lists every one)")
        if b.refused:  # some of the incident is not covered: a script must not take it for done
            sys.exit(1)


def _next(rt, b, policies: str | None, url: str) -> dict:
    """What to run after planning batch ``b``, from the shell: the input of ``rt
    approve_batch`` (the batch and its digest), the slots its first plan needs, and the
    command lines (approve, a step, the status). A ``--policies``/``--ledger`` the environment
    gave are left to it; a ledger URL's password is never printed."""
    import os
    import shlex

    where = []
    if policies and os.environ.get("STOPLINE_POLICIES") != policies:
        where += ["-p", shlex.quote(policies)]
    if os.environ.get("STOPLINE_LEDGER") != url:
        where += ["--ledger", shlex.quote(_shown_url(url))]
    slots = rt.authorization(b.rollbacks[0]).verdict.open_slots if b.rollbacks else ()
    needs = [{"count": x.missing, "roles": list(x.roles), "any_of": x.any_of} for x in slots]
    role = next((x.roles[0] for x in slots if x.roles), None)
    approve = {"batch": b.batch_id, "batch_hash": b.batch_hash}
    example = {**approve, "principal": "YOUR-NAME", "roles": [role] if role else []}
    step = {"batch": b.batch_id, "duty": b.originals[0] if b.originals else "RECORD", "status": "completed"}

    def rt_line(op: str, arg: dict) -> str:
        return " ".join(["echo", shlex.quote(json.dumps(arg)), "| stopline rt", op, *where, "-i -"])

    status = ["stopline rollback --status", shlex.quote(b.batch_id), *where[where.index("--ledger"):]] \
        if "--ledger" in where else ["stopline rollback --status", shlex.quote(b.batch_id)]  # (no -p: read-only)
    return {"approve_batch": approve, "slots": needs,
            "commands": {"approve_batch": rt_line("approve_batch", example), "batch_step": rt_line("batch_step", step),
                         "status": " ".join(status)}}


def _shown_url(url: str) -> str:
    """``url`` as it can be printed: a password replaced by ``***``."""
    try:
        from sqlalchemy.engine import make_url

        u = make_url(url)
        return u.render_as_string(hide_password=True) if u.password else url
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy reads: the ledger refused it already
        return url


COMMANDS = (rollback,)
