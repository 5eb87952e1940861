"""Replay asks the candidate's criteria for its own stops at the record's resumes (session 25).
With `carry_stops` the candidate's own stops are carried (a trigger that fires where the record
ran on, or that fires in place of the record's under another name). At each recorded resume
where one stands in the replay, the candidate is asked the criteria of every stop that stands
there, the record's and its own, over the resume's recorded evidence at its recorded time, as
`rt.resume` asks them when several stops stand. Its own stop is lifted only if it allows; where
it refuses, the resume does not lift anything (the workflow stays stopped, the decisions after
it replay as stopped until a later resume it allows); where it cannot be asked (no evidence
recorded: a resume appended by hand), the resume stands for the record's stops but not for the
candidate's own: errors never widen permission. Each such resume is listed
(`candidate_own_stops_kept`). Before, the candidate's own stop was taken to be lifted by the
record's next standing resume, whatever its criteria said. SQLite and PostgreSQL."""

from __future__ import annotations

import json

from click.testing import CliRunner
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import POLICY, WF, at, policy_path, rt, send  # noqa: F401  (fixtures)

from policy_engine.cli import main
from policy_engine.replay import changed_executions, replay

FIXED = '      fixed: `evidence.fixed == true` "the fix is deployed"\n'
assert POLICY.count(FIXED) == 1
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
#: the candidate: a new trigger (the record had none) whose resume also asks for an audit
AUDITED = POLICY.replace("\n  rollback customer_request {", BIG_SEND, 1)
#: the record's trigger under another name (fires in place of it), asking for a review as well
RENAMED_STRICT = POLICY.replace("stop bad_promise {", "stop broken_promise {", 1).replace(
    FIXED, FIXED + '      reviewed: `has(evidence.reviewed) && evidence.reviewed == true` "reviewed"\n', 1)
#: the same, asking for a deployed or a reviewed fix
RENAMED_LOOSE = POLICY.replace("stop bad_promise {", "stop broken_promise {", 1).replace(
    FIXED, '      fixed: `evidence.fixed == true || evidence.reviewed == true` "fixed or reviewed"\n', 1)
assert AUDITED != POLICY and RENAMED_STRICT != POLICY and RENAMED_LOOSE != POLICY


def _write(tmp_path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def _ids(r):
    return {c.decision_id: (c.old_effect, c.old_rule, c.new_effect, c.new_rule) for c in r.changed}


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _adds_up(r):
    assert r.replayed == r.unchanged + len(r.changed) + len(r.unreplayable)


def _history(rt, evidence):  # noqa: F811
    """A 500 send (approval in the record; the candidate's `big_send` stops the workflow), a promise
    (the record's stop by `bad_promise`), the operators' resume with ``evidence`` (allowed: it is
    fixed), a send after it (allowed, executed)."""
    h = {"big": rt.gate(send(500.0), now=at(10)).decision_id,
         "promise": rt.gate(send(promise=True), now=at(20)).decision_id}
    res = rt.resume(WF, evidence=evidence, principal="ops", now=at(30))
    assert res.allowed
    h["resume"] = res.resume_id
    after = rt.gate(send(60.0), now=at(40))
    assert after.effect == "allow"
    h["after"] = after.decision_id
    h["executed"] = rt.executed(after.decision_id, receipt={"message": "m", "ticket": "T"}, now=at(41)).execution_id
    return h


# ------------------------------------------------------------------ the candidate refuses: its stop stands
def test_a_resume_that_does_not_meet_the_candidates_own_criteria_keeps_the_workflow_stopped(
        rt, ledger_url, tmp_path):  # noqa: F811
    """Defect: the resume lifted the candidate's `big_send` stop without its criteria being asked,
    so the send after it replayed as `allow` (unchanged) and nothing was reported."""
    h = _history(rt, {"fixed": True, "audited": False})
    cand = _write(tmp_path, "next.policy", AUDITED)
    r = replay(cand, ledger_url)
    # the candidate refuses the resume as a whole (as `rt.resume` does): every stop stands. The record's
    # promise came while `big_send` held the workflow in the replay: it fires nothing there, and its stop
    # is lifted (session 26: before, it stood and named the state), so `big_send` alone holds it
    assert _ids(r)[h["after"]] == ("allow", "small", "stop", "stopped:big_send")
    assert r.candidate_own_stops_kept == (
        {"workflow": WF, "resume": h["resume"], "seq": r.candidate_own_stops_kept[0]["seq"],
         "at": "2026-11-26T12:00:30.000000Z", "principal": "ops", "triggers": ["big_send"],
         "decisions": [h["big"]], "unmet": ["audited"], "errors": None, "reason": None,
         "stopped_by": ["big_send"], "until": None},)
    assert [(x["decision_id"], x["until"], x["stays_stopped_by"]) for x in r.candidate_lifts] == [
        (h["promise"], None, "big_send")]
    # the record's stop's criteria are met: not a refusal over the record's stops
    assert r.candidate_refused_resumes == () and r.unjudged_resumes == () and r.candidate_allowed_resumes == ()
    assert [(x["decision_id"], x["until"]) for x in r.candidate_stops] == [(h["big"], None)]
    assert changed_executions(r) == [h["executed"]]  # stricter: the send that ran is to be reversed
    _adds_up(r)
    assert (f"own stop kept: {WF} resumed at 2026-11-26T12:00:30.000000Z by ops (resume {h['resume']}) does not "
            f"lift the candidate's own stop by `big_send` (decision {h['big']}): the candidate refuses it (unmet: "
            f"`audited`); it stays stopped by `big_send` to the end of the replay: the decisions "
            f"in between are replayed as stopped") in r.text()
    assert f"`big_send` at decision {h['big']} (2026-11-26T12:00:10.000000Z), to the end of the replay" in r.text()
    # in worker processes, through the command, and --recorded-state (nothing carried, nothing asked)
    assert replay(cand, ledger_url, workers=2).to_json() | {"workers": 1} == r.to_json()
    js = _cli("replay", cand, "--ledger", ledger_url, "--format", "json")
    assert js.exit_code == 0, js.output
    doc = json.loads(js.output)
    assert [(x["resume"], x["triggers"], x["unmet"], x["until"]) for x in doc["candidate_own_stops_kept"]] == [
        (h["resume"], ["big_send"], ["audited"], None)]
    out = _cli("replay", cand, "--ledger", ledger_url)
    assert out.exit_code == 0 and f"own stop kept: {WF} resumed at " in out.output
    kept = replay(cand, ledger_url, carry_stops=False)
    assert kept.candidate_own_stops_kept == () and h["after"] not in _ids(kept)


def test_a_renamed_trigger_with_a_stricter_criterion_refuses_the_recorded_resume(rt, ledger_url, tmp_path):  # noqa: F811
    """The candidate fires `broken_promise` in place of the record's `bad_promise` (its own stop:
    no stop of the record stands at the resume). Defect: nothing was asked there, the resume
    lifted it, and the sends after it replayed as `allow`."""
    promise = rt.gate(send(promise=True), now=at(20)).decision_id
    resume = rt.resume(WF, evidence={"fixed": True}, principal="ops", now=at(30)).resume_id
    after = rt.gate(send(60.0), now=at(40)).decision_id
    rt.gate(send(promise=True), now=at(50))
    resume2 = rt.resume(WF, evidence={"fixed": True, "reviewed": True}, principal="lead", now=at(60)).resume_id
    after2 = rt.gate(send(60.0), now=at(70)).decision_id
    r = replay(_write(tmp_path, "next.policy", RENAMED_STRICT), ledger_url)
    assert _ids(r)[after] == ("allow", "small", "stop", "stopped:broken_promise")
    assert after2 not in _ids(r)  # the second resume meets the candidate's criteria: it runs again
    [k] = r.candidate_own_stops_kept
    assert (k["resume"], k["triggers"], k["decisions"], k["unmet"], k["reason"], k["until"]) == (
        resume, ["broken_promise"], [promise], ["reviewed"], None, resume2)
    assert "reviewed" not in (k["errors"] or "")  # (`has(...)`: unmet, not an error)
    assert [(x["decision_id"], x["until"]) for x in r.candidate_stops][0] == (promise, resume2)
    assert r.candidate_refused_resumes == ()
    # the record's second promise came while `broken_promise` held the workflow in the replay: it fires
    # nothing there, so the record's stop by `bad_promise` (which the candidate does not declare) is lifted
    # and is not asked at the second resume (session 26: before, it stood, the candidate could not answer
    # for it, and the resume was listed as standing on the record's answer)
    assert r.unjudged_resumes == ()
    assert [(x["trigger"], x["until"], x["stays_stopped_by"]) for x in r.candidate_lifts] == [
        ("bad_promise", resume2, "broken_promise")]
    _adds_up(r)


# ------------------------------------------------------------------ the candidate allows: its stop is lifted
def test_a_resume_that_meets_the_candidates_own_criteria_lifts_its_stop(rt, ledger_url, tmp_path):  # noqa: F811
    h = _history(rt, {"fixed": True, "audited": True})
    r = replay(_write(tmp_path, "next.policy", AUDITED), ledger_url)
    assert h["after"] not in _ids(r)
    assert [(x["decision_id"], x["until"]) for x in r.candidate_stops] == [(h["big"], h["resume"])]
    assert r.candidate_own_stops_kept == () and r.candidate_refused_resumes == () and r.unjudged_resumes == ()
    assert "own stop kept" not in r.text() and changed_executions(r) == []
    _adds_up(r)


def test_a_refused_resume_the_candidate_allows_for_its_own_stop_lifts_it(rt, ledger_url, tmp_path):  # noqa: F811
    """The record refused the resume (`bad_promise`: not fixed); only the candidate's own
    `broken_promise` stands there in the replay, and its criteria hold over that evidence.
    Defect: a resume where only a candidate stop stood was not asked: it stayed refused, and the
    send the record held back after it replayed as stopped."""
    rt.gate(send(promise=True), now=at(20))
    refused = rt.resume(WF, evidence={"fixed": False, "reviewed": True}, principal="ops", now=at(30))
    assert refused.recorded and not refused.allowed
    held = rt.gate(send(60.0), now=at(40)).decision_id
    resume = rt.resume(WF, evidence={"fixed": True}, principal="lead", now=at(60)).resume_id
    r = replay(_write(tmp_path, "next.policy", RENAMED_LOOSE), ledger_url)
    assert _ids(r)[held] == ("stop", "stopped:bad_promise", "allow", "small")
    assert [(x["resume"], x["stopped_by"], x["recorded_unmet"], x["until"], x["until_kind"])
            for x in r.candidate_allowed_resumes] == [(refused.resume_id, ["broken_promise"], ["fixed"], resume,
                                                       "resume")]
    assert r.candidate_own_stops_kept == ()
    _adds_up(r)


# ------------------------------------------------------------------ the candidate cannot be asked: its stop stands
def test_a_resume_that_cannot_be_asked_does_not_lift_the_candidates_own_stop(rt, ledger_url, tmp_path):  # noqa: F811
    """An operator's resume appended by hand (no evidence, no criterion's result) would stand for a
    stop of the record (the record's answer, `unjudged_resumes`), but the candidate's own stop is not
    its to lift: it stands, and says why. Defect: the send after it replayed as `allow`. (The record's
    stop here came while the candidate's own held the workflow: it fires nothing there and is lifted,
    session 26, so no stop of the record stands at the resume for it to stand for.)"""
    big = rt.gate(send(500.0), now=at(10)).decision_id
    rt.gate(send(promise=True), now=at(20))
    stop = [e.id for e in rt.ledger.entries(kind="stop")][0]
    body = tmp_path / "resume.json"
    body.write_text(json.dumps({"evidence_digest": "sha256:00", "criteria": [], "allowed": True}))
    app = _cli("ledger", "append", "resume", body, "--workflow", WF, "--link", stop, "--ledger", ledger_url)
    assert app.exit_code == 0, app.output
    manual = json.loads(app.output)["id"]
    after = rt.gate(send(60.0), now=at(40))
    assert after.effect == "allow"  # the runtime takes it as a resume
    promise2 = rt.gate(send(promise=True), now=at(50)).decision_id
    resume2 = rt.resume(WF, evidence={"fixed": True, "audited": True}, principal="lead", now=at(60)).resume_id
    after2 = rt.gate(send(60.0), now=at(70)).decision_id
    r = replay(_write(tmp_path, "next.policy", AUDITED), ledger_url)
    # stopped by the candidate's own trigger alone: the record's stops, fired while it held the workflow, lifted
    assert _ids(r)[after.decision_id] == ("allow", "small", "stop", "stopped:big_send")
    assert _ids(r)[promise2] == ("stop", "stop:bad_promise", "stop", "stopped:big_send")
    assert [(x["until"], x["stays_stopped_by"]) for x in r.candidate_lifts] == [
        (manual, "big_send"), (resume2, "big_send")]
    assert after2 not in _ids(r)  # the second resume meets every criterion that stands there
    assert r.unjudged_resumes == ()
    [k] = r.candidate_own_stops_kept
    assert (k["resume"], k["triggers"], k["decisions"], k["unmet"], k["errors"], k["stopped_by"], k["until"]) == (
        manual, ["big_send"], [big], [], None, ["big_send"], resume2)
    assert "appended by hand" in k["reason"]
    assert [(x["decision_id"], x["until"]) for x in r.candidate_stops] == [(big, resume2)]
    assert r.candidate_refused_resumes == ()
    assert (f"(resume {manual}) does not lift the candidate's own stop by `big_send` (decision {big}): it cannot "
            f"be asked: it records no evidence") in r.text()
    assert f"it stays stopped by `big_send` until the resume {resume2}" in r.text()
    _adds_up(r)
    assert replay(_write(tmp_path, "next.policy", AUDITED), ledger_url, workers=2).to_json() | {"workers": 1} \
        == r.to_json()


# ------------------------------------------------------------------ the record's stops: as before
def test_the_records_stops_are_asked_as_before_when_no_stop_of_the_candidate_stands(rt, ledger_url, tmp_path):  # noqa: F811
    """No candidate stop: the same answers as before (the record's stops alone), nothing kept."""
    rt.gate(send(promise=True), now=at(20))
    resume = rt.resume(WF, evidence={"fixed": True}, principal="ops", now=at(30)).resume_id
    after = rt.gate(send(60.0), now=at(40)).decision_id
    strict = POLICY.replace(FIXED, FIXED + '      reviewed: `evidence.reviewed == true` "reviewed"\n', 1)
    r = replay(_write(tmp_path, "next.policy", strict), ledger_url)
    assert _ids(r) == {after: ("allow", "small", "stop", "stopped:bad_promise")}
    assert [(x["resume"], x["stopped_by"]) for x in r.candidate_refused_resumes] == [(resume, ["bad_promise"])]
    assert r.candidate_own_stops_kept == ()
    assert replay(_write(tmp_path, "same.policy", POLICY), ledger_url).to_json()["candidate_own_stops_kept"] == []
