"""The OpenAI Agents SDK's shell tools gated (a ``ShellTool`` with a local executor, a
``LocalShellTool``): before, ``protect`` only warned that they ran outside the policy, so a
denied ``rm -rf`` ran. Against the real openai-agents package with a scripted model."""

from __future__ import annotations

import asyncio
import json
import os
import warnings

import pytest

pytest.importorskip("agents")
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

from agents import Agent, LocalShellTool, Model, ModelResponse, Runner, ShellTool, Usage  # noqa: E402
from openai.types.responses import (  # noqa: E402
    ResponseFunctionShellToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)
from openai.types.responses.response_output_item import LocalShellCall  # noqa: E402

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
roles [ops_lead]

workflow "ops" {
  version "1"
  owners {
    business "Ops"
    technical "Platform"
  }
  default deny

  action shell {
    system "host"
    description "Run shell commands"
    irreversible
    receipt [commands, exit_code, reviewer]

    deny destructive when `action.commands.exists(c, c.startsWith("rm "))`
    require_approval restart by 1 ops_lead when `action.commands.exists(c, c.startsWith("systemctl "))`
    allow read_only when `action.commands.all(c, c.startsWith("ls") || c.startsWith("cat "))`
  }

  action local_shell {
    system "host"
    description "Run one argv"
    irreversible
    receipt [command, result]

    allow echo when `size(action.command) > 0 && action.command[0] == "echo"`
  }

  stop fork_bomb {
    description "A fork bomb"
    when `action.type == "shell" && action.commands.exists(c, c.contains(":(){"))`
    severity critical
    owner "Ops"
    affects [host]
    rollback "Reboot the host"
    notify [ops_lead]
    resume when {
      reviewed: `true` "reviewed"
    }
  }
}
"""


class ShellModel(Model):
    """Each turn: the next batch of shell calls ``(kind, call_id, payload)``, then a message."""

    def __init__(self, turns):
        self.turns = list(turns)

    async def get_response(self, *args, **kwargs):
        if self.turns:
            out = []
            for kind, cid, p in self.turns.pop(0):
                if kind == "shell":
                    out.append(ResponseFunctionShellToolCall(type="shell_call", id=f"sh_{cid}", call_id=cid,
                                                             status="completed", action={"commands": p}))
                else:
                    out.append(LocalShellCall(type="local_shell_call", id=f"ls_{cid}", call_id=cid,
                                              status="completed", action={"type": "exec", "command": p, "env": {}}))
        else:
            out = [ResponseOutputMessage(id="msg", type="message", role="assistant", status="completed",
                                         content=[ResponseOutputText(type="output_text", text="done",
                                                                     annotations=[])])]
        return ModelResponse(output=out, usage=Usage(), response_id=None)

    def stream_response(self, *args, **kwargs):  # pragma: no cover - not used
        raise NotImplementedError


@pytest.fixture
def rt(tmp_path):
    (tmp_path / "ops.policy").write_text(POLICY)
    with Runtime.open(str(tmp_path / "ops.policy"), ledger=f"sqlite:///{tmp_path / 'l.db'}") as r:
        yield r


def agent_with(rt, turns):
    ran: list[list[str]] = []

    def run_shell(request):
        ran.append(list(request.data.action.commands))
        return "\n".join(f"ran {c}" for c in request.data.action.commands)

    def run_local(request):
        ran.append(list(request.data.action.command))
        return "hello"

    agent = Agent(name="ops", instructions="x", model=ShellModel(turns),
                  tools=[ShellTool(executor=run_shell), LocalShellTool(executor=run_local)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UngatedToolWarning)  # gated: no warning
        gate = protect(agent, rt, workflow="ops", approvers={"olga": ["ops_lead"]})
    return agent, gate, ran


def outputs(result):
    return [str(getattr(i, "output", "")) for i in result.new_items if "output" in type(i).__name__.lower()]


def executions(rt):
    return [e.body for e in rt.ledger.entries(kind="execution")]


def test_an_allowed_shell_call_runs_once_and_is_recorded_with_its_receipt(rt):
    agent, _, ran = agent_with(rt, [[("shell", "c1", ["ls -la", "cat notes.txt"])]])
    asyncio.run(Runner.run(agent, "go"))
    assert ran == [["ls -la", "cat notes.txt"]]
    [x] = executions(rt)
    assert x["authorized"] and x["receipt"] == {"commands": ["ls -la", "cat notes.txt"]}


def test_a_denied_shell_call_never_runs_and_the_model_reads_why(rt):
    agent, _, ran = agent_with(rt, [[("shell", "c1", ["rm -rf /srv/data"])]])
    result = asyncio.run(Runner.run(agent, "go"))
    assert ran == []  # before: the SDK ran it, whatever the policy said
    assert any("Stopline denied `shell` (destructive)" in o for o in outputs(result))
    assert executions(rt) == []


def test_a_held_shell_call_is_an_interruption_that_a_counted_approval_runs_once(rt):
    agent, gate, ran = agent_with(rt, [[("shell", "c1", ["systemctl restart api"])]])
    result = asyncio.run(Runner.run(agent, "go"))
    [held] = result.interruptions
    assert ran == []
    req = request_for(gate, held)
    assert req["args"] == {"commands": ["systemctl restart api"]} and req["rule"] == "restart"
    state = result.to_state()
    # the SDK's own approval is not one: the ledger's word decides
    state.approve(held, always_approve=True)
    refused = asyncio.run(Runner.run(agent, state))
    assert ran == [] and any("approval required" in o for o in outputs(refused))

    agent, gate, ran = agent_with(rt, [[("shell", "c2", ["systemctl restart api"])]])
    result = asyncio.run(Runner.run(agent, "go"))
    [held] = result.interruptions
    state = result.to_state()
    out = approve(gate, state, held, Approval.for_request(request_for(gate, held), "olga"))
    assert out.run
    asyncio.run(Runner.run(agent, state))
    assert ran == [["systemctl restart api"]]
    [x] = executions(rt)
    assert x["receipt"]["reviewer"] == "olga"


def test_a_stop_trigger_halts_the_run_and_nothing_runs(rt):
    agent, _, ran = agent_with(rt, [[("shell", "c1", [":(){ :|:& };:"])]])
    with pytest.raises(WorkflowStopped):
        asyncio.run(Runner.run(agent, "go"))
    assert ran == []
    assert rt.workflow_status("ops")["status"] == "stopped"
    agent, _, ran = agent_with(rt, [[("shell", "c2", ["ls"])]])  # stopped: even an allowed call is refused
    with pytest.raises(WorkflowStopped):
        asyncio.run(Runner.run(agent, "go"))
    assert ran == []


def test_a_local_shell_tool_is_gated_by_its_argv(rt):
    agent, _, ran = agent_with(rt, [[("local", "c1", ["echo", "hi"]), ("local", "c2", ["rm", "-rf", "/"])]])
    result = asyncio.run(Runner.run(agent, "go"))
    assert ran == [["echo", "hi"]]
    assert any("Stopline denied `local_shell`" in o for o in outputs(result))
    [x] = executions(rt)
    assert x["receipt"] == {"command": ["echo", "hi"], "result": "hello"}


def test_a_shell_call_replayed_from_a_saved_state_runs_once(rt):
    agent, gate, ran = agent_with(rt, [[("shell", "c1", ["systemctl reload api"])]])
    result = asyncio.run(Runner.run(agent, "go"))
    [held] = result.interruptions
    state = result.to_state()
    assert approve(gate, state, held, Approval.for_request(request_for(gate, held), "olga")).run
    saved = state.to_string()
    from agents import RunState

    asyncio.run(Runner.run(agent, asyncio.run(RunState.from_string(agent, saved))))
    second = asyncio.run(Runner.run(agent, asyncio.run(RunState.from_string(agent, saved))))
    assert ran == [["systemctl reload api"]]  # one approval, one run
    assert any("already ran" in o for o in outputs(second))
    assert len(executions(rt)) == 1


def test_a_hosted_shell_is_still_named_as_ungated(rt):
    agent = Agent(name="ops", instructions="x", model=ShellModel([]),
                  tools=[ShellTool(environment={"type": "container_auto"})])
    with pytest.warns(UngatedToolWarning, match="ShellTool"):
        protect(agent, rt, workflow="ops")


def test_a_shell_receipt_from_a_structured_result(rt):
    from agents import ShellCallOutcome, ShellCommandOutput, ShellResult

    def run_shell(request):
        return ShellResult(output=[ShellCommandOutput(stdout="a\n", stderr="", command="ls",
                                                      outcome=ShellCallOutcome(type="exit", exit_code=0)),
                                   ShellCommandOutput(stdout="b\n", stderr="w\n", command="cat x",
                                                      outcome=ShellCallOutcome(type="exit", exit_code=1))])

    agent = Agent(name="ops", instructions="x", model=ShellModel([[("shell", "c1", ["ls", "cat x"])]]),
                  tools=[ShellTool(executor=run_shell)])
    protect(agent, rt, workflow="ops")
    asyncio.run(Runner.run(agent, "go"))
    [x] = executions(rt)
    assert x["receipt"] == {"commands": ["ls", "cat x"], "exit_code": 1}
    assert json.dumps(x["receipt"])  # (recordable)
