"""Snapshots of what people read: explain traces and decision JSON.

Refresh with: /tmp/dev/bin/python -m pytest tests/test_explain.py --snapshot-update
"""

from __future__ import annotations

import json

import pytest
from engine_support import NOW, POLICIES, ROOT, WF, engine_from_texts, load_engine, reply, request

from policy_engine.explain import explain


@pytest.fixture(scope="module")
def engine():
    return load_engine()


GATES = {
    "allow": reply(amount=20),
    "require_approval": reply(amount=120.5, id="msg-7"),
    "deny_with_errors": {"workflow": WF, "type": "send_customer_reply"},
    "stop": reply(claims=[{"sourced": False}], recipient={"domain": "competitor.example"}),
    "undeclared": {"workflow": WF, "type": "launch_rocket"},
    "default": {"workflow": WF, "type": "issue_refund", "amount": 100},
}


@pytest.mark.parametrize("name", sorted(GATES))
def test_gate_explain(engine, snapshot, name):
    assert explain(engine.evaluate(GATES[name], now=NOW)) == snapshot


@pytest.mark.parametrize("name", sorted(GATES))
def test_gate_json(engine, snapshot, name):
    d = engine.evaluate(GATES[name], now=NOW)
    assert json.dumps(d.model_dump(mode="json"), indent=2) == snapshot


def test_stopped_explain(engine, snapshot):
    d = engine.evaluate(reply(), {"status": "stopped", "stopped_by": "unsupported_promise"}, now=NOW)
    assert explain(d) == snapshot


def test_rollback_explain(engine, snapshot):
    down = [{"id": "c1", "type": "log_crm_activity",
             "downstream": [{"id": "r1", "type": "issue_refund",
                             "downstream": [{"id": "x1", "type": "log_crm_activity"},
                                            {"id": "m1", "type": "send_customer_reply"}]}]},
            {"id": "d1", "type": "delete_account"}]
    plan = engine.classify_rollback(request(downstream=down), now="2026-07-02T10:05:00Z")
    assert explain(plan) == snapshot
    assert json.dumps(plan.model_dump(mode="json"), indent=2) == snapshot


@pytest.fixture(scope="module")
def declaring():
    """The fixture policy with a deeper declared cascade graph: a reply declares deleting an
    account (irreversible) among its side effects, and a CRM activity declares a refund."""
    text = (ROOT / POLICIES / "support.policy").read_text(encoding="utf-8")
    new = text.replace("    side_effects [log_crm_activity]\n    receipt [final_message",
                       "    side_effects [log_crm_activity, delete_account]\n    receipt [final_message", 1)
    new = new.replace('    reversible full via "crm.delete_activity"\n',
                      '    reversible full via "crm.delete_activity"\n    side_effects [issue_refund]\n', 1)
    assert new.count("delete_account]") == 1 and "side_effects [issue_refund]" in new
    return engine_from_texts({f"{POLICIES}/support.policy": new})


#: every link declared: a blocked step (r1), a manual one (d1), a checkpoint below the depth
#: (x1) and a loop back to the original (m1); `undeclared` adds a record delete_account's
#: (empty) side_effects do not declare, with a child of its own that is not walked
DECLARED_CASCADES = {
    "declared": [],
    "undeclared": [{"id": "u1", "type": "log_crm_activity",
                    "downstream": [{"id": "u2", "type": "log_crm_activity"}]}],
}


@pytest.mark.parametrize("name", sorted(DECLARED_CASCADES))
def test_rollback_explain_declared_cascade(declaring, snapshot, name):
    down = [{"id": "c1", "type": "log_crm_activity",
             "downstream": [{"id": "r1", "type": "issue_refund",
                             "downstream": [{"id": "x1", "type": "log_crm_activity"},
                                            {"id": "m1", "type": "send_customer_reply"}]}]},
            {"id": "d1", "type": "delete_account", "downstream": DECLARED_CASCADES[name]}]
    plan = declaring.classify_rollback(request(downstream=down), now="2026-07-02T10:05:00Z")
    c = plan.cascade
    assert [s.status for s in c.steps if s.record_id in ("d1", "r1")] == ["manual", "blocked"]
    assert [r.record_id for r in c.checkpoint] == ["x1"] and [lp.record_id for lp in c.loops] == ["m1"]
    assert [u.record_id for u in c.undeclared] == (["u1"] if name == "undeclared" else [])
    assert explain(plan) == snapshot


def test_authorize_explain(engine, snapshot):
    plan = engine.classify_rollback(request("incident"), now=NOW)
    approvals = [{"principal": "amy", "roles": ["incident_commander", "legal"], "plan_hash": plan.plan_hash},
                 {"principal": "bo", "roles": ["incident_commander"], "plan_hash": plan.plan_hash},
                 {"principal": "cy", "roles": ["legal"], "plan_hash": "sha256:stale"}]
    assert explain(engine.authorize_rollback(plan, approvals, now=NOW)) == snapshot


def test_resume_explain(engine, snapshot):
    ev = {"reviewer_screen": {"shows_claim_source": True}, "blocked_promises": []}
    r = engine.may_resume(WF, "unsupported_promise", ev, now=NOW)
    assert explain(r) == snapshot


def test_gate_explain_shows_declared_costs(snapshot):
    """The shipped refunds policy declares `cost 40 USD` on issue_refund and a cost on
    scenarios: the reader of the trace sees what reversing would cost, as the JSON says."""
    from engine_support import at_root

    import policy_engine

    with at_root():  # repository-relative locations
        eng = policy_engine.load("policies")
    action = {"workflow": "refunds", "type": "issue_refund", "id": "refund-5001", "amount": 80.0, "currency": "EUR",
              "reason": "damaged_item", "payee_account_id": "cust-42",
              "order": {"id": "ord-9001", "total": 240.0, "refunded_amount": 0.0, "customer_account_id": "cust-42"}}
    d = eng.evaluate(action, now=NOW)
    text = explain(d)
    assert d.reversibility is not None and d.reversibility.cost is not None
    assert "reversing it costs 40 USD" in text
    scenario_costs = [c for c in d.reversibility.after_window + d.reversibility.within_window if c.cost is not None]
    assert scenario_costs and all(c.scenario in text for c in scenario_costs)
    assert text == snapshot
