"""Audit (s27) of the MCP gateway: the ledger lost at an ``input_required`` round, an
upstream that fails after the gate let the call run, and the like (real mcp package)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import pytest

pytest.importorskip("mcp")

import anyio  # noqa: E402
from mcp import Client  # noqa: E402
from mcp.server.mcpserver import MCPServer  # noqa: E402
from mcp.server.mcpserver.resolve import Elicit, Resolve  # noqa: E402
from mcp_types import ToolAnnotations  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from policy_engine import Runtime  # noqa: E402
from policy_engine.integrations.mcp import GATE_META, StoplineGateway, protect  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "integrations"
DIRECTORY = {"ops": ["operator"], "fin": ["finance_approver"]}


def gate_of(result) -> dict:
    return (result.meta or {})[GATE_META]


def fronted(rt, mode: str, srv: MCPServer):
    if mode == "gateway":
        return StoplineGateway(srv, rt, workflow="mcp-files", approvers=DIRECTORY).server
    protect(srv, rt, workflow="mcp-files", approvers=DIRECTORY)
    return srv


def unreachable(rt, db: Path) -> Path:
    """Make the SQLite ledger unreachable for real: its connections closed, its directory gone."""
    rt.ledger.close()
    moved = db.parent.with_name(db.parent.name + "-gone")
    os.rename(db.parent, moved)
    return moved


class Confirm(BaseModel):
    ok: bool


ON_ASK: list = []  #: what happens (once) when a server asks for input


def confirm(path: str) -> Elicit:
    while ON_ASK:
        ON_ASK.pop()()
    return Elicit(f"Really touch {path}?", Confirm)


async def accept(context, params):
    from mcp_types import ElicitResult

    return ElicitResult(action="accept", content={"ok": True})


@pytest.mark.parametrize("mode", ["gateway", "middleware"])
def test_the_ledger_lost_at_an_input_round_refuses_with_unavailable_not_an_internal_error(tmp_path, mode, caplog):
    db = tmp_path / "led" / "l.db"
    db.parent.mkdir()
    ran: list = []
    moved: list[Path] = []
    with Runtime.open(str(EXAMPLES), ledger=f"sqlite:///{db}") as r:
        srv = MCPServer("files")

        # the ledger goes away while the server asks for input (after the gate's claim)
        ON_ASK[:] = [lambda: moved.append(unreachable(r, db))]

        @srv.tool(annotations=ToolAnnotations(destructive_hint=True))
        def write_file(path: str, text: str, ok: Annotated[Confirm, Resolve(confirm)]) -> dict:
            ran.append(path)
            return {"path": path, "bytes": len(text)}

        server = fronted(r, mode, srv)

        async def go():
            async with Client(server, elicitation_callback=accept) as c:
                try:
                    # before: MCPError "Internal server error" (a traceback in the server's log)
                    return await c.session.call_tool("write_file", {"path": "a", "text": "x"},
                                                     allow_input_required=True)
                finally:
                    os.rename(moved[0], db.parent)
        res = anyio.run(go)
        assert res.is_error and gate_of(res)["outcome"] == "unavailable", res
        assert "ledger cannot be reached" in res.content[0].text and "not run" in res.content[0].text
        assert ran == [] and r.ledger.entries(kind="execution") == []


@pytest.mark.parametrize("mode", ["gateway", "middleware"])
def test_an_upstream_error_while_the_ledger_is_gone_reaches_the_client_as_itself(tmp_path, mode, caplog):
    """The server fails the call with a protocol error after the gate let it run, and the
    ledger cannot record that failed execution: the client gets the server's error (not
    "Internal server error"), the log says the execution is not recorded."""
    from mcp import MCPError

    db = tmp_path / "led" / "l.db"
    db.parent.mkdir()
    moved: list[Path] = []
    with Runtime.open(str(EXAMPLES), ledger=f"sqlite:///{db}") as r:
        srv = MCPServer("files")

        @srv.tool()
        def write_file(path: str, text: str) -> dict:
            moved.append(unreachable(r, db))
            raise MCPError(code=-32050, message="the disk is gone")

        server = fronted(r, mode, srv)

        async def go():
            async with Client(server) as c:
                try:
                    await c.call_tool("write_file", {"path": "a", "text": "x"})
                except MCPError as e:
                    return e
                finally:
                    os.rename(moved[0], db.parent)
        raised = anyio.run(go)
        # before: "Internal server error" (the ledger's ExecutionNotRecorded hid the server's own error)
        assert isinstance(raised, MCPError) and "the disk is gone" in str(raised), raised
        assert r.ledger.entries(kind="execution") == []
        assert any("could not be recorded" in m for m in caplog.messages)


@pytest.mark.parametrize("mode", ["gateway", "middleware"])
def test_a_result_too_big_for_its_receipt_is_returned_and_recorded_without_that_field(tmp_path, mode):
    """A tool that ran and returned a declared receipt field beyond the engine's input limits:
    the agent gets the result, the execution is recorded (the field listed as missing), no
    claim is left in doubt."""
    from policy_engine.limits import MAX_INPUT_CHARS

    ran: list = []
    with Runtime.open(str(EXAMPLES), ledger=f"sqlite:///{tmp_path / 'l.db'}") as r:
        srv = MCPServer("files")

        @srv.tool()
        def write_file(path: str, text: str) -> dict:
            ran.append(path)
            return {"path": path, "bytes": "x" * (MAX_INPUT_CHARS + 1)}

        server = fronted(r, mode, srv)

        async def go():
            async with Client(server) as c:
                # before: MCPError "Internal server error" (the receipt refused by the ledger): the
                # agent never saw that it ran, and its claim was left in doubt
                return await c.call_tool("write_file", {"path": "a", "text": "x"})
        res = anyio.run(go)
        assert not res.is_error and gate_of(res)["outcome"] == "ran"
        assert gate_of(res)["receipt_dropped"] == ["bytes"]
        [x] = r.ledger.entries(kind="execution")
        assert x.body["receipt"] == {"path": "a"} and x.body["missing_receipt"] == ["bytes"]
        assert ran == ["a"] and list(r.claims_in_doubt()) == []
