"""A newcomer's first hour, its rough edges: each message names what to do, in one line
(the missing extra from a checkout, `serve -p`, a missing path with no `:1:1`, an
unknown key of a question, `rt gat`, an unquoted version, the example's last command)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from runtime_support import write_policy

import policy_engine
from policy_engine.cli import main
from policy_engine.diagnostics import PolicyError

ROOT = Path(__file__).resolve().parent.parent


# 1. the missing extra, from a checkout too
def test_serve_without_the_server_extra_says_how_to_install_it_from_a_checkout(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn -> ImportError(name="uvicorn")
    r = CliRunner().invoke(main, ["serve", str(write_policy(tmp_path))])
    assert r.exit_code == 2, r.output
    assert "pip install 'stopline[server]'" in r.output and "pip install -e '.[server]'" in r.output, r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1


# 2. `serve -p PATH`, as `rt` and `report` take the policies
def test_serve_takes_the_policies_with_dash_p_too(tmp_path, monkeypatch):
    pytest.importorskip("uvicorn")
    import uvicorn

    served = []

    def run(app, **kw):  # the server as configured, not started
        served.append((app.state.config.policies, app.state.implicit_workflow))
        app.state.close()

    monkeypatch.setattr(uvicorn, "run", run)
    pol = write_policy(tmp_path)
    for args in (["-p", str(pol)], ["--policies", str(pol)], [str(pol)]):
        r = CliRunner().invoke(main, ["serve", *args, "--port", "0"])
        assert r.exit_code == 0, (args, r.output)
    assert served == [(str(pol), "replies")] * 3


def test_serve_wants_the_policies_once(tmp_path):
    pytest.importorskip("uvicorn")
    pol = str(write_policy(tmp_path))
    both = CliRunner().invoke(main, ["serve", pol, "-p", pol])
    assert both.exit_code == 2 and "not both" in both.output, both.output
    neither = CliRunner().invoke(main, ["serve"])
    assert neither.exit_code == 2 and "-p/--policies" in neither.output, neither.output


# 3. a missing path has no line or column
def test_a_missing_path_reads_without_a_line_and_column(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PolicyError) as e:
        policy_engine.load("policies/")
    assert str(e.value) == "no such file or directory: policies/"
    # the diagnostic itself (`check --format json`'s shape) is unchanged
    assert [d.code for d in e.value.diagnostics] == ["E006"]


@pytest.mark.parametrize("cmd", [["rt", "queue", "-i", "-", "--ledger", "sqlite:///l.db", "-p", "policies/"],
                                 ["serve", "policies/"], ["serve", "-p", "policies/"]])
def test_the_commands_say_a_missing_path_in_one_line(tmp_path, monkeypatch, cmd):
    if cmd[0] == "serve":
        pytest.importorskip("uvicorn")
    monkeypatch.chdir(tmp_path)
    if cmd[0] == "rt":
        assert CliRunner().invoke(main, ["ledger", "init", "--ledger", "sqlite:///l.db"]).exit_code == 0
    r = CliRunner().invoke(main, cmd, input="{}")
    assert r.exit_code == 2, r.output
    assert r.output.strip() == "error: no such file or directory: policies/", r.output


# 4. an unknown key of a question is named, with the one it likely meant
@pytest.mark.parametrize("question, said", [
    ({"gat": {}}, "unknown key `gat` (did you mean `gate`?)"),
    ({"actoin": {}}, "unknown key `actoin` (did you mean `action`?)"),
    ({"gate": {"workflow": "replies"}}, 'write `{"question": "gate", "action": ...}`, not a key `gate`'),
    ({"action": {}}, 'no `question` field: `question` must be one of `gate`, `rollback`, `authorize` or '
                     '`resume` (add `"question": "gate"`?)'),
    ({"question": "gat"}, '`question` must be one of `gate`, `rollback`, `authorize` or `resume`, not `"gat"` '
                          '(did you mean `gate`?)'),
])
def test_eval_names_the_unknown_key(tmp_path, question, said):
    pol = write_policy(tmp_path)
    r = CliRunner().invoke(main, ["eval", str(pol), "-i", "-"], input=json.dumps(question))
    assert r.exit_code == 2, r.output
    assert said in r.output and len(r.output.strip().splitlines()) == 1, r.output


# 5. `rt gat`
def test_rt_suggests_the_operation_a_slip_meant():
    r = CliRunner().invoke(main, ["rt", "gat"])
    assert r.exit_code == 2
    assert "'gat': did you mean 'gate'?" in r.output and "Invalid value for 'OP'" in r.output, r.output
    far = CliRunner().invoke(main, ["rt", "zzz"])
    assert far.exit_code == 2 and "did you mean" not in far.output


# 6. an unquoted version
def test_an_unquoted_version_is_shown_quoted(tmp_path):
    f = tmp_path / "w.policy"
    f.write_text('workflow "w" {\n  version 1.0.0\n  owners {\n    business "B"\n    technical "T"\n  }\n'
                 "  default allow\n}\n")
    with pytest.raises(PolicyError) as e:
        policy_engine.load(str(f))
    (d,) = e.value.diagnostics
    assert (d.code, d.help, d.message) == ("E001", 'write "1.0.0"', "unexpected `1.0.0`")
    shown = e.value.render()
    assert "2 |   version 1.0.0\n  |           ^^^^^ expected a quoted string" in shown, shown
    assert (d.span.line, d.span.col, d.span.end_col) == (2, 11, 16)


# 7. the example's last command, as it reruns
def test_the_runtime_example_prints_the_verify_command_it_ran(tmp_path):
    db = tmp_path / "demo.db"
    p = subprocess.run([sys.executable, str(ROOT / "examples" / "agent_runtime.py"), str(db)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    shown = next(line for line in p.stdout.splitlines() if line.startswith("$ stopline ledger verify"))
    words = shlex.split(shown[2:])
    assert words[:3] == ["stopline", "ledger", "verify"] and "--ledger" in words, shown
    again = subprocess.run([sys.executable, "-m", "policy_engine.cli", *words[1:]], capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout.startswith("ok: 25 entries"), (again.stdout, again.stderr)
    assert p.stdout.rstrip().splitlines()[-1] == again.stdout.strip()


# ------------------------------------------------------------------ 8. `ledger init` of a new ledger
def test_ledger_init_of_a_new_ledger_says_nothing_of_filling_the_runtimes_tables(tmp_path):
    """A new ledger's runtime tables are made by `init` as a matter of course: the line "made
    the runtime's tables ... (missing, or of an older version) and filled them from the log"
    read as news (and filled nothing). A ledger holding entries keeps the note."""
    from ledger_fixtures import run_ledger_cli

    url = f"sqlite:///{tmp_path / 'new.db'}"
    code, out, err = run_ledger_cli("init", "--ledger", url)
    assert code == 0 and "0 entries" in out, (out, err)
    assert "runtime's table" not in out + err
