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
  (a hold is an SDK interruption, a deny the model's tool output, a stop halts the run),
  ``exec_command`` with its ``workdir`` the directory it runs in (``exec_resolver``:
  resolved as the tool resolves it, ``./secrets`` and ``docs/../secrets`` are ``secrets``,
  a symlink followed as the session follows it; the model's own in ``workdir_given``);
- ``Filesystem``: ``view_image`` (a read) is a function tool, gated as one; its
  ``apply_patch`` is a ``CustomTool`` (a V4A patch, one raw string in) whose operations the
  tool applies one by one through its ``editor``: each operation an action ``{"operation",
  "path", "diff"?, "move_to"?}`` whose path is the file the sandbox writes (resolved in the
  workspace: ``./.env``, ``docs/../.env`` and ``docs\\..\\.env`` are ``.env``; a symlink
  followed as the session follows it: its target is judged, a target outside the
  workspace by its absolute path), claimed before the write and recorded (``GatedEditor``,
  ``openai_agents_tools``). A patch is applied whole or not at all, as the gate sees it:
  every operation is judged before any is applied (the tool's ``needs_approval`` and its
  ``on_invoke_tool``, both on the raw patch); one denied, held without an approval, or on a
  path the sandbox refuses, and none is applied: the model reads which and why. An allowed
  operation of a refused patch stays an allowed decision, never claimed nor recorded as
  run (sent again, the same operation is the same decision, and runs). A held operation
  (and no refused one) is an SDK interruption; a stop in any operation halts the run;
- ``Skills`` (lazy): ``load_skill`` (copies a skill into the workspace) is a function tool;
- a custom capability's tools: as their kind is gated (or warned about).

What the model does not drive is the developer's configuration, not gated: the manifest's
entries and mounts materialized when the session starts, snapshots, the session's cleanup.
``Memory`` with ``generate`` set runs the SDK's own memory agents (a ``SandboxAgent`` with
the default shell and filesystem capabilities, unprotected) on the session after the run:
``protect`` warns about it (``UngatedToolWarning``).
"""

from __future__ import annotations

import inspect
import os
from pathlib import PurePosixPath
from typing import Any

from .common import Check, Outcome, WorkflowStopped, conform, require_extra

require_extra("agents", "openai-agents", "openai_agents")

from . import openai_agents_tools as native  # noqa: E402

#: the sandbox's own apply_patch (a ``CustomTool`` whose editor applies each operation)
PATCH_KIND = "SandboxApplyPatchTool"
#: held patch calls noted on a layer at most (the oldest forgotten first: ``request_for``
#: then reads the operations from the patch, as in another process)
MAX_NOTES = 1024


def _parse(raw: str) -> list:
    """The operations of a raw patch (V4A text or JSON); a patch the SDK cannot read is a
    ``ValueError`` (the SDK's parser also raises ``TypeError`` and ``KeyError`` on odd JSON)."""
    from agents.sandbox.capabilities.tools.apply_patch_tool import _parse_custom_tool_input

    try:
        return _parse_custom_tool_input(raw)
    except ValueError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"the patch cannot be read: {type(e).__name__}: {e}") from e


def _parsed(raw: str) -> list | None:
    try:
        return _parse(raw)
    except ValueError:
        return None


def _workspace_op(tool: Any, operation: Any) -> Any:
    """``operation`` with its paths relative to the workspace root, as the SDK validates
    them (the scope's ``cwd``, ``.``/``..``, backslashes, the root's absolute path)."""
    from agents.sandbox.apply_patch import WorkspaceEditor

    return WorkspaceEditor(tool.session, workspace_scope=tool.workspace_scope).normalize_operation(operation)


def _written(session: Any, rel: str, *, leaf: bool) -> str:
    """The file the session writes for workspace path ``rel``: relative to the workspace
    root, or absolute outside it (an extra path grant). Symlinks are followed as the
    session's ``normalize_path`` follows them (a Unix-local session resolves them on the
    host; a remote one takes the path as it is); a created file's own name is not
    (``leaf=False``: the sandbox creates it without following a link of that name). A
    path the session refuses (a link out of the workspace, a read-only grant) raises."""
    p = PurePosixPath(rel)
    if leaf or p.name in ("", ".", ".."):
        target = session.normalize_path(rel, for_write=True)
    else:
        target = session.normalize_path(p.parent.as_posix(), for_write=True) / p.name
    return _relative(session, target)


def _relative(session: Any, target: Any) -> str:
    """``target`` (a path the session's ``normalize_path`` returned) relative to the
    workspace root (``.`` for the root), or absolute outside it."""
    got = PurePosixPath(str(target).replace(os.sep, "/"))
    root = str(session.state.manifest.root)
    roots = [PurePosixPath(os.path.normpath(root))]
    if os.path.isdir(root):  # a workspace on this host: its real path, as symlinks resolve
        roots.append(PurePosixPath(os.path.realpath(root)))
    for base in roots:
        try:
            inside = got.relative_to(base)
        except ValueError:
            continue
        return inside.as_posix() if inside.parts else "."
    return got.as_posix()


#: the sandbox shell's command tool (a ``FunctionTool`` bound to the run's session)
EXEC_KIND = "ExecCommandTool"


def is_exec_tool(tool: Any) -> bool:
    return any(c.__name__ == EXEC_KIND for c in type(tool).__mro__) and getattr(tool, "session", None) is not None


def exec_resolver(tool: Any) -> Any:
    """How an ``exec_command`` call of ``tool`` is judged: its ``workdir`` as the directory
    the command runs in, resolved as the tool resolves it (the scope's ``cwd``, ``.`` and
    ``..``, backslashes, symlinks followed as the session's ``normalize_path`` follows them)
    and relative to the workspace root (``.``: the root, where a call without one runs;
    absolute outside it, an extra path grant); ``workdir_given``: the model's own, as it
    wrote it. Returns ``(args, problem)``: a directory the sandbox refuses is the problem
    (the call is gated and never run)."""
    from agents.sandbox.workspace_paths import coerce_posix_path, sandbox_path_str

    def resolve(args: dict) -> tuple[dict, str | None]:
        given = args.get("workdir")
        out = {**args, "workdir_given": given}
        scope = tool.workspace_scope
        wd = given if isinstance(given, str) and given.strip() else "."
        try:
            target = tool.session.normalize_path(sandbox_path_str(scope.anchor(coerce_posix_path(wd))))
        except Exception as e:  # noqa: BLE001 - refused by the sandbox too (out of the workspace, ...)
            out["workdir"] = str(given)
            return out, f"the sandbox refuses the workdir `{given}` ({e})"
        out["workdir"] = _relative(tool.session, target)
        return out, None

    return resolve


def lexical_workdir(args: dict) -> dict:
    """An ``exec_command`` call's arguments as ``exec_resolver`` judges them, without its
    session (a state resumed in another process): the ``workdir`` relative to the workspace
    root with ``.`` and ``..`` resolved (no ``cwd``, no symlink: a call resolved otherwise
    in the run names another decision, whose approval runs nothing)."""
    from agents.sandbox.capabilities.tools.shell_tool import ExecCommandArgs

    args, _ = conform(ExecCommandArgs.model_json_schema(), args)  # (the tool's defaults, as ``wrap`` fills them)
    given = args.get("workdir")
    wd = str(given).replace("\\", "/") if isinstance(given, str) and given.strip() else "."
    return {**args, "workdir_given": given, "workdir": os.path.normpath(wd).replace(os.sep, "/")}


def normalizer(tool: Any) -> Any:
    """How ``tool`` (a ``SandboxApplyPatchTool``) gets an operation judged: its paths as the
    files its session writes (``_workspace_op``, then ``_written``), what the gate is asked
    about, where its editor gets the model's operation. Raises for a path the sandbox
    refuses."""
    from agents.editor import ApplyPatchOperation

    def normalize(operation: Any) -> Any:
        op = _workspace_op(tool, operation)
        move_to = _written(tool.session, op.move_to, leaf=True) if op.move_to is not None else None
        return ApplyPatchOperation(
            type=op.type,
            path=_written(tool.session, op.path, leaf=op.type != "create_file"),
            diff=op.diff,
            ctx_wrapper=op.ctx_wrapper,
            move_to=move_to,
        )

    return normalize


def _label(op: Any, judged: Any = None) -> str:
    """An operation as the model reads it: its kind and path as the model wrote it, and
    the file it writes when that is another (a symlink, a ``cwd``)."""
    text = f"{op.type} `{op.path}`"
    if judged is not None and judged.path != op.path:
        text += f", writing `{judged.path}`"
    return text


def _refusal(name: str, labels: list[str], refused: dict[int, str]) -> str:
    """The model's answer for a patch refused whole: each refused operation and why, and
    the allowed ones not applied with them."""
    n = len(labels)
    why = "; ".join(f"operation {i} of {n} ({labels[i - 1]}): {refused[i]}" for i in sorted(refused))
    text = (
        f"Stopline refused `{name}`: none of its {n} operations was applied (a patch is applied whole or "
        f"not at all). Refused: {why}."
    )
    rest = [f"{i} ({label})" for i, label in enumerate(labels, 1) if i not in refused]
    if rest:
        text += (
            f" Not applied with them: operation {', '.join(rest)}; send those again in a patch without the "
            "refused ones."
        )
    return text


def _answer(gate: Any, c: Check) -> Outcome | None:
    """The ledger's answer for one operation, claiming nothing: ``None`` when approval is
    needed (held or approved); a workflow stopped since its decision refuses it."""
    try:
        return gate.outcome(c)
    except WorkflowStopped as e:
        return Outcome(False, f"Stopline refused `{c.tool}`: {e}")


def gate_patch(layer: Any, tool: Any) -> None:
    """Gate a sandbox's apply_patch: its editor (``GatedEditor``: each operation claimed
    and recorded as it is applied), and the tool's raw-patch ``needs_approval`` and
    ``on_invoke_tool`` (every operation judged before any is applied: ``judge``). The
    operations a call is held on are noted on the layer (``held``, by tool name and call
    id, with the raw patch) until the call is reached again: ``request_for`` names that
    decision (the interruption carries the model's raw patch, and the tool that resolves
    its paths is gone with the run)."""
    own = tool.needs_approval  # the developer's operation-typed ask (bool or callable): kept
    normalize = normalizer(tool)
    native.gate_apply_patch(layer, tool, normalize=normalize)
    name, invoke = tool.name, tool.on_invoke_tool

    def judge(ops: list) -> tuple[list[str], dict[int, Check], dict[int, str]]:
        """The operations' labels (as judged), each judged one's check and the reasons of
        those refused before any check (a path the sandbox refuses), by their place in the
        patch (from 1)."""
        labels: list[str] = []
        checks: dict[int, Check] = {}
        refused: dict[int, str] = {}
        for i, op in enumerate(ops, 1):
            try:
                judged = normalize(op)
            except Exception as e:  # noqa: BLE001 - a path the sandbox refuses too: never written
                labels.append(_label(op))
                refused[i] = f"the sandbox refuses its path ({e})"
                continue
            labels.append(_label(op, judged))
            checks[i] = native.patch_check(layer.gate, name, judged)
        return labels, checks, refused

    async def needs(ctx: Any, raw: str, call_id: str) -> bool:
        layer.held.pop((name, call_id), None)
        ops = _parsed(raw)
        if ops is None:
            return False  # a malformed patch: its call answers the SDK's error, nothing held
        _labels, checks, refused = judge(ops)
        for c in checks.values():
            if c.effect == "stop" and not layer.gate.resumed_since(c):
                raise WorkflowStopped(c)  # (a stop recorded before a resume: refused when the call is reached)
        if refused:
            return False  # refused whole when the call is reached (its answer names why)
        held = []
        for c in checks.values():
            out = _answer(layer.gate, c)
            if out is not None and not out.run and not out.done:
                return False  # (likewise; one that already ran is answered so, the others go on)
            if out is None and c.status == "pending" and not c.problem:
                held.append(c)
        if not held:  # the developer's own ask, of each operation as the SDK shows it
            for i, op in enumerate(ops, 1):
                asked = own(ctx, _workspace_op(tool, op), call_id) if callable(own) else own
                if await asked if inspect.isawaitable(asked) else asked:
                    held.append(checks[i])
                    break
        if held:
            layer.held[(name, call_id)] = {"input": raw, "operations": [dict(c.args) for c in held]}
            while len(layer.held) > MAX_NOTES:
                del layer.held[next(iter(layer.held))]
        return bool(held)

    async def on_invoke_tool(ctx: Any, raw: str) -> Any:
        layer.held.pop((name, str(getattr(ctx, "tool_call_id", ""))), None)  # the call is reached: its note ends
        try:
            ops = _parse(raw)
        except ValueError as e:  # malformed: nothing applied (the model reads why, the operator no traceback)
            return f"`{name}` could not read the patch: {e}; nothing was applied"
        try:
            labels, checks, refused = judge(ops)
            for i, c in checks.items():
                out = _answer(layer.gate, c)
                if out is None:
                    try:
                        out = layer.gate.ready(c)  # approved in the ledger, never by the SDK's approval alone
                    except WorkflowStopped as e:
                        out = Outcome(False, f"Stopline refused `{name}`: {e}")
                if not out.run and not out.done:  # (one that already ran: its editor answers so)
                    refused[i] = out.message
        except Exception as e:  # noqa: BLE001 - not judged (the ledger unreachable, ...): nothing applied
            why = f"{type(e).__name__}: {e}"
            return f"Stopline refused `{name}`: the patch could not be gated ({why}); none of it was applied"
        if refused:
            return _refusal(name, labels, refused)
        return await invoke(ctx, raw)  # each operation claimed, applied and recorded by the gated editor

    on_invoke_tool.__stopline_gated__ = layer  # type: ignore[attr-defined]
    tool.on_invoke_tool = on_invoke_tool
    tool.runtime_needs_approval = lambda: needs


def patch_request_check(gate: Any, name: str, call_id: str, raw_input: str, held: dict) -> Check:
    """The decision behind an interruption of a sandbox's apply_patch: the operations its
    ``needs_approval`` held (``held``, noted with this raw patch), else (a state resumed in
    another process, or a note of another call that reused the id) each operation of the
    raw patch, its path taken relative to the workspace root (``./a`` is ``a``), the first
    held one, else the first. A path resolved otherwise in the run (an absolute path, a
    ``cwd``, a symlink) names another decision: approving it runs nothing (the operation
    stays held)."""
    note = held.get((name, call_id))
    if isinstance(note, dict) and note.get("input") == raw_input and note.get("operations"):
        args = list(note["operations"])
    else:
        args = [native.patch_args(op) for op in _parse(raw_input)]  # (``patch_args`` resolves ``.`` and ``..``)
    checks = [gate.check(name, a, native.patch_id(a), scope=native._scope(gate)) for a in args]
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
            found.append(
                (
                    "memory",
                    "its memory generation runs the SDK's own sandbox agents (shell, apply_patch) "
                    "on the session after each run, unprotected; set `Memory(generate=None)`",
                )
            )
    return found
