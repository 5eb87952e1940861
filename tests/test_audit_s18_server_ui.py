"""Audit of the reviewer's page (session 18): what it shows must be what the ledger says.

- The queue's counts cover every open plan, and the page says when it lists fewer than
  there are (it lists the oldest 1000): a route with 1001 open plans read "1000 open plans".
- A plan whose original execution was recorded without a decision (flagged unauthorized)
  shows the action that ran, not ``null``, and its flag.
- A plan shows who claimed it and that its window has passed.
- The plan form decides rollback plans only: a gate decision's id posted to it is refused
  and nothing is recorded (it used to approve the decision, which the page never shows).
- A message on a page (``?msg=``) is shown only when this server put it in the redirect
  for this session: a link made elsewhere cannot show a reviewer words the server never
  said ("verified by the incident commander: approve").

Over HTTP (Starlette's test client) on SQLite; in headless Chromium (as
tests/test_server_ui.py) the plan page of a claimed, unauthorized original.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html import unescape
from urllib.parse import quote

import pytest

pytest.importorskip("fastapi")
from server_support import TOKENS, bearer, serve, server_policy_dir, write_identities  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402
from test_server_ui import _sign_in, browser  # noqa: E402,F401  (the browser fixture)

from policy_engine.server import ServerConfig, create_app  # noqa: E402


def send(amount: float, **extra) -> dict:
    return {"workflow": "replies", "type": "send", "amount": amount, "promise": False, **extra}


@pytest.fixture
def app(tmp_path):
    ids = str(write_identities(tmp_path / "ids.yaml"))
    with TestClient(create_app(ServerConfig(str(server_policy_dir(tmp_path)),
                                            ledger=f"sqlite:///{tmp_path / 'l.db'}?durability=normal",
                                            identities=ids, reload_interval=0))) as c:
        yield c


def sign_in(c: TestClient, who: str) -> None:
    c.cookies.clear()
    form = c.get("/ui/login").text
    r = c.post("/ui/login", data={"token": TOKENS[who][0], "csrf": csrf_of(form)}, follow_redirects=False)
    assert r.status_code == 303 and "stopline_session" in c.cookies


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)


def text(html: str) -> str:
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))


def by_id(html: str, ident: str) -> str | None:
    m = re.search(rf'id="{ident}"[^>]*>(.*?)</(?:td|pre|p|section)>', html, re.S)
    return None if m is None else text(m.group(1)).strip()


def plan_of(c: TestClient, n: int, who: str = "rita") -> str:
    g = c.post("/v1/gate", json={"action": send(10 + n % 80, id=f"m{n}")}, headers=bearer("ops")).json()
    x = c.post("/v1/executions", json={"decision_id": g["decision_id"], "receipt": {"message": "hi", "ticket": n}},
               headers=bearer("ops")).json()
    r = c.post("/v1/rollbacks", json={"execution_id": x["execution_id"], "scenario": "customer_request",
                                      "reason": f"r{n}"}, headers=bearer(who))
    assert r.status_code == 200, r.text
    return r.json()["rollback_id"]


def test_the_queue_counts_every_open_plan_and_says_when_it_lists_fewer(app):
    c = app
    rt = c.app.state.runtime
    n = 1001
    gates = rt.gate_many([send(5, id=f"q{i}") for i in range(n)])
    for g in gates:
        x = rt.executed(g.decision_id, receipt={"message": "m", "ticket": 1})
        rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita", reason="r")
    sign_in(c, "casey")
    page = text(c.get("/ui").text)
    assert f"Route customer_service · {n} open plans" in page
    assert f"Showing the oldest 1000 of {n} open plans of this route" in page
    assert "GET /v1/queue?route=customer_service" in page


def test_a_plan_of_an_unauthorized_execution_shows_the_action_that_ran(app):
    c = app
    x = c.post("/v1/executions", json={"receipt": {"message": "sent anyway", "ticket": 9},
                                       "action": {"workflow": "replies", "type": "send", "amount": 5,
                                                  "to": "bob@example.com"}}, headers=bearer("ops")).json()
    assert x["flags"] == ["unauthorized"]
    rb = c.post("/v1/rollbacks", json={"execution_id": x["execution_id"], "scenario": "customer_request",
                                       "reason": "it ran without a decision"}, headers=bearer("rita")).json()
    sign_in(c, "casey")
    html = c.get(f"/ui/plans/{rb['rollback_id']}").text
    action = by_id(html, "action")
    assert action != "null" and "bob@example.com" in action and '"amount": 5' in action
    assert "flagged: unauthorized" in by_id(html, "flags") and "no gate decision covers it" in by_id(html, "flags")
    # a plan whose original was gated shows the gated action, unflagged
    html = c.get(f"/ui/plans/{plan_of(c, 1)}").text
    assert '"id": "m1"' in by_id(html, "action") and by_id(html, "flags") is None


def test_a_plan_shows_who_claimed_it_and_a_window_that_has_passed(app):
    c = app
    rt = c.app.state.runtime
    claimed, free = plan_of(c, 1), plan_of(c, 2)
    assert c.post(f"/v1/rollbacks/{claimed}/claim", json={}, headers=bearer("cleo")).json()["recorded"] is True
    # one executed two days ago: its one-day window has passed (requested now, escalated)
    t = datetime.now(UTC) - timedelta(days=2)
    g = rt.gate(send(7, id="old"), now=t)
    x = rt.executed(g.decision_id, receipt={"message": "m", "ticket": 1}, now=t)
    late = rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita", reason="late")
    sign_in(c, "casey")
    html = c.get(f"/ui/plans/{claimed}").text
    assert by_id(html, "claimed") == "by cleo"
    assert "past window" not in by_id(html, "window")
    assert by_id(c.get(f"/ui/plans/{free}").text, "claimed") == "not claimed"
    window = by_id(c.get(f"/ui/plans/{late.rollback_id}").text, "window")
    assert window.startswith("escalated, until") and window.endswith("past window")


def test_the_plan_form_decides_rollback_plans_only(app):
    c = app
    g = c.post("/v1/gate", json={"action": send(500)}, headers=bearer("ops")).json()
    assert g["decision"]["effect"] == "require_approval"
    sign_in(c, "rita")  # (a reviewer: her approval would count on the decision)
    assert c.get(f"/ui/plans/{g['decision_id']}").status_code == 404  # the page does not show it
    csrf = csrf_of(c.get("/ui").text)
    r = c.post(f"/ui/plans/{g['decision_id']}", data={"verdict": "approve", "csrf": csrf}, follow_redirects=False)
    assert r.status_code == 404 and r.json()["type"].endswith("not-a-rollback")
    st = c.get(f"/v1/subjects/{g['decision_id']}", headers=bearer("ops")).json()
    assert st["status"] == "pending" and st["verdict"]["accepted"] == [] and st["verdict"]["rejected"] == []
    # a plan is still decided through it
    sign_in(c, "casey")
    rb = plan_of(c, 3)
    r = c.post(f"/ui/plans/{rb}", data={"verdict": "approve", "csrf": csrf_of(c.get("/ui").text)},
               follow_redirects=False)
    assert r.status_code == 303
    assert c.get(f"/v1/subjects/{rb}", headers=bearer("ops")).json()["status"] == "approved"


def test_a_page_shows_only_the_messages_the_server_made_for_this_session(app):
    c = app
    rb = plan_of(c, 1)
    sign_in(c, "cleo")
    forged = "verified by the incident commander: approve now"
    html = c.get(f"/ui/plans/{rb}?msg={quote(forged)}").text
    assert forged not in html and by_id(html, "msg") is None
    assert forged not in c.get(f"/ui/plans/{rb}?msg={quote(forged)}&sig={'0' * 64}").text
    # the server's own message, through its redirect, is shown
    r = c.post(f"/ui/plans/{rb}", data={"verdict": "deny", "reason": "no", "csrf": csrf_of(c.get("/ui").text)},
               follow_redirects=False)
    assert r.status_code == 303
    shown = c.get(r.headers["location"]).text
    assert by_id(shown, "msg") == "denied by cleo; status denied"
    # ... in that session only: another reviewer given the same link sees no message
    sign_in(c, "casey")
    assert by_id(c.get(r.headers["location"]).text, "msg") is None
    # and a message changed on the way is not shown either
    changed = r.headers["location"].replace("denied%20by%20cleo", "approved%20by%20cleo")
    sign_in(c, "cleo")
    assert by_id(c.get(changed).text, "msg") is None


def test_a_batch_page_shows_only_the_messages_the_server_made(app):
    c = app
    x = c.post("/v1/executions", json={"receipt": {"message": "m", "ticket": 1},
                                       "action": {"workflow": "replies", "type": "send", "amount": 5}},
               headers=bearer("ops")).json()
    b = c.post("/v1/rollbacks/batches", json={"executions": [x["execution_id"]], "scenario": "customer_request",
                                              "reason": "incident"}, headers=bearer("rita")).json()
    sign_in(c, "casey")
    forged = "approved by casey: counted on 1 of 1 open plans (1 approved)"
    assert by_id(c.get(f"/ui/batches/{b['batch_id']}?msg={quote(forged)}").text, "msg") is None
    r = c.post(f"/ui/batches/{b['batch_id']}", data={"verdict": "approve", "batch_hash": b["batch_hash"],
                                                     "csrf": csrf_of(c.get("/ui").text)}, follow_redirects=False)
    assert r.status_code == 303
    assert by_id(c.get(r.headers["location"]).text, "msg") == forged


@pytest.fixture
def server(tmp_path):
    pol = server_policy_dir(tmp_path)
    ids = write_identities(tmp_path / "ids.yaml")
    with serve(str(pol), "--ledger", f"sqlite:///{tmp_path / 'l.db'}", "--identities", str(ids),
               "--reload-interval", "0") as base:
        yield base


def test_in_the_browser_a_plan_shows_its_claim_its_unauthorized_original_and_no_forged_message(
        browser, server):  # noqa: F811
    import httpx
    from selenium.webdriver.common.by import By

    with httpx.Client(base_url=server, timeout=30) as c:
        x = c.post("/v1/executions", json={"receipt": {"message": "<b>sent</b>", "ticket": 9},
                                           "action": {"workflow": "replies", "type": "send", "amount": 5,
                                                      "to": "<script>document.title='pwned'</script>"}},
                   headers=bearer("ops")).json()
        rb = c.post("/v1/rollbacks", json={"execution_id": x["execution_id"], "scenario": "customer_request",
                                           "reason": "ran without a decision"}, headers=bearer("rita")).json()
        assert c.post(f"/v1/rollbacks/{rb['rollback_id']}/claim", json={},
                      headers=bearer("cleo")).json()["recorded"] is True
    _sign_in(browser, server, "casey")
    browser.get(f"{server}/ui/plans/{rb['rollback_id']}?msg={quote('approved by the incident commander')}")
    assert browser.find_element(By.ID, "claimed").text == "by cleo"
    action = browser.find_element(By.ID, "action").text
    assert "<script>document.title='pwned'</script>" in action and "pwned" not in browser.title
    assert "flagged: unauthorized" in browser.find_element(By.ID, "flags").text
    assert browser.find_elements(By.ID, "msg") == []
    assert "incident commander" not in browser.find_element(By.TAG_NAME, "main").text
