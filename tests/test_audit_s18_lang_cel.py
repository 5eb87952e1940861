"""Audit s18, CEL: three functions built their whole result before they compared it with
`max_size` (1,000,000 characters by default), so the budget bounded nothing while it mattered:

- `string.format` with a precision: `'%.1000000000f'.format([1.0])` allocated a gigabyte
  and ran for about 20 seconds on every evaluation before it became the budget error (a
  larger precision could exhaust memory);
- `string.format` `%s` of a list or map: every element's text, then the whole;
- `join`: `action.items.map(i, big).join()` over 100,000 items and a string of a million
  characters asked for 100 GB.

Each is weighed before it is built now. (Memory is measured, not time.)
"""

from __future__ import annotations

import tracemalloc

import pytest

from policy_engine.cel import CelError, Limits, compile_cel


def _peak(expr, act=None) -> tuple[object, int]:
    tracemalloc.start()
    try:
        v = expr(act or {})
        return v, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("src", [
    "'%.1000000000f'.format([1.0])",
    "'%.1000000000e'.format([x])",
    "'%.400000000f'.format([7])",
    "'ab %.999999f'.format([2u])",
])
def test_a_huge_precision_is_the_size_budget_before_any_digit_is_made(src):
    expr = compile_cel(src)
    v, peak = _peak(expr, {"x": 2.5})
    assert isinstance(v, CelError) and v.budget == "max_size", v
    assert v.message.startswith("result of size at least ")
    assert peak < 20_000_000, peak  # (was more than 1 GB)


def test_the_budget_is_the_limit_given_and_the_boundary_is_exact():
    small = Limits(max_size=12)
    assert compile_cel("'%.10f'.format([1.0])", limits=small)({}) == "1.0000000000"  # 12 characters
    v = compile_cel("'%.11f'.format([1.0])", limits=small)({})
    assert isinstance(v, CelError) and v.budget == "max_size"


@pytest.mark.parametrize("arg, out", [("double('nan')", "NaN"), ("double('inf')", "Infinity"),
                                      ("-double('inf')", "-Infinity")])
def test_words_print_whatever_the_precision(arg, out):
    assert compile_cel(f"'%.1000000000f'.format([{arg}])")({}) == out


def test_a_wrong_argument_is_still_its_own_error():
    v = compile_cel("'%.1000000000f'.format(['x'])")({})
    assert isinstance(v, CelError) and v.budget is None and "fixed-point clause" in v.message


BIG = "'aaaaaaaaaa'" + ".replace('a', 'aaaaaaaaaa')" * 5  # a million characters, within the budget


@pytest.mark.parametrize("src", [
    f"items.map(i, {BIG}).join()",
    f"items.map(i, {BIG}).join(', ')",
    f"'%s'.format([items.map(i, {BIG})])",
    f"'%s'.format([{{'k': items.map(i, {BIG})}}])",
    f"'%s'.format([items.map(i, {{i: {BIG}}})])",
])
def test_join_and_format_s_weigh_their_result_before_building_it(src):
    v, peak = _peak(compile_cel(src), {"items": list(range(200))})
    assert isinstance(v, CelError) and v.budget == "max_size", v
    assert peak < 60_000_000, peak  # (was 200 MB and more: 200 copies of a million characters)


def test_join_and_format_s_keep_their_results_and_the_exact_boundary():
    five, ten = Limits(max_size=5), Limits(max_size=10)
    assert compile_cel("['ab', 'cd'].join(',')", limits=five)({}) == "ab,cd"
    assert compile_cel("['ab', 'cd'].join(', ')", limits=five)({}).budget == "max_size"
    assert compile_cel("[].join('-')")({}) == ""
    assert compile_cel("'%s'.format([['ab', 'cdef']])", limits=ten)({}) == "[ab, cdef]"
    assert compile_cel("'%s'.format([['ab', 'cdefg']])", limits=ten)({}).budget == "max_size"
    assert compile_cel("'%s'.format([{'b': 1, 'a': [2.5, null, b'x']}])")({}) == "{a: [2.5, null, x], b: 1}"
