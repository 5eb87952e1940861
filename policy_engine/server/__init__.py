"""``stopline serve``: the runtime behind HTTP (DESIGN.md, "The service"; docs/server.md).

Modules, each importing only those before it: ``problems`` (RFC 9457 problem+json
errors), ``identity`` (API tokens stored hashed, JWTs against a configured key or JWKS
file), ``session`` (the reviewer's signed session cookie and CSRF tokens), ``metrics``
(Prometheus, bounded labels), ``state`` (the policy store, the
runtime, the recorder and reload), ``authzen`` (the AuthZEN 1.0 decision point, a raw
ASGI fast path), ``native`` (every runtime operation, FastAPI with OpenAPI), ``ui``
(the reviewer's page, Jinja2), ``app`` (the application factory), ``cli`` (the click
command). This is the only package that imports the web framework: ``import
policy_engine`` never loads FastAPI. Install with ``pip install 'stopline[server]'``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "ServerConfig"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module 'policy_engine.server' has no attribute {name!r}")
