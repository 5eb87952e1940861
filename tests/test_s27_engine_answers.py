"""Session 27 audit of the engine's answers: a stopped workflow whose `stopped_at` cannot be
converted to UTC, a question envelope whose `question` is not a name, and an approval dated
below the microsecond after `now`. Each test failed before its fix (see the session's report)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from engine_support import engine_from_texts

from policy_engine.cli import main
from policy_engine.engine.questions import QuestionError, answer

NOW = "2026-01-01T10:00:00Z"

POLICY = """roles [reviewer]
workflow "w" {
  version "1"
  owners { business "ops" technical "platform" }
  default deny
  action pay {
    system "bank"
    reversible full via "bank.undo" within 1h
    receipt [amount]
    require_approval mid by 1 reviewer when `action.amount > 100`
    allow small when `action.amount <= 100`
  }
  action note {
    system "crm"
    runs_while_stopped
    allow any when `true`
  }
  stop halt {
    when `action.type == "pay" && action.amount == 13`
    severity high
    owner "ops"
    affects [bank]
    rollback "undo"
    resume when {
      fixed: `evidence.fixed == true`
    }
  }
}
"""


@pytest.fixture(scope="module", params=[True, False], ids=["accelerated", "reference"])
def engine(request):
    return engine_from_texts({"w.policy": POLICY}, accelerate=request.param)


# A `datetime` whose offset moves it out of the representable range when converted to UTC.
OUT_OF_RANGE = [datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))),
                datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-14)))]


@pytest.mark.parametrize("stopped_at", OUT_OF_RANGE, ids=["year-1-at-+14", "year-9999-at--14"])
def test_a_stopped_workflow_stays_stopped_whatever_its_stopped_at(engine, stopped_at):
    """DESIGN 3: every action of a stopped workflow gets `stop`, citing its trigger. A
    `stopped_at` that overflows when converted to UTC is an input error on that stop, not
    an internal error that turns the answer into a `deny` decided by `error`."""
    state = {"name": "w", "status": "stopped", "stopped_by": "halt", "stopped_at": stopped_at}
    action = {"workflow": "w", "type": "pay", "id": "p1", "amount": 50}
    for _ in range(3):  # (the accelerated engine builds its lanes on repeated calls)
        d = engine.evaluate(action, state, NOW)
        assert (d.effect, d.deciding.kind, d.deciding.name) == ("stop", "stopped", "halt")
        assert d.stop is not None and d.stop.trigger == "halt" and d.stop.stopped_at is None
        assert [e.kind for e in d.errors] == ["input"]
        assert "`stopped_at` is out of the representable range" in d.errors[0].message
        assert not any("internal error" in e.message for e in d.errors)
        assert engine.evaluate_json(action, state, NOW) == d.model_dump_json()


def test_a_repair_action_of_a_stopped_workflow_is_still_gated_by_its_rules(engine):
    state = {"name": "w", "status": "stopped", "stopped_by": "halt", "stopped_at": OUT_OF_RANGE[0]}
    d = engine.evaluate({"workflow": "w", "type": "note", "id": "n1"}, state, NOW)
    assert (d.effect, d.deciding.name) == ("allow", "any")


@pytest.mark.parametrize("kind", [["gate"], {"gate": 1}, [], {}])
def test_a_question_that_is_not_a_name_is_a_usage_error(engine, kind):
    """`{"question": [...]}` is a malformed envelope (QuestionError: exit 2 with a message),
    not a TypeError (unhashable) that the CLI reports as a bug in Stopline."""
    with pytest.raises(QuestionError, match="`question` must be one of"):
        answer(engine, {"question": kind, "action": {}})


def test_the_cli_names_a_question_that_is_not_a_name(tmp_path):
    (tmp_path / "w.policy").write_text(POLICY, encoding="utf-8")
    for cmd in ("eval", "explain"):
        r = CliRunner().invoke(main, [cmd, str(tmp_path / "w.policy"), "--input", "-"],
                               input=json.dumps({"question": ["gate"], "action": {}}))
        assert r.exit_code == 2, r.output
        assert "internal error" not in r.output and "bug in Stopline" not in r.output
        assert '`question` must be one of `gate`, `rollback`, `authorize` or `resume`, not `["gate"]`' in r.output


@pytest.mark.parametrize("at, now", [
    ("2026-01-01T10:00:00.0000001Z", "2026-01-01T10:00:00Z"),
    ("2026-01-01T10:00:00.0000009Z", "2026-01-01T10:00:00.0000005Z"),
    ("2026-01-01T11:00:00.0000001+01:00", "2026-01-01T10:00:00Z"),
])
def test_an_approval_dated_after_now_below_the_microsecond_never_counts(engine, at, now):
    """docs/engine.md: "an approval dated after `now` never counts (no allowance there)".
    Times are read to the microsecond; digits below it round an approval's date up (as a
    window's end is compared with a `now` written so), never down to `now`."""
    d = engine.evaluate({"workflow": "w", "type": "pay", "id": "p1", "amount": 200}, None, NOW)
    assert d.effect == "require_approval"
    approval = {"principal": "rita", "roles": ["reviewer"], "action_digest": d.action_digest, "at": at}
    v = engine.authorize_action(d, [approval], now)
    assert not v.satisfied
    assert [(r.principal, r.code) for r in v.rejected] == [("rita", "future")]
    assert at in v.rejected[0].reason


@pytest.mark.parametrize("at", ["2026-01-01T10:00:00Z", "2026-01-01T10:00:00.000000Z",
                                "2026-01-01T09:59:59.9999999Z", "2026-01-01T11:00:00+01:00"])
def test_an_approval_dated_at_now_or_before_counts(engine, at):
    d = engine.evaluate({"workflow": "w", "type": "pay", "id": "p1", "amount": 200}, None, NOW)
    approval = {"principal": "rita", "roles": ["reviewer"], "action_digest": d.action_digest, "at": at}
    v = engine.authorize_action(d, [approval], NOW)
    assert v.satisfied and v.accepted == ("rita",) and v.rejected == ()
