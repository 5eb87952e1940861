"""Replay's second pass (session 23, replay2). SQLite and PostgreSQL.

1. Accounting: when a workflow's later decisions are replayed again under a changed
   timeline (a carried or a lifted stop), what each comes to now replaces what it came to
   before. An evaluator other than an ``Engine`` (``replay`` takes any object with
   ``evaluate``; the package's ``Engine`` never raises) may raise under one workflow state
   and not another: such a decision was dropped from the second pass's result yet stayed
   counted as unchanged (the problem hidden), and one that could not be judged in the first
   pass but could in the second was counted as both unreplayable and changed (`unchanged`
   came out negative). Now each decision is counted once, in what it came to last.
2. A decision that fired a stop of the record and replays as a stop by another trigger
   (``stop:T1 -> stop:T2``) stops the workflow by the candidate's trigger in the replay:
   before, the later decisions kept the record's ``stopped_by: T1``, so a rule reading
   ``workflow.stopped_by`` (a repair action's) and the held-back decisions' ``stopped:T``
   were judged under the wrong trigger. It is listed with the candidate stops
   (``replaces``)."""

from __future__ import annotations

import json

from click.testing import CliRunner
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import POLICY, WF, at, policy_path, rt, send  # noqa: F401  (fixtures)

from policy_engine import Runtime, load
from policy_engine.cli import main
from policy_engine.replay import replay

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
PROMISE = POLICY[POLICY.index("  stop bad_promise {"):POLICY.index("  rollback customer_request {")]
NO_PROMISE = POLICY.replace(PROMISE, "", 1)
WITH_BIG = POLICY.replace("\n  rollback customer_request {", BIG_SEND, 1)
# the same trigger under another name, and a repair action whose rule reads `workflow.stopped_by`
RENAMED = POLICY.replace("stop bad_promise {", "stop broken_promise {", 1).replace(
    "    allow any when `true`\n", "    deny after_broken when `workflow.stopped_by == \"broken_promise\"`\n"
                                  "    allow any when `true`\n", 1)


def _write(tmp_path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def _ids(r):
    return {c.decision_id: (c.old_effect, c.old_rule, c.new_effect, c.new_rule) for c in r.changed}


def _adds_up(r) -> None:
    assert r.unchanged >= 0 and r.replayed == r.unchanged + len(r.changed) + len(r.unreplayable)
    listed = [u["decision_id"] for u in r.unreplayable]
    assert len(listed) == len(set(listed)) and not set(listed) & set(_ids(r))


class StoppedBlind:
    """An evaluator that cannot judge a stopped workflow's decisions (it raises): what a
    caller's own wrapper of an Engine may do."""

    def __init__(self, engine):
        self.engine = engine
        self.policy_hash = engine.policy_hash

    def evaluate(self, action, workflow_state=None, now=None):
        if workflow_state is not None and workflow_state.get("status") == "stopped":
            raise RuntimeError("no state lookups here")
        return self.engine.evaluate(action, workflow_state, now)


# ------------------------------------------------------------------------------ 1. accounting
def test_a_decision_the_carried_stop_makes_unreplayable_is_unreplayable_not_unchanged(rt, ledger_url,  # noqa: F811
                                                                                       tmp_path):
    """Defect: the 60 send after the candidate's stop was dropped from the second pass and
    stayed counted as unchanged; nothing said it could not be judged."""
    big = rt.gate(send(500.0), now=at(0)).decision_id  # require_approval (big) in the record
    small = rt.gate(send(60.0), now=at(10)).decision_id  # allow (small)
    r = replay(StoppedBlind(load(_write(tmp_path, "next.policy", WITH_BIG))), ledger_url)
    assert _ids(r) == {big: ("require_approval", "big", "stop", "stop:big_send")}
    assert [(u["decision_id"], u["workflow"]) for u in r.unreplayable] == [(small, WF)]
    assert "cannot evaluate it: RuntimeError: no state lookups here" in r.unreplayable[0]["reason"]
    assert (r.replayed, r.unchanged) == (2, 0)
    _adds_up(r)
    assert "1 changed, 0 unchanged, 1 unreplayable" in r.text()


def test_a_decision_replayed_three_times_is_counted_once_in_what_it_came_to_last(rt, ledger_url,  # noqa: F811
                                                                                 tmp_path):
    """The record's stop is lifted (the candidate drops `bad_promise`), then the candidate's
    own stop (`big_send`) is carried: the 60 send is replayed three times, stopped (cannot be
    judged), running (allow), stopped again (cannot be judged). Defect: the first pass's
    unreplayable items stayed while the second pass listed the 500 send as changed too, and
    `unchanged` came out as -1."""
    promise = rt.gate(send(promise=True), now=at(20)).decision_id  # the record's stop (bad_promise)
    big = rt.gate(send(500.0), now=at(21)).decision_id  # held back as stopped
    small = rt.gate(send(60.0), now=at(22)).decision_id  # held back as stopped
    cand = StoppedBlind(load(_write(tmp_path, "next.policy", WITH_BIG.replace(PROMISE, "", 1))))
    r = replay(cand, ledger_url)
    assert _ids(r) == {promise: ("stop", "stop:bad_promise", "allow", "small"),
                       big: ("stop", "stopped:bad_promise", "stop", "stop:big_send")}
    assert [u["decision_id"] for u in r.unreplayable] == [small]
    assert (r.replayed, r.unchanged) == (3, 0)
    _adds_up(r)
    assert [x["decision_id"] for x in r.candidate_lifts] == [promise]
    assert [x["decision_id"] for x in r.candidate_stops] == [big]
    # the recorded state: the first pass only, each counted once all the same
    kept = replay(cand, ledger_url, carry_stops=False)
    assert [u["decision_id"] for u in kept.unreplayable] == [big, small] and kept.unchanged == 0
    _adds_up(kept)


# ------------------------------------------------------------------------------ 2. stop:T1 -> stop:T2
def _renamed_history(rt):  # noqa: F811
    """A promise (the record's stop by `bad_promise`), a repair `log` and a 60 send while
    stopped, the operators' resume, a 60 send after it."""
    out = {"promise": rt.gate(send(promise=True), now=at(20)).decision_id}
    log = rt.gate({"workflow": WF, "type": "log"}, now=at(21))
    assert log.effect == "allow"
    out["log"] = log.decision_id
    out["held"] = rt.gate(send(60.0), now=at(22)).decision_id
    res = rt.resume(WF, evidence={"fixed": True}, principal="ops", now=at(30))
    assert res.allowed
    out["resume"] = res.resume_id
    out["after"] = rt.gate(send(60.0), now=at(40)).decision_id
    out["stop"] = [e.id for e in rt.ledger.entries(kind="stop")][0]
    return out


def test_a_stop_by_another_trigger_stops_the_replay_by_the_candidates_trigger(rt, ledger_url, tmp_path):  # noqa: F811
    """Defect: the log and the held send were replayed under the record's `stopped_by:
    bad_promise`: the log's rule reading `workflow.stopped_by` did not fire (unchanged
    `allow`), and the send stayed `stopped:bad_promise`."""
    h = _renamed_history(rt)
    cand = _write(tmp_path, "next.policy", RENAMED)
    r = replay(cand, ledger_url)
    assert _ids(r) == {h["promise"]: ("stop", "stop:bad_promise", "stop", "stop:broken_promise"),
                       h["log"]: ("allow", "any", "deny", "after_broken"),
                       h["held"]: ("stop", "stopped:bad_promise", "stop", "stopped:broken_promise")}
    assert r.candidate_stops == ({"workflow": WF, "trigger": "broken_promise", "decision_id": h["promise"],
                                  "seq": r.candidate_stops[0]["seq"], "at": "2026-11-26T12:00:20.000000Z",
                                  "until": h["resume"], "replaces": h["stop"], "replaces_trigger": "bad_promise"},)
    assert r.candidate_lifts == () and (r.replayed, r.unchanged) == (4, 1)
    _adds_up(r)
    assert (f"candidate stop: {WF} stopped by `broken_promise` at decision {h['promise']} "
            f"(2026-11-26T12:00:20.000000Z), in place of the recorded stop {h['stop']} by `bad_promise`, "
            f"until the resume {h['resume']}") in r.text()
    # the same in parallel, and through the command
    assert replay(cand, ledger_url, workers=2).to_json() | {"workers": 1} == r.to_json()
    out = CliRunner().invoke(main, ["replay", cand, "--ledger", ledger_url, "--format", "json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert [(x["decision_id"], x["replaces"], x["replaces_trigger"]) for x in doc["candidate_stops"]] == [
        (h["promise"], h["stop"], "bad_promise")]
    # --recorded-state: the record's trigger stands
    kept = replay(cand, ledger_url, carry_stops=False)
    assert set(_ids(kept)) == {h["promise"]} and kept.candidate_stops == ()


BAD_LOG = '''
  stop bad_log {
    when `action.type == "log" && action.bad`
    severity high
    owner "Support lead"
    affects [crm]
    receipt [note]
    rollback "Amend the note"
    notify [customer]
    resume when {
      fixed: `evidence.fixed == true` "the fix is deployed"
    }
  }

  rollback customer_request {'''


def test_a_lifted_stop_ends_at_a_stop_the_candidate_fires_by_another_trigger(ledger_url, tmp_path):  # noqa: F811
    """The candidate drops `bad_promise` and renames `bad_log`: the record's first stop is
    lifted until the second, which stops the workflow by the candidate's name for it."""
    old = _write(tmp_path, "old.policy", POLICY.replace("\n  rollback customer_request {", BAD_LOG, 1))
    cand = _write(tmp_path, "next.policy", NO_PROMISE.replace("\n  rollback customer_request {",
                                                              BAD_LOG.replace("bad_log {", "log_gone_bad {"), 1))
    with Runtime.open(old, ledger=ledger_url) as rt:  # noqa: F811
        promise = rt.gate(send(promise=True), now=at(20)).decision_id
        log = rt.gate({"workflow": WF, "type": "log", "bad": True}, now=at(21))
        assert log.effect == "stop"
        held = rt.gate(send(60.0), now=at(22)).decision_id
        stops = [e.id for e in rt.ledger.entries(kind="stop")]
    r = replay(cand, ledger_url)
    assert _ids(r) == {promise: ("stop", "stop:bad_promise", "allow", "small"),
                       log.decision_id: ("stop", "stop:bad_log", "stop", "stop:log_gone_bad"),
                       held: ("stop", "stopped:bad_log", "stop", "stopped:log_gone_bad")}
    assert [(x["decision_id"], x["until"], x["until_kind"], x["stays_stopped_by"]) for x in r.candidate_lifts] == [
        (promise, log.decision_id, "candidate stop", None)]
    assert [(x["decision_id"], x["trigger"], x["replaces"], x["until"]) for x in r.candidate_stops] == [
        (log.decision_id, "log_gone_bad", stops[1], None)]
    _adds_up(r)
