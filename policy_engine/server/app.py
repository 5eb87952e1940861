"""The application factory: ``create_app(ServerConfig(...))`` is the ASGI application
``stopline serve`` runs (the AuthZEN fast path in front of a FastAPI application).

Routes: the AuthZEN 1.0 endpoints (:mod:`.authzen`), the runtime under ``/v1``
(:mod:`.native`, when a ledger is configured), the reviewer's page under ``/ui``
(:mod:`.ui`), ``/healthz``, ``/metrics``, ``/v1/policies`` and
``/v1/policies/reload``, ``/openapi.json`` and ``/docs``. Every error is problem+json.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import authzen, native
from .problems import PROBLEM, Problem, from_validation
from .state import ServerConfig, State

__all__ = ["create_app", "ServerConfig", "app_from_env"]
log = logging.getLogger("policy_engine.server")
ENV = "STOPLINE_SERVE_CONFIG"

_PROBLEM_SCHEMA = {"type": "object", "required": ["type", "title", "status", "detail"],
                   "properties": {"type": {"type": "string"}, "title": {"type": "string"},
                                  "status": {"type": "integer"}, "detail": {"type": "string"},
                                  "instance": {"type": "string"}, "errors": {"type": "array"}}}
_P = {"description": "A problem (RFC 9457)", "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
PROBLEMS: dict[int | str, dict[str, Any]] = {s: _P for s in (400, 401, 403, 404, 409, 413, 415, 422, 503)}


def _problem_response(request: Request, p: Problem) -> Response:
    request.app.state.stopline.metrics.problems.labels(str(p.status)).inc()
    # `instance`: the request's path as the fast path names it (``request.url`` would parse a
    # decoded `%3F` in it as the start of a query)
    return Response(p.encode(request.scope["path"]), status_code=p.status, media_type=PROBLEM, headers=p.headers)


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def problem(request: Request, exc: Problem) -> Response:
        return _problem_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        errs = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errs):
            return _problem_response(request, Problem(400, "malformed-json", "the body is not JSON"))
        return _problem_response(request, from_validation(errs))

    @app.exception_handler(StarletteHTTPException)
    async def http(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http")
        return _problem_response(request, Problem(exc.status_code, code, str(exc.detail),
                                                  headers=dict(exc.headers or {})))

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> Response:  # a bug: logged, answered without a traceback
        log.error("request failed", exc_info=exc)
        return _problem_response(request, Problem(500, "internal-error", f"the server failed ({type(exc).__name__})"))


def _authzen_routes(app: FastAPI) -> None:
    def doc(req: str, resp: str) -> dict:
        return {"requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{req}"}}}},
            "parameters": [{"name": "X-Request-ID", "in": "header", "required": False,
                            "schema": {"type": "string", "maxLength": 256, "pattern": "^[\\x21-\\x7e]*$"}},
                           {"name": "Idempotency-Key", "in": "header", "required": False,
                            "description": "a safe retry of a recorded request (docs/server.md, AuthZEN)",
                            "schema": {"type": "string", "minLength": 1, "maxLength": 202}}],
            "responses": {"200": {"description": "The decision (a deny is a 200 too)", "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{resp}"}}}}}}

    @app.post(authzen.EVALUATION, tags=["authzen"], summary="AuthZEN: one access evaluation",
              openapi_extra=doc("EvaluationRequest", "EvaluationResponse"), responses=PROBLEMS)
    async def evaluation(request: Request, caller: Any = Depends(native.any_caller)) -> Response:
        return JSONResponse(await authzen.serve(request.app.state.stopline, authzen.EVALUATION,
                                                request.headers.get("content-type"), await request.body(),
                                                caller.principal if caller is not None else None,
                                                request.headers.getlist("idempotency-key") or None))

    @app.post(authzen.EVALUATIONS, tags=["authzen"], summary="AuthZEN: a batch of access evaluations",
              openapi_extra=doc("EvaluationsRequest", "EvaluationsResponse"), responses=PROBLEMS)
    async def evaluations(request: Request, caller: Any = Depends(native.any_caller)) -> Response:
        return JSONResponse(await authzen.serve(request.app.state.stopline, authzen.EVALUATIONS,
                                                request.headers.get("content-type"), await request.body(),
                                                caller.principal if caller is not None else None,
                                                request.headers.getlist("idempotency-key") or None))

    @app.get("/.well-known/authzen-configuration", tags=["authzen"], summary="AuthZEN PDP metadata")
    def configuration(request: Request) -> Any:
        # (--public-url when given: never a Host header a client or a cache may have chosen)
        public = native.state_of(request).config.public_url
        return authzen.configuration(public.rstrip("/") if public else str(request.base_url).rstrip("/"))


def _public(st: State, error: str | None) -> str | None:
    """A reload's one-line error as an anonymous caller may read it (``/healthz``): file names
    relative to the policy directory, as a decision's locations are, never the server's path."""
    if not error:
        return error
    import os

    from .state import policy_root

    root = os.path.abspath(policy_root(st.config.policies))
    return error.replace(root + os.sep, "").replace(root, ".")


def _public_ids(ids: Any, error: str | None) -> str | None:
    """An identities reload's error as an anonymous caller may read it (``/healthz``): the
    identities and key files by their names, never the directories the server keeps them
    in (the authenticated ``POST /v1/identities/reload`` answers with the whole path)."""
    if not error:
        return error
    dirs = {os.path.dirname(os.path.abspath(p)) for p in (ids.path, *ids.current.sources)}
    dirs |= {os.path.dirname(str(p)) for p in (ids.path, *ids.current.sources)}
    for d in sorted((d for d in dirs if d), key=len, reverse=True):  # (the longest first: a parent never cuts a child)
        error = error.replace(d + os.sep, "")
    return error


def _operations(app: FastAPI, st: State) -> None:
    @app.get("/healthz", tags=["operations"], summary="Liveness and the policy version in use")
    def healthz() -> Any:
        last = st.store.last_reload
        ids = st.identity_store
        il = None if ids is None else ids.last_reload
        return {"status": "ok", "policy_hash": st.store.policy_hash, "ledger": st.runtime is not None,
                "last_reload": None if last is None else {"ok": last.ok, "error": _public(st, last.error)},
                "identities": None if ids is None else {
                    "last_reload": None if il is None else {"ok": il.ok, "error": _public_ids(ids, il.error)}}}

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics",
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    def metrics() -> Response:
        body, ctype = st.metrics.render()
        return Response(body, media_type=ctype)

    @app.get("/v1/policies", tags=["operations"], responses=PROBLEMS,
             summary="The policy set in use (a failed reload's diagnostics, which quote the policy files, "
                     "only to an authenticated caller)")
    async def policies(request: Request) -> Any:
        # With identities, the diagnostics of a version that did not load (they quote the policy
        # files' lines: constants, limits, lists) go to an authenticated caller only; anonymous,
        # this answers what /healthz does (the hash, the last reload's one line) and the names.
        # A credential that is given must verify (401), as on every route.
        shown = st.identities is None or (bool(request.headers.getlist("authorization"))
                                          and await native.any_caller(request) is not None)
        eng = st.store.engine
        last = st.store.last_reload
        return {"policy_hash": st.store.policy_hash, "workflows": sorted(getattr(eng, "workflows", {}) or {}),
                "default_workflow": st.default_workflow(eng),
                "last_reload": None if last is None else {
                    "ok": last.ok, "error": last.error if shown else _public(st, last.error),
                    "diagnostics": last.render() if not last.ok and shown else None}}

    @app.post("/v1/policies/reload", tags=["operations"], responses=PROBLEMS,
              summary="Reload the policy files now (a version that does not load is reported, never used)")
    def reload(caller: Any = Depends(native.any_caller)) -> Any:
        r = st.reload()
        return {"ok": r.ok, "changed": r.changed, "policy_hash": r.policy_hash, "previous_hash": r.previous_hash,
                "error": None if r.ok else r.error, "diagnostics": None if r.ok else r.render()}


    @app.post("/v1/identities/reload", tags=["operations"], responses=PROBLEMS,
              summary="Reload the identities file now (a version that does not load is reported, never used)")
    def reload_identities(caller: Any = Depends(native.principal)) -> Any:
        r = st.reload_identities()
        assert r is not None  # (native.principal: the server has an identities file)
        return {"ok": r.ok, "changed": r.changed, "error": r.error}


def create_app(config: ServerConfig) -> Any:
    """The ASGI application for ``config`` (raises PolicyError / IdentityConfigError /
    LedgerError when the policies, identities or ledger cannot be used)."""
    st = State(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        st.close()

    app = FastAPI(title="Stopline", version="1", description="AuthZEN 1.0 decision point and the Stopline runtime "
                  "over HTTP. Every error is application/problem+json (RFC 9457).", redoc_url=None, lifespan=lifespan)
    # a path with a slash too many is a 404, never a 307 to a URL made from the Host header (a
    # POST and its credential sent on, past --public-url)
    app.router.redirect_slashes = False
    app.state.stopline = st
    _install_errors(app)
    _authzen_routes(app)
    _operations(app, st)
    if st.runtime is not None:
        app.include_router(native.router(), responses=PROBLEMS)
    from . import ui

    ui.mount(app, st)

    schema_cache: dict[str, Any] = {}

    def openapi() -> dict:
        if not schema_cache:
            from fastapi.openapi.utils import get_openapi

            s = get_openapi(title=app.title, version=app.version, description=app.description,
                            routes=[r for r in app.routes if not getattr(r, "path", "").startswith("/ui")])
            comps = s.setdefault("components", {}).setdefault("schemas", {})
            comps.update(authzen.SCHEMAS)
            comps["Problem"] = _PROBLEM_SCHEMA
            schema_cache["s"] = s
        return schema_cache["s"]

    app.openapi = openapi  # type: ignore[method-assign]

    return authzen.FastPath(app, st)


def app_from_env() -> Any:
    """The uvicorn factory for worker processes (``stopline serve --workers N``)."""
    return create_app(ServerConfig(**json.loads(os.environ[ENV])))
