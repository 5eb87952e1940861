"""Stopline as a tool guardrail of the OpenAI Agents SDK (``pip install 'stopline[openai-agents]'``).

    from policy_engine.integrations.openai_agents import protect
    gate = protect(agent, runtime, workflow="shop-support", approvers=directory)

``protect`` puts on every function tool of ``agent``: a ``needs_approval`` that gates the
call on the Runtime (recorded) and asks for approval when the decision is
``require_approval``; a tool input guardrail that decides from the ledger when the tool is
about to run; and a wrapper that records the execution with its receipt. So:

- allow: the tool runs once (claimed in the ledger right before it runs); its execution is
  recorded with the declared receipt fields;
- require_approval: the run is interrupted (``result.interruptions``); record the
  reviewer's ``Approval`` with ``approve(gate, state, interruption, approval)``, which
  approves the SDK item only when the Runtime counted it. The guardrail lets the tool run
  only when the ledger says this decision is approved, and the wrapper claims it right
  before the tool runs (after every guardrail, so a guardrail that rejects the call after
  Stopline's leaves the approval unused: a retry of the call runs it once): the SDK's own
  ``state.approve(..., always_approve=True)`` is not an approval (it carries no identity
  and no digest): a standing approve never beats a later deny or an unapproved call;
- deny (or not approved): the model gets the reason as the tool's output;
- the arguments judged are the tool's: the SDK validates them with the tool's pydantic
  model (lax: ``"true"`` for a ``bool`` becomes ``True``) and fills in its defaults, so
  the gate judges the arguments with the declared defaults filled in, and a call whose
  arguments do not match the tool's ``params_json_schema`` exactly (which the model could
  be coerced from) is gated and never run, nor held: the model reads why;
- every function tool a run gets is gated: ``agent.tools`` as ``protect`` finds them, tools
  appended later, and the tools of the agent's ``mcp_servers`` (which the SDK makes into
  function tools at each run), on the agent and its clones;
- shell tools whose commands run here are gated too (a ``ShellTool`` with a local
  executor: its ``commands``; a ``LocalShellTool``: its ``command``, ``env``, ...; the
  action type is the tool's name): the executor runs a call only when the ledger allows it
  and claims it, and records it; a ``ShellTool``'s held call is an interruption like a
  function tool's, and a stop halts the run (``WorkflowStopped``);
- a ``CustomTool`` (one raw string in) is gated as a ``ShellTool`` is, its action
  ``{"input": <the string>}``; a subclass of an SDK tool class is gated as its base is;
- a sandbox agent's capability tools, made for each run on a clone the runner prepares
  (``openai_agents_sandbox``): its shell's ``exec_command`` and ``write_stdin`` and its
  filesystem's ``view_image`` as function tools (a ``workdir``, a ``path`` resolved in the
  workspace), its ``apply_patch`` operation by operation (each path resolved too); a
  ``Memory`` that generates memories (the SDK's own sandbox agents, outside
  the policy) is warned about;
- the apply-patch tool's editor, the computer tool's computer and the approval callback of
  a hosted MCP tool are gated too (``openai_agents_tools``: each patch operation, each
  computer action, each hosted MCP approval request is an action, claimed before its
  side effect and recorded; a refused computer action halts the run with
  ``ActionRefused``, the SDK giving it no way to tell the model). What has no hook on our
  side (a hosted MCP tool whose ``require_approval`` lets calls run unasked; the tools
  OpenAI runs: web search, file search, code interpreter, image generation, a hosted
  container's shell) cannot be gated: ``protect`` says so with an ``UngatedToolWarning``;
- a tool's own ``needs_approval`` is kept: the SDK asks when it or the policy says so
  (answer the tool's own ask with the SDK's ``state.approve``; the policy's with ``approve``);
- stop: the stop is recorded and the guardrail halts the run
  (``ToolInputGuardrailTripwireTriggered``, its ``output.output_info`` the reason).

Exactly once, across workers: the claim is the ledger's (``ToolGate.take``: a conditional,
keyed ``claimed`` transition appended under the ledger's append lock, for allowed and
approved decisions alike), so two workers running the same call (the same scope, call id
and arguments: a saved ``RunState`` resumed twice, a replayed run) run it once, an
approval counts for one run, and a deny or a stop another worker recorded before the
claim keeps the tool from running.
"""

from __future__ import annotations

import functools
import inspect
import json
import warnings
import weakref
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, cast

from .common import Approval, Check, Outcome, ToolGate, WorkflowStopped, conform, require_extra

require_extra("agents", "openai-agents", "openai_agents")

from agents import Agent, FunctionTool, Handoff, ToolGuardrailFunctionOutput, tool_input_guardrail  # noqa: E402

from . import openai_agents_sandbox as sandbox  # noqa: E402
from . import openai_agents_tools as native  # noqa: E402
from .openai_agents_tools import ActionRefused, _args, _get  # noqa: E402

__all__ = [
    "protect",
    "approve",
    "request_for",
    "Approval",
    "ToolGate",
    "WorkflowStopped",
    "UngatedToolWarning",
    "ActionRefused",
]


def _output(result: Any) -> Any:
    """What the tool returned, for the receipt: the SDK's text output items (an MCP tool's
    result, a ``ToolOutputText``: ``{"type": "text", "text": ...}``, or a list of them) by
    their text, JSON parsed; anything else as it is."""
    items = result if isinstance(result, list) else [result]
    texts = []
    for item in items:
        if hasattr(item, "model_dump") and not isinstance(item, type):
            try:
                item = item.model_dump(mode="json")
            except Exception:  # noqa: BLE001
                return result
        if not (isinstance(item, dict) and item.get("type") == "text" and isinstance(item.get("text"), str)):
            return result
        texts.append(item["text"])
    if not texts:
        return result
    text = "\n".join(texts)
    try:
        return json.loads(text)
    except ValueError:
        return text


#: the exceptions the running function tool raised (``_note_failures``), per invocation
_FAILED: ContextVar[list[BaseException] | None] = ContextVar("stopline_openai_agents_failed", default=None)


def _note_failures(invoker: Any) -> None:
    """Let the wrapper know when a function tool raised: the SDK's invoker turns the error
    into the tool's output (its ``failure_error_function``) before the wrapper sees it, so
    the tool's own call inside it (``_invoke_tool_impl``) notes the exception in ``_FAILED``
    first (the SDK's attributes on it kept). An invoker without one: nothing to note."""
    impl = getattr(invoker, "_invoke_tool_impl", None)
    if not callable(impl) or getattr(impl, "__stopline_notes__", False):
        return

    @functools.wraps(impl)
    async def noted(ctx: Any, raw: str) -> Any:
        try:
            return await impl(ctx, raw)
        except BaseException as e:
            box = _FAILED.get()
            if box is not None:
                box.append(e)
            raise

    noted.__stopline_notes__ = True  # type: ignore[attr-defined]
    try:
        invoker._invoke_tool_impl = noted
    except (AttributeError, TypeError):  # pragma: no cover - an invoker that takes no attribute
        pass


def _scope(ctx: Any, gate: ToolGate) -> str:
    return str(getattr(gate, "scope", "") or "")


class _Gated:
    """The guardrail and the wrapper of one ToolGate: what the guardrail let run, by the
    invocation (the SDK hands the guardrail and the tool the same ``ToolContext``) and
    checked against its call id and arguments: a call id two runs share (a model that
    reuses ids, concurrent runs of one agent) never runs one call under another's decision.

    The guardrail claims nothing: a guardrail after Stopline's may still reject the call.
    The wrapper, reached only when every guardrail allowed it, claims the allowed or
    approved decision in the ledger (one claim wins, across processes) and runs the tool.
    A clearance the wrapper never used (a later guardrail rejected the call) holds no
    claim and goes with its ``ToolContext``."""

    def __init__(self, gate: ToolGate) -> None:
        self.gate = gate
        self.cleared: dict[int, tuple[weakref.ref, str, str, Check, Outcome]] = {}
        self.schemas: dict[str, Any] = {}  #: each wrapped tool's ``params_json_schema``, by name
        #: the operation a sandbox's apply_patch call was held on, by tool name and call id
        self.held: dict[tuple[str, str], dict] = {}

    def _gated_here(self, tool: Any, layer: _Gated | None, hint: str = "") -> bool:
        """Whether ``tool`` already carries this gate's layer (nothing to do); the layer of
        a gate that would judge it otherwise is a ``ValueError`` (one tool, one gate)."""
        if layer is None:
            return False
        if not layer.same(self):
            raise ValueError(
                f"tool `{tool.name}` is already gated by Stopline for workflow "
                f"`{layer.gate.workflow}` by another gate: one tool object is gated by one gate{hint}"
            )
        return True

    def _clear(self, tc: Any, c: Check, out: Outcome) -> None:
        key = id(tc)

        def gone(ref: weakref.ref, key: int = key) -> None:  # the invocation ended without the tool
            if self.cleared.get(key, (None,))[0] is ref:
                del self.cleared[key]

        try:
            ref = weakref.ref(tc, gone)
        except TypeError:  # pragma: no cover - a context without weak references: held until used
            ref = cast(weakref.ref, lambda: tc)
        self.cleared[key] = (ref, tc.tool_call_id, tc.tool_arguments, c, out)

    def check(self, name: str, args: dict, call_id: str, resolve: Callable[[dict], tuple] | None = None) -> Check:
        """Gate the call with its arguments as the tool receives them (``conform``: the
        declared defaults filled in; a mismatch with the schema is the check's problem),
        then as ``resolve`` says the tool acts on them (a sandbox's ``exec_command``: its
        ``workdir`` as the directory the command runs in, ``openai_agents_sandbox``)."""
        args, problem = conform(self.schemas.get(name), args) if name in self.schemas else (dict(args), None)
        if resolve is not None:
            args, refused = resolve(args)
            problem = problem or refused
        return self.gate.check(name, args, call_id, scope=_scope(None, self.gate), problem=problem)

    async def needs_approval(
        self, ctx: Any, params: dict, call_id: str, name: str, resolve: Callable[[dict], tuple] | None = None
    ) -> bool:
        c = self.check(name, params, call_id, resolve)
        held = c.effect == "require_approval" and c.status == "pending" and not c.problem
        if held and resolve is not None:  # the arguments judged, for ``request_for`` (the tool goes with the run)
            self.held[(name, call_id)] = {"given": dict(params), "args": dict(c.args)}
            while len(self.held) > sandbox.MAX_NOTES:
                del self.held[next(iter(self.held))]
        return held

    def guard(self, data: Any, resolve: Callable[[dict], tuple] | None = None) -> Any:
        tc = data.context
        try:
            c = self.check(tc.tool_name, _args(tc.tool_arguments), tc.tool_call_id, resolve)
            out = self.gate.outcome(c)
            if out is None:
                out = self.gate.ready(c)  # the ledger's word, never the SDK's approval flag
        except WorkflowStopped as e:
            return ToolGuardrailFunctionOutput.raise_exception(output_info={"stopline": "stop", "reason": str(e)})
        if not out.run:
            return ToolGuardrailFunctionOutput.reject_content(out.message, output_info={"stopline": c.effect})
        self._clear(tc, c, out)
        return ToolGuardrailFunctionOutput.allow(output_info={"stopline": c.effect, "decision_id": c.decision_id})

    def same(self, other: _Gated) -> bool:
        """Whether ``other`` gates as this one does (the same decisions for the same calls)."""
        a, b = self.gate, other.gate
        return a is b or (a == b and _scope(None, a) == _scope(None, b))

    def wrap(self, tool: Any) -> None:
        # one tool object shared by agents protected one by one: one layer
        if self._gated_here(
            tool,
            _layer(tool),
            ". Pass gate=<the first protect's result> to share it, or give this agent its own copy of the tool",
        ):
            self.schemas[tool.name] = tool.params_json_schema
            return
        inner = tool.on_invoke_tool
        _note_failures(inner)
        name = tool.name
        own_needs = tool.needs_approval  # the developer's own ask (bool or callable): kept
        self.schemas[name] = tool.params_json_schema
        # a sandbox's exec_command, view_image: judged at the path they act on, as the session resolves it
        resolve = sandbox.path_resolver(tool) if sandbox.at_path(tool) else None

        async def on_invoke_tool(ctx: Any, raw: str) -> Any:
            if resolve is not None:  # the call is reached: its note ends
                self.held.pop((name, str(getattr(ctx, "tool_call_id", ""))), None)
            cleared = self.cleared.pop(id(ctx), None)
            if (
                cleared is None
                or cleared[0]() is not ctx
                or cleared[1] != getattr(ctx, "tool_call_id", None)
                or cleared[2] != raw
            ):  # reached without the guardrail, or not the call it cleared
                return f"Stopline refused `{name}`: the call was not gated"
            c, out = cleared[3], cleared[4]
            try:  # the ledger's claim, allowed or approved: of two workers running this call, one runs
                out = self.gate.take(c, out.approver)
            except WorkflowStopped as e:  # stopped since the guardrail: not run
                return f"Stopline refused `{name}`: {e}"
            if not out.run:
                return out.message
            failed: list[BaseException] = []  # what the tool raised, when the SDK made it the output
            token = _FAILED.set(failed)
            try:
                result = await inner(ctx, raw)
            except BaseException as e:  # also a timeout (the SDK cancels the call): it may have run
                self.gate.record(c, {"error": str(e) or type(e).__name__}, out.approver, error=e)
                raise
            finally:
                _FAILED.reset(token)
            if failed:  # it raised: the model reads the SDK's error text, the ledger records the failure
                self.gate.record(
                    c, {"error": str(failed[-1]) or type(failed[-1]).__name__}, out.approver, error=failed[-1]
                )
                return result
            self.gate.record(c, _output(result), out.approver)
            return result

        on_invoke_tool.__stopline_gated__ = self  # type: ignore[attr-defined]
        tool.on_invoke_tool = on_invoke_tool

        async def needs(ctx: Any, params: dict, call_id: str) -> bool:
            if await self.needs_approval(ctx, params, call_id, name, resolve):
                return True
            if isinstance(own_needs, bool) or not callable(own_needs):
                return bool(own_needs)
            asked = own_needs(ctx, params, call_id)
            return bool(await asked if inspect.isawaitable(asked) else asked)

        tool.needs_approval = needs

        def stopline_guard(data: Any) -> Any:
            return self.guard(data, resolve)

        guard = tool_input_guardrail(stopline_guard)
        tool.tool_input_guardrails = [guard, *(tool.tool_input_guardrails or [])]

    # ------------------------------------------------------------ shell tools
    def wrap_shell(self, tool: Any) -> None:
        """Gate a local ``ShellTool`` or a ``LocalShellTool``: the SDK gives them no tool
        guardrail, but runs each call through the tool's ``executor`` (and, for a
        ``ShellTool``, asks its ``needs_approval`` first). The executor is wrapped: the call
        is gated with its action (``commands``, ``timeout_ms``, ...; ``command``, ``env``,
        ``working_directory``, ... for a ``LocalShellTool``), claimed in the ledger, run,
        and recorded; a denied or held call returns the reason as its output, never running
        the command. A ``ShellTool``'s ``needs_approval`` asks when the policy says
        ``require_approval`` (the SDK's interruption; ``approve`` records the approval) and
        halts the run with ``WorkflowStopped`` when a stop trigger fires."""
        if self._gated_here(tool, _layer_of(tool)):
            return
        local = _kind(tool) == "LocalShellTool"
        inner = tool.executor
        name = tool.name
        args_of = _local_shell_args if local else _shell_args

        async def executor(request: Any) -> Any:
            data = request.data
            c = self.check(name, args_of(_get(data, "action")), str(_get(data, "call_id")))
            # (the SDK does not catch a local shell executor's error: a stop halts the run)
            return await self._run(c, lambda: inner(request), _shell_output, halt=local)

        executor.__stopline_gated__ = self  # type: ignore[attr-defined]
        tool.executor = executor
        if not local:
            tool.needs_approval = self._needs(name, _shell_args, tool.needs_approval)

    def wrap_custom(self, tool: Any) -> None:
        """Gate a ``CustomTool`` (one raw string in, for a grammar or free-form tool): the SDK
        gives it no tool guardrail, but runs each call through ``on_invoke_tool(ctx, input)``
        with the call id in ``ctx``, after asking its ``needs_approval(ctx, input, call_id)``.
        The action is ``{"input": <the raw string>}``; otherwise as a ``ShellTool``: gated,
        claimed, run, recorded; a denied or held call answers with the reason and never runs;
        ``needs_approval`` asks when the policy holds the call and halts the run with
        ``WorkflowStopped`` when a stop trigger fires."""
        if self._gated_here(tool, _layer_of(tool)):
            return
        inner = tool.on_invoke_tool
        name = tool.name

        async def on_invoke_tool(ctx: Any, raw: str) -> Any:
            c = self.check(name, {"input": raw}, str(getattr(ctx, "tool_call_id", "")))
            return await self._run(c, lambda: inner(ctx, raw), _output, halt=False)

        on_invoke_tool.__stopline_gated__ = self  # type: ignore[attr-defined]
        tool.on_invoke_tool = on_invoke_tool
        tool.needs_approval = self._needs(name, lambda raw: {"input": raw}, tool.needs_approval)

    async def _run(self, c: Any, invoke: Callable[[], Any], output: Callable[[Any], Any], *, halt: bool) -> Any:
        """Run a gated native call (a shell's, a custom tool's) as the ledger says: claimed
        when allowed or approved (of two workers running this call, one runs it), run,
        recorded (an error too: it may have run in part); else the reason, as its output. A
        stop raises ``WorkflowStopped`` when ``halt`` (the SDK lets it halt the run), else
        is the output (the SDK turns the tool's errors into its output)."""
        try:
            out = self.gate.outcome(c)
            if out is None:
                out = self.gate.ready(c)  # the ledger's word, never the SDK's approval flag
            if out.run:
                out = self.gate.take(c, out.approver)
        except WorkflowStopped as e:
            if halt:
                raise
            return f"Stopline refused `{c.tool}`: {e}"
        if not out.run:
            return out.message
        try:
            result = invoke()
            if inspect.isawaitable(result):
                result = await result
        except BaseException as e:  # it may have run in part
            self.gate.record(c, {"error": str(e) or type(e).__name__}, out.approver, error=e)
            raise
        self.gate.record(c, output(result), out.approver)
        return result

    def _needs(self, name: str, to_args: Callable[[Any], dict], own: Any) -> Any:
        """A native tool's ``needs_approval(ctx, input, call_id)``: asks when the policy holds
        the call, halts the run with ``WorkflowStopped`` when a stop trigger fires (asked
        before the tool runs), else asks what the tool's own setting asks."""

        async def needs(ctx: Any, given: Any, call_id: str) -> bool:
            c = self.check(name, to_args(given), call_id)
            if c.effect == "stop":  # resumed since: nothing to ask, the call is refused when it is reached
                if self.gate.resumed_since(c):
                    return False
                raise WorkflowStopped(c)
            if c.effect == "require_approval" and c.status == "pending" and not c.problem:
                return True
            if isinstance(own, bool) or not callable(own):
                return bool(own)
            asked = own(ctx, given, call_id)
            return bool(await asked if inspect.isawaitable(asked) else asked)

        return needs

    # ------------------------------------------------------------ apply-patch, computer, hosted MCP
    def wrap_native(self, tool: Any) -> None:
        """Gate an ``ApplyPatchTool`` (its editor), a ``ComputerTool`` (its computer) or a
        ``HostedMCPTool`` (its approval callback): ``openai_agents_tools``; a sandbox's
        apply_patch (its editor): ``openai_agents_sandbox``."""
        if self._gated_here(tool, _layer_of(tool)):
            return
        kind = _kind(tool)
        if kind == sandbox.PATCH_KIND:
            sandbox.gate_patch(self, tool)
        elif kind == "ApplyPatchTool":
            native.gate_apply_patch(self, tool)
        elif kind == "ComputerTool":
            native.gate_computer(self, tool)
        elif kind == "HostedMCPTool":
            native.gate_hosted_mcp(self, tool)


def _shell_args(action: Any) -> dict:
    """A ``ShellTool`` call's action as the policy sees it: ``commands`` (a list of strings),
    with ``timeout_ms`` and ``max_output_length`` when the model gave them."""
    a: dict[str, Any] = {"commands": [str(x) for x in (_get(action, "commands") or ())]}
    for k in ("timeout_ms", "max_output_length"):
        if _get(action, k) is not None:
            a[k] = _get(action, k)
    return a


def _local_shell_args(action: Any) -> dict:
    """A ``LocalShellTool`` call's action: ``command`` (the argv list), ``env``, and
    ``timeout_ms``, ``user`` and ``working_directory`` when given."""
    a: dict[str, Any] = {
        "command": [str(x) for x in (_get(action, "command") or ())],
        "env": dict(_get(action, "env") or {}),
    }
    for k in ("timeout_ms", "user", "working_directory"):
        if _get(action, k) is not None:
            a[k] = _get(action, k)
    return a


def _shell_output(result: Any) -> Any:
    """What a shell executor returned, for the receipt: its text as ``result``; a
    ``ShellResult`` as ``stdout``, ``stderr`` (each command's, joined) and the last
    command's ``exit_code``."""
    outs = getattr(result, "output", None)
    if isinstance(outs, list):
        codes = [getattr(o, "exit_code", None) for o in outs]
        return {
            "stdout": "".join(str(getattr(o, "stdout", "") or "") for o in outs),
            "stderr": "".join(str(getattr(o, "stderr", "") or "") for o in outs),
            "exit_code": codes[-1] if codes else None,
        }
    return result if isinstance(result, str) else str(result)


#: the SDK's tool classes Stopline tells apart, by name (a subclass is its base's kind; the
#: sandbox's apply_patch, a ``CustomTool``, is its own)
KINDS = (
    sandbox.PATCH_KIND,
    "CustomTool",
    "ShellTool",
    "LocalShellTool",
    "ApplyPatchTool",
    "ComputerTool",
    "HostedMCPTool",
    "WebSearchTool",
    "FileSearchTool",
    "CodeInterpreterTool",
    "ImageGenerationTool",
)


def _kind(tool: Any) -> str:
    """The kind of ``tool``: its class's, or the nearest base's the SDK defines (a subclass
    of ``CustomTool`` is gated, or warned about, as one), else its class's name."""
    for cls in type(tool).__mro__:
        if cls.__name__ in KINDS:
            return cls.__name__
    return type(tool).__name__


def _shell_kind(tool: Any) -> bool:
    """A shell tool whose commands run here (gated): a ``LocalShellTool``, or a ``ShellTool``
    with a local executor (a hosted container's shell runs at OpenAI: not gated)."""
    kind = _kind(tool)
    return kind == "LocalShellTool" or (kind == "ShellTool" and getattr(tool, "executor", None) is not None)


#: where each gated kind carries its Stopline layer
_LAYER_AT = {
    "FunctionTool": "on_invoke_tool",
    "CustomTool": "on_invoke_tool",
    "ShellTool": "executor",
    "LocalShellTool": "executor",
    "ApplyPatchTool": "editor",
    "ComputerTool": "computer",
    "HostedMCPTool": "on_approval_request",
    sandbox.PATCH_KIND: "editor",
}


def _layer_of(tool: Any) -> _Gated | None:
    """The Stopline layer a function, shell, apply-patch, computer or hosted MCP tool carries."""
    at = "on_invoke_tool" if isinstance(tool, FunctionTool) else _LAYER_AT.get(_kind(tool))
    layer = getattr(getattr(tool, at, None), "__stopline_gated__", None) if at else None
    return layer if isinstance(layer, _Gated) else None


def _layer(tool: Any) -> _Gated | None:
    """The Stopline layer a function tool already carries (``protect`` put it there)."""
    layer = getattr(getattr(tool, "on_invoke_tool", None), "__stopline_gated__", None)
    return layer if isinstance(layer, _Gated) else None


def protect(
    agent: Any,
    runtime: Any,
    *,
    workflow: str,
    approvers: Any = None,
    scope: str = "",
    gate: ToolGate | None = None,
    **options: Any,
) -> ToolGate:
    """Gate every function tool of ``agent`` (in place). ``scope`` separates runs whose
    model reuses call ids. Returns the ``ToolGate`` (``approve`` records approvals).

    A tool object shared by several agents carries one Stopline layer: protecting the
    second agent with an equivalent gate (same runtime, workflow, scope and options) shares
    it; a gate that would judge the tool otherwise (another workflow) is a ``ValueError``."""
    gate = gate or ToolGate(runtime, workflow, approvers, **options)
    gate.scope = scope  # type: ignore[attr-defined]
    g = getattr(gate, "_openai_agents", None) or _Gated(gate)  # (one gate, several agents: one note of schemas)
    cover = getattr(agent, "_stopline_cover", None)
    if cover is not None and not cover.same(g) and getattr(agent, "_stopline_reached_from", None) is not None:
        raise ValueError(
            f"agent `{agent.name}` is already gated for workflow `{cover.gate.workflow}`: a run of agent "
            f"`{agent._stopline_reached_from}`, protected before it, reaches it (a handoff or an agent tool). "
            "Protect this agent first, or with the same gate"
        )
    for t in agent.tools:
        _gate_tool(g, t)
    _cover(agent, g)
    gate._openai_agents = g  # type: ignore[attr-defined]
    return gate


def _gate_tool(g: _Gated, t: Any) -> None:
    if isinstance(t, FunctionTool):
        g.wrap(t)
    elif _shell_kind(t):
        g.wrap_shell(t)
    elif _kind(t) in (*native.GATED_NATIVE, sandbox.PATCH_KIND):
        g.wrap_native(t)
    elif _kind(t) == "CustomTool":
        g.wrap_custom(t)


class UngatedToolWarning(UserWarning):
    """A tool of a protected agent that Stopline cannot gate (no hook on our side runs
    before what it does): the SDK, or OpenAI, runs it outside the policy."""


#: tool kinds that act beyond the model's text with no hook on our side: not gated, why
#: (gated: a ``ShellTool`` with a local executor, a ``LocalShellTool``, an ``ApplyPatchTool``,
#: a ``ComputerTool``, a ``HostedMCPTool`` whose every call asks for approval)
UNGATED_KINDS = {
    "ShellTool": "its shell runs in a hosted container (only a local executor is gated)",
    "HostedMCPTool": "its server is called by OpenAI",
    "WebSearchTool": "OpenAI runs it (hosted: no hook)",
    "FileSearchTool": "OpenAI runs it (hosted: no hook)",
    "CodeInterpreterTool": "OpenAI runs it in its container (hosted: no hook)",
    "ImageGenerationTool": "OpenAI runs it (hosted: no hook)",
}


def _ungated_because(t: Any) -> str | None:
    kind = _kind(t)
    if kind == "HostedMCPTool":
        unasked = native.mcp_unasked(t)
        return f"{UNGATED_KINDS[kind]} and {unasked}" if unasked else None
    if kind not in UNGATED_KINDS or _shell_kind(t):
        return None
    return UNGATED_KINDS[kind]


def _warn_ungated(agent: Any, tools: Any, seen: set) -> None:
    for t in tools or ():
        why = _ungated_because(t)
        if why is not None and id(t) not in seen:
            seen.add(id(t))
            kind = _kind(t)
            warnings.warn(
                f"Stopline: tool `{getattr(t, 'name', kind)}` ({kind}) of agent "
                f"`{getattr(agent, 'name', '?')}` is not gated: {why}, outside the policy. Remove it, "
                "or put what it does behind a function tool.",
                UngatedToolWarning,
                stacklevel=3,
            )


def _warn_capabilities(agent: Any, warned: set) -> None:
    """Warn about what a sandbox agent's capabilities do outside the policy (once for the
    agent and its clones: the runner clones it for each run)."""
    for label, why in sandbox.ungated_capabilities(agent):
        if label not in warned:
            warned.add(label)
            warnings.warn(
                f"Stopline: capability `{label}` of sandbox agent `{getattr(agent, 'name', '?')}` is not "
                f"gated: {why}, outside the policy.",
                UngatedToolWarning,
                stacklevel=4,
            )


def _cover(agent: Any, g: _Gated, warned: set | None = None) -> None:
    """Gate every function tool a run of ``agent`` gets, not only the ones ``agent.tools``
    held when ``protect`` ran: the SDK turns the tools of the agent's ``mcp_servers`` into
    function tools at every run (outside ``agent.tools``), and a tool may be appended to
    ``agent.tools`` later. ``agent.get_all_tools`` (the public method the runner lists a
    turn's tools with) is wrapped on this agent, and on its clones (``agent.clone``), to
    put the Stopline layer on each function tool it returns (once per tool object). A
    sandbox agent's capability tools, bound to the run's session, come to a clone the
    runner makes for the run: gated there (``openai_agents_sandbox``)."""
    if getattr(agent, "_stopline_cover", None) is g:
        return
    warned = set() if warned is None else warned
    _warn_capabilities(agent, warned)
    listed = agent.get_all_tools  # (bound: the class's, or an earlier cover's)
    cloned = agent.clone

    seen: set = set()
    _warn_ungated(agent, agent.tools, seen)

    async def get_all_tools(run_context: Any) -> list:
        tools = await listed(run_context)
        _cover_reachable(agent, g, warned)  # (a handoff or an agent tool added since)
        for t in tools:
            _gate_tool(g, t)
        _warn_ungated(agent, tools, seen)
        return tools

    def clone(**kwargs: Any) -> Any:
        twin = cloned(**kwargs)
        _cover(twin, g, warned)
        return twin

    agent.get_all_tools = get_all_tools
    agent.clone = clone
    agent._stopline_cover = g
    _cover_reachable(agent, g, warned)


def _cover_reachable(agent: Any, g: _Gated, warned: set) -> None:
    """Cover the agents a run of ``agent`` can go on with: its handoffs' targets (the run
    continues as that agent, with that agent's tools) and the agents its tools run
    (``Agent.as_tool``: a run of its own inside the call). Before, their tools ran outside
    the policy, unrecorded and unwarned. An agent protected itself keeps its own gate."""
    for h in list(getattr(agent, "handoffs", None) or ()):
        if isinstance(h, Handoff):
            ref = getattr(h, "_agent_ref", None)  # (the SDK's own reference: a run restored from its state)
            _cover_target(ref() if callable(ref) else None, g, warned, agent)
            inner = h.on_invoke_handoff
            if getattr(inner, "__stopline_cover__", None) is not g:  # (the target known when it is invoked)
                async def on_invoke_handoff(ctx: Any, raw: str, inner: Any = inner) -> Any:
                    target = await inner(ctx, raw)
                    _cover_target(target, g, warned, agent)
                    return target

                on_invoke_handoff.__stopline_cover__ = g  # type: ignore[attr-defined]
                h.on_invoke_handoff = on_invoke_handoff
        else:
            _cover_target(h, g, warned, agent)
    for t in list(getattr(agent, "tools", None) or ()):
        _cover_target(getattr(t, "_agent_instance", None), g, warned, agent)


def _cover_target(target: Any, g: _Gated, warned: set, source: Any = None) -> None:
    if not isinstance(target, Agent) or getattr(target, "_stopline_cover", None) is not None:
        return  # (covered: by this gate, or protected with its own)
    for t in target.tools:
        _gate_tool(g, t)
    target._stopline_reached_from = getattr(source, "name", "?")
    _cover(target, g, warned)


def request_for(gate: ToolGate, interruption: Any) -> dict:
    """The decision behind an SDK interruption (a ``ToolApprovalItem``), as the reviewer sees it."""
    raw = interruption.raw_item
    get = raw.get if isinstance(raw, dict) else (lambda k: getattr(raw, k, None))
    name, args, call_id = (
        cast(str, interruption.tool_name or get("name")),
        _args(get("arguments")),
        cast(str, get("call_id")),
    )
    # the layer that gates this call (the agent's tool of that name), else this gate's
    tool = next(
        (
            t
            for t in getattr(getattr(interruption, "agent", None), "tools", None) or ()
            if getattr(t, "name", None) == name and _layer_of(t) is not None
        ),
        None,
    )
    g = _layer_of(tool) if tool is not None else getattr(gate, "_openai_agents", None)
    if (
        get("type") == "custom_tool_call"
        and g is not None
        and ((name, call_id) in g.held or (tool is None and sandbox.is_sandbox_agent(interruption.agent)))
    ):
        try:  # a sandbox's apply_patch (a capability tool: on the run's clone, not on the agent)
            return sandbox.patch_request_check(g.gate, name, call_id, str(get("input")), g.held).request()
        except ValueError:  # not a patch (another capability's custom tool): its raw input, below
            pass
    if get("type") == "apply_patch_call":  # an ApplyPatchTool's call: its held operation, by its derived id
        return native.patch_request_check(g.gate if g is not None else gate, name, raw).request()
    if get("type") == "shell_call":  # a ShellTool's call: its action, as the executor judges it
        args = _shell_args(get("action"))
    elif get("type") == "custom_tool_call":  # a CustomTool's call: its raw input
        args = {"input": get("input")}
    if (
        get("type") == "function_call"
        and name in ("exec_command", "view_image")
        and g is not None
        and ((name, call_id) in g.held or (tool is None and sandbox.is_sandbox_agent(interruption.agent)))
    ):
        # a sandbox's exec_command, view_image (on the run's clone): the arguments judged, the path resolved
        note = g.held.get((name, call_id))
        given = isinstance(note, dict) and note.get("given") == args
        judged = note["args"] if given and isinstance(note, dict) else sandbox.lexical_path(name, args)
        return g.gate.check(name, judged, call_id, scope=_scope(None, g.gate)).request()
    c = (
        g.check(name, args, call_id)
        if g is not None
        else gate.check(name, args, call_id, scope=getattr(gate, "scope", ""))
    )
    return c.request()


def approve(gate: ToolGate, state: Any, interruption: Any, approval: Approval | dict) -> Outcome:
    """Record ``approval`` on the Runtime; approve the SDK item (for this call only) when
    the Runtime counted it and the decision is approved. Returns the gate's ``Outcome``.

    A sandbox's ``apply_patch`` held on several operations (``request_for(...)["operations"]``,
    each its own decision bound to its own content) is approved whole: ``approval``, given for
    the request, is given by the same principal with the same verdict and note for each other
    held operation, bound to that operation's decision and digest; the first that the
    Runtime does not count (or that is not approved by it) is the answer, and the SDK item is
    approved only when every operation is."""
    req = request_for(gate, interruption)
    out = gate.approve(req, approval)
    base = approval.to_dict() if isinstance(approval, Approval) else dict(approval)
    for op in req.get("operations", ())[1:] if out.run else ():
        out = gate.approve(op, {**base, "decision_id": op["decision_id"], "action_digest": op["action_digest"]})
        if not out.run:
            break
    if out.run:
        state.approve(interruption)
    return out
