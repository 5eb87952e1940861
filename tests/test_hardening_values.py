"""Issue 12, the value and status half: ways a caller could widen a decision with the
values it passes, closed on every path (the closures, the generated CEL fast path, the
fused gate and its shape speculation).

- item 1: `may_resume` never evaluates criteria on a stand-in for bad evidence, and any
  input error (evidence, an unreadable `stopped_at`) means not allowed;
- items 4 and 8: a value that is not JSON-like (an object with its own `__eq__`) or a
  subclass of str/int/float (a StrEnum, an IntEnum) is an input error for the engine; in
  the CEL module `==` and `in` agree on them (a subclass as its plain value, any other
  object an error, never a match);
- item 9: a workflow status that is not exactly the str `running` or `stopped` is denied;
- items 6 and 7: the policy hash sorts only what the policy model defines as unordered;
- item 16: a fixture suite without `now` is a located error; a `now` the engine refuses
  is refused when the suite loads.
"""

from __future__ import annotations

import json
import math
from enum import IntEnum, StrEnum
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import policy_engine
from policy_engine.cel import CelError, compile_cel
from policy_engine.engine import Engine, check_size
from policy_engine.language.loader import load_paths, load_text
from policy_engine.testing import load_suite

ROOT = Path(__file__).resolve().parent.parent
NOW = "2026-11-24T10:00:00Z"


class Domain(StrEnum):
    COMPETITOR = "competitor.example"
    CUSTOMER = "customer.example"


class Tier(StrEnum):
    ENTERPRISE = "enterprise"


class Count(IntEnum):
    ONE = 1


class Plain(str):
    """A str subclass that changes nothing but its type."""


class Sneaky(str):
    """A str subclass whose own methods lie."""

    def __str__(self) -> str:
        return "customer.example"

    def __eq__(self, other: object) -> bool:
        return True

    def __ne__(self, other: object) -> bool:
        return False

    __hash__ = str.__hash__


class EqualsAll:
    """Not JSON-like: equal to everything."""

    def __eq__(self, other: object) -> bool:
        return True

    def __ne__(self, other: object) -> bool:
        return False

    __hash__ = object.__hash__


class EqualsNothing:
    """Not JSON-like: `==` and `!=` both false."""

    def __eq__(self, other: object) -> bool:
        return False

    def __ne__(self, other: object) -> bool:
        return False

    __hash__ = object.__hash__


def dump(model) -> str:
    return json.dumps(model.model_dump(mode="json"), sort_keys=True)


_REF: list = []
_HOT: dict = {}


def fresh() -> Engine:
    """The reference path on the shipped policies: lanes never built, and CEL conditions
    evaluated by their closures alone (no generated fast path)."""
    if not _REF:
        result = load_paths([str(ROOT / "policies")], accelerate=False)
        assert all(expr._fast_fn() is None for expr in result.compiled.values())  # no generated fast path
        e = Engine.from_load_result(result, accelerate=False)
        _REF.append(e)
    return _REF[0]


def warm(action: dict, keep: bool = False) -> Engine:
    """A shipped-policies engine whose lane for the action's type and whose CEL fast
    paths are built, from plain actions of the same shape (`keep`: one per shape, shared
    by the examples of a property, its lanes widening as they go)."""
    key = json.dumps(action, sort_keys=True)
    if keep and key in _HOT:
        return _HOT[key]
    e = policy_engine.load(ROOT / "policies")
    for _ in range(12):
        e.evaluate(action, now=NOW)
    lane = e.accelerator.gate(action["workflow"], action["type"])
    assert lane.fn is not None
    if keep:
        _HOT[key] = e
    return e


def reply(**over) -> dict:
    a = {"workflow": "support-replies", "type": "send_customer_reply", "id": "r-1",
         "recipient": {"email": "dana@customer.example", "domain": "customer.example"},
         "customer": {"tier": "standard"}, "confidence": 0.96,
         "claims": [{"kind": "how_to", "text": "Reset the token", "sourced": True}]}
    a.update(over)
    return a


def input_errors(d) -> list[str]:
    return [e.message for e in d.errors if e.kind == "input"]


# ----------------------------------------------------------------------------- items 4, 8: the gate


@pytest.mark.parametrize("domain", [Domain.COMPETITOR, Plain("competitor.example"), Sneaky("press.example"),
                                    EqualsAll()], ids=["StrEnum", "str-subclass", "lying-str", "equals-all"])
def test_a_value_that_is_not_plain_json_never_evades_a_deny_rule(domain):
    """A StrEnum equal to a blocked domain got `allow routine_reply` (`in` ignored it while
    `==` accepted it); now it is an input error, on the full path and in a warmed lane."""
    plain = reply(recipient={"email": "x@competitor.example", "domain": "competitor.example"})
    assert fresh().evaluate(plain, now=NOW).deciding.name == "blocked_recipient_domain"
    action = reply(recipient={"email": "x@competitor.example", "domain": domain})
    for engine in (fresh(), warm(reply())):
        d = engine.evaluate(action, now=NOW)
        assert d.effect == "deny" and d.deciding.name == "invalid input", dump(d)
        assert any("subclass" in m or "JSON-like" in m for m in input_errors(d)), d.errors


@pytest.mark.parametrize("field, value", [
    ("customer", {"tier": Tier.ENTERPRISE}),  # `in policy.escalated_tiers`: require_approval
    ("customer", {"tier": EqualsAll()}),
    ("confidence", Count.ONE),  # an IntEnum
    ("claims", [{"kind": "how_to", "text": "t", "sourced": True, "x": EqualsNothing()}]),
    ("recipient", {Plain("domain"): "customer.example", "email": "d@customer.example"}),  # a subclass key
])
def test_subclasses_and_objects_in_read_fields_are_input_errors_on_every_path(field, value):
    action = reply(**{field: value})
    for engine in (fresh(), warm(reply())):
        d = engine.evaluate(action, now=NOW)
        assert d.effect == "deny" and input_errors(d), dump(d)


def test_a_subclass_in_a_field_no_condition_reads_changes_nothing():
    d1 = fresh().evaluate(reply(note=Plain("x"), extra=EqualsAll()), now=NOW)
    d2 = fresh().evaluate(reply(), now=NOW)
    assert d1.effect == d2.effect == "allow" and not d1.errors


def test_check_size_names_the_type_and_says_what_to_pass():
    assert "subclass of str" in check_size({"a": Domain.CUSTOMER}) and ".value" in check_size({"a": Domain.CUSTOMER})
    assert "JSON-like" in check_size({"a": EqualsAll()})
    assert "map key" in check_size({EqualsAll(): 1})
    assert check_size({"a": [1, 2.5, "x", None, True, {"b": (1,)}], 3: "int key"}) is None


class Real(float):
    pass


class Raw(bytes):
    pass


_KEYS_ARE = "map keys must be strings, ints or bools (JSON's object keys are strings, and a CEL map has keys"


# Regression: a plain float or bytes map key was called "a subclass of float" ("... pass the
# plain float"), though the plain float is refused as a key too.
@pytest.mark.parametrize("key, said", [
    (1.5, "input holds a float as a map key (type `float`): "),
    (b"k", "input holds bytes as a map key (type `bytes`): "),
    ((1, 2), "input holds a tuple as a map key (type `tuple`): "),
    (None, "input holds None as a map key (type `NoneType`): "),
    (Real(1.5), "input holds a map key of type `Real`, a subclass of float: "),
    (Raw(b"k"), "input holds a map key of type `Raw`, a subclass of bytes: "),
])
def test_a_map_key_of_no_key_kind_is_named_for_what_it_is(key, said):
    for where in ({key: "x"}, {"a": [{"b": {key: 1}}]}):
        msg = check_size(where)
        assert msg == said + _KEYS_ARE + " of no other kind)", msg
        assert "plain" not in msg and ".value" not in msg


@pytest.mark.parametrize("key, base", [(Plain("domain"), "str"), (Count.ONE, "int")])
def test_a_key_subclass_of_a_key_kind_is_told_to_pass_the_plain_value(key, base):
    msg = check_size({key: "x"})
    assert msg == (f"input holds a map key of type `{type(key).__name__}`, a subclass of {base}: subclasses are not "
                   f"accepted (pass the plain {base}, e.g. an enum member's `.value`)"), msg


# ----------------------------------------------------------------------------- items 4, 8: CEL


def _twice(expr, act):
    """The value on the first call (closures) and after the fast path is built."""
    first = expr(act)
    for _ in range(4):
        last = expr(act)
    assert expr._fast_fn() is not None
    return first, last


@pytest.mark.parametrize("value, eq, member", [
    (Plain("gold"), True, True), (Domain.CUSTOMER, False, False), (Tier.ENTERPRISE, False, False),
    (Plain("silver"), False, False), (Count.ONE, False, False),
])
def test_cel_in_and_eq_agree_for_str_subclasses(value, eq, member):
    """`x in ["gold", "platinum"]` and `x == "gold" || x == "platinum"` agree, closures and
    fast path alike (the fast path used to answer `in` false for any non-str)."""
    e_in = compile_cel('x in ["gold", "platinum"]')
    e_eq = compile_cel('x == "gold" || x == "platinum"')
    a = {"x": value}
    assert _twice(e_in, a) == (member, member)
    assert _twice(e_eq, a) == (eq, eq)


def test_cel_in_and_eq_agree_for_enum_members_equal_to_a_listed_value():
    for value, lst, one in ((Tier.ENTERPRISE, '["enterprise", "strategic"]', '"enterprise"'),
                            (Count.ONE, "[1, 2]", "1")):
        a = {"x": value}
        assert _twice(compile_cel(f"x in {lst}"), a) == (True, True)
        assert _twice(compile_cel(f"x == {one}"), a) == (True, True)
        assert _twice(compile_cel(f"x != {one}"), a) == (False, False)


@pytest.mark.parametrize("src", ['x == "gold"', 'x != "gold"', 'x in ["gold"]', "x == 1", "x in [1, 2]",
                                 "x == y", 'x in {"gold": 1}', '[x] == ["gold"]'])
def test_cel_a_non_cel_value_is_an_error_never_a_match(src):
    """An object whose `__eq__` answers true matched `action.tier == "gold"`."""
    e = compile_cel(src)
    for _ in range(4):
        for obj in (EqualsAll(), EqualsNothing()):
            assert isinstance(e({"x": obj, "y": EqualsAll()}), CelError), src


# ----------------------------------------------------------------------------- property: every path agrees

_odd_leaf = st.one_of(
    st.sampled_from(["competitor.example", "customer.example", "enterprise", "standard", "how_to", "timeline"]),
    st.sampled_from([Domain.COMPETITOR, Domain.CUSTOMER, Tier.ENTERPRISE, Count.ONE, Plain("enterprise"),
                     Plain("competitor.example"), Sneaky("x")]),
    st.builds(EqualsAll), st.builds(EqualsNothing),
    st.floats(allow_nan=False, allow_infinity=False), st.integers(-3, 3), st.booleans(), st.none(),
)
_odd_value = st.recursive(_odd_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.sampled_from(["domain", "tier", "kind", "sourced", "text", "email"]), inner, max_size=4)),
    max_leaves=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({}, optional={"recipient": _odd_value, "customer": _odd_value,
                                           "confidence": _odd_value, "claims": _odd_value}),
       st.sampled_from(["plain", "flat"]))
def test_every_path_decides_alike_on_subclasses_and_objects(fields, warmup):
    """The full path (closures, lanes never built) and a warmed engine (a fused gate
    speculating on the shapes it saw, generated CEL) give the same decision for actions
    holding subclasses and objects with their own `__eq__`; and never `allow` for one
    holding a value that is not plain JSON in a read field."""
    action = reply(**fields)
    ref = fresh().evaluate(action, now=NOW)
    seed = reply() if warmup == "plain" else reply(recipient={"domain": "customer.example"}, customer={"tier": "x"})
    hot = warm(seed, keep=True)
    for _ in range(2):
        got = hot.evaluate(action, now=NOW)
        assert dump(got) == dump(ref)
    plain = all(check_size({k: v}) is None for k, v in fields.items())
    if not plain:
        assert ref.effect == "deny" and input_errors(ref)


@settings(max_examples=200, deadline=None)
@given(_odd_leaf, st.sampled_from(['x == "enterprise"', 'x in ["enterprise", "strategic"]', "x == 1",
                                   "x in [1, 2]", 'x != "enterprise"', "x in {\"enterprise\": 1}"]))
def test_cel_closures_and_fast_path_agree_on_subclasses_and_objects(value, src):
    e = compile_cel(src)
    a = {"x": value}
    ref = e._slow(a)
    for _ in range(4):
        got = e(a)
        assert (isinstance(got, CelError) and isinstance(ref, CelError)) or got == ref, (src, value, got, ref)
    if isinstance(value, (EqualsAll, EqualsNothing)):
        assert isinstance(ref, CelError)


# ----------------------------------------------------------------------------- item 9: the status

@pytest.mark.parametrize("status", [EqualsNothing(), EqualsAll(), Plain("running"), "RUNNING", None, 1,
                                    ["running"]])
def test_a_status_that_is_not_exactly_running_or_stopped_is_denied(status):
    """An object whose `==` and `!=` both answer false was taken for running."""
    action = reply()
    for engine in (fresh(), warm(reply())):
        d = engine.evaluate(action, workflow_state={"name": "support-replies", "status": status}, now=NOW)
        assert d.effect == "deny" and input_errors(d), dump(d)
        ok = engine.evaluate(action, workflow_state={"name": "support-replies", "status": "running"}, now=NOW)
        assert ok.effect == "allow"


# ----------------------------------------------------------------------------- item 1: resume

RESUME_POLICY = """
roles [reviewer]
workflow "w" {
  version "1"
  owners { business "b" technical "t" }
  default deny
  action send {
    system "mail"
    allow when `true`
  }
  stop incident {
    when `action.type == "send" && action.bad == true`
    severity high
    owner "o"
    resume when { no_open_incidents: `!has(evidence.open_incidents)` }
  }
}
"""


def resume_engine() -> Engine:
    r = load_text(RESUME_POLICY, "w.policy")
    assert r.policy_set is not None
    return Engine.from_load_result(r)


@pytest.mark.parametrize("evidence", [
    {"open_incidents": [1], "x": math.nan}, {"open_incidents": [1], "x": math.inf},
    {"open_incidents": ["\ud800"]}, {"open_incidents": [1], "big": "x" * 4_000_001},
    {"open_incidents": [EqualsAll()]}, {"open_incidents": Plain("INC-1")}, "not an object",
], ids=["nan", "inf", "surrogate", "over-limit", "object", "subclass", "not-object"])
def test_resume_with_evidence_that_fails_the_input_check_is_not_allowed(evidence):
    """The evidence was replaced by `{}`, so `!has(evidence.open_incidents)` held and the
    workflow resumed with incidents open."""
    e = resume_engine()
    assert e.may_resume("w", "incident", {}, now=NOW).allowed  # the criterion itself can hold
    r = e.may_resume("w", "incident", evidence, now=NOW)
    assert not r.allowed
    assert r.unmet == ("no_open_incidents",) and r.criteria[0].reason.startswith("not evaluated")
    assert any(x.kind == "input" for x in r.errors)


def test_resume_with_an_unreadable_stopped_at_is_not_allowed():
    e = resume_engine()
    good = e.may_resume("w", {"stopped_by": "incident", "stopped_at": "2026-11-24T09:00:00Z"}, {}, now=NOW)
    assert good.allowed
    bad = e.may_resume("w", {"stopped_by": "incident", "stopped_at": "yesterday"}, {}, now=NOW)
    assert not bad.allowed and any("stopped_at" in x.message for x in bad.errors)
    state = e.may_resume({"name": "w", "status": "stopped"}, {"stopped_by": "incident", "stopped_at": 12}, {}, now=NOW)
    assert not state.allowed


# ----------------------------------------------------------------------------- items 6, 7: the hash

HASH_POLICY = """
roles [reviewer, manager]
workflow "w" {
  version "1"
  owners { business "b" technical "t" }
  default deny
  const tiers = TIERS
  action send {
    system "mail"
    reversible full via "mail.recall" within 1h
    RULES
  }
  rollback reviewer_error {
    route verification
    authorize 1 reviewer distinct from REFS
  }
}
"""
STRICT = '{"name": "strict", "limit": 10}'
LOOSE = '{"name": "loose", "limit": 1000}'
RULE_A = 'allow small when `action.amount <= policy.tiers[0].limit`'
RULE_B = 'deny big when `action.amount > 5000`'


def hash_engine(tiers=f"[{STRICT}, {LOOSE}]", rules=(RULE_A, RULE_B),
                refs="original.reviewer, request.requested_by") -> Engine:
    text = (HASH_POLICY.replace("TIERS", tiers).replace("RULES", "\n    ".join(rules)).replace("REFS", refs))
    r = load_text(text, "w.policy")
    assert r.policy_set is not None, [d.message for d in r.diagnostics]
    return Engine.from_load_result(r)


def test_reordering_a_constant_list_of_named_maps_changes_the_hash():
    """Both orders shared one hash although they decide differently."""
    a, b = hash_engine(), hash_engine(tiers=f"[{LOOSE}, {STRICT}]")
    action = {"workflow": "w", "type": "send", "amount": 100}
    assert a.evaluate(action, now=NOW).effect != b.evaluate(action, now=NOW).effect
    assert a.policy_hash != b.policy_hash


def test_reordering_what_the_model_defines_as_unordered_keeps_the_hash():
    base = hash_engine()
    assert hash_engine(refs="request.requested_by, original.reviewer").policy_hash == base.policy_hash  # item 7
    assert hash_engine(rules=(RULE_B, RULE_A)).policy_hash == base.policy_hash  # rules: precedence, then name
    assert hash_engine(refs="original.reviewer").policy_hash != base.policy_hash


# ----------------------------------------------------------------------------- item 16: suites pin `now`

SUITE = """policies: {policies}
{now}cases:
  - name: a reply
    gate:
      action: {{workflow: support-replies, type: send_customer_reply, id: x}}
    expect: {{effect: deny}}
  - name: another
    gate:
      action: {{workflow: support-replies, type: send_customer_reply, id: y}}
    expect: {{effect: deny}}
"""


def write_suite(tmp_path, now_line: str) -> Path:
    p = tmp_path / "s.policy-test.yaml"
    p.write_text(SUITE.format(policies=ROOT / "policies", now=now_line), encoding="utf-8")
    return p


def test_a_suite_without_now_is_a_located_error_saying_how_to_pin_it(tmp_path):
    s = load_suite(write_suite(tmp_path, ""))
    (d,) = [d for d in s.diagnostics if d.code == "T009"]
    assert d.severity == "error" and (d.span.line, d.span.col) == (3, 5)
    assert "wall clock" in d.message and "1 other case" in d.message and "now:" in d.help
    assert not load_suite(write_suite(tmp_path, f'now: "{NOW}"\n')).diagnostics


@pytest.mark.parametrize("now", ["2026-11-24T10:00", "2026-11-24T10:00:00", "2026-13-01T00:00:00Z", "soon"])
def test_a_now_the_engine_refuses_is_refused_when_the_suite_loads(tmp_path, now):
    """`2026-11-24T10:00` passed the suite check, then every case failed confusingly."""
    with pytest.raises(ValueError):
        policy_engine.engine.parse_ts(now)
    s = load_suite(write_suite(tmp_path, f'now: "{now}"\n'))
    assert [(d.code, d.span.line) for d in s.diagnostics] == [("T006", 2)]
