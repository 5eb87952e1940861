"""`copy_ledger` (`stopline ledger copy`): a ledger moved to another database (SQLite to
PostgreSQL and back), kept up to date as a mirror, with the same chain, tree, ids and
checkpoints; a destination that is not a copy, or a source entry whose stored hash is not
its content's, refused with nothing of the batch written."""

from __future__ import annotations

import json

import pytest
from ledger_fixtures import guards_off, ledger_url  # noqa: F401  (fixture)
from sqlalchemy import text

from policy_engine import Runtime
from policy_engine.ledger import Ledger, NewEntry, generate_key
from policy_engine.ledger.copy import CopyError, copy_ledger

KEY = generate_key("stopline.test/copy")
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
    description "A ping that needs a look when it is loud"
    reversible full via "ping.undo" within 1h
    receipt [id]
    require_approval loud by 1 ops when `action.loud`
    allow quiet when `!action.loud`
  }

  stop flood {
    description "Too many pings"
    when `action.type == "ping" && action.count > 100`
    severity high
    owner "Ops"
    affects [pings]
    rollback "Undo the pings"
    notify [ops]
    resume when {
      calm: `true` "it is calm"
    }
  }
}
"""


@pytest.fixture
def policy(tmp_path):
    p = tmp_path / "w.policy"
    p.write_text(POLICY)
    return str(p)


def fill(url: str, policy: str, n: int = 6, tag: str = "") -> None:
    """Gates (allowed, held and approved, a stop), executions, a rollback, keys and links."""
    with Runtime.open(policy, ledger=url) as rt:
        for i in range(n):
            g = rt.gate({"type": "ping", "workflow": "w", "id": f"{tag}{i}", "loud": i % 3 == 0, "count": 1},
                        key=f"k-{tag}{i}")
            if g.decision.effect == "require_approval":
                rt.approve(g.decision_id, principal="olga", roles=["ops"])
            x = rt.executed(g.decision_id, receipt={"id": f"{tag}{i}"}, key=f"x-{tag}{i}")
            if i == 1:
                rt.request_rollback(x.execution_id, scenario="customer_request", requested_by="rita", reason="oops")
        rt.ledger.checkpoint(KEY)


def same_entries(a: Ledger, b: Ledger) -> None:
    ea, eb = a.entries(limit=None), b.entries(limit=None)
    assert [(e.seq, e.id, e.kind, e.workflow, e.key, e.links, e.body_json, e.time, e.prev, e.hash) for e in ea] == \
        [(e.seq, e.id, e.kind, e.workflow, e.key, e.links, e.body_json, e.time, e.prev, e.hash) for e in eb]


def test_a_sqlite_ledger_moved_to_another_database_is_the_same_log(tmp_path, ledger_url, policy):  # noqa: F811
    src_url = f"sqlite:///{tmp_path / 'src.db'}"
    fill(src_url, policy)
    with Ledger.open(src_url) as src, Ledger.open(ledger_url, create=True) as dst:
        cp, _ = src.checkpoint(KEY)
        r = copy_ledger(src, dst, batch=7)  # (several batches)
        assert r.copied == src.size == r.size and r.adopted
        assert r.root == src.root().hex() == dst.root().hex()
        assert (dst.log_id, dst.origin) == (src.log_id, src.origin)
        same_entries(src, dst)
        v = dst.verify(checkpoint=cp.note, key=KEY.verifier)  # the source's signed checkpoint, on the copy
        assert v.ok, v.render()
    with Ledger.open(ledger_url) as again:  # (the log id is stored, not only the object's)
        assert again.log_id == src.log_id and again.verify(key=KEY.verifier).ok
    # a runtime on the copy reads the same state as on the source
    with Runtime.open(policy, ledger=src_url) as a, Runtime.open(policy, ledger=ledger_url) as b:
        assert a.projection_snapshot() == b.projection_snapshot()
        assert [q.rollback_id for q in a.queue()] == [q.rollback_id for q in b.queue()]


def test_a_mirror_is_brought_up_to_date_and_a_runtime_on_it_folds_the_new_entries_in(tmp_path, ledger_url,  # noqa: F811
                                                                                     policy):
    src_url = f"sqlite:///{tmp_path / 'src.db'}"
    fill(src_url, policy, 3)
    with Ledger.open(src_url) as src, Ledger.open(ledger_url, create=True) as dst:
        first = copy_ledger(src, dst)
        with Runtime.open(policy, ledger=dst) as mirror_rt:
            assert mirror_rt.workflow_status("w")["status"] == "running"
            with Runtime.open(policy, ledger=src_url) as rt:  # the source goes on: a stop fires
                rt.gate({"type": "ping", "workflow": "w", "id": "flood", "loud": False, "count": 500})
            again = copy_ledger(src, dst)
            assert again.copied == src.size - first.size > 0 and not again.adopted
            assert mirror_rt.workflow_status("w")["status"] == "stopped"  # the copied stop counts
            with Runtime.open(policy, ledger=src_url) as rt:
                assert mirror_rt.projection_snapshot() == rt.projection_snapshot()
        assert copy_ledger(src, dst).copied == 0  # nothing new: nothing written
        same_entries(src, dst)


def test_a_postgres_ledger_copied_back_to_a_sqlite_file(tmp_path, ledger_url, policy):  # noqa: F811
    fill(ledger_url, policy)
    with Ledger.open(ledger_url) as src, Ledger.open(f"sqlite:///{tmp_path / 'back.db'}", create=True) as dst:
        r = copy_ledger(src, dst, upto=5)
        assert r.size == 5 and dst.size == 5 and r.root == src.root(5).hex()
        copy_ledger(src, dst)
        same_entries(src, dst)
        assert dst.verify(key=KEY.verifier).ok


def test_a_destination_that_is_not_a_copy_is_refused_and_left_as_it_was(tmp_path, ledger_url, policy):  # noqa: F811
    src_url = f"sqlite:///{tmp_path / 'src.db'}"
    fill(src_url, policy, 3)
    with Ledger.open(src_url) as src, Ledger.open(ledger_url, create=True) as dst:
        dst.append("stop", {"trigger": "other"}, workflow="x")  # another log
        with pytest.raises(CopyError, match="holds another log"):
            copy_ledger(src, dst)
        assert dst.size == 1
    other = f"sqlite:///{tmp_path / 'fork.db'}"
    with Ledger.open(src_url) as src, Ledger.open(other, create=True) as dst:
        copy_ledger(src, dst, upto=4)
        dst.append("stop", {"trigger": "forked"}, workflow="w")  # the copy went its own way
        with pytest.raises(CopyError, match="forked from the source at seq 4"):
            copy_ledger(src, dst)
        assert dst.size == 5 and dst.verify().ok
        with pytest.raises(CopyError, match="same ledger"):
            copy_ledger(src, src)


def test_a_source_entry_edited_in_its_database_stops_the_copy_naming_it(tmp_path, ledger_url, policy):  # noqa: F811
    fill(ledger_url, policy, 4)
    with guards_off(ledger_url) as c:
        body = json.loads(c.execute(text("SELECT body FROM ledger_entries WHERE seq = 6")).scalar_one())
        body["edited"] = True
        c.execute(text("UPDATE ledger_entries SET body = :b WHERE seq = 6"),
                  {"b": json.dumps(body, separators=(",", ":"), sort_keys=True)})
    with Ledger.open(ledger_url) as src, Ledger.open(f"sqlite:///{tmp_path / 'dst.db'}", create=True) as dst:
        with pytest.raises(CopyError, match="entry 6 is not what its hash says"):
            copy_ledger(src, dst, batch=4)
        assert dst.size == 4 and dst.verify().ok  # the batches before it: a true prefix


def test_the_command_line_copies_reports_and_refuses_in_one_line(tmp_path, ledger_url, policy):  # noqa: F811
    import subprocess
    import sys

    src_url = f"sqlite:///{tmp_path / 'src.db'}"
    fill(src_url, policy, 2)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "policy_engine.cli", "ledger", "copy", *args],
                              capture_output=True, text=True)

    r = cli("--from", src_url, "--to", ledger_url, "--format", "json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    with Ledger.open(src_url) as src:
        assert out["copied"] == out["size"] == src.size and out["root"] == src.root().hex() and out["adopted"]
    r = cli("--from", src_url, "--to", ledger_url)
    assert r.returncode == 0 and r.stdout.startswith("copied 0 entries: ") and "(the source's)" in r.stdout
    with Ledger.open(ledger_url) as dst:
        dst.append("stop", {"trigger": "forked"}, workflow="w")
    with Ledger.open(src_url) as src:
        src.append("stop", {"trigger": "on"}, workflow="w")
    r = cli("--from", src_url, "--to", ledger_url)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("error: the destination forked from the source at seq ") and r.stderr.count("\n") == 1
    r = cli("--from", f"sqlite:///{tmp_path / 'none.db'}", "--to", f"sqlite:///{tmp_path / 'x.db'}")
    assert r.returncode == 2 and r.stderr.startswith("error: no ledger at ") and "Traceback" not in r.stderr


def test_ledger_log_says_when_more_entries_match_than_it_lists(tmp_path):
    """`ledger log` cut its listing at --limit (default 100) without a word: 105 entries
    printed 100 and nothing said more matched."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'l.db'}"
    with Ledger.open(url, create=True) as led:
        led.append_many([NewEntry(
            "stop", {"trigger": f"t{i}"}, workflow="w") for i in range(5)])

    def log(*args):
        return subprocess.run([sys.executable, "-m", "policy_engine.cli", "ledger", "log", "--ledger", url, *args],
                              capture_output=True, text=True)

    r = log("--limit", "3")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 3
    assert r.stderr.startswith("warning: more entries match than the 3 listed; raise --limit")
    r = log("--limit", "5")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 5 and r.stderr == ""
