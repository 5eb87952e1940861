"""The engine: gate decisions, rollback plans, rollback authorization, resume decisions.

    engine = policy_engine.load("policies/")                  # accelerate=True by default
    engine.evaluate(action, workflow_state=None, now=None) -> Decision
    engine.classify_rollback(request, now=None) -> RollbackPlan
    engine.authorize_rollback(plan, approvals, now=None) -> AuthorizationVerdict
    engine.authorize_action(decision, approvals, now=None) -> AuthorizationVerdict
    engine.may_resume(workflow, stop, evidence, now=None) -> ResumeDecision

An `Engine` is immutable and holds no per-call state: share one between threads. None of
the four methods raises on bad input data; bad data gives a fail-closed result with the
errors listed. See docs/engine.md.

The reference path is the closures of the compiled policy (`gate`, `decide`, `rollback`,
`authorize`, `resume`): it is what a decision means. `accel/` makes the gate faster (fused
gates, shape speculation, decision templates, per-`now` caches), built from the compiled
policy beside it; `load(path, accelerate=False)` evaluates with the closures alone.

Layout: `inputs` (input checks), `gate` (the reference gate), `decide` (the decision
builder), `rollback`, `authorize`, `resume`, `questions` (`answer`), `digests`
(`plan_hash`, `action_digest`), `util`, `accel/`.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime as _datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from ..compiled import CompiledPolicy
from ..compiler import compile_policy
from ..construct import fast
from ..diagnostics import Diagnostic, PolicyError
from ..lark_cache import collector_paused
from ..limits import MAX_APPROVALS, MAX_CASCADE_RECORDS, MAX_LOOPS_LISTED, MAX_STEPS_NAMED
from ..models import (
    Action,
    Approval,
    AuthorizationVerdict,
    Decision,
    DecisionJson,
    Question,
    ResumeDecision,
    RollbackPlan,
    RollbackRequest,
    Timestamp,
    WorkflowState,
)
from ..source import DEFAULT_IGNORABLE, Span
from . import gate as _gate
from .accel import Accelerator, ShapeMiss, lane_epilogue, lane_prologue, shape_of, widen
from .accel import native as _native
from .accel.fused import FusedGate as _FusedGate
from .accel.stopped import StoppedLane
from .accel.templates import clock as _clock
from .accel.templates import decision_of as _decision_of
from .accel.templates import lane_decision as _lane_decision
from .accel.undeclared import UndeclaredLane
from .decide import fail as _fail
from .digests import action_digest, plan_hash
from .inputs import MAX_INPUT_CHARS, MAX_INPUT_DEPTH, MAX_INPUT_ITEMS, check_fields, check_size, plain_flat
from .util import UTC as _UTC
from .util import as_dict, canonical_principal, err, fmt_ts, internal, parse_ts, safe_now
from .util import utc_now as _utc_now

if TYPE_CHECKING:
    from ..language.ir import PolicySet
    from ..language.loader import LoadResult
    from ..source import SourceFile
    from . import authorize as _authorize
    from . import questions as _questions
    from . import resume as _resume
    from . import rollback as _rollback
    from .questions import QuestionError
else:
    # `rollback`, `authorize`, `resume` and `questions`: imported on the first call that needs
    # them (`_module`), not by `load()`: a fresh process compiles them from source, and neither
    # loading nor the gate reads them (issue 16, goal 5). Their constants come from where they
    # are defined (`limits`, `source`, `util`); `QuestionError` through `__getattr__` below.
    _authorize = _questions = _resume = _rollback = None


def _module(name: str) -> Any:
    """`engine.<name>`, imported (once: the import system's lock), kept as the global `_<name>`."""
    mod = importlib.import_module(f"{__name__}.{name}")
    globals()["_" + name] = mod
    return mod


def __getattr__(name: str) -> Any:
    if name == "QuestionError":
        return _module("questions").QuestionError
    if name in ("authorize", "questions", "resume", "rollback"):  # (the submodules, as before: imported now)
        return _module(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# The inputs of the public calls: a model or its plain JSON-shaped mapping. The engine still
# answers (fail closed) whatever it is handed; these name what callers are meant to pass.
JsonObject = Mapping[str, Any]
ActionInput = Action | JsonObject
StateInput = WorkflowState | JsonObject | None
NowInput = Timestamp | None
ApprovalInput = Approval | JsonObject

__all__ = ["Engine", "load", "MAX_INPUT_ITEMS", "MAX_INPUT_DEPTH", "MAX_INPUT_CHARS", "MAX_CASCADE_RECORDS",
           "MAX_APPROVALS", "MAX_LOOPS_LISTED", "MAX_STEPS_NAMED", "plan_hash", "action_digest",
           "canonical_principal", "DEFAULT_IGNORABLE", "parse_ts", "fmt_ts", "check_size", "check_fields",
           "QuestionError", "ShapeMiss", "shape_of", "widen", "lane_prologue", "lane_epilogue", "Accelerator"]


class Engine:
    """A compiled, immutable policy set. Thread-safe; build with `load()` or
    `Engine.from_load_result()`. With `accelerate=False` the gate evaluates with the
    compiled closures alone (the reference path); the answers are the same either way."""

    __slots__ = ("_p", "_accel", "_quick", "_stopped", "_undeclared", "_pset", "_psrc", "policy_hash", "sources",
                 "diagnostics", "imports", "_quiet")
    _p: CompiledPolicy
    _accel: Accelerator | None
    _quick: dict
    _stopped: StoppedLane | None
    _undeclared: UndeclaredLane | None
    _pset: PolicySet | None
    _psrc: tuple[SourceFile, ...]
    policy_hash: str
    sources: dict[str, SourceFile]
    diagnostics: tuple[Diagnostic, ...]
    imports: tuple[str, ...]

    def __init__(self, policy_set: PolicySet, compiled_exprs: Mapping, sources: Mapping[str, SourceFile] | None = None,
                 diagnostics: Sequence[Diagnostic] = (), *, accelerate: bool = True) -> None:
        p = compile_policy(policy_set, compiled_exprs)
        object.__setattr__(self, "_p", p)
        acc = Accelerator(p) if accelerate else None
        object.__setattr__(self, "_accel", acc)
        object.__setattr__(self, "_quick", acc.quick if acc is not None else {})  # (evaluate's first test)
        object.__setattr__(self, "_stopped", StoppedLane(p) if accelerate else None)
        object.__setattr__(self, "_undeclared", UndeclaredLane(p) if accelerate else None)
        object.__setattr__(self, "_pset", policy_set)
        object.__setattr__(self, "_psrc", ())
        object.__setattr__(self, "policy_hash", policy_set.content_hash)
        object.__setattr__(self, "sources", dict(sources or {}))
        object.__setattr__(self, "diagnostics", tuple(diagnostics))
        object.__setattr__(self, "imports", tuple(sorted({i for f in policy_set.files for i in f.imports})))
        # its compiled objects out of the cyclic collector's lists while it lives (native.quiet)
        quiet = _native.quiet((p, self._stopped, self._undeclared, acc))
        object.__setattr__(self, "_quiet", quiet)
        if quiet is not None and acc is not None:
            acc.keep_quiet()  # and what its first evaluations build (`FusedGate.build`)

    @property
    def policy_set(self) -> PolicySet:
        """The checked policy model (the IR) the engine was compiled from. Nothing on the
        evaluation path reads it: an engine built by `load()` does not keep it (about 42,000
        objects for 1,000 rules, which every full collection of the host would walk) but
        parses and lowers its own source texts again on first access (the same value: the
        IR is a function of the texts when no file imports another), and keeps that."""
        ps = self._pset
        if ps is None:
            with _PSET_LOCK:
                ps = self._pset
                if ps is None:
                    ps = _rebuild_policy_set(self._psrc, self.policy_hash)
                    object.__setattr__(self, "_pset", ps)
        return ps

    def _forget_policy_set(self) -> None:
        """Drop the IR (rebuilt on demand by `policy_set`) when it is a function of the kept
        source texts: every file of the set has its text in `sources`, in the set's order,
        and none imports another file (`fields from`, read from disk when lowering)."""
        ps = self._pset
        if ps is None or self.imports:
            return
        srcs = self.sources
        if [f.path for f in ps.files] != list(srcs) or any(f.imports for f in ps.files):
            return
        object.__setattr__(self, "_psrc", tuple(srcs.values()))
        object.__setattr__(self, "_pset", None)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Engine is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Engine is immutable")

    def __repr__(self) -> str:
        return f"Engine({len(self._p.workflows)} workflows, {self.policy_hash[:19]})"

    @classmethod
    def from_load_result(cls, result: LoadResult, *, accelerate: bool = True) -> Engine:
        """From a `loader.LoadResult`; raises `PolicyError` if it holds errors."""
        from ..language.loader import require_ok

        pset = require_ok(result)
        engine = cls(pset, result.compiled, result.sources, result.diagnostics, accelerate=accelerate)
        engine._forget_policy_set()
        return engine

    @property
    def compiled(self) -> CompiledPolicy:
        """The compiled policy (immutable; shared by the reference path and the accelerators)."""
        return self._p

    @property
    def accelerated(self) -> bool:
        """Whether the gate runs the accelerators (`load(..., accelerate=...)`)."""
        return self._accel is not None

    @property
    def accelerator(self) -> Accelerator | None:
        """The accelerators built for this engine (None with `accelerate=False`)."""
        return self._accel

    @property
    def workflows(self) -> tuple[str, ...]:
        return tuple(self._p.workflows)

    def version(self, workflow: str) -> str | None:
        """The declared `version` of `workflow`; None when the policy declares no such workflow.
        Raises `TypeError` when `workflow` is not a string (a name)."""
        wf = self._p.workflows.get(_name_arg(workflow, "workflow"))
        return wf.version if wf else None

    # Each public call is a last-resort guard around the real evaluator: whatever an input
    # does (an object whose own methods raise, a bug of ours), the caller gets a fail-closed
    # result naming the problem, never an exception.

    def evaluate(self, action: ActionInput, workflow_state: StateInput = None, now: NowInput = None) -> Decision:
        """May this proposed action execute now? Never raises on bad input."""
        try:
            # the commonest call first, in the fewest steps: a plain dict of a type whose fused
            # gate is built, no workflow state, a fixed `now` in UTC (the same as below, where
            # the rest of the quick path's calls go)
            if type(action) is dict and workflow_state is None and type(now) is _datetime and now.tzinfo is _UTC:
                tname = action.get("type")
                if type(tname) is str:
                    fz = self._quick.get(tname)
                    if fz is not None:
                        fn = fz.fn
                        wname = action.get("workflow")
                        if fn is not None and type(wname) is str and wname == fz.wname:
                            try:
                                m = fn(action, now)
                            except Exception:  # noqa: BLE001 - the accelerator decides (and widens the lane)
                                return self._accel.evaluate(action, None, now)  # type: ignore[union-attr]
                            if type(m) is not int:
                                return m
                            if m >= 0:
                                return _lane_decision(self._p, fz, m, now, False, wname, tname, action.get("id"),
                                                      action, None)
                            return self._accel.evaluate(action, None, now)  # type: ignore[union-attr]
            acc = self._accel
            if acc is None:
                return _gate.evaluate(self._p, action, workflow_state, now)
            # the commonest call, inline (`Accelerator.evaluate` does the same, and the rest):
            # a plain dict of a type whose fused gate is built, no workflow state, `now` in UTC
            # or omitted; the fused function checks the fields it reads and the id
            # (or a running workflow's state, as plain data: the fused function takes it too)
            state = workflow_state
            if type(action) is dict and (state is None or (type(state) is dict and _running(state))):
                tname = action.get("type")
                if type(tname) is str:
                    fz = acc.quick.get(tname)
                    if fz is not None:
                        fn = fz.fn
                        wname = action.get("workflow")
                        if fn is not None and type(wname) is str and wname == fz.wname:
                            live = now is None
                            now_dt = _clock() if live else now
                            if not live and (type(now_dt) is not _datetime or now_dt.tzinfo is not _UTC):
                                now_dt = _utc_now(now)  # a string, another zone's: as the reference reads it
                            if now_dt is not None:  # (None: unreadable, the reference says why)
                                try:  # (the clock's time: never cached, see templates.lane_epilogue)
                                    if state is None:
                                        m = fn(action, now_dt, fz.running, fz.policy, True) if live else fn(action,
                                                                                                         now_dt)
                                    else:
                                        m = fn(action, now_dt, state, fz.policy, live)
                                except Exception:  # noqa: BLE001 - the accelerator decides (and widens the lane)
                                    return acc.evaluate(action, workflow_state, now_dt)
                                if type(m) is not int:
                                    return m
                                if m >= 0:
                                    return _lane_decision(self._p, fz, m, now_dt, live, wname, tname,  # type: ignore[arg-type]
                                                          action.get("id"), action, state)
                    # not the quick path's: perhaps a type its workflow does not declare (its lane)
                    if state is None and (fz is None or (type(wname) is str and wname != fz.wname)):
                        ul = self._undeclared
                        d = ul.decide(action, now) if ul is not None else None
                        if d is not None:
                            return d
            elif type(workflow_state) is dict and type(action) is dict:  # a stopped workflow: its lane
                st = self._stopped
                d = st.decide(action, workflow_state, now) if st is not None else None
                if d is not None:
                    return d
            else:  # the package's models (Action, WorkflowState), another Mapping: as plain dicts, the
                # reference's first step (`gate.evaluate`), then the lanes; the same decision
                a2, s2 = _plain(action), _plain(workflow_state, False)
                if (a2 is not action or s2 is not workflow_state) and type(a2) is dict and (
                        s2 is None or type(s2) is dict):
                    return self.evaluate(a2, s2, now)
            return acc.evaluate(action, workflow_state, now)
        except Exception as e:  # noqa: BLE001
            return _fail(self._p, safe_now(now), None, None, None, internal(e))

    def evaluate_json(self, action: ActionInput, workflow_state: StateInput = None, now: NowInput = None) -> str:
        """The decision as JSON text, what a runtime logs: exactly the bytes of
        `evaluate(action, workflow_state, now).model_dump_json()` (and of its `to_json()`),
        in one call. Faster than the two calls: a require_approval decision's digest is
        computed at once (`evaluate` freezes a copy of the action for its first reader), and
        the decision is written from its template's JSON without comparing its fields with
        the template again (it was built in this call and nobody else has seen it). Never
        raises on bad input, as `evaluate`."""
        d = None
        try:  # evaluate's quick path, the fused function told to compute a digest at once
            acc = self._accel
            if acc is not None and workflow_state is None and type(action) is dict:
                tname = action.get("type")
                fz = acc.quick.get(tname) if type(tname) is str else None
                if fz is not None:
                    fn = fz.fn
                    wname = action.get("workflow")
                    if fn is not None and type(wname) is str and wname == fz.wname:
                        live = now is None
                        now_dt = _clock() if live else now
                        if live or (type(now_dt) is _datetime and now_dt.tzinfo is _UTC):
                            try:
                                m = fn(action, now_dt, fz.running, fz.policy, live, True)
                            except Exception:  # noqa: BLE001 - evaluate decides (and widens the lane)
                                m = None
                            if type(m) is tuple:  # the decision's fields and fields set (no Decision made)
                                fields, fs = m
                                text = fs.render(fields, True)
                                if text is not None:
                                    return text
                                d = _decision_of(fields, fs)
                            elif m is not None and type(m) is not int:
                                d = m
                            elif m is not None and m >= 0:
                                d = _lane_decision(self._p, fz, m, now_dt, live, wname, tname,  # type: ignore[arg-type]
                                                   action.get("id"), action)
                            elif m is None:
                                d = acc.evaluate(action, workflow_state, now_dt)
        except Exception:  # noqa: BLE001 - evaluate says what it says
            d = None
        if d is None:
            d = self.evaluate(action, workflow_state, now)
        fs = d.__pydantic_fields_set__
        if type(fs) is DecisionJson:
            text = fs.render(d, True)
            if text is not None:
                return text
        return d.model_dump_json()

    def classify_rollback(self, request: RollbackRequest | JsonObject, now: NowInput = None) -> RollbackPlan:
        """Scenario, route, window, authorization, feasibility and cascade of a rollback."""
        p = self._p
        rb = _rollback or _module("rollback")
        try:
            return rb.classify_rollback(p, request, now)
        except Exception as e:  # noqa: BLE001
            try:  # keep the plan's identity (workflow, scenario, route) where it is plain text
                req = as_dict(request)
                ident = {k: req[k] for k in ("workflow", "scenario", "requested_by")
                         if k in req and type(req[k]) is str} if type(req) is dict else {}
                plan = rb.classify_rollback(p, ident, safe_now(now))
            except Exception:  # noqa: BLE001
                plan = rb.classify_rollback(p, {}, safe_now(now))
            d = plan.__dict__.copy()
            d["errors"] = plan.errors + (err("<input>", "input", internal(e)),)
            d["authorizable"] = False
            d["plan_hash"] = ""
            return fast(RollbackPlan, d)

    def authorize_rollback(
        self, plan: RollbackPlan | JsonObject, approvals: Iterable[ApprovalInput], now: NowInput = None
    ) -> AuthorizationVerdict:
        """Do these approvals satisfy the plan's authorization requirement?"""
        au = _authorize or _module("authorize")
        try:
            return au.authorize_rollback(self._p, plan, approvals, now)
        except Exception as e:  # noqa: BLE001
            return au.verdict(self._p, False, "", (), (), (), (err("<input>", "input", internal(e)),),
                                      safe_now(now))

    def authorize_action(
        self, decision: Decision | JsonObject, approvals: Iterable[ApprovalInput], now: NowInput = None
    ) -> AuthorizationVerdict:
        """Do these approvals release the action a `require_approval` decision holds?

        Every matched require_approval rule's requirement (from the policy) must be met, one
        principal filling at most one slot across them; an approval counts only if it names
        the decision's `action_digest`. Never raises: see docs/approvals.md."""
        au = _authorize or _module("authorize")
        try:
            return au.authorize_action(self._p, decision, approvals, now)
        except Exception as e:  # noqa: BLE001
            return au.verdict(self._p, False, "", (), (), (), (err("<input>", "input", internal(e)),),
                                      safe_now(now))

    def may_resume(
        self, workflow: str, stop: str | WorkflowState | JsonObject, evidence: JsonObject, now: NowInput = None
    ) -> ResumeDecision:
        """May the stopped workflow act again? Every re-enable criterion must hold."""
        rs = _resume or _module("resume")
        try:
            return rs.may_resume(self._p, workflow, stop, evidence, now)
        except Exception as e:  # noqa: BLE001
            r = rs.may_resume(self._p, None, None, {}, safe_now(now))
            d = r.__dict__.copy()
            d["allowed"] = False
            d["errors"] = r.errors + (err("<input>", "input", internal(e)),)
            return fast(ResumeDecision, d)

    def answer(self, question: Question | JsonObject) -> BaseModel:
        """Answer one question envelope (the input of `stopline eval`); see `questions.answer`.
        Raises `QuestionError` when the envelope itself is malformed."""
        return (_questions or _module("questions")).answer(self, question)

    def action_info(self, name: str, workflow: str | None = None) -> dict[str, Any] | None:
        """What the policy declares for action type `name` (in `workflow`, or the one workflow
        that declares it): `{"workflow", "name", "receipt", "side_effects", "runs_while_stopped"}`.
        None when it is not declared, or declared by several workflows and none is named (a
        caller that records or plans from it fails closed). Raises `TypeError` when `name` (or
        a `workflow` given) is not a string."""
        _name_arg(name, "name")
        if workflow is not None:
            _name_arg(workflow, "workflow")
            wf = self._p.workflows.get(workflow)
            found = [(workflow, wf.actions[name])] if wf is not None and name in wf.actions else []
        else:
            found = [(w, cw.actions[name]) for w, cw in self._p.workflows.items() if name in cw.actions]
        if len(found) != 1:
            return None
        w, ca = found[0]
        return {"workflow": w, "name": name, "receipt": tuple(ca.receipt), "side_effects": tuple(ca.side_effects),
                "runs_while_stopped": bool(ca.runs_while_stopped)}


_PSET_LOCK = threading.Lock()


def _name_arg(value: Any, what: str) -> str:
    """A name given to an accessor (`version`, `action_info`): a string, else `TypeError`
    saying so (never the dictionary's `unhashable type`)."""
    if type(value) is not str and not isinstance(value, str):
        raise TypeError(f"`{what}` is a name (a string), not a {type(value).__name__}")
    return value


def _plain(value: Any, mapping: bool = True) -> Any:
    """An action (a workflow state: `mapping` False) as the reference gate reads it
    (`gate.evaluate`): a model by `as_dict`, then, for an action, a Mapping that is not a
    dict copied into one; anything else unchanged."""
    if value is None or type(value) is dict:
        return value
    value = as_dict(value)
    if mapping and type(value) is not dict and isinstance(value, Mapping):
        value = dict(value)
    return value


def _running(state: dict) -> bool:
    """Whether a workflow state (a dict) says `running` as the reference gate reads it, and
    is within the input limits: the quick path then takes it (`Engine.evaluate`), as
    `Accelerator.evaluate` does (a state without a status, which the reference reads as
    running, goes there, as anything else)."""
    status = state.get("status")
    return type(status) is str and status == "running" and (plain_flat(state) or check_size(state) is None)


# native (accel/native.py, when built and not switched off): the quick path of `evaluate`
# and `evaluate_json` taken in C, every other call by the methods above
for _name in ("evaluate", "evaluate_json"):
    if (_native_gate := _native.gate(Engine, _name, _FusedGate, _UTC, _clock)) is not None:
        setattr(Engine, _name, _native_gate)


def _rebuild_policy_set(sources: Sequence[SourceFile], policy_hash: str) -> PolicySet:
    """The checked IR of `sources` again: parsed and lowered (checking adds nothing to the
    IR: its models are frozen), with the collector paused as while loading."""
    from ..language import ir
    from ..language.loader import content_hash
    from ..language.lower import lower
    from ..language.parser import parse

    files = []
    with collector_paused():
        for src in sources:
            tree = parse(src).tree
            if tree is None:
                raise RuntimeError(f"the policy model of {src.path} cannot be rebuilt (it no longer parses)")
            files.append(lower(src, tree)[0])
        ps = ir.PolicySet(files=tuple(files), content_hash=content_hash(files))
    if ps.content_hash != policy_hash:
        raise RuntimeError("the policy model rebuilt from the engine's sources differs from the one it was built from")
    return ps


def load(path_or_paths: str | os.PathLike | Sequence[str | os.PathLike], *,
         accelerate: bool = True) -> Engine:
    """Load, check and compile a policy file, a directory, or several. Raises `PolicyError`.

    `accelerate=False`: the gate evaluates with the compiled closures only (no fused gates,
    shape speculation, decision templates or per-`now` caches); same answers, slower."""
    from ..language.loader import UsageError, load_paths

    paths = [path_or_paths] if isinstance(path_or_paths, (str, os.PathLike)) else list(path_or_paths)
    # the collector stays paused until the engine is built and the checked IR it does not
    # keep is gone: the collection that follows a pause walks every object made during it
    # that is still alive, so it walks only the engine's (48 -> ~10 ms of a 1,000-rule load)
    with collector_paused():
        try:
            result = load_paths(paths, accelerate=accelerate)
        except UsageError as e:
            # about the path it names (of several, the missing one), which has no line or column
            where = e.path or (str(paths[0]) if paths else "<no path>")
            raise PolicyError([dataclasses.replace(e.diagnostic(), span=Span.nowhere(where))]) from None
        engine = Engine.from_load_result(result, accelerate=accelerate)
        del result
    return engine
