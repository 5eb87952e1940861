"""RFC 6962 / RFC 9162 Merkle tree hashing, proofs and their verification.

Leaves are hashed ``SHA-256(0x00 || data)`` and interior nodes ``SHA-256(0x01 || left ||
right)``; the tree over ``n`` leaves splits at the largest power of two below ``n``
(RFC 6962 §2.1). Node ``(level, index)`` is the hash of the complete subtree over leaves
``[index * 2**level, (index + 1) * 2**level)``; level 0 is a leaf hash. Every range the
RFC's recursion visits is aligned, so any root or proof is built from stored complete
subtrees: ``O(log n)`` nodes for a root, ``O(log² n)`` lookups for a proof.

The proof builders take a :class:`NodeSource` (the store reads nodes from its table,
:class:`ListSource` computes them from a list of leaf hashes). The verifiers are pure
functions that follow RFC 9162 §2.1.3.2 and §2.1.4.2 step by step and return ``False``
for any proof that does not hold (a flipped bit, a wrong index, size or root, a path too
long or too short).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import ProofError

__all__ = [
    "leaf_hash", "node_hash", "EMPTY_ROOT", "NodeSource", "ListSource", "CompactRange", "root",
    "inclusion_path", "consistency_path", "verify_inclusion", "verify_consistency",
    "InclusionProof", "ConsistencyProof", "MAX_PATH",
]

MAX_PATH = 64  # a path longer than this cannot belong to a tree of < 2**63 leaves
EMPTY_ROOT = hashlib.sha256(b"").digest()
_sha = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: ``SHA-256(0x00 || data)``."""
    return _sha(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: ``SHA-256(0x01 || left || right)``."""
    return _sha(b"\x01" + left + right).digest()


class NodeSource(Protocol):
    """Where complete-subtree hashes come from."""

    def node(self, level: int, index: int) -> bytes:  # pragma: no cover - protocol
        """The hash of the complete subtree ``(level, index)``."""
        ...


class ListSource:
    """Nodes computed (and memoised) from a list of leaf hashes; for tests and small trees."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.leaves = leaves
        self._memo: dict[tuple[int, int], bytes] = {}

    def node(self, level: int, index: int) -> bytes:
        if level == 0:
            return self.leaves[index]
        k = (level, index)
        h = self._memo.get(k)
        if h is None:
            h = self._memo[k] = node_hash(self.node(level - 1, 2 * index), self.node(level - 1, 2 * index + 1))
        return h


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _mth(src: NodeSource, lo: int, hi: int) -> bytes:
    n = hi - lo
    if n == 0:
        return EMPTY_ROOT
    if n & (n - 1) == 0 and lo % n == 0:
        return src.node(n.bit_length() - 1, lo // n)
    k = _split(n)
    return node_hash(_mth(src, lo, lo + k), _mth(src, lo + k, hi))


def root(src: NodeSource, size: int) -> bytes:
    """The Merkle tree hash of the first ``size`` leaves."""
    if size < 0:
        raise ValueError("size must be >= 0")
    return _mth(src, 0, size)


def inclusion_path(src: NodeSource, index: int, size: int) -> list[bytes]:
    """RFC 6962 audit path PATH(index, D[0:size]), leaf-side first."""
    if not 0 <= index < size:
        raise ProofError(f"index {index} is not in a tree of size {size}")

    def path(m: int, lo: int, hi: int) -> list[bytes]:
        n = hi - lo
        if n == 1:
            return []
        k = _split(n)
        if m < k:
            return path(m, lo, lo + k) + [_mth(src, lo + k, hi)]
        return path(m - k, lo + k, hi) + [_mth(src, lo, lo + k)]

    return path(index, 0, size)


def consistency_path(src: NodeSource, old_size: int, new_size: int) -> list[bytes]:
    """RFC 6962 PROOF(old_size, D[0:new_size]); empty when the sizes are equal or old is 0."""
    if not 0 <= old_size <= new_size:
        raise ProofError(f"no consistency proof from size {old_size} to size {new_size}")
    if old_size == 0 or old_size == new_size:
        return []

    def sub(m: int, lo: int, hi: int, whole: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if whole else [_mth(src, lo, hi)]
        k = _split(n)
        if m <= k:
            return sub(m, lo, lo + k, whole) + [_mth(src, lo + k, hi)]
        return sub(m - k, lo + k, hi, False) + [_mth(src, lo, lo + k)]

    return sub(old_size, 0, new_size, True)


def verify_inclusion(leaf: bytes, index: int, size: int, path: Iterable[bytes], expected_root: bytes) -> bool:
    """RFC 9162 §2.1.3.2: does ``path`` prove leaf hash ``leaf`` at ``index`` in the tree ``expected_root``?"""
    path = list(path)
    if not 0 <= index < size or len(path) > MAX_PATH or any(len(p) != 32 for p in path + [leaf, expected_root]):
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected_root


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, path: Iterable[bytes]) -> bool:
    """RFC 9162 §2.1.4.2: does ``path`` prove the tree ``old_root`` (old_size) is a prefix of ``new_root``?"""
    path = list(path)
    if not 0 <= old_size <= new_size or len(path) > MAX_PATH or any(len(p) != 32 for p in path + [old_root, new_root]):
        return False
    if old_size == new_size:
        return not path and old_root == new_root
    if old_size == 0:
        return not path and old_root == EMPTY_ROOT
    if not path:
        return False
    if old_size & (old_size - 1) == 0:
        path = [old_root] + path
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0


class CompactRange:
    """The right frontier of a tree: the roots of its maximal complete subtrees, left to right.

    ``append`` adds one leaf and returns the complete subtrees it closes (``(level,
    index, hash)``, level >= 1) so a store can keep every node; ``root()`` folds the
    frontier right to left. The store keeps the frontier in the log's head row.
    """

    __slots__ = ("size", "hashes")

    def __init__(self, size: int = 0, hashes: list[bytes] | None = None) -> None:
        self.size = size
        self.hashes = list(hashes or [])
        if len(self.hashes) != bin(size).count("1"):
            raise ValueError("a compact range of size n holds popcount(n) hashes")

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        closed: list[tuple[int, int, bytes]] = []
        h, i, level = leaf, self.size, 0
        while i & 1:
            h = node_hash(self.hashes.pop(), h)
            i >>= 1
            level += 1
            closed.append((level, i, h))
        self.hashes.append(h)
        self.size += 1
        return closed

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        r = self.hashes[-1]
        for h in reversed(self.hashes[:-1]):
            r = node_hash(h, r)
        return r

    def copy(self) -> CompactRange:
        return CompactRange(self.size, self.hashes)

    def encode(self) -> str:
        return "".join(h.hex() for h in self.hashes)

    @classmethod
    def decode(cls, size: int, text: str) -> CompactRange:
        return cls(size, [bytes.fromhex(text[i:i + 64]) for i in range(0, len(text), 64)])


# ----------------------------------------------------------------------------- proof objects
_HEX = re.compile(r"[0-9a-f]{64}")


def _hx(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        raise ProofError(f"`{what}` is not a 64-digit lowercase hex SHA-256")
    return bytes.fromhex(value)


def _int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProofError(f"`{what}` is not a non-negative integer")
    return value


def _once(pairs: list[tuple[str, Any]]) -> dict:
    # a key given twice (`"index": 3, "index": 5`) is not a strict parse: `json` keeps the last
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ProofError("not a strict proof: a key appears twice in one object")
    return out


def _obj(text: str | bytes | dict, kind: str, keys: set[str]) -> dict:
    if isinstance(text, (str, bytes)):
        try:
            text = json.loads(text, object_pairs_hook=_once)
        except ValueError as e:
            raise ProofError(f"not a JSON {kind} proof: {e}") from None
        except RecursionError:
            raise ProofError(f"not a JSON {kind} proof: it nests too deeply") from None
    if not isinstance(text, dict) or text.get("type") != kind or set(text) != keys:
        raise ProofError(f"not a {kind} proof (expected exactly the keys {', '.join(sorted(keys))})")
    if not isinstance(text.get("path"), list) or len(text["path"]) > MAX_PATH:
        raise ProofError("`path` is not a list of at most 64 hashes")
    return text


@dataclass(frozen=True)
class InclusionProof:
    """Entry ``index`` (its leaf hash ``leaf``) is in the tree of ``size`` leaves with ``root``."""

    index: int
    size: int
    leaf: bytes
    path: tuple[bytes, ...]
    root: bytes

    def verify(self) -> bool:
        return verify_inclusion(self.leaf, self.index, self.size, self.path, self.root)

    def to_json(self) -> dict[str, Any]:
        return {"type": "inclusion", "index": self.index, "size": self.size, "leaf": self.leaf.hex(),
                "path": [p.hex() for p in self.path], "root": self.root.hex()}

    @classmethod
    def from_json(cls, data: str | bytes | dict) -> InclusionProof:
        """Parse strictly (exact keys, hex hashes, no trailing text); raises :class:`ProofError`."""
        o = _obj(data, "inclusion", {"type", "index", "size", "leaf", "path", "root"})
        return cls(_int(o["index"], "index"), _int(o["size"], "size"), _hx(o["leaf"], "leaf"),
                   tuple(_hx(p, "path") for p in o["path"]), _hx(o["root"], "root"))


@dataclass(frozen=True)
class ConsistencyProof:
    """The tree of ``old_size`` leaves (``old_root``) is a prefix of the tree of ``new_size`` (``new_root``)."""

    old_size: int
    new_size: int
    old_root: bytes
    new_root: bytes
    path: tuple[bytes, ...]

    def verify(self) -> bool:
        return verify_consistency(self.old_size, self.new_size, self.old_root, self.new_root, self.path)

    def to_json(self) -> dict[str, Any]:
        return {"type": "consistency", "old_size": self.old_size, "new_size": self.new_size,
                "old_root": self.old_root.hex(), "new_root": self.new_root.hex(), "path": [p.hex() for p in self.path]}

    @classmethod
    def from_json(cls, data: str | bytes | dict) -> ConsistencyProof:
        """Parse strictly (exact keys, hex hashes, no trailing text); raises :class:`ProofError`."""
        o = _obj(data, "consistency", {"type", "old_size", "new_size", "old_root", "new_root", "path"})
        return cls(_int(o["old_size"], "old_size"), _int(o["new_size"], "new_size"), _hx(o["old_root"], "old_root"),
                   _hx(o["new_root"], "new_root"), tuple(_hx(p, "path") for p in o["path"]))


class RecordingSource:
    """A source that records which nodes a computation needs (returning placeholders)."""

    def __init__(self) -> None:
        self.wanted: set[tuple[int, int]] = set()

    def node(self, level: int, index: int) -> bytes:
        self.wanted.add((level, index))
        return b"\x00" * 32


def prefetch(
    compute: Callable[[NodeSource], Any], fetch: Callable[[set[tuple[int, int]]], dict[tuple[int, int], bytes]]
) -> Any:
    """Run ``compute`` twice: once to learn the nodes it reads, then on those nodes fetched at once."""
    rec = RecordingSource()
    compute(rec)
    nodes = fetch(rec.wanted)

    class _Fetched:
        def node(self, level: int, index: int) -> bytes:
            return nodes[(level, index)]

    return compute(_Fetched())
