"""A sandbox agent's ``exec_command`` judged in the directory it runs in. Before, the policy
saw ``workdir`` as the model wrote it, so ``deny when `action.workdir.startsWith("secrets")```
was bypassed by ``./secrets``, ``docs/../secrets`` or a symlink ``docs/s -> ../secrets``, and
the command ran in ``secrets``. Against the real openai-agents package: the SDK's ``Runner``
with a scripted model and a real Unix-local sandbox session."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest

pytest.importorskip("agents")
pytest.importorskip("agents.sandbox")
if sys.platform == "win32":  # pragma: no cover
    pytest.skip("the Unix-local sandbox", allow_module_level=True)
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

from agents import Model, ModelResponse, RunConfig, Runner, Usage  # noqa: E402
from agents.run_config import SandboxRunConfig  # noqa: E402
from agents.sandbox import Manifest, SandboxAgent  # noqa: E402
from agents.sandbox.capabilities import Shell  # noqa: E402
from agents.sandbox.entries import File  # noqa: E402
from agents.sandbox.sandboxes import UnixLocalSandboxClient  # noqa: E402
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText  # noqa: E402

from policy_engine import Runtime  # noqa: E402
from policy_engine.integrations.openai_agents import Approval, approve, protect, request_for  # noqa: E402

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
    receipt [cmd, workdir, reviewer]

    deny secrets when `action.workdir.startsWith("secrets")`
    deny interpreter when `action.shell != null`
    require_approval docs by 1 ops_lead when `action.workdir == "docs"`
    allow writes when `action.cmd.startsWith("echo ")`
  }
}
"""


def message():
    return ResponseOutputMessage(
        id="msg",
        type="message",
        role="assistant",
        status="completed",
        content=[ResponseOutputText(type="output_text", text="done", annotations=[])],
    )


class Scripted(Model):
    def __init__(self, turns):
        self.turns = list(turns)

    async def get_response(self, *args, **kwargs):
        return ModelResponse(output=self.turns.pop(0) if self.turns else [message()], usage=Usage(), response_id=None)

    def stream_response(self, *args, **kwargs):  # pragma: no cover - not used
        raise NotImplementedError


def sh(cid, cmd, **kw):
    return ResponseFunctionToolCall(
        type="function_call", id=f"fc_{cid}", call_id=cid, name="exec_command", arguments=json.dumps({"cmd": cmd, **kw})
    )


@pytest.fixture
def rt(tmp_path):
    (tmp_path / "box.policy").write_text(POLICY)
    with Runtime.open(str(tmp_path / "box.policy"), ledger=f"sqlite:///{tmp_path / 'l.db'}") as r:
        yield r


@pytest.fixture
def ws(tmp_path):
    return tmp_path / "ws"


def run(rt, ws, turns, then=None, **config):
    """Run a protected sandbox agent on a live Unix-local session whose workspace is ``ws``
    (``secrets/key.txt``, ``docs/readme.md`` and the symlink ``docs/s -> ../secrets``)."""
    config_kw = config
    agent = SandboxAgent(name="box", instructions="x", model=Scripted(turns), capabilities=[Shell()])
    gate = protect(agent, rt, workflow="box", approvers={"olga": ["ops_lead"]})

    async def go():
        manifest = Manifest(
            root=str(ws), entries={"secrets/key.txt": File(content=b"k\n"), "docs/readme.md": File(content=b"r\n")}
        )
        session = await UnixLocalSandboxClient().create(manifest=manifest, options=None)
        async with session:
            os.symlink("../secrets", ws / "docs" / "s")
            config = RunConfig(sandbox=SandboxRunConfig(session=session, **config_kw))
            result = await Runner.run(agent, "go", run_config=config)
            if then is not None:
                result = await then(gate, result, agent, config)
            return result

    return asyncio.run(go())


def decisions(rt):
    return [e.body for e in rt.ledger.entries(kind="decision")]


@pytest.mark.parametrize("workdir", ["./secrets", "docs/../secrets", "docs/s", "secrets/", "docs\\..\\secrets"])
def test_a_command_is_judged_in_the_directory_it_runs_in(rt, ws, workdir):
    run(rt, ws, [[sh("c1", "echo leaked > leaked.txt", workdir=workdir)]])
    assert not (ws / "secrets" / "leaked.txt").exists()
    [d] = decisions(rt)
    assert d["decision"]["effect"] == "deny"
    assert d["action"]["workdir"] == "secrets"  # what the policy judged: where it runs
    assert d["action"]["workdir_given"] == workdir  # what the model asked for, for the reviewer


def test_an_allowed_command_runs_where_it_was_judged(rt, ws):
    run(rt, ws, [[sh("c1", "echo hi > made.txt"), sh("c2", "echo hi > made.txt", workdir="./docs/../docs/s/..")]])
    assert (ws / "made.txt").read_text() == "hi\n"
    assert [(d["action"]["workdir"], d["action"]["workdir_given"], d["decision"]["effect"]) for d in decisions(rt)] == [
        (".", None, "allow"),
        ("docs", "./docs/../docs/s/..", "require_approval"),
    ]


def test_a_workdir_is_judged_from_the_run_cwd(rt, ws):
    """``SandboxRunConfig(cwd="docs")``: a relative ``workdir`` is taken from there, and a
    call without one runs there."""
    run(
        rt,
        ws,
        [[sh("c1", "echo leaked > leaked.txt", workdir="../secrets"), sh("c2", "echo hi > here.txt")]],
        cwd="docs",
    )
    assert not (ws / "secrets" / "leaked.txt").exists()
    assert [(d["action"]["workdir"], d["decision"]["effect"]) for d in decisions(rt)] == [
        ("secrets", "deny"),
        ("docs", "require_approval"),
    ]


def test_a_held_command_is_approved_as_judged_and_runs_once(rt, ws):
    async def then(gate, result, agent, config):
        [held] = result.interruptions
        req = request_for(gate, held)
        assert req["args"]["workdir"] == "docs" and req["args"]["workdir_given"] == "./docs"
        state = result.to_state()
        assert approve(gate, state, held, Approval.for_request(req, "olga")).run
        return await Runner.run(agent, state, run_config=config)

    run(rt, ws, [[sh("c1", "echo ok > approved.txt", workdir="./docs")]], then)
    assert (ws / "docs" / "approved.txt").read_text() == "ok\n"
    [x] = [e.body for e in rt.ledger.entries(kind="execution")]
    assert x["receipt"]["workdir"] == "docs" and x["receipt"]["reviewer"] == "olga"


def test_a_workdir_the_sandbox_refuses_is_never_run(rt, ws):
    result = run(rt, ws, [[sh("c1", "echo out > escaped.txt", workdir="../")]])
    assert not (ws.parent / "escaped.txt").exists()
    assert any(
        "Stopline refused `exec_command`" in str(getattr(i, "output", ""))
        and "the sandbox refuses the workdir `../`" in str(getattr(i, "output", ""))
        for i in result.new_items
    )
    assert not list(rt.ledger.entries(kind="execution"))


def test_the_interpreter_the_model_picks_is_in_the_action(rt, ws):
    """``shell`` (the model's choice of interpreter) is judged as it is: a policy can
    constrain it (``action.shell != null``: not the default shell)."""
    run(rt, ws, [[sh("c1", "echo hi > py.txt", shell="bash", login=False)]])
    assert not (ws / "py.txt").exists()
    [d] = decisions(rt)
    assert (d["action"]["shell"], d["decision"]["effect"]) == ("bash", "deny")


def test_a_held_command_is_approved_from_a_saved_state_by_another_gate(rt, ws):
    """A reviewer elsewhere (a fresh agent and gate, no note of the held call): ``request_for``
    resolves the ``workdir`` without the session (``./docs`` is ``docs``) and names the held
    decision, which the approval then runs."""
    from agents import RunState

    async def then(gate, result, agent, config):
        saved = result.to_state().to_json()
        other = SandboxAgent(name="box", instructions="x", model=Scripted([]), capabilities=[Shell()])
        gate2 = protect(other, rt, workflow="box", approvers={"olga": ["ops_lead"]})
        state = await RunState.from_json(other, saved)
        [held] = state.get_interruptions()
        req = request_for(gate2, held)
        assert (req["rule"], req["args"]["workdir"], req["args"]["workdir_given"]) == ("docs", "docs", "./docs/")
        assert approve(gate2, state, held, Approval.for_request(req, "olga")).run
        return await Runner.run(other, state, run_config=config)

    run(rt, ws, [[sh("c1", "echo ok > approved.txt", workdir="./docs/")]], then)
    assert (ws / "docs" / "approved.txt").read_text() == "ok\n"
    assert [(d["action"]["workdir"], d["decision"]["effect"]) for d in decisions(rt)] == [("docs", "require_approval")]
