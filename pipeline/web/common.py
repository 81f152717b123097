"""What every page and API handler shares: the context stored on the app, the navigation,
template rendering, JSON answers and the problems of a rejected configuration.

A page and its `/api/` twin call the same facade method (`pipeline.web.facade`) and differ only
in the last line: `page(request, "x.html", data)` or `json_ok(data)`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import jinja2
from aiohttp import web

from exporters.session.commands import load_command_json
from exporters.session.config_sync import DOWNLOAD_CAPS
from pipeline.web.access import client_address, throttle_key
from pipeline.web.auth import BLOCKED_S, Session, Sessions, verify_password
from pipeline.web.editing import Verdict

if TYPE_CHECKING:
    from pipeline.web.facade import GatewayFacade

#: The pages of docs/behaviour.md §10.2, in the order of the navigation bar.
NAVIGATION: Final = (
    ("/", "Dashboard"),
    ("/devices", "Devices"),
    ("/discovery", "Discovery"),
    ("/diagnostics", "Diagnostics"),
    ("/configuration", "Configuration"),
    ("/scripts", "Scripts"),
    ("/system", "System"),
)

SESSION_COOKIE: Final = "sunpm_session"
LOGIN_COOKIE: Final = "sunpm_login"
CSRF_FIELD: Final = "csrf"
CSRF_HEADER: Final = "X-CSRF-Token"


@dataclass(slots=True)
class WebContext:
    """The web UI's state for the whole run (it outlives configuration reloads)."""

    facade: GatewayFacade
    sessions: Sessions
    templates: jinja2.Environment
    #: The hash checked when `WEB_PasswordHash` is empty (docs/behaviour.md §10.1 first start).
    local_password_hash: str = ""
    api_token: str = ""
    #: One credential check at a time (`try_login`).
    login_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    refusals: RefusalLog = field(default_factory=lambda: RefusalLog())
    extra: dict[str, Any] = field(default_factory=dict)


log = logging.getLogger("sunpm.web")

CONTEXT: Final = web.AppKey("sunpm_web", WebContext)
#: The request's session, set by the auth middleware (None: HTTP Basic or bearer clients).
SESSION_KEY: Final = web.RequestKey("sunpm_session", Session)


def password_hash(ctx: WebContext) -> str:
    """`WEB_PasswordHash`, else the hash drawn at the first start."""
    return ctx.facade.web_password_hash() or ctx.local_password_hash


async def check_credentials(ctx: WebContext, user: str, password: str) -> bool:
    stored = password_hash(ctx)
    right_user = hmac.compare_digest(user.encode(), ctx.facade.web_user().encode())
    # The hash is computed for a wrong user too: the answer's time does not tell users apart.
    ok = await asyncio.to_thread(verify_password, password, stored)
    return ok and right_user


class LoginBlocked(Exception):
    """The client's logins are throttled for `wait_s` more seconds."""

    def __init__(self, wait_s: float) -> None:
        super().__init__(wait_s)
        self.wait_s = wait_s


async def try_login(ctx: WebContext, client: str, user: str, password: str) -> bool:
    """Checks credentials and counts the outcome for the throttle; `LoginBlocked` while the
    client is throttled.

    One check at a time, the throttle consulted once the check's turn has come: guesses sent
    at once on many connections would each pass a throttle that has not counted the first yet
    (hundreds a minute instead of 5), each running a 16 MiB scrypt in a thread of the default
    executor, which the store's writes share."""
    key = throttle_key(client)
    if (wait_s := ctx.sessions.blocked_for(key)) > 0:
        raise LoginBlocked(wait_s)
    async with ctx.login_lock:
        if (wait_s := ctx.sessions.blocked_for(key)) > 0:
            raise LoginBlocked(wait_s)
        ok = await check_credentials(ctx, user, password)
        if ok:
            ctx.sessions.succeeded(key)
        else:
            ctx.refusals.log(client, blocked=ctx.sessions.failed(key))
        return ok


#: Refused logins logged a minute at most: guesses from many addresses would otherwise write
#: a line each into the gateway log (uploaded, kept within a quota), as fast as passwords can
#: be checked, and push the plant's own lines out.
MAX_LOGGED_REFUSALS: Final = 20


@dataclass(slots=True)
class RefusalLog:
    """The WARNING lines of refused logins, `MAX_LOGGED_REFUSALS` a minute at most; those left
    out are counted in one line with the next refusal after that minute."""

    clock: Callable[[], float] = time.monotonic
    _since: float = -math.inf
    _logged: int = 0
    _left_out: int = 0

    def log(self, client: str, *, blocked: bool) -> None:
        now = self.clock()
        if now - self._since >= 60:
            if self._left_out:
                log.warning("Web logins refused and not logged in the last minute: %d",
                            self._left_out)
            self._since, self._logged, self._left_out = now, 0, 0
        if self._logged >= MAX_LOGGED_REFUSALS:
            self._left_out += 1
            return
        self._logged += 1
        if blocked:
            log.warning("Web login refused; this client's logins are blocked for %d s. "
                        "client=%s", BLOCKED_S, client)
        else:
            log.warning("Web login refused. client=%s", client)


def client_of(request: web.Request) -> str:
    """The client's address, the login throttle's key: the peer's, or the one a trusted
    reverse proxy forwarded (`pipeline.web.access`)."""
    return client_address(request, request.app[CONTEXT].facade.web_access()[2])


def context(request: web.Request) -> WebContext:
    return request.app[CONTEXT]


def facade(request: web.Request) -> GatewayFacade:
    return request.app[CONTEXT].facade


def session_of(request: web.Request) -> Session | None:
    return request.get(SESSION_KEY)


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pipeline.web", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
        lstrip_blocks=True, auto_reload=False)
    env.globals["navigation"] = NAVIGATION
    env.filters["reading"] = reading
    return env


def reading(value: float | str | None) -> str:
    """A live value as a page shows it: a float to 4 decimals from 1 up, 6 significant digits
    below (an analog input's 13.988354332375218 mA reads 13.9884); the API keeps them all.
    sunpm.js's `reading` is the same rule for refreshed values."""
    if value is None:
        return ""
    if not isinstance(value, float) or value.is_integer() or not math.isfinite(value):
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    if abs(value) >= 1:
        return f"{round(value, 4):f}".rstrip("0").rstrip(".")
    return f"{value:.6g}"


def page(request: web.Request, template: str, data: Mapping[str, Any], *,
         status: int = 200) -> web.Response:
    """A server-rendered page: the template gets `data`, the session's CSRF token, the current
    path (navigation) and the gateway's uid for the title."""
    ctx = context(request)
    session = session_of(request)
    body = ctx.templates.get_template(template).render(
        **data, csrf=session.csrf if session is not None else "", path=request.path,
        uid=ctx.facade.uid(), user=session.user if session is not None else "")
    return web.Response(text=body, content_type="text/html", status=status)


def json_ok(data: Any, *, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def json_error(message: str, status: int, **extra: Any) -> web.Response:
    """docs/behaviour.md §10.3: `{"error": "<text>"}` with 400, 401, 403, 404, 409 or 422."""
    return web.json_response({"error": message, **extra}, status=status)


#: Values a JSON body may hold (real ones, a configuration section's fields or the rows of a
#: discovery import, hold a few hundred). 10 MiB of `{},` (a file route's limit) decoded into
#: 3.4 million dicts: the gateway went from 137 to 670 MB for 9 s, on a 512 MB box.
MAX_JSON_VALUES: Final = 100_000
_JSON_STRING: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def json_values_over(data: bytes, limit: int) -> bool:
    """More than `limit` values in a JSON text (counted by its separators and containers,
    strings left out), found without decoding it."""
    def count(text: bytes) -> int:
        return text.count(b",") + text.count(b"[") + text.count(b"{")

    # Separators inside strings count too at first: a file's text seldom has many.
    return count(data) > limit and count(_JSON_STRING.sub(b'""', data)) > limit


def _load_body(data: bytes) -> tuple[Any, str | None]:
    if json_values_over(data, MAX_JSON_VALUES):
        return None, f"body: more than {MAX_JSON_VALUES} values"
    return load_command_json(data, "body")


async def request_json(request: web.Request) -> Any:
    """The request's JSON body, read strictly: `ValueError` naming the fault for invalid JSON,
    NaN or Infinity (no journal or file could hold them), nesting deeper than 32 levels
    (Python's decoder would exhaust its recursion on it: a 500 instead of a 400) or more than
    `MAX_JSON_VALUES` values."""
    data = await request.read()
    # A file's body (up to 10 MiB) takes a fifth of a second to decode, too long for the loop
    # that polls.
    doc, problem = _load_body(data) if len(data) <= 2**18 else \
        await asyncio.to_thread(_load_body, data)
    if problem is not None:
        raise ValueError(problem)
    return doc


#: The largest file of each kind the web UI saves: the caps of the same files fetched from a
#: server (docs/behaviour.md §4.5), far above any real one (a config.ini of a full plant is some
#: 10 KiB). A 9 MiB config.ini was read, validated and written three times over (a save of three
#: of them took the gateway from 121 to 349 MB, on a 512 MB box).
CONFIG_FILE_MAX_BYTES: Final = DOWNLOAD_CAPS["CONFIG"]
SCRIPT_MAX_BYTES: Final = DOWNLOAD_CAPS["SCRIPT"]
DEFINITION_MAX_BYTES: Final = DOWNLOAD_CAPS["DEF"]
#: A file sent as JSON text is larger than the file: every line end and quote is escaped (two
#: bytes), an accented letter may come as `\u00e9` (six bytes for its two).
JSON_TEXT_FACTOR: Final = 3


def file_too_large(name: str, size: int, cap: int) -> web.Response | None:
    """The 413 answer to a file over its kind's cap, in the words of a server's file over its
    cap (docs/behaviour.md §4.5), or None."""
    if size <= cap:
        return None
    return json_error(f"{name}: larger than {cap >> 20} MiB; not saved", 413)


async def whole_file_text(request: web.Request, name: str, cap: int) -> str | web.Response:
    """A `{"text": "<the whole file>"}` body's text, or the 400 answer to anything else, or
    413 when the file passes `cap`."""
    try:
        body = await request_json(request)
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        return json_error('expected {"text": "<the whole file>"}', 400)
    text: str = body["text"]
    # UTF-8 takes at most 3 bytes per character: a shorter text is under the cap uncounted.
    if len(text) * 3 > cap:
        too_large = file_too_large(name, len(text.encode("utf-8", "surrogatepass")), cap)
        if too_large is not None:
            return too_large
    return text


def rejected(verdict: Verdict) -> web.Response:
    """422: the problems that refuse a configuration change, and their messages per field."""
    if verdict.blocking:
        text = str(verdict.blocking[0])
    else:
        key, messages = next(iter(verdict.fields.items()), ("", ["configuration rejected"]))
        text = f"{key}: {messages[0]}" if key else messages[0]
    return json_error(text, 422, **verdict.json())
