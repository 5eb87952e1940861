"""One rollback: ``request_rollback`` (planned from the record and its recorded cascade),
the review ``queue`` and its ``step`` reports. Batches of them: :mod:`.bulk`."""

from __future__ import annotations

import bisect
import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from ..ledger import IdempotencyConflict, NewEntry
from . import projections as P
from .bulk import _lapsed_open
from .core import RuntimeCore, clock_expiry, may_expire_by_clock
from .results import (
    MAX_CASCADE,
    STEP_RANK,
    E,
    L,
    QueueItem,
    RollbackRequestResult,
    RuntimeUsageError,
    StepResult,
    _check_key,
    _free_text,
    _not_before,
    _now,
    _parse,
    _shown,
    _text_arg,
    _ts,
    _ts_after,
)

if TYPE_CHECKING:
    from ..engine import NowInput


_QUEUE_COLS = ("id, route, scenario, workflow, original, requested_by, requested_at, deadline, expires_at, status, "
               "claimed_by, lapses_at, policy_hash")
class _Lagging(Exception):
    """An entry appended beside the runtime waits to be folded into the projections."""


#: the log's size, and whether an entry appended beside the runtime waits to be folded in
_HEAD_SIZE = "SELECT size, (SELECT u.seq FROM ledger_unprojected u LIMIT 1) FROM ledger_heads WHERE log = 1"
_ROLLBACK_SEQ = "SELECT seq FROM rt_rollbacks WHERE id = ?"
_PLAN_RETRIES = 10  #: plans of one request before it gives up (its cascade kept being taken)
#: the reason recorded with the expiry of an unresolved rollback found by a new request
_REPLANNED = ("expired unresolved (its deadline, or its standard reversal window, passed before it was authorized); "
              "recorded when its execution was planned again")
#: the reason recorded with the expiry of an unresolved rollback covering a record of a new plan's cascade
_REPLANNED_COVER = ("expired unresolved (its deadline, or its standard reversal window, passed before it was "
                    "authorized); recorded when a record it covered was planned again")
_MERGE_MAX = 2000  # more queue-changing entries than this since a listing was kept: read it cold
_ATTEMPT = frozenset({"started", "completed", "failed"})
#: a duty's legal next reports by its latest one (None: none yet; docs/runtime.md, "Execution is tracked
#: to the end"): while it is not done, an attempt (``started``, or its outcome reported directly; a retry
#: after ``failed``); once ``completed``, its check: ``verified`` (it holds) or ``failed`` (it does not: done
#: again); ``verified`` is final. Its latest again is a repeat (recorded, nothing changes: a report made
#: before the rollback was authorized, confirmed once it is); a retry that must not record twice takes a key.
STEP_NEXT: dict[str | None, frozenset[str]] = {
    None: _ATTEMPT, "started": _ATTEMPT, "failed": _ATTEMPT,
    "completed": frozenset({"completed", "verified", "failed"}), "verified": frozenset({"verified"})}


def _just_after(t: str) -> str:
    """The least text greater than the time ``t`` (every recorded time has one fixed form, so
    a later time's text is greater than this too): what ``a < now`` is as ``_just_after(a) <= now``."""
    return t + "\x00"


def _named_rollbacks(cur: Any, pg: bool, since: int) -> set[str] | None:
    """The subjects (rollback ids, and the decisions among them) that the rollback, approval,
    transition and step entries appended at or after seq ``since`` name, read on the driver's
    cursor ``cur``. None when unsure (more than ``_MERGE_MAX`` of them, an entry that names
    no subject as it should): the caller starts afresh."""
    ph = "%s" if pg else "?"
    cur.execute(f"SELECT id, kind, links, CASE WHEN kind = 'rollback' THEN NULL ELSE body END "
                f"FROM ledger_entries WHERE kind IN ('rollback', 'approval', 'transition', 'step') "
                f"AND seq >= {ph} ORDER BY seq LIMIT {_MERGE_MAX + 1}", (since,))
    changed = cur.fetchall()
    if len(changed) > _MERGE_MAX:
        return None
    ids: set[str] = set()
    for eid, kind, links, body in changed:
        try:
            if kind == "rollback":
                ids.add(eid)
                continue
            if kind == "step":
                subj = json.loads(links)[0]
            else:
                subj = json.loads(body).get("subject")
        except (ValueError, TypeError, IndexError, AttributeError):
            return None
        if not isinstance(subj, str):
            if kind == "step":
                return None
            continue  # an approval or transition with no subject changes no rollback row
        ids.add(subj)
    return ids


def _check_next(rollback_id: str, duty: str, was: str | None, status: str) -> None:
    """Refuse (recording nothing) a report that is not a legal next one for the duty's latest
    (``STEP_NEXT``; the same for a report the rollback's authorization flags: it is folded in too)."""
    if status in STEP_NEXT.get(was, _ATTEMPT):  # (a status no runtime records: as none yet)
        return
    if was == "verified":
        why = "a verified step is final (its check found it holds)"
    elif was == "completed":
        why = ("a completed step is not started again: its check is next, `verified` (it holds) or `failed` "
               "(it does not hold; then it is done again)")
    else:
        why = "only a completed step can be verified"
    raise RuntimeUsageError(f"`{duty}` of rollback {rollback_id} is `{was or 'not started'}`, so it cannot be "
                            f"reported `{status}`: {why}; nothing was recorded")


def _declares(declared: Any, atype: Any) -> bool:
    """Whether a parent type's ``side_effects`` (None: not declared) name a child's type, as
    `plan_cascade` asks (only then are the child's own children read)."""
    return declared is not None and isinstance(atype, str) and atype in declared


def _undeclared(plan: Any) -> list[dict]:
    """The plan's undeclared downstream records in the result's (and the ledger body's) shape."""
    return [{"record": u.record_id, "type": u.type, "parent": u.parent, "parent_type": u.parent_type}
            for u in plan.cascade.undeclared]


def _holds(built: tuple | None, now_s: str, ekey: str | None) -> bool:
    """Kept items ``(lo, hi, items, engine)`` hold at ``now_s``: ``lo <= now < hi``, and they were
    read under this engine (policy hash; None: a runtime without policies): which approved rows
    are stale (classified under another version) and the rows judged for an expiry by the
    clock depend on it."""
    return built is not None and built[0] <= now_s < built[1] and built[3] == ekey


def _at_or_before(at: Any, now_dt: datetime) -> bool:
    """A recorded approval time at or before ``now_dt`` (False for one that is not a time)."""
    try:
        return isinstance(at, str) and _parse(at) <= now_dt
    except (ValueError, TypeError):
        return False


def _queue_item(r: tuple, now_s: str, ekey: str | None = None) -> tuple[QueueItem, str, str, bool]:
    """A queue row as an item at ``now_s`` with its recorded status, the instants around
    ``now_s`` at which the item or whether to judge it would change (the latest at or before
    it, "" for none; the first after it, "\\uffff" for none: its window's deadline, and for
    a pending row its ``pending_until`` and the instant just after its deadline), and whether
    it may be expired by the clock (:func:`~.core.may_expire_by_clock`: judge it)."""
    d, x, status, lapse = r[7], r[8], r[9], r[11]
    if d is None:
        before, after, past = "", "\uffff", False
    elif d <= now_s:
        before, after, past = d, "\uffff", True
    else:
        before, after, past = "", d, False
    if P.stale_plan(status, r[12], ekey):  # classified under another policy version: its approvals
        status = "pending"  # count for nothing under this one (``authorization`` says why)
    elif status == "approved" and lapse is not None:  # its approvals expire then: pending again
        if lapse <= now_s:
            status = "pending"
            if lapse > before:
                before = lapse
        elif lapse < after:
            after = lapse
    r = (*r[:9], status, r[10])
    if status != "pending":
        return QueueItem._make((*r, past, False)), before, after, False
    if x is not None:
        if x <= now_s:
            if x > before:
                before = x
        elif x < after:
            after = x
    if d is not None:  # a lapse is `deadline < now`: it changes just after the deadline
        if d < now_s:
            d1 = d + "\x00"  # (_just_after)
            if d1 > before:
                before = d1
        elif d == now_s:
            after = d + "\x00"  # (< every later instant, and < any other `after` but this one's d)
    return QueueItem._make((*r, past, False)), before, after, may_expire_by_clock(status, d, x, r[6], now_s)


class Rollbacks(RuntimeCore):
    """The rollbacks part of :class:`~policy_engine.runtime.runtime.Runtime`."""

    # ------------------------------------------------------------------ rollbacks
    def _record_graph(self, c, eng: Any, x: Any, gone: Any = frozenset()) -> tuple[dict, int, list[dict]]:
        """The original as an OriginalRecord dict with ``downstream`` from the recorded
        ``caused_by`` links (breadth-first, one query per level), and the records already
        covered by another open rollback (listed with it, not followed: never rolled back twice;
        ``gone``: rollbacks counted as closed, their expiry by the clock recorded with the plan).
        Every other recorded child is passed on: the engine checks it against its parent type's
        ``side_effects`` (`plan_cascade`) and lists an undeclared one in the plan (``cascade.undeclared``,
        under ``plan_hash``); its own children are not read (the engine does not walk them)."""
        from .bulk import _record as record

        root = record(x)
        elsewhere: list[dict] = []
        level = [(x, root)]
        n = 1
        while level and n < MAX_CASCADE:
            by_seq = {e.seq: (e, r) for e, r in level}
            kids = self.ledger.fetch(c, E.c.kind == "execution",
                                     E.c.seq.in_(select(L.c.from_seq).where(L.c.to_seq.in_(list(by_seq)))))
            by_id = {e.id: (e, r) for e, r in level}
            taken = self._covered(c, [k.id for k in kids], gone)
            nxt = []
            for k in kids:
                cb = k.body.get("caused_by")
                pe_pr = by_id.get(cb) if isinstance(cb, str) else None  # (a link it cannot read: not followed)
                if pe_pr is None:
                    continue
                pe, pr = pe_pr
                if k.id in taken:
                    elsewhere.append({"record": k.id, "rollback": taken[k.id], "parent": pe.id})
                    continue
                kr = record(k)
                pr["downstream"].append(kr)
                if _declares(self._facts(eng, x.workflow, pe.body.get("type"))["side_effects"], k.body.get("type")):
                    nxt.append((k, kr))
                n += 1
                if n >= MAX_CASCADE:
                    break
            level = nxt
        return root, n, elsewhere

    def _covered(self, c, ids: list[str], gone: Any = frozenset()) -> dict[str, str]:
        """record id -> the open rollback (not denied, expired or cancelled, nor one of ``gone``)
        that covers it."""
        out: dict[str, str] = {}
        for i in range(0, len(ids), 500):
            for rec, rb in c.execute(
                    select(P.records.c.record, P.records.c.rollback)
                    .join(P.rollbacks, P.rollbacks.c.id == P.records.c.rollback)
                    .where(P.records.c.record.in_(ids[i:i + 500]),
                           P.rollbacks.c.status.notin_(("denied", "expired", "cancelled")))
                    .order_by(P.records.c.seq)):
                if rb not in gone:
                    out.setdefault(rec, rb)
        return out

    def _lapsed_cover(self, c, eng: Any, x: Any, now_dt: datetime) -> tuple[dict, int, list[dict], set[str]]:
        """``_record_graph`` with the covering rollbacks the clock expired unrecorded (never
        authorized, past their window or ``pending_until``: ``authorization`` says ``expired``,
        the sweeper has not run) counted as closed, as a batch counts them (``bulk._lapsed_open``):
        nothing open would ever reverse a record they hold. Also returns those rollbacks."""
        gone: set[str] = set()
        while True:
            graph = self._record_graph(c, eng, x, gone)
            held = {it["rollback"] for it in graph[2]} - gone
            more = _lapsed_open(self, c, eng, held, now_dt) if held else set()
            if not more:
                return (*graph, gone)
            gone |= more

    def request_rollback(self, execution_id: str, *, scenario: str, requested_by: str, reason: str,
                         trigger: str | None = None, now: Any = None) -> RollbackRequestResult:
        """Plan the rollback of a recorded execution from the record (its receipt, reviewer,
        requester, time; the cascade from recorded ``caused_by`` links), store the plan and
        queue it on its scenario's route. An execution already being (or already) rolled
        back is answered with that rollback, not a second one. A cascade record already
        covered by another open rollback is not followed: the result's ``covered`` lists it
        with that rollback (no record is in two open rollbacks). One whose covering rollback
        the clock expired unrecorded is covered by nothing: that expiry is recorded with the
        plan, which follows the record (as a batch does)."""
        _text_arg(requested_by, "requested_by")  # (a projection column: a name the ledger can hold)
        _text_arg(scenario, "scenario", max_len=None)  # (a name the policy declares: the engine says which)
        _free_text(reason, "reason")
        _free_text(trigger, "trigger", optional=True)
        eng, now_dt = self.engine, _now(now)
        for _ in range(_PLAN_RETRIES):
            r = self._request_rollback(eng, now_dt, execution_id, scenario, requested_by, reason, trigger)
            if r is not None:
                return r
        raise RuntimeUsageError(f"the cascade of execution {execution_id} kept being rolled back by other "
                                f"requests: gave up after {_PLAN_RETRIES} plans")

    def _request_rollback(self, eng: Any, now_dt: datetime, execution_id: str, scenario: str, requested_by: str,
                          reason: str, trigger: str | None) -> RollbackRequestResult | None:
        """One planning and its recording; None when a record of the plan was covered by
        another rollback in between (plan again)."""
        with self.ledger.reading() as c:
            x = self._entry(c, execution_id, ("execution",))
            existing = self._existing_rollback(c, execution_id)
            superseded = None
            if existing is not None:
                ans = self._answer_existing(c, eng, existing, now_dt)
                if ans.status != "expired":
                    superseded = self._supersedes(c, eng, existing, execution_id, now_dt)
                    if superseded is None:
                        return ans
            else:
                original, _, elsewhere, gone = self._lapsed_cover(c, eng, x, now_dt)
                wf = x.workflow
                row = self._wf_row(c, wf)
        if superseded is not None and existing is not None:
            # classified under another policy version (a reload since), not started: no approval
            # can count for it under this one; withdrawn, then planned again
            r = self._transition(existing, "cancelled", requested_by, superseded, now_dt,  # type: ignore[attr-defined]
                                 ("pending",))
            if not r.recorded and r.status not in ("cancelled", "expired", "denied"):
                with self.ledger.reading() as c:  # (it changed in between: started, approved, ...)
                    return self._answer_existing(c, eng, existing, now_dt)
            return None
        if existing is not None:  # its standard window closed before it was authorized, and no sweep
            # recorded that yet: record its expiry, as the sweeper would, then plan again (escalated)
            self._transition(existing, "expired", "stopline", _REPLANNED, now_dt,  # type: ignore[attr-defined]
                             ("expired",))
            return None
        request = {"workflow": wf or "", "scenario": scenario, "requested_by": requested_by, "reason": reason,
                   "requested_at": _ts(now_dt), "original": original}
        plan = eng.classify_rollback(request, now_dt)
        undeclared = _undeclared(plan)
        if not plan.authorizable:
            return RollbackRequestResult(None, plan, False, "refused", plan.route, tuple(undeclared),
                                         "; ".join(e.message for e in plan.errors) or "the plan is not authorizable",
                                         tuple(elsewhere))
        steps = [s.record_id for s in plan.cascade.steps if s.record_id != execution_id]
        duties = [execution_id, *steps, *(f"compensate:{cp.name}" for cp in plan.compensations),
                  *(f"notify:{n}" for n in plan.notify)]
        pd = plan.model_dump(mode="json")
        body = {"plan_hash": plan.plan_hash, "scenario": scenario, "requested_by": requested_by, "reason": reason,
                "plan": pd, "route": plan.route, "original": execution_id, "cascade": steps,
                "duties": list(dict.fromkeys(duties)), "undeclared": undeclared,
                "trigger": trigger or (row[1] if row else None), "requested_at": _ts(now_dt),
                "pending_until": _ts_after(now_dt, self.rollback_ttl)}
        if elsewhere:
            body["covered"] = elsewhere
        links = [execution_id] + ([row[3]] if row and row[3] else [])
        out: dict[str, Any] = {}

        def build(c):
            ex = self._existing_rollback(c, execution_id)
            if ex is not None:
                out["existing"] = ex
                return []
            # the covering rollbacks the clock expired: still expired and unrecorded (judged again
            # inside the append lock), their expiry recorded with the plan; else plan again
            if gone and _lapsed_open(self, c, eng, gone, now_dt) != gone:
                out["again"] = True
                return []
            if steps and self._covered(c, steps, gone):  # a cascade record rolled back since the read
                out["again"] = True
                return []
            at = _ts(now_dt)
            return [*(NewEntry("transition", {"subject": r, "to": "expired", "principal": "stopline",
                                              "reason": _REPLANNED_COVER, "at": at},
                               workflow=self._entry(c, r, ("rollback",)).workflow, links=[r], time=now_dt)
                      for r in sorted(gone)),
                    NewEntry("rollback", body, workflow=wf, links=links, time=now_dt)]

        entries = self._transact(build)
        if "again" in out:
            return None
        if "existing" in out:
            with self.ledger.reading() as c:
                return self._answer_existing(c, eng, out["existing"], now_dt)
        return RollbackRequestResult(entries[-1].id, plan, False, "pending", plan.route, tuple(undeclared),
                                     covered=tuple(elsewhere))

    def _supersedes(self, c, eng: Any, rollback_id: str, execution_id: str, now_dt: datetime) -> str | None:
        """The reason a new request for ``execution_id`` withdraws the open rollback
        ``rollback_id`` (recorded with its cancellation), or None: it must be that
        execution's own rollback (not one that covers it in a cascade), stale
        (``SubjectStatus.stale``: classified under another policy version than the one
        deciding; so neither claimed by a step nor closed) and still pending."""
        rb = self._entry(c, rollback_id, ("rollback",))
        if rb.body.get("original") != execution_id:
            return None
        st = self._subject_status(c, eng, rb, now_dt)
        if not st.stale or st.status != "pending":
            return None
        plan = rb.body.get("plan") or {}
        return (f"superseded by a new request under policy {eng.policy_hash}: it was classified under policy "
                f"{plan.get('policy_hash')}, whose approvals do not count under this version")

    def _existing_rollback(self, c, execution_id: str) -> str | None:
        r = c.execute(select(P.records.c.rollback).join(P.rollbacks, P.rollbacks.c.id == P.records.c.rollback)
                      .where(P.records.c.record == execution_id,
                             P.rollbacks.c.status.notin_(("denied", "expired", "cancelled")))
                      .order_by(P.records.c.seq).limit(1)).first()
        return r[0] if r else None

    def _answer_existing(self, c, eng, rollback_id: str, now_dt: datetime) -> RollbackRequestResult:
        rb = self._entry(c, rollback_id, ("rollback",))
        st = self._subject_status(c, eng, rb, now_dt)
        from ..models import RollbackPlan

        plan = RollbackPlan.model_validate(rb.body["plan"])
        return RollbackRequestResult(rollback_id, plan, True, st.status, rb.body.get("route"),
                                     tuple(rb.body.get("undeclared") or ()),
                                     f"already rolled back by {rollback_id} ({st.status}); nothing was recorded",
                                     tuple(rb.body.get("covered") or ()))

    def queue(self, route: str | None = None, *, now: NowInput = None, limit: int | None = None,
              claimed: bool | None = None, after: str | None = None) -> list[QueueItem]:
        """Open rollbacks (not denied, expired, cancelled or verified) on ``route`` (all routes
        with None), oldest first, with their window deadline and status at ``now``.

        Pages: ``limit`` rows after the rollback ``after`` (the last id of the previous page;
        keyset pagination, so every page costs the same however deep). A listing is read
        from the ``rt_rollbacks`` projection together with the log's size in one snapshot and
        kept (a few listings per runtime) until the log grows: the projection changes only
        with an append, so an unchanged size proves an unchanged queue, across processes too.
        ``past_window`` is computed at ``now`` on every call.

        The listing answers as of ``now`` and writes nothing: a pending rollback expired by
        the clock whose expiry no entry records yet (its standard reversal window or its
        ``pending_until`` passed before it was authorized; the sweeper ``expire`` has not
        run) is listed with ``status="expired"`` and ``unrecorded=True``, never as pending:
        it takes no approval (``approve`` refuses it, as before). The rows that may be
        expired (:func:`~.core.may_expire_by_clock`, the rows the sweeper considers) are
        judged as ``authorization`` judges them (``_subject_status``: the verdict at
        ``now``, :func:`~.core.clock_expiry`), a few reads for all of them; a runtime
        opened without policies (read-only) cannot judge a verdict and takes the recorded
        status for it (a pending row is not authorized). The listing itself (which rows,
        their order, ``limit``/``after`` pages) is the ledger's alone: the sweep removes
        these rows from it later."""
        now_dt = _now(now)
        now_s = _ts(now_dt)
        eng = self.engine if self._policies is not None else None  # (one snapshot of a PolicyStore)
        ekey = eng.policy_hash if eng is not None else None
        _text_arg(route, "route", optional=True)
        _text_arg(after, "after", optional=True)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise RuntimeUsageError(f"`limit` is a number of rollbacks (0 or more), not {limit!r}")
        ck = (route, limit, claimed, after)
        where, params = ["open = 1"], []
        if route is not None:
            where.append("route = ?")
            params.append(route)
        if claimed is not None:
            where.append("claimed_by IS NOT NULL" if claimed else "claimed_by IS NULL")
        if after is not None:
            where.append("seq > (SELECT seq FROM rt_rollbacks WHERE id = ?)")
            params.append(after)
        whole = limit is None and after is None  # a whole listing: kept across appends, merged
        cols = ("seq, " if whole else "") + _QUEUE_COLS
        sql = (f"SELECT {cols} FROM rt_rollbacks WHERE {' AND '.join(where)} ORDER BY seq"
               + (f" LIMIT {int(limit)}" if limit is not None else ""))
        pg = self.ledger.backend == "postgresql"
        if pg:
            sql = sql.replace("?", "%s")
        built: tuple | None = None
        try:
            with self.ledger.reading() as c:
                cur = c.connection.cursor()  # the driver's cursor: plain tuples (10^4 rows)
                try:
                    cur.execute(_HEAD_SIZE)
                    head = cur.fetchone()  # the head row always exists
                    size = head[0] if head is not None else 0
                    if head is not None and head[1] is not None:  # appended beside the runtime: fold it in first
                        raise _Lagging
                    hit = self._queue_cache.get(ck)
                    merged = None
                    if hit is not None and hit[0] != size and whole:
                        merged = self._queue_merge(cur, pg, hit, route, claimed, now_s, ekey)
                    if hit is not None and hit[0] == size:
                        rows, seqs, built = hit[1], hit[3], hit[2]
                    elif merged is not None:
                        rows, seqs, built = merged
                    else:
                        if after is not None:
                            cur.execute(_ROLLBACK_SEQ.replace("?", "%s") if pg else _ROLLBACK_SEQ, (after,))
                            if cur.fetchone() is None:
                                raise RuntimeUsageError(f"`after`: no rollback `{after}`")
                        cur.execute(sql, params)
                        if whole:
                            fetched = cur.fetchall()
                            seqs = [r[0] for r in fetched]
                            rows = [r[1:] for r in fetched]
                        else:
                            rows, seqs = list(cur.fetchall()), None
                        if ck not in self._queue_cache and len(self._queue_cache) >= 8:
                            try:  # the oldest listing goes (another thread may have taken it first)
                                self._queue_cache.pop(next(iter(self._queue_cache)), None)
                            except (StopIteration, RuntimeError):
                                pass
                finally:
                    cur.close()
                if built is not None and _holds(built, now_s, ekey):
                    self._queue_cache[ck] = (size, rows, built, seqs)
                    return list(built[2])  # the same rows and no deadline crossed since: the same items
                built = self._queue_items(c, size, rows, now_s, now_dt, eng)  # (judged in the listing's snapshot)
        except _Lagging:  # (outside the read: the fold is a write under the append lock)
            self._sync()
            return self.queue(route, now=now, limit=limit, claimed=claimed, after=after)
        self._queue_cache[ck] = (size, rows, built, seqs)
        return list(built[2])

    def _queue_items(self, c, size: int, rows: list, now_s: str, now_dt: datetime, eng: Any) -> tuple:
        """``(lo, hi, items, engine)``: the items of ``rows`` at ``now_s``, which hold while
        ``lo <= now < hi`` (:func:`_holds`): no deadline crossed, and for the rows that may be
        expired by the clock (judged here, by ``engine``: its policy hash, None when no row was
        judged), from ``now_s`` on when each was judged expired for good (an expiry by the
        clock only ends with an entry: see :meth:`_expired_by_clock`), else at ``now_s`` alone."""
        lo, hi = "", "\uffff"
        items, judge = [], []
        ekey = eng.policy_hash if eng is not None else None  # (what the items were read under)
        for j, r in enumerate(rows):
            it, before, after, may = _queue_item(r, now_s, ekey)
            items.append(it)
            if before > lo:
                lo = before
            if after < hi:
                hi = after
            if may:
                judge.append(j)
        if not judge:
            return lo, hi, items, ekey
        expired, lasting = self._expired_by_clock(c, size, [rows[j][0] for j in judge], now_dt, now_s, eng)
        mk = QueueItem._make
        for j in judge:
            r = rows[j]
            if r[0] in expired:
                items[j] = mk((*r[:9], "expired", r[10], items[j][11], True))
        if lasting and len(expired) == len(judge):
            lo = max(lo, now_s)
        else:
            lo, hi = now_s, _just_after(now_s)
        return lo, hi, items, ekey

    def _expired_by_clock(self, c, size: int, ids: list[str], now_dt: datetime, now_s: str,
                          eng: Any) -> tuple[set[str], bool]:
        """``(expired, lasting)``: the rollbacks of ``ids`` that are expired at ``now_dt`` with
        no entry recording it (``_subject_status``'s ``unrecorded``, the verdict at now and
        :func:`~.core.clock_expiry`), read through ``c`` (the log at ``size`` entries): their
        entries and their linked approvals, transitions and steps a chunk of ids at a time.
        ``eng``: the engine judging (None for a runtime without policies, read-only: the
        recorded status then stands for the verdict, a pending row is not authorized, and
        :func:`~.core.clock_expiry` decides).

        ``lasting``: every judgment holds at any later now while no entry names the rollback.
        An expiry by the clock does: its window and its ``pending_until`` stay passed, and the
        verdict can only lose approvals as they expire (unless an approval is timed after
        ``now``: not kept). Those are kept (``_clock_memo``: id -> the instant judged) until
        an approval, transition or step names the rollback, or the engine changes."""
        ekey = eng.policy_hash if eng is not None else None
        with self._clock_lock:
            msize, mkey, memo = self._clock_memo
            usable = msize <= size  # (a snapshot older than the memo's: judge without it)
            if usable:
                if mkey != ekey:
                    memo = {}
                elif msize < size and memo:
                    cur = c.connection.cursor()
                    try:
                        named = _named_rollbacks(cur, self.ledger.backend == "postgresql", msize)
                    finally:
                        cur.close()
                    if named is None:
                        memo = {}
                    else:
                        memo = {k: v for k, v in memo.items() if k not in named}
                self._clock_memo = (size, ekey, memo)
                known = {i for i in ids if memo.get(i, "\uffff") <= now_s}
            else:
                known = set()
        todo = [i for i in ids if i not in known]
        expired, lasting, keep = set(known), True, {}
        kinds = ("approval", "transition", "execution", "step")
        for i in range(0, len(todo), 500):
            part = todo[i:i + 500]
            if eng is None:  # the three fields the rule reads, picked out by the database (entries
                # up to the snapshot's size: the log below it never changes)
                from ..scan import scan

                for _sq, rid, _wf, _t, (window, until, pending_until) in scan(
                        self.ledger, [E.c.kind == "rollback", E.c.id.in_(part)],
                        ["plan.window", "plan.reversible_until", "pending_until"], upto=size - 1):
                    if clock_expiry({"window": window, "reversible_until": until}, pending_until, now_dt):
                        expired.add(rid)
                        keep[rid] = now_s
                    else:
                        lasting = False
                continue
            subs = self.ledger.fetch(c, E.c.id.in_(part), E.c.kind == "rollback")
            linked: dict[str, list] = {s.id: [] for s in subs}
            for e in self.ledger.fetch(c, E.c.kind.in_(kinds), E.c.seq.in_(
                    select(L.c.from_seq).where(L.c.to_seq.in_([s.seq for s in subs])))):
                for ref in dict.fromkeys(e.links):
                    if ref in linked:
                        linked[ref].append(e)
            for s in subs:
                st = self._subject_status(c, eng, s, now_dt, linked=linked[s.id])
                if not st.unrecorded:
                    lasting = False
                    continue
                expired.add(s.id)
                if all(e.kind != "approval" or _at_or_before(e.body.get("at"), now_dt) for e in linked[s.id]):
                    keep[s.id] = now_s
                else:
                    lasting = False
        if keep and usable:
            with self._clock_lock:
                if self._clock_memo[0] == size and self._clock_memo[1] == ekey:
                    self._clock_memo[2].update(keep)
        return expired, lasting

    def _queue_merge(self, cur: Any, pg: bool, hit: tuple, route: str | None, claimed: bool | None,
                     now_s: str, ekey: str | None) -> tuple | None:
        """A kept whole listing brought up to date with the entries appended since it was
        read (inside the caller's snapshot): the rollback, approval, transition and step
        entries among them name the rollbacks that may have changed; those rows are read
        again by id and inserted, replaced or removed in seq order. Other appends (gate
        decisions, executions, stops) leave the listing as it is. None when unsure (too
        many changes, an entry that names no subject): the caller reads the listing cold."""
        old_size, rows, built, seqs = hit
        if seqs is None:
            return None
        ids = _named_rollbacks(cur, pg, old_size)
        if ids is None:
            return None
        if not ids:
            return rows, seqs, built
        ph = "%s" if pg else "?"
        # a rollback's row is never deleted (a rebuild recomputes the same rows) and its seq is its
        # rollback entry's, never changed: an id with no row was never listed, and a row's place
        # in the listing is found by its seq
        found: list[tuple[int, str, tuple | None]] = []
        idl = sorted(ids)
        for i in range(0, len(idl), 500):
            part = idl[i:i + 500]
            cur.execute(f"SELECT open, seq, {_QUEUE_COLS} FROM rt_rollbacks WHERE id IN "
                        f"({', '.join([ph] * len(part))})", part)
            for r in cur.fetchall():
                keep = (r[0] == 1 and (route is None or r[3] == route)
                        and (claimed is None or (r[12] is not None) == claimed))
                found.append((r[1], r[2], r[2:] if keep else None))
        rows, seqs = list(rows), list(seqs)
        # the built items are spliced too while they hold at this now (and no changed row is one to
        # judge: one that may be expired by the clock); else the caller builds them
        live = _holds(built, now_s, ekey)
        items = list(built[2]) if live else []
        lo, hi = (built[0], built[1]) if live else ("", "")
        for sq, rid, row in sorted(found):
            j = bisect.bisect_left(seqs, sq)
            there = j < len(seqs) and seqs[j] == sq
            if there and rows[j][0] != rid:
                return None  # not the listing this code keeps: read it cold
            if row is None:
                if there:
                    del rows[j], seqs[j]
                    if live:
                        del items[j]  # one item fewer keeps the others' window: lo, hi stay
                continue
            if there:
                rows[j] = row
            else:
                rows.insert(j, row)
                seqs.insert(j, sq)
            if live:
                it, before, after, may = _queue_item(row, now_s, ekey)
                if may:
                    live = False  # the caller builds the items (and judges this row)
                    continue
                if there:
                    items[j] = it
                else:
                    items.insert(j, it)
                if before > lo:
                    lo = before
                if after < hi:
                    hi = after
        return rows, seqs, ((lo, hi, items, built[3]) if live else None)

    def step(self, rollback_id: str, duty: str, status: str, *, key: str | None = None, now: NowInput = None,
             detail: dict | None = None, reporter: str | None = None) -> StepResult:
        """Report one step of a rollback: ``duty`` is a record's execution id (its reversal),
        ``compensate:NAME`` or ``notify:PARTY``; ``status`` started|completed|failed|verified.

        ``key``: the same report again (the same rollback, duty and status) with a used key
        changes nothing and gets the recorded step back (``recorded=False``); a key used for
        another duty or status of the rollback raises
        :class:`~policy_engine.ledger.IdempotencyConflict` (a key never silently means another
        report), as ``gate`` and ``executed`` do. Keys are per rollback. ``reporter``: who
        reports it (the server passes the authenticated caller), recorded in the step's body."""
        if not isinstance(status, str) or status not in STEP_RANK:
            raise RuntimeUsageError(f"a step's status is started, completed, failed or verified, not {_shown(status)}")
        _text_arg(duty, "duty", max_len=None)  # (a plan's duty: checked against the plan below)
        if detail is not None and not isinstance(detail, dict):  # (recorded as the step's `detail`)
            raise RuntimeUsageError(f"`detail` is a JSON object or None, not {_shown(detail)}")
        _check_key(key)
        _text_arg(reporter, "reporter", optional=True)
        eng, now_dt = self.engine, _now(now)
        lkey = None if key is None else f"step:{rollback_id}:{key}"
        if lkey is not None and len(lkey) > 256:
            raise RuntimeUsageError("a step key is at most 200 characters")
        out: dict[str, Any] = {}

        def build(c):
            rb = self._entry(c, rollback_id, ("rollback",))
            if lkey is not None:
                old = self.ledger.fetch(c, E.c.key == lkey)
                if old:
                    o = old[0]
                    if o.kind != "step" or tuple(o.links) != (rollback_id,) or \
                            (o.body.get("record"), o.body.get("status")) != (duty, status):
                        was = (f"`{o.body.get('status')}` of `{o.body.get('record')}`" if o.kind == "step"
                               else f"a `{o.kind}`")
                        raise IdempotencyConflict(f"the idempotency key `{key}` of rollback {rollback_id} was "
                                                  f"used by entry {o.seq} for {was}, not `{status}` of `{duty}`")
                    out["old"] = o
                    out["st"] = self._subject_status(c, eng, rb, now_dt)
                    return []
            _not_before(now_dt, rb, "a step of it", clock=now is None)
            duties = rb.body.get("duties") or []
            if duty not in duties:
                shown = ", ".join(duties[:6]) + (" …" if len(duties) > 6 else "")
                raise RuntimeUsageError(f"`{duty}` is not a duty of rollback {rollback_id} ({shown})")
            before = self._subject_status(c, eng, rb, now_dt)
            _check_next(rollback_id, duty, before.steps.get(duty), status)
            authorized = before.status in ("approved", "in_progress", "partial", "completed", "verified")
            body = {"record": duty, "status": status, "authorized": authorized, "at": _ts(now_dt)}
            if not authorized:
                body["flags"] = ["unauthorized"]
                body["reason"] = f"the rollback is `{before.status}`"
            if detail:
                body["detail"] = detail
            if reporter is not None:  # (who said so; without one the body is as before)
                body["reporter"] = reporter
            steps = {**before.steps, duty: status}  # fold the new step in (the entry is not written yet)
            done = {"completed", "verified"}
            remaining = [d for d in duties if steps.get(d) not in done]
            unverified = [d for d in duties if steps.get(d) == "completed"]
            st = ("verified" if not remaining and not unverified else "completed" if not remaining
                  else "partial" if "failed" in steps.values() else "in_progress")
            if not authorized:  # an unauthorized step starts nothing: the rollback stays as it was
                st = before.status
            body["status_after"] = st
            out["st"], out["rem"], out["auth"] = st, tuple(remaining), authorized
            made = []
            if not authorized and before.unrecorded:  # expired by the clock, not yet recorded: record it
                # now, as a transition would (the step's `expired` closes the row: the sweeper never would)
                made.append(NewEntry("transition", {"subject": rollback_id, "to": "expired", "principal": "stopline",
                                                    "reason": before.reason, "at": _ts(now_dt)},
                                     workflow=rb.workflow, links=[rollback_id], time=now_dt))
            return [*made, NewEntry("step", body, workflow=rb.workflow, links=[rollback_id], key=lkey, time=now_dt)]

        entries = self._transact(build)
        if "old" in out:
            o = out["old"]
            st = out["st"]
            return StepResult(rollback_id, o.body["record"], o.body["status"], False, o.id,
                              o.body.get("authorized") is True, st.status, st.remaining)
        e = entries[-1]
        return StepResult(rollback_id, duty, status, True, e.id, out["auth"], out["st"], out["rem"])

