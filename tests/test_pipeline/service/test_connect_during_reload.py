"""A `connect` asked while a saved configuration is being applied (the web UI's save, then at once
its connect button or `sunpm cmd connect`): the server is configured before and after, so the
session is held for the new configuration's scheduler, not refused."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from _service_plant import UID, running_gateway, wait_for

from exporters.session import Trigger
from pipeline.service.maintenance import change_config

YIELDS = 200_000


async def test_a_connect_between_two_configurations_is_kept_for_the_next(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "sunpm.session")
    async with running_gateway(tmp_path) as plant:
        gateway = plant.gateway
        change_config(plant.config_dir, UID, {"LOG_Level": "debug"})
        gateway.config_written()
        # The reload stops the schedulers before it starts the next ones.
        for _ in range(YIELDS):
            if not gateway.schedulers:
                break
            await asyncio.sleep(0)
        assert not gateway.schedulers, "the reload's gap between schedulers was not seen"
        assert gateway.request_session(1, Trigger.COMMAND)
        await wait_for(lambda: any("session started (command)" in r.getMessage()
                                   for r in caplog.records), 40, "the connect's session")
