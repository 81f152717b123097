"""A configuration server 1 pushes into a running gateway (docs/behaviour.md §4.2 step 4): a
broken set is refused whole and reported, the gateway keeps running the configuration in force,
and the set, once fixed on the server, is applied once, as a change from the server (no local
change, no session of its own). Server 1 is a `dir` server in the test's folder.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import pytest
from _service_plant import UID, running_gateway, session_with_server_1, wait_for, write_site

from pipeline.service import in_force
from pipeline.service.config_watch import FolderDigest
from store.log import Log

pytestmark = pytest.mark.usefixtures("no_task_left_behind")

DAQ = f"CONFIG/{UID}_daq.csv"


def _lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


async def test_a_broken_set_from_server_1_is_refused_then_applied_once_fixed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    async with running_gateway(tmp_path, inverters=0) as plant:
        gateway = plant.gateway
        await session_with_server_1(plant)                      # the server now holds our configuration
        local, remote = plant.config_dir / DAQ, plant.server_dir / DAQ
        in_force_daq = local.read_bytes()
        assert remote.read_bytes() == in_force_daq
        running = gateway.site
        kept = tmp_path / "data" / in_force.FILE_NAME
        kept_before = kept.read_bytes()

        # A device at address 300 naming a definition file nobody has: refused whole.
        broken = in_force_daq + b"7;192.168.10.77;x7;300;600;1000;;1;;;missing.csv\n"
        remote.write_bytes(broken)
        for attempt in range(2):                   # re-checked at each session, until fixed
            caplog.clear()
            await session_with_server_1(plant)
            assert any(line.startswith(f"{UID}_daq.csv:") and "address" in line
                       for line in _lines(caplog, "file rejected")), caplog.text
            assert _lines(caplog, f"{UID}_daq.csv rejected; errors: 2; running configuration "
                                  "unchanged"), (attempt, caplog.text)
            assert gateway.site is running         # no reload
            assert local.read_bytes() == in_force_daq and kept.read_bytes() == kept_before
            assert remote.read_bytes() == broken   # the server's file is the operator's

        # Right after the fixed set is written, the folder is one the gateway knows: its
        # configuration watch must not take it for a local edit.
        seen: list[tuple[str, str]] = []
        real_put_config = Log.put_config

        def put_config(store: Log, files: Mapping[str, bytes]) -> str:
            if not seen and threading.current_thread() is not threading.main_thread():
                seen.append((FolderDigest().of(plant.config_dir, UID),
                             gateway._loaded_hash))
            return real_put_config(store, files)

        monkeypatch.setattr(Log, "put_config", put_config)
        fixed = in_force_daq + b"# fixed on the server\n"
        remote.write_bytes(fixed)
        caplog.clear()
        await session_with_server_1(plant)
        await wait_for(lambda: gateway.site is not running and gateway.site is not None
                       and gateway.site.loaded.get(DAQ) == fixed, 20, "the reload")
        assert seen and seen[0][0] == seen[0][1], seen
        # The session that applied the set ran to its end before the reload (it was cut).
        assert "session interrupted" not in caplog.text
        assert _lines(caplog, "server 1: session ended OK")
        assert len(_lines(caplog, f"{UID}_daq.csv applied; warnings: 0")) == 1
        assert local.read_bytes() == fixed
        applied_log = caplog.text

        # Applied once: the next session finds both sides agreeing, and nothing is applied,
        # uploaded or taken for a local change.
        caplog.clear()
        await session_with_server_1(plant)
        assert not _lines(caplog, "applied; warnings")
        assert not _lines(caplog, f"uploaded /{DAQ}")
        assert "Local configuration change" not in applied_log + caplog.text
        assert remote.read_bytes() == fixed


async def test_a_units_sci_ini_is_watched_and_mirrored_as_scl_ini(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A folder copied from a unit names its script list `_sci.ini` (docs/formats.md §7): its
    edits apply as any local edit, and server 1 gets it as `_scl.ini`."""
    write_site(tmp_path / "config", tmp_path / "server", [])
    scl = tmp_path / "config" / "CONFIG" / f"{UID}_scl.ini"
    sci = scl.with_name(f"{UID}_sci.ini")
    scl.rename(sci)
    (tmp_path / "config" / "SCRIPT").mkdir(exist_ok=True)
    (tmp_path / "config" / "SCRIPT" / "hello.lua").write_text("wd.log('hello')\n")
    async with running_gateway(tmp_path, inverters=0, site_written=True) as plant:
        gateway = plant.gateway
        assert gateway.site is not None and gateway.site.scripts.files == ()
        listed = b"SCRIPT_File[0]=hello.lua\n"
        sci.write_bytes(listed)
        gateway.config_written()
        await wait_for(lambda: gateway.site is not None
                       and gateway.site.scripts.files == ("hello.lua",)
                       and 1 in gateway.schedulers, 20, "the edit of _sci.ini applied")
        await session_with_server_1(plant)
        assert (plant.server_dir / "CONFIG" / f"{UID}_scl.ini").read_bytes() == listed
        assert "differs from the configuration in force" not in caplog.text


async def test_a_set_the_folder_cannot_take_leaves_the_session_delivering(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A configuration folder the gateway may not write (root's /etc/sunpm under the service's
    user, a full disk) failed every server-1 session before its uploads: no data delivered
    until someone fixed the folder. The set is now left unapplied, said so, and the session
    goes on; the next one tries again."""
    async with running_gateway(tmp_path, inverters=0) as plant:
        gateway = plant.gateway
        await session_with_server_1(plant)
        local, remote = plant.config_dir / DAQ, plant.server_dir / DAQ
        in_force_daq = local.read_bytes()
        running = gateway.site
        # Where the set is staged, something the gateway cannot write over (as root too).
        local.with_name(local.name + ".new").mkdir()
        remote.write_bytes(in_force_daq + b"# changed on the server\n")
        caplog.clear()
        await session_with_server_1(plant)
        assert _lines(caplog, f"{UID}_daq.csv not applied: {local}.new: Is a directory; "
                              "running configuration unchanged"), caplog.text
        assert _lines(caplog, "server 1: session ended OK"), caplog.text
        assert "session failed" not in caplog.text
        assert local.read_bytes() == in_force_daq and gateway.site is running
