"""Connections to the web server against a running gateway (docs/web.md, connections): idle
connections and request heads sent a byte at a time cannot hold the server's file descriptors,
which the gateway's Modbus connections and store share."""

from __future__ import annotations

import base64
import socket
import time
from urllib.parse import urlsplit

from web_support import RunningGateway

from pipeline.web.server import MAX_CONNECTIONS

LIMIT_S = 30.0


def _closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed `sock` (whatever it wrote before)."""
    try:
        while True:
            if not sock.recv(65536):
                return True
    except BlockingIOError:
        return False
    except ConnectionError:
        return True


def test_idle_and_half_sent_connections_cannot_hold_the_server(
        web_gateway: RunningGateway) -> None:
    parts = urlsplit(web_gateway.url)
    assert parts.hostname is not None and parts.port is not None
    held: list[socket.socket] = []
    # A request inside the server when the flood comes (its body half sent) is answered.
    body = b'{"files": {}}'
    uploading = socket.create_connection((parts.hostname, parts.port), timeout=LIMIT_S)
    credentials = base64.b64encode(f"admin:{web_gateway.password}".encode()).decode()
    uploading.sendall(f"POST /api/config/validate HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                      f"Authorization: Basic {credentials}\r\nContent-Type: application/json"
                      f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body[:5])
    try:
        with web_gateway.client() as client:
            # The upload is inside its handler once another request got through after it.
            assert client.get("/api/session").status_code == 200
        for k in range(6 * MAX_CONNECTIONS):
            sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
            if k % 2:
                # A slow client's head, never finished.
                sock.sendall(f"GET /api/status HTTP/1.1\r\nHost: {parts.netloc}\r\n".encode())
            sock.setblocking(False)
            held.append(sock)
        with web_gateway.client() as client:
            assert client.get("/api/status", timeout=LIMIT_S).status_code == 200
        deadline = time.monotonic() + LIMIT_S
        while (closed := sum(map(_closed_by_server, held))) < len(held) - MAX_CONNECTIONS:
            assert time.monotonic() < deadline, f"{closed} of {len(held)} closed"
            time.sleep(0.2)
        uploading.sendall(body[5:])
        assert uploading.recv(12) == b"HTTP/1.1 200"
    finally:
        uploading.close()
        for sock in held:
            sock.close()
