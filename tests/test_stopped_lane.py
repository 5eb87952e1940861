"""The stopped-workflow lane (`engine.accel.stopped`) decides exactly as the reference gate.

Once a workflow is stopped, the runtime passes its stopped state with every action, and
each is answered `stop` (unless its type runs while stopped). The lane builds those
decisions from a template per (workflow, type, trigger, `stopped_at`), and gives them a
`DecisionJson` fields set, so their JSON (`to_json`, `evaluate_json`, the ledger's
canonical text) is written from the template's. Here every such decision is compared with
the reference gate's (`accelerate=False`), field for field and byte for byte, on the
benchmark and shipped policies, over every trigger, unknown and malformed triggers,
`stopped_at` values of every kind, and random states and actions.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import policy_engine
from policy_engine.engine import decide as _decide
from policy_engine.engine.accel import stopped as _lane
from policy_engine.ledger.canonical import canonical_text
from policy_engine.models import DecisionJson
from policy_engine.runtime.gatejson import decision_text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from depth import examples  # noqa: E402

from benchmarks.requests import make_mix  # noqa: E402

NOW = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
MIX = make_mix(200)
SETS = {"bench": ROOT / "benchmarks" / "policies", "shipped": ROOT / "policies"}


@pytest.fixture(scope="module", params=sorted(SETS))
def engines(request):
    path = str(SETS[request.param])
    return policy_engine.load(path), policy_engine.load(path, accelerate=False)


def _actions(engine) -> list[dict]:
    """The benchmark mix's actions, plus one action of every declared type of every workflow."""
    out = [dict(a) for a, _, _ in MIX]
    for wname, wf in engine.compiled.workflows.items():
        for tname in wf.actions:
            out.append({"workflow": wname, "type": tname, "id": f"{tname}-1"})
    return out


def _states(engine, wname: str, lane_only: bool = False) -> list[dict]:
    wf = engine.compiled.workflows.get(wname)
    triggers = [s.name for s in wf.stops] if wf is not None else []
    states: list[dict] = []
    for trig in triggers + ["no_such_trigger"]:
        for at in ("2026-03-02T10:00:00Z", "2026-03-02T10:00:00.123456+02:00", None):
            s = {"name": wname, "status": "stopped", "stopped_by": trig}
            if at is not None:
                s["stopped_at"] = at
            states.append(s)
    if not lane_only:  # the rest: most of it the lane leaves to the reference, which must still agree
        states += _ODD
    return states


_ODD = [  # (the first the lane takes: its template carries the error)
    {"status": "stopped", "stopped_by": "x", "stopped_at": "not a time"},
    {"status": "stopped", "stopped_by": None},
    {"status": "stopped"},
    {"status": "stopped", "stopped_by": 7, "stopped_at": "2026-03-02T10:00:00Z"},
    {"status": "stopped", "stopped_by": "x", "stopped_at": NOW},
    {"status": "stopped", "stopped_by": "x", "stopped_at": 12},
    {"status": "stopped", "stopped_by": "x", "extra": float("nan")},
    {"status": "stopped", "stopped_by": "x", "extra": "y" * 2_000_000},
    {"status": "running"},
    {"status": "paused"},
    {"status": ["stopped"]},
]


def _same(fast, ref, action, state, now) -> None:
    d1, d2 = fast.evaluate(action, state, now), ref.evaluate(action, state, now)
    assert d1.model_dump() == d2.model_dump(), (action, state)
    assert d1.to_json() == d2.model_dump_json(), (action, state)
    assert fast.evaluate_json(action, state, now) == d2.model_dump_json()


def test_every_stopped_decision_is_the_reference_gates(engines):
    fast, ref = engines
    n = 0
    for action in _actions(fast):
        for state in _states(fast, action["workflow"]):
            _same(fast, ref, action, state, NOW)
            n += 1
    assert n > 1000


@pytest.mark.parametrize("now", [NOW + timedelta(seconds=1), "2026-03-02T16:30:00+02:00",
                                 datetime(2026, 3, 2, 16, 30, tzinfo=timezone(timedelta(hours=2))), "bad"])
def test_every_kind_of_now(engines, now):
    fast, ref = engines
    for action in _actions(fast)[:60]:
        for state in _states(fast, action["workflow"])[:4]:
            if now != "bad":
                _same(fast, ref, action, state, now)
                continue
            d1, d2 = fast.evaluate(action, state, now), ref.evaluate(action, state, now)  # denied at the clock's time
            assert d1.effect == d2.effect == "deny"
            assert d1.model_dump(exclude={"evaluated_at"}) == d2.model_dump(exclude={"evaluated_at"})


def test_the_clock(engines):
    """now omitted: the lane reads the clock; everything but the time fields is the reference's."""
    fast, ref = engines
    for action in _actions(fast)[:60]:
        for state in _states(fast, action["workflow"])[:4]:
            before = datetime.now(UTC).replace(microsecond=0)
            d1 = fast.evaluate(action, state)
            after = datetime.now(UTC)
            d2 = ref.evaluate(action, state, datetime.fromisoformat(d1.evaluated_at.replace("Z", "+00:00")))
            assert d1.model_dump() == d2.model_dump()
            assert d1.to_json() == d2.model_dump_json()
            assert before <= datetime.fromisoformat(d1.evaluated_at.replace("Z", "+00:00")) <= after


def test_the_lane_answers_from_one_template_per_stop(engines, monkeypatch):
    """A structural check the lane is taken: its decisions carry a template's fields set,
    and `decide.stopped` runs once per (workflow, type, trigger, stopped_at), not per call."""
    fast, ref = engines
    calls = []
    real = _decide.stopped
    monkeypatch.setattr(_lane, "stopped", lambda *a: calls.append(1) or real(*a))
    fast._stopped.templates.clear()
    wname, wf = next(iter(fast.compiled.workflows.items()))
    tname = next(t for t, ca in wf.actions.items() if not ca.runs_while_stopped)
    state = {"status": "stopped", "stopped_by": wf.stops[0].name, "stopped_at": "2026-03-02T10:00:00Z"}
    for i in range(50):
        d = fast.evaluate({"workflow": wname, "type": tname, "id": f"a{i}"}, state, NOW + timedelta(minutes=i))
        assert d.effect == "stop" and d.action_id == f"a{i}"
        assert type(d.__pydantic_fields_set__) is DecisionJson
    assert len(calls) == 1
    # the reference decisions carry a plain set: the JSON goes through pydantic there
    plain = ref.evaluate({"workflow": wname, "type": tname}, state, NOW)
    assert type(plain.__pydantic_fields_set__) is not DecisionJson


def test_an_action_that_runs_while_stopped_is_decided_by_its_rules():
    fast = policy_engine.load(str(ROOT / "policies"))
    ref = policy_engine.load(str(ROOT / "policies"), accelerate=False)
    found = 0
    for wname, wf in fast.compiled.workflows.items():
        for tname, ca in wf.actions.items():
            if ca.runs_while_stopped and wf.stops:
                state = {"status": "stopped", "stopped_by": wf.stops[0].name, "stopped_at": "2026-03-02T10:00:00Z"}
                action = {"workflow": wname, "type": tname, "id": "r1"}
                _same(fast, ref, action, state, NOW)
                assert fast.evaluate(action, state, NOW).deciding.kind != "stopped"
                found += 1
    assert found >= 2


def test_the_ledgers_canonical_text_is_written_from_the_template(engines):
    """The runtime's gate records the decision's canonical text: for a stopped decision it
    now comes from the template (`gatejson.decision_text`), and equals the reference encoding."""
    fast, ref = engines
    for action in _actions(fast)[:80]:
        for state in _states(fast, action["workflow"], lane_only=True) + [_ODD[0]]:
            d = fast.evaluate(action, state, NOW)
            text = decision_text(d)
            assert text is not None
            assert text == canonical_text(ref.evaluate(action, state, NOW).model_dump(mode="json"))


def test_a_changed_template_value_is_not_written_from_the_template(engines):
    fast, ref = engines
    wname, wf = next(iter(fast.compiled.workflows.items()))
    tname = next(t for t, ca in wf.actions.items() if not ca.runs_while_stopped)
    state = {"status": "stopped", "stopped_by": wf.stops[0].name}
    d = fast.evaluate({"workflow": wname, "type": tname, "id": "x"}, state, NOW)
    changed = d.model_copy(update={"reason": "something else"})
    assert changed.to_json() == BaseModel.model_dump_json(changed) == changed.model_dump_json()
    assert '"something else"' in changed.to_json()


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                     max_leaves=8)


@settings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pick=st.integers(0, 10_000), trig=st.integers(0, 10), extra=st.dictionaries(st.text(max_size=8), _json,
                                                                                     max_size=3),
       at=st.one_of(st.none(), st.text(max_size=30), st.just("2026-03-02T10:00:00Z")),
       aid=st.one_of(st.none(), st.text(max_size=10), st.integers()), drop=st.booleans())
def test_random_states_and_actions(engines, pick, trig, extra, at, aid, drop):
    fast, ref = engines
    actions = _actions(fast)
    action = dict(actions[pick % len(actions)])
    action["id"] = aid
    action.update({k: v for k, v in extra.items() if k not in ("workflow", "type", "id")})
    wf = fast.compiled.workflows.get(action["workflow"])
    names = [s.name for s in wf.stops] if wf is not None else []
    state = {"status": "stopped", "stopped_by": names[trig % len(names)] if names and trig < 8 else f"t{trig}"}
    if not drop:
        state["stopped_at"] = at
    state.update({k: v for k, v in extra.items() if k not in ("status", "stopped_by", "stopped_at")})
    _same(fast, ref, action, state, NOW)
