"""Two MCP gateway processes, or two OpenAI Agents SDK workers, each with its own Runtime on
one shared ledger (SQLite and PostgreSQL): what runs once runs once across processes, because
the ledger decides (a keyed, conditional ``claimed`` transition appended under the ledger's
append lock), not a lock in one process's memory.

Each scenario starts two processes (``forkserver``: nothing inherited but the arguments) and lines
them up at the interleaving that breaks a check made in process memory: a barrier at the
gate's first write (both have read that no decision exists) and at the first conditional
append (both have read the decision's state before either claims it), or an event that holds
one process between its check and its claim while the other records a deny or a stop, or
holds one tool mid-run while the other process retries the call.

Scenarios (each on SQLite and PostgreSQL):

- MCP, an allowed call with a client call id sent to both at once: it runs once;
- MCP, the same arguments without a call id sent to both at once: two calls, each run once
  under its own decision and recorded (never one decision used by two runs, one recorded);
- MCP / Agents, an approved call retried on both at once (with and without a call id; the
  SDK's saved run state resumed by two workers): it runs once, the approval counts once;
- MCP / Agents, an approved call retried on the other process while the first runs: refused;
- MCP / Agents, an allowed call replayed on the other process while the first runs: refused,
  and after it ran: "already ran";
- MCP / Agents, a deny or a stop recorded by the other process after this one checked the
  decision and before it ran the tool: the tool does not run.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import multiprocessing as mp
import os
import traceback
from pathlib import Path

import pytest
from ledger_fixtures import ledger_url  # noqa: F401  (the fixture: SQLite and PostgreSQL)

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "examples" / "integrations"
MCP_DIRECTORY = {"ops": ["operator"], "ops2": ["operator"]}
AGENT_DIRECTORY = {"fin": ["finance_approver"], "fin2": ["finance_approver"]}
WAIT = 120  # seconds a process waits for the other at a sync point before it gives up (a failure, not a hang)


# ---------------------------------------------------------------------------- sync points
def _hook(obj, attr: str, before=None, after=None) -> None:
    """Run ``before`` / ``after`` around the first call of ``obj.attr`` (an instance attribute)."""
    orig = getattr(obj, attr)
    fired = [False]

    def wrapped(*a, **k):
        first, fired[0] = not fired[0], True
        if first and before is not None:
            before()
        r = orig(*a, **k)
        if first and after is not None:
            after()
        return r

    setattr(obj, attr, wrapped)


def _wait(ev) -> None:
    if not ev.wait(WAIT):
        raise TimeoutError("the other process never reached its sync point")


def _install(rt, sync: dict) -> None:
    """The worker's sync points, on its Runtime:

    - ``gate``: a barrier before the first gate write (``Ledger.append_many``);
    - ``claim``: a barrier before the first conditional append (``Ledger.transact``: the claim
      of a run, or an execution record where nothing claims);
    - ``checked`` / ``go``: after the gate's first look at the workflow (``workflow_status``:
      the check that the call may run), signal ``checked`` and wait for ``go``."""
    led = rt.ledger
    if sync.get("gate") is not None:
        _hook(led, "append_many", before=lambda: sync["gate"].wait(WAIT))
    if sync.get("claim") is not None:
        _hook(led, "transact", before=lambda: sync["claim"].wait(WAIT))
    if sync.get("go") is not None:
        def checked() -> None:
            sync["checked"].set()
            _wait(sync["go"])
        _hook(rt, "workflow_status", after=checked)


def _release(sync: dict) -> None:
    """A worker that failed lets the other go on (it then fails the test, it does not hang)."""
    for v in sync.values():
        if hasattr(v, "abort"):
            v.abort()
        elif hasattr(v, "set"):
            v.set()


def _effect(ran: list, what: tuple, hold: dict | None) -> None:
    """What the tool does: note that it ran; with ``hold``, signal ``running`` and wait for ``release``."""
    ran.append(what)
    if hold is not None:
        hold["running"].set()
        _wait(hold["release"])


def _spawn(jobs: list[tuple]) -> dict:
    """Run ``(target, role, *args)`` jobs in spawned processes; ``{role: result}``."""
    ctx = _CTX
    out = ctx.Queue()
    procs = [ctx.Process(target=target, args=(role, *args, out), daemon=True) for target, role, *args in jobs]
    for p in procs:
        p.start()
    results = {}
    try:
        for _ in procs:
            role, status, *rest = out.get(timeout=300)
            assert status == "ok", f"{role}:\n{rest[0]}"
            results[role] = rest[0]
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():  # pragma: no cover - only after a failure
                p.kill()
    return results


_CTX = mp.get_context("forkserver")
# Imported once, by the fork server, not by every worker: the SDKs and the adapters take
# seconds to import, and each scenario starts two workers. Only installed modules: the server
# does not apply the tests' sys.path (see tests/test_ledger_concurrency.py), so each worker
# imports this module itself, cheaply, over these. A worker still inherits nothing of the
# test process: it is forked from the server, which imported modules and did nothing else.
_CTX.set_forkserver_preload(["pytest", "anyio", "mcp", "agents", "policy_engine.integrations.mcp",
                             "policy_engine.integrations.openai_agents", "policy_engine.runtime",
                             "sqlalchemy.dialects.sqlite.pysqlite", "sqlalchemy.dialects.postgresql.psycopg",
                             "psycopg"])


# ---------------------------------------------------------------------------- MCP workers
def _files(ran: list, hold: dict | None):
    """The upstream MCP server: a file store whose tools note what really ran (in this process)."""
    from mcp.server.mcpserver import MCPServer
    from mcp_types import ToolAnnotations

    srv = MCPServer("files")

    @srv.tool(annotations=ToolAnnotations(destructive_hint=True))
    def write_file(path: str, text: str) -> dict:  # the policy declares it reversible: allowed
        _effect(ran, ("write_file", path), hold)
        return {"path": path, "bytes": len(text)}

    @srv.tool(annotations=ToolAnnotations(destructive_hint=True))
    def delete_file(path: str) -> dict:  # irreversible: held for an operator's approval
        _effect(ran, ("delete_file", path), hold)
        return {"path": path, "deleted": True}

    return srv


def _mcp_call(rt, tool: str, args: dict, call_id: str | None, ran: list, hold: dict | None = None) -> dict:
    """One ``tools/call`` through a Stopline gateway (its own gate, its own memory) on ``rt``."""
    import anyio
    from mcp import Client

    from policy_engine.integrations.mcp import CALL_ID, GATE_META, StoplineGateway

    gw = StoplineGateway(_files(ran, hold), rt, workflow="mcp-files", approvers=MCP_DIRECTORY)

    async def go():
        async with Client(gw.server) as c:
            return await c.call_tool(tool, args, meta={CALL_ID: call_id} if call_id else None)
    r = anyio.run(go)
    g = (r.meta or {})[GATE_META]
    return {"outcome": g["outcome"], "decision_id": g["decision_id"], "text": r.content[0].text}


def mcp_worker(role: str, url: str, call: dict, sync: dict, out) -> None:
    """A gateway process: its Runtime on the shared ledger, one call (``call``), its sync points."""
    from policy_engine import Runtime

    try:
        ran: list = []
        with Runtime.open(str(POLICY), ledger=url) as rt:
            _install(rt, sync)
            if sync.get("start") is not None:
                _wait(sync["start"])
            hold = {"running": sync["running"], "release": sync["release"]} if call.get("hold") else None
            r = _mcp_call(rt, call["tool"], call["args"], call.get("call_id"), ran, hold)
        if sync.get("answered") is not None:
            sync["answered"].set()
        out.put((role, "ok", {**r, "ran": ran}))
    except BaseException:  # noqa: BLE001 - reported to the parent
        _release(sync)
        out.put((role, "error", traceback.format_exc()))


def ledger_worker(role: str, url: str, op: str, payload: dict, sync: dict, out) -> None:
    """Another process's reviewer or agent, straight on the Runtime: waits for ``checked``,
    then records a deny (``op="deny"``) or gates an action that fires a stop (``op="stop"``),
    then sets ``go``."""
    from policy_engine import Runtime
    from policy_engine.integrations.common import Approval, ToolGate

    try:
        with Runtime.open(str(POLICY), ledger=url) as rt:
            _wait(sync["checked"])
            if op == "deny":
                gate = ToolGate(rt, payload["workflow"], payload["approvers"])
                r = gate.approve({"decision_id": payload["decision_id"]},
                                 Approval(payload["decision_id"], payload["digest"], payload["principal"], "deny"))
                st = rt.authorization(payload["decision_id"]).status
                result = {"status": st, "message": r.message}
            else:
                g = rt.gate(payload["action"])
                result = {"effect": g.decision.effect, "status": rt.workflow_status(payload["action"]["workflow"])}
        sync["go"].set()
        out.put((role, "ok", result))
    except BaseException:  # noqa: BLE001
        _release(sync)
        out.put((role, "error", traceback.format_exc()))


# ---------------------------------------------------------------------------- Agents SDK workers
def _example():
    spec = importlib.util.spec_from_file_location("oa_example", ROOT / "examples" / "openai_agents_guardrail.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _agent(turns: list, ran: list, hold: dict | None):
    from agents import Agent, function_tool

    @function_tool
    def refund_order(order_id: str, amount: int) -> str:
        """Refund an order."""
        _effect(ran, (order_id, amount), hold)
        return json.dumps({"refund_id": f"rf-{order_id}-{amount}", "order_id": order_id, "amount": amount})

    return Agent(name="shop", instructions="x", model=_example().ScriptedModel(turns), tools=[refund_order])


def _outputs(result) -> list[str]:
    return [str(getattr(i, "output", "")) for i in result.new_items if "output" in type(i).__name__.lower()]


def agents_worker(role: str, url: str, run: dict, sync: dict, out) -> None:
    """A worker: its Runtime on the shared ledger, an agent with its scripted model, then
    ``Runner.run`` from the start (``run["turns"]``) or from a saved state (``run["state"]``)."""
    os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")
    from agents import Runner, RunState

    from policy_engine import Runtime
    from policy_engine.integrations.openai_agents import protect

    try:
        ran: list = []
        hold = {"running": sync["running"], "release": sync["release"]} if run.get("hold") else None
        agent = _agent(run.get("turns") or [], ran, hold)
        with Runtime.open(str(POLICY), ledger=url) as rt:
            protect(agent, rt, workflow="shop-support", approvers=AGENT_DIRECTORY)
            _install(rt, sync)
            if sync.get("start") is not None:
                _wait(sync["start"])

            async def go():
                if run.get("state"):
                    return await Runner.run(agent, await RunState.from_string(agent, run["state"]))
                return await Runner.run(agent, "go")
            result = asyncio.run(go())
        if sync.get("answered") is not None:
            sync["answered"].set()
        out.put((role, "ok", {"ran": ran, "outputs": _outputs(result),
                              "interruptions": len(result.interruptions)}))
    except BaseException:  # noqa: BLE001
        _release(sync)
        out.put((role, "error", traceback.format_exc()))


# ---------------------------------------------------------------------------- helpers of the parent
def _open(url):
    from policy_engine import Runtime

    return Runtime.open(str(POLICY), ledger=url)


def _executions(rt) -> list:
    return rt.ledger.entries(kind="execution")


def _claims(rt, decision_id: str) -> list:
    return [e for e in rt.ledger.entries(kind="transition", link=decision_id) if e.body["to"] == "claimed"]


def _held_mcp_call(url: str, call_id: str | None, approve: bool = True) -> dict:
    """In the parent (a third process): the delete held for approval, and an operator's approval."""
    ran: list = []
    with _open(url) as rt:
        r = _mcp_call(rt, "delete_file", {"path": "a.txt"}, call_id, ran)
        assert r["outcome"] == "approval_required" and ran == []
        d = rt.ledger.get(r["decision_id"]).body["decision"]
        if approve:
            assert rt.approve(r["decision_id"], principal="ops", roles=["operator"]).status == "approved"
    return {"decision_id": r["decision_id"], "digest": d["action_digest"]}


def _refund(cid: str, amount: int, order: str = "A-1") -> tuple:
    return ("refund_order", cid, {"order_id": order, "amount": amount})


def _held_agent_run(url: str, approve: bool = True) -> dict:
    """In the parent: a run interrupted for a $400 refund, the finance approval recorded and
    the SDK item approved; the run's state saved (what a worker resumes)."""
    os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")
    from agents import Runner

    from policy_engine.integrations.openai_agents import Approval, protect, request_for
    from policy_engine.integrations.openai_agents import approve as approve_item

    ran: list = []
    agent = _agent([[_refund("c1", 400)]], ran, None)
    with _open(url) as rt:
        gate = protect(agent, rt, workflow="shop-support", approvers=AGENT_DIRECTORY)
        result = asyncio.run(Runner.run(agent, "go"))
        [held] = result.interruptions
        req = request_for(gate, held)
        state = result.to_state()
        if approve:
            assert approve_item(gate, state, held, Approval.for_request(req, "fin")).run
        else:
            state.approve(held)  # the SDK's own flag only: the worker reaches the guardrail
    assert ran == []
    return {"decision_id": req["decision_id"], "digest": req["action_digest"], "state": state.to_string()}


def _mcp_skip() -> None:
    pytest.importorskip("mcp")


def _agents_skip() -> None:
    pytest.importorskip("agents")


# ============================================================================ MCP
def test_mcp_an_allowed_call_id_sent_to_two_gateways_at_once_runs_once(ledger_url):  # noqa: F811
    _mcp_skip()
    with _open(ledger_url):
        pass  # the ledger exists before the workers open it
    gate, claim = _CTX.Barrier(2), _CTX.Barrier(2)
    call = {"tool": "write_file", "args": {"path": "n.txt", "text": "hello"}, "call_id": "job-1"}
    r = _spawn([(mcp_worker, role, ledger_url, call, {"gate": gate, "claim": claim}) for role in ("a", "b")])
    ran = r["a"]["ran"] + r["b"]["ran"]
    assert ran == [("write_file", "n.txt")], f"the allowed call ran {len(ran)} times: {r}"
    [winner] = [x for x in r.values() if x["ran"]]
    [loser] = [x for x in r.values() if not x["ran"]]
    assert winner["outcome"] == "ran" and loser["outcome"] in ("done", "refused"), r
    assert "already" in loser["text"] and loser["decision_id"] == winner["decision_id"], loser
    with _open(ledger_url) as rt:
        [d] = rt.ledger.entries(kind="decision")
        [x] = _executions(rt)
        assert x.body["decision"] == d.id and x.body["authorized"]
        claims = _claims(rt, d.id)
        assert [c.key for c in claims] == [f"stopline:claim:{d.id}:1"]
        # a claimant that skipped the check and wrote the first claim anyway: the ledger's unique key refuses it
        from policy_engine.ledger import IdempotencyConflict, NewEntry

        late = {**claims[0].body, "nonce": "another-claimant", "principal": "stopline-executor:another"}
        with pytest.raises(IdempotencyConflict):
            rt.transact(lambda c: [NewEntry("transition", late, workflow="mcp-files", links=[d.id], key=claims[0].key)])
        assert rt.ledger.verify().ok


def test_mcp_the_same_arguments_without_a_call_id_on_two_gateways_are_two_runs_each_recorded(ledger_url):  # noqa: F811
    _mcp_skip()
    with _open(ledger_url):
        pass
    gate, claim = _CTX.Barrier(2), _CTX.Barrier(2)
    call = {"tool": "write_file", "args": {"path": "n.txt", "text": "hello"}}
    r = _spawn([(mcp_worker, role, ledger_url, call, {"gate": gate, "claim": claim}) for role in ("a", "b")])
    # two tools/call requests without a call id are two calls (as in one gateway, where the
    # second identical call after the first ran is a new decision): each runs under its own
    # decision and each run is recorded; never one decision used by both with one execution
    assert r["a"]["ran"] == r["b"]["ran"] == [("write_file", "n.txt")]
    assert r["a"]["outcome"] == r["b"]["outcome"] == "ran"
    assert r["a"]["decision_id"] != r["b"]["decision_id"], "one decision was used by two runs"
    with _open(ledger_url) as rt:
        xs = _executions(rt)
        assert sorted(x.body["decision"] for x in xs) == sorted([r["a"]["decision_id"], r["b"]["decision_id"]]), \
            f"{len(xs)} executions recorded for 2 runs"
        assert all(x.body["authorized"] for x in xs)
        for x in xs:
            assert len(_claims(rt, x.body["decision"])) == 1


@pytest.mark.parametrize("call_id", ["job-2", None], ids=["call-id", "no-call-id"])
def test_mcp_an_approved_call_retried_on_two_gateways_at_once_runs_once(ledger_url, call_id):  # noqa: F811
    _mcp_skip()
    held = _held_mcp_call(ledger_url, call_id)
    claim = _CTX.Barrier(2)
    call = {"tool": "delete_file", "args": {"path": "a.txt"}, "call_id": call_id}
    r = _spawn([(mcp_worker, role, ledger_url, call, {"claim": claim}) for role in ("a", "b")])
    ran = r["a"]["ran"] + r["b"]["ran"]
    assert ran == [("delete_file", "a.txt")], f"the approved call ran {len(ran)} times: {r}"
    [winner] = [x for x in r.values() if x["ran"]]
    [loser] = [x for x in r.values() if not x["ran"]]
    assert winner["outcome"] == "ran" and winner["decision_id"] == held["decision_id"]
    if call_id is not None:  # one logical call: the other is told it is being used (or ran)
        assert loser["outcome"] in ("refused", "done") and loser["decision_id"] == held["decision_id"], loser
    else:  # no call id: a new identical call, which needs its own approval (never the first's)
        assert loser["outcome"] in ("refused", "approval_required"), loser
        if loser["outcome"] == "approval_required":
            assert loser["decision_id"] != held["decision_id"]
    with _open(ledger_url) as rt:
        [x] = _executions(rt)
        assert x.body["decision"] == held["decision_id"] and x.body["authorized"] and x.body["reviewer"] == "ops"
        assert len(_claims(rt, held["decision_id"])) == 1
        assert rt.authorization(held["decision_id"]).status == "executed"


@pytest.mark.parametrize("tool", ["delete_file", "write_file"], ids=["approved", "allowed"])
def test_mcp_a_call_retried_on_another_gateway_while_it_runs_is_refused(ledger_url, tool):  # noqa: F811
    _mcp_skip()
    call_id = "job-3"
    if tool == "delete_file":
        held = _held_mcp_call(ledger_url, call_id)
    else:
        held = None
        with _open(ledger_url):
            pass
    running, answered = _CTX.Event(), _CTX.Event()
    args = {"path": "a.txt"} if tool == "delete_file" else {"path": "a.txt", "text": "x"}
    first = {"tool": tool, "args": args, "call_id": call_id, "hold": True}
    retry = {"tool": tool, "args": args, "call_id": call_id}
    r = _spawn([(mcp_worker, "a", ledger_url, first, {"running": running, "release": answered}),
                (mcp_worker, "b", ledger_url, retry, {"start": running, "answered": answered})])
    assert r["a"]["ran"] == [(tool, "a.txt")] and r["a"]["outcome"] == "ran"
    assert r["b"]["ran"] == [], f"the call ran again on the other gateway while it ran: {r}"
    assert r["b"]["outcome"] == "refused" and "already" in r["b"]["text"], r["b"]
    if held is not None:
        assert r["a"]["decision_id"] == r["b"]["decision_id"] == held["decision_id"]
    # replayed once more, from a third process, after it ran: done, with its receipt
    with _open(ledger_url) as rt:
        ran: list = []
        again = _mcp_call(rt, tool, args, call_id, ran)
        assert ran == [] and again["outcome"] == "done" and "already ran" in again["text"], again
        [x] = _executions(rt)
        assert x.body["authorized"] and x.body["decision"] == r["a"]["decision_id"]


def test_mcp_a_deny_recorded_by_another_process_after_the_check_stops_the_run(ledger_url):  # noqa: F811
    _mcp_skip()
    held = _held_mcp_call(ledger_url, "job-4")
    checked, go = _CTX.Event(), _CTX.Event()
    call = {"tool": "delete_file", "args": {"path": "a.txt"}, "call_id": "job-4"}
    deny = {"workflow": "mcp-files", "approvers": MCP_DIRECTORY, "principal": "ops2", **held}
    r = _spawn([(mcp_worker, "a", ledger_url, call, {"checked": checked, "go": go}),
                (ledger_worker, "b", ledger_url, "deny", deny, {"checked": checked, "go": go})])
    assert r["b"]["status"] == "denied"
    assert r["a"]["ran"] == [], "the call ran after another process recorded a deny"
    assert r["a"]["outcome"] == "refused" and "denied" in r["a"]["text"], r["a"]
    with _open(ledger_url) as rt:
        assert _executions(rt) == [] and _claims(rt, held["decision_id"]) == []


def test_mcp_a_stop_recorded_by_another_process_after_the_check_stops_the_run(ledger_url):  # noqa: F811
    _mcp_skip()
    with _open(ledger_url):
        pass
    checked, go = _CTX.Event(), _CTX.Event()
    call = {"tool": "write_file", "args": {"path": "n.txt", "text": "x"}, "call_id": "job-5"}
    stop = {"action": {"workflow": "mcp-files", "type": "delete_file", "path": "/etc/passwd",
                       "reversibility": "irreversible"}}
    r = _spawn([(mcp_worker, "a", ledger_url, call, {"checked": checked, "go": go}),
                (ledger_worker, "b", ledger_url, "stop", stop, {"checked": checked, "go": go})])
    assert r["b"]["effect"] == "stop" and r["b"]["status"]["status"] == "stopped"
    assert r["a"]["ran"] == [], "the call ran after another process stopped the workflow"
    assert r["a"]["outcome"] == "stop" and "delete_outside_workspace" in r["a"]["text"], r["a"]
    with _open(ledger_url) as rt:
        assert _executions(rt) == []


# ============================================================================ OpenAI Agents SDK
def test_agents_an_allowed_call_on_two_workers_at_once_runs_once(ledger_url):  # noqa: F811
    _agents_skip()
    with _open(ledger_url):
        pass
    gate, claim = _CTX.Barrier(2), _CTX.Barrier(2)
    run = {"turns": [[_refund("c1", 20)]]}  # the same call (scope, call id, arguments) on both
    r = _spawn([(agents_worker, role, ledger_url, run, {"gate": gate, "claim": claim}) for role in ("a", "b")])
    ran = r["a"]["ran"] + r["b"]["ran"]
    assert ran == [("A-1", 20)], f"the allowed call ran {len(ran)} times: {r}"
    [loser] = [x for x in r.values() if not x["ran"]]
    assert any("already" in o for o in loser["outputs"]), loser
    with _open(ledger_url) as rt:
        [d] = rt.ledger.entries(kind="decision")
        [x] = _executions(rt)
        assert x.body["decision"] == d.id and x.body["authorized"] and len(_claims(rt, d.id)) == 1


def test_agents_an_approved_run_state_resumed_by_two_workers_at_once_runs_once(ledger_url):  # noqa: F811
    _agents_skip()
    held = _held_agent_run(ledger_url)
    claim = _CTX.Barrier(2)
    run = {"state": held["state"]}
    r = _spawn([(agents_worker, role, ledger_url, run, {"claim": claim}) for role in ("a", "b")])
    ran = r["a"]["ran"] + r["b"]["ran"]
    assert ran == [("A-1", 400)], f"the approved call ran {len(ran)} times: {r}"
    [loser] = [x for x in r.values() if not x["ran"]]
    assert any("already being used" in o or "already ran" in o for o in loser["outputs"]), loser
    with _open(ledger_url) as rt:
        [x] = _executions(rt)
        assert x.body["decision"] == held["decision_id"] and x.body["authorized"] and x.body["reviewer"] == "fin"
        assert len(_claims(rt, held["decision_id"])) == 1


@pytest.mark.parametrize("kind", ["approved", "allowed"])
def test_agents_a_call_retried_on_another_worker_while_it_runs_is_refused(ledger_url, kind):  # noqa: F811
    _agents_skip()
    if kind == "approved":
        held = _held_agent_run(ledger_url)
        first, retry = {"state": held["state"], "hold": True}, {"state": held["state"]}
        expect = ("A-1", 400)
    else:
        with _open(ledger_url):
            pass
        first, retry = {"turns": [[_refund("c1", 20)]], "hold": True}, {"turns": [[_refund("c1", 20)]]}
        expect = ("A-1", 20)
    running, answered = _CTX.Event(), _CTX.Event()
    r = _spawn([(agents_worker, "a", ledger_url, first, {"running": running, "release": answered}),
                (agents_worker, "b", ledger_url, retry, {"start": running, "answered": answered})])
    assert r["a"]["ran"] == [expect]
    assert r["b"]["ran"] == [], f"the call ran again on the other worker while it ran: {r}"
    assert any("already" in o for o in r["b"]["outputs"]), r["b"]
    # the same call replayed once more from a third process, after it ran: not run again
    os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")
    from agents import Runner, RunState

    from policy_engine.integrations.openai_agents import protect

    ran: list = []
    agent = _agent(first.get("turns") or [], ran, None)
    with _open(ledger_url) as rt:
        protect(agent, rt, workflow="shop-support", approvers=AGENT_DIRECTORY)

        async def go():
            if "state" in first:
                return await Runner.run(agent, await RunState.from_string(agent, first["state"]))
            return await Runner.run(agent, "go")
        again = _outputs(asyncio.run(go()))
        assert ran == [] and any("already ran" in o for o in again), again
        [x] = _executions(rt)
        assert x.body["authorized"]


def test_agents_a_deny_recorded_by_another_process_after_the_guardrail_stops_the_run(ledger_url):  # noqa: F811
    _agents_skip()
    held = _held_agent_run(ledger_url)
    checked, go = _CTX.Event(), _CTX.Event()
    deny = {"workflow": "shop-support", "approvers": AGENT_DIRECTORY, "principal": "fin2",
            "decision_id": held["decision_id"], "digest": held["digest"]}
    r = _spawn([(agents_worker, "a", ledger_url, {"state": held["state"]}, {"checked": checked, "go": go}),
                (ledger_worker, "b", ledger_url, "deny", deny, {"checked": checked, "go": go})])
    assert r["b"]["status"] == "denied"
    assert r["a"]["ran"] == [], "the call ran after another process recorded a deny"
    assert any("denied" in o for o in r["a"]["outputs"]), r["a"]
    with _open(ledger_url) as rt:
        assert _executions(rt) == [] and _claims(rt, held["decision_id"]) == []


def test_agents_a_stop_recorded_by_another_process_after_the_guardrail_stops_the_run(ledger_url):  # noqa: F811
    _agents_skip()
    with _open(ledger_url):
        pass
    checked, go = _CTX.Event(), _CTX.Event()
    stop = {"action": {"workflow": "shop-support", "type": "delete_customers", "count": 500}}
    r = _spawn([(agents_worker, "a", ledger_url, {"turns": [[_refund("c1", 20)]]}, {"checked": checked, "go": go}),
                (ledger_worker, "b", ledger_url, "stop", stop, {"checked": checked, "go": go})])
    assert r["b"]["effect"] == "stop"
    assert r["a"]["ran"] == [], "the call ran after another process stopped the workflow"
    assert any("mass_deletion" in o for o in r["a"]["outputs"]), r["a"]
    with _open(ledger_url) as rt:
        assert _executions(rt) == []
