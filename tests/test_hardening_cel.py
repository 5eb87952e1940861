"""Hardening of the CEL implementation and the checks around it: int64 remainder overflow
(as cel-go), the hint for a look-alike digit, and W212 (a condition whose value is always
an error)."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cel_fastpath import same

from policy_engine.cel import CelCompileError, CelError, compile_cel
from policy_engine.cli import main
from policy_engine.language.loader import load_text

INT64_MIN = -(2**63)
OVERFLOW = CelError("return error for overflow")


# ------------------------------------------------------------------ int64 remainder

@pytest.mark.parametrize("accelerate", [True, False])
def test_int64_min_remainder_minus_one_overflows(accelerate):
    """cel-go's moduloInt64Checked: MinInt64 % -1 is an overflow error, as MinInt64 / -1 is."""
    for src, act in [
        ("-9223372036854775808 % -1", {}),
        ("(-9223372036854775807 - 1) % -1", {}),
        ("x % -1", {"x": INT64_MIN}),
        ("x % y", {"x": INT64_MIN, "y": -1}),
        ("policy.lo % -1 == 0", {"policy": {"lo": INT64_MIN}}),
    ]:
        e = compile_cel(src, accelerate=accelerate, constants={"policy": {"lo": INT64_MIN}})
        assert e(act) == OVERFLOW, src
    e = compile_cel("x % y", accelerate=accelerate)
    assert e({"x": INT64_MIN, "y": 1}) == 0
    assert e({"x": INT64_MIN + 1, "y": -1}) == 0
    assert e({"x": INT64_MIN, "y": 3}) == -2
    assert e({"x": -7, "y": -1}) == 0


def test_an_overflowing_remainder_fails_closed_in_a_policy():
    text = POLICY.format(rules='deny odd when `action.n % -1 == 0 && false`\n    allow when `action.n % -1 == 0`')
    import policy_engine
    from policy_engine.engine import Engine
    from policy_engine.language.loader import load_sources
    from policy_engine.source import SourceFile

    for accelerate in (True, False):
        eng = Engine.from_load_result(load_sources([SourceFile("p.policy", text)], accelerate=accelerate),
                                      accelerate=accelerate)
        assert isinstance(eng, policy_engine.Engine)
        d = eng.evaluate({"workflow": "refunds", "type": "issue_refund", "n": INT64_MIN})
        assert d.effect != "allow" and any("overflow" in e.message for e in d.errors)
        assert eng.evaluate({"workflow": "refunds", "type": "issue_refund", "n": 5}).effect == "allow"


INTS = st.one_of(st.integers(INT64_MIN, 2**63 - 1), st.sampled_from([INT64_MIN, INT64_MIN + 1, -1, 0, 1, 2**63 - 1]))


@settings(max_examples=300, deadline=None)
@given(INTS, INTS, st.sampled_from(["x % y", "x / y", "x * y", "x - y", "x + y", "-x % y", "x % y == 0 || y == 0"]))
def test_int_arithmetic_fast_path_equals_the_closures_and_int64(x, y, src):
    fast = compile_cel(src)
    ref = compile_cel(src, accelerate=False)
    act = {"x": x, "y": y}
    got = fast(act)
    assert same(got, ref(act)), (src, x, y)
    if src in ("x % y", "x / y") and isinstance(got, int):
        q = abs(x) // abs(y) * (1 if (x < 0) == (y < 0) else -1)
        assert INT64_MIN <= q < 2**63  # a remainder is only given where the quotient fits
        assert got == (x - q * y if src == "x % y" else q)


def test_random_corner_expressions_fast_equals_reference():
    """A seeded fuzz loop over operators, macros with erroring bodies, NaN, int64/uint64
    bounds and heterogeneous values: the accelerated expression returns exactly the
    reference closures' value."""
    r = random.Random(7)
    lits = ["0", "1", "-1", "2", "9223372036854775807", "(-9223372036854775807 - 1)", "0u", "18446744073709551615u",
            "0.0", "-0.0", "1.5", "double('NaN')", "double('inf')", "''", "'a'", "b'\\xff'", "null", "true", "[]",
            "[1, 'a']", "{'a': 1}", "{1: 'x'}", "x", "y", "z", "m", "m.a", "z[0]"]
    ops = ["+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "in", "&&", "||"]
    vals = {"x": [0, -1, INT64_MIN, 2**63 - 1, 1.5, math.nan, "a", None, True],
            "y": [-1, 0, 2.0, math.inf, math.nan, "b"],
            "z": [[0, 1], [math.nan], [], ["a", 1]],
            "m": [{"a": 0}, {"a": "x"}, {}, {1: 2}]}

    def gen(d: int) -> str:
        if d == 0 or r.random() < 0.3:
            return r.choice(lits)
        k = r.randrange(5)
        if k < 2:
            return f"({gen(d - 1)} {r.choice(ops)} {gen(d - 1)})"
        if k == 2:
            return f"({gen(d - 1)} ? {gen(d - 1)} : {gen(d - 1)})"
        if k == 3:
            body = r.choice(["1 / i > 0", "i % -1 == 0", "i == i", "i > 0", "i + 1", "int(i) < 2"])
            coll = r.choice(["z", "[0, 1]", "[1, 0]", gen(d - 1)])
            return f"{coll}.{r.choice(['all', 'exists', 'exists_one', 'map', 'filter'])}(i, {body})"
        return f"{r.choice(['size', 'int', 'uint', 'double', 'string', 'type', 'math.abs'])}({gen(d - 1)})"

    checked = 0
    for _ in range(1500):
        src = gen(r.randint(1, 3))
        try:
            ref = compile_cel(src, accelerate=False)
        except CelCompileError:
            continue
        fast = compile_cel(src)
        for _ in range(3):
            act = {k: r.choice(v) for k, v in vals.items()}
            assert same(fast(act), ref(act)), (src, act)
            checked += 1
    assert checked > 2000


# ------------------------------------------------------------------ look-alike digits

@pytest.mark.parametrize("src,number", [
    ("x > \uff11", "1"), ("x > \uff110", "10"), ("x > 1\uff123", "123"), ("x > \uff13.5", "3.5"),
    ("x > 3.\uff15", "3.5"), ("x > \uff11u", "1u"), ("x[\uff10]", "0"),
])
def test_a_fullwidth_digit_is_a_number_not_a_name(src, number):
    with pytest.raises(CelCompileError) as ei:
        compile_cel(src)
    assert ei.value.hint is not None
    assert ei.value.hint.startswith(f"retype the number as `{number}`"), ei.value.hint
    assert "name" not in ei.value.hint and "digits" in ei.value.hint


def test_a_fullwidth_letter_or_digit_inside_a_name_is_still_a_name():
    for src, name in [("\uff58 > 1", "x"), ("a\uff11 > 1", "a1"), ("a.b\uff11 > 1", "b1")]:
        with pytest.raises(CelCompileError) as ei:
            compile_cel(src)
        assert ei.value.hint is not None and ei.value.hint.startswith(f"retype the name as `{name}`")


def test_a_fullwidth_digit_in_a_policy_condition_gets_the_number_hint():
    r = load_text(POLICY.format(rules="deny when `action.amount > \uff11\uff10\uff10`"), "p.policy")
    (d,) = r.errors
    assert d.code == "E101" and d.help is not None and d.help.startswith("retype the number as `100`")


# ------------------------------------------------------------------ W212: constant errors

POLICY = """roles [support_manager]
const big = 9223372036854775807
const tiers = {{"gold": 1}}

workflow "refunds" {{
  version "1.0.0"
  owners {{ business "Support lead" technical "Payments platform" }}
  action issue_refund {{
    system "payments"
    reversible full via "payments.reverse_refund"
    {rules}
  }}
}}
"""

CASES = [
    # (rules, the error, the part pointed at, what the note says)
    ("deny overflow when `policy.big + 1 > 0`", "return error for overflow", "policy.big + 1", "matches every"),
    ("require_approval by 1 support_manager when `1 / 0 == 1`", "divide by zero", "1 / 0", "matches every"),
    ("allow zero when `1 % 0 == 0`", "modulus by zero", "1 % 0", "never matches"),
    ("allow when `policy.tiers.silver > 0`", "no such key: 'silver'", "policy.tiers.silver", "never matches"),
    ("deny when `int(1e19) > 0 && true`", "range error: double out of int range", "int(1e19)", "matches every"),
    ("deny when `-9223372036854775808 % -1 == 0`", "return error for overflow", "-9223372036854775808 % -1",
     "matches every"),
]


@pytest.mark.parametrize("rules,error,part,note", CASES)
def test_w212_names_the_error_and_points_at_the_failing_part(rules, error, part, note):
    text = POLICY.format(rules=rules)
    r = load_text(text, "p.policy")
    assert r.errors == []
    (d,) = [d for d in r.diagnostics if d.code == "W212"]
    assert d.severity == "warning"
    assert d.message.endswith(f"is always an error: {error}")
    assert text[d.span.start:d.span.end] == part
    line = text.splitlines()[d.span.line - 1]
    assert line[d.span.col - 1:].startswith(part)
    assert d.help and any(note in n for n in d.notes)


def test_w212_for_every_kind_of_condition():
    text = """roles [support_manager, reviewer]
workflow "w" {
  version "1"
  owners { business "a" technical "b" }
  action act {
    system "s"
    reversible full via "undo"
    prerequisite p `1 / 0 == 0`
    allow when `action.x > 0`
  }
  stop s {
    when `2 / 0 == 1`
    severity high
    owner "o"
    resume when { c: `[1, 2][5] == 1` }
  }
  rollback reviewer_error {
    route verification
    authorize 1 reviewer
    notify [customer] when `1 % 0 == 0`
  }
}
"""
    r = load_text(text, "w.policy")
    got = sorted((d.message, d.notes[0].split(":")[0]) for d in r.diagnostics if d.code == "W212")
    assert [m.split(" is always")[0] for m, _ in got] == [
        "the condition of duty `customer` of rollback scenario `reviewer_error`",
        "the condition of prerequisite `p` of `act`",
        "the condition of re-enable criterion `c` of `s`",
        "the condition of stop trigger `s`",
    ]


@pytest.mark.parametrize("cond", [
    "policy.big > 0", "action.amount + 1 > 0", "policy.big + 1 > 0 || true", "false && 1 / 0 == 1",
    "1 / 0 == 1 || action.x == 1", "timestamp('10000-01-01T00:00:00Z') < now", "[1, 0].exists(x, 1 / x > 0)",
])
def test_w212_says_nothing_of_conditions_that_can_evaluate_or_read_the_input(cond):
    r = load_text(POLICY.format(rules=f"deny when `{cond}`"), "p.policy")
    assert [d for d in r.diagnostics if d.code == "W212"] == []


def test_w212_fails_check_strict(tmp_path: Path):
    p = tmp_path / "p.policy"
    p.write_text(POLICY.format(rules="deny overflow when `policy.big + 1 > 0`"))
    res = CliRunner().invoke(main, ["check", "--no-color", str(p)])
    assert res.exit_code == 0 and "W212" in res.output
    res = CliRunner().invoke(main, ["check", "--strict", "--no-color", str(p)])
    assert res.exit_code == 1
    assert f"{p}:11:25" in res.output and "warning[W212]" in res.output and "^^^^^^^^^^^^^^" in res.output
    assert "= help:" in res.output


def test_shipped_policies_have_no_constant_errors():
    from policy_engine.language.loader import load_paths

    root = Path(__file__).resolve().parent.parent
    for d in ("policies", "examples", "benchmarks/policies", "tests/engine_policies"):
        files = sorted((root / d).rglob("*.policy"))
        r = load_paths(files)
        assert [x for x in r.diagnostics if x.code == "W212"] == [], d


@pytest.mark.parametrize("cond", ["now() > timestamp('2026-01-01T00:00:00Z')", "foo(1) == 1"])
def test_w212_says_nothing_where_an_error_already_says_why(cond):
    """An unknown name (E109) makes a constant condition error too: one diagnostic, the error."""
    r = load_text(POLICY.format(rules=f"allow when `{cond}`"), "p.policy")
    assert [d.code for d in r.diagnostics] == ["E109"]
