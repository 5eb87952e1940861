"""The MCP gateway's two sides of a tool list change (``pip install 'stopline[mcp]'``).

``_UpstreamTools``: the upstream's tools as the gateway's session with it lists them, kept
between calls while the upstream tells of every change. ``_Downstream``: the gateway's own
clients of that upstream session, each told of every change the upstream tells of, by the
SDK's own means: a ``subscriptions/listen`` stream (``ListenHandler`` over an
``InMemorySubscriptionBus``) for an MCP 2026-07-28 client, ``send_tool_list_changed()`` on
the session of a client of the initialize handshake. ``StoplineGateway``
(``policy_engine.integrations.mcp``) holds one of each per upstream session: per connection
on stdio or in process, one for every client on streamable HTTP (its lifespan is shared).
A client is kept exactly as long as the SDK keeps its connection (``Connection.exit_stack``,
unwound however the connection ends); a lost upstream subscription is made again.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from typing import Any

from .common import require_extra

require_extra("mcp", "mcp", "mcp")

import anyio  # noqa: E402
from mcp import MCPError  # noqa: E402
from mcp.server.connection import Connection  # noqa: E402
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ToolsListChanged  # noqa: E402
from mcp_types import (  # noqa: E402
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    Tool,
    ToolListChangedNotification,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS  # noqa: E402

MAX_PAGES = 100
MAX_RELISTS = 4  #: listings of the upstream's tools one call makes while change notifications keep arriving
LISTEN_ACK_SECONDS = 10.0  #: how long the gateway waits for the upstream to acknowledge its change subscription
TELL_SECONDS = 10.0  #: how long the gateway waits for one client to take a change notification
RESUBSCRIBE_SECONDS = (1.0, 60.0)  #: the first and the longest wait before subscribing again (doubling between)
_REFUSALS = frozenset({METHOD_NOT_FOUND, INVALID_REQUEST, INVALID_PARAMS})  #: the upstream's final word on a listen
_log = logging.getLogger("policy_engine.integrations.mcp")


async def _no_relay(context: Any, params: Any) -> Any:
    """The gateway's answer to an upstream's mid-call elicitation (protocols before
    2026-07-28): an error. On a 2026 connection the upstream's input requests are not sent
    to the gateway: they come back as an ``input_required`` result, which the gateway
    passes to its client (gated: the next round continues the same call)."""
    from mcp_types import ErrorData

    return ErrorData(code=INVALID_PARAMS, message="Stopline's gateway relays input requests as input_required "
                                                  "results only (MCP 2026-07-28 and later)")


class _Downstream:
    """The gateway's clients of one upstream session, told of each change the upstream tells of.

    A 2026-07-28 client listens (``subscriptions/listen``, served by ``listen``: the SDK's
    ``ListenHandler`` on this session's own bus); a client of the handshake is told on its
    session (``send_tool_list_changed``) once it ``join``s (``notifications/initialized``:
    every client that could have listed tools), until its connection ends: ``join`` puts
    its leaving on the connection's ``exit_stack``, which the SDK unwinds however the
    connection ends (the client closes it, a streamable-HTTP ``DELETE``, the idle timeout,
    a crash; a stateless HTTP request's, at its end). Changes are coalesced (a
    notification says "list again", not what changed) and sent by ``run``, off the upstream
    session's receive loop, each client bounded by ``TELL_SECONDS``: a slow or gone client
    delays no one and never the gateway's calls. A change told while no client is
    connected reaches no one."""

    def __init__(self) -> None:
        self.bus = InMemorySubscriptionBus()
        self.listen = ListenHandler(self.bus)
        self.sessions: dict[Any, Any] = {}  #: the handshake clients: their connection -> a session to tell them on
        self.told = 0  #: rounds of notifications sent (each for one or more changes)
        self.ended = False  #: the upstream no longer tells of changes: the listen streams are ended
        self._wake = anyio.Event()

    def join(self, session: Any) -> None:
        """Tell ``session``'s client of each change from now on, until its connection ends."""
        connection = getattr(session, "_connection", None)  # (``ServerSession``'s; its context has no other way to it)
        if not isinstance(connection, Connection):  # an SDK that hides it: kept until a send to it fails
            self.sessions.setdefault(session, session)
            return
        if connection not in self.sessions:  # (one client, one entry: a repeated ``initialized`` changes nothing)
            self.sessions[connection] = session
            connection.exit_stack.callback(self.sessions.pop, connection, None)

    def changed(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Send each change on (the lifespan's task: it ends with the upstream session)."""
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()  # a change from here on is another round
            ended = self.ended
            await self.bus.publish(ToolsListChanged())
            gone: list[Any] = []
            async with anyio.create_task_group() as tg:
                for key, session in list(self.sessions.items()):
                    tg.start_soon(self._tell, key, session, gone)
            for key in gone:
                self.sessions.pop(key, None)
            if ended:  # after the last change is delivered: the streams end (a client listening again is told no
                self.listen.close()  # tool changes are honored, as the gateway's capabilities now say)
                self.sessions.clear()  # (nothing more will be told them)
            self.told += 1

    @staticmethod
    async def _tell(key: Any, session: Any, gone: list) -> None:
        with anyio.move_on_after(TELL_SECONDS):
            try:
                await session.send_tool_list_changed()
            except Exception:  # noqa: BLE001 - its connection is closed: nothing more to tell it
                gone.append(key)


class _UpstreamTools:
    """The upstream's tools as the gateway's session with it lists them (one per session).

    Kept between calls only while the upstream tells of every change (``watched``): it
    declares ``tools.listChanged`` and, on MCP 2026-07-28, acknowledged the gateway's
    ``subscriptions/listen`` for it. Each ``notifications/tools/list_changed`` (or a
    transport fault, or the end of that subscription) drops the list, so the next call is
    judged under a new listing; a listing a change came in during is made again. Otherwise
    (no ``listChanged``, or ``keep=False``: the gateway's ``relist``) every call lists the
    tools, as the gate reads them. Every change told goes on to the gateway's clients
    (``downstream``) while the gateway promises them changes (``promised``): from the
    upstream's first acknowledgment until it refuses a subscription outright. A
    subscription lost (ended, dropped, a transport fault) is made again, after
    ``RESUBSCRIBE_SECONDS`` (doubling); meanwhile the tools are listed at each call, and
    the clients are told at the loss and again once subscribed (a change in between
    was told to no one)."""

    def __init__(self, keep: bool = True) -> None:
        self.client: Any = None
        self.watched = False
        self.promised = False  #: the gateway's clients are told of changes (``tools.listChanged`` declared to them)
        self.keep = keep
        self.tools: list[Tool] | None = None
        self.generation = 0  #: changes the upstream told of
        self.subscriptions = 0  #: subscriptions the upstream acknowledged (a lost one is made again)
        self.downstream = _Downstream()
        self._lock = anyio.Lock()
        self._lost = False  #: a subscription failed or was lost since the last one acknowledged

    @property
    def kept(self) -> bool:
        """The listing is kept between calls (the upstream tells of changes, ``keep``)."""
        return self.watched and self.keep

    def changed(self) -> None:
        self.generation += 1
        self.tools = None
        if self.promised:  # (the gateway's clients were promised it)
            self.downstream.changed()

    async def on_message(self, message: Any) -> None:
        """The upstream session's ``message_handler``: its notifications and transport faults."""
        if isinstance(message, ToolListChangedNotification | Exception):  # (a fault may have cost a notification)
            self.changed()

    async def watch(self, client: Any, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Learn whether the upstream tells of changes (``watched``), started then; on MCP
        2026-07-28, hold its ``subscriptions/listen`` stream open, made again when lost
        until the upstream refuses it (``_REFUSALS``, or acknowledged without tool changes)."""
        tools = client.server_capabilities.tools
        if tools is None or tools.list_changed is not True:
            return task_status.started()
        if client.protocol_version not in MODERN_PROTOCOL_VERSIONS:  # the notifications come unasked
            self.watched = self.promised = True
            return task_status.started()
        first, delay, failing = True, RESUBSCRIBE_SECONDS[0], False
        while True:
            began = anyio.current_time()
            held, why, final = await self._subscribe(client, task_status if first else anyio.TASK_STATUS_IGNORED)
            if first and not held:
                task_status.started()
            first = False
            if held:  # it was lost: the tools are listed at each call until subscribed again
                self.watched, failing = False, False
                self.changed()  # (a change may have been lost with it: the clients list again)
                if anyio.current_time() - began >= RESUBSCRIBE_SECONDS[1]:
                    delay = RESUBSCRIBE_SECONDS[0]  # (held a while: not an upstream that drops each one at once)
            if final:
                break
            _log.log(logging.DEBUG if failing else logging.WARNING, "Stopline: the MCP upstream's tool change "
                     "subscription: %s; its tools are listed at each call until it is made again (in %g s)", why, delay)
            failing, self._lost = not held, True  # (one warning for a run of failed attempts)
            await anyio.sleep(delay)
            delay = min(delay * 2, RESUBSCRIBE_SECONDS[1])
        _log.warning("Stopline: the MCP upstream's tool change subscription: %s; its tools are listed at each "
                     "call from now on", why)
        self.downstream.ended = self.promised  # (the gateway's clients are told once more; their streams end)
        self.changed()
        self.watched = self.promised = False

    async def _subscribe(self, client: Any, task_status: Any) -> tuple[bool, str, bool]:
        """One subscription, held while it lasts: (it was acknowledged, why it ended, it is final)."""
        held = False
        try:
            async with AsyncExitStack() as stack:
                sub = None
                with anyio.move_on_after(LISTEN_ACK_SECONDS):
                    sub = await stack.enter_async_context(client.listen(tools_list_changed=True))
                if sub is None:
                    return False, f"not acknowledged within {LISTEN_ACK_SECONDS:g} s", False
                if sub.honored.tools_list_changed is not True:
                    return False, "acknowledged without tool changes", True
                held, again = True, self.promised
                self.watched = self.promised = True
                self.subscriptions += 1
                if self._lost:
                    self._lost = False
                    _log.warning("Stopline: the MCP upstream's tool change subscription is made again; its tools are "
                                 "kept between calls again")
                task_status.started()
                if again:  # subscribed again after a loss: what changed in between was told to no one
                    self.changed()
                async for _event in sub:
                    self.changed()
                return True, "it ended", False
        except MCPError as e:  # refused (final), or the connection failed (made again)
            return held, f"{type(e).__name__}: {e}", not held and e.error.code in _REFUSALS
        except Exception as e:  # noqa: BLE001 - dropped, or a transport fault: made again
            return held, f"{type(e).__name__}: {e}", False

    async def get(self, *, refresh: bool = False) -> list[Tool]:
        """The tools, as the upstream lists them now or as it last told (``refresh``: list)."""
        if not self.kept:
            return await self._fetch()
        async with self._lock:
            if self.tools is not None and not refresh:
                return self.tools
            for _ in range(MAX_RELISTS):
                seen = self.generation
                tools = await self._fetch()
                if seen == self.generation:  # no change told of while listing: as the upstream lists now
                    self.tools = tools if self.kept else None
                    break
            return tools

    async def _fetch(self) -> list[Tool]:
        tools, cursor = [], None
        for _ in range(MAX_PAGES):
            page = await self.client.list_tools(cursor=cursor, cache_mode="refresh")
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        return tools
