"""Approvals and transitions of a subject (a gate decision or a rollback): ``authorization``,
``approve``, ``claim``, ``cancel`` and the ``expire`` sweeper."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, or_, select

from ..ledger import NewEntry
from . import projections as P
from .core import RuntimeCore, may_expire_by_clock
from .results import TERMINAL, ApprovalResult, RuntimeUsageError, SubjectStatus, TransitionResult, _now, _ts, _ts_after

if TYPE_CHECKING:
    from ..engine import NowInput


def _roles(roles: Any) -> list[str]:
    """The role names an approval claims: a list of non-empty strings (a string alone is not
    read letter by letter; anything else is refused, not guessed)."""
    if isinstance(roles, (str, bytes, dict)) or not isinstance(roles, Iterable):
        raise RuntimeUsageError(f"`roles` is a list of role names, not {type(roles).__name__}")
    out = list(roles)
    if not all(isinstance(r, str) and r for r in out):
        raise RuntimeUsageError("`roles` is a list of role names (non-empty strings)")
    return out


class Approvals(RuntimeCore):
    """The approvals part of :class:`~policy_engine.runtime.runtime.Runtime`."""

    def authorization(self, subject_id: str, *, now: NowInput = None) -> SubjectStatus:
        """Satisfied? Which slots are open? Denied, expired, cancelled, used? (a gate decision or a rollback)"""
        eng, now_dt = self.engine, _now(now)
        with self.ledger.reading() as c:
            subj = self._entry(c, subject_id, ("decision", "rollback"))
            return self._subject_status(c, eng, subj, now_dt)

    status = authorization

    def approve(self, subject_id: str, *, principal: str, roles: Iterable[str] = (), verdict: str = "approve",
                now: Any = None, expires_in: timedelta | None = None, note: str | None = None) -> ApprovalResult:
        """Record ``principal``'s approval (or ``verdict="deny"``) of a gate decision or a
        rollback plan, bound to its digest. A subject that is denied, expired, cancelled,
        executed or finished takes no more approvals (answered, not recorded)."""
        if verdict not in ("approve", "deny"):
            raise RuntimeUsageError(f"`verdict` is `approve` or `deny`, not {verdict!r}")
        if not isinstance(principal, str) or not principal:
            raise RuntimeUsageError("`principal` is a non-empty string")
        roles = _roles(roles)
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
            body: dict[str, Any] = {
                    "subject": subject_id, "digest": before.digest, "principal": principal, "roles": roles,
                    "verdict": verdict, "at": _ts(now_dt), "subject_kind": before.kind,
                    "policy_hash": eng.policy_hash}
            if verdict == "approve":
                ttl = expires_in if expires_in is not None else self.approval_ttl
                body["expires_at"] = _ts_after(now_dt, ttl)
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

    def _transition(self, subject_id: str, to: str, principal: str | None, reason: str | None, now: Any,
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
        return TransitionResult(subject_id, True, out["to"], entries[0].id)

    def claim(self, rollback_id: str, *, principal: str, now: NowInput = None) -> TransitionResult:
        """Reserve a subject for one principal; of concurrent claims exactly one wins, and a
        later claim by anyone else is refused (``recorded=False``, "already claimed by ...").

        Two uses, one transition: a reviewer takes a queued *rollback* (``queue(claimed=)``
        shows who), and an executor reserves an approved *gate decision* before it runs the
        action, so an approval is used once even when two resumes of the same approval race
        (the agent-runtime adapters claim with a fresh principal per attempt). The claim does
        not execute anything and does not change the subject's status; ``executed`` still
        records the use. The argument keeps its historical name: it takes a decision id too."""
        return self._transition(rollback_id, "claimed", principal, None, now, ("pending", "approved"))

    def cancel(self, subject_id: str, *, principal: str, reason: str | None = None,
               now: Any = None) -> TransitionResult:
        """Withdraw a decision awaiting approval or a rollback not yet started."""
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
            rows = [r for r in c.execute(select(R.c.id, R.c.status, R.c.deadline, R.c.expires_at, R.c.requested_at)
                                         .where(and_(R.c.open == 1, R.c.status == "pending",
                                                     or_(R.c.expires_at <= t, R.c.deadline < t)))
                                         .order_by(R.c.seq))
                    if may_expire_by_clock(r[1], r[2], r[3], r[4], t)]
        # past the deadline first, then a standard plan whose reversal window closed before it was
        # authorized (one authorized in time stays: `_subject_status` says `approved`, nothing is recorded)
        timed_out = [r[0] for r in rows if r[3] is not None and r[3] <= t]
        lapsed = [r[0] for r in rows if not (r[3] is not None and r[3] <= t)]
        out, by_window = [], set(lapsed)
        for i in ids + timed_out + lapsed:
            why = ("its reversal window ended before it was authorized" if i in by_window
                   else "unresolved at its deadline")
            r = self._transition(i, "expired", "stopline", why, now_dt, ("expired",))
            if r.recorded:
                out.append(r)
        return out
