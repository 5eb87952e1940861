"""`stopline fmt`: golden layouts, idempotence and meaning preservation (hypothesis)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from depth import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from update_golden import CASES, ROOT, render_fmt_case

from policy_engine.cli import main
from policy_engine.diagnostics import PolicyError
from policy_engine.language import fmt as formatter
from policy_engine.language.fmt import FormatError, format_path, format_text
from policy_engine.language.loader import load_text
from policy_engine.language.parser import comments_of
from policy_engine.source import SourceFile

FMT_CASES = sorted((CASES / "fmt").glob("*.policy"))
ALL_POLICIES = sorted(p for d in ("tests", "policies") for p in (ROOT / d).rglob("*.policy"))
# Deliberately broken files: formatting must report them, never rewrite them.
BROKEN_DIRS = (ROOT / "tests" / "broken", ROOT / "tests" / "cases" / "diagnostics", ROOT / "tests" / "fuzz")


def lowered(text: str):
    pf, _tree, diags = formatter._lower_ok(SourceFile("x.policy", text))
    assert pf is not None, diags
    return pf


def assert_fmt_laws(text: str) -> str:
    out = format_text(text, "x.policy")
    assert format_text(out, "x.policy") == out  # idempotent
    assert lowered(out) == lowered(text)  # same IR (locations are not part of equality)
    comments = lambda t: [c[2].rstrip() for c in comments_of(SourceFile("x", t))]  # noqa: E731
    assert comments(out) == comments(text)  # every comment kept, in order
    return out


# ------------------------------------------------------------------ golden layouts
@pytest.mark.parametrize("path", FMT_CASES, ids=[p.stem for p in FMT_CASES])
def test_golden_layout(path: Path) -> None:
    assert render_fmt_case(path) == path.with_suffix(".expected").read_text(encoding="utf-8")
    assert_fmt_laws(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", ALL_POLICIES, ids=[str(p.relative_to(ROOT)) for p in ALL_POLICIES])
def test_every_policy_file_is_stable(path: Path) -> None:
    res = format_path(path)
    if res.formatted is None:
        assert any(path.is_relative_to(d) for d in BROKEN_DIRS), res.diagnostics
        assert res.diagnostics and all(d.span.line >= 1 for d in res.diagnostics)
        return
    assert_fmt_laws(res.original.replace("\r\n", "\n"))
    full = load_text(res.original, "x.policy")
    again = load_text(res.formatted, "x.policy")
    assert (full.policy_set is None) == (again.policy_set is None)
    if full.policy_set is not None:
        assert full.policy_set == again.policy_set
        assert full.policy_set.content_hash == again.policy_set.content_hash


def test_comment_placement() -> None:
    src = (
        "# leading\nroles [a,  # inside\n b]  # trailing\n"
        'workflow "w" { # on the brace\n  version "1" # after version\n  # dangling\n}\n# eof\n'
    )
    assert assert_fmt_laws(src) == (
        "# leading\n# inside\nroles [a, b]  # trailing\n\n"
        'workflow "w" {  # on the brace\n  version "1"  # after version\n  # dangling\n}\n\n# eof\n'
    )


def test_blank_lines_collapse_but_are_kept() -> None:
    src = 'workflow "w" {\n  version "1"\n\n\n\n  default deny\n  roles [a]\n}\n'
    assert format_text(src) == 'workflow "w" {\n  version "1"\n\n  default deny\n  roles [a]\n}\n'


def test_conditions_and_strings_are_verbatim() -> None:
    src = 'workflow "w" { action a { deny when `action.x   ==\n  "a\\"b"` description "tab\\t here" } }\n'
    out = assert_fmt_laws(src)
    assert '`action.x   ==\n  "a\\"b"`' in out and '"tab\\t here"' in out


def test_empty_and_comment_only_files() -> None:
    assert format_text("") == ""
    assert format_text("\n\n# just a note   \n\n") == "# just a note\n"


def test_errors_are_reported_not_formatted() -> None:
    with pytest.raises(PolicyError) as ei:
        format_text('workflow "w" { action a { allow `x` } }\n', "bad.policy")
    assert ei.value.diagnostics[0].code == "E001"


def test_refuses_output_that_changes_meaning(monkeypatch) -> None:
    good = formatter._Printer.leaf_lines

    def sabotage(self, node, depth):
        lines = good(self, node, depth)
        return [ln.replace("deny", "allow") for ln in lines]

    monkeypatch.setattr(formatter._Printer, "leaf_lines", sabotage)
    with pytest.raises(FormatError, match="meaning"):
        format_text('workflow "w" { action a { deny when `true` } }\n')


def test_refuses_output_that_loses_comments(monkeypatch) -> None:
    good = formatter._Printer.file

    def sabotage(self, tree):
        return "".join(ln for ln in good(self, tree).splitlines(keepends=True) if "# note" not in ln)

    monkeypatch.setattr(formatter._Printer, "file", sabotage)
    with pytest.raises(FormatError, match="comments"):
        format_text('workflow "w" {\n  # note\n  version "1"\n}\n')


# ------------------------------------------------------------------ CLI
def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


UGLY = 'workflow "w" { version "1" owners { business "B" technical "T" } }\n'


def test_cli_rewrites_and_is_then_clean(tmp_path: Path) -> None:
    p = write(tmp_path, "a.policy", UGLY)
    r = CliRunner().invoke(main, ["fmt", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert p.read_text() == format_text(UGLY)
    r = CliRunner().invoke(main, ["fmt", "--check", str(p)])
    assert r.exit_code == 0 and r.output == ""


def test_cli_check_lists_files_and_writes_nothing(tmp_path: Path) -> None:
    p = write(tmp_path, "a.policy", UGLY)
    write(tmp_path, "b.policy", format_text(UGLY))
    r = CliRunner().invoke(main, ["fmt", "--check", str(tmp_path)])
    assert r.exit_code == 1
    assert r.output.strip() == f"would reformat {p}"
    assert p.read_text() == UGLY


def test_cli_diff(tmp_path: Path) -> None:
    p = write(tmp_path, "a.policy", UGLY)
    r = CliRunner().invoke(main, ["fmt", "--diff", str(p)])
    assert r.exit_code == 1
    assert f"--- {p} (original)" in r.output and "+  owners {" in r.output
    assert p.read_text() == UGLY


def test_cli_broken_file_is_reported_and_kept(tmp_path: Path) -> None:
    text = 'workflow "w" {\n  action a { permit `x` }\n}\n'
    p = write(tmp_path, "bad.policy", text)
    r = CliRunner().invoke(main, ["fmt", "--no-color", str(p)])
    assert r.exit_code == 1
    assert f"{p}:2:21" in r.output and "^" in r.output and "not formatted" in r.output
    assert "Traceback" not in r.output
    assert p.read_text() == text


def test_cli_unreadable_paths_exit_2(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["fmt", str(tmp_path / "missing.policy")])
    assert r.exit_code == 2
    p = tmp_path / "nul.policy"
    p.write_bytes(b'workflow "\x00" {}\n')
    r = CliRunner().invoke(main, ["fmt", str(p)])
    assert r.exit_code == 2
    assert p.read_bytes() == b'workflow "\x00" {}\n'


# ------------------------------------------------------------------ generated policies
NAMES = st.sampled_from(["a", "b", "refund", "send_reply", "x_1", "log_activity", "page"])
CONDS = st.sampled_from([
    "`true`", "`action.amount > 100.0`", "`action.amount <= 10`", '`action.kind == "refund"`',
    "`action.tags.exists(t, t == \"vip\")`", "`size(action.claims) > 2 &&\n  action.amount > 1`",
])
CRIT_CONDS = st.sampled_from(["`evidence.fixed`", "`size(evidence.items) > 0`"])
STRINGS = st.sampled_from(['"helpdesk"', '"Support lead"', '"a # not a comment"', '"with \\"quotes\\""', '""'])
COMMENT = st.sampled_from(["# note", "# TODO: tighten", "#", "# `not` a {condition}"])
SEP = st.sampled_from([" ", "  ", "\n", "\n\n", "\n    ", "\t", "\n\n\n"])


@st.composite
def sep(draw, comments: bool = True) -> str:
    """Whitespace between tokens, sometimes with a comment (which must end its line)."""
    s = draw(SEP)
    if comments and draw(st.integers(0, 5)) == 0:
        s += draw(COMMENT) + "\n" + draw(st.sampled_from(["", "  ", "\n"]))
    return s


@st.composite
def name_list(draw) -> str:
    items = draw(st.lists(NAMES, max_size=4, unique=True))
    trailing = "," if items and draw(st.booleans()) else ""
    return "[" + ",".join(draw(sep(False)) + i for i in items) + trailing + "]"


@st.composite
def stmt_rule(draw, idx: int) -> str:
    effect = draw(st.sampled_from(["allow", "deny", "require_approval"]))
    parts = [effect]
    if draw(st.booleans()):
        parts.append(f"r{idx}")
    if effect == "require_approval":
        parts.append(draw(st.sampled_from(["by 1 reviewer", "by 2 of [reviewer, manager]"])))
    parts += ["when", draw(CONDS)]
    return " ".join(parts)


@st.composite
def action(draw, name: str) -> str:
    stmts = [f"system {draw(STRINGS)}"]
    stmts.append(draw(st.sampled_from([
        'reversible full via "x.undo"', 'reversible partial via "mail.recall" within 60s',
        "irreversible", 'reversible full via "y" within 30d'])))
    if draw(st.booleans()):
        stmts.append(f"prerequisite {draw(st.sampled_from(['', 'opened ']))}`!original.opened`")
    if draw(st.booleans()):
        stmts.append(f"receipt {draw(name_list())}")
    for i in range(draw(st.integers(0, 3))):
        stmts.append(draw(stmt_rule(i)))
    if draw(st.booleans()):
        stmts.insert(draw(st.integers(0, len(stmts))), draw(fields_block("fields")))
    return block(draw, f"action {name}", stmts)


@st.composite
def fields_block(draw, keyword: str) -> str:
    """A `fields`/`evidence` block declaring what CONDS and CRIT_CONDS read, in any order,
    with nested objects, lists of objects, optional fields and comments."""
    decls = [
        f"amount{draw(sep(False))}:{draw(sep(False))}double",
        "kind?: string",
        f"tags: list<{draw(sep(False))}string{draw(sep(False))}>",
        block(draw, "claims: list", ["sourced: bool", "text?: string"]),
        "fixed: bool",
        "items: list<any>",
        "limits: map<string,list<int>>",
        block(draw, "customer?:", ["tier: string", block(draw, "address:", ["country: string"])]),
    ]
    return block(draw, keyword, draw(st.permutations(decls)))


@st.composite
def stop(draw, name: str) -> str:
    crits = [f"c{i}:{draw(sep(False))}{draw(CRIT_CONDS)}" + draw(st.sampled_from(["", ' "why"']))
             for i in range(draw(st.integers(1, 2)))]
    stmts = [f"when {draw(CONDS)}", "severity high", f"owner {draw(STRINGS)}", f"notify {draw(name_list())}",
             block(draw, "resume when", crits)]
    if draw(st.booleans()):
        stmts.append(draw(fields_block("evidence")))
    return block(draw, f"stop {name}", draw(st.permutations(stmts)))


@st.composite
def scenario(draw, name: str) -> str:
    stmts = [draw(st.sampled_from([
        "authorize 1 reviewer", "authorize 1 reviewer distinct from original.reviewer, request.requested_by",
        "authorize 1 manager and 1 of [reviewer, manager]"]))]
    if draw(st.booleans()):
        stmts.append('compensate ["call the customer", "refund",]')
    if draw(st.booleans()):
        stmts.append(f"notify {draw(name_list())}{draw(sep())}when{draw(sep())}`original.sensitive`")
    if draw(st.booleans()):
        stmts.append(f'compensate ["rotate the credential"]{draw(sep())}when `has(original.exposed)`')
    if draw(st.booleans()):
        stmts.append(block(draw, "after window", ["authorize 1 manager", "notify [customer]"]))
    return block(draw, f"rollback {name}", stmts)


def block(draw, header: str, stmts) -> str:
    body = "".join(draw(sep()) + s for s in stmts)
    return f"{header}{draw(sep(False))}{{{body}{draw(sep())}}}"


@st.composite
def policy(draw) -> str:
    wf_items = ['version "1"', 'owners { business "B" technical "T" }']
    if draw(st.booleans()):
        wf_items.append(draw(st.sampled_from(["default deny", "default require_approval"])))
    if draw(st.booleans()):
        wf_items.append("const limit = [1, 2.5, \"x\", {\"k\": [true, null]}]")
    for n in draw(st.lists(NAMES, max_size=3, unique=True)):
        wf_items.append(draw(action(n)))
    for i in range(draw(st.integers(0, 2))):
        wf_items.append(draw(stop(f"s{i}")))
    if draw(st.booleans()):
        wf_items.append(draw(scenario(draw(st.sampled_from(["incident", "reviewer_error", "custom"])))))
    items = ["roles [reviewer, manager]", block(draw, 'workflow "w"', wf_items)]
    if draw(st.booleans()):
        items.insert(1, "const top = 3")
    return "".join(draw(sep()) + it for it in items) + draw(sep())


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy())
def test_generated_policies_keep_their_meaning(text: str) -> None:
    assert load_text(text, "x.policy").errors == []  # the strategy builds valid policies
    out = assert_fmt_laws(text)
    assert load_text(out, "x.policy").policy_set == load_text(text, "x.policy").policy_set
    assert all(ln == ln.rstrip() for ln in out.splitlines())
    assert all((len(ln) - len(ln.lstrip(" "))) % 2 == 0 for ln in out.splitlines() if "`" not in ln)
