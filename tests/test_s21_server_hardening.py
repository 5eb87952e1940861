"""Session 21's hardening of the HTTP service, after the audit (``test_audit_s21_server.py``):
every case that goes through a route runs on the fast path and behind FastAPI routing
(``--no-fast-path``), in process (Starlette's test client on ``create_app``'s application).

- a decision's locations (``deciding``, ``matched``, ``trace``, ``stop``), in a ``/v1``
  answer, an AuthZEN ``stop`` context and the decision entry the ledger records, are
  relative to the policy directory the server was started with (``replies.policy:40:8``),
  never the server's filesystem path; ``policy_engine.load`` (the CLI) is unchanged, and a
  file's ``fields from`` import is still read and watched where it is;
- JWTs verified without an ``audience`` take any token the key signs: ``stopline serve``
  says so in one line at startup (and a reload of such a file logs it); since session 23
  only with ``accept_any_audience: true`` (without either, the file does not load);
- ``/metrics`` (anyone may scrape it) walks the rollback queue once per ledger change, not
  once per scrape, and the depth still follows appends and the clock;
- the recorder (which groups concurrent recorded AuthZEN decisions) survives a requester
  whose event loop closed before it was answered (it died, and every later recorded request
  hung), and a request it can no longer answer is a 503 problem, never a hang.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from server_support import ROOT, SERVER_POLICY, bearer, free_port, server_policy_dir, write_identities  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from policy_engine.server import ServerConfig, create_app  # noqa: E402

PROBLEM = "application/problem+json"
STOP = {"workflow": "replies", "type": "send", "amount": 5000.0, "promise": True, "original": {"opened": False}}
EV = {"subject": {"type": "user", "id": "a"}, "action": {"name": "log"}, "resource": {"type": "t", "id": "1"},
      "context": {"workflow": "replies"}}


@pytest.fixture(params=[True, False], ids=["fast path", "no fast path"])
def fast_path(request):
    return request.param


def make(tmp_path, policies, fast_path: bool, **kw) -> TestClient:
    ids = str(write_identities(tmp_path / "ids.yaml"))
    return TestClient(create_app(ServerConfig(str(policies), ledger=f"sqlite:///{tmp_path / 'l.db'}", identities=ids,
                                              reload_interval=0, fast_path=fast_path, **kw)),
                      raise_server_exceptions=False)


def locations(obj) -> list[str]:
    """Every ``location`` value in a JSON document."""
    out: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "location" and isinstance(v, str):
                out.append(v)
            else:
                out += locations(v)
    elif isinstance(obj, list):
        for v in obj:
            out += locations(v)
    return out


def recorded_bodies(c: TestClient) -> list[dict]:
    return [e.body for e in c.app.state.runtime.ledger.entries(kind="decision")]


# ---------------------------------------------------------------------------------- 1. locations
def test_a_decision_names_its_policy_file_relative_to_the_policy_directory(tmp_path, fast_path):
    # they carried the server's path: `/tmp/.../policies/replies.policy:40:8`, to every caller
    # and into every decision entry of the ledger
    policies = server_policy_dir(tmp_path)
    with make(tmp_path, policies, fast_path) as c:
        d = c.post("/v1/gate", json={"action": STOP}, headers=bearer("ops")).json()["decision"]
        assert d["deciding"]["location"] == "replies.policy:40:8" and d["stop"]["location"] == "replies.policy:40:8"
        assert [m["location"] for m in d["matched"]] == ["replies.policy:40:8", "replies.policy:18:10",
                                                          "replies.policy:19:22"]
        assert {t["location"] for t in d["trace"]} >= {"replies.policy:20:11"}
        # the AuthZEN `stop` context (the workflow is stopped now: every action says by what)
        r = c.post("/access/v1/evaluation", json=EV, headers=bearer("ops"))
        ctx = r.json()["context"]
        assert r.json()["decision"] is True and ctx["effect"] == "allow"  # (`log` runs while stopped)
        r = c.post("/access/v1/evaluation", json={**EV, "action": {"name": "other"}}, headers=bearer("ops"))
        assert r.json()["context"]["stop"]["location"] == "replies.policy:40:8", r.text
        bodies = recorded_bodies(c)
        assert len(bodies) == 3 and all(loc.startswith("replies.policy:") for b in bodies for loc in locations(b))
        assert str(tmp_path) not in json.dumps(bodies)
        # what the CLI and a library caller load is unchanged: the path as given
        from policy_engine import load

        ref = load(str(policies)).evaluate(STOP)
        assert ref.deciding.location == f"{policies}/replies.policy:40:8"
        assert ref.policy_hash == d["policy_hash"]  # (the same policy, the same hash)


def test_a_file_in_a_subdirectory_and_a_reload_keep_relative_locations(tmp_path, fast_path):
    policies = tmp_path / "policies"
    (policies / "team").mkdir(parents=True)
    (policies / "team" / "replies.policy").write_text(SERVER_POLICY, encoding="utf-8")
    with make(tmp_path, policies, fast_path) as c:
        d = c.post("/v1/gate", json={"action": STOP}, headers=bearer("ops")).json()["decision"]
        assert d["deciding"]["location"] == "team/replies.policy:40:8"
        st = c.app.state
        assert list(st.store.engine.sources) == ["team/replies.policy"]
        # the policy model is rebuilt from the kept texts on demand: the same set, the same hash
        assert st.store.engine.policy_set.files[0].path == "team/replies.policy"
        (policies / "team" / "replies.policy").write_text("\n\n" + SERVER_POLICY, encoding="utf-8")
        r = c.post("/v1/policies/reload", headers=bearer("ops")).json()
        assert r["ok"] is True and r["changed"] is False  # (two lines more: the same policy)
        r = c.post("/access/v1/evaluation", json={**EV, "action": {"name": "other"}}, headers=bearer("ops"))
        assert r.json()["context"]["stop"]["location"] == "team/replies.policy:42:8", r.text
        assert str(tmp_path) not in json.dumps(recorded_bodies(c))


def test_a_failed_reload_on_the_anonymous_healthz_names_no_server_path(tmp_path, fast_path):
    # `/healthz` (no credential) gave `last_reload.error` as `/abs/.../replies.policy:L:C: ...`
    policies = server_policy_dir(tmp_path)
    with make(tmp_path, policies, fast_path) as c:
        (policies / "replies.policy").write_text(SERVER_POLICY.replace("workflow", "workflw", 1), encoding="utf-8")
        assert c.post("/v1/policies/reload", headers=bearer("ops")).json()["ok"] is False
        last = c.get("/healthz").json()["last_reload"]
        assert last["ok"] is False and last["error"].startswith("replies.policy:"), last
        assert str(tmp_path) not in c.get("/healthz").text


FIELDS_POLICY = SERVER_POLICY.replace('  action other {\n    system "crm"\n',
                                      '  action other {\n    system "crm"\n    fields from "other.json"\n')


def test_a_fields_import_is_read_and_watched_where_it_is(tmp_path, fast_path):
    # the imported schema is read next to its policy file (not from the server's working
    # directory), the store watches it at its real path, and the locations are relative
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "replies.policy").write_text(FIELDS_POLICY, encoding="utf-8")
    schema = {"type": "object", "properties": {"note": {"type": "string"}}, "required": ["note"]}
    (policies / "other.json").write_text(json.dumps(schema), encoding="utf-8")
    with make(tmp_path, policies, fast_path) as c:
        st = c.app.state
        assert st.store.engine.imports == (str(policies / "other.json"),)
        r = c.post("/access/v1/evaluation", json={**EV, "action": {"name": "other"}}, headers=bearer("ops")).json()
        assert r["decision"] is False, r  # `note` is required by the imported schema
        assert "`action.note` is missing" in r["context"]["reason"]
        other = {"workflow": "replies", "type": "other", "note": "n"}
        d = c.post("/v1/gate", json={"action": other}, headers=bearer("ops")).json()["decision"]
        assert d["effect"] == "allow" and d["deciding"]["location"] == "replies.policy:38:11", d
        assert all(loc.startswith("replies.policy:") for loc in locations(recorded_bodies(c)))
        assert str(tmp_path) not in json.dumps(recorded_bodies(c))
        (policies / "other.json").write_text(json.dumps({**schema, "required": []}), encoding="utf-8")
        assert st.store.reload_if_changed() is not None  # (the import is watched)


# ---------------------------------------------------------------------------------- 2. JWT audience
def _pem(path, key) -> None:
    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))


def _serve_stderr(tmp_path, *args: str) -> str:
    """What ``stopline serve ARGS`` writes to stderr by the time it answers /healthz."""
    port = free_port()
    err = tmp_path / "stderr.txt"
    with open(err, "wb") as f, open(os.devnull, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "policy_engine.cli", "serve", *args, "--port", str(port)],
                                cwd=ROOT, stdout=out, stderr=f)
        try:
            deadline = time.monotonic() + 120  # (a bound on the start, on a loaded machine too)
            while True:
                assert proc.poll() is None, err.read_text()
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "stopline serve did not come up"
                time.sleep(0.1)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return err.read_text()


def test_serve_warns_when_jwts_are_taken_for_any_audience(tmp_path):
    # (session 23: without `audience` the file does not load; `accept_any_audience: true` says so on purpose)
    _pem(tmp_path / "idp.pem", Ed25519PrivateKey.generate())
    policies = server_policy_dir(tmp_path)
    ids = write_identities(tmp_path / "ids.yaml", "jwt:\n  public_key: idp.pem\n  algorithms: [EdDSA]\n"
                                                  "  accept_any_audience: true\n")
    err = _serve_stderr(tmp_path, str(policies), "--identities", str(ids), "--reload-interval", "0")
    warned = [line for line in err.splitlines() if "audience" in line]
    assert warned == [f"stopline serve: warning: {ids}: jwt has `accept_any_audience: true`: every token the key "
                      "signs is accepted, one issued for another service too; give `audience` (the `aud` this "
                      "server's tokens carry) instead"], err
    ids.write_text(ids.read_text().replace("accept_any_audience: true", "audience: stopline"))
    err = _serve_stderr(tmp_path, str(policies), "--identities", str(ids), "--reload-interval", "0")
    assert "audience" not in err and "warning" not in err, err


def test_a_reload_to_jwts_without_an_audience_is_logged(tmp_path, fast_path, caplog):
    _pem(tmp_path / "idp.pem", Ed25519PrivateKey.generate())
    with make(tmp_path, server_policy_dir(tmp_path), fast_path) as c:
        ids = tmp_path / "ids.yaml"
        assert c.app.state.identities.audience_warning() is None  # (tokens only)
        write_identities(ids, "jwt:\n  public_key: idp.pem\n  algorithms: [EdDSA]\n  accept_any_audience: true\n")
        with caplog.at_level(logging.WARNING, logger="policy_engine.server"):
            assert c.post("/v1/identities/reload", headers=bearer("ops")).json()["changed"] is True
        assert [r.getMessage() for r in caplog.records if "audience" in r.getMessage()] == [
            c.app.state.identities.audience_warning()]


# ---------------------------------------------------------------------------------- 3. /metrics
def _depth(text: str) -> dict[str, float]:
    import re

    return {m.group(1): float(m.group(2))
            for m in re.finditer(r'^stopline_queue_depth\{route="([^"]*)"\} (\S+)$', text, re.M)}


def test_a_scrape_walks_the_queue_once_per_ledger_change(tmp_path, fast_path, monkeypatch):
    # every scrape of the unauthenticated /metrics listed and walked every open rollback
    from test_server_ui_batches import fill, request_batch

    with make(tmp_path, server_policy_dir(tmp_path), fast_path) as c:
        rt = c.app.state.runtime
        fill(c, 30, "run-1")
        request_batch(c, "run-1")
        walks = []
        listing = rt.queue
        monkeypatch.setattr(rt, "queue", lambda *a, **kw: walks.append(1) or listing(*a, **kw))
        for _ in range(5):
            assert _depth(c.get("/metrics").text) == {"customer_service": 30.0}
        assert len(walks) == 1
        # a change of the ledger is seen at the next scrape
        fill(c, 2, "run-2")
        request_batch(c, "run-2")
        assert _depth(c.get("/metrics").text) == {"customer_service": 32.0}
        assert _depth(c.get("/metrics").text) == {"customer_service": 32.0}
        assert len(walks) == 2
        # a denied rollback is closed (an entry: the next scrape counts again)
        victim = rt.queue()[0].rollback_id
        r = c.post("/v1/approvals", json={"subject": victim, "verdict": "deny", "reason": "no"},
                   headers=bearer("casey"))
        assert r.status_code == 200, r.text
        assert _depth(c.get("/metrics").text) == {"customer_service": 31.0}


def test_the_kept_depth_ends_at_the_next_clock_event():
    # the clock expires a pending rollback with no entry: the count is read again from then
    from policy_engine.runtime.results import QueueItem
    from policy_engine.server.state import _depth_of

    def item(i, status, deadline, expires_at=None, unrecorded=False, route="r"):
        return QueueItem(f"rb-{i}", route, "s", "w", "x", "rita", "2026-01-01T00:00:00.000000Z", deadline,
                         expires_at, status, None, False, unrecorded)

    now = "2026-01-02T00:00:00.000000Z"
    items = [item(1, "pending", "2026-01-05T00:00:00.000000Z"),
             item(2, "pending", "2026-01-09T00:00:00.000000Z", expires_at="2026-01-03T00:00:00.000000Z"),
             item(3, "approved", "2026-01-02T00:00:01.000000Z"),  # (approved: the clock does not expire it)
             item(4, "expired", "2026-01-01T12:00:00.000000Z", unrecorded=True),  # expired for good
             item(5, "pending", None, route=None)]
    assert _depth_of(items, now) == ([("r", 3), ("none", 1)], "2026-01-03T00:00:00.000000Z")
    # a pending one past its window yet judged open: judged again at the next scrape
    assert _depth_of([*items, item(6, "pending", "2026-01-01T12:00:00.000000Z")], now)[1] == now
    # an escalated plan's window ended before it was requested: no clock event of it
    assert _depth_of([item(7, "pending", "2025-12-31T00:00:00.000000Z")], now) == ([("r", 1)], "\uffff")


# ---------------------------------------------------------------------------------- 4. the recorder
def _in_thread(fn, timeout: float = 20.0):
    """``fn()`` in a thread; its result, or AssertionError when it did not return in time
    (a request that hangs must fail the test, not hang it)."""
    out: list = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    t.join(timeout)
    assert out, f"no answer in {timeout:.0f} s: the request hangs"
    return out[0]


def _drained(rec) -> None:
    deadline = time.monotonic() + 20
    while not rec._q.empty() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # (the batch taken is recorded and settled)


@pytest.mark.timeout(90)  # (a hang guard: without the fix the request, then the client's exit, hang)
def test_a_requester_whose_event_loop_closed_does_not_stop_the_recorder(tmp_path, fast_path):
    with make(tmp_path, server_policy_dir(tmp_path), fast_path) as c:
        rec = c.app.state.recorder
        gone = asyncio.new_event_loop()  # a requester whose event loop closed before it was answered
        fut = gone.create_future()
        gone.close()
        rec._q.put(({"workflow": "replies", "type": "log"}, None, fut, gone))
        _drained(rec)
        for _ in range(2):
            r = _in_thread(lambda: c.post("/access/v1/evaluation", json=EV, headers=bearer("ops")))
            assert r.status_code == 200 and r.json()["decision"] is True, r.text
        assert len(recorded_bodies(c)) == 3  # (the one that went away was recorded too)


@pytest.mark.timeout(90)  # (a hang guard: without the fix the request, then the client's exit, hang)
def test_a_recorder_that_stopped_answers_503_not_a_hang(tmp_path, fast_path):
    with make(tmp_path, server_policy_dir(tmp_path), fast_path) as c:
        c.app.state.recorder.close()
        for body in (EV, {"evaluations": [EV, EV]}):
            path = "/access/v1/evaluations" if "evaluations" in body else "/access/v1/evaluation"
            r = _in_thread(lambda p=path, b=body: c.post(p, json=b, headers=bearer("ops")))
            assert r.status_code == 503 and r.headers["content-type"] == PROBLEM, r.text
            assert r.json()["type"].endswith("/recorder-unavailable") and "restart" in r.json()["detail"]
        assert recorded_bodies(c) == []
        # the runtime's own routes do not go through it
        r = c.post("/v1/gate", json={"action": {"workflow": "replies", "type": "log"}}, headers=bearer("ops"))
        assert r.status_code == 200, r.text
