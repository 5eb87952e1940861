"""An agent runtime on `policy_engine.Runtime` with the embedded SQLite ledger: the whole
lifecycle recorded, nothing kept in the script's own variables that the ledger does not hold.

The story (support-replies workflow, policies/support_replies.policy), on a pinned clock:

 1. gate a reply that makes a promise: `require_approval` by a reviewer; the reviewer
    approves, bound to the decision's `action_digest`; the reply is sent and its receipt
    recorded; the CRM note it caused is gated and recorded with `caused_by`;
 2. a second reply carries an unsourced promise: the stop trigger fires and the ledger
    stops the workflow; the next gate is `stop` with no state passed by the script;
 3. the customer asks for a retraction: `request_rollback` plans it from the record (the
    receipt, the reviewer, the cascade from the recorded `caused_by` links) and queues it
    on `customer_service`; an agent claims it; an approval without the scenario's role
    does not count, a customer-service agent's does;
 4. the steps: recall, amend the CRM note, the correction (it fails once: `partial`, what
    remains listed), the notification; a repeated report changes nothing; every step
    verified; a second request is answered with the first rollback;
 5. resume: refused with the unmet criteria (recorded), then allowed;
 6. `history` of the first reply, then `stopline ledger verify`.

Run:  python examples/agent_runtime.py [LEDGER.db]   (default: a temporary file)
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from policy_engine import Runtime

POLICIES = Path(__file__).resolve().parent.parent / "policies"
WF = "support-replies"
T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def at(s: int) -> datetime:
    return T0 + timedelta(seconds=s)


def say(s: int, text: str) -> None:
    print(f"[{at(s):%H:%M:%S}] {text}")


def detail(text: str) -> None:
    print(f"           {text}")


def reply(rid: str, sourced: bool) -> dict:
    return {"workflow": WF, "type": "send_customer_reply", "id": rid, "recipient": {"domain": "acme.example"},
            "claims": [{"kind": "refund", "sourced": sourced}], "customer": {"tier": "smb"}, "confidence": 0.95}


def main(path: str, kept: bool = True) -> int:
    url = f"sqlite:///{path}"
    with Runtime.open(str(POLICIES), ledger=url) as rt:
        # 1. gate, approval, execution with receipt, its side effect
        g = rt.gate(reply("reply-1", sourced=True), now=at(0))
        say(0, f"gate reply-1: {g.effect} ({g.reason})")
        detail(f"decision {g.decision_id[:8]}, bound to {g.decision.action_digest[:19]}…")
        a = rt.approve(g.decision_id, principal="sam", roles=["reviewer"], now=at(5))
        say(5, f"sam (reviewer) approves: the decision is {a.status}")
        receipt = {"final_message": "Your refund of $40 is on its way.", "reviewer_decision": "approved by sam",
                   "policy_rule": "promise_needs_review", "source_excerpts": ["refund policy §2"],
                   "ticket_id": "T-1042", "recipient": "dana@acme.example", "recipient_opened": False,
                   "channel": "email", "reviewer": "sam"}
        x = rt.executed(g.decision_id, receipt=receipt, now=at(6))
        say(6, f"reply-1 sent: execution {x.execution_id[:8]} authorized={x.authorized} flags={list(x.flags)}")
        again = rt.executed(g.decision_id, receipt=receipt, now=at(7))
        detail(f"a second send on the same approval is recorded and flagged: {list(again.flags)} "
               f"({again.reasons[0][:48]}…)")
        n = rt.gate({"workflow": WF, "type": "log_crm_activity", "id": "note-1", "note_kind": "reply_summary"},
                    now=at(8))
        note = rt.executed(n.decision_id, receipt={"activity_id": "A-77", "note_text": "refund promised"},
                           caused_by=x.execution_id, now=at(8))
        say(8, f"CRM note {n.effect}: execution {note.execution_id[:8]} caused by {x.execution_id[:8]}; "
               f"receipt lacks {list(note.missing_receipt)}")

        # 2. the stop trigger fires; the ledger keeps the workflow stopped
        s = rt.gate(reply("reply-2", sourced=False), now=at(10))
        say(10, f"gate reply-2: {s.effect} by `{s.decision.deciding.name}`; workflow {s.workflow_status}")
        later = rt.gate(reply("reply-3", sourced=True), now=at(11))
        detail(f"next gate, no state passed: {later.effect} ({later.decision.deciding.kind} since "
               f"{rt.workflow_status(WF)['since']})")

        # 3. the rollback, planned from the record and queued
        p = rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita",
                                reason="the customer asked us to retract the refund promise", now=at(20))
        say(20, f"rollback {p.rollback_id[:8]} requested by rita: route {p.route}, window {p.plan.window}, "
                f"feasibility {p.plan.feasibility.status}")
        detail(f"cascade from the record: {[st.type for st in p.plan.cascade.steps]}")
        for item in rt.queue("customer_service", now=at(21)):
            detail(f"queue customer_service: {item.rollback_id[:8]} {item.scenario} {item.status}, window until "
                   f"{item.deadline}")
        c = rt.claim(p.rollback_id, principal="casey", now=at(22))
        say(22, f"casey claims it: {'claimed' if c.recorded else c.reason}")
        r = rt.approve(p.rollback_id, principal="sam", roles=["reviewer"], now=at(23))
        detail(f"sam (reviewer, not customer_service) approves: counted={r.counted}; status {r.status}")
        r = rt.approve(p.rollback_id, principal="casey", roles=["customer_service"], now=at(24))
        say(24, f"casey (customer_service) approves: {r.status}")

        # 4. the steps, tracked to the end
        st = rt.authorization(p.rollback_id, now=at(25))
        rid = p.rollback_id
        t = 30  # the story's clock: each report a second after the one before
        for duty in st.duties:
            if duty.startswith("compensate:"):
                f = rt.step(rid, duty, "failed", key=f"{duty}-1", now=at(t))
                say(t, f"{duty}: failed -> rollback {f.rollback_status}, remaining {list(f.remaining)}")
                t += 1
                f = rt.step(rid, duty, "completed", key=f"{duty}-2", now=at(t))
                say(t, f"{duty}: completed on retry -> {f.rollback_status}")
            else:
                f = rt.step(rid, duty, "completed", key=f"{duty}-1", now=at(t))
                say(t, f"{duty if ':' in duty else 'reverse ' + duty[:8]}: completed -> {f.rollback_status}")
            t += 1
        dup = rt.step(rid, st.duties[0], "completed", key=f"{st.duties[0]}-1", now=at(t))
        detail(f"the same report again: recorded={dup.recorded}")
        for i, duty in enumerate(st.duties):
            v = rt.step(rid, duty, "verified", key=f"{duty}-v", now=at(60 + i))
        say(60, f"every step verified: rollback {v.rollback_status}")
        twice = rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="bo",
                                    reason="duplicate ticket", now=at(70))
        detail(f"a second request: {twice.reason}")

        # 5. resume
        no = rt.resume(WF, evidence={"reviewer_screen": {"shows_claim_sources": True}, "blocked_promises": []},
                       principal="ops-lead", now=at(80))
        say(80, f"resume refused (recorded): unmet {list(no.unmet)}")
        yes = rt.resume(WF, evidence={"reviewer_screen": {"shows_claim_sources": True},
                                      "blocked_promises": ["legal_advice", "guaranteed_outcome",
                                                           "compensation_offer"]},
                        principal="ops-lead", now=at(90))
        say(90, f"resume allowed: workflow {yes.status}; next gate: "
                f"{rt.gate(reply('reply-4', sourced=True), now=at(91)).effect}")

        # 6. the chain, both ways
        h = rt.history(x.execution_id)["execution"]
        say(
            95,
            f"history of reply-1: decision approvals {[e['body']['principal'] for e in h['decision']['approvals']]}, "
            f"caused {len(h['caused'])}, rollbacks {[(rb['trigger'], rb['status']) for rb in h['rollbacks']]}",
        )
        print(f"           {rt.ledger.size} entries in {path}"
              + ("" if kept else " (removed on exit: `python examples/agent_runtime.py demo.db` keeps one)"))
    print(f"$ stopline ledger verify --ledger {shlex.quote(url)}")  # the command as it reruns
    res = subprocess.run(
        [sys.executable, "-m", "policy_engine.cli", "ledger", "verify", "--ledger", url], capture_output=True, text=True
    )
    print((res.stdout + res.stderr).strip())
    return res.returncode


if __name__ == "__main__":
    if len(sys.argv) > 1:
        sys.exit(main(sys.argv[1]))
    with tempfile.TemporaryDirectory() as d:
        sys.exit(main(str(Path(d) / "stopline.db"), kept=False))
