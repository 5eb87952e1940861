"""RFC 6962 trees and proofs against pymerkle (a test-only dependency), broken proofs
refused, and the C2SP checkpoint format."""

from __future__ import annotations

import json
import random

import pytest
from pymerkle import InmemoryTree
from pymerkle import verify_consistency as pm_verify_consistency

from policy_engine.ledger import merkle as m
from policy_engine.ledger.errors import CheckpointError, ProofError
from policy_engine.ledger.note import VerifierKey, generate_key, open_checkpoint, sign_checkpoint


def _trees(seed: int, count: int):
    rnd = random.Random(seed)
    for _ in range(count):
        n = rnd.randint(1, 70)
        data = [rnd.randbytes(rnd.randint(0, 40)) for _ in range(n)]
        ref = InmemoryTree(algorithm="sha256")
        for d in data:
            ref.append_entry(d)
        yield rnd, data, ref, m.ListSource([m.leaf_hash(d) for d in data])


def test_roots_inclusion_and_consistency_agree_with_pymerkle():
    for rnd, data, ref, src in _trees(1, 40):
        n = len(data)
        cr = m.CompactRange()
        for i, d in enumerate(data):
            cr.append(m.leaf_hash(d))
            assert cr.root() == ref.get_root(i + 1) == m.root(src, i + 1)
        for i in rnd.sample(range(n), min(n, 8)):
            size = rnd.randint(i + 1, n)
            path = m.inclusion_path(src, i, size)
            theirs = ref.prove_inclusion(i + 1, size).serialize()["path"]
            assert theirs[0] == m.leaf_hash(data[i]).hex() and [p.hex() for p in path] == theirs[1:]
            assert m.verify_inclusion(m.leaf_hash(data[i]), i, size, path, ref.get_root(size))
        for _ in range(8):
            new = rnd.randint(1, n)
            old = rnd.randint(1, new)
            path = m.consistency_path(src, old, new)
            assert m.verify_consistency(old, new, ref.get_root(old), ref.get_root(new), path)
            theirs = ref.prove_consistency(old, new)
            pm_verify_consistency(m.root(src, old), m.root(src, new), theirs)  # our roots, their proof
            if old < new:  # and each refuses the other's roots swapped
                assert not m.verify_consistency(old, new, ref.get_root(new), ref.get_root(old), path)


def _flip(b: bytes, bit: int) -> bytes:
    a = bytearray(b)
    a[bit // 8] ^= 1 << (bit % 8)
    return bytes(a)


def test_broken_inclusion_proofs_are_refused():
    for rnd, data, ref, src in _trees(2, 25):
        n = len(data)
        i = rnd.randrange(n)
        leaf, path, root = m.leaf_hash(data[i]), m.inclusion_path(src, i, n), ref.get_root(n)
        assert m.verify_inclusion(leaf, i, n, path, root)
        assert not m.verify_inclusion(_flip(leaf, rnd.randrange(256)), i, n, path, root)
        assert not m.verify_inclusion(leaf, i, n, path, _flip(root, rnd.randrange(256)))
        if path:
            k = rnd.randrange(len(path))
            assert not m.verify_inclusion(
                leaf, i, n, path[:k] + [_flip(path[k], rnd.randrange(256))] + path[k + 1 :], root
            )
            assert not m.verify_inclusion(leaf, i, n, path[:-1], root)
        assert not m.verify_inclusion(leaf, i, n, path + [root], root)  # garbage after
        assert not m.verify_inclusion(leaf, i, n, [root] + path, root)  # garbage before
        assert not m.verify_inclusion(leaf, n, n, path, root)
        if n > 1:  # a wrong index, or a wrong size with that size's root
            assert not m.verify_inclusion(leaf, (i + 1) % n, n, path, root) or data[i] == data[(i + 1) % n]
            if i < n - 1:
                assert not m.verify_inclusion(leaf, i, n - 1, path, m.root(src, n - 1))


def test_broken_consistency_proofs_are_refused():
    for rnd, data, ref, src in _trees(3, 25):
        n = len(data)
        if n < 3:
            continue
        old = rnd.randint(1, n - 1)
        path, r_old, r_new = m.consistency_path(src, old, n), ref.get_root(old), ref.get_root(n)
        assert m.verify_consistency(old, n, r_old, r_new, path)
        assert not m.verify_consistency(old, n, _flip(r_old, 3), r_new, path)
        assert not m.verify_consistency(old, n, r_old, _flip(r_new, 200), path)
        k = rnd.randrange(len(path))
        assert not m.verify_consistency(old, n, r_old, r_new, path[:k] + [_flip(path[k], 7)] + path[k + 1 :])
        assert not m.verify_consistency(old, n, r_old, r_new, path + [r_new])
        assert not m.verify_consistency(old, n, r_old, r_new, [r_new] + path)
        assert not m.verify_consistency(old, n, r_old, r_new, path[:-1])
        assert not m.verify_consistency(old + 1, n, m.root(src, old + 1), r_new, path)
        if old < n - 1:
            assert not m.verify_consistency(old, n - 1, r_old, m.root(src, n - 1), path)
        assert not m.verify_consistency(old, n, r_old, r_new, [])


def test_proof_json_parsing_is_strict():
    src = m.ListSource([m.leaf_hash(bytes([i])) for i in range(9)])
    p = m.InclusionProof(4, 9, src.node(0, 4), tuple(m.inclusion_path(src, 4, 9)), m.root(src, 9))
    text = json.dumps(p.to_json())
    assert m.InclusionProof.from_json(text) == p and p.verify()
    for bad in [
        "x" + text,
        text + "x",
        text.replace('"size": 9', '"size": "9"'),
        text.replace('"type": "inclusion"', '"type": "consistency"'),
        text.replace(p.root.hex(), p.root.hex().upper()),
        text[:-1] + ', "extra": 1}',
    ]:
        with pytest.raises(ProofError):
            m.InclusionProof.from_json(bad)
    c = m.ConsistencyProof(3, 9, m.root(src, 3), m.root(src, 9), tuple(m.consistency_path(src, 3, 9)))
    assert m.ConsistencyProof.from_json(json.dumps(c.to_json())) == c and c.verify()


def test_checkpoint_note_roundtrip_and_tampering():
    k = generate_key("stopline-test")
    root = m.leaf_hash(b"x")
    note = sign_checkpoint(k, "example.org/log", 12, root)
    lines = note.split("\n")
    assert (
        lines[:3] == ["example.org/log", "12", lines[2]]
        and lines[3] == ""
        and lines[4].startswith("\u2014 stopline-test ")
    )
    cp = open_checkpoint(note, k.verifier)
    assert (cp.size, cp.root, cp.origin) == (12, root, "example.org/log")
    assert VerifierKey.parse(k.verifier.encode()) == k.verifier
    for bad in [
        note.replace("\n12\n", "\n13\n"),
        note.replace("example.org", "exampl3.org"),
        note.rstrip("\n"),
        "x" + note,
        note.replace("\n", "\r\n"),
        note[:20],
    ]:
        with pytest.raises(CheckpointError):
            open_checkpoint(bad, k.verifier)
    with pytest.raises(CheckpointError, match="not signed by the key"):
        open_checkpoint(note, generate_key("other").verifier)
    with pytest.raises(CheckpointError, match="for the log"):
        open_checkpoint(note, k.verifier, origin="another/log")
