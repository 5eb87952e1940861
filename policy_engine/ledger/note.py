"""Signed checkpoints: the C2SP signed-note format with Ed25519, and key files.

A checkpoint (c2sp.org/tlog-checkpoint) is a note whose text is::

    <origin>
    <tree size, decimal>
    <root hash, base64>

followed by a blank line and one signature line per signer (c2sp.org/signed-note)::

    — <key name> <base64(4-byte key id || 64-byte Ed25519 signature)>

The key id is the first 4 bytes of ``SHA-256(name || "\\n" || 0x01 || public key)``; the
signature covers the note text (every line, with its final newline). Keys are written in
the ``golang.org/x/mod/sumdb/note`` encodings, so other tools can read them::

    PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || 32-byte seed)>     (the key file, mode 0600)
    <name>+<hex key id>+<base64(0x01 || 32-byte public key)>           (the .pub file)

A checkpoint is only as trustworthy as the public key it is checked with: keep the
``.pub`` (and the checkpoints) outside the database.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from .errors import CheckpointError, KeyFileError

__all__ = ["SigningKey", "VerifierKey", "Checkpoint", "generate_key", "load_signing_key", "load_verifier_key",
           "sign_checkpoint", "open_checkpoint", "MAX_NOTE_BYTES"]

ALG_ED25519 = 0x01
MAX_NOTE_BYTES = 1 << 20
_NAME = re.compile(r"[^\s+—]{1,128}")  # no whitespace, no plus, no em dash
_SIG_PREFIX = "\u2014 "


def _b64decode(text: str, what: str, exc: type[Exception]) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise exc(f"{what} is not valid base64") from None


def key_id(name: str, public: bytes) -> bytes:
    """The 4-byte C2SP key id of an Ed25519 key."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public).digest()[:4]


@dataclass(frozen=True)
class VerifierKey:
    """A named Ed25519 public key (``name+hexid+base64``)."""

    name: str
    public: bytes

    @property
    def id(self) -> bytes:
        return key_id(self.name, self.public)

    def encode(self) -> str:
        return f"{self.name}+{self.id.hex()}+{base64.b64encode(bytes([ALG_ED25519]) + self.public).decode()}"

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        parts = text.strip().split("+", 2)
        if len(parts) != 3 or not _NAME.fullmatch(parts[0]) or not re.fullmatch(r"[0-9a-f]{8}", parts[1]):
            raise KeyFileError("not a verifier key (expected `name+hexid+base64`)")
        raw = _b64decode(parts[2], "the verifier key", KeyFileError)
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise KeyFileError("the verifier key is not an Ed25519 key")
        k = cls(parts[0], raw[1:])
        if k.id.hex() != parts[1]:
            raise KeyFileError("the verifier key's id does not match its name and key")
        return k

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, message)
            return True
        except (InvalidSignature, ValueError):
            return False


@dataclass(frozen=True)
class SigningKey:
    """A named Ed25519 private key (``PRIVATE+KEY+name+hexid+base64``)."""

    name: str
    seed: bytes

    @property
    def verifier(self) -> VerifierKey:
        pk = Ed25519PrivateKey.from_private_bytes(self.seed).public_key()
        return VerifierKey(self.name, pk.public_bytes(Encoding.Raw, PublicFormat.Raw))

    def encode(self) -> str:
        return (f"PRIVATE+KEY+{self.name}+{self.verifier.id.hex()}+"
                f"{base64.b64encode(bytes([ALG_ED25519]) + self.seed).decode()}")

    @classmethod
    def parse(cls, text: str) -> SigningKey:
        parts = text.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"] or not _NAME.fullmatch(parts[2]):
            raise KeyFileError("not a signing key (expected `PRIVATE+KEY+name+hexid+base64`)")
        raw = _b64decode(parts[4], "the signing key", KeyFileError)
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise KeyFileError("the signing key is not an Ed25519 key")
        k = cls(parts[2], raw[1:])
        if k.verifier.id.hex() != parts[3]:
            raise KeyFileError("the signing key's id does not match its name and key")
        return k

    def sign(self, message: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.seed).sign(message)


def generate_key(name: str) -> SigningKey:
    """A fresh Ed25519 signing key named ``name`` (no spaces or plus signs)."""
    if not _NAME.fullmatch(name):
        raise KeyFileError(f"`{name}` is not a key name (1-128 characters, no spaces, `+` or `—`)")
    seed = Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return SigningKey(name, seed)


def write_key(key: SigningKey, path: str | os.PathLike[str]) -> Path:
    """Write the signing key (mode 0600, refusing to overwrite) and ``<path>.pub``; returns the .pub path."""
    p = Path(path)
    pub = p.with_name(p.name + ".pub")
    if pub.is_dir():
        raise KeyFileError(f"cannot write {pub}: it is a directory")
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{p} exists; refusing to overwrite a key") from None
    except OSError as e:
        raise KeyFileError(f"cannot write {p}: {e.strerror or e}") from None
    failed = p
    try:
        with os.fdopen(fd, "w") as f:
            f.write(key.encode() + "\n")
        failed = pub
        pub.write_text(key.verifier.encode() + "\n")
    except OSError as e:  # no half-made key pair: the signing key is only useful with its .pub
        p.unlink(missing_ok=True)
        raise KeyFileError(f"cannot write {failed}: {e.strerror or e}") from None
    return pub


def _read_key_text(path: str | os.PathLike[str]) -> str:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise KeyFileError(f"cannot read key file {path}: {e.strerror or e}") from None
    if len(data) > 4096:
        raise KeyFileError(f"{path} is not a key file (too large)")
    try:
        return data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise KeyFileError(f"{path} is not a key file (not ASCII)") from None


def load_signing_key(path: str | os.PathLike[str]) -> SigningKey:
    """Read a signing key file written by ``stopline ledger keygen``."""
    try:
        return SigningKey.parse(_read_key_text(path))
    except KeyFileError as e:
        raise KeyFileError(f"{path}: {e}" if not str(e).startswith(str(path)) else str(e)) from None


def load_verifier_key(path: str | os.PathLike[str]) -> VerifierKey:
    """Read a verifier key: a ``.pub`` file, or a signing key file (its public half)."""
    text = _read_key_text(path)
    try:
        if text.startswith("PRIVATE+KEY+"):
            return SigningKey.parse(text).verifier
        return VerifierKey.parse(text)
    except KeyFileError as e:
        raise KeyFileError(f"{path}: {e}") from None


@dataclass(frozen=True)
class Checkpoint:
    """A verified tree head: the log ``origin`` had ``size`` entries with Merkle ``root``."""

    origin: str
    size: int
    root: bytes
    note: str  # the whole signed note, as written

    def to_json(self) -> dict:
        return {"origin": self.origin, "size": self.size, "root": self.root.hex(), "note": self.note}


def sign_checkpoint(key: SigningKey, origin: str, size: int, root: bytes) -> str:
    """The signed note text of a checkpoint."""
    if not origin or "\n" in origin or origin != origin.strip():
        raise CheckpointError("a checkpoint origin is one non-empty line")
    text = f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"
    sig = key.sign(text.encode())
    return text + "\n" + f"{_SIG_PREFIX}{key.name} {base64.b64encode(key.verifier.id + sig).decode()}\n"


def open_checkpoint(
    note: str | bytes, key: VerifierKey | Sequence[VerifierKey], *, origin: str | None = None
) -> Checkpoint:
    """Parse a signed checkpoint and check its signature by ``key``; raises :class:`CheckpointError`.

    Strict: UTF-8 text, no carriage returns, the three checkpoint lines (extension lines are
    refused), a blank line, signature lines only, at least one by ``key`` that verifies.
    ``key`` may be several keys (the keys of a log whose signing key was replaced): the note
    must carry a signature by one of them, and every signature it carries by any of them
    must verify.
    """
    keys = (key,) if isinstance(key, VerifierKey) else tuple(key)
    if not all(isinstance(k, VerifierKey) for k in keys):  # (a str is a sequence too: of characters)
        raise TypeError("`key` is a VerifierKey or a sequence of them (load_verifier_key(PATH))")
    if not keys:
        raise CheckpointError("a checkpoint is checked against a public key: none was given")
    if isinstance(note, bytes):
        if len(note) > MAX_NOTE_BYTES:
            raise CheckpointError("not a checkpoint (too large)")
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError("not a checkpoint (not UTF-8)") from None
    if note.startswith("\ufeff"):  # (a byte-order mark some editors write: not part of the signed text)
        note = note[1:]
    if "\r" in note:
        raise CheckpointError("not a signed note: its lines end in CR LF (a note's lines end in LF alone: was the "
                              "file converted to Windows line ends?)")
    if not note.endswith("\n") or "\n\n" not in note:
        raise CheckpointError("not a signed note (expected text, a blank line, then signature lines)")
    text, _, sigs = note.rpartition("\n\n")
    text += "\n"
    lines = text.split("\n")[:-1]
    if len(lines) != 3:
        raise CheckpointError("not a checkpoint (expected exactly origin, size and root lines)")
    org, size_s, root_s = lines
    if not re.fullmatch(r"0|[1-9][0-9]{0,18}", size_s):
        raise CheckpointError("the checkpoint size is not a decimal number")
    root = _b64decode(root_s, "the checkpoint root", CheckpointError)
    if len(root) != 32 or base64.b64encode(root).decode() != root_s:
        raise CheckpointError("the checkpoint root is not a base64 SHA-256")
    if origin is not None and org != origin:
        raise CheckpointError(f"the checkpoint is for the log `{org}`, not `{origin}`")
    found = False
    for line in sigs[:-1].split("\n"):
        m = re.fullmatch(r"\u2014 (\S+) ([A-Za-z0-9+/=]+)", line)
        if not m:
            raise CheckpointError("the checkpoint has a malformed signature line")
        raw = _b64decode(m.group(2), "a checkpoint signature", CheckpointError)
        for k in keys:
            if m.group(1) == k.name and raw[:4] == k.id:
                if len(raw) != 68 or not k.verify(text.encode(), raw[4:]):
                    raise CheckpointError(f"the checkpoint's signature by `{k.name}` does not verify")
                found = True
    if not found:
        names = ", ".join(f"`{k.name}`" for k in keys)
        raise CheckpointError(f"the checkpoint is not signed by the key {names}" if len(keys) == 1
                              else f"the checkpoint is not signed by any of the keys {names}")
    return Checkpoint(org, int(size_s), root, note)
