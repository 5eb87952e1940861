"""Authorization: do these approvals satisfy what the policy requires for a rollback plan
(`authorize_rollback`) or release an action a require_approval decision holds
(`authorize_action`)? One matching (`judge`) serves both; principals are compared in
their canonical form (`canonical_principal`) so one person never counts twice."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from itertools import islice
from typing import Any

from pydantic import BaseModel, ValidationError

from ..compiled import CompiledPolicy
from ..construct import fast
from ..limits import MAX_APPROVALS, MAX_INPUT_CHARS, MAX_INPUT_DEPTH, MAX_INPUT_ITEMS
from ..models import (
    ApprovalRequirement,
    AuthorizationVerdict,
    Decision,
    EvalError,
    RejectedApproval,
    RollbackPlan,
    RuleRef,
    SlotFill,
    SlotSpec,
)
from ..source import DEFAULT_IGNORABLE
from .digests import plan_matches_hash
from .inputs import (
    KIND_LIT,
    KIND_MODEL,
    KIND_STR,
    KIND_TMODEL,
    ModelSpec,
    Unproven,
    check_size,
    model_spec,
    model_walker,
    spec_depth,
)
from .rollback import reversal_window
from .util import as_dict, canonical_principal, err, fmt_ts, now_of, parse_ts, short, type_name, window_now

__all__ = ["authorize_rollback", "authorize_action", "authorize_action_reference", "decision_view", "verdict",
           "judge", "canonical_principal", "MAX_APPROVALS", "DEFAULT_IGNORABLE"]



# ================================================================== authorization
def authorize_rollback(p: CompiledPolicy, plan: Any, approvals: Iterable[Any], now: Any = None) -> AuthorizationVerdict:
    """Do these approvals satisfy the authorization the policy requires for this plan?"""
    now_dt, now_err = now_of(now)
    errors: list[EvalError] = []
    if now_err:
        errors.append(err("<input>", "input", now_err))
    if not isinstance(plan, RollbackPlan):
        plan, problem = parsed(RollbackPlan, plan, "plan")
        if problem:
            return verdict(p, False, "", (), (), (), (err("<input>", "input", problem),) + tuple(errors),
                                 now_dt)
    if not plan_matches_hash(plan, plan.plan_hash):  # (or its earlier form: its approvals name it)
        errors.append(err("<input>", "input", "the plan's content does not match its `plan_hash`: it was "
                                               "changed after classification; classify the rollback again"))
    if plan.policy_hash != p.policy_hash:
        errors.append(err("<input>", "policy", f"the plan was classified under policy {plan.policy_hash}; "
                                                f"this engine holds {p.policy_hash}"))
    if not plan.authorizable:
        errors.append(err("<input>", "input", "the plan is not authorizable (see the plan's errors)"))
    # The slots come from the policy (the plan's workflow, scenario and original type, its
    # window recomputed from `executed_at` at now), never from the plan itself: a plan
    # edited and rehashed cannot lower them.
    slots, problem = required(p, plan, now_dt, window_now(now, now_dt))
    if problem:
        errors.append(err("<input>", "policy", problem))
    excluded: dict[str, set] = {p: set() for p in plan.authorization.excluded_principals}
    for d in plan.authorization.distinct_from:
        if d.principal is not None:
            excluded.setdefault(d.principal, set()).add(f"`{d.ref}`")
    why = {p: (", ".join(sorted(refs)) or "excluded by the plan") for p, refs in excluded.items()}
    fills, open_slots, accepted, rejected = judge(approvals, "plan_hash", plan.plan_hash, plan.policy_hash,
                                                   slots, why, now_dt, errors)
    satisfied = not errors and bool(slots) and not open_slots
    return verdict(p, satisfied, plan.plan_hash, fills, open_slots, accepted, tuple(errors), now_dt, rejected)


def required(p: CompiledPolicy, plan: RollbackPlan, now_dt: datetime,
             win_now: datetime | None = None) -> tuple[tuple[SlotSpec, ...], str | None]:
    """The slots the policy requires for the plan's workflow, scenario and original type
    at `now_dt` (the window recomputed from the plan's `executed_at` by `_window`, as
    `classify_rollback` does, compared with `win_now`: `util.window_now`, `now_dt` if None),
    and why the plan's own requirement differs, or None."""
    wf = p.workflows.get(plan.workflow)
    sc = wf.scenarios.get(plan.scenario) if wf is not None else None
    if sc is None:
        return (), (f"the plan names scenario `{plan.scenario}` of workflow `{plan.workflow}`, which this policy "
                    "does not declare")
    assert wf is not None  # sc is only found through wf
    ca = wf.actions.get(plan.original_type) if plan.original_type is not None else None
    if ca is None:
        return (), (f"the plan's original type `{plan.original_type}` is not declared in workflow "
                    f"`{plan.workflow}`: no requirement applies; classify the rollback again")
    window = "none"
    why = ""
    until = None
    if ca.window_seconds is not None and ca.klass != "irreversible":
        _, until, within, why_not, _, _ = reversal_window(
            ca, plan.executed_at, now_dt if win_now is None else win_now, "the plan's `executed_at`", now_dt)
        window = "standard" if within else "escalated"
        why = f" ({why_not})" if why_not is not None else ""
    slots = tuple(s.spec for s in sc.slots)
    paths = tuple(sc.distinct_from)
    if window == "escalated" and sc.has_escalation:
        slots += tuple(s.spec for s in sc.esc_slots)
        paths += sc.esc_distinct_from
    if window != plan.window:
        return slots, (f"the plan says its reversal window is `{plan.window}`, but at {fmt_ts(now_dt)} it is "
                       f"`{window}` (`{ca.name}` executed at {plan.executed_at}, window {ca.window}){why}: the "
                       f"{window} path applies; classify the rollback again")
    root = plan.cascade.steps[0] if plan.cascade.steps else None  # (the original: step 0)
    if root is None or (root.record_id, root.type, root.depth, root.executed_at) != (
            plan.original_id, plan.original_type, 0, plan.executed_at):
        return slots, (f"the plan's original (`{plan.original_id}`, of type `{plan.original_type}`, executed at "
                       f"{plan.executed_at}) is not its cascade's first step: it was changed after "
                       "classification; classify the rollback again")
    # the window the reviewer reads (a `reversible_until` of null: an `executed_at` more than
    # the clock allowance ahead at classification, which may have come since)
    if plan.window_seconds != ca.window_seconds or (plan.reversible_until is not None
                                                    and plan.reversible_until != until):
        return slots, (f"the plan shows a reversal window of {short(plan.window_seconds)} s until "
                       f"{short(plan.reversible_until)}, but `{ca.name}` executed at {plan.executed_at} has "
                       f"{f'a {ca.window} window until {until}' if until else 'no such window'}: it was changed "
                       "after classification; classify the rollback again")
    auth = plan.authorization
    want_refs = {".".join(p) for p in paths}
    have_refs = {d.ref for d in auth.distinct_from}
    excluded = {d.principal for d in auth.distinct_from if d.principal is not None}
    if tuple(auth.slots) != slots or have_refs != want_refs or set(auth.excluded_principals) != excluded:
        return slots, (f"the plan's authorization requirement is not what scenario `{plan.scenario}` requires "
                       f"({window} path): it was changed after classification; classify the rollback again")
    problem = _scenario_terms(sc, plan, window == "escalated" and sc.has_escalation, paths) or _side_effects(
        wf.actions, plan)
    if problem is not None:
        return slots, (f"{problem} (scenario `{plan.scenario}`, {window} path): it was changed after "
                       "classification; classify the rollback again")
    return slots, None


def _scenario_terms(sc: Any, plan: RollbackPlan, escalated: bool, paths: tuple) -> str | None:
    """How the plan's other terms differ from what the scenario fixes, or None. A plan is
    caller data and its hash anyone's to recompute: what the policy decides (the requester
    excluded, the route, the duties listed without a condition, the authorized cascade
    depth) is checked here as the slots are, so a plan edited and rehashed cannot send a
    rollback to another queue, drop a duty, exclude someone else than its own requester or
    reverse records deeper than the scenario authorizes (DESIGN 7: those are checkpoints).
    Conditional duties are evaluated over the original, which the plan does not carry: a
    plan must list at least the unconditional ones. `paths`: the applying `distinct from`s."""
    if ("request", "requested_by") in paths:
        named = {d.principal for d in plan.authorization.distinct_from if d.ref == "request.requested_by"}
        if named != {plan.requested_by}:
            return (f"the plan excludes {', '.join(sorted(f'`{n}`' for n in named if n is not None)) or 'nobody'} "
                    f"as `request.requested_by`, but says it was requested by `{plan.requested_by}`")
    route = (sc.esc_route or sc.route) if escalated else sc.route
    if plan.route != route:
        return f"the plan's route is `{plan.route}`, not `{route}`"
    notify = set(sc.notify) | (set(sc.esc_notify) if escalated else set())
    missing = sorted(notify - set(plan.notify))
    comps = {n for n, _ in sc.compensate} | ({n for n, _ in sc.esc_compensate} if escalated else set())
    missing += sorted(comps - {c.name for c in plan.compensations})
    if missing:
        return f"the plan lists no {', '.join(f'`{n}`' for n in missing)}, which the scenario requires"
    cascade = plan.cascade
    if (cascade.depth_limit != sc.cascade_depth or any(s.depth > sc.cascade_depth for s in cascade.steps)
            or any(c.depth <= sc.cascade_depth for c in cascade.checkpoint)):
        return (f"the plan's cascade is not planned to the authorized `cascade depth {sc.cascade_depth}`: its depth "
                f"limit is {cascade.depth_limit}, and every record deeper than the authorized depth is a checkpoint, "
                "not a step")
    return None


def _side_effects(actions: Mapping[str, Any], plan: RollbackPlan) -> str | None:
    """How the plan's cascade disagrees with the workflow's `side_effects`, or None: every
    record below the original planned (step or checkpoint) is of a type its parent's type
    declares, every record listed `undeclared` is not (and hangs under a planned record of
    the type it names), and a plan listing one is not `feasible`. A plan edited so that a
    side effect the policy never foresaw becomes an ordinary step, or disappears while the
    plan still reads feasible, is refused; one rehashed without it binds no approval given
    for the plan that listed it (the hash covers `cascade.undeclared`)."""
    cascade = plan.cascade
    planned: tuple[Any, ...] = (*cascade.steps, *cascade.checkpoint)
    types = {r.record_id: r.type for r in planned}

    def declares(parent_type: str | None, child_type: str) -> bool:
        ca = actions.get(parent_type) if parent_type is not None else None
        return ca is not None and child_type in ca.side_effects

    for r in planned[1:]:
        if r.parent not in types or not declares(types[r.parent], r.type):
            return (f"the plan's cascade record `{r.record_id}` (`{r.type}`) is not a side effect its parent "
                    f"`{r.parent}` declares")
    for u in cascade.undeclared:
        if types.get(u.parent) != u.parent_type or declares(u.parent_type, u.type):
            return (f"the plan lists `{u.record_id}` (`{u.type}`, caused by `{u.parent}` of type "
                    f"`{u.parent_type}`) as undeclared, which its cascade and the policy's `side_effects` contradict")
    if cascade.undeclared and plan.feasibility.status == "feasible":
        return "the plan lists undeclared downstream records but says it is feasible"
    return None


def authorize_action(
    p: CompiledPolicy, decision: Any, approvals: Iterable[Any], now: Any = None
) -> AuthorizationVerdict:
    """Do these approvals release the action this require_approval decision holds?

    A decision given as a dict (a recorded one: the runtime's `_subject_status` judges
    each from the ledger) is read by `decision_view` when it can prove the answer is the
    one `parsed(Decision, ...)` gives (`FAST_DECISION`); `authorize_action_reference`
    always parses it."""
    return _authorize_action(p, decision, approvals, now, FAST_DECISION)


def authorize_action_reference(
    p: CompiledPolicy, decision: Any, approvals: Iterable[Any], now: Any = None
) -> AuthorizationVerdict:
    """`authorize_action` with the decision always validated as a `Decision` by pydantic
    (`parsed`), never read by `decision_view`: the reference the fast path is tested against."""
    return _authorize_action(p, decision, approvals, now, False)


def _authorize_action(p: CompiledPolicy, decision: Any, approvals: Iterable[Any], now: Any,
                      fast_decision: bool) -> AuthorizationVerdict:
    now_dt, now_err = now_of(now)
    errors: list[EvalError] = []
    if now_err:
        errors.append(err("<input>", "input", now_err))
    view = decision_view(decision) if fast_decision and type(decision) is dict else None  # (a dict: no Decision)
    if view is not None:
        decision = view
    elif not isinstance(decision, Decision):
        decision, problem = parsed(Decision, decision, "decision")
        if problem:
            return verdict(p, False, "", (), (), (), (err("<input>", "input", problem),) + tuple(errors), now_dt)
    d = decision
    digest = d.action_digest
    if d.policy_hash != p.policy_hash:
        errors.append(
            err(
                "<input>",
                "policy",
                f"the decision was made under policy {d.policy_hash}; this "
                f"engine holds {p.policy_hash}: evaluate the action again",
            )
        )
    wf = p.workflows.get(d.workflow) if d.workflow is not None else None
    ca = wf.actions.get(d.action_type) if (wf is not None and d.action_type is not None) else None
    slots: list[SlotSpec] = []
    if d.effect != "require_approval":
        errors.append(
            err(
                "<input>",
                "input",
                f"the decision is `{d.effect}`: approvals release only a `require_approval` decision",
            )
        )
    elif ca is None:
        errors.append(
            err(
                "<input>",
                "input",
                f"the decision names action type `{d.action_type}` of workflow "
                f"`{d.workflow}`, which this policy does not declare",
            )
        )
    else:
        # the requirement of every matched require_approval rule, from the policy (never
        # the decision's own `approvals`): one slot per rule
        rules = (_rules_by_ref(p, ca) if fast_decision  # (the reference builds it on every call)
                 else {(r.name, site(r.location)): r for r in ca.rules})
        reqs = []
        for ref in d.matched:
            if ref.kind != "rule" or ref.effect not in ("require_approval", "allow"):
                # a matched stop trigger or deny rule wins by precedence (and the gate lists only
                # rules and triggers in `matched`): this decision was changed after evaluation
                what = ("stop trigger" if ref.kind == "stop" or ref.effect == "stop" else
                        f"{ref.effect} rule" if ref.kind == "rule" else f"{ref.kind} {ref.effect}")
                errors.append(err("<input>", "input",
                                  f"the decision's matched rules include {what} `{ref.name}`: a require_approval "
                                  "decision cannot; evaluate the action again"))
                continue
            if ref.effect != "require_approval":  # an allow rule that also matched: it releases nothing
                continue
            rule = rules.get((ref.name, site(ref.location))) if ref.kind == "rule" else None
            if rule is None or rule.effect != "require_approval":
                errors.append(
                    err(
                        "<input>",
                        "input",
                        f"the decision names matched rule `{ref.name}`, which "
                        f"is not a require_approval rule of `{ca.name}`",
                    )
                )
            elif rule.approval is None:
                errors.append(
                    err(
                        rule.name,
                        "rule",
                        f"rule `{rule.name}` names no approvers (`by N role`): no approval can release it",
                        rule.location,
                    )
                )
            else:
                reqs.append(rule.approval)
        if not reqs and not errors:
            errors.append(
                err(
                    "<input>",
                    "input",
                    f"no require_approval rule with approvers matched (decided "
                    f"by {d.deciding.kind} `{d.deciding.name}`): the policy "
                    "names nobody who may release this action",
                )
            )
        if [_requirement(r) for r in reqs] != [_requirement(r) for r in d.approvals]:
            errors.append(
                err(
                    "<input>",
                    "input",
                    "the decision's `approvals` are not what its matched rules "
                    "require: it was changed after evaluation; evaluate the "
                    "action again",
                )
            )
        ids: dict[str, int] = {}
        for r in reqs:
            ids[r.rule] = ids.get(r.rule, 0) + 1
            sid = r.rule if ids[r.rule] == 1 else f"{r.rule}#{ids[r.rule]}"
            slots.append(
                fast(
                    SlotSpec, {"id": sid, "count": r.count, "roles": r.roles, "any_of": r.any_of, "source": "standard"}
                )
            )
    if type(digest) is not str or not digest:
        errors.append(
            err(
                "<input>",
                "input",
                "the decision carries no `action_digest` (its action is not plain "
                "JSON, or it is not a require_approval decision): no approval "
                "can be bound to it",
            )
        )
        digest = None
    fills, open_slots, accepted, rejected = judge(
        approvals, "action_digest", digest, d.policy_hash, tuple(slots), {}, now_dt, errors
    )
    satisfied = not errors and bool(slots) and not open_slots
    return verdict(p, satisfied, "", fills, open_slots, accepted, tuple(errors), now_dt, rejected, digest)


# (the compiled policy last judged under, {id(CAction): (it, its rules by (name, location))}): one
# policy's at a time, so a policy reloaded is not kept alive by it for longer than the next call
_RULES_BY_REF: tuple[Any, dict[int, tuple[Any, dict]]] = (None, {})


def _rules_by_ref(p: CompiledPolicy, ca: Any) -> dict:
    """`{(r.name, r.location): r for r in ca.rules}` (the last of equal keys) for an action
    type of `p`, built once per type, not on every call (a type may have thousands of rules;
    a CAction is frozen, and kept with its entry: an id is never read for another object)."""
    global _RULES_BY_REF
    owner, cache = _RULES_BY_REF
    if owner is not p:
        owner, cache = _RULES_BY_REF = (p, {})
    got = cache.get(id(ca))
    if got is not None and got[0] is ca:
        return got[1]
    rules = {(r.name, site(r.location)): r for r in ca.rules}
    cache[id(ca)] = (ca, rules)
    return rules


def site(location: Any) -> Any:
    """A source location (`path/to/file.policy:line:col`) as a decision is matched with the
    policy by: the file's name, line and column, not the path the file was loaded by (a
    relative or an absolute path, a symlink, the server's names relative to its policy
    root): a decision recorded by one process is judged by another that loaded the same
    policy (`policy_hash`) by another path. (A rule's name is unique in its action type.)"""
    if type(location) is not str:
        return location
    path, sep, rest = location.rpartition(":")
    path, sep2, line = path.rpartition(":")
    if not sep or not sep2:
        return location
    return (path.replace("\\", "/").rpartition("/")[2], line, rest)


def _requirement(r: Any) -> tuple:
    """An approval requirement as a decision's is compared with the policy's: its location
    by `site`."""
    return (r.rule, r.count, tuple(r.roles), r.any_of, site(r.location))


def verdict(
    p: CompiledPolicy,
    satisfied: bool,
    ph: str,
    fills: tuple,
    open_slots: tuple,
    accepted: tuple,
    errors: tuple,
    now_dt: datetime,
    rejected: tuple = (),
    digest: str | None = None,
) -> AuthorizationVerdict:
    return fast(
        AuthorizationVerdict,
        {
            "satisfied": satisfied,
            "plan_hash": ph,
            "action_digest": digest,
            "slots": fills,
            "open_slots": open_slots,
            "accepted": accepted,
            "rejected": rejected,
            "errors": errors,
            "evaluated_at": fmt_ts(now_dt),
            "policy_hash": p.policy_hash,
        },
    )


def _rej(who: str, code: str, reason: str) -> RejectedApproval:
    return fast(RejectedApproval, {"principal": who, "code": code, "reason": reason})


def parsed(model: type[BaseModel], raw: Any, what: str) -> tuple[Any, str | None]:
    """`raw` (a dict or a model) validated as `model`, or why it is not one."""
    raw = as_dict(raw)
    if not isinstance(raw, Mapping):
        return None, f"the {what} must be an object, not " + type_name(raw)
    problem = check_size(raw)
    if problem:
        return None, problem
    try:
        return model.model_validate(raw), None
    except ValidationError as e:
        return None, f"the {what} is not a {model.__name__}: " + "; ".join(
            f"{'.'.join(str(x) for x in er['loc'])}: {er['msg']}" for er in e.errors()[:5]
        )


# ================================================================== a recorded decision, read directly
# `parsed(Decision, raw, "decision")` checks the whole decision (`check_size`: a walk of every
# value) and then validates it (pydantic: every field of every part, the trace and the
# reversibility included), though authorize_action reads a few fields of it. Both cost more than
# the rest of the call for a recorded decision (several KB). `decision_view` does the work of both
# in one walk (`inputs.model_walker`, generated from the models' fields), and reads those few
# fields from the dict: it
# answers only when it proves that `parsed` would accept the decision (every value of an exact
# plain type, the shape of each model, within the input limits), and then the fields it reads
# are the values the validated `Decision` would hold. Anything else (a value it does not expect,
# a field given by its name instead of its alias, a model it does not know): None, and `parsed`
# decides, so a malformed decision gets the reference's answer and message, always.
FAST_DECISION = True  #: authorize_action reads a dict decision with `decision_view` (False: always `parsed`)


def _decision_spec() -> ModelSpec | None:
    """The spec of `Decision`, or None when decision_view cannot mirror its validation
    (the models changed: `parsed` then decides every decision) or does not find the fields
    it reads as it expects them."""
    if getattr(Decision.model_validate, "__func__", None) is not getattr(BaseModel.model_validate, "__func__", 0):
        return None  # (parsed calls Decision.model_validate: one of its own is not pydantic's)
    try:
        spec = model_spec(Decision, {})
    except Unproven:
        return None
    want = {"effect": KIND_LIT, "deciding": KIND_MODEL, "workflow": KIND_STR, "action_type": KIND_STR,
            "action_digest": KIND_STR, "policy_hash": KIND_STR, "matched": KIND_TMODEL, "approvals": KIND_TMODEL}
    # decision_view reads an absent field as its default, and builds these two models whole
    defaults: list[tuple[type[BaseModel], str, Any]] = [
        (Decision, k, None) for k in ("workflow", "action_type", "action_digest")] + [
        (Decision, "matched", ()), (Decision, "approvals", ()), (RuleRef, "location", None),
        (ApprovalRequirement, "location", None)]
    if (any(spec.fields.get(k, (None,))[0] != v for k, v in want.items())
            or spec.fields["deciding"][2].model is not RuleRef or spec.fields["matched"][2].model is not RuleRef
            or spec.fields["approvals"][2].model is not ApprovalRequirement
            or any(m.model_fields[k].is_required() or m.model_fields[k].default != d for m, k, d in defaults)
            or set(RuleRef.model_fields) != {"kind", "name", "effect", "location"}
            or set(ApprovalRequirement.model_fields) != {"rule", "count", "roles", "any_of", "location"}
            or spec_depth(spec) >= MAX_INPUT_DEPTH):
        return None
    return spec


def _decision_walker() -> tuple[Any, str]:
    spec = _decision_spec()
    if spec is None:
        return None, ""
    try:
        return model_walker(spec)
    except Unproven:
        return None, ""


class _DecisionView:
    """The fields of a recorded decision authorize_action reads, as the validated
    `Decision` holds them (its rule references and approval requirements as those models)."""

    __slots__ = ("effect", "deciding", "workflow", "action_type", "action_digest", "policy_hash", "matched",
                 "approvals")
    effect: str
    deciding: RuleRef
    workflow: str | None
    action_type: str | None
    action_digest: str | None
    policy_hash: str
    matched: tuple[RuleRef, ...]
    approvals: tuple[ApprovalRequirement, ...]


def _rule_ref(r: dict) -> RuleRef:
    return fast(RuleRef, {"kind": r["kind"], "name": r["name"], "effect": r["effect"], "location": r.get("location")})


def decision_view(raw: Any) -> _DecisionView | None:
    """The fields authorize_action reads of `raw` (a dict), as `parsed(Decision, raw,
    "decision")` would give them, or None when it cannot prove that `parsed` accepts `raw`
    (then `parsed` decides, and says why). Never raises."""
    walk = _WALK_DECISION
    if walk is None or type(raw) is not dict:
        return None
    try:
        n, c = walk(raw)
        if n > MAX_INPUT_ITEMS or c > MAX_INPUT_CHARS:
            return None
        v = _new(_DecisionView)
        get = raw.get
        v.effect = raw["effect"]
        v.deciding = _rule_ref(raw["deciding"])
        v.workflow = get("workflow")
        v.action_type = get("action_type")
        v.action_digest = get("action_digest")
        v.policy_hash = raw["policy_hash"]
        v.matched = tuple(_rule_ref(r) for r in get("matched", ()))
        v.approvals = tuple(fast(ApprovalRequirement, {"rule": a["rule"], "count": a["count"],
                                                       "roles": tuple(a["roles"]), "any_of": a["any_of"],
                                                       "location": a.get("location")})
                            for a in get("approvals", ()))
        return v
    except Exception:  # noqa: BLE001 - Unproven, or anything unexpected: the reference decides
        return None


_new = object.__new__
_WALK_DECISION, _WALKERS_SOURCE = _decision_walker()  # (None: the models changed, `parsed` decides every decision)


def _shown(v: Any) -> str:
    return (v if type(v) is str else short(v)[1:-1])[:80]  # str() of a 5000-digit int raises


def judge(
    approvals: Any,
    bind: str,
    bound: str | None,
    policy_hash: str,
    slots: Sequence[SlotSpec],
    excluded: Mapping[str, str],
    now_dt: datetime,
    errors: list,
) -> tuple[tuple, tuple, tuple, tuple]:
    """Which approvals fill `slots`: the one matching of `authorize_rollback` and
    `authorize_action`. An approval counts when it is an object within the input limits
    that names a `principal` (a non-empty string) and `roles` (a list of strings), is bound
    to `bound` by its field `bind` (`plan_hash` or `action_digest`), names no other
    `policy_hash`, has not expired and is not dated after now, is not by a principal of
    `excluded` (principal -> why) nor by another spelling of one or of a principal already
    counted (`canonical_principal`; of several spellings, the first in sorted order counts),
    and holds a role some slot needs. One principal fills at most one slot across all of
    them; the slots are filled by a maximum matching. At most MAX_APPROVALS + 1 approvals
    are read. Returns (fills, open slots, accepted principals, rejected approvals)."""
    what = "plan" if bind == "plan_hash" else "action"
    slot_roles = [set(s.roles) for s in slots]
    all_roles = set().union(*slot_roles) if slot_roles else set()
    rejected: list = []
    cand_roles: dict[str, set] = {}
    if isinstance(approvals, (str, bytes, Mapping)) or not isinstance(approvals, Iterable):
        errors.append(err("<input>", "input", "approvals must be a list"))
        approvals = ()
    approvals = list(islice(approvals, MAX_APPROVALS + 1))  # an endless iterator stops here
    if len(approvals) > MAX_APPROVALS:
        errors.append(err("<input>", "input", f"more than {MAX_APPROVALS} approvals; the rest are ignored"))
        approvals = approvals[:MAX_APPROVALS]
    canon: dict[str, str] = {}

    def canonical(p: str) -> str:
        c = canon.get(p)
        if c is None:
            c = canon[p] = canonical_principal(p)
        return c

    excluded_by_form = {canonical(p): p for p in sorted(excluded, reverse=True)}
    for i, a in enumerate(approvals):
        a = as_dict(a)
        if not isinstance(a, Mapping) or check_size(a):
            rejected.append(
                _rej(f"<approval #{i}>", "invalid", "the approval is not an object within the input limits")
            )
            continue
        who = a.get("principal")
        if type(who) is not str or not canonical(who):  # (nothing but blanks and invisible characters: no one)
            rejected.append(_rej(f"<approval #{i}>", "invalid", "the approval names no `principal` (a string)"))
            continue
        roles = a.get("roles", [])
        if isinstance(roles, str) or not isinstance(roles, (list, tuple)) or not all(type(r) is str for r in roles):
            rejected.append(_rej(who, "invalid", "`roles` must be a list of strings"))
            continue
        verdict = a.get("verdict", "approve")  # the runtime's approval records say `approve` or `deny`
        if verdict not in ("approve", "deny") or type(verdict) is not str:
            rejected.append(_rej(who, "invalid", f"`verdict` must be `approve` or `deny`, not {short(verdict)}"))
            continue
        b = a.get(bind)
        if b is None:
            rejected.append(_rej(who, bind, f"the approval names no `{bind}`; approvals bind to one {what}"))
            continue
        if bound is None or b != bound:
            rejected.append(_rej(who, bind, f"the approval is for {what} `{_shown(b)}`, not `{bound}`"))
            continue
        pol = a.get("policy_hash")
        if pol is not None and pol != policy_hash:
            rejected.append(
                _rej(who, "policy_hash", f"the approval was given under policy `{_shown(pol)}`, not `{policy_hash}`")
            )
            continue
        try:
            exp = parse_ts(a["expires_at"], "`expires_at`") if a.get("expires_at") is not None else None
            at = parse_ts(a["at"], "`at`") if a.get("at") is not None else None
            later = window_now(a["at"], at) if at is not None else None  # `10:00:00.0000001Z` is after a `now`
            # of `10:00:00Z`: its digits below the microsecond round it up (never down), as a window's end
        except (ValueError, OverflowError) as e:
            rejected.append(_rej(who, "invalid", str(e) if isinstance(e, ValueError) else "a time out of range"))
            continue
        if exp is not None and exp <= now_dt:
            rejected.append(_rej(who, "expired", f"the approval expired at {fmt_ts(exp)}"))
            continue
        if later is not None and later > now_dt:
            when = fmt_ts(at) if later == at else a["at"][:60]  # (rounded up: as given, `.0000001`)
            rejected.append(_rej(who, "future", f"the approval is dated {when}, after now ({fmt_ts(now_dt)})"))
            continue
        if who in excluded:
            rejected.append(
                _rej(who, "distinct_from", f"`{who}` is {excluded[who]}; the authorization must come from someone else")
            )
            continue
        same = excluded_by_form.get(canonical(who))
        if same is not None:
            rejected.append(
                _rej(
                    who,
                    "alias",
                    f"`{who}` is `{same}` written another way (the same id after NFKC, "
                    f"case folding and removing invisible characters, whitespace and controls), and `{same}` is "
                    f"{excluded[same]}; the authorization must come from someone else",
                )
            )
            continue
        useful = set(roles) & all_roles
        if not useful:
            need = ", ".join(f"`{r}`" for r in sorted(all_roles)) or "none"
            rejected.append(_rej(who, "missing_role", f"`{who}` holds none of the roles the slots need ({need})"))
            continue
        if verdict == "deny":  # never an approval; from someone who could fill a slot, it beats every approval
            rejected.append(_rej(who, "invalid", f"`{who}` denied the {what}: a deny never counts as an approval"))
            errors.append(err("<input>", "input", f"`{_shown(who)}` denied the {what}, and could fill a slot: "
                                                  "a deny from a required approver beats every approval"))
            continue
        if who in cand_roles:
            cand_roles[who] |= useful
            rejected.append(
                _rej(who, "duplicate", f"`{who}` already approved; one principal fills at most one slot (counted once)")
            )
            continue
        cand_roles[who] = useful
    counted: dict[str, str] = {}  # canonical form -> the principal counted under it
    for who in sorted(cand_roles):
        first = counted.setdefault(canonical(who), who)
        if first != who:
            cand_roles[first] |= cand_roles[who]  # one person: the roles of every spelling (adding one never hurts)
            rejected.append(
                _rej(
                    who,
                    "alias",
                    f"`{who}` is `{first}` written another way (the same id after NFKC, "
                    f"case folding and removing invisible characters, whitespace and controls); one principal "
                    f"fills at most one slot (counted once, as `{first}`)",
                )
            )
    cands = sorted(counted.values())
    assign = _match(cands, cand_roles, slots, slot_roles)
    filled: dict[str, list] = {s.id: [] for s in slots}
    for who, sid in assign.items():
        filled[sid].append(who)
    for who in cands:
        if who not in assign:
            rejected.append(
                _rej(
                    who,
                    "unused",
                    f"every slot `{who}` could fill ("
                    + ", ".join(f"`{r}`" for r in sorted(cand_roles[who]))
                    + ") is already filled",
                )
            )
    fills = []
    for s in slots:
        by = tuple(sorted(filled[s.id]))
        fills.append(
            fast(
                SlotFill,
                {
                    "id": s.id,
                    "roles": s.roles,
                    "any_of": s.any_of,
                    "count": s.count,
                    "source": s.source,
                    "filled_by": by,
                    "missing": s.count - len(by),
                },
            )
        )
    rejected.sort(key=lambda r: (r.principal, r.code, r.reason))
    return tuple(fills), tuple(f for f in fills if f.missing > 0), tuple(sorted(assign)), tuple(rejected)


def _match(cands: list[str], roles: Mapping[str, set], slots: Sequence, slot_roles: list[set]) -> dict[str, str]:
    """Maximum assignment of principals to slots (with capacities): augmenting paths.

    Deterministic: principals in sorted order, slots in declaration order."""
    cap = [s.count for s in slots]
    holders: list[list[str]] = [[] for _ in slots]
    where: dict[str, int] = {}
    elig = {c: [i for i, r in enumerate(slot_roles) if roles[c] & r] for c in cands}

    def augment(c: str, seen: set) -> bool:
        for i in elig[c]:
            if i in seen:
                continue
            seen.add(i)
            if len(holders[i]) < cap[i]:
                holders[i].append(c)
                where[c] = i
                return True
            for other in list(holders[i]):
                if augment(other, seen):
                    holders[i].remove(other)
                    holders[i].append(c)
                    where[c] = i
                    return True
        return False

    for c in cands:
        if sum(len(h) for h in holders) >= sum(cap):
            break
        augment(c, set())
    return {c: slots[i].id for c, i in where.items()}
