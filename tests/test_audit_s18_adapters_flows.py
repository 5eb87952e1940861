"""Audit (s18) of the agent-framework adapters: claims, cancellations and stops between the
gate and the tool. Real mcp / agents / langgraph packages, no mocks of them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated  # noqa: F401 - (a LangGraph tool's annotations below resolve here)

import pytest

pytest.importorskip("mcp")

import anyio  # noqa: E402
from mcp import Client  # noqa: E402
from mcp.server.mcpserver import MCPServer  # noqa: E402
from mcp_types import ToolAnnotations  # noqa: E402

from policy_engine import Runtime  # noqa: E402
from policy_engine.integrations.mcp import CALL_ID, GATE_META, StoplineGateway  # noqa: E402

try:  # (the LangGraph tool's annotations below resolve in this module)
    from langchain_core.tools import InjectedToolCallId  # noqa: F401
    from langgraph.types import Command  # noqa: F401
except ImportError:  # pragma: no cover - the LangGraph test skips
    pass

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "examples" / "integrations"
DIRECTORY = {"ops": ["operator"], "sam": ["support_manager"]}


@pytest.fixture
def rt(tmp_path):
    with Runtime.open(str(POLICY), ledger=f"sqlite:///{tmp_path / 'l.db'}") as r:
        yield r


def files_server(ran: list) -> MCPServer:
    srv = MCPServer("files")

    @srv.tool(annotations=ToolAnnotations(destructive_hint=True))
    def write_file(path: str, text: str) -> dict:
        ran.append(path)
        return {"path": path, "bytes": len(text)}

    return srv


def test_mcp_a_call_cancelled_right_after_its_claim_is_not_left_claimed_and_unrecorded(rt):
    """The client gives up (its request cancelled) while the gate claims the call in the
    ledger (in a worker thread). A cancellation delivered between the claim and the run
    would leave the decision claimed with no execution (a retry with the same call id
    refused "already being run" forever, though nothing runs it). Checked, and fine: anyio
    waits for the worker and delivers the cancellation inside ``run``, where it is recorded
    as the execution it may be. (A guard: it fails if that ever changes.)"""
    ran: list = []
    upstream = files_server(ran)
    gw = StoplineGateway(upstream, rt, workflow="mcp-files", approvers=DIRECTORY)
    gate = gw.gate
    scopes: list = []
    claim = gate.tool_gate.take

    def take_then_give_up(check, approver=None):  # the client's cancel arrives right after the claim
        out = claim(check, approver)
        anyio.from_thread.run_sync(scopes[0].cancel)
        return out

    gate.tool_gate.take = take_then_give_up
    meta = {CALL_ID: "job-1"}

    async def go():
        async with Client(upstream) as client:
            with anyio.CancelScope() as scope:
                scopes.append(scope)
                await gate.call(None, "write_file", {"path": "n.txt", "text": "x"}, meta, None,
                                lambda: client.call_tool("write_file", {"path": "n.txt", "text": "x"}))
            gate.tool_gate.take = claim
            return await gate.call(None, "write_file", {"path": "n.txt", "text": "x"}, meta, None,
                                   lambda: client.call_tool("write_file", {"path": "n.txt", "text": "x"}))
    retry = anyio.run(go)
    [d] = rt.ledger.entries(kind="decision")
    st = rt.authorization(d.id)
    assert st.claimed_by is not None  # it was claimed...
    [x] = rt.ledger.entries(kind="execution")  # ...and the claim is closed by its (possible) execution
    assert x.body["decision"] == d.id and st.status == "executed"
    g = retry.meta[GATE_META] if hasattr(retry, "meta") else retry["_meta"][GATE_META]
    assert g["outcome"] == "done" and len(ran) <= 1  # the retry is told it ran: never a second run


# ------------------------------------------------------------------ OpenAI Agents SDK: receipts
def test_agents_a_tool_returning_a_model_or_dataclass_is_recorded_with_its_fields(rt):
    """A function tool may return any object (the SDK shows the model its text). Before, a
    pydantic model or a dataclass was recorded as its ``repr`` under ``result``: the
    declared receipt fields it carried (``refund_id``) were missing from the receipt."""
    import asyncio
    import dataclasses
    import importlib.util
    import os

    pytest.importorskip("agents")
    os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")
    from agents import Agent, Runner, function_tool
    from pydantic import BaseModel

    from policy_engine.integrations.openai_agents import protect

    spec = importlib.util.spec_from_file_location("oa_example_s18f", ROOT / "examples" / "openai_agents_guardrail.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)

    class Refund(BaseModel):
        refund_id: str
        order_id: str
        amount: int

    @dataclasses.dataclass
    class RefundRecord:
        refund_id: str
        amount: int

    returned = iter([Refund(refund_id="rf-1", order_id="A-1", amount=20), RefundRecord(refund_id="rf-2", amount=30)])

    @function_tool
    def refund_order(order_id: str, amount: int) -> str:
        """Refund an order."""
        return next(returned)

    turns = [[("refund_order", "c1", {"order_id": "A-1", "amount": 20}),
              ("refund_order", "c2", {"order_id": "A-2", "amount": 30})]]
    agent = Agent(name="shop", instructions="x", model=example.ScriptedModel(turns), tools=[refund_order])
    protect(agent, rt, workflow="shop-support", approvers=DIRECTORY)
    asyncio.run(Runner.run(agent, "go"))
    receipts = sorted((x.body["receipt"] for x in rt.ledger.entries(kind="execution")), key=lambda r: r["amount"])
    assert [r.get("refund_id") for r in receipts] == ["rf-1", "rf-2"]
    assert all("refund_id" not in x.body["missing_receipt"] for x in rt.ledger.entries(kind="execution"))


def _sdk_example():
    import importlib.util
    import os

    pytest.importorskip("agents")
    os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")
    spec = importlib.util.spec_from_file_location("oa_example_s18g", ROOT / "examples" / "openai_agents_guardrail.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example


def test_agents_a_tool_shared_by_two_protected_agents_runs_once_per_call(rt):
    """Tools defined once at module level and handed to two agents (a triage agent and a
    specialist), each protected as the docs show. Before: the second ``protect`` wrapped the
    already wrapped tool again, so every call was claimed by the outer layer and refused by
    the inner one ("already being run"): an allowed refund never ran, and its decision stayed
    claimed with no execution. Now one tool object carries one Stopline layer."""
    import asyncio
    import json

    from agents import Agent, Runner, function_tool

    from policy_engine.integrations.openai_agents import Approval, approve, protect, request_for

    example = _sdk_example()
    ran: list = []

    @function_tool
    def refund_order(order_id: str, amount: int) -> str:
        """Refund an order."""
        ran.append(amount)
        return json.dumps({"refund_id": f"rf-{len(ran)}", "order_id": order_id, "amount": amount})

    triage = Agent(name="triage", instructions="x", tools=[refund_order],
                   model=example.ScriptedModel([[("refund_order", "c1", {"order_id": "A-1", "amount": 20})]]))
    billing = Agent(name="billing", instructions="x", tools=[refund_order],
                    model=example.ScriptedModel([[("refund_order", "c2", {"order_id": "A-2", "amount": 400})]]))
    protect(triage, rt, workflow="shop-support", approvers=DIRECTORY | {"fin": ["finance_approver"]})
    gate = protect(billing, rt, workflow="shop-support", approvers=DIRECTORY | {"fin": ["finance_approver"]})
    asyncio.run(Runner.run(triage, "go"))
    assert ran == [20]
    result = asyncio.run(Runner.run(billing, "go"))  # held: approved through the second agent's gate
    [held] = result.interruptions
    state = result.to_state()
    assert approve(gate, state, held, Approval.for_request(request_for(gate, held), "fin")).run
    asyncio.run(Runner.run(billing, state))
    assert ran == [20, 400]
    assert [x.body["authorized"] for x in rt.ledger.entries(kind="execution")] == [True, True]
    assert len(refund_order.tool_input_guardrails) == 1  # one Stopline guardrail, not one per protect


def test_agents_a_tool_already_gated_for_another_workflow_is_refused_at_setup(rt):
    from agents import Agent, function_tool

    from policy_engine.integrations.openai_agents import protect

    example = _sdk_example()

    @function_tool
    def read_file(path: str) -> str:
        """Read a file."""
        return ""

    protect(Agent(name="a", instructions="x", tools=[read_file], model=example.ScriptedModel([])), rt,
            workflow="mcp-files")
    with pytest.raises(ValueError, match="already gated"):
        protect(Agent(name="b", instructions="x", tools=[read_file], model=example.ScriptedModel([])), rt,
                workflow="shop-support")


# ------------------------------------------------------------------ LangGraph: receipts of Command results
def test_langgraph_a_tool_returning_a_command_is_recorded_with_its_tool_message(rt):
    """A LangGraph tool that updates the graph state returns a ``Command`` whose update
    carries the call's ``ToolMessage`` (the pattern LangGraph documents). Before, the
    execution was recorded with the arguments only: the declared receipt fields the tool
    reported in its message (``refund_id``) were missing."""
    import json

    pytest.importorskip("langgraph.prebuilt")
    from langchain_core.messages import AIMessage, ToolMessage
    from langchain_core.tools import tool
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import tools_condition

    from policy_engine.integrations.langgraph import gated_tool_node

    @tool
    def refund_order(order_id: str, amount: int, call_id: Annotated[str, InjectedToolCallId]) -> Command:
        """Refund an order."""
        body = json.dumps({"refund_id": "rf-9", "order_id": order_id, "amount": amount})
        return Command(update={"messages": [ToolMessage(body, tool_call_id=call_id)]})

    def model(state: MessagesState) -> dict:
        turn = sum(1 for m in state["messages"] if isinstance(m, AIMessage))
        calls = [{"name": "refund_order", "args": {"order_id": "A-1", "amount": 20}, "id": "c1"}] if turn == 0 else []
        return {"messages": [AIMessage(content="", tool_calls=calls)]}

    g = StateGraph(MessagesState)
    g.add_node("agent", model)
    g.add_node("tools", gated_tool_node([refund_order], rt, workflow="shop-support", approvers=DIRECTORY))
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: END})
    g.add_edge("tools", "agent")
    g.compile(checkpointer=InMemorySaver()).invoke({"messages": [("user", "go")]}, {"configurable": {"thread_id": "t"}})
    [x] = rt.ledger.entries(kind="execution")
    assert x.body["receipt"] == {"order_id": "A-1", "amount": 20, "refund_id": "rf-9"}


# ------------------------------------------------------------------ OpenAI Agents SDK: tools protect did not see
OPS_POLICY = """
roles [operator]

workflow "ops" {
  version "1"
  owners {
    business "Operations"
    technical "Platform"
  }
  default deny

  action write_file {
    system "files"
    description "Write a file"
    reversible full via "files.restore_snapshot"
    receipt [path, bytes]
    allow workspace_write when `!action.path.startsWith("/")`
  }

  stop delete_outside_workspace {
    description "An agent tried to delete a file outside its workspace"
    when `action.type == "delete_file" && action.path.startsWith("/")`
    severity critical
    owner "Operations"
    affects [files]
    receipt [path]
    rollback "Restore the file from the snapshot"
    notify [operator]
    evidence {
      incident_reviewed: bool
    }
    resume when {
      incident_reviewed: `evidence.incident_reviewed` "the incident was reviewed"
    }
  }
}
"""


def test_agents_the_tools_of_an_agents_mcp_servers_are_gated(tmp_path):
    """``Agent(mcp_servers=[...])``: the SDK turns each MCP tool into a function tool at
    every run, outside ``agent.tools``. Before, ``protect(agent)`` never saw them: the
    agent deleted /etc/passwd through its MCP server with no decision recorded, though the
    policy stops that. Now every function tool the run gets (MCP ones, and tools added to
    the agent after ``protect``) carries the Stopline layer."""
    import asyncio
    import sys

    from agents import Agent, Runner, ToolInputGuardrailTripwireTriggered, function_tool
    from agents.mcp import MCPServerStdio

    from policy_engine.integrations.openai_agents import protect

    example = _sdk_example()
    later: list = []

    @function_tool
    def chmod_file(path: str, mode: str) -> str:
        """Change a file's mode (added to the agent after protect)."""
        later.append(path)
        return "ok"

    async def go(rt):
        params = {"command": sys.executable, "args": [str(ROOT / "examples" / "mcp_gateway.py"), "--file-server"]}
        async with MCPServerStdio(params=params) as files:
            model = example.ScriptedModel([[("write_file", "c1", {"path": "notes.txt", "text": "hi"})]])
            agent = Agent(name="ops", instructions="x", model=model, mcp_servers=[files])
            protect(agent, rt, workflow="ops", approvers=DIRECTORY)
            agent.tools.append(chmod_file)
            await Runner.run(agent, "write")  # allowed by the policy: runs, recorded
            model.turns = [[("chmod_file", "c2", {"path": "notes.txt", "mode": "777"})]]
            chmod = await Runner.run(agent, "chmod")  # not in the policy (default deny): refused
            model.turns = [[("delete_file", "c3", {"path": "/etc/passwd"})]]
            with pytest.raises(ToolInputGuardrailTripwireTriggered):  # the stop halts the run
                await Runner.run(agent, "delete")
            passwd = await files.call_tool("read_file", {"path": "/etc/passwd"})
            return chmod, passwd
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "ops.policy").write_text(OPS_POLICY)
    with Runtime.open(str(tmp_path / "p"), ledger=f"sqlite:///{tmp_path / 'ops.db'}") as rt:
        chmod, passwd = asyncio.run(go(rt))
        effects = [(e.body["action"]["type"], e.body["decision"]["effect"]) for e in rt.ledger.entries(kind="decision")]
        executions = rt.ledger.entries(kind="execution")
    assert "root" in passwd.content[0].text  # not deleted
    assert later == [] and any("Stopline denied" in str(getattr(i, "output", "")) for i in chmod.new_items)
    assert effects == [("write_file", "allow"), ("chmod_file", "deny"), ("delete_file", "stop")]
    [x] = executions
    assert x.body["authorized"] and x.body["receipt"] == {"path": "notes.txt", "bytes": 2}


def test_agents_a_tool_protect_cannot_gate_is_named_not_silently_left_open(rt):
    """A tool the SDK runs on OpenAI's side with no hook before it (web search; a hosted MCP
    tool that never asks for approval) takes no gate: the SDK runs it whatever the policy
    says. Before, ``protect`` skipped such tools without a word, so a developer believed the
    agent's every tool was gated. (Local shell, apply-patch, computer and hosted MCP tools
    that ask are gated: tests/test_integrations_openai_agents_shell.py and
    tests/test_integrations_openai_agents_tools.py.)"""
    from agents import Agent, HostedMCPTool, WebSearchTool

    from policy_engine.integrations.openai_agents import UngatedToolWarning, protect

    example = _sdk_example()
    never = HostedMCPTool(tool_config={"type": "mcp", "server_label": "gh", "server_url": "https://x",
                                       "require_approval": "never"})
    for tool, name in ((WebSearchTool(), "WebSearchTool"), (never, "HostedMCPTool")):
        agent = Agent(name="ops", instructions="x", model=example.ScriptedModel([]), tools=[tool])
        with pytest.warns(UngatedToolWarning, match=name):
            protect(agent, rt, workflow="shop-support", approvers=DIRECTORY)


def test_agents_a_streamed_run_is_gated_as_a_run(rt):
    """Checked, and fine (a guard): ``Runner.run_streamed`` goes through the same
    ``needs_approval``, guardrail and wrapper: allowed runs and is recorded, held is an
    interruption that a counted approval resumes once, denied never runs."""
    import asyncio
    import json

    from agents import Agent, Runner, function_tool
    from openai.types.responses import Response, ResponseCompletedEvent

    from policy_engine.integrations.openai_agents import Approval, approve, protect, request_for

    example = _sdk_example()

    class StreamedModel(example.ScriptedModel):  # the scripted model, streamed
        async def stream_response(self, *args, **kwargs):
            r = await self.get_response()
            yield ResponseCompletedEvent(type="response.completed", sequence_number=0, response=Response(
                id="r", created_at=0, model="scripted", object="response", output=r.output,
                parallel_tool_calls=True, tool_choice="auto", tools=[]))

    ran: list = []

    @function_tool
    def refund_order(order_id: str, amount: int) -> str:
        """Refund an order."""
        ran.append(amount)
        return json.dumps({"refund_id": f"rf-{amount}", "order_id": order_id, "amount": amount})

    turn = [("refund_order", f"c{a}", {"order_id": "A-1", "amount": a}) for a in (20, 400, 5000)]
    agent = Agent(name="shop", instructions="x", model=StreamedModel([turn]), tools=[refund_order])
    gate = protect(agent, rt, workflow="shop-support", approvers={"fin": ["finance_approver"]})

    async def stream(start):
        result = Runner.run_streamed(agent, start)
        async for _ in result.stream_events():
            pass
        return result
    result = asyncio.run(stream("go"))
    assert ran == [20]
    [held] = result.interruptions
    state = result.to_state()
    assert approve(gate, state, held, Approval.for_request(request_for(gate, held), "fin")).run
    result = asyncio.run(stream(state))
    assert ran == [20, 400] and any("above_ceiling" in str(getattr(i, "output", "")) for i in result.new_items)
    assert [x.body["receipt"].get("reviewer") for x in rt.ledger.entries(kind="execution")] == [None, "fin"]
