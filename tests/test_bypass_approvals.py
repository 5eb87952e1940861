"""Approval bypass attempts: none of them may fill an authorization slot.

Principals are identified by their exact id; in addition, an approval whose id has the
canonical form (NFKC, case folded; invisible characters, whitespace and controls removed)
of an excluded or an already counted principal never counts (code `alias`): `Bob`, `bob `
and `b ob` cannot approve for `bob` (SECURITY.md, docs/approvals.md).
"""

from __future__ import annotations

import itertools
import random
import unicodedata

import pytest

from policy_engine.engine import Engine, plan_hash
from policy_engine.language.loader import load_text
from policy_engine.models import Approval

NOW = "2026-07-02T10:00:00Z"
LATER = "2026-07-02T11:00:00Z"  # after the 1h window of an action executed at 09:30

POLICY = """
roles [reviewer, support_manager, incident_commander, policy_owner, legal, executive]
workflow "pay" {
  version "1.0"
  owners { business "Finance" technical "Platform" }
  default deny
  action transfer {
    system "bank"
    reversible partial via "bank.recall" within 1h
    allow when `false`
  }
  rollback reviewer_error {
    route verification
    authorize 1 reviewer distinct from original.reviewer, request.requested_by
    after window { authorize 1 support_manager }
  }
  rollback incident {
    route incident_queue
    authorize 1 incident_commander and 1 policy_owner distinct from original.approvers
  }
  rollback regulatory_order {
    route legal
    authorize 2 of [legal, executive] distinct from request.requested_by
  }
}
"""


def make_engine(text: str = POLICY, name: str = "pay.policy") -> Engine:
    r = load_text(text, name)
    assert r.policy_set is not None, [f"{d.span}: {d.message}" for d in r.errors]
    return Engine.from_load_result(r)


ENGINE = make_engine()


def request(scenario="reviewer_error", **original):
    rec = {"id": "t1", "type": "transfer", "executed_at": "2026-07-02T09:30:00Z", "reviewer": "bob"}
    rec.update(original)
    return {"workflow": "pay", "scenario": scenario, "requested_by": "carol", "original": rec}


def plan_for(scenario="reviewer_error", now=NOW, engine=ENGINE, **original):
    plan = engine.classify_rollback(request(scenario, **original), now)
    assert plan.authorizable, plan.errors
    return plan


def appr(plan, principal, roles=("reviewer",), **kw):
    a = {"principal": principal, "roles": list(roles), "plan_hash": plan.plan_hash, "policy_hash": plan.policy_hash,
         "at": NOW}
    a.update(kw)
    return a


def rejected_codes(verdict) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for r in verdict.rejected:
        out.setdefault(r.principal, set()).add(r.code)
    return out


# ------------------------------------------------------------------ the baseline works

def test_a_proper_approval_satisfies():
    plan = plan_for()
    v = ENGINE.authorize_rollback(plan, [appr(plan, "alice")], NOW)
    assert v.satisfied and v.accepted == ("alice",)
    v = ENGINE.authorize_rollback(plan, [Approval(**appr(plan, "alice"))], NOW)
    assert v.satisfied


# ------------------------------------------------------------------ distinct from

def test_original_reviewer_never_counts():
    plan = plan_for()
    v = ENGINE.authorize_rollback(plan, [appr(plan, "bob")], NOW)
    assert not v.satisfied
    assert rejected_codes(v) == {"bob": {"distinct_from"}}


def test_requester_never_counts():
    plan = plan_for()
    v = ENGINE.authorize_rollback(plan, [appr(plan, "carol")], NOW)
    assert not v.satisfied
    assert rejected_codes(v) == {"carol": {"distinct_from"}}


def test_distinct_from_a_list_of_principals():
    plan = plan_for("incident", approvers=["dave", "erin"])
    apps = [appr(plan, "dave", ["incident_commander"]), appr(plan, "erin", ["policy_owner"])]
    v = ENGINE.authorize_rollback(plan, apps, NOW)
    assert not v.satisfied and rejected_codes(v) == {"dave": {"distinct_from"}, "erin": {"distinct_from"}}
    apps = [appr(plan, "fay", ["incident_commander"]), appr(plan, "gus", ["policy_owner"])]
    assert ENGINE.authorize_rollback(plan, apps, NOW).satisfied


def test_missing_reviewer_is_visible_in_the_plan_and_not_authorizable():
    # The engine cannot exclude a principal it was not told about: the plan shows the
    # unresolved reference and cannot be authorized (issue 12, item 5).
    plan = ENGINE.classify_rollback(request(reviewer=None), NOW)
    refs = {d.ref: d.principal for d in plan.authorization.distinct_from}
    assert refs["original.reviewer"] is None
    assert plan.authorization.excluded_principals == ("carol",)
    assert not plan.authorizable
    assert not ENGINE.authorize_rollback(plan, [appr(plan, "sam")], NOW).satisfied


# ------------------------------------------------------------------ identity: exact ids, canonical doors closed

@pytest.mark.parametrize("variant", ["Bob", "BOB", "b\u200bob", "ｂｏｂ", "\u00adbob", "bo\u034fb", "bob\ufe0f",
                                     "bob\U000e0001", "bob ", " bob", "bob\n", "bob\x00", "b ob", "bob\u00a0"])
def test_another_spelling_of_the_excluded_reviewer_is_an_alias(variant):
    """`Bob` (or `bob` with a zero-width space, in full width...) is the excluded `bob`
    written another way: rejected with its own code, never counted (issue 12, item 13)."""
    plan = plan_for()
    v = ENGINE.authorize_rollback(plan, [appr(plan, variant)], NOW)
    assert not v.satisfied and v.accepted == ()
    assert rejected_codes(v) == {variant: {"alias"}}
    assert "`bob`" in v.rejected[0].reason and "`original.reviewer`" in v.rejected[0].reason
    # the exact spelling is still `distinct_from`
    assert rejected_codes(ENGINE.authorize_rollback(plan, [appr(plan, "bob")], NOW)) == {"bob": {"distinct_from"}}


@pytest.mark.parametrize("variant", ["bobby", "b0b", "bo", "bob2"])
def test_ids_that_differ_beyond_the_canonical_form_are_other_principals(variant):
    """Ids that differ in more than spelling (case, width, invisible characters, whitespace,
    controls) are other principals: exact ids identify them; the canonical form only closes
    the alias door (whitespace and controls too, since the fifteenth session: `bob ` was
    counted as someone other than the excluded `bob`)."""
    plan = plan_for()
    v = ENGINE.authorize_rollback(plan, [appr(plan, variant)], NOW)
    assert v.satisfied and v.accepted == (variant,)


def test_unicode_normal_forms_are_one_principal():
    nfc = unicodedata.normalize("NFC", "zoë")
    nfd = unicodedata.normalize("NFD", "zoë")
    assert nfc != nfd
    plan = plan_for(reviewer=nfc)
    assert not ENGINE.authorize_rollback(plan, [appr(plan, nfc)], NOW).satisfied
    v = ENGINE.authorize_rollback(plan, [appr(plan, nfd)], NOW)
    assert not v.satisfied and rejected_codes(v) == {nfd: {"alias"}}


def test_case_variants_are_one_principal_for_quorum():
    """`alice` and `Alice` do not make a quorum of two (they did before item 13)."""
    plan = plan_for("regulatory_order")
    apps = [appr(plan, "alice", ["legal"]), appr(plan, "Alice", ["legal"])]
    v = ENGINE.authorize_rollback(plan, apps, NOW)
    assert not v.satisfied and v.accepted == ("Alice",)  # of two spellings, the first in sorted order counts
    assert rejected_codes(v) == {"alice": {"alias"}}
    assert ENGINE.authorize_rollback(plan, list(reversed(apps)), NOW).slots == v.slots  # order-independent
    apps = [appr(plan, "alice", ["legal"]), appr(plan, "alice", ["executive"])]
    assert not ENGINE.authorize_rollback(plan, apps, NOW).satisfied
    apps = [appr(plan, "alice", ["legal"]), appr(plan, "dave", ["executive"])]
    assert ENGINE.authorize_rollback(plan, apps, NOW).satisfied


# ------------------------------------------------------------------ roles, duplicates, one slot each

@pytest.mark.parametrize("roles", [[], ["Reviewer"], ["reviewer "], ["support_manager"], ["admin", "root"], ["*"]])
def test_principal_without_the_role_never_counts(roles):
    plan = plan_for()
    v = ENGINE.authorize_rollback(plan, [appr(plan, "alice", roles)], NOW)
    assert not v.satisfied
    assert rejected_codes(v) == {"alice": {"missing_role"}}


@pytest.mark.parametrize("roles", ["reviewer", None, [["reviewer"]], {"reviewer": True}, [1]])
def test_malformed_roles_never_count(roles):
    plan = plan_for()
    a = appr(plan, "alice")
    a["roles"] = roles
    v = ENGINE.authorize_rollback(plan, [a], NOW)
    assert not v.satisfied


def test_duplicate_approval_fills_one_slot():
    plan = plan_for("regulatory_order")
    v = ENGINE.authorize_rollback(plan, [appr(plan, "alice", ["legal"])] * 2, NOW)
    assert not v.satisfied
    assert v.open_slots[0].missing == 1
    assert rejected_codes(v) == {"alice": {"duplicate"}}


def test_one_principal_with_two_roles_fills_one_slot():
    plan = plan_for("incident", approvers=["zed"])
    v = ENGINE.authorize_rollback(plan, [appr(plan, "ivy", ["incident_commander", "policy_owner"])], NOW)
    assert not v.satisfied and len(v.open_slots) == 1
    v = ENGINE.authorize_rollback(plan, [appr(plan, "ivy", ["incident_commander", "policy_owner"]),
                                         appr(plan, "jo", ["incident_commander"])], NOW)
    assert v.satisfied  # the matching puts ivy on policy_owner


# ------------------------------------------------------------------ binding to the plan and the policy

def test_approval_for_a_different_plan_never_counts():
    plan_a = plan_for(id="t1")
    plan_b = plan_for(id="t2")
    assert plan_a.plan_hash != plan_b.plan_hash
    v = ENGINE.authorize_rollback(plan_b, [appr(plan_a, "alice")], NOW)
    assert not v.satisfied and rejected_codes(v) == {"alice": {"plan_hash"}}


def test_approval_for_another_scenario_of_the_same_action_never_counts():
    plan_a = plan_for("reviewer_error")
    plan_b = plan_for("regulatory_order")
    v = ENGINE.authorize_rollback(plan_b, [appr(plan_a, "alice", ["legal"]), appr(plan_a, "ann", ["legal"])], NOW)
    assert not v.satisfied


@pytest.mark.parametrize("ph", [None, "", "sha256:", "SHA256:xyz", 0, ["x"]])
def test_approval_without_a_valid_plan_hash_never_counts(ph):
    plan = plan_for()
    a = appr(plan, "alice")
    a["plan_hash"] = ph
    assert not ENGINE.authorize_rollback(plan, [a], NOW).satisfied


def test_plan_hash_case_variant_never_counts():
    plan = plan_for()
    a = appr(plan, "alice", plan_hash=plan.plan_hash.upper())
    assert not ENGINE.authorize_rollback(plan, [a], NOW).satisfied


def test_plan_changed_after_classification_is_refused():
    plan = plan_for()
    forged = plan.model_copy(update={"authorization": plan.authorization.model_copy(
        update={"excluded_principals": (), "distinct_from": ()})})
    assert forged.plan_hash == plan.plan_hash  # stale hash
    v = ENGINE.authorize_rollback(forged, [appr(plan, "bob")], NOW)
    assert not v.satisfied and v.errors
    as_dict = plan.model_dump(mode="json")
    as_dict["authorization"]["slots"] = []
    assert not ENGINE.authorize_rollback(as_dict, [appr(plan, "alice")], NOW).satisfied


def test_approval_under_another_policy_version_never_counts():
    plan = plan_for()
    a = appr(plan, "alice", policy_hash="sha256:" + "0" * 64)
    v = ENGINE.authorize_rollback(plan, [a], NOW)
    assert not v.satisfied and rejected_codes(v) == {"alice": {"policy_hash"}}


def test_plan_from_another_policy_version_is_refused():
    other = make_engine(POLICY.replace('version "1.0"', 'version "1.1"'), "pay.policy")
    assert other.policy_hash != ENGINE.policy_hash
    plan = plan_for(engine=other)
    v = ENGINE.authorize_rollback(plan, [appr(plan, "alice")], NOW)
    assert not v.satisfied
    assert any(e.kind == "policy" for e in v.errors)


# ------------------------------------------------------------------ time

def test_expired_approval_never_counts():
    plan = plan_for()
    for exp in ("2026-07-02T09:59:59Z", NOW, "2026-07-02T12:00:00+03:00"):
        v = ENGINE.authorize_rollback(plan, [appr(plan, "alice", expires_at=exp)], NOW)
        assert not v.satisfied, exp
        assert rejected_codes(v) == {"alice": {"expired"}}
    assert ENGINE.authorize_rollback(plan, [appr(plan, "alice", expires_at="2026-07-02T10:00:01Z")], NOW).satisfied


def test_future_dated_approval_never_counts():
    plan = plan_for()
    for at in ("2026-07-02T10:00:01Z", "2027-01-01T00:00:00Z", "2026-07-02T12:00:01+02:00"):
        v = ENGINE.authorize_rollback(plan, [appr(plan, "alice", at=at)], NOW)
        assert not v.satisfied, at
        assert rejected_codes(v) == {"alice": {"future"}}


@pytest.mark.parametrize("field", ["at", "expires_at"])
@pytest.mark.parametrize("value", ["yesterday", 1751450400, "2026-07-02", "2026-07-02T10:00:00", ["x"], "\ud800"])
def test_unparseable_approval_times_never_count(field, value):
    plan = plan_for()
    a = appr(plan, "alice")
    a[field] = value
    v = ENGINE.authorize_rollback(plan, [a], NOW)
    assert not v.satisfied and [r.code for r in v.rejected] == ["invalid"]


def test_stale_plan_after_the_window_closed_is_not_enough():
    """A plan classified inside the window must not be authorized after it closed with
    only the standard slots: the escalated path (an extra support_manager) applies."""
    plan = plan_for(now=NOW)
    assert plan.window == "standard"
    v = ENGINE.authorize_rollback(plan, [appr(plan, "alice")], LATER)
    assert not v.satisfied
    assert v.errors
    fresh = plan_for(now=LATER)
    assert fresh.window == "escalated"
    apps = [appr(fresh, "alice", at=LATER), appr(fresh, "sam", ["support_manager"], at=LATER)]
    assert ENGINE.authorize_rollback(fresh, apps, LATER).satisfied
    assert not ENGINE.authorize_rollback(fresh, apps[:1], LATER).satisfied


def test_invalid_now_never_satisfies():
    plan = plan_for()
    for now in ("junk", 5, "2026-07-02T10:00:00"):
        assert not ENGINE.authorize_rollback(plan, [appr(plan, "alice")], now).satisfied


# ------------------------------------------------------------------ order and volume

def test_approval_order_never_changes_the_verdict():
    plan = plan_for("regulatory_order")
    apps = [appr(plan, "carol", ["legal"]), appr(plan, "alice", ["legal"]), appr(plan, "alice", ["executive"]),
            appr(plan, "zed", ["reviewer"]), appr(plan, "ann", ["executive"], expires_at=NOW),
            appr(plan, "bea", ["executive"])]
    dumps = set()
    for perm in itertools.islice(itertools.permutations(apps), 0, 720, 7):
        v = ENGINE.authorize_rollback(plan, list(perm), NOW)
        dumps.add(v.model_dump_json())
    assert len(dumps) == 1
    assert '"satisfied":true' in dumps.pop()


def test_many_approvals_are_bounded():
    plan = plan_for("regulatory_order")
    rnd = random.Random(7)
    apps = [appr(plan, f"p{rnd.randrange(10**9)}", ["reviewer"]) for _ in range(5000)]
    v = ENGINE.authorize_rollback(plan, apps, NOW)
    assert not v.satisfied and v.errors


@pytest.mark.parametrize("apps", [None, "alice", {"principal": "alice"}, 5, b"x", [None], [[]], ["alice"]])
def test_malformed_approval_lists(apps):
    plan = plan_for()
    assert not ENGINE.authorize_rollback(plan, apps, NOW).satisfied


def test_plan_hash_is_public_and_stable():
    plan = plan_for()
    assert plan_hash(plan) == plan.plan_hash
    assert plan_hash(plan.model_dump(mode="json")) == plan.plan_hash


# ------------------------------------------------------------------ the trust boundary around plans

def test_forged_plan_with_recomputed_hash_is_outside_the_promise_but_answer_is_safe():
    """authorize_rollback trusts the plan object like other caller data (SECURITY.md):
    a caller that edits a plan *and* recomputes its hash changes the requirement. The
    `answer` envelope with `request` classifies afresh, so there is nothing to forge."""
    plan = plan_for()
    data = plan.model_dump(mode="json")
    data["authorization"]["excluded_principals"] = []
    data["authorization"]["distinct_from"] = []
    data["plan_hash"] = plan_hash(data)
    bob = {"principal": "bob", "roles": ["reviewer"], "plan_hash": data["plan_hash"], "at": NOW}
    ENGINE.authorize_rollback(data, [bob], NOW)  # satisfied today: documented, not promised
    # the safe path: classify and authorize in one call
    fresh = ENGINE.classify_rollback(request(), NOW)
    v = ENGINE.answer({"question": "authorize", "request": request(), "now": NOW,
                       "approvals": [{**bob, "plan_hash": fresh.plan_hash}]})
    assert not v.satisfied and rejected_codes(v) == {"bob": {"distinct_from"}}
    v = ENGINE.answer({"question": "authorize", "request": request(), "now": NOW,
                       "approvals": [{**bob, "plan_hash": data["plan_hash"]}]})
    assert not v.satisfied


def test_a_plan_edited_and_rehashed_cannot_lower_its_requirement():
    """A caller that edits a plan (drops `distinct from`, widens a slot's roles) and
    recomputes its hash still gets the policy's requirement enforced."""
    plan = plan_for()

    def forged(**changes):
        data = plan.model_dump(mode="json", by_alias=True)
        data["authorization"].update(changes)
        p = type(plan).model_validate(data)
        data["plan_hash"] = plan_hash(p)
        return type(plan).model_validate(data)

    wide_slot = {**plan.authorization.slots[0].model_dump(mode="json"), "roles": ["reviewer", "support_manager"],
                 "any_of": True}
    for p in (forged(distinct_from=[], excluded_principals=[]), forged(slots=[wide_slot])):
        assert p.plan_hash == plan_hash(p)  # the hash alone does not catch it
        v = ENGINE.authorize_rollback(p, [appr(p, "bob"), appr(p, "sam", roles=("support_manager",))], NOW)
        assert not v.satisfied
        assert any("changed after classification" in e.message for e in v.errors)
    honest = ENGINE.authorize_rollback(plan, [appr(plan, "alice")], NOW)
    assert honest.satisfied
