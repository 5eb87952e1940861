"""The runtime over HTTP: every ``Runtime`` operation as a JSON endpoint under ``/v1``
(FastAPI, described by the OpenAPI document at ``/openapi.json``).

Identity comes from authentication (:mod:`.identity`): an approval's (of a decision, a
plan or a batch), a claim's, a cancel's, a resume's principal and a rollback's or a
rollback batch's requester are the caller, with the caller's roles. A body that names
another principal (``principal``, ``requested_by``) or gives roles is refused (403).
Rollback batches (``/v1/rollbacks/batches``) are issue 18's ``Runtime.request_bulk_rollback``,
``approve_batch``, ``batch_status`` and ``batch_step``. Without an identities file those operations are
refused (403); gate, executions, steps and reads are served to anyone who can reach
the (loopback) address. The server's clock decides: no operation takes ``now``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.routing import APIRoute
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from ..timestamps import format_rfc3339, parse_rfc3339
from .identity import Caller
from .problems import Problem, is_json_type, parse_json

Id = Field(min_length=1, max_length=256)
Text = Field(default=None, max_length=4000)


class _Body(BaseModel):
    """A request body: closed, and strict (a JSON value of the schema's type, never one converted:
    `"dry_run": "false"` or `0` is a 422, not a `false`; `"expires_in": "60"` is a 422, not 60 s):
    the OpenAPI document's types are the behaviour's, and a state-changing flag means exactly
    what was sent (FastAPI validates the parsed body in pydantic's Python mode, whose lax
    conversions would take `"no"`, `"off"`, `0` for `false` and a number for a time)."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _rfc3339(v: Any) -> datetime:
    """A body's time: an RFC 3339 string with its offset (``date-time``, as the schema says),
    never a number (pydantic would read `5` or `"1700000000"` as Unix time) nor a date alone."""
    if not isinstance(v, str):
        raise PydanticCustomError("rfc3339", "a time is an RFC 3339 string with its offset (e.g. "
                                  "2026-11-26T12:00:00Z)")
    try:
        return parse_rfc3339(v)
    except ValueError:
        raise PydanticCustomError("rfc3339", "not an RFC 3339 time with its offset, or one UTC cannot hold (e.g. "
                                  "2026-11-26T12:00:00Z)") from None


Time = Annotated[datetime, BeforeValidator(_rfc3339)]


def _seconds(v: Any) -> Any:
    """A query's number of seconds: ``nan``, ``inf`` or ``1e999`` (which ``float`` reads as
    numbers) are none; pydantic would judge them by the range alone ("less than or equal").
    (After the ``Query`` in its ``Annotated``: before it, the OpenAPI document would give the
    range as ``ge``/``le`` instead of ``minimum``/``maximum``.)"""
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):
        return v  # (pydantic says it is not a number)
    if not math.isfinite(f):
        raise PydanticCustomError("seconds", "not a number of seconds (a finite number, e.g. 3600)")
    return v


class GateBody(_Body):
    action: dict[str, Any]
    key: str | None = Field(default=None, min_length=1, max_length=256)


class GateBatchBody(_Body):
    actions: list[dict[str, Any]] = Field(min_length=1, max_length=1000)
    keys: list[Annotated[str, Field(min_length=1, max_length=256)] | None] | None = Field(
        default=None, max_length=1000, description="an idempotency key per action, in the order of `actions` "
        "(null: that action has none); a retried batch gets the recorded decisions back")


class ApprovalBody(_Body):
    subject: str = Id
    verdict: Literal["approve", "deny"] = "approve"
    reason: str | None = Text
    expires_in: float | None = Field(default=None, gt=0, le=30 * 86400, description="seconds")
    principal: str | None = Field(default=None, max_length=256, description="if given, must be the caller")
    roles: list[str] | None = Field(default=None, max_length=64, description="refused: roles come from the credential")


class ExecutionBody(_Body):
    decision_id: str | None = Field(default=None, min_length=1, max_length=256)
    receipt: dict[str, Any]
    caused_by: str | None = Field(default=None, min_length=1, max_length=256)
    action: dict[str, Any] | None = None
    key: str | None = Field(default=None, min_length=1, max_length=256)
    outcome: Literal["succeeded", "failed"] = Field(
        default="succeeded", description="`failed`: it ran and failed (it may still have had part of its effect: "
        "it is rolled back like any other); recorded in the execution, shown by the history")
    error: str | None = Field(default=None, min_length=1, max_length=2000,  # (runtime.results.MAX_EXECUTION_ERROR)
                              description="with `outcome: failed` only: what it failed with")


class RollbackBody(_Body):
    execution_id: str = Id
    scenario: str = Id
    reason: str = Field(min_length=1, max_length=4000)
    trigger: str | None = Field(default=None, min_length=1, max_length=256)
    requested_by: str | None = Field(default=None, max_length=256, description="if given, must be the caller")


class ByCallerBody(_Body):
    principal: str | None = Field(default=None, max_length=256, description="if given, must be the caller")
    reason: str | None = Text


class StepBody(_Body):
    duty: str = Id
    status: Literal["started", "completed", "failed", "verified"]
    key: str | None = Field(default=None, min_length=1, max_length=256)
    detail: dict[str, Any] | None = None


class BatchBody(_Body):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "oneOf": [{"required": ["select"], "not": {"required": ["executions"]}},
                  {"required": ["executions"], "not": {"required": ["select"]}}]})

    select: str | None = Field(default=None, min_length=1, max_length=4096,
                               description="a CEL condition over `original` (or give `executions`)")
    executions: list[str] | None = Field(default=None, min_length=1, max_length=10_000,
                                         description="execution ids (or give `select`)")
    scenario: str = Id
    reason: str = Field(min_length=1, max_length=4000)
    since: Time | None = Field(default=None, description="only executions that ran at or after (RFC 3339; "
                                                             "`original.time`: their `executed_at`)")
    until: Time | None = Field(default=None, description="only executions that ran before (RFC 3339; "
                                                             "`original.time`: their `executed_at`)")
    trigger: str | None = Field(default=None, min_length=1, max_length=256)
    dry_run: bool = Field(default=False, description="plan and answer; record nothing")
    requested_by: str | None = Field(default=None, max_length=256, description="if given, must be the caller")


class BatchApprovalBody(_Body):
    batch_hash: str = Field(min_length=1, max_length=256, description="the digest of the batch as it was shown")
    verdict: Literal["approve", "deny"] = "approve"
    reason: str | None = Text
    expires_in: float | None = Field(default=None, gt=0, le=30 * 86400, description="seconds")
    principal: str | None = Field(default=None, max_length=256, description="if given, must be the caller")
    roles: list[str] | None = Field(default=None, max_length=64, description="refused: roles come from the credential")


class BatchStepBody(_Body):
    duty: str = Field(min_length=1, max_length=600, description="a record id, or ROLLBACK_ID/compensate:NAME")
    status: Literal["started", "completed", "failed", "verified"]
    key: str | None = Field(default=None, min_length=1, max_length=256)
    detail: dict[str, Any] | None = None


class ResumeBody(_Body):
    evidence: dict[str, Any]
    principal: str | None = Field(default=None, max_length=256, description="if given, must be the caller")


# ---------------------------------------------------------------------------------- identity
def state_of(request: Request) -> Any:
    return request.app.state.stopline


def authenticate(ids: Any, values: list[str]) -> Caller:
    """The caller the request's ``Authorization`` header lines (``values``) authenticate, or
    a 401 problem: none, one that does not verify, or more than one. Two lines are two
    credentials (a client's and one a proxy added, say): which one is the caller is not
    for the server to guess, so neither is taken (RFC 9110: a field defined as a single
    value, sent twice, is an error the recipient may reject)."""
    if len(values) > 1:
        raise Problem(401, "unauthenticated", "the request has more than one Authorization header: send one "
                      "credential, `Authorization: Bearer <token>`", headers={"www-authenticate": "Bearer"})
    try:
        c = ids.authenticate(values[0] if values else None)
    except PermissionError as e:
        raise Problem(401, "unauthenticated", str(e), headers={"www-authenticate": "Bearer"}) from None
    if c is None:
        raise Problem(401, "unauthenticated", "this server needs `Authorization: Bearer <token>`",
                      headers={"www-authenticate": "Bearer"})
    return c


async def any_caller(request: Request) -> Caller | None:  # async: no thread hop for a hash or a signature check
    """The authenticated caller; None when the server runs without identities."""
    ids = state_of(request).identities
    if ids is None:
        return None
    return authenticate(ids, request.headers.getlist("authorization"))


async def principal(request: Request) -> Caller:
    """An operation that is attributed to someone: the caller, authenticated."""
    if state_of(request).identities is None:
        raise Problem(403, "no-identities", "approvals and other attributed operations need an authenticated "
                      "principal: start the server with --identities FILE")
    c = await any_caller(request)
    assert c is not None
    return c


def same(caller: Caller, named: str | None, field: str) -> None:
    if named is not None and named != caller.principal:
        raise Problem(403, "principal-mismatch", f"`{field}` names `{named}` but the caller is "
                      f"`{caller.principal}`: a principal comes from the credential, never from the body")


# ---------------------------------------------------------------------------------- plumbing
def plain(x: Any) -> Any:
    if hasattr(x, "to_json"):
        return plain(x.to_json())
    if hasattr(x, "model_dump"):
        return x.model_dump(mode="json")
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, bytes):
        return x.hex()
    return x


def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a runtime or ledger call; its usage and ledger errors become problems."""
    from ..ledger import EntryNotFound, IdempotencyConflict, InvalidEntry, LedgerError, LedgerUnavailable
    from ..runtime import RuntimeUsageError

    try:
        return fn(*args, **kwargs)
    except RuntimeUsageError as e:
        msg = str(e)
        raise Problem(404 if msg.startswith("no entry") else 422, "runtime-usage", msg) from None
    except EntryNotFound as e:
        raise Problem(404, "not-found", str(e)) from None
    except IdempotencyConflict as e:
        raise Problem(409, "idempotency-conflict", str(e)) from None
    except InvalidEntry as e:
        raise Problem(422, "invalid-entry", str(e)) from None
    except LedgerUnavailable as e:
        raise Problem(503, "ledger-unavailable", str(e)) from None
    except LedgerError as e:
        raise Problem(422, "ledger", str(e)) from None


def decided(request: Request, results: list) -> None:
    """Count the decisions made (a keyed retry's recorded decision is not a new one)."""
    m = state_of(request).metrics
    for r in results:
        if not getattr(r, "replayed", False):
            m.decided(r.decision.effect, "native")


def may_cancel(runtime: Any, subject_id: str, caller: Caller) -> None:
    """Who may withdraw a subject over HTTP: a rollback's requester, or a principal holding a
    role of one of the subject's approval slots (someone who could approve or deny it); when
    its slots cannot be read (made under another policy version), any principal holding a
    role. Else 403: a credential without a reviewer's role (an agent's) cannot cancel the
    pending rollbacks of an incident, nor another's decisions."""
    st = call(runtime.authorization, subject_id)
    if st.kind == "rollback":
        rb = call(runtime.ledger.get, subject_id)
        if rb.body.get("requested_by") == caller.principal:
            return
    v = st.verdict
    roles = {r for s in ((v.slots + v.open_slots) if v is not None else ()) for r in s.roles}
    mine = set(caller.roles or ())
    if (mine & roles) or (not roles and mine):
        return
    raise Problem(403, "not-permitted", f"{caller.principal} may not cancel this {st.kind}: only "
                  + ("its requester or " if st.kind == "rollback" else "")
                  + (f"a principal holding one of its approval roles ({', '.join(sorted(roles))})" if roles
                     else "a principal holding a role"))


def _named_workflow(request: Request) -> None:
    """The workflow routes' name (``{workflow:path}``: any string, `/` included) is never
    empty: ``/v1/workflows/`` and ``/v1/workflows//resume`` are paths with a slash no route has,
    a 404 as every other such path is (before the credential and the body are looked at)."""
    if not request.path_params.get("workflow"):
        raise Problem(404, "not-found", "Not Found")


def _window(since: datetime | None, until: datetime | None) -> None:
    """``since`` later than ``until`` is a 422 that names both in RFC 3339 (the runtime's own
    message prints them as Python does); the same instant twice is an empty window."""
    if since is not None and until is not None and since > until:
        msg = (f"{format_rfc3339(since)} is later than `until` {format_rfc3339(until)}: no execution can be "
               "in that window")
        raise Problem(422, "invalid-request", f"/since: {msg}",
                      errors=[{"pointer": "/since", "in": "body", "detail": msg}])


def _utc(t: datetime | None, name: str) -> datetime | None:
    """A body's time in UTC; a time without an offset, or one UTC cannot hold, is a 422."""
    if t is None:
        return None
    try:
        if t.tzinfo is None:
            raise ValueError("a time with its offset (RFC 3339, e.g. 2026-11-26T12:00:00Z)")
        return t.astimezone(UTC)
    except (ValueError, OverflowError) as e:
        msg = str(e) if isinstance(e, ValueError) else "out of range in UTC"
        raise Problem(422, "invalid-request", f"/{name}: {msg}",
                      errors=[{"pointer": f"/{name}", "in": "body", "detail": msg}]) from None


class StrictJSONRoute(APIRoute):
    """A route whose JSON body is parsed as the AuthZEN routes parse theirs
    (:func:`.problems.parse_json`: a 400 for NaN, Infinity, an integer beyond +/-(2^53-1), a
    key given twice, a lone surrogate, a body that is not UTF-8) and must be sent as JSON
    (any other or no Content-Type: 415), before FastAPI validates it against the model."""

    def get_route_handler(self) -> Any:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def strict(request: Request) -> Any:
            body = await request.body()
            if body:
                if not is_json_type(request.headers.get("content-type")):
                    raise Problem(415, "unsupported-media-type", "the body is JSON: send `Content-Type: "
                                  "application/json`")
                request._json = parse_json(body)  # FastAPI's request.json() then returns it
            return await handler(request)

        return strict


# ---------------------------------------------------------------------------------- routes
def router() -> APIRouter:
    r = APIRouter(prefix="/v1", tags=["runtime"], route_class=StrictJSONRoute)

    def rt(request: Request) -> Any:
        return state_of(request).runtime

    # (the caller recorded in the decision is the credential's principal, never a body's: the
    # bodies are closed; None without an identities file, which records what it recorded before)
    @r.post("/gate", summary="Gate an action (evaluated with the ledger's workflow state; recorded, with the "
            "caller)")
    def gate(body: GateBody, request: Request, caller: Caller | None = Depends(any_caller)) -> Any:
        g = call(rt(request).gate, body.action, key=body.key, caller=caller.principal if caller else None)
        decided(request, [g])
        return plain(g)

    @r.post("/gate/batch", summary="Gate a batch of actions in one ledger transaction (all recorded or none; "
            "an idempotency key per action)")
    def gate_batch(body: GateBatchBody, request: Request, caller: Caller | None = Depends(any_caller)) -> Any:
        if body.keys is not None and len(body.keys) != len(body.actions):
            detail = f"one key per action (null for none): {len(body.keys)} keys for {len(body.actions)} actions"
            raise Problem(422, "invalid-request", f"/keys: {detail}",
                          errors=[{"pointer": "/keys", "in": "body", "detail": detail}])
        gs = call(rt(request).gate_many, body.actions, keys=body.keys, caller=caller.principal if caller else None)
        decided(request, gs)
        return {"results": plain(gs)}

    @r.post("/approvals", summary="Approve or deny a gate decision or a rollback plan, as the caller")
    def approve(body: ApprovalBody, request: Request, caller: Caller = Depends(principal)) -> Any:
        same(caller, body.principal, "principal")
        if body.roles is not None:
            raise Problem(403, "roles-from-body", "roles come from the credential, never from the body")
        exp = timedelta(seconds=body.expires_in) if body.expires_in is not None else None
        return plain(call(rt(request).approve, body.subject, principal=caller.principal, roles=caller.roles,
                          verdict=body.verdict, expires_in=exp, note=body.reason))

    @r.get("/subjects/{subject_id}", summary="A decision's or a rollback's status: slots, duties, steps")
    def authorization(subject_id: str, request: Request, caller: Caller | None = Depends(any_caller)) -> Any:
        return plain(call(rt(request).authorization, subject_id))

    @r.post("/subjects/{subject_id}/cancel", summary="Withdraw a decision awaiting approval or a rollback")
    def cancel(subject_id: str, body: ByCallerBody, request: Request, caller: Caller = Depends(principal)) -> Any:
        same(caller, body.principal, "principal")
        may_cancel(rt(request), subject_id, caller)
        return plain(call(rt(request).cancel, subject_id, principal=caller.principal, reason=body.reason))

    @r.post("/executions", summary="Record that an action ran (with its receipt), and whether it succeeded or failed")
    def executed(body: ExecutionBody, request: Request, caller: Caller | None = Depends(any_caller)) -> Any:
        return plain(call(rt(request).executed, body.decision_id, receipt=body.receipt, caused_by=body.caused_by,
                          action=body.action, key=body.key, reporter=caller.principal if caller else None,
                          outcome=body.outcome, error=body.error))

    @r.post("/rollbacks", summary="Request the rollback of a recorded execution (the plan comes from the record)")
    def request_rollback(body: RollbackBody, request: Request, caller: Caller = Depends(principal)) -> Any:
        same(caller, body.requested_by, "requested_by")
        return plain(call(rt(request).request_rollback, body.execution_id, scenario=body.scenario,
                          requested_by=caller.principal, reason=body.reason, trigger=body.trigger))

    @r.post("/rollbacks/batches", tags=["batches"], summary="Request the rollback of every execution a CEL select "
            "matches (or a list of executions) as one batch, as the caller")
    def request_batch(body: BatchBody, request: Request, caller: Caller = Depends(principal)) -> Any:
        same(caller, body.requested_by, "requested_by")
        if (body.select is None) == (body.executions is None):
            raise Problem(422, "invalid-request", "give exactly one of `select` (a CEL condition over `original`) "
                          "or `executions` (ids)", errors=[{"pointer": "/select", "in": "body",
                                                             "detail": "exactly one of select, executions"}])
        since, until = _utc(body.since, "since"), _utc(body.until, "until")
        _window(since, until)
        return plain(call(rt(request).request_bulk_rollback, body.select, body.scenario, caller.principal,
                          body.reason, since, until, executions=body.executions, trigger=body.trigger,
                          dry_run=body.dry_run))

    @r.get("/rollbacks/batches/{batch_id}", tags=["batches"],
           summary="A batch: its plans by status; done, partial, closed and remaining; duties done, failed, "
           "remaining")
    def batch_status(batch_id: str, request: Request, caller: Caller | None = Depends(any_caller)) -> Any:
        return plain(call(rt(request).batch_status, batch_id))

    @r.post("/rollbacks/batches/{batch_id}/approvals", tags=["batches"],
            summary="Approve or deny a whole batch (bound to its batch_hash), as the caller")
    def approve_batch(batch_id: str, body: BatchApprovalBody, request: Request,
                      caller: Caller = Depends(principal)) -> Any:
        same(caller, body.principal, "principal")
        if body.roles is not None:
            raise Problem(403, "roles-from-body", "roles come from the credential, never from the body")
        return plain(call(rt(request).approve_batch, batch_id, principal=caller.principal, roles=caller.roles,
                          batch_hash=body.batch_hash, verdict=body.verdict, note=body.reason,
                          expires_in=timedelta(seconds=body.expires_in) if body.expires_in is not None else None))

    @r.post("/rollbacks/batches/{batch_id}/steps", tags=["batches"],
            summary="Report one step of a batch (the plan whose duties name it; idempotent by key)")
    def batch_step(batch_id: str, body: BatchStepBody, request: Request,
                   caller: Caller | None = Depends(any_caller)) -> Any:
        return plain(call(rt(request).batch_step, batch_id, body.duty, body.status, key=body.key, detail=body.detail,
                          reporter=caller.principal if caller else None))

    @r.post("/rollbacks/{rollback_id}/claim", summary="Take a queued rollback (exactly one claim wins)")
    def claim(rollback_id: str, body: ByCallerBody, request: Request, caller: Caller = Depends(principal)) -> Any:
        same(caller, body.principal, "principal")
        return plain(call(rt(request).claim, rollback_id, principal=caller.principal))

    @r.post("/decisions/{decision_id}/claim",
            summary="Claim an allowed or approved decision's one execution, as the caller (exactly one claim wins)")
    def claim_execution(decision_id: str, body: ByCallerBody, request: Request,
                        caller: Caller = Depends(principal)) -> Any:
        same(caller, body.principal, "principal")
        return plain(call(rt(request).claim_execution, decision_id, principal=caller.principal))

    @r.get("/claims", summary="Claims in doubt: decisions claimed for their execution whose execution no entry "
           "records, oldest claim first (resolve each: record its execution, or abandon the claim)")
    def claims_in_doubt(request: Request,
                        older_than: Annotated[float, Query(ge=0, le=10 * 365 * 86400,
                                                           description="seconds: only claims at least this old"),
                                              BeforeValidator(_seconds)] = 0.0,
                        limit: int | None = Query(default=None, ge=1, le=10_000),
                        caller: Caller | None = Depends(any_caller)) -> Any:
        from datetime import timedelta

        return {"claims": plain(call(rt(request).claims_in_doubt, older_than=timedelta(seconds=older_than),
                                     limit=limit))}

    @r.post("/decisions/{decision_id}/abandon",
            summary="Abandon a claim whose action did not run, as the caller: the decision is cancelled "
                    "(a `reason` is required)")
    def abandon_claim(decision_id: str, body: ByCallerBody, request: Request,
                      caller: Caller = Depends(principal)) -> Any:
        same(caller, body.principal, "principal")
        return plain(call(rt(request).abandon_claim, decision_id, principal=caller.principal,
                          reason=body.reason or ""))

    @r.post("/rollbacks/{rollback_id}/steps", summary="Report one step of a rollback (idempotent by key)")
    def step(rollback_id: str, body: StepBody, request: Request, caller: Caller | None = Depends(any_caller)) -> Any:
        return plain(call(rt(request).step, rollback_id, body.duty, body.status, key=body.key, detail=body.detail,
                          reporter=caller.principal if caller else None))

    @r.get("/queue", summary="Open rollbacks, oldest first, with their window deadline (pages: `limit`, then "
           "`after` the last id of the previous page, which `next` names)")
    def queue(request: Request, route: str | None = Query(default=None, max_length=256),
              limit: int | None = Query(default=None, ge=1, le=10_000),
              after: str | None = Query(default=None, min_length=1, max_length=256,
                                        description="the last rollback id of the previous page (keyset pagination)"),
              claimed: bool | None = Query(default=None, description="only claimed (true) or unclaimed (false) ones"),
              caller: Caller | None = Depends(any_caller)) -> Any:
        items = plain(call(rt(request).queue, route, limit=limit, after=after, claimed=claimed))
        # the cursor of the following page: a full page may have one after it (an empty page then ends)
        nxt = items[-1]["rollback_id"] if limit is not None and len(items) == limit else None
        return {"queue": items, "next": nxt}

    @r.post("/expire", summary="Record `expired` for every subject past its deadline")
    def expire(request: Request, caller: Caller | None = Depends(any_caller)) -> Any:
        return {"expired": plain(call(rt(request).expire))}

    # (`:path`: a workflow's name is any string, `/` included, percent-encoded as %2F or not)
    @r.get("/workflows/{workflow:path}", dependencies=[Depends(_named_workflow)],
           summary="A workflow's status (running or stopped, by which trigger)")
    def workflow_status(workflow: str, request: Request, caller: Caller | None = Depends(any_caller)) -> Any:
        return plain(call(rt(request).workflow_status, workflow))

    @r.post("/workflows/{workflow:path}/resume", dependencies=[Depends(_named_workflow)],
            summary="Ask to resume a stopped workflow with evidence, as the caller")
    def resume(workflow: str, body: ResumeBody, request: Request, caller: Caller = Depends(principal)) -> Any:
        same(caller, body.principal, "principal")
        return plain(call(rt(request).resume, workflow, evidence=body.evidence, principal=caller.principal))

    @r.get("/history/{entry_id}", summary="The linked chain around an entry, both ways")
    def history(entry_id: str, request: Request, caller: Caller | None = Depends(any_caller)) -> Any:
        return plain(call(rt(request).history, entry_id))

    # ------------------------------------------------------------------ the ledger's proofs
    def led(request: Request) -> Any:
        return rt(request).ledger

    @r.get("/ledger/head", tags=["ledger"], summary="The ledger's size and Merkle root")
    def head(request: Request, caller: Caller | None = Depends(any_caller)) -> Any:
        ledger = led(request)
        size = call(lambda: ledger.size)
        return {"size": size, "root": call(led(request).root, size).hex()}

    @r.get("/ledger/proofs/inclusion/{entry_id}", tags=["ledger"], summary="An RFC 6962 inclusion proof of an entry")
    def inclusion(entry_id: str, request: Request, size: int | None = Query(default=None, ge=0, le=2**53),
                  caller: Caller | None = Depends(any_caller)) -> Any:
        return plain(call(led(request).prove, entry_id, size=size))

    @r.get("/ledger/proofs/consistency", tags=["ledger"], summary="An RFC 6962 consistency proof between two sizes")
    def consistency(request: Request, old_size: int = Query(ge=0, le=2**53),
                    new_size: int | None = Query(default=None, ge=0, le=2**53),
                    caller: Caller | None = Depends(any_caller)) -> Any:
        return plain(call(led(request).prove_consistency, old_size, new_size))

    @r.get("/ledger/checkpoints", tags=["ledger"], summary="The signed checkpoints recorded in the ledger")
    def checkpoints(request: Request, caller: Caller | None = Depends(any_caller)) -> Any:
        return {"checkpoints": [e.body for e in call(led(request).entries, kind="checkpoint")]}

    @r.post("/ledger/checkpoints", tags=["ledger"], summary="Sign and record a checkpoint (needs --checkpoint-key)")
    def checkpoint(request: Request, caller: Caller | None = Depends(any_caller)) -> Any:
        key = state_of(request).signing_key
        if key is None:
            raise Problem(409, "no-checkpoint-key", "start the server with --checkpoint-key FILE to sign checkpoints")
        cp, entry = call(led(request).checkpoint, key)
        return {"checkpoint": plain(cp), "entry_id": entry.id}

    return r
