"""The compiled policy: immutable, indexed, built once by `compiler.compile_policy`.

Every object here is a frozen, slotted dataclass (or a read-only mapping of them) holding
what evaluation needs and nothing it fills in, with one exception: the decision fragments
of a rule or stop trigger (its `RuleRef` and two `TraceEntry`s, `ref`, `trace_true`,
`trace_false`) are built from its own fields on first read and kept, each on its own, one
store of a complete model (equal whichever thread builds it), so an engine leaves the
host's cyclic collector only the fragments its decisions have shown (issue 16, goal 5: an
erring rule shows none of its `TraceEntry`s, a stop trigger that never fires only its
`trace_false`), none at all until the type is evaluated. The
accelerators (fused gates, shape speculation, decision templates, per-`now` caches) are
built *from* a compiled policy by the engine and kept beside it (`engine.accel`), so a
compiled policy is safe to share between threads and between engines, accelerated or not.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from .construct import fast
from .models import (
    ApprovalRequirement,
    ReversibilityInfo,
    RuleRef,
    ScenarioCost,
    SlotSpec,
    StopInfo,
    TraceEntry,
    WorkflowOwners,
)

__all__ = ["CRule", "CCriterion", "CStop", "CPrereq", "CAction", "CSlot", "CScenario", "CWorkflow",
           "CompiledPolicy", "CCost", "ECHOED", "GateEntry"]

ECHOED = ("id", "type", "workflow")  # the action fields a decision may show (always in `CAction.reads`)

# One entry of a gate sequence (`CAction.gate`, `CWorkflow.gate_stops`): (call, item);
# `call` is None for a stop trigger whose condition is `false` for every action of the
# type (its type guard).
GateEntry = tuple


_set = object.__setattr__


def _ref(item: Any) -> RuleRef:
    """The `RuleRef` of a rule or stop trigger, built and kept (see the module doc)."""
    ref = fast(RuleRef, {"kind": item.kind, "name": item.name, "effect": item.effect, "location": item.location})
    _set(item, "_ref", ref)
    return ref


def _trace(item: Any, matched: bool) -> TraceEntry:
    """The `TraceEntry` of a rule or stop trigger whose condition is `matched` (True or
    False, no error), built and kept (see the module doc)."""
    t = fast(TraceEntry, {"kind": item.kind, "name": item.name, "effect": item.effect, "location": item.location,
                          "condition": item.source, "value": "true" if matched else "false", "error": None,
                          "matched": matched})
    _set(item, "_trace_true" if matched else "_trace_false", t)
    return t


class _Fragments:
    """The lazily built decision fragments of `CRule` and `CStop` (see the module doc)."""

    __slots__ = ()
    _ref: Any
    _trace_true: Any
    _trace_false: Any

    @property
    def ref(self) -> RuleRef:
        r = self._ref
        return r if r is not None else _ref(self)

    @property
    def trace_true(self) -> TraceEntry:
        t = self._trace_true
        return t if t is not None else _trace(self, True)

    @property
    def trace_false(self) -> TraceEntry:
        t = self._trace_false
        return t if t is not None else _trace(self, False)


@dataclass(frozen=True, slots=True)
class CCost:
    """`cost 40 USD` / `cost 2.5 hours`: what undoing costs. `unit` is a three-letter
    currency code (ISO 4217 style, upper case) or `hours`; amounts of different units are
    never added."""

    amount: float
    unit: str


@dataclass(frozen=True, slots=True)
class CRule(_Fragments):
    name: str
    effect: str
    prec: int
    fn: Callable[[Mapping[str, Any]], Any]
    source: str
    location: str | None
    approval: ApprovalRequirement | None
    kind: str = "rule"
    reason: str = ""  # the decision's `reason` when this rule decides
    reason_err: str = ""  # the same when its condition errored
    # ref, trace_true, trace_false: each built on first read (see the module doc)
    _ref: Any = field(default=None, init=False, compare=False, repr=False)
    _trace_true: Any = field(default=None, init=False, compare=False, repr=False)
    _trace_false: Any = field(default=None, init=False, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class CCriterion:
    name: str
    fn: Callable[[Mapping[str, Any]], Any]
    source: str
    location: str | None
    description: str | None


@dataclass(frozen=True, slots=True)
class CStop(_Fragments):
    name: str
    fn: Callable[[Mapping[str, Any]], Any] | None
    source: str
    location: str | None
    info: StopInfo
    receipt: tuple[str, ...]
    criteria: tuple[CCriterion, ...]
    effect: str = "stop"
    prec: int = 0
    kind: str = "stop"
    evidence: Any = None  # `evidence { ... }`: the declared shape of its evidence (fieldtypes.FType)
    reason: str = ""  # the decision's `reason` when this trigger decides
    reason_err: str = ""  # the same when its condition errored
    # ref, trace_true, trace_false: each built on first read (see the module doc)
    _ref: Any = field(default=None, init=False, compare=False, repr=False)
    _trace_true: Any = field(default=None, init=False, compare=False, repr=False)
    _trace_false: Any = field(default=None, init=False, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class CPrereq:
    name: str
    fn: Callable[[Mapping[str, Any]], Any]
    source: str
    location: str | None


@dataclass(frozen=True, slots=True)
class CAction:
    name: str
    workflow: str
    system: str | None
    rules: tuple[CRule, ...]  # sorted by (precedence, name)
    receipt: tuple[str, ...]  # sorted, unique
    klass: str | None
    method: str | None
    window: str | None
    window_seconds: int | None
    window_td: timedelta | None  # the window as a timedelta, built once
    runs_while_stopped: bool  # a repair action: gated by its own rules while the workflow is stopped
    verify: str | None
    prerequisites: tuple[CPrereq, ...]  # sorted by name
    side_effects: tuple[str, ...]
    within_window: tuple[ScenarioCost, ...]
    after_window: tuple[ScenarioCost, ...]
    location: str | None
    reversibility: ReversibilityInfo | None  # reversible_until filled in per evaluation
    # What the gate walks for this type: the workflow's stop triggers that have a condition
    # (by name), then `rules`; each as (call, item) (see GateEntry).
    gate: tuple = ()
    # The top-level fields of the action its gate can read (`reads_of`): only these are
    # checked against the input limits; None: the whole action
    reads: tuple[str, ...] | None = None
    default_reason: str = ""  # the decision's `reason` when no rule matches
    # `fields { ... }`: the declared shape (fieldtypes.FType) every action of the type must
    # have, checked with the input (None: not declared)
    fields: Any = None
    # `cost 40 USD`: what reversing one action of the type costs (None: not declared)
    cost: CCost | None = None


@dataclass(frozen=True, slots=True)
class CSlot:
    id: str
    count: int
    roles: tuple[str, ...]
    any_of: bool
    source: str
    spec: SlotSpec


@dataclass(frozen=True, slots=True)
class CScenario:
    name: str
    workflow: str
    standard: bool
    route: str | None
    slots: tuple[CSlot, ...]
    distinct_from: tuple[tuple[str, ...], ...]
    notify: tuple[str, ...]
    compensate: tuple[tuple[str, bool], ...]  # (name, is_action)
    cascade_depth: int
    has_escalation: bool
    esc_route: str | None
    esc_slots: tuple[CSlot, ...]
    esc_distinct_from: tuple[tuple[str, ...], ...]
    esc_notify: tuple[str, ...]
    esc_compensate: tuple[tuple[str, bool], ...]
    location: str | None
    # duties with a `when` (notify or compensate): (kind, name, is_action, escalation, fn,
    # source, location); a duty listed here applies only when its condition holds (or errors)
    conditional: tuple = ()
    # `cost 250 EUR`: what one rollback under this scenario costs (None: not declared)
    cost: CCost | None = None


@dataclass(frozen=True, slots=True)
class CWorkflow:
    name: str
    version: str | None
    default_effect: str
    default_ref: RuleRef
    actions: Mapping[str, CAction]
    stops: tuple[CStop, ...]  # sorted by name
    stops_by_name: Mapping[str, CStop]
    scenarios: Mapping[str, CScenario]
    policy: Mapping[str, Any]  # constants, as CEL's `policy`
    running_state: Mapping[str, Any]  # `workflow` in CEL when the caller gives no state
    location: str | None
    gate_stops: tuple = ()  # the gate sequence for an undeclared action type: the stop triggers alone
    stop_reads: tuple[str, ...] | None = None  # what gate_stops can read (see CAction.reads)
    owners: WorkflowOwners | None = None  # its business and technical owner (every decision and plan names them)


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    policy_hash: str
    workflows: Mapping[str, CWorkflow]
    actions: Mapping[str, CAction]  # every action type of the set, by name
    roles: tuple[str, ...]
