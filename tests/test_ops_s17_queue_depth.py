"""``stopline_queue_depth`` counts the open rollbacks of a route only: the queue also lists a
rollback the clock has expired (its standard reversal window passed before it was
authorized) until the sweeper records it (``status == "expired"``, ``unrecorded``), and
that one is not open. Scraped from a served app (``create_app``, in-process ASGI) on a
SQLite ledger; the rollbacks were recorded days apart (``now=`` in the past), never timed."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

pytest.importorskip("fastapi")
from server_support import SERVER_POLICY, bearer, server_policy_dir, write_identities  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from policy_engine import Runtime  # noqa: E402
from policy_engine.server import ServerConfig, create_app  # noqa: E402

RECEIPT = {"message": "hello", "ticket": "T-1"}


def _rollback(rt: Runtime, at: datetime, tag: str) -> str:
    g = rt.gate({"workflow": "replies", "type": "send", "amount": 50.0, "promise": False, "id": tag}, now=at)
    assert g.decision.effect == "allow"
    x = rt.executed(g.decision_id, receipt=RECEIPT, now=at)
    r = rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita", reason=tag,
                            now=at + timedelta(minutes=1))
    return r.rollback_id


def _depth(metrics: str) -> dict[str, float]:
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r'^stopline_queue_depth\{route="([^"]*)"\} (\S+)$', metrics, re.M)}


def test_queue_depth_counts_open_rollbacks_not_those_the_clock_expired(tmp_path):
    assert "within 1d" in SERVER_POLICY  # a day's reversal window
    policies = server_policy_dir(tmp_path)
    url = f"sqlite:///{tmp_path / 'l.db'}"
    now = datetime.now(UTC)
    with Runtime.open(str(policies), ledger=url) as rt:
        lapsed = _rollback(rt, now - timedelta(days=3), "old")  # window ended two days ago, unauthorized
        fresh = _rollback(rt, now - timedelta(minutes=5), "new")  # inside its window: pending
        closed = _rollback(rt, now - timedelta(minutes=4), "gone")
        assert rt.cancel(closed, principal="ops", now=now - timedelta(minutes=3)).recorded
    ids = str(write_identities(tmp_path / "ids.yaml"))
    app = create_app(ServerConfig(str(policies), ledger=url, identities=ids, reload_interval=0))
    with TestClient(app) as c:
        q = c.get("/v1/queue", params={"route": "customer_service"}, headers=bearer("ops")).json()["queue"]
        listed = {i["rollback_id"]: (i["status"], i["unrecorded"]) for i in q}
        assert listed == {lapsed: ("expired", True), fresh: ("pending", False)}, listed
        assert _depth(c.get("/metrics").text) == {"customer_service": 1.0}
        assert "one the clock has expired is not counted" in c.get("/metrics").text  # the rule, in the help
        # once the sweeper records the expiry the queue no longer lists it: the same depth
        assert [r.subject for r in app.state.runtime.expire()] == [lapsed]
        assert _depth(c.get("/metrics").text) == {"customer_service": 1.0}
        # and an approved one stays open
        assert c.post("/v1/approvals", json={"subject": fresh}, headers=bearer("casey")).json()["status"] == "approved"
        assert _depth(c.get("/metrics").text) == {"customer_service": 1.0}
