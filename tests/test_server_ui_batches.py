"""Rollback batches on the reviewer's page (``/ui`` and ``/ui/batches/{id}``).

Structural tests over HTTP (Starlette's httpx test client, on SQLite and PostgreSQL): the batches listed per route
beside the queue (pending first, oldest first, with their counts), a batch page read one
page of plans at a time, a decision bound to the batch hash the page showed (a different
hash is refused, nothing recorded), CSRF, a forged principal, no session. And in a real
browser (headless Chromium through Selenium, as tests/test_server_ui.py): a reviewer signs
in, opens a batch, approves it and sees the verdict change; the requester's own approval
does not count. ``STOPLINE_UI_BATCH_SCREENSHOT=PATH`` saves the approved batch page
(docs/img/reviewer-batch.png)."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from html import unescape

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402
from ledger_fixtures import ledger_url  # noqa: E402,F401  (SQLite and PostgreSQL)
from server_support import TOKENS, bearer, serve, server_policy_dir, write_identities  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402
from test_server_ui import _sign_in, _submit, browser  # noqa: E402,F401  (the browser fixture)

from policy_engine.server import ServerConfig, create_app  # noqa: E402
from policy_engine.server.batchview import PAGE  # noqa: E402

SENDS = 'original.type == "send"'


@pytest.fixture
def policy_dir(tmp_path):
    return server_policy_dir(tmp_path)


@pytest.fixture
def app(tmp_path, policy_dir, ledger_url):  # noqa: F811
    ids = str(write_identities(tmp_path / "ids.yaml"))
    with TestClient(create_app(ServerConfig(str(policy_dir), ledger=ledger_url,
                                            identities=ids, reload_interval=0))) as c:
        yield c


def fill(c: TestClient, n: int, run: str) -> None:
    """``n`` executed sends of ``run`` written straight into the server's ledger (as the
    incident benchmark fills one): recorded, never gated, so thousands cost little."""
    from policy_engine.ledger import NewEntry

    now = datetime.now(UTC)
    led = c.app.state.runtime.ledger
    items = []
    for i in range(n):
        t = now - timedelta(seconds=n - i)
        items.append(NewEntry("execution", {
            "receipt": {"message": f"reply {i}", "ticket": f"T-{i}", "run": run}, "authorized": True, "flags": [],
            "reasons": [], "missing_receipt": [], "decision": None, "caused_by": None, "type": "send",
            "action_id": None, "executed_at": t.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "reviewer": "rev",
            "requester": "agent"}, workflow="replies", time=t))
    for k in range(0, n, 5000):
        led.append_many(items[k:k + 5000])


def request_batch(c: TestClient, run: str, who: str = "rita") -> dict:
    r = c.post("/v1/rollbacks/batches", json={"select": f'{SENDS} && original.receipt.run == "{run}"',
                                              "scenario": "customer_request", "reason": f"{run} misfired"},
               headers=bearer(who))
    assert r.status_code == 200, r.text
    return r.json()


def sign_in(c: TestClient, who: str) -> None:
    """Sign in through the form (the session cookie stays in the client)."""
    c.cookies.clear()
    form = c.get("/ui/login").text  # (the sign-in form's CSRF token, bound to its own cookie)
    r = c.post("/ui/login", data={"token": TOKENS[who][0], "csrf": csrf_of(form)}, follow_redirects=False)
    assert r.status_code == 303 and "stopline_session" in c.cookies


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)


def hash_of(html: str) -> str:
    return re.search(r'name="batch_hash" value="([^"]+)"', html).group(1)


def text(html: str) -> str:
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))


def batch_approvals(c: TestClient, batch_id: str) -> list:
    led = c.app.state.runtime.ledger
    return [(e.body["principal"], e.body["verdict"]) for e in led.entries(kind="approval", link=batch_id)]


def test_the_queue_lists_batches_per_route_pending_first_with_counts(app):
    c = app
    fill(c, 3, "run-1")
    fill(c, 2, "run-2")
    older, newer = request_batch(c, "run-1"), request_batch(c, "run-2")
    # the older batch is approved and one of its plans done: it sorts after the pending one
    a = c.post(f"/v1/rollbacks/batches/{older['batch_id']}/approvals",
               json={"batch_hash": older["batch_hash"]}, headers=bearer("casey")).json()
    assert a["counted"] == 3
    first = older["rollbacks"][0]
    for d in c.get(f"/v1/subjects/{first}", headers=bearer("ops")).json()["duties"]:
        duty = d if not d.startswith(("compensate:", "notify:")) else f"{first}/{d}"
        c.post(f"/v1/rollbacks/batches/{older['batch_id']}/steps", json={"duty": duty, "status": "completed"},
               headers=bearer("ops"))
    # and a single plan beside them
    g = c.post("/v1/gate", json={"action": {"workflow": "replies", "type": "send", "amount": 20,
                                            "promise": False}}, headers=bearer("ops")).json()
    x = c.post("/v1/executions", json={"decision_id": g["decision_id"], "receipt": {"message": "m", "ticket": 1}},
               headers=bearer("ops")).json()
    single = c.post("/v1/rollbacks", json={"execution_id": x["execution_id"], "scenario": "customer_request",
                                           "reason": "asked"}, headers=bearer("rita")).json()["rollback_id"]
    sign_in(c, "casey")
    html = c.get("/ui").text
    assert re.findall(r'data-batch="([^"]+)"', html) == [newer["batch_id"], older["batch_id"]]
    rows = dict(re.findall(r'data-batch="([^"]+)">(.*?)</tr>', html, re.S))
    cells = {b: [m for m in re.findall(r'class="(records|done|partial|closed|remaining)">(\d+)<', row)]
             for b, row in rows.items()}
    assert cells[newer["batch_id"]] == [("records", "2"), ("done", "0"), ("partial", "0"), ("closed", "0"),
                                        ("remaining", "2")]
    assert cells[older["batch_id"]] == [("records", "3"), ("done", "1"), ("partial", "0"), ("closed", "0"),
                                        ("remaining", "2")]
    assert "2 pending" in text(rows[newer["batch_id"]])
    # the earliest window deadline of the batch's records (the first executed send: a day after it ran)
    deadlines = [q["deadline"] for q in c.get("/v1/queue", headers=bearer("ops")).json()["queue"]
                 if q["rollback_id"] in newer["rollbacks"]]
    assert min(deadlines) in rows[newer["batch_id"]]
    # a batch's plans are shown in their batch, not one by one
    assert re.findall(r'class="plan-link" href="/ui/plans/([^"]+)"', html) == [single]
    # the counts are Runtime.batch_status's (read here without parsing every plan)
    for b in (older, newer):
        st = c.get(f"/v1/rollbacks/batches/{b['batch_id']}", headers=bearer("ops")).json()
        assert [int(n) for _, n in cells[b["batch_id"]][1:]] == [st["done"], st["partial"], st["closed"],
                                                                st["remaining"]]


def test_a_batch_left_pending_past_its_time_counts_as_expired_as_batch_status_says(app):
    c = app
    fill(c, 2, "run-5")
    fill(c, 1, "run-6")
    c.app.state.runtime.rollback_ttl = timedelta(seconds=-1)  # pending_until already past
    stale = request_batch(c, "run-5")
    c.app.state.runtime.rollback_ttl = timedelta(days=7)
    fresh = request_batch(c, "run-6")
    st = c.get(f"/v1/rollbacks/batches/{stale['batch_id']}", headers=bearer("ops")).json()
    assert st["by_status"] == {"expired": 2}
    sign_in(c, "casey")
    page = text(c.get(f"/ui/batches/{stale['batch_id']}").text)
    assert "2 expired" in page and "pending" not in page.split("Decide the whole batch")[0]
    # on the queue the fresh (pending) batch comes first although it is newer
    assert re.findall(r'data-batch="([^"]+)"', c.get("/ui").text) == [fresh["batch_id"], stale["batch_id"]]


def test_a_batch_page_is_read_a_page_at_a_time(app):
    c = app
    n = 2 * PAGE + 7
    fill(c, n, "run-9")
    b = request_batch(c, "run-9")
    assert len(b["rollbacks"]) == n
    sign_in(c, "casey")
    url = f"/ui/batches/{b['batch_id']}"
    html = c.get(url).text
    t = text(html)
    assert html.count('class="plan-row"') == PAGE
    for shown in (SENDS, "customer_request", "run-9 misfired", "by rita", b["batch_hash"],
                  "page 1 of 3", f"{n} selected", f"{n} plans", f"{n} records", "none (not stopped by a trigger)"):
        assert shown in t, shown
    # each record: its plan, original type, workflow, executed_at, feasibility, status
    first = re.search(r'<tr class="plan-row">(.*?)</tr>', html, re.S).group(1)
    assert b["rollbacks"][0][:8] in first and "send" in first and "replies" in first
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", first) and "blocked" in first and "pending" in first
    assert "open" in text(re.search(r'id="slots">(.*?)</table>', html, re.S).group(1))
    # the last page has what is left, in order; a page past the end shows the last one
    last = c.get(url, params={"page": 3}).text
    assert last.count('class="plan-row"') == 7
    assert re.findall(r'<tr class="plan-row">\s*<td><a href="/ui/plans/([^"]+)"', last) == b["rollbacks"][-7:]
    assert c.get(url, params={"page": 99}).text.count('class="plan-row"') == 7
    assert 'id="next-page" href="?page=2"' in html and 'id="prev-page" href="?page=2"' in last
    first = c.get(url, params={"page": 0})  # (a reviewer's browser gets a page, the first, never a JSON 422)
    assert first.status_code == 200 and first.text.count('class="plan-row"') == html.count('class="plan-row"')
    # a batch that is not one
    assert c.get(f"/ui/batches/{b['rollbacks'][0]}").status_code == 404
    assert c.get("/ui/batches/nope").status_code == 404


def test_a_decision_binds_to_the_hash_the_page_showed(app):
    c = app
    fill(c, 2, "run-3")
    b = request_batch(c, "run-3")
    sign_in(c, "casey")
    url = f"/ui/batches/{b['batch_id']}"
    html = c.get(url).text
    assert hash_of(html) == b["batch_hash"]
    form = {"csrf": csrf_of(html), "batch_hash": hash_of(html), "verdict": "approve", "reason": "checked"}
    led = c.app.state.runtime.ledger
    size = led.size
    # a page showing another digest (the batch changed, or another batch's page): refused, nothing recorded
    r = c.post(url, data={**form, "batch_hash": "sha256:" + "0" * 64})
    assert r.status_code == 409
    assert "refused, nothing recorded" in text(r.text) and b["batch_hash"] in r.text
    r = c.post(url, data={**form, "batch_hash": ""})
    assert r.status_code == 409
    # the CSRF token of another session, a forged principal: 403, nothing recorded
    r = c.post(url, data={**form, "csrf": "0" * 64})
    assert r.status_code == 403 and "the form expired" in r.text
    r = c.post(url, data={**form, "principal": "cleo"})
    assert r.status_code == 403 and "refused: you are signed in as casey" in r.text
    r = c.post(url, data={**form, "verdict": "maybe"})
    assert r.status_code == 422
    assert led.size == size and batch_approvals(c, b["batch_id"]) == []
    # without a session: to the sign-in page, nothing recorded
    c.cookies.clear()
    r = c.post(url, data=form, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/login"
    assert c.get(url, follow_redirects=False).headers["location"] == "/ui/login"
    assert led.size == size
    # the requester approves her own batch: recorded, counted on no plan, and the page says why
    sign_in(c, "rita")
    html = c.get(url).text
    r = c.post(url, data={**form, "csrf": csrf_of(html)})
    assert r.status_code == 200
    msg = text(re.search(r'id="msg">(.*?)</section>', r.text, re.S).group(1))
    assert "does not count on any of the 2 open plans" in msg and "must come from someone else" in msg
    assert "2 pending" in text(re.search(r'id="verdict">(.*?)</h1>', r.text, re.S).group(1))
    # the reviewer approves with the hash shown: counted on every plan, the verdict changes
    sign_in(c, "casey")  # (a new session: its forms carry a new CSRF token)
    r = c.post(url, data={**form, "csrf": csrf_of(c.get(url).text)})
    assert r.status_code == 200
    assert "approved by casey: counted on 2 of 2 open plans" in text(r.text)
    assert "2 approved" in text(re.search(r'id="verdict">(.*?)</h1>', r.text, re.S).group(1))
    assert text(re.search(r'id="slots">(.*?)</table>', r.text, re.S).group(1)).count("casey") == 1
    assert batch_approvals(c, b["batch_id"]) == [("rita", "approve"), ("casey", "approve")]
    st = c.get(f"/v1/rollbacks/batches/{b['batch_id']}", headers=bearer("ops")).json()
    assert st["by_status"] == {"approved": 2}


def test_a_batch_is_denied_with_a_reason(app):
    c = app
    fill(c, 2, "run-4")
    b = request_batch(c, "run-4")
    sign_in(c, "cleo")
    url = f"/ui/batches/{b['batch_id']}"
    html = c.get(url).text
    r = c.post(url, data={"csrf": csrf_of(html), "batch_hash": hash_of(html), "verdict": "deny",
                          "reason": "not this run"})
    assert "denied by cleo" in text(r.text)
    assert "2 denied" in text(re.search(r'id="verdict">(.*?)</h1>', r.text, re.S).group(1))
    assert "not this run" in text(re.search(r'id="approvals">(.*?)</table>', r.text, re.S).group(1))


# ------------------------------------------------------------------------------ the browser
@pytest.fixture
def server(tmp_path, policy_dir):
    ids = write_identities(tmp_path / "ids.yaml")
    with serve(str(policy_dir), "--ledger", f"sqlite:///{tmp_path / 'l.db'}", "--identities", str(ids),
               "--reload-interval", "0") as base:
        yield base


def _sends(base: str, n: int) -> dict:
    """``n`` executed sends, then a batch of them requested by rita."""
    with httpx.Client(base_url=base, headers=bearer("ops"), timeout=30) as c:
        for i in range(n):
            g = c.post("/v1/gate", json={"action": {"workflow": "replies", "type": "send", "amount": 20 + i,
                                                    "promise": False, "id": f"m{i}"}}).json()
            c.post("/v1/executions", json={"decision_id": g["decision_id"],
                                           "receipt": {"message": f"Reply #{i}", "ticket": f"T-{i}"}})
        r = c.post("/v1/rollbacks/batches", json={"select": SENDS, "scenario": "customer_request",
                                                  "reason": "the 09:00 run sent wrong replies"},
                   headers=bearer("rita"))
        assert r.status_code == 200, r.text
        return r.json()


def test_reviewer_opens_a_batch_and_approves_it(browser, server):  # noqa: F811
    from selenium.webdriver.common.by import By

    b = _sends(server, 3)
    _sign_in(browser, server, "casey")
    browser.get(server + "/ui")
    route = browser.find_element(By.CSS_SELECTOR, 'section.route[data-route="customer_service"]')
    row = route.find_element(By.CSS_SELECTOR, f'tr.batch-row[data-batch="{b["batch_id"]}"]')
    assert row.find_element(By.CSS_SELECTOR, "td.remaining").text == "3"
    assert "3 pending" in row.text
    assert route.find_elements(By.CSS_SELECTOR, "a.plan-link") == []
    _submit(browser, row.find_element(By.CSS_SELECTOR, "a.batch-link"))
    assert browser.current_url.endswith(f"/ui/batches/{b['batch_id']}")
    assert browser.find_element(By.ID, "verdict").text == "3 pending"
    assert browser.find_element(By.ID, "batch-hash").text == b["batch_hash"]
    assert SENDS in browser.find_element(By.ID, "select").text
    assert "by rita" in browser.find_element(By.ID, "requested").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#plans tr.plan-row")) == 3
    browser.find_element(By.ID, "reason").send_keys("checked the run's log")
    _submit(browser, browser.find_element(By.ID, "approve"))
    assert browser.find_element(By.ID, "verdict").text == "3 approved"
    assert "approved by casey: counted on 3 of 3 open plans" in browser.find_element(By.ID, "msg").text
    assert browser.find_element(By.CSS_SELECTOR, "#slots td.filled").text == "casey"
    assert "checked the run's log" in browser.find_element(By.ID, "approvals").text
    shot = os.environ.get("STOPLINE_UI_BATCH_SCREENSHOT")
    if shot:
        browser.save_screenshot(shot)
    st = httpx.get(f"{server}/v1/rollbacks/batches/{b['batch_id']}", headers=bearer("ops"), timeout=30).json()
    assert st["by_status"] == {"approved": 3}


def test_in_the_browser_nobody_approves_as_someone_else_or_on_a_stale_page(browser, server):  # noqa: F811
    from selenium.webdriver.common.by import By

    b = _sends(server, 2)
    _sign_in(browser, server, "cleo")
    browser.get(f"{server}/ui/batches/{b['batch_id']}")
    # a second reviewer cannot approve as the first: a forged `principal` field is refused
    browser.execute_script(
        "const i = document.createElement('input'); i.type = 'hidden'; i.name = 'principal'; i.value = 'casey';"
        "document.getElementById('decide').appendChild(i);")
    _submit(browser, browser.find_element(By.ID, "approve"))
    assert "refused: you are signed in as cleo" in browser.find_element(By.ID, "error").text
    assert browser.find_element(By.ID, "verdict").text == "2 pending"
    # a page that showed another digest: refused with the reason, nothing recorded
    browser.execute_script("document.querySelector('input[name=batch_hash]').value = 'sha256:' + '1'.repeat(64);")
    _submit(browser, browser.find_element(By.ID, "approve"))
    assert "refused, nothing recorded" in browser.find_element(By.ID, "error").text
    assert browser.find_element(By.ID, "verdict").text == "2 pending"
    # the requester's own approval is recorded but counts on no plan (distinct from the requester)
    _sign_in(browser, server, "rita")
    browser.get(f"{server}/ui/batches/{b['batch_id']}")
    _submit(browser, browser.find_element(By.ID, "approve"))
    assert "does not count" in browser.find_element(By.ID, "msg").text
    assert browser.find_element(By.ID, "verdict").text == "2 pending"


def test_after_a_policy_reload_an_approved_batch_reads_pending_on_its_page(app, policy_dir):
    """Approvals count only under the policy version that classified a plan: after a reload
    the batch page said `2 approved` (the projection's status) while `authorization` said
    pending, so a reviewer saw nothing left to do (tests/test_runtime_policy_reload.py)."""
    c = app
    fill(c, 2, "run-9")
    b = request_batch(c, "run-9")
    r = c.post(f"/v1/rollbacks/batches/{b['batch_id']}/approvals", json={"batch_hash": b["batch_hash"]},
               headers=bearer("casey"))
    assert r.status_code == 200, r.text
    sign_in(c, "casey")
    url = f"/ui/batches/{b['batch_id']}"
    verdict = re.compile(r'id="verdict">(.*?)</h1>', re.S)
    assert "2 approved" in text(verdict.search(c.get(url).text).group(1))
    f = policy_dir / "replies.policy"
    f.write_text(f.read_text().replace('version "1.0"', 'version "1.1"'))
    assert c.post("/v1/policies/reload", headers=bearer("ops")).json()["changed"] is True
    html = c.get(url).text
    assert "2 pending" in text(verdict.search(html).group(1))
    assert re.findall(r'<span class="status (\w+)">\1</span></td>', html) == ["pending", "pending"]
    st = c.get(f"/v1/rollbacks/batches/{b['batch_id']}", headers=bearer("ops")).json()
    assert st["by_status"] == {"pending": 2}
