"""Session 27 audit of `stopline test` expectations: "lists compare as sets (order ignored, no
missing and no extra elements; a dict element matches an actual element that has at least
its keys)" (docs/testing.md). The pairing was first fit: a less specific element written
first took the actual element a later, more specific one needed, and a case whose every
element has its own match failed, its diff showing the very elements it asked for."""

from __future__ import annotations

from click.testing import CliRunner

from policy_engine.cli import main
from policy_engine.testing.expect import compare

POLICY = """\
roles [manager]

workflow "w" {
  version "1"
  owners {
    business "b"
    technical "t"
  }
  default require_approval

  action refund {
    system "s"
    irreversible
    require_approval a_big by 1 manager when `action.amount > 100.0`
    require_approval b_odd by 1 manager when `action.amount > 10.0`
  }
}
"""

SUITE = """\
suite: sets
now: "2026-11-24T10:00:00Z"
cases:
  - name: both rules ask for a manager
    gate: {action: {workflow: w, type: refund, amount: 500.0}}
    expect:
      approvers: [{count: 1}, {count: 1, rule: a_big}]
"""


def test_a_general_element_before_a_specific_one_still_pairs(tmp_path):
    (tmp_path / "p.policy").write_text(POLICY, encoding="utf-8")
    (tmp_path / "p.policy-test.yaml").write_text(SUITE, encoding="utf-8")
    res = CliRunner().invoke(main, ["test", "--no-color", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "1 passed, 0 failed" in res.output


def test_pairing_is_exhaustive_and_still_strict():
    actual = [{"id": "a", "depth": 1}, {"id": "a", "depth": 0}, {"id": "b", "depth": 2}]
    assert compare([{"id": "a"}, {"id": "a", "depth": 1}, {"id": "b"}], actual) == []
    assert compare([{"id": "b"}, {"id": "a"}, {"id": "a", "depth": 0}], actual) == []
    # every element needs its own: two specific ones cannot share one actual element
    assert compare([{"id": "a", "depth": 1}, {"id": "a", "depth": 1}, {"id": "b"}], actual)
    # no missing, no extra
    assert compare([{"id": "a"}, {"id": "a"}], actual)
    assert compare([{"id": "a"}, {"id": "a"}, {"id": "b"}, {"id": "b"}], actual)
    assert compare([{"id": "a"}, {"id": "a"}, {"id": "c"}], actual)
    # scalars as before
    assert compare(["x", "y"], ["y", "x"]) == []
    assert compare(["x", "x"], ["x", "y"])
