"""Audit S19: the command line and the fixture-test runner, as a policy owner runs them in CI.

Each test below failed before its fix:

- a `with:` that is not a mapping (`with: [{confidence: 0.1}]`, a table row's `with: 0.1`)
  was read as "no change": the case ran on the unchanged input and could pass while its
  name said it tested another (now T006, located at the `with`);
- `table: []` and `cases: []` ran nothing and passed (`0 passed, 0 failed`, exit 0): T005;
- `name: 5` was "case without a `name`"; `policies: []` was "the suite could not be read",
  at no line: each is now located and says what is wrong;
- an expected `effect`, `window` or `feasibility` the engine never answers, a quoted
  `allowed: "false"`, or an unknown rule named in `errors` or `approvers` failed the case on
  every run with a diff that looked like the policy's fault: now located errors with a hint;
- `stopline test --output FILE` (text format) wrote no file and said nothing;
- `-k` selecting no case said nothing (it still exits 0: a note on stderr);
- Ctrl-C was "Aborted!" and exit 1 ("policy or test failures"): now one line and 130;
- a reader of stdout that leaves (`| head -1`) turned a passing run into exit 1;
- NO_COLOR and TERM=dumb were ignored on a terminal;
- `eval --now garbage` answered (deny, exit 0) instead of a usage error;
- deeply nested JSON given to `ledger append` or `rt` was "internal error ... a bug in
  Stopline"; a negative `older_than` was refused as `datetime.timedelta(days=-1, ...)`;
- a FIFO or a looping symbolic link given to `stopline test` was "no such file or directory".
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from policy_engine.cli import main

ROOT = Path(__file__).resolve().parent.parent
STOPLINE = [sys.executable, "-m", "policy_engine.cli"]

HEAD = """\
now: "2026-11-24T10:00:00Z"
workflow_state: {status: running}
inputs:
  actions:
    reply:
      workflow: support-replies
      type: send_customer_reply
      id: reply-1001
      ticket_id: T-1001
      recipient: {email: dana@customer.example, domain: customer.example}
      customer: {tier: standard}
      confidence: 0.96
      claims:
        - {kind: how_to, text: "Reset", sourced: true, source: kb-204}
  records:
    sent:
      type: send_customer_reply
      executed_at: "2026-11-24T09:59:30Z"
      reviewer: bob
      requester: carol
      channel: email
      recipient_opened: false
"""
GOOD_CASE = """\
  - name: routine reply
    gate: {action: reply}
    expect: {effect: allow, rule: routine_reply}
"""


@pytest.fixture
def work(tmp_path, monkeypatch):
    for f in ("support_replies.policy", "roles.policy"):
        shutil.copy(ROOT / "policies" / f, tmp_path / f)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def suite(work: Path, body: str, name: str = "s") -> str:
    path = work / f"{name}.policy-test.yaml"
    path.write_text(HEAD + body, encoding="utf-8")
    return path.name


def run(*args: str):
    res = CliRunner().invoke(main, list(args))
    assert "Traceback" not in res.output, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res


def lines_of(line: int) -> int:
    """The line number in the suite file of line `line` of the text after HEAD."""
    return HEAD.count("\n") + line


def where(text: str, at: str) -> str:
    """`line:column` of the first `at` in `text` (1-based, as diagnostics show it)."""
    i = text.index(at)
    return f"{text.count(chr(10), 0, i) + 1}:{i - text.rfind(chr(10), 0, i)}"


# ---------------------------------------------------------------- suites that tested nothing, or something else


@pytest.mark.parametrize("body,at", [
    # the case's name says "low confidence"; read as no change, it tested the routine reply and passed
    ("cases:\n  - name: low confidence\n    gate:\n      action: reply\n      with:\n        - confidence: 0.1\n"
     "    expect: {effect: allow}\n", "- confidence"),
    ("cases:\n  - name: rows\n    gate: {action: reply}\n    table:\n      - {with: 0.1, expect: {effect: allow}}\n",
     "0.1"),
    ("cases:\n  - name: resume\n    resume: {workflow: support-replies, stop: unsupported_promise, evidence: {},"
     " with: [a]}\n    expect: {allowed: false}\n", "[a]"),
    ("cases:\n  - name: rb\n    rollback: {workflow: support-replies, scenario: reviewer_error, original: sent,"
     " requested_by: carol, with: 5}\n    expect: {window: standard}\n", "5}"),
])
def test_a_with_that_is_not_a_mapping_is_a_located_error_not_a_pass(work, body, at):
    res = run("test", suite(work, body))
    assert res.exit_code == 2, res.output
    assert "error[T006]: `with` must be a mapping" in res.output
    assert f"--> s.policy-test.yaml:{where(HEAD + body, at)}" in res.output, res.output
    assert res.output.rstrip().endswith("0 passed, 0 failed, 1 error")


def test_a_with_that_is_empty_or_a_mapping_still_runs(work):
    body = ("cases:\n  - name: empty with\n    gate: {action: reply, with: }\n    expect: {effect: allow}\n"
            "  - name: low\n    gate: {action: reply, with: {confidence: 0.1}}\n"
            "    expect: {effect: require_approval, rule: low_confidence_draft}\n")
    res = run("test", suite(work, body))
    assert res.exit_code == 0 and "2 passed, 0 failed" in res.output, res.output


def test_an_empty_table_is_an_error_not_a_pass(work):
    res = run("test", suite(work, "cases:\n  - name: rows\n    gate: {action: reply}\n    expect: {effect: allow}\n"
                                  "    table: []\n"))
    assert res.exit_code == 2, res.output
    assert "error[T005]: case `rows` has an empty `table`" in res.output
    assert f"--> s.policy-test.yaml:{lines_of(5)}:5" in res.output


def test_an_empty_list_of_cases_is_an_error_not_a_pass(work):
    res = run("test", suite(work, "cases: []\n"))
    assert res.exit_code == 2, res.output
    assert "error[T005]: the suite has no cases" in res.output
    assert f"--> s.policy-test.yaml:{lines_of(1)}:1" in res.output
    # and the same for the pytest plugin's and the JSON report's counts
    js = json.loads(run("test", "s.policy-test.yaml", "--format", "json").output)
    assert js["errors"] == 1 and js["passed"] == 0


def test_a_case_name_that_is_not_a_string_says_so(work):
    res = run("test", suite(work, "cases:\n  - name: 5\n    gate: {action: reply}\n    expect: {effect: allow}\n"))
    assert res.exit_code == 2
    assert "error[T006]: a case's `name` must be a string, not a number" in res.output
    assert "without a `name`" not in res.output


def test_an_empty_policies_list_is_located(work):
    res = run("test", suite(work, "policies: []\ncases:\n" + GOOD_CASE))
    assert res.exit_code == 2
    assert "the suite could not be read" not in res.output
    assert "error[T007]: `policies` names no policy file or directory" in res.output
    assert f"--> {Path('s.policy-test.yaml')}:{lines_of(1)}:11" in res.output


# ---------------------------------------------------------------- expectations that can never match


@pytest.mark.parametrize("case,message,hint", [
    ("    gate: {action: reply}\n    expect: {effect: allowed}\n",
     "the engine never answers `effect: allowed`", "did you mean `allow`?"),
    ("    gate: {action: reply}\n    expect: {effect: [allow]}\n", "`effect` must be a string, not a list", None),
    ("    rollback: {workflow: support-replies, scenario: reviewer_error, original: sent, requested_by: carol}\n"
     "    expect: {window: standrd}\n", "the engine never answers `window: standrd`", "did you mean `standard`?"),
    ("    rollback: {workflow: support-replies, scenario: reviewer_error, original: sent, requested_by: carol}\n"
     "    expect: {feasibility: feasable}\n", "never answers `feasibility: feasable`", "did you mean `feasible`?"),
    ("    resume: {workflow: support-replies, stop: unsupported_promise, evidence: {}}\n"
     "    expect: {allowed: \"false\"}\n", "`allowed` must be true or false, not a string", "write it unquoted"),
    ("    gate: {action: reply, with: {confidence: 0.1}}\n    expect: {errors: [low_confidence_draf]}\n",
     "unknown rule `low_confidence_draf`", "did you mean `low_confidence_draft`?"),
    ("    gate: {action: reply, with: {confidence: 0.1}}\n"
     "    expect: {approvers: [{rule: low_confidence_drafts, count: 1}]}\n",
     "unknown rule `low_confidence_drafts`", "did you mean `low_confidence_draft`?"),
])
def test_an_expectation_that_can_never_match_is_a_located_error(work, case, message, hint):
    res = run("test", suite(work, "cases:\n  - name: x\n" + case))
    assert res.exit_code == 2, res.output  # was 1: a FAIL with a diff, on every run
    assert message in res.output, res.output
    assert f"--> s.policy-test.yaml:{lines_of(4)}:" in res.output
    if hint:
        assert hint in res.output


def test_expectations_the_engine_can_answer_still_run(work):
    body = ("cases:\n" + GOOD_CASE +
            "  - name: rb\n    rollback: {workflow: support-replies, scenario: reviewer_error, original: sent,"
            " requested_by: carol}\n    expect: {window: standard, feasibility: {status: feasible}}\n"
            "  - name: low\n    gate: {action: reply, with: {confidence: 0.1}}\n"
            "    expect: {effect: require_approval, errors: [], approvers: [{rule: low_confidence_draft}]}\n"
            "  - name: resume\n    resume: {workflow: support-replies, stop: unsupported_promise, evidence: {}}\n"
            "    expect: {allowed: false}\n")
    res = run("test", suite(work, body))
    assert res.exit_code == 0 and "4 passed, 0 failed" in res.output, res.output


# ---------------------------------------------------------------- control characters in names and values

CONTROL = ('cases:\n  - name: "bell\\x07 \\x1b[2J name"\n'
           '    gate: {action: reply, with: {recipient: {domain: "comp\\x01etitor.example"}}}\n'
           '    expect: {effect: deny, reason: "x\\x02y"}\n')


def test_a_control_character_in_a_case_cannot_break_the_junit_report(work):
    from xml.etree import ElementTree as ET

    res = run("test", suite(work, CONTROL), "--format", "junit")
    assert res.exit_code == 1
    root = ET.fromstring(res.output.encode("utf-8"))  # was: not well-formed (invalid token)
    (case,) = root.iter("testcase")
    assert case.get("name") == "bell\ufffd \ufffd[2J name"
    assert case.find("failure") is not None


def test_a_control_character_in_a_case_is_not_sent_to_the_terminal(work):
    res = run("test", suite(work, CONTROL))
    assert res.exit_code == 1
    assert "FAIL s.policy-test.yaml:24 bell\ufffd \ufffd[2J name" in res.output
    assert "\x07" not in res.output and "\x1b" not in res.output and "\x01" not in res.output


# ---------------------------------------------------------------- options


def test_output_with_the_text_format_is_refused_not_silently_ignored(work):
    name = suite(work, "cases:\n" + GOOD_CASE)
    res = run("test", name, "--output", "report.txt")
    assert res.exit_code == 2
    assert "--output writes the json or junit report" in res.output
    res = run("test", name, "--output", "report.json", "--format", "json")
    assert res.exit_code == 0 and json.loads((work / "report.json").read_text())["passed"] == 1


def test_a_k_that_selects_no_case_says_so(work):
    res = run("test", suite(work, "cases:\n" + GOOD_CASE), "-k", "rotuine")
    assert res.exit_code == 0  # (unchanged: tests/test_hardening_language.py, `-k "not big"`)
    assert "warning: -k 'rotuine' selects none of the 1 case" in res.output


@pytest.mark.parametrize("fmt", ["junit", "json"])
def test_coverage_below_the_minimum_says_so_when_the_report_is_on_stdout(work, fmt):
    res = CliRunner().invoke(main, ["test", suite(work, "cases:\n" + GOOD_CASE), "--min-coverage", "90",
                                    "--format", fmt])
    assert res.exit_code == 1
    # stdout is the report alone; the reason for exit 1 was nowhere (junit) or only a number (json)
    assert re.fullmatch(r"coverage [0-9.]+% is below --min-coverage 90%\n", res.stderr), res.stderr
    assert "below" not in res.stdout


def test_a_suite_named_yml_in_a_directory_is_not_skipped_in_silence(work):
    suite(work, "cases:\n" + GOOD_CASE)
    (work / "sub").mkdir()
    (work / "sub" / "typo.policy-test.yml").write_text(HEAD + "policies: [..]\ncases:\n" + GOOD_CASE, encoding="utf-8")
    res = CliRunner().invoke(main, ["test", "."])
    assert res.exit_code == 0 and "1 passed, 0 failed" in res.stdout
    assert res.stderr == (f"warning: {Path('sub/typo.policy-test.yml')} is not run: suites are named "
                          "`*.policy-test.yaml` (not `.yml`)\n")


def test_eval_with_a_malformed_now_option_is_a_usage_error(work):
    res = run("eval", str(ROOT / "policies"), "--input", str(ROOT / "examples/questions/gate.json"),
              "--now", "garbage")
    assert res.exit_code == 2, res.output
    assert "--now 'garbage' is not an RFC 3339 timestamp" in res.output
    assert "effect" not in res.output


def test_paths_that_are_not_files_are_named_for_what_they_are(work):
    os.mkfifo(work / "f.policy-test.yaml")
    os.symlink("loop.policy-test.yaml", work / "loop.policy-test.yaml")
    res = run("test", "f.policy-test.yaml", "loop.policy-test.yaml", "nonexist")
    assert res.exit_code == 2
    assert "error: not a file or a directory: f.policy-test.yaml" in res.output
    assert "error: a symbolic link to nothing (its target is missing, or a loop of links): loop.policy-test.yaml" \
        in res.output
    assert "error: no such file or directory: nonexist" in res.output
    js = json.loads(run("test", suite(work, "cases:\n" + GOOD_CASE), "--format", "json").output)
    assert js["missing_paths"] == []  # always there, empty or not


# ---------------------------------------------------------------- terminals, pipes and Ctrl-C


def _on_a_terminal(args: list[str], env: dict) -> tuple[int, bytes]:
    """Run the real command with stdout and stderr on a pseudo-terminal; (exit code, output)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdout=slave, stderr=slave, stdin=subprocess.DEVNULL, cwd=ROOT, env=env)
    os.close(slave)
    out = b""
    while True:
        r, _, _ = select.select([master], [], [], 60)
        if not r:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return proc.wait(timeout=120), out


@pytest.mark.parametrize("var,value", [("NO_COLOR", "1"), ("TERM", "dumb")])
def test_no_color_and_a_dumb_terminal_get_no_escape_codes(tmp_path, var, value):
    (tmp_path / "bad.policy").write_text('workflow x {\n  bogus\n}\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env["TERM"] = "xterm-256color"
    code, out = _on_a_terminal([*STOPLINE, "check", str(tmp_path / "bad.policy")], env)
    assert code == 1 and b"\x1b[" in out  # a terminal: colour
    env[var] = value
    code, out = _on_a_terminal([*STOPLINE, "check", str(tmp_path / "bad.policy")], env)
    assert code == 1 and b"error[E001]" in out
    assert b"\x1b[" not in out, out


def test_ctrl_c_is_one_line_and_exit_130(tmp_path):
    fifo = tmp_path / "question.json"
    os.mkfifo(fifo)
    proc = subprocess.Popen([*STOPLINE, "eval", str(ROOT / "policies"), "--input", str(fifo)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # opening the FIFO for writing returns once the command opened it to read the question:
    # it is then waiting for the input, as a long run waits, when Ctrl-C comes
    # (a SIGINT landing just before the read() once left it waiting here for good: the input is
    # now read through select(), which wakes to act on it; tests/test_s26_ctrl_c.py pins that)
    opened, done = threading.Event(), threading.Event()

    def writer():
        with open(fifo, "w"):
            opened.set()
            done.wait(120)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        assert opened.wait(120)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        done.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        t.join(10)
    assert proc.returncode == 130, (proc.returncode, err)
    assert b"Traceback" not in err and b"Aborted!" not in err
    assert err.strip() == b"stopline: interrupted", err
    assert out == b""


@pytest.mark.parametrize("args,code", [
    (["test", "policies"], 0),
    (["test", "policies", "--format", "json"], 0),
    (["check", "policies", "--format", "json"], 0),
    (["test", "tests/suites/broken"], 1),
])
def test_a_reader_that_leaves_does_not_change_the_verdict(args, code):
    # `stopline test policies | head -1` under `set -o pipefail`: all passed, yet exit 1
    proc = subprocess.Popen([*STOPLINE, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.close()  # the reader left before the first line
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err
    assert b"Traceback" not in err and b"Exception ignored" not in err and b"Broken pipe" not in err, err


# ---------------------------------------------------------------- ledger and runtime input


def test_deeply_nested_json_is_an_input_error_not_an_internal_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    assert run("ledger", "init", "--ledger", url).exit_code == 0
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    res = run("ledger", "append", "--ledger", url, "decision", str(deep))
    assert res.exit_code == 2 and "internal error" not in res.output, res.output
    assert "the JSON nests too deeply" in res.output
    res = run("rt", "gate", "-p", str(ROOT / "policies"), "--ledger", url, "-i", str(deep))
    assert res.exit_code == 2 and "internal error" not in res.output, res.output
    assert "the JSON nests too deeply" in res.output
    log = json.loads(run("ledger", "log", "--ledger", url, "--format", "json").output)
    assert [e["kind"] for e in log] == ["checkpoint"] or all(e["kind"] != "decision" for e in log)


def test_a_negative_duration_is_refused_in_seconds_not_as_a_timedelta(tmp_path):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    assert run("ledger", "init", "--ledger", url).exit_code == 0
    args = tmp_path / "a.json"
    args.write_text('{"older_than": -5}', encoding="utf-8")
    res = run("rt", "claims_in_doubt", "--ledger", url, "-i", str(args))
    assert res.exit_code == 2
    assert res.output == "error: `older_than` is a number of seconds, 0 or more, not -5\n"
    res = run("rt", "claims_in_doubt", "--ledger", url, "-i", str(tmp_path))
    assert res.exit_code == 2 and res.output == f"error: cannot read {tmp_path}: Is a directory\n"


# ---------------------------------------------------------------- fmt


def _unformatted() -> str:
    text = (ROOT / "policies" / "refunds.policy").read_text(encoding="utf-8")
    return "\n".join(("    " + ln) if ln.startswith("  ") else ln for ln in text.split("\n"))


def test_fmt_through_a_symbolic_link_formats_its_target_and_keeps_the_link(tmp_path, monkeypatch):
    (tmp_path / "shared").mkdir()
    target = tmp_path / "shared" / "refunds.policy"
    target.write_text(_unformatted(), encoding="utf-8")
    (tmp_path / "refunds.policy").symlink_to("shared/refunds.policy")
    monkeypatch.chdir(tmp_path)
    res = run("fmt", "refunds.policy")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "refunds.policy").is_symlink()  # was replaced by a formatted copy
    assert target.read_text(encoding="utf-8") == (ROOT / "policies" / "refunds.policy").read_text(encoding="utf-8")
    assert run("fmt", "--check", "shared/refunds.policy").exit_code == 0


def test_fmt_in_a_directory_it_cannot_write_is_one_line_not_an_internal_error(tmp_path):
    d = tmp_path / "locked"
    d.mkdir()
    (d / "refunds.policy").write_text(_unformatted(), encoding="utf-8")
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode:
        pytest.skip("needs chattr +i (root on a file system with attributes)")
    try:
        res = run("fmt", str(d / "refunds.policy"))
    finally:
        subprocess.run(["chattr", "-i", str(d)], check=True)
    assert res.exit_code == 2, res.output
    assert "internal error" not in res.output
    assert res.output == f"error: cannot write {d / 'refunds.policy'}: Operation not permitted\n"


# ---------------------------------------------------------------- YAML merge keys

MERGED = """\
now: "2026-11-24T10:00:00Z"
inputs:
  actions:
    reply: &reply
      workflow: support-replies
      type: send_customer_reply
      id: reply-1001
      ticket_id: T-1001
      recipient: {email: dana@customer.example, domain: customer.example}
      customer: {tier: standard}
      confidence: 0.96
      claims: []
    blocked:
      <<: *reply
      recipient: {email: x@competitor.example, domain: competitor.example}
    low: {<<: [*reply], confidence: 0.1}
cases:
  - name: a blocked domain is denied by its rule
    gate: {action: blocked}
    expect: {effect: deny, rule: blocked_recipient_domain}
  - name: a merged input keeps its own keys
    gate: {action: low}
    expect: {effect: require_approval, rule: low_confidence_draft}
"""


def test_yaml_merge_keys_merge_as_yaml_says(work):
    # `<<` was a key like any other: `blocked` lacked workflow and type, was denied as invalid
    # input, and a case expecting only `effect: deny` passed for that wrong reason
    import yaml

    (work / "m.policy-test.yaml").write_text(MERGED, encoding="utf-8")
    res = run("test", "m.policy-test.yaml")
    assert res.exit_code == 0 and "2 passed, 0 failed" in res.output, res.output
    from policy_engine.testing import load_suite

    s = load_suite(work / "m.policy-test.yaml")
    assert s.inputs["actions"] == yaml.safe_load(MERGED)["inputs"]["actions"]  # as PyYAML's loader reads it


def test_a_merge_key_naming_no_mapping_is_a_located_error(work):
    (work / "m.policy-test.yaml").write_text(MERGED.replace("<<: [*reply]", "<<: 5"), encoding="utf-8")
    res = run("test", "m.policy-test.yaml")
    assert res.exit_code == 2
    assert "error[T001]: `<<` merges a mapping (`<<: *name`) or a list of mappings" in res.output
    assert "--> m.policy-test.yaml:16:15" in res.output, res.output


# ---------------------------------------------------------------- ledger and runtime input: size, BOM, names


def test_ledger_and_runtime_inputs_are_bounded_like_evals(tmp_path):
    from policy_engine.limits import MAX_INPUT_BYTES

    url = f"sqlite:///{tmp_path / 'l.db'}"
    assert run("ledger", "init", "--ledger", url).exit_code == 0
    big = tmp_path / "big.json"
    with open(big, "wb") as fh:  # read whole before, as /dev/zero would be: all the memory there is
        fh.write(b'{"trigger": "x", "pad": "' + b"a" * MAX_INPUT_BYTES + b'"}')
    res = run("ledger", "append", "--ledger", url, "stop", str(big))
    assert res.exit_code == 2 and res.output == f"error: body {big} is larger than {MAX_INPUT_BYTES} bytes\n"
    res = run("rt", "gate", "-p", str(ROOT / "policies"), "--ledger", url, "-i", str(big))
    assert res.exit_code == 2 and res.output == f"error: {big} is larger than {MAX_INPUT_BYTES} bytes\n"


def test_a_byte_order_mark_before_runtime_json_is_not_an_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    assert run("ledger", "init", "--ledger", url).exit_code == 0
    q = tmp_path / "q.json"
    q.write_bytes(b'\xef\xbb\xbf{"now": "2026-11-24T10:00:00Z"}')  # as a Windows editor saves it
    res = run("rt", "claims_in_doubt", "--ledger", url, "-i", str(q))
    assert res.exit_code == 0 and json.loads(res.output) == [], res.output


def test_an_argument_an_operation_does_not_take_is_named_with_those_it_takes(tmp_path):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    assert run("ledger", "init", "--ledger", url).exit_code == 0
    q = tmp_path / "q.json"
    q.write_text('{"rollback": "x", "duty": "d", "status": "completed", "colour": 1}', encoding="utf-8")
    res = run("rt", "step", "-p", str(ROOT / "policies"), "--ledger", url, "-i", str(q))
    assert res.exit_code == 2
    assert res.output == ("error: bad arguments: `step` takes no argument `colour`; it takes `rollback`, `duty`, "
                          "`status`, `key`, `now`, `detail`, `reporter`\n")  # (was the runtime's: Rollbacks.step())


def test_a_downstream_that_is_not_a_list_is_a_located_error_not_a_pass(work):
    # the engine noted an input error and classified the plan without the cascade: a case
    # that looked at the window only passed, its fixture wrong
    opened = "      recipient_opened: false\n"
    body = HEAD.replace(opened, opened + "      downstream: note\n") + (
        "    note: {type: log_crm_activity, executed_at: \"2026-11-24T09:59:31Z\"}\n"
        "cases:\n"
        "  - name: rb\n    rollback: {workflow: support-replies, scenario: reviewer_error, original: sent,"
        " requested_by: carol}\n    expect: {window: standard}\n"
        "  - name: rb again\n    rollback: {workflow: support-replies, scenario: reviewer_error, original: sent,"
        " requested_by: carol}\n    expect: {window: standard}\n")
    (work / "d.policy-test.yaml").write_text(body, encoding="utf-8")
    res = run("test", "d.policy-test.yaml")
    assert res.exit_code == 2, res.output
    assert res.output.count("error[T006]: `downstream` must be a list, not a string") == 1  # once, where written
    assert f"--> d.policy-test.yaml:{where(body, 'note' + chr(10))}" in res.output, res.output
    (work / "d.policy-test.yaml").write_text(body.replace("downstream: note", "downstream: [note]"), encoding="utf-8")
    assert run("test", "d.policy-test.yaml").exit_code == 0


def test_a_queue_of_a_route_no_scenario_names_says_so(tmp_path):
    """`stopline queue --route nope -p policies/` answered `queue empty (route nope)`: a
    misspelt route read as an empty queue."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'l.db'}"
    subprocess.run([sys.executable, "-m", "policy_engine.cli", "ledger", "init", "--ledger", url], check=True,
                   capture_output=True)

    def q(route):
        return subprocess.run([sys.executable, "-m", "policy_engine.cli", "queue", "--route", route, "-p",
                               str(ROOT / "policies"), "--ledger", url], capture_output=True, text=True)

    r = q("custmer_service")
    assert r.returncode == 0 and r.stdout.strip() == "queue empty (route custmer_service)"
    assert r.stderr.startswith("warning: no scenario of the policies routes to `custmer_service` (their routes: ")
    assert "customer_service" in r.stderr
    r = q("customer_service")
    assert r.returncode == 0 and r.stderr == ""
