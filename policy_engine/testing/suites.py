"""Policy test suites (`*.policy-test.yaml`): loading, checking, running, coverage.

The fixture format is documented in the README, section "Testing policies". This module is a consumer of the
layers above it (loader, engine, explain); `cli.py` (`stopline test`) and
`pytest_plugin.py` drive it.

    runner = Runner()
    report = runner.run(["policies/"], keyword="reviewer")
    report.passed, report.failed, report.skipped, report.errors

A suite is read with PyYAML's `compose`, so every key and value keeps its position:
problems in a suite are `Diagnostic`s located at `file:line:col`, rendered like policy
diagnostics, and never tracebacks.
"""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .diagnostics import Diagnostic, did_you_mean, one_of, render, sort_diagnostics
from .limits import MAX_SUITE_BYTES, MAX_SUITE_NODES
from .source import SourceFile, Span
from .timestamps import parse_ts

SUITE_SUFFIX = ".policy-test.yaml"
QUESTIONS = ("gate", "rollback", "authorize", "resume")

# Suite diagnostic codes (stable; T = test suites).
T_CODES: dict[str, str] = {
    "T001": "unreadable suite (missing, not UTF-8, or not valid YAML)",
    "T002": "unknown key",
    "T003": "unknown input name",
    "T004": "unknown policy name (workflow, action type, rule, trigger, scenario or criterion)",
    "T005": "case without a question or an expectation",
    "T006": "value of the wrong type",
    "T007": "the suite's policies do not load",
    "T008": "duplicate name",
    "T009": "no `now`: the case would run on the wall clock",
}

SUITE_KEYS = ("suite", "policies", "now", "workflow_state", "inputs", "cases")
INPUT_KINDS = ("actions", "states", "records", "principals", "evidence")
CASE_KEYS = ("name", "now", "skip", "expect", "table", *QUESTIONS)
ROW_KEYS = ("name", "now", "skip", "expect")  # plus any key of the case's question
QUESTION_KEYS: dict[str, tuple[str, ...]] = {
    "gate": ("action", "with", "workflow_state"),
    "rollback": ("workflow", "scenario", "original", "requested_by", "reason", "requested_at", "with"),
    "authorize": ("rollback", "gate", "approvals"),  # `rollback` (a plan) or `gate` (a require_approval decision)
    "resume": ("workflow", "stop", "evidence", "with"),
}
SHORTHANDS: dict[str, tuple[str, ...]] = {
    "gate": ("effect", "rule", "stop", "notify", "approvers", "matched", "errors", "receipt"),
    "rollback": ("scenario", "route", "window", "reversible_until", "authorization", "notify", "compensations",
                 "feasibility", "unmet_prerequisites", "cascade"),
    "authorize": ("satisfied", "open_slots", "filled", "rejected"),
    "resume": ("allowed", "unmet", "met"),
}
OUTPUT_MODEL = {"gate": "Decision", "rollback": "RollbackPlan", "authorize": "AuthorizationVerdict",
                "resume": "ResumeDecision"}
SPECIAL_RULES = ("default", "undeclared", "stopped", "error")


def _answer_fields(kind: str) -> tuple[str, ...]:
    """Top-level JSON keys of the engine's answer for `kind` (by alias)."""
    try:
        from . import models
    except Exception:  # pragma: no cover - models not importable: shorthands only
        return ()
    model = getattr(models, OUTPUT_MODEL[kind], None)
    if model is None:  # pragma: no cover
        return ()
    return tuple((f.alias or n) for n, f in model.model_fields.items())


def expect_keys(kind: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*SHORTHANDS[kind], *_answer_fields(kind))))


# =============================================================================== YAML with positions


class _SuiteError(Exception):
    def __init__(self, diag: Diagnostic):
        super().__init__(diag.message)
        self.diag = diag


@dataclass
class Doc:
    """A suite's plain data plus the position of every key and value, by path."""

    source: SourceFile
    data: Any
    values: dict[tuple, tuple[int, int]]  # path -> (start, end) offsets of the value
    keys: dict[tuple, tuple[int, int]]  # path -> (start, end) offsets of the key naming it

    def span(self, path: tuple, *, key: bool = False) -> Span:
        """The key (when `key` and the path ends in a mapping key) or the value at `path`."""
        path = tuple(path)
        while path:
            if key and path in self.keys:
                return self.source.span(*self.keys[path])
            if path in self.values:
                s, e = self.values[path]
                if not key and path in self.keys and e - s > 200:  # a whole block: point at its key
                    return self.source.span(*self.keys[path])
                return self.source.span(s, e)
            path = path[:-1]
        return self.source.span(0, 0)

    def line(self, path: tuple) -> int:
        return self.span(path, key=True).line


def _offset(src: SourceFile, mark: Any) -> int:
    return src.offset(mark.line + 1, mark.column + 1)


def _scalar(loader: Any, node: Any) -> Any:
    tag = node.tag
    if tag == "tag:yaml.org,2002:int":
        return loader.construct_yaml_int(node)
    if tag == "tag:yaml.org,2002:float":
        return loader.construct_yaml_float(node)
    if tag == "tag:yaml.org,2002:bool":
        return loader.construct_yaml_bool(node)
    if tag == "tag:yaml.org,2002:null":
        return None
    return node.value  # strings, and timestamps kept as written


def _unpaired_surrogate(value: object) -> bool:
    """YAML `"\\ud800"` escapes decode to lone surrogates, which no report can print."""
    if type(value) is not str:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def parse_yaml(src: SourceFile) -> Doc:
    """Compose `src` and build plain data with positions. Raises `_SuiteError`."""
    import yaml

    def err(msg: str, start: int, end: int | None = None, label: str | None = None, help: str | None = None):
        return _SuiteError(Diagnostic("T001", "error", msg, src.span(start, end if end is not None else start + 1),
                                      label=label, help=help))

    try:
        root = yaml.compose(src.text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        off = _offset(src, mark) if mark is not None else 0
        problem = (e.problem or "invalid YAML").strip()
        notes: tuple[str, ...] = ()
        if e.context and e.context_mark is not None:
            notes = (f"{e.context.strip()} that starts at {src.path}:{e.context_mark.line + 1}:{e.context_mark.column + 1}",)
        raise _SuiteError(Diagnostic("T001", "error", f"invalid YAML: {problem}", src.span(off, off + 1), label=problem,
                                     notes=notes, help="check the indentation and the brackets around this line"))
    except yaml.YAMLError as e:
        raise err(f"invalid YAML: {e}", 0)
    values: dict[tuple, tuple[int, int]] = {}
    keys: dict[tuple, tuple[int, int]] = {}
    ctor = yaml.SafeLoader("")
    depth_limit = 64
    budget = [MAX_SUITE_NODES]  # aliases are expanded: bound the total (no "billion laughs")

    def build(node: Any, path: tuple, depth: int) -> Any:
        if depth > depth_limit:
            raise err("the suite nests too deeply", _offset(src, node.start_mark))
        budget[0] -= 1
        if budget[0] < 0:
            raise err(f"the suite expands to more than {MAX_SUITE_NODES} values (through aliases?)",
                      _offset(src, node.start_mark), help="write inputs out, or reuse them by name under `inputs`")
        values[path] = (_offset(src, node.start_mark), _offset(src, node.end_mark))
        if isinstance(node, yaml.ScalarNode):
            if _unpaired_surrogate(node.value):
                raise err("a string holds an unpaired surrogate escape such as `\\ud800`", _offset(src, node.start_mark),
                          help="write the character itself, or a valid pair of escapes")
            try:
                return _scalar(ctor, node)
            except Exception:  # pragma: no cover - malformed scalar
                return node.value
        if isinstance(node, yaml.SequenceNode):
            return [build(n, path + (i,), depth + 1) for i, n in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            out: dict = {}
            for knode, vnode in node.value:
                if not isinstance(knode, yaml.ScalarNode):
                    raise err("mapping keys must be plain names", _offset(src, knode.start_mark))
                k = knode.value
                if _unpaired_surrogate(k):
                    raise err("a key holds an unpaired surrogate escape such as `\\ud800`", _offset(src, knode.start_mark))
                ks, ke = _offset(src, knode.start_mark), _offset(src, knode.end_mark)
                if k in out:
                    raise _SuiteError(Diagnostic("T008", "error", f"key `{k}` is given twice", src.span(ks, ke),
                                                 label="second occurrence", help="remove one of them"))
                keys[path + (k,)] = (ks, ke)
                out[k] = build(vnode, path + (k,), depth + 1)
            return out
        raise err("unsupported YAML node", _offset(src, node.start_mark))  # pragma: no cover

    data = build(root, (), 0) if root is not None else None
    return Doc(src, data, values, keys)


# =============================================================================== suite model


@dataclass
class Case:
    suite: "Suite"
    name: str
    kind: str  # gate | rollback | authorize | resume
    question: dict  # as written, with the row merged in (names not yet resolved)
    expect: dict
    now: str | None
    skip: str | None
    path: tuple  # YAML path of the case (or row)
    expect_path: tuple

    @property
    def line(self) -> int:
        return self.suite.doc.line(self.path) if self.suite.doc else 1

    @property
    def nodeid(self) -> str:
        return f"{self.suite.display}::{self.name}"


@dataclass
class Suite:
    path: Path
    display: str
    title: str = ""
    policies: tuple[str, ...] = ()
    now: str | None = None
    workflow_state: Any = None
    inputs: dict = field(default_factory=dict)
    cases: list[Case] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    source: SourceFile | None = None
    doc: Doc | None = None

    @property
    def ok(self) -> bool:
        return not any(d.severity == "error" for d in self.diagnostics)

    def render_diagnostics(self, color: bool = False) -> str:
        return "\n\n".join(render(d, self.source, color=color) for d in sort_diagnostics(self.diagnostics))


def discover_suites(paths: Sequence[str | os.PathLike]) -> tuple[list[Path], list[str]]:
    """Every `*.policy-test.yaml` under `paths` (sorted, de-duplicated), and missing paths."""
    from .language.loader import find_files

    return find_files(paths, SUITE_SUFFIX)


def _display(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
        return rel if not rel.startswith("..") else str(path)
    except ValueError:  # pragma: no cover - other drive on Windows
        return str(path)


def _type_name(v: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(v), type(v).__name__)


class _Builder:
    """Reads a Doc into a Suite, collecting every structural problem."""

    def __init__(self, suite: Suite, doc: Doc):
        self.suite, self.doc = suite, doc
        self.diags = suite.diagnostics

    def error(self, code: str, msg: str, path: tuple, *, key: bool = False, label: str | None = None,
              help: str | None = None) -> None:
        self.diags.append(Diagnostic(code, "error", msg, self.doc.span(path, key=key), label=label, help=help))

    def want(self, value: Any, types: tuple, path: tuple, what: str) -> bool:
        if isinstance(value, bool) and bool not in types:
            ok = False
        else:
            ok = isinstance(value, types)
        if not ok:
            expected = " or ".join(dict.fromkeys(_type_name(t()) if t is not type(None) else "null" for t in types))
            self.error("T006", f"{what} must be {expected}, not {_type_name(value)}", path,
                       label=f"expected {expected}")
        return ok

    def keys(self, mapping: dict, allowed: Sequence[str], path: tuple, where: str) -> None:
        for k in mapping:
            if k not in allowed:
                self.error("T002", f"unknown key `{k}` in {where}", path + (k,), key=True, label="unknown key",
                           help=did_you_mean(str(k), allowed) or f"expected {one_of(list(allowed))}")

    def build(self) -> None:
        data, s = self.doc.data, self.suite
        if data is None:
            self.error("T005", "the suite is empty", (), help="add `cases:` (see the README, section Testing policies)")
            return
        if not self.want(data, (dict,), (), "a suite"):
            return
        self.keys(data, SUITE_KEYS, (), "the suite")
        default_title = s.path.name[: -len(SUITE_SUFFIX)] if s.path.name.endswith(SUITE_SUFFIX) else s.path.stem
        s.title = str(data.get("suite") or default_title)
        pol = data.get("policies")
        if pol is None:
            s.policies = (_display(Path(os.path.normpath(s.path.parent))),)
        elif isinstance(pol, str):
            s.policies = (_display(Path(os.path.normpath(s.path.parent / pol))),)
        elif self.want(pol, (list, str), ("policies",), "`policies`"):
            ok = []
            for i, p in enumerate(pol):
                if self.want(p, (str,), ("policies", i), "a policy path"):
                    ok.append(_display(Path(os.path.normpath(s.path.parent / p))))
            s.policies = tuple(ok)
        for i, p in enumerate(s.policies):
            if not os.path.exists(p):
                self.error("T007", f"no such policy file or directory: `{_display(Path(p))}`",
                           ("policies",) if isinstance(pol, str) else ("policies", i),
                           help="`policies` paths are relative to the suite file")
        if "now" in data and self.want(data["now"], (str,), ("now",), "`now`"):
            self.check_time(data["now"], ("now",))
            s.now = data["now"]
        if "workflow_state" in data:
            self.want(data["workflow_state"], (dict, str), ("workflow_state",), "`workflow_state`")
            s.workflow_state = data["workflow_state"]
        inputs = data.get("inputs") or {}
        if self.want(inputs, (dict,), ("inputs",), "`inputs`"):
            self.keys(inputs, INPUT_KINDS, ("inputs",), "`inputs`")
            for kind in INPUT_KINDS:
                group = inputs.get(kind) or {}
                if self.want(group, (dict,), ("inputs", kind), f"`inputs.{kind}`"):
                    for name, value in group.items():
                        self.want(value, (dict,), ("inputs", kind, name), f"input `{name}`")
                    s.inputs[kind] = {k: v for k, v in group.items() if isinstance(v, dict)}
                else:
                    s.inputs[kind] = {}
        cases = data.get("cases")
        if cases is None:
            self.error("T005", "the suite has no `cases`", (), help="add `cases:` (see the README, section Testing policies)")
            return
        if not self.want(cases, (list,), ("cases",), "`cases`"):
            return
        names: dict[str, tuple] = {}
        for i, c in enumerate(cases):
            self.case(c, ("cases", i), names)
        self.check_pinned()

    def check_time(self, value: str, path: tuple) -> None:
        try:  # the engine's own parser (timestamps.parse_ts): a `now` it would refuse is refused here
            parse_ts(value)
        except ValueError:
            self.error("T006", f"`{value}` is not an RFC 3339 timestamp", path,
                       label="expected a timestamp such as \"2026-11-24T10:00:00Z\"",
                       help="write the date, the time with seconds, and the zone: `2026-11-24T10:00:00Z`")

    def check_pinned(self) -> None:
        """Every case runs at a pinned `now`: without one it would run on the wall clock,
        and a case about a window or an expiry that passes today fails later in CI."""
        missing = [c for c in self.suite.cases if c.now is None]
        if not missing:
            return
        first = missing[0]
        n = len(missing) - 1
        more = f" (nor have {n} other case{'s' if n > 1 else ''})" if n else ""
        self.error("T009", f"case `{first.name}` has no `now`{more}: it would run on the wall clock",
                   first.path + ("name",), key=True, label="no `now` for this case",
                   help='pin it: add `now: "2026-11-24T10:00:00Z"` at the top of the suite (every case inherits '
                        "it) or to the case")

    def case(self, c: Any, path: tuple, names: dict) -> None:
        if not self.want(c, (dict,), path, "a case"):
            return
        self.keys(c, CASE_KEYS, path, "a case")
        name = c.get("name")
        if not isinstance(name, str) or not name.strip():
            self.error("T005", "case without a `name`", path, key=False, label="this case",
                       help="give every case a `name:` (unique in the suite)")
            name = f"case {path[-1] + 1}"
        questions = [q for q in QUESTIONS if q in c]
        if not questions:
            self.error("T005", f"case `{name}` has no question", path + ("name",) if "name" in c else path,
                       key=True, help=f"add one of {one_of(list(QUESTIONS))}")
            return
        if len(questions) > 1:
            self.error("T005", f"case `{name}` asks {len(questions)} questions", path + (questions[1],), key=True,
                       label="second question", help="split it into one case per question")
            return
        kind = questions[0]
        q = c[kind]
        if kind == "gate" and isinstance(q, str):
            q = {"action": q}
        if not self.want(q, (dict,), path + (kind,), f"`{kind}`"):
            return
        self.keys(q, QUESTION_KEYS[kind], path + (kind,), f"`{kind}`")
        if kind == "authorize" and isinstance(q.get("rollback"), dict):
            self.keys(q["rollback"], QUESTION_KEYS["rollback"], path + (kind, "rollback"), "`rollback`")
        if kind == "authorize" and isinstance(q.get("gate"), dict):
            self.keys(q["gate"], QUESTION_KEYS["gate"], path + (kind, "gate"), "`gate`")
        now = c.get("now", self.suite.now)
        if "now" in c and self.want(c["now"], (str,), path + ("now",), "`now`"):
            self.check_time(c["now"], path + ("now",))
        skip = c.get("skip")
        skip = (skip if isinstance(skip, str) else "skipped") if skip not in (None, False) else None
        expect = c.get("expect")
        if expect is not None and not self.want(expect, (dict,), path + ("expect",), "`expect`"):
            return
        table = c.get("table")
        if table is None:
            if expect is None:
                self.error("T005", f"case `{name}` has no `expect`", path + ("name",) if "name" in c else path,
                           key=True, help="add `expect:` with the keys to compare (see the README, section Testing policies)")
                return
            if not expect:
                self.error("T005", f"case `{name}` expects nothing", path + ("expect",), key=True,
                           help=f"give at least one of {one_of(list(SHORTHANDS[kind]))}")
                return
            self.add(name, kind, q, expect, now, skip, path, path + ("expect",), names)
            return
        if not self.want(table, (list,), path + ("table",), "`table`"):
            return
        for j, row in enumerate(table):
            rpath = path + ("table", j)
            if not self.want(row, (dict,), rpath, "a table row"):
                continue
            self.keys(row, (*ROW_KEYS, *QUESTION_KEYS[kind]), rpath, "a table row")
            rname = row.get("name")
            full = f"{name} [{rname if rname is not None else j + 1}]"
            rq = deep_merge(q, {k: v for k, v in row.items() if k not in ROW_KEYS})
            rexp = row.get("expect")
            if rexp is not None and not self.want(rexp, (dict,), rpath + ("expect",), "`expect`"):
                continue
            merged = deep_merge(expect or {}, rexp or {})
            if not merged:
                self.error("T005", f"table row `{full}` has no `expect`", rpath, help="add `expect:` to the row or the case")
                continue
            if "now" in row and self.want(row["now"], (str,), rpath + ("now",), "`now`"):
                self.check_time(row["now"], rpath + ("now",))
            rskip = row.get("skip", None)
            rskip = (rskip if isinstance(rskip, str) else "skipped") if rskip not in (None, False) else skip
            self.add(full, kind, rq, merged, row.get("now", now), rskip, rpath,
                     rpath + ("expect",) if rexp is not None else path + ("expect",), names)

    def add(self, name, kind, q, expect, now, skip, path, expect_path, names) -> None:
        if name in names:
            self.error("T008", f"two cases are named `{name}`", path + ("name",), key=True,
                       label="second case with this name", help="case names must be unique in a suite")
            return
        names[name] = path
        self.suite.cases.append(Case(self.suite, name, kind, q, expect, now, skip, path, expect_path))


def load_suite(path: str | os.PathLike) -> Suite:
    """Read and structurally check one suite. Problems land in `suite.diagnostics`."""
    path = Path(path)
    display = _display(path)
    suite = Suite(path=path, display=display, title=path.name)
    try:
        raw = path.read_bytes()
    except OSError as e:
        suite.source = SourceFile(display, "")
        suite.diagnostics.append(Diagnostic("T001", "error", f"cannot read suite: {e.strerror or e}",
                                            Span(display, 0, 0, 1, 1, 1, 1)))
        return suite
    if len(raw) > MAX_SUITE_BYTES:
        suite.source = SourceFile(display, "")
        suite.diagnostics.append(Diagnostic("T001", "error", f"suite is {len(raw)} bytes; the limit is {MAX_SUITE_BYTES}",
                                            Span(display, 0, 0, 1, 1, 1, 1)))
        return suite
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        prefix = raw[: e.start].decode("utf-8", errors="replace")
        suite.source = SourceFile(display, raw.decode("utf-8", errors="replace"))
        suite.diagnostics.append(Diagnostic("T001", "error", "suite is not valid UTF-8",
                                            suite.source.span(len(prefix), len(prefix) + 1),
                                            help="save the file as UTF-8"))
        return suite
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    suite.source = SourceFile(display, text)
    try:
        suite.doc = parse_yaml(suite.source)
    except _SuiteError as e:
        suite.diagnostics.append(e.diag)
        return suite
    except RecursionError:
        suite.diagnostics.append(Diagnostic("T001", "error", "the suite nests too deeply", suite.source.span(0, 0)))
        return suite
    _Builder(suite, suite.doc).build()
    return suite


# =============================================================================== helpers


def deep_merge(base: Any, over: Any) -> Any:
    """Dicts merge key by key; anything else in `over` replaces."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = deep_merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(over)


def parse_time(value: Any) -> datetime | None:
    """A timestamp as the engine reads it (`timestamps.parse_ts`: one RFC 3339 parser), or None."""
    try:
        return parse_ts(value)
    except ValueError:
        return None


# =============================================================================== resolving inputs


class _Resolver:
    """Turns a case's question into engine inputs, resolving input names.

    Unknown names are collected as diagnostics (T003) located in the suite."""

    def __init__(self, suite: Suite):
        self.suite = suite
        self.diags: list[Diagnostic] = []

    def error(self, code: str, msg: str, path: tuple, *, help: str | None = None, label: str | None = None,
              key: bool = False) -> None:
        self.diags.append(Diagnostic(code, "error", msg, self.suite.doc.span(path, key=key), label=label, help=help))

    def named(self, kind: str, value: Any, path: tuple, what: str) -> dict | None:
        if isinstance(value, dict):
            return copy.deepcopy(value)
        if isinstance(value, str):
            group = self.suite.inputs.get(kind, {})
            if value in group:
                return copy.deepcopy(group[value])
            self.error("T003", f"unknown {what} `{value}`", path, label=f"not in `inputs.{kind}`",
                       help=did_you_mean(value, group) or (f"known: {one_of(sorted(group))}" if group else
                                                          f"declare it under `inputs.{kind}`"))
            return None
        self.error("T006", f"{what} must be a name or a mapping, not {_type_name(value)}", path)
        return None

    def record(self, value: Any, path: tuple, seen: tuple = ()) -> dict | None:
        rec = self.named("records", value, path, "record")
        if rec is None:
            return None
        if isinstance(value, str):
            rec.setdefault("id", value)
            if value in seen:  # a name-level loop: keep the reference flat; the engine reports the loop
                rec["downstream"] = []
                return rec
            seen = seen + (value,)
        down = rec.get("downstream", [])
        if isinstance(down, list):
            out = []
            for i, d in enumerate(down):
                r = self.record(d, path if isinstance(value, str) else path + ("downstream", i), seen)
                if r is not None:
                    out.append(r)
            rec["downstream"] = out
        return rec

    def gate(self, q: dict, path: tuple) -> dict | None:
        action = self.named("actions", q.get("action"), path + ("action",), "action") if "action" in q else None
        if "action" not in q:
            self.error("T005", "`gate` needs an `action`", path, key=True, help="`gate: {action: NAME, with: {...}}`")
        if action is None:
            return None
        if isinstance(q.get("with"), dict):
            action = deep_merge(action, q["with"])
        state = q.get("workflow_state", self.suite.workflow_state)
        if state is not None:
            spath = path + ("workflow_state",) if "workflow_state" in q else ("workflow_state",)
            state = self.named("states", state, spath, "workflow state")
            if state is None:
                return None
        return {"action": action, "workflow_state": state}

    def rollback(self, q: dict, path: tuple) -> dict | None:
        req = {k: copy.deepcopy(v) for k, v in q.items() if k not in ("original", "with")}
        for k in ("workflow", "scenario", "requested_by"):
            if k not in q:
                self.error("T005", f"`rollback` needs `{k}`", path, key=True)
        if "original" not in q:
            self.error("T005", "`rollback` needs `original` (a record name or an inline record)", path, key=True)
            return None
        orig = self.record(q["original"], path + ("original",))
        if orig is None:
            return None
        req["original"] = orig
        if isinstance(q.get("with"), dict):
            req = deep_merge(req, q["with"])
        return {"request": req}

    def authorize(self, q: dict, path: tuple, now: str | None) -> dict | None:
        """A rollback plan (`rollback`: the request to classify) or a gate decision (`gate`:
        the action to evaluate), and the approvals; each approval is bound to what the case
        classifies or evaluates (its `plan_hash` or `action_digest`) unless it names one."""
        if ("rollback" in q) == ("gate" in q):
            self.error("T005", "`authorize` needs exactly one of `rollback` (the request to classify) or `gate` "
                               "(the action whose require_approval decision the approvals release)", path, key=True,
                       help="`authorize: {gate: {action: NAME}, approvals: [...]}`")
            return None
        if "gate" in q:
            g = q["gate"]
            g = {"action": g} if isinstance(g, str) else g
            if not isinstance(g, dict):
                self.error("T006", f"`gate` must be an action name or a mapping, not {_type_name(g)}", path + ("gate",))
                return None
            r = self.gate(g, path + ("gate",))
        else:
            rb = q.get("rollback")
            if not isinstance(rb, dict):
                self.error("T006", f"`rollback` must be a mapping, not {_type_name(rb)}", path + ("rollback",))
                return None
            r = self.rollback(rb, path + ("rollback",))
        approvals = []
        raw = q.get("approvals", [])
        if not isinstance(raw, list):
            self.error("T006", "`approvals` must be a list", path + ("approvals",))
            return None
        principals = self.suite.inputs.get("principals", {})
        for i, a in enumerate(raw):
            if isinstance(a, str):
                p = self.named("principals", a, path + ("approvals", i), "principal")
                if p is None:
                    continue
                p.setdefault("principal", a)
            elif isinstance(a, dict):
                p = dict(a)
                name = p.get("principal")
                if isinstance(name, str) and name in principals:
                    base = copy.deepcopy(principals[name])
                    base.setdefault("principal", name)
                    p = deep_merge(base, p)
                if "principal" not in p:
                    self.error("T005", "an inline approval needs `principal`", path + ("approvals", i))
                    continue
            else:
                self.error("T006", f"an approval must be a principal name or a mapping, not {_type_name(a)}",
                           path + ("approvals", i))
                continue
            p.setdefault("roles", [])
            if now is not None:
                p.setdefault("at", now)
            approvals.append(p)
        if r is None:
            return None
        return {**r, "approvals": approvals}

    def resume(self, q: dict, path: tuple) -> dict | None:
        for k in ("workflow", "stop"):
            if k not in q:
                self.error("T005", f"`resume` needs `{k}`", path, key=True)
        ev = q.get("evidence", {})
        evidence = self.named("evidence", ev, path + ("evidence",), "evidence")
        if evidence is None:
            return None
        if isinstance(q.get("with"), dict):
            evidence = deep_merge(evidence, q["with"])
        return {"workflow": q.get("workflow"), "stop": q.get("stop"), "evidence": evidence}

    def resolve(self, case: Case) -> dict | None:
        q, path = case.question, case.path + (case.kind,)
        if case.kind == "gate":
            return self.gate(q, path)
        if case.kind == "rollback":
            return self.rollback(q, path)
        if case.kind == "authorize":
            return self.authorize(q, path, case.now)
        return self.resume(q, path)


# =============================================================================== policy index


@dataclass
class PolicyIndex:
    """Names declared by a policy set, for checking suites, and coverage items."""

    workflows: dict[str, Any] = field(default_factory=dict)  # name -> ir.Workflow
    actions: dict[str, Any] = field(default_factory=dict)  # type -> ir.ActionType

    @classmethod
    def of(cls, policy_set: Any) -> "PolicyIndex":
        idx = cls()
        for w in policy_set.workflows:
            idx.workflows[w.name] = w
            for a in w.actions:
                idx.actions[a.name] = a
        return idx

    def stops(self, workflow: str | None) -> dict[str, Any]:
        ws = [self.workflows[workflow]] if workflow in self.workflows else list(self.workflows.values())
        return {s.name: s for w in ws for s in w.stops}

    def scenarios(self, workflow: str | None) -> dict[str, Any]:
        ws = [self.workflows[workflow]] if workflow in self.workflows else list(self.workflows.values())
        return {s.name: s for w in ws for s in w.scenarios}


def _as_names(value: Any) -> list:
    if isinstance(value, list):
        return value
    return [value]


class _Checker:
    """Checks names in a case's question and expectation against the policy set."""

    def __init__(self, suite: Suite, index: PolicyIndex):
        self.suite, self.idx = suite, index
        self.diags: list[Diagnostic] = []

    def error(self, code, msg, path, *, key=False, label=None, help=None):
        self.diags.append(Diagnostic(code, "error", msg, self.suite.doc.span(path, key=key), label=label, help=help))

    def name(self, what: str, value: Any, known: Iterable[str], path: tuple, extra: Sequence[str] = ()) -> bool:
        known = list(known)
        if not isinstance(value, str):
            self.error("T006", f"{what} must be a name, not {_type_name(value)}", path)
            return False
        if value in known or value in extra:
            return True
        self.error("T004", f"unknown {what} `{value}`", path, label=f"no such {what} in the suite's policies",
                   help=did_you_mean(value, [*known, *extra]) or (f"known: {one_of(sorted(known))}" if known and len(known) <= 8 else None))
        return False

    def workflow(self, value: Any, path: tuple) -> bool:
        return self.name("workflow", value, self.idx.workflows, path)

    def check(self, case: Case, resolved: dict) -> None:
        exp, epath = case.expect, case.expect_path
        allowed = expect_keys(case.kind)
        for k in exp:
            if k not in allowed:
                self.error("T002", f"unknown expectation `{k}` for a `{case.kind}` case", epath + (k,), key=True,
                           label="unknown key", help=did_you_mean(k, allowed) or f"expected {one_of(list(SHORTHANDS[case.kind]))}")
        qpath = case.path + (case.kind,)
        if case.kind == "gate":
            self.gate(case, resolved, qpath, exp, epath)
        elif case.kind == "authorize" and "action" in resolved:  # a gate decision's approvals
            g = case.question.get("gate")
            self.gate(Case(case.suite, case.name, "gate", {"action": g} if isinstance(g, str) else g, {}, case.now,
                           None, case.path, case.expect_path), resolved, qpath + ("gate",), {}, epath)
        elif case.kind in ("rollback", "authorize"):
            req = resolved["request"]
            rq = case.question.get("rollback", {}) if case.kind == "authorize" else case.question
            rpath = qpath + ("rollback",) if case.kind == "authorize" else qpath
            wf = req.get("workflow")
            if "workflow" in rq and self.workflow(wf, rpath + ("workflow",)):
                scen = req.get("scenario")
                if "scenario" in rq:
                    from .language.ir import STANDARD_SCENARIOS
                    self.name("rollback scenario", scen, self.idx.scenarios(wf), rpath + ("scenario",),
                              extra=STANDARD_SCENARIOS)
            if case.kind == "rollback":
                if "scenario" in exp:
                    from .language.ir import STANDARD_SCENARIOS
                    self.name("rollback scenario", exp["scenario"], self.idx.scenarios(wf), epath + ("scenario",),
                              extra=STANDARD_SCENARIOS)
        elif case.kind == "resume":
            wf = resolved.get("workflow")
            stop = resolved.get("stop")
            crit: list[str] = []
            if "workflow" in case.question and self.workflow(wf, qpath + ("workflow",)):
                stops = self.idx.stops(wf)
                if isinstance(stop, str) and "stop" in case.question:
                    if self.name("stop trigger", stop, stops, qpath + ("stop",)):
                        crit = [c.name for c in stops[stop].criteria]
            if crit:
                for k in ("unmet", "met"):
                    if k in exp:
                        for i, n in enumerate(_as_names(exp[k])):
                            self.name("criterion", n, crit, epath + (k, i) if isinstance(exp[k], list) else epath + (k,))

    def gate(self, case: Case, resolved: dict, qpath: tuple, exp: dict, epath: tuple) -> None:
        action = resolved["action"]
        q = case.question if isinstance(case.question, dict) else {}

        def where(attr: str) -> tuple:
            if isinstance(q.get("with"), dict) and attr in q["with"]:
                return qpath + ("with", attr)
            if isinstance(q.get("action"), dict):
                return qpath + ("action", attr)
            if isinstance(q.get("action"), str):
                return ("inputs", "actions", q["action"], attr)
            return qpath + ("action",)

        wf, typ = action.get("workflow"), action.get("type")
        intends_undeclared = exp.get("rule") == "undeclared"
        stops = self.idx.stops(wf if isinstance(wf, str) else None)
        rules: list[str] = []
        if not intends_undeclared:
            if isinstance(wf, str):
                self.name("workflow", wf, self.idx.workflows, where("workflow"))
            if isinstance(typ, str):
                wfobj = self.idx.workflows.get(wf)
                known = [a.name for a in wfobj.actions] if wfobj else list(self.idx.actions)
                if self.name("action type", typ, known, where("type")):
                    rules = [r.name for r in self.idx.actions[typ].rules]
        state = resolved.get("workflow_state") or {}
        if isinstance(state, dict) and isinstance(state.get("stopped_by"), str) and state.get("status") == "stopped":
            pass  # a trigger the policy lacks is a legitimate test (`known: false`)
        if "rule" in exp and rules:
            self.name("rule", exp["rule"], [*rules, *stops], epath + ("rule",), extra=SPECIAL_RULES)
        if "stop" in exp and exp["stop"] is not None:
            self.name("stop trigger", exp["stop"], stops, epath + ("stop",))
        if "matched" in exp and rules and isinstance(exp["matched"], list):
            for i, n in enumerate(exp["matched"]):
                if isinstance(n, str):
                    self.name("rule", n, [*rules, *stops], epath + ("matched", i), extra=SPECIAL_RULES)


# =============================================================================== comparing


@dataclass(frozen=True)
class Difference:
    key: str  # dotted path of the key that differs
    expected: Any
    actual: Any
    missing: bool = False  # the key is absent from the actual answer


_MISSING = object()


def _equal_scalar(e: Any, a: Any, key: str) -> bool:
    if isinstance(e, bool) or isinstance(a, bool):
        return type(e) is type(a) and e == a
    if isinstance(e, (int, float)) and isinstance(a, (int, float)):
        return e == a
    if isinstance(e, str) and isinstance(a, str):
        if e == a:
            return True
        if key.rsplit(".", 1)[-1] in ("reason", "message"):
            return e in a
        te, ta = parse_time(e), parse_time(a)
        return te is not None and ta is not None and te == ta
    return e == a


def _matches(e: Any, a: Any, key: str) -> bool:
    return not compare(e, a, key)


def _project(a: Any, like: Any) -> Any:
    """`a` cut down to the keys `like` uses (for readable list diffs)."""
    if isinstance(a, dict) and isinstance(like, dict):
        return {k: _project(a[k], like[k]) for k in like if k in a}
    return a


def compare(expected: Any, actual: Any, key: str = "") -> list[Difference]:
    """Partial comparison: dicts by the expected keys, lists as sets, timestamps as instants."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [Difference(key, expected, actual)]
        out = []
        for k, v in expected.items():
            sub = f"{key}.{k}" if key else str(k)
            if k not in actual:
                if v is None:
                    continue
                out.append(Difference(sub, v, None, missing=True))
                continue
            out.extend(compare(v, actual[k], sub))
        return out
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [Difference(key, expected, actual)]
        remaining = list(actual)
        unmatched = []
        for e in expected:
            for j, a in enumerate(remaining):
                if _matches(e, a, key):
                    del remaining[j]
                    break
            else:
                unmatched.append(e)
        if unmatched or remaining:
            dict_like = next((e for e in expected if isinstance(e, dict)), None)
            if dict_like is not None:
                keys = {k: None for e in expected if isinstance(e, dict) for k in e}
                shown = [_project(a, keys) for a in actual]
            else:
                shown = list(actual)
            return [Difference(key, expected, shown)]
        return []
    if not _equal_scalar(expected, actual, key):
        return [Difference(key, expected, actual)]
    return []


def _names(items: list, field_: str = "name") -> list:
    return [i.get(field_) if isinstance(i, dict) else i for i in items]


def actual_view(kind: str, answer: dict, expect: dict) -> dict:
    """The engine's answer (JSON) reshaped to the expectation's shorthand keys."""
    out: dict = {}
    for k, e in expect.items():
        if kind == "gate":
            if k == "rule":
                d = answer.get("deciding") or {}
                out[k] = d.get("name") if d.get("kind") in ("rule", "stop") else d.get("kind")
                if isinstance(e, str) and e == d.get("name"):
                    out[k] = e
                continue
            if k == "stop":
                out[k] = (answer.get("stop") or {}).get("trigger")
                continue
            if k == "notify":
                out[k] = (answer.get("stop") or {}).get("notify", [])
                continue
            if k == "approvers":
                apps = answer.get("approvals", [])
                if isinstance(e, list) and all(isinstance(x, str) for x in e):
                    out[k] = sorted({r for a in apps for r in a.get("roles", [])})
                else:
                    out[k] = apps
                continue
            if k == "matched":
                out[k] = _names(answer.get("matched", []))
                continue
            if k == "errors" and isinstance(e, list) and all(isinstance(x, str) for x in e):
                out[k] = _names(answer.get("errors", []), "rule")
                continue
        elif kind == "rollback":
            if k == "feasibility" and isinstance(e, str):
                out[k] = (answer.get("feasibility") or {}).get("status")
                continue
            if k == "unmet_prerequisites":
                out[k] = (answer.get("feasibility") or {}).get("unmet", [])
                continue
            if k == "compensations" and isinstance(e, list) and all(isinstance(x, str) for x in e):
                out[k] = _names(answer.get("compensations", []))
                continue
            if k == "cascade" and isinstance(e, dict):
                c = dict(answer.get("cascade") or {})
                for sub, fld in (("steps", "record_id"), ("checkpoint", "record_id"), ("loops", "record_id")):
                    ev = e.get(sub)
                    if isinstance(ev, list) and ev and all(isinstance(x, str) for x in ev):
                        c[sub] = _names(c.get(sub, []), fld)
                out[k] = c
                continue
        elif kind == "authorize":
            if k == "open_slots" and isinstance(e, list) and all(isinstance(x, str) for x in e):
                out[k] = sorted({r for s in answer.get("open_slots", []) for r in s.get("roles", [])})
                continue
            if k == "filled":
                out[k] = answer.get("accepted", [])
                continue
            if k == "rejected" and isinstance(e, list) and all(isinstance(x, str) for x in e):
                out[k] = _names(answer.get("rejected", []), "principal")
                continue
        elif kind == "resume":
            if k == "met":
                out[k] = [c.get("name") for c in answer.get("criteria", []) if c.get("met")]
                continue
        out[k] = answer.get(k, _MISSING)
    return out


def diff_expectation(kind: str, expect: dict, answer: dict) -> list[Difference]:
    view = actual_view(kind, answer, expect)
    out = []
    for k, e in expect.items():
        a = view.get(k, _MISSING)
        if a is _MISSING:
            out.append(Difference(k, e, None, missing=True))
        else:
            out.extend(compare(e, a, k))
    return out


def _show(v: Any) -> str:
    return json.dumps(v, sort_keys=False, ensure_ascii=False, default=str)


def render_diff(diffs: Sequence[Difference], indent: str = "  ") -> str:
    lines = []
    for d in diffs:
        lines.append(f"{indent}- {d.key}: {_show(d.expected)}")
        lines.append(f"{indent}+ {d.key}: " + ("(absent)" if d.missing else _show(d.actual)))
    return "\n".join(lines)


# =============================================================================== explain


def explain_answer(kind: str, answer_model: Any, answer: dict) -> str:
    """The explain trace of an answer: the engine helper's renderer, or a fallback."""
    try:
        from . import explain as _explain  # type: ignore[attr-defined]
    except Exception:
        _explain = None
    if _explain is not None:
        for fname in ("explain", "render"):
            fn = getattr(_explain, fname, None)
            if callable(fn):
                try:
                    text = fn(answer_model)
                    if isinstance(text, str):
                        return text
                except Exception:
                    break
    return _fallback_explain(kind, answer)


def _fallback_explain(kind: str, a: dict) -> str:
    lines: list[str] = []
    if kind == "gate":
        d = a.get("deciding") or {}
        lines.append(f"{a.get('effect')}: {a.get('reason', '')}".rstrip())
        lines.append(f"  decided by {d.get('kind')} `{d.get('name')}`" + (f" at {d['location']}" if d.get("location") else ""))
        for t in a.get("trace", []):
            mark = "matched" if t.get("matched") else "not matched"
            val = f" = {t['value']}" if t.get("value") is not None else ""
            err = f" (error: {t['error']})" if t.get("error") else ""
            lines.append(f"  {t.get('kind')} {t.get('name')} [{t.get('effect')}] `{t.get('condition', '')}`{val}: {mark}{err}")
    elif kind == "rollback":
        lines.append(f"scenario {a.get('scenario')}: route {a.get('route')}, window {a.get('window')}, "
                     f"feasibility {(a.get('feasibility') or {}).get('status')}")
        for s in (a.get("cascade") or {}).get("steps", []):
            lines.append(f"  step {s.get('record_id')} ({s.get('type')}) depth {s.get('depth')}")
    elif kind == "authorize":
        lines.append(f"satisfied: {_show(a.get('satisfied'))}")
        for s in a.get("slots", []):
            lines.append(f"  slot {s.get('id')} {s.get('roles')}: filled by {s.get('filled_by')}, missing {s.get('missing')}")
        for r in a.get("rejected", []):
            lines.append(f"  rejected {r.get('principal')}: {r.get('reason')}")
    else:
        lines.append(f"allowed: {_show(a.get('allowed'))}")
        for c in a.get("criteria", []):
            lines.append(f"  {c.get('name')}: {'met' if c.get('met') else 'unmet'}" + (f" ({c['reason']})" if c.get("reason") else ""))
    return "\n".join(lines)


# =============================================================================== coverage


@dataclass
class CoverageItem:
    kind: str  # rule | stop | criterion | scenario
    name: str  # display name, e.g. "send_customer_reply.small"
    location: str  # file:line
    file: str
    branches: tuple[str, ...]
    hit: set = field(default_factory=set)

    @property
    def exercised(self) -> bool:
        """A rule or trigger is exercised once a case makes it fire (every gate case of its
        action type evaluates it, so "not fired" alone says nothing); a criterion or scenario
        once a case evaluates it."""
        if "fired" in self.branches:
            return "fired" in self.hit
        return bool(self.hit)


class Coverage:
    """Items of a policy set and the branches the decisions exercised (from traces)."""

    def __init__(self) -> None:
        self.items: dict[tuple, CoverageItem] = {}
        self._sets: set = set()

    def add_policy_set(self, policy_set: Any) -> None:
        if policy_set is None or id(policy_set) in self._sets:
            return
        self._sets.add(id(policy_set))

        def loc(node: Any) -> tuple[str, str]:
            sp = getattr(node.loc, "span", None)
            if sp is None:
                return "<unknown>", "<unknown>"
            return f"{sp.path}:{sp.line}", sp.path

        for w in policy_set.workflows:
            for a in w.actions:
                for r in a.rules:
                    lc, f = loc(r)
                    const = r.condition.source.strip().strip("`").strip()
                    br = ("fired",) if const == "true" else ("not fired",) if const == "false" else ("fired", "not fired")
                    self.items.setdefault(("rule", w.name, a.name, r.name),
                                          CoverageItem("rule", f"{a.name}.{r.name}", lc, f, br))
            for s in w.stops:
                lc, f = loc(s)
                self.items.setdefault(("stop", w.name, s.name),
                                      CoverageItem("stop", s.name, lc, f, ("fired", "not fired")))
                for c in s.criteria:
                    lc, f = loc(c)
                    self.items.setdefault(("criterion", w.name, s.name, c.name),
                                          CoverageItem("criterion", f"{s.name}.{c.name}", lc, f, ("met", "unmet")))
            for sc in w.scenarios:
                lc, f = loc(sc)
                br = ("inside window", "after window") if sc.escalation is not None else ("inside window",)
                self.items.setdefault(("scenario", w.name, sc.name), CoverageItem("scenario", sc.name, lc, f, br))

    def _hit(self, key: tuple, branch: str) -> None:
        item = self.items.get(key)
        if item is not None and branch in item.branches:
            item.hit.add(branch)

    def record(self, kind: str, answer: dict) -> None:
        if kind == "gate":
            wf, typ = answer.get("workflow"), answer.get("action_type")
            for t in answer.get("trace", []):
                branch = "fired" if t.get("matched") else "not fired"
                if t.get("kind") == "stop":
                    self._hit(("stop", wf, t.get("name")), branch)
                else:
                    self._hit(("rule", wf, typ, t.get("name")), branch)
            d = answer.get("deciding") or {}
            if d.get("kind") == "stop":
                self._hit(("stop", wf, d.get("name")), "fired")
        elif kind == "rollback":
            wf = answer.get("workflow")
            win = answer.get("window")
            if answer.get("scenario_declared", True):
                self._hit(("scenario", wf, answer.get("scenario")), "after window" if win == "escalated" else "inside window")
        elif kind == "resume":
            wf, trig = answer.get("workflow"), answer.get("trigger")
            for c in answer.get("criteria", []):
                self._hit(("criterion", wf, trig, c.get("name")), "met" if c.get("met") else "unmet")

    # ----------------------------------------------------------------- reporting
    def per_file(self) -> list[dict]:
        files: dict[str, dict] = {}
        for it in self.items.values():
            f = files.setdefault(it.file, {"file": it.file, "items": 0, "exercised": 0, "branches": 0, "covered": 0})
            f["items"] += 1
            f["exercised"] += it.exercised
            f["branches"] += len(it.branches)
            f["covered"] += len(it.hit)
        out = []
        for f in sorted(files.values(), key=lambda x: x["file"]):
            f["percent"] = round(100.0 * f["covered"] / f["branches"], 1) if f["branches"] else 100.0
            out.append(f)
        return out

    @property
    def percent(self) -> float:
        total = sum(len(i.branches) for i in self.items.values())
        covered = sum(len(i.hit) for i in self.items.values())
        return 100.0 * covered / total if total else 100.0

    def never_exercised(self) -> list[CoverageItem]:
        return sorted((i for i in self.items.values() if not i.exercised), key=lambda i: (i.file, _line_of(i.location), i.name))

    def partially_exercised(self) -> list[CoverageItem]:
        return sorted((i for i in self.items.values() if i.exercised and len(i.hit) < len(i.branches)),
                      key=lambda i: (i.file, _line_of(i.location), i.name))

    def render(self) -> str:
        rows = self.per_file()
        width = max([len(r["file"]) for r in rows] + [len("file"), len("total")])
        head = f"{'file':<{width}}  {'items':>5}  {'exercised':>9}  {'branches':>8}  {'covered':>7}  {'%':>6}"
        lines = ["coverage:", head, "-" * len(head)]
        for r in rows:
            lines.append(f"{r['file']:<{width}}  {r['items']:>5}  {r['exercised']:>9}  {r['branches']:>8}  "
                         f"{r['covered']:>7}  {r['percent']:>5.1f}%")
        tot = {k: sum(r[k] for r in rows) for k in ("items", "exercised", "branches", "covered")}
        lines.append("-" * len(head))
        lines.append(f"{'total':<{width}}  {tot['items']:>5}  {tot['exercised']:>9}  {tot['branches']:>8}  "
                     f"{tot['covered']:>7}  {self.percent:>5.1f}%")
        never = self.never_exercised()
        if never:
            lines.append("")
            lines.append("never exercised:")
            for i in never:
                note = " (evaluated, never fired)" if i.hit else ""
                lines.append(f"  {i.location}: {i.kind} {i.name}{note}")
        part = self.partially_exercised()
        if part:
            lines.append("")
            lines.append("branches never taken:")
            for i in part:
                missing = [b for b in i.branches if b not in i.hit]
                lines.append(f"  {i.location}: {i.kind} {i.name}: {', '.join(missing)}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "percent": round(self.percent, 2),
            "files": self.per_file(),
            "items": [{"kind": i.kind, "name": i.name, "location": i.location, "branches": list(i.branches),
                       "hit": sorted(i.hit)} for i in sorted(self.items.values(), key=lambda i: (i.file, _line_of(i.location), i.name))],
        }


def _line_of(location: str) -> int:
    try:
        return int(location.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return 0


# =============================================================================== running


@dataclass
class CaseResult:
    case: Case
    status: str  # passed | failed | skipped
    differences: list[Difference] = field(default_factory=list)
    answer: dict | None = None  # the engine's answer, JSON-ready
    explain: str = ""
    message: str = ""  # a skip reason, or an engine exception

    @property
    def name(self) -> str:
        return self.case.name

    @property
    def nodeid(self) -> str:
        return self.case.nodeid

    def render_failure(self) -> str:
        """The diff of expected vs actual and the explain trace (what a person reads)."""
        parts = []
        if self.message:
            parts.append(f"  {self.message}")
        if self.differences:
            parts.append(render_diff(self.differences))
        if self.explain:
            parts.append("  explain:\n" + "\n".join("    " + ln for ln in self.explain.splitlines()))
        return "\n".join(parts)


@dataclass
class Loaded:
    """A suite's policies, loaded once and shared by every suite naming the same paths."""

    engine: Any = None
    policy_set: Any = None
    index: PolicyIndex | None = None
    diagnostics: list[Diagnostic] = field(default_factory=list)
    sources: dict = field(default_factory=dict)
    message: str = ""


@dataclass
class SuiteResult:
    suite: Suite
    results: list[CaseResult] = field(default_factory=list)
    error: str = ""  # rendered diagnostics when the suite could not run

    @property
    def errored(self) -> bool:
        return bool(self.error)


@dataclass
class Report:
    suites: list[SuiteResult] = field(default_factory=list)
    coverage: Coverage = field(default_factory=Coverage)
    missing_paths: list[str] = field(default_factory=list)

    def _count(self, status: str) -> int:
        return sum(1 for s in self.suites for r in s.results if r.status == status)

    @property
    def passed(self) -> int:
        return self._count("passed")

    @property
    def failed(self) -> int:
        return self._count("failed")

    @property
    def skipped(self) -> int:
        return self._count("skipped")

    @property
    def errors(self) -> int:
        return sum(1 for s in self.suites if s.errored) + len(self.missing_paths)

    def summary(self) -> str:
        line = f"{self.passed} passed, {self.failed} failed"
        if self.skipped:
            line += f", {self.skipped} skipped"
        if self.errors:
            line += f", {self.errors} error{'s' if self.errors != 1 else ''}"
        return line

    @property
    def results(self) -> list[CaseResult]:
        return [r for s in self.suites for r in s.results]


def keyword_matches(keyword: str | None, nodeid: str) -> bool:
    """pytest-like simple -k: substrings combined with `and`, `or`, `not` and parentheses."""
    if not keyword:
        return True
    text = nodeid.lower()
    tokens = re.findall(r"\(|\)|[^\s()]+", keyword)
    if not any(t in ("and", "or", "not", "(", ")") for t in tokens):
        return keyword.lower() in text
    pos = 0

    def expr() -> bool:
        nonlocal pos
        v = term()
        while pos < len(tokens) and tokens[pos] == "or":
            pos += 1
            r = term()
            v = v or r
        return v

    def term() -> bool:
        nonlocal pos
        v = factor()
        while pos < len(tokens) and tokens[pos] == "and":
            pos += 1
            r = factor()
            v = v and r
        return v

    def factor() -> bool:
        nonlocal pos
        if pos >= len(tokens):
            return True
        t = tokens[pos]
        pos += 1
        if t == "not":
            return not factor()
        if t == "(":
            v = expr()
            if pos < len(tokens) and tokens[pos] == ")":
                pos += 1
            return v
        return t.lower() in text

    return expr()


def _dump(model: Any) -> dict:
    if hasattr(model, "model_dump"):
        return model.model_dump(mode="json", by_alias=True)
    return json.loads(json.dumps(model, default=str))


class Runner:
    """Runs suites. Engines are cached per set of policy paths, so each loads once."""

    def __init__(self, *, loader: Callable[[tuple[str, ...]], Loaded] | None = None):
        self._loaded: dict[tuple[str, ...], Loaded] = {}
        self._load = loader or load_policies
        self.coverage = Coverage()

    def policies(self, suite: Suite) -> Loaded:
        key = tuple(sorted({str(Path(p).resolve()) for p in suite.policies}))
        if key not in self._loaded:
            self._loaded[key] = self._load(tuple(suite.policies))
            self.coverage.add_policy_set(self._loaded[key].policy_set)
        return self._loaded[key]

    def prepare(self, suite: Suite) -> tuple[Loaded | None, dict[int, dict], str]:
        """Load the suite's policies and resolve and check every case.

        Returns (loaded, resolved inputs by case index, rendered error or "")."""
        if suite.doc is None or not suite.policies or any(d.code in ("T001", "T007") for d in suite.diagnostics):
            return None, {}, suite.render_diagnostics() or "the suite could not be read"
        loaded = self.policies(suite)
        if loaded.engine is None:
            msg = loaded.message or "the suite's policies do not load"
            head = Diagnostic("T007", "error", msg, suite.doc.span(("policies",), key=True) if suite.doc else
                              Span(suite.display, 0, 0, 1, 1, 1, 1),
                              help="run `stopline check` on them")
            parts = [render(head, suite.source)]
            if loaded.diagnostics:
                from .diagnostics import render_all
                parts.append(render_all([d for d in loaded.diagnostics if d.severity == "error"], loaded.sources))
            return None, {}, "\n\n".join(parts)
        resolver = _Resolver(suite)
        checker = _Checker(suite, loaded.index or PolicyIndex())
        resolved: dict[int, dict] = {}
        for i, case in enumerate(suite.cases):
            r = resolver.resolve(case)
            if r is not None:
                resolved[i] = r
                checker.check(case, r)
        suite.diagnostics.extend(resolver.diags + checker.diags)
        if not suite.ok:
            return loaded, resolved, suite.render_diagnostics()
        return loaded, resolved, ""

    def run_suite(self, suite: Suite, keyword: str | None = None) -> SuiteResult:
        sr = SuiteResult(suite)
        loaded, resolved, error = self.prepare(suite)
        if error:
            sr.error = error
            return sr
        for i, case in enumerate(suite.cases):
            if not keyword_matches(keyword, case.nodeid):
                continue
            sr.results.append(self.run_case(case, loaded, resolved[i]))
        return sr

    def run_case(self, case: Case, loaded: Loaded, inputs: dict) -> CaseResult:
        if case.skip:
            return CaseResult(case, "skipped", message=case.skip)
        eng = loaded.engine
        now = case.now
        try:
            if case.kind == "gate":
                model = eng.evaluate(inputs["action"], workflow_state=inputs.get("workflow_state"), now=now)
            elif case.kind == "rollback":
                model = eng.classify_rollback(inputs["request"], now=now)
            elif case.kind == "authorize" and "action" in inputs:  # a gate decision: the approvals release it?
                decision = eng.evaluate(inputs["action"], workflow_state=inputs.get("workflow_state"), now=now)
                self.coverage.record("gate", _dump(decision))
                approvals = []
                for a in inputs["approvals"]:
                    a = dict(a)
                    a.setdefault("action_digest", decision.action_digest)
                    approvals.append(a)
                model = eng.authorize_action(decision, approvals, now=now)
            elif case.kind == "authorize":
                plan = eng.classify_rollback(inputs["request"], now=now)
                self.coverage.record("rollback", _dump(plan))
                plan_hash = getattr(plan, "plan_hash", None)
                approvals = []
                for a in inputs["approvals"]:
                    a = dict(a)
                    a.setdefault("plan_hash", plan_hash)
                    approvals.append(a)
                model = eng.authorize_rollback(plan, approvals, now=now)
            else:
                model = eng.may_resume(inputs["workflow"], inputs["stop"], inputs["evidence"], now=now)
        except Exception as e:  # the engine should not raise; report it on the case, keep going
            return CaseResult(case, "failed", message=f"the engine raised {type(e).__name__}: {e}")
        answer = _dump(model)
        self.coverage.record(case.kind, answer)
        diffs = diff_expectation(case.kind, case.expect, answer)
        explain = explain_answer(case.kind, model, answer)
        return CaseResult(case, "failed" if diffs else "passed", diffs, answer, explain)

    def run(self, paths: Sequence[str | os.PathLike], keyword: str | None = None) -> Report:
        files, missing = discover_suites(paths)
        report = Report(coverage=self.coverage, missing_paths=missing)
        for f in files:
            report.suites.append(self.run_suite(load_suite(f), keyword))
        return report


def load_policies(paths: tuple[str, ...]) -> Loaded:
    """Load and check a policy set once, then build its engine. Never raises."""
    from .language.loader import UsageError, load_paths

    try:
        result = load_paths(list(paths))
    except UsageError as e:
        return Loaded(message=str(e))
    except Exception as e:  # pragma: no cover - a loader bug must not crash the runner
        return Loaded(message=f"loading the policies failed: {type(e).__name__}: {e}")
    if result.policy_set is None:
        return Loaded(diagnostics=result.diagnostics, sources=result.sources,
                      message="the suite's policies have errors")
    try:
        engine = _engine_from(result, paths)
    except Exception as e:
        diags = list(getattr(e, "diagnostics", ()) or ())
        return Loaded(diagnostics=diags, sources=getattr(e, "sources", {}) or result.sources,
                      message=f"the engine could not load the policies: {e}")
    return Loaded(engine=engine, policy_set=result.policy_set, index=PolicyIndex.of(result.policy_set),
                  diagnostics=result.diagnostics, sources=result.sources)


def _engine_from(result: Any, paths: tuple[str, ...]) -> Any:
    from . import engine as _engine

    for fname in ("from_load_result", "from_result"):
        fn = getattr(_engine, fname, None) or getattr(getattr(_engine, "Engine", None), fname, None)
        if callable(fn):
            return fn(result)
    return _engine.load(list(paths) if len(paths) != 1 else paths[0])


# =============================================================================== output formats


def junit_xml(report: Report) -> str:
    """JUnit XML: one <testsuite> per suite file, one <testcase> per case."""
    from xml.etree import ElementTree as ET

    root = ET.Element("testsuites", name="stopline", tests=str(len(report.results)),
                      failures=str(report.failed), skipped=str(report.skipped), errors=str(report.errors))
    for sr in report.suites:
        ts = ET.SubElement(root, "testsuite", name=sr.suite.display, tests=str(len(sr.results)),
                           failures=str(sum(r.status == "failed" for r in sr.results)),
                           skipped=str(sum(r.status == "skipped" for r in sr.results)),
                           errors="1" if sr.errored else "0")
        if sr.errored:
            tc = ET.SubElement(ts, "testcase", classname=sr.suite.display, name="<suite>", file=sr.suite.display)
            ET.SubElement(tc, "error", message="the suite could not run").text = sr.error
        for r in sr.results:
            tc = ET.SubElement(ts, "testcase", classname=sr.suite.display, name=r.name, file=sr.suite.display,
                               line=str(r.case.line))
            if r.status == "failed":
                text = render_diff(r.differences) if r.differences else r.message
                msg = "; ".join(f"{d.key}: expected {_show(d.expected)}, got {_show(d.actual)}" for d in r.differences) or r.message
                el = ET.SubElement(tc, "failure", message=msg)
                el.text = text + ("\n\nexplain:\n" + r.explain if r.explain else "")
            elif r.status == "skipped":
                ET.SubElement(tc, "skipped", message=r.message)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def json_report(report: Report, coverage: bool = False) -> dict:
    out: dict = {
        "passed": report.passed, "failed": report.failed, "skipped": report.skipped, "errors": report.errors,
        "suites": [],
    }
    for sr in report.suites:
        out["suites"].append({
            "file": sr.suite.display,
            "title": sr.suite.title,
            "error": sr.error or None,
            "diagnostics": [d.to_json() for d in sort_diagnostics(sr.suite.diagnostics)],
            "cases": [{
                "name": r.name, "line": r.case.line, "question": r.case.kind, "status": r.status,
                "message": r.message or None,
                "differences": [{"key": d.key, "expected": d.expected, "actual": None if d.missing else d.actual,
                                 "missing": d.missing} for d in r.differences],
            } for r in sr.results],
        })
    if report.missing_paths:
        out["missing_paths"] = report.missing_paths
    if coverage:
        out["coverage"] = report.coverage.to_json()
    return out


def render_text(report: Report, *, color: bool = False) -> str:
    """Failures (with diff and trace), suite errors, then the summary line."""
    parts = []
    for p in report.missing_paths:
        parts.append(f"error: no such file or directory: {p}")
    for sr in report.suites:
        if sr.errored:
            parts.append(f"ERROR {sr.suite.display}\n{sr.error}")
        for r in sr.results:
            if r.status == "failed":
                parts.append(f"FAIL {sr.suite.display}:{r.case.line} {r.name}\n{r.render_failure()}")
    return "\n\n".join(parts)
