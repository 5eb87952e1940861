"""The OpenAI Agents SDK's ``CustomTool`` (one raw string in) gated: before, ``protect``
only warned that it ran outside the policy, so a denied input ran. Against the real
openai-agents package with a scripted model."""

from __future__ import annotations

import asyncio
import os
import warnings

import pytest

pytest.importorskip("agents")
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

from agents import Agent, CustomTool, Model, ModelResponse, Runner, Usage  # noqa: E402
from openai.types.responses import ResponseCustomToolCall, ResponseOutputMessage, ResponseOutputText  # noqa: E402

from policy_engine import Runtime  # noqa: E402
from policy_engine.integrations.openai_agents import (  # noqa: E402
    Approval,
    UngatedToolWarning,
    WorkflowStopped,
    approve,
    protect,
    request_for,
)

POLICY = """\
roles [dba]

workflow "data" {
  version "1"
  owners {
    business "Data"
    technical "Platform"
  }
  default deny

  action sql {
    system "warehouse"
    description "Run one SQL statement"
    irreversible
    receipt [input, reviewer]

    deny drops when `action.input.lowerAscii().contains("drop ")`
    require_approval writes by 1 dba when `action.input.lowerAscii().startsWith("update ")`
    allow reads when `action.input.lowerAscii().startsWith("select ")`
  }

  stop truncate {
    description "A TRUNCATE"
    when `action.type == "sql" && action.input.lowerAscii().contains("truncate")`
    severity critical
    owner "Data"
    affects [warehouse]
    rollback "Restore the snapshot"
    notify [dba]
    resume when {
      reviewed: `true` "reviewed"
    }
  }
}
"""


class SqlModel(Model):
    """Each turn: the next batch of custom tool calls ``(call_id, input)``, then a message."""

    def __init__(self, turns):
        self.turns = list(turns)

    async def get_response(self, *args, **kwargs):
        if self.turns:
            out = [ResponseCustomToolCall(type="custom_tool_call", id=f"ct_{cid}", call_id=cid, name="sql", input=q)
                   for cid, q in self.turns.pop(0)]
        else:
            out = [ResponseOutputMessage(id="msg", type="message", role="assistant", status="completed",
                                         content=[ResponseOutputText(type="output_text", text="done",
                                                                     annotations=[])])]
        return ModelResponse(output=out, usage=Usage(), response_id=None)

    def stream_response(self, *args, **kwargs):  # pragma: no cover - not used
        raise NotImplementedError


@pytest.fixture
def rt(tmp_path):
    (tmp_path / "data.policy").write_text(POLICY)
    with Runtime.open(str(tmp_path / "data.policy"), ledger=f"sqlite:///{tmp_path / 'l.db'}") as r:
        yield r


def agent_with(rt, turns):
    ran: list[str] = []

    def run_sql(ctx, q):
        ran.append(q)
        return f"1 row for {q}"

    agent = Agent(name="analyst", instructions="x", model=SqlModel(turns),
                  tools=[CustomTool(name="sql", description="SQL", on_invoke_tool=run_sql)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UngatedToolWarning)  # gated: no warning
        gate = protect(agent, rt, workflow="data", approvers={"dana": ["dba"]})
    return agent, gate, ran


def outputs(result):
    return [str(getattr(i, "output", "")) for i in result.new_items if "output" in type(i).__name__.lower()]


def executions(rt):
    return [e.body for e in rt.ledger.entries(kind="execution")]


def test_an_allowed_call_runs_once_and_a_denied_one_never(rt):
    agent, _, ran = agent_with(rt, [[("c1", "SELECT 1"), ("c2", "DROP TABLE users")]])
    result = asyncio.run(Runner.run(agent, "go"))
    assert ran == ["SELECT 1"]  # before: the SDK ran both, whatever the policy said
    assert any("Stopline denied `sql` (drops)" in o for o in outputs(result))
    [x] = executions(rt)
    assert x["authorized"] and x["receipt"] == {"input": "SELECT 1"}
    effects = sorted(e.body["decision"]["effect"] for e in rt.ledger.entries(kind="decision"))
    assert effects == ["allow", "deny"]


def test_a_held_call_is_an_interruption_that_a_counted_approval_runs_once(rt):
    agent, gate, ran = agent_with(rt, [[("c1", "UPDATE t SET a = 1")]])
    result = asyncio.run(Runner.run(agent, "go"))
    [held] = result.interruptions
    assert ran == []
    req = request_for(gate, held)
    assert req["args"] == {"input": "UPDATE t SET a = 1"} and req["rule"] == "writes"
    state = result.to_state()
    state.approve(held, always_approve=True)  # the SDK's own approval is not one
    refused = asyncio.run(Runner.run(agent, state))
    assert ran == [] and any("approval required" in o for o in outputs(refused))

    agent, gate, ran = agent_with(rt, [[("c2", "UPDATE t SET a = 2")]])
    result = asyncio.run(Runner.run(agent, "go"))
    [held] = result.interruptions
    state = result.to_state()
    assert approve(gate, state, held, Approval.for_request(request_for(gate, held), "dana")).run
    asyncio.run(Runner.run(agent, state))
    assert ran == ["UPDATE t SET a = 2"]
    [x] = executions(rt)
    assert x["receipt"]["reviewer"] == "dana"


def test_a_stop_trigger_halts_the_run_and_nothing_runs(rt):
    agent, _, ran = agent_with(rt, [[("c1", "TRUNCATE users")]])
    with pytest.raises(WorkflowStopped):
        asyncio.run(Runner.run(agent, "go"))
    assert ran == [] and rt.workflow_status("data")["status"] == "stopped"
    agent, _, ran = agent_with(rt, [[("c2", "SELECT 1")]])  # stopped: even an allowed call is refused
    with pytest.raises(WorkflowStopped):
        asyncio.run(Runner.run(agent, "go"))
    assert ran == []


def test_a_custom_tool_is_gated_once_and_by_one_gate(rt):
    agent, gate, _ = agent_with(rt, [])
    tool = agent.tools[0]
    wrapped = tool.on_invoke_tool
    protect(agent, rt, workflow="data", gate=gate)  # the same gate again: nothing changes
    assert tool.on_invoke_tool is wrapped
    other = Agent(name="other", instructions="x", model=SqlModel([]), tools=[tool])
    with pytest.raises(ValueError, match="already gated"):
        protect(other, rt, workflow="another")
