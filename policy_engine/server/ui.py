"""The reviewer's page (``/ui``): the rollback queue per route; a plan with the original
action and its receipt, the trigger, the window (standard or escalated, until when),
the authorization slots and who filled them, the cascade with each step's
feasibility; approve or deny with a reason. Server-rendered (Jinja2 templates shipped
in the package), no JavaScript.

A reviewer signs in with their API token (``/ui/login``); the session cookie holds it
(HttpOnly, SameSite=Strict, path ``/ui``) and every request authenticates it again, so
a revoked token ends the session. Forms carry a CSRF token derived from the session.
The approving principal is the signed-in caller: a form naming anyone else is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from .identity import Caller
from .native import call, plain
from .problems import Problem

COOKIE = "stopline_session"


def _env() -> Any:
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("policy_engine.server", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.filters["pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, ensure_ascii=False)
    return env


def _csrf(token: str) -> str:
    return hashlib.sha256(b"stopline-csrf:" + token.encode()).hexdigest()


def mount(app: FastAPI, st: Any) -> None:
    env = _env()

    def page(name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        return HTMLResponse(env.get_template(name).render(**ctx), status_code=status)

    def session(request: Request) -> tuple[Caller | None, str]:
        token = request.cookies.get(COOKIE)
        if not token or st.identities is None:
            return None, ""
        try:
            return st.identities.verify(token), token
        except PermissionError:
            return None, ""

    def signin() -> Response:
        return RedirectResponse("/ui/login", status_code=303)

    @app.get("/ui/login", include_in_schema=False)
    def login_form(request: Request) -> Response:
        return page("login.html", enabled=st.identities is not None, error=None)

    @app.post("/ui/login", include_in_schema=False)
    def login(token: str = Form(default="", max_length=8192)) -> Response:
        if st.identities is None:
            return page("login.html", 403, enabled=False, error=None)
        try:
            st.identities.verify(token.strip())
        except PermissionError as e:
            return page("login.html", 401, enabled=True, error=str(e))
        r = RedirectResponse("/ui", status_code=303)
        r.set_cookie(COOKIE, token.strip(), httponly=True, samesite="strict", path="/ui")
        return r

    @app.post("/ui/logout", include_in_schema=False)
    def logout() -> Response:
        r = signin()
        r.delete_cookie(COOKIE, path="/ui")
        return r

    @app.get("/ui", include_in_schema=False)
    def queue(request: Request) -> Response:
        caller, token = session(request)
        if caller is None:
            return signin()
        routes: dict[str, list] = {}
        if st.runtime is not None:
            for item in call(st.runtime.queue, limit=1000):
                routes.setdefault(item.route or "(no route)", []).append(item)
        return page("queue.html", caller=caller, csrf=_csrf(token), routes=routes, ledger=st.runtime is not None)

    @app.get("/ui/plans/{rollback_id}", include_in_schema=False)
    def plan(rollback_id: str, request: Request, msg: str | None = None) -> Response:
        caller, token = session(request)
        if caller is None:
            return signin()
        return _plan_page(rollback_id, caller, token, msg)

    def _plan_page(rollback_id: str, caller: Caller, token: str, msg: str | None, status: int = 200,
                   error: str | None = None) -> Response:
        if st.runtime is None:
            raise Problem(404, "no-ledger", "the server runs without a ledger")
        auth = plain(call(st.runtime.authorization, rollback_id))
        if auth["kind"] != "rollback":
            raise Problem(404, "not-a-rollback", f"`{rollback_id}` is a {auth['kind']}, not a rollback plan")
        hist = plain(call(st.runtime.history, rollback_id))
        rb = hist.get("rollback") or {}
        body = (rb.get("entry") or {}).get("body") or {}
        ex = hist.get("execution") or {}
        dec = ((ex.get("decision") or {}).get("entry") or {}).get("body") or {}
        return page("plan.html", status, caller=caller, csrf=_csrf(token), id=rollback_id, auth=auth, rollback=rb,
                    body=body, plan=body.get("plan") or {}, execution=ex, action=dec.get("action"),
                    receipt=((ex.get("entry") or {}).get("body") or {}).get("receipt"), msg=msg, error=error)

    @app.post("/ui/plans/{rollback_id}", include_in_schema=False)
    def decide(rollback_id: str, request: Request, verdict: str = Form(...), reason: str = Form(default="",
               max_length=4000), csrf: str = Form(default=""), principal: str | None = Form(default=None)) -> Response:
        caller, token = session(request)
        if caller is None:
            return signin()
        if not hmac.compare_digest(csrf, _csrf(token)):
            return _plan_page(rollback_id, caller, token, None, 403, "the form expired: reload the page and try again")
        if principal is not None and principal != caller.principal:
            return _plan_page(rollback_id, caller, token, None, 403,
                              f"refused: you are signed in as {caller.principal}; an approval is always given by "
                              f"the signed-in reviewer, never on behalf of {principal}")
        if verdict not in ("approve", "deny"):
            return _plan_page(rollback_id, caller, token, None, 422, "choose approve or deny")
        r = call(st.runtime.approve, rollback_id, principal=caller.principal, roles=caller.roles, verdict=verdict,
                 note=reason or None)
        if r.recorded and r.counted:
            msg = f"{'approved' if verdict == 'approve' else 'denied'} by {caller.principal}; status {r.status}"
        elif r.recorded:
            msg = f"recorded, but it does not count: {r.reason or 'no open slot takes your roles'}; status {r.status}"
        else:
            msg = f"not recorded: {r.reason or 'the plan takes no more approvals'}; status {r.status}"
        return RedirectResponse(f"/ui/plans/{quote(rollback_id)}?msg={quote(msg)}", status_code=303)
