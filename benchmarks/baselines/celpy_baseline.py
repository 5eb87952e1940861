"""The benchmark rules run by cel-python's own interpreter (celpy), same precedence.

Each condition is the exact CEL text of ``benchmarks/policies`` (from ``spec.py``),
compiled once with ``celpy.Environment().compile`` + ``program``. Per request the action,
workflow state and ``now`` are converted with ``celpy.json_to_cel`` (counted in the
timing, as a caller would have to do it), then: the workflow's stop triggers in order,
deny rules, every require_approval rule, allow rules, the workflow default (within one
effect in name order, as the engine does). A condition
that errors counts as matched for stop/deny/require_approval and not matched for allow.
"""

from __future__ import annotations

import celpy
from celpy import celtypes
from celpy.evaluation import CELEvalError

from benchmarks import spec


def _approval(r: spec.Rule) -> tuple:
    if " of [" in r.by:
        count, roles = r.by.split(" of [")
        return (r.name, int(count), tuple(x.strip() for x in roles.rstrip("]").split(",")), True)
    count, role = r.by.split()
    return (r.name, int(count), (role,), False)


class CelPyBaseline:
    name = "cel-python"

    def __init__(self) -> None:
        env = celpy.Environment()

        def prog(src: str):
            return env.program(env.compile(src))

        self.table: dict[str, tuple] = {}
        for w in spec.WORKFLOWS:
            policy = celpy.json_to_cel({**spec.GLOBAL_CONSTS, **w.consts})
            stops = tuple((s.name, prog(s.cel)) for s in sorted(w.stops, key=lambda s: s.name))
            for a in w.actions:
                rules = sorted(a.rules, key=lambda r: r.name)  # the engine's order within an effect
                denies = tuple((r.name, prog(r.cel)) for r in rules if r.effect == "deny")
                approvals = tuple((_approval(r), prog(r.cel)) for r in rules if r.effect == "require_approval")
                allows = tuple((r.name, prog(r.cel)) for r in rules if r.effect == "allow")
                self.table[a.name] = (w.name, policy, stops, denies, approvals, allows, w.default)

    @staticmethod
    def _match(program, activation, on_error: bool) -> bool:
        try:
            r = program.evaluate(activation)
        except CELEvalError:
            return on_error
        if isinstance(r, CELEvalError):
            return on_error
        return r is True or (isinstance(r, celtypes.BoolType) and bool(r))

    def evaluate(self, action: dict, workflow_state: dict | None = None, now=None):
        if workflow_state is not None and workflow_state.get("status") == "stopped":
            return "stop", workflow_state.get("stopped_by") or "<stopped>", ()
        entry = self.table.get(action.get("type"))
        if entry is None or entry[0] != action.get("workflow"):
            return "deny", "<undeclared>", ()
        wf, policy, stops, denies, approvals, allows, default = entry
        activation = {
            "action": celpy.json_to_cel(action),
            "workflow": celpy.json_to_cel(workflow_state or {"status": "running"}),
            "now": celtypes.TimestampType(now),
            "policy": policy,
        }
        match = self._match
        for name, p in stops:
            if match(p, activation, True):
                return "stop", name, ()
        for name, p in denies:
            if match(p, activation, True):
                return "deny", name, ()
        found = tuple(ap for ap, p in approvals if match(p, activation, True))
        if found:
            return "require_approval", found[0][0], found
        for name, p in allows:
            if match(p, activation, False):
                return "allow", name, ()
        return default, "<default>", ()
