"""Session 23: `stopline test DIR --coverage` counts every `.policy` file under DIR. Coverage
counted only the files some suite's `policies:` loads, so a policy file added beside them
without a suite never lowered it: a CI asking for `--min-coverage 80` of a directory went
green with a policy in it that no case tests. Now such a file counts with all its branches
not covered, listed as "(no suite loads it)"; one that does not even load makes a threshold
unmet, saying which; suites naming policies outside DIR work as before."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from policy_engine.cli import main
from policy_engine.testing import Runner

ROLES = "roles [approver]\n"


def policy(name: str, action: str) -> str:
    return f"""\
workflow "{name}" {{
  version "1"
  owners {{
    business "b"
    technical "t"
  }}
  default deny
  action {action} {{
    system "s"
    description "d"
    allow small when `action.amount < 10`
    require_approval big by 1 approver when `action.amount >= 10`
  }}
}}
"""


SUITE = """\
suite: tested
policies: [tested.policy, roles.policy]
now: "2026-11-24T10:00:00Z"
cases:
  - name: small
    gate: {action: {workflow: tested, type: send, amount: 5}}
    expect: {effect: allow, rule: small}
  - name: big
    gate: {action: {workflow: tested, type: send, amount: 50}}
    expect: {effect: require_approval, rule: big}
"""


def tree(root: Path) -> Path:
    """A directory with two policies (both reading `approver` from roles.policy beside them)
    and one suite, for one of them."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "roles.policy").write_text(ROLES, encoding="utf-8")
    (root / "tested.policy").write_text(policy("tested", "send"), encoding="utf-8")
    (root / "untested.policy").write_text(policy("untested", "pay"), encoding="utf-8")
    (root / "tested.policy-test.yaml").write_text(SUITE, encoding="utf-8")
    return root


def run(*args: str):
    res = CliRunner().invoke(main, ["test", *args])
    assert "Traceback" not in res.output, res.output
    return res


def test_a_policy_file_no_suite_loads_lowers_coverage(tmp_path):
    d = tree(tmp_path / "p")
    res = run("--coverage", str(d))
    assert res.exit_code == 0, res.output
    assert "2 passed, 0 failed" in res.output
    # 4 branches of 8: the untested file's two rules count, none of their branches covered
    lines = res.output.splitlines()
    total = next(ln for ln in lines if ln.startswith("total"))
    assert total.split()[1:] == ["4", "2", "8", "4", "50.0%"], res.output
    never = res.output.split("never exercised:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert never == [f"  {d / 'untested.policy'}: 2 items (no suite loads it)"]


def test_min_coverage_fails_with_the_reason(tmp_path):
    d = tree(tmp_path / "p")
    res = run("--min-coverage", "80", str(d))
    assert res.exit_code == 1, res.output
    assert "coverage 50.0% is below --min-coverage 80%" in res.output
    assert "untested.policy: 2 items (no suite loads it)" in res.output
    # a suite for it, and the directory is covered again
    (d / "untested.policy-test.yaml").write_text(
        SUITE.replace("tested", "untested").replace("type: send", "type: pay"), encoding="utf-8")
    res = run("--min-coverage", "80", str(d))
    assert res.exit_code == 0, res.output
    assert "no suite loads it" not in res.output


def test_the_json_report_lists_the_files_no_suite_loads(tmp_path):
    d = tree(tmp_path / "p")
    res = run("--coverage", "--format", "json", str(d))
    cov = json.loads(res.stdout)["coverage"]
    assert cov["percent"] == 50.0
    assert cov["unloaded"] == [str(d / "untested.policy")] and cov["unmeasured"] == []
    items = {i["name"]: i for i in cov["items"]}
    assert items["pay.small"]["unloaded"] is True and items["pay.small"]["hit"] == []
    assert items["send.small"]["unloaded"] is False


def test_a_copy_of_a_tested_workflow_counts_apart(tmp_path):
    """A stale copy declaring the same workflow (not loaded with it: no conflict) is not
    merged into the tested one's items."""
    d = tree(tmp_path / "p")
    (d / "untested.policy").unlink()
    sub = d / "old"
    sub.mkdir()
    (sub / "roles.policy").write_text(ROLES, encoding="utf-8")
    (sub / "tested_v0.policy").write_text(policy("tested", "send"), encoding="utf-8")
    res = run("--coverage", "--format", "json", str(d))
    cov = json.loads(res.stdout)["coverage"]
    assert cov["percent"] == 50.0, cov
    assert [f["file"] for f in cov["files"] if f["covered"] == 0] == [str(sub / "tested_v0.policy")]


def test_suites_naming_policies_outside_the_directory_still_work(tmp_path):
    """The suites live in tests/, their policies in policies/: `stopline test tests/`
    measures what the suites load (there is no policy under tests/ to add)."""
    pol = tree(tmp_path / "policies")
    (pol / "tested.policy-test.yaml").unlink()
    (pol / "untested.policy").unlink()
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "tested.policy-test.yaml").write_text(
        SUITE.replace("[tested.policy, roles.policy]", "[../policies/tested.policy, ../policies/roles.policy]"),
        encoding="utf-8")
    res = run("--min-coverage", "100", str(tests))
    assert res.exit_code == 0, res.output
    assert "no suite loads it" not in res.output and "100.0%" in res.output
    # both directories given: the policies there are loaded by the suite, nothing is added
    res = run("--min-coverage", "100", str(tests), str(pol))
    assert res.exit_code == 0, res.output


def test_a_policy_file_no_suite_loads_that_does_not_load_fails_a_threshold(tmp_path):
    d = tree(tmp_path / "p")
    (d / "untested.policy").unlink()
    (d / "draft.policy").write_text('workflow "draft" {\n  version 1\n', encoding="utf-8")
    res = run("--min-coverage", "10", str(d))
    assert res.exit_code == 1, res.output
    assert "100.0%" in res.output  # what could be measured is covered...
    draft = d / "draft.policy"
    assert f"{draft}, which no suite loads, does not load: its branches cannot be counted, so " \
        f"--min-coverage 10% is not met (`stopline check {draft}`)" in res.output
    assert f"  {draft}: not measured (no suite loads it, and it does not load: {draft}:2: error[" in res.output
    res = run("--coverage", str(d))  # no threshold: shown, not failed
    assert res.exit_code == 0, res.output
    res = run("--coverage", "--format", "json", str(d))
    assert [u["file"] for u in json.loads(res.stdout)["coverage"]["unmeasured"]] == [str(draft)]


def test_a_broken_file_beside_does_not_hide_a_good_one(tmp_path):
    """The untested file is read with the files of its directory (it needs their roles);
    a broken one among them is left out of that set, not the good file with it."""
    d = tree(tmp_path / "p")
    (d / "draft.policy").write_text('workflow "draft" {\n  version 1\n', encoding="utf-8")
    res = run("--coverage", "--format", "json", str(d))
    cov = json.loads(res.stdout)["coverage"]
    assert cov["percent"] == 50.0
    assert [u["file"] for u in cov["unmeasured"]] == [str(d / "draft.policy")]


def test_policy_files_among_the_paths_count(tmp_path):
    """As a shell glob gives them (`stopline test policies/*`): the policy files named are
    tested paths too, and are not run as suites."""
    d = tree(tmp_path / "p")
    report = Runner().run([str(p) for p in sorted(d.iterdir())])
    assert report.errors == 0 and report.passed == 2
    assert report.coverage.unloaded == [str(d / "untested.policy")]
    assert round(report.coverage.percent, 1) == 50.0


def test_a_shell_glob_counts_the_policy_files_it_names_on_the_command_line(tmp_path):
    """`stopline test p/*`: the command passed only the suites on, so a policy the glob named
    that no suite loads was not counted (100 % where `stopline test p/` said 50 %)."""
    d = tree(tmp_path / "p")
    globbed = [str(p) for p in sorted(d.iterdir())]
    res = CliRunner().invoke(main, ["test", "--min-coverage", "60", *globbed])
    assert res.exit_code == 1, res.output
    assert "untested.policy" in res.output and "below --min-coverage 60%" in res.output
    assert "2 passed, 0 failed" in res.output
