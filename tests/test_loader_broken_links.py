"""A policy or a suite left out in silence: a `*.policy` (or `*.policy-test.yaml`) symbolic
link in a policy directory that names nothing, and a subdirectory that may not be listed,
were skipped without a word, so the set loaded without them (a deny rule's file gone made
its actions allowed) and `stopline test` ran fewer suites. Each is now an error naming it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from policy_engine.language.loader import find_files

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "policy_engine.cli", *args], capture_output=True, text=True,
                          cwd=str(ROOT))


@pytest.fixture
def pdir(tmp_path):
    d = tmp_path / "policies"
    d.mkdir()
    for f in ("refunds.policy", "roles.policy", "refunds.policy-test.yaml"):
        shutil.copy(ROOT / "policies" / f, d / f)
    return d


def test_a_dangling_policy_link_fails_the_load_naming_it(pdir):
    (pdir / "deny_rules.policy").symlink_to(pdir / "gone.policy")
    r = _cli("check", str(pdir))
    assert r.returncode == 2
    assert r.stderr.strip() == (f"error: a symbolic link that names no file (or loops): {pdir / 'deny_rules.policy'} "
                                "(a policy left out)")
    from policy_engine import load

    with pytest.raises(Exception, match="a symbolic link that names no file"):  # (PolicyError from load)
        load(str(pdir))


def test_a_link_loop_and_a_dangling_suite_link_are_named(pdir):
    (pdir / "a.policy-test.yaml").symlink_to(pdir / "b.policy-test.yaml")
    (pdir / "b.policy-test.yaml").symlink_to(pdir / "a.policy-test.yaml")
    files, missing = find_files([pdir], ".policy-test.yaml")
    assert [f.name for f in files] == ["refunds.policy-test.yaml"]
    assert sorted(Path(m).name for m in missing) == ["a.policy-test.yaml", "b.policy-test.yaml"]
    r = _cli("test", str(pdir))
    assert r.returncode == 2 and "a.policy-test.yaml" in r.stdout + r.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root may list any directory")
def test_a_subdirectory_that_may_not_be_listed_fails_the_load(pdir):
    sub = pdir / "team"
    sub.mkdir()
    shutil.copy(ROOT / "policies" / "crm_updates.policy", sub / "crm_updates.policy")
    sub.chmod(0)
    try:
        r = _cli("check", str(pdir))
        assert r.returncode == 2 and r.stderr.startswith(f"error: cannot list the directory {sub}")
    finally:
        sub.chmod(0o755)


def test_a_subdirectory_that_may_not_be_listed_is_listed_as_missing(pdir, monkeypatch):
    """(root may list anything: the refusal is made by the walk's own listing, as the OS gives it)"""
    sub = pdir / "team"
    sub.mkdir()
    real = os.scandir

    def scandir(path):
        if os.fspath(path) == os.fspath(sub):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    _files, missing = find_files([pdir], ".policy")
    assert missing == [str(sub)]
