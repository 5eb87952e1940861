"""CEL optional values (cel-go's optional types): `optional.of/none/ofNonZeroValue`,
`.hasValue() .value() .orValue() .or()`, `optMap`/`optFlatMap`, the `x.?f` and `x[?k]`
selections and the optional entries of list and map literals (`[?o]`, `{?k: o}`), on the
closures and the fast path alike; every parser sees the same tree; misuse is located; a
policy gating on `action.?customer.?tier.orValue("free")` decides on both engines."""

from __future__ import annotations

from typing import Any

import pytest

import policy_engine
from policy_engine.cel import CelCompileError, CelError, CelType, compile_cel
from policy_engine.cel.codegen import generator_of
from policy_engine.cel.parse import _parse
from policy_engine.cel.rdparse import Unsupported, parse_subset
from policy_engine.cel.typecheck import typecheck
from policy_engine.fieldtypes import FField, FType
from policy_engine.language.loader import load_text

ACT = {"action": {"customer": {"tier": "gold", "tags": ["a", "b"]}, "n": 0, "m": {"k": 1, "z": ""}},
       "bare": {"id": "x"}}
OPT = CelType("optional_type")

CASES = [
    # the functions
    ("optional.of(null).hasValue()", True),
    ("optional.ofNonZeroValue(0).hasValue() || optional.ofNonZeroValue('').hasValue()", False),
    ("optional.ofNonZeroValue([1]).value()", [1]),
    ("optional.none().orValue(42)", 42),
    ("optional.none().or(optional.of(2)).value()", 2),
    ("optional.of(1).or(optional.of(2)).value()", 1),
    ("optional.of(1).orValue(1 / 0)", 1),  # the alternative is evaluated only when needed
    ("optional.none().value()", CelError),
    ("type(optional.none()) == optional_type", True),
    ("type(optional.of(1))", OPT),
    ("optional.of(1) == optional.of(1) && optional.none() != optional.of(1)", True),
    ("optional.of(1) == 1", False),  # (a check finding: see below)
    ("optional.of(2).optMap(x, x * 10).value()", 20),
    ("optional.none().optMap(x, x * 10).hasValue()", False),
    ("optional.of({'a': 1}).optFlatMap(m, m.?a).value()", 1),
    # `.?` and `[?`
    ('action.?customer.?tier.orValue("free")', "gold"),
    ('bare.?customer.?tier.orValue("free")', "free"),
    ("action.?customer.tier.value()", "gold"),  # a select on an optional selects in what it holds
    ("action.?nothing.tier.hasValue()", False),
    ("action.customer.tags[?1].value()", "b"),
    ("action.customer.tags[?2].hasValue()", False),
    ("action.m[?'k'].value() + action.m[?'nope'].orValue(10)", 11),
    ("has(action.?customer.tier) && !has(action.?nothing.tier)", True),
    ("action.?n.hasValue()", True),
    ("action.n.?x", CelError),  # `.?` of an int: no field selection
    ("action.?m.?k.or(action.?m.?z).value()", 1),
    # optional entries
    ("[1, ?optional.none(), ?action.?m.?k, ?action.?nothing]", [1, 1]),
    ("{'a': 1, ?'b': action.?m.?k, ?'c': optional.none()}", {"a": 1, "b": 1}),
    ("[?1]", CelError),  # an optional entry takes an optional
    ("has({?'foo': optional.none()}.foo)", False),
    # `?` of the ternary, in strings: untouched
    ("action.n == 0 ? 'a.?b' : '[?x]'", "a.?b"),
    ("[action.n == 0 ? 1 : 2, true ? 3 : 4]", [1, 3]),
]


@pytest.mark.parametrize("accelerate", [False, True], ids=["closures", "fast"])
@pytest.mark.parametrize("src, want", CASES, ids=[c[0] for c in CASES])
def test_optional_values(src: str, want: Any, accelerate: bool) -> None:
    got = compile_cel(src, accelerate=accelerate)(ACT)
    if want is CelError:
        assert type(got) is CelError, got
    else:
        assert type(got) is not CelError, got.message
        assert got == want and type(got) is type(want)


@pytest.mark.parametrize("src", [
    "a.?b.c", "a.?b[?c]", "m[?'k'].orValue(1)", "a . ? b", "[1, ?x, 2]", "{?'k': v, 'j': 1}",
    "[?x.?y, ?z]", "f(a.?b, c[?1]) && x.?`a-b`.hasValue()", "[?true]", "{?true: o}",
])
def test_every_parser_gives_the_same_tree(src: str) -> None:
    trees = [_parse(src), _parse(src, exact=True)]
    assert trees[0] == trees[1]
    kinds = {t.data for t in trees[0].iter_subtrees()}
    assert kinds & {"member_dot_opt", "member_index_opt", "opt_entry"}


@pytest.mark.parametrize("src", ["a.?b", "a[?b]", "[?a]", "{?a: b}"])
def test_the_hand_parser_refuses_the_raw_syntax(src: str) -> None:
    with pytest.raises(Unsupported):
        parse_subset(src)


@pytest.mark.parametrize("src, at, message", [
    ("x.?f()", 2, "`.?` selects a field: it cannot call a method"),
    ("f(?x)", 2, "unexpected `?`"),
    (".?x", 1, "unexpected `?`"),
    ("[?]", 1, "unexpected `?`"),
    ("o.optMap(1, 2)", 0, "optMap() takes an identifier and an expression: `o.optMap(x, x + 1)`"),
])
def test_misuse_is_a_located_compile_error(src: str, at: int, message: str) -> None:
    with pytest.raises(CelCompileError) as ex:
        compile_cel(src)
    assert (ex.value.offset, ex.value.message) == (at, message)


def test_optionals_fall_back_to_the_closures_and_the_rest_keeps_its_fast_path() -> None:
    for src in ('action.?customer.?tier.orValue("free") == "free"', "action.m[?'k'].hasValue()",
                "[?action.?n][0] == 0", "optional.none().hasValue() || action.n == 0"):
        assert generator_of(compile_cel(src)) is None, src
    assert generator_of(compile_cel('action.customer.tier == "free" && action.n < 3 ? true : false')) is not None


CUSTOMER = FType("object", fields=(FField("tier", FType("string"), True),))
ENV = {"action": FType("object", fields=(FField("customer", CUSTOMER, True), FField("name", FType("string"))))}


def test_the_type_check_knows_optionals() -> None:
    assert typecheck('action.?customer.?tier.orValue("free") == "free"', ENV) == []
    assert typecheck('has(action.?customer.tier) && action.?customer.?tier.hasValue()', ENV) == []
    (f,) = typecheck('action.?customer.?tier == "free"', ENV)
    assert (f.kind, f.start, f.end) == ("mismatch", 0, 22)
    assert f.message == "cannot compare optional<string> with string (`==`)"
    assert "take what it holds with `.orValue(default)`" in (f.help or "")
    (f,) = typecheck('action.?customer.?teir.hasValue()', ENV)
    assert (f.kind, f.start, f.end, f.data["candidates"]) == ("unknown_field", 18, 22, ["tier"])
    (f,) = typecheck('action.name.orValue("x") == "x"', ENV)
    assert (f.kind, f.start, f.end) == ("mismatch", 0, 11)
    assert f.message == "`orValue` is a method of optional values; this is string"
    (f,) = typecheck("[?action.name]", ENV)
    assert (f.kind, f.start, f.end) == ("mismatch", 2, 13)


# ------------------------------------------------------------------ a policy
POLICY = '''
roles [reviewer]

workflow "shop" {
  version "1.0.0"
  owners {
    business "B"
    technical "T"
  }
  default deny

  action refund {
    system "pay"
    reversible full via "pay.undo"
    fields {
      customer?: {
        tier?: string
      }
    }
    require_approval free_tier by 1 reviewer when `action.?customer.?tier.orValue("free") == "free"`
    allow paying when `action.?customer.?tier.hasValue()`
  }
}
'''


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = tmp_path_factory.mktemp("opt") / "shop.policy"
    path.write_text(POLICY, encoding="utf-8")
    return {"reference": policy_engine.load(path, accelerate=False), "accelerated": policy_engine.load(path)}


def test_the_policy_checks_clean() -> None:
    assert [(d.code, d.message) for d in load_text(POLICY, "shop.policy").diagnostics] == []


@pytest.mark.parametrize("mode", ["reference", "accelerated"])
@pytest.mark.parametrize("extra, effect", [
    ({}, "require_approval"),
    ({"customer": {}}, "require_approval"),
    ({"customer": {"tier": "free"}}, "require_approval"),
    ({"customer": {"tier": "gold"}}, "allow"),
])
def test_the_policy_decides(engines: dict, mode: str, extra: dict, effect: str) -> None:
    action = {"workflow": "shop", "type": "refund", "id": "r-1", **extra}
    for _ in range(4):  # the accelerated gate is built after the first evaluations
        d = engines[mode].evaluate(action)
        assert (d.effect, list(d.errors)) == (effect, [])


def test_comparing_an_optional_is_a_check_error_at_its_place() -> None:
    text = POLICY.replace('action.?customer.?tier.orValue("free") == "free"', 'action.?customer.?tier == "free"')
    (d,) = load_text(text, "shop.policy").diagnostics
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if '?tier == "free"' in ln)
    col = text.splitlines()[line - 1].index("action.?customer") + 1
    assert (d.code, d.severity, d.span.line, d.span.col) == ("E116", "error", line, col)
    assert d.message == "cannot compare optional<string> with string (`==`)"
