"""Session 22: what `stopline explain` prints for a rollback cascade.

A cascade's steps are kept breadth-first in the plan; printed in that order with
indentation by depth, a record sat under whichever step happened to precede it (here the
tier upgrade under the second, unrelated points award) instead of the record that caused it.
A condition written over several lines of the policy showed `\\x0a` and the policy's
indentation in its middle. Each test here failed before its fix.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from policy_engine.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _question(scenario: str, requested_by: str) -> dict[str, object]:
    """The refunds cascade of policies/refunds.policy-test.yaml, with a second points
    award (spent, so blocked) beside the first: two depth-1 steps, a depth-2 step under the first."""
    benefits = {"id": "benefits_record", "type": "reevaluate_benefits", "executed_at": "2026-11-10T09:00:03Z"}
    tier = {
        "id": "tier_record",
        "type": "upgrade_tier",
        "executed_at": "2026-11-10T09:00:02Z",
        "downstream": [benefits],
    }
    return {
        "question": "rollback",
        "now": "2026-11-24T10:00:00Z",
        "request": {
            "workflow": "refunds",
            "scenario": scenario,
            "requested_by": requested_by,
            "original": {
                "id": "refund_record",
                "type": "issue_refund",
                "executed_at": "2026-11-10T09:00:00Z",
                "reviewer": "bob",
                "requester": "carol",
                "amount": 180.0,
                "customer": {"account_status": "open"},
                "chargeback_opened": False,
                "downstream": [
                    {
                        "id": "points_record",
                        "type": "award_loyalty_points",
                        "points_spent": 0,
                        "executed_at": "2026-11-10T09:00:01Z",
                        "downstream": [tier],
                    },
                    {
                        "id": "points2",
                        "type": "award_loyalty_points",
                        "points_spent": 5,
                        "executed_at": "2026-11-10T09:00:01Z",
                    },
                ],
            },
        },
    }


def _explain(tmp_path: Path, question: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> str:
    q = tmp_path / "q.json"
    q.write_text(json.dumps(question), encoding="utf-8")
    # (from the checkout, by the relative path: the plan's hash covers its locations, which
    # name the policy files as given, so an absolute path would pin the checkout's place)
    monkeypatch.chdir(ROOT)
    res = CliRunner().invoke(main, ["explain", "policies/", "--input", str(q), "--no-color"])
    assert res.exit_code == 0, res.output
    return res.output


def _step_lines(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("cascade ("))
    out = []
    for line in lines[start + 1 :]:
        if not line.lstrip().startswith("- ["):
            break
        out.append(line)
    return out


@pytest.mark.parametrize(("scenario", "who"), [("customer_request", "carol"), ("incident", "ingrid")])
def test_cascade_step_sits_under_the_record_that_caused_it(tmp_path, monkeypatch, snapshot, scenario, who):
    text = _explain(tmp_path, _question(scenario, who), monkeypatch)
    steps = _step_lines(text)
    ids = [line.split("] ", 1)[1].split(" ", 1)[0] for line in steps]
    indent = {i: len(line) - len(line.lstrip()) for i, line in zip(ids, steps, strict=True)}
    # the tier upgrade follows the points award that caused it, one level deeper; the
    # blocked second award (no children) comes after that branch, at the first award's level
    assert ids.index("tier_record") == ids.index("points_record") + 1
    assert indent["tier_record"] == indent["points_record"] + 2 == indent["refund_record"] + 4
    assert indent["points2"] == indent["points_record"]
    if scenario == "incident":  # depth 3 authorized: benefits is a step, under the tier upgrade
        assert ids == ["refund_record", "points_record", "tier_record", "benefits_record", "points2"]
        assert indent["benefits_record"] == indent["tier_record"] + 2
    assert text == snapshot


# a condition written over two lines of the policy was shown with `\x0a` and the policy's
# indentation in its middle (the trace escapes control characters before it joined the lines)
MULTILINE = {
    "support_replies.policy": (
        "`action.confidence < policy.auto_send_min_confidence`",
        "`action.confidence\n        < policy.auto_send_min_confidence`",
    ),
    "access_credentials.policy": (
        "`!has(original.credential_exposed) || original.credential_exposed`",
        "`!has(original.credential_exposed)\n        ||\toriginal.credential_exposed`",
    ),
}
ACCESS_INCIDENT = {
    "question": "rollback",
    "now": "2026-11-24T10:00:00Z",
    "request": {
        "workflow": "access-credentials",
        "scenario": "incident",
        "requested_by": "ingrid",
        "original": {
            "id": "granted_role",
            "type": "grant_app_role",
            "executed_at": "2026-11-24T08:00:00Z",
            "reviewer": "bob",
            "requester": "jo",
            "subject": {"user_id": "u-77", "deprovisioned": False},
            "role": "admin",
        },
    },
}


@pytest.mark.parametrize("question", ["gate", "rollback"])
def test_a_condition_over_several_lines_reads_as_one_line(tmp_path, monkeypatch, snapshot, question):
    pol = tmp_path / "policies"
    pol.mkdir()
    for f in (ROOT / "policies").glob("*.policy"):
        text = f.read_text(encoding="utf-8")
        if f.name in MULTILINE:
            old, new = MULTILINE[f.name]
            assert text.count(old) == 1
            text = text.replace(old, new)
        (pol / f.name).write_text(text, encoding="utf-8")
    q = tmp_path / "q.json"
    if question == "gate":
        q.write_text((ROOT / "examples" / "questions" / "gate.json").read_text(encoding="utf-8"), encoding="utf-8")
    else:
        q.write_text(json.dumps(ACCESS_INCIDENT), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["explain", "policies/", "--input", "q.json", "--no-color"])
    assert res.exit_code == 0, res.output
    assert "\\x0a" not in res.output and "\\x09" not in res.output
    if question == "gate":
        assert "        `action.confidence < policy.auto_send_min_confidence`\n" in res.output
    else:
        assert "        `!has(original.credential_exposed) || original.credential_exposed`\n" in res.output
    assert res.output == snapshot
