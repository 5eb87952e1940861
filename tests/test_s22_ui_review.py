"""Session 22: the reviewer's page, finished and audited.

- ``Runtime.held()``: the gate decisions waiting for approval, oldest first, a page at a time
  (the queue's held gates read it; the page no longer calls the runtime's private ``_sync``);
- the approve/deny form is one Jinja macro (``templates/_decide.html``) for a plan, a held
  gate and a batch; the signed-in reviewer's name in it is shown with its unseen characters
  on every page (the plan's and the batch's showed a right-to-left override raw);
- the queue's two pagers (``?page=`` for the single plans, ``?held=`` for the held gates)
  carry each other: paging one list no longer sends the other back to its first page;
- a held gate whose workflow was stopped after it says that, approved or not, it cannot run
  (``Runtime.stopped_after``: its claim is refused), where the page offered an approval
  that could never be used;
- a plan that takes no more approvals (denied, cancelled, completed...) shows no form, and a
  form posted to a decision or plan that ran or expired meanwhile is answered in words;
- the names and notes of the plan and batch pages (who filled a slot, who was not counted,
  who claimed, a reason given on a batch) show their unseen characters as the gate's page
  does; a decision's message and an error are announced (``role="status"``/``"alert"``).

Over HTTP (Starlette's test client) on SQLite and PostgreSQL.
"""

from __future__ import annotations

import inspect
import re

import pytest

pytest.importorskip("fastapi")
from ledger_fixtures import ledger_url  # noqa: E402,F401  (SQLite and PostgreSQL)
from server_support import bearer, server_policy_dir, write_identities  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402
from test_s21_reviewer_who_asked import (  # noqa: E402
    by_id,
    csrf_of,
    decide,
    gate,
    held_rows,
    send,
    sign_in,
)

from policy_engine.runtime import RuntimeUsageError  # noqa: E402
from policy_engine.server import ServerConfig, create_app  # noqa: E402

BIDI = "agent-7\u202etxen"  #: a name that reads as another (a right-to-left override)
BIDI_SHOWN = "agent-7\\u202etxen"  #: as the pages show it


@pytest.fixture
def app(tmp_path, ledger_url):  # noqa: F811
    ids = str(write_identities(tmp_path / "ids.yaml"))
    with TestClient(create_app(ServerConfig(str(server_policy_dir(tmp_path)), ledger=ledger_url, identities=ids,
                                            reload_interval=0))) as c:
        yield c


def _plan(c: TestClient, n: int = 0) -> str:
    rt = c.app.state.runtime
    x = rt.executed(None, receipt={"message": "m", "ticket": n}, action=send(5, id=f"u{n}"))
    return rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="casey",
                               reason="r").rollback_id


# ---------------------------------------------------------------------------------- Runtime.held
def test_held_lists_the_waiting_gates_oldest_first_a_page_at_a_time(app):
    rt = app.app.state.runtime
    ids = [g.decision_id for g in rt.gate_many([send(200 + i, id=f"h{i}") for i in range(5)], caller="agent")]
    rt.gate(send(5, id="small"))  # allowed: waits for nobody
    assert rt.held() == (5, [rt.ledger.get(i) for i in ids])
    total, page = rt.held(limit=2, offset=2)
    assert total == 5 and [e.id for e in page] == ids[2:4]
    assert rt.held(limit=0) == (5, [])
    assert rt.held(limit=3, offset=9) == (5, [])
    # a denied gate, and a used one, leave it
    rt.approve(ids[0], principal="rita", roles=["reviewer"], verdict="deny")
    rt.approve(ids[1], principal="rita", roles=["reviewer"])
    assert [e.id for e in rt.held()[1]] == ids[1:]  # (approved, not yet claimed: still waiting to be used)
    rt.executed(ids[1], receipt={"message": "m", "ticket": 1})
    assert [e.id for e in rt.held()[1]] == ids[2:]
    for bad in ({"limit": -1}, {"limit": True}, {"offset": None}, {"offset": "2"}):
        with pytest.raises(RuntimeUsageError):
            rt.held(**bad)


def test_the_page_reads_the_held_gates_through_the_public_read():
    from policy_engine.server import batchview

    assert "._sync(" not in inspect.getsource(batchview)


# ---------------------------------------------------------------------------------- one form
def _form(html: str) -> str:
    return re.search(r'<form method="post" action="/ui/(?:plans|decisions|batches)/[^"]+" id="decide">.*?</form>',
                     html, re.S).group(0)


def test_the_decide_form_is_the_same_on_a_plan_a_gate_and_a_batch(app):
    from policy_engine.server.ui import MAX_REASON

    rt = app.app.state.runtime
    d = gate(app, send(500, id="g"), bearer("ops"))["decision_id"]
    rb = _plan(app)
    xs = [rt.executed(None, receipt={"message": "m", "ticket": i}, action=send(5, id=f"b{i}")).execution_id
          for i in range(2)]
    b = app.post("/v1/rollbacks/batches", json={"executions": xs, "scenario": "customer_request", "reason": "x"},
                 headers=bearer("casey")).json()["batch_id"]
    sign_in(app, "cleo")
    forms = {k: _form(app.get(f"/ui/{k}/{i}").text) for k, i in (("plans", rb), ("decisions", d), ("batches", b))}
    for kind, f in forms.items():
        assert re.search(r'<input type="hidden" name="csrf" value="[0-9a-f]+">', f), kind
        assert "<p>You decide as <strong>cleo</strong> with the roles customer_service" in f, kind
        assert f'<label for="reason">Reason</label>\n<textarea id="reason" name="reason" rows="2" ' \
               f'maxlength="{MAX_REASON}"></textarea>' in f, kind
        assert 'name="verdict" value="approve" id="approve"' in f and 'name="verdict" value="deny" id="deny"' in f
    assert f'<input type="hidden" name="batch_hash" value="{rt.ledger.get(b).body["batch_hash"]}">' in forms["batches"]
    assert ">Approve the batch</button>" in forms["batches"] and ">Approve</button>" in forms["plans"]
    assert "with the roles customer_service.</p>" in forms["plans"]
    assert "asked by <strong>ops</strong>" in forms["decisions"]
    assert decide(app, f"/ui/plans/{rb}", verdict="approve", reason="ok") == (303, "approved by cleo; status approved")


def test_the_form_shows_the_reviewer_with_unseen_characters_on_every_page():
    from policy_engine.server.ui import _env

    class Who:
        principal, roles = BIDI, ["customer_service"]

    env = _env()
    base = {"caller": Who(), "csrf": "c0", "id": "s1", "msg": None, "error": None}
    pages = {
        "plan.html": {"auth": {"status": "pending", "claim_id": None}, "body": {}, "plan": {"cascade": {"steps": []}},
                      "execution": {}, "action": {}, "receipt": None, "gate": None, "past_window": False},
        "decision.html": {"auth": {"status": "pending"}, "entry": {}, "body": {}, "asked": {"action": {}},
                          "dec": {}, "fields": [], "matched": [], "approvals": [], "transitions": [],
                          "executions": [], "past": False, "held": True, "stopped": None},
        "batch.html": {"head": {"batch_hash": "h"}, "auth": None, "state": {"by_status": {}}, "plans": [], "page": 1,
                       "pages": 1, "total": 0, "first": None, "approvals": []},
    }
    for name, ctx in pages.items():
        f = _form(env.get_template(name).render(**base, **ctx))
        assert f"You decide as <strong>{BIDI_SHOWN}</strong>" in f and "\u202e" not in f, name


# ---------------------------------------------------------------------------------- the queue's two pagers
def test_paging_the_plans_keeps_the_held_page_and_paging_the_held_gates_keeps_the_plans_page(app, monkeypatch):
    from policy_engine.server import batchview, ui

    monkeypatch.setattr(ui, "QUEUE_SHOWN", 2)
    monkeypatch.setattr(batchview, "HELD_SHOWN", 2)
    rt = app.app.state.runtime
    held = [g.decision_id for g in rt.gate_many([send(200 + i, id=f"q{i}") for i in range(5)], caller="agent")]
    plans = [_plan(app, i) for i in range(5)]
    sign_in(app, "rita")

    def shown(url: str) -> tuple[list, list]:
        h = app.get(url).text
        return list(held_rows(h)), re.findall(r'class="plan-link" href="/ui/plans/([^"]+)"', h)

    h = app.get("/ui?page=2&held=2").text
    assert shown("/ui?page=2&held=2") == (held[2:4], plans[2:4])
    links = dict(re.findall(r'id="((?:held-)?(?:first|prev|next|last)(?:-page)?)" href="([^"]+)"', h))
    assert links == {"held-first": "?held=1&amp;page=2", "held-prev": "?held=1&amp;page=2",
                     "held-next": "?held=3&amp;page=2", "held-last": "?held=3&amp;page=2",
                     "first-page": "?page=1&amp;held=2", "prev-page": "?page=1&amp;held=2",
                     "next-page": "?page=3&amp;held=2", "last-page": "?page=3&amp;held=2"}
    # following a link of one list moves that list only
    assert shown("/ui" + links["held-next"].replace("&amp;", "&")) == (held[4:], plans[2:4])
    assert shown("/ui" + links["next-page"].replace("&amp;", "&")) == (held[2:4], plans[4:])
    # on the first page of the other list, the links name only their own
    first = app.get("/ui?held=2").text
    assert 'id="held-next" href="?held=3"' in first and 'id="next-page" href="?page=2&amp;held=2"' in first


# ---------------------------------------------------------------------------------- a workflow stopped since
def test_a_held_gate_of_a_workflow_stopped_since_says_it_cannot_run(app):
    rt = app.app.state.runtime
    d = gate(app, send(500, id="s1"), bearer("ops"))["decision_id"]
    sign_in(app, "rita")
    assert 'id="stopped"' not in app.get(f"/ui/decisions/{d}").text
    assert rt.stopped_after(d) is None and "stopped" not in held_rows(app.get("/ui").text)[d]
    stop = gate(app, send(5, id="s2", promise=True), bearer("ops"))
    assert stop["decision"]["effect"] == "stop"
    said = rt.stopped_after(d)
    assert said is not None and said["trigger"] == "bad_promise" and said["stop_id"] == stop["stop_id"]
    h = app.get(f"/ui/decisions/{d}").text
    assert by_id(h, "stopped") == (f"Its workflow replies was stopped by bad_promise at {said['stopped_at']}, after "
                                   "this gate: approved or not, this action cannot run now (its claim is refused). "
                                   "Deny it to close it; once the workflow is resumed, the action must be gated again.")
    assert 'role="alert" id="stopped"' in h
    # the queue marks it among the held gates; a gate held after the stop is not marked
    assert rt.resume("replies", evidence={"fixed": True}, principal="ops").allowed
    after = gate(app, send(400, id="s3"), bearer("ops"))["decision_id"]
    rows = held_rows(app.get("/ui").text)
    assert rows[d].endswith("workflow stopped since: it cannot run none yet")
    assert "stopped" not in rows[after]
    # and so it is: approved, its claim is refused
    assert decide(app, f"/ui/decisions/{d}", verdict="approve") == (303, "approved by rita; status approved")
    assert "id=\"stopped\"" in app.get(f"/ui/decisions/{d}").text
    assert rt.claim_execution(d, principal="ops").recorded is False


# ---------------------------------------------------------------------------------- closed subjects
def test_a_plan_that_takes_no_more_decisions_shows_no_form_and_a_late_post_is_answered(app):
    rt = app.app.state.runtime
    rb = _plan(app)
    sign_in(app, "casey")
    page = app.get(f"/ui/plans/{rb}").text
    assert 'id="decide"' in page and 'id="closed"' not in page
    rt.cancel(rb, principal="ops", reason="withdrawn")  # (in another tab, by someone else)
    h = app.get(f"/ui/plans/{rb}").text
    assert 'id="decide"' not in h
    assert by_id(h, "closed") == "This plan is cancelled: it takes no more approvals or denials."
    # the form of the page loaded before: answered, nothing recorded, no error page
    r = app.post(f"/ui/plans/{rb}", data={"verdict": "approve", "csrf": csrf_of(page)}, follow_redirects=False)
    assert r.status_code == 303
    msg = by_id(app.get(r.headers["location"]).text, "msg")
    assert msg.startswith("not recorded: the rollback is `cancelled`: it takes no approvals")
    assert rt.ledger.entries(kind="approval", link=rb) == []


def test_a_gate_form_posted_after_the_gate_ran_or_expired_is_answered(app):
    rt = app.app.state.runtime
    ran = gate(app, send(500, id="r1"), bearer("ops"))["decision_id"]
    old = rt.gate(send(500, id="r2"), now="2020-01-01T00:00:00Z").decision_id
    sign_in(app, "rita")
    pages = {i: app.get(f"/ui/decisions/{i}").text for i in (ran,)}
    rt.approve(ran, principal="rita", roles=["reviewer"])
    rt.executed(ran, receipt={"message": "m", "ticket": 1})
    r = app.post(f"/ui/decisions/{ran}", data={"verdict": "approve", "csrf": csrf_of(pages[ran])},
                 follow_redirects=False)
    assert r.status_code == 303
    assert by_id(app.get(r.headers["location"]).text, "msg").startswith(
        "not recorded: the decision is `executed`: it takes no approvals")
    h = app.get(f"/ui/decisions/{old}").text
    assert by_id(h, "status") == "expired" and 'id="decide"' not in h
    r = app.post(f"/ui/decisions/{old}", data={"verdict": "deny", "csrf": csrf_of(h)}, follow_redirects=False)
    assert r.status_code == 303 and by_id(app.get(r.headers["location"]).text, "msg").startswith(
        "not recorded: the decision is `expired`")


# ---------------------------------------------------------------------------------- unseen characters
def test_names_and_notes_on_the_plan_and_batch_pages_show_their_unseen_characters(app):
    rt = app.app.state.runtime
    rb = _plan(app)
    assert rt.approve(rb, principal=BIDI, roles=["customer_service"]).counted
    assert rt.approve(rb, principal="r\u202eita", roles=["reviewer"]).counted is False
    rt.claim(rb, principal="ops\u202eevil")
    sign_in(app, "rita")
    h = app.get(f"/ui/plans/{rb}").text
    assert "\u202e" not in h
    assert by_id(h, "slots").endswith(BIDI_SHOWN)
    assert by_id(h, "rejected").startswith("not counted: r\\u202eita")
    assert by_id(h, "claimed").startswith("by ops\\u202eevil")

    xs = [rt.executed(None, receipt={"message": "m", "ticket": i}, action=send(5, id=f"n{i}")).execution_id
          for i in range(2)]
    b = app.post("/v1/rollbacks/batches", json={"executions": xs, "scenario": "customer_request", "reason": "x"},
                 headers=bearer("casey")).json()["batch_id"]
    r = rt.approve_batch(b, principal=BIDI, roles=["customer_service"], batch_hash=rt.ledger.get(b).body["batch_hash"],
                         note="ok\u202eyas")
    assert r["counted"] == 2
    h = app.get(f"/ui/batches/{b}").text
    assert "\u202e" not in h
    assert by_id(h, "approvals").endswith(f"{BIDI_SHOWN} approve {rt.ledger.get(r['approval_id']).body['at']} "
                                          "ok\\u202eyas")
    assert by_id(h, "slots").endswith(BIDI_SHOWN)


def test_a_message_and_an_error_are_announced(app):
    d = gate(app, send(500, id="a1"), bearer("ops"))["decision_id"]
    sign_in(app, "rita")
    page = app.get(f"/ui/decisions/{d}").text
    r = app.post(f"/ui/decisions/{d}", data={"verdict": "approve", "csrf": "00"}, follow_redirects=False)
    assert r.status_code == 403 and '<section class="error" role="alert" id="error">' in r.text
    r = app.post(f"/ui/decisions/{d}", data={"verdict": "approve", "csrf": csrf_of(page)}, follow_redirects=False)
    assert '<section class="msg" role="status" id="msg">' in app.get(r.headers["location"]).text


def test_a_reason_with_control_characters_is_recorded_or_refused_in_words(app):
    d = gate(app, send(500, id="c1"), bearer("ops"))["decision_id"]
    sign_in(app, "rita")
    for reason in ("a\x00b", "bell\x07", "x\u202ey"):
        page = app.get(f"/ui/decisions/{d}").text
        r = app.post(f"/ui/decisions/{d}", data={"verdict": "approve", "csrf": csrf_of(page), "reason": reason},
                     follow_redirects=False)
        assert r.status_code in (303, 422), (reason, r.status_code, r.text[:300])
    r = app.post(f"/ui/decisions/{d}", content=f"verdict=approve&csrf={csrf_of(page)}&reason=%ED%A0%80%FF".encode(),
                 headers={"content-type": "application/x-www-form-urlencoded"}, follow_redirects=False)
    assert r.status_code in (303, 422), r.text[:300]  # (bytes no browser sends as UTF-8: no error page either)
    shown = by_id(app.get(f"/ui/decisions/{d}").text, "approvals")
    assert "a\\u0000b" in shown and "bell\\u0007" in shown and "x\\u202ey" in shown
