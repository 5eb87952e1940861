"""Session 21: the reviewer's page says who asked.

A gate records its authenticated caller (``caller`` in the decision's body: ``POST /v1/gate``,
``/v1/gate/batch``, the AuthZEN routes), but the reviewer's page showed no gate decision at
all: the queue listed rollback plans only, ``/ui/plans/{id}`` of a decision was a 404, and a
held gate (``require_approval``) could be decided only over the API, with nothing that shows
a person which agent asked, for what, and why it was held. Now:

- the queue lists the **held gates** (the runtime's ``rt_pending``: waiting for approval,
  oldest first, 100 a page, ``?held=N``) with who asked, the workflow, the action type, the
  deciding rule, when it was gated, until when it is held and the approvals given so far;
- ``/ui/decisions/{id}`` shows who asked (the caller, "not recorded" when the gate had none,
  "(you: ...)" when it is the signed-in reviewer), the workflow and its owners, the action's
  type, id and every field, when it was gated and until when it is held, the matched rules
  with their conditions and values (the deciding one marked), the conditions that could not
  be evaluated, the approvals required, the reversal facts (class, method, window, each
  scenario's route, approvers, notifications and compensations, after the window too), the
  slots and who filled them, every decision on it, and its executions with their rollbacks;
  a held (pending or approved, unclaimed) gate is approved or denied there with a reason as
  the signed-in reviewer, with the plan form's checks (CSRF, another site, a forged principal);
- a rollback plan says who requested it and which execution it reverses, linked to the gate
  decision that let it run and who asked for that; a batch's plans likewise;
- names (callers, requesters, approvers) and field values are escaped (HTML and script in a
  caller's name or a field are shown as text), and a character no one sees (a bidirectional
  override, a zero-width space, a control character) is shown as its JSON escape, so
  ``agent-7<U+202E>`` does not read as another name.

Over HTTP (Starlette's test client, SQLite and PostgreSQL) and in headless Chromium against a
real ``stopline serve`` process (as tests/test_server_ui.py), with no script on the pages.
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
from test_server_ui import _sign_in, _submit, browser  # noqa: E402,F401  (fixtures)

from policy_engine.server import ServerConfig, create_app  # noqa: E402
from policy_engine.server.identity import hash_token  # noqa: E402

#: principals whose names a page must render inert: markup, a quote that would close an
#: attribute, and a right-to-left override that makes a name read as another (the
#: identities file and JWTs refuse that one since session 22; the Python API records it,
#: so the pages must still show it escaped)
EVIL = '<img src=x onerror="document.title=\'pwned\'">"\'&'
BIDI = "agent-7\u202etxen"
HOSTILE_IDS = "".join(f"  - principal: {json.dumps(who)}\n    roles: [{role}]\n    sha256: {hash_token(tok)}\n"
                      for who, role, tok in ((EVIL, "reviewer", "tok-evil"),))
EVIL_H = {"Authorization": "Bearer tok-evil"}
SCRIPT = "<script>document.title='pwned'</script>"


def send(amount: float, **extra) -> dict:
    return {"workflow": "replies", "type": "send", "amount": amount, "promise": False, **extra}


@pytest.fixture
def app(tmp_path, ledger_url):  # noqa: F811
    ids = str(write_identities(tmp_path / "ids.yaml", HOSTILE_IDS))
    with TestClient(create_app(ServerConfig(str(server_policy_dir(tmp_path)), ledger=ledger_url, identities=ids,
                                            reload_interval=0))) as c:
        yield c


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)


def text(html: str) -> str:
    """What a person reads: the tags gone, white space collapsed (none before a comma, colon, semicolon or `)`)."""
    return re.sub(r" ([,:;)])", r"\1", unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))).strip())


def by_id(html: str, ident: str) -> str | None:
    """The text of the element ``id="ident"`` (up to its tag's first closing tag)."""
    m = re.search(rf'<(\w+)[^>]* id="{ident}"[^>]*>(.*?)</\1>', html, re.S)
    return None if m is None else text(m.group(2))


def sign_in(c: TestClient, who: str, token: str | None = None) -> None:
    c.cookies.clear()
    r = c.post("/ui/login", data={"token": token or TOKENS[who][0], "csrf": csrf_of(c.get("/ui/login").text)},
               follow_redirects=False)
    assert r.status_code == 303 and "stopline_session" in c.cookies


def gate(c: TestClient, action: dict, headers: dict) -> dict:
    r = c.post("/v1/gate", json={"action": action}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def decide(c: TestClient, path: str, **form) -> tuple[int, str]:
    page = c.get(path)
    assert page.status_code == 200, page.text[:300]
    form.setdefault("csrf", csrf_of(page.text))
    r = c.post(path, data=form, follow_redirects=False)
    if r.status_code != 303:
        return r.status_code, by_id(r.text, "error") or r.text[:300]
    return 303, by_id(c.get(r.headers["location"]).text, "msg")


def approvals(c: TestClient, subject: str) -> list:
    return [(a.body["principal"], a.body["verdict"], a.body.get("note"))
            for a in c.app.state.runtime.ledger.entries(kind="approval", link=subject)]


def held_rows(html: str) -> dict[str, str]:
    """decision id -> the text of its row in the queue's held gates."""
    return {m.group(1): text(m.group(2)) for m in
            re.finditer(r'<tr class="held-row" data-decision="([^"]+)">(.*?)</tr>', html, re.S)}


# ---------------------------------------------------------------------------------- a held gate
def test_a_held_gate_shows_who_asked_what_when_why_and_what_reversing_costs(app):
    g = gate(app, send(500, id="m-1", to="ana@example.com", note="refund the order"), bearer("ops"))
    assert g["decision"]["effect"] == "require_approval"
    sign_in(app, "rita")
    page = app.get(f"/ui/decisions/{g['decision_id']}")
    assert page.status_code == 200
    h = page.text
    assert by_id(h, "asked-by") == "ops"
    assert by_id(h, "status") == "pending"
    assert by_id(h, "workflow").startswith("replies (policy version 1.0)")
    assert "business Support lead · technical Platform" in by_id(h, "workflow")
    assert by_id(h, "action-type") == "send · id m-1"
    body = app.app.state.runtime.ledger.get(g["decision_id"]).body
    assert by_id(h, "when") == f"gated at {body['now']}"
    assert by_id(h, "held-until") == body["pending_until"]
    fields = dict(re.findall(r"<tr><td><code>([^<]*)</code></td><td><code>([^<]*)</code></td></tr>",
                             re.search(r'id="fields">(.*?)</table>', h, re.S).group(1)))
    assert {k: unescape(v) for k, v in fields.items()} == {
        "amount": "500", "id": '"m-1"', "note": '"refund the order"', "promise": "false", "to": '"ana@example.com"',
        "type": '"send"', "workflow": '"replies"'}
    assert by_id(h, "held-reason").startswith("require_approval rule `big` matched")
    matched = text(re.search(r'id="matched">(.*?)</table>', h, re.S).group(1))
    assert "big (decided) rule require_approval action.amount > 100.0 true" in matched
    assert "replies.policy:19:22" in matched
    assert by_id(h, "required") == "Approval required: 1 reviewer (rule big)"
    assert by_id(h, "reversibility") == "partial via email.recall"
    assert by_id(h, "reversal-window").startswith("1d: reversible until ")
    rev = text(re.search(r'id="reversal">(.*?)</table>', h, re.S).group(1))
    assert ("customer_request, within the window route customer_service; authorized by 1 customer_service, "
            "distinct from request.requested_by; notify customer; compensate: send a correction") in rev
    assert "customer_request, after the window" in rev
    assert "its execution must report message, ticket" in rev
    assert "open" in by_id(h, "slots")
    assert 'id="decide"' in h and 'action="/ui/decisions/' in h

    # the queue lists it, with who asked
    q = app.get("/ui").text
    row = held_rows(q)[g["decision_id"]]
    assert row.startswith(f"{g['decision_id'][:8]} ops replies send big {body['now']} {body['pending_until']}")
    assert row.endswith("none yet")
    assert f'href="/ui/decisions/{g["decision_id"]}"' in q
    assert "Held gates · 1 action waiting for approval" in text(q)


def test_the_caller_of_every_gate_route_is_shown_and_a_gate_without_one_says_so(app):
    rt = app.app.state.runtime
    one = gate(app, send(600, id="a"), bearer("casey"))["decision_id"]
    many = app.post("/v1/gate/batch", json={"actions": [send(700, id="b"), send(800, id="c")]},
                    headers=bearer("cleo")).json()["results"]
    bare = rt.gate(send(900, id="d")).decision_id  # the Python API: no caller
    # (last: AuthZEN's `send` has no `promise`, so the stop trigger's condition errs, and stops the workflow)
    ev = app.post("/access/v1/evaluation", json={"subject": {"type": "agent", "id": "a1"},
                                                 "action": {"name": "send", "properties": {"amount": 5.0}},
                                                 "resource": {"type": "ticket", "id": "t1"}}, headers=bearer("rita"))
    az = ev.json()["context"]["decision_id"]
    sign_in(app, "rita")
    rows = held_rows(app.get("/ui").text)
    assert [rows[i].split()[1] for i in (one, many[0]["decision_id"], many[1]["decision_id"])] == \
        ["casey", "cleo", "cleo"]
    assert rows[bare].split()[1:3] == ["not", "recorded"]
    assert az not in rows  # (not held: a stop)
    assert by_id(app.get(f"/ui/decisions/{bare}").text, "asked-by").startswith("not recorded (gated without an")
    # the AuthZEN decision's page: who asked, that it was not held, and why (a condition that erred)
    h = app.get(f"/ui/decisions/{az}").text
    assert by_id(h, "asked-by") == "rita (you)"
    assert by_id(h, "not-held") == "The gate decided stop: this action was not held for approval."
    assert "bad_promise" in text(re.search(r'id="errors">(.*?)</div>', h, re.S).group(1))
    assert 'id="decide"' not in h  # nothing to decide
    # the reviewer who asked is told so on their own request
    sign_in(app, "casey")
    assert by_id(app.get(f"/ui/decisions/{one}").text, "asked-by") == \
        "casey (you: you are deciding on your own request)"


def test_a_reviewer_approves_or_denies_a_held_gate_as_themselves(app):
    rt = app.app.state.runtime
    a, b, c_ = (gate(app, send(500 + i, id=f"x{i}"), bearer("ops"))["decision_id"] for i in range(3))
    sign_in(app, "rita")
    assert decide(app, f"/ui/decisions/{a}", verdict="approve", reason="checked the order") == \
        (303, "approved by rita; status approved")
    assert approvals(app, a) == [("rita", "approve", "checked the order")]
    h = app.get(f"/ui/decisions/{a}").text
    assert by_id(h, "status") == "approved"
    assert "rita approve" in text(re.search(r'id="approvals">(.*?)</table>', h, re.S).group(1))
    assert rt.authorization(a).status == "approved"
    assert held_rows(app.get("/ui").text)[a].endswith("rita approve")  # (approved, not yet used: still on the queue)
    assert decide(app, f"/ui/decisions/{b}", verdict="deny", reason="not this customer") == \
        (303, "denied by rita; status denied")
    assert b not in held_rows(app.get("/ui").text)  # a denied gate waits for nobody
    # a forged principal, a missing CSRF token, a post from another site: refused, nothing recorded
    assert decide(app, f"/ui/decisions/{c_}", verdict="approve", principal="casey")[0] == 403
    assert decide(app, f"/ui/decisions/{c_}", verdict="approve", csrf="00")[0] == 403
    page = app.get(f"/ui/decisions/{c_}").text
    r = app.post(f"/ui/decisions/{c_}", data={"verdict": "approve", "csrf": csrf_of(page)},
                 headers={"sec-fetch-site": "same-site"}, follow_redirects=False)
    assert r.status_code == 403 and "another site" in by_id(r.text, "error")
    assert approvals(app, c_) == []
    # a reviewer without the role: recorded, does not count, and says why
    sign_in(app, "casey")
    status, msg = decide(app, f"/ui/decisions/{c_}", verdict="approve")
    assert status == 303 and msg.startswith("recorded, but it does not count:") and msg.endswith("status pending")
    assert held_rows(app.get("/ui").text)[c_].endswith("casey approve (not counted)")
    # without a session: to the sign-in page, nothing recorded
    app.cookies.clear()
    r = app.post(f"/ui/decisions/{c_}", data={"verdict": "approve"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/login"
    assert len(approvals(app, c_)) == 1


def test_a_plan_form_is_no_way_to_decide_a_gate_nor_a_gate_form_a_plan(app):
    d = gate(app, send(500, id="k"), bearer("ops"))["decision_id"]
    rb = _rollback(app, "rita")
    sign_in(app, "casey")
    page = app.get(f"/ui/plans/{rb}").text
    r = app.post(f"/ui/plans/{d}", data={"verdict": "approve", "csrf": csrf_of(page)}, follow_redirects=False)
    assert r.status_code == 404 and "is a decision, not a rollback plan" in r.json()["detail"]
    r = app.post(f"/ui/decisions/{rb}", data={"verdict": "approve", "csrf": csrf_of(page)}, follow_redirects=False)
    assert r.status_code == 404 and "is a rollback, not a gate decision" in r.json()["detail"]
    assert app.get(f"/ui/decisions/{rb}").status_code == 404
    assert approvals(app, d) == [] and approvals(app, rb) == []


# ---------------------------------------------------------------------------------- rollbacks
def _rollback(c: TestClient, who: str, headers: dict | None = None, asker: dict | None = None) -> str:
    g = gate(c, send(20, id="r1"), asker or bearer("ops"))
    x = c.post("/v1/executions", json={"decision_id": g["decision_id"], "receipt": {"message": "hi", "ticket": 1}},
               headers=bearer("ops")).json()
    r = c.post("/v1/rollbacks", json={"execution_id": x["execution_id"], "scenario": "customer_request",
                                      "reason": "the customer asked"}, headers=headers or bearer(who))
    assert r.status_code == 200, r.text
    return r.json()["rollback_id"]


def test_a_plan_says_who_requested_it_and_links_the_original_it_reverses(app):
    rt = app.app.state.runtime
    rb = _rollback(app, "rita", asker=bearer("cleo"))
    body = rt.ledger.get(rb).body
    x = rt.ledger.get(body["original"])
    sign_in(app, "casey")
    h = app.get(f"/ui/plans/{rb}").text
    assert by_id(h, "requested-by") == "rita"
    assert by_id(h, "original-caller") == "cleo"
    orig = text(re.search(r'id="original">(.*?)</td>', h, re.S).group(1))
    assert orig.startswith(f"the execution {x.id} recorded at {x.time}")
    assert "gated by decision" in orig and "asked by cleo: allow" in orig
    link = re.search(r'id="original-link" href="([^"]+)"', h).group(1)
    assert link == f"/ui/decisions/{x.body['decision']}"
    # the original's page: who asked, its execution, and the rollback of it, linked back
    d = app.get(link).text
    assert by_id(d, "asked-by") == "cleo" and by_id(d, "status") == "executed"
    ex = text(re.search(r'id="executions">(.*?)</table>', d, re.S).group(1))
    assert x.id in ex and f"{rb[:8]} (pending, requested by rita)" in ex
    assert f'href="/ui/plans/{rb}"' in d
    # the requester reviewing their own request is told so
    sign_in(app, "rita")
    assert "(you)" in by_id(app.get(f"/ui/plans/{rb}").text, "requested")


def test_an_execution_without_a_decision_says_so_on_its_plan(app):
    rt = app.app.state.runtime
    x = rt.executed(None, receipt={"message": "m", "ticket": 1}, action=send(5, id="u"))
    rb = rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita", reason="r").rollback_id
    sign_in(app, "casey")
    h = app.get(f"/ui/plans/{rb}").text
    assert by_id(h, "original-caller") == "recorded without a gate decision"
    assert 'id="original-link"' not in h


def test_a_batch_lists_who_asked_for_each_original_and_links_it(app):
    rt = app.app.state.runtime
    gs = app.post("/v1/gate/batch", json={"actions": [send(5, id="b0"), send(6, id="b1")]},
                  headers=bearer("cleo")).json()["results"]
    xs = [rt.executed(g["decision_id"], receipt={"message": "m", "ticket": i}).execution_id for i, g in enumerate(gs)]
    x3 = rt.executed(None, receipt={"message": "m", "ticket": 3}, action=send(7, id="b3")).execution_id
    b = rt.request_bulk_rollback(None, "customer_request", BIDI, "incident", executions=[*xs, x3])
    sign_in(app, "casey")
    h = app.get(f"/ui/batches/{b.batch_id}").text
    assert by_id(h, "requested-by") == "agent-7\\u202etxen"
    rows = [text(m) for m in re.findall(r'<tr class="plan-row">(.*?)</tr>', h, re.S)]
    assert sorted(row.split()[2] for row in rows) == ["cleo", "cleo", "no"]  # ("no gate decision")
    links = re.findall(r'class="original-link" href="/ui/decisions/([^"]+)"', h)
    assert sorted(links) == sorted(g["decision_id"] for g in gs)


# ---------------------------------------------------------------------------------- hostile names and fields
def test_markup_in_a_caller_or_a_field_is_shown_as_text(app):
    g = gate(app, send(500, id="e1", to=SCRIPT, **{"<b>k</b>": "\u202eevil"}), EVIL_H)
    rb = _rollback(app, "", headers=EVIL_H, asker=EVIL_H)
    sign_in(app, "rita")
    pages = {"queue": app.get("/ui").text, "gate": app.get(f"/ui/decisions/{g['decision_id']}").text,
             "plan": app.get(f"/ui/plans/{rb}").text}
    for name, h in pages.items():
        assert "<img" not in h and "<script" not in h and "onerror=\"" not in h, name
        assert "javascript:" not in h, name
    esc = "&lt;img src=x onerror=&#34;document.title=&#39;pwned&#39;&#34;&gt;&#34;&#39;&amp;"
    assert esc in pages["queue"] and esc in pages["gate"] and esc in pages["plan"]
    assert by_id(pages["gate"], "asked-by") == EVIL
    assert by_id(pages["plan"], "requested-by") == EVIL and by_id(pages["plan"], "original-caller") == EVIL
    fields = re.search(r'id="fields">(.*?)</table>', pages["gate"], re.S).group(1)
    assert "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;" in fields
    assert "<code>&lt;b&gt;k&lt;/b&gt;</code>" in fields
    assert "\u202e" not in pages["gate"] and '"\\u202eevil"' in unescape(fields)
    # and the pages still run no script at all
    r = app.get(f"/ui/decisions/{g['decision_id']}")
    assert "script-src" not in r.headers["content-security-policy"]
    assert r.headers["content-security-policy"].startswith("default-src 'none'")


def test_a_name_that_reads_as_another_is_shown_with_its_unseen_characters(app):
    g = app.app.state.runtime.gate(send(500, id="bd"), caller=BIDI)  # (the Python API records any name)
    sign_in(app, "rita")
    h = app.get(f"/ui/decisions/{g.decision_id}").text
    assert by_id(h, "asked-by") == "agent-7\\u202etxen"
    assert "\u202e" not in h and "\u202e" not in app.get("/ui").text


def test_the_held_gates_come_a_page_at_a_time_oldest_first(app):
    from policy_engine.server.batchview import HELD_SHOWN

    rt = app.app.state.runtime
    ids = [g.decision_id for g in rt.gate_many([send(200 + i, id=f"p{i}") for i in range(HELD_SHOWN + 3)],
                                               caller="bulk-agent")]
    sign_in(app, "rita")
    first = app.get("/ui").text
    assert list(held_rows(first)) == ids[:HELD_SHOWN]
    assert f"Showing {HELD_SHOWN} of {HELD_SHOWN + 3} held gates (oldest first), page 1 of 2." in text(first)
    assert 'id="held-next" href="?held=2"' in first
    second = app.get("/ui?held=2").text
    assert list(held_rows(second)) == ids[HELD_SHOWN:]
    assert list(held_rows(app.get("/ui?held=9").text)) == ids[HELD_SHOWN:]  # past the end: the last page


# ---------------------------------------------------------------------------------- in the browser
@pytest.fixture
def server(tmp_path):
    ids = write_identities(tmp_path / "ids.yaml", HOSTILE_IDS)
    with serve(str(server_policy_dir(tmp_path)), "--ledger", f"sqlite:///{tmp_path / 'l.db'}", "--identities",
               str(ids), "--reload-interval", "0") as base:
        yield base


def test_in_the_browser_a_reviewer_sees_who_asked_and_approves_the_held_gate(browser, server):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    with httpx.Client(base_url=server, timeout=30) as c:
        g = c.post("/v1/gate", json={"action": send(500, id="w1", to=SCRIPT,
                                                     note='<img src=x onerror="document.title=\'pwned\'">')},
                   headers=EVIL_H).json()
    _sign_in(browser, server, "rita")
    row = browser.find_element(By.CSS_SELECTOR, f'tr.held-row[data-decision="{g["decision_id"]}"]')
    assert row.find_element(By.CSS_SELECTOR, "td.asked-by").text == EVIL
    _submit(browser, row.find_element(By.CSS_SELECTOR, "a.decision-link"))
    assert browser.current_url.endswith(f"/ui/decisions/{g['decision_id']}")
    assert browser.find_element(By.ID, "asked-by").text == EVIL
    assert browser.find_element(By.ID, "status").text == "pending"
    fields = browser.find_element(By.ID, "fields")
    assert f'"{SCRIPT}"' in fields.text
    assert not fields.find_elements(By.TAG_NAME, "img") and not browser.find_elements(By.TAG_NAME, "script")
    assert "big (decided)" in browser.find_element(By.ID, "matched").text
    assert browser.find_element(By.ID, "reversibility").text == "partial via email.recall"
    browser.find_element(By.ID, "reason").send_keys("the order is real")
    _submit(browser, browser.find_element(By.ID, "approve"))
    assert browser.find_element(By.ID, "status").text == "approved"
    assert browser.find_element(By.ID, "msg").text == "approved by rita; status approved"
    assert browser.find_element(By.CSS_SELECTOR, "#slots td.filled").text == "rita"
    assert "pwned" not in browser.title
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018
