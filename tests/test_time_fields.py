"""A Python caller's times and durations on the fast lane: an action type whose conditions
read a declared `timestamp` or `duration` field (`due: timestamp`, `deny when action.due <
now`) had every call turned away by its fused function (a time is no JSON value, so the
input check's chain of plain types fell back), and the reference gate decided it: four to
six times the cost. A field seen holding a `datetime` or a `timedelta` now gets that shape
(`shapes._TIMES`): one exact type test, a leaf for the input limits as the exact walk has
it, the conditions' generic code on the value; and no frozen copy of such an action (its
digest by the generic freeze). Every decision must still be the reference's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from engine_support import engine_from_texts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy_engine.engine.accel import lanes
from policy_engine.engine.accel import shapes as sh

T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)

POLICY = """roles [reviewer]
workflow "w" {
  version "1"
  owners { business "b" technical "t" }
  default deny
  action book {
    reversible full via "b.undo" within 1h
    fields {
      due: timestamp
      hold: duration
      amount: double
      tags: list<string>
      note?: string
    }
    deny late when `action.due < now`
    require_approval long by 1 reviewer when `action.hold > duration("48h")`
    require_approval soon by 1 reviewer when `action.due - now < duration("1h")`
    allow fine when `action.amount < 100.0 && !("vip" in action.tags)`
    require_approval vip by 1 reviewer when `"vip" in action.tags`
  }
  action meet {
    receipt [policy_rule]
    require_approval early by 1 reviewer when `action.at < now && "x" in action.tags`
    allow later when `action.at >= now`
  }
  action log {
    receipt [policy_rule]
    allow any when `action.at > timestamp("2020-01-01T00:00:00Z") || action.n > 3`
  }
}
"""


class Later(datetime):
    pass


class Span(timedelta):
    pass


def _engines():
    return engine_from_texts({"t.policy": POLICY}), engine_from_texts({"t.policy": POLICY}, accelerate=False)


def _book(**kw):
    return {"workflow": "w", "type": "book", "id": "b1", "due": T0 + timedelta(days=2), "hold": timedelta(hours=3),
            "amount": 20.0, "tags": ["a"], **kw}


_times = st.one_of(
    st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 6, 1)).map(lambda t: t.replace(tzinfo=UTC)),
    st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 6, 1)).map(
        lambda t: t.replace(tzinfo=timezone(timedelta(hours=-5)))),
    st.just(datetime(2026, 3, 2, 14, 30)),  # naive: an input error for a declared timestamp
    st.just(Later(2026, 3, 5, tzinfo=UTC)),  # a subclass: the exact walk refuses it
    st.just("2026-03-05T00:00:00Z"), st.none())
_spans = st.one_of(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=5)),
                   st.just(Span(hours=100)), st.just(-timedelta(days=1)), st.just(3600), st.none())


@given(st.lists(st.tuples(_times, _spans, st.sampled_from([20.0, 500.0]), st.sampled_from([[], ["vip"], ["a", "b"]])),
                min_size=1, max_size=12))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_decision_is_the_reference_gates(calls):
    fast, ref = _engines()
    for due, hold, amount, tags in calls * 3:  # (the third sighting builds the fused function)
        a = _book(due=due, hold=hold, amount=amount, tags=tags)
        for now in (T0, T0 + timedelta(days=1)):
            want = ref.evaluate(a, None, now)
            got = fast.evaluate(a, None, now)
            assert got.model_dump_json() == want.model_dump_json(), (a, now)
            assert fast.evaluate_json(a, None, now) == want.model_dump_json()
            assert got.action_digest == want.action_digest


def test_a_type_reading_times_takes_its_fused_function(monkeypatch):
    fast, ref = _engines()
    good = [_book(), _book(due=T0 - timedelta(hours=1)), _book(hold=timedelta(days=3)),
            _book(due=(T0 + timedelta(minutes=30)).astimezone(timezone(timedelta(hours=2)))),
            _book(amount=500.0), _book(tags=["vip"])]
    for a in good * 3:
        fast.evaluate(a, None, T0)
    fz = fast.accelerator.gate("w", "book")
    assert fz.fn is not None and "_DT" in fz.source and "_TD" in fz.source
    assert fz.shapes["due"] == frozenset({datetime}) and fz.shapes["hold"] == frozenset({timedelta})
    assert sh.frozen_copy(fz.reads, (("workflow", "w"), ("type", "book")), fz.shapes, fz.extra) is None
    calls = []
    real = lanes.Accelerator.evaluate
    monkeypatch.setattr(lanes.Accelerator, "evaluate", lambda self, *x: calls.append(x) or real(self, *x))
    effects = [fast.evaluate(a, None, T0).effect for a in good]
    assert calls == []  # every one decided by the fused function on the quick path
    assert effects == ["allow", "deny", "require_approval", "require_approval", "deny", "require_approval"]
    for a in good:
        assert fast.evaluate(a, None, T0).model_dump_json() == ref.evaluate(a, None, T0).model_dump_json()
    # the values the exact walk or the declaration refuses: the reference decides, and says why
    odd_ones = ((_book(due=datetime(2026, 3, 5)), "without a time zone"),
                (_book(due=Later(2026, 3, 5, tzinfo=UTC)), "Later"), (_book(hold=Span(hours=1)), "Span"),
                (_book(due="2026-03-05T00:00:00Z"), "string"))
    for odd, msg in odd_ones:
        d = fast.evaluate(odd, None, T0)
        assert d.effect == "deny" and msg in d.errors[0].message, d.errors
        assert d.model_dump_json() == ref.evaluate(odd, None, T0).model_dump_json()


def test_an_undeclared_field_holding_times_or_other_values():
    fast, ref = _engines()
    seq = [{"workflow": "w", "type": "log", "id": "l", "at": v, "n": n}
           for v, n in ((T0, 1), (T0, 5), (datetime(2019, 1, 1, tzinfo=UTC), 1), (T0, 1), ("x", 1), (None, 9),
                        (datetime(2019, 1, 1), 1), (timedelta(1), 1), (T0, 1))]
    for a in seq * 3:
        assert fast.evaluate(a, None, T0).model_dump_json() == ref.evaluate(a, None, T0).model_dump_json(), a
    assert fast.accelerator.gate("w", "log").fn is not None


def test_an_action_holding_a_time_is_not_frozen_as_plain_data():
    """orjson writes a datetime (the canonical JSON refuses it: such an action has no
    digest), so a frozen copy resolved by `digests.exact_canonical` would give one: the
    fused function freezes such an action by the generic freeze."""
    fast, ref = _engines()
    a = {"workflow": "w", "type": "meet", "id": "m", "at": T0 - timedelta(hours=1), "tags": ["x", "y"]}
    for _ in range(4):
        d = fast.evaluate(a, None, T0)
        want = ref.evaluate(a, None, T0)
        assert d.effect == "require_approval" and d.action_digest is None and want.action_digest is None
        assert d.model_dump_json() == want.model_dump_json() and fast.evaluate_json(a, None, T0) == d.to_json()
    assert fast.accelerator.gate("w", "meet").fn is not None


@pytest.mark.parametrize("value", [T0, timedelta(minutes=5)])
def test_times_are_leaves_for_the_input_limits(value):
    fast, ref = _engines()
    big = {"workflow": "w", "type": "log", "id": "l", "at": value, "n": 1, "pad": "x" * 100}
    for _ in range(4):
        assert fast.evaluate(big, None, T0).model_dump_json() == ref.evaluate(big, None, T0).model_dump_json()
