"""The AuthZEN 1.0 decision point (OpenID Authorization API 1.0).

``POST /access/v1/evaluation``: ``action.name`` is the action type; the request's
``subject``, ``resource`` and ``context`` (and ``action.properties`` as ``properties``)
become fields of the action; the workflow is ``context.workflow`` when the context gives
one (a value that is not a workflow's name is denied, never decided by the default), else
the server's default (``--workflow``, or the policy set's only workflow). Only
``allow`` is ``decision: true``; require_approval, deny and stop are ``false`` with the
effect, reason, approvals or stop in ``context``. Every response's ``context`` carries
``decision_id`` (the ledger entry id when recorded, else a fresh UUID) and
``policy_hash``. A deny is HTTP 200: 4xx/5xx are for transport problems only (in a batch,
an item that cannot be decided is that item's deny, its problem in ``context.error``:
:func:`evaluations`). A recorded decision names the authenticated caller (``caller``: the
credential's principal; none without an identities file).

The two POST routes are served by :class:`FastPath`, a raw ASGI handler in front of the
FastAPI application (no routing, dependency injection or model validation on the hot
path: the request is checked by hand against the closed schema in :data:`SCHEMAS`).
The FastAPI routes of the same paths (:func:`router`) serve them when the fast path is
switched off and describe them in the OpenAPI document.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
import uuid
from typing import Any

from .native import authenticate
from .problems import PROBLEM, Problem, is_json_type
from .problems import parse_json as _parse_json

log = logging.getLogger("policy_engine.server")
SEMANTICS = ("execute_all", "deny_on_first_deny", "permit_on_first_permit")
MAX_EVALUATIONS = 1000
EVALUATION, EVALUATIONS = "/access/v1/evaluation", "/access/v1/evaluations"
#: what an X-Request-ID may be (the OpenAPI document's pattern and length): visible ASCII,
#: no spaces or control characters, at most 256 of them
REQUEST_ID = re.compile(rb"[\x21-\x7e]{0,256}")
#: the longest ``Idempotency-Key`` (its ledger key, :func:`ledger_key`, stays within the
#: ledger's 256 characters: a prefix, the caller's scope and an item's `` #999`` added)
MAX_IDEMPOTENCY_KEY = 200
#: what an ``Idempotency-Key`` may be: 1 to 200 visible ASCII characters (0x21-0x7E), bare
#: (``k-1``), or quoted as the draft's Structured Field string (``"k-1"``: the same key), that
#: without escapes (no ``"`` or ``\`` inside); a bare key does not begin with ``"``
IDEMPOTENCY_KEY = re.compile(rb'"(?P<q>[\x21\x23-\x5b\x5d-\x7e]{1,200})"|(?P<b>[\x21\x23-\x7e][\x21-\x7e]{0,199})')

# Entities and the action are open (interop peers send extra keys such as `_note`; the
# policy sees them as fields); the request objects themselves are closed.
_ENTITY = {
    "type": "object",
    "required": ["type", "id"],
    "properties": {
        "type": {"type": "string", "minLength": 1},
        "id": {"type": "string", "minLength": 1},
        "properties": {"type": "object"},
    },
}
_ACTION = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string", "minLength": 1}, "properties": {"type": "object"}},
}
_PARTIAL: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"subject": _ENTITY, "action": _ACTION, "resource": _ENTITY, "context": {"type": "object"}},
}
_RESULT = {
    "type": "object",
    "required": ["decision", "context"],
    "additionalProperties": False,
    "properties": {
        "decision": {"type": "boolean"},
        "context": {
            "type": "object",
            "required": ["decision_id", "policy_hash", "effect"],
            "properties": {
                "decision_id": {"type": "string"},
                "policy_hash": {"type": "string"},
                "effect": {"enum": ["allow", "require_approval", "deny", "stop"]},
                "reason": {"type": "string"},
                "recorded": {"type": "boolean"},
                "error": {
                    "type": "object",
                    "required": ["status", "message"],
                    "properties": {"status": {"type": "integer"}, "message": {"type": "string"}},
                },
            },
        },
    },
}
#: the closed JSON Schemas of the AuthZEN bodies (also published in the OpenAPI document)
SCHEMAS = {
    "EvaluationRequest": {**_PARTIAL, "required": ["subject", "action", "resource"]},
    "EvaluationsRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            **_PARTIAL["properties"],
            "evaluations": {"type": "array", "maxItems": MAX_EVALUATIONS, "items": _PARTIAL},
            "options": {"type": "object", "properties": {"evaluations_semantic": {"enum": list(SEMANTICS)}}},
        },
    },
    "EvaluationResponse": _RESULT,
    "EvaluationsResponse": {
        "oneOf": [
            {
                "type": "object",
                "required": ["evaluations"],
                "additionalProperties": False,
                "properties": {"evaluations": {"type": "array", "items": _RESULT}},
            },
            _RESULT,
        ]
    },
}


def configuration(base: str) -> dict[str, Any]:
    """``GET /.well-known/authzen-configuration`` (the PDP's metadata)."""
    return {
        "policy_decision_point": base,
        "access_evaluation_endpoint": base + EVALUATION,
        "access_evaluations_endpoint": base + EVALUATIONS,
    }


# ---------------------------------------------------------------------------------- validation
def _bad(where: str, msg: str) -> Problem:
    return Problem(400, "invalid-authzen-request", f"{where}: {msg}", errors=[{"pointer": where, "detail": msg}])


def _entity(v: Any, where: str) -> dict:
    if not isinstance(v, dict):
        raise _bad(where, "expected an object with `type` and `id`")
    for k in ("type", "id"):
        if not isinstance(v.get(k), str) or not v[k]:
            raise _bad(f"{where}/{k}", "expected a non-empty string")
    if "properties" in v and not isinstance(v["properties"], dict):
        raise _bad(f"{where}/properties", "expected an object")
    return v


def _action(v: Any, where: str) -> dict:
    if not isinstance(v, dict):
        raise _bad(where, "expected an object with `name`")
    if not isinstance(v.get("name"), str) or not v["name"]:
        raise _bad(f"{where}/name", "expected a non-empty string")
    if "properties" in v and not isinstance(v["properties"], dict):
        raise _bad(f"{where}/properties", "expected an object")
    return v


_PARTS = {"subject": _entity, "action": _action, "resource": _entity}


def _partial(obj: Any, where: str, allowed: tuple[str, ...]) -> dict:
    if not isinstance(obj, dict):
        raise _bad(where or "/", "expected a JSON object")
    for k, v in obj.items():
        if k not in allowed:
            raise _bad(f"{where}/{k}", "unknown field")
        check = _PARTS.get(k)
        if check is not None:
            check(v, f"{where}/{k}")
        elif k == "context" and not isinstance(v, dict):
            raise _bad(f"{where}/context", "expected an object")
    return obj


def parse_json(body: bytes) -> Any:
    """The body as strict JSON, or a 400 (:func:`.problems.parse_json`: UTF-8 only, no
    NaN or Infinity, integers within +/-(2^53-1), no key twice, no lone surrogate)."""
    return _parse_json(body)


def parse_evaluation(obj: Any) -> dict:
    _partial(obj, "", ("subject", "action", "resource", "context"))
    for k in ("subject", "action", "resource"):
        if k not in obj:
            raise _bad(f"/{k}", "required")
    return obj


def parse_evaluations(obj: Any) -> tuple[dict, list | None, str]:
    _partial(obj, "", ("subject", "action", "resource", "context", "evaluations", "options"))
    opts = obj.get("options", {})
    if not isinstance(opts, dict):
        raise _bad("/options", "expected an object")
    sem = opts.get("evaluations_semantic", "execute_all")
    if sem not in SEMANTICS:
        raise _bad("/options/evaluations_semantic", f"expected one of {', '.join(SEMANTICS)}")
    evs = obj.get("evaluations")
    if "evaluations" in obj:  # (null too: the schema's `array`; only a request without the key is one evaluation)
        if not isinstance(evs, list):
            raise _bad("/evaluations", "expected an array")
        if len(evs) > MAX_EVALUATIONS:
            raise _bad("/evaluations", f"at most {MAX_EVALUATIONS} evaluations per request")
        for i, e in enumerate(evs):
            _partial(e, f"/evaluations/{i}", ("subject", "action", "resource", "context"))
    defaults = {k: obj[k] for k in ("subject", "action", "resource", "context") if k in obj}
    return defaults, evs, sem


# ---------------------------------------------------------------------------------- idempotency keys
def idempotency_key(values: list | None) -> str | None:
    """The request's ``Idempotency-Key`` (draft-ietf-httpapi-idempotency-key-header) from the
    values of its header lines (None: none sent), or a 400 ``bad-idempotency-key`` problem:
    one line, :data:`IDEMPOTENCY_KEY` (its Structured Field quotes removed: ``"k"`` is ``k``).
    The value is never echoed."""
    if values is None:
        return None
    m = None
    if len(values) == 1:
        v = values[0]
        m = IDEMPOTENCY_KEY.fullmatch(v.encode("latin-1") if isinstance(v, str) else v)
    if m is None:
        raise Problem(
            400,
            "bad-idempotency-key",
            f"Idempotency-Key is one header line of 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters "
            '(0x21-0x7E: no spaces, tabs or control characters), bare or as a quoted string ("...", without '
            'escapes)',
        )
    return (m.group("q") or m.group("b")).decode("ascii")


def ledger_key(key: str, caller: str | None, item: int | None = None) -> str:
    """The ledger's idempotency key of an AuthZEN evaluation sent with ``Idempotency-Key: key``
    by ``caller``: ``authzen:SCOPE:KEY`` for the request's one evaluation, ``authzen:SCOPE:KEY #i``
    for item ``i`` of an ``evaluations`` array. SCOPE is the first 16 hex digits of the SHA-256
    of the caller's principal (empty without identities): one caller's key never meets
    another's (nor, by the prefix, a ``/v1/gate`` key that does not begin ``authzen:``). A
    client's key has no space, so no item's key is ever another request's key."""
    scope = "" if caller is None else hashlib.sha256(caller.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"authzen:{scope}:{key}" if item is None else f"authzen:{scope}:{key} #{item}"


# ---------------------------------------------------------------------------------- deciding
def to_action(req: dict, default_workflow: str | None) -> dict:
    ctx = req.get("context")
    act = req["action"]
    # a `workflow` the context gives is the workflow, whatever it is: one that is not a name
    # (a number, null, a list) is denied by the engine saying so, never decided by the default
    named, wf = False, default_workflow
    if isinstance(ctx, dict) and "workflow" in ctx:
        named, wf = True, ctx["workflow"]
    a = {  # (no workflow named and no default: none given, which the engine denies saying so)
        **({"workflow": wf} if named or wf is not None else {}),
        "type": act["name"],
        "subject": req["subject"],
        "resource": req["resource"],
        "context": ctx if ctx is not None else {},
    }
    if "properties" in act:
        a["properties"] = act["properties"]
    return a


def result(
    decision: Any, decision_id: str, recorded: bool, workflow_status: str | None = None, replayed: bool = False
) -> dict:
    effect = decision.effect
    ctx: dict[str, Any] = {
        "decision_id": decision_id,
        "policy_hash": decision.policy_hash,
        "effect": effect,
        "reason": decision.reason,
        "recorded": recorded,
    }
    if effect == "require_approval":
        ctx["approvals"] = [a.model_dump(mode="json") for a in decision.approvals]
        if decision.action_digest:
            ctx["action_digest"] = decision.action_digest
    elif effect == "stop" and decision.stop is not None:
        ctx["stop"] = decision.stop.model_dump(mode="json")
    if workflow_status:
        ctx["workflow_status"] = workflow_status
    if replayed:  # (a keyed retry: the decision recorded before, nothing recorded now)
        ctx["replayed"] = True
    return {"decision": effect == "allow", "context": ctx}


async def decide(state: Any, req: dict, caller: str | None = None, key: str | None = None) -> dict:
    """One evaluation: recorded through the runtime when a ledger is configured, as asked by
    ``caller`` (the authenticated principal; None: none recorded), under the ledger's
    idempotency ``key`` when given (:func:`ledger_key`: a retry gets the recorded decision,
    ``replayed``, and records nothing)."""
    t0 = time.perf_counter()
    eng = state.store.engine  # one snapshot: the decision names the version that made it
    action = to_action(req, state.default_workflow(eng))
    if state.tracer is None:
        out = await _decide(state, eng, action, caller, key)
    else:
        with state.tracer.start_as_current_span("stopline.evaluate") as span:
            for attr, field in (("stopline.workflow", "workflow"), ("stopline.action_type", "type")):
                v = action.get(field)  # (a request naming no workflow, with no default, has none: a deny says so)
                if type(v) is str:
                    span.set_attribute(attr, v)
            out = await _decide(state, eng, action, caller, key)
            span.set_attribute("stopline.effect", out["context"]["effect"])
            span.set_attribute("stopline.decision_id", out["context"]["decision_id"])
    if key is None or "replayed" not in out["context"]:  # (a replayed decision is not a new one)
        state.metrics.decided(out["context"]["effect"], "authzen")
    state.metrics.evaluation.observe(time.perf_counter() - t0)
    return out


async def _decide(state: Any, eng: Any, action: dict, caller: str | None, key: str | None) -> dict:
    if state.recorder is not None:
        g = await state.recorder.gate(action, caller, key)
        return result(g.decision, g.decision_id, True, g.workflow_status, g.replayed)
    return result(eng.evaluate(action, None, None), str(uuid.uuid4()), False)


async def evaluations(state: Any, obj: Any, caller: str | None = None, key: str | None = None) -> dict:
    """A batch; ``key``: the request's ``Idempotency-Key`` (None: none, or not recorded), each
    item gated under its own ledger key (:func:`ledger_key`)."""
    defaults, evs, sem = parse_evaluations(obj)
    if evs is None:  # no `evaluations` key: the request is one evaluation (AuthZEN 1.0, 7.1)
        return await decide(state, parse_evaluation(defaults), caller, None if key is None else ledger_key(key, caller))
    # an `evaluations` array, even an empty one, is answered with one: a decision per item,
    # in order; the top-level keys are only the items' defaults, so [] decides (and records) nothing
    reqs = []
    for i, e in enumerate(evs):  # every item checked before any is decided (a 400 records nothing)
        merged = {**defaults, **e}
        for k in ("subject", "action", "resource"):
            if k not in merged:
                raise _bad(f"/evaluations/{i}/{k}", "required (not given here nor at the top level)")
        reqs.append(merged)
    keys: list[str | None] = [None] * len(reqs)  # (each item's ledger key: none without an Idempotency-Key)
    if key is not None:
        keys = [ledger_key(key, caller, i) for i in range(len(reqs))]
    if sem == "execute_all" and state.recorder is not None:
        # every item is decided whatever the others' answers: all are handed to the recorder
        # at once, in order, so they share its ledger transactions (it takes whatever
        # waits), each evaluated with the ledger's state as the items before it leave it
        # (`Recorder`, `Runtime.gate_many`): one commit for many, not one per item
        outs: list[dict | Problem] = list(
            await asyncio.gather(*(_attempt(state, r, caller, ik) for r, ik in zip(reqs, keys, strict=True)))
        )
    else:
        outs = []
        for merged, ik in zip(reqs, keys, strict=True):  # (a semantic that stops early decides, and records, no more)
            r = await _attempt(state, merged, caller, ik)
            outs.append(r)
            allowed = not isinstance(r, Problem) and r["decision"]  # (a failed item is a deny)
            if (sem == "deny_on_first_deny" and not allowed) or (sem == "permit_on_first_permit" and allowed):
                break
    problems = [r for r in outs if isinstance(r, Problem)]
    if problems and len(problems) == len(outs):  # nothing decided, nothing recorded: the request's
        raise problems[0]  # problem, as for one evaluation (a 503: safe to send again)
    return {"evaluations": [failed(state, r) if isinstance(r, Problem) else r for r in outs]}


async def _attempt(state: Any, req: dict, caller: str | None, key: str | None) -> dict | Problem:
    """One item of a batch: its answer, or the problem that kept it from one (the item
    only: the others' decisions, recorded or not, are still answered)."""
    try:
        return await decide(state, req, caller, key)
    except Exception as e:  # noqa: BLE001 - that item's deny (AuthZEN 1.0, "Errors"), never a traceback
        return _problem(e, key is not None)


def failed(state: Any, p: Problem) -> dict:
    """The answer to a batch item that could not be decided: ``decision: false`` (an error
    never permits), the problem as the item's ``context.error`` (AuthZEN 1.0, "Errors":
    ``status``, ``message``), not recorded. Counted as a problem of its status."""
    state.metrics.problems.labels(str(p.status)).inc()
    return {
        "decision": False,
        "context": {
            "decision_id": str(uuid.uuid4()),
            "policy_hash": state.store.policy_hash or "",
            "effect": "deny",
            "reason": f"not decided: {p.detail}",
            "recorded": False,
            "error": {"status": p.status, "message": p.detail},
        },
    }


async def handle(state: Any, path: str, body: bytes, caller: str | None = None, key: str | None = None) -> dict:
    obj = parse_json(body)
    if path == EVALUATION:
        return await decide(state, parse_evaluation(obj), caller, None if key is None else ledger_key(key, caller))
    return await evaluations(state, obj, caller, key)


def check_content_type(ctype: bytes | str | None) -> None:
    """A body sent as anything but JSON is a 415: JSON is what ``/v1`` takes
    (``application/json``, ``application/*+json``; :func:`.problems.is_json_type`), not any
    type whose name ends in "json" (``text/json``, ``application/x-ndjson``). No
    Content-Type is taken as JSON."""
    if ctype is not None and not is_json_type(ctype):
        raise Problem(415, "unsupported-media-type", "the body is JSON: send `Content-Type: application/json`")


async def serve(
    state: Any,
    path: str,
    ctype: bytes | str | None,
    body: bytes,
    caller: str | None = None,
    idempotency: list | None = None,
) -> dict:
    """One AuthZEN POST after authentication, the same on the fast path and behind FastAPI
    routing (``--no-fast-path``): the content type (415), the ``Idempotency-Key`` (400), the
    body (400), the decision; a ledger that cannot be reached is a 503, a key used for another
    request a 409, anything else unexpected a logged 500. ``caller``: the authenticated
    principal, recorded with each decision (None: none). ``idempotency``: the values of the
    request's ``Idempotency-Key`` header lines (None: none), checked whether or not decisions
    are recorded, used only when they are (:func:`ledger_key`)."""
    check_content_type(ctype)
    key = idempotency_key(idempotency) if idempotency is not None else None
    if state.recorder is None:
        key = None  # (nothing recorded: nothing to find again, every evaluation is decided anew)
    elif caller is not None:
        _recordable(caller)
    try:
        return await handle(state, path, body or b"", caller, key)
    except Problem:
        raise
    except Exception as e:  # noqa: BLE001 - answered as a problem, never a traceback
        raise _problem(e, key is not None) from None


# ---------------------------------------------------------------------------------- the fast path
class FastPath:
    """Raw ASGI: the two AuthZEN POST routes; for every request the X-Request-ID check and
    echo, the body size limit, ``Cache-Control: no-store`` and ``X-Content-Type-Options:
    nosniff`` where a route sets none, HEAD answered as GET without the body; everything
    else passed to the FastAPI application."""

    def __init__(self, app: Any, state: Any) -> None:
        self.app, self.state = app, state
        self.routes = (EVALUATION, EVALUATIONS) if state.config.fast_path else ()
        self._latency = {p: state.metrics.latency.labels(p) for p in self.routes}  # bound once

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        headers = scope["headers"]
        rid = None
        length = None
        idem = None
        for k, v in headers:
            if k == b"x-request-id":
                rid = v
            elif k == b"content-length":
                length = v
            elif k == b"idempotency-key":
                idem = [v] if idem is None else [*idem, v]
        limit = self.state.config.max_body
        try:
            # (the identifier first: a bad one is never echoed, not even on a 413)
            if rid is not None and REQUEST_ID.fullmatch(rid) is None:
                rid = None  # (never echoed: it is what was wrong)
                raise Problem(
                    400,
                    "bad-request-id",
                    "X-Request-ID is at most 256 visible ASCII characters "
                    "(0x21-0x7E: no spaces, tabs or control characters)",
                )
            if length is not None and (not length.isdigit() or int(length) > limit):
                raise Problem(413, "body-too-large", f"the body is larger than the limit of {limit} bytes")
            body = await _read(receive, limit) if scope["method"] in ("POST", "PUT", "PATCH") else None
            if scope["path"] in self.routes and scope["method"] == "POST" and body is not None:  # body read for POST
                out = await self._authzen(scope, headers, body, idem)
                await _send(send, 200, json.dumps(out).encode(), b"application/json", rid)
                self._latency[scope["path"]].observe(time.perf_counter() - t0)
                return
        except Exception as e:  # noqa: BLE001 - every failure is a problem+json answer, never a traceback
            p = _problem(e)
            self.state.metrics.problems.labels(str(p.status)).inc()
            await _send(send, p.status, p.encode(scope["path"]), PROBLEM.encode(), rid, p.headers)
            return
        if body is not None:
            receive = _replay(body, receive)
        head = scope["method"] == "HEAD"
        if head:  # HEAD wherever GET is (RFC 9110, 9.3.2): answered as GET, without the body
            scope = {**scope, "method": "GET"}
        try:
            await self.app(scope, receive, _answer(send, rid, head))
        finally:  # labelled by the route template FastAPI matched (never the raw path; without
            # a converter's name: `/v1/workflows/{workflow}`, not `{workflow:path}`)
            matched = scope.get("route")
            route = getattr(matched, "path_format", None) or getattr(matched, "path", None)
            self.state.metrics.latency.labels(route if isinstance(route, str) else "unmatched").observe(
                time.perf_counter() - t0
            )

    async def _authzen(self, scope: dict, headers: list, body: bytes, idem: list | None = None) -> dict:
        ids = self.state.identities
        caller = None
        if ids is not None:
            caller = authenticate(ids, [v.decode("latin-1") for k, v in headers if k == b"authorization"])
        ctype = next((v for k, v in headers if k == b"content-type"), None)
        who = caller.principal if caller is not None else None
        return await serve(self.state, scope["path"], ctype, body, who, idem)


def _recordable(caller: str) -> None:
    """A principal the ledger cannot hold (a NUL, a lone surrogate: a JWT's claim may carry
    them) is a 422 before anything is decided, as on ``/v1/gate``: never a 500, never a
    decision recorded without the caller that asked."""
    from ..runtime import RuntimeUsageError
    from ..runtime.results import _text_arg

    try:
        _text_arg(caller, "caller")
    except RuntimeUsageError as e:
        raise Problem(422, "runtime-usage", f"the credential's principal cannot be recorded: {e}") from None


def _problem(e: Exception, keyed: bool = False) -> Problem:
    """The problem answering ``e``; ``keyed``: the evaluation was sent with an ``Idempotency-Key``."""
    if isinstance(e, Problem):
        return e
    from ..ledger import IdempotencyConflict, LedgerUnavailable

    if isinstance(e, LedgerUnavailable):  # (perhaps at COMMIT, after the decision landed: its outcome unknown)
        retry = ("sending it again with the same Idempotency-Key is safe: it is answered with the decision "
                 "recorded, if one was, else decided and recorded once" if keyed else
                 "sent again, it may be recorded twice (send an Idempotency-Key header, and the same one again "
                 "on a retry, to make retries safe)")
        return Problem(503, "ledger-unavailable", f"the ledger cannot be reached: {e}; the outcome is unknown "
                       f"(the decision may have been recorded): {retry}")
    if isinstance(e, IdempotencyConflict):  # (the runtime's message names the ledger's key: not the client's)
        return Problem(409, "idempotency-conflict", "the Idempotency-Key was used for another evaluation (another "
                       "action, or another route's decision): a retry sends the same request; a new request "
                       "needs a new key")
    log.error("evaluation failed", exc_info=e)
    return Problem(500, "internal-error", f"the server failed to evaluate the request ({type(e).__name__})")


async def _read(receive: Any, limit: int) -> bytes:
    chunks, n = [], 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise Problem(400, "client-disconnected", "the client went away")
        b = msg.get("body", b"")
        n += len(b)
        if n > limit:
            raise Problem(413, "body-too-large", f"the body is larger than the limit of {limit} bytes")
        chunks.append(b)
        if not msg.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, original: Any) -> Any:
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await original()  # waits for the disconnect, as the server's own receive does

    return receive


#: on every answer that does not set its own: a decision, a problem or a runtime read is for
#: its caller, now (never stored by a cache: `Authorization` or not), and never sniffed as HTML
_API_HEADERS = ((b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"))


def _answer(send: Any, rid: bytes | None, head: bool) -> Any:
    """``send`` with the request's X-Request-ID echoed, :data:`_API_HEADERS` added where the
    route set none (the reviewer's page sets its own), and for HEAD no body."""

    async def wrapped(msg: dict) -> None:
        if msg["type"] == "http.response.start":
            hs = list(msg.get("headers", []))
            have = {k.lower() for k, _ in hs}
            hs += [h for h in _API_HEADERS if h[0] not in have]
            if rid is not None:
                hs.append((b"x-request-id", rid))
            msg = {**msg, "headers": hs}
        elif head and msg["type"] == "http.response.body" and msg.get("body"):
            msg = {**msg, "body": b""}
        await send(msg)

    return wrapped


async def _send(
    send: Any, status: int, body: bytes, ctype: bytes, rid: bytes | None, extra: dict | None = None
) -> None:
    h = [(b"content-type", ctype), (b"content-length", str(len(body)).encode()), *_API_HEADERS]
    if rid is not None:
        h.append((b"x-request-id", rid))
    for k, v in (extra or {}).items():
        h.append((k.encode(), v.encode()))
    await send({"type": "http.response.start", "status": status, "headers": h})
    await send({"type": "http.response.body", "body": body})
