"""The position-free parser gives what cel-python's own parser gives.

policy_engine.cel (cel/parse.py) parses with cel-python's grammar and Lark options minus position propagation
(half the parse time) and takes a subtree's span from its first and last token; syntax
errors go to cel-python's `CELParser`. Over every expression of the CEL conformance
suite and of the shipped and benchmark policies: the same parse tree, the same
references at the same offsets, the same compile errors at the same places.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from lark.exceptions import UnexpectedInput

from policy_engine.cel import CelCompileError, compile_cel
from policy_engine.cel import api as cel_api
from policy_engine.cel.parse import _fast_parser, _parse

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT.parent / "shared" / "cel-conformance"


def corpus() -> list[str]:
    exprs: list[str] = []
    for f in sorted(CONF_DIR.glob("*.json")):
        for section in json.loads(f.read_text()).get("section", []):
            exprs += [t["expr"] for t in section.get("test", []) if isinstance(t.get("expr"), str)]
    for f in sorted(list((ROOT / "policies").glob("*.policy")) + list((ROOT / "benchmarks/policies").glob("*.policy"))):
        exprs += re.findall(r"`([^`]+)`", f.read_text())
    # syntax errors and edge cases
    exprs += ["a +", "a.b.", "(a", "1 +* 2", "a[1", "{1: }", "`x`", "a ? b", "has(a)", "a.all(x)", "",
              "x.y.z(1, 2).w[3] in [1, 2]", "-1 - -2", "!!!a", "a.b()", '"s" + b"x"', "1u + 2"]
    return exprs


def outcome(src: str):
    try:
        e = compile_cel(src)
    except CelCompileError as ex:
        return ("error", ex.message, ex.offset, ex.end, ex.hint)
    except Exception as ex:  # noqa: BLE001 - compared, whatever it is
        return ("raised", type(ex).__name__)
    return ("ok", tuple((r.path, r.offset, r.end) for r in e.references), e.reads, e.type_guard)


def test_corpus_is_large():
    assert len(corpus()) > 2000


def test_fast_parser_matches_cel_pythons_parser(monkeypatch):
    exprs = corpus()
    fast = [outcome(s) for s in exprs]
    monkeypatch.setattr(cel_api, "_parse", lambda source, exact=False: _parse(source, exact=True))
    slow = [outcome(s) for s in exprs]
    diffs = [(s, a, b) for s, a, b in zip(exprs, fast, slow) if a != b]
    assert not diffs, diffs[:5]
    assert sum(1 for x in fast if x[0] == "ok") > 1500 and any(x[0] == "error" for x in fast)


def test_trees_are_equal_apart_from_positions():
    from celpy.celparser import CELParser

    ref = CELParser()
    for s in corpus()[:3000]:
        try:
            want = ref.parse(s)
        except Exception:  # noqa: BLE001 - a syntax error: the fast parser fails too
            with pytest.raises(UnexpectedInput):
                _fast_parser().parse(s)
            continue
        assert same_tree(_fast_parser().parse(s), want), s


def same_tree(a, b) -> bool:
    """Tree equality without recursion (conformance trees are deeper than the stack);
    tokens must agree in type, text and start position."""
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if hasattr(x, "children") != hasattr(y, "children"):
            return False
        if hasattr(x, "children"):
            if x.data != y.data or len(x.children) != len(y.children):
                return False
            stack.extend(zip(x.children, y.children))
        elif (x.type, str(x), x.start_pos) != (y.type, str(y), y.start_pos):
            return False
    return True
