"""Session 21 audit of the authoring experience: where a diagnostic points (tabs, CRLF, a
byte order mark, wide and combining characters, emoji, long lines, multi-line conditions,
the end of a file without a final newline), errors in a `fields from "file.json"` schema,
`stopline check --format json` and exit codes, and `stopline fmt` over mutated policies.

Refresh the snapshots with `python -m pytest tests/test_audit_s21_authoring.py
--snapshot-update` and review the diff.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy_engine.cli import main
from policy_engine.diagnostics import _width, render_all
from policy_engine.language.fmt import format_source
from policy_engine.language.loader import load_sources, load_text
from policy_engine.language.parser import comments_of
from policy_engine.source import SourceFile

ROOT = Path(__file__).resolve().parent.parent

BASE = """workflow "w" {
  version "1"
  owners {
    business "B"
    technical "T"
  }
  default deny
  roles [mgr]
  action a {
    system "s"
    reversible full via "x" within 1d
    FIELDS
    EFFECT r1 when `CEL`
  }
  rollback standard {
    route support
    authorize 1 mgr
  }
}
"""
FIELDS = "fields {\n      amount: double\n      name: string\n    }"


def policy(cel: str, effect: str = "allow", fields: str = FIELDS) -> str:
    return BASE.replace("FIELDS", fields).replace("EFFECT", effect).replace("CEL", cel)


def _lf(text: str) -> str:
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def _position(text: str, marker: str, after: str) -> tuple[int, int]:
    """1-based line and column (in characters) of `marker`, first found after `after`."""
    norm = _lf(text)
    off = norm.index(marker, norm.index(after))
    return norm.count("\n", 0, off) + 1, off - (norm.rfind("\n", 0, off) + 1) + 1


def _caret_under(rendered: str, code: str) -> str:
    """The text of the source line shown from the caret's terminal column on."""
    block = next(b for b in rendered.split("\n\n") if f"[{code}]" in b).split("\n")
    i = next(k for k, line in enumerate(block) if re.match(r"^\s*\d+ \| ", line))
    shown = block[i].split(" | ", 1)[1]
    caret = block[i + 1].split(" | ", 1)[1]
    col = len(caret) - len(caret.lstrip(" "))
    k = 0
    while k < len(shown) and _width(shown[:k]) < col:
        k += 1
    return shown[k:]


CONTEXTS = {
    "plain": lambda t: t,
    "tabs": lambda t: t.replace("    ", "\t\t").replace("  ", "\t"),
    "crlf": lambda t: t.replace("\n", "\r\n"),
    "cr": lambda t: t.replace("\n", "\r"),
    "bom": lambda t: "\ufeff" + t,
    "bom_crlf_tabs": lambda t: "\ufeff" + t.replace("    ", "\t\t").replace("  ", "\t").replace("\n", "\r\n"),
    "no_final_newline": lambda t: t.rstrip("\n"),
}
ERRORS = {
    # name: (condition, effect, code, the text the caret must be on)
    "effect": ("action.amount > 1.0", "permit", "E102", "permit"),
    "cel_eq": ('action.name == "x" && action.amount = 1.0', "allow", "E101", "= 1.0"),
    "field": ('action.name == "x" && action.amout > 1.0', "allow", "E115", "amout"),
    "function": ('action.name == "x" && len(action.name) > 1', "allow", "E109", "len"),
    "after_cjk_emoji_combining": ('action.name == "日本語🎉e\u0301x" && action.amout > 1.0', "allow", "E115", "amout"),
    "after_3000_chars": ('action.name == "' + "x" * 3000 + '" && action.amout > 1.0', "allow", "E115", "amout"),
    "before_3000_chars": ('action.amout > 1.0 && action.name == "' + "x" * 3000 + '"', "allow", "E115", "amout"),
    "multiline_cel": ('action.name == "x" &&\n      action.amout > 1.0', "allow", "E115", "amout"),
    "multiline_cel_syntax": ('action.name == "x" &&\n      action.amount = 1.0', "allow", "E101", "= 1.0"),
    "multiline_cel_wide": ('action.name == "日本" &&\n   "🎉" == "x" && action.amout > 1.0', "allow", "E115", "amout"),
    "multiline_cel_tabs": ('action.name == "x" &&\n\t\taction.amout > 1.0', "allow", "E115", "amout"),
    "effect_after_emoji_line": ('action.name == "🎉"', "permit", "E102", "permit"),
}


@pytest.mark.parametrize("error", ERRORS, ids=list(ERRORS))
@pytest.mark.parametrize("context", CONTEXTS, ids=list(CONTEXTS))
def test_the_position_and_the_caret_are_on_the_mistake(context: str, error: str) -> None:
    cel, effect, code, marker = ERRORS[error]
    text = CONTEXTS[context](policy(cel, effect))
    result = load_text(text, "x.policy")
    d = next(d for d in result.diagnostics if d.code == code)
    assert (d.span.line, d.span.col) == _position(text, marker, "system" if effect == "permit" else "`")
    rendered = render_all(result.diagnostics, result.sources)
    under = _caret_under(rendered, code).replace("\t", " ")
    assert under.startswith(marker.replace("\t", " ")[:20]), rendered


# ------------------------------------------------------------------ the end of the file
@pytest.mark.parametrize("tail", ["", "\n"], ids=["no_final_newline", "final_newline"])
def test_an_unclosed_block_points_just_past_the_last_line_with_or_without_a_final_newline(tail: str) -> None:
    # before: without the final newline the caret sat under the last `"` (col 14), with it
    # just past it (col 15)
    text = 'workflow "w" {\n  action a {\n    system "s"' + tail
    (d,) = load_text(text, "x.policy").diagnostics
    assert d.code == "E003"
    assert (d.span.line, d.span.col) == (3, 15)
    assert _caret_under(render_all([d], {"x.policy": SourceFile("x.policy", text)}), "E003") == ""


# ------------------------------------------------------------------ `fields from` a JSON Schema
def _import(tmp_path: Path, schema: bytes) -> list:
    (tmp_path / "s.json").write_bytes(schema)
    text = policy("has(action.amount) && action.amount > 1.0", fields='fields from "s.json"')
    src = SourceFile(str(tmp_path / "x.policy"), text)
    return [d for d in load_sources([src]).diagnostics if d.severity == "error"]


def test_a_schema_saved_with_a_byte_order_mark_imports(tmp_path: Path) -> None:
    # before: E119 "Unexpected UTF-8 BOM (decode using utf-8-sig)", where a policy file with
    # one loads
    schema = b'\xef\xbb\xbf{"type": "object",\r\n "properties": {"amount": {"type": "number"}}}\r\n'
    assert _import(tmp_path, schema) == []


def test_a_key_given_twice_in_a_schema_is_refused_where_it_is(tmp_path: Path) -> None:
    # before: the last `amount` won silently, and the policy then failed with a type
    # mismatch (E116 "`action.amount` is string") far from the cause
    schema = b'{"type": "object", "properties": {\n  "amount": {"type": "number"},\n  "amount": {"type": "string"}}}'
    (d,) = _import(tmp_path, schema)
    assert d.code == "E119"
    assert "key `amount` is given twice at /properties" in d.message
    assert d.notes == (f"at {tmp_path / 's.json'}:3:3",)


@pytest.mark.parametrize("schema,where,what", [
    (b'{"type": "object",\n  "properties": {"amount": {"type": "numbr"}}}', "2:29", 'type "numbr"'),
    (b'{"type": "object",\n  "properties": {\n    "amount": {"type": "number", "minimum": 0}}}', "3:34", "`minimum`"),
    (b'{"type": "object",\n  "properties": {"amount": {"type": "number"},}}', "2:47", "not JSON"),
    (b'{"type": "object", "required": ["x"],\n  "properties": {}}', "1:20", "`x` is required"),
], ids=["unknown_type", "bound", "syntax", "required"])
def test_a_schema_problem_names_its_file_line_and_column(tmp_path: Path, schema: bytes, where: str,
                                                        what: str) -> None:
    # before: only the JSON pointer (or, for a syntax error, a line and column in the
    # message), never the schema file's `file:line:col`
    (d,) = _import(tmp_path, schema)
    assert d.code == "E119" and what in d.message
    assert d.notes == (f"at {tmp_path / 's.json'}:{where}",)
    line, col = map(int, where.split(":"))
    text = schema.decode()
    offset = sum(len(x) + 1 for x in text.split("\n")[: line - 1]) + col - 1
    assert text[offset] in '"{,}'  # on the key, the value or the stray character


def test_the_schema_note_is_rendered(tmp_path: Path, snapshot, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    schema = '{"type": "object",\n  "properties": {\n    "amount": {"type": ["number", "null"]}}}'
    (tmp_path / "s.json").write_text(schema)
    (tmp_path / "x.policy").write_text(policy("action.amount > 1.0", fields='fields from "s.json"'))
    r = CliRunner().invoke(main, ["check", "--no-color", "x.policy"])
    assert r.exit_code == 1
    assert r.output == snapshot


# ------------------------------------------------------------------ `check --format json`
def test_check_json_is_complete_and_stable(tmp_path: Path) -> None:
    text = policy('action.name == "日本🎉" &&\n\taction.amout > 1.0').replace("\n", "\r\n")
    (tmp_path / "x.policy").write_bytes(b"\xef\xbb\xbf" + text.encode())
    runs = [CliRunner().invoke(main, ["check", "--format", "json", str(tmp_path / "x.policy")]) for _ in range(2)]
    assert runs[0].exit_code == 1 and runs[0].output == runs[1].output
    out = json.loads(runs[0].output)
    assert set(out) == {"ok", "files", "content_hash", "diagnostics", "acknowledged"}
    assert out["ok"] is False and out["content_hash"] is None
    keys = {"code", "severity", "message", "file", "line", "col", "end_line", "end_col", "label", "help", "notes"}
    for d in out["diagnostics"]:
        assert set(d) == keys
    (e115,) = [d for d in out["diagnostics"] if d["code"] == "E115"]
    assert (e115["line"], e115["col"], e115["end_col"]) == (17, 9, 14)  # the tab counts one column


# ------------------------------------------------------------------ `stopline fmt`
POLICIES = sorted((ROOT / "policies").glob("*.policy")) + sorted((ROOT / "examples").rglob("*.policy"))
ROLES = (ROOT / "policies" / "roles.policy").read_text()
INSERTS = [" ", "\n", "\t", "  # c\n", "\n\n\n", " \t\n  ", "\n# note\n",
           "\n# stopline: acknowledge W202, W208 -- reviewed\n", "  # stopline: acknowledge W202 -- reviewed\n"]


def _gaps(text: str) -> list[int]:
    """Offsets of the whitespace between tokens (outside strings, conditions and comments)."""
    out, mode, i = [], None, 0
    while i < len(text):
        ch = text[i]
        if mode is None:
            mode = {'"': '"', "`": "`", "#": "#"}.get(ch)
            if mode is None and ch in " \n":
                out.append(i)
        elif mode == '"' and ch == "\\":
            i += 1
        elif (mode == '"' and ch in '"\n') or (mode == "`" and ch == "`"):
            mode = None
        elif mode == "#" and ch == "\n":
            mode = None
            out.append(i)
        i += 1
    return out


def _meaning(text: str, with_roles: bool):
    sources = [SourceFile("x.policy", text)] + ([SourceFile("roles.policy", ROLES)] if with_roles else [])
    r = load_sources(sources)
    if r.policy_set is None:
        return None
    lines = re.compile(r"line \d+")
    return (r.policy_set.content_hash,
            sorted((d.code, lines.sub("line N", d.message)) for d in r.diagnostics),
            sorted((a.diagnostic.code, a.diagnostic.message, a.reason) for a in r.acknowledged))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(POLICIES), st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.sampled_from(INSERTS)),
                                           min_size=1, max_size=8))
def test_fmt_of_a_mutated_policy_keeps_its_hash_warnings_acknowledgements_and_comments(path: Path, edits) -> None:
    text = path.read_text()
    with_roles = "roles [" not in text  # (the policies of policies/ share roles.policy)
    gaps = _gaps(text)
    for where, insert in sorted(((int(f * len(gaps)), s) for f, s in edits), reverse=True):
        p = gaps[where]
        line_start = text.rfind("\n", 0, p) + 1
        if text[p] == "\n" and "#" in text[line_start:p] and not insert.startswith("\n") and "\n" not in insert[:1]:
            insert = "\n" + insert  # joining a comment with the next line would comment the line out
        text = text[:p] + insert + text[p + 1:]
    before = _meaning(text, with_roles)
    if before is None:  # (an acknowledgement inside a list, say, is refused: nothing to format)
        return
    out = format_source(SourceFile("x.policy", text)).formatted
    assert out is not None
    assert format_source(SourceFile("x.policy", out)).formatted == out
    assert _meaning(out, with_roles) == before
    assert [c[2].rstrip() for c in comments_of(SourceFile("x", out))] == \
        [c[2].rstrip() for c in comments_of(SourceFile("x", text))]


@pytest.mark.parametrize("make", ["missing", "empty_dir"])
def test_check_json_on_a_usage_error_still_prints_the_json(tmp_path: Path, make: str) -> None:
    # before: exit 2 with nothing on stdout, so a CI job parsing `--format json` failed on
    # empty input instead of reading why nothing was checked
    target = tmp_path / "nope.policy"
    if make == "empty_dir":
        target = tmp_path / "empty"
        target.mkdir()
    r = CliRunner().invoke(main, ["check", "--format", "json", str(target)])
    assert r.exit_code == 2
    out = json.loads(r.stdout)
    assert set(out) == {"ok", "files", "content_hash", "diagnostics", "acknowledged"}
    assert out["ok"] is False and out["files"] == [] and out["content_hash"] is None
    (d,) = out["diagnostics"]
    assert (d["code"], d["file"], d["line"], d["col"]) == ("E006", str(target), None, None)  # no position
    assert str(target) in d["message"]


# ------------------------------------------------------------------ a condition that is not a bool
@pytest.mark.parametrize("cel,kind", [
    ("action.amount", "double"),
    ("action.name", "string"),
    ("size(action.name)", "int"),
    ("[action.amount]", "list<double>"),
])
@pytest.mark.parametrize("effect", ["allow", "deny"])
def test_a_condition_that_is_not_a_bool_is_refused_at_check_time(cel: str, kind: str, effect: str) -> None:
    # before: `stopline check` passed it; at run time it is an error for every action, so
    # an `allow` rule never matches and a `deny` rule matches everything
    text = policy(cel.replace("\n", " "), effect)
    (d,) = [d for d in load_text(text, "x.policy").diagnostics if d.severity == "error"]
    assert (d.code, d.message) == ("E116", f"the condition is {kind}, not a bool")
    assert (d.span.line, d.span.col) == _position(text, cel, "`")
    assert d.help is not None and "action.amount > 100.0" in d.help


@pytest.mark.parametrize("cel", ["action.amount > 1.0", "has(action.name)", "dyn(action.name)",
                                 'action.amount > 1.0 ? action.name == "x" : false', "policy_ok_missing || true"])
def test_a_bool_or_an_unknown_type_is_not_flagged(cel: str) -> None:
    errors = [d for d in load_text(policy(cel), "x.policy").diagnostics
              if d.severity == "error" and "not a bool" in d.message]
    assert errors == []


def test_the_not_a_bool_diagnostic_over_two_lines_is_rendered(snapshot) -> None:
    result = load_text(policy('action.name == "x"\n      ? action.amount\n      : 0.0'), "x.policy")
    errors = [d for d in result.diagnostics if d.severity == "error"]
    assert render_all(errors, result.sources) == snapshot
