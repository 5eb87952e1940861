"""The accelerator of one engine: a fused gate per (workflow, action type), built from the
compiled policy, and `evaluate`, the fast lane in front of the reference gate.

The fast lane takes the common call (a plain dict for a declared workflow and action type,
a running workflow, `now` in UTC or omitted) once the type's fused gate is built, and
returns exactly what the reference gate (`gate.evaluate`) returns for it, in fewer steps;
anything else, and anything the fused gate turns away, goes to the reference gate, which
calls `lane` (the accelerator's hook) for a declared type once the input is checked.
"""

from __future__ import annotations

import weakref
from datetime import UTC, datetime
from typing import Any

from ...compiled import CAction, CompiledPolicy, CWorkflow
from ...models import Decision
from .. import gate as _gate
from ..inputs import check_size, declared_problem
from . import declared
from .fused import FusedGate, fused_gate
from .shapes import ShapeMiss
from .templates import lane_decision

__all__ = ["Accelerator"]

_UTC = UTC


class Accelerator:
    """Fused gates, shape speculation and decision templates for one compiled policy.

    `lanes`: (workflow, action type) -> its fused gate (which holds the workflow's name,
    running state and policy constants); `types`: action type -> its fused gate, for a
    type declared in one workflow only (the commonest lookup, by type alone). Safe to share
    between threads (see `FusedGate`)."""

    __slots__ = ("p", "lanes", "types", "quick", "_reference", "quiets", "__weakref__")

    def __init__(self, p: CompiledPolicy) -> None:
        self.p = p
        self.lanes = {(w.name, a.name): fused_gate(w, a) for w in p.workflows.values() for a in w.actions.values()}
        count: dict = {}
        for w in p.workflows.values():
            for a in w.actions.values():
                count[a.name] = count.get(a.name, 0) + 1
        self.types = {a.name: self.lanes[(w.name, a.name)] for w in p.workflows.values()
                      for a in w.actions.values() if count[a.name] == 1}
        # the types `Engine.evaluate` takes straight to their fused gate: declared in one
        # workflow; one with declared fields (`fields { ... }`) when its fused function checks
        # them (`declared`), else the full path checks them
        self.quick = {t: fz for t, fz in self.types.items() if fz.action.fields is None or declared.ENABLED}
        self._reference = _gate.evaluate
        self.quiets: dict | None = None  # fused gate -> the Quiet of its last build (see `keep_quiet`)

    def keep_quiet(self) -> None:
        """What its fused gates' builds make, out of the collector's walks as the engine's
        own objects are (`native.quiet`, `FusedGate.build`): each build's `Quiet` kept here,
        which nothing it holds refers to (a fused gate refers to this object weakly)."""
        self.quiets = {}
        ref = weakref.ref(self)
        for fz in self.lanes.values():
            fz.quiet = ref

    def gate(self, workflow: str, action_type: str) -> FusedGate:
        """The fused gate of a declared action type (KeyError if not declared)."""
        return self.lanes[(workflow, action_type)]

    def gates(self) -> list[FusedGate]:
        return list(self.lanes.values())

    def evaluate(self, action: Any, workflow_state: Any = None, now: Any = None) -> Decision:
        """`gate.evaluate(p, action, workflow_state, now)`, by the fast lane when it can."""
        if type(action) is dict:
            live = now is None  # the clock: a `now` no other call shares (no cache)
            if live:
                now = datetime.now(_UTC)
            elif type(now) is not datetime or now.tzinfo is not _UTC:
                return self._reference(self.p, action, workflow_state, now, self.lane)
            tname = action.get("type")
            wname = action.get("workflow")
            if type(tname) is str and type(wname) is str:
                fz: FusedGate | None = self.types.get(tname)
                if fz is None or fz.wname != wname:
                    fz = self.lanes.get((wname, tname))
                if fz is not None and fz.action.fields is not None and declared_problem(fz.action, action):
                    fz = None  # not the declared shape: the reference gate says why (fail closed)
                if fz is not None:
                    fn = fz.fn
                    if workflow_state is not None and fn is not None:
                        status = workflow_state.get("status") if type(workflow_state) is dict else None
                        if not (type(status) is str and status == "running" and check_size(workflow_state) is None):
                            fn = None
                    if fn is not None:
                        # fn checks the fields it reads and the id; with its type's
                        # caches filled, it returns the whole decision, else its mask
                        # (with fault bits: conditions that raised, evaluated alone)
                        state = fz.running if workflow_state is None else workflow_state
                        try:
                            m = fn(action, now, state, fz.policy, live)
                        except ShapeMiss:  # the reference gate decides; the lane widens
                            fz.missed(action)
                            m = -1
                        except Exception:  # noqa: BLE001 - the reference gate decides
                            m = -1
                        if type(m) is not int:
                            return m
                        if m >= 0:
                            return lane_decision(self.p, fz, m, now, live, wname, tname, action.get("id"), action,
                                                 state)
        return self._reference(self.p, action, workflow_state, now, self.lane)

    def lane(self, wf: CWorkflow, ca: CAction, action: dict, state: Any, now_dt: datetime, wname: str, tname: str,
             aid: str | None) -> Decision | None:
        """The reference gate's hook (see `gate.gate`), for a checked input of a declared
        type: the decision by the type's fused gate, or None (the closures decide). Counts
        the type's evaluations until its fused gate is built (`FUSE_AFTER`), on the last
        of them, which it then decides."""
        fz = self.lanes[(wname, tname)]
        fn = fz.fn
        if fn is None and fz.pending:
            fz.observe(action)  # the shapes it is built for
            fz.pending -= 1  # (racing threads may build it twice: harmless)
            if fz.pending <= 0:
                fz.build()  # and this input is its first
                fn = fz.fn
        if fn is not None:
            # every condition in one generated function, the decision from the template of
            # its outcome; a condition meeting anything unusual (a missing field, an error,
            # a non-bool) is evaluated alone (fault bits, see `faults`); an input the
            # function's input check does not take raises, and the closures decide, exactly
            try:
                m = fn(action, now_dt, state)
            except ShapeMiss:
                fz.missed(action)
                return None
            except Exception:  # noqa: BLE001
                return None
            if type(m) is not int:  # the whole decision (see FusedGate.build)
                return m
            if m >= 0:
                return lane_decision(self.p, fz, m, now_dt, False, wname, tname, aid, action, state)
        return None
