"""The MCP adapter as an MCP host operator uses it, through the gateway and the middleware:
the upstream tool's progress reaches the client, the client's ``_meta`` reaches the tool,
and a tool that fails is said to have failed on its first answer."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("mcp")

import anyio  # noqa: E402
from mcp import Client  # noqa: E402
from mcp.server.mcpserver import Context, MCPServer  # noqa: E402
from mcp_types import ToolAnnotations  # noqa: E402

from policy_engine import Runtime  # noqa: E402
from policy_engine.integrations.mcp import CALL_ID, GATE_META, StoplineGateway, protect  # noqa: E402

POLICY = Path(__file__).resolve().parent.parent / "examples" / "integrations"
DIRECTORY = {"ops": ["operator"]}


def files_server(ran: list) -> MCPServer:
    srv = MCPServer("files")

    @srv.tool(annotations=ToolAnnotations(destructive_hint=True))
    async def write_file(path: str, text: str, ctx: Context) -> str:
        await ctx.report_progress(1, 2, "snapshot taken")
        ran.append(path)
        await ctx.report_progress(2, 2, "written")
        return f"wrote {len(text)} bytes to {path}"

    return srv


@pytest.fixture
def rt(tmp_path):
    with Runtime.open(str(POLICY), ledger=f"sqlite:///{tmp_path / 'l.db'}") as r:
        yield r


@pytest.mark.parametrize("way", ["gateway", "middleware"])
def test_mcp_the_upstream_tools_progress_reaches_the_client(rt, way):
    ran: list = []
    srv = files_server(ran)
    if way == "gateway":
        served = StoplineGateway(srv, rt, workflow="mcp-files", approvers=DIRECTORY).server
    else:
        protect(srv, rt, workflow="mcp-files", approvers=DIRECTORY)
        served = srv
    seen: list = []

    async def on_progress(progress, total, message):
        seen.append((progress, total, message))

    async def go():
        async with Client(served) as c:
            r = await c.call_tool("write_file", {"path": "n.txt", "text": "hello"}, progress_callback=on_progress)
            assert not r.is_error and (r.meta or {})[GATE_META]["outcome"] == "ran"
            assert r.content[0].text == "wrote 5 bytes to n.txt"
            # a client that asked for no progress: the same call runs, nothing is sent to it
            quiet = await c.call_tool("write_file", {"path": "m.txt", "text": "hi"})
            assert not quiet.is_error and quiet.content[0].text == "wrote 2 bytes to m.txt"
    anyio.run(go)
    assert seen == [(1, 2, "snapshot taken"), (2, 2, "written")]
    assert ran == ["n.txt", "m.txt"]


@pytest.mark.parametrize("way", ["gateway", "middleware"])
def test_mcp_the_clients_meta_reaches_the_upstream_tool_as_the_middlewares_does(rt, way):
    """What the client sends in ``_meta`` (its call id, a trace context) reaches the tool
    behind the gateway as it reaches the tool behind the middleware (before, the gateway
    dropped it); progress still reaches the client."""
    srv, seen_meta, seen = MCPServer("files"), [], []

    @srv.tool(annotations=ToolAnnotations(destructive_hint=True))
    async def write_file(path: str, text: str, ctx: Context) -> str:
        seen_meta.append(dict(ctx.request_context.meta or {}))
        await ctx.report_progress(1, 1, "done")
        return "ok"

    if way == "gateway":
        served = StoplineGateway(srv, rt, workflow="mcp-files", approvers=DIRECTORY).server
    else:
        protect(srv, rt, workflow="mcp-files", approvers=DIRECTORY)
        served = srv

    async def on_progress(progress, total, message):
        seen.append(message)

    async def go():
        async with Client(served) as c:
            meta = {CALL_ID: "job-1", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
            r = await c.call_tool("write_file", {"path": "n.txt", "text": "x"}, progress_callback=on_progress,
                                  meta=meta)
            assert not r.is_error and (r.meta or {})[GATE_META]["outcome"] == "ran"
    anyio.run(go)
    [m] = seen_meta
    assert m[CALL_ID] == "job-1" and m["traceparent"].startswith("00-0af7")
    assert seen == ["done"]


@pytest.mark.parametrize("way", ["gateway", "middleware"])
def test_mcp_a_tool_that_fails_is_answered_and_logged_failed_not_just_ran(rt, way):
    """A tool that raises (an ``isError`` result) ran and failed: the gate's ``_meta`` and its
    log say ``failed`` on that first answer, as the re-run's ``done`` does (before, the first
    answer said only ``ran``, as a success does)."""
    srv = MCPServer("files")

    @srv.tool(annotations=ToolAnnotations(destructive_hint=True))
    def write_file(path: str, text: str) -> str:
        raise ValueError("disk full")

    if way == "gateway":
        gw = StoplineGateway(srv, rt, workflow="mcp-files", approvers=DIRECTORY)
        served, gate = gw.server, gw.gate
    else:
        gate, served = protect(srv, rt, workflow="mcp-files", approvers=DIRECTORY), srv

    async def go():
        async with Client(served) as c:
            return await c.call_tool("write_file", {"path": "n.txt", "text": "x"}, meta={CALL_ID: "w-1"})
    bad = anyio.run(go)
    g = (bad.meta or {})[GATE_META]
    assert bad.is_error and g["outcome"] == "ran" and g["failed"] is True
    assert gate.log[0]["outcome"] == "ran" and gate.log[0]["failed"] is True
    [x] = rt.ledger.entries(kind="execution")
    assert x.body["outcome"] == "failed"
