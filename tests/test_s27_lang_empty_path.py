"""Session 27 audit of the commands that take policy paths: an empty path (`stopline fmt
"$POLICY_DIR"` with the variable unset) was read as `Path("")`, which is `.`: `fmt`
rewrote every .policy file under the working directory, and `check` and `test` checked and
ran whatever was there. An empty path names nothing (`ls ''` fails too): it is now a usage
error, exit 2, and nothing is read or written."""

from __future__ import annotations

from click.testing import CliRunner

from policy_engine.cli import main

UNFORMATTED = "roles [a,b]\n"
SUITE = ('suite: s\nnow: "2026-11-24T10:00:00Z"\ncases:\n  - name: c\n'
         '    resume: {workflow: w, stop: s, evidence: {}}\n    expect: {allowed: false}\n')


def test_an_empty_path_is_a_usage_error_and_nothing_is_rewritten(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.policy").write_text(UNFORMATTED, encoding="utf-8")
    (tmp_path / "sub" / "x.policy-test.yaml").write_text(SUITE, encoding="utf-8")
    for args in (["fmt", ""], ["fmt", "--check", ""], ["check", ""], ["check", "--format", "json", ""],
                 ["fmt", "", "sub/x.policy"]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 2, (args, res.output)
        assert "an empty path names no file or directory" in res.output, (args, res.output)
        assert "Traceback" not in res.output
        assert (tmp_path / "sub" / "x.policy").read_text(encoding="utf-8") == UNFORMATTED, args
    res = CliRunner().invoke(main, ["test", ""])
    assert res.exit_code == 2, res.output
    assert "error: an empty path names no file or directory (an unset variable?)" in res.output
    assert res.output.rstrip().endswith("0 passed, 0 failed, 1 error"), res.output
    # `.` still names the working directory
    res = CliRunner().invoke(main, ["fmt", "--check", "."])
    assert res.exit_code == 1 and "x.policy" in res.output, res.output
