"""``Runtime``: gate, approve, execute, stop, roll back and resume as one lifecycle
recorded in the ledger (DESIGN.md, "The runtime: one lifecycle on the ledger").

    from policy_engine import Runtime
    rt = Runtime.open("policies/", ledger="sqlite:///stopline.db")
    g = rt.gate(action)                      # evaluated with the ledger's workflow state; recorded
    rt.approve(g.decision_id, principal="sam", roles=["reviewer"])
    x = rt.executed(g.decision_id, receipt={...})
    p = rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita", reason="...")
    rt.step(p.rollback_id, x.execution_id, "completed", key="k1")

State is never passed in: every transition reads it from the ledger *inside the append
lock* (``Ledger.transact``) and appends its entry in the same transaction, so of two
writers racing on one subject exactly one sees the old state. The projections
(:mod:`.projections`) are caches written in that same transaction. See docs/runtime.md.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, NamedTuple, Optional

from sqlalchemy import and_, select

from ..ledger import EntryNotFound, InvalidEntry, Ledger, NewEntry
from ..ledger import schema as lschema
from ..ledger.canonical import canonical_text
from . import projections as P

__all__ = ["Runtime", "RuntimeUsageError", "GateResult", "ApprovalResult", "SubjectStatus", "ExecutionResult",
           "RollbackRequestResult", "StepResult", "ResumeResult", "QueueItem", "TransitionResult"]

E, L = lschema.entries, lschema.links
_UTC = timezone.utc
MAX_CASCADE = 10_000
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
        return now.astimezone(_UTC)
    if isinstance(now, str):
        try:
            return datetime.fromisoformat(now.replace("Z", "+00:00")).astimezone(_UTC)
        except ValueError:
            raise RuntimeUsageError(f"`now` is not an RFC 3339 time: {now!r}") from None
    raise RuntimeUsageError(f"`now` must be a datetime or an RFC 3339 string, not {type(now).__name__}")


def _ts(t: datetime) -> str:
    return t.astimezone(_UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(s: Optional[str]) -> Optional[datetime]:
    return None if s is None else datetime.fromisoformat(s.replace("Z", "+00:00"))


def _digest(value: Any) -> str:
    return "sha256:" + hashlib.sha256(canonical_text(value).encode()).hexdigest()


def _plain(x: Any) -> Any:
    dump = getattr(x, "model_dump", None)
    return dump(mode="json") if callable(dump) else x


def _name(v: Any) -> Optional[str]:
    return v if isinstance(v, str) and 0 < len(v) <= 256 else None


# ---------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class _Result:
    def to_json(self) -> dict[str, Any]:
        out = {}
        for k in self.__dataclass_fields__:
            v = getattr(self, k)
            out[k] = v.to_json() if hasattr(v, "to_json") else _plain(v)
        return out


@dataclass(frozen=True)
class GateResult(_Result):
    """A recorded gate decision. ``effect``, ``reason`` … read through to the Decision."""

    decision_id: str
    decision: Any  # policy_engine.models.Decision
    stopped: bool = False  #: this gate fired a stop trigger and stopped the workflow
    stop_id: Optional[str] = None
    workflow_status: str = "running"

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
    digest: Optional[str]
    verdict: Any = None  # AuthorizationVerdict, for a subject that needs approvals
    denied_by: tuple[str, ...] = ()
    ignored_denials: tuple[str, ...] = ()  #: denials from principals who could not fill a slot
    expires_at: Optional[str] = None
    used_by: Optional[str] = None  #: the execution that used a decision's approvals
    claimed_by: Optional[str] = None
    duties: tuple[str, ...] = ()
    steps: dict = field(default_factory=dict)  #: duty -> latest step status
    remaining: tuple[str, ...] = ()  #: duties not completed
    unverified: tuple[str, ...] = ()  #: duties completed but not verified
    reason: str = ""

    @property
    def satisfied(self) -> bool:
        return self.status in ("allowed", "approved")


@dataclass(frozen=True)
class ApprovalResult(_Result):
    subject: str
    recorded: bool
    approval_id: Optional[str]
    counted: bool  #: the approval fills a slot / the deny counts
    status: str  #: the subject's status after it
    reason: str = ""


@dataclass(frozen=True)
class ExecutionResult(_Result):
    execution_id: str
    authorized: bool
    flags: tuple[str, ...]  #: unauthorized, receipt_incomplete
    reasons: tuple[str, ...]
    missing_receipt: tuple[str, ...]
    entry: Any = field(repr=False, default=None)


@dataclass(frozen=True)
class RollbackRequestResult(_Result):
    rollback_id: Optional[str]  #: None when the plan was not recorded (not authorizable)
    plan: Any  # RollbackPlan
    existing: bool = False  #: the execution was already being (or was) rolled back: this is that rollback
    status: str = "pending"
    route: Optional[str] = None
    undeclared: tuple[dict, ...] = ()  #: recorded caused_by links the policy's side_effects do not declare
    reason: str = ""

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
    resume_id: Optional[str]
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
    transition_id: Optional[str] = None
    reason: str = ""


class QueueItem(NamedTuple):
    """One open rollback on a route (a tuple: 10^4 of them are built in a few ms)."""

    rollback_id: str
    route: Optional[str]
    scenario: str
    workflow: Optional[str]
    original: str
    requested_by: str
    requested_at: str
    deadline: Optional[str]  #: the reversal window's end (null: no window)
    expires_at: Optional[str]
    status: str
    claimed_by: Optional[str]
    past_window: bool

    def to_json(self) -> dict[str, Any]:
        return self._asdict()


# ---------------------------------------------------------------------------------- runtime
class Runtime:
    """An engine (or a ``PolicyStore``: a reload applies to the next call) joined to a ledger."""

    def __init__(self, policies: Any, ledger: Ledger, *, approval_ttl: timedelta = timedelta(hours=24),
                 decision_ttl: timedelta = timedelta(hours=24), rollback_ttl: timedelta = timedelta(days=7),
                 owns_ledger: bool = False) -> None:
        self._policies = policies
        self.ledger = ledger
        self.approval_ttl = approval_ttl  #: an approval lapses this long after it is given
        self.decision_ttl = decision_ttl  #: a decision awaiting approval expires after this
        self.rollback_ttl = rollback_ttl  #: a rollback not authorized by then expires
        self._owns = owns_ledger
        self.ledger.transact(lambda c: P.create(c))

    @classmethod
    def open(cls, policies: Any, *, ledger: str | Ledger = "sqlite:///stopline.db", create: bool = True,
             **options: Any) -> "Runtime":
        """``policies``: a path (file or directory), an ``Engine`` or a ``PolicyStore``
        (or None for read-only use: queue, history, status). ``ledger``: a URL or a Ledger."""
        if isinstance(policies, (str, bytes)) or hasattr(policies, "__fspath__"):
            from .. import load

            policies = load(policies)
        owns = not isinstance(ledger, Ledger)
        led = Ledger.open(ledger, create=create) if owns else ledger
        return cls(policies, led, owns_ledger=owns, **options)

    def close(self) -> None:
        if self._owns:
            self.ledger.close()

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def engine(self) -> Any:
        """The engine deciding now (a PolicyStore's current snapshot)."""
        p = self._policies
        if p is None:
            raise RuntimeUsageError("this runtime was opened without policies (read-only)")
        return p.engine if hasattr(p, "reload") else p  # a PolicyStore: its current snapshot

    # ------------------------------------------------------------------ plumbing
    def _transact(self, build) -> list:
        return self.ledger.transact(build, after=lambda c, new: [P.apply(c, e) for e in new])

    def _entry(self, c, ref: str, kinds: Iterable[str] | None = None) -> Any:
        if not isinstance(ref, str) or not ref:
            raise RuntimeUsageError(f"an entry id is a non-empty string, not {ref!r}")
        found = self.ledger.fetch(c, E.c.id == ref)
        if not found:
            raise RuntimeUsageError(f"no entry `{ref}` in the ledger")
        e = found[0]
        if kinds is not None and e.kind not in kinds:
            raise RuntimeUsageError(f"entry `{ref}` is a `{e.kind}`, not a {' or '.join(f'`{k}`' for k in kinds)}")
        return e

    def _linked(self, c, e: Any, kinds: Iterable[str] | None = None) -> list:
        where = [E.c.seq.in_(select(L.c.from_seq).where(L.c.to_seq == e.seq))]
        if kinds is not None:
            where.append(E.c.kind.in_(tuple(kinds)))
        return self.ledger.fetch(c, *where)

    def _wf_row(self, c, wf: Optional[str]) -> Optional[tuple]:
        if wf is None:
            return None
        r = c.execute(select(P.workflows.c.status, P.workflows.c.trigger, P.workflows.c.since,
                             P.workflows.c.stop_id, P.workflows.c.seq)
                      .where(P.workflows.c.workflow == wf)).first()
        return tuple(r) if r is not None and r[0] == "stopped" else None

    @staticmethod
    def _state(wf: Optional[str], row: Optional[tuple]) -> Optional[dict]:
        if row is None:
            return None
        return {"name": wf, "status": "stopped", "stopped_by": row[1], "stopped_at": row[2]}

    def _facts(self, eng: Any, workflow: Any, atype: Any) -> dict:
        """What the policy declares for an action type (receipt, side_effects, runs_while_stopped).
        None where the policy (or the engine's API) does not say: callers fail closed."""
        try:
            ca = eng.compiled.workflows[workflow].actions[atype]
            return {"receipt": tuple(ca.receipt), "side_effects": tuple(ca.side_effects),
                    "runs_while_stopped": bool(ca.runs_while_stopped)}
        except Exception:  # noqa: BLE001
            return {"receipt": None, "side_effects": None, "runs_while_stopped": False}

    # ------------------------------------------------------------------ status of a workflow
    def workflow_status(self, workflow: str) -> dict:
        """``{"workflow", "status": running|stopped, "stopped_by", "since", "stop_id"}`` from the ledger."""
        with self.ledger.reading() as c:
            row = self._wf_row(c, workflow)
        if row is None:
            return {"workflow": workflow, "status": "running", "stopped_by": None, "since": None, "stop_id": None}
        return {"workflow": workflow, "status": "stopped", "stopped_by": row[1], "since": row[2], "stop_id": row[3]}

    # ------------------------------------------------------------------ gate
    def gate(self, action: Any, *, now: Any = None, key: Optional[str] = None) -> GateResult:
        """Evaluate ``action`` with the workflow state the ledger holds, record the decision,
        and, when a stop trigger fires, stop the workflow in the ledger (same transaction)."""
        eng = self.engine
        now_dt = _now(now)
        a = _plain(action)
        wf = _name(a.get("workflow")) if isinstance(a, dict) else None
        with self.ledger.reading() as c:
            row0 = self._wf_row(c, wf)
        d0 = eng.evaluate(a, self._state(wf, row0), now_dt)
        out: dict[str, Any] = {}

        def build(c):
            row = self._wf_row(c, wf)
            d = d0 if row == row0 else eng.evaluate(a, self._state(wf, row), now_dt)
            out["d"], out["row"] = d, row
            try:
                canonical_text(a)
                recorded_action, problem = a, None
            except InvalidEntry as e:  # the decision (fail closed) is recorded; the action as text
                recorded_action, problem = repr(a)[:4096], str(e)
            body = {"action": recorded_action, "decision": d.model_dump(mode="json"), "policy_hash": d.policy_hash,
                    "now": _ts(now_dt)}
            if problem:
                body["action_error"] = problem
            if d.effect == "require_approval":
                body["pending_until"] = _ts(now_dt + self.decision_ttl)
            items = [NewEntry("decision", body, workflow=wf, key=key, time=now_dt)]
            if d.effect == "stop" and d.deciding.kind == "stop" and wf is not None:
                s = d.stop
                items.append(NewEntry("stop", {"trigger": d.deciding.name, "decision": 0, "stopped_at": _ts(now_dt),
                                               "severity": s.severity if s else None, "owner": s.owner if s else None,
                                               "notify": list(s.notify) if s else [],
                                               "resume_criteria": list(s.resume_criteria) if s else []},
                                      workflow=wf, links=[0], time=now_dt))
            return items

        entries = self._transact(build)
        d = out.get("d", d0)
        if key is not None and entries and entries[0].body.get("decision") != d.model_dump(mode="json"):
            d = type(d0).model_validate(entries[0].body["decision"])  # a repeated key: the recorded decision
        stop = next((e for e in entries if e.kind == "stop"), None)
        stopped = stop is not None or out.get("row") is not None
        return GateResult(entries[0].id, d, stop is not None, stop.id if stop else None,
                          "stopped" if stopped else "running")

    def gate_many(self, actions: Iterable[Any], *, now: Any = None) -> list[GateResult]:
        """Gate a batch in one transaction (one lock, one commit, one fsync): each action
        evaluated with the ledger's state *as the batch leaves it* (a stop fired by one
        stops the later ones of its workflow). All recorded or none. For runtimes that
        gate many actions at once (a queue consumer, an import): the commit, not the
        evaluation, bounds a single gate's rate on a durable disk."""
        eng = self.engine
        now_dt = _now(now)
        acts = [_plain(a) for a in actions]
        decisions: list[Any] = []

        def build(c):
            decisions.clear()
            rows: dict[Optional[str], Optional[tuple]] = {}
            items: list[NewEntry] = []
            for a in acts:
                wf = _name(a.get("workflow")) if isinstance(a, dict) else None
                if wf not in rows:
                    rows[wf] = self._wf_row(c, wf)
                d = eng.evaluate(a, self._state(wf, rows[wf]), now_dt)
                decisions.append((d, rows[wf] is not None))
                try:
                    canonical_text(a)
                    body = {"action": a}
                except InvalidEntry as e:
                    body = {"action": repr(a)[:4096], "action_error": str(e)}
                body.update(decision=d.model_dump(mode="json"), policy_hash=d.policy_hash, now=_ts(now_dt))
                if d.effect == "require_approval":
                    body["pending_until"] = _ts(now_dt + self.decision_ttl)
                items.append(NewEntry("decision", body, workflow=wf, time=now_dt))
                if d.effect == "stop" and d.deciding.kind == "stop" and wf is not None:
                    s = d.stop
                    items.append(NewEntry("stop", {"trigger": d.deciding.name, "decision": len(items) - 1,
                                                   "stopped_at": _ts(now_dt),
                                                   "severity": s.severity if s else None,
                                                   "owner": s.owner if s else None,
                                                   "notify": list(s.notify) if s else [],
                                                   "resume_criteria": list(s.resume_criteria) if s else []},
                                          workflow=wf, links=[len(items) - 1], time=now_dt))
                    rows[wf] = ("stopped", d.deciding.name, _ts(now_dt), None, -1)
            return items

        entries = self._transact(build)
        out: list[GateResult] = []
        for e in entries:
            if e.kind == "stop" and out:
                last = out.pop()
                out.append(GateResult(last.decision_id, last.decision, True, e.id, "stopped"))
                continue
            d, was_stopped = decisions[len(out)]
            out.append(GateResult(e.id, d, False, None, "stopped" if was_stopped else "running"))
        return out

    # ------------------------------------------------------------------ subjects and approvals
    def _subject_status(self, c, eng: Any, subj: Any, now_dt: datetime, extra: Iterable[dict] = ()) -> SubjectStatus:
        linked = self._linked(c, subj, ("approval", "transition", "execution", "step"))
        approvals = [e.body for e in linked if e.kind == "approval"] + list(extra)
        transitions = [e.body for e in linked if e.kind == "transition"]
        b = subj.body
        claimed = next((t.get("principal") for t in reversed(transitions) if t["to"] == "claimed"), None)
        ended = next((t["to"] for t in transitions if t["to"] in ("cancelled", "expired")), None)
        if subj.kind == "decision":
            dec = b["decision"]
            digest, kind = dec.get("action_digest"), "decision"
            if dec.get("effect") == "allow":
                used = next((e.id for e in linked if e.kind == "execution" and e.body.get("authorized")), None)
                return SubjectStatus(subj.id, kind, "executed" if used else "allowed", digest, used_by=used)
            if dec.get("effect") != "require_approval":
                return SubjectStatus(subj.id, kind, "refused", digest, reason=f"the decision is `{dec.get('effect')}`")

            def judge(apps):
                return eng.authorize_action(dec, apps, now_dt)
            bind = "action_digest"
        else:
            digest, kind, plan = b["plan_hash"], "rollback", b.get("plan")

            def judge(apps):
                return eng.authorize_rollback(plan, apps, now_dt)
            bind = "plan_hash"
        fields = ("principal", "roles", "at", "expires_at", "policy_hash")
        apps = [{**{k: a[k] for k in fields if a.get(k) is not None}, bind: a["digest"]}
                for a in approvals if a["verdict"] == "approve"]
        verdict = judge(apps)
        denied, ignored = [], []
        for a in approvals:
            if a["verdict"] != "deny":
                continue
            one = judge([{"principal": a["principal"], "roles": a.get("roles", []), bind: a["digest"],
                          **({"policy_hash": a["policy_hash"]} if a.get("policy_hash") else {})}])
            (denied if a["principal"] in one.accepted else ignored).append(a["principal"])
        expires_at = b.get("pending_until")
        common = dict(verdict=verdict, denied_by=tuple(denied), ignored_denials=tuple(ignored), expires_at=expires_at,
                      claimed_by=claimed)
        if kind == "decision":
            used = next((e.id for e in linked if e.kind == "execution" and e.body.get("authorized")), None)
            if ended:
                return SubjectStatus(subj.id, kind, ended, digest, **common, used_by=used)
            if denied:
                return SubjectStatus(subj.id, kind, "denied", digest, **common, reason=f"denied by {', '.join(denied)}")
            if used:
                return SubjectStatus(subj.id, kind, "executed", digest, **common, used_by=used,
                                     reason=f"its approvals were used by execution {used}")
            if expires_at is not None and now_dt >= _parse(expires_at):
                return SubjectStatus(subj.id, kind, "expired", digest, **common,
                                     reason=f"not executed by {expires_at}")
            return SubjectStatus(subj.id, kind, "approved" if verdict.satisfied else "pending", digest, **common)
        # a rollback: authorization, then progress from its steps
        duties = tuple(b.get("duties") or ())
        latest: dict[str, str] = {}
        for e in linked:
            if e.kind == "step" and e.body["record"] in duties:
                st = e.body["status"]
                prev = latest.get(e.body["record"])
                if st == "verified" or prev != "verified":
                    latest[e.body["record"]] = st
        done = {"completed", "verified"}
        remaining = tuple(d for d in duties if latest.get(d) not in done)
        unverified = tuple(d for d in duties if latest.get(d) == "completed")
        prog = dict(duties=duties, steps=latest, remaining=remaining, unverified=unverified)
        if latest:
            if not remaining and not unverified:
                status = "verified"
            elif not remaining:
                status = "completed"
            elif any(v == "failed" for v in latest.values()):
                status = "partial"
            else:
                status = "in_progress"
            return SubjectStatus(subj.id, kind, status, digest, **common, **prog)
        if ended:
            return SubjectStatus(subj.id, kind, ended, digest, **common, **prog)
        if denied:
            return SubjectStatus(subj.id, kind, "denied", digest, **common, **prog,
                                 reason=f"denied by {', '.join(denied)}")
        if not verdict.satisfied and expires_at is not None and now_dt >= _parse(expires_at):
            return SubjectStatus(subj.id, kind, "expired", digest, **common, **prog,
                                 reason=f"not authorized by {expires_at}")
        return SubjectStatus(subj.id, kind, "approved" if verdict.satisfied else "pending", digest, **common, **prog)

    def authorization(self, subject_id: str, *, now: Any = None) -> SubjectStatus:
        """Satisfied? Which slots are open? Denied, expired, cancelled, used? (a gate decision or a rollback)"""
        eng, now_dt = self.engine, _now(now)
        with self.ledger.reading() as c:
            subj = self._entry(c, subject_id, ("decision", "rollback"))
            return self._subject_status(c, eng, subj, now_dt)

    status = authorization

    def approve(self, subject_id: str, *, principal: str, roles: Iterable[str] = (), verdict: str = "approve",
                now: Any = None, expires_in: Optional[timedelta] = None, note: Optional[str] = None) -> ApprovalResult:
        """Record ``principal``'s approval (or ``verdict="deny"``) of a gate decision or a
        rollback plan, bound to its digest. A subject that is denied, expired, cancelled,
        executed or finished takes no more approvals (answered, not recorded)."""
        if verdict not in ("approve", "deny"):
            raise RuntimeUsageError(f"`verdict` is `approve` or `deny`, not {verdict!r}")
        if not isinstance(principal, str) or not principal:
            raise RuntimeUsageError("`principal` is a non-empty string")
        roles = list(roles)
        eng, now_dt = self.engine, _now(now)
        out: dict[str, Any] = {}

        def build(c):
            subj = self._entry(c, subject_id, ("decision", "rollback"))
            before = self._subject_status(c, eng, subj, now_dt)
            if before.status in TERMINAL or before.status in ("refused", "allowed", "in_progress", "partial",
                                                              "completed"):
                out["r"] = ApprovalResult(subject_id, False, None, False, before.status,
                                          f"the {before.kind} is `{before.status}`: it takes no approvals"
                                          + (f" ({before.reason})" if before.reason else ""))
                return []
            body = {"subject": subject_id, "digest": before.digest, "principal": principal, "roles": roles,
                    "verdict": verdict, "at": _ts(now_dt), "subject_kind": before.kind,
                    "policy_hash": eng.policy_hash}
            if verdict == "approve":
                ttl = expires_in if expires_in is not None else self.approval_ttl
                body["expires_at"] = _ts(now_dt + ttl)
            if note:
                body["note"] = note
            after = self._subject_status(c, eng, subj, now_dt, [body])
            counted = (principal in after.denied_by) if verdict == "deny" else principal in after.verdict.accepted
            body["counted"] = counted
            body["status_after"] = after.status
            out["r"] = (counted, after.status)
            return [NewEntry("approval", body, workflow=subj.workflow, links=[subject_id], time=now_dt)]

        entries = self._transact(build)
        r = out["r"]
        if isinstance(r, ApprovalResult):
            return r
        why = "" if r[0] else ("the principal cannot fill an open slot of this subject (see authorization())"
                               if verdict == "approve" else "the principal could fill no slot: the deny does not count")
        return ApprovalResult(subject_id, True, entries[0].id, r[0], r[1], why)

    def _transition(self, subject_id: str, to: str, principal: Optional[str], reason: Optional[str], now: Any,
                    allowed_from: Iterable[str]) -> TransitionResult:
        eng, now_dt = self.engine, _now(now)
        out: dict[str, Any] = {}

        def build(c):
            subj = self._entry(c, subject_id, ("decision", "rollback"))
            st = self._subject_status(c, eng, subj, now_dt)
            if to == "claimed" and st.claimed_by is not None and st.claimed_by != principal:
                out["r"] = TransitionResult(subject_id, False, st.status, reason=f"already claimed by {st.claimed_by}")
                return []
            if st.status not in allowed_from and not (to == "expired" and st.status == "expired"):
                out["r"] = TransitionResult(subject_id, False, st.status,
                                            reason=f"the {st.kind} is `{st.status}`: it cannot become `{to}`")
                return []
            body = {"subject": subject_id, "to": to, "principal": principal, "reason": reason, "at": _ts(now_dt)}
            out["to"] = st.status if to == "claimed" else to
            return [NewEntry("transition", body, workflow=subj.workflow, links=[subject_id], time=now_dt)]

        entries = self._transact(build)
        if "r" in out:
            return out["r"]
        return TransitionResult(subject_id, True, out["to"], entries[0].id)

    def claim(self, rollback_id: str, *, principal: str, now: Any = None) -> TransitionResult:
        """A reviewer takes a queued rollback; of concurrent claims exactly one wins."""
        return self._transition(rollback_id, "claimed", principal, None, now, ("pending", "approved"))

    def cancel(self, subject_id: str, *, principal: str, reason: Optional[str] = None,
               now: Any = None) -> TransitionResult:
        """Withdraw a decision awaiting approval or a rollback not yet started."""
        return self._transition(subject_id, "cancelled", principal, reason, now, ("pending", "approved"))

    def expire(self, *, now: Any = None) -> list[TransitionResult]:
        """The sweeper: record `expired` for every decision awaiting approval and every
        rollback not authorized whose deadline has passed (``stopline queue --expire``)."""
        now_dt = _now(now)
        t = _ts(now_dt)
        with self.ledger.reading() as c:
            ids = [r[0] for r in c.execute(select(P.pending.c.id).where(P.pending.c.expires_at <= t)
                                           .order_by(P.pending.c.seq))]
            ids += [r[0] for r in c.execute(select(P.rollbacks.c.id).where(
                and_(P.rollbacks.c.open == 1, P.rollbacks.c.status == "pending", P.rollbacks.c.expires_at <= t))
                .order_by(P.rollbacks.c.seq))]
        out = []
        for i in ids:
            r = self._transition(i, "expired", "stopline", "unresolved at its deadline", now_dt, ("expired",))
            if r.recorded:
                out.append(r)
        return out

    # ------------------------------------------------------------------ executions
    def executed(self, decision_id: Optional[str], *, receipt: dict, caused_by: Optional[str] = None,
                 action: Optional[dict] = None, executed_at: Any = None, now: Any = None,
                 key: Optional[str] = None) -> ExecutionResult:
        """Record that an action ran. Always recorded (the ledger records what happened);
        flagged ``unauthorized`` without a permitting decision (not allowed, approvals not
        satisfied, already used, the workflow stopped after the decision), and
        ``receipt_incomplete`` with each declared receipt field it lacks."""
        if not isinstance(receipt, dict):
            raise RuntimeUsageError("`receipt` is a JSON object")
        eng, now_dt = self.engine, _now(now)
        ex_at = _now(executed_at) if executed_at is not None else now_dt
        out: dict[str, Any] = {}

        def build(c):
            if key is not None:
                old = self.ledger.fetch(c, E.c.key == key)
                if old:
                    out["old"] = old[0]
                    return []
            reasons: list[str] = []
            links: list[str] = []
            dec = None
            if decision_id is not None:
                subj = self._entry(c, decision_id, ("decision",))
                links.append(decision_id)
                dec = subj.body["decision"]
                act = subj.body["action"] if isinstance(subj.body["action"], dict) else {}
                wf, atype = subj.workflow, dec.get("action_type")
                st = self._subject_status(c, eng, subj, now_dt)
                if st.status in ("allowed", "approved"):
                    row = self._wf_row(c, wf)
                    facts = self._facts(eng, wf, atype)
                    if row is not None and row[4] > subj.seq and not facts["runs_while_stopped"]:
                        reasons.append(f"workflow `{wf}` was stopped by `{row[1]}` at {row[2]}, after the decision")
                elif st.status == "executed":
                    reasons.append(f"the decision was already used by execution {st.used_by}")
                elif st.status == "refused":
                    reasons.append(f"the decision is `{dec.get('effect')}`")
                elif st.status == "pending":
                    open_ = ", ".join(f"{s.missing} {' or '.join(s.roles)}" for s in st.verdict.open_slots)
                    reasons.append("the approvals are not satisfied" + (f" (open: {open_})" if open_ else ""))
                else:
                    reasons.append(f"the decision is `{st.status}`" + (f": {st.reason}" if st.reason else ""))
                reviewer = ", ".join(st.verdict.accepted) if st.verdict is not None and st.verdict.accepted else None
            else:
                act = _plain(action) if action is not None else {}
                if not isinstance(act, dict) or not act.get("type"):
                    raise RuntimeUsageError("an execution without a decision names its `action` (workflow, type)")
                wf, atype = _name(act.get("workflow")), act.get("type")
                reasons.append("no gate decision covers it")
                reviewer = None
            declared = tuple(dec.get("receipt") or ()) if dec is not None else ()
            if not declared:
                declared = self._facts(eng, wf, atype)["receipt"] or ()
            missing = tuple(f for f in declared if f not in receipt)
            parent = None
            if caused_by is not None:
                parent = self._entry(c, caused_by, ("execution",))
                if caused_by not in links:
                    links.append(caused_by)
            flags = (["unauthorized"] if reasons else []) + (["receipt_incomplete"] if missing else [])
            body = {"receipt": receipt, "authorized": not reasons, "flags": flags, "reasons": reasons,
                    "missing_receipt": list(missing), "decision": decision_id, "caused_by": caused_by,
                    "type": atype, "action_id": act.get("id") if isinstance(act.get("id"), str) else None,
                    "executed_at": _ts(ex_at), "reviewer": receipt.get("reviewer") or reviewer,
                    "requester": receipt.get("requester") or act.get("requested_by") or act.get("requester"),
                    "policy_hash": eng.policy_hash}
            if decision_id is None:
                body["action"] = act
            del parent
            return [NewEntry("execution", body, workflow=wf, links=links, key=key, time=now_dt)]

        entries = self._transact(build)
        e = out.get("old") or entries[0]
        b = e.body
        return ExecutionResult(e.id, b["authorized"], tuple(b.get("flags", ())), tuple(b.get("reasons", ())),
                               tuple(b.get("missing_receipt", ())), e)

    # ------------------------------------------------------------------ rollbacks
    def _record_graph(self, c, eng: Any, x: Any) -> tuple[dict, list[dict], int]:
        """The original as an OriginalRecord dict with ``downstream`` from the recorded
        ``caused_by`` links (breadth-first, one query per level), and the links the policy's
        ``side_effects`` do not declare (listed, not followed)."""
        def record(e):
            b = e.body
            rec = {k: v for k, v in (b.get("receipt") or {}).items() if k not in ("downstream",)}
            rec.update({"id": e.id, "type": b.get("type") or "", "executed_at": b.get("executed_at") or e.time,
                        "downstream": []})
            for k in ("reviewer", "requester"):
                if b.get(k) is not None:
                    rec[k] = b[k]
            return rec

        root = record(x)
        undeclared: list[dict] = []
        level = [(x, root)]
        n = 1
        while level and n < MAX_CASCADE:
            by_seq = {e.seq: (e, r) for e, r in level}
            kids = self.ledger.fetch(c, E.c.kind == "execution",
                                     E.c.seq.in_(select(L.c.from_seq).where(L.c.to_seq.in_(list(by_seq)))))
            by_id = {e.id: (e, r) for e, r in level}
            nxt = []
            for k in kids:
                pe_pr = by_id.get(k.body.get("caused_by"))
                if pe_pr is None:
                    continue
                pe, pr = pe_pr
                declared = self._facts(eng, pe.workflow, pe.body.get("type"))["side_effects"]
                if declared is None or k.body.get("type") not in declared:
                    undeclared.append({"record": k.id, "type": k.body.get("type"), "parent": pe.id,
                                       "parent_type": pe.body.get("type")})
                    continue
                kr = record(k)
                pr["downstream"].append(kr)
                nxt.append((k, kr))
                n += 1
                if n >= MAX_CASCADE:
                    break
            level = nxt
        return root, undeclared, n

    def request_rollback(self, execution_id: str, *, scenario: str, requested_by: str, reason: str,
                         trigger: Optional[str] = None, now: Any = None) -> RollbackRequestResult:
        """Plan the rollback of a recorded execution from the record (its receipt, reviewer,
        requester, time; the cascade from recorded ``caused_by`` links), store the plan and
        queue it on its scenario's route. An execution already being (or already) rolled
        back is answered with that rollback, not a second one."""
        eng, now_dt = self.engine, _now(now)
        with self.ledger.reading() as c:
            x = self._entry(c, execution_id, ("execution",))
            existing = self._existing_rollback(c, execution_id)
            if existing is not None:
                return self._answer_existing(c, eng, existing, now_dt)
            original, undeclared, _ = self._record_graph(c, eng, x)
            wf = x.workflow
            row = self._wf_row(c, wf)
        request = {"workflow": wf or "", "scenario": scenario, "requested_by": requested_by, "reason": reason,
                   "requested_at": _ts(now_dt), "original": original}
        plan = eng.classify_rollback(request, now_dt)
        if not plan.authorizable:
            return RollbackRequestResult(None, plan, False, "refused", plan.route, tuple(undeclared),
                                         "; ".join(e.message for e in plan.errors) or "the plan is not authorizable")
        steps = [s.record_id for s in plan.cascade.steps if s.record_id != execution_id]
        duties = [execution_id, *steps, *(f"compensate:{cp.name}" for cp in plan.compensations),
                  *(f"notify:{n}" for n in plan.notify)]
        pd = plan.model_dump(mode="json")
        body = {"plan_hash": plan.plan_hash, "scenario": scenario, "requested_by": requested_by, "reason": reason,
                "plan": pd, "route": plan.route, "original": execution_id, "cascade": steps,
                "duties": list(dict.fromkeys(duties)), "undeclared": undeclared,
                "trigger": trigger or (row[1] if row else None), "requested_at": _ts(now_dt),
                "pending_until": _ts(now_dt + self.rollback_ttl)}
        links = [execution_id] + ([row[3]] if row and row[3] else [])
        out: dict[str, Any] = {}

        def build(c):
            ex = self._existing_rollback(c, execution_id)
            if ex is not None:
                out["existing"] = ex
                return []
            return [NewEntry("rollback", body, workflow=wf, links=links, time=now_dt)]

        entries = self._transact(build)
        if "existing" in out:
            with self.ledger.reading() as c:
                return self._answer_existing(c, eng, out["existing"], now_dt)
        return RollbackRequestResult(entries[0].id, plan, False, "pending", plan.route, tuple(undeclared))

    def _existing_rollback(self, c, execution_id: str) -> Optional[str]:
        r = c.execute(select(P.records.c.rollback).join(P.rollbacks, P.rollbacks.c.id == P.records.c.rollback)
                      .where(P.records.c.record == execution_id,
                             P.rollbacks.c.status.notin_(("denied", "expired", "cancelled")))
                      .order_by(P.records.c.seq).limit(1)).first()
        return r[0] if r else None

    def _answer_existing(self, c, eng, rollback_id: str, now_dt: datetime) -> RollbackRequestResult:
        rb = self._entry(c, rollback_id, ("rollback",))
        st = self._subject_status(c, eng, rb, now_dt)
        from ..models import RollbackPlan

        plan = RollbackPlan.model_validate(rb.body["plan"])
        return RollbackRequestResult(rollback_id, plan, True, st.status, rb.body.get("route"),
                                     tuple(rb.body.get("undeclared") or ()),
                                     f"already rolled back by {rollback_id} ({st.status}); nothing was recorded")

    def queue(self, route: Optional[str] = None, *, now: Any = None, limit: Optional[int] = None,
              claimed: Optional[bool] = None) -> list[QueueItem]:
        """Open rollbacks (not denied, expired, cancelled or verified) on ``route`` (all routes
        with None), oldest first, with their window deadline and status."""
        now_s = _ts(_now(now))
        R = P.rollbacks
        q = select(R.c.id, R.c.route, R.c.scenario, R.c.workflow, R.c.original, R.c.requested_by, R.c.requested_at,
                   R.c.deadline, R.c.expires_at, R.c.status, R.c.claimed_by).where(R.c.open == 1)
        if route is not None:
            q = q.where(R.c.route == route)
        if claimed is not None:
            q = q.where(R.c.claimed_by.isnot(None) if claimed else R.c.claimed_by.is_(None))
        q = q.order_by(R.c.seq)
        if limit is not None:
            q = q.limit(limit)
        with self.ledger.reading() as c:
            rows = c.execute(q).all()
        mk = QueueItem._make
        return [mk((*r, r[7] is not None and r[7] <= now_s)) for r in rows]

    def step(self, rollback_id: str, duty: str, status: str, *, key: Optional[str] = None, now: Any = None,
             detail: Optional[dict] = None) -> StepResult:
        """Report one step of a rollback: ``duty`` is a record's execution id (its reversal),
        ``compensate:NAME`` or ``notify:PARTY``; ``status`` started|completed|failed|verified.
        The same ``key`` again changes nothing."""
        if status not in STEP_RANK:
            raise RuntimeUsageError(f"a step's status is started, completed, failed or verified, not {status!r}")
        eng, now_dt = self.engine, _now(now)
        lkey = None if key is None else f"step:{rollback_id}:{key}"
        if lkey is not None and len(lkey) > 256:
            raise RuntimeUsageError("a step key is at most 200 characters")
        out: dict[str, Any] = {}

        def build(c):
            rb = self._entry(c, rollback_id, ("rollback",))
            if lkey is not None:
                old = self.ledger.fetch(c, E.c.key == lkey)
                if old:
                    out["old"] = old[0]
                    out["st"] = self._subject_status(c, eng, rb, now_dt)
                    return []
            duties = rb.body.get("duties") or []
            if duty not in duties:
                shown = ", ".join(duties[:6]) + (" …" if len(duties) > 6 else "")
                raise RuntimeUsageError(f"`{duty}` is not a duty of rollback {rollback_id} ({shown})")
            before = self._subject_status(c, eng, rb, now_dt)
            if status == "verified" and before.steps.get(duty) not in ("completed", "verified"):
                raise RuntimeUsageError(f"`{duty}` is `{before.steps.get(duty) or 'not started'}`: only a "
                                        "completed step can be verified")
            authorized = before.status in ("approved", "in_progress", "partial", "completed", "verified")
            body = {"record": duty, "status": status, "authorized": authorized, "at": _ts(now_dt)}
            if not authorized:
                body["flags"] = ["unauthorized"]
                body["reason"] = f"the rollback is `{before.status}`"
            if detail:
                body["detail"] = detail
            steps = dict(before.steps)  # fold the new step in (the entry is not written yet)
            if status == "verified" or steps.get(duty) != "verified":
                steps[duty] = status
            done = {"completed", "verified"}
            remaining = [d for d in duties if steps.get(d) not in done]
            unverified = [d for d in duties if steps.get(d) == "completed"]
            st = ("verified" if not remaining and not unverified else "completed" if not remaining
                  else "partial" if "failed" in steps.values() else "in_progress")
            body["status_after"] = st
            out["st"], out["rem"], out["auth"] = st, tuple(remaining), authorized
            return [NewEntry("step", body, workflow=rb.workflow, links=[rollback_id], key=lkey, time=now_dt)]

        entries = self._transact(build)
        if "old" in out:
            o = out["old"]
            st = out["st"]
            return StepResult(rollback_id, o.body["record"], o.body["status"], False, o.id,
                              o.body.get("authorized", True), st.status, st.remaining)
        e = entries[0]
        return StepResult(rollback_id, duty, status, True, e.id, out["auth"], out["st"], out["rem"])

    # ------------------------------------------------------------------ resume
    def resume(self, workflow: str, *, evidence: dict, principal: str, now: Any = None) -> ResumeResult:
        """Ask to restart a stopped workflow: the stop trigger's re-enable criteria over
        ``evidence``. Recorded either way (each criterion's result); only an allowed resume
        restarts it. A workflow that is not stopped is answered, nothing recorded."""
        eng, now_dt = self.engine, _now(now)
        out: dict[str, Any] = {}

        def build(c):
            row = self._wf_row(c, workflow)
            if row is None:
                out["r"] = ResumeResult(workflow, False, None, False, None, "running",
                                        reason=f"workflow `{workflow}` is not stopped")
                return []
            state = {"name": workflow, "status": "stopped", "stopped_by": row[1], "stopped_at": row[2]}
            r = eng.may_resume(workflow, state, evidence, now_dt)
            out["d"] = r
            try:
                ev_digest = _digest(evidence)
                ev = evidence
            except InvalidEntry as e:
                ev_digest, ev = "sha256:" + hashlib.sha256(repr(evidence).encode()).hexdigest(), {"unrecordable": str(e)}
            body = {"evidence_digest": ev_digest, "evidence": ev, "criteria": [x.model_dump(mode="json")
                                                                                for x in r.criteria],
                    "allowed": r.allowed, "unmet": list(r.unmet), "trigger": row[1], "principal": principal,
                    "policy_hash": r.policy_hash, "resumed_at": _ts(now_dt),
                    "errors": [x.model_dump(mode="json") for x in r.errors]}
            return [NewEntry("resume", body, workflow=workflow, links=[row[3]], time=now_dt)]

        entries = self._transact(build)
        if "r" in out:
            return out["r"]
        d = out["d"]
        return ResumeResult(workflow, True, entries[0].id, d.allowed, d, "running" if d.allowed else "stopped",
                            tuple(d.unmet))

    # ------------------------------------------------------------------ history
    def history(self, ref: str) -> dict:
        """The linked chain around any entry, both ways: for an execution (or anything about
        one) the original unchanged, its decision and approvals, what caused it and what it
        caused, and every rollback of it with its trigger, authorization, steps and verification."""
        eng = self._policies and self.engine
        now_dt = datetime.now(_UTC)
        with self.ledger.reading() as c:
            found = self.ledger.fetch(c, self.ledger._where_ref(ref)) if isinstance(ref, (str, int)) else []
            if not found:
                raise RuntimeUsageError(f"no entry `{ref}` in the ledger")
            e = found[0]
            anchor = e
            if e.kind in ("approval", "transition"):
                anchor = self._entry(c, e.body["subject"])
            elif e.kind == "step":
                anchor = self._entry(c, e.links[0])
            elif e.kind == "resume":
                anchor = self._entry(c, e.links[0])
            out: dict[str, Any] = {"entry": e.to_json()}
            if anchor.kind == "rollback":
                out["rollback"] = self._rollback_view(c, eng, anchor, now_dt)
                anchor = self._entry(c, anchor.body.get("original") or anchor.links[0])
            if anchor.kind == "decision":
                out["decision"] = self._decision_view(c, eng, anchor, now_dt)
                out["executions"] = [self._execution_view(c, eng, x, now_dt)
                                     for x in self._linked(c, anchor, ("execution",))
                                     if x.body.get("decision") == anchor.id]
            elif anchor.kind == "execution":
                out["execution"] = self._execution_view(c, eng, anchor, now_dt)
            elif anchor.kind == "stop":
                out["stop"] = anchor.to_json()
                out["resumes"] = [r.to_json() for r in self._linked(c, anchor, ("resume",))]
                out["rollbacks"] = [r.id for r in self._linked(c, anchor, ("rollback",))]
        return out

    def _decision_view(self, c, eng, d, now_dt) -> dict:
        v = {"entry": d.to_json(), "approvals": [a.to_json() for a in self._linked(c, d, ("approval",))],
             "transitions": [t.to_json() for t in self._linked(c, d, ("transition",))]}
        stops = self._linked(c, d, ("stop",))
        if stops:
            v["stopped"] = stops[0].to_json()
        if eng:
            v["status"] = self._subject_status(c, eng, d, now_dt).status
        return v

    def _rollback_view(self, c, eng, rb, now_dt) -> dict:
        linked = self._linked(c, rb)
        v = {"entry": rb.to_json(), "trigger": rb.body.get("trigger"),
             "approvals": [a.to_json() for a in linked if a.kind == "approval"],
             "transitions": [t.to_json() for t in linked if t.kind == "transition"],
             "steps": [s.to_json() for s in linked if s.kind == "step"]}
        if eng:
            st = self._subject_status(c, eng, rb, now_dt)
            v.update(status=st.status, remaining=list(st.remaining), unverified=list(st.unverified))
        return v

    def _execution_view(self, c, eng, x, now_dt) -> dict:
        v: dict[str, Any] = {"entry": x.to_json(), "flags": x.body.get("flags", []),
                             "missing_receipt": x.body.get("missing_receipt", [])}
        if x.body.get("decision"):
            v["decision"] = self._decision_view(c, eng, self._entry(c, x.body["decision"]), now_dt)
        v["caused_by"] = x.body.get("caused_by")
        linked = self._linked(c, x)
        v["caused"] = [k.id for k in linked if k.kind == "execution" and k.body.get("caused_by") == x.id]
        rbs = [r for r in linked if r.kind == "rollback"]
        in_cascade = [r[0] for r in c.execute(select(P.records.c.rollback).where(P.records.c.record == x.id)
                                              .order_by(P.records.c.seq))]
        seen = {r.id for r in rbs}
        rbs += [self._entry(c, i) for i in in_cascade if i not in seen]
        v["rollbacks"] = [self._rollback_view(c, eng, r, now_dt) for r in rbs]
        return v

    # ------------------------------------------------------------------ projections
    def rebuild(self) -> int:
        """Recompute the projections from the log (they are caches); returns the entries read."""
        n: list[int] = []

        def build(c):
            n.append(P.rebuild(c, self.ledger.fetch))
            return []
        self.ledger.transact(build)
        return n[0]

    def projection_snapshot(self) -> dict:
        with self.ledger.reading() as c:
            return P.snapshot(c)


def _jsonable(o: Any) -> Any:
    if hasattr(o, "to_json"):
        return _jsonable(o.to_json())
    if hasattr(o, "model_dump"):
        return o.model_dump(mode="json")
    if isinstance(o, dict):
        return {k: _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    return o


def dumps(x: Any) -> str:
    """JSON text of a runtime result (what the CLI prints)."""
    return json.dumps(_jsonable(x), indent=2, sort_keys=True, ensure_ascii=False)


from . import bulk as _bulk  # noqa: E402  (request_bulk_rollback, approve_batch, batch_status, batch_step)

_bulk.attach(Runtime)
