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
``reversibility``, ``hints``, ``workflow``, ``type`` = the tool's name, ``id``; arguments
cannot override these) gated on the ``Runtime`` (recorded):

- allow: the call goes through; its execution is recorded with the declared receipt fields;
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
  forwarded (an ``isError`` result saying why);
- stop: the stop is recorded; an ``isError`` result says the workflow is halted, and every
  later call of the workflow is refused until an allowed ``rt.resume``.

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
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import replace
from typing import Any

from .common import Approval, Check, Outcome, ToolGate, WorkflowStopped, _digest, conform, require_extra

require_extra("mcp", "mcp", "mcp")

import anyio  # noqa: E402
from mcp import Client, MCPError  # noqa: E402
from mcp.server.lowlevel import Server  # noqa: E402
from mcp_types import INVALID_PARAMS, CallToolResult, ListToolsResult, TextContent, Tool  # noqa: E402

__all__ = ["McpGate", "StoplineGateway", "StoplineMiddleware", "protect", "reversibility_of", "Approval",
           "WorkflowStopped", "CALL_ID", "GATE_META"]

CALL_ID = "stopline.dev/call-id"  #: the client's ``_meta`` key naming one logical call
GATE_META = "stopline.dev/gate"  #: the ``_meta`` key of every gated result and listed tool
MAX_CALL_ID = 200
MAX_PAGES = 100
MAX_GENERATIONS = 32  #: generations a call without a call id tries when other processes keep taking them

Scope = str | Callable[[Any], str]


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


_ANNOTATIONS: ContextVar[Any] = ContextVar("stopline_mcp_annotations", default=None)


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
                "workflow": self.workflow, "type": atype, "id": call_id}


class McpGate:
    """Gate MCP tool calls of one workflow on a ``policy_engine.Runtime``.

    ``approvers``: who may approve (``{principal: [roles]}`` or ``principal -> roles``),
    used by ``approve``. ``scope``: separates callers that send no call id (a string, or
    ``ctx -> str`` from the request context, e.g. the authenticated user); default: every
    client of this gate. ``types``: tool name -> action type. ``receipt``, ``now``: as
    ``ToolGate``."""

    def __init__(self, runtime: Any, workflow: str, approvers: Any = None, *, scope: Scope = "",
                 types: Mapping[str, str] | None = None, receipt: Any = None, now: Any = None) -> None:
        self.tool_gate = _McpToolGate(runtime, workflow, approvers, types=dict(types or {}), receipt=receipt, now=now)
        self.runtime = runtime
        self.workflow = workflow
        self.scope = scope
        self._next: dict[tuple, int] = {}  # (scope, tool, args digest) -> the first generation not known done
        self._locks = [anyio.Lock() for _ in range(64)]
        self.log: list[dict] = []  #: what was gated and how it ended (the example prints it)

    # ---------------------------------------------------------------- approvals (out of band)
    def approve(self, approval: Approval | Mapping[str, Any]) -> Outcome:
        """Record a reviewer's approval (roles from ``approvers``, bound to the digest)."""
        a = approval.to_dict() if isinstance(approval, Approval) else dict(approval)
        return self.tool_gate.approve({"decision_id": a.get("decision_id")}, a)

    def default_class(self, tool: str, annotations: Any) -> str:
        return reversibility_of(annotations, self.tool_gate.declared(self.tool_gate.types.get(tool, tool)))

    # ---------------------------------------------------------------- the gate
    def _scope_of(self, ctx: Any) -> str:
        s = self.scope(ctx) if callable(self.scope) else self.scope
        return str(s or "")

    def _find(self, tool: str, args: dict, call_id: str | None, scope: str, annotations: Any,
              problem: str | None = None) -> tuple[Check, Check | None]:
        """The call's recorded decision (or a new one), and the closed earlier one it follows.

        Without a call id, the calls with the same scope, tool and arguments are numbered
        (generations): the first generation the ledger does not say is done is this call's.
        ``_next`` only remembers where this process last looked (a generation found done
        stays done); what is done, and which call runs under which generation, the ledger
        says (``_decide`` claims it)."""
        token = _ANNOTATIONS.set(annotations)
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
                            "decision_id": check.decision_id, "effect": d.effect, "rule": check.rule,
                            "status": check.status, "action_digest": d.action_digest,
                            "reversibility": check.action.get("reversibility"), **more}}

    def _refusal(self, check: Check, outcome: str, message: str, **more: Any) -> CallToolResult:
        meta = self._meta(check, outcome, **more)
        self.log.append({"tool": check.tool, "args": check.args, **meta[GATE_META], "message": message})
        body = json.dumps(meta[GATE_META], sort_keys=True, default=str)
        return CallToolResult(content=[TextContent(type="text", text=f"{message}\n{body}")], is_error=outcome != "done",
                              _meta=meta)

    async def call(self, ctx: Any, name: Any, arguments: Any, meta: Any, annotations: Any,
                   run: Callable[[], Awaitable[Any]], schema: Any = None) -> Any:
        """Gate one ``tools/call``; ``run`` performs it (only when the gate says so).
        ``schema``: the tool's ``inputSchema`` as listed (``None``: not listed), which says
        what the server hands its tool (``conform``: defaults filled in, a mismatch refused)."""
        if not isinstance(name, str) or not name or not (arguments is None or isinstance(arguments, Mapping)):
            raise MCPError(code=INVALID_PARAMS, message="Stopline: a tools/call names a tool and takes an object")
        args, problem = conform(schema, arguments or {})
        call_id = meta.get(CALL_ID) if isinstance(meta, Mapping) else None
        if call_id is not None and (not isinstance(call_id, str) or not 0 < len(call_id) <= MAX_CALL_ID):
            raise MCPError(code=INVALID_PARAMS, message=f"Stopline: `{CALL_ID}` is a string of 1-{MAX_CALL_ID} chars")
        scope = self._scope_of(ctx)
        lock = self._locks[hash((scope, name, call_id, _digest(args))) % len(self._locks)]
        # In this process, calls with the same key wait for each other (a duplicate gets the
        # first one's answer, "already ran", rather than "being run"). The guarantee is not
        # this lock but the ledger's claim (``_decide``), which holds across processes.
        async with lock:
            for _ in range(MAX_GENERATIONS):
                check, closed = await anyio.to_thread.run_sync(self._find, name, args, call_id, scope, annotations,
                                                               problem)
                try:
                    # (a worker thread is waited for, not abandoned, and anyio delivers a cancellation
                    # at the next checkpoint: inside ``run``, where it is recorded as the execution it
                    # may be; a claim is never left unrun and unrecorded by a client that gives up)
                    out = await anyio.to_thread.run_sync(self._decide, check)
                except WorkflowStopped as e:
                    ws = self.runtime.workflow_status(check.workflow)
                    return self._refusal(e.check, "stop", f"{e}. The workflow is halted: every call is refused "
                                         "until an allowed resume.", stopped_by=ws.get("stopped_by"))
                if call_id is not None or out.run or not (out.spent or out.done):
                    break
                # no call id: another process took this generation (claimed or ran it) since we
                # found it: this identical call is the next one, with its own decision
                self._spent(scope, name, args, check)
            if not out.run:
                if out.done:
                    return self._refusal(check, "done", out.message)
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
                with anyio.CancelScope(shield=True):  # (in a cancelled scope an await would not run)
                    await anyio.to_thread.run_sync(self.tool_gate.record, check,
                                                   {"error": str(e) or type(e).__name__}, out.approver)
                raise
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.tool_gate.record, check, _output(result), out.approver)
            meta_out = self._meta(check, "ran", **({"approved_by": out.approver} if out.approver else {}))
            result["_meta"] = {**(result.get("_meta") or {}), **meta_out}
            self.log.append({"tool": check.tool, "args": check.args, **meta_out[GATE_META]})
            return result

    def mark(self, tool: dict) -> dict:
        """A listed tool (wire form) with the gate's note in its ``_meta``."""
        meta = dict(tool.get("_meta") or {})
        meta[GATE_META] = {"workflow": self.workflow, "type": self.tool_gate.types.get(tool["name"], tool["name"]),
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

    async def _listed(self, ctx: Any, call_next: Any, name: str) -> tuple[Any, Any]:
        """The tool's annotations and ``inputSchema`` as the server lists them (``None``s: not listed)."""
        meta = (ctx.params or {}).get("_meta")
        cursor = None
        for _ in range(MAX_PAGES):
            params = {**({"_meta": meta} if meta else {}), **({"cursor": cursor} if cursor else {})}
            page = _wire(await call_next(replace(ctx, method="tools/list", params=params)))
            for t in page.get("tools") or ():
                if t.get("name") == name:
                    return t.get("annotations"), t.get("inputSchema")
            cursor = page.get("nextCursor")
            if not cursor:
                return None, None
        return None, None

    async def __call__(self, ctx: Any, call_next: Any) -> Any:
        if ctx.request_id is None or ctx.method not in ("tools/call", "tools/list"):
            return await call_next(ctx)
        if self.server.middleware[-1:] != [self]:
            raise MCPError(code=INVALID_PARAMS, message="Stopline refused the call: a middleware was added inside "
                                                        "the gate (it must be the innermost)")
        if ctx.method == "tools/list":
            page = _wire(await call_next(ctx))
            page["tools"] = [self.gate.mark(t) for t in page.get("tools") or ()]
            return page
        p = ctx.params or {}
        name = p.get("name")
        ann, schema = await self._listed(ctx, call_next, name) if isinstance(name, str) else (None, None)
        return await self.gate.call(ctx, name, p.get("arguments"), p.get("_meta"), ann, lambda: call_next(ctx),
                                    schema=schema)


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
    takes). It serves ``tools/list`` (the upstream's tools, listed live and marked) and
    ``tools/call`` (gated, then forwarded) and nothing else. ``gateway.server`` is the
    low-level ``Server`` to run (``Client(gateway.server)``, stdio, HTTP)."""

    def __init__(self, upstream: Any, runtime: Any, *, workflow: str, approvers: Any = None,
                 name: str = "stopline-gateway", gate: McpGate | None = None, **options: Any) -> None:
        self.upstream = upstream
        self.gate = gate or McpGate(runtime, workflow, approvers, **options)
        self.server = Server(name, lifespan=self._lifespan, on_list_tools=self._list_tools,
                             on_call_tool=self._call_tool)

    def _lifespan(self, _server: Any) -> Any:
        from contextlib import asynccontextmanager

        @asynccontextmanager
        async def cm():
            async with Client(self.upstream) as client:
                yield {"upstream": client}

        return cm()

    @staticmethod
    def _client(ctx: Any) -> Client:
        return ctx.lifespan_context["upstream"]

    async def _upstream_tools(self, client: Client) -> list[Tool]:
        tools, cursor = [], None
        for _ in range(MAX_PAGES):
            page = await client.list_tools(cursor=cursor, cache_mode="refresh")
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        return tools

    async def _list_tools(self, ctx: Any, params: Any) -> ListToolsResult:
        tools = await self._upstream_tools(self._client(ctx))
        return ListToolsResult(tools=[Tool.model_validate(self.gate.mark(_wire(t))) for t in tools])

    async def _call_tool(self, ctx: Any, params: Any) -> Any:
        client = self._client(ctx)
        tools = {t.name: t for t in await self._upstream_tools(client)}
        listed = tools.get(params.name)
        ann = _wire(listed.annotations) if listed is not None and listed.annotations is not None else None
        schema = listed.input_schema if listed is not None else None

        async def run() -> Any:
            return await client.call_tool(params.name, params.arguments or {})

        meta = params.meta.model_dump(by_alias=True) if hasattr(params.meta, "model_dump") else params.meta
        return CallToolResult.model_validate(
            await self.gate.call(ctx, params.name, params.arguments, meta, ann, run, schema=schema), by_name=False)
