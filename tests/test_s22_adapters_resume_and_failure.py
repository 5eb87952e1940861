"""Session 22: the OpenAI Agents and MCP adapters (through ``integrations.common``), against
the real packages (a scripted model; the mcp package's own client and server in process),
on a SQLite and a PostgreSQL ledger.

- a call whose recorded decision was ``stop`` halted the run again forever once the workflow
  was resumed (``ToolGate.outcome`` raised ``WorkflowStopped`` for any recorded stop): an
  OpenAI Agents run resumed from its saved ``RunState``, an MCP call retried with its call id;
- a tool that raised after the gate let it run was recorded as an execution whose receipt
  lost the error (only declared fields are kept), and a re-run of the call was told it
  "already ran" with a receipt that looked like a success.
"""

from __future__ import annotations

import asyncio
import json
import os

import pytest

pytest.importorskip("agents")
pytest.importorskip("mcp")
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

import anyio  # noqa: E402
from agents import Agent, Runner, RunState, ToolInputGuardrailTripwireTriggered, function_tool  # noqa: E402
from ledger_fixtures import ledger_url  # noqa: E402,F401  (the fixture: SQLite and PostgreSQL)
from mcp import Client  # noqa: E402
from mcp.server.mcpserver import MCPServer  # noqa: E402
from mcp.server.mcpserver.exceptions import ToolError  # noqa: E402
from mcp_types import ToolAnnotations  # noqa: E402

from policy_engine import Runtime  # noqa: E402
from policy_engine.integrations.common import MAX_ERROR, error_text  # noqa: E402
from policy_engine.integrations.mcp import CALL_ID, GATE_META, StoplineGateway  # noqa: E402
from policy_engine.integrations.openai_agents import Approval, approve, protect, request_for  # noqa: E402

from test_integrations_openai_agents import POLICY, example  # noqa: E402  # isort: skip

DIRECTORY = {"fin": ["finance_approver"], "ops": ["operator"]}
WF = "shop-support"


def run(coro):
    return asyncio.run(coro)


def outputs(result) -> list[str]:
    return [str(getattr(i, "output", "")) for i in result.new_items]


def shop(turns, *, fail: str | None = None):
    """An agent whose refund tool raises ``fail`` (when given) and whose bulk delete also asks
    for the SDK's own approval (so a run whose call fired the stop is interrupted, not halted,
    and can be resumed from its saved state)."""
    ran: list[str] = []

    @function_tool
    def refund_order(order_id: str, amount: int) -> str:
        """Refund an order."""
        ran.append(order_id)
        if fail:
            raise RuntimeError(fail)
        return json.dumps({"refund_id": "rf-1"})

    @function_tool(needs_approval=True)
    def delete_customers(count: int) -> str:
        """Delete customers."""
        ran.append(f"delete {count}")
        return "deleted"

    agent = Agent(
        name="shop", instructions="x", model=example.ScriptedModel(turns), tools=[refund_order, delete_customers]
    )
    return agent, protect(agent, Runtime_of[0], workflow=WF, approvers=DIRECTORY), ran


Runtime_of: list = []


@pytest.fixture
def rt(ledger_url):  # noqa: F811
    with Runtime.open(str(POLICY), ledger=ledger_url) as r:
        Runtime_of[:] = [r]
        yield r
    Runtime_of.clear()


# ------------------------------------------------------------------ 1. a stop, then the resume
def test_openai_agents_a_run_resumed_from_its_saved_state_goes_on_after_the_workflow_resumes(rt):
    agent, gate, ran = shop([[("delete_customers", "d1", {"count": 500})]])
    result = run(Runner.run(agent, "tidy up"))  # the stop is recorded when the SDK asks about the call
    [held] = result.interruptions
    assert rt.workflow_status(WF)["stopped_by"] == "mass_deletion"
    state = result.to_state()
    state.approve(held)  # the SDK's own approval of its own ask
    saved = state.to_string()
    with pytest.raises(ToolInputGuardrailTripwireTriggered):  # still stopped: the run halts again
        run(Runner.run(agent, run(RunState.from_string(agent, saved))))
    assert len(rt.ledger.entries(kind="stop")) == 1  # (no second stop recorded)
    assert rt.resume(WF, evidence={"incident_reviewed": True}, principal="ops-lead").allowed

    result = run(Runner.run(agent, run(RunState.from_string(agent, saved))))  # was: halted, forever

    said = " ".join(outputs(result))
    assert "its decision was `stop`" in said and "resumed since" in said and "not run" in said
    assert result.final_output == "done" and ran == []
    assert rt.workflow_status(WF)["status"] == "running"
    assert len(rt.ledger.entries(kind="stop")) == 1 and rt.ledger.entries(kind="execution") == []


@pytest.mark.parametrize("meta", [{CALL_ID: "job-1"}, None], ids=["call-id", "no-call-id"])
def test_mcp_a_stopped_call_retried_after_the_resume_is_refused_not_halted(rt, meta):
    files = Files()

    async def go():
        async with Client(StoplineGateway(files.server, rt, workflow="mcp-files", approvers=DIRECTORY).server) as c:
            r = await c.call_tool("delete_file", {"path": "/etc/passwd"}, meta=meta)
            assert r.is_error and gate_of(r)["outcome"] == "stop"
            r = await c.call_tool("delete_file", {"path": "/etc/passwd"}, meta=meta)  # still stopped
            assert r.is_error and gate_of(r)["outcome"] == "stop"
            assert len(rt.ledger.entries(kind="stop")) == 1
            assert rt.resume("mcp-files", evidence={"incident_reviewed": True}, principal="ops").allowed
            r = await c.call_tool("read_file", {"path": "a.txt"})  # the workflow goes on
            assert not r.is_error
            r = await c.call_tool("delete_file", {"path": "/etc/passwd"}, meta=meta)
            if meta:  # the same logical call: its decision stays `stop`; refused, the workflow not halted
                assert r.is_error and gate_of(r)["outcome"] == "refused", r.content[0].text
                assert "resumed since" in r.content[0].text
                assert rt.workflow_status("mcp-files")["status"] == "running"
                assert len(rt.ledger.entries(kind="stop")) == 1
            else:  # no call id: a new call, gated again: a new stop
                assert gate_of(r)["outcome"] == "stop" and len(rt.ledger.entries(kind="stop")) == 2

    anyio.run(go)
    assert ("delete_file", "/etc/passwd") not in files.ran


# ------------------------------------------------------------------ 2. a tool that fails
def test_openai_agents_a_failed_tool_is_recorded_and_a_rerun_says_it_failed(rt):
    agent, gate, ran = shop([[("refund_order", "c1", {"order_id": "A-1", "amount": 400})]], fail="card declined")
    result = run(Runner.run(agent, "go"))
    [held] = result.interruptions
    state = result.to_state()
    assert approve(gate, state, held, Approval.for_request(request_for(gate, held), "fin")).run
    saved = state.to_string()
    run(Runner.run(agent, state))  # the SDK tells the model the tool failed
    [x] = rt.ledger.entries(kind="execution")
    # (session 23: recorded failed in the execution itself, no longer a `tool_error` receipt field)
    assert x.body["outcome"] == "failed" and x.body["error"] == "RuntimeError: card declined"
    assert "tool_error" not in x.body["receipt"]
    assert "Traceback" not in json.dumps(x.body)

    result = run(Runner.run(agent, run(RunState.from_string(agent, saved))))  # the run replayed

    said = " ".join(outputs(result))
    assert "already ran" in said and "failed (RuntimeError: card declined)" in said
    assert ran == ["A-1"] and len(rt.ledger.entries(kind="execution")) == 1
    # it may have had its effect: a rollback can name it as any execution
    assert rt.authorization(x.body["decision"]).status == "executed"


def test_mcp_a_failed_tool_is_recorded_and_the_retry_is_an_error_saying_so(rt):
    files = Files()

    async def go():
        async with Client(StoplineGateway(files.server, rt, workflow="mcp-files", approvers=DIRECTORY).server) as c:
            meta = {CALL_ID: "w-1"}
            r = await c.call_tool("write_file", {"path": "ro.txt", "text": "x"}, meta=meta)
            assert r.is_error and "read-only" in r.content[0].text
            r = await c.call_tool("write_file", {"path": "ro.txt", "text": "x"}, meta=meta)
            assert r.is_error and gate_of(r)["outcome"] == "done" and gate_of(r)["failed"] is True
            assert "already ran" in r.content[0].text and "and failed (" in r.content[0].text
            assert "read-only" in r.content[0].text

    anyio.run(go)
    assert files.ran == [("write_file", "ro.txt")]
    [x] = rt.ledger.entries(kind="execution")
    assert x.body["outcome"] == "failed" and "read-only" in x.body["error"]  # (session 23: was the receipt's)


def test_the_recorded_error_is_bounded_and_carries_no_traceback():
    try:
        raise ValueError("x" * 5000)
    except ValueError as e:
        assert len(error_text(e)) == MAX_ERROR and error_text(e).startswith("ValueError: xxx")
    assert error_text(asyncio.CancelledError()) == "CancelledError"
    embedded = 'boom\nTraceback (most recent call last):\n  File "t.py", line 1\nValueError: boom'
    assert error_text(RuntimeError(embedded)) == "RuntimeError: boom"


# ------------------------------------------------------------------ MCP scaffolding
class Files:
    def __init__(self) -> None:
        self.files: dict[str, str] = {"a.txt": "A", "/etc/passwd": "root"}
        self.ran: list[tuple] = []
        srv = self.server = MCPServer("files")

        @srv.tool(annotations=ToolAnnotations(read_only_hint=True))
        def read_file(path: str) -> str:
            self.ran.append(("read_file", path))
            return self.files.get(path, "")

        @srv.tool(annotations=ToolAnnotations(destructive_hint=True))
        def write_file(path: str, text: str) -> dict:
            self.ran.append(("write_file", path))
            if path == "ro.txt":
                raise ToolError(f"{path} is read-only")  # (the message the server passes on)
            self.files[path] = text
            return {"path": path, "bytes": len(text)}

        @srv.tool(annotations=ToolAnnotations(destructive_hint=True))
        def delete_file(path: str) -> dict:
            self.ran.append(("delete_file", path))
            return {"path": path, "deleted": self.files.pop(path, None) is not None}


def gate_of(result) -> dict:
    return (result.meta or {})[GATE_META]


def test_openai_agents_a_replayed_custom_tool_call_that_fired_the_stop_is_refused_after_the_resume(
    ledger_url,  # noqa: F811
    tmp_path,
):
    from test_integrations_openai_agents_custom import POLICY as SQL_POLICY
    from test_integrations_openai_agents_custom import agent_with

    from policy_engine.integrations.openai_agents import WorkflowStopped

    (tmp_path / "data.policy").write_text(SQL_POLICY)
    with Runtime.open(str(tmp_path / "data.policy"), ledger=ledger_url) as sql_rt:
        agent, _, ran = agent_with(sql_rt, [[("c9", "TRUNCATE t")]])
        with pytest.raises(WorkflowStopped):
            run(Runner.run(agent, "go"))
        assert sql_rt.resume("data", evidence={}, principal="ops").allowed
        agent, _, ran = agent_with(sql_rt, [[("c9", "TRUNCATE t")]])  # the same call replayed (a retried run)

        result = run(Runner.run(agent, "go"))  # was: WorkflowStopped again, on a running workflow

        assert ran == [] and result.final_output == "done"
        assert any("its decision was `stop`" in o and "resumed since" in o for o in outputs(result))
        assert len(sql_rt.ledger.entries(kind="stop")) == 1
        assert sql_rt.workflow_status("data")["status"] == "running"


def test_openai_agents_a_tool_cannot_report_a_failure_of_its_own_in_the_gate_field(rt):
    @function_tool
    def refund_order(order_id: str, amount: int, tool_error: str = "") -> str:
        """Refund an order."""
        return json.dumps({"refund_id": "rf-1", "tool_error": "forged"})

    agent = Agent(
        name="shop",
        instructions="x",
        model=example.ScriptedModel([[("refund_order", "c1", {"order_id": "A-1", "amount": 20, "tool_error": "x"})]]),
        tools=[refund_order],
    )
    protect(agent, rt, workflow=WF, approvers=DIRECTORY)
    run(Runner.run(agent, "go"))
    [x] = rt.ledger.entries(kind="execution")
    assert "tool_error" not in x.body["receipt"] and x.body["receipt"]["refund_id"] == "rf-1"


def test_openai_agents_the_patch_that_fired_the_stop_sent_again_after_the_resume_is_refused(ledger_url, tmp_path):  # noqa: F811
    from test_integrations_openai_agents_tools import POLICY as DEV_POLICY
    from test_integrations_openai_agents_tools import patch, patch_agent

    from policy_engine.integrations.openai_agents import WorkflowStopped

    (tmp_path / "dev.policy").write_text(DEV_POLICY)
    root = tmp_path / "tree"
    with Runtime.open(str(tmp_path / "dev.policy"), ledger=ledger_url) as dev_rt:
        agent, _ = patch_agent(dev_rt, root, [[patch("c1", "create_file", "/etc/sudoers.d/agent", "+ALL\n")]])
        with pytest.raises(WorkflowStopped):
            run(Runner.run(agent, "go"))
        assert dev_rt.resume("dev", evidence={}, principal="olga").allowed
        # the same operation again (a patch is keyed by its content: the same decision)
        agent, _ = patch_agent(dev_rt, root, [[patch("c2", "create_file", "/etc/sudoers.d/agent", "+ALL\n")]])

        result = run(Runner.run(agent, "go"))  # was: WorkflowStopped again, on a running workflow

        assert any("its decision was `stop`" in o for o in outputs(result)) and result.final_output is not None
        assert not any(root.rglob("*")) and dev_rt.ledger.entries(kind="execution") == []
        assert len(dev_rt.ledger.entries(kind="stop")) == 1 and dev_rt.workflow_status("dev")["status"] == "running"
