"""The per-set condition limit (`limits.MAX_CONDITIONS_PER_SET`, refused with E005 before
anything compiles) counts every condition, the duties' ones included: `notify [...] when`
and a conditional `compensate` (one condition per statement, however many duties it
lists), in a scenario and in its `after window` block."""

from __future__ import annotations

import pytest

from policy_engine.language import loader
from policy_engine.language.loader import count_conditions, load_text

POLICY = '''roles [legal]

workflow "w" {
  version "1"
  owners {
    business "b"
    technical "t"
  }

  action a {
    system "s"
    reversible full via "x" within 30d
    require_approval by 1 legal when `action.n > 1`
    allow when `action.n <= 1`
  }

  action fix {
    system "s"
    irreversible
    require_approval by 1 legal when `true`
  }

  rollback incident {
    authorize 1 legal
    notify [security, compliance] when `original.sensitive`
    compensate [fix, "call them"] when `original.exposed`
    after window {
      authorize 1 legal
      notify [regulator] when `original.reportable`
    }
  }
}
'''
# 3 gate rules + 3 duty statements with a condition (5 duties)
CONDITIONS = 6


def test_duty_conditions_are_counted_once_per_statement() -> None:
    result = load_text(POLICY, "x.policy")
    assert result.errors == []
    assert count_conditions(result.policy_set.files) == CONDITIONS
    unconditional = POLICY.replace(" when `original.sensitive`", "").replace(" when `original.exposed`", "")
    assert count_conditions(load_text(unconditional, "x.policy").policy_set.files) == CONDITIONS - 2


def test_the_limit_refuses_a_set_whose_duty_conditions_pass_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "MAX_CONDITIONS_PER_SET", CONDITIONS)
    assert load_text(POLICY, "x.policy").errors == []
    monkeypatch.setattr(loader, "MAX_CONDITIONS_PER_SET", CONDITIONS - 1)
    result = load_text(POLICY, "x.policy")
    (d,) = result.errors
    assert d.code == "E005" and f"the policy set has {CONDITIONS} conditions; the limit is {CONDITIONS - 1}" \
        in d.message
    assert result.policy_set is None and result.compiled == {}  # refused before compiling
