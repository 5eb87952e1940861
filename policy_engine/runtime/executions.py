"""The action's path through the runtime: ``gate`` and ``gate_many`` (decide and record,
stopping the workflow when a stop trigger fires), ``executed`` (record that it ran, flagged when
unauthorized) and ``resume`` (restart a stopped workflow)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, overload

from sqlalchemy import bindparam, select

from ..engine.util import canonical_principal
from ..ledger import IdempotencyConflict, InvalidEntry, NewEntry, StateChanged
from ..ledger.canonical import canonical_text
from ..limits import MAX_CLOCK_SKEW_SECONDS
from .core import RuntimeCore
from .gatejson import DIGEST, fail_closed, gate_body, oversize, recordable, repr_sha256
from .recorded import EVIDENCE_DOUBLES, integral_doubles, recorded_action, with_doubles
from .results import (
    E,
    ExecutionResult,
    GateResult,
    L,
    ResumeResult,
    RuntimeUsageError,
    _check_key,
    _digest,
    _name,
    _now,
    _outcome_arg,
    _parse,
    _plain,
    _shown,
    _text_arg,
    _ts,
    _ts_after,
    outcome_of,
)

if TYPE_CHECKING:
    from ..engine import ActionInput, NowInput

def _decided_at(e: Any) -> Any:
    """When decision entry ``e`` was recorded (None when its time cannot be read)."""
    try:
        return _parse(e.time) if isinstance(e.time, str) else None
    except ValueError:
        return None


def _unapproved_when_run(rt: Any, c: Any, eng: Any, subj: Any, ex_at: Any, now_dt: Any) -> str | None:
    """Why a decision approved now did not permit an action that ran at ``ex_at`` (its
    approvals were not satisfied then: an approval given after the action ran does not
    authorize it after the fact), or None. Judged as ``authorization`` judges it, at
    ``ex_at`` plus the clock skew two hosts' clocks may have (the agent's ``executed_at``
    against the clock that recorded the approvals), so the engine counts only the approvals
    dated by then. Only narrows: the caller's ``executed_at`` never makes an execution
    authorized that the decision's status now does not."""
    cut = ex_at + timedelta(seconds=MAX_CLOCK_SKEW_SECONDS)
    if cut >= now_dt:
        return None
    then = rt._subject_status(c, eng, subj, cut)
    if then.status == "approved":
        return None
    return (f"it ran at {_ts(ex_at)}, before its approvals were satisfied (status then: `{then.status}`): "
            "an approval given after the action ran does not authorize it")


def _names(values: Iterable[Any]) -> list:
    """The principals named by ``values`` (strings, or lists of them), each once, in order;
    anything else is kept as given (a `distinct from` then cannot resolve it: the plan is refused)."""
    out: list = []
    for v in values:
        for n in (v if isinstance(v, list) else [v]):
            if n is not None and n != "" and n not in out:
                out.append(n)
    return out


def _recorded_for_retry(body: Any) -> Any:
    try:
        return recorded_action(body)
    except ValueError:  # a malformed `action_doubles`: as recorded (no retry matches it then but itself)
        return body.get("action")


def _same_action(body: Any, action: Any, digest: str | None) -> bool:
    """Whether decision ``body`` records ``action``: the action as :func:`~.gatejson.recordable`
    gives it, with ``digest`` (:func:`~.gatejson.repr_sha256`) when it is recorded by its
    excerpt. An action recorded exactly is the same JSON (:func:`_same_json`); one recorded
    by its excerpt is the same whole ``repr`` (``action_repr_sha256``: two actions that share
    their first 4,096 characters are not the same action). A decision recorded before that
    field (its excerpt only) is compared by its excerpt, as it was; an action recorded
    exactly is never the retry of one recorded by its excerpt, nor the reverse."""
    if "action_error" not in body:
        return digest is None and _same_json(_recorded_for_retry(body), action, "action_doubles" not in body)
    if digest is None:
        return False
    if DIGEST in body:
        return body[DIGEST] == digest
    return body.get("action") == action  # (recorded before the digest: all there is to compare)


def _same_json(x: Any, y: Any, numbers_alike: bool) -> bool:
    """``x == y`` for JSON values with their types: a bool is not a number (``True == 1`` in
    Python); with ``numbers_alike`` (a record from before ``action_doubles``, whose integral
    floats read back as ints) an int and a float of the same value are the same."""
    if isinstance(x, dict):
        return isinstance(y, dict) and x.keys() == y.keys() and all(_same_json(x[k], y[k], numbers_alike)
                                                                    for k in x)
    if isinstance(x, list):
        return isinstance(y, list) and len(x) == len(y) and all(_same_json(a, b, numbers_alike)
                                                                for a, b in zip(x, y, strict=True))
    if isinstance(x, bool) or isinstance(y, bool):
        return type(x) is type(y) and x == y
    if numbers_alike and isinstance(x, (int, float)) and isinstance(y, (int, float)):
        return x == y
    return type(x) is type(y) and x == y


def _same_execution(e: Any, decision_id: str | None, action: Any, receipt: Any = None,
                    caused_by: Any = None, reporter: str | None = None, outcome: str = "succeeded",
                    error: str | None = None) -> str | None:
    """Why entry ``e`` (holding an execution's idempotency key) is not the execution a retry
    of ``executed(decision_id, receipt=receipt, caused_by=caused_by, action=action)`` would
    record, or None when it is: an execution of the same decision (without one, of the same
    action) with the same receipt, the same ``caused_by`` and the same outcome and error (a
    retry reports the same run; another receipt, or "failed" for what was reported succeeded,
    under a used key is another report, never silently the old one). The outcome compared is
    the one recorded in the body (an entry without one: succeeded), so a retry of a report of
    before ``outcome`` is answered as it was."""
    if e.kind != "execution":
        return "another kind of entry"
    if e.body.get("decision") != decision_id:
        return "another decision" if decision_id is not None else "another action"
    try:
        if decision_id is None and canonical_text(e.body.get("action")) != canonical_text(
                _plain(action) if action is not None else {}):
            return "another action"
        if receipt is not None and canonical_text(e.body.get("receipt")) != canonical_text(_plain(receipt)):
            return "another receipt"
    except InvalidEntry:  # (a value the ledger cannot hold was never recorded)
        return "another action or receipt"
    if e.body.get("caused_by") != caused_by:
        return "another `caused_by`"
    if e.body.get("reporter") != reporter:  # (a key belongs to who reported: as a gate's to its caller)
        return "another reporter"
    if e.body.get("outcome", "succeeded") != outcome:
        return f"another outcome (it was recorded {e.body.get('outcome', 'succeeded')})"
    if e.body.get("error") != error:
        return "another error"
    return None


def _not_a_retry(e: Any, key: str | None, action: Any, caller: str | None, digest: str | None = None) -> None:
    """Raise :class:`IdempotencyConflict` unless entry ``e`` (holding ``key``) is the decision a
    retry of gating ``action`` (as :func:`~.gatejson.recordable` gives it) by ``caller`` would
    record: a decision of the same action (the same JSON, types included: ``true`` is not ``1``,
    and, where the record says where its integral floats were, ``7.0`` is not ``7``: the engine
    decides them differently; for one recorded by its excerpt, the same ``digest``:
    :func:`_same_action`), asked by the same caller (None included: a key is its caller's,
    as a composite key of client and key would make it; another's retry is not answered with
    their decision, and the record keeps naming who asked)."""
    if e.kind != "decision" or not _same_action(e.body, action, digest):
        raise IdempotencyConflict(f"the idempotency key `{key}` was used by entry {e.seq} (`{e.kind}`) "
                                  "for another action")
    if e.body.get("caller") != caller:
        raise IdempotencyConflict(f"the idempotency key `{key}` was used by entry {e.seq} (`{e.kind}`) "
                                  "for another caller")


def _per_action(values: Any, n: int, name: str) -> list:
    """``values`` (None: none for each) as a list of one per action of a batch of ``n``."""
    if values is None:
        return [None] * n
    if isinstance(values, (str, bytes, dict)) or not isinstance(values, Iterable):
        raise RuntimeUsageError(f"`{name}` is a list of one per action (None for none), not {_shown(values)}")
    out = list(values)
    if len(out) != n:
        raise RuntimeUsageError(f"`{name}` gives one per action (None for none): {len(out)} for {n} actions; "
                                "nothing was recorded")
    return out


#: a workflow's first stop after a sequence number (the ledger's partial index of stops and resumes)
_STOP_AFTER = (select(E).where(E.c.workflow == bindparam("wf"), E.c.kind.in_(("stop", "resume")),
                               E.c.kind == "stop", E.c.seq > bindparam("seq")).order_by(E.c.seq).limit(1))

#: the stops linked to any of some entries (by ``seq``), in ``seq`` order
_STOPS_OF = (select(E).where(E.c.kind == "stop", E.c.seq.in_(
    select(L.c.from_seq).where(L.c.to_seq.in_(bindparam("seqs", expanding=True))))).order_by(E.c.seq))
_STOPS_CHUNK = 500  # entries per read of their stops (SQLite's bound parameters are finite)

_GATE_RETRIES = 100  # reads of a workflow's state before a gate gives up (it changes only by stop/resume)


class Executions(RuntimeCore):
    """The executions part of :class:`~policy_engine.runtime.runtime.Runtime`."""

    # ------------------------------------------------------------------ gate
    #: one statement, one snapshot: the log's size, the workflow's projection row, the key's entry
    #: (and whether an entry appended beside the runtime waits to be folded into the projections)
    _GATE_READ = ("SELECT h.size, w.status, w.trigger, w.since, w.stop_id, w.seq, "
                  "(SELECT e.id FROM ledger_entries e WHERE e.key = ?), "
                  "(SELECT u.seq FROM ledger_unprojected u LIMIT 1) "
                  "FROM ledger_heads h LEFT JOIN rt_workflows w ON w.workflow = ? WHERE h.log = 1")
    _SQL_PENDING = ("INSERT INTO rt_pending (id, seq, workflow, expires_at) "
                    "SELECT id, seq, workflow, ? FROM ledger_entries WHERE id = ?")
    _SQL_STOP_UPDATE = ("UPDATE rt_workflows SET status = 'stopped', trigger = ?, stop_id = ?, since = ?, "
                        "seq = (SELECT seq FROM ledger_entries WHERE id = ?) "
                        "WHERE workflow = ? AND EXISTS (SELECT 1 FROM ledger_entries WHERE id = ?)")
    _SQL_STOP_INSERT = ("INSERT INTO rt_workflows (workflow, status, trigger, stop_id, since, seq) "
                        "SELECT ?, 'stopped', ?, id, ?, seq FROM ledger_entries "
                        "WHERE id = ? AND NOT EXISTS (SELECT 1 FROM rt_workflows WHERE workflow = ?)")

    def gate(self, action: ActionInput, *, now: NowInput = None, key: str | None = None,
             caller: str | None = None) -> GateResult:
        """Evaluate ``action`` with the workflow state the ledger holds, record the decision,
        and, when a stop trigger fires, stop the workflow in the ledger (same transaction).

        The state is read with the log's size in one snapshot; the decision is appended
        *fenced* on that size (no ``stop`` or ``resume`` of the workflow since), through the
        ledger's group commit, with its projection rows in the same transaction. If the
        workflow was stopped or resumed in between, the gate reads and evaluates again, so
        a decision is always recorded under the state the log holds at its position. The
        state this runtime last saw of a workflow (and the seq after its last decision) is
        kept and used first: the fence proves it still holds, so a gate of a workflow that
        did not change costs no read (another process's stop or resume fails the fence).

        ``key``: a retried request with a used key gets the recorded decision back (whatever
        its ``now``), nothing recorded; a key used for another action (or by another kind of
        entry) raises :class:`~policy_engine.ledger.IdempotencyConflict`; a key the ledger
        cannot store (not a string of 1-256 characters, a lone surrogate) raises
        :class:`~policy_engine.ledger.InvalidEntry` before anything is read or recorded.

        ``caller``: the principal that asked (the server's authenticated caller), recorded as
        the body's ``caller``; None records no such field (the body of before). A keyed retry
        is the same request only from the same caller (None included): from another, the key
        is not theirs, and :class:`~policy_engine.ledger.IdempotencyConflict` is raised (the
        record is never attributed to, nor its decision handed to, a caller it does not name).
        A caller that is not a name the ledger can hold is a :class:`RuntimeUsageError`.

        An action the ledger cannot record exactly (a NaN or an Infinity, an integer beyond
        ±2^53-1, a lone surrogate in any string, a value that is not JSON) is recorded as its
        ``repr`` with ``action_error`` naming the problem, and with a decision that permits
        nothing: the engine's ``allow`` or ``require_approval`` becomes a deny naming the
        problem (deciding ``error``/``unrecordable action``); its deny or stop stays (a stop
        trigger still stops the workflow). A workflow name the ledger cannot store is
        recorded as none."""
        _check_key(key)
        _text_arg(caller, "caller", optional=True)
        eng = self.engine
        now_dt = _now(now)
        a = _plain(action)
        wf = _name(a.get("workflow")) if isinstance(a, dict) else None
        # checked once; its text goes into the body. An action the ledger cannot record exactly is
        # recorded as text with the problem, and only with a decision that permits nothing
        action_text, recorded_action, problem = recordable(a)
        # an action recorded by its excerpt: the digest of the whole, which a keyed retry is compared by
        digest = repr_sha256(a) if problem is not None else None
        # where its integral floats are, which the record reads back as ints (`recorded.py`)
        doubles = integral_doubles(a) if action_text is not None else None
        known = self._wf_seen.get(wf) if key is None else None
        if known is None and key is None and wf is None:
            known = (0, None)  # no workflow: no state to read, nothing to fence
        for _ in range(_GATE_RETRIES):
            if known is not None:
                size, row = known
                known = None
            else:
                snap = self.ledger.query_one(self._GATE_READ, (key, wf))
                assert snap is not None
                size, status, trigger, since, stop_id, wseq, used, lag = snap
                if lag is not None:  # appended beside the runtime (a stop by `stopline ledger append`)
                    self._sync()
                    snap = self.ledger.query_one(self._GATE_READ, (key, wf))
                    assert snap is not None
                    size, status, trigger, since, stop_id, wseq, used, lag = snap
                if used is not None:
                    return self._gate_replay(used, key, recorded_action, caller, digest)
                row = (status, trigger, since, stop_id, wseq) if status == "stopped" else None
            d = fail_closed(eng.evaluate(a, self._state(wf, row), now_dt), problem)
            now_s = _ts(now_dt)
            pending = _ts_after(now_dt, self.decision_ttl) if d.effect == "require_approval" else None
            # the decision of a template: its canonical text without the generic encoder (gatejson)
            body = with_doubles(gate_body(action_text, recorded_action, problem, d, now_s, pending, caller, digest),
                                action_text, doubles)
            decision_json = body["decision"] if isinstance(body, dict) else None
            items = [NewEntry("decision", body, workflow=wf, key=key, time=now_dt)]
            stop = None
            if d.effect == "stop" and d.deciding.kind == "stop" and wf is not None:
                s = d.stop
                stop = {"trigger": d.deciding.name, "decision": 0, "stopped_at": _ts(now_dt),
                        "severity": s.severity if s else None, "owner": s.owner if s else None,
                        "notify": list(s.notify) if s else [],
                        "resume_criteria": list(s.resume_criteria) if s else []}
                items.append(NewEntry("stop", stop, workflow=wf, links=[0], time=now_dt))

            def then(ids: list[str], pending=pending, stop=stop) -> list[tuple[str, tuple]]:
                out: list[tuple[str, tuple]] = []
                if pending is not None:
                    out.append((self._SQL_PENDING, (pending, ids[0])))
                if stop is not None:
                    t = stop["stopped_at"]
                    out.append((self._SQL_STOP_UPDATE, (stop["trigger"], ids[1], t, ids[1], wf, ids[1])))
                    out.append((self._SQL_STOP_INSERT, (wf, stop["trigger"], t, ids[1], wf)))
                return out

            try:
                entries = self.ledger.append_many(items, fence=(wf, size) if wf is not None else None, then=then,
                                                  projected=True)
            except StateChanged:
                self._wf_seen.pop(wf, None)
                continue  # stopped or resumed since the read: evaluate again
            except (IdempotencyConflict, InvalidEntry):
                if key is None:
                    raise
                snap = self.ledger.query_one(self._GATE_READ, (key, wf))
                if snap is None or snap[6] is None:
                    raise
                return self._gate_replay(snap[6], key, recorded_action, caller, digest)
            if key is not None:
                if decision_json is None:
                    decision_json = d.model_dump(mode="json")
                if entries[0].body.get("decision") != decision_json:
                    return self._gate_replay(entries[0].id, key, recorded_action, caller, digest)
            made = next((e for e in entries if e.kind == "stop"), None)
            if wf is not None and made is None and key is None:
                if len(self._wf_seen) >= 10_000:
                    self._wf_seen.clear()
                self._wf_seen[wf] = (entries[-1].seq + 1, row)  # the state still holds after our decision
            elif wf is not None:
                self._wf_seen.pop(wf, None)
            stopped = made is not None or row is not None
            return GateResult(entries[0].id, d, made is not None, made.id if made else None,
                              "stopped" if stopped else "running")
        raise RuntimeUsageError(f"workflow `{wf}` kept changing state: the gate gave up after {_GATE_RETRIES} reads")

    def _gate_replay(self, entry_id: str, key: str | None, action: Any, caller: str | None,
                     digest: str | None) -> GateResult:
        """A gate whose key was used: the recorded decision, if it is a decision of the same action
        by the same caller (:func:`_not_a_retry`)."""
        e = self.ledger.get(entry_id)
        _not_a_retry(e, key, action, caller, digest)
        with self.ledger.reading() as c:
            return self._replayed(c, e, self._wf_row(c, e.workflow))

    def _replayed(self, c: Any, e: Any, row: tuple | None, stop_id: Any = False) -> GateResult:
        """The answer to a retry of decision entry ``e``: its decision, its stop (if it fired
        one: ``stop_id``, read here unless given, None for none), the workflow's state ``row``
        (None: running)."""
        from ..models import Decision

        d = Decision.model_validate(e.body["decision"])
        if stop_id is False:
            stops = self._linked(c, e, ("stop",))
            stop_id = stops[0].id if stops else None
        return GateResult(e.id, d, stop_id is not None, stop_id, "stopped" if row is not None else "running",
                          replayed=True)

    def _stops_of(self, c: Any, decisions: list) -> dict[str, str]:
        """Decision entry id -> the id of the first stop it fired, for every entry of
        ``decisions`` that fired one (what ``_linked(c, e, ("stop",))`` gives each): one read
        per ``_STOPS_CHUNK`` entries, not one per entry (a 1,000-item batch retried whole)."""
        out: dict[str, str] = {}
        seqs = sorted({e.seq for e in decisions})
        for i in range(0, len(seqs), _STOPS_CHUNK):
            chunk = seqs[i:i + _STOPS_CHUNK]
            for s in self.ledger.fetch_prepared(c, _STOPS_OF, {"seqs": chunk}):
                for d in s.links:  # (in seq order: the first stop of each decision kept)
                    out.setdefault(d, s.id)
        return out

    @overload
    def gate_many(self, actions: Iterable[ActionInput], *, now: NowInput = None,
                  keys: Sequence[str | None] | None = None, caller: str | Sequence[str | None] | None = None,
                  conflicts: Literal["raise"] = "raise") -> list[GateResult]: ...

    @overload
    def gate_many(self, actions: Iterable[ActionInput], *, now: NowInput = None,
                  keys: Sequence[str | None] | None = None, caller: str | Sequence[str | None] | None = None,
                  conflicts: Literal["return"]) -> list[GateResult | IdempotencyConflict]: ...

    def gate_many(self, actions: Iterable[ActionInput], *, now: NowInput = None,
                  keys: Sequence[str | None] | None = None,
                  caller: str | Sequence[str | None] | None = None, conflicts: str = "raise") -> list[Any]:
        """Gate a batch in one transaction (one lock, one commit, one fsync): each action
        evaluated with the ledger's state *as the batch leaves it* (a stop fired by one
        stops the later ones of its workflow). All recorded or none. An action the ledger
        cannot record exactly is recorded and denied as in :meth:`gate`. For runtimes that
        gate many actions at once (a queue consumer, an import): the commit, not the
        evaluation, bounds a single gate's rate on a durable disk.

        ``keys``: an idempotency key per action (None: that action has none), as :meth:`gate`
        takes one, so a retried batch records nothing twice. A used key gets its recorded
        decision back (``replayed``), nothing recorded, and still counts where the batch
        leaves its workflow (a replayed stop stops the later actions of its workflow: the
        stop is in the ledger). A key used for another action, by another caller or by
        another kind of entry raises :class:`~policy_engine.ledger.IdempotencyConflict` and
        the *whole* batch records nothing. One key twice in a batch is the same request
        twice (a queue that delivered a message twice): the same action from the same caller
        is decided and recorded once, the later one answered with that decision
        (``replayed``); anything else under it is a conflict. Every key is checked
        (:class:`~policy_engine.ledger.InvalidEntry`) before anything is read or recorded.

        ``conflicts``: ``"raise"`` (the default: as above, the whole batch refused) or
        ``"return"``: a conflicting action's place in the list holds its
        :class:`~policy_engine.ledger.IdempotencyConflict` (returned, not raised), and the
        others are decided and recorded in the same transaction, as if that action had not
        been in the batch (it decides nothing, stops nothing); under a key given twice the
        first is recorded and a later one for another request is the conflict (the server's
        recorder: a keyed request that is not a retry costs its own answer only).

        ``caller``: the principal that asked, for every action (a string) or per action (a
        list parallel to ``actions``, None for none: the server's recorder groups requests
        of several callers into one batch); recorded as in :meth:`gate`."""
        if conflicts not in ("raise", "return"):
            raise RuntimeUsageError(f'`conflicts` is "raise" or "return", not {_shown(conflicts)}')
        eng = self.engine
        now_dt = _now(now)
        acts = [_plain(a) for a in actions]
        ks = _per_action(keys, len(acts), "keys")
        for k in ks:
            _check_key(k)
        callers = [caller] * len(acts) if caller is None or isinstance(caller, str) else \
            _per_action(caller, len(acts), "caller")
        for who in callers:
            _text_arg(who, "caller", optional=True)
        checked = [recordable(a) for a in acts]  # (text, as recorded, problem), once: the build may run again
        doubles = [integral_doubles(a) if c[0] is not None else None for a, c in zip(acts, checked)]
        digests = [repr_sha256(a) if c[2] is not None else None for a, c in zip(acts, checked)]
        wanted = sorted({k for k in ks if k is not None})
        #: per action: ("new", its decision's item, Decision, stopped before it, its stop's item or None),
        #: ("old", the entry of a used key, its workflow's row), ("twin", the earlier action of its key,
        #: status) or ("conflict", its IdempotencyConflict: with conflicts="return" only)
        plan: list[tuple] = []
        now_s = _ts(now_dt)

        def build(c):
            plan.clear()
            rows: dict[str | None, tuple | None] = {}
            items: list[NewEntry] = []
            used = {e.key: e for e in self.ledger.fetch(c, E.c.key.in_(wanted))} if wanted else {}
            first: dict[str, int] = {}  # a key -> the action of this batch that holds it
            for i, a in enumerate(acts):
                text, recorded, problem = checked[i]
                k = ks[i]
                if k is not None and k in used:  # a retry: the recorded decision, as `gate` answers it
                    e = used[k]
                    try:
                        _not_a_retry(e, k, recorded, callers[i], digests[i])
                    except IdempotencyConflict as err:
                        if conflicts == "raise":
                            raise
                        plan.append(("conflict", err))
                        continue
                    if e.workflow not in rows:
                        rows[e.workflow] = self._wf_row(c, e.workflow)
                    plan.append(("old", e, rows[e.workflow]))  # (its stop read below, with the others')
                    continue
                wf = _name(a.get("workflow")) if isinstance(a, dict) else None
                if wf not in rows:
                    rows[wf] = self._wf_row(c, wf)
                if k is not None and k in first:  # the same request twice in the batch
                    j = first[k]
                    if (text, digests[i], doubles[i], callers[i]) != (checked[j][0], digests[j], doubles[j],
                                                                      callers[j]):
                        twice = IdempotencyConflict(f"the idempotency key `{k}` is given twice in the batch (actions "
                                                    f"{j} and {i}) for another action or by another caller")
                        if conflicts == "raise":
                            raise twice
                        plan.append(("conflict", twice))
                        continue
                    plan.append(("twin", j, "stopped" if rows[wf] is not None else "running"))
                    continue
                if k is not None:
                    first[k] = i
                d = eng.evaluate(a, self._state(wf, rows[wf]), now_dt)
                d = fail_closed(d, problem)  # as in gate: an action recorded as text permits nothing
                was_stopped = rows[wf] is not None
                pending = _ts_after(now_dt, self.decision_ttl) if d.effect == "require_approval" else None
                body = with_doubles(gate_body(text, recorded, problem, d, now_s, pending, callers[i], digests[i]),
                                    text, doubles[i])
                items.append(NewEntry("decision", body, workflow=wf, key=k, time=now_dt))
                at = len(items) - 1
                stop_at = None
                if d.effect == "stop" and d.deciding.kind == "stop" and wf is not None:
                    s = d.stop
                    items.append(NewEntry("stop", {"trigger": d.deciding.name, "decision": at,
                                                   "stopped_at": _ts(now_dt),
                                                   "severity": s.severity if s else None,
                                                   "owner": s.owner if s else None,
                                                   "notify": list(s.notify) if s else [],
                                                   "resume_criteria": list(s.resume_criteria) if s else []},
                                          workflow=wf, links=[at], time=now_dt))
                    stop_at = len(items) - 1
                    rows[wf] = ("stopped", d.deciding.name, _ts(now_dt), None, -1)
                plan.append(("new", at, d, was_stopped, stop_at))
            olds = [p[1] for p in plan if p[0] == "old"]
            if olds:  # the replayed decisions' stops: one read for all (was: one per replayed action)
                stops = self._stops_of(c, olds)
                plan[:] = [("old", self._replayed(c, p[1], p[2], stops.get(p[1].id))) if p[0] == "old" else p
                           for p in plan]
            return items

        entries = self._transact(build)
        out: list[Any] = []
        for p in plan:
            if p[0] in ("old", "conflict"):
                out.append(p[1])
            elif p[0] == "twin":
                g = out[p[1]]
                out.append(GateResult(g.decision_id, g.decision, g.stopped, g.stop_id, p[2], replayed=True))
            else:
                _, at, d, was_stopped, stop_at = p
                fired = stop_at is not None
                out.append(GateResult(entries[at].id, d, fired, entries[stop_at].id if fired else None,
                                      "stopped" if fired or was_stopped else "running"))
        return out

    # ------------------------------------------------------------------ executions
    def executed(self, decision_id: str | None, *, receipt: dict, caused_by: str | None = None,
                 action: dict | None = None, executed_at: Any = None, now: Any = None,
                 key: str | None = None, reporter: str | None = None, outcome: str = "succeeded",
                 error: str | None = None) -> ExecutionResult:
        """Record that an action ran. Always recorded (the ledger records what happened);
        flagged ``unauthorized`` without a permitting decision (not allowed, approvals not
        satisfied, already used, the workflow stopped after the decision), and
        ``receipt_incomplete`` with each declared receipt field it lacks.

        ``key``: a retry with a used key gets the recorded execution back, nothing recorded,
        when that entry is an execution of the same decision (without a decision: of the same
        ``action``); a key used by another kind of entry or for another decision raises
        :class:`~policy_engine.ledger.IdempotencyConflict`, as ``gate`` does.

        ``reporter``: who reports it (the server passes the authenticated caller), recorded in
        the entry's body; when the decision's one use was claimed (:meth:`claim_execution`) by
        another principal, the execution is flagged ``unauthorized``: the claim reserved the
        use for its holder. A keyed retry by another reporter is a conflict.

        ``outcome``: ``"succeeded"`` (the default) or ``"failed"``: it ran and failed (a tool
        that raised, a call that answered an error); ``error`` (with ``"failed"`` only, at most
        ``MAX_EXECUTION_ERROR`` characters) says with what. A failed execution is recorded with
        ``outcome`` and ``error`` in its body (a succeeded one as before, without them); it is an
        execution like any other (authorized or flagged alike, its decision used, rolled back
        like any other: it may have had part of its effect), except that it is not flagged
        ``receipt_incomplete``: the fields it never produced are still listed in
        ``missing_receipt``. A keyed retry with another outcome or error is a conflict. Checked
        before anything is read or written."""
        if not isinstance(receipt, dict):
            raise RuntimeUsageError("`receipt` is a JSON object")
        big = oversize(receipt)
        if big is not None:  # (the ledger would keep it whole)
            raise RuntimeUsageError(f"the receipt is beyond the input limits: {big}; nothing was recorded")
        outcome, error = _outcome_arg(outcome, error)
        _check_key(key)
        _text_arg(reporter, "reporter", optional=True)
        eng, now_dt = self.engine, _now(now)
        ex_at = _now(executed_at) if executed_at is not None else now_dt
        if (ex_at - now_dt).total_seconds() > MAX_CLOCK_SKEW_SECONDS:  # (its reversal window would start later)
            raise RuntimeUsageError(f"`executed_at` {_ts(ex_at)} is more than {MAX_CLOCK_SKEW_SECONDS} s after now "
                                    f"({_ts(now_dt)}): a time an action ran at cannot be in the future; nothing "
                                    "was recorded")
        out: dict[str, Any] = {}

        def build(c):
            if key is not None:
                old = self.ledger.fetch(c, E.c.key == key)
                if old:
                    other = _same_execution(old[0], decision_id, action, receipt, caused_by, reporter, outcome, error)
                    if other is not None:
                        raise IdempotencyConflict(
                            f"the idempotency key `{key}` was used by entry {old[0].seq} (`{old[0].kind}`) for {other}")
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
                decided = _decided_at(subj)
                if decided is not None and (decided - ex_at).total_seconds() > MAX_CLOCK_SKEW_SECONDS:
                    # no decision permitted it when it ran (within the skew two hosts' clocks may have: the
                    # agent's `executed_at` against the clock that recorded the decision, as for a time after now)
                    reasons.append(f"it ran at {_ts(ex_at)}, more than {MAX_CLOCK_SKEW_SECONDS} s before its decision "
                                   f"was recorded ({_ts(decided)})")
                if st.status == "approved" and st.claim_id is None:
                    early = _unapproved_when_run(self, c, eng, subj, ex_at, now_dt)
                    if early is not None:
                        reasons.append(early)
                if st.status in ("allowed", "approved") and reporter is not None and st.claimed_by is not None \
                        and canonical_principal(reporter) != canonical_principal(st.claimed_by):
                    reasons.append(f"its one use was claimed by {st.claimed_by}; {reporter} reported it")
                if st.status in ("allowed", "approved") and wf is not None:
                    # stopped after the decision: even when resumed since, the decision was made before
                    # the failure the stop names (and any resume's review): gate the action again
                    # claimed (`claim_execution`): the claim was its use, checked against the stops
                    # recorded before it; a stop after the claim came while the action ran
                    later = self.ledger.fetch_prepared(c, _STOP_AFTER, {"wf": wf, "seq": subj.seq})
                    if later and st.claim_id is not None and later[0].seq > self._entry(c, st.claim_id).seq:
                        later = []
                    # (the engine decides, on the action as gated, as `claim_execution` does)
                    if later and not self._runs_while_stopped(eng, subj, later[0], now_dt):
                        b = later[0].body
                        resumed = self._wf_row(c, wf) is None
                        reasons.append(f"workflow `{wf}` was stopped by `{b.get('trigger')}` at "
                                       f"{b.get('stopped_at') or later[0].time}, after the decision"
                                       + (" (resumed since: gate the action again)" if resumed else ""))
                elif st.status == "executed":
                    reasons.append(f"the decision was already used by execution {st.used_by}")
                elif st.status == "refused":
                    reasons.append(f"the decision is `{dec.get('effect')}`")
                elif st.status == "pending":
                    open_ = ", ".join(f"{s.missing} {' or '.join(s.roles)}" for s in st.verdict.open_slots)
                    reasons.append("the approvals are not satisfied" + (f" (open: {open_})" if open_ else ""))
                else:
                    reasons.append(f"the decision is `{st.status}`" + (f": {st.reason}" if st.reason else ""))
                accepted = list(st.verdict.accepted) if st.verdict is not None and st.verdict.accepted else []
                if action is not None:  # what ran must be what was decided (and approved: its digest)
                    given = _plain(action)
                    try:
                        # (as the gate evaluated it: its integral floats back as floats, or 1e20
                        # read back as an int beyond what canonical JSON takes would differ)
                        same = canonical_text(given) == canonical_text(recorded_action(subj.body))
                        big = None if same else recordable(given)[2]  # (bounded: beyond the limits, why)
                        ran: Any = given if big is None else {"unrecordable": big}
                    except (InvalidEntry, ValueError) as e:  # (ValueError: a malformed `action_doubles`)
                        same, ran = False, {"unrecordable": str(e)}
                    if not same:
                        reasons.append("the action executed is not the action decided (another action digest)")
                        out["ran"] = ran
            else:
                act = _plain(action) if action is not None else {}
                if not isinstance(act, dict) or not act.get("type"):
                    raise RuntimeUsageError("an execution without a decision names its `action` (workflow, type)")
                problem = recordable(act)[2]
                if problem is not None:  # (its record would be its only trace: refused, not kept as text)
                    raise InvalidEntry(problem)
                wf, atype = _name(act.get("workflow")), act.get("type")
                reasons.append("no gate decision covers it")
                accepted = []
            declared = tuple(dec.get("receipt") or ()) if dec is not None else ()
            if not declared:
                declared = self._facts(eng, wf, atype)["receipt"] or ()
            missing = tuple(f for f in declared if f not in receipt)
            parent = None
            if caused_by is not None:
                parent = self._entry(c, caused_by, ("execution",))
                if caused_by not in links:
                    links.append(caused_by)
            # (a run that failed never produced its output: what it lacks is listed, not flagged)
            flags = (["unauthorized"] if reasons else []) + (["receipt_incomplete"] if missing and
                                                             outcome == "succeeded" else [])
            body = {"receipt": receipt, "authorized": not reasons, "flags": flags, "reasons": reasons,
                    "missing_receipt": list(missing), "decision": decision_id, "caused_by": caused_by,
                    "type": atype, "action_id": act.get("id") if isinstance(act.get("id"), str) else None,
                    "executed_at": _ts(ex_at), "policy_hash": eng.policy_hash}
            if reporter is not None:  # (who said it ran; without one the body is as before)
                body["reporter"] = reporter
            if outcome == "failed":  # (a succeeded one: the body of before, so every old entry reads alike)
                body["outcome"] = outcome
                if error is not None:
                    body["error"] = error
            # who reviewed and who asked, as a rollback's `distinct from original.reviewer/requester` reads
            # them: the approvers the ledger counted, never replaced by the receipt (the caller's word); a
            # receipt naming someone else adds them (`reviewers`, `requesters`: more are excluded, never fewer)
            rr = receipt.get("reviewer")
            body["reviewer"] = ", ".join(accepted) if accepted else (rr or None)
            body["requester"] = act.get("requested_by") or act.get("requester") or receipt.get("requester")
            for k, names in (("reviewers", _names([*accepted, rr])),
                             ("requesters", _names([act.get("requested_by"), act.get("requester"),
                                                    receipt.get("requester")]))):
                if len(names) > 1:
                    body[k] = names
            if decision_id is None:
                body["action"] = act
            elif "ran" in out:
                body["action"] = out.pop("ran")
            del parent
            return [NewEntry("execution", body, workflow=wf, links=links, key=key, time=now_dt)]

        entries = self._transact(build)
        e = out.get("old") or entries[0]
        b = e.body
        done, err = outcome_of(b)
        return ExecutionResult(e.id, b["authorized"], tuple(b.get("flags", ())), tuple(b.get("reasons", ())),
                               tuple(b.get("missing_receipt", ())), e, done, err)

    # ------------------------------------------------------------------ resume
    def _unresolved_stops(self, c: Any, workflow: str) -> list:
        """The workflow's ``stop`` entries since its last allowed resume, newest first."""
        out: list = []
        before = None
        while True:
            where = [E.c.workflow == workflow, E.c.kind.in_(("stop", "resume"))]
            if before is not None:
                where.append(E.c.seq < before)
            chunk = self.ledger.fetch(c, *where, order=E.c.seq.desc(), limit=200)
            for e in chunk:
                if e.kind == "resume" and e.body.get("allowed") is True:
                    return out
                if e.kind == "stop":
                    out.append(e)
            if len(chunk) < 200:
                return out
            before = chunk[-1].seq

    def resume(self, workflow: str, *, evidence: dict, principal: str, now: NowInput = None) -> ResumeResult:
        """Ask to restart a stopped workflow: the re-enable criteria of *every* trigger that
        stopped it since its last allowed resume (a repair action may fire a second trigger
        while it is stopped), over ``evidence``. Recorded either way (each criterion's
        result, per trigger); only a resume that meets them all restarts it. A workflow that
        is not stopped is answered, nothing recorded."""
        _text_arg(workflow, "workflow")
        _text_arg(principal, "principal")  # (who restarted it: the record names someone, as `cancel`'s does)
        eng, now_dt = self.engine, _now(now)
        out: dict[str, Any] = {}

        def build(c):
            row = self._wf_row(c, workflow)
            if row is None:
                out["r"] = ResumeResult(workflow, False, None, False, None, "running",
                                        reason=f"workflow `{workflow}` is not stopped")
                return []
            stops = self._unresolved_stops(c, workflow) or [self._entry(c, row[3], ("stop",))]
            judged: list[tuple[Any, Any]] = []  # (stop entry, ResumeDecision), one per trigger, newest first
            seen: set[str] = set()
            for st in stops:
                trig = st.body.get("trigger")
                if not isinstance(trig, str):  # (a stop appended beside the runtime: named by its JSON text)
                    trig = canonical_text(trig) if trig is not None else ""
                if trig in seen:
                    continue
                seen.add(trig)
                at = st.body.get("stopped_at")
                state = {"name": workflow, "status": "stopped", "stopped_by": trig,
                         "stopped_at": at if isinstance(at, str) and at else st.time}
                judged.append((st, eng.may_resume(workflow, state, evidence, now_dt)))
            latest = judged[0][1]
            r = latest
            if len(judged) > 1:  # one decision: allowed only when every trigger's criteria hold
                r = latest.model_copy(update={
                    "allowed": all(d.allowed for _, d in judged),
                    "criteria": tuple(x for _, d in judged for x in d.criteria),
                    "unmet": tuple(dict.fromkeys(u for _, d in judged for u in d.unmet)),
                    "errors": tuple(x for _, d in judged for x in d.errors)})
            out["d"] = r
            try:
                ev_digest = _digest(evidence)
                ev = evidence
            except InvalidEntry as e:
                ev_digest = "sha256:" + hashlib.sha256(repr(evidence).encode()).hexdigest()
                ev = {"unrecordable": str(e)}
            body = {
                "evidence_digest": ev_digest,
                "evidence": ev,
                "criteria": [x.model_dump(mode="json") for x in r.criteria],
                "allowed": r.allowed,
                "unmet": list(r.unmet),
                "trigger": row[1],
                "principal": principal,
                "policy_hash": r.policy_hash,
                "resumed_at": _ts(now_dt),
                "errors": [x.model_dump(mode="json") for x in r.errors],
            }
            doubles = integral_doubles(ev) if ev is evidence else None
            if doubles:  # its integral floats, which the ledger reads back as ints (a replay asks it again)
                body[EVIDENCE_DOUBLES] = doubles
            if len(judged) > 1:
                body["triggers"] = [{"trigger": d.trigger or st.body.get("trigger"), "stop": st.id,
                                     "allowed": d.allowed, "unmet": list(d.unmet)} for st, d in judged]
            links = list(dict.fromkeys([row[3], *(st.id for st, _ in judged)]))
            return [NewEntry("resume", body, workflow=workflow, links=links, time=now_dt)]

        entries = self._transact(build)
        if "r" in out:
            return out["r"]
        d = out["d"]
        return ResumeResult(
            workflow, True, entries[0].id, d.allowed, d, "running" if d.allowed else "stopped", tuple(d.unmet)
        )
