"""Every readable `now` takes the engine's fast lanes: a `datetime` in UTC, and also an
RFC 3339 string, a naive time (UTC), another zone's time, converted as the reference gate
converts them (`util.utc_now`). Those cost five times a UTC datetime's on the reference
path. Every decision must equal the reference's; an unreadable `now` still gets the
reference's fail-closed decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from engine_support import warm_bench_engines
from hypothesis import given, settings
from hypothesis import strategies as st

import policy_engine
from policy_engine.engine.accel import lanes
from policy_engine.engine.util import utc_now

T0 = datetime(2026, 3, 2, 14, 30, 0, 250000, tzinfo=UTC)


class DT(datetime):
    pass


def _kinds(t: datetime) -> list:
    out = [t, t.replace(tzinfo=None), t.astimezone(timezone(timedelta(hours=2))), t.isoformat(),
           t.isoformat().replace("+00:00", "Z"), t.astimezone(timezone(timedelta(hours=-3, minutes=-30))).isoformat(),
           t.replace(tzinfo=timezone(timedelta(0)))]
    try:
        from zoneinfo import ZoneInfo

        out.append(t.astimezone(ZoneInfo("Europe/Berlin")))
    except Exception:  # noqa: BLE001 - no tzdata here: the others suffice
        pass
    return out


@pytest.fixture(scope="module")
def engines():
    return warm_bench_engines()


def test_every_readable_now_decides_like_the_reference(engines):
    fast, slow, mix = engines
    for a, s, _ in mix[:80]:
        for now in _kinds(T0):
            ref = slow.evaluate(a, s, now).model_dump_json()
            assert fast.evaluate(a, s, now).model_dump_json() == ref, (a["type"], now)
            assert fast.evaluate(a, s, now).to_json() == ref
            assert fast.evaluate_json(a, s, now) == ref
    stopped = {"status": "stopped", "stopped_by": "refund_spike", "stopped_at": "2026-03-02T10:00:00Z"}
    undeclared = {"workflow": "refunds", "type": "nope", "id": "u1", "amount": 1.0}
    for a, s in ((mix[0][0], stopped), (undeclared, None)):
        for now in _kinds(T0):
            assert fast.evaluate(a, s, now).model_dump_json() == slow.evaluate(a, s, now).model_dump_json()


@pytest.mark.parametrize("now", ["yesterday", "2026-13-01T00:00:00Z", 17, DT(2026, 3, 2, tzinfo=UTC), b"x"])
def test_an_unreadable_now_is_the_references_answer(engines, now):
    fast, slow, mix = engines
    a = mix[0][0]
    d = fast.evaluate(a, None, now)
    ref = slow.evaluate(a, None, now)
    assert d.model_dump(exclude={"evaluated_at"}) == ref.model_dump(exclude={"evaluated_at"})


def test_a_string_now_takes_the_quick_path(engines, monkeypatch):
    fast, _, mix = engines
    calls = []
    real = lanes.Accelerator.evaluate
    monkeypatch.setattr(lanes.Accelerator, "evaluate", lambda self, *x: calls.append(x) or real(self, *x))
    done = 0
    for a, s, _ in mix:
        if s is None:
            fast.evaluate(a, s, "2026-03-02T14:30:00.25Z")
            fast.evaluate(a, s, T0.astimezone(timezone(timedelta(hours=2))))
            done += 1
    assert done > 150 and len(calls) < done // 10  # (the rest: the mix's inputs the lanes turn away)


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=45)), timezone(timedelta(hours=-12)), None])))
@settings(max_examples=300, deadline=None)
def test_utc_now_is_the_references_reading(t):
    for now in (t, t.isoformat()):
        got = utc_now(now)
        want, problem = policy_engine.engine.util.now_of(now)
        if problem:  # unreadable (a time the RFC 3339 grammar does not take): the reference says why
            assert got is None, (now, problem)
        else:
            assert got == want and type(got) is datetime and got.tzinfo is UTC
