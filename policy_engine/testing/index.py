"""The policy index: the names a suite may use, checked against the loaded policy set."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from ..diagnostics import Diagnostic, did_you_mean, one_of
from .suites import SHORTHANDS, SPECIAL_RULES, Case, Suite, expect_keys, type_name

# =============================================================================== policy index


@dataclass
class PolicyIndex:
    """Names declared by a policy set, for checking suites, and coverage items."""

    workflows: dict[str, Any] = field(default_factory=dict)  # name -> ir.Workflow
    actions: dict[str, Any] = field(default_factory=dict)  # type -> ir.ActionType

    @classmethod
    def of(cls, policy_set: Any) -> PolicyIndex:
        idx = cls()
        for w in policy_set.workflows:
            idx.workflows[w.name] = w
            for a in w.actions:
                idx.actions[a.name] = a
        return idx

    def stops(self, workflow: str | None) -> dict[str, Any]:
        ws = [self.workflows[workflow]] if workflow in self.workflows else list(self.workflows.values())
        return {s.name: s for w in ws for s in w.stops}

    def scenarios(self, workflow: str | None) -> dict[str, Any]:
        ws = [self.workflows[workflow]] if workflow in self.workflows else list(self.workflows.values())
        return {s.name: s for w in ws for s in w.scenarios}


def _choices() -> dict[tuple[str, str], tuple]:
    """(question, expectation key) -> the values the engine's answer can hold there."""
    from typing import get_args

    from .. import models

    return {
        ("gate", "effect"): get_args(models.Effect),
        ("rollback", "window"): get_args(models.RollbackPlan.model_fields["window"].annotation),
        ("rollback", "feasibility"): get_args(models.Feasibility.model_fields["status"].annotation),
        ("authorize", "satisfied"): (True, False),
        ("resume", "allowed"): (True, False),
    }


#: expectation keys that are not the answer's field of that name (shorthands reshaped by
#: `expect.actual_view`: not checked against the answer's schema), and shorthands that are
#: another field's name
_RESHAPED = {("gate", "rule"), ("gate", "stop"), ("gate", "matched"), ("resume", "met")}
_FIELD_OF = {("gate", "approvers"): "approvals", ("authorize", "filled"): "accepted"}


def _answer_schema(kind: str) -> dict:
    from .. import models
    from .suites import OUTPUT_MODEL

    model = getattr(models, OUTPUT_MODEL[kind])
    return cast(dict, model.model_json_schema(mode="serialization", by_alias=True))


def _unknown_nested(schema: dict, node: Any, value: Any, path: tuple) -> Iterable[tuple[tuple, list[str]]]:
    """(path of the key, the keys allowed there) for each key of `value`, below its top level,
    that the answer's JSON schema `node` cannot hold. Only where the schema is sure (a model:
    fixed properties, no others); a free mapping (an action's fields) is not looked into."""
    defs = schema.get("$defs", {})
    while isinstance(node, dict) and "$ref" in node:
        node = defs.get(node["$ref"].rsplit("/", 1)[-1], {})
    if not isinstance(node, dict):
        return
    if "anyOf" in node:
        want = "object" if isinstance(value, dict) else "array" if isinstance(value, list) else None
        options = [o for o in node["anyOf"] if want and _resolved(defs, o).get("type") == want]
        if len(options) == 1:
            yield from _unknown_nested(schema, options[0], value, path)
        return
    if isinstance(value, dict) and node.get("additionalProperties") is False and "properties" in node:
        props = node["properties"]
        for k, v in value.items():
            if k not in props:
                yield path + (k,), list(props)
            else:
                yield from _unknown_nested(schema, props[k], v, path + (k,))
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for i, v in enumerate(value):
            yield from _unknown_nested(schema, node["items"], v, path + (i,))


def _resolved(defs: dict, node: Any) -> dict:
    while isinstance(node, dict) and "$ref" in node:
        node = defs.get(node["$ref"].rsplit("/", 1)[-1], {})
    return node if isinstance(node, dict) else {}


def _as_names(value: Any) -> list:
    if isinstance(value, list):
        return value
    return [value]


class SuiteChecker:
    """Checks names in a case's question and expectation against the policy set."""

    def __init__(self, suite: Suite, index: PolicyIndex):
        self.suite, self.idx = suite, index
        self.diags: list[Diagnostic] = []

    def error(self, code, msg, path, *, key=False, label=None, help=None):
        assert self.suite.doc is not None  # a suite is checked only once it was read
        self.diags.append(Diagnostic(code, "error", msg, self.suite.doc.span(path, key=key), label=label, help=help))

    def name(self, what: str, value: Any, known: Iterable[str], path: tuple, extra: Sequence[str] = ()) -> bool:
        known = list(known)
        if not isinstance(value, str):
            self.error("T006", f"{what} must be a name, not {type_name(value)}", path)
            return False
        if value in known or value in extra:
            return True
        self.error(
            "T004",
            f"unknown {what} `{value}`",
            path,
            label=f"no such {what} in the suite's policies",
            help=did_you_mean(value, [*known, *extra])
            or (f"known: {one_of(sorted(known))}" if known and len(known) <= 8 else None),
        )
        return False

    def values(self, case: Case) -> None:
        """An expected effect, window or feasibility the engine never answers, or a `satisfied`
        or `allowed` that is not a boolean (`"true"`), can never match: the case failed, every
        run, with a diff that looked like the policy's fault. Refused where it is written."""
        exp, epath = case.expect, case.expect_path
        for k, v in exp.items():
            choices = _choices().get((case.kind, k))
            if choices is None or v is None or (isinstance(v, str) and v in choices):
                continue
            if choices == (True, False):
                if not isinstance(v, bool):
                    self.error("T006", f"`{k}` must be true or false, not {type_name(v)}", epath + (k,),
                               label="expected true or false",
                               help="write it unquoted: `true` or `false`" if isinstance(v, str) else None)
                continue
            if not isinstance(v, str):
                if k == "feasibility" and isinstance(v, dict):  # the whole Feasibility, compared partially
                    continue
                self.error("T006", f"`{k}` must be a string, not {type_name(v)}", epath + (k,),
                           label=f"expected {one_of(list(choices))}")
                continue
            self.error("T006", f"the engine never answers `{k}: {v}`", epath + (k,),
                       label=f"expected {one_of(list(choices))}",
                       help=did_you_mean(v, choices) or f"expected {one_of(list(choices))}")

    def nested(self, case: Case) -> None:
        """A misspelt key below an expectation's top level (`cascade: {stepz: [...]}`,
        `reversibility: {klass: partial}`) was compared as a key the answer lacks: the case failed
        with `(absent)` and no hint, and one given as `null` passed, comparing nothing. Refused
        where it is written (T002), against the answer's JSON schema."""
        schema = _answer_schema(case.kind)
        props = schema.get("properties", {})
        # a table row's expectation is the case's merged with the row's: find where a key is written
        bases = [case.expect_path]
        if len(case.path) >= 2 and case.path[-2] == "table":
            bases.append(case.path[:-2] + ("expect",))
        for k, v in case.expect.items():
            if (case.kind, k) in _RESHAPED or not isinstance(v, (dict, list)):
                continue
            fld = _FIELD_OF.get((case.kind, k), k)
            if fld not in props:
                continue
            for sub, allowed in _unknown_nested(schema, props[fld], v, (k,)):
                assert self.suite.doc is not None
                where = next((b + sub for b in bases if b + sub in self.suite.doc.keys), bases[0] + sub)
                key = str(sub[-1])
                dotted = ".".join(str(p) for p in sub[:-1] if not isinstance(p, int))
                if any(d.code == "T002" and d.span == self.suite.doc.span(where, key=True) for d in self.diags):
                    continue  # (one key of a case's expectation, merged into each table row)
                self.error(
                    "T002",
                    f"unknown key `{key}` in the expected `{dotted}`",
                    where,
                    key=True,
                    label="unknown key",
                    help=did_you_mean(key, allowed) or f"expected {one_of(allowed)}",
                )

    def workflow(self, value: Any, path: tuple) -> bool:
        return self.name("workflow", value, self.idx.workflows, path)

    def check(self, case: Case, resolved: dict) -> None:
        exp, epath = case.expect, case.expect_path
        allowed = expect_keys(case.kind)
        for k in exp:
            if k not in allowed:
                self.error(
                    "T002",
                    f"unknown expectation `{k}` for a `{case.kind}` case",
                    epath + (k,),
                    key=True,
                    label="unknown key",
                    help=did_you_mean(k, allowed) or f"expected {one_of(list(SHORTHANDS[case.kind]))}",
                )
        self.nested(case)
        self.values(case)
        qpath = case.path + (case.kind,)
        if case.kind == "gate":
            self.gate(case, resolved, qpath, exp, epath)
        elif case.kind == "authorize" and "action" in resolved:  # a gate decision's approvals
            g = case.question.get("gate")
            self.gate(
                Case(
                    case.suite,
                    case.name,
                    "gate",
                    {"action": g} if isinstance(g, str) else cast(dict, g),
                    {},
                    case.now,
                    None,
                    case.path,
                    case.expect_path,
                ),
                resolved,
                qpath + ("gate",),
                {},
                epath,
            )
        elif case.kind in ("rollback", "authorize"):
            req = resolved["request"]
            rq = case.question.get("rollback", {}) if case.kind == "authorize" else case.question
            rpath = qpath + ("rollback",) if case.kind == "authorize" else qpath
            wf = req.get("workflow")
            if "workflow" in rq and self.workflow(wf, rpath + ("workflow",)):
                scen = req.get("scenario")
                if "scenario" in rq:
                    from ..language.ir import STANDARD_SCENARIOS

                    self.name(
                        "rollback scenario",
                        scen,
                        self.idx.scenarios(wf),
                        rpath + ("scenario",),
                        extra=STANDARD_SCENARIOS,
                    )
            if case.kind == "rollback":
                if "scenario" in exp:
                    from ..language.ir import STANDARD_SCENARIOS

                    self.name(
                        "rollback scenario",
                        exp["scenario"],
                        self.idx.scenarios(wf),
                        epath + ("scenario",),
                        extra=STANDARD_SCENARIOS,
                    )
        elif case.kind == "resume":
            wf = resolved.get("workflow")
            stop = resolved.get("stop")
            crit: list[str] = []
            if "workflow" in case.question and self.workflow(wf, qpath + ("workflow",)):
                stops = self.idx.stops(wf)
                if isinstance(stop, str) and "stop" in case.question:
                    if self.name("stop trigger", stop, stops, qpath + ("stop",)):
                        crit = [c.name for c in stops[stop].criteria]
            if crit:
                for k in ("unmet", "met"):
                    if k in exp:
                        for i, n in enumerate(_as_names(exp[k])):
                            self.name(
                                "criterion", n, crit, epath + (k, i) if isinstance(exp[k], list) else epath + (k,)
                            )

    def gate(self, case: Case, resolved: dict, qpath: tuple, exp: dict, epath: tuple) -> None:
        action = resolved["action"]
        q = case.question if isinstance(case.question, dict) else {}

        def where(attr: str) -> tuple:
            if isinstance(q.get("with"), dict) and attr in q["with"]:
                return qpath + ("with", attr)
            if isinstance(q.get("action"), dict):
                return qpath + ("action", attr)
            if isinstance(q.get("action"), str):
                return ("inputs", "actions", q["action"], attr)
            return qpath + ("action",)

        wf, typ = action.get("workflow"), action.get("type")
        intends_undeclared = exp.get("rule") == "undeclared"
        stops = self.idx.stops(wf if isinstance(wf, str) else None)
        rules: list[str] = []
        if not intends_undeclared:
            if isinstance(wf, str):
                self.name("workflow", wf, self.idx.workflows, where("workflow"))
            if isinstance(typ, str):
                wfobj = self.idx.workflows.get(wf) if isinstance(wf, str) else None
                known = [a.name for a in wfobj.actions] if wfobj else list(self.idx.actions)
                if self.name("action type", typ, known, where("type")):
                    rules = [r.name for r in self.idx.actions[typ].rules]
        state = resolved.get("workflow_state") or {}
        if isinstance(state, dict) and isinstance(state.get("stopped_by"), str) and state.get("status") == "stopped":
            pass  # a trigger the policy lacks is a legitimate test (`known: false`)
        if "rule" in exp and rules:
            self.name("rule", exp["rule"], [*rules, *stops], epath + ("rule",), extra=SPECIAL_RULES)
        if "stop" in exp and exp["stop"] is not None:
            self.name("stop trigger", exp["stop"], stops, epath + ("stop",))
        if "matched" in exp and rules and isinstance(exp["matched"], list):
            for i, n in enumerate(exp["matched"]):
                if isinstance(n, str):
                    self.name("rule", n, [*rules, *stops], epath + ("matched", i), extra=SPECIAL_RULES)
        # names that can never match were a failing case, every run, instead of a located typo
        if "errors" in exp and rules and isinstance(exp["errors"], list):
            for i, n in enumerate(exp["errors"]):
                if isinstance(n, str):
                    self.name("rule", n, [*rules, *stops], epath + ("errors", i), extra=("<input>",))
        if "approvers" in exp and rules and isinstance(exp["approvers"], list):
            for i, a in enumerate(exp["approvers"]):
                if isinstance(a, dict) and isinstance(a.get("rule"), str):
                    self.name("rule", a["rule"], rules, epath + ("approvers", i, "rule"))
