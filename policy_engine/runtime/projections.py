"""The runtime's projections: small tables beside the ledger that answer "what is the
state now" with one indexed read (a workflow's status, the open rollbacks per route, the
records a rollback covers, the gate decisions awaiting approval).

They are caches, never the record: each row is a pure function of the entries (``apply``
folds one entry into them), they are written in the same transaction as the entry that
changes them (``Ledger.transact``), and ``rebuild`` recomputes them from the log. The
entries table stays the system of record; deleting these tables loses nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    func,
    insert,
    select,
    update,
)

from ..ledger import schema as lschema
from ..ledger.writer import _UNREAD, UNPROJECTED
from ..timestamps import format_micros, parse_rfc3339

metadata = MetaData()

#: one row per workflow that was ever stopped: its latest stop or resume
workflows = Table("rt_workflows", metadata,
                  Column("workflow", String(256), primary_key=True),
                  Column("status", String(16), nullable=False),  # running | stopped
                  Column("trigger", String(256), nullable=True),
                  Column("stop_id", String(64), nullable=True),
                  Column("since", String(32), nullable=True),
                  Column("seq", BigInteger, nullable=False))

#: one row per rollback request; ``open`` = 1 until it is denied, expired, cancelled or verified
rollbacks = Table("rt_rollbacks", metadata,
                  Column("id", String(64), primary_key=True),
                  Column("seq", BigInteger, nullable=False),
                  Column("route", String(256), nullable=True),
                  Column("workflow", String(256), nullable=True),
                  Column("scenario", String(256), nullable=False),
                  Column("original", String(64), nullable=False),
                  Column("requested_by", String(256), nullable=False),
                  Column("requested_at", String(32), nullable=False),
                  Column("deadline", String(32), nullable=True),  # the reversal window's end
                  Column("expires_at", String(32), nullable=True),  # unresolved after this: expired
                  Column("status", String(16), nullable=False),
                  Column("open", Integer, nullable=False),
                  Column("claimed_by", String(256), nullable=True),
                  # an approved rollback not started: the instant its approvals stop satisfying its
                  # authorization (each expires): from then on it is pending again (the approval that
                  # made it approved computed it: ``approved_until``); None: they never lapse
                  Column("lapses_at", String(32), nullable=True),
                  # the policy version (hash) its plan was classified under: approvals count only
                  # under it, so an approved row reads as pending while another version decides
                  # (a reload since: ``authorization`` says why; a reload back, approved again)
                  Column("policy_hash", String(80), nullable=True),
                  Index("rt_rollbacks_queue", "route", "open", "seq"),
                  Index("rt_rollbacks_expiry", "open", "expires_at"))

#: every execution a rollback covers (its original and its cascade steps)
records = Table("rt_records", metadata,
                Column("record", String(64), primary_key=True),
                Column("rollback", String(64), primary_key=True),
                Column("seq", BigInteger, nullable=False))

#: gate decisions that wait for approval (removed once used, denied, cancelled or expired)
pending = Table("rt_pending", metadata,
                Column("id", String(64), primary_key=True),
                Column("seq", BigInteger, nullable=False),
                Column("workflow", String(256), nullable=True),
                Column("expires_at", String(32), nullable=True),
                Index("rt_pending_expiry", "expires_at"))

#: gate decisions claimed for their execution (``claim_execution``, the adapters' claims) whose
#: execution no entry records yet: in doubt once their worker should have reported
#: (``Runtime.claims_in_doubt``); removed by an execution of the decision or by the claim's
#: abandonment (``Runtime.abandon_claim``)
claims = Table("rt_claims", metadata,
               Column("id", String(64), primary_key=True),  # the decision
               Column("seq", BigInteger, nullable=False),  # its first claim's entry
               Column("workflow", String(256), nullable=True),
               Column("claimed_by", String(256), nullable=True),  # the latest claim's principal
               Column("claimed_at", String(32), nullable=False),  # the first claim's time
               Column("last_at", String(32), nullable=False),  # the latest claim's time
               Column("turns", Integer, nullable=False),  # claims recorded (an adapter's turns: several)
               Column("claim_id", String(64), nullable=False),  # the first claim's entry id
               Index("rt_claims_age", "claimed_at"))

TABLES = (workflows, rollbacks, records, pending, claims)
#: the entries appended beside the runtime, to fold in (the ledger's table: ``Ledger.append_many``)
MARKS = lschema.unprojected
_FIRST_MARK = "SELECT seq FROM ledger_unprojected ORDER BY seq LIMIT 1"
CLOSED = frozenset({"denied", "expired", "cancelled", "verified"})


def create(c: Connection) -> None:
    metadata.create_all(c, checkfirst=True)


def outdated(c: Connection) -> list[str]:
    """The projection tables the database lacks, or holds with fewer columns than this
    version's (a column added since: ``rt_rollbacks.lapses_at``, ``rt_rollbacks.policy_hash``): one
    catalog read."""
    from sqlalchemy import inspect

    insp = inspect(c)
    have = set(insp.get_table_names())
    out = []
    for t in TABLES:
        if t.name not in have:
            out.append(t.name)
        elif {col.name for col in t.columns} - {col["name"] for col in insp.get_columns(t.name)}:
            out.append(t.name)
    return out


def ensure(c: Connection, fetch) -> list[str]:
    """Make the projections current, inside the caller's write transaction (the append
    lock): missing tables are made; a table of an older version (a column missing) is
    dropped and every projection is rebuilt from the log (they are caches: nothing is
    lost). The ledger is told that a runtime keeps projections of it (the ``ledger_meta``
    row ``projections``; ``ledger_unprojected`` made if an older ledger lacks it), so that
    from then on an entry appended beside the runtime is listed for :func:`catch_up`; the
    first time, the projections are rebuilt (what was appended beside a runtime before was
    not listed). Returns the tables made or remade; nothing to do is one catalog read, one
    row read and the (empty) list of entries to fold in, no DDL."""
    stale = outdated(c)
    if not _exists(c, MARKS.name):
        MARKS.create(c, checkfirst=True)
        stale.append(MARKS.name)
    flagged = c.execute(select(lschema.meta.c.value).where(lschema.meta.c.name == "projections")).first()
    if flagged is None:
        c.execute(insert(lschema.meta).values(name="projections", value="1"))
    if not stale and flagged is not None:
        catch_up(c, fetch)
        return []
    for t in TABLES:
        if t.name in stale and _exists(c, t.name):
            t.drop(c)
    rebuild(c, fetch)  # (makes them; on a new ledger, one read of an empty log)
    return stale


def lagging(c: Connection) -> bool:
    """Whether an entry appended beside the runtime waits to be folded in (one indexed read)."""
    return c.exec_driver_sql(_FIRST_MARK).first() is not None


def catch_up(c: Connection, fetch, batch: int = 5000) -> int:
    """Fold into the projections the entries appended beside the runtime
    (``ledger_unprojected``), inside the caller's write transaction (the append lock), and
    clear that list; returns how many. They are folded in order when they are the log's last
    entries (nothing the runtime appended after them); else (a runtime entry landed after
    one of them, and the folds are order-sensitive) every projection is rebuilt from the log."""
    first = c.info.get(UNPROJECTED, _UNREAD)  # (read with the head row by the ledger's write: no statement)
    if first is _UNREAD:
        first = c.exec_driver_sql(_FIRST_MARK).scalar()
    if first is None:
        return 0
    n = c.execute(select(func.count()).select_from(MARKS)).scalar_one()
    size = c.execute(select(lschema.heads.c.size).where(lschema.heads.c.log == lschema.LOG)).scalar_one()
    c.info[UNPROJECTED] = None  # (folded in below: a second call in this transaction finds nothing)
    if size - first != n:  # not the log's tail
        rebuild(c, fetch)
        return n
    E = lschema.entries
    after = first - 1
    folds = StepFolds(fetch)
    while True:
        chunk = fetch(c, E.c.seq > after, limit=batch)
        if not chunk:
            break
        for e in chunk:
            apply(c, e, folds)
        after = chunk[-1].seq
    c.execute(delete(MARKS))
    return n


def _exists(c: Connection, name: str) -> bool:
    from sqlalchemy import inspect

    return bool(inspect(c).has_table(name))


def apply(c: Connection, e: Any, folds: StepFolds | None = None) -> None:
    """Fold one entry into the projections (what ``Ledger.transact`` calls per new entry).

    A step's rollback row: ``folds`` (:func:`catch_up`, :func:`rebuild`: entries another writer
    may have made) folds the rollback's steps from the record, as ``Runtime.authorization``
    does; without it (the runtime's own step, whose ``status_after`` that fold made under the
    append lock) the step's ``status_after`` is taken."""
    k = e.kind
    if k == "decision":  # (the gate's: its top-level keys known, no body parsed, see Entry.top)
        pu = e.top("pending_until")
        if pu is not None:
            c.execute(insert(pending).values(id=e.id, seq=e.seq, workflow=e.workflow, expires_at=pu))
        return
    # (every value read from a body is checked to fit its column: an entry appended beside the
    # runtime, by `stopline ledger append` or another program, may hold anything the ledger takes,
    # and a fold that raised on it would stop every runtime and server on the ledger for good)
    b = e.body
    if k == "stop":
        _set_workflow(c, e.workflow, "stopped", _fit(b.get("trigger"), 256), e.id,
                      _fit(b.get("stopped_at"), 32) or e.time, e.seq)
    elif k == "resume":
        if b.get("allowed") is True:
            _set_workflow(c, e.workflow, "running", None, None, _fit(b.get("resumed_at"), 32) or e.time, e.seq)
    elif k == "execution":
        d = _fit(b.get("decision"), 64)
        if d is not None and b.get("authorized"):
            c.execute(delete(pending).where(pending.c.id == d))
        if isinstance(d, str):  # its execution reported, authorized or not: no longer in doubt
            c.execute(delete(claims).where(claims.c.id == d))
    elif k == "rollback":
        plan = b.get("plan") if isinstance(b.get("plan"), dict) else {}
        original = _fit(b.get("original"), 64) or e.links[0]
        c.execute(insert(rollbacks).values(
            id=e.id, seq=e.seq, route=_fit(b.get("route"), 256), workflow=e.workflow,
            scenario=_shown_as(b["scenario"]), original=original, requested_by=_shown_as(b["requested_by"]),
            requested_at=_fit(b.get("requested_at"), 32) or e.time, deadline=_norm(plan.get("reversible_until")),
            expires_at=_fit(b.get("pending_until"), 32), status="pending", open=1, claimed_by=None,
            lapses_at=None, policy_hash=_text(plan.get("policy_hash"))))
        if folds is not None:  # (its steps come after it: none to read back)
            folds.begin(e)
        cascade = b.get("cascade") if isinstance(b.get("cascade"), list) else []
        recs = [original, *(r for r in cascade if _fit(r, 64) is not None)]
        if recs:
            c.execute(insert(records), [{"record": r, "rollback": e.id, "seq": e.seq} for r in dict.fromkeys(recs)])
    elif k == "step" and folds is not None:
        to = folds.after(c, e)
        if to is not None:
            c.execute(update(rollbacks).where(rollbacks.c.id == e.links[0]).values(
                status=to, open=0 if to in CLOSED else 1))
    elif k in ("approval", "transition", "step"):
        to = _fit(b.get("status_after") if k != "transition" else b.get("to"), 16)
        subj = _fit(b.get("subject") if k != "step" else e.links[0], 64)
        if to is None or subj is None:
            return
        if k == "step" and b.get("authorized") is False:
            # an unauthorized step starts nothing and changes no status: the row stays as its last
            # authorization left it (its `status_after`, judged under the policy version deciding
            # then, would pin a stale row as `pending` under every version, its own included)
            return
        if k == "approval" and b.get("subject_kind") == "decision":  # a gate approval: no rollback row
            if to in ("denied", "expired", "cancelled"):
                c.execute(delete(pending).where(pending.c.id == subj))
            return
        if k == "transition" and to == "claimed":
            if "claim" in b:  # a decision claimed for its execution: in use, no longer waiting (nor expiring)
                c.execute(delete(pending).where(pending.c.id == subj))
                at = _norm(b.get("at")) or _norm(e.time) or ""
                who = _fit(b.get("principal"), 256)
                if c.execute(update(claims).where(claims.c.id == subj).values(
                        claimed_by=who, last_at=at, turns=claims.c.turns + 1)).rowcount == 0:
                    c.execute(insert(claims).values(id=subj, seq=e.seq, workflow=e.workflow,
                                                    claimed_by=who, claimed_at=at, last_at=at,
                                                    turns=1, claim_id=e.id))
                return
            c.execute(update(rollbacks).where(rollbacks.c.id == subj).values(claimed_by=_fit(b.get("principal"), 256)))
            return
        if k == "transition" and "abandons" in b:  # a claim given up (the action did not run)
            c.execute(delete(claims).where(claims.c.id == subj))
        vals: dict[str, Any] = dict(status=to, open=0 if to in CLOSED else 1)
        if k == "approval":
            vals["lapses_at"] = _norm(b.get("approved_until")) if to == "approved" else None
        if c.execute(update(rollbacks).where(rollbacks.c.id == subj).values(**vals)).rowcount == 0:
            if to in ("denied", "expired", "cancelled"):
                c.execute(delete(pending).where(pending.c.id == subj))


class StepFolds:
    """Each rollback's steps folded as ``Runtime.authorization`` folds them (``core._subject_status``),
    for a pass over the log in seq order: a rollback's duties and the steps before the one folded
    in are read from the record the first time it is met (kept for ``keep`` rollbacks at most;
    one met again after that is read again, with the same result)."""

    def __init__(self, fetch: Any, keep: int = 20_000) -> None:
        self.fetch, self.keep = fetch, keep
        self.memo: dict[str, tuple[frozenset, dict[str, str], list[bool]]] = {}

    def begin(self, e: Any) -> None:
        """A rollback entry met in the pass: its steps are all after it."""
        if len(self.memo) >= self.keep:
            self.memo.clear()
        self.memo[e.id] = (_duties(e.body), {}, [False])

    def after(self, c: Connection, e: Any) -> str | None:
        """The status of the rollback ``e`` (a step) names after it: its progress once an
        authorized step is recorded (every step of its duties folded in, an unauthorized one
        too: what happened); None while none is (the row stays as its authorization left it),
        or for a step that names no rollback."""
        rid = e.links[0] if e.links else None
        if not isinstance(rid, str):
            return None
        held = self.memo.get(rid)
        if held is None:
            E, L = lschema.entries, lschema.links
            rb = self.fetch(c, E.c.id == rid, E.c.kind == "rollback")
            if not rb:
                return None
            held = (_duties(rb[0].body), {}, [False])
            for s in self.fetch(c, E.c.kind == "step", E.c.seq < e.seq,
                                E.c.seq.in_(select(L.c.from_seq).where(L.c.to_seq == rb[0].seq))):
                _fold(held, s.body)
            if len(self.memo) >= self.keep:
                self.memo.clear()
            self.memo[rid] = held
        _fold(held, e.body)
        duties, latest, started = held
        if not (latest and started[0]):
            return None
        remaining = any(latest.get(d) not in ("completed", "verified") for d in duties)
        if not remaining:
            return "completed" if any(latest[d] == "completed" for d in duties) else "verified"
        return "partial" if "failed" in latest.values() else "in_progress"


def _duties(b: dict) -> frozenset:
    ds = b.get("duties")
    return frozenset(d for d in ds if isinstance(d, str)) if isinstance(ds, list) else frozenset()


def _fold(held: tuple, b: dict) -> None:
    """One step's body into a rollback's (duties, latest per duty, [started]): a verified duty stays verified."""
    duties, latest, started = held
    rec, st = b.get("record"), b.get("status")
    if isinstance(rec, str) and rec in duties and (st == "verified" or latest.get(rec) != "verified"):
        latest[rec] = st
    if b.get("authorized") is True:  # (as `_subject_status` reads it: a step without it started nothing)
        started[0] = True


def _fit(v: Any, n: int) -> str | None:
    """A recorded string that fits a column of ``n`` characters, else None."""
    return v if isinstance(v, str) and len(v) <= n else None


def _shown_as(v: Any) -> str:
    """A required name (a rollback's scenario, its requester) for a column of 256 characters:
    as recorded when it is a string that fits, else its JSON text cut to fit (shown, never judged)."""
    if isinstance(v, str) and len(v) <= 256:
        return v
    import json

    return json.dumps(v, ensure_ascii=False)[:256]


def _text(v: Any) -> str | None:
    """A recorded string that fits its column (anything else: None, never judged)."""
    return v if isinstance(v, str) and len(v) <= 80 else None


def stale_plan(status: Any, plan_hash_policy: Any, engine_hash: str | None) -> bool:
    """Whether an ``approved`` row reads as ``pending`` because another policy version
    decides now (``engine_hash``; None: a runtime without policies, which judges nothing)."""
    return (status == "approved" and engine_hash is not None and plan_hash_policy is not None
            and plan_hash_policy != engine_hash)


def _norm(t: Any) -> Any:
    """An RFC 3339 time in the entries' fixed form (microseconds, ``Z``), so times compare as text."""
    if not isinstance(t, str):
        return None
    try:
        return format_micros(parse_rfc3339(t, allow_space=True))
    except ValueError:
        return None


def _set_workflow(c: Connection, wf: str, status: str, trigger: Any, stop_id: Any, since: Any, seq: int) -> None:
    vals = dict(status=status, trigger=trigger, stop_id=stop_id, since=since, seq=seq)
    if c.execute(update(workflows).where(workflows.c.workflow == wf).values(**vals)).rowcount == 0:
        c.execute(insert(workflows).values(workflow=wf, **vals))


def rebuild(c: Connection, fetch, batch: int = 5000) -> int:
    """Recompute every projection from the log (inside the caller's write transaction)."""
    create(c)
    for t in TABLES:
        c.execute(delete(t))
    if _exists(c, MARKS.name):
        c.execute(delete(MARKS))  # (every entry is folded in below)
    E = lschema.entries
    kinds = ("stop", "resume", "decision", "execution", "rollback", "approval", "transition", "step")
    after, n = -1, 0
    folds = StepFolds(fetch)
    while True:
        chunk = fetch(c, E.c.seq > after, E.c.kind.in_(kinds), limit=batch)
        if not chunk:
            return n
        for e in chunk:
            apply(c, e, folds)
        n += len(chunk)
        after = chunk[-1].seq


def snapshot(c: Connection) -> dict[str, list[tuple]]:
    """Every projection row, sorted (for comparing a live projection with a rebuilt one)."""
    return {t.name: sorted(tuple(r) for r in c.execute(select(t)).all()) for t in TABLES}


def rows(result: Iterable[Any]) -> list[dict]:
    return [dict(r._mapping) for r in result]


def workflows_problem(c: Connection, fetch, batch: int = 5000) -> str | None:
    """What ``rt_workflows`` (the gate's reading of whether a workflow is stopped) says that
    the log does not, or None: each workflow's status folded from its ``stop`` and ``resume``
    entries (the ledger's partial index of them) against its row. The table is a cache that
    no guard protects, and the gate believes it: a deleted or edited row restarts a stopped
    workflow with every entry still verifying. None too when there is nothing to compare (no
    such table). The entries listed in ``ledger_unprojected`` (appended beside the runtime,
    which folds them in before its next read) are left out of the fold, as they are out of
    the row until then (a list edited to name a stop only delays that fold)."""
    if not _exists(c, workflows.name):
        return None
    E = lschema.entries
    unfolded: set[int] = set()
    if _exists(c, MARKS.name):
        unfolded = {r[0] for r in c.execute(select(MARKS.c.seq).where(MARKS.c.seq.in_(
            select(E.c.seq).where(E.c.kind.in_(("stop", "resume"))))))}
    want: dict[str, tuple] = {}
    after = -1
    while True:
        chunk = fetch(c, E.c.kind.in_(("stop", "resume")), E.c.seq > after, limit=batch)
        for e in chunk:
            if e.workflow is None or e.seq in unfolded:
                continue
            b = e.body if isinstance(e.body, dict) else {}
            if e.kind == "stop":
                want[e.workflow] = ("stopped", _fit(b.get("trigger"), 256), e.id, e.seq)  # (as `apply` folds it)
            elif b.get("allowed") is True:
                want[e.workflow] = ("running", None, None, e.seq)
        if len(chunk) < batch:
            break
        after = chunk[-1].seq
    have = {r[0]: tuple(r[1:]) for r in c.execute(select(workflows.c.workflow, workflows.c.status, workflows.c.trigger,
                                                          workflows.c.stop_id, workflows.c.seq))}
    for wf in sorted(set(want) | set(have), key=lambda w: (want.get(w, have.get(w)) or (0,) * 4)[3]):
        w, h = want.get(wf), have.get(wf)
        if w == h:
            continue
        said = "running (it has no row)" if h is None else f"`{h[0]}` (its row names seq {h[3]})"
        told = "no stop" if w is None else (f"stopped by `{w[1]}` at seq {w[3]}" if w[0] == "stopped"
                                            else f"running since the resume at seq {w[3]}")
        return (f"the runtime's projection `rt_workflows` says workflow {json_name(wf)} is {said}, the log says "
                f"{told} (a cache edited beside the ledger: the gate reads it)")
    return None


def json_name(v: str) -> str:
    import json

    return json.dumps(v, ensure_ascii=True)
