"""`Engine.authorize_action` reads a decision given as a dict (a recorded one, as the runtime
judges every decision from the ledger) with `authorize.decision_view`: one walk that proves
`parsed(Decision, ...)` would accept it, instead of `check_size` and pydantic's validation.
Its answers must be the reference's (`authorize_action_reference`, which always parses),
byte for byte: on every decision of the benchmark mix as recorded, and on malformed ones
(hypothesis mutates recorded decisions: values of every kind at every place, keys added,
removed, renamed, containers of other types, the input limits), for any approvals and any
`now`. Where the fast path answers at all, the fields it reads are the validated model's.
"""

from __future__ import annotations

import copy
import enum
import json
import math
import re
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import pytest
from engine_support import ROOT, warm_bench_engines
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, field_validator

import policy_engine
from policy_engine.engine import authorize as A
from policy_engine.engine.inputs import Unproven, _quick_walk, check_size, model_spec, model_walker
from policy_engine.limits import MAX_INPUT_CHARS, MAX_INPUT_ITEMS
from policy_engine.models import Decision

ENGINE, _SLOW, MIX = warm_bench_engines()
NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
DECISIONS = [ENGINE.evaluate(a, s, n) for a, s, n in MIX]
RECORDED = [json.loads(d.to_json()) for d in DECISIONS]  # (what the runtime's ledger holds)
PENDING = [r for r in RECORDED if r["effect"] == "require_approval"]
ROLES = sorted({r for d in DECISIONS for a in d.approvals for r in a.roles}) + ["nobody"]
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))


class _S(str):
    pass


class _I(int):
    pass


class _F(float):
    pass


class _D(dict):
    pass


class _L(list):
    pass


class _IE(enum.IntEnum):
    ONE = 1


class _SE(enum.StrEnum):
    RULE = "rule"


def _both(decision: Any, approvals: Any, now: Any = NOW):
    """(fast, reference): the verdicts of `Engine.authorize_action` with the fast path on and off."""
    assert A.FAST_DECISION
    fast = ENGINE.authorize_action(decision, approvals, now)
    A.FAST_DECISION = False
    try:
        ref = ENGINE.authorize_action(decision, approvals, now)
    finally:
        A.FAST_DECISION = True
    return fast, ref


def _same(decision: Any, approvals: Any, now: Any = NOW):
    fast, ref = _both(decision, approvals, now)
    a, b = fast.model_dump_json(), ref.model_dump_json()
    if any(e.message.startswith("`now`") for e in ref.errors):  # (unreadable: each read the clock)
        a, b = (re.sub(r'"evaluated_at":"[^"]*"', "", x) for x in (a, b))
    else:
        assert fast == ref
    assert a == b
    return fast


def _approvals(d: dict, who: list[tuple[str, list[str]]], **extra) -> list[dict]:
    return [{"principal": p, "roles": r, "action_digest": d.get("action_digest"), "at": "2026-03-02T09:00:00Z",
             "expires_at": "2026-03-03T09:00:00Z", "policy_hash": d.get("policy_hash"), **extra} for p, r in who]


def _fill(d: dict) -> list[dict]:
    """Approvals that satisfy the decision's requirement (one principal per approver needed)."""
    out = []
    for a in d.get("approvals") or ():
        for i in range(a["count"]):
            out.append((f"{a['rule']}-{i}", [a["roles"][i % len(a["roles"])]]))
    return _approvals(d, out)


# ------------------------------------------------------------------ the fast path is taken, and agrees

def test_every_recorded_decision_of_the_mix_is_read_by_the_fast_path():
    assert A._WALK_DECISION is not None  # (None: the models changed, and every decision would be parsed)
    for r in RECORDED + [d.model_dump(mode="json") for d in DECISIONS] + [d.model_dump() for d in DECISIONS]:
        assert A.decision_view(r) is not None, r


def test_recorded_decisions_get_the_reference_verdict_with_any_approvals():
    assert len(PENDING) > 20
    satisfied = 0
    for r in RECORDED:
        for apps in ([], _fill(r), _fill(r)[:1], _approvals(r, [("x", ROLES)]),
                     _approvals(r, [("y", ROLES)], action_digest="sha256:other"), [{"principal": 1}], "nope"):
            v = _same(r, apps)
            satisfied += v.satisfied
    assert satisfied >= len(PENDING)  # (the fill releases each: the fast path answers `satisfied` too)
    for d, r in zip(DECISIONS, RECORDED, strict=True):  # the same verdict as for the Decision itself
        apps = _fill(r)
        assert ENGINE.authorize_action(r, apps, NOW) == ENGINE.authorize_action(d, apps, NOW)


def test_python_mode_dumps_and_other_nows_agree():
    for d in DECISIONS[:60]:
        dump = d.model_dump()  # tuples, not lists
        for now in (NOW, "2026-03-02T10:00:00Z", "not a time", "2026-03-04T10:00:00Z", 5):
            _same(dump, _fill(dump), now)


def test_the_view_holds_the_validated_models_fields():
    for r in RECORDED:
        _check_view(r)


def _check_view(raw: Any) -> bool:
    """If decision_view answers for `raw`: `parsed` accepts it, `check_size` finds nothing,
    and each field the view holds is the validated Decision's (value and type)."""
    v = A.decision_view(raw)
    if v is None:
        return False
    m, problem = A.parsed(Decision, raw, "decision")
    assert problem is None and check_size(raw) is None
    for k in A._DecisionView.__slots__:
        got, want = getattr(v, k), getattr(m, k)
        assert got == want and type(got) is type(want), k
    for got, want in zip(v.matched + v.approvals + (v.deciding,), m.matched + m.approvals + (m.deciding,),
                         strict=True):
        assert got.__dict__ == want.__dict__
        assert all(type(got.__dict__[f]) is type(want.__dict__[f]) for f in want.__dict__)
    return True


# ------------------------------------------------------------------ malformed decisions (hypothesis)

_WEIRD = [None, True, False, 0, 1, -1, 2, 2**63 - 1, 2**63, -(2**63), 2**70, 1.0, 0.5, -0.0, math.nan, math.inf,
          -math.inf, "", "x", "1", "true", "rule", "stop", "allow", "deny", "require_approval", "standard",
          "escalation", "full", "partial", "\ud800", "a\udfffb", "é", "\U0001F600", b"x", b"", bytearray(b"x"), [],
          ["x"], [1], ["x", None], ("x",), (), {}, {"x": 1}, {1: "x"}, {"rule": "r"}, _S("x"), _S("rule"), _I(1),
          _IE.ONE, _SE.RULE, _F(1.0), _D(), _L(), OrderedDict(), frozenset(), {"a"}, datetime(2026, 1, 1, tzinfo=UTC),
          timedelta(1), Decimal("1"), object(), 1j, Ellipsis]


def _json_values():
    leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    return st.recursive(leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                        max_leaves=6)


def _spots(v: Any, path: tuple = ()) -> list[tuple]:
    """Every path to a value in `v` (dict keys and list indexes), the root's () first."""
    out = [path]
    if isinstance(v, dict):
        for k, x in v.items():
            out += _spots(x, path + (k,))
    elif isinstance(v, (list, tuple)):
        for i, x in enumerate(v):
            out += _spots(x, path + (i,))
    return out


def _at(v: Any, path: tuple) -> Any:
    for k in path:
        v = v[k]
    return v


def _put(root: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    parent = _at(root, path[:-1])
    if isinstance(parent, tuple):
        parent = list(parent)
        parent[path[-1]] = new
        return _put(root, path[:-1], tuple(parent))
    parent[path[-1]] = new
    return root


_KEYS = ["klass", "class", "extra", "rule", "name", "kind", "effect", "location", "count", "roles", "any_of",
         "approvals", "matched", "trace", "reversibility", "stop", "cost", "amount", "unit", 1, True, None, 1.5,
         _S("rule"), _S("name"), _S("effect"), "\ud800", "é"]


@st.composite
def mutated(draw) -> dict:
    d = copy.deepcopy(draw(st.sampled_from(PENDING if draw(st.booleans()) else RECORDED)))
    for _ in range(draw(st.integers(1, 3))):
        spots = _spots(d)
        path = draw(st.sampled_from(spots))
        target = _at(d, path)
        op = draw(st.sampled_from(["value", "value", "json", "subtree", "delete", "add", "rename", "retype"]))
        if op == "value":
            d = _put(d, path, copy.copy(draw(st.sampled_from(_WEIRD))))
        elif op == "json":
            d = _put(d, path, draw(_json_values()))
        elif op == "subtree":  # a part of this or another recorded decision, somewhere it may not belong
            other = draw(st.sampled_from(RECORDED))
            d = _put(d, path, copy.deepcopy(_at(other, draw(st.sampled_from(_spots(other))))))
        elif op == "delete" and isinstance(target, dict) and target:
            del target[draw(st.sampled_from(sorted(target, key=repr)))]
        elif op == "delete" and isinstance(target, list) and target:
            del target[draw(st.integers(0, len(target) - 1))]
        elif op == "add" and isinstance(target, dict):
            target[draw(st.sampled_from(_KEYS))] = copy.copy(draw(st.sampled_from(_WEIRD + [None, "x", 1])))
        elif op == "add" and isinstance(target, list):
            target.append(copy.copy(draw(st.sampled_from(_WEIRD))))
        elif op == "rename" and isinstance(target, dict) and target:
            k = draw(st.sampled_from(sorted(target, key=repr)))
            new = draw(st.sampled_from([_S(k) if isinstance(k, str) else k, "klass" if k == "class" else k + "_",
                                        "class" if k == "klass" else k.upper()])) if isinstance(k, str) else k
            target[new] = target.pop(k)
        elif op == "retype":
            kind = draw(st.sampled_from(["tuple", "odict", "dsub", "lsub", "str"]))
            if isinstance(target, list):
                new = tuple(target) if kind == "tuple" else _L(target) if kind == "lsub" else target
            elif isinstance(target, dict):
                new = OrderedDict(target) if kind == "odict" else _D(target) if kind == "dsub" else target
            elif isinstance(target, str):
                new = _S(target) if kind == "str" else target
            else:
                new = target
            d = _put(d, path, new)
    return d


@st.composite
def approvals(draw, d: Any) -> Any:
    digest = d.get("action_digest") if isinstance(d, dict) else None
    ph = d.get("policy_hash") if isinstance(d, dict) else None
    one = st.fixed_dictionaries(
        {"principal": st.sampled_from(["ann", "bob", "cy", "Ann", "ann ", 1, ""]),
         "roles": st.lists(st.sampled_from(ROLES), max_size=3),
         "action_digest": st.sampled_from([digest, "sha256:x", None])},
        optional={"policy_hash": st.sampled_from([ph, "sha256:y"]),
                  "at": st.sampled_from(["2026-03-02T09:00:00Z", "2026-03-02T11:00:00Z", "x"]),
                  "expires_at": st.sampled_from(["2026-03-03T09:00:00Z", "2026-03-01T09:00:00Z"]),
                  "verdict": st.sampled_from(["approve", "deny", "maybe"])})
    return draw(st.lists(one, max_size=4) | st.sampled_from([None, "x", {}, [1]]))


@SETTINGS
@given(st.data())
def test_mutated_decisions_get_the_reference_verdict(data):
    d = data.draw(mutated())
    apps = data.draw(approvals(d))
    now = data.draw(st.sampled_from([NOW, "2026-03-02T10:00:00Z", "later"]))
    event("read by decision_view" if A.decision_view(d) is not None else "parsed")
    v = _same(d, apps, now)
    event(f"satisfied: {v.satisfied}")


@SETTINGS
@given(mutated())
def test_the_fast_path_answers_only_for_what_parsed_accepts(d):
    if _check_view(d):  # and then it counts the values and characters as the input check does
        try:
            counts = _quick_walk(d, 1)
        except Exception:  # noqa: BLE001 - (a tuple: the quick walk leaves it to the exact walk)
            return
        assert A._WALK_DECISION(d) == counts


@SETTINGS
@given(st.sampled_from(PENDING), st.sampled_from(["effect", "workflow", "action_type", "action_digest",
                                                   "policy_hash", "matched", "approvals", "deciding"]),
       st.data())
def test_valid_changes_to_the_fields_read_are_read_as_the_reference_reads_them(d, field, data):
    """Decisions still valid, changed where authorize_action looks: the fast path answers
    (no fallback) and agrees."""
    d = copy.deepcopy(d)
    other = data.draw(st.sampled_from(RECORDED))
    if field in ("matched", "approvals") and data.draw(st.booleans()):
        items = list(d[field]) + list(other[field])
        d[field] = data.draw(st.permutations(items)).copy()[:data.draw(st.integers(0, len(items)))]
        if field == "approvals" and d[field] and data.draw(st.booleans()):
            d[field][0] = {**d[field][0], "count": data.draw(st.integers(0, 3)),
                           "any_of": data.draw(st.booleans())}
    elif field in ("action_digest", "workflow", "action_type"):
        d[field] = data.draw(st.sampled_from([None, "", other.get(field), "sha256:x"]))
    elif field == "deciding":
        d[field] = copy.deepcopy(other[field])
    else:
        d[field] = other[field] if field != "effect" else data.draw(st.sampled_from(
            ["allow", "deny", "stop", "require_approval"]))
    assert A.decision_view(d) is not None
    _check_view(d)
    extra = data.draw(approvals(d))
    _same(d, _fill(d) + extra if isinstance(extra, list) else extra)


# ------------------------------------------------------------------ the input limits, at the boundary

def _pad(d: dict, items: int = 0, chars: int = 0) -> dict:
    """`d` with `items` more values (receipt entries of one character) and `chars` more characters
    in its `reason` (each receipt entry's character counted)."""
    d = copy.deepcopy(d)
    d["receipt"] = list(d.get("receipt", ())) + ["r"] * items
    d["reason"] = d["reason"] + "x" * chars
    return d


def test_the_values_limit_at_its_boundary():
    d = PENDING[0]
    n, c = A._WALK_DECISION(d)
    at = _pad(d, items=MAX_INPUT_ITEMS - n)
    assert A._WALK_DECISION(at)[0] == MAX_INPUT_ITEMS and check_size(at) is None
    assert A.decision_view(at) is not None
    _same(at, _fill(at))
    over = _pad(d, items=MAX_INPUT_ITEMS - n + 1)
    assert A.decision_view(over) is None
    v = _same(over, _fill(over))
    assert "more than" in v.errors[0].message and not v.satisfied


def test_the_characters_limit_at_its_boundary():
    d = PENDING[0]
    n, c = A._WALK_DECISION(d)
    at = _pad(d, chars=MAX_INPUT_CHARS - c)
    assert A._WALK_DECISION(at)[1] == MAX_INPUT_CHARS and check_size(at) is None
    assert A.decision_view(at) is not None
    _same(at, _fill(at))
    over = _pad(d, chars=MAX_INPUT_CHARS - c + 1)
    assert A.decision_view(over) is None
    v = _same(over, _fill(over))
    assert "characters" in v.errors[0].message and not v.satisfied


def test_a_value_pydantic_coerces_is_left_to_the_reference():
    """pydantic's lax mode takes `"yes"` for a bool, `"1"` or `1.0` for an int: the reference
    accepts such a decision (and reads the coerced value); the fast path declines it."""
    for change in ({"trace": [{**PENDING[0]["trace"][0], "matched": "yes"}]},
                   {"approvals": [{**PENDING[0]["approvals"][0], "count": "1"}]},
                   {"approvals": [{**PENDING[0]["approvals"][0], "count": 1.0}]}):
        d = {**copy.deepcopy(PENDING[0]), **change}
        assert A.decision_view(d) is None
        assert _same(d, _fill(PENDING[0])).satisfied


@pytest.mark.parametrize("where", ["reason", "trace", "key", "roles", "literal"])
def test_one_bad_value_anywhere_gets_the_reference_message(where):
    d = copy.deepcopy(PENDING[0])
    if where == "reason":
        d["reason"] = "bad \ud800"
    elif where == "trace":
        d["trace"] = [{**d["trace"][0], "matched": [1]}]
    elif where == "key":
        d[_S("reason")] = d.pop("reason")
    elif where == "roles":
        d["approvals"][0]["roles"] = [_S(d["approvals"][0]["roles"][0])]
    elif where == "literal":
        d["deciding"]["kind"] = "rules"
    assert A.decision_view(d) is None
    v = _same(d, _fill(d))
    assert not v.satisfied and v.errors[0].rule == "<input>"


def test_a_decision_that_is_no_plain_dict_takes_the_reference_path():
    d = PENDING[0]
    for other in (OrderedDict(d), _D(d), Decision.model_validate(d), "x", None, [d]):
        _same(other, _fill(d))


# ------------------------------------------------------------------ models the fast path cannot mirror

def test_a_model_whose_validation_cannot_be_mirrored_has_no_spec():
    class Base(BaseModel):
        model_config = ConfigDict(frozen=True, extra="forbid")

    class Validated(Base):
        x: str

        @field_validator("x")
        @classmethod
        def _v(cls, v):
            return v

    class Allow(BaseModel):
        model_config = ConfigDict(extra="allow")
        x: str

    class Constrained(Base):
        x: str = Field(max_length=3)

    class AnyDict(Base):
        x: dict[str, Any]

    class Union2(Base):
        x: int | str

    class Strict(Base):
        model_config = ConfigDict(frozen=True, extra="forbid", strict=True)
        x: str

    class Choices(Base):
        x: str = Field(validation_alias="y")

    for model in (Validated, Allow, Constrained, AnyDict, Union2, Strict, Choices):
        with pytest.raises(Unproven):
            model_spec(model, {})

    class Fine(Base):
        a: str
        b: int | None = None
        c: tuple[str, ...] = ()
        d: Literal["p", "q"] = "p"
        e: float = 0.0
        f: bool = False
        k: str | None = Field(default=None, alias="class")

    spec = model_spec(Fine, {})
    assert sorted(spec.fields) == ["a", "b", "c", "class", "d", "e", "f"] and spec.required == {"a"}
    walk, _src = model_walker(spec)
    assert walk({"a": "xy", "c": ["u", "vw"], "class": None}) == (5, 1 + 2 + 1 + 3 + 5)
    for bad in ({"b": 1}, {"a": "x", "k": None}, {"a": "x", "e": 1}, {"a": "x", "d": "r"}, {"a": "x", "f": 0},
                {"a": "x", "z": 1}, {"a": _S("x")}, {_S("a"): "x"}, {"a": "x", "e": math.nan}):
        with pytest.raises(Unproven):
            walk(bad)


def test_two_policies_judged_in_turn_each_get_their_own_rules():
    """The rules of an action type are kept for the policy last judged under: alternating
    engines (a reload, two stores) rebuild them, never read another policy's."""
    other = policy_engine.load(str(ROOT / "policies"))
    d = other.evaluate({"workflow": "refunds", "type": "issue_refund", "id": "rf-1", "order_id": "o-1",
                        "amount": 2000.0, "currency": "EUR", "reason": "damaged_item", "payee_account_id": "acct-9",
                        "order": {"total": 5000.0, "refunded_amount": 0.0, "customer_account_id": "acct-9"}},
                       now="2026-03-02T10:00:00Z")
    rec = json.loads(d.to_json())
    assert rec["effect"] == "require_approval" and A.decision_view(rec) is not None
    for _ in range(3):
        for eng, r in ((other, rec), (ENGINE, PENDING[0]), (ENGINE, rec), (other, PENDING[0])):
            apps = _fill(r)
            fast = eng.authorize_action(r, apps, NOW)
            assert fast == A.authorize_action_reference(eng._p, r, apps, NOW)
            assert fast.satisfied == ((eng is other) == (r is rec))  # (only under its own policy)
