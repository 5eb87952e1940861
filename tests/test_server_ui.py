"""The reviewer's page in a real browser: headless Chromium from Debian's ``chromium``
package driven by Selenium (``/usr/bin/chromium`` and ``/usr/bin/chromedriver``, nothing
downloaded) against a real ``stopline serve`` process. A reviewer signs in, opens a plan,
approves, and sees the verdict change; a second reviewer cannot approve as the first.

``STOPLINE_UI_SCREENSHOT=PATH`` saves the approved plan page there (docs/img/reviewer.png).
``STOPLINE_REQUIRE_BROWSER=1`` (set by .ci/run) fails instead of skipping without Chromium."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402
from server_support import TOKENS, bearer, serve, write_identities  # noqa: E402

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,1400")


@pytest.fixture
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
        if os.environ.get("STOPLINE_REQUIRE_BROWSER") == "1":
            pytest.fail("Chromium is required here: apt-get install -y chromium chromium-driver")
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    webdriver = pytest.importorskip("selenium.webdriver")
    profile = tempfile.mkdtemp(prefix="stopline-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in FLAGS:
        opts.add_argument(f)
    opts.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=DRIVER))
    driver.set_page_load_timeout(120)  # (a hang guard: a loaded machine's Chromium can take its time)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def server(tmp_path):
    from server_support import SERVER_POLICY

    pol = tmp_path / "policies"
    pol.mkdir()
    (pol / "replies.policy").write_text(SERVER_POLICY, encoding="utf-8")
    ids = write_identities(tmp_path / "ids.yaml")
    with serve(str(pol), "--ledger", f"sqlite:///{tmp_path / 'l.db'}", "--identities", str(ids),
               "--reload-interval", "0") as base:
        yield base


def _plan(base: str, n: int) -> str:
    """An executed reply, rolled back at rita's request: a pending plan on customer_service."""
    with httpx.Client(base_url=base, headers=bearer("ops"), timeout=30) as c:
        g = c.post("/v1/gate", json={"action": {"workflow": "replies", "type": "send", "amount": 20 + n,
                                                "promise": False, "id": f"m{n}"}}).json()
        x = c.post(
            "/v1/executions",
            json={
                "decision_id": g["decision_id"],
                "receipt": {"message": f"Your refund #{n} is on its way", "ticket": f"T-{n}"},
            },
        ).json()
        r = c.post(
            "/v1/rollbacks",
            json={
                "execution_id": x["execution_id"],
                "scenario": "customer_request",
                "reason": "the customer asked us to withdraw the reply",
            },
            headers=bearer("rita"),
        ).json()
        return r["rollback_id"]



def _submit(driver, element) -> None:
    """Click something that loads a new page and wait until the old page is gone: reading
    the next page right after `click()` races the navigation (no time is asserted)."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element(By.TAG_NAME, "html")
    element.click()

    def old_page_gone(_d) -> bool:  # `expected_conditions.staleness_of`, and Chrome's other word for it
        try:
            old.is_enabled()
            return False
        except StaleElementReferenceException:
            return True
        except WebDriverException as e:  # asked mid-navigation, Chrome may answer "Node with given id
            if "does not belong to the document" in str(e):  # does not belong to the document"
                return True
            raise

    WebDriverWait(driver, 60).until(old_page_gone)
    # the new document may still be parsing when the old one is detached: a node found then
    # can be dropped from the DOM before it is used ("Node with given id does not belong to
    # the document" in a full CI run); wait until the new page has loaded
    WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.readyState") == "complete")

def _sign_in(driver, base: str, who: str) -> None:
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    driver.get(base + "/ui/login")
    driver.find_element(By.ID, "token").send_keys(TOKENS[who][0])
    _submit(driver, driver.find_element(By.ID, "signin"))
    assert f"signed in as {who}" in driver.find_element(By.ID, "who").text


def _approvals(base: str, rb: str) -> list:
    h = httpx.get(f"{base}/v1/history/{rb}", headers=bearer("ops"), timeout=30).json()
    return [(a["body"]["principal"], a["body"]["verdict"]) for a in h["rollback"]["approvals"]]


def test_reviewer_signs_in_opens_a_plan_and_approves(browser, server):
    from selenium.webdriver.common.by import By

    first, second = _plan(server, 1), _plan(server, 2)
    _sign_in(browser, server, "casey")
    browser.get(server + "/ui")
    route = browser.find_element(By.CSS_SELECTOR, 'section.route[data-route="customer_service"]')
    links = route.find_elements(By.CSS_SELECTOR, "a.plan-link")
    assert len(links) == 2
    _submit(browser, links[0])
    assert browser.current_url.endswith(f"/ui/plans/{first}")
    assert browser.find_element(By.ID, "status").text == "pending"
    assert "standard" in browser.find_element(By.ID, "window").text
    assert "Your refund #1" in browser.find_element(By.ID, "receipt").text
    assert '"amount": 21' in browser.find_element(By.ID, "action").text
    assert "open" in browser.find_element(By.CSS_SELECTOR, "#slots td.filled").text
    assert "send" in browser.find_element(By.ID, "cascade").text
    browser.find_element(By.ID, "reason").send_keys("the customer confirmed by phone")
    _submit(browser, browser.find_element(By.ID, "approve"))
    assert browser.find_element(By.ID, "status").text == "approved"
    assert "approved by casey" in browser.find_element(By.ID, "msg").text
    assert browser.find_element(By.CSS_SELECTOR, "#slots td.filled").text == "casey"
    shot = os.environ.get("STOPLINE_UI_SCREENSHOT")
    if shot:
        browser.save_screenshot(shot)
    assert _approvals(server, first) == [("casey", "approve")]

    # a second reviewer cannot approve as the first: a forged `principal` field is refused
    _sign_in(browser, server, "cleo")
    browser.get(f"{server}/ui/plans/{second}")
    browser.execute_script(
        "const i = document.createElement('input'); i.type = 'hidden'; i.name = 'principal'; i.value = 'casey';"
        "document.getElementById('decide').appendChild(i);"
    )
    _submit(browser, browser.find_element(By.ID, "approve"))
    assert "refused: you are signed in as cleo" in browser.find_element(By.ID, "error").text
    assert browser.find_element(By.ID, "status").text == "pending"
    assert _approvals(server, second) == []
    # and the session cookie is not readable by scripts
    assert browser.execute_script("return document.cookie") == ""


def test_without_a_session_the_page_asks_to_sign_in(browser, server):
    from selenium.webdriver.common.by import By

    browser.get(server + "/ui")
    assert browser.current_url.endswith("/ui/login")
    browser.find_element(By.ID, "token").send_keys("not-a-token")
    _submit(browser, browser.find_element(By.ID, "signin"))
    assert "unknown or revoked token" in browser.find_element(By.ID, "error").text


def test_sign_out_in_the_browser_ends_the_session(browser, server):
    from selenium.webdriver.common.by import By

    _sign_in(browser, server, "casey")
    _submit(browser, browser.find_element(By.CSS_SELECTOR, "#signout button"))
    assert browser.current_url.endswith("/ui/login")
    browser.get(server + "/ui")
    assert browser.current_url.endswith("/ui/login") and not browser.find_elements(By.ID, "who")


@pytest.fixture
def attacker_site():
    """Another web server on this host (another port: the same site, not the same origin),
    serving whatever page the test gives it; yields (set_page, its base URL)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from server_support import free_port

    served: dict = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = served["html"].encode()
            self.send_response(200)
            for k, v in served.get("headers", {}).items():
                self.send_header(k, v)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()

    def set_page(html: str, headers: dict | None = None) -> None:
        served["html"], served["headers"] = html, headers or {}

    try:
        yield set_page, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_another_site_cannot_sign_the_browser_in_as_the_attacker(browser, server, attacker_site):
    """Login CSRF: a page elsewhere posts the sign-in form with the attacker's own token, so
    that the victim would approve as the attacker, or the attacker would see what the victim
    does. The attacker opens the sign-in form in their own client first (a CSRF token and the
    cookie it is bound to) and plants that cookie in the victim's browser from another port of
    the same host (cookies do not keep to ports). Refused: the browser says the form came from
    another site (Sec-Fetch-Site), and a page from elsewhere has neither the cookie nor the token."""
    import re

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    set_page, elsewhere = attacker_site
    with httpx.Client(base_url=server, timeout=30) as theirs:
        csrf = re.search(r'name="csrf" value="([^"]+)"', theirs.get("/ui/login").text).group(1)
        nonce = theirs.cookies["stopline_login"]
        # (the form the attacker will make the victim post is a good one: from the attacker's own client it signs in)
        probe = httpx.Client(base_url=server, timeout=30, cookies={"stopline_login": nonce})
        with probe:
            assert probe.post("/ui/login", data={"token": TOKENS["ops"][0], "csrf": csrf},
                              follow_redirects=False).status_code == 303
    form = (f'<form method="post" action="{server}/ui/login"><input name="token" value="{TOKENS["ops"][0]}">'
            f'<input name="csrf" value="{csrf}"></form><script>document.forms[0].submit()</script>')
    set_page(form, {"set-cookie": f"stopline_login={nonce}; Path=/ui/login"})
    for page in (elsewhere + "/", "data:text/html," + form):  # the same site (another port), another site
        browser.delete_all_cookies()
        browser.get(server + "/ui/login")  # the victim has the sign-in page open (a cookie of their own)
        browser.get(page)
        WebDriverWait(browser, 60).until(lambda d: d.current_url.startswith(server + "/ui")
                                         and d.execute_script("return document.readyState") == "complete")
        who = [e.text for e in browser.find_elements(By.ID, "who")]
        assert who == [], f"{page}: the browser was signed in by another site: {who}"
        assert "refused: the form was sent from another site" in browser.find_element(By.ID, "error").text, page
        browser.get(server + "/ui")
        assert browser.current_url.endswith("/ui/login") and not browser.find_elements(By.ID, "who"), page
