"""An outbox folder on a full disk (the store has not met it yet: no commit since it filled): the
window cannot be materialised, and the session fails as any session that cannot build a window
does, retried, in words, not on an internal error with its traceback."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from delivery_support import DAY, T0, DemoSource, fill, make_tree
from small_disks import fill as fill_disk
from small_disks import mounted_tmpfs

from config.model import ServerSettings, ServerType
from exporters.outbox import Outbox
from exporters.session import FileServerSession, Trigger
from exporters.transports.dir import DirTransport
from store.delivery import Stream
from store.log import Log

UID = "WPMTEST01"


async def test_a_window_the_outbox_disk_cannot_take_fails_the_session_in_words(
        store: Log, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    await fill(store, T0, T0 + DAY)
    root = make_tree(tmp_path / "server")
    settings = ServerSettings(slot=1, type=ServerType.DIR, dir_path=str(root), two_step=True)
    with mounted_tmpfs(tmp_path / "small", "1m") as small:
        (small / "outbox").mkdir()
        fill_disk(small / "fill")
        box = Outbox(server=1, log=store, source=DemoSource(store, UID),
                     directory=small / "outbox", streams=(Stream.ALARM, Stream.DATA))
        result = await FileServerSession(
            settings=settings, uid=UID, transport=DirTransport(settings), outbox=box,
            log=store).run(Trigger.SCHEDULE, started=datetime.fromtimestamp(T0 + DAY, UTC))
    assert not result.ok and result.retriable, result
    assert "No space left on device" in result.reason, result
    assert str(small / "outbox") in result.reason, result
    assert "Traceback" not in caplog.text
    assert not store.journal(kinds=["window"]).num_rows
