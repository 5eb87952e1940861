"""Stopline in front of every tool call of a LangGraph graph (``pip install 'stopline[langgraph]'``).

    from policy_engine.integrations.langgraph import gated_tool_node, route_tool_calls
    tools = gated_tool_node([send_reply, lookup], runtime, workflow="support-replies", approvers=directory)
    graph.add_node("tools", tools)
    graph.add_conditional_edges("agent", route_tool_calls, ["tools", END])  # one task per tool call

``tools`` is a ``langgraph.prebuilt.ToolNode`` (a ``StoplineToolNode``) whose
``wrap_tool_call`` is a ``StoplineToolWrapper``: use it as the graph's tool node (or pass it
to ``create_react_agent``). Every call is gated on the ``Runtime`` (recorded):

- allow: the call is claimed in the ledger (as an approved one is, below: of two workers
  running it from the same checkpoint exactly one runs it, the other is refused, "this call
  is already being run under its decision"), the tool runs and its execution is recorded
  with a receipt of the declared fields;
- require_approval: ``interrupt()`` with the decision (``decision_id``, ``action_digest``,
  ``tool_call_id``, the rule, the approvals required); resume with
  ``Command(resume=Approval(...).to_dict())``, or, when several calls are held, with
  ``Command(resume={interrupt.id: Approval.for_request(interrupt.value, who).to_dict(), ...})``.
  The approval counts only when it names this decision and digest and a principal whose
  roles (from ``approvers``) fill a slot; the approved call is claimed and runs once;
- deny, or a refused resume: a ``ToolMessage`` (status ``error``) with the reason;
- the arguments judged are the tool's: its own schema (``args_schema``, or
  ``tool_call_schema`` when it has injected arguments) validates the call as the tool will,
  and the gate judges the values that validation produces, defaults included (``"true"``
  for a ``bool`` is judged ``true``, as the tool receives it). Arguments the tool would
  refuse are gated (a stop fires, a deny is a deny) and never run: no execution is
  recorded for a tool that could not start;
- stop: the stop is recorded and ``WorkflowStopped`` halts the graph (a ``GraphBubbleUp``:
  ``handle_tool_errors``, a retry policy or an error handler never turns it into a message),
  again on each run of the thread while the workflow is stopped; once it is resumed, the
  thread goes on: the call whose decision was ``stop`` gets a ``ToolMessage`` (not run);
- a call naming no tool of the node: gated (a stop fires, a deny is a deny), never run,
  claimed or held (``ToolNode`` would run nothing): a ``ToolMessage`` naming the node's tools;
- a tool that raises (or is cancelled): its execution is recorded ``failed`` (with the error),
  linked to its decision (it may have had its effect), then the exception goes on as
  ``handle_tool_errors`` says;
- a tool that calls ``interrupt()`` itself under an allowed or approved decision: the resumed node
  continues that execution (the claim is kept by the same node of the same checkpoint,
  recorded in the ledger while it waits); it is recorded once, when it returns. The claim
  is the ledger's (a conditional, keyed append), so of two processes resuming the same
  interrupt (two workers sharing a checkpointer) exactly one continues; the other is
  refused ("the approval is already being used").

Several held calls in one model turn. LangGraph gives each task one pending interrupt at a
time, matched to resume values by their order in the node, so:

- with ``route_tool_calls`` (or ``create_react_agent`` / ``create_agent``, which send each
  call to the tool node as its own task) every held call raises its own interrupt, all in
  the same step: resume them together (a map from interrupt id to value) or some at a time;
- with ``tools_condition`` (one task for the turn) the node asks for the held calls one
  interrupt at a time, in the model's order, before any call of the turn runs; a value
  naming another held call of the turn counts for that call (never for the one asked).

Each resume value is checked against the decision it names (decision id and action digest):
an approval for one call never counts for another, even one with the same arguments.

A node that LangGraph re-runs on resume gets the same recorded decisions back (the call's
idempotency key: thread, call id, argument digest), replays its resume values to the same
answers, and a call that already ran is not run again.

Only public API of langgraph-prebuilt is used: ``ToolNode``'s constructor and its
``wrap_tool_call`` / ``awrap_tool_call`` wrappers, and the ``Runnable`` entry points
``invoke`` / ``ainvoke`` (where the node settles its turn); no private method is
overridden. The input formats read there are the ones ``ToolNode`` documents.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import replace
from typing import Any

from . import common
from .common import Approval, Check, Outcome, ToolGate, _digest, require_extra

require_extra("langgraph.prebuilt", "langgraph", "langgraph")

from langchain_core.messages import AIMessage, ToolMessage  # noqa: E402
from langchain_core.runnables import RunnableConfig  # noqa: E402
from langgraph.errors import GraphBubbleUp, GraphInterrupt  # noqa: E402
from langgraph.graph import END  # noqa: E402
from langgraph.prebuilt import ToolNode  # noqa: E402
from langgraph.types import Command, Send, interrupt  # noqa: E402
from pydantic import BaseModel, ValidationError  # noqa: E402

__all__ = ["gated_tool_node", "route_tool_calls", "StoplineToolNode", "StoplineToolWrapper", "Approval",
           "WorkflowStopped", "ToolGate"]

MAX_ROUNDS = 16  #: resume values judged per call while approvals are still missing
EXECUTOR = "stopline-executor:"


class WorkflowStopped(common.WorkflowStopped, GraphBubbleUp):
    """The stop, raised as LangGraph's ``GraphBubbleUp``: ToolNode re-raises it whatever its
    ``handle_tool_errors`` (which would otherwise turn it into a tool message the agent
    reads and goes on), and no retry policy runs the node again. Still a
    ``policy_engine.integrations.common.WorkflowStopped``."""


def _error(e: BaseException) -> dict:
    return {"error": str(e) or type(e).__name__}


def _conf(config: Any) -> Mapping[str, Any]:
    conf = config.get("configurable", {}) if isinstance(config, Mapping) else {}
    return conf if isinstance(conf, Mapping) else {}


def _scope(config: Any) -> str:
    """The call's scope in its idempotency key: the thread and the node's path without task ids."""
    conf = _conf(config)
    ns = "|".join(part.split(":", 1)[0] for part in str(conf.get("checkpoint_ns", "")).split("|"))
    return f"{conf.get('thread_id', '')}/{ns}"


def _lineage(config: Any, check: Check) -> str:
    """What a claim is bound to: this call in this task of this checkpoint (the task ids in
    the namespace come from the checkpoint), so only the node LangGraph resumes continues it."""
    conf = _conf(config)
    return _digest([check.key, str(conf.get("thread_id", "")), str(conf.get("checkpoint_ns", ""))])[:32]


def _config_of(request: Any) -> Any:
    rt = getattr(request, "runtime", None)
    return getattr(rt, "config", None) or {}


def _messages_of(result: Any, messages_key: str) -> list[ToolMessage]:
    """The tool messages a tool's result carries: itself, its ``Command``'s update (under
    the node's ``messages_key``), or those of each item of a list (``ToolNode`` takes a list
    of ``Command`` / ``ToolMessage`` with one message answering the call)."""
    if isinstance(result, ToolMessage):
        return [result]
    if isinstance(result, Command):
        update = result.update
        msgs = update.get(messages_key) if isinstance(update, Mapping) else \
            next((v for k, v in update if k == messages_key), None) if isinstance(update, (list, tuple)) else None
        return [m for m in (msgs if isinstance(msgs, (list, tuple)) else [msgs]) if isinstance(m, ToolMessage)]
    if isinstance(result, list):
        return [m for item in result if isinstance(item, (ToolMessage, Command))
                for m in _messages_of(item, messages_key)]
    return []


def _output(result: Any, call_id: str | None = None, messages_key: str = "messages") -> Any:
    """What the tool returned, for the receipt: its ``ToolMessage``'s artifact, else its
    content (JSON parsed); an error (``status="error"``) as ``{"error": content}``. A
    ``Command`` (or a list of them and messages) by the ``ToolMessage`` of this call it
    carries (the pattern LangGraph documents for tools that update the state)."""
    found = _messages_of(result, messages_key)
    mine = found if isinstance(result, ToolMessage) else \
        [m for m in found if call_id is None or m.tool_call_id == call_id]
    if not mine:
        return None
    msg = mine[-1]
    if msg.status == "error":
        return {"error": msg.content}
    if msg.artifact is not None:
        return msg.artifact
    c = msg.content
    if isinstance(c, str):
        try:
            return json.loads(c)
        except ValueError:
            return c
    return c


def _call_key(call: Mapping[str, Any]) -> tuple[str, str]:
    return str(call.get("id")), _digest([call.get("name"), call.get("args")])


def _decision_named(value: Any) -> Any:
    if isinstance(value, Approval):
        return value.decision_id
    return value.get("decision_id") if isinstance(value, Mapping) else None


class _Plan:
    """What the node decided for each call of its turn before running any (its wrapper runs
    the calls in parallel and takes its call's answer from here)."""

    def __init__(self, owner: StoplineToolWrapper) -> None:
        self.owner = owner
        self._lock = threading.Lock()
        self._items: dict[tuple[str, str], list[tuple[Check, Outcome]]] = {}

    def put(self, call: Mapping[str, Any], planned: tuple[Check, Outcome]) -> None:
        self._items.setdefault(_call_key(call), []).append(planned)

    def take(self, call: Mapping[str, Any]) -> tuple[Check, Outcome] | None:
        with self._lock:
            found = self._items.get(_call_key(call))
            return found.pop(0) if found else None


_PLAN: ContextVar[_Plan | None] = ContextVar("stopline_langgraph_plan", default=None)
_REQUEST_TOOL: ContextVar[Any] = ContextVar("stopline_langgraph_request_tool", default=None)
_NO_TOOL = object()  #: (in ``_REQUEST_TOOL``) the call's request names no tool of its node


def _as_received(tool: Any, args: Mapping[str, Any]) -> tuple[dict, str | None]:
    """The arguments as ``tool`` receives them, and why it would not run with them.

    LangChain validates a tool's arguments with its pydantic schema before the tool runs
    (lax: ``"true"`` for a ``bool`` becomes ``True``, ``"42"`` for an ``int`` becomes
    ``42``, a nested model is built from its dict) and passes the validated values of the
    fields sent, plus the fields with a default (``BaseTool`` does so when it parses a
    call). The gate judges those values, as JSON (``model_dump(mode="json")``): what the
    tool gets, never what the model typed. The schema is the tool's ``args_schema`` (its
    validators included), or its public ``tool_call_schema`` when it has arguments the
    ``ToolNode`` injects (state, store, the call id), which the model does not send. A
    validation error is the problem (the tool would not start). A tool with a JSON-schema
    ``args_schema``, or none, receives the arguments as sent."""
    raw = dict(args)
    if tool is None:
        return raw, None
    try:
        call_schema = tool.tool_call_schema
    except Exception:  # noqa: BLE001 - the tool cannot say its schema: LangChain passes the call as sent
        return raw, None
    if not (isinstance(call_schema, type) and issubclass(call_schema, BaseModel)):
        return raw, None  # a JSON-schema (or pydantic v1) tool: LangChain does not convert the arguments
    full = getattr(tool, "args_schema", None)
    model = full if (isinstance(full, type) and issubclass(full, BaseModel)
                     and set(full.model_fields) == set(call_schema.model_fields)) else call_schema
    try:
        m = model.model_validate(raw)
    except ValidationError as e:
        parts = ["{}: {}".format(".".join(str(x) for x in err.get("loc", ())) or "arguments", err.get("msg"))
                 for err in e.errors(include_url=False)[:5]]
        return raw, "; ".join(parts)[:common.MAX_PROBLEM]
    except Exception as e:  # noqa: BLE001 - a validator that raised: the tool would not start either
        return raw, f"{type(e).__name__}: {e}"[:common.MAX_PROBLEM]
    try:
        dumped = m.model_dump(mode="json", warnings=False)
    except Exception:  # noqa: BLE001 - a value JSON cannot hold: the gate reads it as the tool gets it
        dumped = m.model_dump(warnings=False)
    fields = type(m).model_fields
    keep = {k for k in dumped if k in raw or k in m.model_fields_set
            or (k in fields and not fields[k].is_required() and k not in ("args", "kwargs"))}
    named = set(fields) | {a for f in fields.values() for a in (f.alias, f.validation_alias) if isinstance(a, str)}
    # keys that name no parameter reach no tool: the gate still sees them as sent (the call's record)
    extra = {k: v for k, v in raw.items() if k not in named and k not in dumped}
    return {**{k: v for k, v in dumped.items() if k in keep}, **extra}, None


class StoplineToolWrapper:
    """A ``ToolNode`` ``wrap_tool_call`` (sync and async) that gates every call on a ToolGate.

    Under a ``StoplineToolNode`` the node settles its turn first (``settle``: gates every
    call, asks for the held ones), then the wrapper runs each call as settled. Alone (a
    ``ToolNode`` of your own) it settles its own call: right when each call is its own task
    (``route_tool_calls``), not when one task holds several calls.

    ``tools``: the node's tools by name (a ``StoplineToolNode`` fills it), whose schemas say
    how each call's arguments reach the tool (``_as_received``); alone, the wrapper reads
    each call's tool from its request."""

    def __init__(self, gate: ToolGate, tools: Mapping[str, Any] | None = None) -> None:
        self.gate = gate
        self.tools: dict[str, Any] = dict(tools or {})
        self.messages_key = "messages"  #: where a ``Command`` carries its messages (the node's key)

    def _tool(self, name: Any) -> Any:
        found = _REQUEST_TOOL.get()
        if found is not None and getattr(found, "name", None) == name:
            return found
        return self.tools.get(name) if isinstance(name, str) else None

    def _unknown(self, name: Any) -> str | None:
        """Why no tool of the node would run a call to ``name`` (``ToolNode`` answers such a
        call with its "not a valid tool" message, running nothing), or ``None``. Known only
        when the node's tools are known (a ``StoplineToolNode``) or the call's request says it
        names none (``request.tool`` is ``None``)."""
        if self._tool(name) is not None or not (self.tools or _REQUEST_TOOL.get() is _NO_TOOL):
            return None
        names = ", ".join(sorted(self.tools)[:20])
        return f"this tool node has no tool named {str(name)[:80]!r}" + (f" (its tools: {names})" if names else "")

    def _resumed_since(self, check: Check) -> bool:
        """``check`` is a ``stop`` decision recorded earlier (the node runs again from its
        checkpoint) and its workflow runs again: it was resumed since the stop."""
        return self.gate.resumed_since(check)

    # ---------------------------------------------------------------- settling a turn
    def settle(self, calls: Sequence[Mapping[str, Any]], config: Any) -> list[tuple[Check, Outcome]]:
        """Gate the calls of one task (in order) and settle the held ones with resume values.
        Raises ``GraphInterrupt`` (a value is needed) or ``WorkflowStopped``."""
        try:
            return self._settle(calls, config)
        except common.WorkflowStopped as e:
            if isinstance(e, GraphBubbleUp):
                raise
            raise WorkflowStopped(e.check) from None

    def _settle(self, calls: Sequence[Mapping[str, Any]], config: Any) -> list[tuple[Check, Outcome]]:
        scope = _scope(config)
        checks: list[Check] = []
        settled: list[Outcome | None] = []
        seen: set[str] = set()
        for call in calls:
            unknown = self._unknown(call["name"])
            args, problem = _as_received(self._tool(call["name"]), call.get("args") or {})
            check = self.gate.check(call["name"], args, call["id"], scope=scope, problem=unknown or problem)
            checks.append(check)
            if check.key in seen:  # the model sent the same call twice: it runs once
                settled.append(self.gate._refuse(check, f"call {check.call_id!r} with these arguments appears "
                                                        "twice in this turn; it runs once"))
            elif self._resumed_since(check):  # the stop stays recorded; the resumed workflow goes on
                settled.append(self.gate._refuse(
                    check, f"its decision was `stop` ({check.reason}) and workflow `{check.workflow}` was resumed "
                           "since: the call is not run (made again, it is gated again as a new call)"))
            elif unknown:  # gated (a stop fires, a deny is a deny), never run nor held: no tool would run it
                out = self.gate.outcome(check)
                settled.append(replace(out, message=f"Stopline refused `{check.tool}`: {unknown}; not run")
                               if out is not None and not out.run and not out.done and check.effect != "deny"
                               else out)
            elif check.effect == "require_approval" and not check.problem and \
                    (len(calls) > 1 or check.status in ("pending", "approved")):
                # settled by resume values, whatever the ledger says now: a re-run asks for as many
                # values as before, so the interrupts after it (a sibling's, the tool's) get theirs.
                # (One call whose decision is closed asks nothing: no interrupt can follow it.)
                settled.append(None)
            else:
                settled.append(self.gate.outcome(check))  # raises WorkflowStopped on stop
            seen.add(check.key)
        held = [i for i, out in enumerate(settled) if out is None]
        by_decision = {checks[i].decision_id: i for i in held}
        rounds = dict.fromkeys(held, 0)
        while (asked := next((i for i in held if settled[i] is None), None)) is not None:
            value = interrupt(checks[asked].request())
            named = _decision_named(value)
            i = by_decision.get(named, asked) if isinstance(named, str) else asked
            if settled[i] is not None:  # a value for a call already settled: it changes nothing
                continue
            out = self.gate.judge(checks[i], value)
            rounds[i] += 1
            if not out.pending or rounds[i] >= MAX_ROUNDS:
                settled[i] = out
        return [(c, out) for c, out in zip(checks, settled, strict=True) if out is not None]  # all settled

    # ---------------------------------------------------------------- claims
    def _claim(self, check: Check, out: Outcome, config: Any) -> tuple[Outcome, str | None]:
        """Claim the allowed or approved decision for this execution, or continue the
        execution this node began under it (its tool interrupted itself): the claim is bound
        to the call's task (``_lineage``) and its holder records each wait, so a claim is
        continued only while its execution waits, by the node LangGraph resumes.

        The claim is the ledger's, not this process's: a ``claimed`` transition appended
        only if the ledger, read under its append lock, still allows it (``_claim_turn``),
        so of two processes running (or resuming) the same call exactly one runs it and the
        other is refused ("the approval is already being used" for an approved call, "this
        call is already being run under its decision" for an allowed one). As with
        ``ToolGate.take``, a decision whose workflow was stopped after it (and resumed
        since) is not used: the call is refused, to be gated again as a new call."""
        gate, did = self.gate, check.decision_id
        st = gate.runtime.authorization(did, now=gate._t())
        if st.status in ("allowed", "approved"):
            gate._halt_if_stopped(check)
            st, holder, why, stop = self._claim_turn(did, f"{EXECUTOR}{_lineage(config, check)}:", waiting=True)
            if holder is not None:
                return Outcome(True, approver=out.approver), holder
            if stop is not None:
                return Outcome(False, f"Stopline refused `{check.tool}`: workflow `{check.workflow}` was stopped by "
                                      f"`{stop.body.get('trigger')}` after this call's decision (resumed since): "
                                      "the decision is not used; gate the call again (a new call)", spent=True), None
            if st is None or st.status in ("allowed", "approved"):
                what = "the approval is already being used" if check.effect == "require_approval" else \
                    "this call is already being run under its decision"
                return gate._refuse(check, f"{what} ({why})"), None
        if st.status == "executed":
            done = gate.outcome(replace(check, status="executed", used_by=st.used_by))
            return done or gate._refuse(check, "it already ran"), None
        return Outcome(False, gate._pending_message(check, st), pending=st.status == "pending"), None

    def _wait(self, check: Check, holder: str) -> None:
        """The tool interrupted itself: record that this execution waits (its claim kept)."""
        self._claim_turn(check.decision_id, holder, waiting=False)

    def _claim_turn(self, decision_id: str, holder: str, *,
                    waiting: bool) -> tuple[Any, str | None, str, Any]:
        """The next ``claimed`` transition of ``decision_id``, by the ledger's claim
        (``ToolGate.claim_in_ledger``: checked and appended under its append lock, keyed
        ``stopline:claim:<decision>:<n>``, so of concurrent claimants, in one process or
        several, exactly one is recorded), with this adapter's turns:

        A holder's claims alternate: taken (running), kept while its tool waits on an
        interrupt, taken again by the resumed node... ``waiting=True`` takes the claim of an
        allowed (not yet executed) or approved decision: a new one (named ``holder`` + a
        nonce) when it is unclaimed and no stop of its workflow came after it (unless the
        policy lets the action run while stopped, as ``ToolGate.take``), or the holder's own
        when its name starts with ``holder`` and it waits (an even count);
        ``waiting=False`` records that the running holder ``holder`` waits (an odd count).
        The current claimant is the last ``claimed`` transition (``SubjectStatus.claimed_by``);
        the first one closed the decision (``Runtime.claim_execution``).

        Returns the decision's status as read under the lock (``None`` if the ledger refused
        the append), the holder when the claim was recorded (else ``None``), why not, and
        the stop entry that came after the decision when that is why."""

        def turn(claims: list, stop_after: Any, nonce: str) -> tuple[str | None, str]:
            current: str | None = claims[-1] if claims else None
            turns = claims.count(current) if current is not None else 0
            if current is None and waiting:
                if stop_after() is not None:
                    return None, ""
                return holder + nonce, "runs"
            if current is not None and waiting and current.startswith(holder) and turns > 0 and turns % 2 == 0:
                return current, "continues after its tool's interrupt"
            if current is not None and not waiting and current == holder and turns % 2 == 1:
                return current, "waits on its tool's interrupt"
            return None, f"claimed by {current}" if current != holder else "its holder is not running"

        return self.gate.claim_in_ledger(decision_id, turn)

    # ---------------------------------------------------------------- running a call
    def _message(self, request: Any, out: Outcome) -> ToolMessage:
        call = request.tool_call
        return ToolMessage(content=out.message, name=call["name"], tool_call_id=call["id"],
                           status="success" if out.done and not out.failed else "error")

    def _prepare(self, request: Any) -> tuple[Check, Outcome, str | None]:
        plan = _PLAN.get()
        planned = plan.take(request.tool_call) if plan is not None and plan.owner is self else None
        config = _config_of(request)
        if planned is None:  # not settled by a StoplineToolNode: this call is its task's only call
            tool = getattr(request, "tool", None)
            token = _REQUEST_TOOL.set(_NO_TOOL if tool is None else tool)
            try:
                [planned] = self.settle([request.tool_call], config)
            finally:
                _REQUEST_TOOL.reset(token)
        check, out = planned
        if not out.run or check.effect not in ("allow", "require_approval"):
            return check, out, None
        try:
            out, holder = self._claim(check, out, config)
        except common.WorkflowStopped as e:
            raise WorkflowStopped(e.check) from None
        return check, out, holder

    def _finish(self, check: Check, out: Outcome, result: Any) -> Any:
        output = _output(result, check.call_id, self.messages_key)
        self.gate.record(check, output, out.approver)
        dropped = self.gate.receipt_dropped(check, output, out.approver)
        if dropped:  # recorded without them (``missing_receipt``): said in its ToolMessage's metadata
            found = _messages_of(result, self.messages_key)
            mine = found if isinstance(result, ToolMessage) else [m for m in found if m.tool_call_id == check.call_id]
            for m in mine[-1:]:  # (the message ``_output`` read the receipt from)
                m.response_metadata = {**(m.response_metadata or {}), "stopline": {"receipt_dropped": dropped}}
        return result

    def __call__(self, request: Any, execute: Any) -> Any:
        check, out, holder = self._prepare(request)
        if not out.run:
            return self._message(request, out)
        try:
            result = execute(request)
        except GraphInterrupt:  # the tool asks for input: it runs again on resume, under its claim
            if holder is not None:
                self._wait(check, holder)
            raise
        except GraphBubbleUp:
            raise
        except BaseException as e:  # it ran and failed: recorded, then as handle_tool_errors says
            self.gate.record(check, _error(e), out.approver, error=e)
            raise
        return self._finish(check, out, result)

    async def acall(self, request: Any, execute: Any) -> Any:
        check, out, holder = self._prepare(request)
        if not out.run:
            return self._message(request, out)
        try:
            result = await execute(request)
        except GraphInterrupt:
            if holder is not None:
                self._wait(check, holder)
            raise
        except GraphBubbleUp:
            raise
        except BaseException as e:  # also a cancelled call: it may have had its effect
            self.gate.record(check, _error(e), out.approver, error=e)
            raise
        return self._finish(check, out, result)


def _tool_calls(input: Any, messages_key: str) -> list[Mapping[str, Any]] | None:
    """The tool calls a ``ToolNode`` runs for ``input``, read from the input formats its
    documentation lists: a list of tool calls (``Send``), ``ToolCallWithContext``, or the
    last ``AIMessage`` of a message list or of the state's ``messages_key``. ``None``: no
    call found (``ToolNode`` then says what is wrong with its input)."""
    messages: Any
    if isinstance(input, list):
        if input and isinstance(input[-1], Mapping) and input[-1].get("type") == "tool_call":
            return list(input)
        messages = input
    elif isinstance(input, Mapping) and input.get("__type") == "tool_call_with_context":
        call = input.get("tool_call")
        return [call] if isinstance(call, Mapping) else None
    elif isinstance(input, Mapping):
        messages = input.get(messages_key) or []
    else:
        messages = getattr(input, messages_key, None) or []
    last = next((m for m in reversed(messages) if isinstance(m, AIMessage)), None) if isinstance(messages, list) \
        else None
    return list(last.tool_calls) if last is not None else None


class StoplineToolNode(ToolNode):
    """A ``ToolNode`` that settles its turn before running any call: every call gated in the
    model's order, the held ones asked for (interrupts) one at a time, then the calls run in
    parallel as ``ToolNode`` runs them. With one call per task (``route_tool_calls``) each
    held call is its own interrupt.

    Built on public API only: the turn is settled in the node's ``invoke`` / ``ainvoke``
    (the ``Runnable`` entry points LangGraph calls, streaming included), before ``ToolNode``
    runs the calls, and each call goes through the ``wrap_tool_call`` / ``awrap_tool_call``
    wrapper ``ToolNode`` takes, which finds its call's settled answer in the node's
    context. No private method of ``ToolNode`` is overridden or called
    (``tests/test_integrations_langgraph.py`` checks that, and the public signatures used)."""

    stopline: ToolGate

    def __init__(self, tools: Sequence[Any], wrapper: StoplineToolWrapper, *, messages_key: str = "messages",
                 **options: Any) -> None:
        super().__init__(list(tools), wrap_tool_call=wrapper, awrap_tool_call=wrapper.acall,
                         messages_key=messages_key, **options)
        wrapper.tools.update(self.tools_by_name)  # (public) how each call's arguments reach its tool
        wrapper.messages_key = messages_key
        self._stopline_wrapper = wrapper
        self._stopline_messages_key = messages_key
        self.stopline = wrapper.gate

    def _plan(self, input: Any, config: Any) -> _Plan | None:
        calls = _tool_calls(input, self._stopline_messages_key)
        if not calls:  # ToolNode says what is wrong with the input (or runs nothing)
            return None
        plan = _Plan(self._stopline_wrapper)
        for call, planned in zip(calls, self._stopline_wrapper.settle(calls, config or {}), strict=True):
            plan.put(call, planned)
        return plan

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        token = _PLAN.set(self._plan(input, config))
        try:
            return super().invoke(input, config, **kwargs)
        finally:
            _PLAN.reset(token)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        token = _PLAN.set(self._plan(input, config))
        try:
            return await super().ainvoke(input, config, **kwargs)
        finally:
            _PLAN.reset(token)


def route_tool_calls(state: Any, messages_key: str = "messages", node: str = "tools") -> list[Send] | str:
    """A ``tools_condition`` that sends each tool call of the last AI message to ``node`` as
    its own task (as ``create_react_agent`` does): every held call then raises its own
    interrupt in the same step. ``END`` when there is no tool call. For another node name:
    ``functools.partial(route_tool_calls, node="actions")``."""
    if isinstance(state, list):
        messages = state
    elif isinstance(state, Mapping):
        messages = state.get(messages_key, [])
    else:
        messages = getattr(state, messages_key, [])
    last = messages[-1] if messages else None
    calls = list(getattr(last, "tool_calls", None) or []) if isinstance(last, AIMessage) else []
    if not calls:
        return END
    return [Send(node, [{**c, "type": "tool_call"}]) for c in calls]


def gated_tool_node(tools: Sequence[Any], runtime: Any, *, workflow: str, approvers: Any = None,
                    gate: ToolGate | None = None, **options: Any) -> ToolNode:
    """A ``StoplineToolNode`` over ``tools`` with every call gated by Stopline. ``options``
    go to ``ToolGate`` (``action``, ``types``, ``receipt``, ``now``) unless they are
    ToolNode's (``name``, ``tags``, ``handle_tool_errors``, ``messages_key``)."""
    node_keys = {"name", "tags", "handle_tool_errors", "messages_key"}
    node_opts = {k: options.pop(k) for k in list(options) if k in node_keys}
    gate = gate or ToolGate(runtime, workflow, approvers, **options)
    return StoplineToolNode(tools, StoplineToolWrapper(gate), **node_opts)

