"""Audit (s18) of the agent-framework adapters: the arguments the gate judges are the
arguments the tool receives.

Every framework validates a tool's arguments before the tool runs, and validation coerces:
LangChain and the OpenAI Agents SDK build a pydantic model of the parameters (lax mode:
``"true"``, ``1``, ``"yes"`` become ``True``; ``"42"`` becomes ``42``), and an MCP server
built with ``MCPServer`` does the same. A gate that judges the raw arguments sees a string
where the tool gets a boolean: a policy rule ``action.recursive == true`` does not match
``"true"`` (CEL equality across types is false, not an error), so a call the policy holds
for approval ran at once, recursive. The same for the defaults a tool fills in (the gate
saw no field, the tool a value) and for arguments the tool refuses (the tool never ran,
yet its execution was recorded).

Each adapter now gates the arguments as the tool will receive them, and never runs a call
whose arguments the tool would read differently: LangGraph judges the values the tool's own
schema produces (and hands the tool exactly those), the Agents SDK and MCP refuse arguments
that do not match the tool's declared input schema, and all three see the declared defaults.
Real frameworks, scripted models, no mocks."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

pytest.importorskip("langgraph.prebuilt")
pytest.importorskip("agents")
pytest.importorskip("mcp")
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

import anyio  # noqa: E402
from langchain_core.messages import AIMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402
from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402
from langgraph.graph import END, START, MessagesState, StateGraph  # noqa: E402
from langgraph.prebuilt import tools_condition  # noqa: E402
from langgraph.types import Command  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from policy_engine import Runtime  # noqa: E402
from policy_engine.integrations import langgraph as lg  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DIRECTORY = {"ops": ["operator"]}

POLICY = """
roles [operator]

workflow "files" {
  version "1"
  owners {
    business "Operations"
    technical "Platform"
  }
  default deny

  action delete_path {
    system "files"
    description "Delete a path (recursively when asked)"
    irreversible
    receipt [path, recursive]

    require_approval recursive_delete by 1 operator when `action.recursive == true`
    allow single_delete when `action.path != ""`
  }

  action transfer {
    system "bank"
    description "Move money"
    irreversible
    receipt [order]

    require_approval express_transfer by 1 operator when `action.order.express == true`
    allow plain_transfer when `action.order.amount <= 1000`
  }
}
"""


@pytest.fixture
def rt(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "files.policy").write_text(POLICY)
    with Runtime.open(str(tmp_path / "p"), ledger=f"sqlite:///{tmp_path / 'l.db'}") as r:
        yield r


def executions(rt) -> list:
    return rt.ledger.entries(kind="execution")


# ------------------------------------------------------------------ LangGraph
class Order(BaseModel):
    amount: int
    express: bool = False


def lg_tools(ran: list):
    @tool
    def delete_path(path: str, recursive: bool = False) -> dict:
        """Delete a path."""
        ran.append(("delete_path", path, recursive))
        return {"deleted": path}

    @tool
    def transfer(order: Order) -> dict:
        """Move money."""
        ran.append(("transfer", order.amount, order.express))
        return {"ok": True}

    return [delete_path, transfer]


def lg_graph(rt, ran: list, calls: list[dict]):
    def model(state: MessagesState) -> dict:
        turn = sum(1 for m in state["messages"] if isinstance(m, AIMessage))
        return {"messages": [AIMessage(content="", tool_calls=calls if turn == 0 else [])]}

    g = StateGraph(MessagesState)
    g.add_node("agent", model)
    g.add_node("tools", lg.gated_tool_node(lg_tools(ran), rt, workflow="files", approvers=DIRECTORY))
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: END})
    g.add_edge("tools", "agent")
    return g.compile(checkpointer=InMemorySaver())


def lg_messages(state) -> dict:
    return {m.tool_call_id: m for m in state["messages"] if m.type == "tool"}


@pytest.mark.parametrize("sent", ["true", 1, "yes"])
def test_langgraph_a_value_the_tool_reads_as_true_is_held_as_true(rt, sent):
    ran: list = []
    g = lg_graph(rt, ran, [{"name": "delete_path", "args": {"path": "/data", "recursive": sent}, "id": "c1"}])
    cfg = {"configurable": {"thread_id": "t"}}
    state = g.invoke({"messages": [("user", "go")]}, cfg)
    assert ran == []  # the tool would have received recursive=True: the policy holds that
    [ask] = state["__interrupt__"]
    assert ask.value["rule"] == "recursive_delete" and ask.value["args"]["recursive"] is True
    state = g.invoke(Command(resume=lg.Approval.for_request(ask.value, "ops").to_dict()), cfg)
    assert ran == [("delete_path", "/data", True)] and lg_messages(state)["c1"].status == "success"
    [x] = executions(rt)
    assert x.body["authorized"] and x.body["receipt"] == {"path": "/data", "recursive": True}


def test_langgraph_a_nested_model_argument_is_judged_as_the_tool_receives_it(rt):
    ran: list = []
    g = lg_graph(rt, ran, [{"name": "transfer", "args": {"order": {"amount": "900", "express": "on"}}, "id": "c1"}])
    state = g.invoke({"messages": [("user", "go")]}, {"configurable": {"thread_id": "t"}})
    assert ran == []
    [ask] = state["__interrupt__"]
    assert ask.value["rule"] == "express_transfer" and ask.value["args"]["order"] == {"amount": 900, "express": True}


def test_langgraph_the_gate_sees_the_defaults_the_tool_fills_in(rt):
    ran: list = []
    g = lg_graph(rt, ran, [{"name": "delete_path", "args": {"path": "/tmp/x"}, "id": "c1"}])
    state = g.invoke({"messages": [("user", "go")]}, {"configurable": {"thread_id": "t"}})
    assert "__interrupt__" not in state  # recursive is False (its default): no approval needed
    assert ran == [("delete_path", "/tmp/x", False)]
    [x] = executions(rt)
    assert x.body["receipt"] == {"path": "/tmp/x", "recursive": False}


REFUSED_BY_THE_TOOL = [{"path": "/x", "recursive": "maybe"}, {"path": 7, "recursive": False}]  # the policy allows


@pytest.mark.parametrize("args", REFUSED_BY_THE_TOOL)
def test_langgraph_arguments_the_tool_refuses_are_not_recorded_as_executed(rt, args):
    ran: list = []
    g = lg_graph(rt, ran, [{"name": "delete_path", "args": args, "id": "c1"}])
    state = g.invoke({"messages": [("user", "go")]}, {"configurable": {"thread_id": "t"}})
    assert ran == [] and executions(rt) == []  # the tool never ran: no execution in the ledger
    msg = lg_messages(state)["c1"]
    assert msg.status == "error" and "Stopline refused" in msg.content


# ------------------------------------------------------------------ OpenAI Agents SDK
def sdk_setup(rt, turns, **tool_options):
    import importlib.util

    from agents import Agent, function_tool

    from policy_engine.integrations.openai_agents import protect

    spec = importlib.util.spec_from_file_location("oa_example_s18", ROOT / "examples" / "openai_agents_guardrail.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    ran: list = []

    @function_tool(**tool_options)
    def delete_path(path: str, recursive: bool = False) -> str:
        """Delete a path."""
        ran.append((path, recursive))
        return json.dumps({"deleted": path})

    agent = Agent(name="files", instructions="x", model=example.ScriptedModel(turns), tools=[delete_path])
    gate = protect(agent, rt, workflow="files", approvers=DIRECTORY)
    return agent, gate, ran


def outputs(result) -> list[str]:
    return [str(getattr(i, "output", "")) for i in result.new_items]


@pytest.mark.parametrize("sent", ["true", 1])
def test_agents_a_value_the_tool_would_read_as_true_never_runs_unheld(rt, sent):
    from agents import Runner

    agent, _, ran = sdk_setup(rt, [[("delete_path", "c1", {"path": "/data", "recursive": sent})]])
    result = asyncio.run(Runner.run(agent, "go"))
    assert ran == []  # the SDK's pydantic model would have handed the tool recursive=True
    assert any("input schema" in o for o in outputs(result))
    assert executions(rt) == []


def test_agents_the_gate_sees_the_defaults_the_tool_fills_in(rt):
    from agents import Runner

    agent, _, ran = sdk_setup(rt, [[("delete_path", "c1", {"path": "/tmp/x"})]])
    result = asyncio.run(Runner.run(agent, "go"))
    assert result.interruptions == [] and ran == [("/tmp/x", False)]
    [x] = executions(rt)
    assert x.body["receipt"] == {"path": "/tmp/x", "recursive": False}


def test_agents_a_tools_own_needs_approval_is_kept(rt):
    from agents import Runner

    agent, _, ran = sdk_setup(rt, [[("delete_path", "c1", {"path": "/tmp/x", "recursive": False})]],
                              needs_approval=True)  # the developer's own "always ask" for this tool
    result = asyncio.run(Runner.run(agent, "go"))
    assert ran == [] and len(result.interruptions) == 1  # allowed by the policy, still asked as configured
    state = result.to_state()
    state.approve(result.interruptions[0])  # the developer's own confirmation
    asyncio.run(Runner.run(agent, state))
    assert ran == [("/tmp/x", False)]


# ------------------------------------------------------------------ MCP
def mcp_server(ran: list):
    from mcp.server.mcpserver import MCPServer

    srv = MCPServer("files")

    @srv.tool()
    def delete_path(path: str, recursive: bool = False) -> dict:
        """Delete a path."""
        ran.append((path, recursive))
        return {"deleted": path}

    return srv


def mcp_call(rt, mode: str, args: dict):
    from mcp import Client

    from policy_engine.integrations.mcp import StoplineGateway, protect

    ran: list = []
    srv = mcp_server(ran)
    if mode == "middleware":
        protect(srv, rt, workflow="files", approvers=DIRECTORY)
        server = srv
    else:
        server = StoplineGateway(srv, rt, workflow="files", approvers=DIRECTORY).server

    async def go():
        async with Client(server) as c:
            return await c.call_tool("delete_path", args)
    return anyio.run(go), ran


@pytest.mark.parametrize("mode", ["gateway", "middleware"])
@pytest.mark.parametrize("sent", ["true", 1])
def test_mcp_a_value_the_server_would_read_as_true_never_runs_unheld(rt, mode, sent):
    from policy_engine.integrations.mcp import GATE_META

    r, ran = mcp_call(rt, mode, {"path": "/data", "recursive": sent})
    assert ran == [] and r.is_error  # MCPServer's pydantic model would have handed the tool recursive=True
    assert "input schema" in r.content[0].text and r.meta[GATE_META]["outcome"] == "refused"
    assert executions(rt) == []


@pytest.mark.parametrize("mode", ["gateway", "middleware"])
def test_mcp_the_gate_sees_the_defaults_the_server_fills_in(rt, mode):
    r, ran = mcp_call(rt, mode, {"path": "/tmp/x"})
    assert not r.is_error and ran == [("/tmp/x", False)]
    [x] = executions(rt)
    assert x.body["receipt"] == {"path": "/tmp/x", "recursive": False}


@pytest.mark.parametrize("mode", ["gateway", "middleware"])
@pytest.mark.parametrize("args", REFUSED_BY_THE_TOOL)
def test_mcp_arguments_the_server_refuses_are_not_recorded_as_executed(rt, mode, args):
    r, ran = mcp_call(rt, mode, args)
    assert ran == [] and r.is_error
    assert executions(rt) == []  # the server never ran the tool: no execution in the ledger


# ------------------------------------------------------------------ defaults inside a nested model
def test_agents_a_nested_default_is_judged_as_the_tool_receives_it(rt):
    """``transfer(order: Order)``, ``Order.express`` defaulting to False: the model leaves it
    out; the tool receives ``express=False``. Before, the gate saw no ``express`` (the
    rule's condition errored, which holds the call for an approval it does not need)."""
    from agents import Agent, Runner, function_tool

    from policy_engine.integrations.openai_agents import protect

    agent, _, _ = sdk_setup(rt, [])  # (the scripted model of the example)
    ran: list = []

    @function_tool
    def transfer(order: Order) -> str:
        """Move money."""
        ran.append((order.amount, order.express))
        return "{}"

    model = type(agent.model)([[("transfer", "c1", {"order": {"amount": 5}})]])
    agent = Agent(name="bank", instructions="x", model=model, tools=[transfer])
    protect(agent, rt, workflow="files", approvers=DIRECTORY)
    result = asyncio.run(Runner.run(agent, "go"))
    assert result.interruptions == [] and ran == [(5, False)]
    [d] = rt.ledger.entries(kind="decision")
    assert d.body["action"]["order"] == {"amount": 5, "express": False}


@pytest.mark.parametrize("mode", ["gateway", "middleware"])
def test_mcp_a_nested_default_is_judged_as_the_server_receives_it(rt, mode):
    from mcp import Client
    from mcp.server.mcpserver import MCPServer

    from policy_engine.integrations.mcp import StoplineGateway, protect

    ran: list = []
    srv = MCPServer("bank")

    @srv.tool()
    def transfer(order: Order) -> dict:
        """Move money."""
        ran.append((order.amount, order.express))
        return {"ok": True}

    if mode == "middleware":
        protect(srv, rt, workflow="files", approvers=DIRECTORY)
        server = srv
    else:
        server = StoplineGateway(srv, rt, workflow="files", approvers=DIRECTORY).server

    async def go():
        async with Client(server) as c:
            return await c.call_tool("transfer", {"order": {"amount": 5}})
    r = anyio.run(go)
    assert not r.is_error and ran == [(5, False)]
    [d] = rt.ledger.entries(kind="decision")
    assert d.body["action"]["order"] == {"amount": 5, "express": False}


# ------------------------------------------------------------------ a held call the tool would refuse
def test_langgraph_a_held_call_the_tool_would_refuse_is_withdrawn_not_asked(rt):
    """The policy holds the call, but its arguments do not fit the tool (``amount`` is no
    integer): a reviewer asked would approve a call that cannot run as judged. Before, the
    graph interrupted for that approval. Now the agent is told at once and the held
    decision is withdrawn (``cancelled``, with the reason), not left in the queue."""
    ran: list = []
    g = lg_graph(rt, ran, [{"name": "transfer", "args": {"order": {"amount": "lots", "express": True}}, "id": "c1"}])
    state = g.invoke({"messages": [("user", "go")]}, {"configurable": {"thread_id": "t"}})
    assert "__interrupt__" not in state and ran == []
    msg = lg_messages(state)["c1"]
    assert msg.status == "error" and "input schema" in msg.content and "order.amount" in msg.content
    [d] = rt.ledger.entries(kind="decision")
    assert d.body["decision"]["effect"] == "require_approval" and rt.authorization(d.id).status == "cancelled"


@pytest.mark.parametrize("mode", ["gateway", "middleware"])
def test_mcp_a_held_call_the_server_would_refuse_is_withdrawn_not_asked(rt, mode):
    from mcp import Client
    from mcp.server.mcpserver import MCPServer

    from policy_engine.integrations.mcp import GATE_META, StoplineGateway, protect

    ran: list = []
    srv = MCPServer("bank")

    @srv.tool()
    def transfer(order: Order) -> dict:
        """Move money."""
        ran.append(order)
        return {"ok": True}

    if mode == "middleware":
        protect(srv, rt, workflow="files", approvers=DIRECTORY)
        server = srv
    else:
        server = StoplineGateway(srv, rt, workflow="files", approvers=DIRECTORY).server

    async def go():
        async with Client(server) as c:
            return await c.call_tool("transfer", {"order": {"amount": "lots", "express": True}})
    r = anyio.run(go)
    assert ran == [] and r.is_error and r.meta[GATE_META]["outcome"] == "refused"
    assert "input schema" in r.content[0].text
    [d] = rt.ledger.entries(kind="decision")
    assert d.body["decision"]["effect"] == "require_approval" and rt.authorization(d.id).status == "cancelled"
