"""The reviewer's page (``/ui``): the held gates (gate decisions waiting for approval, with
who asked: the decision's ``caller``) and the rollback queue per route, with the rollback
batches beside it (pending first, oldest first: records, done, partial, remaining, the
earliest window deadline); a gate decision (``/ui/decisions/{id}``) with who asked, the
workflow, the action's type and fields, when, the matched rules, the reversal facts, the
slots and the approvals given; a plan with its requester, the execution it reverses (linked
to its gate decision), the original action and its receipt, the trigger, the window
(standard or escalated, until when), the authorization slots and who filled them, the
cascade with each step's feasibility; a batch (``/ui/batches/{id}``) with its select,
scenario, trigger, reason, requester, slots, batch hash and its plans a page at a time;
approve or deny a held gate, a plan or a whole batch with a reason. Server-rendered
(Jinja2 templates shipped in the package), no JavaScript. Every name and field is escaped,
and a character no one sees is shown as its escape (:func:`visible`).

A batch decision names the batch hash the page showed; a batch whose hash is not that
one is refused with a message and nothing is recorded (``Runtime.approve_batch``).

A reviewer signs in with their API token or a JWT (``/ui/login``). The session cookie is
a signed value bound to that credential, never the credential (:mod:`.session`):
HttpOnly, SameSite=Strict, path ``/ui``, Secure when the request came over HTTPS or the
server is configured behind TLS (``--secure-cookies``, or an ``https://`` ``--public-url``
unless ``--no-secure-cookies``: :func:`secure_by_config`); a sign-in over a session ends
that session as a sign-out does; every request checks it against
the identities in use, so a revoked token ends the session, and against the sign-outs
(with a ledger, its ``ledger_ended_sessions`` table, shared by every worker and replica), so
a copy of the cookie made before a sign-out is refused everywhere. Every form, sign-in and
sign-out included, carries a CSRF token (the sign-in form's is bound to a cookie of its
own) and is refused when the browser says it was sent from another site
(``Sec-Fetch-Site``, else ``Origin`` against ``Host``). The approving principal is the
signed-in caller: a form naming anyone else is refused.

Every page is ``Cache-Control: no-store`` and may not be framed (``Content-Security-Policy``
with ``frame-ancestors 'none'``, and ``X-Frame-Options: DENY``: a page on another port of
the host is the same site, so its frames would get the session cookie and could lay the
page under a decoy for the click on Approve); its policy allows no script, the one style
sheet by its hash, and forms to this origin. A decision is answered with a redirect (Back
or Reload never sends it again) that changes a cookie, so Back shows no page from before it;
a form sent after its session ended is said to be lost on the sign-in page, which then
leads back to it. The queue lists its single plans
:data:`QUEUE_SHOWN` a page (``?page=N``) and its held gates ``batchview.HELD_SHOWN`` a page
(``?held=M``), each pager's links keeping the other's page.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ..timestamps import format_micros
from . import batchview
from .native import call, plain
from .problems import Problem
from .session import COOKIE, LOGIN_COOKIE, MAX_COOKIE, Session, Sessions


def _unseen(*ranges: tuple[int, int]) -> re.Pattern[str]:
    from ..source import DEFAULT_IGNORABLE  # (Unicode's Default_Ignorable_Code_Point ranges)

    return re.compile("[" + "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in (*ranges, *DEFAULT_IGNORABLE)) + "]")


_UNSEEN = _unseen((0x00, 0x1F), (0x7F, 0x9F))
_UNSEEN_IN_JSON = _unseen((0x7F, 0x9F))  # (JSON text escapes C0 itself; its line breaks are its layout)


def _escape(m: re.Match[str]) -> str:
    return json.dumps(m.group())[1:-1]


def pretty(v: Any) -> str:
    """A value as indented JSON, its unseen characters escaped as :func:`visible` does."""
    return _UNSEEN_IN_JSON.sub(_escape, json.dumps(v, indent=2, sort_keys=True, ensure_ascii=False))


def visible(v: Any) -> str:
    """Text as a reviewer must read it: a control character or one no one sees (a
    bidirectional override that reverses what follows, a zero-width space, a tag character)
    written as its JSON escape (``\\u202e``), so ``agent-7<U+202E>`` is not read as another
    name. (HTML is escaped by the templates: this is about what the escaped text looks like.)"""
    return _UNSEEN.sub(_escape, v if isinstance(v, str) else str(v))


def same_person(a: Any, b: Any) -> bool:
    """Whether two principal ids are one person as the engine counts them (its separation
    of duties: ``canonical_principal``, so ``Rita`` and ``rita\\u200b`` are ``rita``): the
    pages' "(you)" says what ``distinct from`` will say, never that a look-alike spelling
    of the reviewer is someone else. Display only: approvals are judged by the engine."""
    if type(a) is not str or type(b) is not str:
        return False
    from ..engine.util import canonical_principal

    ca = canonical_principal(a)
    return bool(ca) and ca == canonical_principal(b)


def unheeded(msg: Any) -> bool:
    """Whether a decision's message says the decision was not recorded or does not count
    (another reviewer decided first, the plan ran meanwhile, a slot is filled, a role is
    missing): announced as an alert, as a refusal is, not as a status a reader may miss."""
    return isinstance(msg, str) and msg.startswith(("not recorded", "recorded, but", "recorded on the batch, but"))


def _env() -> Any:
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("policy_engine.server", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.filters["pretty"] = pretty
    env.filters["visible"] = visible
    env.tests["same_person"] = same_person  # (``{% if a is same_person(b) %}``: the "(you)" markers)
    env.tests["unheeded"] = unheeded  # (a decision's message that says it was not recorded, or does not count)
    env.globals["max_reason"] = MAX_REASON  # (the decide form's ``maxlength``: _decide.html)
    return env


def _policy(env: Any) -> str:
    """The pages' Content-Security-Policy: nothing loads but the one inline style sheet of
    ``base.html`` (by its hash), no script at all (the pages have none), forms post to this
    origin only, and no page may be framed: a page of another origin (another port of
    this host is a same-site one, whose frames get the SameSite=Strict cookie) cannot lay
    the reviewer's page under its own and have the Approve button clicked (clickjacking)."""
    src = env.loader.get_source(env, "base.html")[0]
    styles = re.findall(r"<style>(.*?)</style>", src, re.S)
    hashes = [f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in styles]
    style = " ".join(hashes) or "'none'"
    return f"default-src 'none'; style-src {style}; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"


def _now() -> str:
    """Now as the ledger writes times (fixed width, so they compare as text)."""
    return format_micros(datetime.now(UTC))


def cross_site(request: Request) -> str | None:
    """Why a form post was sent from another origin, or None when it was not: the
    browser's ``Sec-Fetch-Site`` (only ``same-origin``, or ``none`` for a request the user
    made, is taken), else, from a browser without it, ``Origin`` against ``Host``. A
    request with neither is not a browser's cross-site form (the CSRF token still counts)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return None if site in ("same-origin", "none") else f"Sec-Fetch-Site: {site[:40]}"
    origin = request.headers.get("origin")
    if origin is None:
        return None
    try:
        same = urlsplit(origin).netloc.lower() == (request.headers.get("host") or "").lower()
    except ValueError:
        same = False
    return None if same else "Origin does not match Host"


CROSS_SITE = "refused: the form was sent from another site"
QUEUE_SHOWN = 1000  #: single plans a queue page lists at most (oldest first, ``?page=N``; the counts cover all)
EXPIRED = "the form expired: reload the page and try again"
MAX_REASON = 4000  #: characters of a decision's reason at most (the forms' ``maxlength``)
TOO_LONG = f"refused, nothing recorded: the reason is longer than {MAX_REASON} characters"
NOT_A = {"rollback": ("not-a-rollback", "a rollback plan"), "decision": ("not-a-decision", "a gate decision")}


def _fields(action: Any) -> list[tuple[str, str]]:
    """An action's fields as a reviewer reads them: each top-level key with its value as
    JSON text (an action recorded as text, not an object, has none: its text is shown)."""
    if not isinstance(action, dict):
        return []
    return [(visible(k), _UNSEEN_IN_JSON.sub(_escape, json.dumps(v, ensure_ascii=False, sort_keys=True)))
            for k, v in action.items()]


def _matched(dec: dict) -> list[dict]:
    """A decision's matched rules, by precedence, each with its condition and the value it
    had (from the decision's trace), the deciding one marked."""
    trace = {(t.get("kind"), t.get("name")): t for t in dec.get("trace") or () if isinstance(t, dict)}
    deciding = dec.get("deciding") or {}
    out = []
    for r in dec.get("matched") or ():
        t = trace.get((r.get("kind"), r.get("name"))) or {}
        out.append({**r, "condition": t.get("condition"), "value": t.get("value"), "error": t.get("error"),
                    "deciding": (r.get("kind"), r.get("name")) == (deciding.get("kind"), deciding.get("name"))})
    return out


def typed(reason: str) -> str:
    """A reason as the reviewer typed it: a browser sends each line break of a textarea as
    CR LF, and counts it as one character against ``maxlength``."""
    return reason.replace("\r\n", "\n")


def _again(v: Any, principal: str) -> tuple[Any, str | None]:
    """Of an approval by ``principal`` just recorded, the engine's rejection of it (None: it
    counts), and whether the reviewer had already approved: None if not, else "" (under
    this spelling) or " as `X`" (under another one the engine counts as this reviewer:
    ``same_person``, e.g. ``Casey`` by a JWT and ``casey`` by a token; one of the two counts,
    the other is set aside as its alias)."""
    rejected = [x for x in (v.rejected if v is not None else ()) if same_person(x.principal, principal)]
    said = next((x for x in rejected if x.principal == principal), None)
    counted = [p for p in (v.accepted if v is not None else ()) if same_person(p, principal)]
    if not counted or not any(x.code in ("duplicate", "alias") for x in rejected):
        return said, None
    others = sorted({*counted, *(x.principal for x in rejected if x.code == "alias")} - {principal})
    return said, "".join(f" as `{o}`" for o in others[:1])


#: the sign-in page's alert after a decision posted without a session (nothing recorded)
ENDED = ("your session ended before your decision was sent (it ran out, was signed out or its token revoked): "
         "nothing was recorded. Sign in, then decide again")
DECIDED_COOKIE = "stopline_decided"  #: changed by every decision: Back shows no page from before it (:func:`mount`)
BACK_COOKIE = "stopline_back"  #: the page to go back to once signed in (``open:PATH``, ``ended:PATH``: a form lost)
_BACK = re.compile(r"/ui(/(plans|decisions|batches)/[A-Za-z0-9._~-]{1,200})?")


def back_to(path: str) -> bool:
    """Whether the sign-in page may send the reviewer on to ``path`` once signed in: the
    queue or one plan, decision or batch page of this server, nothing else (never another
    site: the cookie naming it could be set by a page of another port of this host)."""
    return _BACK.fullmatch(path) is not None


def secure_by_config(config: Any) -> bool:
    """Whether the reviewer's cookies are Secure on a request that came over plain HTTP:
    ``--secure-cookies`` (``secure_cookies=True``) says so, ``--no-secure-cookies``
    (``False``) says not; unsaid (None), a ``--public-url`` that begins with ``https://``
    does (a proxy in front ends TLS: the request it forwards is plain HTTP)."""
    given = config.secure_cookies
    if given is not None:
        return bool(given)
    return (config.public_url or "").lower().startswith("https://")


MAX_PAGE = 10**6  #: the highest page number a pager's ``?page=N`` is taken as
_PAGE_NO = re.compile(r"[+-]?0*([0-9]+)")


def page_number(v: str | None) -> int:
    """A pager's ``?page=N`` as a page to show: a browser's link, or an address typed or
    edited by hand, gets a page, never an error: a number below 1 (or none, or not a
    number) is the first page, one past :data:`MAX_PAGE` that one (a page past the end
    shows the last)."""
    m = _PAGE_NO.fullmatch((v or "").strip())
    if m is None:
        return 1
    n = int(m[1][:8])  # (no more digits than a page number has: a long run is past the last page anyway)
    return 1 if m[0].startswith("-") or n < 1 else min(n, MAX_PAGE)


def mount(app: FastAPI, st: Any) -> None:
    env = _env()
    sessions: Sessions = st.sessions
    csp = _policy(env)

    def page(name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        r = HTMLResponse(env.get_template(name).render(**ctx), status_code=status)
        r.headers["cache-control"] = "no-store"  # (the page holds a CSRF token and what the reviewer saw)
        r.headers["content-security-policy"] = csp
        r.headers["x-frame-options"] = "DENY"  # (frame-ancestors' older word, for browsers without CSP 2)
        r.headers["x-content-type-options"] = "nosniff"
        r.headers["referrer-policy"] = "same-origin"  # (a page's URL may hold a plan id and a message)
        return r

    def secure(request: Request) -> bool:
        return request.url.scheme == "https" or secure_by_config(st.config)

    def session(request: Request) -> Session | None:
        # (with a ledger, a sign-out is looked up there: a ledger that cannot answer is a 503, never a pass)
        return call(sessions.resume, st.identities, request.cookies.get(COOKIE))

    def signin(request: Request | None = None, posted: bool = False) -> Response:
        """To the sign-in page. From a plan, gate or batch page, the reviewer is sent back
        there once signed in, and a form posted after its session ended (it ran out, was
        signed out, its token revoked) is said to be lost, never dropped without a word: both
        in a cookie of the sign-in page's own (:data:`BACK_COOKIE`), read by it alone."""
        r = RedirectResponse("/ui/login", status_code=303)
        if request is not None and (posted or request.url.path != "/ui") and back_to(request.url.path):
            r.set_cookie(BACK_COOKIE, f"{'ended' if posted else 'open'}:{request.url.path}", max_age=600,
                         httponly=True, samesite="strict", path="/ui/login", secure=secure(request))
        return r

    def back_of(request: Request) -> tuple[str, bool]:
        """The page to go back to after signing in ("" for the queue) and whether a form
        posted there was lost, from :data:`BACK_COOKIE` (anything else in it: the queue)."""
        how, _, path = (request.cookies.get(BACK_COOKIE) or "").partition(":")
        if how not in ("ended", "open") or not back_to(path):
            return "", False
        return path, how == "ended"

    def told(request: Request, path: str, s: Session, msg: str) -> Response:
        """The redirect after a decision, with its message and the token that vouches for it.
        It changes a cookie (:data:`DECIDED_COOKIE`): Chromium keeps even a ``no-store`` page
        in its back-forward cache, and Back would show the page as it was before the decision
        (pending, its form ready) unless a cookie changed since."""
        r = RedirectResponse(f"{path}?msg={quote(msg)}&sig={sessions.message_token(s, msg)}", status_code=303)
        r.set_cookie(DECIDED_COOKIE, secrets.token_hex(8), httponly=True, samesite="strict", path="/ui",
                     secure=secure(request))
        return r

    def vouched(s: Session, msg: str | None, sig: str | None) -> str | None:
        """A redirect's message if this server made it for this session, else none: a link
        made elsewhere (``/ui/plans/ID?msg=approved by the incident commander``) shows the
        reviewer nothing the server did not say."""
        return msg if msg is not None and sessions.message_ok(s, msg, sig) else None

    def form_refused(request: Request, s: Session, csrf: str) -> str | None:
        if cross_site(request) is not None:
            return CROSS_SITE
        return None if sessions.csrf_ok(s, csrf) else EXPIRED

    def login_page(request: Request, status: int = 200, error: str | None = None) -> Response:
        if st.identities is None:
            return page("login.html", status, enabled=False, error=None, csrf="")
        if error is None and back_of(request)[1]:
            error = ENDED
        nonce = request.cookies.get(LOGIN_COOKIE)
        fresh = not sessions.is_login_nonce(nonce)
        if fresh:  # (one per browser: a second tab keeps the first one's form good)
            nonce = sessions.new_login_nonce()
        r = page("login.html", status, enabled=True, error=error, csrf=sessions.login_csrf(nonce or ""))
        if fresh:
            r.set_cookie(LOGIN_COOKIE, nonce or "", httponly=True, samesite="strict", path="/ui/login",
                         secure=secure(request))
        return r

    @app.get("/ui/login", include_in_schema=False)
    def login_form(request: Request) -> Response:
        return login_page(request)

    @app.post("/ui/login", include_in_schema=False)
    def login(request: Request, token: str = Form(default="", max_length=8192),
              csrf: str = Form(default="")) -> Response:
        # login CSRF: a form another site posts would sign this browser in as someone else
        if st.identities is None:
            return login_page(request, 403)
        if cross_site(request) is not None:
            return login_page(request, 403, CROSS_SITE)
        if not sessions.login_ok(request.cookies.get(LOGIN_COOKIE), csrf):
            return login_page(request, 403, "the sign-in form expired: sign in again")
        try:
            _, cookie = sessions.issue(st.identities, token.strip())
        except PermissionError as e:
            return login_page(request, 401, str(e))
        if len(cookie) > MAX_COOKIE:
            return login_page(request, 400, "this token's roles are too many to keep in a session: "
                                            "ask for a token with fewer roles")
        # a sign-in over a session ends that one, as a sign-out would (a copy of its cookie is
        # refused everywhere): one browser, one session (a ledger that cannot record it: a 503)
        call(sessions.end_cookie, request.cookies.get(COOKIE))
        r = RedirectResponse(back_of(request)[0] or "/ui", status_code=303)
        r.delete_cookie(BACK_COOKIE, path="/ui/login", httponly=True, samesite="strict", secure=secure(request))
        r.set_cookie(COOKIE, cookie, httponly=True, samesite="strict", path="/ui", secure=secure(request))
        r.delete_cookie(LOGIN_COOKIE, path="/ui/login", httponly=True, samesite="strict", secure=secure(request))
        return r

    @app.post("/ui/logout", include_in_schema=False)
    def logout(request: Request, csrf: str = Form(default="")) -> Response:
        s = session(request)
        if s is not None:
            why = form_refused(request, s, csrf)
            if why is not None:  # (a forged sign-out: the session stays)
                return page("refused.html", 403, caller=s.caller, csrf=s.csrf, error=why)
            call(sessions.end, s)
        r = signin()
        r.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict", secure=secure(request))
        return r

    @app.get("/ui", include_in_schema=False)
    def queue(request: Request, page_arg: str | None = Query(default=None, alias="page"),
              held_arg: str | None = Query(default=None, alias="held")) -> Response:
        s = session(request)
        if s is None:
            return signin(request)
        page_no, held_no = page_number(page_arg), page_number(held_arg)
        caller = s.caller
        routes: dict[str, list] = {}
        totals: dict[str, int] = {}  # every single open plan of a route, listed or not
        batches: list[dict] = []
        in_batches: set[str] = set()
        pages = 1
        held: dict = {"held": [], "held_total": 0, "held_page": 1, "held_pages": 1}
        if st.runtime is not None:
            held = call(batchview.held_gates, st.runtime, held_no, _now())
            items = call(st.runtime.queue)
            batches, in_batches = call(batchview.open_batches, st.runtime, items, _now())
            singles = [i for i in items if i.rollback_id not in in_batches]
            # the single plans QUEUE_SHOWN a page, oldest first (a page past the end shows the last)
            pages = max(1, -(-len(singles) // QUEUE_SHOWN))
            page_no = min(page_no, pages)
            first = (page_no - 1) * QUEUE_SHOWN
            for n, item in enumerate(singles):
                r = item.route or "(no route)"
                totals[r] = totals.get(r, 0) + 1
                routes.setdefault(r, [])
                if first <= n < first + QUEUE_SHOWN:
                    routes[r].append(item)
            for b in batches:
                for r in b["routes"]:
                    routes.setdefault(r, [])
        by_route = {r: [b for b in batches if r in b["routes"]] for r in routes}
        batched_of = {r: sum(b["routes"][r] for b in bs) for r, bs in by_route.items()}  # open plans in batches
        return page("queue.html", caller=caller, csrf=s.csrf, routes=routes, by_route=by_route, batched_of=batched_of,
                    totals=totals, ledger=st.runtime is not None, page=min(page_no, pages), pages=pages, **held)

    @app.get("/ui/plans/{rollback_id}", include_in_schema=False)
    def plan(rollback_id: str, request: Request, msg: str | None = None, sig: str | None = None) -> Response:
        s = session(request)
        if s is None:
            return signin(request)
        return _plan_page(rollback_id, s, vouched(s, msg, sig))

    def _plan_page(rollback_id: str, s: Session, msg: str | None, status: int = 200,
                   error: str | None = None) -> Response:
        if st.runtime is None:
            raise Problem(404, "no-ledger", "the server runs without a ledger")
        auth = plain(call(st.runtime.authorization, rollback_id))
        if auth["kind"] != "rollback":
            raise Problem(404, NOT_A["rollback"][0], f"`{rollback_id}` is a {auth['kind']}, not {NOT_A['rollback'][1]}")
        hist = plain(call(st.runtime.history, rollback_id))
        rb = hist.get("rollback") or {}
        body = (rb.get("entry") or {}).get("body") or {}
        ex = hist.get("execution") or {}
        xbody = (ex.get("entry") or {}).get("body") or {}
        dec = ((ex.get("decision") or {}).get("entry") or {}).get("body") or {}
        # the action as gated; an execution recorded without a decision (flagged unauthorized)
        # names its action itself
        action = dec.get("action") if dec else xbody.get("action")
        plan = body.get("plan") or {}
        until = plan.get("reversible_until")
        return page("plan.html", status, caller=s.caller, csrf=s.csrf, id=rollback_id, auth=auth, rollback=rb,
                    body=body, plan=plan, execution=ex, action=action, receipt=xbody.get("receipt"), msg=msg,
                    gate=ex.get("decision") if (ex.get("decision") or {}).get("entry") else None,
                    error=error, past_window=isinstance(until, str) and until <= _now())

    @app.post("/ui/plans/{rollback_id}", include_in_schema=False)
    def decide(rollback_id: str, request: Request, verdict: str = Form(...), reason: str = Form(default="",
               max_length=2 * MAX_REASON), csrf: str = Form(default=""),
               principal: str | None = Form(default=None)) -> Response:
        return _decide("rollback", rollback_id, request, verdict, reason, csrf, principal)

    def _decide(kind: str, subject_id: str, request: Request, verdict: str, reason: str, csrf: str,
                principal: str | None) -> Response:
        """Approve or deny a rollback plan or a held gate decision as the signed-in reviewer."""
        s = session(request)
        if s is None:
            return signin(request, posted=True)
        caller = s.caller
        if st.runtime is None:
            raise Problem(404, "no-ledger", "the server runs without a ledger")
        shown = _plan_page if kind == "rollback" else _decision_page

        def again(status: int, error: str) -> Response:
            return shown(subject_id, s, None, status, error)

        why = form_refused(request, s, csrf)
        if why is not None:
            return again(403, why)
        if principal is not None and principal != caller.principal:
            return again(403, f"refused: you are signed in as {caller.principal}; an approval is always given by "
                              f"the signed-in reviewer, never on behalf of {principal}")
        if verdict not in ("approve", "deny"):
            return again(422, "choose approve or deny")
        reason = typed(reason)
        if len(reason) > MAX_REASON:
            return again(422, TOO_LONG)
        # (a plan's form posted at a gate decision, a batch or anything else: refused as its page is, nothing recorded)
        was = call(st.runtime.authorization, subject_id).kind
        if was != kind:
            raise Problem(404, NOT_A[kind][0], f"`{subject_id}` is a {was}, not {NOT_A[kind][1]}")
        r = call(st.runtime.approve, subject_id, principal=caller.principal, roles=caller.roles, verdict=verdict,
                 note=reason or None)
        # the engine's word on this reviewer's approval: why it does not count, or that it was
        # already counted (a second tab's approval is recorded, and counts once), the reviewer
        # known by every spelling the engine counts as theirs (as the pages' "(you)" is)
        said, before = None, None
        if r.recorded and verdict == "approve":
            v = call(st.runtime.authorization, subject_id).verdict
            said, before = _again(v, caller.principal)
        if r.recorded and (r.counted or before is not None):
            msg = f"{'approved' if verdict == 'approve' else 'denied'} by {caller.principal}"
            if before is not None:
                msg += f" (again: you had already approved it{before}, and one reviewer's approvals count once)"
            msg += f"; status {r.status}"
        elif r.recorded:
            why = str(said.reason) if said is not None else (
                f"no open slot takes {caller.principal} with the roles {', '.join(caller.roles) or '(none)'}"
                if verdict == "approve" else r.reason or "no slot takes your roles")
            msg = f"recorded, but it does not count: {why}; status {r.status}"
        else:
            msg = f"not recorded: {r.reason or 'it takes no more approvals'}; status {r.status}"
        return told(request, f"/ui/{'plans' if kind == 'rollback' else 'decisions'}/{quote(subject_id)}", s, msg)

    # ------------------------------------------------------------------ held gates
    @app.get("/ui/decisions/{decision_id}", include_in_schema=False)
    def decision(decision_id: str, request: Request, msg: str | None = None, sig: str | None = None) -> Response:
        s = session(request)
        if s is None:
            return signin(request)
        return _decision_page(decision_id, s, vouched(s, msg, sig))

    def _decision_page(decision_id: str, s: Session, msg: str | None, status: int = 200,
                       error: str | None = None) -> Response:
        if st.runtime is None:
            raise Problem(404, "no-ledger", "the server runs without a ledger")
        auth = plain(call(st.runtime.authorization, decision_id))
        if auth["kind"] != "decision":
            raise Problem(404, NOT_A["decision"][0], f"`{decision_id}` is a {auth['kind']}, not {NOT_A['decision'][1]}")
        hist = plain(call(st.runtime.history, decision_id))
        d = hist.get("decision") or {}
        entry = d.get("entry") or {}
        body = entry.get("body") or {}
        a = batchview.asked(body)
        until = body.get("pending_until")
        held = auth["status"] in ("pending", "approved") and auth["claim_id"] is None
        # a stop of its workflow after it: approved or not, it cannot run (its claim is refused)
        stopped = call(st.runtime.stopped_after, decision_id) if held else None
        return page("decision.html", status, caller=s.caller, csrf=s.csrf, id=decision_id, auth=auth, entry=entry,
                    body=body, asked=a, dec=a["decision"], fields=_fields(a["action"]), matched=_matched(a["decision"]),
                    approvals=d.get("approvals") or [], transitions=d.get("transitions") or [],
                    executions=hist.get("executions") or [], msg=msg, error=error,
                    past=isinstance(until, str) and until <= _now(), held=held, stopped=stopped)

    @app.post("/ui/decisions/{decision_id}", include_in_schema=False)
    def decide_gate(decision_id: str, request: Request, verdict: str = Form(...), reason: str = Form(default="",
                    max_length=2 * MAX_REASON), csrf: str = Form(default=""),
                    principal: str | None = Form(default=None)) -> Response:
        return _decide("decision", decision_id, request, verdict, reason, csrf, principal)

    # ------------------------------------------------------------------ batches
    @app.get("/ui/batches/{batch_id}", include_in_schema=False)
    def batch(batch_id: str, request: Request, page_arg: str | None = Query(default=None, alias="page"),
              msg: str | None = None, sig: str | None = None) -> Response:
        s = session(request)
        if s is None:
            return signin(request)
        return _batch_page(batch_id, s, page_number(page_arg), vouched(s, msg, sig))

    def _batch_page(batch_id: str, s: Session, page_no: int, msg: str | None, status: int = 200,
                    error: str | None = None) -> Response:
        if st.runtime is None:
            raise Problem(404, "no-ledger", "the server runs without a ledger")
        head = call(batchview.batch_entry, st.runtime, batch_id)
        if head is None:
            raise Problem(404, "not-a-batch", f"`{batch_id}` is not a rollback batch")
        view = call(batchview.batch_page, st.runtime, head, page_no, _now())
        return page("batch.html", status, caller=s.caller, csrf=s.csrf, id=batch_id, head=head.body,
                    auth=plain(view.pop("auth")), msg=msg, error=error, **view)

    @app.post("/ui/batches/{batch_id}", include_in_schema=False)
    def decide_batch(batch_id: str, request: Request, verdict: str = Form(...),
                     reason: str = Form(default="", max_length=2 * MAX_REASON), csrf: str = Form(default=""),
                     batch_hash: str = Form(default="", max_length=256),
                     principal: str | None = Form(default=None)) -> Response:
        s = session(request)
        if s is None:
            return signin(request, posted=True)
        caller = s.caller

        def again(status: int, error: str) -> Response:
            return _batch_page(batch_id, s, 1, None, status, error)

        why = form_refused(request, s, csrf)
        if why is not None:
            return again(403, why)
        if principal is not None and principal != caller.principal:
            return again(403, f"refused: you are signed in as {caller.principal}; an approval is always given by "
                              f"the signed-in reviewer, never on behalf of {principal}")
        if verdict not in ("approve", "deny"):
            return again(422, "choose approve or deny")
        reason = typed(reason)
        if len(reason) > MAX_REASON:
            return again(422, TOO_LONG)
        if st.runtime is None:
            raise Problem(404, "no-ledger", "the server runs without a ledger")
        head = call(batchview.batch_entry, st.runtime, batch_id)
        if head is None:
            raise Problem(404, "not-a-batch", f"`{batch_id}` is not a rollback batch")
        if not batch_hash or batch_hash != head.body.get("batch_hash"):
            return again(409, f"refused, nothing recorded: the page you decided on showed the batch hash "
                              f"{batch_hash or '(none)'}, but this batch is now {head.body.get('batch_hash')}. "
                              "Review the batch as it is now, then decide again.")
        try:
            r = call(st.runtime.approve_batch, batch_id, principal=caller.principal, roles=caller.roles,
                     batch_hash=batch_hash, verdict=verdict, note=reason or None)
        except Problem as e:  # e.g. the runtime's own hash check, a plan that changed meanwhile
            return again(e.status if e.status < 500 else 409, f"refused, nothing recorded: {e.detail}")
        word = "approved" if verdict == "approve" else "denied"
        counts = ", ".join(f"{n} {s}" for s, n in sorted(r["statuses"].items())) or "no plan changed"
        if r["counted"]:
            msg = f"{word} by {caller.principal}: counted on {r['counted']} of {r['plans']} open plans ({counts})"
        elif r["plans"]:
            why = call(batchview.why_not, st.runtime, r["approval_id"], caller.principal) or (
                f"no open slot takes {caller.principal} with the roles {', '.join(caller.roles) or '(none)'}")
            msg = f"recorded, but it does not count on any of the {r['plans']} open plans: {why} ({counts})"
        else:
            msg = "recorded on the batch, but on no plan: none of its plans takes this decision now"
        # the plans it was not recorded on, and why (a plan classified under another policy
        # version is pending, not decided: no approval counts on it until it is requested again)
        stale = sum(1 for x in r["skipped"] if x.get("stale"))
        closed = len(r["skipped"]) - stale
        if closed:
            msg += f"; {closed} plan{' was' if closed == 1 else 's were'} already decided or under way"
        if stale:
            msg += (f"; {stale} plan{'' if stale == 1 else 's'} pending under another policy version than the one "
                    "in use, where no approval counts: request them again")
        return told(request, f"/ui/batches/{quote(batch_id)}", s, msg)
