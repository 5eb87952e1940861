"""Gate decisions (Engine.evaluate) and resume decisions (Engine.may_resume)."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

import pydantic
import pytest
from engine_support import NOW, WF, engine_from_texts, load_engine, reply

import policy_engine
from policy_engine import PolicyError
from policy_engine.engine import MAX_INPUT_DEPTH, MAX_INPUT_ITEMS, action_digest
from policy_engine.models import Action, Decision, WorkflowState


@pytest.fixture(scope="module")
def engine():
    return load_engine()


# ------------------------------------------------------------------ loading

def test_load_exports_engine_and_hash(engine):
    assert engine.policy_hash.startswith("sha256:")
    assert set(engine.workflows) == {"ops", WF}
    assert engine.version(WF) == "2026.11.1"


def test_load_missing_path_raises_policy_error(tmp_path):
    with pytest.raises(PolicyError) as ei:
        policy_engine.load(tmp_path / "nope")
    assert ei.value.diagnostics[0].code == "E006"


def test_load_bad_policy_raises_policy_error_with_all_diagnostics(tmp_path):
    (tmp_path / "a.policy").write_text('workflow "w" { default allow }\n')
    with pytest.raises(PolicyError) as ei:
        policy_engine.load(tmp_path)
    codes = {d.code for d in ei.value.diagnostics}
    assert "E107" in codes and "E134" in codes


def test_engine_is_immutable(engine):
    with pytest.raises(AttributeError):
        engine.policy_hash = "x"


# ------------------------------------------------------------------ precedence

@pytest.mark.parametrize("attrs,effect,name", [
    ({"amount": 50.0}, "allow", "small"),
    ({"amount": 120}, "require_approval", "big"),
    ({"amount": 120.5}, "require_approval", "big"),
    ({"amount": 50.0, "recipient": {"domain": "competitor.example"}}, "deny", "blocked_domain"),
    ({"amount": 500.0, "recipient": {"domain": "competitor.example"}}, "deny", "blocked_domain"),
    ({"claims": [{"sourced": False}]}, "stop", "unsupported_promise"),
    ({"claims": [{"sourced": False}], "recipient": {"domain": "competitor.example"}}, "stop", "unsupported_promise"),
    ({"claims": [{"sourced": True}]}, "allow", "small"),
])
def test_precedence(engine, attrs, effect, name):
    d = engine.evaluate(reply(**attrs), now=NOW)
    assert d.effect == effect
    assert d.deciding.name == name


def test_all_matched_rules_listed_by_precedence(engine):
    d = engine.evaluate(reply(amount=150, recipient={"domain": "competitor.example"},
                              claims=[{"sourced": False}]), now=NOW)
    assert [(m.kind, m.name) for m in d.matched] == [("stop", "unsupported_promise"), ("rule", "blocked_domain"),
                                                      ("rule", "big")]
    assert d.stop is not None and d.stop.trigger == "unsupported_promise"
    assert d.stop.severity == "high" and d.stop.owner == "Support operations lead"
    assert d.stop.resume_criteria == ("claim_source_visible", "promises_blocked")
    assert d.stop.affects == ("crm_activity", "email", "helpdesk")
    # receipt: the action type's plus the trigger's
    assert d.receipt == ("final_message", "reviewer_decision", "source_excerpts")


def test_json_numbers_compare_heterogeneously(engine):
    for amount in (101, 100.5, 120, 10**6):
        assert engine.evaluate(reply(amount=amount), now=NOW).effect == "require_approval"
    for amount in (100, 100.0, 0, -0.0):
        assert engine.evaluate(reply(amount=amount), now=NOW).effect == "allow"


def test_require_approval_lists_every_matched_rule(engine):
    d = engine.evaluate({"workflow": WF, "type": "issue_refund", "amount": 900}, now=NOW)
    assert d.effect == "require_approval"
    assert [(a.rule, a.count, a.roles, a.any_of) for a in d.approvals] == [
        ("large", 2, ("executive", "support_manager"), True)]


def test_default_effect_when_no_rule_matches(engine):
    d = engine.evaluate({"workflow": WF, "type": "issue_refund", "amount": 100}, now=NOW)
    assert d.effect == "require_approval" and d.deciding.kind == "default"
    d = engine.evaluate({"workflow": "ops", "type": "restart_service", "env": "dev"}, now=NOW)
    assert d.effect == "deny" and d.deciding.kind == "default"


def test_unnamed_rule_gets_derived_name(engine):
    d = engine.evaluate({"workflow": WF, "type": "delete_account"}, now=NOW)
    assert d.effect == "require_approval"
    assert d.deciding.name.startswith("require_approval_")
    assert d.approvals[0].roles == ("legal",)


# ------------------------------------------------------------------ fail closed

def test_undeclared_action_type_is_denied_and_named(engine):
    d = engine.evaluate({"workflow": WF, "type": "launch_rocket"}, now=NOW)
    assert d.effect == "deny" and d.deciding.kind == "undeclared"
    assert "launch_rocket" in d.reason


def test_undeclared_workflow_is_denied_and_named(engine):
    d = engine.evaluate({"workflow": "nope", "type": "x"}, now=NOW)
    assert d.effect == "deny" and d.deciding.kind == "undeclared" and "`nope`" in d.reason


def test_erroring_condition_matches_for_deny_and_approval_not_allow(engine):
    d = engine.evaluate({"workflow": WF, "type": "send_customer_reply"}, now=NOW)  # no amount, no recipient
    assert d.effect == "deny" and d.deciding.name == "blocked_domain"
    by_rule = {e.rule: e for e in d.errors}
    assert set(by_rule) == {"blocked_domain", "big", "small"}
    assert by_rule["big"].location.endswith("support.policy:20:22")
    trace = {t.name: t for t in d.trace}
    assert trace["small"].matched is False and trace["small"].error
    assert trace["big"].matched is True and trace["blocked_domain"].matched is True


def test_erroring_allow_never_allows(engine):
    # `amount` is a string: `<= 100.0` errors, so `small` cannot allow; `big` errors and requires approval
    d = engine.evaluate(reply(amount="12"), now=NOW)
    assert d.effect == "require_approval"
    assert {e.rule for e in d.errors} == {"big", "small"}


def test_non_bool_condition_is_an_error(engine):
    d = engine.evaluate({"workflow": "ops", "type": "run_query", "rows": 3}, now=NOW)
    assert d.effect == "deny"
    assert d.errors[0].rule == "bad_type" and "not a bool" in d.errors[0].message


def test_erroring_stop_condition_stops():
    e = engine_from_texts({"s.policy": '''
roles [r]
workflow "w" { version "1" owners { business "b" technical "t" } default deny
  action a { system "s" allow yes when `true` }
  stop big { when `action.amount > 10` severity low owner "o" resume when { ok: `evidence.ok` } }
}'''})
    d = e.evaluate({"workflow": "w", "type": "a"}, now=NOW)
    assert d.effect == "stop" and d.errors[0].kind == "stop"
    assert e.evaluate({"workflow": "w", "type": "a", "amount": 1}, now=NOW).effect == "allow"


@pytest.mark.parametrize("bad", [None, 5, "x", [1, 2], {"type": "x"}, {"workflow": WF}, {"workflow": 3, "type": 4},
                                 {"workflow": WF, "type": ["send_customer_reply"]}])
def test_bad_action_data_never_raises(engine, bad):
    d = engine.evaluate(bad, now=NOW)
    assert d.effect == "deny" and d.errors


def _read_field(engine, workflow, atype):
    """A field the type's gate reads that a decision does not show (see CAction.reads)."""
    reads = engine.compiled.workflows[workflow].actions[atype].reads
    return next(k for k in reads if k not in ("id", "type", "workflow"))


def test_huge_and_deep_values_in_read_fields_are_rejected_and_unread_ones_ignored(engine):
    deep: dict = {}
    cur = deep
    for _ in range(MAX_INPUT_DEPTH + 5):
        cur["x"] = {}
        cur = cur["x"]
    cyc: dict = {}
    cyc["self"] = cyc
    field = _read_field(engine, WF, "send_customer_reply")
    plain = engine.evaluate(reply(), now=NOW)
    for bad, words in ((deep, "deep"), (list(range(MAX_INPUT_ITEMS + 1)), "values"), (cyc, "deep")):
        d = engine.evaluate(reply(**{field: bad}), now=NOW)
        assert d.effect == "deny" and d.errors[0].kind == "input" and words in d.errors[0].message
        assert field in engine.compiled.workflows[WF].actions["send_customer_reply"].reads
        # a field no condition reads is never looked at: the decision is the one without it
        d = engine.evaluate(reply(blob=bad), now=NOW)
        assert d.model_dump(mode="json") == plain.model_dump(mode="json")
    # the fields a decision shows are always checked
    assert engine.evaluate(reply(id=deep), now=NOW).errors[0].kind == "input"


def test_bad_now_fails_closed(engine):
    d = engine.evaluate(reply(), now="yesterday")
    assert d.effect == "deny" and "RFC 3339" in d.errors[0].message


def test_models_and_dicts_give_the_same_decision(engine):
    a = engine.evaluate(reply(amount=120), now=NOW)
    b = engine.evaluate(Action(**reply(amount=120)), WorkflowState(), now=datetime(2026, 7, 2, 10, tzinfo=UTC))
    # the action digest is of the action as the gate read it: the model has `id: null`
    assert {**a.model_dump(mode="json"), "action_digest": None} == {**b.model_dump(mode="json"), "action_digest": None}
    assert (
        b.action_digest
        == action_digest(Action(**reply(amount=120)))
        == action_digest({**reply(amount=120), "id": None})
    )


# ------------------------------------------------------------------ stopped workflows


def test_stopped_workflow_stays_stopped(engine):
    state = {"status": "stopped", "stopped_by": "unsupported_promise", "stopped_at": "2026-07-02T09:00:00Z"}
    for action in (reply(), {"workflow": WF, "type": "log_crm_activity"}, {"workflow": WF, "type": "unknown"}):
        d = engine.evaluate(action, state, now=NOW)
        assert d.effect == "stop" and d.deciding.kind == "stopped"
        assert d.stop.trigger == "unsupported_promise" and d.stop.known
        assert d.stop.stopped_at == "2026-07-02T09:00:00Z"


def test_stopped_by_unknown_trigger_stays_stopped(engine):
    d = engine.evaluate(reply(), {"status": "stopped", "stopped_by": "who_knows"}, now=NOW)
    assert d.effect == "stop" and d.stop.trigger == "who_knows" and not d.stop.known and d.errors
    d = engine.evaluate(reply(), {"status": "stopped"}, now=NOW)
    assert d.effect == "stop"


REPAIR = """roles [reviewer]
workflow "w" {
  version "1"
  owners { business "b" technical "t" }
  action send_correction {
    system "helpdesk"
    runs_while_stopped
    reversible partial via "email.recall" within 60s
    allow small when `action.n < 5`
    deny while_stopped_limit when `workflow.status == "stopped" && action.n > 100`
  }
  action send_reply { system "helpdesk" reversible full via "r" allow when `true` }
  stop boom { when `action.n > 1000` severity high owner "o" resume when { ok: `evidence.ok` } }
}
"""


def test_repair_action_is_gated_by_its_own_rules_while_stopped():
    eng = engine_from_texts({"w.policy": REPAIR})
    state = {"status": "stopped", "stopped_by": "boom"}
    small = eng.evaluate({"workflow": "w", "type": "send_correction", "n": 1}, state, now=NOW)
    assert small.effect == "allow" and small.deciding.name == "small"
    assert "runs while stopped" in small.reason and small.stop is None
    big = eng.evaluate({"workflow": "w", "type": "send_correction", "n": 200}, state, now=NOW)
    assert big.effect == "deny" and big.deciding.name == "while_stopped_limit"  # sees workflow.status
    huge = eng.evaluate({"workflow": "w", "type": "send_correction", "n": 2000}, state, now=NOW)
    assert huge.effect == "stop" and huge.stop.trigger == "boom"  # stop triggers still apply
    mid = eng.evaluate({"workflow": "w", "type": "send_correction", "n": 50}, state, now=NOW)
    assert mid.effect == "require_approval" and mid.deciding.kind == "default"  # the default, never allow
    # every other action of the workflow stays stopped
    other = eng.evaluate({"workflow": "w", "type": "send_reply", "n": 1}, state, now=NOW)
    assert other.effect == "stop" and other.deciding.kind == "stopped"
    # the same repair action in a running workflow: the stopped-only deny does not apply
    running = eng.evaluate({"workflow": "w", "type": "send_correction", "n": 200}, None, now=NOW)
    assert running.effect == "require_approval" and running.deciding.kind == "default"


def test_unknown_status_fails_closed(engine):
    d = engine.evaluate(reply(), {"status": "paused"}, now=NOW)
    assert d.effect == "deny"


def test_workflow_state_is_visible_to_conditions():
    e = engine_from_texts(
        {
            "s.policy": """
workflow "w" { version "1" owners { business "b" technical "t" } default deny
  action a { system "s" allow quiet when `workflow.status == "running" && !has(workflow.hot)` }
}"""
        }
    )
    assert e.evaluate({"workflow": "w", "type": "a"}, now=NOW).effect == "allow"
    assert e.evaluate({"workflow": "w", "type": "a"}, {"status": "running", "hot": True}, now=NOW).effect == "deny"


# ------------------------------------------------------------------ reversibility and time


def test_reversibility_window_and_cost(engine):
    d = engine.evaluate(reply(amount=120), now=NOW)
    r = d.reversibility
    assert (r.klass, r.method, r.window, r.window_seconds) == ("partial", "email.recall", "60s", 60)
    assert r.reversible_until == "2026-07-02T10:01:00Z"
    after = {c.scenario: c for c in r.after_window}
    assert set(after) == {
        "reviewer_error",
        "customer_request",
        "incident",
        "policy_reversal",
        "regulatory_order",
        "goodwill_correction",
    }
    assert after["reviewer_error"].route == "escalations"
    assert [(s.roles, s.source) for s in after["reviewer_error"].slots] == [
        (("reviewer",), "standard"),
        (("support_manager",), "escalation"),
    ]
    dumped = d.model_dump(mode="json")["reversibility"]
    assert dumped["class"] == "partial"


def test_irreversible_action_has_no_reversal_cost(engine):
    d = engine.evaluate({"workflow": WF, "type": "delete_account"}, now=NOW)
    assert d.reversibility.klass == "irreversible" and not d.reversibility.after_window


def test_now_as_timestamp_in_cel():
    e = engine_from_texts(
        {
            "s.policy": """
workflow "w" { version "1" owners { business "b" technical "t" } default deny
  action a { system "s" allow office when `now.getHours() >= 9 && now.getHours() < 17` }
}"""
        }
    )
    assert e.evaluate({"workflow": "w", "type": "a"}, now="2026-07-02T10:00:00Z").effect == "allow"
    assert e.evaluate({"workflow": "w", "type": "a"}, now="2026-07-02T20:00:00+00:00").effect == "deny"
    assert e.evaluate({"workflow": "w", "type": "a"}, now=datetime(2026, 7, 2, 11, tzinfo=UTC)).effect == "allow"


def test_default_now_is_current_time(engine):
    d = engine.evaluate(reply())
    assert d.evaluated_at.endswith("Z") and d.evaluated_at[:4] >= "2026"


# ------------------------------------------------------------------ determinism and threads


def test_same_input_same_bytes(engine):
    a = json.dumps(engine.evaluate(reply(amount=120), now=NOW).model_dump(mode="json"))
    b = json.dumps(load_engine().evaluate(reply(amount=120), now=NOW).model_dump(mode="json"))
    assert a == b


def test_outputs_are_frozen(engine):
    d = engine.evaluate(reply(), now=NOW)
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        d.effect = "deny"
    assert isinstance(d.matched, tuple)


def test_thread_safe(engine):
    expected = engine.evaluate(reply(amount=120), now=NOW).model_dump(mode="json")
    bad = []

    def work():
        for _ in range(200):
            if engine.evaluate(reply(amount=120), now=NOW).model_dump(mode="json") != expected:
                bad.append(1)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad


def test_decision_validates_against_its_own_model(engine):
    d = engine.evaluate(reply(amount=120, claims=[{"sourced": False}]), now=NOW)
    again = Decision.model_validate(d.model_dump(mode="json"))
    assert again.model_dump(mode="json") == d.model_dump(mode="json")


# ------------------------------------------------------------------ resume

EVIDENCE_OK = {"reviewer_screen": {"shows_claim_source": True}, "blocked_promises": ["p1"]}


def test_resume_allowed_when_all_criteria_hold(engine):
    r = engine.may_resume(WF, "unsupported_promise", EVIDENCE_OK, now=NOW)
    assert r.allowed and not r.unmet and [c.name for c in r.criteria] == ["claim_source_visible", "promises_blocked"]


def test_resume_names_each_unmet_criterion(engine):
    ev = {"reviewer_screen": {"shows_claim_source": False}, "blocked_promises": []}
    r = engine.may_resume(WF, "unsupported_promise", ev, now=NOW)
    assert not r.allowed and r.unmet == ("claim_source_visible", "promises_blocked")
    reasons = {c.name: c.reason for c in r.criteria}
    assert reasons["claim_source_visible"] == "condition is false"
    assert reasons["promises_blocked"] == "condition is false"
    # evidence without a declared field is refused whole: no criterion is evaluated
    r = engine.may_resume(WF, "unsupported_promise", {"reviewer_screen": {"shows_claim_source": False}}, now=NOW)
    assert not r.allowed and r.errors and r.unmet == ("claim_source_visible", "promises_blocked")


def test_resume_from_workflow_state(engine):
    state = {"status": "stopped", "stopped_by": "unsupported_promise"}
    assert engine.may_resume(WF, state, EVIDENCE_OK, now=NOW).allowed


@pytest.mark.parametrize("wf,stop", [("nope", "unsupported_promise"), (WF, "nope"), (WF, None), (WF, {"x": 1})])
def test_resume_unknown_is_not_allowed(engine, wf, stop):
    r = engine.may_resume(wf, stop, EVIDENCE_OK, now=NOW)
    assert not r.allowed and r.errors


def test_resume_bad_evidence_is_not_allowed(engine):
    r = engine.may_resume(WF, "unsupported_promise", [1, 2], now=NOW)
    assert not r.allowed and r.errors


class _Hostile(dict):
    """A mapping whose own methods raise: the evaluators must still answer, fail-closed."""

    def get(self, *a, **k):
        raise RuntimeError("hostile get")

    def items(self):
        raise RuntimeError("hostile items")

    def values(self):
        raise RuntimeError("hostile values")

    def __iter__(self):
        raise RuntimeError("hostile iter")

    def __contains__(self, k):
        raise RuntimeError("hostile contains")

    def keys(self):
        raise RuntimeError("hostile keys")


def test_inputs_whose_methods_raise_fail_closed_never_raise(engine):
    bad = _Hostile(workflow=WF, type="send_customer_reply")
    d = engine.evaluate(bad, now=NOW)
    assert d.effect == "deny" and any("internal error" in e.message for e in d.errors)
    plan = engine.classify_rollback(_Hostile(workflow=WF, scenario="reviewer_error"), now=NOW)
    assert not plan.authorizable and plan.errors
    v = engine.authorize_rollback(plan, [_Hostile(principal="x")], now=NOW)
    assert not v.satisfied
    r = engine.may_resume(WF, _Hostile(stopped_by="x"), _Hostile(a=1), now=NOW)
    assert not r.allowed and r.errors
    json.dumps(d.model_dump(mode="json")), json.dumps(plan.model_dump(mode="json"))  # still serializable
