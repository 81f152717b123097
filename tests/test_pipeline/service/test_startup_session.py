"""The start-up session (docs/behaviour.md §4.1) on a running gateway: Power ON asks for it and
it carries Power ON; no alarm session of its own goes first."""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path

import pytest
from _service_plant import running_gateway, wait_for

from pipeline.service import alarms
from pipeline.service.scheduler import Trigger

pytestmark = pytest.mark.usefixtures("no_task_left_behind")


async def test_power_on_is_carried_by_one_start_up_session(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alarms, "POWER_ON_AFTER_S", 2)
    async with running_gateway(tmp_path) as plant:
        scheduler = plant.gateway.schedulers[1]
        triggers: list[Trigger] = []
        run_session = scheduler._run_session

        async def recorded(trigger: Trigger) -> object:
            triggers.append(trigger)
            return await run_session(trigger)

        scheduler._run_session = recorded  # type: ignore[assignment]

        def power_on_delivered() -> bool:
            return any(b"Power ON" in gzip.decompress(path.read_bytes())
                       for path in (plant.server_dir / "ALARM").glob("*"))

        await wait_for(power_on_delivered, 30, "Power ON delivered")
        await wait_for(lambda: not scheduler.running, 30, "the session's end")
        # A second session would be asked at once after the first: give it time to show.
        await asyncio.sleep(3)
        assert triggers == [Trigger.STARTUP]
