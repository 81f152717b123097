"""The FTP transport against answers only a hand-written server gives (raw_ftp.py): listings
that trickle or keep coming, replies that never come, absurd facts (docs/behaviour.md §4.5)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from raw_ftp import Conn, Handler, port_address, raw_ftp

from exporters.transports import Failure, FtpTransport, Timeouts, TransportError
from exporters.transports._base import DownloadTooLarge

FAST = Timeouts(connect_s=3.0, operation_s=2.0)


@contextlib.asynccontextmanager
async def _connected(files: dict[str, bytes] | None = None,
                     **handlers: Handler) -> AsyncIterator[FtpTransport]:
    """A transport logged in (FAST timeouts) to a raw server holding `files`, answering the
    commands of `handlers` its own way."""
    async with raw_ftp(**handlers) as server:
        server.files.update(files or {})
        transport = FtpTransport(server.settings(), timeouts=FAST)
        await transport.connect()
        try:
            yield transport
        finally:
            await transport.close()


async def _slow_listing(conn: Conn, arg: str) -> None:
    """50 lines of 200 bytes, one every 0.1 s: 2 KB/s for 5 s, progress all along."""
    await conn.reply("150 listing")
    _, writer = await conn.open_data()
    for n in range(50):
        writer.write(f"type=file;size=1; slow-{n:03d}-{'x' * 170}.csv\r\n".encode())
        await writer.drain()
        await asyncio.sleep(0.1)
    writer.close()
    await conn.reply("226 done")


async def test_a_listing_that_keeps_coming_is_not_cut_by_the_timeout() -> None:
    async with _connected(mlsd=_slow_listing) as transport:
        started = time.monotonic()
        listing = await transport.list("/DATA")
        assert time.monotonic() - started > FAST.operation_s
        assert len(listing) == 50


async def _trickled_listing(conn: Conn, arg: str) -> None:
    await conn.reply("150 listing")
    _, writer = await conn.open_data()
    while True:
        writer.write(b"t")
        await writer.drain()
        await asyncio.sleep(0.05)


async def test_a_trickled_listing_still_times_out() -> None:
    async with _connected(mlsd=_trickled_listing) as transport:
        started = time.monotonic()
        with pytest.raises(TransportError) as caught:
            await transport.list("/DATA")
        assert caught.value.failure is Failure.TIMEOUT and caught.value.retriable
        assert time.monotonic() - started < 2 * FAST.operation_s + 2


async def _stored_then_dropped(conn: Conn, arg: str) -> None:
    await conn.reply("150 send")
    reader, writer = await conn.open_data()
    conn.server.files[arg] = await reader.read()
    writer.close()
    conn.writer.transport.abort()  # stored, but the 226 never goes out


async def test_an_upload_whose_final_reply_never_comes_is_retriable_and_found_next_time() -> None:
    async with _connected(stor=_stored_then_dropped) as transport:
        with pytest.raises(TransportError) as caught:
            await transport.upload("/DATA/a.csv", b"abc", two_step=False)
        assert str(caught.value) == ("server 1: upload /DATA/a.csv: connection lost "
                                     "(connection closed by the server)")
        assert caught.value.retriable
        # The next session looks the name up first (docs/behaviour.md §5.2): the same size
        # is there, so the file counts as delivered and is not sent twice.
        await transport.connect()
        assert await transport.size("/DATA/a.csv") == 3


async def _absurd_sizes(conn: Conn, arg: str) -> None:
    await conn.reply("150 listing")
    _, writer = await conn.open_data()
    writer.write(b"type=file;size=abc; a.csv\r\n"
                 + b"type=file;size=" + b"9" * 5000 + b"; b.csv\r\n"
                 + b"type=file;size=-3; c.csv\r\n"
                 + b"type=file;size=12; d.csv\r\n")
    await writer.drain()
    writer.close()
    await conn.reply("226 done")


async def test_absurd_size_facts_read_as_unknown_and_the_listing_goes_on() -> None:
    async with _connected(mlsd=_absurd_sizes) as transport:
        listing = await transport.list("/DATA")
        assert [(f.name, f.size) for f in listing] == [("a.csv", 0), ("b.csv", 0),
                                                       ("c.csv", 0), ("d.csv", 12)]


async def _odd_names(conn: Conn, arg: str) -> None:
    await conn.reply("150 listing")
    _, writer = await conn.open_data()
    writer.write(b"type=file;size=1; ..\r\n"
                 + b"type=file;size=1; a\x01b.csv\r\n"
                 + b"type=file;size=1; back\\slash.csv\r\n"
                 + b"type=file;size=1; " + b"L" * 300 + b".csv\r\n"
                 + b"type=file;size=2; ok.csv\r\n")
    await writer.drain()
    writer.close()
    await conn.reply("226 done")


async def test_listed_names_that_are_not_plain_are_dropped_with_one_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    async with _connected(mlsd=_odd_names) as transport:
        assert [f.name for f in await transport.list("/CONFIG")] == ["ok.csv"]
    assert "server 1: /CONFIG: 4 listed names are not plain file names; ignored" in caplog.text


async def _size_preliminary(conn: Conn, arg: str) -> None:
    await conn.reply("150 looking")  # no command but a transfer has a preliminary reply
    await conn.reply("213 3")


async def test_a_preliminary_reply_to_size_drops_the_connection_not_the_reply_order() -> None:
    async with _connected(files={"/DATA/a.csv": b"abc"}, size=_size_preliminary) as \
            transport:
        with pytest.raises(TransportError) as caught:
            await transport.size("/DATA/a.csv")
        assert caught.value.failure is Failure.PROTOCOL
        assert "150 looking" in str(caught.value)
        # Out of step, the connection is not used again: the next operation reconnects.
        with pytest.raises(TransportError) as again:
            await transport.download("/DATA/a.csv")
        assert again.value.failure is Failure.CONNECTION_LOST
        await transport.connect()
        assert await transport.download("/DATA/a.csv") == b"abc"


def _pasv_answer(text: str) -> Callable[[Conn, str], Awaitable[None]]:
    """PASV opening a real data listener, answered with `text` ({p1}, {p2}: its port)."""
    async def pasv(conn: Conn, arg: str) -> None:
        async def take(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await conn.data.put((reader, writer))
        conn.listener = await asyncio.start_server(take, "127.0.0.1", 0)
        port = conn.listener.sockets[0].getsockname()[1]
        await conn.reply(text.format(p1=port >> 8, p2=port & 255))
    return pasv


async def test_a_passive_address_elsewhere_than_the_server_is_not_followed() -> None:
    # 10.255.255.1 is no host here: the data connection goes to the control peer instead.
    pasv = _pasv_answer("227 Entering Passive Mode (10,255,255,1,{p1},{p2})")
    async with _connected(files={"/CMD/a.json": b"[]"}, pasv=pasv) as transport:
        assert await transport.download("/CMD/a.json") == b"[]"


async def test_a_malformed_passive_reply_is_a_protocol_error_at_once() -> None:
    async with _connected(files={"/CMD/a.json": b"[]"},
                          pasv=_pasv_answer("227 over there")) as transport:
        started = time.monotonic()
        with pytest.raises(TransportError) as caught:
            await transport.download("/CMD/a.json")
        assert caught.value.failure is Failure.PROTOCOL and "227 over there" in str(
            caught.value)
        assert time.monotonic() - started < FAST.operation_s


async def _endless_file_then_endless_reply(conn: Conn, arg: str) -> None:
    await conn.reply("150 sending")
    _, writer = await conn.open_data()
    try:
        while True:
            writer.write(b"\0" * 65536)
            await writer.drain()
    except ConnectionError:
        pass
    while True:  # the transfer's reply, as a multi-line one that never ends
        await conn.reply("226-and more")
        await asyncio.sleep(0)  # drain() does not yield while the client keeps up


async def test_a_cut_download_whose_reply_never_ends_gives_up_within_64_kib() -> None:
    async with raw_ftp(retr=_endless_file_then_endless_reply) as server:
        server.files["/CMD/a.json"] = b""
        transport = FtpTransport(server.settings(),
                                 timeouts=Timeouts(connect_s=3.0, operation_s=20.0))
        await transport.connect()
        try:
            started = time.monotonic()
            with pytest.raises(DownloadTooLarge):
                await transport.download("/CMD/a.json", max_bytes=1 << 20)
            assert time.monotonic() - started < 10
        finally:
            await transport.close()


def _transfer_with_preliminaries(count: int) -> Callable[[Conn, str], Awaitable[None]]:
    """STOR or RETR answered `150`, then `count` more preliminary replies (`110`, as a restart
    marker) after the data, then `226`."""
    async def transfer(conn: Conn, arg: str) -> None:
        await conn.reply("150 go")
        reader, writer = await conn.open_data()
        if conn.server.commands[-1].startswith("STOR"):
            conn.server.files[arg] = await reader.read()
        else:
            writer.write(conn.server.files[arg])
            await writer.drain()
        writer.close()
        for n in range(count):
            await conn.reply(f"110 MARK {n} = {n}")
        await conn.reply("226 done")
    return transfer


async def test_preliminary_replies_after_a_transfer_are_passed_over() -> None:
    # A second 1xx after the data is no failure: the transfer's completion reply follows. Read
    # as a protocol error it failed the session non-retriably (next try an hour later).
    transfer = _transfer_with_preliminaries(2)
    async with raw_ftp(stor=transfer, retr=transfer) as server:
        transport = FtpTransport(server.settings(), timeouts=FAST)
        await transport.connect()
        try:
            await transport.upload("/DATA/a.csv", b"abc", two_step=True)
            assert server.files["/DATA/a.csv"] == b"abc"
            assert await transport.download("/DATA/a.csv") == b"abc"
            assert [f.name for f in await transport.list("/DATA")] == ["a.csv"]
        finally:
            await transport.close()


async def test_endless_preliminary_replies_after_a_transfer_end_the_connection() -> None:
    async with _connected(stor=_transfer_with_preliminaries(10_000)) as transport:
        started = time.monotonic()
        with pytest.raises(TransportError) as caught:
            await transport.upload("/DATA/a.csv", b"abc", two_step=False)
        assert caught.value.failure is Failure.PROTOCOL
        assert "preliminary replies" in str(caught.value)
        assert time.monotonic() - started < FAST.operation_s
        with pytest.raises(TransportError) as again:  # out of step: not used again
            await transport.size("/DATA/a.csv")
        assert again.value.failure is Failure.CONNECTION_LOST


async def test_a_greeting_preceded_by_120_logs_in_in_step() -> None:
    # RFC 959 §5.4: a server may answer a connection "120 ready in n minutes", then 220. Read
    # as the greeting, the 220 was then taken for the answer to USER: PASS was never sent and
    # every reply after it was one command late.
    async with raw_ftp() as server:
        server.greeting = ("120 ready in a moment", "220 ready")
        server.files["/DATA/a.csv"] = b"abc"
        transport = FtpTransport(server.settings(), timeouts=FAST)
        await transport.connect()
        try:
            assert await transport.size("/DATA/a.csv") == 3
        finally:
            await transport.close()
    assert server.commands[:2] == ["USER u", "PASS p"]


async def test_in_active_mode_only_the_server_s_data_connection_is_taken() -> None:
    # FTP_Passive=0: the gateway listens for the server's data connection, on every interface.
    # Another host connecting first (here 127.0.0.2, racing the server at 127.0.0.1) would
    # get the upload, or feed a download (a command file); it is closed and the server's
    # connection taken.
    stolen = bytearray()
    thieves: list[asyncio.StreamWriter] = []

    async def port_raced(conn: Conn, arg: str) -> None:
        conn.active = port_address(arg)
        reader, writer = await asyncio.open_connection(*conn.active,
                                                       local_addr=("127.0.0.2", 0))
        thieves.append(writer)

        async def steal() -> None:
            stolen.extend(await reader.read())
        conn.server.tasks.add(asyncio.create_task(steal()))
        await conn.reply("200 ok")

    async with raw_ftp(port=port_raced) as server:
        transport = FtpTransport(server.settings(passive=False), timeouts=FAST)
        await transport.connect()
        try:
            await transport.upload("/DATA/a.csv", b"secret", two_step=False)
        finally:
            await transport.close()
            for writer in thieves:
                writer.close()
    assert server.files["/DATA/a.csv"] == b"secret"
    assert bytes(stolen) == b""
