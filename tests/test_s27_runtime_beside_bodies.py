"""Entries appended beside the runtime with bodies the runtime never writes do not stop it
(session 27). The runtime folds every entry another writer appends (`stopline ledger
append`, another program's `Ledger.append`) into its projections before it reads; the fold
read their bodies as the runtime writes them, so one `rollback` whose `plan` was a string,
or a `stop` whose trigger was an object, raised `AttributeError` (`stopline queue`,
`stopline history`, the gate, the server's start: "internal error") on every later call, for
good: the ledger never deletes the entry. `resume` raised `TypeError` on such a stop. Now each
value is taken only when it fits (shown as its JSON text, or left out), and a malformed
resume's `allowed` counts only when it is `true`."""

from __future__ import annotations

from ledger_fixtures import ledger_url, run_ledger_cli  # noqa: F401  (fixture)
from runtime_support import RECEIPT, WF, at, policy_path, send  # noqa: F401  (fixture)

from policy_engine import Runtime
from policy_engine.ledger import Ledger


def _odd_bodies(x: str, rb: str, dec: str) -> list[tuple[str, dict, list, str | None]]:
    return [
        ("rollback", {"plan_hash": "h", "scenario": {"a": 1}, "requested_by": ["x"], "reason": 5, "plan": "text",
                      "cascade": "abc", "route": {"r": 1}, "pending_until": 7, "requested_at": {"x": 1},
                      "original": 9}, [x], None),
        ("rollback", {"plan_hash": "h", "scenario": "s" * 300, "requested_by": "r" * 300, "reason": "x",
                      "plan": {"reversible_until": 5, "policy_hash": {"x": 1}}, "cascade": [1, {"a": 1}, "z" * 100]},
         [x], None),
        ("transition", {"subject": ["x"], "to": {"a": 1}}, [rb], None),
        ("transition", {"subject": rb, "to": "claimed", "principal": {"a": 1}}, [rb], None),
        ("transition", {"subject": dec, "to": "claimed", "claim": 1, "principal": ["a"], "at": 5}, [dec], None),
        ("approval", {"subject": rb, "digest": 5, "principal": {"a": 1}, "verdict": "approve",
                      "status_after": "x" * 40, "roles": "cs", "at": 5}, [rb], None),
        ("execution", {"receipt": "r", "authorized": True, "decision": {"a": 1}, "caused_by": ["x"],
                       "executed_at": 5}, [], WF),
        ("stop", {"trigger": {"a": 1}, "stopped_at": 5}, [], "wf2"),
        ("resume", {"evidence_digest": 1, "criteria": "x", "allowed": "yes", "resumed_at": []}, [x], "wf2"),
    ]


def test_odd_bodies_appended_beside_the_runtime_do_not_stop_it(ledger_url, policy_path):  # noqa: F811
    with Runtime.open(str(policy_path), ledger=ledger_url) as rt:
        g = rt.gate(send(50.0), now=at(0))
        x = rt.executed(g.decision_id, receipt=RECEIPT, now=at(1))
        p = rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita", reason="r",
                                now=at(2))
    with Ledger.open(ledger_url) as led:
        for kind, body, links, wf in _odd_bodies(x.execution_id, p.rollback_id, g.decision_id):
            led.append(kind, body, links=links, workflow=wf)
    with Runtime.open(str(policy_path), ledger=ledger_url) as rt:
        assert rt.gate(send(50.0, id="n"), now=at(10)).effect == "allow"
        # the stop of wf2 holds: a resume whose `allowed` is not `true` restarts nothing
        assert rt.workflow_status("wf2")["status"] == "stopped"
        assert rt.gate({"workflow": "wf2", "type": "send", "amount": 1.0}, now=at(10)).effect in ("stop", "deny")
        assert rt.queue(now=at(11))
        assert rt.authorization(p.rollback_id, now=at(11)).status == "pending"
        assert rt.history(x.execution_id)["execution"]["rollbacks"]
        assert rt.history(p.rollback_id)
        rt.claims_in_doubt(now=at(12))
        rt.expire(now=at(10**6))
        r = rt.resume("wf2", evidence={}, principal="ops", now=at(13))
        assert r.recorded and not r.allowed
        rt.rebuild()
    for args in (("queue",), ("history", x.execution_id)):
        from click.testing import CliRunner

        from policy_engine.cli import main

        res = CliRunner().invoke(main, [*args, "--ledger", ledger_url], catch_exceptions=False)
        assert res.exit_code == 0, (res.stdout, res.stderr)
        assert "internal error" not in res.stderr
    code, out, err = run_ledger_cli("verify", "--ledger", ledger_url)
    assert code == 0, (out, err)
