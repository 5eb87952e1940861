"""Audit (s18) of the ledger's promises, as a hostile operator and a crash would test them:
a cut tail is located at its first missing seq; `kill -9` in the middle of `transact`,
`checkpoint` and `append_many` loses nothing acknowledged; a careful rewrite (hashes,
chain, Merkle nodes and head recomputed) is caught by a signed checkpoint and cannot be
proven consistent with it; the store's proofs at edge sizes match pymerkle; a PostgreSQL
connection cut, a read-only or unreachable SQLite file and a stored hash edited into
non-hex give one clear error, never a traceback."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from ledger_fixtures import PG_URL, _pg_admin, body, guards_off, ledger_url, run_ledger_cli  # noqa: F401  (fixture)
from pymerkle import InmemoryTree
from pymerkle import verify_consistency as pm_verify_consistency
from pymerkle import verify_inclusion as pm_verify_inclusion
from sqlalchemy import text

from policy_engine.ledger import Ledger, NewEntry, generate_key
from policy_engine.ledger import merkle as m
from policy_engine.ledger.canonical import ZERO_HASH, leaf_data
from policy_engine.ledger.errors import LedgerUnavailable
from policy_engine.ledger.note import open_checkpoint

KEY = generate_key("audit-s18")


def _leaf_bytes(e) -> bytes:
    return leaf_data(e.body_json, seq=e.seq, id=e.id, kind=e.kind, workflow=e.workflow, links=tuple(e.links),
                     key=e.key, time=e.time, prev=e.prev)


# ---------------------------------------------------------------- where a cut tail is reported
def test_a_cut_tail_is_located_at_its_first_missing_seq(ledger_url):
    """Deleting the tail (entries only, the head row left) must name the first missing seq,
    not the first leftover Merkle node (seq 18 closes no subtree: the first node left over
    is leaf 19's; with every entry deleted it was leaf 1's, never seq 0)."""
    with Ledger.open(ledger_url, create=True) as led:
        led.append_many(NewEntry("stop", body("stop", n=i), workflow="w") for i in range(16))
        cp, _ = led.checkpoint(KEY)  # seq 16, signs size 16
        led.append_many(NewEntry("stop", body("stop", n=i), workflow="w") for i in range(13))
        assert led.size == 30 and led.verify(key=KEY.verifier).ok
        with guards_off(ledger_url) as c:
            c.execute(text("DELETE FROM ledger_entries WHERE seq >= 18"))
        r = led.verify()
        assert not r.ok and r.first_bad == 18 and "seq 18 is missing" in r.problem, r.render()
        code, out, err = run_ledger_cli("verify", "--ledger", ledger_url)
        assert code == 1 and out.startswith("FAILED at seq 18: seq 18 is missing"), (out, err)
        with guards_off(ledger_url) as c:
            c.execute(text("DELETE FROM ledger_entries"))
        r = led.verify()
        assert not r.ok and r.first_bad == 0 and "seq 0 is missing" in r.problem, r.render()
        r = led.verify(checkpoint=cp.note, key=KEY.verifier)
        assert not r.ok and r.first_bad == 0 and "truncated" in r.problem, r.render()


# ---------------------------------------------------------------- a careful rewrite vs a checkpoint
def _rewrite_from(c, seq: int) -> None:
    """Edit entry `seq`'s body and recompute everything after it as a careful attacker
    would: every hash, every prev, every Merkle node, the head row."""
    c.execute(text("UPDATE ledger_entries SET body = :b WHERE seq = :s"),
              {"b": json.dumps({"trigger": "rewritten"}, separators=(",", ":")), "s": seq})
    rows = c.execute(text("SELECT seq, id, kind, workflow, key, links, body, time FROM ledger_entries "
                          "ORDER BY seq")).all()
    c.execute(text("DELETE FROM ledger_nodes"))
    cr, prev = m.CompactRange(), ZERO_HASH
    for r in rows:
        h = m.leaf_hash(leaf_data(r.body, seq=r.seq, id=r.id, kind=r.kind, workflow=r.workflow,
                                  links=tuple(json.loads(r.links)), key=r.key, time=r.time, prev=prev)).hex()
        c.execute(text("UPDATE ledger_entries SET prev = :p, hash = :h WHERE seq = :s"),
                  {"p": prev, "h": h, "s": r.seq})
        for level, _idx, nh in cr.append(bytes.fromhex(h)):
            c.execute(text("INSERT INTO ledger_nodes (leaf, level, hash) VALUES (:l, :v, :h)"),
                      {"l": r.seq, "v": level, "h": nh.hex()})
        prev = h
    c.execute(text("UPDATE ledger_heads SET head = :h, frontier = :f"), {"h": prev, "f": cr.encode()})


def test_a_careful_rewrite_is_caught_by_a_signed_checkpoint_and_its_consistency_proof(ledger_url, tmp_path):
    with Ledger.open(ledger_url, create=True) as led:
        led.append_many(NewEntry("stop", body("stop", n=i), workflow="w") for i in range(12))
        cp, _ = led.checkpoint(KEY, path=tmp_path / "cp.note")  # size 12, entry 12
        led.append_many(NewEntry("stop", body("stop", n=i), workflow="w") for i in range(5))
        good_root = led.root()
        with guards_off(ledger_url) as c:
            _rewrite_from(c, 3)
        assert led.root() != good_root
        r = led.verify()  # its own stored checkpoint entry no longer matches the tree before it
        assert not r.ok and r.first_bad == 12 and "checkpoint entry 12" in r.problem, r.render()
        r = led.verify(checkpoint=cp.note, key=KEY.verifier)
        assert not r.ok and r.first_bad == 0 and r.problem.startswith("fork:"), r.render()
        # a consistency proof from the rewritten log does not link the signed root to it
        signed = open_checkpoint(cp.note, KEY.verifier)
        p = led.prove_consistency(signed.size)
        assert p.old_root != signed.root
        assert not m.verify_consistency(signed.size, p.new_size, signed.root, p.new_root, list(p.path))
        # nor does an inclusion proof of the rewritten entry verify against the signed root
        ip = led.prove(3, size=signed.size)
        assert not m.verify_inclusion(ip.leaf, 3, signed.size, list(ip.path), signed.root)
        (tmp_path / "k.pub").write_text(KEY.verifier.encode() + "\n")
        code, out, err = run_ledger_cli("verify", "--ledger", ledger_url, "--checkpoint", str(tmp_path / "cp.note"),
                                        "--key", str(tmp_path / "k.pub"))
        assert code == 1 and out.startswith("FAILED at seq 0: fork:") and "Traceback" not in err, (out, err)


# ---------------------------------------------------------------- proofs from the store vs pymerkle
def test_store_proofs_at_edge_sizes_match_pymerkle(ledger_url):
    with Ledger.open(ledger_url, create=True) as led:
        assert led.root() == m.EMPTY_ROOT and led.prove_consistency(0).verify()
        led.append_many(NewEntry("stop", body("stop", n=i), workflow="w") for i in range(33))
        es = led.entries(limit=100)
        ref = InmemoryTree(algorithm="sha256")
        for e in es:
            ref.append_entry(_leaf_bytes(e))
            assert ref.get_leaf(e.seq + 1).hex() == e.hash
        sizes = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33]
        for n in sizes:
            assert led.root(n) == ref.get_root(n)
            for i in sorted({0, 1, n // 2, n - 2, n - 1} & set(range(n))):
                p = led.prove(i, size=n)
                assert p.verify() and p.root == ref.get_root(n)
                theirs = ref.prove_inclusion(i + 1, n)
                assert [x.hex() for x in p.path] == theirs.serialize()["path"][1:]
                pm_verify_inclusion(bytes.fromhex(es[i].hash), ref.get_root(n), theirs)
            for old in sorted({0, 1, 2, n // 2, n - 1, n} & set(range(n + 1))):
                c = led.prove_consistency(old, n)
                assert c.verify() and c.new_root == ref.get_root(n)
                if old:
                    assert c.old_root == ref.get_root(old)
                    pm_verify_consistency(c.old_root, c.new_root, ref.prove_consistency(old, n))
                if 0 < old < n:  # a proof for other sizes or swapped roots is refused
                    assert not m.verify_consistency(old, n, c.new_root, c.old_root, list(c.path))
                    assert not m.verify_consistency(old + 1, n, c.old_root, c.new_root, list(c.path)) \
                        or old + 1 == n


# ---------------------------------------------------------------- kill -9 mid-transact / mid-checkpoint
_WRITER = r"""
import os, sys
from policy_engine.ledger import Ledger, NewEntry
from policy_engine.ledger.note import SigningKey
url, tag = sys.argv[1], sys.argv[2]
key = SigningKey.parse(sys.argv[3])
led = Ledger.open(url)
out = sys.stdout
out.write("ready\n"); out.flush()
i = 0
while True:
    op = i % 3
    if op == 0:
        done = led.transact(lambda c: [NewEntry("stop", {"trigger": "t", "writer": tag, "i": i}, workflow=tag),
                                       NewEntry("stop", {"trigger": "t", "writer": tag, "i": -i}, workflow=tag)])
    elif op == 1:
        cp, e = led.checkpoint(key)
        done = [e]
    else:
        done = led.append_many(NewEntry("stop", {"trigger": "t", "writer": tag, "i": i, "j": j}, workflow=tag)
                               for j in range(3))
    out.write("".join(f"{e.seq} {e.id}\n" for e in done)); out.flush()
    i += 1
"""


@pytest.mark.parametrize("durability", ["full", "normal"])
def test_kill_minus_9_mid_transact_checkpoint_and_batch_loses_nothing_acknowledged(ledger_url, durability, tmp_path):
    ledger_url += ("&" if "?" in ledger_url else "?") + f"durability={durability}"
    Ledger.open(ledger_url, create=True).close()
    writer_url, app = ledger_url, ""
    if ledger_url.startswith("postgresql"):
        app = "s18-kill-" + uuid.uuid4().hex[:10]
        writer_url = ledger_url + "&application_name=" + app
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    rnd = random.Random(1818)
    acked: list[tuple[int, str]] = []
    for round_ in range(2):
        proc = subprocess.Popen([sys.executable, str(script), writer_url, f"k{round_}", KEY.encode()],
                                stdout=subprocess.PIPE)
        assert proc.stdout.readline() == b"ready\n"
        # (a first acknowledgement read before the random sleep: on a loaded machine the sleep
        # alone could end before the writer's first commit, and nothing acknowledged fails
        # `assert acked` below; the kill still lands at a random point of what follows)
        first = proc.stdout.readline()
        assert first.endswith(b"\n"), "the writer died before its first acknowledgement"
        time.sleep(rnd.uniform(0.05, 0.2))
        os.kill(proc.pid, signal.SIGKILL)
        data = first + proc.stdout.read()
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        lines = data.decode().split("\n")[:-1]  # a torn last line was never acknowledged
        acked += [(int(s), i) for s, i in (ln.split() for ln in lines)]
    if app:  # a killed writer's session may still finish its last message: wait for it to end
        for _ in range(600):
            with Ledger.open(ledger_url) as led, led.reading() as c:
                n = c.exec_driver_sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                                      (app,)).scalar_one()
            if not n:
                break
            time.sleep(0.05)
    with Ledger.open(ledger_url) as led:
        r = led.verify(key=KEY.verifier)  # every stored checkpoint entry's note verifies too
        assert r.ok, r.render()
        with led.reading() as c:
            ids = dict(c.exec_driver_sql("SELECT seq, id FROM ledger_entries").all())
            leaves = c.exec_driver_sql("SELECT max(leaf) FROM ledger_nodes").scalar()
        assert sorted(ids) == list(range(r.size)) and (leaves is None or leaves < r.size)  # no half-written node
        assert acked and all(ids.get(s) == i for s, i in acked), "an acknowledged entry is missing"
        # appends continue on the recovered chain, and a checkpoint of it verifies
        led.append("stop", body("stop"), workflow="after")
        cp, _ = led.checkpoint(KEY)
        assert led.verify(checkpoint=cp.note, key=KEY.verifier).ok


# ---------------------------------------------------------------- error paths
def _terminate(app: str) -> None:
    """End the server side of every connection named ``app`` and wait until they are gone."""
    import psycopg
    from sqlalchemy.engine import make_url

    _pg_admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{app}'")
    u = make_url(PG_URL)
    with psycopg.connect(host=u.host, port=u.port or 5432, user=u.username, password=u.password,
                         dbname=u.database, autocommit=True) as c:
        for _ in range(600):
            if not c.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                             (app,)).fetchone()[0]:
                return
            time.sleep(0.01)
    raise AssertionError(f"the connections of {app} did not end")


def test_a_postgres_connection_the_server_closed_while_idle_is_replaced_not_failed(ledger_url):
    """A pooled connection the server closed between calls (a restart, an idle timeout) is
    replaced at checkout: the next call works (it failed with "terminating connection")."""
    if not ledger_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    app = "s19-idle-" + uuid.uuid4().hex[:10]
    with Ledger.open(ledger_url + "&application_name=" + app, create=True) as led:
        led.append("stop", body("stop"), workflow="w")
        for op in (lambda: led.append("stop", body("stop"), workflow="w"), lambda: led.checkpoint(KEY),
                   lambda: led.transact(lambda c: [NewEntry("stop", body("stop"), workflow="w")]),
                   lambda: led.verify(), lambda: led.query_one("SELECT count(*) FROM ledger_entries"),
                   lambda: led.entries(kind="stop")):
            _terminate(app)
            op()
        r = led.verify(key=KEY.verifier)
        assert r.ok and r.size == 4, r.render()


def test_a_postgres_connection_cut_inside_a_transaction_is_a_clear_error_and_recovers(ledger_url):
    """Cut while a transaction is open: LedgerUnavailable, nothing of it recorded; the next
    call gets a new connection."""
    if not ledger_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    app = "s18-cut-" + uuid.uuid4().hex[:10]
    with Ledger.open(ledger_url + "&application_name=" + app, create=True) as led:
        led.append("stop", body("stop"), workflow="w")

        def build(c):
            _terminate(app)
            return [NewEntry("stop", body("stop"), workflow="w")]

        with pytest.raises(LedgerUnavailable, match="terminating connection|closed|lost"):
            led.transact(build)
        led.append("stop", body("stop"), workflow="w")  # the next call gets a new connection
        r = led.verify(key=KEY.verifier)
        assert r.ok and r.size == 2, r.render()


def _cli(pre: list, url: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    p = subprocess.run([*pre, sys.executable, "-m", "policy_engine.cli", "ledger", *args, "--ledger", url],
                       capture_output=True, text=True, env=env, cwd="/")
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert p.stderr.startswith("error: ") and p.stderr.count("\n") == 1, p.stderr
    assert "Traceback" not in p.stderr and "internal error" not in p.stderr, p.stderr
    return p.stderr


def test_a_read_only_or_unreachable_sqlite_file_is_one_line_from_the_cli():
    """As a user who may not write the file, then may not reach it (root may do anything: the
    CLI runs as nobody then, when nobody can run this checkout). An unreachable path was an
    internal error (Path.exists() raising PermissionError) instead of `error: ...`."""
    import tempfile

    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        pre = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"] if setpriv else []
        probe = subprocess.run([*pre, sys.executable, "-m", "policy_engine.cli", "ledger", "--help"],
                               capture_output=True, cwd="/",
                               env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        if not pre or probe.returncode != 0:  # (a checkout or venv only root may read: CI's)
            pytest.skip("root, and user nobody cannot run this checkout: the unreachable path is tested by "
                        "test_a_path_the_os_refuses_to_look_up_is_one_line_from_the_cli")
        hidden = 0o700
    else:
        pre, hidden = [], 0o000
    base = Path(tempfile.mkdtemp(prefix="s18-ro-"))
    try:
        os.chmod(base, 0o755)
        url = f"sqlite:///{base / 'l.db'}"
        with Ledger.open(url, create=True) as led:
            led.append("stop", body("stop"), workflow="w")
        os.chmod(base / "l.db", 0o444)
        assert "readonly" in _cli(pre, url, "verify")
        os.chmod(base, hidden)  # the file can no longer be reached
        assert "Permission denied" in _cli(pre, url, "prove", "0")
    finally:
        os.chmod(base, 0o755)
        shutil.rmtree(base, ignore_errors=True)


def test_a_path_the_os_refuses_to_look_up_is_one_line_from_the_cli(tmp_path):
    """Any user, root too: a path whose lookup the OS refuses with an error `Path.exists()`
    does not swallow (a name longer than the file system allows: ENAMETOOLONG, as a
    directory the user may not search gives EACCES) was an internal error; now one line."""
    url = f"sqlite:///{tmp_path / ('x' * 300) / 'l.db'}"
    assert "File name too long" in _cli([], url, "verify")


def test_a_stored_hash_edited_into_non_hex_is_a_one_line_error_from_prove(ledger_url):
    """`prove` and `prove_consistency` decode stored hashes: an entry hash or a Merkle node edited into
    something that is not 64 hex digits was an internal error (a ValueError from
    bytes.fromhex) instead of LedgerUnavailable; `verify` names the seq."""
    with Ledger.open(ledger_url, create=True) as led:
        led.append_many(NewEntry("stop", body("stop", n=i), workflow="w") for i in range(8))
        with guards_off(ledger_url) as c:
            c.execute(text("UPDATE ledger_entries SET hash = 'abc' WHERE seq = 3"))
        with pytest.raises(LedgerUnavailable, match="entry 3"):
            led.prove(3)
        code, out, err = run_ledger_cli("prove", "3", "--ledger", ledger_url)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "entry 3" in err, (out, err)
        assert run_ledger_cli("verify", "--ledger", ledger_url)[1].startswith("FAILED at seq 3:")
    with Ledger.open(ledger_url) as led:
        with guards_off(ledger_url) as c:
            c.execute(text("UPDATE ledger_entries SET hash = :h WHERE seq = 3"), {"h": "0" * 64})
            c.execute(text("UPDATE ledger_nodes SET hash = 'zz' WHERE leaf = 3 AND level = 1"))
        for call in (lambda: led.prove(0, size=8), lambda: led.prove_consistency(2, 8)):
            with pytest.raises(LedgerUnavailable, match=r"Merkle node \(1, 1\)"):
                call()
        code, out, err = run_ledger_cli("prove", "--consistency", "2", "--ledger", ledger_url)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, (out, err)
        assert "internal error" not in err
