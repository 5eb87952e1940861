"""Resolving a case's inputs: named inputs, `with` merges, the question's arguments."""

from __future__ import annotations

import copy
from typing import Any

from ..diagnostics import Diagnostic, did_you_mean, one_of
from .suites import Case, Suite, deep_merge, type_name

# =============================================================================== resolving inputs


class Resolver:
    """Turns a case's question into engine inputs, resolving input names.

    Unknown names are collected as diagnostics (T003) located in the suite."""

    def __init__(self, suite: Suite):
        self.suite = suite
        self.diags: list[Diagnostic] = []
        self._row: tuple = ()  # the YAML path of the table row being resolved, if any
        self._reported: set = set()  # paths of problems in shared inputs, reported once

    def error(self, code: str, msg: str, path: tuple, *, help: str | None = None, label: str | None = None,
              key: bool = False) -> None:
        assert self.suite.doc is not None  # inputs are resolved only for a suite that was read
        self.diags.append(Diagnostic(code, "error", msg, self.suite.doc.span(path, key=key), label=label, help=help))

    def named(self, kind: str, value: Any, path: tuple, what: str) -> dict | None:
        if isinstance(value, dict):
            return copy.deepcopy(value)
        if isinstance(value, str):
            group = self.suite.inputs.get(kind, {})
            if value in group:
                return copy.deepcopy(group[value])
            self.error("T003", f"unknown {what} `{value}`", path, label=f"not in `inputs.{kind}`",
                       help=did_you_mean(value, group) or (f"known: {one_of(sorted(group))}" if group else
                                                          f"declare it under `inputs.{kind}`"))
            return None
        self.error("T006", f"{what} must be a name or a mapping, not {type_name(value)}", path)
        return None

    def record(self, value: Any, path: tuple, seen: tuple = ()) -> dict | None:
        rec = self.named("records", value, path, "record")
        if rec is None:
            return None
        if isinstance(value, str):
            rec.setdefault("id", value)
            if value in seen:  # a name-level loop: keep the reference flat; the engine reports the loop
                rec["downstream"] = []
                return rec
            seen = seen + (value,)
        down = rec.get("downstream", [])
        if down is not None and not isinstance(down, list):
            # (`downstream: note` for `[note]`: the engine noted an input error, classified the
            # plan without the cascade, and a case that did not look at the cascade passed)
            at = ("inputs", "records", value, "downstream") if isinstance(value, str) else path + ("downstream",)
            if at not in self._reported:
                self._reported.add(at)
                self.error("T006", f"`downstream` must be a list, not {type_name(down)}", at,
                           label="expected a list", help="a list of record names or inline records: `[note]`")
            return None
        if isinstance(down, list):
            out = []
            for i, d in enumerate(down):
                r = self.record(d, path if isinstance(value, str) else path + ("downstream", i), seen)
                if r is not None:
                    out.append(r)
            rec["downstream"] = out
        return rec

    def bad_with(self, q: dict, path: tuple) -> bool:
        """Whether the question's `with:` is neither absent (or empty) nor a mapping, an error:
        read as "no change", `with: [{confidence: 0.1}]` ran the case on the unchanged input
        and could pass while testing another input than its name says."""
        w = q.get("with")
        if w is None or isinstance(w, dict):
            return False
        at = path + ("with",)
        doc = self.suite.doc
        if self._row and doc is not None and at not in doc.values and self._row + ("with",) in doc.values:
            at = self._row + ("with",)  # a table row's own `with:`
        self.error("T006", f"`with` must be a mapping, not {type_name(w)}", at,
                   label="expected a mapping", help="`with: {field: value}` (its keys are merged into the input)")
        return True

    def gate(self, q: dict, path: tuple) -> dict | None:
        bad_with = self.bad_with(q, path)
        action = self.named("actions", q.get("action"), path + ("action",), "action") if "action" in q else None
        if "action" not in q:
            self.error("T005", "`gate` needs an `action`", path, key=True, help="`gate: {action: NAME, with: {...}}`")
        if action is None or bad_with:
            return None
        if isinstance(q.get("with"), dict):
            action = deep_merge(action, q["with"])
        state = q.get("workflow_state", self.suite.workflow_state)
        if state is not None:
            spath = path + ("workflow_state",) if "workflow_state" in q else ("workflow_state",)
            state = self.named("states", state, spath, "workflow state")
            if state is None:
                return None
        return {"action": action, "workflow_state": state}

    def rollback(self, q: dict, path: tuple) -> dict | None:
        req = {k: copy.deepcopy(v) for k, v in q.items() if k not in ("original", "with")}
        bad_with = self.bad_with(q, path)
        for k in ("workflow", "scenario", "requested_by"):
            if k not in q:
                self.error("T005", f"`rollback` needs `{k}`", path, key=True)
        if "original" not in q:
            self.error("T005", "`rollback` needs `original` (a record name or an inline record)", path, key=True)
            return None
        orig = self.record(q["original"], path + ("original",))
        if orig is None or bad_with:
            return None
        req["original"] = orig
        if isinstance(q.get("with"), dict):
            req = deep_merge(req, q["with"])
        return {"request": req}

    def authorize(self, q: dict, path: tuple, now: str | None) -> dict | None:
        """A rollback plan (`rollback`: the request to classify) or a gate decision (`gate`:
        the action to evaluate), and the approvals; each approval is bound to what the case
        classifies or evaluates (its `plan_hash` or `action_digest`) unless it names one."""
        if ("rollback" in q) == ("gate" in q):
            self.error("T005", "`authorize` needs exactly one of `rollback` (the request to classify) or `gate` "
                               "(the action whose require_approval decision the approvals release)", path, key=True,
                       help="`authorize: {gate: {action: NAME}, approvals: [...]}`")
            return None
        if "gate" in q:
            g = q["gate"]
            g = {"action": g} if isinstance(g, str) else g
            if not isinstance(g, dict):
                self.error("T006", f"`gate` must be an action name or a mapping, not {type_name(g)}", path + ("gate",))
                return None
            r = self.gate(g, path + ("gate",))
        else:
            rb = q.get("rollback")
            if not isinstance(rb, dict):
                self.error("T006", f"`rollback` must be a mapping, not {type_name(rb)}", path + ("rollback",))
                return None
            r = self.rollback(rb, path + ("rollback",))
        approvals = []
        raw = q.get("approvals", [])
        if not isinstance(raw, list):
            self.error("T006", "`approvals` must be a list", path + ("approvals",))
            return None
        principals = self.suite.inputs.get("principals", {})
        for i, a in enumerate(raw):
            if isinstance(a, str):
                p = self.named("principals", a, path + ("approvals", i), "principal")
                if p is None:
                    continue
                p.setdefault("principal", a)
            elif isinstance(a, dict):
                p = dict(a)
                name = p.get("principal")
                if isinstance(name, str) and name in principals:
                    base = copy.deepcopy(principals[name])
                    base.setdefault("principal", name)
                    p = deep_merge(base, p)
                if "principal" not in p:
                    self.error("T005", "an inline approval needs `principal`", path + ("approvals", i))
                    continue
            else:
                self.error("T006", f"an approval must be a principal name or a mapping, not {type_name(a)}",
                           path + ("approvals", i))
                continue
            p.setdefault("roles", [])
            if now is not None:
                p.setdefault("at", now)
            approvals.append(p)
        if r is None:
            return None
        return {**r, "approvals": approvals}

    def resume(self, q: dict, path: tuple) -> dict | None:
        for k in ("workflow", "stop"):
            if k not in q:
                self.error("T005", f"`resume` needs `{k}`", path, key=True)
        bad_with = self.bad_with(q, path)
        ev = q.get("evidence", {})
        evidence = self.named("evidence", ev, path + ("evidence",), "evidence")
        if evidence is None or bad_with:
            return None
        if isinstance(q.get("with"), dict):
            evidence = deep_merge(evidence, q["with"])
        return {"workflow": q.get("workflow"), "stop": q.get("stop"), "evidence": evidence}

    def resolve(self, case: Case) -> dict | None:
        q, path = case.question, case.path + (case.kind,)
        self._row = case.path if "table" in case.path else ()
        if case.kind == "gate":
            return self.gate(q, path)
        if case.kind == "rollback":
            return self.rollback(q, path)
        if case.kind == "authorize":
            return self.authorize(q, path, case.now)
        return self.resume(q, path)


