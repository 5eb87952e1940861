"""The package's input models (`Action`, `WorkflowState`) and other Mappings are read as
plain dicts, the reference gate's first step, and then take the engine's fast lanes like
a dict: the same decision as the reference's, at about twice a dict's cost (the model's
own dump) where it was six times."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType

import pytest
from engine_support import warm_bench_engines

from policy_engine.engine.accel import lanes
from policy_engine.models import Action, WorkflowState

T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)


class Frozen(Mapping):
    def __init__(self, d):
        self.d = d

    def __getitem__(self, k):
        return self.d[k]

    def __iter__(self):
        return iter(self.d)

    def __len__(self):
        return len(self.d)


@pytest.fixture(scope="module")
def engines():
    return warm_bench_engines()


def _forms(a: dict) -> list:
    return [Action(**a), MappingProxyType(a), Frozen(a)]


def test_models_and_mappings_decide_like_the_reference(engines):
    fast, slow, mix = engines
    stopped = {"status": "stopped", "stopped_by": "refund_spike", "stopped_at": "2026-03-02T10:00:00Z"}
    for a, _, n in mix:
        for act in _forms(a):
            for state in (None, WorkflowState(status="running"), WorkflowState(**stopped), {"status": "running"},
                          MappingProxyType({"status": "running"})):
                ref = slow.evaluate(act, state, n).model_dump_json()
                assert fast.evaluate(act, state, n).model_dump_json() == ref, (a["type"], type(act), state)
                assert fast.evaluate_json(act, state, n) == ref


def test_a_model_takes_the_quick_path(engines, monkeypatch):
    fast, _, mix = engines
    calls = []
    real = lanes.Accelerator.evaluate
    monkeypatch.setattr(lanes.Accelerator, "evaluate", lambda self, *x: calls.append(x) or real(self, *x))
    done = 0
    for a, s, n in mix:
        if s is None:
            fast.evaluate(Action(**a), WorkflowState(status="running"), n)
            done += 1
    assert done > 150 and len(calls) < done // 10


def test_a_model_whose_dump_raises_fails_closed_as_the_reference_does(engines):
    fast, slow, _ = engines

    class Bad(Action):
        def model_dump(self, *a, **k):
            raise RuntimeError("no")

    bad = Bad(workflow="refunds", type="issue_refund", id="x")
    d, ref = fast.evaluate(bad, None, T0), slow.evaluate(bad, None, T0)
    assert d.effect == "deny" and d.model_dump_json() == ref.model_dump_json()
    assert fast.evaluate([1], None, T0).model_dump_json() == slow.evaluate([1], None, T0).model_dump_json()
