"""Each transport against hostile peers on 127.0.0.1 (docs/behaviour.md §4.5): a raw HTTP server
and an asyncssh SFTP server serving endless, trickling or compressed answers, and a `dir` tree full
of symlinks and names no file system takes. A transport either returns within its caps or raises
its own TransportError; nothing else escapes, and no link is ever followed."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import os
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncssh
import pytest
from peers import password_server

from config.model import ServerSettings, ServerType
from exporters.transports import (
    DirTransport,
    Failure,
    FtpTransport,
    SftpTransport,
    Timeouts,
    TransportError,
    WebdavTransport,
)
from exporters.transports._base import LISTING_MAX_ENTRIES, DownloadTooLarge

FAST = Timeouts(connect_s=3.0, operation_s=2.0)
MIB = 1 << 20

# ----------------------------------------------------------------------------- dir


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    for folder in ("CONFIG", "DEF", "CMD", "DATA"):
        (root / folder).mkdir(parents=True)
    return root


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    folder = tmp_path / "canary"
    folder.mkdir()
    (folder / "secret.txt").write_bytes(b"outside\n")
    return folder


async def _dir(tree: Path) -> DirTransport:
    transport = DirTransport(ServerSettings(slot=1, type=ServerType.DIR, dir_path=str(tree)),
                             timeouts=FAST)
    await transport.connect()
    return transport


BAD_PATHS = ["/DEF/in\0valid.csv", "/DEF/" + "L" * 10_000 + ".csv", "/DEF/ctl\x01.csv",
             "/DEF/back\\slash.csv", "/DEF/" + "é" * 128 + ".csv"]


@pytest.mark.parametrize("path", BAD_PATHS, ids=["nul", "long", "control", "backslash",
                                                 "256-bytes"])
async def test_dir_refuses_names_no_file_system_takes_with_its_own_error(tree: Path,
                                                                         path: str) -> None:
    transport = await _dir(tree)
    operations: list[Callable[[], Awaitable[object]]] = [
        lambda: transport.size(path), lambda: transport.download(path),
        lambda: transport.upload(path, b"x", two_step=True), lambda: transport.delete(path),
        lambda: transport.list(path)]
    for operation in operations:
        with pytest.raises(TransportError) as caught:
            await operation()
        assert caught.value.failure is Failure.PROTOCOL and not caught.value.retriable
        assert "bad tree path" in str(caught.value) and len(str(caught.value)) < 200
        assert str(caught.value).isprintable()


async def test_dir_a_path_too_long_for_the_system_is_refused_not_busy(tree: Path) -> None:
    # Plain parts, each under 255 bytes, but 4,096 bytes together pass PATH_MAX.
    path = "/DEF/" + "/".join(["d" * 200] * 21) + "/x.csv"
    transport = await _dir(tree)
    with pytest.raises(TransportError) as caught:
        await transport.upload(path, b"x", two_step=True)
    assert caught.value.failure is not Failure.SERVER_BUSY
    assert not caught.value.retriable


async def test_dir_never_follows_a_symlinked_file(tree: Path, canary: Path) -> None:
    secret = canary / "secret.txt"
    os.symlink(secret, tree / "CMD" / "WPM_cmd.json")
    os.symlink(secret, tree / "DATA" / "x.csv.gz")
    os.symlink(secret, tree / "DATA" / "y.csv.gz.tmp")
    transport = await _dir(tree)
    assert await transport.size("/CMD/WPM_cmd.json") is None
    assert [f.name for f in await transport.list("/CMD")] == []
    with pytest.raises(TransportError) as caught:
        await transport.download("/CMD/WPM_cmd.json")
    assert caught.value.failure is Failure.REFUSED
    assert "symbolic link" in str(caught.value)
    with pytest.raises(TransportError):
        await transport.delete("/CMD/WPM_cmd.json")
    # Uploads replace the links themselves, never write through them.
    await transport.upload("/DATA/x.csv.gz", b"new", two_step=True)
    await transport.upload("/DATA/y.csv.gz", b"new", two_step=True)
    assert (tree / "DATA" / "x.csv.gz").read_bytes() == b"new"
    assert not (tree / "DATA" / "x.csv.gz").is_symlink()
    assert not (tree / "DATA" / "y.csv.gz.tmp").exists()
    assert secret.read_bytes() == b"outside\n"
    assert (tree / "CMD" / "WPM_cmd.json").is_symlink()


async def test_dir_refuses_every_operation_under_a_symlinked_folder(tree: Path,
                                                                    canary: Path) -> None:
    for folder in ("CMD", "DATA"):
        (tree / folder).rmdir()
        os.symlink(canary, tree / folder)
    before = sorted(p.name for p in canary.iterdir())
    transport = await _dir(tree)
    assert await transport.size("/CMD/secret.txt") is None
    for operation in (lambda: transport.list("/CMD"),
                      lambda: transport.download("/CMD/secret.txt"),
                      lambda: transport.delete("/CMD/secret.txt"),
                      lambda: transport.upload("/DATA/new.csv.gz", b"x", two_step=True)):
        with pytest.raises(TransportError) as caught:
            await operation()
        assert caught.value.failure is Failure.REFUSED, caught.value
    assert sorted(p.name for p in canary.iterdir()) == before
    assert (canary / "secret.txt").read_bytes() == b"outside\n"


async def test_dir_download_stops_at_its_cap_on_a_sparse_giant(tree: Path) -> None:
    with (tree / "CONFIG" / "big.ini").open("wb") as f:
        f.truncate(2 << 30)
    transport = await _dir(tree)
    with pytest.raises(DownloadTooLarge) as caught:
        await transport.download("/CONFIG/big.ini", max_bytes=MIB)
    assert str(caught.value) == ("server 1: download /CONFIG/big.ini: protocol error "
                                 "(larger than 1 MiB)")


async def test_dir_listing_stops_at_the_cap(tree: Path) -> None:
    for n in range(LISTING_MAX_ENTRIES + 5):
        (tree / "DEF" / f"d{n:05d}.csv").touch()
    transport = await _dir(tree)
    assert len(await transport.list("/DEF")) == LISTING_MAX_ENTRIES


# ----------------------------------------------------------------------------- HTTP


_ZIP_BOMB = gzip.compress(b"\0" * (64 * MIB), compresslevel=9)


async def _respond(path: str, method: str, writer: asyncio.StreamWriter) -> None:
    def head(status: str, **headers: str) -> bytes:
        lines = [f"HTTP/1.1 {status}", "Connection: close",
                 *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items())]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    if method in ("MOVE", "DELETE") and path.startswith("/ALARM"):
        # RFC 4918 §9.9.4: 207 to a MOVE says errors prevented it (here the destination locked).
        body = ('<?xml version="1.0"?><D:multistatus xmlns:D="DAV:"><D:response>'
                f"<D:href>{path}</D:href><D:status>HTTP/1.1 423 Locked</D:status>"
                "</D:response></D:multistatus>").encode()
        writer.write(head("207 Multi-Status", Content_Length=str(len(body))))
        writer.write(body)
    elif method in ("DELETE", "PUT", "MOVE"):
        # Success, then an answer that never ends: only the status may be read.
        writer.write(head("200 OK"))
        while True:
            writer.write(b"\0" * 65536)
            await writer.drain()
    if method == "PROPFIND" and path.startswith("/CONFIG"):
        writer.write(head("207 Multi-Status", Content_Type="application/xml"))
        writer.write(b'<?xml version="1.0"?><D:multistatus xmlns:D="DAV:">')
        for n in itertools.count():
            writer.write(f"<D:response><D:href>/CONFIG/f{n:09d}.ini</D:href><D:propstat><D:prop>"
                         "<D:getcontentlength>1</D:getcontentlength></D:prop></D:propstat>"
                         "</D:response>".encode())
            await writer.drain()
    elif method == "PROPFIND" and path.startswith("/DEF"):
        # One endless element: only the byte cap ends it.
        writer.write(head("207 Multi-Status", Content_Type="application/xml"))
        writer.write(b'<?xml version="1.0"?><D:multistatus xmlns:D="DAV:"><D:response><D:href>')
        while True:
            writer.write(b"a" * 65536)
            await writer.drain()
    elif method == "PROPFIND" and path.startswith(("/DATA", "/SCRIPT")):
        # 4 MiB of small elements, nested (`/DATA`) or side by side inside one entry (`/SCRIPT`):
        # as a tree, 100 bytes and more of memory per 3 or 4 bytes received.
        writer.write(head("207 Multi-Status", Content_Type="application/xml"))
        writer.write(b'<?xml version="1.0"?><D:multistatus xmlns:D="DAV:"><D:response>')
        element = b"<a>" if path.startswith("/DATA") else b"<a/>"
        for _ in range(64):
            writer.write(element * (65536 // len(element)))
            await writer.drain()
    elif method == "PROPFIND" and path.startswith("/LOG"):
        body = ('<?xml version="1.0"?><D:multistatus xmlns:D="DAV:">'
                "<D:response><D:href>/LOG/a.log</D:href><D:propstat><D:prop><D:getcontentlength>"
                + "9" * 5000 + "</D:getcontentlength></D:prop></D:propstat></D:response>"
                "<D:response><D:href>/LOG/b.log</D:href><D:propstat><D:prop><D:getcontentlength>"
                "²</D:getcontentlength></D:prop></D:propstat></D:response>"
                "</D:multistatus>").encode()
        writer.write(head("207 Multi-Status", Content_Length=str(len(body))))
        writer.write(body)
    elif method == "HEAD" and path == "/LOG/a.log":
        writer.write(head("200 OK", Content_Length="9" * 5000))
    elif method == "PROPFIND":
        writer.write(head("207 Multi-Status", Content_Length="0"))
    elif path == "/CMD/endless":
        writer.write(head("200 OK"))
        while True:
            writer.write(b"\0" * 65536)
            await writer.drain()
    elif path == "/CMD/declared":
        writer.write(head("200 OK", Content_Length=str(10 << 30)))
        while True:
            writer.write(b"\0" * 65536)
            await writer.drain()
    elif path == "/CMD/trickle":
        writer.write(head("200 OK", Content_Length="100000"))
        while True:
            writer.write(b"x" * 8)
            await writer.drain()
            await asyncio.sleep(0.1)
    elif path == "/CMD/bomb":
        writer.write(head("200 OK", Content_Encoding="gzip", Content_Length=str(len(_ZIP_BOMB))))
        writer.write(_ZIP_BOMB)
    else:
        writer.write(head("404 Not Found", Content_Length="0"))
    await writer.drain()


@pytest.fixture
async def http_url() -> AsyncIterator[str]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            method, path = request.decode().split(" ")[:2]
            lines = [line.lower() for line in request.decode().split("\r\n")]
            if method == "PUT" and "transfer-encoding: chunked" in lines:
                # As nginx's dav module and other small servers: a body without its length
                # is refused.
                writer.write(b"HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                return
            length = next((int(line.split(":")[1]) for line in lines
                           if line.startswith("content-length:")), 0)
            await reader.readexactly(length)
            await _respond(path, method, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client cut us off: what a hostile server expects
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}"
        server.close()


async def _webdav(url: str, tmp_path: Path) -> WebdavTransport:
    transport = WebdavTransport(ServerSettings(slot=1, type=ServerType.WEBDAV, http_url=url),
                                cert_dir=tmp_path, timeouts=FAST)
    await transport.connect()
    return transport


@pytest.mark.parametrize("path", ["/CMD/endless", "/CMD/declared"])
async def test_webdav_download_is_cut_at_its_cap(http_url: str, tmp_path: Path,
                                                 path: str) -> None:
    transport = await _webdav(http_url, tmp_path)
    try:
        started = time.monotonic()
        with pytest.raises(DownloadTooLarge):
            await transport.download(path, max_bytes=MIB)
        assert time.monotonic() - started < 5
        with pytest.raises(TransportError) as caught:  # the connection is still usable
            await transport.download("/CMD/absent", max_bytes=MIB)
        assert caught.value.failure is Failure.REFUSED
    finally:
        await transport.close()


async def test_webdav_trickling_answer_times_out(http_url: str, tmp_path: Path) -> None:
    transport = await _webdav(http_url, tmp_path)
    try:
        started = time.monotonic()
        with pytest.raises(TransportError) as caught:
            await transport.download("/CMD/trickle", max_bytes=MIB)
        assert caught.value.failure is Failure.TIMEOUT and caught.value.retriable
        assert time.monotonic() - started < 2 * FAST.operation_s + 2
    finally:
        await transport.close()


async def test_webdav_compressed_answer_is_refused_before_it_is_inflated(
        http_url: str, tmp_path: Path) -> None:
    transport = await _webdav(http_url, tmp_path)
    try:
        with pytest.raises(TransportError) as caught:
            await transport.download("/CMD/bomb", max_bytes=MIB)
        assert "compressed (gzip)" in str(caught.value)
    finally:
        await transport.close()


async def test_webdav_endless_listing_stops_at_the_cap(http_url: str, tmp_path: Path) -> None:
    transport = await _webdav(http_url, tmp_path)
    try:
        listing = await transport.list("/CONFIG")
        assert len(listing) == LISTING_MAX_ENTRIES
        assert await transport.list("/DEF") == []  # one endless element: the byte cap
    finally:
        await transport.close()


@pytest.mark.parametrize("directory", ["/DATA", "/SCRIPT"], ids=["nested", "side-by-side"])
async def test_webdav_listing_of_millions_of_elements_is_refused_without_building_them(
        http_url: str, tmp_path: Path, directory: str) -> None:
    transport = await _webdav(http_url, tmp_path)
    tracemalloc.start()
    try:
        with pytest.raises(TransportError) as caught:
            await transport.list(directory)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        await transport.close()
    assert peak < 16 * MIB, f"{peak / MIB:.0f} MiB held for a 4 MiB answer"
    assert caught.value.failure is Failure.PROTOCOL
    assert "PROPFIND answer with an entry past its size" in str(caught.value)


async def test_webdav_endless_answers_to_other_requests_are_left_unread(
        http_url: str, tmp_path: Path) -> None:
    transport = await _webdav(http_url, tmp_path)
    try:
        started = time.monotonic()
        await transport.delete("/CMD/x")
        await transport.upload("/DATA/x.csv.gz", b"data", two_step=True)
        assert time.monotonic() - started < 5
    finally:
        await transport.close()


async def test_webdav_upload_in_parts_still_says_its_length(http_url: str,
                                                             tmp_path: Path) -> None:
    # The body goes in 16 KiB parts (progress as each is taken); without a Content-Length,
    # httpx would send them chunked, which servers like nginx's dav module refuse (411).
    transport = await _webdav(http_url, tmp_path)
    try:
        await transport.upload("/DATA/x.csv.gz", os.urandom(100_000), two_step=False)
    finally:
        await transport.close()


async def test_webdav_multi_status_to_a_move_or_delete_is_no_success(
        http_url: str, tmp_path: Path) -> None:
    # A 2xx, but one saying the operation failed on a resource: read as success, the file
    # counted as delivered while its final name was never written.
    transport = await _webdav(http_url, tmp_path)
    try:
        for operation in (lambda: transport.upload("/ALARM/x.csv", b"data", two_step=True),
                          lambda: transport.delete("/ALARM/x.csv")):
            with pytest.raises(TransportError) as caught:
                await operation()
            assert caught.value.retriable
            assert "207 Multi-Status" in str(caught.value)
    finally:
        await transport.close()


async def test_webdav_absurd_sizes_read_as_unknown(http_url: str, tmp_path: Path) -> None:
    transport = await _webdav(http_url, tmp_path)
    try:
        assert [(f.name, f.size) for f in await transport.list("/LOG")] == [("a.log", 0),
                                                                            ("b.log", 0)]
        with pytest.raises(TransportError):  # the HTTP parser itself refuses that header
            await transport.size("/LOG/a.log")
    finally:
        await transport.close()


async def test_ftp_endless_reply_is_a_protocol_error(tmp_path: Path) -> None:
    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                writer.write(b"220-welcome, and welcome again\r\n" * 2000)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(banner, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        transport = FtpTransport(ServerSettings(slot=1, type=ServerType.FTP, host="127.0.0.1",
                                                port=port, user="u", password="p"),
                                 timeouts=Timeouts(connect_s=10.0, operation_s=10.0))
        started = time.monotonic()
        with pytest.raises(TransportError) as caught:
            await transport.connect()
        assert caught.value.failure is Failure.PROTOCOL, caught.value
        assert "reply longer than 64 KiB" in str(caught.value)
        assert time.monotonic() - started < 5
        await transport.close()
        server.close()


# ----------------------------------------------------------------------------- SFTP


class _Endless:
    pass


class _HostileSftp(asyncssh.SFTPServer):
    """Serves `/CMD/endless` as endless zeros, `/CONFIG` as an endless listing of files and
    `/DEF` as one of folders."""

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        if path.endswith(b"/CMD/endless"):
            return _Endless()
        return super().open(path, pflags, attrs)

    def read(self, file_obj: object, offset: int, size: int) -> bytes:
        if isinstance(file_obj, _Endless):
            return b"\0" * size
        return super().read(file_obj, offset, size)  # type: ignore[return-value]

    def close(self, file_obj: object) -> None:
        if not isinstance(file_obj, _Endless):
            super().close(file_obj)

    async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
        if path.endswith(b"/LOG"):
            yield asyncssh.SFTPName(b"\xff\xfe.log", b"", asyncssh.SFTPAttrs(permissions=0o100644))
            return
        if path.endswith(b"/SCRIPT"):
            # A long listing on a slow link: 12 answers of 128 names, 0.3 s apart.
            for batch in range(12):
                for n in range(128):
                    yield asyncssh.SFTPName(
                        f"slow-{batch:02d}-{n:03d}-{'x' * 48}.lua".encode(), b"",
                        asyncssh.SFTPAttrs(permissions=0o100644, size=1))
                await asyncio.sleep(0.3)
            return
        if not path.endswith((b"/CONFIG", b"/DEF")):
            async for name in super().scandir(path):
                yield name
            return
        # SFTP v3 tells the type by the permission bits: files, then folders, endlessly.
        mode = 0o100644 if path.endswith(b"/CONFIG") else 0o040755
        for n in itertools.count():
            yield asyncssh.SFTPName(f"f{n:09d}".encode(), b"",
                                    asyncssh.SFTPAttrs(permissions=mode, size=1))


@pytest.fixture
async def sftp_settings(tmp_path: Path) -> AsyncIterator[ServerSettings]:
    key = asyncssh.generate_private_key("ssh-ed25519")

    Server = password_server()
    for folder in ("CMD", "CONFIG", "DEF", "LOG", "SCRIPT"):
        (tmp_path / "sftp" / folder).mkdir(parents=True)
    server = await asyncssh.listen(
        "127.0.0.1", 0, server_factory=Server, server_host_keys=[key], allow_scp=False,
        sftp_factory=lambda chan: _HostileSftp(chan, chroot=str(tmp_path / "sftp").encode()))
    port = server.sockets[0].getsockname()[1]
    try:
        yield ServerSettings(slot=1, type=ServerType.SFTP, host="127.0.0.1", port=port,
                             user="sunpm", password="secret", root_dir="/",
                             host_key=key.export_public_key().decode().strip())
    finally:
        server.close()
        await server.wait_closed()


async def test_sftp_download_is_cut_at_its_cap(sftp_settings: ServerSettings) -> None:
    transport = SftpTransport(sftp_settings, timeouts=FAST)
    await transport.connect()
    try:
        with pytest.raises(DownloadTooLarge):
            await transport.download("/CMD/endless", max_bytes=MIB)
        assert await transport.size("/CMD/absent") is None  # still usable
    finally:
        await transport.close()


async def test_sftp_endless_listing_stops_at_the_cap(sftp_settings: ServerSettings) -> None:
    transport = SftpTransport(sftp_settings, timeouts=Timeouts(connect_s=3.0, operation_s=30.0))
    await transport.connect()
    try:
        assert len(await transport.list("/CONFIG")) == LISTING_MAX_ENTRIES
        assert await transport.list("/DEF") == []
        with pytest.raises(TransportError) as caught:
            await transport.list("/LOG")
        assert caught.value.failure is Failure.PROTOCOL
        assert await transport.size("/CMD/absent") is None  # still usable
    finally:
        await transport.close()


async def test_sftp_a_long_listing_that_keeps_coming_is_not_cut(
        sftp_settings: ServerSettings) -> None:
    # 3.6 s of answers, each well within the operation timeout of 1 s.
    transport = SftpTransport(sftp_settings, timeouts=Timeouts(connect_s=3.0, operation_s=1.0))
    await transport.connect()
    try:
        assert len(await transport.list("/SCRIPT")) == 12 * 128
    finally:
        await transport.close()
