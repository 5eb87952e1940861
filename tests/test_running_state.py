"""A running workflow's state passed as a plain dict (what an external caller sends with
each action) takes the engine's quick path, as no state does: the fused function gets the
state as `workflow`. Every decision must equal the reference gate's, whatever the state."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from engine_support import engine_from_texts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy_engine.engine.accel import lanes

T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)

POLICY = """roles [reviewer]
workflow "w" {
  version "1"
  owners { business "b" technical "t" }
  default deny
  action pay {
    reversible full via "p.undo" within 1h
    allow small when `action.amount <= 100`
    require_approval strict by 1 reviewer when `has(workflow.mode) && workflow.mode == "strict"`
    deny big when `action.amount > 1000`
    deny odd_mode when `has(workflow.mode) && workflow.mode.startsWith("x")`
  }
  stop s {
    when `action.type == "pay" && action.amount > 10000`
    severity low
    owner "o"
    resume when { ok: `evidence.ok` }
  }
}
"""


class S(str):
    pass


states = st.one_of(
    st.fixed_dictionaries({"status": st.just("running")},
                          optional={"mode": st.sampled_from(["strict", "lax", 1, None, "\ud800"]),
                                    "name": st.just("w"), "n": st.floats(allow_nan=True),
                                    "deep": st.just({"a": [1, {"b": 2}]}), "big": st.just("x" * 4_000_001)}),
    st.sampled_from([{}, {"status": S("running")}, {"status": "stopped", "stopped_by": "s"}, {"status": 1},
                     {"status": "paused"}, {"mode": "strict"}]),
)
actions = st.fixed_dictionaries({"workflow": st.just("w"), "type": st.just("pay"),
                                 "amount": st.sampled_from([5, 50, 500, 5000, 50000, 5.5, math.nan, "5"])},
                                optional={"id": st.sampled_from(["a1", "a2", 3])})


@given(calls=st.lists(st.tuples(actions, st.one_of(st.none(), states), st.sampled_from([T0, None])),
                      min_size=1, max_size=25))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_running_state_decides_like_the_full_path(calls):
    slow = engine_from_texts({"p.policy": POLICY}, accelerate=False)
    fast = engine_from_texts({"p.policy": POLICY})
    for action, state, now in calls + calls:
        d = fast.evaluate(action, state, now)
        at = now or datetime.fromisoformat(d.evaluated_at)
        ref = slow.evaluate(action, state, at)
        if now is None:  # (the clock's time: the same decision at that time)
            assert d.model_dump() == ref.model_dump()
        else:
            assert d.model_dump_json() == ref.model_dump_json()
            assert fast.evaluate_json(action, state, now) == ref.model_dump_json()


def test_a_running_state_takes_the_quick_path(monkeypatch):
    fast = engine_from_texts({"p.policy": POLICY})
    slow = engine_from_texts({"p.policy": POLICY}, accelerate=False)
    a = {"workflow": "w", "type": "pay", "id": "a1", "amount": 50}
    state = {"status": "running", "mode": "strict"}
    for _ in range(4):
        fast.evaluate(a, state, T0)
    calls = []
    real = lanes.Accelerator.evaluate
    monkeypatch.setattr(lanes.Accelerator, "evaluate", lambda self, *x: calls.append(x) or real(self, *x))
    d = fast.evaluate(a, state, T0)
    assert d.effect == "require_approval" and calls == []  # the fused function decided, with the state
    assert d.model_dump_json() == slow.evaluate(a, state, T0).model_dump_json()
    d = fast.evaluate(a, {"status": "running", "mode": "lax"}, T0)
    assert d.effect == "allow" and calls == []
    d = fast.evaluate(a, {"status": "running", "big": "x" * 4_000_001}, T0)  # over the limits: the full path
    assert d.effect == "deny" and d.errors[0].kind == "input" and calls
