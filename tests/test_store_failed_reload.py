"""A policy edit that does not load is tried once, not at every poll. Before,
`reload_if_changed` compared the files with the last *good* version's, so a broken edit
was loaded, logged and counted as a rejected reload at every poll (about once a second under
`stopline serve --reload-interval 1`) until someone fixed it. Now the failed version's files
are remembered: it is loaded again when one of them changes, or after
`retry_failed_after` seconds (a file only the failed version imports may be the one fixed)."""

from __future__ import annotations

import os

from runtime_support import POLICY

from policy_engine import PolicyStore


def _touch_later(path, text):
    st = path.stat()
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # (a later mtime, whatever the clock)


def test_a_broken_edit_is_tried_once_until_a_file_changes(tmp_path, caplog):
    f = tmp_path / "replies.policy"
    f.write_text(POLICY, encoding="utf-8")
    store = PolicyStore(str(tmp_path))
    good = store.policy_hash
    _touch_later(f, POLICY.replace("default require_approval", "default maybe"))
    r = store.reload_if_changed()
    assert r is not None and not r.ok and store.failed_reloads == 1
    for _ in range(3):  # the same broken files: not loaded, logged or counted again
        assert store.reload_if_changed() is None
    assert store.failed_reloads == 1 and store.policy_hash == good
    assert sum("policy reload rejected" in m for m in caplog.messages) == 1
    # still broken, but changed: tried again
    _touch_later(f, POLICY.replace("default require_approval", "default perhaps"))
    assert not store.reload_if_changed().ok and store.failed_reloads == 2
    assert store.reload_if_changed() is None
    # fixed: loaded
    _touch_later(f, POLICY.replace('version "1.0"', 'version "1.1"'))
    r = store.reload_if_changed()
    assert r.ok and r.changed and store.policy_hash != good
    assert store.reload_if_changed() is None


def test_a_failed_version_is_tried_again_after_its_retry_interval(tmp_path):
    f = tmp_path / "replies.policy"
    f.write_text(POLICY, encoding="utf-8")
    store = PolicyStore(str(tmp_path))
    _touch_later(f, POLICY.replace("default require_approval", "default maybe"))
    assert not store.reload_if_changed().ok
    store.retry_failed_after = 0.0
    r = store.reload_if_changed()
    assert r is not None and not r.ok and store.failed_reloads == 2
