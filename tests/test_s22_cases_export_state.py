"""Session 22 audit of `stopline ledger export-case`, on SQLite and PostgreSQL: a decision
taken while its workflow was stopped is exported with the workflow state the gate decided
it in, whole. Before, the export dropped `name`, so a rule reading `workflow.name` (here a
repair action that runs while stopped, gated by `deny wrongwf when workflow.name !=
"replies"`) errored in the case ("no such key: 'name'") and denied: the case of a recorded
`require_approval` decided `deny`, and one expecting the candidate's `deny` passed under the
very policy that missed it."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import POLICY, WF, at, send

from policy_engine.cli import main

_LOG = """  action log {
    system "crm"
    runs_while_stopped
    reversible full via "crm.amend"
    receipt [note]

    allow any when `true`
  }"""
assert _LOG in POLICY

#: a repair action gated while the workflow is stopped, in its own workflow only
OLD = POLICY.replace(
    _LOG,
    _LOG.replace(
        "    allow any when `true`",
        """\
    deny wrongwf when `workflow.name != "replies"`
    require_approval repair by 1 reviewer when `workflow.status == "stopped"`
    allow any when `true`""",
    ),
)
#: the candidate: no repair while stopped
NEW = OLD.replace(
    'require_approval repair by 1 reviewer when `workflow.status == "stopped"`',
    'deny repair when `workflow.status == "stopped"`',
)


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def stopped_repair(ledger_url, tmp_path):  # noqa: F811
    """The decision id of a `log` gated while `replies` was stopped (`require_approval`)."""
    from policy_engine import Runtime

    p = tmp_path / "replies.policy"
    p.write_text(OLD, encoding="utf-8")
    with Runtime.open(str(p), ledger=ledger_url) as rt:
        assert rt.gate(send(50.0), now=at(0)).effect == "allow"
        assert rt.gate(send(promise=True), now=at(10)).effect == "stop"
        g = rt.gate({"workflow": WF, "type": "log"}, now=at(11))
        assert (g.effect, g.deciding.name) == ("require_approval", "repair")
        return g.decision_id


def test_an_exported_stopped_decision_reproduces_the_recorded_effect(stopped_repair, ledger_url, tmp_path):  # noqa: F811
    suite = tmp_path / "same.policy-test.yaml"
    res = _cli(
        "ledger",
        "export-case",
        stopped_repair,
        "--expect",
        "require_approval",
        "--suite",
        suite,
        "--ledger",
        ledger_url,
        "--policies",
        tmp_path / "replies.policy",
    )
    assert res.exit_code == 0, res.output
    state = yaml.safe_load(suite.read_text())["cases"][0]["gate"]["workflow_state"]
    assert state["name"] == WF and state["status"] == "stopped" and state["stopped_by"] == "bad_promise"
    assert set(state) == {"name", "status", "stopped_by", "stopped_at"}  # the gate's state, nothing dropped
    res = _cli("test", suite)
    assert res.exit_code == 0 and "1 passed, 0 failed" in res.output, res.output


def test_an_exported_case_expecting_the_candidates_answer_fails_until_the_policy_changes(
    stopped_repair, ledger_url, tmp_path
):  # noqa: F811
    suite = tmp_path / "misses.policy-test.yaml"
    res = _cli(
        "ledger",
        "export-case",
        stopped_repair,
        "--expect",
        "deny",
        "--suite",
        suite,
        "--ledger",
        ledger_url,
        "--policies",
        tmp_path / "replies.policy",
    )
    assert res.exit_code == 0, res.output
    res = _cli("test", suite)  # under the policy that decided it: the recorded answer, not an error's deny
    assert res.exit_code == 1 and "0 passed, 1 failed" in res.output, res.output
    assert "require_approval" in res.output and "no such key" not in res.output
    (tmp_path / "replies.policy").write_text(NEW, encoding="utf-8")
    res = _cli("test", suite)
    assert res.exit_code == 0 and "1 passed, 0 failed" in res.output, res.output
