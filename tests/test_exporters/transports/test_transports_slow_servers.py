"""Slow and hostile answers from real servers (tests/peers.py's, made slow or hostile): whatever a
server sends back is read under the caps and the "60 s without progress" of docs/behaviour.md
§4.5, progress being at least 1 KiB moved."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest
from peers import Certs, password_server, run_peer
from transport_support import fresh_target

from config.model import ServerSettings, ServerType
from exporters.transports import Failure, SftpTransport, Timeouts, TransportError

MIB = 1 << 20


async def test_webdav_challenge_with_an_endless_body_is_not_read_whole(certs: Certs,
                                                                       tmp_path: Path) -> None:
    # The client answers the 401 from its headers; its body was read whole first, growing the
    # process at the link's rate until the operation timed out (gigabytes over a LAN).
    with run_peer("webdav", tmp_path, certs, endless_challenge=True) as peer:
        target = fresh_target("webdav", peer, tmp_path, certs)
        (target.tree / "CONFIG" / "a_config.ini").write_bytes(b"KEY=1\n")
        transport = target.transport(timeouts=Timeouts(connect_s=5.0, operation_s=5.0))
        tracemalloc.start()
        try:
            started = time.monotonic()
            await transport.connect()
            assert await transport.download("/CONFIG/a_config.ini") == b"KEY=1\n"
            elapsed = time.monotonic() - started
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            await transport.close()
    assert elapsed < 5.0
    assert peak < 16 * MIB


async def test_ftp_listing_without_mlsd_from_a_server_answering_slowly_times_out(
        certs: Certs, tmp_path: Path) -> None:
    # Without MLSD each name costs a SIZE and an MDTM, some 100 bytes: a server answering each
    # within the timeout moved far less than 1 KiB per period, yet every name pushed the deadline
    # back a whole period, so 10,000 names answered at 59 s held a session for 13 days.
    with run_peer("ftp", tmp_path, certs, no_mlsd=True, reply_delay_s=0.25) as peer:
        target = fresh_target("ftp", peer, tmp_path, certs)
        for n in range(100):
            (target.tree / "CONFIG" / f"f{n:03d}.ini").write_bytes(b"x")
        limit = 4.0
        transport = target.transport(timeouts=Timeouts(connect_s=5.0, operation_s=limit))
        await transport.connect()
        try:
            started = time.monotonic()
            try:
                listing = await transport.list("/CONFIG")
            except TransportError as err:
                assert err.failure is Failure.TIMEOUT and err.retriable, err
            else:
                raise AssertionError(f"{len(listing)} names listed at under 1 KiB per {limit} s")
            assert time.monotonic() - started < 2 * limit + 2
        finally:
            await transport.close()


@dataclass(slots=True)
class Pace:
    piece: int = 512      # bytes answered to a read, whatever it asked for
    delay_s: float = 0.1  # before each answer


class _ShortReads(asyncssh.SFTPServer):
    """A slow link, as the client sees it: each read answered with a few bytes, later."""

    def __init__(self, chan: asyncssh.SSHServerChannel[bytes], root: Path, pace: Pace) -> None:
        super().__init__(chan, chroot=str(root).encode())
        self._pace = pace

    async def read(self, file_obj: object, offset: int, size: int) -> bytes:
        await asyncio.sleep(self._pace.delay_s)
        return super().read(file_obj, offset,  # type: ignore[return-value]
                            min(size, self._pace.piece))


@pytest.fixture
async def short_reads(tmp_path: Path) -> AsyncIterator[tuple[ServerSettings, Pace]]:
    key = asyncssh.generate_private_key("ssh-ed25519")

    Server = password_server()
    root = tmp_path / "sftp"
    (root / "CMD").mkdir(parents=True)
    (root / "CMD" / "file").write_bytes(bytes(range(256)) * 160)  # 40 KiB
    pace = Pace()
    server = await asyncssh.listen(
        "127.0.0.1", 0, server_factory=Server, server_host_keys=[key], allow_scp=False,
        sftp_factory=lambda chan: _ShortReads(chan, root, pace))
    try:
        yield ServerSettings(slot=1, type=ServerType.SFTP, host="127.0.0.1",
                             port=server.sockets[0].getsockname()[1], user="sunpm",
                             password="secret", root_dir="/",
                             host_key=key.export_public_key().decode().strip()), pace
    finally:
        server.close()
        await server.wait_closed()


async def test_sftp_download_on_a_slow_link_that_moves_is_not_cut(
        short_reads: tuple[ServerSettings, Pace]) -> None:
    # About 5 KiB/s, ten times the 1 KiB per period of progress; but one read asks for 32 KiB,
    # which took 7 s to fill, and the deadline was pushed back only when a read returned.
    settings, _ = short_reads
    transport = SftpTransport(settings, timeouts=Timeouts(connect_s=5.0, operation_s=2.0))
    await transport.connect()
    try:
        assert await transport.download("/CMD/file") == bytes(range(256)) * 160
    finally:
        await transport.close()


async def test_sftp_download_trickling_times_out(
        short_reads: tuple[ServerSettings, Pace]) -> None:
    settings, pace = short_reads
    pace.piece, pace.delay_s = 8, 0.2  # some 40 bytes a second
    limit = 2.0
    transport = SftpTransport(settings, timeouts=Timeouts(connect_s=5.0, operation_s=limit))
    await transport.connect()
    try:
        started = time.monotonic()
        with pytest.raises(TransportError) as caught:
            await transport.download("/CMD/file")
        assert caught.value.failure is Failure.TIMEOUT and caught.value.retriable
        assert time.monotonic() - started < 2 * limit + 2
    finally:
        await transport.close()
