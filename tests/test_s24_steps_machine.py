"""A rollback duty's step reports follow one state machine (docs/runtime.md, "Execution is
tracked to the end"), on SQLite and PostgreSQL, through every view of it.

While a duty is not done, an attempt: ``started``, or its outcome reported directly
(``completed``, ``failed``), a retry after ``failed`` too. Once ``completed``, its check:
``verified`` (it holds) or ``failed`` (it did not hold: the duty is done again, the rollback
``partial``). ``verified`` is final. The duty's latest status again is a repeat (recorded,
nothing changes). Anything else is a ``RuntimeUsageError`` that records nothing.

Before, ``started`` after ``completed`` was recorded and silently undid the duty (the
rollback went back to ``in_progress``), and any report after ``verified`` was recorded
(``recorded=True``) yet changed nothing in any view: the record said `failed` while every
status said `verified`. And the projections (the queue, ``batch_counts``) took a step's
``status_after`` as written: a step appended beside the runtime without one left the queue
at ``completed`` while ``authorization`` said ``partial``, and one that claimed ``verified``
closed the rollback in the queue while ``authorization`` said ``completed``."""

from __future__ import annotations

import pytest
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import RECEIPT, WF, at, policy_path, rt, send  # noqa: F401  (fixtures)

from policy_engine import Runtime
from policy_engine.ledger import Ledger
from policy_engine.runtime import RuntimeUsageError
from policy_engine.runtime import projections as P


def _approved_rollback(rt, t=0):
    """An approved rollback of a small execution; its duties (the original's reversal first)."""
    g = rt.gate(send(10.0), now=at(t))
    x = rt.executed(g.decision_id, receipt={**RECEIPT, "opened": False, "reviewer": "sam"}, now=at(t + 1))
    p = rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita", reason="r",
                            now=at(t + 2))
    assert rt.approve(p.rollback_id, principal="cs-1", roles=["customer_service"], now=at(t + 3)).status == "approved"
    return p.rollback_id, rt.authorization(p.rollback_id, now=at(t + 4)).duties


def _row(rt, rid):
    with rt.ledger.reading() as c:
        r = c.execute(P.rollbacks.select().where(P.rollbacks.c.id == rid)).first()
    return r.status, r.open


def _views(rt, rid, now):
    """The rollback's status as each reader sees it: authorization, the queue (None: not listed,
    closed), the projection row."""
    q = {i.rollback_id: i.status for i in rt.queue(now=now)}
    return rt.authorization(rid, now=now).status, q.get(rid), _row(rt, rid)


#: (the duty's reports so far, the next report) -> legal
LEGAL = {None: {"started", "completed", "failed"}, "started": {"started", "completed", "failed"},
         "failed": {"started", "completed", "failed"}, "completed": {"completed", "verified", "failed"},
         "verified": {"verified"}}
REACH = {None: [], "started": ["started"], "failed": ["failed"], "completed": ["started", "completed"],
         "verified": ["completed", "verified"]}


def test_each_report_is_legal_or_refused_recording_nothing(rt):
    rid, duties = _approved_rollback(rt)
    for i, (was, to) in enumerate((w, s) for w in LEGAL for s in ("started", "completed", "failed", "verified")):
        duty = duties[i % len(duties)]
        if i and i % len(duties) == 0:  # a fresh rollback once its duties are used
            rid, duties = _approved_rollback(rt, 100 * i)
            duty = duties[0]
        for s in REACH[was]:
            rt.step(rid, duty, s, now=at(100 * i + 10))
        assert rt.authorization(rid, now=at(100 * i + 11)).steps.get(duty) == was
        size, snap, views = rt.ledger.size, rt.projection_snapshot(), _views(rt, rid, at(100 * i + 12))
        if to in LEGAL[was]:
            r = rt.step(rid, duty, to, now=at(100 * i + 12))
            assert r.recorded and rt.authorization(rid, now=at(100 * i + 12)).steps[duty] == to, (was, to)
            continue
        with pytest.raises(RuntimeUsageError) as ei:
            rt.step(rid, duty, to, key=f"k{i}", now=at(100 * i + 12))
        msg = str(ei.value)
        assert f"`{duty}`" in msg and f"`{was or 'not started'}`" in msg and "nothing was recorded" in msg, msg
        assert not msg.startswith("no entry")  # (HTTP: a 422, not a 404)
        assert (rt.ledger.size, rt.projection_snapshot()) == (size, snap), (was, to)
        assert _views(rt, rid, at(100 * i + 12)) == views
        # the refused report's key was not used: a legal report takes it
        legal = sorted(LEGAL[was])[0]
        assert rt.step(rid, duty, legal, key=f"k{i}", now=at(100 * i + 13)).recorded


def test_a_completed_step_found_not_to_hold_is_failed_then_done_again(rt, ledger_url, policy_path):
    rid, duties = _approved_rollback(rt)
    for d in duties:
        rt.step(rid, d, "completed", now=at(10))
    assert _views(rt, rid, at(11)) == ("completed", "completed", ("completed", 1))
    for d in duties[1:]:
        rt.step(rid, d, "verified", now=at(12))
    # the check of the last duty found it did not hold: reported `failed`, the rollback is partial again
    f = rt.step(rid, duties[0], "failed", detail={"check": "the refund was reversed"}, now=at(13))
    assert (f.rollback_status, f.remaining) == ("partial", (duties[0],))
    assert _views(rt, rid, at(14)) == ("partial", "partial", ("partial", 1))
    # it cannot be verified until it is done again
    with pytest.raises(RuntimeUsageError, match="only a completed step can be verified"):
        rt.step(rid, duties[0], "verified", now=at(15))
    rt.step(rid, duties[0], "started", now=at(16))
    assert _views(rt, rid, at(16)) == ("in_progress", "in_progress", ("in_progress", 1))
    rt.step(rid, duties[0], "completed", now=at(17))
    assert rt.step(rid, duties[0], "verified", now=at(18)).rollback_status == "verified"
    assert _views(rt, rid, at(19)) == ("verified", None, ("verified", 0))
    # verified is final: a later failure or restart is refused, and every view stays verified
    for s in ("failed", "started", "completed"):
        with pytest.raises(RuntimeUsageError, match="a verified step is final"):
            rt.step(rid, duties[0], s, now=at(20))
    assert rt.step(rid, duties[0], "verified", now=at(21)).rollback_status == "verified"  # a repeat
    live = rt.projection_snapshot()
    # reopened from the record: the same state, the same refusals; projections rebuilt agree
    rt.close()
    with Runtime.open(str(policy_path), ledger=ledger_url) as again:
        assert again.projection_snapshot() == live
        assert _views(again, rid, at(22)) == ("verified", None, ("verified", 0))
        with pytest.raises(RuntimeUsageError, match="a verified step is final"):
            again.step(rid, duties[0], "failed", now=at(23))
        again.rebuild()
        assert again.projection_snapshot() == live


def test_a_keyed_repeat_is_answered_after_later_reports(rt):
    rid, duties = _approved_rollback(rt)
    first = rt.step(rid, duties[0], "completed", key="done", now=at(10))
    rt.step(rid, duties[0], "verified", key="check", now=at(11))
    size = rt.ledger.size
    again = rt.step(rid, duties[0], "completed", key="done", now=at(12))  # a retry of the first report
    assert (again.recorded, again.step_id, again.status) == (False, first.step_id, "completed")
    assert rt.ledger.size == size and rt.authorization(rid, now=at(12)).steps[duties[0]] == "verified"
    with pytest.raises(RuntimeUsageError, match="a verified step is final"):
        rt.step(rid, duties[0], "completed", key="other", now=at(13))
    assert rt.ledger.size == size


def test_a_batch_step_follows_the_same_machine_and_its_counts_agree(rt):
    xs = []
    for i in range(2):
        g = rt.gate(send(10.0, id=f"s{i}"), now=at(i))
        xs.append(rt.executed(g.decision_id, receipt={**RECEIPT, "opened": False}, now=at(i + 1)).execution_id)
    b = rt.request_bulk_rollback("true", "customer_request", "rita", "r", executions=xs, now=at(10))
    rt.approve_batch(b.batch_id, principal="cs-1", roles=["customer_service"], batch_hash=b.batch_hash, now=at(11))
    rb = list(b.rollbacks)
    rt.batch_step(b.batch_id, xs[0], "completed", now=at(12))
    rt.batch_step(b.batch_id, xs[0], "verified", now=at(13))
    size = rt.ledger.size
    with pytest.raises(RuntimeUsageError, match="a verified step is final"):
        rt.batch_step(b.batch_id, xs[0], "failed", now=at(14))
    rt.batch_step(b.batch_id, xs[1], "completed", now=at(14))
    with pytest.raises(RuntimeUsageError, match="not started again"):
        rt.batch_step(b.batch_id, xs[1], "started", now=at(15))
    rt.batch_step(b.batch_id, xs[1], "failed", now=at(15))  # its check: it did not hold
    assert rt.ledger.size == size + 2
    want = sorted(rt.authorization(r, now=at(16)).status for r in rb)
    assert want == ["in_progress", "partial"]
    counts = rt.batch_counts(b.batch_id, now=at(16))
    assert counts["by_status"] == {"in_progress": 1, "partial": 1} and counts["partial"] == 1
    st = rt.batch_status(b.batch_id, now=at(16))["duties"]
    assert (st["done"], st["failed"]) == (1, 1)


def test_steps_appended_beside_the_runtime_read_the_same_in_every_view(rt, ledger_url, policy_path):
    rid, duties = _approved_rollback(rt)
    for d in duties:
        rt.step(rid, d, "completed", now=at(10))
    other = Ledger.open(ledger_url)
    try:
        # another writer's step, with no `status_after`: the record says the duty failed
        other.append("step", {"record": duties[0], "status": "failed", "at": "2026-11-26T12:00:11.000000Z"},
                     workflow=WF, links=[rid], time=at(11))
        assert _views(rt, rid, at(12)) == ("partial", "partial", ("partial", 1))
        # one whose `status_after` claims more than its steps say: the steps decide
        other.append("step", {"record": duties[0], "status": "completed", "status_after": "verified"},
                     workflow=WF, links=[rid], time=at(13))
        assert _views(rt, rid, at(14)) == ("completed", "completed", ("completed", 1))
    finally:
        other.close()
    live = rt.projection_snapshot()
    rt.rebuild()
    assert rt.projection_snapshot() == live
    rt.close()
    with Runtime.open(str(policy_path), ledger=ledger_url) as again:
        assert _views(again, rid, at(15)) == ("completed", "completed", ("completed", 1))
