"""The reviewer's page with a large rollback batch (issue 19 item 6 with issue 18's batches).

    python benchmarks/bench_ui_batches.py            # a batch of 10,000 plans
    python benchmarks/bench_ui_batches.py --plans 1000 --repeat 3

Fills a SQLite ledger with N executed sends (``Ledger.append_many``, not measured),
requests one batch of them over HTTP (in process: Starlette's test client), signs in and
reports the median time of ``GET /ui``, ``GET /ui/batches/{id}`` (page 1 and the last page)
and, as the same-run baseline, ``GET /v1/rollbacks/batches/{id}`` (``Runtime.batch_status``,
which parses every plan), then one approval of the whole batch through the page's form.
No figure is asserted."""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plans", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args(argv)
    from server_support import SERVER_POLICY, bearer, write_identities
    from starlette.testclient import TestClient
    from test_server_ui_batches import fill, request_batch, sign_in

    from policy_engine.server import ServerConfig, create_app
    from policy_engine.server.batchview import PAGE

    tmp = Path(tempfile.mkdtemp(prefix="stopline-ui-"))
    (tmp / "p").mkdir()
    (tmp / "p" / "replies.policy").write_text(SERVER_POLICY, encoding="utf-8")
    ids = str(write_identities(tmp / "ids.yaml"))
    cfg = ServerConfig(str(tmp / "p"), ledger=f"sqlite:///{tmp / 'l.db'}", identities=ids, reload_interval=0)
    with TestClient(create_app(cfg)) as c:
        fill(c, a.plans, "run-1")
        t = time.perf_counter()
        b = request_batch(c, "run-1")
        print(f"request the batch ({len(b['rollbacks'])} plans): {time.perf_counter() - t:.2f} s")
        sign_in(c, "casey")
        bid, last = b["batch_id"], -(-len(b["rollbacks"]) // PAGE)

        def med(path: str, **kw) -> float:
            xs = []
            for _ in range(a.repeat):
                t = time.perf_counter()
                r = c.get(path, **kw)
                xs.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text[:300]
            return statistics.median(xs)

        base = med(f"/v1/rollbacks/batches/{bid}", headers=bearer("ops"))
        q, p1, pl = med("/ui"), med(f"/ui/batches/{bid}"), med(f"/ui/batches/{bid}?page={last}")
        print(f"GET /v1/rollbacks/batches/{{id}} (batch_status, baseline): {base * 1000:.0f} ms")
        print(f"GET /ui: {q * 1000:.0f} ms; batch page 1: {p1 * 1000:.0f} ms ({p1 / base:.2f} of the baseline); "
              f"page {last}: {pl * 1000:.0f} ms (medians of {a.repeat})")
        html = c.get(f"/ui/batches/{bid}").text
        form = {"csrf": re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1),
                "batch_hash": b["batch_hash"], "verdict": "approve"}
        t = time.perf_counter()
        r = c.post(f"/ui/batches/{bid}", data=form)
        msg = re.search(r'id="msg">(.*?)</section>', r.text, re.S)
        took = time.perf_counter() - t
        print(f"approve the batch through the form: {took:.2f} s ({msg.group(1) if msg else r.status_code})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
