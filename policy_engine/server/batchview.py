"""Reads for the reviewer's pages (``/ui``, ``/ui/batches/{id}``, ``/ui/decisions/{id}``), built from public
``Ledger`` and ``Runtime`` calls: ``Runtime.queue`` (the open plans, cached by the log's
size), ``Runtime.authorization`` (one plan's slots), and indexed reads through
``Ledger.reading``/``Ledger.fetch`` over the ledger's ``entries`` and ``links`` tables (a
batch's plans are the rollback entries that link to the batch entry) and the runtime's
``rt_rollbacks`` projection (each plan's status, one row per plan).

The counts are ``Runtime.batch_counts`` (``Runtime.batch_status``'s meaning: done:
completed or verified; closed: denied, cancelled or expired; remaining: the rest, partial
(a step failed) among them; a pending plan past its ``pending_until`` counts as expired;
one ``GROUP BY`` over the projection). A batch page reads one
page of plans (``PAGE`` rows by ``LIMIT``/``OFFSET`` over their sequence numbers), never
the whole batch.

The held gates (``held_gates``: the gate decisions waiting for approval, oldest first, a
page at a time) are ``Runtime.held`` (the runtime's ``rt_pending`` projection);
``originals`` names, for executions, the decision that gated each and who asked for it
(the decision body's ``caller``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, case, func, or_, select

PAGE = 50  #: plans per batch page
_CHUNK = 500  #: ids per IN (...)


def _tables() -> tuple[Any, Any]:
    from ..ledger import schema

    return schema.entries, schema.links


def _statuses(rt: Any, c: Any, now_s: str, ids: list[str]) -> list:
    """(id, status, deadline) of the plans ``ids`` at ``now_s``, as ``Runtime.authorization``
    says (and ``batch_counts`` counts): the projection's status, an approved plan whose
    approvals lapsed pending again, and a pending one its window or deadline passed
    judged as the queue judges it (expired by the clock, not yet recorded)."""
    from ..ledger import schema
    from ..runtime import projections
    from ..runtime.core import may_expire_by_clock
    from ..runtime.results import _parse

    R = projections.rollbacks
    eng = rt.engine if rt._policies is not None else None
    # pending again: approvals lapsed, or classified under another policy version than eng's
    again = R.c.lapses_at <= now_s
    if eng is not None:
        again = or_(again, R.c.policy_hash != eng.policy_hash)
    st = case((and_(R.c.status == "approved", again), "pending"), else_=R.c.status)
    rows = c.execute(select(R.c.id, st, R.c.deadline, R.c.expires_at, R.c.requested_at).where(R.c.id.in_(ids))).all()
    judge = [r[0] for r in rows if r[1] == "pending" and may_expire_by_clock("pending", r[2], r[3], r[4], now_s)]
    expired: set[str] = set()
    if judge:
        size = c.execute(select(schema.heads.c.size).where(schema.heads.c.log == schema.LOG)).scalar()
        expired, _lasting = rt._expired_by_clock(c, int(size or 0), judge, _parse(now_s), now_s, eng)
    return [(r[0], "expired" if r[0] in expired else r[1], r[2]) for r in rows]


def counts(rt: Any, batch: Any, now_s: str) -> dict:
    """A batch's plans by status, and done (completed or verified), closed (denied,
    cancelled or expired), partial, remaining (``Runtime.batch_counts``: one ``GROUP BY``
    over the projection)."""
    st = rt.batch_counts(batch.id, now=now_s)
    return {k: st[k] for k in ("rollbacks", "by_status", "done", "closed", "partial", "remaining")}


def batch_entry(rt: Any, batch_id: str) -> Any | None:
    """The batch entry, or None when ``batch_id`` is no batch."""
    E, _ = _tables()
    with rt.ledger.reading() as c:
        found = rt.ledger.fetch(c, E.c.id == batch_id)
    return found[0] if found and found[0].kind == "batch" else None


def open_batches(rt: Any, items: list, now_s: str) -> tuple[list[dict], set[str]]:
    """The batches with at least one open plan (``items``: ``Runtime.queue()``), pending
    first, then oldest first, each with its counts and routes; and the ids of the open
    plans that belong to a batch (shown in their batch, not one by one)."""
    E, L = _tables()
    by_id = {i.rollback_id: i for i in items}
    if not by_id:
        return [], set()

    from ..runtime import projections

    P, B = projections.rollbacks, E.alias("b")
    member: dict[str, str] = {}  # open rollback id -> batch id
    with rt.ledger.reading() as c:
        q = (select(P.c.id, B.c.id).select_from(P.join(L, L.c.from_seq == P.c.seq).join(B, B.c.seq == L.c.to_seq))
             .where(P.c.open == 1, B.c.kind == "batch"))
        member.update((r, b) for r, b in c.execute(q).all() if r in by_id)
        heads = {}
        bids = sorted(set(member.values()))
        for i in range(0, len(bids), _CHUNK):
            heads.update({e.id: e for e in rt.ledger.fetch(c, E.c.id.in_(bids[i:i + _CHUNK]))})
    groups: dict[str, list] = {}
    for rid, bid in member.items():
        groups.setdefault(bid, []).append(by_id[rid])
    out = []
    for bid, its in groups.items():
        h = heads[bid]
        st = counts(rt, h, now_s)
        deadlines = [i.deadline for i in its if i.deadline]
        routes: dict[str, int] = {}
        for i in its:
            routes[i.route or "(no route)"] = routes.get(i.route or "(no route)", 0) + 1
        pending = sum(1 for i in its if i.status == "pending" and not (i.expires_at and i.expires_at <= now_s))
        out.append({"batch_id": bid, "seq": h.seq, "head": h.body, "status": st, "routes": routes,
                    "pending": pending, "open": len(its), "deadline": min(deadlines) if deadlines else None,
                    "past_window": any(i.past_window for i in its)})
    out.sort(key=lambda b: (b["pending"] == 0, b["seq"]))
    return out, set(member)


def _first(c: Any, batch: Any) -> str | None:
    E, L = _tables()
    q = select(func.min(E.c.seq)).where(E.c.kind == "rollback",
                                        E.c.seq.in_(select(L.c.from_seq).where(L.c.to_seq == batch.seq)))
    first = c.execute(q).scalar()
    return c.execute(select(E.c.id).where(E.c.seq == first)).scalar() if first is not None else None


def why_not(rt: Any, approval_id: str, principal: str) -> str | None:
    """Why ``principal``'s decision on a batch (its batch approval ``approval_id``) does not
    count: the engine's reason on the first plan it was recorded on (not the batch's first
    plan, which may be closed and never have been judged)."""
    recorded = rt.ledger.entries(kind="approval", link=approval_id, limit=1)
    if not recorded:
        return None
    v = rt.authorization(recorded[0].body["subject"]).verdict
    for r in (v.rejected if v is not None else ()):
        if r.principal == principal:
            return str(r.reason)
    return None


def batch_page(rt: Any, batch: Any, page: int, now_s: str) -> dict:
    """One page of a batch's plans (oldest first) with each plan's status, and the batch's
    counts, approvals and the slots of its first plan."""
    E, L = _tables()
    st = counts(rt, batch, now_s)  # (first: ``batch_counts`` folds in what was appended beside the runtime)
    total = st["rollbacks"]
    pages = max(1, -(-total // PAGE))
    page = min(max(1, page), pages)
    members = E.c.seq.in_(select(L.c.from_seq).where(L.c.to_seq == batch.seq))
    with rt.ledger.reading() as c:
        seqs = [r[0] for r in c.execute(select(E.c.seq).where(E.c.kind == "rollback", members).order_by(E.c.seq)
                                        .limit(PAGE).offset((page - 1) * PAGE))]
        rows = rt.ledger.fetch(c, E.c.seq.in_(seqs)) if seqs else []
        first_id = _first(c, batch)
        status_of = {r[0]: (r[1], r[2]) for r in _statuses(rt, c, now_s, [m.id for m in rows])} if rows else {}
        gates = originals(rt, c, [m.body.get("original") for m in rows])
    plans = []
    for m in rows:
        plan = m.body.get("plan") or {}
        status, deadline = status_of.get(m.id, ("unknown", None))
        steps = (plan.get("cascade") or {}).get("steps") or ()
        plans.append({"id": m.id, "original": m.body.get("original"), "gate": gates.get(m.body.get("original")),
                      "type": plan.get("original_type"),
                      "workflow": plan.get("workflow") or m.workflow, "executed_at": plan.get("executed_at"),
                      "feasibility": (plan.get("feasibility") or {}).get("status"),
                      "reasons": (plan.get("feasibility") or {}).get("reasons") or (),
                      "cascade": len(steps), "window": plan.get("window"),
                      "until": plan.get("reversible_until"), "route": m.body.get("route"), "status": status,
                      "past_window": deadline is not None and deadline <= now_s})
    slots = rt.authorization(first_id) if first_id is not None else None
    approvals = [a.body for a in rt.ledger.entries(kind="approval", link=batch.id)]
    return {"state": st, "plans": plans, "page": page, "pages": pages, "total": total, "page_size": PAGE,
            "first": first_id, "auth": slots, "approvals": approvals}


# ---------------------------------------------------------------------------------- held gates
HELD_SHOWN = 100  #: held gates a queue page lists at most (oldest first, ``?held=N``; the count covers all)


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def asked(body: dict) -> dict:
    """What a decision entry's body says of the request: who asked (``caller``: None when
    not recorded), the action as recorded (an object, or the text of one that was not),
    its type, and the gate's decision."""
    action = body.get("action")
    dec = body.get("decision")
    if not isinstance(dec, dict):
        dec = {}
    kind = action.get("type") if isinstance(action, dict) else None
    return {"caller": _text(body.get("caller")), "action": action, "decision": dec,
            "type": _text(kind) or _text(dec.get("action_type")), "error": body.get("action_error")}


def originals(rt: Any, c: Any, ids: list) -> dict[str, dict]:
    """For executions ``ids``: execution id -> {decision, caller, at} (the decision that
    gated it, who asked for it, when the execution was recorded); an execution recorded
    without a decision maps to ``decision: None``. Two indexed fetches."""
    E, _ = _tables()
    want = sorted({i for i in ids if isinstance(i, str)})
    xs = {e.id: e for i in range(0, len(want), _CHUNK) for e in rt.ledger.fetch(c, E.c.id.in_(want[i:i + _CHUNK]))}
    dids = sorted({d for e in xs.values() if isinstance(d := e.body.get("decision"), str)})
    ds = {e.id: e for i in range(0, len(dids), _CHUNK) for e in rt.ledger.fetch(c, E.c.id.in_(dids[i:i + _CHUNK]))}
    out = {}
    for x in xs.values():
        d = ds.get(x.body.get("decision")) if x.kind == "execution" else None
        out[x.id] = {"decision": d.id if d is not None and d.kind == "decision" else None,
                     "caller": _text(d.body.get("caller")) if d is not None else None, "at": x.time}
    return out


def held_gates(rt: Any, page: int, now_s: str) -> dict:
    """One page of the gate decisions waiting for approval (the ``rt_pending`` projection:
    pending, or approved and not yet claimed or used), oldest first, each with who asked,
    its workflow, action type, deciding rule, when it was gated, until when it is held and
    the approvals given so far (who, approve or deny, counted or not), and whether its
    workflow was stopped after it (``Runtime.stopped_after``: it cannot run): ``Runtime.held``
    (the count and the page), one indexed read of their approvals and one of their workflows'
    later stops, whatever the page's size, then ``stopped_after`` for a gate with a stop
    after it only (where each stands now is its own page's ``Runtime.authorization``)."""
    E, L = _tables()
    page = max(1, page)
    total, rows = rt.held(limit=HELD_SHOWN, offset=(page - 1) * HELD_SHOWN)
    pages = max(1, -(-total // HELD_SHOWN))
    if page > pages:  # (a page past the end shows the last)
        page = pages
        total, rows = rt.held(limit=HELD_SHOWN, offset=(page - 1) * HELD_SHOWN)
        pages = max(1, -(-total // HELD_SHOWN))
    seqs = [e.seq for e in rows]
    wfs = sorted({e.workflow for e in rows if e.workflow is not None})
    last_stop: dict[str, int] = {}  # workflow -> its last stop after the page's oldest gate
    with rt.ledger.reading() as c:
        given = rt.ledger.fetch(c, E.c.kind == "approval",
                                E.c.seq.in_(select(L.c.from_seq).where(L.c.to_seq.in_(seqs)))) if seqs else []
        if wfs:
            last_stop.update(c.execute(select(E.c.workflow, func.max(E.c.seq))
                                       .where(E.c.kind == "stop", E.c.workflow.in_(wfs), E.c.seq > seqs[0])
                                       .group_by(E.c.workflow)).all())
    by_subject: dict[str, list] = {}
    for a in given:
        by_subject.setdefault(a.body.get("subject"), []).append(
            {"principal": a.body.get("principal"), "verdict": a.body.get("verdict"), "counted": a.body.get("counted")})
    out = []
    for e in rows:
        a = asked(e.body)
        until = _text(e.body.get("pending_until"))
        out.append({"id": e.id, "workflow": e.workflow, "caller": a["caller"], "type": a["type"],
                    "rule": (a["decision"].get("deciding") or {}).get("name"), "at": _text(e.body.get("now")) or e.time,
                    "until": until, "past": until is not None and until <= now_s,
                    "approvals": by_subject.get(e.id, []),
                    # (its workflow stopped after it: it cannot run; asked only of a gate with a later stop)
                    "stopped": rt.stopped_after(e.id) if last_stop.get(e.workflow or "", -1) > e.seq else None})
    return {"held": out, "held_total": total, "held_page": page, "held_pages": pages}
