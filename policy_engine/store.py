"""A policy store for long-running runtimes: atomic reload, last good version kept.

    store = PolicyStore("policies/")          # raises PolicyError if the first load fails
    decision = store.evaluate(action)         # one snapshot, one policy version
    result = store.reload()                   # while other threads keep evaluating
    if not result.ok:
        log(result.render())                  # the broken version is reported, never used

Guarantees (tested in tests/test_store.py):

- `store.engine` is always a complete, immutable engine. `reload()` builds the new
  engine entirely off to the side and publishes it with one reference assignment, so
  a reader sees either the old engine or the new one, never a mixture.
- Every call of `store.evaluate(...)` (and the other evaluators) reads `store.engine`
  once and uses that snapshot for the whole call: the decision's `policy_hash` names
  the exact version that made it. Callers that need several calls on one version take
  `snap = store.engine` and call it directly.
- A version that does not load (syntax error, checker error, unreadable file, missing
  directory, or any unexpected exception while loading) never replaces the last good
  one; `reload()` returns its diagnostics and keeps them on `store.last_reload`.
- Reloads are serialized by a lock; evaluations never take it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .diagnostics import Diagnostic, PolicyError, render_all
from .source import Span

if TYPE_CHECKING:
    from .engine import ActionInput, ApprovalInput, Engine, JsonObject, NowInput, StateInput
    from .models import AuthorizationVerdict, Decision, ResumeDecision, RollbackPlan, RollbackRequest, WorkflowState

# a policy file, a directory, or several (what `policy_engine.load` takes)
PolicyPaths = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]

log = logging.getLogger("policy_engine.store")



@dataclass(frozen=True)
class ReloadResult:
    """What a reload did. `ok` False means the previous engine is still in use."""

    ok: bool
    changed: bool  # True when a new engine with a different policy hash was published
    policy_hash: str | None  # the hash in use after the reload
    previous_hash: str | None
    attempted_hash: str | None = None  # hash of the new version, when it loaded
    diagnostics: tuple[Diagnostic, ...] = ()  # errors (and warnings) of the new version
    error: str | None = None  # one-line summary when ok is False
    sources: dict = field(default_factory=dict, compare=False, repr=False)
    at: float = field(default_factory=time.time, compare=False)

    def render(self) -> str:
        if self.diagnostics:
            return render_all(self.diagnostics, self.sources)
        return self.error or ("reloaded " + str(self.policy_hash) if self.ok else "reload failed")


def _default_load(paths: PolicyPaths, accelerate: bool = True) -> Engine:
    from .engine import load

    return load(paths, accelerate=accelerate)


def policy_hash_of(engine: Any) -> str | None:
    """The content hash an engine stamps on its decisions."""
    for attr in ("policy_hash", "content_hash"):
        value = getattr(engine, attr, None)
        if isinstance(value, str):
            return value
    for inner in ("compiled", "policy", "policy_set"):
        obj = getattr(engine, inner, None)
        for attr in ("policy_hash", "content_hash"):
            value = getattr(obj, attr, None)
            if isinstance(value, str):
                return value
    return None


def _imports(engine: Any) -> tuple[str, ...]:
    """The files an engine's policy files import (`fields from "x.json"`)."""
    if isinstance(getattr(engine, "imports", None), tuple):  # an Engine keeps them (its IR is rebuilt on demand)
        return engine.imports
    files = getattr(getattr(engine, "policy_set", None), "files", ())
    return tuple(sorted({p for f in files for p in getattr(f, "imports", ())}))


def _fingerprint(paths: PolicyPaths, imports: tuple[str, ...] = ()) -> tuple:
    """(path, size, mtime_ns) of every policy file and every file they import: cheap change detection."""
    from .language.loader import UsageError, discover

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    try:
        files = discover(list(paths))
    except (UsageError, OSError) as e:
        return (("<error>", str(e)),)
    out = []
    for f in [*files, *(Path(i) for i in imports)]:
        try:
            st = f.stat()
            out.append((str(f), st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((str(f), -1, -1))
    return tuple(out)


def result_sources(result: Any) -> tuple[str, ...]:
    """The files a failed reload read, as its diagnostics know them (policy files and imports)."""
    return tuple(str(p) for p in (getattr(result, "sources", None) or {}) if isinstance(p, str))


class PolicyStore:
    """Holds the current engine of a policy directory and reloads it atomically."""

    def __init__(
        self, paths: PolicyPaths, *, load: Callable[[PolicyPaths], Engine] | None = None, accelerate: bool = True
    ) -> None:
        """`accelerate=False`: engines evaluate with the compiled closures only (see `load`)."""
        self._paths = paths
        self._load = load or (lambda p: _default_load(p, accelerate))
        self._reload_lock = threading.Lock()
        self._fingerprint = _fingerprint(paths)
        engine = self._load(paths)  # the first load must succeed: there is no last good version
        if _imports(engine):
            self._fingerprint = _fingerprint(paths, _imports(engine))
        self._engine = engine
        self._hash = policy_hash_of(engine)
        self.last_reload: ReloadResult | None = None
        self.reloads = 0  # successful reloads that published a new engine
        self.failed_reloads = 0
        # the files as they were when a reload failed (and when): ``reload_if_changed`` does not
        # load that version again, logging and counting one failure a poll, until a file changes
        # (or ``retry_failed_after`` seconds pass: a file only the failed version imports,
        # unknown to the fingerprint, may be the one fixed)
        self._failed: tuple | None = None
        self._failed_at = 0.0
        self.retry_failed_after = 60.0

    # ------------------------------------------------------------------ snapshot
    @property
    def engine(self) -> Engine:
        """The current engine (immutable). Read once per unit of work."""
        return self._engine

    @property
    def policy_hash(self) -> str | None:
        return policy_hash_of(self._engine)

    @property
    def paths(self) -> PolicyPaths:
        return self._paths

    # ------------------------------------------------------------------ reload
    def reload(self) -> ReloadResult:
        """Load the policy files again; publish the new engine only if it loads cleanly."""
        with self._reload_lock:
            previous = self._engine
            prev_hash = policy_hash_of(previous)
            fingerprint = _fingerprint(self._paths, _imports(previous))
            try:
                new = self._load(self._paths)
            except PolicyError as e:
                result = ReloadResult(False, False, prev_hash, prev_hash, None, tuple(e.diagnostics),
                                      str(e), dict(getattr(e, "sources", {}) or {}))
            except Exception as e:  # noqa: BLE001 - a broken version must never take the store down
                diag = Diagnostic("E004", "error", f"policy reload failed: {type(e).__name__}: {e}",
                                  Span.nowhere(str(self._paths)))
                result = ReloadResult(False, False, prev_hash, prev_hash, None, (diag,), str(e))
            else:
                new_hash = policy_hash_of(new)
                changed = new_hash != prev_hash
                self._engine = new  # the one atomic publication
                self._fingerprint = fingerprint if _imports(new) == _imports(previous) else \
                    _fingerprint(self._paths, _imports(new))
                self.reloads += 1
                result = ReloadResult(True, changed, new_hash, prev_hash, new_hash)
            if not result.ok:
                self.failed_reloads += 1
                log.warning("policy reload rejected; still using %s: %s", prev_hash, result.error)
                sources = tuple(sorted(p for p in result_sources(result) if not p.endswith(".policy")))
                self._failed = _fingerprint(self._paths, tuple(sorted({*_imports(previous), *sources})))
                self._failed_at = time.monotonic()
            else:
                self._failed = None
            self.last_reload = result
            return result

    def reload_if_changed(self) -> ReloadResult | None:
        """Reload when a policy file was added, removed or modified (by size/mtime). A version
        that failed to load is not loaded again (nor logged and counted again) until one of its
        files changes, or ``retry_failed_after`` seconds have passed."""
        now = _fingerprint(self._paths, _imports(self._engine))
        if now == self._fingerprint:
            return None
        if self._failed is not None and time.monotonic() - self._failed_at < self.retry_failed_after:
            imports = tuple(p for p, *_ in self._failed if not p.endswith(".policy"))
            if _fingerprint(self._paths, imports) == self._failed:
                return None
        return self.reload()

    # ------------------------------------------------------------------ delegation (one snapshot per call)
    # Same signatures as Engine's; positional and keyword arguments pass through unchanged.
    def evaluate(self, action: ActionInput, workflow_state: StateInput = None, now: NowInput = None) -> Decision:
        return self._engine.evaluate(action, workflow_state, now)

    def evaluate_json(self, action: ActionInput, workflow_state: StateInput = None, now: NowInput = None) -> str:
        return self._engine.evaluate_json(action, workflow_state, now)

    def classify_rollback(self, request: RollbackRequest | JsonObject, now: NowInput = None) -> RollbackPlan:
        return self._engine.classify_rollback(request, now)

    def authorize_rollback(
        self, plan: RollbackPlan | JsonObject, approvals: Iterable[ApprovalInput], now: NowInput = None
    ) -> AuthorizationVerdict:
        return self._engine.authorize_rollback(plan, approvals, now)

    def may_resume(
        self, workflow: str, stop: str | WorkflowState | JsonObject, evidence: JsonObject, now: NowInput = None
    ) -> ResumeDecision:
        return self._engine.may_resume(workflow, stop, evidence, now)

    def __repr__(self) -> str:
        return f"PolicyStore({self._paths!r}, policy_hash={self.policy_hash!r})"
