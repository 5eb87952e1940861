"""Shared pieces of the server tests: a real ``stopline serve`` process on a free loopback
port, an identities file with hashed API tokens, the runtime tests' small policy, and the
reviewer's sign-in and sign-out over plain HTTP (a cookie copied between clients, workers
and replicas), with which worker of a ``--workers N`` server answered."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from runtime_support import POLICY

ROOT = Path(__file__).resolve().parent.parent
#: the runtime tests' policy with a reversal window that outlasts a test run
SERVER_POLICY = POLICY.replace("within 60s", "within 1d")
TOKENS = {"casey": ("tok-casey-7f3a", ["customer_service"]), "cleo": ("tok-cleo-91bd", ["customer_service"]),
          "rita": ("tok-rita-22c0", ["reviewer"]), "ops": ("tok-ops-5d11", [])}


def free_port() -> int:
    """A loopback port no other process is handed until a server binds it. A port that was
    merely free when asked could be given to another test's `free_port()` or to a client's
    connection (pytest-xdist runs two workers) before `stopline serve` binds it: the server
    then failed to start, or the test spoke to the other test's server. Here the port is left
    in TIME_WAIT by a connection this side closed first (for a minute): the kernel hands it to
    no `bind(("", 0))` and no outgoing connection, while a listener with SO_REUSEADDR (uvicorn,
    asyncio, `http.server`, `stopline serve`'s own check) binds it at once."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # (inherited by the accepted side)
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            conn, _ = s.accept()
            conn.close()  # closed here first: the TIME_WAIT is on this port's side
            client.recv(1)  # (the FIN: the closing side is in TIME_WAIT once the other closes)
    return port


def server_policy_dir(tmp_path: Path) -> Path:
    """A policy directory holding the server tests' policy (`SERVER_POLICY`)."""
    d = tmp_path / "policies"
    d.mkdir()
    (d / "replies.policy").write_text(SERVER_POLICY, encoding="utf-8")
    return d


def write_identities(path: Path, extra: str = "") -> Path:
    from policy_engine.server.identity import hash_token

    lines = ["tokens:"]
    for who, (tok, roles) in TOKENS.items():
        lines += [f"  - principal: {who}", f"    roles: [{', '.join(roles)}]", f"    sha256: {hash_token(tok)}"]
    path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return path


def bearer(who: str) -> dict:
    return {"Authorization": f"Bearer {TOKENS[who][0]}"}


@contextlib.contextmanager
def serve(*args: str, timeout: float = 120.0, env: dict | None = None):
    """``stopline serve ARGS --port FREE`` in a subprocess; yields its base URL."""
    with serve_process(*args, timeout=timeout, env=env) as (base, _proc):
        yield base


@contextlib.contextmanager
def serve_process(*args: str, timeout: float = 120.0, env: dict | None = None):
    """As :func:`serve`, yielding ``(base URL, the Popen)`` (its pid is the parent of
    ``--workers N``'s workers: :func:`workers_of`)."""
    with servers(args, timeout=timeout, env=env) as [(base, proc)]:
        yield base, proc


@contextlib.contextmanager
def servers(*arg_lists: tuple[str, ...] | list[str], timeout: float = 120.0, env: dict | None = None):
    """Several ``stopline serve`` processes (replicas), started together; yields
    ``[(base URL, the Popen), ...]`` once every one answers ``/healthz``."""
    log = open(os.devnull, "wb")
    started: list[tuple[str, subprocess.Popen]] = []
    try:
        for args in arg_lists:
            port = free_port()
            proc = subprocess.Popen([sys.executable, "-m", "policy_engine.cli", "serve", *args, "--port", str(port)],
                                    cwd=ROOT, stdout=log, stderr=subprocess.PIPE, env=env)
            started.append((f"http://127.0.0.1:{port}", proc))
        deadline = time.monotonic() + timeout
        for base, proc in started:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"stopline serve exited {proc.returncode}: {proc.stderr.read().decode()}")
                try:
                    if httpx.get(base + "/healthz", timeout=1.0).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("stopline serve did not come up")
                time.sleep(0.1)
        yield started
    finally:
        for _, proc in started:
            proc.terminate()
        for _, proc in started:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stderr.close()
        log.close()


def workers_of(pid: int) -> set[int]:
    """The worker processes of a ``stopline serve --workers N`` whose pid is ``pid``: its
    children that multiprocessing spawned (not its resource tracker; Linux ``/proc``)."""
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                with contextlib.suppress(OSError):
                    if b"multiprocessing.spawn" in Path(f"/proc/{child}/cmdline").read_bytes():
                        out.add(int(child))
    return out


# ---------------------------------------------------------------------------------- the reviewer's session
SESSION = "stopline_session"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def ui_sign_in(base: str, who: str) -> str:
    """Sign ``who`` in to the reviewer's page as a browser does; the session cookie's value."""
    with httpx.Client(base_url=base, timeout=10) as c:
        form = c.get("/ui/login")
        assert form.status_code == 200, form.text[:300]
        r = c.post("/ui/login", data={"token": TOKENS[who][0], "csrf": _CSRF.search(form.text).group(1)})
        assert r.status_code == 303 and r.headers["location"] == "/ui", (r.status_code, r.text[:300])
        return c.cookies[SESSION]


def ui_page(base: str, cookie: str) -> httpx.Response:
    """``GET /ui`` with this session cookie, on a new connection (so a ``--workers N``
    server's kernel may hand it to any worker): 200 signed in, 303 to the sign-in page."""
    r = httpx.get(base + "/ui", headers={"cookie": f"{SESSION}={cookie}"}, timeout=10)
    assert r.status_code in (200, 303), (r.status_code, r.text[:300])
    return r


def ui_sign_out(base: str, cookie: str, csrf: str | None = None) -> httpx.Response:
    """Sign out with the form's token (the one a page of ``base`` shows unless given)."""
    if csrf is None:
        page = ui_page(base, cookie)
        assert page.status_code == 200, "not signed in"
        csrf = _CSRF.search(page.text).group(1)
    return httpx.post(base + "/ui/logout", data={"csrf": csrf}, headers={"cookie": f"{SESSION}={cookie}"},
                      timeout=10)


def ui_csrf(page: httpx.Response) -> str:
    return _CSRF.search(page.text).group(1)


def requests_by_worker(metrics_dir: Path, route: str) -> dict[int, float]:
    """pid -> requests of ``route`` that worker answered, from its own histogram file in a
    ``--workers N`` server's ``PROMETHEUS_MULTIPROC_DIR``."""
    from prometheus_client.mmap_dict import MmapedDict

    out: dict[int, float] = {}
    for f in metrics_dir.glob("histogram_*.db"):
        total = 0.0
        for key, value, _, _ in MmapedDict.read_all_values_from_file(str(f)):
            _metric, name, labels, *_ = json.loads(key)
            # (each observation is in one bucket's file value: multiprocess mode sums them at a scrape)
            if name == "stopline_request_duration_seconds_bucket" and labels.get("route") == route:
                total += value
        out[int(f.stem.split("_", 1)[1])] = total
    return out


def wait_for_workers(base: str, metrics_dir: Path, n: int = 2, timeout: float = 120.0) -> set[int]:
    """``GET /healthz`` on new connections until ``n`` workers of a ``--workers N`` server
    (``PROMETHEUS_MULTIPROC_DIR`` = ``metrics_dir``) have answered one; their pids. The server
    answers ``/healthz`` once its first worker is up: on a loaded machine the second can take
    many seconds more, and a test that needs both would see only the first."""
    deadline = time.monotonic() + timeout
    while True:
        httpx.get(base + "/healthz", timeout=30)
        up = {pid for pid, count in requests_by_worker(metrics_dir, "/healthz").items() if count}
        if len(up) >= n:
            return up
        assert time.monotonic() < deadline, f"only {len(up)} of {n} workers answered in {timeout:.0f} s"
        time.sleep(0.05)


def decisions_by_worker(metrics_dir: Path, interface: str = "authzen") -> dict[int, dict[str, float]]:
    """pid -> effect -> decisions that worker made, from its own counter file in a
    ``--workers N`` server's ``PROMETHEUS_MULTIPROC_DIR``."""
    from prometheus_client.mmap_dict import MmapedDict

    out: dict[int, dict[str, float]] = {}
    for f in metrics_dir.glob("counter_*.db"):
        mine = out.setdefault(int(f.stem.split("_", 1)[1]), {})
        for key, value, _, _ in MmapedDict.read_all_values_from_file(str(f)):
            _metric, name, labels, *_ = json.loads(key)
            if name == "stopline_decisions_total" and labels.get("interface") == interface and value:
                mine[labels["effect"]] = mine.get(labels["effect"], 0.0) + value
    return out


def write_session_key(path: Path, *keys: str, mode: int = 0o600) -> Path:
    """A session key file (``--session-key``): the keys, one a line (hex)."""
    path.write_text("".join(k + "\n" for k in keys), encoding="ascii")
    path.chmod(mode)
    return path
