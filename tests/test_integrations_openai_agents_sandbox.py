"""The OpenAI Agents SDK's sandbox agents (``agents.sandbox.SandboxAgent``) gated. Before,
the sandbox's own ``apply_patch`` (a ``CustomTool`` subclass) was neither gated nor warned
about: a patch the policy denies was written into the workspace. Against the real
openai-agents package: the SDK's ``Runner`` with a scripted model (no network) and a real
Unix-local sandbox session whose workspace is a directory of ``tmp_path``."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import warnings

import pytest

pytest.importorskip("agents")
pytest.importorskip("agents.sandbox")
if sys.platform == "win32":  # pragma: no cover
    pytest.skip("the Unix-local sandbox", allow_module_level=True)
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

from agents import (  # noqa: E402
    Agent,
    ApplyPatchResult,
    ApplyPatchTool,
    CustomTool,
    Model,
    ModelResponse,
    RunConfig,
    Runner,
    RunState,
    ToolInputGuardrailTripwireTriggered,
    Usage,
)
from agents.apply_diff import apply_diff  # noqa: E402
from agents.run_config import SandboxRunConfig  # noqa: E402
from agents.sandbox import Manifest, SandboxAgent  # noqa: E402
from agents.sandbox.capabilities import Filesystem, Memory, Shell  # noqa: E402
from agents.sandbox.entries import File  # noqa: E402
from agents.sandbox.sandboxes import UnixLocalSandboxClient  # noqa: E402
from openai.types.responses import (  # noqa: E402
    ResponseApplyPatchToolCall,
    ResponseCustomToolCall,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

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

workflow "box" {
  version "1"
  owners {
    business "Dev"
    technical "Platform"
  }
  default deny

  action exec_command {
    system "sandbox"
    description "Run a shell command in the sandbox"
    irreversible
    receipt [cmd, reviewer]

    deny removal when `action.cmd.contains("rm ")`
    require_approval network by 1 ops_lead when `action.cmd.startsWith("curl ")`
    allow writes when `action.cmd.startsWith("echo ") || action.cmd.startsWith("cat ")`
  }

  action apply_patch {
    system "sandbox"
    description "Patch the sandbox workspace"
    irreversible
    receipt [operation, path, status, reviewer]

    deny secrets when `action.path.startsWith(".env")`
    require_approval deletion by 1 ops_lead when `action.operation == "delete_file"`
    allow docs when `action.path.startsWith("docs/")`
  }

  stop shutdown {
    description "The sandbox host shut down, or a system file patched"
    when `(action.type == "exec_command" && action.cmd.contains("shutdown"))
          || (action.type == "apply_patch" && action.path.startsWith("etc/"))`
    severity critical
    owner "Dev"
    affects [sandbox]
    rollback "Recreate the sandbox"
    notify [ops_lead]
    resume when {
      reviewed: `true` "reviewed"
    }
  }
}
"""

DIRECTORY = {"olga": ["ops_lead"]}


def message():
    return ResponseOutputMessage(id="msg", type="message", role="assistant", status="completed",
                                 content=[ResponseOutputText(type="output_text", text="done", annotations=[])])


class Scripted(Model):
    """Each turn: the next list of output items, then a message."""

    def __init__(self, turns):
        self.turns = list(turns)

    async def get_response(self, *args, **kwargs):
        return ModelResponse(output=self.turns.pop(0) if self.turns else [message()], usage=Usage(),
                             response_id=None)

    def stream_response(self, *args, **kwargs):  # pragma: no cover - not used
        raise NotImplementedError


def sh(cid, cmd):
    return ResponseFunctionToolCall(type="function_call", id=f"fc_{cid}", call_id=cid, name="exec_command",
                                    arguments=json.dumps({"cmd": cmd}))


def patch(cid, *ops):
    """A sandbox apply_patch call (its V4A text): ``("add", path, lines)``, ``("delete", path)``."""
    text = ["*** Begin Patch"]
    for op in ops:
        if op[0] == "add":
            text += [f"*** Add File: {op[1]}", *(f"+{line}" for line in op[2])]
        else:
            text += [f"*** Delete File: {op[1]}"]
    text.append("*** End Patch")
    return ResponseCustomToolCall(type="custom_tool_call", id=f"ct_{cid}", call_id=cid, name="apply_patch",
                                  input="\n".join(text) + "\n")


@pytest.fixture
def rt(tmp_path):
    (tmp_path / "box.policy").write_text(POLICY)
    with Runtime.open(str(tmp_path / "box.policy"), ledger=f"sqlite:///{tmp_path / 'l.db'}") as r:
        yield r


@pytest.fixture
def ws(tmp_path):
    return tmp_path / "ws"


def sandbox_run(ws, agent, given):
    """Run ``agent`` on a live Unix-local session whose workspace is ``ws`` (kept after the run)."""

    async def go():
        client = UnixLocalSandboxClient()
        session = await client.create(manifest=Manifest(root=str(ws), entries={"old.txt": File(content=b"old\n")}),
                                      options=None)
        async with session:
            return await Runner.run(agent, given, run_config=RunConfig(sandbox=SandboxRunConfig(session=session)))

    return asyncio.run(go())


def box_agent(rt, turns, **kw):
    agent = SandboxAgent(name="box", instructions="x", model=Scripted(turns),
                         capabilities=[Filesystem(), Shell()], **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UngatedToolWarning)  # every tool of its capabilities is gated
        gate = protect(agent, rt, workflow="box", approvers=DIRECTORY)
    return agent, gate


def outputs(result):
    return [str(getattr(i, "output", "")) for i in result.new_items if "output" in type(i).__name__.lower()]


def executions(rt):
    return [e.body for e in rt.ledger.entries(kind="execution")]


def decisions(rt):
    return [(e.body["action"]["type"], e.body["decision"]["effect"]) for e in rt.ledger.entries(kind="decision")]


# ---------------------------------------------------------------------------------- exec_command
def test_an_allowed_command_runs_in_the_sandbox_and_a_denied_one_never(rt, ws):
    agent, _ = box_agent(rt, [[sh("c1", "echo hi > made.txt"), sh("c2", "rm old.txt")]])
    result = sandbox_run(ws, agent, "go")
    assert (ws / "made.txt").read_text() == "hi\n" and (ws / "old.txt").exists()
    assert any("Stopline denied `exec_command` (removal)" in o for o in outputs(result))
    [x] = executions(rt)
    assert x["receipt"] == {"cmd": "echo hi > made.txt"}
    assert sorted(decisions(rt)) == [("exec_command", "allow"), ("exec_command", "deny")]


def test_the_sdk_approval_alone_does_not_run_a_held_command(rt, ws):
    agent, gate = box_agent(rt, [[sh("c1", "curl -s file:///dev/null; echo fetched > got.txt")]])

    async def go():
        client = UnixLocalSandboxClient()
        session = await client.create(manifest=Manifest(root=str(ws)), options=None)
        config = RunConfig(sandbox=SandboxRunConfig(session=session))
        async with session:
            result = await Runner.run(agent, "go", run_config=config)
            [held] = result.interruptions
            req = request_for(gate, held)
            assert req["rule"] == "network" and req["args"]["cmd"].startswith("curl ")
            state = result.to_state()
            state.approve(held, always_approve=True)  # no identity, no digest: not an approval
            return await Runner.run(agent, state, run_config=config)

    result = asyncio.run(go())
    assert not (ws / "got.txt").exists() and executions(rt) == []
    assert any("approval required" in o for o in outputs(result))


def test_an_approved_command_runs_after_resume(rt, ws):
    agent, gate = box_agent(rt, [[sh("c1", "curl -s file:///dev/null; echo fetched > got.txt")]])

    async def go():
        client = UnixLocalSandboxClient()
        session = await client.create(manifest=Manifest(root=str(ws)), options=None)
        config = RunConfig(sandbox=SandboxRunConfig(session=session))
        async with session:
            result = await Runner.run(agent, "go", run_config=config)
            [held] = result.interruptions
            state = result.to_state()
            out = approve(gate, state, held, Approval.for_request(request_for(gate, held), "olga"))
            assert out.run
            await Runner.run(agent, state, run_config=config)

    asyncio.run(go())
    assert (ws / "got.txt").read_text() == "fetched\n"
    [x] = executions(rt)
    assert x["receipt"]["reviewer"] == "olga"


def test_a_stop_trigger_in_a_command_halts_the_run(rt, ws):
    agent, _ = box_agent(rt, [[sh("c1", "echo shutdown > stopped.txt")]])
    with pytest.raises(ToolInputGuardrailTripwireTriggered):
        sandbox_run(ws, agent, "go")
    assert not (ws / "stopped.txt").exists() and rt.workflow_status("box")["status"] == "stopped"


class Typist(Model):
    """Starts ``cat`` on a TTY, then types into the process the sandbox names (its session id
    read from the tool output), then says done."""

    def __init__(self, chars):
        self.chars, self.turn = chars, 0

    async def get_response(self, system_instructions, input, *args, **kwargs):
        self.turn += 1
        if self.turn == 1:
            call = json.dumps({"cmd": "cat > typed.txt", "tty": True, "yield_time_ms": 300})
            out = [ResponseFunctionToolCall(type="function_call", id="fc_1", call_id="c1", name="exec_command",
                                            arguments=call)]
        elif self.turn == 2:
            [sid] = re.findall(r"session ID (\d+)", json.dumps(input, default=str))
            out = [ResponseFunctionToolCall(type="function_call", id="fc_2", call_id="c2", name="write_stdin",
                                            arguments=json.dumps({"session_id": int(sid), "chars": self.chars}))]
        else:
            out = [message()]
        return ModelResponse(output=out, usage=Usage(), response_id=None)

    def stream_response(self, *args, **kwargs):  # pragma: no cover - not used
        raise NotImplementedError


def test_input_typed_into_a_running_process_is_gated(rt, ws):
    agent = SandboxAgent(name="box", instructions="x", model=Typist("rm -rf /\n"), capabilities=[Shell()])
    protect(agent, rt, workflow="box")
    result = sandbox_run(ws, agent, "go")
    # `write_stdin` is an action of its own: undeclared here, so denied, never typed
    assert any("Stopline denied `write_stdin`" in o for o in outputs(result))
    assert decisions(rt) == [("exec_command", "allow"), ("write_stdin", "deny")]
    assert (ws / "typed.txt").read_text() == ""


# ---------------------------------------------------------------------------------- apply_patch
def test_a_denied_patch_never_reaches_the_workspace(rt, ws):
    agent, _ = box_agent(rt, [[patch("p1", ("add", "docs/a.md", ["hello"])),
                               patch("p2", ("add", "./.env", ["KEY=stolen"])),
                               patch("p3", ("add", "docs/../.env", ["KEY=stolen"]))]])
    result = sandbox_run(ws, agent, "go")
    assert (ws / "docs" / "a.md").read_text() == "hello"
    # before: the sandbox wrote .env whatever the policy said (no gate, no warning)
    assert not (ws / ".env").exists()
    assert any("Stopline denied `apply_patch` (secrets)" in o for o in outputs(result))
    # judged as the sandbox writes it: `./.env` and `docs/../.env` (which `docs/` allows as
    # written) are the workspace's `.env`
    paths = sorted(e.body["action"]["path"] for e in rt.ledger.entries(kind="decision"))
    assert paths == [".env", "docs/a.md"]
    [x] = executions(rt)
    assert x["receipt"]["path"] == "docs/a.md" and x["receipt"]["operation"] == "create_file"


def test_a_held_deletion_is_an_interruption_that_a_counted_approval_runs_once(rt, ws):
    # (the workspace's absolute path: held, approved and deleted as `old.txt`)
    agent, gate = box_agent(rt, [[patch("p1", ("delete", str(ws / "old.txt")))]])

    async def go():
        client = UnixLocalSandboxClient()
        session = await client.create(manifest=Manifest(root=str(ws), entries={"old.txt": File(content=b"old\n")}),
                                      options=None)
        config = RunConfig(sandbox=SandboxRunConfig(session=session))
        async with session:
            result = await Runner.run(agent, "go", run_config=config)
            [held] = result.interruptions
            assert (ws / "old.txt").exists()
            req = request_for(gate, held)  # the held operation, as the editor will judge it
            assert req["rule"] == "deletion" and req["args"]["operation"] == "delete_file"
            assert req["args"]["path"] == "old.txt"
            state = result.to_state()
            assert approve(gate, state, held, Approval.for_request(req, "olga")).run
            await Runner.run(agent, state, run_config=config)

    asyncio.run(go())
    assert not (ws / "old.txt").exists()
    [x] = executions(rt)
    assert x["receipt"]["reviewer"] == "olga" and x["receipt"]["path"] == "old.txt"


def test_a_held_patch_is_approved_from_a_saved_state_by_another_gate(rt, ws):
    """A reviewer elsewhere: the saved ``RunState`` loaded against a fresh agent and gate
    (no note of the held operation): ``request_for`` names the held decision (before: it
    recorded the raw patch as a new action, which the policy's path rules cannot read: a
    stop trigger erroring on it stopped the workflow)."""
    agent, _ = box_agent(rt, [[patch("p1", ("delete", "./old.txt"))]])

    async def go():
        client = UnixLocalSandboxClient()
        session = await client.create(manifest=Manifest(root=str(ws), entries={"old.txt": File(content=b"old\n")}),
                                      options=None)
        config = RunConfig(sandbox=SandboxRunConfig(session=session))
        async with session:
            saved = (await Runner.run(agent, "go", run_config=config)).to_state().to_json()
            other, gate = box_agent(rt, [])
            state = await RunState.from_json(other, saved)
            [held] = state.get_interruptions()
            req = request_for(gate, held)
            assert req["rule"] == "deletion" and req["args"]["path"] == "old.txt"
            assert approve(gate, state, held, Approval.for_request(req, "olga")).run
            await Runner.run(other, state, run_config=config)

    asyncio.run(go())
    assert not (ws / "old.txt").exists() and rt.workflow_status("box")["status"] != "stopped"
    assert [d for d in decisions(rt)] == [("apply_patch", "require_approval")]


def test_the_sdk_approval_alone_does_not_run_a_held_patch(rt, ws):
    agent, _ = box_agent(rt, [[patch("p1", ("delete", "old.txt"))]])

    async def go():
        client = UnixLocalSandboxClient()
        session = await client.create(manifest=Manifest(root=str(ws), entries={"old.txt": File(content=b"old\n")}),
                                      options=None)
        config = RunConfig(sandbox=SandboxRunConfig(session=session))
        async with session:
            result = await Runner.run(agent, "go", run_config=config)
            [held] = result.interruptions
            state = result.to_state()
            state.approve(held, always_approve=True)
            return await Runner.run(agent, state, run_config=config)

    result = asyncio.run(go())
    assert (ws / "old.txt").exists() and executions(rt) == []
    assert any("approval required" in o for o in outputs(result))


def test_a_stop_trigger_in_a_patch_halts_the_run(rt, ws):
    agent, _ = box_agent(rt, [[patch("p1", ("add", "etc/passwd", ["root::0:0"]))]])
    with pytest.raises(WorkflowStopped):
        sandbox_run(ws, agent, "go")
    assert not (ws / "etc").exists() and rt.workflow_status("box")["status"] == "stopped"


def test_a_patch_path_is_judged_with_its_dot_segments_resolved(rt, tmp_path):
    """The same rule for the SDK's ``ApplyPatchTool`` with an editor of your own: before, the
    path was judged as the model spelled it, so ``docs/../.env`` passed the ``docs/`` rule
    and the editor wrote ``.env``."""
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)

    class DiskEditor:
        def create_file(self, op):
            (root / op.path).write_text(apply_diff("", op.diff, mode="create"))
            return ApplyPatchResult(status="completed", output=f"created {op.path}")

        update_file = delete_file = create_file

    call = ResponseApplyPatchToolCall(type="apply_patch_call", id="ap_1", call_id="c1", status="completed",
                                      operation={"type": "create_file", "path": "docs/../.env",
                                                 "diff": "+KEY=stolen\n"})
    agent = Agent(name="dev", instructions="x", model=Scripted([[call]]), tools=[ApplyPatchTool(editor=DiskEditor())])
    protect(agent, rt, workflow="box")
    result = asyncio.run(Runner.run(agent, "go"))
    assert not (root / ".env").exists()
    assert any("Stopline denied `apply_patch` (secrets)" in o for o in outputs(result))
    [d] = rt.ledger.entries(kind="decision")
    assert d.body["action"]["path"] == ".env"


# ---------------------------------------------------------------------------------- warnings, kinds
def test_memory_generation_is_warned_about(rt):
    agent = SandboxAgent(name="box", instructions="x", model=Scripted([]),
                         capabilities=[Filesystem(), Shell(), Memory()])
    with pytest.warns(UngatedToolWarning, match="capability `memory` of sandbox agent `box` is not gated"):
        protect(agent, rt, workflow="box")
    quiet = SandboxAgent(name="quiet", instructions="x", model=Scripted([]),
                         capabilities=[Filesystem(), Shell(), Memory(generate=None)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UngatedToolWarning)
        protect(quiet, rt, workflow="box")


def test_a_subclass_of_custom_tool_is_gated_as_one(rt):
    class Sql(CustomTool):
        pass

    ran = []
    tool = Sql(name="sql", description="x", on_invoke_tool=lambda ctx, q: ran.append(q) or "ok")
    agent = Agent(name="box", instructions="x",
                  model=Scripted([[ResponseCustomToolCall(type="custom_tool_call", id="ct_1", call_id="c1",
                                                          name="sql", input="DROP TABLE users")]]),
                  tools=[tool])
    protect(agent, rt, workflow="box")
    asyncio.run(Runner.run(agent, "go"))
    assert ran == []  # before: a subclass of CustomTool ran ungated (and unwarned)
    assert decisions(rt) == [("sql", "deny")]
