"""`stopline queue`, `stopline history` and `stopline rt OP` (JSON in, JSON out)."""

from __future__ import annotations

import json

from click.testing import CliRunner
from runtime_support import write_policy

from policy_engine.cli import main


def _rt(runner, args, payload, url, pol):
    r = runner.invoke(main, ["rt", *args, "-p", str(pol), "--ledger", url, "-i", "-"], input=json.dumps(payload))
    return r


def test_the_whole_lifecycle_from_the_shell(tmp_path):
    pol = write_policy(tmp_path)
    url = f"sqlite:///{tmp_path / 'l.db'}"
    runner = CliRunner()
    assert runner.invoke(main, ["ledger", "init", "--ledger", url]).exit_code == 0
    now = "2026-11-26T12:00:00Z"
    g = _rt(runner, ["gate"], {"action": {"workflow": "replies", "type": "send", "amount": 500.0, "promise": False},
                               "now": now}, url, pol)
    assert g.exit_code == 0, g.output
    d = json.loads(g.output)
    assert d["decision"]["effect"] == "require_approval"
    a = json.loads(_rt(runner, ["approve"], {"subject": d["decision_id"], "principal": "sam", "roles": ["reviewer"],
                                             "now": now}, url, pol).output)
    assert a["status"] == "approved"
    c = json.loads(_rt(runner, ["claim_execution"], {"decision": d["decision_id"], "principal": "worker-1",
                                                     "now": now}, url, pol).output)
    assert (c["recorded"], c["claimed_by"]) == (True, "worker-1")
    c2 = json.loads(_rt(runner, ["claim_execution"], {"decision": d["decision_id"], "principal": "worker-2",
                                                      "now": now}, url, pol).output)
    assert (c2["recorded"], c2["claimed_by"]) == (False, "worker-1")
    x = json.loads(_rt(runner, ["executed"], {"decision": d["decision_id"], "receipt": {"message": "m"},
                                              "now": now}, url, pol).output)
    assert x["authorized"] and x["missing_receipt"] == ["ticket"]
    p = json.loads(_rt(runner, ["request_rollback"], {"execution": x["execution_id"], "scenario": "customer_request",
                                                      "requested_by": "rita", "reason": "r", "now": now},
                       url, pol).output)
    assert p["status"] == "pending" and p["plan"]["plan_hash"]
    q = runner.invoke(main, ["queue", "--route", "customer_service", "--ledger", url, "--now", now])
    assert q.exit_code == 0 and p["rollback_id"] in q.output and "customer_request" in q.output
    qj = json.loads(runner.invoke(main, ["queue", "--format", "json", "--ledger", url]).output)
    assert [i["rollback_id"] for i in qj["queue"]] == [p["rollback_id"]]
    s = json.loads(_rt(runner, ["step"], {"rollback": p["rollback_id"], "duty": "notify:customer",
                                          "status": "completed", "key": "n1", "now": now}, url, pol).output)
    assert s["recorded"] and s["authorized"] is False  # not approved yet: recorded, flagged
    h = runner.invoke(main, ["history", x["execution_id"], "--ledger", url])
    assert h.exit_code == 0 and json.loads(h.output)["execution"]["rollbacks"][0]["entry"]["id"] == p["rollback_id"]
    # expiry by the sweeper needs the policies; with them it records `expired`
    assert runner.invoke(main, ["queue", "--expire", "--ledger", url]).exit_code == 2
    e = runner.invoke(main, ["queue", "--expire", "-p", str(pol), "--ledger", url, "--now", "2026-12-26T00:00:00Z",
                             "--format", "json"])
    # the decision was executed; the rollback was never approved (its one step was unauthorized and
    # started nothing), so it expires at its deadline
    assert e.exit_code == 0 and json.loads(e.output)["expired"] == [p["rollback_id"]]
    assert runner.invoke(main, ["ledger", "verify", "--ledger", url]).exit_code == 0


def test_errors_are_one_line_and_exit_2(tmp_path):
    pol = write_policy(tmp_path)
    url = f"sqlite:///{tmp_path / 'l.db'}"
    runner = CliRunner()
    runner.invoke(main, ["ledger", "init", "--ledger", url])
    for args, payload, msg in [
        (["approve"], {"subject": "nope", "principal": "sam"}, "no entry `nope`"),
        (["step"], {"rollback": "x"}, "`step` needs `duty`, `status`"),
        (["approve"], {"subject": "x", "principal": "sam", "colour": 1}, "bad arguments"),
    ]:
        r = _rt(runner, args, payload, url, pol)
        assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output
    r = runner.invoke(main, ["rt", "gate", "-p", str(pol), "--ledger", url, "-i", "-"], input="{not json")
    assert r.exit_code == 2 and "-:1:2: not JSON" in r.output
    r = runner.invoke(main, ["history", "x", "--ledger", f"sqlite:///{tmp_path / 'missing.db'}"])
    assert r.exit_code == 2 and "no ledger" in r.output


def test_arguments_of_the_wrong_type_are_one_line_errors_naming_them(tmp_path):
    pol = write_policy(tmp_path)
    url = f"sqlite:///{tmp_path / 'l.db'}"
    runner = CliRunner()
    runner.invoke(main, ["ledger", "init", "--ledger", url])
    g = json.loads(_rt(runner, ["gate"], {"action": {"workflow": "replies", "type": "send", "amount": 500.0}},
                       url, pol).output)
    size = len(runner.invoke(main, ["ledger", "verify", "--ledger", url]).output)
    for args, payload, msg in [
        (["approve"], {"subject": g["decision_id"], "principal": "sam", "roles": ["reviewer"], "expires_in": "1h"},
         '`expires_in` is a number of seconds, not "1h"'),
        (["approve"], {"subject": g["decision_id"], "principal": "sam", "roles": "reviewer"},
         "`roles` is a list of role names"),
        (["approve"], {"subject": g["decision_id"], "principal": "sam", "roles": 5}, "`roles` is a list of role names"),
        (["queue"], {"limit": "ten"}, "`limit` is a number of rollbacks"),
        (["queue"], {"limit": -1}, "`limit` is a number of rollbacks"),
    ]:
        r = _rt(runner, args, payload, url, pol)
        assert r.exit_code == 2 and msg in r.output and "internal error" not in r.output, r.output
    assert len(runner.invoke(main, ["ledger", "verify", "--ledger", url]).output) == size  # nothing recorded
    r = runner.invoke(main, ["rollback", "--select", "true", "--scenario", "customer_request", "--requested-by", "r",
                             "--reason", "x", "-p", str(pol), "--ledger", url, "--since", "yesterday"])
    assert r.exit_code == 2 and "`since` is not an RFC 3339 time" in r.output
