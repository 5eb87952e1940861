"""Session 23: an execution's outcome in the record (``Runtime.executed(outcome=, error=)``).

Before, ``executed`` could only say an action ran; a run that failed was recorded as a
success (the adapters worked around it with a ``tool_error`` receipt field). Now a failed
run is recorded ``outcome: "failed"`` with its ``error`` in the execution's body (a
succeeded one is recorded as before: every existing entry and hash stays as it is), shown
by ``history`` and the native API, still rolled back like any other execution, and a keyed
retry with another outcome is a conflict. SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import RECEIPT, at, policy_path, rt, send  # noqa: F401  (fixtures)

from policy_engine.ledger import IdempotencyConflict
from policy_engine.runtime import RuntimeUsageError
from policy_engine.runtime.results import MAX_EXECUTION_ERROR

#: the body of a succeeded execution, as every version before `outcome` wrote it
BODY_KEYS = {"receipt", "authorized", "flags", "reasons", "missing_receipt", "decision", "caused_by", "type",
             "action_id", "executed_at", "policy_hash", "reviewer", "requester"}


def test_a_failed_execution_is_recorded_failed_with_its_error(rt):  # noqa: F811
    g = rt.gate(send(50.0), now=at(0))
    x = rt.executed(g.decision_id, receipt=RECEIPT, now=at(1), outcome="failed", error="SMTPError: 451 try later")
    assert (x.outcome, x.error) == ("failed", "SMTPError: 451 try later")
    body = rt.ledger.get(x.execution_id).body
    assert body["outcome"] == "failed" and body["error"] == "SMTPError: 451 try later"
    assert x.authorized and x.flags == ()  # (authorized alike: its decision permitted it)
    assert rt.authorization(g.decision_id).status == "executed"  # its decision is used: it ran
    assert x.to_json()["outcome"] == "failed" and x.to_json()["error"] == "SMTPError: 451 try later"
    # failed without saying with what
    g2 = rt.gate(send(60.0), now=at(2))
    x2 = rt.executed(g2.decision_id, receipt=RECEIPT, now=at(3), outcome="failed")
    assert (x2.outcome, x2.error) == ("failed", None)
    assert rt.ledger.get(x2.execution_id).body["outcome"] == "failed"
    assert "error" not in rt.ledger.get(x2.execution_id).body


def test_a_succeeded_execution_is_recorded_as_before(rt):  # noqa: F811
    g = rt.gate(send(50.0), now=at(0))
    for kw in ({}, {"outcome": "succeeded"}):
        x = rt.executed(g.decision_id if not kw else rt.gate(send(51.0), now=at(0)).decision_id,
                        receipt=RECEIPT, now=at(1), **kw)
        assert (x.outcome, x.error) == ("succeeded", None)
        assert set(rt.ledger.get(x.execution_id).body) == BODY_KEYS  # (no `outcome`: the body, the hash, of before)


@pytest.mark.parametrize("kw, match", [
    ({"outcome": "ok"}, "`outcome` is \"succeeded\" or \"failed\""),
    ({"outcome": None}, "`outcome` is"),
    ({"outcome": 1}, "`outcome` is"),
    ({"error": "boom"}, "with `outcome=\"failed\"` only"),
    ({"outcome": "succeeded", "error": "boom"}, "with `outcome=\"failed\"` only"),
    ({"outcome": "failed", "error": ""}, "non-empty"),
    ({"outcome": "failed", "error": "   "}, "non-empty"),
    ({"outcome": "failed", "error": 3}, "`error` is a string"),
    ({"outcome": "failed", "error": "\ud800"}, "`error` holds a lone surrogate"),
    ({"outcome": "failed", "error": "x" * (MAX_EXECUTION_ERROR + 1)}, f"at most {MAX_EXECUTION_ERROR} characters"),
])
def test_an_outcome_or_error_it_cannot_take_is_refused_before_anything_is_written(rt, kw, match):  # noqa: F811
    g = rt.gate(send(50.0), now=at(0))
    n = rt.ledger.size
    with pytest.raises(RuntimeUsageError, match=match):
        rt.executed(g.decision_id, receipt=RECEIPT, now=at(1), key="k", **kw)
    assert rt.ledger.size == n and rt.authorization(g.decision_id).status == "allowed"
    # the longest error is taken
    x = rt.executed(g.decision_id, receipt=RECEIPT, now=at(1), outcome="failed", error="e" * MAX_EXECUTION_ERROR)
    assert len(x.error) == MAX_EXECUTION_ERROR


def test_a_failed_run_is_not_flagged_receipt_incomplete_but_lists_what_it_lacks(rt):  # noqa: F811
    g = rt.gate(send(50.0), now=at(0))
    x = rt.executed(g.decision_id, receipt={"message": "hello"}, now=at(1), outcome="failed", error="E: boom")
    assert x.flags == () and x.missing_receipt == ("ticket",)  # (the ticket was never made: it failed)
    # a succeeded run lacking it is flagged, as before
    g2 = rt.gate(send(50.0), now=at(2))
    x2 = rt.executed(g2.decision_id, receipt={"message": "hello"}, now=at(3))
    assert x2.flags == ("receipt_incomplete",) and x2.missing_receipt == ("ticket",)
    # an unauthorized failed run is flagged unauthorized all the same
    x3 = rt.executed(g.decision_id, receipt=RECEIPT, now=at(4), outcome="failed", error="E: again")
    assert x3.flags == ("unauthorized",) and not x3.authorized


def test_a_keyed_retry_with_another_outcome_or_error_is_a_conflict(rt):  # noqa: F811
    g = rt.gate(send(50.0), now=at(0))
    x = rt.executed(g.decision_id, receipt=RECEIPT, now=at(1), key="run-1", outcome="failed", error="E: boom")
    again = rt.executed(g.decision_id, receipt=RECEIPT, now=at(2), key="run-1", outcome="failed", error="E: boom")
    assert again.execution_id == x.execution_id and again.outcome == "failed" and again.error == "E: boom"
    n = rt.ledger.size
    with pytest.raises(IdempotencyConflict, match="another outcome"):
        rt.executed(g.decision_id, receipt=RECEIPT, now=at(2), key="run-1")
    with pytest.raises(IdempotencyConflict, match="another error"):
        rt.executed(g.decision_id, receipt=RECEIPT, now=at(2), key="run-1", outcome="failed", error="E: other")
    with pytest.raises(IdempotencyConflict, match="another error"):
        rt.executed(g.decision_id, receipt=RECEIPT, now=at(2), key="run-1", outcome="failed")
    # a succeeded one retried as failed: another report, refused
    g2 = rt.gate(send(50.0), now=at(3))
    ok = rt.executed(g2.decision_id, receipt=RECEIPT, now=at(4), key="run-2")
    assert rt.executed(g2.decision_id, receipt=RECEIPT, now=at(5), key="run-2").execution_id == ok.execution_id
    with pytest.raises(IdempotencyConflict, match="another outcome"):
        rt.executed(g2.decision_id, receipt=RECEIPT, now=at(5), key="run-2", outcome="failed", error="E: late")
    assert rt.ledger.size == n + 2


def test_history_shows_the_outcome_of_every_execution(rt):  # noqa: F811
    g = rt.gate(send(50.0), now=at(0))
    x = rt.executed(g.decision_id, receipt=RECEIPT, now=at(1), outcome="failed", error="E: boom")
    h = rt.history(x.execution_id)
    assert h["execution"]["outcome"] == "failed" and h["execution"]["error"] == "E: boom"
    [v] = rt.history(g.decision_id)["executions"]
    assert (v["outcome"], v["error"]) == ("failed", "E: boom")
    g2 = rt.gate(send(50.0), now=at(2))
    x2 = rt.executed(g2.decision_id, receipt=RECEIPT, now=at(3))
    v2 = rt.history(x2.execution_id)["execution"]
    assert (v2["outcome"], v2["error"]) == ("succeeded", None)


def test_an_entry_of_before_with_the_adapters_tool_error_reads_failed(rt):  # noqa: F811
    # what session 22's adapters wrote for a tool that raised: the receipt's `tool_error`, no outcome
    g = rt.gate(send(50.0), now=at(0))
    x = rt.executed(g.decision_id, receipt={**RECEIPT, "tool_error": "RuntimeError: card declined"}, now=at(1))
    assert "outcome" not in rt.ledger.get(x.execution_id).body
    assert (x.outcome, x.error) == ("failed", "RuntimeError: card declined")
    v = rt.history(x.execution_id)["execution"]
    assert (v["outcome"], v["error"]) == ("failed", "RuntimeError: card declined")
    # (a retry of that report, as it was made, is answered with it: no conflict)
    g2 = rt.gate(send(50.0), now=at(2))
    old = {**RECEIPT, "tool_error": "E: x"}
    y = rt.executed(g2.decision_id, receipt=old, now=at(3), key="old-1")
    assert rt.executed(g2.decision_id, receipt=old, now=at(4), key="old-1").execution_id == y.execution_id


def test_a_failed_execution_is_rolled_back_and_reported_like_any_other(rt, ledger_url):  # noqa: F811
    from policy_engine.report.compute import compute_report

    g = rt.gate(send(50.0), now=at(0))
    x = rt.executed(g.decision_id, receipt=RECEIPT, now=at(1), outcome="failed", error="SMTPError: timeout")
    p = rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita",
                            reason="it may have gone out", now=at(10))
    assert p.rollback_id is not None and p.plan is not None and p.plan.original_id == x.execution_id
    assert p.plan.authorizable
    assert rt.approve(p.rollback_id, principal="casey", roles=["customer_service"], now=at(11)).counted
    for d in rt.authorization(p.rollback_id, now=at(12)).duties:  # (the original, its cascade, each compensation)
        last = rt.step(p.rollback_id, d, "completed", now=at(12))
    assert last.rollback_status == "completed"
    h = rt.history(x.execution_id)["execution"]
    assert h["outcome"] == "failed" and [r["status"] for r in h["rollbacks"]] == ["completed"]
    rep = compute_report(ledger_url, now=at(20))
    assert rep["totals"]["executions"] == 1 and rep["totals"]["rolled_back_executions"] == 1


# ------------------------------------------------------------------------------------ over HTTP
def test_over_http_an_execution_is_recorded_failed_and_its_views_say_so(tmp_path, ledger_url):  # noqa: F811
    pytest.importorskip("fastapi")
    from server_support import bearer, server_policy_dir, write_identities
    from starlette.testclient import TestClient

    from policy_engine.server import ServerConfig, create_app

    ids, pol = str(write_identities(tmp_path / "ids.yaml")), str(server_policy_dir(tmp_path))
    app = create_app(ServerConfig(pol, ledger=ledger_url, identities=ids, reload_interval=0))
    small = {"workflow": "replies", "type": "send", "amount": 10.0, "promise": False}
    receipt = {"message": "m", "ticket": "T"}
    with TestClient(app) as c:
        led = c.app.state.runtime.ledger
        spec = c.get("/openapi.json").json()["components"]["schemas"]["ExecutionBody"]["properties"]
        assert spec["outcome"]["enum"] == ["succeeded", "failed"] and spec["outcome"]["default"] == "succeeded"
        assert spec["error"]["anyOf"][0]["maxLength"] == MAX_EXECUTION_ERROR
        d = c.post("/v1/gate", json={"action": small}, headers=bearer("ops")).json()["decision_id"]
        n = led.size
        for bad, status in (({"outcome": "maybe"}, 422), ({"error": "E: boom"}, 422),
                            ({"outcome": "failed", "error": ""}, 422),
                            ({"outcome": "failed", "error": "x" * (MAX_EXECUTION_ERROR + 1)}, 422)):
            r = c.post("/v1/executions", json={"decision_id": d, "receipt": receipt, **bad}, headers=bearer("ops"))
            assert r.status_code == status, (bad, r.text)
        assert led.size == n
        r = c.post("/v1/executions", json={"decision_id": d, "receipt": receipt, "outcome": "failed",
                                           "error": "SMTPError: 451"}, headers=bearer("ops"))
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["outcome"] == "failed" and got["error"] == "SMTPError: 451" and got["authorized"] is True
        xid = got["execution_id"]
        assert led.get(xid).body["outcome"] == "failed"
        h = c.get(f"/v1/history/{xid}", headers=bearer("ops")).json()
        assert h["execution"]["outcome"] == "failed" and h["execution"]["error"] == "SMTPError: 451"
        [v] = c.get(f"/v1/history/{d}", headers=bearer("ops")).json()["executions"]
        assert v["outcome"] == "failed"
        d2 = c.post("/v1/gate", json={"action": small}, headers=bearer("ops")).json()["decision_id"]
        ok = c.post("/v1/executions", json={"decision_id": d2, "receipt": receipt}, headers=bearer("ops")).json()
        assert ok["outcome"] == "succeeded" and ok["error"] is None
        assert "outcome" not in led.get(ok["execution_id"]).body
