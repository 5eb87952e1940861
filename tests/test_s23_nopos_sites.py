"""Every place that spoke of a file or path as a whole at a fake `1:1`: the loader (a path
that does not exist, a file too big to read), the server's loader, a suite too big, the
coverage of a policy no suite loads. Each now has no position (`Span.nowhere`)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from policy_engine.cli import main
from policy_engine.language import loader
from policy_engine.language.loader import load_paths
from policy_engine.testing.coverage import Coverage
from policy_engine.testing.runner import _load_unloaded


def test_check_json_gives_null_line_and_column_for_a_missing_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["check", "--format", "json", "policies/"])
    assert r.exit_code == 2
    (d,) = json.loads(r.stdout)["diagnostics"]
    assert (d["code"], d["file"], d["line"], d["col"], d["end_line"], d["end_col"]) == \
        ("E006", "policies/", None, None, None, None)


def test_a_file_too_big_is_named_without_a_line(tmp_path, monkeypatch):
    monkeypatch.setattr(loader, "MAX_FILE_BYTES", 100)
    big = tmp_path / "big.policy"
    big.write_text("# padding\n" * 20, encoding="utf-8")
    (d,) = load_paths([big]).errors
    assert d.code == "E005" and str(d.span) == str(big) and not d.span.located
    r = CliRunner().invoke(main, ["check", "--no-color", str(big)])
    assert f" --> {big}\n" in r.output and ":1:1" not in r.output and "^" not in r.output, r.output
    # the coverage of a policy no suite loads names the file, not a line 0 (or 1) of it
    errs = _load_unloaded(Coverage(), [str(big)], [str(big)])
    assert errs[str(big)].startswith(f"{big}: error[E005]: "), errs
