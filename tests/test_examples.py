"""Runs examples/engine_loop.py as a user would and checks the story it tells."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "engine_loop.py"


def run_example() -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLE)], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_engine_loop_runs_the_whole_story() -> None:
    proc = run_example()
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    steps = [
        "GATE send_customer_reply reply-1: allow (rule `routine_reply`)",
        "EXECUTED send_customer_reply reply-1; receipt recorded:",
        "GATE send_customer_reply reply-2: require_approval (rule `promise_needs_review`)",
        "HOLD in the approval queue: needs 1 reviewer",
        "partial via email.recall, within 60s",
        "APPROVED by bob (authorize_action: satisfied)",
        "reviewer_decision: approved by bob",
        "GATE send_customer_reply reply-3: deny (rule `blocked_recipient_domain`)",
        "STOP TRIGGER `unsupported_promise` fired",
        "workflow status -> stopped",
        "GATE send_customer_reply reply-4: stop (stopped `unsupported_promise`)",
        "ROLLBACK filed: scenario `reviewer_error` for reply-2",
        "route: verification queue; window: standard",
        "cascade step depth 1: crm-note-2 (log_crm_activity)",
        "APPROVAL by bob REFUSED",
        "APPROVAL by alice accepted: rollback AUTHORIZED",
        "REVERSED reply-2 via email.recall",
        "REVERSED crm-note-2 via crm.amend_activity_note",
        "GATE (compensation) send_correction correction-1: require_approval",
        "approval by bob does not count: `bob` holds none of the roles",
        "APPROVED by sam (authorize_action: satisfied)",
        "NOTIFIED customer, support_manager",
        "RESUME requested: BLOCKED, unmet: blocked_promises_configured",
        "RESUME requested: allowed",
        "workflow status -> running",
        "GATE send_customer_reply reply-5: allow",
        "DONE last action allow; mailbox: reply-2 recalled=True",
    ]
    pos = 0
    for step in steps:
        found = out.find(step, pos)
        assert found >= 0, f"missing (or out of order): {step!r}\n---\n{out}"
        pos = found
    # the receipt carries every field the decision asked for
    for field in ("final_message", "reviewer_decision", "policy_rule", "source_excerpts", "policy_hash"):
        assert f"    {field}: " in out


def test_engine_loop_is_deterministic() -> None:
    first, second = run_example(), run_example()
    assert first.returncode == second.returncode == 0
    assert first.stdout == second.stdout


def test_the_ten_minute_walkthrough_is_true(tmp_path):
    """examples/README.md's walkthrough, run for real: the outputs it shows are the outputs."""
    import re

    from click.testing import CliRunner

    from policy_engine.cli import main

    doc = (ROOT / "examples" / "README.md").read_text(encoding="utf-8")
    policy = re.search(r"`my_policies/discounts.policy`:\n\n```\n(.*?)```", doc, re.S).group(1)
    suite = re.search(r"```yaml\n(suite: discount codes.*?)```", doc, re.S).group(1)
    shown = dict(re.findall(r"\$ (stopline [^\n]*?)\s*(?:#[^\n]*)?\n(.*?)```", doc, re.S))
    d = tmp_path / "my_policies"
    d.mkdir()
    (d / "discounts.policy").write_text(policy)
    (d / "discounts.policy-test.yaml").write_text(suite)
    runner = CliRunner()

    def run(cmd):
        import os

        old = os.getcwd()
        os.chdir(tmp_path)
        try:
            return runner.invoke(main, cmd.split()[1:])
        finally:
            os.chdir(old)

    first = run("stopline check my_policies/")
    assert first.exit_code == 1 and first.output == shown["stopline check my_policies/"]
    (d / "discounts.policy").write_text(policy.replace("suport_manager", "support_manager"))
    strict = run("stopline check --strict my_policies/")
    assert strict.exit_code == 0 and strict.output == shown["stopline check --strict my_policies/"]
    assert run("stopline fmt --check my_policies/").exit_code == 1
    assert run("stopline fmt my_policies/").exit_code == 0
    tested = run("stopline test --coverage my_policies/")
    assert tested.exit_code == 0 and tested.output == shown["stopline test --coverage my_policies/"]
