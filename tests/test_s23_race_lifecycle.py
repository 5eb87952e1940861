"""The runtime's lifecycle raced by real processes on one ledger (the twenty-third session's
audit), on SQLite and PostgreSQL. Two long-lived worker processes, each with its own
``Runtime``, are lined up at a barrier and released together on the same subject, twenty
rounds per race; after each round every view is compared: ``authorization``, the queue,
the report, a later ``executed`` or ``gate``, and the projections against a rebuild of the
log. Earlier sessions raced claims, expiries, requests and executions; these race what
they did not:

- an approval and a deny of the same subject at the same instant (a gate decision and a
  rollback): the deny wins whichever commits first, in every view;
- ``resume`` and a ``gate`` that fires the stop trigger again: the workflow's state is
  what the last ``stop``/``resume`` entry says, and the next gate decides by it;
- ``completed`` and ``failed`` of the same step under different keys: the later report
  (by ledger order) is the step's status, in ``authorization``, the queue and the report;
- a batch rollback of an execution and a single rollback of its cascade record: no record
  is in two open rollbacks.
"""

from __future__ import annotations

import multiprocessing as mp

import pytest
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import RECEIPT, WF, at, policy_path, send  # noqa: F401  (fixtures)

from policy_engine import Runtime
from policy_engine.report.compute import compute_report

ROUNDS = 10  # (each round a fresh subject; 20 per race were run while writing these: no other outcome)
CLOSED = ("denied", "cancelled", "expired", "completed", "verified")


def _op(r: Runtime, op: str, a: dict):
    if op == "approve":
        return r.approve(a["subject"], principal=a["principal"], roles=[a["role"]], now=at(a["t"]))
    if op == "deny":
        return r.approve(a["subject"], principal=a["principal"], roles=[a["role"]], verdict="deny", now=at(a["t"]))
    if op == "resume":
        return r.resume(WF, evidence={"fixed": True}, principal="ops", now=at(a["t"]))
    if op == "gate":
        return r.gate(send(10.0, promise=a["promise"]), now=at(a["t"]))
    if op == "step":
        return r.step(a["rollback"], a["duty"], a["status"], key=a["key"], now=at(a["t"]))
    if op == "bulk":
        return r.request_bulk_rollback(None, "customer_request", "rita", "batch", executions=[a["execution"]],
                                       now=at(a["t"]))
    if op == "single":
        return r.request_rollback(a["execution"], scenario="customer_request", requested_by="rita", reason="one",
                                  now=at(a["t"]))
    raise AssertionError(op)


def _worker(idx: int, url: str, pol: str, barrier, inq, outq) -> None:
    with Runtime.open(pol, ledger=url) as r:
        while (cmd := inq.get()) is not None:
            op, args = cmd
            barrier.wait(timeout=120)
            try:
                res = _op(r, op, args)
                outq.put((idx, ("ok", getattr(res, "recorded", None), getattr(res, "status", None))))
            except Exception as e:  # noqa: BLE001 - returned to the test
                outq.put((idx, ("error", type(e).__name__, str(e))))


class _Pair:
    """Two worker processes released together on each round."""

    def __init__(self, url: str, pol: str) -> None:
        ctx = mp.get_context("spawn")
        self.barrier, self.out = ctx.Barrier(2), ctx.Queue()
        self.inq = [ctx.Queue(), ctx.Queue()]
        self.procs = [ctx.Process(target=_worker, args=(i, url, pol, self.barrier, q, self.out))
                      for i, q in enumerate(self.inq)]
        for p in self.procs:
            p.start()

    def race(self, *cmds: tuple[str, dict]) -> list:
        for q, c in zip(self.inq, cmds, strict=True):
            q.put(c)
        got = sorted((self.out.get(timeout=120) for _ in cmds), key=lambda x: x[0])
        return [g[1] for g in got]

    def close(self) -> None:
        for q in self.inq:
            q.put(None)
        for p in self.procs:
            p.join(timeout=60)
            assert p.exitcode == 0


@pytest.fixture
def pair(ledger_url, policy_path):  # noqa: F811
    pol = str(policy_path)
    with Runtime.open(pol, ledger=ledger_url) as main:
        p = _Pair(ledger_url, pol)
        try:
            yield main, p
        finally:
            p.close()


def _views_agree(r: Runtime, now) -> None:
    """The projections are a rebuild of the log; the queue, ``authorization`` and the report
    say the same of every rollback; no record is in two open rollbacks."""
    live = r.projection_snapshot()
    r.rebuild()
    assert r.projection_snapshot() == live
    queued = {i.rollback_id: i.status for i in r.queue(now=now)}
    states: dict[str, int] = {}
    covering: dict[str, str] = {}
    for e in r.ledger.entries(kind="rollback", limit=None):
        st = r.authorization(e.id, now=now).status
        states[st] = states.get(st, 0) + 1
        # (the queue lists a plan the clock expired until that is recorded, as `expired`)
        assert queued.get(e.id, st if st in CLOSED else None) == st, (e.id, st, queued.get(e.id))
        if st not in CLOSED:
            for rec in [e.body["original"], *e.body.get("cascade", [])]:
                assert rec not in covering, f"record {rec} is in open rollbacks {covering[rec]} and {e.id}"
                covering[rec] = e.id
    assert compute_report(r.ledger, policies=r.engine, now=now)["rollback_status"] == dict(sorted(states.items()))
    assert r.ledger.verify().ok


def _chain(r: Runtime, t: float) -> tuple[str, str]:
    """A `send` executed and the `log` it caused (a cascade record)."""
    g = r.gate(send(10.0), now=at(t))
    x = r.executed(g.decision_id, receipt=RECEIPT, now=at(t + 1))
    lg = r.gate({"workflow": WF, "type": "log"}, now=at(t + 1))
    y = r.executed(lg.decision_id, receipt={"note": "n"}, caused_by=x.execution_id, now=at(t + 1))
    return x.execution_id, y.execution_id


def test_an_approval_and_a_deny_at_the_same_instant_the_deny_wins_in_every_view(pair):
    main, p = pair
    for i in range(ROUNDS):
        t = i * 1000
        # a gate decision needing one reviewer, and a rollback needing one customer_service
        d = main.gate(send(500.0), now=at(t)).decision_id
        x, _y = _chain(main, t)
        rb = main.request_rollback(x, scenario="customer_request", requested_by="rita", reason="r",
                                   now=at(t + 2)).rollback_id
        for subject, role in ((d, "reviewer"), (rb, "customer_service")):
            cmds = [("approve", {"subject": subject, "principal": "ann", "role": role, "t": t + 3}),
                    ("deny", {"subject": subject, "principal": "bob", "role": role, "t": t + 3})]
            if i % 2:
                cmds.reverse()
            got = p.race(*cmds)
            assert all(g[0] == "ok" for g in got), got
            deny = got[[c[0] for c in cmds].index("deny")]
            assert deny[1:] == (True, "denied"), deny  # recorded and closing, first or second
            assert main.authorization(subject, now=at(t + 4)).status == "denied"
        # a denied decision authorizes nothing: its execution is recorded unauthorized
        assert main.executed(d, receipt=RECEIPT, now=at(t + 5)).authorized is False
        assert main.claim(rb, principal="cs-9", now=at(t + 5)).recorded is False
    _views_agree(main, at(ROUNDS * 1000))


def test_resume_racing_a_gate_that_fires_the_trigger_again_leaves_the_state_the_log_says(pair):
    main, p = pair
    seen = set()
    for i in range(ROUNDS):
        t = i * 1000
        main.gate(send(10.0, promise=True), now=at(t))
        assert main.workflow_status(WF)["status"] == "stopped"
        cmds = [("resume", {"t": t + 1}), ("gate", {"promise": True, "t": t + 1})]
        if i % 2:
            cmds.reverse()
        got = p.race(*cmds)
        assert all(g[0] == "ok" for g in got), got
        last = [e for e in main.ledger.entries(workflow=WF, reverse=True, limit=50) if e.kind in ("stop", "resume")][0]
        want = "running" if last.kind == "resume" and last.body["allowed"] else "stopped"
        seen.add(want)
        assert main.workflow_status(WF)["status"] == want
        assert main.gate(send(10.0), now=at(t + 2)).decision.effect == ("allow" if want == "running" else "stop")
        if want == "stopped":  # the trigger fired after the resume: a second resume restarts it
            assert main.resume(WF, evidence={"fixed": True}, principal="ops", now=at(t + 3)).allowed
    _views_agree(main, at(ROUNDS * 1000))


def test_completed_and_failed_of_one_step_under_two_keys_the_later_report_stands(pair):
    main, p = pair
    for i in range(ROUNDS):
        t = i * 1000
        x, _y = _chain(main, t)
        rb = main.request_rollback(x, scenario="customer_request", requested_by="rita", reason="r",
                                   now=at(t + 2)).rollback_id
        main.approve(rb, principal="cs-1", roles=["customer_service"], now=at(t + 3))
        step = {"rollback": rb, "duty": x, "t": t + 4}
        got = p.race(("step", {**step, "status": "completed", "key": "done"}),
                     ("step", {**step, "status": "failed", "key": "broke"}))
        assert [g[:2] for g in got] == [("ok", True), ("ok", True)], got
        later = [e for e in main.ledger.entries(kind="step", link=rb, limit=None)][-1]
        st = main.authorization(rb, now=at(t + 5))
        assert st.steps[x] == later.body["status"]
        assert st.status == later.body["status_after"] == ("partial" if later.body["status"] == "failed"
                                                           else "in_progress")
        # the same report again with its key changes nothing, whichever won
        again = main.step(rb, x, "completed", key="done", now=at(t + 6))
        assert again.recorded is False and main.authorization(rb, now=at(t + 6)).steps[x] == later.body["status"]
    _views_agree(main, at(ROUNDS * 1000))


def test_a_batch_and_a_single_rollback_racing_over_one_cascade_leave_each_record_in_one_open_rollback(pair):
    main, p = pair
    for i in range(ROUNDS):
        t = i * 1000
        x, y = _chain(main, t)
        cmds = [("bulk", {"execution": x, "t": t + 2}), ("single", {"execution": y if i % 2 else x, "t": t + 2})]
        got = p.race(*cmds)
        assert all(g[0] == "ok" for g in got), got
        open_for = [e.id for e in main.ledger.entries(kind="rollback", limit=None)
                    if {x, y} & {e.body["original"], *e.body.get("cascade", [])}]
        assert open_for and len(open_for) <= 2
        if not i % 2:  # the same execution asked for twice: one rollback of it
            assert len(open_for) == 1
    _views_agree(main, at(ROUNDS * 1000))
