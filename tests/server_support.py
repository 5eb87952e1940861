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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
def serve(*args: str, timeout: float = 60.0, env: dict | None = None):
    """``stopline serve ARGS --port FREE`` in a subprocess; yields its base URL."""
    with serve_process(*args, timeout=timeout, env=env) as (base, _proc):
        yield base


@contextlib.contextmanager
def serve_process(*args: str, timeout: float = 60.0, env: dict | None = None):
    """As :func:`serve`, yielding ``(base URL, the Popen)`` (its pid is the parent of
    ``--workers N``'s workers: :func:`workers_of`)."""
    with servers(args, timeout=timeout, env=env) as [(base, proc)]:
        yield base, proc


@contextlib.contextmanager
def servers(*arg_lists: tuple[str, ...] | list[str], timeout: float = 60.0, env: dict | None = None):
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
