"""Capture the miss: a recorded gate decision becomes a case of a fixture suite
(``stopline ledger export-case``), with the recorded action, ``now`` and workflow state,
expecting the effect it *should* have had, so it fails until the policy changes.

The case is written as YAML text inserted at the end of the suite's ``cases:`` block: the
rest of the file (comments, layout, key order, quoting) stays byte for byte, which a
load-and-dump round trip through PyYAML cannot promise and which needs no new dependency
(ruamel.yaml). The result is read back as a suite before it is kept; if it does not load
with the new case, the file is left as it was.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

__all__ = ["export_case", "ExportError", "EFFECTS"]

EFFECTS = ("allow", "require_approval", "deny", "stop")
_TOP_KEY = re.compile(r"^[^\s#\-][^:]*:")


class ExportError(ValueError):
    """The case cannot be written (one line for the CLI)."""


def _case_for(led: Any, decision_id: str, expect: str, name: str | None) -> tuple[dict, str]:
    from .ledger import EntryNotFound
    from .replay import rule_of
    from .replay_state import _state_at, _timeline
    from .runtime.recorded import recorded_action

    try:
        e = led.get(decision_id)
    except EntryNotFound:
        raise ExportError(f"no entry `{decision_id}` in the ledger") from None
    if e.kind != "decision":
        raise ExportError(f"entry `{decision_id}` is a `{e.kind}`, not a `decision`")
    b = e.body
    if not isinstance(b.get("action"), dict) or b.get("action_error"):
        raise ExportError(f"decision `{decision_id}` recorded no action as JSON ({b.get('action_error') or 'text'})")
    old = b.get("decision")
    old = old if isinstance(old, dict) else {}  # (another recorder's entry: its verdict is unknown, `None`)
    try:  # as the gate evaluated it: its integral floats as floats (YAML writes `7.0`, which loads as one)
        act = recorded_action(b)
    except ValueError as err:
        raise ExportError(f"decision `{decision_id}`: the recorded action cannot be read: {err}") from None
    case: dict[str, Any] = {"name": name or f"ledger {e.id}: {act.get('type', 'action')} should be {expect}",
                            "now": b.get("now") or e.time, "gate": {"action": act}}
    state = _state_at(_timeline(led, None), e.workflow, e.seq)
    # always the state it was decided in: running is written as null, or the case would take the
    # suite's `workflow_state` (a stopped one would decide it as stopped); a stopped one whole, as the
    # gate passed it (`name` too: a rule may read `workflow.name`, and without it the case decides otherwise)
    case["gate"]["workflow_state"] = None if state is None else dict(state)
    case["expect"] = {"effect": expect}
    note = (f"exported from ledger decision {e.id} (seq {e.seq}): recorded `{old.get('effect')}` by "
            f"`{rule_of(old.get('deciding'))}` under policy {str(b.get('policy_hash'))[:19]}; expected `{expect}`")
    return case, note


def _render(case: dict, indent: str, note: str) -> str:
    # the note is one comment line: recorded text (an effect, a rule, a policy hash another recorder
    # wrote) with a line break would end the comment and write YAML into the suite
    note = " ".join("".join(ch if ch.isprintable() else " " for ch in note).split())
    body = yaml.safe_dump(case, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100)
    lines = body.rstrip("\n").split("\n")
    out = [f"{indent}# {note}", f"{indent}- {lines[0]}"] + [f"{indent}  {ln}" for ln in lines[1:]]
    return "\n".join(out) + "\n"


def _insert(text: str, case: dict, note: str) -> str:
    lines = text.split("\n")
    starts = [i for i, ln in enumerate(lines) if re.match(r"^cases\s*:", ln)]
    if not starts:
        return text.rstrip("\n") + "\n\ncases:\n" + _render(case, "  ", note)
    i = starts[0]
    rest = lines[i].split(":", 1)[1].split("#", 1)[0].strip()
    if rest == "[]":  # an empty list (a suite started by hand): the case becomes its first item
        head, _, tail = lines[i].partition("[]")
        lines[i] = head.rstrip() + ("  " + tail.strip() if tail.strip() else "")
        rest = ""
    if rest:
        raise ExportError("the suite's `cases:` is written inline (flow style); write it as a block list to "
                          "append to it")
    end = len(lines)
    for j in range(i + 1, len(lines)):
        if _TOP_KEY.match(lines[j]):
            end = j
            break
    k = end  # back over blank lines and the comments that open the next key
    while k > i + 1 and (not lines[k - 1].strip() or (lines[k - 1].lstrip().startswith("#")
                                                       and not lines[k - 1].startswith(" "))):
        k -= 1
    indent = "  "
    for j in range(i + 1, k):
        m = re.match(r"^(\s*)- ", lines[j])
        if m:
            indent = m.group(1)
            break
    block = _render(case, indent, note).rstrip("\n").split("\n")
    new = lines[:k] + block + lines[k:]
    return "\n".join(new)


def _names(text: str) -> set[str]:
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ExportError(f"the suite is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise ExportError("the suite is not a mapping")
    cases = doc.get("cases") or []
    if not isinstance(cases, list):
        return set()
    return {c["name"] for c in cases if isinstance(c, dict) and isinstance(c.get("name"), str)}


def export_case(ledger: Any, decision_id: str, expect: str, suite: str | os.PathLike, *,
                name: str | None = None, policies: str | None = None) -> dict:
    """Append the case for ``decision_id`` to ``suite`` (created when missing, its
    ``policies:`` the given path relative to the suite). Returns what was written."""
    from .ledger import Ledger

    if expect not in EFFECTS:
        raise ExportError(f"`--expect` is one of {', '.join(EFFECTS)}, not {expect!r}")
    owns = not isinstance(ledger, Ledger)
    led = Ledger.open(ledger) if owns else ledger
    try:
        case, note = _case_for(led, decision_id, expect, name)
    finally:
        if owns:
            led.close()
    path = Path(suite)
    created = not path.exists()
    if created:
        title = path.name.split(".")[0]
        head = ["# captured misses: cases exported from the ledger (stopline ledger export-case)",
                f"suite: {yaml.safe_dump(title, default_style=None).strip().removesuffix('...').strip()}"]
        if policies is not None:
            rel = os.path.relpath(os.path.abspath(policies), os.path.abspath(path.parent))
            head.append(f"policies: [{yaml.safe_dump(rel).strip().removesuffix('...').strip()}]")
        original = "\n".join(head) + "\n"
    else:
        try:  # (newline="": as it is, CRLF line endings too; read translated, every line was rewritten)
            with path.open(encoding="utf-8", newline="") as fh:
                original = fh.read()
        except (OSError, UnicodeDecodeError) as e:
            raise ExportError(f"cannot read suite {path}: {getattr(e, 'strerror', None) or e}") from None
    crlf = "\r\n" in original and "\n" not in original.replace("\r\n", "")  # (mixed: left as they are)
    taken = _names(original) if not created else set()
    base, n = case["name"], 2
    while case["name"] in taken:
        case["name"] = f"{base} ({n})"
        n += 1
    text = _insert(original.replace("\r\n", "\n") if crlf else original, case, note)
    if crlf:  # the case's lines end as the file's do
        text = text.replace("\n", "\r\n")
    if case["name"] not in _names(text):
        raise ExportError("the case could not be placed in the suite's `cases:` list")
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, text)
    problems = _check(path)
    if problems:
        if created:
            path.unlink()
        else:
            _write(path, original)
        raise ExportError(f"the suite does not load with the case (left as it was): {problems}")
    return {"suite": str(path), "created": created, "case": case, "decision_id": decision_id}


def _write(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:  # (no translation: the text's own line endings)
        fh.write(text)


def _check(path: Path) -> str:
    """Errors of the suite as the test runner reads it ("" when it loads)."""
    try:
        from .testing import load_suite
    except ImportError:  # pragma: no cover - the runner moved: YAML was checked above
        return ""
    s = load_suite(path)
    errs = [d for d in s.diagnostics if d.severity == "error"]
    return "; ".join(f"{d.code} {d.message}" for d in errs[:3])
