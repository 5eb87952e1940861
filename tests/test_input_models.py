"""The package's input models (`Action`, `WorkflowState`) and other Mappings are read as
plain dicts, the reference gate's first step, and then take the engine's fast lanes like
a dict: the same decision as the reference's, at about twice a dict's cost (the model's
own dump) where it was six times."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import IntEnum
from types import MappingProxyType

import pytest
from engine_support import warm_bench_engines
from hypothesis import given, settings
from hypothesis import strategies as st

from policy_engine.engine.accel import lanes
from policy_engine.engine.util import as_dict, plain_action
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


# --------------------------------------------------------------------------- util.plain_action
# An `Action` or a `WorkflowState` of scalars alone is read from the instance (`util.plain_action`);
# the reference gate reads it through the same `as_dict`, so the differential tests above
# cannot see a difference from `model_dump`: this compares the two directly, type for type.

def _same(x, y) -> bool:
    """Equal values of identical types at every level, keys in the same order (NaN equal)."""
    if type(x) is not type(y):
        return False
    if type(x) is dict:
        return list(x) == list(y) and all(_same(x[k], y[k]) for k in x)
    if type(x) in (list, tuple):
        return len(x) == len(y) and all(map(_same, x, y))
    if type(x) is float:
        return x == y or (x != x and y != y)
    return x == y


class _Str(str):
    pass


class _Level(IntEnum):
    LOW = 1


_scalar = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
_flat = _scalar
_containers = st.one_of(st.lists(_scalar, max_size=4), st.dictionaries(st.text(max_size=4), _scalar, max_size=4))
_odd = st.one_of(_containers, st.tuples(_scalar), st.frozensets(st.integers(), max_size=3), st.binary(max_size=4),
                 st.just(T0), st.builds(_Str, st.text(max_size=4)), st.just(_Level.LOW),
                 st.builds(lambda s: Action(workflow="w", type="t", x=s), _scalar),
                 st.lists(st.lists(_scalar, max_size=2), max_size=2),
                 st.dictionaries(st.integers(), _scalar, max_size=2),
                 st.dictionaries(st.text(max_size=3), st.lists(_scalar, max_size=2), max_size=2))
_name = st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=6).filter(
    lambda k: k not in ("workflow", "type", "id"))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_name, _flat, max_size=8), st.one_of(st.none(), st.text(max_size=5)),
       st.lists(st.tuples(_name, _odd), max_size=2))
def test_plain_action_is_the_models_dump(extras, aid, odd):
    flat = Action(workflow="refunds", type="issue_refund", id=aid, **extras)
    got = plain_action(flat)
    want = flat.model_dump(mode="python", by_alias=True)
    assert got is not None and _same(got, want), (got, want)  # scalars alone: always read directly
    mixed = Action(workflow="refunds", type="issue_refund", id=aid, **{**extras, **dict(odd)})
    got = plain_action(mixed)
    want = mixed.model_dump(mode="python", by_alias=True)
    assert got is None or _same(got, want), (got, want)
    assert (got is None) == bool(odd)  # anything else: the model's own dump
    assert _same(as_dict(mixed), want)


def test_plain_action_leaves_subclasses_and_other_models_to_their_dump():
    class Mine(Action):
        def model_dump(self, *a, **k):
            return {"workflow": "w", "type": "t", "id": None, "from": "dump"}

    m = Mine(workflow="refunds", type="issue_refund")
    assert as_dict(m) == {"workflow": "w", "type": "t", "id": None, "from": "dump"}
    state = WorkflowState(status="running")
    assert as_dict(state) == state.model_dump(mode="python", by_alias=True)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["running", "stopped"]), st.one_of(st.none(), st.text(max_size=5)),
       st.one_of(st.none(), st.just("2026-03-02T10:00:00Z"), st.just(T0)),
       st.dictionaries(_name.filter(lambda k: k not in ("name", "status", "stopped_by", "stopped_at")), _flat,
                       max_size=4))
def test_plain_action_reads_a_workflow_state_as_its_dump(status, by, at, extras):
    state = WorkflowState(status=status, stopped_by=by, stopped_at=at, **extras)
    got = plain_action(state)
    want = state.model_dump(mode="python", by_alias=True)
    if at is T0:  # a datetime: the model's own dump
        assert got is None
    else:
        assert got is not None and _same(got, want), (got, want)
    assert _same(as_dict(state), want)
