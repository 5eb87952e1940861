"""Spans of CEL operator nodes in the fast parsers.

The tree leaves an operator's token out (`relation_lt : relation "<"`, `unary_neg : "-"`).
With positions (the exact parser), Lark spans `a <` and `-`; the fast parsers (Lark
without positions, cel/parse.py, and the hand-written subset, cel/rdparse.py) took a
node's span from its first and last token, so the node of `<` spanned only `a`, the node
of a `-` or `!` (no token at all) the whole condition, and `-x` only `x`: an E116 on
`-action.amount in ["a"]` said "`action.amount` is double" and underlined it without its
`-`. The three parsers now give every operator node the same span.

Refresh the snapshots with `python -m pytest tests/test_s22_cel_operator_spans.py
--snapshot-update` and review the diff.
"""

from __future__ import annotations

import pytest

from policy_engine.cel.parse import _PARSER_LOCK, _fast_parse, _parse, _span
from policy_engine.cel.rdparse import Unsupported, parse_subset
from policy_engine.cel.typecheck import typecheck
from policy_engine.diagnostics import render_all
from policy_engine.fieldtypes import FType
from policy_engine.language.loader import load_text
from tests.test_s21_cel_spans import errors, policy

OPERATORS = frozenset(
    {
        "relation_lt",
        "relation_le",
        "relation_gt",
        "relation_ge",
        "relation_eq",
        "relation_ne",
        "relation_in",
        "addition_add",
        "addition_sub",
        "multiplication_mul",
        "multiplication_div",
        "multiplication_mod",
        "unary_not",
        "unary_neg",
    }
)


def fast(src: str):
    with _PARSER_LOCK:
        return _fast_parse(src)


def trees(src: str) -> dict:
    out = {"exact": _parse(src, exact=True), "fast": fast(src)}
    try:
        out["subset"] = parse_subset(src)
    except Unsupported:
        pass
    return out


def texts(tree, src: str, kind: str) -> list[str]:
    return [src[slice(*_span(t, len(src)))] for t in tree.iter_subtrees_topdown() if t.data == kind]


@pytest.mark.parametrize(
    "src,kind,want",
    [
        ("a < b", "relation_lt", ["a <"]),
        ("a <= b", "relation_le", ["a <="]),
        ("x in [1]", "relation_in", ["x in"]),
        ("a  ==  b", "relation_eq", ["a  =="]),
        ("1 + 2 + 3", "addition_add", ["1 + 2 +", "1 +"]),
        ("a - -1", "addition_sub", ["a -"]),
        ("a - - b", "addition_sub", ["a -"]),
        ("f(a) * b[0]", "multiplication_mul", ["f(a) *"]),
        ("(a) % 2 == 0", "multiplication_mod", ["(a) %"]),
        ("-a", "unary_neg", ["-"]),
        ("!!a", "unary_not", ["!", "!"]),
        ("-a in [1]", "unary", ["-a", "a", "[1]", "1"]),
        ("a > -b.c", "unary", ["a", "-b.c", "b.c"]),
        ("!has(a.b) || c", "unary", ["!has(a.b)", "has(a.b)", "a.b", "c"]),
        ('1 + "x" > 2', "addition", ['1 + "x"', "1", "2"]),
    ],
)
def test_an_operator_node_spans_its_operator_in_every_parser(src: str, kind: str, want: list[str]) -> None:
    for name, tree in trees(src).items():
        assert texts(tree, src, kind) == want, name


@pytest.mark.parametrize(
    "src,kind,want",
    [
        ("a // a comment\n  < b", "relation_lt", ["a // a comment\n  <"]),
        ("b'x' + b'y' == b'xy'", "addition_add", ["b'x' +"]),
        ("-0x10 - a", "addition_sub", ["-0x10 -"]),
        ("1u * a", "multiplication_mul", ["1u *"]),
        ("!a.B{}.c", "unary_not", ["!"]),
        ("a in // c\n [1]", "relation_in", ["a in"]),
    ],
)
def test_outside_the_subset_lark_gives_the_same_spans(src: str, kind: str, want: list[str]) -> None:
    with pytest.raises(Unsupported):
        parse_subset(src)
    for tree in (_parse(src, exact=True), fast(src), _parse(src)):
        assert texts(tree, src, kind) == want


def _comparable(node) -> bool:
    """A node whose span the exact tree gives: `true`/`false` have no position in any
    parser, and a leading-dot name's dot is not in the fast trees (as in test_s21)."""
    for x in node.iter_subtrees():
        if x.data in ("dot_ident", "dot_ident_arg"):
            return False
        if x.data == "literal" and x.children[0].type == "BOOL_LIT":
            return False
    return True


def test_the_three_parsers_agree_on_every_span_over_the_corpus() -> None:
    from tests.test_cel_parser import corpus

    compared = 0
    for src in corpus():
        try:
            exact = _parse(src, exact=True)
            lark = fast(src)
        except Exception:  # noqa: BLE001 - not CEL: nothing to compare
            continue
        try:
            sub = parse_subset(src)
        except Unsupported:
            sub = None
        n = len(src)
        if sub is not None:  # the subset parser gives Lark's tree exactly: every span too
            assert [_span(t, n) for t in sub.iter_subtrees()] == [_span(t, n) for t in lark.iter_subtrees()], src
        for a, b in zip(exact.iter_subtrees(), lark.iter_subtrees(), strict=True):
            if a.data in OPERATORS and _comparable(a):
                compared += 1
                assert _span(a, n) == _span(b, n), (src, a.data)
    assert compared > 1000


def test_a_negated_operand_is_shown_with_its_sign() -> None:
    (f,) = typecheck('-x in ["a"]', {"x": FType("double")})
    assert (f.start, f.end) == (0, 2)
    assert f.message == "`-x` is double; `in` looks for it in a list of string"
    (f,) = typecheck('-x in ["a"] // c', {"x": FType("double")})  # (Lark's fast tree)
    assert (f.start, f.end) == (0, 2)


def test_the_message_names_the_whole_negated_operand(snapshot) -> None:
    text = policy('-action.amount in ["a"] || !action.tags.exists(t, t == "x") && -2 * action.amount > "y"')
    errs, result = errors(text)
    assert [d.message for d in errs] == [
        "`-action.amount` is double; `in` looks for it in a list of string",
        "cannot compare double with string (`>`)",
    ]
    assert render_all(errs, result.sources) == snapshot


def test_an_always_failing_negation_is_pointed_at_with_its_sign(snapshot) -> None:
    # W212 looks for the smallest part that fails on its own: the node of `-(...)` spanned
    # only `(...)`, which does not fail, so the warning fell back to the whole condition
    text = policy("policy.n > 1 && -(-9223372036854775807 - 1) > 0").replace(
        "roles [mgr]", "roles [mgr]\n  const n = 3"
    )
    result = load_text(text, "x.policy")
    (d,) = [d for d in result.diagnostics if d.code == "W212"]
    line = text.splitlines()[d.span.line - 1]
    assert line[d.span.col - 1 : d.span.end_col - 1] == "-(-9223372036854775807 - 1)"
    assert render_all([d], result.sources) == snapshot
