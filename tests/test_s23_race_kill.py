"""``kill -9`` of a runtime process in the middle of a transition, while another process
waits for the same subject (the twenty-third session's audit), on SQLite and PostgreSQL.

The victim runs one runtime call until its entries are inserted and the projections are
being updated (its transaction open, the ledger's append lock held), and stops there; the
survivor then makes the conflicting call on the same subject and waits for the lock; the
victim is killed (SIGKILL). Nothing of the victim's call is in the ledger, the survivor's
call is answered as if the victim had never run, ``stopline ledger verify`` is ok and the
projections equal a rebuild of the log. Earlier sessions killed bare ledger writers (the
chain and its proofs); these kill the runtime's transitions (the entries with their
projection rows) with a rival waiting.

And a runtime opened while another process holds the append lock opens and reads at once:
``Runtime.open`` took the lock to check its projections, so it waited behind any writer (a
long batch: on SQLite it failed with "database is locked" after ``lock_timeout``, on
PostgreSQL it waited with no bound). A writer waiting for a lock held that long gives up after
the ledger's ``lock_timeout`` on both backends (PostgreSQL ignored it: the append waited for
ever behind a stuck holder)."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

from ledger_fixtures import ledger_url, run_ledger_cli  # noqa: F401  (fixture)
from runtime_support import RECEIPT, WF, at, policy_path, send  # noqa: F401  (fixtures)

from policy_engine import Runtime


def _call(r: Runtime, op: str, a: dict):
    if op == "approve":
        return r.approve(a["subject"], principal="cs-1", roles=["customer_service"], now=at(a["t"]))
    if op == "deny":
        return r.approve(a["subject"], principal="cs-2", roles=["customer_service"], verdict="deny", now=at(a["t"]))
    if op == "bulk":
        return r.request_bulk_rollback(None, "customer_request", "rita", "batch", executions=[a["execution"]],
                                       now=at(a["t"]))
    if op == "single":
        return r.request_rollback(a["execution"], scenario="customer_request", requested_by="rita", reason="one",
                                  now=at(a["t"]))
    if op == "resume":
        return r.resume(WF, evidence={"fixed": True}, principal="ops", now=at(a["t"]))
    if op == "gate":
        return r.gate(send(10.0, promise=True), now=at(a["t"]))
    if op == "claim":
        return r.claim_execution(a["subject"], principal=a["who"], now=at(a["t"]))
    raise AssertionError(op)


def _victim(url: str, pol: str, op: str, args: dict, held) -> None:
    import policy_engine.runtime.projections as P

    real = P.apply

    def stuck(c, e):  # the entries are inserted, the transaction is open: stop here until killed
        real(c, e)
        held.set()
        time.sleep(600)

    P.apply = stuck
    with Runtime.open(pol, ledger=url) as r:
        _call(r, op, args)


def _survivor(url: str, pol: str, op: str, args: dict, ready, held, asking, out) -> None:
    with Runtime.open(pol, ledger=url) as r:  # (opening takes the append lock once: before the victim holds it)
        ready.set()
        held.wait(120)
        asking.set()
        try:
            res = _call(r, op, args)
            out.put(("ok", getattr(res, "recorded", None), getattr(res, "status", None),
                     getattr(res, "claimed_by", None), getattr(res, "rollback_id", None)))
        except Exception as e:  # noqa: BLE001 - returned to the test
            out.put(("error", type(e).__name__, str(e)))


def _opener(url: str, pol: str, rb: str, out) -> None:
    from policy_engine.ledger import Ledger

    try:
        with Runtime.open(pol, ledger=Ledger.open(url, lock_timeout=2)) as r:
            out.put(("ok", r.authorization(rb, now=at(4)).status, [i.status for i in r.queue(now=at(4))]))
    except Exception as e:  # noqa: BLE001 - returned to the test
        out.put(("error", type(e).__name__, str(e)))


def _writer(url: str, out) -> None:
    from policy_engine.ledger import Ledger

    try:
        with Ledger.open(url, lock_timeout=1) as led:
            led.append("stop", {"trigger": "t"}, workflow="elsewhere")
        out.put(("ok",))
    except Exception as e:  # noqa: BLE001 - returned to the test
        out.put(("error", type(e).__name__, str(e)))


def _kill_race(url: str, pol: str, victim: tuple[str, dict], survivor: tuple[str, dict]) -> tuple:
    ctx = mp.get_context("spawn")
    ready, held, asking, out = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Queue()
    v = ctx.Process(target=_victim, args=(url, pol, *victim, held))
    s = ctx.Process(target=_survivor, args=(url, pol, *survivor, ready, held, asking, out))
    s.start()
    try:
        assert ready.wait(120), "the survivor did not open its runtime"
        v.start()
        assert held.wait(120), "the victim never reached its transaction"
        assert asking.wait(120)
        time.sleep(0.2)  # (the survivor is now most likely waiting for the lock; the outcome is the same if not)
        os.kill(v.pid, signal.SIGKILL)
        v.join(60)
        assert v.exitcode == -signal.SIGKILL
        got = out.get(timeout=120)
        s.join(60)
        assert s.exitcode == 0
    finally:
        for p in (v, s):
            if p.pid is not None and p.is_alive():
                p.kill()
    assert got[0] == "ok", got
    return got


def _sound(r: Runtime, url: str) -> None:
    code, out, err = run_ledger_cli("verify", "--ledger", url)
    assert code == 0, (out, err)
    live = r.projection_snapshot()
    r.rebuild()
    assert r.projection_snapshot() == live


def _executed(r: Runtime, t: float) -> tuple[str, str]:
    g = r.gate(send(10.0), now=at(t))
    x = r.executed(g.decision_id, receipt=RECEIPT, now=at(t + 1))
    lg = r.gate({"workflow": WF, "type": "log"}, now=at(t + 1))
    y = r.executed(lg.decision_id, receipt={"note": "n"}, caused_by=x.execution_id, now=at(t + 1))
    return x.execution_id, y.execution_id


def test_an_approval_killed_mid_transaction_leaves_the_waiting_deny_alone_to_decide(ledger_url, policy_path):  # noqa: F811
    pol = str(policy_path)
    with Runtime.open(pol, ledger=ledger_url) as r:
        x, _y = _executed(r, 0)
        rb = r.request_rollback(x, scenario="customer_request", requested_by="rita", reason="r",
                                now=at(2)).rollback_id
        got = _kill_race(ledger_url, pol, ("approve", {"subject": rb, "t": 3}), ("deny", {"subject": rb, "t": 3}))
        assert got[1:3] == (True, "denied")
        apps = r.ledger.entries(kind="approval", link=rb)
        assert [(a.body["principal"], a.body["verdict"]) for a in apps] == [("cs-2", "deny")]
        assert r.authorization(rb, now=at(4)).status == "denied" and r.queue(now=at(4)) == []
        _sound(r, ledger_url)


def test_a_batch_killed_mid_transaction_leaves_the_waiting_single_request_to_plan_it(ledger_url, policy_path):  # noqa: F811
    pol = str(policy_path)
    with Runtime.open(pol, ledger=ledger_url) as r:
        x, y = _executed(r, 0)
        got = _kill_race(ledger_url, pol, ("bulk", {"execution": x, "t": 2}), ("single", {"execution": x, "t": 2}))
        rbs = r.ledger.entries(kind="rollback")
        assert [e.id for e in rbs] == [got[4]] and rbs[0].body["cascade"] == [y]  # planned once, with its cascade
        assert r.ledger.entries(kind="batch") == []
        assert [(i.rollback_id, i.status) for i in r.queue(now=at(3))] == [(got[4], "pending")]
        _sound(r, ledger_url)


def test_a_resume_killed_mid_transaction_leaves_the_workflow_stopped_by_the_waiting_gate(ledger_url, policy_path):  # noqa: F811
    pol = str(policy_path)
    with Runtime.open(pol, ledger=ledger_url) as r:
        r.gate(send(10.0, promise=True), now=at(0))
        got = _kill_race(ledger_url, pol, ("resume", {"t": 1}), ("gate", {"t": 1}))
        assert r.ledger.entries(kind="resume") == []
        assert r.workflow_status(WF)["status"] == "stopped"
        assert r.gate(send(10.0), now=at(2)).decision.effect == "stop"
        assert got[0] == "ok"
        # and an allowed resume still restarts it
        assert r.resume(WF, evidence={"fixed": True}, principal="ops", now=at(3)).allowed
        assert r.gate(send(10.0), now=at(4)).decision.effect == "allow"
        _sound(r, ledger_url)


def test_a_claim_killed_mid_transaction_leaves_the_decision_to_the_waiting_claimant(ledger_url, policy_path):  # noqa: F811
    pol = str(policy_path)
    with Runtime.open(pol, ledger=ledger_url) as r:
        d = r.gate(send(500.0), now=at(0)).decision_id
        r.approve(d, principal="sam", roles=["reviewer"], now=at(1))
        got = _kill_race(ledger_url, pol, ("claim", {"subject": d, "who": "w1", "t": 2}),
                         ("claim", {"subject": d, "who": "w2", "t": 2}))
        assert got[1] is True and got[3] == "w2"
        claims = [e.body["principal"] for e in r.ledger.entries(kind="transition", link=d)]
        assert claims == ["w2"]
        assert [c.claimed_by for c in r.claims_in_doubt(now=at(3))] == ["w2"]
        assert r.executed(d, receipt=RECEIPT, now=at(4)).authorized
        _sound(r, ledger_url)


def test_a_runtime_opens_and_reads_while_another_process_holds_the_append_lock(ledger_url, policy_path):  # noqa: F811
    pol = str(policy_path)
    ctx = mp.get_context("spawn")
    with Runtime.open(pol, ledger=ledger_url) as r:
        x, _y = _executed(r, 0)
        rb = r.request_rollback(x, scenario="customer_request", requested_by="rita", reason="r",
                                now=at(2)).rollback_id
        held, out = ctx.Event(), ctx.Queue()
        v = ctx.Process(target=_victim, args=(ledger_url, pol, "approve", {"subject": rb, "t": 3}, held))
        v.start()
        o = None
        try:
            assert held.wait(120), "the victim never reached its transaction"
            o = ctx.Process(target=_opener, args=(ledger_url, pol, rb, out))
            o.start()
            # opened and read while the lock is held: what was committed (the victim's approval is not)
            assert out.get(timeout=90) == ("ok", "pending", ["pending"])
        finally:
            for p in (v, o):
                if p is not None and p.is_alive():
                    p.kill()
                    p.join(30)
        _sound(r, ledger_url)


def test_an_append_waiting_for_a_lock_held_too_long_gives_up_after_lock_timeout(ledger_url, policy_path):  # noqa: F811
    pol = str(policy_path)
    ctx = mp.get_context("spawn")
    with Runtime.open(pol, ledger=ledger_url) as r:
        x, _y = _executed(r, 0)
        rb = r.request_rollback(x, scenario="customer_request", requested_by="rita", reason="r",
                                now=at(2)).rollback_id
        size = r.ledger.size
        held, out = ctx.Event(), ctx.Queue()
        v = ctx.Process(target=_victim, args=(ledger_url, pol, "approve", {"subject": rb, "t": 3}, held))
        v.start()
        w = None
        try:
            assert held.wait(120), "the victim never reached its transaction"
            w = ctx.Process(target=_writer, args=(ledger_url, out))
            w.start()
            got = out.get(timeout=90)  # (no answer at all: the writer still waits, unbounded)
            assert got[:2] == ("error", "LedgerUnavailable") and "\n" not in got[2], got
        finally:
            for p in (v, w):
                if p is not None and p.is_alive():
                    p.kill()
                    p.join(30)
        assert r.ledger.size == size  # neither wrote
        _sound(r, ledger_url)
