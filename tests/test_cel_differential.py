"""Differential test: compiled closures vs cel-python's own interpreter.

Hypothesis generates well-typed-ish CEL expressions (literals, arithmetic, comparisons,
logic, ternary, lists, maps, `in`, size, string functions, macros over small lists) and
activations. Wherever cel-python returns a value (not an error), the compiled closure
must return the same value.

Known deviations of cel-python are excluded by rule, not case by case (see docs/cel.md, "Known deviations"):

- D1 cel-python has no heterogeneous numeric comparison or equality: it errors on
  `1 < 1.5` and `1 == 1.0`. Such cases never produce a cel-python value, so they are
  excluded automatically.
- D2 cel-python evaluates both sides of `&&`/`||` and propagates some errors the spec
  absorbs; again it yields no value there, so nothing to compare.
- D4 cel-python's `string(double)` formats like Python `str()` ("1e+16"/"2.0"), the spec
  (cel-go) prints "1e+16"/"2": expressions converting a double to a string are not
  generated.
- D5 cel-python gives `0.0 / 0.0 == inf` (IEEE 754 and cel-go: NaN): double division is
  only generated with a non-zero literal divisor.
- D6 cel-python accepts `int(-9223372036854775808.0)`; the conformance suite
  (conversions/int/double_int_min_range) requires a range error. Cases where we report a
  double-to-int range error are skipped.
- D7 cel-python gives `-9223372036854775808 % -1 == 0` (Python's `%`); cel-go
  (`moduloInt64Checked`) makes it an overflow error, as the matching division is. Cases
  where we report that overflow in an expression with a `%` and cel-python gives a value
  (its 0, or what follows from it) are skipped; cel-python errors on the other operators'
  overflows, so those are never compared here.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis")
celpy = pytest.importorskip("celpy")

from depth import examples  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from policy_engine.cel import CelError, CelUint, compile_cel  # noqa: E402

celtypes = celpy.celtypes
_ENV = celpy.Environment()

INT_LITS = st.sampled_from(["0", "1", "2", "3", "7", "-1", "-5", "100", "9223372036854775807", "-9223372036854775808"])
DBL_LITS = st.sampled_from(["0.0", "1.5", "-2.25", "100.0", "1e3", "0.1"])
STR_LITS = st.sampled_from(["''", "'a'", "'abc'", "'hello'", "'héllo'", "\"b\"", "'lo'"])
DBL_DIVISORS = st.sampled_from(["1.5", "-2.0", "0.1"])
REGEXES = st.sampled_from(["'^h'", "'l+'", "'[a-c]+'", "'^$'", "'o$'"])


@st.composite
def expr(draw, ty: str, depth: int = 3, ivars: tuple = ()) -> str:
    leaf = depth <= 0 or draw(st.integers(0, 3)) == 0
    if ty == "int":
        if leaf:
            return draw(st.one_of(INT_LITS, st.sampled_from(("x", "z") + ivars)))
        k = draw(st.integers(0, 7))
        a = draw(expr("int", depth - 1, ivars))
        if k <= 3:
            b = draw(expr("int", depth - 1, ivars))
            return f"({a} {'+-*/%'[draw(st.integers(0, 4))]} {b})"
        if k == 4:
            return f"(-{a})"
        if k == 5:
            return f"size({draw(expr(draw(st.sampled_from(['str', 'list'])), depth - 1, ivars))})"
        if k == 6:
            return f"({draw(expr('bool', depth - 1, ivars))} ? {a} : {draw(expr('int', depth - 1, ivars))})"
        return f"int({draw(expr('dbl', depth - 1, ivars))})"
    if ty == "dbl":
        if leaf:
            return draw(st.one_of(DBL_LITS, st.just("y")))
        k = draw(st.integers(0, 2))
        if k == 0:
            op = "+-*/"[draw(st.integers(0, 3))]
            right = draw(DBL_DIVISORS) if op == "/" else draw(expr("dbl", depth - 1, ivars))  # D5
            return f"({draw(expr('dbl', depth - 1, ivars))} {op} {right})"
        if k == 1:
            return f"double({draw(expr('int', depth - 1, ivars))})"
        return f"(-{draw(expr('dbl', depth - 1, ivars))})"
    if ty == "str":
        if leaf:
            return draw(st.one_of(STR_LITS, st.just("s")))
        k = draw(st.integers(0, 2))
        if k == 0:
            return f"({draw(expr('str', depth - 1, ivars))} + {draw(expr('str', depth - 1, ivars))})"
        if k == 1:
            return f"string({draw(expr('int', depth - 1, ivars))})"
        return f"({draw(expr('bool', depth - 1, ivars))} ? {draw(expr('str', depth - 1, ivars))} : s)"
    if ty == "list":
        if leaf:
            return draw(st.sampled_from(["l", "[]", "[1, 2, 3]", "[0, -1]"]))
        k = draw(st.integers(0, 3))
        v = f"v{depth}"
        if k == 0:
            items = draw(st.lists(expr("int", depth - 1, ivars), max_size=3))
            return "[" + ", ".join(items) + "]"
        if k == 1:
            return f"{draw(expr('list', depth - 1, ivars))}.map({v}, {draw(expr('int', depth - 1, ivars + (v,)))})"
        if k == 2:
            return f"{draw(expr('list', depth - 1, ivars))}.filter({v}, {draw(expr('bool', depth - 1, ivars + (v,)))})"
        return f"({draw(expr('list', depth - 1, ivars))} + {draw(expr('list', depth - 1, ivars))})"
    # bool
    if leaf:
        return draw(st.sampled_from(["true", "false", "b"]))
    k = draw(st.integers(0, 12))
    sub = lambda t: draw(expr(t, depth - 1, ivars))  # noqa: E731
    if k == 0:
        return f"({sub('bool')} {draw(st.sampled_from(['&&', '||']))} {sub('bool')})"
    if k == 1:
        return f"!{sub('bool')}"
    if k in (2, 3):
        t = draw(st.sampled_from(["int", "dbl", "str"]))
        op = draw(st.sampled_from(["<", "<=", ">", ">=", "==", "!="]))
        return f"({sub(t)} {op} {sub(t)})"
    if k == 4:
        return f"({sub('int')} in {sub('list')})"
    if k == 5:
        return f"({sub('str')} in m)"
    if k == 6:
        fn = draw(st.sampled_from(["contains", "startsWith", "endsWith"]))
        return f"{sub('str')}.{fn}({sub('str')})"
    if k == 7:
        return f"{sub('str')}.matches({draw(REGEXES)})"
    if k in (8, 9):
        v = f"v{depth}"
        mac = draw(st.sampled_from(["all", "exists", "exists_one"]))
        return f"{sub('list')}.{mac}({v}, {draw(expr('bool', depth - 1, ivars + (v,)))})"
    if k == 10:
        return f"has(m.{draw(st.sampled_from(['a', 'b', 'zz']))})"
    if k == 11:
        return f"({sub('list')} == {sub('list')})"
    return f"({sub('bool')} ? {sub('bool')} : {sub('bool')})"


ACTIVATIONS = st.fixed_dictionaries({
    "x": st.integers(-10, 10) | st.sampled_from([2**62, -(2**63)]),
    "z": st.integers(-3, 3),
    "y": st.floats(-100, 100, allow_nan=False).map(lambda f: round(f, 2)),
    "s": st.sampled_from(["", "a", "hello", "abc", "ol"]),
    "b": st.booleans(),
    "l": st.lists(st.integers(-3, 3), max_size=4),
    "m": st.dictionaries(st.sampled_from(["a", "b", "hello", ""]), st.integers(0, 5), max_size=3),
})


def to_celpy(v: Any) -> Any:
    if isinstance(v, bool):
        return celtypes.BoolType(v)
    if isinstance(v, int):
        return celtypes.IntType(v)
    if isinstance(v, float):
        return celtypes.DoubleType(v)
    if isinstance(v, str):
        return celtypes.StringType(v)
    if isinstance(v, list):
        return celtypes.ListType([to_celpy(e) for e in v])
    if isinstance(v, dict):
        return celtypes.MapType({to_celpy(k): to_celpy(e) for k, e in v.items()})
    raise TypeError(v)


def from_celpy(v: Any) -> Any:
    if isinstance(v, celtypes.BoolType):
        return bool(v)
    if isinstance(v, celtypes.UintType):
        return CelUint(int(v))
    if isinstance(v, celtypes.IntType):
        return int(v)
    if isinstance(v, celtypes.DoubleType):
        return float(v)
    if isinstance(v, celtypes.StringType):
        return str(v)
    if isinstance(v, celtypes.BytesType):
        return bytes(v)
    if isinstance(v, celtypes.ListType):
        return [from_celpy(e) for e in v]
    if isinstance(v, celtypes.MapType):
        return {from_celpy(k): from_celpy(e) for k, e in v.items()}
    if v is None:
        return None
    raise TypeError(type(v))


def _out_of_range(v: Any) -> bool:
    if type(v) is int:
        return not (-(2**63) <= v < 2**63)
    if type(v) is list:
        return any(_out_of_range(e) for e in v)
    return False


def same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return (math.isnan(a) and math.isnan(b)) or a == b
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def celpy_eval(src: str, act: dict) -> Any:
    """cel-python's value, or None when it errors (nothing to compare then)."""
    try:
        prg = _ENV.program(_ENV.compile(src))
        r = prg.evaluate({k: to_celpy(v) for k, v in act.items()})
    except Exception:
        return None
    if isinstance(r, Exception):
        return None
    try:
        return (from_celpy(r),)
    except TypeError:
        return None


STATS = {"compared": 0, "celpy_error": 0}


@settings(max_examples=examples(700), deadline=None, suppress_health_check=list(HealthCheck))
@given(src=st.sampled_from(["int", "dbl", "str", "list", "bool", "bool", "bool"]).flatmap(lambda t: expr(t, 3)),
       act=ACTIVATIONS)
def test_compiled_matches_celpy_wherever_celpy_has_a_value(src, act):
    ours = compile_cel(src)(act)
    ref = celpy_eval(src, act)
    if ref is None:
        STATS["celpy_error"] += 1
        return
    (want,) = ref
    assert not _out_of_range(want), f"{src!r}: cel-python returned an out-of-range int {want!r}"
    if type(ours) is CelError and ours.message.startswith("range error: double out of int"):
        return  # D6
    if type(ours) is CelError and ours.message == "return error for overflow" and "%" in src:
        return  # D7 (cel-python's 0 may flow on: `string(x % z)` is "0")
    STATS["compared"] += 1
    assert type(ours) is not CelError, f"{src!r} with {act}: we erred ({ours}), cel-python gave {want!r}"
    assert same(ours, want), f"{src!r} with {act}: ours {ours!r}, cel-python {want!r}"


def test_differential_actually_compared_something():
    # runs after the property test in file order; guards against a generator that only
    # produces cel-python errors
    if STATS["compared"] == 0 and STATS["celpy_error"] == 0:
        pytest.skip("property test did not run first")
    print("differential:", STATS)
    assert STATS["compared"] > examples(700) // 5, STATS


@settings(max_examples=examples(500), deadline=None, suppress_health_check=list(HealthCheck))
@given(src=st.sampled_from(["int", "dbl", "str", "list", "bool", "bool", "bool"]).flatmap(lambda t: expr(t, 3)),
       act=ACTIVATIONS)
def test_accelerate_on_and_off_agree_on_the_differential_corpus(src, act):
    """The same corpus, accelerate=True (the fast path built and used: the third call) against
    accelerate=False (the reference closures): identical values and errors, type-exact."""
    ref = compile_cel(src, accelerate=False)(act)
    fast = compile_cel(src)
    for _ in range(3):
        got = fast(act)
    if type(ref) is CelError:
        assert got == ref, (src, act, got, ref)
    else:
        assert type(got) is type(ref) and same(got, ref), (src, act, got, ref)

