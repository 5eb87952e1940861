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

from datetime import datetime
from typing import Any

from sqlalchemy import select

from ..ledger import Ledger
from . import projections as P
from .approvals import Approvals
from .batches import BulkRollbacks
from .executions import Executions
from .results import (  # noqa: F401  (re-exported: every name stays importable from here)
    _UTC,
    MAX_CASCADE,
    STEP_RANK,
    TERMINAL,
    ApprovalResult,
    ClaimInDoubt,
    E,
    ExecutionResult,
    GateResult,
    L,
    QueueItem,
    ResumeResult,
    RollbackRequestResult,
    RuntimeUsageError,
    StepResult,
    SubjectStatus,
    TransitionResult,
    _digest,
    _jsonable,
    _name,
    _now,
    _parse,
    _plain,
    _Result,
    _shown,
    _ts,
    _unicode,
    dumps,
    outcome_of,
)
from .rollbacks import Rollbacks

__all__ = ["Runtime", "RuntimeUsageError", "GateResult", "ApprovalResult", "SubjectStatus", "ExecutionResult",
           "RollbackRequestResult", "StepResult", "ResumeResult", "QueueItem", "TransitionResult",
           "ClaimInDoubt"]


HISTORY_LIMIT = 10_000  #: linked entries in one ``Runtime.history`` by default (as the ledger's ``history()``)


class _Budget:
    """What is left of a history's ``limit`` (None: no bound), and whether anything was cut."""

    __slots__ = ("left", "cut")

    def __init__(self, limit: int | None) -> None:
        self.left, self.cut = limit, False


class Runtime(Executions, Approvals, Rollbacks, BulkRollbacks):
    """An engine (or a ``PolicyStore``: a reload applies to the next call) joined to a ledger.

    Built from its parts: :mod:`.core` (state, plumbing, a subject's status), :mod:`.executions`
    (gate, executed, resume), :mod:`.approvals`, :mod:`.rollbacks`, :mod:`.bulk` and :mod:`.batches` (batches);
    here: opening, ``history`` and the projections."""

    @classmethod
    def open(cls, policies: Any, *, ledger: str | Ledger = "sqlite:///stopline.db", create: bool = True,
             **options: Any) -> Runtime:
        """``policies``: a path (file or directory), an ``Engine`` or a ``PolicyStore``
        (or None for read-only use: queue, history, status). ``ledger``: a URL or a Ledger."""
        if isinstance(policies, (str, bytes)) or hasattr(policies, "__fspath__"):
            from .. import load

            policies = load(policies)
        if isinstance(ledger, Ledger):
            led, owns = ledger, False
        else:
            led, owns = Ledger.open(ledger, create=create), True
        return cls(policies, led, owns_ledger=owns, **options)

    def __enter__(self) -> Runtime:
        return self

    # ------------------------------------------------------------------ history
    def history(self, ref: str, *, limit: int | None = HISTORY_LIMIT) -> dict:
        """The linked chain around any entry, both ways: for an execution (or anything about
        one) the original unchanged, its decision and approvals, what caused it and what it
        caused, and every rollback of it with its trigger, authorization, steps and verification.

        At most ``limit`` linked entries in all (``None``: no bound), as the ledger's
        ``history()`` bounds each side: each list keeps its lowest ``seq`` first. The result
        says whether it was cut: ``truncated`` (and the ``limit``); pass a larger one for all."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise RuntimeUsageError(f"`limit` is a number of entries (0 or more) or None, not {_shown(limit)}")
        eng = self._policies and self.engine
        now_dt = datetime.now(_UTC)
        if isinstance(ref, str) and not _unicode(ref):  # no entry has such an id
            raise RuntimeUsageError(f"no entry {_shown(ref)} in the ledger")
        budget = _Budget(limit)
        with self.ledger.reading() as c:
            found = self.ledger.fetch(c, self.ledger._where_ref(ref)) if isinstance(ref, (str, int)) else []
            if not found:
                raise RuntimeUsageError(f"no entry {_shown(ref) if not isinstance(ref, str) else f'`{ref}`'} "
                                        "in the ledger")
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
                out["rollback"] = self._rollback_view(c, eng, anchor, now_dt, budget)
                anchor = self._entry(c, anchor.body.get("original") or anchor.links[0])
            if anchor.kind == "decision":
                out["decision"] = self._decision_view(c, eng, anchor, now_dt, budget)
                out["executions"] = [
                    self._execution_view(c, eng, x, now_dt, budget)
                    for x in self._hlinked(c, anchor, ("execution",), budget)
                    if x.body.get("decision") == anchor.id
                ]
            elif anchor.kind == "execution":
                out["execution"] = self._execution_view(c, eng, anchor, now_dt, budget)
            elif anchor.kind == "stop":
                out["stop"] = anchor.to_json()
                out["resumes"] = [r.to_json() for r in self._hlinked(c, anchor, ("resume",), budget)]
                out["rollbacks"] = [r.id for r in self._hlinked(c, anchor, ("rollback",), budget)]
        out["truncated"], out["limit"] = budget.cut, limit
        return out

    def _hlinked(self, c, e: Any, kinds: tuple[str, ...] | None, budget: _Budget | None) -> list:
        """``_linked`` within the history's budget (the lowest ``seq`` first; a cut is recorded)."""
        if budget is None or budget.left is None:
            return self._linked(c, e, kinds)
        where = [E.c.seq.in_(select(L.c.from_seq).where(L.c.to_seq == e.seq))]
        if kinds is not None:
            where.append(E.c.kind.in_(kinds))
        got = self.ledger.fetch(c, *where, limit=budget.left + 1)
        if len(got) > budget.left:
            got, budget.cut = got[:budget.left], True
        budget.left -= len(got)
        return got

    def _decision_view(self, c, eng, d, now_dt, budget: _Budget | None = None) -> dict:
        v = {
            "entry": d.to_json(),
            "approvals": [a.to_json() for a in self._hlinked(c, d, ("approval",), budget)],
            "transitions": [t.to_json() for t in self._hlinked(c, d, ("transition",), budget)],
        }
        stops = self._hlinked(c, d, ("stop",), budget)
        if stops:
            v["stopped"] = stops[0].to_json()
        if eng:
            v["status"] = self._subject_status(c, eng, d, now_dt).status
        return v

    def _rollback_view(self, c, eng, rb, now_dt, budget: _Budget | None = None) -> dict:
        linked = self._hlinked(c, rb, None, budget)
        v = {
            "entry": rb.to_json(),
            "trigger": rb.body.get("trigger"),
            "approvals": [a.to_json() for a in linked if a.kind == "approval"],
            "transitions": [t.to_json() for t in linked if t.kind == "transition"],
            "steps": [s.to_json() for s in linked if s.kind == "step"],
        }
        if eng:
            st = self._subject_status(c, eng, rb, now_dt)
            v.update(status=st.status, remaining=list(st.remaining), unverified=list(st.unverified))
        return v

    def _execution_view(self, c, eng, x, now_dt, budget: _Budget | None = None) -> dict:
        v: dict[str, Any] = {
            "entry": x.to_json(),
            "flags": x.body.get("flags", []),
            "missing_receipt": x.body.get("missing_receipt", []),
        }
        v["outcome"], v["error"] = outcome_of(x.body)  # (succeeded, None: an entry that does not say it failed)
        if x.body.get("decision"):
            v["decision"] = self._decision_view(c, eng, self._entry(c, x.body["decision"]), now_dt, budget)
        v["caused_by"] = x.body.get("caused_by")
        linked = self._hlinked(c, x, None, budget)
        v["caused"] = [k.id for k in linked if k.kind == "execution" and k.body.get("caused_by") == x.id]
        rbs = [r for r in linked if r.kind == "rollback"]
        q = select(P.records.c.rollback).where(P.records.c.record == x.id).order_by(P.records.c.seq)
        left = None if budget is None else budget.left
        if left is not None:
            q = q.limit(left + 1)
        in_cascade = [r[0] for r in c.execute(q)]
        seen = {r.id for r in rbs}
        more = [i for i in in_cascade if i not in seen]
        if left is not None and budget is not None:
            if len(more) > left:
                more, budget.cut = more[:left], True
            budget.left = left - len(more)
        rbs += [self._entry(c, i) for i in more]
        v["rollbacks"] = [self._rollback_view(c, eng, r, now_dt, budget) for r in rbs]
        return v

    # ------------------------------------------------------------------ projections
    def rebuild(self) -> int:
        """Recompute the projections from the log (they are caches); returns the entries read."""
        n: list[int] = []

        def build(c):
            n.append(P.rebuild(c, self.ledger.fetch))
            return []

        self.ledger.transact(build, projected=True)
        return n[0]

    def projection_snapshot(self) -> dict:
        with self.ledger.reading() as c:
            return P.snapshot(c)



def _synced(name: str) -> None:
    """``Runtime.<name>`` reads the projections outside a write: it first folds in what was
    appended beside the runtime (``Runtime._sync``; the writes do it under the append lock)."""
    import functools

    f = getattr(Runtime, name)

    @functools.wraps(f)
    def synced(self: Runtime, *args: Any, **kwargs: Any) -> Any:
        self._sync()
        return f(self, *args, **kwargs)

    setattr(Runtime, name, synced)


for _read in ("claims_in_doubt", "batch_counts", "expire"):  # (gate, queue, workflow_status: in their read)
    _synced(_read)
