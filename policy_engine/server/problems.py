"""Problem details (RFC 9457, ``application/problem+json``): every error the server
answers is one of these, a 4xx for what the caller sent, never a traceback. A 5xx is
only for the server's own failures (an unreachable ledger: 503)."""

from __future__ import annotations

import json
from typing import Any

PROBLEM = "application/problem+json"
BASE = "https://stopline.dev/problems/"

#: the documented body size limit (bytes) of every request; larger is a 413
MAX_BODY = 1 << 20

TITLES = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    409: "Conflict", 413: "Content Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Content",
    503: "Service Unavailable",
}


class Problem(Exception):
    """Raised anywhere in a handler; answered as problem+json with ``status``."""

    def __init__(self, status: int, code: str, detail: str, *, errors: list | None = None,
                 headers: dict | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.errors = errors
        self.headers = headers or {}

    def body(self, instance: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"type": BASE + self.code, "title": TITLES.get(self.status, "Error"),
                               "status": self.status, "detail": self.detail}
        if instance:
            out["instance"] = instance
        if self.errors:
            out["errors"] = self.errors
        return out

    def encode(self, instance: str | None = None) -> bytes:
        return json.dumps(self.body(instance), ensure_ascii=False).encode()


def from_validation(errors: list) -> Problem:
    """A pydantic/FastAPI validation error list as a 422 problem (location and message per error)."""
    out = []
    for e in errors[:50]:
        loc = [str(p) for p in e.get("loc", ())]
        out.append({"pointer": "/" + "/".join(loc[1:] if loc and loc[0] in ("body", "query", "path") else loc),
                    "in": loc[0] if loc else "body", "detail": str(e.get("msg", "invalid"))})
    first = out[0] if out else {"pointer": "/", "detail": "invalid"}
    return Problem(422, "invalid-request", f"{first['pointer']}: {first['detail']}", errors=out)
