"""Conditional duties: `notify [...] when `cond`` and `compensate [...] when `cond`` in a
rollback scenario, evaluated over `original` and `request` when the plan is made. The
plan lists each duty, whether it applies and why; a condition that errors makes its duty
apply (fail closed: a duty is never silently dropped)."""

from __future__ import annotations

from pathlib import Path

import pytest

import policy_engine
from policy_engine.engine import plan_hash
from policy_engine.language.loader import load_text

NOW = "2026-11-24T10:00:00Z"

POLICY = '''
roles [reviewer, security]

workflow "access" {
  version "1.0.0"
  owners {
    business "B"
    technical "T"
  }

  action grant_access {
    system "iam"
    reversible full via "iam.revoke" within 30d
    require_approval by 1 reviewer when `true`
  }

  action rotate_credential {
    system "iam"
    irreversible
    require_approval by 1 security when `true`
  }

  rollback incident {
    authorize 1 security
    notify [owner]
    notify [compliance, security] when `original.sensitive`
    compensate [rotate_credential] when `original.exposed`
    compensate ["tell the owner"]
    after window {
      authorize 1 reviewer
      notify [legal] when `request.reason == "regulator"`
    }
  }
}
'''


@pytest.fixture(scope="module", params=[False, True], ids=["reference", "accelerated"])
def engine(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("duties") / "access.policy"
    path.write_text(POLICY, encoding="utf-8")
    return policy_engine.load(path, accelerate=request.param)


def plan(engine, original: dict, executed_at: str = "2026-11-24T09:00:00Z", reason: str = "breach"):
    return engine.classify_rollback({
        "workflow": "access", "scenario": "incident", "requested_by": "carol", "reason": reason,
        "original": {"id": "g-1", "type": "grant_access", "executed_at": executed_at, **original}}, now=NOW)


def duties(p) -> dict:
    return {(d.kind, d.name, d.source): (d.applies, d.reason) for d in p.duties}


def test_conditions_hold(engine) -> None:
    p = plan(engine, {"sensitive": True, "exposed": True})
    assert p.notify == ("compliance", "owner", "security")
    assert [c.name for c in p.compensations] == ["rotate_credential", "tell the owner"]
    d = duties(p)
    assert d[("notify", "compliance", "standard")] == (True, "its condition holds")
    assert d[("notify", "owner", "standard")] == (True, "listed without a condition")
    assert d[("compensate", "rotate_credential", "standard")] == (True, "its condition holds")


def test_conditions_false_drop_the_duty_and_say_why(engine) -> None:
    p = plan(engine, {"sensitive": False, "exposed": False})
    assert p.notify == ("owner",)
    assert [c.name for c in p.compensations] == ["tell the owner"]
    d = duties(p)
    assert d[("notify", "security", "standard")] == (False, "its condition is false")
    assert d[("compensate", "rotate_credential", "standard")] == (False, "its condition is false")
    assert p.authorizable


def test_a_condition_that_errors_makes_the_duty_apply(engine) -> None:
    p = plan(engine, {})  # neither field: both conditions error
    assert p.notify == ("compliance", "owner", "security")
    assert "rotate_credential" in [c.name for c in p.compensations]
    applies, why = duties(p)[("notify", "compliance", "standard")]
    assert applies and why.startswith("its condition errored (") and why.endswith("so it applies (fail closed)")
    p = plan(engine, {"sensitive": "yes", "exposed": 1})  # not bools: errors too
    assert p.notify == ("compliance", "owner", "security")


def test_after_window_duties_only_after_the_window(engine) -> None:
    within = plan(engine, {"sensitive": False, "exposed": False}, reason="regulator")
    assert all(src == "standard" for _, _, src in duties(within))
    after = plan(engine, {"sensitive": False, "exposed": False}, executed_at="2026-09-01T00:00:00Z",
                 reason="regulator")
    assert after.window == "escalated"
    assert duties(after)[("notify", "legal", "escalation")] == (True, "its condition holds")
    assert "legal" in after.notify
    other = plan(engine, {"sensitive": False, "exposed": False}, executed_at="2026-09-01T00:00:00Z")
    assert duties(other)[("notify", "legal", "escalation")][0] is False and "legal" not in other.notify


def test_the_plan_hash_covers_the_duties(engine) -> None:
    a = plan(engine, {"sensitive": True, "exposed": False})
    b = plan(engine, {"sensitive": False, "exposed": False})
    assert a.plan_hash != b.plan_hash and a.plan_hash == plan_hash(a)


def errors(text: str) -> list[str]:
    return [d.code for d in load_text(text, "x").diagnostics if d.severity == "error"]


def test_conditions_are_checked() -> None:
    assert errors(POLICY) == []
    assert errors(POLICY.replace("`original.exposed`", "`action.exposed`")) == ["E113"]
    assert errors(POLICY.replace("`original.exposed`", "`original.exposed &&`")) == ["E101"]
    assert errors(POLICY.replace("`original.exposed`", "`policy.nope`")) == ["E114"]


def test_explain_shows_conditional_duties(engine) -> None:
    from policy_engine.explain import explain_plan

    text = explain_plan(plan(engine, {"sensitive": False}))
    assert "conditional duties:" in text
    assert "[ ] notify compliance: its condition is false" in text
    assert "[x] compensate rotate_credential: its condition errored (" in text


def test_no_conditional_duty_no_duties_and_same_hash_shape() -> None:
    """A scenario without conditions lists no `duties` (and its plan hash is computed as
    before the field existed)."""
    root = Path(__file__).resolve().parent.parent
    engine = policy_engine.load(root / "policies")
    p = engine.classify_rollback({"workflow": "refunds", "scenario": "customer_request", "requested_by": "c",
                                  "original": {"id": "r", "type": "issue_refund",
                                               "executed_at": "2026-11-24T09:00:00Z"}}, now=NOW)
    assert p.duties == ()
    data = p.model_dump(mode="json")
    data.pop("duties")
    assert plan_hash(data) == p.plan_hash
