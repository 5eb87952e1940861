"""Hardening of the engine's questions besides the gate: who must agree to a rollback or a
held action (`authorize_rollback`, `authorize_action`), the window class of a plan at the
boundary instant, and whether a stopped workflow may resume (`may_resume`). Every answer
fails closed."""

from __future__ import annotations

import pytest
from engine_support import NOW, POLICIES, ROOT, WF, engine_from_texts, load_engine, reply, request

UNTIL = "2026-07-02T10:00:30Z"  # executed 09:59:30 + the 60s window of send_customer_reply


@pytest.fixture(scope="module")
def engine():
    return load_engine()


@pytest.fixture(scope="module")
def refunding():
    """The fixture policy with a reply declaring a refund among its side effects (the refund's
    30-day window, not the reply's 60 s one, for a cascade step)."""
    text = (ROOT / POLICIES / "support.policy").read_text(encoding="utf-8")
    new = text.replace("    side_effects [log_crm_activity]\n    receipt [final_message",
                       "    side_effects [log_crm_activity, issue_refund]\n    receipt [final_message", 1)
    assert new != text
    return engine_from_texts({f"{POLICIES}/support.policy": new})


def approve(plan, principal, *roles, **extra):
    return {"principal": principal, "roles": list(roles), "plan_hash": plan.plan_hash, "at": NOW, **extra}


# ------------------------------------------------------------------ a deny is never an approval

def test_a_deny_never_counts_as_an_approval(engine):
    p = engine.classify_rollback(request(), now=NOW)
    v = engine.authorize_rollback(p, [approve(p, "sam", "reviewer", verdict="deny")], now=NOW)
    assert not v.satisfied and v.accepted == ()
    assert [(r.principal, r.code) for r in v.rejected] == [("sam", "invalid")]


def test_a_deny_from_a_required_approver_beats_an_approve(engine):
    p = engine.classify_rollback(request(), now=NOW)
    ok = [approve(p, "sam", "reviewer")]
    assert engine.authorize_rollback(p, ok, now=NOW).satisfied
    v = engine.authorize_rollback(p, ok + [approve(p, "tom", "reviewer", verdict="deny")], now=NOW)
    assert not v.satisfied and any("tom" in e.message and "deny" in e.message for e in v.errors)
    # in any order
    v = engine.authorize_rollback(p, [approve(p, "tom", "reviewer", verdict="deny")] + ok, now=NOW)
    assert not v.satisfied


def test_a_deny_that_could_fill_no_slot_changes_nothing(engine):
    p = engine.classify_rollback(request(), now=NOW)
    apps = [approve(p, "sam", "reviewer"), approve(p, "lee", "legal", verdict="deny"),
            approve(p, "tom", "reviewer", verdict="deny", plan_hash="sha256:another")]
    assert engine.authorize_rollback(p, apps, now=NOW).satisfied
    assert engine.authorize_rollback(p, [approve(p, "sam", "reviewer", verdict="approve")], now=NOW).satisfied


@pytest.mark.parametrize("verdict", [None, "", "Approve", "denied", 1, True, ["approve"], {"v": "approve"}])
def test_a_verdict_other_than_approve_or_deny_is_invalid(engine, verdict):
    p = engine.classify_rollback(request(), now=NOW)
    v = engine.authorize_rollback(p, [approve(p, "sam", "reviewer", verdict=verdict)], now=NOW)
    assert not v.satisfied and [r.code for r in v.rejected] == ["invalid"]


def test_a_deny_holds_a_held_action_too(engine):
    d = engine.evaluate(reply(amount=500.0), now=NOW)
    assert d.effect == "require_approval"

    def a(who, **extra):
        return {"principal": who, "roles": ["reviewer"], "action_digest": d.action_digest, "at": NOW, **extra}

    assert engine.authorize_action(d, [a("sam")], now=NOW).satisfied
    assert not engine.authorize_action(d, [a("sam", verdict="deny")], now=NOW).satisfied
    assert not engine.authorize_action(d, [a("sam"), a("tom", verdict="deny")], now=NOW).satisfied


# ------------------------------------------------------------------ the window at its last instant

@pytest.mark.parametrize("now,window", [
    (UNTIL, "standard"),
    ("2026-07-02T10:00:30.000000Z", "standard"),
    ("2026-07-02T10:00:30.000000000Z", "standard"),
    ("2026-07-02T10:00:29.9999999Z", "standard"),
    ("2026-07-02T10:00:30.0000001Z", "escalated"),  # 100 ns after the window closed
    ("2026-07-02T10:00:30.000000001Z", "escalated"),
    ("2026-07-02T12:00:30.0000001+02:00", "escalated"),
    ("2026-07-02T10:00:30.000001Z", "escalated"),
])
def test_window_class_below_the_microsecond(engine, now, window):
    p = engine.classify_rollback(request(), now=now)
    assert p.window == window
    assert p.cascade.steps[0].within_window is (window == "standard")


def test_a_plan_classified_at_the_boundary_is_not_authorized_a_moment_later(engine):
    p = engine.classify_rollback(request(), now=UNTIL)
    assert p.window == "standard"
    apps = [approve(p, "sam", "reviewer", at=UNTIL)]
    assert engine.authorize_rollback(p, apps, now=UNTIL).satisfied
    v = engine.authorize_rollback(p, apps, now="2026-07-02T10:00:30.0000001Z")
    assert not v.satisfied and any("escalated" in e.message for e in v.errors)
    late = engine.classify_rollback(request(), now="2026-07-02T10:00:30.0000001Z")
    assert [s.source for s in late.authorization.slots] == ["standard", "escalation"]


def test_a_cascade_step_window_below_the_microsecond(refunding):
    engine = refunding
    r = request(downstream=[{"id": "rf", "type": "issue_refund", "executed_at": "2026-06-02T10:00:30Z",
                           "settled": False, "amount": 10.0}])
    at = engine.classify_rollback(r, now="2026-07-02T10:00:30Z")  # 30d window: ends exactly now
    after = engine.classify_rollback(r, now="2026-07-02T10:00:30.0000001Z")
    assert at.cascade.steps[1].record_id == "rf" and at.cascade.steps[1].within_window is True
    assert after.cascade.steps[1].within_window is False and after.cascade.steps[1].status == "out_of_window"


# ------------------------------------------------------------------ resume: the trigger that stopped it

TWO_TRIGGERS = """roles [reviewer]
workflow "w" {
  version "1"
  owners { business "a" technical "b" }
  action act {
    system "s"
    irreversible
    allow when `true`
  }
  stop hard {
    when `action.type == "act" && action.x == 1`
    severity high
    owner "o"
    resume when { postmortem: `evidence.postmortem_filed == true` }
  }
  stop easy {
    when `action.type == "act" && action.x == 2`
    severity low
    owner "o"
    resume when { ok: `true` }
  }
}
"""


@pytest.fixture(scope="module", params=[True, False], ids=["accelerated", "reference"])
def two(request):
    return engine_from_texts({"w.policy": TWO_TRIGGERS}, accelerate=request.param)


def test_resume_through_another_triggers_criteria_is_refused(two):
    state = {"name": "w", "status": "stopped", "stopped_by": "hard", "stopped_at": NOW}
    r = two.may_resume(state, "easy", {}, now=NOW)
    assert not r.allowed and any("stopped by" in e.message for e in r.errors)
    r = two.may_resume(state, {"stopped_by": "easy", "stopped_at": NOW}, {}, now=NOW)
    assert not r.allowed
    r = two.may_resume(state, {"trigger": "easy", "stopped_at": NOW}, {}, now=NOW)  # a decision's `stop`
    assert not r.allowed


def test_resume_with_a_consistent_state_is_still_answered(two):
    state = {"name": "w", "status": "stopped", "stopped_by": "easy", "stopped_at": NOW}
    assert two.may_resume(state, "easy", {}, now=NOW).allowed
    assert two.may_resume(state, {"stopped_by": "easy", "stopped_at": NOW}, {}, now=NOW).allowed
    assert two.may_resume("w", "easy", {}, now=NOW).allowed
    assert two.may_resume({"name": "w"}, "easy", {}, now=NOW).allowed  # a state without `stopped_by`
    hard = {"name": "w", "stopped_by": "hard"}
    assert not two.may_resume(hard, "hard", {}, now=NOW).allowed
    assert two.may_resume(hard, "hard", {"postmortem_filed": True}, now=NOW).allowed


def test_resume_with_a_stop_state_of_another_workflow_is_refused(two):
    r = two.may_resume("w", {"name": "other", "stopped_by": "easy"}, {}, now=NOW)
    assert not r.allowed and any("other" in e.message for e in r.errors)
    assert two.may_resume("w", {"name": "w", "stopped_by": "easy"}, {}, now=NOW).allowed


def test_resume_of_the_fixture_workflow_still_works(engine):
    ev = {"reviewer_screen": {"shows_claim_source": True}, "blocked_promises": ["x"]}
    state = {"name": WF, "status": "stopped", "stopped_by": "unsupported_promise", "stopped_at": NOW}
    assert engine.may_resume(state, "unsupported_promise", ev, now=NOW).allowed
    assert engine.may_resume(WF, state, ev, now=NOW).allowed
