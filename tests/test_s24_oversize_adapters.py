"""Tool arguments beyond the engine's input limits, through the LangGraph and OpenAI Agents
SDK adapters (the real packages): the call is recorded as a bounded deny naming the limit
(the Runtime's ``gatejson.oversize``), the agent is told so, the tool never runs.

Before: the arguments were gated as they were, so a 4 MB string or a 100,001-item list in
an argument no condition reads was allowed, the tool ran, and the arguments were recorded
whole in the ledger; arguments nested 10,000 deep made the LangGraph node raise
``RecursionError`` (``common._plain``), nothing recorded. And ``McpGate.log`` grew by one
entry per call for as long as the gate lived."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from policy_engine import Runtime
from policy_engine.ledger.canonical import canonical_text
from policy_engine.limits import MAX_INPUT_CHARS, MAX_INPUT_ITEMS

POLICY = Path(__file__).resolve().parent.parent / "examples" / "integrations"
DIRECTORY = {"fin": ["finance_approver"], "ops": ["operator"]}
BOUND = 20_000  #: a refused call's whole decision body stays below this
TO = "a@customer.example"  # `allow customer_mail`
OVER = {"chars": ({"body": "x" * (MAX_INPUT_CHARS + 1)}, "MAX_INPUT_CHARS"),
        "items": ({"body": "hi", "tags": ["t"] * (MAX_INPUT_ITEMS + 1)}, "MAX_INPUT_ITEMS")}


def nested(levels: int) -> list:
    v: list = []
    for _ in range(levels - 1):
        v = [v]
    return v


@pytest.fixture
def rt(tmp_path):
    with Runtime.open(str(POLICY), ledger=f"sqlite:///{tmp_path / 'l.db'}") as r:
        yield r


def the_bounded_deny(rt, why: str) -> None:
    [d] = rt.ledger.entries(kind="decision")
    assert d.body["decision"]["effect"] == "deny" and why in d.body["action_error"]
    assert isinstance(d.body["action"], str) and len(canonical_text(d.body)) < BOUND
    assert rt.ledger.entries(kind="execution") == []


# ------------------------------------------------------------------------------------------ LangGraph
def langgraph_run(rt, args: dict, checkpointer: bool = True) -> tuple[list, str]:
    pytest.importorskip("langgraph.prebuilt")
    from langchain_core.messages import AIMessage
    from langchain_core.tools import tool
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import tools_condition

    from policy_engine.integrations.langgraph import gated_tool_node

    mails: list = []

    @tool
    def send_email(to: str, body: str) -> dict:
        """Email someone."""
        mails.append(to)
        return {"message_id": "m-1", "to": to}

    call = {"name": "send_email", "args": {"to": TO, **args}, "id": "c1"}

    def model(state: MessagesState) -> dict:
        first = not any(isinstance(m, AIMessage) for m in state["messages"])
        return {"messages": [AIMessage(content="", tool_calls=[call] if first else [])]}

    g = StateGraph(MessagesState)
    g.add_node("agent", model)
    g.add_node("tools", gated_tool_node([send_email], rt, workflow="shop-support", approvers=DIRECTORY))
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: END})
    g.add_edge("tools", "agent")
    graph = g.compile(checkpointer=InMemorySaver()) if checkpointer else g.compile()
    state = graph.invoke({"messages": [("user", "go")]}, {"configurable": {"thread_id": "t"}})
    [msg] = [m for m in state["messages"] if m.type == "tool"]
    return mails, str(msg.content)


@pytest.mark.parametrize("kind", sorted(OVER))
def test_langgraph_arguments_beyond_the_limits_are_a_recorded_bounded_deny(rt, kind):
    args, why = OVER[kind]
    mails, told = langgraph_run(rt, args)
    assert mails == []
    assert told.startswith("Stopline denied `send_email`") and "beyond the gate's input limits" in told and why in told
    the_bounded_deny(rt, why)


def test_langgraph_arguments_nested_10000_deep_are_a_recorded_deny_not_a_recursion_error(rt):
    """(Without a checkpointer: LangGraph's own serializer refuses such state first.)"""
    mails, told = langgraph_run(rt, {"body": "hi", "blob": nested(10_000)}, checkpointer=False)
    assert mails == [] and told.startswith("Stopline denied `send_email`") and "nests deeper" in told
    the_bounded_deny(rt, "nests deeper than 64 levels")


def test_langgraph_within_the_limits_runs_as_ever(rt):
    mails, _ = langgraph_run(rt, {"body": "x" * 1000})
    assert mails == [TO]


# ------------------------------------------------------------------------------------------ OpenAI Agents
def openai_run(rt, raw_arguments: str) -> tuple[list, list[str]]:
    pytest.importorskip("agents")
    os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")
    from agents import Agent, Model, ModelResponse, Runner, Usage, function_tool
    from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText

    from policy_engine.integrations.openai_agents import protect

    class Raw(Model):
        def __init__(self) -> None:
            self.turn = 0

        async def get_response(self, *a, **k) -> ModelResponse:
            self.turn += 1
            if self.turn == 1:
                out: list = [ResponseFunctionToolCall(type="function_call", name="send_email", call_id="c1",
                                                      arguments=raw_arguments, id="fc_c1", status="completed")]
            else:
                out = [ResponseOutputMessage(id="msg", type="message", role="assistant", status="completed",
                                             content=[ResponseOutputText(type="output_text", text="done",
                                                                         annotations=[])])]
            return ModelResponse(output=out, usage=Usage(), response_id=None)

        def stream_response(self, *a, **k):  # pragma: no cover
            raise NotImplementedError

    mails: list = []

    @function_tool
    def send_email(to: str, body: str, tags: list[str] | None = None) -> str:
        """Email someone."""
        mails.append(to)
        return json.dumps({"message_id": "m-1", "to": to})

    agent = Agent(name="shop", instructions="x", model=Raw(), tools=[send_email])
    protect(agent, rt, workflow="shop-support", approvers=DIRECTORY)
    result = asyncio.run(Runner.run(agent, "go"))
    return mails, [str(i.output) for i in result.new_items if getattr(i, "output", None) is not None]


@pytest.mark.parametrize("kind", sorted(OVER))
def test_openai_agents_arguments_beyond_the_limits_are_a_recorded_bounded_deny(rt, kind):
    args, why = OVER[kind]
    mails, outputs = openai_run(rt, json.dumps({"to": TO, **args}))
    assert mails == []
    [told] = outputs
    assert told.startswith("Stopline denied `send_email`") and "beyond the gate's input limits" in told and why in told
    the_bounded_deny(rt, why)


def test_openai_agents_within_the_limits_runs_as_ever(rt):
    mails, _ = openai_run(rt, json.dumps({"to": TO, "body": "hi", "tags": ["t"] * 1000}))
    assert mails == [TO]


def test_openai_agents_arguments_too_deep_to_parse_are_unparsed_not_a_recursion_error():
    """(The SDK's own tool planning parses function-call arguments first; the gate's parser
    serves the hosted and native tools' arguments as well: it must not raise either.)"""
    pytest.importorskip("agents")
    from policy_engine.integrations.openai_agents_tools import _args

    raw = '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"
    assert _args(raw) == {"_unparsed_arguments": raw}


# ------------------------------------------------------------------------------------------ McpGate.log
def test_mcp_gate_log_keeps_only_the_latest_calls(rt, monkeypatch):
    pytest.importorskip("mcp")
    import anyio
    from mcp import Client
    from mcp.server.mcpserver import MCPServer
    from mcp_types import ToolAnnotations

    from policy_engine.integrations import mcp as stopline_mcp

    monkeypatch.setattr(stopline_mcp, "MAX_LOG", 3)
    srv = MCPServer("files")
    ran: list = []

    @srv.tool(annotations=ToolAnnotations(destructive_hint=True))
    def write_file(path: str, text: str = "") -> dict:
        ran.append(path)
        return {"path": path, "bytes": len(text)}

    gate = stopline_mcp.protect(srv, rt, workflow="mcp-files", approvers=DIRECTORY)

    async def go():
        async with Client(srv) as c:
            for i in range(5):
                await c.call_tool("write_file", {"path": f"f{i}.txt", "text": "hi"})
    anyio.run(go)
    assert ran == [f"f{i}.txt" for i in range(5)]
    assert [e["args"]["path"] for e in gate.log] == ["f2.txt", "f3.txt", "f4.txt"]  # the latest 3, oldest first
    assert gate.log[0]["outcome"] == "ran"
    assert len(rt.ledger.entries(kind="decision")) == 5  # the ledger keeps every decision
