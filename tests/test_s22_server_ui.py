"""The reviewer's pages: who is "you", and the pagers.

- The "(you)" beside a plan's or a batch's requester and a held gate's caller (on its page
  and in the queue) is the engine's notion of one person (``canonical_principal``: case,
  width, invisible characters and blanks aside), the one separation of duties counts: a
  look-alike spelling of the signed-in reviewer is never shown as someone else.
- The batch page's pager is a labelled navigation landmark; a page number out of range or
  not a number in ``?page=`` / ``?held=`` is a page (the first, or the last), never a JSON
  422 in the reviewer's browser."""

from __future__ import annotations

import re
from html import unescape

import pytest

pytest.importorskip("fastapi")
from server_support import TOKENS, server_policy_dir, write_identities  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from policy_engine.runtime.bulk import request_bulk_rollback  # noqa: E402
from policy_engine.server import ServerConfig, create_app  # noqa: E402
from policy_engine.server.ui import same_person  # noqa: E402

ZWSP = "\u200b"


def send(amount: float, **extra) -> dict:
    return {"workflow": "replies", "type": "send", "amount": amount, "promise": False, **extra}


@pytest.fixture
def app(tmp_path):
    ids = str(write_identities(tmp_path / "ids.yaml"))
    cfg = ServerConfig(
        str(server_policy_dir(tmp_path)), ledger=f"sqlite:///{tmp_path / 'l.db'}", identities=ids, reload_interval=0
    )
    with TestClient(create_app(cfg)) as c:
        yield c


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)


def text(html: str) -> str:
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))).strip()


def by_id(html: str, ident: str) -> str:
    m = re.search(rf'id="{ident}"[^>]*>(.*?)</(?:td|p|section)>', html, re.S)
    assert m is not None, ident
    return text(m.group(1))


def sign_in(c: TestClient, who: str) -> None:
    c.cookies.clear()
    r = c.post(
        "/ui/login", data={"token": TOKENS[who][0], "csrf": csrf_of(c.get("/ui/login").text)}, follow_redirects=False
    )
    assert r.status_code == 303


def plan_requested_by(c: TestClient, who: str, n: int = 0) -> str:
    rt = c.app.state.runtime
    x = rt.executed(None, receipt={"message": "m", "ticket": n}, action=send(5, id=f"p{n}"))
    return rt.request_rollback(x.execution_id, scenario="customer_request", requested_by=who, reason="r").rollback_id


# ---------------------------------------------------------------------------------- 3. "(you)"
def test_same_person_is_the_engines_one_person():
    assert same_person("casey", "Casey") and same_person(f"casey{ZWSP}", "casey") and same_person(" CASEY", "casey")
    assert not same_person("casey", "cleo") and not same_person(None, "casey") and not same_person("", "")
    assert not same_person(ZWSP, "")  # (nothing but an invisible character is no one)


@pytest.mark.parametrize("spelling", ["Casey", f"casey{ZWSP}", "CASEY "])
def test_a_plan_requested_under_a_look_alike_spelling_is_marked_as_yours(app, spelling):
    rb = plan_requested_by(app, spelling)
    sign_in(app, "casey")
    page = app.get(f"/ui/plans/{rb}").text
    assert f"by {spelling.strip()}" in by_id(page, "requested") or ZWSP in spelling
    assert "(you)" in by_id(page, "requested")
    # ... as the engine counts it: the requester's approval does not count (`distinct from`)
    r = app.post(
        f"/ui/plans/{rb}", data={"verdict": "approve", "reason": "", "csrf": csrf_of(page)}, follow_redirects=False
    )
    msg = by_id(app.get(r.headers["location"]).text, "msg")
    assert msg.startswith("recorded, but it does not count") and "requested_by" in msg, msg
    sign_in(app, "cleo")  # someone else: no marker
    assert "(you)" not in by_id(app.get(f"/ui/plans/{rb}").text, "requested")


def test_a_batch_requested_under_a_look_alike_spelling_is_marked_as_yours(app):
    rt = app.app.state.runtime
    xs = [
        rt.executed(None, receipt={"message": "m", "ticket": i}, action=send(5, id=f"b{i}")).execution_id
        for i in range(2)
    ]
    b = request_bulk_rollback(rt, None, "customer_request", "Casey", "incident", executions=xs)
    sign_in(app, "casey")
    assert "(you)" in by_id(app.get(f"/ui/batches/{b.batch_id}").text, "requested")
    sign_in(app, "cleo")
    assert "(you)" not in by_id(app.get(f"/ui/batches/{b.batch_id}").text, "requested")


def test_a_gate_asked_under_a_look_alike_spelling_is_marked_as_yours(app):
    rt = app.app.state.runtime
    d = rt.gate(send(500, id="g"), caller=f"CASEY{ZWSP}").decision_id  # held: 1 reviewer
    sign_in(app, "casey")
    assert "(you: you are deciding on your own request)" in by_id(app.get(f"/ui/decisions/{d}").text, "asked-by")
    queue = app.get("/ui").text
    row = re.search(rf'data-decision="{d}">(.*?)</tr>', queue, re.S).group(1)
    assert "(you)" in text(row)
    sign_in(app, "cleo")
    assert "(you" not in by_id(app.get(f"/ui/decisions/{d}").text, "asked-by")


# ---------------------------------------------------------------------------------- 4. the pagers
def test_the_batch_pager_is_a_labelled_landmark(app):
    rt = app.app.state.runtime
    xs = [
        rt.executed(None, receipt={"message": "m", "ticket": i}, action=send(5, id=f"n{i}")).execution_id
        for i in range(2)
    ]
    b = request_bulk_rollback(rt, None, "customer_request", "rita", "incident", executions=xs)
    sign_in(app, "casey")
    page = app.get(f"/ui/batches/{b.batch_id}").text
    assert re.search(r'<nav id="pages" aria-label="[^"]+">', page)
    assert all("aria-label=" in nav for nav in re.findall(r"<nav[^>]*>", page))


@pytest.mark.parametrize(
    "query, shown",
    [
        ("page=0", 1),
        ("page=-3", 1),
        ("page=abc", 1),
        ("page=", 1),
        ("page=99999999999999999999", 1),
        ("page=1.5", 1),
        ("page=1", 1),
    ],
)
def test_a_batch_page_number_out_of_range_is_a_page_not_a_json_error(app, query, shown):
    rt = app.app.state.runtime
    xs = [
        rt.executed(None, receipt={"message": "m", "ticket": i}, action=send(5, id=f"q{i}")).execution_id
        for i in range(2)
    ]
    b = request_bulk_rollback(rt, None, "customer_request", "rita", "incident", executions=xs)
    sign_in(app, "casey")
    r = app.get(f"/ui/batches/{b.batch_id}?{query}")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), r.text[:300]
    assert f"page {shown} of 1" in text(r.text)


@pytest.mark.parametrize(
    "query", ["page=0", "held=0", "page=-1&held=-1", "page=x&held=y", "page=10000000", "held=99999999999999999999"]
)
def test_a_queue_page_number_out_of_range_is_a_page_not_a_json_error(app, query):
    rt = app.app.state.runtime
    rt.gate(send(500, id="h"), caller="rita")
    plan_requested_by(app, "rita")
    sign_in(app, "casey")
    r = app.get(f"/ui?{query}")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), r.text[:300]
    assert "Held gates" in r.text and "Rollback queue" in r.text
