"""A sandbox apply_patch operation is judged on the file the sandbox writes: a symlink in
the workspace is followed as the Unix-local sandbox follows it (its target judged, not
the link's name), and a path the sandbox refuses (a link out of the workspace) refuses
the whole patch before anything is applied. Before, the path was judged as spelled: a
link under an allowed directory wrote a denied file, or a stop-guarded one."""

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

from agents import RunConfig, Runner  # noqa: E402
from agents.run_config import SandboxRunConfig  # noqa: E402
from agents.sandbox import Manifest  # noqa: E402
from agents.sandbox.entries import File  # noqa: E402
from agents.sandbox.sandboxes import UnixLocalSandboxClient  # noqa: E402
from openai.types.responses import ResponseCustomToolCall  # noqa: E402

from policy_engine import Runtime  # noqa: E402
from policy_engine.integrations.openai_agents import WorkflowStopped  # noqa: E402
from tests.test_integrations_openai_agents_sandbox import POLICY, box_agent, executions, outputs, patch  # noqa: E402


@pytest.fixture
def rt(tmp_path):
    (tmp_path / "box.policy").write_text(POLICY)
    with Runtime.open(str(tmp_path / "box.policy"), ledger=f"sqlite:///{tmp_path / 'l.db'}") as r:
        yield r


@pytest.fixture
def ws(tmp_path):
    return tmp_path / "ws"


def run(ws, agent, links):
    """Run ``agent`` on a Unix-local session of ``ws`` (``.env`` and ``docs/`` in it) with
    the symlinks ``links`` (``{name: target}``) made in the workspace before the run."""

    async def go():
        entries = {".env": File(content=b"KEY=1\n"), "docs/readme.md": File(content=b"hi\n")}
        session = await UnixLocalSandboxClient().create(manifest=Manifest(root=str(ws), entries=entries), options=None)
        async with session:
            for name, target in links.items():
                os.symlink(target, ws / name)
            return await Runner.run(agent, "go", run_config=RunConfig(sandbox=SandboxRunConfig(session=session)))

    return asyncio.run(go())


def update(cid, path, old, new):
    text = f"*** Begin Patch\n*** Update File: {path}\n@@\n-{old}\n+{new}\n*** End Patch\n"
    return ResponseCustomToolCall(type="custom_tool_call", id=f"ct_{cid}", call_id=cid, name="apply_patch", input=text)


def judged(rt):
    return [e.body["action"]["path"] for e in rt.ledger.entries(kind="decision")]


def test_a_link_under_an_allowed_directory_is_judged_as_its_target(rt, ws):
    agent, _ = box_agent(rt, [[update("p1", "docs/notes.md", "KEY=1", "KEY=stolen")]])
    result = run(ws, agent, {"docs/notes.md": "../.env"})
    # before: judged `docs/notes.md` (allowed) and the sandbox wrote through the link into .env
    assert (ws / ".env").read_text() == "KEY=1\n"
    assert judged(rt) == [".env"] and executions(rt) == []
    [out] = [o for o in outputs(result) if o]
    assert "(update_file `docs/notes.md`, writing `.env`): Stopline denied `apply_patch` (secrets)" in out


def test_a_linked_directory_is_followed_to_a_stop_guarded_path(rt, ws):
    (ws / "etc").mkdir(parents=True)
    agent, _ = box_agent(rt, [[patch("p1", ("add", "docs/sys/passwd", ["root::0:0"]))]])
    with pytest.raises(WorkflowStopped):  # before: allowed as `docs/sys/passwd`, written to etc/passwd
        run(ws, agent, {"docs/sys": "../etc"})
    assert not (ws / "etc" / "passwd").exists() and rt.workflow_status("box")["status"] == "stopped"


def test_a_link_out_of_the_workspace_refuses_the_whole_patch(rt, ws, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    agent, _ = box_agent(rt, [[patch("p1", ("add", "docs/ok.md", ["fine"]), ("add", "docs/out/x.md", ["x"]))]])
    result = run(ws, agent, {"docs/out": str(outside)})
    assert list(outside.iterdir()) == [] and not (ws / "docs" / "ok.md").exists()
    # before: docs/ok.md written, and the refused write recorded as an execution (an error)
    assert executions(rt) == []
    [out] = [o for o in outputs(result) if o]
    assert "operation 2 of 2 (create_file `docs/out/x.md`)" in out and "Traceback" not in out


def test_backslashes_are_separators(rt, ws):
    agent, _ = box_agent(rt, [[patch("p1", ("add", "docs\\..\\.env", ["KEY=stolen"]))]])
    result = run(ws, agent, {})
    assert (ws / ".env").read_text() == "KEY=1\n" and judged(rt) == [".env"]
    assert any("(secrets)" in o for o in outputs(result))
