"""Session 22 audit of the LangGraph adapter, as an agent built with ``create_react_agent``
uses it: a fake chat model from langchain-core (no mock of Stopline), the real ``ToolNode``,
``InMemorySaver`` checkpoints, a SQLite and a PostgreSQL ledger.

- a thread whose tool call fired a stop stayed stuck after the workflow was resumed: every
  run of the thread raised ``WorkflowStopped`` again from the recorded ``stop`` decision
  (the ledger said "running"), so the conversation could never go on;
- a call naming a tool the node does not have, allowed by the policy, was claimed and
  recorded as executed (``ToolNode`` answers it "not a valid tool" and runs nothing); held,
  it was put to a reviewer.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import warnings
from operator import add
from typing import Annotated, Any, TypedDict

import pytest

pytest.importorskip("langgraph.prebuilt")

from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel  # noqa: E402
from langchain_core.messages import AIMessage, ToolMessage  # noqa: E402
from langchain_core.tools import InjectedToolCallId, tool  # noqa: E402
from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402
from langgraph.graph import END, START, MessagesState, StateGraph  # noqa: E402
from langgraph.graph.message import add_messages  # noqa: E402
from langgraph.prebuilt import ToolNode  # noqa: E402
from langgraph.types import Command  # noqa: E402
from ledger_fixtures import ledger_url  # noqa: E402,F401  (the fixture: SQLite and PostgreSQL)

from policy_engine import Runtime  # noqa: E402
from policy_engine.integrations.common import ToolGate  # noqa: E402
from policy_engine.integrations.langgraph import (  # noqa: E402
    Approval,
    StoplineToolWrapper,
    WorkflowStopped,
    gated_tool_node,
    route_tool_calls,
)

from test_integrations_langgraph import DIRECTORY, POLICY, Shop, graph_for  # noqa: E402  # isort: skip

THREAD = {"configurable": {"thread_id": "t"}}
WF = "shop-support"


class ScriptedModel(FakeMessagesListChatModel):
    """langchain-core's fake chat model, given tools the way ``create_react_agent`` binds them."""

    def bind_tools(self, tools, **kwargs):  # noqa: ANN001, ANN003, ANN201 - the BaseChatModel signature
        return self


def call(name: str, args: dict, cid: str) -> dict:
    return {"name": name, "args": args, "id": cid, "type": "tool_call"}


def agent(node, turns: list[list[dict]], saver=None):
    """A ReAct agent over ``node`` whose model makes ``turns``, then answers "done"."""
    from langgraph.prebuilt import create_react_agent

    replies = [AIMessage("", tool_calls=t) for t in turns] + [AIMessage("done")]
    with warnings.catch_warnings():  # (moved to langchain.agents in LangGraph 1.0; still LangGraph's own)
        warnings.simplefilter("ignore")
        return create_react_agent(ScriptedModel(responses=replies), node, checkpointer=saver or InMemorySaver())


def run(graph, value, mode: str, config=THREAD):
    if mode == "sync":
        return graph.invoke(value, config)
    return asyncio.run(graph.ainvoke(value, config))


def tool_messages(state) -> dict:
    return {m.tool_call_id: m for m in state["messages"] if m.type == "tool"}


MAIL = call("send_email", {"to": "ann@customer.example", "body": "hi"}, "c-mail")
WIPE = call("delete_customers", {"count": 500}, "c-wipe")


# ------------------------------------------------------------------ the stop, then the resume
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_thread_stopped_by_its_call_goes_on_once_the_workflow_is_resumed(ledger_url, mode):  # noqa: F811
    shop = Shop()
    with Runtime.open(str(POLICY), ledger=ledger_url) as rt:
        g = agent(gated_tool_node(shop.tools, rt, workflow=WF, approvers=DIRECTORY), [[WIPE]])
        with pytest.raises(WorkflowStopped):
            run(g, {"messages": [("user", "tidy up")]}, mode)
        with pytest.raises(WorkflowStopped):  # still stopped: the thread halts again, nothing recorded twice
            run(g, None, mode)
        assert rt.workflow_status(WF)["status"] == "stopped"
        assert rt.resume(WF, evidence={"incident_reviewed": True}, principal="ops-lead").allowed

        state = run(g, None, mode)  # was: WorkflowStopped, forever, on a running workflow

        msg = tool_messages(state)["c-wipe"]
        assert msg.status == "error"
        assert "`stop`" in msg.content and "resumed" in msg.content
        assert state["messages"][-1].content == "done"  # the model read the refusal and answered
        assert len(rt.ledger.entries(kind="stop")) == 1
        assert rt.workflow_status(WF)["status"] == "running"
        assert rt.ledger.entries(kind="execution") == []


def test_in_one_task_the_calls_of_the_stopped_turn_are_refused_after_the_resume(tmp_path):
    shop = Shop()
    with Runtime.open(str(POLICY), ledger=f"sqlite:///{tmp_path / 'l.db'}") as rt:
        g = graph_for(rt, shop, [[MAIL, WIPE]])  # tools_condition: one task, gated in the model's order
        with pytest.raises(WorkflowStopped):
            g.invoke({"messages": [("user", "tidy up")]}, THREAD)
        assert rt.resume(WF, evidence={"incident_reviewed": True}, principal="ops-lead").allowed
        state = g.invoke(None, THREAD)
        msgs = tool_messages(state)
        assert msgs["c-wipe"].status == msgs["c-mail"].status == "error"
        assert "resumed" in msgs["c-wipe"].content
        assert "stopped by `mass_deletion` after this call's decision" in msgs["c-mail"].content
        assert shop.mails == []  # allowed before the stop: that decision is not used after it
        assert rt.ledger.entries(kind="execution") == []


def test_the_same_stopping_call_made_again_after_the_resume_stops_the_workflow_again(tmp_path):
    shop = Shop()
    with Runtime.open(str(POLICY), ledger=f"sqlite:///{tmp_path / 'l.db'}") as rt:
        g = agent(
            gated_tool_node(shop.tools, rt, workflow=WF, approvers=DIRECTORY), [[WIPE], [{**WIPE, "id": "c-wipe-2"}]]
        )
        with pytest.raises(WorkflowStopped):
            g.invoke({"messages": [("user", "tidy up")]}, THREAD)
        assert rt.resume(WF, evidence={"incident_reviewed": True}, principal="ops-lead").allowed
        with pytest.raises(WorkflowStopped):  # the model's next turn asks again: a new call, a new stop
            g.invoke(None, THREAD)
        assert len(rt.ledger.entries(kind="stop")) == 2
        assert rt.workflow_status(WF)["status"] == "stopped"


# ------------------------------------------------------------------ a tool the node does not have
@pytest.mark.parametrize("handle", [True, False])
def test_a_call_to_a_tool_the_node_lacks_is_refused_never_recorded_as_executed(tmp_path, handle):
    shop = Shop()
    mail_only = [t for t in shop.tools if t.name == "send_email"]
    small = call("refund_order", {"order_id": "A-1", "amount": 20}, "c-small")  # allowed by the policy
    large = call("refund_order", {"order_id": "A-1", "amount": 400}, "c-large")  # held by the policy
    with Runtime.open(str(POLICY), ledger=f"sqlite:///{tmp_path / 'l.db'}") as rt:
        node = gated_tool_node(mail_only, rt, workflow=WF, approvers=DIRECTORY, handle_tool_errors=handle)
        state = agent(node, [[small, large]]).invoke({"messages": [("user", "refund")]}, THREAD)

        assert "__interrupt__" not in state  # no reviewer is asked about a call nothing would run
        msgs = tool_messages(state)
        for cid in ("c-small", "c-large"):
            assert msgs[cid].status == "error"
            assert "no tool named 'refund_order'" in msgs[cid].content and "send_email" in msgs[cid].content
        assert rt.ledger.entries(kind="execution") == []  # was: c-small claimed and recorded as executed
        status = {d.body["action"]["id"]: rt.authorization(d.id).status for d in rt.ledger.entries(kind="decision")}
        assert status == {
            "c-small": "allowed",  # gated and recorded, never claimed
            "c-large": "cancelled",
        }  # withdrawn from the reviewers' queue


def test_a_wrapper_on_a_plain_tool_node_refuses_a_tool_the_node_lacks(tmp_path):
    shop = Shop()
    mail_only = [t for t in shop.tools if t.name == "send_email"]
    with Runtime.open(str(POLICY), ledger=f"sqlite:///{tmp_path / 'l.db'}") as rt:
        node = ToolNode(mail_only, wrap_tool_call=StoplineToolWrapper(ToolGate(rt, WF, DIRECTORY)))
        g = StateGraph(MessagesState)
        g.add_node(
            "agent",
            lambda s: {
                "messages": [AIMessage("", tool_calls=[call("refund_order", {"order_id": "A-1", "amount": 20}, "c1")])]
            },
        )
        g.add_node("tools", node)
        g.add_edge(START, "agent")
        g.add_conditional_edges("agent", route_tool_calls, ["tools", END])
        g.add_edge("tools", END)
        state = g.compile(checkpointer=InMemorySaver()).invoke({"messages": [("user", "go")]}, THREAD)
        assert "no tool named 'refund_order'" in tool_messages(state)["c1"].content
        assert rt.ledger.entries(kind="execution") == []


def test_a_stop_trigger_still_fires_for_a_tool_the_node_lacks(tmp_path):
    shop = Shop()
    mail_only = [t for t in shop.tools if t.name == "send_email"]
    with Runtime.open(str(POLICY), ledger=f"sqlite:///{tmp_path / 'l.db'}") as rt:
        g = agent(gated_tool_node(mail_only, rt, workflow=WF, approvers=DIRECTORY), [[WIPE]])
        with pytest.raises(WorkflowStopped):
            g.invoke({"messages": [("user", "tidy up")]}, THREAD)
        assert rt.workflow_status(WF)["status"] == "stopped"


# ------------------------------------------------------------------ one turn, one held call, one allowed
def _restarted(saver: InMemorySaver) -> InMemorySaver:
    """The checkpointer as another process reads it back (pickled plain data)."""
    blob = pickle.dumps(
        (
            {t: {ns: dict(d) for ns, d in by_ns.items()} for t, by_ns in saver.storage.items()},
            dict(saver.writes),
            dict(saver.blobs),
        )
    )
    storage, writes, blobs = pickle.loads(blob)
    fresh = InMemorySaver()
    for t, by_ns in storage.items():
        for ns, d in by_ns.items():
            fresh.storage[t][ns].update(d)
    fresh.writes.update(writes)
    fresh.blobs.update(blobs)
    return fresh


def test_held_and_allowed_calls_of_one_turn_across_a_restart(ledger_url):  # noqa: F811
    shop = Shop()
    small = call("refund_order", {"order_id": "A-1", "amount": 20}, "c-small")
    large = call("refund_order", {"order_id": "A-1", "amount": 400}, "c-large")
    saver = InMemorySaver()
    with Runtime.open(str(POLICY), ledger=ledger_url) as rt:
        g = agent(gated_tool_node(shop.tools, rt, workflow=WF, approvers=DIRECTORY), [[small, large]], saver)
        state = g.invoke({"messages": [("user", "refund")]}, THREAD)
        [held] = state["__interrupt__"]
        assert held.value["tool_call_id"] == "c-large"
        assert shop.refunds == [{"order_id": "A-1", "amount": 20}]  # the allowed call ran in its own task
        assert len(rt.ledger.entries(kind="execution")) == 1
        request = held.value

    with Runtime.open(str(POLICY), ledger=ledger_url) as rt:  # another process: new runtime, graph, saver
        g = agent(gated_tool_node(shop.tools, rt, workflow=WF, approvers=DIRECTORY), [], _restarted(saver))
        state = g.invoke(Command(resume={held.id: Approval.for_request(request, "fin").to_dict()}), THREAD)
        assert shop.refunds == [{"order_id": "A-1", "amount": 20}, {"order_id": "A-1", "amount": 400}]
        msgs = tool_messages(state)
        assert [m.tool_call_id for m in state["messages"] if m.type == "tool"] == ["c-small", "c-large"]
        assert msgs["c-small"].status == msgs["c-large"].status == "success"
        execs = {x.body["receipt"].get("amount"): x.body["receipt"] for x in rt.ledger.entries(kind="execution")}
        assert execs[400]["reviewer"] == "fin" and "reviewer" not in execs[20]

        # the same approval resumed again from the interrupted checkpoint runs nothing again
        interrupted = next(h for h in g.get_state_history(THREAD) if h.interrupts)
        again = g.invoke(Command(resume={held.id: Approval.for_request(request, "fin").to_dict()}), interrupted.config)
        assert len(shop.refunds) == 2
        assert "already ran" in tool_messages(again)["c-large"].content
        assert len(rt.ledger.entries(kind="execution")) == 2


def test_a_call_id_reused_in_a_later_turn_with_the_same_arguments_is_not_run_again(tmp_path):
    """Documented (docs/integrations.md, "Tool call ids"): one decision per thread, node, call
    id and arguments, so a model that numbers its calls `call_0` in every turn and repeats a
    call is answered "already ran" (fail closed), never run twice."""
    shop = Shop()
    reminder = call("send_email", {"to": "ann@customer.example", "body": "reminder"}, "call_0")
    with Runtime.open(str(POLICY), ledger=f"sqlite:///{tmp_path / 'l.db'}") as rt:
        node = gated_tool_node(shop.tools, rt, workflow=WF, approvers=DIRECTORY)
        replies = [AIMessage("", tool_calls=[reminder]), AIMessage("sent"), AIMessage("", tool_calls=[reminder])]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from langgraph.prebuilt import create_react_agent

            g = create_react_agent(
                ScriptedModel(responses=replies + [AIMessage("sent")]), node, checkpointer=InMemorySaver()
            )
        g.invoke({"messages": [("user", "remind ann")]}, THREAD)
        state = g.invoke({"messages": [("user", "remind her again")]}, THREAD)
        assert shop.mails == ["ann@customer.example"]
        last = [m for m in state["messages"] if m.type == "tool"][-1]
        assert "already ran for this call" in last.content
        assert len(rt.ledger.entries(kind="execution")) == 1


# ------------------------------------------------------------------ receipts of what the tool returned
class State(TypedDict, total=False):
    history: Annotated[list, add_messages]
    messages: Annotated[list, add_messages]
    refunds: Annotated[int, add]


def _refund_tool(shape: str, messages_key: str = "messages"):
    @tool
    def refund_order(order_id: str, amount: int, call_id: Annotated[str, InjectedToolCallId]) -> Any:
        """Refund an order."""
        answer = ToolMessage(
            json.dumps({"refund_id": "rf-9", "order_id": order_id, "amount": amount}), tool_call_id=call_id
        )
        if shape == "list":  # ToolNode takes a list of Commands and messages, one answering the call
            return [Command(update={"refunds": 1}), answer]
        return Command(update={messages_key: [answer]})

    return refund_order


@pytest.mark.parametrize("shape", ["list", "command under the node's messages key"])
def test_the_receipt_holds_what_a_tool_reported_in_a_list_or_under_another_messages_key(tmp_path, shape):
    key = "history" if shape != "list" else "messages"

    small = call("refund_order", {"order_id": "A-1", "amount": 20}, "c1")
    with Runtime.open(str(POLICY), ledger=f"sqlite:///{tmp_path / 'l.db'}") as rt:
        node = gated_tool_node(
            [_refund_tool("list" if shape == "list" else "command", key)],
            rt,
            workflow=WF,
            approvers=DIRECTORY,
            messages_key=key,
        )
        g = StateGraph(State)
        g.add_node("agent", lambda s: {key: [AIMessage("", tool_calls=[small])]})
        g.add_node("tools", node)
        g.add_edge(START, "agent")
        g.add_edge("agent", "tools")
        g.add_edge("tools", END)
        state = g.compile(checkpointer=InMemorySaver()).invoke({key: [("user", "refund")]}, THREAD)
        assert [m.tool_call_id for m in state[key] if m.type == "tool"] == ["c1"]
        [x] = rt.ledger.entries(kind="execution")
        assert x.body["receipt"]["refund_id"] == "rf-9"  # was: missing (the output read as None)
