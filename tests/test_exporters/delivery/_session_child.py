"""One server-1 session in a process of its own, for the SIGKILL loop.

    python _session_child.py STORE PORT CUT_S PAD_BYTES

Imports first, then waits for a line on stdin before opening the store, so the test can start
the next child while the current one runs (the store admits one writer at a time). Exit 0 when
the session ended OK, 3 when it failed.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path

from delivery_support import DemoSource

from config.model import ServerSettings, ServerType
from exporters.outbox import Outbox
from exporters.session import FileServerSession, Trigger
from exporters.transports import FtpTransport, Timeouts
from store import Log, StoreOptions
from store.delivery import Stream


async def session(store_dir: Path, port: int, cut_s: int, pad_bytes: int, *,
                  two_step: bool = True) -> bool:
    """One server-1 session to the FTP peer on `port`, cut at `cut_s`; whether it ended OK."""
    settings = ServerSettings(slot=1, type=ServerType.FTP, host="127.0.0.1", port=port,
                              user="sunpm", password="secret", root_dir="/", two_step=two_step)
    log = await Log.open(store_dir, StoreOptions(flush_s=0.05))
    try:
        outbox = Outbox(server=1, log=log, source=DemoSource(log, pad_bytes=pad_bytes),
                        directory=store_dir / "outbox" / "1", streams=(Stream.ALARM, Stream.DATA))
        run = FileServerSession(settings=settings, uid="WPMTEST01", outbox=outbox, log=log,
                                transport=FtpTransport(settings, timeouts=Timeouts(
                                    connect_s=5, operation_s=20)))
        result = await run.run(Trigger.RETRY, started=datetime.fromtimestamp(cut_s, UTC))
    finally:
        await log.close()
    return result.ok


if __name__ == "__main__":
    store, port, cut, pad = sys.argv[1:5]
    if not sys.stdin.readline():
        sys.exit(4)
    sys.exit(0 if asyncio.run(session(Path(store), int(port), int(cut), int(pad))) else 3)
