"""Hardening of the language front end as a policy author meets it: every diagnostic
names the right file, line and column, with the caret under the offending text.

Found by an adversarial pass over `stopline check`, `fmt` and `test` (each test names
the defect it pins). Refresh the snapshots with
`python -m pytest tests/test_hardening_language.py --snapshot-update` and review the diff.
"""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from policy_engine.cli import main
from policy_engine.diagnostics import Diagnostic, render, render_all
from policy_engine.language.loader import load_paths, load_text
from policy_engine.source import SourceFile, Span
from policy_engine.testing import load_suite

POLICY = """\
roles [reviewer]

workflow "w" {
  version "1"
  owners {
    business "b"
    technical "t"
  }

  action pay {
    system "payments"
    irreversible
    deny too_big when `action.amount > 1000.0`
    require_approval by 1 reviewer when `action.amount > 100.0`
  }
}
"""

SUITE = """\
suite: pay
now: "2026-11-24T10:00:00Z"
inputs:
  actions:
    small: {workflow: w, type: pay, amount: 10.0, currency: EUR}
cases:
  - name: a big payment is denied
    gate: {action: small, with: {amount: 5000.0}}
    expect: {effect: deny, rule: too_big}
"""


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pay.policy").write_text(POLICY, encoding="utf-8")
    return tmp_path


def run(*args: str):
    r = CliRunner().invoke(main, list(args))
    assert "Traceback" not in r.output and "bug in Stopline" not in r.output, r.output
    return r


def errors_of(suite) -> list[Diagnostic]:
    return [d for d in suite.diagnostics if d.severity == "error"]


# ------------------------------------------------------------------ suites: positions


def test_the_seed_suite_passes(workdir):
    (workdir / "pay.policy-test.yaml").write_text(SUITE, encoding="utf-8")
    r = run("test", "pay.policy-test.yaml")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("sep", ["\u2028", "\u2029", "\x85"])
def test_a_line_break_only_yaml_sees_does_not_shift_suite_positions(workdir, sep, snapshot):
    # PyYAML (YAML 1.1) breaks lines at U+0085, U+2028 and U+2029 too; positions were taken
    # from its line/column, so every diagnostic after such a character was a line off
    text = SUITE.replace("suite: pay", f'suite: "pay{sep}ments"').replace("rule: too_big", "rule: too_bigg")
    (workdir / "pay.policy-test.yaml").write_text(text, encoding="utf-8")
    r = run("test", "pay.policy-test.yaml")
    assert r.exit_code == 2
    assert "error[T004]: unknown rule `too_bigg`\n --> pay.policy-test.yaml:9:34\n" in r.output, r.output
    assert "9 |     expect: {effect: deny, rule: too_bigg}" in r.output
    if sep == "\u2028":
        assert r.output == snapshot


def test_a_yaml_syntax_error_after_a_line_separator_is_located(workdir):
    text = SUITE.replace("suite: pay", 'suite: "pay\u2028ments"').replace("amount: 10.0,", "amount: : 10.0,")
    (workdir / "pay.policy-test.yaml").write_text(text, encoding="utf-8")
    (d,) = errors_of(load_suite(workdir / "pay.policy-test.yaml"))
    assert d.code == "T001" and d.span.line == 5, d


def test_a_control_character_in_a_suite_is_located_at_the_character(workdir, snapshot):
    # a YAML reader error (a character YAML refuses) was reported at 1:1, with PyYAML's
    # multi-line message naming `"<unicode string>", position N`
    text = SUITE.replace("currency: EUR", "currency: E\x1bUR")
    (workdir / "pay.policy-test.yaml").write_text(text, encoding="utf-8")
    (d,) = errors_of(load_suite(workdir / "pay.policy-test.yaml"))
    assert (d.code, d.span.line, d.span.col) == ("T001", 5, 62)
    assert "<unicode string>" not in d.message and "\n" not in d.message
    r = run("test", "pay.policy-test.yaml")
    assert r.exit_code == 2 and r.output == snapshot


def test_a_yaml_line_break_in_a_comment_is_explained(workdir):
    text = SUITE.replace("suite: pay", "suite: pay  # a\x85b c")
    (workdir / "pay.policy-test.yaml").write_text(text, encoding="utf-8")
    (d,) = errors_of(load_suite(workdir / "pay.policy-test.yaml"))
    assert d.code == "T001"
    assert any("U+0085 NEXT LINE" in n for n in d.notes), d.notes


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_a_suite_that_is_not_utf8_is_located_whatever_its_line_endings_and_bom(workdir, bom, eol):
    # with a BOM the offset was taken from the raw bytes (3 too many); with CR line
    # endings every line counted as line 1
    data = bom + SUITE.encode("utf-8").replace(b"\n", eol).replace(b"currency: EUR", b"currency: E\xffUR")
    (workdir / "pay.policy-test.yaml").write_bytes(data)
    suite = load_suite(workdir / "pay.policy-test.yaml")
    (d,) = errors_of(suite)
    assert (d.code, d.span.line, d.span.col) == ("T001", 5, 62), d
    assert d.label == "invalid byte 0xff"
    assert "currency: E\ufffdUR" in suite.source.line_text(d.span.line)


# ------------------------------------------------------------------ suites: `policies`


@pytest.mark.parametrize(
    "value,col,message",
    [
        ("[/dev/null]", 12, "`/dev/null` is not a policy file or a directory"),
        ("[pay.policy, pay.policy-test.yaml]", 24, "`pay.policy-test.yaml` is a test suite, not a policy file"),
    ],
)
def test_a_policies_entry_that_cannot_be_a_policy_is_located_at_the_entry(workdir, value, col, message):
    # `/dev/null` was "no such file or directory" at the `policies` key, with the help
    # "run `stopline check` on them"; a suite named there was parsed as a policy file
    if not os.path.exists("/dev/null"):  # pragma: no cover
        pytest.skip("no /dev/null")
    (workdir / "pay.policy-test.yaml").write_text(SUITE.replace("now:", f"policies: {value}\nnow:", 1),
                                                  encoding="utf-8")
    (d,) = errors_of(load_suite(workdir / "pay.policy-test.yaml"))
    assert (d.code, d.message, d.span.line, d.span.col) == ("T007", message, 2, col)
    assert d.help and "stopline check" not in d.help


def test_check_of_a_path_that_is_not_a_file_says_so(workdir):
    if not os.path.exists("/dev/null"):  # pragma: no cover
        pytest.skip("no /dev/null")
    r = run("check", "/dev/null")
    assert r.exit_code == 2
    assert "not a file or a directory: /dev/null" in r.output and "no such file" not in r.output


# ------------------------------------------------------------------ policy files: unreadable bytes


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_invalid_utf8_is_located_whatever_the_line_endings(workdir, eol, snapshot):
    # with CR line endings the position was counted before CR became LF: line 1, column 167
    data = POLICY.encode("utf-8").replace(b"\n", eol).replace(b'system "payments"', b'system "pay\xffments"')
    (workdir / "bad.policy").write_bytes(data)
    result = load_paths([workdir / "bad.policy"])
    (d,) = result.errors
    assert (d.code, d.span.line, d.span.col) == ("E004", 11, 16), d
    r = run("check", "bad.policy")
    assert r.exit_code == 1 and r.output == snapshot


@pytest.mark.parametrize("text,line,col", [
    ('roles [r]\rworkflow "w" {\r  version "1\x00"\r}\r', 3, 13),
    ('roles [r]\rworkflow "w" {\r  version "1\ud800"\r}\r', 3, 13),
    ('\ufeffroles [r]\r\nworkflow "w" {\r\n  version "1\x00"\r\n}\r\n', 3, 13),
])
def test_load_text_renders_the_line_its_diagnostic_names(text, line, col):
    # the source kept for rendering was the text as given (CR line endings, a BOM, a lone
    # surrogate that cannot be printed), not the text the position was counted in
    r = load_text(text, "t.policy")
    (d,) = r.errors
    assert (d.span.line, d.span.col) == (line, col)
    out = render_all(r.diagnostics, r.sources)
    out.encode("utf-8")  # printable
    assert f'{line} |   version "1' in out, out


@pytest.mark.parametrize("data,code", [
    (POLICY.encode("utf-8").replace(b'"payments"', b'"pay\xffments"'), "E004"),
    (POLICY.encode("utf-8").replace(b'"payments"', b'"pay\x00ments"'), "E004"),
    (POLICY.encode("utf-8").replace(b'"payments"', '"pay\u202ements"'.encode()), "E002"),
])
@pytest.mark.parametrize("command", ["check", "fmt"])
def test_unreadable_files_show_the_line_and_caret_in_check_and_fmt(workdir, data, code, command):
    # `fmt` printed `--> file:line:col` with no line and no caret for any file it could not
    # decode; `check` did so for a bidirectional control character (E002)
    (workdir / "bad.policy").write_bytes(data)
    r = run(command, "bad.policy")
    assert r.exit_code in (1, 2)
    assert f"error[{code}]" in r.output
    assert "11 |     system " in r.output and "\n   | " + " " * 15 + "^ " in r.output, r.output


# ------------------------------------------------------------------ names and help


def test_a_constant_declared_again_in_a_workflow_names_the_first_declaration(workdir):
    # with the constant declared twice set-wide, the help named the second one as the first
    (workdir / "a.policy").write_text("const lim = 5\n", encoding="utf-8")
    (workdir / "b.policy").write_text(
        POLICY.replace("roles [reviewer]", "roles [reviewer]\nconst lim = 6").replace(
            '  version "1"', '  version "1"\n  const lim = 7'
        ),
        encoding="utf-8",
    )
    result = load_paths([workdir / "a.policy", workdir / "b.policy"])
    helps = [d.help for d in result.errors if "whole policy set" in d.message]
    assert helps == [f"the first declaration is at {workdir / 'a.policy'}:1:7"], helps


@pytest.mark.parametrize("word", ["alow", "Allow", "allw"])
def test_an_unknown_default_never_suggests_the_refused_allow(word, snapshot):
    r = load_text(POLICY.replace('  version "1"', f'  version "1"\n  default {word}'), "default.policy")
    (d,) = r.errors
    assert d.code == "E106"
    assert "did you mean `allow`" not in (d.help or "")
    assert "`default require_approval` or `default deny`" in (d.help or "")
    if word == "alow":
        assert render_all(r.diagnostics, r.sources) == snapshot


def test_deny_is_still_suggested_for_a_near_miss_of_deny():
    r = load_text(POLICY.replace('  version "1"', '  version "1"\n  default deni'), "default.policy")
    (d,) = r.errors
    assert d.code == "E106" and d.help == "did you mean `deny`?"


# ------------------------------------------------------------------ rendering


def test_the_caret_sits_under_the_text_after_wide_characters(snapshot):
    # columns count characters; a terminal gives CJK and most emoji two cells, so the
    # caret drifted left by one cell per wide character before it
    text = POLICY.replace('business "b"', 'business "退款团队" technical2 "😀"')
    r = load_text(text, "wide.policy")
    (d,) = [d for d in r.errors if d.code == "E105"]
    out = render_all([d], r.sources)
    line = next(ln for ln in out.splitlines() if "退款团队" in ln)
    caret = next(ln for ln in out.splitlines() if "^" in ln)
    import unicodedata

    def cells(s: str) -> int:
        return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)

    word_at = line.index("technical2")
    assert cells(caret[: caret.index("^")]) == cells(line[:word_at])
    assert caret.count("^") == len("technical2")
    assert out == snapshot


def test_a_caret_on_a_wide_character_covers_its_two_cells():
    src = SourceFile("w.policy", "x 漢 y\n")
    d = Diagnostic("E002", "error", "m", src.span(2, 3), label="here")
    out = render(d, src)
    assert "  |   ^^ here" in out, out


def test_a_combining_mark_takes_no_cell():
    src = SourceFile("w.policy", 'x "e\u0301" y\n')
    d = Diagnostic("E001", "error", "m", src.span(7, 8), label="here")
    out = render(d, src)
    assert "  |       ^ here" in out, out  # `x "é" ` is six cells


@pytest.mark.parametrize("sep", ["\u2028", "\u2029"])
def test_line_separators_are_not_printed_raw(sep):
    src = SourceFile("s.policy", f'# a{sep}b\nsytem "x"\n')
    d = Diagnostic("E001", "error", "m", Span("s.policy", 0, 1, 1, 1, 1, 2))
    out = render(d, src)
    assert sep not in out and "# a\ufffdb" in out


# ------------------------------------------------------------------ `stopline test -k`


@pytest.mark.parametrize("k", ["not", "refund and", "(big", "a or", ")", "and", "big (small)", "not not"])
def test_a_malformed_k_expression_is_a_usage_error(workdir, k):
    # read leniently, `-k "not"` ran no case and `-k "refund and"` every refund case: a typo
    # in CI passed with whatever it happened to select (exit 0)
    from policy_engine.testing.runner import keyword_error

    (workdir / "pay.policy-test.yaml").write_text(SUITE, encoding="utf-8")
    assert keyword_error(k) is not None
    r = run("test", "pay.policy-test.yaml", "-k", k)
    assert r.exit_code == 2, r.output
    assert "is not a valid expression" in r.output and "passed" not in r.output


@pytest.mark.parametrize("k,ran", [("big", 1), ("big and not small", 1), ("(big or x) and denied", 1), ("not big", 0),
                                   ("a big", 1), ("[", 0), ("", 1)])
def test_a_well_formed_k_expression_still_selects(workdir, k, ran):
    from policy_engine.testing.runner import keyword_error

    (workdir / "pay.policy-test.yaml").write_text(SUITE, encoding="utf-8")
    assert keyword_error(k) is None
    r = run("test", "pay.policy-test.yaml", "-k", k)
    assert r.exit_code == 0 and f"{ran} passed" in r.output, r.output
