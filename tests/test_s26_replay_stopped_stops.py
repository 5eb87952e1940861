"""Replay: a stop of the record the candidate never fires, and a stop whose trigger it does not
declare (session 26). SQLite and PostgreSQL.

1. A decision that fired a stop of the record, replayed where the candidate has the workflow
   stopped already (its own stop, or a resume it refused), comes to `stopped:T` (a stopped
   workflow's verdict), and a decision in a stopped workflow fires no stop. So that stop is not the
   candidate's: it is lifted (`candidate_lifts`, `stays_stopped_by` the trigger that holds the
   workflow), and a later resume is asked only the criteria of the stops the candidate has. Before,
   it stayed in the replay under the record's trigger: a resume was asked its criteria as well (the
   candidate reported stricter than it is), or, where the candidate does not declare that trigger,
   the resume was taken as not askable and the record's answer stood for every stop there,
   including one whose criteria the candidate does not meet (reported looser than it is).
2. A stop that does stand in the replay (an operator's, one fired before `--since`) by a trigger
   the candidate does not declare: the candidate has no criteria that could allow a resume of it,
   and `rt.resume` under it refuses (an error never widens permission). The replay now refuses it
   too (`candidate_refused_resumes`, `errors` naming the trigger); before, it stood on the record's
   answer (`unjudged_resumes`) and the workflow replayed as running again.
"""

from __future__ import annotations

import json

from click.testing import CliRunner
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import POLICY, RECEIPT, WF, at, send

from policy_engine import Runtime
from policy_engine.cli import main
from policy_engine.replay import changed_executions, replay

FIXED = '      fixed: `evidence.fixed == true` "the fix is deployed"\n'
REVIEWED = '      reviewed: `has(evidence.reviewed) && evidence.reviewed == true` "the fix is reviewed"\n'
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
      audited: `has(evidence.audited) && evidence.audited == true` "the sends are audited"
    }
  }

  rollback customer_request {'''
assert POLICY.count(FIXED) == 1
#: the policy that recorded: POLICY and a `big_send` trigger
RECORD = POLICY.replace("\n  rollback customer_request {", BIG_SEND, 1)
#: candidates: `bad_promise` asks for a review as well; without `big_send`, and with it
STRICT = POLICY.replace(FIXED, FIXED + REVIEWED, 1)
STRICT_BIG = RECORD.replace(FIXED, FIXED + REVIEWED, 1)
assert len({RECORD, STRICT, STRICT_BIG, POLICY}) == 4


def _write(tmp_path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def _ids(r):
    return {c.decision_id: (c.old_effect, c.old_rule, c.new_effect, c.new_rule) for c in r.changed}


def _adds_up(r):
    assert r.replayed == r.unchanged + len(r.changed) + len(r.unreplayable)


def _history(tmp_path, url: str, second: dict) -> dict:
    """Under RECORD: a promise (the record's stop by `bad_promise`), the operators' resume (fixed,
    not reviewed: allowed), a 500 send (the record's stop by `big_send`), the operators' second
    resume with ``second`` as evidence, a 60 send after it (executed when it was allowed)."""
    with Runtime.open(_write(tmp_path, "record.policy", RECORD), ledger=url) as rt:
        h = {"promise": rt.gate(send(promise=True), now=at(20)).decision_id}
        first = rt.resume(WF, evidence={"fixed": True}, principal="ops", now=at(30))
        assert first.allowed
        h["resume"] = first.resume_id
        h["big"] = rt.gate(send(500.0), now=at(40)).decision_id
        h["big_stop"] = [e.id for e in rt.ledger.entries(kind="stop")][-1]
        res2 = rt.resume(WF, evidence=second, principal="lead", now=at(60))
        h["resume2"], h["allowed2"] = res2.resume_id, res2.allowed
        after = rt.gate(send(60.0), now=at(70))
        h["after"] = after.decision_id
        if after.effect == "allow":
            h["executed"] = rt.executed(after.decision_id, receipt=RECEIPT, now=at(71)).execution_id
    return h


# ------------------------------------------------------- 1. a stop fired where the candidate had it stopped
def test_a_stop_the_record_fired_while_the_candidate_held_the_workflow_is_not_asked_at_the_next_resume(
        ledger_url, tmp_path):  # noqa: F811
    """The candidate refuses the first resume (no review), so the 500 send comes while `bad_promise`
    holds the workflow: it fires no `big_send` (a trigger the candidate does not even declare). At the
    second resume only `bad_promise` stands, and the evidence has no review: refused. Defect: the
    record's `big_send` stop stood there, the candidate could not answer for it, the resume stood on
    the record's answer for `bad_promise` too, and the send after it replayed as `allow` (unchanged):
    the candidate reported as letting through a send it would have held back."""
    h = _history(tmp_path, ledger_url, {"fixed": True, "audited": True})
    assert h["allowed2"]
    cand = _write(tmp_path, "next.policy", STRICT)
    r = replay(cand, ledger_url)
    assert _ids(r) == {h["big"]: ("stop", "stop:big_send", "stop", "stopped:bad_promise"),
                       h["after"]: ("allow", "small", "stop", "stopped:bad_promise")}
    assert changed_executions(r) == [h["executed"]]  # stricter: the send that ran is to be reversed
    assert r.unjudged_resumes == ()
    assert [(x["resume"], x["unmet"], x["stopped_by"], x["until"]) for x in r.candidate_refused_resumes] == [
        (h["resume"], ["reviewed"], ["bad_promise"], None), (h["resume2"], ["reviewed"], ["bad_promise"], None)]
    assert [{k: x[k] for k in ("trigger", "stop", "decision_id", "until", "until_kind", "stays_stopped_by")}
            for x in r.candidate_lifts] == [
        {"trigger": "big_send", "stop": h["big_stop"], "decision_id": h["big"], "until": None, "until_kind": None,
         "stays_stopped_by": "bad_promise"}]
    assert (f"lifted stop: {WF} stopped by `big_send` at decision {h['big']} (2026-11-26T12:00:40.000000Z), which "
            f"the candidate does not fire, to the end of the replay: the workflow stays stopped by `bad_promise` "
            f"in between") in r.text()
    assert "resume stands" not in r.text()
    _adds_up(r)
    # in worker processes and through the command: the same
    assert replay(cand, ledger_url, workers=2).to_json() | {"workers": 1} == r.to_json()
    js = CliRunner().invoke(main, ["replay", cand, "--ledger", ledger_url, "--format", "json"])
    assert js.exit_code == 0, js.output
    doc = json.loads(js.output)
    assert [x["stop"] for x in doc["candidate_lifts"]] == [h["big_stop"]] and doc["unjudged_resumes"] == []
    # the policy that recorded changes nothing
    same = replay(_write(tmp_path, "same.policy", RECORD), ledger_url)
    assert same.changed == () and same.candidate_lifts == () and same.candidate_refused_resumes == ()


def test_a_stop_the_candidate_never_fired_does_not_make_it_refuse_a_resume_it_allows(ledger_url, tmp_path):  # noqa: F811
    """The same, with a candidate that declares `big_send` too, and a second resume the record
    refused (not audited) that meets `bad_promise`'s criteria. The candidate never fired `big_send`:
    it allows that resume, and the send after it runs. Defect: the record's `big_send` stop stood in
    the replay, was asked (not audited), and the workflow replayed as stopped to the end."""
    h = _history(tmp_path, ledger_url, {"fixed": True, "reviewed": True})
    assert not h["allowed2"]
    r = replay(_write(tmp_path, "next.policy", STRICT_BIG), ledger_url)
    assert _ids(r) == {h["big"]: ("stop", "stop:big_send", "stop", "stopped:bad_promise"),
                       h["after"]: ("stop", "stopped:big_send", "allow", "small")}
    assert [(x["resume"], x["until"]) for x in r.candidate_refused_resumes] == [(h["resume"], h["resume2"])]
    assert [(x["resume"], x["stopped_by"], x["recorded_unmet"], x["until"]) for x in r.candidate_allowed_resumes] \
        == [(h["resume2"], ["bad_promise"], ["audited"], None)]
    assert [(x["decision_id"], x["until"], x["until_kind"], x["stays_stopped_by"]) for x in r.candidate_lifts] == [
        (h["big"], h["resume2"], "resume", "bad_promise")]
    assert r.unjudged_resumes == ()
    _adds_up(r)


# ------------------------------------------------------- 2. a standing stop by a trigger the candidate lacks
def test_an_operators_stop_by_a_trigger_the_candidate_does_not_declare_does_not_hide_its_refusal(
        ledger_url, tmp_path):  # noqa: F811
    """An operator's stop by `big_send` (appended to the ledger: no decision fired it, so it stands) on
    top of the record's `bad_promise`; the operators' resume meets both triggers' criteria in the
    record. The candidate asks a review for `bad_promise` and has no `big_send`. Defect: the
    undeclared trigger made the resume not askable, it stood on the record's answer, and the send
    after it replayed as `allow`: neither the unmet review nor the undeclared trigger was reported."""
    with Runtime.open(_write(tmp_path, "record.policy", RECORD), ledger=ledger_url) as rt:
        rt.gate(send(promise=True), now=at(20))
        rt.ledger.append("stop", {"trigger": "big_send", "stopped_at": "2026-11-26T12:00:25.000000Z",
                                       "principal": "ops"}, workflow=WF)
        res = rt.resume(WF, evidence={"fixed": True, "audited": True}, principal="lead", now=at(30))
        assert res.allowed
        after = rt.gate(send(60.0), now=at(40))
        assert after.effect == "allow"
    r = replay(_write(tmp_path, "next.policy", STRICT), ledger_url)
    assert _ids(r) == {after.decision_id: ("allow", "small", "stop", "stopped:big_send")}
    assert r.unjudged_resumes == () and r.candidate_lifts == ()
    [x] = r.candidate_refused_resumes
    assert (x["resume"], x["unmet"], x["stopped_by"], x["until"]) == (
        res.resume_id, ["reviewed"], ["bad_promise", "big_send"], None)
    assert "declares no stop trigger `\"big_send\"`" in x["errors"]
    # a candidate that meets `bad_promise`'s criteria refuses it all the same: `big_send` cannot be resumed
    loose = replay(_write(tmp_path, "loose.policy", POLICY), ledger_url)
    [y] = loose.candidate_refused_resumes
    assert (y["resume"], y["unmet"]) == (res.resume_id, []) and "declares no stop trigger" in y["errors"]
    assert _ids(loose) == _ids(r) and loose.unjudged_resumes == ()
    assert (f"refused resume: {WF} resumed at 2026-11-26T12:00:30.000000Z by lead (resume {res.resume_id}), which "
            f"the candidate refuses (workflow `replies` declares no stop trigger `\"big_send\"`") in loose.text()
    _adds_up(r)
    _adds_up(loose)
    assert replay(_write(tmp_path, "same.policy", RECORD), ledger_url).changed == ()


def test_a_stop_before_since_whose_trigger_is_gone_is_not_resumed_but_one_inside_is_lifted(ledger_url, tmp_path):  # noqa: F811
    """The candidate drops `big_send`. Over the whole record the 500 send replays as an approval: the
    stop is lifted, nothing is asked. From `--since` after it, the stop stands (its decision is not
    replayed) and the candidate, which cannot resume a trigger it does not declare, refuses the resume
    (before: it stood, `unjudged_resumes`, and the workflow replayed as running again)."""
    with Runtime.open(_write(tmp_path, "record.policy", RECORD), ledger=ledger_url) as rt:
        big = rt.gate(send(500.0), now=at(10)).decision_id
        res = rt.resume(WF, evidence={"fixed": True, "audited": True}, principal="ops", now=at(30))
        assert res.allowed
        after = rt.gate(send(60.0), now=at(40)).decision_id
    cand = _write(tmp_path, "next.policy", POLICY)
    whole = replay(cand, ledger_url)
    assert _ids(whole) == {big: ("stop", "stop:big_send", "require_approval", "big")}
    assert [x["decision_id"] for x in whole.candidate_lifts] == [big]
    assert whole.candidate_refused_resumes == () and whole.unjudged_resumes == ()
    window = replay(cand, ledger_url, since="2026-11-26T12:00:20Z")
    assert _ids(window) == {after: ("allow", "small", "stop", "stopped:big_send")}
    assert window.unjudged_resumes == () and window.candidate_lifts == ()
    [x] = window.candidate_refused_resumes
    assert (x["resume"], x["unmet"], x["stopped_by"], x["until"]) == (res.resume_id, [], ["big_send"], None)
    assert x["errors"] == "workflow `replies` declares no stop trigger `\"big_send\"` (declared: `bad_promise`)"
    assert "it stays stopped by `big_send` to the end of the replay" in window.text()
    _adds_up(window)
