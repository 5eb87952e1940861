"""The parsers' table cache (policy_engine.lark_cache): private, optional, self-healing."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
from engine_support import ROOT

from policy_engine.lark_cache import cache_dir, lark_cache

CHECK = [sys.executable, "-m", "policy_engine.cli", "check", str(ROOT / "policies")]


# a condition outside the hand-written CEL parser's subset (a hex literal) and a keyword as a
# field name (outside the hand-written policy parser's): both Lark parsers are built (the
# shipped policies alone need neither, see cel/rdparse.py and language/rdparse.py)
HEX = ('workflow "hex_cache_probe" {\n  version "1"\n  owners { business "b" technical "t" }\n  default deny\n'
       '  action hex_probe {\n    system "s"\n    irreversible\n    fields { n: int  system: string }\n'
       '    deny big when `action.n > 0x10`\n  }\n}\n')


def run_check(env_dir) -> subprocess.CompletedProcess:
    env = {**os.environ, "STOPLINE_CACHE_DIR": str(env_dir)}
    probe = env_dir.parent / "probe" / "hex.policy"
    probe.parent.mkdir(exist_ok=True)
    probe.write_text(HEX)
    return subprocess.run(CHECK + [str(probe)], capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=120)


def test_an_empty_setting_turns_the_cache_off(monkeypatch):
    monkeypatch.setenv("STOPLINE_CACHE_DIR", "")
    assert cache_dir() is None and lark_cache("x") is False


def test_the_directory_is_created_private(monkeypatch, tmp_path):
    d = tmp_path / "a" / "b"
    monkeypatch.setenv("STOPLINE_CACHE_DIR", str(d))
    assert cache_dir() == d
    assert stat.S_IMODE(d.stat().st_mode) & 0o077 == 0
    py = f"py{sys.version_info[0]}{sys.version_info[1]}"
    assert lark_cache("cel-grammar") == str(d / f"cel-grammar-{py}.lark-cache")


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")
def test_a_directory_others_can_write_is_not_used(monkeypatch, tmp_path):
    d = tmp_path / "shared"
    d.mkdir()
    d.chmod(0o777)
    monkeypatch.setenv("STOPLINE_CACHE_DIR", str(d))
    assert cache_dir() is None
    f = tmp_path / "file"
    f.write_text("x")
    monkeypatch.setenv("STOPLINE_CACHE_DIR", str(f))
    assert cache_dir() is None


def test_the_cache_is_written_used_and_a_bad_one_is_rebuilt(tmp_path):
    d = tmp_path / "cache"
    first = run_check(d)
    assert first.returncode == 0, first.stderr
    files = sorted(p.name for p in d.iterdir())
    py = f"py{sys.version_info[0]}{sys.version_info[1]}"  # (one file per Python version)
    assert files == [f"cel-grammar-{py}.lark-cache", f"stopline-grammar-{py}.lark-cache"]
    assert run_check(d).stdout == first.stdout  # from the cache: the same report
    for p in d.iterdir():  # torn or foreign files: ignored, rebuilt, rewritten
        p.write_bytes(b"garbage\n" + os.urandom(64))
    again = run_check(d)
    assert again.returncode == 0 and again.stdout == first.stdout
    assert again.stderr == first.stderr  # nothing about the cache reaches the user
    for p in d.iterdir():
        assert not p.read_bytes().startswith(b"garbage")
