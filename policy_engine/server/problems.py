"""Problem details (RFC 9457, ``application/problem+json``): every error the server
answers is one of these, a 4xx for what the caller sent, never a traceback. A 5xx is
only for the server's own failures (an unreachable ledger: 503)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

PROBLEM = "application/problem+json"
BASE = "https://stopline.dev/problems/"

#: the documented body size limit (bytes) of every request; larger is a 413
MAX_BODY = 1 << 20

TITLES = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    409: "Conflict", 413: "Content Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Content",
    500: "Internal Server Error", 503: "Service Unavailable",
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


#: the largest integer magnitude a body may hold: I-JSON (RFC 7493), what the ledger's
#: canonical JSON (RFC 8785) can record exactly
MAX_SAFE_INTEGER = 2**53 - 1
_LONE = re.compile(rb"\\u[dD][89abAB]|\\u[dD][c-fC-F]")  # an escaped surrogate (paired or not)


def _object(pairs: list) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(f"the key {json.dumps(dup)[:80]} is given twice in one object")
    return d


def _int(s: str) -> int:
    if len(s) > 17 or abs(v := int(s)) > MAX_SAFE_INTEGER:
        raise ValueError(f"the integer {s[:24]}{'...' if len(s) > 24 else ''} is beyond +/-(2^53-1) "
                         "(send it as a string)")
    return v


def _float(s: str) -> float:
    v = float(s)
    if not math.isfinite(v):
        raise ValueError(f"the number {s[:24]}{'...' if len(s) > 24 else ''} is out of range")
    return v


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODE = json.JSONDecoder(object_pairs_hook=_object, parse_int=_int, parse_float=_float,
                           parse_constant=_constant).decode  # built once (json.loads with hooks builds one a call)


def parse_json(body: bytes) -> Any:
    """A request body as strict JSON (RFC 8259 in UTF-8, I-JSON's limits), or a 400
    problem: not UTF-8, malformed, nested past the parser's depth, ``NaN``/``Infinity`` (or
    a number too large for a double), an integer beyond +/-(2^53-1), a key given twice in
    one object (which of the two would count is up to each reader), a lone surrogate
    (``"\\ud800"``: no UTF-8 can hold it)."""
    try:
        obj = _DECODE(body.decode("utf-8"))
        if _LONE.search(body) is not None:  # rare: only then look for a surrogate left unpaired
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise Problem(400, "malformed-json", "the body is not JSON: a string holds a lone surrogate "
                      "(\\ud800-\\udfff without its pair)") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise Problem(400, "malformed-json", f"the body is not JSON: {e}") from None
    return obj


def is_json_type(ctype: str | bytes | None) -> bool:
    """Whether a Content-Type names JSON (``application/json``, ``application/*+json``)."""
    if ctype is None:
        return False
    t = (ctype.decode("latin-1") if isinstance(ctype, bytes) else ctype).split(";")[0].strip().lower()
    return t == "application/json" or (t.startswith("application/") and t.endswith("+json"))


def from_validation(errors: list) -> Problem:
    """A pydantic/FastAPI validation error list as a 422 problem (location and message per error)."""
    out = []
    for e in errors[:50]:
        loc = [str(p) for p in e.get("loc", ())]
        out.append({"pointer": "/" + "/".join(loc[1:] if loc and loc[0] in ("body", "query", "path") else loc),
                    "in": loc[0] if loc else "body", "detail": str(e.get("msg", "invalid"))})
    first = out[0] if out else {"pointer": "/", "detail": "invalid"}
    return Problem(422, "invalid-request", f"{first['pointer']}: {first['detail']}", errors=out)
