"""The session's own guards (docs/behaviour.md §4.5): whatever a server sends, a fault met while
checking its configuration rejects that configuration and the session goes on."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest
from delivery_support import DemoSource
from hostile_support import CUT_S, UID, Site

from config.errors import Problem
from config.model import ServerSettings, ServerType
from exporters.outbox import Outbox
from exporters.session import FileServerSession, Trigger, retry_delay_s
from exporters.transports import DirTransport, Timeouts, WebdavTransport
from store.delivery import Stream
from store.log import Log


async def test_a_validator_fault_rejects_the_configuration_and_the_session_goes_on(
        tmp_path: Path, store: Log, caplog: pytest.LogCaptureFixture) -> None:
    site = Site(tmp_path / "site")
    local = (site.config / "CONFIG" / f"{UID}_config.ini").read_bytes()
    (site.tree / "CONFIG" / f"{UID}_config.ini").write_bytes(local + b"LOG_Level=debug\n")

    def broken(directory: Path, change: Mapping[str, bytes]) -> list[Problem]:
        raise RecursionError(f"a parser met something it did not expect in {directory}")

    server = ServerSettings(slot=1, type=ServerType.DIR, dir_path=str(site.tree))
    outbox = Outbox(server=1, log=store, source=DemoSource(store, UID),
                    directory=tmp_path / "outbox", streams=(Stream.ALARM, Stream.DATA))
    session = FileServerSession(settings=server, uid=UID, transport=DirTransport(server),
                                outbox=outbox, log=store, config_dir=site.config,
                                validate=broken)
    caplog.set_level(logging.INFO)
    result = await session.run(Trigger.SCHEDULE, started=datetime.fromtimestamp(CUT_S, UTC))
    assert result.ok, result
    faults = [r for r in caplog.records if "could not be checked" in r.getMessage()]
    assert len(faults) == 1 and faults[0].exc_info is not None
    assert (site.config / "CONFIG" / f"{UID}_config.ini").read_bytes() == local


@pytest.fixture
async def redirecting_url() -> AsyncIterator[str]:
    """A web server that answers every request `301 Moved Permanently` (a WebDAV URL moved)."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 301 Moved Permanently\r\nLocation: https://elsewhere/\r\n"
                         b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        server.close()


async def test_a_protocol_error_is_retried_on_the_ladder_not_after_an_hour(
        tmp_path: Path, store: Log, redirecting_url: str,
        caplog: pytest.LogCaptureFixture) -> None:
    # docs/behaviour.md §4.5: only authentication and key or certificate mismatches wait 60 min.
    site = Site(tmp_path / "site")
    server = ServerSettings(slot=1, type=ServerType.WEBDAV, http_url=redirecting_url)
    outbox = Outbox(server=1, log=store, source=DemoSource(store, UID),
                    directory=tmp_path / "outbox", streams=(Stream.ALARM, Stream.DATA))
    transport = WebdavTransport(server, cert_dir=tmp_path,
                                timeouts=Timeouts(connect_s=5.0, operation_s=5.0))
    session = FileServerSession(settings=server, uid=UID, transport=transport, outbox=outbox,
                                log=store, config_dir=site.config)
    caplog.set_level(logging.INFO)
    result = await session.run(Trigger.SCHEDULE, started=datetime.fromtimestamp(CUT_S, UTC))
    assert not result.ok and "protocol error" in result.reason and "301" in result.reason
    assert result.retriable
    assert [retry_delay_s(n, retriable=result.retriable) // 60 for n in range(1, 7)] == [
        5, 10, 20, 40, 60, 60]
    failed = [r for r in caplog.records if "session failed" in r.getMessage()]
    assert [r.levelno for r in failed] == [logging.WARNING]
