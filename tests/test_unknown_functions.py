"""Names a condition uses that the engine cannot evaluate (issue 15): a call of a function or
method CEL does not have (`foo(1)`, `x.lenght()`, `size2(x)`, `math.greatst(..)`), a macro
with the wrong arguments, and Python's `True`/`False`/`None`, are refused by `stopline check`
and `policy_engine.load` (E109), located on the name, with the function CEL has in the help.

At run time each is an error: an `allow` rule that uses one never matches, a stop trigger that
uses one stops every workflow. compile_cel itself is unchanged (standard CEL, unchecked mode).

The rendered text is a syrupy snapshot; refresh with
`python -m pytest tests/test_unknown_functions.py --snapshot-update` and review the diff.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from shared_data import CEL_CONFORMANCE, require

import policy_engine
from policy_engine.cel import CelCompileError, CelError, api, compile_cel
from policy_engine.cel.analysis import LITERAL_SLIPS, _Walk, unknown_names
from policy_engine.cel.compile import _Compiler
from policy_engine.cel.parse import _parse
from policy_engine.cli import main
from policy_engine.diagnostics import PolicyError, render_all
from policy_engine.language.loader import load_paths, load_text

ROOT = Path(__file__).resolve().parents[1]

BASE = """roles [reviewer]

workflow "refunds" {
  version "1.0.0"
  owners { business "Support lead" technical "Payments platform" }
  action issue_refund {
    system "payments"
    reversible full via "payments.reverse_refund" within 30d
    RULE
  }
  STOP
}
"""
STOP = """stop burst {
    owner "Payments platform"
    severity critical
    when `COND`
    resume when {
      reviewed: `RESUME`
    }
    evidence { FIELD: bool }
  }"""


def policy(rule: str = "require_approval by 1 reviewer when `action.amount > 100.0`", stop: str = "",
           resume: str = "evidence.reviewed") -> str:
    text = BASE.replace("RULE", rule)
    field = resume.removeprefix("evidence.").split(" ")[0]  # the evidence field the criterion reads
    return text.replace("STOP", STOP.replace("COND", stop).replace("RESUME", resume).replace("FIELD", field)
                        if stop else "")


def allow(cond: str) -> str:
    return policy(f"allow when `{cond}`")


# name -> (policy text, the text under the caret, a phrase the help must contain)
CASES: dict[str, tuple[str, str, str]] = {
    "unknown_global": (allow("foo(1)"), "foo", "docs/cel.md"),
    "misspelt_method": (allow("action.name.lenght() > 3"), "lenght", "`x.size()`"),
    "misspelt_size": (allow("size2(action.name) > 3"), "size2", "did you mean `size`?"),
    "python_len": (allow("len(action.name) > 3"), "len", "`size(x)`"),
    "python_lower": (allow('action.name.lower() == "x"'), "lower", "`lowerAscii`"),
    "python_startswith": (allow('action.name.startswith("x")'), "startswith", "did you mean `startsWith`?"),
    "method_as_function": (allow('startsWith(action.name, "x")'), "startsWith", "write `x.startsWith(...)`"),
    "conversion_as_method": (allow("action.amount.int() > 3"), "int", "write `int(x)`"),
    "now_called": (allow("now() > timestamp('2024-01-01T00:00:00Z')"), "now", "`now` is a variable"),
    "namespaced_typo": (allow("math.greatst(action.a, action.b) > 3.0"), "math.greatst", "`math.greatest`"),
    "macro_arity": (allow("action.items.exists(action.ok)"), "exists", "`list.exists(x, p)`"),
    "python_any": (allow("any(action.items)"), "any", "`list.exists(x, p)`"),
    "in_a_comprehension": (allow("action.items.all(i, i.lenght() < 3)"), "lenght", "`x.size()`"),
    "python_true": (allow("action.verified == True"), "True", "write `true`"),
    "python_false": (allow("action.verified == False"), "False", "write `false`"),
    "python_none": (allow("action.payee != None"), "None", "write `null`"),
    "nil": (allow("action.payee != nil"), "nil", "write `null`"),
    "in_a_stop_trigger": (policy(stop="action.amount > 1.0 && action.note.lenght() > 3"), "lenght", "`x.size()`"),
    "in_a_resume_criterion": (policy(stop="action.amount > 1e6", resume="evidence.ok == True"), "True", "`true`"),
}


def diagnose(name: str):
    result = load_text(CASES[name][0], f"{name}.policy")
    return result, render_all(result.diagnostics, result.sources) + "\n"


@pytest.mark.parametrize("name", sorted(CASES))
def test_unknown_name_is_refused_where_it_is(name: str, snapshot) -> None:
    text, under, in_help = CASES[name]
    result, rendered = diagnose(name)
    assert rendered == snapshot
    errors = [d for d in result.diagnostics if d.severity == "error"]
    assert [d.code for d in errors] == ["E109"], rendered  # and no E113 for the same name
    (d,) = errors
    assert text[d.span.start : d.span.end] == under, rendered  # the caret is on the name
    assert d.help and in_help in d.help, rendered
    assert f"--> {name}.policy:{d.span.line}:{d.span.col}\n" in rendered
    assert d.message and not d.message[0].isupper() and not d.message.endswith(".")


def test_the_note_says_what_the_slip_does_for_each_effect() -> None:
    (d,) = diagnose("misspelt_method")[0].diagnostics
    assert d.notes == ("the call is an error at run time, and an `allow` rule whose condition errors never matches",)
    (d,) = diagnose("in_a_stop_trigger")[0].diagnostics
    assert "stops the whole workflow" in d.notes[0]
    (d,) = load_text(policy("deny when `foo(1)`"), "x.policy").diagnostics
    assert "counts as matched" in d.notes[0]


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_refused_name_really_errors_at_run_time(name: str) -> None:
    """Only names the engine cannot evaluate are refused: the condition alone, compiled as
    standard CEL, evaluates to an error (unbound function or undeclared reference)."""
    text, under, _ = CASES[name]
    cond = next(c for c in text.split("`")[1::2] if under in c)
    got = compile_cel(cond)({"action": {"name": "abc", "amount": 5.0, "verified": True, "payee": "p",
                                        "items": [1], "a": 1.0, "b": 2.0, "ok": True, "note": "n"},
                             "evidence": {"ok": True}, "now": None})
    assert isinstance(got, CelError)
    assert got.message.startswith(("unbound function", "undeclared reference")), got.message


def test_load_refuses_it_and_check_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "x.policy"
    path.write_text(CASES["misspelt_method"][0], encoding="utf-8")
    with pytest.raises(PolicyError) as e:
        policy_engine.load(str(path))
    assert "unknown method `lenght`" in str(e.value)
    r = CliRunner().invoke(main, ["check", str(path)])
    assert r.exit_code == 1 and "error[E109]" in r.output


ACCEPTED = [
    "size(action.name) > 1 && action.name.size() > 1",  # both call styles of a known function
    "action.name.matches('^a') && matches(action.name, '^a')",
    "action.name.startsWith('a') || action.name.endsWith('z') || action.name.contains('b')",
    "action.name.lowerAscii().trim().replace('a', 'b').split(',').size() > 0",
    "int(action.n) > 1 && double(action.n) > 1.0 && string(action.n) != '' && type(action.n) == int",
    "timestamp(action.at) < now && duration('1h') > duration('30m')",
    "timestamp(action.at).getHours('Europe/Paris') > 8",
    "math.greatest(action.a, action.b) > 1.0 && math.abs(-1) == 1 && strings.quote('a') != ''",
    "base64.encode(b'a') != ''",
    "action.items.exists(i, i > 1) && action.items.all(i, i > 0) && action.items.exists_one(i, i == 1)",
    "action.items.filter(i, i > 1).map(i, i * 2).size() > 0 && action.items.map(i, i > 0, i).size() > 0",
    "action.m.all(k, v, v > 0) && action.m.existsOne(k, v, v == 1)",
    "action.items.transformList(i, v, v * 2).size() > 0 && action.m.transformMap(k, v, v > 0, v).size() > 0",
    "cel.bind(x, action.items, x.exists(i, i > 1))",
    "has(action.note) && action.note != null && action.ok == true && action.no == false",
    "'%s-%d'.format(['a', 1]) != '' && ['a', 'b'].join(',') != ''",
    "action.items.exists(math, math > 1)",  # a comprehension variable named like a namespace
    "action.True == 1 && 'True' != 'None'",  # a field and strings: not literals
]


@pytest.mark.parametrize("cond", ACCEPTED)
def test_standard_calls_are_accepted(cond: str) -> None:
    result = load_text(allow(cond), "ok.policy")
    assert not result.errors, render_all(result.diagnostics, result.sources)
    assert unknown_names(cond) == []


def test_unknown_variable_is_e113_with_a_did_you_mean() -> None:
    """Unknown roots were already refused (E113, per condition kind's scope): unchanged."""
    (d,) = load_text(allow("acton.amount > 1.0"), "x.policy").diagnostics
    assert (d.code, d.help) == ("E113", "did you mean `action`?")
    (d,) = load_text(allow("action.items.exists(i, j > 1)"), "x.policy").diagnostics
    assert d.code == "E113" and d.message == "`j` is not in scope in a gate rule"


def test_conditions_without_a_doubtful_call_are_not_parsed_again(monkeypatch) -> None:
    """The cost: only a condition with a call that could be unknown (or a Python literal) is
    parsed a second time; the common ones, macros included, are settled by a scan of the text
    (the corpus test above checks that the scan never settles one the walk would report)."""
    import policy_engine.cel.parse as parse

    def boom(*a, **k):
        raise AssertionError("parsed")

    monkeypatch.setattr(parse, "_parse", boom)
    for cond in ("action.amount > 100.0", "size(action.name) > 3 && action.name.startsWith('x')",
                 "int(action.n) > 1 && action.name.matches('a')",
                 "action.claims.exists(c, c.kind == \"a, b)\" && c.items.all(i, i > 1))",
                 "action.m.all(k, v, v > 0) && action.items.map(i, i > 0, i * 2).size() > 0"):
        assert unknown_names(cond) == []


def _corpus() -> list[str]:
    out = []
    for p in sorted(require(CEL_CONFORMANCE).glob("*.json")):
        for section in json.loads(p.read_text()).get("section", []):
            out.extend(t["expr"] for t in section.get("test", []))
    return out + [
        "[1].exists(math, math.greatest(1, 2) > 0)", "cel.bind(math, 1, math.greatest(1, 2))", "cel.bind(x, foo(), x)",
        "strings.quotee('a')", "x.all(a)", "x.existsOne(a, b)", "x.map(a, b, c, d)", "x.transformList(a, b)",
        "[1].exists(True, True)", "None.foo()", "(x).foo()", "x[0].bar()", "{1: foo()}", "x ? y.f() : z.g()",
        ".foo()", ".math.greatest(1, 2)", "math.greatest(1, 2).foo()", "a1.startsWith('x')", "cel.foo(1)",
        "m.math.greatest(1)", "x.exists(i, i.exists(j, j.foo()))", "24.indexOf('2') == 0",
        "2.int(1)", "x == 2.int(1)", "[1] int(1)", "x int(y)", "int(x) > 1",  # `in` `t(..)`
        "x.filter(a, 'b,c')", "x.filter(a, 'b', c)", "x.exists(i, i == 'a)') || y.all(j)", "x.map(i, [1, 2], 3, 4)",
        r'x.all(i, "\",") && x.exists(i, r"a", b)', "x.map(i, {1: 2}[i])", "x.all(k, v, '''a,''')",
    ]



def _record_unbound(monkeypatch) -> list:
    """Every compiler made from now on, each recording the names it binds to nothing
    (`unbound_names`)."""
    made: list = []

    class Recording(_Compiler):
        def __init__(self, *a, **k) -> None:
            super().__init__(*a, **k)
            self.unbound_names: list[str] = []
            made.append(self)

        def unbound(self, name, args, node):
            self.unbound_names.append(name)
            return super().unbound(name, args, node)

    monkeypatch.setattr(api, "_Compiler", Recording)
    return made


def test_same_names_as_the_compiler_leaves_unbound(monkeypatch) -> None:
    """The walk's name resolution is the compiler's: over the conformance corpus and the odd
    cases above, the calls it reports are exactly those the compiler binds to nothing (its
    `unbound`, always a run-time error), with and without the prefilter, and the literals it
    reports exactly the references to `True`, `None`, ... (2,456 expressions, ~110 unbound)."""
    made = _record_unbound(monkeypatch)
    checked = with_unbound = 0
    for src in _corpus():
        made.clear()
        try:
            expr = compile_cel(src)
        except (CelCompileError, RecursionError):
            continue
        checked += 1
        want = sorted(made[-1].unbound_names)
        with_unbound += bool(want)
        found = unknown_names(src)
        forced = _Walk().run(_parse(src))
        for got in (found, forced):
            assert sorted(u.name.rsplit(".", 1)[-1] for u in got if u.kind != "literal") == want, src
            assert sorted(u.name for u in got if u.kind == "literal") == sorted(
                r.path[0] for r in expr.references if r.path[0] in LITERAL_SLIPS), src
    assert checked > 1500 and with_unbound > 100


def test_shipped_policies_use_no_unknown_name() -> None:
    for d in ("policies", "benchmarks/policies"):
        result = load_paths([ROOT / d])
        assert not [x for x in result.diagnostics if x.code == "E109"]


def _random_expr(rng, depth: int = 0) -> str:
    """A random, mostly well-formed condition mixing known and unknown names, call styles,
    macros of every arity, namespaces, strings with brackets and commas, and Python literals."""
    atoms = ["x", "y.z", "i", "1", "2.", "2.0", "'a,)'", '"(b,"', "r'c'", "b'e'", "'''d,'''", "true", "null",
             "True", "None", "[1, 2]", "{'k': 1}", "m"]
    if depth > 3:
        return rng.choice(atoms)
    k = rng.randrange(9)

    def sub() -> str:
        return _random_expr(rng, depth + 1)

    def args(n: int) -> str:
        return ", ".join(sub() for _ in range(n))

    if k == 0:
        return rng.choice(atoms)
    if k == 1:
        return f"{sub()} {rng.choice(['==', '&&', '||', '+', 'in', '<'])} {sub()}"
    if k == 2:
        name = rng.choice(["size", "int", "matches", "foo", "len", "exists", "startsWith", "string", "now", "in"])
        return f"{rng.choice(['', '.'])}{name}({args(rng.randrange(3))})"
    if k == 3:
        name = rng.choice(["size", "startsWith", "indexOf", "int", "lenght", "lower", "contains", "format"])
        recv = rng.choice(["x", "y.z", "(x)", "[1]", "2.", "i", "math"])
        return f"{recv}.{name}({args(rng.randrange(3))})"
    if k == 4:
        name = rng.choice(["all", "exists", "exists_one", "existsOne", "map", "filter", "transformList",
                           "transformMap"])
        n = rng.randrange(1, 5)
        parts = [rng.choice(["i", "v", "k", "math", "True"]) if j < n - 1 and rng.random() < 0.8 else sub()
                 for j in range(n)]
        return f"{rng.choice(['x', 'y.z', '[1]', 'm'])}.{name}({', '.join(parts)})"
    if k == 5:
        fn = rng.choice(["math.greatest", "math.greatst", "strings.quote", "base64.encode", "cel.foo", "m.math.least"])
        return f"{fn}({sub()})"
    if k == 6:
        return f"cel.bind({rng.choice(['v', 'math', 'True'])}, {sub()}, {sub()})"
    if k == 7:
        return f"({sub()})"
    return f"{sub()}{rng.choice(['', ' '])}{rng.choice(['int(1)', 'indexOf(1)', '.int(1)'])}"


def test_random_conditions_agree_with_the_compiler(monkeypatch) -> None:
    """2,000 random conditions (seeded): for each one that compiles, the names reported, with
    the prefilter and without, are exactly the calls the compiler leaves unbound (and the
    Python literals it reads as variables): the scan never settles a condition the walk
    would report."""
    import random

    made = _record_unbound(monkeypatch)
    rng = random.Random(15)
    compiled = reported = 0
    for _ in range(2000):
        src = _random_expr(rng)
        made.clear()
        try:
            expr = compile_cel(src)
        except (CelCompileError, RecursionError):
            continue
        compiled += 1
        forced = sorted(_Walk().run(_parse(src)), key=lambda u: (u.start, u.end))
        assert unknown_names(src) == forced, src
        assert sorted(u.name.rsplit(".", 1)[-1] for u in forced if u.kind != "literal") == sorted(
            made[-1].unbound_names), src
        assert sorted(u.name for u in forced if u.kind == "literal") == sorted(
            r.path[0] for r in expr.references if r.path[0] in LITERAL_SLIPS), src
        reported += bool(forced)
    print(f"{compiled} compiled, {reported} with an unknown name")
    assert compiled > 500 and reported > 100
