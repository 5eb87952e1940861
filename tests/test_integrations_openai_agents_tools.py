"""The OpenAI Agents SDK's apply-patch, computer and hosted MCP tools gated (before, ``protect``
only warned that they ran outside the policy: a denied patch was written, a denied click was
clicked). Against the real openai-agents package: the SDK's ``Runner`` with a scripted model
(no network) invokes the editor, the computer and the approval callback itself."""

from __future__ import annotations

import asyncio
import os
import warnings

import pytest

pytest.importorskip("agents")
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

from agents import (  # noqa: E402
    Agent,
    ApplyPatchResult,
    ApplyPatchTool,
    AsyncComputer,
    ComputerProvider,
    ComputerTool,
    HostedMCPTool,
    Model,
    ModelResponse,
    Runner,
    RunState,
    Usage,
    WebSearchTool,
)
from agents.apply_diff import apply_diff  # noqa: E402
from openai.types.responses import (  # noqa: E402
    ResponseApplyPatchToolCall,
    ResponseComputerToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)
from openai.types.responses.response_output_item import McpApprovalRequest  # noqa: E402

from policy_engine import Runtime  # noqa: E402
from policy_engine.integrations.openai_agents import (  # noqa: E402
    ActionRefused,
    Approval,
    UngatedToolWarning,
    WorkflowStopped,
    approve,
    protect,
    request_for,
)

POLICY = """\
roles [ops_lead]

workflow "dev" {
  version "1"
  owners {
    business "Dev"
    technical "Platform"
  }
  default deny

  action apply_patch {
    system "repo"
    description "Patch the working tree"
    irreversible
    receipt [operation, path, status, reviewer]

    deny secrets when `action.path.startsWith(".env")`
    require_approval deletion by 1 ops_lead when `action.operation == "delete_file"`
    allow docs when `action.path.startsWith("docs/")`
  }

  action computer_use_preview {
    system "desktop"
    description "Drive the screen"
    irreversible
    receipt [operation, x, y, text]

    deny secrets when `action.operation == "type" && action.text.contains("password")`
    require_approval buy by 1 ops_lead when `action.operation == "click" && action.x == 999`
    allow ui when `action.operation in ["click", "type", "scroll", "wait"]`
  }

  action search_issues {
    system "github"
    description "Search issues"
    irreversible
    receipt [query, result]

    allow read when `true`
  }

  action merge_pr {
    system "github"
    description "Merge a pull request"
    irreversible

    require_approval merge by 1 ops_lead when `true`
  }

  action delete_repo {
    system "github"
    description "Delete a repository"
    irreversible

    deny never when `true`
  }

  stop system_files {
    description "A patch to system files, a destructive command typed, a database dropped"
    when `(action.type == "apply_patch" && action.path.startsWith("/etc/"))
          || (action.type == "computer_use_preview" && action.operation == "type" && action.text.contains("rm -rf"))
          || action.type == "drop_database"`
    severity critical
    owner "Dev"
    affects [repo]
    rollback "Restore from backup"
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


@pytest.fixture
def rt(tmp_path):
    (tmp_path / "dev.policy").write_text(POLICY)
    with Runtime.open(str(tmp_path / "dev.policy"), ledger=f"sqlite:///{tmp_path / 'l.db'}") as r:
        yield r


def outputs(result):
    return [str(getattr(i, "output", "")) for i in result.new_items if "output" in type(i).__name__.lower()]


def executions(rt):
    return [e.body for e in rt.ledger.entries(kind="execution")]


def decisions(rt):
    return [(e.body["action"]["type"], e.body["decision"]["effect"]) for e in rt.ledger.entries(kind="decision")]


# ---------------------------------------------------------------------------------- apply_patch
class DiskEditor:
    """Applies the SDK's diffs under ``root`` (a real editor: the file system is the witness)."""

    def __init__(self, root):
        self.root = root

    def create_file(self, op):
        p = self.root / op.path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(apply_diff("", op.diff, mode="create"))
        return ApplyPatchResult(status="completed", output=f"created {op.path}")

    def update_file(self, op):
        p = self.root / op.path
        p.write_text(apply_diff(p.read_text(), op.diff))
        return ApplyPatchResult(status="completed", output=f"updated {op.path}")

    def delete_file(self, op):
        (self.root / op.path).unlink()
        return ApplyPatchResult(status="completed", output=f"deleted {op.path}")


def patch(cid, kind, path, diff=None):
    op = {"type": kind, "path": path, **({"diff": diff} if diff is not None else {})}
    return ResponseApplyPatchToolCall(type="apply_patch_call", id=f"ap_{cid}", call_id=cid, status="completed",
                                      operation=op)


def patch_agent(rt, root, turns):
    agent = Agent(name="dev", instructions="x", model=Scripted(turns),
                  tools=[ApplyPatchTool(editor=DiskEditor(root))])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UngatedToolWarning)  # gated: no warning
        gate = protect(agent, rt, workflow="dev", approvers=DIRECTORY)
    return agent, gate


def test_an_allowed_patch_is_written_once_and_recorded(rt, tmp_path):
    root = tmp_path / "tree"
    agent, _ = patch_agent(rt, root, [[patch("c1", "create_file", "docs/a.md", "+hello\n")]])
    asyncio.run(Runner.run(agent, "go"))
    assert (root / "docs" / "a.md").read_text() == "hello"
    [x] = executions(rt)
    assert x["authorized"]
    assert x["receipt"] == {"operation": "create_file", "path": "docs/a.md", "status": "completed"}


def test_a_denied_patch_never_touches_the_file_system_and_the_model_reads_why(rt, tmp_path):
    root = tmp_path / "tree"
    agent, _ = patch_agent(rt, root, [[patch("c1", "create_file", ".env", "+TOKEN=x\n")]])
    result = asyncio.run(Runner.run(agent, "go"))
    assert not (root / ".env").exists()  # before: the SDK's editor wrote it, whatever the policy said
    assert any("Stopline denied `apply_patch` (secrets)" in o for o in outputs(result))
    assert executions(rt) == [] and decisions(rt) == [("apply_patch", "deny")]


def test_a_held_patch_is_an_interruption_that_only_a_counted_approval_runs_once(rt, tmp_path):
    root = tmp_path / "tree"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "old.md").write_text("x\n")
    agent, gate = patch_agent(rt, root, [[patch("c1", "delete_file", "docs/old.md")]])
    result = asyncio.run(Runner.run(agent, "go"))
    [held] = result.interruptions
    assert (root / "docs" / "old.md").exists()
    req = request_for(gate, held)
    assert req["args"] == {"operation": "delete_file", "path": "docs/old.md"} and req["rule"] == "deletion"
    state = result.to_state()
    state.approve(held, always_approve=True)  # the SDK's own approval is not one: the ledger decides
    refused = asyncio.run(Runner.run(agent, state))
    assert (root / "docs" / "old.md").exists()
    assert any("approval required" in o for o in outputs(refused))

    agent, gate = patch_agent(rt, root, [[patch("c2", "delete_file", "docs/old.md")]])
    result = asyncio.run(Runner.run(agent, "go"))
    [held] = result.interruptions
    state = result.to_state()
    assert approve(gate, state, held, Approval.for_request(request_for(gate, held), "olga")).run
    asyncio.run(Runner.run(agent, state))
    assert not (root / "docs" / "old.md").exists()
    [x] = executions(rt)
    assert x["receipt"] == {"operation": "delete_file", "path": "docs/old.md", "status": "completed",
                            "reviewer": "olga"}


def test_an_approved_patch_resumed_twice_from_a_saved_state_runs_once(rt, tmp_path):
    root = tmp_path / "tree"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "old.md").write_text("x\n")
    agent, gate = patch_agent(rt, root, [[patch("c1", "delete_file", "docs/old.md")]])
    result = asyncio.run(Runner.run(agent, "go"))
    [held] = result.interruptions
    state = result.to_state()
    assert approve(gate, state, held, Approval.for_request(request_for(gate, held), "olga")).run
    saved = state.to_string()
    asyncio.run(Runner.run(agent, asyncio.run(RunState.from_string(agent, saved))))
    (root / "docs" / "old.md").write_text("recreated\n")
    second = asyncio.run(Runner.run(agent, asyncio.run(RunState.from_string(agent, saved))))
    assert (root / "docs" / "old.md").read_text() == "recreated\n"  # one approval, one deletion
    assert any("already ran" in o for o in outputs(second))
    assert len(executions(rt)) == 1


def test_a_stop_halts_the_run_before_the_editor(rt, tmp_path):
    root = tmp_path / "tree"
    agent, _ = patch_agent(rt, root, [[patch("c1", "create_file", "/etc/sudoers.d/agent", "+ALL\n")]])
    with pytest.raises(WorkflowStopped):
        asyncio.run(Runner.run(agent, "go"))
    assert not any(root.rglob("*")) and executions(rt) == []
    assert rt.workflow_status("dev")["status"] == "stopped"
    agent, _ = patch_agent(rt, root, [[patch("c2", "create_file", "docs/b.md", "+b\n")]])
    with pytest.raises(WorkflowStopped):  # stopped: even an allowed patch is refused
        asyncio.run(Runner.run(agent, "go"))
    assert not (root / "docs" / "b.md").exists()


def test_an_approved_patch_is_not_applied_once_the_workflow_stopped(rt, tmp_path):
    root = tmp_path / "tree"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "old.md").write_text("x\n")
    agent, gate = patch_agent(rt, root, [[patch("c1", "delete_file", "docs/old.md")]])
    result = asyncio.run(Runner.run(agent, "go"))
    [held] = result.interruptions
    state = result.to_state()
    assert approve(gate, state, held, Approval.for_request(request_for(gate, held), "olga")).run
    other, _ = patch_agent(rt, root, [[patch("c9", "create_file", "/etc/cron.d/x", "+x\n")]])
    with pytest.raises(WorkflowStopped):
        asyncio.run(Runner.run(other, "go"))
    # the approval predates the stop: the ledger decides. The SDK does not ask needs_approval
    # again for an approved call, and turns the editor's exception into a failed output: the
    # editor refuses the operation with the stop (the run halts at its next gated call)
    resumed = asyncio.run(Runner.run(agent, state))
    assert (root / "docs" / "old.md").exists() and executions(rt) == []
    assert any("Stopline refused `apply_patch`: Stopline stopped workflow `dev`" in o for o in outputs(resumed))


# ---------------------------------------------------------------------------------- computer
class Screen(AsyncComputer):
    """A computer that notes what it was made to do."""

    def __init__(self):
        self.done: list[tuple] = []

    @property
    def environment(self):
        return "linux"

    @property
    def dimensions(self):
        return (1024, 768)

    async def screenshot(self):
        return "iVBORw0KGgo="

    async def click(self, x, y, button):
        self.done.append(("click", x, y, button))

    async def double_click(self, x, y):
        self.done.append(("double_click", x, y))

    async def scroll(self, x, y, scroll_x, scroll_y):
        self.done.append(("scroll", x, y))

    async def type(self, text):
        self.done.append(("type", text))

    async def wait(self):
        self.done.append(("wait",))

    async def move(self, x, y):
        self.done.append(("move", x, y))

    async def keypress(self, keys):
        self.done.append(("keypress", tuple(keys)))

    async def drag(self, path):
        self.done.append(("drag", tuple(path)))


def computer_call(cid, *actions):
    return ResponseComputerToolCall(type="computer_call", id=f"cc_{cid}", call_id=cid, status="completed",
                                    pending_safety_checks=[], actions=list(actions))


def computer_agent(rt, turns, computer=None):
    screen = Screen()
    agent = Agent(name="desk", instructions="x", model=Scripted(turns),
                  tools=[ComputerTool(computer=computer if computer is not None else screen)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UngatedToolWarning)
        protect(agent, rt, workflow="dev", approvers=DIRECTORY)
    return agent, screen


def test_allowed_computer_actions_are_performed_and_recorded_each(rt):
    agent, screen = computer_agent(rt, [[computer_call("k1", {"type": "click", "x": 10, "y": 20, "button": "left"},
                                                       {"type": "type", "text": "hello"})]])
    asyncio.run(Runner.run(agent, "go"))
    assert screen.done == [("click", 10, 20, "left"), ("type", "hello")]
    assert [x["receipt"] for x in executions(rt)] == [{"operation": "click", "x": 10, "y": 20},
                                                      {"operation": "type", "text": "hello"}]


def test_a_denied_computer_action_is_not_performed_and_the_run_halts_with_the_reason(rt):
    agent, screen = computer_agent(rt, [[computer_call("k1", {"type": "click", "x": 1, "y": 2, "button": "left"},
                                                       {"type": "type", "text": "my password is x"},
                                                       {"type": "click", "x": 3, "y": 4, "button": "left"})]])
    with pytest.raises(ActionRefused, match=r"Stopline denied `computer_use_preview` \(secrets\)"):
        asyncio.run(Runner.run(agent, "go"))
    assert screen.done == [("click", 1, 2, "left")]  # the denied typing and what came after: never performed
    assert [d[1] for d in decisions(rt)] == ["allow", "deny"]


def test_a_held_computer_action_is_not_performed_and_its_decision_withdrawn(rt):
    agent, screen = computer_agent(rt, [[computer_call("k1", {"type": "click", "x": 999, "y": 2, "button": "left"})]])
    with pytest.raises(ActionRefused, match="cannot wait for a reviewer"):
        asyncio.run(Runner.run(agent, "go"))
    assert screen.done == [] and executions(rt) == []
    [d] = rt.ledger.entries(kind="decision")
    assert rt.authorization(d.id).status == "cancelled"  # not left in the reviewers' queue


def test_a_stop_typed_on_the_computer_halts_the_run(rt):
    agent, screen = computer_agent(rt, [[computer_call("k1", {"type": "type", "text": "rm -rf /"})]])
    with pytest.raises(WorkflowStopped):
        asyncio.run(Runner.run(agent, "go"))
    assert screen.done == [] and rt.workflow_status("dev")["status"] == "stopped"


def test_a_computer_made_per_run_by_a_provider_is_gated(rt):
    made: list[Screen] = []
    disposed: list[Screen] = []

    def create(*, run_context):
        made.append(Screen())
        return made[-1]

    def dispose(*, run_context, computer):
        disposed.append(computer)

    agent, _ = computer_agent(rt, [[computer_call("k1", {"type": "type", "text": "password1"})]],
                              computer=ComputerProvider(create=create, dispose=dispose))
    with pytest.raises(ActionRefused):
        asyncio.run(Runner.run(agent, "go"))
    assert [s.done for s in made] == [[]]
    assert disposed == made  # the provider's dispose gets the computer it made


def test_a_sync_computer_is_gated_and_keys_it_does_not_take_are_judged_not_passed(rt):
    from agents import Computer

    class SyncScreen(Computer):
        def __init__(self):
            self.done = []

        environment = property(lambda self: "linux")
        dimensions = property(lambda self: (800, 600))

        def screenshot(self):
            return "iVBORw0KGgo="

        def click(self, x, y, button):  # (no ``keys``: the SDK's modifier keys are dropped for it)
            self.done.append(("click", x, y))

        def type(self, text):
            self.done.append(("type", text))

        double_click = scroll = wait = move = keypress = drag = None

    screen = SyncScreen()
    agent, _ = computer_agent(rt, [[computer_call("k1", {"type": "click", "x": 5, "y": 6, "button": "left",
                                                         "keys": ["shift"]},
                                                  {"type": "type", "text": "password"})]], computer=screen)
    with pytest.raises(ActionRefused):
        asyncio.run(Runner.run(agent, "go"))
    assert screen.done == [("click", 5, 6)]
    [allowed, _denied] = rt.ledger.entries(kind="decision")
    assert allowed.body["action"]["keys"] == ["shift"]  # what the model asked for is what the policy judged


def test_one_native_tool_is_gated_by_one_gate(rt, tmp_path):
    tool = ApplyPatchTool(editor=DiskEditor(tmp_path))
    protect(Agent(name="a", tools=[tool]), rt, workflow="dev")
    with pytest.raises(ValueError, match="already gated by Stopline"):
        protect(Agent(name="b", tools=[tool]), rt, workflow="other")


# ---------------------------------------------------------------------------------- hosted MCP
def mcp_request(rid, name, arguments):
    return McpApprovalRequest(type="mcp_approval_request", id=rid, arguments=arguments, name=name,
                              server_label="gh")


def mcp_agent(rt, turns, own=None, require_approval="always"):
    tool = HostedMCPTool(tool_config={"type": "mcp", "server_label": "gh", "server_url": "https://mcp.example",
                                      "require_approval": require_approval}, on_approval_request=own)
    agent = Agent(name="gh", instructions="x", model=Scripted(turns), tools=[tool])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UngatedToolWarning)
        protect(agent, rt, workflow="dev", approvers=DIRECTORY)
    return agent


def answers(result):
    return {i.raw_item["approval_request_id"]: (i.raw_item["approve"], i.raw_item.get("reason", ""))
            for i in result.new_items if type(i).__name__ == "MCPApprovalResponseItem"}


def test_the_hosted_mcp_approval_callback_answers_as_the_policy_decides(rt):
    agent = mcp_agent(rt, [[mcp_request("r1", "search_issues", '{"query": "bug"}'),
                            mcp_request("r2", "delete_repo", '{"repo": "core"}'),
                            mcp_request("r3", "merge_pr", '{"pr": 7}')]])
    got = answers(asyncio.run(Runner.run(agent, "go")))
    assert got["r1"] == (True, "")
    assert got["r2"][0] is False and "Stopline denied `delete_repo` (never)" in got["r2"][1]
    assert got["r3"][0] is False and "cannot wait for a reviewer" in got["r3"][1]
    [x] = executions(rt)  # the approved call, claimed and recorded when it was handed to the server
    assert x["authorized"] and x["receipt"]["query"] == "bug"
    held = next(e for e in rt.ledger.entries(kind="decision") if e.body["action"]["type"] == "merge_pr")
    assert rt.authorization(held.id).status == "cancelled"


def test_a_stop_in_a_hosted_mcp_request_halts_the_run(rt):
    agent = mcp_agent(rt, [[mcp_request("r1", "drop_database", "{}")]])
    with pytest.raises(WorkflowStopped):
        asyncio.run(Runner.run(agent, "go"))
    assert rt.workflow_status("dev")["status"] == "stopped" and executions(rt) == []


def test_the_developers_own_approval_callback_is_asked_only_after_the_policy_allows(rt):
    asked: list[str] = []

    def own(request):
        asked.append(request.data.name)
        return {"approve": False, "reason": "not today"}

    agent = mcp_agent(rt, [[mcp_request("r1", "search_issues", '{"query": "x"}'),
                            mcp_request("r2", "delete_repo", "{}")]], own=own)
    got = answers(asyncio.run(Runner.run(agent, "go")))
    assert asked == ["search_issues"] and got["r1"] == (False, "not today")
    assert executions(rt) == []  # theirs refused it: never claimed


def test_what_cannot_be_gated_is_still_named(rt):
    with pytest.warns(UngatedToolWarning, match="HostedMCPTool.*require_approval"):
        mcp = HostedMCPTool(tool_config={"type": "mcp", "server_label": "gh", "server_url": "https://mcp.example",
                                         "require_approval": "never"})
        protect(Agent(name="a", tools=[mcp]), rt, workflow="dev")
    with pytest.warns(UngatedToolWarning, match="WebSearchTool.*OpenAI runs it"):
        protect(Agent(name="b", tools=[WebSearchTool()]), rt, workflow="dev")
