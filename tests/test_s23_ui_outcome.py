"""Session 23: the reviewer's page says when the execution under review ran and failed.

``Runtime.executed(outcome="failed", error=...)`` (and ``POST /v1/executions``) records a run
that failed in the execution itself; a reviewer deciding a rollback of it, or looking at the
gate decision it ran under, reads "it ran and failed: <error>" (its error escaped as every
name on the page is), and a run that succeeded says nothing of the kind. SQLite and PostgreSQL.
"""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
from ledger_fixtures import ledger_url  # noqa: E402,F401  (SQLite and PostgreSQL)
from server_support import bearer  # noqa: E402
from test_audit_s19_ui import app, by_id, policy_dir, send, sign_in  # noqa: E402,F401  (fixtures)


def _executed(c, n: int, **outcome) -> tuple[str, str]:
    """A gate, its execution (``outcome`` as reported) and a rollback of it: (decision, plan)."""
    g = c.post("/v1/gate", json={"action": send(10 + n, id=f"m{n}")}, headers=bearer("ops")).json()
    x = c.post("/v1/executions", json={"decision_id": g["decision_id"], "receipt": {"message": "hi", "ticket": n},
                                       **outcome}, headers=bearer("ops"))
    assert x.status_code == 200, x.text
    r = c.post("/v1/rollbacks", json={"execution_id": x.json()["execution_id"], "scenario": "customer_request",
                                      "reason": f"r{n}"}, headers=bearer("rita"))
    assert r.status_code == 200, r.text
    return g["decision_id"], r.json()["rollback_id"]


def test_a_failed_run_is_said_on_its_plan_and_its_gate(app):  # noqa: F811
    c = app
    d, rb = _executed(c, 1, outcome="failed", error="SMTPError: 451 try later\u202e")
    sign_in(c, "casey")
    assert by_id(c.get(f"/ui/plans/{rb}").text, "outcome") == "it ran and failed: SMTPError: 451 try later\\u202e"
    assert "failed: SMTPError: 451 try later\\u202e" in c.get(f"/ui/decisions/{d}").text


def test_a_run_that_succeeded_says_nothing_of_failing(app):  # noqa: F811
    c = app
    d, rb = _executed(c, 2)
    sign_in(c, "casey")
    assert by_id(c.get(f"/ui/plans/{rb}").text, "outcome") is None
    assert "failed:" not in c.get(f"/ui/decisions/{d}").text
