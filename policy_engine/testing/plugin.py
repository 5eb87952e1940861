"""pytest plugin (entry point `stopline`): runs `*.policy-test.yaml` suites as pytest items.

`pytest policies/` collects one item per case (named by the case's name), so pytest's
reporting, `-k` and JUnit output apply; a failing case shows the same diff and explain
trace as `stopline test`. A suite that cannot be read is a collection error, located like
a policy diagnostic. The `stopline_case` fixture runs one case of a suite and returns its
result, for syrupy snapshots of explain traces and decisions.

This module imports nothing from the engine at import time (only when a suite is
collected), so it never slows down or breaks unrelated pytest runs: policy_engine.testing
itself loads only the suite format's modules (the engine, PyYAML and the explainer load on use).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from .suites import SUITE_SUFFIX

_RUNNER_KEY = pytest.StashKey[Any]()


def _runner(config: pytest.Config) -> Any:
    """One Runner per session: each policy set loads once, however many suites use it."""
    runner = config.stash.get(_RUNNER_KEY, None)
    if runner is None:
        from .runner import Runner

        runner = Runner()
        config.stash[_RUNNER_KEY] = runner
    return runner


def pytest_collect_file(file_path: Any, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.name.endswith(SUITE_SUFFIX):
        return PolicySuiteFile.from_parent(parent, path=file_path)
    return None


class CaseFailed(Exception):
    """A case's answer differs from its expectation (carries the CaseResult)."""

    def __init__(self, result: Any):
        super().__init__(result.name)
        self.result = result


class PolicySuiteFile(pytest.File):
    def collect(self):
        from .suites import load_suite

        runner = _runner(self.config)
        suite = load_suite(self.path)
        loaded, resolved, error = runner.prepare(suite)
        if error:
            # an item that errors in setup: pytest counts it as "1 error" (like `stopline test`)
            # and, unlike a collection error, does not interrupt the other suites
            yield PolicySuiteError.from_parent(self, name="<suite>", suite=suite, error=error)
            return
        for i, case in enumerate(suite.cases):
            # pytest prints the item's name as is (the progress, the summary, -v): a control
            # character of the case's name (`"\e[2J"` in YAML, a line break) acted on the
            # terminal there, as `stopline test` never lets it (U+FFFD, as in its FAIL lines)
            yield PolicyCaseItem.from_parent(self, name=_printable(case.name), case=case, loaded=loaded,
                                             inputs=resolved[i])


def _printable(text: str) -> str:
    from ..diagnostics import _printable as printable

    return printable(text)


class SuiteBroken(Exception):
    pass


class PolicySuiteError(pytest.Item):
    """Stands for a suite that cannot run; errors in setup with the located diagnostics."""

    def __init__(self, *, suite: Any, error: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.suite, self.error = suite, error

    def setup(self) -> None:
        # pytrace=False: pytest prints the diagnostics alone, not a Python traceback
        pytest.fail(f"{_printable(self.suite.display)}: the suite cannot run\n\n{self.error}", pytrace=False)

    def runtest(self) -> None:  # pragma: no cover - setup always raises
        raise SuiteBroken(self.error)

    def repr_failure(self, excinfo: Any, style: Any = None) -> Any:
        if isinstance(excinfo.value, SuiteBroken):
            return f"ERROR {_printable(self.suite.display)}: the suite cannot run\n\n{self.error}"
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, 0, f"{_printable(self.suite.display)} (cannot run)"


class PolicyCaseItem(pytest.Item):
    def __init__(self, *, case: Any, loaded: Any, inputs: dict, **kwargs: Any):
        super().__init__(**kwargs)
        self.case, self.loaded, self.inputs = case, loaded, inputs
        self.result: Any = None
        self.add_marker(pytest.mark.stopline)
        if case.skip:
            self.add_marker(pytest.mark.skip(reason=case.skip))

    def runtest(self) -> None:
        if self.case.skip:
            pytest.skip(self.case.skip)
        self.result = _runner(self.config).run_case(self.case, self.loaded, self.inputs)
        if self.result.status == "failed":
            raise CaseFailed(self.result)

    def repr_failure(self, excinfo: Any, style: Any = None) -> Any:
        if isinstance(excinfo.value, CaseFailed):
            r = excinfo.value.result
            return f"{r.title()}\n{r.render_failure()}"
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, self.case.line - 1, f"{self.case.kind} case: {self.name}"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "stopline: a case from a .policy-test.yaml suite")


@pytest.fixture
def stopline_case(request: pytest.FixtureRequest) -> Callable[[Any, str], Any]:
    """Run one case of a suite and return its `CaseResult` (`.answer`, `.explain`, `.status`).

        def test_trace(stopline_case, snapshot):
            result = stopline_case("policies/support.policy-test.yaml", "small reply is allowed")
            assert result.explain == snapshot
            assert result.answer == snapshot

    The case runs whether or not its expectation holds; look at `result.status` and
    `result.differences` to assert on that too. A suite error fails the test with the
    located diagnostics.
    """
    from ..diagnostics import did_you_mean
    from .suites import load_suite

    runner = _runner(request.config)

    def run(path: Any, name: str) -> Any:
        suite = load_suite(path)
        loaded, resolved, error = runner.prepare(suite)
        if error:
            pytest.fail(f"{suite.display}: the suite cannot run\n\n{error}", pytrace=False)
        for i, case in enumerate(suite.cases):
            if case.name == name:
                return runner.run_case(case, loaded, resolved[i])
        hint = did_you_mean(name, [c.name for c in suite.cases])
        pytest.fail(f"{suite.display}: no case named `{name}`" + (f"; {hint}" if hint else ""), pytrace=False)

    return run
