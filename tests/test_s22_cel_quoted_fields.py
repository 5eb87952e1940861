"""Backquoted field names (CEL 2024): ``m.`content-type```, ``has(m.`a/b`)``.

cel-python's grammar predates them: the backquote was a syntax error ("backquoted field
names are not supported"). ``cel/parse.py`` now parses a backquoted name after a `.` as
a name of the same length and puts the real name back (a ``QUOTED_IDENT`` token) in the
trees of all three parsers; the compiler treats it as the select it is (in the closures
and in the generated fast path alike), never as part of a qualified name.
"""

from __future__ import annotations

from typing import Any

import pytest

from policy_engine.cel import CelCompileError, CelError, compile_cel
from policy_engine.cel.parse import _PARSER_LOCK, _fast_parse, _parse, _quoted_fields, _span
from policy_engine.cel.rdparse import parse_subset
from policy_engine.cel.typecheck import typecheck
from policy_engine.fieldtypes import FField, FType
from tests.test_cel_fastpath import run, same

ACT = {
    "action": {
        "x-request-id": "r-1",
        "content-type": "application/json",
        "a.b": 1,
        "a": {"b": 2},
        "in": True,
        "n": 5,
        "/api/v1": {"k": "v"},
        "tags": ["x"],
    },
    "action.x-request-id": "never: a backquoted name is not part of a qualified name",
}


@pytest.mark.parametrize(
    "src,want",
    [
        ('action.`x-request-id` == "r-1"', True),
        ("action.`x-request-id`", "r-1"),
        ("action.`content-type`.startsWith('application/')", True),
        ("action.`a.b`", 1),
        ("action.a.`b`", 2),
        ("action.`a`.`b`", 2),
        ("action.`in`", True),
        ("action.`n` + 1", 6),
        ("action.`/api/v1`.k", "v"),
        ("action. `n` * 2", 10),
        ("has(action.`x-request-id`)", True),
        ("has(action.`x-trace-id`)", False),
        ("!has(action.`x-trace-id`) || action.`x-trace-id` == 'a'", True),
        ("action.tags.exists(t, {'t-1': t}.`t-1` == 'x')", True),
        ("[{'k-1': 1}, {'k-1': 2}].map(m, m.`k-1`)", [1, 2]),
        ("'a.`b`' + action.`x-request-id`", "a.`b`r-1"),
        ("action.`x-request-id` // a comment with a `backquote`\n == 'r-1'", True),
        ("r'\\'' + action.`x-request-id`", "\\'r-1"),
    ],
)
def test_a_backquoted_field_is_selected_with_and_without_acceleration(src: str, want: Any) -> None:
    fast = compile_cel(src)
    ref = compile_cel(src, accelerate=False)
    assert same(ref(ACT), want)
    for _ in range(3):  # (the fast path is built on a later call)
        assert same(fast(ACT), want)
    run(fast, ACT)  # the generated code, where there is one, gives the closures' value


def test_a_missing_backquoted_field_is_an_error_in_both_paths() -> None:
    for acc in (True, False):
        e = compile_cel("action.`x-trace-id` == 'a'", accelerate=acc)
        for _ in range(3):
            got = e(ACT)
            assert isinstance(got, CelError) and got.message == "no such key: 'x-trace-id'"


def test_the_reference_names_the_field_and_spans_the_backquotes() -> None:
    src = 'action.`x-request-id` == "r"'
    (r,) = compile_cel(src).references
    assert (r.path, src[r.offset : r.end]) == (("action", "x-request-id"), "action.`x-request-id`")


def test_a_backquoted_name_is_never_part_of_a_qualified_name() -> None:
    # `a.b` may be the activation's variable "a.b"; `a.`b`` always selects b of a
    act = {"a": {"b": 1, "c": {"d": 2}}, "a.b": 10, "a.c": {"d": 20}, "a.c.d": 30}
    for acc in (True, False):
        assert compile_cel("a.b", accelerate=acc)(act) == 10
        assert compile_cel("a.`b`", accelerate=acc)(act) == 1
        assert compile_cel("a.c.`d`", accelerate=acc)(act) == 20  # ("a.c" is a plain prefix)
        assert compile_cel("a.`c`.d", accelerate=acc)(act) == 2
        assert compile_cel("google.protobuf.`Timestamp`", accelerate=acc)({"google": {}}) == CelError(
            "no such key: 'protobuf'"
        )  # (a select, not the type `google.protobuf.Timestamp`)


def test_the_three_parsers_give_the_same_tree() -> None:
    src = "a.`x-y` + b.`c d`.e > 1"
    exact = _parse(src, exact=True)
    stand_in = "a._____ + b._____.e > 1"  # (what the parsers see)
    with _PARSER_LOCK:
        assert parse_subset(stand_in) == _fast_parse(stand_in)
    trees = [exact, _parse(src), _parse(src + " // c")]
    names = [
        [
            (t.type, str(t), src[t.start_pos : t.end_pos])
            for t in tree.scan_values(lambda v: True)
            if t.type in ("IDENT", "QUOTED_IDENT")
        ]
        for tree in trees
    ]
    assert names[0] == [
        ("IDENT", "a", "a"),
        ("QUOTED_IDENT", "x-y", "`x-y`"),
        ("IDENT", "b", "b"),
        ("QUOTED_IDENT", "c d", "`c d`"),
        ("IDENT", "e", "e"),
    ]
    assert names[1] == names[0] and names[2] == names[0]
    for tree in trees:
        node = next(t for t in tree.iter_subtrees_topdown() if t.data == "addition_add")
        assert src[slice(*_span(node, len(src)))] == "a.`x-y` +"


@pytest.mark.parametrize(
    "src,start,end,message",
    [
        ("a.`b`()", 2, 5, "a backquoted name can only select a field"),
        (".`a`", 1, 4, "a backquoted name can only select a field"),
        ("a.`not`(1)", 2, 7, "a backquoted name can only select a field"),
        ("`b`", 0, 1, "unexpected character ```"),
        ("a.`b", 2, 3, "unexpected character ```"),
        ("a.``", 2, 3, "unexpected character ```"),
        ("a.`b`c", 2, 3, "unexpected character ```"),
        ("a.`b\u00e9`", 2, 3, "unexpected character ```"),
        ("1.`a`", 2, 5, "unexpected `` `a` ``"),
    ],
)
def test_a_misplaced_or_malformed_backquote_is_a_compile_error(src: str, start: int, end: int, message: str) -> None:
    with pytest.raises(CelCompileError) as ex:
        compile_cel(src)
    assert (ex.value.message, ex.value.offset, ex.value.end) == (message, start, end)
    assert "___" not in (ex.value.hint or "")


def test_a_backquote_in_a_string_or_comment_is_not_a_field() -> None:
    src = "'.`a`' + \".`b`\" + '''.`c`''' + r'\\'.`d`' // .`e`\n + x.`f`"
    at = src.index("`f`")
    assert _quoted_fields(src) == [(at, at + 3)]  # (cel.lark's lexer takes `\'` in a raw string too)
    assert _quoted_fields("b'\\'.`a`'") == []
    assert compile_cel(src)({"x": {"f": "!"}}) == ".`a`.`b`.`c`\\'.`d`!"


def test_the_type_check_reads_backquoted_fields() -> None:
    action = FType("object", fields=(FField("x-request-id", FType("string")),))
    (f,) = typecheck("a.`x-request-id` > 1", {"a": action})
    assert f.message == "cannot compare string with int (`>`)"
    (f,) = typecheck("a.`x-trace-id` == 'a'", {"a": action})
    assert (f.kind, f.start, f.end) == ("unknown_field", 2, 14)
