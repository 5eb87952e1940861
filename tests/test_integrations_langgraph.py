"""policy_engine.integrations.langgraph against the real langgraph package: every tool call of
a graph gated on a Runtime (SQLite ledger in a tmp dir), and LangGraph's known
human-in-the-loop holes reproduced and refused."""

from __future__ import annotations

import asyncio
import dataclasses
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
from langgraph.types import Command, interrupt  # noqa: E402

from policy_engine import Runtime  # noqa: E402
from policy_engine.integrations.common import Outcome  # noqa: E402
from policy_engine.integrations.langgraph import (  # noqa: E402
    Approval,
    WorkflowStopped,
    gated_tool_node,
    route_tool_calls,
)

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
    interrupted = g.get_state(cfg).config
    assert shop.refunds == []  # one task holds the turn: it runs once its held call is settled
    state = g.invoke(Command(resume=Approval.for_request(request, "fin").to_dict()), cfg)
    # (ToolNode runs the turn's calls in parallel: in either order)
    assert sorted(shop.refunds, key=lambda r: r["amount"]) == [{"order_id": "A-1", "amount": 20},
                                                              {"order_id": "A-1", "amount": 400}]
    assert tool_messages(state)["c0"].status == tool_messages(state)["c1"].status == "success"
    # the node re-run from the interrupted checkpoint: neither call runs again
    state = g.invoke(Command(resume=Approval.for_request(request, "fin").to_dict()), interrupted)
    assert len(shop.refunds) == 2 and len(executions(rt)) == 2
    assert all("already ran" in tool_messages(state)[c].content for c in ("c0", "c1"))


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
                        f"pip install 'stopline[{extra}]' (in a checkout: pip install -e '.[{extra}]')\n")


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


# ------------------------------------------------------------------ several held calls in one turn
def routed_graph(rt, tools, script: list[list[dict]]):
    """The graph of `graph_with`, each tool call sent to the tool node as its own task."""
    def model(state: MessagesState) -> dict:
        turn = sum(1 for m in state["messages"] if isinstance(m, AIMessage))
        return {"messages": [AIMessage(content="", tool_calls=script[turn] if turn < len(script) else [])]}

    g = StateGraph(MessagesState)
    g.add_node("agent", model)
    g.add_node("tools", gated_tool_node(tools, rt, workflow="shop-support", approvers=DIRECTORY))
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", route_tool_calls, ["tools", END])
    g.add_edge("tools", "agent")
    return g.compile(checkpointer=InMemorySaver())


def by_call(interrupts) -> dict:
    return {i.value["tool_call_id"]: i for i in interrupts}


TWIN_REFUNDS = [[refund(400, "a"), refund(400, "b"), refund(20, "c0")]]  # a and b: the same arguments


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_several_held_calls_each_raise_their_own_interrupt_and_resume_together(rt, mode):
    shop = Shop()
    g = routed_graph(rt, shop.tools, TWIN_REFUNDS)
    cfg = {"configurable": {"thread_id": "t"}}

    def invoke(x):
        return g.invoke(x, cfg) if mode == "sync" else asyncio.run(g.ainvoke(x, cfg))
    state = invoke({"messages": [("user", "go")]})
    held_calls = by_call(state["__interrupt__"])
    assert sorted(held_calls) == ["a", "b"] and len({i.id for i in held_calls.values()}) == 2
    for cid, i in held_calls.items():  # each interrupt names its own decision
        d = rt.ledger.get(i.value["decision_id"])
        assert d.body["action"]["id"] == cid and i.value["action_digest"] == d.body["decision"]["action_digest"]
    assert held_calls["a"].value["decision_id"] != held_calls["b"].value["decision_id"]
    state = invoke(Command(resume={i.id: Approval.for_request(i.value, "fin").to_dict() for i in held_calls.values()}))
    assert "__interrupt__" not in state
    assert sorted(r["amount"] for r in shop.refunds) == [20, 400, 400]
    assert all(m.status == "success" for m in tool_messages(state).values())
    xs = executions(rt)
    assert len(xs) == 3 and sorted(x.body["reviewer"] or "" for x in xs) == ["", "fin", "fin"]


def test_a_swapped_resume_map_counts_for_neither_call(rt):
    shop = Shop()
    g = routed_graph(rt, shop.tools, TWIN_REFUNDS)
    cfg = {"configurable": {"thread_id": "t"}}
    held_calls = by_call(g.invoke({"messages": [("user", "go")]}, cfg)["__interrupt__"])
    a, b = held_calls["a"], held_calls["b"]
    state = g.invoke(Command(resume={a.id: Approval.for_request(b.value, "fin").to_dict(),
                                     b.id: Approval.for_request(a.value, "fin").to_dict()}), cfg)
    for i, other in ((a, b), (b, a)):
        msg = tool_messages(state)[i.value["tool_call_id"]]
        assert msg.status == "error" and f"the approval is for decision '{other.value['decision_id']}'" in msg.content
        assert rt.authorization(i.value["decision_id"]).status == "pending"
    assert shop.refunds == [{"order_id": "A-1", "amount": 20}]


def test_resuming_some_held_calls_leaves_the_others_waiting(rt):
    shop = Shop()
    g = routed_graph(rt, shop.tools, TWIN_REFUNDS)
    cfg = {"configurable": {"thread_id": "t"}}
    held_calls = by_call(g.invoke({"messages": [("user", "go")]}, cfg)["__interrupt__"])
    a, b = held_calls["a"], held_calls["b"]
    state = g.invoke(Command(resume={a.id: Approval.for_request(a.value, "fin").to_dict()}), cfg)
    assert [i.id for i in state["__interrupt__"]] == [b.id]  # b still waits, on the same interrupt
    assert len(shop.refunds) == 2 and rt.authorization(b.value["decision_id"]).status == "pending"
    state = g.invoke(Command(resume={b.id: Approval.for_request(b.value, "fin").to_dict()}), cfg)
    assert len(shop.refunds) == 3 and "__interrupt__" not in state
    assert [x.body["decision"] for x in executions(rt)][-2:] == [a.value["decision_id"], b.value["decision_id"]]


def test_one_task_asks_for_its_held_calls_in_order_and_each_value_counts_for_the_call_it_names(rt):
    shop = Shop()
    g = graph_for(rt, shop, TWIN_REFUNDS)  # tools_condition: the whole turn is one task
    cfg = {"configurable": {"thread_id": "t"}}
    [first] = g.invoke({"messages": [("user", "go")]}, cfg)["__interrupt__"]
    assert first.value["tool_call_id"] == "a" and shop.refunds == []
    state = g.invoke(Command(resume=Approval.for_request(first.value, "fin").to_dict()), cfg)
    [second] = state["__interrupt__"]
    assert second.value["tool_call_id"] == "b" and shop.refunds == []
    assert rt.authorization(first.value["decision_id"]).status == "approved"
    assert rt.authorization(second.value["decision_id"]).status == "pending"  # a's approval is a's only
    state = g.invoke(Command(resume=Approval.for_request(second.value, "fin").to_dict()), cfg)
    assert sorted(r["amount"] for r in shop.refunds) == [20, 400, 400]  # each once (in parallel)
    assert all(m.status == "success" for m in tool_messages(state).values())
    assert {x.body["decision"] for x in executions(rt)} >= {first.value["decision_id"], second.value["decision_id"]}


def test_in_one_task_a_value_naming_another_held_call_counts_for_that_call_only(rt):
    shop = Shop()
    g = graph_for(rt, shop, TWIN_REFUNDS)
    cfg = {"configurable": {"thread_id": "t"}}
    g.invoke({"messages": [("user", "go")]}, cfg)
    b_request = next(e for e in rt.ledger.entries(kind="decision") if e.body["action"]["id"] == "b")
    b_approval = Approval(b_request.id, b_request.body["decision"]["action_digest"], "fin").to_dict()
    state = g.invoke(Command(resume=b_approval), cfg)  # answers the interrupt asking for a
    [again] = state["__interrupt__"]
    assert again.value["tool_call_id"] == "a"  # a is asked again: b's approval did not count for it
    assert rt.authorization(again.value["decision_id"]).status == "pending"
    assert rt.authorization(b_request.id).status == "approved"
    state = g.invoke(Command(resume=Approval.for_request(again.value, "fin").to_dict()), cfg)
    assert len(shop.refunds) == 3 and len(executions(rt)) == 3


# ------------------------------------------------------------------ a tool that interrupts itself
def confirming_refund(log: list):
    """A refund that asks the operator for a confirmation code (its own interrupt)."""
    def body(order_id: str, amount: int) -> dict:
        log.append(("start", amount))
        code = interrupt({"ask": "confirmation code", "amount": amount}) if amount == 400 else None
        log.append(("charged", amount, code))
        return {"refund_id": f"rf-{amount}", "order_id": order_id, "amount": amount}

    @tool
    def refund_order(order_id: str, amount: int) -> dict:
        """Refund an order."""
        return body(order_id, amount)

    @tool
    async def arefund_order(order_id: str, amount: int) -> dict:
        """Refund an order."""
        return body(order_id, amount)

    arefund_order.name = "refund_order"
    return refund_order, arefund_order


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_tool_that_interrupts_itself_runs_under_its_approval_once(rt, mode):
    log: list = []
    sync_tool, async_tool = confirming_refund(log)
    g = graph_with(rt, [sync_tool if mode == "sync" else async_tool], [[refund(400, "c1")]])
    cfg = {"configurable": {"thread_id": "t"}}

    def invoke(x, config=cfg):
        return g.invoke(x, config) if mode == "sync" else asyncio.run(g.ainvoke(x, config))
    request = invoke({"messages": [("user", "go")]})["__interrupt__"][0].value
    [ask] = invoke(Command(resume=Approval.for_request(request, "fin").to_dict()))["__interrupt__"]
    assert ask.value == {"ask": "confirmation code", "amount": 400} and executions(rt) == []
    waiting = g.get_state(cfg).config
    state = invoke(Command(resume="7311"))
    assert log[-1] == ("charged", 400, "7311") and tool_messages(state)["c1"].status == "success"
    [x] = executions(rt)
    assert x.body["decision"] == request["decision_id"] and x.body["authorized"] and x.body["reviewer"] == "fin"
    # the waiting tool resumed again (a fork of its checkpoint): the decision is used, nothing runs
    state = invoke(Command(resume="7311"), waiting)
    assert "already ran" in tool_messages(state)["c1"].content
    assert [e for e in log if e[0] == "charged"] == [("charged", 400, "7311")] and len(executions(rt)) == 1


def test_a_waiting_tool_keeps_its_claim_for_the_resumed_node_only(rt):
    log: list = []
    tool_, _ = confirming_refund(log)
    g = graph_with(rt, [tool_], [[refund(400, "c1")]])
    cfg = {"configurable": {"thread_id": "t"}}
    request = g.invoke({"messages": [("user", "go")]}, cfg)["__interrupt__"][0].value
    g.invoke(Command(resume=Approval.for_request(request, "fin").to_dict()), cfg)  # the tool waits
    gate = g.get_graph().nodes["tools"].data.stopline
    wrapper = g.get_graph().nodes["tools"].data._stopline_wrapper
    check = gate.check("refund_order", {"order_id": "A-1", "amount": 400}, "c1", scope="t/tools")
    assert not gate.approved(check).run  # another executor cannot take the approval meanwhile
    ns = next(t for t in g.get_state(cfg).tasks if t.name == "tools").id
    other = {"configurable": {"thread_id": "t", "checkpoint_ns": "tools:another-task"}}
    mine = {"configurable": {"thread_id": "t", "checkpoint_ns": f"tools:{ns}"}}
    approved = Outcome(True, approver="fin")
    assert not wrapper._claim(check, approved, other)[0].run  # a fork (another task) cannot continue it
    out, holder = wrapper._claim(check, approved, mine)  # the resumed node continues it...
    assert out.run and holder is not None
    assert not wrapper._claim(check, approved, mine)[0].run  # ...once: running, it is not continued again
    wrapper._wait(check, holder)  # it waits again: the next resume continues it
    assert wrapper._claim(check, approved, mine)[0].run


def test_in_one_task_a_tool_that_interrupts_gets_its_own_answer_after_its_held_siblings(rt):
    log: list = []
    tool_, _ = confirming_refund(log)
    g = graph_with(rt, [tool_], [[refund(400, "c1"), refund(300, "c2")]])  # one task, both held
    cfg = {"configurable": {"thread_id": "t"}}
    first = g.invoke({"messages": [("user", "go")]}, cfg)["__interrupt__"][0].value
    second = g.invoke(Command(resume=Approval.for_request(first, "fin").to_dict()), cfg)["__interrupt__"][0].value
    assert (first["tool_call_id"], second["tool_call_id"]) == ("c1", "c2")
    [ask] = g.invoke(Command(resume=Approval.for_request(second, "fin").to_dict()), cfg)["__interrupt__"]
    assert ask.value["ask"] == "confirmation code" and ("charged", 300, None) in log  # c2 ran, c1 waits
    state = g.invoke(Command(resume="7311"), cfg)
    assert ("charged", 400, "7311") in log  # its answer, not a sibling's replayed approval
    assert tool_messages(state)["c1"].status == "success" and len(executions(rt)) == 2
    assert sum(1 for e in log if e[0] == "charged") == 2


# ------------------------------------------------------------------ arguments JSON cannot hold
def test_a_dict_key_that_is_not_a_string_is_a_recorded_refusal_the_agent_reads(rt):
    shop = Shop()
    calls = [{"name": "refund_order", "args": {"order_id": "A-1", "amount": 20, "meta": meta}, "id": cid}
             for cid, meta in (("c1", {(1, 2): "x"}), ("c2", {7: "x", "7": "y"}))]  # 7 and "7": never folded
    g = graph_for(rt, shop, [calls])
    state = g.invoke({"messages": [("user", "go")]}, {"configurable": {"thread_id": "t"}})  # no TypeError
    for cid, key in (("c1", "(1, 2)"), ("c2", "7")):
        msg = tool_messages(state)[cid]
        assert msg.status == "error" and f"object key {key}" in msg.content and "not a string" in msg.content
    assert shop.refunds == [] and executions(rt) == []
    assert [e.body["decision"]["effect"] for e in rt.ledger.entries(kind="decision")] == ["deny", "deny"]


def test_a_tool_output_json_cannot_hold_is_still_recorded(rt):
    @tool(response_format="content_and_artifact")
    def refund_order(order_id: str, amount: int) -> tuple:
        """Refund an order."""
        return "refunded", {"refund_id": {("rf", 1): "odd"}, "order_id": order_id, "amount": amount}

    g = graph_with(rt, [refund_order], [[refund(20, "c1")]])
    g.invoke({"messages": [("user", "go")]}, {"configurable": {"thread_id": "t"}})
    [x] = executions(rt)  # it ran: recorded, the field JSON cannot hold as its text
    assert x.body["authorized"] and x.body["receipt"]["amount"] == 20
    assert isinstance(x.body["receipt"]["refund_id"], str) and "odd" in x.body["receipt"]["refund_id"]


def test_in_one_task_a_deny_after_an_approval_wins(rt):
    shop = Shop()
    g = graph_for(rt, shop, TWIN_REFUNDS)
    cfg = {"configurable": {"thread_id": "t"}}
    [a] = g.invoke({"messages": [("user", "go")]}, cfg)["__interrupt__"]
    [b] = g.invoke(Command(resume=Approval.for_request(a.value, "fin").to_dict()), cfg)["__interrupt__"]
    rt.approve(a.value["decision_id"], principal="fin2", roles=["finance_approver"], verdict="deny")  # out of band
    state = g.invoke(Command(resume=Approval.for_request(b.value, "fin").to_dict()), cfg)
    assert tool_messages(state)["a"].status == "error" and "denied" in tool_messages(state)["a"].content
    assert sorted(r["amount"] for r in shop.refunds) == [20, 400]  # b and c0 ran, a did not
    assert rt.authorization(a.value["decision_id"]).status == "denied"


def test_a_tool_that_interrupts_under_a_two_approver_rule_gets_its_own_answer(tmp_path):
    text = (POLICY / "agent_tools.policy").read_text().replace("by 1 finance_approver", "by 2 finance_approver")
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "agent_tools.policy").write_text(text)
    log: list = []
    tool_, _ = confirming_refund(log)
    with Runtime.open(str(tmp_path / "p"), ledger=f"sqlite:///{tmp_path / 'l.db'}") as rt:
        g = StateGraph(MessagesState)
        g.add_node("agent", lambda s: {"messages": [AIMessage(content="", tool_calls=[refund(400, "c1")]
                                                              if len(s["messages"]) == 1 else [])]})
        g.add_node("tools", gated_tool_node([tool_], rt, workflow="shop-support",
                                            approvers={"fin": ["finance_approver"], "fin2": ["finance_approver"]}))
        g.add_edge(START, "agent")
        g.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: END})
        g.add_edge("tools", "agent")
        g = g.compile(checkpointer=InMemorySaver())
        cfg = {"configurable": {"thread_id": "t"}}
        request = g.invoke({"messages": [("user", "go")]}, cfg)["__interrupt__"][0].value
        again = g.invoke(Command(resume=Approval.for_request(request, "fin").to_dict()), cfg)["__interrupt__"]
        assert again[0].value["decision_id"] == request["decision_id"]  # one more approval needed
        [ask] = g.invoke(Command(resume=Approval.for_request(request, "fin2").to_dict()), cfg)["__interrupt__"]
        assert ask.value["ask"] == "confirmation code"
        g.invoke(Command(resume="7311"), cfg)
        assert [e for e in log if e[0] == "charged"] == [("charged", 400, "7311")]  # not fin2's approval
        [x] = rt.ledger.entries(kind="execution")
        assert x.body["authorized"] and x.body["decision"] == request["decision_id"]


def test_routed_tools_that_interrupt_themselves_are_resumed_together(rt):
    log: list = []
    tool_, _ = confirming_refund(log)
    g = routed_graph(rt, [tool_], [[refund(400, "c1"), refund(400, "c2")]])
    cfg = {"configurable": {"thread_id": "t"}}
    held_calls = g.invoke({"messages": [("user", "go")]}, cfg)["__interrupt__"]
    asks = g.invoke(Command(resume={i.id: Approval.for_request(i.value, "fin").to_dict() for i in held_calls}),
                    cfg)["__interrupt__"]
    assert [i.value["ask"] for i in asks] == ["confirmation code"] * 2 and executions(rt) == []
    state = g.invoke(Command(resume={i.id: f"code-{n}" for n, i in enumerate(asks)}), cfg)
    assert sorted(e[2] for e in log if e[0] == "charged") == ["code-0", "code-1"]  # each its own answer
    assert all(m.status == "success" for m in tool_messages(state).values()) and len(executions(rt)) == 2


# ------------------------------------------------------------------ the langgraph-prebuilt API the adapter uses
def test_the_tool_node_uses_only_public_toolnode_api():
    """StoplineToolNode overrides no private method of ToolNode, and the public API it uses
    is there with the signatures it calls: a langgraph-prebuilt release that changes them
    fails here, by name, before any behaviour test does."""
    import inspect
    from importlib.metadata import version

    from langgraph.prebuilt import ToolNode
    from langgraph.prebuilt.tool_node import ToolCallRequest, ToolRuntime

    from policy_engine.integrations.langgraph import StoplineToolNode

    where = f"langgraph-prebuilt {version('langgraph-prebuilt')}"
    private = sorted(n for n, v in vars(StoplineToolNode).items()
                     if n.startswith("_") and not n.startswith("__") and hasattr(ToolNode, n)
                     and (callable(v) or isinstance(v, (property, staticmethod, classmethod))))
    assert not private, f"StoplineToolNode overrides private ToolNode members {private}: use public API only"
    init = inspect.signature(ToolNode.__init__).parameters
    for p in ("name", "tags", "handle_tool_errors", "messages_key", "wrap_tool_call", "awrap_tool_call"):
        assert p in init and init[p].kind is inspect.Parameter.KEYWORD_ONLY, \
            f"{where}: ToolNode(..., {p}=) is gone or no longer keyword-only; the adapter passes it"
    for name in ("invoke", "ainvoke"):
        params = list(inspect.signature(getattr(ToolNode, name)).parameters.values())
        assert [p.name for p in params[:3]] == ["self", "input", "config"] and \
            params[-1].kind is inspect.Parameter.VAR_KEYWORD, \
            f"{where}: ToolNode.{name}(input, config, **kwargs) changed; StoplineToolNode settles a turn there"
    fields = {f.name for f in dataclasses.fields(ToolCallRequest)}
    assert {"tool_call", "runtime"} <= fields, f"{where}: ToolCallRequest has no tool_call / runtime ({fields})"
    assert "config" in {f.name for f in dataclasses.fields(ToolRuntime)}, f"{where}: ToolRuntime has no config"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_turn_is_settled_once_by_the_node_before_its_calls_run(rt, mode, monkeypatch):
    """The node settles the whole turn in invoke/ainvoke and ToolNode runs each call's
    wrapper in that context, so the wrappers find the turn settled: settle runs once, for
    every call of the turn, never once per call (the calls would then run while a sibling
    is still held)."""
    from policy_engine.integrations import langgraph as adapter

    seen: list[list[str]] = []
    settle = adapter.StoplineToolWrapper.settle

    def spy(self, calls, config):
        seen.append([c["id"] for c in calls])
        return settle(self, calls, config)

    monkeypatch.setattr(adapter.StoplineToolWrapper, "settle", spy)
    shop = Shop()
    turn = [refund(20, "a"), refund(30, "b"), {"name": "send_email", "args": {"to": "x@customer.example", "body": "hi"},
                                                "id": "m"}]
    g = graph_for(rt, shop, [turn])
    cfg = {"configurable": {"thread_id": "t"}}
    state = (g.invoke({"messages": [("user", "go")]}, cfg) if mode == "sync"
             else asyncio.run(g.ainvoke({"messages": [("user", "go")]}, cfg)))
    assert seen == [["a", "b", "m"]], f"ToolNode no longer runs wrap_tool_call in the node's context: {seen}"
    assert all(m.status == "success" for m in tool_messages(state).values()) and len(shop.refunds) == 2
