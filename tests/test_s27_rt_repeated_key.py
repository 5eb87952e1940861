"""`stopline rt OP` refuses an input whose object gives a key twice (session 27): `json`
kept the last value, so `{"amount": 10, "amount": 5000}` recorded a decision on 5000 while
the file read as 10 first. `stopline ledger append`, `stopline eval` and the server refuse it
too."""

from __future__ import annotations

from click.testing import CliRunner
from runtime_support import write_policy

from policy_engine.cli import main
from policy_engine.ledger import Ledger


def test_rt_gate_refuses_a_key_given_twice_and_records_nothing(tmp_path):
    pol = write_policy(tmp_path)
    url = f"sqlite:///{tmp_path / 'l.db'}"
    runner = CliRunner()
    assert runner.invoke(main, ["ledger", "init", "--ledger", url]).exit_code == 0
    text = ('{"action": {"workflow": "replies", "type": "send", "amount": 10.0, "amount": 5000.0, "promise": false},'
            ' "now": "2026-11-26T12:00:00Z"}')
    r = runner.invoke(main, ["rt", "gate", "-p", str(pol), "--ledger", url, "-i", "-"], input=text)
    assert r.exit_code == 2, r.output
    assert 'the key "amount" appears twice in one object' in r.output and "Traceback" not in r.output
    with Ledger.open(url) as led:
        assert led.size == 0
