"""Issue 18 reads in bulk: planning an incident, replaying decisions and computing the report
issue a number of SQL statements that does not grow with the number of records (pages of
thousands, one links query per cascade level), never one per record. Counted with
SQLAlchemy's cursor events on SQLite; no time is measured."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import policy_engine  # noqa: E402
from benchmarks import bench_incidents as B  # noqa: E402
from policy_engine import Runtime  # noqa: E402
from policy_engine.ledger import Ledger  # noqa: E402


@contextmanager
def statements():
    seen: list[str] = []

    def count(conn, cursor, statement, *args):
        seen.append(statement)

    event.listen(Engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", count)


@pytest.fixture
def engine(tmp_path):
    (tmp_path / "ops.policy").write_text(B.POLICY)
    (tmp_path / "cand.policy").write_text(B.CANDIDATE)
    return policy_engine.load(str(tmp_path / "ops.policy"))


def _plan_statements(tmp_path, engine, roots: int, dry_run: bool) -> tuple[int, int]:
    led = Ledger.open(f"sqlite:///{tmp_path / f'inc-{roots}-{dry_run}.db'}", create=True)
    B.fill_executions(led, roots, roots)  # chains of depth 5 and as many lone executions
    try:
        with Runtime(engine, led) as rt, statements() as seen:
            b = rt.request_bulk_rollback('original.type == "a0"', "incident", "ops", "r", dry_run=dry_run)
        assert b.records == roots * (B.DEPTH + 1) and (dry_run or len(b.rollbacks) == roots)
        return len(seen), b.records
    finally:
        led.close()


@pytest.mark.parametrize("dry_run", [True, False])
def test_an_incident_plan_and_its_recording_take_as_many_statements_for_600_records_as_for_60(
        tmp_path, engine, dry_run):
    small, n_small = _plan_statements(tmp_path, engine, 10, dry_run)
    large, n_large = _plan_statements(tmp_path, engine, 100, dry_run)
    assert n_large == 10 * n_small
    if dry_run:  # reading and planning: nothing per record
        assert large == small and small <= 6 + B.DEPTH * 2, (small, large)
    else:  # recording: at most the ledger's insert and the projections' rows per rollback (today
        # 2 statements per rollback, 12 per 100 records): nothing per record of a cascade
        assert large - small <= 2 * 90, (small, large)


def test_replay_and_report_read_in_pages(tmp_path, engine):
    from policy_engine.replay import replay
    from policy_engine.report.compute import compute_report

    counts = {}
    for n in (300, 3000):
        url = f"sqlite:///{tmp_path / f'dec-{n}.db'}"
        led = Ledger.open(url, create=True)
        B.fill_decisions(led, engine, n)
        B.fill_executions(led, n // 60, n // 2)
        with statements() as seen:
            r = replay(str(tmp_path / "cand.policy"), led, workers=1)
            assert r.replayed == n
            mid = len(seen)
            rep = compute_report(led)
            assert rep["totals"]["executions"] == n // 60 * (B.DEPTH + 1) + n // 2
        counts[n] = (mid, len(seen) - mid)
        led.close()
    # ten times the decisions: the same statements, but for the changed verdicts' executions
    # (one query per 500 changed decisions)
    assert counts[3000][0] <= counts[300][0] + 3000 // 500 + 1, counts
    assert counts[3000][1] == counts[300][1], counts
