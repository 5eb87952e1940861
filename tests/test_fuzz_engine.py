"""Hostile evaluator input: the evaluators never raise, and no input widens permission.

Properties (hypothesis, small budgets; the long run is tests/fuzz/fuzz_engine.py):

- `evaluate`, `classify_rollback`, `authorize_rollback`, `may_resume` return their
  model for any input (missing, null, wrong-typed and extra fields, NaN, 2^63,
  strings for numbers, deep nesting, non-JSON Python objects), and the result dumps
  to JSON.
- No action gets `allow` unless a Python oracle that mirrors the policy's allow rule
  (and its deny and stop conditions) says it is allowed. The policy is built so that
  `allow` needs positive evidence (`verified == true`, a number <= 100, `currency ==
  "EUR"`, a present non-sanctioned `country`), so every malformed or missing field must
  fail closed.
- Mutating a well-formed action whose decision is deny/require_approval/stop never
  yields `allow` unless the mutated action is itself allowed by the oracle.
- A condition that returns a non-bool is an error: listed with rule and location, and
  counted as matched for deny/require_approval/stop, not matched for allow.
- Huge inputs are rejected before conversion (fast, with an input error).
"""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from depth import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy_engine.engine import MAX_INPUT_DEPTH, MAX_INPUT_ITEMS, Engine
from policy_engine.language.loader import load_text
from policy_engine.models import AuthorizationVerdict, Decision, ResumeDecision, RollbackPlan

NOW = "2026-07-02T10:00:00Z"
NOW_DT = datetime(2026, 7, 2, 10, 0, tzinfo=UTC)

PAY = """
roles [reviewer, support_manager, legal]
const sanctioned = ["XX", "YY"]
workflow "pay" {
  version "1.0"
  owners { business "Finance" technical "Platform" }
  default deny
  action transfer {
    system "bank"
    reversible partial via "bank.recall" within 1h
    prerequisite not_settled `!original.settled`
    side_effects [notify_customer]
    allow small when `action.amount <= 100.0 && action.verified == true && action.currency == "EUR"`
    require_approval big by 1 reviewer when `action.amount > 100.0`
    deny sanctioned when `action.country in policy.sanctioned`
  }
  action notify_customer {
    system "mail"
    reversible full via "mail.recall"
    allow when `action.template == "ok"`
  }
  stop runaway {
    when `action.type == "transfer" && action.amount > 1000000.0`
    severity critical
    owner "Finance"
    resume when { reviewed: `evidence.reviewed == true` }
  }
  rollback reviewer_error {
    route verification
    authorize 1 reviewer distinct from original.reviewer, request.requested_by
    cascade depth 2
    after window { authorize 1 support_manager }
  }
}
"""

# Conditions that return non-bools, for the "non-bool is an error" property.
NONBOOL = """
roles [reviewer]
workflow "nb" {
  version "1"
  owners { business "b" technical "t" }
  default require_approval
  action a {
    allow ok when `action.amount`
    deny bad when `action.flag`
    require_approval rev by 1 reviewer when `action.level`
  }
  stop odd {
    when `action.halt`
    severity low
    owner "o"
    resume when { c: `evidence.value` }
  }
}
"""

SANCTIONED = {"XX", "YY"}


def engine_of(text: str, name: str) -> Engine:
    r = load_text(text, name)
    assert r.policy_set is not None, [f"{d.span}: {d.message}" for d in r.errors]
    return Engine.from_load_result(r)


ENGINE = engine_of(PAY, "pay.policy")
NB = engine_of(NONBOOL, "nb.policy")

# tests/fuzz/fuzz_engine.py raises the budget through this variable for long campaigns.
FUZZ = settings(max_examples=int(os.environ.get("STOPLINE_FUZZ_EXAMPLES", str(examples(100)))), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])


# ------------------------------------------------------------------ the oracle

def _num(v) -> bool:
    return type(v) in (int, float) and not (type(v) is float and math.isnan(v))


def oracle_allows(action, state=None, now=NOW) -> bool:
    """True when the policy *may* allow this action (a superset of CEL's answer).

    allow needs: the `small` rule true (number <= 100, verified is the bool true,
    currency the string "EUR"), the `sanctioned` deny rule false (country present and not
    a sanctioned string), no stop (amount > 1e6 is impossible when <= 100) and a running
    workflow state. (`now` does not enter these conditions; an invalid `now` is
    checked to deny in its own test.)"""
    if not isinstance(action, dict):
        return False
    if action.get("workflow") != "pay" or action.get("type") != "transfer":
        return action.get("workflow") == "pay" and action.get("type") == "notify_customer" \
            and action.get("template") == "ok" and state_ok(state)
    if not state_ok(state):
        return False
    amount = action.get("amount")
    if not _num(amount) or not amount <= 100.0:
        return False
    if action.get("verified") is not True or action.get("currency") != "EUR" or type(action.get("currency")) is not str:
        return False
    if "country" not in action:
        return False
    country = action["country"]
    if type(country) is str and country in SANCTIONED:
        return False
    return True


def state_ok(state) -> bool:
    if state is None:
        return True
    return isinstance(state, dict) and state.get("status", "running") == "running"


# ------------------------------------------------------------------ junk values

_weird = st.sampled_from([
    float("nan"), float("inf"), float("-inf"), 2**63, 2**63 - 1, -(2**63), -(2**63) - 1, 2**64, 10**400,
    -0.0, 0, 1e308, 5e-324, True, False, 100, 100.0, 100.0000001, 99.99999, -1, "50", "100", "1e2", "NaN",
    "", " 50", Decimal("50"), Decimal("NaN"), b"50",
])
# an int of more than 4300 digits (built lazily: hypothesis cannot repr one in a sampled_from)
weird_numbers = st.one_of(_weird, st.builds(lambda: 10**5000), st.builds(lambda: -(10**5000)))


def deep(n: int, leaf=1):
    v = leaf
    for _ in range(n):
        v = {"x": v} if n % 2 else [v]
    return v


leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20), weird_numbers,
    st.sampled_from(["EUR", "eur", "EUR ", "XX", "xx", "pay", "transfer", "\ud800", "\x00", "true", "True",
                     "running", "stopped", NOW, "2026-07-02T10:00:00", "not a time"]),
    st.binary(max_size=8),
    st.sampled_from([datetime(2026, 1, 1), NOW_DT, timedelta(seconds=5), (1, 2), frozenset({1}), object(),
                     Decimal("1.5")]),
)
junk = st.recursive(leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=8), st.sampled_from(
        ["amount", "verified", "currency", "country", "workflow", "type", "id", "status", "stopped_by"])),
        inner, max_size=4)), max_leaves=12)
junk_with_deep = st.one_of(junk, st.integers(150, 260).map(deep), st.just(deep(100_000)))

FIELDS = ["workflow", "type", "id", "amount", "verified", "currency", "country", "template", "extra", "__class__",
          "action", "policy"]


@st.composite
def well_formed(draw):
    return {
        "workflow": "pay", "type": "transfer", "id": draw(st.text(max_size=5)),
        "amount": draw(st.one_of(st.integers(-1000, 2_000_000), st.floats(-1e7, 1e7))),
        "verified": draw(st.booleans()),
        "currency": draw(st.sampled_from(["EUR", "USD"])),
        "country": draw(st.sampled_from(["FR", "XX", "YY", "DE"])),
    }


@st.composite
def mutated(draw, base):
    a = dict(base)
    for _ in range(draw(st.integers(1, 4))):
        key = draw(st.one_of(st.sampled_from(FIELDS), st.text(max_size=6)))
        op = draw(st.sampled_from(["delete", "null", "junk", "weird", "deep"]))
        if op == "delete":
            a.pop(key, None)
        elif op == "null":
            a[key] = None
        elif op == "weird":
            a[key] = draw(weird_numbers)
        elif op == "deep":
            a[key] = draw(st.integers(1, 260).map(deep))
        else:
            a[key] = draw(junk)
    return a


states = st.one_of(
    st.none(),
    st.just({"status": "running"}),
    st.just({"status": "stopped", "stopped_by": "runaway"}),
    st.fixed_dictionaries(
        {"status": st.one_of(junk, st.sampled_from(["running", "stopped", "Running"]))},
        optional={"stopped_by": junk, "stopped_at": junk, "name": junk},
    ),
    junk,
)
nows = st.one_of(
    st.just(NOW),
    st.just(NOW),
    st.none(),
    junk,
    st.sampled_from(
        [
            "2026-07-02T10:00:00+25:00",
            "9999-12-31T23:59:59Z",
            "0001-01-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            datetime(2026, 1, 1),
            datetime.max,
            datetime.min,
        ]
    ),
)


def assert_decision(d: Decision) -> None:
    assert isinstance(d, Decision)
    assert d.effect in ("allow", "require_approval", "deny", "stop")
    assert d.policy_hash == ENGINE.policy_hash or d.policy_hash == NB.policy_hash
    json.dumps(d.model_dump(mode="json"))
    for e in d.errors:
        assert e.rule
        if e.kind in ("rule", "stop"):
            assert e.location and e.location.count(":") >= 2, e
    if d.effect == "allow":
        assert not [e for e in d.errors if e.kind == "input"], d.errors


# ------------------------------------------------------------------ never raise; never widen


@FUZZ
@given(junk_with_deep, states, nows)
def test_evaluate_never_raises_on_junk(action, state, now):
    d = ENGINE.evaluate(action, state, now)
    assert_decision(d)
    if d.effect == "allow":
        assert oracle_allows(action, state, now), (action, state, now)


@FUZZ
@given(well_formed().flatmap(lambda a: st.tuples(st.just(a), mutated(a))), states, nows)
def test_mutations_never_widen(pair, state, now):
    base, mut = pair
    d = ENGINE.evaluate(mut, state, now)
    assert_decision(d)
    if d.effect == "allow":
        assert oracle_allows(mut, state, now), mut
    before = ENGINE.evaluate(base, None, NOW)
    assert (before.effect == "allow") == oracle_allows(base), base  # the oracle is exact on well-formed input


@FUZZ
@given(well_formed())
def test_oracle_is_exact_on_well_formed_actions(action):
    d = ENGINE.evaluate(action, None, NOW)
    assert (d.effect == "allow") == oracle_allows(action)
    assert not d.errors


@FUZZ
@given(well_formed().filter(lambda a: not oracle_allows(a)).flatmap(lambda a: st.tuples(st.just(a), mutated(a))))
def test_non_allow_decision_is_not_turned_into_allow(pair):
    base, mut = pair
    assert ENGINE.evaluate(base, None, NOW).effect != "allow"
    d = ENGINE.evaluate(mut, None, NOW)
    if d.effect == "allow":
        assert oracle_allows(mut), ("a mutation widened", base, mut)


@pytest.mark.parametrize(
    "value", [float("nan"), True, "50", b"50", Decimal("50"), None, [50], {"v": 50}, datetime(2026, 1, 1), "", "NaN"]
)
def test_amount_of_the_wrong_type_fails_closed(value):
    a = {"workflow": "pay", "type": "transfer", "amount": value, "verified": True, "currency": "EUR", "country": "FR"}
    d = ENGINE.evaluate(a, None, NOW)
    assert d.effect != "allow", (value, d.effect)


@pytest.mark.parametrize(
    "field,value",
    [
        ("verified", "true"),
        ("verified", 1),
        ("verified", [True]),
        ("verified", None),
        ("currency", b"EUR"),
        ("currency", "eur"),
        ("currency", "EUR "),
        ("currency", ["EUR"]),
    ],
)
def test_positive_evidence_must_be_exact(field, value):
    a = {"workflow": "pay", "type": "transfer", "amount": 5, "verified": True, "currency": "EUR", "country": "FR"}
    assert ENGINE.evaluate(a, None, NOW).effect == "allow"
    a[field] = value
    assert ENGINE.evaluate(a, None, NOW).effect != "allow"


def test_missing_field_in_a_deny_condition_fails_closed():
    a = {"workflow": "pay", "type": "transfer", "amount": 5, "verified": True, "currency": "EUR"}
    d = ENGINE.evaluate(a, None, NOW)
    assert d.effect == "deny" and d.deciding.name == "sanctioned"
    (err,) = [e for e in d.errors if e.rule == "sanctioned"]
    assert err.location.startswith("pay.policy:")


def test_int64_edges_do_not_wrap_around():
    base = {"workflow": "pay", "type": "transfer", "verified": True, "currency": "EUR", "country": "FR"}
    assert ENGINE.evaluate({**base, "amount": 2**63}, None, NOW).effect == "stop"
    assert ENGINE.evaluate({**base, "amount": 2**64 + 5}, None, NOW).effect == "stop"
    assert ENGINE.evaluate({**base, "amount": 10**400}, None, NOW).effect == "stop"


@pytest.mark.parametrize("key", ["workflow", "type"])
@pytest.mark.parametrize("value", [None, 1, ["pay"], {"pay": 1}, "Pay", "pay ", "\ud800", ""])
def test_wrong_workflow_or_type_is_denied(key, value):
    a = {"workflow": "pay", "type": "transfer", "amount": 5, "verified": True, "currency": "EUR", "country": "FR"}
    a[key] = value
    d = ENGINE.evaluate(a, None, NOW)
    assert d.effect == "deny"
    assert d.errors


def test_stopped_state_always_stops():
    a = {"workflow": "pay", "type": "transfer", "amount": 5, "verified": True, "currency": "EUR", "country": "FR"}
    for state in (
        {"status": "stopped"},
        {"status": "stopped", "stopped_by": "nope"},
        {"status": "stopped", "stopped_by": ["runaway"]},
        {"status": "stopped", "stopped_at": "junk"},
    ):
        d = ENGINE.evaluate(a, state, NOW)
        assert d.effect == "stop", state
    for state in ({"status": "Stopped"}, {"status": None}, {"status": 1}, "stopped", ["stopped"]):
        assert ENGINE.evaluate(a, state, NOW).effect == "deny", state


@pytest.mark.parametrize(
    "now",
    [
        "junk",
        "2026-07-02T10:00:00",
        5,
        [NOW],
        {"t": NOW},
        "2026-02-30T00:00:00Z",
        "2026-07-02T10:00:00+25:00",
        float("nan"),
        "\ud800",
    ],
)
def test_invalid_now_denies(now):
    a = {"workflow": "pay", "type": "transfer", "amount": 5, "verified": True, "currency": "EUR", "country": "FR"}
    d = ENGINE.evaluate(a, None, now)
    assert d.effect == "deny" and d.errors[0].kind == "input"


def test_non_action_inputs():
    for a in (None, 1, "pay", [], [{"workflow": "pay"}], b"{}", object(), float("nan")):
        d = ENGINE.evaluate(a, None, NOW)
        assert_decision(d)
        assert d.effect == "deny"


# ------------------------------------------------------------------ non-bool conditions are errors


@pytest.mark.parametrize("value", [1, 0, "yes", "", [True], {"a": True}, None, 1.0, b"\x01"])
def test_non_bool_condition_is_an_error(value):
    base = {"workflow": "nb", "type": "a", "amount": False, "flag": False, "level": False, "halt": False}
    assert NB.evaluate(base, None, NOW).effect == "require_approval"  # the default: nothing matched
    # allow: a non-bool never allows
    d = NB.evaluate({**base, "amount": value}, None, NOW)
    assert d.effect == "require_approval" and d.deciding.kind == "default"
    (e,) = d.errors
    assert e.rule == "ok" and e.kind == "rule" and e.location.startswith("nb.policy:8:")
    # deny: a non-bool counts as matched
    d = NB.evaluate({**base, "amount": True, "flag": value}, None, NOW)
    assert d.effect == "deny" and d.deciding.name == "bad"
    assert [e.rule for e in d.errors] == ["bad"]
    # require_approval: matched
    d = NB.evaluate({**base, "amount": True, "level": value}, None, NOW)
    assert d.effect == "require_approval" and d.deciding.name == "rev"
    # stop: matched
    d = NB.evaluate({**base, "amount": True, "halt": value}, None, NOW)
    assert d.effect == "stop" and d.deciding.name == "odd"
    assert [e.rule for e in d.errors] == ["odd"] and d.errors[0].location.startswith("nb.policy:")


@pytest.mark.parametrize("value", [1, "yes", None, [True], {"x": 1}])
def test_non_bool_criterion_is_unmet(value):
    r = NB.may_resume("nb", "odd", {"value": value}, NOW)
    assert not r.allowed and r.unmet == ("c",)
    assert r.errors and r.errors[0].rule == "c" and r.errors[0].location
    assert NB.may_resume("nb", "odd", {"value": True}, NOW).allowed


# ------------------------------------------------------------------ huge inputs rejected before conversion

OK_TRANSFER = {"workflow": "pay", "type": "transfer", "amount": 5, "verified": True, "currency": "EUR", "country": "FR"}


def test_huge_inputs_in_read_fields_are_rejected_fast_and_unread_ones_cost_nothing():
    cases = {
        "items": list(range(MAX_INPUT_ITEMS + 10)),
        "depth": deep(MAX_INPUT_DEPTH + 5),
        "depth100k": deep(100_000),
        "chars": "x" * 5_000_000,
        "keys": {f"k{i}": i for i in range(MAX_INPUT_ITEMS + 1)},
        "shared": [list(range(1000))] * 200,  # 200k values, 1k distinct: every visit counts
    }
    plain = ENGINE.evaluate(OK_TRANSFER, None, NOW).model_dump(mode="json")
    assert plain["effect"] == "allow"
    assert "country" in ENGINE.compiled.workflows["pay"].actions["transfer"].reads
    for name, bad in cases.items():
        d = ENGINE.evaluate({**OK_TRANSFER, "country": bad}, None, NOW)  # read by `sanctioned`
        assert d.effect == "deny" and d.errors[0].kind == "input", name
        d = ENGINE.evaluate({**OK_TRANSFER, "attachment": bad}, None, NOW)  # read by nothing
        assert d.model_dump(mode="json") == plain, name
    state = {"status": "running", "x": deep(100_000)}  # a workflow state is always checked whole
    assert ENGINE.evaluate(OK_TRANSFER, state, NOW).effect == "deny"
    r = ENGINE.may_resume("pay", "runaway", {"reviewed": True, "x": deep(100_000)}, NOW)
    assert not r.allowed


def test_self_referencing_input_does_not_hang():
    plain = ENGINE.evaluate(OK_TRANSFER, None, NOW).model_dump(mode="json")
    for field in ("country", "unread"):
        a = dict(OK_TRANSFER)
        a[field] = a
        lst: list = []
        lst.append(lst)
        a["loop"] = lst
        d = ENGINE.evaluate(a, None, NOW)
        if field == "country":
            assert d.effect == "deny" and d.errors[0].kind == "input"
        else:
            assert d.model_dump(mode="json") == plain


# ------------------------------------------------------------------ the other evaluators

records = st.recursive(
    st.fixed_dictionaries(
        {
            "id": st.one_of(st.text(max_size=3), junk),
            "type": st.one_of(st.sampled_from(["transfer", "notify_customer", "nope"]), junk),
        },
        optional={
            "executed_at": st.one_of(st.just("2026-07-02T09:30:00Z"), junk),
            "reviewer": junk,
            "settled": junk,
            "requester": junk,
        },
    ),
    lambda inner: st.fixed_dictionaries(
        {
            "id": st.text(max_size=3),
            "type": st.just("transfer"),
            "downstream": st.one_of(st.lists(inner, max_size=3), junk),
        }
    ),
    max_leaves=10,
)
requests = st.one_of(
    junk,
    st.fixed_dictionaries(
        {
            "workflow": st.one_of(st.just("pay"), junk),
            "scenario": st.one_of(st.just("reviewer_error"), junk),
            "requested_by": st.one_of(st.just("carol"), junk),
            "original": st.one_of(records, junk),
        },
        optional={"reason": junk, "requested_at": junk, "extra": junk},
    ),
)


@FUZZ
@given(requests, nows)
def test_classify_rollback_never_raises(req, now):
    plan = ENGINE.classify_rollback(req, now)
    assert isinstance(plan, RollbackPlan)
    json.dumps(plan.model_dump(mode="json"))
    if not plan.authorizable:
        v = ENGINE.authorize_rollback(
            plan, [{"principal": "x", "roles": ["reviewer", "support_manager"], "plan_hash": plan.plan_hash}], NOW
        )
        assert not v.satisfied


approvals = st.lists(
    st.one_of(
        junk,
        st.fixed_dictionaries(
            {
                "principal": st.one_of(st.sampled_from(["alice", "bob", "Bob", "carol", ""]), junk),
                "roles": st.one_of(
                    st.just(["reviewer"]), st.lists(st.sampled_from(["reviewer", "support_manager", "x"])), junk
                ),
            },
            optional={"plan_hash": junk, "policy_hash": junk, "at": junk, "expires_at": junk, "extra": junk},
        ),
    ),
    max_size=6,
)

GOOD_REQ = {
    "workflow": "pay",
    "scenario": "reviewer_error",
    "requested_by": "carol",
    "original": {
        "id": "t1",
        "type": "transfer",
        "executed_at": "2026-07-02T09:30:00Z",
        "reviewer": "bob",
        "settled": False,
    },
}


@FUZZ
@given(approvals, nows)
def test_authorize_never_raises_and_junk_never_satisfies(apps, now):
    plan = ENGINE.classify_rollback(GOOD_REQ, NOW)
    v = ENGINE.authorize_rollback(plan, apps, now)
    assert isinstance(v, AuthorizationVerdict)
    json.dumps(v.model_dump(mode="json"))
    # no generated approval carries the plan's hash, so nothing can be satisfied
    assert not v.satisfied


@FUZZ
@given(junk, approvals)
def test_authorize_with_junk_plan(plan, apps):
    v = ENGINE.authorize_rollback(plan, apps, NOW)
    assert isinstance(v, AuthorizationVerdict) and not v.satisfied


@FUZZ
@given(
    st.one_of(st.just("pay"), junk),
    st.one_of(st.just("runaway"), junk),
    st.one_of(st.just({"reviewed": True}), junk_with_deep),
    nows,
)
def test_may_resume_never_raises(wf, stop, evidence, now):
    r = ENGINE.may_resume(wf, stop, evidence, now)
    assert isinstance(r, ResumeDecision)
    json.dumps(r.model_dump(mode="json"))
    if r.allowed:
        assert wf == "pay" and isinstance(evidence, dict) and evidence.get("reviewed") is True


def test_decisions_with_odd_strings_serialize():
    a = {
        "workflow": "pay",
        "type": "transfer",
        "id": "\x00\x1b[31m",
        "amount": 5,
        "verified": True,
        "currency": "EUR",
        "country": "FR",
    }
    d = ENGINE.evaluate(a, None, NOW)
    assert d.effect == "allow"
    json.dumps(d.model_dump(mode="json"))
    d.model_dump_json()


# Regression: NaN compares false with everything, so a NaN amount slipped past
# `deny big when `action.amount > 1000.0`` and the allow rule allowed it. A non-finite
# number in any field a condition reads is an input error (engine.check_fields); one in
# a field no condition reads cannot change the decision and is never looked at.
NAN_POLICY = """
roles [r]
workflow "w" {
  version "1"
  owners { business "b" technical "t" }
  default deny
  action refund {
    deny big when `action.amount > 1000.0`
    allow when `action.verified == true`
  }
  stop s {
    when `action.amount > 1000000.0`
    severity low
    owner "o"
    resume when { ok: `!(evidence.errors > 0.0)` }
  }
}
"""


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), -float("nan")])
def test_non_finite_numbers_never_evade_a_deny_rule(bad):
    e = engine_of(NAN_POLICY, "nan.policy")
    ok = {"workflow": "w", "type": "refund", "amount": 5.0, "verified": True}
    assert e.evaluate(ok, None, NOW).effect == "allow"
    assert e.evaluate({**ok, "amount": 5000.0}, None, NOW).effect == "deny"
    for action in ({**ok, "amount": bad}, {**ok, "amount": [1.0, bad]}, {**ok, "verified": {"x": [bad]}}):
        d = e.evaluate(action, None, NOW)
        assert d.effect == "deny" and d.errors[0].kind == "input" and "non-finite" in d.errors[0].message
    for action in ({**ok, "nested": {"x": [1.0, bad]}}, {**ok, "list": [bad]}):  # read by no condition
        assert e.evaluate(action, None, NOW).model_dump(mode="json") == e.evaluate(ok, None, NOW).model_dump(
            mode="json"
        )
    # a state or evidence holding NaN fails closed too
    assert e.evaluate(ok, {"status": "running", "x": bad}, NOW).effect == "deny"
    assert e.may_resume("w", "s", {"errors": 0.0}, NOW).allowed
    r = e.may_resume("w", "s", {"errors": bad}, NOW)
    assert not r.allowed and r.errors


def test_nan_in_approvals_is_invalid():
    plan = ENGINE.classify_rollback(GOOD_REQ, NOW)
    a = {"principal": "alice", "roles": ["reviewer"], "plan_hash": plan.plan_hash, "weight": float("nan")}
    v = ENGINE.authorize_rollback(plan, [a], NOW)
    assert not v.satisfied and v.rejected[0].code == "invalid"
    del a["weight"]
    assert ENGINE.authorize_rollback(plan, [a], NOW).satisfied


# Regression: `matches` compiled patterns with capture groups; a pattern of 10,000
# nested groups taken from action data made one search take seconds, and a long
# pattern over a long text (RE2's NFA fallback: text x program size) took 40 s.
# Fixed in cel.py: RE2 `never_capture`, and a match whose text length x program size
# exceeds cel.REGEX_MAX_COST is a budget error. Invalid patterns are condition errors;
# every error fails closed.
REGEX_POLICY = """
roles [r]
workflow "w" {
  version "1"
  owners { business "b" technical "t" }
  default deny
  action a {
    deny bad when `action.text.matches(action.pattern)`
    allow when `true`
  }
}
"""


@pytest.mark.parametrize(
    "pattern",
    [
        "(" * 10_000 + ")" * 10_000,
        "(" * 200_000 + ")" * 200_000,
        "(a+)+$",
        "(a|a)*b",
        "a{1000}{1000}{1000}",
        "(",
        "\\",
        "[z-a]",
        "(?P<x>a)" * 5000,
        "x" * 1_000_000,
        "a" * 20_000,
        "[ab]" * 5000,
        "(a|aa){500}" * 4,
    ],
)
def test_hostile_regex_from_action_data_is_bounded(pattern):
    e = engine_of(REGEX_POLICY, "re.policy")
    d = e.evaluate({"workflow": "w", "type": "a", "text": "a" * 100_000, "pattern": pattern}, None, NOW)
    if d.errors:  # an invalid or too costly pattern is a condition error, matched for deny
        assert d.effect == "deny" and d.errors[0].rule == "bad"


def test_regex_cost_budget_is_named():
    e = engine_of(REGEX_POLICY, "re.policy")
    d = e.evaluate({"workflow": "w", "type": "a", "text": "a" * 100_000, "pattern": "a" * 20_000}, None, NOW)
    assert d.effect == "deny" and d.errors[0].budget == "max_regex_cost"
    d = e.evaluate({"workflow": "w", "type": "a", "text": "a" * 1000, "pattern": "b+"}, None, NOW)
    assert d.effect == "allow" and not d.errors


# Regression: a condition returning an integer of more than 4,300 digits made the
# decision's display text raise ValueError out of evaluate (fixed in engine._value_text).
def test_non_bool_huge_int_is_an_error_not_an_exception():
    base = {"workflow": "nb", "type": "a", "amount": False, "flag": False, "level": False, "halt": False}
    for key, effect in (
        ("amount", "require_approval"),
        ("flag", "deny"),
        ("level", "require_approval"),
        ("halt", "stop"),
    ):
        d = NB.evaluate({**base, key: 10**5000}, None, NOW)
        assert d.effect == effect, key
        assert d.errors and "not a bool" in d.errors[0].message
        json.dumps(d.model_dump(mode="json"))
    r = NB.may_resume("nb", "odd", {"value": -(10**5000)}, NOW)
    assert not r.allowed and r.errors


# Regression: an approval whose plan_hash or policy_hash was an int of more than 4300
# digits made str() raise ValueError out of authorize_rollback (fixed in engine.py).
@pytest.mark.parametrize("field", ["plan_hash", "policy_hash"])
def test_huge_int_hashes_in_approvals_are_rejected(field):
    plan = ENGINE.classify_rollback(GOOD_REQ, NOW)
    a = {"principal": "alice", "roles": ["reviewer"], "plan_hash": plan.plan_hash, field: 10**5000}
    v = ENGINE.authorize_rollback(plan, [a], NOW)
    assert not v.satisfied and v.rejected[0].code == field
    json.dumps(v.model_dump(mode="json"))


@FUZZ
@given(junk_with_deep, states)
def test_hostile_input_decisions_are_deterministic(action, state):
    a = ENGINE.evaluate(action, state, NOW).model_dump_json()
    b = ENGINE.evaluate(action, state, NOW).model_dump_json()
    assert a == b


# ------------------------------------------------------------------ the CEL fast path on hostile data


def _conditions(text: str, name: str) -> list:
    r = load_text(text, name)
    return [ce for ce in r.compiled.values()]


FAST_CONDITIONS = (
    _conditions(PAY, "pay.policy") + _conditions(NONBOOL, "nb.policy") + _conditions(NAN_POLICY, "nan.policy")
)


def _same(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if a is b:
        return True
    if a != a:  # NaN of any numeric type
        return b != b
    if type(a).__name__ == "CelError":
        return a.message == b.message and a.budget == b.budget
    return a == b


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(
            ["amount", "verified", "currency", "country", "type", "flag", "level", "halt", "template", "x"]
        ),
        junk,
        max_size=6,
    ),
    st.one_of(st.none(), junk, st.dictionaries(st.sampled_from(["reviewed", "value", "errors"]), junk, max_size=3)),
)
def test_fast_path_agrees_with_the_closures_on_hostile_data(action, evidence):
    act = {
        "action": action,
        "workflow": {"status": "running"},
        "now": NOW_DT,
        "policy": {"sanctioned": ["XX", "YY"]},
        "evidence": evidence,
        "original": action,
        "request": {},
        "stop": {},
    }
    for ce in FAST_CONDITIONS:
        fast = ce._fast_fn()
        if fast is None:
            continue
        slow = ce._slow(act)
        try:
            got = fast(act)
        except Exception:  # noqa: BLE001 - falling back to the closures is always allowed
            continue
        assert _same(got, slow), (ce.source, action, got, slow)


# Regression: a lone surrogate (what a JSON "\ud800" escape decodes to) in an input
# string was echoed into the result, whose model_dump_json() then raised: a runtime
# logging decisions crashed on agent-controlled text. Unpaired surrogates in any field a
# decision shows or a condition reads are an input error, and messages quoting input
# escape them (engine.py); a field nothing reads is never looked at (nor shown).
S = "\ud800"


@pytest.mark.parametrize(
    "call",
    [
        lambda: ENGINE.evaluate({"workflow": "pay", "type": "transfer", "id": S}, None, NOW),
        lambda: ENGINE.evaluate({**OK_TRANSFER, "country": {S: 1}}, None, NOW),
        lambda: ENGINE.evaluate({**OK_TRANSFER, "currency": "EUR" + S}, None, NOW),
        lambda: ENGINE.evaluate(
            {"workflow": "pay", "type": "transfer", "amount": 5, "verified": True, "currency": "EUR", "country": "FR"},
            None,
            S,
        ),
        lambda: ENGINE.evaluate({"workflow": "pay", "type": "transfer"}, {"status": S}, NOW),
        lambda: ENGINE.classify_rollback({**GOOD_REQ, "requested_by": S}, NOW),
        lambda: ENGINE.classify_rollback(GOOD_REQ, "x" + S),
        lambda: ENGINE.authorize_rollback(ENGINE.classify_rollback(GOOD_REQ, NOW), [{"principal": S}], NOW),
        lambda: ENGINE.authorize_rollback(ENGINE.classify_rollback(GOOD_REQ, NOW), [], S),
        lambda: ENGINE.may_resume(S, "runaway", {"reviewed": True}, NOW),
        lambda: ENGINE.may_resume("pay", S, {"reviewed": True}, NOW),
        lambda: ENGINE.may_resume("pay", {"stopped_by": S}, {"reviewed": True}, NOW),
        lambda: ENGINE.may_resume({"name": S}, "runaway", {"reviewed": True}, NOW),
        lambda: ENGINE.may_resume("pay", "runaway", {"reviewed": True, S: 1}, NOW),
    ],
)
def test_unpaired_surrogates_fail_closed_and_serialize(call):
    r = call()
    r.model_dump_json()
    assert getattr(r, "effect", "deny") == "deny"
    assert getattr(r, "allowed", False) is False and getattr(r, "satisfied", False) is False
    assert r.errors or getattr(r, "rejected", ())


def test_surrogates_in_a_field_nothing_reads_change_nothing():
    d = ENGINE.evaluate({**OK_TRANSFER, "x": {S: [S]}}, None, NOW)
    d.model_dump_json()
    assert d.model_dump(mode="json") == ENGINE.evaluate(OK_TRANSFER, None, NOW).model_dump(mode="json")


def test_valid_non_ascii_text_is_fine():
    a = {
        "workflow": "pay",
        "type": "transfer",
        "id": "zoë 😀 \u2028",
        "amount": 5,
        "verified": True,
        "currency": "EUR",
        "country": "FR",
        "note": "日本",
    }
    d = ENGINE.evaluate(a, None, NOW)
    assert d.effect == "allow" and d.action_id == a["id"]
    d.model_dump_json()
