"""Safe retries of recorded AuthZEN requests: the ``Idempotency-Key`` header
(draft-ietf-httpapi-idempotency-key-header) on ``POST /access/v1/evaluation`` and
``/access/v1/evaluations``. With a ledger, a retry with the same key and the same request
is answered with the decisions recorded (the same decision ids, ``replayed``) and records
nothing; the same key for another request is a 409 (one evaluation) or that item's deny
with ``context.error`` (a batch). A commit lost after it landed is a 503 that says a retry
with the same key is safe, and that retry finds what landed. The key is checked as
X-Request-ID is (a 400 otherwise), scoped to the caller and to AuthZEN (never another
principal's key, never a ``/v1/gate`` key), and ignored when nothing is recorded. Without
the header nothing changes. SQLite and PostgreSQL; in-process (Starlette's test client)."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
from ledger_fixtures import ledger_url  # noqa: E402,F401  (the parametrised backend fixture)
from server_support import bearer, server_policy_dir, write_identities  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402
from test_s22_server_recorder import commit_lost_after_it_landed  # noqa: E402

from policy_engine.server import ServerConfig, create_app  # noqa: E402

ONE, MANY = "/access/v1/evaluation", "/access/v1/evaluations"


def ledger_key(*args):
    from policy_engine.server.authzen import ledger_key

    return ledger_key(*args)

PROBLEM = "application/problem+json"


def ev(rid: str = "x", **more) -> dict:
    return {"subject": {"type": "user", "id": "a"}, "action": {"name": "log"}, "resource": {"type": "t", "id": rid},
            "context": {"workflow": "replies"}, **more}


def batch(*rids: str, sem: str | None = None) -> dict:
    top = ev()
    del top["resource"]
    return {**top, "evaluations": [{"resource": {"type": "t", "id": r}} for r in rids],
            **({"options": {"evaluations_semantic": sem}} if sem else {})}


def _client(tmp_path, ledger, identities=True):
    ids = str(write_identities(tmp_path / "ids.yaml")) if identities else None
    app = create_app(ServerConfig(str(server_policy_dir(tmp_path)), ledger=ledger, identities=ids, reload_interval=0))
    return TestClient(app, raise_server_exceptions=False)


def post(c, path, body, key=None, who="ops", extra=()):
    headers = [(k.encode(), v.encode()) for k, v in bearer(who).items()]
    if key is not None:
        headers.append((b"idempotency-key", key if isinstance(key, bytes) else key.encode()))
    headers += list(extra)
    return c.post(path, json=body, headers=headers)


def size(c) -> int:
    return c.app.state.runtime.ledger.size


def ids_of(r) -> list[str]:
    j = r.json()
    return [e["context"]["decision_id"] for e in j.get("evaluations", [j])]


def decided_count(c) -> float:
    total = 0.0
    for line in c.get("/metrics").text.splitlines():
        if line.startswith("stopline_decisions_total{") and 'interface="authzen"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


# ---------------------------------------------------------------------------------- retries
@pytest.mark.parametrize("path", [ONE, MANY], ids=["evaluation", "evaluations as one"])
def test_a_keyed_retry_is_answered_with_the_recorded_decision_and_records_nothing(tmp_path, ledger_url, path):  # noqa: F811
    with _client(tmp_path, ledger_url) as c:
        before = size(c)
        first = post(c, path, ev(), key="k-1")
        assert first.status_code == 200, first.text
        assert first.json()["context"]["recorded"] is True and "replayed" not in first.json()["context"]
        assert size(c) == before + 1
        counted = decided_count(c)
        again = post(c, path, ev(), key="k-1")
        assert again.status_code == 200, again.text
        assert ids_of(again) == ids_of(first) and size(c) == before + 1
        ctx = again.json()["context"]
        assert ctx["replayed"] is True and ctx["effect"] == first.json()["context"]["effect"]
        assert decided_count(c) == counted  # (a replayed decision is not a new one)
        # the ledger holds it under the caller's AuthZEN key
        assert c.app.state.runtime.ledger.get(ids_of(first)[0]).key == ledger_key("k-1", "ops")


def test_the_same_key_for_another_request_is_a_409_that_records_nothing(tmp_path, ledger_url):  # noqa: F811
    with _client(tmp_path, ledger_url) as c:
        assert post(c, ONE, ev("x"), key="k-1").status_code == 200
        before = size(c)
        r = post(c, ONE, ev("y"), key="k-1")
        assert r.status_code == 409 and r.headers["content-type"] == PROBLEM, r.text
        p = r.json()
        assert p["type"].endswith("/idempotency-conflict") and "Idempotency-Key" in p["detail"]
        assert "authzen:" not in p["detail"]  # (the ledger's key is the server's business)
        assert size(c) == before


def test_a_keyed_batch_retry_is_answered_with_the_same_decisions(tmp_path, ledger_url):  # noqa: F811
    with _client(tmp_path, ledger_url) as c:
        before = size(c)
        first = post(c, MANY, batch("a", "b", "c"), key="b-1")
        assert first.status_code == 200 and size(c) == before + 3, first.text
        again = post(c, MANY, batch("a", "b", "c"), key="b-1")
        assert again.status_code == 200, again.text
        assert ids_of(again) == ids_of(first) and size(c) == before + 3
        assert all(e["context"]["replayed"] for e in again.json()["evaluations"])
        assert [c.app.state.runtime.ledger.get(i).key for i in ids_of(first)] == [
            ledger_key("b-1", "ops", i) for i in range(3)]


@pytest.mark.parametrize("sem", [None, "deny_on_first_deny"])
def test_a_keyed_batch_item_changed_on_retry_is_that_items_deny(tmp_path, ledger_url, sem):  # noqa: F811
    with _client(tmp_path, ledger_url) as c:
        first = post(c, MANY, batch("a", "b", "c", sem=sem), key="b-1")
        assert first.status_code == 200, first.text
        before = size(c)
        r = post(c, MANY, batch("a", "CHANGED", "c", sem=sem), key="b-1")
        assert r.status_code == 200, r.text
        evs = r.json()["evaluations"]
        want = ids_of(first)
        assert evs[0]["context"]["decision_id"] == want[0] and evs[0]["context"]["replayed"] is True
        bad = evs[1]
        assert bad["decision"] is False and bad["context"]["recorded"] is False
        assert bad["context"]["error"]["status"] == 409 and "Idempotency-Key" in bad["context"]["error"]["message"]
        if sem is None:  # (execute_all goes on; deny_on_first_deny stops at the failed item)
            assert evs[2]["context"]["decision_id"] == want[2]
        else:
            assert len(evs) == 2
        assert size(c) == before  # nothing recorded


def test_a_keyed_batch_whose_every_item_changed_is_a_409(tmp_path, ledger_url):  # noqa: F811
    with _client(tmp_path, ledger_url) as c:
        assert post(c, MANY, batch("a", "b"), key="b-1").status_code == 200
        before = size(c)
        r = post(c, MANY, batch("y", "z"), key="b-1")
        assert r.status_code == 409 and r.json()["type"].endswith("/idempotency-conflict"), r.text
        assert size(c) == before


# ---------------------------------------------------------------------------------- a lost commit
@pytest.mark.parametrize("path", [ONE, MANY], ids=["evaluation", "evaluations"])
def test_a_lost_commit_is_a_503_saying_a_keyed_retry_is_safe_and_the_retry_finds_what_landed(
    tmp_path, ledger_url, path  # noqa: F811
):
    with _client(tmp_path, ledger_url) as c:
        rt = c.app.state.runtime
        body = ev() if path == ONE else batch("a", "b")
        n = 1 if path == ONE else 2
        before = size(c)
        with commit_lost_after_it_landed(rt.ledger) as raised:
            r = post(c, path, body, key="lost-1")
        assert raised and size(c) == before + n
        if r.status_code == 200:  # (a batch split over two transactions: each failed item says so)
            errors = [e["context"]["error"]["message"] for e in r.json()["evaluations"] if not e["decision"]]
            assert errors, r.text
            detail = errors[0]
        else:
            assert r.status_code == 503 and r.headers["content-type"] == PROBLEM, r.text
            detail = r.json()["detail"]
        assert "outcome is unknown" in detail and "same Idempotency-Key is safe" in detail
        landed = [e.id for e in rt.ledger.entries(kind="decision", after=before - 1)]
        again = post(c, path, body, key="lost-1")
        assert again.status_code == 200, again.text
        assert ids_of(again) == landed and size(c) == before + n  # recorded once


def test_without_a_key_the_503_of_a_lost_commit_says_a_retry_may_record_twice(tmp_path, ledger_url):  # noqa: F811
    with _client(tmp_path, ledger_url) as c:
        with commit_lost_after_it_landed(c.app.state.runtime.ledger) as raised:
            r = post(c, ONE, ev())
        assert raised and r.status_code == 503, r.text
        assert "may be recorded twice" in r.json()["detail"] and "Idempotency-Key" in r.json()["detail"]


# ---------------------------------------------------------------------------------- the header
@pytest.mark.parametrize("key", [b"", b"two words", b"tab\there", b"x" * 201, "caf\u00e9".encode(), b'"a"b"',
                                 b'"esc\\"aped"', b'"', b'""', b'"open'],
                         ids=["empty", "a space", "a tab", "too long", "not ASCII", "quotes inside", "an escape",
                              "a lone quote", "empty quoted", "unclosed quote"])
@pytest.mark.parametrize("recorded", [True, False], ids=["recorded", "not recorded"])
def test_a_bad_idempotency_key_is_a_400_that_decides_nothing(tmp_path, key, recorded):
    with _client(tmp_path, f"sqlite:///{tmp_path / 'l.db'}" if recorded else None) as c:
        before = size(c) if recorded else None
        for path in (ONE, MANY):
            r = post(c, path, ev(), key=key)
            assert r.status_code == 400 and r.headers["content-type"] == PROBLEM, (path, r.text)
            p = r.json()
            assert p["type"].endswith("/bad-idempotency-key") and "visible ASCII" in p["detail"]
            if len(key) > 3:
                assert key.decode("latin-1") not in r.text  # (never echoed)
        if recorded:
            assert size(c) == before


def test_an_idempotency_key_sent_twice_is_a_400(tmp_path):
    with _client(tmp_path, f"sqlite:///{tmp_path / 'l.db'}") as c:
        before = size(c)
        r = post(c, ONE, ev(), key="k-1", extra=[(b"idempotency-key", b"k-2")])
        assert r.status_code == 400 and r.json()["type"].endswith("/bad-idempotency-key"), r.text
        assert size(c) == before


def test_the_longest_key_and_a_quoted_key_are_taken_the_quoted_one_as_its_bare_self(tmp_path):
    with _client(tmp_path, f"sqlite:///{tmp_path / 'l.db'}") as c:
        longest = "~" * 200
        first = post(c, MANY, batch(*"abc"), key=longest)
        assert first.status_code == 200 and ids_of(post(c, MANY, batch(*"abc"), key=longest)) == ids_of(first)
        bare = post(c, ONE, ev(), key="sf-1")
        assert ids_of(post(c, ONE, ev(), key='"sf-1"')) == ids_of(bare)


def test_without_the_header_every_request_is_decided_and_recorded_as_before(tmp_path, ledger_url, monkeypatch):  # noqa: F811
    with _client(tmp_path, ledger_url) as c:
        rt = c.app.state.runtime
        seen: list = []
        many = rt.gate_many

        def spy(actions, **kw):
            seen.append(kw.get("keys"))
            return many(actions, **kw)

        monkeypatch.setattr(rt, "gate_many", spy)
        before = size(c)
        a, b = post(c, ONE, ev()), post(c, ONE, ev())
        x, y = post(c, MANY, batch("a", "b")), post(c, MANY, batch("a", "b"))
        got = [*ids_of(a), *ids_of(b), *ids_of(x), *ids_of(y)]
        assert len(set(got)) == 6 and size(c) == before + 6
        assert all("replayed" not in r.json().get("context", {}) for r in (a, b))
        assert seen and all(k is None for k in seen)  # (the recorder gates them with no keys at all)


def test_without_a_ledger_the_key_is_accepted_and_ignored(tmp_path):
    with _client(tmp_path, None) as c:
        a, b = post(c, ONE, ev(), key="k-1"), post(c, ONE, ev(), key="k-1")
        assert a.status_code == b.status_code == 200, (a.text, b.text)
        assert ids_of(a) != ids_of(b)  # (nothing recorded: each decided anew)
        assert a.json()["context"]["recorded"] is False and "replayed" not in b.json()["context"]
        m = post(c, MANY, batch("a", "b"), key="k-1")
        assert m.status_code == 200 and len(ids_of(m)) == 2


# ---------------------------------------------------------------------------------- scopes
def test_one_principals_key_never_answers_anothers(tmp_path, ledger_url):  # noqa: F811
    """The key is the caller's: another principal sending it (guessed, or by chance) gets a
    decision of their own, never the first caller's, nor a 409 that would tell them it is used."""
    with _client(tmp_path, ledger_url) as c:
        mine = post(c, ONE, ev(), key="shared", who="ops")
        before = size(c)
        theirs = post(c, ONE, ev(), key="shared", who="rita")
        assert theirs.status_code == 200, theirs.text
        assert ids_of(theirs) != ids_of(mine) and "replayed" not in theirs.json()["context"]
        assert size(c) == before + 1
        led = c.app.state.runtime.ledger
        assert led.get(ids_of(theirs)[0]).body["caller"] == "rita"
        assert ids_of(post(c, ONE, ev(), key="shared", who="ops")) == ids_of(mine)  # (each keeps their own)
        assert ids_of(post(c, ONE, ev(), key="shared", who="rita")) == ids_of(theirs)


def test_an_authzen_key_never_meets_a_v1_gate_key_nor_a_batch_items(tmp_path, ledger_url):  # noqa: F811
    with _client(tmp_path, ledger_url) as c:
        g = c.post("/v1/gate", json={"action": {"workflow": "replies", "type": "log", "n": 1}, "key": "k-1"},
                   headers=bearer("ops"))
        assert g.status_code == 200, g.text
        r = post(c, ONE, ev(), key="k-1")  # (the same key, another action: no conflict, its own decision)
        assert r.status_code == 200 and "replayed" not in r.json()["context"], r.text
        assert ids_of(r) != [g.json()["decision_id"]]
        # a batch's item 0 and a single evaluation sent with the key `K #0` are two requests
        m = post(c, MANY, batch("x"), key="k-2")
        s = post(c, ONE, ev("x"), key="k-2#0")
        assert m.status_code == s.status_code == 200 and ids_of(m) != ids_of(s)
        assert "replayed" not in s.json()["context"]


def test_the_ledger_key_of_an_item_cannot_be_a_single_evaluations():
    assert ledger_key("k", None) == "authzen::k" and ledger_key("k", None, 3) == "authzen::k #3"
    ops = ledger_key("k", "ops")
    assert ops.startswith("authzen:") and ops != ledger_key("k", "rita") and ops.endswith(":k")
    assert len(ledger_key("~" * 200, "x" * 5000, 999)) <= 256  # (within what the ledger holds)


# ---------------------------------------------------------------------------------- the recorder
class _Loop:
    """Stands in for a request's event loop: keeps what the recorder settles."""

    def __init__(self) -> None:
        self.settled: list = []

    def call_soon_threadsafe(self, fn, settled) -> None:
        self.settled.extend(settled)


def _act(n: int) -> dict:
    return {"workflow": "replies", "type": "log", "n": n}


def test_the_recorder_answers_a_key_twice_in_one_transaction_with_one_decision(tmp_path, ledger_url):  # noqa: F811
    """(Two sends of one request that reach the recorder together: one decision, recorded once.)"""
    with _client(tmp_path, ledger_url) as c:
        rt, rec = c.app.state.runtime, c.app.state.recorder
        before = size(c)
        loop = _Loop()
        rec._record([(_act(1), "ops", "first", loop, "authzen:k"), (_act(2), "ops", "plain", loop),
                     (_act(1), "ops", "again", loop, "authzen:k")])
        got = dict(loop.settled)
        assert got["first"].decision_id == got["again"].decision_id and got["again"].replayed
        assert got["plain"].decision_id != got["first"].decision_id and size(c) == before + 2
        assert rt.ledger.get(got["plain"].decision_id).key is None  # (an unkeyed request stays unkeyed)


def test_a_key_used_for_another_action_fails_only_its_own_request_in_the_recorders_transaction(
    tmp_path, ledger_url  # noqa: F811
):
    from policy_engine.ledger import IdempotencyConflict

    with _client(tmp_path, ledger_url) as c:
        rt, rec = c.app.state.runtime, c.app.state.recorder
        rt.gate(_act(1), key="authzen:used", caller="ops")
        before = size(c)
        loop = _Loop()
        rec._record([(_act(2), "ops", "neighbour", loop), (_act(3), "ops", "conflict", loop, "authzen:used"),
                     (_act(4), "rita", "keyed", loop, "authzen:new")])
        got = dict(loop.settled)
        assert isinstance(got["conflict"], IdempotencyConflict)
        assert not got["neighbour"].replayed and not got["keyed"].replayed and size(c) == before + 2
        assert rt.ledger.get(got["keyed"].decision_id).key == "authzen:new"


# ---------------------------------------------------------------------------------- --no-fast-path
def test_behind_fastapi_routing_the_key_is_honoured_too(tmp_path):
    ids = str(write_identities(tmp_path / "ids.yaml"))
    app = create_app(ServerConfig(str(server_policy_dir(tmp_path)), ledger=f"sqlite:///{tmp_path / 'l.db'}",
                                  identities=ids, reload_interval=0, fast_path=False))
    with TestClient(app, raise_server_exceptions=False) as c:
        first = post(c, MANY, batch("a", "b"), key="k-1")
        again = post(c, MANY, batch("a", "b"), key="k-1")
        assert first.status_code == again.status_code == 200 and ids_of(again) == ids_of(first)
        assert post(c, ONE, ev(), key="two words").status_code == 400
        params = c.get("/openapi.json").json()["paths"][ONE]["post"]["parameters"]
        assert "Idempotency-Key" in [p["name"] for p in params]


def test_with_a_tracer_the_key_is_the_requests(tmp_path, ledger_url):  # noqa: F811
    """(The span's loop once reused the name of the key: every keyed request of a traced
    server was recorded under the key `type`, and a second one was a 409.)"""
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider

    with _client(tmp_path, ledger_url) as c:
        c.app.state.tracer = TracerProvider().get_tracer("test")  # (the app is the fast path: its state)
        first = post(c, ONE, ev("x"), key="k-1")
        other = post(c, ONE, ev("y"), key="k-2")
        assert first.status_code == other.status_code == 200, (first.text, other.text)
        assert ids_of(post(c, ONE, ev("x"), key="k-1")) == ids_of(first)
        assert c.app.state.runtime.ledger.get(ids_of(first)[0]).key == ledger_key("k-1", "ops")
