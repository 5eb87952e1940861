"""Follow-ups of the ledger's hardening: verify notices guard triggers that were dropped,
disabled or replaced (and `init` puts them back); a history cut at its limit says so;
`init` refuses another application's database; unknown SQLite URL options are refused;
a checkpoint of another log is a failed verification (exit 1), not an unreadable input."""

from __future__ import annotations

import sqlite3
import warnings

import pytest
from ledger_fixtures import body, ledger_url, one_line_error, raw, run_ledger_cli  # noqa: F401  (fixture)
from sqlalchemy import text

from policy_engine.ledger import InvalidQuery, Ledger, LedgerUnavailable, NewEntry, SchemaError, generate_key
from policy_engine.ledger.note import write_key

KEY = generate_key("test-log")


@pytest.fixture
def led(ledger_url):
    with Ledger.open(ledger_url, create=True) as led:
        yield led


def _refused(url: str, stmt: str) -> bool:
    try:
        with raw(url) as c:
            c.execute(text(stmt))
    except Exception as e:  # noqa: BLE001  (the driver's error for the trigger's refusal)
        assert "append-only" in str(e), e
        return True
    return False


# ------------------------------------------------------------------ 1. the guard triggers
def test_verify_fails_when_a_guard_trigger_is_dropped_and_init_restores_it(led, ledger_url):
    d = led.append("decision", body("decision"))
    led.append("approval", body("approval"), links=[d.id])
    assert led.verify().ok and led.guard_problems() == []
    with raw(ledger_url) as c:
        if led.backend == "sqlite":
            c.execute(text("DROP TRIGGER ledger_entries_no_delete"))
        else:
            c.execute(text("DROP TRIGGER ledger_entries_no_change ON ledger_entries"))
    name = "ledger_entries_no_delete" if led.backend == "sqlite" else "ledger_entries_no_change"
    r = led.verify()
    assert not r.ok and r.first_bad is None and r.size == 2 and r.guards == (f"`{name}` is missing",)
    assert name in r.problem and "stopline ledger init" in r.hint
    assert r.to_json()["guards"] == [f"`{name}` is missing"]
    code, out, err = run_ledger_cli("verify", "--ledger", ledger_url)
    assert code == 1 and err == "", (out, err)
    lines = out.splitlines()
    assert lines[0].startswith("FAILED: the database no longer refuses to change or delete entries")
    assert name in lines[0]
    assert lines[1].startswith("hint: `stopline ledger init` re-creates the guard triggers")
    # init puts them back (and says so), writing no entry; then history is append-only again
    code, out, err = run_ledger_cli("init", "--ledger", ledger_url)
    assert code == 0 and "re-created the guard triggers" in err and name in err and err.count("\n") == 1, err
    assert led.verify().ok and led.size == 2
    assert _refused(ledger_url, "DELETE FROM ledger_entries")
    assert _refused(ledger_url, "UPDATE ledger_entries SET kind = 'x'")
    code, out, err = run_ledger_cli("init", "--ledger", ledger_url)  # nothing to restore: quiet
    assert code == 0 and err == ""


def test_verify_finds_a_disabled_or_replaced_guard(led, ledger_url):
    led.append("stop", body("stop"), workflow="w")
    led.append("stop", body("stop"), workflow="w")  # (closes a Merkle node)
    with raw(ledger_url) as c:
        if led.backend == "sqlite":  # SQLite cannot disable a trigger: replace one by a no-op of the same name
            c.execute(text("DROP TRIGGER ledger_nodes_no_update"))
            c.execute(text("CREATE TRIGGER ledger_nodes_no_update BEFORE UPDATE ON ledger_nodes BEGIN SELECT 1; END"))
            want = ("`ledger_nodes_no_update` was changed",)
        else:
            c.execute(text("ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_no_change"))
            # fires in replica sessions only: not in normal use
            c.execute(text("ALTER TABLE ledger_links ENABLE REPLICA TRIGGER ledger_links_no_change"))
            c.execute(text("DROP TRIGGER ledger_nodes_no_truncate ON ledger_nodes"))
            c.execute(text("CREATE TRIGGER ledger_nodes_no_truncate AFTER TRUNCATE ON ledger_nodes "
                           "FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()"))
            want = ("`ledger_entries_no_change` is disabled", "`ledger_links_no_change` is disabled",
                    "`ledger_nodes_no_truncate` was changed")
    r = led.verify()
    assert not r.ok and r.guards == want, r.render()
    assert led.restore_guards() == list(want) and led.guard_problems() == [] and led.verify().ok
    assert _refused(ledger_url, "UPDATE ledger_nodes SET hash = 'x'")
    assert _refused(ledger_url, "DELETE FROM ledger_entries")


def test_a_replaced_refusing_function_is_found(led, ledger_url):
    if led.backend != "postgresql":
        pytest.skip("PostgreSQL only (the triggers' function)")
    with raw(ledger_url) as c:
        c.execute(text("CREATE OR REPLACE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql "
                       "AS $$ BEGIN RETURN NEW; END $$"))
    r = led.verify()
    assert not r.ok and len(r.guards) == 6 and all("was changed" in g for g in r.guards)
    assert run_ledger_cli("init", "--ledger", ledger_url)[0] == 0 and led.verify().ok


def test_an_entry_problem_and_missing_guards_are_both_reported(led, ledger_url):
    led.append("stop", body("stop"), workflow="w")
    with raw(ledger_url) as c:  # the triggers off (committed), then an edit
        if led.backend == "sqlite":
            for t in ("ledger_entries_no_update", "ledger_entries_no_delete"):
                c.execute(text(f"DROP TRIGGER {t}"))
        else:
            c.execute(text("ALTER TABLE ledger_entries DISABLE TRIGGER USER"))
    with raw(ledger_url) as c:
        c.execute(text("UPDATE ledger_entries SET body = '{\"trigger\":\"x\"}' WHERE seq = 0"))
    r = led.verify()
    assert not r.ok and r.first_bad == 0 and len(r.guards) == 2
    lines = r.render().splitlines()
    assert lines[0].startswith("FAILED at seq 0: entry 0 does not match its hash")
    assert lines[1].startswith("FAILED: the database no longer refuses") and lines[2].startswith("hint: ")
    assert run_ledger_cli("init", "--ledger", ledger_url)[0] == 0
    r = led.verify()
    assert not r.ok and r.first_bad == 0 and r.guards == () and r.hint is None


# ------------------------------------------------------------------ 2. a history cut at its limit says so
def test_a_history_cut_at_its_limit_says_so(led):
    d = led.append("decision", body("decision"))
    aps = [led.append("approval", body("approval", subject=d.id, n=i), links=[d.id]) for i in range(5)]
    x = led.append("execution", body("execution"), links=[d.id])
    child = led.append("execution", body("execution"), links=[x.id])
    full = led.history(d.id)
    assert not full.truncated and [e.id for e in full.downstream] == [*(a.id for a in aps), x.id, child.id]
    h = led.history(d.id, limit=3)
    assert h.downstream_truncated and h.truncated and not h.upstream_truncated
    assert [e.id for e in h.downstream] == [a.id for a in aps[:3]]  # the nearest, lowest seq first
    h = led.history(d.id, limit=6)  # the first level whole, the second cut
    assert h.truncated and [e.id for e in h.downstream] == [*(a.id for a in aps), x.id]
    for limit in (7, None):  # exactly everything is not a cut
        h = led.history(d.id, limit=limit)
        assert not h.truncated and len(h.downstream) == 7
    up = led.history(child.id, limit=1)
    assert up.upstream_truncated and not up.downstream_truncated and [e.id for e in up.upstream] == [x.id]
    assert led.history(d.id, limit=0).downstream == () and led.history(d.id, limit=0).truncated
    assert not led.history(led.append("stop", body("stop"), workflow="w").id, limit=0).truncated
    for bad in (-1, "10", 2.5, True):
        with pytest.raises(InvalidQuery, match="limit"):
            led.history(d.id, limit=bad)


def test_the_default_history_of_more_than_10000_entries_is_flagged(tmp_path):
    url = f"sqlite:///{tmp_path / 'big.db'}"
    with Ledger.open(url, create=True, durability="normal") as led:
        d = led.append("decision", body("decision"))
        for i in range(0, 10_001, 2_000):
            led.append_many([NewEntry("approval", body("approval", subject=d.id, n=j), links=[d.id])
                             for j in range(i, min(i + 2_000, 10_001))])
        h = led.history(d.id)
        assert h.downstream_truncated and len(h.downstream) == 10_000
        assert [e.seq for e in h.downstream] == list(range(1, 10_001))
        h = led.history(d.id, limit=None)
        assert not h.truncated and len(h.downstream) == 10_001
    code, out, err = run_ledger_cli("show", d.id, "--history", "--ledger", url)
    assert code == 0 and '"downstream_truncated": true' in out
    assert err.startswith("warning: the history is incomplete: downstream cut at 10000 entries")
    assert err.count("\n") == 1
    code, out, err = run_ledger_cli("show", d.id, "--history", "--limit", "20000", "--ledger", url)
    assert code == 0 and '"downstream_truncated": false' in out and err == ""


# ------------------------------------------------------------------ 3. init leaves another application's database alone
def test_init_refuses_another_applications_database(ledger_url, tmp_path):
    with raw(ledger_url) as c:
        c.execute(text("CREATE TABLE customers (id integer)"))
        c.execute(text("INSERT INTO customers VALUES (1)"))
    path = tmp_path / "ledger.db"
    before = path.read_bytes() if ledger_url.startswith("sqlite") else None
    one_line_error(*run_ledger_cli("init", "--ledger", ledger_url), "`customers`", "not the ledger's",
                   "--allow-other-tables")
    if before is not None:
        assert path.read_bytes() == before and not (tmp_path / "ledger.db-wal").exists()
        c = sqlite3.connect(path)
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        c.close()
    with raw(ledger_url) as c:
        assert not any(t.startswith("ledger_") for t in c.dialect.get_table_names(c))
    with pytest.raises(SchemaError, match="not the ledger's"):
        Ledger.open(ledger_url, create=True, allow_other_tables=False)
    # asked for explicitly: the ledger is added beside them
    code, out, err = run_ledger_cli("init", "--allow-other-tables", "--ledger", ledger_url)
    assert code == 0, err
    with Ledger.open(ledger_url) as led:
        led.append("stop", body("stop"), workflow="w")
        assert led.verify().ok
        with led.reading() as c:
            assert c.exec_driver_sql("SELECT count(*) FROM customers").scalar_one() == 1
            if led.backend == "sqlite":
                assert c.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
    assert run_ledger_cli("init", "--ledger", ledger_url)[0] == 0  # an existing ledger (beside other tables) is fine


def test_init_of_a_ledger_with_caches_beside_it_is_harmless(led, ledger_url):
    with raw(ledger_url) as c:
        c.execute(text("CREATE TABLE rt_cache (id integer)"))
    code, out, err = run_ledger_cli("init", "--ledger", ledger_url)
    assert code == 0 and err == "" and out.startswith("ledger ")


# ------------------------------------------------------------------ 4. SQLite URL options
@pytest.mark.parametrize("query,named", [("mode=ro", "`mode`"), ("foo=1&durability=normal", "`foo`"),
                                         ("uri=true&mode=ro", "`mode`, `uri`"), ("timeout=5", "`timeout`")])
def test_unknown_sqlite_url_options_are_refused(tmp_path, query, named):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(LedgerUnavailable, match="unknown option") as ei:
            Ledger.open(f"{url}?{query}", create=True)
    assert named in str(ei.value) and "`durability`" in str(ei.value)
    assert not (tmp_path / "l.db").exists()  # refused before anything is made
    Ledger.open(url, create=True).close()
    for cmd in (["init"], ["verify"], ["log"]):
        code, out, err = run_ledger_cli(*cmd, "--ledger", f"{url}?{query}")
        one_line_error(code, out, err, named, "durability")
        assert "Warning" not in err
    with Ledger.open(f"{url}?durability=normal") as led:
        assert led.durability == "normal"


# ------------------------------------------------------------------ 5. a checkpoint of another log fails verification
def test_a_checkpoint_of_another_log_is_a_failed_verification(tmp_path):
    a_url, b_url = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    keyfile = tmp_path / "k.key"
    pub = write_key(KEY, str(keyfile))
    with Ledger.open(a_url, create=True) as a, Ledger.open(b_url, create=True) as b:
        a.append("stop", body("stop"), workflow="w")
        b.append("stop", body("stop"), workflow="w")
        cp_b, _ = b.checkpoint(KEY, path=str(tmp_path / "b.note"))
        r = a.verify(checkpoint=cp_b.note, key=KEY.verifier)
        assert not r.ok and r.first_bad == 0 and b.origin in r.problem and a.origin in r.problem
        assert r.against == cp_b.size
    code, out, err = run_ledger_cli("verify", "--ledger", a_url, "--checkpoint", str(tmp_path / "b.note"), "--key",
                                    str(pub))
    assert code == 1 and out.startswith("FAILED at seq 0: the checkpoint is for the log") and err == ""
    # the same checkpoint and key against its own ledger: ok
    code, out, _ = run_ledger_cli("verify", "--ledger", b_url, "--checkpoint", str(tmp_path / "b.note"), "--key",
                                  str(pub))
    assert code == 0
    # this ledger's identity edited under its checkpoint: a failure too, with or without the checkpoint
    with raw(b_url) as c:
        c.execute(text("UPDATE ledger_meta SET value = 'stopline.dev/ledger/other' WHERE name = 'origin'"))
    for extra in ([], ["--checkpoint", str(tmp_path / "b.note")]):
        code, out, _ = run_ledger_cli("verify", "--ledger", b_url, "--key", str(pub), *extra)
        assert code == 1 and out.startswith("FAILED at seq "), out
    # a checkpoint the key does not verify cannot be used at all: exit 2
    other = generate_key("test-log")
    other_pub = write_key(other, str(tmp_path / "other.key"))
    one_line_error(*run_ledger_cli("verify", "--ledger", a_url, "--checkpoint", str(tmp_path / "b.note"),
                         "--key", str(other_pub)))
