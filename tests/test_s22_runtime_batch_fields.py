"""Session 22 audit of the batch request's OpenAPI fields: `since` / `until` select the
executions by when they ran (`original.time`, their `executed_at`: the bulk fix of this
session, tests/test_s22_incidents_window.py). The schema said "recorded at or after" /
"recorded before", which a client reading it would take for the other window."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
from server_support import server_policy_dir  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from policy_engine.server import ServerConfig, create_app  # noqa: E402


def test_the_batch_window_fields_say_when_an_execution_ran(tmp_path):
    app = create_app(
        ServerConfig(str(server_policy_dir(tmp_path)), ledger=f"sqlite:///{tmp_path / 'l.db'}", reload_interval=0)
    )
    with TestClient(app) as c:
        props = c.get("/openapi.json").json()["components"]["schemas"]["BatchBody"]["properties"]
    for field, word in (("since", "at or after"), ("until", "before")):
        text = props[field]["description"]
        assert f"ran {word}" in text and "executed_at" in text and "recorded" not in text, text
