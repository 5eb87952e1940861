"""Suites: the constants and codes of the format, YAML with positions, the suite model and load_suite."""

from __future__ import annotations

import copy
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..diagnostics import Diagnostic, did_you_mean, one_of, render, sort_diagnostics
from ..limits import MAX_SUITE_BYTES, MAX_SUITE_NODES
from ..source import SourceFile, Span
from ..timestamps import parse_ts

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
        from .. import models
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
    # problems met while building that do not stop it (a key given twice: the first is kept)
    problems: list[Diagnostic] = field(default_factory=list)

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
    """The character offset of a PyYAML mark in `src`. Its `index` counts characters of
    the text composed, which is `src.text`; its line and column do not match `src`'s: YAML
    1.1 also breaks lines at U+0085, U+2028 and U+2029, which `src` (and an editor) do not."""
    return max(0, min(mark.index, len(src.text)))


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


_YAML_BREAKS = {"\x85": "U+0085 NEXT LINE", "\u2028": "U+2028 LINE SEPARATOR", "\u2029": "U+2029 PARAGRAPH SEPARATOR"}


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
            notes = (f"{e.context.strip()} that starts at {src.span(_offset(src, e.context_mark))}",)
        # a character YAML 1.1 takes for a line break, on the lines in question: say so
        marks = [m for m in (e.context_mark, mark) if m is not None]
        for n in sorted({src.span(_offset(src, m)).line for m in marks}):
            ch = next((c for c in _YAML_BREAKS if c in src.line_text(n)), None)
            if ch is not None:
                notes += (f"YAML breaks lines at {_YAML_BREAKS[ch]}, which line {n} holds: an editor shows one "
                          "line where YAML reads two",)
                break
        raise _SuiteError(
            Diagnostic(
                "T001",
                "error",
                f"invalid YAML: {problem}",
                src.span(off, off + 1),
                label=problem,
                notes=notes,
                help="check the indentation and the brackets around this line",
            )
        ) from e
    except yaml.reader.ReaderError as e:  # a character YAML refuses: at the character, not at 1:1
        at = max(0, min(e.position, len(src.text)))
        code = e.character if isinstance(e.character, int) else None
        raise err(
            f"invalid YAML: character U+{code:04X} is not allowed" if code is not None else f"invalid YAML: {e.reason}",
            at,
            label="not allowed in YAML",
            help=(f"remove it, or write it as the escape `\\u{code:04x}` in a double-quoted string"
                  if code is not None else None),
        ) from e
    except yaml.YAMLError as e:
        raise err(f"invalid YAML: {e}", 0) from e
    values: dict[tuple, tuple[int, int]] = {}
    keys: dict[tuple, tuple[int, int]] = {}
    ctor = yaml.SafeLoader("")
    depth_limit = 64
    budget = [MAX_SUITE_NODES]  # aliases are expanded: bound the total (no "billion laughs")
    problems: list[Diagnostic] = []

    def build(node: Any, path: tuple, depth: int) -> Any:
        if depth > depth_limit:
            raise err("the suite nests too deeply", _offset(src, node.start_mark))
        budget[0] -= 1
        if budget[0] < 0:
            raise err(
                f"the suite expands to more than {MAX_SUITE_NODES} values (through aliases?)",
                _offset(src, node.start_mark),
                help="write inputs out, or reuse them by name under `inputs`",
            )
        values[path] = (_offset(src, node.start_mark), _offset(src, node.end_mark))
        if isinstance(node, yaml.ScalarNode):
            if _unpaired_surrogate(node.value):
                raise err(
                    "a string holds an unpaired surrogate escape such as `\\ud800`",
                    _offset(src, node.start_mark),
                    help="write the character itself, or a valid pair of escapes",
                )
            try:
                return _scalar(ctor, node)
            except Exception:  # pragma: no cover - malformed scalar
                return node.value
        if isinstance(node, yaml.SequenceNode):
            return [build(n, path + (i,), depth + 1) for i, n in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            out: dict = {}
            # YAML merge keys (`<<: *base`, `<<: [*a, *b]`): the keys of the mappings named,
            # under the mapping's own (the first named wins among them). Composed, not
            # constructed, `<<` was a key like any other: the input lacked every merged field,
            # and a case expecting a denial passed on the invalid input's denial.
            merged: dict = {}
            for knode, vnode in node.value:
                if not (isinstance(knode, yaml.ScalarNode) and knode.tag == "tag:yaml.org,2002:merge"):
                    continue
                sources = vnode.value if isinstance(vnode, yaml.SequenceNode) else [vnode]
                for m in sources:
                    if not isinstance(m, yaml.MappingNode):
                        raise err("`<<` merges a mapping (`<<: *name`) or a list of mappings",
                                  _offset(src, m.start_mark),
                                  help="name an anchored mapping: `base: &base {...}` then `<<: *base`")
                    mine = values.get(path)
                    for k, v in build(m, path, depth + 1).items():  # (positions: where the merged keys are written)
                        merged.setdefault(k, v)
                    if mine is not None:
                        values[path] = mine
            for knode, vnode in node.value:
                if isinstance(knode, yaml.ScalarNode) and knode.tag == "tag:yaml.org,2002:merge":
                    continue
                if not isinstance(knode, yaml.ScalarNode):
                    raise err("mapping keys must be plain names", _offset(src, knode.start_mark))
                k = knode.value
                if _unpaired_surrogate(k):
                    raise err(
                        "a key holds an unpaired surrogate escape such as `\\ud800`", _offset(src, knode.start_mark)
                    )
                ks, ke = _offset(src, knode.start_mark), _offset(src, knode.end_mark)
                if k in out:  # listed with every other problem of the suite, which does not run
                    if any(d.span.start == ks for d in problems):
                        continue  # (the same mapping again, through an alias)
                    problems.append(
                        Diagnostic(
                            "T008",
                            "error",
                            f"key `{k}` is given twice",
                            src.span(ks, ke),
                            label="second occurrence",
                            help="remove one of them",
                        )
                    )
                    continue
                keys[path + (k,)] = (ks, ke)
                out[k] = build(vnode, path + (k,), depth + 1)
            for k, v in merged.items():
                out.setdefault(k, v)
            return out
        raise err("unsupported YAML node", _offset(src, node.start_mark))  # pragma: no cover

    data = build(root, (), 0) if root is not None else None
    return Doc(src, data, values, keys, problems)


# =============================================================================== suite model


@dataclass
class Case:
    suite: Suite
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
    from ..language.loader import find_files

    return find_files(paths, SUITE_SUFFIX)


def not_suites(paths: Sequence[str | os.PathLike], given: Collection[Path] = ()) -> list[str]:
    """What to say about each policy file given to `stopline test` as if it were a suite:
    that it is not one, and which suite goes with it when one exists beside it (the same
    name with `.policy-test.yaml`, or a suite of the same directory that names the file).
    `given`: the suites the other arguments name (resolved paths); when there are some (a
    shell glob such as `policies/*`), a policy file whose suite is among them, or that has
    none, is passed over in silence: only one whose suite was left out is a slip."""
    out = []
    given = {Path(g).resolve() for g in given}
    for p in paths:
        path = Path(p)
        if path.suffix != ".policy" or not path.is_file():
            continue
        shown = str(p)
        twin = path.with_name(path.stem + SUITE_SUFFIX)
        suites = [twin] if twin.is_file() else [
            q for q in sorted(path.parent.glob("*" + SUITE_SUFFIX)) if q.is_file() and _names(q, path.name)
        ]
        if given and (not suites or any(q.resolve() in given for q in suites)):
            continue
        if suites:
            which = " ".join(str(Path(shown).parent / q.name) if q.parent == path.parent else str(q) for q in suites)
            help_ = f"its suite is {which}: run `stopline test {which}`"
        else:
            help_ = (f"no suite names it ({twin.name} would be the usual one: see docs/testing.md); "
                     f"`stopline check {shown}` checks the policy itself")
        out.append(f"error: {shown} is a policy file, not a test suite (`*{SUITE_SUFFIX}`)\n  = help: {help_}")
    return out


def _names(suite: Path, name: str) -> bool:
    try:
        return name in suite.read_text(encoding="utf-8", errors="replace")[:MAX_SUITE_BYTES]
    except OSError:
        return False


def _display(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
        return rel if not rel.startswith("..") else str(path)
    except ValueError:  # pragma: no cover - other drive on Windows
        return str(path)


def type_name(v: Any) -> str:
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(v), type(v).__name__)


class _Builder:
    """Reads a Doc into a Suite, collecting every structural problem."""

    def __init__(self, suite: Suite, doc: Doc):
        self.suite, self.doc = suite, doc
        self.diags = suite.diagnostics

    def error(
        self, code: str, msg: str, path: tuple, *, key: bool = False, label: str | None = None, help: str | None = None
    ) -> None:
        self.diags.append(Diagnostic(code, "error", msg, self.doc.span(path, key=key), label=label, help=help))

    def want(self, value: Any, types: tuple, path: tuple, what: str, help: str | None = None) -> bool:
        if isinstance(value, bool) and bool not in types:
            ok = False
        else:
            ok = isinstance(value, types)
        if not ok:
            expected = " or ".join(dict.fromkeys(type_name(t()) if t is not type(None) else "null" for t in types))
            self.error("T006", f"{what} must be {expected}, not {type_name(value)}", path, label=f"expected {expected}",
                       help=help)
        return ok

    def keys(self, mapping: dict, allowed: Sequence[str], path: tuple, where: str) -> None:
        for k in mapping:
            if k not in allowed:
                self.error(
                    "T002",
                    f"unknown key `{k}` in {where}",
                    path + (k,),
                    key=True,
                    label="unknown key",
                    help=did_you_mean(str(k), allowed) or f"expected {one_of(list(allowed))}",
                )

    def build(self) -> None:
        data, s = self.doc.data, self.suite
        if data is None:
            self.error("T005", "the suite is empty", (), help="add `cases:` (see docs/testing.md, section \"A suite\")")
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
            if not pol:  # (reported as "the suite could not be read", at no line)
                self.error("T007", "`policies` names no policy file or directory", ("policies",),
                           label="an empty list",
                           help="name the `.policy` files or directories, or leave `policies` out for the "
                           "suite's own directory")
        for i, p in enumerate(s.policies):
            at = ("policies",) if isinstance(pol, str) else ("policies", i)
            if not os.path.exists(p):
                self.error(
                    "T007",
                    f"no such policy file or directory: `{_display(Path(p))}`",
                    at,
                    help="`policies` paths are relative to the suite file",
                )
            elif not (os.path.isdir(p) or os.path.isfile(p)):
                self.error("T007", f"`{_display(Path(p))}` is not a policy file or a directory", at,
                           label="not a file or a directory",
                           help="name the `.policy` files, or the directory that holds them")
            elif p.endswith(SUITE_SUFFIX):
                self.error("T007", f"`{_display(Path(p))}` is a test suite, not a policy file", at,
                           label="a suite",
                           help="name the `.policy` files the suite tests, or the directory that holds them")
        if "now" in data and self.want(data["now"], (str,), ("now",), "`now`"):
            self.check_time(data["now"], ("now",))
            s.now = data["now"]
        if "workflow_state" in data:
            self.want(data["workflow_state"], (dict, str), ("workflow_state",), "`workflow_state`")
            s.workflow_state = data["workflow_state"]
        # (null, as `inputs:` with its entries commented out, is none; any other value that is
        # not a mapping is an error: `inputs: []` and `actions: []` were read as empty, so the
        # suite ran with none of the inputs its author meant to give it)
        inputs = data.get("inputs")
        inputs = {} if inputs is None else inputs
        if self.want(inputs, (dict,), ("inputs",), "`inputs`",
                     help="write `inputs` as a mapping of named inputs by kind (`actions: {name: {...}}`, see "
                     "docs/testing.md, section \"A suite\"), or leave it out"):
            self.keys(inputs, INPUT_KINDS, ("inputs",), "`inputs`")
            for kind in INPUT_KINDS:
                group = inputs.get(kind)
                group = {} if group is None else group
                if self.want(group, (dict,), ("inputs", kind), f"`inputs.{kind}`",
                             help=f"`inputs.{kind}` maps each name to its value (`name: {{...}}`), or leave it out"):
                    for name, value in group.items():
                        self.want(value, (dict,), ("inputs", kind, name), f"input `{name}`")
                    s.inputs[kind] = {k: v for k, v in group.items() if isinstance(v, dict)}
                else:
                    s.inputs[kind] = {}
        cases = data.get("cases")
        if cases is None:
            self.error(
                "T005", "the suite has no `cases`", (), help="add `cases:` (see docs/testing.md, section \"Cases\")"
            )
            return
        if not self.want(cases, (list,), ("cases",), "`cases`"):
            return
        if not cases:  # a suite that tests nothing would pass: `0 passed, 0 failed`, exit 0
            self.error("T005", "the suite has no cases", ("cases",), key=True, label="an empty list",
                       help="add a case (see docs/testing.md, section \"Cases\"), or delete the suite")
            return
        names: dict[str, tuple] = {}
        for i, c in enumerate(cases):
            self.case(c, ("cases", i), names)
        self.check_pinned()

    def check_time(self, value: str, path: tuple) -> None:
        try:  # the engine's own parser (timestamps.parse_ts): a `now` it would refuse is refused here
            parse_ts(value)
        except ValueError:
            self.error(
                "T006",
                f"`{value}` is not an RFC 3339 timestamp",
                path,
                label='expected a timestamp such as "2026-11-24T10:00:00Z"',
                help="write the date, the time with seconds, and the zone: `2026-11-24T10:00:00Z`",
            )

    def check_pinned(self) -> None:
        """Every case runs at a pinned `now`: without one it would run on the wall clock,
        and a case about a window or an expiry that passes today fails later in CI."""
        missing = [c for c in self.suite.cases if c.now is None]
        if not missing:
            return
        first = missing[0]
        n = len(missing) - 1
        more = f" (nor have {n} other case{'s' if n > 1 else ''})" if n else ""
        self.error(
            "T009",
            f"case `{first.name}` has no `now`{more}: it would run on the wall clock",
            first.path + ("name",),
            key=True,
            label="no `now` for this case",
            help='pin it: add `now: "2026-11-24T10:00:00Z"` at the top of the suite (every case inherits '
            "it) or to the case",
        )

    def case(self, c: Any, path: tuple, names: dict) -> None:
        if not self.want(c, (dict,), path, "a case"):
            return
        self.keys(c, CASE_KEYS, path, "a case")
        name = c.get("name")
        if name is not None and not isinstance(name, str):  # (`name: 5` is not "without a name")
            self.want(name, (str,), path + ("name",), "a case's `name`")
            name = f"case {path[-1] + 1}"
        elif not isinstance(name, str) or not name.strip():
            self.error(
                "T005",
                "case without a `name`",
                path,
                key=False,
                label="this case",
                help="give every case a `name:` (unique in the suite)",
            )
            name = f"case {path[-1] + 1}"
        questions = [q for q in QUESTIONS if q in c]
        if not questions:
            self.error(
                "T005",
                f"case `{name}` has no question",
                path + ("name",) if "name" in c else path,
                key=True,
                help=f"add one of {one_of(list(QUESTIONS))}",
            )
            return
        if len(questions) > 1:
            self.error(
                "T005",
                f"case `{name}` asks {len(questions)} questions",
                path + (questions[1],),
                key=True,
                label="second question",
                help="split it into one case per question",
            )
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
        skip = self.skip(c, path, None)
        expect = c.get("expect")
        if expect is not None and not self.want(expect, (dict,), path + ("expect",), "`expect`"):
            return
        table = c.get("table")
        if table is None:
            if expect is None:
                self.error(
                    "T005",
                    f"case `{name}` has no `expect`",
                    path + ("name",) if "name" in c else path,
                    key=True,
                    help="add `expect:` with the keys to compare (see docs/testing.md, section \"Expectations\")",
                )
                return
            if not expect:
                self.error(
                    "T005",
                    f"case `{name}` expects nothing",
                    path + ("expect",),
                    key=True,
                    help=f"give at least one of {one_of(list(SHORTHANDS[kind]))}",
                )
                return
            self.add(name, kind, q, expect, now, skip, path, path + ("expect",), names)
            return
        if not self.want(table, (list,), path + ("table",), "`table`"):
            return
        if not table:  # no row, no case: it ran nothing and the suite passed
            self.error("T005", f"case `{name}` has an empty `table`", path + ("table",), key=True,
                       label="no rows", help="add rows (`- {with: {...}, expect: {...}}`), or remove `table`")
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
                self.error(
                    "T005", f"table row `{full}` has no `expect`", rpath, help="add `expect:` to the row or the case"
                )
                continue
            if "now" in row and self.want(row["now"], (str,), rpath + ("now",), "`now`"):
                self.check_time(row["now"], rpath + ("now",))
            rskip = self.skip(row, rpath, skip)
            self.add(
                full,
                kind,
                rq,
                merged,
                row.get("now", now),
                rskip,
                rpath,
                rpath + ("expect",) if rexp is not None else path + ("expect",),
                names,
            )

    def skip(self, c: dict, path: tuple, default: str | None) -> str | None:
        """The skip reason of a case or a table row (`default`, the case's, when a row has no
        `skip`): a reason, or `true` ("skipped"); `false` runs it, a row of a skipped case too
        (it was read as absent, so a row saying `skip: false` was skipped with its case).
        Anything else (`skip: 5`, `skip: ""`) is an error: read as "skipped" (or, empty, as not
        skipped), it said nothing."""
        skip = c.get("skip")
        if skip is None:
            return default
        if skip is False:
            return None
        if skip is True:
            return "skipped"
        if not self.want(skip, (str, bool), path + ("skip",), "`skip`",
                         help='write why the case is skipped (`skip: "reason"`), or remove `skip` to run it'):
            return "skipped"  # (the suite does not run)
        if not skip.strip():
            self.error("T006", "`skip` gives no reason", path + ("skip",), label="an empty reason",
                       help='write why the case is skipped (`skip: "reason"`), or remove `skip` to run it')
            return "skipped"
        return skip

    def add(self, name, kind, q, expect, now, skip, path, expect_path, names) -> None:
        if name in names:
            self.error(
                "T008",
                f"two cases are named `{name}`",
                path + ("name",),
                key=True,
                label="second case with this name",
                help="case names must be unique in a suite",
            )
            return
        names[name] = path
        self.suite.cases.append(Case(self.suite, name, kind, q, expect, now, skip, path, expect_path))


def load_suite(path: str | os.PathLike) -> Suite:
    """Read and structurally check one suite. Problems land in `suite.diagnostics`."""
    path = Path(path)
    display = _display(path)
    suite = Suite(path=path, display=display, title=path.name)
    # (no source for these two: the file as a whole is the problem, and a snippet of an empty
    # line 1 with a caret under nothing pointed at a place that is not it)
    try:
        with path.open("rb") as fh:  # at most one byte past the limit: a huge file is not read whole
            raw = fh.read(MAX_SUITE_BYTES + 1)
            size = os.fstat(fh.fileno()).st_size
    except OSError as e:
        suite.diagnostics.append(
            Diagnostic("T001", "error", f"cannot read suite: {e.strerror or e}", Span.nowhere(display))
        )
        return suite
    if len(raw) > MAX_SUITE_BYTES:
        suite.diagnostics.append(
            Diagnostic(
                "T001",
                "error",
                f"suite is {max(size, len(raw))} bytes; the limit is {MAX_SUITE_BYTES}",
                Span.nowhere(display),
                help="split it into several suites (suites naming the same policies load them once)",
            )
        )
        return suite
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        # e.object is what was decoded (without a leading BOM), e.start an offset into it;
        # lines are counted as everywhere else, after CRLF and CR became LF
        body = bytes(e.object)
        prefix = _lf(body[: e.start].decode("utf-8", errors="replace"))
        suite.source = SourceFile(display, _lf(body.decode("utf-8", errors="replace")))
        suite.diagnostics.append(
            Diagnostic(
                "T001",
                "error",
                "suite is not valid UTF-8",
                suite.source.span(len(prefix), len(prefix) + 1),
                label=f"invalid byte 0x{body[e.start]:02x}",
                help="save the file as UTF-8",
            )
        )
        return suite
    suite.source = SourceFile(display, _lf(text))
    try:
        suite.doc = parse_yaml(suite.source)
    except _SuiteError as e:
        suite.diagnostics.append(e.diag)
        return suite
    except RecursionError:
        suite.diagnostics.append(Diagnostic("T001", "error", "the suite nests too deeply", suite.source.span(0, 0)))
        return suite
    suite.diagnostics.extend(suite.doc.problems)
    _Builder(suite, suite.doc).build()
    return suite


# =============================================================================== helpers


def _lf(text: str) -> str:
    """CRLF and CR line endings as LF."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


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
