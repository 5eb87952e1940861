"""The MCP gateway passes its upstream's tool list changes on to its own clients: it declares
``tools.listChanged`` when (and only when) the upstream tells it of changes, and tells every
client that could have listed tools of each one (a ``subscriptions/listen`` stream on MCP
2026-07-28, ``notifications/tools/list_changed`` on the initialize handshake), so a client
that re-lists sees the upstream's tools as they are now. Real MCP sessions end to end."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

import pytest

pytest.importorskip("mcp")

import anyio  # noqa: E402
from mcp import Client  # noqa: E402
from mcp.server.lowlevel.server import NotificationOptions  # noqa: E402
from mcp.server.mcpserver import MCPServer  # noqa: E402
from mcp.server.runner import serve_dual_era_loop  # noqa: E402
from mcp.server.subscriptions import InMemorySubscriptionBus, ToolsListChanged  # noqa: E402
from mcp.shared.memory import create_client_server_memory_streams  # noqa: E402
from mcp_types import ToolAnnotations, ToolListChangedNotification  # noqa: E402

from policy_engine import Runtime  # noqa: E402
from policy_engine.integrations.mcp import GATE_META, StoplineGateway  # noqa: E402

POLICY = Path(__file__).resolve().parent.parent / "examples" / "integrations"
DIRECTORY = {"ops": ["operator"]}
READ_ONLY, DESTRUCTIVE = ToolAnnotations(read_only_hint=True), ToolAnnotations(destructive_hint=True)


class Upstream:
    """A file server whose tools change. ``mode``: ``watched`` (MCP 2026-07-28 with
    ``subscriptions/listen``), ``legacy-watched`` (the handshake, ``tools.listChanged``
    declared), ``unwatched`` (2026-07-28, no listen), ``legacy`` (the handshake, no
    ``listChanged``)."""

    def __init__(self, mode: str) -> None:
        self.mode, self.sessions, self.ran = mode, [], []
        self.bus = InMemorySubscriptionBus()
        srv = self.server = MCPServer("files", subscriptions=False if mode == "unwatched" else self.bus)
        srv.add_tool(self.read_file, annotations=READ_ONLY)
        srv.middleware.append(self.seen)
        if mode == "legacy-watched":
            low = srv._lowlevel_server
            plain = low.create_initialization_options
            low.create_initialization_options = lambda *a, **k: plain(NotificationOptions(tools_changed=True))

    async def seen(self, ctx, call_next):
        if ctx.method == "tools/list":
            self.sessions.append(ctx.session)  # (told on the handshake: one of its requests' sessions will do)
        return await call_next(ctx)

    def read_file(self, path: str) -> str:
        self.ran.append(path)
        return "text"

    def stat_file(self, path: str) -> str:
        self.ran.append(f"stat {path}")
        return "0"

    def change(self) -> None:
        """``stat_file`` added, ``read_file`` now destructive (nothing told yet)."""
        self.server.remove_tool("read_file")
        self.server.add_tool(self.read_file, annotations=DESTRUCTIVE)
        self.server.add_tool(self.stat_file, annotations=READ_ONLY)

    async def tell(self) -> None:
        if self.mode == "watched":
            await self.bus.publish(ToolsListChanged())
        else:
            await self.sessions[-1].send_tool_list_changed()  # (the gateway's one connection with it)

    def gateway(self, rt, **options) -> StoplineGateway:
        if self.mode.startswith("legacy"):
            options["upstream_options"] = {"mode": "legacy"}
        return StoplineGateway(self.server, rt, workflow="mcp-files", approvers=DIRECTORY, **options)


@pytest.fixture
def rt(tmp_path):
    with Runtime.open(str(POLICY), ledger=f"sqlite:///{tmp_path / 'l.db'}") as r:
        yield r


class Told:
    """A handshake client's ``message_handler``: the tool list changes it was told of."""

    def __init__(self) -> None:
        self.count, self._wake = 0, anyio.Event()

    async def __call__(self, message) -> None:
        if isinstance(message, ToolListChangedNotification):
            self.count += 1
            self._wake.set()

    async def next(self) -> None:
        with anyio.fail_after(60):  # (a bound on the wait, not a timing assertion)
            await self._wake.wait()
        self._wake = anyio.Event()


def names(result) -> set[str]:
    return {t.name for t in result.tools}


def outcome(r) -> str:
    return (r.meta or {})[GATE_META]["outcome"]


@pytest.mark.parametrize("client_mode", ["modern", "legacy"])
@pytest.mark.parametrize("mode", ["watched", "legacy-watched"])
def test_mcp_a_client_of_the_gateway_is_told_the_upstream_tools_changed(rt, mode, client_mode):
    """Before: the gateway declared no ``listChanged`` and refused ``subscriptions/listen``;
    its clients kept the listing they had (``read_file`` read-only, no ``stat_file``)."""
    up, told = Upstream(mode), Told()

    async def go():
        options = {"mode": "legacy", "message_handler": told} if client_mode == "legacy" else {}
        async with Client(up.gateway(rt).server, **options) as c:
            assert c.server_capabilities.tools.list_changed is True
            assert names(await c.list_tools()) == {"read_file"}
            if client_mode == "modern":
                async with c.listen(tools_list_changed=True) as sub:
                    assert sub.honored.tools_list_changed is True
                    up.change()
                    await up.tell()
                    with anyio.fail_after(60):
                        assert isinstance(await anext(aiter(sub)), ToolsListChanged)
            else:
                up.change()
                await up.tell()
                await told.next()
            listed = {t.name: t for t in (await c.list_tools()).tools}
            assert set(listed) == {"read_file", "stat_file"}
            assert listed["read_file"].meta[GATE_META]["reversibility"] == "irreversible"  # destructive now
            assert outcome(await c.call_tool("stat_file", {"path": "a.txt"})) == "deny"  # not in the policy
    anyio.run(go)


@pytest.mark.parametrize("client_mode", ["modern", "legacy"])
@pytest.mark.parametrize("mode", ["unwatched", "legacy"])
def test_mcp_a_gateway_over_an_upstream_that_tells_no_changes_declares_none(rt, mode, client_mode):
    """No ``listChanged`` upstream: the gateway cannot know of a change, so it promises none;
    a 2026-07-28 client's listen is acknowledged without tool changes (before: refused, as
    ``subscriptions/listen`` was not served)."""
    up, told = Upstream(mode), Told()

    async def go():
        options = {"mode": "legacy", "message_handler": told} if client_mode == "legacy" else {}
        async with Client(up.gateway(rt).server, **options) as c:
            assert not c.server_capabilities.tools.list_changed
            await c.list_tools()
            if client_mode == "modern":
                async with c.listen(tools_list_changed=True) as sub:
                    assert sub.honored.tools_list_changed is None
            up.change()
            assert names(await c.list_tools()) == {"read_file", "stat_file"}  # listed live, as before
    anyio.run(go)
    assert told.count == 0


@pytest.mark.parametrize("mode", ["watched", "legacy-watched"])
def test_mcp_a_gateway_over_a_gateway_passes_the_change_on(rt, tmp_path, mode):
    """Gateways in a row (each over one upstream): the change reaches the last one's client."""
    up, told = Upstream(mode), Told()

    async def go():
        inner = up.gateway(rt)
        with Runtime.open(str(POLICY), ledger=f"sqlite:///{tmp_path / 'outer.db'}") as rt2:
            outer = StoplineGateway(inner.server, rt2, workflow="mcp-files", approvers=DIRECTORY, server="files")
            async with Client(outer.server, mode="legacy", message_handler=told) as c:
                assert c.server_capabilities.tools.list_changed is True
                assert names(await c.list_tools()) == {"read_file"}
                up.change()
                await up.tell()
                await told.next()
                assert names(await c.list_tools()) == {"read_file", "stat_file"}
    anyio.run(go)


@asynccontextmanager
async def connection(server, state):
    """One client connection served under a lifespan shared by every connection, as the
    SDK's streamable-HTTP session manager serves its sessions (one upstream session for all)."""
    async with create_client_server_memory_streams() as ((client_read, client_write), (server_read, server_write)):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: serve_dual_era_loop(server, server_read, server_write, lifespan_state=state,
                                                      init_options=server.create_initialization_options()))
            try:
                yield client_read, client_write
            finally:
                await client_write.aclose()
                await server_write.aclose()


@pytest.mark.parametrize("mode", ["watched", "legacy-watched"])
def test_mcp_every_client_sharing_the_upstream_session_is_told(rt, mode):
    """Three clients over one upstream session (two of the handshake, one 2026-07-28 listening):
    one change, each told once; a change with no client connected is harmless."""
    up = Upstream(mode)
    gw = up.gateway(rt)
    told = [Told(), Told()]

    async def go():
        async with gw.server.lifespan(gw.server) as state:
            await state["tools"].get(refresh=True)  # (the upstream knows the gateway's session)
            up.change()
            await up.tell()  # no client yet: nobody to tell, nothing breaks
            await wait_rounds(state, 1)
            async with Client(connection(gw.server, state), mode="legacy", message_handler=told[0]) as a, \
                    Client(connection(gw.server, state), mode="legacy", message_handler=told[1]) as b, \
                    Client(connection(gw.server, state)) as m:
                for c in (a, b, m):
                    assert c.server_capabilities.tools.list_changed is True
                    assert names(await c.list_tools()) == {"read_file", "stat_file"}
                async with m.listen(tools_list_changed=True) as sub:
                    up.server.remove_tool("stat_file")
                    await up.tell()
                    for t in told:
                        await t.next()
                    with anyio.fail_after(60):
                        assert isinstance(await anext(aiter(sub)), ToolsListChanged)
                for c in (a, b, m):
                    assert names(await c.list_tools()) == {"read_file"}
                assert [t.count for t in told] == [1, 1]
            up.server.add_tool(up.stat_file, annotations=READ_ONLY)
            await up.tell()  # every client gone: harmless
            await wait_rounds(state, 3)
            assert names(await state["upstream"].list_tools()) == {"read_file", "stat_file"}
    anyio.run(go)


async def wait_rounds(state, n: int) -> None:
    with anyio.fail_after(60):  # (a bound on the wait, not a timing assertion)
        while state["tools"].downstream.told < n:
            await anyio.sleep(0.01)
