"""``stopline serve POLICIES``: the AuthZEN decision point, the runtime and the reviewer's
page over HTTP (registered by ``policy_engine.cli``). Imports click only; the web stack
is loaded when the command runs, so ``stopline`` starts without FastAPI installed."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import tempfile

import click

EXIT_USAGE = 2


def _fail(msg: str) -> None:
    click.echo(f"error: {msg}", err=True)
    sys.exit(EXIT_USAGE)


def _cannot_listen(host: str, port: int) -> str | None:
    """Why the server could not listen on host:port (a name that does not resolve, an
    address not of this machine, a port in use), checked the way uvicorn binds; None when
    it can. (The port could still be taken in between: uvicorn then says so itself.)"""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        return f"cannot listen on {host}:{port}: {getattr(e, 'strerror', None) or e}"
    family, kind, proto, _, addr = infos[0]
    try:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(addr)
    except OSError as e:
        return f"cannot listen on {host}:{port}: {e.strerror or e}"
    return None


@click.command("serve")
@click.argument("policies", type=click.Path(), required=False)
@click.option("--policies", "-p", "policies_opt", type=click.Path(), envvar="STOPLINE_POLICIES", default=None,
              metavar="PATH", help="The .policy file or directory, as `rt` and `report` take it (or give it as "
                                   "POLICIES; env STOPLINE_POLICIES, which POLICIES overrides).")
@click.option("--ledger", envvar="STOPLINE_LEDGER", default=None, metavar="URL",
              help="Record every decision and serve the runtime: sqlite:///PATH or postgresql+psycopg://... "
                   "(env STOPLINE_LEDGER).")
@click.option("--identities", type=click.Path(), default=None, metavar="FILE",
              help="API tokens (hashed) and JWT keys; without it approvals are refused.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8181, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Worker processes.")
@click.option("--workflow", default=None,
              help="The AuthZEN default workflow (default: the set's only workflow at start, kept across reloads).")
@click.option("--reload-interval", default=2.0, show_default=True, type=click.FloatRange(0),
              help="Seconds between policy file checks (0: only POST /v1/policies/reload).")
@click.option("--checkpoint-key", type=click.Path(), default=None, metavar="FILE",
              help="An Ed25519 signing key: POST /v1/ledger/checkpoints signs tree heads.")
@click.option("--session-key", type=click.Path(), default=None, metavar="FILE",
              help="The key that signs reviewer sessions (hex, mode 0600): replicas given the same file share "
                   "sessions (default: a random key per start).")
@click.option("--max-body", default=1 << 20, show_default=True, type=click.IntRange(1024, 64 << 20),
              help="The largest request body in bytes (larger: 413).")
@click.option("--no-fast-path", is_flag=True, help="Serve AuthZEN through FastAPI routing (for measurement).")
@click.option("--secure-cookies/--no-secure-cookies", default=None,
              help="Mark the reviewer's cookies Secure on every request (the server is behind a TLS proxy), or "
                   "only on a request that came over HTTPS (default: on every request when --public-url is "
                   "https://..., else only over HTTPS).")
@click.option("--public-url", default=None, metavar="URL",
              help="The server's address as its clients reach it (https://pdp.example.com, behind a proxy): the "
                   "AuthZEN metadata names its endpoints under it (default: the request's Host header).")
@click.option("--allow-unauthenticated", is_flag=True,
              help="Serve on a non-loopback address without --identities (evaluation open to the network).")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def serve(policies: str | None, policies_opt: str | None, ledger: str | None, identities: str | None, host: str,
          port: int, workers: int, workflow: str | None, reload_interval: float, checkpoint_key: str | None,
          session_key: str | None, max_body: int, no_fast_path: bool, secure_cookies: bool | None,
          public_url: str | None, allow_unauthenticated: bool, log_level: str) -> None:
    """Serve POLICIES over HTTP: AuthZEN 1.0 at /access/v1/evaluation(s), the runtime
    under /v1 (with --ledger), the reviewer's page at /ui, /metrics and /healthz.
    POLICIES may be given as -p/--policies PATH instead."""
    from click.core import ParameterSource

    if policies is not None and click.get_current_context().get_parameter_source("policies_opt") \
            == ParameterSource.ENVIRONMENT:
        policies_opt = None  # STOPLINE_POLICIES is a default: the POLICIES given win, as a -p would
    if (policies is None) == (policies_opt is None):
        raise click.UsageError("give the policies as POLICIES or as -p/--policies PATH, not both" if policies
                               else "missing the policies: give POLICIES or -p/--policies PATH (or set "
                                    "STOPLINE_POLICIES)")
    policies = policies if policies is not None else policies_opt or ""
    try:
        import uvicorn

        from .app import ENV, ServerConfig, create_app
        from .identity import IdentityConfigError
        from .session import SessionKeyError, load_session_key
        from .state import ServerConfigError, is_loopback
    except ImportError as e:
        _fail(f"`stopline serve` needs the server extra ({e.name} is missing): pip install 'stopline[server]' "
              "(in a checkout: pip install -e '.[server]')")
    from ..diagnostics import PolicyError
    from ..ledger import LedgerError

    if public_url is not None:
        from .state import public_url_problem

        problem = public_url_problem(public_url)
        if problem:
            _fail(f"--public-url {public_url!r}: {problem}")
        public_url = public_url.rstrip("/")
    if identities is None and not is_loopback(host) and not allow_unauthenticated:
        _fail(f"{host} is not a loopback address and no --identities was given: anyone on the network could "
              "ask for decisions; give --identities FILE (or --allow-unauthenticated)")
    # one key (or the file's keys) for every worker, read once here: a session is good in all
    keys = secrets.token_hex(32)
    if session_key is not None:
        try:
            keys = ",".join(k.hex() for k in load_session_key(session_key))
        except SessionKeyError as e:
            _fail(str(e))
    config = ServerConfig(policies=policies, ledger=ledger, identities=identities, host=host, port=port,
                          workflow=workflow, reload_interval=reload_interval, checkpoint_key=checkpoint_key,
                          max_body=max_body, fast_path=not no_fast_path, secure_cookies=secure_cookies,
                          session_key=keys, session_key_file=session_key, public_url=public_url)
    try:
        # fails here, in one line, for bad policies, a --workflow the policies lack, bad
        # identities or an unreachable ledger
        app = create_app(config)
    except PolicyError as e:  # every diagnostic: file, line, column, the caret, the hint
        if e.diagnostics and all(d.code == "E006" for d in e.diagnostics):  # a missing path: no line, no caret
            _fail("; ".join(d.message for d in e.diagnostics))
        click.echo(e.render(), err=True)
        sys.exit(EXIT_USAGE)
    except (IdentityConfigError, LedgerError, ServerConfigError) as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"{getattr(e, 'filename', '') or policies}: {e.strerror or e}")
    why = _cannot_listen(host, port)
    if why is not None:
        app.state.close()
        _fail(why)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"stopline serve: http://{shown}:{port} (AuthZEN /access/v1/evaluation, runtime "
               f"{'/v1' if ledger else 'off: no --ledger'}, reviewer's page /ui"
               f"{'' if identities else ', approvals refused: no --identities'})", err=True)
    ids = app.state.identities
    unchecked = None if ids is None else ids.audience_warning()
    if unchecked is not None:
        click.echo(f"stopline serve: warning: {unchecked}", err=True)
    if (session_key is not None or workers > 1) and not ledger and identities:
        click.echo("stopline serve: note: without --ledger a reviewer's sign-out is known only to the process that "
                   "handled it (another worker or replica takes a copy of the cookie until the session runs out)",
                   err=True)
    if workers == 1:
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
        return
    app.state.close()  # the parent only checked the configuration; each worker builds its own
    if workflow is None:  # every worker (a restarted one too) keeps the default this start decided
        config.implicit_workflow = app.state.implicit_workflow or ""
    os.environ[ENV] = json.dumps(config.to_json())
    # /metrics sums every worker: prometheus_client's multiprocess mode, in a directory of
    # our own (mode 0700, removed on exit) unless the environment names one
    from .metrics import MULTIPROC_ENV

    made = None
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        if not os.path.isdir(given):
            _fail(f"{MULTIPROC_ENV}={given} is not a directory")
    else:
        made = tempfile.mkdtemp(prefix="stopline-metrics-")
        os.environ[MULTIPROC_ENV] = made
    click.echo(f"stopline serve: {workers} workers; /metrics sums them ({MULTIPROC_ENV}={given or made})", err=True)
    if ledger and ledger.startswith("sqlite"):
        click.echo("stopline serve: note: the workers share one SQLite ledger and take turns at its write lock, so "
                   "recording does not get faster with workers (PostgreSQL lets replicas append together)", err=True)
    try:
        uvicorn.run("policy_engine.server.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                    log_level=log_level, access_log=False)
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
