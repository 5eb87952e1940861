"""A batch of rollbacks after it is recorded (``bulk`` plans and records it): one approval of
the whole batch bound to its digest (``approve_batch``), where it stands (``batch_status``,
``batch_counts``) and its steps per record (``batch_step``); and ``BulkRollbacks``, the batch
methods of ``Runtime``. See :mod:`.bulk` for the batch itself."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_ as sql_and
from sqlalchemy import case, func, literal_column
from sqlalchemy import or_ as sql_or
from sqlalchemy import select as sql_select
from sqlalchemy import update as sql_update

from ..engine.digests import plan_matches_hash
from ..ledger import NewEntry
from ..ledger import schema as lschema
from ..ledger.canonical import canonical_text, parse_body
from . import projections as P
from .bulk import _CHUNK, _SEQS, _batch, _members, request_bulk_rollback
from .core import clock_expiry, may_expire_by_clock
from .results import TERMINAL, RuntimeUsageError, _free_text, _now, _shown, _text_arg, _ts, _ts_after

__all__ = ["BulkRollbacks", "approve_batch", "batch_status", "batch_counts", "batch_step", "attach"]

E, L = lschema.entries, lschema.links
#: a plan's statuses as the counts sum them: ``done`` (rolled back), ``closed`` (ended before any
#: authorized step: nothing of it will be rolled back unless requested again), and ``remaining``
#: the rest (pending, approved, in progress, partial); so ``rollbacks == done + closed + remaining``
DONE = ("completed", "verified")
CLOSED = ("denied", "cancelled", "expired")


def approve_batch(rt: Any, batch_id: str, *, principal: str, roles: Iterable[str] = (), batch_hash: str,
                  verdict: str = "approve", now: Any = None, expires_in: timedelta | None = None,
                  note: str | None = None) -> dict:
    """One approval (or deny) of a whole batch, bound to its ``batch_hash``: recorded as the
    batch's approval and one approval per open plan, each counted only where the engine
    would count this principal for that plan. A hash that is not the batch's is refused.
    An approval lapses ``expires_in`` after ``now`` (default: the runtime's ``approval_ttl``),
    as ``Runtime.approve``'s does.

    In bulk: the plans' statuses come from the projection in one query and the plans that
    already have approvals, transitions or steps from one query of the links; a plan with
    none of them (the usual case in a fresh batch) is judged with this one approval by the
    engine as ``Runtime.authorization`` would, the others through ``subject_status`` as
    one by one. Every entry is written in one insert and the projection by one ``UPDATE``
    per resulting status (per 500 plans), all in the one transaction."""
    if verdict not in ("approve", "deny"):
        raise RuntimeUsageError(f"`verdict` is `approve` or `deny`, not {verdict!r}")
    _text_arg(principal, "principal")
    _text_arg(batch_hash, "batch_hash", max_len=None)
    if expires_in is not None and (not isinstance(expires_in, timedelta) or expires_in < timedelta(0)):
        raise RuntimeUsageError("`expires_in` is a duration (a timedelta) of 0 or more, or None; "
                                f"not {_shown(expires_in)}")
    _free_text(note, "note", optional=True)
    from .approvals import _roles

    roles = _roles(roles)
    eng, now_dt = rt.engine, _now(now)
    out: dict[str, Any] = {}
    R = P.rollbacks

    def build(c):
        b = _batch(rt, c, batch_id)
        if batch_hash != b.body["batch_hash"]:
            raise RuntimeUsageError(f"batch {batch_id} has digest {b.body['batch_hash']}, not {batch_hash}: an "
                                    "approval binds to the batch it was shown")
        at = _ts(now_dt)
        exp = _ts_after(now_dt, rt.approval_ttl if expires_in is None else expires_in) if verdict == "approve" \
            else None
        head = {"subject": batch_id, "digest": batch_hash, "principal": principal, "roles": roles,
                "verdict": verdict, "at": at, "subject_kind": "batch", "policy_hash": eng.policy_hash}
        if exp:
            head["expires_at"] = exp
        if note:
            head["note"] = note
        items = [NewEntry("approval", head, links=[batch_id], time=now_dt)]
        counted, skipped, closed = 0, [], 0
        statuses: dict[str, Any] = {}
        members = sql_select(L.c.from_seq).where(L.c.to_seq == b.seq)
        rows = c.execute(sql_select(E.c.seq, E.c.id, R.c.status, R.c.expires_at)
                         .select_from(E.outerjoin(R, R.c.id == E.c.id))
                         .where(E.c.kind == "rollback", E.c.seq.in_(members)).order_by(E.c.seq)).all()
        Lk, Ek = L.alias("lk"), E.alias("ek")  # plans with history: judged one by one, as before
        busy = {r[0] for r in c.execute(
            sql_select(Lk.c.to_seq).distinct().select_from(Lk.join(Ek, Ek.c.seq == Lk.c.from_seq))
            .where(Lk.c.to_seq.in_(members), Ek.c.kind.in_(("approval", "transition", "execution", "step"))))}
        open_seqs: list[int] = []
        for seq, rid, st, until in rows:
            st = st or "pending"
            if seq not in busy and st == "pending" and until is not None and until <= at:
                st = "expired"  # past pending_until, no approval yet: as subject_status says
            if seq not in busy and st != "pending":
                skipped.append({"rollback": rid, "status": st})
            else:
                open_seqs.append(seq)
        plans: list = []
        windows: dict = {}  #: (workflow, type) -> whether its reversal window is recomputed at now
        judged: dict = {}  #: a plan's shape (_shape) -> the engine's answer for it
        fresh = [q for q in open_seqs if q not in busy]
        for i in range(0, len(fresh), _SEQS):  # the fresh plans: their bodies alone, each parsed once
            plans += [_Plan(r[0], r[1], r[2], _decode(r[3]), r[3]) for r in c.execute(
                sql_select(E.c.seq, E.c.id, E.c.workflow, E.c.body).where(E.c.seq.in_(fresh[i:i + _SEQS])))]
        held = [q for q in open_seqs if q in busy]
        for i in range(0, len(held), _SEQS):  # with history: whole entries, for subject_status
            plans += rt.ledger.fetch(c, E.c.seq.in_(held[i:i + _SEQS]))
        plans.sort(key=lambda m: m.seq)
        for m in plans:
            body = {"subject": m.id, "digest": m.body["plan_hash"], "principal": principal, "roles": roles,
                    "verdict": verdict, "at": at, "subject_kind": "rollback", "policy_hash": eng.policy_hash,
                    "batch": batch_id, "batch_hash": batch_hash}
            if exp:
                body["expires_at"] = exp
            # classified under another policy version than the one deciding: no approval counts
            # (skipped, as ``Runtime.approve`` refuses it); a deny by a principal holding a role
            # closes it (cancelled, under every version: ``Runtime.approve``)
            ph = (m.body.get("plan") or {}).get("policy_hash") if isinstance(m.body.get("plan"), dict) else None
            other_version = isinstance(ph, str) and ph != eng.policy_hash
            stale = verdict == "approve" and other_version
            if verdict == "deny" and other_version:
                if m.seq in busy:
                    before = rt.subject_status(c, m, now=now_dt, engine=eng)
                    if before.status in TERMINAL or before.status in ("in_progress", "partial", "completed"):
                        skipped.append({"rollback": m.id, "status": before.status})
                        continue
                body["counted"] = bool(roles)  # (no `status_after`: judged under no version of its own)
                items.append(NewEntry("approval", body, workflow=m.workflow, links=[m.id, 0], time=now_dt))
                if roles:
                    items.append(NewEntry("transition", {
                        "subject": m.id, "to": "cancelled", "principal": principal, "at": at,
                        "reason": f"denied by {principal} while it was classified under policy {ph}, not the "
                                  f"version deciding now ({eng.policy_hash}): a deny closes it under every version"},
                        workflow=m.workflow, links=[m.id], time=now_dt))
                    closed += 1
                    counted += 1
                    statuses["cancelled"] = statuses.get("cancelled", 0) + 1
                    cancel.append(m.id)
                continue
            if m.seq in busy:
                before = rt.subject_status(c, m, now=now_dt, engine=eng)
                if before.status in TERMINAL or before.status in ("in_progress", "partial", "completed"):
                    skipped.append({"rollback": m.id, "status": before.status})
                    continue
                if stale and before.stale:
                    skipped.append({"rollback": m.id, "status": before.status, "stale": True})
                    continue
                body["digest"] = before.digest
                after = rt.subject_status(c, m, now=now_dt, extra=[body], engine=eng)
                ok = (principal in after.denied_by) if verdict == "deny" else principal in after.verdict.accepted
                status_after = after.status
            elif (clock_expiry(m.body.get("plan"), m.body.get("pending_until"), now_dt) is not None
                  and not _judge_fresh(eng, m.body.get("plan"), None, now_dt)[1] == "approved"):
                # not authorized and its standard reversal window ended (or its deadline passed):
                # expired by the clock, as ``subject_status`` says; no approval counts for it
                skipped.append({"rollback": m.id, "status": "expired"})
                continue
            elif stale:
                skipped.append({"rollback": m.id, "status": "pending", "stale": True})
                continue
            else:
                k = _shape(eng, m, windows)
                if k is None or k not in judged:
                    judged_now = _judge_fresh(eng, m.body.get("plan"), body, now_dt)
                    if k is not None:
                        judged[k] = judged_now
                ok, status_after = judged[k] if k is not None else judged_now
            body["counted"], body["status_after"] = ok, status_after
            until = None
            if status_after == "approved":  # when its approvals stop authorizing it (each expires)
                # a fresh plan has this approval alone: it lapses when this one expires
                until = rt._approved_until(c, eng, m, now_dt, [body]) if m.seq in busy else exp
                if until is not None:
                    body["approved_until"] = until
            counted += ok
            statuses[status_after] = statuses.get(status_after, 0) + 1
            items.append(NewEntry("approval", body, workflow=m.workflow, links=[m.id, 0], time=now_dt))
            project.setdefault((status_after, until), []).append(m.id)
        out.update(counted=counted, skipped=skipped, statuses=statuses, recorded=len(items) - 1 - closed)
        return items

    #: (status after, approved until) -> the plans that approval leaves in it
    project: dict[tuple[str, str | None], list[str]] = {}
    cancel: list[str] = []  #: the stale plans a deny closed (their `cancelled` transition, as P.apply folds it)

    def after(c: Any, new: list) -> None:  # projections.apply of these entries, in bulk
        if new:
            P.apply(c, new[0])  # the batch's approval (it changes no projection row)
        for (to, until), ids in project.items():
            for i in range(0, len(ids), _CHUNK):
                c.execute(sql_update(P.rollbacks).where(P.rollbacks.c.id.in_(ids[i:i + _CHUNK]))
                          .values(status=to, open=0 if to in P.CLOSED else 1, lapses_at=P._norm(until)))
        for i in range(0, len(cancel), _CHUNK):
            c.execute(sql_update(P.rollbacks).where(P.rollbacks.c.id.in_(cancel[i:i + _CHUNK]))
                      .values(status="cancelled", open=0))

    def current(c: Any) -> Any:  # what was appended beside the runtime first (Runtime._transact)
        P.catch_up(c, rt.ledger.fetch)
        return build(c)

    entries = rt.ledger.transact(current, after=after, projected=True)
    return {"batch_id": batch_id, "approval_id": entries[0].id, "verdict": verdict, "plans": out["recorded"],
            "counted": out["counted"], "not_counted": out["recorded"] - out["counted"], "skipped": out["skipped"],
            "statuses": out["statuses"]}


@dataclass(frozen=True, slots=True)
class _Plan:
    """A rollback entry as approve_batch reads a fresh plan (no links, no hash)."""

    seq: int
    id: str
    workflow: str | None
    body: dict
    body_json: str


_decode = parse_body  #: a stored body, as every reader reads it (a double written in integer digits: a double)

_MEMO_MAX_CHARS = 100_000  #: a plan body longer than this is judged on its own (the engine's input limits)


def _shape(eng: Any, m: Any, memo: dict) -> Any:
    """What the engine's answer to one approval of plan entry ``m`` depends on besides the
    approval and ``now`` (``Engine.authorize_rollback``: the policy, the plan's workflow,
    scenario, original type, recorded and current reversal window, authorization
    requirement with its resolved ``distinct from`` principals, policy hash and
    authorizability), or None when the plan must be judged on its own: its content does
    not hash to its ``plan_hash`` (the engine would say so), or it is large enough that
    the engine's input limits might refuse it. The approval names the plan's own hash, so
    the hash matches for every plan of a shape."""
    plan = m.body.get("plan")
    if not isinstance(plan, dict) or len(m.body_json) > _MEMO_MAX_CHARS \
            or not plan_matches_hash(plan, plan.get("plan_hash")) or m.body.get("plan_hash") != plan.get("plan_hash"):
        return None
    wf, ot = plan.get("workflow"), plan.get("original_type")
    if (wf, ot) not in memo:
        try:
            ca = eng.compiled.workflows[wf].actions[ot]
            memo[(wf, ot)] = ca.window_seconds is not None and ca.klass != "irreversible"
        except Exception:  # noqa: BLE001  (unknown here: the execution time is part of the shape)
            memo[(wf, ot)] = True
    when = plan.get("executed_at") if memo[(wf, ot)] else None  # the window is recomputed from it at now
    return (wf, plan.get("scenario"), ot, plan.get("window"), when, plan.get("policy_hash"), plan.get("authorizable"),
            canonical_text(plan.get("authorization")))


def _judge_fresh(eng: Any, plan: Any, body: dict | None, now_dt: Any) -> tuple[bool, str]:
    """``(counted, status after)`` of a pending plan with no approval, transition or step yet,
    given the one approval ``body``: what ``subject_status`` computes for it (its approvals
    are this one alone; not past its ``pending_until``, which the caller checked)."""
    if body is None:  # no approval: whether the plan is authorized as it stands
        return False, "approved" if eng.authorize_rollback(plan, [], now_dt).satisfied else "pending"
    fields = ("principal", "roles", "at", "expires_at", "policy_hash")
    if body["verdict"] == "approve":
        app = {**{k: body[k] for k in fields if body.get(k) is not None}, "plan_hash": body["digest"]}
        v = eng.authorize_rollback(plan, [app], now_dt)
        return body["principal"] in v.accepted, "approved" if v.satisfied else "pending"
    one = eng.authorize_rollback(plan, [{"principal": body["principal"], "roles": body.get("roles", []),
                                         "plan_hash": body["digest"], "policy_hash": body["policy_hash"]}], now_dt)
    if body["principal"] in one.accepted:
        return True, "denied"
    return False, "approved" if eng.authorize_rollback(plan, [], now_dt).satisfied else "pending"


def batch_status(rt: Any, batch_id: str, *, now: Any = None) -> dict:
    """Where a batch stands: ``batch_counts`` (its plans by status; done, closed, remaining,
    partial) and the duties of every plan: their total, done (the latest step completed or
    verified), failed and remaining.

    Read without parsing the plans: the statuses with ``batch_counts``' ``GROUP BY`` over
    the projection, the duties' total by the database's JSON functions, the batch's step
    entries (one query) and the duties of the plans that have steps."""
    counts = batch_counts(rt, batch_id, now=now)
    with rt.ledger.reading() as c:
        b = _batch(rt, c, batch_id)
        members = sql_select(L.c.from_seq).where(L.c.to_seq == b.seq)
        total = c.execute(sql_select(func.coalesce(func.sum(_json_duties(c, count=True)), 0))
                          .where(E.c.kind == "rollback", E.c.seq.in_(members))).scalar()
        latest: dict[tuple[str, str], str] = {}
        for s in rt.ledger.fetch(c, E.c.kind == "step",
                                 E.c.seq.in_(sql_select(L.c.from_seq).where(L.c.to_seq.in_(members)))):
            if not isinstance(s.body["record"], str):  # (another recorder's step: names no duty, which is text)
                continue
            k = (s.links[0], s.body["record"])
            if s.body["status"] == "verified" or latest.get(k) != "verified":
                latest[k] = s.body["status"]
        stepped = sorted({k[0] for k in latest})
        duties_of: dict[str, set] = {}
        for i in range(0, len(stepped), _CHUNK):
            for rid, ds in c.execute(sql_select(E.c.id, _json_duties(c, count=False))
                                     .where(E.c.kind == "rollback", E.c.seq.in_(members),
                                            E.c.id.in_(stepped[i:i + _CHUNK]))):
                ds = parse_body(ds) if isinstance(ds, str) else ds
                duties_of[rid] = set(ds) if isinstance(ds, list) else set()
    # a step counts for a duty of its plan (Runtime.step records no other; as before, others are not counted)
    states = [st for (rid, rec), st in latest.items() if rec in duties_of.get(rid, ())]
    done = sum(1 for st in states if st in ("completed", "verified"))
    failed = sum(1 for st in states if st == "failed")
    total = int(total or 0)
    return {**counts, "duties": {"total": total, "done": done, "failed": failed, "remaining": total - done}}


def _json_duties(c: Any, *, count: bool) -> Any:
    """A plan entry's ``duties`` (a JSON array, or its length) read by the database from the body text."""
    if c.dialect.name == "postgresql":
        x = f"(CAST({E.name}.body AS json) -> 'duties')"
        return literal_column(f"(CASE WHEN json_typeof({x}) = 'array' THEN json_array_length({x}) ELSE 0 END)"
                              if count else x)
    return func.json_array_length(E.c.body, "$.duties") if count else func.json_extract(E.c.body, "$.duties")


def batch_counts(rt: Any, batch_id: str, *, now: Any = None) -> dict:
    """``batch_status`` without the per-record duties: the batch's plans by status, done
    (completed or verified), closed (denied, cancelled or expired: ended before any
    authorized step, nothing of it will be rolled back), remaining (the rest: pending, approved, in progress,
    partial) and partial (a step failed; part of remaining), each plan counted under the
    status ``Runtime.authorization`` gives it at ``now``: ``rollbacks == done + closed +
    remaining``.

    One ``GROUP BY`` over the projection (no plan body read), which also sets apart the
    pending rows that may be expired by the clock (past their ``pending_until``, or past a
    standard plan's reversal window: :func:`~.core.may_expire_by_clock`, the rows the
    sweeper and ``Runtime.queue`` consider). Only when there are some are those rows' plans
    read and judged as ``authorization`` judges them (the queue's ``_expired_by_clock``:
    ``_subject_status``, :func:`~.core.clock_expiry` on the verdict at ``now``): ``expired``
    (not yet recorded) unless authorized in time, else ``pending``."""
    R = P.rollbacks
    now_dt = _now(now)
    now_s = _ts(now_dt)
    eng = rt.engine if rt._policies is not None else None  # (a read-only runtime: the recorded status judges)
    # an approved plan whose approvals lapsed (each expired) is pending again (``lapses_at``), and
    # so is one classified under another policy version than the one deciding (``policy_hash``)
    again = R.c.lapses_at <= now_s
    if eng is not None:
        again = sql_or(again, R.c.policy_hash != eng.policy_hash)
    raw = case((sql_and(R.c.status == "approved", again), "pending"),
               else_=func.coalesce(R.c.status, "pending"))
    # the sweeper's prefilter (Runtime.expire); may_expire_by_clock then decides per row
    may = sql_and(raw == "pending", sql_or(R.c.expires_at <= now_s, R.c.deadline < now_s))
    st, flag = raw.label("st"), case((may, 1), else_=0).label("may")
    with rt.ledger.reading() as c:
        b = _batch(rt, c, batch_id)
        members = sql_select(L.c.from_seq).where(L.c.to_seq == b.seq)
        joined = E.outerjoin(R, R.c.id == E.c.id)
        q = (sql_select(st, flag, func.count()).select_from(joined)
             .where(E.c.kind == "rollback", E.c.seq.in_(members)).group_by(st, flag))
        by: dict[str, int] = {}
        maybe = 0
        for s, f, n in c.execute(q):
            if f:
                maybe += int(n)
            else:
                by[str(s)] = by.get(str(s), 0) + int(n)
        if maybe:
            rows = c.execute(sql_select(R.c.id, R.c.status, R.c.deadline, R.c.expires_at, R.c.requested_at)
                             .select_from(joined).where(E.c.kind == "rollback", E.c.seq.in_(members), may)).all()
            judge = [r[0] for r in rows if may_expire_by_clock("pending", r[2], r[3], r[4], now_s)]
            expired: set[str] = set()
            if judge:
                size = c.execute(sql_select(lschema.heads.c.size).where(lschema.heads.c.log == lschema.LOG)).scalar()
                expired, _lasting = rt._expired_by_clock(c, int(size or 0), judge, now_dt, now_s, eng)
            n_expired = len(expired.intersection(judge))
            for s, n in (("expired", n_expired), ("pending", maybe - n_expired)):
                if n:
                    by[s] = by.get(s, 0) + n
    total = sum(by.values())
    done = sum(by.get(s, 0) for s in DONE)
    closed = sum(by.get(s, 0) for s in CLOSED)
    return {"batch_id": batch_id, "batch_hash": b.body["batch_hash"], "scenario": b.body["scenario"],
            "select": b.body.get("select"), "rollbacks": total, "by_status": dict(sorted(by.items())),
            "done": done, "closed": closed, "partial": by.get("partial", 0), "remaining": total - done - closed}


def batch_step(rt: Any, batch_id: str, duty: str, status: str, *, key: str | None = None, now: Any = None,
               detail: dict | None = None, reporter: str | None = None) -> Any:
    """Report one step of the batch: the plan whose duties name ``duty`` gets it
    (``Runtime.step``); a duty of several plans (a compensation) names the plan:
    ``ROLLBACK_ID/compensate:NAME``."""
    _text_arg(duty, "duty", max_len=None)
    with rt.ledger.reading() as c:
        ms = _members(rt, c, _batch(rt, c, batch_id))
    if "/" in duty and any(duty.startswith(m.id + "/") for m in ms):
        rb, _, d = duty.partition("/")
        return rt.step(rb, d, status, key=key, now=now, detail=detail, reporter=reporter)
    hits = [m.id for m in ms if duty in (m.body.get("duties") or ())]
    if not hits:
        raise RuntimeUsageError(f"`{duty}` is not a duty of any plan of batch {batch_id}")
    if len(hits) > 1:
        raise RuntimeUsageError(f"`{duty}` is a duty of {len(hits)} plans of batch {batch_id}: name one as "
                                f"`{hits[0]}/{duty}`")
    return rt.step(hits[0], duty, status, key=key, now=now, detail=detail, reporter=reporter)


class BulkRollbacks:
    """The batch methods of ``Runtime`` (a base of it: runtime.py imports this module, never the
    other way round). Each is the module function of the same name, ``self`` as ``rt``."""

    request_bulk_rollback = request_bulk_rollback
    approve_batch = approve_batch
    batch_status = batch_status
    batch_counts = batch_counts
    batch_step = batch_step


def attach(cls: Any) -> None:
    """Give another class the batch methods (``Runtime`` has them as a base: :class:`BulkRollbacks`)."""
    cls.request_bulk_rollback = request_bulk_rollback
    cls.approve_batch = approve_batch
    cls.batch_status = batch_status
    cls.batch_counts = batch_counts
    cls.batch_step = batch_step
