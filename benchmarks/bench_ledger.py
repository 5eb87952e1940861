"""Stopline ledger benchmark: durable appends, verify, proofs and storage, and how they grow.

    python benchmarks/bench_ledger.py                 # full run (sizes to 10^6 on SQLite; ~15 min on 2 cores)
    python benchmarks/bench_ledger.py --quick         # smoke run (seconds; used by tests)
    python benchmarks/bench_ledger.py --json-out benchmarks/results/DATE-ledger.json

Every rate is a median of rounds, next to a baseline measured in the same run on the same
database and durability settings: a plain INSERT of a row of the same size into a table
with no hashing, no chain, no lock row and no triggers (``baseline``). Lines:

  sqlite 1 writer append          Ledger.append, one entry per transaction (WAL, synchronous=FULL)
  sqlite 1 writer append_many     Ledger.append_many of 100 entries per transaction (batching)
  postgresql 8 writers append     8 processes, Ledger.append, one entry per transaction
  postgresql 8 writers batch      8 processes, append_many of 10 per transaction
  verify                          Ledger.verify() on SQLite at each size, seconds per 10^5 entries
  prove / prove_consistency       one proof (median of 30, random entries) at each size: time and JSON bytes
  bytes per entry                 database size / entries (SQLite file after a WAL checkpoint; PostgreSQL
                                  relation sizes incl. indexes)

No figure is asserted (the machine is shared); goals are printed as met / MISSED.
PostgreSQL lines need STOPLINE_BENCH_POSTGRES_URL (default the test server); they are
skipped with a reason when it is unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

from policy_engine.ledger import Ledger, NewEntry  # noqa: E402

PG_URL = os.environ.get("STOPLINE_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
GOALS = {"sqlite_one_writer_per_s": 5000, "postgres_8_writers_per_s": 1000}
BODY = {"action": {"type": "refund", "amount": 120.5, "customer": "c-1042", "items": ["a-1", "b-7"]},
        "decision": {"effect": "allow", "rule": "small_refunds"}, "policy_hash": "9f" * 32}


def _body(i: int) -> dict:
    return {**BODY, "n": i}


# ----------------------------------------------------------------------------- backends
def sqlite_url(d: str, name: str) -> str:
    return f"sqlite:///{d}/{name}.db"


def pg_schema_url() -> tuple[str, str] | None:
    try:
        import psycopg  # noqa: F401
        eng = create_engine(PG_URL)
        name = "bench_" + uuid.uuid4().hex[:10]
        with eng.begin() as c:
            c.execute(text(f"CREATE SCHEMA {name}"))
        eng.dispose()
    except Exception as e:  # noqa: BLE001
        print(f"postgresql: skipped ({type(e).__name__}: {str(e).splitlines()[0][:100]})")
        return None
    return PG_URL + ("&" if "?" in PG_URL else "?") + "options=" + quote(f"-csearch_path={name}"), name


def pg_drop(name: str) -> None:
    eng = create_engine(PG_URL)
    with eng.begin() as c:
        c.execute(text(f"DROP SCHEMA {name} CASCADE"))
    eng.dispose()


# ----------------------------------------------------------------------------- baseline
BASELINE_DDL = "CREATE TABLE IF NOT EXISTS plain (seq BIGINT PRIMARY KEY, id VARCHAR(64), body TEXT, time VARCHAR(32))"


def baseline_engine(url: str, synchronous: str = "FULL"):
    eng = create_engine(url)
    if url.startswith("sqlite"):
        from sqlalchemy import event

        @event.listens_for(eng, "connect")
        def _c(dbapi, _rec):
            cur = dbapi.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()
    with eng.begin() as c:
        c.execute(text(BASELINE_DDL))
    return eng


def baseline_inserts(eng, count: int, batch: int, start: int) -> float:
    """Plain INSERTs (same body text), ``batch`` per transaction; returns rows/s."""
    body = json.dumps(BODY, separators=(",", ":"))
    now = datetime.now(UTC).isoformat()
    t = time.perf_counter()
    for i in range(start, start + count, batch):
        with eng.begin() as c:
            c.execute(
                text("INSERT INTO plain (seq, id, body, time) VALUES (:s, :i, :b, :t)"),
                [
                    {"s": j, "i": str(uuid.uuid4()), "b": body, "t": now}
                    for j in range(i, min(i + batch, start + count))
                ],
            )
    return count / (time.perf_counter() - t)


# ----------------------------------------------------------------------------- appends
def ledger_appends(led: Ledger, count: int, batch: int) -> float:
    t = time.perf_counter()
    if batch == 1:
        for i in range(count):
            led.append("decision", _body(i))
    else:
        for i in range(0, count, batch):
            led.append_many(NewEntry("decision", _body(j)) for j in range(i, min(i + batch, count)))
    return count / (time.perf_counter() - t)


def threaded_appends(led: Ledger, threads: int, count: int) -> float:
    """``threads`` threads of one process, ``count`` single appends in all: they share commits."""
    import threading

    per = count // threads
    go = threading.Barrier(threads + 1)

    def work(k: int) -> None:
        go.wait()
        for i in range(per):
            led.append("decision", _body(k * per + i))

    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    go.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    return threads * per / (time.perf_counter() - t0)


def _child(url: str, count: int, batch: int, baseline: bool, go_r: int, done_w: int) -> None:
    code = 1
    try:
        if baseline:
            eng = baseline_engine(url)
        else:
            led = Ledger.open(url)
        os.read(go_r, 1)
        if baseline:
            baseline_inserts(eng, count, batch, start=(os.getpid() % 10_000) * 10**7)
        else:
            ledger_appends(led, count, batch)
        os.write(done_w, b"x")
        code = 0
    finally:
        os._exit(code)


def multi_process(url: str, procs: int, per: int, batch: int, baseline: bool) -> float:
    """``procs`` forked writers start together; returns total rows/s over the wall time."""
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    pids = []
    for _ in range(procs):
        pid = os.fork()
        if pid == 0:
            _child(url, per, batch, baseline, go_r, done_w)
        pids.append(pid)
    time.sleep(0.5)  # let every child connect
    t = time.perf_counter()
    os.write(go_w, b"g" * procs)
    for _ in range(procs):
        os.read(done_r, 1)
    wall = time.perf_counter() - t
    for pid in pids:
        os.waitpid(pid, 0)
    for fd in (go_r, go_w, done_r, done_w):
        os.close(fd)
    return procs * per / wall


# ----------------------------------------------------------------------------- growth
def fill(led: Ledger, target: int) -> float | None:
    """Grow the ledger to ``target`` entries in batches of 2,000; the rate of the last 10^4 (or fewer) appended."""
    n = led.size
    last, t_last = 0, 0.0
    while n < target:
        k = min(2000, target - n)
        t = time.perf_counter()
        led.append_many(NewEntry("decision", _body(j)) for j in range(n, n + k))
        if target - n <= 10_000:
            last, t_last = last + k, t_last + time.perf_counter() - t
        n += k
    return last / t_last if last else None


def bytes_per_entry(led: Ledger, url: str, n: int) -> float:
    eng = create_engine(url)
    with eng.begin() as c:
        if led.backend == "sqlite":
            c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            size = os.path.getsize(url.removeprefix("sqlite:///"))
        else:
            size = c.execute(
                text(
                    "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n "
                    "ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r'"
                )
            ).scalar()
    eng.dispose()
    return int(size) / n


def growth(led: Ledger, url: str, sizes: list[int], rounds: int, rnd: random.Random) -> list[dict]:
    out = []
    for n in sizes:
        fill_rate = fill(led, n)
        # single appends (one per transaction, durable) at this size, then the proofs over the first n
        k = 200
        t = time.perf_counter()
        for i in range(k):
            led.append("decision", _body(i))
        single_rate = k / (time.perf_counter() - t)
        vt = []
        for _ in range(1 if n >= 500_000 else 3):
            t = time.perf_counter()
            rep = led.verify()
            vt.append(time.perf_counter() - t)
            assert rep.ok, rep.render()
        pt, cs, ct, ps = [], [], [], []
        for _ in range(rounds):
            s = rnd.randrange(n)  # entries of the first n
            t = time.perf_counter()
            p = led.prove(s)
            pt.append(time.perf_counter() - t)
            assert p.verify()
            ps.append(len(json.dumps(p.to_json())))
            old = rnd.randint(1, n)
            t = time.perf_counter()
            cp = led.prove_consistency(old)
            ct.append(time.perf_counter() - t)
            assert cp.verify()
            cs.append(len(json.dumps(cp.to_json())))
        row = {
            "entries": n,
            "append_per_s": single_rate,
            "append_many_2000_per_s": fill_rate,
            "verify_s": statistics.median(vt),
            "verify_s_per_1e5": statistics.median(vt) / n * 1e5,
            "prove_ms": statistics.median(pt) * 1e3,
            "proof_bytes": statistics.median(ps),
            "consistency_ms": statistics.median(ct) * 1e3,
            "consistency_bytes": statistics.median(cs),
            "bytes_per_entry": bytes_per_entry(led, url, led.size),
        }
        out.append(row)
        print(
            f"  {n:>9,}  append {single_rate:6,.0f}/s, in 2,000s {fill_rate or 0:7,.0f}/s  "
            f"verify {row['verify_s']:8.2f} s ({row['verify_s_per_1e5']:.2f} s per 10^5)  "
            f"prove {row['prove_ms']:6.2f} ms {row['proof_bytes']:5.0f} B  consistency {row['consistency_ms']:6.2f} ms "
            f"{row['consistency_bytes']:5.0f} B  {row['bytes_per_entry']:6.0f} bytes/entry",
            flush=True,
        )
    return out


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: small counts (figures are rough)")
    ap.add_argument("--json-out", metavar="PATH", help="also write the figures as JSON to PATH")
    ap.add_argument("--sizes", metavar="N,N,...", help="ledger sizes for the growth lines (default 10^4,10^5,10^6)")
    ap.add_argument("--growth-only", action="store_true", help="only the growth lines (verify, proofs, bytes)")
    ap.add_argument("--no-growth", action="store_true", help="only the append lines (for repeated runs)")
    ap.add_argument(
        "--durability",
        choices=("full", "normal"),
        default="full",
        help="the ledger's durability for the SQLite lines (the baseline uses the matching synchronous)",
    )
    args = ap.parse_args(argv)
    q = args.quick
    rounds = 3 if q else 5
    n_single, n_batch = (100, 2000) if q else (1000, 20_000)
    per_proc = 25 if q else 250
    sizes = [1000, 10_000] if q else [10_000, 100_000, 1_000_000]
    if args.sizes:
        sizes = [int(x) for x in args.sizes.split(",")]
    rnd = random.Random(6962)
    fig: dict = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": q,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
    }
    print(
        f"stopline ledger benchmark{' (quick)' if q else ''} -- python {fig['python']}, {fig['cpus']} cpus, "
        f"load average {fig['load_average_1m']:.1f}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as d:
        if args.growth_only:
            gurl = sqlite_url(d, "growth")
            with Ledger.open(gurl, create=True) as gled:
                print("growth on sqlite:")
                fig["sqlite_growth"] = growth(gled, gurl, sizes, 10 if q else 30, rnd)
            if args.json_out:
                Path(args.json_out).write_text(json.dumps(fig, indent=2) + "\n")
            return 0
        # --- SQLite, one writer
        url = sqlite_url(d, "one")
        led = Ledger.open(url, create=True, durability=args.durability)
        base = baseline_engine(sqlite_url(d, "plain"), "FULL" if args.durability == "full" else "NORMAL")
        single, single_b, batch, batch_b, threaded = [], [], [], [], []
        for r in range(rounds):
            single_b.append(baseline_inserts(base, n_single, 1, start=r * 10**7))
            single.append(ledger_appends(led, n_single, 1))
            threaded.append(threaded_appends(led, 8, n_single))
            batch_b.append(baseline_inserts(base, n_batch, 100, start=r * 10**7 + 5 * 10**6))
            batch.append(ledger_appends(led, n_batch, 100))
        base.dispose()
        s, sb, b, bb, th = (statistics.median(x) for x in (single, single_b, batch, batch_b, threaded))
        fig["sqlite"] = {
            "append_per_s": s,
            "append_8_threads_per_s": th,
            "baseline_insert_per_s": sb,
            "append_many_100_per_s": b,
            "baseline_insert_100_per_s": bb,
        }
        print(
            f"sqlite (WAL, durability={args.durability}: "
            f"synchronous={'FULL' if args.durability == 'full' else 'NORMAL'}), "
            "one writer, median of rounds:"
        )
        fig["sqlite"]["durability"] = args.durability
        print(
            f"  append (1 per transaction)       {s:9,.0f}/s   baseline plain INSERT {sb:9,.0f}/s   ratio {sb / s:.2f}x"
        )
        print(
            f"  append, 8 threads of one process  {th:8,.0f}/s   (group commit: {th / s:.1f}x one thread's append)"
        )
        print(
            f"  append_many (100 per transaction) {b:8,.0f}/s   "
            f"baseline plain INSERT {bb:9,.0f}/s   ratio {bb / b:.2f}x"
        )
        g = GOALS["sqlite_one_writer_per_s"]
        verdict = "met" if s >= g else ("met with batching (append_many)" if b >= g else "MISSED")
        verdict += "; with 8 threads " + ("met" if th >= g else "MISSED")
        print(f"goal sqlite one writer >= {g:,}/s durable: append {s:,.0f}/s, append_many {b:,.0f}/s, "
              f"8 threads {th:,.0f}/s -- {verdict}")
        led.close()
        # --- PostgreSQL, 8 writers
        pg = pg_schema_url()
        if pg:
            purl, name = pg
            try:
                Ledger.open(purl, create=True).close()
                baseline_engine(purl).dispose()
                m1, m1b, m10, m10b = [], [], [], []
                for _ in range(rounds):
                    m1b.append(multi_process(purl, 8, per_proc, 1, True))
                    m1.append(multi_process(purl, 8, per_proc, 1, False))
                    m10b.append(multi_process(purl, 8, per_proc, 10, True))
                    m10.append(multi_process(purl, 8, per_proc, 10, False))
                a, ab, c, cb = (statistics.median(x) for x in (m1, m1b, m10, m10b))
                fig["postgresql"] = {
                    "append_8_writers_per_s": a,
                    "baseline_8_writers_per_s": ab,
                    "append_many_10_8_writers_per_s": c,
                    "baseline_10_8_writers_per_s": cb,
                }
                print("postgresql, 8 writer processes, median of rounds:")
                print(
                    f"  append (1 per transaction)        {a:8,.0f}/s   "
                    f"baseline plain INSERT {ab:9,.0f}/s   ratio {ab / a:.2f}x"
                )
                print(
                    f"  append_many (10 per transaction)  {c:8,.0f}/s   "
                    f"baseline plain INSERT {cb:9,.0f}/s   ratio {cb / c:.2f}x"
                )
                print(
                    f"goal postgresql 8 writers >= {GOALS['postgres_8_writers_per_s']:,}/s: append {a:,.0f}/s, "
                    f"append_many {c:,.0f}/s -- {'met' if a >= GOALS['postgres_8_writers_per_s'] else 'MISSED'} "
                    f"(one per transaction)"
                    f"{'; met with batches of 10' if c >= GOALS['postgres_8_writers_per_s'] else ''}"
                )
                if not args.no_growth:
                    gled = Ledger.open(purl)
                    print("growth on postgresql:")
                    fig["postgresql_growth"] = growth(gled, purl, sizes[:2], 10 if q else 30, rnd)
                    gled.close()
            finally:
                pg_drop(name)
        # --- growth on SQLite
        if args.no_growth:
            if args.json_out:
                Path(args.json_out).write_text(json.dumps(fig, indent=2) + "\n")
            return 0
        gurl = sqlite_url(d, "growth")
        gled = Ledger.open(gurl, create=True)
        print("growth on sqlite:")
        fig["sqlite_growth"] = growth(gled, gurl, sizes, 10 if q else 30, rnd)
        gled.close()
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(fig, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
