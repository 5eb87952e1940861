"""Readable traces of engine results (what `stopline explain` prints).

`explain(result)` accepts any of the four results (Decision, RollbackPlan,
AuthorizationVerdict, ResumeDecision) and returns plain text: every rule considered,
its condition's value or error, and why the final answer won. Deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable

from .models import (
    AuthorizationVerdict,
    CascadeStep,
    Cost,
    Decision,
    ResumeDecision,
    RollbackPlan,
    ScenarioCost,
    SlotSpec,
)

__all__ = ["explain"]

_MARK = {True: "[x]", False: "[ ]"}


def _names(items: Iterable[str]) -> str:
    items = list(items)
    return ", ".join(items) if items else "none"


def _slot(s: SlotSpec) -> str:
    who = f"of [{', '.join(s.roles)}]" if s.any_of else (s.roles[0] if s.roles else "?")
    extra = " (after window)" if s.source == "escalation" else ""
    return f"{s.count} {who}{extra}"


def _slots(slots: Iterable[SlotSpec]) -> str:
    return " and ".join(_slot(s) for s in slots) or "nobody"


def _amount(c: Cost) -> str:
    """A declared cost as written: `40 USD`, `2.5 hours`."""
    a = c.amount
    return f"{int(a) if a.is_integer() and abs(a) < 1e15 else a} {c.unit}"


def _cost(c: ScenarioCost) -> str:
    text = f"{c.scenario}: route {c.route or '-'}, authorize {_slots(c.slots)}"
    if c.distinct_from:
        text += f" distinct from {', '.join(c.distinct_from)}"
    if c.notify:
        text += f"; notify {', '.join(c.notify)}"
    if c.cost is not None:
        text += f"; cost {_amount(c.cost)} per rollback"
    return text


# Control characters, line separators and bidi overrides from input data would let an
# action forge lines (or colours) in a trace a person reads: shown escaped instead.
_UNSAFE = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_UNSAFE.update({c: f"\\u{c:04x}" for c in (0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A))})


def _displayable(value: object) -> object:
    if isinstance(value, str):
        return value.translate(_UNSAFE)
    if isinstance(value, dict):
        return {k: _displayable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_displayable(v) for v in value]
    return value




def _one_line(cel: str) -> str:
    """A condition on one line as it reads: each line break with the indentation around it
    becomes one space, and a `//` comment is dropped, outside string literals only (a
    string's spaces, and a triple-quoted string's line breaks, are its value)."""
    out: list[str] = []
    i, n = 0, len(cel)
    while i < n:
        ch = cel[i]
        if ch in "\"'":
            q = cel[i:i + 3] if cel[i:i + 3] in ('"""', "'''") else ch
            raw = i > 0 and cel[i - 1] in "rR"
            j = i + len(q)
            while j < n and not cel.startswith(q, j):
                if q == ch and cel[j] == "\n":
                    break
                j += 2 if cel[j] == "\\" and not raw else 1
            j = min(n, j + len(q))
            out.append(cel[i:j])
            i = j
        elif cel.startswith("//", i):
            j = cel.find("\n", i)
            i = n if j == -1 else j
            if out and out[-1] != " ":
                out.append(" ")
        elif ch in " \t\r\n":
            j = i
            while j < n and cel[j] in " \t\r\n":
                j += 1
            if out and out[-1] != " ":
                out.append(" ")
            i = j
        else:
            out.append(ch)
            i += 1
    return "".join(out).strip()


def _one_line_conditions(data: dict[str, object]) -> dict[str, object]:
    """A condition written over several lines of the policy, on one line: its line breaks
    are the policy's layout, not data, and escaped with the rest (`_displayable`) they
    showed as `\\x0a` followed by the policy's indentation, in the middle of the condition."""
    for key in ("trace", "duties"):
        items = data.get(key)
        if isinstance(items, list):
            for item in items:
                if isinstance(item, dict) and isinstance(item.get("condition"), str):
                    item["condition"] = _one_line(item["condition"])
    return data


def explain(result: object) -> str:
    if isinstance(result, (Decision, RollbackPlan, AuthorizationVerdict, ResumeDecision)):
        data = _one_line_conditions(result.model_dump(mode="json", by_alias=True))
        result = type(result).model_validate(_displayable(data))
    if isinstance(result, Decision):
        return explain_decision(result)
    if isinstance(result, RollbackPlan):
        return explain_plan(result)
    if isinstance(result, AuthorizationVerdict):
        return explain_verdict(result)
    if isinstance(result, ResumeDecision):
        return explain_resume(result)
    raise TypeError(f"cannot explain a {type(result).__name__}")


def _header(
    lines: list[str], title: str, d: Decision | RollbackPlan | AuthorizationVerdict | ResumeDecision
) -> None:
    lines.append(title)
    version = getattr(d, "policy_version", None)
    lines.append(f"  policy {d.policy_hash}" + (f" (workflow version {version})" if version else ""))
    lines.append(f"  now    {d.evaluated_at}")
    owners = getattr(d, "owners", None)
    if owners is not None:
        lines.append(f"  owners business {owners.business or '-'}, technical {owners.technical or '-'}")


def explain_decision(d: Decision) -> str:
    lines: list[str] = []
    what = f"{d.workflow or '?'} / {d.action_type or '?'}" + (f" (id {d.action_id})" if d.action_id else "")
    _header(lines, f"gate: {what}", d)
    stops = [t for t in d.trace if t.kind == "stop"]
    rules = [t for t in d.trace if t.kind == "rule"]
    if d.deciding.kind == "stopped":
        lines.append("")
        lines.append("no rule was evaluated: the workflow state says the workflow is stopped")
    if stops or rules:
        lines.append("")
    if stops:
        lines.append("stop triggers (by name):")
        for t in stops:
            lines.extend(_trace_lines(t))
    if rules:
        lines.append("rules (by precedence: deny, require_approval, allow; then by name):")
        for t in rules:
            lines.extend(_trace_lines(t))
    elif d.deciding.kind not in ("stopped", "error") and d.workflow and d.action_type:
        lines.append(f"rules: none for `{d.action_type}`" if d.deciding.kind != "undeclared" else
                     "rules: none (the action type is not declared)")
    errs = [e for e in d.errors if e.kind == "input"]
    if errs:
        lines.append("")
        lines.append("input problems:")
        for e in errs:
            lines.append(f"  - {e.message}")
    lines.append("")
    lines.append(f"result: {d.effect.upper()}")
    lines.append(f"  why: {d.reason}")
    where = f" at {d.deciding.location}" if d.deciding.location else ""
    lines.append(f"  decided by: {d.deciding.kind} `{d.deciding.name}`{where}")
    others = [m for m in d.matched if m != d.deciding]
    if others:
        lines.append("  also matched: " + ", ".join(f"{m.effect} `{m.name}`" for m in others))
    if d.approvals:
        lines.append("  approvals needed (every matched require_approval rule):")
        for a in d.approvals:
            who = f"{a.count} of [{', '.join(a.roles)}]" if a.any_of else f"{a.count} {', '.join(a.roles)}"
            lines.append(f"    - {who} (rule `{a.rule}`)")
    if d.effect == "require_approval":
        lines.append("  action digest: " + (f"{d.action_digest} (approvals name it)" if d.action_digest
                                            else "none (the action is not plain JSON: it cannot be approved)"))
    if d.stop is not None:
        s = d.stop
        lines.append(f"  stop trigger `{s.trigger}`" + ("" if s.known else " (not declared in this policy)"))
        if s.known:
            lines.append(f"    severity {s.severity}; owner {s.owner}")
            lines.append(f"    affects {_names(s.affects)}; notify {_names(s.notify)}")
            if s.rollback:
                lines.append(f"    rollback: {s.rollback}")
            lines.append(f"    resume when: {_names(s.resume_criteria)}")
        if s.stopped_at:
            lines.append(f"    stopped at {s.stopped_at}")
    r = d.reversibility
    if r is not None:
        text = f"  reversibility: {r.klass}"
        if r.method:
            text += f" via {r.method}"
        if r.window:
            text += f" within {r.window}; if executed now, reversible until {r.reversible_until}"
        lines.append(text)
        if r.cost is not None:
            lines.append(f"    reversing it costs {_amount(r.cost)} (the action type's declared cost)")
        for c in r.within_window:
            if c.cost is not None:
                lines.append(f"    within the window, a rollback under {c.scenario} costs {_amount(c.cost)}")
        if r.after_window:
            lines.append("    after the window, reversal costs:")
            for c in r.after_window:
                lines.append(f"      - {_cost(c)}")
    if d.receipt:
        lines.append(f"  receipt: {', '.join(d.receipt)}")
    return "\n".join(lines) + "\n"


def _trace_lines(t) -> list[str]:
    if t.error is not None:
        mark = "[!]"
        value = f"error: {t.error}" + (" -> counts as matched" if t.matched else " -> counts as not matched")
    else:
        mark = _MARK[t.matched]
        value = t.value if t.value is not None else "?"
    head = f"  {mark} {t.effect} `{t.name}`" if t.kind == "rule" else f"  {mark} `{t.name}`"
    out = [f"{head} = {value}" + (f"    ({t.location})" if t.location else "")]
    if t.condition:
        cond = _one_line(t.condition)  # (a `//` comment dropped: joined, it hid the rest of the condition)
        out.append(f"        `{cond if len(cond) <= 100 else cond[:97] + '...'}`")
    return out


def _step_tree(steps: Iterable[CascadeStep]) -> list[tuple[int, CascadeStep]]:
    """The steps (kept breadth-first in the plan) as a tree: each one right under the step
    whose record caused it, at one more level of indentation. Printed breadth-first with
    indentation by depth, a record would sit under whichever step preceded it, not its parent."""
    steps = list(steps)
    ids = {s.record_id for s in steps}
    children: dict[str | None, list[CascadeStep]] = {}
    for s in steps:
        children.setdefault(s.parent if s.parent in ids and s.parent != s.record_id else None, []).append(s)
    out: list[tuple[int, CascadeStep]] = []
    seen: set[int] = set()

    def walk(s: CascadeStep, level: int) -> None:
        if id(s) in seen:
            return
        seen.add(id(s))
        out.append((level, s))
        for child in children.get(s.record_id, ()):
            walk(child, level + 1)

    for root in children.get(None, ()):
        walk(root, 0)
    out.extend((0, s) for s in steps if id(s) not in seen)  # (a parent cycle: none reachable from a root)
    return out


def explain_plan(p: RollbackPlan) -> str:
    lines: list[str] = []
    _header(lines, f"rollback: {p.workflow or '?'} / scenario {p.scenario or '?'} of "
                   f"{p.original_type or '?'} {p.original_id or '?'}", p)
    lines.append(f"  plan   {p.plan_hash}")
    lines.append("")
    kind = "standard" if p.standard_scenario else ("custom" if p.scenario_declared else "undeclared")
    lines.append(f"scenario: `{p.scenario}` ({kind}); route {p.route or '-'}")
    if p.window == "none":
        lines.append("window: none (no reversal window declared); standard path")
    else:
        lines.append(f"window: executed {p.executed_at or '?'}, reversible until {p.reversible_until or '?'} "
                     f"-> {p.window} path")
    a = p.authorization
    lines.append(f"authorize: {_slots(a.slots)}")
    for d in a.distinct_from:
        lines.append(f"  distinct from {d.ref} = {d.principal if d.principal is not None else '(not given)'}")
    lines.append(f"notify: {_names(p.notify)}")
    if p.compensations:
        lines.append("compensate: " + ", ".join(
            (c.name if c.kind == "action" else f'"{c.name}"') + (" (after window)" if c.source == "escalation" else "")
            for c in p.compensations))
    conditional = [d for d in p.duties if d.condition is not None]
    if conditional:
        lines.append("conditional duties:")
        for duty in conditional:
            lines.append(
                f"  {_MARK[duty.applies]} {duty.kind} {duty.name}"
                + (" (after window)" if duty.source == "escalation" else "")
                + f": {duty.reason}"
            )
            lines.append(f"        `{duty.condition}`")
    f = p.feasibility
    lines.append(f"feasibility: {f.status}")
    for pr in f.prerequisites:
        lines.append(
            f"  {_MARK[pr.met]} prerequisite `{pr.name}`"
            + (f": {pr.reason}" if pr.reason else "")
            + (f"    ({pr.location})" if pr.location else "")
        )
    for r in f.reasons:
        lines.append(f"  - {r}")
    c = p.cascade
    lines.append(f"cascade (breadth-first, authorized depth {c.depth_limit}):")
    for level, s in _step_tree(c.steps):
        how = "MANUAL: " + (s.reason or "") if s.manual else f"via {s.method}"
        if not s.manual and s.status != "feasible":
            how += f" -- {s.status.replace('_', ' ').upper()}: " + "; ".join(s.reasons)
        lines.append(
            f"  {'  ' * level}- [{s.depth}] {s.record_id} ({s.type}) {how}"
            + (f"; verify: {s.verify}" if s.verify and not s.manual else "")
        )
    if c.checkpoint:
        lines.append("  pause and confirm before going deeper:")
        for rec in c.checkpoint:
            lines.append(f"    - [{rec.depth}] {rec.record_id} ({rec.type}), under {rec.parent}")
    if c.undeclared:
        lines.append("  not planned (their parent's `side_effects` do not declare their type; decide by hand):")
        for u in c.undeclared:
            lines.append(f"    - {u.record_id} ({u.type}), caused by {u.parent} ({u.parent_type})")
    for lp in c.loops:
        lines.append(f"  loop: {lp.record_id} is already in the plan ({' -> '.join(lp.path)}); the branch stops")
    if c.truncated:
        lines.append(f"  truncated: {c.truncated_reason}")
    if c.partial:
        lines.append("  the plan is PARTIAL")
    if p.errors:
        lines.append("problems:")
        for e in p.errors:
            lines.append(
                f"  - {e.rule if e.kind != 'input' else 'input'}: {e.message}"
                + (f"    ({e.location})" if e.location else "")
            )
    lines.append("")
    lines.append(
        "result: "
        + ("authorizable" if p.authorizable else "NOT authorizable")
        + f"; feasibility {f.status}"
        + ("; cascade partial" if c.partial else "")
    )
    return "\n".join(lines) + "\n"


def explain_verdict(v: AuthorizationVerdict) -> str:
    lines: list[str] = []
    what = f"action {v.action_digest}" if v.action_digest else f"plan {v.plan_hash or '?'}"
    _header(lines, f"authorization of {what}", v)
    lines.append("")
    lines.append("slots:")
    for s in v.slots:
        who = ", ".join(s.filled_by) if s.filled_by else "-"
        state = "filled" if s.missing == 0 else f"{s.missing} missing"
        lines.append(
            f"  {s.id}: {_slot(SlotSpec(id=s.id, count=s.count, roles=s.roles, any_of=s.any_of, source=s.source))}"
            f" <- {who} ({state})"
        )
    if v.rejected:
        lines.append("approvals that do not count:")
        for r in v.rejected:
            lines.append(f"  - {r.principal} [{r.code}]: {r.reason}")
    for e in v.errors:
        lines.append(f"problem: {e.message}")
    lines.append("")
    if v.satisfied:
        lines.append("result: SATISFIED; every slot is filled by a distinct, eligible principal")
    else:
        why = ", ".join(s.id for s in v.open_slots)
        lines.append(
            "result: NOT satisfied" + (f"; open slots: {why}" if why else "") + ("; see problems" if v.errors else "")
        )
    return "\n".join(lines) + "\n"


def explain_resume(r: ResumeDecision) -> str:
    lines: list[str] = []
    _header(lines, f"resume: {r.workflow or '?'} stopped by {r.trigger or '?'}", r)
    lines.append("")
    lines.append("re-enable criteria (all must hold):")
    for c in r.criteria:
        lines.append(
            f"  {_MARK[c.met]} `{c.name}`"
            + (f": {c.reason}" if c.reason else "")
            + (f"    ({c.location})" if c.location else "")
        )
        if c.description:
            lines.append(f"        {c.description}")
    if not r.criteria:
        lines.append("  (none evaluated)")
    for e in r.errors:
        if e.kind == "input":
            lines.append(f"problem: {e.message}")
    lines.append("")
    if r.allowed:
        lines.append("result: ALLOWED to resume")
    else:
        lines.append("result: NOT allowed" + (f"; unmet: {', '.join(r.unmet)}" if r.unmet else ""))
    return "\n".join(lines) + "\n"
