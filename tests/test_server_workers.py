"""``stopline serve`` as a process: with ``--workers 2``, ``/metrics`` counts every worker's
requests, whichever worker answers the scrape (prometheus_client's multiprocess mode in a
directory the command creates and removes, or the one ``PROMETHEUS_MULTIPROC_DIR``
names); with ``--ledger``, concurrent AuthZEN decisions are grouped into shared ledger
transactions and each answer is sent only once its entry is committed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402
from server_support import ROOT, free_port  # noqa: E402

TODO = str(ROOT / "examples" / "authzen-todo")
REQ = {"subject": {"type": "user", "id": "morty@the-citadel.com"}, "action": {"name": "can_update_todo"},
       "resource": {"type": "todo", "id": "t1", "properties": {"ownerID": "rick@the-citadel.com"}}}  # a deny


def _start(env: dict, *extra: str, workers: int = 2) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "policy_engine.cli", "serve", TODO, "--port", str(port),
                             "--workers", str(workers), "--reload-interval", "0", *extra], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120  # (spawned workers import everything: slow on a loaded machine)
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"stopline serve exited {proc.returncode}: {proc.stderr.read()}")
        try:
            if httpx.get(base + "/healthz", timeout=1.0).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "stopline serve --workers 2 did not come up"
        time.sleep(0.2)
    return proc, base


def _stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err


def _sample(text: str, name: str, labels: str) -> float:
    sel = f"{{{re.escape(labels)}}}" if labels else ""
    m = re.search(rf"^{re.escape(name)}{sel} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def _decide(base: str, n: int) -> None:
    for _ in range(n):  # a new connection each: the kernel hands them to either worker
        r = httpx.post(base + "/access/v1/evaluation", json=REQ, timeout=10)
        assert r.status_code == 200 and r.json()["decision"] is False


def _per_worker(d: Path) -> dict[str, float]:
    """Each worker's own count of AuthZEN denies, read from its file in the directory."""
    from prometheus_client.mmap_dict import MmapedDict

    out = {}
    for f in d.glob("counter_*.db"):
        total = 0.0
        for key, value, _, _ in MmapedDict.read_all_values_from_file(str(f)):
            if '"stopline_decisions_total"' in key and '"deny"' in key and '"authzen"' in key:
                total += value
        out[f.stem.split("_", 1)[1]] = total
    return out


def test_two_workers_metrics_add_up_whichever_worker_answers(tmp_path):
    d = tmp_path / "metrics"
    d.mkdir()
    proc, base = _start({**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(d)})
    try:
        sent = 0
        # until both workers have answered some (bounded in time, not in requests: on a loaded
        # machine the second worker can come up many seconds after the first answered /healthz)
        deadline = time.monotonic() + 120
        while True:
            _decide(base, 40)
            sent += 40
            served = {pid: n for pid, n in _per_worker(d).items() if n}
            if len(served) >= 2 or time.monotonic() > deadline:
                break
        assert len(served) == 2, f"one worker took every connection: {served}"
        assert sum(served.values()) == sent
        # (a request's duration is observed just after its answer is sent: the last request's
        # worker may not have written it yet when the answer arrives; wait for it in the files)
        while sum(_per_worker_route(d, "/access/v1/evaluation").values()) < sent:
            assert time.monotonic() < deadline + 60, "a request's duration was never recorded"
            time.sleep(0.05)
        for _ in range(8):  # new connections: the scrapes land on both workers
            text = httpx.get(base + "/metrics", timeout=10).text
            assert _sample(text, "stopline_decisions_total", 'effect="deny",interface="authzen"') == sent
            assert _sample(text, "stopline_request_duration_seconds_count",
                           'route="/access/v1/evaluation"') == sent
            assert _sample(text, "stopline_decisions_total", 'effect="allow",interface="authzen"') == 0
    finally:
        err = _stop(proc)
    assert "PROMETHEUS_MULTIPROC_DIR=" + str(d) in err
    assert d.is_dir()  # a directory the environment named is left in place


def test_serve_with_workers_makes_and_removes_its_metrics_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if k.upper() != "PROMETHEUS_MULTIPROC_DIR"}
    proc, base = _start(env)
    try:
        _decide(base, 30)
        for _ in range(4):
            text = httpx.get(base + "/metrics", timeout=10).text
            assert _sample(text, "stopline_decisions_total", 'effect="deny",interface="authzen"') == 30
    finally:
        err = _stop(proc)
    made = re.search(r"PROMETHEUS_MULTIPROC_DIR=(\S+)\)", err)
    assert made, err
    assert Path(made.group(1)).name.startswith("stopline-metrics-") and not Path(made.group(1)).exists()


def test_concurrent_recorded_decisions_are_committed_before_each_answer(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from policy_engine.ledger import Ledger

    url = f"sqlite:///{tmp_path / 'l.db'}"
    proc, base = _start(dict(os.environ), "--ledger", url, workers=1)
    try:
        with Ledger.open(url) as reader:  # another process's view of the file
            def one(_: int) -> tuple[str, bool]:
                with httpx.Client(timeout=30) as c:
                    r = c.post(base + "/access/v1/evaluation", json=REQ)
                assert r.status_code == 200 and r.json()["context"]["recorded"] is True
                d = r.json()["context"]["decision_id"]
                return d, reader.get(d).kind == "decision"  # committed before the answer was sent

            with ThreadPoolExecutor(16) as pool:
                got = list(pool.map(one, range(120)))
            assert all(seen for _, seen in got) and len({d for d, _ in got}) == 120
            text = httpx.get(base + "/metrics", timeout=10).text
            transactions = _sample(text, "stopline_ledger_append_duration_seconds_count", "")
            # counted once per transaction: at most one per decision (fewer when requests overlap)
            assert 0 < transactions <= 120
            assert _sample(text, "stopline_decisions_total", 'effect="deny",interface="authzen"') == 120
    finally:
        _stop(proc)


def _per_worker_route(d: Path, route: str) -> dict[str, float]:
    """Each worker's own count of requests to ``route`` (its request-duration histogram)."""
    from prometheus_client.mmap_dict import MmapedDict

    out = {}
    for f in d.glob("histogram_*.db"):
        total = 0.0
        for key, value, _, _ in MmapedDict.read_all_values_from_file(str(f)):
            # (each bucket holds its own requests: they are summed at scrape time)
            if '"stopline_request_duration_seconds_bucket"' in key and f'"route": "{route}"' in key:
                total += value
        out[f.stem.split("_", 1)[1]] = total
    return out


def test_a_reviewer_signed_in_on_one_worker_is_signed_in_on_every_worker(tmp_path):
    """The workers sign sessions (and the sign-in form's CSRF token) with one key that
    `stopline serve` gives them, so sign-in and session work whichever worker answers."""
    from server_support import TOKENS, write_identities

    d = tmp_path / "metrics"
    d.mkdir()
    ids = write_identities(tmp_path / "ids.yaml")
    proc, base = _start({**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(d)}, "--identities", str(ids))
    try:
        signed_in = 0
        with httpx.Client(base_url=base, timeout=10) as c:
            csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/ui/login").text).group(1)
            cookies = dict(c.cookies)
        deadline = time.monotonic() + 120  # (bounded in time: the second worker may come up late)
        while True:  # each request on a new connection: the kernel hands them to either worker
            with httpx.Client(base_url=base, timeout=10, cookies=cookies) as c:
                r = c.post("/ui/login", data={"token": TOKENS["casey"][0], "csrf": csrf}, follow_redirects=False)
                assert r.status_code == 303, r.text[:300]
                session = c.cookies["stopline_session"]
            for _ in range(10):
                with httpx.Client(base_url=base, timeout=10, cookies={"stopline_session": session}) as c:
                    r = c.get("/ui", follow_redirects=False)
                    assert r.status_code == 200 and "signed in as <strong>casey</strong>" in r.text
                    signed_in += 1
            served = {pid: n for pid, n in _per_worker_route(d, "/ui").items() if n}
            if len(served) >= 2 or time.monotonic() > deadline:
                break
        assert len(served) == 2, f"one worker took every connection: {served}"
    finally:
        _stop(proc)
