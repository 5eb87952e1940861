"""The rollback metrics, computed from the ledger's entries in one pass per kind."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..runtime.results import LEGACY_ERROR_FIELD, outcome_of

__all__ = ["compute_report"]

PAGE = 5000
#: a rollback in one of these reversed nothing: it costs nothing and its original is not rolled back
_NOT_REVERSED = ("denied", "cancelled", "expired")


def _t(s: Any) -> datetime | None:
    """A recorded time, timezone-aware (a time without a zone is UTC, as the ledger writes
    it); None for anything that is not one (a ledger written by other code may hold anything)."""
    if not isinstance(s, str):
        return None
    try:
        t = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


def _s(v: Any) -> str | None:
    """A string field, or None (a list or an object where a name belongs is not a name)."""
    return v if isinstance(v, str) else None


def _strs(v: Any) -> list[str]:
    """The strings of a list field (anything else: none)."""
    return [x for x in v if isinstance(x, str)] if isinstance(v, list) else []


def _bound(v: Any, what: str) -> str | None:
    """``since``/``until`` as the ledger writes times (UTC, six fraction digits, ``Z``), so
    that comparing the text compares the instants: ``13:00:00Z`` and ``14:00:00+01:00`` are
    the same bound, and an entry at exactly that instant is inside ``since``."""
    from ..timestamps import format_micros

    if v is None:
        return None
    if isinstance(v, str):  # digits below the microsecond round up (as a batch's and a replay's bounds):
        # an entry just before the bound stays before it (`until`: in; `since`: out)
        from ..engine.util import window_now
        from ..timestamps import parse_rfc3339

        try:
            return format_micros(window_now(v, parse_rfc3339(v, allow_space=True)))
        except (ValueError, OverflowError):
            pass  # (not RFC 3339 text: the reading below says why, or takes what fromisoformat takes)
    t = v if isinstance(v, datetime) else _t_strict(v, what)
    if t.tzinfo is None:
        raise ValueError(f"`{what}` needs a time zone (e.g. `Z`): {v!r}")
    return format_micros(t)


def _t_strict(v: Any, what: str) -> datetime:
    try:
        return datetime.fromisoformat(str(v).replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"`{what}` is not an RFC 3339 time: {v!r}") from None


def _reviewers(rev: Any, listed: Any) -> list[str]:
    """Who approved an execution: its ``reviewer`` names them joined by ``, `` and, with more
    than one, ``reviewers`` lists them (then the receipt's reviewer, when it names another);
    each approver is credited once. A name is never split on its own commas."""
    names = _strs(listed)
    if isinstance(rev, str) and names:
        for k in range(len(names), 0, -1):
            if ", ".join(names[:k]) == rev:
                return names[:k]
    return [rev] if isinstance(rev, str) and rev else []


def _span(start: datetime, end: datetime) -> float:
    """Seconds from ``start`` to ``end``, never below 0: the times come from different clocks
    (an agent's ``executed_at``, the runtime's, a replica's), which the runtime lets differ by up
    to its clock skew (an ``executed_at`` up to 60 s after the time it records), so a rollback
    requested right after the action can read as requested before it ran; it was not."""
    return max(0.0, (end - start).total_seconds())


def _dist(xs: list[float]) -> dict:
    """Count, min, quartiles, p90, max (seconds) of a distribution. Each quantile is the
    nearest-rank one: the smallest value with at least that share of the values at or
    below it (``p50`` of 1, 2, 3, 4 is 2)."""
    if not xs:
        return {"count": 0}
    v = sorted(xs)

    def q(p: float) -> float:
        rank = math.ceil(round(p * len(v), 9))  # (round: 0.7 * 10 is 7.000000000000001)
        return round(v[min(len(v), max(1, rank)) - 1], 3)
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
            if rb in keep and isinstance(e.body, dict):
                yield rb, e.body, e.time
        after = page[-1].seq


def _scan(led: Any, where: list, paths: list[str]):
    """:func:`policy_engine.scan.scan` (which reads a page whole where PostgreSQL cannot pick
    the fields out of it: a body holding ``\\u0000``)."""
    from ..scan import scan

    yield from scan(led, where, paths)


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


def _amount(v: float, over: set, unit: str) -> float | None:
    """A sum as JSON carries it: a sum beyond a float's range (amounts near 1e308) is None, its
    unit listed in ``over`` (JSON has no Infinity: `json.dumps` would write an invalid document)."""
    if math.isfinite(v):
        return round(v, 6)
    over.add(unit)
    return None


def _rounded(table: dict, over: set) -> dict:
    return {k: {u: _amount(v, over, u) for u, v in sorted(units.items())} for k, units in sorted(table.items())}


def compute_report(ledger: Any, *, since: str | datetime | None = None, until: str | datetime | None = None,
                   progress: Callable[[int, int], None] | None = None, policies: Any = None,
                   now: str | datetime | None = None) -> dict:
    """Every metric as plain JSON: executions and rollbacks by action type and by reviewer
    (rate = rolled-back originals / executions; an original counts as rolled back while a
    rollback of it stands, i.e. is not denied, cancelled or expired; each approver of an
    execution is credited with it), time from execution to rollback request and to
    completion (when its last duty was done, not verified), scenarios, within window
    versus escalated, approval latency, open, partial and failed rollbacks, unauthorized
    executions, missing receipt fields, and the cost of the rollbacks where ``policies``
    (an Engine or a path) declares one.

    ``since``/``until`` bound the entries read (RFC 3339 with a time zone, or aware
    datetimes; entry time, ``since <= time < until``). The report answers as of ``until``
    (or ``now``, the clock, when ``until`` is later or not given: ``window.as_of``) and
    writes nothing. A rollback's status is the one its recorded entries give it, as the
    runtime reads them (``Runtime.authorization``), as of that time: one not authorized
    whose standard reversal window or ``pending_until`` passed by then is ``expired``
    whether or not the sweeper (``stopline queue --expire``) recorded it, by the runtime's
    own rule (:func:`policy_engine.runtime.core.clock_expiry`), so the figures do not depend
    on when a sweeper ran; ``expired`` says how many were recorded and which were derived
    (not yet recorded). Given ``until``, the same ledger always gives the same report. Not
    authorized is what the recorded approvals say (the status the latest one left it in,
    pending again from the ``approved_until`` it recorded, when its approvals lapse: the
    report judges no approval again, with or without ``policies``).

    One streaming pass per kind, each entry's few fields picked out by the database
    (:mod:`policy_engine.scan`): rollbacks, then their approvals, transitions and steps,
    then the executions folded into counters as they stream (only the rolled-back
    originals' times are kept); an original that ran before ``since`` is read by id, so
    every rollback of the window has its times (the rates stay the window's). A field of
    an unexpected type (a ledger written by other code) reads as missing."""
    from ..gcpause import paused

    s, u = _bound(since, "since"), _bound(until, "until")
    if s is not None and u is not None and s > u:
        raise ValueError(f"`since` ({s}) is later than `until` ({u}): no entry can be in that window")
    n = _bound(now if now is not None else datetime.now(UTC), "now") or ""
    as_of = u if u is not None and u <= n else n  # (never later than the clock: nothing expires ahead of it)
    with paused():  # the executions stream into counters: no collector passes over what is kept meanwhile
        return _compute(ledger, s, u, progress, policies, as_of)


def _fold_steps(steps: list) -> dict[str, tuple[str, datetime | None]]:
    """Each duty's latest step status (a verified duty stays verified) and when it was done:
    the first ``completed`` (or ``verified``) report since it last was not done."""
    latest: dict[str, tuple[str, datetime | None]] = {}
    for rec, st, when, _auth in steps:  # in seq order
        prev = latest.get(rec)
        if st != "verified" and prev is not None and prev[0] == "verified":
            continue
        if st in ("completed", "verified"):
            latest[rec] = (st, prev[1] if prev is not None and prev[0] in ("completed", "verified") else when)
        else:
            latest[rec] = (st, None)
    return latest


def _status(r: dict, apps: list, ended: str | None, steps: list) -> str:
    """A rollback's status as the runtime judges it (``core._subject_status``): its progress
    once an authorized step was recorded (a step reported before approval is flagged
    unauthorized and starts nothing); else cancelled or expired (a recorded transition),
    denied (a counted deny), approved (the status the latest approval left it in) or pending."""
    latest = _fold_steps(steps)
    if latest and any(a for _r, _s, _w, a in steps):
        duties = r["duties"]
        remaining = [d for d in duties if latest.get(d, ("",))[0] not in ("completed", "verified")]
        if not remaining:
            return "verified" if all(latest[d][0] == "verified" for d in duties) else "completed"
        return "partial" if any(v[0] == "failed" for v in latest.values()) else "in_progress"
    if ended:
        return ended
    if any(a["verdict"] == "deny" and a["counted"] for a in apps):
        return "denied"
    # the status the latest approval left it in (a ledger without it: any counted approval)
    after = [a["status_after"] for a in apps if a["status_after"] is not None]
    satisfied = after[-1] == "approved" if after else any(a["verdict"] == "approve" and a["counted"] for a in apps)
    return "approved" if satisfied else "pending"


def _expired_by_clock(r: dict, as_of: datetime) -> bool:
    """Whether a rollback the record leaves pending (not authorized) is expired at ``as_of``
    by the runtime's rule (its standard window or its ``pending_until`` passed)."""
    from ..runtime.core import clock_expiry

    plan = {"window": r["window"], "reversible_until": r["until"]}
    return clock_expiry(plan, r["pending_until"], as_of) is not None


def _compute(ledger: Any, since: str | None, until: str | None, progress: Callable[[int, int], None] | None,
             policies: Any, as_of: str) -> dict:
    from ..ledger import Ledger, schema
    from ..ledger.kinds import STEP_STATUSES

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
        for _seq, rid, wf, t, (orig, scen, req_at, window, duties, plan_orig, otype, steps_, rev_until,
                               pend_until) in counted(_scan(
                led, _where("rollback", since, until),
                ["original", "scenario", "requested_at", "plan.window", "duties", "plan.original_id",
                 "plan.original_type", "plan.cascade.steps", "plan.reversible_until", "pending_until"])):
            orig = _s(orig) or _s(plan_orig)
            types: dict[str, int] = {}
            if _s(otype):
                types[otype] = 1
            for st_ in steps_ if isinstance(steps_, list) else ():
                if isinstance(st_, dict) and st_.get("record_id") != orig and _s(st_.get("type")):
                    types[st_["type"]] = types.get(st_["type"], 0) + 1
            rbs[rid] = {"original": orig, "scenario": _s(scen), "at": _s(req_at) or t, "window": _s(window),
                        "duties": list(dict.fromkeys(_strs(duties))), "workflow": wf, "types": types,
                        "until": _s(rev_until), "pending_until": _s(pend_until)}
        approvals: dict[str, list] = {}
        for _seq, _id, _wf, when, (subj, verdict, ok, at, after, until_) in counted(_scan(
                led, _where("approval", since, until),
                ["subject", "verdict", "counted", "at", "status_after", "approved_until"])):
            if isinstance(subj, str) and subj in rbs:
                approvals.setdefault(subj, []).append({"verdict": verdict, "counted": ok is True,
                                                       "at": _s(at) or when, "status_after": _s(after),
                                                       "approved_until": _s(until_)})
        ended: dict[str, str] = {}  # a rollback -> the first `cancelled` or `expired` recorded for it
        for _seq, _id, _wf, _when, (subj, to) in counted(_scan(
                led, _where("transition", since, until), ["subject", "to"])):
            if isinstance(subj, str) and subj in rbs and to in ("cancelled", "expired"):
                ended.setdefault(subj, to)
        steps: dict[str, list] = {}  # a rollback -> [(duty, status, when, authorized)] in seq order
        for rb, b, t in _steps(led, _where("step", since, until), set(rbs), tick):
            rec = b.get("record")
            if isinstance(rec, str) and rec in rbs[rb]["duties"] and b.get("status") in STEP_STATUSES:
                # authorized as the runtime reads it (`core._subject_status`): only a step recording
                # `authorized: true` starts the rollback; one appended beside the runtime without it starts nothing
                steps.setdefault(rb, []).append((rec, b["status"], _t(b.get("at")) or _t(t),
                                                 b.get("authorized") is True))
        with led.reading() as c:
            from sqlalchemy import func, select

            batches = c.execute(select(func.count()).select_from(E).where(*_where("batch", since, until))).scalar_one()
        tick(batches)
        # ------------------------------------------------------------ per rollback
        statuses: dict[str, str] = {
            rid: _status(r, approvals.get(rid, []), ended.get(rid), steps.get(rid, []))
            for rid, r in rbs.items()}
        as_of_t = _t_strict(as_of, "now")
        # as of the report's time: an approved rollback not started whose approvals lapsed (the
        # latest approval's `approved_until`) is pending again, as `Runtime.authorization` says
        for rid, st_ in statuses.items():
            if st_ == "approved":
                lapse = _t(approvals[rid][-1].get("approved_until")) if approvals.get(rid) else None
                if lapse is not None and lapse <= as_of_t:
                    statuses[rid] = "pending"
        # as of the report's time: a pending rollback the clock expired counts as expired, recorded or not
        derived = [rid for rid, r in rbs.items() if statuses[rid] == "pending" and _expired_by_clock(r, as_of_t)]
        for rid in derived:
            statuses[rid] = "expired"
        standing = {r["original"] for rid, r in rbs.items() if statuses[rid] not in _NOT_REVERSED}
        originals = {r["original"] for r in rbs.values()}
        by_type: dict[str, list[int]] = {}
        by_rev: dict[str, list[int]] = {}
        ex_at: dict[str, Any] = {}  # an original of a rollback -> when it ran
        n_ex = 0
        unauthorized: list[str] = []
        n_unauth = 0
        missing: dict[str, int] = {}
        n_missing = 0
        failed_runs: list[str] = []
        n_failed = 0
        for _seq, xid, _wf, t, (typ, rev, revs, at, auth, miss, outcome, legacy) in counted(_scan(
                led, _where("execution", since, until),
                ["type", "reviewer", "reviewers", "executed_at", "authorized", "missing_receipt", "outcome",
                 "receipt.tool_error"])):
            n_ex += 1
            if xid in originals:
                ex_at[xid] = _s(at) or t
            hit = xid in standing
            keys = [(_s(typ) or "?", by_type)] + [(k, by_rev) for k in (_reviewers(rev, revs) or ["(none)"])]
            for key, table in keys:
                row = table.get(key)
                if row is None:
                    row = table[key] = [0, 0]
                row[0] += 1
                row[1] += hit
            if not auth:
                n_unauth += 1
                if len(unauthorized) < 100:
                    unauthorized.append(xid)
            # a run reported failed (`executed(outcome="failed")`, or an adapter's `tool_error` of
            # before it): counted apart; the receipt fields it never produced are not under-reporting
            if outcome_of({"outcome": outcome} if outcome is not None else {"receipt": {LEGACY_ERROR_FIELD: legacy}}
                          )[0] == "failed":
                n_failed += 1
                if len(failed_runs) < 100:
                    failed_runs.append(xid)
                continue
            fields = _strs(miss)
            if fields:
                n_missing += 1
                for f in dict.fromkeys(fields):
                    missing[f] = missing.get(f, 0) + 1
        # an original executed before `since` (its rollback in the window): when it ran, read
        # by id, so every rollback of the window has its times (not only those of its executions)
        ran = dict(ex_at)
        for xid, when in _executed_at(led, [o for o in originals if o is not None and o not in ex_at]):
            ran[xid] = when
        to_request: list[float] = []
        to_complete: list[float] = []
        latency: list[float] = []
        scenarios: dict[str, int] = {}
        windows: dict[str, int] = {}
        state: dict[str, int] = {}
        failed_ids, partial_ids = [], []
        for rid, r in rbs.items():
            scenarios[r["scenario"] or "?"] = scenarios.get(r["scenario"] or "?", 0) + 1
            windows[r["window"] or "none"] = windows.get(r["window"] or "none", 0) + 1
            t0 = _t(ran.get(r["original"])) if r["original"] in ran else None
            at = _t(r["at"])
            if t0 and at:
                to_request.append(_span(t0, at))
            firsts = [_t(a["at"]) for a in approvals.get(rid, ()) if a["verdict"] == "approve" and a["counted"]]
            first = min(filter(None, firsts), default=None)
            if first and at:
                latency.append(_span(at, first))
            s = statuses[rid]
            if s in ("completed", "verified"):
                latest = _fold_steps(steps.get(rid, []))
                end = max(filter(None, (latest[d][1] for d in r["duties"])), default=None)
                if end and t0:
                    to_complete.append(_span(t0, end))
            elif s == "partial":
                partial_ids.append(rid)
                latest = _fold_steps(steps.get(rid, []))
                if not any(v[0] in ("completed", "verified") for v in latest.values()):
                    failed_ids.append(rid)
            state[s] = state.get(s, 0) + 1

        def rows(table: dict) -> dict:
            return {k: {"executions": v[0], "rolled_back": v[1], "rate": round(v[1] / v[0], 4) if v[0] else 0.0}
                    for k, v in sorted(table.items())}
        rolled = len(standing & ex_at.keys())
        return {
            "window": {"since": since, "until": until, "as_of": as_of},
            "totals": {"entries_read": seen[0], "executions": n_ex, "rollbacks": len(rbs),
                       "rolled_back_executions": rolled, "batches": batches,
                       "rollback_rate": round(rolled / n_ex, 4) if n_ex else 0.0},
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
            "partial_count": len(partial_ids), "failed_count": len(failed_ids),
            # expired as of `as_of`: recorded (a transition) or derived by the clock (not yet recorded)
            "expired": {"count": state.get("expired", 0), "recorded": state.get("expired", 0) - len(derived),
                        "derived": len(derived), "derived_ids": derived[:100]},
            "unauthorized_executions": {"count": n_unauth, "ids": unauthorized},
            "failed_executions": {"count": n_failed, "ids": failed_runs},
            "missing_receipt_fields": {"executions": n_missing, "by_field": dict(sorted(missing.items()))},
            "cost": _cost(eng, rbs, statuses),
        }
    finally:
        if owns:
            led.close()


def _executed_at(led: Any, ids: list[str]) -> Any:
    """``(execution id, when it ran)`` of the executions ``ids`` (the originals the window's
    executions did not hold), 500 ids per query."""
    from ..ledger import schema

    E = schema.entries
    for i in range(0, len(ids), 500):
        for _seq, xid, _wf, t, (at,) in _scan(led, [E.c.kind == "execution", E.c.id.in_(ids[i:i + 500])],
                                              ["executed_at"]):
            yield xid, _s(at) or t


def _cost(eng: Any, rbs: dict, statuses: dict) -> dict:
    """The cost of the rollbacks, summed per unit (a currency code or ``hours``; different
    units are never added): one rollback costs its scenario's ``cost`` once plus its action
    types' reversal ``cost`` once per record it covers (the original and its cascade).
    Denied, cancelled and expired rollbacks cost nothing (nothing was reversed)."""
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
        if statuses.get(rid) in _NOT_REVERSED:
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
    over: set[str] = set()
    out: dict[str, Any] = {
        "priced": priced, "reason": None if priced else "the policy declares no cost for these rollbacks",
        "total": {u: _amount(v, over, u) for u, v in sorted(total.items())},
        "by_scenario": _rounded(by_scen, over), "by_action_type": _rounded(by_type, over), "rollbacks": n,
        "unpriced": dict(sorted(unpriced.items()))}
    if over:  # (only then: a report without it keeps its keys)
        out["overflow"] = sorted(over)
    return out
