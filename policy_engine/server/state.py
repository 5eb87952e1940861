"""What one server process holds: the policy store (hot reload, last good version
kept), the runtime on the ledger (when ``--ledger`` is given), the identities, the
metrics, the tracer, and the recorder that groups concurrent recorded decisions into
one ledger transaction (``Runtime.gate_many``: one lock, one commit, one fsync)."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import os
import queue as _queue
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .identity import Identities, IdentityReload, IdentityStore
from .metrics import Metrics
from .problems import MAX_BODY
from .session import LedgerSignOuts, SessionKeyError, Sessions, load_session_key

log = logging.getLogger("policy_engine.server")


@dataclass
class ServerConfig:
    """Everything ``stopline serve`` was given (JSON-able: passed to worker processes)."""

    policies: str
    ledger: str | None = None  #: a ledger URL: decisions are recorded and the runtime is served
    identities: str | None = None  #: the identities file; without it approvals are refused
    host: str = "127.0.0.1"
    port: int = 8181
    workflow: str | None = None  #: the AuthZEN default workflow (default: the only one in the set at start)
    reload_interval: float = 2.0  #: seconds between policy file checks; 0 turns polling off
    checkpoint_key: str | None = None  #: an Ed25519 signing key file: POST /v1/ledger/checkpoints
    max_body: int = MAX_BODY
    fast_path: bool = True  #: serve /access/v1/evaluation(s) from the raw ASGI handler
    max_batch: int = 256  #: recorded decisions per ledger transaction at most
    #: mark the reviewer's cookies Secure whatever the request's scheme (behind a TLS proxy):
    #: True always, False only on a request over HTTPS; None: as ``public_url`` says (Secure
    #: when it begins with ``https://``)
    secure_cookies: bool | None = None
    #: the key that signs the reviewer's sessions (hex, at least 32 bytes; several separated
    #: by commas: the first signs, all are accepted); None: ``session_key_file``'s, else a
    #: random one per start. ``stopline serve --workers N`` gives its workers one.
    session_key: str | None = field(default=None, repr=False)
    #: a session key file (``--session-key FILE``, :func:`.session.load_session_key`):
    #: replicas given the same file share sessions
    session_key_file: str | None = None
    #: the implicit AuthZEN default decided when ``stopline serve --workers N`` started
    #: (the set's only workflow then; ``""``: none), so its workers, restarted ones too,
    #: keep the same default; None: decided by this process's first load
    implicit_workflow: str | None = None
    #: the server's address as its clients reach it (``--public-url``): the AuthZEN metadata
    #: names its endpoints under it; None: under the request's own base URL (its Host header)
    public_url: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


class ServerConfigError(ValueError):
    """The server's configuration does not fit the policy set (one line)."""


#: seconds between policy file checks at most (a day: a longer wait is as good as 0, no
#: polling; an infinite one killed the poller's thread with a traceback)
MAX_RELOAD_INTERVAL = 86400.0


def reload_interval_problem(v: Any) -> str | None:
    """Why ``v`` cannot be ``--reload-interval`` (seconds: 0, no polling, to a day; not NaN,
    which would silently turn polling off, nor infinity), or None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= MAX_RELOAD_INTERVAL:
        return f"--reload-interval {v!r}: a number of seconds from 0 (no polling) to {MAX_RELOAD_INTERVAL:g}"
    return None


class WorkflowMissing(ServerConfigError):
    """``--workflow NAME`` names no workflow of the policy set."""


def public_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be the server's public address (an absolute http(s) URL with a
    host, no query, fragment or credentials), or None."""
    from urllib.parse import urlsplit

    try:
        u = urlsplit(url)
        u.port  # noqa: B018 - (a port that is not a number raises here)
    except ValueError as e:
        return f"not a URL ({e})"
    if u.scheme not in ("http", "https") or not u.hostname:
        return "an absolute http:// or https:// URL with a host, e.g. https://pdp.example.com"
    if u.query or u.fragment or u.username or u.password:
        return "no query, fragment or credentials"
    return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _session_keys(given: str | None, path: str | None) -> tuple[bytes, ...]:
    if given is None:
        if path is None:
            return (secrets.token_bytes(32),)
        try:
            return load_session_key(path)
        except SessionKeyError as e:
            raise ServerConfigError(str(e)) from None
    keys = []
    for part in given.split(","):
        try:
            key = bytes.fromhex(part)
        except (TypeError, ValueError):
            key = b""
        if len(key) < 32:
            raise ServerConfigError("session_key: expected at least 32 bytes as hex digits")
        keys.append(key)
    return tuple(keys)


def _workflows(engine: Any) -> list[str]:
    try:
        return sorted(engine.workflows or ())
    except Exception:  # noqa: BLE001
        return []


def _tracer() -> Any:
    """An OpenTelemetry tracer when the package is installed and a provider is configured."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    provider = trace.get_tracer_provider()
    if type(provider).__name__ in ("ProxyTracerProvider", "NoOpTracerProvider"):
        return None
    return trace.get_tracer("stopline.server")


def policy_root(path: str) -> str:
    """The directory a server's policy locations are written relative to: the policy
    directory it was started with (a single file's own directory)."""
    return path if os.path.isdir(path) else (os.path.dirname(path) or ".")


def load_relative(path: Any) -> Any:
    """``policy_engine.load(path)``, with every source location (a decision's ``deciding``,
    ``matched``, ``trace`` and ``stop`` locations, recorded with it in the ledger) relative
    to :func:`policy_root` (``replies.policy:40:8``): an HTTP caller never sees the server's
    filesystem. Files are read, and ``fields from`` imports resolved and watched, at their
    real paths; a version that does not load keeps its diagnostics as the loader wrote them
    (for the operator: logs, an authenticated reload)."""
    from ..diagnostics import Diagnostic, PolicyError
    from ..engine import Engine
    from ..language.loader import UsageError, load_paths
    from ..lark_cache import collector_paused
    from ..source import Span

    with collector_paused():  # (as `load`: see `collector_paused`)
        try:
            result = load_paths([path])
        except UsageError as e:
            raise PolicyError([Diagnostic("E006", "error", str(e), Span.nowhere(e.path or str(path)))]) from None
        if result.policy_set is not None:
            _relocate(result, policy_root(str(path)))
        engine = Engine.from_load_result(result)
        del result
    return engine


def _relocate(result: Any, root: str) -> None:
    """Name every file of a loaded set (``LoadResult``) relative to ``root``, where the
    loader named it by the path it was found at: its source, its locations in the policy
    model (``ir.Loc``, which take no part in the policy hash), its conditions' keys and its
    warnings. The imports (``PolicyFile.imports``) keep their paths: they are read again."""
    from ..language import ir
    from ..source import SourceFile

    names: dict[str, str] = {}
    for p in result.sources:
        rel = os.path.relpath(p, root)
        names[p] = p if rel == os.pardir or rel.startswith(os.pardir + os.sep) else rel
    if all(k == v for k, v in names.items()):
        return

    def span(sp: Any) -> Any:
        return sp if sp is None or sp.path not in names else dataclasses.replace(sp, path=names[sp.path])

    seen: set[int] = set()

    def walk(v: Any) -> None:
        if isinstance(v, ir.Loc):
            if id(v) not in seen:  # (shared: moved once)
                seen.add(id(v))
                v.span = span(v.span)
        elif isinstance(v, ir.Node):
            for name in type(v).model_fields:
                walk(getattr(v, name))
        elif isinstance(v, tuple):
            for x in v:
                walk(x)

    ps = result.policy_set
    walk(ps)
    result.policy_set = ps.model_copy(update={"files": tuple(
        f.model_copy(update={"path": names.get(f.path, f.path)}) for f in ps.files)})
    result.sources = {names[k]: SourceFile(names[k], s.text) for k, s in result.sources.items()}
    result.compiled = {((names.get(k[0], k[0]), k[1]) if isinstance(k, tuple) and len(k) == 2 else k): v
                       for k, v in result.compiled.items()}
    result.diagnostics = [dataclasses.replace(d, span=span(d.span)) for d in result.diagnostics]


class Recorder:
    """Concurrent recorded gates, grouped: a worker thread takes whatever is waiting (up
    to ``max_batch``) and records it with one ``gate_many``. Each action is evaluated with
    the ledger's state as the batch leaves it, exactly as if gated one after another, and
    recorded with its own request's caller (a batch groups requests of several callers).
    A batch that fails is gated again one action at a time (one bad action must not fail its
    neighbours), except when the ledger was unavailable (``LedgerUnavailable``: the
    connection lost, perhaps at COMMIT, after the batch landed): then every request of the
    batch is answered with that problem (a 503, its outcome unknown, as any database client
    reports a lost commit) and nothing is gated again, so the server never records a request
    twice. (Keying every recorded gate so the retry could find what landed cost about 30 % of
    recorded throughput, measured in session 22: not taken.) A request the client keyed
    (AuthZEN's ``Idempotency-Key``) is gated under its key, so its retry gets what landed
    (``gate_many``'s ``keys``); a batch with no key is gated as before, with none. A keyed
    request that is not a retry (its key used for another request, or given twice in the
    batch for two requests) is answered with its conflict and the rest of its transaction
    recorded in that same transaction (``gate_many``'s ``conflicts="return"``): no failed
    first attempt, no second commit, none one by one."""

    def __init__(self, runtime: Any, metrics: Metrics, max_batch: int) -> None:
        self._rt, self._m, self._max = runtime, metrics, max_batch
        self._q: _queue.SimpleQueue = _queue.SimpleQueue()
        self._lock = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="stopline-recorder", daemon=True)
        self._thread.start()

    async def gate(self, action: dict, caller: str | None = None, key: str | None = None) -> Any:
        """Gate and record ``action``, as asked by ``caller`` (the authenticated principal, None
        without identities: nothing of it recorded), under the idempotency ``key`` when given
        (a retry with a used key: the decision recorded, ``replayed``, nothing recorded)."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with self._lock:
            if self._stopped:  # (closed, or died: nothing would ever answer)
                raise recorder_unavailable()
            # (action, caller, future, loop[, key]): the key only when given
            self._q.put((action, caller, fut, loop) if key is None else (action, caller, fut, loop, key))
        return await fut

    def close(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException:  # noqa: BLE001 - never expected; the requests waiting are answered, not left hanging
            log.exception("the recorder stopped: recorded decisions are refused (503) until the server restarts")
        finally:
            with self._lock:
                self._stopped = True
            self._fail_waiting()  # (what was queued before: nothing is queued after)

    def _fail_waiting(self) -> None:
        """Answer every request still queued with a 503 problem (the recorder has stopped)."""
        while True:
            try:
                item = self._q.get_nowait()
            except _queue.Empty:
                return
            if item is not None:
                _wake(item[3], [(item[2], recorder_unavailable())])

    def _serve(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < self._max:
                try:
                    nxt = self._q.get_nowait()
                except _queue.Empty:
                    break
                if nxt is None:
                    self._q.put(None)
                    break
                batch.append(nxt)
            self._record(batch)

    def _record(self, batch: list) -> None:
        t0 = time.perf_counter()
        from ..ledger import LedgerUnavailable

        keys = [it[4] if len(it) > 4 else None for it in batch] if any(len(it) > 4 for it in batch) else None
        try:  # (a keyed request that is not a retry: its place holds its conflict, the rest recorded)
            results: list = self._rt.gate_many([it[0] for it in batch], caller=[it[1] for it in batch], keys=keys,
                                               conflicts="return")
        except LedgerUnavailable as e:  # the batch may have landed (a commit lost): gated again, it could be
            results = [e] * len(batch)  # recorded twice; each request is answered with the problem instead
        except Exception:  # noqa: BLE001 - one bad action must not fail its neighbours: gate them one by one
            results = self._one_by_one(batch, keys)
        self._m.append.observe(time.perf_counter() - t0)
        by_loop: dict[Any, list] = {}  # one wake-up per event loop, not one per request
        for it, r in zip(batch, results):
            by_loop.setdefault(it[3], []).append((it[2], r))
        for loop, settled in by_loop.items():
            _wake(loop, settled)

    def _one_by_one(self, batch: list, keys: list | None) -> list:
        """Each request gated on its own (its result, or the exception that failed it)."""
        results: list = []
        for i, it in enumerate(batch):
            try:
                results.append(self._rt.gate(it[0], caller=it[1], key=None if keys is None else keys[i]))
            except Exception as e:  # noqa: BLE001 - answered as a problem by the handler
                results.append(e)
        return results


def recorder_unavailable() -> Any:
    from .problems import Problem

    return Problem(503, "recorder-unavailable", "the recorder of decisions has stopped: no decision can be "
                   "recorded (restart the server)")


def _wake(loop: Any, settled: list) -> None:
    """Settle ``settled`` (futures with their results) on their event loop. A loop that has
    closed has nobody waiting (its requests went with it): skipped, and the recorder goes on
    (it died of the RuntimeError, and every later recorded request hung)."""
    try:
        loop.call_soon_threadsafe(_settle, settled)
    except RuntimeError:  # "Event loop is closed"
        log.warning("a recorded decision's requester went away (its event loop closed) before it was answered")


def _settle(settled: list) -> None:
    for fut, r in settled:
        if fut.done():  # the client went away
            continue
        if isinstance(r, BaseException):
            fut.set_exception(r)
        else:
            fut.set_result(r)


def _depth_of(items: list, now_s: str) -> tuple[list[tuple[str, int]], str]:
    """(open rollbacks per route, the instant from which the count may differ with no entry
    appended: the next window end or ``pending_until`` of a pending rollback; ``now_s`` itself
    when a rollback the clock may have expired was judged still open: judged again at once)."""
    from ..runtime.projections import CLOSED

    counts: dict[str, int] = {}
    until = "\uffff"
    for item in items:
        if item.status in CLOSED:
            continue
        route = item.route or "none"
        counts[route] = counts.get(route, 0) + 1
        if item.status != "pending":
            continue
        for t in (item.expires_at, item.deadline if item.requested_at <= (item.deadline or "") else None):
            if t is None:
                continue
            if t <= now_s:  # (past it, yet open: a verdict that may change)
                until = now_s
            elif t < until:
                until = t
    return list(counts.items()), until


class State:
    def __init__(self, config: ServerConfig) -> None:
        from ..store import PolicyStore

        why = reload_interval_problem(config.reload_interval)
        if why is not None:  # (before anything is opened)
            raise ServerConfigError(why)
        self.config = config
        self.metrics = Metrics()
        self.sessions = Sessions(_session_keys(config.session_key, config.session_key_file))
        #: the AuthZEN default when --workflow is not given: the set's only workflow at the
        #: first load, pinned for the life of the server (None: the set had several)
        self.implicit_workflow: str | None = None
        self._loaded = False
        # raises PolicyError, or WorkflowMissing: the first load must succeed; a later version
        # that drops the --workflow (or the pinned default) is refused by the same check
        self.store = PolicyStore(config.policies, load=self._load)
        self._workflow_names = _workflows(self.store.engine)
        # raises IdentityConfigError: the first load must succeed; later versions: see IdentityStore
        self.identity_store = IdentityStore(config.identities) if config.identities else None
        self.runtime = None
        self.recorder = None
        #: (ledger size, policy hash, valid until, counts) of the last queue depth read
        self._depth: tuple | None = None
        self.signing_key = None
        if config.checkpoint_key:
            from ..ledger import load_signing_key

            self.signing_key = load_signing_key(config.checkpoint_key)
        if config.ledger:
            from ..ledger import Ledger
            from ..runtime import Runtime, projections

            led = Ledger.open(config.ledger, create=True)
            try:
                # the runtime's tables: made here only if missing (and this database role may:
                # else one line naming them and `stopline ledger init`); when they exist, one
                # catalog read and no DDL, so a role without CREATE on the schema can serve. A
                # projection made here beside a log that already holds its entries (a table added
                # by a newer version) is filled from the log at once: empty, it would read as
                # nothing to do (the runtime rebuilds one of an older version itself)
                made = led.ensure_tables(projections.TABLES)
                self.runtime = Runtime(self.store, led, owns_ledger=True)
                if made and led.size:
                    self.runtime.rebuild()
                # sign-outs in the ledger's database: every worker and replica on it sees them
                self.sessions.signouts = LedgerSignOuts(led)
            except BaseException:
                led.close()
                raise
            self.recorder = Recorder(self.runtime, self.metrics, config.max_batch)
            self.metrics.watch_queue(self._queue_depth)
            self.metrics.watch_claims(self._claims)
        self.tracer = _tracer()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        if config.reload_interval > 0:
            self._poller = threading.Thread(target=self._poll, name="stopline-reload", daemon=True)
            self._poller.start()

    @property
    def identities(self) -> Identities | None:
        """The identities in use (the latest version of the file that loaded); None: the
        server runs without an identities file."""
        s = self.identity_store
        return None if s is None else s.current

    def reload_identities(self) -> IdentityReload | None:
        s = self.identity_store
        if s is None:
            return None
        r = s.reload()
        self._identity_reloaded(r)
        return r

    def _identity_reloaded(self, r: IdentityReload) -> None:
        self.metrics.identity_reloads.labels("ok" if r.ok else "rejected").inc()
        if r.ok:
            if r.changed:
                log.info("identities reloaded from %s", self.config.identities)
                ids = self.identities
                unchecked = None if ids is None else ids.audience_warning()
                if unchecked is not None:
                    log.warning("%s", unchecked)
        else:  # (the message names the file and the problem: never a credential)
            log.error("identities not reloaded, the last good version stays in use: %s", r.error)

    # ------------------------------------------------------------------ policies
    def _load(self, paths: Any) -> Any:
        """Load the policy set (``policy_engine.load``) and check that it has the AuthZEN
        default workflow: the ``--workflow`` the server was started with, else the one
        pinned at the first load (the set's only workflow then). A set without it is
        refused, at start and on reload, rather than denying every AuthZEN request that
        relies on the default."""
        engine = load_relative(paths)
        names = _workflows(engine)
        wf = self.config.workflow
        if wf:
            if wf not in names:
                raise WorkflowMissing(f"--workflow {wf}: the policy set {paths} has no workflow `{wf}` "
                                      f"(its workflows: {', '.join(names) or 'none'})")
            return engine
        if not self._loaded:  # the first load: the implicit default is decided once, here
            given = self.config.implicit_workflow
            if given is None:
                pinned = names[0] if len(names) == 1 else None
            else:  # (a worker of `stopline serve --workers N`: the parent decided)
                pinned = given or None
                if pinned is not None and pinned not in names:
                    raise WorkflowMissing(
                        f"the AuthZEN default workflow `{pinned}` (the policy set's only workflow when the server "
                        f"started) is not in the policy set {paths} (its workflows: {', '.join(names) or 'none'}): "
                        "restart the server (give --workflow NAME to choose the default)")
            self.implicit_workflow = pinned
            self._loaded = True
            return engine
        pinned = self.implicit_workflow
        if pinned is not None and pinned not in names:
            raise WorkflowMissing(
                f"the AuthZEN default workflow `{pinned}` (the policy set's only workflow when the server started) "
                f"is not in the policy set {paths} (its workflows: {', '.join(names) or 'none'}): AuthZEN requests "
                "without a workflow would have no default; keep the workflow, or restart the server with the new "
                "set (give --workflow NAME to choose the default)")
        return engine

    def default_workflow(self, engine: Any = None) -> str | None:
        """The workflow of an AuthZEN request that names none: ``--workflow``, else the
        set's only workflow when the server started (kept across reloads; a reload that
        removes it is refused), else None (the request is denied as of no workflow)."""
        return self.config.workflow or self.implicit_workflow

    def reload(self) -> Any:
        r = self._reloaded(self.store.reload())
        self.metrics.reloads.labels("ok" if r.ok else "rejected").inc()
        return r

    def _reload_if_changed(self) -> Any:
        r = self.store.reload_if_changed()
        return None if r is None else self._reloaded(r)

    def _reloaded(self, r: Any) -> Any:
        """A reload refused by :meth:`_load`'s workflow check reads as that one line
        (the store words any other exception as an unreadable file, and logs the refusal).
        A reload that changes the set's workflows is logged with the default it leaves."""
        if not r.ok and r.error and r.diagnostics and f"{WorkflowMissing.__name__}: " in r.diagnostics[0].message:
            r = dataclasses.replace(r, diagnostics=(), sources={})
            self.store.last_reload = r
        if r.ok and r.changed:
            names = _workflows(self.store.engine)
            if names != self._workflow_names:
                self._workflow_changed(self._workflow_names, names)
                self._workflow_names = names
        return r

    def _workflow_changed(self, before: list[str], after: list[str]) -> None:
        shown = ", ".join(after) or "none"
        if self.config.workflow:
            log.info("policy reloaded: workflows now %s; the AuthZEN default stays `%s` (--workflow)",
                     shown, self.config.workflow)
        elif self.implicit_workflow is not None and len(after) > 1:
            wf = self.implicit_workflow
            log.warning("policy reloaded: workflows now %s; AuthZEN requests without a workflow still go to `%s`, "
                        "the only workflow when the server started (a restart with this set would have no "
                        "default: start it with --workflow %s)", shown, wf, wf)
        elif self.implicit_workflow is not None:
            log.info("policy reloaded: workflows now %s; the AuthZEN default stays `%s`", shown,
                     self.implicit_workflow)
        else:
            log.warning("policy reloaded: workflows now %s; AuthZEN requests without a workflow still have no "
                        "default (the set did not have exactly one workflow when the server started; start it with "
                        "--workflow NAME to give one)", shown)

    def _poll(self) -> None:
        while not self._stop.wait(self.config.reload_interval):
            self._check("policy", self._reload_if_changed,
                        lambda r: self.metrics.reloads.labels("ok" if r.ok else "rejected").inc())
            if self.identity_store is not None:
                self._check("identities", self.identity_store.reload_if_changed, self._identity_reloaded)

    @staticmethod
    def _check(what: str, reload_if_changed: Any, reloaded: Any) -> None:
        try:
            r = reload_if_changed()
        except Exception:  # noqa: BLE001 - the poller never dies
            log.exception("%s reload check failed", what)
            return
        if r is not None:
            reloaded(r)

    def _queue_depth(self) -> list[tuple[str, int]]:
        """Open rollbacks per route at the scrape: the queue's items whose status now is not
        a closed one (denied, expired, cancelled, verified: ``projections.CLOSED``). The queue
        also lists, until the sweeper records it, a rollback the clock has expired (``status``
        ``expired``, ``unrecorded``): it takes no approval, so it is not counted.

        ``/metrics`` answers anyone: the counts are kept, with the ledger's size and the policy
        hash they were read at, until either changes or the clock reaches the next window end
        or ``pending_until`` of a pending rollback (:func:`_depth_of`). A scrape then reads
        the ledger's size, and the queue (every open rollback) is walked once per change, not
        once per scrape."""
        rt = self.runtime
        if rt is None:  # watched only once the runtime is open
            return []
        from datetime import UTC, datetime

        from ..timestamps import format_micros

        size, phash = rt.ledger.size, self.store.policy_hash
        now_s = format_micros(datetime.now(UTC))
        hit = self._depth
        if hit is not None and hit[0] == size and hit[1] == phash and now_s < hit[2]:
            return hit[3]
        counts, until = _depth_of(rt.queue(now=now_s), now_s)
        self._depth = (size, phash, until, counts)
        return counts

    def _claims(self) -> tuple[int, float]:
        """(claims in doubt, the oldest one's age in seconds) at the scrape: one read of the
        ``rt_claims`` projection."""
        from datetime import UTC, datetime

        from sqlalchemy import func, select

        from ..runtime.projections import claims
        from ..timestamps import parse_rfc3339

        if self.runtime is None:
            return 0, 0.0
        with self.runtime.ledger.reading() as c:
            n, first = c.execute(select(func.count(), func.min(claims.c.claimed_at))).one()
        age = (datetime.now(UTC) - parse_rfc3339(first)).total_seconds() if first else 0.0
        return int(n), max(age, 0.0)

    def close(self) -> None:
        self._stop.set()
        if self.recorder is not None:
            self.recorder.close()
        if self.runtime is not None:
            self.runtime.close()
