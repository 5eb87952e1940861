"""A recorded action re-evaluates as the gate evaluated it (SQLite and PostgreSQL).

The ledger writes canonical JSON (RFC 8785), where a float with an integral value (`7.0`)
is written `7` and read back as an int: a CEL `int` where the gate saw a `double`
(`action.amount / 2` is 3, not 3.5; `type(action.amount) == double` is false). The gate
records where such values are (`action_doubles`) and every re-evaluation of a recorded
action reads it back with them as floats (`runtime.recorded.recorded_action`): a replay
under the policy that decided changes nothing, `--as-rollback` selects nothing, an exported
case passes `stopline test` with the recorded effect, and a claim after a stop decides as the
gate did."""

from __future__ import annotations

import json
import math

import pytest
import rfc8785
import yaml
from click.testing import CliRunner
from depth import examples
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import at

from policy_engine import Runtime
from policy_engine.cli import main
from policy_engine.replay import replay
from policy_engine.runtime.recorded import DOUBLES, recorded_action

WF = "pay"
POLICY = '''roles [reviewer, customer_service]

workflow "pay" {
  version "1.0"
  owners {
    business "Payments lead"
    technical "Platform"
  }
  default deny

  action refund {
    system "payments"
    reversible full via "payments.reverse" within 30d
    receipt [ref]

    deny half_big when `action.amount / 2 > 3`
    allow rest when `true`
  }

  action typed {
    system "payments"
    reversible full via "payments.reverse" within 30d
    receipt [ref]

    deny is_double when `type(action.amount) == double`
    allow rest when `true`
  }

  action nested {
    system "payments"
    reversible full via "payments.reverse" within 30d
    receipt [ref]

    deny list_double when `action.items[1].price / 2 > 1`
    deny map_double when `type(action.meta.rate) == double`
    allow rest when `true`
  }

  action declared {
    system "payments"
    reversible full via "payments.reverse" within 30d
    receipt [ref]
    fields {
      amount: double
    }

    deny half_big when `action.amount / 2 > 3`
    allow rest when `true`
  }

  action payout {
    system "payments"
    runs_while_stopped
    reversible full via "payments.reverse" within 30d
    receipt [ref]

    allow half_big when `action.amount / 2 > 3`
  }

  action alarm {
    system "ops"
    reversible full via "ops.undo"
    receipt [ref]

    allow any when `true`
  }

  action free {
    system "ops"
    reversible full via "ops.undo"
    receipt [ref]

    allow any when `true`
  }

  stop incident {
    when `action.type == "alarm"`
    severity high
    owner "Payments lead"
    affects [payments]
    receipt [ref]
    rollback "Reverse the payouts"
    notify [finance]
    resume when {
      fixed: `evidence.fixed == true` "the fix is deployed"
    }
  }

  rollback policy_reversal {
    route customer_service
    authorize 1 customer_service
  }
}
'''
RECEIPT = {"ref": "R-1"}


def act(type_: str, **fields) -> dict:
    return {"workflow": WF, "type": type_, **fields}


#: (action, the effect and rule the gate decides); each turns with its integral floats read as ints
CASES = [
    (act("refund", amount=7.0), ("deny", "half_big")),  # 3.5 > 3 (as an int: 3 > 3)
    (act("typed", amount=7.0), ("deny", "is_double")),
    (act("declared", amount=7.0), ("deny", "half_big")),  # a declared double takes an int as it is
    (act("nested", items=[{"price": 1.5}, {"price": 3.0}], meta={"rate": 2}), ("deny", "list_double")),
    (act("nested", items=[{"price": 2}, {"price": 2}], meta={"rate": 2.0}), ("deny", "map_double")),
    (act("payout", amount=7.0), ("allow", "half_big")),
]


@pytest.fixture
def policy_file(tmp_path):
    p = tmp_path / "pay.policy"
    p.write_text(POLICY, encoding="utf-8")
    return p


@pytest.fixture
def rt(ledger_url, policy_file):  # noqa: F811
    with Runtime.open(str(policy_file), ledger=ledger_url) as r:
        yield r


def _gated(rt) -> list:
    """CASES gated one by one three times (the first decisions of a template are written by the
    generic encoder, the later ones from the template's text: `gatejson`), then all of them in
    one `gate_many`; the ids."""
    ids = []
    for r in range(3):
        for i, (a, want) in enumerate(CASES):
            g = rt.gate(a, now=at(10 * r + i))
            assert (g.effect, g.decision.deciding.name) == want
            ids.append(g.decision_id)
    for (_, want), g in zip(CASES, rt.gate_many([a for a, _ in CASES], now=at(40))):
        assert (g.effect, g.decision.deciding.name) == want
        ids.append(g.decision_id)
    return ids


def test_the_record_says_where_the_integral_doubles_are_and_reads_back_as_gated(rt):
    ids = _gated(rt)
    bodies = [rt.ledger.get(i).body for i in ids]
    assert bodies[0]["action"] == {"workflow": WF, "type": "refund", "amount": 7}  # (canonical JSON: an int)
    assert bodies[0][DOUBLES] == [["amount"]]
    assert bodies[3][DOUBLES] == [["items", 1, "price"]]  # 1.5 is written 1.5 and read back as a float
    assert bodies[4][DOUBLES] == [["meta", "rate"]]
    for body, (a, _) in zip(bodies, CASES * 4, strict=True):
        got = recorded_action(body)
        assert got == a and _types(got) == _types(a)
    # the stored text is still exactly RFC 8785 of the body, and the ledger verifies
    for i in ids:
        e = rt.ledger.get(i)
        assert e.body_json.encode("utf-8") == rfc8785.dumps(json.loads(e.body_json))
    assert rt.ledger.verify().ok


def test_an_action_without_integral_doubles_records_no_field(rt):
    g = rt.gate(act("refund", amount=7.5, n=3, ok=True, tags=["a"]), now=at(0))
    body = rt.ledger.get(g.decision_id).body
    assert DOUBLES not in body and recorded_action(body) == body["action"]
    nan = rt.gate(act("refund", amount=math.nan, whole=7.0), now=at(1))  # recorded as text: no paths either
    assert DOUBLES not in rt.ledger.get(nan.decision_id).body


def test_replay_under_the_policy_that_decided_changes_no_verdict(rt, ledger_url, policy_file):  # noqa: F811
    ids = _gated(rt)
    for workers in (1, 2):  # (in this process; in worker processes, each reading its own range)
        r = replay(str(policy_file), ledger_url, workers=workers)
        assert r.workers == workers and r.replayed == len(ids)
        assert r.changed == () and r.unreplayable == () and r.unchanged == len(ids)


def test_replay_as_rollback_under_the_same_policy_selects_nothing(rt, ledger_url, policy_file):  # noqa: F811
    g = rt.gate(act("payout", amount=7.0), now=at(0))
    assert g.effect == "allow"
    assert rt.executed(g.decision_id, receipt=RECEIPT, now=at(1)).authorized
    res = CliRunner().invoke(main, ["replay", str(policy_file), "--ledger", ledger_url, "--format", "json",
                                    "--as-rollback", "policy_reversal"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["changed_count"] == 0 and out["executed_changed"] == 0
    assert out["batch"] is None


@pytest.mark.parametrize("which", range(len(CASES)))
def test_an_exported_case_passes_stopline_test_with_the_recorded_effect(rt, ledger_url, policy_file, tmp_path,  # noqa: F811
                                                                        which):
    a, (effect, _) = CASES[which]
    g = rt.gate(a, now=at(0))
    suite = tmp_path / "cases" / "misses.policy-test.yaml"
    res = CliRunner().invoke(main, ["ledger", "export-case", g.decision_id, "--expect", effect, "--suite", str(suite),
                                    "--ledger", ledger_url, "--policies", str(policy_file)])
    assert res.exit_code == 0, res.output
    case = yaml.safe_load(suite.read_text(encoding="utf-8"))["cases"][0]
    assert case["gate"]["action"] == a and _types(case["gate"]["action"]) == _types(a)  # `7.0`, not `7`
    res = CliRunner().invoke(main, ["test", str(suite)])
    assert res.exit_code == 0, res.output


def test_a_claim_after_a_stop_decides_the_recorded_action_as_the_gate_did(rt):
    g = rt.gate(act("payout", amount=7.0), now=at(0))
    assert g.effect == "allow"
    assert rt.gate(act("alarm"), now=at(1)).stopped  # the workflow is stopped after the decision
    # the action type runs while stopped: the engine decides again, on the action as it was gated
    c = rt.claim_execution(g.decision_id, principal="worker-1", now=at(2))
    assert c.recorded and c.claimed_by == "worker-1", c.reason
    assert rt.executed(g.decision_id, receipt=RECEIPT, now=at(3)).authorized
    # one the gate did not allow is not claimed either way
    small = rt.gate(act("payout", amount=6.0), now=at(4))
    assert small.effect == "deny"
    assert not rt.claim_execution(small.decision_id, principal="worker-1", now=at(5)).recorded


def test_a_malformed_record_of_the_doubles_is_not_read_as_something_else():
    body = {"action": {"amount": 7, "flag": True, "items": [1]}, DOUBLES: [["amount"]]}
    got = recorded_action(body)
    assert got == {"amount": 7.0, "flag": True, "items": [1]} and type(got["amount"]) is float
    assert type(body["action"]["amount"]) is int  # the entry's body is not changed
    for bad in ("amount", [["nope"]], [["flag"]], [["items", 1]], [["items", "0"]], [[]], [7]):
        with pytest.raises(ValueError):
            recorded_action({**body, DOUBLES: bad})
    assert recorded_action({"action": {"amount": 7}}) == {"amount": 7}  # an entry from before the field


def test_a_decision_whose_doubles_cannot_be_read_is_unreplayable_and_not_exported(rt, ledger_url, policy_file,  # noqa: F811
                                                                                 tmp_path):
    good = rt.gate(act("refund", amount=7.0), now=at(0)).decision_id
    body = dict(rt.ledger.get(good).body)
    bad = rt.ledger.append("decision", {**body, DOUBLES: [["amount", 0]]}, workflow=WF, time=at(1)).id
    r = replay(str(policy_file), ledger_url)
    assert r.unchanged == 1 and r.changed == ()
    assert [(u["decision_id"], "cannot be read" in u["reason"]) for u in r.unreplayable] == [(bad, True)]
    res = CliRunner().invoke(main, ["ledger", "export-case", bad, "--expect", "deny", "--suite",
                                    str(tmp_path / "s.policy-test.yaml"), "--ledger", ledger_url])
    assert res.exit_code == 2 and "cannot be read" in res.stderr and "Traceback" not in res.output
    assert not (tmp_path / "s.policy-test.yaml").exists()


# ---------------------------------------------------------------------- the property
def _types(v):
    """`v` with each scalar replaced by its type (and value): `7.0` and `7` differ, `True` and `1` differ."""
    if isinstance(v, dict):
        return {k: _types(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_types(x) for x in v]
    return (type(v).__name__, v)


keys = st.text(max_size=4) | st.sampled_from(["a", "é", "\U0001f600", "\ue000", "price"])
numbers = (st.integers(min_value=-(2**53 - 1), max_value=2**53 - 1)
           | st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not (f == 0 and math.copysign(1, f) < 0))
           | st.integers(min_value=-(10**6), max_value=10**6).map(float)
           | st.sampled_from([7.0, 1.0, 1e20, -1e20, 9.99e20, 1e21, 2.0**53, 2.0**60, 0.5, 1e-7]))
json_values = st.recursive(st.none() | st.booleans() | st.text(max_size=4) | numbers,
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
                           max_leaves=16)


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(extra=st.dictionaries(keys.filter(lambda k: k not in ("workflow", "type")), json_values, max_size=5),
       many=st.booleans())
@example(extra={"amount": 7.0, "n": 7, "ok": True, "items": [{"price": 3.0}, {"price": 3}, [1.0, 1, True]]},
         many=False)
@example(extra={"\U0001f600": 2.0, "\ue000": 3.0, "b": {"\U0001f600": [0.0, 1e20]}}, many=True)
def test_a_recorded_action_reads_back_with_the_types_it_was_gated_with(rt, extra, many):
    a = act("free", **extra)
    g = rt.gate_many([a], now=at(0))[0] if many else rt.gate(a, now=at(0))
    e = rt.ledger.get(g.decision_id)  # read back from the database: the body parsed from its text
    got = recorded_action(e.body)
    assert got == a and _types(got) == _types(a)
    # the stored text is RFC 8785 of the body with the action as gated (an int beyond 2^53 the reference refuses)
    assert e.body_json.encode("utf-8") == rfc8785.dumps({**json.loads(e.body_json), "action": a})


def test_executing_the_decided_action_with_a_large_integral_double_is_authorized(rt):
    """1e20 is recorded as 100000000000000000000 and read back as an int beyond what canonical
    JSON takes: `executed(action=)` compared the given action with that and flagged the very
    action decided as "not the action decided"."""
    a = act("refund", amount=1.0, big=1e20)
    g = rt.gate(a, now=at(0))
    assert g.effect == "allow"
    x = rt.executed(g.decision_id, receipt={"ref": "r"}, action=a, now=at(1))
    assert x.authorized and not x.reasons
    other = rt.gate(act("refund", amount=1.0, big=1e20), now=at(2))
    y = rt.executed(other.decision_id, receipt={"ref": "r"}, action=act("refund", amount=1.0, big=2e20), now=at(3))
    assert not y.authorized and "not the action decided" in y.reasons[0]


def test_a_gate_retried_with_its_key_and_another_type_of_value_is_another_request(rt):
    """`True == 1` and `7 == 7.0` in Python: a retry with the same key and `1` for `true`
    (or `7` for the recorded `7.0`) got the recorded decision back, though the engine
    decides the two differently. A retry of the same JSON still gets it."""
    from policy_engine.ledger import IdempotencyConflict

    g = rt.gate(act("refund", amount=7.0, flag=True, items=[1, 2.5]), key="k-1", now=at(0))
    same = rt.gate(act("refund", amount=7.0, flag=True, items=[1, 2.5]), key="k-1", now=at(5))
    assert same.decision_id == g.decision_id
    for other in (act("refund", amount=7.0, flag=1, items=[1, 2.5]),
                  act("refund", amount=7, flag=True, items=[1, 2.5]),
                  act("refund", amount=7.0, flag=True, items=[1.0, 2.5])):
        with pytest.raises(IdempotencyConflict, match="another action"):
            rt.gate(other, key="k-1", now=at(6))
