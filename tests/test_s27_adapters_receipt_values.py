"""A tool that ran under its decision is recorded whatever it returned (session 27).

Before, a receipt field the ledger cannot hold as RFC 8785 JSON (an integer beyond ±2^53-1,
such as a 64-bit id a payment provider returns; a NaN or an infinity; text with a lone
surrogate, as ``surrogateescape`` decodes a file name or a process's output) made the
execution's append fail after the tool had run: the LangGraph graph and the Agents SDK run
raised ``InvalidEntry`` (a traceback), no execution was recorded (the call's claim left in
doubt, the ledger silent about a refund that happened), and the MCP client got "Internal
server error". Now the field is recorded as its text (the digits, ``"NaN"``, the surrogate
escaped ``\\udcff``), as the docs promise for any output JSON cannot hold."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

pytest.importorskip("langgraph.prebuilt")
pytest.importorskip("agents")
pytest.importorskip("mcp")
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

import anyio  # noqa: E402
from agents import Agent, Runner, function_tool  # noqa: E402
from langchain_core.messages import AIMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402
from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402
from langgraph.graph import END, START, MessagesState, StateGraph  # noqa: E402
from langgraph.prebuilt import tools_condition  # noqa: E402
from mcp import Client  # noqa: E402
from mcp.server.mcpserver import MCPServer  # noqa: E402
from test_integrations_openai_agents import example  # noqa: E402

from policy_engine import Runtime  # noqa: E402
from policy_engine.integrations import openai_agents as oa  # noqa: E402
from policy_engine.integrations.langgraph import gated_tool_node  # noqa: E402
from policy_engine.integrations.mcp import GATE_META, StoplineGateway, protect  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "examples" / "integrations"
DIRECTORY = {"fin": ["finance_approver"], "ops": ["operator"]}

#: (what the tool returns as `refund_id`, what the receipt records)
VALUES = {
    "int64": (2**63 - 1, "9223372036854775807"),
    "negative": (-(2**53), "-9007199254740992"),
    "nan": (float("nan"), "NaN"),
    "infinity": (float("inf"), "Infinity"),
    "surrogate": ("rf-\udcff", "rf-\\udcff"),
}


@pytest.fixture
def rt(tmp_path):
    with Runtime.open(str(POLICY), ledger=f"sqlite:///{tmp_path / 'l.db'}") as r:
        yield r


def executions(rt) -> list:
    return rt.ledger.entries(kind="execution")


def langgraph_graph(rt, tools, script):
    def model(state: MessagesState) -> dict:
        turn = sum(1 for m in state["messages"] if isinstance(m, AIMessage))
        return {"messages": [AIMessage(content="", tool_calls=script[turn] if turn < len(script) else [])]}

    g = StateGraph(MessagesState)
    g.add_node("agent", model)
    g.add_node("tools", gated_tool_node(tools, rt, workflow="shop-support", approvers=DIRECTORY))
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: END})
    g.add_edge("tools", "agent")
    return g.compile(checkpointer=InMemorySaver())


@pytest.mark.parametrize("kind", sorted(VALUES))
def test_langgraph_a_tool_returning_what_the_ledger_cannot_hold_is_recorded_as_its_text(rt, kind):
    value, recorded = VALUES[kind]
    ran: list = []

    @tool
    def refund_order(order_id: str, amount: int) -> dict:
        """Refund an order."""
        ran.append(amount)
        return {"refund_id": value, "order_id": order_id, "amount": amount}

    call = {"name": "refund_order", "args": {"order_id": "A-1", "amount": 20}, "id": "c1"}
    g = langgraph_graph(rt, [refund_order], [[call], [call]])  # the model makes the same call again
    cfg = {"configurable": {"thread_id": "t"}}
    # before: InvalidEntry out of the graph, after the refund was made
    state = g.invoke({"messages": [("user", "go")]}, cfg)
    assert ran == [20]  # once: the same call again is "already ran"
    [x] = executions(rt)
    assert x.body["authorized"] is True and "outcome" not in x.body
    assert x.body["receipt"] == {"order_id": "A-1", "amount": 20, "refund_id": recorded}
    assert rt.claims_in_doubt() == []
    [_, again] = [m for m in state["messages"] if m.type == "tool"]
    assert "already ran" in again.content


@pytest.mark.parametrize("kind", sorted(VALUES))
def test_openai_agents_a_tool_returning_what_the_ledger_cannot_hold_is_recorded_as_its_text(rt, kind):
    value, recorded = VALUES[kind]
    ran: list = []

    @function_tool
    def refund_order(order_id: str, amount: int) -> dict:
        """Refund an order."""
        ran.append(amount)
        return {"refund_id": value, "order_id": order_id, "amount": amount}

    model = example.ScriptedModel([[("refund_order", "c1", {"order_id": "A-1", "amount": 20})]])
    agent = Agent(name="shop", instructions="x", model=model, tools=[refund_order])
    oa.protect(agent, rt, workflow="shop-support", approvers=DIRECTORY)
    asyncio.run(Runner.run(agent, "go"))  # before: UserError "Error running tool refund_order: ... InvalidEntry"
    assert ran == [20]
    [x] = executions(rt)
    assert x.body["authorized"] is True and "outcome" not in x.body
    assert x.body["receipt"] == {"order_id": "A-1", "amount": 20, "refund_id": recorded}
    assert rt.claims_in_doubt() == []


def test_a_failed_tool_whose_partial_output_holds_such_values_is_still_recorded_failed(rt):
    @tool
    def refund_order(order_id: str, amount: int) -> dict:
        """Refund an order."""
        raise RuntimeError(f"provider answered refund {2**63 - 1} for \udcff")

    call = {"name": "refund_order", "args": {"order_id": "A-1", "amount": 20}, "id": "c1"}
    g = langgraph_graph(rt, [refund_order], [[call]])
    with pytest.raises(RuntimeError):
        g.invoke({"messages": [("user", "go")]}, {"configurable": {"thread_id": "t"}})
    [x] = executions(rt)
    assert x.body["outcome"] == "failed"
    assert x.body["error"] == "RuntimeError: provider answered refund 9223372036854775807 for \\udcff"


@pytest.mark.parametrize("mode", ["gateway", "middleware"])
def test_mcp_a_tool_returning_a_64_bit_integer_is_answered_and_recorded(rt, mode):
    ran: list = []
    srv = MCPServer("files")

    @srv.tool()
    def write_file(path: str, text: str) -> dict:
        ran.append(path)
        return {"path": path, "bytes": 2**63 - 1}

    if mode == "gateway":
        server = StoplineGateway(srv, rt, workflow="mcp-files", approvers=DIRECTORY).server
    else:
        protect(srv, rt, workflow="mcp-files", approvers=DIRECTORY)
        server = srv

    async def go():
        async with Client(server) as c:
            return await c.call_tool("write_file", {"path": "a.txt", "text": "x"})

    res = anyio.run(go)  # before: "Internal server error", nothing recorded
    assert ran == ["a.txt"]
    assert not res.is_error and (res.meta or {})[GATE_META]["outcome"] == "ran"
    [x] = executions(rt)
    assert x.body["receipt"] == {"path": "a.txt", "bytes": "9223372036854775807"}
    assert rt.claims_in_doubt() == []
