"""Replay asks the candidate the record's resumes again (session 24, replayres). At each
allowed resume of the record where a stop of the record still stands in the replay, the
candidate's re-enable criteria are evaluated over the evidence recorded with that resume, at
its recorded time. A resume the candidate refuses is taken out of the replay: the workflow
stays stopped (until the next recorded resume it allows, or the end), the decisions after it
replay as `stopped`, and the report lists it (`candidate_refused_resumes`). Before, every
recorded resume lifted the stop whatever the candidate would have said, so a candidate with
stricter re-enable criteria under-reported its effect: the decisions after the resume
replayed as a running workflow. A resume that cannot be asked again (appended by hand, with
no criterion's result) stands and says why (`unjudged_resumes`). SQLite and PostgreSQL.

Refresh the snapshot with `python -m pytest tests/test_s24_replayres_resumes.py --snapshot-update`
and review the diff."""

from __future__ import annotations

import json
import re

from click.testing import CliRunner
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import POLICY, RECEIPT, WF, at, policy_path, rt, send  # noqa: F401  (fixtures)

from policy_engine import Runtime
from policy_engine.cli import main
from policy_engine.replay import changed_executions, replay

FIXED = '      fixed: `evidence.fixed == true` "the fix is deployed"\n'
assert POLICY.count(FIXED) == 1
#: the candidate: the fix must also be reviewed before the workflow acts again
STRICT = POLICY.replace(FIXED, FIXED + '      reviewed: `evidence.reviewed == true` "the fix is reviewed"\n')
#: a candidate whose criteria differ but hold over the same evidence
LOOSE = POLICY.replace(FIXED, '      fixed: `evidence.fixed == true || evidence.reviewed == true` "fixed"\n')
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
      CRITERION
    }
  }

  rollback customer_request {'''


def _with_big(text: str, limit: str, criterion: str = "") -> str:
    return text.replace("\n  rollback customer_request {",
                        BIG_SEND.replace("LIMIT", limit).replace("CRITERION", criterion), 1)


def _write(tmp_path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _ids(r):
    return {c.decision_id: (c.old_effect, c.old_rule, c.new_effect, c.new_rule) for c in r.changed}


def _history(rt):  # noqa: F811
    """A promise (the record's stop by `bad_promise`), a send held back, the operators' resume
    (fixed, not reviewed), two sends that ran (one executed), a second promise that stops it
    again, the operators' second resume (fixed and reviewed), a send after it."""
    h = {"promise": rt.gate(send(promise=True), now=at(20)).decision_id,
         "held": rt.gate(send(60.0), now=at(21)).decision_id}
    first = rt.resume(WF, evidence={"fixed": True, "reviewed": False}, principal="ops", now=at(30))
    assert first.allowed
    h["resume"] = first.resume_id
    ran = rt.gate(send(60.0), now=at(40))
    assert ran.effect == "allow"
    h["ran"], h["executed"] = ran.decision_id, rt.executed(ran.decision_id, receipt=RECEIPT, now=at(41)).execution_id
    h["ran2"] = rt.gate(send(60.0), now=at(45)).decision_id
    h["promise2"] = rt.gate(send(promise=True), now=at(50)).decision_id
    second = rt.resume(WF, evidence={"fixed": True, "reviewed": True}, principal="lead", now=at(60))
    assert second.allowed
    h["resume2"] = second.resume_id
    h["after"] = rt.gate(send(60.0), now=at(70)).decision_id
    return h


def test_a_stricter_criterion_refuses_the_recorded_resume_and_the_workflow_stays_stopped(
        rt, ledger_url, tmp_path):  # noqa: F811
    """Defect: the resume the candidate would have refused lifted the stop in the replay, so the
    two sends after it replayed as `allow` (unchanged) and nothing was reported."""
    h = _history(rt)
    cand = _write(tmp_path, "next.policy", STRICT)
    r = replay(cand, ledger_url)
    assert _ids(r) == {h["ran"]: ("allow", "small", "stop", "stopped:bad_promise"),
                       h["ran2"]: ("allow", "small", "stop", "stopped:bad_promise"),
                       # already stopped in the replay: the second promise fires nothing new
                       h["promise2"]: ("stop", "stop:bad_promise", "stop", "stopped:bad_promise")}
    assert r.candidate_refused_resumes == (
        {"workflow": WF, "resume": h["resume"], "seq": r.candidate_refused_resumes[0]["seq"],
         "at": "2026-11-26T12:00:30.000000Z", "principal": "ops", "unmet": ["reviewed"], "errors": None,
         "stopped_by": ["bad_promise"], "until": h["resume2"]},)
    assert r.unjudged_resumes == () and r.candidate_stops == ()
    # the second promise fires nothing in a stopped workflow: its stop of the record is lifted (session 26;
    # the first stands on), so the second resume is asked the first one's criteria
    assert [(x["decision_id"], x["until"], x["until_kind"], x["stays_stopped_by"]) for x in r.candidate_lifts] == [
        (h["promise2"], h["resume2"], "resume", "bad_promise")]
    assert h["after"] not in _ids(r)  # the second resume meets the candidate's criteria: it runs again
    assert r.replayed == 6 == r.unchanged + len(r.changed) + len(r.unreplayable)
    assert changed_executions(r) == [h["executed"]]  # stricter: the send that ran is to be reversed
    assert r.counts == {"allow -> stop": 2, "stop -> stop": 1}
    # in worker processes: the same (the resumes are asked once, before the decisions are shared out)
    assert replay(cand, ledger_url, workers=2).to_json() | {"workers": 1} == r.to_json()
    # --recorded-state: every resume of the record stands, as before
    kept = replay(cand, ledger_url, carry_stops=False)
    assert kept.changed == () and kept.candidate_refused_resumes == ()


def test_a_candidate_that_allows_the_resume_changes_nothing(rt, ledger_url, tmp_path):  # noqa: F811
    _history(rt)
    for text in (POLICY, LOOSE):
        r = replay(_write(tmp_path, "next.policy", text), ledger_url)
        assert r.changed == () and r.unreplayable == ()
        assert r.candidate_refused_resumes == () and r.unjudged_resumes == ()
        assert r.replayed == 6 == r.unchanged
        assert "resume" not in r.text()


def test_the_command_lists_the_refused_resume(rt, ledger_url, tmp_path, snapshot):  # noqa: F811
    h = _history(rt)
    cand = _write(tmp_path, "next.policy", STRICT)
    js = _cli("replay", cand, "--ledger", ledger_url, "--format", "json")
    assert js.exit_code == 0, js.output
    doc = json.loads(js.output)
    assert [(x["resume"], x["unmet"], x["until"]) for x in doc["candidate_refused_resumes"]] == [
        (h["resume"], ["reviewed"], h["resume2"])]
    assert doc["unjudged_resumes"] == []
    assert doc["replayed"] == doc["unchanged"] + doc["changed_count"] + len(doc["unreplayable"]) == 6
    out = _cli("replay", cand, "--ledger", ledger_url)
    assert out.exit_code == 0, out.output
    assert (f"refused resume: {WF} resumed at 2026-11-26T12:00:30.000000Z by ops (resume {h['resume']}), which "
            f"the candidate refuses (unmet: `reviewed`): it stays stopped by `bad_promise` until the resume "
            f"{h['resume2']}: the decisions in between are replayed as stopped") in out.output
    names = {h[k]: f"<{k}>" for k in ("promise", "held", "resume", "ran", "executed", "ran2", "promise2",
                                       "resume2", "after")}
    text = re.sub("|".join(map(re.escape, names)), lambda m: names[m.group(0)], out.output)
    assert text == snapshot(name="refused_resume_text")


def test_a_refused_resume_with_no_later_one_keeps_it_stopped_to_the_end(rt, ledger_url, tmp_path):  # noqa: F811
    promise = rt.gate(send(promise=True), now=at(20)).decision_id
    resume = rt.resume(WF, evidence={"fixed": True}, principal="ops", now=at(30)).resume_id
    later = rt.gate(send(60.0), now=at(40)).decision_id
    r = replay(_write(tmp_path, "next.policy", STRICT), ledger_url)
    assert _ids(r) == {later: ("allow", "small", "stop", "stopped:bad_promise")} and promise not in _ids(r)
    # the evidence has no `reviewed`: the criterion errs, which never widens permission
    [x] = r.candidate_refused_resumes
    assert (x["resume"], x["unmet"], x["until"]) == (resume, ["reviewed"], None) and "reviewed" in x["errors"]
    assert "it stays stopped by `bad_promise` to the end of the replay" in r.text()


def test_a_resume_appended_by_hand_stands_and_says_why(rt, ledger_url, tmp_path):  # noqa: F811
    """An operator's resume (`stopline ledger append`: no criterion's result, no evidence) is
    not a policy's answer the candidate could give again: it stands, listed with the reason."""
    rt.gate(send(promise=True), now=at(20))
    stop = [e.id for e in rt.ledger.entries(kind="stop")][0]
    body = tmp_path / "resume.json"
    body.write_text(json.dumps({"evidence_digest": "sha256:00", "criteria": [], "allowed": True}))
    app = _cli("ledger", "append", "resume", body, "--workflow", WF, "--link", stop, "--ledger", ledger_url)
    assert app.exit_code == 0, app.output
    manual = json.loads(app.output)["id"]
    later = rt.gate(send(60.0), now=at(40))
    assert later.effect == "allow"  # the runtime takes it as a resume
    r = replay(_write(tmp_path, "next.policy", STRICT), ledger_url)
    assert r.changed == () and r.candidate_refused_resumes == ()
    assert [(u["resume"], u["workflow"]) for u in r.unjudged_resumes] == [(manual, WF)]
    assert "appended by hand" in r.unjudged_resumes[0]["reason"]
    assert f"resume stands: {WF} resumed at " in r.text() and f"(resume {manual}) is not asked again" in r.text()


def test_a_lifted_stop_leaves_no_resume_to_refuse(ledger_url, tmp_path):  # noqa: F811
    """The candidate fires `big_send` from a higher threshold (the record's stop is lifted) and
    asks more to resume: nothing stands at the resume in the replay, so nothing is refused."""
    old = _write(tmp_path, "old.policy", _with_big(POLICY, "400.0"))
    strict = 'audited: `evidence.audited == true` "audited"'
    with Runtime.open(old, ledger=ledger_url) as rt:  # noqa: F811
        big = rt.gate(send(500.0), now=at(0)).decision_id
        resume = rt.resume(WF, evidence={"fixed": True}, principal="ops", now=at(10)).resume_id
        after = rt.gate(send(60.0), now=at(20)).decision_id
    lifted = replay(_write(tmp_path, "next.policy", _with_big(POLICY, "800.0", strict)), ledger_url)
    assert [(x["decision_id"], x["until"]) for x in lifted.candidate_lifts] == [(big, resume)]
    assert lifted.candidate_refused_resumes == () and after not in _ids(lifted)
    # the same trigger at the same threshold with the stricter criterion: the resume is refused
    held = replay(_write(tmp_path, "next.policy", _with_big(POLICY, "400.0", strict)), ledger_url)
    assert [x["resume"] for x in held.candidate_refused_resumes] == [resume]
    assert _ids(held) == {after: ("allow", "small", "stop", "stopped:big_send")}


def test_a_candidate_stop_is_lifted_only_by_a_resume_that_meets_its_criteria(rt, ledger_url, tmp_path):  # noqa: F811
    """The candidate's own stop (a trigger the record did not fire) is asked at the record's resume
    with the record's stops (session 25; before, a resume that stood lifted it unasked): the
    evidence has no `audited`, so the candidate refuses the resume and the workflow stays stopped
    (`candidate_own_stops_kept`); the record's stop's criteria are met, so no refused resume is listed."""
    big = rt.gate(send(500.0), now=at(10)).decision_id
    rt.gate(send(promise=True), now=at(20))
    resume = rt.resume(WF, evidence={"fixed": True}, principal="ops", now=at(30)).resume_id
    after = rt.gate(send(60.0), now=at(40)).decision_id
    cand = _with_big(POLICY, "400.0", 'audited: `evidence.audited == true` "audited"')
    r = replay(_write(tmp_path, "next.policy", cand), ledger_url)
    assert [(x["decision_id"], x["until"]) for x in r.candidate_stops] == [(big, None)]
    assert [(x["resume"], x["triggers"], x["unmet"]) for x in r.candidate_own_stops_kept] == [
        (resume, ["big_send"], ["audited"])]
    # (the record's promise came while the candidate's `big_send` held the workflow: it fires nothing
    # there, its stop is lifted, session 26, and the send after the resume is held back by `big_send`)
    assert r.candidate_refused_resumes == () and _ids(r)[after] == ("allow", "small", "stop", "stopped:big_send")
    assert [x["stays_stopped_by"] for x in r.candidate_lifts] == ["big_send"]


def test_a_resume_before_since_is_not_asked(rt, ledger_url, tmp_path):  # noqa: F811
    h = _history(rt)
    cand = _write(tmp_path, "next.policy", STRICT)
    r = replay(cand, ledger_url, since="2026-11-26T12:00:35Z")
    assert r.candidate_refused_resumes == () and r.changed == ()
    r = replay(cand, ledger_url, since="2026-11-26T12:00:25Z", workflow=WF)
    assert [x["resume"] for x in r.candidate_refused_resumes] == [h["resume"]]
    assert replay(cand, ledger_url, workflow="other").candidate_refused_resumes == ()


def test_a_resume_whose_evidence_is_not_its_digest_stands_and_one_whose_trigger_is_gone_is_refused(
        rt, ledger_url, tmp_path):  # noqa: F811
    """Evidence that is not what the digest names is not the evidence presented: the resume
    stands, with the reason. A candidate that no longer declares the trigger of a stop that stands
    (fired before `--since`, so not lifted) has no criteria that could allow it: it refuses the
    resume, as `rt.resume` under it would (session 26: before, the resume stood, the record's
    answer, and the replay showed the candidate letting the workflow run)."""
    rt.gate(send(promise=True), now=at(20))
    stop = [e.id for e in rt.ledger.entries(kind="stop")][0]
    body = {"evidence": {"fixed": True}, "evidence_digest": "sha256:00", "allowed": True,
            "criteria": [{"name": "fixed", "met": True}], "resumed_at": "2026-11-26T12:00:30Z"}
    forged = rt.ledger.append("resume", body, workflow=WF, links=[stop]).id
    rt.gate(send(60.0), now=at(40))
    r = replay(_write(tmp_path, "next.policy", STRICT), ledger_url)
    assert r.changed == () and r.candidate_refused_resumes == ()
    assert [(u["resume"], u["reason"]) for u in r.unjudged_resumes] == [
        (forged, "its evidence is not as presented: the digest differs")]
    rt.gate(send(promise=True), now=at(50))
    resume = rt.resume(WF, evidence={"fixed": True}, principal="ops", now=at(60)).resume_id
    after = rt.gate(send(60.0), now=at(70)).decision_id
    promise_gone = POLICY[POLICY.index("  stop bad_promise {"):POLICY.index("  rollback customer_request {")]
    r = replay(_write(tmp_path, "next.policy", POLICY.replace(promise_gone, "", 1)), ledger_url,
               since="2026-11-26T12:00:55Z")
    assert [(c.decision_id, c.transition, c.new_rule) for c in r.changed] == [
        (after, "allow -> stop", "stopped:bad_promise")]
    assert resume not in [x["resume"] for x in r.unjudged_resumes]  # (the forged one is there: appended now)
    [x] = r.candidate_refused_resumes
    assert (x["resume"], x["unmet"], x["stopped_by"], x["until"]) == (resume, [], ["bad_promise"], None)
    assert x["errors"] == "workflow `replies` declares no stop trigger `\"bad_promise\"` (declared: none)"
