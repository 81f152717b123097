"""docs/behaviour.md §10.1 against a running gateway: nothing without login, no write without
the session's CSRF token, texts escaped, failed logins throttled, the one-time password."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import stat
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from web_support import RunningGateway

import pipeline.web
from pipeline.web.auth import hash_password, verify_password
from pipeline.web.common import MAX_LOGGED_REFUSALS, RefusalLog
from pipeline.web.server import build_app


def _every_route(gateway: RunningGateway) -> list[tuple[str, str]]:
    """(method, path) of every route of the app, dynamic parts filled with a device index."""
    assert gateway.plugin is not None and gateway.plugin.context is not None
    app = build_app(gateway.plugin.context)
    found = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or info.get("prefix")
        if path is None or route.method == "HEAD":
            continue
        found.append((route.method, re.sub(r"\{[^}]+\}", "1", path)))
    return found


PUBLIC = {"/login", "/api/login", "/favicon.ico", "/static"}


def test_no_page_or_api_answers_without_login(web_gateway: RunningGateway) -> None:
    routes = _every_route(web_gateway)
    assert len(routes) > 10
    with web_gateway.client(login=False) as client:
        for method, path in routes:
            if path in PUBLIC or path.startswith("/static"):
                continue
            answer = client.request(method, path)
            if path.startswith("/api/"):
                assert answer.status_code == 401, (method, path, answer.status_code)
                assert answer.json() == {"error": "login required"}
            elif method == "GET":
                assert answer.status_code == 302, (method, path, answer.status_code)
                assert answer.headers["location"].startswith("/login?next=")
            else:
                assert answer.status_code in (302, 303), (method, path, answer.status_code)
                assert answer.headers["location"].startswith("/login")


def test_a_forged_or_old_cookie_is_not_a_session(web_gateway: RunningGateway) -> None:
    with web_gateway.client(login=False) as client:
        client.cookies.set("sunpm_session", "x" * 43)
        assert client.get("/api/devices").status_code == 401
    with web_gateway.client() as client:
        token = client.cookies["sunpm_session"]
        assert client.post("/api/logout").status_code == 200
        client.cookies.set("sunpm_session", token)
        assert client.get("/api/devices").status_code == 401


def test_session_cookie_is_httponly_and_samesite_strict(web_gateway: RunningGateway) -> None:
    with web_gateway.client(login=False) as client:
        answer = client.post("/api/login", json={"user": "admin",
                                                 "password": web_gateway.password})
        cookie = answer.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert re.search(r"sunpm_session=[A-Za-z0-9_-]{43};", cookie)


def test_writes_without_the_csrf_token_are_refused(web_gateway: RunningGateway) -> None:
    with web_gateway.client() as client:
        token = client.headers.pop("X-CSRF-Token")
        answer = client.post("/api/logout")
        assert answer.status_code == 403
        assert answer.json() == {"error": "missing or wrong CSRF token"}
        answer = client.post("/api/logout", headers={"X-CSRF-Token": token[:-1] + "x"})
        assert answer.status_code == 403
        # A form without the token: 403 too (the session stays).
        answer = client.post("/logout", data={"other": "1"})
        assert answer.status_code == 403
        # A matching token from another origin.
        answer = client.post("/api/logout", headers={"X-CSRF-Token": token,
                                                     "Origin": "http://evil.example"})
        assert answer.status_code == 403
        assert answer.json() == {"error": "cross-origin request refused"}
        answer = client.post("/api/logout", headers={"X-CSRF-Token": token,
                                                     "Origin": "null"})
        assert answer.status_code == 403
        # The same host through a reverse proxy that ends TLS: the browser says https.
        host = web_gateway.url.split("//")[1].rstrip("/")
        answer = client.post("/api/config/validate", json={"files": {}},
                             headers={"X-CSRF-Token": token, "Origin": f"https://{host}"})
        assert answer.status_code == 200, answer.text
        assert client.get("/api/devices").status_code == 200
        assert client.post("/api/logout", headers={"X-CSRF-Token": token}).status_code == 200


def test_every_write_of_a_session_needs_its_token(web_gateway: RunningGateway) -> None:
    """Every route but GET (the two logins aside, which have their own checks) refuses a
    session's request without the CSRF token, before doing anything."""
    with web_gateway.client() as client:
        client.headers.pop("X-CSRF-Token")
        writes = [(m, p) for m, p in _every_route(web_gateway)
                  if m not in ("GET", "HEAD", "OPTIONS") and p not in ("/login", "/api/login")]
        assert len(writes) > 40
        for method, path in writes:
            answer = client.request(method, path, json={})
            assert answer.status_code == 403, (method, path, answer.status_code)
            form = client.request(method, path, data={"confirm": "x"})
            assert form.status_code == 403, (method, path, form.status_code)
        assert client.get("/api/session").json()["user"] == "admin"


def test_security_headers(web_gateway: RunningGateway) -> None:
    with web_gateway.client() as client:
        answer = client.get("/")
        csp = answer.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert answer.headers["x-frame-options"] == "DENY"
        assert "<script>" not in answer.text.replace('<script src="/static/', "")
        # No versions of the software underneath for whoever scans the plant's network.
        for path in ("/", "/login", "/static/sunpm.css", "/api/nosuch"):
            assert client.get(path).headers["server"] == "sunpm", path


def test_http_basic_for_api_clients_without_csrf(web_gateway: RunningGateway) -> None:
    with httpx.Client(base_url=web_gateway.url) as client:
        answer = client.get("/api/devices", auth=("admin", web_gateway.password))
        assert answer.status_code == 200
        assert [d["index"] for d in answer.json()["devices"]] == ["1", "2"]
        # Basic is for the API only: pages want a session.
        assert client.get("/devices", auth=("admin", web_gateway.password)).status_code == 302
        assert client.get("/api/devices", auth=("admin", "wrong")).status_code == 401
    web_gateway.reset_throttle()


def test_credentials_sent_from_another_site_are_refused(web_gateway: RunningGateway) -> None:
    """A browser keeps Basic credentials typed once into an address (http://admin:pw@gw/) and
    sends them with another site's forms: no CSRF token is asked of Basic clients, so the
    Origin is the only sign."""
    with httpx.Client(base_url=web_gateway.url) as client:
        auth = ("admin", web_gateway.password)
        answer = client.post("/api/logout", auth=auth, headers={"Origin": "http://evil.example"})
        assert answer.status_code == 403
        assert answer.json() == {"error": "cross-origin request refused"}
        host = web_gateway.url.split("//")[1].rstrip("/")
        assert client.post("/api/logout", auth=auth,
                           headers={"Origin": f"http://{host}"}).status_code == 200
        assert client.post("/api/logout", auth=auth).status_code == 200
    web_gateway.reset_throttle()


def test_bearer_token_from_the_data_folder(web_gateway: RunningGateway) -> None:
    token_file = web_gateway.data_dir / "api-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    with httpx.Client(base_url=web_gateway.url) as client:
        headers = {"Authorization": f"Bearer {token}"}
        assert client.get("/api/status", headers=headers).status_code == 200
        assert client.get("/api/status",
                          headers={"Authorization": "Bearer " + "y" * 43}).status_code == 401


def test_ten_wrong_passwords_slow_the_next_try(fresh_gateway: RunningGateway) -> None:
    with fresh_gateway.client(login=False) as client:
        codes = [client.post("/api/login", json={"user": "admin", "password": f"wrong{k}"})
                 .status_code for k in range(10)]
        assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}
        answer = client.post("/api/login", json={"user": "admin",
                                                 "password": fresh_gateway.password})
        assert answer.status_code == 429
        assert 50 <= int(answer.headers["retry-after"]) <= 60
        # The login page says so too, for the same client.
        assert client.get("/login").status_code == 200
    fresh_gateway.reset_throttle()
    with fresh_gateway.client() as client:
        assert client.get("/api/devices").status_code == 200


def test_concurrent_wrong_passwords_are_throttled_as_sequential_ones(
        fresh_gateway: RunningGateway) -> None:
    """Guesses sent at once on many connections, as the form, the API and HTTP Basic: five
    are checked and the rest refused, as if they came one after the other (every guess used to
    pass the throttle before the first was counted, and ran a 16 MiB scrypt in parallel)."""
    async def guesses() -> list[int]:
        async with httpx.AsyncClient(base_url=fresh_gateway.url, timeout=120,
                                     limits=httpx.Limits(max_connections=None)) as client:
            api = [client.post("/api/login", json={"user": "admin", "password": f"w{k}"})
                   for k in range(12)]
            basic = [client.get("/api/status", auth=("admin", f"b{k}")) for k in range(12)]
            answers = await asyncio.gather(*api, *basic)
            return [a.status_code for a in answers]

    codes = asyncio.run(guesses())
    assert sorted(codes) == [401] * 5 + [429] * 19, codes
    with fresh_gateway.client(login=False) as client:
        answer = client.post("/api/login", json={"user": "admin",
                                                 "password": fresh_gateway.password})
        assert answer.status_code == 429


def test_wrong_passwords_from_many_addresses_log_a_bounded_number_of_lines(
        fresh_gateway: RunningGateway, caplog: pytest.LogCaptureFixture) -> None:
    """Each refused login was a WARNING line of the gateway log (uploaded, kept within a
    quota): guesses from many addresses of the network wrote as many lines as the passwords
    could be checked, pushing the plant's own lines out."""
    port = urlsplit(fresh_gateway.url).port
    caplog.set_level(logging.WARNING, logger="sunpm.web")
    addresses = [f"127.0.0.{k}" for k in range(2, 14)]
    for address in addresses:
        transport = httpx.HTTPTransport(local_address=address)
        with httpx.Client(transport=transport, timeout=60) as client:
            for k in range(5):
                answer = client.post(f"http://127.0.0.1:{port}/api/login",
                                     json={"user": "admin", "password": f"wrong{k}"})
                assert answer.status_code == 401
    lines = [r.getMessage() for r in caplog.records if r.name == "sunpm.web"]
    assert 5 <= len(lines) <= MAX_LOGGED_REFUSALS + 1, lines
    # Blocks are told as they come within the bound.
    assert any("blocked for 60 s" in line for line in lines)


def test_refusals_left_out_are_counted_after_the_minute(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    refusals = RefusalLog(clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="sunpm.web")
    for k in range(MAX_LOGGED_REFUSALS + 5):
        refusals.log(f"10.0.0.{k}", blocked=False)
    assert len(caplog.records) == MAX_LOGGED_REFUSALS
    now[0] = 61.0
    refusals.log("10.0.0.1", blocked=True)
    assert [r.getMessage() for r in caplog.records[MAX_LOGGED_REFUSALS:]] == [
        "Web logins refused and not logged in the last minute: 5",
        "Web login refused; this client's logins are blocked for 60 s. client=10.0.0.1"]


def test_one_time_password_file_and_hash(fresh_gateway: RunningGateway) -> None:
    initial = fresh_gateway.data_dir / "initial-password"
    assert stat.S_IMODE(initial.stat().st_mode) == 0o600
    assert len(fresh_gateway.password) == 16
    announced = "\n".join(fresh_gateway.announced)
    assert fresh_gateway.password in announced and fresh_gateway.url in announced
    stored = (fresh_gateway.data_dir / "web-password").read_text().strip()
    assert stored.startswith("scrypt$16384$8$1$")
    assert verify_password(fresh_gateway.password, stored)
    # Never in the gateway's log (the LOG files are uploaded).
    for path in fresh_gateway.data_dir.rglob("*"):
        if path.is_file() and path.name not in ("initial-password",):
            assert fresh_gateway.password.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("password", ["", "pässwörd", "x" * 200])
def test_scrypt_hash_round_trip(password: str) -> None:
    stored = hash_password(password)
    assert verify_password(password, stored)
    assert not verify_password(password + "!", stored)
    assert not verify_password(password, "scrypt$bad")
    assert not verify_password(password, stored.replace("scrypt$16384", "scrypt$99999999"))


def test_login_redirect_stays_on_this_site(web_gateway: RunningGateway) -> None:
    with web_gateway.client(login=False) as client:
        page = client.get("/login?next=//evil.example/x")
        token = client.cookies["sunpm_login"]
        assert 'name="next" value="/"' in page.text
        answer = client.post("/login", data={"user": "admin", "password": web_gateway.password,
                                             "csrf": token, "next": "https://evil.example/"})
        assert answer.status_code == 303 and answer.headers["location"] == "/"
        # A browser drops tabs and line ends from an address: `/\t/host` is `//host`.
        for sent in ("/\t/evil.example/", "/\n/evil.example/", "/\r\n/evil.example/",
                     "/\x00/evil.example/"):
            page = client.get("/login", params={"next": sent})
            assert 'name="next" value="/"' in page.text, sent
            answer = client.post("/login", data={
                "user": "admin", "password": web_gateway.password,
                "csrf": client.cookies["sunpm_login"], "next": sent})
            assert answer.status_code == 303 and answer.headers["location"] == "/", sent
        # A path of the site with its query goes on as sent.
        client.get("/login")
        answer = client.post("/login", data={
            "user": "admin", "password": web_gateway.password,
            "csrf": client.cookies["sunpm_login"], "next": "/devices/1?span=24h"})
        assert answer.headers["location"] == "/devices/1?span=24h"


def test_a_login_from_another_site_is_refused(fresh_gateway: RunningGateway) -> None:
    """A page of another site the installer opens could send guesses from the installer's
    browser, inside the plant's network (a JSON body passes as text/plain, with no preflight),
    and they counted against the installer's own throttle."""
    with fresh_gateway.client(login=False) as client:
        for origin in ("http://evil.example", "null"):
            answer = client.post("/api/login", content=json.dumps(
                {"user": "admin", "password": fresh_gateway.password}),
                headers={"Origin": origin, "Content-Type": "text/plain"})
            assert answer.status_code == 403, answer.text
            client.get("/login")
            answer = client.post("/login", data={
                "user": "admin", "password": fresh_gateway.password,
                "csrf": client.cookies["sunpm_login"]}, headers={"Origin": origin})
            assert answer.status_code == 403
        assert "sunpm_session" not in client.cookies
        answer = client.post("/api/login", json={"user": "admin",
                                                 "password": fresh_gateway.password},
                             headers={"Origin": fresh_gateway.url.rstrip("/")})
        assert answer.status_code == 200


def test_login_form_without_its_token_is_refused(web_gateway: RunningGateway) -> None:
    with web_gateway.client(login=False) as client:
        answer = client.post("/login", data={"user": "admin", "password": web_gateway.password})
        assert answer.status_code == 403
        assert "sunpm_session" not in client.cookies


def test_private_files_are_not_world_readable(web_gateway: RunningGateway) -> None:
    for name in ("initial-password", "web-password", "api-token"):
        mode = (web_gateway.data_dir / name).stat().st_mode
        assert not mode & (stat.S_IRGRP | stat.S_IROTH), name
    assert os.access(web_gateway.data_dir / "web-password", os.R_OK)


def test_every_form_that_writes_carries_the_csrf_token() -> None:
    """Every POST form of every template, shown or not on a given page, has its token field."""
    folder = Path(pipeline.web.__file__).with_name("templates")
    forms = 0
    for template in sorted(folder.glob("*.html")):
        text = template.read_text()
        for match in re.finditer(r"<form\b([^>]*)>(.*?)</form>", text, re.S):
            if 'method="post"' not in match.group(1).lower():
                continue
            forms += 1
            assert re.search(r'<input type="hidden" name="csrf" value="\{\{ (csrf|login_token) '
                             r'\}\}">', match.group(2)), (template.name, match.group(1))
    assert forms >= 25


def test_the_pages_forms_carry_the_sessions_token(web_gateway: RunningGateway) -> None:
    with web_gateway.client() as client:
        token = client.headers["X-CSRF-Token"]
        for path in ("/", "/devices", "/devices/1", "/devices/new", "/devices/1/edit",
                     "/discovery", "/diagnostics", "/configuration", "/scripts", "/system"):
            page = client.get(path).text
            posts = re.findall(r'<form\b[^>]*method="post"[^>]*>(.*?)</form>', page, re.S)
            assert posts, path
            for body in posts:
                assert f'name="csrf" value="{token}"' in body, path


def test_a_stale_link_answers_a_page_of_the_ui(web_gateway: RunningGateway) -> None:
    with web_gateway.client() as client:
        for path, message, back in (("/devices/999", "no device &#39;999&#39;", "/devices"),
                                    ("/devices/%3Cb%3E/edit", "no device &#39;&lt;b&gt;&#39;",
                                     "/devices"),
                                    ("/scripts/x.lua/log", "no script &#39;x.lua&#39;",
                                     "/scripts"),
                                    ("/nothing", "No such page.", "/")):
            answer = client.get(path)
            assert answer.status_code == 404, path
            assert answer.headers["content-type"].startswith("text/html")
            assert f'<p class="problems" role="alert" id="error-message">{message}</p>' in \
                answer.text, (path, answer.text)
            assert f'<a href="{back}" id="error-back">' in answer.text
            assert 'action="/logout"' in answer.text      # the navigation is there
        assert client.get("/api/devices/999").json() == {"error": "no device '999'"}
        assert client.get("/static/nothing.js").status_code == 404
