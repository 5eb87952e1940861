"""A sandbox agent's reads and links judged as the sandbox resolves them. Before,
``view_image`` was judged on its ``path`` as the model wrote it, so ``docs/../secrets/x.png``
or a symlink ``docs/pic.png -> ../secrets/x.png`` got past a rule denying ``secrets``, and a
patch naming one file by two names (two hard links, a path and its symlink alias) was
planned as two files: the last write won and the gate judged two paths for one file.
Against the real openai-agents package: the SDK's ``Runner``, a scripted model and a real
Unix-local sandbox session (no network)."""

from __future__ import annotations

import asyncio
import json
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
from agents.sandbox import Manifest, SandboxAgent  # noqa: E402
from agents.sandbox.capabilities import Filesystem, Shell  # noqa: E402
from agents.sandbox.entries import File  # noqa: E402
from agents.sandbox.sandboxes import UnixLocalSandboxClient  # noqa: E402
from openai.types.responses import ResponseCustomToolCall, ResponseFunctionToolCall  # noqa: E402

from policy_engine import Runtime  # noqa: E402
from policy_engine.integrations.openai_agents import Approval, approve, protect, request_for  # noqa: E402
from tests.test_integrations_openai_agents_sandbox import Scripted, outputs  # noqa: E402

POLICY = """\
roles [ops_lead]

workflow "box" {
  version "1"
  owners {
    business "Dev"
    technical "Platform"
  }
  default deny

  action view_image {
    system "sandbox"
    description "Read an image of the sandbox"
    receipt [path, reviewer]

    deny secrets when `action.path.startsWith("secrets")`
    require_approval held by 1 ops_lead when `action.path.startsWith("held/")`
    allow docs when `action.path.startsWith("docs/")`
  }

  action apply_patch {
    system "sandbox"
    description "Patch the sandbox workspace"
    irreversible
    receipt [operation, path]

    deny secrets when `action.path.startsWith("secrets")`
    allow docs when `action.path.startsWith("docs/")`
  }
}
"""

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
FILES = {
    "secrets/x.png": PNG,
    "docs/ok.png": PNG,
    "held/p.png": PNG,
    "docs/a.md": b"one\ntwo\n",
    "secrets/s.md": b"one\ntwo\n",
}


@pytest.fixture
def rt(tmp_path):
    (tmp_path / "box.policy").write_text(POLICY)
    with Runtime.open(str(tmp_path / "box.policy"), ledger=f"sqlite:///{tmp_path / 'l.db'}") as r:
        yield r


@pytest.fixture
def ws(tmp_path):
    return tmp_path / "ws"


def view(cid, path):
    return ResponseFunctionToolCall(
        type="function_call", id=f"fc_{cid}", call_id=cid, name="view_image", arguments=json.dumps({"path": path})
    )


def patch(cid, *sections):
    text = "\n".join(["*** Begin Patch", *(line for s in sections for line in s), "*** End Patch"]) + "\n"
    return ResponseCustomToolCall(type="custom_tool_call", id=f"ct_{cid}", call_id=cid, name="apply_patch", input=text)


def upd(path, *lines):
    return [f"*** Update File: {path}", "@@", *lines]


def run(rt, ws, turns, links=(), then=None):
    """Run a protected sandbox agent on a live Unix-local session whose workspace is ``ws``
    (``FILES``, then ``links``: ``(kind, link, target)`` made in it)."""
    agent = SandboxAgent(name="box", instructions="x", model=Scripted(turns), capabilities=[Filesystem(), Shell()])
    gate = protect(agent, rt, workflow="box", approvers={"olga": ["ops_lead"]})

    async def go():
        entries = {k: File(content=v) for k, v in FILES.items()}
        session = await UnixLocalSandboxClient().create(manifest=Manifest(root=str(ws), entries=entries), options=None)
        async with session:
            for kind, link, target in links:
                (os.symlink if kind == "sym" else os.link)(target if kind == "sym" else ws / target, ws / link)
            config = RunConfig(sandbox=SandboxRunConfig(session=session))
            result = await Runner.run(agent, "go", run_config=config)
            return await then(gate, result, agent, config) if then is not None else result

    return asyncio.run(go())


def decisions(rt):
    return [e.body for e in rt.ledger.entries(kind="decision")]


def executions(rt):
    return [e.body for e in rt.ledger.entries(kind="execution")]


# ------------------------------------------------------------------------------------ view_image
@pytest.mark.parametrize(
    "path, links",
    [
        ("docs/../secrets/x.png", ()),
        ("./docs/../secrets/x.png", ()),
        ("docs/pic.png", [("sym", "docs/pic.png", "../secrets/x.png")]),
        ("docs/s/x.png", [("sym", "docs/s", "../secrets")]),
    ],
)
def test_an_image_is_judged_as_the_file_the_sandbox_reads(rt, ws, path, links):
    result = run(rt, ws, [[view("v1", path)]], links)
    [d] = decisions(rt)
    assert (d["action"]["path"], d["action"]["path_given"], d["decision"]["effect"]) == ("secrets/x.png", path, "deny")
    assert any("Stopline denied `view_image` (secrets)" in o for o in outputs(result))
    assert not executions(rt) and not any("data:image" in o for o in outputs(result))


def test_an_allowed_image_is_read_as_judged(rt, ws):
    result = run(rt, ws, [[view("v1", "./docs/ok.png")]])
    [d] = decisions(rt)
    assert (d["action"]["path"], d["decision"]["effect"]) == ("docs/ok.png", "allow")
    [x] = executions(rt)
    assert x["receipt"]["path"] == "docs/ok.png"
    assert any("data:image/png" in o for o in outputs(result))


@pytest.mark.parametrize("path", ["../outside.png", "docs/out.png"])
def test_an_image_outside_the_workspace_is_never_read(rt, ws, path):
    (ws.parent / "outside.png").parent.mkdir(parents=True, exist_ok=True)
    (ws.parent / "outside.png").write_bytes(PNG)
    result = run(rt, ws, [[view("v1", path)]], [("sym", "docs/out.png", "../../outside.png")])
    assert not executions(rt) and not any("data:image" in o for o in outputs(result))
    [out] = [o for o in outputs(result) if o]
    assert out.startswith(("Stopline refused `view_image`", "Stopline denied `view_image`"))
    if path == "docs/out.png":  # (a rule allows `docs/`: the sandbox's refusal keeps it from being read)
        assert "the sandbox refuses the path `docs/out.png`" in out
        # a path out of the workspace is not a type slip: the model is told to stay inside it
        assert "input schema" not in out and out.endswith("Call it again with a path inside the workspace.")


def test_a_held_image_is_reviewed_as_judged_and_read_once_approved(rt, ws):
    async def then(gate, result, agent, config):
        [held] = result.interruptions
        req = request_for(gate, held)
        args = req["args"]
        assert (args["path"], args["path_given"], req["rule"]) == ("held/p.png", "docs/../held/p.png", "held")
        state = result.to_state()
        assert approve(gate, state, held, Approval.for_request(req, "olga")).run
        return await Runner.run(agent, state, run_config=config)

    result = run(rt, ws, [[view("v1", "docs/../held/p.png")]], then=then)
    [x] = executions(rt)
    assert x["receipt"]["path"] == "held/p.png" and x["receipt"]["reviewer"] == "olga"
    assert any("data:image/png" in o for o in outputs(result))


def test_a_held_image_is_approved_from_a_saved_state_by_another_gate(rt, ws):
    """A reviewer elsewhere (a fresh agent and gate, no note of the held call): ``request_for``
    resolves the ``path`` without the session (``docs/../held/p.png`` is ``held/p.png``) and
    names the held decision, which the approval then reads."""
    from agents import RunState

    async def then(gate, result, agent, config):
        saved = result.to_state().to_json()
        other = SandboxAgent(name="box", instructions="x", model=Scripted([]), capabilities=[Filesystem(), Shell()])
        gate2 = protect(other, rt, workflow="box", approvers={"olga": ["ops_lead"]})
        state = await RunState.from_json(other, saved)
        [held] = state.get_interruptions()
        req = request_for(gate2, held)
        args = req["args"]
        assert (req["rule"], args["path"], args["path_given"]) == ("held", "held/p.png", "docs/../held/p.png")
        assert approve(gate2, state, held, Approval.for_request(req, "olga")).run
        return await Runner.run(other, state, run_config=config)

    result = run(rt, ws, [[view("v1", "docs/../held/p.png")]], then=then)
    assert [d["decision"]["effect"] for d in decisions(rt)] == ["require_approval"]
    assert len(executions(rt)) == 1 and any("data:image/png" in o for o in outputs(result))


# ----------------------------------------------------------------------------- one file, two names
@pytest.mark.parametrize(
    "second, link",
    [
        ("docs/b.md", ("hard", "docs/b.md", "docs/a.md")),  # a hard link: two paths, one inode
        ("docs/l.md", ("sym", "docs/l.md", "a.md")),  # a symlink alias: resolved to docs/a.md
    ],
)
def test_a_patch_naming_one_file_by_two_names_is_refused_whole(rt, ws, second, link):
    result = run(
        rt, ws, [[patch("p1", upd("docs/a.md", "-one", "+ONE"), upd(second, "-two", "+TWO"))]], [link]
    )
    # before: a hard link was planned as two files from the same old text, the second write
    # winning (`one\nTWO\n`); a symlink alias (resolved to one path) applied in order: both
    # refused now, one file by one name
    assert (ws / "docs" / "a.md").read_bytes() == b"one\ntwo\n"
    assert not executions(rt)
    [out] = [o for o in outputs(result) if o]
    assert "operation 2 of 2" in out and "one file by two names" in out and "None of its 2 operations" in out


def test_a_hard_link_named_first_is_refused_too(rt, ws):
    """The link named before the file it shares (``docs/h.md``, then ``docs/a.md``)."""
    result = run(rt, ws, [[patch("p1", upd("docs/h.md", "-one", "+ONE"), upd("docs/a.md", "-one", "+ONE"))]],
                 [("hard", "docs/h.md", "docs/a.md")])
    assert (ws / "docs" / "a.md").read_bytes() == b"one\ntwo\n" and not executions(rt)
    assert any("a hard link of it" in o for o in outputs(result))


def test_one_name_in_several_operations_is_still_one_file_in_order(rt, ws):
    run(rt, ws, [[patch("p1", upd("docs/a.md", "-one", "+ONE"), upd("./docs/a.md", "-two", "+TWO"))]])
    assert (ws / "docs" / "a.md").read_bytes() == b"ONE\nTWO\n"
    assert len(executions(rt)) == 2
