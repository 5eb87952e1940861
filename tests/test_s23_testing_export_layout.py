"""Session 23 audit of `stopline ledger export-case` into a suite written by hand, on SQLite
and PostgreSQL: the rest of the file stays byte for byte and the exported case re-runs.

- a suite with CRLF line endings (written on Windows) was rewritten with LF throughout:
  every line of it changed in the diff a reviewer reads;
- a suite started as `cases: []` (a file kept for the misses) was refused ("written
  inline"); the case becomes its first item, the comment on the line kept."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import POLICY, at, send

from policy_engine.cli import main

CRLF_SUITE = (
    'suite: misses\r\nnow: "2026-11-24T10:00:00Z"\r\npolicies: [replies.policy]\r\ncases:\r\n'
    "  - name: a small reply\r\n    gate: {action: {workflow: replies, type: send, amount: 1.0, promise: false}}\r\n"
    "    expect: {effect: allow}\r\n# the end\r\n"
)
EMPTY_SUITE = 'suite: misses\nnow: "2026-11-24T10:00:00Z"\ncases: []  # misses go here\npolicies: [replies.policy]\n'


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def decision(ledger_url, tmp_path):  # noqa: F811
    from policy_engine import Runtime

    p = tmp_path / "replies.policy"
    p.write_text(POLICY, encoding="utf-8")
    with Runtime.open(str(p), ledger=ledger_url) as rt:
        g = rt.gate(send(50.0), now=at(0))
        assert g.effect == "allow"
        return g.decision_id


def _export(decision, ledger_url, suite):  # noqa: F811
    return _cli("ledger", "export-case", decision, "--expect", "allow", "--suite", suite, "--ledger", ledger_url)


def test_a_crlf_suite_keeps_its_line_endings(decision, ledger_url, tmp_path):  # noqa: F811
    suite = tmp_path / "misses.policy-test.yaml"
    suite.write_bytes(CRLF_SUITE.encode())
    res = _export(decision, ledger_url, suite)
    assert res.exit_code == 0, res.output
    raw = suite.read_bytes()
    head = CRLF_SUITE.rsplit("# the end", 1)[0].encode()
    assert raw.startswith(head) and raw.endswith(b"# the end\r\n")  # the rest, byte for byte
    assert raw.count(b"\n") == raw.count(b"\r\n")  # the case's lines end as the file's
    res = _cli("test", suite)
    assert res.exit_code == 0 and "2 passed, 0 failed" in res.output, res.output


def test_a_suite_started_as_an_empty_list_takes_the_case(decision, ledger_url, tmp_path):  # noqa: F811
    suite = tmp_path / "misses.policy-test.yaml"
    suite.write_text(EMPTY_SUITE, encoding="utf-8")
    res = _export(decision, ledger_url, suite)
    assert res.exit_code == 0, res.output
    text = suite.read_text(encoding="utf-8")
    assert "cases:  # misses go here\n" in text and text.endswith("policies: [replies.policy]\n")
    assert len(yaml.safe_load(text)["cases"]) == 1
    res = _cli("test", suite)
    assert res.exit_code == 0 and "1 passed, 0 failed" in res.output, res.output
