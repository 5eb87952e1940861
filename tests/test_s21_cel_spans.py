"""Spans of bracketed CEL nodes, and conditions whose type is known without declarations.

1. A list or map literal, a parenthesised expression, a call, an index and a message
   literal span their brackets: the parse trees leave the bracket tokens out, and the
   fast parsers (cel/rdparse.py, Lark without position propagation) took a node's span
   from its first and last token, so the caret of `x > [1]` stood under `1` (and under the
   whole condition for `x > []`). The three parsers now give the same spans for them.
2. E116 "the condition is X, not a bool" was reported only where the workflow declares
   its fields; a condition whose type its literals, operators and functions tell
   (`"yes"`, `1 + 2`, `size(...)`) was silent, though at run time it is an error for every
   action. A field's read, `dyn(...)` or a constant (`policy.x`) is never flagged.

Refresh the snapshots with `python -m pytest tests/test_s21_cel_spans.py --snapshot-update`
and review the diff.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from policy_engine.cel.parse import _PARSER_LOCK, _fast_parse, _parse, _span
from policy_engine.cel.rdparse import Unsupported, parse_subset
from policy_engine.cel.typecheck import not_a_bool, typecheck
from policy_engine.diagnostics import render_all
from policy_engine.fieldtypes import FType
from policy_engine.language.loader import load_text

ROOT = Path(__file__).resolve().parent.parent
BRACKETED = frozenset({"list_lit", "map_lit", "paren_expr", "ident_arg", "member_index", "member_dot_arg",
                       "member_object", "dot_ident_arg"})


def spans(tree, src: str) -> list[tuple[str, int, int]]:
    return [(str(t.data), *_span(t, len(src))) for t in tree.iter_subtrees()]


def fast(src: str):
    with _PARSER_LOCK:
        return _fast_parse(src)


# ------------------------------------------------------------------ 1. spans
@pytest.mark.parametrize("src,kind,text", [
    ("x > [1]", "list_lit", "[1]"),
    ("x > []", "list_lit", "[]"),
    ("x > [ 1 , 2 ]", "list_lit", "[ 1 , 2 ]"),
    ('x > {"a": 1}', "map_lit", '{"a": 1}'),
    ("x > {}", "map_lit", "{}"),
    ("x > (1)", "paren_expr", "(1)"),
    ("x > f(1)", "ident_arg", "f(1)"),
    ("x > f()", "ident_arg", "f()"),
    ("x > y.f(1)", "member_dot_arg", "y.f(1)"),
    ("x > y[1]", "member_index", "y[1]"),
    ("x > (y)[1]", "member_index", "(y)[1]"),
    ("x > [[1], [2]][0]", "member_index", "[[1], [2]][0]"),
])
def test_a_bracketed_node_spans_its_brackets_in_every_parser(src: str, kind: str, text: str) -> None:
    trees = {"exact": _parse(src, exact=True), "fast": fast(src), "subset": parse_subset(src)}
    for name, tree in trees.items():
        node = next(t for t in tree.iter_subtrees_topdown() if t.data == kind)
        s, e = _span(node, len(src))
        assert src[s:e] == text, name
    assert spans(trees["fast"], src) == spans(trees["subset"], src)


@pytest.mark.parametrize("src,kind,text", [
    ("x > a.B{f: 1}", "member_object", "a.B{f: 1}"),
    ("x > a.B{}", "member_object", "a.B{}"),
    ("x > [1, 2] // a comment\n", "list_lit", "[1, 2]"),
    ("x > [b'a'] ", "list_lit", "[b'a']"),
])
def test_outside_the_subset_lark_gives_the_same_spans(src: str, kind: str, text: str) -> None:
    with pytest.raises(Unsupported):
        parse_subset(src)
    for tree in (_parse(src, exact=True), fast(src), _parse(src)):
        node = next(t for t in tree.iter_subtrees_topdown() if t.data == kind)
        s, e = _span(node, len(src))
        assert src[s:e] == text


def test_the_three_parsers_agree_on_spans_over_the_corpus() -> None:
    from tests.test_cel_parser import corpus

    taken = 0
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
        if sub is not None:  # every node, as the subset parser is Lark's tree exactly
            taken += 1
            assert spans(sub, src) == spans(lark, src), src
        for a, b in zip(exact.iter_subtrees(), lark.iter_subtrees(), strict=True):
            if a.data not in BRACKETED or any(x.data in ("dot_ident", "dot_ident_arg") for x in a.iter_subtrees()):
                continue  # (a leading-dot name's dot is not in the fast trees: compile_cel parses it exactly)
            assert _span(a, len(src)) == _span(b, len(src)), (src, a.data)
    assert taken > 1000


def test_the_caret_of_a_mismatch_is_under_the_whole_list() -> None:
    src = "x > [1]"
    (f,) = typecheck(src, {"x": FType("int")})
    assert (f.start, f.end, src[f.start:f.end]) == (4, 7, "[1]")
    assert f.message == "cannot compare int with list<int> (`>`)"
    (f,) = typecheck("[1] < x", {"x": FType("int")})
    assert (f.start, f.end) == (0, 3)
    (f,) = typecheck("x > []", {"x": FType("int")})
    assert (f.start, f.end) == (4, 6)  # (was the whole condition)
    (f,) = typecheck('"a" + size(x) > 1', {"x": FType("string")})
    assert (f.start, f.end) == (6, 13)  # `size(x)`, with its `)`


BASE = """workflow "w" {
  version "1"
  owners {
    business "B"
    technical "T"
  }
  default deny
  roles [mgr]
  action a {
    system "s"
    reversible full via "x" within 1d
    FIELDS
    EFFECT r1 when `CEL`
  }
  rollback standard {
    route support
    authorize 1 mgr
  }
}
"""
FIELDS = "fields {\n      amount: double\n      tags: list<string>\n    }"


def policy(cel: str, effect: str = "allow", fields: str = FIELDS) -> str:
    return BASE.replace("FIELDS", fields).replace("EFFECT", effect).replace("CEL", cel)


def errors(text: str):
    result = load_text(text, "x.policy")
    return [d for d in result.diagnostics if d.severity == "error"], result


def test_a_list_compared_with_a_declared_double_is_shown_with_its_brackets(snapshot) -> None:
    text = policy('action.amount > [1.0, 2.0] || "x" in action.tags')
    (d,), result = errors(text)
    line = text.splitlines()[d.span.line - 1]
    assert line[d.span.col - 1 : d.span.end_col - 1] == "[1.0, 2.0]"
    assert render_all([d], result.sources) == snapshot


# ------------------------------------------------------------------ 2. not a bool, without declarations
@pytest.mark.parametrize("cel,kind", [
    ('"yes"', "string"),
    ("1 + 2", "int"),
    ("2.5 * 2.0", "double"),
    ("size(action.items)", "int"),
    ('action.name.lowerAscii()', "string"),
    ("[1, 2]", "list<int>"),
    ("action.ok ? 1 : 0", "int"),
    ("null", "null"),
])
@pytest.mark.parametrize("effect", ["allow", "deny"])
def test_a_condition_known_not_to_be_a_bool_is_refused_without_declarations(cel: str, kind: str, effect: str) -> None:
    text = policy(cel, effect, fields="")
    (d,), _ = errors(text)
    assert (d.code, d.message) == ("E116", f"the condition is {kind}, not a bool")
    line = text.splitlines()[d.span.line - 1]
    assert line[d.span.col - 1 : d.span.end_col - 1] == cel
    assert any(("never matches" if effect == "allow" else "matches every action") in n for n in d.notes)


@pytest.mark.parametrize("cel", ["action.amount", "dyn(1)", "dyn(action.x) + 1", "policy.x", "true",
                                 "action.a > 1", '"a".startsWith(action.p)', "{}", '{"a": 1}["a"]',
                                 "action.ok ? 1 : 'a'", "action.xs.exists(x, x > 1)", "int(action.a) > 0"])
def test_a_bool_or_an_unknown_type_is_not_flagged_without_declarations(cel: str) -> None:
    assert not_a_bool(cel) is None
    text = policy(cel, fields="").replace('roles [mgr]', 'roles [mgr]\n  const x = true')
    assert [d for d in errors(text)[0] if "not a bool" in d.message] == []


def test_with_declarations_it_is_reported_once() -> None:
    errs, _ = errors(policy("size(action.tags)"))
    assert [(d.code, d.message) for d in errs] == [("E116", "the condition is int, not a bool")]


def test_every_kind_of_condition_is_checked(snapshot) -> None:
    text = """workflow "w" {
  version "1"
  owners {
    business "B"
    technical "T"
  }
  default deny
  roles [mgr]
  action a {
    system "s"
    reversible full via "x" within 1d
    prerequisite p `"ready"`
    allow r1 when `action.amount > 1.0`
  }
  stop s {
    when `size(action.name)`
    severity critical
    owner "Ops"
    resume when {
      c1: `1.0 * 2.0` "the drill passed"
    }
  }
  rollback standard {
    route support
    authorize 1 mgr
  }
}
"""
    errs, result = errors(text)
    e116 = [d for d in errs if d.code == "E116"]
    assert [d.span.line for d in e116] == [12, 16, 20], render_all(errs, result.sources)
    assert render_all(e116, result.sources) == snapshot


def test_no_shipped_or_test_policy_is_newly_flagged() -> None:
    from policy_engine.language.loader import load_paths

    files = [f for d in ("policies", "examples", "tests/engine_policies", "tests/suites", "tests/cases")
             for f in sorted((ROOT / d).rglob("*.policy"))]
    assert len(files) > 50
    flagged = [(f.name, d.span.line) for f in files for d in load_paths([f]).diagnostics
               if "not a bool" in d.message]
    assert flagged == []


def test_the_quick_look_agrees_with_the_type_check_over_the_corpus() -> None:
    # `not_a_bool` skips, without parsing, a condition whose text shows a comparison, `&&`
    # or `||` at the top (most of them): it must say what the whole type check says
    from tests.test_cel_parser import corpus

    extra = ['r"a\\" == b', "!x", " null ", "x ? 1 : 2 == 3", '"a?" + "b"', "'//' == x", "a // c == \n + 1",
             '(a == b) ? "x" : "y"', "size([a == b])", 'a.filter(x, x > 1).map(x, "s")']
    for src in corpus() + extra:
        try:
            _parse(src)
        except Exception:  # noqa: BLE001 - not CEL
            continue
        found = typecheck(src, {})
        want = len(found) == 1 and found[0].message.endswith(", not a bool")
        assert (not_a_bool(src) is not None) == want, src
