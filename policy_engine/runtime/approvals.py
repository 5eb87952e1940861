"""Approvals and transitions of a subject (a gate decision or a rollback): ``authorization``,
``approve``, ``claim``, ``cancel`` and the ``expire`` sweeper."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace as _replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, or_, select

from ..ledger import NewEntry
from . import projections as P
from .core import RuntimeCore, may_expire_by_clock
from .executions import _STOP_AFTER
from .results import (
    TERMINAL,
    ApprovalResult,
    ClaimInDoubt,
    E,
    RuntimeUsageError,
    SubjectStatus,
    TransitionResult,
    _free_text,
    _not_before,
    _now,
    _shown,
    _text_arg,
    _ts,
    _ts_after,
    _unicode,
    _unstorable,
)

if TYPE_CHECKING:
    from ..engine import NowInput

CLAIM_KEY = "stopline:claim:"  #: the n-th claim of a decision is keyed ``stopline:claim:<decision>:<n>``


def _roles(roles: Any) -> list[str]:
    """The role names an approval claims: a list of non-empty strings (a string alone is not
    read letter by letter; anything else is refused, not guessed)."""
    if isinstance(roles, (str, bytes, dict)) or not isinstance(roles, Iterable):
        raise RuntimeUsageError(f"`roles` is a list of role names, not {type(roles).__name__}")
    out = list(roles)
    if not all(isinstance(r, str) and r for r in out):
        raise RuntimeUsageError("`roles` is a list of role names (non-empty strings)")
    bad = next((r for r in out if not _unicode(r)), None)
    if bad is not None:  # (before: the ledger's encoder error, naming no argument)
        raise RuntimeUsageError(f"a role in `roles` {_unstorable(bad)}")
    return out


class Approvals(RuntimeCore):
    """The approvals part of :class:`~policy_engine.runtime.runtime.Runtime`."""

    def authorization(self, subject_id: str, *, now: NowInput = None) -> SubjectStatus:
        """Satisfied? Which slots are open? Denied, expired, cancelled, used? (a gate decision or a rollback)"""
        eng, now_dt = self.engine, _now(now)
        with self.ledger.reading() as c:
            subj = self._entry(c, subject_id, ("decision", "rollback"))
            st = self._subject_status(c, eng, subj, now_dt)
        who = subj.body.get("caller") if subj.kind == "decision" else None
        return _replace(st, caller=who) if type(who) is str else st

    status = authorization

    def approve(self, subject_id: str, *, principal: str, roles: Iterable[str] = (), verdict: str = "approve",
                now: Any = None, expires_in: timedelta | None = None, note: str | None = None) -> ApprovalResult:
        """Record ``principal``'s approval (or ``verdict="deny"``) of a gate decision or a
        rollback plan, bound to its digest. A subject that is denied, expired, cancelled,
        executed or finished takes no more approvals (answered, not recorded)."""
        if verdict not in ("approve", "deny"):
            raise RuntimeUsageError(f"`verdict` is `approve` or `deny`, not {verdict!r}")
        _text_arg(principal, "principal")
        roles = _roles(roles)
        if expires_in is not None and (not isinstance(expires_in, timedelta) or expires_in < timedelta(0)):
            raise RuntimeUsageError("`expires_in` is a duration (a timedelta) of 0 or more, or None; "
                                    f"not {_shown(expires_in)}")
        _free_text(note, "note", optional=True)
        eng, now_dt = self.engine, _now(now)
        out: dict[str, Any] = {}

        def build(c):
            subj = self._entry(c, subject_id, ("decision", "rollback"))
            _not_before(now_dt, subj, "its approval", clock=now is None)  # (backdated before its subject: never counts)
            linked = self._linked(c, subj, ("approval", "transition", "execution", "step"))  # (read once)
            before = self._subject_status(c, eng, subj, now_dt, linked=linked)
            # claimed: closed, whatever the verdict reads now (a policy reloaded since judges its
            # approvals against another hash: not a reason to take an approval, deny or cancel)
            if before.claim_id is not None and before.status not in TERMINAL:
                out["r"] = ApprovalResult(subject_id, False, None, False, before.status,
                                          f"the decision was claimed for its execution by {before.claimed_by} at "
                                          f"{before.claimed_at}: it takes no more approvals or denials")
                return []
            if before.status in TERMINAL or before.status in ("refused", "allowed", "in_progress", "partial",
                                                              "completed"):
                out["r"] = ApprovalResult(subject_id, False, None, False, before.status,
                                          f"the {before.kind} is `{before.status}`: it takes no approvals"
                                          + (f" ({before.reason})" if before.reason else ""))
                return []
            if before.stale and verdict == "approve":  # no approval can count under this version
                out["r"] = ApprovalResult(subject_id, False, None, False, before.status,
                                          f"the {before.kind} was {before.reason}; nothing was recorded")
                return []
            out["stale"] = before.reason if before.stale else None
            body: dict[str, Any] = {
                    "subject": subject_id, "digest": before.digest, "principal": principal, "roles": roles,
                    "verdict": verdict, "at": _ts(now_dt), "subject_kind": before.kind,
                    "policy_hash": eng.policy_hash}
            if verdict == "approve":
                ttl = expires_in if expires_in is not None else self.approval_ttl
                body["expires_at"] = _ts_after(now_dt, ttl)
            if note:
                body["note"] = note
            out["kind"] = before.kind
            after = self._subject_status(c, eng, subj, now_dt, [body], linked)
            counted = (principal in after.denied_by) if verdict == "deny" else principal in after.verdict.accepted
            body["counted"] = counted
            if not before.stale:  # (judged under another version than the subject's, the status says
                # nothing of it under its own: a stale deny leaves the projection's row as it was)
                body["status_after"] = after.status
            if before.kind == "rollback" and after.status == "approved":
                until = self._approved_until(c, eng, subj, now_dt, [body])
                if until is not None:
                    body["approved_until"] = until
            out["r"] = (counted, after.status)
            made = [NewEntry("approval", body, workflow=subj.workflow, links=[subject_id], time=now_dt)]
            if before.stale and verdict == "deny" and roles:
                # judged under another version, the deny counts under none (a deny is judged under
                # the version deciding when it is given): so a reviewer's deny closes the subject
                # for good, under every version (a reload back would otherwise let the old
                # approvals carry it, the deny forgotten). Its slots cannot be read under this
                # version: a principal holding a role may close it, as a cancel over HTTP
                made.append(NewEntry("transition", {
                    "subject": subject_id, "to": "cancelled", "principal": principal, "at": _ts(now_dt),
                    "reason": f"denied by {principal} while it was {before.reason}: a deny closes it under "
                              "every version"}, workflow=subj.workflow, links=[subject_id], time=now_dt))
                out["r"] = (True, "cancelled")
                out["closed"] = True
            return made

        entries = self._transact(build)
        r = out["r"]
        if isinstance(r, ApprovalResult):
            return r
        subject_kind = out.get("kind")
        if out.get("closed"):
            return ApprovalResult(subject_id, True, entries[0].id, True, "cancelled",
                                  f"the {subject_kind} was {out['stale']}: the deny closed it (cancelled), under "
                                  "every policy version")
        why = "" if r[0] else (f"the deny does not count under this policy version: the {subject_kind} was "
                               f"{out['stale']}" if out.get("stale") else
                               "the principal cannot fill an open slot of this subject (see authorization())"
                               if verdict == "approve" else "the principal could fill no slot: the deny does not count")
        return ApprovalResult(subject_id, True, entries[0].id, r[0], r[1], why)

    def _transition(self, subject_id: str, to: str, principal: str | None, reason: str | None, now: Any,
                    allowed_from: Iterable[str]) -> TransitionResult:
        eng, now_dt = self.engine, _now(now)
        out: dict[str, Any] = {}

        def build(c):
            subj = self._entry(c, subject_id, ("decision", "rollback"))
            st = self._subject_status(c, eng, subj, now_dt)
            if st.claim_id is not None and st.status not in TERMINAL:  # (closed: as in approve)
                out["r"] = TransitionResult(subject_id, False, st.status, claimed_by=st.claimed_by,
                                            reason=f"the decision was claimed for its execution by {st.claimed_by} "
                                                   f"at {st.claimed_at}: it cannot become `{to}`")
                return []
            if to == "claimed" and st.claimed_by is not None and (st.claimed_by != principal
                                                                  or st.status in allowed_from):
                # a single-use reservation: its holder's claim again (a retry, a second worker of the
                # same reviewer) is answered, not recorded again
                out["r"] = TransitionResult(subject_id, False, st.status, claimed_by=st.claimed_by,
                                            reason=f"already claimed by {st.claimed_by}")
                return []
            if to == "expired" and st.status == "expired" and not st.unrecorded:  # (another sweeper, or a
                # request planning it again, recorded it first: one expiry is recorded, not one per racer)
                out["r"] = TransitionResult(subject_id, False, st.status,
                                            reason=f"the {st.kind} is `expired` already (recorded)")
                return []
            if st.status not in allowed_from and not (to == "expired" and st.status == "expired"):
                out["r"] = TransitionResult(subject_id, False, st.status,
                                            reason=f"the {st.kind} is `{st.status}`: it cannot become `{to}`"
                                            + (f" ({st.reason})" if st.reason else ""))
                if st.unrecorded:  # expired by the clock, not yet recorded: record it now, as the sweeper would
                    return [NewEntry("transition", {"subject": subject_id, "to": "expired", "principal": "stopline",
                                                    "reason": st.reason, "at": _ts(now_dt)},
                                     workflow=subj.workflow, links=[subject_id], time=now_dt)]
                return []
            body = {"subject": subject_id, "to": to, "principal": principal, "reason": reason, "at": _ts(now_dt)}
            out["to"] = st.status if to == "claimed" else to
            return [NewEntry("transition", body, workflow=subj.workflow, links=[subject_id], time=now_dt)]

        entries = self._transact(build)
        if "r" in out:
            return out["r"]
        return TransitionResult(subject_id, True, out["to"], entries[0].id,
                                claimed_by=principal if to == "claimed" else None)

    def claim(self, rollback_id: str, *, principal: str, now: NowInput = None) -> TransitionResult:
        """Reserve a subject for one principal; of concurrent claims exactly one wins, and a
        later claim by anyone else is refused (``recorded=False``, "already claimed by ...").

        Two uses, one transition: a reviewer takes a queued *rollback* (``queue(claimed=)``
        shows who); for a *gate decision* this is :meth:`claim_execution` (an executor
        reserves the decision's one use before it runs the action). The claim of a rollback
        does not change its status. The argument keeps its historical name: it takes a
        decision id too."""
        _text_arg(principal, "principal")
        with self.ledger.reading() as c:
            kind = self._entry(c, rollback_id, ("decision", "rollback")).kind
        if kind == "decision":
            return self.claim_execution(rollback_id, principal=principal, now=now)
        return self._transition(rollback_id, "claimed", principal, None, now, ("pending", "approved"))

    def claim_execution(self, decision_id: str, *, principal: str, now: NowInput = None) -> TransitionResult:
        """Claim a gate decision's one use, right before the action runs: exactly once across
        every thread, process and machine sharing the ledger.

        Recorded (a ``claimed`` transition, keyed ``stopline:claim:<decision>:1``) only if,
        read under the ledger's append lock, the decision is ``allowed`` or ``approved`` now
        (approvals satisfied and unexpired, no deny), nobody claimed it before, and its
        workflow was not stopped after it (unless the policy lets the action run while
        stopped: then the gate would allow it now). Otherwise ``recorded=False`` with why;
        ``claimed_by`` names the holder (the caller itself on a retry: ``claimed_by ==
        principal`` means the caller holds it).

        A claimed decision is closed: no approval, deny or cancel is accepted after the claim,
        and it does not expire; its execution, recorded with :meth:`executed`, is authorized
        even when a stop comes after the claim (the claim was made while it could run). The
        agent-runtime adapters claim through the same transition (:meth:`claim_turn`)."""
        _text_arg(principal, "principal")

        def first(claims: list, stop_after: Any, nonce: str) -> tuple[str | None, str]:
            if claims:
                return None, f"already claimed by {claims[0]}"
            if stop_after() is not None:
                return None, ""
            return principal, "claimed for its execution"

        st, holder, why, _stop, entry = self.claim_turn(decision_id, first, now=now)
        if holder is not None:
            return TransitionResult(decision_id, True, st.status, entry, claimed_by=holder)
        status = st.status if st is not None else "unknown"
        held = st.claimed_by if st is not None else None
        return TransitionResult(decision_id, False, status, st.claim_id if held == principal and st else None,
                                reason=why or f"the decision is `{status}`", claimed_by=held)

    def claim_turn(self, decision_id: str, choose: Any, *, now: NowInput = None) -> tuple[Any, str | None, str, Any,
                                                                                              str | None]:
        """The one claim primitive (``claim_execution``; the adapters' claims, LangGraph's
        turns): append the next ``claimed`` transition of ``decision_id`` if the ledger allows
        it, read and written in one transaction under the ledger's append lock (SQLite
        ``BEGIN IMMEDIATE``, PostgreSQL's row lock), so of concurrent claimants, in one
        process or several, exactly one sees the state before the claim.

        Under the lock: the decision must be ``allowed`` (not yet executed) or ``approved``
        (its approvals satisfied now, no deny); then ``choose(claims, stop_after, nonce)``
        decides, given the principals of the decision's ``claimed`` transitions in ledger
        order, ``stop_after()`` (the stop of the workflow recorded after the decision that
        forbids a claim, unless the policy lets the action run while stopped; None when there
        is none) and a fresh nonce: it returns the principal to record and the claim's
        reason, or ``(None, why)``. The n-th claim carries the key
        ``stopline:claim:<decision>:<n>`` and the nonce, so a second entry for the same
        turn, even one written without this check, is refused by the ledger's unique key
        (answered as a refusal).

        Returns the decision's status (``SubjectStatus``) as read under the lock (``None`` if
        the ledger refused the append), the principal when the claim was recorded (else
        ``None``), why not, the stop entry when a stop after the decision is why, and the
        claim's entry id."""
        import uuid

        from ..ledger import IdempotencyConflict

        eng, now_dt, nonce = self.engine, _now(now), uuid.uuid4().hex
        seen: dict[str, Any] = {"status": None, "holder": None, "why": "", "stop": None}

        def build(c: Any) -> list:
            subj = self._entry(c, decision_id, ("decision",))
            linked = self._linked(c, subj, ("approval", "transition", "execution", "step"))  # (read once)
            st = seen["status"] = self._subject_status(c, eng, subj, now_dt, linked=linked)
            if st.status not in ("allowed", "approved"):
                seen["why"] = f"the decision is `{st.status}`" + (f" ({st.reason})" if st.reason else "")
                return []
            claims = [e.body.get("principal") for e in linked
                      if e.kind == "transition" and e.body.get("to") == "claimed"]

            def stop_after() -> Any:
                if subj.workflow is None:
                    return None
                later = self.ledger.fetch_prepared(c, _STOP_AFTER, {"wf": subj.workflow, "seq": subj.seq})
                if not later or self._runs_while_stopped(eng, subj, later[0], now_dt):
                    return None
                seen["stop"] = later[0]
                seen["why"] = f"workflow `{subj.workflow}` was stopped by `{later[0].body.get('trigger')}` after it"
                return later[0]

            who, reason = choose(claims, stop_after, nonce)
            if who is None:
                seen["why"] = seen["why"] or reason
                return []
            _text_arg(who, "principal")  # (the claim's principal is a projection column: rt_claims)
            n = len(claims) + 1
            seen["holder"] = who
            # `standing`: what the claim found (allowed or approved), which its execution keeps
            # whatever a later policy says of the decision's approvals
            body = {"subject": decision_id, "to": "claimed", "principal": who, "reason": reason,
                    "at": _ts(now_dt), "claim": n, "nonce": nonce, "standing": st.status}
            return [NewEntry("transition", body, workflow=subj.workflow, links=[decision_id],
                             key=f"{CLAIM_KEY}{decision_id}:{n}", time=now_dt)]

        try:
            entries = self._transact(build)
        except IdempotencyConflict as e:  # another claimant recorded this turn first: the ledger refuses this one
            return None, None, f"the ledger refused a second claim of this turn: {e}", None, None
        return seen["status"], seen["holder"], seen["why"], seen["stop"], (entries[0].id if entries else None)

    def claims_in_doubt(self, *, older_than: timedelta = timedelta(0), now: NowInput = None,
                        limit: int | None = None) -> list[ClaimInDoubt]:
        """Gate decisions claimed for their execution at or before ``now - older_than`` whose
        execution no entry records: the worker that claimed one may have died before the
        action ran, or after it ran and before it reported. Oldest claim first (``limit``:
        at most that many). One indexed read of the ``rt_claims`` projection.

        Each is resolved by whoever knows what happened: :meth:`executed` when the action ran
        (the claim authorizes it), :meth:`abandon_claim` when it did not (the decision is
        cancelled; gate the action again). An adapter's claim kept while its tool waits on an
        interrupt (LangGraph) is listed too: ``turns`` and ``last_at`` tell it apart."""
        if not isinstance(older_than, timedelta) or older_than < timedelta(0):
            raise RuntimeUsageError(f"`older_than` is a duration of 0 or more, not {older_than!r}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise RuntimeUsageError(f"`limit` is a number of claims (0 or more), not {limit!r}")
        try:
            upto = _ts(_now(now) - older_than)
        except OverflowError:
            raise RuntimeUsageError(f"`older_than` reaches before the year 1: {older_than!r}") from None
        C = P.claims
        q = (select(C.c.id, C.c.workflow, C.c.claimed_by, C.c.claimed_at, C.c.last_at, C.c.turns, C.c.claim_id)
             .where(C.c.claimed_at <= upto).order_by(C.c.claimed_at, C.c.seq))
        if limit is not None:
            q = q.limit(limit)
        with self.ledger.reading() as c:
            return [ClaimInDoubt._make(tuple(r)) for r in c.execute(q)]

    def held(self, *, limit: int | None = None, offset: int = 0) -> tuple[int, list]:
        """The gate decisions waiting for approval, oldest first: how many in all, and the
        decision entries (``Entry``) from ``offset`` on, at most ``limit`` (None: all). Waiting:
        pending, or approved and neither claimed nor executed; one past its ``pending_until``
        stays until the sweeper (:meth:`expire`) records it expired. Where each stands now
        is its :meth:`authorization`. One count and one indexed read of the ``rt_pending``
        projection, after folding in what was appended beside the runtime."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise RuntimeUsageError(f"`limit` is a number of decisions (0 or more) or None, not {_shown(limit)}")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise RuntimeUsageError(f"`offset` is a number of decisions (0 or more), not {_shown(offset)}")
        self._sync()  # (the projection, with what was appended beside the runtime folded in)
        H = P.pending
        q = select(H.c.seq).order_by(H.c.seq).offset(offset)
        with self.ledger.reading() as c:
            total = int(c.execute(select(func.count()).select_from(H)).scalar() or 0)
            seqs = [r[0] for r in c.execute(q.limit(limit) if limit is not None else q)]
            found = self.ledger.fetch(c, E.c.seq.in_(seqs)) if seqs else []
        return total, sorted(found, key=lambda e: e.seq)

    def stopped_after(self, decision_id: str, *, now: NowInput = None) -> dict | None:
        """The stop of a gate decision's workflow recorded after the decision that forbids
        its claim (:meth:`claim_execution` refuses it: approved or not, the action cannot run
        under this decision; gate it again once the workflow is resumed), as ``{"stop_id",
        "trigger", "stopped_at"}``; None when there is none, or when the policy lets the
        action run while stopped (the rule the claim applies)."""
        eng, now_dt = self.engine, _now(now)
        with self.ledger.reading() as c:
            subj = self._entry(c, decision_id, ("decision",))
            later = [] if subj.workflow is None else self.ledger.fetch_prepared(
                c, _STOP_AFTER, {"wf": subj.workflow, "seq": subj.seq})
        if not later or self._runs_while_stopped(eng, subj, later[0], now_dt):
            return None
        stop = later[0]
        return {"stop_id": stop.id, "trigger": stop.body.get("trigger"),
                "stopped_at": stop.body.get("stopped_at") or stop.time}

    def abandon_claim(self, decision_id: str, *, principal: str, reason: str, now: NowInput = None) -> TransitionResult:
        """Record that a claimed decision's action did not run (its worker died before it
        ran, or never started it): the decision becomes ``cancelled`` (its one use given up,
        nothing can run under it any more; gate the action again), and it leaves
        :meth:`claims_in_doubt`. Refused (``recorded=False``) unless the decision is claimed
        and no execution of it is recorded. An execution reported later is recorded as
        unauthorized: the attestation was wrong, and the ledger shows both."""
        _text_arg(principal, "principal")
        if not isinstance(reason, str) or not reason.strip():
            raise RuntimeUsageError("`reason` is a non-empty string: say why the action did not run")
        _free_text(reason, "reason")
        eng, now_dt = self.engine, _now(now)
        out: dict[str, Any] = {}

        def build(c):
            subj = self._entry(c, decision_id, ("decision",))
            linked = self._linked(c, subj, ("approval", "transition", "execution", "step"))
            st = self._subject_status(c, eng, subj, now_dt, linked=linked)
            ran = next((e.id for e in linked if e.kind == "execution"), None)
            if st.claim_id is None or ran is not None or st.status in TERMINAL:
                why = (f"execution {ran} of it is recorded" if ran is not None
                       else f"the decision is `{st.status}`" if st.status in TERMINAL
                       else "the decision is not claimed")
                out["r"] = TransitionResult(decision_id, False, st.status, claimed_by=st.claimed_by,
                                            reason=f"{why}: there is no claim to abandon")
                return []
            out["r"] = (st.claim_id, st.claimed_by)
            return [NewEntry("transition", {"subject": decision_id, "to": "cancelled", "principal": principal,
                                            "reason": reason, "abandons": st.claim_id, "at": _ts(now_dt)},
                             workflow=subj.workflow, links=[decision_id, st.claim_id], time=now_dt)]

        entries = self._transact(build)
        r = out["r"]
        if isinstance(r, TransitionResult):
            return r
        return TransitionResult(decision_id, True, "cancelled", entries[0].id, claimed_by=r[1],
                                reason=f"the claim {r[0]} by {r[1]} was abandoned: the action did not run")

    def cancel(self, subject_id: str, *, principal: str, reason: str | None = None,
               now: Any = None) -> TransitionResult:
        """Withdraw a decision awaiting approval or a rollback not yet started."""
        _text_arg(principal, "principal")  # (who withdrew it: the record names someone)
        _free_text(reason, "reason", optional=True)
        return self._transition(subject_id, "cancelled", principal, reason, now, ("pending", "approved"))

    def expire(self, *, now: NowInput = None) -> list[TransitionResult]:
        """The sweeper: record `expired` for every decision awaiting approval and every
        rollback not authorized whose deadline has passed (``stopline queue --expire``).

        The rollbacks it considers are the pending rows :func:`~.core.may_expire_by_clock`
        picks (past their ``pending_until``, or a standard plan past its reversal window);
        each is judged by ``_subject_status`` (:func:`~.core.clock_expiry` on the verdict at
        ``now``) inside its transition: one authorized in time stays, nothing recorded. The
        views (``queue``, ``stopline report``) read the same rule without recording it."""
        now_dt = _now(now)
        t = _ts(now_dt)
        R = P.rollbacks
        with self.ledger.reading() as c:
            ids = [r[0] for r in c.execute(select(P.pending.c.id).where(P.pending.c.expires_at <= t)
                                           .order_by(P.pending.c.seq))]
            # pending, or approved with approvals lapsed (expired: pending again) by now, or
            # approved under another policy version than the one deciding (pending under this one)
            ekey = self.engine.policy_hash if self._policies is not None else None
            lapsed_or_stale = R.c.lapses_at <= t
            if ekey is not None:
                lapsed_or_stale = or_(lapsed_or_stale, R.c.policy_hash != ekey)
            gone = and_(R.c.status == "approved", lapsed_or_stale)
            rows = [r for r in c.execute(select(R.c.id, R.c.status, R.c.deadline, R.c.expires_at, R.c.requested_at)
                                         .where(and_(R.c.open == 1, or_(R.c.status == "pending", gone),
                                                     or_(R.c.expires_at <= t, R.c.deadline < t)))
                                         .order_by(R.c.seq))
                    if may_expire_by_clock("pending", r[2], r[3], r[4], t)]
        # past the deadline first, then a standard plan whose reversal window closed before it was
        # authorized (one authorized in time stays: `_subject_status` says `approved`, nothing is recorded)
        timed_out = [r[0] for r in rows if r[3] is not None and r[3] <= t]
        lapsed = [r[0] for r in rows if not (r[3] is not None and r[3] <= t)]
        out, by_window = [], set(lapsed)
        for i in ids + timed_out + lapsed:
            why = ("its reversal window ended while it was not authorized" if i in by_window
                   else "unresolved at its deadline")
            r = self._transition(i, "expired", "stopline", why, now_dt, ("expired",))
            if r.recorded:
                out.append(r)
        return out
