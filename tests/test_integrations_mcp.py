"""policy_engine.integrations.mcp against the real mcp package: the package's own client
talking to Stopline's gateway (in front of an in-memory MCPServer) or to a server with the
gate as middleware; the MCP gateway holes (a tool that skips the gate, a replayed or
foreign approval) reproduced and refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mcp")

import anyio  # noqa: E402
from mcp import Client, MCPError  # noqa: E402
from mcp.server.mcpserver import MCPServer  # noqa: E402
from mcp_types import ToolAnnotations  # noqa: E402

from policy_engine import Runtime  # noqa: E402
from policy_engine.integrations.mcp import CALL_ID, GATE_META, Approval, StoplineGateway, protect, reversibility_of  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "examples" / "integrations"
DIRECTORY = {"ops": ["operator"], "sam": ["support_manager"]}


class Files:
    """The upstream MCP server: an in-memory file store that counts what really ran."""

    def __init__(self) -> None:
        self.files: dict[str, str] = {"a.txt": "A", "b.txt": "B", "/etc/passwd": "root"}
        self.ran: list[tuple] = []
        srv = self.server = MCPServer("files")

        @srv.tool(annotations=ToolAnnotations(read_only_hint=True))
        def read_file(path: str) -> str:
            self.ran.append(("read_file", path))
            return self.files.get(path, "")

        @srv.tool(annotations=ToolAnnotations(destructive_hint=True))
        def write_file(path: str, text: str) -> dict:
            self.ran.append(("write_file", path))
            self.files[path] = text
            return {"path": path, "bytes": len(text)}

        @srv.tool(annotations=ToolAnnotations(destructive_hint=True))
        def delete_file(path: str) -> dict:
            self.ran.append(("delete_file", path))
            return {"path": path, "deleted": self.files.pop(path, None) is not None}


@pytest.fixture
def rt(tmp_path):
    with Runtime.open(str(POLICY), ledger=f"sqlite:///{tmp_path / 'l.db'}") as r:
        yield r


def gateway(rt, files: Files, **kw) -> StoplineGateway:
    return StoplineGateway(files.server, rt, workflow="mcp-files", approvers=DIRECTORY, **kw)


def run(fn, *args):
    return anyio.run(fn, *args)


def gate_of(result) -> dict:
    return (result.meta or {})[GATE_META]


def test_allow_runs_and_records_the_receipt(rt):
    files = Files()

    async def go():
        async with Client(gateway(rt, files).server) as c:
            r = await c.call_tool("write_file", {"path": "n.txt", "text": "hello"})
            assert not r.is_error and gate_of(r)["outcome"] == "ran" and gate_of(r)["rule"] == "snapshotted_write"
    run(go)
    assert files.files["n.txt"] == "hello"
    [x] = rt.ledger.entries(kind="execution")
    assert x.body["authorized"] and x.body["receipt"] == {"path": "n.txt", "bytes": 5}


def test_annotations_default_the_reversibility_and_the_policy_overrides(rt):
    ann = ToolAnnotations
    assert reversibility_of(ann(read_only_hint=True)) == "full"
    assert reversibility_of(ann(destructive_hint=True, idempotent_hint=True)) == "irreversible"
    assert reversibility_of(None) == "irreversible"  # unset destructiveHint: the spec's default, true
    assert reversibility_of(ann(destructive_hint=False, idempotent_hint=True)) == "full"
    assert reversibility_of(ann(destructive_hint=False)) == "partial"
    assert reversibility_of({"destructiveHint": False, "openWorldHint": True}) == "partial"
    assert reversibility_of(ann(read_only_hint=True), declared="irreversible") == "irreversible"
    files = Files()

    async def go():
        async with Client(gateway(rt, files).server) as c:
            listed = {t.name: t.meta[GATE_META]["reversibility"] for t in (await c.list_tools()).tools}
            # write_file is annotated destructive, but the policy declares it `reversible full`
            assert listed == {"read_file": "full", "write_file": "full", "delete_file": "irreversible"}
            for tool, args in [("read_file", {"path": "a.txt"}), ("write_file", {"path": "a.txt", "text": "x"}),
                               ("delete_file", {"path": "a.txt"})]:
                await c.call_tool(tool, args)
    run(go)
    actions = {e.body["action"]["type"]: e.body["action"] for e in rt.ledger.entries(kind="decision")}
    assert {t: a["reversibility"] for t, a in actions.items()} == listed_expected()
    assert actions["read_file"]["hints"]["read_only"] and actions["delete_file"]["hints"]["destructive"]
    effects = [e.body["decision"]["effect"] for e in rt.ledger.entries(kind="decision")]
    assert effects == ["allow", "allow", "require_approval"]  # the class decides the rule that applies
    assert ("delete_file", "a.txt") not in files.ran


def listed_expected() -> dict:
    return {"read_file": "full", "write_file": "full", "delete_file": "irreversible"}


def test_arguments_cannot_override_the_gate_fields(rt):
    files = Files()

    async def go():
        async with Client(gateway(rt, files).server) as c:
            r = await c.call_tool("delete_file", {"path": "a.txt", "reversibility": "full", "type": "read_file",
                                                  "workflow": "shop-support"})
            assert r.is_error and gate_of(r)["outcome"] == "approval_required"
    run(go)
    [d] = rt.ledger.entries(kind="decision")
    a = d.body["action"]
    assert (a["reversibility"], a["type"], a["workflow"]) == ("irreversible", "delete_file", "mcp-files")
    assert files.ran == []


def test_require_approval_then_an_out_of_band_approval_runs_the_retry_once(rt):
    files = Files()
    gw = gateway(rt, files)

    async def go():
        async with Client(gw.server) as c:
            r = await c.call_tool("delete_file", {"path": "a.txt"})
            g = gate_of(r)
            assert r.is_error and g["outcome"] == "approval_required"
            assert g["approvals"][0]["roles"] == ["operator"] and g["decision_id"] in r.content[0].text
            assert rt.ledger.get(g["decision_id"]).body["decision"]["action_digest"] == g["action_digest"]
            # a principal without the role: recorded, not counted; the retry is still held
            assert not rt.approve(g["decision_id"], principal="sam", roles=["support_manager"]).counted
            r2 = await c.call_tool("delete_file", {"path": "a.txt"})
            assert gate_of(r2)["outcome"] == "approval_required" and gate_of(r2)["decision_id"] == g["decision_id"]
            assert rt.approve(g["decision_id"], principal="ops", roles=["operator"]).status == "approved"
            r3 = await c.call_tool("delete_file", {"path": "a.txt"})
            assert not r3.is_error and gate_of(r3)["decision_id"] == g["decision_id"]
            assert gate_of(r3)["approved_by"] == "ops"
            return g
    g = run(go)
    assert files.ran == [("delete_file", "a.txt")]
    assert rt.authorization(g["decision_id"]).status == "executed"
    [x] = rt.ledger.entries(kind="execution")
    assert x.body["authorized"] and x.body["decision"] == g["decision_id"]


def test_a_second_run_of_the_same_approval_is_refused(rt):
    files = Files()
    gw = gateway(rt, files)

    async def go():
        async with Client(gw.server) as c:
            g = gate_of(await c.call_tool("delete_file", {"path": "a.txt"}))
            assert gw.gate.approve(Approval(g["decision_id"], g["action_digest"], "ops")).run
            async with anyio.create_task_group() as tg:  # two retries racing on one approval
                for _ in range(2):
                    tg.start_soon(c.call_tool, "delete_file", {"path": "a.txt"})
            again = await c.call_tool("delete_file", {"path": "a.txt"})
            assert again.is_error and gate_of(again)["outcome"] == "approval_required"
            assert gate_of(again)["decision_id"] != g["decision_id"]  # a new call, a new decision
            replay = gw.gate.approve(Approval(g["decision_id"], g["action_digest"], "ops"))
            assert not replay.run and "executed" in replay.message
    run(go)
    assert files.ran == [("delete_file", "a.txt")]
    assert [x.body["authorized"] for x in rt.ledger.entries(kind="execution")] == [True]


def test_a_client_call_id_is_one_call_and_never_runs_twice(rt):
    files = Files()
    gw = gateway(rt, files)

    async def go():
        async with Client(gw.server) as c:
            meta = {CALL_ID: "job-7"}
            g = gate_of(await c.call_tool("delete_file", {"path": "a.txt"}, meta=meta))
            rt.approve(g["decision_id"], principal="ops", roles=["operator"])
            other = await c.call_tool("delete_file", {"path": "b.txt"}, meta=meta)  # same id, other arguments
            assert other.is_error and gate_of(other)["decision_id"] != g["decision_id"]
            ran = await c.call_tool("delete_file", {"path": "a.txt"}, meta=meta)
            assert not ran.is_error and gate_of(ran)["outcome"] == "ran"
            done = await c.call_tool("delete_file", {"path": "a.txt"}, meta=meta)
            assert gate_of(done)["outcome"] == "done" and "already ran" in done.content[0].text
    run(go)
    assert files.ran == [("delete_file", "a.txt")] and "b.txt" in files.files


def test_an_approval_for_other_arguments_is_refused(rt):
    files = Files()
    gw = gateway(rt, files)

    async def go():
        async with Client(gw.server) as c:
            ga = gate_of(await c.call_tool("delete_file", {"path": "a.txt"}))
            gb = gate_of(await c.call_tool("delete_file", {"path": "b.txt"}))
            assert ga["action_digest"] != gb["action_digest"]
            # a's decision with b's digest: refused before the Runtime
            out = gw.gate.approve(Approval(ga["decision_id"], gb["action_digest"], "ops"))
            assert not out.run and "other tool arguments" in out.message
            assert gw.gate.approve(Approval(ga["decision_id"], ga["action_digest"], "ops")).run
            rb = await c.call_tool("delete_file", {"path": "b.txt"})  # a's approval does not cover b
            assert rb.is_error and gate_of(rb)["decision_id"] == gb["decision_id"]
    run(go)
    assert files.ran == [] and "b.txt" in files.files


def test_a_principal_without_the_role_is_refused(rt):
    files = Files()
    gw = gateway(rt, files)

    async def go():
        async with Client(gw.server) as c:
            g = gate_of(await c.call_tool("delete_file", {"path": "a.txt"}))
            for who in ("sam", "mallory", ""):  # no operator role, unknown to the directory, nobody
                assert not gw.gate.approve(Approval(g["decision_id"], g["action_digest"], who)).run
            r = await c.call_tool("delete_file", {"path": "a.txt"})
            assert r.is_error and gate_of(r)["status"] == "pending"
    run(go)
    assert files.ran == []


def test_deny_returns_the_reason_and_never_reaches_the_tool(rt):
    files = Files()

    @files.server.tool(annotations=ToolAnnotations(destructive_hint=False, idempotent_hint=True))
    def chmod_file(path: str, mode: str) -> str:
        files.ran.append(("chmod_file", path))
        return "ok"

    async def go():
        async with Client(gateway(rt, files).server) as c:
            r = await c.call_tool("chmod_file", {"path": "a.txt", "mode": "600"})
            assert r.is_error and gate_of(r)["outcome"] == "deny"
            assert "not declared in workflow `mcp-files`" in r.content[0].text
    run(go)
    assert files.ran == []


def test_stop_halts_every_call_until_a_resume(rt):
    files = Files()

    async def go():
        async with Client(gateway(rt, files).server) as c:
            r = await c.call_tool("delete_file", {"path": "/etc/passwd"})
            assert r.is_error and gate_of(r)["outcome"] == "stop" and "halted" in r.content[0].text
            assert rt.workflow_status("mcp-files")["stopped_by"] == "delete_outside_workspace"
            r = await c.call_tool("read_file", {"path": "a.txt"})  # allowed before the stop
            assert r.is_error and gate_of(r)["outcome"] == "stop"
            assert rt.resume("mcp-files", evidence={"incident_reviewed": True}, principal="ops").allowed
            r = await c.call_tool("read_file", {"path": "a.txt"})  # the same call, judged again
            assert not r.is_error and r.content[0].text == "A"
    run(go)
    assert files.ran == [("read_file", "a.txt")] and "/etc/passwd" in files.files


def test_no_tool_reached_through_the_gateway_skips_the_gate(rt):
    files = Files()
    gw = gateway(rt, files)

    async def go():
        async with Client(gw.server) as c:
            before = {t.name for t in (await c.list_tools()).tools}

            @files.server.tool()  # added upstream after the gateway started
            def wipe_disk(device: str) -> str:
                files.ran.append(("wipe_disk", device))
                return "wiped"

            listed = (await c.list_tools()).tools
            assert {t.name for t in listed} == before | {"wipe_disk"}
            assert all(t.meta[GATE_META]["workflow"] == "mcp-files" for t in listed)  # every tool is fronted
            r = await c.call_tool("wipe_disk", {"device": "sda"})
            assert r.is_error and gate_of(r)["outcome"] == "deny"
            r = await c.call_tool("no_such_tool", {})
            assert r.is_error and gate_of(r)["outcome"] == "deny"
            for path in ("a.txt", "b.txt"):
                await c.call_tool("read_file", {"path": path})
    run(go)
    assert files.ran == [("read_file", "a.txt"), ("read_file", "b.txt")]
    calls = [e.body["action"]["type"] for e in rt.ledger.entries(kind="decision")]
    assert calls == ["wipe_disk", "no_such_tool", "read_file", "read_file"]  # one decision per call


def test_middleware_gates_every_call_including_tools_added_later(rt):
    files = Files()
    gate = protect(files.server, rt, workflow="mcp-files", approvers=DIRECTORY)

    async def go():
        async with Client(files.server) as c:
            listed = {t.name: t.meta[GATE_META]["reversibility"] for t in (await c.list_tools()).tools}
            assert listed == listed_expected()
            r = await c.call_tool("read_file", {"path": "a.txt"})
            assert not r.is_error and gate_of(r)["rule"] == "reads"

            @files.server.tool()
            def wipe_disk(device: str) -> str:
                files.ran.append(("wipe_disk", device))
                return "wiped"

            r = await c.call_tool("wipe_disk", {"device": "sda"})
            assert r.is_error and gate_of(r)["outcome"] == "deny"
            g = gate_of(await c.call_tool("delete_file", {"path": "a.txt"}))
            assert gate.approve(Approval(g["decision_id"], g["action_digest"], "ops")).run
            assert not (await c.call_tool("delete_file", {"path": "a.txt"})).is_error

            async def rewrite(ctx, call_next):  # added inside the gate: it could rewrite a gated call
                return await call_next(ctx)
            files.server.middleware.append(rewrite)
            with pytest.raises(MCPError, match="innermost"):
                await c.call_tool("read_file", {"path": "b.txt"})
    run(go)
    assert files.ran == [("read_file", "a.txt"), ("delete_file", "a.txt")]


def test_the_example_runs_and_says_what_was_gated(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "mcp_gateway.py")], capture_output=True,
                       text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "write_file: annotations {'destructiveHint': True} -> reversibility full" in out
    assert "approval by sam (support_manager): refused" in out and "approval by ops (operator): counted" in out
    assert "chmod_file(path='notes.txt', mode='600') -> deny" in out
    assert "delete_outside_workspace" in out and "resume by ops: allowed" in out
    assert [ln.split(" -> ")[1].split(" ")[0] for ln in out.splitlines() if "delete_file(path='notes.txt')" in ln] \
        == ["approval_required", "approval_required", "ran", "approval_required"]


@pytest.mark.parametrize("mode", ["gateway", "middleware"])
def test_a_call_cancelled_while_it_runs_is_recorded_as_executed(rt, mode):
    files = Files()
    started = anyio.Event()

    @files.server.tool(annotations=ToolAnnotations(read_only_hint=True))
    async def slow_read(path: str) -> str:
        files.ran.append(("slow_read", path))
        started.set()
        await anyio.sleep_forever()  # the client gives up on it: the call is cancelled while it runs
        return ""

    types = {"slow_read": "read_file"}
    if mode == "middleware":
        protect(files.server, rt, workflow="mcp-files", approvers=DIRECTORY, types=types)
        server = files.server
    else:
        server = gateway(rt, files, types=types).server

    async def go():
        async with Client(server) as c:
            async with anyio.create_task_group() as tg:
                scope = anyio.CancelScope()

                async def call():
                    with scope:
                        await c.call_tool("slow_read", {"path": "a.txt"})
                tg.start_soon(call)
                await started.wait()
                scope.cancel()
    run(go)
    assert files.ran == [("slow_read", "a.txt")]
    [d] = rt.ledger.entries(kind="decision")
    [x] = rt.ledger.entries(kind="execution")  # it began (and may have had its effect): the ledger says so
    assert x.body["decision"] == d.id and x.body["authorized"]


@pytest.mark.parametrize("meta", [None, {CALL_ID: "call-1"}])
def test_arguments_json_cannot_hold_are_a_recorded_refusal(rt, meta):
    files = Files()
    gate = gateway(rt, files).gate  # what the gateway and the middleware call for every tools/call
    ran: list = []

    async def upstream():
        ran.append(1)
        return {"content": [{"type": "text", "text": "written"}]}

    async def go():
        out = []
        for args in ({"path": "a.txt", "text": "x", "opts": {(1, 2): "x"}},  # a tuple key
                     {"path": "a.txt", "text": "x", 1: "one"}):  # an int key beside strings
            out.append(await gate.call(None, "write_file", args, meta, None, upstream))
        return out
    for r, key in zip(run(go), ("(1, 2)", "1"), strict=True):  # results, not a TypeError
        assert r.is_error and gate_of(r)["outcome"] == "deny" and gate_of(r)["rule"] == "unrecordable action"
        assert f"object key {key}" in r.content[0].text and "not a string" in r.content[0].text
    assert ran == [] and files.ran == []
    assert [e.body["decision"]["effect"] for e in rt.ledger.entries(kind="decision")] == ["deny", "deny"]


@pytest.mark.parametrize("call_id", ["job-9", None], ids=["call-id", "no-call-id"])
def test_a_decision_outdated_by_a_stop_is_not_used_after_the_resume(rt, call_id):
    """An allowed call decided, then the workflow stopped (by another process, say) before
    it ran, then resumed: that decision is never used (the Runtime would record its run as
    unauthorized, "gate the action again"). With a call id the call is refused (the same
    id is the same decision); without, the identical call is gated again and runs."""
    files = Files()
    gate = gateway(rt, files).gate
    meta = {CALL_ID: call_id} if call_id else None
    args = {"path": "n.txt", "text": "x"}
    first, _ = gate._find("write_file", args, call_id, "", None)  # decided (allowed), not run yet
    assert first.effect == "allow" and first.status == "allowed"
    assert rt.gate({"workflow": "mcp-files", "type": "delete_file", "path": "/etc/passwd"}).decision.effect == "stop"
    assert rt.resume("mcp-files", evidence={"incident_reviewed": True}, principal="ops").allowed
    ran: list = []

    async def upstream():
        ran.append(1)
        return {"content": [{"type": "text", "text": '{"path": "n.txt", "bytes": 1}'}]}

    r = run(gate.call, None, "write_file", args, meta, None, upstream)
    if call_id:
        assert r.is_error and gate_of(r)["outcome"] == "refused" and ran == []
        assert "stopped by `delete_outside_workspace` after this call's decision" in r.content[0].text
        assert rt.ledger.entries(kind="execution") == []
    else:
        g = r["_meta"][GATE_META]  # (what ran comes back as the upstream's result, marked)
        assert g["outcome"] == "ran" and ran == [1] and g["decision_id"] != first.decision_id
        [x] = rt.ledger.entries(kind="execution")
        assert x.body["authorized"] and x.body["decision"] == g["decision_id"]
