"""Input and output models of the engine API (pydantic v2, frozen).

Inputs may be given as plain dicts or as these models; outputs are always these models.
Every output dumps deterministically with `model_dump(mode="json")`: lists that have no
meaningful order are sorted, timestamps are RFC 3339 strings in UTC with a `Z` suffix.

Input models (what callers send):
    Action, WorkflowState, OriginalRecord, RollbackRequest, Approval, ResumeRequest,
    and the CLI envelopes GateQuestion, RollbackQuestion, AuthorizeQuestion, ResumeQuestion.
Output models (what the engine returns):
    Decision, RollbackPlan, AuthorizationVerdict, ResumeDecision (and their parts).

See docs/engine.md for the semantics of every field.
"""

from __future__ import annotations

import re
from datetime import datetime
from json.encoder import c_encode_basestring as _c_json_str  # type: ignore[attr-defined]
from json.encoder import py_encode_basestring as _py_json_str
from operator import itemgetter
from typing import Any, Literal

import pydantic.main as _pydantic_main
from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from .construct import DEFERRABLE as _DEFERRABLE
from .construct import Deferred, DeferredTimes, resolve_digest
from .construct import DeferredField as _DeferredField
from .construct import raw_dict as _raw_dict
from .construct import resolved_dict as _resolved_dict
from .construct import set_raw_dict as _set_raw_dict

# a str as JSON text, escaped exactly as pydantic escapes it (UTF-8, non-ASCII unescaped)
_json_str = _c_json_str or _py_json_str

Effect = Literal["allow", "require_approval", "deny", "stop"]
RuleKind = Literal["rule", "stop", "default", "undeclared", "stopped", "error"]
Timestamp = datetime | str  # inputs: RFC 3339 string or tz-aware datetime

# Models neither loading nor the gate uses (the plan, verdict, resume decision, their parts and
# inputs, the envelopes) are built on first use, not on import (`defer_build`; issue 16, goal 5):
# with a pydantic that builds one under a lock (2.14, `_rebuild_lock`; before it two threads could
# race, pydantic issue 13419), else on import as before.
_LAZY = hasattr(_pydantic_main, "_rebuild_lock")


class _Out(BaseModel):
    """Base of every output model: frozen, no extra fields, dumps by alias."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, serialize_by_alias=True)


class _In(BaseModel):
    """Base of input models that carry arbitrary attributes (`extra="allow"`)."""

    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True, serialize_by_alias=True)


# =============================================================================== inputs


class Action(_In):
    """A proposed action. Flat: every attribute besides `workflow`, `type` and `id`
    is an extra field and CEL sees the whole object as `action`."""

    workflow: str = Field(description="name of the workflow the action belongs to")
    type: str = Field(description="name of the action type, as declared in the policy")
    id: str | None = Field(default=None, description="caller's id for the action (echoed in the decision)")


class WorkflowState(_In):
    """The caller's view of the workflow's state. CEL sees it as `workflow`."""

    name: str | None = None
    status: Literal["running", "stopped"] = "running"
    stopped_by: str | None = Field(default=None, description="the stop trigger that stopped the workflow")
    stopped_at: Timestamp | None = None


class OriginalRecord(_In, defer_build=_LAZY):
    """An executed action (the subject of a rollback). Extra attributes allowed;
    prerequisites see it as `original`. `downstream` records nest (the cascade)."""

    id: str
    type: str
    executed_at: Timestamp | None = None
    reviewer: str | None = None
    requester: str | None = None
    downstream: list[OriginalRecord] = Field(default_factory=list)


class RollbackRequest(_In, defer_build=_LAZY):
    """A request to reverse an executed action. Prerequisites see it as `request`."""

    workflow: str
    scenario: str
    requested_by: str
    reason: str | None = None
    requested_at: Timestamp | None = None
    original: OriginalRecord


class Approval(_In, defer_build=_LAZY):
    """One principal's approval of one rollback plan (bound by `plan_hash`) or of one
    proposed action held by a require_approval decision (bound by `action_digest`)."""

    principal: str
    roles: list[str] = Field(default_factory=list)
    at: Timestamp | None = None
    plan_hash: str | None = None
    action_digest: str | None = Field(default=None, description="for a gate decision: the `action_digest` "
                                         "of the decision it approves (see Engine.authorize_action)")
    policy_hash: str | None = None
    expires_at: Timestamp | None = None


class ResumeRequest(_In, defer_build=_LAZY):
    workflow: str
    stop: str | WorkflowState = Field(description="trigger name, or the stopped workflow state")
    evidence: dict[str, Any] = Field(default_factory=dict)


# ------------------------------------------------------------------ CLI envelopes (stopline eval)


class _Envelope(BaseModel):
    """Base of the question envelopes: no other fields. `stopline eval` refuses an unknown field
    (engine/questions.py reads the fields from these models) and `stopline schema` says so."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, serialize_by_alias=True)


class GateQuestion(_Envelope, defer_build=_LAZY):
    question: Literal["gate"]
    action: dict[str, Any]
    workflow_state: dict[str, Any] | None = None
    now: Timestamp | None = None


class RollbackQuestion(_Envelope, defer_build=_LAZY):
    question: Literal["rollback"]
    request: dict[str, Any]
    now: Timestamp | None = None


class AuthorizeQuestion(_Envelope, defer_build=_LAZY):
    """Exactly one of `plan` (a RollbackPlan as printed by the rollback question),
    `request` (the plan is then classified first, at `now`: approvals cannot name the
    hash of a plan made in the same call, so use the two-step flow, docs/approvals.md) or
    `decision` (a require_approval Decision as printed by the gate question)."""

    question: Literal["authorize"]
    plan: dict[str, Any] | None = None
    request: dict[str, Any] | None = None
    decision: dict[str, Any] | None = None
    approvals: list[dict[str, Any]] = Field(default_factory=list)
    now: Timestamp | None = None


class ResumeQuestion(_Envelope, defer_build=_LAZY):
    question: Literal["resume"]
    workflow: str
    stop: str | dict[str, Any]
    evidence: dict[str, Any] = Field(default_factory=dict)
    now: Timestamp | None = None


Question = GateQuestion | RollbackQuestion | AuthorizeQuestion | ResumeQuestion
QUESTION_MODELS: dict[str, type[_Envelope]] = {
    "gate": GateQuestion, "rollback": RollbackQuestion, "authorize": AuthorizeQuestion, "resume": ResumeQuestion}


# =============================================================================== gate decision


class RuleRef(_Out):
    """A reference to what decided (or matched): a gate rule, a stop trigger, the
    workflow default, or a synthetic reason (undeclared / stopped / error)."""

    kind: RuleKind
    name: str
    effect: Effect
    location: str | None = Field(default=None, description="file:line:col of the declaration")


class EvalError(_Out):
    """A condition (or input) that could not be evaluated. Never widens permission."""

    rule: str = Field(description="rule, trigger, prerequisite or criterion name; `<input>` for bad input")
    kind: Literal["rule", "stop", "prerequisite", "criterion", "input", "policy"] = "rule"
    message: str
    location: str | None = None
    budget: str | None = Field(default=None, description="name of the evaluation budget exceeded, if any")


class ApprovalRequirement(_Out):
    rule: str
    count: int
    roles: tuple[str, ...]
    any_of: bool = Field(description="true for `by N of [a, b]`: any of the roles; false: the single role")
    location: str | None = None


class StopInfo(_Out):
    trigger: str
    known: bool = Field(default=True, description="false when a workflow state names a trigger the policy lacks")
    severity: str | None = None
    owner: str | None = None
    affects: tuple[str, ...] = Field(default=())
    rollback: str | None = None
    notify: tuple[str, ...] = Field(default=())
    resume_criteria: tuple[str, ...] = Field(default=())
    receipt: tuple[str, ...] = Field(default=())
    location: str | None = None
    stopped_at: str | None = None


class SlotSpec(_Out):
    """One authorization slot: `count` distinct principals, each holding one of `roles`
    (`any_of`), or the single role. `source` says whether the slot is standard or was
    added by the scenario's `after window` escalation."""

    id: str
    count: int
    roles: tuple[str, ...]
    any_of: bool = False
    source: Literal["standard", "escalation"] = "standard"


class Cost(_Out):
    """A declared cost (`cost 40 USD`, `cost 2.5 hours`): an amount and its unit."""

    amount: float
    unit: str = Field(description="a three-letter currency code (`USD`) or `hours`; different units are never added")


def _unset(v: Any) -> bool:
    return v is None


class ScenarioCost(_Out):
    """What reversing costs under one scenario: standard path within the window,
    escalated path after it."""

    scenario: str
    route: str | None = None
    slots: tuple[SlotSpec, ...] = Field(default=())
    distinct_from: tuple[str, ...] = Field(default=())
    notify: tuple[str, ...] = Field(default=())
    compensate: tuple[str, ...] = Field(default=())
    # (left out of the output when the scenario declares none: outputs without cost are unchanged)
    cost: Cost | None = Field(default=None, exclude_if=_unset,
                              description="the scenario's declared `cost`, once per rollback; absent when none")


class ReversibilityInfo(_Out):
    klass: Literal["full", "partial", "irreversible"] | None = Field(
        default=None, alias="class", description="`null` when the action type declares no reversibility")
    method: str | None = None
    window: str | None = Field(default=None, description="as written in the policy, e.g. `60s`")
    window_seconds: int | None = None
    reversible_until: str | None = Field(default=None, description="now + window, if executed now")
    within_window: tuple[ScenarioCost, ...] = Field(default=(), description="per scenario: standard path")
    after_window: tuple[ScenarioCost, ...] = Field(default=(), description="per scenario: escalated path")
    cost: Cost | None = Field(default=None, exclude_if=_unset,
                              description="the action type's declared `cost` of reversing one action; absent when none")


class TraceEntry(_Out):
    """One rule or trigger considered, with its condition's outcome."""

    kind: Literal["rule", "stop"]
    name: str
    effect: Effect
    location: str | None = None
    condition: str = ""
    value: str | None = Field(default=None, description="the condition's value as JSON text, when it had one")
    error: str | None = None
    matched: bool


class WorkflowOwners(_Out):
    """Who answers for a workflow (its `owners { business "..." technical "..." }`): the
    people an incident goes to, so it does not bounce between ops, security, support and
    the builder."""

    business: str | None = Field(default=None, description="the business owner, as declared")
    technical: str | None = Field(default=None, description="the technical owner, as declared")


# pydantic's own serializer of a model to JSON text and to a dict (`Decision.model_dump_json`
# and `model_dump(mode="json")` go through the decision's template first, see there)
_pydantic_json = BaseModel.model_dump_json
_pydantic_dump = BaseModel.model_dump
# `model_dump(mode="json")` of a fast-lane decision from its template (set by
# `engine.accel.dumps` on import; the fast lane, the only maker of such decisions, imports it)
DUMP_FROM_TEMPLATE: Any = None


class Decision(_Out):
    # (no docstring: it would become the JSON schema's description, `stopline schema Decision`)
    # every read of the instance dict (pydantic's serializers, ==, hash, copy, repr) resolves
    # the Deferred values first; attribute reads of the fields themselves use the instance dict
    # directly, so those fields get a _DeferredField below
    __dict__ = property(_resolved_dict, _set_raw_dict)

    effect: Effect
    deciding: RuleRef
    reason: str = Field(description="one line: why this effect won")
    workflow: str | None = None
    action_type: str | None = None
    action_id: str | None = None
    matched: tuple[RuleRef, ...] = Field(default=(), description="every matched rule, by precedence then name")
    approvals: tuple[ApprovalRequirement, ...] = Field(default=())
    action_digest: str | None = Field(
        default=None, description="require_approval only: `sha256:` + hex of the canonical JSON of the action "
                                  "decided; approvals name it (see Engine.authorize_action)")
    stop: StopInfo | None = None
    reversibility: ReversibilityInfo | None = None
    receipt: tuple[str, ...] = Field(default=())
    errors: tuple[EvalError, ...] = Field(default=())
    trace: tuple[TraceEntry, ...] = Field(default=())
    evaluated_at: str
    policy_hash: str
    policy_version: str | None = None
    owners: WorkflowOwners | None = Field(
        default=None, description="the workflow's business and technical owner; null when the workflow is unknown")

    def to_json(self) -> str:
        """The decision as JSON text: exactly the bytes pydantic's `model_dump_json()` writes
        (compact, fields by alias, in declaration order), which is what a runtime logs. A
        decision of the engine's fast lane is written from JSON rendered once per decision
        template, its few varying fields (`action_id`, `action_digest`, `reversible_until`,
        `evaluated_at`) encoded on their own: several times faster than pydantic's
        serializer; any other decision is written by pydantic. `model_dump_json()` with no
        arguments is this call. See docs/engine.md."""
        fs = self.__pydantic_fields_set__
        if type(fs) is DecisionJson:
            text = fs.render(self)
            if text is not None:
                return text
        return _pydantic_json(self)

    def model_dump_json(self, **kwargs: Any) -> str:
        """pydantic's `model_dump_json`; called with no arguments (the form a runtime logs),
        it is `to_json()`: the same bytes, written from the decision's template when the
        engine's fast lane made it. With any argument (`indent`, `include`, ...) pydantic
        writes it."""
        if kwargs:
            return _pydantic_json(self, **kwargs)
        return self.to_json()

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        """pydantic's `model_dump`; `model_dump(mode="json")` (the contract's form) and
        `model_dump()` of a decision of the engine's fast lane are a new copy of its
        template's dump with the fields that vary set: the same dict, in the same order,
        several times faster (see `engine.accel.dumps`). Any other form, and any other
        decision, pydantic dumps."""
        if not kwargs or (len(kwargs) == 1 and kwargs.get("mode") in ("json", "python")):
            fs = self.__pydantic_fields_set__
            if type(fs) is DecisionJson and DUMP_FROM_TEMPLATE is not None:
                out = DUMP_FROM_TEMPLATE(fs, self, kwargs.get("mode", "python"))
                if out is not None:
                    return out
        return _pydantic_dump(self, **kwargs)


for _name in _DEFERRABLE:
    type.__setattr__(Decision, _name, _DeferredField(_name))


# ----------------------------------------------------------------- Decision.to_json, fast
# The fields of a decision that vary between the decisions of one template (the engine's
# fast lane builds every decision of one outcome of one action type from one template:
# `engine.accel.templates`); the JSON of the rest is rendered once, around markers.
_MARK = {k: f"\x00stopline:{k}\x00" for k in ("action_id", "action_digest", "reversible_until", "evaluated_at")}
_MARK_JSON = {k: _json_str(v) for k, v in _MARK.items()}
_SURROGATE = re.compile("[\ud800-\udfff]")


def split_at_marks(text: str, marks_json: dict[str, str], window: bool) -> tuple[tuple, tuple] | None:
    """`text` cut around each marker of `marks_json` (field name -> the marker as JSON text;
    `reversible_until` only with a `window`): (the fields in text order, the parts between
    them), or None when a marker is missing or appears twice (a policy text that holds one)."""
    marks = [(text.find(m), k) for k, m in marks_json.items() if k != "reversible_until" or window]
    if any(i < 0 or text.count(marks_json[k]) != 1 for i, k in marks):
        return None
    marks.sort()
    parts = []
    at = 0
    for i, k in marks:
        parts.append(text[at:i])
        at = i + len(marks_json[k])
    parts.append(text[at:])
    return tuple(k for _, k in marks), tuple(parts)


class DecisionJson(set):
    """The `__pydantic_fields_set__` of the decisions built from one decision template: a set
    of every field name, like any decision's, that also carries what `Decision.to_json`
    needs to write them without pydantic: the template's JSON cut around the fields that
    vary (`action_id`, `action_digest`, `reversibility.reversible_until`, `evaluated_at`),
    rendered by pydantic's `model_dump_json()` itself on first use, and the values of every
    other field (the decision's must be these, checked on every call; anything else, and any
    value pydantic would refuse, is written by pydantic). A copy or a pickle of it is a
    plain set."""

    __slots__ = ("template", "plan", "base", "dumps")

    def __init__(self, template: dict) -> None:
        super().__init__(Decision.model_fields)
        self.template = template  # the fields of the template (any `now`, no id, no digest)
        self.plan: tuple | None = None  # (static getter, static values, rev getter, rev values, JSON parts)
        self.base: DecisionJson | None = None  # the template's, for one at a `now` (see `at`)
        self.dumps: Any = None  # its dumps as functions, by mode (see engine.accel.dumps)

    def __copy__(self) -> set:
        return set(self)

    def __deepcopy__(self, memo: Any) -> set:
        return set(self)

    def __reduce__(self) -> Any:
        return set, (list(self),)

    def marked(self, marks: dict[str, str]) -> tuple[Decision, bool]:
        """A decision of the template with a marker string in each field that varies
        (`marks`: field name -> marker; `reversible_until` only where the template has a
        window), and whether it has that window: rendered once, the text is cut at the
        markers (`split_at_marks`). Used here and for the ledger's canonical text."""
        t = self.template
        rev = t.get("reversibility")
        window = type(rev) is ReversibilityInfo and rev.reversible_until is not None
        d = dict(t)
        d["action_id"] = marks["action_id"]
        d["action_digest"] = marks["action_digest"]
        d["evaluated_at"] = marks["evaluated_at"]
        if window:
            assert rev is not None
            d["reversibility"] = rev.model_copy(update={"reversible_until": marks["reversible_until"]})
        return Decision.model_construct(**d), window

    def _build(self) -> tuple:
        t = self.template
        rev = t.get("reversibility")
        dec, window = self.marked(_MARK)
        cut = split_at_marks(_pydantic_json(dec), _MARK_JSON, window)
        # (the fields' order: action_id, action_digest, reversibility.reversible_until, evaluated_at)
        if cut is None or list(cut[0]) != [k for k in _MARK if k != "reversible_until" or window]:
            return (None,) * 5
        parts = cut[1]
        static = tuple(k for k in Decision.model_fields if k not in _MARK and not (window and k == "reversibility"))
        get = itemgetter(*static)
        rev_get = rev_static = None
        if window:
            assert rev is not None
            rk = tuple(k for k in ReversibilityInfo.model_fields if k != "reversible_until")
            rev_get = itemgetter(*rk)
            rev_static = rev_get(_raw_dict(rev))
        return get, get(t), rev_get, rev_static, tuple(parts)

    def at(self, fields: dict) -> DecisionJson:
        """The fields set of the decisions built from `fields`: this template's at one `now`
        (its `evaluated_at` text and `reversibility` in place, as a type's per-`now` cache
        keeps them, `engine.accel.templates.lane_decision`). Its JSON is this template's
        with those two written in, so a decision of it is written from three parts around
        its id and its digest, every other field checked as one tuple (the time fields
        included, by identity first)."""
        fs = DecisionJson(fields)
        fs.base = self
        plan = self.plan
        if plan is None:
            plan = self.plan = self._build()
        get, _, rev_get, rev_static, parts = plan
        ev = fields.get("evaluated_at")
        rev = fields.get("reversibility")
        if get is None or type(ev) is not str or not ev.isascii():
            fs.plan = plan  # (rendered as any decision of the template)
            return fs
        e = _json_str(ev)
        if rev_get is None:
            baked = (parts[0], parts[1], parts[2] + e + parts[3])
        else:
            ru = rev.reversible_until if type(rev) is ReversibilityInfo else None
            if ru is None or type(ru) is not str or not ru.isascii() or rev_get(_raw_dict(rev)) != rev_static:
                fs.plan = plan
                return fs
            baked = (parts[0], parts[1], parts[2] + _json_str(ru) + parts[3] + e + parts[4])
        keys = tuple(k for k in Decision.model_fields if k not in ("action_id", "action_digest"))
        at_get = itemgetter(*keys)
        fs.plan = (at_get, at_get(fields), None, None, baked, True)
        return fs

    def render(self, dec: Decision, fresh: bool = False) -> str | None:
        """`dec`'s JSON, or None when `dec` is not this template's or holds a value the
        fragments cannot write exactly (the caller then asks pydantic). `fresh`: `dec` was
        just built from this template, seen by nobody else (`Engine.evaluate_json`)."""
        plan = self.plan
        if plan is None:
            plan = self.plan = self._build()
        get, static, rev_get, rev_static, parts = plan[:5]
        if get is None:
            return None
        raw = dec if type(dec) is dict else _raw_dict(dec)  # (a decision, or its fields: evaluate_json)
        if not fresh and get(raw) != static:  # (the same objects: compared by identity first)
            return None
        aid = raw["action_id"]
        if aid is None:
            a = "null"
        elif type(aid) is str and (aid.isascii() or not _SURROGATE.search(aid)):
            a = _json_str(aid)
        else:  # another type, or text pydantic refuses: pydantic says what it says
            return None
        dg = raw["action_digest"]
        if dg is None:
            g = "null"
        else:
            if type(dg) is not str:
                if type(dg) is not dict and not isinstance(dg, Deferred):
                    return None
                raw["action_digest"] = dg = resolve_digest(dg)  # (as _resolved_dict stores it)
                if dg is None:
                    g = "null"
            if dg is not None:
                if type(dg) is not str or not dg.isascii():
                    return None
                g = _json_str(dg)
        if len(plan) > 5:  # at one `now` (see `at`): the time fields checked above, written in
            return "".join((parts[0], a, parts[1], g, parts[2]))
        ev = raw["evaluated_at"]
        pending = None
        if type(ev) is not str:
            if not isinstance(ev, DeferredTimes):
                return None
            pending = ev  # the times not rendered yet: their text alone
            ev, ru = ev.texts()
        if not ev.isascii():
            return None
        e = _json_str(ev)
        if rev_get is None:  # (the reversibility is the template's: checked above)
            return "".join((parts[0], a, parts[1], g, parts[2], e, parts[3]))
        if pending is None:
            rev = raw["reversibility"]
            if type(rev) is not ReversibilityInfo:
                return None
            rd = _raw_dict(rev)
            if rev_get(rd) != rev_static:
                return None
            ru = rd["reversible_until"]
        else:
            rev = pending.base
            if raw["reversibility"] is not pending or type(rev) is not ReversibilityInfo or \
                    rev_get(_raw_dict(rev)) != rev_static:
                return None
        if ru is None:
            u = "null"
        elif type(ru) is str and ru.isascii():
            u = _json_str(ru)
        else:
            return None
        return "".join((parts[0], a, parts[1], g, parts[2], u, parts[3], e, parts[4]))


# =============================================================================== rollback plan


class DistinctRef(_Out, defer_build=_LAZY):
    ref: str = Field(description="as written, e.g. `original.reviewer`")
    principal: str | None = Field(default=None, description="resolved from the request; null if absent")


class AuthorizationRequirement(_Out, defer_build=_LAZY):
    slots: tuple[SlotSpec, ...] = Field(default=())
    distinct_from: tuple[DistinctRef, ...] = Field(default=())
    excluded_principals: tuple[str, ...] = Field(default=(), description="principals that never count")


class PrerequisiteResult(_Out, defer_build=_LAZY):
    name: str
    met: bool
    reason: str | None = None
    location: str | None = None


StepStatus = Literal["feasible", "manual", "blocked", "out_of_window"]


class Feasibility(_Out, defer_build=_LAZY):
    """Whether the plan can be carried out by the reversal methods. `status` is the
    original's own (`manual`, `blocked`) when it cannot be reversed by its method;
    otherwise `partial` when any cascade step (the original included) is manual, blocked
    or out of its window, else `feasible`. `prerequisites` and `unmet` are the original's;
    each step has its own (see `CascadeStep`)."""

    status: Literal["feasible", "partial", "manual", "blocked"]
    reasons: tuple[str, ...] = Field(default=())
    prerequisites: tuple[PrerequisiteResult, ...] = Field(default=())
    unmet: tuple[str, ...] = Field(default=())
    manual_steps: tuple[str, ...] = Field(default=(), description="record ids of manual steps, breadth-first")
    blocked_steps: tuple[str, ...] = Field(default=(), description="record ids of steps with unmet prerequisites")
    out_of_window_steps: tuple[str, ...] = Field(default=(),
                                                 description="record ids of steps past their reversal window")


class Compensation(_Out, defer_build=_LAZY):
    name: str
    kind: Literal["action", "text"]
    source: Literal["standard", "escalation"] = "standard"


class Duty(_Out, defer_build=_LAZY):
    """A notification or compensation of a rollback scenario, and whether this plan owes it."""

    kind: Literal["notify", "compensate"]
    name: str
    source: Literal["standard", "escalation"] = "standard"
    applies: bool
    condition: str | None = Field(default=None, description="its `when` condition, if it has one")
    reason: str = Field(description="why it applies or not; a condition that errors makes it apply (fail closed)")


class CascadeStep(_Out, defer_build=_LAZY):
    record_id: str
    type: str
    depth: int
    parent: str | None = None
    method: str | None = None
    verify: str | None = None
    reversibility: str | None = Field(default=None, description="class of the record's action type")
    manual: bool = False
    reason: str | None = Field(default=None, description="why the step is manual")
    status: StepStatus = Field(default="feasible", description="this step's own feasibility: `manual` (class), "
                               "`blocked` (its prerequisites over its own record), `out_of_window` (its own window)")
    executed_at: str | None = Field(default=None, description="the record's `executed_at`, normalised")
    window_seconds: int | None = Field(default=None, description="the reversal window of the record's type")
    reversible_until: str | None = Field(default=None, description="executed_at + window; null without both")
    within_window: bool | None = Field(default=None, description="null when the type has no window")
    prerequisites: tuple[PrerequisiteResult, ...] = Field(default=(), description="evaluated over this record")
    unmet: tuple[str, ...] = Field(default=())
    reasons: tuple[str, ...] = Field(default=(), description="why the step is not feasible (every reason)")


class CheckpointRecord(_Out, defer_build=_LAZY):
    record_id: str
    type: str
    depth: int
    parent: str | None = None


class CascadeLoop(_Out, defer_build=_LAZY):
    record_id: str
    parent: str | None = None
    path: tuple[str, ...] = Field(description="record ids from the original to the repeated record")


class UndeclaredRecord(_Out, defer_build=_LAZY):
    """A downstream record whose type its parent's type does not declare in `side_effects`:
    not a step, its own downstream not walked; someone decides about it by hand."""

    record_id: str
    type: str
    parent: str
    parent_type: str


class Cascade(_Out, defer_build=_LAZY):
    depth_limit: int
    steps: tuple[CascadeStep, ...] = Field(default=(), description="breadth-first order")
    checkpoint: tuple[CheckpointRecord, ...] = Field(default=(),
                                               description="records beyond the authorized depth: pause and confirm")
    loops: tuple[CascadeLoop, ...] = Field(default=())
    partial: bool = False
    truncated: bool = False
    truncated_reason: str | None = None
    undeclared: tuple[UndeclaredRecord, ...] = Field(
        default=(), description="downstream records of a type their parent's `side_effects` do not declare, "
        "breadth-first: not planned, the plan is partial; left out when empty")

    @model_serializer(mode="wrap")
    def _without_empty_undeclared(self, handler: SerializerFunctionWrapHandler):  # (unannotated: JSON schema)
        # (added later: a plan with no undeclared record keeps its serialised form and `plan_hash`)
        data = handler(self)
        if isinstance(data, dict) and not data.get("undeclared"):
            data.pop("undeclared", None)
        return data


class RollbackPlan(_Out, defer_build=_LAZY):
    workflow: str
    scenario: str
    scenario_declared: bool
    standard_scenario: bool
    authorizable: bool = Field(description="false when the plan cannot be authorized (see errors)")
    errors: tuple[EvalError, ...] = Field(default=())
    original_id: str | None = None
    original_type: str | None = None
    requested_by: str | None = None
    route: str | None = None
    window: Literal["standard", "escalated", "none"]
    window_seconds: int | None = None
    executed_at: str | None = None
    reversible_until: str | None = None
    authorization: AuthorizationRequirement
    notify: tuple[str, ...] = Field(default=())
    compensations: tuple[Compensation, ...] = Field(default=())
    duties: tuple[Duty, ...] = Field(default=(), description="every notification and compensation of the scenario "
                                     "(and its `after window` block when it applies), with whether it applies and why")
    feasibility: Feasibility
    cascade: Cascade
    evaluated_at: str
    policy_hash: str
    policy_version: str | None = None
    owners: WorkflowOwners | None = Field(
        default=None, description="the workflow's business and technical owner; null when the workflow is unknown")
    plan_hash: str = Field(description="sha256 of the plan's canonical JSON without this field")


# =============================================================================== authorization


class SlotFill(_Out, defer_build=_LAZY):
    id: str
    roles: tuple[str, ...]
    any_of: bool = False
    count: int
    source: Literal["standard", "escalation"] = "standard"
    filled_by: tuple[str, ...] = Field(default=())
    missing: int = 0


class RejectedApproval(_Out, defer_build=_LAZY):
    principal: str
    code: Literal["distinct_from", "missing_role", "duplicate", "plan_hash", "policy_hash", "expired",
                  "future", "invalid", "unused", "action_digest", "alias"]
    reason: str


class AuthorizationVerdict(_Out, defer_build=_LAZY):
    satisfied: bool
    plan_hash: str = Field(description="the plan's hash; empty for a gate decision")
    action_digest: str | None = Field(default=None, description="the decision's action digest (a gate decision)")
    slots: tuple[SlotFill, ...] = Field(default=())
    open_slots: tuple[SlotFill, ...] = Field(default=())
    accepted: tuple[str, ...] = Field(default=(), description="principals that fill a slot")
    rejected: tuple[RejectedApproval, ...] = Field(default=())
    errors: tuple[EvalError, ...] = Field(default=())
    evaluated_at: str
    policy_hash: str


# =============================================================================== resume


class CriterionResult(_Out, defer_build=_LAZY):
    name: str
    met: bool
    reason: str | None = Field(default=None, description="`false`, a non-bool value, or the error")
    description: str | None = None
    location: str | None = None


class ResumeDecision(_Out, defer_build=_LAZY):
    workflow: str
    trigger: str | None = None
    allowed: bool
    criteria: tuple[CriterionResult, ...] = Field(default=())
    unmet: tuple[str, ...] = Field(default=())
    errors: tuple[EvalError, ...] = Field(default=())
    evaluated_at: str
    policy_hash: str
    policy_version: str | None = None


if not _LAZY:  # (deferred: its first use resolves the self-reference)
    OriginalRecord.model_rebuild()

INPUT_MODELS: dict[str, type[BaseModel]] = {
    "Action": Action,
    "WorkflowState": WorkflowState,
    "OriginalRecord": OriginalRecord,
    "RollbackRequest": RollbackRequest,
    "Approval": Approval,
    "ResumeRequest": ResumeRequest,
    "GateQuestion": GateQuestion,
    "RollbackQuestion": RollbackQuestion,
    "AuthorizeQuestion": AuthorizeQuestion,
    "ResumeQuestion": ResumeQuestion,
}
OUTPUT_MODELS: dict[str, type[BaseModel]] = {
    "Decision": Decision,
    "RollbackPlan": RollbackPlan,
    "AuthorizationVerdict": AuthorizationVerdict,
    "ResumeDecision": ResumeDecision,
}
ALL_MODELS: dict[str, type[BaseModel]] = {**INPUT_MODELS, **OUTPUT_MODELS}
