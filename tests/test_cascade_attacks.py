"""Hostile cascades: loops, diamonds, fan-out, dangling records, deep chains.

The plan is breadth-first, visits each distinct record id once (a revisit is a loop:
the plan is marked partial and the loop listed), stays linear in the number of
records, and is bounded: at most MAX_CASCADE_RECORDS records (steps + checkpoint),
MAX_LOOPS_LISTED loops listed, and the whole request within the input limits
(MAX_INPUT_ITEMS values, MAX_INPUT_DEPTH levels). Whatever is cut is named in the plan.
"""

from __future__ import annotations

import pytest

from policy_engine import engine as engine_mod
from policy_engine.engine import MAX_CASCADE_RECORDS, MAX_INPUT_DEPTH, MAX_INPUT_ITEMS, Engine
from policy_engine.language.loader import load_text

NOW = "2026-07-02T10:00:00Z"

POLICY = """
roles [reviewer]
workflow "ops" {
  version "1"
  owners { business "b" technical "t" }
  default deny
  action a {
    system "s"
    reversible full via "a.undo"
    verify "a is gone"
    side_effects [a, b]
    allow when `false`
  }
  action b {
    system "s"
    irreversible
    allow when `false`
  }
  rollback incident {
    route q
    authorize 1 reviewer
    cascade depth 3
  }
  rollback customer_request {
    route q
    authorize 1 reviewer
    cascade depth 64
  }
}
"""


def make_engine() -> Engine:
    r = load_text(POLICY, "ops.policy")
    assert r.policy_set is not None, [f"{d.span}: {d.message}" for d in r.errors]
    return Engine.from_load_result(r)


ENGINE = make_engine()


def rec(rid, typ="a", downstream=None):
    r = {"id": rid, "type": typ, "executed_at": "2026-07-02T09:00:00Z"}
    if downstream is not None:
        r["downstream"] = downstream
    return r


def classify(original, scenario="incident"):
    return ENGINE.classify_rollback({"workflow": "ops", "scenario": scenario, "requested_by": "u",
                                     "original": original}, NOW)


def ids(steps):
    return [s.record_id for s in steps]


# ------------------------------------------------------------------ loops

def test_self_loop():
    plan = classify(rec("r", downstream=[rec("r")]))
    c = plan.cascade
    assert ids(c.steps) == ["r"]
    assert c.partial and [(lp.record_id, lp.path) for lp in c.loops] == [("r", ("r", "r"))]


def test_two_cycle_and_longer_cycle():
    plan = classify(rec("x", downstream=[rec("y", downstream=[rec("z", downstream=[rec("x")])])]))
    c = plan.cascade
    assert ids(c.steps) == ["x", "y", "z"]
    assert c.partial and c.loops[0].path == ("x", "y", "z", "x")


def test_cycle_through_shared_python_objects_terminates():
    a = rec("a")
    b = rec("b", downstream=[a])
    a["downstream"] = [b]  # a real reference cycle in the input
    plan = classify(a)
    # either rejected by the input limits or planned with a loop; never a hang
    assert plan.cascade.partial or plan.errors


def test_diamond_revisit_is_a_loop_not_a_second_step():
    d = rec("d")
    plan = classify(rec("top", downstream=[rec("l", downstream=[d]), rec("r", downstream=[dict(d)])]))
    c = plan.cascade
    assert ids(c.steps) == ["top", "l", "r", "d"]
    assert c.partial and [lp.record_id for lp in c.loops] == ["d"]


def test_exponential_diamond_is_bounded():
    # 40 layers of 2 records, each pointing at both records of the next layer: 2^40 paths.
    nxt: list = []
    for layer in range(40, 0, -1):
        nxt = [rec(f"n{layer}a", downstream=nxt), rec(f"n{layer}b", downstream=nxt)]
    plan = classify(rec("root", downstream=nxt), "customer_request")
    # The shared structure expands to more than MAX_INPUT_ITEMS values: rejected before planning.
    assert not plan.authorizable
    assert any(str(MAX_INPUT_ITEMS) in e.message for e in plan.errors)


def test_diamond_within_the_input_limits_is_linear():
    # 12 layers: 2^12 paths, 24 distinct records; expanded JSON-like input stays under the limits.
    nxt: list = []
    for layer in range(12, 0, -1):
        nxt = [rec(f"n{layer}a", downstream=nxt), rec(f"n{layer}b", downstream=nxt)]
    plan = classify(rec("root", downstream=nxt), "customer_request")
    c = plan.cascade
    assert len(c.steps) == 25 and len(set(ids(c.steps))) == 25
    assert c.partial and len(c.loops) == 22  # each of the 11 lower layers' 2 records seen twice


def test_many_loops_are_listed_up_to_the_cap():
    kids = [rec("root") for _ in range(500)]
    plan = classify(rec("root", downstream=kids))
    c = plan.cascade
    assert len(c.loops) == engine_mod.MAX_LOOPS_LISTED and c.partial
    assert any("500 loops" in e.message for e in plan.errors)


# ------------------------------------------------------------------ fan-out and limits

def test_fan_out_within_the_plan_limit():
    n = MAX_CASCADE_RECORDS - 1
    plan = classify(rec("root", downstream=[rec(f"c{i}") for i in range(n)]))
    c = plan.cascade
    assert len(c.steps) == n + 1 and not c.truncated and not c.partial


def test_fan_out_beyond_the_plan_limit_is_truncated_and_named():
    n = MAX_CASCADE_RECORDS + 500
    plan = classify(rec("root", downstream=[rec(f"c{i}") for i in range(n)]))
    c = plan.cascade
    assert c.truncated and c.partial
    assert len(c.steps) + len(c.checkpoint) == MAX_CASCADE_RECORDS
    assert str(MAX_CASCADE_RECORDS) in c.truncated_reason
    assert f"downstream[{MAX_CASCADE_RECORDS - 1}] of record `root`" in c.truncated_reason


def test_100k_fan_out_is_rejected_by_the_input_limit_fast():
    plan = classify(rec("root", downstream=[rec(f"c{i}") for i in range(100_000)]))
    assert not plan.authorizable
    assert any(f"more than {MAX_INPUT_ITEMS} values" in e.message for e in plan.errors)


# ------------------------------------------------------------------ depth

def chain(n: int, typ="a"):
    node = rec(f"d{n}", typ)
    for i in range(n - 1, -1, -1):
        node = rec(f"d{i}", typ, downstream=[node])
    return node


def test_chain_beyond_the_authorized_depth_becomes_a_checkpoint():
    plan = classify(chain(10))  # incident: cascade depth 3
    c = plan.cascade
    assert ids(c.steps) == ["d0", "d1", "d2", "d3"]
    assert [r.record_id for r in c.checkpoint] == [f"d{i}" for i in range(4, 11)]
    assert [r.depth for r in c.checkpoint] == list(range(4, 11))


def test_deep_chain_within_input_depth():
    n = MAX_INPUT_DEPTH // 2 - 2
    plan = classify(chain(n), "customer_request")
    c = plan.cascade
    assert len(c.steps) == 65 and len(c.checkpoint) == n + 1 - 65


@pytest.mark.parametrize("n", [MAX_INPUT_DEPTH, 100_000])
def test_very_deep_chain_is_rejected_by_the_input_limit(n):
    plan = classify(chain(n), "customer_request")
    assert not plan.authorizable
    assert any(f"more than {MAX_INPUT_DEPTH} levels" in e.message for e in plan.errors)


# ------------------------------------------------------------------ dangling and malformed records

def test_dangling_and_malformed_downstream_records():
    original = rec("root", downstream=[
        rec("u1", "undeclared_type"),
        "t9",  # a bare id: not a record
        None,
        {"type": "a"},  # no id
        {"id": 5, "type": "a"},
        rec("b1", "b"),  # irreversible: manual
        {"id": "x", "type": ["a"]},
        rec("ok", "a", downstream="not a list"),
    ])
    plan = classify(original, "customer_request")
    c = plan.cascade
    steps = {s.record_id: s for s in c.steps}
    # a type no side_effects declares (unknown, or not a string) is no step: listed, not planned
    assert "u1" not in steps and "x" not in steps
    assert [(u.record_id, u.type, u.parent, u.parent_type) for u in c.undeclared] == [
        ("u1", "undeclared_type", "root", "a"), ("x", "<missing>", "root", "a")]
    assert steps["b1"].manual and "irreversible" in steps["b1"].reason
    assert "root/downstream[3]" in steps and "root/downstream[4]" in steps and "ok" in steps
    assert c.partial and plan.feasibility.status == "partial"
    msgs = " | ".join(e.message for e in plan.errors)
    assert "downstream[1] of record `root` is not an object" in msgs
    assert "downstream[2] of record `root` is not an object" in msgs
    assert "`downstream` of record `ok` must be a list" in msgs


def test_synthesized_id_collision_is_a_loop_not_a_merge():
    original = rec("root", downstream=[{"type": "a"}, rec("root/downstream[0]")])
    c = classify(original, "customer_request").cascade
    assert ids(c.steps) == ["root", "root/downstream[0]"]
    assert c.partial and c.loops[0].record_id == "root/downstream[0]"


def test_plan_is_deterministic():
    original = rec("root", downstream=[rec(f"c{i}", downstream=[rec(f"c{(i * 7) % 50}")]) for i in range(50)])
    a = classify(original).model_dump_json()
    b = classify(original).model_dump_json()
    assert a == b
