"""Two LangGraph workers (two processes, each with its own Runtime on one shared ledger,
SQLite and PostgreSQL) resume the same waiting interrupt of a tool that interrupted itself
under an approval: the claim that lets the resumed node continue comes from the ledger, so
exactly one worker continues the tool and the other is refused ("the approval is already
being used", or "already ran" once the first has recorded its execution), whatever each
process holds in memory.

The workers share the checkpoint as two workers of a LangGraph server share a checkpointer:
each loads the same saved checkpoint, so both resume the same task of the same step. Each
waits at a barrier at its first ledger write of the resume (the claim): both have read the
ledger before either claims, the interleaving in which a claim checked in process memory
lets both continue.

The same for an *allowed* call: a tool the policy allows that interrupts itself (asks for
a code) is claimed before it runs, like an approved one, so of two workers resuming its
wait exactly one continues it; the other is refused ("this call is already being run
under its decision", or "already ran" once the first has recorded its execution)."""

from __future__ import annotations

import multiprocessing as mp
import traceback

import pytest

pytest.importorskip("langgraph.prebuilt")

from ledger_fixtures import ledger_url  # noqa: E402,F401  (the fixture: SQLite and PostgreSQL)

from policy_engine import Runtime  # noqa: E402
from policy_engine.ledger import IdempotencyConflict, NewEntry  # noqa: E402

from test_integrations_langgraph import (  # noqa: E402  # isort: skip
    POLICY,
    Shop,
    confirming_refund,
    graph_for,
    graph_with,
    refund,
    tool_messages,
)

THREAD = {"configurable": {"thread_id": "t"}}
REFUSAL = "the approval is already being used"
ALLOWED_REFUSAL = "this call is already being run under its decision"


def _saved(graph) -> dict:
    """The graph's in-memory checkpointer as plain data (what a shared checkpointer holds)."""
    saver = graph.checkpointer
    return {"storage": {t: {ns: dict(d) for ns, d in by_ns.items()} for t, by_ns in saver.storage.items()},
            "writes": dict(saver.writes), "blobs": dict(saver.blobs)}


def _load(graph, saved: dict) -> None:
    saver = graph.checkpointer
    for t, by_ns in saved["storage"].items():
        for ns, d in by_ns.items():
            saver.storage[t][ns].update(d)
    saver.writes.update(saved["writes"])
    saver.blobs.update(saved["blobs"])


def asking_refund(log: list):
    """A refund (allowed when small) that asks the operator for a confirmation code first."""
    from langchain_core.tools import tool
    from langgraph.types import interrupt

    @tool
    def refund_order(order_id: str, amount: int) -> dict:
        """Refund an order."""
        log.append(("start", amount))
        code = interrupt({"ask": "confirmation code", "amount": amount})
        log.append(("charged", amount, code))
        return {"refund_id": f"rf-{amount}", "order_id": order_id, "amount": amount}

    return refund_order


def _worker(url: str, saved: dict, barrier, out, allowed: bool = False) -> None:
    """One worker: its own Runtime and graph, the shared checkpoint, then the resume."""
    from langgraph.types import Command

    try:
        log: list = []
        tool_ = asking_refund(log) if allowed else confirming_refund(log)[0]
        with Runtime.open(str(POLICY), ledger=url) as rt:
            g = graph_with(rt, [tool_], [[refund(20 if allowed else 400, "c1")]])
            _load(g, saved)
            first = [True]
            transact = rt.ledger.transact

            def at_the_barrier(*a, **k):  # the resume's first ledger write: its claim
                if first[0]:
                    first[0] = False
                    barrier.wait(timeout=120)
                return transact(*a, **k)

            rt.ledger.transact = at_the_barrier
            state = g.invoke(Command(resume="7311"), THREAD)
            msg = next(m for m in state["messages"] if m.type == "tool" and m.tool_call_id == "c1")
            out.put(("ok", [e for e in log if e[0] == "charged"], msg.status, str(msg.content)))
    except BaseException:  # noqa: BLE001 - reported to the parent
        out.put(("error", traceback.format_exc()))


def test_two_processes_resuming_the_same_waiting_tool_continue_it_once(ledger_url, tmp_path):  # noqa: F811
    log: list = []
    tool_, _ = confirming_refund(log)
    with Runtime.open(str(POLICY), ledger=ledger_url) as rt:
        g = graph_with(rt, [tool_], [[refund(400, "c1")]])
        from langgraph.types import Command

        from policy_engine.integrations.langgraph import Approval

        request = g.invoke({"messages": [("user", "go")]}, THREAD)["__interrupt__"][0].value
        [ask] = g.invoke(Command(resume=Approval.for_request(request, "fin").to_dict()), THREAD)["__interrupt__"]
        assert ask.value["ask"] == "confirmation code" and rt.ledger.entries(kind="execution") == []
        saved = _saved(g)
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(ledger_url, saved, barrier, out), daemon=True) for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert all(r[0] == "ok" for r in results), "\n".join(r[1] for r in results if r[0] == "error")
    charged = [c for r in results for c in r[1]]
    assert charged == [("charged", 400, "7311")], f"the waiting tool was continued {len(charged)} times"
    # the other is refused: while the first runs the tool, "already being used"; once its
    # execution is recorded (the second worker waited on the ledger's lock that long), "already ran"
    [ran] = [r for r in results if r[1]]
    [refused] = [r for r in results if not r[1]]
    assert ran[2] == "success" and '"refund_id": "rf-400"' in ran[3] and refused[3].startswith("Stopline"), results
    assert REFUSAL in refused[3] or "already ran for this call" in refused[3], refused[3]
    with Runtime.open(str(POLICY), ledger=ledger_url) as rt:
        [x] = rt.ledger.entries(kind="execution")
        assert x.body["decision"] == request["decision_id"] and x.body["authorized"]
        claims = [e for e in rt.ledger.entries(kind="transition", link=request["decision_id"])
                  if e.body["to"] == "claimed"]
        # taken (the tool runs), kept (it waits), taken again by the one worker that continued it
        assert [e.key for e in claims] == [f"stopline:claim:{request['decision_id']}:{n}" for n in (1, 2, 3)]
        assert len({e.body["principal"] for e in claims}) == 1
        # a claimant that skipped the check and wrote the same turn anyway: the ledger's unique key refuses it
        late = {**claims[-1].body, "nonce": "another-claimant"}
        with pytest.raises(IdempotencyConflict):
            rt.transact(lambda c: [NewEntry("transition", late, workflow="shop-support",
                                            links=[request["decision_id"]], key=claims[-1].key)])
        assert rt.ledger.verify().ok


def test_two_processes_resuming_the_same_waiting_allowed_tool_run_it_once(ledger_url, tmp_path):  # noqa: F811
    """An allowed call is claimed right before it runs, like an approved one: of two workers
    resuming its tool's own interrupt from the same checkpoint, exactly one runs the tool."""
    log: list = []
    with Runtime.open(str(POLICY), ledger=ledger_url) as rt:
        g = graph_with(rt, [asking_refund(log)], [[refund(20, "c1")]])
        [ask] = g.invoke({"messages": [("user", "go")]}, THREAD)["__interrupt__"]
        assert ask.value["ask"] == "confirmation code" and rt.ledger.entries(kind="execution") == []
        [decision] = rt.ledger.entries(kind="decision")
        assert decision.body["decision"]["effect"] == "allow"
        assert rt.authorization(decision.id).status == "allowed"
        saved = _saved(g)
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(ledger_url, saved, barrier, out, True), daemon=True)
             for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert all(r[0] == "ok" for r in results), "\n".join(r[1] for r in results if r[0] == "error")
    charged = [c for r in results for c in r[1]]
    assert charged == [("charged", 20, "7311")], f"the allowed tool was run {len(charged)} times"
    [ran] = [r for r in results if r[1]]
    [refused] = [r for r in results if not r[1]]
    assert ran[2] == "success" and '"refund_id": "rf-20"' in ran[3] and refused[3].startswith("Stopline"), results
    assert ALLOWED_REFUSAL in refused[3] or "already ran for this call" in refused[3], refused[3]
    with Runtime.open(str(POLICY), ledger=ledger_url) as rt:
        [x] = rt.ledger.entries(kind="execution")
        assert x.body["decision"] == decision.id and x.body["authorized"]
        claims = [e for e in rt.ledger.entries(kind="transition", link=decision.id) if e.body["to"] == "claimed"]
        # taken (the tool runs), kept (it waits), taken again by the one worker that continued it
        assert [e.key for e in claims] == [f"stopline:claim:{decision.id}:{n}" for n in (1, 2, 3)]
        assert len({e.body["principal"] for e in claims}) == 1
        assert rt.ledger.verify().ok


def test_a_decision_outdated_by_a_stop_is_not_claimed_after_the_resume(tmp_path):
    """As ``ToolGate.take``: an allowed (or approved) call decided, then its workflow stopped
    (by another worker, say) and resumed before it ran: the claim is refused, the decision
    is never used (gate the call again, a new call)."""
    from langgraph.types import Command

    from policy_engine.integrations.langgraph import Approval

    shop = Shop()
    with Runtime.open(str(POLICY), ledger=f"sqlite:///{tmp_path / 'l.db'}") as rt:
        g = graph_for(rt, shop, [[refund(400, "c1"), refund(20, "c2")]])  # one task: c2 waits for c1's approval
        request = g.invoke({"messages": [("user", "go")]}, THREAD)["__interrupt__"][0].value
        assert rt.gate({"workflow": "shop-support", "type": "delete_customers", "count": 500}).decision.effect == "stop"
        assert rt.resume("shop-support", evidence={"incident_reviewed": True}, principal="ops").allowed
        state = g.invoke(Command(resume=Approval.for_request(request, "fin").to_dict()), THREAD)
        msgs = tool_messages(state)
        assert shop.refunds == [] and rt.ledger.entries(kind="execution") == []
        for cid in ("c1", "c2"):
            assert msgs[cid].status == "error"
            assert "stopped by `mass_deletion` after this call's decision" in msgs[cid].content, msgs[cid].content
