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
