"""Session 24: `stopline test --coverage DIR` with a suite whose YAML does not parse listed
the policy files that suite names as "(no suite loads it)": untested by design, when in fact
their suite failed (the run exits 2, but the coverage report said otherwise). Now the report
says coverage is incomplete and which suite did not run; a file the suite names (read from
the text before the YAML error, when `policies:` is there in full) is "(its suite S did not
run)"; when what the suite names cannot be known no file is said to be loaded by no suite.
JSON: `coverage.suites_not_run`, each suite with the policies it names (null: unknown)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from test_s23_testing2_unloaded_coverage import tree

from policy_engine.cli import main
from policy_engine.testing.suites import load_suite

BROKEN_AFTER_POLICIES = """\
suite: tested
policies: [tested.policy, roles.policy]
now: "2026-11-24T10:00:00Z"
cases: [
  - name: small
"""

BROKEN_BEFORE_POLICIES = """\
suite: [tested
policies: [tested.policy, roles.policy]
"""


def run(*args: str):
    res = CliRunner().invoke(main, ["test", *args])
    assert "Traceback" not in res.output, res.output
    return res


def never_exercised(output: str) -> list[str]:
    return output.split("never exercised:\n", 1)[1].split("\n\n", 1)[0].splitlines()


def broken(tmp_path: Path, text: str) -> Path:
    d = tree(tmp_path / "p")
    (d / "tested.policy-test.yaml").write_text(text, encoding="utf-8")
    return d


def test_the_files_an_unparsable_suite_names_are_said_to_be_its(tmp_path):
    d = broken(tmp_path, BROKEN_AFTER_POLICIES)
    res = run("--coverage", str(d))
    assert res.exit_code == 2, res.output
    suite = f"{d}/tested.policy-test.yaml"
    assert f"incomplete: 1 suite did not run ({suite}); what it names counts as never exercised" in res.output
    assert never_exercised(res.output) == [
        f"  {d}/tested.policy: 2 items (its suite {suite} did not run)",  # was "(no suite loads it)"
        f"  {d}/untested.policy: 2 items (no suite loads it)",  # true: the suite does not name it
    ], res.output
    # the branches still count, none covered: a suite that fails never raises coverage
    total = next(ln for ln in res.output.splitlines() if ln.startswith("total"))
    assert total.split()[1:] == ["4", "0", "8", "0", "0.0%"], res.output


def test_when_what_it_names_is_unknown_no_file_is_said_to_be_loaded_by_no_suite(tmp_path):
    d = broken(tmp_path, BROKEN_BEFORE_POLICIES)
    res = run("--coverage", str(d))
    assert res.exit_code == 2, res.output
    assert "(no suite loads it)" not in res.output
    suite = f"{d}/tested.policy-test.yaml"
    for line in never_exercised(res.output):
        assert line.endswith(f"(no suite that ran loads it; {suite}, which did not run, may)"), res.output


def test_json_names_the_suites_that_did_not_run(tmp_path):
    d = broken(tmp_path, BROKEN_AFTER_POLICIES)
    res = run("--coverage", "--format", "json", str(d))
    assert res.exit_code == 2, res.output
    cov = json.loads(res.output)["coverage"]
    assert cov["suites_not_run"] == [{"suite": f"{d}/tested.policy-test.yaml",
                                      "policies": [f"{d}/tested.policy", f"{d}/roles.policy"]}]
    (d / "tested.policy-test.yaml").write_text(BROKEN_BEFORE_POLICIES, encoding="utf-8")
    cov = json.loads(run("--coverage", "--format", "json", str(d)).output)["coverage"]
    assert cov["suites_not_run"] == [{"suite": f"{d}/tested.policy-test.yaml", "policies": None}]


def test_a_suite_that_runs_is_not_listed(tmp_path):
    d = tree(tmp_path / "p")
    res = run("--coverage", "--format", "json", str(d))
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["coverage"]["suites_not_run"] == []


def test_what_an_unparsable_suite_names(tmp_path):
    from policy_engine.testing.runner import _named_unread

    def named(text: str):
        path = tmp_path / "s.policy-test.yaml"
        path.write_text(text, encoding="utf-8")
        suite = load_suite(path)
        assert suite.doc is None, text  # (the YAML does not parse)
        got = _named_unread(suite)
        return None if got is None else [Path(p).name for p in got]

    assert named("policies: a.policy\ncases: [\n") == ["a.policy"]
    assert named("policies:\n  - a.policy\n  - b.policy\ncases: [\n  - x\n") == ["a.policy", "b.policy"]
    assert named("policies:\ncases: [\n") == [tmp_path.name]  # null: the suite's own directory
    assert named("inputs: {actions: {a: {x: [1, {y: 2}]}}}\npolicies: [a.policy]\ncases: [\n") == ["a.policy"]
    assert named("policies: [a.policy, b.policy\ncases: x\n") is None  # the error is inside it
    assert named("cases: [\npolicies: [a.policy]\n") is None  # after the error
    assert named("- a\n- [\n") is None  # not a mapping
    assert named("policies: *x\n") is None
