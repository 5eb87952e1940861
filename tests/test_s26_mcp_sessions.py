"""The MCP gateway keeps a client of the handshake (to tell it of tool list changes) exactly
as long as the SDK keeps its connection: however the connection ends (the client closes it,
a streamable-HTTP ``DELETE``, the end of a stateless request), the gateway forgets it, with
no change told in between. Before, it kept every such client until a send to it failed, so
a long-running gateway over streamable HTTP, whose clients share one upstream session, grew
with every short session (and over stateless HTTP, where a send never fails, forever).
Real MCP sessions end to end: in process, and over real HTTP (uvicorn)."""

from __future__ import annotations

import gc
import socket
import weakref
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

pytest.importorskip("mcp")
uvicorn = pytest.importorskip("uvicorn")

import anyio  # noqa: E402
from mcp import Client  # noqa: E402
from mcp.server.mcpserver import MCPServer  # noqa: E402
from mcp.server.runner import serve_dual_era_loop  # noqa: E402
from mcp.server.subscriptions import InMemorySubscriptionBus, ToolsListChanged  # noqa: E402
from mcp.shared.memory import create_client_server_memory_streams  # noqa: E402
from mcp_types import ToolAnnotations, ToolListChangedNotification  # noqa: E402

from policy_engine import Runtime  # noqa: E402
from policy_engine.integrations.mcp import StoplineGateway  # noqa: E402

POLICY = Path(__file__).resolve().parent.parent / "examples" / "integrations"
N = 12  #: short sessions opened and closed, one after another


class Upstream:
    """A file server on MCP 2026-07-28 that tells of tool changes (``subscriptions/listen``)."""

    def __init__(self) -> None:
        self.bus = InMemorySubscriptionBus()
        self.server = MCPServer("files", subscriptions=self.bus)
        self.server.add_tool(self.read_file, annotations=ToolAnnotations(read_only_hint=True))

    def read_file(self, path: str) -> str:
        return "text"

    def stat_file(self, path: str) -> str:
        return "0"

    async def add_and_tell(self) -> None:
        self.server.add_tool(self.stat_file, annotations=ToolAnnotations(read_only_hint=True))
        await self.bus.publish(ToolsListChanged())


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
        with anyio.fail_after(10):  # (a bound on the wait, not a timing assertion)
            await self._wake.wait()
        self._wake = anyio.Event()


def captured(gw: StoplineGateway) -> list:
    """The gateway's lifespan states, as the transport enters them (one for all HTTP sessions)."""
    states, plain = [], gw.server.lifespan

    @asynccontextmanager
    async def lifespan(server):
        async with plain(server) as state:
            states.append(state)
            yield state

    gw.server.lifespan = lifespan
    return states


def kept(state) -> dict:
    return state["tools"].downstream.sessions


async def until(predicate) -> None:
    with anyio.fail_after(10):  # (a bound on the wait, not a timing assertion)
        while not predicate():
            await anyio.sleep(0.01)


@asynccontextmanager
async def connection(server, state):
    """One client connection served under a lifespan shared by every connection."""
    async with create_client_server_memory_streams() as ((client_read, client_write), (server_read, server_write)):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: serve_dual_era_loop(server, server_read, server_write, lifespan_state=state,
                                                      init_options=server.create_initialization_options()))
            try:
                yield client_read, client_write
            finally:
                await client_write.aclose()
                await server_write.aclose()


def test_mcp_clients_sharing_an_upstream_session_are_forgotten_when_they_leave(rt):
    """In process, one lifespan for all (as streamable HTTP serves them): each of N handshake
    clients is kept while connected and forgotten when it leaves, with no change told in
    between; nothing else retains it. Then the one client still connected is told, once."""
    up = Upstream()
    gw = StoplineGateway(up.server, rt, workflow="mcp-files")
    told = Told()

    async def go():
        async with gw.server.lifespan(gw.server) as state:
            refs = []
            for _ in range(N):
                async with Client(connection(gw.server, state), mode="legacy") as c:
                    assert c.server_capabilities.tools.list_changed is True
                    await c.list_tools()
                    await until(lambda: len(kept(state)) == 1)  # (``initialized`` is a notification)
                    refs += [weakref.ref(s) for s in kept(state).values()]
                assert kept(state) == {}  # before: one more kept with each client
            gc.collect()
            assert [r() for r in refs] == [None] * N  # nothing in the gateway holds a gone client
            async with Client(connection(gw.server, state), mode="legacy", message_handler=told) as c, \
                    Client(connection(gw.server, state)) as modern:  # (2026-07-28: never kept, it listens)
                await modern.list_tools()
                await until(lambda: len(kept(state)) == 1)
                await up.add_and_tell()
                await told.next()
                assert {t.name for t in (await c.list_tools()).tools} == {"read_file", "stat_file"}
            assert kept(state) == {} and told.count == 1
    anyio.run(go)


@asynccontextmanager
async def http_gateway(gw: StoplineGateway, **options):
    """``gw.server`` over real streamable HTTP (the SDK's session manager, uvicorn on a free port)."""
    app = gw.server.streamable_http_app(**options)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: server.serve(sockets=[sock]))
        await until(lambda: server.started)
        try:
            yield f"http://127.0.0.1:{port}/mcp"
        finally:
            server.should_exit = True
    sock.close()


@pytest.mark.parametrize("stateless", [False, True])
def test_mcp_http_sessions_are_forgotten_when_they_end(rt, stateless):
    """Over real streamable HTTP (stateful: each session ends with the client's ``DELETE``;
    stateless: each request is its own connection): N short handshake sessions leave none
    kept; one still open (stateful) is told of a change. Before: all N were kept (over
    stateless HTTP forever: a notification there is dropped, never failed)."""
    up = Upstream()
    gw = StoplineGateway(up.server, rt, workflow="mcp-files")
    states = captured(gw)
    told = Told()

    async def go():
        async with http_gateway(gw, stateless_http=stateless) as url:
            for _ in range(N):
                async with Client(url, mode="legacy") as c:
                    assert c.server_capabilities.tools.list_changed is True
                    assert {t.name for t in (await c.list_tools()).tools} == {"read_file"}
                await until(lambda: kept(states[0]) == {})  # (the server side ends after the client's exit)
            assert len(states) == 1  # (one upstream session for every HTTP client)
            if not stateless:  # (stateless HTTP has no stream to tell a client on)
                async with Client(url, mode="legacy", message_handler=told) as c:
                    await c.list_tools()
                    await until(lambda: len(kept(states[0])) == 1)
                    await up.add_and_tell()
                    await told.next()
                    assert {t.name for t in (await c.list_tools()).tools} == {"read_file", "stat_file"}
                await until(lambda: kept(states[0]) == {})
    anyio.run(go)
