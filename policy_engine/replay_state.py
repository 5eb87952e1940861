"""The workflow state a replay evaluates each decision in (``policy_engine.replay``): the
record's stops and resumes as a timeline per workflow, changed as the candidate policy would
have changed it (``replay(carry_stops=True)``): its own stops carried, the record's stops it
does not fire lifted (one fired where it has the workflow stopped already included: a stopped
workflow's decision fires none), the record's resumes asked again under its re-enable criteria
for every stop standing there, the record's and its own (an allowed one it refuses does not lift
the stops, nor does one over a stop whose trigger it does not declare; a refused one it allows
does; one it cannot be asked lifts the record's, not its own).

Does not import the replay (``replay`` passes its re-evaluation in: ``_carry_stops``' ``run``),
and of the runtime only ``runtime.recorded`` (the evidence's integral floats), which imports
neither; ``cases`` reads the recorded state here (``_timeline``, ``_state_at``).
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Callable
from typing import Any


def _timeline(led: Any, until: str | None, fired: dict | None = None, resumes: dict | None = None,
              since: str | None = None, workflow: str | None = None) -> dict[str, list[tuple[Any, ...]]]:
    """Per workflow, every change of its status: (seq, state after it or None for running, the
    entry's id). ``fired``, when given, is filled with each entry id a stop links to (the
    decision that fired it, for the runtime's stops) -> (the stop's seq, its id, its trigger,
    its workflow): the first stop linking to it. ``resumes``: the resumes in the window by seq, allowed and
    refused (only the allowed ones change the status)."""
    from .ledger import schema

    E = schema.entries
    out: dict[str, list[tuple[Any, ...]]] = {}
    with led.reading() as c:
        for e in led.fetch(c, E.c.kind.in_(("stop", "resume"))):
            if e.workflow is None:
                continue
            if e.kind == "stop":
                st = {"name": e.workflow, "status": "stopped", "stopped_by": e.body.get("trigger"),
                      "stopped_at": e.body.get("stopped_at") or e.time}
                if fired is not None:
                    for to in e.links:
                        fired.setdefault(to, (e.seq, e.id, st["stopped_by"], e.workflow))
            else:
                if resumes is not None and (since or "") <= e.time < (until or "~") and workflow in (None, e.workflow):
                    resumes.setdefault(e.workflow, {})[e.seq] = _resume_of(e)
                if e.body.get("allowed") is not True:
                    continue  # refused in the record: the workflow stays stopped (unless the candidate allows it)
                st = None
            out.setdefault(e.workflow, []).append((e.seq, st, e.id))
    return out


def _resume_of(e: Any) -> dict:
    """A resume of the record as the candidate is asked it again: its evidence (its integral floats as
    floats: ``evidence_doubles``) and time, whether the record ``allowed`` it and what it found ``unmet``,
    and ``why`` it cannot be asked (then the record's answer stands), or None."""
    from .ledger.canonical import canonical_text
    from .runtime.recorded import EVIDENCE_DOUBLES, restore_doubles
    from .timestamps import parse_ts

    b, why, ev, at = e.body, None, e.body.get("evidence"), e.body.get("resumed_at") or e.time
    try:
        if not isinstance(ev, dict) or not b.get("criteria"):
            why = "it records no evidence or no criterion's result (not the runtime's: an operator's, appended by hand)"
        elif "sha256:" + hashlib.sha256(canonical_text(ev).encode()).hexdigest() != b.get("evidence_digest"):
            why = "its evidence is not as presented: " + str(ev.get("unrecordable") or "the digest differs")[:200]
        else:
            parse_ts(at, "the recorded `resumed_at`")
            ev = restore_doubles(ev, b.get(EVIDENCE_DOUBLES), EVIDENCE_DOUBLES)  # the evidence as presented
    except Exception as x:  # noqa: BLE001  (another writer's body: never a crash)
        why = f"it cannot be read: {str(x)[:200]}"
    unmet = b.get("unmet")
    return {"id": e.id, "at": at if isinstance(at, str) else e.time, "principal": b.get("principal"),
            "evidence": ev, "why": why, "allowed": b.get("allowed") is True,
            "unmet": [u for u in unmet if isinstance(u, str)] if isinstance(unmet, list) else []}


def _ask(engine: Any, wf: str, standing: list, r: dict) -> tuple[bool | None, list[str], str | None]:
    """The candidate's answer to ``wf``'s recorded resume ``r`` where the stops ``standing`` (their states) stand
    (each trigger's criteria, newest first, as the runtime asks): (allowed or None: cannot be asked, unmet, why).
    A stop whose trigger (or workflow) it does not declare is refused, with the error, as ``rt.resume`` under
    it refuses it: it has no criteria that could allow it (before session 26: not asked, the record's answer)."""
    ask = getattr(engine, "may_resume", None)
    if r["why"] or not callable(ask):
        return None, [], r["why"] or "the candidate evaluator answers no resume question (no `may_resume`)"
    ds = []
    for st in reversed({st.get("stopped_by"): st for st in standing}.values()):
        try:  # a trigger (or workflow) the candidate does not declare is its refusal, with the error, as
            # `rt.resume` under it refuses it: an answer it cannot give never widens permission
            d = ask(wf, st, r["evidence"], r["at"])
            ds.append((d.allowed is True, [u for u in d.unmet if isinstance(u, str)], [x.message for x in d.errors]))
        except Exception as e:  # noqa: BLE001  (an evaluator other than an Engine, which never raises)
            return None, [], f"the candidate cannot answer it: {type(e).__name__}: {str(e)[:200]}"
    return (all(d[0] for d in ds), list(dict.fromkeys(u for d in ds for u in d[1])),
            "; ".join(m for d in ds for m in d[2])[:300] or None)


def _asked(engine: Any, wf: str, standing: list, r: dict, seq: int, whose: str, cache: dict) -> tuple:
    """``_ask`` once per resume and set of stops (``whose``: the record's or the candidate's own)."""
    key = (seq, whose, tuple((st.get("stopped_by"), st.get("stopped_at")) for st in standing))
    return cache[key] if key in cache else cache.setdefault(key, _ask(engine, wf, standing, r))


def _judge(engine: Any, wf: str, events: list, mine: dict, cache: dict) -> tuple[list, list, list, list]:
    """Walk ``wf``'s timeline with its recorded resumes ``mine`` (seq -> ``_resume_of``, allowed and refused) in
    order, asking the candidate each one at which a stop stands in the replay, over its recorded evidence: the
    criteria of every stop that stands there, as ``rt.resume`` asks them (``_ask``): the record's stops, and the
    candidate's own (its stops where the record ran on, or in place of the record's, ``_carry_stops``: no id).
    An allowed one it refuses (the record's stops' criteria or its own stops') is taken out of ``events``, a refused
    one it allows (every stop's criteria) put in (in place); a refused one it refuses too, cannot be asked, or where
    no stop stands, stays out (errors never widen permission). An allowed one that cannot be asked stands for the
    record's stops (the record's answer), but not for the candidate's own: they stand on, placed again just after
    it (``(position, state, None, the stop's first position)``, dropped and placed anew by each walk).
    Returns (the refused, the allowed ones that cannot be asked, the allowed, the candidate's own stops kept:
    ``stops`` their positions, named by ``_carry_stops``)."""
    out, refused, unjudged, allowed, kept = [], [], [], [], []
    standing: list = []  # the stop events since the last resume that stands
    for ev in sorted([e for e in events if len(e) == 3 and (e[1] is not None or e[0] not in mine)]
                     + [(s, None, r["id"]) for s, r in mine.items()], key=lambda e: e[0]):
        r = mine.get(ev[0]) if ev[1] is None else None
        if r is not None and standing:
            rec, own = [e[1] for e in standing if e[2] is not None], [e for e in standing if e[2] is None]
            ok, unmet, why = _asked(engine, wf, rec, r, ev[0], "record", cache) if rec else (True, [], None)
            o_ok, o_unmet, o_why = (_asked(engine, wf, [e[1] for e in own], r, ev[0], "own", cache) if own
                                    else (True, [], None))
            item = {"workflow": wf, "resume": r["id"], "seq": ev[0], "at": r["at"], "principal": r["principal"]}
            stopped_by = list(dict.fromkeys(e[1].get("stopped_by") for e in standing))
            mine_t = list(dict.fromkeys(e[1].get("stopped_by") for e in own))
            own_kept = item | {"triggers": mine_t, "stops": [e[3] if len(e) > 3 else e[0] for e in own],
                               "unmet": o_unmet, "errors": o_why if o_ok is False else None,
                               "reason": o_why if o_ok is None else None, "stopped_by": stopped_by}
            if not r["allowed"]:
                if not (ok and o_ok):  # refused by the record and not allowed by the candidate: the stops stand
                    continue
                allowed.append(item | {"recorded_unmet": r["unmet"], "stopped_by": stopped_by})
            elif ok is False or o_ok is False:  # the candidate refuses it: every stop stands
                if ok is False:
                    refused.append(item | {"unmet": unmet, "errors": why, "stopped_by": stopped_by})
                if o_ok is not True:
                    kept.append(own_kept)
                continue
            else:
                if ok is None:
                    unjudged.append({k: v for k, v in item.items() if k != "principal"} | {"reason": why})
                if o_ok is None:  # it stands for the record's stops; the candidate's own stand on
                    kept.append(own_kept | {"stopped_by": mine_t})
                    out.append(ev)
                    standing = [(ev[0] + 0.25 + i / 1024, e[1], None, e[3] if len(e) > 3 else e[0])
                                for i, e in enumerate(own)]
                    out += standing
                    continue
        elif r is not None and not r["allowed"]:
            continue  # refused by the record where no stop stands in the replay: nothing to lift
        standing = [*standing, ev] if ev[1] is not None else []
        out.append(ev)
    events[:] = out
    for x in refused:  # the next resume that stands in the replay, if any
        x["until"] = next((e[2] for e in out if e[1] is None and e[0] > x["seq"]), None)
    for x in allowed:  # the next change after it (a candidate stop's decision is named by ``_carry_stops``)
        x["until"], x["until_kind"] = _change_after(out, wf, x["seq"], {})
    return refused, unjudged, allowed, kept


def _change_after(events: list, wf: str, pos: float, placed: dict) -> tuple[str | None, str | None]:
    """The first change of ``wf``'s ``events`` after ``pos`` (one at ``pos`` itself not counted) as (its id,
    its kind): ``resume``, ``stop`` (the record's) or ``candidate stop`` (its decision, from ``placed``:
    (workflow, position) -> decision); (None, None): none, to the end."""
    at = bisect.bisect_left(events, (pos,))
    at += at < len(events) and events[at][0] == pos
    nxt = events[at] if at < len(events) else None
    return ((None, None) if nxt is None else (nxt[2], "resume") if nxt[1] is None
            else (nxt[2], "stop") if nxt[2] is not None else (placed.get((wf, nxt[-1] if len(nxt) > 3 else nxt[0])),
                                                               "candidate stop"))


def _carries(r: tuple, timeline: dict) -> bool:
    """A changed row (``_replay_range``'s tuple) is a stop the candidate fires where the
    workflow ran on: in the record (not stopped there), or in the replay only, where a lifted
    stop left it running (recorded ``stopped``, but no stop in the replay's timeline)."""
    return (isinstance(r[2], str) and r[8] == "stop" and r[9].startswith("stop:")
            and (r[6] != "stop" or (not r[7].startswith("stop:") and _state_at(timeline, r[2], r[1]) is None)))


def _lifts(r: tuple, fired: dict) -> bool:
    """A changed row is a decision that fired a stop of the record (the stop links to it, in
    its workflow, by the trigger its recorded rule names) and replays as no stop at all, or as
    a stopped workflow's verdict (``stopped:NAME``: the workflow is stopped there in the replay,
    and a decision in a stopped workflow fires no stop: its stop is not the candidate's)."""
    f = fired.get(r[0])
    return (f is not None and (r[8] != "stop" or r[9].startswith("stopped:")) and r[7] == f"stop:{f[2]}"
            and r[2] == f[3])


def _replaces(r: tuple, fired: dict) -> bool:
    """A changed row is a decision that fired a stop of the record (as for ``_lifts``) and
    replays as a stop by another trigger (``stop:T1 -> stop:T2``): the workflow is stopped
    there in the replay too, by the candidate's trigger."""
    f = fired.get(r[0])
    return (f is not None and r[8] == "stop" and r[9].startswith("stop:") and r[9] != r[7]
            and r[7] == f"stop:{f[2]}" and r[2] == f[3])


def _carry_stops(engine: Any, led: Any, where: list, last: int, timeline: dict, rows: list,
                 fired: dict, bad: list, judged: tuple, run: Callable[..., tuple]) -> tuple[list, list, list, list]:
    """The workflow state as the candidate would have left it (``replay(carry_stops=True)``).
    Carry the stops the candidate fires forward: where a replayed decision is ``stop`` by a
    trigger of the candidate and the workflow ran on, the workflow is stopped by that trigger
    from there (a change inserted into ``timeline`` just after the decision) until the
    record's next resume the candidate allows, its criteria included (``_judge``). Lift the
    stops it does not fire: where a decision that fired a stop of the record (``fired``)
    replays as no stop, or as a stopped workflow's verdict (``stopped:T``: the candidate has
    the workflow stopped there already, and a decision in a stopped workflow fires none),
    that stop is taken out of ``timeline``, so the workflow is in the state it was in before
    it (running, unless it was stopped there already: a repair action fired it while
    stopped, or the candidate had it stopped) until
    the next change that stands: the record's next allowed resume, a stop of the record the
    candidate fires too (or one it cannot judge, or an operator's), or a stop the candidate
    fires meanwhile. Replace the trigger of
    the stops it fires by another one: where a decision that fired a stop of the record
    replays as a stop by another trigger (``stop:T1 -> stop:T2``), that stop stops the
    workflow by the candidate's trigger in the replay (listed with the candidate stops, with
    ``replaces``). Each time, the workflow's later decisions are replayed again under the
    changed timeline, earliest first, and what they come to replaces what they came to
    before: a changed row, or an unreplayable item (``bad``: an evaluator other than an
    ``Engine``, which never raises, may raise under one workflow state and not under
    another), so each decision is counted once, and its resumes are asked again (``_judge``; ``judged``:
    resumes, answers, cache). ``run`` replays a range of decisions (``replay._run``: this module does
    not import the replay). Returns (the changed rows, the candidate stops, the lifted stops, ``bad``)."""
    from .ledger import schema

    E = schema.entries
    seen: set[int] = set()
    stops: list[dict] = []
    lifts: list[dict] = []
    placed: dict[tuple, str] = {}  # (workflow, position in its timeline) -> the decision of a candidate stop
    while True:
        first: dict[str, tuple] = {}  # workflow -> its earliest stop to carry or to lift not done yet
        for r in sorted(rows, key=lambda r: r[1]):
            wf, seq = r[2], r[1]
            if (isinstance(wf, str) and seq not in seen and wf not in first
                    and (_carries(r, timeline) or _lifts(r, fired) or _replaces(r, fired))):
                first[wf] = r
        if not first:
            break
        for wf, r in sorted(first.items(), key=lambda kv: kv[1][1]):
            seq = r[1]
            seen.add(seq)
            events = timeline.setdefault(wf, [])
            if r[8] != "stop" or not r[9].startswith("stop:"):  # (`_lifts`) the record's stop, out of the timeline
                sseq, sid, trigger, _ = fired[r[0]]
                at = bisect.bisect_left(events, (sseq,))
                if at < len(events) and events[at][0] == sseq:
                    del events[at]
                lifts.append({"workflow": wf, "trigger": trigger, "stop": sid, "decision_id": r[0], "seq": seq,
                              "at": r[5], "sseq": sseq})
            else:
                state = {"name": wf, "status": "stopped", "stopped_by": r[9][len("stop:"):], "stopped_at": r[5]}
                replaces = fired[r[0]] if _replaces(r, fired) else None
                pos = replaces[0] if replaces is not None else seq + 0.5
                at = bisect.bisect_left(events, (pos,))
                if replaces is not None and at < len(events) and events[at][0] == pos:  # in the record's stop's place,
                    state = events[at][1] | {"stopped_by": state["stopped_by"]}  # by the candidate's trigger
                    del events[at]
                events.insert(at, (pos, state, None))
                placed[(wf, pos)] = r[0]
                stops.append({"workflow": wf, "trigger": state["stopped_by"], "decision_id": r[0], "seq": seq,
                              "at": r[5], "until": pos, "replaces": replaces[1] if replaces is not None else None,
                              "replaces_trigger": replaces[2] if replaces is not None else None})
            if wf in judged[0]:  # its resumes after the change, asked again under the changed timeline
                judged[1][wf] = _judge(engine, wf, events, judged[0][wf], judged[2])
            # its later decisions, replayed again under the changed timeline: what they come to now
            # (changed, or unreplayable) replaces what they came to before
            rows = [x for x in rows if not (x[2] == wf and x[1] > seq)]
            bad = [b for b in bad if not (b["workflow"] == wf and b["seq"] > seq)]
            if seq < last:
                more = run(engine, led, [*where, E.c.workflow == wf], seq + 1, last, timeline)
                rows += more[0]
                bad += more[2]
    bad.sort(key=lambda b: b["seq"])
    # the resumes that stand but do not lift the candidate's own stops of these triggers (cannot be asked)
    held = {(x["workflow"], x["resume"]): set(x["triggers"]) for a in judged[1].values() for x in a[3] if x["reason"]}

    def lifting(wf: str, pos: float, triggers: set) -> str | None:  # the resume that lifts them (None: none)
        return next((e[2] for e in timeline.get(wf, []) if e[1] is None and e[0] > pos
                     and not triggers & held.get((wf, e[2]), set())), None)

    for cs in stops:  # the resume that lifts each candidate stop, in the final timeline (None: to the end)
        cs["until"] = lifting(cs["workflow"], cs["until"], {cs["trigger"]})
    for answers in judged[1].values():  # the decisions of the candidate's own stops kept, and the resume lifting them
        for i, x in enumerate(answers[3]):
            answers[3][i] = {("decisions" if k == "stops" else k): [placed.get((x["workflow"], p)) for p in v]
                             if k == "stops" else v for k, v in x.items()}
            answers[3][i]["until"] = lifting(x["workflow"], x["seq"], set(x["triggers"]))
    for lf in lifts:  # where each lifted stop ends, in the final timeline
        events = timeline.get(lf["workflow"], [])
        at = bisect.bisect_left(events, (lf["sseq"],))
        before = events[at - 1][1] if at > 0 else None
        lf["until"], lf["until_kind"] = _change_after(events, lf["workflow"], lf["sseq"], placed)
        lf["stays_stopped_by"] = before.get("stopped_by") if before is not None else None
        del lf["sseq"]
    for answers in judged[1].values():  # where each resume the candidate allows runs to, in the final timeline
        for x in answers[2]:
            events = timeline.get(x["workflow"], [])
            x["until"], x["until_kind"] = _change_after(events, x["workflow"], x["seq"], placed)
    return rows, stops, lifts, bad


def _state_at(timeline: dict, workflow: str | None, seq: int) -> dict | None:
    events = timeline.get(workflow) if workflow else None
    if not events:
        return None
    i = bisect.bisect_left(events, (seq,)) - 1  # the latest change strictly before the decision
    return events[i][1] if i >= 0 else None
