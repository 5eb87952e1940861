"""Laws of the engine, checked with hypothesis, on the reference path (`accelerate=False`:
the closures alone) and the accelerated one (fused gates built at once, decisions from their
templates): each law holds on both, and both give the same bytes."""

from __future__ import annotations

import json
import random

import pytest
from engine_support import NOW, engine_from_texts, load_engine, request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

HEAD = 'roles [reviewer, legal]\n'
WF_OPEN = 'workflow "w" {\n  version "1"\n  owners { business "b" technical "t" }\n  default require_approval\n'

# rule templates over a small attribute space; some conditions error on purpose
CONDS = [
    "action.amount > 100", "action.amount <= 100.0", "action.amount < 0", "action.vip == true",
    "action.region == \"eu\"", "action.missing > 1", "action.amount", "size(action.tags) > 1",
    "\"x\" in action.tags", "action.amount >= 50 && action.vip",
]
EFFECTS = ["allow", "deny", "require_approval"]

rule_st = st.tuples(st.sampled_from(EFFECTS), st.sampled_from(CONDS), st.booleans())
rules_st = st.lists(rule_st, min_size=1, max_size=7)
action_st = st.fixed_dictionaries({
    "workflow": st.just("w"), "type": st.just("a"),
    "amount": st.one_of(st.integers(-10, 300), st.floats(-10, 300, allow_nan=False), st.text(max_size=2)),
    "vip": st.booleans(), "region": st.sampled_from(["eu", "us"]),
    "tags": st.lists(st.sampled_from(["x", "y"]), max_size=3),
})
stop_st = st.lists(st.sampled_from(CONDS), max_size=2)

PREC = {"stop": 0, "deny": 1, "require_approval": 2, "allow": 3}


def rule_text(i, effect, cond, named):
    name = f" r{i}" if named else ""
    by = " by 1 reviewer" if effect == "require_approval" else ""
    return f"    {effect}{name}{by} when `{cond}`\n"


def policy(rules, stops, order=None):
    order = list(range(len(rules))) if order is None else order
    text = HEAD + WF_OPEN + '  action a {\n    system "s"\n'
    for i in order:
        e, c, named = rules[i]
        text += rule_text(i, e, c, named)
    text += "  }\n"
    for j, c in enumerate(stops):
        text += (f'  stop s{j} {{ when `action.type == "a" && ({c})` severity low owner "o" '
                 f'resume when {{ ok: `evidence.ok` }} }}\n')
    return text + "}\n"


def decide(text, action, accelerate=False):
    e = engine_from_texts({"p.policy": text}, accelerate=accelerate)
    if accelerate:  # every fused gate built at once; the first call fills its template
        for fz in e.accelerator.gates():
            fz.build()
        e.evaluate(action, now=NOW)
    return e.evaluate(action, now=NOW)


MODES = pytest.mark.parametrize("accelerate", [False, True], ids=["reference", "accelerated"])


def dump(d):
    return json.dumps(d.model_dump(mode="json"), sort_keys=False)


def strip_locations(d):
    data = d.model_dump(mode="json")

    def walk(v):
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items() if k != "location"}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    return walk(data)


SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # per mode


@MODES
@SETTINGS
@given(rules_st, stop_st, action_st, st.randoms(use_true_random=False))
def test_reordering_rules_never_changes_the_decision(accelerate, rules, stops, action, rnd):
    order = list(range(len(rules)))
    rnd.shuffle(order)
    a = decide(policy(rules, stops), action, accelerate)
    b = decide(policy(rules, stops, order), action, accelerate)
    assert strip_locations(a) == strip_locations(b)


@MODES
@SETTINGS
@given(rules_st, action_st)
def test_reordering_files_never_changes_the_decision(accelerate, rules, action):
    other = 'workflow "z" {\n  version "2"\n  owners { business "b" technical "t" }\n  default deny\n}\n'
    main = policy(rules, [])
    e1 = engine_from_texts({"a.policy": main, "b.policy": other}, accelerate=accelerate)
    e2 = engine_from_texts({"b.policy": other, "a.policy": main}, accelerate=accelerate)
    d1, d2 = e1.evaluate(action, now=NOW), e2.evaluate(action, now=NOW)
    assert dump(d1) == dump(d2)
    assert e1.policy_hash == e2.policy_hash


@MODES
@SETTINGS
@given(rules_st, stop_st, action_st, st.sampled_from(CONDS))
def test_adding_a_deny_rule_never_turns_deny_into_anything_else(accelerate, rules, stops, action, cond):
    before = decide(policy(rules, stops), action, accelerate)
    after = decide(policy(rules + [("deny", cond, False)], stops), action, accelerate)
    if before.effect == "deny":
        assert after.effect == "deny"
    assert PREC[after.effect] <= PREC[before.effect]


@MODES
@SETTINGS
@given(rules_st, stop_st, action_st, st.data())
def test_making_a_condition_error_never_turns_a_non_allow_into_allow(accelerate, rules, stops, action, data):
    before = decide(policy(rules, stops), action, accelerate)
    i = data.draw(st.integers(0, len(rules) - 1))
    broken = list(rules)
    e, c, named = broken[i]
    broken[i] = (e, f"({c}) && action.no_such_attribute_xyz", named)  # errors whenever reached
    after = decide(policy(broken, stops), action, accelerate)
    if before.effect != "allow":
        assert after.effect != "allow"


@MODES
@SETTINGS
@given(rules_st, stop_st, action_st)
def test_same_input_same_bytes(accelerate, rules, stops, action):
    text = policy(rules, stops)
    reordered = dict(reversed(list(action.items())))
    assert dump(decide(text, action, accelerate)) == dump(decide(text, reordered, accelerate))


@SETTINGS
@given(rules_st, stop_st, action_st)
def test_the_reference_and_the_accelerated_path_give_the_same_bytes(rules, stops, action):
    text = policy(rules, stops)
    assert dump(decide(text, action, True)) == dump(decide(text, action, False))


ENGINE = load_engine()


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["rita", "sam", "max", "ann"]),
            st.lists(st.sampled_from(["reviewer", "support_manager", "legal"]), max_size=2),
        ),
        max_size=6,
    ),
    st.sampled_from(["2026-07-02T10:00:00Z", "2026-07-02T10:05:00Z"]),
)
def test_original_reviewer_never_fills_a_distinct_slot(approvals, now):
    plan = ENGINE.classify_rollback(request(), now=now)
    given_approvals = [{"principal": p, "roles": r, "plan_hash": plan.plan_hash} for p, r in approvals]
    # a second (third...) approval by the original reviewer, in every role
    given_approvals += [
        {"principal": "rita", "roles": ["reviewer", "support_manager"], "plan_hash": plan.plan_hash}
    ] * 2
    v = ENGINE.authorize_rollback(plan, given_approvals, now=now)
    assert all("rita" not in s.filled_by for s in v.slots)
    assert "rita" not in v.accepted
    filled = [p for s in v.slots for p in s.filled_by]
    assert len(filled) == len(set(filled))  # one principal, one slot
    # the verdict does not depend on the order the approvals arrive in
    shuffled = list(given_approvals)
    random.Random(0).shuffle(shuffled)
    v2 = ENGINE.authorize_rollback(plan, shuffled, now=now)
    assert v2.satisfied == v.satisfied and v2.slots == v.slots
