"""Audit (s21) of the MCP and LangGraph adapters, as a security reviewer and an integrator.

Real packages only: the mcp package's own client and servers in memory (``MCPServer``, the
low-level ``Server``, Stopline's gateway and middleware), and compiled LangGraph graphs
with a scripted model.

Fixed here:

- MCP: two servers exposing a tool of the same name behind one workflow (two gateways,
  or two servers with the middleware) gave the same call one action, so the approval a
  reviewer gave for one server's call ran it on the other. The action carries ``server``;
- MCP: the ``done`` answer to a retry of a call that already ran had no structured content,
  so for a tool declaring an ``outputSchema`` the MCP client raised ("has an output schema
  but did not return structured content") instead of telling the agent it ran;
- MCP: a ledger that cannot be reached reached the client as "Internal server error" (and
  the server's log as a traceback); after the tool ran, its result was lost the same way;
- MCP: a tool the server does not list was gated on the arguments as sent (no schema to
  conform them to) and forwarded;
- MCP 2.x: a tool that asks for input (an ``input_required`` result) had its first round
  recorded as the execution, so the client's next round was answered "already ran" (with
  a call id: the tool never ran) or gated as a new call (held again: an approved tool that
  asks for input could never run). The next round now continues the call under its claim;
- every adapter: a custom ``action`` built from the agent's arguments let an argument named
  ``workflow`` move the call to another workflow (its record, its rules, its stop state).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import pytest

pytest.importorskip("mcp")
pytest.importorskip("langgraph.prebuilt")

import anyio  # noqa: E402
from langchain_core.messages import AIMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402
from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402
from langgraph.graph import END, START, MessagesState, StateGraph  # noqa: E402
from langgraph.prebuilt import tools_condition  # noqa: E402
from langgraph.types import Command  # noqa: E402
from mcp import Client, MCPError  # noqa: E402
from mcp.server.lowlevel import Server  # noqa: E402
from mcp.server.mcpserver import MCPServer  # noqa: E402
from mcp.server.mcpserver.resolve import Elicit, Resolve  # noqa: E402
from mcp_types import CallToolResult, ListToolsResult, TextContent, ToolAnnotations  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from policy_engine import Runtime  # noqa: E402
from policy_engine.integrations import langgraph as lg  # noqa: E402
from policy_engine.integrations.mcp import CALL_ID, GATE_META, Approval, StoplineGateway, protect  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "integrations"
DIRECTORY = {"ops": ["operator"], "fin": ["finance_approver"]}


@pytest.fixture
def rt(tmp_path):
    with Runtime.open(str(EXAMPLES), ledger=f"sqlite:///{tmp_path / 'l.db'}") as r:
        yield r


def gate_of(result) -> dict:
    return (result.meta or {})[GATE_META]


def executions(rt) -> list:
    return rt.ledger.entries(kind="execution")


# ------------------------------------------------------------------ MCP: two servers, one tool name
def deleting_server(name: str, ran: list) -> MCPServer:
    srv = MCPServer(name)

    @srv.tool(annotations=ToolAnnotations(destructive_hint=True))
    def delete_file(path: str) -> dict:
        ran.append((name, path))
        return {"path": path, "deleted": True}

    return srv


def fronted(rt, mode: str, srv: MCPServer, **kw):
    if mode == "gateway":
        return StoplineGateway(srv, rt, workflow="mcp-files", approvers=DIRECTORY, **kw).server
    protect(srv, rt, workflow="mcp-files", approvers=DIRECTORY, **kw)
    return srv


@pytest.mark.parametrize("mode", ["gateway", "middleware"])
def test_mcp_an_approval_for_one_servers_call_never_runs_it_on_another(rt, mode):
    ran: list = []
    a, b = fronted(rt, mode, deleting_server("files-a", ran)), fronted(rt, mode, deleting_server("files-b", ran))

    async def go():
        async with Client(a) as ca, Client(b) as cb:
            held = gate_of(await ca.call_tool("delete_file", {"path": "x.txt"}))
            assert held["outcome"] == "approval_required"
            assert rt.approve(held["decision_id"], principal="ops", roles=["operator"]).status == "approved"
            other = gate_of(await cb.call_tool("delete_file", {"path": "x.txt"}))  # same tool, same arguments
            assert other["outcome"] == "approval_required" and other["decision_id"] != held["decision_id"]
            assert ran == []  # before: ("files-b", "x.txt") ran under files-a's approval
            mine = gate_of(await ca.call_tool("delete_file", {"path": "x.txt"}))
            assert mine["outcome"] == "ran" and mine["decision_id"] == held["decision_id"]
            assert (held["server"], other["server"]) == ("files-a", "files-b")  # in the action and its digest
            listed = (await cb.list_tools()).tools
            assert [t.meta[GATE_META]["server"] for t in listed] == ["files-b"]
    anyio.run(go)
    assert ran == [("files-a", "x.txt")]
    actions = [e.body["action"] for e in rt.ledger.entries(kind="decision")]
    assert [x["server"] for x in actions] == ["files-a", "files-b", "files-a"][:len(actions)]


def test_mcp_server_names_the_server_when_two_upstreams_name_themselves_alike(rt):
    ran: list = []
    eu = StoplineGateway(deleting_server("files", ran), rt, workflow="mcp-files", approvers=DIRECTORY,
                         server="files-eu").server
    us = StoplineGateway(deleting_server("files", ran), rt, workflow="mcp-files", approvers=DIRECTORY,
                         server="files-us").server

    async def go():
        async with Client(eu) as ce, Client(us) as cu:
            held = gate_of(await ce.call_tool("delete_file", {"path": "x.txt"}))
            assert held["server"] == "files-eu"
            rt.approve(held["decision_id"], principal="ops", roles=["operator"])
            other = gate_of(await cu.call_tool("delete_file", {"path": "x.txt"}))
            assert other["outcome"] == "approval_required" and other["server"] == "files-us"
            # an argument named `server` cannot pose as the approved server
            posing = gate_of(await cu.call_tool("delete_file", {"path": "x.txt", "server": "files-eu"}))
            assert posing["outcome"] == "approval_required" and posing["server"] == "files-us"
    anyio.run(go)
    assert ran == []


# ------------------------------------------------------------------ MCP: structured output
class Written(BaseModel):
    path: str
    bytes: int


@pytest.mark.parametrize("mode", ["gateway", "middleware"])
def test_mcp_a_retry_of_a_structured_tool_that_already_ran_is_an_answer_the_client_accepts(rt, mode):
    ran: list = []
    srv = MCPServer("files")

    @srv.tool()
    def write_file(path: str, text: str) -> Written:
        ran.append(path)
        return Written(path=path, bytes=len(text))

    server = fronted(rt, mode, srv)

    async def go():
        async with Client(server) as c:
            assert (await c.list_tools()).tools[0].output_schema is not None
            first = await c.call_tool("write_file", {"path": "a", "text": "xy"}, meta={CALL_ID: "job-1"})
            assert first.structured_content == {"path": "a", "bytes": 2} and gate_of(first)["outcome"] == "ran"
            # before: RuntimeError "Tool write_file has an output schema but did not return structured content"
            again = await c.call_tool("write_file", {"path": "a", "text": "xy"}, meta={CALL_ID: "job-1"})
            assert again.is_error and gate_of(again)["outcome"] == "done"
            assert "already ran" in again.content[0].text and '"bytes": 2' in again.content[0].text
    anyio.run(go)
    assert ran == ["a"]
    assert len(executions(rt)) == 1


# ------------------------------------------------------------------ MCP: the ledger unreachable
def unreachable(rt, db: Path) -> Path:
    """Make the SQLite ledger unreachable for real: its connections closed, its directory gone."""
    rt.ledger.close()
    moved = db.parent.with_name(db.parent.name + "-gone")
    os.rename(db.parent, moved)
    return moved


@pytest.mark.parametrize("mode", ["gateway", "middleware"])
def test_mcp_an_unreachable_ledger_refuses_the_call_with_a_message_not_an_internal_error(tmp_path, mode, caplog):
    db = tmp_path / "led" / "l.db"
    db.parent.mkdir()
    ran: list = []
    srv = MCPServer("files")

    @srv.tool()
    def write_file(path: str, text: str) -> dict:
        ran.append(path)
        return {"path": path, "bytes": len(text)}

    with Runtime.open(str(EXAMPLES), ledger=f"sqlite:///{db}") as r:
        server = fronted(r, mode, srv)

        async def go():
            async with Client(server) as c:
                assert not (await c.call_tool("write_file", {"path": "a", "text": "x"})).is_error
                moved = unreachable(r, db)
                try:
                    # before: MCPError "Internal server error" (and a traceback in the server's log)
                    return await c.call_tool("write_file", {"path": "b", "text": "x"})
                finally:
                    os.rename(moved, db.parent)
        res = anyio.run(go)
        assert res.is_error and gate_of(res)["outcome"] == "unavailable"
        assert "ledger cannot be reached" in res.content[0].text and "not run" in res.content[0].text
        assert str(tmp_path) not in res.content[0].text  # where the ledger is: the operator's log, not the agent
        assert ran == ["a"] and len(executions(r)) == 1
        assert any("unable to open database file" in m for m in caplog.messages)


def test_mcp_a_tool_that_ran_while_the_ledger_went_away_returns_its_result_marked_unrecorded(tmp_path, caplog):
    db = tmp_path / "led" / "l.db"
    db.parent.mkdir()
    ran: list = []
    moved: list[Path] = []
    with Runtime.open(str(EXAMPLES), ledger=f"sqlite:///{db}") as r:
        srv = MCPServer("files")

        @srv.tool()
        def write_file(path: str, text: str) -> dict:
            ran.append(path)
            moved.append(unreachable(r, db))  # the ledger goes away while the tool runs
            return {"path": path, "bytes": len(text)}

        server = fronted(r, "gateway", srv)

        async def go():
            async with Client(server) as c:
                try:
                    # before: MCPError "Internal server error": the agent never saw that it ran
                    return await c.call_tool("write_file", {"path": "a", "text": "x"})
                finally:
                    os.rename(moved[0], db.parent)
        res = anyio.run(go)
        assert not res.is_error and '"bytes": 1' in res.content[0].text  # the tool's own result
        assert gate_of(res)["outcome"] == "ran" and gate_of(res)["recorded"] is False
        assert ran == ["a"] and executions(r) == []
        assert [c.decision_id for c in r.claims_in_doubt()] == [gate_of(res)["decision_id"]]


# ------------------------------------------------------------------ MCP: a tool the server does not list
def hiding_server(ran: list) -> Server:
    """A low-level server that serves `write_file` but does not list it."""

    async def list_tools(ctx, params) -> ListToolsResult:
        return ListToolsResult(tools=[])

    async def call_tool(ctx, params) -> CallToolResult:
        ran.append((params.name, dict(params.arguments or {})))
        return CallToolResult(content=[TextContent(type="text", text='{"bytes": 1}')])

    return Server("hiding", on_list_tools=list_tools, on_call_tool=call_tool)


@pytest.mark.parametrize("mode", ["gateway", "middleware"])
def test_mcp_a_tool_the_server_does_not_list_is_gated_and_never_run(rt, mode):
    ran: list = []
    srv = hiding_server(ran)
    if mode == "gateway":
        server = StoplineGateway(srv, rt, workflow="mcp-files", approvers=DIRECTORY).server
    else:
        protect(srv, rt, workflow="mcp-files", approvers=DIRECTORY)
        server = srv

    async def go():
        async with Client(server) as c:
            return await c.call_tool("write_file", {"path": "a", "text": "x"})
    res = anyio.run(go)
    assert ran == []  # before: forwarded, arguments never checked against any schema
    assert res.is_error and gate_of(res)["outcome"] == "refused" and "does not list" in res.content[0].text
    [d] = rt.ledger.entries(kind="decision")  # gated and recorded all the same
    assert d.body["action"]["type"] == "write_file" and executions(rt) == []


# ------------------------------------------------------------------ every adapter: a custom action
TWO_WORKFLOWS = """
roles [finance_approver]

workflow "payments" {
  version "1"
  owners {
    business "Finance"
    technical "Platform"
  }
  default deny

  action refund_order {
    system "payments"
    description "Refund an order"
    irreversible
    receipt [order_id, amount]

    require_approval large_refund by 1 finance_approver when `action.amount > 50`
    allow small_refund when `action.amount <= 50`
  }
}

workflow "sandbox" {
  version "1"
  owners {
    business "QA"
    technical "Platform"
  }
  default deny

  action ping {
    system "sandbox"
    description "A no-op"
    allow always when `true`
  }
}
"""


def test_a_custom_action_built_from_the_arguments_cannot_move_the_call_to_another_workflow(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "pay.policy").write_text(TWO_WORKFLOWS)
    refunds: list = []

    @tool
    def refund_order(order_id: str, amount: int) -> dict:
        """Refund an order."""
        refunds.append(amount)
        return {"order_id": order_id, "amount": amount}

    def action(name: str, args: dict, call_id: str) -> dict:  # the arguments at the top level, as the default
        return {**args, "type": name, "id": call_id, "channel": "chat"}

    call = {"name": "refund_order", "args": {"order_id": "A-1", "amount": 900, "workflow": "sandbox"}, "id": "c1"}

    def model(state: MessagesState) -> dict:
        turn = sum(1 for m in state["messages"] if isinstance(m, AIMessage))
        return {"messages": [AIMessage(content="", tool_calls=[call] if turn == 0 else [])]}

    with Runtime.open(str(tmp_path / "p"), ledger=f"sqlite:///{tmp_path / 'l.db'}") as r:
        g = StateGraph(MessagesState)
        g.add_node("agent", model)
        g.add_node("tools", lg.gated_tool_node([refund_order], r, workflow="payments", approvers=DIRECTORY,
                                               action=action))
        g.add_edge(START, "agent")
        g.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: END})
        g.add_edge("tools", "agent")
        graph = g.compile(checkpointer=InMemorySaver())
        state = graph.invoke({"messages": [("user", "refund")]}, {"configurable": {"thread_id": "t"}})
        assert refunds == []
        # before: recorded in the workflow the agent named ("sandbox", as an undeclared action), not
        # held for the payments reviewers, out of reach of the payments workflow's stops
        [d] = r.ledger.entries(kind="decision")
        assert d.body["action"]["workflow"] == "payments" and d.body["action"]["channel"] == "chat"
        [i] = state["__interrupt__"]
        assert i.value["rule"] == "large_refund" and i.value["workflow"] == "payments"


# ------------------------------------------------------------------ LangGraph: what held (regressions)
def shop_graph(rt, refund_tool, script: list[list[dict]], route=None):
    def model(state: MessagesState) -> dict:
        turn = sum(1 for m in state["messages"] if isinstance(m, AIMessage))
        return {"messages": [AIMessage(content="", tool_calls=script[turn] if turn < len(script) else [])]}

    g = StateGraph(MessagesState)
    g.add_node("agent", model)
    g.add_node("tools", lg.gated_tool_node([refund_tool], rt, workflow="shop-support", approvers=DIRECTORY))
    g.add_edge(START, "agent")
    if route is None:
        g.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: END})
    else:
        g.add_conditional_edges("agent", route, ["tools", END])
    g.add_edge("tools", "agent")
    return g.compile(checkpointer=InMemorySaver())


def refund(amount: int, cid: str) -> dict:
    return {"name": "refund_order", "args": {"order_id": "A-1", "amount": amount}, "id": cid}


def test_langgraph_arguments_changed_between_the_hold_and_the_resume_never_run(rt):
    refunds: list = []

    @tool
    def refund_order(order_id: str, amount: int) -> dict:
        """Refund an order."""
        refunds.append(amount)
        return {"refund_id": "rf-1", "order_id": order_id, "amount": amount}

    g = shop_graph(rt, refund_order, [[refund(400, "c1")]])
    cfg = {"configurable": {"thread_id": "t"}}
    request = g.invoke({"messages": [("user", "go")]}, cfg)["__interrupt__"][0].value
    ai = [m for m in g.get_state(cfg).values["messages"] if isinstance(m, AIMessage)][-1]
    # the pending AI message rewritten (same message id, same call id) to another amount
    g.update_state(cfg, {"messages": [AIMessage(content="", tool_calls=[refund(900, "c1")], id=ai.id)]})
    state = g.invoke(Command(resume=Approval.for_request(request, "fin").to_dict()), cfg)
    assert refunds == [] and executions(rt) == []
    [msg] = [m for m in state["messages"] if m.type == "tool"]
    assert msg.status == "error" and "the approval is for decision" in msg.content


def test_langgraph_parallel_async_calls_resumed_twice_at_once_run_once_each(rt):
    refunds: list = []

    @tool
    async def refund_order(order_id: str, amount: int) -> dict:
        """Refund an order."""
        await asyncio.sleep(0.01)
        refunds.append(amount)
        return {"refund_id": f"rf-{len(refunds)}", "order_id": order_id, "amount": amount}

    turn = [refund(400, "c1"), refund(20, "c2"), refund(300, "c3")]
    g = shop_graph(rt, refund_order, [turn], route=lg.route_tool_calls)
    cfg = {"configurable": {"thread_id": "t"}}

    async def go():
        state = await g.ainvoke({"messages": [("user", "go")]}, cfg)
        interrupts = state["__interrupt__"]
        assert len(interrupts) == 2 and refunds == [20]
        resume = Command(resume={i.id: Approval.for_request(i.value, "fin").to_dict() for i in interrupts})
        return await asyncio.gather(g.ainvoke(resume, cfg), g.ainvoke(resume, cfg))
    asyncio.run(go())
    assert sorted(refunds) == [20, 300, 400]
    assert sorted(x.body["receipt"]["amount"] for x in executions(rt)) == [20, 300, 400]


# ------------------------------------------------------------------ MCP 2.x: a tool that asks for input
class Confirm(BaseModel):
    ok: bool


def confirm(path: str) -> Elicit:
    return Elicit(f"Really touch {path}?", Confirm)


def asking_server(ran: list) -> MCPServer:
    """An MCPServer whose tools ask the user for a confirmation (``Resolve`` + ``Elicit``):
    on a 2026 connection the first round answers ``input_required`` and the tool body runs
    on the client's next round."""
    srv = MCPServer("files")

    @srv.tool(annotations=ToolAnnotations(destructive_hint=True))
    def write_file(path: str, text: str, ok: Annotated[Confirm, Resolve(confirm)]) -> dict:
        ran.append(("write_file", path, ok.ok))
        return {"path": path, "bytes": len(text)}

    @srv.tool(annotations=ToolAnnotations(destructive_hint=True))
    def delete_file(path: str, ok: Annotated[Confirm, Resolve(confirm)]) -> dict:
        ran.append(("delete_file", path, ok.ok))
        return {"path": path, "deleted": True}

    return srv


async def accept(context, params):
    from mcp_types import ElicitResult

    return ElicitResult(action="accept", content={"ok": True})


@pytest.mark.parametrize("call_id", [None, "job-9"])
@pytest.mark.parametrize("mode", ["gateway", "middleware"])
def test_mcp_a_tool_that_asks_for_input_runs_once_and_is_recorded_once(rt, mode, call_id):
    ran: list = []
    server = fronted(rt, mode, asking_server(ran))

    async def go():
        async with Client(server, elicitation_callback=accept) as c:
            meta = {CALL_ID: call_id} if call_id else None
            return await c.call_tool("write_file", {"path": "a", "text": "xy"}, meta=meta)
    r = anyio.run(go)
    # before: the input round was recorded as the execution; with a call id the next round was
    # answered "already ran" (the tool never ran), without one it was a second decision and run
    assert not r.is_error and gate_of(r)["outcome"] == "ran", r.content[0].text
    assert ran == [("write_file", "a", True)]
    [d] = rt.ledger.entries(kind="decision")
    [x] = executions(rt)
    assert x.body["decision"] == d.id and x.body["receipt"] == {"path": "a", "bytes": 2}


@pytest.mark.parametrize("mode", ["gateway", "middleware"])
def test_mcp_an_approved_tool_that_asks_for_input_runs_under_its_one_approval(rt, mode):
    ran: list = []
    server = fronted(rt, mode, asking_server(ran))

    async def go():
        async with Client(server, elicitation_callback=accept) as c:
            held = gate_of(await c.call_tool("delete_file", {"path": "a"}))
            assert held["outcome"] == "approval_required" and ran == []
            rt.approve(held["decision_id"], principal="ops", roles=["operator"])
            # before: the input round used the approval up; the next round was a new decision, held again
            r = await c.call_tool("delete_file", {"path": "a"})
            assert gate_of(r)["outcome"] == "ran" and gate_of(r)["decision_id"] == held["decision_id"]
            assert gate_of(r)["approved_by"] == "ops"
    anyio.run(go)
    assert ran == [("delete_file", "a", True)]
    [x] = executions(rt)
    assert x.body["authorized"] and x.body["receipt"] == {}


async def refused(call, says: str) -> bool:
    """The round is refused: an ``isError`` result saying ``says``, or the server's ``MCPError``."""
    try:
        r = await call
    except MCPError:
        return says == ""
    return bool(r.is_error) and says in r.content[0].text


@pytest.mark.parametrize("mode", ["gateway", "middleware"])
def test_mcp_an_input_round_continues_its_own_call_once_and_nothing_else(rt, mode):
    from mcp_types import ElicitResult, InputRequiredResult

    from policy_engine.integrations.mcp import STATE_PREFIX

    ran: list = []
    server = fronted(rt, mode, asking_server(ran))

    async def go():
        async with Client(server, elicitation_callback=accept) as c:
            s = c.session
            first = await s.call_tool("write_file", {"path": "a", "text": "x"}, allow_input_required=True)
            assert isinstance(first, InputRequiredResult) and gate_of(first)["outcome"] == "input_required"
            # (an MCPServer seals the state it hands out, the gate's wrapping included)
            assert first.request_state.startswith(STATE_PREFIX) == (mode == "gateway")
            answers = {k: ElicitResult(action="accept", content={"ok": True}) for k in first.input_requests}
            # a round of other arguments with this call's state: not a continuation, never run
            # (the gate's refusal; an MCPServer's own state seal refuses it first, binding it to the arguments)
            assert await refused(s.call_tool("write_file", {"path": "/etc/x", "text": "x"}, input_responses=answers,
                                             request_state=first.request_state, allow_input_required=True),
                                 "no call waiting for input" if mode == "gateway" else "")
            done = await s.call_tool("write_file", {"path": "a", "text": "x"}, input_responses=answers,
                                     request_state=first.request_state, allow_input_required=True)
            assert not done.is_error and gate_of(done)["outcome"] == "ran"
            # the same round replayed: the call ran, never again
            again = await s.call_tool("write_file", {"path": "a", "text": "x"}, input_responses=answers,
                                      request_state=first.request_state, allow_input_required=True)
            assert gate_of(again)["outcome"] == "done" and "already ran" in again.content[0].text
            forged = STATE_PREFIX + '["mcp-x-0", "stopline-executor:nobody", null]'
            assert await refused(s.call_tool("write_file", {"path": "a", "text": "x"}, input_responses=answers,
                                             request_state=forged, allow_input_required=True),
                                 "no call waiting for input" if mode == "gateway" else "")
            assert ran == [("write_file", "a", True)]
    anyio.run(go)
    assert len(executions(rt)) == 1
    assert len(rt.ledger.entries(kind="decision")) == 1  # a refused round gates nothing ahead of its call


@pytest.mark.parametrize("mode", ["gateway", "middleware"])
def test_mcp_the_same_input_round_sent_twice_at_once_runs_once(rt, mode):
    from mcp_types import ElicitResult

    ran: list = []
    server = fronted(rt, mode, asking_server(ran))

    async def go():
        async with Client(server, elicitation_callback=accept) as c:
            s = c.session
            first = await s.call_tool("write_file", {"path": "a", "text": "x"}, allow_input_required=True)
            answers = {k: ElicitResult(action="accept", content={"ok": True}) for k in first.input_requests}

            async def round_two():
                return await s.call_tool("write_file", {"path": "a", "text": "x"}, input_responses=answers,
                                         request_state=first.request_state, allow_input_required=True)
            return await asyncio.gather(round_two(), round_two())
    both = anyio.run(go)
    assert sorted(gate_of(r)["outcome"] for r in both) == ["done", "ran"]
    assert ran == [("write_file", "a", True)] and len(executions(rt)) == 1
