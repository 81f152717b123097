"""The web UI's diagnostics, scripts and system actions on a running gateway
(pipeline/service/admin.py): frame traces and their download, scripts uploaded, enabled,
disabled, logged, exported and deleted, connect now, reboot, factory reset, update, the log and
backfill downloads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import zipfile
from pathlib import Path

import pytest
from _service_plant import UID, reconfigure, running_gateway, wait_for
from waiting import wait_until

from config import load_site
from pipeline.service.admin import Admin, AdminError
from pipeline.service.commands import CommandError
from pipeline.service.config_edit import ChangeRejected

pytestmark = pytest.mark.usefixtures("no_task_left_behind")

TICKER = b"""header = { version = "2.1", label = "Ticker <b>", name = "ticker" }
local n = 0
function wsInit()
  wd.every(0.5, function() n = n + 1; wd.log("tick " .. n) end)
end
"""


def _names(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


async def test_a_trace_of_the_ethernet_link_downloads_as_its_log_file(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as plant:
        admin = Admin(plant.gateway)
        admin.start_trace("ethernet", 2)
        state = {t.interface: t for t in admin.traces()}
        assert state["ethernet"].running and not state["serial1"].running
        await wait_for(lambda: {t.interface: t for t in admin.traces()}["ethernet"].entries
                       >= 4, 30, "frames traced")
        name, spooled = await admin.trace_zip("ethernet")
        assert name.startswith(f"{UID}_traces_") and name.endswith(".zip")
        with spooled:
            files = _names(spooled.read())
        [(file_name, text)] = files.items()
        assert file_name.startswith(f"{UID}_ethernet_") and file_name.endswith(".log")
        lines = text.decode().splitlines()
        assert len(lines) >= 4 and all("127.0.0.1:" in line for line in lines)
        admin.start_trace("ethernet", 0)
        assert not {t.interface: t for t in admin.traces()}["ethernet"].running
        with pytest.raises(AdminError) as bad:
            admin.start_trace("ethernet9", 5)
        assert bad.value.field == "interface"
        with pytest.raises(CommandError, match=r"duration must be 0\.\.1440"):
            admin.start_trace("serial1", 1441)


async def test_a_script_is_uploaded_enabled_logged_disabled_exported_and_deleted(
        tmp_path: Path) -> None:
    async with running_gateway(tmp_path, inverters=0) as plant:
        admin = Admin(plant.gateway)
        assert admin.scripts() == []
        assert await admin.upload_script("ticker.lua", TICKER) == []
        listed = (plant.config_dir / "CONFIG" / f"{UID}_scl.ini").read_text()
        assert "ticker.lua" in listed
        # The configuration watch applies the change; the script starts with the reload.
        await wait_for(lambda: [s.enabled for s in admin.scripts()] == [True], 30,
                       "script running")
        [status] = admin.scripts()
        assert (status.name, status.label, status.version) == ("ticker", "Ticker <b>", "2.1")

        async def two_lines() -> bool:
            return len(await admin.script_log("ticker")) >= 2

        await wait_until(two_lines, 20, what="two script log lines", every=0.2)
        lines = await admin.script_log("ticker")
        assert " INFO script:ticker: tick 1" in lines[0]
        await admin.disable_script("ticker")
        assert [s.enabled for s in admin.scripts()] == [False]
        status = await admin.enable_script("ticker.lua")
        assert status.enabled and status.last_error == ""
        assert admin.export_script("ticker.lua") == TICKER
        with pytest.raises(AdminError) as unknown:
            await admin.disable_script("nosuch")
        assert unknown.value.field == "name"

        await admin.delete_script("ticker.lua")
        assert not (plant.config_dir / "SCRIPT" / "ticker.lua").exists()
        assert "ticker.lua" not in (plant.config_dir / "CONFIG" / f"{UID}_scl.ini").read_text()
        await wait_for(lambda: admin.scripts() == [], 30, "script gone after the reload")


@pytest.mark.parametrize(("file", "data", "message"), [
    ("../evil.lua", b"x = 1", "a script is a plain file name ending .lua"),
    ("notlua.txt", b"x = 1", "a script is a plain file name ending .lua"),
    ("big.lua", b"-" * 300_000, "300000 bytes, more than 262144"),
    ("bin.lua", b"\x1bLuaT\x00", "precompiled Lua bytecode is refused"),
    ("latin.lua", b"-- \xe9t\xe9\n", "not UTF-8 text"),
])
async def test_a_bad_upload_is_refused_and_writes_nothing(tmp_path: Path, file: str,
                                                          data: bytes, message: str) -> None:
    async with running_gateway(tmp_path, inverters=0) as plant:
        before = {p: p.read_bytes() for p in plant.config_dir.rglob("*") if p.is_file()}
        with pytest.raises(AdminError, match=message) as refused:
            await Admin(plant.gateway).upload_script(file, data)
        assert refused.value.field == "file"
        assert {p: p.read_bytes() for p in plant.config_dir.rglob("*") if p.is_file()} == before


async def test_a_script_list_already_full_refuses_a_seventeenth(tmp_path: Path) -> None:
    scripts = {f"SCRIPT/s{k}.lua": b"x = 1\n" for k in range(16)}
    scripts[f"CONFIG/{UID}_scl.ini"] = "".join(
        f"SCRIPT_File[{k}]=s{k}.lua\n" for k in range(16)).encode()
    async with running_gateway(tmp_path, inverters=0, extra_files=scripts) as plant:
        with pytest.raises(AdminError, match="16 scripts are listed already"):
            await Admin(plant.gateway).upload_script("more.lua", b"x = 1\n")
        assert not (plant.config_dir / "SCRIPT" / "more.lua").exists()


async def test_connect_now_delivers_a_data_file_and_the_backfill_rebuilds_it(
        tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as plant:
        admin = Admin(plant.gateway)
        await wait_for(lambda: plant.gateway.acknowledged_end("1") is not None, 40,
                       "a record of the inverter")
        data_dir = plant.server_dir / "DATA"
        await admin.connect(1)
        await wait_for(lambda: any(data_dir.glob(f"{UID}_*.csv.gz")), 30, "a DATA file")
        with pytest.raises(CommandError, match=r"^connect: server 2 is not configured$"):
            await admin.connect(2)
        await wait_for(lambda: plant.gateway.schedulers[1].last_result is not None, 30,
                       "the session's end")
        now = plant.gateway.clock.wall_ns()
        name, spooled = await admin.backfill_zip(1, now - 3600 * 10**9, now + 60 * 10**9)
        assert name.startswith(f"{UID}_server1_")
        with spooled:
            # Spooled in the data folder, already unlinked: nothing is left behind.
            assert not any(p.name.startswith("export-") for p in plant.gateway.data_dir.iterdir())
            files = _names(spooled.read())
        delivered = {p.name: p.read_bytes() for p in data_dir.glob(f"{UID}_*.csv.gz")}
        rebuilt = {n.removeprefix("DATA/"): b for n, b in files.items() if n.startswith("DATA/")}
        assert delivered and set(delivered) <= set(rebuilt)
        for file_name, body in delivered.items():
            assert rebuilt[file_name] == body
        with pytest.raises(AdminError) as backwards:
            await admin.backfill_zip(1, now, now - 1)
        assert backwards.value.field == "to"
        with pytest.raises(AdminError) as unknown:
            await admin.backfill_zip(2, now - 10**9, now)
        assert unknown.value.field == "server"
        log_name, spooled = await admin.log_text(now - 3600 * 10**9, now + 60 * 10**9)
        with spooled:
            assert log_name.startswith(f"{UID}_LOG_")
            assert b" INFO system: sunpm started." in spooled.read()
        with pytest.raises(AdminError) as too_long:
            await admin.log_text(now - 32 * 86_400 * 10**9, now)
        assert too_long.value.field == "to"


async def test_an_update_goes_through_the_command_and_an_upload_needs_the_install_command(
        tmp_path: Path) -> None:
    async with running_gateway(tmp_path, inverters=0) as plant:
        with pytest.raises(AdminError, match=r"SYSTEM_UpdateCommand is not set") as refused:
            await Admin(plant.gateway).update(("wgapp_2.0.spm", io.BytesIO(b"package")))
        assert refused.value.field == "package"
        assert not (plant.gateway.data_dir / "update" / "wgapp_2.0.spm").exists()
        with pytest.raises(CommandError, match=r"^updateFirmware: SYSTEM_UpdateCommand is not set"):
            await Admin(plant.gateway).update(url="http://127.0.0.1:9/p.spm", md5="0" * 32)


async def test_reboot_restarts_the_service_not_the_host(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, inverters=0) as plant:
        await Admin(plant.gateway).reboot()
        await wait_for(plant.task.done, 20, "clean stop")
        assert plant.gateway.restart_requested and not plant.gateway.factory_requested


async def test_a_factory_reset_needs_the_uid_then_wipes_configuration_and_store(
        tmp_path: Path) -> None:
    extra = {"SCRIPT/a.lua": b"x = 1\n", f"CONFIG/{UID}_scl.ini": b"SCRIPT_File[0]=a.lua\n"}
    async with running_gateway(tmp_path, extra_files=extra) as plant:
        admin = Admin(plant.gateway)
        with pytest.raises(AdminError) as wrong:
            await admin.factory_reset("WRONG")
        assert wrong.value.field == "confirm"
        with pytest.raises(CommandError, match="factory: confirm must be true"):
            await admin.command("factory", {"confirm": "yes"})
        assert not plant.task.done()
        await admin.factory_reset(UID)
        await wait_for(plant.task.done, 20, "stop for the reset")
    site = load_site(plant.config_dir)
    assert [d.index for d in site.daq.devices] == ["IO"] and site.scripts.scripts == ()
    assert not (plant.config_dir / "SCRIPT" / "a.lua").exists()
    assert not (tmp_path / "data" / "store").exists()
    assert plant.gateway.restart_requested


async def test_a_broken_script_list_on_disk_rejects_an_upload(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, inverters=0) as plant:
        scl = plant.config_dir / "CONFIG" / f"{UID}_scl.ini"
        scl.write_bytes(b"SCRIPT_File[0]=a.lua\nSCRIPT_File[0]=b.lua\n")
        with pytest.raises(ChangeRejected):
            await Admin(plant.gateway).upload_script("c.lua", b"x = 1\n")
        assert not (plant.config_dir / "SCRIPT" / "c.lua").exists()


async def test_a_script_that_does_not_load_shows_why_in_its_own_log(tmp_path: Path) -> None:
    extra = {"SCRIPT/syn.lua": b'header = {name = "syn"}\nfunction f(\n',
             f"CONFIG/{UID}_scl.ini": b"SCRIPT_File[0]=syn.lua\n"}
    async with running_gateway(tmp_path, inverters=0, extra_files=extra) as plant:
        admin = Admin(plant.gateway)
        await wait_for(lambda: [s.last_error for s in admin.scripts()] != [""], 30,
                       "the load failure")

        async def logged() -> bool:
            return bool(await admin.script_log("syn"))

        await wait_until(logged, 20, what="the script's log", every=0.2)
        (line,) = await admin.script_log("syn")
        assert line.endswith(" ERROR script:syn: syn.lua:3: syntax: <name> or '...' expected "
                             "near <eof>; not loaded")


async def test_a_disable_lasts_across_configuration_reloads(tmp_path: Path) -> None:
    """docs/behaviour.md §9.1 step 4: a disable lasts until the next restart of the service; a
    configuration saved meanwhile (which restarts the scripts) does not start it again."""
    extra = {"SCRIPT/a.lua": b'header = {name = "a"}\nfunction ping() return 1 end\n',
             f"CONFIG/{UID}_scl.ini": b"SCRIPT_File[0]=a.lua\n"}
    async with running_gateway(tmp_path, inverters=0, extra_files=extra) as plant:
        gateway = plant.gateway
        admin = Admin(gateway)
        await wait_for(lambda: [s.enabled for s in admin.scripts()] == [True], 30, "a running")

        async def reload(level: str) -> None:
            await reconfigure(plant, {"LOG_Level": level})
            await asyncio.sleep(1)          # the scripts plug-in of the new configuration

        await admin.disable_script("a")
        await reload("debug")
        assert [(s.file, s.enabled) for s in admin.scripts()] == [("a.lua", False)]
        assert (await admin.enable_script("a.lua")).enabled
        await reload("info")
        await wait_for(lambda: [s.enabled for s in admin.scripts()] == [True], 30,
                       "a running again after the reload")


async def test_an_update_command_that_cannot_be_split_refuses_the_update_before_any_download(
        tmp_path: Path) -> None:
    """Answered OK and then never installed (the split failing in the install's task) was the
    alternative: the sender must learn it at once."""
    async with running_gateway(tmp_path, inverters=0) as plant:
        site = plant.gateway.site
        assert site is not None
        plant.gateway.site = dataclasses.replace(site, settings=dataclasses.replace(
            site.settings, system_update_command="sh -c 'install"))
        with pytest.raises(AdminError, match=r"cannot be split into words") as refused:
            await Admin(plant.gateway).update(("wgapp_2.0.spm", io.BytesIO(b"package")))
        assert refused.value.field == "package"
        assert not (plant.gateway.data_dir / "update" / "wgapp_2.0.spm").exists()
        with pytest.raises(CommandError, match=r"^updateFirmware: SYSTEM_UpdateCommand cannot "
                                               r"be split into words \(No closing quotation\)"):
            await Admin(plant.gateway).update(url="http://127.0.0.1:9/p.spm", md5="0" * 32)


async def test_a_start_removes_what_a_crash_left_in_the_staging_folder(tmp_path: Path) -> None:
    """kill -9 during a download leaves its `.part` (up to 256 MiB), during an install the
    package: gone at the next start, the /BIN bookkeeping kept."""
    folder = tmp_path / "data" / "update"
    folder.mkdir(parents=True)
    for name in (".wgapp_2.0.spm.part", ".package.spm.k3j9.part", "wgapp_2.0.spm",
                 "tried.json"):
        (folder / name).write_bytes(b"x")
    async with running_gateway(tmp_path, inverters=0):
        assert sorted(p.name for p in folder.iterdir()) == ["tried.json"]
