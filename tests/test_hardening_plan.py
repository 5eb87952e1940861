"""Issue 12, the rollback plan's share: ways a plan could widen what the policy grants.

- item 3: the original's type is looked up in the request's workflow only;
- item 5: `distinct from` a list excludes every string of it, and a reference that
  cannot be resolved makes the plan not authorizable;
- item 11: an `executed_at` whose window ends after year 9999 is a located input error,
  and the plan keeps its workflow, scenario and route;
- item 14: each cascade step has its own feasibility (class, prerequisites over its own
  record, its own window); the plan names the manual, blocked and out-of-window steps;
- item 15: decisions (on every path) and plans name the workflow's owners.

Each test failed before the change it holds.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

import policy_engine
from policy_engine.engine import Engine, plan_hash
from policy_engine.language.loader import load_text
from policy_engine.models import Decision, RollbackPlan

POLICIES = Path(__file__).resolve().parent.parent / "policies"
NOW = "2026-11-24T10:00:00Z"
LOCATION = re.compile(r"^.+\.policy:\d+:\d+$")
SUPPORT_OWNERS = {"business": "Support operations lead", "technical": "Support platform team"}


@pytest.fixture(scope="module")
def engine() -> Engine:
    return policy_engine.load(str(POLICIES))


def reply_request(scenario="reviewer_error", **original):
    rec = {"id": "m1", "type": "send_customer_reply", "executed_at": "2026-11-24T09:59:30Z", "reviewer": "bob",
           "recipient_opened": False, "channel": "email"}
    rec.update(original)
    return {"workflow": "support-replies", "scenario": scenario, "requested_by": "carol", "original": rec}


def approve(plan, principal, *roles):
    return {"principal": principal, "roles": list(roles), "plan_hash": plan.plan_hash,
            "policy_hash": plan.policy_hash, "at": NOW}


def located(plan, needle):
    """The plan's errors whose message holds `needle`."""
    return [e for e in plan.errors if needle in e.message]


# ----------------------------------------------------------------------------- item 3


def test_a_refund_filed_under_support_replies_is_not_authorizable(engine):
    # Executed 40 days ago: under support-replies' reviewer_error (escalated) one reviewer and
    # one support manager would have sufficed; refunds' escalation needs an executive.
    req = {"workflow": "support-replies", "scenario": "reviewer_error", "requested_by": "carol",
           "original": {"id": "rf1", "type": "issue_refund", "executed_at": "2026-10-15T09:00:00Z",
                        "reviewer": "bob"}}
    plan = engine.classify_rollback(req, now=NOW)
    assert not plan.authorizable
    errs = located(plan, "issue_refund")
    assert errs and "not declared in workflow `support-replies`" in errs[0].message
    assert "`refunds`" in errs[0].message and LOCATION.match(errs[0].location)
    assert plan.workflow == "support-replies" and plan.original_type == "issue_refund"
    assert plan.route != "support_escalations"  # support's escalation does not apply to a refund
    approvals = [approve(plan, "sam", "reviewer"), approve(plan, "mia", "support_manager")]
    assert not engine.authorize_rollback(plan, approvals, now=NOW).satisfied
    # filed under its own workflow, the same refund gets refunds' requirement
    right = engine.classify_rollback({**req, "workflow": "refunds"}, now=NOW)
    assert right.route == "refund_escalations"
    assert [s.roles for s in right.authorization.slots][-1] == ("executive",)


@pytest.mark.parametrize("otype", [None, 7, "no_such_type"])
def test_an_original_without_a_type_of_the_workflow_is_not_authorizable(engine, otype):
    original = {"type": otype} if otype is not None else {}
    req = reply_request(**original)
    if otype is None:
        del req["original"]["type"]
    plan = engine.classify_rollback(req, now=NOW)
    assert not plan.authorizable and plan.feasibility.status == "manual"
    assert any("not authorizable" in e.message for e in plan.errors)


def test_a_cascade_step_of_another_workflows_type_is_manual(shop):
    # restock is declared in warehouse, not in shop (charge's side_effects name it): its step
    # gets no method, not warehouse's
    plan = shop.classify_rollback(shop_request(restock()), now=SHOP_NOW)
    step = plan.cascade.steps[1]
    assert step.record_id == "rs1" and step.type == "restock"
    assert step.manual and step.status == "manual" and step.method is None
    assert "not declared in workflow `shop`" in step.reason
    assert plan.feasibility.manual_steps == ("rs1",) and plan.cascade.undeclared == ()


def test_a_downstream_record_of_another_workflows_type_no_side_effect_declares_is_not_planned(engine):
    # issue_refund is declared in refunds, and send_customer_reply's side_effects do not name
    # it: it is no step (so never gets refunds' method), it is listed undeclared, the plan partial
    req = reply_request(downstream=[{"id": "rf1", "type": "issue_refund", "executed_at": "2026-11-24T09:59:31Z"}])
    plan = engine.classify_rollback(req, now=NOW)
    assert [s.record_id for s in plan.cascade.steps] == ["m1"]
    assert [(u.record_id, u.type, u.parent, u.parent_type) for u in plan.cascade.undeclared] == [
        ("rf1", "issue_refund", "m1", "send_customer_reply")]
    assert plan.feasibility.status == "partial" and plan.cascade.partial
    assert plan.feasibility.manual_steps == ()


# ----------------------------------------------------------------------------- item 5


def test_distinct_from_a_list_with_null_excludes_its_strings_and_is_not_authorizable(engine):
    plan = engine.classify_rollback(reply_request(reviewer=["bob", None]), now=NOW)
    assert "bob" in plan.authorization.excluded_principals
    assert not plan.authorizable
    errs = located(plan, "original.reviewer[1]")
    assert errs and "null" in errs[0].message and LOCATION.match(errs[0].location)
    v = engine.authorize_rollback(plan, [approve(plan, "bob", "reviewer")], now=NOW)
    assert not v.satisfied and "bob" not in v.accepted


def test_distinct_from_a_list_of_principals_excludes_each(engine):
    plan = engine.classify_rollback(reply_request(reviewer=["bob", "ann", "bob"]), now=NOW)
    assert plan.authorizable, plan.errors
    assert plan.authorization.excluded_principals == ("ann", "bob", "carol")
    for who in ("ann", "bob"):
        v = engine.authorize_rollback(plan, [approve(plan, who, "reviewer")], now=NOW)
        assert not v.satisfied and [r.code for r in v.rejected] == ["distinct_from"]
    assert engine.authorize_rollback(plan, [approve(plan, "sam", "reviewer")], now=NOW).satisfied


@pytest.mark.parametrize("reviewer", [None, "", [], 5, {"id": "bob"}, ["bob", 5], ["bob", ""], True])
def test_an_unresolvable_distinct_from_reference_is_not_authorizable(engine, reviewer):
    plan = engine.classify_rollback(reply_request(reviewer=reviewer), now=NOW)
    assert not plan.authorizable
    errs = located(plan, "`distinct from original.reviewer`")
    assert errs and errs[0].kind == "input" and LOCATION.match(errs[0].location)
    assert any(d.ref == "original.reviewer" and d.principal is None for d in plan.authorization.distinct_from)
    assert not engine.authorize_rollback(plan, [approve(plan, "sam", "reviewer")], now=NOW).satisfied


def test_a_missing_distinct_from_reference_is_not_authorizable(engine):
    req = reply_request()
    del req["original"]["reviewer"]
    plan = engine.classify_rollback(req, now=NOW)
    assert not plan.authorizable and located(plan, "gives no `original.reviewer`")


# ----------------------------------------------------------------------------- item 11


@pytest.mark.parametrize("executed_at", ["9999-12-31T23:59:30Z", "9999-12-31T23:59:59.999999Z",
                                         datetime(9999, 12, 31, 23, 59, 30, tzinfo=UTC)])
def test_a_window_past_year_9999_is_a_located_error_and_the_plan_keeps_its_identity(engine, executed_at):
    plan = engine.classify_rollback(reply_request(executed_at=executed_at), now=NOW)
    assert (plan.workflow, plan.scenario, plan.original_id) == ("support-replies", "reviewer_error", "m1")
    assert plan.route == "support_escalations"  # the window is treated as closed: the escalated path
    assert plan.window == "escalated" and plan.reversible_until is None
    assert not plan.authorizable
    errs = located(plan, "`original.executed_at`")
    assert errs and "9999-12-31T23:59:59Z" in errs[0].message and LOCATION.match(errs[0].location)
    assert not any("internal error" in e.message for e in plan.errors)
    assert plan.plan_hash == plan_hash(plan)


def test_an_executed_at_offset_out_of_range_keeps_the_identity(engine):
    # a datetime whose UTC conversion falls before year 1
    ex = datetime(1, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=14)))
    plan = engine.classify_rollback(reply_request(executed_at=ex), now=NOW)
    assert (plan.workflow, plan.scenario, plan.route) == ("support-replies", "reviewer_error", "support_escalations")
    assert not any("internal error" in e.message for e in plan.errors)
    assert located(plan, "`original.executed_at`")


def test_a_cascade_step_past_year_9999_is_out_of_its_window_not_an_internal_error(shop):
    # send_receipt (a side effect charge declares) has a 60 s window: it would end in year 10000
    plan = shop.classify_rollback(shop_request(receipt("c1", executed_at="9999-12-31T23:59:30Z")), now=SHOP_NOW)
    assert plan.authorizable, plan.errors
    step = plan.cascade.steps[1]
    assert step.record_id == "c1" and step.status == "out_of_window" and step.reversible_until is None
    assert plan.feasibility.out_of_window_steps == ("c1",) and plan.cascade.undeclared == ()
    assert any("9999-12-31T23:59:59Z" in r for r in step.reasons)


# ----------------------------------------------------------------------------- item 14

CASCADE_POLICY = """
roles [reviewer]
workflow "shop" {
  version "1.0"
  owners { business "Shop owner" technical "Shop platform" }
  default deny
  action charge {
    system "pay"
    reversible full via "pay.refund" within 30d
    prerequisite not_disputed `!original.disputed`
    side_effects [send_receipt, print_label, restock]
    allow when `false`
  }
  action send_receipt {
    system "mail"
    reversible partial via "mail.recall" within 60s
    prerequisite unopened `!original.opened`
    allow when `false`
  }
  action print_label {
    system "post"
    reversible irreversible
    side_effects [send_receipt]
    allow when `false`
  }
  rollback reviewer_error {
    route verification
    authorize 1 reviewer
    cascade depth 3
  }
}
workflow "warehouse" {
  version "1.0"
  owners { business "Warehouse lead" technical "Shop platform" }
  default deny
  action restock {
    system "stock"
    reversible full via "stock.unreserve" within 30d
    allow when `false`
  }
}
"""
SHOP_NOW = "2026-07-02T10:00:00Z"


@pytest.fixture(scope="module")
def shop() -> Engine:
    r = load_text(CASCADE_POLICY, "shop.policy")
    assert r.policy_set is not None, [d.message for d in r.errors]
    return Engine.from_load_result(r)


def shop_request(*downstream, **root):
    rec = {"id": "ch1", "type": "charge", "executed_at": "2026-07-01T10:00:00Z", "disputed": False,
           "downstream": list(downstream)}
    rec.update(root)
    return {"workflow": "shop", "scenario": "reviewer_error", "requested_by": "carol", "original": rec}


def receipt(rid="rc1", executed_at="2026-07-02T09:59:30Z", opened=False, **extra):
    return {"id": rid, "type": "send_receipt", "executed_at": executed_at, "opened": opened, **extra}


def restock(rid="rs1", executed_at="2026-07-02T09:59:30Z"):
    """A record of warehouse's type, a side effect charge declares."""
    return {"id": rid, "type": "restock", "executed_at": executed_at}


def test_every_step_feasible_is_feasible(shop):
    plan = shop.classify_rollback(shop_request(receipt()), now=SHOP_NOW)
    assert plan.feasibility.status == "feasible", plan.feasibility
    step = plan.cascade.steps[1]
    assert (step.status, step.within_window, step.reversible_until) == ("feasible", True, "2026-07-02T10:00:30Z")
    assert [p.name for p in step.prerequisites] == ["unopened"] and step.unmet == ()


def test_a_step_out_of_its_own_window_makes_the_plan_partial(shop):
    # the original (30d) is well inside its window; the receipt's 60s recall window closed
    plan = shop.classify_rollback(shop_request(receipt(executed_at="2026-07-02T09:58:00Z")), now=SHOP_NOW)
    assert plan.window == "standard"
    step = plan.cascade.steps[1]
    assert step.status == "out_of_window" and step.within_window is False
    assert step.executed_at == "2026-07-02T09:58:00Z" and step.reversible_until == "2026-07-02T09:59:00Z"
    f = plan.feasibility
    assert f.status == "partial" and f.out_of_window_steps == ("rc1",)
    assert f.manual_steps == () and f.blocked_steps == ()


@pytest.mark.parametrize("executed_at", [None, "yesterday"])
def test_a_step_without_a_readable_executed_at_is_out_of_its_window(shop, executed_at):
    rec = receipt(executed_at=executed_at)
    if executed_at is None:
        del rec["executed_at"]
    plan = shop.classify_rollback(shop_request(rec), now=SHOP_NOW)
    assert plan.cascade.steps[1].status == "out_of_window"
    assert plan.feasibility.status == "partial"


def test_a_steps_prerequisites_are_evaluated_over_its_own_record(shop):
    # the original is not disputed and its receipt was opened: only the receipt is blocked
    plan = shop.classify_rollback(shop_request(receipt(opened=True)), now=SHOP_NOW)
    root, step = plan.cascade.steps
    assert root.status == "feasible" and root.unmet == ()
    assert step.status == "blocked" and step.unmet == ("unopened",)
    assert plan.feasibility.status == "partial" and plan.feasibility.blocked_steps == ("rc1",)
    assert plan.feasibility.unmet == ()  # the original's own prerequisites are met
    # ... and the original's prerequisite is not read from the receipt: a disputed receipt
    # does not block the charge, a disputed charge blocks the whole plan
    plan = shop.classify_rollback(shop_request(receipt(disputed=True)), now=SHOP_NOW)
    assert plan.feasibility.status == "feasible"
    plan = shop.classify_rollback(shop_request(receipt(), disputed=True), now=SHOP_NOW)
    assert plan.feasibility.status == "blocked" and plan.feasibility.unmet == ("not_disputed",)
    assert plan.cascade.steps[1].status == "feasible"


def test_a_step_missing_a_field_its_prerequisite_reads_is_blocked_with_the_error(shop):
    rec = receipt()
    del rec["opened"]
    plan = shop.classify_rollback(shop_request(rec), now=SHOP_NOW)
    step = plan.cascade.steps[1]
    assert step.status == "blocked" and step.prerequisites[0].reason.startswith("error: ")
    assert plan.feasibility.status == "partial"


def test_manual_blocked_and_out_of_window_steps_are_each_named(shop):
    label = {"id": "lb1", "type": "print_label"}
    unknown = {"id": "x1", "type": "no_such_type"}  # no side_effects can declare it: not a step
    plan = shop.classify_rollback(shop_request(receipt("late", executed_at="2026-07-01T10:00:00Z"),
                                               receipt("opened", opened=True), label, restock(), unknown),
                                  now=SHOP_NOW)
    by_id = {s.record_id: s.status for s in plan.cascade.steps}
    assert by_id == {"ch1": "feasible", "late": "out_of_window", "opened": "blocked", "lb1": "manual",
                     "rs1": "manual"}
    f = plan.feasibility
    assert (f.status, f.manual_steps, f.blocked_steps, f.out_of_window_steps) == (
        "partial", ("lb1", "rs1"), ("opened",), ("late",))
    assert [(u.record_id, u.type, u.parent) for u in plan.cascade.undeclared] == [("x1", "no_such_type", "ch1")]
    assert len(f.reasons) == 4  # manual, blocked, out of window, and the undeclared record
    assert "`x1` (`no_such_type`" in f.reasons[-1]
    # a step both blocked and out of its window is blocked, with both reasons
    plan = shop.classify_rollback(shop_request(receipt(opened=True, executed_at="2026-07-01T10:00:00Z")),
                                  now=SHOP_NOW)
    step = plan.cascade.steps[1]
    assert step.status == "blocked" and step.within_window is False and len(step.reasons) == 2


def test_the_original_out_of_its_window_is_named_and_the_plan_partial(shop):
    plan = shop.classify_rollback(shop_request(executed_at="2026-05-01T10:00:00Z"), now=SHOP_NOW)
    assert plan.window == "escalated"
    assert plan.cascade.steps[0].status == "out_of_window"
    assert plan.feasibility.status == "partial" and plan.feasibility.out_of_window_steps == ("ch1",)


def test_an_irreversible_original_stays_manual(shop):
    plan = shop.classify_rollback(shop_request(receipt(opened=True), type="print_label"), now=SHOP_NOW)
    assert plan.feasibility.status == "manual"
    assert plan.feasibility.manual_steps == ("ch1",) and plan.feasibility.blocked_steps == ("rc1",)


def test_step_feasibility_is_deterministic_and_bound_by_the_plan_hash(shop):
    req = shop_request(receipt(executed_at="2026-07-02T09:58:00Z"), receipt("rc2"))
    a = shop.classify_rollback(req, now=SHOP_NOW)
    b = shop.classify_rollback(json.loads(json.dumps(req)), now=SHOP_NOW)
    assert a.model_dump(mode="json") == b.model_dump(mode="json")
    assert a.plan_hash == plan_hash(a)
    # the same plan a second later: the receipt rc2 left its window, the hash changes
    c = shop.classify_rollback(req, now="2026-07-02T10:00:31Z")
    assert c.cascade.steps[2].status == "out_of_window" and c.plan_hash != a.plan_hash
    # a step's feasibility edited in the plan breaks its hash: authorization refuses it
    data = a.model_dump(mode="json")
    data["cascade"]["steps"][1]["status"] = "feasible"
    edited = RollbackPlan.model_validate(data)
    assert plan_hash(edited) != a.plan_hash
    v = shop.authorize_rollback(edited, [approve(a, "sam", "reviewer")], now=SHOP_NOW)
    assert not v.satisfied


def test_shipped_refund_cascade_blocks_spent_points(engine):
    rec = {"id": "rf1", "type": "issue_refund", "executed_at": "2026-11-10T09:00:00Z", "reviewer": "bob",
           "amount": 180.0, "customer": {"account_status": "open"}, "chargeback_opened": False,
           "downstream": [{"id": "pts", "type": "award_loyalty_points", "executed_at": "2026-11-10T09:00:01Z",
                           "points_spent": 400}]}
    plan = engine.classify_rollback({"workflow": "refunds", "scenario": "customer_request", "requested_by": "carol",
                                     "original": rec}, now=NOW)
    assert plan.cascade.steps[1].unmet == ("points_unspent",)
    assert plan.feasibility.status == "partial" and plan.feasibility.blocked_steps == ("pts",)


# ----------------------------------------------------------------------------- item 15


def gate_action(**extra):
    return {"workflow": "support-replies", "type": "send_customer_reply", "id": "a1", "ticket_id": "T-1",
            "recipient": {"domain": "customer.example"}, "confidence": 0.95,
            "claims": [{"kind": "timeline", "sourced": True}], "customer": {"tier": "standard"}, **extra}


def test_decisions_name_the_workflow_owners_on_every_path(engine):
    now = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    dumps = []
    # the full path, then the fused gate once built, then its finished templates
    fresh = policy_engine.load(str(POLICIES))
    for _ in range(8):
        d = fresh.evaluate(gate_action(), now=now)
        dumps.append(d.model_dump(mode="json"))
        d = fresh.evaluate(gate_action(), workflow_state={"status": "running"}, now=now)
        dumps.append(d.model_dump(mode="json"))
        d = fresh.evaluate(gate_action(), now=NOW)
        dumps.append(d.model_dump(mode="json"))
    assert dumps[0]["owners"] == SUPPORT_OWNERS
    assert all(x == dumps[0] for x in dumps)
    assert fresh.accelerator.gate("support-replies", "send_customer_reply").fn is not None  # the fast lane ran


@pytest.mark.parametrize("call, owners", [
    (dict(action=gate_action(), workflow_state={"status": "stopped", "stopped_by": "unsupported_promise"}),
     SUPPORT_OWNERS),  # stopped
    (dict(action=gate_action(type="delete_ticket")), SUPPORT_OWNERS),  # undeclared type
    (dict(action=gate_action(confidence=float("nan"))), SUPPORT_OWNERS),  # bad input, known workflow
    (dict(action=gate_action(), workflow_state={"status": "paused"}), SUPPORT_OWNERS),
    (dict(action=gate_action(workflow="nobody")), None),  # undeclared workflow: nobody to name
])
def test_every_kind_of_decision_names_the_owners_it_knows(engine, call, owners):
    d = engine.evaluate(now=NOW, **call)
    got = d.model_dump(mode="json")["owners"]
    assert got == owners
    assert Decision.model_validate(d.model_dump(mode="json")).owners == d.owners


def test_owners_differ_per_workflow(engine):
    d = engine.evaluate({"workflow": "refunds", "type": "issue_refund", "amount": 10.0}, now=NOW)
    assert d.owners is not None and d.owners.business and d.owners.model_dump() != SUPPORT_OWNERS


def test_plans_name_the_owners_and_the_hash_covers_them(engine):
    plan = engine.classify_rollback(reply_request(), now=NOW)
    assert plan.authorizable and plan.model_dump(mode="json")["owners"] == SUPPORT_OWNERS
    data = plan.model_dump(mode="json")
    data["owners"] = {"business": "someone else", "technical": "nobody"}
    assert plan_hash(data) != plan.plan_hash
    v = engine.authorize_rollback(data, [approve(plan, "sam", "reviewer")], now=NOW)
    assert not v.satisfied
    assert engine.classify_rollback({"workflow": "nobody"}, now=NOW).owners is None
