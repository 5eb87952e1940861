"""Replay: re-evaluate recorded gate decisions under a candidate policy set and list every
changed verdict (DESIGN.md, "Rollbacks at scale, replay, and learning from a miss").

    from policy_engine.replay import replay
    r = replay("policies-next/", "sqlite:///stopline.db", since="2026-11-01T00:00:00Z")
    r.counts            # {"allow -> deny": 12, ...}
    r.changed[0]        # ChangedVerdict(decision_id=..., old_effect="allow", new_effect="deny", ...)

Each decision is evaluated with the action *as recorded* (its integral floats, which canonical
JSON writes as integers, back as floats: ``runtime.recorded``), the ``now`` it was decided at
and the workflow state the ledger held just before it (the latest ``stop`` or allowed
``resume`` of its workflow with a lower sequence number), so a replay under the policy
that decided it gives the same verdict. Only the recorded input is read: a decision
recorded under a policy that no longer loads (or no longer exists) replays the same way.
By default the workflow state is the candidate's: its stops are carried, the record's it does
not fire lifted, a recorded resume it refuses (the criteria of every stop standing there, its
own stops' included) does not lift the stop, and a refused one it allows does (``carry_stops``;
the workflow state: ``replay_state``).

Work is split by sequence range over processes (``workers``; default: the machine's
cores, at most 2 on small ledgers it is not worth it); each process opens the ledger and
loads the candidate policy itself, and sends back only the changed verdicts.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from .replay_state import _carries, _carry_stops, _judge, _lifts, _replaces, _state_at, _timeline
from .timestamps import format_micros

__all__ = ["replay", "ReplayResult", "ChangedVerdict", "rule_of", "changed_executions"]

#: how strict an effect is (a replayed verdict that goes up this order is a tightening)
STRICTNESS = {"allow": 0, "require_approval": 1, "deny": 2, "stop": 3}
PAGE = 5000
PARALLEL_FROM = 5000  #: below this many decisions one process is faster than starting two


def rule_of(deciding: Any) -> str:
    """The deciding rule as one word: the rule's name, ``stop:NAME`` for a trigger,
    ``stopped:NAME`` for a stopped workflow, or the synthetic kind (``default``, ...)."""
    if deciding is None:
        return "?"
    if not isinstance(deciding, dict):
        deciding = {"kind": getattr(deciding, "kind", None), "name": getattr(deciding, "name", None)}
    kind, name = deciding.get("kind"), deciding.get("name")
    if kind == "rule":
        return str(name)
    if kind in ("stop", "stopped"):
        return f"{kind}:{name}"
    return str(kind if not name or name == kind else f"{kind}:{name}")


@dataclass(frozen=True)
class ChangedVerdict:
    decision_id: str
    seq: int
    workflow: str | None
    action_type: str | None
    action_id: str | None
    now: str | None
    old_effect: str
    old_rule: str
    new_effect: str
    new_rule: str
    new_reason: str
    old_policy_hash: str | None
    executions: tuple[str, ...] = ()  #: executions recorded under this decision

    @property
    def transition(self) -> str:
        return f"{self.old_effect} -> {self.new_effect}"

    @property
    def tightened(self) -> bool:
        return STRICTNESS.get(self.new_effect, 9) > STRICTNESS.get(self.old_effect, 9)

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"executions": list(self.executions), "transition": self.transition}


@dataclass(frozen=True)
class ReplayResult:
    policy_hash: str  #: the candidate policy set's hash
    replayed: int  #: decisions read: changed + unchanged + unreplayable
    unchanged: int  #: re-evaluated, with the same effect and deciding rule
    changed: tuple[ChangedVerdict, ...]
    #: decisions that could not be re-evaluated: ``decision_id``, ``seq``, ``workflow``, ``reason`` (and
    #: ``stop_stands``: the stop of the record it fired, which is not lifted)
    unreplayable: tuple[dict, ...] = ()
    workers: int = 1
    recorded_policies: tuple[str, ...] = ()  #: the policy hashes the replayed decisions were recorded under
    seconds: float = 0.0
    #: the stops the candidate fired where the record's workflow ran on (``carry_stops``), in
    #: order: ``workflow``, ``trigger``, ``decision_id``, ``seq``, ``at``, and ``until``: the
    #: resume that lifts it in the replay (the record's, which the candidate allows, its trigger's criteria
    #: included: ``candidate_own_stops_kept``), or None (to the end);
    #: ``replaces``, ``replaces_trigger``: where the decision fired a stop of the record by
    #: another trigger, that stop's id and trigger (the candidate's takes its place), else None
    candidate_stops: tuple[dict, ...] = ()
    #: the stops of the record the candidate would not have fired (``carry_stops``), in order:
    #: ``workflow``, ``trigger``, ``stop`` (the stop entry's id), ``decision_id`` (the decision
    #: that fired it), ``seq``, ``at``; ``until``: the id of the entry its lifting ends at, of kind
    #: ``until_kind``: ``resume`` (the record's next allowed resume), ``stop`` (a stop of the
    #: record that stands) or ``candidate stop`` (a stop the candidate fires meanwhile: its
    #: decision's id); both None: to the end; ``stays_stopped_by``: a trigger that still holds
    #: the workflow stopped in between (a stop fired by a repair action while stopped, or by a
    #: decision the candidate replays as ``stopped:T``: it had the workflow stopped already), or None
    candidate_lifts: tuple[dict, ...] = ()
    #: the allowed resumes of the record the candidate refuses (``carry_stops``), in order: ``workflow``,
    #: ``resume`` (its entry id), ``seq``, ``at``, ``principal``, ``stopped_by`` (the triggers of the stops
    #: that stand there), ``unmet``, ``errors``; ``until``: the next resume that lifts the stop in the
    #: replay, or None (to the end); a stop whose trigger it does not declare is a refusal (``errors`` says so).
    #: ``unjudged_resumes``: those it cannot be asked (the record's evidence), which stand (``reason``)
    candidate_refused_resumes: tuple[dict, ...] = ()
    unjudged_resumes: tuple[dict, ...] = ()
    #: the refused resumes of the record the candidate allows (``carry_stops``), in order: ``workflow``,
    #: ``resume``, ``seq``, ``at``, ``principal``, ``recorded_unmet`` (what the record found unmet),
    #: ``stopped_by``; ``until``, ``until_kind``: where the workflow it restarts runs to in the replay, as
    #: for ``candidate_lifts`` (``resume``: the record's next allowed resume), both None: to the end
    candidate_allowed_resumes: tuple[dict, ...] = ()
    #: the allowed resumes of the record that do not lift a stop the candidate fired itself (``carry_stops``;
    #: its criteria are asked at each resume where it stands, with the record's), in order: ``workflow``,
    #: ``resume``, ``seq``, ``at``, ``principal``, ``triggers`` (the candidate's own that stand on), ``decisions``
    #: (those that fired them), ``unmet``, ``errors`` (the candidate refuses it) or ``reason`` (it cannot be asked:
    #: the resume stands for the record's stops, not for these), ``stopped_by``, ``until`` (as for refused ones)
    candidate_own_stops_kept: tuple[dict, ...] = ()

    @property
    def counts(self) -> dict[str, int]:
        """``"old -> new"`` effect transitions (rule changes with the same effect as ``"allow -> allow"``)."""
        out: dict[str, int] = {}
        for c in self.changed:
            out[c.transition] = out.get(c.transition, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))

    @property
    def groups(self) -> list[dict[str, Any]]:
        """Changed verdicts grouped by (old effect, old rule, new effect, new rule), largest first."""
        g: dict[tuple, list[ChangedVerdict]] = {}
        for c in self.changed:
            g.setdefault((c.old_effect, c.old_rule, c.new_effect, c.new_rule), []).append(c)
        rows = [{"old_effect": k[0], "old_rule": k[1], "new_effect": k[2], "new_rule": k[3], "count": len(v),
                 "executed": sum(1 for c in v if c.executions), "decisions": [c.decision_id for c in v[:5]]}
                for k, v in g.items()]
        return sorted(rows, key=lambda r: (-r["count"], r["old_effect"], r["old_rule"], r["new_effect"], r["new_rule"]))

    def to_json(self) -> dict[str, Any]:
        return {"policy_hash": self.policy_hash, "replayed": self.replayed, "unchanged": self.unchanged,
                "changed_count": len(self.changed), "counts": self.counts, "groups": self.groups,
                "executed_changed": sum(1 for c in self.changed if c.executions),
                "changed": [c.to_json() for c in self.changed], "unreplayable": list(self.unreplayable),
                "recorded_policies": list(self.recorded_policies), "workers": self.workers,
                "candidate_stops": list(self.candidate_stops), "candidate_lifts": list(self.candidate_lifts),
                "candidate_refused_resumes": list(self.candidate_refused_resumes),
                "unjudged_resumes": list(self.unjudged_resumes),
                "candidate_allowed_resumes": list(self.candidate_allowed_resumes),
                "candidate_own_stops_kept": list(self.candidate_own_stops_kept)}

    def text(self) -> str:
        lines = [f"replayed {self.replayed} decision(s) under policy {self.policy_hash[:19]}: "
                 f"{len(self.changed)} changed, {self.unchanged} unchanged"
                 + (f", {len(self.unreplayable)} unreplayable" if self.unreplayable else "")]
        lines += [f"  {tr}: {n}" for tr, n in self.counts.items()]
        for cs in self.candidate_stops[:10]:
            lines.append(f"  candidate stop: {cs['workflow']} stopped by `{cs['trigger']}` at decision "
                         f"{cs['decision_id']} ({cs['at']}), "
                         + (f"in place of the recorded stop {cs['replaces']} by `{cs['replaces_trigger']}`, "
                            if cs.get("replaces") else "")
                         + (f"until the resume {cs['until']}" if cs["until"] else "to the end of the replay")
                         + ": the decisions after it are replayed as stopped")
        if len(self.candidate_stops) > 10:
            lines.append(f"  … {len(self.candidate_stops) - 10} more candidate stops (--format json lists every one)")
        for lf in self.candidate_lifts[:10]:
            lines.append(f"  lifted stop: {lf['workflow']} stopped by `{lf['trigger']}` at decision "
                         f"{lf['decision_id']} ({lf['at']}), which the candidate does not fire, " + _until(lf)
                         + (f": the workflow stays stopped by `{lf['stays_stopped_by']}` in between"
                            if lf["stays_stopped_by"] else ": the decisions in between are replayed as if it ran"))
        if len(self.candidate_lifts) > 10:
            lines.append(f"  … {len(self.candidate_lifts) - 10} more lifted stops (--format json lists every one)")
        for rr in self.candidate_refused_resumes[:10]:
            lines.append(f"  refused resume: {rr['workflow']} resumed at {rr['at']} by {rr['principal'] or '?'} "
                         f"(resume {rr['resume']}), which the candidate refuses ("
                         + (f"unmet: {', '.join(f'`{u}`' for u in rr['unmet'])}" if rr["unmet"] else rr["errors"])
                         + f"): it stays stopped by {' and '.join(f'`{t}`' for t in rr['stopped_by'])} "
                         + (f"until the resume {rr['until']}" if rr["until"] else "to the end of the replay")
                         + ": the decisions in between are replayed as stopped")
        lines += [f"  resume stands: {ur['workflow']} resumed at {ur['at']} (resume {ur['resume']}) is not asked "
                  f"again: {ur['reason']}" for ur in self.unjudged_resumes[:10]]
        for ar in self.candidate_allowed_resumes[:10]:
            lines.append(f"  allowed resume: {ar['workflow']} resume at {ar['at']} by {ar['principal'] or '?'} "
                         f"(resume {ar['resume']}), refused in the record"
                         + (f" (unmet: {', '.join(f'`{u}`' for u in ar['recorded_unmet'])})" if ar["recorded_unmet"]
                            else "")
                         + ", which the candidate allows: the stop by "
                         + " and ".join(f"`{t}`" for t in ar["stopped_by"])
                         + " is lifted there, " + _until(ar) + ": the decisions in between are replayed as if it ran")
        for ks in self.candidate_own_stops_kept[:10]:
            lines.append(f"  own stop kept: {ks['workflow']} resumed at {ks['at']} by {ks['principal'] or '?'} "
                         f"(resume {ks['resume']}) does not lift the candidate's own stop by "
                         + " and ".join(f"`{t}`" for t in ks["triggers"])
                         + f" (decision {', '.join(str(d) for d in ks['decisions'])}): "
                         + (f"it cannot be asked: {ks['reason']}" if ks["reason"] else "the candidate refuses it ("
                            + (f"unmet: {', '.join(f'`{u}`' for u in ks['unmet'])}" if ks["unmet"] else ks["errors"])
                            + ")")
                         + f"; it stays stopped by {' and '.join(f'`{t}`' for t in ks['stopped_by'])} "
                         + (f"until the resume {ks['until']}" if ks["until"] else "to the end of the replay")
                         + ": the decisions in between are replayed as stopped")
        for n, what in ((len(self.candidate_refused_resumes), "refused resumes"),
                        (len(self.unjudged_resumes), "standing resumes"),
                        (len(self.candidate_allowed_resumes), "allowed resumes"),
                        (len(self.candidate_own_stops_kept), "own stops kept")):
            if n > 10:
                lines.append(f"  … {n - 10} more {what} (--format json lists every one)")
        for g in self.groups:
            lines.append(f"\n{g['old_effect']} ({g['old_rule']}) -> {g['new_effect']} ({g['new_rule']}): "
                         f"{g['count']} decision(s), {g['executed']} executed")
            for c in [c for c in self.changed if (c.old_effect, c.old_rule, c.new_effect, c.new_rule)
                      == (g["old_effect"], g["old_rule"], g["new_effect"], g["new_rule"])][:10]:
                lines.append(f"  {c.decision_id}  {c.workflow or '-'}/{c.action_type or '-'}"
                             f"{' ' + c.action_id if c.action_id else ''}  at {c.now}"
                             + (f"  executed {', '.join(c.executions)}" if c.executions else ""))
            if g["count"] > 10:
                lines.append(f"  … {g['count'] - 10} more (--format json lists every one)")
        for u in self.unreplayable[:10]:
            st = u.get("stop_stands")
            lines.append(f"unreplayable {u['decision_id']}: {u['reason']}"
                         + (f" (the stop of {st['workflow']} by `{st['trigger']}` linked to it stands: {st['stop']})"
                            if st else ""))
        if len(self.unreplayable) > 10:
            lines.append(f"… {len(self.unreplayable) - 10} more unreplayable (--format json lists every one)")
        return "\n".join(lines)


def _until(lf: dict) -> str:
    ref = lf["until"]
    return {"resume": f"until the resume {ref}", "stop": f"until the recorded stop {ref} (which stands)",
            "candidate stop": f"until the candidate's stop at decision {ref}"}.get(lf["until_kind"] or "",
                                                                                   "to the end of the replay")


# ------------------------------------------------------------------------------ the work
def _ts(t: Any, name: str = "time") -> str | None:
    """``since``/``until`` as the ledger's stored form of a time (RFC 3339 UTC, six fraction
    digits, ``Z``): an aware datetime or an RFC 3339 string with its offset. A time without
    one (which would be read in the machine's local zone) is refused, as ``stopline replay``
    refuses it; so is anything else: :class:`~policy_engine.ledger.InvalidQuery`."""
    if t is None:
        return None
    from .ledger import InvalidQuery
    from .timestamps import parse_rfc3339

    shown = repr(str(t)[:64]) if isinstance(t, (str, datetime)) else ""
    if isinstance(t, datetime):
        naive = t.tzinfo is None or t.utcoffset() is None
    elif isinstance(t, str):
        try:  # digits below the microsecond round up: a decision just before the bound stays before it
            from .engine.util import window_now

            return format_micros(window_now(t, parse_rfc3339(t, allow_space=True)))
        except (ValueError, OverflowError):
            pass
        try:  # a time the CLI would call one, but without its offset
            naive = datetime.fromisoformat(t.strip()).tzinfo is None
        except ValueError:
            naive = False
        if not naive:
            raise InvalidQuery(f"`{name}` is not an RFC 3339 time (e.g. 2026-11-01T00:00:00Z): {shown}") from None
    else:
        raise InvalidQuery(f"`{name}` is a datetime or an RFC 3339 string, not a value of type `{type(t).__name__}`")
    if naive:
        raise InvalidQuery(f"`{name}` has no time zone: give its offset (e.g. `Z`): {shown}")
    try:
        return format_micros(t)
    except OverflowError:
        raise InvalidQuery(f"`{name}` is out of range in UTC: {shown}") from None


def _workflow_arg(workflow: Any) -> None:
    """``workflow``: None or a workflow's name as text. Anything else (a number, which
    PostgreSQL refuses to compare with text and SQLite never matches; a string with lone
    surrogates, as a shell passes bytes that are not UTF-8, which no database can be sent)
    is :class:`~policy_engine.ledger.InvalidQuery`."""
    if workflow is None:
        return
    from .ledger import InvalidQuery

    if not isinstance(workflow, str):
        raise InvalidQuery(f"`workflow` is a workflow's name (a string), not a value of type "
                           f"`{type(workflow).__name__}`")
    try:
        workflow.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidQuery(f"`workflow` is not UTF-8 text: {workflow[:64]!r}") from None


def _replay_args(policies: Any, ledger: Any, workers: Any) -> None:
    """``policies`` a path, a list of paths or an ``Engine``; ``ledger`` a URL or a ``Ledger``;
    ``workers`` None or a count of 1 or more. Anything else is
    :class:`~policy_engine.ledger.InvalidQuery` naming the argument, before the ledger is
    opened (before: an AttributeError or a TypeError from deep inside the replay)."""
    from .ledger import InvalidQuery, Ledger

    paths = isinstance(policies, (str, os.PathLike)) or (
        isinstance(policies, (list, tuple)) and bool(policies)
        and all(isinstance(p, (str, os.PathLike)) for p in policies))
    if not paths and not callable(getattr(policies, "evaluate", None)):
        raise InvalidQuery("`policies` is a path, a list of paths or an Engine, not a value of type "
                           f"`{type(policies).__name__}`" + (" (an empty list)" if policies == [] else ""))
    if not isinstance(ledger, (str, Ledger)):
        raise InvalidQuery(f"`ledger` is a URL or a Ledger, not a value of type `{type(ledger).__name__}`")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise InvalidQuery(f"`workers` is a number of processes (1 or more) or None, not {workers!r:.40}")


def _filters(since: str | None, until: str | None, workflow: str | None) -> list:
    from .ledger import schema

    E = schema.entries
    return [E.c.kind == "decision", *([E.c.time >= since] if since is not None else []),
            *([E.c.time < until] if until is not None else []),
            *([E.c.workflow == workflow] if workflow is not None else [])]


def os_threads() -> int:
    """The threads this process runs, as the OS counts them: what ``os.fork`` counts before
    it warns that the process is multi-threaded (Python 3.12+), native threads included
    (a C library's pool, threads started with ``_thread`` such as pytest-xdist's), which
    ``threading.active_count`` does not see. Where the OS does not say (no ``/proc``), the
    Python threads."""
    import threading

    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2:].split()[17])  # field 20, num_threads (after `pid (comm)`)
    except (OSError, ValueError, IndexError):
        return threading.active_count()


_W: dict[str, Any] = {}  # per process: the engine and the ledger


#: set by the parent just before a forked pool starts: its candidate engine, which every
#: worker inherits (loaded once, and the same policy in every worker even if the files change)
_INHERITED: dict[str, Any] = {}


def _init(policy_paths: Sequence[str] | None, url: str, policy_hash: str | None = None) -> None:
    from . import load
    from .ledger import Ledger

    eng = _INHERITED.get("engine")
    if eng is None:  # spawned, not forked: load the policy here, once per worker
        assert policy_paths is not None  # workers run only for policies given by path
        eng = load(list(policy_paths)) if len(policy_paths) != 1 else load(policy_paths[0])
        if policy_hash is not None and eng.policy_hash != policy_hash:
            # the files changed since the caller loaded them: this worker would replay another policy
            # than the one the result names; its work raises, and the caller replays in its own process
            _W["changed"] = f"the policy files changed since the replay loaded them ({eng.policy_hash})"
    _W["engine"] = eng
    _W["ledger"] = Ledger.open(url)


#: the body fields a replay reads (scan picks them out in the database: a decision's body is ~2 KB)
FIELDS = ("action", "now", "policy_hash", "action_error", "decision.effect", "decision.deciding.kind",
          "decision.deciding.name", "decision.action_type", "decision.action_id", "action_doubles")


def _run(engine: Any, led: Any, where: list, lo: int, hi: int, timeline: dict) -> tuple[list, int, list, set]:
    """Replay decisions with lo <= seq <= hi; (changed as tuples, replayed, unreplayable, recorded policy hashes)."""
    from .gcpause import paused

    with paused():  # nothing read here lives in a cycle: no collector passes over the pages meanwhile
        return _replay_range(engine, led, where, lo, hi, timeline)


def _replay_range(engine: Any, led: Any, where: list, lo: int, hi: int, timeline: dict) -> tuple[list, int, list, set]:
    from .runtime.recorded import restore_doubles
    from .scan import scan
    from .timestamps import parse_ts

    changed: list[tuple] = []
    bad: list[dict] = []
    hashes: set[str] = set()
    n = 0
    evaluate = engine.evaluate
    for seq, eid, wf, t, (action, now, ph, aerr, oe, dkind, dname, otype, oid, doubles) in scan(
            led, where, FIELDS, page=PAGE, after=lo - 1, upto=hi):
        hashes.add(ph if isinstance(ph, str) else "")
        if not isinstance(action, dict) or aerr:
            bad.append({"decision_id": eid, "seq": seq, "workflow": wf,
                        "reason": str(aerr or "the recorded action is not a JSON object")})
            continue
        if doubles is not None:  # the action as the gate evaluated it: its integral floats as floats
            try:
                action = restore_doubles(action, doubles)
            except ValueError as e:
                bad.append({"decision_id": eid, "seq": seq, "workflow": wf,
                            "reason": f"the recorded action cannot be read: {e}"})
                continue
        when = now or t
        try:  # a recorded `now` that is not a time is the record's fault, not the candidate's verdict
            parse_ts(when, "the recorded `now`")
        except ValueError as e:
            bad.append({"decision_id": eid, "seq": seq, "workflow": wf, "reason": str(e)})
            continue
        try:
            d = evaluate(action, _state_at(timeline, wf, seq) if timeline else None, when)
        except Exception as e:  # noqa: BLE001  (one decision the candidate cannot evaluate: listed, never a crash)
            bad.append({"decision_id": eid, "seq": seq, "workflow": wf,
                        "reason": f"the candidate policy cannot evaluate it: {type(e).__name__}: {str(e)[:200]}"})
            continue
        n += 1
        oe = oe if isinstance(oe, str) else None  # (a recorded effect of another type: unknown, `?`)
        orule = rule_of({"kind": dkind, "name": dname}) if dkind is not None or dname is not None else "?"
        nrule = rule_of(d.deciding)
        if d.effect != oe or nrule != orule:  # (recorded by another writer: a value that is not text reads as None)
            otype = otype if isinstance(otype, str) else action.get("type")
            oid = oid if isinstance(oid, str) else action.get("id")
            changed.append((eid, seq, wf, otype if isinstance(otype, str) else None,
                            oid if isinstance(oid, str) else None, when, oe or "?", orule, d.effect, nrule,
                            d.reason, ph if isinstance(ph, str) else None))
    return changed, n, bad, hashes


class PolicyChanged(Exception):
    """A spawned worker loaded other policy files than the caller's (they changed meanwhile)."""


def _work(lo: int, hi: int, where_args: tuple, timeline: dict) -> tuple:
    if _W.get("changed"):
        raise PolicyChanged(_W["changed"])
    return _run(_W["engine"], _W["ledger"], _filters(*where_args), lo, hi, timeline)


def _parts(led: Any, where: list, step: int, last: int) -> list[tuple[int, int]]:
    """The decisions (``where``, ``seq <= last``) in ranges of ``step`` decisions each, as
    ``(first seq, last seq)``: their numbers stream past in pages, only the bounds are kept
    (memory follows the parts, not the ledger: a list of every decision's number was 8 MB
    per 200,000 decisions)."""
    from sqlalchemy import select

    from .ledger import schema

    E = schema.entries
    out: list[tuple[int, int]] = []
    after, i, lo, seq = -1, 0, -1, -1
    while True:
        with led.reading() as c:
            page = c.execute(select(E.c.seq).where(*where, E.c.seq > after, E.c.seq <= last)
                             .order_by(E.c.seq).limit(PAGE * 10)).scalars().all()
        if not page:
            break
        for seq in page:
            if i % step == 0:
                lo = seq
            i += 1
            if i % step == 0:
                out.append((lo, seq))
        after = page[-1]
    if i % step:
        out.append((lo, seq))
    return out


def _executions_of(led: Any, decisions: list[tuple[int, str]]) -> dict[str, list[str]]:
    """decision id -> the executions recorded under it, by the ledger's links (one indexed
    query per 500 decisions, ``decisions`` as (seq, id)). The link names the decision: an
    execution whose body's ``decision`` is not its id as text (another recorder's entry)
    is still listed under the decision it links to, never a crash."""
    from sqlalchemy import select

    from .ledger import schema

    E, L = schema.entries, schema.links
    out: dict[str, list[str]] = {}
    with led.reading() as c:
        for i in range(0, len(decisions), 500):
            ids = dict(decisions[i:i + 500])
            for to_seq, xid in c.execute(select(L.c.to_seq, E.c.id).join(E, E.c.seq == L.c.from_seq)
                                         .where(L.c.to_seq.in_(list(ids)), E.c.kind == "execution")
                                         .order_by(E.c.seq)):
                lst = out.setdefault(ids[to_seq], [])
                if xid not in lst:
                    lst.append(xid)
    return out


def replay(policies: Any, ledger: Any, *, since: Any = None, until: Any = None, workflow: str | None = None,
           workers: int | None = None, progress: Any = None, carry_stops: bool = True) -> ReplayResult:
    """Re-evaluate every recorded decision (``since <= time < until``, of ``workflow``)
    under ``policies`` (a path or a list of paths, which each worker loads; or an
    ``Engine``, replayed in this process). ``ledger``: a URL or a ``Ledger``.

    ``carry_stops``: a stop the candidate fires where the record's workflow ran on stops the
    workflow in the replay too, until the record's next allowed resume of it: its later
    decisions are replayed as stopped (``ReplayResult.candidate_stops`` lists each such stop);
    and a stop of the record fired by a decision the candidate replays as no stop (or as
    ``stopped``: it had the workflow stopped there already) is lifted, until the next change
    that stands (``ReplayResult.candidate_lifts``); and an allowed resume of the record the
    candidate refuses (the criteria of the record's stops that stand there in the replay, over
    the evidence and at the time recorded with it; a stop by a trigger it does not declare, which
    it cannot resume) does not lift the stop
    (``candidate_refused_resumes``; one it cannot be asked stands: ``unjudged_resumes``), and a refused
    resume of the record it allows lifts it (``candidate_allowed_resumes``). The candidate's own stops
    that stand at a recorded resume are asked there too: one whose criteria that evidence does not meet,
    or that cannot be asked, is not lifted (``candidate_own_stops_kept``).
    False: every decision under the workflow state the ledger recorded.

    ``since`` and ``until`` are aware datetimes or RFC 3339 strings with their offset
    (``2026-11-01T00:00:00Z``); a time without one raises
    :class:`~policy_engine.ledger.InvalidQuery`, as the CLI refuses it."""
    import multiprocessing
    import time
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from sqlalchemy import func, select

    from . import load
    from .ledger import Ledger, schema

    t0 = time.perf_counter()
    since_s, until_s = _ts(since, "since"), _ts(until, "until")
    _workflow_arg(workflow)
    _replay_args(policies, ledger, workers)
    owns = not isinstance(ledger, Ledger)
    led = Ledger.open(ledger) if owns else ledger
    try:
        paths: list[str] | None = None
        if isinstance(policies, (str, os.PathLike)):
            paths = [os.fspath(policies)]
        elif isinstance(policies, (list, tuple)) and all(isinstance(p, (str, os.PathLike)) for p in policies):
            paths = [os.fspath(p) for p in policies]
        engine = (load(paths[0]) if len(paths) == 1 else load(paths)) if paths is not None else policies
        where = _filters(since_s, until_s, workflow)
        E = schema.entries
        with led.reading() as c:  # how many, and the last: decisions appended meanwhile are not read
            total, first, last = c.execute(select(func.count(), func.min(E.c.seq), func.max(E.c.seq))
                                           .where(*where)).one()
        fired: dict[str, tuple] = {}  # an entry a stop links to -> that stop (``_timeline``)
        resumes: dict[str, dict] = {}  # workflow -> its resumes in the window (``_timeline``)
        timeline = _timeline(led, until_s, fired, resumes if carry_stops else None, since_s, workflow)
        cache: dict = {}  # a resume the candidate refuses does not lift the stop, one it allows does (``_judge``)
        judged = (resumes, {wf: _judge(engine, wf, timeline[wf], mine, cache) for wf, mine in resumes.items()}, cache)
        if workers is None:
            workers = min(os.cpu_count() or 1, 4) if total >= PARALLEL_FROM else 1
        url = str(ledger) if owns else str(led.url)  # a Ledger's url hides its password: pass the URL
        if paths is None or ":memory:" in url:
            workers = 1  # an Engine object or an in-memory ledger cannot be reopened by another process
        workers = max(1, min(workers, total or 1))
        parts: list[tuple] = [(first, last)] if total else []
        results: list[tuple] = []
        if workers == 1:
            for lo, hi in parts:
                results.append(_run(engine, led, where, lo, hi, timeline))
        else:
            # smaller pieces than one per worker, so a progress bar moves and the cores stay even
            pieces = max(workers * 4, total // 10_000)
            parts = _parts(led, where, -(-total // pieces), last)
            # fork where there is one and this process runs no other thread: no re-import of
            # the caller's __main__; a worker opens its own ledger connection and never
            # touches the parent's. A process with other threads (a server, a host's pool, a
            # native library's threads, a test runner's) spawns its workers: a forked child may
            # deadlock on a lock another thread held at the fork (Python 3.12+ warns of it,
            # counting the threads as the OS does: `os_threads`), and a spawned one loads the
            # policy itself. Never the platform's default (3.14 changes it on Linux).
            methods = multiprocessing.get_all_start_methods()
            single = os_threads() == 1
            ctx = multiprocessing.get_context("fork" if "fork" in methods and single else "spawn")
            if ctx.get_start_method() == "fork":
                _INHERITED["engine"] = engine
            try:
                with ProcessPoolExecutor(workers, mp_context=ctx,
                                         initializer=functools.partial(_init, paths, url,
                                                                       engine.policy_hash)) as pool:
                    futs = [pool.submit(_work, lo, hi, (since_s, until_s, workflow), timeline) for lo, hi in parts]
                    for i, f in enumerate(futs):
                        results.append(f.result())
                        if progress is not None:
                            progress(i + 1, len(futs))
            except (BrokenProcessPool, PolicyChanged):  # a worker died (killed, out of memory), or loaded
                # other policy files than this process did: do it here instead, under this process's policy
                workers, results = 1, [_run(engine, led, where, first, last, timeline)]
            finally:
                _INHERITED.clear()
        rows = [r for res in results for r in res[0]]
        bad = [b for res in results for b in res[2]]
        read = sum(res[1] for res in results) + len(bad)  # every decision read, once
        stops: list[dict] = []
        lifts: list[dict] = []
        if carry_stops and any(_carries(r, timeline) or _lifts(r, fired) or _replaces(r, fired) for r in rows):
            # (in this process: a decision's state depends on the verdicts before it)
            rows, stops, lifts, bad = _carry_stops(engine, led, where, last, timeline, rows, fired, bad, judged,
                                                 _run)
            rows.sort(key=lambda r: r[1])
        if carry_stops and fired:  # a stop fired by a decision the candidate cannot judge is not lifted
            bad = [b | {"stop_stands": {"stop": fired[b["decision_id"]][1], "workflow": fired[b["decision_id"]][3],
                                        "trigger": fired[b["decision_id"]][2]}}
                   if b["decision_id"] in fired else b for b in bad]
        hashes = sorted({h for res in results for h in res[3]} - {""})
        execs = _executions_of(led, [(r[1], r[0]) for r in rows])
        changed = tuple(ChangedVerdict(*r, executions=tuple(execs.get(r[0], ()))) for r in rows)  # type: ignore[misc]  # r: the fields before `executions`
        # every decision read is counted once: replayed = changed + unchanged + unreplayable
        refused, unjudged, allowed, kept = (tuple(sorted((x for a in judged[1].values() for x in a[i]),
                                                         key=lambda x: x["seq"])) for i in (0, 1, 2, 3))
        return ReplayResult(engine.policy_hash, read, read - len(changed) - len(bad), changed, tuple(bad), workers,
                            tuple(hashes), time.perf_counter() - t0, tuple(stops), tuple(lifts), refused, unjudged,
                            allowed, kept)
    finally:
        if owns:
            led.close()


def changed_executions(result: ReplayResult, *, tightened_only: bool = True) -> list[str]:
    """The executions a policy reversal covers: those recorded under a decision whose
    replayed verdict changed (and, by default, got stricter: the new policy would not
    have let it run as it did)."""
    out: list[str] = []
    for c in result.changed:
        if c.executions and (c.tightened or not tightened_only):
            out.extend(c.executions)
    return list(dict.fromkeys(out))

