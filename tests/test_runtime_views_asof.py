"""The views answer as of their `now` (SQLite and PostgreSQL): a rollback whose standard
reversal window, or whose `pending_until`, passed before it was authorized is expired by
the clock before any entry records it (the sweeper, or its next claim, cancel or request).
Until then the review queue lists it as `expired` with `unrecorded` (never as pending: it
takes no approval, and its approval is refused as before), and `stopline report` counts it
expired as of `--until` (or now), saying which expiries were derived; once the sweeper
records them the report has the same figures, the expiries now recorded. Reading writes
nothing. A rollback still within its window is unaffected."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from click.testing import CliRunner
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import POLICY, RECEIPT, at, policy_path, rt, send, write_policy  # noqa: F401  (fixtures)

from policy_engine import Runtime
from policy_engine.cli import main
from policy_engine.report.compute import compute_report

ROUTE = "customer_service"
PRICED = (POLICY.replace('reversible partial via "email.recall" within 60s',
                         'reversible partial via "email.recall" within 60s\n    cost 10 USD')
          .replace("rollback customer_request {", "rollback customer_request {\n    cost 40 USD"))


def _rollback(rt, t: float, name: str) -> str:
    """A send executed at `t` (reversible for 60 s) and its rollback requested at `t + 10`:
    a standard plan, its window ending at `t + 60`."""
    g = rt.gate(send(10.0, id=name), now=at(t))
    x = rt.executed(g.decision_id, receipt=RECEIPT, now=at(t))
    p = rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita", reason="r",
                            now=at(t + 10))
    assert p.plan.window == "standard" and p.status == "pending"
    return p.rollback_id


def _by_id(items) -> dict:
    return {i.rollback_id: i for i in items}


def _cold(rt, *args, **kw):
    """The queue read afresh: no kept listing, no expiry judged before."""
    rt._queue_cache.clear()
    rt._clock_memo = (0, None, {})
    return rt.queue(*args, **kw)


# ------------------------------------------------------------------------------ the queue
def test_the_queue_lists_a_lapsed_plan_as_expired_not_approvable_and_its_approval_is_refused(rt):
    lapsed = _rollback(rt, 0, "a")  # window until 12:01:00
    fresh = _rollback(rt, 100, "b")  # window until 12:02:40
    size = rt.ledger.size
    q = _by_id(rt.queue(now=at(90)))
    assert (q[lapsed].status, q[lapsed].unrecorded, q[lapsed].past_window) == ("expired", True, True)
    assert (q[fresh].status, q[fresh].unrecorded, q[fresh].past_window) == ("pending", False, False)
    assert q[lapsed].to_json()["unrecorded"] is True and q[lapsed].to_json()["status"] == "expired"
    # every listing says so: by route, unclaimed, one page at a time, a read-only runtime
    assert [(i.rollback_id, i.status) for i in rt.queue(ROUTE, now=at(90), claimed=False)] == \
        [(lapsed, "expired"), (fresh, "pending")]
    assert [(i.rollback_id, i.status) for i in rt.queue(ROUTE, now=at(90), limit=1)] == [(lapsed, "expired")]
    assert [(i.rollback_id, i.status) for i in rt.queue(ROUTE, now=at(90), limit=1, after=lapsed)] == \
        [(fresh, "pending")]
    with Runtime.open(None, ledger=rt.ledger) as ro:  # no policies: the recorded status stands for the verdict
        assert [(i.status, i.unrecorded) for i in ro.queue(now=at(90))] == [("expired", True), ("pending", False)]
    # as the runtime judges it: expired by the clock, not recorded
    st = rt.authorization(lapsed, now=at(90))
    assert (st.status, st.unrecorded) == ("expired", True) and "window ended" in st.reason
    assert rt.ledger.size == size  # reading wrote nothing
    # its approval is refused as before (nothing recorded); the one within its window is approved
    a = rt.approve(lapsed, principal="casey", roles=[ROUTE], now=at(90))
    assert (a.recorded, a.counted, a.status) == (False, False, "expired") and rt.ledger.size == size
    assert rt.approve(fresh, principal="casey", roles=[ROUTE], now=at(120)).status == "approved"
    q = _by_id(rt.queue(now=at(121)))
    assert (q[lapsed].status, q[lapsed].unrecorded) == ("expired", True)
    assert (q[fresh].status, q[fresh].unrecorded) == ("approved", False)
    # the sweeper records the expiry: the rollback leaves the queue; the approved one stays
    assert [r.subject for r in rt.expire(now=at(130))] == [lapsed]
    assert [(i.rollback_id, i.status, i.unrecorded) for i in rt.queue(now=at(131))] == [(fresh, "approved", False)]


def test_a_timed_out_rollback_within_its_window_is_expired_in_the_queue_too(ledger_url, policy_path):  # noqa: F811
    with Runtime.open(str(policy_path), ledger=ledger_url, rollback_ttl=timedelta(seconds=20)) as rt:
        late = _rollback(rt, 0, "a")  # pending_until 12:00:30, window until 12:01:00
        other = _rollback(rt, 30, "b")  # pending_until 12:01:00
        assert [(i.status, i.unrecorded) for i in rt.queue(now=at(25))] == [("pending", False), ("pending", False)]
        # the kept listing of 12:00:25 does not hold past a pending_until
        q = _by_id(rt.queue(now=at(45)))
        assert (q[late].status, q[late].unrecorded, q[late].past_window) == ("expired", True, False)
        assert (q[other].status, q[other].unrecorded) == ("pending", False)
        assert rt.authorization(late, now=at(45)).reason.startswith("not authorized by")
        assert rt.approve(late, principal="casey", roles=[ROUTE], now=at(45)).status == "expired"
        assert rt.queue(now=at(45)) == _cold(rt, now=at(45))
        assert [r.subject for r in rt.expire(now=at(46))] == [late]
        assert [i.rollback_id for i in rt.queue(now=at(47))] == [other]


def test_the_kept_listing_follows_the_clock_and_the_log(rt):
    lapsed = _rollback(rt, 0, "a")
    fresh = _rollback(rt, 100, "b")
    assert [i.status for i in rt.queue(now=at(30))] == ["pending", "pending"]
    at_deadline = rt.queue(now="2026-11-26T12:01:00Z")  # the window's last instant: within it
    assert (at_deadline[0].status, at_deadline[0].past_window) == ("pending", True)
    just_after = rt.queue(now="2026-11-26T12:01:00.000001Z")
    assert (just_after[0].status, just_after[0].unrecorded) == ("expired", True)
    for t in (61, 62, 300):  # later instants: kept, and still what a cold read gives
        assert rt.queue(now=at(t)) == _cold(rt, now=at(t))
        assert rt.queue(now=at(t))[0].status == "expired"
    rt.gate(send(10.0, id="c"), now=at(301))  # the log grows, the queue does not change
    assert _by_id(rt.queue(now=at(302)))[lapsed].status == "expired"
    rt.approve(fresh, principal="casey", roles=[ROUTE], now=at(150))  # a queue change: merged
    got = rt.queue(now=at(303))
    assert [(i.status, i.unrecorded) for i in got] == [("expired", True), ("approved", False)]
    assert got == _cold(rt, now=at(303))
    assert rt.queue(now=at(30)) == _cold(rt, now=at(30))  # an earlier now: judged again, within its window
    assert rt.queue(now=at(30))[0].status == "pending"


def test_the_sweeper_records_what_the_queue_derives_for_a_plan_requested_at_its_windows_end(rt):
    g = rt.gate(send(10.0, id="edge"), now=at(0))
    x = rt.executed(g.decision_id, receipt=RECEIPT, now=at(0))
    p = rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita", reason="r",
                            now=at(60))  # the window's last instant: still a standard plan
    assert p.plan.window == "standard"
    q = rt.queue(now=at(61))
    assert [(i.status, i.unrecorded) for i in q] == [("expired", True)]
    assert [r.subject for r in rt.expire(now=at(61))] == [p.rollback_id]  # not left for its pending_until
    assert rt.queue(now=at(62)) == [] and rt.authorization(p.rollback_id, now=at(62)).unrecorded is False


def test_the_queue_command_says_not_yet_recorded_and_writes_nothing(rt, ledger_url):  # noqa: F811
    lapsed = _rollback(rt, 0, "a")
    fresh = _rollback(rt, 100, "b")
    size = rt.ledger.size
    r = CliRunner().invoke(main, ["queue", "--ledger", ledger_url, "--now", "2026-11-26T12:01:30Z"])
    assert r.exit_code == 0, r.output
    lines = {ln.split()[2]: ln for ln in r.output.splitlines() if len(ln.split()) > 2}
    assert "expired (not yet recorded)" in lines[lapsed] and "PAST WINDOW" in lines[lapsed]
    assert " pending " in lines[fresh] and "not yet recorded" not in lines[fresh]
    assert "1 expired by the clock, not yet recorded" in r.output
    js = json.loads(CliRunner().invoke(main, ["queue", "--ledger", ledger_url, "--now", "2026-11-26T12:01:30Z",
                                              "--format", "json"]).output)
    assert [(i["rollback_id"], i["status"], i["unrecorded"]) for i in js["queue"]] == \
        [(lapsed, "expired", True), (fresh, "pending", False)]
    assert rt.ledger.size == size


def test_the_servers_queue_route_and_page_read_the_same_listing(tmp_path, ledger_url):  # noqa: F811
    pytest.importorskip("fastapi")
    from server_support import bearer, write_identities
    from starlette.testclient import TestClient

    from policy_engine.server import ServerConfig, create_app

    d = tmp_path / "policies"
    d.mkdir()
    write_policy(d)  # 60 s windows
    with Runtime.open(str(d), ledger=ledger_url) as rt:
        lapsed = _rollback(rt, 0, "a")  # 2026-11-26: its window closed long before the server's clock
        g = rt.gate(send(10.0, id="now"))
        x = rt.executed(g.decision_id, receipt=RECEIPT)
        fresh = rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita",
                                    reason="r").rollback_id  # now: within its window for a minute
    app = create_app(ServerConfig(str(d), ledger=ledger_url, identities=str(write_identities(tmp_path / "ids.yaml")),
                                  reload_interval=0))
    with TestClient(app) as c:
        q = c.get("/v1/queue", params={"route": ROUTE}, headers=bearer("ops")).json()["queue"]
        assert [(i["rollback_id"], i["status"], i["unrecorded"]) for i in q] == \
            [(lapsed, "expired", True), (fresh, "pending", False)]
        a = c.post("/v1/approvals", json={"subject": lapsed}, headers=bearer("casey")).json()
        assert (a["recorded"], a["status"]) == (False, "expired")
        form = c.get("/ui/login").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
        page = c.post("/ui/login", data={"token": "tok-casey-7f3a", "csrf": csrf}).text
        rows = {m.group(1): m.group(2) for m in re.finditer(
            r'href="/ui/plans/([^"]+)".*?<span class="status ([^"]+)">', page, re.S)}
        assert rows == {lapsed: "expired", fresh: "pending"}
        assert page.count("(not yet recorded: request it again)") == 1  # the reviewer is told why


# ------------------------------------------------------------------------------ the report
def _story(rt) -> dict:
    """A lapsed rollback (never approved), one approved within its window, one still
    within its window at 12:03:50."""
    rb = {"lapsed": _rollback(rt, 0, "a")}
    rb["approved"] = _rollback(rt, 100, "b")
    assert rt.approve(rb["approved"], principal="casey", roles=[ROUTE], now=at(115)).status == "approved"
    rb["within"] = _rollback(rt, 200, "c")  # window until 12:04:20
    return rb


def _figures(r: dict) -> dict:
    """The report without what says how its expiries are known (and what it read)."""
    out = {k: v for k, v in r.items() if k != "expired"}
    out["totals"] = {k: v for k, v in r["totals"].items() if k != "entries_read"}
    return out


def test_the_report_counts_a_lapsed_rollback_expired_derived_then_recorded_with_the_same_figures(
        ledger_url, tmp_path):  # noqa: F811
    with Runtime.open(str(write_policy(tmp_path, PRICED)), ledger=ledger_url) as rt:
        rb = _story(rt)
        size = rt.ledger.size
        until = at(230)
        r = compute_report(ledger_url, until=until, policies=rt.engine)
        assert r["window"]["as_of"] == "2026-11-26T12:03:50.000000Z"
        assert r["rollback_status"] == {"approved": 1, "expired": 1, "pending": 1}
        assert r["expired"] == {"count": 1, "recorded": 0, "derived": 1, "derived_ids": [rb["lapsed"]]}
        assert r["open"] == 2  # the approved one and the one within its window
        assert r["totals"]["rolled_back_executions"] == 2 and r["cost"]["rollbacks"] == 2
        assert rt.ledger.size == size  # reading wrote nothing
        # as of before the window closed, the same rollback is pending
        early = compute_report(ledger_url, until=at(50), policies=rt.engine)
        assert early["rollback_status"] == {"pending": 1} and early["expired"]["count"] == 0
        # the sweeper records it: the same figures, the expiry now recorded
        assert [t.subject for t in rt.expire(now=at(220))] == [rb["lapsed"]]
        swept = compute_report(ledger_url, until=until, policies=rt.engine)
        assert swept["expired"] == {"count": 1, "recorded": 1, "derived": 0, "derived_ids": []}
        assert _figures(swept) == _figures(r)


def test_the_report_counts_a_timed_out_rollback_and_says_which_were_derived(ledger_url, tmp_path):  # noqa: F811
    with Runtime.open(str(write_policy(tmp_path)), ledger=ledger_url, rollback_ttl=timedelta(seconds=20)) as rt:
        late = _rollback(rt, 0, "a")  # pending_until 12:00:30; its window open until 12:01:00
        within = _rollback(rt, 20, "b")  # pending_until 12:00:50
    r = compute_report(ledger_url, until=at(45))
    assert r["rollback_status"] == {"expired": 1, "pending": 1} and r["open"] == 1
    assert r["expired"]["derived_ids"] == [late] and within not in r["expired"]["derived_ids"]
    # the command: JSON as of --until, and the page and its summary say which were derived
    args = ["report", "--ledger", ledger_url, "--until", "2026-11-26T12:00:45Z"]
    js = json.loads(CliRunner().invoke(main, [*args, "--format", "json"]).output)
    assert js["expired"] == {"count": 1, "recorded": 0, "derived": 1, "derived_ids": [late]}
    assert js["window"]["as_of"] == "2026-11-26T12:00:45.000000Z"
    out = tmp_path / "r.html"
    res = CliRunner().invoke(main, [*args, "--out", str(out)])
    assert res.exit_code == 0 and "1 expired as of 2026-11-26T12:00:45.000000Z by the clock" in res.output
    page = out.read_text(encoding="utf-8")
    assert "statuses as of 2026-11-26T12:00:45.000000Z" in page
    assert re.search(r"<p id=expired>Expired: 1 \(0 recorded, 1 derived[^<]*" + late, page)
    # without --until: as of now (the clock), by which both have expired
    assert compute_report(ledger_url)["expired"]["derived_ids"] == [late, within]
    with Runtime.open(str(write_policy(tmp_path)), ledger=ledger_url) as rt:
        assert {t.subject for t in rt.expire(now=at(100))} == {late, within}
    assert compute_report(ledger_url, until=at(101))["expired"] == {"count": 2, "recorded": 2, "derived": 0,
                                                                      "derived_ids": []}
