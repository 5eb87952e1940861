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

import json
import weakref
from typing import Any, cast

from .common import Approval, Check, Outcome, ToolGate, WorkflowStopped, require_extra

require_extra("agents", "openai-agents", "openai_agents")

from agents import FunctionTool, ToolGuardrailFunctionOutput, tool_input_guardrail  # noqa: E402

__all__ = ["protect", "approve", "request_for", "Approval", "ToolGate", "WorkflowStopped"]


def _args(raw: Any) -> dict:
    try:
        v = json.loads(raw) if isinstance(raw, str) and raw else (raw or {})
    except ValueError:
        v = {"_unparsed_arguments": raw}
    return v if isinstance(v, dict) else {"_arguments": v}


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

    def check(self, name: str, args: dict, call_id: str) -> Check:
        return self.gate.check(name, args, call_id, scope=_scope(None, self.gate))

    async def needs_approval(self, ctx: Any, params: dict, call_id: str, name: str) -> bool:
        c = self.check(name, params, call_id)
        return c.effect == "require_approval" and c.status == "pending"

    def guard(self, data: Any) -> Any:
        tc = data.context
        try:
            c = self.check(tc.tool_name, _args(tc.tool_arguments), tc.tool_call_id)
            out = self.gate.outcome(c)
            if out is None:
                out = self.gate.ready(c)  # the ledger's word, never the SDK's approval flag
        except WorkflowStopped as e:
            return ToolGuardrailFunctionOutput.raise_exception(output_info={"stopline": "stop", "reason": str(e)})
        if not out.run:
            return ToolGuardrailFunctionOutput.reject_content(out.message, output_info={"stopline": c.effect})
        self._clear(tc, c, out)
        return ToolGuardrailFunctionOutput.allow(output_info={"stopline": c.effect, "decision_id": c.decision_id})

    def wrap(self, tool: Any) -> None:
        inner = tool.on_invoke_tool
        name = tool.name

        async def on_invoke_tool(ctx: Any, raw: str) -> Any:
            cleared = self.cleared.pop(id(ctx), None)
            if cleared is None or cleared[0]() is not ctx or cleared[1] != getattr(ctx, "tool_call_id", None) \
                    or cleared[2] != raw:  # reached without the guardrail, or not the call it cleared
                return f"Stopline refused `{name}`: the call was not gated"
            c, out = cleared[3], cleared[4]
            try:  # the ledger's claim, allowed or approved: of two workers running this call, one runs
                out = self.gate.take(c, out.approver)
            except WorkflowStopped as e:  # stopped since the guardrail: not run
                return f"Stopline refused `{name}`: {e}"
            if not out.run:
                return out.message
            try:
                result = await inner(ctx, raw)
            except BaseException as e:  # also a timeout (the SDK cancels the call): it may have run
                self.gate.record(c, {"error": str(e) or type(e).__name__}, out.approver)
                raise
            self.gate.record(c, result, out.approver)
            return result

        tool.on_invoke_tool = on_invoke_tool

        async def needs(ctx: Any, params: dict, call_id: str) -> bool:
            return await self.needs_approval(ctx, params, call_id, name)

        tool.needs_approval = needs
        guard = tool_input_guardrail(self.guard)
        tool.tool_input_guardrails = [guard, *(tool.tool_input_guardrails or [])]


def protect(agent: Any, runtime: Any, *, workflow: str, approvers: Any = None, scope: str = "",
            gate: ToolGate | None = None, **options: Any) -> ToolGate:
    """Gate every function tool of ``agent`` (in place). ``scope`` separates runs whose
    model reuses call ids. Returns the ``ToolGate`` (``approve`` records approvals)."""
    gate = gate or ToolGate(runtime, workflow, approvers, **options)
    gate.scope = scope  # type: ignore[attr-defined]
    g = _Gated(gate)
    for t in agent.tools:
        if isinstance(t, FunctionTool):
            g.wrap(t)
    gate._openai_agents = g  # type: ignore[attr-defined]
    return gate


def request_for(gate: ToolGate, interruption: Any) -> dict:
    """The decision behind an SDK interruption (a ``ToolApprovalItem``), as the reviewer sees it."""
    raw = interruption.raw_item
    get = raw.get if isinstance(raw, dict) else (lambda k: getattr(raw, k, None))
    c = gate.check(cast(str, interruption.tool_name or get("name")), _args(get("arguments")), cast(str, get("call_id")),
                   scope=getattr(gate, "scope", ""))
    return c.request()


def approve(gate: ToolGate, state: Any, interruption: Any, approval: Approval | dict) -> Outcome:
    """Record ``approval`` on the Runtime; approve the SDK item (for this call only) when
    the Runtime counted it and the decision is approved. Returns the gate's ``Outcome``."""
    req = request_for(gate, interruption)
    out = gate.approve(req, approval)
    if out.run:
        state.approve(interruption)
    return out
