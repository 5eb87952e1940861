"""Session 27 (r3ledger): the PostgreSQL guard triggers fire in every session. A plain
``ENABLE`` (``tgenabled`` ``O``) is skipped by a session with ``session_replication_role =
replica`` (a superuser's one-line setting that leaves no trace in the catalog), so such a
session could rewrite history while ``verify`` still reported the guards in place. New ledgers
make them ``ENABLE ALWAYS``; an older ledger still verifies, and ``stopline ledger init``
(``Ledger.restore_guards``) makes its guards ALWAYS in place, saying so on stdout."""

from __future__ import annotations

import pytest
from ledger_fixtures import body, ledger_url, raw, run_ledger_cli  # noqa: F401  (fixture)
from sqlalchemy import text

from policy_engine.ledger import Ledger, schema

STATEMENTS = ("UPDATE ledger_entries SET body = '{\"trigger\":\"x\"}' WHERE seq = 0",
              "DELETE FROM ledger_entries WHERE seq = 1",
              "UPDATE ledger_nodes SET hash = 'x'",
              "DELETE FROM ledger_links",
              "TRUNCATE ledger_entries CASCADE")


@pytest.fixture
def led(ledger_url):
    with Ledger.open(ledger_url, create=True) as led:
        if led.backend != "postgresql":
            pytest.skip("PostgreSQL only (SQLite triggers cannot be disabled or skipped)")
        a = led.append("stop", body("stop"), workflow="w")
        led.append("stop", body("stop"), workflow="w", links=[a.id])  # (a link row, a Merkle node)
        yield led


def _refused_in_a_replica_session(url: str, stmt: str) -> bool:
    try:
        with raw(url) as c:
            c.execute(text("SET LOCAL session_replication_role = replica"))
            c.execute(text(stmt))
    except Exception as e:  # noqa: BLE001  (the driver's error for the trigger's refusal)
        assert "append-only" in str(e), e
        return True
    return False


def _enabled(url: str) -> dict[str, str]:
    with raw(url) as c:
        return {str(n): str(e) for n, e in c.execute(text(
            "SELECT tgname, tgenabled FROM pg_trigger WHERE NOT tgisinternal AND tgname LIKE 'ledger\\_%'"))}


def test_a_replica_session_cannot_rewrite_history(led, ledger_url):
    for stmt in STATEMENTS:
        assert _refused_in_a_replica_session(ledger_url, stmt), stmt
    assert set(_enabled(ledger_url).values()) == {"A"} and len(_enabled(ledger_url)) == 6
    r = led.verify()
    assert r.ok and r.size == 2, r.render()
    assert led.guard_problems() == [] and led.weak_guards() == []


def test_an_older_ledger_verifies_and_init_makes_its_guards_always(led, ledger_url):
    with raw(ledger_url) as c:  # the guards as an older ledger has them: a plain ENABLE
        for t in schema.GUARDED:
            for suffix in ("no_change", "no_truncate"):
                c.execute(text(f"ALTER TABLE {t} ENABLE TRIGGER {t}_{suffix}"))
    assert set(_enabled(ledger_url).values()) == {"O"}
    assert led.verify().ok and led.guard_problems() == []  # not a failure of every existing ledger
    assert len(led.weak_guards()) == 6
    code, out, err = run_ledger_cli("init", "--ledger", ledger_url)
    assert code == 0, (out, err)
    assert "ENABLE ALWAYS" in out and "re-created" not in err, (out, err)
    assert set(_enabled(ledger_url).values()) == {"A"} and led.weak_guards() == []
    for stmt in STATEMENTS:
        assert _refused_in_a_replica_session(ledger_url, stmt), stmt
    assert led.verify().ok
    code, out, err = run_ledger_cli("init", "--ledger", ledger_url)  # run again: nothing to do, nothing said
    assert code == 0 and "ENABLE ALWAYS" not in out and not err, (out, err)


def test_restored_guards_are_always_too(led, ledger_url):
    with raw(ledger_url) as c:
        c.execute(text("ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_no_change"))
    assert led.restore_guards() == ["`ledger_entries_no_change` is disabled"]
    assert set(_enabled(ledger_url).values()) == {"A"}
    assert _refused_in_a_replica_session(ledger_url, STATEMENTS[0])
