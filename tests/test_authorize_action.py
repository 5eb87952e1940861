"""`Engine.authorize_action`: do the approvals given release the action a require_approval
gate decision holds? (issue 12, item 12; docs/approvals.md)

On the shipped policies: a refund of 2,000 matches `above_auto_limit` (1 support_manager)
and `large_refund` (2 of [finance_approver, support_manager]), so it needs three distinct
principals, at least one of them a support manager.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
from datetime import UTC, datetime

import pytest
from engine_support import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import policy_engine
from policy_engine.engine import MAX_APPROVALS, action_digest, canonical_principal
from policy_engine.models import AuthorizationVerdict, Decision

NOW = "2026-11-24T10:00:00Z"
LATER = "2026-11-24T11:00:00Z"
ENGINE = policy_engine.load(str(ROOT / "policies"))


def refund(amount=2000.0, **extra):
    return {"workflow": "refunds", "type": "issue_refund", "id": "rf-1", "order_id": "o-1", "amount": amount,
            "currency": "EUR", "reason": "damaged_item", "payee_account_id": "acct-9",
            "order": {"total": 5000.0, "refunded_amount": 0.0, "customer_account_id": "acct-9"}, **extra}


def gate(action=None, now=NOW) -> Decision:
    d = ENGINE.evaluate(refund() if action is None else action, now=now)
    return d


def appr(decision, who, roles, **extra):
    return {"principal": who, "roles": list(roles), "action_digest": decision.action_digest, "at": NOW, **extra}


SAM = ("sam", ["support_manager"])
FIONA = ("fiona", ["finance_approver"])
FRED = ("fred", ["finance_approver"])


def codes(v: AuthorizationVerdict) -> dict:
    out: dict = {}
    for r in v.rejected:
        out.setdefault(r.principal, set()).add(r.code)
    return out


# ------------------------------------------------------------------ the requirement

def test_a_two_of_refund_needs_every_matched_rule_met_by_distinct_people():
    d = gate()
    assert d.effect == "require_approval"
    assert [(a.rule, a.count) for a in d.approvals] == [("above_auto_limit", 1), ("large_refund", 2)]
    # one support manager alone: the headline of the issue (the old example released it)
    v = ENGINE.authorize_action(d, [appr(d, *SAM)], NOW)
    assert not v.satisfied
    assert {s.id: s.missing for s in v.open_slots} == {"large_refund": 2}
    # two people: still one short (one principal fills at most one slot across the rules)
    v = ENGINE.authorize_action(d, [appr(d, *SAM), appr(d, *FIONA)], NOW)
    assert not v.satisfied and [s.id for s in v.open_slots] == ["large_refund"]
    # three distinct people: released, each in one slot
    v = ENGINE.authorize_action(d, [appr(d, *SAM), appr(d, *FIONA), appr(d, *FRED)], NOW)
    assert v.satisfied and v.accepted == ("fiona", "fred", "sam")
    assert {s.id: s.filled_by for s in v.slots} == {"above_auto_limit": ("sam",), "large_refund": ("fiona", "fred")}
    assert v.action_digest == d.action_digest and v.plan_hash == ""


def test_one_principal_holding_every_role_fills_one_slot():
    d = gate()
    boss = ("boss", ["support_manager", "finance_approver"])
    v = ENGINE.authorize_action(d, [appr(d, *boss), appr(d, *boss), appr(d, *boss)], NOW)
    assert not v.satisfied and v.accepted == ("boss",) and codes(v) == {"boss": {"duplicate"}}


def test_the_matching_finds_an_assignment_whatever_the_order():
    """sam could fill either rule; fiona and fred only `large_refund`: the matching must put
    sam on `above_auto_limit`, whatever order the approvals arrive in."""
    d = gate()
    apps = [appr(d, *SAM), appr(d, *FIONA), appr(d, *FRED)]
    for perm in itertools.permutations(apps):
        v = ENGINE.authorize_action(d, list(perm), NOW)
        assert v.satisfied and v.slots == ENGINE.authorize_action(d, apps, NOW).slots


def test_a_single_rule_decision():
    d = gate(refund(amount=500.0))
    assert [a.rule for a in d.approvals] == ["above_auto_limit"]
    assert ENGINE.authorize_action(d, [appr(d, *SAM)], NOW).satisfied
    v = ENGINE.authorize_action(d, [appr(d, *FIONA)], NOW)
    assert not v.satisfied and codes(v) == {"fiona": {"missing_role"}}


# ------------------------------------------------------------------ binding to the action

def test_an_approval_for_another_action_never_counts():
    d = gate()
    other = gate(refund(amount=2000.0, order_id="o-2"))
    assert other.action_digest != d.action_digest
    apps = [appr(other, *SAM), appr(other, *FIONA), appr(other, *FRED)]
    assert ENGINE.authorize_action(other, apps, NOW).satisfied
    v = ENGINE.authorize_action(d, apps, NOW)
    assert not v.satisfied and v.accepted == ()
    assert codes(v) == {"sam": {"action_digest"}, "fiona": {"action_digest"}, "fred": {"action_digest"}}


@pytest.mark.parametrize("digest", [None, "", "sha256:" + "0" * 64, 12, ["x"]])
def test_an_approval_without_the_digest_never_counts(digest):
    d = gate()
    apps = [{**appr(d, *p), "action_digest": digest} for p in (SAM, FIONA, FRED)]
    if digest is None:
        for a in apps:
            del a["action_digest"]
    v = ENGINE.authorize_action(d, apps, NOW)
    assert not v.satisfied and all(c == {"action_digest"} for c in codes(v).values())


def test_a_plan_approval_never_releases_an_action():
    d = gate()
    apps = [{"principal": p, "roles": r, "plan_hash": d.action_digest} for p, r in (SAM, FIONA, FRED)]
    v = ENGINE.authorize_action(d, apps, NOW)
    assert not v.satisfied and all(c == {"action_digest"} for c in codes(v).values())


def test_the_digest_is_the_canonical_json_of_the_action():
    a = refund()
    text = json.dumps(a, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert gate(a).action_digest == "sha256:" + hashlib.sha256(text.encode()).hexdigest() == action_digest(a)
    # key order does not matter; any value does
    assert gate(dict(reversed(list(a.items())))).action_digest == gate(a).action_digest
    assert gate({**a, "note": "x"}).action_digest != gate(a).action_digest


def test_mutating_the_action_after_the_gate_does_not_move_the_digest():
    """The digest is what was decided: approvals for it never cover the action as later edited."""
    a = refund()
    d = gate(a)
    a["payee_account_id"] = "acct-attacker"
    assert d.action_digest != action_digest(a)


def test_only_require_approval_decisions_carry_a_digest():
    for amount, effect in ((50.0, "allow"), (9000.0, "deny"), (2000.0, "require_approval")):
        d = gate(refund(amount=amount))
        assert d.effect == effect and (d.action_digest is not None) == (effect == "require_approval")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), object(), {1, 2}, b"bytes"])
def test_an_action_that_is_not_json_cannot_be_approved(bad):
    """A field the gate never reads may hold anything; the action then has no digest, and
    no approval releases it (fail closed; the verdict says why)."""
    d = gate(refund(unread=bad))
    assert d.effect == "require_approval" and d.action_digest is None
    apps = [{"principal": p, "roles": r, "action_digest": None} for p, r in (SAM, FIONA, FRED)]
    v = ENGINE.authorize_action(d, apps, NOW)
    assert not v.satisfied and any("no `action_digest`" in e.message and "not plain JSON" in e.message
                                   for e in v.errors)


# ------------------------------------------------------------------ what decision

@pytest.mark.parametrize("amount", [50.0, 9000.0])
def test_only_a_require_approval_decision_can_be_released(amount):
    d = gate(refund(amount=amount))
    v = ENGINE.authorize_action(d, [appr(d, *p) for p in (SAM, FIONA, FRED)], NOW)
    assert not v.satisfied and any("only a `require_approval` decision" in e.message for e in v.errors)


def test_a_default_require_approval_names_nobody_and_is_never_released():
    """The workflow default decides require_approval without approvers: nothing the caller
    gives can satisfy an empty requirement."""
    d = ENGINE.evaluate({"workflow": "refunds", "type": "issue_refund", "id": "r", "amount": 50.0,
                         "reason": "other", "payee_account_id": "a", "order": {"total": 100.0, "refunded_amount": 0.0,
                                                                                 "customer_account_id": "a"}}, now=NOW)
    assert d.effect == "require_approval" and d.deciding.kind == "default" and d.approvals == ()
    v = ENGINE.authorize_action(d, [appr(d, *p) for p in (SAM, FIONA, FRED)], NOW)
    assert not v.satisfied and any("names nobody" in e.message for e in v.errors)


def test_an_edited_decision_cannot_lower_its_requirement():
    """The slots come from the policy's rules the decision matched, not from the decision's
    own `approvals`: dropping `large_refund` or lowering its count is detected."""
    d = gate()
    data = d.model_dump(mode="json")
    data["approvals"] = [a for a in data["approvals"] if a["rule"] == "above_auto_limit"]
    v = ENGINE.authorize_action(data, [appr(d, *SAM)], NOW)
    assert not v.satisfied and any("changed after evaluation" in e.message for e in v.errors)
    assert {s.id for s in v.slots} == {"above_auto_limit", "large_refund"}
    data = d.model_dump(mode="json")
    data["approvals"][1]["count"] = 1
    assert not ENGINE.authorize_action(data, [appr(d, *SAM), appr(d, *FIONA)], NOW).satisfied


def test_a_decision_under_another_policy_is_refused():
    data = gate().model_dump(mode="json")
    data["policy_hash"] = "sha256:" + "1" * 64
    v = ENGINE.authorize_action(data, [appr(gate(), *p) for p in (SAM, FIONA, FRED)], NOW)
    assert not v.satisfied and any(e.kind == "policy" for e in v.errors)


def test_a_decision_as_json_is_the_same_as_the_model():
    d = gate()
    apps = [appr(d, *p) for p in (SAM, FIONA, FRED)]
    assert ENGINE.authorize_action(d.model_dump(mode="json"), apps, NOW) == ENGINE.authorize_action(d, apps, NOW)


@pytest.mark.parametrize("junk", [None, 3, "decision", [], {}, {"effect": "require_approval"}])
def test_junk_decisions_fail_closed(junk):
    v = ENGINE.authorize_action(junk, [{"principal": "sam", "roles": ["support_manager"]}], NOW)
    assert isinstance(v, AuthorizationVerdict) and not v.satisfied and v.errors


# ------------------------------------------------------------------ as authorize_rollback does

@pytest.mark.parametrize("extra,code", [
    ({"policy_hash": "sha256:old"}, "policy_hash"),
    ({"expires_at": NOW}, "expired"),
    ({"at": "2026-11-25T00:00:00Z"}, "future"),
    ({"at": "yesterday"}, "invalid"),
    ({"roles": "support_manager"}, "invalid"),
])
def test_each_rejection_code(extra, code):
    d = gate(refund(amount=500.0))
    v = ENGINE.authorize_action(d, [{**appr(d, *SAM), **extra}], NOW)
    assert not v.satisfied and codes(v) == {"sam": {code}}


@pytest.mark.parametrize("variant", ["Sam", "SAM", "s\u200bam", "ｓａｍ"])
def test_another_spelling_of_a_counted_principal_is_an_alias(variant):
    d = gate()
    v = ENGINE.authorize_action(d, [appr(d, *SAM), appr(d, variant, ["finance_approver"]), appr(d, *FIONA)], NOW)
    assert not v.satisfied and codes(v).get(max("sam", variant)) == {"alias"}


def test_reading_stops_after_the_cap():
    """An endless generator of approvals is read up to the cap plus one, never to its end."""
    d = gate(refund(amount=500.0))
    v = ENGINE.authorize_action(d, itertools.repeat(appr(d, *SAM)), NOW)
    assert not v.satisfied and any(f"more than {MAX_APPROVALS}" in e.message for e in v.errors)


def test_a_stale_approval_has_expired_later():
    d = gate(refund(amount=500.0))
    a = appr(d, *SAM, expires_at="2026-11-24T10:30:00Z")
    assert ENGINE.authorize_action(d, [a], NOW).satisfied
    assert codes(ENGINE.authorize_action(d, [a], LATER)) == {"sam": {"expired"}}


# ------------------------------------------------------------------ the digest on every evaluation path

def _engine(lanes: bool):
    """The shipped policies; `lanes=False`: the reference path alone (`accelerate=False`);
    `lanes=True`: every fused gate built at once."""
    eng = policy_engine.load(str(ROOT / "policies"), accelerate=lanes)
    if lanes:
        for fz in eng.accelerator.gates():
            fz.build()
    return eng


def test_the_digest_is_the_same_on_every_path():
    """Reference closures (accelerations off), the fused gate, its decision templates (kept
    per `now`, several rounds), the fast lane with and without a workflow state, a string
    `now`, the clock's `now`, a model as input: one digest per action, the same decision."""
    from policy_engine.models import Action

    actions = [refund(amount=a, id=f"rf-{i}") for i, a in enumerate((150.0, 500.0, 2000.0, 2000.0, 4000.0))]
    actions.append(refund(amount=2000.0, id="rf-x", extra={"k": [1, 2.5, "\u00fc"]}))
    want = [action_digest(a) for a in actions]
    assert len(set(want)) == len(want)
    now = datetime(2026, 11, 24, 10, tzinfo=UTC)
    ref, fast = _engine(lanes=False), _engine(lanes=True)
    state = {"name": "refunds", "status": "running"}
    for round_ in range(5):  # templates are kept per `now` after the first round
        for a, w in zip(actions, want):
            expected = ref.evaluate(a, now=now)
            assert expected.effect == "require_approval" and expected.action_digest == w
            for path, d in (("lane", fast.evaluate(a, now=now)),
                            ("lane+state", fast.evaluate(a, state, now=now)),
                            ("string now", fast.evaluate(a, now=NOW)),
                            ("clock", fast.evaluate(a)),
                            ("model", fast.evaluate(Action(**a), now=now)),
                            ("reference+state", ref.evaluate(a, state, now=now))):
                assert d.action_digest == w, (path, round_)
            assert fast.evaluate(a, now=now).model_dump(mode="json") == expected.model_dump(mode="json")
    fz = fast.accelerator.gate("refunds", "issue_refund")
    assert fz.fn is not None and fz.patterns  # the accelerated lanes and templates were exercised


# ------------------------------------------------------------------ canonical principals

def test_canonical_principal_folds_what_looks_the_same():
    assert (
        canonical_principal("Bob") == canonical_principal("ＢＯＢ") == canonical_principal("b\u200bo\u00adb") == "bob"
    )
    assert canonical_principal("Straße") == canonical_principal("STRASSE")
    # whitespace and controls are another spelling too
    assert canonical_principal("bob ") == canonical_principal("\tb o\u00a0b\x00") == "bob"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=12))
def test_canonical_principal_is_idempotent(s):
    c = canonical_principal(s)
    assert canonical_principal(c) == c


# ------------------------------------------------------------------ the hypothesis campaign

CAMPAIGN = settings(
    max_examples=int(os.environ.get("STOPLINE_FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
DECISION = gate()
PEOPLE = ["sam", "Sam", "fiona", "fred", "boss", "s\u200bam", "ｆｉｏｎａ", ""]
ROLES = ["support_manager", "finance_approver", "reviewer", "Support_manager"]
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)
approval = st.one_of(
    junk,
    st.fixed_dictionaries(
        {
            "principal": st.one_of(st.sampled_from(PEOPLE), junk),
            "roles": st.one_of(st.lists(st.sampled_from(ROLES), max_size=3), junk),
        },
        optional={
            "action_digest": st.one_of(st.just(DECISION.action_digest), junk),
            "policy_hash": st.one_of(st.just(DECISION.policy_hash), junk),
            "at": st.sampled_from([NOW, "2026-11-24T09:00:00Z", "2026-11-25T00:00:00Z", "x"]),
            "expires_at": st.sampled_from([NOW, LATER, "2026-11-23T00:00:00Z", "x"]),
            "extra": junk,
        },
    ),
)


def oracle(apps) -> bool:
    """Satisfied iff three approvals with the digest, valid and in force, by three
    principals of distinct canonical form, at least one support manager and two more each
    holding support_manager or finance_approver."""
    people: dict = {}
    for a in apps:
        if not isinstance(a, dict) or type(a.get("principal")) is not str or not a["principal"]:
            continue
        roles = a.get("roles", [])
        if not isinstance(roles, list) or not all(type(r) is str for r in roles):
            continue
        if a.get("action_digest") != DECISION.action_digest:
            continue
        if a.get("policy_hash") is not None and a["policy_hash"] != DECISION.policy_hash:
            continue
        if a.get("at") not in (None, NOW, "2026-11-24T09:00:00Z") or a.get("expires_at") not in (None, LATER):
            continue
        useful = set(roles) & {"support_manager", "finance_approver"}
        if useful:
            people.setdefault(canonical_principal(a["principal"]), {})
            people[canonical_principal(a["principal"])].setdefault(a["principal"], set()).update(useful)
    # of several spellings, the first in sorted order counts, with the roles of every spelling
    holders = [set().union(*spellings.values()) for spellings in people.values()]
    managers = [h for h in holders if "support_manager" in h]
    return len(holders) >= 3 and bool(managers)


@CAMPAIGN
@given(st.lists(approval, max_size=8), st.sampled_from([NOW, LATER, None, "bad", 5]))
def test_campaign_never_raises_and_agrees_with_the_oracle(apps, now):
    v = ENGINE.authorize_action(DECISION, apps, NOW if now is None else now)
    assert isinstance(v, AuthorizationVerdict)
    json.dumps(v.model_dump(mode="json"))
    if now in (NOW, None):
        assert v.satisfied == oracle(apps)
    if now in ("bad", 5):
        assert not v.satisfied
    # one principal (canonical form) fills at most one slot
    filled = [canonical_principal(p) for s in v.slots for p in s.filled_by]
    assert len(filled) == len(set(filled))
    # the answer does not depend on the order the approvals arrive in
    shuffled = list(apps)
    random.Random(0).shuffle(shuffled)
    v2 = ENGINE.authorize_action(DECISION, shuffled, NOW if now is None else now)
    assert (v2.satisfied, v2.slots, v2.accepted) == (v.satisfied, v.slots, v.accepted)


@CAMPAIGN
@given(junk, st.lists(approval, max_size=4))
def test_campaign_junk_decisions_never_satisfy(decision, apps):
    v = ENGINE.authorize_action(decision, apps, NOW)
    assert isinstance(v, AuthorizationVerdict) and not v.satisfied


@CAMPAIGN
@given(
    st.dictionaries(
        st.sampled_from(
            ["approvals", "matched", "effect", "action_digest", "policy_hash", "workflow", "action_type", "deciding"]
        ),
        junk,
        min_size=1,
        max_size=3,
    )
)
def test_campaign_edited_decisions_never_release_with_fewer_people(edits):
    """Any edit of the decision's fields: two people (one support manager) never suffice."""
    data = {**DECISION.model_dump(mode="json"), **edits}
    apps = [appr(DECISION, *SAM), appr(DECISION, *FIONA)]
    v = ENGINE.authorize_action(data, apps, NOW)
    assert not v.satisfied


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text()),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_the_canonical_json_is_json_dumps_sorted_and_compact(value):
    """The prebuilt encoder (engine.digests._canonical) writes exactly what json.dumps does, so the
    digest of an action is reproducible with the standard library alone."""
    from policy_engine.engine.digests import _canonical

    want = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    assert _canonical(value) == want
    if isinstance(value, dict):
        assert action_digest(value) == "sha256:" + hashlib.sha256(want.encode("utf-8", "surrogatepass")).hexdigest()
