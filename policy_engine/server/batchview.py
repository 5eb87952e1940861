"""Reads for the reviewer's batch pages (``/ui`` and ``/ui/batches/{id}``), built from public
``Ledger`` and ``Runtime`` calls: ``Runtime.queue`` (the open plans, cached by the log's
size), ``Runtime.batch_status`` (done, partial, remaining), ``Runtime.authorization`` (one
plan's slots), and indexed reads through ``Ledger.reading``/``Ledger.fetch`` over the
ledger's ``entries`` and ``links`` tables (a batch's plans are the rollback entries that
link to the batch entry).

A batch page reads one page of plans (``PAGE`` rows by ``LIMIT``/``OFFSET`` over their
sequence numbers), never the whole batch: a batch of 10,000 plans renders one page's
bodies plus the counts.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

PAGE = 50  #: plans per batch page
_CHUNK = 500  #: ids per IN (...)


def _tables() -> tuple[Any, Any]:
    from ..ledger import schema

    return schema.entries, schema.links


def batch_entry(rt: Any, batch_id: str) -> Any | None:
    """The batch entry, or None when ``batch_id`` is no batch."""
    E, _ = _tables()
    with rt.ledger.reading() as c:
        found = rt.ledger.fetch(c, E.c.id == batch_id)
    return found[0] if found and found[0].kind == "batch" else None


def open_batches(rt: Any, items: list) -> tuple[list[dict], set[str]]:
    """The batches with at least one open plan (``items``: ``Runtime.queue()``), pending
    first, then oldest first, each with its counts and routes; and the ids of the open
    plans that belong to a batch (shown in their batch, not one by one)."""
    E, L = _tables()
    by_id = {i.rollback_id: i for i in items}
    if not by_id:
        return [], set()
    R, B = E.alias("r"), E.alias("b")
    member: dict[str, str] = {}  # open rollback id -> batch id
    ids = list(by_id)
    with rt.ledger.reading() as c:
        for i in range(0, len(ids), _CHUNK):
            q = (select(R.c.id, B.c.id).select_from(L.join(R, R.c.seq == L.c.from_seq).join(B, B.c.seq == L.c.to_seq))
                 .where(R.c.id.in_(ids[i:i + _CHUNK]), R.c.kind == "rollback", B.c.kind == "batch"))
            member.update({r[0]: r[1] for r in c.execute(q)})
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
        st = rt.batch_status(bid)
        deadlines = [i.deadline for i in its if i.deadline]
        routes: dict[str, int] = {}
        for i in its:
            routes[i.route or "(no route)"] = routes.get(i.route or "(no route)", 0) + 1
        pending = sum(1 for i in its if i.status == "pending")
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


def why_not(rt: Any, batch: Any, principal: str) -> str | None:
    """Why ``principal``'s approval does not count on the batch's first plan (the engine's reason)."""
    with rt.ledger.reading() as c:
        first = _first(c, batch)
    if first is None:
        return None
    v = rt.authorization(first).verdict
    for r in (v.rejected if v is not None else ()):
        if r.principal == principal:
            return str(r.reason)
    return None


def batch_page(rt: Any, batch: Any, page: int, items: list) -> dict:
    """One page of a batch's plans (oldest first) with each plan's status, and the batch's
    counts, approvals and the slots of its first plan."""
    E, L = _tables()
    st = rt.batch_status(batch.id)
    total = st["rollbacks"]
    pages = max(1, -(-total // PAGE))
    page = min(max(1, page), pages)
    members = E.c.seq.in_(select(L.c.from_seq).where(L.c.to_seq == batch.seq))
    with rt.ledger.reading() as c:
        seqs = [r[0] for r in c.execute(select(E.c.seq).where(E.c.kind == "rollback", members).order_by(E.c.seq)
                                        .limit(PAGE).offset((page - 1) * PAGE))]
        rows = rt.ledger.fetch(c, E.c.seq.in_(seqs)) if seqs else []
        first_id = _first(c, batch)
    open_status = {i.rollback_id: i for i in items}
    plans = []
    for m in rows:
        plan = m.body.get("plan") or {}
        q = open_status.get(m.id)
        status = q.status if q is not None else rt.authorization(m.id).status
        steps = (plan.get("cascade") or {}).get("steps") or ()
        plans.append({"id": m.id, "original": m.body.get("original"), "type": plan.get("original_type"),
                      "workflow": plan.get("workflow") or m.workflow, "executed_at": plan.get("executed_at"),
                      "feasibility": (plan.get("feasibility") or {}).get("status"),
                      "reasons": (plan.get("feasibility") or {}).get("reasons") or (),
                      "cascade": len(steps), "window": plan.get("window"),
                      "until": plan.get("reversible_until"), "route": m.body.get("route"), "status": status,
                      "past_window": bool(q.past_window) if q is not None else False})
    slots = rt.authorization(first_id) if first_id is not None else None
    approvals = [a.body for a in rt.ledger.entries(kind="approval", link=batch.id)]
    return {"state": st, "plans": plans, "page": page, "pages": pages, "total": total, "page_size": PAGE,
            "first": first_id, "auth": slots, "approvals": approvals}
