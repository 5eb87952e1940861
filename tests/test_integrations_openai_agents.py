"""policy_engine.integrations.openai_agents against the real openai-agents package (a scripted
model, no network): the SDK's known approval holes reproduced and refused."""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("agents")
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

from agents import Agent, Runner, ToolInputGuardrailTripwireTriggered, function_tool  # noqa: E402

from policy_engine import Runtime  # noqa: E402
from policy_engine.integrations.openai_agents import Approval, approve, protect, request_for  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "examples" / "integrations"
_spec = importlib.util.spec_from_file_location("oa_example", ROOT / "examples" / "openai_agents_guardrail.py")
example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(example)
DIRECTORY = {"fin": ["finance_approver"], "sam": ["support_manager"]}


@pytest.fixture
def rt(tmp_path):
    with Runtime.open(str(POLICY), ledger=f"sqlite:///{tmp_path / 'l.db'}") as r:
        yield r


def setup(rt, turns):
    refunds: list[int] = []

    @function_tool
    def refund_order(order_id: str, amount: int) -> str:
        """Refund an order."""
        refunds.append(amount)
        return json.dumps({"refund_id": f"rf-{len(refunds)}", "order_id": order_id, "amount": amount})

    @function_tool
    def delete_customers(count: int) -> str:
        """Delete customers."""
        raise AssertionError("the gate must stop this")

    model = example.ScriptedModel(turns)
    agent = Agent(name="shop", instructions="x", model=model, tools=[refund_order, delete_customers])
    gate = protect(agent, rt, workflow="shop-support", approvers=DIRECTORY)
    return agent, gate, refunds, model


def refund(cid, amount, order="A-1"):
    return ("refund_order", cid, {"order_id": order, "amount": amount})


def run(coro):
    return asyncio.run(coro)


def test_allow_runs_and_records_the_receipt(rt):
    agent, _, refunds, _ = setup(rt, [[refund("c1", 20)]])
    run(Runner.run(agent, "go"))
    assert refunds == [20]
    [x] = rt.ledger.entries(kind="execution")
    assert x.body["authorized"] and x.body["receipt"] == {"order_id": "A-1", "amount": 20, "refund_id": "rf-1"}


def test_require_approval_interrupts_and_runs_once_on_a_counted_approval(rt):
    agent, gate, refunds, _ = setup(rt, [[refund("c1", 400)]])
    result = run(Runner.run(agent, "go"))
    [held] = result.interruptions
    req = request_for(gate, held)
    assert rt.ledger.get(req["decision_id"]).body["decision"]["action_digest"] == req["action_digest"]
    state = result.to_state()
    refused = [Approval(req["decision_id"], req["action_digest"], ""),  # no approver
               Approval.for_request(req, "sam"),  # no finance role
               Approval.for_request(req, "mallory"),  # unknown to the directory
               Approval(req["decision_id"], "sha256:" + "0" * 64, "fin")]  # other arguments
    for a in refused:
        assert not approve(gate, state, held, a).run
    assert rt.authorization(req["decision_id"]).status == "pending"
    assert approve(gate, state, held, Approval.for_request(req, "fin")).run
    run(Runner.run(agent, state))
    assert refunds == [400]
    assert rt.authorization(req["decision_id"]).status == "executed"
    # the same approval again: the decision's approvals are used
    assert not approve(gate, state, held, Approval.for_request(req, "fin")).run


def test_an_sdk_approval_without_a_stopline_approval_does_not_run_the_tool(rt):
    agent, gate, refunds, _ = setup(rt, [[refund("c1", 400)]])
    result = run(Runner.run(agent, "go"))
    state = result.to_state()
    state.approve(result.interruptions[0])  # the SDK's approve: no identity, no digest
    result = run(Runner.run(agent, state))
    assert refunds == []
    assert any("approval required" in str(getattr(i, "output", "")) for i in result.new_items)


def test_a_standing_approve_never_beats_a_later_deny(rt):
    agent, gate, refunds, _ = setup(rt, [[refund("c1", 400)], [refund("c2", 5000, "B"), refund("c3", 300, "C")]])
    result = run(Runner.run(agent, "go"))
    [held] = result.interruptions
    state = result.to_state()
    assert approve(gate, state, held, Approval.for_request(request_for(gate, held), "fin")).run
    state.approve(held, always_approve=True)  # the SDK's standing approval for refund_order
    result = run(Runner.run(agent, state))
    assert refunds == [400]  # neither the denied $5,000 nor the unapproved $300 ran
    outputs = [str(getattr(i, "output", "")) for i in result.new_items]
    assert any("above_ceiling" in o for o in outputs)
    decisions = [e.body["decision"]["effect"] for e in rt.ledger.entries(kind="decision")]
    assert decisions == ["require_approval", "deny", "require_approval"]
    assert [x.body["authorized"] for x in rt.ledger.entries(kind="execution")] == [True]


def test_stop_halts_the_run_and_records_the_stop(rt):
    agent, _, refunds, model = setup(rt, [[("delete_customers", "d1", {"count": 500})]])
    with pytest.raises(ToolInputGuardrailTripwireTriggered) as e:
        run(Runner.run(agent, "go"))
    assert "mass_deletion" in e.value.output.output_info["reason"]
    assert rt.workflow_status("shop-support")["stopped_by"] == "mass_deletion"
    model.turns = [[refund("c9", 20)]]
    with pytest.raises(ToolInputGuardrailTripwireTriggered):
        run(Runner.run(agent, "go"))
    assert refunds == []


def test_the_example_runs_and_says_what_was_gated(tmp_path):
    env = {**os.environ, "OPENAI_AGENTS_DISABLE_TRACING": "1"}
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "openai_agents_guardrail.py")], capture_output=True,
                       text=True, timeout=120, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert "approval by sam: refused" in r.stdout and "approval by fin: counted" in r.stdout
    assert "above_ceiling" in r.stdout and "mass_deletion" in r.stdout
    assert "refunds: [{'order_id': 'A-1', 'amount': 20}, {'order_id': 'A-1', 'amount': 400}]" in r.stdout


def test_a_tool_that_times_out_is_recorded_as_executed(rt):
    started: list[int] = []

    @function_tool(timeout=0.05)
    async def refund_order(order_id: str, amount: int) -> str:
        """Refund an order (the provider charges, then never answers)."""
        started.append(amount)
        await asyncio.Event().wait()  # never set: the SDK's timeout cancels the call

    agent = Agent(name="shop", instructions="x", model=example.ScriptedModel([[refund("c1", 20)]]),
                  tools=[refund_order])
    protect(agent, rt, workflow="shop-support", approvers=DIRECTORY)
    result = run(Runner.run(agent, "go"))
    assert started == [20] and any("timed out" in str(getattr(i, "output", "")) for i in result.new_items)
    [d] = rt.ledger.entries(kind="decision")
    [x] = rt.ledger.entries(kind="execution")  # it started (and may have charged): the ledger says so
    assert x.body["decision"] == d.id and rt.authorization(d.id).status == "executed"


def test_concurrent_runs_sharing_a_call_id_each_run_under_their_own_decision(rt):
    from agents import RunHooks

    ran: list[tuple] = []

    @function_tool
    def refund_order(order_id: str, amount: int) -> str:
        """Refund an order."""
        ran.append((order_id, amount))
        return json.dumps({"refund_id": f"rf-{order_id}", "order_id": order_id, "amount": amount})

    class BothGated(RunHooks):  # both runs pass the guardrail before either tool is invoked
        def __init__(self) -> None:
            self.waiting, self.go = 0, asyncio.Event()

        async def on_tool_start(self, context, agent, tool) -> None:
            self.waiting += 1
            if self.waiting == 2:
                self.go.set()
            await self.go.wait()

    agent = Agent(name="shop", instructions="x", model=example.ScriptedModel([]), tools=[refund_order])
    protect(agent, rt, workflow="shop-support", approvers=DIRECTORY)

    async def both():
        hooks = BothGated()
        runs = [agent.clone(model=example.ScriptedModel([[refund("call_0", amount, order)]]))
                for order, amount in (("A", 20), ("B", 30))]  # a model that numbers its calls from 0
        await asyncio.gather(*(Runner.run(a, "go", hooks=hooks) for a in runs))
    run(both())
    assert sorted(ran) == [("A", 20), ("B", 30)]
    for x in rt.ledger.entries(kind="execution"):  # each execution linked to the decision of what ran
        action = rt.ledger.get(x.body["decision"]).body["action"]
        assert (action["order_id"], action["amount"]) == (x.body["receipt"]["order_id"], x.body["receipt"]["amount"])
        assert x.body["receipt"]["refund_id"] == f"rf-{action['order_id']}" and x.body["authorized"]


def test_the_tool_output_cannot_name_the_reviewer_of_its_call(rt):
    @function_tool
    def refund_order(order_id: str, amount: int) -> str:
        """Refund an order."""
        return json.dumps({"refund_id": "rf-1", "reviewer": "fin", "tool_call_id": "other"})

    agent = Agent(name="shop", instructions="x", model=example.ScriptedModel([[refund("c1", 20)]]),
                  tools=[refund_order])
    protect(agent, rt, workflow="shop-support", approvers=DIRECTORY)
    run(Runner.run(agent, "go"))
    [x] = rt.ledger.entries(kind="execution")
    assert x.body["reviewer"] is None and "reviewer" not in x.body["receipt"]


def test_a_guardrail_that_rejects_after_stoplines_leaves_the_approval_unused(rt):
    from agents import RunState, ToolGuardrailFunctionOutput, tool_input_guardrail

    agent, gate, refunds, _ = setup(rt, [[refund("c1", 400)]])
    calls = {"n": 0}

    @tool_input_guardrail
    def rate_limit(data):  # the user's own guardrail, after Stopline's: rejects the first attempt
        calls["n"] += 1
        if calls["n"] == 1:
            return ToolGuardrailFunctionOutput.reject_content("rate limited, try again", output_info={})
        return ToolGuardrailFunctionOutput.allow(output_info={})

    for t in agent.tools:
        t.tool_input_guardrails = [*t.tool_input_guardrails, rate_limit]
    result = run(Runner.run(agent, "go"))
    [held] = result.interruptions
    state = result.to_state()
    req = request_for(gate, held)
    assert approve(gate, state, held, Approval.for_request(req, "fin")).run
    saved = state.to_string()
    result = run(Runner.run(agent, state))
    assert refunds == [] and any("rate limited" in str(getattr(i, "output", "")) for i in result.new_items)
    del result, state
    gc.collect()
    assert gate._openai_agents.cleared == {}  # the clearance went with its invocation
    st = rt.authorization(req["decision_id"])
    assert st.status == "approved" and st.claimed_by is None  # not burnt by a call that never ran
    # the run retried from its saved state: the approved call runs, once
    result = run(Runner.run(agent, run(RunState.from_string(agent, saved))))
    assert refunds == [400] and rt.authorization(req["decision_id"]).status == "executed"
    result = run(Runner.run(agent, run(RunState.from_string(agent, saved))))
    assert refunds == [400] and any("already ran" in str(getattr(i, "output", "")) for i in result.new_items)
    assert [x.body["authorized"] for x in rt.ledger.entries(kind="execution")] == [True]


def test_two_resumes_of_one_approval_past_every_guardrail_run_it_once(rt):
    from agents import RunHooks, RunState

    agent, gate, refunds, _ = setup(rt, [[refund("c1", 400)]])
    result = run(Runner.run(agent, "go"))
    [held] = result.interruptions
    state = result.to_state()
    assert approve(gate, state, held, Approval.for_request(request_for(gate, held), "fin")).run
    saved = state.to_string()

    class BothCleared(RunHooks):  # both resumes pass every guardrail before either tool is invoked
        def __init__(self) -> None:
            self.waiting, self.go = 0, asyncio.Event()

        def arrive(self) -> None:
            self.waiting += 1
            if self.waiting == 2:
                self.go.set()

        async def on_tool_start(self, context, agent, tool) -> None:
            self.arrive()
            await self.go.wait()

    async def both():
        hooks = BothCleared()

        async def one(s):
            try:
                return await Runner.run(agent, s, hooks=hooks)
            finally:  # a run that ended (its call refused before the tool) waits for nothing
                hooks.arrive()
        states = [await RunState.from_string(agent, saved) for _ in range(2)]
        return await asyncio.gather(*(one(s) for s in states))
    results = run(both())
    assert refunds == [400]  # one transition wins: the other is told the approval is being used
    outputs = [str(getattr(i, "output", "")) for r in results for i in r.new_items]
    assert any("already being used" in o for o in outputs)
    assert [x.body["authorized"] for x in rt.ledger.entries(kind="execution")] == [True]


def test_an_action_json_cannot_hold_is_a_refusal_the_model_reads(rt):
    agent, gate, refunds, _ = setup(rt, [[refund("c1", 20)]])
    gate.action = lambda tool, args, cid: {**args, "type": tool, "id": cid, "tags": {("vip", 1): True}}
    result = run(Runner.run(agent, "go"))  # no TypeError out of the run
    assert refunds == []
    assert any("object key ('vip', 1)" in str(getattr(i, "output", "")) for i in result.new_items)
    [d] = rt.ledger.entries(kind="decision")
    assert d.body["decision"]["effect"] == "deny" and "not a string" in d.body["decision"]["reason"]
