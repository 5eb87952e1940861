"""Running suites: loading policies once per set, answering every case, collecting results."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..diagnostics import Diagnostic, render
from ..source import Span
from .coverage import Coverage
from .expect import Difference, diff_expectation, explain_answer, render_diff
from .index import PolicyIndex, SuiteChecker
from .resolve import Resolver
from .suites import Case, Suite, _display, discover_suites, load_suite

# =============================================================================== running


def printable(text: str) -> str:
    """`text` with every control or format character but the line breaks as U+FFFD (see
    `diagnostics._printable`), so names and values from a suite cannot drive the terminal."""
    from ..diagnostics import _printable

    return "\n".join(_printable(ln) for ln in text.split("\n"))


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
        """The diff of expected vs actual and the explain trace (what a person reads), safe to
        print: a control character of the suite or the answer (a terminal escape, a bell) shows
        as U+FFFD instead of acting on the terminal."""
        parts = []
        if self.message:
            parts.append(f"  {self.message}")
        if self.differences:
            parts.append(render_diff(self.differences))
        if self.explain:
            parts.append("  explain:\n" + "\n".join("    " + ln for ln in self.explain.splitlines()))
        return printable("\n".join(parts))

    def title(self) -> str:
        """`FAIL suite:LINE name`, printable."""
        return printable(f"FAIL {self.case.suite.display}:{self.case.line} {self.name}")


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


def keyword_error(keyword: str | None) -> str | None:
    """Why `keyword` is not a well-formed `-k` expression (pytest's grammar: words joined by
    `and`, `or`, `not` and parentheses), or None when it is. A malformed one is refused: read
    leniently, `-k "not"` selected no case and `-k "refund and"` every refund case, silently."""
    try:
        _keyword_eval(keyword, "")
    except ValueError as e:
        return str(e)
    return None


def keyword_matches(keyword: str | None, nodeid: str) -> bool:
    """pytest-like simple -k: substrings combined with `and`, `or`, `not` and parentheses.
    (A malformed expression, see `keyword_error`, selects what its well-formed prefix does.)"""
    try:
        return _keyword_eval(keyword, nodeid)
    except ValueError:
        return _keyword_eval(keyword, nodeid, lenient=True)


# how deep `(` and `not` may nest in a -k expression: the parser below recurses, and a deeper
# one (`((((a))))` 3000 deep) raised RecursionError out of `keyword_matches`
MAX_KEYWORD_DEPTH = 100


def _keyword_eval(keyword: str | None, nodeid: str, lenient: bool = False) -> bool:
    if not keyword:
        return True
    text = nodeid.lower()
    tokens = re.findall(r"\(|\)|[^\s()]+", keyword)
    if not any(t in ("and", "or", "not", "(", ")") for t in tokens):
        return keyword.lower() in text
    pos = 0
    depth = 0

    def fail(what: str) -> bool:
        if lenient:
            return True
        at = f"`{tokens[pos]}`" if pos < len(tokens) else "the end"
        raise ValueError(f"expected {what}, found {at}")

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
        nonlocal pos, depth
        if pos >= len(tokens) or tokens[pos] in ("and", "or", ")"):
            return fail("a word, `not` or `(`")
        t = tokens[pos]
        if t in ("not", "(") and depth >= MAX_KEYWORD_DEPTH:
            if lenient:  # (the well-formed prefix: what it selects, as for any malformed expression)
                return True
            raise ValueError(f"`(` and `not` nest more than {MAX_KEYWORD_DEPTH} deep")
        pos += 1
        if t == "not":
            depth += 1
            v = not factor()
            depth -= 1
            return v
        if t == "(":
            depth += 1
            v = expr()
            depth -= 1
            if pos < len(tokens) and tokens[pos] == ")":
                pos += 1
            else:
                fail("`)`")
            return v
        if pos < len(tokens) and tokens[pos] not in ("and", "or", ")"):
            fail("`and`, `or` or `)`")
        return t.lower() in text

    v = expr()
    if pos < len(tokens):
        fail("`and`, `or` or the end")
    return v


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

    @staticmethod
    def _key(suite: Suite) -> tuple[str, ...]:
        return tuple(sorted({str(Path(p).resolve()) for p in suite.policies}))

    def policies(self, suite: Suite) -> Loaded:
        key = self._key(suite)
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
                              Span.nowhere(suite.display),
                              help="run `stopline check` on them")
            parts = [render(head, suite.source)]
            if loaded.diagnostics:
                from ..diagnostics import render_all
                parts.append(render_all([d for d in loaded.diagnostics if d.severity == "error"], loaded.sources))
            return None, {}, "\n\n".join(parts)
        resolver = Resolver(suite)
        checker = SuiteChecker(suite, loaded.index or PolicyIndex())
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
        assert loaded is not None  # no error: the policies loaded
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
        upstream: dict | None = None  # an authorize case's decision or plan, which the approvals are checked against
        try:
            if case.kind == "gate":
                model = eng.evaluate(inputs["action"], workflow_state=inputs.get("workflow_state"), now=now)
            elif case.kind == "rollback":
                model = eng.classify_rollback(inputs["request"], now=now)
            elif case.kind == "authorize" and "action" in inputs:  # a gate decision: the approvals release it?
                decision = eng.evaluate(inputs["action"], workflow_state=inputs.get("workflow_state"), now=now)
                upstream = _dump(decision)
                self.coverage.record("gate", upstream)
                approvals = []
                for a in inputs["approvals"]:
                    a = dict(a)
                    a.setdefault("action_digest", decision.action_digest)
                    approvals.append(a)
                model = eng.authorize_action(decision, approvals, now=now)
            elif case.kind == "authorize":
                plan = eng.classify_rollback(inputs["request"], now=now)
                upstream = _dump(plan)
                self.coverage.record("rollback", upstream)
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
        message = "" if diffs else _input_error(case, answer if upstream is None else upstream, inputs)
        return CaseResult(case, "failed" if diffs or message else "passed", diffs, answer, explain, message)

    def run(self, paths: Sequence[str | os.PathLike], keyword: str | None = None) -> Report:
        """Every suite under `paths` (a `.policy` file among them, as a shell glob names it, is
        tested, not run as a suite), then the policy files under `paths` no suite loads."""
        files, missing = discover_suites(paths)
        report = Report(coverage=self.coverage, missing_paths=missing)
        for f in files:
            if f.suffix != ".policy":
                report.suites.append(self.run_suite(load_suite(f), keyword))
        self.count_unloaded(paths, [sr.suite for sr in report.suites])
        return report

    def count_unloaded(self, paths: Sequence[str | os.PathLike], suites: Sequence[Suite]) -> None:
        """Add to the coverage every `.policy` file under `paths` that no suite's `policies`
        names, with all its branches not covered. Coverage counted only the files some suite
        loads, so a policy file added without a suite never lowered it: a CI asking for 80%
        of a directory went green with a policy in it that no case tests."""
        from ..language.loader import find_files

        tested: list[Path] = []
        for p in paths:
            if os.path.isdir(p):
                tested.extend(find_files([p], ".policy")[0])
            elif str(p).endswith(".policy") and os.path.isfile(p):
                tested.append(Path(p))
        if not tested:
            return
        # A suite that did not run (its YAML does not parse, its `policies` are wrong or do
        # not load) loads nothing: the files it names count as no suite's, but are said to be
        # its; when what it names cannot be known, no file is said to be loaded by no suite.
        named: set[str] = set()
        not_run: dict[str, list[str]] = {}  # real path -> the suites naming it that did not run
        for s in suites:
            loaded = self._loaded.get(self._key(s)) if s.policies else None
            ran = loaded is not None and loaded.engine is not None
            pols: tuple[str, ...] | None = s.policies if ran or s.doc is not None else _named_unread(s)
            if not ran:
                self.coverage.suites_not_run[s.display] = list(pols) if pols else None
            for f in find_files(pols or (), ".policy")[0]:
                if ran:
                    named.add(os.path.realpath(f))
                else:
                    not_run.setdefault(os.path.realpath(f), []).append(s.display)
        by_dir: dict[str, list[str]] = {}
        for f in tested:
            shown = _display(f)
            if os.path.realpath(f) not in named and shown not in self.coverage.unloaded:
                self.coverage.unloaded.append(shown)
                if os.path.realpath(f) in not_run:
                    self.coverage.not_run[shown] = not_run[os.path.realpath(f)]
                by_dir.setdefault(os.path.dirname(shown) or ".", []).append(shown)
        for d, group in by_dir.items():
            self._count_files(d, group)

    def _count_files(self, directory: str, group: list[str]) -> None:
        """Read files no suite loads in the set they would be read in beside the files of
        their directory (roles and constants declared there), or failing that alone."""
        beside = sorted(_display(q) for q in Path(directory).glob("*.policy") if q.is_file())
        errs = _load_unloaded(self.coverage, beside, group)
        if not errs:
            return
        rest = [f for f in beside if f not in errs]  # a broken file beside them: without it
        if rest != beside and any(f in rest for f in group):
            if not _load_unloaded(self.coverage, rest, [f for f in group if f in rest]):
                group = [f for f in group if f not in rest]
        for f in group:
            errs = _load_unloaded(self.coverage, [f], [f])
            if errs:
                self.coverage.unmeasured[f] = errs.get(f) or next(iter(errs.values()))


def _named_unread(suite: Suite) -> tuple[str, ...] | None:
    """The policy paths a suite whose YAML does not parse names, when the text before the
    error says them in full (`policies:` a string or a list of strings at the top, or no
    `policies` in a mapping that ends: the suite's directory), as `Suite.policies` holds
    them; None when that cannot be known (`policies` after the error, a suite not read)."""
    import yaml

    if suite.source is None:
        return None
    stack: list[list] = []  # per open collection: [is a mapping, expects a key, its last key]
    items: list[str] | None = None  # `policies: [...]` while it is read
    named: tuple[str, ...] | None = None
    try:
        for ev in yaml.parse(suite.source.text, Loader=yaml.SafeLoader):
            if isinstance(ev, (yaml.StreamStartEvent, yaml.DocumentStartEvent, yaml.DocumentEndEvent)):
                continue
            if items is not None:
                if isinstance(ev, yaml.ScalarEvent):
                    items.append(ev.value)
                    continue
                named = tuple(items) if isinstance(ev, yaml.SequenceEndEvent) else None
                break
            top = stack[-1] if stack else None
            if top is None:
                named = (".",) if isinstance(ev, yaml.MappingStartEvent) else None  # (until `policies`)
                if named is None:
                    break
                stack.append([True, True, None])
                continue
            if len(stack) == 1 and not top[1] and top[2] == "policies":
                if isinstance(ev, yaml.SequenceStartEvent):
                    items = []
                    continue
                plain_null = isinstance(ev, yaml.ScalarEvent) and ev.implicit[0] and \
                    ev.value in ("", "~", "null", "Null", "NULL")
                named = (".",) if plain_null else (ev.value,) if isinstance(ev, yaml.ScalarEvent) else None
                break
            if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                if top[0] and top[1]:
                    top[2] = None
                stack.append([isinstance(ev, yaml.MappingStartEvent), True, None])
                continue
            if isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                stack.pop()
                if not stack:
                    break  # the top mapping ended with no `policies`: the suite's directory
                top = stack[-1]
            elif top[0] and top[1]:
                top[2] = ev.value if isinstance(ev, yaml.ScalarEvent) else None
            if top[0]:
                top[1] = not top[1]
        else:
            return None  # (no document: nothing to read it from)
    except (yaml.YAMLError, RecursionError):
        if items is not None or stack:
            return None  # the error came first
    if named is None:
        return None
    return tuple(_display(Path(os.path.normpath(suite.path.parent / p))) for p in named)


_UNSET = object()
#: per kind of case whose input error may leave the rest of its answer standing: the expected
#: values a refused input gives whatever the policy says (a gate's and a resume's: any)
_FAIL_CLOSED = {"rollback": (("window", "escalated"), ("authorizable", False)),
                "authorize": (("satisfied", False),)}


def _input_error(case: Case, answer: dict, inputs: dict) -> str:
    """Why a case that matched its expectation still fails: the engine refused its input (no
    `workflow`, a field of the wrong type, a record's `executed_at` that is no timestamp), and
    the case does not say it tests that. A gate denies an invalid action, a resume is not
    allowed on invalid evidence, a rollback whose record has no readable `executed_at` is past
    its window, and approvals release no decision denied for its input: so a case expecting
    `deny`, `allowed: false`, `window: escalated` or `satisfied: false` passed on its own typo,
    testing no rule. `answer` is the case's answer, or for an `authorize` case the decision or
    plan its approvals are checked against (the verdict's own errors say only that the
    decision is not `require_approval`, as for a decision a `deny` rule made)."""
    # (a case naming the deciding rule, the errors or the criteria says what it expects of
    # such an answer: `rule: undeclared`, `rule: error`, `unmet: [...]`; another rule never
    # matches one, so the comparison has already failed it)
    said = {"gate": ("rule", "errors"), "resume": ("errors", "unmet", "met")}.get(case.kind, ("errors",))
    if any(k in case.expect for k in said):
        return ""
    if case.kind == "resume" and not inputs.get("evidence"):  # `evidence: {}`: none presented, on purpose
        return ""
    fail_closed = _FAIL_CLOSED.get(case.kind)
    if fail_closed is not None and not any(case.expect.get(k, _UNSET) == v for k, v in fail_closed):
        # (a rollback or an authorization checked for what a refused input does not decide: a
        # plan's `route` when its record names no reviewer; only the fail-closed answers, the
        # window past or nothing authorizable or satisfied, are what a typo gives)
        return ""
    bad = [e.get("message", "") for e in answer.get("errors", []) if isinstance(e, dict) and e.get("kind") == "input"]
    if not bad:
        return ""
    tests = {"gate": "rule", "resume": "criterion", "rollback": "scenario"}.get(case.kind, "approval")
    what = ("the input of the case's " + ("gate question" if "action" in inputs else "rollback request")
            if case.kind == "authorize" else "the case's input")
    return (f"the engine refused {what} ({bad[0]}), so the answer tests no {tests}: fix the input, or add "
            '`errors: ["<input>"]` to `expect` if the invalid input is what the case tests')


def _load_unloaded(coverage: Coverage, files: list[str], unloaded: list[str]) -> dict[str, str]:
    """Load `files` as one set and add the items of `unloaded` among them to `coverage`.
    Returns {} when it loads, else the first error of each file that has one."""
    from ..language.loader import load_paths

    try:
        result = load_paths(files)
    except Exception as e:  # (a usage error, a loader bug: not measured, said so)
        return {f: str(e) for f in unloaded}
    if result.policy_set is None:
        errs: dict[str, str] = {}
        for d in result.diagnostics:
            if d.severity == "error":
                where = f"{d.span.path}:{d.span.line}" if d.span.located else d.span.path
                errs.setdefault(d.span.path, f"{where}: error[{d.code}]: {d.message}")
        return errs or {f: "it does not load" for f in unloaded}
    coverage.add_policy_set(result.policy_set, unloaded)
    return {}


def load_policies(paths: tuple[str, ...]) -> Loaded:
    """Load and check a policy set once, then build its engine. Never raises."""
    from ..language.loader import UsageError, load_paths

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
    from .. import engine as _engine

    for fname in ("from_load_result", "from_result"):
        fn = getattr(_engine, fname, None) or getattr(getattr(_engine, "Engine", None), fname, None)
        if callable(fn):
            return fn(result)
    return _engine.load(list(paths) if len(paths) != 1 else paths[0])


