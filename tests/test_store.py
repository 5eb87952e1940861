"""PolicyStore: atomic reload while other threads evaluate; broken versions never used."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from policy_engine import PolicyError
from policy_engine.engine import load
from policy_engine.store import PolicyStore, ReloadResult, policy_hash_of

NOW = "2026-07-02T10:00:00Z"

TEMPLATE = """
roles [reviewer]
workflow "w" {{
  version "{version}"
  owners {{ business "b" technical "t" }}
  default deny
  action send {{
    system "mail"
    {rule}
  }}
  rollback incident {{
    route q
    authorize 1 reviewer
  }}
  stop halt {{
    when `action.halt == true`
    severity high
    owner "o"
    resume when {{ ok: `evidence.ok == true` }}
  }}
}}
"""

V1 = TEMPLATE.format(version="1", rule="allow small when `action.amount <= 100`")
V2 = TEMPLATE.format(version="2", rule="require_approval review by 1 reviewer when `action.amount <= 100`")
BROKEN = V1.replace("allow small when", "allow small whne")
ACTION = {"workflow": "w", "type": "send", "amount": 5, "halt": False}
EXPECTED = {"1": ("allow", "small"), "2": ("require_approval", "review")}


def write(path: Path, text: str) -> None:
    """Replace the file atomically, as a deploy tool should."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@pytest.fixture
def policy_dir(tmp_path):
    d = tmp_path / "policies"
    d.mkdir()
    write(d / "w.policy", V1)
    return d


def hashes(tmp_path) -> dict[str, str]:
    out = {}
    for v, text in (("1", V1), ("2", V2)):
        p = tmp_path / f"h{v}" / "w.policy"
        p.parent.mkdir()
        p.write_text(text)
        out[load(p.parent).policy_hash] = v
    return out


def test_first_load_must_succeed(tmp_path):
    p = tmp_path / "bad.policy"
    p.write_text(BROKEN)
    with pytest.raises(PolicyError):
        PolicyStore(p)
    with pytest.raises(PolicyError):
        PolicyStore(tmp_path / "missing")


def test_store_delegates_to_one_snapshot(policy_dir):
    store = PolicyStore(policy_dir)
    d = store.evaluate(ACTION, now=NOW)
    assert d.effect == "allow" and d.policy_hash == store.policy_hash == store.engine.policy_hash
    assert store.evaluate_json(ACTION, now=NOW) == d.model_dump_json()
    plan = store.classify_rollback({"workflow": "w", "scenario": "x", "requested_by": "u",
                                    "original": {"id": "1", "type": "send"}}, now=NOW)
    assert not plan.authorizable
    assert not store.authorize_rollback(plan, [], now=NOW).satisfied
    assert store.may_resume("w", "halt", {"ok": True}, now=NOW).allowed
    assert "PolicyStore" in repr(store)


def test_reload_publishes_a_new_version(policy_dir):
    store = PolicyStore(policy_dir)
    old = store.engine
    write(policy_dir / "w.policy", V2)
    r = store.reload()
    assert r.ok and r.changed and r.previous_hash == old.policy_hash and r.policy_hash == store.policy_hash
    assert store.engine is not old
    assert store.evaluate(ACTION, now=NOW).effect == "require_approval"
    # the old snapshot is untouched: a caller holding it keeps a consistent version
    assert old.evaluate(ACTION, now=NOW).effect == "allow"
    r = store.reload()
    assert r.ok and not r.changed


def test_broken_version_never_replaces_the_last_good(policy_dir):
    store = PolicyStore(policy_dir)
    good = store.engine
    write(policy_dir / "w.policy", BROKEN)
    r = store.reload()
    assert isinstance(r, ReloadResult)
    assert not r.ok and not r.changed
    assert store.engine is good and r.policy_hash == good.policy_hash
    assert r.diagnostics and r.diagnostics[0].severity == "error"
    assert r.diagnostics[0].span.path.endswith("w.policy") and r.diagnostics[0].span.line == 9
    assert "w.policy:9:" in r.render()
    assert store.last_reload is r and store.failed_reloads == 1
    assert store.evaluate(ACTION, now=NOW).effect == "allow"


@pytest.mark.parametrize("damage", ["delete_dir", "empty_dir", "binary", "huge", "nul"])
def test_other_broken_versions_are_rejected(policy_dir, damage):
    store = PolicyStore(policy_dir)
    good = store.engine
    f = policy_dir / "w.policy"
    if damage == "delete_dir":
        f.unlink()
        policy_dir.rmdir()
    elif damage == "empty_dir":
        f.unlink()
    elif damage == "binary":
        f.write_bytes(b"\xff\xfe\x00garbage")
    elif damage == "huge":
        f.write_bytes(b"#" * 2_000_000)
    elif damage == "nul":
        f.write_bytes(V1.encode().replace(b"action", b"act\x00ion", 1))
    r = store.reload()
    assert not r.ok and r.diagnostics and r.error
    assert store.engine is good


def test_unexpected_exception_while_loading_is_contained(policy_dir):
    calls = []

    def flaky(paths):
        calls.append(paths)
        if len(calls) > 1:
            raise MemoryError("simulated")
        return load(paths)

    store = PolicyStore(policy_dir, load=flaky)
    good = store.engine
    r = store.reload()
    assert not r.ok and "MemoryError" in r.diagnostics[0].message
    assert store.engine is good


def test_reload_if_changed(policy_dir):
    store = PolicyStore(policy_dir)
    assert store.reload_if_changed() is None
    time.sleep(0.01)
    write(policy_dir / "w.policy", V2)
    os.utime(policy_dir / "w.policy", ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    r = store.reload_if_changed()
    assert r is not None and r.ok and r.changed
    assert store.reload_if_changed() is None


def test_policy_hash_of():
    class E:
        policy_hash = "sha256:x"

    assert policy_hash_of(E()) == "sha256:x"
    assert policy_hash_of(object()) is None


def test_hammer_evaluate_during_reloads(policy_dir, tmp_path):
    """8 threads evaluate while 100 reloads alternate two versions (and some broken
    ones): every decision is consistent with the version its policy hash names."""
    version_of = hashes(tmp_path)
    assert len(version_of) == 2
    store = PolicyStore(policy_dir)
    stop = threading.Event()
    seen: list = []
    problems: list = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        local = []
        n = 0
        while not stop.is_set() or n < 50:
            n += 1
            try:
                d = store.evaluate({**ACTION, "id": f"{i}-{n}"}, now=NOW)
            except Exception as e:  # noqa: BLE001
                problems.append(repr(e))
                return
            v = version_of.get(d.policy_hash)
            if v is None:
                problems.append(f"unknown hash {d.policy_hash}")
            elif (d.effect, d.deciding.name) != EXPECTED[v] or d.policy_version != v:
                problems.append(f"hash says version {v} but decision is {d.effect}/{d.deciding.name}/"
                                f"{d.policy_version}")
            local.append(v)
            time.sleep(0.0005)  # leave the reloading thread some of the GIL; still thousands of decisions
        with lock:
            seen.extend(local)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    results = []
    try:
        for k in range(100):
            text = BROKEN if k % 10 == 9 else (V2 if k % 2 == 0 else V1)
            write(policy_dir / "w.policy", text)
            results.append((text, store.reload()))
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not problems, problems[:5]
    assert all(r.ok == (text is not BROKEN) for text, r in results)
    assert sum(1 for _, r in results if not r.ok) == 10
    assert store.failed_reloads == 10
    assert len(seen) >= 8 * 50
    assert set(seen) == {"1", "2"}, "both versions should have served decisions"
    print(f"{len(seen)} decisions during 100 reloads: v1={seen.count('1')} v2={seen.count('2')}")


def test_concurrent_reloads_are_serialized(policy_dir):
    store = PolicyStore(policy_dir)
    results = []

    def reloader(text):
        for _ in range(10):
            results.append(store.reload())

    write(policy_dir / "w.policy", V2)
    threads = [threading.Thread(target=reloader, args=(V2,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(r.ok for r in results) and len(results) == 40
    assert sum(r.changed for r in results) == 1
    assert store.reloads == 40


def test_plan_from_before_a_reload_is_refused_after_it(policy_dir):
    store = PolicyStore(policy_dir)
    req = {"workflow": "w", "scenario": "incident", "requested_by": "u", "original": {"id": "1", "type": "send"}}
    plan = store.classify_rollback(req, now=NOW)
    ok = [{"principal": "rev", "roles": ["reviewer"], "plan_hash": plan.plan_hash}]
    assert store.authorize_rollback(plan, ok, now=NOW).satisfied
    write(policy_dir / "w.policy", V2)
    assert store.reload().changed
    v = store.authorize_rollback(plan, ok, now=NOW)
    assert not v.satisfied and any(e.kind == "policy" for e in v.errors)
    # one snapshot for a classify-then-authorize unit of work
    snap = store.engine
    plan2 = snap.classify_rollback(req, now=NOW)
    assert snap.authorize_rollback(plan2, [{**ok[0], "plan_hash": plan2.plan_hash}], now=NOW).satisfied
