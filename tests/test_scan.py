"""policy_engine.scan on SQLite and PostgreSQL: the fields the database picks out of each
body equal the same fields of the fully parsed body (hostile strings, numbers, nesting,
absent keys), in seq order across pages, bounded by seq; a path that is not plain names
is refused before it reaches SQL."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)

from policy_engine.ledger import Ledger, NewEntry, schema
from policy_engine.scan import scan

E = schema.entries
PATHS = ["type", "receipt", "receipt.note", "receipt.n", "nested.a.b", "flags", "absent", "absent.deeper"]
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-(2**53) + 1, 2**53 - 1), TEXT,
                   st.floats(allow_nan=False, allow_infinity=False, width=64))
JSONV = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                     max_leaves=8)


def _pick(body, path):
    for k in path.split("."):
        if not isinstance(body, dict):
            return None
        body = body.get(k)
    return body


def _body(i, note, n, deep):
    return {"receipt": {"note": note, "n": n, "x": [1, {"y": note}]}, "authorized": True, "flags": [note, i],
            "reasons": [], "missing_receipt": [], "decision": None, "caused_by": None, "type": f"t\"{i}\\é",
            "action_id": None, "executed_at": "2026-11-20T09:00:00Z", "reviewer": None, "requester": "agent",
            "nested": {"a": {"b": deep}}}


def test_fields_equal_the_parsed_body_across_pages_and_within_bounds(ledger_url):  # noqa: F811
    led = Ledger.open(ledger_url, create=True)
    try:
        bodies = [_body(i, "ünï\u2028\"\\\n\t" * (i % 3), [0.1, 1e-7, 2**53 - 1, -0.0, 1.5e300][i % 5],
                        [{"k": None}, "s", 3, True, None][i % 5]) for i in range(23)]
        led.append_many([NewEntry("execution", b, workflow="w") for b in bodies])
        led.append("decision", {"action": {"type": "x"}, "decision": {}, "policy_hash": "h"})
        stored = {e.seq: e.body for e in led.entries(kind="execution")}
        got = list(scan(led, [E.c.kind == "execution"], PATHS, page=5))
        assert [g[0] for g in got] == sorted(stored)
        for seq, eid, wf, _t, vals in got:
            assert wf == "w" and eid == led.get(seq).id
            assert vals == [_pick(stored[seq], p) for p in PATHS], seq
        one = list(scan(led, [E.c.kind == "execution"], ["receipt"], after=3, upto=9, page=4))
        assert [g[0] for g in one] == [s for s in sorted(stored) if 3 < s <= 9]
        assert all(v == [stored[s]["receipt"]] for s, _, _, _, v in one)
    finally:
        led.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(JSONV, min_size=1, max_size=6))
def test_any_json_value_comes_back_as_written(tmp_path_factory, values):
    led = Ledger.open(f"sqlite:///{tmp_path_factory.mktemp('scan') / 'l.db'}", create=True)
    try:
        led.append_many([NewEntry("execution", {"receipt": {}, "authorized": True, "v": v}) for v in values])
        got = [vals[0] for *_, vals in scan(led, [E.c.kind == "execution"], ["v"])]
        assert got == [e.body["v"] for e in led.entries(kind="execution")]
    finally:
        led.close()


def test_a_path_that_is_not_plain_names_is_refused(tmp_path):
    led = Ledger.open(f"sqlite:///{tmp_path / 'l.db'}", create=True)
    try:
        for bad in ("a'); drop table x; --", "a..b", "a.b[0]", ""):
            with pytest.raises(ValueError, match="plain names"):
                list(scan(led, [], [bad]))
    finally:
        led.close()
