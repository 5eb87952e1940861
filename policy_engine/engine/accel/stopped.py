"""The stopped-workflow lane: the decision for an action in a stopped workflow, from a
template per (workflow, type, trigger, `stopped_at`).

Once a stop trigger fires, every action its workflow proposes is answered `stop` until a
resume decision allows it, and the runtime passes the stopped state on every call (see
`runtime.core`). The reference (`gate.evaluate` -> `decide.stopped`) parses `stopped_at`
and builds the stop's info, the deciding rule and the decision on each call, and the
decision's JSON has no template (`Decision.to_json`, and the ledger's canonical text in
`runtime.gatejson`, asked pydantic). Here the decision's fields are built once per
(workflow, type, trigger, `stopped_at`) by `decide.stopped` itself; a call copies them and
writes in what varies (`action_id`, `evaluated_at`, `reversibility`), and the fields set is
a `models.DecisionJson`, so the JSON is written from the template's too.

Only the plainest input takes the lane: a dict action, a dict state whose `status` is the
str `stopped`, `now` omitted or readable (a UTC datetime, or converted to one as the
reference converts it), the workflow, type and trigger names str (`stopped_at` a str or
absent), and an action type that does not run while stopped. Every check the reference
makes before `decide.stopped` is made here with the same functions, in the same order;
anything they refuse, and any other input, returns None and the reference decides (and
says why). `tests/test_stopped_lane.py` compares the two.
"""

from __future__ import annotations

import threading
from typing import Any

from ...compiled import ECHOED, CompiledPolicy
from ...models import DecisionJson
from ..decide import stopped
from ..inputs import check_fields, check_size, plain_flat
from ..util import deferred_times, fmt_ts, short
from .templates import decision_of, lane_now

__all__ = ["StoppedLane"]

_MAX = 4096  # templates kept per engine; beyond it the lane still answers, without keeping more


class StoppedLane:
    """The templates of one compiled policy's stopped-workflow decisions."""

    __slots__ = ("p", "templates", "lock")

    def __init__(self, p: CompiledPolicy) -> None:
        self.p = p
        # (workflow, type, trigger, stopped_at) -> (fields without id and times, fields set, CAction or None)
        self.templates: dict[tuple, tuple[dict, DecisionJson, Any]] = {}
        self.lock = threading.Lock()

    def decide(self, action: dict, state: dict, now: Any) -> Any:
        """The decision `gate.evaluate(p, action, state, now)` makes when it is
        `decide.stopped`'s, or None (the reference decides)."""
        now_dt = lane_now(now)
        if now_dt is None:  # unreadable: the reference says why
            return None
        status = state.get("status", "running")
        if type(status) is not str or status != "stopped":
            return None
        if not plain_flat(action, ECHOED) and check_fields(action, ECHOED):
            return None
        wname = action.get("workflow")
        tname = action.get("type")
        trigger = state.get("stopped_by")
        stopped_at = state.get("stopped_at")
        if type(wname) is not str or type(tname) is not str or type(trigger) is not str or not (
                stopped_at is None or type(stopped_at) is str):
            return None
        if not plain_flat(state) and check_size(state):
            return None
        aid = action.get("id")
        aid = aid if type(aid) is str else (None if aid is None else short(aid)[1:-1])
        key = (wname, tname, trigger, stopped_at)
        got = self.templates.get(key)
        if got is None:
            p = self.p
            wf = p.workflows.get(wname)
            ca = wf.actions.get(tname) if wf is not None else None
            if ca is not None and ca.runs_while_stopped:  # its own rules decide: the reference
                return None
            # the reference's own builder, at this `now`, for no id (its time fields are replaced below)
            tmpl = stopped(p, now_dt, wf, wname, tname, None, state).__dict__.copy()
            got = (tmpl, DecisionJson(tmpl), ca)
            with self.lock:
                if len(self.templates) < _MAX:
                    self.templates[key] = got
        tmpl, fs, ca = got
        d = tmpl.copy()
        d["action_id"] = aid
        if ca is not None:  # rendered when read (the reference renders them now: the same text)
            deferred_times(ca, d, now_dt)
        else:
            d["evaluated_at"] = fmt_ts(now_dt)
        return decision_of(d, fs)
