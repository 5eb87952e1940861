"""Shared generators and properties for the hostile-input fuzzers.

Used by the regular test suite (tests/test_fuzz_*.py, small budgets) and by the long
campaigns under tests/fuzz/ (large budgets, run as scripts). Not a test module itself.

The loader property: every input -- any bytes -- yields either a policy set or at least
one located error diagnostic (`file:line:col` inside the input), never another
exception, within a time bound.
"""

from __future__ import annotations

import time
from pathlib import Path

from hypothesis import strategies as st

from policy_engine.diagnostics import CODES, render_all
from policy_engine.language.loader import LoadResult, decode_source, load_sources

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).resolve().parent / "corpus"

# Seconds any single load may take in the property (generous: CI machines are slow;
# a hang or a super-linear blow-up shows up as orders of magnitude more).
LOAD_TIME_BOUND = 10.0


def seed_files() -> list[tuple[str, str]]:
    """(name, text) of every small policy file we ship or test with: the fuzz seeds."""
    out: dict[str, str] = {}
    for base in (CORPUS, ROOT / "policies", ROOT / "tests", ROOT / "examples"):
        if not base.is_dir():
            continue
        for p in sorted(base.rglob("*.policy")):
            try:
                if p.stat().st_size > 200_000:
                    continue
                out[str(p.relative_to(ROOT))] = p.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
    return sorted(out.items())


def load_bytes(data: bytes, path: str = "fuzz.policy") -> LoadResult:
    """What `load_paths` does with one file's bytes, without touching the disk."""
    src, err = decode_source(data, path)
    if err is not None:
        return LoadResult(None, [err], {path: src} if src is not None else {})
    return load_sources([src])


def assert_located(result: LoadResult, path: str, text: str | None = None) -> None:
    """The located-diagnostics half of the property."""
    assert isinstance(result, LoadResult)
    if result.policy_set is None:
        assert result.errors, "no policy set and no error diagnostic"
    else:
        assert not result.errors, "a policy set despite errors"
        assert result.policy_set.content_hash.startswith("sha256:")
    nlines = (text.count("\n") + 1) if text is not None else None
    for d in result.diagnostics:
        assert d.code in CODES, d.code
        assert d.span.path == path, (d.span.path, path, d)
        if not d.span.located:  # the file as a whole (too big, too many conditions), or the
            # set as a whole (no workflow, W206): the path alone
            assert d.code in ("E004", "E005", "W206"), d
            continue
        assert d.span.line >= 1 and d.span.col >= 1, d
        if nlines is not None:
            assert d.span.line <= nlines, (d.span.line, nlines, d)
        assert d.message and "Traceback" not in d.message
    rendered = render_all(result.diagnostics, result.sources)
    for d in result.errors:
        assert str(d.span) in rendered


def check_bytes(data: bytes, path: str = "fuzz.policy", bound: float = LOAD_TIME_BOUND) -> LoadResult:
    """The whole property for one input. Raises AssertionError (or the unexpected exception)."""
    t0 = time.perf_counter()
    result = load_bytes(data, path)
    elapsed = time.perf_counter() - t0
    text = None
    if result.sources.get(path) is not None:
        text = result.sources[path].text
    assert_located(result, path, text)
    assert elapsed < bound, f"load took {elapsed:.1f}s"
    return result


# ------------------------------------------------------------------ grammar-aware generation

KEYWORDS = [
    "workflow", "roles", "const", "version", "owners", "default", "action", "system", "description",
    "reversible", "irreversible", "via", "within", "prerequisite", "side_effects", "receipt", "verify",
    "when", "by", "of", "stop", "severity", "owner", "affects", "rollback", "notify", "resume",
    "route", "authorize", "and", "distinct", "from", "compensate", "cascade", "depth", "after", "window",
    "true", "false", "null", "allow", "deny", "require_approval", "full", "partial", "business",
    "technical", "high", "low", "critical", "medium",
]
PUNCT = ["{", "}", "[", "]", ",", ":", "=", ".", "\n", " ", "\t", "#", "`", '"']

names = st.one_of(
    st.sampled_from(["reviewer", "legal", "a", "b", "send", "reviewer_error", "incident", "x", "_", "original",
                     "request", "policy", "Bob", "bob"]),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True),
)
strings = st.one_of(
    st.sampled_from(['"x"', '""', '"\\ud800"', '"\\u0000"', '"\\x"', '"a\\"b"', '"1.0"', '"support"']),
    st.text(st.characters(blacklist_characters='"\\\n', blacklist_categories=("Cs",)), max_size=20).map(
        lambda s: f'"{s}"'),
)
numbers = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["1e400", "-1e400", "00", "0.", ".5", "9" * 5000, "1" * 30 + ".0", "+1", "-0"]),
)
durations = st.one_of(st.from_regex(r"[0-9]{1,25}[smhd]", fullmatch=True), st.sampled_from(["0s", "60s", "30d"]))
cel_exprs = st.one_of(
    st.sampled_from([
        "true", "false", "action.amount > 100.0", "action.recipient.domain in policy.blocked_domains",
        "action.claims.exists(c, !c.sourced)", "size(evidence.x) > 0", "!original.recipient_opened",
        "1 / 0 == 1", "action.a.b.c.d.e", "(((((((true)))))))", "[1,2,3].all(x, x > 0)",
        "\"\\ud800\" == action.x", "9223372036854775807 + 1 > 0", "undefined_var", "policy.nope",
        "action.x ? 1 : 2", "{'a': 1}['b'] == 1", "", "   ", "((", "))", "a.b(", "🙂", "action.x.matches('(a+)+$')",
        "timestamp('2026-01-01T00:00:00Z') < now", "duration('1h') > duration('1m')",
    ]),
    st.text(max_size=40).filter(lambda s: "`" not in s),
)


def cel(e: str) -> str:
    return "`" + e + "`"


@st.composite
def values(draw, depth=0):
    if depth > 3 or draw(st.booleans()):
        return draw(st.one_of(strings, numbers, st.sampled_from(["true", "false", "null"])))
    if draw(st.booleans()):
        items = draw(st.lists(values(depth + 1), max_size=4))
        return "[" + ", ".join(items) + draw(st.sampled_from(["", ","])) + "]"
    pairs = draw(st.lists(st.tuples(strings, values(depth + 1)), max_size=3))
    return "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"


name_lists = st.lists(names, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]")


@st.composite
def gate_rule(draw):
    eff = draw(st.one_of(st.sampled_from(["allow", "deny", "require_approval"]), names))
    nm = draw(st.one_of(st.just(""), names))
    appr = draw(st.sampled_from(["", "by 1 reviewer", "by 2 of [legal, executive]", "by 0 reviewer",
                                 "by 99999999999999999999999 reviewer", "by 1 of []"]))
    return f"{eff} {nm} {appr} when {cel(draw(cel_exprs))}"


@st.composite
def action_item(draw):
    return draw(st.one_of(
        strings.map(lambda s: f"system {s}"),
        strings.map(lambda s: f"description {s}"),
        strings.map(lambda s: f"verify {s}"),
        st.tuples(st.sampled_from(["reversible full", "reversible partial", "irreversible", "reversible nope"]),
                  st.one_of(st.just(""), strings.map(lambda s: f"via {s}")),
                  st.one_of(st.just(""), durations.map(lambda d: f"within {d}"))).map(" ".join),
        st.tuples(st.one_of(st.just(""), names), cel_exprs).map(lambda t: f"prerequisite {t[0]} {cel(t[1])}"),
        name_lists.map(lambda xs: f"side_effects {xs}"),
        name_lists.map(lambda xs: f"receipt {xs}"),
        gate_rule(),
    ))


@st.composite
def stop_item(draw):
    return draw(st.one_of(
        cel_exprs.map(lambda e: f"when {cel(e)}"),
        st.sampled_from(["severity high", "severity hihg", "severity critical"]),
        strings.map(lambda s: f"owner {s}"),
        strings.map(lambda s: f"rollback {s}"),
        st.just("affects [helpdesk]"), st.just("notify [customer]"), st.just("receipt [a, b]"),
        st.lists(st.tuples(names, cel_exprs), max_size=3).map(
            lambda cs: "resume when { " + " ".join(f"{n}: {cel(e)}" for n, e in cs) + " }"),
    ))


@st.composite
def scenario_item(draw):
    return draw(st.one_of(
        names.map(lambda n: f"route {n}"),
        st.sampled_from([
            "authorize 1 reviewer distinct from original.reviewer, request.requested_by",
            "authorize 1 incident_commander and 1 policy_owner",
            "authorize 1 of [legal, executive]", "authorize 0 reviewer", "authorize 1 reviewer distinct from nope.x",
            "cascade depth 2", "cascade depth 65", "cascade depth " + "9" * 5000,
            "compensate [send, \"call the customer\"]", "compensate []", "notify [customer]",
            "after window { route esc authorize 1 support_manager notify [x] }",
        ]),
    ))


@st.composite
def block(draw, head: str, items) -> str:
    body = draw(st.lists(items, max_size=6))
    return head + " {\n  " + "\n  ".join(body) + "\n}"


@st.composite
def workflow_item(draw):
    return draw(st.one_of(
        strings.map(lambda s: f"version {s}"),
        st.just('owners { business "b" technical "t" }'),
        st.sampled_from(['owners { }', 'owners { bizness "b" }']),
        st.sampled_from(["default require_approval", "default deny", "default allow", "default maybe"]),
        name_lists.map(lambda xs: f"roles {xs}"),
        st.tuples(names, values()).map(lambda t: f"const {t[0]} = {t[1]}"),
        names.flatmap(lambda n: block(f"action {n}", action_item())),
        names.flatmap(lambda n: block(f"stop {n}", stop_item())),
        st.one_of(names, st.sampled_from(["reviewer_error", "incident", "customer_request"])).flatmap(
            lambda n: block(f"rollback {n}", scenario_item())),
    ))


@st.composite
def policy_texts(draw) -> str:
    """A policy file built from the grammar's statements, valid or subtly not."""
    items = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["workflow", "roles", "const", "junk"]))
        if kind == "workflow":
            items.append(draw(strings.flatmap(lambda s: block(f"workflow {s}", workflow_item()))))
        elif kind == "roles":
            items.append(f"roles {draw(name_lists)}")
        elif kind == "const":
            items.append(f"const {draw(names)} = {draw(values())}")
        else:
            items.append(draw(token_soup()))
    sep = draw(st.sampled_from(["\n", "\r\n", " ", "\n# comment `x` \"y\n"]))
    return sep.join(items)


@st.composite
def token_soup(draw) -> str:
    """A stream of the language's tokens in random order."""
    toks = draw(st.lists(st.one_of(st.sampled_from(KEYWORDS + PUNCT), names, strings, numbers.filter(
        lambda n: len(n) < 50), cel_exprs.map(cel)), max_size=40))
    return " ".join(toks)


# ------------------------------------------------------------------ byte-level mutation

SPECIAL = [b"\x00", b"\xff", b"\xef\xbb\xbf", b"\r", b"\r\n", b"`", b'"', b"{", b"}", b"[", b"]", b"#",
           b"\xc3", b"\xed\xa0\x80", b"\\", b"\\u", b"\t", b"\x0b", b"\x85", "\u2028".encode()]


@st.composite
def mutations(draw, seed: bytes) -> bytes:
    """Apply 1..8 random byte edits to a seed file."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 8))):
        n = len(data)
        op = draw(st.sampled_from(["flip", "delete", "insert", "special", "dup", "truncate", "swap"]))
        i = draw(st.integers(0, n)) if n else 0
        if op == "flip" and n:
            i = min(i, n - 1)
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "delete" and n:
            j = min(n, i + draw(st.integers(1, 40)))
            del data[i:j]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "special":
            data[i:i] = draw(st.sampled_from(SPECIAL))
        elif op == "dup" and n:
            j = min(n, i + draw(st.integers(1, 200)))
            data[i:i] = data[i:j] * draw(st.integers(1, 4))
        elif op == "truncate":
            del data[i:]
        elif op == "swap" and n > 2:
            j = draw(st.integers(0, n - 1))
            a, b = sorted((i if i < n else n - 1, j))
            data[a], data[b] = data[b], data[a]
    return bytes(data)
