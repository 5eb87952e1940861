"""The undeclared-type lane: the decision for an action whose type its (declared) workflow
does not declare, from a template per (workflow, type, values of the stop triggers).

The reference (`gate.evaluate` -> `gate.gate` with no action type -> `decide.decide` ->
`decide.undeclared`) evaluates the workflow's stop triggers (`CWorkflow.gate_stops`) and
builds the deny decision (deciding rule kind `undeclared`, a trace of every trigger, an
error naming the type), or a `stop` decision when a trigger fires, on every call. Here the
triggers' values are computed as the reference computes them, and the decision's fields
are built once per (workflow, type, values) by `decide.decide` itself; a call copies them
and writes in what varies (`action_id`, `evaluated_at`; such a decision has no
reversibility and no digest), and the fields set is a `models.DecisionJson`, so the JSON
is written from the template's too. A fired trigger is included: its decision is a
function of the values as well (`decide.decide` reads nothing else of the action).

A trigger whose condition is guarded by `action.type` (`CompiledExpr.type_guard`: the
types for which it can be anything but `false`) is `false` for a type outside its guard
without being called, as the compiler makes it for a declared type (`compiler._gate_entry`).

Only the plainest input takes the lane: a dict action, no workflow state, `now` omitted or
readable (converted to a UTC datetime as the reference converts it), the workflow and type
names exact str, the workflow declared and the type not declared in it. The lane first
looks the two names up (a cheap refusal for every other action: it chooses only whether
the lane answers); then every check the reference makes before its decision is made with
the same functions, in the same order (`check_fields(action, ECHOED)`, the id by `short`,
`check_fields(action, wf.stop_reads)`, `declared_problem`), each `check_fields` preceded,
as in the stopped lane, by `inputs.plain_flat` (True only when the fields are exact
scalars the exact check surely passes: a third of its cost; else the exact check decides),
first once over the fields of both checks (True for them all is True for each).
Anything they refuse, a trigger whose value is not a bool (an error: the reference says
which), and anything raising, returns None and the reference decides.
`tests/test_undeclared_lane.py` compares the two.
"""

from __future__ import annotations

import threading
from typing import Any

from ...compiled import ECHOED, CompiledPolicy
from ...models import DecisionJson
from ..decide import decide
from ..inputs import check_fields, declared_problem, plain_flat
from ..util import fmt_ts, short
from .templates import decision_of, lane_now

__all__ = ["UndeclaredLane"]

_MAX = 4096  # templates kept per engine; beyond it the lane still answers, without keeping more


class UndeclaredLane:
    """The templates of one compiled policy's undeclared-type decisions."""

    __slots__ = ("p", "stops", "templates", "lock", "last")

    def __init__(self, p: CompiledPolicy) -> None:
        self.p = p
        # workflow -> (it, its declared types, its stop triggers as (call, type guard or None)),
        # filled on a workflow's first undeclared type (a loaded engine adds no objects: goal 5)
        # (and the fields of both input checks: see _decide)
        self.stops: dict[str, tuple[Any, Any, tuple, tuple | None]] = {}
        # (workflow, type, values) -> (fields without id and time, fields set)
        self.templates: dict[tuple, tuple[dict, DecisionJson]] = {}
        self.lock = threading.Lock()
        self.last: tuple = (None, None)  # (the last fixed `now`, its text): replaced whole

    def decide(self, action: dict, now: Any) -> Any:
        """The decision `gate.evaluate(p, action, None, now)` makes for an action of a type
        its workflow does not declare, or None (the reference decides)."""
        try:
            return self._decide(action, now)
        except Exception:  # noqa: BLE001 - the reference decides (and says why)
            return None

    def _decide(self, action: dict, now: Any) -> Any:
        wname = action.get("workflow")
        tname = action.get("type")
        if type(wname) is not str or type(tname) is not str:
            return None
        of = self.stops.get(wname)
        if of is None:
            wf = self.p.workflows.get(wname)
            if wf is None:
                return None
            of = (wf, wf.actions, tuple((call, getattr(item.fn, "type_guard", None)) for call, item in wf.gate_stops),
                  None if wf.stop_reads is None else tuple(dict.fromkeys(ECHOED + wf.stop_reads)))
            self.stops[wname] = of  # (one store of a complete value: threads may race to the same one)
        wf, declared, stops, both = of
        if tname in declared:
            return None
        # the reference's checks, in its order
        now_dt = lane_now(now)
        if now_dt is None:  # unreadable: the reference says why
            return None
        # (`plain_flat` of the fields of both checks at once, all of them when the triggers may
        # read anything: True says both pass, as True for fewer fields would; False, each as
        # the reference makes it)
        if not plain_flat(action, both):
            if not plain_flat(action, ECHOED) and check_fields(action, ECHOED):
                return None
            reads = wf.stop_reads
            if not plain_flat(action, reads) and check_fields(action, reads):
                return None
        if declared_problem(None, action):
            return None
        aid = action.get("id")
        aid = aid if type(aid) is str else (None if aid is None else short(aid)[1:-1])
        # the stop triggers' values, as gate.gate computes them (a guarded one outside its guard: false)
        if stops:
            act = None
            values: list = []
            for call, guard in stops:
                if call is None or (guard is not None and tname not in guard):
                    values.append(False)
                    continue
                if act is None:
                    act = {"action": action, "workflow": wf.running_state, "now": now_dt, "policy": wf.policy}
                v = call(act)
                if type(v) is not bool:  # an error (or a value no trigger should have): the reference
                    return None
                values.append(v)
            key = (wname, tname, tuple(values))
        else:
            values = []
            key = (wname, tname, ())
        got = self.templates.get(key)
        if got is None:
            # the reference's own builder, at this `now`, for no id (its time field is replaced below)
            tmpl = decide(self.p, wf, None, wf.gate_stops, values, now_dt, wname, tname, None).__dict__.copy()
            got = (tmpl, DecisionJson(tmpl))
            with self.lock:
                if len(self.templates) < _MAX:
                    self.templates[key] = got
        tmpl, fs = got
        d = tmpl.copy()
        d["action_id"] = aid
        if now is None:
            d["evaluated_at"] = fmt_ts(now_dt)
        else:
            last = self.last
            if last[0] is now_dt:
                d["evaluated_at"] = last[1]
            else:
                d["evaluated_at"] = text = fmt_ts(now_dt)
                self.last = (now_dt, text)
        return decision_of(d, fs)
