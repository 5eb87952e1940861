"""Audit of incidents, replay and export-case (session 19), on SQLite and PostgreSQL: each
test is a defect found by using them as an incident commander would (a second incident
after the first's plans lapsed, a policy reload between two incidents, a deep cascade, a
dry run from the command line) and by feeding them entries another recorder wrote."""

from __future__ import annotations

import json

import yaml
from click.testing import CliRunner
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import POLICY, RECEIPT, WF, at, policy_path, rt, send, write_policy  # noqa: F401  (fixtures)

from policy_engine import Runtime
from policy_engine.cli import main
from policy_engine.replay import replay

SEND = 'original.type == "send"'
STRICTER = POLICY.replace("action.amount > 1000.0", "action.amount > 400.0")
#: `log` causes `log`: chains deeper than the scenario's `cascade depth 2`
DEEP = POLICY.replace('reversible full via "crm.amend"\n    receipt [note]',
                      'reversible full via "crm.amend"\n    side_effects [log]\n    receipt [note]', 1)


def _sends(rt, amounts=(500.0, 450.0, 60.0)):
    """Executed sends (one every 10 s from at(0)); returns amount -> (decision, execution)."""
    out = {}
    for i, amount in enumerate(amounts):
        g = rt.gate(send(amount, id=f"s{i}"), now=at(10 * i))
        if g.effect == "require_approval":
            rt.approve(g.decision_id, principal="sam", roles=["reviewer"], now=at(10 * i + 1))
        x = rt.executed(g.decision_id, receipt=RECEIPT, now=at(10 * i + 2))
        out[amount] = (g.decision_id, x.execution_id)
    return out


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _open_rollbacks(rt, execution_id, now):
    """The rollbacks of ``execution_id`` that stand at ``now`` (not denied, cancelled or expired)."""
    return [e.id for e in rt.ledger.entries(kind="rollback")
            if e.body["original"] == execution_id
            and rt.authorization(e.id, now=now).status not in ("denied", "cancelled", "expired")]


# ------------------------------------------------------------------------------ a second incident
def test_a_second_incident_plans_again_what_the_first_left_to_expire(rt):
    """The first batch's plans were never approved and the sends' 60 s windows closed: every
    view says they expired (batch_counts, authorization). A second incident used to list the
    sends as `existing` ("already being rolled back") and plan nothing; it plans them again,
    as request_rollback does, recording the expiry first, and its dry run says the same."""
    h = _sends(rt)
    first = rt.request_bulk_rollback(SEND, "customer_request", "ops", "first", now=at(30))
    assert len(first.rollbacks) == 3
    late = at(3000)
    assert rt.batch_counts(first.batch_id, now=late)["by_status"] == {"expired": 3}
    dry = rt.request_bulk_rollback(SEND, "customer_request", "ops", "second", now=late, dry_run=True)
    assert dry.existing == () and len(dry.originals) == 3, dry
    assert all(rt.authorization(r, now=late).status == "expired" for r in first.rollbacks)
    second = rt.request_bulk_rollback(SEND, "customer_request", "ops", "second", now=late)
    assert second.existing == () and set(second.originals) == {x for _, x in h.values()}
    assert second.batch_hash == dry.batch_hash and second.records == dry.records == 3
    for _, x in h.values():  # one rollback stands per send: the second batch's
        assert _open_rollbacks(rt, x, late) == [r for r, o in zip(second.rollbacks, second.originals) if o == x]
    again = rt.request_bulk_rollback(SEND, "customer_request", "ops", "third", now=late)
    assert again.batch_id is None and {e["execution"] for e in again.existing} == set(second.originals)


def test_a_second_incident_after_a_policy_reload_supersedes_the_plans_no_approval_can_count_for(
        ledger_url, tmp_path):  # noqa: F811
    """The first batch was classified under the policy before a reload: approve_batch skips
    its plans as stale. A second incident used to call them `existing`, so nothing could
    be approved at all; it withdraws them (as request_rollback supersedes one) and plans anew."""
    with Runtime.open(str(write_policy(tmp_path)), ledger=ledger_url) as rt:
        h = _sends(rt)
        first = rt.request_bulk_rollback(SEND, "customer_request", "ops", "first", now=at(30))
    (tmp_path / "replies.policy").write_text(POLICY.replace("> 1000.0", "> 5000.0"), encoding="utf-8")
    with Runtime.open(str(tmp_path / "replies.policy"), ledger=ledger_url) as rt:
        skipped = rt.approve_batch(first.batch_id, principal="cs", roles=["customer_service"],
                                   batch_hash=first.batch_hash, now=at(31))["skipped"]
        assert len(skipped) == 3 and all(s.get("stale") for s in skipped)
        dry = rt.request_bulk_rollback(SEND, "customer_request", "ops", "second", now=at(32), dry_run=True)
        assert dry.existing == () and len(dry.originals) == 3
        second = rt.request_bulk_rollback(SEND, "customer_request", "ops", "second", now=at(32))
        assert second.existing == () and second.batch_hash == dry.batch_hash
        assert [rt.authorization(r, now=at(33)).status for r in first.rollbacks] == ["cancelled"] * 3
        ok = rt.approve_batch(second.batch_id, principal="cs", roles=["customer_service"],
                              batch_hash=second.batch_hash, now=at(33))
        assert ok["statuses"] == {"approved": 3} and ok["skipped"] == []
        assert {x for _, x in h.values()} == set(second.originals)


def test_an_original_taken_while_the_batch_was_planned_is_listed_not_dropped(rt, ledger_url, policy_path,  # noqa: F811
                                                                            monkeypatch):
    """Another process requests a rollback of one selected send between the batch's read and
    its recording: that send is not recorded in the batch, and it used to vanish from the
    result (neither planned, existing, covered nor refused) with `records` still counting it."""
    h = _sends(rt)
    taken = h[450.0][1]
    real = rt.transact
    peer_rb = []

    def another_writer_first(build):  # a second runtime on the same ledger records its rollback, then this batch
        with Runtime.open(str(policy_path), ledger=ledger_url) as peer:
            peer_rb.append(peer.request_rollback(taken, scenario="customer_request", requested_by="peer",
                                                 reason="r", now=at(30)).rollback_id)
        monkeypatch.setattr(rt, "transact", real)
        return real(build)

    monkeypatch.setattr(rt, "transact", another_writer_first)
    b = rt.request_bulk_rollback(SEND, "customer_request", "ops", "incident", now=at(30))
    assert taken not in b.originals and len(b.originals) == 2
    assert list(b.existing) == [{"execution": taken, "rollback": peer_rb[0]}]
    assert b.records == 2 == rt.ledger.get(b.batch_id).body["records"]


# ------------------------------------------------------------------------------ cascade depth
def test_a_selected_execution_below_the_scenarios_cascade_depth_is_planned_not_silently_covered(
        ledger_url, tmp_path):  # noqa: F811
    """A send caused a chain of five logs and the select takes all six; the scenario's
    `cascade depth 2` plan of the send holds the first two logs. The other three used to be
    listed as `covered` by the send's plan, which does not hold them: nobody rolled them back."""
    with Runtime.open(str(write_policy(tmp_path, DEEP)), ledger=ledger_url) as rt:
        g = rt.gate(send(50.0, id="root"), now=at(0))
        chain = [rt.executed(g.decision_id, receipt=RECEIPT, now=at(1)).execution_id]
        for i in range(5):
            lg = rt.gate({"workflow": WF, "type": "log"}, now=at(2 + i))
            chain.append(rt.executed(lg.decision_id, receipt={"note": "n"}, caused_by=chain[-1],
                                     now=at(2 + i)).execution_id)
        dry = rt.request_bulk_rollback("true", "customer_request", "ops", "incident", now=at(20), dry_run=True)
        b = rt.request_bulk_rollback("true", "customer_request", "ops", "incident", now=at(20))
        assert b.batch_hash == dry.batch_hash and b.originals == dry.originals == (chain[0], chain[3])
        held = {}
        for r in b.rollbacks:
            body = rt.ledger.get(r).body
            for rec in (body["original"], *body["cascade"]):
                held[rec] = body["original"]
        assert set(held) == set(chain), "every selected execution is in a plan of the batch"
        assert {c["execution"]: c["by"] for c in b.covered} == {x: held[x] for x in chain if held[x] != x}
        assert b.records == 6 and b.selected == 6


# ------------------------------------------------------------------------------ approving a batch
def test_approve_batch_does_not_count_an_approval_for_a_plan_whose_window_closed(rt, ledger_url,  # noqa: F811
                                                                                policy_path):
    """At 70 s the first send's standard 60 s window (to 62 s) has closed: Runtime.approve
    answers `expired` for its plan. approve_batch used to record a counted approval for it
    and report it `pending`; it skips it as expired, as it skips one past pending_until."""
    _sends(rt)
    b = rt.request_bulk_rollback(SEND, "customer_request", "ops", "incident", now=at(30))
    r = rt.approve_batch(b.batch_id, principal="cs", roles=["customer_service"], batch_hash=b.batch_hash,
                         now=at(70))
    assert r["skipped"] == [{"rollback": b.rollbacks[0], "status": "expired"}]
    assert r["counted"] == 2 and r["statuses"] == {"approved": 2}
    assert [rt.authorization(x, now=at(70)).status for x in b.rollbacks] == ["expired", "approved", "approved"]
    approvals = [e for e in rt.ledger.entries(kind="approval") if e.body.get("subject") == b.rollbacks[0]]
    assert approvals == []


def test_batch_status_skips_a_step_another_recorder_wrote_with_a_record_that_is_not_text(rt):  # noqa: F811
    """A step entry whose `record` is an object (appended by another recorder) made
    batch_status (and `stopline rollback --status`) fail with `unhashable type`."""
    _sends(rt)
    b = rt.request_bulk_rollback(SEND, "customer_request", "ops", "incident", now=at(30))
    rt.approve_batch(b.batch_id, principal="cs", roles=["customer_service"], batch_hash=b.batch_hash, now=at(31))
    rt.batch_step(b.batch_id, b.originals[0], "completed", key="k1", now=at(32))
    rt.ledger.append("step", {"record": {"x": 1}, "status": "completed"}, links=[b.rollbacks[0]])
    st = rt.batch_status(b.batch_id, now=at(33))
    assert st["duties"]["done"] == 1 and st["duties"]["total"] == 9


# ------------------------------------------------------------------------------ the command
def test_rollback_cli_dry_run_records_nothing_and_shows_the_digest_it_would_record(rt, ledger_url,  # noqa: F811
                                                                                  policy_path):
    _sends(rt)
    base = ["rollback", "--select", SEND, "--scenario", "customer_request", "--requested-by", "ops",
            "--reason", "incident", "-p", policy_path, "--ledger", ledger_url]
    before = len(rt.ledger.entries())
    dry = _cli(*base, "--dry-run", "--format", "json")
    assert dry.exit_code == 0, dry.output
    d = json.loads(dry.output)
    assert d["batch_id"] is None and len(d["originals"]) == 3 and d["records"] == 3
    text = _cli(*base, "--dry-run")
    assert text.exit_code == 0 and "dry run, nothing recorded: 3 rollback(s) over 3 record(s)" in text.output
    assert d["batch_hash"] in text.output
    assert len(rt.ledger.entries()) == before
    real = _cli(*base, "--format", "json")
    assert real.exit_code == 0 and json.loads(real.output)["batch_hash"] == d["batch_hash"]


def test_rollback_cli_exits_1_when_selected_executions_could_not_be_planned(rt, ledger_url,  # noqa: F811
                                                                          policy_path):
    """A scenario the workflow does not declare: every plan is refused and nothing is
    recorded; the command listed them and exited 0, so a script took the incident for planned."""
    _sends(rt)
    base = ["rollback", "--select", SEND, "--scenario", "nosuch", "--requested-by", "ops", "--reason", "x",
            "-p", policy_path, "--ledger", ledger_url]
    res = _cli(*base)
    assert res.exit_code == 1 and "3 refused" in res.output and "not planned" in res.output, res.output
    js = _cli(*base, "--format", "json")
    assert js.exit_code == 1 and len(json.loads(js.output)["refused"]) == 3
    assert rt.ledger.entries(kind="batch") == []


def test_rollback_refuses_since_later_than_until(rt, ledger_url, policy_path):  # noqa: F811
    _sends(rt)
    res = _cli("rollback", "--select", SEND, "--scenario", "customer_request", "--requested-by", "ops",
               "--reason", "x", "-p", policy_path, "--ledger", ledger_url, "--since", "2026-11-27T00:00:00Z",
               "--until", "2026-11-26T00:00:00Z")
    assert res.exit_code == 2 and "later than `until`" in res.output and "Traceback" not in res.output


# ------------------------------------------------------------------------------ replay
def _odd_decisions(rt):
    """Decisions and an execution as another recorder might append them."""
    ph = rt.engine.policy_hash
    act = {"workflow": WF, "type": "send", "amount": 50.0, "promise": False}
    ok = {"effect": "allow", "deciding": {"kind": "rule", "name": "small"}}
    ids = {}
    for name, body in (("now_number", {"action": act, "decision": ok, "policy_hash": ph, "now": 5}),
                       ("now_text", {"action": act, "decision": ok, "policy_hash": ph, "now": "garbage"}),
                       ("odd_ids", {"action": act, "decision": {"effect": "deny", "action_id": 5,
                                                                "action_type": {"t": 1}},
                                    "policy_hash": {"h": 1}, "now": "2026-11-26T12:00:00Z"}),
                       ("verdict_text", {"action": act, "decision": "allow", "policy_hash": ph,
                                         "now": "2026-11-26T12:00:00Z"})):
        ids[name] = rt.ledger.append("decision", body, workflow=WF).id
    return ids


def test_replay_over_entries_another_recorder_wrote_is_a_complete_answer_not_a_crash(rt, ledger_url,  # noqa: F811
                                                                                   tmp_path):
    """An execution whose `decision` is an object made every replay fail (`unhashable type`);
    an `action_id` that is not text crashed the text output; a recorded `now` that is not a
    time replayed as `allow -> deny` (the candidate's fail-closed deny of bad input), a
    changed verdict that `--as-rollback` would have rolled back. Executions are now found
    by their link, values that are not text read as none, and a bad `now` is unreplayable."""
    h = _sends(rt)
    ids = _odd_decisions(rt)
    d500 = h[500.0][0]
    odd_x = rt.ledger.append("execution", {"decision": {"x": 1}, "type": "send", "receipt": {}, "authorized": True},
                             workflow=WF, links=[d500]).id
    cand = write_policy(tmp_path, STRICTER)
    r = replay(str(cand), ledger_url)
    by = {c.decision_id: c for c in r.changed}
    assert set(by[d500].executions) == {h[500.0][1], odd_x}
    bad = {u["decision_id"]: u["reason"] for u in r.unreplayable}
    assert set(bad) == {ids["now_number"], ids["now_text"]} and all("`now`" in v for v in bad.values())
    assert by[ids["odd_ids"]].action_id is None and by[ids["odd_ids"]].action_type == "send"
    assert by[ids["odd_ids"]].old_policy_hash is None
    assert r.replayed == len(r.changed) + r.unchanged + len(r.unreplayable)
    for fmt in ("text", "json"):
        res = _cli("replay", cand, "--ledger", ledger_url, "--format", fmt)
        assert res.exit_code == 0 and "internal error" not in res.output, res.output
    js = json.loads(_cli("replay", cand, "--ledger", ledger_url, "--format", "json").output)
    assert js["unreplayable"] and all(isinstance(c["now"], str) for c in js["changed"])


# ------------------------------------------------------------------------------ capture the miss
def test_export_case_of_a_decision_another_recorder_wrote_is_written_not_a_traceback(rt, ledger_url,  # noqa: F811
                                                                                    tmp_path, policy_path):
    ids = _odd_decisions(rt)
    suite = tmp_path / "misses.policy-test.yaml"
    res = _cli("ledger", "export-case", ids["verdict_text"], "--expect", "deny", "--suite", suite,
               "--policies", policy_path, "--ledger", ledger_url)
    assert res.exit_code == 0 and "internal error" not in res.output, res.output
    case = yaml.safe_load(suite.read_text(encoding="utf-8"))["cases"][0]
    assert case["expect"] == {"effect": "deny"} and case["gate"]["action"]["amount"] == 50.0


def test_export_case_keeps_recorded_text_with_line_breaks_inside_its_comment(rt, ledger_url, tmp_path,  # noqa: F811
                                                                             policy_path):
    """The comment above the case names the recorded effect and rule. An effect with a line
    break (another recorder's entry) ended the comment and wrote the rest into the suite as
    YAML: here a second case that passes, injected into the suite under test."""
    inject = ("allow\n  - name: injected\n    now: \"2026-11-26T12:00:00Z\"\n    gate: {action: {workflow: "
              "replies, type: send, amount: 5.0, promise: false}}\n    expect: {effect: allow}\n  #\u2028x")
    e = rt.ledger.append("decision", {"action": {"workflow": WF, "type": "send", "amount": 50.0, "promise": False},
                                      "decision": {"effect": inject}, "policy_hash": rt.engine.policy_hash,
                                      "now": "2026-11-26T12:00:00Z"}, workflow=WF)
    suite = tmp_path / "misses.policy-test.yaml"
    res = _cli("ledger", "export-case", e.id, "--expect", "deny", "--suite", suite, "--policies", policy_path,
               "--ledger", ledger_url)
    assert res.exit_code == 0, res.output
    cases = yaml.safe_load(suite.read_text(encoding="utf-8"))["cases"]
    assert [c["name"] for c in cases] == [f"ledger {e.id}: send should be deny"]
    ran = _cli("test", suite)
    assert "1 failed" in ran.output and "injected" not in ran.output, ran.output


def test_rollback_status_text_says_how_many_plans_are_in_each_status(rt, ledger_url):  # noqa: F811
    """`stopline rollback --status` said "3 rollback(s), 0 done, 0 partial, 3 remaining" for
    a batch whose plans had all expired: the text never said which are pending, approved or
    expired (the JSON's `by_status`)."""
    _sends(rt)
    b = rt.request_bulk_rollback(SEND, "customer_request", "ops", "incident", now=at(30))
    rt.approve_batch(b.batch_id, principal="cs", roles=["customer_service"], batch_hash=b.batch_hash, now=at(70))
    res = _cli("rollback", "--status", b.batch_id, "--ledger", ledger_url)
    assert res.exit_code == 0, res.output
    st = rt.batch_status(b.batch_id)
    want = ", ".join(f"{k} {n}" for k, n in st["by_status"].items())
    assert f"by status: {want}" in res.output and "expired" in want


def test_a_spawned_replay_worker_that_loads_changed_policy_files_refuses_to_replay(rt, ledger_url,  # noqa: F811
                                                                                  tmp_path):
    """A spawned worker loads the candidate from disk itself. If the files changed after the
    caller loaded them, it replayed another policy than the one the result names (its hash);
    now its work raises PolicyChanged and replay() does the work in its own process."""
    from policy_engine import load
    from policy_engine import replay as R

    _sends(rt)
    cand = write_policy(tmp_path, STRICTER)
    loaded = load(str(cand)).policy_hash
    cand.write_text(POLICY, encoding="utf-8")  # changed on disk after the caller loaded it
    try:
        R._init([str(cand)], ledger_url, loaded)
        try:
            R._work(0, 10**9, (None, None, None), {})
        except R.PolicyChanged as e:
            assert "changed since the replay loaded them" in str(e)
        else:
            raise AssertionError("a worker replayed under other policy files than the caller's")
    finally:
        if "ledger" in R._W:
            R._W["ledger"].close()
        R._W.clear()


def test_replay_as_rollback_leaves_a_pending_rollback_of_the_deployed_policy_in_place(rt, ledger_url,  # noqa: F811
                                                                                    tmp_path):
    """`--as-rollback` plans under the candidate. A pending rollback the reviewers can approve
    under the deployed policy is listed as already being rolled back, not withdrawn in favour
    of a plan only the candidate could approve (the batch supersedes such plans for an incident)."""
    h = _sends(rt)
    live = rt.request_rollback(h[500.0][1], scenario="customer_request", requested_by="rita",  # (now: the
                               reason="r").rollback_id  # command's clock; escalated, pending until its deadline)
    cand = write_policy(tmp_path, STRICTER)
    res = _cli("replay", cand, "--ledger", ledger_url, "--as-rollback", "customer_request", "--format", "json")
    assert res.exit_code == 0, res.output
    batch = json.loads(res.output)["batch"]
    assert batch["existing"] == [{"execution": h[500.0][1], "rollback": live}]
    assert batch["originals"] == [h[450.0][1]]
    assert rt.authorization(live).status == "pending"


def test_existing_is_listed_in_the_order_the_executions_were_recorded(rt):  # noqa: F811
    """`existing` came in the database's order of the ids (random UUIDs), so the same ledger
    gave its JSON in another order on each run of the incident; it follows the record now."""
    h = _sends(rt, amounts=(60.0, 50.0, 40.0, 30.0, 20.0, 10.0, 5.0, 1.0))
    first = rt.request_bulk_rollback(SEND, "customer_request", "ops", "first", now=at(90))
    again = rt.request_bulk_rollback(SEND, "customer_request", "ops", "again", now=at(91), dry_run=True)
    assert [e["execution"] for e in again.existing] == [x for _, x in h.values()] == list(first.originals)
