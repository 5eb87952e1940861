"""Replay lifts a stop the candidate would not have fired (session 23). A stop of the record
fired by a decision that replays as no stop (the candidate drops the trigger, or fires it
from a higher threshold) is taken out of the replay's workflow state from that decision
until the record's next allowed resume (or the next stop that stands), so the decisions the
record held back as `stopped` replay as if the workflow ran: `stopped -> allow`. Before, the
record's stop stood, every later decision replayed as `stopped` and came out unchanged, so a
looser candidate under-reported. A stop that is not the policy's (an operator's, appended by
`stopline ledger append`), one fired before `--since`, or one whose decision the candidate
cannot judge stands; `--recorded-state` lifts nothing. SQLite and PostgreSQL.

Refresh the snapshot with `python -m pytest tests/test_s23_replay_lift.py --snapshot-update`
and review the diff."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import POLICY, RECEIPT, WF, at, policy_path, rt, send  # noqa: F401  (fixtures)

from policy_engine import Runtime
from policy_engine.cli import main
from policy_engine.replay import changed_executions, replay

BIG_SEND = '''
  stop big_send {
    when `action.type == "send" && action.amount > LIMIT`
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
NO_PROMISE = POLICY.replace(PROMISE, "", 1)  # the candidate drops the trigger


def _with_big(text: str, limit: str) -> str:
    return text.replace("\n  rollback customer_request {", BIG_SEND.replace("LIMIT", limit), 1)


def _write(tmp_path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def _cli(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def _ids(r):
    return {c.decision_id: (c.old_effect, c.old_rule, c.new_effect, c.new_rule) for c in r.changed}


def _promise_history(rt):  # noqa: F811
    """A 60 send (executed), a promise (the record's stop by `bad_promise`), a 60 send held
    back as stopped, the operators' resume, a 60 send after it."""
    out = {}
    g = rt.gate(send(60.0), now=at(0))
    out["before"] = (g.decision_id, rt.executed(g.decision_id, receipt=RECEIPT, now=at(1)).execution_id)
    out["promise"] = rt.gate(send(promise=True), now=at(20)).decision_id
    out["held"] = rt.gate(send(60.0), now=at(21)).decision_id
    res = rt.resume(WF, evidence={"fixed": True}, principal="ops", now=at(30))
    assert res.allowed
    out["resume"] = res.resume_id
    out["after"] = rt.gate(send(60.0), now=at(40)).decision_id
    out["stop"] = [e.id for e in rt.ledger.entries(kind="stop")][0]
    return out


def test_a_dropped_trigger_lifts_the_records_stop_until_its_resume(rt, ledger_url, tmp_path):  # noqa: F811
    """Defect: the decision held back by the record's stop replayed as `stopped` (unchanged)."""
    h = _promise_history(rt)
    r = replay(_write(tmp_path, "next.policy", NO_PROMISE), ledger_url)
    assert _ids(r) == {h["promise"]: ("stop", "stop:bad_promise", "allow", "small"),
                       h["held"]: ("stop", "stopped:bad_promise", "allow", "small")}
    assert r.candidate_lifts == ({"workflow": WF, "trigger": "bad_promise", "stop": h["stop"],
                                  "decision_id": h["promise"], "seq": r.candidate_lifts[0]["seq"],
                                  "at": "2026-11-26T12:00:20.000000Z", "until": h["resume"], "until_kind": "resume",
                                  "stays_stopped_by": None},)
    assert r.candidate_stops == ()
    assert r.replayed == 4 == r.unchanged + len(r.changed) + len(r.unreplayable)
    assert changed_executions(r) == []  # looser: nothing to roll back
    # --recorded-state: the record's stop stands, as before
    kept = replay(_write(tmp_path, "next.policy", NO_PROMISE), ledger_url, carry_stops=False)
    assert set(_ids(kept)) == {h["promise"]} and kept.candidate_lifts == ()
    assert kept.replayed == kept.unchanged + len(kept.changed) + len(kept.unreplayable)


def test_a_higher_threshold_lifts_it_through_the_command(ledger_url, tmp_path, snapshot):  # noqa: F811
    """The trigger present in both, stricter (fires less) in the candidate: text and JSON."""
    old = _write(tmp_path, "old.policy", _with_big(POLICY, "400.0"))
    cand = _write(tmp_path, "next.policy", _with_big(POLICY, "800.0"))
    with Runtime.open(old, ledger=ledger_url) as rt:  # noqa: F811
        big = rt.gate(send(500.0), now=at(0))
        assert big.effect == "stop"
        held = rt.gate(send(60.0), now=at(1)).decision_id
        resume = rt.resume(WF, evidence={"fixed": True}, principal="ops", now=at(10)).resume_id
        rt.gate(send(60.0), now=at(20))
        stop = [e.id for e in rt.ledger.entries(kind="stop")][0]
    js = _cli("replay", cand, "--ledger", ledger_url, "--format", "json")
    assert js.exit_code == 0, js.output
    doc = json.loads(js.output)
    assert doc["counts"] == {"stop -> allow": 1, "stop -> require_approval": 1}
    assert [(c["decision_id"], c["new_rule"]) for c in doc["changed"]] == [(big.decision_id, "big"),
                                                                           (held, "small")]
    assert [(x["decision_id"], x["stop"], x["until"], x["until_kind"]) for x in doc["candidate_lifts"]] == [
        (big.decision_id, stop, resume, "resume")]
    assert doc["replayed"] == doc["unchanged"] + doc["changed_count"] + len(doc["unreplayable"]) == 3
    out = _cli("replay", cand, "--ledger", ledger_url)
    assert out.exit_code == 0, out.output
    assert (f"lifted stop: {WF} stopped by `big_send` at decision {big.decision_id} (2026-11-26T12:00:00.000000Z), "
            f"which the candidate does not fire, until the resume {resume}") in out.output
    names = {big.decision_id: "D-big", held: "D-held", resume: "R-resume"}
    text = re.sub("|".join(map(re.escape, names)), lambda m: names[m.group(0)], out.output)
    assert text == snapshot(name="lifted_stop_text")


def test_an_operators_stop_stands_and_ends_the_lifted_interval(rt, ledger_url, tmp_path):  # noqa: F811
    """A stop appended by `stopline ledger append` (not fired by a decision: the policy did not
    fire it, the candidate cannot lift it) stands, even linked to a decision; a stop lifted
    before it is lifted until it."""
    promise = rt.gate(send(promise=True), now=at(20)).decision_id
    freed = rt.gate(send(60.0), now=at(21)).decision_id
    body = tmp_path / "stop.json"
    body.write_text(json.dumps({"trigger": "ops_hold", "stopped_at": "2026-11-26T12:00:25Z"}))
    app = _cli("ledger", "append", "stop", body, "--workflow", WF, "--link", freed, "--ledger", ledger_url)
    assert app.exit_code == 0, app.output
    manual = json.loads(app.output)["id"]
    still = rt.gate(send(60.0), now=at(26)).decision_id
    r = replay(_write(tmp_path, "next.policy", NO_PROMISE), ledger_url)
    assert _ids(r) == {promise: ("stop", "stop:bad_promise", "allow", "small"),
                       freed: ("stop", "stopped:bad_promise", "allow", "small")}
    assert still not in _ids(r)  # stopped by the operator's stop in the candidate's replay too
    assert [(x["decision_id"], x["until"], x["until_kind"]) for x in r.candidate_lifts] == [
        (promise, manual, "stop")]
    assert r.replayed == r.unchanged + len(r.changed) + len(r.unreplayable)
    assert f"until the recorded stop {manual} (which stands)" in r.text()


def test_a_stop_whose_decision_cannot_be_replayed_stands_and_says_so(rt, ledger_url, tmp_path):  # noqa: F811
    """A stop fired by a decision another recorder wrote with a `now` that is not a time: the
    candidate cannot judge it, so its stop is not lifted; the listing says so."""
    d = rt.ledger.append("decision", {"action": send(promise=True), "now": "yesterday", "policy_hash": "x",
                                      "decision": {"effect": "stop", "deciding": {"kind": "stop",
                                                                                  "name": "bad_promise"}}},
                         workflow=WF)
    rt.ledger.append("stop", {"trigger": "bad_promise", "decision": 0, "stopped_at": "2026-11-26T12:00:20Z"},
                     workflow=WF, links=[d.id])
    held = rt.gate(send(60.0), now=at(21))
    assert held.effect == "stop"
    r = replay(_write(tmp_path, "next.policy", NO_PROMISE), ledger_url)
    assert r.changed == () and r.candidate_lifts == ()
    assert [(u["decision_id"], u["stop_stands"]["trigger"]) for u in r.unreplayable] == [(d.id, "bad_promise")]
    assert r.replayed == 2 == r.unchanged + len(r.changed) + len(r.unreplayable)
    assert f"unreplayable {d.id}: " in r.text() and "linked to it stands" in r.text()


def test_since_lifts_only_the_stops_fired_inside_the_window(rt, ledger_url, tmp_path):  # noqa: F811
    h = _promise_history(rt)
    cand = _write(tmp_path, "next.policy", NO_PROMISE)
    outside = replay(cand, ledger_url, since="2026-11-26T12:00:20.5Z")  # the stop's decision is before it
    assert outside.candidate_lifts == ()
    # the stop stands, and the candidate, which no longer declares its trigger, cannot allow the resume
    # that lifted it in the record (session 26: before, the record's answer stood): stopped to the end
    assert _ids(outside) == {h["after"]: ("allow", "small", "stop", "stopped:bad_promise")}
    assert [(x["resume"], x["until"]) for x in outside.candidate_refused_resumes] == [(h["resume"], None)]
    inside = replay(cand, ledger_url, since="2026-11-26T12:00:20Z")
    assert set(_ids(inside)) == {h["promise"], h["held"]}
    assert [x["decision_id"] for x in inside.candidate_lifts] == [h["promise"]]


def test_a_candidate_stop_inside_a_lifted_interval_is_carried_and_ends_it(rt, ledger_url, tmp_path):  # noqa: F811
    """The candidate drops `bad_promise` and adds `big_send`: the 500 send the record held back
    as stopped would have fired `big_send` on a running workflow, which then stops the rest."""
    promise = rt.gate(send(promise=True), now=at(20)).decision_id
    big = rt.gate(send(500.0), now=at(21)).decision_id
    small = rt.gate(send(60.0), now=at(22)).decision_id
    resume = rt.resume(WF, evidence={"fixed": True}, principal="ops", now=at(30)).resume_id
    r = replay(_write(tmp_path, "next.policy", _with_big(NO_PROMISE, "400.0")), ledger_url)
    assert _ids(r) == {promise: ("stop", "stop:bad_promise", "allow", "small"),
                       big: ("stop", "stopped:bad_promise", "stop", "stop:big_send"),
                       small: ("stop", "stopped:bad_promise", "stop", "stopped:big_send")}
    assert [(x["decision_id"], x["until"], x["until_kind"]) for x in r.candidate_lifts] == [
        (promise, big, "candidate stop")]
    assert [(x["decision_id"], x["until"]) for x in r.candidate_stops] == [(big, resume)]
    assert "until the candidate's stop at decision " + big in r.text()
    one = replay(_write(tmp_path, "next.policy", _with_big(NO_PROMISE, "400.0")), ledger_url, workers=2)
    assert one.to_json() | {"workers": 1} == r.to_json()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_as_rollback_plans_nothing_for_a_lifted_stop_but_reports_it(rt, ledger_url, tmp_path, fmt):  # noqa: F811
    h = _promise_history(rt)
    cand = _write(tmp_path, "next.policy", NO_PROMISE)
    out = _cli("replay", cand, "--ledger", ledger_url, "--as-rollback", "customer_request", "--format", fmt)
    assert out.exit_code == 0, out.output
    if fmt == "json":
        doc = json.loads(out.output)
        assert doc["batch"] is None and doc["counts"] == {"stop -> allow": 2}
        assert [x["decision_id"] for x in doc["candidate_lifts"]] == [h["promise"]]
    else:
        assert f"lifted stop: {WF} stopped by `bad_promise` at decision {h['promise']}" in out.output
        assert "stop (stopped:bad_promise) -> allow (small): 1 decision(s), 0 executed" in out.output
        assert "no batch: no decision whose verdict got stricter was executed" in out.output


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


def test_a_stop_a_repair_fired_while_stopped_is_lifted_but_the_earlier_stop_holds(ledger_url, tmp_path):  # noqa: F811
    """A repair action (`runs_while_stopped`) fired a second trigger the candidate drops: its
    stop is lifted, and the workflow stays stopped by the first one (said so), not running."""
    old = _write(tmp_path, "old.policy", POLICY.replace("\n  rollback customer_request {", BAD_LOG, 1))
    with Runtime.open(old, ledger=ledger_url) as rt:  # noqa: F811
        rt.gate(send(promise=True), now=at(20))
        log = rt.gate({"workflow": WF, "type": "log", "bad": True}, now=at(21))
        assert log.effect == "stop"
        held = rt.gate(send(60.0), now=at(22)).decision_id
    r = replay(_write(tmp_path, "next.policy", POLICY), ledger_url)
    assert _ids(r) == {log.decision_id: ("stop", "stop:bad_log", "allow", "any"),
                       held: ("stop", "stopped:bad_log", "stop", "stopped:bad_promise")}
    assert [(x["decision_id"], x["stays_stopped_by"], x["until"]) for x in r.candidate_lifts] == [
        (log.decision_id, "bad_promise", None)]
    assert "to the end of the replay: the workflow stays stopped by `bad_promise` in between" in r.text()
