"""Audit of the reviewer's page (session 19): what a reviewer is shown, and what another
page can make them do.

- No page of ``/ui`` may be framed: a page on another port of the host (the same *site*, so
  its frames get the SameSite=Strict session cookie) laid the signed-in reviewer's plan
  page in an iframe, and a click on it approved the plan (clickjacking). Every page now
  says ``Content-Security-Policy: ... frame-ancestors 'none'`` (no script, its one style
  sheet by hash, forms to this origin only) and ``X-Frame-Options: DENY``.
- A reason typed at the form's limit with line breaks was refused with a raw JSON 422 and
  the decision lost: the browser counts a line break as one character against
  ``maxlength`` and sends it as CR LF. Line breaks are taken as typed; a reason over the
  limit is refused on the page, nothing recorded.
- A plan approval that does not count said "the principal cannot fill an open slot of this
  subject (see authorization())": now the engine's reason (the requester excluded by
  ``distinct from``, a role missing, the slot filled), and a second approval from another
  tab says it counts once.
- A batch decision that counted nowhere gave the reason of the batch's *first* plan, which
  may be closed and never judged ("no open slot takes casey with the roles
  customer_service" for the requester); and after a policy reload it said the plans were
  "already decided or under way" when they were pending under another policy version. It
  now names the engine's reason on a plan it was recorded on, and the stale plans as such;
  a stale plan's page says no approval counts on it now.
- The queue lists 1000 single plans a page, with pages (``?page=N``): the 1001st open plan
  could not be reached from the page. A route's count covers the open plans of its
  batches: a route whose open plans were all in a batch read "0 open plans".

Over HTTP (Starlette's test client, SQLite and PostgreSQL) and in headless Chromium against
real ``stopline serve`` processes (as tests/test_server_ui.py).
"""

from __future__ import annotations

import json
import re
from html import unescape

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402
from ledger_fixtures import ledger_url  # noqa: E402,F401  (SQLite and PostgreSQL)
from server_support import TOKENS, bearer, serve, server_policy_dir, write_identities  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402
from test_server_ui import _sign_in, _submit, attacker_site, browser  # noqa: E402,F401  (fixtures)

from policy_engine.server import ServerConfig, create_app  # noqa: E402


def send(amount: float, **extra) -> dict:
    return {"workflow": "replies", "type": "send", "amount": amount, "promise": False, **extra}


@pytest.fixture
def policy_dir(tmp_path):
    return server_policy_dir(tmp_path)


@pytest.fixture
def app(tmp_path, policy_dir, ledger_url):  # noqa: F811
    ids = str(write_identities(tmp_path / "ids.yaml"))
    with TestClient(create_app(ServerConfig(str(policy_dir), ledger=ledger_url, identities=ids,
                                            reload_interval=0))) as c:
        yield c


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)


def text(html: str) -> str:
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))).strip()


def by_id(html: str, ident: str) -> str | None:
    m = re.search(rf'id="{ident}"[^>]*>(.*?)</(?:td|pre|p|section|span)>', html, re.S)
    return None if m is None else text(m.group(1))


def sign_in(c: TestClient, who: str) -> None:
    c.cookies.clear()
    r = c.post("/ui/login", data={"token": TOKENS[who][0], "csrf": csrf_of(c.get("/ui/login").text)},
               follow_redirects=False)
    assert r.status_code == 303 and "stopline_session" in c.cookies


def plan_of(c: TestClient, n: int, who: str = "rita") -> str:
    """An executed send, its rollback requested by ``who``: a pending plan on customer_service."""
    g = c.post("/v1/gate", json={"action": send(10 + n % 80, id=f"m{n}")}, headers=bearer("ops")).json()
    x = c.post("/v1/executions", json={"decision_id": g["decision_id"], "receipt": {"message": "hi", "ticket": n}},
               headers=bearer("ops")).json()
    r = c.post("/v1/rollbacks", json={"execution_id": x["execution_id"], "scenario": "customer_request",
                                      "reason": f"r{n}"}, headers=bearer(who))
    assert r.status_code == 200, r.text
    return r.json()["rollback_id"]


def decide(c: TestClient, path: str, **form) -> str:
    """Post a page's form as its reviewer would; the message the page then shows."""
    page = c.get(path).text
    form.setdefault("csrf", csrf_of(page))
    if "batch_hash" not in form and "/ui/batches/" in path:
        form["batch_hash"] = re.search(r'name="batch_hash" value="([^"]+)"', page).group(1)
    r = c.post(path, data=form, follow_redirects=False)
    assert r.status_code == 303, (r.status_code, r.text[:400])
    return by_id(c.get(r.headers["location"]).text, "msg")


def approvals(c: TestClient, subject: str) -> list:
    return [(a.body["principal"], a.body["verdict"], a.body.get("note"))
            for a in c.app.state.runtime.ledger.entries(kind="approval", link=subject)]


def batch_of(c: TestClient, n: int, who: str = "rita") -> dict:
    rt = c.app.state.runtime
    xs = [rt.executed(g.decision_id, receipt={"message": "m", "ticket": i}).execution_id
          for i, g in enumerate(rt.gate_many([send(5 + i, id=f"b{i}") for i in range(n)]))]
    r = c.post("/v1/rollbacks/batches", json={"executions": xs, "scenario": "customer_request",
                                              "reason": "incident"}, headers=bearer(who))
    assert r.status_code == 200, r.text
    return r.json()


# ------------------------------------------------------------------------------ framing, CSP
FRAMED = ("content-security-policy", "x-frame-options", "x-content-type-options", "cache-control")


def test_every_page_forbids_framing_and_scripts(app):
    c = app
    rb = plan_of(c, 1)
    b = batch_of(c, 2)
    pages = {"sign-in": c.get("/ui/login")}
    sign_in(c, "casey")
    pages["queue"] = c.get("/ui")
    pages["plan"] = c.get(f"/ui/plans/{rb}")
    pages["batch"] = c.get(f"/ui/batches/{b['batch_id']}")
    pages["refused"] = c.post(f"/ui/plans/{rb}", data={"verdict": "approve", "csrf": "0" * 64})
    pages["refused sign-out"] = c.post("/ui/logout", data={"csrf": "0" * 64})
    for name, r in pages.items():
        assert r.headers["content-type"].startswith("text/html"), name
        h = {k: r.headers.get(k) for k in FRAMED}
        assert h["x-frame-options"] == "DENY" and h["x-content-type-options"] == "nosniff", (name, h)
        assert h["cache-control"] == "no-store", (name, h)
        csp = dict(d.strip().split(" ", 1) for d in h["content-security-policy"].split(";"))
        assert csp["frame-ancestors"] == "'none'" and csp["default-src"] == "'none'", (name, csp)
        assert "script-src" not in csp and csp["form-action"] == "'self'", (name, csp)  # (no script at all)
        assert csp["style-src"].startswith("'sha256-") and "unsafe" not in csp["style-src"], (name, csp)
    assert c.get(f"/v1/subjects/{rb}", headers=bearer("ops")).json()["status"] == "pending"


@pytest.fixture
def server(tmp_path, policy_dir, ledger_url):  # noqa: F811
    ids = write_identities(tmp_path / "ids.yaml")
    with serve(str(policy_dir), "--ledger", ledger_url, "--identities", str(ids), "--reload-interval", "0") as base:
        yield base


def _plan(base: str, n: int) -> str:
    with httpx.Client(base_url=base, timeout=30) as c:
        g = c.post("/v1/gate", json={"action": send(20 + n, id=f"m{n}")}, headers=bearer("ops")).json()
        x = c.post("/v1/executions", json={"decision_id": g["decision_id"], "receipt": {"message": "m", "ticket": n}},
                   headers=bearer("ops")).json()
        r = c.post("/v1/rollbacks", json={"execution_id": x["execution_id"], "scenario": "customer_request",
                                          "reason": "the customer asked"}, headers=bearer("rita"))
        return r.json()["rollback_id"]


def _status(base: str, rb: str) -> str:
    return httpx.get(f"{base}/v1/subjects/{rb}", headers=bearer("ops"), timeout=30).json()["status"]


def test_a_page_on_another_port_cannot_frame_the_plan_and_have_it_approved(browser, server,  # noqa: F811
                                                                             attacker_site):  # noqa: F811
    """Clickjacking: the signed-in reviewer visits a page on another port of the host, which
    lays the plan page in a frame (under a decoy, in a real attack) for the click on
    Approve. The frame stays empty: the browser refuses to frame the page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    set_page, elsewhere = attacker_site
    rb = _plan(server, 1)
    _sign_in(browser, server, "casey")
    # the reviewer's own tab: the page and its one style sheet load under the policy
    browser.get(f"{server}/ui/plans/{rb}")
    assert browser.find_element(By.ID, "approve").is_displayed()
    bg = browser.execute_script("return getComputedStyle(document.querySelector('header')).backgroundColor")
    assert bg == "rgb(29, 36, 48)"
    set_page(f'<h1>You won!</h1><iframe id="f" name="f" src="{server}/ui/plans/{rb}" width="1200" height="1400" '
             'onload="document.title = \'framed\'"></iframe>')
    browser.get(elsewhere + "/")
    WebDriverWait(browser, 60).until(lambda d: d.title == "framed")
    browser.switch_to.frame("f")
    try:
        assert browser.find_elements(By.ID, "approve") == [], "the plan page was framed by another page"
        assert browser.find_elements(By.ID, "who") == []
    finally:
        browser.switch_to.default_content()
    assert _status(server, rb) == "pending"


# ------------------------------------------------------------------------------ reasons with line breaks
def test_a_reason_typed_to_the_forms_limit_with_line_breaks_is_taken(browser, server):  # noqa: F811
    from selenium.webdriver.common.by import By

    rb = _plan(server, 2)
    _sign_in(browser, server, "casey")
    browser.get(f"{server}/ui/plans/{rb}")
    box = browser.find_element(By.ID, "reason")
    typed = ("x" * 99 + "\n") * 41  # 4100 typed: the box takes 4000, as the form says
    box.send_keys(typed)
    taken = browser.execute_script("return arguments[0].value", box)
    assert len(taken) == 4000 and taken.count("\n") == 40
    _submit(browser, browser.find_element(By.ID, "approve"))
    assert browser.find_element(By.ID, "msg").text == "approved by casey; status approved"
    assert browser.find_element(By.ID, "status").text == "approved"
    h = httpx.get(f"{server}/v1/history/{rb}", headers=bearer("ops"), timeout=30).json()
    assert [a["body"].get("note") for a in h["rollback"]["approvals"]] == [taken]  # as typed, LF line breaks


def test_a_reason_over_the_limit_is_refused_on_the_page_and_nothing_recorded(app):
    c = app
    rb = plan_of(c, 1)
    b = batch_of(c, 2)
    sign_in(c, "casey")
    csrf = csrf_of(c.get("/ui").text)
    long = "y\r\n" * 2001  # 4002 characters as typed
    r = c.post(f"/ui/plans/{rb}", data={"verdict": "approve", "reason": long, "csrf": csrf})
    assert r.status_code == 422 and r.headers["content-type"].startswith("text/html")
    assert "the reason is longer than 4000 characters" in by_id(r.text, "error")
    r = c.post(f"/ui/batches/{b['batch_id']}", data={"verdict": "approve", "reason": long, "csrf": csrf,
                                                     "batch_hash": b["batch_hash"]})
    assert r.status_code == 422 and "the reason is longer than 4000 characters" in by_id(r.text, "error")
    assert approvals(c, rb) == [] and approvals(c, b["batch_id"]) == []
    # at the limit, with CR LF line breaks as a browser sends them: taken, as typed
    ok = "y\r\n" * 2000
    assert decide(c, f"/ui/plans/{rb}", verdict="approve", reason=ok) == "approved by casey; status approved"
    assert approvals(c, rb) == [("casey", "approve", "y\n" * 2000)]


# ------------------------------------------------------------------------------ what a decision says
def test_a_plan_approval_that_does_not_count_says_the_engines_reason(app):
    c = app
    own = plan_of(c, 1, who="casey")  # casey asked for it: `distinct from request.requested_by`
    sign_in(c, "casey")
    msg = decide(c, f"/ui/plans/{own}", verdict="approve")
    assert msg == ("recorded, but it does not count: `casey` is `request.requested_by`; the authorization must "
                   "come from someone else; status pending"), msg
    rb = plan_of(c, 2)
    sign_in(c, "ops")  # no role
    msg = decide(c, f"/ui/plans/{rb}", verdict="approve")
    assert msg.startswith("recorded, but it does not count: `ops` holds none of the roles") and "pending" in msg
    assert "authorization()" not in msg
    # another reviewer approved first (the page in this tab still said pending)
    sign_in(c, "casey")
    stale_tab = c.get(f"/ui/plans/{rb}").text
    assert by_id(stale_tab, "status") == "pending"
    assert decide(c, f"/ui/plans/{rb}", verdict="approve") == "approved by casey; status approved"
    sign_in(c, "cleo")
    msg = decide(c, f"/ui/plans/{rb}", verdict="approve")
    assert msg == ("recorded, but it does not count: every slot `cleo` could fill (`customer_service`) is already "
                   "filled; status approved"), msg


def test_approving_a_plan_twice_from_two_tabs_says_it_counts_once(app):
    c = app
    rb = plan_of(c, 1)
    sign_in(c, "casey")
    tab1, tab2 = c.get(f"/ui/plans/{rb}").text, c.get(f"/ui/plans/{rb}").text
    r = c.post(f"/ui/plans/{rb}", data={"verdict": "approve", "csrf": csrf_of(tab1)}, follow_redirects=False)
    assert by_id(c.get(r.headers["location"]).text, "msg") == "approved by casey; status approved"
    r = c.post(f"/ui/plans/{rb}", data={"verdict": "approve", "csrf": csrf_of(tab2)}, follow_redirects=False)
    msg = by_id(c.get(r.headers["location"]).text, "msg")
    assert msg == ("approved by casey (again: you had already approved it, and one reviewer's approvals count "
                   "once); status approved"), msg
    st = c.get(f"/v1/subjects/{rb}", headers=bearer("ops")).json()
    assert st["verdict"]["accepted"] == ["casey"] and st["verdict"]["slots"][0]["filled_by"] == ["casey"]
    # cancelled meanwhile: not recorded, and said so
    rb2 = plan_of(c, 2)
    tab = c.get(f"/ui/plans/{rb2}").text
    assert c.post(f"/v1/subjects/{rb2}/cancel", json={"reason": "withdrawn"}, headers=bearer("rita")).json()["recorded"]
    r = c.post(f"/ui/plans/{rb2}", data={"verdict": "approve", "csrf": csrf_of(tab)}, follow_redirects=False)
    msg = by_id(c.get(r.headers["location"]).text, "msg")
    assert msg.startswith("not recorded: the rollback is `cancelled`") and approvals(c, rb2) == []


def test_a_batch_decision_gives_the_reason_of_a_plan_it_was_recorded_on(app):
    """The batch's first plan is cancelled: the requester's own approval is recorded on the
    second only, and the reason is that plan's (the requester is excluded), not "no open
    slot takes casey with the roles customer_service" (she has the role)."""
    c = app
    b = batch_of(c, 2, who="casey")
    first = b["rollbacks"][0]
    assert c.post(f"/v1/subjects/{first}/cancel", json={"reason": "not this one"},
                  headers=bearer("casey")).json()["recorded"]
    sign_in(c, "casey")
    msg = decide(c, f"/ui/batches/{b['batch_id']}", verdict="approve")
    assert msg == ("recorded, but it does not count on any of the 1 open plans: `casey` is `request.requested_by`; "
                   "the authorization must come from someone else (1 pending); 1 plan was already decided or under "
                   "way"), msg


def test_a_batch_decision_on_plans_of_another_policy_version_says_so(app, policy_dir):
    c = app
    b = batch_of(c, 3)
    f = policy_dir / "replies.policy"
    f.write_text(f.read_text().replace("notify [customer]\n    compensate",
                                       "notify [customer, support]\n    compensate"))
    assert c.post("/v1/policies/reload", headers=bearer("ops")).json()["ok"] is True
    sign_in(c, "casey")
    msg = decide(c, f"/ui/batches/{b['batch_id']}", verdict="approve")
    assert msg == ("recorded on the batch, but on no plan: none of its plans takes this decision now; 3 plans "
                   "pending under another policy version than the one in use, where no approval counts: request "
                   "them again"), msg
    assert "already decided" not in msg and "no open slot" not in msg
    for rb in b["rollbacks"]:
        assert c.get(f"/v1/subjects/{rb}", headers=bearer("ops")).json()["status"] == "pending"
    # a plan's page says so before anyone clicks
    stale = by_id(c.get(f"/ui/plans/{b['rollbacks'][0]}").text, "stale")
    assert stale.startswith("No approval counts on this plan now: it was classified under policy sha256:")
    assert stale.endswith("request the rollback again (the request supersedes this one).")
    assert by_id(c.get(f"/ui/plans/{plan_of(c, 9)}").text, "stale") is None  # (one classified now: no notice)


def test_a_batch_decision_when_no_plan_is_open_says_so(app):
    c = app
    b = batch_of(c, 1)
    assert c.post(f"/v1/subjects/{b['rollbacks'][0]}/cancel", json={"reason": "x"},
                  headers=bearer("rita")).json()["recorded"]
    sign_in(c, "casey")
    msg = decide(c, f"/ui/batches/{b['batch_id']}", verdict="approve")
    assert msg == ("recorded on the batch, but on no plan: none of its plans takes this decision now; 1 plan was "
                   "already decided or under way"), msg


# ------------------------------------------------------------------------------ a long queue
def test_the_queue_pages_through_every_open_plan(tmp_path, policy_dir):
    ids = str(write_identities(tmp_path / "ids.yaml"))
    with TestClient(create_app(ServerConfig(str(policy_dir), ledger=f"sqlite:///{tmp_path / 'l.db'}?durability=normal",
                                            identities=ids, reload_interval=0))) as c:
        rt = c.app.state.runtime
        n = 1003
        plans = []
        for g in rt.gate_many([send(5, id=f"q{i}") for i in range(n)]):
            x = rt.executed(g.decision_id, receipt={"message": "m", "ticket": 1})
            plans.append(rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita",
                                             reason="r").rollback_id)
        sign_in(c, "casey")
        first = c.get("/ui").text
        listed = re.findall(r'class="plan-link" href="/ui/plans/([^"]+)"', first)
        assert listed == plans[:1000]
        assert f"Showing the oldest 1000 of {n} open plans of this route" in text(first)
        assert 'id="next-page" href="?page=2"' in first and 'id="prev-page"' not in first
        second = c.get("/ui?page=2").text
        assert re.findall(r'class="plan-link" href="/ui/plans/([^"]+)"', second) == plans[1000:]
        assert f"Route customer_service · {n} open plans" in text(second)
        assert f"Showing 3 of {n} open plans of this route on page 2 of 2" in text(second)
        assert 'id="prev-page" href="?page=1"' in second and 'id="next-page"' not in second
        # a page past the end shows the last
        assert re.findall(r'class="plan-link" href="/ui/plans/([^"]+)"', c.get("/ui?page=9").text) == plans[1000:]


def test_a_routes_count_covers_the_open_plans_in_its_batches(app):
    """A route whose open plans were all in a batch read "0 open plans · 1 batch"."""
    c = app
    b = batch_of(c, 3)
    assert c.post(f"/v1/subjects/{b['rollbacks'][0]}/cancel", json={"reason": "x"},
                  headers=bearer("rita")).json()["recorded"]  # (closed: not counted)
    sign_in(c, "casey")
    assert "Route customer_service · 2 open plans · 2 of them in 1 batch" in text(c.get("/ui").text)
    plan_of(c, 1)
    assert "Route customer_service · 3 open plans · 2 of them in 1 batch" in text(c.get("/ui").text)


def test_a_short_queue_has_no_page_links(app):
    c = app
    plan_of(c, 1)
    sign_in(c, "casey")
    html = c.get("/ui").text
    assert 'id="pages"' not in html and "Showing" not in html and len(re.findall('class="plan-link"', html)) == 1


# ------------------------------------------------------------------------------ hostile text, keyboard only
def test_hostile_names_and_reasons_stay_text_and_the_keyboard_decides(browser, tmp_path, policy_dir,  # noqa: F811
                                                                      ledger_url):  # noqa: F811
    """A principal, a receipt, a request's reason and a decision's reason holding markup are
    shown as text on the plan page, its slots and the message (no script runs: the pages
    allow none); and a reviewer using only the keyboard reaches the reason box, by its
    label, and the Approve button, and decides."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from policy_engine.server.identity import hash_token

    evil = "<img src=x onerror=\"document.title='pwned'\">"
    ids = write_identities(tmp_path / "ids.yaml", f"  - principal: {json.dumps(evil)}\n    roles: [customer_service]\n"
                                                  f"    sha256: {hash_token('tok-evil')}\n")
    with serve(str(policy_dir), "--ledger", ledger_url, "--identities", str(ids), "--reload-interval", "0") as base:
        with httpx.Client(base_url=base, timeout=30) as c:
            g = c.post("/v1/gate", json={"action": send(20, id="m1")}, headers=bearer("ops")).json()
            x = c.post("/v1/executions", json={"decision_id": g["decision_id"],
                                               "receipt": {"message": evil, "ticket": 1}},
                       headers=bearer("ops")).json()
            rb = c.post("/v1/rollbacks", json={"execution_id": x["execution_id"], "scenario": "customer_request",
                                               "reason": evil}, headers=bearer("rita")).json()["rollback_id"]
        browser.get(base + "/ui/login")
        browser.find_element(By.ID, "token").send_keys("tok-evil")
        _submit(browser, browser.find_element(By.ID, "signin"))
        assert browser.find_element(By.ID, "who").text == f"signed in as {evil} (customer_service)"
        browser.get(f"{base}/ui/plans/{rb}")
        assert evil in browser.find_element(By.TAG_NAME, "main").text
        # keyboard only: Tab from the top of the page to the reason box, type, Tab to Approve, Enter
        keys = ActionChains(browser)
        for _ in range(40):
            keys.send_keys(Keys.TAB).perform()
            if browser.switch_to.active_element.get_attribute("id") == "reason":
                break
        assert browser.switch_to.active_element.get_attribute("id") == "reason"
        assert browser.find_element(By.CSS_SELECTOR, 'label[for="reason"]').text == "Reason"
        keys.send_keys(evil).perform()
        keys.send_keys(Keys.TAB).perform()
        assert browser.switch_to.active_element.get_attribute("id") == "approve"
        assert browser.switch_to.active_element.text == "Approve"
        keys.send_keys(Keys.ENTER).perform()
        WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.ID, "msg"))
        msg = browser.find_element(By.ID, "msg").text
        assert msg == f"approved by {evil}; status approved"
        assert evil in browser.find_element(By.CSS_SELECTOR, "#slots td.filled").text
        browser.get(f"{base}/ui")
        assert browser.find_element(By.TAG_NAME, "h1").text == "Rollback queue"
        assert "pwned" not in browser.title
        h = httpx.get(f"{base}/v1/history/{rb}", headers=bearer("ops"), timeout=30).json()
        assert [(a["body"]["principal"], a["body"]["note"]) for a in h["rollback"]["approvals"]] == [(evil, evil)]
