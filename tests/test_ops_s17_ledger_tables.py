"""A ledger made before a table of the current schema existed (``ledger_ended_sessions``, the
runtime's projections) gets it from ``stopline ledger init`` and from a migration, its data
untouched, idempotently, on SQLite and PostgreSQL. ``stopline serve`` then starts under a
PostgreSQL role that may not create tables (no DDL is attempted when the tables exist), and
when a table is missing and cannot be made it stops with one line naming the table and
``stopline ledger init`` (exit 2), never a traceback. The restricted role is real: made in
the test (``CREATE ROLE ... LOGIN``, only SELECT/INSERT/UPDATE/DELETE on the tables and
USAGE on the schema and its sequences), in a fresh schema, both dropped at the end."""

from __future__ import annotations

import subprocess
import sys
import uuid

import httpx
import pytest
from ledger_fixtures import _pg_admin, _postgres_url, ledger_url, raw, run_ledger_cli  # noqa: F401
from sqlalchemy import text
from sqlalchemy.engine import make_url

from policy_engine.ledger import Ledger, schema
from policy_engine.runtime import projections as P

pytest.importorskip("fastapi")
from server_support import (  # noqa: E402
    ROOT,
    bearer,
    free_port,
    serve,
    server_policy_dir,
    ui_page,
    ui_sign_in,
    ui_sign_out,
    write_identities,
)

EXTRA = ("ledger_ended_sessions", *(t.name for t in P.TABLES))  # kept beside the log, no history


def _tables(url: str) -> set[str]:
    with raw(url) as c:
        return set(schema.inspect_tables(c))


def _log(url: str) -> list[tuple]:
    with Ledger.open(url) as led:
        return [(e.seq, e.id, e.hash) for e in led.entries(limit=10_000)]


def _projections(url: str) -> dict:
    with Ledger.open(url) as led, led.reading() as c:
        return P.snapshot(c)


def _record_some(url: str, tmp_path) -> None:
    """A few entries of every projection's kinds: a stop, a pending decision, an execution,
    a rollback, a claim with no execution (the runtime tests' policy)."""
    from server_support import SERVER_POLICY

    from policy_engine import Runtime

    (tmp_path / "rt.policy").write_text(SERVER_POLICY, encoding="utf-8")
    with Runtime.open(str(tmp_path / "rt.policy"), ledger=url) as rt:
        send = {"workflow": "replies", "type": "send", "promise": False}
        assert rt.gate({**send, "amount": 500.0, "id": "big"}).decision.effect == "require_approval"
        g = rt.gate({**send, "amount": 50.0, "id": "small"})
        x = rt.executed(g.decision_id, receipt={"message": "hi", "ticket": "T-1"})
        rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita", reason="asked")
        claimed = rt.gate({**send, "amount": 50.0, "id": "claimed"})
        assert rt.claim_execution(claimed.decision_id, principal="worker").recorded
        assert rt.gate({**send, "amount": 50.0, "promise": True, "id": "bad"}).decision.effect == "stop"


def test_init_adds_every_missing_table_to_an_existing_ledger_and_nothing_else(tmp_path, ledger_url):  # noqa: F811
    code, out, err = run_ledger_cli("init", "--ledger", ledger_url)
    assert code == 0, err
    _record_some(ledger_url, tmp_path)
    assert set(EXTRA) <= _tables(ledger_url)
    log, live = _log(ledger_url), _projections(ledger_url)
    assert log and all(live[t.name] for t in P.TABLES), live
    with raw(ledger_url) as c:  # a ledger made before these tables
        for name in ("ledger_ended_sessions", "rt_rollbacks", "rt_pending", "rt_claims"):
            c.execute(text(f"DROP TABLE {name}"))
    assert not {"ledger_ended_sessions", "rt_rollbacks", "rt_pending", "rt_claims"} & _tables(ledger_url)

    code, out, err = run_ledger_cli("init", "--ledger", ledger_url)
    assert code == 0 and err == "", (out, err)
    assert all(f"`{t}`" in out for t in ("ledger_ended_sessions", "rt_rollbacks", "rt_pending", "rt_claims")), out
    assert set(EXTRA) <= _tables(ledger_url)
    assert _log(ledger_url) == log  # no entry written, none changed
    assert _projections(ledger_url) == live  # the projections made again from the log
    with Ledger.open(ledger_url) as led:
        assert led.verify().ok and led.guard_problems() == []
        assert led.missing_tables() == [] and led.missing_tables(P.TABLES) == []
    # idempotent: nothing to add, nothing said, nothing changed
    code, out2, err = run_ledger_cli("init", "--ledger", ledger_url)
    assert code == 0 and err == "" and out2.count("\n") == 1 and "added" not in out2, (out2, err)
    assert _log(ledger_url) == log and _projections(ledger_url) == live


def test_a_migrated_ledger_gets_the_tables_its_version_lacked(ledger_url):  # noqa: F811
    """A version 2 ledger (before ``ledger_ended_sessions``): the migration to 3 adds it."""
    with Ledger.open(ledger_url, create=True) as led:
        led.append("stop", {"trigger": "t"}, workflow="w")
    log = _log(ledger_url)
    with raw(ledger_url) as c:
        c.execute(text("DROP TABLE ledger_ended_sessions"))
        c.execute(text("UPDATE ledger_meta SET value = '2' WHERE name = 'schema_version'"))
    with Ledger.open(ledger_url) as led:  # migrated at open
        assert "ledger_ended_sessions" in _tables(ledger_url)
        with led.reading() as c:
            assert c.execute(text("SELECT value FROM ledger_meta WHERE name = 'schema_version'")).scalar_one() \
                == str(schema.SCHEMA_VERSION)
        assert led.verify().ok
    assert _log(ledger_url) == log


def test_a_missing_history_table_is_damage_not_remade_empty(ledger_url):  # noqa: F811
    with Ledger.open(ledger_url, create=True) as led:
        led.append("stop", {"trigger": "t"}, workflow="w")
    with raw(ledger_url) as c:
        c.execute(text("DROP TABLE ledger_nodes"))
    code, out, err = run_ledger_cli("init", "--ledger", ledger_url)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert "`ledger_nodes`" in err and "damaged" in err
    assert "ledger_nodes" not in _tables(ledger_url)


# ---------------------------------------------------------------------------------- a role without CREATE
@pytest.fixture
def restricted(tmp_path):
    """(owner URL, restricted URL, grant()): a fresh schema holding a ledger made by `stopline
    ledger init` as its owner, and a login role with no CREATE on it; ``grant()`` gives that
    role SELECT, INSERT, UPDATE and DELETE on every table there is now and USAGE on the
    sequences."""
    owner, name = _postgres_url()
    role = "stopline_s17_ro_" + uuid.uuid4().hex[:8]
    _pg_admin(f"CREATE ROLE {role} LOGIN")

    def grant() -> None:
        _pg_admin(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {name} TO {role}; "
                  f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {name} TO {role}")

    try:
        _pg_admin(f"GRANT USAGE ON SCHEMA {name} TO {role}")
        code, out, err = run_ledger_cli("init", "--ledger", owner)
        assert code == 0, err
        grant()
        u = make_url(owner).set(username=role)
        yield owner, u.render_as_string(hide_password=False), grant
    finally:
        _pg_admin(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        _pg_admin(f"DROP OWNED BY {role}")
        _pg_admin(f"DROP ROLE {role}")


def _cannot_create(url: str) -> str:
    """The error a CREATE TABLE by this URL's role gets (the role is restricted indeed)."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import ProgrammingError

    eng = create_engine(url)
    try:
        with eng.begin() as c:
            c.execute(text("CREATE TABLE s17_probe (x integer)"))
    except ProgrammingError as e:
        return str(e.orig)
    finally:
        eng.dispose()
    raise AssertionError("the restricted role could create a table")


def test_serve_starts_under_a_role_that_may_not_create_tables(tmp_path, restricted):
    owner, ro, _grant = restricted
    assert "permission denied for schema" in _cannot_create(ro)
    policies = server_policy_dir(tmp_path)
    ids = str(write_identities(tmp_path / "ids.yaml"))
    with serve(str(policies), "--ledger", ro, "--identities", ids, "--reload-interval", "0") as base:
        g = httpx.post(base + "/v1/gate", json={"action": {"workflow": "replies", "type": "send", "amount": 500.0,
                                                           "promise": False}}, headers=bearer("ops"), timeout=10)
        assert g.status_code == 200, g.text  # recorded: a decision awaiting approval (rt_pending)
        assert g.json()["decision"]["effect"] == "require_approval" and g.json()["decision_id"]
        cookie = ui_sign_in(base, "casey")
        assert ui_sign_out(base, cookie).status_code == 303  # a row of ledger_ended_sessions
        assert ui_page(base, cookie).status_code == 303
        assert "stopline_queue_depth" in httpx.get(base + "/metrics", timeout=10).text
    with Ledger.open(owner) as led:
        assert led.size >= 1 and led.verify().ok
        assert led.query_one("SELECT count(*) FROM ledger_ended_sessions") == (1,)


def _serve_fails(policies, ledger: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "policy_engine.cli", "serve", str(policies), "--ledger", ledger,
                           "--port", str(free_port()), "--reload-interval", "0"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


@pytest.mark.parametrize("dropped", [("ledger_ended_sessions",), ("rt_rollbacks", "rt_pending")])
def test_serve_names_a_missing_table_it_may_not_create_in_one_line(tmp_path, restricted, dropped):
    owner, ro, grant = restricted
    with raw(owner) as c:  # a ledger made before the table (as its owner would find it)
        for name in dropped:
            c.execute(text(f"DROP TABLE {name}"))
    policies = server_policy_dir(tmp_path)
    r = _serve_fails(policies, ro)
    assert r.returncode == 2, (r.returncode, r.stderr)
    err = r.stderr
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert all(f"`{name}`" in err for name in dropped), err
    assert "`stopline ledger init`" in err and "may create tables" in err, err
    assert not set(dropped) & _tables(owner)  # nothing made, nothing half-made
    # the operator does as told: init as the owner, grant, and the server starts
    code, out, e = run_ledger_cli("init", "--ledger", owner)
    assert code == 0 and all(f"`{name}`" in out for name in dropped), (out, e)
    grant()
    with serve(str(policies), "--ledger", ro, "--reload-interval", "0") as base:
        assert httpx.get(base + "/healthz", timeout=10).status_code == 200
