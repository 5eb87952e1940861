"""Stopline in front of every tool call of a LangGraph graph (``pip install 'stopline[langgraph]'``).

    from policy_engine.integrations.langgraph import gated_tool_node
    tools = gated_tool_node([send_reply, lookup], runtime, workflow="support-replies", approvers=directory)

``tools`` is a ``langgraph.prebuilt.ToolNode`` whose ``wrap_tool_call`` is a
``StoplineToolWrapper``: use it as the graph's tool node (or pass it to
``create_react_agent``). Every call is gated on the ``Runtime`` (recorded):

- allow: the tool runs and its execution is recorded with a receipt of the declared fields;
- require_approval: ``interrupt()`` with the decision (``decision_id``, ``action_digest``,
  the rule, the approvals required); resume with ``Command(resume=Approval(...).to_dict())``.
  The approval counts only when it names this decision and digest and a principal whose
  roles (from ``approvers``) fill a slot; the approved call is claimed and runs once;
- deny, or a refused resume: a ``ToolMessage`` (status ``error``) with the reason;
- stop: the stop is recorded and ``WorkflowStopped`` halts the graph (a ``GraphBubbleUp``:
  ``handle_tool_errors``, a retry policy or an error handler never turns it into a message);
- a tool that raises (or is cancelled): its execution is recorded, linked to its decision
  (it may have had its effect), then the exception goes on as ``handle_tool_errors`` says.

A node that LangGraph re-runs on resume gets the same recorded decisions back (the call's
idempotency key: thread, call id, argument digest), and a call that already ran is not
run again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from . import common
from .common import Approval, Check, Outcome, ToolGate, require_extra

require_extra("langgraph.prebuilt", "langgraph", "langgraph")

from langchain_core.messages import ToolMessage  # noqa: E402
from langgraph.errors import GraphBubbleUp  # noqa: E402
from langgraph.prebuilt import ToolNode  # noqa: E402
from langgraph.types import interrupt  # noqa: E402

__all__ = ["gated_tool_node", "StoplineToolWrapper", "Approval", "WorkflowStopped", "ToolGate"]

MAX_ROUNDS = 16  #: interrupts per call while approvals are still missing


class WorkflowStopped(common.WorkflowStopped, GraphBubbleUp):
    """The stop, raised as LangGraph's ``GraphBubbleUp``: ToolNode re-raises it whatever its
    ``handle_tool_errors`` (which would otherwise turn it into a tool message the agent
    reads and goes on), and no retry policy runs the node again. Still a
    ``policy_engine.integrations.common.WorkflowStopped``."""


def _error(e: BaseException) -> dict:
    return {"error": str(e) or type(e).__name__}


def _scope(request: Any) -> str:
    rt = getattr(request, "runtime", None)
    cfg = getattr(rt, "config", None) or {}
    conf = cfg.get("configurable", {}) if isinstance(cfg, dict) else {}
    ns = "|".join(part.split(":", 1)[0] for part in str(conf.get("checkpoint_ns", "")).split("|"))
    return f"{conf.get('thread_id', '')}/{ns}"  # the node's path without its task ids


def _output(result: Any) -> Any:
    if isinstance(result, ToolMessage):
        c = result.content
        if result.artifact is not None:
            return result.artifact
        if isinstance(c, str):
            try:
                return json.loads(c)
            except ValueError:
                return c
        return c
    return None


class StoplineToolWrapper:
    """A ``ToolNode`` ``wrap_tool_call`` (sync and async) that gates every call on a ToolGate."""

    def __init__(self, gate: ToolGate) -> None:
        self.gate = gate

    def _message(self, request: Any, out: Outcome) -> ToolMessage:
        call = request.tool_call
        return ToolMessage(content=out.message, name=call["name"], tool_call_id=call["id"],
                           status="success" if out.done else "error")

    def _decide(self, request: Any) -> tuple[Check, Outcome]:
        try:
            return self._gate(request)
        except common.WorkflowStopped as e:
            if isinstance(e, GraphBubbleUp):
                raise
            raise WorkflowStopped(e.check) from None

    def _gate(self, request: Any) -> tuple[Check, Outcome]:
        call = request.tool_call
        check = self.gate.check(call["name"], call.get("args") or {}, call["id"], scope=_scope(request))
        out = self.gate.outcome(check)  # raises WorkflowStopped on stop
        rounds = 0
        while out is None or (out.pending and rounds < MAX_ROUNDS):
            rounds += 1
            out = self.gate.accept(check, interrupt(check.request()))
        return check, out

    def _finish(self, request: Any, check: Check, out: Outcome, result: Any) -> Any:
        output = _output(result)
        if isinstance(result, ToolMessage) and result.status == "error":
            output = {"error": result.content}
        self.gate.record(check, output, out.approver)
        return result

    def __call__(self, request: Any, execute: Any) -> Any:
        check, out = self._decide(request)
        if not out.run:
            return self._message(request, out)
        try:
            result = execute(request)
        except GraphBubbleUp:  # an interrupt inside the tool: it runs again on resume
            raise
        except BaseException as e:  # it ran and failed: recorded, then as handle_tool_errors says
            self.gate.record(check, _error(e), out.approver)
            raise
        return self._finish(request, check, out, result)

    async def acall(self, request: Any, execute: Any) -> Any:
        check, out = self._decide(request)
        if not out.run:
            return self._message(request, out)
        try:
            result = await execute(request)
        except GraphBubbleUp:
            raise
        except BaseException as e:  # also a cancelled call: it may have had its effect
            self.gate.record(check, _error(e), out.approver)
            raise
        return self._finish(request, check, out, result)


def gated_tool_node(tools: Sequence[Any], runtime: Any, *, workflow: str, approvers: Any = None,
                    gate: ToolGate | None = None, **options: Any) -> ToolNode:
    """A ``ToolNode`` over ``tools`` with every call gated by Stopline. ``options`` go to
    ``ToolGate`` (``action``, ``types``, ``receipt``, ``now``) unless they are ToolNode's
    (``name``, ``tags``, ``handle_tool_errors``, ``messages_key``)."""
    node_keys = {"name", "tags", "handle_tool_errors", "messages_key"}
    node_opts = {k: options.pop(k) for k in list(options) if k in node_keys}
    gate = gate or ToolGate(runtime, workflow, approvers, **options)
    w = StoplineToolWrapper(gate)
    node = ToolNode(list(tools), wrap_tool_call=w, awrap_tool_call=w.acall, **node_opts)
    node.stopline = gate  # type: ignore[attr-defined]
    return node
