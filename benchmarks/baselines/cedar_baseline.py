"""The benchmark rules as Cedar policies, evaluated by cedarpy (Rust, via PyO3).

Translation (``baselines/policies.cedar``, generated from ``spec.py``):

* request: principal ``Agent::"agent"``, action ``Action::"<action type>"``, resource
  ``Workflow::"<workflow>"``, context = the action's attributes (floats as integer
  hundredths: Cedar has no floating point) + ``workflow_status`` + ``derived``;
* stop triggers, deny rules and require_approval rules are ``forbid`` policies, allow
  rules are ``permit`` policies (Cedar: forbid overrides permit);
* Cedar answers only Allow/Deny; our four effects are recovered from the policies
  Cedar reports as determining the decision (``diagnostics.reasons``) and their
  ``@kind`` annotation: any stop -> stop, else any deny -> deny, else require_approval
  (with every matching approval rule); Allow -> allow; Deny with no determining policy
  -> the workflow default (or deny for an undeclared action type);
* Cedar has no string length, regex, timestamps or quantifiers over sets of records:
  those conditions read ``context.derived.*``, computed in Python per action type by
  ``baselines/cedar_context.py`` inside the timed path;
* Cedar skips a policy whose condition errors; to match our fail-closed rule, a forbid
  policy that errored is counted as matched (errors are parsed from diagnostics).

The policy set and (empty) entity set are parsed once (``PolicySet.from_str``,
``Entities.from_json_str``); each request is one ``cedarpy.is_authorized`` call.
"""

from __future__ import annotations

import re
from pathlib import Path

import cedarpy

from benchmarks import spec
from benchmarks.baselines.cedar_context import DERIVE

CEDAR_FILE = Path(__file__).resolve().parent / "policies.cedar"
_PRINCIPAL = {"type": "Agent", "id": "agent"}
_ERR_ID = re.compile(r"policy `?(policy\d+)`?")


def _approval_of(r: spec.Rule) -> tuple:
    if " of [" in r.by:
        count, roles = r.by.split(" of [")
        return (r.name, int(count), tuple(x.strip() for x in roles.rstrip("]").split(",")), True)
    count, role = r.by.split()
    return (r.name, int(count), (role,), False)


def to_cedar(v):
    t = type(v)
    if t is float:
        return int(round(v * 100))
    if t is dict:
        return {k: to_cedar(x) for k, x in v.items() if x is not None}
    if t is list:
        return [to_cedar(x) for x in v]
    return v


class CedarBaseline:
    name = "cedarpy"

    def __init__(self, path: Path = CEDAR_FILE) -> None:
        text = path.read_text()
        ids = re.findall(r'@kind\("([^"]+)"\)\s*@rule\("([^"]+)"\)', text)
        self.policies = {f"policy{i}": (kind, rule) for i, (kind, rule) in enumerate(ids)}
        self.policy_set = cedarpy.PolicySet.from_str(text)
        assert len(self.policy_set) == len(ids), "every Cedar policy needs @kind/@rule annotations"
        self.entities = cedarpy.Entities.from_json_str("[]")
        self.types = {a.name: (w.name, w.default) for w, a in spec.all_actions()}
        self.approvals = {a.name + ":" + r.name: _approval_of(r) for _, a in spec.all_actions()
                          for r in a.rules if r.effect == "require_approval"}

    def request(self, action: dict, workflow_state: dict | None, now) -> dict:
        t = action.get("type")
        ctx = {k: to_cedar(v) for k, v in action.items() if k not in ("workflow", "type", "id") and v is not None}
        derive = DERIVE.get(t)
        if derive is not None:
            ctx["derived"] = derive(action, now)
        ctx["workflow_status"] = (workflow_state or {}).get("status", "running")
        return {"principal": _PRINCIPAL, "action": {"type": "Action", "id": t},
                "resource": {"type": "Workflow", "id": action.get("workflow", "")}, "context": ctx}

    def evaluate(self, action: dict, workflow_state: dict | None = None, now=None):
        t = action.get("type")
        try:
            req = self.request(action, workflow_state, now)
        except Exception:  # bad action data: fail closed
            return "deny", "<error>", ()
        res = cedarpy.is_authorized(req, self.policy_set, self.entities)
        diag = res.diagnostics
        pol = self.policies  # policy id -> (kind, rule)
        if res.allowed:
            return "allow", min(pol[p][1] for p in diag.reasons), ()
        matched = [pol[p] for p in diag.reasons]
        if diag.errors:  # fail closed: an erroring forbid counts as matched
            for msg in diag.errors:
                m = _ERR_ID.search(str(msg))
                if m and pol[m.group(1)][0] != "allow":
                    matched.append(pol[m.group(1)])
        if not matched:
            entry = self.types.get(t)
            if entry is None or entry[0] != action.get("workflow"):
                return "deny", "<undeclared>", ()
            return entry[1], "<default>", ()
        matched.sort(key=lambda m: m[1])  # within one effect, by name (the engine's order)
        kinds = {k for k, _ in matched}
        if "stop" in kinds:
            name = next(r for k, r in matched if k == "stop")
            if name == "<stopped>":
                name = (workflow_state or {}).get("stopped_by") or name
            return "stop", name, ()
        if "deny" in kinds:
            return "deny", next(r for k, r in matched if k == "deny"), ()
        approvals = tuple(self.approvals[t + ":" + r] for k, r in matched if k == "require_approval")
        return "require_approval", approvals[0][0], approvals
