"""The form every recorded time takes (the ledger's entry times, the runtime's `now`,
expiries, the replay's and the reviewer page's times): RFC 3339 in UTC, six fraction
digits, `Z` (`timestamps.format_micros`). `strftime("%Y")` writes a year before 1000
without its leading zeros (`999-05-01T...`), which no RFC 3339 reader takes back, and an
expiry past year 9999 raised `OverflowError` out of `Runtime.gate`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import send, write_policy

from policy_engine import Runtime
from policy_engine.ledger.records import format_time
from policy_engine.runtime import RuntimeUsageError
from policy_engine.timestamps import MAX_MICROS_TEXT, format_micros, format_micros_after, parse_rfc3339

_zones = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))])


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)), _zones)
def test_every_time_reads_back_as_itself(naive, zone):
    t = naive.replace(tzinfo=zone)
    text = format_micros(t)
    assert len(text) == 27 and text[4] == "-" and text.endswith("Z")
    assert parse_rfc3339(text) == t  # the same instant, to the microsecond
    assert format_time(t) == text  # the ledger's entry times are the same text
    if t.astimezone(UTC).year >= 1000:  # where strftime was right, the same bytes as before
        assert text == t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_years_before_1000_have_four_digits():
    assert format_micros(datetime(999, 5, 1, tzinfo=UTC)) == "0999-05-01T00:00:00.000000Z"
    assert format_micros(datetime(1, 1, 1, 0, 0, 0, 7, tzinfo=UTC)) == "0001-01-01T00:00:00.000007Z"
    assert format_micros(datetime(1000, 1, 1, tzinfo=UTC)) == "1000-01-01T00:00:00.000000Z"


def test_an_expiry_past_year_9999_is_the_latest_time():
    t = datetime(9999, 12, 31, 12, tzinfo=UTC)
    assert format_micros_after(t, timedelta(hours=24)) == MAX_MICROS_TEXT
    assert format_micros_after(t, timedelta(hours=1)) == "9999-12-31T13:00:00.000000Z"
    assert parse_rfc3339(MAX_MICROS_TEXT) == datetime.max.replace(tzinfo=UTC)


@pytest.mark.parametrize("now", [datetime(999, 5, 1, 9, 30, tzinfo=UTC), datetime(9999, 12, 31, 23, tzinfo=UTC)])
def test_the_runtime_records_and_reads_back_times_at_both_ends(ledger_url, tmp_path, now):  # noqa: F811
    with Runtime.open(str(write_policy(tmp_path)), ledger=ledger_url) as rt:
        g = rt.gate(send(500.0), now=now)  # require_approval: its expiry is `now` + a day
        assert g.effect == "require_approval"
        e = rt.ledger.get(g.decision_id)
        assert parse_rfc3339(e.time) == now and parse_rfc3339(e.body["now"]) == now
        until = parse_rfc3339(e.body["pending_until"])
        assert until == (datetime.max.replace(tzinfo=UTC) if now.year == 9999 else now + timedelta(hours=24))
        r = rt.approve(g.decision_id, principal="sam", roles=["reviewer"], now=now)
        assert r.counted and rt.authorization(g.decision_id, now=now).status == "approved"
        report = rt.ledger.verify()
        assert report.ok, report.problem


def test_a_now_past_year_9999_in_utc_is_a_usage_error(ledger_url, tmp_path):  # noqa: F811
    with Runtime.open(str(write_policy(tmp_path)), ledger=ledger_url) as rt:
        late = datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))
        with pytest.raises(RuntimeUsageError, match="out of range in UTC"):
            rt.gate(send(500.0), now=late)
        assert rt.ledger.size == 0  # nothing recorded
