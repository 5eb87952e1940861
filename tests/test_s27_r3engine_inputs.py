"""Session 27 (R3ENGINE): a workflow state given to `may_resume` as `workflow` has its
`stopped_at` read; a require_approval decision whose `matched` lists a deny rule or a stop
trigger (it was edited) releases nothing; `Engine.version` / `action_info` given a name that
is not a string say so. Each test failed before its fix (see the session's report)."""

from __future__ import annotations

import json

import pytest
from engine_support import ROOT, engine_from_texts

import policy_engine
from policy_engine.engine import authorize as A

NOW = "2026-01-01T10:00:00Z"

POLICY = """roles [reviewer]
workflow "w" {
  version "1"
  owners { business "ops" technical "platform" }
  default deny
  action pay {
    system "bank"
    reversible full via "bank.undo" within 1h
    receipt [amount]
    allow small when `action.amount <= 100`
  }
  stop halt {
    when `action.amount == 13`
    severity high
    owner "ops"
    affects [bank]
    rollback "undo"
    resume when {
      cooled: `now - stop.stopped_at > duration("1h")`
    }
  }
}
"""


@pytest.fixture(scope="module")
def engine():
    return engine_from_texts({"w.policy": POLICY})


def state(at):
    return {"name": "w", "status": "stopped", "stopped_by": "halt", "stopped_at": at}


# ------------------------------------------------------------------ may_resume(workflow state)
def test_a_workflow_state_given_as_workflow_has_its_stopped_at_read(engine):
    """As the runtime's `stop=` path: the criteria see `stop.stopped_at` (it was an error,
    `no such key: 'stopped_at'`, and the workflow stayed stopped)."""
    r = engine.may_resume(state("2026-01-01T08:00:00Z"), "halt", {}, now=NOW)
    assert r.errors == () and r.allowed
    assert r == engine.may_resume("w", state("2026-01-01T08:00:00Z"), {}, now=NOW)
    r = engine.may_resume(state("2026-01-01T09:30:00Z"), "halt", {}, now=NOW)  # not an hour yet
    assert not r.allowed and r.unmet == ("cooled",) and r.errors == ()


def test_a_workflow_states_stopped_at_is_checked_as_a_stop_states(engine):
    """A `stopped_at` in the future (beyond the clock allowance) is an input error."""
    r = engine.may_resume(state("2027-01-01T00:00:00Z"), "halt", {}, now=NOW)
    assert not r.allowed and r.criteria[0].reason == "not evaluated: the input has an error"
    assert "is after now" in r.errors[0].message


def test_two_different_stopped_at_are_an_input_error(engine):
    """Which stop is asked about? Neither time is picked (an earlier one resumes sooner)."""
    r = engine.may_resume(state("2026-01-01T08:00:00Z"), state("2026-01-01T09:30:00Z"), {}, now=NOW)
    assert not r.allowed
    assert [e.message for e in r.errors] == [
        "the workflow state says the workflow stopped at 2026-01-01T08:00:00Z, the stop state at "
        "2026-01-01T09:30:00Z: which stop is asked about?"]
    # the same time, written two ways, agrees
    r = engine.may_resume(state("2026-01-01T08:00:00+00:00"), state("2026-01-01T08:00:00Z"), {}, now=NOW)
    assert r.allowed and r.errors == ()


# ------------------------------------------------------------------ authorize_action(edited matched)
REFUND = {"workflow": "refunds", "type": "issue_refund", "id": "r-2", "amount": 800.0, "currency": "EUR",
          "reason": "damaged_item", "payee_account_id": "c-1",
          "order": {"id": "o-2", "total": 900.0, "refunded_amount": 0.0, "customer_account_id": "c-1"}}
NOW2 = "2026-11-24T10:00:00Z"


@pytest.fixture(scope="module", params=[True, False], ids=["accelerated", "reference"])
def shipped(request):
    return policy_engine.load(ROOT / "policies", accelerate=request.param)


def held(eng):
    d = eng.evaluate(REFUND, now=NOW2)
    assert d.effect == "require_approval"
    dj = d.model_dump(mode="json")
    apps = [{"principal": "sam", "roles": ["support_manager"], "at": NOW2, "action_digest": dj["action_digest"]}]
    return dj, apps


@pytest.mark.parametrize("effect", ["deny", "stop"])
def test_a_decision_whose_matched_lists_a_deny_rule_or_a_stop_trigger_releases_nothing(shipped, effect):
    """A deny rule or stop trigger that matched would have decided: such a decision was
    edited. Both the fast decision view and the reference refuse it, with the same verdict."""
    dj, apps = held(shipped)
    assert shipped.authorize_action(dj, apps, NOW2).satisfied  # unedited: released
    extra = next(t for t in dj["trace"] if t["effect"] == effect)
    edited = json.loads(json.dumps(dj))
    edited["matched"].insert(0, {k: extra[k] for k in ("kind", "name", "effect", "location")})
    fast = shipped.authorize_action(edited, apps, NOW2)
    assert not fast.satisfied
    what = "deny rule" if effect == "deny" else "stop trigger"
    assert [e.message for e in fast.errors] == [
        f"the decision's matched rules include {what} `{extra['name']}`: a require_approval decision cannot; "
        "evaluate the action again"]
    assert fast == A.authorize_action_reference(shipped._p, edited, apps, NOW2)


BOTH = POLICY.replace("    allow small when `action.amount <= 100`\n",
                      "    require_approval big by 1 reviewer when `action.amount > 100`\n"
                      "    allow any when `true`\n")


@pytest.mark.parametrize("accelerate", [True, False], ids=["accelerated", "reference"])
def test_an_allow_rule_in_matched_is_legitimate(accelerate):
    """The gate lists an allow rule that matched beside the require_approval rule that decides."""
    eng = engine_from_texts({"w.policy": BOTH}, accelerate=accelerate)
    d = eng.evaluate({"workflow": "w", "type": "pay", "id": "p-1", "amount": 500}, now=NOW)
    assert d.effect == "require_approval" and [(m.name, m.effect) for m in d.matched] == [
        ("big", "require_approval"), ("any", "allow")]
    apps = [{"principal": "rita", "roles": ["reviewer"], "at": NOW, "action_digest": d.action_digest}]
    for given in (d, d.model_dump(mode="json")):
        v = eng.authorize_action(given, apps, NOW)
        assert v.satisfied and v.errors == ()
        assert v == A.authorize_action_reference(eng._p, given, apps, NOW)


# ------------------------------------------------------------------ version / action_info
@pytest.mark.parametrize("bad", [["x"], {"a": 1}, None, 3])
def test_version_of_a_name_that_is_not_a_string_is_a_clear_type_error(engine, bad):
    with pytest.raises(TypeError, match=r"^`workflow` is a name \(a string\), not a "):
        engine.version(bad)
    assert engine.version("w") == "1" and engine.version("nope") is None


def test_action_info_of_a_name_that_is_not_a_string_is_a_clear_type_error(engine):
    with pytest.raises(TypeError, match=r"^`name` is a name \(a string\), not a list$"):
        engine.action_info(["pay"])
    with pytest.raises(TypeError, match=r"^`workflow` is a name \(a string\), not a list$"):
        engine.action_info("pay", ["w"])
    assert engine.action_info("pay", "w") is not None and engine.action_info("pay") is not None
