"""Request body limits of the web server (docs/behaviour.md §13: 1 MB, uploads 10 MB, `.spm`
200 MB; else 413), at the limit and one byte over, against a running gateway: a declared length
above the limit is refused before the body is read (and before the login is checked), a chunked
body as it passes the limit; the API answers 413 in JSON."""

from __future__ import annotations

import gc
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from web_support import RunningGateway

from pipeline.web.server import MAX_BODY_BYTES, MAX_PACKAGE_BODY_BYTES, MAX_UPLOAD_BODY_BYTES

MIB = 2**20


def _json_of_size(prefix: str, size: int, suffix: str = '"}') -> bytes:
    """`prefix` + padding + `suffix`, exactly `size` bytes (a JSON object when both ends are)."""
    body = prefix.encode() + b"x" * (size - len(prefix) - len(suffix)) + suffix.encode()
    assert len(body) == size
    return body


def _chunks(data: bytes, step: int = 256 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), step):
        yield data[start:start + step]


def _declared_only(url: str, method: str, path: str, length: int) -> tuple[int, bytes]:
    """Send a request's headers declaring `length` bytes and no body: the status and body of the
    answer (a server that waits for the body instead times out)."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {length}\r\n"
                     "Connection: close\r\n\r\n".encode())
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < answer.index(b"\r\n\r\n") + 4 + 10:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_a_request_takes_1_mib_and_no_byte_more(web_gateway: RunningGateway) -> None:
    assert MAX_BODY_BYTES == MIB
    with web_gateway.client() as client:
        def post(body: bytes, **kwargs: object) -> httpx.Response:
            return client.post("/api/commands", content=body,  # type: ignore[arg-type]
                               headers={"Content-Type": "application/json"}, **kwargs)

        at_limit = _json_of_size('{"rpcName": "sunpm.getParameters", "parameters": {"pad": "',
                                 MIB, '"}}')
        answer = post(at_limit)
        assert answer.status_code == 200, answer.text[:200]
        assert answer.json() == {"result": "OK", "callerId": None}
        over = post(at_limit[:-2] + b' }}')
        assert over.status_code == 413
        assert over.json() == {"error": "request body larger than 1 MiB"}
        # Without a declared length (chunked), cut off as it passes the limit.
        chunked = client.post("/api/commands", content=_chunks(at_limit[:-2] + b' }}'),
                              headers={"Content-Type": "application/json"})
        assert chunked.status_code == 413 and chunked.json()["error"].startswith("request body")
        chunked_at = client.post("/api/commands", content=_chunks(at_limit),
                                 headers={"Content-Type": "application/json"})
        assert chunked_at.status_code == 200, chunked_at.text[:200]
        # A page's form: the same limit, a plain answer.
        form = client.post("/diagnostics", content=b"a=" + b"x" * (MIB - 1),
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert form.status_code == 413 and "larger than 1 MiB" in form.text


def test_file_uploads_take_10_mib(web_gateway: RunningGateway) -> None:
    assert MAX_UPLOAD_BODY_BYTES == 10 * MIB
    with web_gateway.client() as client:
        def put(body: bytes) -> httpx.Response:
            return client.put("/api/defs/big.csv", content=body,
                              headers={"Content-Type": "application/json"})

        at_limit = _json_of_size('{"text": "', 10 * MIB)
        answer = put(at_limit)
        # Read whole; a definition file takes 4 MiB, as one fetched from a server.
        assert answer.status_code == 413, answer.text[:200]
        assert answer.json() == {"error": "big.csv: larger than 4 MiB; not saved"}
        over = put(at_limit[:-2] + b' "}')
        assert over.status_code == 413
        assert over.json() == {"error": "request body larger than 10 MiB"}
        # Judged by `config` at its cap: not a definition file.
        at_cap = put(_json_of_size('{"text": "', 4 * MIB + len('{"text": "') + 2))
        assert at_cap.status_code == 422, at_cap.text[:200]
        # A script upload is a file upload too; the refusal is the script's size, not the body's.
        script = client.post("/api/scripts", files={
            "script": ("big.lua", b"-- " + b"x" * (2 * MIB))})
        assert script.status_code == 413, script.text[:200]
        assert script.json() == {"error": "big.lua: larger than 1 MiB; not saved"}
        # The device form's uploaded definition has the same cap as `PUT /api/defs`.
        form = client.post("/devices/new", data={"index": "77", "name": "big"}, files={
            "defUpload": ("big.csv", b"x" * (4 * MIB + 1))})
        assert form.status_code == 413, form.text[:200]
        assert "big.csv: larger than 4 MiB; not saved" in form.text
        assert not (web_gateway.config_dir / "DEF" / "big.csv").exists()


def test_a_declared_length_over_the_limit_is_refused_unread(
        web_gateway: RunningGateway) -> None:
    # No login: the length alone answers, nothing of the body is waited for.
    status, body = _declared_only(web_gateway.url, "POST", "/api/commands", MIB + 1)
    assert status == 413 and b"larger than 1 MiB" in body
    status, body = _declared_only(web_gateway.url, "PUT", "/api/defs/x.csv", 10 * MIB + 1)
    assert status == 413 and b"larger than 10 MiB" in body
    status, body = _declared_only(web_gateway.url, "POST", "/api/system/update",
                                  MAX_PACKAGE_BODY_BYTES + 1)
    assert status == 413 and b"larger than 200 MiB" in body
    # At the limit the server waits for the body: the login is asked for once it is known.
    with web_gateway.client(login=False) as client:
        answer = client.post("/api/commands", content=b"{}" + b" " * (MIB - 2),
                             headers={"Content-Type": "application/json"})
        assert answer.status_code == 401


def test_an_update_package_of_200_mib_is_read_whole(web_gateway: RunningGateway) -> None:
    """Exactly 200 MiB of multipart body, streamed: read to the end (the refusal is the missing
    SYSTEM_UpdateCommand, found once the form is read), never 413."""
    assert MAX_PACKAGE_BODY_BYTES == 200 * MIB
    boundary = "sunpmlimit"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"package\"; "
            f"filename=\"wgapp_1.0.spm\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    payload = MAX_PACKAGE_BODY_BYTES - len(head) - len(tail)

    def body() -> Iterator[bytes]:
        yield head
        block = b"\x5a" * MIB
        left = payload
        while left:
            yield block[:min(left, len(block))]
            left -= min(left, len(block))
        yield tail

    with web_gateway.client() as client:
        answer = client.post(
            "/api/system/update", content=body(), timeout=120,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}",
                     "Content-Length": str(MAX_PACKAGE_BODY_BYTES)})
    assert answer.status_code == 422, answer.text[:200]
    assert answer.json()["problems"][0]["message"] == \
        "updateFirmware: SYSTEM_UpdateCommand is not set"


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


#: Sends the same body `count` times at once: a process of its own, for its memory not to count.
_UPLOADER = """
import asyncio, json, sys
import httpx

url, csrf, cookie, count, size = sys.argv[1:6]
body = b'{"files": {"DEF/big.csv": "' + b"x" * (int(size) - 30) + b'"}}'

async def main() -> None:
    async with httpx.AsyncClient(base_url=url, timeout=120, cookies={"sunpm_session": cookie},
                                 limits=httpx.Limits(max_connections=None)) as client:
        answers = await asyncio.gather(*(client.post(
            "/api/config/validate", content=body,
            headers={"Content-Type": "application/json", "X-CSRF-Token": csrf})
            for _ in range(int(count))))
    print(json.dumps([a.status_code for a in answers]))

asyncio.run(main())
"""


def test_big_uploads_sent_at_once_are_read_two_at_a_time(web_gateway: RunningGateway) -> None:
    """Twelve 10 MiB validations at once (the gateway runs in this process): each costs about
    30 MB while it is read and decoded, so all at once took 180 to 310 MB of a 512 MB box."""
    with web_gateway.client() as client:
        csrf, cookie = client.headers["X-CSRF-Token"], client.cookies["sunpm_session"]
    Path("/proc/self/clear_refs").write_text("5")
    before = _peak_rss_mb()
    done = subprocess.run([sys.executable, "-c", _UPLOADER, web_gateway.url, csrf, cookie, "12",
                           str(MAX_UPLOAD_BODY_BYTES)], capture_output=True, text=True,
                          timeout=300, check=True)
    grown = _peak_rss_mb() - before
    assert json.loads(done.stdout) == [200] * 12
    assert grown < 130, f"peak resident memory grew by {grown:.0f} MB"


def test_configuration_files_are_capped_at_1_mib(fresh_gateway: RunningGateway) -> None:
    """config.ini, daq.csv, var.ini and scl.ini take 1 MiB each, as fetched from a server
    (docs/web.md): three config.ini of 9.3 MiB saved took the gateway (this process) from 121 to
    349 MB and `/api/status` 3 s meanwhile; they are refused before their body is read."""
    with fresh_gateway.client() as client:
        config = client.get("/api/config/config.ini").json()["text"]
        pad = "".join(f"# note {k} {'x' * 80}\n" for k in range(12_000))
        at_cap = (config + pad)[:MIB]
        at_cap = at_cap[:at_cap.rindex("\n") + 1]
        at_cap += "#" * (MIB - len(at_cap.encode()) - 1) + "\n"
        assert len(at_cap.encode()) == MIB
        answer = client.put("/api/config/config.ini", json={"text": at_cap}, timeout=120)
        assert answer.status_code == 200, answer.text[:300]
        over = client.put("/api/config/config.ini", json={"text": "#" + at_cap}, timeout=120)
        assert over.status_code == 413
        assert over.json() == {"error": "config.ini: larger than 1 MiB; not saved"}
        for name in ("daq.csv", "var.ini", "scl.ini"):
            answer = client.put(f"/api/config/{name}", json={"text": "#" * MIB + "\n"})
            assert answer.json() == {"error": f"{name}: larger than 1 MiB; not saved"}, name
        # A section's fields are a form: the 1 MiB of any request.
        section = client.put("/api/config/ftp", content=b'{"a": "' + b"x" * MIB + b'"}',
                             headers={"Content-Type": "application/json"})
        assert section.status_code == 413
        assert section.json() == {"error": "request body larger than 1 MiB"}
        big = (config + "".join(f"# note {k} {'x' * 80}\n" for k in range(110_000))).encode()
        body = b'{"text": ' + json.dumps(big.decode()).encode() + b"}"
        Path("/proc/self/clear_refs").write_text("5")
        before = _peak_rss_mb()
        answers = [client.put("/api/config/config.ini", content=body, timeout=120,
                              headers={"Content-Type": "application/json"}) for _ in range(3)]
        grown = _peak_rss_mb() - before
        assert client.get("/api/config/config.ini").json()["text"] == at_cap
    assert len(big) > 9 * MIB
    for answer in answers:
        assert answer.status_code == 413
        assert answer.json() == {"error": "config.ini: request body larger than 3 MiB "
                                          "(config.ini takes at most 1 MiB)"}
    assert grown < 40, f"peak resident memory grew by {grown:.0f} MB"
    status, body = _declared_only(fresh_gateway.url, "PUT", "/api/config/daq.csv", 3 * MIB + 1)
    assert status == 413 and b"daq.csv takes at most 1 MiB" in body


def _peak_rss_reset() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def _rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    raise AssertionError(field)


def test_a_body_of_millions_of_tiny_values_is_refused_undecoded(
        web_gateway: RunningGateway) -> None:
    """10 MiB of `{},` (within a file route's limit) decoded into 3.4 million dicts: the
    gateway grew by 530 MB for 9 s. A body holding more than `MAX_JSON_VALUES` values is now
    400 before it is decoded; a file's text full of commas and braces is not counted."""
    with web_gateway.client() as client:
        answer = client.post("/api/commands", content=b"[" + b"{}," * 200_000 + b"{}]",
                             headers={"Content-Type": "application/json"})
        assert answer.status_code == 400
        assert "body: more than 100000 values" in answer.json()["error"]
        body = b"[" + b"{}," * ((MAX_UPLOAD_BODY_BYTES - 2) // 3 - 1) + b"{}]"
        gc.collect()
        before = _rss_mib("VmRSS:")
        _peak_rss_reset()
        answer = client.post("/api/config/validate", content=body, timeout=60,
                             headers={"Content-Type": "application/json"})
        grown = _rss_mib("VmHWM:") - before
        assert answer.status_code == 400, answer.text
        assert grown < 150, grown
        text = "a,b,{c},[d]\n" * 100_000
        answer = client.post("/api/config/validate", timeout=60,
                             json={"files": {"DEF/commas.csv": text}})
        assert answer.status_code != 400, answer.text


def test_a_form_of_too_many_fields_says_so(web_gateway: RunningGateway) -> None:
    """aiohttp refuses a form of more than 1,000 fields (413): the answer said the body was
    larger than 10 MiB (the device form's limit) for a body of 4 KiB."""
    with web_gateway.client() as client:
        body = f"csrf={client.headers['X-CSRF-Token']}&" + "a&" * 2000
        answer = client.post("/devices/new", content=body.encode(),
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert answer.status_code == 413
        assert answer.text == "a form of more than 1000 fields\n"
