"""Unit tests for policy_engine.cel: API, errors as values, numbers, budgets, threads."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from policy_engine.cel import (
    DEFAULT_LIMITS,
    CelCompileError,
    CelError,
    CelUint,
    CompiledExpr,
    Limits,
    Reference,
    compile_cel,
    to_cel_json,
)

REALISTIC = (
    'action.type == "send_customer_reply" && size(action.claims.filter(c, !c.sourced)) > 0'
    " && action.amount < 500.0"
)


def ev(src: str, **act):
    return compile_cel(src)(act)


def is_err(v, contains: str = "", budget: str | None = None) -> bool:
    return (
        type(v) is CelError
        and contains in v.message
        and (budget is None or v.budget == budget)
    )


# -- the interface ------------------------------------------------------------


def test_interface_shapes():
    e = compile_cel("action.amount > 1")
    assert isinstance(e, CompiledExpr)
    assert e.source == "action.amount > 1"
    assert e.references == (Reference(("action", "amount"), 0, 13),)
    assert DEFAULT_LIMITS == Limits()
    with pytest.raises(dataclasses.FrozenInstanceError, match="max_size"):
        DEFAULT_LIMITS.max_size = 3  # frozen


def test_references_chains_offsets_and_bound_variables():
    src = (
        "action.recipient.domain in policy.blocked_domains && "
        "evidence.reviewer_screen.shows_claim_source && action.claims.all(c, c.sourced)"
    )
    e = compile_cel(src)
    paths = [r.path for r in e.references]
    assert paths == [
        ("action", "recipient", "domain"),
        ("policy", "blocked_domains"),
        ("evidence", "reviewer_screen", "shows_claim_source"),
        ("action", "claims"),
    ]
    for r in e.references:
        assert src[r.offset : r.end] == ".".join(r.path)
    # the comprehension variable `c` is bound, not a reference
    assert all(r.path[0] != "c" for r in e.references)


def test_references_exclude_type_names_and_namespaced_functions():
    e = compile_cel("type(x) == int && math.greatest(1, 2) == 2 && now > timestamp('2020-01-01T00:00:00Z')")
    assert [r.path for r in e.references] == [("x",), ("now",)]


@pytest.mark.parametrize(
    "src, offset",
    [
        ("action.amount >", 15),  # unexpected end
        ("action.amount > > 3", 16),
        ("a && (b || c", 12),
        ("x.y(1,,2)", 6),
        ("a ? b", 5),
        ("1 + #", 4),
        ("{'a': 1}.`a`()", 9),  # (a backquoted name selects a field, never a method)
    ],
)
def test_syntax_errors_carry_offsets_into_the_source(src, offset):
    with pytest.raises(CelCompileError) as ei:
        compile_cel(src)
    err = ei.value
    assert err.offset == offset, (err.message, err.offset)
    assert err.offset <= err.end <= len(src)
    assert err.message and "\n" not in err.message


def test_syntax_error_on_second_line_maps_to_offset():
    src = "a &&\n  b ==  "
    with pytest.raises(CelCompileError) as ei:
        compile_cel(src)
    assert ei.value.offset == len(src)


def test_reserved_word_and_message_construction_are_compile_errors():
    with pytest.raises(CelCompileError) as ei:
        compile_cel("Foo{a: 1}")
    assert "message construction" in ei.value.message
    assert ei.value.hint
    with pytest.raises(CelCompileError):
        compile_cel("9223372036854775808")  # int literal out of range
    with pytest.raises(CelCompileError) as ei:
        compile_cel("[1].all(1, true)")
    assert "identifier" in ei.value.message


def test_never_raises_on_odd_inputs():
    e = compile_cel("a.b + a.c")
    for act in ({}, {"a": None}, {"a": {"b": object(), "c": 1}}, {"a": [1]}, {"a": {"b": {1}, "c": {2}}}):
        assert type(e(act)) is CelError
    assert type(compile_cel("x")(None)) is CelError  # not even a mapping


# -- errors are values, logic ------------------------------------------------------


def test_unknown_identifier_and_missing_key():
    assert is_err(ev("x"), "undeclared reference to 'x'")
    assert is_err(ev("m.x", m={}), "no such key: 'x'")
    assert is_err(ev("m['x']", m={}), "no such key")
    assert is_err(ev("f(1)"), "unbound function")


@pytest.mark.parametrize(
    "src, want",
    [
        ("x || true", True), ("true || x", True), ("x && false", False), ("false && x", False),
        ("x || false", CelError), ("x && true", CelError), ("true && x", CelError),
        ("1 || true", True), ("false && 'a'", False),
        ("true ? 1 : x", 1), ("false ? x : 2", 2), ("x ? 1 : 2", CelError), ("1 ? 1 : 2", CelError),
        ("x || y || true", True), ("x && y && false", False), ("a && b && c", True),
    ],
)
def test_logic_short_circuits_and_absorbs_errors_commutatively(src, want):
    got = ev(src, a=True, b=True, c=True)
    if want is CelError:
        assert type(got) is CelError
    else:
        assert got is want or got == want and type(got) is type(want)


# -- numbers from JSON --------------------------------------------------------------


@pytest.mark.parametrize("amount", [120, 120.5, CelUint(120)])
def test_json_numbers_compare_across_int_uint_double(amount):
    act = {"action": {"amount": amount}}
    assert compile_cel("action.amount > 100.0")(act) is True
    assert compile_cel("action.amount > 100")(act) is True
    assert compile_cel("action.amount < 500.0")(act) is True
    assert compile_cel("action.amount == 120 || action.amount == 120.5")(act) is True


def test_bool_is_not_a_number():
    assert ev("x == 1", x=True) is False
    assert ev("x in [1]", x=True) is False
    assert ev("1 in [x]", x=True) is False
    assert type(ev("x < 2", x=True)) is CelError
    assert type(ev("x + 1", x=True)) is CelError
    assert ev("m[1]", m={1: "one"}) == "one" and is_err(ev("m[true]", m={1: "one"}), "no such key")
    assert is_err(ev("m[1]", m={True: "t"}), "no such key")


@pytest.mark.parametrize(
    "src",
    [
        "9223372036854775807 + 1",
        "-9223372036854775808 - 1",
        "-9223372036854775808 / -1",
        "4611686018427387904 * 2",  # 2^62 * 2 = 2^63 overflows int64 (CEL has no `^`)
        "18446744073709551615u + 1u",
        "0u - 1u",
        "1 / 0",
        "1 % 0",
        "1u / 0u",
        "int(1e19)",
        "uint(-1)",
        "int(18446744073709551615u)",
        "1 + true",  # bools are not numbers
        "1.5 * 'a'",
    ],
)
def test_arithmetic_errors(src):
    assert type(ev(src)) is CelError


def test_json_numbers_mix_in_arithmetic():
    """Deviation (docs/cel.md, "Known deviations"): JSON has one number type, so int with double promotes to double."""
    assert ev("x + y", x=80, y=12.5) == 92.5 and type(ev("x + y", x=80, y=12.5)) is float
    assert ev("x - 0.5", x=3) == 2.5 and ev("x * 1.5", x=2) == 3.0 and ev("x / 2.0", x=3) == 1.5
    assert ev("1u + 0.5") == 1.5
    assert ev("x + 1", x=41) == 42 and type(ev("x + 1", x=41)) is int  # int with int stays int


def test_arithmetic_values():
    assert ev("7 / -2") == -3 and ev("-7 % 2") == -1
    assert ev("1.0 / 0.0") == float("inf")
    assert type(ev("3u + 4u")) is CelUint and ev("3u + 4u") == 7
    assert ev("x + 1", x=41) == 42
    assert ev("'a' + 'b'") == "ab" and ev("[1] + [2]") == [1, 2] and ev("b'a' + b'b'") == b"ab"


# -- the rest of the language -------------------------------------------------------------


def test_types_and_conversions():
    assert ev("type(1) == int && type(1u) == uint && type(1.0) == double && type(null) == null_type")
    assert ev("type(type(1)) == type && type([]) == list && type({}) == map")
    assert ev("string(1.5) + string(2) + string(true) + string(b'x')") == "1.52truex"
    assert ev("int('42') + int(3.9)") == 45
    assert ev("bool('true') && !bool('0')") is True
    assert ev("dyn(1) == 1.0") is True
    assert ev("double(3) == 3.0") is True
    assert ev("bytes('ÿ')") == b"\xc3\xbf"


def test_timestamps_and_durations():
    now = datetime(2024, 3, 1, 12, 30, 15, 250000, tzinfo=UTC)
    act = {"now": now, "t": datetime(2024, 2, 29, 23, 0, tzinfo=UTC)}
    e = lambda s: compile_cel(s)(act)  # noqa: E731
    assert e("now - t") == timedelta(hours=13, minutes=30, seconds=15, microseconds=250000)
    assert e("now - t > duration('13h')") is True
    assert e("t + duration('1h') == timestamp('2024-03-01T00:00:00Z')") is True
    assert e("now.getFullYear()") == 2024 and e("now.getMonth()") == 2
    assert e("now.getDate()") == 1 and e("now.getDayOfMonth()") == 0
    assert e("now.getDayOfWeek()") == 5 and e("t.getDayOfYear()") == 59
    assert e("now.getHours() == 12 && now.getMinutes() == 30 && now.getSeconds() == 15")
    assert e("now.getMilliseconds()") == 250
    assert e("now.getHours('Australia/Sydney')") == 23
    assert e("now.getHours('-02:30')") == 10
    assert e("duration('1h30m').getMinutes()") == 90
    assert e("string(duration('1.5s'))") == "1.5s"
    assert e("int(timestamp('2009-02-13T23:31:30Z'))") == 1234567890
    assert type(e("timestamp('9999-12-31T23:59:59Z') + duration('1s')")) is CelError
    assert type(e("timestamp('not a time')")) is CelError


def test_macros_and_collections():
    assert ev("[1, 2, 3].all(x, x > 0) && [1, 2, 3].exists(x, x == 2)")
    assert ev("[1, 2, 3].exists_one(x, x > 2)") is True
    assert ev("[1, 2, 3].map(x, x * 2)") == [2, 4, 6]
    assert ev("[1, 2, 3].map(x, x > 1, x * 10)") == [20, 30]
    assert ev("[1, 2, 3].filter(x, x % 2 == 1)") == [1, 3]
    assert ev("{'a': 1, 'b': 2}.all(k, k in ['a', 'b'])") is True
    assert ev("[0, -1].all(x, 1 / x > 0)") is False  # false wins over the error
    assert type(ev("[1, 0].all(x, 1 / x > 0)")) is CelError
    assert ev("[0, 1].exists(x, 1 / x > 0)") is True  # true wins over the error
    assert ev("has(m.a) && !has(m.b)", m={"a": None}) is True
    assert ev("'a' in {'a': 1} && 2 in [1, 2] && !(3 in [1, 2])") is True
    assert ev("size('héllo') == 5 && 'abc'.size() == 3 && size([1]) == 1 && size({}) == 0")
    assert ev("'hello'.contains('ell') && 'hello'.startsWith('he') && 'hello'.endsWith('lo')")
    assert ev("'hello'.matches('^h.*o$') && matches('abc', 'b')")
    assert is_err(ev("{'a': 1, 'a': 2}"), "repeated key")
    assert type(ev("{[1]: 2}")) is CelError
    assert ev("[[1, 2], [3]].map(l, l.map(x, x + 1))") == [[2, 3], [4]]
    assert ev("cel.bind(x, 2, x * x)") == 4


def test_comprehension_variable_shadows_activation():
    assert ev("[1, 2].map(x, x + 1)", x=100) == [2, 3]
    assert ev("x + [1].map(x, x)[0]", x=100) == 101


def test_to_cel_json():
    v = ev("{'t': timestamp('2009-02-13T23:31:30.5Z'), 'd': duration('90s'), 'b': b'hi', 'u': 3u, 'ty': type(1)}")
    assert to_cel_json(v) == {"t": "2009-02-13T23:31:30.5Z", "d": "90s", "b": "aGk=", "u": 3, "ty": "int"}
    assert json.dumps(to_cel_json(ev("[1.5, null, true, 'x']"))) == '[1.5, null, true, "x"]'
    assert to_cel_json(CelError("boom")) == {"error": "boom"}


# -- limits and budgets -------------------------------------------------------------


def test_expression_length_limit():
    with pytest.raises(CelCompileError) as ei:
        compile_cel("1 + " * 2000 + "1")
    assert "characters" in ei.value.message
    compile_cel("1 + 1", limits=Limits(max_expression_length=5))


@pytest.mark.parametrize(
    "src",
    ["(" * 100_000 + "1" + ")" * 100_000, "[" * 100_000 + "]" * 100_000, "{" * 100_000, "f(" * 50_000],
)
def test_deep_nesting_is_a_compile_error_not_a_recursion_error(src):
    limits = Limits(max_expression_length=1_000_000)
    with pytest.raises(CelCompileError) as ei:
        compile_cel(src, limits=limits)
    assert "nested" in ei.value.message
    assert src[ei.value.offset] in "([{"  # the first bracket beyond the depth limit
    assert src[: ei.value.offset].count(src[ei.value.offset]) == 64


def test_nesting_at_the_limit_compiles_and_runs():
    src = "(" * 64 + "1" + ")" * 64
    assert compile_cel(src)({}) == 1
    src = "[" * 64 + "]" * 64
    assert type(compile_cel(src)({})) is list


def test_brackets_inside_strings_do_not_count():
    assert compile_cel("'" + "(" * 500 + "' + \"[[[[\"")({}) == "(" * 500 + "[[[["


@pytest.mark.parametrize(
    "src",
    [
        "1" + " + 1" * 1000,
        "!" * 3000 + "true",
        "-" * 3000 + "1",
        "a" + ".b" * 1000,
        "true" + " && true" * 800,
        "x" + " == x" * 900,
        " ".join(["true ? 1 :"] * 400) + " 2",
        "'a'" + ".size().string()" * 200,
    ],
)
def test_long_unbracketed_chains_compile_without_recursion(src):
    # either compiles (long chains are flattened into loops) or is refused as too deeply
    # nested; never a RecursionError, and evaluation never raises
    try:
        e = compile_cel(src, limits=Limits(max_expression_length=100_000))
    except CelCompileError as ex:
        assert "nested" in ex.message
        return
    v = e({"a": {}, "x": 1})
    assert v is not None


def test_many_method_calls_deep_is_bounded():
    src = "'a'" + ".size().string()" * 400
    try:
        e = compile_cel(src, limits=Limits(max_expression_length=100_000))
    except CelCompileError as ex:
        assert "nested" in ex.message
    else:
        assert e({}) == "1"


def test_nested_comprehension_bomb_hits_iteration_budget_fast():
    ten = "[" + ",".join(str(i) for i in range(10)) + "]"
    src = f"{ten}.map(a, {ten}.map(b, {ten}.map(c, {ten}.map(d, {ten}.map(e, {ten}.map(f, 1))))))"
    e = compile_cel(src)
    v = e({})
    assert is_err(v, budget="max_iterations")


def test_budget_error_is_not_absorbed_by_logic():
    ten = "[" + ",".join(str(i) for i in range(10)) + "]"
    bomb = f"{ten}.all(a, {ten}.all(b, {ten}.all(c, {ten}.all(d, {ten}.all(e, {ten}.all(f, true))))))"
    assert is_err(compile_cel(f"{bomb} || t")({"t": True}), budget="max_iterations")
    assert is_err(compile_cel(f"t || {bomb}")({"t": False}), budget="max_iterations")
    assert is_err(compile_cel(f"[1, 2].exists(x, {bomb})")({}), budget="max_iterations")


def test_budget_is_per_evaluation():
    e = compile_cel("l.map(x, x)", limits=Limits(max_iterations=10))
    assert e({"l": list(range(10))}) == list(range(10))
    assert e({"l": list(range(10))}) == list(range(10))  # the count restarts per call
    assert is_err(e({"l": list(range(11))}), budget="max_iterations")


def test_string_and_list_growth_hits_size_budget():
    lim = Limits(max_size=1000)
    assert is_err(compile_cel("s + s", limits=lim)({"s": "x" * 600}), budget="max_size")
    assert is_err(compile_cel("l + l", limits=lim)({"l": [0] * 600}), budget="max_size")
    assert is_err(compile_cel("s.replace('x', s)", limits=lim)({"s": "x" * 40}), budget="max_size")
    assert compile_cel("s + s", limits=lim)({"s": "x" * 500}) == "x" * 1000
    # string doubling inside a comprehension over a large input
    v = compile_cel("l.map(x, s + s + s + s)")({"l": list(range(50)), "s": "y" * 300_000})
    assert is_err(v, budget="max_size")


def test_huge_input_list_hits_iteration_budget():
    v = compile_cel("l.exists(x, x < 0)")({"l": list(range(200_000))})
    assert is_err(v, budget="max_iterations")


def test_pathological_regex_is_linear():
    e = compile_cel("s.matches('(a*)*b')")
    assert e({"s": "a" * 100_000}) is False
    dyn = compile_cel("s.matches(p)")
    assert dyn({"s": "a" * 100_000, "p": "(a*)*b"}) is False
    assert type(dyn({"s": "a", "p": "(unclosed"})) is CelError
    assert type(compile_cel("'a'.matches('(unclosed')")({})) is CelError
    assert type(compile_cel("'a'.matches('(a)\\\\1')")({})) is CelError  # backreferences: not RE2


# -- thread safety -------------------------------------------------------------------


def test_concurrent_evaluation_matches_single_threaded():
    exprs = [
        compile_cel(REALISTIC),
        compile_cel("action.claims.map(c, c.sourced ? 1 : 0).filter(x, x == 1).size()"),
        compile_cel("[1, 2, 3].all(x, [4, 5].exists(y, x * y == action.amount))"),
        compile_cel("action.amount / 3 + size(action.type)"),
    ]
    inputs = []
    for i in range(300):
        inputs.append({
            "action": {
                "type": "send_customer_reply" if i % 3 else "other",
                "amount": i if i % 2 else float(i) + 0.5,
                "claims": [{"sourced": (i + k) % 4 != 0} for k in range(i % 7)],
            }
        })
    expected = [[e(a) for e in exprs] for a in inputs]
    barrier = threading.Barrier(8)

    def work(seed: int):
        barrier.wait()
        out = []
        for j in range(len(inputs)):
            k = (j * 7 + seed) % len(inputs)
            out.append((k, [e(inputs[k]) for e in exprs]))
        return out

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(8)))
    for out in results:
        for k, vals in out:
            assert repr(vals) == repr(expected[k])


# -- performance and start-up -------------------------------------------------------


def test_importing_the_module_does_not_import_celpy():
    code = "import sys, policy_engine.cel; print('celpy' in sys.modules, 'lark' in sys.modules)"
    root = Path(__file__).parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                         env={"PYTHONPATH": str(root), "PATH": ""}, check=True)
    assert out.stdout.split() == ["False", "False"]


# ------------------------------------------------------------------ strings extension: format()
@pytest.mark.parametrize("src, want", [
    ('"%s owes %d (%.2f%%)".format([action.who, action.n, action.pct])', "ann owes 3 (12.50%)"),
    ('"%s".format([action.tags])', "[a, b]"),
    ('"%s".format([{"b": 1, "a": [1.5, null]}])', "{a: [1.5, null], b: 1}"),
    ('"%x|%X|%o|%b".format([255, "hi", 8, true])', "ff|6869|10|1"),
    ('"%e %f".format([1, double("NaN")])', "1.000000e+00 NaN"),
])
def test_format(src, want):
    assert ev(src, action={"who": "ann", "n": 3, "pct": 12.5, "tags": ["a", "b"]}) == want


@pytest.mark.parametrize("src, words", [
    ('"%d".format(["x"])', "decimal clause"),
    ('"%d %d".format([1])', "index 1 out of range"),
    ('"%q".format([1])', 'unrecognized formatting clause "q"'),
    ('"%.2s".format(["x"])', "precision"),
    ('"%s".format("x")', "no such overload"),
])
def test_format_errors_are_values(src, words):
    v = ev(src)
    assert isinstance(v, CelError) and words in v.message


def test_format_output_counts_against_max_size():
    e = compile_cel('"%s%s".format([action.s, action.s])', limits=Limits(max_size=100))
    v = e({"action": {"s": "x" * 60}})
    assert isinstance(v, CelError) and v.budget == "max_size"
    assert e({"action": {"s": "x" * 40}}) == "x" * 80


def test_timestamp_parsing_is_the_packages_one_parser():
    """CEL's timestamp() reads RFC 3339 with policy_engine.timestamps (one parser for the
    package), in cel-go's shape: `T`/`t` only, ASCII digits only, errors as values."""
    ev = lambda s: compile_cel(s)({})  # noqa: E731
    assert ev("timestamp('2024-01-01t10:00:00.5+01:00') == timestamp('2024-01-01T09:00:00.5Z')") is True
    assert ev("timestamp('2024-13-01T00:00:00Z')") == CelError("range error: invalid timestamp '2024-13-01T00:00:00Z'")
    assert ev("timestamp('2024-01-01 00:00:00Z')") == CelError(
        "range error: cannot parse timestamp '2024-01-01 00:00:00Z'")
    # fullwidth digits: Python's \d matched them (the old CEL-only regex accepted this); Go's parser does not
    assert isinstance(ev("timestamp('\uff12\uff10\uff12\uff14-01-01T00:00:00Z')"), CelError)
    assert ev("duration('1h30m') == duration('90m')") is True
    assert ev("duration('1x')") == CelError("invalid duration '1x'")
