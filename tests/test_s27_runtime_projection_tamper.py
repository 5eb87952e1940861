"""A workflow stopped in the log stays stopped when its projection row is edited (session 27).

The gate reads whether a workflow is stopped from the `rt_workflows` projection, a cache
beside the ledger that no guard trigger protects (it is written on every stop and resume).
Deleting its row (a plain DELETE: no trigger to drop) restarted a stopped workflow, the gate
allowing its actions, while `stopline ledger verify` said `ok`: every entry still verified.
Now `verify` folds each workflow's status from its stop and resume entries and fails (exit 1)
when the projection disagrees, and `stopline ledger init` rebuilds the projections then."""

from __future__ import annotations

from ledger_fixtures import ledger_url, raw, run_ledger_cli  # noqa: F401  (fixture)
from runtime_support import WF, at, policy_path, send  # noqa: F401  (fixture)
from sqlalchemy import text

from policy_engine import Runtime
from policy_engine.ledger import Ledger


def _stopped_ledger(url: str, policy) -> None:
    with Runtime.open(str(policy), ledger=url) as rt:
        rt.gate(send(50.0, promise=True), now=at(0))
        assert rt.workflow_status(WF)["status"] == "stopped"
        # another workflow, stopped and resumed, and a refused resume: a sound ledger verifies
        rt.resume(WF, evidence={"fixed": False}, principal="ops", now=at(1))


def test_a_deleted_projection_row_fails_verify_and_init_rebuilds_it(ledger_url, policy_path):  # noqa: F811
    _stopped_ledger(ledger_url, policy_path)
    code, out, err = run_ledger_cli("verify", "--ledger", ledger_url)
    assert code == 0 and out.startswith("ok: "), (out, err)

    with raw(ledger_url) as c:  # no guard to drop: the projection is a cache
        c.execute(text("DELETE FROM rt_workflows"))

    code, out, err = run_ledger_cli("verify", "--ledger", ledger_url)
    assert code == 1, (out, err)
    assert "FAILED" in out and "rt_workflows" in out and '"replies"' in out and "bad_promise" in out, out
    assert "stopline ledger init" in out and "Traceback" not in out + err
    code, out, err = run_ledger_cli("verify", "--ledger", ledger_url, "--format", "json")
    assert code == 1 and '"ok": false' in out and '"projections"' in out, out

    code, out, err = run_ledger_cli("init", "--ledger", ledger_url)
    assert code == 0, (out, err)
    assert "rebuilt the runtime's projections" in err, err
    code, out, err = run_ledger_cli("verify", "--ledger", ledger_url)
    assert code == 0, (out, err)
    with Runtime.open(str(policy_path), ledger=ledger_url) as rt:
        assert rt.gate(send(50.0), now=at(2)).effect == "stop"


def test_an_edited_projection_row_fails_verify(ledger_url, policy_path):  # noqa: F811
    _stopped_ledger(ledger_url, policy_path)
    with raw(ledger_url) as c:
        c.execute(text("UPDATE rt_workflows SET status = 'running', trigger = NULL, stop_id = NULL"))
    code, out, err = run_ledger_cli("verify", "--ledger", ledger_url)
    assert code == 1 and "rt_workflows" in out, (out, err)


def test_a_sound_ledger_with_stops_and_resumes_verifies(ledger_url, policy_path):  # noqa: F811
    _stopped_ledger(ledger_url, policy_path)
    with Runtime.open(str(policy_path), ledger=ledger_url) as rt:
        assert rt.resume(WF, evidence={"fixed": True}, principal="ops", now=at(3)).allowed
        rt.gate(send(50.0, promise=True), now=at(4))
        rt.resume(WF, evidence={"fixed": True}, principal="ops", now=at(5))
    # a stop appended beside the runtime, not folded in yet: not a disagreement
    with Ledger.open(ledger_url) as led:
        led.append("stop", {"trigger": "by hand"}, workflow="other")
    code, out, err = run_ledger_cli("verify", "--ledger", ledger_url)
    assert code == 0 and out.startswith("ok: "), (out, err)
    code, out, err = run_ledger_cli("init", "--ledger", ledger_url)
    assert code == 0 and "rebuilt" not in err, (out, err)


def test_entries_waiting_to_be_folded_are_left_out_and_folded_by_the_runtime(ledger_url, policy_path):  # noqa: F811
    _stopped_ledger(ledger_url, policy_path)
    with raw(ledger_url) as c:  # the row deleted, and the stop listed as not folded in yet
        c.execute(text("DELETE FROM rt_workflows"))
        c.execute(text("INSERT INTO ledger_unprojected (seq) SELECT seq FROM ledger_entries WHERE kind = 'stop'"))
    code, out, err = run_ledger_cli("verify", "--ledger", ledger_url)
    assert code == 0, (out, err)  # what the runtime folds in before it reads: not a disagreement
    with Runtime.open(str(policy_path), ledger=ledger_url) as rt:
        assert rt.gate(send(50.0), now=at(2)).effect == "stop"
    code, out, err = run_ledger_cli("verify", "--ledger", ledger_url)
    assert code == 0, (out, err)
