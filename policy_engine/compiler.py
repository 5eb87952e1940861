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
and cannot fire for the type is in that sequence as a constant `false`. The compiled
objects (`compiled.py`) are slotted, never mutated after construction, and safe to share
between threads; this module imports nothing of the engine (the engine builds its
accelerators from what it returns: `engine.accel`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from .compiled import (
    ECHOED,
    CAction,
    CCost,
    CCriterion,
    CompiledPolicy,
    CPrereq,
    CRule,
    CScenario,
    CSlot,
    CStop,
    CWorkflow,
)
from .construct import fast
from .language import ir
from .language.check import cond_key
from .lark_cache import collector_paused
from .models import (
    ApprovalRequirement,
    Cost,
    ReversibilityInfo,
    RuleRef,
    ScenarioCost,
    SlotSpec,
    StopInfo,
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


def loc_str(loc: ir.Loc | None) -> str | None:
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


_EXPR_TYPE: list = []  # cel.CompiledExpr, imported once (lazily: importing this module loads no CEL)


def _call(fn: Any) -> Callable:
    """What the gate calls for a condition: the compiled expression itself (a bound
    `__call__` would save ~40 ns per call of the reference path, but it is one more object
    per condition for the host's cyclic collector to walk, for as long as the engine
    lives: 1,232 of a 1,000-rule engine's 15,362; the fast lane does not call it)."""
    return fn


def _gate_entry(item: Any, atype: str | None = None) -> tuple:
    """(call, item); `call` is None for a stop trigger whose condition is `false` for every
    action of type `atype` (its type guard)."""
    guard = getattr(item.fn, "type_guard", None)
    if atype is not None and guard is not None and atype not in guard:
        call = None
    else:
        call = _call(item.fn)
    return (call, item)


def _shared_entry(made: dict, stop: Any, atype: str) -> tuple:
    """`_gate_entry(stop, atype)`, the same tuple for every type it is the same for (`made`
    keeps one per stop trigger and whether it can fire)."""
    e = _gate_entry(stop, atype)
    return made.setdefault((id(stop), e[0] is None), e)


def reads_of(gate: tuple) -> tuple[str, ...] | None:
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


def _slots(auth: ir.Authorization | None, source: str, start: int) -> tuple[CSlot, ...]:
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
    # conditional duties count as possible costs (whether they apply is known per plan)
    cond = [d for d in sc.conditional if escalated or not d[3]]
    notify = tuple(sorted(set(sc.notify) | (set(sc.esc_notify) if escalated else set())
                          | {d[1] for d in cond if d[0] == "notify"}))
    comp = tuple(sorted({c for c, _ in sc.compensate} | ({c for c, _ in sc.esc_compensate} if escalated else set())
                        | {d[1] for d in cond if d[0] == "compensate"}))
    route = (sc.esc_route or sc.route) if escalated else sc.route
    cost = None if sc.cost is None else fast(Cost, {"amount": sc.cost.amount, "unit": sc.cost.unit})
    return fast(ScenarioCost, {"scenario": sc.name, "route": route, "slots": tuple(s.spec for s in slots),
                               "distinct_from": distinct, "notify": notify, "compensate": comp, "cost": cost})


def _ccost(c: ir.Cost | None) -> CCost | None:
    return None if c is None else CCost(c.amount, c.unit)


def _conditional_duties(sc: ir.Scenario, compiled: Mapping) -> tuple:
    """(kind, name, is_action, escalation, fn, source, location) of each duty with a `when`."""
    out = []
    esc = sc.escalation
    for escalated, notify, comp in ((False, sc.notify, sc.compensate),
                                    (True, esc.notify if esc else (), esc.compensate if esc else ())):
        for n in notify:
            if n.when is not None:
                out.append(("notify", n.name, False, escalated, _fn(n.when, compiled), n.when.source,
                            loc_str(n.when.loc)))
        for c in comp:
            if c.when is not None:
                out.append(("compensate", c.name, c.is_action, escalated, _fn(c.when, compiled), c.when.source,
                            loc_str(c.when.loc)))
    return tuple(out)


def compile_policy(pset: ir.PolicySet, compiled: Mapping) -> CompiledPolicy:
    """Compile a checked policy set. `compiled` maps `check.cond_key` -> CompiledExpr.
    (The cyclic collector is paused meanwhile, as while loading: see `collector_paused`.)
    The conditions of `compiled` are released afterwards (see `release`)."""
    with collector_paused():
        out = _compile_policy(pset, compiled)
    release(compiled.values())
    return out


def release(exprs: Any) -> None:
    """Let each compiled condition drop its closures and compiled tree until it is first
    evaluated (`CompiledExpr._release`): a loaded engine leaves the host's cyclic
    collector about 30,000 fewer objects for 1,000 rules (issue 16, goal 5)."""
    if not _EXPR_TYPE:
        from .cel import CompiledExpr

        _EXPR_TYPE.append(CompiledExpr)
    for fn in exprs:
        if isinstance(fn, _EXPR_TYPE[0]):
            fn._release()


def _compile_policy(pset: ir.PolicySet, compiled: Mapping) -> CompiledPolicy:
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
                notify=tuple(sorted({n.name for n in sc.notify if n.when is None})),
                compensate=tuple(sorted({(c.name, c.is_action) for c in sc.compensate if c.when is None})),
                cascade_depth=sc.cascade_depth,
                has_escalation=esc is not None,
                esc_route=esc.route.name if esc and esc.route else None,
                esc_slots=esc_slots,
                esc_distinct_from=tuple(r.path for r in (esc.authorization.distinct_from
                                                         if esc and esc.authorization else ())),
                esc_notify=tuple(sorted({n.name for n in esc.notify if n.when is None})) if esc else (),
                esc_compensate=tuple(sorted({(c.name, c.is_action) for c in esc.compensate
                                             if c.when is None})) if esc else (),
                location=loc_str(sc.loc),
                conditional=_conditional_duties(sc, compiled),
                cost=_ccost(sc.cost),
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
                info=info, receipt=tuple(sorted({n.name for n in s.receipt})), criteria=criteria,
                reason=reason, reason_err=reason_err,
                evidence=ir.field_object(s.evidence) if s.evidence is not None else None))
        stops.sort(key=lambda s: s.name)
        gate_stops = tuple(_gate_entry(st) for st in stops if st.fn is not None)
        with_stops = [st for st in stops if st.fn is not None]
        # a stop trigger's entry is one of two for every type (it can fire for the type, or
        # its type guard makes it `false`): each made once and shared (fewer objects for the
        # host's collector: issue 16, goal 5)
        stop_entries: dict = {}

        actions: dict[str, CAction] = {}
        for a in sorted(w.actions, key=lambda a: a.name):
            rules = []
            for r in a.rules:
                location = loc_str(r.loc)
                approval = None
                if r.effect == "require_approval" and r.approvers is not None:
                    approval = fast(ApprovalRequirement, {
                        "rule": r.name, "count": r.approvers.count,
                        "roles": tuple(sorted({x.name for x in r.approvers.roles})), "any_of": r.approvers.any_of,
                        "location": location})
                reason, reason_err = _reasons(r.effect, r.name)
                rules.append(CRule(
                    name=r.name, effect=r.effect, prec=PRECEDENCE[r.effect], fn=_fn(r.condition, compiled),
                    source=r.condition.source, location=location,
                    approval=approval, reason=reason, reason_err=reason_err))
            rules.sort(key=lambda r: (r.prec, r.name, r.source))
            gate = tuple(_shared_entry(stop_entries, st, a.name) for st in with_stops) + tuple(
                _gate_entry(r) for r in rules)
            rv = a.reversibility
            has_window = rv is not None and rv.window_seconds is not None
            reversible = rv is not None and rv.klass != "irreversible"
            ca = CAction(
                name=a.name, workflow=w.name, system=a.system, rules=tuple(rules),
                receipt=tuple(sorted({n.name for n in a.receipt})),
                klass=rv.klass if rv else None, method=rv.method if rv else None,
                window=rv.window_text if rv else None, window_seconds=rv.window_seconds if rv else None,
                window_td=(
                    timedelta(seconds=rv.window_seconds) if rv is not None and rv.window_seconds is not None else None
                ),
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
                    "after_window": after if (reversible and has_window) else (),
                    "cost": None if a.cost is None else fast(Cost, {"amount": a.cost.amount, "unit": a.cost.unit})}),
                gate=gate, reads=reads_of(gate),
                default_reason=f"no rule matched action type `{a.name}`; the workflow default is {w.default_effect}",
                fields=ir.field_object(a.fields) if a.fields is not None else None,
                cost=_ccost(a.cost),
            )
            actions[a.name] = ca
            all_actions.setdefault(a.name, ca)
        default_loc = loc_str(w.default_loc) or loc_str(w.loc)
        workflows[w.name] = CWorkflow(
            name=w.name,
            version=w.version,
            default_effect=w.default_effect,
            default_ref=fast(
                RuleRef,
                {
                    "kind": "default",
                    "name": f"default {w.default_effect}",
                    "effect": w.default_effect,
                    "location": default_loc,
                },
            ),
            actions=MappingProxyType(actions),
            stops=tuple(stops),
            stops_by_name=MappingProxyType({s.name: s for s in stops}),
            scenarios=MappingProxyType(scenarios),
            policy=MappingProxyType(consts),
            running_state={
                "name": w.name,
                "status": "running",
            },  # a plain dict (the fast paths need one); never mutated
            location=loc_str(w.loc),
            gate_stops=gate_stops,
            stop_reads=reads_of(gate_stops),
            owners=fast(WorkflowOwners, {"business": w.owner("business"), "technical": w.owner("technical")}),
        )
    return CompiledPolicy(
        policy_hash=pset.content_hash,
        workflows=MappingProxyType(workflows),
        actions=MappingProxyType(all_actions),
        roles=tuple(sorted(pset.roles)),
    )
