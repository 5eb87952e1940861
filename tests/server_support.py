"""Shared pieces of the server tests: a real ``stopline serve`` process on a free loopback
port, an identities file with hashed API tokens, and the runtime tests' small policy."""

from __future__ import annotations

import contextlib
import os
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
def serve(*args: str, timeout: float = 60.0):
    """``stopline serve ARGS --port FREE`` in a subprocess; yields its base URL."""
    port = free_port()
    log = open(os.devnull, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "policy_engine.cli", "serve", *args, "--port", str(port)],
                            cwd=ROOT, stdout=log, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
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
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()
        log.close()
