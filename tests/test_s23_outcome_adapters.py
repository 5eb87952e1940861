"""Session 23: the adapters record a tool that raised as a failed execution
(``Runtime.executed(outcome="failed", error=<Type: message>)``), no longer as a ``tool_error``
field of the receipt; a re-run of the call is told it failed, also from a ledger written by
session 22 (whose entries carry ``tool_error`` in the receipt); a failed run is not flagged
``receipt_incomplete`` for the output it never produced. The scaffolding is the session 22
adapter tests' (a scripted model; the mcp package's own client and server in process; SQLite
and PostgreSQL where those tests use both)."""

from __future__ import annotations

import asyncio
import json

import pytest

pytest.importorskip("agents")
pytest.importorskip("mcp")

import anyio  # noqa: E402
from agents import Runner, RunState  # noqa: E402
from ledger_fixtures import ledger_url  # noqa: E402,F401  (the fixture: SQLite and PostgreSQL)
from mcp import Client  # noqa: E402

from policy_engine.integrations.common import ToolGate, error_text  # noqa: E402
from policy_engine.integrations.mcp import CALL_ID, StoplineGateway  # noqa: E402
from policy_engine.integrations.openai_agents import Approval, approve, request_for  # noqa: E402

from test_s22_adapters_resume_and_failure import (  # noqa: E402  # isort: skip
    DIRECTORY, Files, gate_of, outputs, rt, run, shop)  # noqa: F401  (rt: the fixture)


def session22_record(self, check, output, approver=None, *, error=None):
    """``ToolGate.record`` as session 22 wrote a failed run: ``tool_error`` in the receipt."""
    receipt = self.receipt_for(check, output, approver)
    if error is not None:
        receipt["tool_error"] = error_text(error)
    return self.runtime.executed(check.decision_id, receipt=receipt,
                                 key="stopline:exec:" + check.key.rsplit(":", 1)[1], now=self._t())


def _refund_failed_then_replayed(rt, monkeypatch=None):  # noqa: F811
    agent, gate, ran = shop([[("refund_order", "c1", {"order_id": "A-1", "amount": 400})]], fail="card declined")
    result = run(Runner.run(agent, "go"))
    [held] = result.interruptions
    state = result.to_state()
    assert approve(gate, state, held, Approval.for_request(request_for(gate, held), "fin")).run
    saved = state.to_string()
    if monkeypatch is not None:
        with monkeypatch.context() as m:
            m.setattr(ToolGate, "record", session22_record)
            run(Runner.run(agent, state))
    else:
        run(Runner.run(agent, state))
    [x] = rt.ledger.entries(kind="execution")
    result = run(Runner.run(agent, run(RunState.from_string(agent, saved))))  # the run replayed
    return x, " ".join(outputs(result)), ran


def test_openai_agents_a_raising_tool_is_recorded_failed_not_receipt_incomplete(rt):  # noqa: F811
    x, said, ran = _refund_failed_then_replayed(rt)
    assert x.body["outcome"] == "failed" and x.body["error"] == "RuntimeError: card declined"
    assert "tool_error" not in x.body["receipt"]
    # the refund id was never made: listed as missing, not flagged (before: `receipt_incomplete`)
    assert x.body["flags"] == [] and x.body["missing_receipt"] == ["refund_id"]
    assert "already ran" in said and "and failed (RuntimeError: card declined)" in said and ran == ["A-1"]
    v = rt.history(x.id)["execution"]
    assert (v["outcome"], v["error"]) == ("failed", "RuntimeError: card declined")


def test_openai_agents_a_ledger_of_session_22_still_tells_the_rerun_it_failed(rt, monkeypatch):  # noqa: F811
    x, said, ran = _refund_failed_then_replayed(rt, monkeypatch)
    assert "outcome" not in x.body and x.body["receipt"]["tool_error"] == "RuntimeError: card declined"
    assert "already ran" in said and "and failed (RuntimeError: card declined)" in said and ran == ["A-1"]


@pytest.mark.parametrize("old", [False, True], ids=["now", "session-22-ledger"])
def test_mcp_a_failed_tool_is_recorded_failed_and_the_retry_says_so(rt, monkeypatch, old):  # noqa: F811
    files = Files()

    async def go():
        async with Client(StoplineGateway(files.server, rt, workflow="mcp-files", approvers=DIRECTORY).server) as c:
            meta = {CALL_ID: "w-1"}
            with monkeypatch.context() as m:
                if old:
                    m.setattr(ToolGate, "record", session22_record)
                r = await c.call_tool("write_file", {"path": "ro.txt", "text": "x"}, meta=meta)
            assert r.is_error and "read-only" in r.content[0].text
            r = await c.call_tool("write_file", {"path": "ro.txt", "text": "x"}, meta=meta)
            assert r.is_error and gate_of(r)["outcome"] == "done" and gate_of(r)["failed"] is True
            assert "already ran" in r.content[0].text and "and failed (" in r.content[0].text
            assert "read-only" in r.content[0].text

    anyio.run(go)
    assert files.ran == [("write_file", "ro.txt")]
    [x] = rt.ledger.entries(kind="execution")
    if old:
        assert "outcome" not in x.body and "read-only" in x.body["receipt"]["tool_error"]
    else:
        assert x.body["outcome"] == "failed" and "read-only" in x.body["error"]
        assert "tool_error" not in x.body["receipt"] and x.body["flags"] == []


def test_openai_agents_a_patch_whose_editor_raises_is_recorded_failed_and_sent_again_told_so(ledger_url, tmp_path):  # noqa: F811
    from agents import ApplyPatchTool
    from test_integrations_openai_agents_tools import POLICY as DEV_POLICY
    from test_integrations_openai_agents_tools import DiskEditor, Scripted, patch

    from policy_engine import Runtime
    from policy_engine.integrations.openai_agents import protect

    (tmp_path / "dev.policy").write_text(DEV_POLICY)
    root = tmp_path / "tree"

    def agent_for(rt, cid):  # noqa: F811
        from agents import Agent

        a = Agent(name="dev", instructions="x", tools=[ApplyPatchTool(editor=DiskEditor(root))],
                  model=Scripted([[patch(cid, "update_file", "docs/missing.md", "@@\n-a\n+b\n")]]))
        protect(a, rt, workflow="dev", approvers={"olga": ["ops_lead"]})
        return a

    with Runtime.open(str(tmp_path / "dev.policy"), ledger=ledger_url) as dev_rt:
        run(Runner.run(agent_for(dev_rt, "c1"), "go"))  # the editor raises: the file is not there
        [x] = dev_rt.ledger.entries(kind="execution")
        assert x.body["outcome"] == "failed" and x.body["error"].startswith("FileNotFoundError")
        assert "tool_error" not in x.body["receipt"] and "receipt_incomplete" not in x.body["flags"]

        result = run(Runner.run(agent_for(dev_rt, "c2"), "go"))  # the same patch again: the same decision

        said = " ".join(str(getattr(i, "output", "")) for i in result.new_items)
        assert "already ran" in said and "and failed (FileNotFoundError" in said, said
        assert len(dev_rt.ledger.entries(kind="execution")) == 1


def test_langgraph_a_ledger_of_session_22_still_tells_the_rerun_it_failed(tmp_path, monkeypatch):
    pytest.importorskip("langgraph")
    from test_integrations_langgraph import POLICY, executions, failing_refund, graph_with, refund, tool_messages

    from policy_engine import Runtime

    with Runtime.open(str(POLICY), ledger=f"sqlite:///{tmp_path / 'l.db'}") as lrt:
        ran: list = []
        sync_tool, _ = failing_refund(ran)
        g = graph_with(lrt, [sync_tool], [[refund(20, "c1")]])
        cfg = {"configurable": {"thread_id": "t"}}
        with monkeypatch.context() as m, pytest.raises(ConnectionError):
            m.setattr(ToolGate, "record", session22_record)
            g.invoke({"messages": [("user", "go")]}, cfg)
        [x] = executions(lrt)
        assert "outcome" not in x.body and x.body["receipt"]["tool_error"].startswith("ConnectionError")
        m_ = tool_messages(g.invoke(None, cfg))["c1"]
        assert ran == [20] and m_.status == "error"
        assert "already ran" in m_.content and "and failed (ConnectionError: payment provider" in m_.content
        assert json.loads(json.dumps(lrt.history(x.id)["execution"]["outcome"])) == "failed"


def test_a_failure_text_no_ledger_can_hold_is_escaped_and_still_recorded():
    text = error_text(RuntimeError("bad \ud800 byte"))
    assert text == "RuntimeError: bad \\ud800 byte"
    text.encode("utf-8")  # (storable)
    assert asyncio.CancelledError.__name__ == error_text(asyncio.CancelledError())
