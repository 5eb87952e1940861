"""An action beyond the engine's input limits, taken as one input, is recorded by the gate as
a deny with a bounded excerpt and an ``action_error`` naming the limit, whatever fields the
conditions read (``gatejson.oversize``, ``gatejson.excerpt``).

Before: the engine checks only the fields its conditions read, so an action with a 4 MB
string, a 100,001-item list or a 4 MB key in a field no condition reads was *allowed* and
recorded whole (one request, one ledger entry of any size); an action nested 10,000 deep was
denied but recorded as ``<dict>`` (its ``repr`` recursed), nothing of it auditable. Over
HTTP (``/v1/gate``, ``/v1/gate/batch``, AuthZEN's recorded ``/access/v1/evaluation``) the
same, up to the server's body limit."""

from __future__ import annotations

import pytest
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import RECEIPT, WF, at, policy_path, rt, send  # noqa: F401  (fixtures)

from policy_engine.ledger.canonical import canonical_text
from policy_engine.ledger.errors import InvalidEntry
from policy_engine.limits import MAX_INPUT_CHARS, MAX_INPUT_DEPTH, MAX_INPUT_ITEMS
from policy_engine.runtime import gatejson

BOUND = 20_000  #: a refused action's whole decision body stays below this (the excerpt is 4,096 characters)


def nested(levels: int) -> list:
    v: list = []
    for _ in range(levels - 1):
        v = [v]
    return v


#: an allowed `send` (amount 50) with something huge in a field no condition reads
OVER = {
    "chars": (lambda: send(note="x" * (MAX_INPUT_CHARS + 1)), f"more than {MAX_INPUT_CHARS} characters of text "
              "(MAX_INPUT_CHARS)"),
    "items": (lambda: send(tags=[0] * (MAX_INPUT_ITEMS + 1)), f"more than {MAX_INPUT_ITEMS} values (MAX_INPUT_ITEMS)"),
    "key": (lambda: {**send(), "k" * (MAX_INPUT_CHARS + 1): 1}, f"more than {MAX_INPUT_CHARS} characters"),
    "items_nested": (lambda: send(meta={"rows": [[0] * 1000 for _ in range(101)]}), "(MAX_INPUT_ITEMS)"),
}


def body_size(e) -> int:
    return len(canonical_text(e.body))


@pytest.mark.parametrize("kind", sorted(OVER))
def test_an_action_beyond_the_input_limits_is_a_recorded_bounded_deny(rt, kind):
    make, why = OVER[kind]
    g = rt.gate(make(), now=at(0))
    assert g.decision.effect == "deny" and g.decision.deciding.name == "unrecordable action"
    assert "beyond the gate's input limits" in g.decision.reason and why in g.decision.reason
    assert "the policy said `allow`" in g.decision.reason  # what the policy said is kept
    e = rt.ledger.get(g.decision_id)
    assert why in e.body["action_error"]
    assert isinstance(e.body["action"], str) and len(e.body["action"]) == gatejson._SHOWN_REPR
    assert e.body["action"].startswith("{'workflow': 'replies', 'type': 'send'")  # the start of its repr
    assert body_size(e) < BOUND
    # nothing is permitted: the decision cannot be claimed for a run
    assert rt.authorization(g.decision_id).status == "refused"
    # the workflow's next gate is unaffected
    assert rt.gate(send(), now=at(1)).decision.effect == "allow"


def test_an_action_nested_10000_deep_is_recorded_with_an_excerpt_of_its_start_not_its_type(rt):
    """Before: ``<dict>`` (the repr recursed past Python's limit), nothing of the action."""
    g = rt.gate(send(blob=nested(10_000)), now=at(0))
    assert g.decision.effect == "deny"
    e = rt.ledger.get(g.decision_id)
    assert e.body["action"].startswith("{'workflow': 'replies', 'type': 'send', 'amount': 50.0")
    assert e.body["action"].endswith("[[[[") and len(e.body["action"]) == gatejson._SHOWN_REPR
    assert "nests deeper than 64 levels" in e.body["action_error"] and body_size(e) < BOUND


def test_a_stop_trigger_still_stops_the_workflow_with_an_oversize_action(rt):
    g = rt.gate(send(promise=True, note="x" * (MAX_INPUT_CHARS + 1)), now=at(0))
    assert g.decision.effect == "stop" and g.stopped
    e = rt.ledger.get(g.decision_id)
    assert "MAX_INPUT_CHARS" in e.body["action_error"] and body_size(e) < BOUND


def test_within_the_limits_a_large_action_is_recorded_exactly(rt):
    """The limits are the engine's, taken as one input: just within them the action is
    recorded whole (a canonical text past the quick bound is walked, not refused)."""
    a = send(note="x" * (MAX_INPUT_CHARS - 100), tags=[0] * (MAX_INPUT_ITEMS - 10))
    g = rt.gate(a, now=at(0))
    assert g.decision.effect == "allow"
    e = rt.ledger.get(g.decision_id)
    assert "action_error" not in e.body and e.body["action"]["tags"] == a["tags"]
    assert gatejson.recordable(send(blob=nested(MAX_INPUT_DEPTH + 1)))[2] is not None


def test_a_batch_denies_only_its_oversize_action(rt):
    gs = rt.gate_many([send(), send(tags=[0] * (MAX_INPUT_ITEMS + 1)), send()], now=at(0))
    assert [g.decision.effect for g in gs] == ["allow", "deny", "allow"]
    assert all(body_size(rt.ledger.get(g.decision_id)) < BOUND for g in gs)


def test_a_keyed_retry_of_an_oversize_action_gets_its_recorded_deny(rt):
    a = send(note="x" * (MAX_INPUT_CHARS + 1))
    first = rt.gate(a, now=at(0), key="k-1")
    again = rt.gate(a, now=at(5), key="k-1")
    assert again.replayed and again.decision_id == first.decision_id and again.decision.effect == "deny"
    assert len(rt.ledger.entries(kind="decision")) == 1


def test_excerpt_is_the_start_of_repr_with_bounded_work():
    a: list = [1]
    a.append(a)
    for v in [{"a": [1, (2,), ()], "b": {"c": None, "d": float("nan")}, 1: True, "s": "it's"}, a, (1,), {}]:
        assert gatejson.excerpt(v) == repr(v)
    big = {"x": "y" * 50_000_000}
    assert gatejson.excerpt(big) == repr(big)[:gatejson._SHOWN_REPR]
    assert gatejson.excerpt({"n": 10**5000}) == "{'n': <int>}"  # (str() refuses so many digits)


# ------------------------------------------------------------------------------------------ over HTTP
fastapi = pytest.importorskip("fastapi")


def _client(tmp_path):
    from server_support import server_policy_dir, write_identities
    from starlette.testclient import TestClient

    from policy_engine.server import ServerConfig, create_app

    ids = str(write_identities(tmp_path / "ids.yaml"))
    app = create_app(ServerConfig(str(server_policy_dir(tmp_path)), ledger=f"sqlite:///{tmp_path / 'l.db'}",
                                  identities=ids, reload_interval=0))
    return TestClient(app)


TAGS = [0] * (MAX_INPUT_ITEMS + 1)  # (about 200 KB of JSON: within the server's 1 MiB body limit)


def _recorded(c, decision_id):
    from server_support import bearer

    return c.get(f"/v1/history/{decision_id}", headers=bearer("ops")).json()["entry"]["body"]


def test_http_gate_batch_and_authzen_record_an_oversize_action_as_a_bounded_deny(tmp_path):
    from server_support import bearer

    h = bearer("ops")
    with _client(tmp_path) as c:
        log = {"workflow": WF, "type": "log"}  # `allow any when true`
        r = c.post("/v1/gate", json={"action": {**log, "tags": TAGS}}, headers=h)
        assert r.status_code == 200 and r.json()["decision"]["effect"] == "deny"
        b = _recorded(c, r.json()["decision_id"])
        assert "MAX_INPUT_ITEMS" in b["action_error"] and len(b["action"]) == gatejson._SHOWN_REPR
        assert b["caller"] == "ops"

        r = c.post("/v1/gate/batch", json={"actions": [log, {**log, "tags": TAGS}]}, headers=h)
        assert [x["decision"]["effect"] for x in r.json()["results"]] == ["allow", "deny"]

        req = {"subject": {"type": "agent", "id": "a1"}, "action": {"name": "log"},
               "resource": {"type": "ticket", "id": "T-1", "properties": {"tags": TAGS}},
               "context": {"workflow": WF}}
        r = c.post("/access/v1/evaluation", json=req, headers=h)
        body = r.json()
        assert r.status_code == 200 and body["decision"] is False and body["context"]["recorded"] is True
        b = _recorded(c, body["context"]["decision_id"])
        assert "MAX_INPUT_ITEMS" in b["action_error"] and isinstance(b["action"], str)
        assert len(canonical_text(b)) < BOUND
        # within the limits, the same request is allowed as ever
        req["resource"]["properties"]["tags"] = [0] * 10
        assert c.post("/access/v1/evaluation", json=req, headers=h).json()["decision"] is True


def test_an_execution_without_a_decision_refuses_an_oversize_action(rt):
    """Its record would be its only trace: refused (``InvalidEntry``, naming the limit), not
    recorded whole as before."""
    with pytest.raises(InvalidEntry, match="MAX_INPUT_CHARS"):
        rt.executed(None, action=send(note="x" * (MAX_INPUT_CHARS + 1)), receipt=RECEIPT, now=at(0))
    assert rt.ledger.entries(kind="execution") == []
    assert rt.executed(None, action=send(), receipt=RECEIPT, now=at(1)).entry.kind == "execution"
