"""Hostile policy files: every input gives a policy set or located diagnostics, in bounded time.

Small hypothesis budgets so the regular suite stays fast; the long campaign is
tests/fuzz/fuzz_loader.py (numbers in benchmarks/results/README.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent / "fuzz"))

import hostile_common as hc  # noqa: E402

from policy_engine.language import loader, parser  # noqa: E402
from policy_engine.language.loader import load_paths, load_text  # noqa: E402

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

SEEDS = hc.seed_files()
SEED_TEXT = (hc.CORPUS / "support.policy").read_text(encoding="utf-8")
HEADER = 'roles [r]\nworkflow "w" {\n  version "1"\n  owners { business "b" technical "t" }\n'


def errors(result) -> list[tuple[str, int, int]]:
    return [(d.code, d.span.line, d.span.col) for d in result.errors]


# ------------------------------------------------------------------ the seed is valid

def test_seed_corpus_loads_cleanly():
    assert SEEDS, "no seed policy files"
    r = load_text(SEED_TEXT, "support.policy")
    assert r.policy_set is not None, [str(d.span) + " " + d.message for d in r.errors]


# ------------------------------------------------------------------ generated inputs

@FUZZ
@given(hc.policy_texts())
def test_grammar_generated_files(text):
    hc.check_bytes(text.encode("utf-8", errors="surrogatepass"))


@FUZZ
@given(hc.token_soup())
def test_token_soup(text):
    hc.check_bytes(text.encode("utf-8", errors="surrogatepass"))


@FUZZ
@given(st.sampled_from(SEEDS).flatmap(lambda s: st.tuples(st.just(s[0]), hc.mutations(s[1].encode("utf-8")))))
def test_byte_mutations_of_seeds(named):
    _, data = named
    hc.check_bytes(data)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes(data):
    hc.check_bytes(data)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=500))
def test_arbitrary_text_through_load_text(text):
    r = load_text(text, "t.policy")
    hc.assert_located(r, "t.policy")


# ------------------------------------------------------------------ truncation at every token

def test_truncation_at_every_token():
    toks = list(parser.get_parser().lex(SEED_TEXT))
    cuts = sorted({0, len(SEED_TEXT)} | {t.start_pos for t in toks} | {t.end_pos for t in toks}
                  | {t.start_pos + 1 for t in toks if t.end_pos - t.start_pos > 1})
    assert len(cuts) > 300
    for cut in cuts:
        hc.check_bytes(SEED_TEXT[:cut].encode("utf-8"))


def test_every_token_deleted():
    toks = list(parser.get_parser().lex(SEED_TEXT))
    for t in toks[::3]:
        hc.check_bytes((SEED_TEXT[: t.start_pos] + SEED_TEXT[t.end_pos:]).encode("utf-8"))


# ------------------------------------------------------------------ encodings and odd bytes

def test_empty_file_is_an_empty_policy_set():
    r = hc.check_bytes(b"")
    assert r.policy_set is not None and r.policy_set.workflows == ()


@pytest.mark.parametrize("data", [b" ", b"\n\n\n", b"# only a comment", b"\xef\xbb\xbf", b"\r\n\r\n"])
def test_blank_files(data):
    r = hc.check_bytes(data)
    assert r.policy_set is not None


def test_bom_is_accepted():
    r = hc.check_bytes(b"\xef\xbb\xbf" + SEED_TEXT.encode())
    assert r.policy_set is not None


def test_bom_in_the_middle_is_a_located_error():
    data = SEED_TEXT.encode().replace(b"workflow", b"\xef\xbb\xbfworkflow", 1)
    r = hc.check_bytes(data)
    assert r.policy_set is None
    assert r.errors[0].code == "E002"


def test_crlf_and_cr_line_endings_give_the_same_policy():
    a = hc.check_bytes(SEED_TEXT.encode())
    b = hc.check_bytes(SEED_TEXT.replace("\n", "\r\n").encode())
    c = hc.check_bytes(SEED_TEXT.replace("\n", "\r").encode())
    assert a.policy_set.content_hash == b.policy_set.content_hash == c.policy_set.content_hash


def test_crlf_diagnostics_keep_line_numbers():
    bad = SEED_TEXT.replace("severity high", "severity hihg")
    line = bad[: bad.index("hihg")].count("\n") + 1
    r = hc.check_bytes(bad.replace("\n", "\r\n").encode())
    assert ("E104", line, 14) in errors(r)


def test_nul_byte_is_located():
    data = SEED_TEXT.encode()
    i = data.index(b"action issue_refund")
    r = hc.check_bytes(data[:i] + b"\x00" + data[i:])
    (d,) = r.errors
    assert d.code == "E004" and "NUL" in d.message
    assert (d.span.line, d.span.col) == (SEED_TEXT[:i].count("\n") + 1, 3)


def test_invalid_utf8_is_located():
    data = SEED_TEXT.encode()
    i = data.index(b"helpdesk")
    r = hc.check_bytes(data[:i] + b"\xff\xfe" + data[i:])
    (d,) = r.errors
    assert d.code == "E004" and "UTF-8" in d.message
    assert d.span.line == SEED_TEXT[:i].count("\n") + 1


@pytest.mark.parametrize("bad", [b"\xed\xa0\x80", b"\xc3", b"\xf4\x90\x80\x80", b"\xc0\xaf"])
def test_invalid_utf8_sequences(bad):
    r = hc.check_bytes(b'workflow "' + bad + b'" {}')
    assert r.errors[0].code == "E004"


def test_surrogates_in_load_text_are_an_error_not_a_crash():
    r = load_text('workflow "\ud800" {}', "s.policy")
    hc.assert_located(r, "s.policy")
    assert r.errors[0].code == "E004"


# Regression: a `\ud800` escape in a string decoded to a lone surrogate, and hashing
# the policy set raised UnicodeEncodeError; then it loaded as the escape's text (another
# value than any input holds). It is E002 at the escape, located, and never a crash.
@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "\\ud83d", "x\\ud800y"])
def test_surrogate_escape_in_strings(escape):
    text = SEED_TEXT.replace('"support-replies"', f'"{escape}"').replace('"helpdesk"', f'"{escape}"')
    r = hc.check_bytes(text.encode())
    assert r.policy_set is None
    assert r.errors and {d.code for d in r.errors} == {"E002"}
    lone = escape.strip("xy")
    for d in r.errors:
        assert "surrogate" in d.message
        assert text[d.span.start:d.span.end] == lone


# ------------------------------------------------------------------ numbers

# Regression: integers of more than 4300 digits made int() raise ValueError (fixed in lower.py).
@pytest.mark.parametrize("old,new,code", [
    ("cascade depth 2", "cascade depth " + "9" * 5000, "E108"),
    ("by 1 reviewer", "by " + "9" * 5000 + " reviewer", "E108"),
    ("within 60s", "within " + "9" * 5000 + "s", "E108"),
    ("= 500.0", "= " + "9" * 5000, "E108"),
    ("= 500.0", "= -" + "9" * 5000, "E108"),
    ("= 500.0", "= " + "9" * 5000 + ".5", "E108"),
    ("= 500.0", "= 1e99999", "E108"),
    ("= 500.0", "= 9223372036854775808", "E108"),
    ("cascade depth 2", "cascade depth 0000000000000000000000000000002", None),
    ("within 60s", "within 00000000000000000000000000060s", None),
])
def test_huge_numbers(old, new, code):
    assert old in SEED_TEXT
    r = hc.check_bytes(SEED_TEXT.replace(old, new, 1).encode())
    if code is None:
        assert r.policy_set is not None
    else:
        assert [d.code for d in r.errors] == [code]


# ------------------------------------------------------------------ size and depth limits

def test_ten_megabyte_file_is_rejected_by_size(tmp_path):
    p = tmp_path / "huge.policy"
    p.write_bytes(b"# " + b"x" * (10 * 1024 * 1024) + b"\n")
    r = load_paths([p])
    (d,) = r.errors
    assert d.code == "E005" and "limit is 1000000" in d.message
    assert str(d.span) == str(p)  # the file as a whole: no line or column


def test_ten_megabyte_text_is_rejected_by_size():
    r = hc.check_bytes(b"x" * (10 * 1024 * 1024), bound=1.0)
    assert [d.code for d in r.errors] == ["E005"]


def test_file_just_under_the_limit_loads():
    pad = loader.MAX_FILE_BYTES - len(SEED_TEXT.encode()) - 10
    text = SEED_TEXT + "\n#" + "x" * pad + "\n"
    r = hc.check_bytes(text.encode())
    assert r.policy_set is not None


@pytest.mark.parametrize("opener,closer", [("[", "]"), ("{", "}")])
def test_100k_deep_brackets(opener, closer):
    for text in (
        "const x = " + opener * 100_000 + closer * 100_000,
        "const x = " + opener * 100_000,
        HEADER + opener * 100_000,
        closer * 100_000,
    ):
        r = hc.check_bytes(text.encode(), bound=2.0)
        assert r.policy_set is None
        assert r.errors[0].code in ("E005", "E001", "E002"), r.errors[0]


def test_nesting_just_within_the_limit():
    n = parser.MAX_NESTING - 1
    r = hc.check_bytes(("const x = " + "[" * n + "]" * n).encode())
    assert r.policy_set is not None
    r = hc.check_bytes(("const x = " + "[" * (n + 2) + "]" * (n + 2)).encode())
    assert [d.code for d in r.errors] == ["E005"]


@pytest.mark.parametrize("expr", [
    "(" * 100_000 + "true" + ")" * 100_000,
    "[" * 100_000 + "]" * 100_000 + ".size() > 0",
    "!" * 100_000 + "true",
    "-" * 100_000 + "1 > 0",
    "(" * 100_000,
    "action" + ".a" * 50_000,
])
def test_100k_deep_cel(expr):
    text = HEADER + "  action a { allow when `" + expr + "` }\n}\n"
    r = hc.check_bytes(text.encode(), bound=2.0)
    assert r.policy_set is None
    assert "E005" in [d.code for d in r.errors]


@pytest.mark.parametrize("expr", [
    "(" * 2000 + "true" + ")" * 2000,
    "!" * 4000 + "true",
    "-" * 4000 + "1 > 0",
    "true" + " && true" * 500,
    "1" + " + 1" * 1000 + " > 0",
    "action" + ".a" * 2000 + " == 1",
    "[" + ",".join(["1"] * 1500) + "].size() > 0",
])
def test_cel_within_length_limit_but_deep_or_long(expr):
    assert len(expr) <= 8200
    text = HEADER + "  action a { allow when `" + expr + "` }\n}\n"
    hc.check_bytes(text.encode(), bound=5.0)


def test_very_long_line():
    text = 'const x = "' + "a" * 900_000 + '"'
    r = hc.check_bytes(text.encode())
    assert r.policy_set is not None
    bad = "const x = " + "a" * 900_000
    r = hc.check_bytes(bad.encode())
    assert r.policy_set is None
    assert len(r.errors[0].message) < 200


def test_very_long_line_diagnostic_renders_short():
    bad = 'const x = "' + "a" * 500_000 + '" @'
    r = hc.check_bytes(bad.encode())
    text = r.errors[0] and loader.PolicyError(r.diagnostics, r.sources).render()
    assert len(text) < 2000


def test_many_rules_hit_the_per_file_limit():
    body = "".join(f"  allow r{i} when `action.a == {i}`\n" for i in range(20_001))
    text = HEADER + "  action a {\n" + body + "}\n}\n"
    r = hc.check_bytes(text.encode(), bound=60.0)  # ~4 s on an idle machine; the bound only catches hangs
    assert "E005" in [d.code for d in r.errors]


def test_many_workflows_and_actions():
    parts = []
    for i in range(300):
        parts.append(f'workflow "w{i}" {{ version "1" owners {{ business "b" technical "t" }}\n'
                     f'  action a{i} {{ side_effects [a{(i + 1) % 300}] allow when `true` }} }}')
    r = hc.check_bytes("\n".join(parts).encode())
    assert r.policy_set is not None


def test_documented_limits_match_the_code():
    """SECURITY.md and docs/limits.md state these defaults: change them together
    (tests/test_docs.py checks the docs table)."""
    from policy_engine import cel, cli, engine
    from policy_engine.language import lower

    assert (loader.MAX_FILE_BYTES, loader.MAX_FILES, loader.MAX_CONDITIONS_PER_SET) == (1_000_000, 1000, 10_000)
    assert (parser.MAX_NESTING, lower.MAX_EXPRESSION_LENGTH, lower.MAX_RULES_PER_FILE) == (32, 4096, 10_000)
    assert (engine.MAX_INPUT_ITEMS, engine.MAX_INPUT_DEPTH, engine.MAX_INPUT_CHARS) == (100_000, 200, 4_000_000)
    assert (engine.MAX_CASCADE_RECORDS, engine.MAX_LOOPS_LISTED, engine.MAX_APPROVALS) == (10_000, 100, 1000)
    lim = cel.DEFAULT_LIMITS
    assert (lim.max_expression_length, lim.max_nesting_depth, lim.max_iterations, lim.max_size) == (
        4096,
        64,
        100_000,
        1_000_000,
    )
    assert cel.REGEX_MAX_COST == 1_000_000_000 and cli.MAX_INPUT_BYTES == 16_000_000
    security = (hc.ROOT / "SECURITY.md").read_text(encoding="utf-8")
    for text in (
        "1,000,000 bytes",
        "32 levels",
        "4,096 characters",
        "64 levels",
        "10,000 rules per file, 10,000 conditions per set",
        "100,000 (`MAX_INPUT_ITEMS`)",
        "200 levels",
        "4,000,000",
        "10,000 (`MAX_CASCADE_RECORDS`)",
        "1,000 (`MAX_APPROVALS`)",
        "16 MB",
        "10^9",
    ):
        assert text in security, text


# Bidirectional control characters ("Trojan Source", CVE-2021-42574) make a condition
# display differently from what it does; they are refused anywhere in a policy file,
# including strings, conditions and comments (loader.decode_source, E002 at the char).
@pytest.mark.parametrize(
    "ch", ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"]
)
@pytest.mark.parametrize("where", ['"helpdesk"', "`action.amount <= 100.0", "# Seed corpus"])
def test_bidi_controls_are_refused(ch, where):
    assert where in SEED_TEXT
    i = SEED_TEXT.index(where) + len(where) - 2
    text = SEED_TEXT[:i] + ch + SEED_TEXT[i:]
    r = hc.check_bytes(text.encode("utf-8"))
    (d,) = r.errors
    assert d.code == "E002" and f"U+{ord(ch):04X}" in d.message
    assert (d.span.line, d.span.col) == (text[:i].count("\n") + 1, i - text.rfind("\n", 0, i))


def test_other_unicode_is_fine_in_strings_and_comments():
    text = SEED_TEXT.replace('"helpdesk"', '"hélp·desk 😀 \u200b"').replace("# Seed corpus", "# Séed ✓ corpus")
    assert hc.check_bytes(text.encode("utf-8")).policy_set is not None
