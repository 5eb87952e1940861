"""Regression tests for issue 12, items 2, 10, 13 and 17 (authorization), and the
`authorize` question for gate decisions in `stopline eval`/`explain` and fixture suites
(item 12). Each item's test failed before its fix; the reproductions use the shipped
policies, as the issue does."""

from __future__ import annotations

import itertools
import json

import pytest
from click.testing import CliRunner
from engine_support import ROOT

import policy_engine
from policy_engine.cli import main
from policy_engine.engine import MAX_APPROVALS, plan_hash

ENGINE = policy_engine.load(str(ROOT / "policies"))
NOW = "2026-11-24T10:00:00Z"
WF = "support-replies"


def reply_request(executed_at="2026-11-24T09:00:00Z", reviewer="bob", requested_by="rita"):
    return {"workflow": WF, "scenario": "reviewer_error", "requested_by": requested_by,
            "original": {"id": "reply-2", "type": "send_customer_reply", "executed_at": executed_at,
                         "reviewer": reviewer, "recipient_opened": False, "downstream": []}}


def approve(plan, who, roles):
    return {"principal": who, "roles": list(roles), "plan_hash": plan["plan_hash"] if isinstance(plan, dict)
            else plan.plan_hash, "at": NOW}


# ------------------------------------------------------------------ item 2

def test_item2_a_plan_edited_to_the_standard_window_and_rehashed_still_needs_the_escalation():
    """The issue's reproduction: an hour after sending (the window is 60 s), the plan is
    escalated (reviewer + support_manager). Rewritten to `standard`, `reversible_until`
    2099, the escalation slot dropped and `plan_hash` recomputed with the public
    `plan_hash()`, one reviewer used to satisfy it."""
    plan = ENGINE.classify_rollback(reply_request(), now=NOW)
    assert plan.window == "escalated" and plan.authorizable
    assert {s.source for s in plan.authorization.slots} == {"standard", "escalation"}
    data = plan.model_dump(mode="json")
    data["window"] = "standard"
    data["reversible_until"] = "2099-01-01T00:00:00Z"
    data["authorization"]["slots"] = [s for s in data["authorization"]["slots"] if s["source"] == "standard"]
    data["plan_hash"] = plan_hash(data)
    v = ENGINE.authorize_rollback(data, [approve(data, "alice", ["reviewer"])], now=NOW)
    assert not v.satisfied
    # the slots are the policy's for the window recomputed at now, whatever the plan says
    assert [(s.id, s.source, s.missing) for s in v.open_slots] == [
        (s.id, "escalation", 1) for s in plan.authorization.slots if s.source == "escalation"]
    assert any("`escalated`" in e.message and "classify the rollback again" in e.message for e in v.errors)
    # the genuine plan, with both people: satisfied
    both = [approve(plan, "alice", ["reviewer"]), approve(plan, "sam", ["support_manager"])]
    assert ENGINE.authorize_rollback(plan, both, now=NOW).satisfied


def test_item2_the_window_is_recomputed_at_authorization_time():
    """A plan classified inside the window and authorized after it needs the escalation."""
    plan = ENGINE.classify_rollback(reply_request(executed_at="2026-11-24T09:59:30Z"), now=NOW)
    assert plan.window == "standard"
    one = [approve(plan, "alice", ["reviewer"])]
    assert ENGINE.authorize_rollback(plan, one, now=NOW).satisfied
    v = ENGINE.authorize_rollback(plan, one, now="2026-11-24T10:05:00Z")
    assert not v.satisfied and any(s.source == "escalation" for s in v.slots)


def test_item2_a_rehashed_plan_cannot_move_executed_at_out_of_the_policy_or_drop_its_type():
    plan = ENGINE.classify_rollback(reply_request(), now=NOW)
    for edit in ({"original_type": "log_crm_activity"}, {"original_type": "issue_refund"},
                 {"original_type": None}, {"window_seconds": 10 ** 9}):
        data = {**plan.model_dump(mode="json"), **edit, "window": "standard"}
        data["authorization"] = {**data["authorization"], "slots": [
            s for s in data["authorization"]["slots"] if s["source"] == "standard"]}
        data["plan_hash"] = plan_hash(data)
        v = ENGINE.authorize_rollback(data, [approve(data, "alice", ["reviewer"])], now=NOW)
        assert not v.satisfied, edit


# ------------------------------------------------------------------ item 10

def test_item10_an_endless_generator_of_approvals_is_read_up_to_the_cap_only():
    plan = ENGINE.classify_rollback(reply_request(executed_at="2026-11-24T09:59:30Z"), now=NOW)
    taken = []

    def endless():
        for i in itertools.count():
            taken.append(i)
            yield {"principal": f"p{i}", "roles": ["reviewer"], "plan_hash": plan.plan_hash}

    v = ENGINE.authorize_rollback(plan, endless(), now=NOW)
    assert not v.satisfied and any(f"more than {MAX_APPROVALS}" in e.message for e in v.errors)
    assert len(taken) == MAX_APPROVALS + 1


def test_item10_two_million_approvals_are_not_all_read():
    plan = ENGINE.classify_rollback(reply_request(executed_at="2026-11-24T09:59:30Z"), now=NOW)
    seen = 0

    class Many:
        def __iter__(self):
            nonlocal seen
            for _ in range(2_000_000):
                seen += 1
                yield {"principal": "x", "roles": [], "plan_hash": plan.plan_hash}

    v = ENGINE.authorize_rollback(plan, Many(), now=NOW)
    assert not v.satisfied and seen == MAX_APPROVALS + 1


# ------------------------------------------------------------------ item 13

@pytest.mark.parametrize("variant", ["Bob", "BOB", "b\u200dob", "\u1d2e\u1d3c\u1d2e", "ｂｏｂ", "bo\u034fb\u200e"])
def test_item13_the_reviewer_cannot_approve_their_own_rollback_under_another_spelling(variant):
    plan = ENGINE.classify_rollback(reply_request(executed_at="2026-11-24T09:59:30Z"), now=NOW)
    v = ENGINE.authorize_rollback(plan, [approve(plan, variant, ["reviewer"])], now=NOW)
    assert not v.satisfied and [(r.principal, r.code) for r in v.rejected] == [(variant, "alias")]


def test_item13_one_person_does_not_count_twice_under_two_spellings():
    plan = ENGINE.classify_rollback(reply_request(), now=NOW)  # escalated: reviewer + support_manager
    v = ENGINE.authorize_rollback(plan, [approve(plan, "alice", ["reviewer"]),
                                         approve(plan, "ALICE", ["support_manager"])], now=NOW)
    assert not v.satisfied and v.accepted == ("ALICE",) and {r.code for r in v.rejected} == {"alias"}


# ------------------------------------------------------------------ item 17 and the eval/explain question

def ask(question, cmd="eval"):
    r = CliRunner().invoke(main, [cmd, str(ROOT / "policies"), "--input", "-"], input=json.dumps(question))
    assert r.exit_code == 0, r.output
    return r.output


def test_item17_authorize_with_request_says_why_it_cannot_succeed_and_how():
    """Approvals given with `request` cannot name the hash of a plan classified in the same
    call: the verdict says so and names the two-step flow (docs/approvals.md)."""
    req = reply_request(executed_at="2026-11-24T09:59:30Z")
    out = json.loads(ask({"question": "authorize", "now": NOW, "request": req,
                          "approvals": [{"principal": "alice", "roles": ["reviewer"]}]}))
    assert out["satisfied"] is False
    assert any("two steps" in e["message"] and "question `rollback`" in e["message"] and "docs/approvals.md"
               in e["message"] for e in out["errors"])
    # the two-step flow works
    plan = json.loads(ask({"question": "rollback", "now": NOW, "request": req}))
    out = json.loads(ask({"question": "authorize", "now": NOW, "plan": plan,
                          "approvals": [approve(plan, "alice", ["reviewer"])]}))
    assert out["satisfied"] is True and out["errors"] == []


REFUND = {"workflow": "refunds", "type": "issue_refund", "id": "rf-1", "order_id": "o-1", "amount": 2000.0,
          "currency": "EUR", "reason": "damaged_item", "payee_account_id": "acct-9",
          "order": {"total": 5000.0, "refunded_amount": 0.0, "customer_account_id": "acct-9"}}


def test_eval_authorize_a_gate_decision_in_two_steps():
    decision = json.loads(ask({"question": "gate", "now": NOW, "action": REFUND}))
    assert decision["effect"] == "require_approval" and decision["action_digest"].startswith("sha256:")
    people = [("sam", ["support_manager"]), ("fiona", ["finance_approver"]), ("fred", ["finance_approver"])]
    apps = [{"principal": p, "roles": r, "action_digest": decision["action_digest"]} for p, r in people]
    out = json.loads(ask({"question": "authorize", "now": NOW, "decision": decision, "approvals": apps[:1]}))
    assert out["satisfied"] is False and out["action_digest"] == decision["action_digest"]
    out = json.loads(ask({"question": "authorize", "now": NOW, "decision": decision, "approvals": apps}))
    assert out["satisfied"] is True and out["accepted"] == ["fiona", "fred", "sam"]
    text = ask({"question": "authorize", "now": NOW, "decision": decision, "approvals": apps[:1]}, "explain")
    assert f"authorization of action {decision['action_digest']}" in text and "NOT satisfied" in text
    assert f"action digest: {decision['action_digest']}" in ask({"question": "gate", "now": NOW, "action": REFUND},
                                                                 "explain")


def test_eval_authorize_needs_exactly_one_subject():
    r = CliRunner().invoke(main, ["eval", str(ROOT / "policies"), "--input", "-"],
                           input=json.dumps({"question": "authorize", "decision": {}, "plan": {}, "approvals": []}))
    assert r.exit_code == 2 and "exactly one of `plan`" in r.output


SUITE = """suite: refund approvals
policies: [{policies}]
now: "2026-11-24T10:00:00Z"
inputs:
  actions:
    big: {action}
  principals:
    sam: {{roles: [support_manager]}}
    fiona: {{roles: [finance_approver]}}
    fred: {{roles: [finance_approver]}}
cases:
  - name: a large refund needs three people
    authorize:
      gate: {{action: big}}
    table:
      - {{name: one manager, approvals: [sam],
          expect: {{satisfied: false, open_slots: [finance_approver, support_manager]}}}}
      - {{name: three, approvals: [sam, fiona, fred], expect: {{satisfied: true, filled: [fiona, fred, sam]}}}}
      - {{name: another digest, approvals: [sam, fiona, {{principal: fred, action_digest: "sha256:00"}}],
          expect: {{satisfied: false, rejected: [fred]}}}}
"""


def test_a_fixture_suite_asks_authorize_for_a_gate_decision(tmp_path):
    (tmp_path / "refunds.policy-test.yaml").write_text(
        SUITE.format(policies=ROOT / "policies", action=json.dumps(REFUND))
    )
    r = CliRunner().invoke(main, ["test", str(tmp_path)])
    assert r.exit_code == 0 and r.output.strip().endswith("3 passed, 0 failed"), r.output
    # a typo in the gate's action is a located error, before anything runs
    (tmp_path / "refunds.policy-test.yaml").write_text(
        SUITE.format(policies=ROOT / "policies", action=json.dumps({**REFUND, "type": "issue_refundd"}))
    )
    r = CliRunner().invoke(main, ["test", str(tmp_path)])
    assert r.exit_code != 0 and "unknown action type `issue_refundd`" in r.output and "did you mean" in r.output
