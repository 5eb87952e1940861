"""What an execution report records is bounded too: a receipt beyond the engine's input
limits is refused with nothing recorded, and an action that ran but differs from the one
decided is recorded as why it cannot be kept, not whole (it was kept whole: one report, one
ledger entry of any size)."""

from __future__ import annotations

import pytest
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import RECEIPT, WF, at, policy_path, rt, send  # noqa: F401  (fixtures)

from policy_engine.ledger.canonical import canonical_text
from policy_engine.limits import MAX_INPUT_CHARS
from policy_engine.runtime import RuntimeUsageError


def test_a_receipt_beyond_the_limits_is_refused_and_nothing_is_recorded(rt):
    g = rt.gate(send(), now=at(0))
    assert g.decision.effect == "allow"
    before = rt.ledger.size
    with pytest.raises(RuntimeUsageError, match="receipt is beyond the input limits.*MAX_INPUT_CHARS"):
        rt.executed(g.decision_id, receipt={**RECEIPT, "log": "x" * (MAX_INPUT_CHARS + 1)}, now=at(1))
    assert rt.ledger.size == before
    # the same report within the limits is recorded
    assert rt.executed(g.decision_id, receipt=RECEIPT, now=at(1)).authorized
    assert rt.ledger.size == before + 1


def test_an_action_that_ran_and_differs_is_recorded_bounded(rt):
    g = rt.gate(send(), now=at(0))
    huge = {**send(), "note": "x" * (MAX_INPUT_CHARS + 1)}
    r = rt.executed(g.decision_id, receipt=RECEIPT, action=huge, now=at(1))
    e = rt.ledger.get(r.execution_id)
    assert "unauthorized" in e.body["flags"]
    assert "the action executed is not the action decided" in " ".join(e.body["reasons"])
    assert set(e.body["action"]) == {"unrecordable"} and "MAX_INPUT_CHARS" in e.body["action"]["unrecordable"]
    assert len(canonical_text(e.body)) < 20_000
