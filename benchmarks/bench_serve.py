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
  group-committed by ``Runtime.gate_many``), 1 and 2 workers;
- p50/p99 at about 1,000 req/s (wrk on 4 connections, each pacing its requests with a
  delay; a paced Python generator without wrk), fast path, 1 worker.

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
        "p50_ms": _ms(pct["50"]),
        "p99_ms": _ms(pct["99"]),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "generator": "wrk",
    }


def wrk_paced(port: int, seconds: float, rate: float, connections: int = 4) -> dict:
    """wrk with a per-request delay on each of a few connections: about ``rate`` requests per
    second in all (less the service time), each request's own latency reported."""
    script = Path(tempfile.mkdtemp()) / "paced.lua"
    script.write_text(
        f'wrk.method = "POST"\nwrk.body = {json.dumps(BODY.decode())}\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"function delay() return {connections * 1000.0 / rate:.3f} end\n"
    )
    out = subprocess.run(
        [
            "wrk",
            "-t1",
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
    return {
        "rps": rps,
        "p50_ms": _ms(pct["50"]),
        "p99_ms": _ms(pct["99"]),
        "non_2xx": 0,
        "generator": f"wrk, {connections} connections paced to {rate:g}/s",
    }


def paced(port: int, seconds: float, rate: float, threads: int = 4) -> dict:
    """Open-loop-ish: each thread sends on its own schedule (rate/threads per second) over
    one keep-alive connection; latency is measured from the scheduled send time."""
    lat: list[float] = []
    bad = [0]
    lock = threading.Lock()

    def run(k: int) -> None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        gap = threads / rate
        t_next = time.perf_counter() + k * gap / threads
        end = time.perf_counter() + seconds
        mine = []
        while t_next < end:
            now = time.perf_counter()
            if now < t_next:
                time.sleep(t_next - now)
            c.request("POST", PATH, BODY, {"content-type": "application/json"})
            r = c.getresponse()
            r.read()
            mine.append(time.perf_counter() - t_next)
            if r.status != 200:
                bad[0] += 1
            t_next += gap
        with lock:
            lat.extend(mine)
        c.close()

    ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    lat.sort()
    return {
        "rps": len(lat) / wall,
        "p50_ms": statistics.median(lat) * 1e3,
        "p99_ms": lat[int(len(lat) * 0.99) - 1] * 1e3,
        "non_2xx": bad[0],
        "generator": f"python paced {rate:g}/s",
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
        "p50_ms": statistics.median(lat) * 1e3,
        "p99_ms": lat[int(len(lat) * 0.99) - 1] * 1e3,
        "non_2xx": 0,
        "generator": "python closed-loop",
    }


# ---------------------------------------------------------------------------------- the run
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--seconds", type=float, default=None)
    args = ap.parse_args()
    secs = args.seconds or (1.0 if args.quick else 6.0)
    load = wrk if shutil.which("wrk") else closed
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
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
        ("authzen, SQLite recording, 1 worker", lambda p: stopline(p, "--ledger", f"sqlite:///{tmp}/a.db"), load),
        (
            "authzen, SQLite recording, 2 workers",
            lambda p: stopline(p, "--ledger", f"sqlite:///{tmp}/b.db", workers=2),
            load,
        ),
        (
            "authzen, no recording, fast path, 1 worker, paced 1,000 req/s",
            lambda p: stopline(p),
            lambda port, s: (wrk_paced if shutil.which("wrk") else paced)(port, s, 1000.0),
        ),
    ]
    if args.quick:
        lines = [lines[0], lines[2], lines[5]]
    results = {}
    load_avg = os.getloadavg()[0]
    for name, argv, gen in lines:
        port = free_port()
        srv = Server(argv(port), port)
        try:
            results[name] = gen(port, secs)
        finally:
            srv.stop()
        if not args.json:
            r = results[name]
            print(
                f"{name:<62} {r['rps']:>9,.0f} req/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:7.2f} ms"
                f"  non-2xx {r['non_2xx']}  ({r['generator']})",
                flush=True,
            )
    goals = []
    if not args.quick:
        r1 = results["authzen, no recording, fast path, 1 worker"]["rps"]
        p99 = results["authzen, no recording, fast path, 1 worker, paced 1,000 req/s"]["p99_ms"]
        rec = max(
            results["authzen, SQLite recording, 1 worker"]["rps"],
            results["authzen, SQLite recording, 2 workers"]["rps"],
        )
        goals = [
            (">= 3,000 req/s, 1 worker, no recording", r1 >= 3000, f"{r1:,.0f}"),
            ("p99 <= 2 ms at 1,000 req/s", p99 <= 2.0, f"{p99:.2f} ms"),
            (">= 1,000 req/s with every decision recorded", rec >= 1000, f"{rec:,.0f}"),
        ]
    if args.json:
        print(
            json.dumps(
                {
                    "load_avg": load_avg,
                    "seconds": secs,
                    "results": results,
                    "goals": {g: {"met": ok, "figure": f} for g, ok, f in goals},
                },
                indent=2,
            )
        )
    else:
        print(f"\nload average at start: {load_avg:.2f} on {os.cpu_count()} cores; {secs:g} s per line")
        for g, ok, f in goals:
            print(f"goal {g}: {f}: {'met' if ok else 'MISSED'}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
