"""Inputs a command cannot use are refused in one line, never an internal error or a silent
nothing: a ledger URL that is not UTF-8 text (a shell passing bytes that are not, which
Python holds as lone surrogates) by every command that opens a ledger and by `Ledger.open`;
`--since` later than `--until` in `report` and `replay`; and replay's text says how many
unreplayable decisions it does not list."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from policy_engine.ledger import Ledger, LedgerUnavailable

BAD = os.fsdecode(b"sqlite:////tmp/stopline-\xff.db")


@pytest.mark.parametrize("args", [
    ["ledger", "verify", "--ledger", BAD],
    ["ledger", "init", "--ledger", BAD],
    ["queue", "--ledger", BAD],
    ["history", "some-id", "--ledger", BAD],
])
def test_every_command_refuses_a_url_that_is_not_utf8_in_one_line(args):
    r = subprocess.run([sys.executable, "-m", "policy_engine.cli", *args], capture_output=True,
                       env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 2, err
    assert "not UTF-8 text" in err and "internal error" not in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_ledger_open_refuses_it():
    with pytest.raises(LedgerUnavailable, match="not UTF-8 text"):
        Ledger.open(BAD, create=True)
    assert not os.path.exists("/tmp/stopline-\udcff.db".encode("utf-8", "surrogateescape"))


def test_report_refuses_a_since_later_than_until(tmp_path):
    from click.testing import CliRunner

    from policy_engine.cli import main
    from policy_engine.report.compute import compute_report

    url = f"sqlite:///{tmp_path / 'l.db'}"
    Ledger.open(url, create=True).close()
    r = CliRunner().invoke(main, ["report", "--ledger", url, "--format", "json", "--since", "2026-02-01T02:00:00+02:00",
                                  "--until", "2026-01-31T23:30:00Z"])
    assert r.exit_code == 2 and "later than --until" in r.output
    ok = CliRunner().invoke(main, ["report", "--ledger", url, "--format", "json",
                                   "--since", "2026-02-01T01:00:00+02:00", "--until", "2026-01-31T23:30:00.5Z"])
    assert ok.exit_code == 0, ok.output  # 23:00Z is before 23:30Z, whatever the text says
    with pytest.raises(ValueError, match="later than `until`"):
        compute_report(url, since="2026-02-01T00:00:00Z", until="2026-01-01T00:00:00Z")


def test_replay_refuses_a_since_later_than_until(tmp_path):
    from click.testing import CliRunner
    from runtime_support import write_policy

    from policy_engine.cli import main

    url = f"sqlite:///{tmp_path / 'l.db'}"
    Ledger.open(url, create=True).close()
    pol = str(write_policy(tmp_path))
    r = CliRunner().invoke(main, ["replay", pol, "--ledger", url, "--since", "2026-02-01T00:00:00Z",
                                  "--until", "2026-01-01T00:00:00Z"])
    assert r.exit_code == 2 and "later than --until" in r.output


def test_replay_text_says_how_many_unreplayable_it_does_not_list():
    from policy_engine.replay import ReplayResult

    bad = tuple({"decision_id": f"d{i}", "seq": i, "reason": "r"} for i in range(13))
    r = ReplayResult(policy_hash="sha256:" + "0" * 64, replayed=13, unchanged=0, changed=(), unreplayable=bad)
    text = r.text()
    assert text.count("unreplayable d") == 10 and "… 3 more unreplayable" in text


def test_export_case_to_a_new_suite_with_policies_that_do_not_compile_writes_nothing(tmp_path):
    from click.testing import CliRunner
    from runtime_support import WF, at, write_policy

    from policy_engine import Runtime
    from policy_engine.cli import main

    url = f"sqlite:///{tmp_path / 'l.db'}"
    with Runtime.open(str(write_policy(tmp_path)), ledger=url) as rt:
        d = rt.gate({"workflow": WF, "type": "other"}, now=at(0)).decision_id
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.policy").write_text('workflow "w" {\n  version "1.0"\n  action a {\n'
                                       '    allow x when `1 +`\n  }\n}\n')
    suite = tmp_path / "misses.policy-test.yaml"
    r = CliRunner().invoke(main, ["ledger", "export-case", d, "--expect", "deny", "--suite", str(suite),
                                  "--policies", str(bad), "--ledger", url])
    assert r.exit_code == 2 and "broken.policy:" in r.output and "^" in r.output and "Traceback" not in r.output
    assert not suite.exists()
    ok = CliRunner().invoke(main, ["ledger", "export-case", d, "--expect", "deny", "--suite", str(suite),
                                   "--policies", str(tmp_path / "replies.policy"), "--ledger", url])
    assert ok.exit_code == 0, ok.output
    assert suite.exists()


@pytest.mark.parametrize("cmd", ["rt", "report", "replay"])
def test_a_policy_that_does_not_compile_is_shown_with_every_diagnostic(tmp_path, cmd):
    """`rt`, `report --policies` and `replay` printed a one-line summary ("... (and 2 more)");
    now every diagnostic, with its file, line, column, caret and hint, as `stopline check`."""
    import json as _json

    from click.testing import CliRunner

    from policy_engine.cli import main

    url = f"sqlite:///{tmp_path / 'l.db'}"
    Ledger.open(url, create=True).close()
    bad = tmp_path / "broken.policy"
    bad.write_text('workflow "w" {\n  version "1.0"\n  action a {\n    allow x when `1 +`\n  }\n}\n')
    args = {"rt": ["rt", "gate", "-p", str(bad), "--ledger", url, "-i", "-"],
            "report": ["report", "--ledger", url, "--format", "json", "--policies", str(bad)],
            "replay": ["replay", str(bad), "--ledger", url]}[cmd]
    r = CliRunner().invoke(main, args, input=_json.dumps({"action": {"workflow": "w", "type": "a"}}))
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert f"--> {bad}:4:22" in r.output and "^ in this condition" in r.output and "= help:" in r.output
    assert r.output.count("error[") == 3


def test_serve_shows_every_diagnostic_of_a_policy_that_does_not_compile(tmp_path):
    pytest.importorskip("fastapi")
    bad = tmp_path / "broken.policy"
    bad.write_text('workflow "w" {\n  version "1.0"\n  action a {\n    allow x when `1 +`\n  }\n}\n')
    r = subprocess.run([sys.executable, "-m", "policy_engine.cli", "serve", str(bad), "--port", "0"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"--> {bad}:4:22" in r.stderr and "^ in this condition" in r.stderr and r.stderr.count("error[") == 3
