"""Session 27 audit of `fields from "FILE"` (a JSON Schema imported into a declaration): the
file was read whole whatever it was. A FIFO named there blocked `stopline check` (and any load
of the policy) for good, waiting for a writer; `/dev/zero` was read until memory ran out. A
path that is not a regular file is now E119 at the `fields from` string, at once."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from policy_engine.language.loader import load_paths

POLICY = """\
workflow "w" {
  version "1"
  owners {
    business "b"
    technical "t"
  }
  default require_approval
  action send {
    system "s"
    irreversible
    fields from "%s"
    deny big when `action.amount > 100.0`
  }
}
"""


def check_in_a_subprocess(path) -> subprocess.CompletedProcess:
    # a subprocess with a deadline: the load used to block on the FIFO forever
    code = "import sys; from policy_engine.cli import main; sys.exit(main(['check', '--no-color', sys.argv[1]]))"
    return subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_named_by_fields_from_is_refused_not_waited_on(tmp_path):
    os.mkfifo(tmp_path / "a.json")
    (tmp_path / "p.policy").write_text(POLICY % "a.json", encoding="utf-8")
    res = check_in_a_subprocess(tmp_path / "p.policy")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "error[E119]: cannot import fields: `a.json` is not a regular file" in res.stdout
    assert "p.policy:11:17" in res.stdout


@pytest.mark.parametrize("target", ["/dev/zero", "/dev/null"])
def test_a_device_named_by_fields_from_is_refused(tmp_path, target):
    if not os.path.exists(target):
        pytest.skip(f"no {target} here")
    (tmp_path / "p.policy").write_text(POLICY % target, encoding="utf-8")
    r = load_paths([tmp_path / "p.policy"])
    assert r.policy_set is None
    (d,) = [d for d in r.diagnostics if d.severity == "error"]
    assert d.code == "E119" and d.message == f"cannot import fields: `{target}` is not a regular file", d
    assert (d.span.line, d.span.col) == (11, 17)


def test_a_directory_and_a_link_to_a_schema(tmp_path):
    (tmp_path / "schemas").mkdir()
    (tmp_path / "p.policy").write_text(POLICY % "schemas", encoding="utf-8")
    r = load_paths([tmp_path / "p.policy"])
    assert [d.message for d in r.diagnostics] == ["cannot import fields: `schemas` is a directory"]
    (tmp_path / "schemas" / "send.json").write_text(
        '{"type": "object", "properties": {"amount": {"type": "number"}}, "required": ["amount"]}', encoding="utf-8")
    os.symlink("send.json", tmp_path / "schemas" / "link.json")
    (tmp_path / "p.policy").write_text(POLICY % "schemas/link.json", encoding="utf-8")
    r = load_paths([tmp_path / "p.policy"])
    assert r.policy_set is not None, r.diagnostics
