"""An OpenAI Agents SDK agent whose every tool call is gated by Stopline. No network, no
model: a scripted ``Model`` returns the tool calls. Policy: examples/integrations/agent_tools.policy.

The story:
 1. the agent refunds $20 (allow: it runs, the execution is recorded) and $400
    (require_approval: the run is interrupted); a support manager's approval is refused
    (no finance role); the finance approver's, bound to the decision's digest, is counted
    and the SDK item approved, with the SDK's "always approve" for refunds;
 2. the agent's next turn asks $5,000 (the policy denies it: the standing approval does
    not beat the deny, the tool does not run) and $300 for another order (no approval in
    Stopline: the SDK skips asking, the guardrail refuses it);
 3. the agent deletes customers in bulk: stop; the run halts, the ledger stops the workflow.

Run:  pip install -e '.[openai-agents]' && python examples/openai_agents_guardrail.py
      (the extra: the OpenAI Agents SDK, docs/integrations.md). The SDK's tracing is turned
      off for the run: it would otherwise send the run's spans to OpenAI whenever
      OPENAI_API_KEY is set, and this story makes no network call.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

try:
    from agents import Agent, Runner, ToolInputGuardrailTripwireTriggered, function_tool, set_tracing_disabled
    from agents.items import ModelResponse
    from agents.models.interface import Model
    from agents.usage import Usage
    from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText
except ModuleNotFoundError as _missing:  # a core install: say which extra, not a traceback
    sys.exit(f"{_missing.name} is not installed: this example needs the extra, "
             "pip install 'stopline[openai-agents]' (docs/integrations.md)")

from policy_engine import Runtime
from policy_engine.integrations.openai_agents import Approval, approve, protect, request_for

POLICY = Path(__file__).resolve().parent / "integrations"
DIRECTORY = {"fin": ["finance_approver"], "sam": ["support_manager"]}  # your identity provider
REFUNDS: list[dict] = []


@function_tool
def refund_order(order_id: str, amount: int) -> str:
    """Refund an order."""
    REFUNDS.append({"order_id": order_id, "amount": amount})
    return json.dumps({"refund_id": f"rf-{len(REFUNDS)}", "order_id": order_id, "amount": amount})


@function_tool
def delete_customers(count: int) -> str:
    """Delete customer records."""
    raise AssertionError("never reached: the gate stops it")


class ScriptedModel(Model):
    """Each turn: the next batch of tool calls, then a final message."""

    def __init__(self, turns: list[list[tuple[str, str, dict]]]) -> None:
        self.turns = list(turns)

    async def get_response(self, *args, **kwargs) -> ModelResponse:
        if self.turns:
            out = [ResponseFunctionToolCall(type="function_call", name=n, call_id=cid, arguments=json.dumps(a),
                                            id=f"fc_{cid}", status="completed") for n, cid, a in self.turns.pop(0)]
        else:
            out = [ResponseOutputMessage(id="msg", type="message", role="assistant", status="completed",
                                         content=[ResponseOutputText(type="output_text", text="done",
                                                                     annotations=[])])]
        return ModelResponse(output=out, usage=Usage(), response_id=None)

    def stream_response(self, *args, **kwargs):  # pragma: no cover - not used
        raise NotImplementedError


def tool_outputs(result) -> list[str]:
    return [str(getattr(i, "output", ""))[:150] for i in result.new_items if "output" in type(i).__name__.lower()]


async def main_async() -> int:
    set_tracing_disabled(True)  # no trace export: nothing of the run leaves the machine
    db = Path(tempfile.mkdtemp()) / "stopline.db"
    with Runtime.open(str(POLICY), ledger=f"sqlite:///{db}") as rt:
        model = ScriptedModel([
            [("refund_order", "call_1", {"order_id": "A-1", "amount": 20}),
             ("refund_order", "call_2", {"order_id": "A-1", "amount": 400})],
            [("refund_order", "call_3", {"order_id": "B-7", "amount": 5000}),
             ("refund_order", "call_4", {"order_id": "B-8", "amount": 300})],
        ])
        agent = Agent(name="shop", instructions="help", model=model, tools=[refund_order, delete_customers])
        gate = protect(agent, rt, workflow="shop-support", approvers=DIRECTORY)

        result = await Runner.run(agent, "refund order A-1")
        [held] = result.interruptions
        request = request_for(gate, held)
        print(f"interrupted: {request['tool']} {request['args']} -> {request['rule']}: {request['reason']}")
        state = result.to_state()
        for who in ("sam", "fin"):
            out = approve(gate, state, held, Approval.for_request(request, who))
            print(f"approval by {who}: {'counted, the SDK item approved' if out.run else 'refused: ' + out.message}")
        state.approve(held, always_approve=True)  # the operator's standing approval in the SDK
        result = await Runner.run(agent, state)
        print("tool outputs the model saw:", *tool_outputs(result), sep="\n  ")
        print(f"refunds: {REFUNDS}")

        model.turns = [[("delete_customers", "call_5", {"count": 500})]]
        try:
            await Runner.run(agent, "clean up")
        except ToolInputGuardrailTripwireTriggered as e:
            print(f"run halted: {e.output.output_info['reason']}")
        print(f"workflow status in the ledger: {rt.workflow_status('shop-support')['status']}")
    return 0


def main() -> int:
    return asyncio.run(main_async())


if __name__ == "__main__":
    raise SystemExit(main())
