"""The generated fast path of policy_engine.cel against the closures (the reference).

Contract (see the docstring of policy_engine/cel/codegen.py): whenever the generated ``fast(a)``
returns, its value is exactly the closures' value (same type, same value, NaN-aware);
otherwise it raises and ``CompiledExpr.__call__`` evaluates the closures. So
``CompiledExpr.__call__`` must always equal the closures alone, errors included.
"""

from __future__ import annotations

import json
import math
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from depth import examples
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from policy_engine.cel import CelCompileError, CelError, CelType, CelUint, Limits, compile_cel

ROOT = Path(__file__).parents[1]
REALISTIC = (
    'action.type == "send_customer_reply" && size(action.claims.filter(c, !c.sourced)) > 0 '
    "&& action.amount < 500.0"
)
_RAISED = object()


def same(a: Any, b: Any) -> bool:
    """Type-exact, NaN-aware equality (bool is not int, int is not float, 1 is not 1u)."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return (a != a and b != b) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return len(a) == len(b) and all(
            any(type(k2) is type(k) and k2 == k and same(v, b[k2]) for k2 in b) for k, v in a.items()
        )
    if type(a) is CelError:
        return a.message == b.message and a.budget == b.budget
    return a == b


def run(e: Any, act: Any) -> tuple[bool, Any]:
    """(fast path returned, its value); checks the contract for this input."""
    slow = e._slow(act)
    fast = e._fast_fn()
    got: Any = _RAISED
    if fast is not None:
        try:
            got = fast(act)
        except Exception:  # falling back is always allowed
            got = _RAISED
        if got is not _RAISED:
            assert not isinstance(slow, CelError), (e.source, act, got, slow)
            assert same(got, slow), (e.source, act, got, slow)
    combined = e(act)
    assert same(combined, slow), (e.source, act, combined, slow)
    return got is not _RAISED, got


# -- strategies ---------------------------------------------------------------------

INTS = [0, 1, -1, 2, 3, 20, 500, 2**53 + 1, 2**63 - 1, -(2**63), 2**63, 2**64, -(2**64) - 5]
FLOATS = [0.0, -0.0, 0.5, 1.5, 2.0, 500.0, 499.99, float(2**53), 9.223372036854776e18, 1e308,
          math.inf, -math.inf, math.nan]
STRS = ["", "a", "ab", "abc", "send_customer_reply", "#ad", "x@competitor", "é", "a'b\"c\\"]

scalars = st.one_of(
    st.none(), st.booleans(), st.sampled_from(INTS), st.integers(-(2**65), 2**65),
    st.sampled_from(FLOATS), st.floats(), st.sampled_from(STRS), st.text("ab'", max_size=3),
    st.binary(max_size=2), st.just(CelUint(3)), st.just(CelUint(0)),
    st.just(datetime(2024, 1, 1, tzinfo=UTC)), st.just(timedelta(seconds=90)),
)
KEYS = ["a", "b", "tier", "sourced", "type", "amount", "kind"]
values = st.recursive(
    scalars,
    lambda sub: st.one_of(
        st.lists(sub, max_size=4),
        st.lists(sub, max_size=3).map(tuple),
        st.dictionaries(st.sampled_from(KEYS), sub, max_size=4),
    ),
    max_leaves=10,
)
claims = st.lists(
    st.one_of(st.fixed_dictionaries({}, optional={"sourced": st.one_of(st.booleans(), values),
                                                  "kind": st.sampled_from(["promise", "fact"]),
                                                  "a": values}), values),
    max_size=4,
)
actions = st.fixed_dictionaries(
    {},
    optional={
        "type": st.one_of(st.sampled_from(["send_customer_reply", "other"]), values),
        "amount": st.one_of(st.sampled_from(INTS + FLOATS), values),
        "customer": st.one_of(st.fixed_dictionaries({}, optional={"tier": values}), values),
        "claims": st.one_of(claims, values),
        "tags": st.one_of(st.lists(st.sampled_from(STRS), max_size=4), values),
        "a": values,
    },
)
activations = st.fixed_dictionaries(
    {},
    optional={
        "action": st.one_of(actions, actions, values),
        "x": values, "y": values, "n": st.one_of(st.sampled_from(INTS + FLOATS), values),
        "action.amount": values,  # a qualified name shadows the select chain
    },
)

ATOMS = [
    "x", "y", "n", "v", "z", "action", "action.amount", "action.type", "action.customer.tier",
    "action.claims", "action.tags", "action.missing", "missing", "v.a", "v.sourced", "z.a",
    "policy.limit", "policy.names", "policy.nums", "policy.nested.k", "policy.unknown",
    "0", "1", "-1", "2", "500", "9223372036854775807", "-9223372036854775808", "1u", "0.0", "-0.0",
    "1.5", "500.0", "1e308", "0.0/0.0", "1.0/0.0", "'a'", "'abc'", "''", "'a\\'b\\\"c\\\\'", "b'a'",
    "true", "false", "null", "[1, 2, 3]", "['a', 'b']", "[1, 2.0, 'a', true, null]", "[]",
    "{'a': 1}", "int", "has(action.customer)", "has(action.customer.tier)", "has(v.a)", "has(x.a)",
]
BINOPS = ["==", "!=", "<", "<=", ">", ">=", "&&", "||", "+", "-", "*", "/", "%", "in"]
MACROS = ["exists", "all", "exists_one", "filter", "map"]
CONSTANTS = {"policy": {"limit": 500.0, "names": ["a", "abc"], "nums": [1, 2.5], "nested": {"k": 3}}}


def _extend(sub: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(
        st.tuples(sub, st.sampled_from(BINOPS), sub).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        sub.map(lambda e: f"!{e}"),
        sub.map(lambda e: f"!!({e})"),
        sub.map(lambda e: f"-({e})"),
        st.tuples(sub, sub, sub).map(lambda t: f"({t[0]} ? {t[1]} : {t[2]})"),
        sub.map(lambda e: f"size({e})"),
        sub.map(lambda e: f"({e}).size()"),
        st.tuples(sub, st.sampled_from(["contains", "startsWith", "endsWith"]), sub).map(
            lambda t: f"({t[0]}).{t[1]}({t[2]})"
        ),
        sub.map(lambda e: f"({e}).matches('^a+b?$')"),
        st.tuples(sub, sub).map(lambda t: f"({t[0]})[{t[1]}]"),
        st.tuples(sub, sub).map(lambda t: f"({t[0]}).a"),
        st.tuples(st.sampled_from(MACROS), sub, sub).map(lambda t: f"({t[1]}).{t[0]}(v, {t[2]})"),
        st.tuples(sub, sub, sub).map(lambda t: f"({t[0]}).map(v, {t[1]}, {t[2]})"),
        st.tuples(sub, sub).map(lambda t: f"cel.bind(z, {t[0]}, {t[1]})"),
        st.lists(sub, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.tuples(sub, sub).map(lambda t: f"int({t[0]}) + {t[1]}"),
    )


expressions = st.recursive(st.sampled_from(ATOMS), _extend, max_leaves=10)


# A typed grammar: mostly well-typed expressions, so that the fast path returns often; the
# activations are plausible most of the time and adversarial otherwise.


def _typed() -> dict[str, st.SearchStrategy]:
    lit_num = st.sampled_from(["0", "1", "2", "-1", "20", "500", "0.0", "0.5", "1.5", "500.0",
                               "9223372036854775807", "1e308", "policy.limit", "policy.nested.k"])
    lit_str = st.sampled_from(["''", "'a'", "'ab'", "'#ad'", "'send_customer_reply'", "'a\\'b'"])
    num_atoms = st.one_of(lit_num, st.sampled_from(["n", "x", "action.amount", "v.a"]))
    str_atoms = st.one_of(lit_str, st.sampled_from(["s", "action.type", "v.kind", "z"]))
    list_atoms = st.sampled_from(["xs", "action.tags", "action.claims", "policy.names", "policy.nums",
                                  "[1, 2.5, 3]", "['a', 'b']", "[]"])
    bool_atoms = st.sampled_from(["b", "true", "false", "v.sourced", "has(action.customer)",
                                  "has(v.a)", "action.customer.vip"])

    def nums(sub_n: Any, sub_b: Any, sub_s: Any, sub_l: Any) -> Any:
        return st.one_of(
            num_atoms,
            st.tuples(sub_n, st.sampled_from(["+", "-", "*", "/", "%"]), sub_n).map(
                lambda t: f"({t[0]} {t[1]} {t[2]})"
            ),
            sub_n.map(lambda e: f"-({e})"),
            st.tuples(sub_b, sub_n, sub_n).map(lambda t: f"({t[0]} ? {t[1]} : {t[2]})"),
            sub_s.map(lambda e: f"size({e})"),
            sub_l.map(lambda e: f"({e}).size()"),
        )

    n = st.deferred(lambda: nums(n, b, s, lst))
    s = st.deferred(
        lambda: st.one_of(
            str_atoms,
            str_atoms,
            st.tuples(b, s, s).map(lambda t: f"({t[0]} ? {t[1]} : {t[2]})"),
        )
    )
    lst = st.deferred(
        lambda: st.one_of(
            list_atoms,
            list_atoms,
            st.lists(n, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
            st.tuples(lst, b).map(lambda t: f"({t[0]}).filter(v, {t[1]})"),
            st.tuples(lst, n).map(lambda t: f"({t[0]}).map(v, {t[1]})"),
            st.tuples(lst, b, s).map(lambda t: f"({t[0]}).map(v, {t[1]}, {t[2]})"),
        )
    )
    b = st.deferred(
        lambda: st.one_of(
            bool_atoms,
            bool_atoms,
            st.tuples(n, st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), n).map(
                lambda t: f"({t[0]} {t[1]} {t[2]})"
            ),
            st.tuples(s, st.sampled_from(["==", "!="]), s).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
            st.tuples(st.one_of(s, n), lst).map(lambda t: f"({t[0]} in {t[1]})"),
            st.tuples(b, st.sampled_from(["&&", "||"]), b).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
            b.map(lambda e: f"!{e}"),
            st.tuples(s, st.sampled_from(["contains", "startsWith", "endsWith"]), s).map(
                lambda t: f"{t[0]}.{t[1]}({t[2]})"
            ),
            s.map(lambda e: f"({e}).matches('^a+b?$')"),
            st.tuples(lst, st.sampled_from(["exists", "all", "exists_one"]), b).map(
                lambda t: f"({t[0]}).{t[1]}(v, {t[2]})"
            ),
            st.tuples(b, b, b).map(lambda t: f"({t[0]} ? {t[1]} : {t[2]})"),
            st.tuples(s, b).map(lambda t: f"cel.bind(z, {t[0]}, {t[1]})"),
        )
    )
    return {"num": n, "str": s, "list": lst, "bool": b}


TYPED = _typed()
typed_expressions = st.one_of(TYPED["bool"], TYPED["bool"], TYPED["num"], TYPED["list"], TYPED["str"])
plain_num = st.one_of(st.sampled_from(INTS + FLOATS), st.integers(-(2**64), 2**64), st.floats())
plain_str = st.one_of(st.sampled_from(STRS), st.text("ab#'", max_size=4))


def _maybe(s: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(s, s, s, s, values)


plain_claim = st.fixed_dictionaries(
    {"sourced": _maybe(st.booleans()), "kind": _maybe(plain_str), "a": _maybe(plain_num)}
)
plain_activations = st.fixed_dictionaries(
    {
        "n": _maybe(plain_num),
        "x": _maybe(plain_num),
        "s": _maybe(plain_str),
        "b": _maybe(st.booleans()),
        "xs": _maybe(st.lists(st.one_of(plain_num, plain_claim), max_size=4)),
        "action": _maybe(
            st.fixed_dictionaries(
                {
                    "amount": _maybe(plain_num),
                    "type": _maybe(plain_str),
                    "tags": _maybe(st.lists(plain_str, max_size=4)),
                    "claims": _maybe(st.lists(plain_claim, max_size=4)),
                    "customer": _maybe(st.fixed_dictionaries({}, optional={"vip": st.booleans()})),
                }
            )
        ),
    }
)


def _compile(src: str, constants: bool) -> Any:
    try:
        return compile_cel(src, constants=CONSTANTS if constants else None)
    except CelCompileError:
        assume(False)


# -- the differential tests ---------------------------------------------------------


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(src=expressions, act=activations, constants=st.booleans())
def test_fast_path_equals_closures_on_random_expressions(src: str, act: dict, constants: bool) -> None:
    run(_compile(src, constants), act)


@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(src=typed_expressions, act=plain_activations)
def test_fast_path_equals_closures_on_typed_expressions(src: str, act: dict) -> None:
    run(_compile(src, True), act)


SUBSET = [
    REALISTIC,
    "action.amount > 100.0",
    "action.amount <= 100",
    "action.amount == 120",
    "action.amount != 1.5",
    "action.amount + 1.5 > x",
    "action.amount * 2 < 1000",
    "action.amount - 1 >= 0",
    "x / y > 1",
    "x % 3 == 1",
    "-x < 0",
    "action.type == 'send_customer_reply'",
    "action.type != 'a'",
    "action.type in ['send_customer_reply', 'other']",
    "action.type in policy.names",
    "action.amount in policy.nums",
    "x in [1, 2.0, 'a']",
    "x in action.tags",
    "'a' in action.tags",
    "x == y",
    "x != y",
    "x < y",
    "x >= y",
    "x == null",
    "x == true",
    "x != false",
    "!x",
    "x ? y : n",
    "x && y",
    "x || y",
    "x && y || !n",
    "size(action.tags) > 2",
    "action.tags.size() == 0",
    "size(x)",
    "has(action.customer)",
    "has(action.customer.tier)",
    "action.customer.tier == 'gold'",
    "x.contains(y)",
    "x.startsWith('a')",
    "x.endsWith(y)",
    "x.matches('^a+b?$')",
    "action.claims.exists(c, !c.sourced)",
    "action.claims.all(c, c.sourced)",
    "action.claims.exists_one(c, c.kind == 'promise')",
    "action.claims.filter(c, c.sourced)",
    "action.claims.map(c, c.kind)",
    "action.claims.map(c, c.sourced, c.kind)",
    "action.tags.exists(t, t.startsWith('#ad'))",
    "action.tags.filter(t, size(t) > 1).size() >= 2",
    "action.claims.exists(c, action.tags.exists(t, t == c.kind))",
    "cel.bind(z, action.amount, z > 1.0 && z < 1000.0)",
    "[x, y, n]",
    "x[0]",
    "x['a']",
    "policy.limit < action.amount",
    "action.amount > policy.limit",
    "policy.nested.k == 3",
    "timestamp('2024-01-01T00:00:00Z') > x",
    "int(x) + 1",
    "double(x) > 1.5",
    "string(x) == '1'",
]


@pytest.mark.parametrize("src", SUBSET)
def test_every_subset_expression_has_a_fast_path(src: str) -> None:
    assert compile_cel(src, constants=CONSTANTS)._fast_fn() is not None, src


@settings(max_examples=300, deadline=None)
@given(src=st.sampled_from(SUBSET), act=activations)
def test_fast_path_equals_closures_on_subset_expressions(src: str, act: dict) -> None:
    run(compile_cel(src, constants=CONSTANTS), act)


@pytest.mark.parametrize(
    "src,act,want",
    [
        ("action.amount > 100.0", {"action": {"amount": 120}}, True),
        ("action.amount > 100.0", {"action": {"amount": 99.5}}, False),
        ("action.amount == 120", {"action": {"amount": 120.0}}, True),
        ("x == y", {"x": 1, "y": 1.0}, True),
        ("x == y", {"x": 1, "y": True}, False),
        ("x == 1", {"x": True}, False),
        ("x in [1, 2]", {"x": True}, False),
        ("x in ['a']", {"x": "a"}, True),
        ("x + y", {"x": 2**62, "y": 2**62 - 1}, 2**63 - 1),
        ("x + y", {"x": 1.5, "y": 1}, 2.5),
        ("x < 500.0", {"x": 2**53 + 1}, False),
        ("x > 9007199254740992.0", {"x": 2**53 + 1}, False),  # compared as double, like the closures
        ("x == x", {"x": math.nan}, False),
        ("x != x", {"x": math.nan}, True),
        ("x < y", {"x": math.nan, "y": 1.0}, False),
        ("size(x)", {"x": "é€"}, 2),
        ("x.map(v, v * 2)", {"x": [1, 2]}, [2, 4]),
        ("x.map(v, v > 1, v * 2.0)", {"x": [1.0, 2.0]}, [4.0]),
        ("x.filter(v, v.a)", {"x": [{"a": True}, {"a": False}]}, [{"a": True}]),
        ("x.exists_one(v, v == 'a')", {"x": ["a", "b"]}, True),
        ("x ? 1 : 2.0", {"x": False}, 2.0),
        ("has(x.a) && x.a", {"x": {}}, False),
        (
            REALISTIC,
            {
                "action": {
                    "type": "send_customer_reply",
                    "amount": 120,
                    "claims": [{"sourced": True}, {"sourced": False}],
                }
            },
            True,
        ),
    ],
)
def test_fast_path_returns_the_exact_value_on_normal_inputs(src: str, act: dict, want: Any) -> None:
    ok, got = run(compile_cel(src), act)
    assert ok, f"fast path fell back for {src!r} on {act!r}"
    assert same(got, want)


@pytest.mark.parametrize(
    "src,act",
    [
        ("x == 1", {"x": CelUint(1)}),  # uint: closures
        ("x > 1", {"x": True}),  # CEL: no overload (bool is not a number)
        ("x < 500.0", {"x": True}),
        ("x == 'a'", {"x": type("S", (str,), {})("a")}),  # str subclass: closures
        ("x.a", {"x": {"b": 1}}),  # missing key
        ("x.a", {"x": type("M", (), {"__getitem__": lambda s, k: 1})()}),  # not a Mapping
        ("missing", {}),
        ("x && y", {"x": 1, "y": False}),  # CEL: false (error absorbed)
        ("x || y", {"x": "a", "y": True}),  # CEL: true
        ("x.exists(v, v.a)", {"x": [{"b": 1}, {"a": True}]}),  # CEL: true (error absorbed)
        ("x.all(v, v > 0)", {"x": [1, "a", 0]}),  # CEL: false
        ("x + y", {"x": 2**63 - 1, "y": 1}),  # overflow
        ("x * y", {"x": 2**62, "y": 4}),
        ("-x", {"x": -(2**63)}),
        ("x / y", {"x": 1, "y": 0}),
        ("x % y", {"x": 1, "y": 0}),
        ("x.size() > 0", {"x": list(range(5000))}),  # long lists: closures
        ("x.exists(v, v > 4999)", {"x": list(range(5000))}),
        ("x.a > 1", {"x.a": 5, "x": {"a": 0}}),  # qualified name wins
        ("action.amount > 1", {"action.amount": 5, "action": {"amount": 0}}),
        ("x.matches('a+')", {"x": 5}),
        ("x ? 1 : 2", {"x": None}),
    ],
)
def test_unusual_inputs_fall_back_and_match_the_closures(src: str, act: dict) -> None:
    run(compile_cel(src), act)


def test_iteration_budget_is_still_enforced() -> None:
    e = compile_cel("x.exists(a, x.exists(b, a + b < 0))", limits=Limits(max_iterations=50))
    ok, _ = run(e, {"x": list(range(20))})
    assert not ok
    got = e({"x": list(range(20))})
    assert isinstance(got, CelError) and got.budget == "max_iterations"
    ok, got = run(e, {"x": list(range(5))})  # 5 + 5*5 = 30 iterations: within the budget
    assert ok and got is False


def test_generated_source_only_holds_generated_names_and_reprs() -> None:
    nasty = "'); import os; os.system('x'); ('"
    e = compile_cel(f"x == {json.dumps(nasty)} || x.startsWith({json.dumps(nasty)}) || x in [{json.dumps(nasty)}]")
    fast = e._fast_fn()
    assert fast is not None
    assert "import" not in e._fast_source.replace(repr(nasty), "")
    assert fast.__globals__["__builtins__"] == {}
    assert run(e, {"x": nasty}) == (True, True)
    # values that have no literal form are bound by name, never pasted
    e = compile_cel(
        "x == policy.t && y < policy.big",
        constants={"policy": {"t": datetime(2024, 1, 1, tzinfo=UTC), "big": CelUint(5)}},
    )
    assert e._fast_fn() is not None
    assert "datetime" not in e._fast_source and "5u" not in e._fast_source


def test_realistic_condition_uses_the_fast_path() -> None:
    e = compile_cel(REALISTIC)
    act = {
        "action": {
            "type": "send_customer_reply",
            "amount": 120.5,
            "claims": [{"sourced": True}, {"sourced": False}, {"sourced": True}],
        }
    }
    for _ in range(3):  # built on the second call
        assert e(act) is True
    assert e._fast is not None
    assert e._fast(act) is True  # returns, no fallback


def test_fast_path_is_built_lazily() -> None:
    e = compile_cel("x > 1")
    assert e._fast is None
    e({"x": 2})
    assert e._fast is None
    e({"x": 2})
    assert e._fast is not None


def test_outside_the_subset_there_is_no_fast_path() -> None:
    for src in ["{'a': x}", "x.all(i, v, v > i)", "f(x)", "[1].transformList(i, v, v)"]:
        e = compile_cel(src)
        assert e._fast_fn() is None, src
        assert e({"x": 1}) == compile_cel(src, accelerate=False)({"x": 1})


def _conditions(engine: Any) -> list:
    from collections.abc import Mapping

    from policy_engine.cel import CompiledExpr

    seen: dict[int, Any] = {}

    def walk(o: Any, depth: int) -> None:
        if depth > 14 or o is None or isinstance(o, (str, bytes, int, float)):
            return
        if isinstance(o, CompiledExpr):
            seen[id(o)] = o
        elif isinstance(o, Mapping):
            for v in o.values():
                walk(v, depth + 1)
        elif isinstance(o, (list, tuple)):
            for v in o:
                walk(v, depth + 1)
        elif type(o).__module__ == "policy_engine.compiled":
            for k in getattr(o, "__slots__", ()):
                walk(getattr(o, k, None), depth + 1)

    walk(engine.compiled, 0)
    return list(seen.values())


@pytest.mark.parametrize("path", ["policies", "benchmarks/policies"])
def test_shipped_policy_conditions_have_a_fast_path(path: str) -> None:
    import policy_engine

    conds = _conditions(policy_engine.load(str(ROOT / path)))
    assert conds
    fast = [e for e in conds if e._fast_fn() is not None]
    frac = len(fast) / len(conds)
    print(f"{path}: {len(fast)}/{len(conds)} conditions have a fast path ({frac:.0%})")
    assert frac >= 0.95, [e.source for e in conds if e._fast is None]


def test_benchmark_mix_is_decided_by_the_fast_path() -> None:
    """Every condition evaluate() runs over the benchmark mix: the fast path returns, exactly."""
    import policy_engine

    sys.path.insert(0, str(ROOT))
    from benchmarks.requests import make_mix

    p = policy_engine.load(str(ROOT / "benchmarks/policies")).compiled
    total = returned = 0
    for a, _s, n in make_mix(200):
        wf = p.workflows[a["workflow"]]
        ca = wf.actions.get(a["type"])
        act = {"action": a, "workflow": wf.running_state, "now": n, "policy": wf.policy}
        fns = [st.fn for st in wf.stops if st.fn is not None] + ([r.fn for r in ca.rules] if ca else [])
        for e in fns:
            total += 1
            ok, _ = run(e, act)
            returned += ok
    print(f"benchmark mix: the fast path returned for {returned}/{total} condition evaluations")
    assert returned / total >= 0.95


def test_cel_type_and_timestamp_values_pass_through() -> None:
    e = compile_cel("type(x) == int ? x : 0")
    assert run(e, {"x": 5}) == (True, 5)
    e = compile_cel("x > timestamp('2024-01-01T00:00:00Z')")
    ok, got = run(e, {"x": datetime(2025, 1, 1, tzinfo=UTC)})
    assert ok and got is True
    assert same(CelType("int"), CelType("int"))


# -- the public switch: accelerate=False is the reference, and both ways agree ---------------


def test_accelerate_false_builds_no_generated_code() -> None:
    e = compile_cel(REALISTIC, accelerate=False)
    act = {"action": {"type": "send_customer_reply", "amount": 120.5, "claims": [{"sourced": False}]}}
    for _ in range(5):
        assert e(act) is True
    assert e._fast is None and e._fast_fn() is None and e._fast_source is None
    # fuse calls such an expression as itself: its generated source holds no code of its own
    from policy_engine.cel import fuse

    fn, src = fuse([e], ["action"])
    assert fn is not None and src is not None and "_act" in src and "send_customer_reply" not in src
    assert fn(act["action"]) == 1
    # the same source accelerated does generate code, and gives the same value
    f = compile_cel(REALISTIC)
    for _ in range(3):
        assert f(act) is True
    assert f._fast is not None


def _accelerated(src: str, act: Any, **kw: Any) -> Any:
    """The value with the fast path (built and used: the third call), after checking the
    reference (accelerate=False) gives exactly the same."""
    fast = compile_cel(src, **kw)
    ref = compile_cel(src, accelerate=False, **kw)
    want = ref(act)
    for _ in range(3):
        got = fast(act)
        assert same(got, want), (src, act, got, want)
    return want


def test_conformance_corpus_same_with_and_without_acceleration() -> None:
    """Every plain conformance case: accelerate=True and accelerate=False give identical results."""
    from shared_data import CEL_CONFORMANCE, require

    conf_dir = require(CEL_CONFORMANCE)  # (skips, or fails under STOPLINE_REQUIRE_SHARED=1)
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from test_cel_conformance import Skip, convert, is_plain
    finally:
        sys.path.pop(0)
    n = accelerated = 0
    for path in sorted(conf_dir.glob("*.json")):
        for section in json.loads(path.read_text()).get("section", []):
            for t in section.get("test", []):
                if not is_plain(t) or t.get("check_only"):
                    continue
                try:
                    act = {k: convert(v["value"]) for k, v in t.get("bindings", {}).items()}
                    e = compile_cel(t["expr"])
                except (Skip, CelCompileError):
                    continue
                _accelerated(t["expr"], act)
                n += 1
                accelerated += e._fast_fn() is not None
    print(f"conformance: {n} cases the same both ways, {accelerated} of them with a fast path")
    assert n > 1000 and accelerated > 500
