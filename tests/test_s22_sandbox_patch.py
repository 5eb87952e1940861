"""A sandbox agent's apply_patch is applied whole or not at all from the gate's view: every
operation is judged before any is applied; one refused (denied, held without an approval,
a path the sandbox refuses) and none is applied, the model reading which and why. Before,
the allowed operations of such a patch were written (a partial write) and a held patch's
note outlived its call (``request_for`` named the old operation for a reused call id).
Against the real openai-agents package and a Unix-local sandbox (no network)."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

pytest.importorskip("agents")
pytest.importorskip("agents.sandbox")
if sys.platform == "win32":  # pragma: no cover
    pytest.skip("the Unix-local sandbox", allow_module_level=True)
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

from agents import RunConfig, Runner, RunState  # noqa: E402
from agents.run_config import SandboxRunConfig  # noqa: E402
from agents.sandbox import Manifest  # noqa: E402
from agents.sandbox.entries import File  # noqa: E402
from agents.sandbox.sandboxes import UnixLocalSandboxClient  # noqa: E402
from openai.types.responses import ResponseCustomToolCall  # noqa: E402

from policy_engine import Runtime  # noqa: E402
from policy_engine.integrations.openai_agents import Approval, approve, request_for  # noqa: E402
from tests.test_integrations_openai_agents_sandbox import (  # noqa: E402
    POLICY,
    box_agent,
    decisions,
    executions,
    outputs,
    patch,
)


@pytest.fixture
def rt(tmp_path):
    (tmp_path / "box.policy").write_text(POLICY)
    with Runtime.open(str(tmp_path / "box.policy"), ledger=f"sqlite:///{tmp_path / 'l.db'}") as r:
        yield r


@pytest.fixture
def ws(tmp_path):
    return tmp_path / "ws"


def manifest(ws):
    return Manifest(root=str(ws), entries={"old.txt": File(content=b"old\n"), "new.txt": File(content=b"new\n")})


def run(ws, agent, given="go", steps=None):
    """Run ``agent`` on a live Unix-local session of ``ws``; ``steps(result, config)`` (async)
    continues from the first result (an interruption to answer)."""

    async def go():
        session = await UnixLocalSandboxClient().create(manifest=manifest(ws), options=None)
        config = RunConfig(sandbox=SandboxRunConfig(session=session))
        async with session:
            result = await Runner.run(agent, given, run_config=config)
            return await steps(result, config) if steps is not None else result

    return asyncio.run(go())


def status(rt, path):
    [d] = [e for e in rt.ledger.entries(kind="decision") if e.body["action"].get("path") == path]
    return rt.authorization(d.id).status, d.id


# ------------------------------------------------------------------------------ all or nothing
def test_a_patch_with_a_denied_operation_applies_none_of_it(rt, ws):
    agent, _ = box_agent(
        rt,
        [
            [patch("p1", ("add", "docs/a.md", ["hello"]), ("add", ".env", ["KEY=stolen"]))],
            [patch("p2", ("add", "docs/a.md", ["hello"]))],
        ],
    )
    result = run(ws, agent)
    first = outputs(result)[0]
    # before: docs/a.md was written (and recorded as executed), .env refused
    assert "operation 2 of 2 (create_file `.env`)" in first and "(secrets)" in first
    assert "none of its 2 operations was applied" in first and "`docs/a.md`" in first
    [x] = executions(rt)  # only the second patch's operation ran: the first patch's never did
    assert x["receipt"]["path"] == "docs/a.md" and (ws / "docs" / "a.md").read_text() == "hello"
    assert not (ws / ".env").exists()
    # the allowed operation of the refused patch stayed allowed, unused, until sent again
    # (the same operation is the same decision: the retry ran under it)
    st, dec = status(rt, "docs/a.md")
    assert st == "executed" and x["decision"] == dec


def test_the_allowed_operation_of_a_refused_patch_is_not_recorded_as_run(rt, ws):
    agent, _ = box_agent(rt, [[patch("p1", ("add", "docs/a.md", ["hello"]), ("add", ".env", ["KEY=x"]))]])
    run(ws, agent)
    assert not (ws / "docs" / "a.md").exists() and executions(rt) == []
    assert status(rt, "docs/a.md")[0] == "allowed"  # not executed, not claimed: usable by a retry


def test_the_sdk_approval_alone_applies_no_part_of_a_held_patch(rt, ws):
    agent, _ = box_agent(rt, [[patch("p1", ("add", "docs/a.md", ["hello"]), ("delete", "old.txt"))]])

    async def steps(result, config):
        [held] = result.interruptions
        state = result.to_state()
        state.approve(held, always_approve=True)  # not an approval: the deletion stays held
        return await Runner.run(agent, state, run_config=config)

    result = run(ws, agent, steps=steps)
    # before: docs/a.md was written, the deletion refused
    assert not (ws / "docs" / "a.md").exists() and (ws / "old.txt").exists() and executions(rt) == []
    [out] = [o for o in outputs(result) if o]
    assert "operation 2 of 2 (delete_file `old.txt`)" in out and "approval required" in out


def test_an_approved_patch_applies_every_operation(rt, ws):
    agent, gate = box_agent(rt, [[patch("p1", ("add", "docs/a.md", ["hello"]), ("delete", "old.txt"))]])

    async def steps(result, config):
        [held] = result.interruptions
        assert not (ws / "docs" / "a.md").exists()  # nothing applied while the patch is held
        state = result.to_state()
        assert approve(gate, state, held, Approval.for_request(request_for(gate, held), "olga")).run
        return await Runner.run(agent, state, run_config=config)

    run(ws, agent, steps=steps)
    assert (ws / "docs" / "a.md").read_text() == "hello" and not (ws / "old.txt").exists()
    assert sorted(x["receipt"]["path"] for x in executions(rt)) == ["docs/a.md", "old.txt"]


def test_a_denied_operation_refuses_a_held_patch_without_asking_a_reviewer(rt, ws):
    agent, _ = box_agent(rt, [[patch("p1", ("delete", "old.txt"), ("add", ".env", ["KEY=x"]))]])
    result = run(ws, agent)
    # before: an interruption for the deletion, which no approval could let apply
    assert result.interruptions == []
    [out] = [o for o in outputs(result) if o]
    assert "operation 2 of 2 (create_file `.env`)" in out and "(secrets)" in out
    assert (ws / "old.txt").exists() and executions(rt) == []


# ------------------------------------------------------------------------------ the held note
def held_state(rt, ws, delete):
    """A run of a fresh agent and gate (another process) interrupted on call ``p1``
    deleting ``delete``: its saved state."""
    agent, _ = box_agent(rt, [[patch("p1", ("delete", delete))]])

    async def steps(result, config):
        return result.to_state().to_json()

    return run(ws, agent, steps=steps)


def test_a_held_patch_note_ends_with_its_call(rt, ws, tmp_path):
    """A gate whose held call ``p1`` was approved and ran, asked later about another held
    ``p1`` (a model reusing call ids; the state saved elsewhere): before, the old call's
    note answered, so the reviewer saw (and approved) the old deletion, never the new one."""
    agent, gate = box_agent(rt, [[patch("p1", ("delete", "old.txt"))]])

    async def steps(result, config):
        [held] = result.interruptions
        state = result.to_state()
        assert approve(gate, state, held, Approval.for_request(request_for(gate, held), "olga")).run
        return await Runner.run(agent, state, run_config=config)

    run(ws, agent, steps=steps)
    assert not (ws / "old.txt").exists()
    assert gate._openai_agents.held == {}  # the call reached again: its note is gone (before: kept for good)
    other = tmp_path / "other"
    saved = held_state(rt, other, "new.txt")  # elsewhere: call p1 again, held on another file

    async def review():
        fresh, _ = box_agent(rt, [])
        state = await RunState.from_json(fresh, saved)
        [held] = state.get_interruptions()
        return request_for(gate, held)

    req = asyncio.run(review())
    assert req["args"] == {"operation": "delete_file", "path": "new.txt"} and req["status"] == "pending"
    assert decisions(rt) == [("apply_patch", "require_approval")] * 2


# ------------------------------------------------------------------------------ errors
def test_a_patch_the_sdk_cannot_read_answers_the_model_and_never_raises(rt, ws):
    """JSON operations of an odd shape: the SDK's parser raises ``TypeError`` (not the
    ``ValueError`` its approval check catches). Before: the run died with the traceback."""
    odd = ResponseCustomToolCall(
        type="custom_tool_call",
        id="ct_1",
        call_id="c1",
        name="apply_patch",
        input='{"type": ["create_file"], "path": "docs/a.md", "diff": "+x\\n"}',
    )
    agent, _ = box_agent(rt, [[odd]])
    result = run(ws, agent)
    [out] = [o for o in outputs(result) if o]
    assert out.startswith("`apply_patch` could not read the patch") and "nothing was applied" in out
    assert not (ws / "docs").exists() and executions(rt) == []


def test_a_patch_sent_again_after_part_of_it_ran_completes(rt, ws):
    """An operation that already ran under its decision (a replayed patch, cut short before)
    is not a refusal: it is answered so, not run again, and the rest of the patch applies."""
    agent, _ = box_agent(
        rt,
        [
            [patch("p1", ("add", "docs/a.md", ["hello"]))],
            [patch("p2", ("add", "docs/a.md", ["hello"]), ("add", "docs/b.md", ["world"]))],
        ],
    )
    result = run(ws, agent)
    assert (ws / "docs" / "b.md").read_text() == "world"
    assert sorted(x["receipt"]["path"] for x in executions(rt)) == ["docs/a.md", "docs/b.md"]
    assert any("already ran" in o for o in outputs(result))
