"""Replay and the record's resumes, continued (session 24, replay2). SQLite and PostgreSQL.

- A resume records where its evidence's integral floats are (`evidence_doubles`, only when there
  is one: the body of any other resume, and so its hash, is as before), and a replay reads them
  back as floats. Before, `score: 1.0` read back as `1` (canonical JSON writes it so), so a
  criterion testing `type(evidence.score) == double` refused in the replay the resume the
  runtime had allowed, under the very policy that allowed it.
- A resume the record *refused* that the candidate allows lifts the stop in the replay (the
  converse of `candidate_refused_resumes`): the decisions the record held back until its next
  allowed resume replay as if the workflow ran, and the report lists it
  (`candidate_allowed_resumes`), as it lists the stops it lifts (`candidate_lifts`). Looser
  verdicts: `--as-rollback` plans nothing for them. Before, a refused resume was not read at
  all: the candidate's looser re-enable criteria went unreported.
"""

from __future__ import annotations

import json

from click.testing import CliRunner
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import POLICY, RECEIPT, WF, at, policy_path, rt, send  # noqa: F401  (fixtures)

from policy_engine import Runtime
from policy_engine.cli import main
from policy_engine.replay import changed_executions, replay

FIXED = '      fixed: `evidence.fixed == true` "the fix is deployed"\n'
assert POLICY.count(FIXED) == 1
#: a criterion only a double meets
DOUBLE = POLICY.replace(FIXED, FIXED + '      scored: `type(evidence.score) == double` "scored as a double"\n')
#: the candidate: a reviewed fix is enough
LOOSE = POLICY.replace(FIXED, '      fixed: `evidence.fixed == true || evidence.reviewed == true` "fixed"\n')


def _write(tmp_path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def _ids(r):
    return {c.decision_id: (c.old_effect, c.old_rule, c.new_effect, c.new_rule) for c in r.changed}


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


# ------------------------------------------------------------------ the evidence's integral floats
def test_an_integral_float_of_the_evidence_replays_as_a_double(ledger_url, tmp_path):  # noqa: F811
    """Defect: the resume recorded no `evidence_doubles`; `score: 1.0` read back as `1`, the
    criterion failed over it, and the replay under the same policy refused the resume: the send
    after it replayed as `allow -> stop (stopped:bad_promise)`."""
    pol = _write(tmp_path, "p.policy", DOUBLE)
    with Runtime.open(pol, ledger=ledger_url) as rt:  # noqa: F811
        rt.gate(send(promise=True), now=at(10))
        assert not rt.resume(WF, evidence={"fixed": True, "score": 1}, principal="ops", now=at(15)).allowed
        ok = rt.resume(WF, evidence={"fixed": True, "score": 1.0, "parts": [2.0, 2.5]}, principal="ops", now=at(20))
        assert ok.allowed
        after = rt.gate(send(60.0), now=at(30)).decision_id
        bodies = {e.id: e.body for e in rt.ledger.entries(kind="resume")}
    assert bodies[ok.resume_id]["evidence_doubles"] == [["parts", 0], ["score"]]
    assert bodies[ok.resume_id]["evidence"] == {"fixed": True, "score": 1, "parts": [2, 2.5]}  # (as JSON reads it)
    assert [b for b in bodies.values() if "evidence_doubles" not in b][0]["evidence"]["score"] == 1
    r = replay(pol, ledger_url)
    assert r.changed == () and r.candidate_refused_resumes == () and r.unjudged_resumes == ()
    assert r.candidate_allowed_resumes == ()  # the int the record refused is still refused
    assert r.replayed == r.unchanged == 2 and after


def test_a_resume_without_floats_records_the_body_it_always_did(rt, ledger_url):  # noqa: F811
    """No `evidence_doubles` key unless there is an integral float: the bodies (and hashes) of
    the resumes recorded before are what a resume records now."""
    rt.gate(send(promise=True), now=at(10))
    rt.resume(WF, evidence={"fixed": True, "note": "deployed", "n": 3, "ratio": 0.5}, principal="ops", now=at(20))
    [body] = [e.body for e in rt.ledger.entries(kind="resume")]
    assert set(body) == {"evidence_digest", "evidence", "criteria", "allowed", "unmet", "trigger", "principal",
                         "policy_hash", "resumed_at", "errors"}


def test_a_malformed_evidence_doubles_leaves_the_resume_unasked(rt, ledger_url, tmp_path):  # noqa: F811
    """Another writer's `evidence_doubles` that leads nowhere: the resume stands and says why
    (never a crash, never the evidence read as something it was not)."""
    from policy_engine.runtime.results import _digest

    rt.gate(send(promise=True), now=at(10))
    stop = [e.id for e in rt.ledger.entries(kind="stop")][0]
    ev = {"fixed": True}
    body = {"evidence": ev, "evidence_digest": _digest(ev), "allowed": True, "evidence_doubles": [["nope"]],
            "criteria": [{"name": "fixed", "met": True}], "resumed_at": "2026-11-26T12:00:30.000000Z"}
    bad = rt.ledger.append("resume", body, workflow=WF, links=[stop]).id
    rt.gate(send(60.0), now=at(40))
    r = replay(_write(tmp_path, "next.policy", DOUBLE), ledger_url)
    assert r.changed == () and r.candidate_refused_resumes == ()
    assert [(u["resume"], u["reason"]) for u in r.unjudged_resumes] == [
        (bad, "it cannot be read: `evidence_doubles` path ['nope'] does not lead to a value of the evidence")]


# ------------------------------------------------------------------ a refused resume the candidate allows
def _history(rt):  # noqa: F811
    """A promise (the record's stop by `bad_promise`), a send held back, the operators' resume with a
    reviewed fix not yet deployed (refused: `fixed`), a send held back after it, the deployed fix
    (allowed), a send that ran and was executed."""
    h = {"promise": rt.gate(send(promise=True), now=at(20)).decision_id,
         "held": rt.gate(send(60.0), now=at(21)).decision_id}
    refused = rt.resume(WF, evidence={"fixed": False, "reviewed": True}, principal="ops", now=at(30))
    assert refused.recorded and not refused.allowed
    h["refused"] = refused.resume_id
    h["held2"] = rt.gate(send(60.0), now=at(40)).decision_id
    allowed = rt.resume(WF, evidence={"fixed": True}, principal="lead", now=at(60))
    assert allowed.allowed
    h["resume"] = allowed.resume_id
    ran = rt.gate(send(60.0), now=at(70))
    assert ran.effect == "allow"
    h["ran"], h["executed"] = ran.decision_id, rt.executed(ran.decision_id, receipt=RECEIPT, now=at(71)).execution_id
    return h


def test_a_refused_resume_the_candidate_allows_lifts_the_stop(rt, ledger_url, tmp_path):  # noqa: F811
    """Defect: the refused resume was not read; the send the record held back after it replayed
    as stopped under a candidate that would have let the workflow run again there."""
    h = _history(rt)
    cand = _write(tmp_path, "next.policy", LOOSE)
    r = replay(cand, ledger_url)
    assert _ids(r) == {h["held2"]: ("stop", "stopped:bad_promise", "allow", "small")}  # `held`: before it
    assert r.candidate_allowed_resumes == (
        {"workflow": WF, "resume": h["refused"], "seq": r.candidate_allowed_resumes[0]["seq"],
         "at": "2026-11-26T12:00:30.000000Z", "principal": "ops", "recorded_unmet": ["fixed"],
         "stopped_by": ["bad_promise"], "until": h["resume"], "until_kind": "resume"},)
    assert r.candidate_refused_resumes == () and r.unjudged_resumes == () and r.candidate_lifts == ()
    assert r.replayed == 4 == r.unchanged + len(r.changed)
    assert changed_executions(r) == [] and r.changed[0].tightened is False  # looser: nothing to reverse
    assert "allowed resume: replies resume at 2026-11-26T12:00:30.000000Z by ops (resume " in r.text()
    assert (f"refused in the record (unmet: `fixed`), which the candidate allows: the stop by `bad_promise` is "
            f"lifted there, until the resume {h['resume']}: the decisions in between are replayed as if it ran"
            ) in r.text()
    assert replay(cand, ledger_url, workers=2).to_json() | {"workers": 1} == r.to_json()
    # the policy that refused it, and --recorded-state: the record's answer stands
    same = replay(_write(tmp_path, "same.policy", POLICY), ledger_url)
    assert same.changed == () and same.candidate_allowed_resumes == ()
    kept = replay(cand, ledger_url, carry_stops=False)
    assert kept.changed == () and kept.candidate_allowed_resumes == ()
    js = _cli("replay", cand, "--ledger", ledger_url, "--format", "json")
    assert js.exit_code == 0, js.output
    assert [(x["resume"], x["until"]) for x in json.loads(js.output)["candidate_allowed_resumes"]] == [
        (h["refused"], h["resume"])]


def test_a_promise_after_the_allowed_resume_stops_it_again(rt, ledger_url, tmp_path):  # noqa: F811
    """The record was stopped at the second promise (it fired nothing); in the replay the workflow
    runs again from the resume the candidate allows, so the promise fires the candidate's stop,
    which the record's next allowed resume lifts."""
    rt.gate(send(promise=True), now=at(20))
    refused = rt.resume(WF, evidence={"fixed": False, "reviewed": True}, principal="ops", now=at(30)).resume_id
    between = rt.gate(send(60.0), now=at(40)).decision_id
    promise2 = rt.gate(send(promise=True), now=at(45)).decision_id
    held = rt.gate(send(60.0), now=at(50)).decision_id
    resume = rt.resume(WF, evidence={"fixed": True}, principal="lead", now=at(60)).resume_id
    r = replay(_write(tmp_path, "next.policy", LOOSE), ledger_url)
    assert _ids(r) == {between: ("stop", "stopped:bad_promise", "allow", "small"),
                       promise2: ("stop", "stopped:bad_promise", "stop", "stop:bad_promise")}
    assert held not in _ids(r)  # stopped again, by the candidate's stop
    assert [(x["resume"], x["until"], x["until_kind"]) for x in r.candidate_allowed_resumes] == [
        (refused, promise2, "candidate stop")]
    assert [(x["decision_id"], x["until"]) for x in r.candidate_stops] == [(promise2, resume)]


def test_only_the_first_refused_resume_the_candidate_allows_is_listed(rt, ledger_url, tmp_path):  # noqa: F811
    """After it, no stop of the record stands: a later refused resume has nothing to lift, and one
    the candidate refuses as well leaves the workflow stopped."""
    rt.gate(send(promise=True), now=at(20))
    no = rt.resume(WF, evidence={"fixed": False, "reviewed": False}, principal="ops", now=at(25)).resume_id
    yes = rt.resume(WF, evidence={"fixed": False, "reviewed": True}, principal="ops", now=at(30)).resume_id
    rt.resume(WF, evidence={"fixed": False, "reviewed": True}, principal="ops", now=at(35))
    r = replay(_write(tmp_path, "next.policy", LOOSE), ledger_url)
    assert [x["resume"] for x in r.candidate_allowed_resumes] == [yes] and no != yes
    assert [(x["until"], x["until_kind"]) for x in r.candidate_allowed_resumes] == [(None, None)]
    assert "is lifted there, to the end of the replay" in r.text()


def test_a_refused_resume_at_a_lifted_stop_is_not_asked(ledger_url, tmp_path):  # noqa: F811
    """The candidate does not fire the stop (no `bad_promise` trigger reading `promise`): nothing
    stands at the refused resume in the replay, so it is not listed."""
    pol = _write(tmp_path, "p.policy", POLICY)
    with Runtime.open(pol, ledger=ledger_url) as rt:  # noqa: F811
        promise = rt.gate(send(promise=True), now=at(20)).decision_id
        rt.resume(WF, evidence={"fixed": False, "reviewed": True}, principal="ops", now=at(30))
        held = rt.gate(send(60.0), now=at(40)).decision_id
    cand = LOOSE.replace('`action.type == "send" && action.promise`',
                         '`action.type == "send" && action.amount > 5000.0`')
    assert cand != LOOSE
    r = replay(_write(tmp_path, "next.policy", cand), ledger_url)
    assert [x["decision_id"] for x in r.candidate_lifts] == [promise]
    assert r.candidate_allowed_resumes == () and _ids(r)[held] == ("stop", "stopped:bad_promise", "allow", "small")
