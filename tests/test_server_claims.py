"""Claims in doubt over HTTP: `GET /v1/claims` (`older_than` seconds, `limit`), `POST
/v1/decisions/{id}/abandon` as the caller, and the gauges `stopline_claims_in_doubt` and
`stopline_claim_oldest_seconds`. A server started on a ledger made before `rt_claims`
fills it from the log (a projection table made empty beside a log that holds its entries
read as no claims at all). SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
from ledger_fixtures import ledger_url  # noqa: E402,F401  (fixture)
from server_support import bearer, server_policy_dir, write_identities  # noqa: E402
from sqlalchemy import text  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from policy_engine import Runtime  # noqa: E402
from policy_engine.server import ServerConfig, create_app  # noqa: E402

SMALL = {"workflow": "replies", "type": "send", "amount": 10.0, "promise": False}


def _app(tmp_path, ledger_url, policies=None):  # noqa: F811
    ids = str(write_identities(tmp_path / "ids.yaml"))
    return create_app(ServerConfig(str(policies or server_policy_dir(tmp_path)), ledger=ledger_url, identities=ids,
                                   reload_interval=0))


def _gauge(metrics: str, name: str) -> float:
    return next(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(name + " "))


def test_claims_are_listed_abandoned_and_counted(tmp_path, ledger_url):  # noqa: F811
    with TestClient(_app(tmp_path, ledger_url)) as c:
        g = c.post("/v1/gate", json={"action": SMALL}, headers=bearer("ops")).json()
        cl = c.post(f"/v1/decisions/{g['decision_id']}/claim", json={}, headers=bearer("ops")).json()
        assert cl["recorded"] is True
        got = c.get("/v1/claims", headers=bearer("ops")).json()["claims"]
        assert [(x["decision_id"], x["claimed_by"], x["turns"]) for x in got] == [(g["decision_id"], "ops", 1)]
        assert c.get("/v1/claims?older_than=3600", headers=bearer("ops")).json()["claims"] == []
        assert c.get("/v1/claims?older_than=-1", headers=bearer("ops")).status_code == 422
        m = c.get("/metrics").text
        assert _gauge(m, "stopline_claims_in_doubt") == 1.0 and _gauge(m, "stopline_claim_oldest_seconds") >= 0
        # no reason: refused, nothing recorded
        r = c.post(f"/v1/decisions/{g['decision_id']}/abandon", json={}, headers=bearer("casey"))
        assert r.status_code in (400, 422), r.text
        r = c.post(f"/v1/decisions/{g['decision_id']}/abandon", json={"reason": "the worker died before the call"},
                   headers=bearer("casey"))
        assert r.status_code == 200, r.text
        assert (r.json()["recorded"], r.json()["status"]) == (True, "cancelled")
        led = c.app.state.runtime.ledger
        entry = led.get(r.json()["transition_id"])
        assert entry.body["principal"] == "casey"  # the caller, from the credential
        assert c.get("/v1/claims", headers=bearer("ops")).json()["claims"] == []
        assert _gauge(c.get("/metrics").text, "stopline_claims_in_doubt") == 0.0
        assert c.get(f"/v1/subjects/{g['decision_id']}", headers=bearer("ops")).json()["status"] == "cancelled"


def test_a_server_on_a_ledger_made_before_the_claims_table_fills_it_from_the_log(tmp_path, ledger_url):  # noqa: F811
    pol = server_policy_dir(tmp_path)
    with Runtime.open(str(pol), ledger=ledger_url) as rt:
        g = rt.gate(SMALL)
        assert rt.claim_execution(g.decision_id, principal="worker").recorded
        rt.ledger.transact(lambda c: [c.execute(text("DROP TABLE rt_claims")), []][1])
    with TestClient(_app(tmp_path, ledger_url, pol)) as c:
        got = c.get("/v1/claims", headers=bearer("ops")).json()["claims"]
        assert [x["decision_id"] for x in got] == [g.decision_id]
