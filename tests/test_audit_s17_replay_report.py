"""Audit (session 17) of replay, the rollback report and `export-case`, as a demanding user
meets them: each test builds a real ledger through the Runtime with pinned times, checks a
figure by hand, and names the defect it pins."""

from __future__ import annotations

import gc
import json
import tracemalloc

import pytest
from click.testing import CliRunner
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import RECEIPT, at, send, write_policy

from policy_engine import Runtime, load
from policy_engine.cli import main
from policy_engine.ledger import InvalidQuery, Ledger
from policy_engine.replay import replay
from policy_engine.report.compute import compute_report


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_line_error(r, *words):
    """Exit 2 with a clear message naming ``words``; never an internal error or a traceback."""
    assert r.exit_code == 2, r.output
    assert "internal error" not in r.output and "Traceback" not in r.output, r.output
    for w in words:
        assert w in r.output, r.output


# ---------------------------------------------------------------------------------- report
def test_report_times_count_every_rollback_of_the_window_whose_original_ran_before_since(ledger_url,  # noqa: F811
                                                                                        tmp_path):
    """Defect: with `--since`, a rollback requested (and completed) inside the window whose
    original had executed before `since` had no time to request or to completion: the
    report only knew when the window's own executions ran, so `count` was 0 for three
    rollbacks and the slowest rollbacks (of the oldest executions) fell out of every
    quantile."""
    with Runtime.open(str(write_policy(tmp_path)), ledger=ledger_url) as rt:
        xs = []
        for i in range(3):  # executed at 1, 101, 201 s
            g = rt.gate(send(50.0, id=f"s{i}"), now=at(100 * i))
            xs.append(rt.executed(g.decision_id, receipt=RECEIPT, now=at(100 * i + 1)).execution_id)
        for i, x in enumerate(xs):  # requested at 1000, 1001, 1002; last duty done at 1100, 1101, 1102
            rid = rt.request_rollback(x, scenario="customer_request", requested_by="rita", reason="r",
                                      now=at(1000 + i)).rollback_id
            assert rt.approve(rid, principal="cs", roles=["customer_service"], now=at(1010 + i)).counted
            for d in rt.authorization(rid, now=at(1020)).duties:
                rt.step(rid, d, "completed", now=at(1100 + i))
        g = rt.gate(send(50.0, id="late"), now=at(1050))
        rt.executed(g.decision_id, receipt=RECEIPT, now=at(1051))
    whole = compute_report(ledger_url, until=at(2000))
    window = compute_report(ledger_url, since=at(1000), until=at(2000))
    # to request: 1000 - 1, 1001 - 101, 1002 - 201; to completion: 1100 - 1, 1101 - 101, 1102 - 201
    want_request = {"count": 3, "min": 801.0, "p25": 801.0, "p50": 900.0, "p75": 999.0, "p90": 999.0, "max": 999.0}
    want_done = {"count": 3, "min": 901.0, "p25": 901.0, "p50": 1000.0, "p75": 1099.0, "p90": 1099.0,
                 "max": 1099.0}
    for r in (whole, window):
        assert r["time_to_rollback_request_s"] == want_request
        assert r["time_to_rollback_completion_s"] == want_done
        assert r["rollback_status"] == {"completed": 3}
    # the rates stay the window's: of its one execution, none rolled back
    assert window["totals"]["executions"] == 1 and window["totals"]["rolled_back_executions"] == 0
    assert whole["totals"]["executions"] == 4 and whole["totals"]["rolled_back_executions"] == 3


def test_report_cli_names_the_bound_that_is_out_of_range(tmp_path):
    """Defect: `stopline report --since 0001-01-01T00:00:00+01:00` said "`time` is out of
    range in UTC" without saying which of the two bounds."""
    url = f"sqlite:///{tmp_path / 'l.db'}"
    with Runtime.open(str(write_policy(tmp_path)), ledger=url):
        pass
    r = _cli("report", "--ledger", url, "--format", "json", "--since", "0001-01-01T00:00:00+01:00")
    _one_line_error(r, "`since` is out of range")
    r = _cli("report", "--ledger", url, "--format", "json", "--until", "9999-12-31T23:59:59-01:00")
    _one_line_error(r, "`until` is out of range")


# ---------------------------------------------------------------------------------- the CLI
@pytest.fixture
def small(tmp_path):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    pol = write_policy(tmp_path)
    with Runtime.open(str(pol), ledger=url) as rt:
        d = rt.gate(send(50.0, id="ünï"), now=at(0)).decision_id
    return url, pol, d


def test_text_that_is_not_utf8_is_refused_in_one_line_never_an_internal_error(small):
    """Defect: bytes that are not UTF-8 on the command line (Python reads them as lone
    surrogates) went on to the database: `stopline replay --workflow $'\\xff'`,
    `--ledger $'sqlite:///\\xff.db'`, `stopline report --ledger …` and `stopline ledger
    export-case $'\\xff'` ended in "internal error: UnicodeEncodeError"."""
    url, pol, d = small
    bad = "\udcff"
    _one_line_error(_cli("replay", pol, "--ledger", url, "--workflow", bad), "--workflow", "not UTF-8")
    _one_line_error(_cli("replay", pol, "--ledger", f"sqlite:///{bad}.db"), "--ledger", "not UTF-8")
    _one_line_error(_cli("report", "--ledger", f"sqlite:///{bad}.db", "--format", "json"), "--ledger", "not UTF-8")
    _one_line_error(_cli("ledger", "export-case", bad, "--expect", "deny", "--suite", "s.yaml", "--ledger", url),
                    "DECISION_ID", "not UTF-8")
    # text that is UTF-8 (here not ASCII) is read as before
    r = _cli("replay", pol, "--ledger", url, "--workflow", "réplies", "--format", "json")
    assert r.exit_code == 0 and json.loads(r.output)["replayed"] == 0


def test_replay_api_refuses_a_workflow_that_is_not_a_name(ledger_url, tmp_path):  # noqa: F811
    """Defect: `replay(..., workflow=123)` compared a number with the text column (PostgreSQL
    raised its own error, SQLite silently matched nothing) and a string with lone surrogates
    raised UnicodeEncodeError; both are now `InvalidQuery`, as a bad `since` is."""
    pol = write_policy(tmp_path)
    with Runtime.open(str(pol), ledger=ledger_url) as rt:
        rt.gate(send(50.0), now=at(0))
    for bad in (123, "\udcff", ["replies"]):
        with pytest.raises(InvalidQuery, match="`workflow`"):
            replay(str(pol), ledger_url, workflow=bad)
    assert replay(str(pol), ledger_url, workflow="replies").replayed == 1


def test_export_case_to_a_suite_that_cannot_be_written_is_one_line(small, tmp_path):
    """Defect: `stopline ledger export-case … --suite /missing/dir/s.yaml` under a directory
    that cannot be created (or a suite file that cannot be read) ended in "internal error:
    FileNotFoundError … this is a bug in Stopline"."""
    url, _pol, d = small
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    r = _cli("ledger", "export-case", d, "--expect", "deny", "--suite", blocker / "sub" / "s.policy-test.yaml",
             "--ledger", url)
    _one_line_error(r, "error: ", str(blocker))
    assert not (tmp_path / "sub").exists()


# ---------------------------------------------------------------------------------- memory
def test_replay_memory_does_not_grow_with_the_number_of_decisions(tmp_path):
    """Defect: replay read the sequence number of every decision into one list before it
    started (to cut the work into ranges), ~40 bytes per decision: 8 MB of its 15 MB peak
    at 200,000 decisions, growing without bound with the ledger while the decisions
    themselves stream in pages. The ranges' bounds are now kept, not the numbers."""
    url = f"sqlite:///{tmp_path / 'l.db'}"
    pol = write_policy(tmp_path)
    with Runtime.open(str(pol), ledger=url) as rt:
        for i in range(0, 25_000, 1000):
            rt.gate_many([send(50.0, id=f"a{i + j}") for j in range(1000)], now=at(i))
    eng, led = load(str(pol)), Ledger.open(url)
    try:
        def peak(**kw) -> tuple[int, int]:
            replay(eng, led, workers=1, **kw)  # once to warm (imports, compiled statements)
            gc.collect()
            tracemalloc.start()
            try:
                r = replay(eng, led, workers=1, **kw)
                return tracemalloc.get_traced_memory()[1], r.replayed
            finally:
                tracemalloc.stop()

        small_peak, n_small = peak(since=at(15_000))  # the last 10,000 decisions (two pages)
        big_peak, n_big = peak()  # all 25,000 (five pages)
        assert (n_small, n_big) == (10_000, 25_000)
        # a list of 15,000 more numbers is ~540 KB; the pages themselves are the same size
        assert big_peak - small_peak < 250_000, (small_peak, big_peak)
    finally:
        led.close()


def test_replay_cut_into_ranges_reads_each_decision_once(tmp_path):
    """The ranges the work is cut into (now streamed) cover every decision once, in order,
    whatever the number of workers; the changed verdicts are the same as in one process."""
    from policy_engine.replay import _filters, _parts

    url = f"sqlite:///{tmp_path / 'l.db'}"
    pol = write_policy(tmp_path)
    with Runtime.open(str(pol), ledger=url) as rt:
        rt.gate_many([send(float(a), id=f"a{a}") for a in range(40, 140)], now=at(0))
        rt.gate({"workflow": "replies", "type": "log", "note": "n"}, now=at(1))  # one of another type
        rt.gate_many([send(float(a), id=f"b{a}") for a in range(40, 140)], now=at(2))
    with Ledger.open(url) as led:
        seqs = [e.seq for e in led.entries() if e.kind == "decision"]
        for step in (1, 7, 50, 200, 201, 500):
            parts = _parts(led, _filters(None, None, None), step, seqs[-1])
            got = [s for lo, hi in parts for s in seqs if lo <= s <= hi]
            assert got == seqs and all(sum(1 for s in seqs if lo <= s <= hi) <= step for lo, hi in parts)
        assert _parts(led, _filters(None, None, None), 10, seqs[100]) == [
            (seqs[i], seqs[min(i + 9, 100)]) for i in range(0, 101, 10)]
    cand = tmp_path / "cand"
    cand.mkdir()
    write_policy(cand, (tmp_path / "replies.policy").read_text(encoding="utf-8")
                 .replace("action.amount > 100.0", "action.amount > 90.0"))
    one, three = replay(str(cand), url, workers=1), replay(str(cand), url, workers=3)
    assert three.workers == 3 and one.changed == three.changed
    assert (one.replayed, len(one.changed), one.counts) == (201, 20, {"allow -> require_approval": 20})
