"""Session 23 audit of the reviewer's page in headless Chromium: a reviewer on a phone-width
screen, with the keyboard only, whose session ends mid-form, who loses a race to another
reviewer, and who presses Back after deciding.

Found and fixed:

- at 375 px every page scrolled sideways, the whole page: the two-column grid of the
  plan page (the action beside its receipt) kept both columns, a long principal, plan id,
  plan hash or unbroken field value (a JSON ``pre``) did not wrap, and the header
  squeezed the signed-in name. Long words now wrap; a wide table (the queue's ten
  columns) scrolls inside its own section, never the page;
- a decision posted after its session ended (it ran out, was signed out elsewhere, its
  token revoked) sent the reviewer to the sign-in page without a word, the reason typed
  lost, and then to the queue. The sign-in page now says, as an alert, that nothing was
  recorded and to decide again, and sends the reviewer back to the page of the form;
- the loser of a race (another reviewer denied the plan first, or filled its one slot)
  read "not recorded ..." / "recorded, but it does not count ..." as a polite status a
  screen reader may leave for later: it is announced as an alert now.

Checked and sound: every form control is labelled and reachable by Tab in reading order
(sign out, the reason, Approve, Deny), a decision can be made with the keyboard alone,
every time shown has its zone (``Z``), and Back after a decision loads the page again
(303 after every post, ``Cache-Control: no-store``): nothing is sent twice.
"""

from __future__ import annotations

import re

import httpx
import pytest

pytest.importorskip("fastapi")
from server_support import TOKENS, bearer, serve, server_policy_dir, write_identities  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402
from test_server_ui import _submit, browser  # noqa: E402,F401  (the Chromium fixture)

from policy_engine.server import ServerConfig, create_app  # noqa: E402
from policy_engine.server.identity import hash_token  # noqa: E402
from policy_engine.server.ui import ENDED  # noqa: E402

LONG = "incident-commander.payments-platform.europe-west-3.on-call-rotation-b@very-long-company-domain.example.com"
LONG_TOKEN = "tok-long-c0ffee"
PHONE = (375, 800)


@pytest.fixture
def server(tmp_path):
    ids = write_identities(tmp_path / "ids.yaml", f"  - principal: {LONG}\n"
                                                  "    roles: [customer_service, reviewer]\n"
                                                  f"    sha256: {hash_token(LONG_TOKEN)}\n")
    with serve(str(server_policy_dir(tmp_path)), "--ledger", f"sqlite:///{tmp_path / 'l.db'}", "--identities",
               str(ids), "--reload-interval", "0") as base:
        yield base


def _auth(who: str) -> dict:
    return {"Authorization": f"Bearer {LONG_TOKEN}"} if who == LONG else bearer(who)


def _world(base: str) -> dict:
    """A plan, a held gate and a batch, asked for by the reviewer with the long name, with
    long unbroken values."""
    act = {"workflow": "replies", "type": "send", "amount": 20, "promise": False, "id": "m-" + "x" * 120,
           "note": "an unbroken note " + "y" * 200}
    with httpx.Client(base_url=base, timeout=30) as c:
        def executed(action: dict) -> str:
            g = c.post("/v1/gate", json={"action": action}, headers=bearer("ops")).json()
            return c.post("/v1/executions", json={"decision_id": g["decision_id"], "receipt": {
                "message": "z" * 300, "ticket": "T-1"}}, headers=bearer("ops")).json()["execution_id"]

        rb = c.post("/v1/rollbacks", json={"execution_id": executed(act), "scenario": "customer_request",
                                           "reason": "r" * 300}, headers=_auth(LONG)).json()["rollback_id"]
        held = c.post("/v1/gate", json={"action": {**act, "amount": 500, "id": "held-" + "h" * 100}},
                      headers=_auth(LONG)).json()
        assert held["decision"]["effect"] == "require_approval"
        b = c.post("/v1/rollbacks/batches", json={"executions": [executed({**act, "id": f"b{i}"}) for i in range(2)],
                                                  "scenario": "customer_request", "reason": "incident " + "q" * 200},
                   headers=_auth(LONG)).json()["batch_id"]
    return {"queue": "/ui", "plan": f"/ui/plans/{rb}", "gate": f"/ui/decisions/{held['decision_id']}",
            "batch": f"/ui/batches/{b}", "rb": rb}


def _sign_in(driver, base: str, token: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(base + "/ui/login")
    driver.find_element(By.ID, "token").send_keys(token)
    _submit(driver, driver.find_element(By.ID, "signin"))


def _decisions(base: str, rb: str) -> list:
    h = httpx.get(f"{base}/v1/history/{rb}", headers=bearer("ops"), timeout=30).json()
    return [(a["body"]["principal"], a["body"]["verdict"], a["body"].get("note"))
            for a in h["rollback"]["approvals"]]


def test_every_page_fits_a_phone_and_long_names_wrap(browser, server):  # noqa: F811
    from selenium.webdriver.common.by import By

    pages = _world(server)
    browser.set_window_size(*PHONE)
    _sign_in(browser, server, LONG_TOKEN)
    for name in ("queue", "plan", "gate", "batch"):
        browser.get(server + pages[name])
        width = browser.execute_script("return document.documentElement.clientWidth")
        assert browser.execute_script("return document.documentElement.scrollWidth") <= width, name
        # the signed-in name and every long name, id and value is on screen, wrapped (a wide
        # table may scroll inside its section, never the page)
        who = browser.find_element(By.ID, "who").rect
        assert who["x"] >= 0 and who["x"] + who["width"] <= width, (name, who)
        off = browser.execute_script("""
            const W = document.documentElement.clientWidth, out = [];
            for (const e of document.querySelectorAll('h1, h2, p, pre, strong, code, #msg, #error, label, button')) {
              if (e.closest('table')) continue;  // (a table scrolls in its section)
              const r = e.getBoundingClientRect();
              if (r.right > W + 1) out.push(e.tagName + ' ' + e.textContent.slice(0, 40));
            }
            return out;""")
        assert off == [], (name, off)
        for sec in browser.find_elements(By.CSS_SELECTOR, "section"):
            assert sec.rect["x"] + sec.rect["width"] <= width + 1, (name, sec.text[:60])
        # every control is labelled; every time shown has its zone
        unlabelled = browser.execute_script("""
            return [...document.querySelectorAll('input:not([type=hidden]), textarea, select, button')]
              .filter(e => !((e.labels && e.labels.length) || e.getAttribute('aria-label') || e.textContent.trim()))
              .map(e => e.outerHTML.slice(0, 80));""")
        assert unlabelled == [], (name, unlabelled)
        text = browser.find_element(By.TAG_NAME, "body").text
        stamps = re.findall(r"\d{4}-\d\d-\d\dT[0-9:.]+Z?", text)
        assert stamps and all(s.endswith("Z") for s in stamps), (name, stamps)


def test_a_reviewer_decides_with_the_keyboard_alone(browser, server):  # noqa: F811
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    pages = _world(server)
    browser.set_window_size(*PHONE)
    _sign_in(browser, server, TOKENS["casey"][0])
    browser.get(server + pages["plan"])
    order = []
    for _ in range(20):  # Tab to the reason, in reading order
        ActionChains(browser).send_keys(Keys.TAB).perform()
        order.append(browser.execute_script("return document.activeElement.id || document.activeElement.tagName"))
        if order[-1] == "reason":
            break
    assert order[-1] == "reason", order
    ActionChains(browser).send_keys("checked with the customer").perform()
    ActionChains(browser).send_keys(Keys.TAB).perform()
    assert browser.execute_script("return document.activeElement.id") == "approve"
    old = browser.find_element(By.TAG_NAME, "html")
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.ID, "msg") and old != d.find_element(
        By.TAG_NAME, "html"))
    msg = browser.find_element(By.ID, "msg")
    assert msg.text == "approved by casey; status approved" and msg.get_attribute("role") == "status"
    assert _decisions(server, pages["rb"]) == [("casey", "approve", "checked with the customer")]


def test_a_form_sent_after_the_session_ended_says_so_and_leads_back(browser, server):  # noqa: F811
    from selenium.webdriver.common.by import By

    pages = _world(server)
    _sign_in(browser, server, TOKENS["casey"][0])
    browser.get(server + pages["plan"])
    browser.find_element(By.ID, "reason").send_keys("the customer asked twice")
    # the session ends while the form is open (signed out in another tab)
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', browser.page_source).group(1)
    cookie = browser.get_cookie("stopline_session")["value"]
    r = httpx.post(f"{server}/ui/logout", data={"csrf": csrf}, cookies={"stopline_session": cookie},
                   follow_redirects=False, timeout=30)
    assert r.status_code == 303
    _submit(browser, browser.find_element(By.ID, "approve"))
    assert browser.current_url == server + "/ui/login"
    error = browser.find_element(By.ID, "error")
    assert error.text == ENDED and error.get_attribute("role") == "alert"
    assert _decisions(server, pages["rb"]) == []
    # signed in again: back at the plan, to decide again
    browser.find_element(By.ID, "token").send_keys(TOKENS["casey"][0])
    _submit(browser, browser.find_element(By.ID, "signin"))
    assert browser.current_url == server + pages["plan"]
    assert browser.find_element(By.ID, "status").text == "pending" and browser.find_element(By.ID, "reason")
    # a plain visit without a session leads back too, and says nothing was lost
    browser.delete_all_cookies()
    browser.get(server + pages["gate"])
    assert browser.current_url == server + "/ui/login" and not browser.find_elements(By.ID, "error")
    browser.find_element(By.ID, "token").send_keys(TOKENS["casey"][0])
    _submit(browser, browser.find_element(By.ID, "signin"))
    assert browser.current_url == server + pages["gate"]


def test_the_loser_of_a_race_is_told_as_an_alert_and_back_sends_nothing_again(browser, server):  # noqa: F811
    from selenium.webdriver.common.by import By

    pages = _world(server)
    _sign_in(browser, server, TOKENS["casey"][0])
    browser.get(server + pages["plan"])  # casey reads the plan ...
    r = httpx.post(f"{server}/v1/approvals", json={"subject": pages["rb"], "verdict": "deny"},
                   headers=bearer("cleo"), timeout=30)  # ... while cleo denies it
    assert r.status_code == 200 and r.json()["status"] == "denied", r.text
    browser.find_element(By.ID, "reason").send_keys("fine by me")
    _submit(browser, browser.find_element(By.ID, "approve"))
    msg = browser.find_element(By.ID, "msg")
    assert msg.text.startswith("not recorded: the rollback is `denied`"), msg.text
    assert msg.get_attribute("role") == "alert"
    assert browser.find_element(By.ID, "status").text == "denied" and browser.find_element(By.ID, "closed")
    before = _decisions(server, pages["rb"])
    assert before == [("cleo", "deny", None)]
    # Back, and Reload: pages are fetched again, nothing is posted again
    browser.back()
    assert browser.current_url == server + pages["plan"]
    assert browser.find_element(By.ID, "status").text == "denied"
    browser.forward()
    browser.refresh()
    assert _decisions(server, pages["rb"]) == before


def test_the_way_back_after_signing_in_is_this_servers_pages_only(tmp_path):
    ids = str(write_identities(tmp_path / "ids.yaml"))
    app = create_app(ServerConfig(str(server_policy_dir(tmp_path)), identities=ids, reload_interval=0))
    with TestClient(app) as c:
        for cookie, to in [("ended:/ui/plans/0190-ab_c.d~e", "/ui/plans/0190-ab_c.d~e"),
                           ("open:/ui/batches/b1", "/ui/batches/b1"), ("open:/ui", "/ui"),
                           ("ended://evil.example/ui", "/ui"), ("open:https://evil.example", "/ui"),
                           ("open:/ui/plans/a/../../../v1/ledger", "/ui"), ("open:/ui/plans/a?x=1", "/ui"),
                           ("open:/ui/logout", "/ui"), ("nonsense", "/ui")]:
            c.cookies.clear()
            c.cookies.set("stopline_back", cookie, path="/ui/login")
            page = c.get("/ui/login").text
            assert ('role="alert"' in page) == (to != "/ui" and cookie.startswith("ended")), cookie
            csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)
            r = c.post("/ui/login", data={"token": TOKENS["casey"][0], "csrf": csrf}, follow_redirects=False)
            assert r.status_code == 303 and r.headers["location"] == to, (cookie, r.headers.get("location"))
            assert 'stopline_back=""' in r.headers.get("set-cookie", ""), cookie  # (used once)
