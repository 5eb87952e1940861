"""The hand-written policy-file parser (language/rdparse.py) gives exactly Lark's tree, or
steps aside.

Over every policy file in the repository (policies/, benchmarks/policies/, tests/,
examples/), generated policy sets (`gen_policies`) and random mutations of them: whenever
`parse_file` returns, its tree equals the tree of Lark's parser with the loader's options
(`parser.get_parser`) node for node: rule names, children and `None` placeholders, token
types, texts and every position field, and every node's `Meta` (positions and the
container positions `propagate_positions` sets). Whenever Lark refuses a text,
`parse_file` refuses it too, so Lark reports every syntax error as before."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from lark import Token, Tree

from policy_engine.language import parser as policy_parser
from policy_engine.language.parser import get_parser
from policy_engine.language.rdparse import KEYWORDS, Unsupported, parse_file
from policy_engine.source import SourceFile

ROOT = Path(__file__).resolve().parent.parent
_TOKEN_FIELDS = ("type", "value", "start_pos", "line", "column", "end_line", "end_column", "end_pos")


def dump(t):
    """A tree as nested tuples: rule names with their Meta, tokens with every position
    field (iterative: deep trees)."""
    out: list = []
    stack = [(t, out)]
    while stack:
        node, into = stack.pop()
        if isinstance(node, Tree):
            kids: list = []
            # (the rule name as text: Lark gives a Token when it builds its parser from the
            # grammar and a plain str when it loads it from its cache; the test passed only
            # where the cache was valid)
            into.append((str(node.data), sorted(vars(node.meta).items()), kids))
            stack.extend((c, kids) for c in reversed(node.children))
        elif isinstance(node, Token):
            into.append((type(node.value).__name__, str(node), *(getattr(node, f) for f in _TOKEN_FIELDS)))
        else:
            into.append(node)
    return out


def lark_tree(text: str):
    try:
        return get_parser().parse(text)
    except Exception:  # any syntax error
        return None


def check(text: str) -> bool:
    """True if the hand-written parser took `text` (and agreed with Lark)."""
    ref = lark_tree(text)
    try:
        mine, depth = parse_file(text)
    except Unsupported:
        return False
    assert ref is not None, f"the hand-written parser accepted what Lark refuses: {text[:300]!r}"
    assert dump(mine) == dump(ref)
    # the nesting it reports is check_nesting's count (E005 above MAX_NESTING)
    assert depth == max_nesting(text)
    return True


def max_nesting(text: str) -> int:
    depth = most = 0
    for _, _, ch in policy_parser._scan(text):
        if ch in "{[":
            depth += 1
            most = max(most, depth)
        elif ch in "]}":  # (`_scan` yields comments and conditions too)
            depth -= 1
    return most


def repo_policy_texts() -> list[tuple[str, str]]:
    out = []
    for top in ("policies", "benchmarks", "tests", "examples"):
        for p in sorted((ROOT / top).rglob("*.policy")):
            try:
                out.append((str(p.relative_to(ROOT)), p.read_bytes().decode("utf-8")))
            except UnicodeDecodeError:  # tests/broken: refused before parsing
                continue
    return out


def generated_texts() -> list[str]:
    from benchmarks.gen_policies import large_type_text, policy_text

    return [policy_text(3), policy_text(120), large_type_text(200)]


def test_keywords_are_the_grammars():
    parser = get_parser()
    assert set(policy_parser._keywords(parser)) == KEYWORDS


def test_every_repository_policy_file():
    texts = repo_policy_texts()
    assert len(texts) > 100
    taken = [path for path, text in texts if check(text)]
    # the valid files are taken (not handed to Lark): the accelerator is in use
    valid = [path for path, text in texts if lark_tree(text) is not None]
    assert len(taken) >= len(valid) - 3, sorted(set(valid) - set(taken))
    assert any(p.startswith("policies/") for p in taken) and any(p.startswith("examples/") for p in taken)


def test_generated_policy_sets():
    for text in generated_texts():
        assert check(text)


def test_edge_cases():
    taken = [
        "",
        "# only a comment\n",
        "roles []\nroles [a, b,]\nconst k = [1, -2.5e3, .5, {\"a\": [true, false, null]}, {},]",
        'workflow "w" {\r\n  action a {\r\n    deny r when `a\n  && b`\r\n  }\r\n}\r\n',
        'workflow "w" { action a { fields { c: list { d?: int } e: map<string, list<int>> } '
        'fields from "x.json" irreversible via "y" runs_while_stopped cost 1.5 usd '
        'allow by 2 of [a] when `y` deny named by 1 r when `z` prerequisite `p` prerequisite p2 `q` } }',
        'workflow "w" { stop s { when `x` resume when { a: `b` "c" d: `e` } evidence { } severity high '
        'rollback "r" notify [n] affects [a] owner "o" receipt [] description "d" } }',
        'workflow "w" { rollback s { compensate [] compensate [a, "b",] when `x` notify [n] when `y` '
        'authorize 1 r and 2 of [a] distinct from a.b, c.d.e route r cascade depth 3 '
        'after window { route q notify [z] } cost 10 hours } }',
        'workflow "w" { reversible_x_ok "no" }',  # refused by both
    ]
    assert [check(t) for t in taken] == [True] * 7 + [False]
    # what the contextual lexer reads differently by state: Lark decides
    for text in ('workflow "w" { action a { stop when `x` } }',  # a keyword as an effect
                 'workflow "w" { action a { fields { system: string } } }',  # a keyword as a field name
                 'workflow "w" { action a { allow by 1legal when `x` } }',  # a number glued to a name
                 'workflow "w" { action a { reversible partial within 60sx } }',
                 "workflow\u00a0\"w\" {}"):
        with pytest.raises(Unsupported):
            parse_file(text)


_INSERTS = sorted(KEYWORDS) + ["x", "1", "1legal", "60s", "-", "'", "?", ":", ",", "[", "]", "{", "}", '"s"',
                                "`a`", "\n", "#c\n", "\t", "\u00a0", "1.5", ".", "<", ">", "a.b", "60 s", "\r\n", "é"]


def test_mutations():
    """Random edits of real files (a keyword, a punctuation mark or a fragment inserted,
    replaced, cut): whatever the hand-written parser takes, Lark gives the same tree."""
    rng = random.Random(16)
    texts = [t for _, t in repo_policy_texts() if len(t) < 20_000] + generated_texts()[:1]
    taken = 0
    for _ in range(600):
        parts = re.split(r"(\s+)", rng.choice(texts))
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(parts))
            op = rng.random()
            if op < 0.4:
                parts[i] = rng.choice(_INSERTS)
            elif op < 0.6:
                parts[i] = ""
            elif op < 0.8:
                parts.insert(i, rng.choice(_INSERTS) + " ")
            else:
                parts[i] = parts[i][: rng.randint(0, len(parts[i]))]
        taken += check("".join(parts))
    assert taken > 50  # the mutations that stay valid are compared, not only refused


def test_load_uses_it_and_keeps_diagnostics(monkeypatch):
    """The loader's parse takes the hand-written tree for a valid file and goes through
    Lark for an invalid one (same diagnostics as Lark alone)."""
    text = 'workflow "w" {\n  action a {\n    deny r when `true`\n  }\n}\n'
    assert policy_parser.parse(SourceFile("a.policy", text)).tree is not None
    bad = 'workflow "w" {\n  action a {\n    deny r wen `true`\n  }\n}\n'
    with_fast = policy_parser.parse(SourceFile("b.policy", bad))

    def refuse(text):
        raise Unsupported

    monkeypatch.setattr(policy_parser, "parse_file", refuse)
    lark_only = policy_parser.parse(SourceFile("b.policy", bad))
    assert with_fast.diagnostics and with_fast.diagnostics == lark_only.diagnostics
    assert policy_parser.parse(SourceFile("a.policy", text)).tree is not None


def test_nesting_limit_and_reserved_names_as_before(monkeypatch):
    """Too deep a value (E005 at the bracket) and a keyword naming a rule (E001) give the
    same diagnostics with the hand-written parser in front as with Lark alone."""
    from policy_engine.limits import MAX_NESTING

    texts = ["const k = " + "[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1) + "\n",
             "const k = " + "[" * MAX_NESTING + "]" * MAX_NESTING + "\n",
             'workflow "w" {\n  action a {\n    deny when when `true`\n  }\n}\n']
    fast = [policy_parser.parse(SourceFile("n.policy", t)) for t in texts]

    def refuse(text):
        raise Unsupported

    monkeypatch.setattr(policy_parser, "parse_file", refuse)
    slow = [policy_parser.parse(SourceFile("n.policy", t)) for t in texts]
    assert [r.diagnostics for r in fast] == [r.diagnostics for r in slow]
    assert fast[0].diagnostics[0].code == "E005" and not fast[1].diagnostics
    assert dump(fast[1].tree) == dump(slow[1].tree)


def test_lowered_locations_equal_the_source_spans(monkeypatch):
    """lower.Lowerer.loc takes lines and columns from the tokens and the nodes' Meta: the
    lowered files equal those lowered with `SourceFile.span` recomputing every span."""
    from policy_engine.language import ir
    from policy_engine.language import lower as lower_mod

    def by_span(self, node):
        if isinstance(node, Token):
            return ir.Loc(self.src.span(node.start_pos, node.end_pos))
        return ir.Loc(self.src.span(node.meta.start_pos, node.meta.end_pos) if not node.meta.empty
                      else self.src.span(0, 0))

    srcs = [SourceFile(p, t) for p, t in repo_policy_texts()] + [SourceFile("gen.policy", generated_texts()[1])]
    trees = [(s, policy_parser.parse(s).tree) for s in srcs]
    fast = [lower_mod.lower(s, t) for s, t in trees if t is not None]
    monkeypatch.setattr(lower_mod.Lowerer, "loc", by_span)
    slow = [lower_mod.lower(s, t) for s, t in trees if t is not None]
    assert len(fast) > 100 and fast == slow and repr(fast) == repr(slow)  # (Loc compares equal whatever its span)
