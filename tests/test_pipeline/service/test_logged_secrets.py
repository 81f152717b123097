"""A configuration problem about a secret never shows the secret: the gateway's log is
journaled and uploaded to the servers in LOG files (docs/formats.md §11), shown on the dashboard
and put in debug archives; a command's error goes to ACK files and MQTT."""

from __future__ import annotations

from pathlib import Path

import pytest
from _service_plant import UID, running_gateway, wait_for

from pipeline.service.maintenance import MaintenanceError, change_config
from store import Log

pytestmark = pytest.mark.usefixtures("no_task_left_behind")

PIN_LINE = "MODEM_Pin: '***' is not 4..8 digits"
URL_TEXT = "HTTP2_Url: 'https://bob:***@dav.example.com/x'"


async def test_a_bad_secret_value_reaches_the_log_hidden(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, inverters=0) as plant:
        # A local edit: its warnings are logged, and journaled, while the gateway runs.
        ini = plant.config_dir / "CONFIG" / f"{UID}_config.ini"
        loaded = plant.gateway.site
        ini.write_bytes(ini.read_bytes() + b"MODEM_Pin=98\n"
                        b"HTTP2_Url=https://bob:s3cret@dav.example.com/x\n")
        plant.gateway.config_written()
        await wait_for(lambda: plant.gateway.site is not loaded, 20, "the reload")
    async with await Log.open(tmp_path / "data" / "store", read_only=True) as log:
        lines = "\n".join(log.journal(kinds=["log"]).column("body").to_pylist())
    assert PIN_LINE in lines and URL_TEXT in lines
    assert "s3cret" not in lines and "'98'" not in lines


def test_a_command_refused_for_a_bad_secret_does_not_echo_it(tmp_path: Path) -> None:
    (tmp_path / "CONFIG").mkdir()
    (tmp_path / "CONFIG" / f"{UID}_config.ini").write_bytes(b"")
    for values, shown in (({"MODEM_Pin": "98"}, PIN_LINE),
                          ({"HTTP2_Url": "https://bob:s3cret@dav.example.com/x"}, URL_TEXT)):
        with pytest.raises(MaintenanceError) as refused:
            change_config(tmp_path, UID, values)
        assert str(refused.value).startswith(shown)
        assert "s3cret" not in str(refused.value) and "'98'" not in str(refused.value)
