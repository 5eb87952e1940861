"""A tool that ran and returned a declared receipt field beyond the engine's input limits,
through the LangGraph and OpenAI Agents SDK adapters (the real packages): the execution is
recorded without that field (listed in ``missing_receipt``), the agent gets the result in
full, the operator is told (a warning naming the tool, the decision and the field), no
claim is left in doubt.

Before: ``Runtime.executed`` refused the whole receipt (``RuntimeUsageError: the receipt is
beyond the input limits``) after the tool ran: nothing recorded, the claim left in doubt, the
graph / the agent run raised."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import pytest

from policy_engine import Runtime
from policy_engine.integrations.outputs import bounded_receipt
from policy_engine.limits import MAX_INPUT_CHARS, MAX_INPUT_ITEMS

POLICY = Path(__file__).resolve().parent.parent / "examples" / "integrations"
DIRECTORY = {"fin": ["finance_approver"], "ops": ["operator"]}
TO = "a@customer.example"  # `allow customer_mail`, receipt [to, message_id]
HUGE = {"chars": "x" * (MAX_INPUT_CHARS + 1),
        "items": {f"k{i}": i for i in range(300_000)}}


@pytest.fixture
def rt(tmp_path):
    with Runtime.open(str(POLICY), ledger=f"sqlite:///{tmp_path / 'l.db'}") as r:
        yield r


def recorded_without_message_id(rt, caplog) -> None:
    [d] = rt.ledger.entries(kind="decision")
    [x] = rt.ledger.entries(kind="execution")
    assert x.body["receipt"] == {"to": TO} and x.body["missing_receipt"] == ["message_id"]
    assert list(rt.claims_in_doubt()) == []
    [warned] = [m for m in caplog.messages if "beyond the input limits" in m]
    assert "send_email" in warned and d.id in warned and "message_id" in warned


# ------------------------------------------------------------------------------------------ LangGraph
def langgraph_run(rt, message_id) -> tuple[list, object]:
    pytest.importorskip("langgraph.prebuilt")
    from langchain_core.messages import AIMessage
    from langchain_core.tools import tool
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import tools_condition

    from policy_engine.integrations.langgraph import gated_tool_node

    mails: list = []

    @tool
    def send_email(to: str, body: str) -> dict:
        """Email someone."""
        mails.append(to)
        return {"message_id": message_id, "to": to}

    call = {"name": "send_email", "args": {"to": TO, "body": "hi"}, "id": "c1"}

    def model(state: MessagesState) -> dict:
        first = not any(isinstance(m, AIMessage) for m in state["messages"])
        return {"messages": [AIMessage(content="", tool_calls=[call] if first else [])]}

    g = StateGraph(MessagesState)
    g.add_node("agent", model)
    g.add_node("tools", gated_tool_node([send_email], rt, workflow="shop-support", approvers=DIRECTORY))
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: END})
    g.add_edge("tools", "agent")
    state = g.compile().invoke({"messages": [("user", "go")]})
    [msg] = [m for m in state["messages"] if m.type == "tool"]
    return mails, msg


@pytest.mark.parametrize("kind", sorted(HUGE))
def test_langgraph_a_result_beyond_the_limits_is_recorded_without_that_field(rt, kind, caplog):
    caplog.set_level(logging.WARNING, logger="policy_engine")
    mails, msg = langgraph_run(rt, HUGE[kind])
    assert mails == [TO] and msg.status == "success"
    assert json.loads(msg.content)["message_id"] == HUGE[kind]  # the model gets the result in full
    assert msg.response_metadata["stopline"] == {"receipt_dropped": ["message_id"]}
    recorded_without_message_id(rt, caplog)


# ------------------------------------------------------------------------------------------ OpenAI Agents
def openai_run(rt, message_id) -> tuple[list, list[str]]:
    pytest.importorskip("agents")
    os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")
    from agents import Agent, Model, ModelResponse, Runner, Usage, function_tool
    from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText

    from policy_engine.integrations.openai_agents import protect

    class Scripted(Model):
        def __init__(self) -> None:
            self.turn = 0

        async def get_response(self, *a, **k) -> ModelResponse:
            self.turn += 1
            if self.turn == 1:
                out: list = [ResponseFunctionToolCall(type="function_call", name="send_email", call_id="c1",
                                                      arguments=json.dumps({"to": TO, "body": "hi"}),
                                                      id="fc_c1", status="completed")]
            else:
                out = [ResponseOutputMessage(id="msg", type="message", role="assistant", status="completed",
                                             content=[ResponseOutputText(type="output_text", text="done",
                                                                         annotations=[])])]
            return ModelResponse(output=out, usage=Usage(), response_id=None)

        def stream_response(self, *a, **k):  # pragma: no cover
            raise NotImplementedError

    mails: list = []

    @function_tool
    def send_email(to: str, body: str) -> str:
        """Email someone."""
        mails.append(to)
        return json.dumps({"message_id": message_id, "to": to})

    agent = Agent(name="shop", instructions="x", model=Scripted(), tools=[send_email])
    protect(agent, rt, workflow="shop-support", approvers=DIRECTORY)
    result = asyncio.run(Runner.run(agent, "go"))
    return mails, [str(i.output) for i in result.new_items if getattr(i, "output", None) is not None]


@pytest.mark.parametrize("kind", sorted(HUGE))
def test_openai_agents_a_result_beyond_the_limits_is_recorded_without_that_field(rt, kind, caplog):
    caplog.set_level(logging.WARNING, logger="policy_engine")
    mails, outputs = openai_run(rt, HUGE[kind])
    assert mails == [TO]
    [told] = outputs
    assert json.loads(told)["message_id"] == HUGE[kind]  # the model gets the result in full
    recorded_without_message_id(rt, caplog)


# ------------------------------------------------------------------------------------------ the rule
def test_fields_each_within_but_beyond_together_drop_the_largest_first():
    half = "y" * (MAX_INPUT_CHARS // 2 + 10)
    receipt = {"tool": "t", "a": half, "b": half + "zz", "c": "small", "d": list(range(10))}
    kept, dropped = bounded_receipt(receipt, ("tool",))
    assert dropped == ["b"] and kept == {"tool": "t", "a": half, "c": "small", "d": list(range(10))}


def test_a_receipt_within_the_limits_is_kept_whole():
    receipt = {"tool": "t", "tags": ["t"] * (MAX_INPUT_ITEMS - 10)}
    assert bounded_receipt(receipt, ("tool",)) == (receipt, [])
