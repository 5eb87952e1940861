"""A sandbox agent's apply_patch as one act: every file's new content computed before any
is written (an operation that cannot apply leaves every file as it was, nothing recorded
as run), a write that fails mid-patch restored, a symlink swapped in after the check
refused rather than followed, and a patch holding several operations reviewed in one
round. Before, a diff that did not apply left the operations before it written, a link
swapped in between the check and the write was followed (writing the file it points to),
and two held operations took two rounds of interruption. Against the real openai-agents
package and a Unix-local sandbox (no network)."""

from __future__ import annotations

import asyncio
import errno
import os
import sys

import pytest

pytest.importorskip("agents")
pytest.importorskip("agents.sandbox")
if sys.platform == "win32":  # pragma: no cover
    pytest.skip("the Unix-local sandbox", allow_module_level=True)
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

from agents import RunConfig, Runner  # noqa: E402
from agents.run_config import SandboxRunConfig  # noqa: E402
from agents.sandbox import Manifest  # noqa: E402
from agents.sandbox.entries import File  # noqa: E402
from agents.sandbox.sandboxes import UnixLocalSandboxClient  # noqa: E402
from openai.types.responses import ResponseCustomToolCall  # noqa: E402

from policy_engine import Runtime  # noqa: E402
from policy_engine.integrations.common import ToolGate  # noqa: E402
from policy_engine.integrations.openai_agents import Approval, approve, request_for  # noqa: E402
from tests.test_integrations_openai_agents_sandbox import POLICY, box_agent, executions, outputs  # noqa: E402

FILES = {
    "docs/a.md": b"one\ntwo\nthree\n",
    "docs/b.md": b"alpha\nbeta\n",
    "docs/crlf.md": b"x\r\ny\r\nz\r\n",
    "docs/blob.bin": b"\x89PNG\r\n\x1a\n\xff\xfe\x00",
    "docs/notes.md": b"KEY=1\n",
    "docs/sub/notes.md": b"KEY=1\n",
    "secrets/notes.md": b"KEY=1\n",
    ".env": b"KEY=1\n",
    "old.txt": b"old\n",
}


@pytest.fixture
def rt(tmp_path):
    (tmp_path / "box.policy").write_text(POLICY)
    with Runtime.open(str(tmp_path / "box.policy"), ledger=f"sqlite:///{tmp_path / 'l.db'}") as r:
        yield r


@pytest.fixture
def ws(tmp_path):
    return tmp_path / "ws"


@pytest.fixture(params=["host", "session"])
def via(request, monkeypatch):
    """Where the files are written: on this host by descriptor (a Unix-local session), or
    through the session's own calls (any other sandbox; here the same Unix-local one)."""
    if request.param == "session":
        from policy_engine.integrations import openai_agents_sandbox as sb

        monkeypatch.setattr(sb, "_store", lambda editor: sb._Session(editor.session, None))
    return request.param


def call(cid, *sections):
    """A raw V4A patch call: each section the lines after ``*** Begin Patch``."""
    text = "\n".join(["*** Begin Patch", *(line for s in sections for line in s), "*** End Patch"]) + "\n"
    return ResponseCustomToolCall(type="custom_tool_call", id=f"ct_{cid}", call_id=cid, name="apply_patch", input=text)


def upd(path, *lines, move_to=None):
    return [f"*** Update File: {path}", *([f"*** Move to: {move_to}"] if move_to else []), "@@", *lines]


def add(path, *lines):
    return [f"*** Add File: {path}", *(f"+{line}" for line in lines)]


def delete(path):
    return [f"*** Delete File: {path}"]


def run(ws, agent, steps=None):
    async def go():
        entries = {k: File(content=v) for k, v in FILES.items()}
        session = await UnixLocalSandboxClient().create(manifest=Manifest(root=str(ws), entries=entries), options=None)
        config = RunConfig(sandbox=SandboxRunConfig(session=session))
        async with session:
            result = await Runner.run(agent, "go", run_config=config)
            return await steps(result, config) if steps is not None else result

    return asyncio.run(go())


def error_of(x):
    """A failed execution's error (the receipt's ``tool_error``, or the entry's own)."""
    return str(x.get("error") or x["receipt"].get("tool_error"))


def unchanged(ws, *paths):
    return all((ws / p).read_bytes() == FILES[p] for p in paths)


def statuses(rt):
    return sorted(rt.authorization(e.id).status for e in rt.ledger.entries(kind="decision"))


# ------------------------------------------------------------------------------ all or nothing
BAD = {
    "context": (upd("docs/b.md", "-gamma", "+GAMMA"), "Invalid Context"),
    "binary": (upd("docs/blob.bin", "-x", "+y"), "is not UTF-8 text"),
    "exists": (add("docs/b.md", "new"), "already exists"),
    "missing": (upd("docs/none.md", "-x", "+y"), "does not exist"),
}


@pytest.mark.parametrize("bad", sorted(BAD))
def test_an_operation_that_cannot_apply_leaves_every_file_as_it_was(rt, ws, bad, via):
    section, why = BAD[bad]
    agent, _ = box_agent(rt, [[call("p1", upd("docs/a.md", " one", "-two", "+TWO"), add("docs/new/c.md", "c"),
                                    section)]])
    result = run(ws, agent)
    # before: docs/a.md was updated, docs/new/c.md created and both recorded as executed
    assert unchanged(ws, "docs/a.md", "docs/b.md") and not (ws / "docs" / "new").exists()
    assert executions(rt) == [] and statuses(rt) == ["allowed"] * 3  # unused: a corrected patch runs under them
    [out] = [o for o in outputs(result) if o]
    assert "operation 3 of 3" in out and why in out and "None of its 3 operations was applied" in out


def test_a_corrected_patch_applies_whole(rt, ws):
    agent, _ = box_agent(rt, [[call("p1", upd("docs/a.md", " one", "-two", "+TWO"), upd("docs/b.md", "-gamma", "+G"))],
                              [call("p2", upd("docs/a.md", " one", "-two", "+TWO"), upd("docs/b.md", "-beta", "+B"))]])
    run(ws, agent)
    assert (ws / "docs" / "a.md").read_text() == "one\nTWO\nthree\n"
    assert (ws / "docs" / "b.md").read_text() == "alpha\nB\n"
    assert sorted(x["receipt"]["path"] for x in executions(rt)) == ["docs/a.md", "docs/b.md"]


def test_operations_see_the_ones_before_them(rt, ws, via):
    """Added, then updated, then moved across directories in one patch; a CRLF file keeps its
    line ends; a deleted file added again."""
    agent, _ = box_agent(rt, [[call("p1", add("docs/c.md", "c1", "c2"), upd("docs/c.md", " c1", "-c2", "+C2"),
                                    upd("docs/c.md", " c1", "-C2", "+c3", move_to="docs/sub/c.md"),
                                    upd("docs/crlf.md", " x", "-y", "+Y"))]])
    result = run(ws, agent)
    assert not (ws / "docs" / "c.md").exists() and (ws / "docs" / "sub" / "c.md").read_text() == "c1\nc3"
    assert (ws / "docs" / "crlf.md").read_bytes() == b"x\r\nY\r\nz\r\n"
    assert len(executions(rt)) == 4
    [out] = [o for o in outputs(result) if o]
    assert out.splitlines() == ["Created docs/c.md", "Updated docs/c.md", "Updated docs/c.md",
                                "Moved docs/c.md to docs/sub/c.md", "Updated docs/crlf.md"]


def test_a_write_that_fails_midway_is_restored(rt, ws, monkeypatch):
    """The disk fails creating the patch's second file: the first, already rewritten, is
    written back, the directory made for the second removed; each operation is recorded as
    run with the error (it was claimed: a retry is told so), and the model reads the state."""
    real = os.open

    def full(path, flags, *a, **kw):
        if os.fspath(path) == "full.md" and flags & os.O_CREAT:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, flags, *a, **kw)

    monkeypatch.setattr(os, "open", full)
    agent, _ = box_agent(rt, [[call("p1", upd("docs/a.md", " one", "-two", "+TWO"), add("docs/deep/full.md", "x"))]])
    result = run(ws, agent)
    # before: docs/a.md stayed rewritten
    assert unchanged(ws, "docs/a.md") and not (ws / "docs" / "deep").exists()
    [out] = [o for o in outputs(result) if o]
    assert "No space left on device" in out and "the workspace is as before the patch" in out
    xs = executions(rt)
    assert len(xs) == 2 and all("restored" in error_of(x) for x in xs)


# ------------------------------------------------------------------------------ a symlink swapped in
def swap_file(ws):
    os.unlink(ws / "docs" / "notes.md")
    os.symlink("../.env", ws / "docs" / "notes.md")


def swap_dir(ws):
    os.rename(ws / "docs" / "sub", ws / "docs" / "away")
    os.symlink("../secrets", ws / "docs" / "sub")


@pytest.mark.parametrize(("path", "swap"), [("docs/notes.md", swap_file), ("docs/sub/notes.md", swap_dir)])
def test_a_link_swapped_in_after_the_check_is_refused_not_followed(rt, ws, monkeypatch, path, swap, via):
    """The path is plain when judged (allowed, under docs/); right before the write (as the
    operation is claimed) it, or its directory, becomes a link to a file the policy denies.
    Before, the sandbox resolved the path again and wrote the link's target."""
    take = ToolGate.take

    def swapped(self, check, approver=None):
        swap(ws)
        return take(self, check, approver)

    monkeypatch.setattr(ToolGate, "take", swapped)
    agent, _ = box_agent(rt, [[call("p1", upd(path, "-KEY=1", "+KEY=stolen"))]])
    result = run(ws, agent)
    assert unchanged(ws, ".env", "secrets/notes.md")
    [out] = [o for o in outputs(result) if o]
    assert f"writing `{path}` failed" in out and "as before the patch" in out
    [x] = executions(rt)  # claimed, so recorded: with the refusal
    assert "symlink" in error_of(x) or "Too many levels" in error_of(x)


# ------------------------------------------------------------------------------ one review
def test_a_patch_holding_several_operations_is_reviewed_in_one_round(rt, ws):
    agent, gate = box_agent(rt, [[call("p1", add("docs/c.md", "c"), delete("docs/b.md"), delete("old.txt"))]])
    asked = []

    async def steps(result, config):
        [held] = result.interruptions
        req = request_for(gate, held)
        # every held operation, each bound to its own content (decision and digest)
        ops = req["operations"]
        assert [o["args"] for o in ops] == [{"operation": "delete_file", "path": "docs/b.md"},
                                            {"operation": "delete_file", "path": "old.txt"}]
        assert req["decision_id"] == ops[0]["decision_id"] != ops[1]["decision_id"]
        state = result.to_state()
        # one call approves the whole patch: each held operation under its own decision and digest
        assert approve(gate, state, held, Approval.for_request(req, "olga")).run
        again = await Runner.run(agent, state, run_config=config)
        asked.append(again.interruptions)
        return again

    run(ws, agent, steps=steps)
    # before: the resumed call answered that the other deletion awaits approval (a second round)
    assert asked == [[]]
    assert (ws / "docs" / "c.md").read_text() == "c" and not (ws / "docs" / "b.md").exists()
    assert not (ws / "old.txt").exists()
    assert sorted((x["receipt"]["path"], x["receipt"].get("reviewer")) for x in executions(rt)) == [
        ("docs/b.md", "olga"), ("docs/c.md", None), ("old.txt", "olga")]


def test_an_approval_of_part_of_a_patch_applies_none_of_it(rt, ws):
    agent, gate = box_agent(rt, [[call("p1", add("docs/c.md", "c"), delete("docs/b.md"), delete("old.txt"))]])

    async def steps(result, config):
        [held] = result.interruptions
        req = request_for(gate, held)
        state = result.to_state()
        assert gate.approve(req, Approval.for_request(req, "olga")).run  # the first operation only
        state.approve(held)
        return await Runner.run(agent, state, run_config=config)

    result = run(ws, agent, steps=steps)
    assert not (ws / "docs" / "c.md").exists() and unchanged(ws, "docs/b.md", "old.txt") and executions(rt) == []
    assert any("operation 3 of 3 (delete_file `old.txt`)" in o and "approval required" in o for o in outputs(result))


def test_a_held_patch_that_cannot_apply_is_answered_at_once_never_put_to_a_reviewer(rt, ws):
    agent, _ = box_agent(rt, [[call("p1", delete("old.txt"), upd("docs/b.md", "-gamma", "+G"))]])
    result = run(ws, agent)
    # before: an interruption for the deletion; approved, the patch then failed on its diff
    assert result.interruptions == [] and unchanged(ws, "old.txt", "docs/b.md") and executions(rt) == []
    [out] = [o for o in outputs(result) if o]
    assert "operation 2 of 2 (update_file `docs/b.md`): Invalid Context" in out


def test_a_large_refused_patch_answers_the_model_in_bounded_text(rt, ws):
    """Before, every operation was named: a patch of thousands of files answered the model
    with a text as large as the patch (its context flooded)."""
    many = [add(f"docs/n{k}.md", "x") for k in range(60)]
    agent, _ = box_agent(rt, [[call("p1", *many, add(".env", "KEY=x"))]])
    result = run(ws, agent)
    [out] = [o for o in outputs(result) if o]
    assert "operation 61 of 61 (create_file `.env`)" in out and "and 40 more" in out
    assert out.count("create_file `docs/") == 20 and executions(rt) == []


def test_an_approved_deletion_never_deletes_a_link_target_swapped_in(rt, ws, monkeypatch):
    """``docs/notes.md`` held for deletion and approved; as the resumed call claims it, the
    file becomes a link to ``.env``. Before, the sandbox resolved the link again and deleted
    ``.env``."""
    agent, gate = box_agent(rt, [[call("p1", delete("docs/notes.md"))]])
    take = ToolGate.take

    def swapped(self, check, approver=None):
        swap_file(ws)
        return take(self, check, approver)

    async def steps(result, config):
        [held] = result.interruptions
        state = result.to_state()
        assert approve(gate, state, held, Approval.for_request(request_for(gate, held), "olga")).run
        monkeypatch.setattr(ToolGate, "take", swapped)
        return await Runner.run(agent, state, run_config=config)

    result = run(ws, agent, steps=steps)
    assert unchanged(ws, ".env") and os.path.islink(ws / "docs" / "notes.md")
    assert any("writing `docs/notes.md` failed" in o and "symlink" in o for o in outputs(result))
