"""The checked policy model every later stage consumes.

Frozen pydantic models. Source locations live in `Loc` fields, which compare equal to
each other and are excluded from dumps, so two models that differ only in where they
were written are equal (formatting never changes meaning).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..source import Span
from ..timestamps import WINDOW_UNITS

EFFECTS = ("allow", "require_approval", "deny")
DEFAULT_EFFECTS = ("require_approval", "deny")
REVERSIBILITY_CLASSES = ("full", "partial", "irreversible")
SEVERITIES = ("low", "medium", "high", "critical")
OWNER_KINDS = ("business", "technical")
STANDARD_SCENARIOS = (
    "reviewer_error",
    "customer_request",
    "incident",
    "policy_reversal",
    "regulatory_order",
)
DURATION_UNITS = WINDOW_UNITS  # units of a reversal window (timestamps.WINDOW_UNITS)
COST_TIME_UNITS = ("hours",)  # a cost's unit: one of these, or a three-letter currency code (`USD`)


class Loc:
    """A source span that never takes part in equality or hashing."""

    __slots__ = ("span",)

    def __init__(self, span: Span | None = None) -> None:
        self.span = span

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Loc)

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return f"Loc({self.span})" if self.span else "Loc()"

    def __str__(self) -> str:
        return str(self.span) if self.span else "<unknown>"


NO_LOC = Loc()


def _loc() -> Any:
    return Field(default=NO_LOC, exclude=True, repr=False)


class Node(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, extra="forbid")
    loc: Loc = _loc()


class Name(Node):
    """A reference to a name, kept with its location."""

    name: str
    # a duty (`notify [a] when `cond``): the condition under which it applies
    when: Condition | None = None


class Condition(Node):
    """A CEL condition. `loc` covers the backticks; the CEL text starts one char in."""

    source: str


class Const(Node):
    name: str
    value: Any


class Approvers(Node):
    count: int
    roles: tuple[Name, ...]
    any_of: bool = False  # `by N of [a, b]` vs `by N role`


class FieldTypeRef(Node):
    """A declared field type as written: `double`, `list<string>`, `{ ... }`, `list { ... }`.
    `name` is None for a bare object; `fields` is set for an object body."""

    name: str | None = None
    name_loc: Loc = _loc()
    args: tuple[FieldTypeRef, ...] = ()
    fields: tuple[FieldDecl, ...] | None = None


class FieldDecl(Node):
    """`name: type` or `name?: type` in a `fields` or `evidence` block."""

    name: str
    optional: bool = False
    type: FieldTypeRef


class Rule(Node):
    name: str
    named: bool  # False when the name was derived from the rule's content
    effect: str
    effect_loc: Loc = _loc()
    condition: Condition
    approvers: Approvers | None = None


class Prerequisite(Node):
    name: str
    named: bool
    condition: Condition


class Reversibility(Node):
    klass: str  # full | partial | irreversible
    klass_loc: Loc = _loc()
    method: str | None = None
    window_seconds: int | None = None
    window_text: str | None = None  # as written, e.g. "60s"
    window_loc: Loc = _loc()


class Cost(Node):
    """`cost 40 USD`, `cost 2.5 hours`: what undoing costs (an action type's reversal, a
    rollback scenario). `unit`: a three-letter currency code or `hours`."""

    amount: float
    unit: str
    unit_loc: Loc = _loc()


class ActionType(Node):
    name: str
    workflow: str
    system: str | None = None
    description: str | None = None
    reversibility: Reversibility | None = None
    prerequisites: tuple[Prerequisite, ...] = ()
    side_effects: tuple[Name, ...] = ()
    receipt: tuple[Name, ...] = ()
    verify: str | None = None
    # A repair action (a correction, a restore): while its workflow is stopped it is gated
    # by its own rules and stop triggers instead of being stopped with everything else.
    runs_while_stopped: bool = False
    rules: tuple[Rule, ...] = ()
    # `fields { ... }`: the declared shape of the action (None: not declared)
    fields: tuple[FieldDecl, ...] | None = None
    fields_loc: Loc = _loc()
    # `cost 40 USD`: what reversing one action of the type costs (None: not declared)
    cost: Cost | None = None


class Criterion(Node):
    name: str
    condition: Condition
    description: str | None = None


class StopTrigger(Node):
    name: str
    workflow: str
    condition: Condition | None = None
    severity: str | None = None
    severity_loc: Loc = _loc()
    owner: str | None = None
    affects: tuple[Name, ...] = ()
    receipt: tuple[Name, ...] = ()
    rollback: str | None = None
    notify: tuple[Name, ...] = ()
    criteria: tuple[Criterion, ...] = ()
    has_resume_block: bool = False
    description: str | None = None
    # `evidence { ... }`: the declared shape of the evidence its criteria read
    evidence: tuple[FieldDecl, ...] | None = None


class Slot(Node):
    count: int
    roles: tuple[Name, ...]
    any_of: bool = False


class Ref(Node):
    path: tuple[str, ...]  # e.g. ("original", "reviewer")

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


class Authorization(Node):
    slots: tuple[Slot, ...]
    distinct_from: tuple[Ref, ...] = ()


class CompItem(Node):
    """A compensating action: an action type name, or free text."""

    name: str
    is_action: bool
    when: Condition | None = None  # applies only when this holds


class Escalation(Node):
    route: Name | None = None
    authorization: Authorization | None = None
    notify: tuple[Name, ...] = ()
    compensate: tuple[CompItem, ...] = ()


class Scenario(Node):
    name: str
    workflow: str
    route: Name | None = None
    authorization: Authorization | None = None
    notify: tuple[Name, ...] = ()
    compensate: tuple[CompItem, ...] = ()
    cascade_depth: int = 0
    escalation: Escalation | None = None
    description: str | None = None
    # `cost 250 EUR`: what one rollback under this scenario costs (None: not declared)
    cost: Cost | None = None

    @property
    def standard(self) -> bool:
        return self.name in STANDARD_SCENARIOS


def field_object(decls: tuple[FieldDecl, ...]):
    """The `fieldtypes.FType` of a checked `fields`/`evidence` block."""
    from ..fieldtypes import FField, FType

    return FType("object", fields=tuple(FField(d.name, field_type(d.type), d.optional) for d in decls))


def field_type(t: FieldTypeRef):
    """The `fieldtypes.FType` of a checked type (see check.Checker.field_type)."""
    from ..fieldtypes import ANY, SCALARS, FType

    if t.name is None:
        return field_object(t.fields or ())
    if t.name in SCALARS:
        return FType(t.name)
    if t.name in ("list", "map") and t.args:
        return FType(t.name, field_type(t.args[-1]))
    return ANY


FieldTypeRef.model_rebuild()
FieldDecl.model_rebuild()
Name.model_rebuild()


class Owner(Node):
    kind: str
    name: str


class Workflow(Node):
    name: str
    version: str | None = None
    owners: tuple[Owner, ...] = ()
    default_effect: str = "require_approval"
    default_loc: Loc = _loc()
    roles: tuple[Name, ...] = ()
    constants: tuple[Const, ...] = ()
    actions: tuple[ActionType, ...] = ()
    stops: tuple[StopTrigger, ...] = ()
    scenarios: tuple[Scenario, ...] = ()

    def owner(self, kind: str) -> str | None:
        for o in self.owners:
            if o.kind == kind:
                return o.name
        return None


class PolicyFile(Node):
    """What one .policy file declares."""

    path: str
    roles: tuple[Name, ...] = ()
    constants: tuple[Const, ...] = ()
    workflows: tuple[Workflow, ...] = ()
    # the files it imports (`fields from`), as paths resolved from the working directory: a
    # policy store watches them with the policy files (not part of the policy hash: what they
    # declare is, through the action types' `fields`)
    imports: tuple[str, ...] = ()


class PolicySet(Node):
    """A checked policy set: every file of a directory, names resolved across files."""

    files: tuple[PolicyFile, ...] = ()
    content_hash: str = ""

    @property
    def workflows(self) -> tuple[Workflow, ...]:
        return tuple(w for f in self.files for w in f.workflows)

    @property
    def roles(self) -> tuple[str, ...]:
        names: list[str] = []
        for f in self.files:
            names.extend(r.name for r in f.roles)
            for w in f.workflows:
                names.extend(r.name for r in w.roles)
        return tuple(dict.fromkeys(names))

    @property
    def constants(self) -> tuple[Const, ...]:
        return tuple(c for f in self.files for c in f.constants)
