"""The MCP gateway lists its upstream's tools once per upstream session, not once per call,
while the upstream tells of every change (``tools.listChanged``: a ``subscriptions/listen``
stream on MCP 2026-07-28, ``notifications/tools/list_changed`` on older protocols); a change
it tells of is what the next call is judged under; an upstream that does not declare
``listChanged`` has its tools listed at each call (never judged under a stale listing)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("mcp")

import anyio  # noqa: E402
from mcp import Client  # noqa: E402
from mcp.server.lowlevel.server import NotificationOptions  # noqa: E402
from mcp.server.mcpserver import Context, MCPServer  # noqa: E402
from mcp.server.subscriptions import InMemorySubscriptionBus, ToolsListChanged  # noqa: E402
from mcp_types import ListToolsResult, Tool, ToolAnnotations  # noqa: E402

import policy_engine.integrations.mcp as mcp_adapter  # noqa: E402
from policy_engine import Runtime  # noqa: E402
from policy_engine.integrations.mcp import GATE_META, StoplineGateway  # noqa: E402

POLICY = Path(__file__).resolve().parent.parent / "examples" / "integrations"
DIRECTORY = {"ops": ["operator"]}
READ_ONLY, DESTRUCTIVE = ToolAnnotations(read_only_hint=True), ToolAnnotations(destructive_hint=True)


class Upstream:
    """A file server that counts the ``tools/list`` requests it answers. ``read_file`` is
    annotated read-only (the policy allows it: reversibility ``full``); ``retag`` makes it
    destructive (the policy then denies it: ``default deny``). ``mode``: ``watched`` (MCP
    2026-07-28 with ``subscriptions/listen``), ``legacy-watched`` (the initialize handshake,
    ``tools.listChanged`` declared), ``unwatched`` (2026-07-28, no listen: no ``listChanged``),
    ``legacy`` (the handshake, no ``listChanged``)."""

    def __init__(self, mode: str) -> None:
        self.mode, self.lists, self.ran, self.sessions = mode, 0, [], []
        self.bus = InMemorySubscriptionBus()
        srv = self.server = MCPServer("files", subscriptions=False if mode == "unwatched" else self.bus)
        srv.add_tool(self.read_file, annotations=READ_ONLY)
        srv.middleware.append(self.count)
        if mode == "legacy-watched":
            low = srv._lowlevel_server
            plain = low.create_initialization_options
            low.create_initialization_options = lambda *a, **k: plain(NotificationOptions(tools_changed=True))

    async def count(self, ctx, call_next):
        if ctx.method == "tools/list":
            self.lists += 1
        return await call_next(ctx)

    def read_file(self, path: str, ctx: Context) -> str:
        self.ran.append(path)
        self.sessions.append(ctx.session)
        return "text"

    def retag(self) -> None:
        """``read_file`` becomes destructive (the server's own tools change, nothing told yet)."""
        self.server.remove_tool("read_file")
        self.server.add_tool(self.read_file, annotations=DESTRUCTIVE)

    async def tell(self) -> None:
        """Tell the gateway the tools changed, as the server's protocol does."""
        if self.mode == "watched":
            await self.bus.publish(ToolsListChanged())
        else:
            await self.sessions[-1].send_tool_list_changed()

    def gateway(self, rt, **options) -> StoplineGateway:
        if self.mode.startswith("legacy"):
            options["upstream_options"] = {"mode": "legacy"}
        return StoplineGateway(self.server, rt, workflow="mcp-files", approvers=DIRECTORY, **options)


@pytest.fixture
def rt(tmp_path):
    with Runtime.open(str(POLICY), ledger=f"sqlite:///{tmp_path / 'l.db'}") as r:
        yield r


@pytest.fixture
def told(monkeypatch) -> list:
    """The changes the gateway's upstream sessions were told of (to wait for one)."""
    seen: list = []
    plain = mcp_adapter._UpstreamTools.changed

    def spy(self):
        plain(self)
        seen.append(self.generation)

    monkeypatch.setattr(mcp_adapter._UpstreamTools, "changed", spy)
    return seen


async def until(seen: list) -> None:
    with anyio.fail_after(60):  # (a bound on the wait, not a timing assertion)
        while not seen:
            await anyio.sleep(0.01)


def outcome(r) -> str:
    return (r.meta or {})[GATE_META]["outcome"]


@pytest.mark.parametrize("mode", ["watched", "legacy-watched"])
def test_mcp_the_gateway_lists_the_upstream_tools_once_for_many_calls(rt, mode):
    """Before: one ``tools/list`` round trip to the upstream per ``tools/call`` (101 for the
    client's listing and 100 calls; now 1)."""
    up = Upstream(mode)

    async def go():
        async with Client(up.gateway(rt).server) as c:
            assert [t.name for t in (await c.list_tools()).tools] == ["read_file"]  # (the client's own: live)
            for i in range(100):
                r = await c.call_tool("read_file", {"path": f"f{i}.txt"})
                assert not r.is_error and outcome(r) == "ran"
    anyio.run(go)
    assert len(up.ran) == 100
    assert up.lists == 1


@pytest.mark.parametrize("mode", ["watched", "legacy-watched"])
def test_mcp_a_tool_the_upstream_says_changed_is_judged_by_its_new_annotations(rt, mode, told):
    up = Upstream(mode)

    async def go():
        async with Client(up.gateway(rt).server) as c:
            await c.list_tools()
            r = await c.call_tool("read_file", {"path": "a.txt"})
            assert not r.is_error and outcome(r) == "ran"  # read-only: allowed
            told.clear()
            up.retag()
            await up.tell()
            await until(told)
            r = await c.call_tool("read_file", {"path": "b.txt"})
            # destructive now: the new annotations decide (a stale listing would have run it)
            assert r.is_error and outcome(r) == "deny"
    anyio.run(go)
    assert up.ran == ["a.txt"] and up.lists == 2
    actions = [e.body["action"] for e in rt.ledger.entries(kind="decision")]
    assert [(a["reversibility"], a["hints"]["read_only"]) for a in actions] == [("full", True),
                                                                                ("irreversible", False)]


@pytest.mark.parametrize("mode", ["unwatched", "legacy", "relist"])
def test_mcp_an_upstream_that_does_not_tell_of_changes_is_listed_at_each_call(rt, mode):
    """No ``listChanged``: nothing would tell the gateway of a change, so it lists at each
    call, and a change is seen by the next call with no notification at all. ``relist=True``:
    the same, for an upstream that says it tells but may not."""
    up = Upstream("watched" if mode == "relist" else mode)

    async def go():
        async with Client(up.gateway(rt, relist=mode == "relist").server) as c:
            await c.list_tools()
            for path in ("a.txt", "b.txt", "c.txt"):
                assert outcome(await c.call_tool("read_file", {"path": path})) == "ran"
            up.retag()  # told to nobody
            r = await c.call_tool("read_file", {"path": "d.txt"})
            assert r.is_error and outcome(r) == "deny"
    anyio.run(go)
    assert up.ran == ["a.txt", "b.txt", "c.txt"] and up.lists == 5  # the client's listing, and each call


def test_mcp_a_call_naming_a_tool_the_listing_lacks_lists_once_more(rt):
    up = Upstream("watched")

    def stat_file(path: str) -> str:
        up.ran.append(f"stat {path}")
        return "0"

    async def go():
        async with Client(up.gateway(rt).server) as c:
            await c.list_tools()
            assert outcome(await c.call_tool("read_file", {"path": "a.txt"})) == "ran"
            assert up.lists == 1
            up.server.add_tool(stat_file, annotations=READ_ONLY)  # added without telling
            r = await c.call_tool("stat_file", {"path": "a.txt"})
            assert up.lists == 2  # one more listing: found, and gated (the policy has no such action)
            assert r.is_error and outcome(r) == "deny" and r.meta[GATE_META]["reversibility"] == "full"
            r = await c.call_tool("no_such_tool", {})
            assert r.is_error and up.lists == 3  # one more listing, then the usual answer
            assert outcome(await c.call_tool("read_file", {"path": "b.txt"})) == "ran"
            assert up.lists == 3
            # the client's own tools/list is live (and the gateway keeps what it got)
            assert {t.name for t in (await c.list_tools()).tools} == {"read_file", "stat_file"}
            assert up.lists == 4
    anyio.run(go)
    assert up.ran == ["a.txt", "b.txt"]
    assert [e.body["action"]["type"] for e in rt.ledger.entries(kind="decision")] == \
        ["read_file", "stat_file", "no_such_tool", "read_file"]


# ------------------------------------------------------------------ the listing itself
def tool(annotations: ToolAnnotations) -> Tool:
    return Tool(name="read_file", input_schema={"type": "object"}, annotations=annotations)


class FakeUpstream:
    """A session with an upstream whose tools change while the gateway lists them."""

    def __init__(self, tools, answers: list) -> None:
        self.tools, self.answers, self.lists = tools, answers, 0

    async def list_tools(self, *, cursor=None, cache_mode="use") -> ListToolsResult:
        self.lists += 1
        answer, change = self.answers.pop(0)
        if change:
            self.tools.changed()  # the notification arrives while this listing is in flight
        return ListToolsResult(tools=[answer])


def _Tools():  # noqa: N802 - (read when a test runs)
    return mcp_adapter._UpstreamTools()


def test_mcp_a_listing_a_change_arrived_during_is_made_again_and_not_kept():
    async def go():
        tools = _Tools()
        tools.watched = True
        tools.client = up = FakeUpstream(tools, [(tool(READ_ONLY), True), (tool(DESTRUCTIVE), False)])
        [t] = await tools.get()
        assert t.annotations.destructive_hint and up.lists == 2  # listed again: the change is in
        [t] = await tools.get()  # kept: no change told of since
        assert t.annotations.destructive_hint and up.lists == 2
        tools.changed()
        up.answers.append((tool(READ_ONLY), False))
        [t] = await tools.get()
        assert t.annotations.read_only_hint and up.lists == 3
    anyio.run(go)


class FakeListen:
    """A ``subscriptions/listen`` stream that delivers one change, then is lost (``lose``)."""

    protocol_version = "2026-07-28"

    class server_capabilities:  # noqa: N801
        class tools:  # noqa: N801
            list_changed = True

    class honored:  # noqa: N801
        tools_list_changed = True

    def __init__(self) -> None:
        self.events, self.lose = [ToolsListChanged()], anyio.Event()

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.events:
            return self.events.pop()
        await self.lose.wait()
        raise RuntimeError("subscription lost")

    def listen(self, **_):
        from contextlib import asynccontextmanager

        @asynccontextmanager
        async def cm():
            yield self
        return cm()


def test_mcp_a_lost_change_subscription_falls_back_to_listing_at_each_call(caplog):
    """Lost: listed at each call until the subscription is made again (s26: made again after
    a backoff, ``tests/test_s26_mcp_resubscribe.py``; here the first wait is not awaited)."""
    async def go():
        tools, up = _Tools(), FakeListen()
        async with anyio.create_task_group() as tg:
            await tg.start(tools.watch, up)
            assert tools.watched
            up.lose.set()
            with anyio.fail_after(60):  # (a bound on the wait, not a timing assertion)
                while tools.watched:
                    await anyio.sleep(0.01)
            assert not tools.kept and tools.generation == 2  # the change, then the loss
            tg.cancel_scope.cancel()
    anyio.run(go)
    assert "listed at each call until it is made again" in caplog.text
