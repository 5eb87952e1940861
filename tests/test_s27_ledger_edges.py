"""Session 27 audit of the ledger: what it reads back it can write again, refused input is refused
the same way on both backends (never a crash, never a silent choice), and a damaged ledger is
named as damaged."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from ledger_fixtures import ledger_url, raw  # noqa: F401  (fixture)
from sqlalchemy import text

from policy_engine.cli import main
from policy_engine.ledger import Ledger
from policy_engine.ledger.canonical import canonical_text, parse_body
from policy_engine.ledger.errors import InvalidEntry, InvalidQuery, ProofError, SchemaError
from policy_engine.ledger.merkle import ConsistencyProof, InclusionProof


def run(*args, env=None):
    r = CliRunner().invoke(main, ["ledger", *args], env=env, catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


def _decision(**action):
    return {"action": {"type": "refund", **action}, "decision": {"effect": "allow"}, "policy_hash": "p"}


# ------------------------------------------------------------------ numbers RFC 8785 writes as integer digits
def test_a_double_written_in_integer_digits_reads_back_as_that_double_and_appends_again(ledger_url):
    # RFC 8785 writes 1e16 as 10000000000000000; read back as a Python int beyond 2^53 it was
    # refused by the ledger itself: an idempotent retry with the body read back (or a body built
    # from a recorded one) failed with "integer ... outside the interoperable range"
    amounts = {"a": 1e16, "b": -1e20, "c": 12345678901234567e3, "d": 2.0**53, "e": 9007199254740991}
    with Ledger.open(ledger_url, create=True) as led:
        d = led.append("decision", _decision(**amounts), workflow="w", key="k")
        assert '"a":10000000000000000' in d.body_json and '"b":-100000000000000000000' in d.body_json
        back = led.get(d.id)
        assert back.body["action"]["a"] == 1e16 and back.body["action"]["e"] == 9007199254740991
        assert canonical_text(back.body) == back.body_json
        again = led.append("decision", back.body, workflow="w", key="k")  # the same entry, not a refusal
        assert (again.seq, again.id) == (d.seq, d.id)
        led.append("decision", back.body, workflow="w")  # and a new entry with that body
        assert led.verify().ok


def test_every_stored_number_form_round_trips():
    for text_ in ('{"x":10000000000000000}', '{"x":-9007199254740992}', '{"x":[1e+21,5e-324,0,9007199254740991]}',
                  '{"id":"1234567890123456789","n":123456789012345680000}'):
        assert canonical_text(parse_body(text_)) == text_


# ------------------------------------------------------------------ repeated keys are not silently dropped
def test_ledger_append_refuses_a_body_with_a_repeated_key(ledger_url, tmp_path):
    env = {"STOPLINE_LEDGER": ledger_url}
    assert run("init", env=env)[0] == 0
    b = tmp_path / "b.json"
    for doc in ('{"trigger": "a", "trigger": "b"}', '{"trigger": "a", "x": [{"k": 1, "k": 1}]}'):
        b.write_text(doc)
        code, out, err = run("append", "stop", str(b), "--workflow", "w", env=env)
        assert code == 2 and out == "", (code, out, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and "appears twice" in err, err
    with Ledger.open(ledger_url) as led:
        assert led.size == 0  # (the first was recorded with "trigger": "b")
    b.write_text('{"trigger": "a", "x": {"k": 1}, "y": {"k": 2}}')  # the same key in two objects is fine
    assert run("append", "stop", str(b), "--workflow", "w", env=env)[0] == 0


def test_a_proof_with_a_repeated_key_or_nested_too_deeply_is_a_proof_error():
    p = InclusionProof(0, 1, b"\x01" * 32, (), b"\x01" * 32)
    text_ = json.dumps(p.to_json())
    assert InclusionProof.from_json(text_) == p
    with pytest.raises(ProofError, match="twice"):
        InclusionProof.from_json(text_.replace("{", '{"index": 5, ', 1))
    for cls in (InclusionProof, ConsistencyProof):
        with pytest.raises(ProofError):
            cls.from_json("[" * 100_000)  # (a RecursionError escaped)


# ------------------------------------------------------------------ times and limits
def test_an_entry_time_that_is_not_a_datetime_or_out_of_range_is_invalid_entry(ledger_url):
    with Ledger.open(ledger_url, create=True) as led:
        for t in ("2026-01-01T00:00:00Z", 5, datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))),
                  datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5)))):
            with pytest.raises(InvalidEntry):  # (AttributeError, OverflowError)
                led.append("stop", {"trigger": "t"}, workflow="w", time=t)
        assert led.size == 0
        last = led.append("stop", {"trigger": "t"}, workflow="w", time=datetime.max.replace(tzinfo=UTC))
        assert last.time == "9999-12-31T23:59:59.999999Z"


def test_a_bound_rounded_up_past_year_9999_is_after_every_entry(ledger_url):
    with Ledger.open(ledger_url, create=True) as led:
        led.append("stop", {"trigger": "t"}, workflow="w", time=datetime.max.replace(tzinfo=UTC))
        # (was InvalidQuery: the sub-microsecond digits round up past the last datetime)
        assert len(led.entries(until="9999-12-31T23:59:59.9999999Z")) == 1
        assert led.entries(since="9999-12-31T23:59:59.9999991Z") == []
        assert led.entries(until="9999-12-31T23:59:59.999999Z") == []


def test_a_negative_limit_is_an_invalid_query_on_both_backends(ledger_url):
    with Ledger.open(ledger_url, create=True) as led:
        led.append("stop", {"trigger": "t"}, workflow="w")
        for bad in (-1, True, 1.5):
            # (SQLite answered every entry, PostgreSQL raised LedgerUnavailable)
            with pytest.raises(InvalidQuery):
                led.entries(limit=bad)
        assert len(led.entries(limit=0)) == 0 and len(led.entries(limit=5)) == 1


# ------------------------------------------------------------------ damage named as damage
def test_a_ledger_whose_schema_version_row_was_deleted_is_named_damaged_and_left_alone(ledger_url):
    with Ledger.open(ledger_url, create=True) as led:
        led.append("stop", {"trigger": "t"}, workflow="w")
    with raw(ledger_url) as c:
        c.execute(text("DELETE FROM ledger_meta WHERE name = 'schema_version'"))
    for create in (False, True):  # (was "not a Stopline ledger ... no ledger_meta"; init: a UNIQUE violation)
        with pytest.raises(SchemaError, match="damaged: `ledger_meta` has no schema_version"):
            Ledger.open(ledger_url, create=create)
    code, out, err = run("init", "--ledger", ledger_url)
    assert code == 2 and "has no schema_version" in err and err.count("\n") == 1, err
    with raw(ledger_url) as c:
        assert dict(c.execute(text("SELECT name, value FROM ledger_meta")).all()).keys() >= {"log_id", "origin"}
        assert c.execute(text("SELECT size FROM ledger_heads")).scalar_one() == 1


def test_a_head_size_edited_below_zero_fails_at_seq_0(ledger_url):
    with Ledger.open(ledger_url, create=True) as led:
        for n in (0, 2):  # (it failed "at seq -1", an entry that cannot be)
            while led.size < n:
                led.append("stop", {"trigger": "t"}, workflow="w")
            with raw(ledger_url) as c:
                c.execute(text("UPDATE ledger_heads SET size = -1"))
            r = led.verify()
            assert not r.ok and r.first_bad == 0 and "negative size" in (r.problem or ""), r
            with raw(ledger_url) as c:
                c.execute(text(f"UPDATE ledger_heads SET size = {n}"))
            assert led.verify().ok
