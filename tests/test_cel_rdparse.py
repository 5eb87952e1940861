"""The hand-written CEL parser (cel/rdparse.py) gives exactly Lark's tree, or steps aside.

Over the CEL conformance corpus, the shipped and benchmark policies and random
expressions: whenever `parse_subset` returns, its tree equals the tree of Lark's parser
with the engine's options (`parse._fast_parser`) node for node, with the same token
types, texts, positions, lines and columns; whenever Lark refuses an expression,
`parse_subset` refuses it too (Lark then reports the error, as before)."""

from __future__ import annotations

import random

import pytest
from depth import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from policy_engine.cel.parse import _fast_parser
from policy_engine.cel.rdparse import Unsupported, parse_subset
from tests.test_cel_parser import corpus


def dump(t):
    """A tree as nested tuples, tokens with every position field (iterative: deep trees)."""
    out: list = []
    stack = [(t, out)]
    while stack:
        node, into = stack.pop()
        if hasattr(node, "data"):
            kids: list = []
            into.append((node.data, kids))
            stack.extend((c, kids) for c in reversed(node.children))
        else:
            into.append((node.type, str(node), node.start_pos, node.end_pos, node.line, node.column,
                         node.end_line, node.end_column))
    return out


def check(src: str) -> bool:
    """True if the subset parser took `src` (and agreed with Lark)."""
    try:
        want = dump(_fast_parser().parse(src))
    except Exception:  # noqa: BLE001 - Lark refuses: so must we
        with pytest.raises(Unsupported):
            parse_subset(src)
        return False
    try:
        got = parse_subset(src)
    except Unsupported:
        return False
    assert dump(got) == want, src
    return True


def test_the_subset_parser_agrees_with_lark_over_the_corpus():
    exprs = corpus()
    taken = sum(check(s) for s in exprs)
    assert taken > 0.5 * len(exprs)  # most of the corpus is in the subset (1,560 of 2,701)


def test_every_shipped_and_benchmark_condition_is_in_the_subset():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    conds = []
    for f in list((root / "policies").glob("*.policy")) + list((root / "benchmarks/policies").glob("*.policy")):
        conds += re.findall(r"`([^`]+)`", f.read_text())
    missed = [c for c in conds if not check(c)]
    assert len(missed) <= len(conds) // 20, missed[:5]


_ATOMS = ["a", "b.c", "x[0]", "1", "-2", "2.5", "-0.5", '"s"', "'q'", '"a\\"b"', "true", "false", "null", "[]",
          "[1, 2]", "{}", '{"k": 1}', "f()", "f(a, 1)", "a.m(b)", "a.b.c.d", "(a)", "in", "r'x'", "1u", "0x1",
          "1e3", ".a", "a{}", "// c\n a", "1.", "'''t'''", "b'x'", "as", "\"\\d\"", "a\n.b", "\u0663", "\u00b2",
          "\u00e9", "1\u00e9", "-\u0663", "x\u00b2"]
_OPS = [" && ", " || ", " == ", " != ", " < ", " <= ", " > ", " >= ", " in ", " + ", " - ", " * ", " / ", " % ",
        "-", "+-", " ? ", " : ", ",", ".", "!", "", " ", "&", "=", "[", "]", "(", ")"]


@settings(max_examples=examples(800), deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_ATOMS), st.sampled_from(_OPS)), min_size=1, max_size=8),
       st.sampled_from(["", "!", "-", "(", "[", "!-", "- "]))
def test_random_token_soup_agrees_with_lark(parts, prefix):
    check(prefix + "".join(a + o for a, o in parts))


def test_random_well_formed_expressions_agree_with_lark():
    rng = random.Random(11)

    def expr(d):
        if d > 4 or rng.random() < 0.3:
            return rng.choice(_ATOMS[:21])
        k = rng.randrange(6)
        if k == 0:
            return expr(d + 1) + rng.choice(_OPS[:14]) + expr(d + 1)
        if k == 1:
            return f"{expr(d + 1)} ? {expr(d + 1)} : {expr(d + 1)}"
        if k == 2:
            return rng.choice(["!", "-", "!!", "- "]) + expr(d + 1)
        if k == 3:
            return f"({expr(d + 1)})"
        if k == 4:
            return f"{expr(d + 1)}.m({expr(d + 1)}, {expr(d + 1)})"
        return f"[{expr(d + 1)}, {expr(d + 1)}][{expr(d + 1)}]"

    taken = sum(check(expr(0)) for _ in range(2000))
    assert taken > 1000
