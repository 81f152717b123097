"""A full disk on a running gateway (docs/behaviour.md §6): the sessions still deliver what is
built, on a real small file system."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from _service_plant import RunningPlant, running_gateway, session_with_server_1, wait_for
from small_disks import kept_full, mounted_tmpfs

from exporters.session.outcome import SessionResult, Trigger

pytestmark = pytest.mark.usefixtures("no_task_left_behind")


async def _session(plant: RunningPlant) -> SessionResult:
    scheduler = plant.gateway.schedulers[1]
    before = scheduler.sessions
    assert plant.gateway.request_session(1, Trigger.COMMAND)
    await wait_for(lambda: scheduler.sessions > before and not scheduler.running, 60,
                   "a session with server 1")
    assert scheduler.last_result is not None
    return scheduler.last_result


async def test_a_full_disk_still_delivers_what_was_built(tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    with mounted_tmpfs(tmp_path / "data", "64m") as data:
        async with running_gateway(tmp_path) as plant:
            store = plant.gateway.store
            assert store is not None
            await wait_for(lambda: store.watermark().devices, 30, "records")
            # DATA refused: its window is built and stays in the outbox.
            shutil.rmtree(plant.server_dir / "DATA")
            first = await _session(plant)
            assert not first.ok and "DATA" in first.reason
            (plant.server_dir / "DATA").mkdir()
            # Server 1 lost its copy of config.ini: uploaded again, its `sync` event journaled.
            ini = next((plant.server_dir / "CONFIG").glob("*_config.ini"))
            ini.unlink()
            # The next second: the session's cut is past the first one's, new windows are due.
            second = time.time_ns() // 1_000_000_000
            await wait_for(lambda: time.time_ns() // 1_000_000_000 > second, 5, "a second")
            with kept_full(data / "fill"):
                await wait_for(lambda: store.last_error is not None, 30, "a commit failing")
                full = await _session(plant)
            # What was built is delivered; nothing new is built, said as the reason, retried.
            assert [p.name for p in (plant.server_dir / "DATA").iterdir()], full
            assert ini.is_file()
            assert not full.ok and full.retriable, full
            assert "the store cannot write" in full.reason, full
            assert "No space left on device" in full.reason, full
            assert "commands not fetched: the store cannot write" in caplog.text
            await wait_for(lambda: store.last_error is None, 30, "commits again")
            await session_with_server_1(plant)
