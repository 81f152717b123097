"""Uploads on a slow link that keeps moving (docs/behaviour.md §4.5: cut only after the operation
timeout without 1 KiB moved). Each transport hands its bytes over in blocks larger than a period
of such a link carries (FTP 64 KiB blocks, SFTP 32 KiB writes confirmed, WebDAV 16 KiB parts), so
the bytes the peer acknowledges must count as they leave.

The pace is made deterministic: the server side reads small blocks at a fixed rate through a
small receive buffer (the FTP peer's throttled data connections, or `slow_link` in front of the
SFTP and WebDAV peers), and the client side's send buffer is kept small where loopback would
otherwise grow it to megabytes. The figures leave the block a transport hands over several
timeouts to leave, while the acknowledged bytes grow several times a timeout.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from peers import Certs, run_peer, slow_link
from transport_support import Target, fresh_target

from exporters.transports import Timeouts, ftp, ftps, webdav

NAME = "WPM00C44F_MODBUS_210202_084443.csv.gz"
PATH = f"/DATA/{NAME}"
_CLIENT_SEND_BUFFER = 4096  # Linux doubles it: some 8 KiB queued in the client's kernel


def _small_send_buffer(open_data: Callable[..., tuple[socket.socket, int]],
                       ) -> Callable[..., tuple[socket.socket, int]]:
    def opened(self: object, *args: object) -> tuple[socket.socket, int]:
        conn, size = open_data(self, *args)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _CLIENT_SEND_BUFFER)
        return conn, size
    return opened


@pytest.mark.parametrize("kind", ["ftp", "ftps"])
async def test_ftp_upload_on_a_slow_link_that_moves_is_not_cut(
        kind: str, certs: Certs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 16 KiB/s: a 64 KiB block is taken once 64 KiB left, every 4 s, while the timeout is
    # 1.5 s; some 2 KiB are acknowledged every eighth of a second.
    for client in (ftp._TrackedFtp, ftps._ReusingFtpTls):
        monkeypatch.setattr(client, "ntransfercmd", _small_send_buffer(client.ntransfercmd))
    with run_peer(kind, tmp_path, certs, rate_bps=16 << 10) as peer:
        await _upload_outlasting_the_timeout(fresh_target(kind, peer, tmp_path, certs),
                                             128 << 10, 1.5)


async def _upload_outlasting_the_timeout(target: Target, size: int, operation_s: float,
                                         **reroute: object) -> None:
    """`size` random bytes uploaded over a link on which the transport's block takes longer to
    leave than `operation_s`: the upload ends, whole, and later than one timeout."""
    data = os.urandom(size)
    transport = target.transport(timeouts=Timeouts(connect_s=10.0, operation_s=operation_s),
                                 **reroute)
    await transport.connect()
    try:
        started = time.monotonic()
        await transport.upload(PATH, data, two_step=True)
    finally:
        await transport.close()
    assert (target.tree / "DATA" / NAME).read_bytes() == data
    assert time.monotonic() - started > 3  # the link was slower than the timeout indeed


async def _upload_through_slow_link(kind: str, certs: Certs, tmp_path: Path, rate_bps: int,
                                    operation_s: float, size: int) -> None:
    """The upload of `_upload_outlasting_the_timeout` to a real `kind` peer through a link of
    `rate_bps`."""
    with run_peer(kind, tmp_path, certs) as peer:
        target = fresh_target(kind, peer, tmp_path, certs)
        async with slow_link(peer.port, rate_bps) as port:
            reroute = ({"port": port} if kind == "sftp" else
                       {"http_url": target.settings.http_url.replace(f":{peer.port}/",
                                                                     f":{port}/")})
            await _upload_outlasting_the_timeout(target, size, operation_s, **reroute)


async def test_sftp_upload_on_a_slow_link_that_moves_is_not_cut(certs: Certs,
                                                                tmp_path: Path) -> None:
    # 8 KiB/s: a 32 KiB write is confirmed once it arrived, every 4 s, while the timeout is
    # 2 s; 4 KiB are acknowledged every half second.
    await _upload_through_slow_link("sftp", certs, tmp_path, 8 << 10, 2.0, 64 << 10)


async def test_webdav_upload_on_a_slow_link_that_moves_is_not_cut(
        certs: Certs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 4 KiB/s: a 16 KiB part is taken once it left, every 4 s, while the timeout is 1.5 s;
    # 2 KiB are acknowledged every half second.
    monkeypatch.setattr(webdav, "_SEND_BUFFER_BYTES", _CLIENT_SEND_BUFFER)
    await _upload_through_slow_link("webdav", certs, tmp_path, 4 << 10, 1.5, 32 << 10)
