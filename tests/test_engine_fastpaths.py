"""The engine's cheap paths give exactly what the exact ones give (check_size, fmt_ts)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from policy_engine import timestamps as T
from policy_engine.engine import inputs as E


class S(str):
    pass


class F(float):
    pass


def _deep(n: int, leaf=0):
    v = leaf
    for _ in range(n):
        v = {"a": v}
    return v


TRICKY = [
    {}, {"a": 1}, {"a": "\ud800"}, {"\udfff": 1}, {S("k\ud800"): 1}, {"a": S("\ud800")}, {1: "x"}, {None: 1},
    {"a": float("nan")}, {"a": float("inf")}, {"a": -float("inf")}, {"a": F("nan")}, {"a": F(1.5)}, {"a": 1e308},
    {"a": [1e308, 1e308]}, {"a": (1, "\ud800")}, {"a": (float("nan"),)}, {"a": _deep(30)}, {"a": _deep(31)},
    {"a": _deep(40)}, {"a": _deep(199)}, {"a": _deep(200)}, {"a": _deep(250)}, {"a": list(range(100_001))},
    {"a": list(range(99_990))}, {"a": "x" * 4_000_000}, {"a": "x" * 4_000_001}, {"x" * 3_999_999: "ab"},
    {"a": "é" * 10}, {"a": "😀"}, {"a": [{"b": [{"c": "\ud83d"}]}]}, {"a": {1, 2}}, {"a": b"\xff"},
    {"a": True, "b": None, "c": -0.0, "d": [[], {}]}, {"a": _deep(205, float("nan"))},
]


def test_check_size_quick_path_agrees_with_the_exact_walk():
    for v in TRICKY:
        assert E.check_size(v) == E._check_size(v), repr(v)[:80]
    rng = random.Random(5)
    leaves = [0, 1.5, "a", "\ud800", "é", None, True, float("nan"), F(2.0), S("s"), (1,), b"x", 10**30]
    for _ in range(3000):
        def gen(d):
            r = rng.random()
            if d > 4 or r < 0.5:
                return rng.choice(leaves)
            if r < 0.75:
                return [gen(d + 1) for _ in range(rng.randint(0, 4))]
            return {rng.choice(["k", "é", "\udc00", S("s"), 1]): gen(d + 1) for _ in range(rng.randint(0, 4))}
        v = {"type": "x", "v": gen(0)}
        assert E.check_size(v) == E._check_size(v), repr(v)


def test_fmt_ts_matches_the_percent_format():
    rng = random.Random(3)
    base = datetime(1, 1, 1, tzinfo=UTC)
    samples = [datetime(999, 12, 31, 23, 59, 59, tzinfo=UTC), datetime(1000, 1, 1, tzinfo=UTC),
               datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
               datetime(2026, 3, 2, 10, 0, tzinfo=timezone(timedelta(hours=2)))]
    samples += [
        base
        + timedelta(
            seconds=rng.randrange(0, 315_000_000_000),
            microseconds=rng.choice([0, 0, 1, 999999, rng.randrange(1_000_000)]),
        )
        for _ in range(5000)
    ]
    for t in samples:
        assert T.fmt_ts(t) == T.format_rfc3339(t.astimezone(UTC)), t


def test_a_naive_time_is_utc_in_every_rendering_whatever_the_hosts_zone(monkeypatch):
    """`parse_ts` reads a naive datetime as UTC; the renderings must too, not as the host's
    local time (`datetime.astimezone` does that): on a host outside UTC they disagreed."""
    import time

    if not hasattr(time, "tzset"):  # pragma: no cover - not on this platform
        pytest.skip("time.tzset")
    monkeypatch.setenv("TZ", "America/St_Johns")  # UTC-3:30 (a half hour: no accidental match)
    time.tzset()
    try:
        naive = datetime(2026, 3, 2, 14, 30, 0, 250000)
        aware = naive.replace(tzinfo=UTC)
        assert T.parse_ts(naive) == aware
        assert T.fmt_ts(naive) == T.fmt_ts(aware) == T.format_rfc3339(naive) == "2026-03-02T14:30:00.250000Z"
        assert T.fmt_ts_pair(naive, timedelta(hours=1)) == T.fmt_ts_pair(aware, timedelta(hours=1))
        assert T.fmt_ts_pair(naive, timedelta(milliseconds=1)) == T.fmt_ts_pair(aware, timedelta(milliseconds=1))
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_plain_flat_never_passes_what_the_exact_check_refuses():
    """`plain_flat` (a lane's cheap check of a small flat object) True proves the exact
    check passes; False only sends the input to the exact check."""
    keys = ("id", "type", "workflow")
    for v in TRICKY:
        for ks in (None, keys, ("a",)):
            if E.plain_flat(v, ks):
                assert E.check_fields(v, ks) is None, (repr(v)[:80], ks)
    rng = random.Random(7)
    leaves = [0, 1.5, "a", "\ud800", "é", None, True, float("nan"), float("inf"), F(2.0), S("s"), (1,), b"x",
              10**30, [], {}, "x" * 2_000_000]
    names = ["id", "type", "workflow", "status", "\ud800", S("id"), 1, "k" * 10]
    seen = 0
    for _ in range(5000):
        v = {rng.choice(names): rng.choice(leaves) for _ in range(rng.randint(0, 4))}
        for ks in (None, keys):
            if E.plain_flat(v, ks):
                seen += 1
                assert E.check_fields(v, ks) is None, (repr(v)[:80], ks)
    assert seen > 1000  # (it passes the plain ones)


def test_plain_flat_passes_the_usual_inputs_of_a_stopped_workflow():
    state = {"status": "stopped", "stopped_by": "refund_spike", "stopped_at": "2026-03-02T10:00:00Z", "n": 1,
             "x": None, "f": 0.5, "ok": True, "é": "ü"}
    assert E.plain_flat(state)
    assert E.plain_flat({"workflow": "w", "type": "t", "id": "a1", "amount": [1]}, ("id", "type", "workflow"))
    assert E.plain_flat({"workflow": "w", "type": "t"}, ("id", "type", "workflow"))  # (no id)
    for bad in ({"status": "stopped", "at": "x" * 4_000_001}, {"status": S("stopped")}, {"a": [1]},
                {"a": float("nan")}, {S("a"): 1}, {"\ud800": 1}, {"a": "\udc00"}):
        assert not E.plain_flat(bad)


def test_parse_rfc3339_kept_texts_give_what_the_parse_gives():
    """A text parsed once is looked up afterwards: the same instant, the same errors, a
    space-separated text still refused where CEL refuses it, and the table bounded."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    texts = st.one_of(
        st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                     timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7)), timezone(timedelta(minutes=90))])
                     ).map(lambda t: t.isoformat()),
        st.sampled_from(["2026-03-01T09:00:00Z", "2026-03-01t09:00:00z", "2026-03-01 09:00:00Z",
                         "2026-03-01T09:00:00.123456789+02:00", "2026-13-01T00:00:00Z", "2026-03-01T24:00:00Z",
                         "2026-03-01", "x", "2026-03-01T09:00:00", "２０２６-03-01T09:00:00Z"]))

    def fresh(text, allow):
        try:
            return T._parse_rfc3339(text, allow)
        except ValueError as e:
            return str(e)

    def kept(text, allow):
        try:
            return T.parse_rfc3339(text, allow_space=allow)
        except ValueError as e:
            return str(e)

    @given(st.lists(st.tuples(texts, st.booleans()), max_size=20))
    @settings(max_examples=300, deadline=None)
    def run(calls):
        for text, allow in calls + calls:
            got, want = kept(text, allow), fresh(text, allow)
            assert got == want and (type(got) is str or got.tzinfo is UTC), (text, allow)

    run()
    T.parse_rfc3339("2026-03-01 09:00:00Z", allow_space=True)  # a space: never kept
    with pytest.raises(ValueError):
        T.parse_rfc3339("2026-03-01 09:00:00Z")
    for i in range(T._PARSED_MAX + 10):
        T.parse_rfc3339(f"2026-03-01T09:00:00.{i:06d}Z")
    assert len(T._PARSED) <= T._PARSED_MAX


def test_parse_ts_reads_a_naive_time_as_utc_exactly():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @given(st.datetimes(), st.sampled_from([0, 1]))
    @settings(max_examples=300, deadline=None)
    def run(t, fold):
        t = t.replace(fold=fold)
        got = T.parse_ts(t)
        assert got == t.replace(tzinfo=UTC) and got.tzinfo is UTC and type(got) is datetime

    run()


def test_a_long_text_is_refused_before_it_is_hashed(monkeypatch):
    """Structural: a text longer than any timestamp is refused by its length, never looked
    up (hashing 4 million characters per call and condition would cost milliseconds)."""

    class Table(dict):
        looked = []

        def get(self, k, *d):
            Table.looked.append(len(k))
            return super().get(k, *d)

    monkeypatch.setattr(T, "_PARSED", Table())
    with pytest.raises(ValueError):
        T.parse_rfc3339("2" * 4_000_000)
    T.parse_rfc3339("2026-03-01T09:00:00Z")
    assert Table.looked == [20]  # only the short one
