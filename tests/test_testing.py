"""Tests of the policy test runner (policy_engine/testing/, `stopline test`).

Fixtures live in tests/suites/: `policy/` (a small policy), `good/` (passes, full
coverage), `broken/` (wrong expectations on purpose), `malformed/` (suite errors).
Each test copies what it needs into a temporary directory, so the paths it prints are
short and stable.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from click.testing import CliRunner

from policy_engine import testing as T
from policy_engine.cli import main

SUITES = Path(__file__).parent / "suites"
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed(?:, (\d+) skipped)?(?:, (\d+) errors?)?$", re.M)


@pytest.fixture
def work(tmp_path, monkeypatch):
    for d in ("policy", "good", "broken", "malformed"):
        shutil.copytree(SUITES / d, tmp_path / d)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_cli(*args: str):
    res = CliRunner().invoke(main, ["test", *args])
    assert "Traceback" not in res.output, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res


def summary(output: str) -> tuple[int, int, int, int]:
    lines = output.rstrip("\n").splitlines()
    m = SUMMARY.match(lines[-1])
    assert m, f"last line is not a summary: {lines[-1]!r}"
    return tuple(int(g or 0) for g in m.groups())  # type: ignore[return-value]


# ----------------------------------------------------------------------------- passing and failing


def test_good_suite_passes(work):
    res = run_cli("good")
    assert res.exit_code == 0, res.output
    assert summary(res.output) == (14, 0, 1, 0)
    assert res.output.splitlines()[-1] == "14 passed, 0 failed, 1 skipped"


def test_broken_suite_fails_with_a_diff_naming_each_difference(work):
    res = run_cli("broken")
    assert res.exit_code == 1
    out = res.output
    assert summary(out) == (1, 4, 0, 0)
    assert out.splitlines()[-1] == "1 passed, 4 failed"
    # wrong expected effect
    assert "FAIL broken/wrong.policy-test.yaml:16 wrong effect" in out
    assert '  - effect: "allow"\n  + effect: "require_approval"' in out
    # wrong route
    assert "FAIL broken/wrong.policy-test.yaml:20 wrong route" in out
    assert '  - route: "escalations"\n  + route: "verification"' in out
    # missing approver
    assert "FAIL broken/wrong.policy-test.yaml:24 missing approver" in out
    assert '  - approvers: ["support_manager"]\n  + approvers: ["reviewer"]' in out
    # a criterion that should be unmet
    assert "FAIL broken/wrong.policy-test.yaml:28 criterion that should be unmet" in out
    assert '  - unmet: []\n  + unmet: ["promises_blocked"]' in out
    assert "FAIL broken/wrong.policy-test.yaml:32" not in out  # the passing case
    # the explain trace of the actual decision follows the diff
    block = out.split("FAIL broken/wrong.policy-test.yaml:16 wrong effect", 1)[1].split("FAIL ", 1)[0]
    assert "explain:" in block and "big" in block


def test_broken_suite_structured_differences(work):
    report = T.Runner().run(["broken"])
    diffs = {r.name: [(d.key, d.expected, d.actual) for d in r.differences] for r in report.results}
    assert diffs["wrong effect"] == [("effect", "allow", "require_approval")]
    assert diffs["wrong route"] == [("route", "escalations", "verification")]
    assert diffs["missing approver"] == [("approvers", ["support_manager"], ["reviewer"])]
    assert diffs["criterion that should be unmet"] == [("allowed", True, False), ("unmet", [], ["promises_blocked"])]
    assert diffs["still passes"] == []


def test_keyword_selects_cases(work):
    res = run_cli("broken", "good", "-k", "route")
    assert summary(res.output)[:2] == (0, 1)
    res = run_cli("broken", "-k", "effect or approver")
    assert summary(res.output)[:2] == (0, 2)
    res = run_cli("broken", "-k", "wrong.policy and not route")  # the suite's name counts too
    assert summary(res.output)[:2] == (1, 3)
    res = run_cli("good", "-k", "replies.policy-test.yaml::amounts")
    assert summary(res.output)[:2] == (2, 0)


# ----------------------------------------------------------------------------- coverage


def test_coverage_full_for_the_good_suite(work):
    res = run_cli("good", "--coverage", "--min-coverage", "100")
    assert res.exit_code == 0, res.output
    assert "never exercised" not in res.output
    assert re.search(r"policy/replies\.policy\s+8\s+8\s+15\s+15\s+100\.0%", res.output), res.output


def test_a_trigger_added_without_a_case_is_never_exercised(work):
    pol = work / "policy" / "replies.policy"
    text = pol.read_text()
    added = '''
  stop leaked_secret {
    when `action.type == "send_reply" && has(action.secret)`
    severity critical
    owner "Security"
    resume when {
      rotated: `evidence.rotated`
    }
  }
}
'''
    pol.write_text(text.rstrip().rstrip("}") + added)
    line = len(text.rstrip().rstrip("}").splitlines()) + 2
    res = run_cli("good", "--coverage", "--min-coverage", "90")
    assert res.exit_code == 1, res.output  # 15 + 1 of 19 branches < 90%
    never = res.output.split("never exercised:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert never == [
        f"  policy/replies.policy:{line}: stop leaked_secret (evaluated, never fired)",
        f"  policy/replies.policy:{line + 5}: criterion leaked_secret.rotated",
    ]
    assert "is below --min-coverage 90%" in res.output
    cov = T.Runner()
    cov.run(["good"])
    items = {i.name: i for i in cov.coverage.items.values()}
    assert items["leaked_secret"].hit == {"not fired"}
    assert not items["leaked_secret.rotated"].exercised
    assert [i.name for i in cov.coverage.never_exercised()] == ["leaked_secret", "leaked_secret.rotated"]


def test_coverage_branches(work):
    r = T.Runner()
    r.run(["good"], keyword="small reply")
    items = {i.name: i for i in r.coverage.items.values()}
    assert items["send_reply.small"].hit == {"fired"}
    assert items["send_reply.big"].hit == {"not fired"}
    assert items["unsupported_promise"].hit == {"not fired"}
    assert not items["unsupported_promise"].exercised and items["send_reply.small"].exercised
    assert not items["reviewer_error"].exercised
    r.run(["good"], keyword="after the window")
    assert items["reviewer_error"].hit == {"after window"}
    assert items["reviewer_error"].branches == ("inside window", "after window")


# ----------------------------------------------------------------------------- malformed suites


def test_malformed_suites_are_located_errors_and_exit_2(work):
    res = run_cli("malformed", "good")
    assert res.exit_code == 2
    out = res.output
    assert summary(out) == (14, 0, 1, 4)  # the good suite still ran
    assert "error[T001]: invalid YAML" in out
    assert "--> malformed/bad_yaml.policy-test.yaml:5:11" in out
    assert "error[T007]: no such policy file or directory: `nowhere`" in out
    assert "error[T006]: a suite must be a mapping, not a list" in out


def test_unknown_names_have_positions_carets_and_hints(work):
    suite = T.load_suite("malformed/unknown_names.policy-test.yaml")
    _, _, error = T.Runner().prepare(suite)
    assert error
    got = {(d.code, d.span.line, d.span.col, d.help) for d in suite.diagnostics}
    assert ("T003", 8, 20, "did you mean `reply`?") in got  # unknown input name
    assert ("T004", 11, 46, "did you mean `send_reply`?") in got  # unknown action type
    assert ("T004", 15, 35, "did you mean `small`?") in got  # unknown rule
    assert ("T004", 18, 20, "did you mean `unsupported_promise`?") in got  # unknown trigger
    assert ("T004", 20, 45, "did you mean `reviewer_error`?") in got  # unknown scenario
    assert ("T004", 25, 22, "did you mean `source_visible`?") in got  # unknown criterion
    assert ("T002", 28, 14, "did you mean `effect`?") in got  # unknown expectation key
    assert ("T002", 35, 5, "did you mean `expect`?") in got  # unknown case key
    codes = [d.code for d in suite.diagnostics if d.code == "T005"]
    assert len(codes) == 3  # no question, no expectation (twice)
    rendered = suite.render_diagnostics()
    assert "15 |     expect: {effect: allow, rule: smal}\n   |                                   ^^^^" in rendered


@pytest.mark.parametrize("text", [
    "",
    "cases: 3",
    "cases:\n  - 7\n",
    "cases:\n  - name: x\n    gate: {action: {workflow: replies, type: send_reply}}\n    expect: {effect: allow}\n"
    "  - name: x\n    gate: {action: {workflow: replies, type: send_reply}}\n    expect: {effect: allow}\n",
    "cases:\n  - name: x\n    gate: 3\n    expect: {effect: allow}\n",
    "cases:\n  - name: x\n    gate: {action: {workflow: replies, type: send_reply}}\n    resume: {}\n    expect: {}\n",
    "now: yesterday\ncases: []\n",
    "a: [\n",
    "a: b\na: c\n",
    "\x00\x01",
    "cases:\n  - name: t\n    gate: {action: {workflow: replies, type: send_reply}}\n    table: [{with: {a: 1}}]\n",
    "cases:\n  - name: a\n    authorize: {rollback: {}, approvals: [nobody]}\n    expect: {satisfied: true}\n",
    "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8)),  # "billion laughs"
])
def test_bad_suites_never_crash(work, text):
    (work / "policy" / "bad.policy-test.yaml").write_text(text)
    res = run_cli("policy")
    assert res.exit_code == 2, res.output
    assert "error[T" in res.output
    assert re.search(r"--> policy/bad\.policy-test\.yaml:\d+:\d+", res.output), res.output


def test_unloadable_policy_exit_2(work):
    (work / "policy" / "replies.policy").write_text("workflow {")
    res = run_cli("good")
    assert res.exit_code == 2
    assert "error[T007]" in res.output and "replies.policy:1" in res.output


def test_no_suites_is_a_usage_error(work):
    res = run_cli("policy")
    assert res.exit_code == 2
    res = run_cli("does-not-exist")
    assert res.exit_code == 2


# ----------------------------------------------------------------------------- output formats


def test_junit_xml_one_testcase_per_case(work):
    res = run_cli("good", "broken", "--format", "junit", "--output", "report.xml")
    assert res.exit_code == 1
    assert res.output.splitlines()[-1] == "15 passed, 4 failed, 1 skipped"
    root = ET.parse(work / "report.xml").getroot()
    cases = root.findall(".//testcase")
    assert len(cases) == 20
    failures = [c for c in cases if c.find("failure") is not None]
    assert sorted(c.get("name") for c in failures) == sorted(
        ["wrong effect", "wrong route", "missing approver", "criterion that should be unmet"])
    effect = next(c for c in cases if c.get("name") == "wrong effect").find("failure").text
    assert "- effect" in effect and "+ effect" in effect
    assert len([c for c in cases if c.find("skipped") is not None]) == 1
    wrong = next(c for c in cases if c.get("name") == "wrong route")
    assert "- route" in wrong.find("failure").text and "+ route" in wrong.find("failure").text


def test_junit_to_stdout_parses(work):
    res = run_cli("good", "malformed", "--format", "junit")
    root = ET.fromstring(res.output)
    assert root.get("errors") == "4"
    assert len(root.findall(".//testcase")) == 15 + 4


def test_json_format(work):
    res = run_cli("broken", "--format", "json", "--coverage")
    data = json.loads(res.output)
    assert (data["passed"], data["failed"]) == (1, 4)
    case = next(c for s in data["suites"] for c in s["cases"] if c["name"] == "wrong route")
    assert case["differences"] == [{"key": "route", "expected": "escalations", "actual": "verification",
                                    "missing": False}]
    assert "percent" in data["coverage"]


# ----------------------------------------------------------------------------- comparison


def test_compare_is_partial_with_set_lists_and_instants():
    assert T.compare({"a": 1}, {"a": 1, "b": 2}) == []
    assert T.compare(["x", "y"], ["y", "x"]) == []
    assert T.compare(["x"], ["x", "y"]) != []  # no extra elements
    assert T.compare([{"id": "a"}], [{"id": "a", "depth": 0}]) == []
    assert T.compare("2026-11-24T10:00:00Z", "2026-11-24T11:00:00+01:00") == []
    assert T.compare(True, 1) != []
    assert T.compare({"reason": "role"}, {"reason": "lacks the required role"}) == []
    d = T.compare({"a": {"b": [1]}}, {"a": {"b": [2]}})
    assert [(x.key, x.expected, x.actual) for x in d] == [("a.b", [1], [2])]


def test_keyword_matches():
    assert T.keyword_matches("Reply", "s.yaml::small reply")
    assert T.keyword_matches("small and not big", "s.yaml::small reply")
    assert not T.keyword_matches("big or (window and x)", "s.yaml::small reply")
    assert T.keyword_matches(None, "anything")


def test_table_rows_and_input_merging(work):
    suite = T.load_suite("good/replies.policy-test.yaml")
    names = [c.name for c in suite.cases]
    assert "amounts [1]" in names and "amounts [big]" in names
    big = next(c for c in suite.cases if c.name == "amounts [big]")
    assert big.question["with"] == {"amount": 500}
    assert big.expect["rule"] == "big"


def test_the_documented_example_suite_passes(tmp_path, monkeypatch):
    """The example suite of docs/testing.md (section A suite) runs against the shipped policies and passes."""
    repo = Path(__file__).parent.parent
    doc = (repo / "docs" / "testing.md").read_text()
    block = re.search(r"## A suite\n\n```yaml\n(.*?)```", doc, re.S).group(1)
    suite = tmp_path / "doc.policy-test.yaml"
    suite.write_text(block.replace("policies: [.]", f"policies: [{repo / 'policies'}]"))
    monkeypatch.chdir(tmp_path)
    res = run_cli(".")
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[-1] == "7 passed, 0 failed"
