"""Session 20 audit of the engine's three non-gate answers (DESIGN Part 1): rollback plans,
the sufficiency of approvals, and resume. Each test pins a rule no other test pins; the
regression tests failed before their fix (see the session's report)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest
from engine_support import engine_from_texts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy_engine.engine import plan_hash
from policy_engine.engine.authorize import judge
from policy_engine.models import SlotSpec

NOW = "2026-11-24T10:00:00Z"

# One workflow: `act` (a 60 s window) whose side effect `child` cascades into itself; a
# scenario of two slots, distinct from the original's reviewer and the requester, whose
# escalation adds a `legal` slot distinct from the original's executor.
POLICY = """roles [reviewer, manager, legal]
workflow "w" {
  version "1"
  owners { business "ops" technical "platform" }
  action act {
    system "s"
    reversible full via "undo" within 60s
    side_effects [child]
    allow when `true`
  }
  action child {
    system "s"
    reversible full via "undo_child" within 1h
    side_effects [child]
    allow when `true`
  }
  action gone {
    system "s"
    irreversible
    allow when `true`
  }
  rollback reviewer_error {
    route verification
    authorize 1 reviewer and 1 of [reviewer, manager] distinct from original.reviewer, request.requested_by
    notify [customer]
    compensate [child, "call the customer"]
    cascade depth 2
    after window {
      route escalations
      authorize 1 legal distinct from original.executor
      notify [account_owner]
    }
  }
  stop x {
    when `action.x == 1`
    severity high
    owner "ops"
    resume when { ok: `true` }
  }
}
workflow "v" {
  version "1"
  owners { business "ops" technical "platform" }
  action other_act {
    system "s"
    irreversible
    allow when `true`
  }
  stop x {
    when `action.x == 1`
    severity high
    owner "ops"
    resume when { postmortem_filed: `evidence.postmortem_filed == true` }
  }
}
"""


@pytest.fixture(scope="module", params=[True, False], ids=["accelerated", "reference"])
def eng(request):
    return engine_from_texts({"w.policy": POLICY}, accelerate=request.param)


def chain(n: int, prefix: str = "c") -> list:
    """`downstream` of n `child` records, each the parent of the next."""
    rec: dict | None = None
    for i in range(n, 0, -1):
        rec = {"id": f"{prefix}{i}", "type": "child", "executed_at": NOW, "downstream": [rec] if rec else []}
    return [rec] if rec else []


def request(executed_at="2026-11-24T09:59:30Z", downstream=(), **original):
    o = {"id": "r0", "type": "act", "executed_at": executed_at, "reviewer": "bob", "executor": "exe",
         "downstream": list(downstream), **original}
    return {"workflow": "w", "scenario": "reviewer_error", "requested_by": "rita", "original": o}


def approve(plan, who, roles):
    ph = plan["plan_hash"] if isinstance(plan, dict) else plan.plan_hash
    return {"principal": who, "roles": list(roles), "plan_hash": ph, "at": NOW}


def rehashed(plan, edit):
    """The plan as JSON, edited by `edit` (in place) and given the hash of its new content:
    what a caller who forges a plan can send."""
    d = plan.model_dump(mode="json")
    edit(d)
    d["plan_hash"] = plan_hash(d)
    return d


def two_approvers(plan):
    return [approve(plan, "ann", ["reviewer"]), approve(plan, "carl", ["manager"])]


def test_the_unedited_plan_is_satisfied(eng):
    """The baseline of the forgeries below: the same approvals satisfy the plan as classified."""
    plan = eng.classify_rollback(request(downstream=chain(3)), now=NOW)
    assert plan.window == "standard" and plan.authorizable
    assert eng.authorize_rollback(plan, two_approvers(plan), now=NOW).satisfied


# ------------------------------------------------------------------ rollback: whom `distinct from` excludes

BLANK_IDS = [" ", "\t", "\u200b", "\u00ad", "\u200e \u2060"]


@pytest.mark.parametrize("field,who", [("reviewer", w) for w in [*BLANK_IDS, ["bob", " "]]]
                         + [("requested_by", w) for w in BLANK_IDS])
def test_a_principal_id_of_blanks_and_invisible_characters_excludes_nobody(eng, field, who):
    """docs/rollback-plans.md: nobody to exclude (`""`) is not "exclude nobody": the plan is
    not authorizable. An id of nothing but blanks and invisible characters is `""` written
    another way (docs/approvals.md: it names no one), so it resolves nobody either; else
    the real reviewer, or the requester, approves their own rollback."""
    req = request()
    if field == "reviewer":
        req["original"]["reviewer"] = who
    else:
        req["requested_by"] = who
    plan = eng.classify_rollback(req, now=NOW)
    assert not plan.authorizable
    ref = "original.reviewer" if field == "reviewer" else "request.requested_by"
    assert any(d.ref == ref and d.principal is None for d in plan.authorization.distinct_from)
    assert any(f"distinct from {ref}" in e.message for e in plan.errors)
    apps = [approve(plan, "bob", ["reviewer"]), approve(plan, "rita", ["manager"])]
    assert not eng.authorize_rollback(plan, apps, now=NOW).satisfied


# ------------------------------------------------------------------ rollback: a plan rehashed

def test_a_rehashed_plan_cannot_cascade_deeper_than_the_scenario_authorizes(eng):
    """DESIGN 7: the cascade is planned up to the *authorized* depth (`cascade depth 2`);
    deeper records are pause-and-confirm checkpoints. A plan edited to raise its depth
    limit and turn the checkpoint into a step, then rehashed, would have approvers
    authorize a reversal deeper than the policy allows."""
    plan = eng.classify_rollback(request(downstream=chain(3)), now=NOW)
    assert [c.record_id for c in plan.cascade.checkpoint] == ["c3"]

    def deeper(d):
        cp = d["cascade"]["checkpoint"].pop()
        d["cascade"]["steps"].append({**d["cascade"]["steps"][-1], "record_id": cp["record_id"],
                                      "depth": cp["depth"], "parent": cp["parent"]})
        d["cascade"]["depth_limit"] = 64

    forged = rehashed(plan, deeper)
    v = eng.authorize_rollback(forged, two_approvers(forged), now=NOW)
    assert not v.satisfied and any("cascade depth" in e.message for e in v.errors)
    # the depth limit alone, or a step alone, is caught too
    for edit in (lambda d: d["cascade"].update(depth_limit=3),
                 lambda d: d["cascade"]["steps"][-1].update(depth=3)):
        forged = rehashed(plan, edit)
        assert not eng.authorize_rollback(forged, two_approvers(forged), now=NOW).satisfied


def test_a_rehashed_plan_cannot_exclude_someone_else_than_its_requester(eng):
    """`distinct from request.requested_by`: the plan says who requested it (`requested_by`,
    covered by its hash); its exclusion of `request.requested_by` must name that principal,
    or the requester approves their own rollback."""
    plan = eng.classify_rollback(request(), now=NOW)

    def swap(d):
        d["authorization"]["distinct_from"] = [{"ref": "original.reviewer", "principal": "bob"},
                                               {"ref": "request.requested_by", "principal": "zed"}]
        d["authorization"]["excluded_principals"] = ["bob", "zed"]

    forged = rehashed(plan, swap)
    assert forged["requested_by"] == "rita"
    v = eng.authorize_rollback(forged, [approve(forged, "rita", ["reviewer"]), approve(forged, "carl", ["manager"])],
                               now=NOW)
    assert not v.satisfied and any("requested_by" in e.message for e in v.errors)


@pytest.mark.parametrize("executed_at", ["2026-11-24T09:59:30Z", "2026-11-24T09:00:00Z"], ids=["standard", "escalated"])
@pytest.mark.parametrize("edit", [
    lambda d: d.update(route="fast_lane"),
    lambda d: d.update(notify=[]),
    lambda d: d.update(compensations=[c for c in d["compensations"] if c["name"] != "child"]),
], ids=["route", "notify", "compensations"])
def test_a_rehashed_plan_cannot_change_its_route_or_drop_a_duty(eng, executed_at, edit):
    """Who is told and what compensations follow are the scenario's (DESIGN: route,
    notifications, compensating actions): a plan rehashed to another queue or without a
    duty the scenario lists unconditionally is not the plan the policy requires."""
    plan = eng.classify_rollback(request(executed_at=executed_at), now=NOW)
    apps = two_approvers(plan) + [approve(plan, "lee", ["legal"])]
    assert eng.authorize_rollback(plan, apps, now=NOW).satisfied
    forged = rehashed(plan, edit)
    apps = two_approvers(forged) + [approve(forged, "lee", ["legal"])]
    v = eng.authorize_rollback(forged, apps, now=NOW)
    assert not v.satisfied and v.errors


@pytest.mark.parametrize("edit", [
    lambda d: d.update(reversible_until="2026-11-24T11:00:00Z"),
    lambda d: d.update(window_seconds=3600),
], ids=["reversible_until", "window_seconds"])
def test_a_rehashed_plan_cannot_show_another_window_end(eng, edit):
    """docs/approvals.md: a plan whose own `reversible_until` says otherwise than the
    policy's window from its `executed_at` is not satisfied. The reviewer reads the window
    from the plan ("standard until when"): an hour shown for a 60 s window is not what the
    policy says."""
    plan = eng.classify_rollback(request(), now=NOW)
    assert plan.reversible_until == "2026-11-24T10:00:30Z" and plan.window_seconds == 60
    forged = rehashed(plan, edit)
    v = eng.authorize_rollback(forged, two_approvers(forged), now=NOW)
    assert not v.satisfied and v.errors


def test_a_rehashed_plan_cannot_name_another_type_for_its_original(eng):
    """The requirement follows the original's type (its window decides the path). A plan
    edited to name a type without a window (`window: none`: the standard path forever)
    while its cascade still reverses the `act` record is not the plan the policy requires:
    the original is the cascade's first step, with the plan's type, id and time."""
    plan = eng.classify_rollback(request(executed_at="2026-11-24T09:00:00Z"), now=NOW)
    assert plan.window == "escalated" and plan.cascade.steps[0].type == "act"

    def other_type(d):
        d.update(original_type="gone", window="none", window_seconds=None, reversible_until=None,
                 route="verification")
        d["authorization"]["slots"] = [s for s in d["authorization"]["slots"] if s["source"] == "standard"]
        d["authorization"]["distinct_from"] = [r for r in d["authorization"]["distinct_from"]
                                               if r["ref"] != "original.executor"]
        d["authorization"]["excluded_principals"] = ["bob", "rita"]

    forged = rehashed(plan, other_type)
    v = eng.authorize_rollback(forged, two_approvers(forged), now=NOW)
    assert not v.satisfied and v.errors


# ------------------------------------------------------------------ resume

def test_a_stop_decision_of_another_workflow_does_not_resume_this_one(eng):
    """Both workflows have a trigger `x`; `v`'s needs a postmortem, `w`'s nothing. A stop
    decision names its workflow: given for `w`, `v`'s decision is not `w`'s stop (as a
    stop *state* naming another workflow is not)."""
    d = eng.evaluate({"workflow": "v", "type": "other_act", "id": "1", "x": 1}, now=NOW)
    assert d.effect == "stop" and d.stop.trigger == "x"
    r = eng.may_resume("w", d.model_dump(mode="json"), {}, now=NOW)
    assert not r.allowed and any("stop decision names workflow `\"v\"`" in e.message for e in r.errors)
    r = eng.may_resume("w", d, {}, now=NOW)  # the model itself
    assert not r.allowed
    # its own workflow's: judged by `v`'s criteria
    assert not eng.may_resume("v", d, {}, now=NOW).allowed
    assert eng.may_resume("v", d, {"postmortem_filed": True}, now=NOW).allowed
    # and `w`'s own stop decision still resumes `w`
    dw = eng.evaluate({"workflow": "w", "type": "act", "id": "2", "x": 1}, now=NOW)
    assert dw.effect == "stop" and eng.may_resume("w", dw, {}, now=NOW).allowed


# ------------------------------------------------------------------ properties: who counts

SLOT_ROLES = ["reviewer", "manager", "legal"]
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.function_scoped_fixture])


def brute_force(people: dict[str, set], slots: list[tuple[int, set]]) -> bool:
    """Every slot filled by distinct people holding one of its roles, one slot each: tried
    over every assignment of people to slot seats (small inputs only)."""
    seats = [roles for count, roles in slots for _ in range(count)]
    names = sorted(people)
    if len(seats) > len(names):
        return False
    return any(all(people[who] & seat for who, seat in zip(perm, seats))
               for perm in itertools.permutations(names, len(seats)))


@PROPS
@given(st.lists(st.tuples(st.integers(1, 2), st.sets(st.sampled_from(SLOT_ROLES), min_size=1, max_size=2)),
                min_size=1, max_size=3),
       st.dictionaries(st.sampled_from(["ann", "carl", "lee", "max", "sue"]),
                       st.sets(st.sampled_from(SLOT_ROLES + ["other"]), max_size=3), max_size=5),
       st.randoms(use_true_random=False))
def test_the_matching_fills_every_slot_exactly_when_some_assignment_does(slots, people, rnd):
    """DESIGN 6 (one principal fills at most one slot; an approver without the role never
    counts) as an oracle: the slots are all filled iff some assignment of distinct people
    to seats fills them, whatever the order the approvals arrive in."""
    specs = [SlotSpec(id=f"s{i}", count=n, roles=tuple(sorted(r)), any_of=len(r) > 1)
             for i, (n, r) in enumerate(slots)]
    apps = [{"principal": who, "roles": sorted(roles), "plan_hash": "h"} for who, roles in people.items()]
    rnd.shuffle(apps)
    errors: list = []
    at = datetime(2026, 11, 24, 10, tzinfo=UTC)
    fills, open_slots, accepted, _ = judge(apps, "plan_hash", "h", "p", specs, {}, at, errors)
    assert not errors
    assert (not open_slots) == brute_force(people, slots)
    for f in fills:  # each filler holds a role of its slot; nobody in two slots
        assert all(people[w] & set(f.roles) for w in f.filled_by) and len(f.filled_by) <= f.count
    assert len(accepted) == sum(len(f.filled_by) for f in fills) == len({w for f in fills for w in f.filled_by})


# two spellings of one id (`ann`, `Ann`) are one person: the first in sorted order counts, with
# the roles of every spelling (docs/approvals.md), so adding `Ann` never displaces `ann`'s role
APPROVERS = ["ann", "Ann", "carl", "lee", "max", "bob", "rita", "exe"]
approval_st = st.tuples(st.sampled_from(APPROVERS), st.sets(st.sampled_from(SLOT_ROLES + ["other"]), max_size=2),
                        st.sampled_from(["approve", "deny"]),
                        st.sampled_from([None, NOW, "2026-11-24T10:00:00.000001Z", "2026-11-24T09:00:00Z"]))


def as_approvals(plan, items):
    out = []
    for who, roles, verdict, expires in items:
        a = {**approve(plan, who, sorted(roles)), "verdict": verdict}
        if expires is not None:
            a["expires_at"] = expires
        out.append(a)
    return out


@pytest.mark.parametrize("executed_at", ["2026-11-24T09:59:30Z", "2026-11-24T09:00:00Z"], ids=["standard", "escalated"])
@settings(PROPS, max_examples=60)
@given(items=st.lists(approval_st, max_size=6), extra=approval_st, data=st.data())
def test_approvals_are_monotone_and_order_free(eng, executed_at, items, extra, data):
    """Adding an approval (not a deny) never turns a sufficient set insufficient; removing
    one never turns an insufficient set sufficient; the order never matters. An approval
    expiring exactly at now has expired; the excluded (reviewer `bob`, requester `rita`,
    after the window executor `exe`) never count, nor does their deny."""
    plan = eng.classify_rollback(request(executed_at=executed_at), now=NOW)
    apps = as_approvals(plan, items)
    v = eng.authorize_rollback(plan, apps, now=NOW)
    shuffled = data.draw(st.permutations(apps))
    assert eng.authorize_rollback(plan, shuffled, now=NOW).satisfied == v.satisfied
    more = eng.authorize_rollback(plan, apps + as_approvals(plan, [extra]), now=NOW)
    if v.satisfied and extra[2] == "approve":
        assert more.satisfied
    if not v.satisfied and apps:
        drop = data.draw(st.integers(0, len(apps) - 1))
        if apps[drop]["verdict"] == "approve":  # (removing a deny may well release it)
            assert not eng.authorize_rollback(plan, apps[:drop] + apps[drop + 1:], now=NOW).satisfied
    excluded = {"bob", "rita"} | ({"exe"} if plan.window == "escalated" else set())
    in_force = [a for a in apps if a.get("expires_at") in (None, "2026-11-24T10:00:00.000001Z")
                and a["principal"] not in excluded and set(a["roles"]) & set(SLOT_ROLES)]
    assert set(v.accepted) <= {a["principal"] for a in in_force if a["verdict"] == "approve"}
    if any(a["verdict"] == "deny" and set(a["roles"]) & {r for s in plan.authorization.slots for r in s.roles}
           for a in in_force):
        assert not v.satisfied


# ------------------------------------------------------------------ properties: windows and cascades

@PROPS
@given(st.integers(-200, 200), st.integers(0, 999_999), st.sampled_from(["Z", "+00:00", "+05:30", "-07:00"]))
def test_the_window_is_open_exactly_until_executed_at_plus_window_in_any_offset(eng, secs, micros, offset):
    """DESIGN 5: `reversible_until = executed_at + window`; standard up to and including
    it, escalated after. The same instant written in another offset gives the same plan."""
    now = datetime(2026, 11, 24, 10, tzinfo=UTC)
    ex = now - timedelta(seconds=60) + timedelta(seconds=secs, microseconds=micros)
    tz = UTC if offset in ("Z", "+00:00") else timezone(
        timedelta(hours=5, minutes=30) if offset == "+05:30" else -timedelta(hours=7))
    text = ex.astimezone(tz).isoformat().replace("+00:00", offset if offset == "Z" else "+00:00")
    plan = eng.classify_rollback(request(executed_at=text), now=NOW)
    utc = eng.classify_rollback(request(executed_at=ex.isoformat().replace("+00:00", "Z")), now=NOW)
    assert plan.plan_hash == utc.plan_hash
    if ex > now + timedelta(seconds=60):  # beyond the clock allowance: treated as expired
        assert plan.window == "escalated" and plan.reversible_until is None
    else:
        assert plan.window == ("standard" if now <= ex + timedelta(seconds=60) else "escalated")
        assert (plan.cascade.steps[0].status == "out_of_window") == (plan.window == "escalated")


def tree_st(ids):
    """Nested `child` records (a tree), ids drawn from `ids` (repeats make revisits)."""
    return st.recursive(st.builds(lambda i: {"id": i, "type": "child", "executed_at": NOW}, st.sampled_from(ids)),
                        lambda kids: st.builds(lambda i, ks: {"id": i, "type": "child", "executed_at": NOW,
                                                              "downstream": ks},
                                               st.sampled_from(ids), st.lists(kids, max_size=3)),
                        max_leaves=10)


def occurrences(records, depth=1, parent="r0"):
    for r in records:
        yield r["id"], depth, parent
        yield from occurrences(r.get("downstream", []), depth + 1, r["id"])


@PROPS
@given(st.lists(tree_st([f"d{i}" for i in range(12)]), max_size=3))
def test_the_cascade_plans_every_record_once_and_splits_at_the_authorized_depth(eng, downstream):
    """DESIGN 7, over generated record trees (depth 2 authorized): breadth-first, each
    record at its shallowest depth; at most the authorized depth a step, deeper a
    checkpoint; no record planned twice; a record met again is a loop and the plan partial;
    with no record met twice, every record is planned under its own parent."""
    plan = eng.classify_rollback(request(downstream=downstream), now=NOW)
    c = plan.cascade
    planned = [(s.record_id, s.depth, s.parent) for s in c.steps] + [(k.record_id, k.depth, k.parent)
                                                                     for k in c.checkpoint]
    ids = [i for i, _, _ in planned]
    assert len(ids) == len(set(ids)) and ids[0] == "r0"
    assert all(s.depth <= 2 for s in c.steps) and all(k.depth > 2 for k in c.checkpoint)
    assert [s.depth for s in c.steps] == sorted(s.depth for s in c.steps)  # breadth-first
    seen = list(occurrences(downstream))
    if len({i for i, _, _ in seen}) == len(seen):
        assert sorted(planned[1:]) == sorted(seen) and not c.partial and not c.loops
    else:
        assert c.partial and c.loops and plan.feasibility.status in ("feasible", "partial")
        # the original's own downstream are always reached: at depth 1, under it
        assert {(r["id"], 1, "r0") for r in downstream if r["id"] != "r0"} <= set(planned)


# ------------------------------------------------------------------ every shipped scenario

def shipped_cases():
    from engine_support import ROOT

    import policy_engine
    shipped = policy_engine.load(str(ROOT / "policies"))
    for wf in shipped.compiled.workflows.values():
        types = sorted(wf.actions)
        for sname in sorted(wf.scenarios):
            for executed_at in ("2026-11-24T09:59:59Z", "2020-01-01T00:00:00Z"):
                yield shipped, wf, sname, types[0], executed_at


def test_every_shipped_scenario_needs_exactly_its_seats_from_people_it_does_not_exclude():
    """Over every scenario of the shipped policies, inside and past the window: one
    approver per seat, each holding a role of their slot, satisfies the plan; any one of
    them missing leaves it unsatisfied; the principals `distinct from` names never count,
    whatever roles they claim (DESIGN 6)."""
    checked = 0
    for shipped, wf, sname, atype, executed_at in shipped_cases():
        sc = wf.scenarios[sname]
        req = {"workflow": wf.name, "scenario": sname, "requested_by": "requester-1",
               "original": {"id": "o-1", "type": atype, "executed_at": executed_at}}
        for path in sc.distinct_from + sc.esc_distinct_from:
            where = req if path[0] == "request" else req["original"]
            for part in path[1:-1]:
                where = where.setdefault(part, {})
            where.setdefault(path[-1], "excluded-" + ".".join(path))
        plan = shipped.classify_rollback(req, now=NOW)
        assert plan.authorizable, (wf.name, sname, plan.errors)
        seats = [(f"{s.id}-{i}", s.roles[i % len(s.roles)]) for s in plan.authorization.slots for i in range(s.count)]
        apps = [approve(plan, who, [role]) for who, role in seats]
        every_role = sorted({r for s in plan.authorization.slots for r in s.roles})
        excluded = [approve(plan, who, every_role) for who in plan.authorization.excluded_principals]
        v = shipped.authorize_rollback(plan, apps + excluded, now=NOW)
        assert v.satisfied, (wf.name, sname, executed_at, v.open_slots, v.errors)
        assert not set(v.accepted) & set(plan.authorization.excluded_principals)
        for i in range(len(apps)):
            fewer = shipped.authorize_rollback(plan, apps[:i] + apps[i + 1:] + excluded, now=NOW)
            assert not fewer.satisfied, (wf.name, sname, seats[i])
        checked += 1
    assert checked >= 2 * 6 * 5  # six workflows, five standard scenarios each at least


@PROPS
@given(st.sampled_from(["act", "child", "gone"]),
       st.sampled_from(["2026-11-24T09:59:30Z", "2026-11-24T09:00:00Z", "2026-11-24T10:00:45Z", "2026-11-24T11:00:00Z",
                        "2026-11-24T09:59:00Z", "2026-11-24T09:59:29.9999999Z", None]),
       st.lists(tree_st(["d1", "d2", "d3", "r0"]), max_size=2),
       st.sampled_from([NOW, "2026-11-24T10:00:00.0000001Z", "2026-11-24T15:30:00+05:30"]))
def test_a_plan_as_classified_is_never_refused_as_edited(eng, atype, executed_at, downstream, now):
    """The checks that refuse an edited plan never refuse the plan `classify_rollback`
    made, at the `now` it was made at: with its seats filled it is satisfied."""
    req = request(executed_at=executed_at, downstream=downstream)
    req["original"]["type"] = atype
    if executed_at is None:
        del req["original"]["executed_at"]
    plan = eng.classify_rollback(req, now=now)
    assert plan.authorizable
    seats = [(f"{s.id}-{i}", s.roles[0]) for s in plan.authorization.slots for i in range(s.count)]
    v = eng.authorize_rollback(plan, [approve(plan, who, [role]) for who, role in seats], now=now)
    assert v.satisfied and not v.errors, v.errors


def test_two_spellings_of_one_approver_hold_the_roles_of_both(eng):
    """`Ann` sorts before `ann`: it counted, with its own roles only, so adding `Ann`
    (legal) to a sufficient set (`ann` reviewer, `carl` manager, `lee` legal) dropped
    `ann`'s reviewer role and made the set insufficient. One person holds both."""
    plan = eng.classify_rollback(request(executed_at="2026-11-24T09:00:00Z"), now=NOW)  # escalated: + legal
    apps = [approve(plan, "ann", ["reviewer"]), approve(plan, "carl", ["manager"]), approve(plan, "lee", ["legal"])]
    assert eng.authorize_rollback(plan, apps, now=NOW).satisfied
    v = eng.authorize_rollback(plan, apps + [approve(plan, "Ann", ["legal"])], now=NOW)
    assert v.satisfied
    assert [r.principal for r in v.rejected if r.code == "alias"] == ["ann"]  # one person, counted once
