"""Audit s18 of the language front end: defects a hostile or careless policy author hit, found
by mutation fuzzing (tests/test_audit_s18_lang_fuzz.py) and pinned here, each test naming it.

- the caret sat one or more columns right of the offending text after a Thai vowel sign
  or a variation selector earlier on the line (marks of combining class 0 were
  counted as one column);
- `stopline fmt` changed which warnings an acknowledgement acknowledges: a directive on a
  line of its own inside a block's header (between `action send_reply` and its `{`)
  acknowledged nothing, and fmt moved it above the block, where it acknowledges the block's
  warnings; a directive ending a line on which an outer declaration begins acknowledged
  that declaration, and fmt moved it into a nested statement, where it acknowledges less
  or nothing (`check --strict` passed before `fmt` and failed after);
- `fields from "x.json"` with a schema whose `type` is an object crashed the loader
  (TypeError: unhashable type) instead of reporting E119;
- a double literal too large for a double in a condition (`action.amount > 1e400`) was
  taken as infinity, so the `deny` rule never fired and `check` said nothing (a constant
  `1e400` is E108, an integer literal too large E101; cel-go refuses it too);
- a string with an escape JSON does not have (`"evil\\.com"`, `"\\x41"`) was silently taken
  as written, escapes and all: a constant `["evil\\.com"]` never equals `evil.com`, so a
  `deny` rule reading it never fired; and a string holding a typed tab kept its other
  escapes undecoded (`"a<TAB>\\n"`).

Refresh the snapshots with `python -m pytest tests/test_audit_s18_lang_frontend.py
--snapshot-update` and review the diff.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from policy_engine.diagnostics import PolicyError, _width, render_all
from policy_engine.language.fmt import format_text
from policy_engine.language.loader import load_paths, load_text, require_ok

ROOT = Path(__file__).resolve().parents[1]
HEAD = 'roles [reviewer]\n\nworkflow "w" {\n  version "1"\n  owners { business "b" technical "t" }\n'


def _caret_col(rendered: str) -> int:
    """The display column (0-based, after `| `) of the first caret of a rendered diagnostic."""
    for line in rendered.splitlines():
        if "^" in line and "|" in line:
            return line.index("^") - line.index("|") - 2
    raise AssertionError(rendered)


# ------------------------------------------------------------------ the caret after marks of class 0

@pytest.mark.parametrize("text, columns", [
    ("ที่ดี", 2),  # Thai: two letters, three vowel and tone marks (two of class 0)
    ("กี่", 1),  # Thai: a letter, a vowel sign and a tone mark (the vowel sign of class 0)
    ("❤️", 2),  # a symbol with the emoji variation selector: drawn two columns wide
    ("p\ufe0f", 1),  # the selector after a letter changes nothing
    ("e\u0301", 1),  # a combining acute (class 230)
    ("中文", 4),
    ("abc", 3),
])
def test_width_counts_the_columns_a_terminal_draws(text, columns):
    assert _width(text) == columns


@pytest.mark.parametrize("before", ["ที่ดี", "❤️", "กี่中"])
def test_the_caret_sits_under_the_slip_after_marks_of_combining_class_0(before, snapshot):
    text = HEAD + f'  action a {{\n    system "s"\n    deny d when `action.x == "{before}" && action.y = 1`\n  }}\n}}\n'
    res = load_text(text, "x.policy")
    [d] = res.errors
    out = render_all([d], res.sources)
    line = text.splitlines()[d.span.line - 1]
    assert line[d.span.col - 1] == "="
    assert _caret_col(out) == _width(line[: d.span.col - 1])
    # the columns in front of the caret are the columns the line's text before `=` takes
    assert _caret_col(out) == len('    deny d when `action.x == "') + _width(before) + len('" && action.y ')
    assert out == snapshot


# ------------------------------------------------------------------ fmt keeps what a directive acknowledges

W202 = HEAD + '  action wire_refund {\n    system "payments"\n    irreversible\n    allow x when `true`\n  }\n}\n'
DIRECTIVE = "# stopline: acknowledge W202 -- written off under 5.00"


def _acks(text: str) -> tuple[list[str], list[str]]:
    res = load_text(text, "x.policy")
    assert not res.errors, [(d.code, d.message) for d in res.errors]
    return sorted(d.code for d in res.diagnostics), sorted(a.diagnostic.code for a in res.acknowledged)


def _same_after_fmt(text: str) -> tuple[list[str], list[str]]:
    before = _acks(text)
    once = format_text(text, "x.policy")
    assert format_text(once, "x.policy") == once
    assert _acks(once) == before, once
    assert load_text(once, "x.policy").policy_set.content_hash == load_text(text, "x.policy").policy_set.content_hash
    return before


@pytest.mark.parametrize("header", [
    ('workflow "w"', "\n"),  # between the name and the `{`
    ("workflow", "\n"),  # between the keyword and the name
    ("  action wire_refund", "\n"),
    ("  action", "\n"),
])
def test_a_directive_inside_a_blocks_header_is_attached_to_the_block(header):
    head, _ = header
    if head.startswith("workflow"):
        rest = 'workflow "w" {'[len(head):]
        text = W202.replace('workflow "w" {', f"{head}\n  {DIRECTIVE}\n{rest.lstrip()}", 1)
    else:
        rest = "  action wire_refund {"[len(head):]
        text = W202.replace("  action wire_refund {", f"{head}\n  {DIRECTIVE}\n  {rest.lstrip()}", 1)
    res = load_text(text, "x.policy")
    assert [a.diagnostic.code for a in res.acknowledged] == ["W202"]
    assert not [d for d in res.diagnostics if d.code in ("W202", "W215")]
    assert _same_after_fmt(text) == ([], ["W202"])


def test_a_directive_inside_a_stop_or_scenario_header_is_attached_to_it():
    text = (HEAD + '  action a {\n    system "s"\n    reversible full via "x"\n  }\n'
            '  stop s\n  # stopline: acknowledge W213 -- the evidence is filed by hand\n  {\n'
            '    when `action.amount > 1`\n    severity low\n    owner "o"\n'
            '    resume when { ok: `evidence.ok` }\n  }\n'
            '  rollback customer_request\n  # stopline: acknowledge W211 -- nobody may\n  {\n'
            '    authorize 1 of []\n  }\n'
            '}\n')
    codes, acked = _same_after_fmt(text)
    assert acked == ["W211", "W213"]
    assert "W215" not in codes


def test_a_directive_ending_a_line_inside_a_blocks_header_is_attached_to_the_block():
    text = W202.replace("  action wire_refund {", f"  action\n    wire_refund  {DIRECTIVE}\n  {{", 1)
    assert _same_after_fmt(text) == ([], ["W202"])


MESSY = ('roles [reviewer]\nworkflow "w" { version "1" owners { business "B" technical "T" } default deny '
         'action a { system "s" irreversible require_approval by 1 reviewer when `true` } action b {} '
         'stop s { when `action.amount > 1`\nseverity low owner "o" resume when { ok: `evidence.ok` } } '
         'rollback customer_request { authorize 1 reviewer } }\n')
DIRECTIVE3 = "# stopline: acknowledge W204, W205, W213 -- a sketch"


@pytest.mark.parametrize("after", [
    'version "1"',  # after a statement of the workflow
    "owners {",  # inside a nested block
    'technical "T"',
    'action a { system "s"',  # inside an action, after its first statement
    "action a",  # inside an action's header
    "action b {}",  # after a one-line block (its trailing comment stays on its header line)
    "stop s { when",  # inside a statement of a stop trigger
    "stop s {",
])
def test_a_directive_ending_the_line_an_outer_declaration_begins_on_stays_attached_to_it(after):
    assert after in MESSY
    text = MESSY.replace(after, f"{after}  {DIRECTIVE3}\n", 1)
    codes, acked = _acks(text)
    assert acked == ["W204", "W205", "W213"] and "W215" not in codes  # the workflow's, as documented
    assert _same_after_fmt(text) == (codes, acked)


def test_the_formatted_directive_ends_the_first_line_of_its_declaration(snapshot):
    text = MESSY.replace('action a { system "s"', f'action a {{ system "s"  {DIRECTIVE3}\n', 1)
    out = format_text(text, "x.policy")
    assert out.splitlines()[2] == f'workflow "w" {{  {DIRECTIVE3}'
    assert out == snapshot


def test_every_shipped_policy_keeps_its_acknowledgements_through_fmt():
    for p in sorted((ROOT / "examples").rglob("*.policy")):
        text = p.read_text(encoding="utf-8")
        if "stopline:" in text:
            res = load_paths([p])
            once = format_text(text, str(p))
            res2 = load_text(once, str(p))
            assert sorted(a.diagnostic.code for a in res2.acknowledged) == sorted(
                a.diagnostic.code for a in res.acknowledged)


# ------------------------------------------------------------------ fields from a schema with an odd `type`

@pytest.mark.parametrize("schema, where", [
    ({"type": "object", "properties": {"x": {"type": {"a": 1}}}}, "/properties/x/type"),
    ({"type": "object", "properties": {"x": {"type": "object", "additionalProperties": {"type": ["string"]}}}},
     "/properties/x/additionalProperties/type"),
    ({"type": "object", "properties": {"x": {"type": "object", "additionalProperties": {"type": {}}}}},
     "/properties/x/additionalProperties/type"),
    ({"type": "object", "properties": {"x": {"type": "array", "items": {"type": {"b": []}}}}},
     "/properties/x/items/type"),
])
def test_a_schema_type_that_is_an_object_is_e119_not_a_crash(tmp_path, schema, where):
    (tmp_path / "s.json").write_text(json.dumps(schema))
    (tmp_path / "p.policy").write_text(HEAD + '  action a {\n    system "s"\n    reversible full via "x"\n'
                                       '    fields from "s.json"\n    require_approval by 1 reviewer when `true`\n'
                                       '  }\n}\n')
    res = load_paths([tmp_path / "p.policy"])
    [d] = res.errors
    assert d.code == "E119" and d.message.endswith(f"at {where}"), d.message
    assert (d.span.line, d.span.col) == (9, 17)


def test_a_schema_format_that_is_not_text_is_shown_as_json(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps(
        {"type": "object", "properties": {"x": {"type": "string", "format": {"a": 1}}}}))
    (tmp_path / "p.policy").write_text(HEAD + '  action a {\n    system "s"\n    reversible full via "x"\n'
                                       '    fields from "s.json"\n    require_approval by 1 reviewer when `true`\n'
                                       '  }\n}\n')
    [d] = load_paths([tmp_path / "p.policy"]).errors
    assert 'format `{"a": 1}`' in d.message


# ------------------------------------------------------------------ strings: escapes JSON does not have

def _const(value: str) -> str:
    return (f"roles [reviewer]\nconst c = {value}\n" + HEAD.split("\n", 2)[2]
            + '  action a {\n    system "s"\n    reversible full via "x"\n    deny d when `action.x in policy.c`\n'
            "  }\n}\n")


@pytest.mark.parametrize("value, escape", [
    ('["evil\\.com"]', "\\."),
    ('"\\x41"', "\\x"),
    ('"a\\qb"', "\\q"),
    ('"\\d+\\n"', "\\d"),
    ('"\\u12"', "\\u12"),
    ('{"k\\.": 1}', "\\."),
])
def test_an_invalid_escape_is_e002_at_the_escape(value, escape):
    text = _const(value)
    res = load_text(text, "x.policy")
    assert res.policy_set is None
    d = res.errors[0]
    assert d.code == "E002"
    assert text[d.span.start:d.span.end] == escape
    assert (d.span.line, d.span.col) == (2, 11 + value.index(escape))


@pytest.mark.parametrize("where", [
    'system "C:\\path"', 'description "a \\. b"', 'verify "\\x"', 'owner "\\z"',
])
def test_every_string_of_the_language_refuses_an_invalid_escape(where):
    kw = where.split()[0]
    body = {"system": '  action a {\n    %s\n    reversible full via "x"\n  }\n',
            "description": '  action a {\n    system "s"\n    %s\n    reversible full via "x"\n  }\n',
            "verify": '  action a {\n    system "s"\n    %s\n    reversible full via "x"\n  }\n',
            "owner": '  stop s {\n    when `true`\n    severity low\n    %s\n    resume when { ok: `true` }\n  }\n'}[kw]
    res = load_text(HEAD + body % where + "}\n", "x.policy")
    assert [d.code for d in res.errors] == ["E002"]


def test_the_rendered_escape_error(snapshot):
    res = load_text(_const('["competitor.example", "evil\\.com", "a\\u12"]'), "x.policy")
    assert render_all(res.diagnostics, res.sources) == snapshot


@pytest.mark.parametrize("value, decoded", [
    ('"evil\\\\.com"', "evil\\.com"),
    ('"\\ud83d\\ude00"', "\U0001F600"),
    ('"\\\\ud800"', "\\ud800"),  # an escaped backslash before `ud800`: text, no error (a lone surrogate
    # escape is E002: tests/test_audit_s18_invisible.py)
    ('"a\\u00e9\\/\\"\\b\\f\\n\\r\\t"', 'aé/"\b\f\n\r\t'),
    ('"a\tb\\n"', "a\tb\n"),  # a typed tab is kept, and the escapes around it decoded
])
def test_valid_strings_decode_as_json(value, decoded):
    res = load_text(_const(value), "x.policy")
    assert not res.errors, [(d.code, d.message) for d in res.errors]
    assert res.policy_set.files[0].constants[0].value == decoded


def test_a_deny_reading_a_mistyped_escape_never_loads():
    """The widening the silent reading allowed: this rule never fired for `evil.com`."""
    with pytest.raises(PolicyError) as e:
        require_ok(load_text(_const('["evil\\.com"]'), "x.policy"))
    assert [d.code for d in e.value.diagnostics] == ["E002"]


# ------------------------------------------------------------------ CEL: a double literal out of range

@pytest.mark.parametrize("literal", ["1e400", "1.8e308", "-1e309", "[1e999][0]"])
def test_a_double_literal_too_large_is_e101_not_infinity(literal):
    text = (HEAD + f'  action a {{\n    system "s"\n    reversible full via "x"\n'
            f'    deny d when `action.amount > {literal}`\n  }}\n}}\n')
    res = load_text(text, "x.policy")
    [d] = res.errors
    assert d.code == "E101" and d.message.startswith("double literal out of range")
    number = literal.strip("[").split("]")[0]  # `1e999` of `[1e999][0]`
    assert text[d.span.start:d.span.end] == number


def test_the_rendered_double_literal_error(snapshot):
    res = load_text(HEAD + '  action a {\n    system "s"\n    reversible full via "x"\n'
                    "    deny d when `action.amount > 1e400`\n  }\n}\n", "x.policy")
    assert render_all(res.diagnostics, res.sources) == snapshot


def test_compile_cel_refuses_a_double_literal_out_of_range_and_keeps_the_others():
    from policy_engine.cel import CelCompileError, compile_cel

    with pytest.raises(CelCompileError) as e:
        compile_cel("x > 1e400")
    assert (e.value.offset, e.value.message) == (4, "double literal out of range: 1e400")
    assert compile_cel("1.7976931348623157e308")({}) == 1.7976931348623157e308
    assert compile_cel("1e-400")({}) == 0.0  # (underflow to zero: a literal, as in cel-go)
    assert compile_cel("1e308 * 10.0")({}) == float("inf")  # arithmetic may still overflow to infinity
