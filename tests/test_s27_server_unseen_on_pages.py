"""Session 27: every text a reviewer reads on the pages shows a character no one sees as its
escape, not only names, reasons and action fields.

docs/server.md ("Held gates: who asked"): "A character no one sees, a control character, a
bidirectional override (`agent-7<U+202E>txen` reads as `agent-7next`), a zero-width space, is
shown as its JSON escape". The pages did so for names, reasons and the action's field table,
but printed these as they were recorded, with a right-to-left override intact:

- a gate decision page's heading (the action's type and workflow: any text a gate caller sends,
  recorded and denied when undeclared);
- a plan's trigger (``POST /v1/rollbacks`` takes any text), scenario, workflow, the execution's
  reasons and the cascade's types and reasons;
- a batch's **select** (the CEL condition that chose the plans a reviewer approves at once) and
  trigger, its plans' types and workflows;
- the queue's scenarios and workflows, and the signed-in reviewer's roles (an identities file
  may hold control characters in a role).

A select such as ``original.type == "send" || "<U+202E>x" == ""`` reads on the page, reordered by
the browser, as a condition other than the one that chose the plans: the reviewer approves
what they did not read. Starlette's test client, SQLite.
"""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("fastapi")
from server_support import SERVER_POLICY, TOKENS, bearer, write_identities  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from policy_engine.server import ServerConfig, create_app  # noqa: E402
from policy_engine.server.identity import hash_token  # noqa: E402

RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: what follows is shown reversed
BELL = "\x07"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def client(tmp_path):
    pol = tmp_path / "policies"
    pol.mkdir()
    (pol / "replies.policy").write_text(SERVER_POLICY, encoding="utf-8")
    roles = ", ".join(json.dumps(r) for r in ("customer_service", "aud" + BELL + "itor"))  # (a control character)
    odd = f"  - principal: vera\n    roles: [{roles}]\n    sha256: {hash_token('tok-vera')}\n"
    ids = write_identities(tmp_path / "ids.yaml", odd)
    ids.chmod(0o600)
    cfg = ServerConfig(str(pol), ledger=f"sqlite:///{tmp_path}/ledger.db", identities=str(ids), reload_interval=0)
    with TestClient(create_app(cfg)) as c:
        yield c


def _sign_in(c: TestClient, token: str) -> None:
    form = c.get("/ui/login")
    r = c.post("/ui/login", data={"token": token, "csrf": _CSRF.search(form.text).group(1)}, follow_redirects=False)
    assert r.status_code == 303, r.text[:300]


def _executed(c: TestClient, **extra) -> str:
    action = {"workflow": "replies", "type": "send", "amount": 5, "promise": False, **extra}
    g = c.post("/v1/gate", json={"action": action}, headers=bearer("casey")).json()
    x = c.post("/v1/executions", json={"decision_id": g["decision_id"], "receipt": {"message": "m", "ticket": "t"}},
               headers=bearer("casey"))
    assert x.status_code == 200, x.text
    return x.json()["execution_id"]


def _unseen(html: str) -> list[str]:
    """Each place a page holds a bidi override or a control character as itself (with context)."""
    return [repr(m.group()) for m in re.finditer(f".{{0,50}}[{RLO}\x00-\x08\x0b\x0c\x0e-\x1f].{{0,20}}", html)]


def test_a_gate_page_heading_shows_an_odd_action_type_escaped(client):
    g = client.post("/v1/gate", json={"action": {"workflow": "replies", "type": "send" + RLO + "eteled"}},
                    headers=bearer("casey"))
    assert g.status_code == 200 and g.json()["decision"]["effect"] == "deny"  # (undeclared: denied, recorded)
    _sign_in(client, TOKENS["rita"][0])
    page = client.get(f"/ui/decisions/{g.json()['decision_id']}")
    assert page.status_code == 200
    assert _unseen(page.text) == []
    assert "send\\u202eeteled" in page.text


def test_a_plan_shows_its_trigger_escaped(client):
    rb = client.post("/v1/rollbacks", json={"execution_id": _executed(client), "scenario": "customer_request",
                                            "reason": "r", "trigger": "bad" + RLO + "esimorp_"},
                     headers=bearer("casey"))
    assert rb.status_code == 200 and rb.json()["rollback_id"], rb.text
    _sign_in(client, TOKENS["rita"][0])
    page = client.get(f"/ui/plans/{rb.json()['rollback_id']}")
    assert page.status_code == 200
    assert _unseen(page.text) == []
    assert "bad\\u202eesimorp_" in page.text


def test_a_batch_shows_its_select_and_trigger_as_they_are(client):
    for run in ("run-7", "run-8"):
        _executed(client, run=run)
    select = 'original.type == "send" || "' + RLO + 'x" == ""'  # (every send, whatever it reads as)
    b = client.post("/v1/rollbacks/batches", json={"select": select, "scenario": "customer_request", "reason": "r",
                                                   "trigger": "t" + RLO + "x"}, headers=bearer("casey"))
    assert b.status_code == 200 and b.json()["batch_id"], b.text
    assert len(b.json()["rollbacks"]) == 2
    _sign_in(client, TOKENS["rita"][0])
    page = client.get(f"/ui/batches/{b.json()['batch_id']}")
    assert page.status_code == 200
    assert _unseen(page.text) == []
    assert "\\u202ex" in page.text
    assert _unseen(client.get("/ui").text) == []


def test_the_signed_in_reviewers_roles_are_shown_escaped(client):
    rb = client.post("/v1/rollbacks", json={"execution_id": _executed(client), "scenario": "customer_request",
                                            "reason": "r"}, headers=bearer("casey"))
    _sign_in(client, "tok-vera")
    for path in ("/ui", f"/ui/plans/{rb.json()['rollback_id']}"):
        page = client.get(path)
        assert page.status_code == 200
        assert _unseen(page.text) == [], path
        assert "aud\\u0007itor" in page.text
