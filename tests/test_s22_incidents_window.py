"""Session 22 audit of the incident features, on SQLite and PostgreSQL: a bulk rollback's
``since``/``until`` window is on when each execution *ran* (``original.time``, its
``executed_at``), as the select reads it, not on when it was recorded (a late report of an
action that ran inside the window was left out, and an early one recorded inside it but
run after it was taken in)."""

from __future__ import annotations

import json

from click.testing import CliRunner
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import RECEIPT, WF, at, policy_path, rt, send  # noqa: F401  (fixtures)

from policy_engine.cli import main

SEND = 'original.type == "send"'


def _ran_at(rt, ran: float, recorded: float, i: int) -> str:  # noqa: F811
    g = rt.gate(send(50.0, id=f"s{i}"), now=at(min(ran, recorded) - 1))
    return rt.executed(g.decision_id, receipt=RECEIPT, executed_at=at(ran), now=at(recorded)).execution_id


def _window_select(since: float, until: float) -> str:
    return (
        f'{SEND} && original.time >= timestamp("{at(since).isoformat()}") '
        f'&& original.time < timestamp("{at(until).isoformat()}")'
    )


def test_the_window_takes_what_ran_in_it_whenever_it_was_recorded(rt):  # noqa: F811
    x = {
        "late": _ran_at(rt, 5, 40, 0),  # ran inside, reported 35 s later (after the window): in
        "early": _ran_at(rt, 35, 28, 1),  # recorded inside, ran after it (the agent's clock 7 s ahead): out
        "at_since": _ran_at(rt, 0, 0, 2),  # exactly `since`: in
        "at_until": _ran_at(rt, 30, 30, 3),  # exactly `until`: out
        "before": _ran_at(rt, -120, 10, 4),  # ran long before, recorded inside: out
        "inside": _ran_at(rt, 12, 12, 5),
    }
    b = rt.request_bulk_rollback(
        SEND, "customer_request", "rita", "r", since=at(0), until=at(30), now=at(45), dry_run=True
    )
    want = [x["late"], x["at_since"], x["inside"]]
    assert sorted(b.originals) == sorted(want) and b.selected == 3 and b.errors == ()
    # the same executions as the select's own reading of the time (`original.time`)
    by_select = rt.request_bulk_rollback(
        _window_select(0, 30), "customer_request", "rita", "r", now=at(45), dry_run=True
    )
    assert sorted(by_select.originals) == sorted(want)
    # recorded, the batch names the same originals (a dry run and the run agree)
    real = rt.request_bulk_rollback(SEND, "customer_request", "rita", "r", since=at(0), until=at(30), now=at(45))
    assert real.batch_hash == b.batch_hash and sorted(real.originals) == sorted(want)


def test_a_window_reads_an_execution_recorded_just_before_it_that_ran_inside(rt):  # noqa: F811
    """An agent whose clock is ahead reports `executed_at` up to the allowed skew after the
    time the runtime records: one recorded before `since` that ran at or after it is in."""
    ahead = _ran_at(rt, 10, -40, 0)  # recorded 40 s before `since`, ran 10 s after it
    _ran_at(rt, -5, -5, 1)  # ran and recorded before `since`: out
    b = rt.request_bulk_rollback(SEND, "customer_request", "rita", "r", since=at(0), now=at(45), dry_run=True)
    assert b.originals == (ahead,)


def test_an_execution_whose_run_time_is_unreadable_fails_the_windowed_batch_closed(rt):  # noqa: F811
    """Another recorder's execution with an `executed_at` that is not a time: nothing tells
    whether it ran in the window, so nothing is planned and it is listed with its error."""
    ok = _ran_at(rt, 5, 5, 0)
    odd = rt.ledger.append(
        "execution",
        {"type": "send", "receipt": RECEIPT, "authorized": True, "executed_at": "yesterday"},
        workflow=WF,
        time=at(6),
    ).id
    b = rt.request_bulk_rollback(SEND, "customer_request", "rita", "r", since=at(0), until=at(30), now=at(45))
    assert b.batch_id is None and b.rollbacks == ()
    assert [e["execution"] for e in b.errors] == [odd] and "executed_at" in b.errors[0]["error"]
    # without a window the time is not needed: it is planned with the rest
    assert set(rt.request_bulk_rollback(SEND, "customer_request", "rita", "r", now=at(45), dry_run=True).originals) == {
        ok,
        odd,
    }


def test_the_command_windows_by_when_it_ran(rt, ledger_url, policy_path):  # noqa: F811
    late = _ran_at(rt, 5, 40, 0)
    _ran_at(rt, 35, 28, 1)
    res = CliRunner().invoke(
        main,
        [
            "rollback",
            "--select",
            SEND,
            "--scenario",
            "customer_request",
            "--requested-by",
            "rita",
            "--reason",
            "r",
            "--since",
            "2026-11-26T12:00:00Z",
            "--until",
            "2026-11-26T13:00:30+01:00",
            "--dry-run",
            "--format",
            "json",
            "-p",
            str(policy_path),
            "--ledger",
            ledger_url,
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["originals"] == [late]


def test_listed_executions_outside_the_window_are_left_out_not_called_unrecorded(rt):  # noqa: F811
    """`executions=` (a policy reversal's list, the server's `executions`) with a window:
    one that ran outside it is not selected. Before, one recorded outside it was refused as
    `not recorded executions` (the window narrowed the read of the ids)."""
    old = _ran_at(rt, -3600, -3600, 0)
    new = _ran_at(rt, 5, 5, 1)
    b = rt.request_bulk_rollback(
        None, "customer_request", "rita", "r", executions=[old, new], since=at(0), now=at(45), dry_run=True
    )
    assert b.originals == (new,) and b.selected == 1
