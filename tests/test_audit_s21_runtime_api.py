"""The runtime's Python API misused (the twenty-first session's audit), on SQLite and
PostgreSQL. Each misuse is a ``RuntimeUsageError`` naming the argument and nothing is
recorded, or the record says what happened; no permission is widened.

- ``resume(principal=None)`` (or ``1``, ``""``) was recorded, an allowed resume included:
  a stopped workflow restarted by nobody the record names;
- the free texts recorded as given, ``request_rollback``'s ``reason`` and ``trigger``,
  ``cancel``'s ``reason`` and ``approve``'s ``note``, were recorded as an int, a dict or
  None; a lone surrogate in one was the ledger's encoder error naming no argument (or,
  in a rollback's ``reason``, a "plan" of workflow ``''`` refused by the engine); a
  ``scenario`` that is not a string was planned as ``''``; a surrogate in a role name was
  the encoder error;
- an approval given at a ``now`` before its subject was recorded was recorded and counted;
- an execution that, by the caller's own ``executed_at``, ran before its decision was
  recorded was recorded as authorized;
- a rollback's step reported at a ``now`` before the rollback was requested was recorded;
- ``approve(expires_in=0)`` said "a duration of 0 or more, not 0".
"""

from __future__ import annotations

import pytest
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import RECEIPT, WF, at, policy_path, rt, send  # noqa: F401  (fixtures)

from policy_engine.limits import MAX_CLOCK_SKEW_SECONDS
from policy_engine.runtime import RuntimeUsageError


def _stopped(rt):
    g = rt.gate(send(50.0, promise=True), now=at(0))
    assert g.stopped
    return g


@pytest.mark.parametrize("who", [None, 1, "", "\ud800"])
def test_a_resume_names_who_asked(rt, who):  # noqa: F811
    _stopped(rt)
    n = rt.ledger.size
    with pytest.raises(RuntimeUsageError, match="`principal`"):
        rt.resume(WF, evidence={"fixed": True}, principal=who, now=at(10))
    assert rt.ledger.size == n
    assert rt.workflow_status(WF)["status"] == "stopped"
    r = rt.resume(WF, evidence={"fixed": True}, principal="ops", now=at(11))
    assert r.allowed and rt.ledger.entries(kind="resume")[-1].body["principal"] == "ops"


def _execution(rt, s: float = 0):
    g = rt.gate(send(50.0), now=at(s))
    return rt.executed(g.decision_id, receipt=RECEIPT, now=at(s + 1)).execution_id


@pytest.mark.parametrize(("arg", "bad", "says"), [
    ("reason", None, "`reason` is a string, not null"),
    ("reason", 7, "`reason` is a string, not 7"),
    ("reason", {"why": 1}, "`reason` is a string, not a dict"),
    ("reason", "oops \ud800", "`reason` holds a lone surrogate"),
    ("trigger", 7, "`trigger` is a string or None, not 7"),
    ("trigger", "\udfff", "`trigger` holds a lone surrogate"),
    ("scenario", None, "`scenario` is a non-empty string, not null"),
    ("scenario", b"customer_request", "`scenario` is a non-empty string, not a bytes"),
    ("scenario", ["customer_request"], "`scenario` is a non-empty string, not a list"),
])
def test_a_rollback_request_with_a_wrong_argument_is_refused(rt, arg, bad, says):  # noqa: F811
    x = _execution(rt)
    n = rt.ledger.size
    args = {"scenario": "customer_request", "requested_by": "rita", "reason": "asked", arg: bad}
    with pytest.raises(RuntimeUsageError, match=says.replace("(", r"\(")):
        rt.request_rollback(x, **args, now=at(5))
    assert rt.ledger.size == n
    p = rt.request_rollback(x, scenario="customer_request", requested_by="rita", reason="asked", now=at(6))
    assert p.rollback_id is not None and p.status == "pending"


@pytest.mark.parametrize(("call", "says"), [
    (lambda rt, s: rt.cancel(s, principal="ops", reason=3, now=at(5)), "`reason` is a string or None, not 3"),
    (lambda rt, s: rt.cancel(s, principal="ops", reason="\ud800", now=at(5)), "`reason` holds a lone surrogate"),
    (lambda rt, s: rt.approve(s, principal="rev", roles=["reviewer"], note=3, now=at(5)),
     "`note` is a string or None, not 3"),
    (lambda rt, s: rt.approve(s, principal="rev", roles=["reviewer"], note=["x"], now=at(5)),
     "`note` is a string or None, not a list"),
    (lambda rt, s: rt.approve(s, principal="rev", roles=["reviewer", "\ud800"], now=at(5)),
     "a role in `roles` holds a lone surrogate"),
    (lambda rt, s: rt.approve(s, principal="rev", roles=["reviewer"], expires_in=0, now=at(5)),
     r"`expires_in` is a duration \(a timedelta\) of 0 or more, or None; not 0"),
])
def test_an_approval_or_cancel_with_a_wrong_argument_is_refused(rt, call, says):  # noqa: F811
    g = rt.gate(send(500.0), now=at(0))
    n = rt.ledger.size
    with pytest.raises(RuntimeUsageError, match=says):
        call(rt, g.decision_id)
    assert rt.ledger.size == n
    assert rt.authorization(g.decision_id, now=at(5)).status == "pending"


def test_an_approval_before_its_subject_existed_is_refused(rt):  # noqa: F811
    """Backdated before the decision (or the rollback) was recorded, it counted: the decision
    was `approved` as of that earlier clock, and an execution reported then authorized."""
    g = rt.gate(send(500.0), now=at(100))
    n = rt.ledger.size
    with pytest.raises(RuntimeUsageError, match="is before the decision .* was recorded"):
        rt.approve(g.decision_id, principal="rev", roles=["reviewer"], now=at(40))
    assert rt.ledger.size == n
    assert rt.authorization(g.decision_id, now=at(100)).status == "pending"
    assert not rt.executed(g.decision_id, receipt=RECEIPT, now=at(100)).authorized
    # at or after the decision's time: counted
    assert rt.approve(g.decision_id, principal="rev", roles=["reviewer"], now=at(100)).counted

    x = _execution(rt, 200)
    p = rt.request_rollback(x, scenario="customer_request", requested_by="rita", reason="asked", now=at(300))
    with pytest.raises(RuntimeUsageError, match="is before the rollback .* was recorded"):
        rt.approve(p.rollback_id, principal="casey", roles=["customer_service"], now=at(250))
    assert rt.authorization(p.rollback_id, now=at(300)).status == "pending"


def test_an_execution_that_ran_before_its_decision_is_unauthorized(rt):  # noqa: F811
    """By the caller's own `executed_at` the action ran before it was decided: no decision
    permitted it. It is recorded (what happened) and flagged; the approvals stay unused."""
    g = rt.gate(send(500.0), now=at(1000))
    rt.approve(g.decision_id, principal="rev", roles=["reviewer"], now=at(1001))
    x = rt.executed(g.decision_id, receipt=RECEIPT, executed_at=at(900), now=at(1002))
    assert not x.authorized and "unauthorized" in x.flags
    assert any("before its decision was recorded" in r for r in x.reasons), x.reasons
    assert rt.authorization(g.decision_id, now=at(1003)).status == "approved"
    assert rt.executed(g.decision_id, receipt=RECEIPT, now=at(1003)).authorized


def test_an_execution_a_skewed_clock_dates_just_before_its_decision_is_authorized(rt):  # noqa: F811
    """The agent's clock trails the one that recorded the decision by seconds: that is skew
    (the same MAX_CLOCK_SKEW_SECONDS a time after `now` is allowed), not an action that ran
    before it was decided; a false `unauthorized` there would page someone for nothing."""
    g = rt.gate(send(500.0), now=at(1000))
    rt.approve(g.decision_id, principal="rev", roles=["reviewer"], now=at(1001))
    x = rt.executed(g.decision_id, receipt=RECEIPT, executed_at=at(1001 - MAX_CLOCK_SKEW_SECONDS), now=at(1002))
    assert x.authorized and "unauthorized" not in x.flags, x.reasons


def test_an_approval_on_a_clock_trailing_the_subjects_by_seconds_counts(rt):  # noqa: F811
    """With no `now` given, the runtime's clock may trail the replica that recorded the
    decision: seconds behind is skew, and the approval counts; a `now` the caller gives
    before the subject is still refused (the test above)."""
    from datetime import UTC, datetime, timedelta
    g = rt.gate(send(500.0), now=datetime.now(UTC) + timedelta(seconds=5))
    assert rt.approve(g.decision_id, principal="rev", roles=["reviewer"]).counted
    g2 = rt.gate(send(500.0), now=datetime.now(UTC) + timedelta(seconds=MAX_CLOCK_SKEW_SECONDS + 600))
    with pytest.raises(RuntimeUsageError, match="is before the decision .* was recorded"):
        rt.approve(g2.decision_id, principal="rev", roles=["reviewer"])


def test_a_step_before_its_rollback_was_requested_is_refused(rt):  # noqa: F811
    x = _execution(rt)
    p = rt.request_rollback(x, scenario="customer_request", requested_by="rita", reason="asked", now=at(10))
    rt.approve(p.rollback_id, principal="casey", roles=["customer_service"], now=at(11))
    n = rt.ledger.size
    with pytest.raises(RuntimeUsageError, match="is before the rollback .* was recorded"):
        rt.step(p.rollback_id, x, "completed", now=at(5))
    assert rt.ledger.size == n
    assert rt.step(p.rollback_id, x, "completed", now=at(12)).authorized


@pytest.mark.parametrize(("call", "says"), [
    (lambda rt, x: rt.request_bulk_rollback(None, "customer_request", "rita", None, executions=[x], now=at(5)),
     "`reason` is a string, not null"),
    (lambda rt, x: rt.request_bulk_rollback(None, "customer_request", "rita", "r", executions=[x], trigger=5,
                                            now=at(5)), "`trigger` is a string or None, not 5"),
    (lambda rt, x: rt.request_bulk_rollback(None, 5, "rita", "r", executions=[x], now=at(5)),
     "`scenario` is a non-empty string, not 5"),
])
def test_a_batch_request_with_a_wrong_argument_is_refused(rt, call, says):  # noqa: F811
    x = _execution(rt)
    n = rt.ledger.size
    with pytest.raises(RuntimeUsageError, match=says):
        call(rt, x)
    assert rt.ledger.size == n


def test_a_batch_approval_note_and_a_step_detail_are_checked(rt):  # noqa: F811
    x = _execution(rt)
    b = rt.request_bulk_rollback(None, "customer_request", "rita", "asked", executions=[x], now=at(5))
    n = rt.ledger.size
    with pytest.raises(RuntimeUsageError, match="`note` is a string or None, not a dict"):
        rt.approve_batch(b.batch_id, principal="casey", roles=["customer_service"], batch_hash=b.batch_hash,
                         note={"n": 1}, now=at(6))
    with pytest.raises(RuntimeUsageError, match="`expires_in` is a duration"):
        rt.approve_batch(b.batch_id, principal="casey", roles=["customer_service"], batch_hash=b.batch_hash,
                         expires_in=60, now=at(6))
    assert rt.ledger.size == n
    rt.approve_batch(b.batch_id, principal="casey", roles=["customer_service"], batch_hash=b.batch_hash, now=at(6))
    n = rt.ledger.size
    with pytest.raises(RuntimeUsageError, match="`detail` is a JSON object or None, not 'done'"):
        rt.batch_step(b.batch_id, x, "completed", detail="done", now=at(7))
    assert rt.ledger.size == n
    assert rt.batch_step(b.batch_id, x, "completed", detail={"by": "ops"}, now=at(8)).authorized


@pytest.mark.parametrize(("kw", "says"), [
    ({"policies": None}, "`policies` is a path, a list of paths or an Engine, not a value of type `NoneType`"),
    ({"policies": 5}, "`policies` is a path, a list of paths or an Engine, not a value of type `int`"),
    ({"policies": []}, r"`policies` is a path, a list of paths or an Engine, .*\(an empty list\)"),
    ({"ledger": 5}, "`ledger` is a URL or a Ledger, not a value of type `int`"),
    ({"workers": "2"}, r"`workers` is a number of processes \(1 or more\) or None, not '2'"),
    ({"workers": 0}, r"`workers` is a number of processes \(1 or more\) or None, not 0"),
    ({"workers": True}, r"`workers` is a number of processes \(1 or more\) or None, not True"),
])
def test_a_replay_with_a_wrong_argument_is_refused(rt, policy_path, ledger_url, kw, says):  # noqa: F811
    """`replay(None, url)` was an AttributeError from inside the evaluation, `workers="2"` a
    TypeError, `workers=0` or `-1` ran as one: now InvalidQuery naming the argument, the
    exception the replay's other arguments (since, until, workflow) already raise."""
    from policy_engine.ledger import InvalidQuery
    from policy_engine.replay import replay

    rt.gate(send(50.0), now=at(0))
    args = {"policies": str(policy_path), "ledger": ledger_url, **kw}
    with pytest.raises(InvalidQuery, match=says):
        replay(args.pop("policies"), args.pop("ledger"), **args)
    assert replay(str(policy_path), ledger_url, workers=1).replayed == 1
