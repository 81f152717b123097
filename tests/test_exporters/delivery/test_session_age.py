"""A session reads what is new in the journal, not the journal's history: over a hundred
ten-minute sessions (heartbeats and log lines between them, as a running gateway journals), the
journal rows a session reads stay what the first sessions read while the journal grows."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from delivery_support import NS, T0, make_tree
from test_export import IO_DEF, UID, make_site, record

from config import load_site
from exporters.outbox import Outbox
from exporters.rendering.source import store_source
from exporters.session import FileServerSession, Trigger
from exporters.transports import DirTransport
from store import Log, StoreOptions
from store.delivery import FILE_SERVER_STREAMS
from store.events import LogLevel, LogLine

SESSIONS = 100


class _CountingLog:
    """The store, the journal rows each read returns counted."""

    def __init__(self, log: Log) -> None:
        self._log = log
        self.rows = 0

    def journal(self, **kw: Any) -> pa.Table:
        table = self._log.journal(**kw)
        self.rows += table.num_rows
        return table

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)


async def test_rows_a_session_reads_do_not_grow_with_the_journal(tmp_path: Path) -> None:
    server = make_tree(tmp_path / "server")
    store_dir = tmp_path / "store"
    site = load_site(make_site(tmp_path / "cfg", server, store_dir))
    log = await Log.open(store_dir, StoreOptions(flush_s=0.02))
    try:
        counting: Any = _CountingLog(log)
        def_id = log.put_definition(f"{UID}_IO.csv", IO_DEF)
        settings = site.settings.servers[0]
        outbox = Outbox(server=1, log=counting, source=store_source(counting, site, 1),
                        directory=store_dir / "outbox" / "1", streams=FILE_SERVER_STREAMS)
        session = FileServerSession(settings=settings, uid=UID, transport=DirTransport(settings),
                                    outbox=outbox, log=counting)
        read: list[int] = []
        t = T0
        for k in range(SESSIONS):
            acks = [record(log, def_id, list(range(t + 60, t + 601, 60)))]
            acks += [log.append_journal("heartbeat", {"n": m}, ts_ns=(t + m * 60) * NS)
                     for m in range(10)]
            acks.append(log.append_journal("log", json.loads(LogLine(
                level=LogLevel.INFO, category="system", message=f"session {k}").to_body()),
                ts_ns=(t + 300) * NS))
            await asyncio.gather(*acks, log.commit())
            t += 600
            counting.rows = 0
            result = await session.run(Trigger.SCHEDULE,
                                       started=datetime.fromtimestamp(t + 5, UTC))
            assert result.ok
            read.append(counting.rows)
        assert log.journal().num_rows >= 15 * SESSIONS
    finally:
        await log.close()
    # Every session delivered its DATA and LOG files; what it read stayed flat.
    assert len(list((server / "LOG").iterdir())) == SESSIONS
    assert max(read[SESSIONS // 2:]) <= max(read[2:10]) + 5, read
