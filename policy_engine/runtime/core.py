"""The base of ``Runtime``: its state (engine, ledger, time-to-lives), the ledger plumbing
(one transaction with the projections, entries and their links) and where a subject
(a gate decision or a rollback) stands, which every other part reads."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, select

from ..ledger import Ledger
from ..ledger import schema as lschema
from ..timestamps import format_micros
from . import projections as P
from .results import E, L, RuntimeUsageError, SubjectStatus, _parse, _shown, _text_arg, _unicode

if TYPE_CHECKING:
    from ..engine import Engine

# The reads every runtime call makes, built once with bound parameters: SQLAlchemy builds
# and hashes a Core expression anew on each call otherwise (51 us against 12 us for an
# entry by id, 110 against 23 us for its linked entries, SQLite, in one measurement)
_BY_ID = select(E).where(E.c.id == bindparam("ref")).order_by(E.c.seq)
_LINKED = select(E).where(E.c.seq.in_(select(L.c.from_seq).where(L.c.to_seq == bindparam("seq")))).order_by(E.c.seq)
_LINKED_KINDS = _LINKED.where(E.c.kind.in_(bindparam("kinds", expanding=True)))
_WF_ROW = (select(P.workflows.c.status, P.workflows.c.trigger, P.workflows.c.since, P.workflows.c.stop_id,
                  P.workflows.c.seq).where(P.workflows.c.workflow == bindparam("wf")))


#: a workflow's projection row, and whether an entry appended beside the runtime waits to be folded in
_WF_STATUS = ("SELECT w.status, w.trigger, w.since, w.stop_id, w.seq, (SELECT u.seq FROM ledger_unprojected u LIMIT 1) "
              "FROM ledger_heads h LEFT JOIN rt_workflows w ON w.workflow = ? WHERE h.log = 1")


class RuntimeCore:
    """State and plumbing shared by the parts of :class:`~policy_engine.runtime.runtime.Runtime`."""

    def __init__(self, policies: Any, ledger: Ledger, *, approval_ttl: timedelta = timedelta(hours=24),
                 decision_ttl: timedelta = timedelta(hours=24), rollback_ttl: timedelta = timedelta(days=7),
                 owns_ledger: bool = False) -> None:
        self._policies = policies
        self.ledger = ledger
        self.approval_ttl = approval_ttl  #: an approval lapses this long after it is given
        self.decision_ttl = decision_ttl  #: a decision awaiting approval expires after this
        self.rollback_ttl = rollback_ttl  #: a rollback not authorized by then expires
        self._owns = owns_ledger
        #: workflow -> (a seq, its state row at that seq): what gate saw last; a fenced append proves it
        self._wf_seen: dict[str | None, tuple[int, tuple | None]] = {}
        #: queue listings by (route, limit, claimed, after) -> (the log's size when read, rows,
        #: (after this time, up to this time, the items built): the items while no deadline is crossed,
        #: the rows' seqs for a whole listing, which later appends update in place: Rollbacks.queue)
        self._queue_cache: dict[tuple, tuple[int, list, tuple | None, list | None]] = {}
        #: (the log's size, the engine's policy hash, {rollback id: the instant it was judged}): the
        #: rollbacks judged expired by the clock for good, not yet recorded (Rollbacks._expired_by_clock)
        self._clock_memo: tuple[int, str | None, dict[str, str]] = (0, None, {})
        self._clock_lock = threading.Lock()
        try:  # (current projections: one catalog read, no DDL)
            if not self._projections_current():  # (else no append lock: an open never waits for a writer)
                self.ledger.transact(lambda c: [P.ensure(c, self.ledger.fetch), []][1], projected=True)
            self.ledger.refresh_marks()  # (ensure gives an older ledger `ledger_unprojected`)
        except Exception as e:
            from ..ledger.errors import SchemaError
            from ..ledger.store import _no_create_right

            if not _no_create_right(e) and not _no_create_right(e.__cause__ or e):
                raise
            raise SchemaError(f"the ledger at {self.ledger.url} needs its runtime tables made or brought up to "
                              "this version (`rt_*`), and this database role may not: run `stopline ledger init` "
                              "with a role that may create tables, then start again") from None

    def _projections_current(self) -> bool:
        """Whether :func:`projections.ensure` has nothing to do (tables current, the ledger told
        that a runtime keeps them, nothing appended beside it waiting), read in one snapshot
        without the append lock: opening a runtime then does not wait behind another process's
        write (a long batch held it for the whole open, and a SQLite open failed with
        "database is locked" after ``lock_timeout``). Unsure (any error): False, and ``ensure``
        decides under the lock as before."""
        try:
            with self.ledger.reading() as c:
                if P.outdated(c) or not P._exists(c, P.MARKS.name):
                    return False
                if c.execute(select(lschema.meta.c.value).where(lschema.meta.c.name == "projections")).first() is None:
                    return False
                return not P.lagging(c)
        except Exception:  # noqa: BLE001  (the locked path reports it)
            return False

    def close(self) -> None:
        if self._owns:
            self.ledger.close()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def engine(self) -> Engine:
        """The engine deciding now (a PolicyStore's current snapshot)."""
        p = self._policies
        if p is None:
            raise RuntimeUsageError("this runtime was opened without policies (read-only)")
        return p.engine if hasattr(p, "reload") else p  # a PolicyStore: its current snapshot

    # ------------------------------------------------------------------ plumbing
    def _transact(self, build) -> list:
        def after(c: Any, new: list) -> None:
            for e in new:
                P.apply(c, e)

        def current(c: Any) -> Any:  # what was appended beside the runtime first, then the caller's reads
            P.catch_up(c, self.ledger.fetch)
            return build(c)

        return self.ledger.transact(current, after=after, projected=True)

    def _sync(self) -> None:
        """Fold into the projections what was appended beside the runtime (``stopline ledger
        append``, another program's ``Ledger.append``) before a read of them: one indexed
        read when nothing waits (the common case)."""
        if self.ledger.query_one("SELECT 1 FROM ledger_unprojected LIMIT 1") is not None:
            self.ledger.transact(lambda c: [P.catch_up(c, self.ledger.fetch), []][1], projected=True)

    def transact(self, build) -> list:
        """Public hook (for bulk.py): append what ``build(conn)`` returns, built inside the
        ledger's append lock, with the projections updated in the same transaction."""
        return self._transact(build)

    def subject_status(self, c, subject: Any, *, now: datetime, extra: Iterable[dict] = (),
                       engine: Any = None) -> SubjectStatus:
        """Public hook (for bulk.py): where a decision or rollback entry stands, read through
        ``c`` (e.g. inside :meth:`transact`), ``extra`` approval bodies counted as if recorded."""
        return self._subject_status(c, engine if engine is not None else self.engine, subject, now, extra)

    def _approved_until(self, c, eng: Any, subj: Any, now_dt: datetime, extra: Iterable[dict] = ()) -> str | None:
        """For a rollback approved at ``now_dt`` (with ``extra`` approval bodies counted as
        recorded): the first instant after it at which its approvals no longer authorize it
        (each approval expires: the status there is no longer ``approved``), or None when
        they never lapse. The candidates are the approvals' ``expires_at``: only there can
        the verdict change with time alone. Recorded in the approval (``approved_until``),
        so the queue, the sweeper and the counts read the lapse from the projection."""
        extra = list(extra)
        linked = self._linked(c, subj, ("approval", "transition", "execution", "step"))
        times = sorted({_parse(a["expires_at"]) for a in [e.body for e in linked if e.kind == "approval"] + extra
                        if a.get("verdict") == "approve" and isinstance(a.get("expires_at"), str)})
        for t in times:
            if t <= now_dt:
                continue
            if self._subject_status(c, eng, subj, t, extra, linked).status != "approved":
                return format_micros(t)
        return None

    @staticmethod
    def _runs_while_stopped(eng: Any, subj: Any, stop: Any, now_dt: Any) -> bool:
        """Whether the policy lets the decided action run while its workflow is stopped by
        ``stop`` (the engine decides, as for a gate while stopped), on the action as the gate
        evaluated it (``recorded_action``: its integral floats as floats; a malformed record: no)."""
        from .recorded import recorded_action

        state = {"name": subj.workflow, "status": "stopped", "stopped_by": stop.body.get("trigger"),
                 "stopped_at": stop.body.get("stopped_at") or stop.time}
        try:
            d = eng.evaluate(recorded_action(subj.body), state, now_dt)
        except Exception:  # noqa: BLE001 - fail closed
            return False
        return d.effect in ("allow", "require_approval")

    def _entry(self, c, ref: str, kinds: Iterable[str] | None = None) -> Any:
        if not isinstance(ref, str) or not ref:
            raise RuntimeUsageError(f"an entry id is a non-empty string, not {_shown(ref)}")
        if not _unicode(ref):  # no entry has such an id (the database could not even be asked)
            raise RuntimeUsageError(f"no entry {_shown(ref)} in the ledger")
        found = self.ledger.fetch_prepared(c, _BY_ID, {"ref": ref})
        if not found:
            raise RuntimeUsageError(f"no entry `{ref}` in the ledger")
        e = found[0]
        if kinds is not None and e.kind not in kinds:
            raise RuntimeUsageError(f"entry `{ref}` is a `{e.kind}`, not a {' or '.join(f'`{k}`' for k in kinds)}")
        return e

    def _linked(self, c, e: Any, kinds: Iterable[str] | None = None) -> list:
        if kinds is None:
            return self.ledger.fetch_prepared(c, _LINKED, {"seq": e.seq})
        return self.ledger.fetch_prepared(c, _LINKED_KINDS, {"seq": e.seq, "kinds": list(kinds)})

    def _wf_row(self, c, wf: str | None) -> tuple | None:
        if wf is None:
            return None
        r = c.execute(_WF_ROW, {"wf": wf}).first()
        return tuple(r) if r is not None and r[0] == "stopped" else None

    @staticmethod
    def _state(wf: str | None, row: tuple | None) -> dict | None:
        if row is None:
            return None
        return {"name": wf, "status": "stopped", "stopped_by": row[1], "stopped_at": row[2]}

    def _facts(self, eng: Any, workflow: Any, atype: Any) -> dict:
        """What the policy declares for an action type (receipt, side_effects, runs_while_stopped).
        None where the policy (or the engine's API) does not say: callers fail closed."""
        info = None
        if isinstance(workflow, str) and isinstance(atype, str):
            try:
                info = eng.action_info(atype, workflow)
            except Exception:  # noqa: BLE001 - an engine without the method, or a broken one: fail closed
                info = None
        if info is None:
            return {"receipt": None, "side_effects": None, "runs_while_stopped": False}
        return {"receipt": info["receipt"], "side_effects": info["side_effects"],
                "runs_while_stopped": info["runs_while_stopped"]}

    # ------------------------------------------------------------------ status of a workflow
    def workflow_status(self, workflow: str) -> dict:
        """``{"workflow", "status": running|stopped, "stopped_by", "since", "stop_id"}`` from the ledger.
        ``workflow`` is a workflow's name (a non-empty string): anything else is a
        :class:`RuntimeUsageError`, never answered as a running workflow."""
        _text_arg(workflow, "workflow")
        snap = self.ledger.query_one(_WF_STATUS, (workflow,))  # (one statement: one snapshot, one round trip)
        if snap is not None and snap[5] is not None:  # appended beside the runtime: folded in first
            self._sync()
            snap = self.ledger.query_one(_WF_STATUS, (workflow,))
        row = tuple(snap[:5]) if snap is not None and snap[0] == "stopped" else None
        if row is None:
            return {"workflow": workflow, "status": "running", "stopped_by": None, "since": None, "stop_id": None}
        return {"workflow": workflow, "status": "stopped", "stopped_by": row[1], "since": row[2], "stop_id": row[3]}

    # ------------------------------------------------------------------ subjects and approvals
    def _subject_status(self, c, eng: Any, subj: Any, now_dt: datetime, extra: Iterable[dict] = (),
                        linked: list | None = None) -> SubjectStatus:
        """``linked``: the subject's approval, transition, execution and step entries in seq
        order when the caller read them already (the queue reads many subjects' at once)."""
        if linked is None:
            linked = self._linked(c, subj, ("approval", "transition", "execution", "step"))
        b = subj.body
        # a decision's use is claimed (`claim_execution`, the adapters' claims: a `claimed`
        # transition numbered by `claim`): from then on it is closed, its standing is the one
        # it had when claimed; an approval, deny, cancel or expiry recorded after the claim
        # (none is accepted since; an older ledger may hold one) changes nothing
        use = (next((e for e in linked if e.kind == "transition" and e.body.get("to") == "claimed"
                     and "claim" in e.body), None) if subj.kind == "decision" else None)
        # a claim given up (``abandon_claim``: its action did not run): the decision is cancelled
        gave_up = (next((e for e in linked if e.kind == "transition" and e.body.get("abandons") == use.id), None)
                   if use is not None else None)
        before = linked if use is None else [e for e in linked if e.seq < use.seq or e.kind == "execution"]
        approvals = [e.body for e in before if e.kind == "approval"] + ([] if use is not None else list(extra))
        transitions = [e.body for e in linked if e.kind == "transition"]
        claimed = next((t.get("principal") for t in reversed(transitions) if t["to"] == "claimed"), None)
        ended = next((e.body["to"] for e in before
                      if e.kind == "transition" and e.body["to"] in ("cancelled", "expired")), None)
        if gave_up is not None and ended is None:
            ended = "cancelled"
        held: dict[str, Any] = {} if use is None else {"claim_id": use.id, "claimed_at": use.body.get("at") or use.time}
        if subj.kind == "decision":
            dec = b["decision"]
            digest, kind = dec.get("action_digest"), "decision"
            if dec.get("effect") == "allow":
                used = next((e.id for e in linked if e.kind == "execution" and e.body.get("authorized")), None)
                if gave_up is not None and not used:
                    return SubjectStatus(subj.id, kind, "cancelled", digest, claimed_by=claimed, **held,
                                         reason=_gave_up(gave_up))
                return SubjectStatus(subj.id, kind, "executed" if used else "allowed", digest, used_by=used,
                                     claimed_by=claimed, **held)
            if dec.get("effect") != "require_approval":
                return SubjectStatus(subj.id, kind, "refused", digest, reason=f"the decision is `{dec.get('effect')}`")

            # a claimed decision stands as it stood when claimed (its approvals unexpired then)
            then = now_dt if use is None else _parse(use.body.get("at") or use.time)

            def judge(apps):
                return eng.authorize_action(dec, apps, then)
            bind = "action_digest"
        else:
            digest, kind, plan = b["plan_hash"], "rollback", b.get("plan")

            def judge(apps):
                v = eng.authorize_rollback(plan, apps, now_dt)
                if v.satisfied or not apps:
                    return v
                return _complete_in_time(eng, plan, apps, now_dt) or v
            bind = "plan_hash"
        fields = ("principal", "roles", "at", "expires_at", "policy_hash")
        apps = [{**{k: a[k] for k in fields if a.get(k) is not None}, bind: a["digest"]}
                for a in approvals if a["verdict"] == "approve"]
        verdict = judge(apps)
        denied: list[str] = []
        ignored: list[str] = []
        for a in approvals:
            if a["verdict"] != "deny":
                continue
            one = judge([{"principal": a["principal"], "roles": a.get("roles", []), bind: a["digest"],
                          **({"policy_hash": a["policy_hash"]} if a.get("policy_hash") else {})}])
            (denied if a["principal"] in one.accepted else ignored).append(a["principal"])
        expires_at = b.get("pending_until")
        common: dict[str, Any] = dict(verdict=verdict, denied_by=tuple(denied), ignored_denials=tuple(ignored),
                                      expires_at=expires_at, claimed_by=claimed, **held)
        if kind == "decision":
            used = next((e.id for e in linked if e.kind == "execution" and e.body.get("authorized")), None)
            if ended:
                return SubjectStatus(subj.id, kind, ended, digest, **common, used_by=used,
                                     reason=_gave_up(gave_up) if gave_up is not None else "")
            if denied:
                return SubjectStatus(subj.id, kind, "denied", digest, **common, reason=f"denied by {', '.join(denied)}")
            if used:
                return SubjectStatus(subj.id, kind, "executed", digest, **common, used_by=used,
                                     reason=f"its approvals were used by execution {used}")
            if use is None and expires_at is not None and now_dt >= _parse(expires_at):
                return SubjectStatus(subj.id, kind, "expired", digest, **common, unrecorded=True,
                                     reason=f"not executed by {expires_at}")
            # claimed when approved (its `standing`): approved, also when the engine now deciding
            # (another policy version) no longer counts the approvals it was claimed under
            kept = use is not None and use.body.get("standing") == "approved"
            if not (verdict.satisfied or kept):
                why = _stale(dec.get("policy_hash") if isinstance(dec, dict) else None, eng, "made")
                if why is not None and use is None:
                    return SubjectStatus(subj.id, kind, "pending", digest, **common, stale=True,
                                         reason=why + ": gate the action again")
            return SubjectStatus(subj.id, kind, "approved" if verdict.satisfied or kept else "pending", digest,
                                 **common)
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
        prog: dict[str, Any] = dict(duties=duties, steps=latest, remaining=remaining, unverified=unverified)
        # progress shows once an *authorized* step was recorded (the rollback was approved when it
        # started); steps reported before that (flagged unauthorized) are listed but authorize
        # nothing: a pending or denied rollback stays pending or denied, however many steps
        started = any(e.kind == "step" and e.body.get("authorized") is True for e in linked)  # (a step appended beside
        # the runtime without `authorized` authorizes nothing: the runtime writes it on every step)
        if latest and started:
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
        why = None if verdict.satisfied else clock_expiry(plan, expires_at, now_dt)
        if why is not None:  # not authorized, and its window or its deadline passed: expired by the clock
            return SubjectStatus(subj.id, kind, "expired", digest, **common, **prog, unrecorded=True, reason=why)
        stale = None if verdict.satisfied else _stale(plan.get("policy_hash") if isinstance(plan, dict) else None,
                                                      eng, "classified")
        if stale is not None:
            return SubjectStatus(subj.id, kind, "pending", digest, **common, **prog, stale=True,
                                 reason=stale + ": request the rollback again (the request supersedes this one)")
        return SubjectStatus(subj.id, kind, "approved" if verdict.satisfied else "pending", digest, **common, **prog)



def _gave_up(e: Any) -> str:
    """The reason a decision whose claim was abandoned is ``cancelled``."""
    b = e.body
    return (f"its claim was abandoned by {b.get('principal')} at {b.get('at') or e.time} (the action did not run)"
            + (f": {b['reason']}" if b.get("reason") else ""))


def _stale(made_under: Any, eng: Any, what: str) -> str | None:
    """Why a subject made (``what``: ``made`` for a decision, ``classified`` for a plan) under
    the policy version ``made_under`` (its recorded hash) takes no approval under the engine
    ``eng`` of another version, else None (the same version, or no recorded hash)."""
    held = getattr(eng, "policy_hash", None)
    if not isinstance(made_under, str) or held is None or made_under == held:
        return None
    return (f"{what} under policy {made_under}; the runtime now decides under {held}, and approvals count only "
            f"under the version it was {what} under")


def _complete_in_time(eng: Any, plan: Any, apps: list[dict], now_dt: datetime) -> Any:
    """The verdict that satisfied a rollback's plan when its approvals completed it, if they
    did: judged at each approval's time with the approvals given by then, so a plan
    authorized within its reversal window stays authorized once the window has passed (a
    window passed *before* the authorization completed escalates it, as the engine says).
    Approvals expired by now count for nothing, as in the verdict at now. None if the
    approvals never satisfied the plan."""
    live = []
    for a in apps:
        try:
            exp = _parse(a["expires_at"]) if a.get("expires_at") is not None else None
            at = _parse(a["at"]) if a.get("at") is not None else None
        except (ValueError, TypeError):
            continue
        if (exp is None or exp > now_dt) and at is not None and at <= now_dt:
            live.append((at, a))
    live.sort(key=lambda x: x[0])
    for i, (at, _a) in enumerate(live):
        if i + 1 < len(live) and live[i + 1][0] == at:
            continue  # (approvals given at one instant are judged together)
        v = eng.authorize_rollback(plan, [a for _, a in live[:i + 1]], at)
        if v.satisfied:
            return v
    return None


def clock_expiry(plan: Any, pending_until: Any, now_dt: datetime) -> str | None:
    """Why a rollback that is *not authorized* at ``now_dt`` is expired by the clock alone,
    or None: a `standard` plan whose reversal window has ended (:func:`_lapsed`; the engine
    then requires the escalated path, which only a new plan names), or a plan past its
    ``pending_until`` (the runtime's ``rollback_ttl`` after its request).

    The one definition of a lapsed or timed-out rollback: ``_subject_status`` applies it
    to the verdict at ``now`` (so do ``approve``, ``claim``, ``cancel`` and the sweeper,
    ``expire``, which read it), and the views that answer as of a time without recording
    anything call it too: ``Runtime.queue`` and ``stopline report``
    (:mod:`policy_engine.report.compute`). ``plan``: the plan as recorded (a dict: its
    ``window`` and ``reversible_until``); ``pending_until``: as recorded (RFC 3339)."""
    lapsed = _lapsed(plan, now_dt)
    if lapsed is not None:
        return (f"its reversal window ended at {lapsed} before it was authorized: "
                "request the rollback again (it is then planned on the escalated path)")
    try:
        timed_out = pending_until is not None and now_dt >= _parse(pending_until)
    except (ValueError, TypeError):  # (not a time: no deadline, as a malformed window is no window)
        timed_out = False
    return f"not authorized by {pending_until}" if timed_out else None


def may_expire_by_clock(status: Any, deadline: Any, expires_at: Any, requested_at: Any, now_s: str) -> bool:
    """Whether a rollback's projection row (``rt_rollbacks``: its recorded ``status``, the
    ``deadline`` of its window, its ``expires_at`` (``pending_until``) and ``requested_at``,
    all in the entries' fixed text form) may be expired by the clock at ``now_s`` without an
    entry recording it: a pending row past its ``expires_at``, or past a window deadline that
    was open when it was requested (a standard plan's: an escalated plan's deadline is
    before its request). A cheap index, no judgment: :func:`clock_expiry` and the verdict
    (``_subject_status``) decide. The sweeper (``expire``) and ``Runtime.queue`` pick the rows
    to judge with it, so a view and the sweep consider the same rollbacks."""
    if status != "pending":
        return False
    if expires_at is not None and expires_at <= now_s:
        return True
    return deadline is not None and requested_at is not None and requested_at <= deadline < now_s


def _lapsed(plan: Any, now_dt: datetime) -> str | None:
    """The end of a `standard` plan's reversal window when ``now_dt`` is past it (the engine's
    `within`: now <= reversible_until), else None. Such a plan can no longer be authorized:
    the engine requires the escalated path now, which only a new plan names."""
    if not isinstance(plan, dict) or plan.get("window") != "standard":
        return None
    until = plan.get("reversible_until")
    try:
        return until if isinstance(until, str) and now_dt > _parse(until) else None
    except (ValueError, TypeError):
        return None
