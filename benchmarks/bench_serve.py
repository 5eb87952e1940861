"""Load test of ``stopline serve`` (issue 19), on loopback only, bounded in time.

    python benchmarks/bench_serve.py             # full run (about 2 minutes on 2 cores)
    python benchmarks/bench_serve.py --quick     # smoke run (1 s per line)
    python benchmarks/bench_serve.py --json      # the figures as JSON on stdout

Each line starts a server process on a free loopback port and loads it with ``wrk``
(Debian's package; a Python closed-loop generator when wrk is absent), 16 connections,
one AuthZEN request of the interop Todo scenario (examples/authzen-todo, an allow):

- baselines in the same run: a raw ASGI callable and a bare FastAPI route returning a
  constant (uvicorn's and FastAPI's floor, no policy work);
- ``POST /access/v1/evaluation`` without recording: the raw ASGI fast path and, for
  comparison, the same handler behind FastAPI routing (``--no-fast-path``); 1 and 2 workers;
- with every decision recorded in a SQLite ledger (``--ledger``; concurrent decisions
  group-committed by ``Runtime.gate_many``), 1 and 2 workers, and 1 worker under 64
  connections (more requests waiting per commit: bigger batches);
- a recorded ``POST /access/v1/evaluations`` of 500 items, ``execute_all`` (the items share
  the recorder's transactions) against the same items decided and recorded one by one
  (``deny_on_first_deny``, none denied): the ratio;
- p50/p99 at a fixed offered rate of 1,000 req/s (``benchmarks/loadgen.py``: open loop,
  request i due at start + i/rate whatever the earlier ones did, so a slow server does
  not slow the generator down; latency from the write, or from the due time when the
  request had to wait for a connection), 1 worker: without recording, with every
  decision recorded (SQLite, durability full: each commit fsyncs), and recorded with
  ``?durability=normal`` (no fsync per commit).

``--profile`` instead measures in-process, without sockets, where one request's time goes
(microseconds per request, process CPU time and wall time, medians of 3 to 5 runs): the
ASGI stacks (raw ASGI, a Starlette route, a FastAPI route with the identity dependency,
one with a pydantic body model, the shipped raw fast path), the handler's parts (JSON
parse, validation, the engine, the answer and its JSON, metrics), and the recorded path
(the fast path with a SQLite ledger at 16 concurrent requests; ``Runtime.gate`` and
``gate_many`` alone, durability full and normal).

Every line also reports the server's CPU time per request (user + system of the server
process and its workers, from /proc), which a loaded machine distorts far less than
wall-clock rates.

Goals (issue 19): >= 3,000 req/s, one worker, no recording; p99 <= 2 ms at 1,000 req/s;
>= 1,000 req/s with every decision recorded. Asserts no timing: prints each goal as
`met` or `MISSED` with the load average at the start.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUEST = {"subject": {"type": "user", "id": "CiRmZDA2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"},
           "action": {"name": "can_update_todo"},
           "resource": {"type": "todo", "id": "7240d0db", "properties": {"ownerID": "rick@the-citadel.com"}}}
BODY = json.dumps(REQUEST).encode()
PATH = "/access/v1/evaluation"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, argv: list[str], port: int) -> None:
        self.port = port
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("POST", PATH, BODY, {"content-type": "application/json"})
                if c.getresponse().status == 200:
                    c.close()
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not come up")
            time.sleep(0.2)
        for _ in range(200):  # warm up
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("POST", PATH, BODY, {"content-type": "application/json"})
            c.getresponse().read()
            c.close()

    def cpu_seconds(self) -> float:
        """User + system CPU of the server process and its worker processes (Linux /proc)."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                f = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid = int(stat.parent.name)
            if pid == self.proc.pid or int(f[1]) == self.proc.pid:  # f[1]: the parent's pid
                total += (int(f[11]) + int(f[12])) / tick  # utime, stime
        return total

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def stopline(port: int, *extra: str, workers: int = 1) -> list[str]:
    return [sys.executable, "-m", "policy_engine.cli", "serve", "examples/authzen-todo/", "--port", str(port),
            "--workers", str(workers), "--reload-interval", "0", *extra]


def uvicorn_app(port: int, target: str) -> list[str]:
    return [sys.executable, "-m", "uvicorn", target, "--port", str(port), "--log-level", "warning", "--no-access-log",
            "--app-dir", str(ROOT)]


# ---------------------------------------------------------------------------------- load generators
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(port: int, seconds: float, connections: int = 16) -> dict:
    script = Path(tempfile.mkdtemp()) / "post.lua"
    script.write_text(f'wrk.method = "POST"\nwrk.body = {json.dumps(BODY.decode())}\n'
                      'wrk.headers["Content-Type"] = "application/json"\n')
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}{PATH}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "p50_ms": _ms(pct["50"]),
        "p99_ms": _ms(pct["99"]),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "generator": "wrk",
    }


def closed(port: int, seconds: float, threads: int = 16) -> dict:
    """The fallback when wrk is absent: closed-loop keep-alive clients in threads."""
    lat: list[float] = []
    lock = threading.Lock()

    def run() -> None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        end = time.perf_counter() + seconds
        mine = []
        while time.perf_counter() < end:
            t = time.perf_counter()
            c.request("POST", PATH, BODY, {"content-type": "application/json"})
            c.getresponse().read()
            mine.append(time.perf_counter() - t)
        with lock:
            lat.extend(mine)

    ts = [threading.Thread(target=run) for _ in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    lat.sort()
    return {
        "rps": len(lat) / (time.perf_counter() - t0),
        "requests": len(lat),
        "p50_ms": statistics.median(lat) * 1e3,
        "p99_ms": lat[int(len(lat) * 0.99) - 1] * 1e3,
        "non_2xx": 0,
        "generator": "python closed-loop",
    }


def fixed_rate(port: int, seconds: float, rate: float = 1000.0) -> dict:
    """benchmarks/loadgen.py in its own process: open loop at ``rate`` requests per second."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "loadgen.py"), "--port", str(port),
                          "--rate", str(rate), "--seconds", str(seconds)], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout)
    r.update(rps=r["achieved_rate"], non_2xx=r["non_2xx"] + r["failed"],
             generator=f"loadgen open loop {rate:g}/s, lag p99 {r['lag_p99_ms']:.2f} ms")
    return r


def batches(port: int, items: int, repeat: int) -> dict:
    """One ``POST /access/v1/evaluations`` of `items` allowed items, with every decision
    recorded: ``execute_all`` (the items share the recorder's transactions) against the
    same request with ``deny_on_first_deny`` (no item is denied, so every item is decided
    and recorded, one by one: one transaction each, what `execute_all` did before the
    fourteenth session). Medians in ms, interleaved."""
    def post(semantic: str) -> float:
        body = json.dumps({**REQUEST, "evaluations": [{}] * items,
                           "options": {"evaluations_semantic": semantic}}).encode()
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        t = time.perf_counter()
        c.request("POST", "/access/v1/evaluations", body, {"content-type": "application/json"})
        r = c.getresponse()
        out = json.loads(r.read())
        c.close()
        took = (time.perf_counter() - t) * 1000
        if r.status != 200 or len(out["evaluations"]) != items or not all(e["decision"] for e in out["evaluations"]):
            raise RuntimeError(f"batch answered {r.status}: {str(out)[:300]}")
        return took

    grouped: list[float] = []
    single: list[float] = []
    for _ in range(repeat):
        grouped.append(post("execute_all"))
        single.append(post("deny_on_first_deny"))
    return {"items": items, "grouped_ms": statistics.median(grouped), "one_by_one_ms": statistics.median(single)}


def _fsync_ms(d: Path, n: int = 100) -> tuple[float, float]:
    """p50 and p99 of one 4 KiB write + fsync in ``d``: the floor of a durable commit."""
    ts = []
    with open(d / "fsync.probe", "wb") as f:
        for _ in range(n):
            f.write(b"x" * 4096)
            f.flush()
            t = time.perf_counter()
            os.fsync(f.fileno())
            ts.append((time.perf_counter() - t) * 1e3)
    ts.sort()
    return statistics.median(ts), ts[int(n * 0.99) - 1]


# ---------------------------------------------------------------------------------- in-process profile
def _asgi_driver(app, path: str = PATH, body: bytes = BODY):
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}

    async def one() -> int:
        status = [0]

        async def receive() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(m: dict) -> None:
            if m["type"] == "http.response.start":
                status[0] = m["status"]

        await app(dict(scope), receive, send)
        return status[0]

    return one


def _per_request_us(one, n: int, concurrency: int = 1, repeat: int = 5) -> tuple[float, float]:
    """(CPU, wall) microseconds per request, medians of ``repeat`` runs; CPU is the whole
    process's (every thread: the recorder's too), which a loaded machine distorts far less."""
    import asyncio

    async def run() -> list[tuple[float, float]]:
        for _ in range(min(n, 300)):
            assert await one() == 200
        out = []
        for _ in range(repeat):
            c, t = time.process_time(), time.perf_counter()
            if concurrency == 1:
                for _ in range(n):
                    await one()
            else:
                for _ in range(n // concurrency):
                    await asyncio.gather(*[one() for _ in range(concurrency)])
            k = (n - n % concurrency) / 1e6
            out.append(((time.process_time() - c) / k, (time.perf_counter() - t) / k))
        return out

    runs = asyncio.run(run())
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def _call_us(f, n: int = 20000, repeat: int = 5) -> tuple[float, float]:
    import timeit

    cpu = statistics.median(timeit.repeat(f, number=n, repeat=repeat, timer=time.process_time)) / n * 1e6
    wall = statistics.median(timeit.repeat(f, number=n, repeat=repeat)) / n * 1e6
    return cpu, wall


def _per_thread(app, n: int) -> list[tuple[str, tuple[float, float]]]:
    """A recorded request's CPU split by thread (``time.thread_time``): the event loop's, and
    the recorder thread's with ``Runtime.gate_many`` inside it (wall columns: 0)."""
    import asyncio

    acc = {"record": 0.0, "gate_many": 0.0, "n": 0}
    recorder, rt = app.state.recorder, app.state.runtime
    record, gate_many = recorder._record, rt.gate_many

    def timed_record(batch: list) -> None:
        t = time.thread_time()
        record(batch)
        acc["record"] += time.thread_time() - t
        acc["n"] += len(batch)

    def timed_gate_many(*a, **k):
        t = time.thread_time()
        try:
            return gate_many(*a, **k)
        finally:
            acc["gate_many"] += time.thread_time() - t

    recorder._record, rt.gate_many = timed_record, timed_gate_many
    one = _asgi_driver(app)

    async def run() -> float:
        for _ in range(100):
            await one()
        for k in acc:
            acc[k] = 0
        t = time.thread_time()
        for _ in range(n // 16):
            await asyncio.gather(*[one() for _ in range(16)])
        return time.thread_time() - t

    loop_cpu = asyncio.run(run())
    k = max(1, acc["n"]) / 1e6
    return [("recorded, of which the event loop thread (fast path, hand-off)", (loop_cpu / k, 0.0)),
            ("recorded, of which the recorder thread", (acc["record"] / k, 0.0)),
            ("recorded, of which Runtime.gate_many in the recorder thread", (acc["gate_many"] / k, 0.0))]


def _timed(f, k: int, per: int, repeat: int = 3) -> tuple[float, float]:
    runs = []
    for _ in range(repeat):
        c, t = time.process_time(), time.perf_counter()
        for _ in range(k):
            f()
        runs.append(((time.process_time() - c) / (k * per) * 1e6, (time.perf_counter() - t) / (k * per) * 1e6))
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def profile(quick: bool) -> list[tuple[str, tuple[float, float]]]:
    """Where one request's time goes, in process (no sockets, no HTTP parsing)."""
    import uuid

    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    from benchmarks.serve_baseline import EvaluationRequest, asgi_app, fastapi_app, pydantic_authzen_app
    from policy_engine.runtime import Runtime
    from policy_engine.server import ServerConfig, authzen, create_app

    n = 1000 if quick else 5000
    todo = str(ROOT / "examples" / "authzen-todo")
    fast = create_app(ServerConfig(todo, reload_interval=0))
    slow = create_app(ServerConfig(todo, reload_interval=0, fast_path=False))
    st = fast.state

    async def starlette_endpoint(request):
        out = await authzen.handle(st, PATH, await request.body())
        return Response(json.dumps(out).encode(), media_type="application/json")

    starlette_app = Starlette(routes=[Route(PATH, starlette_endpoint, methods=["POST"])])

    pyd = pydantic_authzen_app(st)

    rows = [
        ("ASGI: raw ASGI constant (uvicorn's floor without HTTP)", _per_request_us(_asgi_driver(asgi_app), n)),
        ("ASGI: bare FastAPI route constant", _per_request_us(_asgi_driver(fastapi_app), n)),
        ("ASGI: AuthZEN, Starlette route (no FastAPI)", _per_request_us(_asgi_driver(starlette_app), n)),
        ("ASGI: AuthZEN, FastAPI route + identity dependency (--no-fast-path)", _per_request_us(_asgi_driver(slow), n)),
        ("ASGI: AuthZEN, FastAPI route + dependency + pydantic body model", _per_request_us(_asgi_driver(pyd), n)),
        ("ASGI: AuthZEN, raw fast path (shipped)", _per_request_us(_asgi_driver(fast), n)),
    ]
    obj = authzen.parse_json(BODY)
    eng = st.store.engine
    act = authzen.to_action(obj, st.default_workflow(eng))
    d = eng.evaluate(act, None, None)
    res = authzen.result(d, str(uuid.uuid4()), False)
    hist = st.metrics.latency.labels(PATH)
    rows += [
        ("part: JSON parse (json.loads)", _call_us(lambda: authzen.parse_json(BODY))),
        ("part: validation by hand (closed schema)", _call_us(lambda: authzen.parse_evaluation(obj))),
        ("part: pydantic validation of the same body", _call_us(lambda: EvaluationRequest.model_validate(obj))),
        ("part: to_action + engine.evaluate", _call_us(lambda: eng.evaluate(authzen.to_action(obj, "todo"), None,
                                                                             None))),
        ("part: decision id (uuid4) + answer + JSON dump", _call_us(
            lambda: json.dumps(authzen.result(d, str(uuid.uuid4()), False)).encode())),
        ("part: metrics (decision counter + 2 histograms)", _call_us(
            lambda: (st.metrics.decided("allow", "authzen"), hist.observe(0.001),
                     st.metrics.evaluation.observe(0.001)))),
    ]
    del res
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-prof-"))
    try:
        rec = create_app(ServerConfig(todo, ledger=f"sqlite:///{tmp}/p.db", reload_interval=0))
        rows.append(("recorded: fast path + SQLite ledger, 16 concurrent (per request)",
                     _per_request_us(_asgi_driver(rec), n // 2, concurrency=16, repeat=3)))
        rows += _per_thread(rec, n // 2)
        rec.state.close()
        for dur in ("full", "normal"):
            with Runtime.open(todo, ledger=f"sqlite:///{tmp}/g-{dur}.db?durability={dur}") as rt:
                batch = [act] * 16
                rt.gate_many(batch)
                k = 20 if quick else 60
                rows.append((f"recorded: Runtime.gate_many, batches of 16, durability {dur} (per decision)",
                             _timed(lambda b=batch: rt.gate_many(b), k, 16)))
                rows.append((f"recorded: Runtime.gate one at a time, durability {dur}",
                             _timed(lambda: rt.gate(act), k, 1)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


# ---------------------------------------------------------------------------------- the run
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--profile", action="store_true", help="in-process: where one request's time goes")
    args = ap.parse_args()
    if args.profile:
        sys.path.insert(0, str(ROOT))
        load_avg = os.getloadavg()[0]
        rows = profile(args.quick)
        if args.json:
            print(json.dumps({"load_avg": load_avg, "profile_us": {k: {"cpu": c, "wall": w} for k, (c, w) in rows}},
                             indent=2))
        else:
            print(f"{'microseconds per request, median of runs':<78} {'CPU':>9} {'wall':>9}")
            for name, (cpu, wall) in rows:
                print(f"{name:<78} {cpu:9.1f} {wall:9.1f}")
            print(f"\nload average at start: {load_avg:.2f} on {os.cpu_count()} cores")
        return 0
    secs = args.seconds or (1.0 if args.quick else 6.0)
    load = wrk if shutil.which("wrk") else closed
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    rec = lambda name: ("--ledger", f"sqlite:///{tmp}/{name}.db")  # noqa: E731
    lines = [
        ("baseline: raw ASGI constant", lambda p: uvicorn_app(p, "benchmarks.serve_baseline:asgi_app"), load),
        (
            "baseline: bare FastAPI route constant",
            lambda p: uvicorn_app(p, "benchmarks.serve_baseline:fastapi_app"),
            load,
        ),
        ("authzen, no recording, fast path, 1 worker", lambda p: stopline(p), load),
        ("authzen, no recording, FastAPI route, 1 worker", lambda p: stopline(p, "--no-fast-path"), load),
        ("authzen, no recording, fast path, 2 workers", lambda p: stopline(p, workers=2), load),
        ("authzen, SQLite recording, 1 worker", lambda p: stopline(p, *rec("a")), load),
        ("authzen, SQLite recording, 2 workers", lambda p: stopline(p, *rec("b"), workers=2), load),
        (
            "authzen, SQLite recording, 1 worker, 64 connections",
            lambda p: stopline(p, *rec("e")),
            lambda port, s: load(port, s, connections=64) if load is wrk else load(port, s, threads=64),
        ),
        ("fixed 1,000 req/s: authzen, no recording, 1 worker", lambda p: stopline(p), fixed_rate),
        ("fixed 1,000 req/s: authzen, SQLite recording, 1 worker", lambda p: stopline(p, *rec("c")), fixed_rate),
        (
            "fixed 1,000 req/s: authzen, SQLite recording (durability normal), 1 worker",
            lambda p: stopline(p, "--ledger", f"sqlite:///{tmp}/d.db?durability=normal"),
            fixed_rate,
        ),
    ]
    if args.quick:
        lines = [lines[0], lines[2], lines[5], lines[7]]
    results = {}
    load_avg = os.getloadavg()[0]
    fsync_ms = _fsync_ms(tmp)
    for name, argv, gen in lines:
        port = free_port()
        srv = Server(argv(port), port)
        try:
            cpu0 = srv.cpu_seconds()
            results[name] = gen(port, secs)
            results[name]["server_cpu_us_per_request"] = (srv.cpu_seconds() - cpu0) / max(
                1, results[name]["requests"]) * 1e6
        finally:
            srv.stop()
        if not args.json:
            r = results[name]
            print(
                f"{name:<74} {r['rps']:>9,.0f} req/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:7.2f} ms"
                f"  server CPU {r['server_cpu_us_per_request']:5.0f} us/req  non-2xx {r['non_2xx']}"
                f"  ({r['generator']})",
                flush=True,
            )
    port = free_port()  # a recorded AuthZEN batch: its items in shared transactions, against one by one
    srv = Server(stopline(port, *rec("batch")), port)
    try:
        results["recorded batch"] = b = batches(port, 100 if args.quick else 500, 2 if args.quick else 5)
    finally:
        srv.stop()
    if not args.json:
        print(f"recorded AuthZEN batch of {b['items']} items (SQLite): execute_all {b['grouped_ms']:.0f} ms "
              f"({b['grouped_ms'] * 1000 / b['items']:.0f} us an item); the same items one transaction each "
              f"(deny_on_first_deny, none denied) {b['one_by_one_ms']:.0f} ms: "
              f"{b['one_by_one_ms'] / b['grouped_ms']:.1f}x", flush=True)
    goals = []
    if not args.quick:
        r1 = results["authzen, no recording, fast path, 1 worker"]["rps"]
        p99 = results["fixed 1,000 req/s: authzen, no recording, 1 worker"]
        rec_rps = max(
            results["authzen, SQLite recording, 1 worker"]["rps"],
            results["authzen, SQLite recording, 2 workers"]["rps"],
        )
        rec64 = results["authzen, SQLite recording, 1 worker, 64 connections"]["rps"]
        p99_rec = results["fixed 1,000 req/s: authzen, SQLite recording, 1 worker"]
        goals = [
            (">= 3,000 req/s, 1 worker, no recording", r1 >= 3000, f"{r1:,.0f}"),
            ("p99 <= 2 ms at 1,000 req/s (no recording)", p99["p99_ms"] <= 2.0 and p99["rps"] >= 950,
             f"{p99['p99_ms']:.2f} ms at {p99['rps']:,.0f} req/s"),
            ("p99 <= 2 ms at 1,000 req/s (every decision recorded, fsync per commit)",
             p99_rec["p99_ms"] <= 2.0 and p99_rec["rps"] >= 950,
             f"{p99_rec['p99_ms']:.2f} ms at {p99_rec['rps']:,.0f} req/s; one fsync on this disk: p50 "
             f"{fsync_ms[0]:.2f} ms, p99 {fsync_ms[1]:.2f} ms"),
            (">= 1,000 req/s with every decision recorded (16 connections)", rec_rps >= 1000, f"{rec_rps:,.0f}"),
            (">= 1,000 req/s with every decision recorded (64 connections)", rec64 >= 1000, f"{rec64:,.0f}"),
        ]
    if args.json:
        print(
            json.dumps(
                {
                    "load_avg": load_avg,
                    "seconds": secs,
                    "fsync_ms": {"p50": fsync_ms[0], "p99": fsync_ms[1]},
                    "results": results,
                    "goals": {g: {"met": ok, "figure": f} for g, ok, f in goals},
                },
                indent=2,
            )
        )
    else:
        print(f"\nload average at start: {load_avg:.2f} on {os.cpu_count()} cores; {secs:g} s per line; "
              f"fsync of 4 KiB on the ledger's disk: p50 {fsync_ms[0]:.2f} ms, p99 {fsync_ms[1]:.2f} ms")
        for g, ok, f in goals:
            print(f"goal {g}: {f}: {'met' if ok else 'MISSED'}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
