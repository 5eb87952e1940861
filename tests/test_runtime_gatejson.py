"""The gate's recorded decision is written without the generic canonicaliser
(policy_engine.runtime.gatejson): from its decision template's canonical text, the action's
text computed once, and C-escaped envelope strings. The ledger bytes must stay exactly
RFC 8785 of the body the gate used to build (`rfc8785.dumps`), for the shipped policies,
for hostile action values (unicode, astral, controls, floats, big ints, nesting) and for
actions the reference refuses; and the fast path must really be taken."""

from __future__ import annotations

import json
import math
from datetime import timedelta

import pytest
import rfc8785
from depth import examples
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import WF, at, send, write_policy

from policy_engine import Runtime, load
from policy_engine.ledger import Ledger
from policy_engine.ledger.canonical import Canonical, canonical_text
from policy_engine.ledger.errors import InvalidEntry
from policy_engine.runtime import gatejson
from policy_engine.runtime.recorded import integral_doubles
from policy_engine.runtime.results import _ts

TTL = timedelta(hours=24)
_hostile = st.sampled_from(["\x00", "\x1f", "\x7f", '"', "\\", "/", "\u2028", "\u2029", "\ufeff", "\ue000",
                            "\U0001f600", "\U0010ffff", "é", "\b\f\n\r\t", "\ud800", "\udfff"])
texts = st.lists(st.one_of(st.characters(), _hostile), max_size=6).map("".join)
floats = st.one_of(st.floats(), st.sampled_from([0.0, -0.0, 1.0, 1e21, 1e20, 1e-7, 5e-324, 0.1, 2.0**53]))
ints = st.one_of(st.integers(min_value=-(2**53 - 1), max_value=2**53 - 1), st.integers(),
                 st.sampled_from([2**53, -2**53]))
scalars = st.one_of(st.none(), st.booleans(), ints, floats, texts)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(texts, inner, max_size=4)), max_leaves=20)


def reference_body(a, d, now_dt) -> dict:
    """The body the gate built before gatejson (executions.gate at b30b299), with an action
    the ledger cannot record exactly as the gate records it now: its repr, the problem, and
    a decision that permits nothing (`gatejson.fail_closed`)."""
    try:
        canonical_text(a)
        recorded, problem = a, None
    except InvalidEntry:
        _, recorded, problem = gatejson.recordable(a)
        assert recorded == repr(a)[:4096] or "\\ud" in recorded  # (lone surrogates escaped)
    d = gatejson.fail_closed(d, problem)
    body = {"action": recorded, "decision": d.model_dump(mode="json"), "policy_hash": d.policy_hash,
            "now": _ts(now_dt)}
    if problem:
        body["action_error"] = problem
        body["action_repr_sha256"] = gatejson.repr_sha256(a)  # (the whole action's)
    if d.effect == "require_approval":
        body["pending_until"] = _ts(now_dt + TTL)
    return body


def recorded_body(a, d, now_dt) -> dict:
    """`reference_body` as the runtime records it: with `action_doubles`, the paths of the
    action's integral floats (runtime/recorded.py; tests/test_recorded_doubles.py), if any."""
    ref = reference_body(a, d, now_dt)
    paths = integral_doubles(a) if "action_error" not in ref else []
    if paths:
        ref["action_doubles"] = paths
    return ref


def fast_body(a, d, now_dt):
    text, rec, problem = gatejson.recordable(a)
    d = gatejson.fail_closed(d, problem)
    rec = None if problem is None else rec
    pending = _ts(now_dt + TTL) if d.effect == "require_approval" else None
    return gatejson.body_text(text, rec, problem, d, _ts(now_dt), pending)


def check(a, d, now_dt) -> bool:
    """Assert the fast text (when given) is RFC 8785 of the reference body; True if it was given."""
    ref = reference_body(a, d, now_dt)
    got = fast_body(a, d, now_dt)
    if got is None:
        return False
    text, keys, top = got
    assert text.encode("utf-8") == rfc8785.dumps(ref)
    assert set(keys) == set(ref)
    assert top == {k: ref[k] for k in ("pending_until",) if k in ref}  # (what Entry.top reads unparsed)
    return True


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    p = write_policy(tmp_path_factory.mktemp("gj"))
    return load("policies"), load(str(p))


def shipped_actions(i: int) -> list[dict]:
    return [
        {"workflow": "support-replies", "type": "log_crm_activity", "id": f"n{i}", "note_kind": "reply_summary"},
        {"workflow": "support-replies", "type": "send_customer_reply", "id": f"r{i}",
         "recipient": {"domain": "acme.example"}, "claims": [{"kind": "timeline", "sourced": True}],
         "customer": {"tier": "smb"}, "confidence": 0.95},
        {"workflow": "support-replies", "type": "send_customer_reply", "id": f"u{i}",
         "recipient": {"domain": "acme.example"}, "claims": [{"kind": "refund", "sourced": False}],
         "customer": {"tier": "enterprise"}, "confidence": 0.5},
        {"workflow": "nowhere", "type": "unknown"},
        {"type": "no_workflow"},
    ]


def test_shipped_policies_decisions_are_byte_identical_and_take_the_fast_path(engines):
    shipped, small = engines
    taken = 0
    for i in range(3):
        for now in (at(i), None):
            for a in shipped_actions(i):
                d = shipped.evaluate(a, None, now)
                taken += check(a, d, d_now(now))
            for a in (send(10.0), send(500.0), send(promise=True), {"workflow": WF, "type": "log", "note": "x"}):
                d = small.evaluate({**a, "id": f"s{i}"}, None, now)
                taken += check({**a, "id": f"s{i}"}, d, d_now(now))
    assert taken >= 20  # the template path is really used (a silent fallback would pass the equality alone)


def d_now(now):
    from policy_engine.runtime.results import _now

    return _now(now)


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(aid=texts, extra=values)
@example(aid="\ud800", extra=None)
@example(aid="\U0001f600\u2028\x00", extra={"\U0001f600": 1.0, "\ue000": [1e21, -0.0]})
@example(aid="x", extra=2**53)
@example(aid="x", extra=math.nan)
def test_hostile_actions_are_byte_identical_or_refused_like_the_reference(engines, aid, extra):
    shipped, _ = engines
    for a in ({"workflow": "support-replies", "type": "log_crm_activity", "id": aid, "note_kind": "reply_summary",
               "extra": extra},
              {"workflow": "support-replies", "type": "send_customer_reply", "id": aid, "confidence": extra,
               "recipient": {"domain": aid}, "claims": [{"kind": "timeline", "sourced": True}]}):
        d = shipped.evaluate(a, None, at(1))
        check(a, d, at(1))


def test_the_ledger_refuses_canonical_text_for_kinds_whose_values_it_checks(tmp_path):
    led = Ledger.open(f"sqlite:///{tmp_path / 'l.db'}", create=True)
    with pytest.raises(InvalidEntry):
        led.append("approval", Canonical('{"verdict":"approve"}', ("verdict",)), workflow=WF)
    with pytest.raises(InvalidEntry, match="needs"):
        led.append("decision", Canonical('{"action":{}}', ("action",)), workflow=WF)
    led.close()


def test_an_appended_entrys_body_is_parsed_from_its_text_not_the_callers_object(tmp_path):
    led = Ledger.open(f"sqlite:///{tmp_path / 'l.db'}", create=True)
    body = {"action": {"x": [1, 2.5]}, "decision": {"effect": "allow"}, "policy_hash": "h", "now": "t"}
    e = led.append("decision", body, workflow=WF)
    body["action"]["x"].append(3)
    assert e.body == json.loads(e.body_json) == {"action": {"x": [1, 2.5]}, "decision": {"effect": "allow"},
                                                 "policy_hash": "h", "now": "t"}
    assert e == led.get(e.id) and e.body == led.get(e.id).body
    led.close()


@pytest.mark.parametrize("aid", ["plain", "é\u2028\U0001f600\x00\"\\", "\ud800"])
def test_recorded_gate_bodies_are_rfc8785_and_the_ledger_verifies(ledger_url, tmp_path, aid):  # noqa: F811
    with Runtime.open(str(write_policy(tmp_path)), ledger=ledger_url) as rt:
        eng = rt.engine
        acts = [{**send(10.0), "id": aid}, {**send(500.0), "id": aid}, {**send(float("nan")), "id": aid},
                {**send(promise=True), "id": aid}]
        for i, a in enumerate(acts):
            g = rt.gate(a, now=at(i))
            e = rt.ledger.get(g.decision_id)
            ref = recorded_body(a, eng.evaluate(a, None, at(i)), at(i))
            if i < 3:  # before the stop: the same decision as evaluated here
                assert e.body_json.encode("utf-8") == rfc8785.dumps(ref)
            assert e.body_json.encode("utf-8") == rfc8785.dumps(json.loads(e.body_json))
        assert rt.ledger.verify().ok


def test_gate_many_records_the_same_bytes(ledger_url, tmp_path):  # noqa: F811
    with Runtime.open(str(write_policy(tmp_path)), ledger=ledger_url) as rt:
        eng = rt.engine
        acts = [{**send(10.0), "id": "a"}, {**send(500.0), "id": "é\U0001f600"}, {**send(float("inf")), "id": "c"},
                {**send(20.0), "id": "\ud800"}]
        out = rt.gate_many(acts, now=at(1))
        for a, g in zip(acts, out):
            e = rt.ledger.get(g.decision_id)
            assert e.body_json.encode("utf-8") == rfc8785.dumps(recorded_body(a, eng.evaluate(a, None, at(1)), at(1)))
        assert rt.ledger.verify().ok
