"""Hardening of the times the caller records: an `executed_at` or a `stopped_at` after `now`
is believed only within `limits.MAX_CLOCK_SKEW_SECONDS` (a difference between two clocks);
beyond it the answer fails closed (the window is expired, the workflow stays stopped) and
says why. A `now` out of the representable range is an input error, never an internal one.
See docs/rollback-plans.md ("An `executed_at` after `now`") and docs/engine.md."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from engine_support import NOW, POLICIES, ROOT, WF, engine_from_texts, load_engine, request

from policy_engine.limits import MAX_CLOCK_SKEW_SECONDS

FUTURE = "2099-01-01T00:00:00Z"
EVIDENCE = {"reviewer_screen": {"shows_claim_source": True}, "blocked_promises": ["legal_advice"]}


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


def approve(plan, principal, *roles):
    return {"principal": principal, "roles": list(roles), "plan_hash": plan.plan_hash, "at": NOW}


def messages(result) -> list[str]:
    return [e.message for e in result.errors]


def no_internal_error(result) -> None:
    assert not any("internal error" in m for m in messages(result)), messages(result)


# ------------------------------------------------------------------ item 1: the original

def test_an_original_executed_in_the_future_takes_the_escalated_path_and_says_why(engine):
    plan = engine.classify_rollback(request(executed_at=FUTURE), now=NOW)
    assert plan.window == "escalated" and plan.route == "escalations"
    assert plan.executed_at == FUTURE and plan.reversible_until is None  # shown as recorded; no window starts then
    assert [s.source for s in plan.authorization.slots] == ["standard", "escalation"]
    (e,) = [e for e in plan.errors if "`original.executed_at`" in e.message]
    assert e.kind == "input" and f"{MAX_CLOCK_SKEW_SECONDS} s" in e.message and "treated as expired" in e.message
    assert plan.authorizable  # on the escalated path, as for a missing `executed_at`
    assert plan.cascade.steps[0].status == "out_of_window" and plan.feasibility.status == "partial"
    # the standard approver alone no longer authorizes it; the escalation's must agree too
    alone = engine.authorize_rollback(plan, [approve(plan, "sam", "reviewer")], now=NOW)
    assert not alone.satisfied and [s.id for s in alone.open_slots] == ["e0"]
    both = [approve(plan, "sam", "reviewer"), approve(plan, "max", "support_manager")]
    assert engine.authorize_rollback(plan, both, now=NOW).satisfied


@pytest.mark.parametrize("executed_at", [FUTURE, datetime(2099, 1, 1, tzinfo=UTC), "2026-07-02T10:01:00.000001Z",
                                         "2026-07-02T12:00:00+01:00"])
def test_any_executed_at_beyond_the_allowance_is_escalated(engine, executed_at):
    # (12:00+01:00 is 11:00Z, an hour ahead of NOW)
    plan = engine.classify_rollback(request(executed_at=executed_at), now=NOW)
    assert plan.window == "escalated" and plan.reversible_until is None


def test_within_the_allowance_the_time_stands_as_recorded(engine):
    ex = "2026-07-02T10:01:00Z"  # NOW + 60 s exactly: a clock difference
    plan = engine.classify_rollback(request(executed_at=ex), now=NOW)
    assert plan.window == "standard" and not plan.errors
    assert (plan.executed_at, plan.reversible_until) == (ex, "2026-07-02T10:02:00Z")
    assert engine.authorize_rollback(plan, [approve(plan, "sam", "reviewer")], now=NOW).satisfied


def test_the_allowance_is_measured_from_now_as_given_not_rounded_up():
    """`now` with digits below the microsecond is compared with a window's end a microsecond
    later (util.window_now); the allowance is measured from the time itself: 10:01:00.000001
    is 60.0000009 s after 10:00:00.0000001, beyond it."""
    engine = load_engine()
    plan = engine.classify_rollback(request(executed_at="2026-07-02T10:01:00.000001Z"),
                                    now="2026-07-02T10:00:00.0000001Z")
    assert plan.window == "escalated"


def test_a_time_before_1970_is_simply_long_ago(engine):
    plan = engine.classify_rollback(request(executed_at="1969-12-31T23:59:59Z"), now=NOW)
    assert plan.window == "escalated" and plan.reversible_until == "1970-01-01T00:00:59Z"


# ------------------------------------------------------------------ item 1: cascade steps

def test_a_cascade_record_executed_in_the_future_is_out_of_its_window_and_named_in_the_errors(refunding):
    engine = refunding
    req = request(downstream=[{"id": "r2", "type": "issue_refund", "executed_at": FUTURE, "settled": False,
                               "amount": 10.0}])
    plan = engine.classify_rollback(req, now=NOW)
    assert plan.cascade.undeclared == ()  # a side effect the reply declares: a step
    assert plan.window == "standard"  # the original's own window
    step = next(s for s in plan.cascade.steps if s.record_id == "r2")
    assert step.status == "out_of_window" and step.within_window is False and step.reversible_until is None
    assert any("after now" in r for r in step.reasons)
    assert plan.feasibility.out_of_window_steps == ("r2",) and plan.feasibility.status == "partial"
    assert any("`r2`" in m and "future" in m for m in messages(plan))
    # a step an hour ago, within its 30 days: feasible, no error
    req["original"]["downstream"][0]["executed_at"] = "2026-07-02T09:00:00Z"
    plan = engine.classify_rollback(req, now=NOW)
    step = next(s for s in plan.cascade.steps if s.record_id == "r2")
    assert step.status == "feasible" and not plan.errors


# ------------------------------------------------------------------ item 1: authorize_rollback's recomputation

def test_a_standard_plan_is_not_authorized_at_a_now_before_its_original_ran(engine):
    """`authorize_rollback` recomputes the window from the plan's `executed_at` at its own
    `now` (the runtime judges approvals at the time each was given): at a `now` more than the
    allowance before the execution, the standard path cannot be right."""
    plan = engine.classify_rollback(request(), now=NOW)  # executed 09:59:30, standard
    assert plan.window == "standard"
    apps = [{"principal": "sam", "roles": ["reviewer"], "plan_hash": plan.plan_hash}]
    assert engine.authorize_rollback(plan, apps, now=NOW).satisfied
    early = engine.authorize_rollback(plan, apps, now="2026-07-02T09:00:00Z")
    assert not early.satisfied
    assert any("`escalated`" in m and "after now" in m for m in messages(early)), messages(early)
    # within the allowance before it: still the standard path
    assert engine.authorize_rollback(plan, apps, now="2026-07-02T09:58:30Z").satisfied


def test_a_plan_dated_ahead_is_judged_escalated_at_authorization_too(engine):
    plan = engine.classify_rollback(request(executed_at=FUTURE), now=NOW)
    dumped = plan.model_dump(mode="json")  # as JSON: the requirement is the policy's, recomputed
    both = [approve(plan, "sam", "reviewer"), approve(plan, "max", "support_manager")]
    v = engine.authorize_rollback(dumped, both, now=NOW)
    assert v.satisfied, v.errors


# ------------------------------------------------------------------ item 3: `stopped_at`

def test_a_stop_dated_in_the_future_does_not_resume(engine):
    state = {"name": WF, "status": "stopped", "stopped_by": "unsupported_promise", "stopped_at": FUTURE}
    r = engine.may_resume(WF, state, EVIDENCE, now=NOW)
    assert not r.allowed and all(not c.met for c in r.criteria)
    assert any("`stopped_at`" in m and "stays stopped" in m for m in messages(r)), messages(r)
    state["stopped_at"] = "2026-07-02T10:01:00Z"  # within the allowance
    assert engine.may_resume(WF, state, EVIDENCE, now=NOW).allowed
    state["stopped_at"] = "2026-07-02T09:00:00Z"
    assert engine.may_resume(WF, state, EVIDENCE, now=NOW).allowed


def test_a_stop_dated_out_of_range_is_an_input_error_not_an_internal_one(engine):
    stop = {"stopped_by": "unsupported_promise", "stopped_at": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))}
    r = engine.may_resume(WF, stop, EVIDENCE, now=NOW)
    assert not r.allowed and r.workflow == WF
    no_internal_error(r)
    assert any("`stopped_at`" in m and "range" in m for m in messages(r))


# ------------------------------------------------------------------ item 3: `now` out of range

OUT_OF_RANGE = [datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))),
                datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5)))]


@pytest.mark.parametrize("now", OUT_OF_RANGE)
def test_a_now_out_of_range_is_an_input_error_everywhere(engine, now):
    plan = engine.classify_rollback(request(), now=now)
    no_internal_error(plan)
    assert not plan.authorizable and (plan.workflow, plan.scenario) == (WF, "reviewer_error")
    assert any("`now`" in m and "range" in m for m in messages(plan))
    good = engine.classify_rollback(request(), now=NOW)
    v = engine.authorize_rollback(good, [approve(good, "sam", "reviewer")], now=now)
    assert not v.satisfied
    no_internal_error(v)
    r = engine.may_resume(WF, "unsupported_promise", EVIDENCE, now=now)
    assert not r.allowed and r.workflow == WF
    no_internal_error(r)
    d = engine.evaluate({"workflow": WF, "type": "log_crm_activity", "id": "x"}, now=now)
    assert d.effect == "deny" and any("`now`" in e.message and "range" in e.message for e in d.errors), d.errors
    no_internal_error(d)
