"""The OpenAI Agents SDK's sandbox agents (``agents.sandbox.SandboxAgent``) gated.

A sandbox agent's model acts on its sandbox (a Unix-local workspace, a Docker container, a
hosted one) only through the tools its capabilities give it at each run, bound to the
run's live session (``RunConfig(sandbox=SandboxRunConfig(...))``). The runner prepares an
execution agent for the run with ``agent.clone(tools=[*agent.tools, *capability tools])``;
``protect`` covers the clone (``openai_agents._cover``), so each capability tool is gated
when the runner lists the turn's tools, before any call of it:

- ``Shell``: ``exec_command`` (``cmd``, ``workdir``, ``shell``, ``login``, ``tty``, ...; a
  process it leaves running goes on after the call) and ``write_stdin`` (``session_id``,
  ``chars``: input typed into that process) are function tools: gated as any function tool
  (a hold is an SDK interruption, a deny the model's tool output, a stop halts the run);
- ``Filesystem``: ``view_image`` (a read) is a function tool, gated as one; its
  ``apply_patch`` is a ``CustomTool`` (a V4A patch, one raw string in) whose operations the
  tool applies one by one through its ``editor``, after asking its operation-typed
  ``needs_approval``: gated as the ``ApplyPatchTool`` is (``openai_agents_tools``): each
  operation an action ``{"operation", "path", "diff"?, "move_to"?}`` with its path
  resolved in the workspace as the sandbox will write it (``./.env`` and ``.env`` are one
  path), claimed before the write and recorded; a refused operation never reaches the
  sandbox (the model reads why); a held one is an SDK interruption; a stop halts the run;
- ``Skills`` (lazy): ``load_skill`` (copies a skill into the workspace) is a function tool;
- a custom capability's tools: as their kind is gated (or warned about).

What the model does not drive is the developer's configuration, not gated: the manifest's
entries and mounts materialized when the session starts, snapshots, the session's cleanup.
``Memory`` with ``generate`` set runs the SDK's own memory agents (a ``SandboxAgent`` with
the default shell and filesystem capabilities, unprotected) on the session after the run:
``protect`` warns about it (``UngatedToolWarning``).
"""

from __future__ import annotations

from typing import Any

from .common import Check, require_extra

require_extra("agents", "openai-agents", "openai_agents")

from . import openai_agents_tools as native  # noqa: E402

#: the sandbox's own apply_patch (a ``CustomTool`` whose editor applies each operation)
PATCH_KIND = "SandboxApplyPatchTool"


def normalizer(tool: Any) -> Any:
    """How ``tool`` (a ``SandboxApplyPatchTool``) resolves an operation's paths in its
    workspace (its scope's working directory, the session's path policy): what its
    ``needs_approval`` is asked about, where its editor gets the model's operation."""
    from agents.sandbox.apply_patch import WorkspaceEditor

    def normalize(operation: Any) -> Any:
        return WorkspaceEditor(tool.session, workspace_scope=tool.workspace_scope).normalize_operation(operation)

    return normalize


def gate_patch(layer: Any, tool: Any) -> None:
    """Gate a sandbox's apply_patch: its editor and its operation-typed ``needs_approval``.
    The operation a call is held on is noted on the layer (``held``, by tool name and call
    id), as ``needs_approval`` was asked about it: ``request_for`` names that decision (the
    interruption carries the model's raw patch, and the tool that resolves its paths is
    gone with the run)."""
    native.gate_apply_patch(layer, tool, normalize=normalizer(tool))
    asks, name = tool.needs_approval, tool.name

    async def needs(ctx: Any, operation: Any, call_id: str) -> bool:
        held = await asks(ctx, operation, call_id)
        if held:
            layer.held[(name, call_id)] = native.patch_args(operation)
        return bool(held)

    tool.needs_approval = needs


def patch_request_check(gate: Any, name: str, call_id: str, raw_input: str, held: dict) -> Check:
    """The decision behind an interruption of a sandbox's apply_patch: the operation its
    ``needs_approval`` held (``held``), else (a state resumed in another process) each
    operation of the raw patch, its path taken relative to the workspace root (``./a`` is
    ``a``), the first held one, else the first. A path resolved otherwise in the run (an
    absolute path, a ``cwd``) names another decision: approving it runs nothing (the
    operation stays held)."""
    args = held.get((name, call_id))
    if args is not None:
        return gate.check(name, args, native.patch_id(args), scope=native._scope(gate))
    from agents.sandbox.capabilities.tools.apply_patch_tool import _parse_custom_tool_input

    checks = []
    for op in _parse_custom_tool_input(raw_input):  # (``patch_args`` resolves ``.`` and ``..``)
        a = native.patch_args(op)
        checks.append(gate.check(name, a, native.patch_id(a), scope=native._scope(gate)))
    if not checks:
        raise ValueError("the apply_patch call carries no operation")
    return next((c for c in checks if c.effect == "require_approval" and c.status == "pending"), checks[0])


def is_sandbox_agent(agent: Any) -> bool:
    return any(c.__name__ == "SandboxAgent" for c in type(agent).__mro__)


def ungated_capabilities(agent: Any) -> list[tuple[str, str]]:
    """What a sandbox agent's capabilities do outside the policy, as ``(label, why)``."""
    found = []
    for cap in getattr(agent, "capabilities", None) or ():
        names = {c.__name__ for c in type(cap).__mro__}
        if "Memory" in names and getattr(cap, "generate", None) is not None:
            found.append(("memory", "its memory generation runs the SDK's own sandbox agents (shell, apply_patch) "
                          "on the session after each run, unprotected; set `Memory(generate=None)`"))
    return found
