"""policy_engine.integrations.langgraph against the real langgraph package: every tool call of
a graph gated on a Runtime (SQLite ledger in a tmp dir), and LangGraph's known
human-in-the-loop holes reproduced and refused."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("langgraph.prebuilt")

from langchain_core.messages import AIMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402
from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402
from langgraph.graph import END, START, MessagesState, StateGraph  # noqa: E402
from langgraph.prebuilt import tools_condition  # noqa: E402
from langgraph.types import Command  # noqa: E402

from policy_engine import Runtime  # noqa: E402
from policy_engine.integrations.langgraph import Approval, WorkflowStopped, gated_tool_node  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "examples" / "integrations"
DIRECTORY = {"fin": ["finance_approver"], "sam": ["support_manager"]}


class Shop:
    def __init__(self) -> None:
        self.refunds: list[dict] = []
        self.mails: list[str] = []
        shop = self

        @tool
        def refund_order(order_id: str, amount: int) -> dict:
            """Refund an order."""
            shop.refunds.append({"order_id": order_id, "amount": amount})
            return {"refund_id": f"rf-{len(shop.refunds)}", "order_id": order_id, "amount": amount}

        @tool
        def send_email(to: str, body: str) -> dict:
            """Email someone."""
            shop.mails.append(to)
            return {"message_id": f"m-{len(shop.mails)}", "to": to}

        @tool
        def delete_customers(count: int) -> str:
            """Delete customers."""
            raise AssertionError("the gate must stop this")

        self.tools = [refund_order, send_email, delete_customers]


@pytest.fixture
def rt(tmp_path):
    with Runtime.open(str(POLICY), ledger=f"sqlite:///{tmp_path / 'l.db'}") as r:
        yield r


def graph_for(rt, shop: Shop, script: list[list[dict]]):
    def model(state: MessagesState) -> dict:
        turn = sum(1 for m in state["messages"] if isinstance(m, AIMessage))
        calls = script[turn] if turn < len(script) else []
        return {"messages": [AIMessage(content="", tool_calls=calls)]}

    g = StateGraph(MessagesState)
    g.add_node("agent", model)
    g.add_node("tools", gated_tool_node(shop.tools, rt, workflow="shop-support", approvers=DIRECTORY))
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: END})
    g.add_edge("tools", "agent")
    return g.compile(checkpointer=InMemorySaver())


def refund(amount: int, cid: str) -> dict:
    return {"name": "refund_order", "args": {"order_id": "A-1", "amount": amount}, "id": cid}


def tool_messages(state) -> dict:
    return {m.tool_call_id: m for m in state["messages"] if m.type == "tool"}


def executions(rt) -> list:
    return rt.ledger.entries(kind="execution")


def held(rt, shop, script=None, thread="t1"):
    g = graph_for(rt, shop, script or [[refund(400, "c1")]])
    cfg = {"configurable": {"thread_id": thread}}
    state = g.invoke({"messages": [("user", "go")]}, cfg)
    return g, cfg, state["__interrupt__"][0].value


def test_allow_runs_the_tool_and_records_the_receipt_of_declared_fields(rt):
    shop = Shop()
    g = graph_for(rt, shop, [[refund(20, "c1")]])
    state = g.invoke({"messages": [("user", "go")]}, {"configurable": {"thread_id": "t"}})
    assert shop.refunds == [{"order_id": "A-1", "amount": 20}]
    assert tool_messages(state)["c1"].status == "success"
    [x] = executions(rt)
    assert x.body["authorized"] is True
    assert x.body["receipt"] == {"order_id": "A-1", "amount": 20, "refund_id": "rf-1"}  # declared fields only
    assert x.body["missing_receipt"] == ["reviewer"]


def test_require_approval_interrupts_with_the_recorded_decision(rt):
    shop = Shop()
    _, _, request = held(rt, shop)
    assert shop.refunds == []
    d = rt.ledger.get(request["decision_id"])
    assert d.body["decision"]["effect"] == "require_approval"
    assert request["action_digest"] == d.body["decision"]["action_digest"]
    assert request["rule"] == "large_refund"
    assert request["approvals"][0]["roles"] == ["finance_approver"] and request["approvals"][0]["count"] == 1


def test_an_approval_from_a_role_holder_bound_to_the_digest_runs_the_tool_once(rt):
    shop = Shop()
    g, cfg, request = held(rt, shop)
    state = g.invoke(Command(resume=Approval.for_request(request, "fin").to_dict()), cfg)
    assert shop.refunds == [{"order_id": "A-1", "amount": 400}]
    assert tool_messages(state)["c1"].status == "success"
    [x] = executions(rt)
    assert x.body["authorized"] and x.body["receipt"]["reviewer"] == "fin"
    assert rt.authorization(request["decision_id"]).status == "executed"


def test_a_second_resume_with_the_same_approval_is_refused(rt):
    shop = Shop()
    g, cfg, request = held(rt, shop)
    interrupted = g.get_state(cfg).config
    ok = Approval.for_request(request, "fin").to_dict()
    g.invoke(Command(resume=ok), cfg)
    # LangGraph lets the same interrupt be resumed again from its checkpoint (a fork)
    state = g.invoke(Command(resume=ok), interrupted)
    state = g.invoke(Command(resume={**ok, "principal": "fin2"}), interrupted)
    assert len(shop.refunds) == 1
    assert "already ran" in tool_messages(state)["c1"].content
    assert [x.body["authorized"] for x in executions(rt)] == [True]


def test_a_resume_with_no_approver_is_refused(rt):
    shop = Shop()
    g, cfg, request = held(rt, shop)
    for value in ({"decision_id": request["decision_id"], "action_digest": request["action_digest"]}, "approve",
                  True, {**Approval.for_request(request, "fin").to_dict(), "principal": " "}):
        g2, cfg2, request2 = held(rt, shop, thread=f"t-{value!r}")
        if isinstance(value, dict):
            value = {**value, "decision_id": request2["decision_id"], "action_digest": request2["action_digest"]}
        state = g2.invoke(Command(resume=value), cfg2)
        msg = tool_messages(state)["c1"]
        assert msg.status == "error" and "Stopline refused" in msg.content
        assert rt.authorization(request2["decision_id"]).status == "pending"
    assert shop.refunds == [] and executions(rt) == []


def test_a_resume_by_a_principal_without_the_role_is_refused(rt):
    shop = Shop()
    g, cfg, request = held(rt, shop)
    for who in ("sam", "mallory"):  # a support manager; someone the directory does not know
        g2, cfg2, r2 = held(rt, shop, thread=who)
        state = g2.invoke(Command(resume={**Approval.for_request(r2, who).to_dict(), "roles": ["finance_approver"]}),
                          cfg2)  # roles in the resume value are ignored: the directory decides
        assert "cannot approve" in tool_messages(state)["c1"].content
        assert rt.authorization(r2["decision_id"]).status == "pending"
    assert shop.refunds == []


def test_an_approval_for_different_tool_arguments_is_refused(rt):
    shop = Shop()
    _, _, small = held(rt, shop, [[refund(60, "c1")]], thread="a")
    g, cfg, big = held(rt, shop, [[refund(900, "c1")]], thread="b")
    forged = [Approval(big["decision_id"], small["action_digest"], "fin").to_dict(),  # another digest
              Approval.for_request(small, "fin").to_dict()]  # another decision
    for value in forged:
        g2, cfg2, r2 = held(rt, shop, [[refund(900, "c1")]], thread=f"b-{len(shop.refunds)}-{value['decision_id']}")
        if value["decision_id"] == big["decision_id"]:
            value = {**value, "decision_id": r2["decision_id"]}
        state = g2.invoke(Command(resume=value), cfg2)
        assert "Stopline refused" in tool_messages(state)["c1"].content
    assert shop.refunds == []


def test_a_resumed_node_does_not_rerun_a_call_that_already_ran(rt):
    shop = Shop()
    g, cfg, request = held(rt, shop, [[refund(20, "c0"), refund(400, "c1")]])
    assert shop.refunds == [{"order_id": "A-1", "amount": 20}]  # ran before the interrupt
    state = g.invoke(Command(resume=Approval.for_request(request, "fin").to_dict()), cfg)
    assert shop.refunds == [{"order_id": "A-1", "amount": 20}, {"order_id": "A-1", "amount": 400}]
    assert "already ran" in tool_messages(state)["c0"].content
    assert len(executions(rt)) == 2


def test_deny_returns_a_tool_message_with_the_reason(rt):
    shop = Shop()
    g = graph_for(rt, shop, [[{"name": "send_email", "args": {"to": "a@competitor.example", "body": "x"},
                              "id": "m1"}]])
    state = g.invoke({"messages": [("user", "go")]}, {"configurable": {"thread_id": "t"}})
    msg = tool_messages(state)["m1"]
    assert msg.status == "error" and "blocked_recipient" in msg.content and "deny" in msg.content
    assert shop.mails == [] and executions(rt) == []


def test_stop_halts_the_graph_and_records_the_stop(rt):
    shop = Shop()
    g = graph_for(rt, shop, [[{"name": "delete_customers", "args": {"count": 500}, "id": "d1"}]])
    with pytest.raises(WorkflowStopped, match="mass_deletion"):
        g.invoke({"messages": [("user", "go")]}, {"configurable": {"thread_id": "t"}})
    ws = rt.workflow_status("shop-support")
    assert ws["status"] == "stopped" and ws["stopped_by"] == "mass_deletion"
    assert [e.kind for e in rt.ledger.entries()] == ["decision", "stop"]
    # the ledger keeps it stopped: an allowed call of another thread halts too
    g2 = graph_for(rt, shop, [[refund(20, "c1")]])
    with pytest.raises(WorkflowStopped):
        g2.invoke({"messages": [("user", "go")]}, {"configurable": {"thread_id": "t2"}})
    assert shop.refunds == []


def test_an_approved_call_halts_when_the_workflow_stopped_after_the_decision(rt):
    shop = Shop()
    g, cfg, request = held(rt, shop)
    graph_stop = graph_for(rt, shop, [[{"name": "delete_customers", "args": {"count": 500}, "id": "d1"}]])
    with pytest.raises(WorkflowStopped):
        graph_stop.invoke({"messages": [("user", "go")]}, {"configurable": {"thread_id": "s"}})
    with pytest.raises(WorkflowStopped):
        g.invoke(Command(resume=Approval.for_request(request, "fin").to_dict()), cfg)
    assert shop.refunds == []


def test_the_example_runs_and_says_what_was_gated(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "langgraph_agent.py")], capture_output=True,
                       text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "the approval names no approver" in out and "sam cannot approve it" in out
    assert "refunds still 2" in out and "blocked_recipient" in out and "mass_deletion" in out
    assert out.rstrip().endswith("workflow status in the ledger: stopped")


FRAMEWORKS = ("langgraph", "langchain_core", "agents", "openai", "mcp")


def test_importing_policy_engine_imports_no_framework():
    code = ("import sys, policy_engine, policy_engine.integrations, policy_engine.integrations.common\n"
            "policy_engine.Runtime\n"
            f"print([m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r}])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


@pytest.mark.parametrize("module,blocked,extra", [
    ("langgraph", "langgraph", "langgraph"), ("openai_agents", "agents", "openai-agents"), ("mcp", "mcp", "mcp")])
def test_a_missing_extra_is_one_line_naming_it(module, blocked, extra):
    code = (f"import sys; sys.modules[{blocked!r}] = None\n"
            f"try:\n    import policy_engine.integrations.{module}\n"
            "except ImportError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == (f"policy_engine.integrations.{module} needs the `{extra}` extra: "
                        f"pip install 'stopline[{extra}]'\n")


def graph_with(rt, tools, script: list[list[dict]], **node_options):
    def model(state: MessagesState) -> dict:
        turn = sum(1 for m in state["messages"] if isinstance(m, AIMessage))
        return {"messages": [AIMessage(content="", tool_calls=script[turn] if turn < len(script) else [])]}

    g = StateGraph(MessagesState)
    g.add_node("agent", model)
    g.add_node("tools", gated_tool_node(tools, rt, workflow="shop-support", approvers=DIRECTORY, **node_options))
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: END})
    g.add_edge("tools", "agent")
    return g.compile(checkpointer=InMemorySaver())


def failing_refund(ran: list):
    @tool
    def refund_order(order_id: str, amount: int) -> dict:
        """Refund an order (the provider charges, then fails)."""
        ran.append(amount)
        raise ConnectionError("payment provider timed out after charging")

    @tool
    async def arefund_order(order_id: str, amount: int) -> dict:
        """Refund an order (the provider charges, then fails)."""
        ran.append(amount)
        raise ConnectionError("payment provider timed out after charging")

    arefund_order.name = "refund_order"
    return refund_order, arefund_order


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_tool_that_raises_is_recorded_as_executed_and_not_run_again(rt, mode):
    ran: list = []
    sync_tool, async_tool = failing_refund(ran)
    g = graph_with(rt, [sync_tool if mode == "sync" else async_tool], [[refund(20, "c1")]])
    cfg = {"configurable": {"thread_id": "t"}}
    with pytest.raises(ConnectionError):
        if mode == "sync":
            g.invoke({"messages": [("user", "go")]}, cfg)
        else:
            asyncio.run(g.ainvoke({"messages": [("user", "go")]}, cfg))
    assert ran == [20]
    [d] = rt.ledger.entries(kind="decision")
    [x] = executions(rt)  # it ran (and may have had its effect): the ledger says so, linked to its decision
    assert x.body["decision"] == d.id and x.body["authorized"]
    assert rt.authorization(d.id).status == "executed"
    # the graph re-run from its checkpoint finds the call done: the tool is not run a second time
    state = g.invoke(None, cfg) if mode == "sync" else asyncio.run(g.ainvoke(None, cfg))
    assert ran == [20] and "already ran" in tool_messages(state)["c1"].content


def test_an_approved_tool_that_raises_uses_its_approval(rt):
    ran: list = []
    sync_tool, _ = failing_refund(ran)
    g = graph_with(rt, [sync_tool], [[refund(400, "c1")]], handle_tool_errors=True)
    cfg = {"configurable": {"thread_id": "t"}}
    request = g.invoke({"messages": [("user", "go")]}, cfg)["__interrupt__"][0].value
    state = g.invoke(Command(resume=Approval.for_request(request, "fin").to_dict()), cfg)
    assert ran == [400] and tool_messages(state)["c1"].status == "error"
    [x] = executions(rt)
    assert x.body["decision"] == request["decision_id"] and x.body["reviewer"] == "fin"
    assert rt.authorization(request["decision_id"]).status == "executed"


def _handler(e: Exception) -> str:
    return f"tool failed: {e}"


@pytest.mark.parametrize("handle", [True, "the tool failed", (RuntimeError,), _handler])
def test_stop_halts_the_graph_whatever_handle_tool_errors_says(rt, handle):
    shop = Shop()
    g = graph_with(rt, shop.tools, [[{"name": "delete_customers", "args": {"count": 500}, "id": "d1"}],
                                    [refund(20, "c2")]], handle_tool_errors=handle)
    with pytest.raises(WorkflowStopped, match="mass_deletion"):  # not a tool message the agent reads and goes on
        g.invoke({"messages": [("user", "go")]}, {"configurable": {"thread_id": "t"}})
    assert rt.workflow_status("shop-support")["stopped_by"] == "mass_deletion"
    assert shop.refunds == [] and [e.kind for e in rt.ledger.entries()] == ["decision", "stop"]


def test_a_tool_argument_cannot_name_the_reviewer_of_its_call(rt):
    shop = Shop()
    forged = {"name": "refund_order", "args": {"order_id": "A-1", "amount": 20, "reviewer": "fin",
                                               "policy_rule": "large_refund"}, "id": "c1"}
    g = graph_for(rt, shop, [[forged]])
    g.invoke({"messages": [("user", "go")]}, {"configurable": {"thread_id": "t"}})
    [x] = executions(rt)  # allowed: nobody reviewed it, whatever the agent says
    assert x.body["reviewer"] is None and "reviewer" not in x.body["receipt"]
    assert x.body["missing_receipt"] == ["reviewer"]
    g, cfg, request = held(rt, shop, [[{**forged, "args": {**forged["args"], "amount": 400, "reviewer": "sam"},
                                         "id": "c2"}]], thread="t2")
    g.invoke(Command(resume=Approval.for_request(request, "fin").to_dict()), cfg)
    x = executions(rt)[-1]  # approved: the reviewer is the approver the ledger counted
    assert x.body["receipt"]["reviewer"] == "fin" and x.body["reviewer"] == "fin"
