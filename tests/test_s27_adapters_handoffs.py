"""The Agents SDK: a run of a protected agent is gated wherever it goes (session 27).

Before, ``protect(triage, ...)`` gated ``triage``'s own tools only: a handoff to another
agent (``handoffs=[refunder]`` or ``handoff(refunder)``) went on with that agent's tools
ungated (a $5,000 refund the policy denies ran, no decision, no execution recorded, no
warning), and so did the tools of an agent run as a tool (``refunder.as_tool(...)``). Now
every agent a protected run can reach is gated by the same gate, unless it was protected
with its own gate first."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

pytest.importorskip("agents")
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

from agents import Agent, Runner, function_tool, handoff  # noqa: E402
from test_integrations_openai_agents import example  # noqa: E402

from policy_engine import Runtime  # noqa: E402
from policy_engine.integrations.openai_agents import protect  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "examples" / "integrations"
DIRECTORY = {"fin": ["finance_approver"]}

#: a policy that lets the triage agent delegate to the refunder as a tool (`ask_refunder`)
DELEGATING = """
workflow "shop-support" {
  version "1"
  owners {
    business "Support"
    technical "Platform"
  }
  default deny

  action ask_refunder {
    system "agents"
    description "Ask the refund agent"
    allow delegate when `true`
  }

  action refund_order {
    system "payments"
    description "Refund an order"
    irreversible
    deny above_ceiling when `action.amount > 1000`
    allow small when `action.amount <= 1000`
  }
}
"""


@pytest.fixture
def rt(tmp_path):
    with Runtime.open(str(POLICY), ledger=f"sqlite:///{tmp_path / 'l.db'}") as r:
        yield r


def refunder_agent(ran: list, amount: int = 5000) -> Agent:
    @function_tool
    def refund_order(order_id: str, amount: int) -> str:
        """Refund an order."""
        ran.append(amount)
        return "refunded"

    model = example.ScriptedModel([[("refund_order", "r1", {"order_id": "A-1", "amount": amount})]])
    return Agent(name="refunder", instructions="x", model=model, tools=[refund_order])


def triage_agent(handoffs: list) -> Agent:
    model = example.ScriptedModel([[("transfer_to_refunder", "h1", {})]])
    return Agent(name="triage", instructions="x", model=model, handoffs=handoffs)


def decisions(rt) -> list:
    return [(d["action_type"], d["effect"]) for d in (e.body["decision"] for e in rt.ledger.entries(kind="decision"))]


@pytest.mark.parametrize("how", ["agent", "handoff()"])
def test_a_handoff_target_of_a_protected_agent_is_gated(rt, how):
    ran: list = []
    refunder = refunder_agent(ran)
    triage = triage_agent([refunder if how == "agent" else handoff(refunder)])
    protect(triage, rt, workflow="shop-support", approvers=DIRECTORY)
    result = asyncio.run(Runner.run(triage, "go"))
    assert result.last_agent is refunder
    assert ran == []  # before: [5000], nothing in the ledger
    assert decisions(rt) == [("refund_order", "deny")]
    outputs = [str(getattr(i, "output", "")) for i in result.new_items]
    assert any("above_ceiling" in o for o in outputs)


def test_a_handoff_target_known_only_when_invoked_is_gated(rt):
    ran: list = []
    refunder = refunder_agent(ran)
    h = handoff(refunder)
    h._agent_ref = None  # (a handoff of your own: its agent is known when it is invoked)
    triage = triage_agent([h])
    protect(triage, rt, workflow="shop-support", approvers=DIRECTORY)
    asyncio.run(Runner.run(triage, "go"))
    assert ran == [] and decisions(rt) == [("refund_order", "deny")]


def test_a_handoff_added_after_protect_is_gated(rt):
    ran: list = []
    triage = triage_agent([])
    protect(triage, rt, workflow="shop-support", approvers=DIRECTORY)
    triage.handoffs.append(refunder_agent(ran))
    asyncio.run(Runner.run(triage, "go"))
    assert ran == [] and decisions(rt) == [("refund_order", "deny")]


def test_agents_that_hand_off_to_each_other_are_covered_once(rt):
    ran: list = []
    refunder = refunder_agent(ran, amount=20)
    triage = triage_agent([refunder])
    refunder.handoffs.append(triage)
    protect(triage, rt, workflow="shop-support", approvers=DIRECTORY)
    asyncio.run(Runner.run(triage, "go"))
    assert ran == [20] and decisions(rt) == [("refund_order", "allow")]
    assert [x.body["authorized"] for x in rt.ledger.entries(kind="execution")] == [True]


def test_the_tools_of_an_agent_run_as_a_tool_are_gated(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "shop.policy").write_text(DELEGATING)
    with Runtime.open(str(tmp_path / "p"), ledger=f"sqlite:///{tmp_path / 'l.db'}") as rt:
        ran: list = []
        refunder = refunder_agent(ran)
        model = example.ScriptedModel([[("ask_refunder", "t1", {"input": "refund A-1"})]])
        triage = Agent(name="triage", instructions="x", model=model,
                       tools=[refunder.as_tool("ask_refunder", "Ask the refund agent")])
        protect(triage, rt, workflow="shop-support")
        asyncio.run(Runner.run(triage, "go"))
        assert ran == []  # before: [5000], the delegation recorded, the refund not
        assert decisions(rt) == [("ask_refunder", "allow"), ("refund_order", "deny")]


def test_an_agent_protected_with_its_own_gate_keeps_it(rt):
    ran: list = []
    refunder = refunder_agent(ran, amount=20)
    protect(refunder, rt, workflow="shop-support", approvers=DIRECTORY, scope="refunds")
    triage = triage_agent([refunder])
    protect(triage, rt, workflow="shop-support", approvers=DIRECTORY)
    asyncio.run(Runner.run(triage, "go"))
    assert ran == [20] and decisions(rt) == [("refund_order", "allow")]


def test_protecting_a_reached_agent_afterwards_with_another_gate_is_an_error_at_setup(rt):
    refunder = refunder_agent([])
    protect(triage_agent([refunder]), rt, workflow="shop-support", approvers=DIRECTORY)
    with pytest.raises(ValueError, match="a run of agent `triage`, protected before it, reaches it"):
        protect(refunder, rt, workflow="mcp-files")
    protect(refunder, rt, workflow="shop-support", approvers=DIRECTORY,
            gate=refunder.tools[0].on_invoke_tool.__stopline_gated__.gate)  # the same gate: fine
