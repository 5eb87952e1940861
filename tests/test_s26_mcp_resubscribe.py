"""A lost upstream tool-change subscription (MCP 2026-07-28): the gateway subscribes again,
with a backoff, through transient refusals, and its clients go on being told: once at the
loss, once when subscribed again (a change in between was told to no one), then of each
change as before; its tools are listed at each call in between and kept again after. An
upstream that refuses the new subscription outright ends the promise (the listen streams
end, new clients are promised nothing). Before: any loss ended it for good, and a client
of the handshake, still declared ``tools.listChanged``, was told nothing more. Real MCP
sessions end to end."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

import pytest

pytest.importorskip("mcp")

import anyio  # noqa: E402
from mcp import Client, MCPError  # noqa: E402
from mcp.server.lowlevel import Server  # noqa: E402
from mcp.server.runner import serve_dual_era_loop  # noqa: E402
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ToolsListChanged  # noqa: E402
from mcp.shared.memory import create_client_server_memory_streams  # noqa: E402
from mcp_types import (  # noqa: E402
    INTERNAL_ERROR,
    METHOD_NOT_FOUND,
    CallToolResult,
    ListToolsResult,
    TextContent,
    Tool,
    ToolAnnotations,
    ToolListChangedNotification,
)

from policy_engine import Runtime  # noqa: E402
from policy_engine.integrations import mcp_upstream  # noqa: E402
from policy_engine.integrations.mcp import StoplineGateway  # noqa: E402

POLICY = Path(__file__).resolve().parent.parent / "examples" / "integrations"
READ_ONLY = ToolAnnotations(read_only_hint=True)


class Upstream:
    """A low-level server on MCP 2026-07-28 serving ``subscriptions/listen`` (``listen``, whose
    ``close`` ends every stream gracefully). ``answers``: what the next listen requests get
    (an error code: refused; ``"hold"``: held until ``release``)."""

    def __init__(self) -> None:
        self.tools = {"read_file": Tool(name="read_file", input_schema={"type": "object"}, annotations=READ_ONLY)}
        self.bus = InMemorySubscriptionBus()
        self.listen = ListenHandler(self.bus)
        self.listens, self.lists, self.answers = 0, 0, []
        self.released = anyio.Event()
        self.server = Server("files", on_list_tools=self.list_tools, on_call_tool=self.call_tool,
                             on_subscriptions_listen=self.listen)
        self.server.middleware.append(self.gate)

    async def gate(self, ctx, call_next):
        if ctx.method == "tools/list":
            self.lists += 1
        if ctx.method == "subscriptions/listen":
            self.listens += 1
            answer = self.answers.pop(0) if self.answers else None
            if answer == "hold":
                await self.released.wait()
            elif answer is not None:
                raise MCPError(code=answer, message="not now")
        return await call_next(ctx)

    async def list_tools(self, ctx, params) -> ListToolsResult:
        return ListToolsResult(tools=list(self.tools.values()))

    async def call_tool(self, ctx, params) -> CallToolResult:
        return CallToolResult(content=[TextContent(type="text", text="text")])

    async def add_and_tell(self) -> None:
        self.tools["stat_file"] = Tool(name="stat_file", input_schema={"type": "object"}, annotations=READ_ONLY)
        await self.bus.publish(ToolsListChanged())


@pytest.fixture
def rt(tmp_path):
    with Runtime.open(str(POLICY), ledger=f"sqlite:///{tmp_path / 'l.db'}") as r:
        yield r


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(mcp_upstream, "RESUBSCRIBE_SECONDS", (0.01, 0.05))  # (the backoff, shortened)


class Told:
    """The changes one client of the gateway is told of: a handshake client's
    ``message_handler``, or a 2026-07-28 client's listen stream (``stream``)."""

    def __init__(self) -> None:
        self.count, self._wake, self.stream = 0, anyio.Event(), None

    async def __call__(self, message) -> None:
        if isinstance(message, ToolListChangedNotification):
            self.count += 1
            self._wake.set()

    async def next(self) -> None:
        with anyio.fail_after(10):  # (a bound on the wait, not a timing assertion)
            if self.stream is not None:
                assert isinstance(await anext(self.stream), ToolsListChanged)
                self.count += 1
                return
            await self._wake.wait()
        self._wake = anyio.Event()


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


@asynccontextmanager
async def client_told(gw, state, mode, told):
    """A client of the gateway told of changes (``mode``: ``legacy``, or ``modern`` listening)."""
    if mode == "legacy":
        async with Client(connection(gw.server, state), mode="legacy", message_handler=told) as c:
            assert c.server_capabilities.tools.list_changed is True
            await c.list_tools()
            await until(lambda: len(state["tools"].downstream.sessions) == 1)
            yield c
    else:
        async with Client(connection(gw.server, state)) as c, c.listen(tools_list_changed=True) as sub:
            assert c.server_capabilities.tools.list_changed is True and sub.honored.tools_list_changed is True
            await c.list_tools()  # (as a client does before its calls)
            told.stream = aiter(sub)
            yield c


async def calls(c, n: int) -> None:
    for _ in range(n):
        assert not (await c.call_tool("read_file", {"path": "a.txt"})).is_error


@pytest.mark.parametrize("mode", ["legacy", "modern"])
def test_mcp_a_lost_upstream_subscription_is_made_again(rt, mode):
    up, told = Upstream(), Told()
    gw = StoplineGateway(up.server, rt, workflow="mcp-files")

    async def go():
        async with gw.server.lifespan(gw.server) as state:
            tools = state["tools"]
            assert tools.subscriptions == 1 and tools.kept
            async with client_told(gw, state, mode, told) as c:
                up.answers = [INTERNAL_ERROR, "hold"]  # one transient refusal, then an answer when released
                up.listen.close()  # the upstream ends the subscription
                await told.next()  # told at the loss (a change may have been lost with it)
                await until(lambda: up.listens == 3)  # subscribing again (before: never)
                assert not tools.kept and tools.promised  # listed at each call meanwhile; still promised
                lists = up.lists
                await calls(c, 2)
                assert up.lists == lists + 2
                up.released.set()
                await until(lambda: tools.subscriptions == 2)
                await told.next()  # told once subscribed again (a change meanwhile was told to no one)
                assert tools.kept
                await up.add_and_tell()
                await told.next()  # and of each change as before
                assert {t.name for t in (await c.list_tools()).tools} == {"read_file", "stat_file"}
                lists = up.lists
                await calls(c, 3)
                assert up.lists == lists  # kept again: the listing the client's made serves the calls
            assert told.count == 3
    anyio.run(go)


@pytest.mark.parametrize("mode", ["legacy", "modern"])
def test_mcp_an_upstream_that_refuses_a_new_subscription_ends_the_promise(rt, mode):
    up, told = Upstream(), Told()
    gw = StoplineGateway(up.server, rt, workflow="mcp-files")

    async def go():
        async with gw.server.lifespan(gw.server) as state:
            tools = state["tools"]
            async with client_told(gw, state, mode, told) as c:
                up.answers = [INTERNAL_ERROR, METHOD_NOT_FOUND]  # transient, then refused outright
                up.listen.close()
                await told.next()
                await until(lambda: not tools.promised)
                assert up.listens == 3 and not tools.kept
                if mode == "modern":  # its stream ends (told once more): listening again, no tool changes honored
                    with anyio.fail_after(10):
                        assert all([isinstance(e, ToolsListChanged) async for e in told.stream])
                    async with c.listen(tools_list_changed=True) as sub:
                        assert sub.honored.tools_list_changed is None
                await until(lambda: tools.downstream.sessions == {})
                lists = up.lists
                await calls(c, 2)
                assert up.lists == lists + 2  # listed at each call from now on
            async with Client(connection(gw.server, state), mode="legacy") as late:
                assert not late.server_capabilities.tools.list_changed  # promised nothing
    anyio.run(go)


def test_mcp_a_subscription_refused_for_now_at_start_is_made_again(rt, caplog):
    """The upstream's first answer is a transient error (``INTERNAL_ERROR``: e.g. its
    subscription limit): the gateway starts promising nothing and subscribes again; once
    acknowledged, its tools are kept between calls and a new client is promised changes
    and told of them. Before: listed at each call for the upstream session's whole life
    (over streamable HTTP, the gateway's), its clients never told."""
    up, told = Upstream(), Told()
    up.answers = [INTERNAL_ERROR, "hold"]  # (the second held until released)
    gw = StoplineGateway(up.server, rt, workflow="mcp-files")

    async def go():
        async with gw.server.lifespan(gw.server) as state:
            tools = state["tools"]
            async with Client(connection(gw.server, state), mode="legacy") as early:
                assert not early.server_capabilities.tools.list_changed  # promised nothing yet
                await until(lambda: up.listens == 2)  # subscribing again (before: never)
                up.released.set()
                await until(lambda: tools.kept)
            assert tools.promised and tools.subscriptions == 1
            async with client_told(gw, state, "legacy", told) as c:
                await up.add_and_tell()
                await told.next()
                assert {t.name for t in (await c.list_tools()).tools} == {"read_file", "stat_file"}
    with caplog.at_level("WARNING", logger="policy_engine.integrations.mcp"):
        anyio.run(go)
    said = [r.getMessage() for r in caplog.records]
    assert any("until it is made again" in m for m in said) and any("is made again" in m for m in said)
    assert not any("from now on" in m for m in said)
