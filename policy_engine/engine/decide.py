"""The decision builder of the gate: a `Decision` from the values of a gate sequence's
conditions (`decide`), and the decisions no condition makes (bad input, an undeclared
workflow or type, a stopped workflow). Shared by the reference gate and the accelerators
(a decision template is `decide`'s output for one outcome)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..compiled import CAction, CompiledPolicy, CWorkflow
from ..construct import fast
from ..models import Decision, RuleRef, StopInfo, TraceEntry
from .digests import set_digest
from .util import cond_outcome, err, fmt_ts, parse_ts, reversibility, short, value_text

__all__ = ["decide", "fail", "undeclared", "stopped"]


def decide(p: CompiledPolicy, wf: CWorkflow, ca: CAction | None, entries: tuple, values: list, now_dt: datetime,
            wname: str, tname: str, aid: str | None, action: Any = None) -> Decision:
    """The gate decision from the values of `entries`' conditions (None: constant false);
    without `action` (a template), a require_approval decision has no digest yet."""
    trace: list = []
    matched: list = []
    errors: list = []
    approvals: list = []
    add_trace = trace.append
    add_matched = matched.append
    first = None  # the first matched stop trigger or rule: it decides
    # the workflow's stop triggers (by name), then the type's rules (by precedence, name);
    # each entry precomputed by the compiler (see CAction.gate)
    for (_, item), v in zip(entries, values):
        if v is False:
            add_trace(item.trace_false)
        elif v is True:
            add_trace(item.trace_true)
            add_matched(item.ref)
            approval = item.approval if item.kind == "rule" else None
            if approval is not None:
                approvals.append(approval)
            if first is None:
                first = item
        else:
            cond_error(item, v, trace, errors, item.kind)
            if item.effect != "allow":  # errors never widen permission
                add_matched(item.ref)
                approval = item.approval if item.kind == "rule" else None
                if approval is not None:
                    approvals.append(approval)
                if first is None:
                    first = item
    if ca is None and first is None:
        return undeclared(p, now_dt, wf, wname, tname, aid, "undeclared action type",
                                f"action type `{tname}` is not declared in workflow `{wname}`",
                                trace=tuple(trace), matched=tuple(matched), errors=tuple(errors))
    stop_info = None
    if first is not None:
        deciding = first.ref
        effect = first.effect
        if errors:
            name = first.name
            reason = first.reason_err if any(e.rule == name for e in errors) else first.reason
        else:
            reason = first.reason
        if effect == "stop":  # stop triggers come first: `first` is the first matched trigger
            stop_info = first.info
            receipt = ca.receipt if ca is not None else ()
            if first.receipt:
                receipt = tuple(sorted(set(receipt) | set(first.receipt)))
        else:
            assert ca is not None  # a rule matched: rules belong to a declared action type
            receipt = ca.receipt
    else:
        assert ca is not None  # the default applies to a declared action type
        deciding = wf.default_ref
        effect = wf.default_effect
        reason = ca.default_reason
        receipt = ca.receipt
    rev = reversibility(ca, now_dt)
    d = {
        "effect": effect, "deciding": deciding, "reason": reason, "workflow": wname, "action_type": tname,
        "action_id": aid, "matched": tuple(matched),
        "approvals": tuple(approvals) if effect == "require_approval" else (), "action_digest": None,
        "stop": stop_info, "reversibility": rev, "receipt": receipt, "errors": tuple(errors),
        "trace": tuple(trace), "evaluated_at": fmt_ts(now_dt), "policy_hash": p.policy_hash,
        "policy_version": wf.version, "owners": wf.owners}
    if effect == "require_approval" and action is not None:
        set_digest(d, action)
    return fast(Decision, d)


def cond_error(r: Any, v: Any, trace: list, errors: list, kind: str) -> None:
    _, msg, budget = cond_outcome(v)
    value = None if type(v).__name__ == "CelError" else value_text(v)
    matched = r.effect != "allow"
    trace.append(fast(TraceEntry, {"kind": kind, "name": r.name, "effect": r.effect, "location": r.location,
                                   "condition": r.source, "value": value, "error": msg, "matched": matched}))
    errors.append(err(r.name, kind, msg, r.location, budget))


def fail(p: CompiledPolicy, now_dt: datetime, wname: Any, tname: Any, aid: str | None, message: str,
          wf: CWorkflow | None = None) -> Decision:
    """Bad input: deny, with the problem as an error."""
    if wf is None and type(wname) is str:
        wf = p.workflows.get(wname)
    ref = fast(RuleRef, {"kind": "error", "name": "invalid input", "effect": "deny", "location": None})
    return fast(Decision, {
        "effect": "deny", "deciding": ref, "reason": f"denied: {message}",
        "workflow": wname if type(wname) is str else None, "action_type": tname if type(tname) is str else None,
        "action_id": aid, "matched": (), "approvals": (), "action_digest": None, "stop": None,
        "reversibility": None, "receipt": (), "errors": (err("<input>", "input", message),), "trace": (),
        "evaluated_at": fmt_ts(now_dt),
        "policy_hash": p.policy_hash, "policy_version": wf.version if wf else None,
        "owners": wf.owners if wf else None})


def undeclared(p: CompiledPolicy, now_dt: datetime, wf: CWorkflow | None, wname: str, tname: str | None,
                aid: str | None, name: str, message: str, trace: tuple = (), matched: tuple = (),
                errors: tuple = ()) -> Decision:
    ref = fast(RuleRef, {"kind": "undeclared", "name": name, "effect": "deny", "location": None})
    return fast(Decision, {
        "effect": "deny", "deciding": ref, "reason": f"denied: {message}", "workflow": wname,
        "action_type": tname, "action_id": aid, "matched": matched, "approvals": (), "action_digest": None,
        "stop": None, "reversibility": None, "receipt": (), "errors": errors + (err("<input>", "input", message),),
        "trace": trace, "evaluated_at": fmt_ts(now_dt), "policy_hash": p.policy_hash,
        "policy_version": wf.version if wf else None, "owners": wf.owners if wf else None})


def stopped(p: CompiledPolicy, now_dt: datetime, wf: CWorkflow | None, wname: Any, tname: Any, aid: str | None,
             state: Mapping) -> Decision:
    trigger = state.get("stopped_by")
    stopped_at = state.get("stopped_at")
    at_text = None
    errors = []
    if stopped_at is not None:
        try:
            at_text = fmt_ts(parse_ts(stopped_at, "`stopped_at`"))
        except ValueError as e:
            errors.append(err("<input>", "input", str(e)))
        except OverflowError:  # a datetime whose offset moves it out of range (year 1 at +14:00)
            errors.append(err("<input>", "input", "`stopped_at` is out of the representable range "
                                                  "(0001-01-01 to 9999-12-31 in UTC)"))
    s = wf.stops_by_name.get(trigger) if (wf is not None and type(trigger) is str) else None
    tname_s = trigger if type(trigger) is str else ("<unknown>" if trigger is None else short(trigger)[1:-1])
    if s is not None:
        d = dict(s.info.__dict__)
        d["stopped_at"] = at_text
        info = fast(StopInfo, d)
        location = s.location
    else:
        if wf is None:
            why = "its workflow is not declared" if type(wname) is str else "the action names no workflow"
        elif trigger is None:
            why = "the workflow state names no `stopped_by` trigger"
        else:
            why = f"workflow `{wf.name}` declares no stop trigger `{tname_s}`"
        errors.append(err("<input>", "input", f"stopped by an unknown trigger: {why}; the workflow stays stopped"))
        info = fast(StopInfo, {"trigger": tname_s, "known": False, "severity": None, "owner": None,
                               "affects": (), "rollback": None, "notify": (), "resume_criteria": (),
                               "receipt": (), "location": None, "stopped_at": at_text})
        location = None
    ca = wf.actions.get(tname) if (wf is not None and type(tname) is str) else None
    receipt = tuple(sorted(set(ca.receipt if ca else ()) | set(info.receipt)))
    rev = reversibility(ca, now_dt)
    ref = fast(RuleRef, {"kind": "stopped", "name": tname_s, "effect": "stop", "location": location})
    return fast(Decision, {
        "effect": "stop", "deciding": ref,
        "reason": f"the workflow is stopped by `{tname_s}`; it stays stopped until a resume decision allows it",
        "workflow": wname if type(wname) is str else None, "action_type": tname if type(tname) is str else None,
        "action_id": aid, "matched": (), "approvals": (), "action_digest": None, "stop": info, "reversibility": rev,
        "receipt": receipt,
        "errors": tuple(errors), "trace": (), "evaluated_at": fmt_ts(now_dt), "policy_hash": p.policy_hash,
        "policy_version": wf.version if wf else None, "owners": wf.owners if wf else None})
