"""``stopline queue``, ``stopline history`` and ``stopline rt OP``: the runtime from the
shell (registered by ``policy_engine.cli``). ``rt`` drives every Runtime operation with a
JSON object of its arguments (``--input FILE`` or ``-``), for runtimes that are not Python:

    echo '{"action": {"workflow": "support-replies", "type": "send_customer_reply", ...}}' \\
        | stopline rt gate -p policies/ --ledger sqlite:///stopline.db -i -

Output is JSON on stdout. Exit codes: 0 ok, 2 usage, unreadable input, an unknown id or
an unreachable ledger (one line on stderr, never a traceback).
"""

from __future__ import annotations

import functools
import json
import sys

import click

EXIT_OK, EXIT_USAGE = 0, 2
DEFAULT_URL = "sqlite:///stopline.db"

_ledger_opt = click.option("--ledger", "url", envvar="STOPLINE_LEDGER", default=DEFAULT_URL, show_default=True,
                           metavar="URL", help="sqlite:///PATH or postgresql+psycopg://... (env STOPLINE_LEDGER).")
_policies_opt = click.option("--policies", "-p", "policies", envvar="STOPLINE_POLICIES", default=None,
                             metavar="PATH", help="The .policy file or directory (env STOPLINE_POLICIES).")

#: op -> (Runtime method, positional argument names taken from the input object)
OPS = {
    "gate": ("gate", ("action",)), "gate_many": ("gate_many", ("actions",)), "approve": ("approve", ("subject",)),
    "authorization": ("authorization", ("subject",)), "executed": ("executed", ("decision",)),
    "request_rollback": ("request_rollback", ("execution",)), "queue": ("queue", ()),
    "claim": ("claim", ("rollback",)), "claim_execution": ("claim_execution", ("decision",)),
    "cancel": ("cancel", ("subject",)), "step": ("step", ("rollback", "duty", "status")),
    "resume": ("resume", ("workflow",)), "history": ("history", ("id",)), "expire": ("expire", ()),
    "status": ("workflow_status", ("workflow",)),
    "claims_in_doubt": ("claims_in_doubt", ()), "abandon_claim": ("abandon_claim", ("decision",)),
    # a batch of rollbacks (`stopline rollback` plans one): its approval, where it stands, its steps
    "approve_batch": ("approve_batch", ("batch",)), "batch_status": ("batch_status", ("batch",)),
    "batch_counts": ("batch_counts", ("batch",)), "batch_step": ("batch_step", ("batch", "duty", "status")),
}
READ_ONLY = {"queue", "history", "status", "claims_in_doubt", "batch_status", "batch_counts"}


def _fail(msg: str) -> None:
    click.echo(f"error: {msg}", err=True)
    sys.exit(EXIT_USAGE)


def _no_position(e) -> bool:
    """A PolicyError about the path itself (missing, holds no policy): one line, as `stopline
    check` prints it, not a `--> policies/:1:1` with no line to show."""
    return bool(e.diagnostics) and all(d.code == "E006" for d in e.diagnostics)


def _guarded(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from ..diagnostics import PolicyError
        from ..ledger import LedgerError
        from .runtime import RuntimeUsageError

        try:
            return fn(*args, **kwargs)
        except (LedgerError, RuntimeUsageError) as e:
            _fail(str(e))
        except PolicyError as e:  # every diagnostic: file, line, column, the caret, the hint
            if _no_position(e):
                _fail("; ".join(d.message for d in e.diagnostics))
            click.echo(e.render(), err=True)
            sys.exit(EXIT_USAGE)
        except TypeError as e:  # a wrong or missing argument in the JSON input
            _fail(f"bad arguments: {e}")
    return wrapper


def _runtime(url: str, policies: str | None, *, need_policies: bool):
    from .runtime import Runtime

    if need_policies and not policies:
        _fail("this operation needs the policies: give --policies PATH (or STOPLINE_POLICIES)")
    return Runtime.open(policies, ledger=url, create=False)


def _routes(policies: str) -> set[str] | None:
    """Every route a scenario of the policies names (standard or escalated); None when they
    cannot be read here (the queue itself needed none of them)."""
    try:
        from .. import load

        out: set[str] = set()
        for w in load(policies).compiled.workflows.values():
            for sc in w.scenarios.values():
                out.update(r for r in (sc.route, getattr(sc, "esc_route", None)) if isinstance(r, str) and r)
        return out
    except Exception:  # noqa: BLE001 - a hint only
        return None


def _echo(x) -> None:
    from .runtime import dumps

    click.echo(dumps(x))


@click.command("queue")
@click.option("--route", default=None, help="Only this route (default: every route).")
@click.option("--expire", is_flag=True, help="First record `expired` for every subject past its deadline.")
@click.option("--now", default=None, help="Pin the time (RFC 3339).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@_policies_opt
@_ledger_opt
@_guarded
def queue(route: str | None, expire: bool, now: str | None, fmt: str, policies: str | None, url: str) -> None:
    """Open rollbacks per route, oldest first, with their window deadline and their status
    now: one the clock expired whose expiry is not recorded yet is `expired (not yet
    recorded)`, never pending (--expire records it)."""
    with _runtime(url, policies, need_policies=expire) as rt:
        expired = rt.expire(now=now) if expire else []
        items = rt.queue(route, now=now)
    if fmt == "json":
        _echo({"expired": [e.subject for e in expired], "queue": items})
        return
    for e in expired:
        click.echo(f"expired {e.subject}")
    if not items:
        click.echo("queue empty" + (f" (route {route})" if route else ""))
        known = _routes(policies) if route and policies else None
        if known is not None and route not in known:  # (a typo reads as an empty queue)
            click.echo(f"warning: no scenario of the policies routes to `{route}` (their routes: "
                       f"{', '.join(sorted(known)) or 'none'})", err=True)
    for i in items:
        late = " PAST WINDOW" if i.past_window else ""
        who = f" claimed by {i.claimed_by}" if i.claimed_by else ""
        status = f"{i.status} (not yet recorded)" if i.unrecorded else i.status
        click.echo(f"{i.requested_at}  {i.route or '-'}  {i.rollback_id}  {i.scenario}  {status}{who}  "
                   f"window until {i.deadline or '-'}{late}")
    lapsed = sum(1 for i in items if i.unrecorded)
    if lapsed:
        click.echo(f"{lapsed} expired by the clock, not yet recorded: they take no approval; "
                   "`stopline queue --expire` records them")


@click.command("history")
@click.argument("ref")
@_policies_opt
@_ledger_opt
@_guarded
def history(ref: str, policies: str | None, url: str) -> None:
    """The linked chain around an entry, both ways (JSON)."""
    with _runtime(url, policies, need_policies=False) as rt:
        _echo(rt.history(ref))


class _OpChoice(click.Choice):
    """The operations, with the one a slip meant (`rt gat`: "did you mean 'gate'?")."""

    def convert(self, value, param, ctx):
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as e:
            import difflib

            near = difflib.get_close_matches(str(value), [str(c) for c in self.choices], n=1, cutoff=0.6)
            if not near:
                raise
            self.fail(f"{value!r}: did you mean {near[0]!r}? ({e.message})", param, ctx)


@click.command("rt")
@click.argument("op", type=_OpChoice(sorted(OPS)), metavar="OP")
@click.option(
    "--input", "-i", "source", default="-", show_default=True, help="Arguments as a JSON object; - for stdin."
)
@_policies_opt
@_ledger_opt
@_guarded
def rt(op: str, source: str, policies: str | None, url: str) -> None:
    """Run one Runtime operation with JSON arguments; print the result as JSON.

    \b
    gate {action, now?, key?, caller?}   gate_many {actions, now?, keys?, caller?}
    approve {subject, principal, roles?, verdict?, now?}
    authorization {subject, now?}        executed {decision, receipt, caused_by?, action?, key?, now?}
    request_rollback {execution, scenario, requested_by, reason, trigger?, now?}
    queue {route?, now?, limit?}         claim {rollback, principal, now?}
    claim_execution {decision, principal, now?}
    claims_in_doubt {older_than?, now?, limit?}     abandon_claim {decision, principal, reason, now?}
    cancel {subject, principal, reason?} step {rollback, duty, status, key?, now?}
    resume {workflow, evidence, principal, now?}   history {id}   expire {now?}   status {workflow}
    approve_batch {batch, principal, roles?, batch_hash, verdict?, expires_in?, note?, now?}
    batch_status {batch, now?}           batch_counts {batch, now?}
    batch_step {batch, duty, status, key?, detail?, now?}
    """
    from ..ledger.cli import _DuplicateKey, _unique_keys, read_at_most
    from ..limits import MAX_INPUT_BYTES

    try:  # bounded like `stopline eval`'s input (read whole, /dev/zero took all the memory there was)
        raw = read_at_most(source, MAX_INPUT_BYTES + 1)
        if len(raw) > MAX_INPUT_BYTES:
            _fail(f"{source} is larger than {MAX_INPUT_BYTES} bytes")
        text = raw.decode("utf-8-sig")
        # (a key given twice is refused, as `ledger append` and the server refuse it: `json`
        # kept the last value, so `"amount": 10, "amount": 5000` recorded a decision on 5000)
        args = json.loads(text, object_pairs_hook=_unique_keys) if text.strip() else {}
    except _DuplicateKey as e:
        _fail(f"{source}: {e}: which value is meant? (nothing was recorded)")
    except (OSError, UnicodeDecodeError) as e:
        _fail(f"cannot read {source}: {getattr(e, 'strerror', None) or e}")
    except json.JSONDecodeError as e:
        _fail(f"{source}:{e.lineno}:{e.colno}: not JSON: {e.msg}")
    except RecursionError:  # (was "internal error ... a bug in Stopline")
        _fail(f"{source}: the JSON nests too deeply")
    if not isinstance(args, dict):
        _fail("the input is a JSON object of the operation's arguments")
    method, positional = OPS[op]
    missing = [p for p in positional if p not in args]
    if missing:
        import difflib

        slips = [f"`{near[0]}`, not `{k}`" for k in args
                 if (near := difflib.get_close_matches(str(k), missing, n=1, cutoff=0.6))]
        _fail(f"`{op}` needs {', '.join(f'`{m}`' for m in missing)}"
              + (f" (did you mean {'; '.join(slips)}?)" if slips else ""))
    pos = [args.pop(p) for p in positional]
    for name in ("expires_in", "older_than"):
        if name not in args:
            continue
        from datetime import timedelta

        v = args[name]
        try:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError
            if v < 0:  # (it was refused as `datetime.timedelta(days=-1, seconds=86395)`)
                _fail(f"`{name}` is a number of seconds, 0 or more, not {json.dumps(v)}")
            args[name] = timedelta(seconds=float(v))
        except (ValueError, OverflowError):
            _fail(f"`{name}` is a number of seconds, not {json.dumps(v)}")
    with _runtime(url, policies, need_policies=op not in READ_ONLY) as r:
        fn = getattr(r, method)
        _check_arguments(op, fn, positional, args)
        _echo(fn(*pos, **args))


def _check_arguments(op: str, fn, positional: tuple, args: dict) -> None:
    """An argument `op` does not take is named with the ones it does (it was "bad arguments:
    Approvals.claims_in_doubt() got an unexpected keyword argument ...", the runtime's inside)."""
    import inspect

    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # pragma: no cover - not introspectable: the call says it
        return
    params = sig.parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    named = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = [k for k in args if k not in named or named.index(k) < len(positional)]
    if unknown:  # (the input names the first arguments as OPS does: `rollback`, not `rollback_id`)
        _fail(f"bad arguments: `{op}` takes no argument {', '.join(f'`{k}`' for k in unknown)}; it takes "
              + ", ".join(f"`{n}`" for n in (*positional, *named[len(positional):])))


COMMANDS = (queue, history, rt)
