"""Audit s18: what the policy text or a file's name puts in `stopline check` / `stopline fmt`
output reached the terminal raw.

The source line under a diagnostic was already printed safely (control and format
characters as U+FFFD), but a diagnostic's message, label, notes and help (which quote the
policy's names: `duplicate workflow `w\\x1b[2J``, from `workflow "w\\u001b[2J"`) and the
file's path (a file named with an escape sequence or a newline, met while scanning a
directory) were not: a hostile policy could clear or rewrite the terminal of whoever
checks it, or forge a `file:line:col` line. `stopline fmt`'s own lines (`formatted PATH`,
`would reformat PATH`, `PATH: not formatted`) had the same gap.

Refresh the snapshots with `python -m pytest tests/test_audit_s18_lang_output.py
--snapshot-update` and review the diff.
"""

from __future__ import annotations

import os
import sys

import pytest
from click.testing import CliRunner

from policy_engine.cli import main
from policy_engine.diagnostics import render_all
from policy_engine.language.loader import load_text

DUP = ('roles [r]\nworkflow "w\\u001b[2J\\u0007\\u0085" {\n  version "1"\n  owners { business "b" technical "t" }\n'
       '  action a {\n    system "s"\n    reversible full via "x"\n  }\n}\n'
       'workflow "w\\u001b[2J\\u0007\\u0085" {\n  version "1"\n  owners { business "b" technical "t" }\n}\n')


def _controls(text: str) -> list[str]:
    """Control characters other than the line breaks between lines of output."""
    return [ch for ch in text if (ord(ch) < 32 and ch != "\n") or 0x7F <= ord(ch) <= 0x9F]


def test_a_message_quoting_a_name_with_terminal_escapes_prints_them_as_u_fffd(snapshot):
    res = load_text(DUP, "x.policy")
    [d] = res.errors
    assert "\x1b" in d.message  # the data keeps the name as written (JSON output escapes it)
    out = render_all(res.diagnostics, res.sources)
    assert _controls(out) == []
    assert out == snapshot


@pytest.mark.skipif(sys.platform == "win32", reason="file names with control characters")
def test_a_file_name_with_an_escape_or_a_newline_cannot_forge_output(tmp_path, snapshot):
    name = "ev\x1b[2Jil\nx.policy"
    (tmp_path / name).write_text('roles [r]\nworkflow "w" {\n  version 1\n}\n', encoding="utf-8")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        r = CliRunner().invoke(main, ["check", "--color", "."], color=True)  # (escapes kept, as on a terminal)
        f = CliRunner().invoke(main, ["fmt", "--no-color", "."], color=True)
    finally:
        os.chdir(cwd)
    assert r.exit_code == 1 and f.exit_code == 1
    # (--color: the only escapes are the colours, each `ESC[...m`)
    assert "\x1b[2J" not in r.output and "il\nx" not in r.output
    assert "\x1b" not in f.output and "il\nx" not in f.output
    header = [line for line in r.output.splitlines() if "-->" in line]
    assert header == [" \x1b[1;34m-->\x1b[0m ev\ufffd[2Jil\ufffdx.policy:3:11"]
    assert f.output == snapshot


@pytest.mark.skipif(sys.platform == "win32", reason="file names with control characters")
def test_fmt_names_a_formatted_file_printably(tmp_path):
    name = "a\x1b]0;title\x07.policy"
    (tmp_path / name).write_text('roles [r]\nworkflow "w" { version "1" owners { business "b" technical "t" } }\n',
                                 encoding="utf-8")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        checked = CliRunner().invoke(main, ["fmt", "--check", "."])
        written = CliRunner().invoke(main, ["fmt", "."])
    finally:
        os.chdir(cwd)
    assert checked.exit_code == 1 and written.exit_code == 0
    assert checked.output == "would reformat a\ufffd]0;title\ufffd.policy\n"
    assert written.output == "formatted a\ufffd]0;title\ufffd.policy\n"
