"""What the running gateway mirrors to server 1's /CONFIG is the configuration in force
(docs/behaviour.md §4.2 step 3, docs/spec-notes.md service): a local edit it rejected stays local,
a valid one goes up once applied. Server 1 is a `dir` server in the test's folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _service_plant import UID, running_gateway, session_with_server_1, wait_for

pytestmark = pytest.mark.usefixtures("no_task_left_behind")

CONFIG_INI = f"CONFIG/{UID}_config.ini"


async def test_a_rejected_local_edit_is_not_uploaded_a_valid_one_is(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with running_gateway(tmp_path, inverters=0) as plant:
        local, remote = plant.config_dir / CONFIG_INI, plant.server_dir / CONFIG_INI
        in_force = local.read_bytes()
        await session_with_server_1(plant)
        assert remote.read_bytes() == in_force

        # A repeated key rejects the file: the running configuration stays, and so does the
        # server's copy, though the folder's file is newer than the last sync.
        rejected = in_force + b"DAQ_PollPeriod=5\n"
        local.write_bytes(rejected)
        plant.gateway.config_written()
        await wait_for(lambda: "Local configuration change rejected" in caplog.text, 20,
                       "the rejection")
        await session_with_server_1(plant)
        assert remote.read_bytes() == in_force
        assert (f"server 1: {CONFIG_INI} differs from the configuration in force (a local "
                "change rejected or not applied yet); the copy in force is synced") in caplog.text
        assert local.read_bytes() == rejected

        # Fixed locally: applied, then mirrored.
        fixed = in_force + b"LOG_Level=debug\n"
        local.write_bytes(fixed)
        plant.gateway.config_written()
        await wait_for(lambda: plant.gateway.site is not None
                       and plant.gateway.site.loaded.get(CONFIG_INI) == fixed
                       and 1 in plant.gateway.schedulers, 20, "the reload")
        await session_with_server_1(plant)
        assert remote.read_bytes() == fixed
