"""A LangGraph agent whose every tool call is gated by Stopline. No network, no model: the
"model" is a script of tool calls. Policy: examples/integrations/agent_tools.policy.

The story:
 1. the agent looks up an order (allow: it runs, the execution is recorded);
 2. it refunds $20 (allow: it runs) and $400 (require_approval: the graph interrupts with
    the decision); `route_tool_calls` gives each call its own task, so the $400 waits
    alone (several held calls would each raise their own interrupt, answered together
    with a map from interrupt id to approval). A resume without an approver is refused
    (the agent gets the reason and asks again), so is a resume by a support manager (no
    finance role); a finance approver's approval, bound to the decision's digest, runs
    the refund;
 3. the same approval replayed from the interrupted checkpoint does not refund again;
 4. it emails a competitor (deny: a tool message with the reason);
 5. it deletes customers in bulk (stop: the graph halts, the ledger stops the workflow).

Run:  pip install -e '.[langgraph]' && python examples/langgraph_agent.py
      (the extra: LangGraph, langgraph-prebuilt and langchain-core, docs/integrations.md)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

try:
    from langchain_core.messages import AIMessage
    from langchain_core.tools import tool
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.types import Command
except ModuleNotFoundError as _missing:  # a core install: say which extra, not a traceback
    sys.exit(f"{_missing.name} is not installed: this example needs the extra, "
             "pip install 'stopline[langgraph]' (docs/integrations.md)")

from policy_engine import Runtime
from policy_engine.integrations.langgraph import Approval, WorkflowStopped, gated_tool_node, route_tool_calls

POLICY = Path(__file__).resolve().parent / "integrations"
DIRECTORY = {"fin": ["finance_approver"], "sam": ["support_manager"]}  # your identity provider
REFUNDS: list[dict] = []  # the side effects that really happened


@tool
def lookup_order(order_id: str) -> dict:
    """Read an order."""
    return {"order_id": order_id, "total": 420}


@tool
def refund_order(order_id: str, amount: int) -> dict:
    """Refund an order."""
    REFUNDS.append({"order_id": order_id, "amount": amount})
    return {"refund_id": f"rf-{len(REFUNDS)}", "order_id": order_id, "amount": amount}


@tool
def send_email(to: str, body: str) -> dict:
    """Email someone."""
    return {"message_id": "m-1", "to": to}


@tool
def delete_customers(count: int) -> str:
    """Delete customer records."""
    raise AssertionError("never reached: the gate stops it")


REFUND = {"name": "refund_order", "args": {"order_id": "A-1", "amount": 400}}
SCRIPTS = {  # the "model": the tool calls it makes, turn by turn, per conversation
    "refund order A-1": [
        [{"name": "lookup_order", "args": {"order_id": "A-1"}, "id": "c1"}],
        [{"name": "refund_order", "args": {"order_id": "A-1", "amount": 20}, "id": "c2"}, {**REFUND, "id": "c3"}],
        [{**REFUND, "id": "c3-retry"}],  # the agent asks again after a refusal
        [{**REFUND, "id": "c3-retry-2"}],
    ],
    "clean up": [
        [{"name": "send_email", "args": {"to": "x@competitor.example", "body": "hi"}, "id": "c4"}],
        [{"name": "delete_customers", "args": {"count": 500}, "id": "c5"}],
    ],
}


def scripted_model(state: MessagesState) -> dict:
    script = SCRIPTS[state["messages"][0].content]
    turn = sum(1 for m in state["messages"] if isinstance(m, AIMessage))
    last = state["messages"][-1]
    done = turn >= len(script) or (turn > 1 and last.type == "tool" and last.status == "success")
    calls = [] if done else script[turn]
    return {"messages": [AIMessage(content="done" if done else "", tool_calls=calls)]}


def build(rt: Runtime):
    tools = gated_tool_node([lookup_order, refund_order, send_email, delete_customers], rt,
                            workflow="shop-support", approvers=DIRECTORY)
    g = StateGraph(MessagesState)
    g.add_node("agent", scripted_model)
    g.add_node("tools", tools)
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", route_tool_calls, ["tools", END])  # a task per tool call
    g.add_edge("tools", "agent")
    return g.compile(checkpointer=InMemorySaver())


def show_tool_messages(state: dict, seen: set) -> None:
    for m in state["messages"]:
        if m.type == "tool" and m.id not in seen:
            seen.add(m.id)
            print(f"  tool {m.name} [{m.tool_call_id}] -> {m.status}: {str(m.content)[:150]}")


def main() -> int:
    db = Path(tempfile.mkdtemp()) / "stopline.db"
    seen: set = set()
    with Runtime.open(str(POLICY), ledger=f"sqlite:///{db}") as rt:
        graph = build(rt)
        cfg = {"configurable": {"thread_id": "t1"}}
        state = graph.invoke({"messages": [("user", "refund order A-1")]}, cfg)
        resumes = [("nobody", lambda r: {"decision_id": r["decision_id"], "action_digest": r["action_digest"]}),
                   ("sam (support_manager)", lambda r: Approval.for_request(r, "sam").to_dict()),
                   ("fin (finance_approver)", lambda r: Approval.for_request(r, "fin").to_dict())]
        for who, approval in resumes:
            request = state["__interrupt__"][0].value
            print(f"interrupt: {request['tool']} {request['args']} [{request['tool_call_id']}] -> {request['rule']} "
                  f"(decision {request['decision_id'][:8]}, {request['action_digest'][:19]}…)")
            interrupted = graph.get_state(cfg).config
            print(f"resume by {who}")
            state = graph.invoke(Command(resume=approval(request)), cfg)
            show_tool_messages(state, seen)
        print(f"refunds that happened: {REFUNDS}")

        graph.invoke(Command(resume=Approval.for_request(request, "fin").to_dict()), interrupted)
        print(f"the same approval replayed from the interrupted checkpoint: refunds still {len(REFUNDS)}")

        cfg2 = {"configurable": {"thread_id": "t2"}}
        try:
            graph.invoke({"messages": [("user", "clean up")]}, cfg2)
        except WorkflowStopped as e:
            print(f"graph halted: {e}")
        show_tool_messages(graph.get_state(cfg2).values, seen)
        print(f"workflow status in the ledger: {rt.workflow_status('shop-support')['status']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
