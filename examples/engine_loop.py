"""A small, self-contained simulation of an agent runtime that uses Stopline.

No network, no model: the "agent" is a scripted list of proposed actions for one
support ticket, the "help desk", "mail gateway" and "CRM" are dictionaries, and
the clock is pinned, so every run prints the same thing.

What it shows, step by step (support-replies workflow, policies/support_replies.policy):

 1. gate every proposed action (`engine.evaluate`): allow -> execute, require_approval
    -> hold in the approval queue until the approvals given release it
    (`engine.authorize_action`: every matched rule's count and roles, distinct people,
    each approval bound to the decision's `action_digest`), deny -> drop;
 2. record a receipt with exactly the fields the decision asks for;
 3. a post-send claim audit finds an unsupported promise: the stop trigger fires and
    the workflow is stopped; every later action gets `stop`;
 4. file a rollback with the right scenario (`reviewer_error`), read the plan
    (route, window, authorization, cascade), collect approvals until authorized -
    the original reviewer's approval is refused;
 5. reverse the action and its cascade step by step, run the compensations;
 6. resume only when the evidence meets every re-enable criterion.

Run:  python examples/engine_loop.py
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import policy_engine

POLICIES = Path(__file__).resolve().parent.parent / "policies"
WORKFLOW = "support-replies"


class Clock:
    """A pinned clock: time only moves when the script says so."""

    def __init__(self, start: str) -> None:
        self.now = datetime.fromisoformat(start.replace("Z", "+00:00"))

    def advance(self, seconds: int) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now

    def iso(self) -> str:
        return self.now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def say(step: str, text: str = "") -> None:
    print(f"[{clock.iso()}] {step}" + (f" {text}" if text else ""))


def detail(text: str) -> None:
    print(f"    {text}")


clock = Clock("2026-11-24T10:00:00Z")

# Who is who. Roles are the policy's roles (policies/roles.policy).
PRINCIPALS = {
    "bob": ["reviewer"],            # approves agent replies in the approval queue
    "alice": ["reviewer"],          # a second reviewer
    "sam": ["support_manager"],
}


class Runtime:
    def __init__(self) -> None:
        self.engine = policy_engine.load(str(POLICIES))
        self.state: dict[str, Any] = {"name": WORKFLOW, "status": "running"}
        self.receipts: dict[str, dict[str, Any]] = {}   # action id -> receipt (the run record)
        self.records: dict[str, dict[str, Any]] = {}    # action id -> executed record
        self.mailbox: dict[str, dict[str, Any]] = {}    # message id -> the customer's inbox
        self.crm_notes: dict[str, str] = {}

    # ------------------------------------------------------------------ gate
    def propose(self, action: dict[str, Any], approvers: tuple[str, ...] = (), compensation: bool = False) -> str:
        # Compensations are gated like any action, against the real (stopped) state: the
        # policy marks repair actions `runs_while_stopped`, so their own rules decide.
        decision = self.engine.evaluate(action, workflow_state=self.state, now=clock.now)
        label = "GATE (compensation)" if compensation else "GATE"
        say(f"{label} {action['type']} {action['id']}:", f"{decision.effect} ({decision.deciding.kind} "
            f"`{decision.deciding.name}`)")
        detail(decision.reason)
        if decision.effect == "allow":
            self.execute(action, decision, reviewer=None)
        elif decision.effect == "require_approval":
            needs = ", ".join(f"{a.count} {'/'.join(a.roles)}" for a in decision.approvals)
            rv = decision.reversibility
            detail(f"HOLD in the approval queue: needs {needs}")
            if rv is not None and rv.klass is not None:
                detail(f"the reviewer sees the reversal cost: {rv.klass} via {rv.method}"
                       + (f", within {rv.window} (until {rv.reversible_until})" if rv.window else ""))
            if not approvers:
                detail("no approver acted: the action stays held")
                return decision.effect
            # Each approver approves this exact action (its digest); the engine says whether
            # the approvals given release it. Never check roles or counts by hand.
            clock.advance(60)
            approvals = [{"principal": who, "roles": PRINCIPALS[who], "action_digest": decision.action_digest,
                          "at": clock.iso()} for who in approvers]
            verdict = self.engine.authorize_action(decision, approvals, now=clock.now)
            for r in verdict.rejected:
                detail(f"approval by {r.principal} does not count: {r.reason}")
            if not verdict.satisfied:
                still_open = ", ".join(f"{s.missing} {'/'.join(s.roles)}" for s in verdict.open_slots)
                detail(f"NOT RELEASED: still needs {still_open or 'a valid decision'}; the action stays held")
                return decision.effect
            say(f"APPROVED by {', '.join(verdict.accepted)}", "(authorize_action: satisfied)")
            self.execute(action, decision, reviewer=", ".join(verdict.accepted))
        elif decision.effect == "deny":
            detail("DROPPED: the agent is told why and does not retry")
        elif decision.effect == "stop":
            detail(f"STOPPED: workflow stopped by `{decision.stop.trigger}`; nothing executes")
        return decision.effect

    def execute(self, action: dict[str, Any], decision: Any, reviewer: str | None) -> None:
        aid = action["id"]
        if action["type"] in ("send_customer_reply", "send_correction"):
            self.mailbox[aid] = {"text": action["final_message"], "opened": False, "recalled": False}
        elif action["type"] == "log_crm_activity":
            self.crm_notes[aid] = action["note_text"]
        context = {
            **action,
            "reviewer_decision": f"approved by {reviewer}" if reviewer else "auto-allowed",
            "policy_rule": f"{decision.deciding.name} ({Path(decision.deciding.location or '?').name})",
            "source_excerpts": [c.get("source_excerpt", "") for c in action.get("claims", [])],
        }
        receipt = {field: context.get(field) for field in decision.receipt}
        receipt["policy_hash"] = decision.policy_hash[:19] + "..."
        receipt["executed_at"] = clock.iso()
        self.receipts[aid] = receipt
        self.records[aid] = {"id": aid, "type": action["type"], "executed_at": clock.iso(),
                             "reviewer": reviewer, "channel": action.get("channel", "email"),
                             "recipient_opened": False, "downstream": []}
        say(f"EXECUTED {action['type']} {aid}; receipt recorded:")
        for k, v in receipt.items():
            detail(f"{k}: {v}")

    # ------------------------------------------------------------------ after the fact
    def audit(self, executed_action: dict[str, Any]) -> None:
        """Evaluate an executed action again with what we learned after it ran."""
        decision = self.engine.evaluate(executed_action, workflow_state=self.state, now=clock.now)
        if decision.effect == "stop":
            s = decision.stop
            self.state = {"name": WORKFLOW, "status": "stopped", "stopped_by": s.trigger, "stopped_at": clock.iso()}
            say(f"STOP TRIGGER `{s.trigger}` fired (severity {s.severity}) on {executed_action['id']}")
            detail(f"owner: {s.owner}; affects: {', '.join(s.affects)}")
            detail(f"rollback: {s.rollback}")
            detail(f"notify: {', '.join(s.notify)}")
            detail(f"re-enable only when: {', '.join(s.resume_criteria)}")
            detail("workflow status -> stopped")
        else:
            say(f"AUDIT {executed_action['id']}: no stop trigger fired ({decision.effect})")


def main() -> int:
    rt = Runtime()
    say("LOADED policies", f"{POLICIES.name}/ (workflow `{WORKFLOW}`)")

    # ---------------------------------------------------------------- 1. the agent works a ticket
    how_to = {
        "workflow": WORKFLOW, "type": "send_customer_reply", "id": "reply-1", "ticket_id": "T-1001",
        "channel": "email", "recipient": {"email": "dana@customer.example", "domain": "customer.example"},
        "customer": {"tier": "standard"}, "confidence": 0.97,
        "final_message": "Hi Dana, you can reset the sync token under Settings > Integrations.",
        "claims": [{"kind": "how_to", "text": "reset under Settings > Integrations", "sourced": True,
                    "source": "kb-204", "source_excerpt": "kb-204: Settings > Integrations > Reset token"}],
    }
    rt.propose(how_to)
    clock.advance(5)
    rt.propose({"workflow": WORKFLOW, "type": "log_crm_activity", "id": "crm-note-1", "ticket_id": "T-1001",
                "note_kind": "reply_summary", "note_text": "Explained token reset (kb-204)",
                "activity_id": "act-1", "claims": []})

    clock.advance(30)
    promise = {
        "workflow": WORKFLOW, "type": "send_customer_reply", "id": "reply-2", "ticket_id": "T-1001",
        "channel": "email", "recipient": {"email": "dana@customer.example", "domain": "customer.example"},
        "customer": {"tier": "standard"}, "confidence": 0.93,
        "final_message": "The permanent fix ships this Friday.",
        "claims": [{"kind": "timeline", "text": "fix ships this Friday", "sourced": True,
                    "source": "release-plan-12", "source_excerpt": "release-plan-12: sync fix targeted for Q1"}],
    }
    rt.propose(promise, approvers=("bob",))   # bob approves too quickly: the excerpt says Q1, not Friday
    sent_at = rt.records["reply-2"]["executed_at"]
    clock.advance(2)
    rt.propose({"workflow": WORKFLOW, "type": "log_crm_activity", "id": "crm-note-2", "ticket_id": "T-1001",
                "note_kind": "reply_summary", "note_text": "Told customer: fix ships Friday",
                "activity_id": "act-2", "claims": []})
    rt.records["reply-2"]["downstream"].append(rt.records["crm-note-2"])

    clock.advance(3)
    rt.propose({**how_to, "id": "reply-3", "recipient": {"email": "pr@competitor.example",
                                                         "domain": "competitor.example"},
                "final_message": "Forwarding the customer's ticket."})

    # ---------------------------------------------------------------- 2. the claim audit stops the workflow
    clock.advance(10)
    say("CLAIM AUDIT", "the source checker reads release-plan-12: it does not support `this Friday`")
    audited = {**promise, "claims": [{**promise["claims"][0], "sourced": False}]}
    rt.audit(audited)

    clock.advance(2)
    rt.propose({**how_to, "id": "reply-4", "final_message": "Any other questions?"})

    # ---------------------------------------------------------------- 3. rollback: plan and authorization
    clock.advance(3)
    request = {
        "workflow": WORKFLOW, "scenario": "reviewer_error", "requested_by": "bob",
        "reason": "I approved a timeline the source does not support",
        "original": {**rt.records["reply-2"]},
    }
    plan = rt.engine.classify_rollback(request, now=clock.now)
    say("ROLLBACK filed:", f"scenario `{plan.scenario}` for {plan.original_id} (executed {sent_at})")
    detail(f"route: {plan.route} queue; window: {plan.window} (reversible until {plan.reversible_until})")
    detail(f"feasibility: {plan.feasibility.status}"
           + (f"; unmet prerequisites: {', '.join(plan.feasibility.unmet)}" if plan.feasibility.unmet else ""))
    slots = "; ".join(f"{s.count} of {'/'.join(s.roles)}" for s in plan.authorization.slots)
    excluded = ", ".join(plan.authorization.excluded_principals)
    detail(f"authorization: {slots}; never counts: {excluded}")
    detail(f"notify: {', '.join(plan.notify)}")
    detail(f"compensations: {', '.join(c.name for c in plan.compensations)}")
    for step in plan.cascade.steps:
        detail(f"cascade step depth {step.depth}: {step.record_id} ({step.type}) via {step.method}")
    if plan.cascade.checkpoint:
        detail("pause-and-confirm checkpoint: " + ", ".join(c.record_id for c in plan.cascade.checkpoint))

    approvals: list[dict[str, Any]] = []
    refused: set[str] = set()
    for who in ("bob", "alice"):
        clock.advance(5)
        approvals.append({"principal": who, "roles": PRINCIPALS[who], "at": clock.iso(), "plan_hash": plan.plan_hash})
        verdict = rt.engine.authorize_rollback(plan, approvals, now=clock.now)
        for r in verdict.rejected:
            if r.principal not in refused:
                refused.add(r.principal)
                say(f"APPROVAL by {r.principal} REFUSED:", r.reason)
        if verdict.satisfied:
            say(f"APPROVAL by {who} accepted:", f"rollback AUTHORIZED (filled by {', '.join(verdict.accepted)})")
            break
        still_open = ", ".join(f"{s.missing} {'/'.join(s.roles)}" for s in verdict.open_slots)
        detail(f"still open: {still_open}")
    else:
        say("ROLLBACK not authorized")
        return 1

    # ---------------------------------------------------------------- 4. reverse the action and its cascade
    for step in plan.cascade.steps:
        clock.advance(1)
        if step.type == "send_customer_reply":
            rt.mailbox[step.record_id]["recalled"] = True
        elif step.type == "log_crm_activity":
            rt.crm_notes[step.record_id] += " [amended: the Friday date was not supported; see correction]"
        say(f"REVERSED {step.record_id} via {step.method}")
        detail(f"verify: {step.verify}")
    for comp in plan.compensations:
        if comp.kind == "text":
            detail(f"manual compensation: {comp.name}")
            continue
        clock.advance(1)
        if comp.name == "send_correction":
            rt.propose({"workflow": WORKFLOW, "type": "send_correction", "id": "correction-1",
                        "ticket_id": "T-1001", "corrects_message_id": "reply-2", "corrected_message_id": "reply-2",
                        "final_message": "Correction: the fix is planned for Q1; we will confirm the date."},
                       approvers=("bob", "sam"), compensation=True)  # bob is no support manager
        elif comp.name == "log_crm_activity":
            rt.propose({"workflow": WORKFLOW, "type": "log_crm_activity", "id": "crm-note-3", "ticket_id": "T-1001",
                        "note_kind": "reply_summary", "activity_id": "act-3",
                        "note_text": "Correction sent: fix planned for Q1 (reply-2 recalled)"}, compensation=True)

    clock.advance(1)
    say("NOTIFIED", ", ".join(plan.notify) + " (the rollback is complete only once they are told)")

    # ---------------------------------------------------------------- 5. resume only when the evidence holds
    clock.advance(3600)
    evidence = {"reviewer_screen": {"shows_claim_sources": True}, "blocked_promises": ["legal_advice"]}
    resume = rt.engine.may_resume(rt.state, rt.state, evidence, now=clock.now)
    say("RESUME requested:", "allowed" if resume.allowed else f"BLOCKED, unmet: {', '.join(resume.unmet)}")
    for c in resume.criteria:
        detail(f"{'met  ' if c.met else 'UNMET'} {c.name}: {c.description}")

    clock.advance(3600)
    evidence["blocked_promises"] = ["legal_advice", "guaranteed_outcome", "compensation_offer"]
    resume = rt.engine.may_resume(rt.state, rt.state, evidence, now=clock.now)
    say("RESUME requested:", "allowed" if resume.allowed else f"BLOCKED, unmet: {', '.join(resume.unmet)}")
    for c in resume.criteria:
        detail(f"{'met  ' if c.met else 'UNMET'} {c.name}: {c.description}")
    if not resume.allowed:
        return 1
    rt.state = {"name": WORKFLOW, "status": "running"}
    detail("workflow status -> running")

    clock.advance(60)
    effect = rt.propose({**how_to, "id": "reply-5", "final_message": "Following up: the token reset worked?"})
    say("DONE", f"last action {effect}; mailbox: reply-2 recalled={rt.mailbox['reply-2']['recalled']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
