"""The ledger: Stopline's append-only, verifiable system of record.

    from policy_engine.ledger import Ledger
    led = Ledger.open("sqlite:///stopline.db", create=True)   # or postgresql+psycopg://...
    e = led.append("decision", {"action": ..., "decision": ..., "policy_hash": ...})
    led.get(e.id); led.entries(kind="decision"); led.history(e.id)
    led.prove(e.id).verify(); led.verify().ok

Modules: ``errors`` (depends on nothing), ``canonical`` (RFC 8785), ``merkle`` (RFC 6962
trees and proofs), ``note`` (C2SP signed notes, Ed25519 keys), ``kinds`` (the entry
kinds), ``schema`` (tables, migrations, guard triggers), ``verify``, ``store`` (the
``Ledger``), ``cli`` (``stopline ledger ...``). Nothing here imports the engine.
Names are imported lazily, so ``stopline`` starts without loading SQLAlchemy.
See docs/ledger.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    CheckpointError,
    EntryNotFound,
    IdempotencyConflict,
    InvalidEntry,
    InvalidQuery,
    KeyFileError,
    LedgerError,
    LedgerNotFound,
    LedgerUnavailable,
    ProofError,
    SchemaError,
    StateChanged,
)

if TYPE_CHECKING:  # pragma: no cover  (re-exports for type checkers: `X as X`)
    from .kinds import KINDS as KINDS
    from .merkle import ConsistencyProof as ConsistencyProof
    from .merkle import InclusionProof as InclusionProof
    from .note import Checkpoint as Checkpoint
    from .note import SigningKey as SigningKey
    from .note import VerifierKey as VerifierKey
    from .note import generate_key as generate_key
    from .note import load_signing_key as load_signing_key
    from .note import load_verifier_key as load_verifier_key
    from .store import Entry as Entry
    from .store import History as History
    from .store import Ledger as Ledger
    from .store import NewEntry as NewEntry
    from .verify import VerifyReport as VerifyReport

_LAZY = {
    "Ledger": "store", "Entry": "store", "NewEntry": "store", "History": "store", "VerifyReport": "verify",
    "KINDS": "kinds", "InclusionProof": "merkle", "ConsistencyProof": "merkle", "Checkpoint": "note",
    "SigningKey": "note", "VerifierKey": "note", "generate_key": "note", "load_signing_key": "note",
    "load_verifier_key": "note",
}

__all__ = [
    *_LAZY, "LedgerError", "LedgerUnavailable", "LedgerNotFound", "SchemaError", "InvalidEntry", "IdempotencyConflict",
    "EntryNotFound", "InvalidQuery", "ProofError", "CheckpointError", "KeyFileError", "StateChanged",
]


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'policy_engine.ledger' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{mod}", __name__), name)
