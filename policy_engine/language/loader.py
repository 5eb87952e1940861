"""Files and directories -> a checked PolicySet, with every diagnostic collected."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..diagnostics import Acknowledged, Diagnostic, PolicyError, sort_diagnostics
from ..lark_cache import collector_paused
from ..limits import MAX_CONDITIONS_PER_SET, MAX_FILE_BYTES, MAX_FILES
from ..source import SourceFile, Span
from . import ir

if TYPE_CHECKING:
    from .acknowledge import Collected

# `acknowledge.MARKER`: a file without it has no directive, and its load does not import
# acknowledge.py (28 KiB compiled in a fresh process without bytecode; issue 16, goal 5)
_ACK_MARKER = "stopline:"


@dataclass
class LoadResult:
    policy_set: ir.PolicySet | None
    diagnostics: list[Diagnostic]
    sources: dict[str, SourceFile]
    compiled: dict = field(default_factory=dict)  # cond_key -> CompiledExpr
    cel_cache: dict = field(default_factory=dict)
    # warnings a `# stopline: acknowledge CODE -- reason` directive accepts (acknowledge.py):
    # not among `diagnostics`, so they neither print nor fail `check --strict`
    acknowledged: list[Acknowledged] = field(default_factory=list)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]


class UsageError(Exception):
    """A path that does not exist or holds no policy files (CLI exit code 2); `path`: the
    path it is about (`check --format json` reports it as diagnostic E006 of that file)."""

    def __init__(self, message: str, path: str | os.PathLike = "") -> None:
        super().__init__(message)
        self.path = str(path)

    def diagnostic(self) -> Diagnostic:
        return Diagnostic("E006", "error", str(self), _whole_file(self.path),
                          help="name the files or the directories that hold the .policy files")


#: pseudo-filesystems: the kernel's views of processes, devices and itself, whose entries come and
#: go while they are listed (a process exits) and hold no policy; a scan never descends into them
PSEUDO_FILESYSTEMS = ("/proc", "/sys", "/dev")


def _pseudo(real: str) -> str | None:
    """The pseudo-filesystem a real (resolved) path is, or is inside, if any (`/dev/shm`, a
    plain memory-backed directory that some put files in, is not one)."""
    if real == "/dev/shm" or real.startswith("/dev/shm/"):
        return None
    for p in PSEUDO_FILESYSTEMS:
        if real == p or real.startswith(p + "/"):
            return p
    return None


def _walk(root: Path, suffix: str, broken: list[str] | None = None) -> list[Path]:
    """Every file named `*suffix` under `root` (as `Path.rglob` finds them: symbolic links to
    files included, symbolic links to directories not followed), sorted. A directory or file
    that vanishes while the tree is listed is skipped, as is a pseudo-filesystem (`/proc`,
    `/sys`, `/dev`) met on the way (scanning `/`). ``broken`` collects what is there but cannot
    be read: a symbolic link named `*suffix` that names nothing (or loops), and a directory
    that may not be listed (a policy or suite in either would be left out in silence)."""
    found: list[Path] = []
    try:
        real = os.path.realpath(root)
    except OSError:  # (a path too long to resolve) no pseudo-filesystem is reached by name
        real = ""
    stack = [(os.fspath(root), real)]
    while stack:
        d, d_real = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = list(it)
        except PermissionError:  # there, but not to be listed: say so (it may hold policies)
            if broken is not None:
                broken.append(d)
            continue
        except OSError:  # vanished since it was listed, or no longer a directory
            continue
        for e in entries:
            try:
                if e.is_dir(follow_symlinks=False):
                    child_real = os.path.join(d_real, e.name) if d_real else ""
                    if not (child_real and _pseudo(child_real)):
                        stack.append((e.path, child_real))
                elif e.name.endswith(suffix) and e.is_symlink() and not os.path.exists(e.path):
                    if broken is not None:  # a link to nothing, or a loop
                        broken.append(e.path)
                elif e.name.endswith(suffix) and e.is_file():
                    found.append(Path(e.path))
            except OSError:  # vanished between the listing and this look
                continue
    return sorted(found)


def find_files(paths: Sequence[str | os.PathLike], suffix: str) -> tuple[list[Path], list[str]]:
    """Files named by `paths`, and every `*suffix` file under directories among them.

    Sorted within each directory, de-duplicated by real path, in the order given.
    Returns (files, paths that do not exist or cannot be read: among them a `*suffix`
    symbolic link under a directory that names nothing, and a directory under one that may
    not be listed). Files and directories that vanish during the scan are skipped;
    pseudo-filesystems under a directory are not scanned.
    """
    found: list[Path] = []
    missing: list[str] = []
    for p in paths:
        if os.fspath(p) == "":  # (`Path("")` is `.`: `stopline fmt "$DIR"` with DIR unset rewrote the working tree)
            missing.append("")
            continue
        path = Path(p)
        if path.is_dir():
            found.extend(_walk(path, suffix, missing))
        elif path.is_file():
            found.append(path)
        else:
            missing.append(str(p))
    seen: set = set()
    out = []
    for f in found:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out, missing


def discover(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Every .policy file under the given paths, sorted, de-duplicated. A pseudo-filesystem
    named as a directory to scan (`/proc`, `/sys`, `/dev`, or a directory inside one) is
    refused: its entries vanish while it is listed and it holds no policy."""
    for p in paths:
        if os.path.isdir(p):
            real = os.path.realpath(p)
            fs = _pseudo(real)
            if fs is not None:
                what = "a pseudo-filesystem (the kernel's live view of processes and devices, no policy files there)"
                if real != fs:
                    what = f"inside {fs}, {what}"
                elif os.path.normpath(p) != fs:
                    what = f"{fs}, {what}"
                raise UsageError(f"{p} is {what}: name the directories that hold the .policy files", p)
    for p in paths:  # a suite named where the policies go: one line, not an E001 per YAML key
        if str(p).endswith((".policy-test.yaml", ".policy-test.yml")) and os.path.isfile(p):
            raise UsageError(f"{p} is a fixture suite, not a policy: run `stopline test {p}`, or name the "
                             ".policy files (or their directory)", p)
    found, missing = find_files(paths, ".policy")
    if missing:
        if os.path.isdir(missing[0]):  # under a directory given: one that may not be listed
            raise UsageError(f"cannot list the directory {missing[0]}: permission denied (a policy in it would be "
                             "left out)", missing[0])
        if os.path.islink(missing[0]) and not os.path.exists(missing[0]):
            raise UsageError(f"a symbolic link that names no file (or loops): {missing[0]} (a policy left out)",
                             missing[0])
        if os.path.exists(missing[0]):  # a device, a FIFO, a socket: there, but not readable as a policy
            raise UsageError(f"not a file or a directory: {missing[0]}", missing[0])
        if missing[0] == "":
            raise UsageError("an empty path names no file or directory (an unset variable?): name the .policy "
                             "files or their directory (`.` for the working directory)", missing[0])
        raise UsageError(f"no such file or directory: {missing[0]}", missing[0])
    return found


def _whole_file(path: str, text: str = "") -> Span:
    """A file or path as a whole (missing, unreadable, too big): no line or column."""
    return Span.nowhere(path)


def read_source(path: Path, display: str) -> tuple[SourceFile | None, Diagnostic | None]:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            return None, Diagnostic("E005", "error", f"policy file is {size} bytes; the limit is {MAX_FILE_BYTES}",
                                    _whole_file(display), help="split the policy set into several files")
        data = path.read_bytes()
    except OSError as e:
        return None, Diagnostic("E004", "error", f"cannot read policy file: {e.strerror or e}", _whole_file(display))
    return decode_source(data, display)


def _lf(text: str) -> str:
    """CRLF and CR line endings as LF (the policy hash and every position are the same)."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


_BIDI_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def decode_source(data: bytes, display: str) -> tuple[SourceFile | None, Diagnostic | None]:
    if len(data) > MAX_FILE_BYTES:
        return None, Diagnostic("E005", "error", f"policy file is {len(data)} bytes; the limit is {MAX_FILE_BYTES}",
                                _whole_file(display), help="split the policy set into several files")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        # lines counted as for a readable file: after CRLF and CR became LF
        prefix = _lf(data[: e.start].decode("utf-8", errors="replace"))
        src = SourceFile(display, _lf(data.decode("utf-8", errors="replace")))
        return None, Diagnostic(
            "E004",
            "error",
            "policy file is not valid UTF-8",
            src.span(len(prefix), len(prefix) + 1),
            label=f"invalid byte 0x{data[e.start]:02x}",
            help="save the file as UTF-8",
        )
    text = _lf(text)
    nul = text.find("\x00")
    if nul != -1:
        src = SourceFile(display, text.replace("\x00", " "))
        return None, Diagnostic(
            "E004",
            "error",
            "policy file contains a NUL byte",
            src.span(nul, nul + 1),
            label="NUL byte",
            help="policy files are plain UTF-8 text",
        )
    bidi = [i for i in (text.find(c) for c in _BIDI_CONTROLS) if i != -1]
    if bidi:  # "Trojan Source": reordered display hides what a condition really says
        at = min(bidi)
        src = SourceFile(display, text)
        return None, Diagnostic(
            "E002",
            "error",
            f"invisible bidirectional control character U+{ord(text[at]):04X}",
            src.span(at, at + 1),
            label="reorders how this line is displayed",
            help="remove it: it can make a condition read differently from what it does",
        )
    return SourceFile(display, text), None


# The policy hash (`content_hash`) covers what the policy decides, and nothing else: a
# reordering that changes no decision and no output keeps it, one that can change either
# changes it. So only the collections the policy model defines as unordered are sorted,
# named by their field in the IR (`ir.py`) and how the compiler reads them:
# - named declarations, looked up by name or all taken together: workflows, constants
#   (the declarations, not their values), actions, stops, scenarios, rules (the engine
#   orders them by precedence, then name), prerequisites and criteria (sorted by name),
#   owners (looked up by kind);
# - sets of names: roles, receipt, affects, notify, compensate (the compiler sorts them),
#   side_effects (checked to name declared types; nothing reads their order);
# - `distinct_from`: a set of references (every one is excluded; order means nothing).
# Everything else keeps its order: a constant's value is data the conditions read
# verbatim (`tiers[0]` depends on the order, even of a list of maps with a `name` key),
# authorization slots are listed and filled in order, and a reference's path is a path.
_UNORDERED = frozenset(
    {
        "workflows",
        "constants",
        "actions",
        "stops",
        "scenarios",
        "rules",
        "prerequisites",
        "criteria",
        "owners",
        "roles",
        "side_effects",
        "receipt",
        "affects",
        "notify",
        "compensate",
        "distinct_from",
    }
)
_VERBATIM = frozenset({"value"})  # `Const.value`: never reordered, at any depth
# Declarations added later (issue 15: `fields`, `evidence`, a duty's `when`; issue 18: `cost`): left out of
# the hash while unset, so a policy that uses none of them keeps its hash.
_UNSET_NONE = frozenset({"fields", "evidence", "when", "cost"})


def _canon(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _normalize(value, unordered: bool = False):
    """A model dump with the unordered collections (see `_UNORDERED`) sorted, so their
    order never changes the hash; named items by name first (as the hash always had it).
    (A value that is no dict, list or tuple is itself: not passed down to be returned.)"""
    if isinstance(value, dict):
        return {
            k: (v if k in _VERBATIM or not isinstance(v, _NESTED) else _normalize(v, k in _UNORDERED))
            for k, v in value.items()
            if not (v is None and k in _UNSET_NONE)
        }
    if isinstance(value, (list, tuple)):
        items = [_normalize(v) if isinstance(v, _NESTED) else v for v in value]
        if unordered:
            _sort_named(items)
        return items
    return value


_NESTED = (dict, list, tuple)


def _name_of(item) -> str:
    return str(item.get("name", "")) if isinstance(item, dict) else ""


def _sort_named(items: list) -> None:
    """Sort by (name, canonical JSON), stable: by name, then each run of equal names by
    its canonical JSON (the same order; the JSON, the costly key, only where names tie)."""
    items.sort(key=_name_of)
    i = 0
    while i < len(items):
        j = i + 1
        name = _name_of(items[i])
        while j < len(items) and _name_of(items[j]) == name:
            j += 1
        if j - i > 1:
            items[i:j] = sorted(items[i:j], key=_canon)
        i = j


# `_normalize` again, for a fresh model dump the caller owns (`content_hash`'s: pydantic makes
# every dict and list of it anew): the same value, made in place, with exact-type tests and each
# unordered list sorted by the cheapest key that gives `_sort_named`'s order (issue 16, goal 5:
# 10 -> 6 ms of a fresh process's 1,000-rule load). What a JSON dump does not hold (a tuple, a
# subclass) goes to `_normalize` itself. tests/test_s25_load_hash.py keeps the reference.


def _normalize_dict(d: dict) -> None:
    drop = None
    for k, v in d.items():
        t = type(v)
        if t is dict:
            if k not in _VERBATIM:
                _normalize_dict(v)
        elif t is list:
            if k not in _VERBATIM:
                _normalize_list(v, k in _UNORDERED)
        elif v is None:
            if k in _UNSET_NONE:
                if drop is None:
                    drop = [k]
                else:
                    drop.append(k)
        elif k not in _VERBATIM and isinstance(v, _NESTED):
            d[k] = _normalize(v, k in _UNORDERED)  # (a value replaced, no key added: the walk goes on)
    if drop is not None:
        for k in drop:
            del d[k]


def _normalize_list(items: list, unordered: bool) -> None:
    for i, v in enumerate(items):
        t = type(v)
        if t is dict:
            _normalize_dict(v)
        elif t is list:
            _normalize_list(v, False)
        elif isinstance(v, _NESTED):
            items[i] = _normalize(v)
    if unordered and len(items) > 1:
        _sort_named_fast(items)


def _sort_named_fast(items: list) -> None:
    """`_sort_named(items)`: names alone (`str`) sort by their JSON text, the key
    `_sort_named` gives them (all named "", they all tie); dicts with distinct names by
    name; anything else (names that tie, a mixed list) by `_sort_named` itself."""
    first = type(items[0])
    if first is str and all(type(v) is str for v in items):
        items.sort(key=_json_str)
    elif first is dict and all(type(v) is dict for v in items):
        names = [_name_of(v) for v in items]
        if len(set(names)) == len(names):
            items.sort(key=_name_of)
        else:
            _sort_named(items)
    else:
        _sort_named(items)


_json_str = json.encoder.encode_basestring  # (what `json.dumps` writes a str as, with ensure_ascii=False)


def content_hash(files: Iterable[ir.PolicyFile]) -> str:
    workflows = sorted((w.model_dump(mode="json") for f in files for w in f.workflows), key=lambda w: w["name"])
    files = list(files)
    roles = sorted({r.name for f in files for r in f.roles})
    consts = sorted((c.model_dump(mode="json") for f in files for c in f.constants), key=lambda c: c["name"])
    _normalize_list(workflows, False)  # (see _UNORDERED; the dumps are this call's own)
    doc = {"roles": roles, "constants": consts, "workflows": workflows}
    blob = _canon(doc)
    return "sha256:" + hashlib.sha256(blob.encode("utf-8")).hexdigest()


def load_sources(
    sources: list[SourceFile], extra_diags: list[Diagnostic] | None = None, *, accelerate: bool = True
) -> LoadResult:
    """Parse, lower and check `sources` as one policy set (the collector paused meanwhile:
    see `collector_paused`)."""
    with collector_paused():
        return _load_sources(sources, extra_diags, accelerate=accelerate)


def _load_sources(
    sources: list[SourceFile], extra_diags: list[Diagnostic] | None = None, *, accelerate: bool = True
) -> LoadResult:
    from .check import check
    from .lower import lower
    from .parser import parse

    diags: list[Diagnostic] = list(extra_diags or [])
    files: list[ir.PolicyFile] = []
    smap = {s.path: s for s in sources}
    directives: list[Collected] = []  # `# stopline: acknowledge ...`, file by file
    for src in sources:
        pr = parse(src)
        diags.extend(pr.diagnostics)
        if pr.tree is None:
            continue
        if _ACK_MARKER in src.text:  # (`acknowledge.has_directives`, without importing it for a file that has none)
            from .acknowledge import collect

            directives.append(collect(src, pr.tree))
        try:
            pf, ldiags = lower(src, pr.tree)
        except RecursionError:
            diags.append(Diagnostic("E005", "error", "policy file nests too deeply", _whole_file(src.path)))
            continue
        diags.extend(ldiags)
        files.append(pf)
    nconds = count_conditions(files)
    cel_cache: dict = {}
    compiled: dict = {}
    if nconds > MAX_CONDITIONS_PER_SET:
        # compiling is what costs (about 0.4 ms a condition): refuse before doing it
        diags.append(
            Diagnostic(
                "E005",
                "error",
                f"the policy set has {nconds} conditions; the limit is {MAX_CONDITIONS_PER_SET}",
                _whole_file(sources[0].path if sources else "<policy set>"),
                help="split the policy set, or move repeated values into `const` declarations",
            )
        )
    else:
        checker = check(files, smap, cel_cache, accelerate)
        unread = any(d.severity == "error" for d in extra_diags or ())  # (a file not read may hold the workflow)
        diags.extend(d for d in checker.diags if not (unread and d.code == "W206"))
        compiled = checker.compiled
    diags = sort_diagnostics(diags)
    acknowledged: list[Acknowledged] = []
    if directives:
        from .acknowledge import apply

        kept, acknowledged = apply(diags, directives)
        diags = sort_diagnostics(kept)
        acknowledged.sort(key=Acknowledged.sort_key)
    pset = None
    if not any(d.severity == "error" for d in diags):
        pset = ir.PolicySet(files=tuple(files), content_hash=content_hash(files))
    return LoadResult(pset, diags, smap, compiled, cel_cache, acknowledged)


def count_conditions(files: Iterable[ir.PolicyFile]) -> int:
    """Every CEL condition of the files: rules, prerequisites, stop conditions, criteria,
    and the duties' conditions (`notify [...] when ...`, a conditional `compensate`: one per
    statement, however many duties it lists, in a scenario and its `after window`)."""
    n = 0
    for f in files:
        for w in f.workflows:
            for a in w.actions:
                n += len(a.rules) + len(a.prerequisites)
            for s in w.stops:
                n += (s.condition is not None) + len(s.criteria)
            for sc in w.scenarios:
                duties: list[ir.Name | ir.CompItem] = [*sc.notify, *sc.compensate]
                if sc.escalation is not None:
                    duties += [*sc.escalation.notify, *sc.escalation.compensate]
                n += len({(d.when.loc.span.start if d.when.loc.span else id(d.when)) for d in duties
                          if d.when is not None})
    return n


def load_paths(paths: Sequence[str | os.PathLike], *, accelerate: bool = True) -> LoadResult:
    """Parse, lower and check every .policy file under `paths` as one policy set
    (`accelerate=False`: CEL compiled with the reference closures only)."""
    files = discover(paths)
    if not files:
        raise UsageError("no .policy files found in " + ", ".join(str(p) for p in paths), paths[0] if paths else "")
    if len(files) > MAX_FILES:
        raise UsageError(f"{len(files)} policy files; the limit is {MAX_FILES}")
    sources: list[SourceFile] = []
    diags: list[Diagnostic] = []
    shown: dict[str, SourceFile] = {}  # unreadable files, kept only to show the caret
    for f in files:
        src, err = read_source(f, str(f))
        if err is not None:
            diags.append(err)
            if src is not None:
                sources.append(src)
            elif err.code in ("E002", "E004") and not err.message.startswith("cannot read"):
                shown[str(f)] = display_source(f, str(f))
            continue
        assert src is not None  # read_source/decode_source return a source whenever they return no error
        sources.append(src)
    result = load_sources(sources, diags, accelerate=accelerate)
    for k, v in shown.items():
        result.sources.setdefault(k, v)
    return result


def display_source(path: Path, display: str) -> SourceFile:
    """A file that cannot be loaded, decoded leniently, only for rendering diagnostics."""
    try:
        data = path.read_bytes()[:MAX_FILE_BYTES]
    except OSError:
        data = b""
    return SourceFile(display, _display_text(data))


def _display_text(data: bytes) -> str:
    """Bytes decoded leniently, as the positions of their diagnostics count: without a
    leading BOM, CRLF and CR as LF (and NUL shown as a space)."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return _lf(data.decode("utf-8", errors="replace")).replace("\x00", " ")


def load_text(text: str, path: str = "<string>") -> LoadResult:
    """Check policy text held in memory (tests, editors)."""
    data = text.encode("utf-8", errors="surrogatepass")
    src, err = decode_source(data, path)
    if err is not None:
        return LoadResult(None, [err], {path: SourceFile(path, _display_text(data))})
    assert src is not None  # read_source/decode_source return a source whenever they return no error
    return load_sources([src])


def require_ok(result: LoadResult) -> ir.PolicySet:
    if result.policy_set is None:
        raise PolicyError(result.diagnostics, result.sources)
    return result.policy_set
