"""A policy reload leaves the subjects made under the old version stale, and every view says
so at once: approvals count only under the policy version that made a decision or
classified a rollback plan (the engine's rule), so after a reload an approved rollback not
yet started is pending again in `authorization`, the queue (also a listing kept from before
the reload), `batch_counts` and the sweeper, which then expires it at its deadline. The
status says why (`stale`, the reason names both versions); an approval is refused instead
of being recorded as one that "cannot fill an open slot"; a deny is recorded; a new request
for the same execution supersedes the stale rollback; a reload back to the old version makes
it approved again. Before, the projection said `approved` until the approvals lapsed, a
worker started it and its steps were recorded as unauthorized, and nobody was told why.
SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import POLICY, WF, at, send, write_policy
from sqlalchemy import text

import policy_engine
from policy_engine import Runtime
from policy_engine.runtime import projections as P

DAY = 24 * 3600


@pytest.fixture
def reloadable(tmp_path, ledger_url):  # noqa: F811
    """(runtime on a PolicyStore, the policy file, a function writing version `v` and reloading)."""
    path = write_policy(tmp_path)
    store = policy_engine.PolicyStore(str(path))

    def to_version(v: str) -> str:
        path.write_text(POLICY.replace('version "1.0"', f'version "{v}"'), encoding="utf-8")
        assert store.reload().ok
        return store.engine.policy_hash

    with Runtime.open(store, ledger=ledger_url) as rt:
        yield rt, to_version


def _executed(rt, t=0):
    g = rt.gate({"workflow": WF, "type": "other"}, now=at(t))
    return rt.executed(g.decision_id, receipt={"note": "n"}, now=at(t + 1)).execution_id


def _approved_rollback(rt, t=0):
    x = _executed(rt, t)
    p = rt.request_rollback(x, scenario="customer_request", requested_by="rita", reason="r", now=at(t + 2))
    a = rt.approve(p.rollback_id, principal="cs-1", roles=["customer_service"], now=at(t + 10))
    assert a.status == "approved"
    return x, p.rollback_id


def _queued(rt, rid, t):
    return {i.rollback_id: i for i in rt.queue(now=at(t))}.get(rid)


def test_an_approved_rollback_is_pending_in_every_view_after_a_reload_and_approved_after_one_back(reloadable):
    rt, to_version = reloadable
    old = rt.engine.policy_hash
    _x, rid = _approved_rollback(rt)
    assert _queued(rt, rid, 20).status == "approved"  # a listing kept from before the reload
    new = to_version("1.1")
    assert _queued(rt, rid, 20).status == "pending"  # nothing appended since: the kept listing must not hold
    st = rt.authorization(rid, now=at(20))
    assert (st.status, st.stale) == ("pending", True)
    assert old in st.reason and new in st.reason and "request the rollback again" in st.reason
    assert [i.status for i in rt.queue(now=at(21))] == ["pending"]
    # a step now is an unauthorized one, and the rollback stays pending
    s = rt.step(rid, _x, "started", now=at(30))
    assert s.authorized is False
    assert rt.authorization(rid, now=at(31)).status == "pending"
    # back to the version it was classified under: approved again, in every view
    assert to_version("1.0") == old
    st = rt.authorization(rid, now=at(40))
    assert (st.status, st.stale, st.reason) == ("approved", False, "")
    assert _queued(rt, rid, 40).status == "approved"


def test_the_sweeper_expires_a_stale_rollback_at_its_deadline(reloadable):
    rt, to_version = reloadable
    _x, rid = _approved_rollback(rt)
    to_version("1.1")
    assert rt.expire(now=at(DAY)) == []  # pending, its deadline (7 days) not passed
    end = 8 * DAY
    st = rt.authorization(rid, now=at(end))
    assert (st.status, st.unrecorded) == ("expired", True)
    item = _queued(rt, rid, end)
    assert (item.status, item.unrecorded) == ("expired", True)
    assert [r.subject for r in rt.expire(now=at(end))] == [rid]
    assert rt.authorization(rid, now=at(end + 1)).status == "expired"
    assert _queued(rt, rid, end + 1) is None


def test_an_approval_of_a_stale_subject_is_refused_and_a_deny_is_recorded(reloadable):
    rt, to_version = reloadable
    _x, rid = _approved_rollback(rt)
    to_version("1.1")
    n = rt.ledger.size
    a = rt.approve(rid, principal="cs-2", roles=["customer_service"], now=at(20))
    assert (a.recorded, a.counted, a.status) == (False, False, "pending")
    assert "classified under policy" in a.reason and "nothing was recorded" in a.reason
    assert rt.ledger.size == n
    d = rt.approve(rid, principal="nobody", roles=[], verdict="deny", now=at(21))  # (no role: recorded only)
    assert (d.recorded, d.counted) == (True, False)
    assert "does not count under this policy version" in d.reason


def test_a_deny_of_a_stale_subject_closes_it_under_every_version(reloadable):
    """A reviewer's deny given after a reload is judged under the new version, where the stale
    subject's slots are not: it counted under none, so a reload back to the old version let the
    old approval carry the rollback, the deny forgotten. Now it cancels the subject."""
    rt, to_version = reloadable
    _x, rid = _approved_rollback(rt)
    to_version("1.1")
    d = rt.approve(rid, principal="cs-2", roles=["customer_service"], verdict="deny", now=at(21))
    assert (d.recorded, d.counted, d.status) == (True, True, "cancelled") and "the deny closed it" in d.reason
    assert rt.authorization(rid, now=at(22)).status == "cancelled"
    to_version("1.0")  # back to the version that classified it: the deny still holds
    assert rt.authorization(rid, now=at(23)).status == "cancelled"
    assert _queued(rt, rid, 23) is None
    assert rt.projection_snapshot() == _rebuilt(rt)


def _rebuilt(rt):
    rt.rebuild()
    return rt.projection_snapshot()


def test_a_new_request_supersedes_the_stale_rollback(reloadable):
    rt, to_version = reloadable
    x, rid = _approved_rollback(rt)
    new = to_version("1.1")
    r = rt.request_rollback(x, scenario="customer_request", requested_by="rita", reason="again", now=at(30))
    assert r.rollback_id != rid and r.status == "pending" and not r.existing
    assert rt.ledger.get(r.rollback_id).body["plan"]["policy_hash"] == new
    old = rt.authorization(rid, now=at(31))
    assert old.status == "cancelled"
    cancel = [e for e in rt.ledger.entries(kind="transition") if e.body["subject"] == rid]
    assert [(e.body["to"], e.body["principal"]) for e in cancel] == [("cancelled", "rita")]
    assert "superseded" in cancel[0].body["reason"] and new in cancel[0].body["reason"]
    assert [i.rollback_id for i in rt.queue(now=at(31))] == [r.rollback_id]
    a = rt.approve(r.rollback_id, principal="cs-1", roles=["customer_service"], now=at(40))
    assert (a.recorded, a.status) == (True, "approved")
    # asked again under the same version: answered with the new one, nothing superseded
    again = rt.request_rollback(x, scenario="customer_request", requested_by="rita", reason="again", now=at(50))
    assert (again.rollback_id, again.existing, again.status) == (r.rollback_id, True, "approved")


def test_a_rollback_not_stale_or_already_started_is_not_superseded(reloadable):
    rt, to_version = reloadable
    x, rid = _approved_rollback(rt)
    assert rt.step(rid, x, "started", now=at(20)).authorized
    to_version("1.1")
    r = rt.request_rollback(x, scenario="customer_request", requested_by="rita", reason="again", now=at(30))
    assert (r.rollback_id, r.existing, r.status) == (rid, True, "in_progress")
    st = rt.authorization(rid, now=at(31))
    assert (st.status, st.stale) == ("in_progress", False)
    assert _queued(rt, rid, 31).status == "in_progress"


def test_a_pending_decision_made_under_the_old_version_is_stale(reloadable):
    rt, to_version = reloadable
    g = rt.gate(send(500.0), now=at(0))
    assert g.effect == "require_approval"
    new = to_version("1.1")
    st = rt.authorization(g.decision_id, now=at(10))
    assert (st.status, st.stale) == ("pending", True)
    assert new in st.reason and "gate the action again" in st.reason
    a = rt.approve(g.decision_id, principal="r1", roles=["reviewer"], now=at(11))
    assert (a.recorded, a.status) == (False, "pending") and "made under policy" in a.reason
    c = rt.claim_execution(g.decision_id, principal="worker", now=at(12))
    assert not c.recorded
    # gated again under the new version: approvable as usual
    g2 = rt.gate(send(500.0), now=at(20))
    assert rt.approve(g2.decision_id, principal="r1", roles=["reviewer"], now=at(21)).status == "approved"
    assert rt.authorization(g2.decision_id, now=at(22)).stale is False


def test_a_claimed_decision_is_not_stale(reloadable):
    rt, to_version = reloadable
    g = rt.gate(send(500.0), now=at(0))
    rt.approve(g.decision_id, principal="r1", roles=["reviewer"], now=at(1))
    assert rt.claim_execution(g.decision_id, principal="worker", now=at(2)).recorded
    to_version("1.1")
    st = rt.authorization(g.decision_id, now=at(3))
    assert (st.status, st.stale) == ("approved", False)


def test_batch_counts_and_batch_approval_after_a_reload(reloadable):
    rt, to_version = reloadable
    for t in (0, 10):
        _executed(rt, t)
    b = rt.request_bulk_rollback('original.type == "other"', "customer_request", "rita", "r", now=at(20))
    ap = rt.approve_batch(b.batch_id, principal="cs-1", roles=["customer_service"], batch_hash=b.batch_hash,
                          now=at(30))
    assert ap["statuses"] == {"approved": 2}
    assert rt.batch_counts(b.batch_id, now=at(40))["by_status"] == {"approved": 2}
    to_version("1.1")
    assert rt.batch_counts(b.batch_id, now=at(40))["by_status"] == {"pending": 2}
    assert {rt.authorization(r, now=at(40)).status for r in b.rollbacks} == {"pending"}
    n = rt.ledger.size
    again = rt.approve_batch(b.batch_id, principal="cs-2", roles=["customer_service"], batch_hash=b.batch_hash,
                             now=at(50))
    assert again["plans"] == 0 and again["counted"] == 0
    assert sorted(s["rollback"] for s in again["skipped"]) == sorted(b.rollbacks)
    assert all(s["stale"] and s["status"] == "pending" for s in again["skipped"])
    assert rt.ledger.size == n + 1  # the batch's own approval entry alone


def test_an_older_projection_without_the_policy_column_is_rebuilt_on_open(ledger_url, tmp_path):  # noqa: F811
    path = write_policy(tmp_path)
    with Runtime.open(str(path), ledger=ledger_url) as rt:
        _x, rid = _approved_rollback(rt)
        with rt.ledger.reading() as c:
            live = P.snapshot(c)
        rt.ledger.transact(lambda c: [c.execute(text("ALTER TABLE rt_rollbacks DROP COLUMN policy_hash")), []][1])
        with rt.ledger.reading() as c:
            assert P.outdated(c) == ["rt_rollbacks"]
    with Runtime.open(str(path), ledger=ledger_url) as again:
        with again.ledger.reading() as c:
            assert P.outdated(c) == [] and P.snapshot(c) == live
        col = [c.name for c in P.rollbacks.columns].index("policy_hash")
        assert [r[col] for r in live["rt_rollbacks"]] == [again.engine.policy_hash]


def test_a_batch_deny_of_stale_plans_closes_them_under_every_version(reloadable):
    """As a single deny: judged under the new version, it counted under none and wrote the
    new version's status into the projection (the queue then disagreed with authorization
    when the old version came back). It cancels the stale plans."""
    rt, to_version = reloadable
    for t in (0, 10):
        _executed(rt, t)
    b = rt.request_bulk_rollback('original.type == "other"', "customer_request", "rita", "r", now=at(20))
    rt.approve_batch(b.batch_id, principal="cs-1", roles=["customer_service"], batch_hash=b.batch_hash, now=at(30))
    to_version("1.1")
    d = rt.approve_batch(b.batch_id, principal="cs-2", roles=["customer_service"], batch_hash=b.batch_hash,
                         verdict="deny", now=at(50))
    assert (d["plans"], d["counted"], d["statuses"]) == (2, 2, {"cancelled": 2})
    to_version("1.0")
    assert {rt.authorization(r, now=at(60)).status for r in b.rollbacks} == {"cancelled"}
    assert rt.batch_counts(b.batch_id, now=at(60))["by_status"] == {"cancelled": 2}
    assert not [q for q in rt.queue(now=at(60)) if q.rollback_id in b.rollbacks]
    assert rt.projection_snapshot() == _rebuilt(rt)
