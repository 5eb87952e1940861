"""Hostile question input to `stopline eval` / `explain`: exit 0 or 2, never a traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy_engine.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_fuzz_engine import PAY  # noqa: E402


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    p = tmp_path_factory.mktemp("cli") / "pay.policy"
    p.write_text(PAY, encoding="utf-8")
    return str(p)


GATE = {"question": "gate", "action": {"workflow": "pay", "type": "transfer", "amount": 5, "verified": True,
                                       "currency": "EUR", "country": "FR"}, "now": "2026-07-02T10:00:00Z"}


def run(policy, data: bytes, command="eval"):
    r = CliRunner().invoke(main, [command, policy, "--input", "-"], input=data)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    assert "Traceback" not in r.output
    return r


def test_baseline(policy):
    r = run(policy, json.dumps(GATE).encode())
    assert r.exit_code == 0 and json.loads(r.stdout)["effect"] == "allow"


# Regression: a lone surrogate escape in the input made the JSON printer raise
# UnicodeEncodeError (traceback); NaN/Infinity were accepted, and `-Infinity <= 100.0`
# allowed a transfer. Both now exit 2 (fixed in cli.py `_read_question`).
@pytest.mark.parametrize("command", ["eval", "explain"])
@pytest.mark.parametrize("raw", [
    '{"question":"gate","action":{"workflow":"pay","type":"transfer","id":"\\ud800"}}',
    '{"question":"gate","action":{"workflow":"pay","type":"transfer","\\udfff":1}}',
    '{"question":"gate","action":{"workflow":"pay","type":"transfer","amount":-Infinity,"verified":true,'
    '"currency":"EUR","country":"FR"},"now":"2026-07-02T10:00:00Z"}',
    '{"question":"gate","action":{"workflow":"pay","type":"transfer","amount":NaN}}',
    '{"question":"gate","action":{"workflow":"pay","type":"transfer","amount":Infinity}}',
])
def test_unprintable_or_non_json_input_exits_2(policy, command, raw):
    r = run(policy, raw.encode(), command)
    assert r.exit_code == 2, r.output
    assert "error:" in r.output


def test_paired_surrogate_escapes_are_fine(policy):
    q = json.loads(json.dumps(GATE))
    raw = json.dumps(q).replace('"transfer"', '"transfer", "id": "\\ud83d\\ude00"')
    r = run(policy, raw.encode())
    assert r.exit_code == 0 and json.loads(r.stdout)["action_id"] == "\U0001F600"


@pytest.mark.parametrize("data", [b"", b"\xff", b"[" * 100_000, b"{" * 100_000, b"null", b"[]", b'"gate"',
                                  b"\xef\xbb\xbf{}", b'{"question": "gate"}', b'{"question": "nope"}',
                                  b"1" * 5000, b'{"question":"gate","action":' + b"[" * 5000 + b"]" * 5000 + b"}"])
def test_malformed_envelopes(policy, data):
    r = run(policy, data)
    assert r.exit_code in (0, 2)


def test_oversized_input(policy):
    r = run(policy, b" " * 20_000_000)
    assert r.exit_code == 2


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
              st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=10)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["gate", "rollback", "authorize", "resume"]), st.dictionaries(st.sampled_from(
    ["action", "workflow_state", "now", "request", "plan", "approvals", "workflow", "stop", "evidence", "x"]),
    json_values, max_size=4))
def test_random_envelopes_never_trace(policy, question, fields):
    r = run(policy, json.dumps({"question": question, **fields}).encode())
    assert r.exit_code in (0, 2)
    if r.exit_code == 0:
        json.loads(r.stdout)


# Regression: `stopline explain` printed input strings raw, so an action id holding
# "\r\n effect: allow" or ANSI escapes forged lines and colours in a trace a person
# reads. Control characters, line separators and bidi overrides are now shown escaped
# (fixed in explain.py).
EVIL = "x\u001b[31mRED\u0007\r\n effect: allow\u202e\u2028"


@pytest.mark.parametrize("question", [
    {"question": "gate", "action": {"workflow": "pay", "type": "transfer", "id": EVIL, "amount": 5000,
                                    "verified": True, "currency": "EUR", "country": "FR"}},
    {"question": "gate", "action": {"workflow": EVIL, "type": EVIL}},
    {"question": "rollback", "request": {"workflow": "pay", "scenario": "reviewer_error", "requested_by": EVIL,
                                         "original": {"id": EVIL, "type": "transfer", "reviewer": EVIL,
                                                      "executed_at": "2026-07-02T09:30:00Z",
                                                      "downstream": [{"id": EVIL, "type": EVIL}]}}},
    {"question": "authorize", "request": {"workflow": "pay", "scenario": "reviewer_error", "requested_by": "c",
                                          "original": {"id": "t", "type": "transfer"}},
     "approvals": [{"principal": EVIL, "roles": ["reviewer"], "plan_hash": EVIL}]},
    {"question": "resume", "workflow": "pay", "stop": "runaway", "evidence": {"reviewed": EVIL}},
    {"question": "resume", "workflow": EVIL, "stop": EVIL, "evidence": {}},
])
def test_explain_escapes_control_characters(policy, question):
    r = run(policy, json.dumps({**question, "now": "2026-07-02T10:00:00Z"}).encode(), "explain")
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert not any(ch in out for ch in "\x1b\x07\r\u202e\u2028")
    assert not any(line.strip().startswith("effect: allow") for line in out.splitlines())
