"""The session's own guards (docs/behaviour.md §4.5): whatever a server sends, a fault met while
checking its configuration rejects that configuration and the session goes on."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest
from delivery_support import DemoSource
from hostile_support import CUT_S, UID, Site

from config.errors import Problem
from config.model import ServerSettings, ServerType
from exporters.outbox import Outbox
from exporters.session import FileServerSession, Trigger
from exporters.transports import DirTransport
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
