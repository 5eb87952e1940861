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


def _where(kind: str, since: str | None, until: str | None) -> list[Any]:
    from ..ledger import schema

    E = schema.entries
    where: list[Any] = [E.c.kind == kind]
    if since:
        where.append(E.c.time >= since)
    if until:
        where.append(E.c.time < until)
    return where


def _steps(led: Any, where: list, keep: set, tick: Callable[[int], None]):
    """(rollback, body) of every step of a rollback in ``keep`` (a step names its rollback by its link)."""
    from ..ledger import schema

    E = schema.entries
    after = -1
    while True:
        with led.reading() as c:
            page = led.fetch(c, *where, E.c.seq > after, limit=PAGE)
        if not page:
            return
        tick(len(page))
        for e in page:
            rb = e.links[0] if e.links else None
            if rb in keep:
                yield rb, e.body, e.time
        after = page[-1].seq


def _cost_of(eng: Any) -> tuple[Callable[[str | None, str | None], Any], Callable[[str | None, str | None], Any]]:
    """(scenario cost, action type cost) lookups in the policy: ``(workflow, name) -> (amount, unit) | None``.
    Read with getattr defaults: a policy (or an engine) without ``cost`` prices nothing."""
    wfs = getattr(getattr(eng, "compiled", None), "workflows", None) or {}

    def get(where: str, wf: str | None, name: str | None) -> Any:
        w = wfs.get(wf) if wf is not None else None
        obj = (getattr(w, where, None) or {}).get(name) if w is not None and name is not None else None
        c = getattr(obj, "cost", None)
        amount, unit = getattr(c, "amount", None), getattr(c, "unit", None)
        if isinstance(amount, (int, float)) and not isinstance(amount, bool) and isinstance(unit, str):
            return float(amount), unit
        return None

    return (lambda wf, sc: get("scenarios", wf, sc)), (lambda wf, t: get("actions", wf, t))


def _add(table: dict, key: str, unit: str, amount: float, n: int = 1) -> None:
    row = table.setdefault(key, {})
    row[unit] = row.get(unit, 0.0) + amount * n


def _rounded(table: dict) -> dict:
    return {k: {u: round(v, 6) for u, v in sorted(units.items())} for k, units in sorted(table.items())}


def compute_report(ledger: Any, *, since: str | None = None, until: str | None = None,
                   progress: Callable[[int, int], None] | None = None, policies: Any = None) -> dict:
    """Every metric as plain JSON: executions and rollbacks by action type and by reviewer
    (rate = rolled-back originals / executions), time from execution to rollback request
    and to completion, scenarios, within window versus escalated, approval latency, open,
    partial and failed rollbacks, unauthorized executions, missing receipt fields, and the
    cost of the rollbacks where ``policies`` (an Engine or a path) declares one.
    ``since``/``until`` bound the entries read (RFC 3339, entry time).

    One streaming pass per kind, each entry's few fields picked out by the database
    (:mod:`policy_engine.scan`): rollbacks, then their approvals and steps, then the
    executions folded into counters as they stream (only the rolled-back originals'
    times are kept)."""
    from ..gcpause import paused

    with paused():  # the executions stream into counters: no collector passes over what is kept meanwhile
        return _compute(ledger, since, until, progress, policies)


def _compute(ledger: Any, since: str | None, until: str | None, progress: Callable[[int, int], None] | None,
             policies: Any) -> dict:
    from ..ledger import Ledger, schema
    from ..scan import scan

    E = schema.entries
    owns = not isinstance(ledger, Ledger)
    led = Ledger.open(ledger) if owns else ledger
    try:
        eng: Any = None
        if policies is not None:
            from .. import load

            eng = load(policies) if isinstance(policies, (str, list, tuple)) or hasattr(policies, "__fspath__") \
                else policies
            if hasattr(eng, "reload"):  # a PolicyStore: its current snapshot
                eng = eng.engine
        total = led.size
        seen = [0]

        def tick(n: int) -> None:
            seen[0] += n
            if progress is not None:
                progress(seen[0], total)

        def counted(rows):
            k = 0
            for r in rows:
                k += 1
                if k == PAGE:
                    tick(k)
                    k = 0
                yield r
            tick(k)

        rbs: dict[str, dict] = {}
        for _seq, rid, wf, t, (orig, scen, req_at, window, duties, plan_orig, otype, steps_) in counted(scan(
                led, _where("rollback", since, until),
                ["original", "scenario", "requested_at", "plan.window", "duties", "plan.original_id",
                 "plan.original_type", "plan.cascade.steps"])):
            orig = orig or plan_orig
            types: dict[str, int] = {}
            if otype:
                types[otype] = 1
            for st_ in steps_ or ():
                if isinstance(st_, dict) and st_.get("record_id") != orig and st_.get("type"):
                    types[st_["type"]] = types.get(st_["type"], 0) + 1
            rbs[rid] = {"original": orig, "scenario": scen, "at": req_at or t, "window": window,
                        "duties": list(duties or ()), "workflow": wf, "types": types}
        approvals: dict[str, list] = {}
        for _seq, _id, _wf, _when, (subj, verdict, ok, at) in counted(scan(
                led, _where("approval", since, until), ["subject", "verdict", "counted", "at"])):
            if subj in rbs:
                approvals.setdefault(subj, []).append({"verdict": verdict, "counted": ok, "at": at})
        steps: dict[str, dict] = {}
        for rb, b, t in _steps(led, _where("step", since, until), set(rbs), tick):
            d = steps.setdefault(rb, {})
            st = b.get("status")
            if st == "verified" or d.get(b.get("record"), (None,))[0] != "verified":
                d[b.get("record")] = (st, b.get("at") or t)
        with led.reading() as c:
            from sqlalchemy import func, select

            batches = c.execute(select(func.count()).select_from(E).where(*_where("batch", since, until))).scalar_one()
        tick(batches)
        originals = {r["original"] for r in rbs.values()}
        by_type: dict[str, list[int]] = {}
        by_rev: dict[str, list[int]] = {}
        ex_at: dict[str, Any] = {}  # a rolled-back original -> when it ran
        n_ex = 0
        unauthorized: list[str] = []
        n_unauth = 0
        missing: dict[str, int] = {}
        n_missing = 0
        for _seq, xid, _wf, t, (typ, rev, at, auth, miss) in counted(scan(
                led, _where("execution", since, until),
                ["type", "reviewer", "executed_at", "authorized", "missing_receipt"])):
            n_ex += 1
            hit = xid in originals
            if hit:
                ex_at[xid] = at or t
            for key, table in ((typ or "?", by_type), (rev or "(none)", by_rev)):
                row = table.get(key)
                if row is None:
                    row = table[key] = [0, 0]
                row[0] += 1
                row[1] += hit
            if not auth:
                n_unauth += 1
                if len(unauthorized) < 100:
                    unauthorized.append(xid)
            if miss:
                n_missing += 1
                for f in miss:
                    missing[f] = missing.get(f, 0) + 1
        # ------------------------------------------------------------ per rollback
        state: dict[str, int] = {}
        to_request: list[float] = []
        to_complete: list[float] = []
        latency: list[float] = []
        scenarios: dict[str, int] = {}
        windows: dict[str, int] = {}
        rolled: set[str] = set()
        failed_ids, partial_ids = [], []
        statuses: dict[str, str] = {}
        for rid, r in rbs.items():
            scenarios[r["scenario"] or "?"] = scenarios.get(r["scenario"] or "?", 0) + 1
            windows[r["window"] or "none"] = windows.get(r["window"] or "none", 0) + 1
            o_at = ex_at.get(r["original"])
            at = _t(r["at"])
            if r["original"] in ex_at:
                rolled.add(r["original"])
                t0 = _t(o_at)
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
                start = _t(o_at) if r["original"] in ex_at else None
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
            statuses[rid] = s

        def rows(table: dict) -> dict:
            return {k: {"executions": v[0], "rolled_back": v[1], "rate": round(v[1] / v[0], 4) if v[0] else 0.0}
                    for k, v in sorted(table.items())}
        return {
            "window": {"since": since, "until": until},
            "totals": {"entries_read": seen[0], "executions": n_ex, "rollbacks": len(rbs),
                       "rolled_back_executions": len(rolled), "batches": batches,
                       "rollback_rate": round(len(rolled) / n_ex, 4) if n_ex else 0.0},
            "by_action_type": rows(by_type),
            "by_reviewer": rows(by_rev),
            "time_to_rollback_request_s": _dist(to_request),
            "time_to_rollback_completion_s": _dist(to_complete),
            "approval_latency_s": _dist(latency),
            "scenarios": dict(sorted(scenarios.items())),
            "window_kind": dict(sorted(windows.items())),
            "rollback_status": dict(sorted(state.items())),
            "open": sum(v for k, v in state.items() if k in ("pending", "approved", "in_progress", "partial")),
            "partial": partial_ids[:100], "failed": failed_ids[:100],
            "unauthorized_executions": {"count": n_unauth, "ids": unauthorized},
            "missing_receipt_fields": {"executions": n_missing, "by_field": dict(sorted(missing.items()))},
            "cost": _cost(eng, rbs, statuses),
        }
    finally:
        if owns:
            led.close()


def _cost(eng: Any, rbs: dict, statuses: dict) -> dict:
    """The cost of the rollbacks, summed per unit (a currency code or ``hours``; different
    units are never added): one rollback costs its scenario's ``cost`` once plus its action
    types' reversal ``cost`` once per record it covers (the original and its cascade).
    Denied rollbacks cost nothing (nothing was reversed)."""
    if eng is None:
        return {"priced": False, "reason": "no policy given (--policies): cost is declared by the policy",
                "total": {}, "by_scenario": {}, "by_action_type": {}, "rollbacks": 0, "unpriced": {}}
    scen_cost, type_cost = _cost_of(eng)
    total: dict[str, float] = {}
    by_scen: dict[str, dict] = {}
    by_type: dict[str, dict] = {}
    unpriced: dict[str, int] = {}
    n = 0
    for rid, r in rbs.items():
        if statuses.get(rid) == "denied":
            continue
        n += 1
        wf, scen = r["workflow"], r["scenario"] or "?"
        sc = scen_cost(wf, r["scenario"])
        if sc is not None:
            _add(by_scen, scen, sc[1], sc[0])
            total[sc[1]] = total.get(sc[1], 0.0) + sc[0]
        for typ, k in r["types"].items():
            tc = type_cost(wf, typ)
            if tc is None:
                unpriced[typ] = unpriced.get(typ, 0) + k
                continue
            _add(by_type, typ, tc[1], tc[0], k)
            _add(by_scen, scen, tc[1], tc[0], k)
            total[tc[1]] = total.get(tc[1], 0.0) + tc[0] * k
    priced = bool(total)
    return {"priced": priced, "reason": None if priced else "the policy declares no cost for these rollbacks",
            "total": {u: round(v, 6) for u, v in sorted(total.items())}, "by_scenario": _rounded(by_scen),
            "by_action_type": _rounded(by_type), "rollbacks": n, "unpriced": dict(sorted(unpriced.items()))}
