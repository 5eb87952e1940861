"""A downstream record of a type its parent's type does not declare in `side_effects`
(DESIGN Part 1, items 7 and 8; Part 2 "The plan comes from the record"): the stateless
engine (`classify_rollback`) and the runtime (`request_rollback`, from the recorded
`caused_by` links) give one answer. It is not a step, its own downstream is not walked, it
is listed in `cascade.undeclared` under `plan_hash`, and the plan is partial. Before the
fix the runtime left it out of the plan (and of the hash reviewers approve) while the
engine planned it as an ordinary step."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from engine_support import engine_from_texts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import POLICY, RECEIPT, WF, at, policy_path, rt, send, write_policy  # noqa: F401  (fixtures)

from policy_engine.engine import digests, plan_hash

NOW = "2026-11-26T12:00:20Z"
SCENARIO = "customer_request"
#: the plan_hash of `_request([LOG])` at NOW, computed with the engine at the commit before
#: this change (4933d60, `git archive HEAD policy_engine` on PYTHONPATH): a plan with no
#: undeclared record keeps its hash byte for byte
HEAD_HASH = "sha256:99917f127faf77f5e96060d81dd3afcab9fb21e934e1653c334587a4c463249c"
#: the same plan's hash since session 22, which leaves source locations out of it (a plan
#: hashes alike however its policies were loaded); the earlier form is still accepted
LOCATION_FREE_HASH = "sha256:ba23ece511a4402088bfdd8fba37952bf271e1190be290ef5d2e54e71ffb786c"
LOG = {"id": "l1", "type": "log", "executed_at": "2026-11-26T12:00:01Z"}
OTHER = {"id": "o1", "type": "other", "executed_at": "2026-11-26T12:00:02Z",
         "downstream": [{"id": "o2", "type": "log", "executed_at": "2026-11-26T12:00:03Z"}]}


@pytest.fixture(scope="module")
def eng():
    return engine_from_texts({"replies.policy": POLICY})


def _request(kids: list, original: dict | None = None) -> dict:
    o = original or {"id": "x1", "type": "send", "executed_at": "2026-11-26T12:00:00Z", "opened": False}
    return {"workflow": WF, "scenario": SCENARIO, "requested_by": "rita", "original": {**o, "downstream": kids}}


def _approve(plan) -> list:
    ph = plan["plan_hash"] if isinstance(plan, dict) else plan.plan_hash
    return [{"principal": "cara", "roles": ["customer_service"], "plan_hash": ph, "at": NOW}]


def _rehashed(plan, edit) -> dict:
    d = plan.model_dump(mode="json")
    edit(d)
    d["plan_hash"] = plan_hash(d)
    return d


def _shape(plan) -> tuple:
    """What a plan plans: its steps, its undeclared records, its feasibility."""
    return ([(s.record_id, s.type, s.depth, s.parent, s.status) for s in plan.cascade.steps],
            [(u.record_id, u.type, u.parent, u.parent_type) for u in plan.cascade.undeclared],
            plan.feasibility.status, plan.cascade.partial)


# ---------------------------------------------------------------------- the stateless engine
def test_an_undeclared_child_is_listed_not_planned_and_the_plan_is_partial(eng):
    plan = eng.classify_rollback(_request([LOG, OTHER]), now=NOW)
    steps, undeclared, status, partial = _shape(plan)
    assert [s[0] for s in steps] == ["x1", "l1"]  # `other` is not a step, nor its own child `o2`
    assert undeclared == [("o1", "other", "x1", "send")]
    assert status == "partial" and partial and plan.authorizable
    reason = plan.feasibility.reasons[-1]
    assert "`o1` (`other`, caused by `x1` of type `send`)" in reason and "side_effects" in reason
    cascade = plan.model_dump(mode="json")["cascade"]
    assert cascade["undeclared"] == [{"record_id": "o1", "type": "other", "parent": "x1", "parent_type": "send"}]


def test_children_of_an_undeclared_parent_type_and_typeless_children_are_undeclared(eng):
    """Fail closed: a parent type the workflow does not declare declares no side effect."""
    kids = [{"id": "q1", "executed_at": NOW}, {"id": "l1", "type": "log", "executed_at": NOW,
                                              "downstream": [{"id": "l2", "type": "log", "executed_at": NOW}]}]
    plan = eng.classify_rollback(_request(kids), now=NOW)
    assert _shape(plan)[1] == [("q1", "<missing>", "x1", "send"), ("l2", "log", "l1", "log")]
    assert _shape(plan)[2] == "partial"


def test_the_hash_is_unchanged_when_nothing_is_undeclared_and_covers_it_otherwise(eng):
    plain = eng.classify_rollback(_request([LOG]), now=NOW)
    assert plain.plan_hash == LOCATION_FREE_HASH and plain.feasibility.status == "feasible"
    assert digests.legacy_plan_hash(plain) == HEAD_HASH and digests.plan_matches_hash(plain, HEAD_HASH)
    assert "undeclared" not in plain.model_dump(mode="json")["cascade"]
    assert "undeclared" not in plain.model_dump_json()
    with_other = eng.classify_rollback(_request([LOG, OTHER]), now=NOW)
    assert with_other.plan_hash != plain.plan_hash
    d = with_other.model_dump(mode="json")
    d["cascade"]["undeclared"][0]["type"] = "log2"
    assert plan_hash(d) != with_other.plan_hash


def test_a_plan_forged_without_its_undeclared_records_is_not_satisfied(eng):
    plan = eng.classify_rollback(_request([LOG, OTHER]), now=NOW)
    assert plan.cascade.undeclared  # what the forger drops
    assert eng.authorize_rollback(plan, _approve(plan), now=NOW).satisfied  # the baseline

    def drop(d):  # the undeclared record gone, the plan made to read feasible
        d["cascade"]["undeclared"] = []
        d["cascade"]["partial"] = False
        d["feasibility"]["status"] = "feasible"
        d["feasibility"]["reasons"] = []

    dropped = _rehashed(plan, drop)
    assert dropped["plan_hash"] != plan.plan_hash
    # the approvals reviewers gave bind the plan that listed it
    assert not eng.authorize_rollback(dropped, _approve(plan), now=NOW).satisfied
    # unhashed: its content no longer matches its hash
    unhashed = plan.model_dump(mode="json")
    unhashed["cascade"]["undeclared"] = []
    assert not eng.authorize_rollback(unhashed, _approve(plan), now=NOW).satisfied


@pytest.mark.parametrize("edit", ["as_a_step", "declared_type", "feasible", "parent_elsewhere"])
def test_a_plan_edited_against_the_policys_side_effects_is_refused(eng, edit):
    """Even with approvals for its new hash: what the plan says contradicts the policy."""
    plan = eng.classify_rollback(_request([LOG, OTHER]), now=NOW)

    def forge(d):
        u = d["cascade"]["undeclared"][0]
        if edit == "as_a_step":  # the undeclared record made an ordinary step
            step = dict(d["cascade"]["steps"][1], record_id="o1", type="other")
            d["cascade"]["steps"].append(step)
            d["cascade"]["undeclared"] = []
        elif edit == "declared_type":
            u["type"] = "log"
        elif edit == "feasible":
            d["feasibility"]["status"] = "feasible"
        else:
            u["parent"] = "nobody"

    forged = _rehashed(plan, forge)
    v = eng.authorize_rollback(forged, _approve(forged), now=NOW)
    assert not v.satisfied
    assert any("side_effects" in e.message or "side effect" in e.message or "undeclared" in e.message
               for e in v.errors), [e.message for e in v.errors]


# ---------------------------------------------------------------------- runtime and engine agree
def _execute(rt, atype: str, caused_by: str | None, t: float) -> str:
    g = rt.gate(send() if atype == "send" else {"workflow": WF, "type": atype}, now=at(t))
    receipt = {**RECEIPT, "opened": False} if atype == "send" else {"note": "n"}
    return rt.executed(g.decision_id, receipt=receipt, caused_by=caused_by, now=at(t + 0.5)).execution_id


def _stateless(rt, root: str, kids: dict[str, list[str]]) -> dict:
    """The original as a caller of the stateless engine would send it, from the ledger."""
    def rec(xid: str) -> dict:
        e = rt.ledger.get(xid)
        b = e.body
        return {**b["receipt"], "id": xid, "type": b["type"], "executed_at": b.get("executed_at") or e.time,
                "downstream": [rec(k) for k in kids.get(xid, [])]}
    return {"workflow": WF, "scenario": SCENARIO, "requested_by": "rita", "reason": "asked", "original": rec(root)}


def _agree(rt, root: str, kids: dict[str, list[str]], t: float):
    r = rt.request_rollback(root, scenario=SCENARIO, requested_by="rita", reason="asked", now=at(t))
    stateless = rt.engine.classify_rollback(_stateless(rt, root, kids), now=at(t))
    assert _shape(r.plan) == _shape(stateless)
    assert list(r.undeclared) == [{"record": u.record_id, "type": u.type, "parent": u.parent,
                                   "parent_type": u.parent_type} for u in stateless.cascade.undeclared]
    return r, stateless


def test_the_runtime_and_the_engine_give_one_answer(rt):
    x = _execute(rt, "send", None, 0)
    log = _execute(rt, "log", x, 1)
    other = _execute(rt, "other", x, 2)
    _execute(rt, "log", other, 3)  # under the undeclared record: not walked by either
    r, stateless = _agree(rt, x, {x: [log, other]}, 20)
    assert [s.record_id for s in r.plan.cascade.steps] == [x, log]
    assert r.undeclared == ({"record": other, "type": "other", "parent": x, "parent_type": "send"},)
    assert r.plan.feasibility.status == "partial" and r.status == "pending"
    # stored as planned: the hash reviewers approve covers the undeclared record
    e = rt.ledger.get(r.rollback_id)
    assert e.body["plan"]["cascade"]["undeclared"][0]["record_id"] == other
    assert e.body["undeclared"] == list(r.undeclared) and e.body["plan_hash"] == r.plan.plan_hash
    assert e.body["cascade"] == [log]


@st.composite
def _graphs(draw):
    """A small tree: node 0 a `send`, each later node a child of an earlier one."""
    n = draw(st.integers(1, 6))
    return [(draw(st.integers(0, i - 1)) if i else None, "send" if i == 0 else
             draw(st.sampled_from(["send", "log", "other"]))) for i in range(n)]


def test_random_graphs_plan_the_same_in_the_runtime_and_the_engine():
    from policy_engine import Runtime

    with tempfile.TemporaryDirectory() as d:
        path = write_policy(Path(d))
        with Runtime.open(str(path), ledger=f"sqlite:///{Path(d) / 'ledger.db'}") as runtime:
            clock = [0.0]

            @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
            @given(_graphs())
            def check(graph):
                ids: list[str] = []
                kids: dict[str, list[str]] = {}
                for parent, atype in graph:
                    clock[0] += 1
                    pid = ids[parent] if parent is not None else None
                    ids.append(_execute(runtime, atype, pid, clock[0]))
                    if pid is not None:
                        kids.setdefault(pid, []).append(ids[-1])
                clock[0] += 1
                _agree(runtime, ids[0], kids, clock[0] + 5)

            check()


# ---------------------------------------------------------------------- a batch rollback agrees
def test_a_batch_rollback_lists_the_undeclared_record_in_its_plan_like_request_rollback(rt):
    """The same defect for batches: `_graphs` used to drop the undeclared `other` before the
    engine planned, so the plan read feasible and its hash did not cover the record (listed
    beside it only). Now each member's plan lists it (`cascade.undeclared`, partial) and the
    stored undeclared list is that of the plan, as `request_rollback` records it."""
    x = _execute(rt, "send", None, 0)
    log = _execute(rt, "log", x, 1)
    other = _execute(rt, "other", x, 2)
    _execute(rt, "log", other, 3)  # under the undeclared record: not walked
    dry = rt.request_bulk_rollback(None, SCENARIO, "rita", "asked", executions=[x], now=at(20), dry_run=True)
    b = rt.request_bulk_rollback(None, SCENARIO, "rita", "asked", executions=[x], now=at(20))
    assert b.originals == (x,) and b.records == 2 and b.batch_hash == dry.batch_hash
    e = rt.ledger.get(b.rollbacks[0])
    plan = rt.engine.classify_rollback(_stateless(rt, x, {x: [log, other]}), now=at(20))
    assert e.body["plan_hash"] == plan.plan_hash
    stored = e.body["plan"]
    assert stored["feasibility"]["status"] == "partial" and stored["cascade"]["partial"]
    assert stored["cascade"]["undeclared"] == [{"record_id": other, "type": "other", "parent": x,
                                                "parent_type": "send"}]
    assert [s["record_id"] for s in stored["cascade"]["steps"]] == [x, log]
    assert e.body["undeclared"] == [{"record": other, "type": "other", "parent": x, "parent_type": "send"}]
    assert e.body["cascade"] == [log]
