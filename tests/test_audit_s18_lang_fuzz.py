"""Mutation fuzzing of the language front end (audit s18), as a hostile or careless author.

The shipped policies (policies/, benchmarks/policies/, examples/, tests/cases/) are mutated
(tokens and lines deleted, duplicated, swapped; unicode inserted: combining marks, Thai vowel
signs, zero-width and bidi characters, BOM, NUL, CRLF, CR, tabs, wide characters; extreme
numbers; deep bracket nesting; a line repeated hundreds of times; conditions swapped for
odd CEL) and each mutant must give:

- a policy set, or error diagnostics, never an exception; every diagnostic located at the
  line and column of its start offset, with the caret drawn under that character (tabs,
  wide characters and non-spacing marks before it counted as a terminal draws them);
- for a policy set: an engine that compiles, and `stopline fmt` output that loads to the
  same policy hash and the same diagnostics and acknowledgements, and that formats to
  itself.

A second generator keeps the policies valid (comments, blank lines, line breaks, tabs and
acknowledgement directives put between tokens; unicode put in strings and comments), so
that the formatter properties are exercised on nearly every input; a third puts an
acknowledgement directive at every place of a file (own line, end of line, end of a line
holding a single token) and checks
that `stopline fmt` never changes what it acknowledges.

Small budgets here (scaled by `STOPLINE_TEST_DEPTH`, tests/depth.py). A long campaign:

    PYTHONPATH=. python tests/test_audit_s18_lang_fuzz.py 20000 [seed]
"""

from __future__ import annotations

import random
import re
import sys
import unicodedata
from functools import cache
from pathlib import Path

import pytest
from depth import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy_engine.diagnostics import CODES, render
from policy_engine.engine import Engine
from policy_engine.language.fmt import format_source
from policy_engine.language.loader import LoadResult, decode_source, load_sources
from policy_engine.source import SourceFile

ROOT = Path(__file__).resolve().parents[1]


@cache
def seeds() -> dict[str, str]:
    out = {}
    for base in ("policies", "benchmarks/policies", "examples", "tests/cases"):
        for p in sorted((ROOT / base).rglob("*.policy")):
            text = p.read_text(encoding="utf-8", errors="replace")
            if len(text) < 60_000:
                out[str(p.relative_to(ROOT))] = text
    return out


def others_for(name: str) -> list[SourceFile]:
    """The files a seed is loaded with (the shared roles of its set)."""
    shared = {"policies/": "policies/roles.policy", "benchmarks/": "benchmarks/policies/common.policy"}
    for prefix, path in shared.items():
        if name.startswith(prefix) and name != path:
            return [SourceFile(path, (ROOT / path).read_text(encoding="utf-8"))]
    return []


# ------------------------------------------------------------------ mutations
UNI = ["\u0301", "\u0e35", "\u0e48", "\u200b", "\u200d", "\u200e", "\u200f", "\u061c", "\ufeff", "\x00", "\t", "\r\n",
       "\r", "\u4e2d", "\U0001F600", "\u00a0", "\u2028", "\u2029", "\x0b", "\x0c", "\x85", "\ufe0f", "\u202e", "\u2066",
       "\u0430", "\u201c", "\u2212", "\u2265", "\U000E0001", "\x1b[31m", "\\", "\\u", "`", '"', "'", "#", "{", "}", "[",
       "]", "(", ")", ",", ":", "=", ".", "\n", " ", "\t\t", "e\u0301", "\u3000"]
NUMS = ["9223372036854775807", "9223372036854775808", "-9223372036854775809", "18446744073709551616u", "1e309",
        "-1e309", "1e-400", "0x7fffffffffffffff", "1" * 400, "0.0000000001", "00", "1.", ".5", "1e", "-0", "NaN",
        "99999999999999999999999999d", "0s", "0", "-1", "1.5", "4294967296"]
CELS = ["1/0 == 1", "action.amount > 1e309", "int('9223372036854775808') > 0", "9223372036854775807 + 1 > 0",
        "{1: 'a', true: 'b'}[1] == 'a'", "[1,2,3][3] == 1", "duration('9999999999999999s') > duration('1s')",
        "'abc'.matches('(')", "has(action)", "has(action.a.b)", "uint(-1) > 0u", "'x' in {'x': 1}", "0 in {false: 1}",
        "'''a\nb''' == 'a\\nb'", "// comment\ntrue", "1 < 2 < 3", "x ? y : z", "math.greatest([])", "'%s'.format([1])",
        "timestamp(253402300800)", "'abc'.charAt(3) == ''", "base64.decode('***')", "len(action.x) > 0", "True",
        "action.x = 1", "action.x == “a”", "not action.x", "\u0430ction.x"]
TOKEN = re.compile(r"`[^`]*`|\"(?:[^\"\\\n]|\\.)*\"|[A-Za-z_][A-Za-z0-9_]*|\d[\w.]*|#[^\n]*|\s+|.", re.S)


def mutate(rng: random.Random, text: str) -> str:
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(14)
        if op <= 4:
            t = TOKEN.findall(text)
            if not t:
                continue
            i = rng.randrange(len(t))
            if op == 0:
                del t[i]
            elif op == 1:
                t.insert(i, t[i])
            elif op == 2:
                j = rng.randrange(len(t))
                t[i], t[j] = t[j], t[i]
            elif op == 3:
                t[i] = rng.choice(NUMS) if rng.random() < 0.5 else rng.choice(t)
            else:
                t.insert(i, rng.choice(UNI))
            text = "".join(t)
        elif op <= 7:
            lines = text.split("\n")
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            if op == 5:
                del lines[i]
            elif op == 6:
                lines.insert(i, lines[j])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
        elif op == 8:
            i = rng.randrange(len(text) + 1)
            text = text[:i] + rng.choice(UNI) + text[i:]
        elif op == 9:  # deep nesting inside a condition
            k = text.find("`", rng.randrange(len(text) + 1))
            if k != -1:
                opener = rng.choice(["(", "[", "{'a':", "!", "-", "a.", "[1,"])
                text = text[: k + 1] + opener * rng.choice([5, 63, 64, 65, 200, 1000]) + text[k + 1:]
        elif op == 10:  # a line repeated
            lines = text.split("\n")
            i = rng.randrange(len(lines))
            lines[i:i] = [lines[i]] * rng.choice([2, 50, 500])
            text = "\n".join(lines)
        elif op == 11:
            text = text.replace("  ", "\t", rng.randint(1, 30))
        elif op == 12:
            text = text.replace("\n", "\r\n") if rng.random() < 0.5 else text.replace("\n", "\r")
        else:
            conds = list(re.finditer(r"`[^`]*`", text))
            if conds:
                m = rng.choice(conds)
                text = text[: m.start()] + "`" + rng.choice(CELS) + "`" + text[m.end():]
    return text


BETWEEN = ["\n", "  ", "\t", "\n\n\n", " # c\n", "\n# c `x` \"y\" ( { [\n", "\r\n", " #\n", "\n#\u200b\u0301\u4e2d\n",
           "# stopline: acknowledge W202 -- r\n", "\n  # stopline: acknowledge W204, W202 -- why\n", "\u00a0", "\ufeff",
           "\x0c", "\x0b"]


def mild(rng: random.Random, text: str) -> str:
    """Mostly valid changes: layout, comments and directives between tokens, unicode in strings and comments."""
    t = TOKEN.findall(text)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(6)
        i = rng.randrange(len(t) + 1)
        if op <= 2:
            t.insert(i, rng.choice(BETWEEN))
        elif op == 3:
            ws = [k for k, x in enumerate(t) if x.isspace() and "\n" in x]
            if ws:
                t[rng.choice(ws)] = " "
        elif op == 4:
            ks = [k for k, x in enumerate(t) if x.startswith(('"', "#"))]
            if ks:
                k = rng.choice(ks)
                p = rng.randrange(1, max(2, len(t[k])))
                t[k] = t[k][:p] + rng.choice(["\u0301", "\u0e35", "\u200b", "\u4e2d", "\U0001F600", "\\u00e9", "\\\\",
                                              "\\\"", "\t", "\u3000", "\ufe0f"]) + t[k][p:]
        else:
            ks = [k for k, x in enumerate(t) if x.startswith("`")]
            if ks:
                k = rng.choice(ks)
                spaces = [m.start() for m in re.finditer(" ", t[k])]
                if spaces:
                    p = rng.choice(spaces)
                    t[k] = t[k][:p] + rng.choice(["\n      ", "\t", " // c\n", "\n\n", "\r\n"]) + t[k][p:]
    return "".join(t)


# ------------------------------------------------------------------ the properties
def _columns(text: str) -> int:
    """Columns a terminal draws for `text` as a diagnostic shows it (written independently of
    diagnostics._width): a tab is shown as one space, a control or format character as one
    U+FFFD, a non-spacing or enclosing mark takes none, a wide character two, the emoji
    selector widens a symbol before it."""
    n, prev = 0, ""
    for ch in text:
        cat = unicodedata.category(ch)
        if ch == "\ufe0f":
            if prev and ord(prev) >= 0x2000 and unicodedata.east_asian_width(prev) not in ("W", "F"):
                n += 1
            prev = ""
        elif cat in ("Mn", "Me"):
            continue
        elif ch == "\t" or cat in ("Cc", "Cf", "Zl", "Zp"):
            n, prev = n + 1, ""
        else:
            n += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
            prev = ch
    return n


def check_caret(d, src: SourceFile) -> None:
    line = src.line_text(d.span.line)
    if len(line) > 200:  # (a long line is shown cut around the caret)
        return
    out = render(d, src).splitlines()
    k = next(i for i, row in enumerate(out) if re.match(rf"^{d.span.line} \| ", row))
    marker = out[k + 1]
    caret = marker.index("^") - marker.index("|") - 2
    assert caret == _columns(line[: d.span.col - 1]), (d, line, marker)


def _summary(res: LoadResult) -> tuple:
    return (sorted(d.code for d in res.diagnostics), sorted(a.diagnostic.code for a in res.acknowledged))


def check(text: str, name: str) -> LoadResult:
    others = others_for(name)
    src, err = decode_source(text.encode("utf-8", errors="surrogatepass"), name)
    if err is not None:
        assert err.code in ("E002", "E004", "E005")
        return LoadResult(None, [err], {})
    res = load_sources([src, *others])
    assert (res.policy_set is None) == bool(res.errors)
    for d in res.diagnostics:
        assert d.code in CODES and d.message
        if d.code == "W206":  # about the set as a whole (no workflow): no position
            assert not d.span.located
            continue
        s = res.sources[d.span.path]
        assert s.line_col(d.span.start) == (d.span.line, d.span.col), d
        assert d.span.start <= d.span.end <= len(s.text), d
        check_caret(d, s)
    if res.policy_set is None:
        return res
    Engine.from_load_result(res)
    fr = format_source(src)  # raises FormatError on a formatter bug
    assert fr.formatted is not None, fr.diagnostics
    src2, err2 = decode_source(fr.formatted.encode("utf-8"), name)
    assert err2 is None
    res2 = load_sources([src2, *others])
    assert res2.policy_set is not None and res2.policy_set.content_hash == res.policy_set.content_hash
    assert _summary(res2) == _summary(res), fr.formatted
    assert format_source(src2).formatted == fr.formatted
    return res


FUZZ = settings(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


@settings(FUZZ, max_examples=examples(120))
@given(st.sampled_from(sorted(seeds())), st.integers(0, 2**32))
def test_mutated_policies_load_or_give_located_diagnostics(name, seed):
    check(mutate(random.Random(seed), seeds()[name]), name)


@settings(FUZZ, max_examples=examples(80))
@given(st.sampled_from(sorted(seeds())), st.integers(0, 2**32))
def test_relaid_policies_keep_their_meaning_through_fmt(name, seed):
    check(mild(random.Random(seed), seeds()[name]), name)


ACK_SEEDS = ["tests/cases/diagnostics/W202_irreversible_allowed.policy", "tests/cases/fmt/messy_layout.policy",
             "tests/cases/diagnostics/W213_undeclared_evidence.policy", "tests/cases/fmt/long_lists.policy"]


@pytest.mark.parametrize("name", ACK_SEEDS)
def test_a_directive_anywhere_acknowledges_the_same_after_fmt(name):
    text = seeds()[name]
    base = load_sources([SourceFile(name, text), *others_for(name)])
    codes = sorted({d.code for d in base.warnings} - {"W214", "W215", "W216"}) or ["W202"]
    directive = f"# stopline: acknowledge {', '.join(codes)} -- why"
    toks = TOKEN.findall(text)
    places = [i for i in range(len(toks) + 1) if i == len(toks) or toks[i].isspace() or (i and toks[i - 1].isspace())]
    step = max(1, len(places) // examples(60))
    for i in places[::step]:
        mutants = ["".join(toks[:i] + [form] + toks[i:]) for form in (f"\n{directive}\n", f" {directive}\n")]
        if i > 0 and not toks[i - 1].isspace():  # the token before on a line of its own, the directive ending it
            mutants.append("".join(toks[: i - 1] + ["\n", toks[i - 1], f" {directive}\n"] + toks[i:]))
        for mutant in mutants:
            src, err = decode_source(mutant.encode("utf-8"), name)
            if err is None and load_sources([src, *others_for(name)]).policy_set is not None:
                check(mutant, name)


if __name__ == "__main__":  # a long campaign: N mutants of each kind
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    names = sorted(seeds())
    for k in range(n):
        name = rng.choice(names)
        for gen in (mutate, mild):
            mutant = gen(rng, seeds()[name])
            try:
                check(mutant, name)
            except Exception as e:  # noqa: BLE001 - a campaign reports every failure and goes on
                print(f"FAIL {gen.__name__} {name}: {type(e).__name__}: {str(e)[:300]}\n{mutant!r}\n", flush=True)
        if k and k % 500 == 0:
            print(f"{k} x 2 mutants", flush=True)
    print(f"done: {n} x 2 mutants")
