"""Rollbacks at scale: one batch of rollbacks chosen by a CEL condition over the recorded
executions (an incident), or given as a list (a policy reversal from ``stopline replay``).

    b = rt.request_bulk_rollback('original.type == "refund" && original.receipt.run == "run-7"',
                                 scenario="incident", requested_by="ops", reason="run-7 misfired")
    rt.approve_batch(b.batch_id, principal="lee", roles=["incident_lead"], batch_hash=b.batch_hash)
    rt.batch_step(b.batch_id, record_id, "completed", key="...")
    rt.batch_status(b.batch_id)     # done / partial / remaining

The select sees each execution as ``original``: ``id``, ``type``, ``workflow``, ``time``
(a timestamp: when it ran), ``receipt``, ``reviewer``, ``requester``, ``authorized``,
``flags``, ``decision``, ``caused_by``. Each selected execution is planned from the record
as ``request_rollback`` plans one (its cascade from the recorded ``caused_by`` links); an
execution inside another selected one's cascade is covered by that plan, not planned
twice; one already covered by an open rollback is listed, not planned. The batch is one
``batch`` entry and one ``rollback`` entry per plan (each linked to the batch), recorded
in one transaction. Its ``batch_hash`` binds every plan hash: one approval of the batch
names it and is recorded as the batch's approval plus one approval per plan, each judged
by the engine against that plan (so a principal the scenario says is `distinct from` a
record's reviewer does not count for that record). Steps are tracked per record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_ as sql_or
from sqlalchemy import select as sql_select

from ..gcpause import paused
from ..ledger import NewEntry
from ..ledger import schema as lschema
from ..ledger.canonical import canonical_text, parse_body
from ..limits import MAX_CLOCK_SKEW_SECONDS
from . import projections as P
from .core import may_expire_by_clock
from .results import (
    MAX_CASCADE,
    RuntimeUsageError,
    _free_text,
    _now,
    _parse,
    _Result,
    _shown,
    _text_arg,
    _ts,
    _ts_after,
    _unicode,
    outcome_of,
)

__all__ = ["RollbackBatch", "request_bulk_rollback"]  # (the batch's approval, views and steps: .batches)

E, L = lschema.entries, lschema.links
_CHUNK = 500  #: ids per IN (...) of strings
_SEQS = 5000  #: sequence numbers per IN (...) of integers
_PAGE = 5000
_HOLD = 10_000  #: executions a select did not choose, kept in memory for the cascades (the rest are read again)


@dataclass(frozen=True, slots=True)
class _X:
    """A recorded execution as the planner reads it (no links, no hash: what a plan needs)."""

    seq: int
    id: str
    workflow: str | None
    time: str
    body: dict


def _executions(c: Any, *where: Any, limit: int | None = None) -> list[_X]:
    q = sql_select(E.c.seq, E.c.id, E.c.workflow, E.c.time, E.c.body).where(E.c.kind == "execution", *where) \
        .order_by(E.c.seq)
    if limit is not None:
        q = q.limit(limit)
    return [_X(r[0], r[1], r[2], r[3], parse_body(r[4])) for r in c.execute(q)]


@dataclass(frozen=True)
class RollbackBatch(_Result):
    batch_id: str | None  #: None when nothing was recorded (nothing to plan)
    batch_hash: str  #: what one approval of the batch names: sha256 over the scenario, the select and every plan hash
    scenario: str
    select: str | None
    rollbacks: tuple[str, ...]  #: one rollback per planned original, in the order of the originals
    originals: tuple[str, ...]  #: the executions planned as originals
    selected: int  #: executions the select matched
    covered: tuple[dict, ...] = ()  #: selected executions inside another planned original's cascade
    existing: tuple[dict, ...] = ()  #: selected executions already covered by an open rollback
    refused: tuple[dict, ...] = ()  #: plans the engine cannot authorize (not recorded)
    errors: tuple[dict, ...] = ()  #: executions on which the select failed (not selected)
    records: int = 0  #: every record the plans cover (originals and cascades)
    #: the batch this same request recorded before (a retry whose answer was lost): named, nothing recorded now
    existing_batch: bool = False


def _select_value(x: Any) -> dict:
    """An execution as the select sees it: the recorded values as they are (a receipt or
    flags of another type than the runtime writes reach the select as recorded, where a
    condition that reads them errors on that execution alone)."""
    b = x.body
    t = b.get("executed_at") or x.time
    try:
        tv = _parse(t)
    except (TypeError, ValueError):
        tv = t
    receipt, flags = b.get("receipt"), b.get("flags")
    outcome, error = outcome_of(b)  # (succeeded, or failed with its error: `executed(outcome=)`)
    return {"id": x.id, "type": b.get("type"), "workflow": x.workflow, "time": tv, "executed_at": tv,
            "outcome": outcome, "error": error,
            "receipt": {} if receipt is None else receipt, "reviewer": b.get("reviewer"),
            "requester": b.get("requester"), "authorized": bool(b.get("authorized")),
            "flags": [] if flags is None else list(flags) if isinstance(flags, (list, tuple)) else flags,
            "decision": b.get("decision"), "caused_by": b.get("caused_by"), "action_id": b.get("action_id")}


def _record(e: Any) -> dict:  # the OriginalRecord of an execution (as Runtime.request_rollback builds it)
    b = e.body
    receipt = b.get("receipt")  # (not an object: no receipt fields; the engine judges the record without them)
    rec = {k: v for k, v in (receipt if isinstance(receipt, dict) else {}).items() if k != "downstream"}
    rec.update({"id": e.id, "type": b.get("type") or "", "executed_at": b.get("executed_at") or e.time,
                "downstream": []})
    for k in ("reviewer", "requester"):  # every principal the record names (Runtime.executed: `reviewers`)
        v = b.get(k + "s") or b.get(k)
        if v is not None:
            rec[k] = v
    return rec


def _undeclared(plan: Any) -> list[dict]:
    """The plan's undeclared downstream records in the batch member's (and the ledger body's) shape,
    as ``request_rollback`` records them."""
    return [{"record": u.record_id, "type": u.type, "parent": u.parent, "parent_type": u.parent_type}
            for u in plan.cascade.undeclared]


def _side_effects(eng: Any, wf: Any, atype: Any, memo: dict) -> tuple | None:
    if not isinstance(wf, str) or not isinstance(atype, str):  # (as recorded by another writer: undeclared)
        return None
    k = (wf, atype)
    if k not in memo:
        try:
            memo[k] = tuple(eng.compiled.workflows[wf].actions[atype].side_effects)
        except Exception:  # noqa: BLE001  (unknown: every link is undeclared, fail closed)
            memo[k] = None
    return memo[k]


def _graphs(c: Any, eng: Any, roots: list, known: dict[int, Any],
            elsewhere: dict[str, list] | None = None, gone: Any = frozenset()) -> tuple[dict, dict]:
    """For every root at once, its record tree from the recorded ``caused_by`` links, in
    memory: per level one query of the links table for the children's sequence numbers
    (per 5,000 parents), with the open rollback that already covers each child, and one
    read of the children not already read (``known``: seq -> execution). A child an open
    rollback covers is not followed (never rolled back twice): listed in ``elsewhere``
    (root id -> [{record, rollback, parent}]) when given. ``gone``: rollbacks the
    projection still shows open that the clock expired (a dry run plans as if it were
    recorded). A child its parent type's ``side_effects`` do not declare is passed on without
    its own children (the engine lists it in the plan's ``cascade.undeclared``, as for
    ``request_rollback``). Returns root id -> record, record id -> root id."""
    recs = {r.id: _record(r) for r in roots}
    owner = {r.id: r.id for r in roots}
    wf_of = {r.id: r.workflow for r in roots}  #: the workflow each root's plan is classified in
    count = {r.id: 1 for r in roots}
    memo: dict = {}
    roots_at = {r.id for r in roots}  #: selected executions not (yet) found inside another's cascade
    up: dict[str, str] = {}  #: record -> its parent in the trees
    level = list(roots)
    while level:
        by_id = {e.id: e for e in level}
        seqs = [e.seq for e in level]
        kid_seqs: set[int] = set()
        taken: dict[int, str] = {}  #: a child's seq -> the open rollback covering it
        for i in range(0, len(seqs), _SEQS):
            for s, rb in c.execute(sql_select(L.c.from_seq, _COVERING).where(L.c.to_seq.in_(seqs[i:i + _SEQS]))):
                kid_seqs.add(s)
                if rb is not None and rb not in gone:
                    taken[s] = rb
        unread = sorted(s for s in kid_seqs if s not in known)
        for i in range(0, len(unread), _SEQS):
            for x in _executions(c, E.c.seq.in_(unread[i:i + _SEQS])):
                known[x.seq] = x
        nxt = []
        for k in sorted((known[s] for s in kid_seqs if s in known), key=lambda e: e.seq):
            cb = k.body.get("caused_by")
            pe = by_id.get(cb) if isinstance(cb, str) else None
            if pe is None or (k.id in owner and k.id not in roots_at):
                continue
            root = owner[pe.id]
            if k.seq in taken and k.id not in roots_at:
                if elsewhere is not None:
                    elsewhere.setdefault(root, []).append({"record": k.id, "rollback": taken[k.seq], "parent": pe.id})
                continue
            if count[root] >= MAX_CASCADE:
                continue
            # as ``Runtime._record_graph``: every recorded child goes to the engine, which checks it
            # against its parent type's ``side_effects`` in the plan's workflow and lists an undeclared
            # one in the plan (``cascade.undeclared``, under ``plan_hash``); its children are not read
            declared = _side_effects(eng, wf_of[root], pe.body.get("type"), memo)
            if declared is None or not isinstance(k.body.get("type"), str) or k.body.get("type") not in declared:
                recs[pe.id]["downstream"].append(_record(k))  # (a selected one stays its own root)
                count[root] += 1
                continue
            if k.id in roots_at:  # a selected execution inside another one's cascade: its tree joins
                roots_at.discard(k.id)
                recs[pe.id]["downstream"].append(recs[k.id])
                up[k.id] = pe.id
                continue
            kr = _record(k)
            recs[pe.id]["downstream"].append(kr)
            recs[k.id] = kr
            owner[k.id] = root
            up[k.id] = pe.id
            count[root] += 1
            nxt.append(k)
        level = nxt
    final: dict[str, str] = {}
    for rid in owner:  # every record's topmost selected ancestor
        r = rid
        while r in up:
            r = up[r]
        final[rid] = r
    return {r.id: recs[r.id] for r in roots}, final


_CE = E.alias("covered_entry")
#: the open rollback (not denied, expired or cancelled) covering the execution a link row comes from
_COVERING = (sql_select(P.records.c.rollback)
             .join(P.rollbacks, P.rollbacks.c.id == P.records.c.rollback)
             .join(_CE, _CE.c.id == P.records.c.record)
             .where(_CE.c.seq == L.c.from_seq, P.rollbacks.c.status.notin_(("denied", "expired", "cancelled")))
             .order_by(P.records.c.seq).limit(1).correlate(L).scalar_subquery())
_OPEN_RECORDS = (sql_select(P.records.c.record).join(P.rollbacks, P.rollbacks.c.id == P.records.c.rollback)
                 .where(P.rollbacks.c.status.notin_(("denied", "expired", "cancelled"))))
_PLAN_RETRIES = 10  #: plans of one batch before it gives up (records kept being taken meanwhile)
_REPLANNED = ("expired unresolved (its deadline, or its standard reversal window, passed before it was authorized); "
              "recorded when its execution was planned again in a batch")


def _lapsed_open(rt: Any, c: Any, eng: Any, ids: set[str], now_dt: Any) -> set[str]:
    """The rollbacks of ``ids`` the projection shows open that are expired by the clock at
    ``now_dt`` with no entry recording it (not authorized, and past their standard
    reversal window or their ``pending_until``): the rows :func:`~.core.may_expire_by_clock`
    picks (a pending row; an approved one whose approvals lapsed or that another policy
    version classified is pending again), judged as ``Runtime.authorization`` judges them
    (``_expired_by_clock``). ``request_rollback`` plans such an execution again; so does a batch."""
    R = P.rollbacks
    now_s = _ts(now_dt)
    ekey = eng.policy_hash if eng is not None else None
    judge: list[str] = []
    rows = sorted(ids)
    for i in range(0, len(rows), _CHUNK):
        for rid, st, dl, ex, rq, lapses, ph in c.execute(
                sql_select(R.c.id, R.c.status, R.c.deadline, R.c.expires_at, R.c.requested_at, R.c.lapses_at,
                           R.c.policy_hash).where(R.c.id.in_(rows[i:i + _CHUNK]))):
            if st == "approved" and ((lapses is not None and lapses <= now_s) or (ekey is not None and ph != ekey)):
                st = "pending"
            if may_expire_by_clock(st or "pending", dl, ex, rq, now_s):
                judge.append(rid)
    if not judge:
        return set()
    size = c.execute(sql_select(lschema.heads.c.size).where(lschema.heads.c.log == lschema.LOG)).scalar()
    expired, _lasting = rt._expired_by_clock(c, int(size or 0), judge, now_dt, now_s, eng)
    return set(expired).intersection(judge)


def _superseded(rt: Any, c: Any, eng: Any, taken: dict[str, str], now_dt: Any) -> dict[str, str]:
    """Of ``taken`` (execution -> the open rollback covering it), the rollbacks a new request
    withdraws as ``request_rollback`` does (``_supersedes``: the execution's own rollback,
    classified under another policy version than the one deciding, still pending, so no
    approval can count for it): rollback -> its execution."""
    R = P.rollbacks
    own: dict[str, str] = {}
    rbs = sorted(set(taken.values()))
    for i in range(0, len(rbs), _CHUNK):  # (the projection first: only another version's own plans are read)
        for rid, orig in c.execute(sql_select(R.c.id, R.c.original).where(
                R.c.id.in_(rbs[i:i + _CHUNK]), R.c.status.in_(("pending", "approved")),
                sql_or(R.c.policy_hash.is_(None), R.c.policy_hash != eng.policy_hash))):
            if taken.get(orig) == rid:
                own[rid] = orig
    return {rid: orig for rid, orig in own.items() if rt._supersedes(c, eng, rid, orig, now_dt) is not None}


def _withdraw(rt: Any, eng: Any, lapsed: list[str], stale: dict[str, str], requested_by: str, now_dt: Any) -> None:
    """Record, in one transaction, what ``request_rollback`` records one by one before it
    plans an execution again: the expiry of each rollback of ``lapsed`` the clock expired
    (as the sweeper would), the cancellation of each of ``stale`` (rollback -> execution) it
    supersedes. Each is judged again inside the append lock: one authorized, started or
    closed meanwhile is left as it is (and stays taken when the batch plans again)."""
    at = _ts(now_dt)

    def build(c):
        expire = sorted(_lapsed_open(rt, c, eng, set(lapsed), now_dt)) if lapsed else []
        cancel = []
        for rid, orig in sorted(stale.items()):
            why = rt._supersedes(c, eng, rid, orig, now_dt)
            if why is not None:
                cancel.append((rid, why))
        ids = expire + [r for r, _ in cancel]
        wf: dict[str, Any] = {}
        for i in range(0, len(ids), _CHUNK):
            wf.update(c.execute(sql_select(E.c.id, E.c.workflow).where(E.c.id.in_(ids[i:i + _CHUNK]))).all())
        return ([NewEntry("transition", {"subject": r, "to": "expired", "principal": "stopline", "reason": _REPLANNED,
                                         "at": at}, workflow=wf.get(r), links=[r], time=now_dt) for r in expire]
                + [NewEntry("transition", {"subject": r, "to": "cancelled", "principal": requested_by, "reason": why,
                                           "at": at}, workflow=wf.get(r), links=[r], time=now_dt)
                   for r, why in cancel])

    rt.transact(build)


def _bound(v: Any) -> str:
    """``since``/``until`` as a stored time: digits below the microsecond (which the ledger's
    times do not have) round up, so an entry just before the bound stays before it
    (``until``: in; ``since``: out), never on the wrong side of it."""
    from ..engine.util import window_now

    t = _now(v)
    return _ts(window_now(v, t) if isinstance(v, str) else t)


def _ran(x: _X) -> str | None:
    """When execution ``x`` ran (its ``executed_at``, else when it was recorded) as the ledger
    writes times, so the text compares as the instants; None when that is not a time."""
    t = x.body.get("executed_at") or x.time
    try:
        return _ts(_parse(t)) if isinstance(t, str) else None
    except (TypeError, ValueError, OverflowError):
        return None


def _skewed(since: str) -> str:
    """The earliest recorded time of an execution that ran at or after ``since``: the runtime
    takes an ``executed_at`` up to the clock skew after the time it records."""
    from datetime import timedelta

    try:
        return _ts(_parse(since) - timedelta(seconds=MAX_CLOCK_SKEW_SECONDS))
    except OverflowError:  # (a bound within the skew of year 1: every execution)
        return ""


def _compile_error(select: str, message: str, offset: int, end: int) -> str:
    """The select's compile error with where it is: the line holding ``offset`` and a caret
    under it (its tabs kept, so the caret lines up as the line is shown); ``line L, column C``
    when the select has several lines (a caret under the whole text put it past the end of
    the wrong line), ``column C`` when it has one."""
    offset = max(0, min(offset, len(select)))
    start = select.rfind("\n", 0, offset) + 1
    stop = select.find("\n", offset)
    stop = len(select) if stop < 0 else stop
    line = select[start:stop].rstrip("\r")
    pad = "".join(ch if ch == "\t" else " " for ch in select[start:offset])
    caret = pad + "^" * max(1, min(end, start + len(line)) - offset)
    where = f"column {offset - start + 1}"
    if "\n" in select:
        where = f"line {select.count(chr(10), 0, offset) + 1}, {where}"
    return f"the select does not compile: {message} ({where})\n  {line}\n  {caret}"


def _batch_hash(scenario: str, select: str | None, plans: list[tuple[str, str]]) -> str:
    body = {"scenario": scenario, "select": select, "plans": [[o, h] for o, h in plans]}
    return "sha256:" + hashlib.sha256(canonical_text(body).encode()).hexdigest()


def request_bulk_rollback(rt: Any, select: str | None, scenario: str, requested_by: str, reason: str,
                          since: Any = None, until: Any = None, *, executions: Iterable[str] | None = None,
                          trigger: str | None = None, now: Any = None, dry_run: bool = False,
                          supersede: bool = True) -> RollbackBatch:
    """Plan every recorded execution ``select`` matches (a CEL condition over ``original``;
    ``since <= time < until`` narrows them by when each ran: ``original.time``), or every one of
    ``executions`` (ids), as one batch; recorded in one transaction (with ``dry_run``,
    planned and returned, nothing recorded).

    An open rollback of a selected execution that the clock expired (never authorized in
    its window or by its deadline) is recorded expired and the execution planned again, as
    ``request_rollback`` does; with ``supersede`` (the default), so is the execution's own
    pending rollback classified under another policy version than this runtime's (it is
    cancelled: no approval can count for it). ``supersede=False`` lists those as
    ``existing`` (``stopline replay --as-rollback``, whose policy is a candidate, not the
    one the reviewers approve under).

    The same request again (its answer lost) that finds nothing to plan is answered with
    the batch it recorded, every plan of which is still open (``existing_batch``), and
    records nothing; a dry run names no batch."""
    _text_arg(requested_by, "requested_by")  # (a projection column: a name the ledger can hold)
    _text_arg(scenario, "scenario", max_len=None)
    _free_text(reason, "reason")
    _free_text(trigger, "trigger", optional=True)
    with paused():  # 10^4 executions and their trees in memory: no collector passes over them meanwhile
        for _ in range(_PLAN_RETRIES):
            b = _request_bulk_rollback(rt, select, scenario, requested_by, reason, since, until,
                                       executions=executions, trigger=trigger, now=now, dry_run=dry_run,
                                       supersede=supersede)
            if b is not None:
                return b
    raise RuntimeUsageError(f"records of the batch kept being rolled back by other requests: gave up after "
                            f"{_PLAN_RETRIES} plans")


def _request_bulk_rollback(rt: Any, select: str | None, scenario: str, requested_by: str, reason: str,
                           since: Any, until: Any, *, executions: Iterable[str] | None, trigger: str | None,
                           now: Any, dry_run: bool, supersede: bool = True) -> RollbackBatch | None:
    """One planning of the batch and its recording; None when a record of a plan's cascade
    was covered by another rollback between the read and the recording (plan again)."""
    from ..cel import CelCompileError, CelError, compile_cel

    eng, now_dt = rt.engine, _now(now)
    if select is None and executions is None:
        raise RuntimeUsageError("give `select` (a CEL condition over `original`) or `executions`")
    expr = None
    if select is not None:
        try:
            expr = compile_cel(select)
        except CelCompileError as e:
            raise RuntimeUsageError(_compile_error(select, e.message, e.offset, e.end)) from None
    led = rt.ledger
    where: list[Any] = []
    bounds = {}
    for name, v in (("since", since), ("until", until)):
        if v is not None:
            try:
                bounds[name] = _bound(v)
            except RuntimeUsageError as e:
                raise RuntimeUsageError(str(e).replace("`now`", f"`{name}`")) from None
    if "since" in bounds and "until" in bounds and bounds["since"] > bounds["until"]:
        raise RuntimeUsageError(f"`since` {bounds['since']} is later than `until` {bounds['until']}: "
                                "no execution can be in that window")
    if "since" in bounds:  # (the window is on when each ran: one recorded up to the clock skew before it ran,
        # or any time after it, may be in it; the reading stops at none, each is judged below by `_ran`)
        where.append(E.c.time >= _skewed(bounds["since"]))
    chosen: list = []
    errors: list[dict] = []
    with led.reading() as c:
        if executions is not None:
            ids = list(dict.fromkeys(executions))
            bad = [i for i in ids if not isinstance(i, str) or not i or not _unicode(i)]
            if bad:  # (never recorded: no database is asked for them)
                raise RuntimeUsageError(f"not recorded executions: {', '.join(_shown(i) for i in bad[:5])}")
            found: list[_X] = []
            for i in range(0, len(ids), _CHUNK):
                found += _executions(c, E.c.id.in_(ids[i:i + _CHUNK]))  # (the window: judged below)
            missing = set(ids) - {x.id for x in found}
            if missing:
                raise RuntimeUsageError(f"not recorded executions: {', '.join(sorted(missing)[:5])}")
            pool = sorted(found, key=lambda e: e.seq)
        else:
            pool = []
        known: dict[int, _X] = {}  #: executions read, kept for the cascades (the chosen, and others up to _HOLD)

        def judge(page: list[_X]) -> None:
            for x in page:
                if bounds:  # `since <= time < until` by when it ran (`original.time`), as the select reads it
                    ran = _ran(x)
                    if ran is None:
                        errors.append({"execution": x.id, "error": "its `executed_at` is not a time: cannot tell "
                                                                   "whether it ran in the window"})
                        continue
                    if ran < bounds.get("since", ran) or ("until" in bounds and ran >= bounds["until"]):
                        if len(known) - len(chosen) < _HOLD:  # (a child of a chosen one, maybe)
                            known[x.seq] = x
                        continue
                if expr is None:
                    chosen.append(x)
                    known[x.seq] = x
                    continue
                try:
                    v = expr({"original": _select_value(x)})
                except Exception as e:  # noqa: BLE001  (a value the CEL runtime cannot take: this execution's error)
                    v = CelError(f"the select cannot read this execution: {type(e).__name__}: {str(e)[:200]}")
                if isinstance(v, CelError):
                    errors.append({"execution": x.id, "error": v.message})
                elif v is True:
                    chosen.append(x)
                    known[x.seq] = x
                    continue
                elif not isinstance(v, bool):
                    errors.append({"execution": x.id, "error": f"the select gave {type(v).__name__}, not a bool"})
                if len(known) - len(chosen) < _HOLD:  # a child of a chosen one, maybe: not read again (bounded)
                    known[x.seq] = x

        if executions is not None:
            judge(pool)
        else:  # page by page: what is not chosen is dropped past _HOLD (never the whole ledger in memory)
            after = -1
            while True:
                page = _executions(c, *where, E.c.seq > after, limit=_PAGE)
                if not page:
                    break
                judge(page)
                after = page[-1].seq
        if errors:  # fail closed: a select that cannot tell about some executions plans nothing
            return RollbackBatch(None, "", scenario, select, (), (), len(chosen), (), (), (), tuple(errors), 0)
        # already covered by an open rollback
        taken: dict[str, str] = {}
        cids = [x.id for x in chosen]
        for i in range(0, len(cids), _CHUNK):
            for rec, rb in c.execute(sql_select(P.records.c.record, P.records.c.rollback)
                                     .join(P.rollbacks, P.rollbacks.c.id == P.records.c.rollback)
                                     .where(P.records.c.record.in_(cids[i:i + _CHUNK]),
                                            P.rollbacks.c.status.notin_(("denied", "expired", "cancelled")))
                                     .order_by(P.records.c.seq)):
                taken.setdefault(rec, rb)
        # an open rollback the clock expired (not authorized in its window or by its deadline) covers
        # nothing: its executions are planned again, as ``request_rollback`` plans one again (its
        # expiry recorded first; a dry run records nothing and plans as if it were)
        gone = _lapsed_open(rt, c, eng, set(taken.values()), now_dt) if taken else set()
        # and one classified under another policy version, still pending, is withdrawn by the new
        # request (``request_rollback``'s ``_supersedes``: no approval can count for it now)
        stale = (_superseded(rt, c, eng, {k: v for k, v in taken.items() if v not in gone}, now_dt)
                 if taken and supersede else {})
        lapsed = sorted(gone) if not dry_run else []
        withdraw = dict(stale) if not dry_run else {}
        gone = gone | set(stale)
        if not lapsed and not withdraw:
            taken = {k: v for k, v in taken.items() if v not in gone}
            roots_all = [x for x in chosen if x.id not in taken]
            elsewhere: dict[str, list] = {}
            trees, owner = _graphs(c, eng, roots_all, known, elsewhere, gone)
            # a cascade record whose covering rollback the clock expired is covered by nothing: it
            # is followed (that expiry recorded first, then planned again; a dry run plans as if)
            while True:
                holders = {it["rollback"] for items in elsewhere.values() for it in items} - gone
                more = _lapsed_open(rt, c, eng, holders, now_dt) if holders else set()
                if not more:
                    break
                if not dry_run:
                    lapsed = sorted(more)
                    break
                gone |= more
                elsewhere = {}
                trees, owner = _graphs(c, eng, roots_all, known, elsewhere, gone)
    if lapsed or withdraw:
        _withdraw(rt, eng, lapsed, withdraw, requested_by, now_dt)
        return None
    # in the order the executions were recorded (the same list on every run and backend)
    existing = tuple({"execution": x.id, "rollback": taken[x.id]} for x in chosen if x.id in taken)
    stops: dict[Any, Any] = {}
    members: list[tuple[Any, dict, Any]] = []
    refused: list[dict] = []
    covered_by: list[dict] = []
    records = 0
    held: dict[str, str] = {}  #: record -> the original whose plan holds it
    # in the order recorded (a parent before the executions it caused): a selected execution is
    # covered by a plan only when that plan holds it; one below the scenario's cascade depth, or
    # under an original whose plan is refused, is planned on its own (never silently left out)
    for x in roots_all:
        if x.id in held:
            covered_by.append({"execution": x.id, "by": held[x.id]})
            continue
        wf = x.workflow
        if wf not in stops:
            stops[wf] = rt.workflow_status(wf) if wf else None
        st = stops[wf]
        request = {"workflow": wf or "", "scenario": scenario, "requested_by": requested_by, "reason": reason,
                   "requested_at": _ts(now_dt), "original": trees[x.id]}
        plan = eng.classify_rollback(request, now_dt)
        if not plan.authorizable:
            refused.append({"execution": x.id, "reason": "; ".join(e.message for e in plan.errors)
                            or "the plan is not authorizable"})
            continue
        steps = [s.record_id for s in plan.cascade.steps if s.record_id != x.id]
        for r in (x.id, *steps):
            held.setdefault(r, x.id)
        records += 1 + len(steps)
        duties = [x.id, *steps, *(f"compensate:{cp.name}" for cp in plan.compensations),
                  *(f"notify:{n}" for n in plan.notify)]
        body = {"plan_hash": plan.plan_hash, "scenario": scenario, "requested_by": requested_by, "reason": reason,
                "plan": plan.model_dump(mode="json"), "route": plan.route, "original": x.id, "cascade": steps,
                "duties": list(dict.fromkeys(duties)), "undeclared": _undeclared(plan),
                "trigger": trigger or (st["stopped_by"] if st and st["status"] == "stopped" else None),
                "requested_at": _ts(now_dt), "pending_until": _ts_after(now_dt, rt.rollback_ttl)}
        members.append((x, body, plan))
    covered = tuple(covered_by)
    # the links a tree did not follow because another open rollback covers them, each on the plan
    # that holds its parent (else, as before, on its tree's topmost original); the undeclared
    # ones are each plan's own (``cascade.undeclared``, set above)
    mine = {m[0].id: m[1] for m in members}
    for top, items in elsewhere.items():
        for it in items:
            o = held.get(it["parent"], top)
            if o in mine:
                mine[o].setdefault("covered", []).append(it)
    same = {"scenario": scenario, "select": select, "requested_by": requested_by, "reason": reason,
            "since": bounds.get("since"), "until": bounds.get("until"), "trigger": trigger}
    if not members:
        return _retried(rt, RollbackBatch(None, "", scenario, select, (), (), len(chosen), covered, existing,
                                          tuple(refused), tuple(errors), 0), same, dry_run)
    if dry_run:  # the plan as it would be recorded now (nothing is written)
        return RollbackBatch(None, _batch_hash(scenario, select, [(m[0].id, m[2].plan_hash) for m in members]),
                             scenario, select, (), tuple(m[0].id for m in members), len(chosen), covered, existing,
                             tuple(refused), tuple(errors), records)
    out: dict[str, Any] = {}

    def build(c):
        keep = members
        ids = [m[0].id for m in members]
        late: dict[str, str] = {}
        for i in range(0, len(ids), _CHUNK):  # covered by a rollback recorded since we read
            for rec, rb in c.execute(
                    sql_select(P.records.c.record, P.records.c.rollback)
                    .join(P.rollbacks, P.rollbacks.c.id == P.records.c.rollback)
                    .where(P.records.c.record.in_(ids[i:i + _CHUNK]),
                           P.rollbacks.c.status.notin_(("denied", "expired", "cancelled")))
                    .order_by(P.records.c.seq)):
                late.setdefault(rec, rb)
        out["late"] = late
        if late:
            keep = [m for m in members if m[0].id not in late]
        cascade = [r for m in keep for r in m[1]["cascade"]]
        for i in range(0, len(cascade), _CHUNK):  # a cascade record covered since we read: plan again
            if c.execute(_OPEN_RECORDS.where(P.records.c.record.in_(cascade[i:i + _CHUNK])).limit(1)).first():
                out["again"] = True
                return []
        out["keep"] = keep
        if not keep:
            return []
        bh = _batch_hash(scenario, select, [(m[0].id, m[2].plan_hash) for m in keep])
        out["hash"] = bh
        head = {"batch_hash": bh, "scenario": scenario, "select": select, "requested_by": requested_by,
                "reason": reason, "requested_at": _ts(now_dt), "since": bounds.get("since"),
                "until": bounds.get("until"), "originals": len(keep),
                "records": sum(1 + len(m[1]["cascade"]) for m in keep),
                "selected": len(chosen), "trigger": trigger}
        items = [NewEntry("batch", head, time=now_dt)]
        for x, body, _ in keep:
            items.append(NewEntry("rollback", {**body, "batch_hash": bh}, workflow=x.workflow, links=[x.id, 0],
                                  time=now_dt))
        return items

    entries = rt.transact(build)
    if out.get("again"):
        return None
    # an original another request covered since the read is listed with that rollback, not dropped
    existing += tuple({"execution": i, "rollback": rb} for i, rb in out.get("late", {}).items())
    if not entries:
        return _retried(rt, RollbackBatch(None, "", scenario, select, (), (), len(chosen), covered, existing,
                                          tuple(refused), tuple(errors), 0), same, dry_run)
    keep = out["keep"]
    return RollbackBatch(entries[0].id, out["hash"], scenario, select, tuple(e.id for e in entries[1:]),
                         tuple(m[0].id for m in keep), len(chosen), covered, existing, tuple(refused), tuple(errors),
                         sum(1 + len(m[1]["cascade"]) for m in keep))


def _retried(rt: Any, b: RollbackBatch, same: dict, dry_run: bool) -> RollbackBatch:
    """``b`` (nothing to plan), or, when it is the retry of a request whose answer was lost, the
    batch that request recorded (``existing_batch``; nothing is recorded now): the latest batch
    recorded with the same head (``same``: scenario, select, requester, reason, window,
    trigger) every plan of which is open and covers one of the executions selected now (in
    ``existing``), each of its originals selected. Its plans' originals and the selected
    records inside their cascades are answered as when it was recorded (``originals``,
    ``covered``), ``existing`` keeps the other rollbacks. A dry run names no batch."""
    if dry_run or not b.existing or b.errors:
        return b
    taken = {e["rollback"] for e in b.existing}
    chosen = {e["execution"] for e in b.existing}
    RB, BE = E.alias("member_rollback"), E.alias("member_batch")
    seqs: set[int] = set()
    with rt.ledger.reading() as c:
        rbs = sorted(taken)
        for i in range(0, len(rbs), _CHUNK):
            seqs.update(c.execute(sql_select(BE.c.seq).select_from(
                L.join(RB, RB.c.seq == L.c.from_seq).join(BE, BE.c.seq == L.c.to_seq))
                .where(RB.c.id.in_(rbs[i:i + _CHUNK]), RB.c.kind == "rollback", BE.c.kind == "batch")).scalars())
        for seq in sorted(seqs, reverse=True):
            batch = rt.ledger.fetch(c, E.c.seq == seq)[0]
            if any(batch.body.get(k) != v for k, v in same.items()):
                continue
            members = _members(rt, c, batch)
            orig = {m.id: m.body.get("original") for m in members}
            if members and all(m.id in taken and orig[m.id] in chosen for m in members):
                break
        else:
            return b
    covered = tuple({"execution": e["execution"], "by": orig[e["rollback"]]} for e in b.existing
                    if e["rollback"] in orig and e["execution"] != orig[e["rollback"]])
    return RollbackBatch(batch.id, batch.body["batch_hash"], b.scenario, b.select, tuple(m.id for m in members),
                         tuple(orig[m.id] for m in members), b.selected, b.covered + covered,
                         tuple(e for e in b.existing if e["rollback"] not in orig), b.refused, b.errors,
                         int(batch.body.get("records") or 0), existing_batch=True)


def _members(rt: Any, c: Any, batch: Any) -> list:
    return rt.ledger.fetch(c, E.c.kind == "rollback",
                           E.c.seq.in_(sql_select(L.c.from_seq).where(L.c.to_seq == batch.seq)))


def _batch(rt: Any, c: Any, batch_id: str) -> Any:
    if not isinstance(batch_id, str) or not batch_id:
        raise RuntimeUsageError(f"a batch id is a non-empty string, not {_shown(batch_id)}")
    if not _unicode(batch_id):  # no entry has such an id (the database could not even be asked)
        raise RuntimeUsageError(f"no entry {_shown(batch_id)} in the ledger")
    found = rt.ledger.fetch(c, E.c.id == batch_id)
    if not found:
        raise RuntimeUsageError(f"no entry `{batch_id}` in the ledger")
    if found[0].kind != "batch":
        raise RuntimeUsageError(f"entry `{batch_id}` is a `{found[0].kind}`, not a `batch`")
    return found[0]
