"""Errors of the ledger. Depends on nothing else in the package.

Every message is one line (no newline), lowercase, names in backticks, so the CLI can
print it as ``error: <message>`` and exit 2 (or 1 for a failed verification).
"""

from __future__ import annotations

__all__ = [
    "LedgerError", "LedgerUnavailable", "LedgerNotFound", "SchemaError", "InvalidEntry",
    "IdempotencyConflict", "EntryNotFound", "InvalidQuery", "ProofError", "CheckpointError", "KeyFileError",
    "StateChanged",
]


class LedgerError(Exception):
    """Base class: anything the ledger refuses or cannot do. ``str(e)`` is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))

    @property
    def message(self) -> str:
        return self.args[0]


class LedgerUnavailable(LedgerError):
    """The ledger cannot be read: a wrong URL, an unreachable server, a corrupt file."""


class LedgerNotFound(LedgerUnavailable):
    """There is no ledger at that URL (and ``create`` was not asked for)."""


class SchemaError(LedgerUnavailable):
    """The database holds a schema this version cannot use (newer, or not a ledger)."""


class InvalidEntry(LedgerError, ValueError):
    """An append was refused: unknown kind, missing body key, not canonical JSON, bad link."""


class IdempotencyConflict(LedgerError):
    """An append reused an idempotency key with a different kind, body, workflow or links."""


class StateChanged(LedgerError):
    """A fenced append (``append_many(..., fence=(workflow, seq))``) found a ``stop`` or
    ``resume`` of the workflow at or after ``seq``: nothing was written; read the state again."""


class EntryNotFound(LedgerError, LookupError):
    """No entry has that id or sequence number."""


class InvalidQuery(LedgerError, ValueError):
    """A read was given an argument it cannot use (a ``since``/``until`` that is not an RFC 3339 time)."""


class ProofError(LedgerError):
    """A proof is malformed or does not verify."""


class CheckpointError(LedgerError):
    """A checkpoint (signed note) is malformed, unsigned by the given key, or for another log."""


class KeyFileError(LedgerError):
    """A key file is missing, unreadable or not a Stopline/C2SP Ed25519 key."""
