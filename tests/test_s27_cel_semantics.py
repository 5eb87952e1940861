"""CEL answers that were wrong (session 27 audit), on every evaluation path.

- An int (or uint) and a double compare as double in `<`, `<=`, `>`, `>=` (deviation 6,
  as the conformance suite requires), but `==` compared them exactly: for
  9007199254740993 and 9007199254740992.0 both `<=` and `>=` held while `==` was false
  (cel-go's Equal uses the same comparison as its ordering).
- The static checker typed the first variable of a two-variable comprehension over a list
  as the element (`tags.all(i, t, i < 3)` was E116 "cannot compare string with int"),
  refusing a valid condition.
- `list.existsOne(x, p)` (cel-go's standard macro, the spelling `exists_one` has) was
  refused (E109 "given 2 arguments"; `compile_cel` said "undeclared reference").
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from engine_support import engine_from_texts

from policy_engine.cel import compile_cel
from policy_engine.engine.accel import fused as fused_mod
from policy_engine.language.loader import load_sources
from policy_engine.source import SourceFile

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
BIG_INT = 9007199254740993  # 2^53 + 1: float() rounds it to 2^53
BIG_DBL = 9007199254740992.0


def _both(src: str, act: dict | None = None) -> list:
    return [compile_cel(src, accelerate=acc)(act or {}) for acc in (False, True) for _ in range(3)]


@pytest.mark.parametrize("src, want", [
    (f"{BIG_INT} == {BIG_DBL}", True),
    (f"{BIG_DBL} == {BIG_INT}", True),
    (f"{BIG_INT} != {BIG_DBL}", False),
    ("9223372036854775807 == 9223372036854775808.0", True),
    ("18446744073709551615u == 18446744073709551616.0", True),
    (f"[{BIG_INT}] == [{BIG_DBL}]", True),
    (f"{BIG_INT} in [{BIG_DBL}]", True),
    (f"{{'a': {BIG_INT}}} == {{'a': {BIG_DBL}}}", True),
    # what did not change: exact below 2^53, and across int and uint
    ("1 == 1.0", True), ("1.5 == 1", False), ("9007199254740991 == 9007199254740990.0", False),
    ("9223372036854775807 == 9223372036854775807u", True),
])
def test_int_and_double_are_equal_as_their_ordering_says(src, want):
    assert _both(src) == [want] * 6


@pytest.mark.parametrize("x, y", [(BIG_INT, BIG_DBL), (BIG_DBL, BIG_INT), (2**63 - 1, 2.0**63)])
def test_equality_agrees_with_ordering_on_inputs(x, y):
    act = {"x": x, "y": y}
    for src in ("x == y", f"x == {y!r}", f"{x!r} == y", "[x] == [y]", "x in [y]"):
        got = _both(src, act)
        le_ge = _both("x <= y && x >= y", act)
        assert got == le_ge == [True] * 6, src
    assert _both("x != y", act) == [False] * 6


POLICY = """roles [manager]
workflow "w" {
  version "1"
  owners { business "b" technical "t" }
  default deny
  action t {
    system "x"
    deny same when `action.x == action.y`
    deny same_const when `action.x == 9007199254740992.0`
    allow a when `true`
  }
}
"""


@pytest.mark.parametrize("accelerate", [False, True])
def test_the_engine_denies_on_equal_amounts_on_every_path(accelerate):
    e = engine_from_texts({"p.policy": POLICY}, accelerate=accelerate)
    act = {"workflow": "w", "type": "t", "id": "a1", "x": BIG_INT, "y": BIG_DBL}
    for _ in range(fused_mod.FUSE_AFTER + 3):  # through the fused gate once it is built
        d = json.loads(e.evaluate(act, None, T0).model_dump_json())
        assert d["effect"] == "deny"
        assert [m["name"] for m in d["matched"]] == ["same", "same_const", "a"]


FIELDS_POLICY = """roles [manager]
workflow "w" {
  version "1"
  owners { business "b" technical "t" }
  default deny
  action t {
    system "x"
    fields {
      tags: list<string>
      lim: map<string, int>
      lines: list { sku: string  qty: int }
    }
    deny d when `%s`
  }
}
"""


def _codes(cond: str) -> list[str]:
    r = load_sources([SourceFile("p.policy", FIELDS_POLICY % cond)])
    return [f"{d.code} {d.message}" for d in r.diagnostics if d.code.startswith("E")]


@pytest.mark.parametrize("cond", [
    'action.tags.all(i, t, i < 3 && t != "")',
    'action.tags.exists(i, t, i == 0 && t == "a")',
    'action.tags.existsOne(i, t, i == 0)',
    "action.lines.all(i, l, i < 5 && l.qty > 1)",
    'action.lim.all(k, v, v > 1 && k != "")',
    'action.tags.transformList(i, t, i > 0, t + "x").size() > 0',
    "action.tags.transformList(i, t, i + 1).all(x, x > 0)",
    'action.tags.transformMap(i, t, t)[0] == "a"',
    "action.lim.transformMap(k, v, v + 1)[\"a\"] > 1",
    'action.tags.existsOne(t, t == "x")',
])
def test_the_checker_accepts_valid_comprehensions(cond):
    assert _codes(cond) == []


@pytest.mark.parametrize("cond, code", [
    ('action.tags.exists(i, t, t > 3)', "E116"),  # t is the element: a string
    ('action.tags.exists(i, t, i == "a")', "E116"),  # i is the index: an int
    ('action.lim.all(k, v, v == "x")', "E116"),  # v is the value: an int
    ("action.lines.all(i, l, l.qtyy > 1)", "E115"),
    ('action.tags.existsOne(t, t == 1)', "E116"),
])
def test_the_checker_still_catches_sure_errors_in_comprehensions(cond, code):
    assert [c.split()[0] for c in _codes(cond)] == [code]


@pytest.mark.parametrize("src, want", [
    ("['a', 'b'].existsOne(t, t == 'a')", True),
    ("['a', 'a'].existsOne(t, t == 'a')", False),
    ("{'a': 1, 'b': 2}.existsOne(k, k == 'a')", True),
    ("[1, 2, 3].existsOne(x, x > 2) == [1, 2, 3].exists_one(x, x > 2)", True),
])
def test_exists_one_in_camel_case_is_the_macro(src, want):
    assert _both(src) == [want] * 6
    assert str(_both("[0, 1].existsOne(x, 1 / x == 1)")[0]) == str(compile_cel("[0, 1].exists_one(x, 1 / x == 1)")({}))
