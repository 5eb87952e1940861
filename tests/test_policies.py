"""The shipped policy library (policies/) against the rollback worksheet, end to end.

Each of the worksheet's five rows (plus the refund cascade of the design) is checked
through the public Python API: the stop trigger fires on a realistic bad action and
stays quiet on a good one, the trigger names its owner, systems, receipt, rollback,
notifications and re-enable criteria, and every workflow's five rollback scenarios
route to the right queue and require the right roles.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import policy_engine
from policy_engine.language.loader import load_paths

POLICIES = Path(__file__).resolve().parent.parent / "policies"
NOW = "2026-11-24T10:00:00Z"


@pytest.fixture(scope="module")
def engine():
    return policy_engine.load(str(POLICIES))


def test_library_checks_clean_in_strict_mode() -> None:
    result = load_paths([str(POLICIES)])
    assert not result.errors
    assert not result.warnings, [d.message for d in result.warnings]
    names = {w.name for w in result.policy_set.workflows}
    assert names == {"support-replies", "crm-updates", "cms-publishing", "access-credentials",
                     "document-extraction", "refunds"}


# ----------------------------------------------------------------------------- worksheet rows

GOOD_REPLY = {
    "workflow": "support-replies", "type": "send_customer_reply", "id": "r-1", "ticket_id": "T-1",
    "recipient": {"domain": "customer.example"}, "customer": {"tier": "standard"}, "confidence": 0.97,
    "claims": [{"kind": "timeline", "text": "fix ships in 2.4.1", "sourced": True, "source": "release-plan"}],
}
GOOD_CRM = {
    "workflow": "crm-updates", "type": "update_crm_field", "record_id": "opp-1", "account_id": "acc-1",
    "field": "amount", "before_value": 120000, "after_value": 95000, "records_affected": 1, "run_id": "run-1",
    "source": {"system": "contract_system", "record_id": "c-1", "account_id": "acc-1",
               "fetched_at": "2026-11-24T09:00:00Z"},
}
GOOD_PAGE = {
    "workflow": "cms-publishing", "type": "publish_page_copy", "target": {"site": "www.stopline.example"},
    "change_kind": "new_section",
    "claims": [{"text": "Used by 400 teams", "topic": "customers", "source_url": "https://x", "verified": True}],
}
GOOD_GRANT = {
    "workflow": "access-credentials", "type": "grant_app_role", "subject": {"email": "jo@stopline.example"},
    "role": "viewer", "expires_in_hours": 72, "access_request": {"status": "approved", "role": "viewer"},
}
GOOD_WRITE = {
    "workflow": "document-extraction", "type": "write_extracted_field", "source_document_id": "doc-1",
    "field": "invoice_total", "extracted_value": "1240.50", "confidence": 0.98, "reviewed": False,
    "validation": {"status": "passed"},
}
GOOD_REFUND = {
    "workflow": "refunds", "type": "issue_refund", "amount": 80.0, "reason": "damaged_item",
    "payee_account_id": "cust-1", "order": {"total": 240.0, "refunded_amount": 0.0, "customer_account_id": "cust-1"},
}


def merged(base: dict, **changes) -> dict:
    out = dict(base)
    for k, v in changes.items():
        out[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


ROWS = [
    pytest.param(
        GOOD_REPLY,
        merged(GOOD_REPLY, claims=[{"kind": "timeline", "text": "fix ships Friday", "sourced": False}]),
        "unsupported_promise", "Support operations lead",
        {"helpdesk", "email", "crm_activity"},
        {"final_message", "reviewer_decision", "policy_rule", "source_excerpts"},
        {"customer", "account_owner", "support_manager"},
        {"claim_sources_visible", "blocked_promises_configured"},
        id="customer-reply-unsupported-promise"),
    pytest.param(
        GOOD_CRM,
        merged(GOOD_CRM, source={"fetched_at": "2026-11-01T09:00:00Z"}),
        "stale_or_wrong_source", "Revenue operations owner",
        {"crm_opportunity", "activity_log", "pipeline_dashboard"},
        {"before_value", "after_value", "source_record_id", "run_id"},
        {"account_owner", "revops", "workflow_builder"},
        {"source_freshness_check", "preview_passed_review_samples"},
        id="crm-field-stale-source"),
    pytest.param(
        GOOD_PAGE,
        merged(GOOD_PAGE, claims=[{"text": "99.999% uptime", "topic": "reliability", "source_url": "https://s",
                                   "verified": False}]),
        "inaccurate_public_claim", "Marketing owner",
        {"cms", "published_page", "search_snippets", "social_snippets"},
        {"published_copy", "source_evidence", "approver", "publish_target"},
        {"marketing", "sales_owner", "compliance"},
        {"publish_requires_approval", "source_evidence_visible"},
        id="cms-inaccurate-claim"),
    pytest.param(
        GOOD_GRANT,
        merged(GOOD_GRANT, role="admin", access_request={"role": "admin"}),
        "access_changed_outside_policy", "Security owner",
        {"identity_provider", "app_role", "integration_credential"},
        {"requested_change", "approver", "destination_system", "timestamp"},
        {"security_owner", "business_owner", "affected_user"},
        {"least_privilege_rule_tested", "escalation_path_tested"},
        id="access-outside-policy"),
    pytest.param(
        GOOD_WRITE,
        merged(GOOD_WRITE, validation={"status": "failed"}),
        "bad_extraction_written", "Operations owner",
        {"database", "admin_tool", "source_document_store"},
        {"source_document_id", "extracted_field", "reviewer_edit", "final_action"},
        {"ops_manager", "record_owner", "client_contact"},
        {"low_confidence_routed_to_review", "misses_joined_eval_set"},
        id="extraction-bad-write"),
    pytest.param(
        GOOD_REFUND,
        merged(GOOD_REFUND, payee_account_id="cust-99"),
        "refund_payee_mismatch", "Customer service director",
        {"payments", "loyalty", "benefits"},
        {"order_id", "amount", "payee_account_id", "approver"},
        {"finance", "support_manager", "security_owner"},
        {"payee_check_enforced", "related_refunds_reviewed"},
        id="refund-payee-mismatch"),
]


@pytest.mark.parametrize("good,bad,trigger,owner,affects,receipt,notify,criteria", ROWS)
def test_worksheet_row_stop_trigger(engine, good, bad, trigger, owner, affects, receipt, notify, criteria) -> None:
    quiet = engine.evaluate(good, now=NOW)
    assert quiet.effect != "stop", quiet.reason
    assert not quiet.errors

    fired = engine.evaluate(bad, now=NOW)
    assert fired.effect == "stop"
    assert fired.deciding.kind == "stop" and fired.deciding.name == trigger
    s = fired.stop
    assert s.trigger == trigger
    assert s.owner == owner
    assert set(s.affects) == affects
    assert set(s.receipt) == receipt
    assert set(s.notify) == notify
    assert set(s.resume_criteria) == criteria
    assert s.rollback

    # once stopped, every action of the workflow gets `stop` until a resume decision
    state = {"status": "stopped", "stopped_by": trigger, "stopped_at": NOW}
    held = engine.evaluate(good, workflow_state=state, now=NOW)
    assert held.effect == "stop" and held.deciding.kind == "stopped"

    # resume is refused on empty evidence and names every unmet criterion
    blocked = engine.may_resume(good["workflow"], trigger, {}, now=NOW)
    assert not blocked.allowed
    assert set(blocked.unmet) == criteria


RESUME_EVIDENCE = {
    ("support-replies", "unsupported_promise"): {
        "reviewer_screen": {"shows_claim_sources": True},
        "blocked_promises": ["legal_advice", "guaranteed_outcome", "compensation_offer"]},
    ("crm-updates", "stale_or_wrong_source"): {
        "source_freshness_check": {"enabled": True, "max_age": "24h"},
        "preview_reviews": [{"passed": True}, {"passed": True}]},
    ("cms-publishing", "inaccurate_public_claim"): {
        "publish_queue": {"mode": "approval"}, "approval_screen": {"shows_source_evidence": True}},
    ("access-credentials", "access_changed_outside_policy"): {
        "least_privilege_test": {"passed": True, "cases": 3},
        "escalation_test": {"passed": True, "reached": "security_owner"}},
    ("document-extraction", "bad_extraction_written"): {
        "review_routing": {"enabled": True, "threshold": 0.95},
        "misses": ["doc-1"], "eval_set_case_ids": ["doc-1", "doc-2"]},
    ("refunds", "refund_payee_mismatch"): {
        "payee_check": {"enabled": True, "tested": True}, "related_refunds": [{"reviewed": True}]},
}


@pytest.mark.parametrize("workflow,trigger", sorted(RESUME_EVIDENCE))
def test_resume_when_every_criterion_holds(engine, workflow, trigger) -> None:
    evidence = RESUME_EVIDENCE[(workflow, trigger)]
    ok = engine.may_resume(workflow, trigger, evidence, now=NOW)
    assert ok.allowed, ok.unmet
    # and not with one criterion's evidence missing
    for key in evidence:
        partial = {k: v for k, v in evidence.items() if k != key}
        assert not engine.may_resume(workflow, trigger, partial, now=NOW).allowed, key


# ----------------------------------------------------------------------------- rollback scenarios

# The primary action of every workflow, executed inside its reversal window.
ORIGINALS = {
    "support-replies": {"id": "rec-1", "type": "send_customer_reply", "executed_at": "2026-11-24T09:59:40Z",
                        "channel": "email", "recipient_opened": False},
    "crm-updates": {"id": "rec-1", "type": "update_crm_field", "executed_at": "2026-11-20T10:00:00Z",
                    "before_value": 1, "edited_since": False},
    "cms-publishing": {"id": "rec-1", "type": "publish_page_copy", "executed_at": "2026-11-20T10:00:00Z",
                       "previous_revision_id": "rev-1", "legal_hold": False},
    "access-credentials": {"id": "rec-1", "type": "grant_app_role", "executed_at": "2026-11-20T10:00:00Z",
                           "subject": {"deprovisioned": False}},
    "document-extraction": {"id": "rec-1", "type": "write_extracted_field", "executed_at": "2026-11-20T10:00:00Z",
                            "previous_value": "1", "record_locked": False},
    "refunds": {"id": "rec-1", "type": "issue_refund", "executed_at": "2026-11-20T10:00:00Z",
                "customer": {"account_status": "open"}, "chargeback_opened": False},
}
AFTER_WINDOW = "2027-06-01T10:00:00Z"  # past every workflow's reversal window

# scenario -> (route, standard slots as (count, roles))
SCENARIOS = {
    "reviewer_error": ("verification", [(1, ("reviewer",))]),
    "customer_request": ("customer_service", [(1, ("customer_service",))]),
    "incident": ("incident_response", [(1, ("incident_commander",))]),
    "policy_reversal": ("policy_owner", [(1, ("policy_owner",)), (1, ("legal",))]),
    "regulatory_order": ("legal", [(1, ("legal",)), (1, ("executive",))]),
}


def request(workflow: str, scenario: str, **extra) -> dict:
    original = {**ORIGINALS[workflow], "reviewer": "bob", "requester": "carol", **extra}
    return {"workflow": workflow, "scenario": scenario, "requested_by": "carol", "original": original}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("workflow", sorted(ORIGINALS))
def test_scenario_routes_and_roles(engine, workflow, scenario) -> None:
    route, slots = SCENARIOS[scenario]
    plan = engine.classify_rollback(request(workflow, scenario), now=NOW)
    assert plan.scenario_declared and plan.standard_scenario
    assert plan.route == route
    assert plan.window == "standard"
    assert plan.feasibility.status == "feasible", plan.feasibility
    standard = [(s.count, tuple(s.roles)) for s in plan.authorization.slots if s.source == "standard"]
    assert sorted(standard) == sorted(slots)
    assert plan.notify, "every scenario tells someone"
    if scenario == "reviewer_error":
        refs = {d.ref: d.principal for d in plan.authorization.distinct_from}
        assert refs == {"original.reviewer": "bob", "request.requested_by": "carol"}
    if scenario == "regulatory_order":
        assert "regulator" in plan.notify

    # after the window: escalated, with at least one extra slot or a changed route
    late = engine.classify_rollback(request(workflow, scenario), now=AFTER_WINDOW)
    assert late.window == "escalated"
    assert late.reversible_until is not None
    escalated = [s for s in late.authorization.slots if s.source == "escalation"]
    assert escalated or late.route != route or scenario == "regulatory_order"


def test_original_reviewer_cannot_verify_a_reviewer_error_rollback(engine) -> None:
    plan = engine.classify_rollback(request("support-replies", "reviewer_error"), now=NOW)
    approve = lambda who: {"principal": who, "roles": ["reviewer"], "at": NOW, "plan_hash": plan.plan_hash}  # noqa: E731
    verdict = engine.authorize_rollback(plan, [approve("bob"), approve("carol")], now=NOW)
    assert not verdict.satisfied
    assert {r.principal for r in verdict.rejected} == {"bob", "carol"}
    assert all(r.code == "distinct_from" for r in verdict.rejected)
    verdict = engine.authorize_rollback(plan, [approve("bob"), approve("alice")], now=NOW)
    assert verdict.satisfied and verdict.accepted == ("alice",)


def test_regulatory_order_needs_legal_and_executive(engine) -> None:
    plan = engine.classify_rollback(request("crm-updates", "regulatory_order"), now=NOW)
    legal = {"principal": "lee", "roles": ["legal"], "at": NOW, "plan_hash": plan.plan_hash}
    exec_ = {"principal": "erin", "roles": ["executive"], "at": NOW, "plan_hash": plan.plan_hash}
    assert not engine.authorize_rollback(plan, [legal], now=NOW).satisfied
    assert engine.authorize_rollback(plan, [legal, exec_], now=NOW).satisfied


@pytest.mark.parametrize("workflow,record", [
    ("access-credentials", {"id": "s-1", "type": "share_credential", "executed_at": "2026-11-24T09:00:00Z"}),
    ("access-credentials", {"id": "l-1", "type": "delete_audit_log_entries", "executed_at": "2026-11-24T09:00:00Z"}),
    ("cms-publishing", {"id": "c-1", "type": "request_search_recrawl", "executed_at": "2026-11-24T09:00:00Z"}),
])
def test_irreversible_actions_route_to_manual_handling(engine, workflow, record) -> None:
    plan = engine.classify_rollback({"workflow": workflow, "scenario": "incident", "requested_by": "ingrid",
                                     "original": record}, now=NOW)
    assert plan.feasibility.status == "manual"


def test_unmet_prerequisites_are_listed(engine) -> None:
    plan = engine.classify_rollback(request("support-replies", "customer_request", recipient_opened=True), now=NOW)
    assert plan.feasibility.status == "blocked"
    assert plan.feasibility.unmet == ("not_opened",)


# ----------------------------------------------------------------------------- the refund cascade

def refund_with_cascade(loop: bool = False) -> dict:
    benefits = {"id": "benefits-1", "type": "reevaluate_benefits", "executed_at": "2026-11-20T10:00:03Z"}
    if loop:  # the re-evaluation re-issued the original refund
        benefits = {"id": "refund-1", "type": "issue_refund", "executed_at": "2026-11-20T10:00:00Z"}
    tier = {"id": "tier-1", "type": "upgrade_tier", "executed_at": "2026-11-20T10:00:02Z", "downstream": [benefits]}
    points = {"id": "points-1", "type": "award_loyalty_points", "executed_at": "2026-11-20T10:00:01Z",
              "points_spent": 0, "downstream": [tier]}
    return {**ORIGINALS["refunds"], "id": "refund-1", "reviewer": "bob", "downstream": [points]}


def test_refund_cascade_is_cut_at_the_authorized_depth(engine) -> None:
    plan = engine.classify_rollback({"workflow": "refunds", "scenario": "customer_request", "requested_by": "carol",
                                     "original": refund_with_cascade()}, now=NOW)
    assert plan.route == "customer_service"
    assert plan.cascade.depth_limit == 2
    assert [(s.record_id, s.type, s.depth) for s in plan.cascade.steps] == [
        ("refund-1", "issue_refund", 0),
        ("points-1", "award_loyalty_points", 1),
        ("tier-1", "upgrade_tier", 2),
    ]
    assert [s.method for s in plan.cascade.steps] == [
        "payments.reverse_refund", "loyalty.cancel_points", "loyalty.restore_previous_tier"]
    assert all(s.verify for s in plan.cascade.steps)
    assert [(c.record_id, c.type, c.depth) for c in plan.cascade.checkpoint] == [
        ("benefits-1", "reevaluate_benefits", 3)]
    assert not plan.cascade.partial
    assert plan.reversible_until == "2026-12-20T10:00:00Z"
    assert {c.name for c in plan.compensations} == {"notify_customer_of_reversal"}


def test_refund_cascade_within_incident_depth_has_no_checkpoint(engine) -> None:
    plan = engine.classify_rollback({"workflow": "refunds", "scenario": "incident", "requested_by": "ingrid",
                                     "original": refund_with_cascade()}, now=NOW)
    assert [s.record_id for s in plan.cascade.steps] == ["refund-1", "points-1", "tier-1", "benefits-1"]
    assert plan.cascade.checkpoint == ()


def test_refund_cascade_loop_is_partial(engine) -> None:
    plan = engine.classify_rollback({"workflow": "refunds", "scenario": "incident", "requested_by": "ingrid",
                                     "original": refund_with_cascade(loop=True)}, now=NOW)
    assert plan.cascade.partial
    assert [lp.record_id for lp in plan.cascade.loops] == ["refund-1"]
    assert [s.record_id for s in plan.cascade.steps] == ["refund-1", "points-1", "tier-1"]


def test_refund_reversal_after_30_days_needs_an_executive(engine) -> None:
    plan = engine.classify_rollback({"workflow": "refunds", "scenario": "customer_request", "requested_by": "carol",
                                     "original": refund_with_cascade()}, now="2026-12-21T10:00:00Z")
    assert plan.window == "escalated"
    assert plan.route == "refund_escalations"
    assert ("executive",) in [tuple(s.roles) for s in plan.authorization.slots if s.source == "escalation"]


def test_gate_shows_the_reversal_window_and_its_cost(engine) -> None:
    d = engine.evaluate(GOOD_REFUND, now=NOW)
    assert d.effect == "allow"
    rv = d.reversibility
    assert (rv.klass, rv.method, rv.window, rv.window_seconds) == ("full", "payments.reverse_refund", "30d", 30 * 86400)
    assert rv.reversible_until == "2026-12-24T10:00:00Z"
    late = {c.scenario: c for c in rv.after_window}
    assert "executive" in {r for s in late["customer_request"].slots for r in s.roles}
