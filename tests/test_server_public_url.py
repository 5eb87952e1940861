"""`stopline serve --public-url`: the AuthZEN metadata names the endpoints under the
address the clients reach, never under a Host header a client (or a cache in front) chose.
Without it, the request's base URL, as before. A URL that cannot be one is refused in one
line (exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from starlette.testclient import TestClient  # noqa: E402

from policy_engine.server import ServerConfig, create_app  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TODO = str(ROOT / "examples" / "authzen-todo")


def test_the_metadata_is_under_the_public_url_whatever_the_host_header():
    app = create_app(ServerConfig(TODO, reload_interval=0, public_url="https://pdp.example.com/authz"))
    with TestClient(app) as c:
        cfg = c.get("/.well-known/authzen-configuration", headers={"Host": "evil.example"}).json()
    assert cfg == {"policy_decision_point": "https://pdp.example.com/authz",
                   "access_evaluation_endpoint": "https://pdp.example.com/authz/access/v1/evaluation",
                   "access_evaluations_endpoint": "https://pdp.example.com/authz/access/v1/evaluations"}


def test_without_it_the_request_base_url_as_before():
    with TestClient(create_app(ServerConfig(TODO, reload_interval=0))) as c:
        cfg = c.get("/.well-known/authzen-configuration", headers={"Host": "pdp.internal:8181"}).json()
    assert cfg["policy_decision_point"] == "http://pdp.internal:8181"


@pytest.mark.parametrize("url", ["pdp.example.com", "ftp://pdp.example.com", "https://", "https://a/?x=1",
                                 "https://u:p@pdp.example.com", "https://pdp.example.com:port"])
def test_a_url_that_cannot_be_the_servers_is_refused_in_one_line(url):
    r = subprocess.run([sys.executable, "-m", "policy_engine.cli", "serve", TODO, "--public-url", url],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.startswith("error: --public-url") and r.stderr.count("\n") == 1, r.stderr
