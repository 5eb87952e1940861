"""The rollback metrics, computed from the ledger's entries in one pass per kind."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

__all__ = ["compute_report"]

PAGE = 5000


def _t(s: Any) -> datetime | None:
    if not isinstance(s, str):
        return None
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None


def _dist(xs: list[float]) -> dict:
    """Count, min, quartiles, p90, max (seconds) of a distribution (nearest rank)."""
    if not xs:
        return {"count": 0}
    v = sorted(xs)

    def q(p: float) -> float:
        return round(v[min(len(v) - 1, max(0, int(round(p * (len(v) - 1)))))], 3)
    return {"count": len(v), "min": round(v[0], 3), "p25": q(.25), "p50": q(.5), "p75": q(.75), "p90": q(.9),
            "max": round(v[-1], 3)}


def _entries(led: Any, kinds: tuple, since: str | None, until: str | None, tick: Callable[[int], None]):
    from ..ledger import schema

    E = schema.entries
    where: list[Any] = [E.c.kind.in_(kinds)]
    if since:
        where.append(E.c.time >= since)
    if until:
        where.append(E.c.time < until)
    after = -1
    while True:
        with led.reading() as c:
            page = led.fetch(c, *where, E.c.seq > after, limit=PAGE)
        if not page:
            return
        yield from page
        tick(len(page))
        after = page[-1].seq


def compute_report(ledger: Any, *, since: str | None = None, until: str | None = None,
                   progress: Callable[[int, int], None] | None = None) -> dict:
    """Every metric as plain JSON: executions and rollbacks by action type and by reviewer
    (rate = rolled-back originals / executions), time from execution to rollback request
    and to completion, scenarios, within window versus escalated, approval latency, open,
    partial and failed rollbacks, unauthorized executions, missing receipt fields.
    ``since``/``until`` bound the entries read (RFC 3339, entry time)."""
    from ..ledger import Ledger

    owns = not isinstance(ledger, Ledger)
    led = Ledger.open(ledger) if owns else ledger
    try:
        total = led.size
        seen = [0]

        def tick(n: int) -> None:
            seen[0] += n
            if progress is not None:
                progress(seen[0], total)

        ex: dict[str, dict] = {}
        rbs: dict[str, dict] = {}
        approvals: dict[str | None, list] = {}
        steps: dict[str | None, dict] = {}
        batches = 0
        for e in _entries(led, ("execution", "rollback", "approval", "step", "batch"), since, until, tick):
            b = e.body
            if e.kind == "execution":
                ex[e.id] = {"type": b.get("type") or "?", "reviewer": b.get("reviewer") or "(none)",
                            "at": b.get("executed_at") or e.time, "authorized": bool(b.get("authorized")),
                            "missing": list(b.get("missing_receipt") or ()), "workflow": e.workflow}
            elif e.kind == "rollback":
                plan = b.get("plan") or {}
                rbs[e.id] = {"original": b.get("original"), "scenario": b.get("scenario"),
                             "at": b.get("requested_at") or e.time, "window": plan.get("window"),
                             "duties": list(b.get("duties") or ()), "batch": b.get("batch_hash") is not None}
            elif e.kind == "approval":
                approvals.setdefault(b.get("subject"), []).append(b)
            elif e.kind == "step":
                rb = e.links[0] if e.links else None
                d = steps.setdefault(rb, {})
                st = b.get("status")
                if st == "verified" or d.get(b.get("record"), (None,))[0] != "verified":
                    d[b.get("record")] = (st, b.get("at") or e.time)
            elif e.kind == "batch":
                batches += 1
        # ------------------------------------------------------------ per rollback
        state: dict[str, int] = {}
        to_request: list[float] = []
        to_complete: list[float] = []
        latency: list[float] = []
        scenarios: dict[str, int] = {}
        windows: dict[str, int] = {}
        by_type: dict[str, dict] = {}
        by_rev: dict[str, dict] = {}
        rolled: set[str] = set()
        failed_ids, partial_ids = [], []
        for rid, r in rbs.items():
            scenarios[r["scenario"] or "?"] = scenarios.get(r["scenario"] or "?", 0) + 1
            windows[r["window"] or "none"] = windows.get(r["window"] or "none", 0) + 1
            o = ex.get(r["original"])
            at = _t(r["at"])
            if o is not None:
                rolled.add(r["original"])
                t0 = _t(o["at"])
                if t0 and at:
                    to_request.append((at - t0).total_seconds())
            apps = [a for a in approvals.get(rid, ()) if a.get("verdict") == "approve" and a.get("counted")]
            if apps and at:
                first = min(filter(None, (_t(a.get("at")) for a in apps)), default=None)
                if first:
                    latency.append((first - at).total_seconds())
            denied = any(a.get("verdict") == "deny" and a.get("counted") for a in approvals.get(rid, ()))
            st = steps.get(rid, {})
            done = [d for d in r["duties"] if st.get(d, ("",))[0] in ("completed", "verified")]
            if st and len(done) == len(r["duties"]):
                s = "verified" if all(st[d][0] == "verified" for d in r["duties"]) else "completed"
                end = max(filter(None, (_t(st[d][1]) for d in r["duties"])), default=None)
                start = _t(o["at"]) if o is not None else None
                if end and start:
                    to_complete.append((end - start).total_seconds())
            elif any(v[0] == "failed" for v in st.values()):
                s = "partial"
                partial_ids.append(rid)
                if not done:
                    failed_ids.append(rid)
            elif st:
                s = "in_progress"
            elif denied:
                s = "denied"
            else:
                s = "approved" if apps else "pending"
            state[s] = state.get(s, 0) + 1
        for xid, x in ex.items():
            for key, table in ((x["type"], by_type), (x["reviewer"], by_rev)):
                row = table.setdefault(key, {"executions": 0, "rolled_back": 0})
                row["executions"] += 1
                row["rolled_back"] += xid in rolled
        for table in (by_type, by_rev):
            for row in table.values():
                row["rate"] = round(row["rolled_back"] / row["executions"], 4) if row["executions"] else 0.0
        missing: dict[str, int] = {}
        for x in ex.values():
            for f in x["missing"]:
                missing[f] = missing.get(f, 0) + 1
        unauthorized = [xid for xid, x in ex.items() if not x["authorized"]]
        return {
            "window": {"since": since, "until": until},
            "totals": {"entries_read": seen[0], "executions": len(ex), "rollbacks": len(rbs),
                       "rolled_back_executions": len(rolled), "batches": batches,
                       "rollback_rate": round(len(rolled) / len(ex), 4) if ex else 0.0},
            "by_action_type": dict(sorted(by_type.items())),
            "by_reviewer": dict(sorted(by_rev.items())),
            "time_to_rollback_request_s": _dist(to_request),
            "time_to_rollback_completion_s": _dist(to_complete),
            "approval_latency_s": _dist(latency),
            "scenarios": dict(sorted(scenarios.items())),
            "window_kind": dict(sorted(windows.items())),
            "rollback_status": dict(sorted(state.items())),
            "open": sum(v for k, v in state.items() if k in ("pending", "approved", "in_progress", "partial")),
            "partial": partial_ids[:100], "failed": failed_ids[:100],
            "unauthorized_executions": {"count": len(unauthorized), "ids": unauthorized[:100]},
            "missing_receipt_fields": {"executions": sum(1 for x in ex.values() if x["missing"]),
                                       "by_field": dict(sorted(missing.items()))},
            "cost": None,  # the policy language declares no `cost` yet (see docs/incidents.md)
        }
    finally:
        if owns:
            led.close()
