"""The same-run baselines of bench_serve.py: the web stack's floor, with no policy work.

``fastapi_app``: a bare FastAPI route (reads the body, returns a constant JSON object).
``asgi_app``: a raw ASGI callable doing the same (the floor of uvicorn itself).
``pydantic_authzen_app(state)``: the AuthZEN evaluation behind a FastAPI route that takes a
pydantic body model and the identity dependency (what the fast path avoids; ``bench_serve.py
--profile`` only).
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict

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


class Entity(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    id: str


class Action(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str


class EvaluationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject: Entity
    action: Action
    resource: Entity
    context: dict | None = None


def pydantic_authzen_app(state: Any) -> FastAPI:
    from policy_engine.server import authzen, native

    app = FastAPI()
    app.state.stopline = state

    @app.post("/access/v1/evaluation")
    async def evaluation(body: EvaluationRequest, request: Request,
                         caller: Any = Depends(native.any_caller)):  # noqa: B008
        return JSONResponse(await authzen.decide(state, body.model_dump(exclude_none=True)))

    return app
