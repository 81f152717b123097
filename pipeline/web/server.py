"""The web server: an aiohttp application inside the gateway's TaskGroup (a plug-in that spans
configuration reloads), its security middlewares, login and logout.

Every page area is a module with a `routes` table (`AREAS`); a page and its `/api/` twin both
call the area's facade method (see `pipeline.web.common`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import errno
import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, urlsplit

from aiohttp import web

from config.errors import SunpmError
from pipeline.web import (
    configuration,
    dashboard,
    devices,
    diagnostics,
    discovery,
    scripts,
    system,
)
from pipeline.web.access import behind_https, host_allowed, is_loopback, throttle_key
from pipeline.web.auth import (
    Session,
    Sessions,
    local_password_hash,
    new_api_token,
)
from pipeline.web.common import (
    CONFIG_FILE_MAX_BYTES,
    CONTEXT,
    CSRF_FIELD,
    CSRF_HEADER,
    JSON_TEXT_FACTOR,
    LOGIN_COOKIE,
    NAVIGATION,
    SESSION_COOKIE,
    SESSION_KEY,
    LoginBlocked,
    WebContext,
    client_of,
    context,
    json_error,
    json_ok,
    page,
    password_hash,
    request_json,
    session_of,
    templates,
    try_login,
)
from pipeline.web.config_forms import CONFIG_FILES
from pipeline.web.facade import Conflict, GatewayFacade, NotFound

if TYPE_CHECKING:
    from pipeline.service.gateway import Gateway

log = logging.getLogger("sunpm.web")

AREAS: Final = (dashboard, devices, discovery, diagnostics, configuration, scripts, system)
STATIC_DIR: Final = Path(__file__).with_name("static")
_PUBLIC: Final = frozenset({"/login", "/api/login", "/favicon.ico"})
_SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
_CSP: Final = ("default-src 'self'; img-src 'self' data:; object-src 'none'; "
               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
#: Request bodies (docs/behaviour.md §13: 1 MB, uploads 10 MB, `.spm` 200 MB; else 413), in
#: MiB as every size of the project (docs/spec-notes.md, web UI).
MAX_BODY_BYTES: Final = 2**20
MAX_UPLOAD_BODY_BYTES: Final = 10 * 2**20
MAX_PACKAGE_BODY_BYTES: Final = 200 * 2**20
#: The routes whose body carries a file: a definition file (device form, `defs`), a script, a
#: configuration file, the files of a validation.
_FILE_UPLOADS: Final = frozenset({
    ("POST", "/devices/new"), ("POST", "/devices/{index}/edit"), ("PUT", "/api/defs/{name}"),
    ("POST", "/scripts"), ("POST", "/api/scripts"), ("POST", "/api/config/validate")})
#: `PUT /api/config/{section}`: a configuration file's text (`config.ini`) or a section's form.
_CONFIG_PUT: Final = ("PUT", "/api/config/{section}")
#: Connections served at once (a browser opens 6): the oldest are closed for a new one, once
#: their request, if any, is answered; beyond twice as many a new one is refused. Idle or
#: half-sent connections would otherwise hold file descriptors, of which the whole gateway has
#: 1,024 (254 Modbus connections, the store, the servers).
MAX_CONNECTIONS: Final = 64
#: A body must arrive whole within `BODY_GRACE_S` plus its length (declared, else the route's
#: cap) at `BODY_MIN_RATE`, else 408 and the connection closed: a client sending a few bytes a
#: second would hold a connection and a reader for ever. 256 kbit/s is a poor Wi-Fi link or an
#: SSH tunnel over a mobile line: an update package of 200 MiB gets 1 h 50 min, a 10 MiB upload
#: 6 min, a 1 MiB body 1 min.
BODY_GRACE_S: Final = 30.0
BODY_MIN_RATE: Final = 32_000
#: Where an update package is uploaded (written to a temporary file as it arrives).
_PACKAGE_UPLOADS: Final = frozenset({"/system/update", "/api/system/update"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# ----------------------------------------------------------------------------- middlewares


@dataclass(slots=True)
class _InUse:
    """The connections with a request inside the application, and those of them to close once
    answered (`_listen`)."""

    busy: set[object] = field(default_factory=set)
    closing: set[object] = field(default_factory=set)
    #: Closed by `_listen` and still listed by the server.
    dropped: set[object] = field(default_factory=set)


_IN_USE: Final = web.AppKey("sunpm_web_in_use", _InUse)


class _BodyTooSlow(TimeoutError):
    """Set on a request's body stream when its deadline passes: every read of it raises. A
    `TimeoutError`, as aiohttp's own reads of what a handler left unread expect."""


@dataclass(slots=True)
class _BodyClock:
    """When the request's body must have arrived (loop time); `expired` once it has not."""

    deadline: float
    expired: bool = False
    #: Waiting its turn (`big_bodies_in_turn`): nothing reads the body, its time stands still.
    waiting: bool = False
    timer: asyncio.TimerHandle | None = None


_BODY_CLOCK: Final = web.RequestKey("sunpm_web_body_clock", _BodyClock)
#: The requests with a body over `MAX_BODY_BYTES` handled at once (`big_bodies_in_turn`).
_BIG_BODIES: Final = web.AppKey("sunpm_web_big_bodies", asyncio.Semaphore)


@web.middleware
async def mark_busy(request: web.Request, handler: Handler) -> web.StreamResponse:
    in_use = request.app[_IN_USE]
    connection = request.protocol
    in_use.busy.add(connection)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    finally:
        in_use.busy.discard(connection)
        evicted = connection in in_use.closing
        in_use.closing.discard(connection)
    if evicted:
        response.force_close()
    if isinstance(response, web.HTTPException):
        raise response
    return response


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    # What the answer cost inside the gateway (the rest of a slow answer is waiting for the
    # event loop or the network): read by benchmarks/web_latency.py.
    response.headers["Server-Timing"] = \
        f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
    response.headers.setdefault("Content-Security-Policy", _CSP)
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    # aiohttp's default names Python's and its own versions.
    response.headers["Server"] = "sunpm"
    if not request.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-store")
    if isinstance(response, web.HTTPException):
        raise response
    return response


def _is_loopback(request: web.Request) -> bool:
    # The client, not the peer: a reverse proxy on the box forwards LAN clients from loopback.
    return is_loopback(client_of(request))


@web.middleware
async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Only requests naming this gateway (`pipeline.web.access`: DNS rebinding), before any
    other middleware reads a cookie or a body."""
    bind, hosts, _ = context(request).facade.web_access()
    if host_allowed(request, bind, hosts):
        return await handler(request)
    text = "this gateway does not answer to that host name (WEB_Hosts lists the names it does)"
    response = json_error(text, 421) if request.path.startswith("/api/") else \
        web.Response(status=421, text=f"{text}\n")
    # Nothing of the request was read past its headers.
    response.force_close()
    return response


async def _basic_user(request: web.Request, header: str) -> str | None:
    """The user of valid HTTP Basic credentials (throttled like the login form)."""
    ctx = context(request)
    try:
        user, _, password = base64.b64decode(header, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    client = client_of(request)
    if (wait_s := ctx.sessions.blocked_for(throttle_key(client))) > 0:
        raise _too_many(request, wait_s)
    digest = hashlib.sha256(f"{user}\0{password}\0{password_hash(ctx)}".encode())
    remembered: set[bytes] = ctx.extra.setdefault("basic_ok", set())
    if digest.digest() in remembered:
        return user
    try:
        if not await try_login(ctx, client, user, password):
            return None
    except LoginBlocked as blocked:
        raise _too_many(request, blocked.wait_s) from None
    if len(remembered) > 16:
        remembered.clear()
    remembered.add(digest.digest())
    return user


def _too_many(request: web.Request, wait_s: float) -> web.HTTPException:
    retry = str(max(1, round(wait_s)))
    if request.path.startswith("/api/"):
        return web.HTTPTooManyRequests(
            text='{"error": "too many failed logins; try again later"}',
            content_type="application/json", headers={"Retry-After": retry})
    return web.HTTPTooManyRequests(text="Too many failed logins; try again in a minute.\n",
                                   headers={"Retry-After": retry})


def body_limit(request: web.Request) -> int:
    """The largest body the request's route takes (docs/behaviour.md §13)."""
    if request.path in _PACKAGE_UPLOADS:
        return MAX_PACKAGE_BODY_BYTES
    resource = request.match_info.route.resource
    canonical = resource.canonical if resource is not None else ""
    if (request.method, canonical) == _CONFIG_PUT:
        # A configuration file's text, JSON-escaped; a section's fields are a small form.
        if request.match_info.get("section") in CONFIG_FILES:
            return CONFIG_FILE_MAX_BYTES * JSON_TEXT_FACTOR
        return MAX_BODY_BYTES
    if (request.method, canonical) in _FILE_UPLOADS:
        return MAX_UPLOAD_BODY_BYTES
    return MAX_BODY_BYTES


def _too_large(request: web.Request, limit: int) -> web.StreamResponse:
    text = f"request body larger than {limit // 2**20} MiB"
    name = request.match_info.get("section")
    if name in CONFIG_FILES:
        text = f"{name}: {text} ({name} takes at most {CONFIG_FILE_MAX_BYTES >> 20} MiB)"
    if request.path.startswith("/api/"):
        return json_error(text, 413)
    return web.Response(status=413, text=f"{text}\n")


@web.middleware
async def limit_bodies(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Each route's body limit, before anything reads the body or asks who sends it: a declared
    length above it is refused unread; a chunked body is cut off by aiohttp as it passes it
    (`client_max_size`, answered by `_facade_errors`)."""
    limit = body_limit(request)
    if request.content_length is not None and request.content_length > limit:
        return _too_large(request, limit)
    if limit != request.client_max_size:
        request = request.clone(client_max_size=limit)
    return await handler(request)


def body_time_limit(length: int) -> float:
    """Seconds a body of `length` bytes may take to arrive."""
    return BODY_GRACE_S + length / BODY_MIN_RATE


@web.middleware
async def body_deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A body not whole by its deadline (`body_time_limit` of its declared length, else of the
    route's cap) fails every read of it; the answer is 408, whatever the handler made of it."""
    content = request.content
    if not request.body_exists or content.is_eof():
        return await handler(request)
    length = request.content_length
    expected = request.client_max_size if length is None else \
        min(length, request.client_max_size)
    loop = asyncio.get_running_loop()
    clock = _BodyClock(loop.time() + body_time_limit(expected))
    request[_BODY_CLOCK] = clock

    def check() -> None:
        if content.is_eof():
            return
        if clock.waiting:
            clock.timer = loop.call_later(1.0, check)
            return
        if (remaining := clock.deadline - loop.time()) > 0:
            # Extended once the request had waited its turn (`big_bodies_in_turn`).
            clock.timer = loop.call_later(remaining, check)
            return
        clock.expired = True
        content.set_exception(_BodyTooSlow())

    clock.timer = loop.call_later(clock.deadline - loop.time(), check)
    try:
        response = await handler(request)
    except Exception:
        if not clock.expired:
            raise
    finally:
        clock.timer.cancel()
    if not clock.expired:
        return response
    log.warning("Web request body not received within %.0f s; connection closed. client=%s",
                body_time_limit(expected), client_of(request))
    text = "request body not received in time"
    answer = json_error(text, 408) if request.path.startswith("/api/") else \
        web.Response(status=408, text=f"{text}\n")
    answer.force_close()
    return answer


@web.middleware
async def big_bodies_in_turn(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A body over `MAX_BODY_BYTES` (or of unknown length) where a route takes more waits its
    turn, once its sender is known (a stranger never holds one): a file's body is read whole
    and decoded, about three times its size at once, and two at a time keep uploads sent
    together within reach of a 512 MB box."""
    length = request.content_length
    if request.client_max_size <= MAX_BODY_BYTES or \
            (length is not None and length <= MAX_BODY_BYTES):
        return await handler(request)
    clock = request.get(_BODY_CLOCK)
    waited = time.monotonic()
    if clock is not None:
        clock.waiting = True
    try:
        async with request.app[_BIG_BODIES]:
            if clock is not None:
                # The body is not read while it waits: its time starts again with its turn.
                clock.waiting = False
                clock.deadline += time.monotonic() - waited
            return await handler(request)
    finally:
        if clock is not None:
            clock.waiting = False


#: What aiohttp raises for a form it cannot parse (a multipart part without a name, no
#: boundary, an unknown charset): the sender's fault, not the gateway's.
_MALFORMED_FORM: Final = (ValueError, LookupError, AssertionError)
_FORM_TYPES: Final = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


@web.middleware
async def well_formed_forms(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A form body is parsed before its handler (aiohttp keeps it for the handler's own
    `post()`): one that cannot be is 400, not a 500 whose traceback an unauthenticated sender
    could write into the gateway log (uploaded, within a quota) as often as it likes."""
    if request.method in ("POST", "PUT") and request.content_type in _FORM_TYPES and \
            request.body_exists:
        try:
            await request.post()
        except _MALFORMED_FORM as err:
            text = f"malformed form body ({err})"[:200]
            if request.path.startswith("/api/"):
                return json_error(text, 400)
            return web.Response(status=400, text=f"{text}\n")
    return await handler(request)


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """No page or API without a session (or Basic/bearer credentials on the API); writes of a
    cookie session need its CSRF token and, when the browser sends one, a matching Origin."""
    path = request.path
    if path in _PUBLIC or path.startswith("/static/"):
        return await handler(request)
    ctx = context(request)
    session = ctx.sessions.get(request.cookies.get(SESSION_COOKIE))
    api = path.startswith("/api/")
    if session is None and api:
        authorization = request.headers.get("Authorization", "")
        scheme, _, credentials = authorization.partition(" ")
        if authorization and _foreign_origin(request):
            # A script sends no Origin; a browser does, and sends Basic credentials it has
            # kept (an address typed as http://admin:pw@gateway/) with another site's forms.
            return json_error("cross-origin request refused", 403)
        if scheme.lower() == "basic":
            if await _basic_user(request, credentials.strip()) is not None:
                return await handler(request)
        elif scheme.lower() == "bearer" and ctx.api_token and _is_loopback(request) and \
                hmac.compare_digest(credentials.strip().encode(), ctx.api_token.encode()):
            return await handler(request)
    if session is None:
        if api:
            return json_error("login required", 401)
        target = path + (f"?{request.query_string}" if request.query_string else "") \
            if request.method in _SAFE_METHODS else _form_page(request)
        raise web.HTTPFound(f"/login?next={quote(target, safe='')}")
    request[SESSION_KEY] = session
    if request.method not in _SAFE_METHODS:
        refusal = await _csrf_refusal(request, session)
        if refusal is not None:
            if api:
                return json_error(refusal, 403)
            return _error_page(request, "Not done", f"{refusal}: this form came from an "
                               "earlier session; open the page again and repeat it.", 403,
                               back=_form_page(request))
    return await handler(request)


def _form_page(request: web.Request) -> str:
    """The page a form was sent from (its action answers POST only): the Referer when it is
    this server's, else the page of the area. A login or a refusal leads back there, not to a
    bare 405 of the action's address."""
    referer = urlsplit(request.headers.get("Referer", ""))
    if referer.netloc == request.host and referer.path.startswith("/") and \
            not referer.path.startswith(("//", "/login", "/api/")):
        return referer.path + (f"?{referer.query}" if referer.query else "")
    return _area(request.path)[0]


def _foreign_origin(request: web.Request) -> bool:
    """The browser says the request comes from a page of another site (or `null`). The host
    only: behind a reverse proxy that ends TLS the browser's origin is https while this server
    sees plain http, with the same Host."""
    origin = request.headers.get("Origin")
    return origin is not None and urlsplit(origin).netloc != request.host


async def _csrf_refusal(request: web.Request, session: Session) -> str | None:
    if _foreign_origin(request):
        return "cross-origin request refused"
    token = request.headers.get(CSRF_HEADER)
    if token is None and request.content_type in _FORM_TYPES:
        try:
            form = await request.post()
        except _MALFORMED_FORM:
            return "missing or wrong CSRF token"
        value = form.get(CSRF_FIELD)
        token = value if isinstance(value, str) else None
    if token is None or not hmac.compare_digest(token.encode(), session.csrf.encode()):
        return "missing or wrong CSRF token"
    return None


# ----------------------------------------------------------------------------- login


routes = web.RouteTableDef()


def _safe_next(target: str | None) -> str:
    """Only a path of this site (never `//host` or a scheme) after login. A control character
    makes it `/`: browsers drop tabs and line ends from an address, so `/<tab>/host` is
    `//host`, another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target \
            or any(ord(c) < 0x20 or ord(c) == 0x7f for c in target):
        return "/"
    return target


def _login_page(request: web.Request, *, error: str = "", status: int = 200,
                next_path: str = "/") -> web.Response:
    # The login form's CSRF token: a cookie the form must repeat (no session exists yet).
    token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
    response = page(request, "login.html", {"error": error, "login_token": token,
                                            "next": next_path}, status=status)
    response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="Strict", path="/login",
                        secure=_https(request))
    return response


@routes.get("/login")
async def login_form(request: web.Request) -> web.StreamResponse:
    return _login_page(request, next_path=_safe_next(request.query.get("next")))


def _start_session(request: web.Request, user: str) -> Session:
    """A new session (a session cookie sent before login is never reused: fixation)."""
    ctx = context(request)
    ctx.sessions.close(request.cookies.get(SESSION_COOKIE))
    return ctx.sessions.open(user)


def _https(request: web.Request) -> bool:
    return behind_https(request, context(request).facade.web_access()[2])


def _set_session_cookie(request: web.Request, response: web.StreamResponse,
                        session: Session) -> None:
    response.set_cookie(SESSION_COOKIE, session.token, httponly=True, samesite="Strict",
                        path="/", secure=_https(request))


@routes.post("/login")
async def login(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    form = await request.post()
    next_path = _safe_next(str(form.get("next", "/")))
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    sent = str(form.get(CSRF_FIELD, ""))
    if _foreign_origin(request):
        return _login_page(request, error="This form came from another site.", status=403,
                           next_path=next_path)
    if not cookie or not hmac.compare_digest(cookie.encode(), sent.encode()):
        return _login_page(request, error="The form expired; please log in again.", status=403,
                           next_path=next_path)
    client = client_of(request)
    try:
        ok = await try_login(ctx, client, str(form.get("user", "")),
                             str(form.get("password", "")))
    except LoginBlocked as blocked:
        return _login_page(request, status=429, next_path=next_path, error="Too many failed "
                           f"logins; try again in {max(1, round(blocked.wait_s))} s.")
    if not ok:
        return _login_page(request, error="Wrong user or password.", status=401,
                           next_path=next_path)
    response = web.HTTPSeeOther(next_path)
    _set_session_cookie(request, response, _start_session(request, ctx.facade.web_user()))
    response.del_cookie(LOGIN_COOKIE, path="/login")
    log.info("Web login. client=%s", client)
    return response


@routes.post("/api/login")
async def api_login(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    if _foreign_origin(request):
        # A page of another site sending guesses from the installer's browser, inside the
        # plant's network (a JSON body passes as text/plain, which needs no preflight).
        return json_error("cross-origin request refused", 403)
    try:
        body: Any = await request_json(request)
    except ValueError:
        return json_error("expected a JSON object {user, password}", 400)
    if not isinstance(body, dict):
        return json_error("expected a JSON object {user, password}", 400)
    client = client_of(request)
    try:
        ok = await try_login(ctx, client, str(body.get("user", "")),
                             str(body.get("password", "")))
    except LoginBlocked as blocked:
        raise _too_many(request, blocked.wait_s) from None
    if not ok:
        return json_error("wrong user or password", 401)
    session = _start_session(request, ctx.facade.web_user())
    response = json_ok({"csrf": session.csrf, "user": session.user})
    _set_session_cookie(request, response, session)
    return response


@routes.post("/logout")
async def logout(request: web.Request) -> web.StreamResponse:
    context(request).sessions.close(request.cookies.get(SESSION_COOKIE))
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


@routes.post("/api/logout")
async def api_logout(request: web.Request) -> web.StreamResponse:
    context(request).sessions.close(request.cookies.get(SESSION_COOKIE))
    response = json_ok({})
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


@routes.get("/api/session")
async def api_session(request: web.Request) -> web.StreamResponse:
    """Who is logged in, and the CSRF token a script must send with its writes."""
    session = session_of(request)
    return json_ok({"user": session.user if session else "",
                    "csrf": session.csrf if session else ""})


@routes.get("/favicon.ico")
async def favicon(request: web.Request) -> web.StreamResponse:
    return web.Response(status=204)


# ----------------------------------------------------------------------------- the app


async def _facade_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The facade's `NotFound` (404) and `Conflict` (409) for every handler, so that none need
    catch them: as JSON under /api/ (docs/behaviour.md §10.3), with unknown routes and methods
    and the gateway's own faults (500), and as a page with the navigation for the pages (a
    stale link leaves the installer in the UI, not on a bare text answer)."""
    api = request.path.startswith("/api/")
    try:
        return await handler(request)
    except NotFound as err:
        if api:
            return json_error(str(err), 404)
        return _error_page(request, "Not found", str(err), 404)
    except Conflict as err:
        if api:
            return json_error(str(err), 409)
        return _error_page(request, "Not possible now", str(err), 409)
    except web.HTTPNotFound as err:
        if api:
            return json_error("no such resource", 404)
        if request.path.startswith("/static/") or session_of(request) is None:
            raise
        text = (err.text or "").strip()
        return _error_page(request, "Not found",
                           "No such page." if text.startswith("404") or not text else text, 404)
    except web.HTTPMethodNotAllowed:
        if api:
            return json_error(f"{request.method} not allowed here", 405)
        if request.method == "GET":
            # A form's action reached by reload, history or a login's `next`: its page.
            raise web.HTTPSeeOther(_area(request.path)[0]) from None
        raise
    except web.HTTPRequestEntityTooLarge as err:
        if "form fields" in (err.text or ""):
            # aiohttp's own cap on a form's fields: the body is within its size.
            text = f"a form of more than {request.client_max_fields} fields"
            if api:
                return json_error(text, 413)
            return web.Response(status=413, text=f"{text}\n")
        return _too_large(request, body_limit(request))
    except (web.HTTPException, ConnectionError):
        raise
    except Exception as err:
        # A fault of the gateway's own: logged with its traceback; the client gets the API's
        # JSON form (docs/behaviour.md §10.3) or a page of the UI, never a bare text answer.
        log.error("Web request failed: %s %s: %s", request.method, request.path, err,
                  exc_info=err)
        text = "internal error; the gateway log has the details"
        if api:
            return json_error(text, 500)
        return _error_page(request, "Not done", f"{text}.", 500)


def _area(path: str) -> tuple[str, str]:
    """The navigation entry (page, label) a path belongs to."""
    return next(((href, label) for href, label in NAVIGATION[1:] if path.startswith(href)),
                NAVIGATION[0])


def _error_page(request: web.Request, heading: str, message: str,
                status: int, *, back: str | None = None) -> web.Response:
    """A page's refusal inside the UI, with a way back to the area it came from (or `back`)."""
    area = _area(request.path)
    return page(request, "error.html", {
        "heading": heading, "message": message, "back": back or area[0],
        "back_label": area[1] if back is None or back == area[0] else "the form"},
        status=status)


#: The files the pages load: a name outside it is a plain 404 (aiohttp's static route answers a
#: missing file with an empty chunked body that Chromium shows as ERR_INVALID_RESPONSE).
_STATIC_FILES: Final = frozenset(p.name for p in STATIC_DIR.iterdir() if p.is_file())


async def _static_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in _STATIC_FILES:
        raise web.HTTPNotFound(text=f"no static file '{name}'\n")
    return web.FileResponse(STATIC_DIR / name)


def build_app(ctx: WebContext) -> web.Application:
    app = web.Application(middlewares=[mark_busy, security_headers, check_host,
                                       web.middleware(_facade_errors),
                                       limit_bodies, body_deadline, authenticate,
                                       big_bodies_in_turn, well_formed_forms],
                          client_max_size=MAX_BODY_BYTES)
    app[CONTEXT] = ctx
    app[_IN_USE] = _InUse()
    app[_BIG_BODIES] = asyncio.Semaphore(2)
    app.add_routes(routes)
    for area in AREAS:
        app.add_routes(area.routes)
    app.router.add_get("/static/{name}", _static_file)
    return app


def _print(text: str) -> None:
    # The console, not the log: the one-time password must never reach the uploaded LOG files.
    print(text, flush=True)


class WebPlugin:
    """The web UI as a gateway plug-in: serves `WEB_Bind:WEB_Port` for the whole run.

    `port` overrides `WEB_Port` (tests: 0 for an ephemeral port); `free_port_fallback` takes a
    free port when the configured one is in use (the demo); `announce` is told the address
    (`http://host:port/`) once listening, and the one-time password at a first start."""

    spans_reloads = True

    def __init__(self, *, port: int | None = None, free_port_fallback: bool = False,
                 announce: Callable[[str], None] | None = None) -> None:
        self._port = port
        self._fallback = free_port_fallback
        self._announce = announce or _print
        self.url: str | None = None
        self.listening = asyncio.Event()
        self.context: WebContext | None = None
        self.app: web.Application | None = None

    async def run(self, gateway: Gateway) -> None:
        """Serve until cancelled. A web UI that cannot start (its port taken, its data folder
        unwritable, a fault of its own) is logged and leaves the gateway running without it."""
        try:
            await self._serve(gateway)
        except (OSError, SunpmError) as err:
            log.error("Web UI stopped: %s", err)
        except Exception as err:
            log.error("Web UI stopped on an unexpected error: %s", err, exc_info=err)

    async def _serve(self, gateway: Gateway) -> None:
        site = gateway.site
        assert site is not None
        settings = site.settings
        stored = ""
        if not settings.web_password_hash:
            stored, first = await asyncio.to_thread(local_password_hash, gateway.data_dir)
            if first is not None and first.password is not None:
                kept = f"also in {first.file}; " if first.kept else "for this run only; "
                self._announce(f"Web UI one-time password for '{settings.web_user}': "
                               f"{first.password} ({kept}change it on the Configuration page)")
            elif first is not None:
                self._announce(f"Web UI one-time password: see {first.file}")
        token = await asyncio.to_thread(new_api_token, gateway.data_dir)
        ctx = WebContext(facade=GatewayFacade(gateway), sessions=Sessions(),
                         templates=templates(), local_password_hash=stored, api_token=token)
        self.context = ctx
        self.app = build_app(ctx)
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        listener: asyncio.Server | None = None
        try:
            host = settings.web_bind
            port = settings.web_port if self._port is None else self._port
            try:
                listener = await _listen(runner, host, port)
            except OSError as err:
                if not (self._fallback and err.errno == errno.EADDRINUSE):
                    # The reason alone (`Address already in use`): asyncio's strerror repeats
                    # the address in Python's notation.
                    reason = os.strerror(err.errno) if err.errno else (err.strerror or str(err))
                    log.error("Web UI not started: cannot listen on %s:%d: %s", host, port,
                              reason)
                    return
                listener = await _listen(runner, host, 0)
                log.warning("Web UI port %d is in use; a free port is taken instead (WEB_Port "
                            "or `sunpm run --web-port` chooses another)", port)
            bound = int(listener.sockets[0].getsockname()[1]) if listener.sockets else port
            shown = f"[{host}]" if ":" in host else host
            self.url = f"http://{shown}:{bound}/"
            log.info("Web UI listening. url=%s", self.url)
            self._announce(f"Web UI on {self.url}")
            self.listening.set()
            await asyncio.Event().wait()
        finally:
            self.listening.clear()
            if listener is not None:
                listener.close()
            await runner.cleanup()


class _Refused(asyncio.Protocol):
    """A connection over twice `MAX_CONNECTIONS`: answered 503 and closed unread."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                        b"Connection: close\r\n\r\n")
        transport.close()


async def _listen(runner: web.AppRunner, host: str, port: int) -> asyncio.Server:
    """Serve `runner` on `host:port` with at most `MAX_CONNECTIONS` connections kept: each new
    one past it closes the oldest (an idle or half-sent one at once, one inside a handler once
    its answer is sent; a browser opens a closed keep-alive connection again unseen)."""
    server = runner.server
    assert server is not None
    in_use = runner.app[_IN_USE]

    def admit() -> asyncio.BaseProtocol:
        # A connection closed here stays listed until the loop has run its end.
        listed = server.connections
        in_use.dropped.intersection_update(listed)
        connections = [h for h in listed if h not in in_use.dropped]
        kept = len(connections)
        for handler in connections[:max(0, kept - MAX_CONNECTIONS + 1)]:
            if handler in in_use.busy:
                # Its body may still be arriving: closed after its answer (`mark_busy`).
                in_use.closing.add(handler)
            else:
                handler.force_close()
                in_use.dropped.add(handler)
                kept -= 1
        if kept >= 2 * MAX_CONNECTIONS:
            return _Refused()
        return server()

    return await asyncio.get_running_loop().create_server(admit, host, port,
                                                          reuse_address=True)
