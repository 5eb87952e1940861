"""Shared fixtures of the ledger tests: one parametrised backend fixture (SQLite in
tmp_path; PostgreSQL in a fresh schema per test on STOPLINE_TEST_POSTGRES_URL, skipped
with a reason when unreachable unless STOPLINE_REQUIRE_POSTGRES=1), the test-only
ways around the guard triggers, and the writer process of the concurrency tests
(``ledger_writer``: importable by name, so multiprocessing's forkserver can preload it)."""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from urllib.parse import quote

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from policy_engine.ledger import schema

PG_URL = os.environ.get("STOPLINE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
_pg_state: dict = {}


def _pg_reason() -> str | None:
    if "reason" not in _pg_state:
        try:
            import psycopg

            u = make_url(PG_URL)
            # (a generous connect timeout: a loaded server may be slow to start a backend, and this
            # answer is kept for the whole worker: under STOPLINE_REQUIRE_POSTGRES=1 it fails them all)
            with psycopg.connect(host=u.host, port=u.port or 5432, user=u.username, password=u.password,
                                 dbname=u.database, connect_timeout=30):
                pass
            _pg_state["reason"] = None
        except Exception as e:  # noqa: BLE001
            _pg_state["reason"] = f"PostgreSQL unreachable at {PG_URL} ({type(e).__name__}: {str(e).strip()[:120]}); " \
                                  "set STOPLINE_TEST_POSTGRES_URL"
    return _pg_state["reason"]


def _pg_admin(sql: str) -> None:
    import psycopg

    u = make_url(PG_URL)
    with psycopg.connect(host=u.host, port=u.port or 5432, user=u.username, password=u.password,
                         dbname=u.database, autocommit=True) as c:
        c.execute(sql)


def _postgres_url() -> str:
    reason = _pg_reason()
    if reason:
        if os.environ.get("STOPLINE_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"STOPLINE_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    name = "t_" + uuid.uuid4().hex[:16]
    _pg_admin(f"CREATE SCHEMA {name}")
    sep = "&" if "?" in PG_URL else "?"
    return PG_URL + sep + "options=" + quote(f"-csearch_path={name}"), name


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path):
    """A URL with no ledger yet, on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    url, name = _postgres_url()
    yield url
    _pg_admin(f"DROP SCHEMA {name} CASCADE")


@contextmanager
def raw(url: str):
    """A plain SQLAlchemy connection in one transaction (for tampering)."""
    eng = create_engine(url)
    try:
        with eng.begin() as c:
            yield c
    finally:
        eng.dispose()


@contextmanager
def guards_off(url: str):
    """Test-only: tamper with the tables by removing the triggers, then put them back."""
    with raw(url) as c:
        if c.dialect.name == "sqlite":
            for t in schema.GUARDED:
                for op in ("update", "delete"):
                    c.execute(text(f"DROP TRIGGER {t}_no_{op}"))
        else:
            for t in schema.GUARDED:
                c.execute(text(f"ALTER TABLE {t} DISABLE TRIGGER USER"))
        yield c
        if c.dialect.name == "sqlite":
            for stmt in schema.guard_ddl("sqlite"):
                c.execute(text(stmt))
        else:
            for t in schema.GUARDED:  # (as the ledger makes them: firing in every session)
                for suffix in ("no_change", "no_truncate"):
                    c.execute(text(f"ALTER TABLE {t} ENABLE ALWAYS TRIGGER {t}_{suffix}"))


def ledger_writer(url: str, tag: str, count: int, batch: int, conn) -> None:
    """A writer process of tests/test_ledger_concurrency.py: opens the ledger, writes
    ``ready``, then appends ``count`` ``stop`` entries of workflow ``tag`` (``batch`` per
    ``append_many``; 1: one ``append`` each) and, after each append returned, writes one
    line ``seq id`` per entry to ``conn`` (a multiprocessing pipe's writing end) in one
    ``write``: what the parent reads is exactly what was acknowledged."""
    from policy_engine.ledger import Ledger, NewEntry

    fd = conn.fileno()
    led = Ledger.open(url)
    os.write(fd, b"ready\n")
    for i in range(0, count, batch):
        if batch == 1:
            done = [led.append("stop", {"trigger": "t", "writer": tag, "i": i}, workflow=tag)]
        else:
            done = led.append_many(NewEntry("stop", {"trigger": "t", "writer": tag, "i": j}, workflow=tag)
                                   for j in range(i, min(i + batch, count)))
        os.write(fd, "".join(f"{e.seq} {e.id}\n" for e in done).encode())
    led.close()
    conn.close()


def body(kind: str, **extra) -> dict:
    """A minimal valid body of each kind."""
    base = {
        "decision": {"action": {"type": "refund", "amount": 12.5}, "decision": {"effect": "allow"}, "policy_hash": "p"},
        "approval": {"subject": "s", "digest": "d", "principal": "sam", "verdict": "approve"},
        "execution": {"receipt": {"ok": True}, "authorized": True},
        "stop": {"trigger": "t"},
        "resume": {"evidence_digest": "e", "criteria": []},
        "rollback": {"plan_hash": "h", "scenario": "customer_request", "requested_by": "rita", "reason": "r"},
        "step": {"record": "x", "status": "started"},
    }[kind]
    return {**base, **extra}


def run_ledger_cli(*args):
    """`stopline ledger ARGS` in-process: (exit code, stdout, stderr)."""
    from click.testing import CliRunner

    from policy_engine.cli import main

    r = CliRunner().invoke(main, ["ledger", *args], catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


def one_line_error(code, out, err, *needles):
    """The CLI failed as an operator should see it: exit 2, one `error:` line naming each of
    `needles`, no traceback and no "internal error"."""
    assert code == 2, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert "internal error" not in err, err
    for n in needles:
        assert n in err, err
