"""An MCP tool call's arguments are bounded at the gate by the engine's input limits (taken
as one input): beyond them the call is refused with a tool result saying so, nothing gated,
nothing recorded, nothing run. Before, arguments of any size were gated and recorded whole
in the ledger (the engine checks only the fields its conditions read), and an integer too
long to write as JSON, or a ``requestState`` nested too deep, was an "Internal server error"
with a traceback in the server's log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

import anyio  # noqa: E402
from mcp import Client, MCPError  # noqa: E402
from mcp.server.mcpserver import MCPServer  # noqa: E402
from mcp_types import INVALID_PARAMS, ToolAnnotations  # noqa: E402

from policy_engine import Runtime  # noqa: E402
from policy_engine.integrations.mcp import GATE_META, STATE_PREFIX, StoplineGateway, protect  # noqa: E402
from policy_engine.limits import MAX_INPUT_CHARS, MAX_INPUT_DEPTH, MAX_INPUT_ITEMS  # noqa: E402

POLICY = Path(__file__).resolve().parent.parent / "examples" / "integrations"
DIRECTORY = {"ops": ["operator"]}


def nested(levels: int) -> list:
    v: list = []
    for _ in range(levels - 1):
        v = [v]
    return v


OVERSIZED = {
    "chars": ({"text": "x" * (MAX_INPUT_CHARS + 1)}, f"more than {MAX_INPUT_CHARS} characters"),
    "items": ({"tags": ["t"] * (MAX_INPUT_ITEMS + 1)}, f"more than {MAX_INPUT_ITEMS} values"),
    "depth": ({"tags": nested(MAX_INPUT_DEPTH + 1)}, f"more than {MAX_INPUT_DEPTH} levels"),
    "integer": ({"tags": [10**5000]}, "too many digits"),
}


@pytest.fixture
def rt(tmp_path):
    with Runtime.open(str(POLICY), ledger=f"sqlite:///{tmp_path / 'l.db'}") as r:
        yield r


def served(rt, way: str, ran: list) -> tuple[Any, Any]:
    srv = MCPServer("files")

    @srv.tool(annotations=ToolAnnotations(destructive_hint=True))
    def write_file(path: str, text: str = "", tags: list[Any] | None = None) -> dict:
        ran.append(path)
        return {"path": path, "bytes": len(text)}

    if way == "gateway":
        gw = StoplineGateway(srv, rt, workflow="mcp-files", approvers=DIRECTORY)
        return gw.server, gw.gate
    return srv, protect(srv, rt, workflow="mcp-files", approvers=DIRECTORY)


@pytest.mark.parametrize("way", ["gateway", "middleware"])
@pytest.mark.parametrize("kind", sorted(OVERSIZED))
def test_mcp_arguments_beyond_the_input_limits_are_refused_unrecorded(rt, way, kind):
    """Before: gated and recorded whole (a 4 MB ledger entry; the policy's `allow` ran the
    write), or for the integer an "Internal server error"."""
    args, why = OVERSIZED[kind]
    ran: list = []
    server, gate = served(rt, way, ran)

    async def go():
        async with Client(server) as c:
            big = await c.call_tool("write_file", {"path": "n.txt", **args})
            small = await c.call_tool("write_file", {"path": "m.txt", "text": "hi", "tags": ["t"] * 1000})
            return big, small
    big, small = anyio.run(go)
    assert big.is_error and (big.meta or {})[GATE_META]["outcome"] == "refused"
    text = big.content[0].text
    assert text.startswith("Stopline refused `write_file`: its arguments are beyond the gate's input limits")
    assert why in text and "not run, not recorded" in text and "Traceback" not in text
    assert not small.is_error and small.meta[GATE_META]["outcome"] == "ran"  # within the limits: as ever
    assert ran == ["m.txt"]
    [d] = rt.ledger.entries(kind="decision")
    assert d.body["action"]["path"] == "m.txt"
    assert [e["outcome"] for e in gate.log] == ["refused", "ran"]


@pytest.mark.parametrize("way", ["gateway", "middleware"])
def test_mcp_a_request_state_nested_too_deep_is_an_invalid_params_error_not_an_internal_one(rt, way):
    ran: list = []
    server, _ = served(rt, way, ran)

    async def go():
        async with Client(server) as c:
            with pytest.raises(MCPError) as e:
                await c.session.call_tool("write_file", {"path": "n.txt"}, request_state=STATE_PREFIX + "[" * 100_000,
                                          allow_input_required=True)
            return e.value
    err = anyio.run(go)
    # before, through the gateway: "Internal server error" (-32603), a traceback in its log; behind the
    # middleware the server's own check of its requestState answers first
    assert err.error.code == INVALID_PARAMS
    assert ("not one the gate gave" if way == "gateway" else "requestState") in err.error.message
    assert ran == [] and rt.ledger.entries(kind="decision") == []


def test_mcp_a_huge_meta_is_neither_gated_nor_recorded(rt):
    """The client's ``_meta`` is not part of the action: only its call id is read (at most
    200 characters); the rest goes on to the upstream and never into the ledger."""
    ran: list = []
    server, _ = served(rt, "gateway", ran)

    async def go():
        async with Client(server) as c:
            return await c.call_tool("write_file", {"path": "n.txt", "text": "x"}, meta={"blob": "m" * 5_000_000})
    r = anyio.run(go)
    assert not r.is_error and ran == ["n.txt"]
    [d] = rt.ledger.entries(kind="decision")
    assert "blob" not in str(d.body)


def test_oversize_counts_as_the_engine_does_and_stops_early():
    from policy_engine.integrations.mcp import oversize

    assert oversize({"a": "x" * (MAX_INPUT_CHARS - 1)}) is None  # keys count too: 1 + (limit - 1)
    assert "characters" in oversize({"ab": "x" * (MAX_INPUT_CHARS - 1)})
    assert oversize({"a": [1] * (MAX_INPUT_ITEMS - 1)}) is None  # the entry and the list items
    assert "values" in oversize({"a": [1] * MAX_INPUT_ITEMS})
    assert oversize({"a": nested(MAX_INPUT_DEPTH - 1)}) is None
    assert "levels" in oversize({"a": nested(MAX_INPUT_DEPTH)})
    assert oversize({"n": 2**63 - 1, "m": -(2**63), "big": 10**4000, "f": 1.5, "b": True, "z": None}) is None
