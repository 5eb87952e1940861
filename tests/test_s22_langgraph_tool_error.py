"""LangGraph records a tool's failure as the other adapters do (session 23: the execution
recorded ``outcome="failed"`` with its ``error``; before, ``tool_error`` in the receipt),
and a re-run of the failed call is told it failed, as an error
``ToolMessage`` (it said "already ran" with status ``success``)."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("langgraph")
from test_integrations_langgraph import (  # noqa: E402
    executions,
    failing_refund,
    graph_with,
    refund,
    rt,  # noqa: F401  (fixture)
    tool_messages,
)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_failed_tool_is_recorded_with_its_error_and_a_rerun_says_it_failed(rt, mode):  # noqa: F811
    ran: list = []
    sync_tool, async_tool = failing_refund(ran)
    g = graph_with(rt, [sync_tool if mode == "sync" else async_tool], [[refund(20, "c1")]])
    cfg = {"configurable": {"thread_id": "t"}}
    with pytest.raises(ConnectionError):
        if mode == "sync":
            g.invoke({"messages": [("user", "go")]}, cfg)
        else:
            asyncio.run(g.ainvoke({"messages": [("user", "go")]}, cfg))
    [x] = executions(rt)
    # (session 23: recorded failed in the execution itself, no longer a `tool_error` receipt field)
    assert x.body["outcome"] == "failed"
    assert x.body["error"] == "ConnectionError: payment provider timed out after charging"
    state = g.invoke(None, cfg) if mode == "sync" else asyncio.run(g.ainvoke(None, cfg))
    m = tool_messages(state)["c1"]
    assert ran == [20] and m.status == "error"
    assert "already ran" in m.content and "and failed (ConnectionError: payment provider timed out" in m.content
