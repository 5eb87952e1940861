"""A keyed retry of an action recorded by its excerpt is compared by the digest of the WHOLE
action (``action_repr_sha256``: ``gatejson.repr_sha256``), not by the excerpt.

Before: an action beyond the input limits, or one the ledger cannot record exactly (a NaN, a
huge int, nesting past 64 levels), was recorded as the first 4,096 characters of its
``repr`` only, and a keyed retry was compared with that excerpt: two *different* such
actions under one key that share their first 4,096 characters were taken as the same
request, the second answered with the first's deny (``replayed``) instead of being refused
as a key conflict, so the ledger never showed that another action was sent under that key.
A decision recorded before the field keeps being compared by its excerpt (all it has).

Also: an action both unrecordable (a NaN) and beyond the limits names both problems (it
named the NaN only). SQLite and PostgreSQL (``ledger_url``), and over HTTP."""

from __future__ import annotations

import hashlib
import random
import tracemalloc

import pytest
from ledger_fixtures import ledger_url, run_ledger_cli  # noqa: F401  (fixture)
from runtime_support import WF, at, policy_path, rt, send  # noqa: F401  (fixtures)

from policy_engine.ledger import IdempotencyConflict
from policy_engine.ledger.canonical import Canonical, canonical_text
from policy_engine.limits import MAX_INPUT_CHARS, MAX_INPUT_ITEMS
from policy_engine.runtime import gatejson
from policy_engine.runtime.results import _ts

SHOWN = gatejson._SHOWN_REPR
BIG = "x" * (MAX_INPUT_CHARS + 1)


def nested(levels: int, leaf: object) -> list:
    v: list = [leaf]
    for _ in range(levels - 1):
        v = [v]
    return v


#: pairs of different actions recorded by the same excerpt (their first 4,096 repr characters)
PAIRS = {
    # beyond MAX_INPUT_CHARS: one more character at the very end
    "chars": (lambda: send(note=BIG), lambda: send(note=BIG[:-1] + "y")),
    # beyond MAX_INPUT_ITEMS: the last item differs
    "items": (lambda: send(tags=[0] * (MAX_INPUT_ITEMS + 1)), lambda: send(tags=[0] * MAX_INPUT_ITEMS + [1])),
    # not recordable (a NaN; an Infinity) after 5,000 characters: small, within every limit
    "nan": (lambda: send(blob="x" * 5000, v=float("nan")), lambda: send(blob="x" * 5000, v=float("inf"))),
    # nested 10,000 deep: the innermost value differs
    "deep": (lambda: send(blob=nested(10_000, 1)), lambda: send(blob=nested(10_000, 2))),
    # an int too long for Python to write: both excerpts say `<int>`
    "bigint": (lambda: send(n=10**5000), lambda: send(n=10**5000 + 1)),
}


def decisions(rt) -> int:  # noqa: F811
    return len(rt.ledger.entries(kind="decision"))


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_another_action_with_the_same_excerpt_under_a_used_key_is_a_conflict(rt, kind):  # noqa: F811
    first, other = PAIRS[kind]
    g = rt.gate(first(), now=at(0), key="k-1")
    assert g.decision.effect == "deny" and not g.replayed
    e = rt.ledger.get(g.decision_id)
    assert "action_error" in e.body and len(e.body["action"]) <= SHOWN
    assert e.body["action"] == gatejson.recordable(other())[1]  # the same excerpt: all the old code compared
    with pytest.raises(IdempotencyConflict, match="for another action"):
        rt.gate(other(), now=at(5), key="k-1")
    assert decisions(rt) == 1
    # the very same action again (built anew) is a retry: the recorded deny, nothing recorded
    again = rt.gate(first(), now=at(9), key="k-1")
    assert again.replayed and again.decision_id == g.decision_id and again.decision.effect == "deny"
    assert decisions(rt) == 1
    # and the other one under its own key is recorded as its own deny
    assert rt.gate(other(), now=at(10), key="k-2").decision_id != g.decision_id
    assert decisions(rt) == 2


def test_the_recorded_body_carries_the_digest_of_the_whole_repr_and_stays_canonical(rt):  # noqa: F811
    a = send(note=BIG, quote="it's \"q\"")
    g = rt.gate(a, now=at(0), key="k")
    e = rt.ledger.get(g.decision_id)
    assert e.body[gatejson.DIGEST] == hashlib.sha256(repr(a).encode()).hexdigest()
    assert e.body["action"] == repr(a)[:SHOWN]
    assert e.body_json == canonical_text(e.body)  # RFC 8785: the field sorts after `action_error`
    assert list(e.body) == sorted(e.body) and list(e.body)[:3] == ["action", "action_error", gatejson.DIGEST]
    # with a caller, too, and through the batch
    g2 = rt.gate(send(note=BIG, n=2), now=at(1), caller="casey")
    b2 = rt.ledger.get(g2.decision_id)
    assert b2.body["caller"] == "casey" and b2.body_json == canonical_text(b2.body)
    g3 = rt.gate_many([send(), send(v=float("nan"))], now=at(2))[1]
    b3 = rt.ledger.get(g3.decision_id)
    assert b3.body[gatejson.DIGEST] == gatejson.repr_sha256(send(v=float("nan")))
    assert b3.body_json == canonical_text(b3.body)
    # an action recorded exactly carries none
    assert gatejson.DIGEST not in rt.ledger.get(rt.gate(send(), now=at(3)).decision_id).body
    # and the ledger still verifies (its API and the CLI)
    assert rt.ledger.verify().ok
    code, out, err = run_ledger_cli("verify", "--ledger", str(rt.ledger.url))
    assert code == 0, (out, err)


def test_the_fast_encoder_writes_the_digest_as_the_reference_encoder_does(rt):  # noqa: F811
    """The policy's own deny of a template (`deny blocked`) takes the fast text path."""
    a = send(5000.0, note=BIG)
    for _ in range(3):  # (the engine makes a decision template after its first decisions of a kind)
        d = rt.engine.evaluate(a, None, at(0))
    text, recorded, problem = gatejson.recordable(a)
    d = gatejson.fail_closed(d, problem)
    for caller in (None, "casey"):
        body = gatejson.gate_body(text, recorded, problem, d, _ts(at(0)), None, caller, gatejson.repr_sha256(a))
        assert isinstance(body, Canonical)
        ref = {"action": recorded, "action_error": problem, gatejson.DIGEST: gatejson.repr_sha256(a),
               "decision": d.model_dump(mode="json"), "now": _ts(at(0)), "policy_hash": d.policy_hash,
               **({"caller": caller} if caller else {})}
        assert body.text == canonical_text(ref) and set(body.keys) == set(ref)
    g = rt.gate(a, now=at(0), key="k")
    assert g.decision.deciding.name == "blocked" and gatejson.DIGEST in rt.ledger.get(g.decision_id).body


def test_a_batch_compares_by_the_digest(rt):  # noqa: F811
    first, other = PAIRS["items"]
    # one key twice in a batch: the same action is one request, another is a conflict
    gs = rt.gate_many([first(), first()], keys=["t", "t"], now=at(0))
    assert gs[1].replayed and gs[1].decision_id == gs[0].decision_id and decisions(rt) == 1
    with pytest.raises(IdempotencyConflict, match="given twice"):
        rt.gate_many([first(), other()], keys=["u", "u"], now=at(1))
    out = rt.gate_many([first(), other()], keys=["u", "u"], now=at(1), conflicts="return")
    assert isinstance(out[1], IdempotencyConflict) and not isinstance(out[0], IdempotencyConflict)
    assert decisions(rt) == 2
    # a used key: the same action is its retry, another is a conflict
    again = rt.gate_many([other(), first()], keys=["v", "u"], now=at(2), conflicts="return")
    assert again[1].replayed and again[1].decision_id == out[0].decision_id
    with pytest.raises(IdempotencyConflict, match="for another action"):
        rt.gate_many([other()], keys=["u"], now=at(3))
    assert decisions(rt) == 3


def test_an_exact_action_is_never_the_retry_of_one_recorded_by_its_excerpt(rt):  # noqa: F811
    """A plain string action that reads like the excerpt is another action (the old code
    compared the excerpt with it)."""
    a = send(v=float("nan"))
    g = rt.gate(a, now=at(0), key="k")
    with pytest.raises(IdempotencyConflict):
        rt.gate(rt.ledger.get(g.decision_id).body["action"], now=at(1), key="k")


def _old_record(rt, a, key, t):  # noqa: F811
    """The decision the gate recorded for ``a`` before ``action_repr_sha256``: the same body
    without it (the encoder writes no digest when given none: the body of before)."""
    text, recorded, problem = gatejson.recordable(a)
    d = gatejson.fail_closed(rt.engine.evaluate(a, None, at(t)), problem)
    body = gatejson.gate_body(text, recorded, problem, d, _ts(at(t)), None)
    e = rt.ledger.append("decision", body, workflow=WF, key=key, time=at(t))
    assert gatejson.DIGEST not in e.body and e.body["action"] == recorded
    return e


def test_a_decision_recorded_before_the_digest_is_compared_by_its_excerpt_as_it_was(rt):  # noqa: F811
    first, other = PAIRS["chars"]
    old = _old_record(rt, first(), "old", 0)
    # all it records is the excerpt: an action with the same excerpt is its retry, as before
    for a in (first(), other()):
        g = rt.gate(a, now=at(1), key="old")
        assert g.replayed and g.decision_id == old.id and g.decision.effect == "deny"
    assert rt.gate_many([other()], keys=["old"], now=at(2))[0].decision_id == old.id
    # another excerpt is a conflict, as before; and an action recorded exactly is never its retry
    with pytest.raises(IdempotencyConflict):
        rt.gate(send(note="z" * (MAX_INPUT_CHARS + 1)), now=at(3), key="old")
    with pytest.raises(IdempotencyConflict):
        rt.gate(send(), now=at(3), key="old")
    assert decisions(rt) == 1
    assert rt.ledger.verify().ok


def test_an_action_both_unrecordable_and_beyond_the_limits_names_both(rt):  # noqa: F811
    g = rt.gate(send(note=BIG, v=float("nan")), now=at(0))
    err = rt.ledger.get(g.decision_id).body["action_error"]
    assert "number at `action.v` is not finite" in err and f"more than {MAX_INPUT_CHARS} characters" in err
    assert "MAX_INPUT_CHARS" in g.decision.reason
    # each alone names its own problem only
    assert "limits" not in gatejson.recordable(send(v=float("nan")))[2]
    assert "not finite" not in gatejson.recordable(send(note=BIG))[2]
    # an int too long to write is named once (it is both)
    assert gatejson.recordable(send(n=10**5000))[2].count("integer") == 1


# ------------------------------------------------------------------------------------ the digest itself
def test_repr_sha256_is_the_sha256_of_the_whole_repr_written_piece_by_piece():
    alphabet = ["a", "'", '"', "\\", "\n", "\t", "\x00", "\x7f", "é", "\u2028", "\ud800", "\U0001f600", "\x85"]
    rng = random.Random(25)
    for _ in range(3000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        for size in (1, 2, 3, 7):
            assert "".join(gatejson._str_repr(s, size)) == repr(s), (s, size)
    for v in [{"a": "x'y\"" * 40_000, "b": [1, 2.0, None, True, ("q'" * 70_000,)]}, "'" * 100_000,
              {"k" * 70_000: [float("nan"), -0.0, 10**40]}, []]:
        assert gatejson.repr_sha256(v) == hashlib.sha256(repr(v).encode()).hexdigest()
    cyc: list = [1]
    cyc.append(cyc)
    loop: dict = {"a": 1}
    loop["self"] = loop
    assert gatejson.repr_sha256(cyc) == hashlib.sha256(repr(cyc).encode()).hexdigest()
    # runs of leaves written at once (`_exact_parts`): the same text, at and across a run's bounds
    leaves = [0, -5, 1.5, float("nan"), -0.0, True, None, "a'b", 'q"', "é\n", "x" * 200, 10**30, 10**5000]
    inner = [(), (1,), ("a",), [], {}, {"a": 1}, {1: None, (1, 2): "t", 2.5: [1]}, cyc, loop]

    def value(depth: int = 0) -> object:
        if depth > 2 or rng.random() < 0.3:
            return rng.choice(leaves + inner)
        n = rng.choice([0, 1, 3, 511, 512, 513, 1100]) if depth == 0 else rng.randint(0, 4)

        def pick() -> object:
            return value(depth + 1) if rng.random() < 0.05 else rng.choice(leaves)

        r = rng.random()
        if r < 0.4:
            return [pick() for _ in range(n)]
        if r < 0.6:
            return tuple(pick() for _ in range(min(n, 5)))
        return {(rng.choice(["k'", 1, 2.5, None, (1, 2)]) if rng.random() < 0.3 else f"k{i}"): pick() for i in range(n)}

    huge = 0
    for _ in range(300):
        v = value()
        text = "".join(gatejson.repr_pieces(v, exact=True))
        try:
            assert text == repr(v)
        except ValueError:  # (an int Python does not write: in hex here, `<int>` in the excerpt)
            huge += 1
            assert "<int 0x" in text and "<int>" in "".join(gatejson.repr_pieces(v))
    assert huge
    assert gatejson.repr_sha256(nested(10_000, 1)) != gatejson.repr_sha256(nested(10_000, 2))
    assert gatejson.repr_sha256(10**5000) != gatejson.repr_sha256(10**5000 + 1)


@pytest.mark.parametrize("big", ["string", "items", "rows"])
def test_repr_sha256_of_a_20_mb_action_holds_no_copy_of_it(big):
    a = {"string": lambda: send(note="y" * 20_000_000), "items": lambda: send(tags=[12345] * 3_000_000),
         "rows": lambda: send(rows=[{"id": i, "name": "n" * 100} for i in range(150_000)])}[big]()
    tracemalloc.start()
    try:
        gatejson.repr_sha256(a)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4_000_000  # (its repr whole is 20 MB or more)


# ------------------------------------------------------------------------------------------ over HTTP
fastapi = pytest.importorskip("fastapi")

TAGS = [0] * (MAX_INPUT_ITEMS + 1)  # (about 200 KB of JSON: within the server's 1 MiB body limit)
TAGS2 = [0] * MAX_INPUT_ITEMS + [1]


def _client(tmp_path):
    from server_support import server_policy_dir, write_identities
    from starlette.testclient import TestClient

    from policy_engine.server import ServerConfig, create_app

    ids = str(write_identities(tmp_path / "ids.yaml"))
    app = create_app(ServerConfig(str(server_policy_dir(tmp_path)), ledger=f"sqlite:///{tmp_path / 'l.db'}",
                                  identities=ids, reload_interval=0))
    return TestClient(app)


def test_http_gate_batch_and_authzen_refuse_another_oversize_action_under_a_used_key(tmp_path):
    from server_support import bearer

    h = bearer("ops")
    log = {"workflow": WF, "type": "log"}
    with _client(tmp_path) as c:
        r = c.post("/v1/gate", json={"action": {**log, "tags": TAGS}, "key": "h-1"}, headers=h)
        assert r.status_code == 200 and r.json()["decision"]["effect"] == "deny"
        first = r.json()["decision_id"]
        r = c.post("/v1/gate", json={"action": {**log, "tags": TAGS2}, "key": "h-1"}, headers=h)
        assert r.status_code == 409, r.text
        r = c.post("/v1/gate", json={"action": {**log, "tags": TAGS}, "key": "h-1"}, headers=h)
        assert r.status_code == 200 and r.json()["decision_id"] == first and r.json()["replayed"] is True

        r = c.post("/v1/gate/batch", json={"actions": [{**log, "tags": TAGS2}], "keys": ["h-1"]}, headers=h)
        assert r.status_code == 409, r.text

        req = {"subject": {"type": "agent", "id": "a1"}, "action": {"name": "log"},
               "resource": {"type": "ticket", "id": "T-1", "properties": {"tags": TAGS}},
               "context": {"workflow": WF}}
        k = {**h, "Idempotency-Key": "az-1"}
        r = c.post("/access/v1/evaluation", json=req, headers=k)
        assert r.status_code == 200 and r.json()["decision"] is False
        first = r.json()["context"]["decision_id"]
        assert c.post("/access/v1/evaluation", json=req, headers=k).json()["context"]["decision_id"] == first
        req["resource"]["properties"]["tags"] = TAGS2
        r = c.post("/access/v1/evaluation", json=req, headers=k)
        assert r.status_code == 409, r.text
