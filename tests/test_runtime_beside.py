"""An entry appended beside the runtime (``stopline ledger append``, another program's
``Ledger.append``) counts as one the runtime appended: the state comes from the record.

Before, the runtime's projections (its caches of the record) saw only the runtime's own
writes: a ``stop`` appended with ``stopline ledger append`` left the workflow ``running`` in
``workflow_status`` and the gate kept allowing its actions, until a rebuild."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)

from policy_engine import Runtime
from policy_engine.ledger import Ledger, NewEntry
from policy_engine.runtime import projections as P

POLICY = """\
roles [ops]

workflow "w" {
  version "1"
  owners {
    business "B"
    technical "T"
  }
  default deny

  action ping {
    system "s"
    description "A harmless ping"
    irreversible
    # stopline: acknowledge W202 -- a test fixture
    allow always when `true`
  }
}
"""

STOP = {"trigger": "operator_hold", "stopped_at": "2026-11-28T00:00:00Z", "severity": "critical", "owner": "ops",
        "notify": [], "resume_criteria": []}
PING = {"type": "ping", "workflow": "w", "id": "p"}


@pytest.fixture
def policy(tmp_path):
    p = tmp_path / "w.policy"
    p.write_text(POLICY)
    return str(p)


def _rebuilt(url: str, policy: str) -> dict:
    """The projections as a rebuild from the log makes them (the reference)."""
    with Runtime.open(policy, ledger=url) as rt:
        rt.rebuild()
        return rt.projection_snapshot()


def test_a_stop_appended_beside_the_runtime_stops_its_gate(ledger_url, policy):  # noqa: F811
    with Runtime.open(policy, ledger=ledger_url) as rt:
        assert rt.gate(PING).decision.effect == "allow"
        with Ledger.open(ledger_url) as other:  # another program (its own connection)
            other.append("stop", STOP, workflow="w")
        assert rt.workflow_status("w")["status"] == "stopped"  # before: running
        g = rt.gate({**PING, "id": "p2"})
        assert g.decision.effect != "allow" and g.workflow_status == "stopped"
        assert rt.projection_snapshot() == _rebuilt(ledger_url, policy)


def test_a_stop_appended_with_the_cli_is_seen_by_a_running_gate_with_a_cached_state(ledger_url, policy,  # noqa: F811
                                                                                      tmp_path):
    with Runtime.open(policy, ledger=ledger_url) as rt:
        for i in range(3):  # the gate keeps what it saw of `w` (no read while the fence holds)
            assert rt.gate({**PING, "id": f"p{i}"}).decision.effect == "allow"
        body = tmp_path / "stop.json"
        body.write_text(json.dumps(STOP))
        r = subprocess.run([sys.executable, "-m", "policy_engine.cli", "ledger", "append", "stop", str(body),
                            "--workflow", "w", "--ledger", ledger_url], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert rt.gate({**PING, "id": "p9"}).decision.effect != "allow"
        assert rt.workflow_status("w")["status"] == "stopped"


def test_every_runtime_write_folds_in_first_and_the_projections_equal_a_rebuild(ledger_url, policy):  # noqa: F811
    with Runtime.open(policy, ledger=ledger_url) as rt:
        g = rt.gate(PING)
        with Ledger.open(ledger_url) as other:
            other.append("stop", STOP, workflow="w")
            other.append("stop", {**STOP, "trigger": "second"}, workflow="v")
        # a write (an execution) folds the stops in under the append lock before its own entry
        rt.executed(g.decision_id, receipt={})
        with rt.ledger.reading() as c:
            assert not P.lagging(c)
        assert rt.projection_snapshot() == _rebuilt(ledger_url, policy)
        assert rt.workflow_status("v")["status"] == "stopped"


def test_an_entry_listed_out_of_order_is_folded_in_by_a_rebuild(ledger_url, policy):  # noqa: F811
    """An entry appended beside the runtime, then one the runtime appended before folding it
    in (the gate's append races the other program's): the folds are order-sensitive, so the
    list is not the log's tail and the projections are rebuilt."""
    with Runtime.open(policy, ledger=ledger_url) as rt:
        with Ledger.open(ledger_url) as other:
            other.append("stop", STOP, workflow="w")
        resume = {"evidence_digest": "sha256:" + "0" * 64, "criteria": [], "allowed": True,
                  "resumed_at": "2026-11-28T00:00:01Z"}
        stop_id = rt.ledger.entries(kind="stop")[0].id
        rt.ledger.append_many([NewEntry("resume", resume, workflow="w", links=[stop_id])],
                              projected=True)  # (appended as the runtime would, the stop not folded in: a race)
        with rt.ledger.reading() as c:
            assert P.lagging(c)
        assert rt.workflow_status("w")["status"] == "running"  # the resume is the last word
        assert rt.projection_snapshot() == _rebuilt(ledger_url, policy)


def test_a_ledger_no_runtime_used_lists_nothing(ledger_url):  # noqa: F811
    with Ledger.open(ledger_url, create=True) as led:
        for _ in range(3):
            led.append("stop", STOP, workflow="w")
        with led.reading() as c:
            assert not P.lagging(c)


def test_an_older_ledger_is_given_the_list_and_rebuilt_once(ledger_url, policy):  # noqa: F811
    """A ledger made before the list existed: the runtime makes it, rebuilds its projections
    once (what was appended beside it before was not listed), and from then on lists."""
    with Runtime.open(policy, ledger=ledger_url) as rt:
        rt.gate(PING)
    with Ledger.open(ledger_url) as led:
        led.transact(lambda c: [c.exec_driver_sql("DROP TABLE ledger_unprojected"),
                                c.exec_driver_sql("DELETE FROM ledger_meta WHERE name = 'projections'"), []][2])
    with Ledger.open(ledger_url) as old:  # an older Stopline's append: nothing listed
        assert old.refresh_marks() is False
        old.append("stop", STOP, workflow="w")
    with Runtime.open(policy, ledger=ledger_url) as rt:
        assert rt.workflow_status("w")["status"] == "stopped"
        assert rt.ledger.refresh_marks() is True
        with Ledger.open(ledger_url) as other:
            other.append("stop", {**STOP, "trigger": "again"}, workflow="v")
        assert rt.workflow_status("v")["status"] == "stopped"


def test_an_execution_dated_in_the_future_is_refused_and_nothing_recorded(ledger_url, policy):  # noqa: F811
    """An `executed_at` after now (beyond the clock skew a deployment has) started the reversal
    window later than the action ran, and the report then printed negative times."""
    from datetime import UTC, datetime, timedelta

    from policy_engine.runtime import RuntimeUsageError

    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    with Runtime.open(policy, ledger=ledger_url) as rt:
        g = rt.gate(PING, now=now)
        n = rt.ledger.size
        with pytest.raises(RuntimeUsageError, match="cannot be in the future; nothing was recorded"):
            rt.executed(g.decision_id, receipt={}, executed_at=now + timedelta(minutes=5), now=now)
        assert rt.ledger.size == n
        x = rt.executed(g.decision_id, receipt={}, executed_at=now + timedelta(seconds=30), now=now)  # (skew)
        assert x.execution_id and rt.ledger.size == n + 1


def test_a_nul_in_a_recorded_action_does_not_make_a_replay_impossible(ledger_url, policy):  # noqa: F811
    """On PostgreSQL a page of bodies holding `\\u0000` anywhere could not be picked by the
    database (its `json` type: SQLSTATE 22P05): every replay over it failed. That page is read
    whole now (the report's fix, moved into `scan`, which replay uses too)."""
    from policy_engine import load
    from policy_engine.replay import replay

    with Runtime.open(policy, ledger=ledger_url) as rt:
        rt.gate({**PING, "note": "a\x00b"})
        rt.gate({**PING, "id": "p2"})
    r = replay(load(policy), ledger_url)
    assert r.replayed == 2 and r.unchanged == 2


def test_a_rollback_cancelled_beside_the_runtime_leaves_its_queue_even_from_a_kept_listing(ledger_url):  # noqa: F811
    """The queue keeps a listing while the log's size is unchanged and merges appends into it:
    an entry appended beside the runtime is folded into the projections before either."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    with Runtime.open(str(root / "policies"), ledger=ledger_url) as rt:
        wf = "support-replies"
        g = rt.gate({"workflow": wf, "type": "send_customer_reply", "id": "m1", "to": "c@customer.example",
                     "confidence": 0.99, "channel": "email", "contains_pii": False, "body": "hi"})
        x = rt.executed(g.decision_id, receipt={"message_id": "m1", "to": "c@customer.example", "reviewer": "bob",
                                                "sent_at": "2026-11-28T00:00:00Z"})
        p = rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita", reason="r")
        assert p.rollback_id in [q.rollback_id for q in rt.queue()]  # (a listing kept by the runtime)
        with Ledger.open(ledger_url) as other:
            other.append("transition", {"subject": p.rollback_id, "to": "cancelled", "principal": "ops",
                                        "reason": "by hand", "at": "2026-11-28T00:00:01Z"},
                         workflow=wf, links=[p.rollback_id])
        assert p.rollback_id not in [q.rollback_id for q in rt.queue()]
        assert rt.projection_snapshot() == _rebuilt(ledger_url, str(root / "policies"))
