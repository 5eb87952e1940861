"""The reference gate: `evaluate` checks the input, finds the workflow and action type,
and calls each condition's closure in the compiled gate sequence (`CAction.gate`), then
`decide.decide` builds the decision. This is the meaning of a gate decision; every
accelerator (`engine.accel`) returns exactly what it returns.

`lane` is the one hook for an accelerator: called with a declared action type's inputs
once they are checked, it returns the decision, or None and the closures decide."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from ..compiled import ECHOED, CAction, CompiledPolicy, CWorkflow
from ..construct import fast
from ..models import Decision
from .decide import decide, fail, stopped, undeclared
from .inputs import check_fields, check_size, declared_problem
from .util import UTC as _UTC
from .util import as_dict, now_of, short, type_name

__all__ = ["evaluate", "gate", "Lane"]

# (wf, ca, action, state, now, workflow name, type name, action id) -> the decision, or None
Lane = Callable[..., Decision | None]


def evaluate(p: CompiledPolicy, action: Any, workflow_state: Any = None, now: Any = None,
             lane: Lane | None = None) -> Decision:
    """May this proposed action execute now? Never raises on bad input."""
    if type(now) is datetime and now.tzinfo is _UTC:  # the common case of _now, inline
        now_dt, now_err = now, None
    else:
        now_dt, now_err = now_of(now)
    if type(action) is not dict:
        action = as_dict(action)
    if type(action) is not dict:
        if isinstance(action, Mapping):
            action = dict(action)
        else:
            return fail(p, now_dt, None, None, None, "the action must be an object, not " + type_name(action))
    problem = check_fields(action, ECHOED)  # what the decision may show; the rest as the gate reads it
    if problem:
        return fail(p, now_dt, None, None, None, problem)
    wname = action.get("workflow")
    tname = action.get("type")
    aid = action.get("id")
    aid = aid if type(aid) is str else (None if aid is None else short(aid)[1:-1])
    if now_err:
        return fail(p, now_dt, wname if type(wname) is str else None,
                          tname if type(tname) is str else None, aid, now_err)
    # workflow state
    wf = p.workflows.get(wname) if type(wname) is str else None
    if workflow_state is None:
        state = wf.running_state if wf is not None else None
    else:
        state = as_dict(workflow_state)
        if not isinstance(state, Mapping):
            return fail(p, now_dt, wname, tname, aid, "the workflow state must be an object, not "
                              + type_name(state))
        problem = check_size(state)
        if problem:
            return fail(p, now_dt, wname, tname, aid, "workflow state: " + problem)
        status = state.get("status", "running")
        # exactly the str `running` or `stopped`, nothing that merely compares equal or
        # unequal to them (fail closed: anything else is denied below)
        if type(status) is not str:
            return fail(p, now_dt, wname, tname, aid,
                              f"workflow state status must be the string `running` or `stopped`, not "
                              f"{type_name(status)}")
        if status == "stopped":
            ca = wf.actions.get(tname) if (wf is not None and type(tname) is str) else None
            if ca is not None and wf is not None and ca.runs_while_stopped:
                problem = check_fields(action, ca.reads) or declared_problem(ca, action)
                if problem:
                    return fail(p, now_dt, wname, tname, aid, problem, wf=wf)
                return repair_while_stopped(p, wf, ca, action, state, now_dt, wname, tname, aid, lane)
            return stopped(p, now_dt, wf, wname, tname, aid, state)
        if status != "running":
            return fail(p, now_dt, wname, tname, aid,
                              f"workflow state status {short(status)} is neither `running` nor `stopped`")
    if type(wname) is not str:
        return fail(p, now_dt, None, tname if type(tname) is str else None, aid,
                          "the action has no `workflow` (a string naming its workflow)"
                          if wname is None else f"the action's `workflow` must be a string, not {type_name(wname)}")
    if wf is None:
        known = ", ".join(f"`{n}`" for n in p.workflows) or "none"
        return undeclared(p, now_dt, None, wname, tname if type(tname) is str else None, aid,
                                "undeclared workflow", f"workflow `{wname}` is not declared in the policy set "
                                                       f"(declared: {known})")
    if type(tname) is not str:
        return fail(p, now_dt, wname, None, aid, "the action has no `type` (a string naming its action type)"
                          if tname is None else f"the action's `type` must be a string, not {type_name(tname)}",
                          wf=wf)
    ca = wf.actions.get(tname)
    problem = check_fields(action, ca.reads if ca is not None else wf.stop_reads) or declared_problem(ca, action)
    if problem:
        return fail(p, now_dt, wname, tname, aid, problem, wf=wf)
    return gate(p, wf, ca, action, state, now_dt, wname, tname, aid, lane)


def gate(p: CompiledPolicy, wf: CWorkflow, ca: CAction | None, action: dict, state: Any, now_dt: datetime,
         wname: str, tname: str, aid: str | None, lane: Lane | None = None) -> Decision:
    """The decision for a checked input: the workflow's stop triggers (by name), then the
    type's rules (by precedence, name), each condition's closure called in turn (a stop
    trigger that cannot fire for the type is a constant `false`), then `decide`."""
    if ca is not None:
        if lane is not None:
            d = lane(wf, ca, action, state, now_dt, wname, tname, aid)
            if d is not None:
                return d
        entries = ca.gate
    else:
        entries = wf.gate_stops
    act = {"action": action, "workflow": state, "now": now_dt, "policy": wf.policy}
    values = [False if e[0] is None else e[0](act) for e in entries]
    return decide(p, wf, ca, entries, values, now_dt, wname, tname, aid, action)


def repair_while_stopped(p: CompiledPolicy, wf: CWorkflow, ca: CAction, action: dict, state: Mapping, now_dt: datetime,
                         wname: str, tname: str, aid: str | None, lane: Lane | None = None) -> Decision:
    """A `runs_while_stopped` action in a stopped workflow: its own rules and the stop triggers decide."""
    d = gate(p, wf, ca, action, state, now_dt, wname, tname, aid, lane)
    trigger = state.get("stopped_by")
    by = f"`{trigger}`" if type(trigger) is str else "an unnamed trigger"
    fields = d.__dict__.copy()
    fields["reason"] = (f"the workflow is stopped by {by}, but `{tname}` runs while stopped (a repair action), "
                        f"so its own rules decide: {d.reason}")
    return fast(Decision, fields)
