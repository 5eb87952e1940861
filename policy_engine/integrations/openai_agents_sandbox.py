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
  ``exec_command`` with its ``workdir`` the directory it runs in (``path_resolver``:
  resolved as the tool resolves it, ``./secrets`` and ``docs/../secrets`` are ``secrets``,
  a symlink followed as the session follows it; the model's own in ``workdir_given``);
- ``Filesystem``: ``view_image`` (a read) is a function tool, gated as one with its
  ``path`` the file it reads, resolved as ``exec_command``'s ``workdir`` is (the model's
  own in ``path_given``; a path the sandbox refuses is never read); its
  ``apply_patch`` is a ``CustomTool`` (a V4A patch, one raw string in) whose operations the
  tool applies one by one through its ``editor``: each operation an action ``{"operation",
  "path", "diff"?, "move_to"?}`` whose path is the file the sandbox writes (resolved in the
  workspace: ``./.env``, ``docs/../.env`` and ``docs\\..\\.env`` are ``.env``; a symlink
  followed as the session follows it: its target is judged, a target outside the
  workspace by its absolute path). A patch is applied whole or not at all: every
  operation is judged before any is applied (the tool's ``needs_approval`` and its
  ``on_invoke_tool``, both on the raw patch); one denied, held without an approval, or on a
  path the sandbox refuses, and none is applied: the model reads which and why. An allowed
  operation of a refused patch stays an allowed decision, never claimed nor recorded as
  run (sent again, the same operation is the same decision, and runs). Held operations
  (and no refused one) are one SDK interruption whose request lists them all
  (``PatchCheck``): each approved, the resumed call applies the patch; a stop in any
  operation halts the run. An allowed patch is one transaction (``_transact``): every
  file's new content computed first (an operation that cannot apply refuses it whole,
  nothing written), every operation claimed, the files written (on this host by
  descriptor with ``O_NOFOLLOW`` for a Unix-local session: ``_Host``; else through the
  session: ``_Session``; restored on a failure), each recorded. An editor of the
  developer's own applies them one by one (``GatedEditor``, ``openai_agents_tools``);
- ``Skills`` (lazy): ``load_skill`` (copies a skill into the workspace) is a function tool;
- a custom capability's tools: as their kind is gated (or warned about).

What the model does not drive is the developer's configuration, not gated: the manifest's
entries and mounts materialized when the session starts, snapshots, the session's cleanup.
``Memory`` with ``generate`` set runs the SDK's own memory agents (a ``SandboxAgent`` with
the default shell and filesystem capabilities, unprotected) on the session after the run:
``protect`` warns about it (``UngatedToolWarning``).
"""

from __future__ import annotations

import errno
import inspect
import io
import os
import posixpath
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from typing import Any

from .common import Check, Outcome, WorkflowStopped, require_extra

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


#: ``target`` (a path the session's ``normalize_path`` returned) relative to the workspace
#: root (``.`` for the root), or absolute outside it
_relative = native.relative
#: a sandbox's ``exec_command`` and ``view_image``: judged at the path they act on, resolved
#: as the session resolves it (``openai_agents_tools.path_resolver``; without the session:
#: ``lexical_path``)
at_path, path_resolver, lexical_path = native.at_path, native.path_resolver, native.lexical_path


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


#: operations a refusal names at most in each of its lists (a large patch: the rest counted)
MAX_LISTED = 20


def _listed(items: list[str], sep: str) -> str:
    more = len(items) - MAX_LISTED
    return sep.join(items[:MAX_LISTED]) + (f"{sep}and {more} more" if more > 0 else "")


def _refusal(name: str, labels: list[str], refused: dict[int, str]) -> str:
    """The model's answer for a patch refused whole: each refused operation and why, and
    the allowed ones not applied with them (``MAX_LISTED`` of each at most)."""
    n = len(labels)
    why = _listed([f"operation {i} of {n} ({labels[i - 1]}): {refused[i]}" for i in sorted(refused)], "; ")
    text = (
        f"Stopline refused `{name}`: none of its {n} operations was applied (a patch is applied whole or "
        f"not at all). Refused: {why}."
    )
    rest = [f"{i} ({label})" for i, label in enumerate(labels, 1) if i not in refused]
    if rest:
        text += (
            f" Not applied with them: operation {_listed(rest, ', ')}; send those again in a patch without the "
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


# ------------------------------------------------------------------ apply_patch: one transaction
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW


def _is_sandbox_editor(editor: Any) -> bool:
    return any(c.__name__ == "SandboxApplyPatchEditor" for c in type(editor).__mro__)


class _Unapplied(Exception):
    """Operation ``index`` of a patch cannot be applied (found before anything is written)."""

    def __init__(self, index: int, why: str) -> None:
        self.index = index
        super().__init__(why)


class _Torn(Exception):
    """Writing a patch failed (``says``: what failed and the state left)."""

    def __init__(self, says: str) -> None:
        self.says = says
        super().__init__(says)


def _error(e: BaseException) -> str:
    return str(e) or type(e).__name__


class _Host:
    """A Unix-local workspace's files, on this host: each path reached from ``/`` one
    directory at a time by descriptor (``openat``), ``O_NOFOLLOW`` at every step. A judged
    path has no symlink left in it (resolved as the session resolves it), so a link met here
    was swapped in since it was judged: refused (``ELOOP``), never followed."""

    def __init__(self, root: str) -> None:
        self.root = root

    @contextmanager
    def _at(self, path: str, made: list[str] | None = None) -> Iterator[tuple[int, str]]:
        full = path if path.startswith("/") else posixpath.join(self.root, path)
        parts = PurePosixPath(posixpath.normpath(full)).parts
        fd = os.open("/", _DIR_FLAGS)
        try:
            here = "/"
            for part in parts[1:-1]:
                here = posixpath.join(here, part)
                try:
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if made is None:
                        raise
                    os.mkdir(part, dir_fd=fd)
                    made.append(here)
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(here):
                        shown = posixpath.relpath(here, self.root) if here.startswith(self.root + "/") else here
                        raise OSError(errno.ELOOP, f"`{shown}` is a symlink now: not followed") from e
                    raise
                os.close(fd)
                fd = nxt
            yield fd, parts[-1]
        finally:
            os.close(fd)

    @staticmethod
    def _open(d: int, name: str, flags: int, path: str) -> int:
        st = os.stat(name, dir_fd=d, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            raise OSError(errno.ELOOP, f"`{path}` is a symlink now: not followed")
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"`{path}` is not a regular file")
        return os.open(name, flags | _NOFOLLOW | os.O_NONBLOCK, dir_fd=d)

    async def read(self, path: str) -> tuple[bytes | None, int | None]:
        try:
            with self._at(path) as (d, name):
                fd = self._open(d, name, os.O_RDONLY, path)
        except FileNotFoundError:
            return None, None
        with os.fdopen(fd, "rb") as f:
            return f.read(), os.fstat(fd).st_mode

    async def ident(self, path: str) -> tuple | None:
        """The file at ``path`` (device and inode, a hard link's as its other names'), or ``None``."""
        try:
            with self._at(path) as (d, name):
                st = os.stat(name, dir_fd=d, follow_symlinks=False)
        except OSError:  # (no such file; a link swapped in: its read says so)
            return None
        return (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None

    async def exists(self, path: str) -> bool:
        try:
            with self._at(path) as (d, name):
                os.stat(name, dir_fd=d, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    async def write(self, path: str, data: bytes, expect: bytes | None, touched: list) -> None:
        with self._at(path) as (d, name):
            fd = self._open(d, name, os.O_RDWR, path)
        with os.fdopen(fd, "r+b") as f:
            if expect is not None and f.read() != expect:
                raise OSError(errno.EAGAIN, "changed since the patch read it", path)
            touched.append(path)
            f.seek(0)
            f.truncate()
            f.write(data)

    async def create(self, path: str, data: bytes, mode: int | None, touched: list, made: list | None) -> None:
        with self._at(path, made) as (d, name):
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o666, dir_fd=d)
        touched.append(path)
        with os.fdopen(fd, "wb") as f:
            if mode is not None:  # (a deleted file restored: its permissions back)
                os.fchmod(fd, stat.S_IMODE(mode))
            f.write(data)

    async def remove(self, path: str, expect: bytes | None, touched: list) -> None:
        with self._at(path) as (d, name):
            if expect is not None:
                with os.fdopen(self._open(d, name, os.O_RDONLY, path), "rb") as f:
                    if f.read() != expect:
                        raise OSError(errno.EAGAIN, "changed since the patch read it", path)
            os.unlink(name, dir_fd=d)
        touched.append(path)

    async def rmdir(self, path: str) -> None:
        with self._at(path) as (d, name):
            os.rmdir(name, dir_fd=d)


class _Session:
    """Any other sandbox's files (a container, a hosted one, a Unix-local one acting as
    another ``user``), through its session, as its own editor writes them. The session
    resolves a path again as it writes it: right before each write the path is resolved
    once more and a file other than the one judged (a link swapped in) is refused; a swap
    after that is not prevented (the sandbox's own calls have no no-follow write)."""

    def __init__(self, session: Any, user: Any) -> None:
        self.session, self.user = session, user

    def _same(self, path: str, *, leaf: bool = True) -> Path:
        now = _written(self.session, path, leaf=leaf)
        if now != path:
            raise OSError(errno.ELOOP, f"`{path}` resolves to `{now}` now (a symlink swapped in): not followed")
        return Path(path)

    async def read(self, path: str) -> tuple[bytes | None, int | None]:
        from agents.sandbox.errors import WorkspaceReadNotFoundError

        try:
            handle = await self.session.read(Path(path), user=self.user)
        except (FileNotFoundError, WorkspaceReadNotFoundError):
            return None, None
        try:
            data = handle.read()
        finally:
            handle.close()
        return (data.encode("utf-8") if isinstance(data, str) else bytes(data)), None

    async def exists(self, path: str) -> bool:
        return (await self.read(path))[0] is not None

    async def ident(self, path: str) -> tuple | None:  # (the session tells no inode: the path only)
        return None

    async def _expect(self, path: str, expect: bytes | None) -> None:
        if expect is not None and (await self.read(path))[0] != expect:
            raise OSError(errno.EAGAIN, "changed since the patch read it", path)

    async def write(self, path: str, data: bytes, expect: bytes | None, touched: list) -> None:
        p = self._same(path)
        await self._expect(path, expect)
        touched.append(path)
        await self.session.write(p, io.BytesIO(data), user=self.user)

    async def create(self, path: str, data: bytes, mode: int | None, touched: list, made: list | None) -> None:
        p = self._same(path, leaf=False)
        await self.session.mkdir(p.parent, parents=True, user=self.user)
        try:
            await self.session._write_new_file(p, io.BytesIO(data), user=self.user)
        except FileExistsError:
            raise
        except BaseException:
            touched.append(path)  # (created in part, maybe)
            raise
        touched.append(path)

    async def remove(self, path: str, expect: bytes | None, touched: list) -> None:
        p = self._same(path)
        if expect is None and not await self.exists(path):
            return  # (a create undone that made nothing)
        await self._expect(path, expect)
        await self.session.rm(p, user=self.user)
        touched.append(path)

    async def rmdir(self, path: str) -> None:  # (the session says not which directories it made)
        return None


def _store(editor: Any) -> Any:
    session, user = editor.session, getattr(editor, "user", None)
    inner = getattr(session, "_inner", session)
    root = str(session.state.manifest.root)
    local = any(c.__name__ == "UnixLocalSandboxSession" for c in type(inner).__mro__)
    if local and user is None and os.name == "posix" and os.path.isdir(root):
        return _Host(os.path.realpath(root))
    return _Session(session, user)


def _text(data: bytes, path: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"`{path}` is not UTF-8 text ({e.reason} at byte {e.start}): apply_patch edits text") from e


async def _one_name_each(store: Any, todo: list[tuple[int, Any, Any]]) -> None:
    """Refuse (``_Unapplied``) a patch naming one file by two names: two paths the session
    resolves to one (a symlink alias), or two hard links of one file (one device and inode),
    which would be planned as two files (the last write winning) and judged as two paths.
    One name spelled alike in several operations (add, then update) is one file, in order."""
    seen: dict[Any, tuple[int, str, str]] = {}
    for i, op, j in todo:
        for given, path in ((op.path, j.path), (op.move_to, j.move_to)):
            if given is None or path is None:
                continue
            spelled = posixpath.normpath(str(given).replace("\\", "/"))
            for key in (path, await store.ident(path)):
                first = seen.setdefault(key, (i, spelled, path)) if key is not None else (i, "", "")
                if first[0] != i and (first[1], first[2]) != (spelled, path):
                    how = "a hard link of it" if first[2] != path else "a symlink alias of it"
                    raise _Unapplied(i, f"`{given}` names the file operation {first[0]} names as `{first[1]}` ({how}): "
                                        "one file by two names in one patch; name it by one path")


async def _plan(store: Any, todo: list[tuple[int, Any, Any]]) -> dict[str, list]:
    """Every file a patch touches, as found and as the patch leaves it (``{path: [bytes or
    None (no file), bytes or None (deleted), mode]}``), its operations applied in order in
    memory (a later one sees an earlier one's result); nothing written. An operation that
    cannot apply (a diff that does not match, a file missing or already there, a file not
    text, a path that is a symlink now) raises ``_Unapplied``."""
    from agents.apply_diff import apply_diff

    files: dict[str, list] = {}
    await _one_name_each(store, todo)

    async def now(p: str) -> bytes | None:
        if p not in files:
            data, mode = await store.read(p)
            files[p] = [data, data, mode]
        return files[p][1]

    for i, op, j in todo:
        try:
            if op.type == "create_file":
                there = files[j.path][1] is not None if j.path in files else await store.exists(j.path)
                if there:
                    raise ValueError(f"`{op.path}` already exists: use an update_file operation to change it")
                made = apply_diff("", op.diff or "", mode="create").encode("utf-8")
                files.setdefault(j.path, [None, None, None])[1] = made
                continue
            old = await now(j.path)
            if old is None:
                raise ValueError(f"`{op.path}` does not exist")
            if op.type == "delete_file":
                files[j.path][1] = None
                continue
            new = apply_diff(_text(old, op.path), op.diff or "").encode("utf-8")
            if j.move_to is None or j.move_to == j.path:
                files[j.path][1] = new
            else:
                await now(j.move_to)
                files[j.move_to][1], files[j.path][1] = new, None
        except Exception as e:  # noqa: BLE001 - the model reads why; nothing was written
            raise _Unapplied(i, _error(e)) from e
    return files


async def _commit(store: Any, files: dict[str, list]) -> None:
    """Write what ``_plan`` computed; on a failure, restore what was written (a file
    written back, a created one removed, a deleted one made again with its mode; the
    directories made for it removed) and raise ``_Torn`` saying what state remains."""
    touched: list[str] = []
    made: list[str] = []
    path = ""
    try:
        for path, (old, new, _mode) in files.items():
            if new == old:
                continue
            if new is None:
                await store.remove(path, old, touched)
            elif old is None:
                await store.create(path, new, None, touched, made)
            else:
                await store.write(path, new, old, touched)
    except BaseException as e:  # (a disk error, a file changed under it, a link swapped in: refused)
        left = []
        for p in reversed(list(dict.fromkeys(touched))):
            old, new, mode = files[p]
            try:
                if old is None:
                    await store.remove(p, None, [])
                elif new is None:
                    await store.create(p, old, mode, [], None)
                else:
                    await store.write(p, old, None, [])
            except BaseException as undo:  # noqa: BLE001 - said below
                how = "deleted" if new is None else "created" if old is None else "written (maybe in part)"
                left.append(f"`{p}` stays {how} ({_error(undo)})")
        for d in reversed(made):
            try:
                await store.rmdir(d)
            except OSError:
                pass
        said = f"writing `{path}` failed ({_error(e)})"
        if left:
            raise _Torn(f"{said}; restoring failed for: {'; '.join(left)}; every other file is as before") from e
        raise _Torn(f"{said}; every file it had changed was restored: the workspace is as before the patch") from e


def _done(op: Any) -> str:
    """An applied operation's output, as the SDK's editor words it."""
    if op.type == "create_file":
        return f"Created {op.path}"
    if op.type == "delete_file":
        return f"Deleted {op.path}"
    moved = f"\nMoved {op.path} to {op.move_to}" if op.move_to is not None else ""
    return f"Updated {op.path}{moved}"


async def _cannot_apply(editor: Any, ops: list, judged: list, done: set[int]) -> _Unapplied | None:
    """Why an operation of the patch cannot apply to the files as they are now (``_plan``)."""
    try:
        await _plan(_store(editor), [(i, op, j) for i, (op, j) in enumerate(zip(ops, judged), 1) if i not in done])
    except _Unapplied as u:
        return u
    except Exception:  # noqa: BLE001 - not known here: the call, reached, answers
        return None
    return None


def _unapplied(name: str, labels: list[str], u: _Unapplied) -> str:
    n = len(labels)
    return (f"`{name}` could not apply the patch: operation {u.index} of {n} ({labels[u.index - 1]}): {u}. "
            f"None of its {n} operations was applied (a patch is applied whole or not at all)")


def _failed(gate: Any, claimed: list[tuple[Check, str | None]], why: str) -> None:
    """Record the claimed operations of a patch that failed as run with ``why`` (a retry of
    one is told so); a ledger that fails here leaves them claimed (never run again)."""
    try:
        for c, who in claimed:
            gate.record(c, {"status": "failed", "output": why}, who, error=why)
    except Exception:  # noqa: BLE001 - nothing more is written either way
        pass


async def _transact(gate: Any, name: str, editor: Any, ops: list, judged: list, labels: list[str],
                    checks: dict[int, Check], outs: dict[int, Outcome]) -> str:
    """Apply an allowed patch (every operation judged, none refused) as one transaction:
    every file's new content computed first (``_plan``: an operation that cannot apply
    refuses the patch, nothing claimed nor written, its decisions unused); then every
    operation claimed (a claim lost to another run: none written, those claimed recorded as
    not applied); then the files written (``_commit``: restored on a failure, each operation
    recorded with the error and the state left); then each recorded with its output. An
    operation that already ran under its decision is answered so, not run again."""
    n = len(ops)
    todo = [i for i in sorted(checks) if not outs[i].done]
    store = _store(editor)
    try:
        files = await _plan(store, [(i, ops[i - 1], judged[i - 1]) for i in todo])
    except _Unapplied as u:
        return _unapplied(name, labels, u)
    claimed: list[tuple[Check, str | None]] = []
    for i in todo:
        try:
            out = gate.take(checks[i], outs[i].approver)
        except WorkflowStopped as e:
            out = Outcome(False, f"Stopline refused `{name}`: {e}")
        except Exception as e:  # noqa: BLE001 - the ledger unreachable: nothing written
            out = Outcome(False, f"Stopline refused `{name}`: its claim failed ({type(e).__name__}: {e})")
        if not out.run:
            why = f"not applied: operation {i} of {n} was not claimed ({out.message}); none of the patch was written"
            _failed(gate, claimed, why)
            return f"`{name}` applied none of its {n} operations: operation {i} ({labels[i - 1]}): {out.message}"
        claimed.append((checks[i], out.approver))
    try:
        await _commit(store, files)
    except _Torn as t:
        _failed(gate, claimed, t.says)
        return f"`{name}` could not apply the patch: {t.says}"
    said = [outs[i].message if outs[i].done else _done(ops[i - 1]) for i in sorted(checks)]
    try:
        for i, text in zip(sorted(checks), said, strict=True):
            if not outs[i].done:
                gate.record(checks[i], {"output": text}, outs[i].approver)
    except Exception as e:  # noqa: BLE001 - written: the model and the operator read that it was not all recorded
        said.append(f"Stopline: the patch was applied, its executions not all recorded ({type(e).__name__}: {e})")
    return "\n".join(said)


def gate_patch(layer: Any, tool: Any) -> None:
    """Gate a sandbox's apply_patch: the tool's raw-patch ``needs_approval`` and
    ``on_invoke_tool`` (every operation judged before any is applied: ``judge``; an allowed
    patch applied as one transaction: ``_transact``), and its editor (``GatedEditor``: an
    editor of the developer's own gets each operation claimed and recorded). The
    operations a call is held on are noted on the layer (``held``, by tool name and call
    id, with the raw patch) until the call is reached again: ``request_for`` names that
    decision (the interruption carries the model's raw patch, and the tool that resolves
    its paths is gone with the run)."""
    own = tool.needs_approval  # the developer's operation-typed ask (bool or callable): kept
    normalize = normalizer(tool)
    editor = tool.editor  # (the sandbox's own: the patch is applied here, as one transaction)
    native.gate_apply_patch(layer, tool, normalize=normalize)
    name, invoke = tool.name, tool.on_invoke_tool

    def judge(ops: list, judged: list | None = None) -> tuple[list[str], dict[int, Check], dict[int, str]]:
        """The operations' labels (as judged), each judged one's check and the reasons of
        those refused before any check (a path the sandbox refuses), by their place in the
        patch (from 1); ``judged`` gets each operation as judged (its paths the files written)."""
        labels: list[str] = []
        checks: dict[int, Check] = {}
        refused: dict[int, str] = {}
        for i, op in enumerate(ops, 1):
            try:
                seen = normalize(op)
            except Exception as e:  # noqa: BLE001 - a path the sandbox refuses too: never written
                labels.append(_label(op))
                refused[i] = f"the sandbox refuses its path ({e})"
                continue
            labels.append(_label(op, seen))
            checks[i] = native.patch_check(layer.gate, name, seen)
            if judged is not None:
                judged.append(seen)
        return labels, checks, refused

    async def needs(ctx: Any, raw: str, call_id: str) -> bool:
        layer.held.pop((name, call_id), None)
        ops = _parsed(raw)
        if ops is None:
            return False  # a malformed patch: its call answers the SDK's error, nothing held
        judged: list = []
        _labels, checks, refused = judge(ops, judged)
        for c in checks.values():
            if c.effect == "stop" and not layer.gate.resumed_since(c):
                raise WorkflowStopped(c)  # (a stop recorded before a resume: refused when the call is reached)
        if refused:
            return False  # refused whole when the call is reached (its answer names why)
        held, done = [], set()
        for i, c in checks.items():
            out = _answer(layer.gate, c)
            if out is not None and not out.run and not out.done:
                return False  # (likewise; one that already ran is answered so, the others go on)
            if out is not None and out.done:
                done.add(i)
            if out is None and c.status == "pending" and not c.problem:
                held.append(c)
        if held and _is_sandbox_editor(editor) and await _cannot_apply(editor, ops, judged, done) is not None:
            return False  # a patch that cannot apply is answered so when reached, never put to a reviewer
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
        outs: dict[int, Outcome] = {}
        judged: list = []
        try:
            labels, checks, refused = judge(ops, judged)
            for i, c in checks.items():
                out = _answer(layer.gate, c)
                if out is None:
                    try:
                        out = layer.gate.ready(c)  # approved in the ledger, never by the SDK's approval alone
                    except WorkflowStopped as e:
                        out = Outcome(False, f"Stopline refused `{name}`: {e}")
                if not out.run and not out.done:  # (one that already ran: answered so, not run again)
                    refused[i] = out.message
                outs[i] = out
        except Exception as e:  # noqa: BLE001 - not judged (the ledger unreachable, ...): nothing applied
            why = f"{type(e).__name__}: {e}"
            return f"Stopline refused `{name}`: the patch could not be gated ({why}); none of it was applied"
        if refused and _is_sandbox_editor(editor) and all(i in outs and outs[i].pending for i in refused):
            done = {i for i, out in outs.items() if out.done}  # (only held: why it cannot apply comes first)
            u = await _cannot_apply(editor, ops, judged, done)
            if u is not None:
                return _unapplied(name, labels, u)
        if refused:
            return _refusal(name, labels, refused)
        if not _is_sandbox_editor(editor):  # an editor of the developer's own: each operation through it
            return await invoke(ctx, raw)  # (claimed, applied and recorded one by one by the gated editor)
        return await _transact(layer.gate, name, editor, ops, judged, labels, checks, outs)

    on_invoke_tool.__stopline_gated__ = layer  # type: ignore[attr-defined]
    tool.on_invoke_tool = on_invoke_tool
    tool.runtime_needs_approval = lambda: needs


@dataclass(frozen=True)
class PatchCheck(Check):
    """The decision an apply_patch interruption names (its first held operation), with every
    held operation of the patch (``held``): its ``request()`` lists them all under
    ``operations`` (each its own ``decision_id``, ``action_digest``, ``args``, ``rule``...),
    so one review answers the whole patch: each approved (bound to its own content) before
    the call is resumed, and the resumed call applies the patch in one go."""

    held: tuple = ()

    def request(self) -> dict[str, Any]:
        return {**super().request(), "operations": [c.request() for c in self.held]}


def patch_request_check(gate: Any, name: str, call_id: str, raw_input: str, held: dict) -> Check:
    """The decision behind an interruption of a sandbox's apply_patch: the operations its
    ``needs_approval`` held (``held``, noted with this raw patch), else (a state resumed in
    another process, or a note of another call that reused the id) each operation of the
    raw patch, its path taken relative to the workspace root (``./a`` is ``a``), the first
    held one, else the first; every held one in ``operations`` (``PatchCheck``). A path
    resolved otherwise in the run (an absolute path, a ``cwd``, a symlink) names another
    decision: approving it runs nothing (the operation stays held)."""
    note = held.get((name, call_id))
    if isinstance(note, dict) and note.get("input") == raw_input and note.get("operations"):
        args = list(note["operations"])
    else:
        args = [native.patch_args(op) for op in _parse(raw_input)]  # (``patch_args`` resolves ``.`` and ``..``)
    checks = [gate.check(name, a, native.patch_id(a), scope=native._scope(gate)) for a in args]
    if not checks:
        raise ValueError("the apply_patch call carries no operation")
    pending = [c for c in checks if c.effect == "require_approval" and c.status == "pending"]
    first = pending[0] if pending else checks[0]
    return PatchCheck(**{f.name: getattr(first, f.name) for f in fields(Check)}, held=tuple(pending))


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
