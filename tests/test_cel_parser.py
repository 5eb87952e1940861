"""The position-free parser gives what cel-python's own parser gives.

policy_engine.cel (cel/parse.py) parses with cel-python's grammar and Lark options minus position propagation
(half the parse time) and takes a subtree's span from its first and last token; syntax
errors go to cel-python's `CELParser`. Over every expression of the CEL conformance
suite and of the shipped and benchmark policies: the same parse tree, the same
references at the same offsets, the same compile errors at the same places. The suite is
kept beside the checkout (../shared/cel-conformance): without it these tests skip, or
fail under STOPLINE_REQUIRE_SHARED=1 (tests/shared_data.py).
"""

from __future__ import annotations

import json
import re

import pytest
from lark.exceptions import UnexpectedInput
from shared_data import CEL_CONFORMANCE, REQUIRE_ENV, ROOT, require

from policy_engine.cel import CelCompileError, compile_cel
from policy_engine.cel import api as cel_api
from policy_engine.cel.parse import _fast_parser, _parse


def corpus() -> list[str]:
    """The conformance suite's expressions (the test skips without them, see
    tests/shared_data.py), the policies' conditions and the odd cases below."""
    exprs: list[str] = []
    for f in sorted(require(CEL_CONFORMANCE).glob("*.json")):
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


def test_without_the_suite_the_tests_skip_and_fail_where_it_is_required(tmp_path, monkeypatch):
    """A fresh clone has no ../shared/: the corpus tests skip, naming the path; under
    STOPLINE_REQUIRE_SHARED=1 (CI) they fail. An empty directory is no suite either."""
    absent = tmp_path / "cel-conformance"
    monkeypatch.setitem(globals(), "CEL_CONFORMANCE", absent)
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    for _ in range(2):
        with pytest.raises(pytest.skip.Exception, match=re.escape(str(absent))):
            corpus()
        absent.mkdir(exist_ok=True)
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="STOPLINE_REQUIRE_SHARED=1"):
        corpus()
    (absent / "basic.json").write_text('{"section": [{"test": [{"expr": "1 + 2"}]}]}')
    assert corpus()[0] == "1 + 2"


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
