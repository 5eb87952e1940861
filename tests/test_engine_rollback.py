"""Rollback plans (classify_rollback) and their authorization (authorize_rollback)."""

from __future__ import annotations

import pytest
from engine_support import NOW, POLICIES, ROOT, WF, engine_from_texts, load_engine, request

from policy_engine.engine import MAX_CASCADE_RECORDS, plan_hash
from policy_engine.models import RollbackPlan

LATE = "2026-07-02T10:05:00Z"  # after the 60s window of send_customer_reply


@pytest.fixture(scope="module")
def engine():
    return load_engine()


@pytest.fixture(scope="module")
def chained():
    """The fixture support workflow with a deeper declared cascade graph: a reply's side effects
    include deleting an account (irreversible), and a CRM activity logs further activities."""
    text = (ROOT / POLICIES / "support.policy").read_text(encoding="utf-8")
    text = text.replace("    side_effects [log_crm_activity]\n    receipt [final_message",
                        "    side_effects [log_crm_activity, delete_account]\n    receipt [final_message", 1)
    text = text.replace('    reversible full via "crm.delete_activity"\n',
                        '    reversible full via "crm.delete_activity"\n    side_effects [log_crm_activity]\n', 1)
    assert "side_effects [log_crm_activity, delete_account]" in text and "side_effects [log_crm_activity]\n" in text
    return engine_from_texts({f"{POLICIES}/support.policy": text})


def approve(plan, principal, *roles, **extra):
    return {"principal": principal, "roles": list(roles), "plan_hash": plan.plan_hash, "at": NOW, **extra}


# ------------------------------------------------------------------ classification

def test_standard_path_inside_window(engine):
    p = engine.classify_rollback(request(), now=NOW)
    assert p.scenario_declared and p.standard_scenario and p.authorizable
    assert p.window == "standard" and p.route == "verification"
    assert p.reversible_until == "2026-07-02T10:00:30Z"
    assert [(s.id, s.roles) for s in p.authorization.slots] == [("s0", ("reviewer",))]
    assert p.authorization.excluded_principals == ("rita",)
    assert p.notify == ("customer",)
    assert [(c.name, c.kind) for c in p.compensations] == [("call the customer", "text"),
                                                           ("send_customer_reply", "action")]


def test_escalated_path_after_window_adds_slots(engine):
    p = engine.classify_rollback(request(), now=LATE)
    assert p.window == "escalated" and p.route == "escalations"
    assert [(s.id, s.roles, s.source) for s in p.authorization.slots] == [
        ("s0", ("reviewer",), "standard"), ("e0", ("support_manager",), "escalation")]
    assert p.notify == ("account_owner", "customer")


def test_window_boundary_is_inclusive(engine):
    assert engine.classify_rollback(request(), now="2026-07-02T10:00:30Z").window == "standard"
    assert engine.classify_rollback(request(), now="2026-07-02T10:00:30.000001Z").window == "escalated"


def test_missing_executed_at_is_treated_as_expired(engine):
    p = engine.classify_rollback(request(executed_at=None), now=NOW)
    assert p.window == "escalated" and any("executed_at" in e.message for e in p.errors)


def test_distinct_from_resolves_principals(engine):
    req = request()
    req["requested_by"] = "ann"
    p = engine.classify_rollback(req, now=NOW)
    assert [(d.ref, d.principal) for d in p.authorization.distinct_from] == [
        ("original.reviewer", "rita"), ("request.requested_by", "ann")]
    assert p.authorization.excluded_principals == ("ann", "rita")


def test_undeclared_scenario_is_not_authorizable(engine):
    p = engine.classify_rollback(request("because_i_said_so"), now=NOW)
    assert not p.scenario_declared and not p.authorizable and "because_i_said_so" in p.errors[0].message
    v = engine.authorize_rollback(p, [approve(p, "sam", "reviewer")], now=NOW)
    assert not v.satisfied


def test_custom_scenario(engine):
    p = engine.classify_rollback(request("goodwill_correction"), now=NOW)
    assert p.scenario_declared and not p.standard_scenario and p.authorizable
    assert p.authorization.excluded_principals == ("quinn",)


def test_irreversible_goes_to_manual_handling(engine):
    p = engine.classify_rollback(request(type="delete_account", id="acct-1"), now=NOW)
    assert p.feasibility.status == "manual" and "irreversible" in p.feasibility.reasons[0]
    assert p.window == "none"


def test_prerequisites_unmet_are_named(engine):
    p = engine.classify_rollback(request(recipient_opened=True), now=NOW)
    assert p.feasibility.status == "blocked" and p.feasibility.unmet == ("not_opened",)


def test_erroring_prerequisite_is_unmet(engine):
    req = request(type="issue_refund", id="r1", executed_at=NOW)  # no `settled`, no `amount`
    p = engine.classify_rollback(req, now=NOW)
    assert p.feasibility.status == "blocked"
    assert p.feasibility.unmet == ("not_settled", "under_limit")
    assert all(r.reason.startswith("error:") for r in p.feasibility.prerequisites)
    assert {e.rule for e in p.errors if e.kind == "prerequisite"} == {"not_settled", "under_limit"}


@pytest.mark.parametrize("bad", [None, 7, "x", {}, {"workflow": WF}, {"workflow": WF, "scenario": "incident"},
                                 {"workflow": WF, "scenario": "incident", "requested_by": "a", "original": 5}])
def test_bad_requests_never_raise(engine, bad):
    p = engine.classify_rollback(bad, now=NOW)
    assert not p.authorizable and p.errors


# ------------------------------------------------------------------ cascade

def _chain(n, prefix="n"):
    rec = {"id": f"{prefix}{n}", "type": "log_crm_activity"}
    for i in range(n - 1, 0, -1):
        rec = {"id": f"{prefix}{i}", "type": "log_crm_activity", "downstream": [rec]}
    return [rec]


def test_cascade_breadth_first_with_checkpoint(chained, engine):
    p = chained.classify_rollback(request(downstream=_chain(4)), now=NOW)  # reviewer_error: depth 2
    c = p.cascade
    assert [(s.record_id, s.depth, s.parent) for s in c.steps] == [("m1", 0, None), ("n1", 1, "m1"), ("n2", 2, "n1")]
    assert [(r.record_id, r.depth) for r in c.checkpoint] == [("n3", 3), ("n4", 4)]
    assert not c.partial and c.undeclared == ()
    assert c.steps[1].method == "crm.delete_activity" and c.steps[1].verify
    # where a CRM activity declares no side effect, the chain stops at its first undeclared link
    c = engine.classify_rollback(request(downstream=_chain(4)), now=NOW).cascade
    assert [s.record_id for s in c.steps] == ["m1", "n1"] and c.checkpoint == ()
    assert [(u.record_id, u.parent) for u in c.undeclared] == [("n2", "n1")] and c.partial


def test_cascade_loop_marks_partial_with_path(engine):
    down = [{"id": "c1", "type": "log_crm_activity", "downstream": [{"id": "m1", "type": "send_customer_reply"}]}]
    p = engine.classify_rollback(request(downstream=down), now=NOW)
    assert p.cascade.partial
    assert [(lp.record_id, lp.parent, lp.path) for lp in p.cascade.loops] == [("m1", "c1", ("m1", "c1", "m1"))]


def test_cascade_manual_steps(chained):
    down = [{"id": "d1", "type": "delete_account"}, {"id": "u1", "type": "mystery"}]
    p = chained.classify_rollback(request(downstream=down), now=NOW)
    manual = {s.record_id: s.reason for s in p.cascade.steps if s.manual}
    assert set(manual) == {"d1"} and "irreversible" in manual["d1"]
    assert p.feasibility.manual_steps == ("d1",)
    # a type no side_effects can declare (not in the policy) is no step: listed, the plan partial
    assert [(u.record_id, u.type, u.parent) for u in p.cascade.undeclared] == [("u1", "mystery", "m1")]
    assert p.feasibility.status == "partial" and p.cascade.partial


def test_cascade_is_bounded(engine):
    wide = [{"id": f"w{i}", "type": "log_crm_activity"} for i in range(MAX_CASCADE_RECORDS + 50)]
    p = engine.classify_rollback(request("regulatory_order", downstream=wide), now=NOW)
    c = p.cascade
    assert c.truncated and c.partial and str(MAX_CASCADE_RECORDS) in c.truncated_reason
    assert len(c.steps) + len(c.checkpoint) == MAX_CASCADE_RECORDS


def test_cascade_long_chain_is_linear_and_does_not_recurse(chained):
    p = chained.classify_rollback(request("regulatory_order", downstream=_chain(90)), now=NOW)
    assert len(p.cascade.steps) == 6 and len(p.cascade.checkpoint) == 85 and p.cascade.undeclared == ()


# ------------------------------------------------------------------ plan hash

def test_plan_hash_binds_content_not_clock(engine):
    a = engine.classify_rollback(request(), now=NOW)
    b = engine.classify_rollback(request(), now="2026-07-02T10:00:10Z")
    assert a.plan_hash == b.plan_hash == plan_hash(a)
    c = engine.classify_rollback(request(), now=LATE)
    assert c.plan_hash != a.plan_hash
    d = engine.classify_rollback(request(downstream=[]), now=NOW)
    assert d.plan_hash != a.plan_hash


def test_plan_survives_json_round_trip(engine):
    p = engine.classify_rollback(request(), now=NOW)
    q = RollbackPlan.model_validate(p.model_dump(mode="json"))
    assert plan_hash(q) == p.plan_hash


# ------------------------------------------------------------------ authorization

def test_authorized_by_verifier(engine):
    p = engine.classify_rollback(request(), now=NOW)
    v = engine.authorize_rollback(p, [approve(p, "sam", "reviewer")], now=NOW)
    assert v.satisfied and v.slots[0].filled_by == ("sam",) and not v.open_slots


def test_original_reviewer_never_counts(engine):
    p = engine.classify_rollback(request(), now=NOW)
    v = engine.authorize_rollback(p, [approve(p, "rita", "reviewer"), approve(p, "rita", "reviewer")], now=NOW)
    assert not v.satisfied and {r.code for r in v.rejected} == {"distinct_from"}


def test_principals_exact_ids_and_canonical_aliases(engine):
    p = engine.classify_rollback(request(), now=NOW)
    # "Rita" is "rita" written another way: an alias of the excluded reviewer, never counted
    v = engine.authorize_rollback(p, [approve(p, "Rita", "reviewer")], now=NOW)
    assert not v.satisfied and {r.code for r in v.rejected} == {"alias"}
    # so are "rita ", "\trita", "ri ta" and "rita" with a no-break space: whitespace and controls are
    # folded away too (each would otherwise let the excluded reviewer approve under another spelling)
    for spelling in ("rita ", "\trita", "ri ta", "rita\u00a0", "\u3000rita", "rita\x00"):
        v = engine.authorize_rollback(p, [approve(p, spelling, "reviewer")], now=NOW)
        assert not v.satisfied and {r.code for r in v.rejected} == {"alias"}, spelling
    # a principal of nothing but blanks names no one
    v = engine.authorize_rollback(p, [approve(p, " \t\u200b", "reviewer")], now=NOW)
    assert not v.satisfied and {r.code for r in v.rejected} == {"invalid"}


@pytest.mark.parametrize("extra,code", [
    ({"plan_hash": "sha256:other"}, "plan_hash"),
    ({"plan_hash": None}, "plan_hash"),
    ({"policy_hash": "sha256:old"}, "policy_hash"),
    ({"expires_at": NOW}, "expired"),
    ({"expires_at": "2026-07-01T00:00:00Z"}, "expired"),
    ({"at": "2026-07-03T00:00:00Z"}, "future"),
    ({"at": "not a time"}, "invalid"),
])
def test_rejected_approvals(engine, extra, code):
    p = engine.classify_rollback(request(), now=NOW)
    v = engine.authorize_rollback(p, [approve(p, "sam", "reviewer", **extra)], now=NOW)
    assert not v.satisfied and [r.code for r in v.rejected] == [code]


def test_missing_role_and_duplicates(engine):
    p = engine.classify_rollback(request(), now=LATE)  # reviewer + support_manager
    v = engine.authorize_rollback(
        p,
        [
            approve(p, "sam", "reviewer", at=LATE),
            approve(p, "sam", "support_manager", at=LATE),
            approve(p, "bob", "legal", at=LATE),
        ],
        now=LATE,
    )
    assert not v.satisfied
    assert {(r.principal, r.code) for r in v.rejected} == {("sam", "duplicate"), ("bob", "missing_role")}
    assert len(v.open_slots) == 1


def test_quorum_needs_both(engine):
    p = engine.classify_rollback(request("regulatory_order"), now=NOW)
    v = engine.authorize_rollback(p, [approve(p, "lee", "legal")], now=NOW)
    assert not v.satisfied and [s.roles for s in v.open_slots] == [("executive",)]
    v = engine.authorize_rollback(p, [approve(p, "lee", "legal"), approve(p, "eve", "executive")], now=NOW)
    assert v.satisfied


def test_matching_is_optimal_not_greedy(engine):
    # incident: 1 incident_commander and 1 of [legal, executive].
    # `amy` holds both incident_commander and legal; a greedy pass in name order would give amy the
    # commander slot... and `bo` (commander only) nothing. The matching must find amy->legal, bo->commander.
    p = engine.classify_rollback(request("incident"), now=NOW)
    approvals = [approve(p, "amy", "incident_commander", "legal"), approve(p, "bo", "incident_commander")]
    v = engine.authorize_rollback(p, approvals, now=NOW)
    assert v.satisfied
    assert {s.id: s.filled_by for s in v.slots} == {"s0": ("bo",), "s1": ("amy",)}
    v2 = engine.authorize_rollback(p, list(reversed(approvals)), now=NOW)
    assert v2.model_dump(mode="json") == v.model_dump(mode="json")


def test_count_slot_needs_distinct_principals(engine):
    p = engine.classify_rollback(request("goodwill_correction"), now=NOW)
    v = engine.authorize_rollback(p, [approve(p, "sam", "reviewer"), approve(p, "sam", "support_manager")], now=NOW)
    assert not v.satisfied and v.open_slots[0].missing == 1
    v = engine.authorize_rollback(p, [approve(p, "sam", "reviewer"), approve(p, "max", "support_manager")], now=NOW)
    assert v.satisfied
    v = engine.authorize_rollback(p, [approve(p, "quinn", "reviewer"), approve(p, "max", "support_manager")], now=NOW)
    assert not v.satisfied  # quinn is original.requester


def test_tampered_plan_is_refused(engine):
    p = engine.classify_rollback(request(), now=NOW)
    data = p.model_dump(mode="json")
    data["authorization"]["excluded_principals"] = []
    data["authorization"]["distinct_from"] = []
    v = engine.authorize_rollback(data, [approve(p, "rita", "reviewer")], now=NOW)
    assert not v.satisfied and any("plan_hash" in e.message for e in v.errors)


def test_bad_plan_and_approvals_never_raise(engine):
    assert not engine.authorize_rollback({"nope": 1}, [], now=NOW).satisfied
    assert not engine.authorize_rollback(5, [], now=NOW).satisfied
    p = engine.classify_rollback(request(), now=NOW)
    v = engine.authorize_rollback(p, [5, {"roles": "x"}, {"principal": "a", "roles": "reviewer"}], now=NOW)
    assert not v.satisfied and [r.code for r in v.rejected] == ["invalid"] * 3
    assert not engine.authorize_rollback(p, "sam", now=NOW).satisfied
