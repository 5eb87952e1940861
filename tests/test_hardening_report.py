"""Hardening of `stopline report` as a demanding user meets it: each figure checked by hand
against a small ledger built with the Runtime (statuses as `Runtime.authorization` gives
them, rates, times, quantiles, window, cost), a ledger whose fields have unexpected types,
hostile names in the HTML, the JSON against the page's tables, and the command's errors.

Each test names the defect it pins. Refresh the snapshots with
`python -m pytest tests/test_hardening_report.py --snapshot-update` and review the diff.
"""

from __future__ import annotations

import html as _html
import json
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import POLICY, WF, at, send, write_policy

from policy_engine import Runtime
from policy_engine.cli import main
from policy_engine.ledger import Ledger
from policy_engine.report.compute import _dist, compute_report
from policy_engine.report.html import render_html

RECEIPT = {"message": "m", "ticket": "T-1"}
PRICED = (POLICY.replace('reversible partial via "email.recall" within 60s',
                         'reversible partial via "email.recall" within 60s\n    cost 10 USD')
          .replace("rollback customer_request {", "rollback customer_request {\n    cost 40 USD"))
NOW = at(2000)


def _request(rt, x, t):
    return rt.request_rollback(x, scenario="customer_request", requested_by="rita", reason="r", now=at(t)).rollback_id


def _story(rt) -> tuple[dict, dict]:
    """Seven sends (500 and 450 approved by sam; 60..100 allowed), executed at 2, 12, .., 62 s,
    and eight rollbacks of them in every state the runtime knows."""
    x = {}
    for i, amount in enumerate((500.0, 450.0, 60.0, 70.0, 80.0, 90.0, 100.0)):
        g = rt.gate(send(amount, id=f"s{i}"), now=at(10 * i))
        if g.effect == "require_approval":
            rt.approve(g.decision_id, principal="sam", roles=["reviewer"], now=at(10 * i + 1))
        x[i] = rt.executed(g.decision_id, receipt=RECEIPT, now=at(10 * i + 2)).execution_id
    rb = {"denied": _request(rt, x[0], 100)}
    assert rt.approve(rb["denied"], principal="cs", roles=["customer_service"], verdict="deny", now=at(110)).counted
    rb["again"] = _request(rt, x[0], 300)  # the denied one stands no more: a new request is planned
    rb["cancelled"] = _request(rt, x[1], 100)
    assert rt.cancel(rb["cancelled"], principal="rita", now=at(120)).recorded
    rb["pending"] = _request(rt, x[2], 100)
    assert not rt.step(rb["pending"], x[2], "completed", now=at(121)).authorized  # flagged: starts nothing
    rb["verified"] = _request(rt, x[3], 100)
    rt.approve(rb["verified"], principal="cs", roles=["customer_service"], now=at(105))
    duties = rt.authorization(rb["verified"], now=at(106)).duties
    assert len(duties) == 3  # the reversal, the compensation, the notification
    rt.step(rb["verified"], duties[0], "failed", now=at(150))
    for d in duties:
        rt.step(rb["verified"], d, "completed", now=at(200))
    for d in duties:
        rt.step(rb["verified"], d, "verified", now=at(1000))
    rb["partial"] = _request(rt, x[4], 110)
    rt.approve(rb["partial"], principal="cs", roles=["customer_service"], now=at(115))
    assert rt.step(rb["partial"], x[4], "failed", now=at(140)).rollback_status == "partial"
    rb["boundary"] = _request(rt, x[5], 112)  # exactly at the end of the 60 s window: still inside it
    rb["approved"] = _request(rt, x[6], 200)
    rt.approve(rb["approved"], principal="cs", roles=["customer_service"], now=at(210))
    return x, rb


@pytest.fixture
def story(ledger_url, tmp_path):  # noqa: F811
    with Runtime.open(str(write_policy(tmp_path, PRICED)), ledger=ledger_url) as rt:
        x, rb = _story(rt)
        yield rt, ledger_url, x, rb


def test_statuses_are_the_runtimes_cancelled_expired_and_unauthorized_steps_included(story):
    """Defect: the report judged a rollback from its approvals and steps alone: a cancelled
    (or expired) one stayed `pending` and open, and a step reported before approval
    (flagged unauthorized, it starts nothing) made a pending rollback `in_progress`."""
    rt, url, _x, rb = story
    r = compute_report(url, until=NOW)
    want: dict[str, int] = {}
    for s in _statuses(rt, rb, NOW).values():
        want[s] = want.get(s, 0) + 1
    assert r["rollback_status"] == want == {"approved": 1, "cancelled": 1, "denied": 1, "expired": 1, "partial": 1,
                                            "pending": 2, "verified": 1}
    assert r["open"] == 4 and r["expired"]["derived_ids"] == [rb["boundary"]]
    # the sweeper records `expired` for the three pending past their deadline (7 days)
    later = at(100) + timedelta(days=8)
    swept = {t.subject for t in rt.expire(now=later)}
    # ... and the approved one not started: its approval lapsed after a day, pending again, past its deadline
    assert swept == {rb["again"], rb["pending"], rb["boundary"], rb["approved"]}
    r = compute_report(url)
    assert r["rollback_status"] == {"cancelled": 1, "denied": 1, "expired": 4, "partial": 1, "verified": 1}
    assert r["open"] == 1 and all(rt.authorization(i, now=later).status == "expired" for i in swept)


def _statuses(rt, rb: dict, now) -> dict:
    """Each rollback's status as the runtime derives it, as recorded: an expiry by the clock
    that no entry records yet (`unrecorded`: a deadline or a standard window passed) is still
    `pending` on the record, which is what the report reads."""
    out = {}
    for k, rid in rb.items():
        st = rt.authorization(rid, now=now)
        out[k] = st.status
    return out


def test_a_rollback_denied_cancelled_or_expired_rolls_nothing_back_and_costs_nothing(story):
    """Defect: the rate counted an execution as rolled back when its only rollback was
    cancelled (or expired), and the cost priced cancelled and expired rollbacks."""
    rt, url, x, rb = story
    r = compute_report(url, policies=rt.engine, until=NOW)
    # x0: denied, then requested again (stands); x1: cancelled only; x2..x6: stand
    assert r["totals"]["rolled_back_executions"] == 5 and r["totals"]["rollback_rate"] == round(5 / 7, 4)
    assert r["by_action_type"] == {"send": {"executions": 7, "rolled_back": 5, "rate": round(5 / 7, 4)}}
    assert r["by_reviewer"] == {"(none)": {"executions": 5, "rolled_back": 4, "rate": 0.8},
                                "sam": {"executions": 2, "rolled_back": 1, "rate": 0.5}}
    c = r["cost"]
    assert c["rollbacks"] == 5 and c["total"] == {"USD": 250.0}
    assert c["by_scenario"] == {"customer_request": {"USD": 250.0}} and c["by_action_type"] == {"send": {"USD": 50.0}}
    # once the three pending ones, and the approved one whose approval lapsed unused (pending again),
    # are recorded expired: 2 stand (verified, partial)
    rt.expire(now=at(100) + timedelta(days=8))
    later = compute_report(url, policies=rt.engine)
    assert later["totals"]["rolled_back_executions"] == 2 and later["cost"]["total"] == {"USD": 100.0}
    assert later["by_reviewer"]["sam"] == {"executions": 2, "rolled_back": 0, "rate": 0.0}


def test_times_by_hand_completion_is_when_the_last_duty_was_done_not_verified(story):
    """Defect: the time to completion ran to the last *verification* (998 s here), not to
    when the last duty was completed (200 s - 32 s = 168 s)."""
    _rt, url, _x, _rb = story
    r = compute_report(url)
    assert r["time_to_rollback_completion_s"] == {"count": 1, "min": 168.0, "p25": 168.0, "p50": 168.0,
                                                  "p75": 168.0, "p90": 168.0, "max": 168.0}
    # requests (ran at -> asked at): x0 2 -> 100 and 300, x1 12, x2 22, x3 32 -> 100, x4 42 -> 110,
    # x5 52 -> 112, x6 62 -> 200; sorted 60 68 68 78 88 98 138 298: nearest rank p25 = 2nd, p50 = 4th,
    # p75 = 6th, p90 = 8th (ceil(7.2))
    assert r["time_to_rollback_request_s"] == {"count": 8, "min": 60.0, "p25": 68.0, "p50": 78.0, "p75": 98.0,
                                               "p90": 298.0, "max": 298.0}
    # first counted approval: 105 - 100, 115 - 110, 210 - 200 (the deny is no approval)
    assert r["approval_latency_s"] == {"count": 3, "min": 5.0, "p25": 5.0, "p50": 5.0, "p75": 10.0, "p90": 10.0,
                                       "max": 10.0}
    # exactly 60 s after the execution is inside `within 60s`; the rest are escalated
    assert r["window_kind"] == {"escalated": 7, "standard": 1}
    assert r["scenarios"] == {"customer_request": 8}
    assert (r["partial_count"], r["failed_count"]) == (1, 1)


def test_quantiles_are_nearest_rank():
    """Defect: `int(round(p * (n - 1)))` with Python's round-half-to-even was neither nearest
    rank (as documented) nor consistent: p50 of 1, 2, 3, 4 was 3, p25 2."""
    assert _dist([4.0, 1.0, 3.0, 2.0]) == {"count": 4, "min": 1.0, "p25": 1.0, "p50": 2.0, "p75": 3.0,
                                           "p90": 4.0, "max": 4.0}
    ten = _dist([float(i) for i in range(1, 11)])
    assert (ten["p25"], ten["p50"], ten["p75"], ten["p90"]) == (3.0, 5.0, 8.0, 9.0)
    assert _dist([7.5]) == {"count": 1, "min": 7.5, "p25": 7.5, "p50": 7.5, "p75": 7.5, "p90": 7.5, "max": 7.5}
    assert _dist([]) == {"count": 0}


def test_since_and_until_are_instants_an_entry_at_the_bound_included(tmp_path):
    """Defect: `compute_report(since=...)` compared the text given with the ledger's times:
    `13:00:00Z` sorted after the entry written `13:00:00.000000Z` (which was left out),
    and `14:00:00+01:00` compared as text, not as the same instant."""
    url = f"sqlite:///{tmp_path / 'l.db'}"
    with Runtime.open(str(write_policy(tmp_path)), ledger=url) as rt:
        for i in range(4):  # executions at 12:00, 13:00, 14:00, 15:00 UTC
            rt.executed(rt.gate(send(50.0), now=at(3600 * i)).decision_id, receipt=RECEIPT, now=at(3600 * i))

    def n(**kw):
        return compute_report(url, **kw)["totals"]["executions"]
    assert n(since="2026-11-26T13:00:00Z") == 3
    assert n(since="2026-11-26T14:00:00+01:00") == 3
    assert n(since=datetime(2026, 11, 26, 8, 0, tzinfo=timezone(timedelta(hours=-5)))) == 3
    assert n(until="2026-11-26T13:00:00Z") == 1  # until is exclusive
    assert n(since="2026-11-26T13:00:00.000001Z", until="2026-11-26T15:00:00Z") == 1
    assert compute_report(url, since="2026-11-26T14:00:00+01:00")["window"]["since"] == "2026-11-26T13:00:00.000000Z"
    for bad in ("2026-11-26T13:00:00", "yesterday"):
        with pytest.raises(ValueError, match="since"):
            compute_report(url, since=bad)


def test_each_approver_is_credited_not_their_names_joined(tmp_path):
    """Defect: an execution approved by two reviewers counted under one reviewer named
    `alice, bob`; each approver is credited (a comma inside a name stays in it)."""
    url = f"sqlite:///{tmp_path / 'l.db'}"
    pol = write_policy(tmp_path, POLICY.replace("big by 1 reviewer", "big by 2 reviewer"))
    with Runtime.open(str(pol), ledger=url) as rt:
        xs = []
        for i in range(2):
            g = rt.gate(send(500.0, id=f"s{i}"), now=at(10 * i))
            rt.approve(g.decision_id, principal="alice", roles=["reviewer"], now=at(10 * i + 1))
            rt.approve(g.decision_id, principal="bob, jr", roles=["reviewer"], now=at(10 * i + 2))
            xs.append(rt.executed(g.decision_id, receipt=RECEIPT, now=at(10 * i + 3)).execution_id)
        g = rt.gate(send(50.0, id="s9"), now=at(30))  # allowed; its receipt names a reviewer
        rt.executed(g.decision_id, receipt={**RECEIPT, "reviewer": "carol"}, now=at(31))
        _request(rt, xs[0], 40)
    r = compute_report(url, until=at(50))
    assert r["by_reviewer"] == {"alice": {"executions": 2, "rolled_back": 1, "rate": 0.5},
                                "bob, jr": {"executions": 2, "rolled_back": 1, "rate": 0.5},
                                "carol": {"executions": 1, "rolled_back": 0, "rate": 0.0}}
    assert r["totals"]["executions"] == 3


def _odd_ledger(url: str) -> None:
    """Entries that pass the ledger's checks (an object with the kind's keys) with fields of
    other types than the runtime writes: another program's ledger, or a hand-edited one."""
    led = Ledger.open(url, create=True)
    try:
        e1 = led.append("execution", {"receipt": {}, "authorized": True, "type": {"x": 1}, "reviewer": ["a"],
                                      "reviewers": "a", "missing_receipt": "abc", "executed_at": 5})
        e2 = led.append("execution", {"receipt": {}, "authorized": False, "type": "t", "missing_receipt": [{"a": 1}],
                                      "executed_at": "garbage"})
        e3 = led.append("execution", {"receipt": {}, "authorized": True, "type": "u",
                                      "executed_at": "2026-01-01T00:00:00"})  # no zone: UTC
        led.append("rollback", {"plan_hash": "h", "requested_by": "x", "reason": "r", "original": e1.id,
                                "scenario": {"a": 1}, "requested_at": 7, "plan": {"window": ["x"]}, "duties": "abc",
                                "pending_until": 3}, links=[e1.id])
        led.append("rollback", {"plan_hash": "h", "requested_by": "x", "reason": "r", "original": [e2.id],
                                "scenario": "s", "requested_at": "garbage", "plan": "x", "duties": None},
                   links=[e2.id])
        r3 = led.append("rollback", {"plan_hash": "h", "requested_by": "x", "reason": "r", "original": e3.id,
                                     "scenario": "s", "requested_at": "2026-01-01T00:01:00Z", "duties": [e3.id],
                                     "plan": {"cascade": {"steps": "x"}}}, links=[e3.id])
        led.append("approval", {"subject": [r3.id], "digest": "h", "principal": "p", "verdict": "approve"},
                   links=[r3.id])
        led.append("approval", {"subject": r3.id, "digest": "h", "principal": "p", "verdict": "approve",
                                "counted": True, "at": "2026-01-01T00:01:30Z", "status_after": 4}, links=[r3.id])
        led.append("transition", {"subject": {"a": 1}, "to": ["cancelled"]}, links=[r3.id])
        led.append("step", {"record": ["x"], "status": "completed", "at": None}, links=[r3.id])
        led.append("step", {"record": e3.id, "status": "completed", "at": "2026-01-01T00:02:00", "authorized": True},
                   links=[r3.id])
    finally:
        led.close()


def test_fields_of_unexpected_types_read_as_missing_not_a_traceback(tmp_path):
    """Defect: a step whose `record` is a list raised `TypeError: unhashable type` (and a
    `type` or `scenario` that is an object, a `missing_receipt` that is a string counted
    its letters as fields)."""
    url = f"sqlite:///{tmp_path / 'odd.db'}"
    _odd_ledger(url)
    r = compute_report(url)
    assert r["by_action_type"] == {"?": {"executions": 1, "rolled_back": 1, "rate": 1.0},
                                   "t": {"executions": 1, "rolled_back": 0, "rate": 0.0},
                                   "u": {"executions": 1, "rolled_back": 1, "rate": 1.0}}
    assert r["missing_receipt_fields"] == {"executions": 0, "by_field": {}}
    assert r["scenarios"] == {"?": 1, "s": 2} and r["unauthorized_executions"]["count"] == 1
    # e3 ran at 00:00 (a time without a zone is UTC), requested 00:01, approved 00:01:30, done 00:02
    assert r["time_to_rollback_request_s"]["max"] == 60.0 and r["approval_latency_s"]["p50"] == 30.0
    assert r["time_to_rollback_completion_s"]["p50"] == 120.0 and r["rollback_status"]["completed"] == 1
    assert "<table>" in render_html(r)
    res = CliRunner().invoke(main, ["report", "--ledger", url, "--out", str(tmp_path / "odd.html")])
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output


HOSTILE_TYPE = "$\\frac$</td><script>alert(1)</script>"
HOSTILE_REVIEWER = "<img src=x onerror=alert(2)>$x^$"


def _hostile(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    with Runtime.open(str(write_policy(tmp_path)), ledger=url) as rt:
        x = rt.executed(None, receipt={"reviewer": HOSTILE_REVIEWER},
                        action={"workflow": WF, "type": HOSTILE_TYPE}, now=at(0))
        assert not x.authorized
        g = rt.gate(send(500.0), now=at(1))
        rt.approve(g.decision_id, principal="sam'\"&", roles=["reviewer"], now=at(2))
        y = rt.executed(g.decision_id, receipt={**RECEIPT, "missing": 1}, now=at(3)).execution_id
        _request(rt, y, 10)
    return url


def _tables(page: str) -> dict[str, list[list[str]]]:
    """Each table of the page under its heading: rows of unescaped cell texts."""
    out = {}
    for head, table in re.findall(r"<h[23][^>]*>([^<]*)</h[23]>(<table>.*?</table>)", page, re.S):
        out[_html.unescape(head)] = [[_html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", tr, re.S)]
                                     for tr in re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1], re.S)]
    return out


def test_hostile_names_are_drawn_as_written_and_the_tables_say_what_the_json_says(tmp_path, snapshot):
    """Defect: a `$` in an action type or a reviewer's name went to matplotlib as
    mathematics: `$\\frac$` raised a ValueError (no page at all) and `$x$` was typeset,
    not written. And the page's tables are the JSON's numbers (snapshot: the tables)."""
    pytest.importorskip("matplotlib")
    url = _hostile(tmp_path)
    r = compute_report(url)
    page = render_html(r)
    assert not re.search(r"<(script|img)\b", page, re.I)  # the names are text, never markup
    assert HOSTILE_TYPE not in page and HOSTILE_REVIEWER not in page
    svg_text = [_html.unescape(t) for t in re.findall(r"<text[^>]*>([^<]*)</text>", page)]
    assert HOSTILE_TYPE in svg_text and HOSTILE_REVIEWER in svg_text  # each bar's label as written
    tables = _tables(page)
    assert tables["By action type"] == [[k, str(v["executions"]), str(v["rolled_back"]), f"{v['rate']:.2%}"]
                                        for k, v in r["by_action_type"].items()]
    assert tables["By reviewer"] == [[k, str(v["executions"]), str(v["rolled_back"]), f"{v['rate']:.2%}"]
                                     for k, v in r["by_reviewer"].items()]
    assert {row[0] for row in tables["By reviewer"]} == {HOSTILE_REVIEWER, "sam'\"&"}
    assert tables["Open, partial and failed"] == [
        ["open", str(r["open"])], ["partial", str(r["partial_count"])],
        ["failed (nothing done)", str(r["failed_count"])], ["unauthorized executions", "1"],
        ["executions that failed", str(r["failed_executions"]["count"])],
        ["executions missing receipt fields", "0"]]
    for pid, values in re.findall(r"<figure id=\"plot-([^\"]+)\" data-values='([^']*)'>", page):
        assert json.loads(_html.unescape(values)) is not None, pid
    assert tables == snapshot


def test_partial_and_failed_counts_are_counts_not_the_length_of_the_first_100_ids(tmp_path):
    """Defect: the page's "partial" and "failed" rows showed `len(report["partial"])`, a list
    cut at 100 ids: 120 partial rollbacks read as 100, and the JSON had no count at all."""
    url = f"sqlite:///{tmp_path / 'many.db'}"
    led = Ledger.open(url, create=True)
    t = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    try:
        for i in range(120):
            x = led.append("execution", {"receipt": {}, "authorized": True, "type": "send", "executed_at": None},
                           time=t)
            rb = led.append("rollback", {"plan_hash": "h", "requested_by": "r", "reason": "r", "scenario": "s",
                                         "original": x.id, "duties": [x.id, "notify:c"]}, links=[x.id], time=t)
            led.append("approval", {"subject": rb.id, "digest": "h", "principal": "p", "verdict": "approve",
                                    "counted": True, "status_after": "approved"}, links=[rb.id], time=t)
            if i % 2:  # half: something done before the failure
                led.append("step", {"record": "notify:c", "status": "completed", "authorized": True}, links=[rb.id],
                           time=t)
            led.append("step", {"record": x.id, "status": "failed", "authorized": True}, links=[rb.id], time=t)
    finally:
        led.close()
    r = compute_report(url)
    assert r["rollback_status"] == {"partial": 120} and (r["partial_count"], r["failed_count"]) == (120, 60)
    assert len(r["partial"]) == 100 and len(r["failed"]) == 60
    rows = dict(_tables(render_html(r))["Open, partial and failed"])
    assert rows["partial"] == "120" and rows["failed (nothing done)"] == "60" and rows["open"] == "120"


def test_cli_errors_are_one_line_exit_2(tmp_path, snapshot):
    """Defect: an `--out` that cannot be written (a missing directory) was an internal error
    with a traceback hint; and an HTML report without `--out` read the whole ledger before
    saying `--out` is needed."""
    url = f"sqlite:///{tmp_path / 'l.db'}"
    Ledger.open(url, create=True).close()
    run = CliRunner().invoke
    res = run(main, ["report", "--ledger", url, "--out", str(tmp_path / "no" / "such" / "dir.html")])
    assert res.exit_code == 2 and "Traceback" not in res.output and "internal error" not in res.output
    out = res.output.replace(str(tmp_path), "TMP")
    res2 = run(main, ["report", "--ledger", f"sqlite:///{tmp_path / 'missing.db'}"])
    assert res2.exit_code == 2 and "--out" in res2.output  # the usage error first: the ledger is not opened
    res3 = run(main, ["report", "--ledger", f"sqlite:///{tmp_path / 'missing.db'}", "--format", "json"])
    assert res3.exit_code == 2 and "no ledger at" in res3.output
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 10)
    res4 = run(main, ["report", "--ledger", f"sqlite:///{tmp_path / 'junk.db'}", "--format", "json"])
    assert res4.exit_code == 2 and "Traceback" not in res4.output
    res5 = run(main, ["report", "--ledger", "mysql://x/y", "--format", "json"])
    assert res5.exit_code == 2 and "unsupported ledger URL" in res5.output
    assert out == snapshot


def test_an_empty_ledger_reports_zeros_and_draws_a_page(tmp_path):
    pytest.importorskip("matplotlib")
    url = f"sqlite:///{tmp_path / 'e.db'}"
    Ledger.open(url, create=True).close()
    r = compute_report(url)
    assert r["totals"] == {"entries_read": 0, "executions": 0, "rollbacks": 0, "rolled_back_executions": 0,
                           "batches": 0, "rollback_rate": 0.0}
    assert r["time_to_rollback_request_s"] == {"count": 0} and r["rollback_status"] == {}
    page = render_html(r)
    assert page.count("<svg") == 7 and "all entries" in page
