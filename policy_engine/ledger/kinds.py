"""The entry kinds of the ledger (DESIGN.md, "Part 2 — the system of record") and the
body keys each must carry. A kind's body may carry more keys; these are the ones the
runtime, ``history`` and verification rely on. The table is the whole contract between
the ledger and what records into it: the ledger does not import the engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .errors import InvalidEntry

__all__ = ["KINDS", "STEP_STATUSES", "check_entry"]

#: kind -> (required body keys, whether the entry must name a workflow, minimum number of links)
KINDS: Mapping[str, tuple[frozenset[str], bool, int]] = MappingProxyType({
    "decision": (frozenset({"action", "decision", "policy_hash"}), False, 0),
    "approval": (frozenset({"subject", "digest", "principal", "verdict"}), False, 1),
    "execution": (frozenset({"receipt", "authorized"}), False, 0),
    "stop": (frozenset({"trigger"}), True, 0),
    "resume": (frozenset({"evidence_digest", "criteria"}), True, 1),
    "rollback": (frozenset({"plan_hash", "scenario", "requested_by", "reason"}), False, 1),
    "step": (frozenset({"record", "status"}), False, 1),
    "checkpoint": (frozenset({"origin", "size", "root", "note"}), False, 0),
    # a subject's status changed (a rollback claimed, a decision or rollback cancelled or expired)
    "transition": (frozenset({"subject", "to"}), False, 1),
    # a batch of rollbacks (an incident, a policy reversal): its rollbacks link to it
    "batch": (frozenset({"batch_hash", "scenario", "requested_by", "reason"}), False, 0),
})

STEP_STATUSES = frozenset({"started", "completed", "failed", "verified"})
APPROVAL_VERDICTS = frozenset({"approve", "deny"})


def check_entry(kind: Any, body: Any, workflow: Any, links: tuple[str, ...]) -> None:
    """Raise :class:`InvalidEntry` unless (kind, body, workflow, links) fits the table."""
    if not isinstance(kind, str) or kind not in KINDS:
        raise InvalidEntry(f"unknown entry kind `{kind}` (expected one of {', '.join(f'`{k}`' for k in KINDS)})")
    required, needs_workflow, min_links = KINDS[kind]
    if not isinstance(body, dict):
        raise InvalidEntry(f"a `{kind}` body is a JSON object, not {_json_type(body)}")
    missing = sorted(required - body.keys())
    if missing:
        raise InvalidEntry(f"a `{kind}` body needs {', '.join(f'`{k}`' for k in missing)}")
    if needs_workflow and not workflow:
        raise InvalidEntry(f"a `{kind}` entry names its workflow")
    if len(links) < min_links:
        raise InvalidEntry(f"a `{kind}` entry links to at least {min_links} entr{'y' if min_links == 1 else 'ies'}")
    if kind == "step" and body["status"] not in STEP_STATUSES:
        raise InvalidEntry(f"a step's `status` is one of {', '.join(sorted(STEP_STATUSES))}, not {body['status']!r}")
    if kind == "approval" and body["verdict"] not in APPROVAL_VERDICTS:
        raise InvalidEntry(f"an approval's `verdict` is `approve` or `deny`, not {body['verdict']!r}")


def _json_type(v: Any) -> str:
    """What ``v`` is called in JSON (``null``, ``an array``, ...), for a message."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, (list, tuple)):
        return "an array"
    return type(v).__name__
