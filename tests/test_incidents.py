"""Issue 18 on SQLite and PostgreSQL: replay of recorded decisions under a candidate
policy, bulk rollback by a CEL select (one approval bound to the batch digest, steps per
record), capturing a miss as a suite case, and their commands."""

from __future__ import annotations

import json
import os

import pytest
import yaml
from click.testing import CliRunner
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import POLICY, RECEIPT, WF, at, policy_path, rt, send, write_policy  # noqa: F401  (fixtures)

from policy_engine import Runtime
from policy_engine.cli import main
from policy_engine.replay import changed_executions, replay
from policy_engine.runtime import RuntimeUsageError

STRICTER = POLICY.replace("action.amount > 1000.0", "action.amount > 400.0")


def _history(rt):
    """Three approved-and-executed sends (500, 450, 60), each with a log caused by it; a
    refused send; a stop, a decision while stopped, the resume. Returns the executions."""
    out = {}
    for i, amount in enumerate((500.0, 450.0, 60.0)):
        g = rt.gate(send(amount, id=f"s{i}"), now=at(10 * i))
        if g.effect == "require_approval":
            rt.approve(g.decision_id, principal="sam", roles=["reviewer"], now=at(10 * i + 1))
        x = rt.executed(g.decision_id, receipt=RECEIPT, now=at(10 * i + 2))
        lg = rt.gate({"workflow": WF, "type": "log"}, now=at(10 * i + 3))
        y = rt.executed(lg.decision_id, receipt={"note": "n"}, caused_by=x.execution_id, now=at(10 * i + 4))
        out[amount] = (g.decision_id, x.execution_id, y.execution_id)
    rt.gate(send(2000.0), now=at(40))
    rt.gate(send(promise=True), now=at(50))  # stops the workflow
    out["while_stopped"] = rt.gate(send(60.0), now=at(51)).decision_id
    assert rt.resume(WF, evidence={"fixed": True}, principal="ops", now=at(60)).allowed
    return out


# ------------------------------------------------------------------------------ replay
def test_replay_under_the_same_policy_changes_nothing_even_while_stopped(rt, ledger_url, policy_path):  # noqa: F811
    _history(rt)
    r = replay(str(policy_path), ledger_url)
    assert r.replayed == rt.ledger.entries(kind="decision").__len__()
    assert r.changed == () and r.unchanged == r.replayed  # the decision while stopped replays as `stop`


def test_replay_lists_each_changed_verdict_with_old_and_new_effect_and_rule(rt, ledger_url, tmp_path):  # noqa: F811
    h = _history(rt)
    cand = tmp_path / "next"
    cand.mkdir()
    (cand / "replies.policy").write_text(STRICTER)
    r = replay(str(cand), ledger_url)
    got = {c.decision_id: (c.old_effect, c.old_rule, c.new_effect, c.new_rule) for c in r.changed}
    assert got == {h[500.0][0]: ("require_approval", "big", "deny", "blocked"),
                   h[450.0][0]: ("require_approval", "big", "deny", "blocked")}
    assert r.counts == {"require_approval -> deny": 2}
    assert r.groups[0]["count"] == 2 and r.groups[0]["executed"] == 2
    assert sorted(changed_executions(r)) == sorted([h[500.0][1], h[450.0][1]])
    # windows and workflows narrow it
    assert [c.decision_id for c in replay(str(cand), ledger_url, since=at(5)).changed] == [h[450.0][0]]
    assert replay(str(cand), ledger_url, until=at(5)).replayed == 2  # the first send and its log
    assert replay(str(cand), ledger_url, workflow="other").replayed == 0


def test_replay_in_two_processes_gives_the_same_answer(rt, ledger_url, tmp_path):  # noqa: F811
    _history(rt)
    cand = tmp_path / "next.policy"
    cand.write_text(STRICTER)
    one = replay(str(cand), ledger_url, workers=1)
    two = replay(str(cand), ledger_url, workers=2)
    assert two.workers == 2
    assert two.to_json() | {"workers": 1} == one.to_json()


def test_replay_in_a_process_running_other_threads_spawns_its_workers(rt, ledger_url, tmp_path,  # noqa: F811
                                                                       monkeypatch):
    """Forking a process that runs other threads may deadlock the child on a lock one of
    them held (Python 3.12+ warns of it, and 3.14 changes the default start method): there
    replay spawns its workers, which load the policy themselves; a single-threaded process
    forks them. The same answer either way. Threads are counted as the OS counts them (as
    `os.fork`'s warning does): a thread Python's `threading` does not list (a native
    library's, or pytest-xdist's) makes it spawn too. This test never forks a process that
    runs threads: where it checks the choice of fork, it is given a spawn context."""
    import _thread
    import multiprocessing
    import threading

    from policy_engine import replay as replay_module

    _history(rt)
    cand = tmp_path / "next.policy"
    cand.write_text(STRICTER)
    one = replay(str(cand), ledger_url, workers=1)
    used: list = []
    real = multiprocessing.get_context
    monkeypatch.setattr(multiprocessing, "get_context", lambda method=None: used.append(method) or real(method))
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        two = replay(str(cand), ledger_url, workers=2)
    finally:
        stop.set()
        other.join()
    assert used == ["spawn"]
    assert two.workers == 2 and two.to_json() | {"workers": 1} == one.to_json()
    # a thread `threading` does not see (started by `_thread`, as native code's are): spawn too
    started, release = _thread.allocate_lock(), _thread.allocate_lock()
    started.acquire()
    release.acquire()

    def native() -> None:
        started.release()
        release.acquire()

    count = threading.active_count()
    _thread.start_new_thread(native, ())
    started.acquire()
    try:
        used.clear()
        assert threading.active_count() == count
        assert replay(str(cand), ledger_url, workers=2).to_json() == two.to_json()
        # (where the OS does not count threads, Python's count is all there is to read)
        assert used == ["spawn"] or not os.path.exists("/proc/self/stat")
    finally:
        release.release()
    if "fork" in multiprocessing.get_all_start_methods():  # a single-threaded process forks its workers
        used.clear()
        monkeypatch.setattr(replay_module, "os_threads", lambda: 1)
        monkeypatch.setattr(multiprocessing, "get_context",
                            lambda method=None: used.append(method) or real("spawn"))  # (asked, never made)
        assert replay(str(cand), ledger_url, workers=2).to_json() == two.to_json() and used == ["fork"]


def test_replay_refuses_a_time_without_its_offset_as_the_cli_does(rt, ledger_url, policy_path):  # noqa: F811
    from datetime import datetime

    from policy_engine.ledger import InvalidQuery

    _history(rt)
    for since in ("2026-11-01T00:00:00", "2026-11-01", datetime(2026, 11, 1)):  # read as local time before
        with pytest.raises(InvalidQuery, match="`since` has no time zone"):
            replay(str(policy_path), ledger_url, since=since)
        with pytest.raises(InvalidQuery, match="`until` has no time zone"):
            replay(str(policy_path), ledger_url, until=since)
    for bad in ("yesterday", 5):
        with pytest.raises(InvalidQuery, match="`since`"):
            replay(str(policy_path), ledger_url, since=bad)
    r = CliRunner().invoke(main, ["replay", str(policy_path), "--ledger", ledger_url, "--since", "2026-11-01T00:00:00"])
    assert r.exit_code == 2 and "give a time zone" in r.output
    everything = replay(str(policy_path), ledger_url).replayed
    for since in ("2026-11-26T12:00:05Z", "2026-11-26T14:00:05+02:00", "2026-11-26 12:00:05z", at(5)):
        assert replay(str(policy_path), ledger_url, since=since).replayed == everything - 2  # the first send, its log
    assert replay(str(policy_path), ledger_url, until="2026-11-26T12:00:05.000001Z").replayed == 2


def test_decisions_recorded_under_a_policy_that_no_longer_loads_still_replay(ledger_url, tmp_path):  # noqa: F811
    old = tmp_path / "old.policy"
    old.write_text(POLICY)
    with Runtime.open(str(old), ledger=ledger_url) as rt:
        d = rt.gate(send(500.0), now=at(0)).decision_id
    old.write_text("workflow {{{ broken")  # the recorded policy is gone
    cand = tmp_path / "cand.policy"
    cand.write_text(STRICTER)
    r = replay(str(cand), ledger_url)
    assert [(c.decision_id, c.new_effect) for c in r.changed] == [(d, "deny")]


def test_replay_cli_json_has_the_changed_list_and_counts_and_as_rollback_makes_a_batch(rt, ledger_url, tmp_path):  # noqa: F811
    h = _history(rt)
    cand = tmp_path / "cand.policy"
    cand.write_text(
        STRICTER.replace(
            "rollback customer_request {",
            "rollback policy_reversal {\n    route customer_service\n"
            "    authorize 1 customer_service\n  }\n\n  rollback customer_request {",
        )
    )
    res = CliRunner().invoke(
        main, ["replay", str(cand), "--ledger", ledger_url, "--format", "json", "--as-rollback", "policy_reversal"]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert {c["decision_id"] for c in out["changed"]} == {h[500.0][0], h[450.0][0]}
    assert out["counts"] == {"require_approval -> deny": 2} and out["changed_count"] == 2
    b = out["batch"]
    assert sorted(b["originals"]) == sorted([h[500.0][1], h[450.0][1]]) and len(b["rollbacks"]) == 2
    text = CliRunner().invoke(main, ["replay", str(cand), "--ledger", ledger_url])
    assert text.exit_code == 0 and "require_approval (big) -> deny (blocked): 2 decision(s), 2 executed" in text.output
    bad = CliRunner().invoke(main, ["replay", str(tmp_path / "nope.policy"), "--ledger", ledger_url])
    assert bad.exit_code == 2 and "Traceback" not in bad.output


# ------------------------------------------------------------------------------ bulk rollback
def test_a_select_plans_one_batch_cascades_included_and_one_approval_binds_to_its_digest(rt):
    h = _history(rt)
    b = rt.request_bulk_rollback(
        'original.type == "send" && original.time < timestamp("2026-11-26T12:00:15Z")',
        "customer_request",
        "rita",
        "run-7 misfired",
        now=at(100),
    )
    assert sorted(b.originals) == sorted([h[500.0][1], h[450.0][1]]) and len(b.rollbacks) == 2
    assert b.records == 4  # each send and the log it caused
    # the logs are inside the cascades: selecting them too does not plan them twice
    b2 = rt.request_bulk_rollback("true", "customer_request", "rita", "all", now=at(101))
    assert {e["execution"] for e in b2.existing} >= {h[500.0][1], h[500.0][2]}
    assert b2.originals == (h[60.0][1],) and b2.records == 2
    # an approval naming another digest is refused
    with pytest.raises(RuntimeUsageError, match="binds to the batch"):
        rt.approve_batch(b.batch_id, principal="cs", roles=["customer_service"], batch_hash=b2.batch_hash, now=at(102))
    assert rt.batch_status(b.batch_id, now=at(102))["by_status"] == {"pending": 2}
    # the requester cannot approve her own batch (distinct from request.requested_by): recorded, not counted
    a0 = rt.approve_batch(
        b.batch_id, principal="rita", roles=["customer_service"], batch_hash=b.batch_hash, now=at(102)
    )
    assert (a0["plans"], a0["counted"]) == (2, 0)
    a = rt.approve_batch(b.batch_id, principal="cs", roles=["customer_service"], batch_hash=b.batch_hash, now=at(103))
    assert (a["counted"], a["statuses"]) == (2, {"approved": 2})
    for rid in b.rollbacks:
        assert rt.authorization(rid, now=at(103)).status == "approved"
    # steps per record; done / partial / remaining
    first = rt.authorization(b.rollbacks[0], now=at(104)).duties
    for d in first:
        rt.batch_step(
            b.batch_id,
            d if not d.startswith(("compensate:", "notify:")) else f"{b.rollbacks[0]}/{d}",
            "completed",
            key=f"k-{d}",
            now=at(104),
        )
    rt.batch_step(b.batch_id, b.originals[1], "failed", key="f", now=at(105))
    st = rt.batch_status(b.batch_id, now=at(106))
    assert (st["done"], st["partial"], st["remaining"]) == (1, 1, 1)
    assert st["duties"] == {"total": 8, "done": 4, "failed": 1, "remaining": 4}
    with pytest.raises(RuntimeUsageError, match="several|plans of batch"):
        rt.batch_step(b.batch_id, "notify:customer", "completed", now=at(107))


def test_a_select_that_does_not_compile_is_a_located_one_line_error_and_nothing_is_recorded(rt):
    _history(rt)
    n = rt.ledger.size
    with pytest.raises(RuntimeUsageError, match=r"does not compile.*column"):
        rt.request_bulk_rollback("original.type ==", "customer_request", "rita", "x", now=at(100))
    assert rt.ledger.size == n


def test_a_select_error_on_one_execution_selects_nothing_from_it_and_is_listed(rt):
    h = _history(rt)
    b = rt.request_bulk_rollback(
        'original.receipt.missing == "x" || original.type == "nope"', "customer_request", "rita", "x", now=at(100)
    )
    assert b.batch_id is None and b.selected == 0
    assert {e["execution"] for e in b.errors} >= {h[500.0][1]}


def test_rollback_cli(rt, ledger_url, policy_path):  # noqa: F811
    _history(rt)
    res = CliRunner().invoke(
        main,
        [
            "rollback",
            "--select",
            'original.type == "send"',
            "--scenario",
            "customer_request",
            "--requested-by",
            "rita",
            "--reason",
            "incident",
            "-p",
            str(policy_path),
            "--ledger",
            ledger_url,
            "--format",
            "json",
        ],
    )
    assert res.exit_code == 0, res.output
    b = json.loads(res.output)
    assert len(b["rollbacks"]) == 3
    st = CliRunner().invoke(main, ["rollback", "--status", b["batch_id"], "--ledger", ledger_url])
    assert st.exit_code == 0 and "3 rollback(s), 0 done, 0 partial, 3 remaining" in st.output
    bad = CliRunner().invoke(
        main,
        [
            "rollback",
            "--select",
            "(",
            "--scenario",
            "customer_request",
            "--requested-by",
            "r",
            "--reason",
            "x",
            "-p",
            str(policy_path),
            "--ledger",
            ledger_url,
        ],
    )
    assert bad.exit_code == 2 and "does not compile" in bad.output and "Traceback" not in bad.output


# ------------------------------------------------------------------------------ capture the miss
SUITE = """\
# refunds we care about
suite: replies                    # title
policies: [.]
now: "2026-11-26T12:00:00Z"

cases:
  # the routine one
  - name: small is allowed
    gate: {action: {workflow: replies, type: send, amount: 5.0, promise: false}}
    expect: {effect: allow}

# trailing notes stay where they are
"""


def test_export_case_appends_a_failing_case_and_keeps_the_suite_byte_for_byte(rt, ledger_url, tmp_path):  # noqa: F811
    from policy_engine.testing import load_suite

    h = _history(rt)
    suite = tmp_path / "replies.policy-test.yaml"
    suite.write_text(SUITE)
    res = CliRunner().invoke(
        main, ["ledger", "export-case", h[500.0][0], "--expect", "deny", "--suite", str(suite), "--ledger", ledger_url]
    )
    assert res.exit_code == 0, res.output
    text = suite.read_text()
    head, tail = SUITE.split("\n# trailing notes")
    assert text.startswith(head) and text.endswith("# trailing notes" + tail)  # comments and layout kept
    doc = yaml.safe_load(text)
    new = doc["cases"][-1]
    assert new["expect"] == {"effect": "deny"} and new["gate"]["action"]["amount"] == 500.0
    assert new["now"].startswith("2026-11-26T12:00:00")
    assert load_suite(suite).ok
    # it fails under the policy that decided it, passes under the stricter one
    res = CliRunner().invoke(main, ["test", str(suite)])
    assert res.exit_code == 1, res.output
    (tmp_path / "replies.policy").write_text(STRICTER)
    res = CliRunner().invoke(main, ["test", str(suite)])
    assert res.exit_code == 0, res.output
    # a decision taken while stopped carries its workflow state; a new suite is created
    fresh = tmp_path / "new" / "misses.policy-test.yaml"
    res = CliRunner().invoke(
        main,
        [
            "ledger",
            "export-case",
            h["while_stopped"],
            "--expect",
            "stop",
            "--suite",
            str(fresh),
            "--ledger",
            ledger_url,
            "--policies",
            str(tmp_path / "replies.policy"),
        ],
    )
    assert res.exit_code == 0, res.output
    c = yaml.safe_load(fresh.read_text())["cases"][0]
    assert c["gate"]["workflow_state"]["status"] == "stopped"
    assert CliRunner().invoke(main, ["test", str(fresh)]).exit_code == 0
    # the same decision twice gets a distinct name; an unknown id is one line
    res = CliRunner().invoke(
        main, ["ledger", "export-case", h[500.0][0], "--expect", "deny", "--suite", str(suite), "--ledger", ledger_url]
    )
    assert res.exit_code == 0 and len(yaml.safe_load(suite.read_text())["cases"]) == 3
    res = CliRunner().invoke(
        main, ["ledger", "export-case", "nope", "--expect", "deny", "--suite", str(suite), "--ledger", ledger_url]
    )
    assert res.exit_code == 2 and "no entry `nope`" in res.output


# ------------------------------------------------------------------------------ report
def test_the_report_counts_what_the_ledger_holds_and_each_plot_draws_those_numbers(rt, ledger_url, tmp_path):  # noqa: F811
    import re

    pytest.importorskip("matplotlib")
    from policy_engine.report.html import PLOTS

    h = _history(rt)
    p = rt.request_rollback(h[500.0][1], scenario="customer_request", requested_by="rita", reason="r", now=at(100))
    rt.approve(p.rollback_id, principal="cs", roles=["customer_service"], now=at(130))
    rt.step(p.rollback_id, h[500.0][1], "failed", key="f", now=at(140))
    rt.executed(None, receipt={}, action={"workflow": WF, "type": "other"}, now=at(150))  # unauthorized, no receipt
    out = tmp_path / "report.html"
    res = CliRunner().invoke(main, ["report", "--ledger", ledger_url, "--out", str(out)])
    assert res.exit_code == 0, res.output
    js = json.loads(CliRunner().invoke(main, ["report", "--ledger", ledger_url, "--format", "json"]).output)
    assert js["by_action_type"]["send"] == {"executions": 3, "rolled_back": 1, "rate": round(1 / 3, 4)}
    assert js["by_action_type"]["log"]["rolled_back"] == 0 and js["by_reviewer"]["sam"]["executions"] == 2
    assert js["scenarios"] == {"customer_request": 1} and js["rollback_status"] == {"partial": 1}
    assert js["time_to_rollback_request_s"]["p50"] == 98.0 and js["approval_latency_s"]["p50"] == 30.0
    assert js["unauthorized_executions"]["count"] == 1 and js["missing_receipt_fields"]["by_field"] == {"note": 1}
    page = out.read_text()
    # works offline: nothing is loaded from anywhere (namespaces are names, not fetches)
    assert not re.search(r"""(src|href|url)\s*[=(]\s*["']?\s*(https?:)?//""", page) and "<script" not in page
    assert "<link" not in page and "@import" not in page
    for pid, (_, get, _) in PLOTS.items():
        m = re.search(rf"<figure id=\"plot-{pid}\" data-values='([^']*)'>(.*?)</figure>", page, re.S)
        assert m, pid
        import html as _h

        values = json.loads(_h.unescape(m.group(1)))
        assert values == get(js), pid
        assert "<svg" in m.group(2)
        labels = re.findall(r"<text[^>]*>([^<]*)</text>", m.group(2))
        for v in values.values():
            assert f"{v:g}" in labels, (pid, v)
