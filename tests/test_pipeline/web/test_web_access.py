"""Who reaches the web UI (docs/behaviour.md §10.1), against a running gateway over loopback:
only requests naming the gateway are answered (DNS rebinding), a body must arrive in time, and
the login throttle keys on the client a trusted reverse proxy names, never on a forged header."""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from aiohttp.test_utils import make_mocked_request
from web_support import RunningGateway, running_gateway

import pipeline.web.server as server
from pipeline.web.access import client_address, host_name

PROXIED = {"WEB_Hosts": "gw.plant.example, 192.0.2.7", "WEB_TrustedProxies": "127.0.0.0/8"}


@pytest.fixture(scope="module")
def proxied_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """A gateway behind a reverse proxy on the box: its public name in `WEB_Hosts`, loopback
    trusted to forward the client's address."""
    with running_gateway(tmp_path_factory.mktemp("proxied"), inverters=1,
                         extra=PROXIED) as running:
        yield running


# ----------------------------------------------------------------------------- Host


def test_a_rebound_name_reaches_nothing(web_gateway: RunningGateway) -> None:
    """A page of evil.example, its name rebound to the gateway's address, drives the
    installer's browser: no login, no API, no page, nothing read past the headers."""
    evil = {"Host": "evil.example"}
    with web_gateway.client() as client:
        for method, path in (("GET", "/api/devices"), ("GET", "/"), ("GET", "/login"),
                             ("POST", "/api/system/connect"), ("GET", "/static/sunpm.css")):
            answer = client.request(method, path, headers=evil, json={"server": 1})
            assert answer.status_code == 421, (method, path, answer.status_code)
            assert "set-cookie" not in answer.headers
        assert client.get("/api/devices").status_code == 200
    with web_gateway.client(login=False) as client:
        answer = client.post("/api/login", headers={"Host": "evil.example:8080"},
                             json={"user": "admin", "password": web_gateway.password})
        assert answer.status_code == 421
        assert answer.json()["error"].startswith("this gateway does not answer")
        assert "set-cookie" not in answer.headers


def test_the_gateways_own_names_are_answered(web_gateway: RunningGateway) -> None:
    port = urlsplit(web_gateway.url).port
    with web_gateway.client() as client:
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST.", f"[::1]:{port}",
                     socket.gethostname(), f"{socket.gethostname().split('.')[0]}.local"):
            assert client.get("/api/session", headers={"Host": host}).status_code == 200, host
        for host in ("127.0.0.1.evil.example", "localhost.evil.example", "", "a b", "[::1"):
            assert client.get("/api/session", headers={"Host": host}).status_code in \
                (400, 421), host


def test_web_hosts_names_a_reverse_proxys_name(proxied_gateway: RunningGateway) -> None:
    with proxied_gateway.client() as client:
        for host in ("gw.plant.example", "GW.plant.example:443", "192.0.2.7"):
            assert client.get("/api/session", headers={"Host": host}).status_code == 200, host
        assert client.get("/api/session", headers={"Host": "plant.example"}).status_code == 421


@pytest.mark.parametrize(("header", "name"), [
    ("Host.Example:80", "host.example"), ("[::1]:8080", "::1"), ("a.example.", "a.example"),
    ("10.0.0.1", "10.0.0.1"), ("[::1", ""), ("evil.example@127.0.0.1", ""),
    ("127.0.0.1/x", "")])
def test_host_name(header: str, name: str) -> None:
    assert host_name(header) == name


# ----------------------------------------------------------------------------- slow bodies


def _raw_request(url: str, head: str) -> socket.socket:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    sock.sendall(head.replace("\n", "\r\n").encode())
    return sock


def test_a_body_sent_a_byte_at_a_time_is_cut_off(web_gateway: RunningGateway,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A logged-in client declaring 200 bytes and sending one every half second held the
    connection and its reader for ever; now 408 once the body's time is up."""
    monkeypatch.setattr(server, "BODY_GRACE_S", 2.0)
    with web_gateway.client() as client:
        cookie = client.cookies["sunpm_session"]
        csrf = client.headers["X-CSRF-Token"]
    sock = _raw_request(web_gateway.url, (
        f"POST /api/commands HTTP/1.1\nHost: {urlsplit(web_gateway.url).netloc}\n"
        f"Cookie: sunpm_session={cookie}\nX-CSRF-Token: {csrf}\n"
        "Content-Type: application/json\nContent-Length: 200\n\n"))
    started = time.monotonic()
    answer = b""
    with sock:
        sock.settimeout(0.5)
        for _ in range(60):             # 30 s at most
            with contextlib.suppress(OSError):     # closed after its answer
                sock.sendall(b" ")
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:    # a byte sent after the answer and the close
                break
            if not chunk:
                break
            answer += chunk
    elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"request body not received in time" in answer
    assert elapsed < 15, elapsed


def test_a_large_upload_at_a_modest_rate_passes(web_gateway: RunningGateway,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The deadline grows with the body: 3 MiB at about 2 MiB/s passes a 1 MiB/s floor, where
    a deadline fit for a small form would cut it."""
    monkeypatch.setattr(server, "BODY_GRACE_S", 1.0)
    monkeypatch.setattr(server, "BODY_MIN_RATE", 2**20)
    body = b'{"text": "' + b"#" * (3 * 2**20 - 12) + b'"}'

    def paced() -> Iterator[bytes]:
        step = 64 * 1024
        for start in range(0, len(body), step):
            yield body[start:start + step]
            time.sleep(step / (2 * 2**20))

    with web_gateway.client() as client:
        answer = client.put("/api/defs/paced.csv", content=paced(), timeout=30,
                            headers={"Content-Type": "application/json"})
    assert answer.status_code not in (408, 413), answer.text
    assert answer.status_code in (200, 201, 422), answer.text


def test_a_body_waiting_its_turn_gets_its_time_from_its_turn(
        web_gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """Large bodies are read two at a time: one waiting behind two others is not read, and
    must not lose its time meanwhile (it was cut off with 408 as soon as it was let in)."""
    monkeypatch.setattr(server, "BODY_GRACE_S", 1.0)
    monkeypatch.setattr(server, "BODY_MIN_RATE", 10 * 2**20)
    assert web_gateway.plugin is not None and web_gateway.plugin.app is not None
    turns = web_gateway.plugin.app[server._BIG_BODIES]
    body = b'{"text": "' + b"#" * (2 * 2**20) + b'"}'

    async def take_both() -> None:
        await turns.acquire()
        await turns.acquire()

    def give_back() -> None:
        turns.release()
        turns.release()

    web_gateway.call(take_both())
    released = False
    try:
        with web_gateway.client() as client, ThreadPoolExecutor(1) as pool:
            upload = pool.submit(client.put, "/api/defs/turn.csv", content=body, timeout=60,
                                 headers={"Content-Type": "application/json"})
            # Three times the 1.2 s the body has from its arrival: it waits its turn meanwhile.
            time.sleep(3.5)
            assert not upload.done()
            assert web_gateway.loop is not None
            web_gateway.loop.call_soon_threadsafe(give_back)
            released = True
            answer = upload.result(60)
        assert answer.status_code not in (408, 413), answer.text
    finally:
        if not released:
            assert web_gateway.loop is not None
            web_gateway.loop.call_soon_threadsafe(give_back)


def test_body_deadlines_fit_a_slow_lan() -> None:
    """256 kbit/s carries every route's largest body within its deadline."""
    slow_lan = 256_000 / 8
    for cap in (server.MAX_BODY_BYTES, server.MAX_UPLOAD_BODY_BYTES,
                server.MAX_PACKAGE_BODY_BYTES):
        assert server.body_time_limit(cap) >= cap / slow_lan


# ----------------------------------------------------------------------------- throttle


def _login(client: httpx.Client, password: str, forwarded: str | None) -> int:
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    return client.post("/api/login", json={"user": "admin", "password": password},
                       headers=headers).status_code


def test_forged_forwarded_for_does_not_bypass_the_throttle(
        web_gateway: RunningGateway) -> None:
    """No trusted proxy: the throttle keys on the peer, whatever X-Forwarded-For says."""
    try:
        with web_gateway.client(login=False) as client:
            codes = [_login(client, "wrong", f"10.9.0.{k}") for k in range(6)]
            assert codes[:5] == [401] * 5 and codes[5] == 429
            assert _login(client, web_gateway.password, "10.9.0.200") == 429
    finally:
        web_gateway.reset_throttle()


def test_behind_a_trusted_proxy_the_throttle_keys_on_the_forwarded_client(
        proxied_gateway: RunningGateway) -> None:
    """The proxy on loopback forwards every client: one guessing passwords no longer blocks
    the installer, and cannot dodge its own block with a forged X-Forwarded-For (the proxy
    appends the address it saw, the right-most one)."""
    try:
        with proxied_gateway.client(login=False) as client:
            codes = [_login(client, "wrong", "203.0.113.5") for _ in range(6)]
            assert codes[:5] == [401] * 5 and codes[5] == 429
            assert _login(client, proxied_gateway.password, "198.51.100.1, 203.0.113.5") == 429
            assert _login(client, proxied_gateway.password, "203.0.113.5, 127.0.0.1") == 429
            assert _login(client, proxied_gateway.password, "192.168.1.20") == 200
            # Without the header the client is the proxy itself, not a blocked one.
            assert _login(client, proxied_gateway.password, None) == 200
    finally:
        proxied_gateway.reset_throttle()


@pytest.mark.parametrize(("forwarded", "client"), [
    ("192.0.2.1", "192.0.2.1"), ("192.0.2.1:50432", "192.0.2.1"),
    ("[2001:db8::1]:50432", "2001:db8::1"), ("2001:db8::1", "2001:db8::1"),
    ("198.51.100.9, 192.0.2.1:1, 10.1.2.3", "192.0.2.1"), ("unknown", "unknown"),
    ("192.0.2.1, 127.0.0.1", "192.0.2.1")])
def test_the_client_a_trusted_proxy_forwards(forwarded: str, client: str) -> None:
    """Read from the right, trusted hops skipped, a port some proxies add dropped (a new port
    per connection would otherwise be a new client for the throttle)."""
    request = make_mocked_request("GET", "/", headers={"X-Forwarded-For": forwarded}).clone(
        remote="127.0.0.1")
    assert client_address(request, ("10.0.0.0/8", "127.0.0.0/8")) == client
    assert client_address(request, ("192.168.0.0/16",)) == "127.0.0.1"


def test_an_ipv6_client_is_throttled_by_its_64(proxied_gateway: RunningGateway) -> None:
    """A host of an IPv6 LAN takes any address of its /64 (privacy addresses): a new one per
    guess went past a throttle that counted addresses."""
    try:
        with proxied_gateway.client(login=False) as client:
            codes = [_login(client, "wrong", f"2001:db8:1:2::{k:x}") for k in range(1, 7)]
            assert codes[:5] == [401] * 5 and codes[5] == 429
            assert _login(client, proxied_gateway.password, "2001:db8:1:2:ffff::1") == 429
            assert _login(client, proxied_gateway.password, "2001:db8:1:3::1") == 200
    finally:
        proxied_gateway.reset_throttle()


def test_cookies_are_secure_behind_a_proxy_that_ends_tls(
        proxied_gateway: RunningGateway, web_gateway: RunningGateway) -> None:
    """Behind a reverse proxy serving HTTPS, the session cookie lacked `Secure`: a browser sent
    it over any plain http:// link to the same name (an injected image), in clear text."""
    https = {"X-Forwarded-Proto": "https"}

    def cookies(gateway: RunningGateway, headers: dict[str, str]) -> list[str]:
        with gateway.client(login=False) as client:
            answer = client.post("/api/login", headers=headers,
                                 json={"user": "admin", "password": gateway.password})
            assert answer.status_code == 200
            form = client.get("/login", headers=headers)
            return [answer.headers["set-cookie"], form.headers["set-cookie"]]

    assert all("; Secure" in c for c in cookies(proxied_gateway, https))
    assert not any("Secure" in c for c in cookies(proxied_gateway, {}))
    # Said by a client, not by a trusted proxy: ignored.
    assert not any("Secure" in c for c in cookies(web_gateway, https))


def test_behind_a_proxy_the_bearer_token_is_for_the_box_only(
        proxied_gateway: RunningGateway) -> None:
    """`sunpm cmd`'s token is taken from loopback clients only; a LAN client forwarded by a
    proxy on the box is not one."""
    token = (Path(proxied_gateway.data_dir) / "api-token").read_text().strip()
    with httpx.Client(base_url=proxied_gateway.url) as client:
        bearer = {"Authorization": f"Bearer {token}"}
        assert client.get("/api/status", headers=bearer).status_code == 200
        assert client.get("/api/status", headers={
            **bearer, "X-Forwarded-For": "192.168.1.20"}).status_code == 401


# ----------------------------------------------------------------------------- faults


def test_a_fault_of_the_gateway_is_answered_in_the_apis_form(
        web_gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """An unexpected exception in a handler was aiohttp's text/plain "500 Internal Server
    Error / Server got itself in trouble", where an API client expects `{"error": ...}`; a page
    left the installer outside the UI."""
    assert web_gateway.plugin is not None and web_gateway.plugin.context is not None
    facade = type(web_gateway.plugin.context.facade)

    async def broken(self: object) -> object:
        raise RuntimeError("a fault of the test")

    monkeypatch.setattr(facade, "status", broken)
    monkeypatch.setattr(facade, "dashboard", broken)
    with web_gateway.client() as client:
        answer = client.get("/api/status")
        assert answer.status_code == 500
        assert answer.json() == {"error": "internal error; the gateway log has the details"}
        assert answer.headers["content-security-policy"].startswith("default-src 'self'")
        page = client.get("/")
        assert page.status_code == 500
        assert "internal error; the gateway log has the details." in page.text
        assert 'href="/devices"' in page.text      # the navigation: still inside the UI
    assert "Web request failed: GET /api/status: a fault of the test" in caplog.text


@pytest.mark.parametrize(("content_type", "body"), [
    ("multipart/form-data; boundary=xx",
     b"--xx\r\nContent-Disposition: form-data\r\n\r\nabc\r\n--xx--\r\n"),
    ("multipart/form-data", b"garbage"),
    ("application/x-www-form-urlencoded; charset=no-such-charset", b"user=admin"),
])
def test_a_malformed_form_is_the_senders_fault(
        web_gateway: RunningGateway, caplog: pytest.LogCaptureFixture, content_type: str,
        body: bytes) -> None:
    """A form aiohttp cannot parse was a 500 and a traceback in the gateway log, which anyone
    could fill through the login form without a password."""
    caplog.set_level(logging.ERROR)
    with web_gateway.client(login=False) as client:
        answer = client.post("/login", content=body, headers={"Content-Type": content_type})
        assert answer.status_code == 400, answer.text
        assert answer.text.startswith("malformed form body")
    with web_gateway.client() as client:
        answer = client.post("/api/scripts", content=body,
                             headers={"Content-Type": content_type})
        assert answer.status_code == 400, answer.text
        # A page's form (no CSRF header: the token is looked for in the body): refused as a
        # form without its token.
        client.headers.pop("X-CSRF-Token")
        assert client.post("/scripts", content=body,
                           headers={"Content-Type": content_type}).status_code == 403
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
