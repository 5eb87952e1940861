"""`stopline eval`, `stopline explain`, `stopline schema`; the five rollback scenarios end to end."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from engine_support import NOW, WF, at_root, load_engine, request

from policy_engine.cli import main

POL = "tests/engine_policies"


def run(*args, input=None):
    with at_root():
        return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def ask(question, cmd="eval"):
    return run(cmd, POL, "--input", "-", input=json.dumps(question))


def test_eval_gate_prints_decision_json():
    r = ask({"question": "gate", "now": NOW, "action": {"workflow": WF, "type": "send_customer_reply",
                                                        "amount": 120, "recipient": {"domain": "a.example"}}})
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["effect"] == "require_approval" and out["approvals"][0]["roles"] == ["reviewer"]


def test_eval_matches_python_api_bytes():
    q = {"question": "gate", "now": NOW, "action": {"workflow": WF, "type": "issue_refund", "amount": 900}}
    r = ask(q)
    api = load_engine().evaluate(q["action"], now=NOW).model_dump(mode="json")
    assert json.loads(r.output) == api


def test_eval_from_file(tmp_path):
    f = tmp_path / "q.json"
    f.write_text(json.dumps({"question": "resume", "workflow": WF, "stop": "unsupported_promise", "now": NOW,
                             "evidence": {"reviewer_screen": {"shows_claim_source": True},
                                          "blocked_promises": ["p1"]}}))
    r = run("eval", POL, "--input", str(f))
    assert r.exit_code == 0 and json.loads(r.output)["allowed"] is True


def test_explain_prints_a_trace():
    r = ask({"question": "gate", "now": NOW, "action": {"workflow": WF, "type": "send_customer_reply"}}, "explain")
    assert r.exit_code == 0
    assert "result: DENY" in r.output and "[!]" in r.output and "counts as matched" in r.output


@pytest.mark.parametrize("payload,needle", [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "`question`"),
    ('{"question": "gate"}', "needs `action`"),
    ('{"question": "rollback", "request": {}, "bogus": 1}', "unknown field"),
    ('{"question": "authorize", "approvals": []}', "exactly one of"),
    ('{"question": "fly"}', "must be one of"),
])
def test_eval_bad_input_exits_2(payload, needle):
    r = run("eval", POL, "--input", "-", input=payload)
    assert r.exit_code == 2 and needle in r.output and "Traceback" not in r.output


def test_eval_missing_input_file_exits_2():
    r = run("eval", POL, "--input", "/nonexistent/q.json")
    assert r.exit_code == 2 and "cannot read input" in r.output


def test_eval_bad_policy_exits_2_with_diagnostics(tmp_path):
    (tmp_path / "bad.policy").write_text('workflow "w" {\n  default allow\n}\n')
    r = CliRunner().invoke(main, ["eval", str(tmp_path), "--input", "-"], input='{"question": "gate", "action": {}}')
    assert r.exit_code == 2 and "error[E107]" in r.output and "Traceback" not in r.output


def test_schema_all_and_one():
    r = run("schema")
    assert r.exit_code == 0
    data = json.loads(r.output)
    assert {"Action", "RollbackRequest", "Approval", "GateQuestion"} <= set(data["inputs"])
    assert set(data["outputs"]) == {"Decision", "RollbackPlan", "AuthorizationVerdict", "ResumeDecision"}
    r = run("schema", "Decision")
    assert r.exit_code == 0 and "effect" in json.loads(r.output)["properties"]
    r = run("schema", "Decison")
    assert r.exit_code == 2 and "did you mean `Decision`" in r.output


# ------------------------------------------------------------------ the five scenarios, end to end

SCENARIOS = {
    # scenario: (approvals that satisfy it [(principal, roles)], route, one approval that never counts)
    "reviewer_error": ([("sam", ["reviewer"])], "verification", ("rita", ["reviewer"])),
    "customer_request": ([("cara", ["customer_service"])], "customer_service", ("rita", ["customer_service"])),
    "incident": ([("ivan", ["incident_commander"]), ("lee", ["legal"])], "incident_response",
                 ("ivan", ["legal"])),
    "policy_reversal": ([("pat", ["policy_owner"])], "policy_owner", ("rita", ["policy_owner"])),
    "regulatory_order": ([("lee", ["legal"]), ("eve", ["executive"])], "legal", ("lee", ["executive"])),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_scenario_end_to_end_python_api(scenario):
    engine = load_engine()
    good, route, never = SCENARIOS[scenario]
    plan = engine.classify_rollback(request(scenario), now=NOW)
    assert plan.scenario_declared and plan.standard_scenario and plan.authorizable and plan.route == route
    assert plan.feasibility.status == "feasible"
    approvals = [{"principal": p, "roles": r, "plan_hash": plan.plan_hash, "at": NOW} for p, r in good]
    assert engine.authorize_rollback(plan, approvals, now=NOW).satisfied
    # removing one approval opens a slot; an approval that never counts does not close it
    short = approvals[:-1] + [{"principal": never[0], "roles": never[1], "plan_hash": plan.plan_hash}]
    v = engine.authorize_rollback(plan, short, now=NOW)
    assert not v.satisfied and v.open_slots


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_scenario_end_to_end_cli(scenario):
    good, route, _ = SCENARIOS[scenario]
    r = ask({"question": "rollback", "now": NOW, "request": request(scenario)})
    assert r.exit_code == 0, r.output
    plan = json.loads(r.output)
    assert plan["route"] == route and plan["authorizable"]
    approvals = [{"principal": p, "roles": rl, "plan_hash": plan["plan_hash"]} for p, rl in good]
    r = ask({"question": "authorize", "now": NOW, "plan": plan, "approvals": approvals})
    assert r.exit_code == 0 and json.loads(r.output)["satisfied"] is True
    # the same, classifying from the request inside the authorize question
    r = ask({"question": "authorize", "now": NOW, "request": request(scenario), "approvals": approvals})
    assert json.loads(r.output)["satisfied"] is True
    r = ask({"question": "authorize", "now": NOW, "request": request(scenario), "approvals": approvals[:-1]})
    assert json.loads(r.output)["satisfied"] is False
    r = ask({"question": "rollback", "now": NOW, "request": request(scenario)}, "explain")
    assert r.exit_code == 0 and f"scenario: `{scenario}` (standard)" in r.output


def test_internal_errors_are_one_line_not_a_traceback(monkeypatch, tmp_path):
    """A bug inside a command is reported in one line with exit 2; STOPLINE_DEBUG shows it."""
    import subprocess
    import sys

    code = ("import policy_engine.language.loader as l, sys\n"
            "def boom(*a, **k): raise RuntimeError('kaboom')\n"
            "l.load_paths = boom\n"
            "from policy_engine.cli import main\n"
            "sys.argv = ['stopline', 'check', '.']\n"
            "main()\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 2
    assert "internal error: RuntimeError: kaboom" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={**__import__("os").environ, "STOPLINE_DEBUG": "1"})
    assert "Traceback" in res.stderr
