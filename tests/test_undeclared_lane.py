"""The undeclared-type lane (`engine.accel.undeclared`) decides exactly as the reference gate.

An action whose type its (declared) workflow does not declare is denied (deciding rule
kind `undeclared`, a trace of every stop trigger, an error naming the type), or stopped
when a stop trigger fires. The lane builds those decisions from a template per (workflow,
type, values of the stop triggers), and gives them a `DecisionJson` fields set, so their
JSON (`to_json`, `evaluate_json`, the ledger's canonical text) is written from the
template's. Here every such decision is compared with the reference gate's
(`accelerate=False`), as JSON, field for field, by `==` and `hash` and after a pickle
round trip, on the benchmark and shipped policies and on a policy whose stop triggers
can fire for undeclared types (unguarded, guarded by undeclared names, reading `now`),
over random actions (fields absent, of the wrong type, NaN, over the input limits), ids,
`now`s, names (str subclasses, lone surrogates, undeclared workflows).
"""

from __future__ import annotations

import pickle
import sys
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import policy_engine
from policy_engine.engine import Engine
from policy_engine.engine.accel import undeclared as _lane
from policy_engine.language.loader import load_text
from policy_engine.ledger.canonical import canonical_text
from policy_engine.limits import MAX_INPUT_CHARS
from policy_engine.models import DecisionJson
from policy_engine.runtime.gatejson import decision_text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.requests import make_mix  # noqa: E402

NOW = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
LATE = datetime(2027, 6, 1, 8, 0, 0, 123456, tzinfo=UTC)  # past `after_cutover`'s time

# stop triggers that can fire for an undeclared type: unguarded (`big_amount`,
# `flagged_note`), guarded by undeclared names (`odd_transfer`), reading `now`
# (`after_cutover`), and one guarded by a declared type only (`declared_only`); a workflow
# without triggers (`quiet`); a type declared in another workflow than the action's
# (`wire_transfer` in `mirror`, `noop` in `quiet`: the quick path's type, another workflow)
POLICY = """
roles [reviewer, security_admin, support_manager]

workflow "payments" {
  version "7"
  owners { business "Finance lead" technical "Payments platform" }
  default deny

  const limit = 1000.0

  action pay_invoice {
    system "ledger"
    reversible full via "ledger.reverse" within 2d
    receipt [policy_rule]

    allow small when `action.amount < policy.limit`
    require_approval large by 1 reviewer when `action.amount >= policy.limit`
  }

  stop big_amount {
    when `action.amount > 50000.0`
    severity critical
    owner "Finance lead"
    affects [ledger]
    receipt [incident_ticket]
    rollback "Reverse the transfer"
    notify [security_admin]
    resume when {
      ok: `evidence.ok == true`
    }
  }

  stop flagged_note {
    when `size(action.note) > 8 && action.note.startsWith("!")`
    severity high
    owner "Finance lead"
    resume when {
      ok: `evidence.ok == true`
    }
  }

  stop odd_transfer {
    when `action.type in ["wire_transfer", "crypto_send"] && action.country != "DE"`
    severity medium
    owner "Payments platform"
    notify [support_manager]
    resume when {
      ok: `evidence.ok == true`
    }
  }

  stop after_cutover {
    when `now > timestamp("2027-01-01T00:00:00Z") && action.type == "refund_all"`
    severity low
    owner "Payments platform"
    resume when {
      ok: `evidence.ok == true`
    }
  }

  stop declared_only {
    when `action.type == "pay_invoice" && action.amount > 900000.0`
    severity low
    owner "Payments platform"
    resume when {
      ok: `evidence.ok == true`
    }
  }

  rollback incident {
    route ops
    authorize 1 reviewer
    cascade depth 1
  }
}

workflow "quiet" {
  version "1"
  owners { business "b" technical "t" }
  default deny

  action noop {
    system "x"
    irreversible
    receipt [policy_rule]
    allow always when `true`
  }
}

workflow "whole" {
  version "1"
  owners { business "b" technical "t" }
  default deny

  action noop2 {
    system "x"
    irreversible
    receipt [policy_rule]
    allow always when `true`
  }

  stop crowded {
    when `size(action) > 12`
    severity high
    owner "o"
    resume when {
      ok: `evidence.ok == true`
    }
  }
}

workflow "mirror" {
  version "2"
  owners { business "b" technical "t" }
  default deny

  action wire_transfer {
    system "bank"
    irreversible
    receipt [policy_rule]
    deny big when `action.amount > 10.0`
  }

  stop mirror_guarded {
    when `action.type == "wire_transfer" && action.amount > 1000000.0`
    severity high
    owner "o"
    resume when {
      ok: `evidence.ok == true`
    }
  }
}
"""


def _text_engines() -> tuple[Engine, Engine]:
    r = load_text(POLICY, "undeclared.policy")
    assert r.policy_set is not None, [f"{d.span}: {d.message}" for d in r.errors]
    return Engine.from_load_result(r), Engine.from_load_result(r, accelerate=False)


SETS = {"bench": ROOT / "benchmarks" / "policies", "shipped": ROOT / "policies", "text": None}


@pytest.fixture(scope="module", params=sorted(SETS))
def engines(request):
    path = SETS[request.param]
    if path is None:
        return _text_engines()
    return policy_engine.load(str(path)), policy_engine.load(str(path), accelerate=False)


@pytest.fixture(scope="module")
def text_engines():
    return _text_engines()


class S(str):
    """A str subclass (refused by the input check)."""


def _undeclared_names(engine) -> list[str]:
    """Type names no workflow declares, and names of types declared in another workflow."""
    names = ["wire_transfer", "crypto_send", "refund_all", "x", "", "é-type", "a" * 200]
    for wf in engine.compiled.workflows.values():
        names += list(wf.actions)[:2]
    return names


def _actions(engine) -> list[dict]:
    """Actions of an undeclared type (or of another workflow's type) in every workflow,
    with fields the stop triggers read of every kind."""
    out = []
    fields = [{}, {"amount": 9000.0}, {"amount": 90000.0}, {"amount": 70000}, {"amount": "big"},
              {"amount": float("nan")}, {"amount": float("inf")}, {"amount": True},
              {"note": "!attention please"}, {"note": "short"}, {"note": ["!", "x"]}, {"note": "!" * 40},
              {"country": "DE"}, {"country": "FR"}, {"country": 3},
              {"amount": 1.0, "note": "", "country": "DE"}, {"amount": 1.0, "note": "", "country": "FR"},
              {"amount": 1.0, "note": "!" + "n" * 20, "country": "DE"},
              {"amount": 60000.0, "note": "!" + "n" * 20, "country": "US"},
              {"batch_size": 900, "row_count": 500000, "amount": 1.0, "note": "", "country": "DE"},
              {"amount": 1.0, "note": "", "country": "DE", "unread": "u" * (MAX_INPUT_CHARS + 1)},
              {"amount": 1.0, "note": "n" * (MAX_INPUT_CHARS + 1), "country": "DE"},
              {"amount": 1.0, "note": "", "country": "DE", "body": "b" * (MAX_INPUT_CHARS + 1)}]
    names = _undeclared_names(engine)
    for wname in list(engine.compiled.workflows) + ["no-such-workflow"]:
        for i, tname in enumerate(names):
            for j, f in enumerate(fields):
                if (i + j) % 3 == 0 or tname == "wire_transfer":
                    out.append({"workflow": wname, "type": tname, "id": f"act-{i}-{j}", **f})
    return out


def _same(fast, ref, action, now) -> None:
    """The two engines' decisions for (action, now), compared every way a caller reads one."""
    d1, d2 = fast.evaluate(action, None, now), ref.evaluate(action, None, now)
    j2 = d2.model_dump_json()
    assert d1.model_dump_json() == j2, (action, now)
    assert d1.to_json() == j2, (action, now)
    assert fast.evaluate_json(action, None, now) == j2, (action, now)
    assert d1.model_dump() == d2.model_dump()
    assert d1 == d2 and hash(d1) == hash(d2)
    p1 = pickle.loads(pickle.dumps(d1))
    assert p1 == d2 and p1.model_dump_json() == j2 and hash(p1) == hash(d2)
    assert type(p1.__pydantic_fields_set__) is set


def _answered(fast, action, now=NOW):
    """The lane's own decision (None: it leaves the call to the reference)."""
    return fast._undeclared.decide(action, now)


def test_every_undeclared_decision_is_the_reference_gates(engines):
    fast, ref = engines
    n = taken = 0
    for action in _actions(fast):
        for now in (NOW, LATE):
            _same(fast, ref, action, now)
            taken += _answered(fast, action, now) is not None
            n += 1
    assert n > 500 and taken > 100


def test_the_lane_takes_the_plain_undeclared_call_and_nothing_else(text_engines):
    fast, ref = text_engines
    plain = {"workflow": "payments", "type": "wire_transfer", "id": "a1", "amount": 9000.0, "note": "",
             "country": "DE"}
    assert _answered(fast, plain) is not None
    assert _answered(fast, plain, None) is not None
    # another workflow's type (the quick path's, for another workflow)
    assert _answered(fast, {**plain, "type": "noop"}) is not None
    for odd in ({**plain, "type": "pay_invoice"},  # declared
                {**plain, "workflow": "mirror"},  # declared there
                {**plain, "workflow": "nope"}, {**plain, "workflow": S("payments")}, {**plain, "type": S("wire")},
                {**plain, "type": "\ud800"}, {**plain, "workflow": 3}, {**plain, "type": None},
                {k: v for k, v in plain.items() if k != "type"},
                {**plain, "amount": float("nan")},  # refused by check_fields: the reference says why
                {**plain, "amount": "big"},  # `big_amount` errs: the reference says how
                {**plain, "id": "i" * (MAX_INPUT_CHARS + 1)}, {**plain, "id": S("a1")}):
        assert _answered(fast, odd) is None, odd
        _same(fast, ref, odd, NOW)
    # a readable `now` of another kind: converted as the reference converts it (util.utc_now)
    for now in (datetime(2026, 3, 2, 14, 30), datetime(2026, 3, 2, 16, 30, tzinfo=timezone(timedelta(hours=2))),
                "2026-03-02T14:30:00Z"):
        assert _answered(fast, plain, now) is not None
        _same(fast, ref, plain, now)
    for now in (0, "yesterday"):  # unreadable: the reference says why
        assert _answered(fast, plain, now) is None


def test_a_trigger_reading_the_whole_action_checks_all_of_it(text_engines):
    """`size(action)`: the triggers may read any field (`stop_reads` None), so the lane's
    input check covers the whole action, as the reference's does."""
    fast, ref = text_engines
    assert fast.compiled.workflows["whole"].stop_reads is None
    plain = {"workflow": "whole", "type": "wire_transfer", "id": "a1", "amount": 9000.0, "note": "n"}
    crowded = {**plain, **{f"f{i}": i for i in range(12)}}
    for action in (plain, crowded):
        assert _answered(fast, action) is not None
        _same(fast, ref, action, NOW)
    assert fast.evaluate(crowded, None, NOW).effect == "stop"
    for odd in ({**plain, "extra": float("nan")}, {**plain, "extra": "x" * (MAX_INPUT_CHARS + 1)},
                {**plain, "extra": S("x")}, {**plain, 3: "x"}):
        _same(fast, ref, odd, NOW)
        assert fast.evaluate(odd, None, NOW).effect == "deny"
    assert _answered(fast, {**plain, "extra": float("nan")}) is None  # the reference says why


@pytest.mark.parametrize("now", [NOW + timedelta(microseconds=7), LATE, "2026-03-02T16:30:00+02:00",
                                 "2027-06-01T10:00:00.5+02:00",
                                 datetime(2026, 3, 2, 16, 30, tzinfo=timezone(timedelta(hours=2))),
                                 datetime(2026, 3, 2, 14, 30, tzinfo=timezone(timedelta(0)))])  # (not the UTC object)
def test_every_kind_of_now(engines, now):
    fast, ref = engines
    for action in _actions(fast)[::7]:
        _same(fast, ref, action, now)


@pytest.mark.parametrize("now", ["bad", datetime(2026, 3, 2, 14, 30), 17])
def test_unreadable_or_naive_now(engines, now):
    """The reference decides (at the clock's time, or with the local time for a naive one)."""
    fast, ref = engines
    for action in _actions(fast)[::31]:
        d1, d2 = fast.evaluate(action, None, now), ref.evaluate(action, None, now)
        assert d1.model_dump(exclude={"evaluated_at"}) == d2.model_dump(exclude={"evaluated_at"})
        assert d1.to_json() == BaseModel.model_dump_json(d1) == d1.model_dump_json()


def test_the_clock(engines):
    """now omitted: the lane reads the clock; everything but the time is the reference's."""
    fast, ref = engines
    for action in _actions(fast)[::5]:
        before = datetime.now(UTC)
        d1 = fast.evaluate(action)
        after = datetime.now(UTC)
        at = datetime.fromisoformat(d1.evaluated_at.replace("Z", "+00:00"))
        d2 = ref.evaluate(action, None, at)
        assert d1.model_dump_json() == d2.model_dump_json()
        assert d1.to_json() == d2.model_dump_json()
        assert before <= at <= after


def test_ids_of_every_kind(text_engines):
    fast, ref = text_engines
    base = {"workflow": "payments", "type": "wire_transfer", "amount": 9000.0, "note": "", "country": "DE"}
    for aid in ("a", "", "é", "\U0001f600", "x" * 500, 7, -0, 2**70, 1.5, float("nan"), True, None,
                [1, "a"], {"k": "v"}, {"k": float("nan")}, "\ud800", S("s"), b"b", object()):
        _same(fast, ref, {**base, "id": aid}, NOW)
    _same(fast, ref, base, NOW)  # no id
    assert _answered(fast, {**base, "id": 7}).action_id == "7"
    assert _answered(fast, base).action_id is None


def test_a_fired_trigger_is_decided_by_the_lane(text_engines):
    fast, ref = text_engines
    cases = [({"amount": 90000.0, "note": "", "country": "DE"}, "wire_transfer", NOW, "big_amount"),
             ({"amount": 1.0, "note": "!look at this", "country": "DE"}, "x", NOW, "flagged_note"),
             ({"amount": 1.0, "note": "", "country": "FR"}, "crypto_send", NOW, "odd_transfer"),
             ({"amount": 1.0, "note": "", "country": "FR"}, "other", NOW, None),
             ({"amount": 1.0, "note": "", "country": "DE"}, "refund_all", LATE, "after_cutover"),
             ({"amount": 1.0, "note": "", "country": "DE"}, "refund_all", NOW, None)]
    for fields, tname, now, trigger in cases:
        action = {"workflow": "payments", "type": tname, "id": "s1", **fields}
        d = _answered(fast, action, now)
        assert d is not None
        if trigger is None:
            assert d.effect == "deny" and d.deciding.kind == "undeclared"
        else:
            assert d.effect == "stop" and d.deciding.name == trigger and d.stop.trigger == trigger
        _same(fast, ref, action, now)


def test_the_lane_answers_from_one_template_per_outcome(text_engines, monkeypatch):
    """A structural check the lane is taken: the reference gate is never called, the
    decisions carry a template's fields set, and `decide` runs once per (workflow, type,
    values), not per call. Fails if the lane is switched off (see the last lines)."""
    fast, ref = text_engines
    calls: list = []
    real = _lane.decide
    monkeypatch.setattr(_lane, "decide", lambda *a: calls.append(1) or real(*a))
    fast._undeclared.templates.clear()
    acc = fast.accelerator

    def no_reference(*a, **k):
        raise AssertionError("the reference gate was called")

    monkeypatch.setattr(acc, "_reference", no_reference)
    for i in range(60):
        for tname in ("wire_transfer", "noop"):  # (noop: declared by `quiet`, the quick path's type)
            action = {"workflow": "payments", "type": tname, "id": f"a{i}", "amount": float(i), "note": "",
                      "country": "DE"}
            d = fast.evaluate(action, None, NOW + timedelta(minutes=i))
            assert d.effect == "deny" and d.action_id == f"a{i}" and d.deciding.kind == "undeclared"
            assert type(d.__pydantic_fields_set__) is DecisionJson
            assert fast.evaluate_json(action, None, NOW) == ref.evaluate(action, None, NOW).model_dump_json()
            d = fast.evaluate(action)  # the clock
            assert type(d.__pydantic_fields_set__) is DecisionJson
    assert len(calls) == 2
    assert set(fast._undeclared.templates) == {("payments", "wire_transfer", (False,) * 5),
                                               ("payments", "noop", (False,) * 5)}
    # the reference's decisions carry a plain set: the JSON goes through pydantic there
    plain = ref.evaluate({"workflow": "payments", "type": "wire_transfer", "amount": 1.0, "note": "",
                          "country": "DE"}, None, NOW)
    assert type(plain.__pydantic_fields_set__) is not DecisionJson
    # switched off: the reference decides
    off = _text_engines()[0]
    object.__setattr__(off, "_undeclared", None)
    monkeypatch.setattr(off.accelerator, "_reference", no_reference)
    d = off.evaluate({"workflow": "payments", "type": "wire_transfer", "amount": 1.0}, None, NOW)
    assert d.deciding.kind == "error" and "the reference gate was called" in d.reason  # (the engine's guard)


def test_accelerate_false_takes_only_the_reference_path(text_engines, monkeypatch):
    _, ref = text_engines
    assert ref._undeclared is None and ref.accelerator is None
    d = ref.evaluate({"workflow": "payments", "type": "wire_transfer", "amount": 1.0, "note": "", "country": "DE"},
                     None, NOW)
    assert d.deciding.kind == "undeclared"
    assert type(d.__pydantic_fields_set__) is not DecisionJson


def test_declared_types_are_not_the_lanes(engines):
    fast, _ = engines
    for wname, wf in fast.compiled.workflows.items():
        for tname in wf.actions:
            assert _answered(fast, {"workflow": wname, "type": tname, "id": "d"}) is None


def test_templates_are_shared_and_decisions_stay_what_they_were(text_engines):
    """Decisions of one template (ids and `now`s differ) read long after they were made,
    after the caller changed and reused its action dicts, are still the reference's."""
    fast, ref = text_engines
    made = []
    action = {"workflow": "payments", "type": "wire_transfer", "amount": 9000.0, "note": "", "country": "DE"}
    nows = [NOW, NOW + timedelta(microseconds=1), LATE, NOW, None]
    for i in range(40):
        now = nows[i % len(nows)]
        action["id"] = f"id-{i}" if i % 3 else i
        d = fast.evaluate(action, None, now)
        at = datetime.fromisoformat(d.evaluated_at.replace("Z", "+00:00"))
        expected = ref.evaluate(dict(action), None, at).model_dump_json()
        made.append((d, expected, i))
        action["amount"] = 90000.0 if i % 2 else 9000.0  # a stop on the next call, or not
        action["country"] = "FR"
        action["country"] = "DE"
        if i % 4 == 0:
            action.pop("note", None)
            action["note"] = ""
    for d, expected, i in made:
        assert d.model_dump_json() == expected
        assert d.to_json() == expected
        assert d.action_id == (f"id-{i}" if i % 3 else str(i))
    assert len({id(d.__pydantic_fields_set__) for d, _, _ in made}) == 2  # deny and big_amount's stop


def test_the_kept_templates_are_bounded(text_engines, monkeypatch):
    """The type name is the caller's: distinct names beyond `_MAX` are still answered,
    exactly, without keeping more."""
    fast, ref = text_engines
    monkeypatch.setattr(_lane, "_MAX", 3)
    fast._undeclared.templates.clear()
    for i in range(20):
        action = {"workflow": "payments", "type": f"made-up-{i}", "id": f"b{i}", "amount": 60000.0 * (i % 2),
                  "note": "", "country": "DE"}
        assert _answered(fast, action) is not None
        _same(fast, ref, action, NOW)
    assert len(fast._undeclared.templates) == 3


def test_the_ledgers_canonical_text_is_written_from_the_template(engines):
    fast, ref = engines
    for action in _actions(fast)[::3]:
        d = fast.evaluate(action, None, NOW)
        text = decision_text(d)
        expected = canonical_text(ref.evaluate(action, None, NOW).model_dump(mode="json"))
        if type(d.__pydantic_fields_set__) is DecisionJson:
            assert text is not None
        if text is not None:
            assert text == expected


def test_a_changed_template_value_is_not_written_from_the_template(text_engines):
    fast, _ = text_engines
    d = fast.evaluate({"workflow": "payments", "type": "wire_transfer", "id": "x", "amount": 1.0, "note": "",
                       "country": "DE"}, None, NOW)
    assert type(d.__pydantic_fields_set__) is DecisionJson
    changed = d.model_copy(update={"reason": "something else"})
    assert changed.to_json() == BaseModel.model_dump_json(changed) == changed.model_dump_json()
    assert '"something else"' in changed.to_json()


def test_the_benchmark_mix(engines):
    fast, ref = engines
    for a, s, n in make_mix(200):
        d1, d2 = fast.evaluate(a, s, n), ref.evaluate(a, s, n)
        assert d1.model_dump_json() == d2.model_dump_json()
        assert fast.evaluate_json(a, s, n) == d2.model_dump_json()


def test_threads(text_engines):
    fast, ref = text_engines
    actions = [{"workflow": "payments", "type": f"t{i % 9}", "id": f"c{i}", "amount": 60000.0 * (i % 2),
                "note": "!" * (i % 12), "country": "DE"} for i in range(300)]
    expected = [ref.evaluate(a, None, NOW).model_dump_json() for a in actions]
    fast._undeclared.templates.clear()
    bad: list = []

    def run() -> None:
        for a, e in zip(actions, expected):
            if fast.evaluate(a, None, NOW).to_json() != e:
                bad.append(a)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                     max_leaves=8)
_names = st.one_of(st.sampled_from(["wire_transfer", "crypto_send", "refund_all", "pay_invoice", "noop", "x",
                                    "payments", "quiet", "mirror", "nope", "\ud800", "t\udfff"]),
                   st.text(max_size=12), st.builds(S, st.sampled_from(["wire_transfer", "payments"])),
                   st.none(), st.integers())
_field = st.one_of(_json, st.sampled_from([float("nan"), float("inf"), 60000.0, 1.0, "!exclamation!", "DE", "FR",
                                           "z" * (MAX_INPUT_CHARS + 1), S("DE")]))
_now = st.one_of(st.just(NOW), st.just(LATE), st.none(),
                 st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
                 st.just(datetime(2026, 3, 2, 14, 30)), st.just("2027-01-01T00:00:00.000001Z"))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(wname=_names, tname=_names, aid=st.one_of(st.none(), st.text(max_size=10), st.integers(), _json),
       has_id=st.booleans(), fields=st.dictionaries(st.sampled_from(["amount", "note", "country", "batch_size",
                                                                     "row_count", "body", "other"]), _field,
                                                    max_size=4),
       now=_now, workflow_known=st.booleans())
def test_random_actions(text_engines, wname, tname, aid, has_id, fields, now, workflow_known):
    fast, ref = text_engines
    if workflow_known:
        wname = "payments"
    action = {"workflow": wname, "type": tname, **fields}
    if has_id:
        action["id"] = aid
    if now is None:
        d1 = fast.evaluate(action)
        at = datetime.fromisoformat(d1.evaluated_at.replace("Z", "+00:00"))
        d2 = ref.evaluate(action, None, at)
        assert d1.model_dump_json() == d2.model_dump_json()
        assert d1.to_json() == d2.model_dump_json()
        return
    if type(now) is datetime and now.tzinfo is None:
        d1, d2 = fast.evaluate(action, None, now), ref.evaluate(action, None, now)
        assert d1.model_dump(exclude={"evaluated_at"}) == d2.model_dump(exclude={"evaluated_at"})
        return
    _same(fast, ref, action, now)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pick=st.integers(0, 10_000), aid=st.one_of(st.none(), st.text(max_size=10), st.integers()),
       extra=st.dictionaries(st.text(max_size=8), _json, max_size=3))
def test_random_actions_on_every_policy_set(engines, pick, aid, extra):
    fast, ref = engines
    actions = _actions(fast)
    action = dict(actions[pick % len(actions)])
    action["id"] = aid
    action.update({k: v for k, v in extra.items() if k not in ("workflow", "type", "id")})
    _same(fast, ref, action, NOW)
