"""Session 24: W206 ("the policy set declares no workflow") was placed at 1:1 of the first
file, a caret under whatever stood there (a comment, a `roles` line) that is not wrong and
not where the fix goes: a workflow may be added to any file of the set. It is about the set
as a whole, so it now has no position (JSON null line and col, no caret, the label said as a
note), names the first file and lists the others, and its help is a workflow that checks
clean as written. A file that does not parse may hold the workflow: then only its error is
reported, not a W206 telling the author to add what is there.

Refresh the snapshots with: python -m pytest tests/test_s24_diag_w206.py --snapshot-update
(and review the diff)."""

from __future__ import annotations

import json
import re

from click.testing import CliRunner

from policy_engine.cli import main
from policy_engine.language.check import NO_WORKFLOW_HELP
from policy_engine.language.loader import load_paths

COMMON = "# shared by every workflow of the set\nroles [reviewer]\nconst limit = 100\n"


def check(tmp_path, monkeypatch, *args: str):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["check", *args])
    assert "Traceback" not in res.output, res.output
    return res


def test_text_has_no_caret_and_no_line(tmp_path, monkeypatch, snapshot):
    (tmp_path / "common.policy").write_text(COMMON, encoding="utf-8")
    res = check(tmp_path, monkeypatch, "common.policy")
    assert res.exit_code == 0, res.output  # a warning
    assert "common.policy:1:1" not in res.output and "^" not in res.output
    assert res.output == snapshot


def test_several_files_are_all_named(tmp_path, monkeypatch, snapshot):
    d = tmp_path / "policies"
    d.mkdir()
    (d / "common.policy").write_text(COMMON, encoding="utf-8")
    (d / "later.policy").write_text("# the support workflow goes here\n", encoding="utf-8")
    res = check(tmp_path, monkeypatch, "policies/")
    assert res.exit_code == 0, res.output
    assert res.output == snapshot


def test_json_has_null_line_and_col(tmp_path, monkeypatch):
    (tmp_path / "common.policy").write_text(COMMON, encoding="utf-8")
    res = check(tmp_path, monkeypatch, "--format", "json", "common.policy")
    assert res.exit_code == 0, res.output
    (d,) = json.loads(res.output)["diagnostics"]
    assert d["code"] == "W206" and d["file"] == "common.policy"
    assert (d["line"], d["col"], d["end_line"], d["end_col"]) == (None, None, None, None)
    assert d["label"] is None  # no caret to print it after: it is a note
    assert d["notes"] == ["every action evaluated against it is denied"]
    assert d["help"] == NO_WORKFLOW_HELP
    # --strict fails on it, as on any warning
    assert check(tmp_path, monkeypatch, "--strict", "common.policy").exit_code == 1


def test_the_help_is_a_workflow_that_checks_clean(tmp_path, monkeypatch):
    (skeleton,) = re.findall(r"`(workflow .*?\} \})`", NO_WORKFLOW_HELP)
    (tmp_path / "common.policy").write_text(COMMON + skeleton + "\n", encoding="utf-8")
    res = check(tmp_path, monkeypatch, "--strict", "common.policy")
    assert res.exit_code == 0, res.output
    assert res.output.strip() == "ok: 1 file, 1 workflow"


def test_no_w206_when_the_file_holding_the_workflow_does_not_parse(tmp_path, monkeypatch):
    d = tmp_path / "policies"
    d.mkdir()
    (d / "common.policy").write_text(COMMON, encoding="utf-8")
    (d / "support.policy").write_text('worklow "support" {\n  version "1"\n}\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = load_paths(["policies/"])
    assert [(x.code, str(x.span)) for x in result.diagnostics] == [("E001", "policies/support.policy:1:1")]


def test_no_w206_when_a_file_of_the_set_cannot_be_read(tmp_path, monkeypatch):
    d = tmp_path / "policies"
    d.mkdir()
    (d / "common.policy").write_text(COMMON, encoding="utf-8")
    (d / "support.policy").write_bytes(b'workflow "support" {\0}\n')  # E004: a NUL byte
    monkeypatch.chdir(tmp_path)
    result = load_paths(["policies/"])
    assert [x.code for x in result.diagnostics] == ["E004"]
