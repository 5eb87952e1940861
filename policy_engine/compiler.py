"""Checked IR -> an immutable, indexed policy set the engine evaluates.

Everything that does not depend on the input is computed here, once: per workflow the
action types by name, their gate rules pre-sorted by precedence then name, the stop
triggers sorted by name, the rollback scenarios by name, the constants the conditions
see as `policy`, and the output fragments (rule references, trace entries for `true`
and `false`, approval requirements, stop descriptions, reversal costs, the `reason`
text of a decision each rule or trigger makes) that decisions share. For the gate, each
action type also gets the one sequence `evaluate()` walks: the workflow's stop triggers
(by name) then the type's rules (by precedence, then name), each as a flat tuple. A
stop trigger whose condition is guarded by `action.type` (see `CompiledExpr.type_guard`)
and cannot fire for the type is in that sequence as a constant `false`. Compiled objects
are slotted, never mutated after construction, and safe to share between threads; the
one exception is `FusedGate`, a per-type cache the engine fills as it goes (see there).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional

from . import ir
from .check import cond_key
from .models import (
    ApprovalRequirement,
    ReversibilityInfo,
    RuleRef,
    ScenarioCost,
    SlotSpec,
    StopInfo,
    TraceEntry,
    WorkflowOwners,
)

PRECEDENCE = {"stop": 0, "deny": 1, "require_approval": 2, "allow": 3}
EFFECT_BY_PRECEDENCE = ("stop", "deny", "require_approval", "allow")

# The `reason` of a gate decision made by a matched rule or trigger (see `_reasons`).
EFFECT_WORD = {"stop": "stop trigger", "deny": "deny rule", "require_approval": "require_approval rule",
               "allow": "allow rule"}
OUTRANKS = {"stop": "stop outranks every rule", "deny": "deny outranks require_approval and allow",
            "require_approval": "no stop trigger or deny rule matched",
            "allow": "no stop trigger, deny or require_approval rule matched"}


def _slot_setter(name: str) -> Callable[[Any, Any], None]:
    """The C-level setter of one of pydantic's `BaseModel` slots (`__dict__`,
    `__pydantic_fields_set__`, ...): what `object.__setattr__(m, name, v)` ends up calling,
    without the attribute lookup. Falls back to `object.__setattr__` if pydantic changes."""
    from pydantic import BaseModel

    d = getattr(BaseModel.__dict__.get(name), "__set__", None)
    if d is None:  # pragma: no cover - another pydantic layout
        return lambda m, v: object.__setattr__(m, name, v)
    return d


_new = object.__new__
_set_dict = _slot_setter("__dict__")
_set_fields_set = _slot_setter("__pydantic_fields_set__")
_set_extra = _slot_setter("__pydantic_extra__")
_set_private = _slot_setter("__pydantic_private__")


def fast(cls: type, data: dict) -> Any:
    """Build a pydantic model from already-valid data without validation.

    `data` must hold every field (by field name). Cheaper than `model_construct`
    (which resolves defaults and aliases); used only with values the engine made.
    Same result as `cls.__new__(cls)` then `object.__setattr__` of the four slots.
    """
    m = _new(cls)
    _set_dict(m, data)
    fs = _FIELDS_SET.get(cls)
    _set_fields_set(m, fs if fs is not None else _fields_set(cls))
    _set_extra(m, None)
    _set_private(m, None)
    return m


_FIELDS_SET: dict = {}


def _fields_set(cls: type) -> set:
    s = set(cls.model_fields)
    _FIELDS_SET[cls] = s
    return s


def loc_str(loc: ir.Loc | None) -> Optional[str]:
    if loc is None or loc.span is None:
        return None
    return str(loc.span)


def freeze(value: Any) -> Any:
    """A constant's value as read-only containers (dicts become mapping proxies)."""
    if isinstance(value, dict):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


FUSE_AFTER = 3  # build a type's fused gate function on its third evaluation (not at load)
PATTERNS_MAX = 1024  # decision templates kept per action type (each ~1 KB)
NOW_CACHE_MAX = 16  # renderings of `now` kept per action type
REBUILDS_MAX = 8  # a fused gate function is rebuilt wider at most this often, then for every type


class FusedGate:
    """The fast lane of one action type's gate; filled lazily, safe to share between threads.

    `fn` (once built, see `build`, `cel.fuse`) evaluates every condition of the type's gate
    that is not a constant `false` in one generated function, into a bit mask (bit `i` for
    `exprs[i]`), and returns the finished decision for that mask from the caches below,
    or the mask itself when they lack it; `slots[j]` maps gate entry `j` to its bit, or
    None for a constant `false`. A given mask always makes the same decision apart from the
    input's id and the time, so `patterns` keeps, per mask, the finished fields of that
    decision (`Engine._template` fills it). `now` caches, for the last
    few `now`s seen, the time's renderings and the finished templates at that time (see
    `engine._now_fields`): now -> {None: (evaluated_at, reversibility), mask: fields}.

    `shapes` maps each field the type reads to the shapes it has been seen with (the
    evaluations before the build, and every input the function turned away since): the
    function is specialised for them (see `engine.lane_prologue`). An input of another
    shape raises `engine.ShapeMiss` inside it; the full path decides that input, and
    `missed` widens `shapes` and builds the function again, at most `REBUILDS_MAX` times,
    after which it takes every plain type. Which function runs changes only the speed:
    every one of them returns exactly what the full path decides, or raises.

    Every write is a single attribute or dict-item store of a complete, immutable value:
    a thread sees either the old or the new value, and both are correct.
    """

    __slots__ = ("action", "exprs", "slots", "reads", "fn", "source", "pending", "patterns", "now", "shapes",
                 "rebuilds", "running", "policy")

    def __init__(self, exprs: tuple, slots: tuple, reads: Optional[tuple]) -> None:
        self.action: Any = None  # its CAction (set once built)
        self.exprs = exprs
        self.slots = slots
        self.reads = reads  # the action fields its conditions read (see CAction.reads)
        self.fn: Optional[Callable] = None
        self.source: Optional[str] = None
        self.pending = FUSE_AFTER
        self.patterns: dict = {}
        self.now: dict = {}
        self.shapes: Optional[dict] = {}  # None: every plain type (no more specialising)
        self.rebuilds = 0
        self.running: Any = None  # the workflow's running state and policy constants (set with `action`)
        self.policy: Any = None

    def observe(self, action: dict) -> bool:
        """Add the types of `action`'s read fields to `shapes`; True if that widened them."""
        from .engine import shape_of, widen

        old = self.shapes
        if old is None:
            return False
        new = dict(old)
        for k, t in shape_of(action, self.reads).items():
            seen = new.get(k)
            if seen is None or t not in seen:
                new[k] = widen(seen, t)
        if new == old:
            return False
        self.shapes = new
        return True

    def missed(self, action: dict) -> None:
        """`fn` turned `action` away for its shape: widen and rebuild (bounded). Never raises."""
        try:
            if self.observe(action):
                self.rebuilds += 1
                if self.rebuilds > REBUILDS_MAX:
                    self.shapes = None
                self.build()
        except Exception:  # noqa: BLE001 - only the speed is at stake; keep the old function
            pass

    def build(self) -> None:
        """Generate `fn(action, now, workflow_state=<running>)`: the input check of the fields
        the type reads (see `engine.lane_prologue`), every condition (see `cel.fuse`), then
        the decision from the caches (see `engine.lane_epilogue`): it returns the whole
        `Decision`, or the mask when a cache lacks its entry, or raises."""
        fn, source = self.generate(True)
        self.pending = 0
        self.source = source
        self.fn = fn

    def generate(self, decide: bool = True) -> tuple[Optional[Callable], Optional[str]]:
        """(function, source), built from the current `shapes`; with `decide` False it
        always returns the mask (the benchmark's "fused gate only" line, tests)."""
        from .cel import CompiledExpr, fuse
        from .engine import lane_epilogue, lane_prologue

        if not all(isinstance(e, CompiledExpr) for e in self.exprs):
            return None, None
        # every caller has matched the action's workflow and type to these names
        ca = self.action
        prologue, ns, fields, known = lane_prologue(self.reads, (("workflow", ca.workflow), ("type", ca.name)),
                                                    self.shapes)
        epilogue: list = []
        ns = {**ns, "_RUNNING": self.running, "_POLICY": self.policy}
        if decide:
            epilogue, ns2 = lane_epilogue(fields, self.now)
            ns.update(ns2)
        return fuse(self.exprs, ("action", "workflow", "now", "policy"), prologue, ns, fields, known,
                    dicts=("action",), epilogue=epilogue, defaults={"workflow": "_RUNNING", "policy": "_POLICY"})


@dataclass(frozen=True, slots=True)
class CRule:
    name: str
    effect: str
    prec: int
    fn: Callable[[Mapping[str, Any]], Any]
    source: str
    location: Optional[str]
    ref: RuleRef
    trace_true: TraceEntry
    trace_false: TraceEntry
    approval: Optional[ApprovalRequirement]
    kind: str = "rule"
    reason: str = ""  # the decision's `reason` when this rule decides
    reason_err: str = ""  # the same when its condition errored


@dataclass(frozen=True, slots=True)
class CCriterion:
    name: str
    fn: Callable[[Mapping[str, Any]], Any]
    source: str
    location: Optional[str]
    description: Optional[str]


@dataclass(frozen=True, slots=True)
class CStop:
    name: str
    fn: Optional[Callable[[Mapping[str, Any]], Any]]
    source: str
    location: Optional[str]
    ref: RuleRef
    trace_true: TraceEntry
    trace_false: TraceEntry
    info: StopInfo
    receipt: tuple[str, ...]
    criteria: tuple[CCriterion, ...]
    effect: str = "stop"
    prec: int = 0
    kind: str = "stop"
    reason: str = ""  # the decision's `reason` when this trigger decides
    reason_err: str = ""  # the same when its condition errored


@dataclass(frozen=True, slots=True)
class CPrereq:
    name: str
    fn: Callable[[Mapping[str, Any]], Any]
    source: str
    location: Optional[str]


@dataclass(frozen=True, slots=True)
class CAction:
    name: str
    workflow: str
    system: Optional[str]
    rules: tuple[CRule, ...]  # sorted by (precedence, name)
    receipt: tuple[str, ...]  # sorted, unique
    klass: Optional[str]
    method: Optional[str]
    window: Optional[str]
    window_seconds: Optional[int]
    window_td: Optional[timedelta]  # the window as a timedelta, built once
    runs_while_stopped: bool  # a repair action: gated by its own rules while the workflow is stopped
    verify: Optional[str]
    prerequisites: tuple[CPrereq, ...]  # sorted by name
    side_effects: tuple[str, ...]
    within_window: tuple[ScenarioCost, ...]
    after_window: tuple[ScenarioCost, ...]
    location: Optional[str]
    reversibility: Optional[ReversibilityInfo]  # reversible_until filled in per evaluation
    # What the gate walks for this type: the workflow's stop triggers that have a condition
    # (by name), then `rules`; each as (call, trace_true, trace_false, ref, approval, item).
    gate: tuple = ()
    # The top-level fields of the action its gate can read (`reads_of`): only these are
    # checked against the input limits; None: the whole action
    reads: Optional[tuple[str, ...]] = None
    default_reason: str = ""  # the decision's `reason` when no rule matches
    fused: Optional[FusedGate] = None  # the gate's fast lane (see FusedGate)


@dataclass(frozen=True, slots=True)
class CSlot:
    id: str
    count: int
    roles: tuple[str, ...]
    any_of: bool
    source: str
    spec: SlotSpec


@dataclass(frozen=True, slots=True)
class CScenario:
    name: str
    workflow: str
    standard: bool
    route: Optional[str]
    slots: tuple[CSlot, ...]
    distinct_from: tuple[tuple[str, ...], ...]
    notify: tuple[str, ...]
    compensate: tuple[tuple[str, bool], ...]  # (name, is_action)
    cascade_depth: int
    has_escalation: bool
    esc_route: Optional[str]
    esc_slots: tuple[CSlot, ...]
    esc_distinct_from: tuple[tuple[str, ...], ...]
    esc_notify: tuple[str, ...]
    esc_compensate: tuple[tuple[str, bool], ...]
    location: Optional[str]


@dataclass(frozen=True, slots=True)
class CWorkflow:
    name: str
    version: Optional[str]
    default_effect: str
    default_ref: RuleRef
    actions: Mapping[str, CAction]
    stops: tuple[CStop, ...]  # sorted by name
    stops_by_name: Mapping[str, CStop]
    scenarios: Mapping[str, CScenario]
    policy: Mapping[str, Any]  # constants, as CEL's `policy`
    running_state: Mapping[str, Any]  # `workflow` in CEL when the caller gives no state
    location: Optional[str]
    gate_stops: tuple = ()  # the gate sequence for an undeclared action type: the stop triggers alone
    stop_reads: Optional[tuple[str, ...]] = None  # what gate_stops can read (see CAction.reads)
    owners: Optional[WorkflowOwners] = None  # its business and technical owner (every decision and plan names them)


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    policy_hash: str
    workflows: Mapping[str, CWorkflow]
    actions: Mapping[str, CAction]  # every action type of the set, by name
    roles: tuple[str, ...]


class CompileError(Exception):
    pass


def _fn(cond: ir.Condition, compiled: Mapping) -> Callable:
    fn = compiled.get(cond_key(cond))
    if fn is None:  # defensive: the checker compiles every condition it accepts
        from .cel import compile_cel

        fn = compile_cel(cond.source)
    return fn


def _reasons(effect: str, name: str) -> tuple[str, str]:
    """The `reason` of a decision this rule or trigger makes: (matched, matched with an error)."""
    matched = f"{EFFECT_WORD[effect]} `{name}` matched; {OUTRANKS[effect]}"
    errored = f"{EFFECT_WORD[effect]} `{name}` matched (its condition errored; an error counts as matched); " \
        f"{OUTRANKS[effect]}"
    return matched, errored


def _call(fn: Any) -> Callable:
    """What the gate calls for a condition: a compiled expression's bound `__call__`
    (same call, without the per-call lookup of `__call__` on the type), else `fn`."""
    from .cel import CompiledExpr

    return fn.__call__ if isinstance(fn, CompiledExpr) else fn


def _gate_entry(item: Any, atype: Optional[str] = None) -> tuple:
    """(call, trace_true, trace_false, ref, approval, item); `call` is None for a stop
    trigger whose condition is `false` for every action of type `atype` (its type guard)."""
    guard = getattr(item.fn, "type_guard", None)
    if atype is not None and guard is not None and atype not in guard:
        call = None
    else:
        call = _call(item.fn)
    return (call, item.trace_true, item.trace_false, item.ref,
            item.approval if item.kind == "rule" else None, item)


ECHOED = ("id", "type", "workflow")  # the action fields a decision may show


def reads_of(gate: tuple) -> Optional[tuple[str, ...]]:
    """The top-level action fields the conditions of `gate` can read (constant `false`
    entries read nothing), plus the fields a decision shows; None if a condition may
    use the action as a whole (see `CompiledExpr.reads`)."""
    keys = set(ECHOED)
    for call, *_, item in gate:
        if call is None:
            continue
        reads = getattr(item.fn, "reads", None)
        if reads is None:
            return None
        for root, key in reads:
            if root == "action":
                if key is None:
                    return None
                keys.add(key)
    return tuple(sorted(keys))


def _fused(gate: tuple, reads: Optional[tuple]) -> FusedGate:
    exprs = []
    slots: list = []
    for call, *_, item in gate:
        if call is None:
            slots.append(None)
        else:
            slots.append(1 << len(exprs))
            exprs.append(item.fn)
    return FusedGate(tuple(exprs), tuple(slots), reads)


def _trace(kind: str, name: str, effect: str, location: Optional[str], source: str, matched: bool) -> TraceEntry:
    return fast(TraceEntry, {"kind": kind, "name": name, "effect": effect, "location": location,
                             "condition": source, "value": "true" if matched else "false",
                             "error": None, "matched": matched})


def _slots(auth: Optional[ir.Authorization], source: str, start: int) -> tuple[CSlot, ...]:
    if auth is None:
        return ()
    out = []
    for i, s in enumerate(auth.slots):
        sid = f"{'s' if source == 'standard' else 'e'}{start + i}"
        roles = tuple(sorted({r.name for r in s.roles}))
        spec = fast(SlotSpec, {"id": sid, "count": s.count, "roles": roles, "any_of": s.any_of,
                               "source": source})
        out.append(CSlot(sid, s.count, roles, s.any_of, source, spec))
    return tuple(out)


def _cost(sc: CScenario, escalated: bool) -> ScenarioCost:
    slots = list(sc.slots) + (list(sc.esc_slots) if escalated else [])
    distinct = tuple(sorted({".".join(p) for p in sc.distinct_from + (sc.esc_distinct_from if escalated else ())}))
    notify = tuple(sorted(set(sc.notify) | (set(sc.esc_notify) if escalated else set())))
    comp = tuple(sorted({c for c, _ in sc.compensate} | ({c for c, _ in sc.esc_compensate} if escalated else set())))
    route = (sc.esc_route or sc.route) if escalated else sc.route
    return fast(ScenarioCost, {"scenario": sc.name, "route": route, "slots": tuple(s.spec for s in slots),
                               "distinct_from": distinct, "notify": notify, "compensate": comp})


def compile_policy(pset: ir.PolicySet, compiled: Mapping) -> CompiledPolicy:
    """Compile a checked policy set. `compiled` maps `check.cond_key` -> CompiledExpr."""
    global_consts = {c.name: freeze(c.value) for f in pset.files for c in f.constants}
    workflows: dict[str, CWorkflow] = {}
    all_actions: dict[str, CAction] = {}
    for w in sorted(pset.workflows, key=lambda w: w.name):
        consts = dict(global_consts)
        for c in w.constants:
            consts.setdefault(c.name, freeze(c.value))
        # scenarios first: action types show what reversal costs under each one
        scenarios: dict[str, CScenario] = {}
        for sc in sorted(w.scenarios, key=lambda s: s.name):
            esc = sc.escalation
            std_slots = _slots(sc.authorization, "standard", 0)
            esc_slots = _slots(esc.authorization if esc else None, "escalation", 0)
            scenarios[sc.name] = CScenario(
                name=sc.name, workflow=w.name, standard=sc.standard,
                route=sc.route.name if sc.route else None,
                slots=std_slots,
                distinct_from=tuple(r.path for r in (sc.authorization.distinct_from if sc.authorization else ())),
                notify=tuple(sorted({n.name for n in sc.notify})),
                compensate=tuple(sorted({(c.name, c.is_action) for c in sc.compensate})),
                cascade_depth=sc.cascade_depth,
                has_escalation=esc is not None,
                esc_route=esc.route.name if esc and esc.route else None,
                esc_slots=esc_slots,
                esc_distinct_from=tuple(r.path for r in (esc.authorization.distinct_from
                                                         if esc and esc.authorization else ())),
                esc_notify=tuple(sorted({n.name for n in esc.notify})) if esc else (),
                esc_compensate=tuple(sorted({(c.name, c.is_action) for c in esc.compensate})) if esc else (),
                location=loc_str(sc.loc),
            )
        within = tuple(_cost(s, False) for s in scenarios.values())
        after = tuple(_cost(s, True) for s in scenarios.values())
        stops = []
        for s in w.stops:
            location = loc_str(s.loc)
            src = s.condition.source if s.condition else ""
            criteria = tuple(sorted((CCriterion(c.name, _fn(c.condition, compiled), c.condition.source,
                                                loc_str(c.loc), c.description) for c in s.criteria),
                                    key=lambda c: c.name))
            info = fast(StopInfo, {
                "trigger": s.name, "known": True, "severity": s.severity, "owner": s.owner,
                "affects": tuple(sorted({n.name for n in s.affects})), "rollback": s.rollback,
                "notify": tuple(sorted({n.name for n in s.notify})),
                "resume_criteria": tuple(c.name for c in criteria),
                "receipt": tuple(sorted({n.name for n in s.receipt})), "location": location, "stopped_at": None})
            reason, reason_err = _reasons("stop", s.name)
            stops.append(CStop(
                name=s.name, fn=_fn(s.condition, compiled) if s.condition else None, source=src,
                location=location,
                ref=fast(RuleRef, {"kind": "stop", "name": s.name, "effect": "stop", "location": location}),
                trace_true=_trace("stop", s.name, "stop", location, src, True),
                trace_false=_trace("stop", s.name, "stop", location, src, False),
                info=info, receipt=tuple(sorted({n.name for n in s.receipt})), criteria=criteria,
                reason=reason, reason_err=reason_err))
        stops.sort(key=lambda s: s.name)
        gate_stops = tuple(_gate_entry(st) for st in stops if st.fn is not None)
        with_stops = [st for st in stops if st.fn is not None]
        actions: dict[str, CAction] = {}
        for a in sorted(w.actions, key=lambda a: a.name):
            rules = []
            for r in a.rules:
                location = loc_str(r.loc)
                ref = fast(RuleRef, {"kind": "rule", "name": r.name, "effect": r.effect, "location": location})
                approval = None
                if r.effect == "require_approval" and r.approvers is not None:
                    approval = fast(ApprovalRequirement, {
                        "rule": r.name, "count": r.approvers.count,
                        "roles": tuple(sorted({x.name for x in r.approvers.roles})), "any_of": r.approvers.any_of,
                        "location": location})
                reason, reason_err = _reasons(r.effect, r.name)
                rules.append(CRule(
                    name=r.name, effect=r.effect, prec=PRECEDENCE[r.effect], fn=_fn(r.condition, compiled),
                    source=r.condition.source, location=location, ref=ref,
                    trace_true=_trace("rule", r.name, r.effect, location, r.condition.source, True),
                    trace_false=_trace("rule", r.name, r.effect, location, r.condition.source, False),
                    approval=approval, reason=reason, reason_err=reason_err))
            rules.sort(key=lambda r: (r.prec, r.name, r.source))
            gate = tuple(_gate_entry(st, a.name) for st in with_stops) + tuple(_gate_entry(r) for r in rules)
            rv = a.reversibility
            has_window = rv is not None and rv.window_seconds is not None
            reversible = rv is not None and rv.klass != "irreversible"
            ca = CAction(
                name=a.name, workflow=w.name, system=a.system, rules=tuple(rules),
                receipt=tuple(sorted({n.name for n in a.receipt})),
                klass=rv.klass if rv else None, method=rv.method if rv else None,
                window=rv.window_text if rv else None, window_seconds=rv.window_seconds if rv else None,
                window_td=timedelta(seconds=rv.window_seconds) if has_window else None,
                runs_while_stopped=a.runs_while_stopped,
                verify=a.verify,
                prerequisites=tuple(sorted((CPrereq(p.name, _fn(p.condition, compiled), p.condition.source,
                                                    loc_str(p.loc)) for p in a.prerequisites),
                                           key=lambda p: p.name)),
                side_effects=tuple(n.name for n in a.side_effects),
                within_window=within if reversible else (),
                after_window=after if (reversible and has_window) else (),
                location=loc_str(a.loc),
                reversibility=None if rv is None else fast(ReversibilityInfo, {
                    "klass": rv.klass, "method": rv.method, "window": rv.window_text,
                    "window_seconds": rv.window_seconds, "reversible_until": None,
                    "within_window": within if reversible else (),
                    "after_window": after if (reversible and has_window) else ()}),
                gate=gate, reads=reads_of(gate), fused=_fused(gate, reads_of(gate)),
                default_reason=f"no rule matched action type `{a.name}`; the workflow default is {w.default_effect}",
            )
            ca.fused.action = ca
            actions[a.name] = ca
            all_actions.setdefault(a.name, ca)
        default_loc = loc_str(w.default_loc) or loc_str(w.loc)
        workflows[w.name] = CWorkflow(
            name=w.name, version=w.version, default_effect=w.default_effect,
            default_ref=fast(RuleRef, {"kind": "default", "name": f"default {w.default_effect}",
                                       "effect": w.default_effect, "location": default_loc}),
            actions=MappingProxyType(actions), stops=tuple(stops),
            stops_by_name=MappingProxyType({s.name: s for s in stops}),
            scenarios=MappingProxyType(scenarios), policy=MappingProxyType(consts),
            running_state={"name": w.name, "status": "running"},  # a plain dict (the fast paths need one); never mutated
            location=loc_str(w.loc), gate_stops=gate_stops, stop_reads=reads_of(gate_stops),
            owners=fast(WorkflowOwners, {"business": w.owner("business"), "technical": w.owner("technical")}),
        )
        for ca in actions.values():  # what the fused gate function takes by default
            ca.fused.running = workflows[w.name].running_state
            ca.fused.policy = workflows[w.name].policy
    return CompiledPolicy(
        policy_hash=pset.content_hash, workflows=MappingProxyType(workflows),
        actions=MappingProxyType(all_actions), roles=tuple(sorted(pset.roles)))
