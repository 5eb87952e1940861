"""Rollback plans: the scenario, route, reversal window, authorization requirement,
feasibility and cascade of a rollback request (`classify_rollback`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..compiled import CAction, CompiledPolicy, CScenario
from ..construct import fast
from ..limits import MAX_CASCADE_RECORDS, MAX_CLOCK_SKEW_SECONDS, MAX_LOOPS_LISTED, MAX_STEPS_NAMED
from ..models import (
    AuthorizationRequirement,
    Cascade,
    CascadeLoop,
    CascadeStep,
    CheckpointRecord,
    Compensation,
    DistinctRef,
    Duty,
    EvalError,
    Feasibility,
    PrerequisiteResult,
    RollbackPlan,
    UndeclaredRecord,
)
from .digests import plan_hash
from .inputs import check_size
from .util import (
    after_now,
    as_dict,
    canonical_principal,
    cond_outcome,
    err,
    fmt_ts,
    now_of,
    parse_ts,
    short,
    type_name,
    window_now,
)

__all__ = ["classify_rollback", "reversal_window", "MAX_CASCADE_RECORDS", "MAX_LOOPS_LISTED", "MAX_STEPS_NAMED"]




# ================================================================== rollback
def classify_rollback(p: CompiledPolicy, request: Any, now: Any = None) -> RollbackPlan:
    """Scenario, route, window, authorization, feasibility and cascade of a rollback."""
    now_dt, now_err = now_of(now)
    win_now = window_now(now, now_dt)  # what windows are compared with (sub-microsecond `now` rounded up)
    req = as_dict(request)
    errors: list[EvalError] = []
    if now_err:
        errors.append(err("<input>", "input", now_err))
    valid = isinstance(req, Mapping)
    if not isinstance(req, Mapping):
        errors.append(err("<input>", "input", "the rollback request must be an object, not " + type_name(req)))
        req = {}
    else:
        problem = check_size(req)
        if problem:
            errors.append(err("<input>", "input", problem))
            req = {}
            valid = False
    wname = req.get("workflow")
    sname = req.get("scenario")
    requested_by = req.get("requested_by")
    original = req.get("original")
    wf = p.workflows.get(wname) if type(wname) is str else None
    if valid and wf is None:
        errors.append(err("<input>", "input", f"workflow {short(wname)} is not declared in the policy set"
                           if type(wname) is str else "the request has no `workflow` (a string)"))
    sc: CScenario | None = wf.scenarios.get(sname) if (wf is not None and type(sname) is str) else None
    if wf is not None and sc is None:
        declared = ", ".join(f"`{n}`" for n in wf.scenarios) or "none"
        errors.append(err("<input>", "input",
                           f"rollback scenario {short(sname)} is not declared in workflow `{wf.name}` "
                           f"(declared: {declared})" if type(sname) is str
                           else "the request has no `scenario` (a string)"))
    if valid and type(requested_by) is not str:
        errors.append(err("<input>", "input", "the request has no `requested_by` (a principal id string)"))
    if not isinstance(original, Mapping):
        if valid:
            errors.append(err("<input>", "input", "the request has no `original` record (an object)"))
        original = {}
    oid = original.get("id")
    otype = original.get("type")
    if original and type(oid) is not str:
        errors.append(err("<input>", "input", "the original record has no `id` (a string)"))
    # The original's type is looked up in the request's workflow only: the same name in
    # another workflow has another window, route and requirement (and a type of no
    # workflow has none). Anything else is not authorizable.
    actions: Mapping[str, CAction] = wf.actions if wf is not None else {}
    ca = actions.get(otype) if type(otype) is str else None
    type_ok = ca is not None
    if wf is not None and original and ca is None:
        if type(otype) is not str:
            errors.append(err("<input>", "input", "the original record has no `type` (a string naming an "
                                                   f"action type of workflow `{wf.name}`); the plan is not "
                                                   "authorizable"))
        else:
            elsewhere = sorted(w.name for w in p.workflows.values() if otype in w.actions)
            declared = ", ".join(f"`{n}`" for n in wf.actions) or "none"
            errors.append(err("<input>", "input", (
                f"the original's type {short(otype)} is not declared in workflow `{wf.name}` (declared: "
                f"{declared})" + (f"; it is declared in {', '.join(f'`{n}`' for n in elsewhere)}, whose "
                                  "requirement does not apply to a rollback filed under this workflow"
                                  if elsewhere else "")
                + "; the plan is not authorizable"), wf.location))
    # ---------------------------------------------------------------- window
    window = "none"
    executed_at = None
    until = None
    overflow = False
    if ca is not None and ca.window_seconds is not None and ca.klass != "irreversible":
        ex = original.get("executed_at")
        executed_at, until, within, problem, overflow, _ = reversal_window(
            ca, ex, win_now, "`original.executed_at`", now_dt)
        if problem is not None:
            errors.append(err("<input>", "input", problem + ("; the plan is not authorizable" if overflow else ""),
                               ca.location if overflow else None))
        window = "standard" if within else "escalated"
    elif original.get("executed_at") is not None:
        try:
            executed_at = fmt_ts(parse_ts(original.get("executed_at"), "`original.executed_at`"))
        except (ValueError, OverflowError) as e:
            errors.append(err("<input>", "input", str(e) if isinstance(e, ValueError) else
                               "`original.executed_at` is out of the representable range"))
    escalated = window == "escalated"
    # ---------------------------------------------------------------- authorization
    slots: tuple = ()
    distinct_paths: tuple = ()
    route = None
    notify: tuple = ()
    comps: list = []
    duties: tuple = ()
    depth_limit = 0
    if sc is not None and wf is not None:  # sc is only found through wf
        slots = tuple(s.spec for s in sc.slots)
        distinct_paths = sc.distinct_from
        route = sc.route
        notify_set = set(sc.notify)
        comps = [(n, a, "standard") for n, a in sc.compensate]
        depth_limit = sc.cascade_depth
        if escalated and sc.has_escalation:
            slots = slots + tuple(s.spec for s in sc.esc_slots)
            distinct_paths = distinct_paths + sc.esc_distinct_from
            route = sc.esc_route or route
            notify_set |= set(sc.esc_notify)
            have = {n for n, _, _ in comps}
            comps += [(n, a, "escalation") for n, a in sc.esc_compensate if n not in have]
        duties = duty_rows(sc, escalated and sc.has_escalation, notify_set, comps,
                           {"original": original, "request": req, "now": now_dt, "policy": wf.policy})
        notify = tuple(sorted(notify_set))
    drefs = []
    unresolved = False
    for path in dict.fromkeys(distinct_paths):
        principals, problem = _resolve(req, path)
        for principal in principals:
            drefs.append(fast(DistinctRef, {"ref": ".".join(path), "principal": principal}))
        if problem is not None:  # nobody to exclude is not "exclude nobody": fail closed
            unresolved = True
            errors.append(err("<input>", "input", f"`distinct from {'.'.join(path)}`: {problem}; the plan is "
                                                   "not authorizable", sc.location if sc is not None else None))
    drefs.sort(key=lambda d: (d.ref, d.principal or ""))
    excluded = tuple(sorted({d.principal for d in drefs if d.principal is not None}))
    auth = fast(AuthorizationRequirement, {"slots": slots, "distinct_from": tuple(drefs),
                                           "excluded_principals": excluded})
    compensations = tuple(fast(Compensation, {"name": n, "kind": "action" if a else "text", "source": src})
                          for n, a, src in sorted(comps, key=lambda c: (c[2] != "standard", c[0])))
    # ---------------------------------------------------------------- feasibility and cascade
    pol = wf.policy if wf is not None else {}
    if original:
        cascade = plan_cascade(original, depth_limit, errors, actions, req, now_dt, pol,
                                wf.name if wf is not None else None, win_now)
        root = cascade.steps[0]
    else:
        cascade = fast(Cascade, {"depth_limit": depth_limit, "steps": (), "checkpoint": (), "loops": (),
                                 "partial": False, "truncated": False, "truncated_reason": None,
                                 "undeclared": ()})
        root = None
    feas = feasibility(ca, otype, root, cascade)
    authorizable = wf is not None and sc is not None and bool(slots) and type(oid) is str \
        and type(requested_by) is str and not now_err and type_ok and not unresolved and not overflow
    data = {
        "workflow": wname if type(wname) is str else "", "scenario": sname if type(sname) is str else "",
        "scenario_declared": sc is not None, "standard_scenario": bool(sc and sc.standard),
        "authorizable": authorizable, "errors": tuple(errors),
        "original_id": oid if type(oid) is str else None, "original_type": otype if type(otype) is str else None,
        "requested_by": requested_by if type(requested_by) is str else None, "route": route, "window": window,
        "window_seconds": ca.window_seconds if ca is not None else None, "executed_at": executed_at,
        "reversible_until": until, "authorization": auth, "notify": notify, "compensations": compensations,
        "duties": duties,
        "feasibility": feas, "cascade": cascade, "evaluated_at": fmt_ts(now_dt),
        "policy_hash": p.policy_hash, "policy_version": wf.version if wf is not None else None,
        "owners": wf.owners if wf is not None else None, "plan_hash": "",
    }
    plan = fast(RollbackPlan, data)
    data["plan_hash"] = plan_hash(plan)
    return fast(RollbackPlan, data)


def duty_rows(sc: CScenario, escalated: bool, notify_set: set, comps: list, act: Mapping) -> tuple:
    """Every duty of the scenario's applying levels, whether it applies and why. A duty
    with a `when` applies when its condition holds, or errors (fail closed: a duty is never
    silently dropped); those that apply are added to `notify_set` and `comps`."""
    if not sc.conditional:
        return ()  # nothing is conditional: `notify` and `compensations` say it all
    rows = []
    for source, notify, comp in (
        ("standard", sc.notify, sc.compensate),
        ("escalation", sc.esc_notify if escalated else (), sc.esc_compensate if escalated else ()),
    ):
        rows += [("notify", n, source, True, None, "listed without a condition") for n in notify]
        rows += [("compensate", n, source, True, None, "listed without a condition") for n, _ in comp]
    for kind, name, is_action, esc, fn, src, _loc in sc.conditional:
        if esc and not escalated:
            continue
        try:
            ok, msg, _ = cond_outcome(fn(act))
        except Exception as e:  # noqa: BLE001 - fail closed: the duty applies
            ok, msg = None, f"{type(e).__name__}: {e}"
        applies = ok is not False
        why = (
            "its condition holds"
            if ok
            else "its condition is false"
            if ok is False
            else f"its condition errored ({msg}), so it applies (fail closed)"
        )
        source = "escalation" if esc else "standard"
        rows.append((kind, name, source, applies, src, why))
        if applies:
            if kind == "notify":
                notify_set.add(name)
            elif name not in {n for n, _, _ in comps}:
                comps.append((name, is_action, source))
    rows.sort(key=lambda r: (r[2] != "standard", r[0] != "notify", r[1], not r[3], r[4] or ""))
    return tuple(
        fast(Duty, {"kind": k, "name": n, "source": s, "applies": a, "condition": c, "reason": w})
        for k, n, s, a, c, w in rows
    )


def feasibility(ca: CAction | None, otype: Any, root: CascadeStep | None, cascade: Cascade) -> Feasibility:
    """The plan's feasibility: the original's own (its class, its prerequisites, from its
    cascade step), then `partial` when any step (the original's included) is manual,
    blocked or out of its window."""
    reasons = []
    status = "feasible"
    if ca is None:
        status = "manual"
        reasons.append(
            f"action type {short(otype)} is not declared in the request's workflow; reverse it by hand"
            if type(otype) is str
            else "the original record names no action type; reverse it by hand"
        )
    elif ca.klass == "irreversible":
        status = "manual"
        reasons.append(f"`{ca.name}` is irreversible: route to manual handling")
    elif ca.klass is None:
        status = "manual"
        reasons.append(f"`{ca.name}` declares no reversal method: route to manual handling")
    results: tuple = ()
    unmet: tuple = ()
    if ca is not None and root is not None:
        results = root.prerequisites
        unmet = root.unmet
    if unmet:
        reasons.append("prerequisites not met: " + ", ".join(f"`{n}`" for n in unmet))
        if status == "feasible":
            status = "blocked"
    manual = tuple(s.record_id for s in cascade.steps if s.status == "manual")
    blocked = tuple(s.record_id for s in cascade.steps if s.status == "blocked")
    late = tuple(s.record_id for s in cascade.steps if s.status == "out_of_window")
    for word, ids in (
        ("manual", manual),
        ("blocked (prerequisites not met)", blocked),
        ("out of their reversal window", late),
    ):
        if ids:
            shown = ", ".join(f"`{i}`" for i in ids[:MAX_STEPS_NAMED])
            more = f" and {len(ids) - MAX_STEPS_NAMED} more" if len(ids) > MAX_STEPS_NAMED else ""
            reasons.append(f"cascade steps {word}: {shown}{more}")
    und = cascade.undeclared
    if und:
        shown = ", ".join(f"`{u.record_id}` (`{u.type}`, caused by `{u.parent}` of type `{u.parent_type}`)"
                          for u in und[:MAX_STEPS_NAMED])
        more = f" and {len(und) - MAX_STEPS_NAMED} more" if len(und) > MAX_STEPS_NAMED else ""
        reasons.append(f"downstream records of types their parent's `side_effects` do not declare, not planned "
                       f"(decide about them by hand): {shown}{more}")
    if status == "feasible" and (manual or blocked or late or und):
        status = "partial"
    return fast(
        Feasibility,
        {
            "status": status,
            "reasons": tuple(reasons),
            "prerequisites": results,
            "unmet": unmet,
            "manual_steps": manual,
            "blocked_steps": blocked,
            "out_of_window_steps": late,
        },
    )


def plan_cascade(
    original: Mapping,
    depth_limit: int,
    errors: list,
    actions: Mapping[str, CAction],
    req: Mapping,
    now_dt: datetime,
    pol: Mapping,
    wname: str | None,
    win_now: datetime | None = None,
) -> Cascade:
    """Breadth-first over `downstream` records. Linear in records, bounded by MAX_CASCADE_RECORDS.
    Each step's type is looked up in the request's workflow (`actions`). A record whose type
    its parent's type does not declare in `side_effects` (or whose parent's type is not
    declared there) is not a step and its downstream is not walked: it is listed in
    `undeclared` (counted against the bound) and the plan is partial (DESIGN 7, 8)."""
    steps: list = []
    undeclared: list = []
    checkpoint: list = []
    loops: list = []
    nloops = 0
    partial = False
    truncated = False
    truncated_reason = None
    root_id = original.get("id")
    root_id = root_id if type(root_id) is str else "<original>"
    parent_of: dict[str, str | None] = {root_id: None}
    queue: list[tuple[Mapping, int, str | None, str]] = [(original, 0, None, root_id)]
    head = 0
    count = 0
    dated_ahead: list[str] = []
    while head < len(queue):
        rec, depth, parent, rid = queue[head]
        head += 1
        rtype = rec.get("type")
        rtype_s = rtype if type(rtype) is str else "<missing>"
        if depth > depth_limit:
            checkpoint.append(
                fast(CheckpointRecord, {"record_id": rid, "type": rtype_s, "depth": depth, "parent": parent})
            )
        else:
            steps.append(
                step(
                    actions.get(rtype) if type(rtype) is str else None,
                    rid,
                    rtype_s,
                    depth,
                    parent,
                    rec,
                    req,
                    now_dt,
                    pol,
                    wname,
                    errors if depth == 0 else None,
                    win_now,
                    dated_ahead if depth > 0 else None,  # (the original's own error is the plan's window's)
                )
            )
        count += 1
        downstream = rec.get("downstream")
        if downstream is None or truncated:
            continue
        if not isinstance(downstream, (list, tuple)):
            errors.append(err("<input>", "input", f"`downstream` of record `{rid}` must be a list"))
            partial = True
            continue
        pca = actions.get(rtype) if type(rtype) is str else None
        declared = pca.side_effects if pca is not None else ()
        for i, child in enumerate(downstream):
            if not isinstance(child, Mapping):
                errors.append(err("<input>", "input", f"downstream[{i}] of record `{rid}` is not an object"))
                partial = True
                continue
            cid = child.get("id")
            if type(cid) is not str:
                cid = f"{rid}/downstream[{i}]"
                errors.append(
                    err(
                        "<input>",
                        "input",
                        f"downstream[{i}] of record `{rid}` has no `id`; called `{cid}` in this plan",
                    )
                )
            if cid in parent_of:
                partial = True
                nloops += 1
                if len(loops) < MAX_LOOPS_LISTED:
                    loops.append(
                        fast(CascadeLoop, {"record_id": cid, "parent": rid, "path": _path(parent_of, rid) + (cid,)})
                    )
                continue
            if len(parent_of) >= MAX_CASCADE_RECORDS:
                if not truncated:
                    truncated = True
                    partial = True
                    truncated_reason = (
                        f"the cascade reaches more than {MAX_CASCADE_RECORDS} records; planning "
                        f"stopped at downstream[{i}] of record `{rid}`; it and every record "
                        f"after it in breadth-first order are not planned"
                    )
                break
            parent_of[cid] = rid
            ctype = child.get("type")
            if type(ctype) is not str or ctype not in declared:
                partial = True
                undeclared.append(fast(UndeclaredRecord, {
                    "record_id": cid, "type": ctype if type(ctype) is str else "<missing>", "parent": rid,
                    "parent_type": rtype_s}))
                continue
            queue.append((child, depth + 1, rid, cid))
    if nloops > len(loops):
        errors.append(
            err("<input>", "input", f"{nloops} loops in the cascade; the first {MAX_LOOPS_LISTED} are listed")
        )
    if dated_ahead:
        shown = ", ".join(f"`{i}`" for i in dated_ahead[:MAX_STEPS_NAMED])
        more = f" and {len(dated_ahead) - MAX_STEPS_NAMED} more" if len(dated_ahead) > MAX_STEPS_NAMED else ""
        errors.append(err("<input>", "input", (
            f"the `executed_at` of cascade record{'s' if len(dated_ahead) > 1 else ''} {shown}{more} is more than "
            f"{MAX_CLOCK_SKEW_SECONDS} s after now: a time something happened at cannot be in the future; "
            f"{'their windows are' if len(dated_ahead) > 1 else 'its window is'} treated as expired (see each "
            "step's reasons)")))
    return fast(
        Cascade,
        {
            "depth_limit": depth_limit,
            "steps": tuple(steps),
            "checkpoint": tuple(checkpoint),
            "loops": tuple(loops),
            "partial": partial,
            "truncated": truncated,
            "truncated_reason": truncated_reason,
            "undeclared": tuple(undeclared),
        },
    )


def step(
    ca: CAction | None,
    rid: str,
    rtype: str,
    depth: int,
    parent: str | None,
    rec: Mapping,
    req: Mapping,
    now_dt: datetime,
    pol: Mapping,
    wname: str | None,
    errors: list | None = None,
    win_now: datetime | None = None,
    dated_ahead: list | None = None,
) -> CascadeStep:
    """One cascade step and its own feasibility: its type's class, its prerequisites
    evaluated over its own record (as `original`), its own window from its own
    `executed_at`. Status: manual (class) > blocked (prerequisites) > out_of_window.
    `errors` (the original's step only): where its prerequisites' errors are listed.
    `win_now`: the time its window is compared with (`util.window_now`; `now_dt` if None).
    `dated_ahead`: where the record's id goes when its `executed_at` is in the future
    (`util.after_now`), for the plan's errors."""
    manual = False
    reason = None
    if ca is None:
        manual, reason = (
            True,
            (
                f"action type `{rtype}` is not declared in workflow `{wname}`"
                if wname is not None
                else f"action type `{rtype}` is not declared"
            ),
        )
    elif ca.klass == "irreversible":
        manual, reason = True, f"`{rtype}` is irreversible"
    elif ca.klass is None:
        manual, reason = True, f"`{rtype}` declares no reversal method"
    reasons = [reason] if reason else []
    results: list = []
    unmet: list = []
    executed_at = until = None
    within: bool | None = None
    if ca is not None:
        act = {"original": rec, "request": req, "now": now_dt, "policy": pol}
        for pr in ca.prerequisites:
            ok, msg, budget = cond_outcome(pr.fn(act))
            if ok:
                results.append(
                    fast(PrerequisiteResult, {"name": pr.name, "met": True, "reason": None, "location": pr.location})
                )
                continue
            results.append(
                fast(
                    PrerequisiteResult,
                    {
                        "name": pr.name,
                        "met": False,
                        "reason": "condition is false" if ok is False else f"error: {msg}",
                        "location": pr.location,
                    },
                )
            )
            if ok is None and errors is not None:
                errors.append(err(pr.name, "prerequisite", msg, pr.location, budget))
            unmet.append(pr.name)
        if unmet:
            reasons.append("prerequisites not met over this record: " + ", ".join(f"`{n}`" for n in unmet))
    ex = rec.get("executed_at")
    if ca is not None and ca.window_seconds is not None and ca.klass != "irreversible":
        executed_at, until, within, problem, _, future = reversal_window(
            ca, ex, now_dt if win_now is None else win_now, f"`executed_at` of record `{rid}`", now_dt)
        if problem is not None:
            reasons.append(problem)
            if future and dated_ahead is not None:
                dated_ahead.append(rid)
        elif not within:
            reasons.append(f"its reversal window ({ca.window}) closed at {until}")
    elif ex is not None:
        try:
            executed_at = fmt_ts(parse_ts(ex, "`executed_at`"))
        except (ValueError, OverflowError):
            reasons.append(f"`executed_at` of record `{rid}` is not an RFC 3339 timestamp")
    status = "manual" if manual else "blocked" if unmet else "out_of_window" if within is False else "feasible"
    return fast(
        CascadeStep,
        {
            "record_id": rid,
            "type": rtype,
            "depth": depth,
            "parent": parent,
            "method": ca.method if ca is not None else None,
            "verify": ca.verify if ca is not None else None,
            "reversibility": ca.klass if ca is not None else None,
            "manual": manual,
            "reason": reason,
            "status": status,
            "executed_at": executed_at,
            "window_seconds": ca.window_seconds if ca is not None else None,
            "reversible_until": until,
            "within_window": within,
            "prerequisites": tuple(results),
            "unmet": tuple(unmet),
            "reasons": tuple(reasons),
        },
    )


def _path(parent_of: Mapping[str, str | None], rid: str) -> tuple[str, ...]:
    out: list[str] = []
    cur: str | None = rid
    while cur is not None and len(out) <= MAX_CASCADE_RECORDS:
        out.append(cur)
        cur = parent_of.get(cur)
    return tuple(reversed(out))


def reversal_window(
    ca: CAction, ex: Any, now_dt: datetime, what: str, clock_now: datetime | None = None
) -> tuple[str | None, str | None, bool, str | None, bool, bool]:
    """The reversal window of a record of type `ca` (which has one) executed at `ex`:
    (executed_at, reversible_until, within the window at `now_dt`, problem, overflow, future).
    A missing or unreadable `executed_at`, one whose window would end after the last
    representable time (overflow), or one more than `MAX_CLOCK_SKEW_SECONDS` after now
    (future: `util.after_now`, measured from `clock_now`, the time as read, `now_dt` if
    None; `now_dt` may be a microsecond later, `util.window_now`) is a problem and the window
    is treated as closed; a future one has no `reversible_until` (no window starts at a time
    that has not come). Up to the allowance after now, the time stands as recorded: its
    window ends then at most that much later than an execution at now would."""
    if ex is None:
        return None, None, False, f"{what} is missing; the reversal window is treated as expired", False, False
    try:
        ex_dt = parse_ts(ex, what)
    except ValueError as e:
        return None, None, False, f"{e}; the window is treated as expired", False, False
    except OverflowError:  # a datetime whose offset moves it out of range
        return (None, None, False, f"{what} is out of the representable range; the window is treated as expired",
                False, False)
    executed_at = fmt_ts(ex_dt)
    assert ca.window_td is not None  # callers pass a type that declares a window
    try:
        until_dt = ex_dt + ca.window_td
    except OverflowError:
        return (
            executed_at,
            None,
            False,
            (
                f"{what} {executed_at} plus the {ca.window} reversal window of `{ca.name}` ends after "
                f"9999-12-31T23:59:59Z, the last representable time: the execution time cannot be right; the window "
                f"is treated as expired"
            ),
            True,
            False,
        )
    late = after_now(ex_dt, now_dt if clock_now is None else clock_now, what)
    if late is not None:
        return executed_at, None, False, late + "; the reversal window is treated as expired", False, True
    return executed_at, fmt_ts(until_dt), now_dt <= until_dt, None, False, False


def _resolve(req: Mapping, path: tuple[str, ...]) -> tuple[list[str | None], str | None]:
    """Principal ids a `distinct from` reference names in the request, and why it cannot
    be resolved (None when it can). A string that names someone (`_names`) names one
    principal; a non-empty list of them names each. Anything else (missing, null, empty,
    nothing but blanks and invisible characters, another type, a list holding anything
    else) cannot be resolved: the strings it holds are still excluded, None stands for the
    rest, and the plan is not authorizable."""
    where = ".".join(path)
    cur: Any = req if path[0] == "request" else req.get("original") if path[0] == "original" else None
    for part in path[1:]:
        if not isinstance(cur, Mapping):
            return [None], f"the request has no `{where}`"
        cur = cur.get(part)
    if _names(cur):
        return [cur], None
    if isinstance(cur, (list, tuple)):
        names: list[str | None] = [*sorted({x for x in cur if type(x) is str and x})]
        bad = [i for i, x in enumerate(cur) if not _names(x)]
        if not cur:
            return [None], f"`{where}` is an empty list, not the principal ids to exclude"
        if bad:
            return names + [
                None
            ], f"`{where}[{bad[0]}]` is {_what(cur[bad[0]])}, not a principal id (a non-empty string)"
        return names, None
    if cur is None:
        return [None], f"the request gives no `{where}` (a principal id, or a list of them)"
    return [None], f"`{where}` is {_what(cur)}, not a principal id (a non-empty string) or a list of them"


def _names(x: Any) -> bool:
    """Whether `x` is a principal id that names someone: a string (exactly) with something
    left in its canonical form (`util.canonical_principal`). An id of nothing but blanks
    and invisible characters is `""` written another way: no approval can be by it (such
    an approval names no one), so excluding it would exclude nobody."""
    return type(x) is str and bool(x) and bool(canonical_principal(x))


def _what(x: Any) -> str:
    if type(x) is str:
        return ("an empty string" if not x else
                f"{short(x)}, nothing but blanks and invisible characters (the same id as `\"\"`)")
    if isinstance(x, str):  # a str subclass (an enum member): not a plain principal id
        return f"a `{type(x).__name__}` (a str subclass)"
    return type_name(x)
