"""A gateway restarted with a configuration folder it rejects runs the last configuration in
force, kept in its data directory, instead of refusing to start (docs/behaviour.md §4.2,
docs/spec-notes.md service); once the folder is fixed, the fix applies as any local edit."""

from __future__ import annotations

import asyncio
import io
import tarfile
from pathlib import Path

import pytest
from _service_plant import UID, running_gateway, session_with_server_1, wait_for

from config.defaults import default_files
from pipeline.service import in_force
from pipeline.service.gateway import Gateway, GatewayRefused

pytestmark = pytest.mark.usefixtures("no_task_left_behind")

CONFIG_INI = f"CONFIG/{UID}_config.ini"


async def test_a_restart_on_a_rejected_folder_runs_the_configuration_in_force(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data_dir = tmp_path / "data"
    async with running_gateway(tmp_path, inverters=0) as plant:
        local = plant.config_dir / CONFIG_INI
        in_force_ini = local.read_bytes()
    kept = in_force.load(data_dir, tmp_path / "config")
    assert kept is not None and kept.loaded[CONFIG_INI] == in_force_ini

    # A repeated key rejects the file: the gateway stopped on it used to stay down.
    local.write_bytes(in_force_ini + b"DAQ_PollPeriod=5\n")
    caplog.clear()
    async with running_gateway(tmp_path, inverters=0, site_written=True) as plant:
        site = plant.gateway.site
        assert site is not None and site.loaded[CONFIG_INI] == in_force_ini
        assert "DAQ_PollPeriod" in caplog.text
        assert "running the last configuration in force" in caplog.text
        assert plant.gateway.poller is not None

        # The rejected folder is not taken for a change at every look; its fix is.
        fixed = in_force_ini + b"LOG_Level=debug\n"
        local.write_bytes(fixed)
        plant.gateway.config_written()
        await wait_for(lambda: plant.gateway.site is not None
                       and plant.gateway.site.loaded.get(CONFIG_INI) == fixed, 20,
                       "the fixed folder applied")
    assert caplog.text.count("Local configuration change; applying it") == 1
    kept = in_force.load(data_dir, tmp_path / "config")
    assert kept is not None and kept.loaded[CONFIG_INI] == fixed


async def test_without_a_configuration_in_force_a_rejected_folder_still_refuses(
        tmp_path: Path) -> None:
    async with running_gateway(tmp_path, inverters=0) as plant:
        local = plant.config_dir / CONFIG_INI
        local.write_bytes(local.read_bytes() + b"DAQ_PollPeriod=5\n")
    (tmp_path / "data" / in_force.FILE_NAME).write_bytes(b"not a tar file")
    gateway = Gateway(tmp_path / "config", tmp_path / "data")
    with pytest.raises(GatewayRefused, match="configuration rejected"):
        await asyncio.wait_for(gateway.run(asyncio.Event()), 20)


def test_a_copy_in_force_cut_at_a_file_end_is_not_run_as_a_smaller_configuration(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """tarfile reads an archive cut between two files as a shorter one: run, the files after
    the cut would read as missing (no devices, no schedules). The copy is refused whole."""
    files = default_files(UID)
    data = in_force.archive(files)
    (tmp_path / in_force.FILE_NAME).write_bytes(data)
    kept = in_force.load(tmp_path, tmp_path / "config")
    assert kept is not None and dict(kept.loaded) == files
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        ends = [member.offset_data + -(-member.size // 512) * 512 for member in tar.getmembers()]
    for cut in ends[:-1]:
        (tmp_path / in_force.FILE_NAME).write_bytes(data[:cut])
        caplog.clear()
        assert in_force.load(tmp_path, tmp_path / "config") is None, cut
        assert "last configuration in force unreadable (cut short)" in caplog.text


@pytest.mark.parametrize("gone", ["folder", "CONFIG"])
async def test_a_configuration_folder_gone_is_said_once_and_the_configuration_runs_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, gone: str) -> None:
    """Deleted while running (or a mount not there at start): one line says what is missing;
    no "change rejected" at each check, no reload to a default site of an empty folder."""
    async with running_gateway(tmp_path, inverters=0) as plant:
        gateway = plant.gateway
        site = gateway.site
        aside = tmp_path / "aside"
        (plant.config_dir if gone == "folder" else plant.config_dir / "CONFIG").rename(aside)
        for _ in range(3):      # three checks, each one asked for at once
            gateway.config_written()
            await wait_for(lambda: not gateway._config_written.is_set(), 20, "a check")
            await asyncio.sleep(0.2)
        assert caplog.text.count("missing; running configuration unchanged") == 1, caplog.text
        assert "Local configuration change" not in caplog.text
        assert gateway.site is site
        # A session mirrors the configuration in force, without a line per file at each one.
        await session_with_server_1(plant)
        assert "differs from the configuration in force" not in caplog.text
        assert (plant.server_dir / CONFIG_INI).is_file()
        aside.rename(plant.config_dir if gone == "folder" else plant.config_dir / "CONFIG")
    if gone == "CONFIG":
        return
    # Started without it: the start says so, the checks say nothing more.
    (tmp_path / "config").rename(aside)
    caplog.clear()
    async with running_gateway(tmp_path, inverters=0, site_written=True) as plant:
        gateway = plant.gateway
        for _ in range(2):
            gateway.config_written()
            await wait_for(lambda: not gateway._config_written.is_set(), 20, "a check")
            await asyncio.sleep(0.2)
        assert "running the last configuration in force" in caplog.text
        assert "missing; running configuration unchanged" not in caplog.text
        assert "Local configuration change" not in caplog.text
        # Back: a change in it applies as any local edit.
        aside.rename(tmp_path / "config")
        ini = tmp_path / "config" / CONFIG_INI
        ini.write_bytes(ini.read_bytes().replace(b"DAQ_PollPeriod=1", b"DAQ_PollPeriod=2"))
        gateway.config_written()
        await wait_for(lambda: "Local configuration change; applying it" in caplog.text, 20,
                       "the edit applied")


async def test_a_refused_start_says_warnings_as_warnings_and_counts_only_errors_as_such(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """As `sunpm config validate` says it: a value replaced by its default is a warning, not one
    of the errors that rejected the folder."""
    files = default_files(UID)
    files[CONFIG_INI] += b"DAQ_PollPeriod=abc\nLOG_Level=info\nLOG_Level=debug\n"
    for rel, data in files.items():
        (tmp_path / "config" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "config" / rel).write_bytes(data)
    gateway = Gateway(tmp_path / "config", tmp_path / "data")
    with pytest.raises(GatewayRefused) as refused:
        await asyncio.wait_for(gateway.run(asyncio.Event()), 20)
    assert str(refused.value) == (f"{tmp_path / 'config'}: configuration rejected "
                                  "(1 error(s), 1 warning(s) above)")
    levels = {r.getMessage().split(": ")[1]: r.levelname for r in caplog.records
              if r.name == "sunpm.config"}
    assert levels == {"DAQ_PollPeriod": "WARNING", "LOG_Level": "ERROR"}, levels
