"""Keyed AuthZEN retries racing across the worker processes of ``stopline serve --workers 2``
(real processes, one ledger): the same request under the same ``Idempotency-Key``, sent on
several connections at one instant (so both workers take some), records its decisions once,
and every answer carries those decision ids (each decision ``replayed`` in all answers but
one: for a batch, per item, since each item is gated under its own key); an answer that is
not a 200 is a 503 whose retry, with the same key, is answered the same. One evaluation and
a batch; SQLite and PostgreSQL."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402
from ledger_fixtures import ledger_url  # noqa: E402,F401  (the parametrised backend fixture)
from server_support import (  # noqa: E402
    bearer,
    requests_by_worker,
    serve,
    server_policy_dir,
    wait_for_workers,
    write_identities,
)

from policy_engine.ledger import Ledger  # noqa: E402

ONE, MANY = "/access/v1/evaluation", "/access/v1/evaluations"
SENDERS = 6  # connections per round, all sent at one instant
ROUNDS = 12


def _body(path: str, round_: int) -> dict:
    top = {"subject": {"type": "user", "id": "a"}, "action": {"name": "log"}, "context": {"workflow": "replies"}}
    if path == ONE:
        return {**top, "resource": {"type": "t", "id": f"r{round_}"}}
    return {**top, "evaluations": [{"resource": {"type": "t", "id": f"r{round_}-{i}"}} for i in range(5)]}


def _evs(r: httpx.Response) -> list[dict]:
    j = r.json()
    return j.get("evaluations", [j])


def _ids(r: httpx.Response) -> list[str]:
    return [e["context"]["decision_id"] for e in _evs(r)]


def _race(base: str, path: str, body: dict, key: str) -> list[httpx.Response]:
    """``SENDERS`` sends of one keyed request, each on its own connection, released together."""
    start = threading.Barrier(SENDERS)
    headers = {**bearer("ops"), "Idempotency-Key": key}

    def one(_: int) -> httpx.Response:
        with httpx.Client(base_url=base, timeout=30) as c:
            c.get("/healthz")  # (connected first: the sends leave together)
            start.wait()
            return c.post(path, json=body, headers=headers)

    with ThreadPoolExecutor(SENDERS) as pool:
        return list(pool.map(one, range(SENDERS)))


@pytest.mark.parametrize("path", [ONE, MANY], ids=["evaluation", "evaluations"])
def test_one_keyed_request_sent_to_both_workers_at_once_is_recorded_once(tmp_path, ledger_url, path):  # noqa: F811
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    ids = write_identities(tmp_path / "ids.yaml")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
    args = (str(server_policy_dir(tmp_path)), "--ledger", ledger_url, "--identities", str(ids), "--workers", "2",
            "--reload-interval", "0")
    with serve(*args, env=env, timeout=90) as base:
        wait_for_workers(base, metrics)  # (both up: the rounds need both to take sends)
        problems: list[tuple[int, str]] = []
        crossed = 0  # rounds whose sends both workers took
        for n in range(ROUNDS):
            key = f"race-{n}"
            body = _body(path, n)
            seen = requests_by_worker(metrics, path)
            answers = _race(base, path, body, key)
            now = requests_by_worker(metrics, path)
            crossed += sum(1 for pid, v in now.items() if v > seen.get(pid, 0)) == 2
            for r in answers:
                if r.status_code != 200:
                    problems.append((r.status_code, r.text))
            ok = [r for r in answers if r.status_code == 200]
            assert ok, [r.text for r in answers]
            want = _ids(ok[0])
            assert all(_ids(r) == want for r in ok), [_ids(r) for r in ok]
            # each item is decided once: exactly one answer has it not ``replayed`` (none, when the
            # answer that decided it was lost to a 503). Per item, not per answer: a batch's items
            # are gated each under its own ledger key, so two workers may each decide some of them
            # (the recorder takes whatever waits), and then no answer is fresh in every item
            fresh = [sum(1 for r in ok if not _evs(r)[i]["context"].get("replayed")) for i in range(len(want))]
            assert all(f == 1 or (f == 0 and len(ok) < len(answers)) for f in fresh), \
                ("decided twice, or never", fresh, [[bool(e["context"].get("replayed")) for e in _evs(r)] for r in ok])
            # a retry of whatever failed is answered with the same decisions
            retry = httpx.post(base + path, json=body, headers={**bearer("ops"), "Idempotency-Key": key}, timeout=30)
            assert retry.status_code == 200 and _ids(retry) == want, retry.text
        served = {pid: v for pid, v in requests_by_worker(metrics, path).items() if v}
    for status, text in problems:  # (a lost race may only be a 503 that a retry resolves)
        assert status == 503, (status, text)
    assert len(served) == 2 and crossed, f"the workers never raced: {served}, {crossed} rounds"
    with Ledger.open(ledger_url) as led:
        keyed = [e for e in led.entries(kind="decision") if e.key is not None]
    per_round = 1 if path == ONE else 5
    assert len(keyed) == ROUNDS * per_round and len({e.key for e in keyed}) == len(keyed)
