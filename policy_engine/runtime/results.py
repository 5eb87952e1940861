"""What the runtime's calls return (``GateResult``, ``SubjectStatus``, ``QueueItem`` …),
``RuntimeUsageError``, the lifecycle's constants and the small helpers every part of the
``Runtime`` shares (times, digests, ``dumps``). Imports nothing else of the runtime."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, overload

from ..ledger import schema as lschema
from ..ledger.canonical import canonical_text
from ..ledger.errors import IdempotencyConflict, InvalidEntry
from ..limits import MAX_CASCADE_RECORDS, MAX_CLOCK_SKEW_SECONDS
from ..timestamps import format_micros, format_micros_after, parse_rfc3339

E, L = lschema.entries, lschema.links
_UTC = UTC
MAX_CASCADE = MAX_CASCADE_RECORDS  #: records one rollback plan walks (the engine plans at most as many)
#: statuses after which a subject takes no more approvals or transitions
TERMINAL = frozenset({"denied", "expired", "cancelled", "executed", "verified"})
STEP_RANK = {"started": 0, "failed": 1, "completed": 2, "verified": 3}


class RuntimeUsageError(ValueError):
    """The call names something the runtime cannot act on (an unknown id, an entry of the
    wrong kind, an unknown rollback duty). One line, never a traceback in the CLI."""


def _now(now: Any) -> datetime:
    if now is None:
        return datetime.now(_UTC)
    if isinstance(now, datetime):
        if now.tzinfo is None:
            raise RuntimeUsageError("`now` must be timezone-aware")
        try:
            return now.astimezone(_UTC)
        except OverflowError:  # (a time in another zone whose UTC is past year 9999 or before year 1)
            raise RuntimeUsageError(f"`now` is out of range in UTC: {now.isoformat()}") from None
    if isinstance(now, str):
        try:
            return parse_rfc3339(now, allow_space=True)  # the engine's reading of a time
        except ValueError:
            raise RuntimeUsageError(f"`now` is not an RFC 3339 time: {now!r}") from None
    raise RuntimeUsageError(f"`now` must be a datetime or an RFC 3339 string, not {type(now).__name__}")


_ts = format_micros  # a recorded time: RFC 3339, UTC, microseconds
_ts_after = format_micros_after  # an expiry `later` after a time (the latest time there is past year 9999)


@overload
def _parse(s: str) -> datetime: ...
@overload
def _parse(s: None) -> None: ...
def _parse(s: str | None) -> datetime | None:
    return None if s is None else parse_rfc3339(s, allow_space=True)


def _digest(value: Any) -> str:
    return "sha256:" + hashlib.sha256(canonical_text(value).encode()).hexdigest()


def _plain(x: Any) -> Any:
    dump = getattr(x, "model_dump", None)
    return dump(mode="json") if callable(dump) else x


_SURROGATE = re.compile("[\ud800-\udfff]")
_NUL = "\x00"  #: what no PostgreSQL text can hold (SQLite can): refused on both, so both answer alike


def _unicode(s: str) -> bool:
    """Whether the ledger can hold ``s`` as a name or an id (an entry id, a workflow, a key, a
    route): valid Unicode, no lone surrogate (``"\\ud800"``), which no UTF-8 (so no database,
    no canonical JSON, no HTTP answer) can hold, and no NUL (``"\\x00"``), which no PostgreSQL
    text can hold. No entry has an id (nor a workflow, nor a key) that is not such a string:
    such an id names nothing, and the database is never asked (PostgreSQL would refuse the
    query, SQLite answer it: both answer alike)."""
    if _NUL in s:
        return False
    return s.isascii() or _SURROGATE.search(s) is None


def _unstorable(s: str) -> str:
    """Why the ledger cannot hold ``s`` (a string :func:`_unicode` refuses)."""
    if _NUL in s:
        return "holds a NUL character (\\x00), which the ledger cannot store"
    return "holds a lone surrogate (\\ud800-\\udfff): not valid Unicode"


def _name(v: Any) -> str | None:
    """A workflow name the ledger can store, else None (an action whose workflow it cannot
    store, e.g. one with a lone surrogate or a NUL, is recorded with none: the engine denies
    it, and the gate records the deny, the action as given in its body)."""
    return v if isinstance(v, str) and 0 < len(v) <= 256 and _unicode(v) else None


#: the longest name a projection column holds (a principal, a requester, a workflow, a route):
#: PostgreSQL refuses a longer one (SQLite keeps it), so both refuse it before anything is written
MAX_NAME = 256


def _text_arg(v: Any, name: str, *, optional: bool = False, max_len: int | None = MAX_NAME) -> str | None:
    """A name or id given to a runtime call (a workflow, a route, a principal): a non-empty
    string the ledger can hold (valid Unicode, no NUL, at most ``max_len`` characters), else
    :class:`RuntimeUsageError` (never the database's encoding or length error)."""
    if v is None and optional:
        return None
    if not isinstance(v, str) or not v:
        raise RuntimeUsageError(f"`{name}` is a non-empty string, not {_shown(v)}")
    if not _unicode(v):
        raise RuntimeUsageError(f"`{name}` {_unstorable(v)}")
    if max_len is not None and len(v) > max_len:
        raise RuntimeUsageError(f"`{name}` is at most {max_len} characters, not {len(v)}")
    return v


def _free_text(v: Any, name: str, *, optional: bool = False) -> str | None:
    """A free text given to a runtime call and recorded as given (a reason, a note, a
    trigger): a string the ledger can hold (valid Unicode), else :class:`RuntimeUsageError`
    naming the argument, before anything is read or recorded (not an int or a dict recorded
    as given, nor the ledger's encoder error, nor a plan that fails on the text)."""
    if v is None and optional:
        return None
    if not isinstance(v, str):
        raise RuntimeUsageError(f"`{name}` is a string{' or None' if optional else ''}, not {_shown(v)}")
    if not v.isascii() and _SURROGATE.search(v) is not None:  # (a NUL is recorded escaped: kept)
        raise RuntimeUsageError(f"`{name}` {_unstorable(v.replace(_NUL, ''))}")
    return v


def _not_before(now_dt: datetime, e: Any, what: str, *, clock: bool = False) -> None:
    """``now`` is not before entry ``e`` was recorded: an approval or a step of a subject that
    did not exist yet is no fact the ledger can hold (a backdated approval would count against
    an earlier clock than the decision's). ``clock``: ``now`` is this process's clock (the
    caller gave none), which may trail the clock of the process that recorded ``e`` (another
    replica): up to ``MAX_CLOCK_SKEW_SECONDS`` behind is that skew, not a backdating."""
    t = getattr(e, "time", None)
    try:
        at = _parse(t) if isinstance(t, str) else None
    except ValueError:
        return
    if at is not None and now_dt < at and not (clock and (at - now_dt).total_seconds() <= MAX_CLOCK_SKEW_SECONDS):
        raise RuntimeUsageError(f"`now` {_ts(now_dt)} is before the {e.kind} {e.id} was recorded ({_ts(at)}): "
                                f"{what} cannot come before it; nothing was recorded")


def _check_key(key: Any) -> None:
    """An idempotency key: what the ledger stores (:class:`~policy_engine.ledger.InvalidEntry` otherwise,
    the ledger's own refusal, raised before anything is read or written)."""
    if key is None:
        return
    if not isinstance(key, str) or not key or len(key) > 256:
        raise InvalidEntry("`key` is a non-empty string of at most 256 characters")
    if not _unicode(key):
        raise InvalidEntry(f"`key` {_unstorable(key)}")


def _shown(v: Any) -> str:
    """``v`` for an error message: its type for anything but a short plain value, escaped
    (a lone surrogate in a message would break the CLI's or the server's answer)."""
    if v is None or isinstance(v, (bool, int, float)):
        return json.dumps(v)
    if isinstance(v, str):
        return ascii(v[:64])
    return f"a {type(v).__name__}"


# ---------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class _Result:
    def to_json(self) -> dict[str, Any]:
        out = {}
        for k in self.__dataclass_fields__:
            v = getattr(self, k)
            # a pydantic model (a Decision, a plan) as its JSON-mode dump, before any to_json of its own
            out[k] = _plain(v) if hasattr(v, "model_dump") else v.to_json() if hasattr(v, "to_json") else v
        return out


@dataclass(frozen=True)
class GateResult(_Result):
    """A recorded gate decision. ``effect``, ``reason`` … read through to the Decision."""

    decision_id: str
    decision: Any  # policy_engine.models.Decision
    stopped: bool = False  #: this gate fired a stop trigger and stopped the workflow
    stop_id: str | None = None
    workflow_status: str = "running"
    #: a retry with a used idempotency key: the recorded decision, nothing recorded now
    replayed: bool = False

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.decision, name)


@dataclass(frozen=True)
class SubjectStatus(_Result):
    """Where a subject (a gate decision or a rollback) stands, derived from the ledger.

    ``status``: for a decision ``allowed`` (no approval needed), ``refused`` (deny/stop),
    ``pending``, ``approved``, ``denied``, ``expired``, ``cancelled`` or ``executed``;
    for a rollback ``pending``, ``approved``, ``denied``, ``expired``, ``cancelled``,
    ``in_progress``, ``partial``, ``completed`` or ``verified``."""

    subject: str
    kind: str  #: decision | rollback
    status: str
    digest: str | None
    verdict: Any = None  # AuthorizationVerdict, for a subject that needs approvals
    denied_by: tuple[str, ...] = ()
    ignored_denials: tuple[str, ...] = ()  #: denials from principals who could not fill a slot
    expires_at: str | None = None
    used_by: str | None = None  #: the execution that used a decision's approvals
    claimed_by: str | None = None
    #: a decision claimed for its execution (``Runtime.claim_execution``, an adapter's claim):
    #: the claim's transition entry and time; a claimed decision is closed (no approval, deny,
    #: cancel or expiry after the claim changes it) until its execution is recorded
    claim_id: str | None = None
    claimed_at: str | None = None
    duties: tuple[str, ...] = ()
    steps: dict = field(default_factory=dict)  #: duty -> latest step status
    remaining: tuple[str, ...] = ()  #: duties not completed
    unverified: tuple[str, ...] = ()  #: duties completed but not verified
    reason: str = ""
    #: ``expired`` by the clock (its deadline, or a standard plan's reversal window, passed
    #: unresolved) with no entry recording it yet: the sweeper (``expire``) or the next
    #: transition or request on the subject records it
    unrecorded: bool = False
    #: made (a decision) or classified (a rollback) under another policy version than the one
    #: deciding now (a reload since): its approvals count for nothing under this version, so it
    #: stays ``pending`` and takes none (``reason`` names both versions); gate the action again,
    #: or request the rollback again (the request supersedes it), or reload the version it was
    #: made under. Only a subject not yet claimed, started or closed is stale.
    stale: bool = False
    #: who asked for a decision: the principal the gate recorded as its ``caller`` (the server's
    #: authenticated caller; None: not recorded, or a rollback, whose requester its plan names)
    caller: str | None = None

    @property
    def satisfied(self) -> bool:
        return self.status in ("allowed", "approved")


@dataclass(frozen=True)
class ApprovalResult(_Result):
    subject: str
    recorded: bool
    approval_id: str | None
    counted: bool  #: the approval fills a slot / the deny counts
    status: str  #: the subject's status after it
    reason: str = ""


#: what ``executed(outcome=)`` takes: the action ran and did what it does, or it ran and failed
OUTCOMES = ("succeeded", "failed")
MAX_EXECUTION_ERROR = 2000  #: characters of a failed execution's ``error``
#: the receipt field in which the adapters of before ``outcome`` (session 22) recorded a tool
#: that raised: an execution without ``outcome`` whose receipt holds it as text reads as failed
LEGACY_ERROR_FIELD = "tool_error"


def _outcome_arg(outcome: Any, error: Any) -> tuple[str, str | None]:
    """``executed``'s ``outcome`` and ``error``, checked before anything is read or written:
    ``"succeeded"`` (no ``error``) or ``"failed"`` (an optional ``error``: a non-empty text the
    ledger can hold, at most ``MAX_EXECUTION_ERROR`` characters), else :class:`RuntimeUsageError`."""
    if not isinstance(outcome, str) or outcome not in OUTCOMES:
        raise RuntimeUsageError(f"`outcome` is \"succeeded\" or \"failed\", not {_shown(outcome)}; "
                                "nothing was recorded")
    if error is None:
        return outcome, None
    if outcome != "failed":
        raise RuntimeUsageError("`error` says why an action failed: it goes with `outcome=\"failed\"` only; "
                                "nothing was recorded")
    _free_text(error, "error")
    if not error.strip():
        raise RuntimeUsageError("`error` is a non-empty text (or None); nothing was recorded")
    if len(error) > MAX_EXECUTION_ERROR:
        raise RuntimeUsageError(f"`error` is at most {MAX_EXECUTION_ERROR} characters, not {len(error)} (cut it: "
                                "its first line says what failed); nothing was recorded")
    return outcome, error


def outcome_of(body: Any) -> tuple[str, str | None]:
    """An execution entry's outcome and error, as ``executed`` recorded them: ``("failed",
    error or None)`` when its body says ``outcome: "failed"``; an entry without ``outcome``
    (every entry of before it, and every succeeded one since) is ``("succeeded", None)``,
    except one whose receipt holds a ``tool_error`` text (how the adapters recorded a tool that
    raised before ``outcome`` existed): ``("failed", that text)``."""
    if not isinstance(body, dict):
        return "succeeded", None
    if "outcome" in body:
        err = body.get("error")
        return ("failed", err if isinstance(err, str) else None) if body["outcome"] == "failed" else ("succeeded", None)
    receipt = body.get("receipt")
    legacy = receipt.get(LEGACY_ERROR_FIELD) if isinstance(receipt, dict) else None
    return ("failed", legacy) if isinstance(legacy, str) else ("succeeded", None)


@dataclass(frozen=True)
class ExecutionResult(_Result):
    execution_id: str
    authorized: bool
    flags: tuple[str, ...]  #: unauthorized, receipt_incomplete
    reasons: tuple[str, ...]
    missing_receipt: tuple[str, ...]
    entry: Any = field(repr=False, default=None)
    outcome: str = "succeeded"  #: succeeded | failed (``executed(outcome=)``: it ran and failed)
    error: str | None = None  #: a failed execution's error, as reported (None: none given)


@dataclass(frozen=True)
class RollbackRequestResult(_Result):
    rollback_id: str | None  #: None when the plan was not recorded (not authorizable)
    plan: Any  # RollbackPlan
    existing: bool = False  #: the execution was already being (or was) rolled back: this is that rollback
    status: str = "pending"
    route: str | None = None
    undeclared: tuple[dict, ...] = ()  #: recorded caused_by links the policy's side_effects do not declare
    reason: str = ""
    #: cascade records already covered by another open rollback (not denied, expired or cancelled),
    #: so not followed nor planned here: ``{"record", "rollback", "parent"}`` each (the plan entry's ``covered``)
    covered: tuple[dict, ...] = ()

    @property
    def plan_hash(self) -> str:
        return self.plan.plan_hash if self.plan is not None else ""


@dataclass(frozen=True)
class StepResult(_Result):
    rollback_id: str
    duty: str
    status: str
    recorded: bool  #: False: a repeated key, nothing changed
    step_id: str
    authorized: bool
    rollback_status: str
    remaining: tuple[str, ...] = ()


@dataclass(frozen=True)
class ResumeResult(_Result):
    workflow: str
    recorded: bool
    resume_id: str | None
    allowed: bool
    decision: Any  # ResumeDecision, None when the workflow was not stopped
    status: str  #: the workflow's status after it
    unmet: tuple[str, ...] = ()
    reason: str = ""


@dataclass(frozen=True)
class TransitionResult(_Result):
    subject: str
    recorded: bool
    status: str
    transition_id: str | None = None
    reason: str = ""
    #: who holds the subject's claim after the call (a claim's result: the caller when it won,
    #: or when it already held it; another principal when it is refused for that)
    claimed_by: str | None = None


class ClaimInDoubt(NamedTuple):
    """A gate decision claimed for its execution whose execution no entry records yet
    (``Runtime.claims_in_doubt``): its worker may have died before or after running the
    action. Resolve it with ``executed`` (the action ran: the claim authorizes it) or
    ``abandon_claim`` (it did not: the decision is cancelled; gate the action again)."""

    decision_id: str
    workflow: str | None
    claimed_by: str | None  #: the latest claim's principal
    claimed_at: str  #: the first claim's time
    last_at: str  #: the latest claim's time (an adapter's turns: taken, waiting, taken again)
    turns: int  #: claims recorded
    claim_id: str  #: the first claim's entry

    def to_json(self) -> dict[str, Any]:
        return self._asdict()


class QueueItem(NamedTuple):
    """One open rollback on a route (a tuple: 10^4 of them are built in a few ms).

    ``status`` is the rollback's status at the listing's ``now``: the recorded one, except
    a rollback expired by the clock (not authorized when its standard reversal window or
    its ``pending_until`` passed) whose expiry no entry records yet (the sweeper, or the
    next claim, cancel or request of it, records it): then ``expired`` with
    ``unrecorded`` true, as ``Runtime.authorization`` says. It takes no approval."""

    rollback_id: str
    route: str | None
    scenario: str
    workflow: str | None
    original: str
    requested_by: str
    requested_at: str
    deadline: str | None  #: the reversal window's end (null: no window)
    expires_at: str | None
    status: str
    claimed_by: str | None
    past_window: bool
    #: ``expired`` by the clock at ``now``, not yet recorded (``status`` is then ``expired``)
    unrecorded: bool = False

    def to_json(self) -> dict[str, Any]:
        return self._asdict()


def _jsonable(o: Any) -> Any:
    # before model_dump: a GateResult reads through to its Decision
    if isinstance(o, (_Result, QueueItem, ClaimInDoubt)):
        return _jsonable(o.to_json())
    if hasattr(o, "model_dump"):  # a Decision's own to_json is JSON text; its dump is the value
        return o.model_dump(mode="json")
    if hasattr(o, "to_json"):
        return _jsonable(o.to_json())
    if isinstance(o, dict):
        return {k: _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, IdempotencyConflict):  # (a slot of ``gate_many(conflicts="return")``)
        return {"conflict": str(o)}
    return o


def dumps(x: Any) -> str:
    """JSON text of a runtime result (what the CLI prints)."""
    return json.dumps(_jsonable(x), indent=2, sort_keys=True, ensure_ascii=False)

