"""The ledger's API on both backends (the same test functions, parametrised)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import rfc8785
from ledger_fixtures import body, guards_off, ledger_url, raw  # noqa: F401  (fixture)
from sqlalchemy import text

from policy_engine.ledger import (
    EntryNotFound,
    IdempotencyConflict,
    InvalidEntry,
    Ledger,
    LedgerNotFound,
    LedgerUnavailable,
    NewEntry,
    SchemaError,
    StateChanged,
    schema,
)
from policy_engine.ledger.canonical import leaf_data
from policy_engine.ledger.merkle import leaf_hash

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture
def led(ledger_url):
    with Ledger.open(ledger_url, create=True) as lg:
        yield lg


def test_append_returns_committed_entries_in_one_chain(led, ledger_url):
    d = led.append("decision", body("decision"), workflow="support", time=T0)
    a = led.append("approval", body("approval", subject=d.id), links=[d.id], time=T0 + timedelta(seconds=1))
    assert (d.seq, a.seq) == (0, 1)
    assert a.prev == d.hash and d.prev == "0" * 64
    assert led.size == 2
    # another connection sees both (committed), byte for byte
    with Ledger.open(ledger_url) as other:
        got = other.get(a.id)
        assert got == a and got.body == a.body
        assert other.get(0) == d and other.get("0") == d
    assert d.time == "2026-11-26T12:00:00.000000Z"


def test_entry_hash_is_the_rfc6962_leaf_hash_of_the_rfc8785_entry(led):
    e = led.append("decision", body("decision", note="é\u2028"), workflow="w", time=T0)
    whole = {"body": e.body, "id": e.id, "key": None, "kind": "decision", "links": [], "prev": e.prev, "seq": 0,
             "time": e.time, "v": 1, "workflow": "w"}
    assert e.leaf_data() == rfc8785.dumps(whole)
    assert e.hash == leaf_hash(rfc8785.dumps(whole)).hex()
    assert leaf_data(e.body_json, seq=0, id=e.id, kind="decision", workflow="w", links=(), key=None, time=e.time,
                     prev=e.prev) == rfc8785.dumps(whole)


@pytest.mark.parametrize("text_", ["plain", "é\u2028\u2029", "\x00\x01\x1f\x7f", '"\\/\b\f\n\r\t', "😀\ufeff",
                                   "\u0080\uffff"])
def test_the_fast_header_serialisation_is_exactly_rfc8785(text_):
    fields = dict(seq=2**40, id=text_, kind="stop", workflow=text_, links=(text_, "x"), key=text_,
                  time="2026-01-01T00:00:00.000000Z", prev="0" * 64)
    whole = {"body": {"k": text_}, **{k: list(v) if k == "links" else v for k, v in fields.items()}, "v": 1}
    assert leaf_data(rfc8785.dumps({"k": text_}).decode(), **fields) == rfc8785.dumps(whole)


def test_lone_surrogates_are_refused(led):
    with pytest.raises(InvalidEntry, match="Unicode"):
        led.append("stop", body("stop"), workflow="w\ud800")


@pytest.mark.parametrize(
    "kind,bad,workflow,links,msg",
    [
        ("vote", {}, None, (), "unknown entry kind `vote`"),
        ("decision", {"action": {}}, None, (), "needs `decision`, `policy_hash`"),
        ("stop", {"trigger": "t"}, None, (), "names its workflow"),
        (
            "approval",
            {"subject": "s", "digest": "d", "principal": "p", "verdict": "approve"},
            None,
            (),
            "links to at least 1",
        ),
        ("step", {"record": "r", "status": "done"}, None, ("X",), "status"),
        ("decision", {"action": float("nan"), "decision": 1, "policy_hash": "p"}, None, (), "not finite"),
        ("decision", {"action": 2**60, "decision": 1, "policy_hash": "p"}, None, (), r"2\^53"),
        ("decision", {"action": object(), "decision": 1, "policy_hash": "p"}, None, (), "not JSON"),
        ("decision", [1], None, (), "JSON object"),
    ],
)
def test_invalid_entries_are_refused_and_nothing_is_written(led, kind, bad, workflow, links, msg):
    with pytest.raises(InvalidEntry, match=msg):
        led.append(kind, bad, workflow=workflow, links=links)
    assert led.size == 0


def test_a_link_to_an_unknown_entry_is_refused(led):
    with pytest.raises(InvalidEntry, match="unknown entry `nope`"):
        led.append("approval", body("approval"), links=["nope"])
    assert led.size == 0


def test_idempotency_key_returns_the_existing_entry_and_refuses_a_different_reuse(led):
    d = led.append("decision", body("decision"))
    s1 = led.append("step", body("step"), links=[d.id], key="rb-1/rec-1/completed")
    s2 = led.append("step", body("step"), links=[d.id], key="rb-1/rec-1/completed")
    assert s2 == s1 and led.size == 2
    with pytest.raises(IdempotencyConflict, match="rb-1/rec-1/completed"):
        led.append("step", body("step", status="failed"), links=[d.id], key="rb-1/rec-1/completed")
    # within one batch too
    out = led.append_many(
        [NewEntry("stop", body("stop"), workflow="w", key="k"), NewEntry("stop", body("stop"), workflow="w", key="k")]
    )
    assert out[0] == out[1] and led.size == 3


def test_history_both_ways(led):
    d = led.append("decision", body("decision"))
    ap = led.append("approval", body("approval", subject=d.id), links=[d.id])
    x = led.append("execution", body("execution"), links=[d.id])
    child = led.append("execution", body("execution"), links=[x.id])
    rb = led.append("rollback", body("rollback"), links=[x.id])
    st = led.append("step", body("step", record=x.id), links=[rb.id])
    other = led.append("decision", body("decision"))
    h = led.history(x.id)
    assert [e.id for e in h.upstream] == [d.id]
    assert [e.id for e in h.downstream] == [child.id, rb.id, st.id]
    h2 = led.history(rb.id)  # a rollback shows the original, unchanged
    assert [e.id for e in h2.upstream] == [d.id, x.id] and h2.upstream[1] == x
    assert [e.id for e in h2.downstream] == [st.id]
    assert [e.id for e in led.history(d.id).downstream] == [ap.id, x.id, child.id, rb.id, st.id]
    assert other.id not in {e.id for e in led.history(d.id).entries}
    with pytest.raises(EntryNotFound):
        led.history("missing")


def test_entries_filters(led):
    d = led.append("decision", body("decision"), workflow="a", time=T0)
    led.append("stop", body("stop"), workflow="b", time=T0 + timedelta(minutes=1))
    ap = led.append("approval", body("approval"), links=[d.id], time=T0 + timedelta(minutes=2))
    assert [e.seq for e in led.entries()] == [0, 1, 2]
    assert [e.seq for e in led.entries(kind="stop")] == [1]
    assert [e.seq for e in led.entries(workflow="a")] == [0]
    assert [e.id for e in led.entries(link=d.id)] == [ap.id]
    assert [e.seq for e in led.entries(since=T0 + timedelta(minutes=1))] == [1, 2]
    assert [e.seq for e in led.entries(until=T0 + timedelta(minutes=1))] == [0]
    assert [e.seq for e in led.entries(reverse=True, limit=2)] == [2, 1]
    assert [e.seq for e in led.entries(after=0, limit=1)] == [1]


def test_the_database_refuses_update_delete_of_entries(led, ledger_url):
    d = led.append("decision", body("decision"))
    led.append("approval", body("approval"), links=[d.id])  # a link row and a Merkle node
    for stmt in (
        "UPDATE ledger_entries SET body = '{}'",
        "DELETE FROM ledger_entries",
        "DELETE FROM ledger_nodes",
        "UPDATE ledger_links SET to_seq = 0",
    ):
        with pytest.raises(Exception, match="append-only"):
            with raw(ledger_url) as c:
                c.execute(text(stmt))
    if led.backend == "postgresql":
        with pytest.raises(Exception, match="append-only"):
            with raw(ledger_url) as c:
                c.execute(text("TRUNCATE ledger_entries"))
    assert led.size == 2 and led.verify().ok


def test_threads_append_one_chain(led):
    def work(i):
        for j in range(25):
            led.append("stop", body("stop", n=j), workflow=f"w{i}")

    ts = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    es = led.entries(limit=1000)
    assert [e.seq for e in es] == list(range(150))
    assert all(b.prev == a.hash for a, b in zip(es, es[1:]))
    assert led.verify().ok


def test_open_without_create_never_makes_an_empty_ledger(ledger_url, tmp_path):
    with pytest.raises(LedgerNotFound, match="run `stopline ledger init`"):
        Ledger.open(ledger_url)
    if ledger_url.startswith("sqlite"):
        assert not (tmp_path / "ledger.db").exists()


def test_a_newer_schema_is_refused_and_left_alone(ledger_url):
    Ledger.open(ledger_url, create=True).close()
    with raw(ledger_url) as c:
        c.execute(text("UPDATE ledger_meta SET value = '99' WHERE name = 'schema_version'"))
    with pytest.raises(SchemaError, match="schema version 99, newer than this Stopline supports"):
        Ledger.open(ledger_url)
    with pytest.raises(SchemaError):
        Ledger.open(ledger_url, create=True)


def test_foreign_tables_are_not_a_ledger(ledger_url):
    with raw(ledger_url) as c:
        c.execute(text("CREATE TABLE customers (id integer)"))
    with pytest.raises(SchemaError, match="not a Stopline ledger"):
        Ledger.open(ledger_url)


def test_unreadable_ledgers_give_one_line_errors(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    cases = [
        f"sqlite:///{bad}",
        "postgresql+psycopg://postgres@127.0.0.1:1/test",
        "mysql://x@y/z",
        "::nonsense",
        "sqlite://",
        f"sqlite:///{tmp_path}",
    ]
    for url in cases:
        with pytest.raises(LedgerUnavailable) as ei:
            Ledger.open(url, create=True)
        assert "\n" not in str(ei.value) and str(ei.value), url
    assert bad.read_bytes() == b"this is not sqlite" * 100


def test_init_is_idempotent_and_keeps_the_log(ledger_url):
    with Ledger.open(ledger_url, create=True) as a:
        a.append("stop", body("stop"), workflow="w")
        log_id = a.log_id
    with Ledger.open(ledger_url, create=True) as b:
        assert b.log_id == log_id and b.size == 1


def test_durability_is_full_by_default_and_normal_on_request(tmp_path):
    url = f"sqlite:///{tmp_path / 'd.db'}"
    with Ledger.open(url, create=True) as led:
        assert led.durability == "full"
        with led._engine.connect() as c:
            assert c.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    for normal in (Ledger.open(url + "?durability=normal"), Ledger.open(url, durability="normal")):
        with normal as led:
            assert led.durability == "normal"
            with led._engine.connect() as c:
                assert c.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
            led.append("stop", body("stop"), workflow="w")
    with pytest.raises(LedgerUnavailable, match="durability must be full or normal"):
        Ledger.open(url + "?durability=fast")


def test_postgres_normal_durability_turns_synchronous_commit_off(ledger_url):
    if not ledger_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    Ledger.open(ledger_url, create=True).close()
    for mode, want in (("full", "on"), ("normal", "off")):
        with Ledger.open(ledger_url, durability=mode) as led:
            with led._engine.connect() as c:
                assert c.exec_driver_sql("SHOW synchronous_commit").scalar() == want


def test_concurrent_appends_with_one_key_make_one_entry_and_a_conflict_fails_alone(led):
    """Group commit (threads in one process; the sequencer on PostgreSQL): requests that
    share a transaction are judged one by one."""
    first = led.append("stop", body("stop"), workflow="w")
    results: dict[int, object] = {}

    def work(i):
        try:
            if i % 3 == 0:  # the same key and body: one entry for all of them
                results[i] = led.append("stop", body("stop", same=True), workflow="w", key="k-same", links=[first.id])
            elif i % 3 == 1:  # a key whose body differs from the first use: a conflict for all but one
                results[i] = led.append("stop", body("stop", who=i), workflow="w", key="k-diff")
            else:
                results[i] = led.append("stop", body("stop", n=i), workflow="w")
        except IdempotencyConflict as e:
            results[i] = e

    ts = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    same = {results[i].id for i in range(0, 12, 3)}
    assert len(same) == 1
    diff = [results[i] for i in range(1, 12, 3)]
    assert sum(isinstance(r, IdempotencyConflict) for r in diff) == 3
    assert all(not isinstance(results[i], Exception) for i in range(2, 12, 3))
    es = led.entries(limit=100)
    assert len(es) == 1 + 1 + 1 + 4
    assert [e.seq for e in es] == list(range(len(es)))
    assert led.verify().ok


def test_an_unknown_link_is_refused_on_every_append_path(led):
    led.append("stop", body("stop"), workflow="w")
    with pytest.raises(InvalidEntry, match="unknown entry"):
        led.append("stop", body("stop"), workflow="w", links=["nope"])
    with pytest.raises(InvalidEntry, match="unknown entry"):
        led.append_many(
            [NewEntry("stop", body("stop"), workflow="w"), NewEntry("stop", body("stop"), workflow="w", links=["x"])]
        )
    assert led.size == 1 and led.verify().ok


def test_a_fenced_append_is_refused_once_the_workflow_was_stopped_or_resumed(led):
    """The check-then-append the runtime's gate relies on: a caller read the workflow's state
    when the log had `since` entries; its append goes in only if no stop or resume of that
    workflow came after, and a refused one writes nothing (neither its entries nor `then`)."""
    led.append("decision", body("decision"), workflow="w")
    since = led.size
    ok = led.append_many([NewEntry("decision", body("decision"), workflow="w")], fence=("w", since))
    assert ok[0].seq == since
    stop = led.append("stop", body("stop"), workflow="w")
    with pytest.raises(StateChanged, match="`w`"):
        led.append_many([NewEntry("decision", body("decision"), workflow="w")], fence=("w", since))
    assert led.size == stop.seq + 1
    # another workflow's stop does not touch this fence; a fence read after the stop passes
    led.append("stop", body("stop"), workflow="other")
    assert led.append_many([NewEntry("decision", body("decision"), workflow="w")], fence=("w", stop.seq + 1))
    led.append("resume", body("resume"), workflow="w", links=[stop.id])
    with pytest.raises(StateChanged):
        led.append_many([NewEntry("decision", body("decision"), workflow="w")], fence=("w", stop.seq + 1))
    assert led.verify().ok


def test_concurrent_fenced_appends_see_a_stop_committed_in_the_same_group(led):
    """Threads share commits (group commit): a fenced request after a stop of its workflow in
    the same transaction is refused, the others are written; the chain stays whole."""
    since = led.size
    results: dict[int, object] = {}

    def work(i):
        try:
            if i == 0:
                results[i] = led.append("stop", body("stop"), workflow="w")
            else:
                results[i] = led.append_many([NewEntry("decision", body("decision", n=i), workflow="w")],
                                             fence=("w", since))
        except StateChanged as e:
            results[i] = e

    ts = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    stop_seq = results[0].seq
    for i in range(1, 12):
        r = results[i]
        # written before the stop, or refused: never a decision after the stop under the old state
        assert isinstance(r, StateChanged) or r[0].seq < stop_seq
    assert led.verify().ok


def test_then_statements_run_in_the_appends_transaction_only_when_it_wrote(led, ledger_url):
    with raw(ledger_url) as c:
        c.execute(text("CREATE TABLE side (id VARCHAR(64) PRIMARY KEY, seq BIGINT)"))

    def then(ids):
        return [("INSERT INTO side (id, seq) SELECT id, seq FROM ledger_entries WHERE id = ?", (ids[0],))]

    a = led.append_many([NewEntry("decision", body("decision"), key="k1")], then=then)[0]
    again = led.append_many([NewEntry("decision", body("decision"), key="k1")], then=then)[0]
    assert again == a  # the existing entry: its then found no new entry
    stop = led.append("stop", body("stop"), workflow="w")
    with pytest.raises(StateChanged):
        led.append_many([NewEntry("decision", body("decision"), workflow="w")], fence=("w", stop.seq), then=then)
    with raw(ledger_url) as c:
        assert c.execute(text("SELECT id, seq FROM side")).all() == [(a.id, a.seq)]


def test_a_version_2_ledger_is_migrated_to_version_3_and_keeps_appending(ledger_url):
    """Version 3 replaces the PostgreSQL queue by the append function; an older ledger is
    brought forward at open (the queue dropped, the barrier table and the state index made)."""
    with Ledger.open(ledger_url, create=True) as lg:
        first = lg.append("stop", body("stop"), workflow="w")
    with raw(ledger_url) as c:  # make it look like version 2 again
        c.execute(text("DROP INDEX ledger_entries_state"))
        c.execute(text("DROP TABLE ledger_flush"))
        if c.dialect.name == "postgresql":
            c.execute(text("DROP FUNCTION ledger_append_one"))
            c.execute(text("DROP FUNCTION ledger_append_batch"))
        c.execute(text("CREATE TABLE ledger_queue (qid INTEGER PRIMARY KEY, grp VARCHAR(32))"))
        c.execute(text("UPDATE ledger_meta SET value = '2' WHERE name = 'schema_version'"))
    with Ledger.open(ledger_url) as lg:
        e = lg.append("resume", body("resume"), workflow="w", links=[first.id])
        with pytest.raises(StateChanged):
            lg.append_many([NewEntry("decision", body("decision"), workflow="w")], fence=("w", 0))
        assert e.seq == 1 and lg.verify().ok
    with raw(ledger_url) as c:
        assert c.execute(text("SELECT value FROM ledger_meta WHERE name = 'schema_version'")).scalar() == "3"
        names = set(schema.inspect_tables(c))
        assert "ledger_queue" not in names and "ledger_flush" in names
