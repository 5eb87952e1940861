"""Session 23: a tool argument whose text is not the value the tool gets is never judged by
its text.

The adapters' common gate (``integrations.common``) judges arguments JSON cannot hold by
their text, which is right for a ``Path`` or a ``datetime`` (their text is the value) but
not for bytes or a set: ``b"secrets/x"`` was judged as the text ``"b'secrets/x'"``, which a
rule on ``action.path.startsWith("secrets/")`` lets through, while the tool received the
bytes and wrote under ``secrets/``. Such a call is now recorded as a deny (the Runtime's
unrecordable action), as a dict key JSON cannot hold already was. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import PurePosixPath

import pytest
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)

from policy_engine import Runtime
from policy_engine.integrations.common import ToolGate

POLICY = """\
roles [ops_lead]

workflow "files" {
  version "1"
  owners {
    business "Dev"
    technical "Platform"
  }
  default deny

  action write_file {
    system "disk"
    description "Write a file"
    irreversible

    deny secrets when `action.path.startsWith("secrets/")`
    allow files when `true`
  }
}
"""


@pytest.fixture
def gate(tmp_path, ledger_url):  # noqa: F811
    (tmp_path / "files.policy").write_text(POLICY)
    with Runtime.open(str(tmp_path / "files.policy"), ledger=ledger_url) as rt:
        yield ToolGate(rt, "files", {})


@pytest.mark.parametrize("path", [b"secrets/x", bytearray(b"secrets/x"), {"secrets/x"}, frozenset({"a"})],
                         ids=["bytes", "bytearray", "set", "frozenset"])
def test_bytes_and_sets_are_denied_never_judged_by_their_text(gate, path):
    c = gate.check("write_file", {"path": path}, "c1")
    assert c.decision.effect == "deny" and c.status == "refused"  # (before: its text passed, `allow files`)
    assert c.rule != "files"


def test_a_path_or_a_time_is_still_judged_by_its_text(gate):
    assert gate.check("write_file", {"path": PurePosixPath("secrets/x")}, "c2").decision.effect == "deny"
    c = gate.check("write_file", {"path": "docs/x", "at": datetime(2026, 11, 28, tzinfo=UTC)}, "c3")
    assert c.decision.effect == "allow" and c.action["at"] == "2026-11-28 00:00:00+00:00"
