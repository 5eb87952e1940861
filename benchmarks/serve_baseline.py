"""The same-run baselines of bench_serve.py: the web stack's floor, with no policy work.

``fastapi_app``: a bare FastAPI route (reads the body, returns a constant JSON object).
``asgi_app``: a raw ASGI callable doing the same (the floor of uvicorn itself).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response

BODY = b'{"decision": true, "context": {}}'
fastapi_app = FastAPI()


@fastapi_app.post("/access/v1/evaluation")
async def constant(request: Request) -> Response:
    await request.body()
    return Response(BODY, media_type="application/json")


async def asgi_app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})
