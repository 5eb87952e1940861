"""A failed run's recorded error when the failure's text is a traceback (session 27).

The docs promise the recorded ``error`` is ``Type: message`` and never a traceback. Before,
a message that *was* a traceback (a worker's ``traceback.format_exc()`` passed on, an MCP
server's ``isError`` text) was recorded as the traceback itself (its file paths and code
included), or as a bare ``RuntimeError:`` / ``Error executing tool write_file:`` saying
nothing of what failed. Now the traceback's last line, the exception it ended with, is
what is recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from policy_engine.integrations.common import error_text

TB = ('Traceback (most recent call last):\n  File "/srv/files/app.py", line 12, in write\n'
      '    os.write(fd, data)\nOSError: [Errno 28] No space left on device')


def test_an_error_text_that_is_a_traceback_is_recorded_as_its_last_line():
    assert error_text(TB) == "OSError: [Errno 28] No space left on device"  # before: the whole traceback
    # before: "RuntimeError:"
    assert error_text(RuntimeError(TB)) == "RuntimeError: OSError: [Errno 28] No space left on device"
    # a message before the traceback is kept as it was
    assert error_text(RuntimeError("boom\n" + TB)) == "RuntimeError: boom"
    assert error_text("Traceback (most recent call last):") == "error"


@pytest.mark.parametrize("mode", ["gateway", "middleware"])
def test_mcp_a_tool_error_whose_text_is_a_traceback_is_recorded_without_it(tmp_path, mode):
    pytest.importorskip("mcp")
    import anyio
    from mcp import Client
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    from policy_engine import Runtime
    from policy_engine.integrations.mcp import StoplineGateway, protect

    srv = MCPServer("files")

    @srv.tool()
    def write_file(path: str, text: str) -> dict:
        raise ToolError(TB)

    policy = Path(__file__).resolve().parent.parent / "examples" / "integrations"
    with Runtime.open(str(policy), ledger=f"sqlite:///{tmp_path / 'l.db'}") as rt:
        if mode == "gateway":
            server = StoplineGateway(srv, rt, workflow="mcp-files").server
        else:
            protect(srv, rt, workflow="mcp-files")
            server = srv

        async def go():
            async with Client(server) as c:
                return await c.call_tool("write_file", {"path": "a.txt", "text": "x"})

        assert anyio.run(go).is_error
        [x] = rt.ledger.entries(kind="execution")
        assert x.body["outcome"] == "failed"
        # before: "Error executing tool write_file:" (the traceback cut, and what failed with it)
        assert x.body["error"] == "Error executing tool write_file: OSError: [Errno 28] No space left on device"


# ------------------------------------------------------------------ the ledger gone while the tool ran
def test_langgraph_a_tool_that_ran_while_the_ledger_went_away_says_it_ran(tmp_path):
    """Before, the graph raised the ledger's own error ("unable to open database file"), the
    same as when the gate could not decide and nothing ran: the operator could not tell
    that the refund was made and its execution is missing (a claim in doubt)."""
    pytest.importorskip("langgraph.prebuilt")
    import os

    from langchain_core.tools import tool
    from test_integrations_langgraph import graph_for, refund

    from policy_engine import Runtime
    from policy_engine.integrations.common import ExecutionNotRecorded
    from policy_engine.ledger.errors import LedgerUnavailable

    db = tmp_path / "led" / "l.db"
    db.parent.mkdir()
    policy = Path(__file__).resolve().parent.parent / "examples" / "integrations"
    ran: list = []
    with Runtime.open(str(policy), ledger=f"sqlite:///{db}") as rt:

        @tool
        def refund_order(order_id: str, amount: int) -> dict:
            """Refund an order."""
            ran.append(amount)
            rt.ledger.close()  # the ledger goes away while the refund is made
            os.rename(db.parent, tmp_path / "gone")
            return {"refund_id": "rf-1"}

        class Shop:
            tools = [refund_order]

        g = graph_for(rt, Shop(), [[refund(20, "c1")]])
        with pytest.raises(LedgerUnavailable) as e:  # (still a LedgerUnavailable: a handler of it still catches it)
            g.invoke({"messages": [("user", "go")]}, {"configurable": {"thread_id": "t"}})
        assert isinstance(e.value, ExecutionNotRecorded) and ran == [20]
        assert "`refund_order` ran under decision" in str(e.value) and "claims_in_doubt" in str(e.value)
        os.rename(tmp_path / "gone", db.parent)
        [doubt] = rt.claims_in_doubt()
        assert doubt.decision_id == e.value.check.decision_id
