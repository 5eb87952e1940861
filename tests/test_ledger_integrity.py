"""The mutation suite: every kind of tampering is found, and `verify` names the first bad
sequence number. Tampering needs the guard triggers out of the way (test-only)."""

from __future__ import annotations

import pytest
from ledger_fixtures import body, guards_off, ledger_url  # noqa: F401  (fixture)
from sqlalchemy import text

from policy_engine.ledger import Ledger, generate_key
from policy_engine.ledger.canonical import leaf_data
from policy_engine.ledger.errors import CheckpointError
from policy_engine.ledger.merkle import CompactRange, leaf_hash

KEY = generate_key("test-log")


@pytest.fixture
def built(ledger_url):
    """30 entries (links only among the first five), a checkpoint entry at seq 20."""
    with Ledger.open(ledger_url, create=True) as led:
        d = led.append("decision", body("decision"), workflow="w")
        led.append("approval", body("approval"), links=[d.id])
        x = led.append("execution", body("execution"), links=[d.id])
        led.append("rollback", body("rollback"), links=[x.id])
        while led.size < 20:
            led.append("stop", body("stop", n=led.size), workflow="w")
        led.checkpoint(KEY)
        while led.size < 30:
            led.append("stop", body("stop", n=led.size), workflow="w")
        assert led.verify(key=KEY.verifier).ok
        yield led


def _truncate(c, keep: int) -> None:
    """Cut the tail at `keep` entries and make the head row agree (a careful attacker)."""
    c.execute(text("DELETE FROM ledger_entries WHERE seq >= :k"), {"k": keep})
    c.execute(text("DELETE FROM ledger_links WHERE from_seq >= :k"), {"k": keep})
    c.execute(text("DELETE FROM ledger_nodes WHERE leaf >= :k"), {"k": keep})
    hashes = [r[0] for r in c.execute(text("SELECT hash FROM ledger_entries ORDER BY seq"))]
    cr = CompactRange()
    for h in hashes:
        cr.append(bytes.fromhex(h))
    c.execute(text("UPDATE ledger_heads SET size = :n, head = :h, frontier = :f"),
              {"n": keep, "h": hashes[-1], "f": cr.encode()})


def _report(led, **kw):
    r = led.verify(**kw)
    assert not r.ok and not r and r.problem and "\n" not in r.problem
    return r


def test_a_changed_byte(built, ledger_url):
    with guards_off(ledger_url) as c:
        c.execute(text("UPDATE ledger_entries SET body = REPLACE(body, '\"t\"', '\"u\"') WHERE seq = 7"))
    r = _report(built)
    assert r.first_bad == 7 and "does not match its hash" in r.problem


def test_a_changed_time_or_link_row(built, ledger_url):
    with guards_off(ledger_url) as c:
        c.execute(text("UPDATE ledger_entries SET time = '2020-01-01T00:00:00.000000Z' WHERE seq = 12"))
    assert _report(built).first_bad == 12


def test_a_changed_link_row(built, ledger_url):
    with guards_off(ledger_url) as c:
        c.execute(text("UPDATE ledger_links SET to_seq = 1 WHERE from_seq = 3"))
    r = _report(built)
    assert r.first_bad == 3 and "link rows" in r.problem


def test_a_deleted_entry(built, ledger_url):
    with guards_off(ledger_url) as c:
        c.execute(text("DELETE FROM ledger_entries WHERE seq = 9"))
    r = _report(built)
    assert r.first_bad == 9 and "missing" in r.problem


def test_reordered_entries(built, ledger_url):
    with guards_off(ledger_url) as c:
        c.execute(text("UPDATE ledger_entries SET seq = -1 WHERE seq = 11"))
        c.execute(text("UPDATE ledger_entries SET seq = 11 WHERE seq = 12"))
        c.execute(text("UPDATE ledger_entries SET seq = 12 WHERE seq = -1"))
    assert _report(built).first_bad == 11


def test_an_inserted_entry_with_a_correct_hash(built, ledger_url):
    prev = built.get(14)
    with guards_off(ledger_url) as c:
        for s in range(29, 14, -1):
            c.execute(text("UPDATE ledger_entries SET seq = seq + 1 WHERE seq = :s"), {"s": s})
        fields = dict(seq=15, id="forged", kind="stop", workflow="w", links=(), key=None,
                      time="2026-01-01T00:00:00.000000Z", prev=prev.hash)
        h = leaf_hash(leaf_data('{"trigger":"t"}', **fields)).hex()
        c.execute(text("INSERT INTO ledger_entries (seq, id, kind, workflow, key, links, body, time, prev, hash) "
                       "VALUES (15, 'forged', 'stop', 'w', NULL, '[]', '{\"trigger\":\"t\"}', :t, :p, :h)"),
                  {"t": fields["time"], "p": prev.hash, "h": h})
    r = _report(built)
    assert r.first_bad == 15


def test_a_truncated_tail_is_found_against_an_earlier_checkpoint(built, ledger_url, tmp_path):
    cp, _ = built.checkpoint(KEY, path=tmp_path / "cp.note")  # size 30
    assert cp.size == 30 and (tmp_path / "cp.note").read_text() == cp.note
    with guards_off(ledger_url) as c:
        _truncate(c, 25)
    assert built.verify().ok  # internally consistent: only the checkpoint can tell
    r = _report(built, checkpoint=(tmp_path / "cp.note").read_text(), key=KEY.verifier)
    assert r.first_bad == 25 and "truncated" in r.problem


def test_a_fork_is_found_against_an_earlier_checkpoint(built, ledger_url):
    cp, _ = built.checkpoint(KEY)  # size 30; the ledger's own checkpoint entry at seq 20 signs size 20
    with guards_off(ledger_url) as c:
        _truncate(c, 21)
    for i in range(15):  # a different history, longer than the checkpoint
        built.append("stop", body("stop", forked=i), workflow="w")
    assert built.verify(key=KEY.verifier).ok
    r = _report(built, checkpoint=cp.note, key=KEY.verifier)
    assert r.first_bad == 20 and r.problem.startswith("fork:")


def test_a_tail_cut_without_fixing_the_head_is_found_without_a_checkpoint(built, ledger_url):
    with guards_off(ledger_url) as c:
        c.execute(text("DELETE FROM ledger_entries WHERE seq >= 27"))
    r = _report(built)
    assert r.first_bad in (27,)


def test_a_checkpoint_entry_signed_by_another_key_is_refused(built):
    other = generate_key("test-log")  # same name, another key
    r = built.verify(key=other.verifier)
    assert not r.ok and r.first_bad == 20 and "checkpoint entry 20" in r.problem


def test_a_checkpoint_needs_a_key_and_the_right_log(built):
    cp, _ = built.checkpoint(KEY)
    with pytest.raises(CheckpointError, match="public key"):
        built.verify(checkpoint=cp.note)
    with pytest.raises(CheckpointError):
        built.verify(checkpoint=cp.note.replace(built.origin, "other/log"), key=KEY.verifier)
    r = built.verify(checkpoint=cp.note, key=KEY.verifier)
    assert r.ok and r.against == 30 and r.checkpoints == 2


def test_proofs_from_the_store_verify_and_match_the_checkpoint(built):
    cp, _ = built.checkpoint(KEY)
    for seq in (0, 7, 20, 29):
        p = built.prove(seq, size=30)
        assert p.verify() and p.root == cp.root and p.leaf.hex() == built.get(seq).hash
    c = built.prove_consistency(21, 30)
    assert c.verify() and c.new_root == cp.root and c.old_root == built.root(21)
