"""The glue every adapter shares: gate a tool call on a ``Runtime``, accept an approval,
record the execution. No framework is imported here.

The guarantees live in the ledger, not in the framework's memory:

- a tool call is gated under an idempotency key made of the call's scope (a LangGraph
  thread, an agent run), its call id and the digest of its arguments, so a framework that
  re-runs a node on resume gets the same recorded decision back, and the same call id
  with other arguments is a new decision;
- an approval is a principal's verdict bound to one decision and its ``action_digest``;
  the principal's roles come from the deployment's directory (``approvers``), never from
  the approval itself; the Runtime counts it only if the principal can fill a slot;
- a decision is claimed in the ledger before its tool runs (``ToolGate.take``: a
  ``claimed`` transition appended only if the ledger, read under its append lock, says the
  decision is allowed or approved, unclaimed, and not outdated by a later stop; keyed
  ``stopline:claim:<decision>:1``), and its execution is recorded after, so a decision is
  used by one run and its approvals are used once, across threads, processes and
  machines sharing the ledger: a second resume, a replayed resume, a standing "always
  approve", a retry on another worker finds the decision claimed or ``executed``;
- a call that already ran (a re-run node) is not run again;
- arguments are never coerced to fit: a dict key that is not a string (a tuple, an int)
  reaches the Runtime as it is, which records the call as a ``deny`` naming the key
  (``unrecordable action``), so the agent is refused with that reason (never a bare
  ``TypeError`` out of the framework, and never ``1`` and ``"1"`` folded into one key);
- arguments beyond the engine's input limits taken as one input (``MAX_INPUT_CHARS``,
  ``MAX_INPUT_ITEMS``, ``MAX_INPUT_DEPTH``: ``docs/limits.md``), whatever fields the policy
  reads, reach the Runtime as they are (no recursion here: ``_plain``, ``_digest``), which
  records the call as a ``deny`` naming the limit with an excerpt of the arguments;
- the gate judges the arguments the tool will receive: each adapter passes the arguments
  as the tool's own validation hands them over (its declared defaults filled in; LangGraph
  the values its schema produces), and a call whose arguments the tool would read as
  something else than what the gate saw (``"true"`` for a boolean, which a lax validator
  turns into ``True`` while the policy's ``action.recursive == true`` does not match the
  string), or would refuse, carries the ``problem`` (``conform``): it is gated (recorded:
  a stop fires, a deny is a deny) and never run, nor held for a reviewer.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any

from ..ledger.errors import LedgerUnavailable
from ..limits import MAX_INPUT_DEPTH
from ..runtime.approvals import CLAIM_KEY  # noqa: F401 - the n-th claim of a decision: ``stopline:claim:<decision>:<n>``
from ..runtime.gatejson import repr_pieces
from ..runtime.results import LEGACY_ERROR_FIELD, outcome_of
from .outputs import MAX_ERROR, _fields_of, _jsonable, bounded_receipt, error_text  # noqa: F401 - (MAX_ERROR: re-exported)

_log = logging.getLogger("policy_engine.integrations")

__all__ = ["Approval", "ToolGate", "Check", "Outcome", "WorkflowStopped", "ExecutionNotRecorded", "conform",
           "require_extra"]


def require_extra(module: str, extra: str, adapter: str) -> ModuleType:
    """Import ``module`` or fail with one line naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"policy_engine.integrations.{adapter} needs the `{extra}` extra: "
                          f"pip install 'stopline[{extra}]' (in a checkout: pip install -e '.[{extra}]')") from None


class ExecutionNotRecorded(LedgerUnavailable):
    """The tool ran under its decision (allowed or approved, claimed) but the ledger could
    not record its execution: the claim is in doubt (``Runtime.claims_in_doubt``), the call
    is not run again under that decision. ``error``: the ledger's own error."""

    def __init__(self, check: Check, error: BaseException) -> None:
        self.check, self.error = check, error
        super().__init__(f"Stopline: `{check.tool}` ran under decision {check.decision_id} (workflow "
                         f"`{check.workflow}`) but its execution could not be recorded: {error}. A claim in "
                         "doubt (Runtime.claims_in_doubt): record the execution, or abandon the claim")


class WorkflowStopped(RuntimeError):
    """A stop trigger fired (or the workflow is stopped): the agent halts. The stop is in
    the ledger; every later gate of the workflow is `stop` until an allowed resume."""

    def __init__(self, check: Check) -> None:
        self.check = check
        super().__init__(f"Stopline stopped workflow `{check.workflow}` at tool `{check.tool}`: {check.reason}")


@dataclass(frozen=True)
class Approval:
    """A reviewer's answer to a held tool call: bound to the decision and its action
    digest, given by ``principal``. Roles are not part of it: the gate looks them up."""

    decision_id: str
    action_digest: str
    principal: str
    verdict: str = "approve"  #: approve | deny
    note: str | None = None

    @classmethod
    def for_request(cls, request: Mapping[str, Any], principal: str, verdict: str = "approve",
                    note: str | None = None) -> Approval:
        """The approval of the request an adapter raised (an interrupt's value)."""
        return cls(request["decision_id"], request["action_digest"], principal, verdict, note)

    def to_dict(self) -> dict[str, Any]:
        return {"decision_id": self.decision_id, "action_digest": self.action_digest, "principal": self.principal,
                "verdict": self.verdict, **({"note": self.note} if self.note else {})}


@dataclass(frozen=True)
class Check:
    """A gated tool call: the recorded decision and where it stands in the ledger."""

    tool: str
    args: Mapping[str, Any]
    call_id: str
    workflow: str
    action: dict
    key: str
    decision_id: str
    decision: Any  # policy_engine.models.Decision
    status: str  #: the decision's status: allowed, refused, pending, approved, denied, expired, executed…
    used_by: str | None = None  #: the execution that already used it (a re-run)
    fresh: bool = False  #: this check recorded the decision (no earlier gate of the same call)
    #: why the tool would not receive these arguments as the gate judged them (they do not
    #: match its input schema): the call is gated, never run (``ToolGate.outcome``)
    problem: str | None = None

    @property
    def effect(self) -> str:
        return self.decision.effect

    @property
    def reason(self) -> str:
        return self.decision.reason

    @property
    def rule(self) -> str:
        return self.decision.deciding.name

    @property
    def action_digest(self) -> str | None:
        return self.decision.action_digest

    def request(self) -> dict[str, Any]:
        """What an interrupt / interruption carries to the reviewer (JSON): what identifies
        the decision (``decision_id``, ``action_digest``, ``tool_call_id``) and why."""
        d = self.decision
        return {"stopline": "approval_required", "decision_id": self.decision_id, "action_digest": d.action_digest,
                "tool_call_id": self.call_id,
                "workflow": self.workflow, "tool": self.tool, "args": self.args, "rule": self.rule,
                "reason": d.reason, "status": self.status,
                "approvals": [{"rule": a.rule, **_requirement(a)} for a in d.approvals]}


def _requirement(a: Any) -> dict:
    try:
        return {k: v for k, v in a.model_dump(mode="json").items() if k != "rule"}
    except AttributeError:  # pragma: no cover
        return {}


@dataclass(frozen=True)
class Outcome:
    """The gate's answer for one call: run it (``run``) or tell the agent ``message``."""

    run: bool
    message: str = ""
    approver: str | None = None
    pending: bool = False  #: approvals are still missing (ask again)
    done: bool = False  #: the call already ran (a re-run): ``message`` reports it
    spent: bool = False  #: the decision will never run (claimed by another run, or a stop came after it)
    failed: bool = False  #: with ``done``: the call ran and raised (``message`` says with what)


EXECUTOR = "stopline-executor:"  #: the principal prefix of an execution's claim

#: receipt fields only the gate sets (a tool argument or output of the same name is dropped):
#: the execution's ``reviewer`` is who a rollback's ``distinct from original.reviewer`` excludes;
#: ``tool_error`` stays reserved (no tool sets it), as an execution recorded with it reads as failed
GATE_FIELDS = ("tool", "tool_call_id", "policy_rule", "reviewer", "reviewer_decision", "tool_error")
#: the receipt field in which the adapters recorded a run that raised before the execution had an
#: ``outcome`` (session 22): read only (such an entry still reads as failed); a run that raises is
#: now recorded ``outcome="failed"`` with its ``error`` (``error_text``) in the execution itself
ERROR_FIELD = LEGACY_ERROR_FIELD

Approvers = Mapping[str, Iterable[str]] | Callable[[str], Iterable[str]]
ReceiptFn = Callable[[Check, Any], Mapping[str, Any]]


def _digest(x: Any) -> str:
    """A stable digest of ``x`` (canonical JSON; a value JSON cannot hold, such as a dict
    key that is not a string, by its ``repr``: the digest names the call, never fails)."""
    try:
        text = json.dumps(x, sort_keys=True, separators=(",", ":"), default=str)
    except (TypeError, ValueError, RecursionError):  # (its repr written without recursion: any nesting)
        text = "repr:" + "".join(repr_pieces(x, exact=True))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _plain(x: Any, depth: int = 0) -> Any:
    """Tool arguments as the gate sees them: JSON values as they are (tuples as lists), any
    other value as its text (a ``Path``, a ``datetime``), but bytes and sets, whose text is
    not what the tool gets, as they are (denied); dict keys are kept as they are, so a key
    JSON cannot hold (a tuple, an int) reaches the Runtime, which records the call as a deny
    naming it. Values nested beyond ``MAX_INPUT_DEPTH`` levels are kept as they are (no
    recursion without end): the Runtime records such a call as a deny (``gatejson.recordable``)."""
    if depth > MAX_INPUT_DEPTH:
        return x
    if isinstance(x, Mapping):
        return {k: _plain(v, depth + 1) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v, depth + 1) for v in x]
    if x is None or type(x) in (str, bool, int, float):
        return x
    if isinstance(x, (bytes, bytearray, memoryview, set, frozenset)):
        # its text is not the value the tool gets (`b'secrets/x'` passes a rule on `secrets/`;
        # a set's order is arbitrary): kept as it is, so the Runtime records the call as a deny
        return x
    if isinstance(x, str):
        return str.__str__(x)
    if isinstance(x, bool):
        return bool(x)
    if isinstance(x, int):
        return int(x)
    if isinstance(x, float):
        return float(x)
    return str(x)


_VALIDATORS: dict[str, Any] = {}
_VALIDATORS_LOCK = threading.Lock()
MAX_PROBLEM = 300  #: characters of a schema problem quoted back to the agent


def _validator(schema: Mapping[str, Any]) -> Any:
    """A (cached) JSON Schema validator for ``schema``, of the draft it declares (2020-12 by
    default, as pydantic and MCP write them). Raises if the schema itself is invalid."""
    import jsonschema  # type: ignore[import-untyped]
    from jsonschema.validators import validator_for  # type: ignore[import-untyped]

    key = _digest(schema)
    with _VALIDATORS_LOCK:
        v = _VALIDATORS.get(key)
    if v is None:
        cls = validator_for(schema, default=jsonschema.Draft202012Validator)
        cls.check_schema(schema)
        v = cls(schema)
        with _VALIDATORS_LOCK:
            if len(_VALIDATORS) >= 512:
                _VALIDATORS.clear()
            _VALIDATORS[key] = v
    return v


def _deref(schema: Any, root: Mapping[str, Any]) -> Any:
    """``schema`` with a local ``$ref`` (``#/$defs/...``) followed (a few hops at most)."""
    for _ in range(8):
        ref = schema.get("$ref") if isinstance(schema, Mapping) else None
        if not (isinstance(ref, str) and ref.startswith("#")):
            return schema
        node: Any = root
        for part in [p for p in ref[1:].split("/") if p]:
            part = part.replace("~1", "/").replace("~0", "~")
            node = node.get(part) if isinstance(node, Mapping) else None
        schema = node
    return schema


def _fill_defaults(schema: Any, root: Mapping[str, Any], value: Any, path: tuple, added: set, depth: int) -> Any:
    """``value`` with the ``default`` of every object property it leaves out, at every depth
    its schema's ``properties`` reach (through local ``$ref``s), as a pydantic model fills
    them in; the paths filled are added to ``added``."""
    if depth > 32 or not isinstance(value, Mapping):
        return value
    node = _deref(schema, root)
    props = node.get("properties") if isinstance(node, Mapping) else None
    if not isinstance(props, Mapping):
        return dict(value) if depth == 0 else value
    out = dict(value)
    for k, p in props.items():
        if not isinstance(p, Mapping):
            continue
        if k in out:
            out[k] = _fill_defaults(p, root, out[k], (*path, k), added, depth + 1)
            continue
        target = p if "default" in p else _deref(p, root)
        if isinstance(target, Mapping) and "default" in target:
            out[k] = copy.deepcopy(target["default"])
            added.add((*path, k))
    return out


def conform(schema: Any, args: Mapping[str, Any]) -> tuple[dict, str | None]:
    """``args`` as a tool declaring the JSON Schema ``schema`` receives them, and why they
    do not fit it (``None`` when they do).

    The frameworks validate a tool's arguments leniently before the tool runs (pydantic's
    lax mode: ``"true"``, ``1`` or ``"yes"`` for a boolean become ``True``, ``"42"`` for an
    integer becomes ``42``) and fill in the declared defaults. A gate that judged the
    arguments as sent would judge other values than the tool gets (``action.recursive ==
    true`` does not match ``"true"``). So: the properties the call leaves out get their
    declared ``default`` (what the tool receives), and the arguments must match the
    schema exactly (types, enums, nested objects, no missing required property): JSON that
    matches its schema is what a lax validator leaves as it is. (The properties left out
    of nested objects get their defaults too, through local ``$ref``s.) Anything else is the
    returned problem (the adapters gate the call and never run it). A schema that cannot be
    applied is a problem too (fail closed). No schema (``None``): the arguments as sent."""
    args = dict(args)
    if schema is None:
        return args, None
    if not isinstance(schema, Mapping):
        return args, "the tool declares no usable input schema"
    added: set[tuple] = set()
    filled = _fill_defaults(schema, schema, args, (), added, 0)
    try:
        v = _validator(schema)
        # (a declared default is the tool's own value: never judged against its schema)
        errors = [e for e in v.iter_errors(filled)
                  if not any(tuple(e.absolute_path)[:len(a)] == a for a in added)]
    except ImportError:
        return filled, "the arguments cannot be checked against the tool's input schema: jsonschema is not installed"
    except Exception as e:  # noqa: BLE001 - an invalid or unresolvable schema: nothing can be said to match it
        return filled, f"the tool's input schema cannot be applied: {type(e).__name__}: {str(e)[:MAX_PROBLEM]}"
    if not errors:
        return filled, None
    from jsonschema.exceptions import best_match  # type: ignore[import-untyped]

    worst = best_match(errors)
    where = ".".join(str(p) for p in worst.absolute_path)
    msg = worst.message if len(worst.message) <= MAX_PROBLEM else worst.message[:MAX_PROBLEM] + "..."
    return filled, (f"`{where}`: {msg}" if where else msg)


@dataclass
class ToolGate:
    """Gate tool calls of one workflow on a ``policy_engine.Runtime``.

    ``approvers``: the directory of who may approve: ``{principal: [roles]}`` or a
    callable ``principal -> roles`` (your identity provider). A principal it does not know
    holds no role, and an approval from it never counts.
    ``action``: builds the Stopline action from ``(tool, args, call_id)``; by default the
    arguments at the top level, then ``workflow``, ``type`` (the tool's name, or
    ``types[tool]``) and ``id`` (the call id), which arguments cannot override; the
    action's ``workflow`` is always the gate's, whatever ``action`` returns.
    ``receipt``: extra receipt sources ``(check, output) -> dict``; the recorded receipt
    holds the decision's declared receipt fields, taken from these, the tool's output (a
    dict, or ``result``), its arguments and the gate (``tool``, ``tool_call_id``,
    ``policy_rule``, ``reviewer``, ``reviewer_decision``: set by the gate only, never by
    an argument or the output, so an agent cannot name the reviewer of its own call).
    ``now``: a clock for the Runtime's calls (``None``: the wall clock)."""

    runtime: Any
    workflow: str
    approvers: Approvers | None = None
    action: Callable[[str, dict, str], dict] | None = None
    types: Mapping[str, str] = field(default_factory=dict)
    receipt: ReceiptFn | None = None
    now: Callable[[], Any] | None = None

    def _t(self) -> Any:
        return self.now() if self.now is not None else None

    # ---------------------------------------------------------------- gate
    def action_for(self, tool: str, args: Mapping[str, Any], call_id: str) -> dict:
        if self.action is not None:
            # the gate's workflow, always: an action built from the agent's arguments (``{**args,
            # ...}``) must not move the call to another workflow's rules (and away from this
            # workflow's stops and claims)
            return {**dict(self.action(tool, dict(args), call_id)), "workflow": self.workflow}
        return {**_plain(dict(args)), "workflow": self.workflow, "type": self.types.get(tool, tool), "id": call_id}

    def check(self, tool: str, args: Mapping[str, Any], call_id: str, *, scope: str = "",
              extra: Mapping[str, Any] | None = None, problem: str | None = None) -> Check:
        """Gate one call (recorded; the same scope, call id and arguments give the same decision).
        ``extra``: fields the adapter knows about the call (a hosted MCP call's server), set
        over the agent's arguments of the same name (an agent cannot pose as another server).
        Arguments JSON cannot hold exactly (a dict key that is not a string) give a recorded
        ``deny`` naming the problem (the Runtime's ``unrecordable action``).

        ``args`` are the arguments as the tool will receive them (the adapter's job: its
        framework's validation, defaults filled in); ``problem`` says why the tool would not
        receive them as they are (``conform``): the call is still gated and recorded, and
        ``outcome`` never lets it run."""
        args, action, key = self.keyed(tool, args, call_id, scope=scope, extra=extra)
        found = self._recorded(key)
        fresh = False
        if found is None:
            try:
                g = self.runtime.gate(action, key=key, now=self._t())
                found, fresh = (g.decision_id, g.decision), True
            except Exception as e:  # a concurrent first gate of the same call won: use its decision
                found = self._recorded(key) if type(e).__name__ == "IdempotencyConflict" else None
                if found is None:
                    raise
        decision_id, decision = found
        status, used = "refused", None
        if decision.effect in ("allow", "require_approval"):
            st = self.runtime.authorization(decision_id, now=self._t())
            status, used = st.status, st.used_by
        return Check(tool, args, call_id, self.workflow, action, key, decision_id, decision, status, used, fresh,
                     problem)

    def keyed(self, tool: str, args: Mapping[str, Any], call_id: str, *, scope: str = "",
              extra: Mapping[str, Any] | None = None) -> tuple[dict, dict, str]:
        """The arguments as gated, the action and the idempotency key ``check`` uses for this
        call (nothing recorded): ``recorded(key)`` says whether it was gated already."""
        plain: dict = _plain(dict(args or {}))
        action = self.action_for(tool, plain, call_id)
        if extra:  # the adapter's own facts (where the call goes): the agent's arguments never set them
            fixed = set(extra) & {"workflow", "type", "id"}
            if fixed:
                raise ValueError(f"`extra` may not set {', '.join(sorted(fixed))}: the gate sets them")
            action = {**action, **_plain(dict(extra))}
        return plain, action, "stopline:gate:" + _digest([self.workflow, scope, tool, call_id, action])[:48]

    def recorded(self, key: str) -> str | None:
        """The decision id recorded under ``key`` (``keyed``), if any."""
        found = self._recorded(key)
        return found[0] if found is not None else None

    def _recorded(self, key: str) -> tuple[str, Any] | None:
        """The decision already recorded for this call (a re-run node, a replayed resume)."""
        from ..ledger import schema
        from ..models import Decision

        led = self.runtime.ledger
        with led.reading() as c:
            old = led.fetch(c, schema.entries.c.key == key, limit=1)
        if not old:
            return None
        return old[0].id, Decision.model_validate(old[0].body["decision"])

    # ---------------------------------------------------------------- approvals
    def roles_of(self, principal: str) -> list[str]:
        if self.approvers is None:
            return []
        try:
            roles = self.approvers(principal) if callable(self.approvers) else self.approvers.get(principal, ())
            return [r for r in (roles or ()) if isinstance(r, str)]
        except Exception:  # a failing directory grants nothing (fail closed)
            return []

    def judge(self, check: Check, value: Any) -> Outcome:
        """Judge a resume value for ``check`` and record it (an approval or a deny), claiming
        nothing: ``run`` when it completes the approval (the caller then checks the ledger
        and claims), ``pending`` when more approvals are needed, else a refusal.

        Replay-stable: a framework that re-runs a node replays the values it was resumed with,
        and each gets the answer it got the first time (an approval already counted answers
        with the status it left the decision in, recorded in its entry), so a node asks for
        exactly as many values as before and a later interrupt gets its own value back."""
        if isinstance(value, Approval):
            value = value.to_dict()
        if not isinstance(value, Mapping):
            return self._refuse(check, "the resume carries no approval (an Approval bound to the decision)")
        principal = value.get("principal")
        if not isinstance(principal, str) or not principal.strip():
            return self._refuse(check, "the approval names no approver")
        if value.get("decision_id") != check.decision_id:
            return self._refuse(check, f"the approval is for decision {value.get('decision_id')!r}, "
                                       f"not {check.decision_id}")
        if value.get("action_digest") != check.action_digest:
            return self._refuse(check, "the approval is bound to other tool arguments "
                                       f"({value.get('action_digest')!r} is not {check.action_digest})")
        verdict = value.get("verdict", "approve")
        if verdict not in ("approve", "deny"):
            return self._refuse(check, f"the approval's verdict is {verdict!r}, not approve or deny")
        st = self.runtime.authorization(check.decision_id, now=self._t())
        if verdict == "approve" and st.verdict is not None and principal in st.verdict.accepted:
            after = self._status_after(check.decision_id, principal) or st.status
            if after == "pending":
                return Outcome(False, self._pending_message(check, st), pending=True)
            return Outcome(True, approver=principal)
        r = self.runtime.approve(check.decision_id, principal=principal, roles=self.roles_of(principal),
                                 verdict=verdict, now=self._t(), note=value.get("note"))
        if not r.recorded:
            return self._refuse(check, r.reason)
        if verdict == "deny":
            return self._refuse(check, f"denied by {principal}" if r.counted else
                                f"{principal}'s deny was recorded but {r.reason}")
        if not r.counted:
            return self._refuse(check, f"{principal} cannot approve it: {r.reason}")
        if r.status == "approved":
            return Outcome(True, approver=principal)
        st = self.runtime.authorization(check.decision_id, now=self._t())
        return Outcome(False, self._pending_message(check, st), pending=r.status == "pending")

    def _status_after(self, decision_id: str, principal: str) -> str | None:
        """The status ``principal``'s counted approval left the decision in (its entry says)."""
        for e in reversed(self.runtime.ledger.entries(kind="approval", link=decision_id)):
            b = e.body
            if b.get("principal") == principal and b.get("verdict") == "approve" and b.get("counted"):
                return b.get("status_after")
        return None

    def accept(self, check: Check, value: Any) -> Outcome:
        """Judge a resume value for ``check`` (``judge``); ``run`` when the Runtime says the
        decision is approved, and the call is then claimed for one execution."""
        out = self.judge(check, value)
        if not out.run:
            return out
        st = self.runtime.authorization(check.decision_id, now=self._t())
        if st.status != "approved":
            return Outcome(False, self._pending_message(check, st), pending=st.status == "pending")
        return self._claim(check, out.approver or "")

    def _halt_if_stopped(self, check: Check) -> None:
        """The ledger decides state: a workflow stopped since the decision halts the call
        (unless the policy lets this action run while stopped: the engine says so)."""
        ws = self.runtime.workflow_status(check.workflow)
        if ws.get("status") != "stopped":
            return
        state = {"name": check.workflow, "status": "stopped", "stopped_by": ws.get("stopped_by"),
                 "stopped_at": ws.get("since")}
        d = self.runtime.engine.evaluate(check.action, state, self._t())
        if d.effect != "allow" and d.effect != "require_approval":
            raise WorkflowStopped(Check(check.tool, check.args, check.call_id, check.workflow, check.action,
                                        check.key, check.decision_id, d, "refused"))

    def _claim(self, check: Check, principal: str) -> Outcome:
        return self.take(check, principal)

    def take(self, check: Check, approver: str | None = None) -> Outcome:
        """Claim ``check``'s decision for one run, in the ledger, right before the tool runs:
        ``run`` only for the one claimant the ledger records. Allowed and approved decisions
        alike: of two processes (or threads) about to run the same call, exactly one runs.

        The claim is a ``claimed`` transition appended by ``Runtime.transact`` only if the
        ledger, read under its append lock (SQLite ``BEGIN IMMEDIATE``, PostgreSQL's row
        lock), says: the decision is ``allowed`` (no execution yet) or ``approved`` (its
        approvals satisfied now, no deny); nobody claimed it; and no stop of the workflow
        came after it (unless the policy lets this action run while stopped). It carries the
        key ``stopline:claim:<decision>:1``, so a second first claim, even one written
        without this check, is refused by the ledger's unique key.

        Not run: ``done`` (it already ran: the message has the receipt), ``spent`` (another
        run holds the claim, or a stop came after the decision: this decision never runs),
        ``pending`` (approvals missing again, e.g. expired), or refused (denied, expired,
        cancelled). A stop in force raises ``WorkflowStopped``."""
        status, holder, why, stop = self._claim_once(check.decision_id)
        if holder is not None:
            return Outcome(True, approver=approver)
        if stop is not None:
            self._halt_if_stopped(check)  # raises WorkflowStopped while the workflow is stopped
            return Outcome(False, f"Stopline refused `{check.tool}`: workflow `{check.workflow}` was stopped by "
                                  f"`{stop.body.get('trigger')}` after this call's decision (resumed since): the "
                                  "decision is not used; gate the call again (a new call)", spent=True)
        if status in ("allowed", "approved") or status is None:  # claimed by another run (or the ledger refused)
            what = "the approval is already being used" if check.effect == "require_approval" else \
                "this call is already being run under its decision"
            return Outcome(False, f"Stopline refused `{check.tool}`: {what} ({why}); it runs once", spent=True)
        st = self.runtime.authorization(check.decision_id, now=self._t())
        if st.status == "executed":  # another run used it (and recorded its execution) first
            done = self.outcome(replace(check, status="executed", used_by=st.used_by))
            return done or Outcome(False, f"Stopline: `{check.tool}` already ran for this call", done=True)
        return Outcome(False, self._pending_message(check, st), pending=st.status == "pending")

    def _claim_once(self, decision_id: str) -> tuple[str | None, str | None, str, Any]:
        """Append the first ``claimed`` transition of ``decision_id`` if the ledger allows it
        (``claim_in_ledger``: nobody claimed it, no stop came after it). Returns the
        decision's status as read under the lock (``None`` if the ledger refused the
        append), the claimant when the claim was recorded, why not, and the stop entry that
        came after the decision when that is why."""

        def first(claims: list, stop_after: Callable[[], Any], nonce: str) -> tuple[str | None, str]:
            if claims:
                return None, f"claimed by {claims[-1]}"
            if stop_after() is not None:
                return None, ""
            return f"{EXECUTOR}{nonce}", "runs"

        st, holder, why, stop = self.claim_in_ledger(decision_id, first)
        return (st.status if st is not None else None), holder, why, stop

    def claim_in_ledger(self, decision_id: str,
                        choose: Callable[[list, Callable[[], Any], str], tuple[str | None, str]]
                        ) -> tuple[Any, str | None, str, Any]:
        """The adapters' one claim: :meth:`Runtime.claim_turn
        <policy_engine.runtime.Runtime.claim_turn>` at the gate's clock (the next ``claimed``
        transition of ``decision_id``, read and written under the ledger's append lock, keyed
        ``stopline:claim:<decision>:<n>``; ``choose(claims, stop_after, nonce)`` decides).

        Returns the decision's status (``SubjectStatus``) as read under the lock (``None`` if
        the ledger refused the append), the principal when the claim was recorded (else
        ``None``), why not, and the stop entry when a stop after the decision is why."""
        st, holder, why, stop, _entry = self.runtime.claim_turn(decision_id, choose, now=self._t())
        return st, holder, why, stop

    def ready(self, check: Check) -> Outcome:
        """For a framework whose approval happened out of band (recorded with ``approve``):
        ``run`` when the ledger says the decision is approved and the workflow may act,
        claiming nothing (``claim`` does, right before the tool runs)."""
        st = self.runtime.authorization(check.decision_id, now=self._t())
        if st.status != "approved":
            return Outcome(False, self._pending_message(check, st), pending=st.status == "pending")
        self._halt_if_stopped(check)
        who = ", ".join(st.verdict.accepted) if st.verdict is not None else None
        return Outcome(True, approver=who or "")

    def claim(self, check: Check, approver: str | None) -> Outcome:
        """Claim an approved (or allowed) decision for one execution: ``take``."""
        return self.take(check, approver or "")

    def approved(self, check: Check) -> Outcome:
        """``ready``, then claimed: run only when the ledger says the decision is approved."""
        out = self.ready(check)
        return self._claim(check, out.approver or "") if out.run else out

    def approve(self, request: Mapping[str, Any] | Check, approval: Approval | Mapping[str, Any]) -> Outcome:
        """Record ``approval`` for a held call (``request``: its ``Check`` or its request
        dict) without running anything: the tool runs when the agent reaches it again."""
        dec = request.decision_id if isinstance(request, Check) else request["decision_id"]
        a = approval.to_dict() if isinstance(approval, Approval) else dict(approval)
        if a.get("decision_id") != dec:
            return Outcome(False, f"the approval is for decision {a.get('decision_id')!r}, not {dec}")
        principal = a.get("principal")
        if not isinstance(principal, str) or not principal.strip():
            return Outcome(False, "the approval names no approver")
        st = self.runtime.authorization(dec, now=self._t())
        if a.get("action_digest") != st.digest:
            return Outcome(False, "the approval is bound to other tool arguments")
        r = self.runtime.approve(dec, principal=principal, roles=self.roles_of(principal),
                                 verdict=a.get("verdict", "approve"), now=self._t(), note=a.get("note"))
        ok = r.recorded and r.counted and r.status == "approved"
        return Outcome(ok, r.reason or f"the decision is {r.status}", approver=principal)

    def _pending_message(self, check: Check, st: Any) -> str:
        if st.status == "pending" and st.verdict is not None:
            open_ = "; ".join(f"{s.missing} more from {' or '.join(s.roles)}" for s in st.verdict.open_slots)
            return f"Stopline holds `{check.tool}`: approval required ({check.rule}: {check.reason}); open: {open_}"
        why = f": {st.reason}" if st.reason else ""
        return f"Stopline refused `{check.tool}`: the decision is {st.status}{why}"

    def _refuse(self, check: Check, why: str) -> Outcome:
        return Outcome(False, f"Stopline refused `{check.tool}`: {why}")

    # ---------------------------------------------------------------- decisions
    def outcome(self, check: Check) -> Outcome | None:
        """The answer that needs no reviewer: run (allow), a message (deny, a re-run, a
        closed decision), or stop (raises ``WorkflowStopped``). ``None``: approval needed."""
        if check.effect == "stop":
            if self.resumed_since(check):  # the stop stays recorded; the resumed workflow goes on
                return self._refuse(check, f"its decision was `stop` ({check.reason}) and workflow "
                                           f"`{check.workflow}` was resumed since: the call is not run (made "
                                           "again, it is gated again as a new call)")
            raise WorkflowStopped(check)  # (its stop is recorded: nothing is recorded again)
        if check.status == "executed":
            try:
                body = self.runtime.ledger.get(check.used_by).body
            except Exception:  # noqa: BLE001 - the message only
                body = None
            receipt = body.get("receipt") if isinstance(body, Mapping) else None
            # its outcome as recorded; an entry of before it: failed when its receipt has `tool_error`
            done, err = outcome_of(body)
            how = (f" and failed ({err})" if err else " and failed") if done == "failed" else ""
            return Outcome(False, f"Stopline: `{check.tool}` already ran for this call (execution {check.used_by})"
                                  f"{how}; not run again; its receipt: "
                                  f"{json.dumps(receipt, sort_keys=True, default=str)}",
                           done=True, failed=done == "failed")
        if check.problem and check.effect in ("allow", "require_approval"):
            return self._misfit(check)
        if check.effect == "allow":
            self._halt_if_stopped(check)
            return Outcome(True)
        if check.effect == "deny" or check.status == "refused":
            return Outcome(False, f"Stopline denied `{check.tool}` ({check.rule}): {check.reason}")
        if check.status in ("pending", "approved"):
            return None
        return Outcome(False, f"Stopline refused `{check.tool}`: the decision is {check.status}")

    def resumed_since(self, check: Check) -> bool:
        """``check`` is a ``stop`` decision recorded earlier (the framework runs the same call
        again: a resumed run, a retried call id) and its workflow runs again: it was resumed
        since. ``outcome`` then refuses the call (never run) instead of halting again."""
        return check.effect == "stop" and not check.fresh and \
            self.runtime.workflow_status(check.workflow).get("status") != "stopped"

    def withdraw(self, check: Check, reason: str) -> None:
        """Withdraw a held decision no approval could ever be used for (``cancelled``, with
        ``reason``): the reviewers' queue keeps only what a reviewer can act on. The refusal
        stands whether or not the withdrawal is recorded (nothing here widens permission)."""
        try:
            self.runtime.cancel(check.decision_id, principal="stopline-gate", now=self._t(), reason=reason)
        except Exception:  # noqa: BLE001 - the refusal stands whether or not the withdrawal was recorded
            pass

    def _misfit(self, check: Check) -> Outcome:
        """A call whose arguments the tool would not receive as the gate judged them: never
        run. A held decision is withdrawn (``cancelled``, with the reason) rather than left
        in the reviewers' queue: approved, it still could not run as judged."""
        self._halt_if_stopped(check)  # a stopped workflow halts the agent, whatever its arguments
        if str(check.problem).startswith("the sandbox refuses"):  # (a path out of the workspace: not a type slip)
            if check.status in ("pending", "approved"):
                self.withdraw(check, str(check.problem))
            return Outcome(False, f"Stopline refused `{check.tool}`: {check.problem}; not run. Call it again with "
                                  "a path inside the workspace.")
        if check.status in ("pending", "approved"):
            self.withdraw(check, f"the arguments do not match the tool's input schema: {check.problem}")
        return Outcome(False, f"Stopline refused `{check.tool}`: its arguments do not match the tool's input schema "
                              f"({check.problem}), so the tool would not receive what the policy judged; not run. "
                              "Call it again with arguments of the declared types.")

    # ---------------------------------------------------------------- executions
    def receipt_for(self, check: Check, output: Any, approver: str | None) -> dict:
        """The declared receipt fields from the tool's arguments, then its output, then the
        gate's own fields (``GATE_FIELDS``: the agent's arguments and the tool's output never
        set them; the reviewer is the approver the ledger counted, or none), then ``receipt``."""
        base: dict[str, Any] = dict(check.args)
        output = _fields_of(output)
        if isinstance(output, str) and output[:1] == "{":
            try:
                output = json.loads(output)
            except ValueError:
                pass
        if isinstance(output, Mapping):
            base.update(output)
        elif output is not None:
            base["result"] = output
        for f in GATE_FIELDS:
            base.pop(f, None)
        base.update(tool=check.tool, tool_call_id=check.call_id, policy_rule=check.rule)
        if approver:
            base.update(reviewer=approver, reviewer_decision=f"approved by {approver}")
        if self.receipt is not None:
            base.update(self.receipt(check, output) or {})
        declared = tuple(check.decision.receipt or ())
        return {f: _jsonable(base[f]) for f in declared if f in base}

    def receipt_dropped(self, check: Check, output: Any, approver: str | None = None) -> list[str]:
        """The receipt fields ``record`` leaves out of this output's receipt (``bounded_receipt``:
        beyond the engine's input limits), sorted; ``[]`` for a receipt within them."""
        return bounded_receipt(self.receipt_for(check, output, approver), GATE_FIELDS)[1]

    def record(self, check: Check, output: Any, approver: str | None = None, *,
               error: BaseException | str | None = None) -> Any:
        """Record the execution with its receipt (idempotent per call). ``error``: the tool
        raised (or was cancelled, or answered an error result) after it was let run: it may
        have had its effect, so it is an execution as any other (rolled back as any other),
        recorded ``outcome="failed"`` with its ``error`` saying with what (``error_text``: at
        most ``MAX_ERROR`` characters, never a traceback); a re-run of the call is told it
        failed. Its receipt holds the declared fields it gave before it failed (the others are
        listed in ``missing_receipt``; a failed run is not flagged ``receipt_incomplete``).

        A receipt beyond the engine's input limits (a tool's result holding a 4 MB declared
        field) is recorded without the fields that put it there (``bounded_receipt``: listed in
        ``missing_receipt``), a warning logged naming them (``receipt_dropped``: the same fields,
        for an adapter to tell the agent). The tool ran: its execution is recorded."""
        receipt, left_out = bounded_receipt(self.receipt_for(check, output, approver), GATE_FIELDS)
        if left_out:
            _log.warning("Stopline: tool %r ran under decision %s (workflow %r); its receipt field(s) %s are beyond "
                         "the input limits and are not recorded (missing_receipt)", check.tool, check.decision_id,
                         check.workflow, ", ".join(left_out))
        failed = {"outcome": "failed", "error": error_text(error)} if error is not None else {}
        try:
            return self.runtime.executed(check.decision_id, receipt=receipt,
                                         key="stopline:exec:" + check.key.rsplit(":", 1)[1], now=self._t(), **failed)
        except LedgerUnavailable as e:  # it ran: say so, not only that the ledger is gone
            raise ExecutionNotRecorded(check, e) from e
