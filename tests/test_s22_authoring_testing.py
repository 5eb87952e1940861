"""Session 22: what a policy author and a CI job read from `stopline test` and `stopline check`.

Each test marked "(fix)" failed before its fix:

- a misspelt key below an expectation's top level (`cascade: {stepz: []}`,
  `steps: [{record_idd: ...}]`, `reversibility: {klass: ...}`) was compared as a key the answer
  lacks: the case failed with `(absent)` and no hint, and given as `null` it passed, comparing
  nothing. Now T002 at the key, with a "did you mean" (fix);
- the JUnit report counted a suite that cannot run in `errors` but not in `tests`, and a path
  holding no suite in `errors` with no element naming it or saying why (fix).

The others pin what already held (every broken suite a located diagnostic, never a pass and
never a traceback; the exit codes; the JSON report's counts; the `check --format json` keys).
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from policy_engine.cli import main

ROOT = Path(__file__).resolve().parent.parent

HEAD = """\
now: "2026-11-24T10:00:00Z"
inputs:
  actions:
    reply: {workflow: support-replies, type: send_customer_reply, id: r1, ticket_id: T1,
            recipient: {email: a@c.example, domain: c.example}, customer: {tier: standard},
            confidence: 0.96, claims: []}
  records:
    sent: {type: send_customer_reply, executed_at: "2026-11-24T09:59:30Z", reviewer: bob,
           requester: carol, channel: email, recipient_opened: false}
  principals:
    alice: {roles: [reviewer]}
    bob: {roles: [reviewer]}
cases:
"""
GOOD = "  - name: passes\n    gate: {action: reply}\n    expect: {effect: allow}\n"
MIXED = GOOD + (
    "  - name: fails\n    gate: {action: reply}\n    expect: {effect: deny}\n"
    "  - name: skipped\n    skip: not now\n    gate: {action: reply}\n    expect: {effect: allow}\n"
)
ROLLBACK = "rollback: {workflow: support-replies, scenario: reviewer_error, original: sent, requested_by: carol}"


@pytest.fixture
def work(tmp_path, monkeypatch):
    for f in ("support_replies.policy", "roles.policy"):
        shutil.copy(ROOT / "policies" / f, tmp_path / f)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def suite(work: Path, name: str, body: str, head: str = HEAD) -> str:
    (work / f"{name}.policy-test.yaml").write_text(head + body, encoding="utf-8")
    return f"{name}.policy-test.yaml"


def run(*args: str):
    res = CliRunner().invoke(main, list(args))
    assert "Traceback" not in res.output, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res


def head_lines() -> int:
    return HEAD.count("\n")


# ----------------------------------------------------------------------------- nested expectation keys (fix)

NESTED = {
    "cascade_key": (
        f"  - name: a\n    {ROLLBACK}\n    expect: {{cascade: {{stepz: []}}}}\n",
        "stepz",
        "cascade",
        "steps",
    ),
    "step_key": (
        f"  - name: a\n    {ROLLBACK}\n    expect: {{cascade: {{steps: [{{record_idd: sent, depth: 0}}]}}}}\n",
        "record_idd",
        "cascade.steps",
        "record_id",
    ),
    # given as null, the misspelt key matched the answer's lacking it: the case passed
    "null_passed": (
        f"  - name: a\n    {ROLLBACK}\n    expect: {{cascade: {{partail: null}}}}\n",
        "partail",
        "cascade",
        "partial",
    ),
    "gate_reversibility": (
        "  - name: a\n    gate: {action: reply}\n    expect: {reversibility: {klass: partial}}\n",
        "klass",
        "reversibility",
        "class",
    ),
    "authorization_slot": (
        f"  - name: a\n    {ROLLBACK}\n    expect: {{authorization: {{slots: [{{rolls: [reviewer]}}]}}}}\n",
        "rolls",
        "authorization.slots",
        "roles",
    ),
    "approvers_dict": (
        "  - name: a\n    gate: {action: reply, with: {confidence: 0.1}}\n"
        "    expect: {approvers: [{rule: low_confidence_draft, cuont: 1}]}\n",
        "cuont",
        "approvers",
        "count",
    ),
}


@pytest.mark.parametrize("name", sorted(NESTED))
def test_a_misspelt_nested_expectation_key_is_a_located_error(work, name):
    body, key, where, meant = NESTED[name]
    res = run("test", "--no-color", suite(work, "s", body))
    assert res.exit_code == 2, res.output
    assert "passed" in res.output and res.output.splitlines()[-1] == "0 passed, 0 failed, 1 error"
    assert f"error[T002]: unknown key `{key}` in the expected `{where}`" in res.output
    line = head_lines() + 3
    text = (work / "s.policy-test.yaml").read_text().splitlines()[line - 1]
    col = text.index(key) + 1
    assert f"--> s.policy-test.yaml:{line}:{col}" in res.output
    assert f"{line} | {text}\n" in res.output and " " * (col - 1) + "^" * len(key) in res.output
    assert f"help: did you mean `{meant}`?" in res.output


def test_nested_keys_the_answer_has_are_accepted(work):
    body = (
        f"  - name: whole steps\n    {ROLLBACK}\n"
        "    expect:\n"
        "      feasibility: {status: feasible, unmet: []}\n"
        "      authorization: {slots: [{count: 1, roles: [reviewer]}]}\n"
        "      compensations: [{name: send_correction, kind: action}, {name: log_crm_activity}]\n"
        "      cascade: {steps: [{record_id: sent, depth: 0, type: send_customer_reply, method: email.recall,\n"
        "                         status: feasible, parent: null}], partial: false, truncated_reason: null}\n"
        "  - name: gate reversibility\n    gate: {action: reply}\n"
        "    expect: {reversibility: {class: partial, method: email.recall}}\n"
        "  - name: steps by name\n    " + ROLLBACK + "\n    expect: {cascade: {steps: [sent]}}\n"
    )
    res = run("test", "--no-color", suite(work, "s", body))
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[-1] == "3 passed, 0 failed"


def test_a_misspelt_key_of_a_case_expectation_is_named_once_for_all_its_table_rows(work):
    body = (
        f"  - name: rows\n    {ROLLBACK}\n    expect: {{cascade: {{stepz: []}}}}\n"
        "    table:\n      - {name: one, expect: {route: verification}}\n"
        "      - {name: two, expect: {route: verification}}\n"
    )
    res = run("test", "--no-color", suite(work, "s", body))
    assert res.exit_code == 2
    assert res.output.count("unknown key `stepz`") == 1
    assert f"--> s.policy-test.yaml:{head_lines() + 3}:" in res.output


# ----------------------------------------------------------------------------- broken suites: never a pass


BROKEN = {
    "typo": (
        "  - name: a\n    gate: {action: reply}\n    expect: {efect: allow}\n",
        "T002",
        3,
        "did you mean `effect`?",
    ),
    "unknown_case_key": (
        "  - name: a\n    gate: {action: reply}\n    expectt: {effect: allow}\n",
        "T002",
        3,
        "did you mean `expect`?",
    ),
    "wrong_type": ("  - name: a\n    gate: {action: reply}\n    expect: {effect: [allow]}\n", "T006", 3, None),
    "twice": (
        "  - name: a\n    gate: {action: reply}\n    expect: {effect: allow}\n"
        "  - name: a\n    gate: {action: reply}\n    expect: {effect: allow}\n",
        "T008",
        4,
        None,
    ),
    "alias_twice": (
        "  - &c\n    name: a\n    gate: {action: reply}\n    expect: {effect: allow}\n  - *c\n",
        "T008",
        2,
        None,
    ),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_suite_is_one_located_error_and_exit_2(work, name):
    body, code, line, hint = BROKEN[name]
    res = run("test", "--no-color", suite(work, "s", body))
    assert res.exit_code == 2, res.output
    assert f"error[{code}]" in res.output
    assert f"s.policy-test.yaml:{head_lines() + line}:" in res.output and "^" in res.output
    assert hint is None or hint in res.output
    assert res.output.splitlines()[-1] == "0 passed, 0 failed, 1 error"


@pytest.mark.parametrize(
    ("text", "code"), [("", "T005"), ("# nothing\n", "T005"), ("policies: [nope.policy]\n" + HEAD + GOOD, "T007")]
)
def test_an_empty_suite_or_a_missing_policy_file_is_a_located_error(work, text, code):
    (work / "s.policy-test.yaml").write_text(text, encoding="utf-8")
    res = run("test", "--no-color", "s.policy-test.yaml")
    assert res.exit_code == 2, res.output
    assert f"error[{code}]" in res.output and "--> s.policy-test.yaml:1:" in res.output and "^" in res.output
    assert res.output.splitlines()[-1] == "0 passed, 0 failed, 1 error"


def test_yaml_anchors_and_aliases_are_read_as_yaml_says(work):
    body = (
        "  - name: anchored\n    gate: &g {action: reply}\n    expect: {effect: allow}\n"
        "  - name: aliased\n    gate: *g\n    expect: &e {effect: allow}\n"
        "  - name: merged\n    gate: {<<: *g, with: {confidence: 0.1}}\n    expect: {effect: require_approval}\n"
    )
    res = run("test", "--no-color", suite(work, "s", body))
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[-1] == "3 passed, 0 failed"


# ----------------------------------------------------------------------------- reports CI parses


def test_junit_counts_are_the_elements_below_them(work):  # (fix)
    args = [
        suite(work, "mixed", MIXED),
        suite(work, "broken", "  - name: a\n    gate: {action: reply}\n    expect: {efect: allow}\n"),
        "nope/",
    ]
    res = run("test", *args, "--format", "junit", "--output", "r.xml")
    assert res.exit_code == 2
    root = ET.parse(work / "r.xml").getroot()
    assert root.tag == "testsuites"

    def counts(el):
        cases = el.findall(".//testcase")
        return {
            "tests": len(cases),
            **{
                k: sum(c.find(t) is not None for c in cases)
                for k, t in (("failures", "failure"), ("skipped", "skipped"), ("errors", "error"))
            },
        }

    assert (
        {k: int(root.get(k)) for k in ("tests", "failures", "skipped", "errors")}
        == counts(root)
        == {"tests": 5, "failures": 1, "skipped": 1, "errors": 2}
    )
    for ts in root.findall("testsuite"):
        assert {k: int(ts.get(k)) for k in ("tests", "failures", "skipped", "errors")} == counts(ts), ts.get("name")
    missing = next(ts for ts in root.findall("testsuite") if ts.get("name") == "nope/")
    err = missing.find("testcase/error")
    assert err.get("message") == "no such file or directory" and "nope/" in err.text
    broken = next(ts for ts in root.findall("testsuite") if ts.get("name") == "broken.policy-test.yaml")
    assert "unknown expectation `efect`" in broken.find("testcase/error").text


def test_json_report_counts_match_its_cases(work):
    args = [
        suite(work, "mixed", MIXED),
        suite(work, "broken", "  - name: a\n    gate: {action: reply}\n    expect: {efect: allow}\n"),
    ]
    res = run("test", *args, "--format", "json", "--coverage")
    assert res.exit_code == 2
    data = json.loads(res.output)
    cases = [c for s in data["suites"] for c in s["cases"]]
    for status in ("passed", "failed", "skipped"):
        assert data[status] == sum(c["status"] == status for c in cases)
    assert data["errors"] == sum(s["error"] is not None for s in data["suites"]) == 1
    broken = next(s for s in data["suites"] if s["file"] == "broken.policy-test.yaml")
    assert [(d["code"], d["line"]) for d in broken["diagnostics"]] == [("T002", head_lines() + 3)]
    assert set(data) == {"passed", "failed", "skipped", "errors", "suites", "missing_paths", "coverage"}


@pytest.mark.parametrize(
    ("body", "code"),
    [(GOOD, 0), (MIXED, 1), ("  - name: a\n    gate: {action: nope}\n    expect: {effect: allow}\n", 2)],
)
def test_exit_codes(work, body, code):
    for fmt in ("text", "json", "junit"):
        assert run("test", suite(work, "s", body), "--format", fmt).exit_code == code


# ----------------------------------------------------------------------------- check --format json

CHECK_KEYS = {"ok", "files", "content_hash", "diagnostics", "acknowledged"}
DIAG_KEYS = {"code", "severity", "message", "file", "line", "col", "end_line", "end_col", "label", "help", "notes"}


@pytest.mark.parametrize(("text", "code"), [(None, 0), ('workflow "x" {\n  bogus\n}\n', 1), ("missing", 2)])
def test_check_json_has_one_shape_whatever_the_verdict(work, text, code):
    if text is None:
        args = ["support_replies.policy", "roles.policy"]
    elif text == "missing":
        args = ["nope.policy"]
    else:
        (work / "bad.policy").write_text(text, encoding="utf-8")
        args = ["bad.policy"]
    res = CliRunner().invoke(main, ["check", "--format", "json", *args])
    assert res.exit_code == code
    data = json.loads(res.stdout)
    assert set(data) == CHECK_KEYS
    assert data["ok"] is (code == 0)
    for d in data["diagnostics"]:
        assert set(d) == DIAG_KEYS
    assert (data["content_hash"] or "sha256:").startswith("sha256:")
    if code == 2:  # a path that does not exist has no position (docs/diagnostics.md): null, never a fake 1:1
        assert data["diagnostics"] and data["diagnostics"][0]["line"] is None
    elif code:
        assert data["diagnostics"] and data["diagnostics"][0]["line"] >= 1
