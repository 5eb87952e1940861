"""Tests of the pytest plugin (policy_engine/testing/plugin.py), run in subprocesses.

`stopline test` and `pytest` must report the same counts; failures show the same diff
and trace; the plugin must import cheaply and leave unrelated pytest runs alone.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from policy_engine.cli import main

SUITES = Path(__file__).parent / "suites"
REPO = Path(__file__).parent.parent


# the test environment's other third-party plugins, off in these runs: none is what they
# test, and importing them (langsmith's, schemathesis's) made each run start 8x slower
OTHER_PLUGINS = ("langsmith_plugin", "schemathesis", "anyio", "hypothesispytest", "xdist", "xdist.looponfail")


def pytest_run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m pytest` as a user runs it: the stopline plugin loaded by its entry point."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    off = [a for name in OTHER_PLUGINS for a in ("-p", f"no:{name}")]
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *off, "-q", *args],
                          cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def pytest_counts(output: str) -> dict[str, int]:
    last = [ln for ln in output.strip().splitlines() if re.search(r"\d+ (passed|failed|error|skipped)", ln)][-1]
    return {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", last.replace("errors", "error"))}


def stopline_counts(output: str) -> dict[str, int]:
    last = output.rstrip().splitlines()[-1]
    return {k.rstrip("s") if k.startswith("error") else k: int(n)
            for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", last) if int(n)}


@pytest.fixture
def work(tmp_path):
    for d in ("policy", "good", "broken", "malformed"):
        shutil.copytree(SUITES / d, tmp_path / d)
    return tmp_path


def test_pytest_and_stopline_test_report_the_same_counts(work, monkeypatch):
    res = pytest_run(work)
    monkeypatch.chdir(work)
    cli = CliRunner().invoke(main, ["test", "."])
    assert cli.exit_code == 2
    expected = {"passed": 15, "failed": 4, "skipped": 1, "error": 4}
    assert stopline_counts(cli.output) == expected, cli.output
    assert pytest_counts(res.stdout) == expected, res.stdout
    assert "Traceback" not in res.stdout


def test_counts_agree_on_the_shipped_policies(monkeypatch):
    assert list((REPO / "policies").glob("*.policy-test.yaml")), "the shipped library has fixture suites"
    res = pytest_run(REPO, "policies")
    monkeypatch.chdir(REPO)
    cli = CliRunner().invoke(main, ["test", "policies"])
    assert pytest_counts(res.stdout) == stopline_counts(cli.output), (res.stdout[-2000:], cli.output[-2000:])


def test_pytest_failure_shows_the_diff_and_trace(work):
    res = pytest_run(work, "broken", "-k", "route")
    assert res.returncode == 1
    out = res.stdout
    assert "FAIL broken/wrong.policy-test.yaml:20 wrong route" in out
    assert '  - route: "escalations"\n  + route: "verification"' in out
    assert "explain:" in out
    assert "1 failed, 4 deselected" in out


def test_pytest_broken_suite_is_a_located_error_not_a_traceback(work):
    res = pytest_run(work, "malformed/unknown_names.policy-test.yaml", "good")
    out = res.stdout
    assert "14 passed, 1 skipped, 1 error" in out
    assert "--> malformed/unknown_names.policy-test.yaml:15:35" in out
    assert "did you mean `small`?" in out
    assert "Traceback" not in out and "plugin.py" not in out


def test_pytest_items_are_named_by_case(work):
    res = pytest_run(work, "good", "--collect-only")
    assert "good/replies.policy-test.yaml::small reply is allowed" in res.stdout
    assert "good/replies.policy-test.yaml::amounts [big]" in res.stdout


def test_plugin_imports_cheaply():
    code = ("import sys, policy_engine.testing.plugin; "
            "print(sorted(m for m in ('policy_engine.engine', 'policy_engine.language', 'policy_engine.cel', "
            "'policy_engine.models', 'yaml', 'lark', 'celpy', 'pydantic') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == "[]", res.stdout + res.stderr


def test_unrelated_pytest_runs_are_untouched(tmp_path):
    (tmp_path / "test_plain.py").write_text("def test_ok():\n    assert True\n")
    (tmp_path / "config.yaml").write_text("not: [a, suite\n")  # not a *.policy-test.yaml
    res = pytest_run(tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 passed" in res.stdout


def test_stopline_case_fixture_with_syrupy(work):
    pytest.importorskip("syrupy")
    (work / "test_snap.py").write_text(
        "def test_trace(stopline_case, snapshot):\n"
        "    result = stopline_case('good/replies.policy-test.yaml', 'small reply is allowed')\n"
        "    assert result.status == 'passed'\n"
        "    assert 'small' in result.explain\n"
        "    assert result.answer['effect'] == 'allow'\n"
        "    assert result.explain == snapshot\n"
        "    assert {k: result.answer[k] for k in ('effect', 'deciding')} == snapshot\n"
        "\n"
        "def test_unknown_case(stopline_case):\n"
        "    stopline_case('good/replies.policy-test.yaml', 'small reply is alowed')\n"
    )
    first = pytest_run(work, "test_snap.py", "--snapshot-update")
    assert "1 passed" in first.stdout and "1 failed" in first.stdout, first.stdout
    assert "no case named `small reply is alowed`; did you mean `small reply is allowed`?" in first.stdout
    again = pytest_run(work, "test_snap.py::test_trace")
    assert again.returncode == 0, again.stdout
    assert (work / "__snapshots__" / "test_snap.ambr").exists()
