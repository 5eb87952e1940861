"""The OpenAI Agents SDK's tools that take no tool guardrail, gated where the SDK calls our
side before the side effect (``openai_agents.protect`` puts these layers on):

- ``ApplyPatchTool``: its ``editor`` is wrapped. Each operation (``create_file``,
  ``update_file``, ``delete_file``) is an action ``{"type": <the tool's name>,
  "operation", "path", "diff"?, "move_to"?}`` (paths with ``.`` and ``..`` resolved),
  gated, claimed in the ledger, run and recorded; a refused one never reaches the editor
  and returns the SDK's failure form (``ApplyPatchResult(status="failed", output=<the
  reason>)``: the model reads it). The tool's ``needs_approval`` (which the SDK asks
  before the editor) holds a call the policy holds (an SDK interruption, answered with
  ``approve``) and halts the run on a stop.
- ``ComputerTool``: its computer (an instance, a factory or a ``ComputerProvider``) is
  wrapped. Each driver action (``click``, ``double_click``, ``drag``, ``keypress``,
  ``move``, ``scroll``, ``type``, ``wait``) is an action ``{"type": <the tool's name>,
  "operation", <its arguments>}`` gated before it is performed (the ``screenshot`` the SDK
  takes for every call's output is a read, not gated). The SDK gives a computer call no
  approval step and no text output, so a refused or held action raises ``ActionRefused``
  (nothing performed; the run halts with the reason) and a stop ``WorkflowStopped``.
- ``HostedMCPTool``: it runs at OpenAI; the only hook is its ``on_approval_request``,
  which the SDK calls for each approval request the server sends (``require_approval``).
  The request (the MCP tool's name as the action type, its arguments) is gated there: a
  deny or a hold answers ``{"approve": False, "reason": ...}`` (the callback must answer at
  once: a hold cannot wait for a reviewer, so it is refused and its decision withdrawn), a
  stop halts the run, and an allowed call is claimed and recorded as executed when it is
  approved (the adapter never sees its result: the server runs it).

Idempotency without a call id. The SDK gives the editor and the computer no call id.

- A patch operation's id is derived from its content (``patch:`` + the digest of the
  operation, path, diff and target): with the gate's scope it names one decision. So a
  retry of the same operation (a replayed or resumed run, the model re-sending the same
  patch) finds that decision: it runs at most once, and a held operation approved with
  ``approve`` runs when the SDK reaches it again. The cost: in one scope an identical
  operation is one action, so the same patch sent again after it ran is refused as
  "already ran" (fail closed); ``protect(..., scope=<run id>)`` gives each run its own.
  (The SDK's run context is not part of the id: it is a new object when a saved
  ``RunState`` is resumed, in this process or another, so a retry would not find its
  decision; the scope is the run's identity the developer controls.)
- A computer action is recorded without a stable key (a fresh id each time): clicking the
  same spot twice is two actions, and its content cannot tell a retry from a second click.
  So a computer action is never held for a reviewer (no later call could use the approval:
  the decision is withdrawn) and a replayed run performs its actions again, each gated.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import posixpath
import uuid
from collections.abc import Callable
from typing import Any

from .common import Check, Outcome, WorkflowStopped, require_extra

require_extra("agents", "openai-agents", "openai_agents")

from agents import ApplyPatchResult, AsyncComputer, Computer, ComputerProvider  # noqa: E402

#: computer driver actions gated, with their positional arguments as the SDK passes them
COMPUTER_ACTIONS: dict[str, tuple[str, ...]] = {
    "click": ("x", "y", "button"), "double_click": ("x", "y"), "drag": ("path",), "keypress": ("keys",),
    "move": ("x", "y"), "scroll": ("x", "y", "scroll_x", "scroll_y"), "type": ("text",), "wait": (),
}
GATED_NATIVE = ("ApplyPatchTool", "ComputerTool", "HostedMCPTool")


class ActionRefused(RuntimeError):
    """A gated computer action the policy refused or holds: nothing was performed. The SDK
    gives a computer call no way to tell the model (its output is a screenshot) and no
    approval step, so the run halts with this (``check``: the recorded decision)."""

    def __init__(self, check: Check, message: str) -> None:
        self.check = check
        super().__init__(message)


def _get(x: Any, k: str) -> Any:
    return x.get(k) if isinstance(x, dict) else getattr(x, k, None)


def _args(raw: Any) -> dict:
    """A call's arguments, JSON parsed; text the parser cannot read (not JSON, or nested
    beyond its recursion: a ``RecursionError``, never raised out of the gate) as
    ``_unparsed_arguments``, gated as such (a tool's input schema never matches them)."""
    try:
        v = json.loads(raw) if isinstance(raw, str) and raw else (raw or {})
    except (ValueError, RecursionError):
        v = {"_unparsed_arguments": raw}
    return v if isinstance(v, dict) else {"_arguments": v}


def _scope(gate: Any) -> str:
    return str(getattr(gate, "scope", "") or "")


def _decide(gate: Any, c: Check) -> Outcome:
    """The ledger's answer for ``c`` before the side effect: ``run`` only once claimed (one
    claimant across workers); a stop raises ``WorkflowStopped``."""
    out = gate.outcome(c)
    if out is None:
        out = gate.ready(c)  # approved in the ledger, never by the SDK's approval flag
    if out.run:
        out = gate.take(c, out.approver)
    return out


# ------------------------------------------------------------------ apply_patch
def _lexical(path: str) -> str:
    """A patch path with its ``.`` and ``..`` segments resolved (``docs/../.env`` is
    ``.env``, ``./a`` is ``a``): the file an editor writes, so a rule on the path cannot be
    passed by spelling it otherwise."""
    return posixpath.normpath(path) if path else path


def patch_args(op: Any) -> dict:
    """An apply_patch operation as the policy sees it: ``operation``, ``path``, and
    ``diff`` and ``move_to`` when given (paths resolved lexically: ``_lexical``)."""
    a: dict[str, Any] = {"operation": str(_get(op, "type")), "path": _lexical(str(_get(op, "path")))}
    for k in ("diff", "move_to"):
        if _get(op, k) is not None:
            a[k] = _get(op, k)
    if isinstance(a.get("move_to"), str):
        a["move_to"] = _lexical(a["move_to"])
    return a


def patch_id(args: dict) -> str:
    """The derived call id of an operation: its content's digest (see the module's note)."""
    text = json.dumps(args, sort_keys=True, separators=(",", ":"), default=str)
    return "patch:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def patch_check(gate: Any, name: str, op: Any) -> Check:
    args = patch_args(op)
    return gate.check(name, args, patch_id(args), scope=_scope(gate))


def patch_operations(raw: Any) -> list:
    """The operations of an ``apply_patch_call`` (one ``operation``, or ``operations``)."""
    ops = _get(raw, "operations")
    return list(ops) if isinstance(ops, list) else [_get(raw, "operation")]


def _patch_output(result: Any) -> Any:
    if isinstance(result, ApplyPatchResult):
        return {k: v for k, v in (("status", result.status), ("output", result.output)) if v is not None}
    return result


class GatedEditor:
    """An ``ApplyPatchEditor`` whose every operation is gated (the inner editor runs it
    only when the ledger allows and the claim is won); any other attribute is the inner's."""

    def __init__(self, inner: Any, layer: Any, name: str, normalize: Callable[[Any], Any] | None = None) -> None:
        self._inner, self._name, self._normalize = inner, name, normalize
        self.__stopline_gated__ = layer

    def __getattr__(self, k: str) -> Any:
        if k.startswith("__") or k in ("_inner", "_name", "_normalize"):
            raise AttributeError(k)
        return getattr(self._inner, k)

    def create_file(self, operation: Any) -> Any:
        return self._apply("create_file", operation)

    def update_file(self, operation: Any) -> Any:
        return self._apply("update_file", operation)

    def delete_file(self, operation: Any) -> Any:
        return self._apply("delete_file", operation)

    async def _apply(self, kind: str, operation: Any) -> Any:
        gate = self.__stopline_gated__.gate
        try:  # judged as the editor will apply it (a sandbox's: its path resolved in the workspace)
            judged = self._normalize(operation) if self._normalize is not None else operation
        except Exception as e:  # noqa: BLE001 - a path the editor would refuse too: refused, never run
            return ApplyPatchResult(status="failed", output=f"Stopline refused `{self._name}`: {e}")
        try:
            c = patch_check(gate, self._name, judged)
            out = _decide(gate, c)
        except WorkflowStopped as e:  # (the SDK catches the editor's errors: refused, never run)
            return ApplyPatchResult(status="failed", output=f"Stopline refused `{self._name}`: {e}")
        if not out.run:
            return ApplyPatchResult(status="failed", output=out.message)
        try:
            result = getattr(self._inner, kind)(operation)
            if inspect.isawaitable(result):
                result = await result
        except BaseException as e:  # it may have changed files in part
            gate.record(c, {"error": str(e) or type(e).__name__}, out.approver, error=e)
            raise
        gate.record(c, _patch_output(result), out.approver)
        return result


def gate_apply_patch(layer: Any, tool: Any, normalize: Callable[[Any], Any] | None = None) -> None:
    """Wrap ``tool.editor`` (``GatedEditor``) and its ``needs_approval``: a held operation
    is an SDK interruption, a stop halts the run (raised before the editor is reached); the
    tool's own ``needs_approval`` still asks. ``normalize``: how the editor's operations are
    made the ones ``needs_approval`` is asked about (a sandbox's apply_patch asks about the
    operation with its path resolved in the workspace, and hands the editor the model's)."""
    name = tool.name
    tool.editor = GatedEditor(tool.editor, layer, name, normalize)
    own_needs = tool.needs_approval

    async def needs(ctx: Any, operation: Any, call_id: str) -> bool:
        c = patch_check(layer.gate, name, operation)
        if c.effect == "stop":  # resumed since: nothing to ask, the editor refuses the operation
            if layer.gate.resumed_since(c):
                return False
            raise WorkflowStopped(c)
        if c.effect == "require_approval" and c.status == "pending" and not c.problem:
            return True
        if isinstance(own_needs, bool) or not callable(own_needs):
            return bool(own_needs)
        asked = own_needs(ctx, operation, call_id)
        return bool(await asked if inspect.isawaitable(asked) else asked)

    tool.needs_approval = needs


def patch_request_check(gate: Any, name: str, raw: Any) -> Check:
    """The decision behind an apply_patch interruption: its first held operation (the one
    the SDK asked about), else its first."""
    checks = [patch_check(gate, name, op) for op in patch_operations(raw) if op is not None]
    if not checks:
        raise ValueError("the apply_patch call carries no operation")
    return next((c for c in checks if c.effect == "require_approval" and c.status == "pending"), checks[0])


# ------------------------------------------------------------------ computer
def _accepts(method: Any, key: str) -> bool:
    try:
        params = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind == p.VAR_KEYWORD or (p.name == key and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
               for p in params)


def computer_args(op: str, pos: tuple, kw: dict) -> dict:
    """A computer action as the policy sees it: ``operation``, its arguments by name (a
    drag's ``path`` as ``[[x, y], ...]``) and ``keys`` (the modifier keys held) when given."""
    a: dict[str, Any] = {"operation": op}
    for k, v in zip(COMPUTER_ACTIONS[op], pos, strict=False):
        a[k] = [list(p) for p in v] if k == "path" else v
    a.update({k: v for k, v in kw.items() if v is not None})
    return a


class GatedComputer(AsyncComputer):
    """A computer (sync or async: the SDK awaits what a driver returns) whose every action
    is gated before it is performed; ``screenshot``, ``environment``, ``dimensions`` and any
    other attribute are the inner computer's."""

    def __init__(self, inner: Any, layer: Any, name: str) -> None:
        self._inner, self._name = inner, name
        self.__stopline_gated__ = layer

    def __getattr__(self, k: str) -> Any:
        if k.startswith("__") or k in ("_inner", "_name"):
            raise AttributeError(k)
        return getattr(self._inner, k)

    @property
    def environment(self) -> Any:
        return self._inner.environment

    @property
    def dimensions(self) -> Any:
        return self._inner.dimensions

    async def screenshot(self) -> str:
        r = self._inner.screenshot()
        return await r if inspect.isawaitable(r) else r

    async def click(self, x: int, y: int, button: Any, **kw: Any) -> None:
        await self._act("click", (x, y, button), kw)

    async def double_click(self, x: int, y: int, **kw: Any) -> None:
        await self._act("double_click", (x, y), kw)

    async def scroll(self, x: int, y: int, scroll_x: int, scroll_y: int, **kw: Any) -> None:
        await self._act("scroll", (x, y, scroll_x, scroll_y), kw)

    async def type(self, text: str, **kw: Any) -> None:
        await self._act("type", (text,), kw)

    async def wait(self, **kw: Any) -> None:
        await self._act("wait", (), kw)

    async def move(self, x: int, y: int, **kw: Any) -> None:
        await self._act("move", (x, y), kw)

    async def keypress(self, keys: list[str], **kw: Any) -> None:
        await self._act("keypress", (keys,), kw)

    async def drag(self, path: list[tuple[int, int]], **kw: Any) -> None:
        await self._act("drag", (path,), kw)

    async def _act(self, op: str, pos: tuple, kw: dict) -> None:
        gate = self.__stopline_gated__.gate
        c = gate.check(self._name, computer_args(op, pos, kw), f"computer:{uuid.uuid4().hex}", scope=_scope(gate))
        out = _decide(gate, c)  # a stop raises WorkflowStopped: the run halts, nothing performed
        if not out.run:
            if out.pending:
                gate.withdraw(c, "a computer action cannot be held: the SDK gives it no approval step")
                out = Outcome(False, out.message.replace("holds", "refused", 1) + "; a computer action cannot "
                              "wait for a reviewer (the SDK has no approval step for it): write an allow or "
                              "deny rule for it")
            raise ActionRefused(c, out.message)
        method = getattr(self._inner, op)
        kwargs = {k: v for k, v in kw.items() if v is not None and _accepts(method, k)}
        try:
            r = method(*pos, **kwargs)
            if inspect.isawaitable(r):
                await r
        except BaseException as e:
            gate.record(c, {"error": str(e) or type(e).__name__}, out.approver, error=e)
            raise
        gate.record(c, None, out.approver)


def _wrap_factory(create: Any, layer: Any, name: str) -> Any:
    def made(*, run_context: Any) -> Any:
        got = create(run_context=run_context)

        async def later() -> Any:
            return _wrap_computer(await got, layer, name)

        return later() if inspect.isawaitable(got) else _wrap_computer(got, layer, name)

    made.__stopline_gated__ = layer  # type: ignore[attr-defined]
    return made


def _wrap_computer(c: Any, layer: Any, name: str) -> Any:
    if isinstance(c, (Computer, AsyncComputer)) and getattr(c, "__stopline_gated__", None) is None:
        return GatedComputer(c, layer, name)
    return c  # (not a computer: the SDK says so)


def gate_computer(layer: Any, tool: Any) -> None:
    """Wrap ``tool.computer``: an instance directly, a factory's or a provider's product at
    each run (a provider's ``dispose`` gets the computer it made)."""
    name, config = tool.name, tool.computer
    if isinstance(config, (Computer, AsyncComputer)):
        tool.computer = _wrap_computer(config, layer, name)
    elif isinstance(config, ComputerProvider) or callable(getattr(config, "create", None)):
        dispose: Any = getattr(config, "dispose", None)

        def undo(*, run_context: Any, computer: Any) -> Any:
            return dispose(run_context=run_context, computer=getattr(computer, "_inner", computer))

        provider = ComputerProvider(create=_wrap_factory(config.create, layer, name),
                                    dispose=undo if dispose is not None else None)
        provider.__stopline_gated__ = layer  # type: ignore[attr-defined]
        tool.computer = provider
    elif callable(config):
        tool.computer = _wrap_factory(config, layer, name)
    tool.__post_init__()  # (the SDK keeps a factory by tool: the wrapped one now)


# ------------------------------------------------------------------ hosted MCP
def mcp_unasked(tool: Any) -> str | None:
    """What of a ``HostedMCPTool`` OpenAI may run without an approval request (so without
    the gate), or ``None`` when every call is asked (``require_approval`` absent or "always")."""
    ra = (getattr(tool, "tool_config", None) or {}).get("require_approval")
    if ra is None or ra == "always":
        return None
    said = json.dumps(ra, sort_keys=True, default=str)
    return f"`require_approval` is {said}: what it does not ask about runs unasked"


def gate_hosted_mcp(layer: Any, tool: Any) -> None:
    """Gate each approval request of ``tool`` in its ``on_approval_request`` (the developer's
    own callback, if any, is asked after the policy allowed the call, before the claim)."""
    own = tool.on_approval_request

    async def on_approval_request(request: Any) -> dict:
        gate, data = layer.gate, request.data
        name = str(_get(data, "name"))
        label = _get(data, "server_label")  # (set over the arguments: the model cannot name another server)
        c = gate.check(name, _args(_get(data, "arguments")), str(_get(data, "id")), scope=_scope(gate),
                       extra={"server_label": str(label)} if label is not None else None)
        out = gate.outcome(c)  # a stop raises WorkflowStopped: the run halts
        if out is None:
            out = gate.ready(c)
            if out.pending:
                gate.withdraw(c, "a hosted MCP call cannot be held: its approval callback answers at once")
                return {"approve": False, "reason": out.message.replace("holds", "refused", 1) + "; a hosted MCP "
                        "call cannot wait for a reviewer (the SDK's approval callback answers at once)"}
        if not out.run:
            return {"approve": False, "reason": out.message}
        if own is not None:
            theirs = own(request)
            theirs = await theirs if inspect.isawaitable(theirs) else theirs
            if not theirs.get("approve"):
                return dict(theirs)
        out = gate.take(c, out.approver)
        if not out.run:
            return {"approve": False, "reason": out.message}
        # approved: the server runs it at OpenAI (the adapter never sees its result)
        gate.record(c, {"result": f"approved for hosted MCP server `{_get(data, 'server_label')}`"}, out.approver)
        return {"approve": True}

    on_approval_request.__stopline_gated__ = layer  # type: ignore[attr-defined]
    tool.on_approval_request = on_approval_request


# ------------------------------------------------------------ a sandbox tool's path, as it acts on it
#: the sandbox's function tools that act at a path the model gives (``openai_agents_sandbox``),
#: by class: the argument naming it (none given: ``.``, the run's ``cwd``)
AT_PATH = {"ExecCommandTool": "workdir", "ViewImageTool": "path"}


def relative(session: Any, target: Any) -> str:
    """``target`` (a path the session's ``normalize_path`` returned) relative to the
    workspace root (``.`` for the root), or absolute outside it."""
    import os
    from pathlib import PurePosixPath

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


def at_path(tool: Any) -> str | None:
    """The argument naming where a sandbox tool acts (``AT_PATH``), for a tool bound to its
    session; else ``None``."""
    if getattr(tool, "session", None) is None:
        return None
    return next((AT_PATH[c.__name__] for c in type(tool).__mro__ if c.__name__ in AT_PATH), None)


def path_resolver(tool: Any) -> Any:
    """How a call of ``tool`` (``at_path``: ``exec_command``'s ``workdir``, the directory it
    runs in; ``view_image``'s ``path``, the file it reads) is judged: that path resolved as
    the tool resolves it (the scope's ``cwd``, ``.`` and ``..``, backslashes, symlinks
    followed as the session's ``normalize_path`` follows them) and relative to the
    workspace root (``.``: the root, where a call without one acts; absolute outside it, an
    extra path grant); ``<key>_given``: the model's own, as it wrote it. Returns ``(args,
    problem)``: a path the sandbox refuses is the problem (the call is gated, never run)."""
    from agents.sandbox.workspace_paths import coerce_posix_path, sandbox_path_str

    key = at_path(tool) or "workdir"

    def resolve(args: dict) -> tuple[dict, str | None]:
        given = args.get(key)
        out = {**args, f"{key}_given": given}
        wd = given if isinstance(given, str) and given.strip() else "."
        try:
            target = tool.session.normalize_path(sandbox_path_str(tool.workspace_scope.anchor(coerce_posix_path(wd))))
        except Exception as e:  # noqa: BLE001 - refused by the sandbox too (out of the workspace, ...)
            out[key] = str(given)
            return out, f"the sandbox refuses the {key} `{given}` ({e})"
        out[key] = relative(tool.session, target)
        return out, None

    return resolve


def lexical_path(name: str, args: dict) -> dict:
    """A sandbox ``exec_command`` or ``view_image`` call's arguments as ``path_resolver``
    judges them, without its session (a state resumed in another process): the path
    relative to the workspace root with ``.`` and ``..`` resolved (no ``cwd``, no symlink:
    a call resolved otherwise in the run names another decision, whose approval runs
    nothing)."""
    import os

    from agents.sandbox.capabilities.tools.shell_tool import ExecCommandArgs
    from agents.sandbox.capabilities.tools.view_image import ViewImageArgs

    from .common import conform

    key, model = ("path", ViewImageArgs) if name == "view_image" else ("workdir", ExecCommandArgs)
    args, _ = conform(model.model_json_schema(), args)  # (the tool's defaults, as ``wrap`` fills them)
    given = args.get(key)
    wd = str(given).replace("\\", "/") if isinstance(given, str) and given.strip() else "."
    return {**args, f"{key}_given": given, key: os.path.normpath(wd).replace(os.sep, "/")}
