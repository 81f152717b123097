"""`webdav`: WebDAV (RFC 4918) over HTTPS with httpx, certificate and host name checked.

`HTTP_Url` is the tree root (`https://host[:port][/path]`); the certificate is checked against
`HTTP_CaFile` (a file of `/CERT`) or the system CAs. `HTTP_User`/`HTTP_Password` answer a Basic
or a Digest challenge, whichever the server sends (Digest preferred when it offers both); the
scheme learnt on the first request is sent up front afterwards, so each later request is one
round trip. No credentials are sent before the server asks, and none over plain HTTP unless the
configured URL says `http://` (docs/formats.md §4 allows only https; tests and labs may use http).

Operations: `PROPFIND` (Depth 1) lists, `GET` downloads, `HEAD` sizes (`Content-Length`; any 4xx
counts as absent, docs/behaviour.md §5.2), `PUT` uploads, `MOVE` with `Overwrite: T` renames the
`.tmp` over the final name (docs/behaviour.md §4.2 step 8), `DELETE` removes.

Peer quirks handled here:
- A `PUT` into a missing collection answers 409 Conflict (RFC 4918 §9.7.1), not 404: read as the
  directory missing. 403 and 405 are a right lacking; 507 Insufficient Storage is retriable.
- Apache mod_dav answers `HEAD` of an empty file without `Content-Length`: a size is then read
  from `PROPFIND` (Depth 0, `getcontentlength`), so an empty file is 0 bytes, not absent.
- Apache mod_dav answers a `PUT` into a folder it may not write with 500 Internal Server Error
  (its log says "Permission denied"): from Apache (its `Server` header) a 500 to `PUT` is a right
  lacking, not a busy server, so only that stream stops (docs/behaviour.md §4.5) instead of
  every later window waiting on it. A full disk is 507 there, which stays retriable; wsgidav
  answers a full disk with 500, retriable too.
- `207 Multi-Status` to `MOVE` or `DELETE` (or `PUT`) is a failure, retriable: the server
  says errors on a resource prevented the operation, and a file counted as delivered would
  never be sent again.
- `Destination` must be an absolute URI (RFC 4918 §10.3); some servers (IIS) reject a path alone.
- Timeouts: httpx's per-read and per-write limits are the "60 s without progress" of
  docs/behaviour.md §4.5, except for a `PUT`, whose deadline is pushed back each time the server
  acknowledged 1 KiB more (Linux `TCP_INFO`, polled each second, on the socket the previous
  answer came on: httpx shows it only there) and as each 16 KiB part of the body is taken by
  the connection, over a socket whose send buffer is bounded (64 KiB asked, 128 KiB on Linux):
  once the last part is taken, at most that much is still queued in the kernel, and the answer
  is awaited 60 s plus the time that takes at 1 KiB/s (`Timeouts.slow_link_bps`). A whole body
  handed to the kernel at once could sit there for minutes on a slow link, while the answer was
  awaited 60 s.
- A challenge (401) is read for its headers: its body is cut at 64 KiB, where httpx's own
  authentication would read it whole (an endless one until memory ran out).
- Hostile servers (docs/behaviour.md §4.5): `GET` and `PROPFIND` answers are streamed, the
  guard pushed back only after each 1 KiB, so a trickling server times out; a download stops as
  soon as it passes its cap, a listing at 10,000 entries or 16 MiB (parsed as it arrives, each
  entry dropped once read; an entry past 32 levels or 1,000 elements is a protocol error). Both
  ask for `Accept-Encoding: identity` and refuse a compressed answer, whose decoding could blow a
  small download up a thousandfold before any cap saw it.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import email.utils
import io
import posixpath
import re
import socket
import ssl
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Generator
from pathlib import Path
from typing import BinaryIO, Final
from urllib.parse import quote, unquote, urlsplit

import httpx

from config.model import ServerSettings

from ._base import (
    DEFAULT_TIMEOUTS,
    DOWNLOAD_MAX_BYTES,
    LISTING_MAX_ENTRIES,
    PROGRESS_BYTES,
    Failure,
    RemoteFile,
    Timeouts,
    TransportError,
    capped_listing,
    check_size,
    check_tree_path,
    final_and_temp,
    stale_temp,
    tcp_bytes_acked,
    tls_context,
)

_PART_BYTES: Final = 16 << 10
_PROGRESS_POLL_S: Final = 1.0
#: A socket sends at most its buffer per round trip: 64 KiB (128 KiB on Linux) is ~1.3 MB/s at
#: 100 ms, more than a cellular uplink gives a gateway, while what may still be queued after the
#: last part stays small enough to wait for (128 s at 1 KiB/s).
_SEND_BUFFER_BYTES: Final = 64 << 10
# Linux doubles the size asked for (its bookkeeping); elsewhere this only errs on the long side.
_QUEUED_MAX_BYTES: Final = 2 * _SEND_BUFFER_BYTES
_LISTING_MAX_BYTES: Final = 16 << 20
_ANSWER_MAX_BYTES: Final = 64 << 10
# One listing entry (`response`) is a dozen elements a few levels deep; these leave servers
# that add their own properties plenty of room.
_ENTRY_MAX_DEPTH: Final = 32
_ENTRY_MAX_ELEMENTS: Final = 1000
_BYTE_COUNT: Final = re.compile(r"[0-9]{1,19}")
_IDENTITY: Final = {"Accept-Encoding": "identity"}
_DAV: Final = "{DAV:}"
_PROPFIND_BODY: Final = (b'<?xml version="1.0" encoding="utf-8"?>'
                         b'<D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/>'
                         b'<D:getcontentlength/><D:getlastmodified/></D:prop></D:propfind>')


class _BasicOrDigest(httpx.Auth):
    """Answers the server's challenge with Digest or Basic, then keeps to that scheme."""

    # A challenged request is sent again from its stream, which `_Parts` can replay; asking
    # for the body would have httpx read a `PUT` whole into one block before sending it.
    requires_request_body = False

    def __init__(self, user: str, password: str) -> None:
        self._digest = httpx.DigestAuth(user, password)
        self._basic = httpx.BasicAuth(user, password)
        self._scheme = ""

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._scheme == "basic":
            yield from self._basic.auth_flow(request)
            return
        flow = self._digest.auth_flow(request)
        outgoing = next(flow)
        first = True
        while True:
            response = yield outgoing
            if first and response.status_code == 401:
                challenges = [h.lower() for h in response.headers.get_list("www-authenticate")]
                if not any(c.startswith("digest") for c in challenges):
                    if any(c.startswith("basic") for c in challenges):
                        self._scheme = "basic"
                        yield from self._basic.auth_flow(request)
                    return
                self._scheme = "digest"
            first = False
            try:
                outgoing = flow.send(response)
            except StopIteration:
                return


class WebdavTransport:
    """WebDAV file server: `HTTP_Url`, `HTTP_User`, `HTTP_Password`, `HTTP_CaFile`."""

    def __init__(self, settings: ServerSettings, *, cert_dir: Path,
                 timeouts: Timeouts = DEFAULT_TIMEOUTS) -> None:
        self.server = settings.slot
        self._settings = settings
        self._cert_dir = cert_dir
        self._timeouts = timeouts
        url = urlsplit(settings.http_url)
        self._origin = f"{url.scheme}://{url.netloc}"
        self._base_path = url.path.rstrip("/")
        self._client: httpx.AsyncClient | None = None
        self._socket: object = None

    async def connect(self) -> None:
        await self.close()
        verify = tls_context(self.server, self._cert_dir, self._settings.ca_file)
        auth = (_BasicOrDigest(self._settings.user, self._settings.password)
                if self._settings.user else None)
        op_s = self._timeouts.operation_s
        transport = httpx.AsyncHTTPTransport(
            verify=verify, limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            socket_options=[(socket.SOL_SOCKET, socket.SO_SNDBUF, _SEND_BUFFER_BYTES)])
        self._client = httpx.AsyncClient(
            transport=_CappedChallenges(transport), auth=auth, trust_env=False, follow_redirects=False,
            timeout=httpx.Timeout(op_s, connect=self._timeouts.connect_s))
        try:
            response = await self._request("connect", "/", "PROPFIND", "/",
                                           headers={"Depth": "0"}, content=_PROPFIND_BODY,
                                           limit_s=self._timeouts.connect_s + op_s)
            self._check("connect", "/", response)
        except BaseException:
            await self.close()
            raise

    async def list(self, directory: str) -> builtins.list[RemoteFile]:
        check_tree_path(self.server, "list", directory)
        own = unquote(self._url(directory).rstrip("/"))
        parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("start", "end"))
        files: builtins.list[RemoteFile] = []
        received = seen = depth = held = 0
        root: ET.Element | None = None

        def take(block: bytes) -> bool:
            nonlocal received, seen, depth, held, root
            received += len(block)
            parser.feed(block)
            for item in parser.read_events():
                event, element = item[0], item[-1]
                if not isinstance(element, ET.Element):
                    continue
                if event == "start":
                    # The tree the parser builds is what a hostile answer could grow: 16 MiB
                    # of `<a>` is 5 million elements, 1.5 GB. Each child of the root is
                    # dropped once parsed, and none may hold more than a listing entry needs.
                    depth += 1
                    held += 1
                    root = element if root is None else root
                    if depth > _ENTRY_MAX_DEPTH or held > _ENTRY_MAX_ELEMENTS:
                        raise TransportError(self.server, "list", "PROPFIND answer with an "
                                             "entry past its size", failure=Failure.PROTOCOL,
                                             path=directory)
                    continue
                depth -= 1
                if depth != 1 or root is None:
                    continue
                if element.tag == _DAV + "response":
                    # Every entry counts, collections too: an endless run of them must end.
                    seen += 1
                    entry = _listing_entry(element, own)
                    if entry is not None and seen <= LISTING_MAX_ENTRIES + 1:
                        files.append(entry)
                root.remove(element)  # parsed: keep nothing of it
                held = 0
            # + 1: the answer lists the folder itself first.
            return seen <= LISTING_MAX_ENTRIES + 1 and received <= _LISTING_MAX_BYTES

        try:
            response, complete = await self._streamed(
                "list", directory, "PROPFIND", directory, take,
                headers={"Depth": "1"}, content=_PROPFIND_BODY)
            self._check("list", directory, response)
            if complete:
                parser.close()
        except ET.ParseError as err:
            raise TransportError(self.server, "list", f"unreadable PROPFIND answer: {err}",
                                 failure=Failure.PROTOCOL, path=directory) from err
        return capped_listing(self.server, directory, files, more=not complete)

    async def download(self, path: str, *, max_bytes: int = DOWNLOAD_MAX_BYTES) -> bytes:
        out = io.BytesIO()
        await self.download_to(path, out, max_bytes=max_bytes)
        return out.getvalue()

    async def download_to(self, path: str, out: BinaryIO, *,
                          max_bytes: int = DOWNLOAD_MAX_BYTES) -> int:
        check_tree_path(self.server, "download", path)
        received = 0

        def take(block: bytes) -> bool:
            nonlocal received
            received += len(block)
            check_size(self.server, path, received, max_bytes)
            out.write(block)
            return True

        response, _ = await self._streamed("download", path, "GET", path, take)
        self._check("download", path, response)
        return received

    async def size(self, path: str) -> int | None:
        check_tree_path(self.server, "size", path)
        response = await self._request("size", path, "HEAD", path)
        if 400 <= response.status_code < 500:
            return None  # absent, or the lookup refused: both count as absent
        self._check("size", path, response)
        length = response.headers.get("content-length")
        if length is not None:
            return _byte_count(length)
        return await self._size_by_propfind(path)

    async def _size_by_propfind(self, path: str) -> int | None:
        body = bytearray()

        def take(block: bytes) -> bool:
            body.extend(block)
            return len(body) <= _ANSWER_MAX_BYTES

        response, complete = await self._streamed("size", path, "PROPFIND", path, take,
                                                  headers={"Depth": "0"},
                                                  content=_PROPFIND_BODY)
        if 400 <= response.status_code < 500:
            return None
        self._check("size", path, response)
        if not complete:
            raise TransportError(self.server, "size", "PROPFIND answer larger than "
                                 f"{_ANSWER_MAX_BYTES} bytes", failure=Failure.PROTOCOL,
                                 path=path)
        try:
            root = ET.fromstring(bytes(body))
        except ET.ParseError as err:
            raise TransportError(self.server, "size", f"unreadable PROPFIND answer: {err}",
                                 failure=Failure.PROTOCOL, path=path) from err
        if root.find(f".//{_DAV}collection") is not None:
            return None  # a folder is no file
        length = root.findtext(f".//{_DAV}getcontentlength", "").strip()
        return _byte_count(length) if length else 0

    async def upload(self, path: str, data: bytes, *, two_step: bool,
                     after_cut: bool = False) -> None:
        check_tree_path(self.server, "upload", path)
        final, written = final_and_temp(path, two_step)
        stale = stale_temp(final, two_step, after_cut)
        if stale is not None:
            # A new file rather than the cut upload's (see ftp.py's docstring); any answer will do.
            await self._request("upload", path, "DELETE", stale)
        response = await self._put(path, written, data)
        if response.status_code == 500 and _is_apache(response):
            raise TransportError(self.server, "upload",
                                 "500 Internal Server Error: folder not writable",
                                 failure=Failure.REFUSED, path=path)
        self._check("upload", path, response)
        if written != final:
            response = await self._request(
                "upload", path, "MOVE", written,
                headers={"Destination": self._origin + self._url(final), "Overwrite": "T"})
            self._check("upload", path, response)

    async def delete(self, path: str) -> None:
        check_tree_path(self.server, "delete", path)
        response = await self._request("delete", path, "DELETE", path)
        self._check("delete", path, response)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # ------------------------------------------------------------------ plumbing

    def _url(self, path: str) -> str:
        """Absolute path on the server of a tree path, each segment percent-encoded."""
        return self._base_path + quote(path, safe="/")

    async def _request(self, op: str, path: str, method: str, target: str, *,
                       headers: dict[str, str] | None = None, content: bytes | None = None,
                       limit_s: float | None = None) -> httpx.Response:
        client = self._client
        if client is None:
            raise TransportError(self.server, op, "not connected",
                                 failure=Failure.CONNECTION_LOST, path=path)
        limit = limit_s if limit_s is not None else self._timeouts.operation_s
        try:
            async with asyncio.timeout(limit), client.stream(
                    method, self._origin + self._url(target), headers={**_IDENTITY,
                                                                        **(headers or {})},
                    content=content) as response:
                self._note_socket(response)
                # Only the status counts; a body past _ANSWER_MAX_BYTES (an endless answer to a
                # PUT or a DELETE) is left unread and its connection dropped
                # (docs/behaviour.md §4.5).
                received = 0
                async for block in response.aiter_raw():
                    received += len(block)
                    if received > _ANSWER_MAX_BYTES:
                        break
                return response
        except TimeoutError as err:
            raise TransportError(self.server, op, f"no answer after {limit:g} s",
                                 failure=Failure.TIMEOUT, path=path) from err
        except httpx.HTTPError as err:
            failure, detail = classify(err)
            raise TransportError(self.server, op, detail, failure=failure, path=path) from err

    async def _put(self, path: str, target: str, data: bytes) -> httpx.Response:
        """`PUT` of `data` in parts, the deadline pushed back as each part is taken and, after
        the last, long enough for what may still be queued in the kernel to leave on a slow
        link and the answer to come (see the module docstring)."""
        client = self._client
        if client is None:
            raise TransportError(self.server, "upload", "not connected",
                                 failure=Failure.CONNECTION_LOST, path=path)
        op_s = self._timeouts.operation_s
        tail_s = op_s + _QUEUED_MAX_BYTES / self._timeouts.slow_link_bps
        loop = asyncio.get_running_loop()
        deadline = asyncio.timeout(op_s)

        def moved(last: bool) -> None:
            if not deadline.expired():  # an expiring timeout cannot be moved
                deadline.reschedule(loop.time() + (tail_s if last else op_s))

        async def acked() -> None:
            # Once the send buffer is full, a part is taken only once 16 KiB left: the bytes
            # the server acknowledges count as they leave (docs/behaviour.md §4.5).
            sock, last = self._socket, tcp_bytes_acked(self._socket)
            while True:
                await asyncio.sleep(min(_PROGRESS_POLL_S, op_s / 4))
                now = tcp_bytes_acked(sock)
                if now is None or last is None:
                    sock, last = self._socket, tcp_bytes_acked(self._socket)
                    continue
                if now - last >= PROGRESS_BYTES:
                    last = now
                    when = deadline.when()
                    if not deadline.expired() and when is not None:
                        deadline.reschedule(max(when, loop.time() + op_s))
        watcher = asyncio.create_task(acked())
        try:
            # httpx's write and read limits are left to the deadline, which acknowledged bytes
            # push back too: a part waiting longer than a timeout for room is not a stall.
            async with deadline, client.stream(
                    "PUT", self._origin + self._url(target), content=_Parts(data, moved),
                    headers={**_IDENTITY, "Content-Type": "application/octet-stream",
                             "Content-Length": str(len(data))},
                    timeout=httpx.Timeout(None, connect=self._timeouts.connect_s)) as response:
                self._note_socket(response)
                received = 0
                async for block in response.aiter_raw():  # bounded as in _request
                    received += len(block)
                    if received > _ANSWER_MAX_BYTES:
                        break
                return response
        except TimeoutError as err:
            raise TransportError(self.server, "upload", f"no progress for {op_s:g} s",
                                 failure=Failure.TIMEOUT, path=path) from err
        except httpx.HTTPError as err:
            failure, detail = classify(err)
            raise TransportError(self.server, "upload", detail, failure=failure,
                                 path=path) from err
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    def _note_socket(self, response: httpx.Response) -> None:
        """Keep the socket of the connection an answer came on: httpx shows it only there, and
        the next `PUT` most often goes on the same connection (one at most, kept alive). On
        another, the old socket is closed and says nothing: parts taken count alone."""
        stream = response.extensions.get("network_stream")
        self._socket = stream.get_extra_info("socket") if stream is not None else None

    async def _streamed(self, op: str, path: str, method: str, target: str,
                        take: Callable[[bytes], bool], *, headers: dict[str, str] | None = None,
                        content: bytes | None = None) -> tuple[httpx.Response, bool]:
        """A request whose 2xx body goes to `take` block by block as it arrives, until `take`
        says no more (False) or raises; (the response, whether the body was read whole). The
        guard is pushed back each time 1 KiB arrived (docs/behaviour.md §4.5)."""
        client = self._client
        if client is None:
            raise TransportError(self.server, op, "not connected",
                                 failure=Failure.CONNECTION_LOST, path=path)
        limit = self._timeouts.operation_s
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(limit) as deadline, client.stream(
                    method, self._origin + self._url(target), headers={**_IDENTITY,
                                                                        **(headers or {})},
                    content=content) as response:
                self._note_socket(response)
                if not 200 <= response.status_code < 300:
                    return response, True
                encoding = response.headers.get("content-encoding", "identity").lower()
                if encoding != "identity":
                    raise TransportError(self.server, op, f"answer compressed ({encoding}) "
                                         "though not asked for", failure=Failure.PROTOCOL,
                                         path=path)
                moved = 0
                async for block in response.aiter_raw():
                    if not take(block):
                        return response, False
                    moved += len(block)
                    if moved >= PROGRESS_BYTES:
                        moved = 0
                        deadline.reschedule(loop.time() + limit)
                return response, True
        except TimeoutError as err:
            raise TransportError(self.server, op, f"no progress for {limit:g} s",
                                 failure=Failure.TIMEOUT, path=path) from err
        except httpx.HTTPError as err:
            failure, detail = classify(err)
            raise TransportError(self.server, op, detail, failure=failure, path=path) from err

    def _check(self, op: str, path: str, response: httpx.Response) -> None:
        status = response.status_code
        if 200 <= status < 300 and not (status == 207 and op in ("upload", "delete")):
            return
        detail = f"{status} {response.reason_phrase}".strip()
        # 207 to a MOVE or DELETE says errors on a resource prevented it (RFC 4918 §9.6.1,
        # §9.9.4): not done, whatever the 2xx; tried again next session.
        failure = Failure.SERVER_BUSY if status == 207 else _status_failure(status)
        if status == 409:
            detail += ": missing directory"
        raise TransportError(self.server, op, detail, failure=failure, path=path)


class _Parts:
    """A request body in `_PART_BYTES` parts; `moved(last)` is told each time the connection
    took a part (httpx asks for the next one only once the last is written). Iterable again, so
    a challenged request can be sent anew."""

    def __init__(self, data: bytes, moved: Callable[[bool], None]) -> None:
        self._data = data
        self._moved = moved

    async def __aiter__(self) -> AsyncIterator[bytes]:
        view = memoryview(self._data)
        for offset in range(0, len(view), _PART_BYTES):
            yield bytes(view[offset:offset + _PART_BYTES])
            self._moved(offset + _PART_BYTES >= len(view))


class _CappedChallenges(httpx.AsyncBaseTransport):
    """httpx reads a challenge (401) whole before sending the request again with credentials,
    whatever its length: a server answering with an endless 401 grew the process at the link's
    rate until the operation timed out. Only its headers are used; its body is cut at
    `_ANSWER_MAX_BYTES`, and the connection, left with an answer half read, is dropped."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if response.status_code == 401:
            response.stream = _Capped(response.stream)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Capped(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream | httpx.AsyncByteStream) -> None:
        assert isinstance(inner, httpx.AsyncByteStream)
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        received = 0
        async for block in self._inner:
            yield block[:_ANSWER_MAX_BYTES - received]
            received += len(block)
            if received >= _ANSWER_MAX_BYTES:
                return

    async def aclose(self) -> None:
        await self._inner.aclose()


def _is_apache(response: httpx.Response) -> bool:
    """Apache names itself even with `ServerTokens Prod`; its mod_dav_fs answers a full disk
    with 507, so its 500 to `PUT` is a right lacking (other servers, wsgidav among them, answer
    a full disk with 500: retriable there)."""
    return str(response.headers.get("server", "")).startswith("Apache")


def _status_failure(status: int) -> Failure:
    if status == 401:
        return Failure.AUTHENTICATION
    if status == 507:
        return Failure.SERVER_FULL
    if status in (408, 423, 429) or status >= 500:
        return Failure.SERVER_BUSY
    if status in (403, 404, 405, 409, 412, 413, 414):
        return Failure.REFUSED
    return Failure.PROTOCOL


def classify(err: httpx.HTTPError) -> tuple[Failure, str]:
    """Map an httpx error (and the socket or TLS error under it) to a failure and a detail."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return Failure.TRUST, cause.verify_message or str(cause)
        if isinstance(cause, ConnectionRefusedError):
            return Failure.UNREACHABLE, str(cause)
        cause = cause.__cause__ or cause.__context__
    detail = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, httpx.TimeoutException):
        return Failure.TIMEOUT, detail
    if isinstance(err, httpx.ConnectError):
        if "CERTIFICATE_VERIFY_FAILED" in detail or "certificate" in detail.lower():
            return Failure.TRUST, detail
        return Failure.UNREACHABLE, detail
    if isinstance(err, (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError,
                        httpx.CloseError)):
        return Failure.CONNECTION_LOST, detail
    return Failure.PROTOCOL, detail


def _byte_count(text: str) -> int | None:
    """A Content-Length or getcontentlength; None unless plain ASCII digits of a sane length (a
    5,000-digit or non-ASCII "number" from a hostile server must not raise)."""
    text = text.strip()
    return int(text) if _BYTE_COUNT.fullmatch(text) else None


def _parse_listing(body: bytes, directory_url: str) -> builtins.list[RemoteFile]:
    own = unquote(directory_url.rstrip("/"))
    files = [entry for response in ET.fromstring(body).iter(_DAV + "response")
             if (entry := _listing_entry(response, own)) is not None]
    return sorted(files, key=lambda f: f.name)


def _listing_entry(response: ET.Element, own: str) -> RemoteFile | None:
    """The file one `response` element describes; None for the folder itself or a collection."""
    href = unquote(urlsplit(response.findtext(_DAV + "href", "")).path).rstrip("/")
    if href == own or response.find(f".//{_DAV}collection") is not None:
        return None
    length = response.findtext(f".//{_DAV}getcontentlength", "")
    modified = response.findtext(f".//{_DAV}getlastmodified", "")
    mtime = None
    if modified:
        try:
            mtime = email.utils.parsedate_to_datetime(modified).timestamp()
        except (TypeError, ValueError):
            mtime = None
    return RemoteFile(name=posixpath.basename(href),
                      size=_byte_count(length) or 0, mtime_s=mtime)
