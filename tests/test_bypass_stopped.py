"""A stopped workflow stays stopped: only declared repair actions (`runs_while_stopped`)
are gated by their own rules, and the stop triggers still apply to them."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy_engine.engine import Engine
from policy_engine.language.loader import load_text

NOW = "2026-07-02T10:00:00Z"

POLICY = """
roles [reviewer]
workflow "w" {
  version "1"
  owners { business "b" technical "t" }
  default deny
  action send {
    system "mail"
    allow when `true`
  }
  action correct {
    system "mail"
    runs_while_stopped
    allow ok when `action.verified == true`
  }
  stop bad_claim {
    when `action.type == "send" && action.claim == "false"`
    severity high
    owner "o"
    resume when { fixed: `evidence.fixed == true` }
  }
  stop runaway_corrections {
    when `action.type == "correct" && action.count > 10`
    severity high
    owner "o"
    resume when { fixed: `evidence.fixed == true` }
  }
}
workflow "other" {
  version "1"
  owners { business "b" technical "t" }
  default deny
  action repair_elsewhere {
    system "x"
    runs_while_stopped
    allow when `true`
  }
}
"""


def make() -> Engine:
    r = load_text(POLICY, "w.policy")
    assert r.policy_set is not None, [f"{d.span}: {d.message}" for d in r.errors]
    return Engine.from_load_result(r)


ENGINE = make()
STOPPED = {"status": "stopped", "stopped_by": "bad_claim", "stopped_at": "2026-07-02T09:00:00Z"}


def ev(action, state=STOPPED):
    return ENGINE.evaluate(action, state, NOW)


def test_ordinary_action_of_a_stopped_workflow_is_stopped():
    d = ev({"workflow": "w", "type": "send", "claim": "true"})
    assert d.effect == "stop" and d.deciding.kind == "stopped" and d.stop.trigger == "bad_claim"


def test_repair_action_is_gated_by_its_own_rules():
    assert ev({"workflow": "w", "type": "correct", "verified": True, "count": 1}).effect == "allow"
    assert ev({"workflow": "w", "type": "correct", "verified": False, "count": 1}).effect == "deny"


def test_repair_action_errors_fail_closed():
    d = ev({"workflow": "w", "type": "correct", "count": 1})  # no `verified`
    assert d.effect == "deny" and d.errors
    d = ev({"workflow": "w", "type": "correct", "verified": True})  # stop condition errors: matched
    assert d.effect == "stop"


def test_stop_triggers_still_apply_to_repair_actions():
    d = ev({"workflow": "w", "type": "correct", "verified": True, "count": 11})
    assert d.effect == "stop" and d.deciding.name == "runaway_corrections"


def test_repair_action_of_another_workflow_does_not_pass():
    d = ev({"workflow": "w", "type": "repair_elsewhere"})
    assert d.effect == "stop"


def test_repair_type_spelled_differently_does_not_pass():
    for t in ("Correct", "correct ", "correct\x00", ["correct"]):
        d = ev({"workflow": "w", "type": t, "verified": True, "count": 1})
        assert d.effect in ("stop", "deny"), t


junk = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8),
                              st.sampled_from(["send", "correct", "w", "other", "repair_elsewhere", True])),
                    lambda i: st.one_of(st.lists(i, max_size=3), st.dictionaries(st.text(max_size=5), i, max_size=3)),
                    max_leaves=8)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({"workflow": st.one_of(st.just("w"), junk), "type": st.one_of(
    st.sampled_from(["send", "correct", "repair_elsewhere"]), junk)},
    optional={"verified": junk, "count": junk, "claim": junk, "x": junk}),
    st.fixed_dictionaries({"status": st.just("stopped")}, optional={"stopped_by": junk, "stopped_at": junk}))
def test_only_declared_repair_actions_can_be_allowed_while_stopped(action, state):
    d = ev(action, state)
    if action["workflow"] == "w" and action["type"] == "send":
        assert d.effect == "stop"
    if d.effect == "allow" and action["workflow"] == "other":
        # the other workflow's own repair action, whose rule allows it unconditionally
        assert action["type"] == "repair_elsewhere"
    elif d.effect == "allow":
        assert action["workflow"] == "w" and action["type"] == "correct" and action.get("verified") is True
        cnt = action.get("count")
        assert type(cnt) in (int, float) and not isinstance(cnt, bool) and cnt <= 10
