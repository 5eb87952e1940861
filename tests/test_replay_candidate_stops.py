"""Replay carries the stops the candidate fires forward: where a replayed decision is `stop`
by a trigger the candidate adds and the record's workflow ran on, the workflow is stopped in
the replay from there until the record's next allowed resume, so the decisions after it
replay as `stopped` (what a new stop trigger is for: how much it would have held back).
Before, each later decision replayed under the recorded (running) state and came out
unchanged, so a replay undercounted a new trigger to its first firing and `--as-rollback`
left the executions after it alone. `--recorded-state` (``carry_stops=False``) keeps the old
reading. SQLite and PostgreSQL."""

from __future__ import annotations

import json

from click.testing import CliRunner
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import POLICY, RECEIPT, WF, at, policy_path, rt, send  # noqa: F401  (fixtures)

from policy_engine.cli import main
from policy_engine.replay import changed_executions, replay

BIG_SEND = '''
  stop big_send {
    when `action.type == "send" && action.amount > 400.0`
    severity high
    owner "Support lead"
    affects [helpdesk]
    receipt [message]
    rollback "Send a correction"
    notify [customer]
    resume when {
      fixed: `evidence.fixed == true` "the fix is deployed"
    }
  }

  rollback customer_request {'''
CANDIDATE = POLICY.replace("\n  rollback customer_request {", BIG_SEND, 1)


def _history(rt):
    """A 500 send (approved, executed), a 60 send (allowed, executed), a recorded stop and
    resume, then a 500 send again and a 60 send after it. Returns the decisions and executions."""
    out = {}

    def sent(name, amount, t):
        g = rt.gate(send(amount, id=name), now=at(t))
        if g.effect == "require_approval":
            rt.approve(g.decision_id, principal="sam", roles=["reviewer"], now=at(t + 1))
        x = rt.executed(g.decision_id, receipt=RECEIPT, now=at(t + 2))
        out[name] = (g.decision_id, x.execution_id)

    sent("a500", 500.0, 0)
    sent("a60", 60.0, 10)
    rt.gate(send(promise=True), now=at(20))  # the record's stop (bad_promise)
    out["while_stopped"] = rt.gate(send(60.0), now=at(21)).decision_id
    assert rt.resume(WF, evidence={"fixed": True}, principal="ops", now=at(30)).allowed
    sent("b500", 500.0, 40)
    sent("b60", 60.0, 50)
    return out


def _cand(tmp_path):
    p = tmp_path / "next.policy"
    p.write_text(CANDIDATE)
    return p


def test_a_stop_the_candidate_fires_stops_the_decisions_after_it_until_the_records_resume(rt, ledger_url, tmp_path):  # noqa: F811
    h = _history(rt)
    r = replay(str(_cand(tmp_path)), ledger_url)
    got = {c.decision_id: (c.old_effect, c.old_rule, c.new_effect, c.new_rule) for c in r.changed}
    assert got == {
        h["a500"][0]: ("require_approval", "big", "stop", "stop:big_send"),
        h["a60"][0]: ("allow", "small", "stop", "stopped:big_send"),  # held back by the candidate's stop
        # the record's own stop came while the candidate had stopped it already: a decision in a
        # stopped workflow fires no stop, so the record's stop is lifted (session 26) and the
        # decision held back after it is stopped by the candidate's trigger, not the record's
        **{d.id: ("stop", "stop:bad_promise", "stop", "stopped:big_send")
           for d in rt.ledger.entries(kind="decision") if d.body["decision"]["effect"] == "stop"
           and d.body["decision"]["deciding"]["kind"] == "stop"},
        h["while_stopped"]: ("stop", "stopped:bad_promise", "stop", "stopped:big_send"),
        # after the record's resume: running again, until the candidate fires again
        h["b500"][0]: ("require_approval", "big", "stop", "stop:big_send"),
        h["b60"][0]: ("allow", "small", "stop", "stopped:big_send"),
    }
    resume = [e for e in rt.ledger.entries(kind="resume")][0]
    assert [(x["trigger"], x["until"], x["until_kind"], x["stays_stopped_by"]) for x in r.candidate_lifts] == [
        ("bad_promise", resume.id, "resume", "big_send")]
    assert [(s["decision_id"], s["trigger"], s["until"] is not None) for s in r.candidate_stops] == [
        (h["a500"][0], "big_send", True), (h["b500"][0], "big_send", False)]
    assert r.candidate_stops[0]["until"] == resume.id
    assert r.replayed == r.unchanged + len(r.changed) + len(r.unreplayable)
    # the executions the new trigger would have held back, all four, for a policy reversal
    assert sorted(changed_executions(r)) == sorted(h[k][1] for k in ("a500", "a60", "b500", "b60"))


def test_the_recorded_state_alone_undercounts_as_before(rt, ledger_url, tmp_path):  # noqa: F811
    h = _history(rt)
    r = replay(str(_cand(tmp_path)), ledger_url, carry_stops=False)
    assert {c.decision_id for c in r.changed} == {h["a500"][0], h["b500"][0]}
    assert r.candidate_stops == ()


def test_two_processes_carry_the_same_stops(rt, ledger_url, tmp_path):  # noqa: F811
    _history(rt)
    cand = _cand(tmp_path)
    one = replay(str(cand), ledger_url, workers=1)
    two = replay(str(cand), ledger_url, workers=2)
    assert two.workers == 2
    assert two.to_json() | {"workers": 1} == one.to_json()


def test_the_policy_that_decided_changes_nothing(rt, ledger_url, policy_path):  # noqa: F811
    _history(rt)
    r = replay(str(policy_path), ledger_url)
    assert r.changed == () and r.candidate_stops == ()


def test_the_command_says_so_and_takes_recorded_state(rt, ledger_url, tmp_path):  # noqa: F811
    h = _history(rt)
    cand = _cand(tmp_path)
    out = CliRunner().invoke(main, ["replay", str(cand), "--ledger", ledger_url])
    assert out.exit_code == 0, out.output
    assert f"candidate stop: {WF} stopped by `big_send` at decision {h['a500'][0]}" in out.output
    assert "the decisions after it are replayed as stopped" in out.output
    js = CliRunner().invoke(main, ["replay", str(cand), "--ledger", ledger_url, "--format", "json",
                                   "--recorded-state"])
    assert js.exit_code == 0, js.output
    doc = json.loads(js.output)
    assert doc["candidate_stops"] == [] and doc["changed_count"] == 2
