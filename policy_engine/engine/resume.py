"""Resume decisions: may a stopped workflow act again (`may_resume`)? Every re-enable
criterion of the trigger that stopped it must hold over the evidence."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..compiled import CompiledPolicy
from ..construct import fast
from ..fieldtypes import FType, value_problem
from ..models import CriterionResult, EvalError, ResumeDecision
from .inputs import check_size
from .util import after_now, as_dict, cond_outcome, err, fmt_ts, now_of, parse_ts, short, type_name

__all__ = ["may_resume"]


# ================================================================== resume
def declared_only(t: FType, v: Any) -> Any:
    """`v` (which has type `t`: `value_problem` found none) with only what `t` declares: an
    object's declared fields, in lists and maps too; `any` and scalars as they are. The
    fields a block does not declare are not checked, so the criteria never see them: the
    type checker refuses `evidence.x` for an undeclared `x` (E115), and this refuses
    `evidence["x"]`, `dyn(evidence).x` and `size(evidence)` counting them. Recursion is
    bounded by the depth of the declared type."""
    if t.kind == "object":
        return {f.name: declared_only(f.type, v[f.name]) for f in t.fields or () if f.name in v}
    if t.item is None or t.item.kind == "any":
        return v
    if t.kind == "list":
        return [declared_only(t.item, x) for x in v]
    if t.kind == "map":
        return {k: declared_only(t.item, x) for k, x in v.items()}
    return v


def may_resume(p: CompiledPolicy, workflow: Any, stop: Any, evidence: Any, now: Any = None) -> ResumeDecision:
    """Are the re-enable criteria of the trigger that stopped `workflow` all met?"""
    now_dt, now_err = now_of(now)
    errors: list[EvalError] = []
    if now_err:
        errors.append(err("<input>", "input", now_err))
    for problem in (check_size(as_dict(workflow)), check_size(as_dict(stop))):
        if problem:  # e.g. an unpaired surrogate that the result would echo
            errors.append(err("<input>", "input", problem))
            workflow = stop = None
    workflow = as_dict(workflow)
    state: dict = {}
    claims: list[tuple[str, Any]] = []  # (where, the trigger a given state says stopped the workflow)
    names: list[tuple[str, Any]] = []  # (where, the workflow name a given state says)
    stamps: list[tuple[str, Any]] = []  # (where, the `stopped_at` a given state or decision says)
    if isinstance(workflow, Mapping):
        state = dict(workflow)
        workflow = workflow.get("name")
        if state.get("stopped_by") is not None:
            claims.append(("the workflow state", state["stopped_by"]))
        if state.get("stopped_at") is not None:  # read as a stop state's is (the criteria see `stop.stopped_at`)
            stamps.append(("the workflow state", state["stopped_at"]))
    stop = as_dict(stop)
    if isinstance(stop, Mapping):
        if "stopped_by" in stop:
            if stop.get("name") is not None:
                names.append(("the stop state", stop["name"]))
            state = {**state, **stop}
            trigger = stop.get("stopped_by")
            if stop.get("stopped_at") is not None:
                stamps.append(("the stop state", stop["stopped_at"]))
        else:  # a StopInfo or a Decision's `stop`
            inner: Mapping = stop["stop"] if isinstance(stop.get("stop"), Mapping) else stop
            if inner is not stop and stop.get("workflow") is not None:  # a Decision names its workflow
                names.append(("the stop decision", stop["workflow"]))
            trigger = inner.get("trigger")
            if inner.get("stopped_at") is not None:
                stamps.append(("the stop decision", inner["stopped_at"]))
    else:
        trigger = stop
    wf = p.workflows.get(workflow) if type(workflow) is str else None
    s = wf.stops_by_name.get(trigger) if (wf is not None and type(trigger) is str) else None
    # A state that says another trigger stopped the workflow (or that it is another
    # workflow) is not answered for this one: the criteria of the trigger that stopped it
    # apply, never an easier trigger's.
    for where, claimed in claims:
        if claimed != trigger:
            errors.append(err("<input>", "input", f"{where} says the workflow was stopped by {short(claimed)}, not "
                                                   f"{short(trigger)}: only the criteria of the trigger that stopped "
                                                   "it can resume it"))
    for where, named in names:
        if named != workflow:
            errors.append(err("<input>", "input", f"{where} names workflow {short(named)}, not {short(workflow)}"))
    if wf is None:
        errors.append(err("<input>", "input", f"workflow {short(workflow)} is not declared in the policy set"
                           if type(workflow) is str else "no workflow named (a string)"))
    elif s is None:
        declared = ", ".join(f"`{x.name}`" for x in wf.stops) or "none"
        errors.append(err("<input>", "input",
                           f"workflow `{wf.name}` declares no stop trigger {short(trigger)} (declared: {declared})"
                           if type(trigger) is str else "no stop trigger named (a string, or a workflow state "
                                                        "with `stopped_by`)"))
    ev = as_dict(evidence)
    if ev is None:
        ev = {}
    bad_input = False  # evidence or stop state that fails the input check: never evaluated
    if not isinstance(ev, Mapping):
        errors.append(err("<input>", "input", "evidence must be an object, not " + type_name(ev)))
        bad_input = True
    else:
        problem = check_size(ev)
        if problem:
            errors.append(err("<input>", "input", "evidence: " + problem))
            bad_input = True
    criteria = []
    unmet = []
    if s is not None:
        stop_val: dict[str, Any] = {
            "name": s.name, "trigger": s.name, "severity": s.info.severity, "owner": s.info.owner
        }
        # the time the workflow stopped, as every state or decision given says it (a workflow
        # state given as `workflow` too): each must be a time that happened, and all the same one
        when: list[tuple[str, Any]] = []  # (where, the time, parsed)
        for where, stamp in stamps:
            try:
                t = parse_ts(stamp, "`stopped_at`")
            except (ValueError, OverflowError) as e:
                errors.append(err("<input>", "input", str(e) if isinstance(e, ValueError) else
                                  "`stopped_at` is out of the representable range"))
                bad_input = True
                continue
            late = after_now(t, now_dt, "`stopped_at`")  # a stop dated after now is not one that happened
            if late is not None:
                errors.append(err("<input>", "input", late + "; the workflow stays stopped"))
                bad_input = True
                continue
            when.append((where, t))
        for where, t in when[1:]:
            if t != when[0][1]:
                errors.append(err("<input>", "input", f"{when[0][0]} says the workflow stopped at "
                                  f"{fmt_ts(when[0][1])}, {where} at {fmt_ts(t)}: which stop is asked about?"))
                bad_input = True
        if when and not bad_input:
            stop_val["stopped_at"] = when[0][1]
    if s is not None and s.evidence is not None and not bad_input:
        problem = value_problem(s.evidence, ev, "evidence")  # its declared shape (`evidence { ... }`)
        if problem:
            errors.append(err("<input>", "input", problem))
            bad_input = True
        else:  # what the block does not declare is not checked, so no criterion reads it (`evidence["x"]`)
            ev = declared_only(s.evidence, ev)
    if s is not None and bad_input:
        # not evaluated on a stand-in (`{}` would make `!has(evidence.open_incidents)`
        # hold): every criterion is unmet, the input error says why
        for c in s.criteria:
            unmet.append(c.name)
            criteria.append(fast(CriterionResult, {"name": c.name, "met": False,
                                                   "reason": "not evaluated: the input has an error",
                                                   "description": c.description, "location": c.location}))
    elif s is not None:
        assert wf is not None  # the trigger was found in wf
        state.setdefault("name", wf.name)
        state["status"] = "stopped"
        state["stopped_by"] = s.name
        act = {"evidence": ev, "workflow": state, "stop": stop_val, "now": now_dt, "policy": wf.policy}
        for c in s.criteria:
            ok, msg, budget = cond_outcome(c.fn(act))
            if ok:
                reason = None
            elif ok is False:
                reason = "condition is false"
            else:
                reason = f"error: {msg}"
                errors.append(err(c.name, "criterion", msg, c.location, budget))
            if not ok:
                unmet.append(c.name)
            criteria.append(fast(CriterionResult, {"name": c.name, "met": bool(ok), "reason": reason,
                                                   "description": c.description, "location": c.location}))
    # any error (an input error, a criterion's) means not allowed: errors never widen permission
    allowed = s is not None and not unmet and not errors and bool(criteria)
    return fast(ResumeDecision, {
        "workflow": workflow if type(workflow) is str else "",
        "trigger": trigger if type(trigger) is str else None, "allowed": allowed, "criteria": tuple(criteria),
        "unmet": tuple(unmet), "errors": tuple(errors), "evaluated_at": fmt_ts(now_dt),
        "policy_hash": p.policy_hash, "policy_version": wf.version if wf is not None else None})
