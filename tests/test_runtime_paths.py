"""The runtime's fast paths keep its semantics (issue 17), on SQLite and PostgreSQL: a gate
reads the workflow's state optimistically and appends fenced, so a stop that lands between
its read and its append makes it decide again; a retried gate with its key gets the recorded
decision; a resume must meet the criteria of every trigger that stopped the workflow; the
queue pages by key and its listing cache follows the log across runtimes."""

from __future__ import annotations

import pytest
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import POLICY, RECEIPT, WF, at, policy_path, rt, send, write_policy  # noqa: F401  (fixtures)

from policy_engine import Runtime, load
from policy_engine.ledger import IdempotencyConflict
from policy_engine.runtime import RuntimeUsageError

# a second trigger, fired by the repair action `log` (which runs while the workflow is stopped)
TWO_TRIGGERS = POLICY.replace('''  rollback customer_request {''', '''  stop noisy_log {
    when `action.type == "log" && action.noisy`
    severity low
    owner "Platform"
    affects [crm]
    receipt [note]
    rollback "Quiet the log"
    notify [customer]
    resume when {
      quiet: `evidence.quiet == true` "the log is quiet"
    }
  }

  rollback customer_request {''')


def test_a_stop_between_the_gates_read_and_its_append_makes_it_decide_again(rt, ledger_url, policy_path):  # noqa: F811
    other = Runtime.open(str(policy_path), ledger=ledger_url)
    real = rt.ledger.query_one
    fired: list[str] = []

    def read_then_stop(sql, params=()):
        snap = real(sql, params)
        if not fired:  # another process stops the workflow right after this gate read "running"
            fired.append(other.gate(send(promise=True), now=at(1)).stop_id)
        return snap

    rt.ledger.query_one = read_then_stop  # type: ignore[method-assign]
    try:
        g = rt.gate(send(10.0), now=at(2))
    finally:
        rt.ledger.query_one = real  # type: ignore[method-assign]
        other.close()
    # evaluated again under the stop: recorded as stopped, after the stop in the log
    assert (g.effect, g.decision.deciding.kind, g.workflow_status) == ("stop", "stopped", "stopped")
    assert rt.ledger.get(g.decision_id).seq > rt.ledger.get(fired[0]).seq
    assert rt.ledger.verify().ok


def test_a_retried_gate_with_its_key_gets_the_recorded_decision(rt):
    g = rt.gate(send(500.0), now=at(0), key="req-1")
    again = rt.gate(send(500.0), now=at(30), key="req-1")  # the retry: a later clock
    assert again.decision_id == g.decision_id and again.effect == "require_approval"
    assert again.decision.evaluated_at == g.decision.evaluated_at
    with pytest.raises(IdempotencyConflict, match="req-1"):
        rt.gate(send(5.0), now=at(31), key="req-1")  # the key reused for another action
    assert rt.ledger.size == 1
    # a retry of a gate that stopped the workflow reports the stop it made
    s = rt.gate(send(promise=True), now=at(40), key="req-2")
    s2 = rt.gate(send(promise=True), now=at(41), key="req-2")
    assert (s2.decision_id, s2.stopped, s2.stop_id, s2.workflow_status) == (s.decision_id, True, s.stop_id, "stopped")


def test_a_resume_must_meet_every_unresolved_triggers_criteria(ledger_url, tmp_path):  # noqa: F811
    pol = write_policy(tmp_path, TWO_TRIGGERS)
    with Runtime.open(str(pol), ledger=ledger_url) as rt:
        first = rt.gate(send(promise=True), now=at(0))
        second = rt.gate({"workflow": WF, "type": "log", "noisy": True}, now=at(1))
        assert first.stopped and second.stopped
        assert rt.workflow_status(WF)["stopped_by"] == "noisy_log"
        # the latest trigger's criterion alone does not restart it
        r = rt.resume(WF, evidence={"quiet": True}, principal="ops", now=at(2))
        assert (r.recorded, r.allowed, r.unmet, r.status) == (True, False, ("fixed",), "stopped")
        body = rt.ledger.get(r.resume_id).body
        assert [(t["trigger"], t["allowed"]) for t in body["triggers"]] == [("noisy_log", True), ("bad_promise", False)]
        assert set(rt.ledger.get(r.resume_id).links) == {first.stop_id, second.stop_id}
        assert rt.gate(send(), now=at(3)).effect == "stop"
        ok = rt.resume(WF, evidence={"quiet": True, "fixed": True}, principal="ops", now=at(4))
        assert (ok.allowed, ok.status) == (True, "running")
        assert rt.gate(send(), now=at(5)).effect == "allow"
        assert rt.gate(send(500.0), now=at(5.5)).effect == "require_approval"  # a pending row
        # a later stop is judged alone: the resumed triggers are resolved
        again = rt.gate({"workflow": WF, "type": "log", "noisy": True}, now=at(6))
        assert again.stopped and rt.workflow_status(WF)["stop_id"] == again.stop_id
        assert rt.resume(WF, evidence={"quiet": True}, principal="ops", now=at(7)).allowed
        # the gate's projection rows (written beside its append) are what a rebuild from the log gives
        live = rt.projection_snapshot()
        rt.rebuild()
        assert rt.projection_snapshot() == live


def _rollbacks(rt, n, t0=0):
    ids = []
    for i in range(n):
        g = rt.gate(send(10.0, id=f"s{t0 + i}"), now=at(t0 + i))
        x = rt.executed(g.decision_id, receipt=RECEIPT, now=at(t0 + i))
        ids.append(rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita",
                                       reason="r", now=at(t0 + i + 1)).rollback_id)
    return ids


def test_queue_pages_by_key_and_its_cache_follows_the_log_across_runtimes(rt, ledger_url, policy_path):  # noqa: F811
    ids = _rollbacks(rt, 5)
    pages, after = [], None
    while True:
        page = rt.queue("customer_service", now=at(20), limit=2, after=after)
        if not page:
            break
        pages.append([i.rollback_id for i in page])
        after = page[-1].rollback_id
    assert pages == [ids[:2], ids[2:4], ids[4:]]
    with pytest.raises(RuntimeUsageError, match="after"):
        rt.queue("customer_service", after="no-such-rollback")
    assert [i.rollback_id for i in rt.queue("customer_service", now=at(20))] == ids
    # another runtime (another process) changes the queue: the cached listing is not served
    with Runtime.open(str(policy_path), ledger=ledger_url) as other:
        more = _rollbacks(other, 1, t0=100)
        other.cancel(ids[0], principal="rita", now=at(200))
    assert [i.rollback_id for i in rt.queue("customer_service", now=at(201))] == ids[1:] + more
    # past_window is computed at each call's now, also from a cached listing
    last = rt.queue("customer_service", now=at(120))[-1]
    assert not last.past_window
    assert rt.queue("customer_service", now=last.deadline)[-1].past_window  # a deadline is past at its instant
    assert not rt.queue("customer_service", now=at(120))[-1].past_window
    assert rt.queue("customer_service", now=at(100 + 3600))[-1].past_window


def test_action_info_is_what_the_runtime_reads_and_unknowns_fail_closed(policy_path):
    eng = load(str(policy_path))
    info = eng.action_info("send", WF)
    assert info == {"workflow": WF, "name": "send", "receipt": ("message", "ticket"), "side_effects": ("log",),
                    "runs_while_stopped": False}
    assert eng.action_info("log")["runs_while_stopped"] is True  # the one workflow that declares it
    assert eng.action_info("nope", WF) is None and eng.action_info("send", "elsewhere") is None


def test_now_is_read_as_the_engine_reads_a_time(rt):
    assert rt.gate(send(), now="2026-11-26 12:00:00Z").decision.evaluated_at.startswith("2026-11-26T12:00:00")
    for bad in ("2026-11-26", "2026-11-26T12:00:00", "yesterday"):
        with pytest.raises(RuntimeUsageError, match="RFC 3339"):
            rt.gate(send(), now=bad)


def test_a_gate_uses_the_state_it_saw_last_and_the_fence_catches_another_process(rt, ledger_url, policy_path):  # noqa: F811
    reads: list[tuple] = []
    real = rt.ledger.query_one

    def counting(sql, params=()):
        reads.append(params)
        return real(sql, params)

    rt.ledger.query_one = counting  # type: ignore[method-assign]
    try:
        assert rt.gate(send(10.0), now=at(0)).effect == "allow"
        assert rt.gate(send(10.0), now=at(1)).effect == "allow"
        assert len(reads) == 1  # the second gate decided on the state the first one saw, proven by its fence
        with Runtime.open(str(policy_path), ledger=ledger_url) as other:
            stop = other.gate(send(promise=True), now=at(2))
            g = rt.gate(send(10.0), now=at(3))  # its kept state says running: the fence refuses, it reads again
            assert (g.effect, g.decision.deciding.kind, g.workflow_status) == ("stop", "stopped", "stopped")
            assert rt.ledger.get(g.decision_id).seq > rt.ledger.get(stop.stop_id).seq
            assert other.resume(WF, evidence={"fixed": True}, principal="ops", now=at(4)).allowed
            assert rt.gate(send(10.0), now=at(5)).effect == "allow"
    finally:
        rt.ledger.query_one = real  # type: ignore[method-assign]
    assert rt.ledger.verify().ok
