"""Issue 16, goal 5 (loading 1,000 rules faster): each shortcut taken at load gives exactly
what the code it replaced gave. The replaced code is kept here as the reference:

- the CEL subset parser's tokenizer (cel/rdparse.py ``_tokens``: one regex pass now, a
  match per token and per run of spaces before), over the conformance corpus, the shipped
  and benchmark policies and random token soup: the same kinds, texts and positions, and
  the same refusals (a refusal only hands the text to Lark; the trees themselves are
  compared with Lark's in tests/test_cel_rdparse.py);
- the tokens it makes without lark's constructor, and the Spans lower.py makes without the
  dataclass's: the same objects;
- the compiler's dispatch table: what ``getattr(self, "c_" + name)`` found;
- ``lints.normalise`` (strings and whitespace runs only, now) against the token-by-token
  reading, and the whitespace-free key W210 groups by first;
- the content hash's normalisation (no call per scalar now) against the recursive one,
  over the shipped policies and the 1,000-rule benchmark set.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from depth import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from lark import Token

from policy_engine.cel import rdparse
from policy_engine.cel.compile import _HANDLERS, _Compiler
from policy_engine.cel.limits import DEFAULT_LIMITS
from policy_engine.language import lints, loader, lower
from policy_engine.source import SourceFile, Span
from tests.test_cel_parser import corpus
from tests.test_cel_rdparse import _ATOMS, _OPS

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------ the tokenizer

# cel/rdparse.py's tokenizer before issue 16 goal 5, verbatim (the reference)
_OLD_STRING = re.compile(r'''"(?:\\[abfnrtv"'\\]|\\\d{3}|\\x[0-9a-fA-F]{2}|\\u[0-9a-fA-F]{4-8}|.)*?"|'''
                         r"""'(?:\\[abfnrtv"'\\]|\\\d{3}|\\x[0-9a-fA-F]{2}|\\u[0-9a-fA-F]{4}|\\U[0-9a-fA-F]{8}|.)*?'""",
                         re.M)
_OLD_TOKEN = re.compile(r"(?P<sp>[\t\n\f\r ]+)|(?P<num>[0-9]+(?:\.[0-9]+)?)|(?P<word>[_a-zA-Z][_a-zA-Z0-9]*)"
                        r"|(?P<op>&&|\|\||==|!=|<=|>=|[()\[\]{},.:?+\-*/%!<>])")
_OLD_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_OLD_DIGITS = frozenset("0123456789")
_OLD_NUM_END = frozenset("0123456789._abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _old_tokens(src: str) -> list:
    out: list = []
    add = out.append
    i, n = 0, len(src)
    operand = True
    match = _OLD_TOKEN.match
    while i < n:
        c = src[i]
        if c == '"' or c == "'":
            if src.startswith(c * 3, i):
                raise rdparse.Unsupported
            m = _OLD_STRING.match(src, i)
            if m is None:
                raise rdparse.Unsupported
            add(("STRING_LIT", m.group(), i, m.end()))
            i, operand = m.end(), False
            continue
        m = match(src, i)
        if m is None:
            raise rdparse.Unsupported
        g = m.lastgroup
        j = m.end()
        if g == "sp":
            i = j
            continue
        t = m.group()
        if g == "word":
            if j < n and src[j] in "\"'":
                raise rdparse.Unsupported
            if t == "true" or t == "false":
                add(("BOOL_LIT", t, i, j))
            elif t == "null":
                add(("NULL_LIT", t, i, j))
            elif t == "in" and not operand:
                add(("in", t, i, j))
                i, operand = j, True
                continue
            elif t in rdparse._RESERVED:
                raise rdparse.Unsupported
            else:
                add(("IDENT", t, i, j))
            i, operand = j, False
            continue
        if g == "op" and t == "-" and operand and j < n and src[j] in _OLD_DIGITS:
            m = _OLD_NUMBER.match(src, j)
            assert m is not None
            g, j, t = "num", m.end(), "-" + m.group()
        if g == "num":
            if j < n and src[j] in _OLD_NUM_END:
                raise rdparse.Unsupported
            add(("FLOAT_LIT" if "." in t else "INT_LIT", t, i, j))
            i, operand = j, False
            continue
        if t == "/" and j < n and src[j] == "/":
            raise rdparse.Unsupported
        if t == "." and operand:
            raise rdparse.Unsupported
        add((t, t, i, j))
        i = j
        operand = t not in ")]}"
    if len(out) > rdparse._MAX_TOKENS:
        raise rdparse.Unsupported
    return out


def _tokens_as_before(src: str):
    """The old tokenizer's reading, as far as the new one keeps it: every token's kind; a
    name's or literal's text and offsets (a `true`/`false` token has none: cel-python's
    lexer callback makes it anew)."""
    try:
        toks = _old_tokens(src)
    except rdparse.Unsupported:
        return "refused"
    return [(k,) if k not in rdparse._LITERALS and k != "IDENT" else (k, t) if k == "BOOL_LIT" else (k, t, s, e)
            for k, t, s, e in toks]


def _tokens_now(src: str):
    try:
        kinds, toks = rdparse._tokens(src)
    except rdparse.Unsupported:
        return "refused"
    out = []
    for k, tok in zip(kinds, toks, strict=True):
        if tok is None:
            assert k not in rdparse._LITERALS and k != "IDENT"
            out.append((k,))
        elif k == "BOOL_LIT":
            assert tok.start_pos is None and tok.line is None
            out.append((k, str(tok)))
        else:
            assert tok.type == k and tok.value == str(tok)
            out.append((k, str(tok), tok.start_pos, tok.end_pos))
    return out


def _policy_conditions() -> list[str]:
    sys.path.insert(0, str(ROOT))
    from benchmarks.gen_policies import policy_text

    return re.findall(r"`([^`]+)`", policy_text(1000))


def test_the_tokenizer_reads_the_corpus_as_before():
    exprs = corpus() + _policy_conditions()
    diffs = [(s, a, b) for s in exprs if (a := _tokens_as_before(s)) != (b := _tokens_now(s))]
    assert not diffs, diffs[:3]


@settings(max_examples=examples(800), deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_ATOMS), st.sampled_from(_OPS)), min_size=1, max_size=8),
       st.sampled_from(["", "!", "-", "(", "[", "!-", "- ", " ", "\n", "\t "]),
       st.sampled_from(["", " ", "\n", " \f", "\u00a0", "#"]))
def test_the_tokenizer_reads_token_soup_as_before(parts, prefix, suffix):
    src = prefix + "".join(a + o for a, o in parts) + suffix
    assert _tokens_now(src) == _tokens_as_before(src)


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab_09 .-+\"'\\\n\t()[]{}<=>!&|,:?%*/xnu\u00e9\u0663")), max_size=24))
def test_the_tokenizer_reads_any_text_as_before(src):
    assert _tokens_now(src) == _tokens_as_before(src)


def test_a_token_made_directly_is_larks_token():
    assert rdparse._DIRECT_TOKENS  # (else the constructor is used, and this test tests nothing new)
    made = rdparse._token("IDENT", "abc", 3, 1, 4, 1, 7, 6)
    want = Token("IDENT", "abc", 3, 1, 4, 1, 7, 6)
    assert type(made) is Token and made == want
    assert [getattr(made, k) for k in rdparse._TOKEN_SLOTS] == [getattr(want, k) for k in rdparse._TOKEN_SLOTS]


# ------------------------------------------------------------------ the compiler's dispatch

def test_the_dispatch_table_is_what_getattr_found():
    names = {n[2:] for n in dir(_Compiler) if n.startswith("c_")}
    assert set(_HANDLERS) == names
    comp = _Compiler("a", DEFAULT_LIMITS, None)
    assert not [k for k in vars(comp) if k.startswith("c_")]  # nothing an instance would shadow
    for name, fn in _HANDLERS.items():
        assert getattr(comp, "c_" + name).__func__ is fn


# ------------------------------------------------------------------ lower's Spans

def test_a_span_made_directly_is_the_dataclasss():
    assert lower._DIRECT_SPANS
    made = lower._span("p.policy", 3, 9, 2, 4, 2, 10)
    want = Span("p.policy", 3, 9, 2, 4, 2, 10)
    assert type(made) is Span and made == want and hash(made) == hash(want) and repr(made) == repr(want)
    assert list(vars(made).items()) == list(vars(want).items())
    assert not (made < want) and not (want < made)


def test_lowered_locations_are_the_sources_spans():
    sources = [SourceFile(str(p), p.read_text()) for p in sorted((ROOT / "policies").glob("*.policy"))]
    res = loader.load_sources(sources)
    assert res.policy_set is not None
    by_path = {s.path: s for s in sources}
    n = 0
    for f in res.policy_set.files:
        for w in f.workflows:
            for a in w.actions:
                for loc in [a.loc] + [r.condition.loc for r in a.rules] + [r.loc for r in a.rules]:
                    sp = loc.span
                    assert type(sp) is Span and sp == by_path[sp.path].span(sp.start, sp.end)
                    n += 1
    assert n > 100


# ------------------------------------------------------------------ W210's normalised conditions

def _normalise_before(source: str) -> str:
    """lints.normalise before issue 16 goal 5, verbatim: token by token (`_TOKENS`)."""
    out: list[str] = []
    prev_word = False
    gap = False
    for m in lints._TOKENS.finditer(source):
        tok = m.group()
        if tok.isspace():
            gap = True
            continue
        word = tok[0].isalnum() or tok[0] == "_"
        if gap and word and prev_word:
            out.append(" ")
        out.append(tok)
        prev_word, gap = word, False
    return "".join(out)


_TEXT = st.text(alphabet=st.sampled_from(list("ab_1 \t\n\"'\\.>=&|()\u00e9\u00b2\u00a0\u2003\u0663\x1c")), max_size=30)


def test_normalise_is_the_token_reading_over_the_corpus():
    exprs = corpus() + _policy_conditions()
    assert [lints.normalise(s) for s in exprs] == [_normalise_before(s) for s in exprs]


@settings(max_examples=examples(800), deadline=None)
@given(_TEXT)
def test_normalise_is_the_token_reading(src):
    assert lints.normalise(src) == _normalise_before(src)


def test_regex_whitespace_is_strs_whitespace():
    """`normalise` finds whitespace with `\\s`; the reading it replaces tested `str.isspace`,
    and W210's coarse key splits with `str.split()`: the same characters, all three."""
    for c in map(chr, range(0x110000)):
        assert bool(re.fullmatch(r"\s", c)) == c.isspace() == (len(("a" + c + "b").split()) == 2), hex(ord(c))


@settings(max_examples=examples(800), deadline=None)
@given(_TEXT, _TEXT)
def test_conditions_normalised_alike_are_alike_without_whitespace(a, b):
    if lints.normalise(a) == lints.normalise(b):
        assert "".join(a.split()) == "".join(b.split())


def test_shadowing_reports_as_before():
    head = 'roles [r]\nworkflow "w" {\n  version "1"\n  owners { business "b" technical "t" }\n  default deny\n'
    body = ('  action a {\n    system "s"\n    reversible full via "x"\n'
            '    deny d when `action.n > 1 && action.s == "a  b"`\n'
            '    allow x when `action.n>1&&action.s==\'a  b\'`\n'
            '    allow y when `action.n  >  1 && action.s == "a  b"`\n'
            '    allow z when `action.n > 1 && action.s == "a b"`\n'
            '    require_approval q by 1 r when `action . n>1 && action.s == "a  b"`\n'
            '  }\n}\n')
    res = loader.load_text(head + body, "x.policy")
    got = [(d.code, d.message) for d in res.diagnostics if d.code == "W210"]
    assert got == [
        ("W210", "rule `y` is shadowed by deny rule `d` (the same condition): it can never decide"),
        ("W210", "rule `q` is shadowed by deny rule `d` (the same condition): it can never decide"),
    ]


# ------------------------------------------------------------------ the content hash

def _normalize_before(value, unordered: bool = False):
    """loader._normalize before issue 16 goal 5, verbatim: a call per value."""
    if isinstance(value, dict):
        return {
            k: (v if k in loader._VERBATIM else _normalize_before(v, k in loader._UNORDERED))
            for k, v in value.items()
            if not (v is None and k in loader._UNSET_NONE)
        }
    if isinstance(value, (list, tuple)):
        items = [_normalize_before(v) for v in value]
        if unordered:
            loader._sort_named(items)
        return items
    return value


def _hash_before(files) -> str:
    import hashlib

    workflows = sorted((w.model_dump(mode="json") for f in files for w in f.workflows), key=lambda w: w["name"])
    roles = sorted({r.name for f in files for r in f.roles})
    consts = sorted((c.model_dump(mode="json") for f in files for c in f.constants), key=lambda c: c["name"])
    doc = {"roles": roles, "constants": consts, "workflows": _normalize_before(workflows)}
    return "sha256:" + hashlib.sha256(loader._canon(doc).encode("utf-8")).hexdigest()


@pytest.mark.parametrize("which", ["policies", "benchmark"])
def test_the_content_hash_is_computed_as_before(which):
    if which == "policies":
        sources = [SourceFile(str(p), p.read_text()) for p in sorted((ROOT / "policies").glob("*.policy"))]
    else:
        sys.path.insert(0, str(ROOT))
        from benchmarks.gen_policies import policy_text

        sources = [SourceFile("big.policy", policy_text(1000))]
    res = loader.load_sources(sources)
    assert res.policy_set is not None
    files = list(res.policy_set.files)
    dumps = [w.model_dump(mode="json") for f in files for w in f.workflows]
    assert json.dumps(loader._normalize(dumps)) == json.dumps(_normalize_before(dumps))
    assert res.policy_set.content_hash == loader.content_hash(files) == _hash_before(files)
