"""Stopline in front of every MCP ``tools/call`` (``pip install 'stopline[mcp]'``).

Two ways in, one gate (``McpGate``):

    # a gateway: clients talk to it, it forwards the allowed calls to the upstream server
    from policy_engine.integrations.mcp import StoplineGateway
    gateway = StoplineGateway(upstream, runtime, workflow="mcp-files", approvers=directory)
    # upstream: an MCPServer, a Server, StdioServerParameters, a URL; serve gateway.server
    # (a low-level mcp Server) over stdio / HTTP, or in process: Client(gateway.server)
    # or middleware on your own server (the innermost middleware: nothing rewrites the call after it)
    from policy_engine.integrations.mcp import protect
    gate = protect(mcp_server, runtime, workflow="mcp-files", approvers=directory)

Every ``tools/call`` becomes a Stopline action (the arguments at the top level, then
``reversibility``, ``hints``, ``server`` (the server's name: ``server=``, else the name the
server gives itself, so an approval for one server's call never runs the same call on
another), ``workflow``, ``type`` = the tool's name, ``id``; arguments cannot override
these) gated on the ``Runtime`` (recorded):

- allow: the call goes through; its execution is recorded with the declared receipt fields
  (a field of the tool's result beyond the engine's input limits is left out of the receipt,
  listed as missing, and named in the result's ``_meta`` gate note: ``receipt_dropped``);
- require_approval: an ``isError`` result carrying the decision (``decision_id``,
  ``action_digest``, the approvals required) in its text and in
  ``_meta["stopline.dev/gate"]``. The approval is given out of band (``rt.approve``,
  ``McpGate.approve`` with the ``approvers`` directory, or ``stopline serve``'s
  ``/v1`` API), never by the MCP client (the agent). The same call retried (same tool,
  same arguments, same call key) finds its recorded decision, runs once (claimed) and is
  recorded with its receipt;
- deny: an ``isError`` result with the reason;
- arguments the server would read otherwise: the gate judges the arguments with the
  defaults the tool's ``inputSchema`` declares filled in (what the server hands its tool),
  and a call whose arguments do not match that schema exactly (``"true"`` for a boolean,
  which a server built on pydantic turns into ``True``) is gated and refused, never
  forwarded (an ``isError`` result saying why); so is a call of a tool the server does not
  list (what it would hand that tool cannot be known);
- stop: the stop is recorded; an ``isError`` result says the workflow is halted, and every
  later call of the workflow is refused until an allowed ``rt.resume``;
- a tool that asks for input (an ``input_required`` result, MCP 2026-07-28): it has not run,
  so no execution is recorded; its claim is kept (waiting) and the ``requestState`` handed
  back names the call and its claim: the client's next round continues that call under
  the same decision, once (``_continue``); the gateway passes the upstream's input requests
  on to its client;
- arguments beyond the engine's input limits taken as one input (``oversize``): nothing is
  gated or recorded (the ledger would keep them whole), nothing runs; an ``isError`` result;
- the ledger cannot be reached: nothing is gated, nothing runs; an ``isError`` result
  (``outcome``: ``unavailable``) tells the agent, the log (``policy_engine.integrations.mcp``)
  the operator why.

The call key: ``_meta["stopline.dev/call-id"]`` when the client sends one (one logical
call: its decision is final, a retry after it ran is answered "already ran"), otherwise
the gateway's ``scope`` (default: every client of this gateway; a string or
``ctx -> str``) with the tool and the digest of its arguments: a call held for approval is
found again by the same call, and a call that ran (or the policy refused) is done, so
the next identical call is a new decision.

Exactly once, across processes: a decision runs only for the one caller whose claim the
ledger records (``ToolGate.take``: a conditional, keyed ``claimed`` transition appended
under the ledger's append lock), so gateway processes sharing one ledger never run the
same call twice, nor one approval for two calls, nor a call after a deny or a stop that
another process recorded before the claim.

Annotations give the default reversibility class (see ``reversibility_of``); a class the
policy declares for the action type wins.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import replace
from functools import partial
from typing import Any

from ..ledger.errors import LedgerUnavailable
from ..runtime.gatejson import oversize as _oversize
from .common import Approval, Check, Outcome, ToolGate, WorkflowStopped, _digest, conform, require_extra

require_extra("mcp", "mcp", "mcp")

import anyio  # noqa: E402
from mcp import Client, MCPError  # noqa: E402
from mcp.server.lowlevel import Server  # noqa: E402
from mcp_types import (  # noqa: E402
    INVALID_PARAMS,
    CallToolResult,
    InputRequiredResult,
    ListToolsResult,
    NotificationParams,
    SubscriptionsListenRequestParams,
    TextContent,
    Tool,
)

from .mcp_upstream import MAX_PAGES, _no_relay, _UpstreamTools  # noqa: E402

__all__ = ["McpGate", "StoplineGateway", "StoplineMiddleware", "protect", "reversibility_of", "Approval",
           "WorkflowStopped", "CALL_ID", "GATE_META"]

CALL_ID = "stopline.dev/call-id"  #: the client's ``_meta`` key naming one logical call
GATE_META = "stopline.dev/gate"  #: the ``_meta`` key of every gated result and listed tool
MAX_CALL_ID = 200
MAX_GENERATIONS = 32  #: generations a call without a call id tries when other processes keep taking them
#: the prefix of the ``requestState`` the gate hands back with an ``input_required`` result:
#: it names the waiting call and its claim, and wraps the server's own state
STATE_PREFIX = "stopline.dev/v1 "
_RESERVED = "io.modelcontextprotocol/"  #: the ``_meta`` keys an MCP session sets for itself

Scope = str | Callable[[Any], str]
_log = logging.getLogger("policy_engine.integrations.mcp")
MAX_LOG = 1000  #: entries ``McpGate.log`` keeps (the latest calls); the ledger keeps every decision


def _hints(annotations: Any) -> dict:
    """The four MCP hints with the spec's defaults for the ones a tool leaves unset
    (``readOnlyHint`` false, ``destructiveHint`` true, ``idempotentHint`` false,
    ``openWorldHint`` true)."""
    a = annotations
    if a is not None and not isinstance(a, Mapping):
        a = a.model_dump(by_alias=True, exclude_none=True) if hasattr(a, "model_dump") else {}
    a = a or {}

    def flag(key: str, default: bool) -> bool:
        v = a.get(key)
        return v if isinstance(v, bool) else default

    return {"read_only": flag("readOnlyHint", False), "destructive": flag("destructiveHint", True),
            "idempotent": flag("idempotentHint", False), "open_world": flag("openWorldHint", True),
            "annotated": any(k in a for k in ("readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint"))}


def reversibility_of(annotations: Any, declared: str | None = None) -> str:
    """The reversibility class of a call: the one the policy declares for the action type,
    else the default from the tool's annotations (untrusted hints from the server):

    - ``readOnlyHint: true`` -> ``full`` (no side effect: nothing to undo);
    - ``destructiveHint`` true or unset (the spec's default) -> ``irreversible``;
    - ``destructiveHint: false`` (additive) and ``idempotentHint: true`` -> ``full``;
    - ``destructiveHint: false`` otherwise -> ``partial``.

    ``openWorldHint`` does not change the class; it is in the action (``hints.open_world``)."""
    if declared:
        return declared
    h = _hints(annotations)
    if h["read_only"]:
        return "full"
    if h["destructive"]:
        return "irreversible"
    return "full" if h["idempotent"] else "partial"


def _text(result: Mapping[str, Any]) -> str:
    return "\n".join(c.get("text", "") for c in result.get("content") or () if isinstance(c, Mapping))


def _output(result: Mapping[str, Any]) -> Any:
    """What the tool returned, for the receipt: its structured content, else its text."""
    if result.get("isError"):
        return {"error": _text(result)}
    sc = result.get("structuredContent")
    if isinstance(sc, Mapping):
        return dict(sc)
    t = _text(result)
    try:
        return json.loads(t)
    except ValueError:
        return t


def _wire(result: Any) -> dict:
    if isinstance(result, Mapping):
        return dict(result)
    return result.model_dump(by_alias=True, mode="json", exclude_none=True)


def oversize(arguments: Any) -> str | None:
    """Why a call's ``arguments`` are beyond the engine's input limits taken as one input,
    or hold an integer too long to write as JSON (``gatejson.oversize``); None: within."""
    return _oversize(arguments, they=True)


_ANNOTATIONS: ContextVar[Any] = ContextVar("stopline_mcp_annotations", default=None)
_SERVER: ContextVar[str] = ContextVar("stopline_mcp_server", default="")


class _NotWaiting(Exception):
    """An input round naming no call the gate handed its state to."""


class _McpToolGate(ToolGate):
    """A ToolGate whose action carries the call's reversibility class and MCP hints."""

    def declared(self, atype: str) -> str | None:
        try:
            rv = self.runtime.engine.compiled.workflows[self.workflow].actions[atype].reversibility
            return rv.klass if rv is not None else None
        except Exception:  # noqa: BLE001 - not declared (or unreadable): the annotations' default
            return None

    def action_for(self, tool: str, args: Mapping[str, Any], call_id: str) -> dict:
        atype = self.types.get(tool, tool)
        ann = _ANNOTATIONS.get()
        return {**dict(args), "reversibility": reversibility_of(ann, self.declared(atype)), "hints": _hints(ann),
                "server": _SERVER.get(), "workflow": self.workflow, "type": atype, "id": call_id}


class McpGate:
    """Gate MCP tool calls of one workflow on a ``policy_engine.Runtime``.

    ``approvers``: who may approve (``{principal: [roles]}`` or ``principal -> roles``),
    used by ``approve``. ``scope``: separates callers that send no call id (a string, or
    ``ctx -> str`` from the request context, e.g. the authenticated user); default: every
    client of this gate. ``types``: tool name -> action type. ``receipt``, ``now``: as
    ``ToolGate``. ``server``: the name of the server the calls go to, in every action
    (``server``) and so in its digest: an approval for one server's call never runs the
    same call on another (default: the name the server gives itself)."""

    def __init__(self, runtime: Any, workflow: str, approvers: Any = None, *, scope: Scope = "",
                 types: Mapping[str, str] | None = None, receipt: Any = None, now: Any = None,
                 server: str | None = None) -> None:
        if server is not None and not isinstance(server, str):
            raise TypeError(f"McpGate: server= is the server's name (a str), not {type(server).__name__}")
        self.tool_gate = _McpToolGate(runtime, workflow, approvers, types=dict(types or {}), receipt=receipt, now=now)
        self.runtime = runtime
        self.workflow = workflow
        self.scope = scope
        self.server = server
        self._next: dict[tuple, int] = {}  # (scope, tool, args digest) -> the first generation not known done
        self._locks = [anyio.Lock() for _ in range(64)]
        #: the last ``MAX_LOG`` calls gated and how each ended (older ones dropped: memory stays bounded)
        self.log: deque[dict] = deque(maxlen=MAX_LOG)

    # ---------------------------------------------------------------- approvals (out of band)
    def approve(self, approval: Approval | Mapping[str, Any]) -> Outcome:
        """Record a reviewer's approval (roles from ``approvers``, bound to the digest)."""
        a = approval.to_dict() if isinstance(approval, Approval) else dict(approval)
        return self.tool_gate.approve({"decision_id": a.get("decision_id")}, a)

    def default_class(self, tool: str, annotations: Any) -> str:
        return reversibility_of(annotations, self.tool_gate.declared(self.tool_gate.types.get(tool, tool)))

    # ---------------------------------------------------------------- the gate
    def server_name(self, reported: Any = None) -> str:
        """The ``server`` of the actions: the one configured, else the name the server gives
        itself (``reported``), else ``""``."""
        if self.server is not None:
            return self.server
        return reported if isinstance(reported, str) else ""

    def _scope_of(self, ctx: Any) -> str:
        s = self.scope(ctx) if callable(self.scope) else self.scope
        return str(s or "")

    def _find(self, tool: str, args: dict, call_id: str | None, scope: str, annotations: Any,
              problem: str | None = None, server: str = "") -> tuple[Check, Check | None]:
        """The call's recorded decision (or a new one), and the closed earlier one it follows.

        Without a call id, the calls with the same scope, tool and arguments are numbered
        (generations): the first generation the ledger does not say is done is this call's.
        ``_next`` only remembers where this process last looked (a generation found done
        stays done); what is done, and which call runs under which generation, the ledger
        says (``_decide`` claims it)."""
        token, stoken = _ANNOTATIONS.set(annotations), _SERVER.set(server)
        try:
            g = self.tool_gate
            if call_id is not None:
                return g.check(tool, args, call_id, scope=f"{scope}|call-id", problem=problem), None
            k = self._key(scope, tool, args)
            n, closed = self._next.get(k, 0), None
            while True:
                c = g.check(tool, args, f"mcp-{k[2][:16]}-{n}", scope=scope, problem=problem)
                if c.fresh or c.status in ("pending", "approved", "allowed"):
                    break
                if c.status in ("denied", "expired", "cancelled"):
                    closed = c  # told once, with the new request
                n += 1  # executed, refused (deny/stop: judged again), closed: that call is done
            self._next[k] = n
            return c, closed
        finally:
            _ANNOTATIONS.reset(token)
            _SERVER.reset(stoken)

    @staticmethod
    def _key(scope: str, tool: str, args: dict) -> tuple[str, str, str]:
        return scope, tool, _digest(args)

    def _spent(self, scope: str, tool: str, args: dict, check: Check) -> None:
        """The generation of ``check`` is done (another process claimed or ran it, or a stop
        came after it): this process looks from the next one on."""
        k = self._key(scope, tool, args)
        n = int(check.call_id.rsplit("-", 1)[1])
        if self._next.get(k, 0) <= n:
            self._next[k] = n + 1

    def _decide(self, check: Check) -> Outcome:
        """Run or not, the ledger's word: the decision (``outcome``: raises WorkflowStopped on
        stop), then the claim (``take``) of an allowed or approved decision right before it
        runs: of two gateway processes about to run the same decision, one runs."""
        g = self.tool_gate
        out = g.outcome(check)
        if out is None:  # held for approval: run when the ledger says it is approved, claimed
            return g.approved(check)
        return g.take(check) if out.run else out

    def _meta(self, check: Check, outcome: str, **more: Any) -> dict:
        d = check.decision
        return {GATE_META: {"outcome": outcome, "workflow": check.workflow, "tool": check.tool,
                            "server": check.action.get("server"),
                            "decision_id": check.decision_id, "effect": d.effect, "rule": check.rule,
                            "status": check.status, "action_digest": d.action_digest,
                            "reversibility": check.action.get("reversibility"), **more}}

    def _refusal(self, check: Check, outcome: str, message: str, error: bool | None = None,
                 **more: Any) -> CallToolResult:
        """A result that is not the tool's: an ``isError`` one, except ``done`` (unless ``error``)."""
        meta = self._meta(check, outcome, **more)
        self.log.append({"tool": check.tool, "args": check.args, **meta[GATE_META], "message": message})
        body = json.dumps(meta[GATE_META], sort_keys=True, default=str)
        return CallToolResult(content=[TextContent(type="text", text=f"{message}\n{body}")],
                              is_error=outcome != "done" if error is None else error, _meta=meta)

    async def call(self, ctx: Any, name: Any, arguments: Any, meta: Any, annotations: Any,
                   run: Callable[[], Awaitable[Any]], schema: Any = None, *, output_schema: Any = None,
                   listed: bool = True, server: Any = None, resume: tuple[str, str] | None = None) -> Any:
        """Gate one ``tools/call``; ``run`` performs it (only when the gate says so).
        ``schema``: the tool's ``inputSchema`` as listed (``None``: none), which says what
        the server hands its tool (``conform``: defaults filled in, a mismatch refused);
        ``listed=False``: the server does not list the tool, so what it would hand the tool
        is unknown: the call is gated and never run. ``output_schema``: the tool's
        ``outputSchema`` (a ``done`` answer, which has no structured content, is then an
        ``isError`` result: an MCP client refuses a success without it). ``server``: the
        name the server gives itself (``server_name``). ``resume``: the waiting call and
        its claim a later round of an ``input_required`` call names (``unwrap_state``): that
        round continues the call under its claim, or is refused."""
        if not isinstance(name, str) or not name or not (arguments is None or isinstance(arguments, Mapping)):
            raise MCPError(code=INVALID_PARAMS, message="Stopline: a tools/call names a tool and takes an object")
        # bounded before anything reads or records them: gated, the ledger would keep them whole
        args, problem, big = dict[str, Any](), None, oversize(arguments or {})
        if big is None:  # then as the tool would get them (the schema's defaults filled in)
            args, problem = conform(schema, arguments or {})
            big = oversize(args)
        if big is not None:
            _log.warning("Stopline refused MCP tool %r (workflow %r): its arguments are beyond the input limits "
                         "(%s); not gated, not recorded", name, self.workflow, big)
            return self._unrecorded(name, "refused", f"Stopline refused `{name}`: its arguments are beyond the "
                                                     f"gate's input limits ({big}); not run, not recorded. Call "
                                                     "it with smaller arguments.")
        if not listed:
            problem = "the server does not list this tool, so the arguments it would receive cannot be checked"
        call_id = meta.get(CALL_ID) if isinstance(meta, Mapping) else None
        if call_id is not None and (not isinstance(call_id, str) or not 0 < len(call_id) <= MAX_CALL_ID):
            raise MCPError(code=INVALID_PARAMS, message=f"Stopline: `{CALL_ID}` is a string of 1-{MAX_CALL_ID} chars")
        scope, where = self._scope_of(ctx), self.server_name(server)
        lock = self._locks[hash((scope, name, call_id, _digest(args))) % len(self._locks)]
        # In this process, calls with the same key wait for each other (a duplicate gets the
        # first one's answer, "already ran", rather than "being run"). The guarantee is not
        # this lock but the ledger's claim (``_decide``), which holds across processes.
        async with lock:
            try:
                if resume is not None:
                    closed = None
                    check, out = await anyio.to_thread.run_sync(self._continue, name, args, call_id, scope,
                                                                annotations, problem, where, resume)
                else:
                    check, closed, out = await self._settle(name, args, call_id, scope, annotations, problem,
                                                            where)
            except WorkflowStopped as e:
                ws = self.runtime.workflow_status(e.check.workflow)
                return self._refusal(e.check, "stop", f"{e}. The workflow is halted: every call is refused "
                                     "until an allowed resume.", stopped_by=ws.get("stopped_by"))
            except _NotWaiting:
                return self._unrecorded(name, "refused", f"Stopline refused `{name}`: this input round names no "
                                                         "call waiting for input with these arguments; not run")
            except LedgerUnavailable as e:  # fail closed: no decision, no run; the agent is told, the log says why
                return self._unavailable(name, e)
            if not out.run:
                if out.done:  # (one that ran and failed: an error result, as its run was)
                    return self._refusal(check, "done", out.message, error=out.failed or output_schema is not None,
                                         **({"failed": True} if out.failed else {}))
                if out.pending:
                    req = check.request()
                    before = (f" (the earlier request {closed.decision_id} is {closed.status})" if closed else "")
                    return self._refusal(check, "approval_required",
                                         f"{out.message}{before}. Approve decision {check.decision_id} out of band "
                                         "(rt.approve / stopline serve), then call again with the same arguments.",
                                         approvals=req["approvals"])
                return self._refusal(check, "deny" if check.effect == "deny" else "refused", out.message)
            try:
                result = _wire(await run())
            except BaseException as e:  # it ran (or began to): recorded, also when the client cancelled it
                try:
                    with anyio.CancelScope(shield=True):  # (in a cancelled scope an await would not run)
                        await anyio.to_thread.run_sync(partial(self.tool_gate.record, error=e), check,
                                                       {"error": str(e) or type(e).__name__}, out.approver)
                except LedgerUnavailable as lost:  # the server's error (or the cancellation) goes on as itself
                    _log.error("Stopline: MCP tool %r failed under decision %s (%s) and its execution could not be "
                               "recorded (a claim in doubt: Runtime.claims_in_doubt): %s", name, check.decision_id,
                               str(e) or type(e).__name__, getattr(lost, "error", lost))
                raise
            more: dict[str, Any] = {"approved_by": out.approver} if out.approver else {}
            if result.get("resultType") == "input_required":  # not run yet: it waits, its claim kept
                try:
                    return await anyio.to_thread.run_sync(self._waiting, check, result, more)
                except LedgerUnavailable as e:  # its wait not recorded: no round can continue it (claim in doubt)
                    return self._unavailable(name, e, claimed=check.decision_id)
            failed = (_text(result) or "the tool returned an error result") if result.get("isError") else None
            if failed is not None:  # it ran and failed: so recorded, and so said (as a re-run's ``done`` says)
                more["failed"] = True
            output = _output(result)
            try:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(partial(self.tool_gate.record, error=failed), check,
                                                   output, out.approver)
            except LedgerUnavailable as e:  # it ran: the agent gets its result, told it is not recorded
                _log.error("Stopline: MCP tool %r ran under decision %s but its execution could not be recorded "
                           "(a claim in doubt: Runtime.claims_in_doubt): %s", name, check.decision_id,
                           getattr(e, "error", e))
                more["recorded"] = False
            # it ran: recorded without the receipt fields beyond the input limits (``missing_receipt``)
            dropped = await anyio.to_thread.run_sync(self.tool_gate.receipt_dropped, check, output, out.approver)
            if dropped:
                more["receipt_dropped"] = dropped
            meta_out = self._meta(check, "ran", **more)
            result["_meta"] = {**(result.get("_meta") or {}), **meta_out}
            self.log.append({"tool": check.tool, "args": check.args, **meta_out[GATE_META]})
            return result

    async def _settle(self, name: str, args: dict, call_id: str | None, scope: str, annotations: Any,
                      problem: str | None, server: str) -> tuple[Check, Check | None, Outcome]:
        """The call's decision and the gate's answer (claimed when it runs); raises
        ``WorkflowStopped`` on a stop."""
        for _ in range(MAX_GENERATIONS):
            check, closed = await anyio.to_thread.run_sync(self._find, name, args, call_id, scope, annotations,
                                                           problem, server)
            # (a worker thread is waited for, not abandoned, and anyio delivers a cancellation
            # at the next checkpoint: inside ``run``, where it is recorded as the execution it
            # may be; a claim is never left unrun and unrecorded by a client that gives up)
            out = await anyio.to_thread.run_sync(self._decide, check)
            if call_id is not None or out.run or not (out.spent or out.done):
                break
            # no call id: another process took this generation (claimed or ran it) since we
            # found it: this identical call is the next one, with its own decision
            self._spent(scope, name, args, check)
        return check, closed, out

    # ---------------------------------------------------------------- input rounds (MCP 2.x)
    def _waiting(self, check: Check, result: dict, more: dict) -> dict:
        """The server asks the client for input (``input_required``): the call has not run.
        No execution is recorded; its claim is kept (a ``claimed`` transition saying it
        waits), and the ``requestState`` handed back names the call and its claim, so the
        client's next round continues this call (``_continue``), once."""
        holder = self.runtime.authorization(check.decision_id, now=self.tool_gate._t()).claimed_by or ""

        def wait(claims: list, stop_after: Any, nonce: str) -> tuple[str | None, str]:
            if claims and claims[-1] == holder and claims.count(holder) % 2 == 1:
                return holder, "waits for the client's input"
            return None, "its holder is not running"

        self.tool_gate.claim_in_ledger(check.decision_id, wait)
        result["requestState"] = STATE_PREFIX + json.dumps([check.call_id, holder, result.get("requestState")])
        meta_out = self._meta(check, "input_required", **more)
        result["_meta"] = {**(result.get("_meta") or {}), **meta_out}
        self.log.append({"tool": check.tool, "args": check.args, **meta_out[GATE_META]})
        return result

    def _continue(self, tool: str, args: dict, call_id: str | None, scope: str, annotations: Any,
                  problem: str | None, server: str, resume: tuple[str, str]) -> tuple[Check, Outcome]:
        """A later round of a call waiting for input: its recorded decision (the same tool,
        arguments, scope and server), continued under its claim only while that claim waits
        (the ledger's word, read and written under its append lock), so a round runs once."""
        gen, holder = resume
        token, stoken = _ANNOTATIONS.set(annotations), _SERVER.set(server)
        try:
            g = self.tool_gate
            where = f"{scope}|call-id" if call_id is not None else scope
            # only a call gated before continues: a round naming another call (or other arguments)
            # is refused without gating anything (no decision recorded ahead of its call)
            if (call_id is not None and call_id != gen) or g.recorded(g.keyed(tool, args, gen, scope=where)[2]) is None:
                raise _NotWaiting(tool)
            c = g.check(tool, args, gen, scope=where, problem=problem)
        finally:
            _ANNOTATIONS.reset(token)
            _SERVER.reset(stoken)
        if c.fresh or c.problem or c.effect not in ("allow", "require_approval"):
            return c, g._refuse(c, "this input round names no call waiting for input with these arguments")
        g._halt_if_stopped(c)  # a stop since the first round halts it (WorkflowStopped)

        def turn(claims: list, stop_after: Any, nonce: str) -> tuple[str | None, str]:
            n = claims.count(holder)
            if holder and claims and claims[-1] == holder and n > 0 and n % 2 == 0:
                return holder, "continues after the client's input"
            return None, "the call is not waiting for input" if claims else "the call never ran"

        st, got, why, _stop = g.claim_in_ledger(c.decision_id, turn)
        if got is None:
            if st is not None and st.status == "executed":
                done = g.outcome(replace(c, status="executed", used_by=st.used_by))
                if done is not None:
                    return c, done
            return c, Outcome(False, f"Stopline refused `{tool}`: this input round continues no waiting call "
                                     f"({why or 'refused by the ledger'})", spent=True)
        who = ", ".join(st.verdict.accepted) if st is not None and st.verdict is not None else ""
        return c, Outcome(True, approver=who or None)

    @staticmethod
    def unwrap_state(state: Any) -> tuple[tuple[str, str], Any] | None:
        """``(waiting call, its claim), the server's own requestState`` from a round's
        ``requestState`` the gate handed out; ``None``: not one of the gate's. A malformed
        one raises ``MCPError`` (never passed on, never a continuation)."""
        if not (isinstance(state, str) and state.startswith(STATE_PREFIX)):
            return None
        try:
            gen, holder, orig = json.loads(state[len(STATE_PREFIX):])
            if not (isinstance(gen, str) and isinstance(holder, str) and (orig is None or isinstance(orig, str))):
                raise ValueError
        except (ValueError, TypeError, RecursionError):  # (nested too deep for the parser: not one it gave)
            raise MCPError(code=INVALID_PARAMS, message="Stopline: the requestState is not one the gate gave") from None
        return (gen, holder), orig

    def _unavailable(self, name: str, error: BaseException, claimed: str | None = None) -> CallToolResult:
        """The ledger cannot be reached: the call is refused, not run (fail closed); the
        agent is told, the log says why (``claimed``: the decision whose claim is in doubt)."""
        why = getattr(error, "error", error)
        if claimed is None:
            _log.warning("Stopline refused MCP tool %r (workflow %r): %s", name, self.workflow, why)
        else:
            _log.error("Stopline refused MCP tool %r (workflow %r): the server asked for input but the wait could "
                       "not be recorded under decision %s (a claim in doubt: Runtime.claims_in_doubt): %s",
                       name, self.workflow, claimed, why)
        return self._unrecorded(name, "unavailable", f"Stopline refused `{name}`: its ledger cannot be reached, "
                                                     "so the call cannot be gated; not run. Try again later.")

    def _unrecorded(self, name: str, outcome: str, message: str) -> CallToolResult:
        """A refusal with no decision behind it (nothing was gated)."""
        meta = {GATE_META: {"outcome": outcome, "workflow": self.workflow, "tool": name}}
        self.log.append({"tool": name, **meta[GATE_META], "message": message})
        return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True, _meta=meta)

    def mark(self, tool: dict, server: Any = None) -> dict:
        """A listed tool (wire form) with the gate's note in its ``_meta`` (``server``: the
        name the server gives itself, as ``call`` takes it)."""
        meta = dict(tool.get("_meta") or {})
        meta[GATE_META] = {"workflow": self.workflow, "server": self.server_name(server),
                           "type": self.tool_gate.types.get(tool["name"], tool["name"]),
                           "reversibility": self.default_class(tool["name"], tool.get("annotations"))}
        return {**tool, "_meta": meta}


# -------------------------------------------------------------------- server middleware
class StoplineMiddleware:
    """A ``ServerMiddleware`` gating every ``tools/call`` of ``server`` (install with
    ``protect``). It must be the innermost middleware: a call reached through a middleware
    added after it (which could rewrite the call after the gate) is refused."""

    def __init__(self, server: Any, gate: McpGate) -> None:
        self.server = server
        self.gate = gate

    async def _listed(self, ctx: Any, call_next: Any, name: str) -> dict | None:
        """The tool as the server lists it (wire form; ``None``: not listed)."""
        meta = (ctx.params or {}).get("_meta")
        cursor = None
        for _ in range(MAX_PAGES):
            params = {**({"_meta": meta} if meta else {}), **({"cursor": cursor} if cursor else {})}
            page = _wire(await call_next(replace(ctx, method="tools/list", params=params)))
            for t in page.get("tools") or ():
                if t.get("name") == name:
                    return t
            cursor = page.get("nextCursor")
            if not cursor:
                return None
        return None

    async def __call__(self, ctx: Any, call_next: Any) -> Any:
        if ctx.request_id is None or ctx.method not in ("tools/call", "tools/list"):
            return await call_next(ctx)
        if self.server.middleware[-1:] != [self]:
            raise MCPError(code=INVALID_PARAMS, message="Stopline refused the call: a middleware was added inside "
                                                        "the gate (it must be the innermost)")
        if ctx.method == "tools/list":
            page = _wire(await call_next(ctx))
            page["tools"] = [self.gate.mark(t, self._name()) for t in page.get("tools") or ()]
            return page
        p = ctx.params or {}
        name = p.get("name")
        t = await self._listed(ctx, call_next, name) if isinstance(name, str) else None
        run_ctx, resume = ctx, None
        wrapped = McpGate.unwrap_state(p.get("requestState"))
        if wrapped is not None:  # a later round of a call waiting for input: the server gets its own state back
            resume, orig = wrapped
            params = {k: v for k, v in p.items() if k != "requestState"}
            run_ctx = replace(ctx, params={**params, **({"requestState": orig} if orig is not None else {})})
        return await self.gate.call(ctx, name, p.get("arguments"), p.get("_meta"), (t or {}).get("annotations"),
                                    lambda: call_next(run_ctx), schema=(t or {}).get("inputSchema"),
                                    output_schema=(t or {}).get("outputSchema"), listed=t is not None,
                                    server=self._name(), resume=resume)

    def _name(self) -> Any:
        return getattr(self.server, "name", None)


def protect(server: Any, runtime: Any, *, workflow: str, approvers: Any = None, **options: Any) -> McpGate:
    """Gate every ``tools/call`` of ``server`` (an ``MCPServer`` or a low-level ``Server``),
    including tools added later: the gate is appended as the innermost middleware.
    ``options`` go to ``McpGate`` (``scope``, ``types``, ``receipt``, ``now``)."""
    gate = McpGate(runtime, workflow, approvers, **options)
    server.middleware.append(StoplineMiddleware(server, gate))
    return gate


# -------------------------------------------------------------------- the gateway
class StoplineGateway:
    """An MCP server in front of another (``upstream``: an ``MCPServer``/``Server``
    instance, ``StdioServerParameters``, a URL or a ``Transport``, as ``mcp.Client``
    takes; ``upstream_options``: more ``mcp.Client`` options, e.g. ``mode``). It serves
    ``tools/list`` (the upstream's tools, listed live and marked) and ``tools/call`` (gated,
    then forwarded with the client's ``_meta``; the upstream's progress notifications go on
    to the client) and nothing else. A call is judged under the upstream's tools as listed
    once per session while it tells of changes (``_UpstreamTools``), else (or ``relist``)
    at each call. The gateway declares ``tools.listChanged`` to its clients when (and only
    when) the upstream tells it of changes, and tells every client of each one
    (``_Downstream``): a ``subscriptions/listen`` stream (MCP 2026-07-28), else
    ``notifications/tools/list_changed``. ``gateway.server`` is the low-level ``Server`` to
    run (stdio, HTTP, or ``Client(gateway.server)``)."""

    def __init__(self, upstream: Any, runtime: Any, *, workflow: str, approvers: Any = None,
                 name: str = "stopline-gateway", gate: McpGate | None = None,
                 upstream_options: Mapping[str, Any] | None = None, relist: bool = False, **options: Any) -> None:
        fixed = {"server", "elicitation_callback", "message_handler"} & set(upstream_options or ())
        if fixed:
            raise TypeError(f"StoplineGateway: upstream_options may not set {', '.join(sorted(fixed))}")
        self.upstream, self.relist = upstream, relist
        self.upstream_options = {"cache": None, **(upstream_options or {})}
        self.gate = gate or McpGate(runtime, workflow, approvers, **options)
        self.server = Server(name, lifespan=self._lifespan, on_list_tools=self._list_tools,
                             on_call_tool=self._call_tool, on_subscriptions_listen=self._listen)
        self.server.add_notification_handler("notifications/initialized", NotificationParams, self._joined)
        self.server.middleware.append(self._declare)

    def _lifespan(self, _server: Any) -> Any:
        @asynccontextmanager
        async def cm():
            tools = _UpstreamTools(keep=not self.relist)
            async with Client(self.upstream, elicitation_callback=_no_relay, message_handler=tools.on_message,
                              **self.upstream_options) as client, anyio.create_task_group() as tg:
                tools.client = client
                await tg.start(tools.watch, client)
                tg.start_soon(tools.downstream.run)
                try:
                    yield {"upstream": client, "tools": tools}
                finally:
                    tools.downstream.listen.close()
                    tg.cancel_scope.cancel()

        return cm()

    # ------------------------------------------------ telling the gateway's clients of tool changes
    @staticmethod
    async def _declare(ctx: Any, call_next: Any) -> Any:
        """``tools.listChanged`` in the gateway's capabilities (the ``initialize`` and
        ``server/discover`` results) says whether the upstream tells it of changes: the SDK
        derives it from ``NotificationOptions`` or a served ``subscriptions/listen``, which
        cannot know the upstream."""
        result = await call_next(ctx)
        if ctx.method in ("initialize", "server/discover") and isinstance(result, dict):
            tools = (result.get("capabilities") or {}).get("tools")
            if isinstance(tools, dict):
                if ctx.lifespan_context["tools"].promised:
                    tools["listChanged"] = True
                else:
                    tools.pop("listChanged", None)
        return result

    @staticmethod
    async def _joined(ctx: Any, params: Any) -> None:
        """A client of the handshake is ready (``notifications/initialized``): told of each change
        from now on, on its session, while the upstream tells the gateway, until its connection ends."""
        tools = ctx.lifespan_context["tools"]
        if tools.promised:
            tools.downstream.join(ctx.session)

    @staticmethod
    async def _listen(ctx: Any, params: SubscriptionsListenRequestParams) -> Any:
        """A 2026-07-28 client's ``subscriptions/listen``: served by the SDK's ``ListenHandler``
        on the upstream session's bus; tool changes honored only while the upstream tells them."""
        tools = ctx.lifespan_context["tools"]
        if not tools.promised and params.notifications.tools_list_changed:
            wanted = params.notifications.model_copy(update={"tools_list_changed": None})
            params = params.model_copy(update={"notifications": wanted})
        return await tools.downstream.listen(ctx, params)

    @staticmethod
    def _client(ctx: Any) -> Client:
        return ctx.lifespan_context["upstream"]

    async def _list_tools(self, ctx: Any, params: Any) -> ListToolsResult:
        tools = await ctx.lifespan_context["tools"].get(refresh=True)  # listed live (and kept, if watched)
        name = self._server_name(self._client(ctx))
        return ListToolsResult(tools=[Tool.model_validate(self.gate.mark(_wire(t), name)) for t in tools])

    @staticmethod
    def _server_name(client: Client) -> str | None:
        """The name the upstream gives itself (``serverInfo.name``), if it does."""
        info = client.server_info
        return info.name if info is not None else None

    async def _call_tool(self, ctx: Any, params: Any) -> Any:
        client, upstream = self._client(ctx), ctx.lifespan_context["tools"]
        tools = {t.name: t for t in await upstream.get()}
        if params.name not in tools and upstream.kept:  # a tool the listing kept does not name: list once more
            tools = {t.name: t for t in await upstream.get(refresh=True)}
        listed = tools.get(params.name)
        ann = _wire(listed.annotations) if listed is not None and listed.annotations is not None else None
        schema = listed.input_schema if listed is not None else None
        output_schema = listed.output_schema if listed is not None else None

        wrapped = McpGate.unwrap_state(params.request_state)
        resume, state = wrapped if wrapped is not None else (None, params.request_state)

        async def progress(progress: float, total: float | None, message: str | None) -> None:
            # the upstream's progress goes on to this gateway's client (a no-op when it asked for none)
            await ctx.session.report_progress(progress, total, message)

        meta = params.meta.model_dump(by_alias=True) if hasattr(params.meta, "model_dump") else params.meta
        # the client's ``_meta`` goes on as the middleware's handler gets it (the call id, trace
        # context, ...), but for the progress token and the reserved ``io.modelcontextprotocol/``
        # keys (its protocol version, capabilities): the gateway's own session with the upstream sets those
        forward: Any = ({k: v for k, v in meta.items() if k != "progressToken" and not str(k).startswith(_RESERVED)}
                        if isinstance(meta, Mapping) else {})

        async def run() -> Any:
            # one round, passed through: the upstream's input requests go to this gateway's client
            return await client.session.call_tool(params.name, params.arguments or {}, progress_callback=progress,
                                                  input_responses=params.input_responses, request_state=state,
                                                  meta=forward or None, allow_input_required=True)

        out = await self.gate.call(ctx, params.name, params.arguments, meta, ann, run, schema=schema,
                                   output_schema=output_schema, listed=listed is not None,
                                   server=self._server_name(client), resume=resume)
        if isinstance(out, Mapping) and out.get("resultType") == "input_required":
            return InputRequiredResult.model_validate(out, by_name=False)
        return CallToolResult.model_validate(out, by_name=False)
