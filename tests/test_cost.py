"""`cost` in the language (issue 18's report reads it): `cost 40 USD` / `cost 2.5 hours` on
an action type (beside its `reversible` line) and on a rollback scenario.

The interface the report is built against: `compiled.CCost(amount: float, unit: str)`,
frozen; `CAction.cost` and `CScenario.cost`, None when not declared. A decision shows it
as `reversibility.cost` and per scenario `within_window[].cost` / `after_window[].cost`,
and leaves the keys out when none is declared, so a policy without a cost keeps its
policy hash and its decisions their exact JSON.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from pydantic import BaseModel

import policy_engine
from policy_engine.compiled import CAction, CCost, CScenario
from policy_engine.engine import Engine
from policy_engine.language.fmt import format_text
from policy_engine.language.loader import load_text

ROOT = Path(__file__).resolve().parent.parent
NOW = "2026-11-24T10:00:00Z"

POLICY = '''roles [r]

workflow "w" {
  version "1"
  owners {
    business "b"
    technical "t"
  }

  action a {
    system "s"
    reversible full via "x" within 30d
    ACOST
    allow when `true`
  }

  rollback incident {
    authorize 1 r
    SCOST
  }
}
'''
# The hash of POLICY without any cost, computed before `cost` existed (commit 415b73f):
# adding the feature changed no hash.
HASH_WITHOUT_COST = "sha256:33f6f82be93c638af4d3fbf7b36adb752fcf5ce5db648645c0a8d7d9f8a979b8"


def policy(acost: str = "", scost: str = "") -> str:
    lines = POLICY.replace("ACOST", acost).replace("SCOST", scost).split("\n")
    return "\n".join(ln for ln in lines if ln.strip() or ln == "")


def engine(src: str) -> Engine:
    return Engine.from_load_result(load_text(src, "x.policy"))


def test_the_interface() -> None:
    assert [(f.name, f.type) for f in dataclasses.fields(CCost)] == [("amount", "float"), ("unit", "str")]
    c = CCost(40.0, "USD")
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.amount = 1.0  # type: ignore[misc]
    for cls in (CAction, CScenario):
        last = dataclasses.fields(cls)[-1]
        assert (last.name, last.default) == ("cost", None)


def test_costs_compile() -> None:
    e = engine(policy("cost 40 USD", "cost 2.5 hours"))
    wf = e.compiled.workflows["w"]
    assert wf.actions["a"].cost == CCost(40.0, "USD") and type(wf.actions["a"].cost.amount) is float
    assert wf.scenarios["incident"].cost == CCost(2.5, "hours")
    bare = engine(policy()).compiled.workflows["w"]
    assert bare.actions["a"].cost is None and bare.scenarios["incident"].cost is None


def test_a_decision_shows_the_costs() -> None:
    d = engine(policy("cost 40 USD", "cost 2.5 hours")).evaluate({"workflow": "w", "type": "a"}, now=NOW)
    rv = json.loads(d.model_dump_json())["reversibility"]
    assert rv["cost"] == {"amount": 40.0, "unit": "USD"}
    assert rv["within_window"][0]["cost"] == rv["after_window"][0]["cost"] == {"amount": 2.5, "unit": "hours"}
    assert d.to_json() == BaseModel.model_dump_json(d) == d.model_dump_json()
    assert d.reversibility is not None and d.reversibility.cost is not None and d.reversibility.cost.unit == "USD"


def test_without_cost_the_hash_and_the_output_are_unchanged() -> None:
    src = policy()
    assert load_text(src, "x.policy").policy_set.content_hash == HASH_WITHOUT_COST
    d = engine(src).evaluate({"workflow": "w", "type": "a"}, now=NOW)
    out = d.model_dump_json()
    assert '"cost"' not in out and '"cost"' not in d.to_json()
    h1 = load_text(policy("cost 40 USD"), "x.policy").policy_set.content_hash
    h2 = load_text(policy("cost 41 USD"), "x.policy").policy_set.content_hash
    h3 = load_text(policy("", "cost 40 USD"), "x.policy").policy_set.content_hash
    assert len({HASH_WITHOUT_COST, h1, h2, h3}) == 4


def test_fmt_keeps_the_cost() -> None:
    src = policy("cost   2.5   hours", "cost 250 EUR")
    out = format_text(src, "x.policy")
    assert "    cost 2.5 hours\n" in out and "    cost 250 EUR\n" in out
    assert format_text(out, "x.policy") == out


@pytest.mark.parametrize(("cost", "code", "message", "help_"), [
    ("cost -5 USD", "E108", "a cost cannot be negative, not `-5`", "write `cost 5 USD`"),
    ("cost 1e999 USD", "E108", "cost `1e999` is out of range", "plain number"),
    ("cost 40 dollars", "E118", "unknown cost unit `dollars`", "did you mean `USD`?"),
    ("cost 40 usd", "E118", "unknown cost unit `usd`", "did you mean `USD`?"),
    ("cost 40 hour", "E118", "unknown cost unit `hour`", "did you mean `hours`?"),
    ("cost 40 US", "E118", "unknown cost unit `US`", "ISO 4217"),
    ("cost 40 USD\n    cost 50 USD", "E121", "`cost` is given twice", "keep one"),
])
def test_cost_errors(cost: str, code: str, message: str, help_: str) -> None:
    for src in (policy(cost), policy("", cost)):
        result = load_text(src, "x.policy")
        (d,) = result.errors
        assert (d.code, d.message) == (code, message) and help_ in (d.help or "")
        line = src.splitlines()[d.span.line - 1]
        assert d.span.col > 1 and line.strip().startswith("cost")


def test_the_shipped_refunds_policy_declares_costs() -> None:
    e = policy_engine.load(ROOT / "policies")
    wf = e.compiled.workflows["refunds"]
    assert wf.actions["issue_refund"].cost == CCost(40.0, "USD")
    assert wf.scenarios["incident"].cost == CCost(3.0, "hours")
    assert wf.scenarios["regulatory_order"].cost == CCost(250.0, "USD")
    assert wf.actions["upgrade_tier"].cost is None and wf.scenarios["reviewer_error"].cost is None
