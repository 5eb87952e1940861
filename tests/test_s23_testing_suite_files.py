"""Session 23 audit of how `stopline test` and its pytest plugin show a suite file.

- A suite over the size limit showed a snippet of an empty line 1 with a caret under
  nothing, and no way out; it now names the file alone, with a help line.
- The pytest plugin named each item by the case's name as written: a control character
  in it (`"\\e[2J"` in YAML) went to the terminal in pytest's progress and summary lines,
  which `stopline test` never lets happen. Items are named with U+FFFD for it, as the
  FAIL lines of `stopline test` are."""

from __future__ import annotations

from click.testing import CliRunner
from test_testing_plugin import pytest_run

from policy_engine.cli import main
from policy_engine.testing import suites

SUITE = """\
suite: names
now: "2026-11-24T10:00:00Z"
cases:
  - name: "clears \\e[2J the screen"
    gate: {action: {workflow: w, type: send}}
    expect: {effect: allow}
"""

POLICY = """\
workflow "w" {
  version "1"
  owners {
    business "b"
    technical "t"
  }
  default deny
  action send {
    system "s"
    description "d"
  }
}
"""


def test_a_suite_over_the_size_limit_is_named_without_a_fake_snippet(tmp_path, monkeypatch):
    monkeypatch.setattr(suites, "MAX_SUITE_BYTES", 100)
    (tmp_path / "p.policy").write_text(POLICY, encoding="utf-8")
    path = tmp_path / "big.policy-test.yaml"
    path.write_text(SUITE + "# padding\n" * 20, encoding="utf-8")
    res = CliRunner().invoke(main, ["test", "--no-color", str(path)])
    assert res.exit_code == 2
    lines = res.output.splitlines()
    at = next(i for i, ln in enumerate(lines) if "error[T001]" in ln)
    assert "bytes; the limit is 100" in lines[at]
    assert lines[at + 1].strip().startswith("-->") and lines[at + 1].endswith("big.policy-test.yaml")
    assert lines[at + 2].strip().startswith("= help: split it into several suites")  # no `1 |` and caret
    assert not any(ln.strip() == "|" or ln.strip().startswith("1 |") for ln in lines)


def test_pytest_items_do_not_write_control_characters_to_the_terminal(tmp_path):
    (tmp_path / "p.policy").write_text(POLICY, encoding="utf-8")
    (tmp_path / "names.policy-test.yaml").write_text(SUITE, encoding="utf-8")
    res = pytest_run(tmp_path, "-rA", "-v")
    assert "1 failed" in res.stdout, res.stdout + res.stderr
    assert "\x1b" not in res.stdout
    assert "names.policy-test.yaml::clears \ufffd[2J the screen" in res.stdout
    res = pytest_run(tmp_path, "-k", "clears")  # -k still finds it
    assert "1 failed" in res.stdout
