"""An open-loop, fixed-rate HTTP/1.1 load generator (what wrk2 does; wrk2 is not in Debian).

    python benchmarks/loadgen.py --port 8181 --rate 1000 --seconds 5 [--connections 64]

Request ``i`` is due at ``start + i / rate`` whatever happened to the earlier ones (no
coordinated omission: a slow server does not slow the generator down). Each due request
takes an idle keep-alive connection of the pool and is written at once; if every
connection is busy it waits for one, and that wait counts in its latency. Latency is
measured from the moment the request is written, or from when it was due when it had to
wait for a connection (the server's fault); the generator's own lateness (how long after
its due time a request was written although a connection was idle: the event loop's
timer granularity and the shared CPU) is reported on its own as ``lag``, not charged to
the server. Prints one JSON object: achieved rate, p50/p90/p99/max latency, lag, errors.

Runs in its own process (asyncio on uvloop when installed), so it does not share a GIL
with the server; on a 2-core machine it still shares the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, max(0, int(round(q * len(xs))) - 1))]


class _Conn(asyncio.Protocol):
    """One keep-alive connection: one request in flight at a time; the response is read up
    to its Content-Length."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._check()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))

    def _check(self) -> None:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None:
            return
        head = bytes(self.buf[:end]).lower()
        n = 0
        for line in head.split(b"\r\n")[1:]:
            if line.startswith(b"content-length:"):
                n = int(line[15:])
        if len(self.buf) < end + 4 + n:
            return
        status = int(head[9:12])
        del self.buf[:end + 4 + n]
        w, self.waiter = self.waiter, None
        if not w.done():
            w.set_result(status)

    def request(self, data: bytes) -> asyncio.Future:
        self.waiter = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(data)
        return self.waiter


async def run(host: str, port: int, path: str, body: bytes, rate: float, seconds: float, connections: int,
              headers: dict[str, str]) -> dict:
    loop = asyncio.get_running_loop()
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    req = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n{extra}"
           f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    idle: asyncio.Queue[_Conn] = asyncio.Queue()
    for _ in range(connections):
        _, proto = await loop.create_connection(_Conn, host, port)
        idle.put_nowait(proto)
    total = int(rate * seconds)
    lat: list[float] = []
    lag: list[float] = []
    errors = {"non_2xx": 0, "failed": 0}
    waited = [0]
    done = asyncio.Event()
    pending = [total]

    async def one(due: float) -> None:
        try:
            if idle.empty():
                waited[0] += 1
                conn = await idle.get()
                t0 = due  # waited for a connection: the server's backlog, counted
            else:
                conn = idle.get_nowait()
                t0 = time.perf_counter()
                lag.append(t0 - due)
            try:
                status = await conn.request(req)
                lat.append(time.perf_counter() - t0)
                if not 200 <= status < 300:
                    errors["non_2xx"] += 1
                idle.put_nowait(conn)
            except (ConnectionError, OSError):
                errors["failed"] += 1
                _, proto = await loop.create_connection(_Conn, host, port)
                idle.put_nowait(proto)
        finally:
            pending[0] -= 1
            if pending[0] == 0:
                done.set()

    start = time.perf_counter() + 0.05
    gap = 1.0 / rate
    i = 0
    while i < total:
        now = time.perf_counter()
        due = start + i * gap
        if due > now:
            await asyncio.sleep(due - now)
            continue
        while i < total and start + i * gap <= now:  # everything due by now, at once
            loop.create_task(one(start + i * gap))
            i += 1
    sent_end = time.perf_counter()
    try:
        await asyncio.wait_for(done.wait(), timeout=30)
    except TimeoutError:
        pass
    wall = max(sent_end, time.perf_counter()) - start
    lat.sort()
    lag.sort()
    ms = 1e3
    return {"offered_rate": rate, "achieved_rate": len(lat) / wall, "requests": len(lat), "seconds": wall,
            "p50_ms": _pct(lat, 0.50) * ms, "p90_ms": _pct(lat, 0.90) * ms, "p99_ms": _pct(lat, 0.99) * ms,
            "max_ms": (lat[-1] if lat else float("nan")) * ms, "lag_p50_ms": _pct(lag, 0.50) * ms,
            "lag_p99_ms": _pct(lag, 0.99) * ms, "waited_for_connection": waited[0], "connections": connections,
            **errors}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/access/v1/evaluation")
    ap.add_argument("--body", default=None, help="the JSON body (default: the Todo scenario request of bench_serve)")
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--header", action="append", default=[], metavar="NAME:VALUE")
    args = ap.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        ap.error("loopback only")
    body = args.body.encode() if args.body else json.dumps(
        {"subject": {"type": "user", "id": "CiRmZDA2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"},
         "action": {"name": "can_update_todo"},
         "resource": {"type": "todo", "id": "7240d0db", "properties": {"ownerID": "rick@the-citadel.com"}}}).encode()
    headers = dict(h.split(":", 1) for h in args.header)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    out = asyncio.run(run(args.host, args.port, args.path, body, args.rate, args.seconds, args.connections,
                          {k.strip(): v.strip() for k, v in headers.items()}))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
