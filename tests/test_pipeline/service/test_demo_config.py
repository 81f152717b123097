"""The demo's configuration across starts: what a run changes is rewritten, the user's edits stay.

A user who edits the demo's config.ini (a web port free on this host, a log level), adds a device
or changes a schedule, then runs `sunpm run` again, finds the edits in force; only the data
folder's paths, the inverters' ports, the meter's pty and the broker's port follow the new run.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from config import load_site
from config.model import ServerType
from pipeline.service import demo
from pipeline.service.demo import UID, write_config
from pipeline.service.maintenance import factory_wipe


def _write(root: Path, ports: list[int], tic: str, mqtt: int | None) -> None:
    write_config(root / "config", root / "server", root / "store", ports, tic, mqtt)


def test_a_second_start_keeps_the_users_edits_and_moves_what_the_run_changes(
        tmp_path: Path) -> None:
    _write(tmp_path, [41001, 41002, 41003], "/dev/pts/7", 50001)
    config = tmp_path / "config" / "CONFIG"
    ini = config / f"{UID}_config.ini"
    ini.write_bytes(ini.read_bytes() + b"WEB_Port=18437\nLOG_Level=debug\n")
    daq = config / f"{UID}_daq.csv"
    daq.write_bytes(daq.read_bytes()
                    + b"7;127.0.0.1:5020;meter_7;3;60;1000;;1;Meter;M;demo_inverter.csv\n")
    var = config / f"{UID}_var.ini"
    var.write_bytes(b"SCHEDULE_Params[0]=1|everyday|00:00:00|5|288\n")

    _write(tmp_path, [42001, 42002, 42003], "/dev/pts/9", 50002)

    site = load_site(tmp_path / "config")
    settings = site.settings
    assert settings.web_port == 18437
    assert ini.read_text().count("WEB_Port=") == 1
    assert "LOG_Level=debug" in ini.read_text()
    assert settings.tic_port == "/dev/pts/9"
    assert "MQTT2_Port=50002" in ini.read_text()
    interfaces = {d.index: d.interface for d in site.daq.devices}
    assert interfaces == {"IO": "", "TIC1": "", "1": "127.0.0.1:42001", "2": "127.0.0.1:42002",
                          "3": "127.0.0.1:42003", "7": "127.0.0.1:5020"}
    assert var.read_bytes() == b"SCHEDULE_Params[0]=1|everyday|00:00:00|5|288\n"


def test_without_a_broker_server_2_on_the_demo_broker_is_switched_off(tmp_path: Path) -> None:
    _write(tmp_path, [41001, 41002, 41003], "/dev/pts/7", 50001)
    _write(tmp_path, [41001, 41002, 41003], "/dev/pts/7", None)
    ini = (tmp_path / "config" / "CONFIG" / f"{UID}_config.ini").read_text()
    assert "SERVER2_Type=none" in ini


def test_a_config_ini_that_does_not_load_is_replaced_by_the_demos(tmp_path: Path) -> None:
    _write(tmp_path, [41001, 41002, 41003], "/dev/pts/7", 50001)
    ini = tmp_path / "config" / "CONFIG" / f"{UID}_config.ini"
    ini.write_bytes(b"not a key line\n")
    _write(tmp_path, [41001, 41002, 41003], "/dev/pts/7", 50001)
    assert load_site(tmp_path / "config").settings.tic_port == "/dev/pts/7"


def test_the_demo_meter_is_read_at_its_speed_from_the_start(tmp_path: Path) -> None:
    # Its frames are historic (1200 Bd); detection would spend 5 s at 9600 first, and the files
    # of the first session, a few seconds after the start, would show the meter's row empty.
    _write(tmp_path, [41001, 41002, 41003], "/dev/pts/7", 50001)
    assert load_site(tmp_path / "config").daq.device("TIC1").parameters == "1200"


async def test_a_first_start_cut_after_its_configuration_is_still_the_demos(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A first start killed (or the power cut) once the demo's configuration was written: the
    folder must still be the demo's, else every later `sunpm run` took `config/` for a site of
    the user's and polled inverters and a meter nobody simulated any more."""

    def written_then_cut(config_dir: Path, *args: Any, **kwargs: Any) -> None:
        write_config(config_dir, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "write_config", written_then_cut)
    with pytest.raises(KeyboardInterrupt):
        await demo.run_demo(tmp_path / "data", asyncio.Event())
    assert (tmp_path / "data" / "config" / "CONFIG" / f"{UID}_config.ini").is_file()
    assert demo.is_demo(tmp_path / "data")


def test_a_factory_reset_of_the_demo_brings_the_demo_back(tmp_path: Path) -> None:
    """`factory` (the command, the web page) on the demo: its restart finds the demo's own
    configuration again, not the blank default one (no server, no inverter) that every later
    start then kept as the user's, while announcing files every minute."""
    _write(tmp_path, [41001, 41002, 41003], "/dev/pts/7", 50001)
    (tmp_path / "demo.json").write_text("{}")
    ini = tmp_path / "config" / "CONFIG" / f"{UID}_config.ini"
    ini.write_bytes(ini.read_bytes() + b"LOG_Level=debug\n")

    factory_wipe(tmp_path / "config", tmp_path, tmp_path / "store", UID)
    _write(tmp_path, [42001, 42002, 42003], "/dev/pts/9", 50002)     # the restart's start

    site = load_site(tmp_path / "config")
    assert site.settings.servers[0].type == ServerType.DIR
    assert [d.index for d in site.daq.devices] == ["IO", "TIC1", "1", "2", "3"]
    assert "LOG_Level=debug" not in ini.read_text()     # a reset forgets the edits


def test_a_factory_reset_elsewhere_writes_the_default_configuration(tmp_path: Path) -> None:
    _write(tmp_path, [41001, 41002, 41003], "/dev/pts/7", 50001)
    factory_wipe(tmp_path / "config", tmp_path, tmp_path / "store", UID)
    assert load_site(tmp_path / "config").settings.servers[0].type == ServerType.NONE


async def test_a_new_store_does_not_take_an_earlier_runs_copies_for_server_1s_change(
        tmp_path: Path) -> None:
    """After `factory` (or the store deleted) the demo's server folder still holds the CONFIG
    files an earlier run uploaded, with that run's ports; with no sync memory left they were
    applied as server 1's change, and the demo polled inverters that no longer listened."""
    data = tmp_path / "data"
    stale = data / "server" / "CONFIG" / f"{UID}_config.ini"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"SERVER_Type=dir\nDIR_Path=/elsewhere\nMQTT2_Port=1\n")
    (data / "demo.json").parent.mkdir(parents=True, exist_ok=True)
    (data / "demo.json").write_text("{}")
    stop = asyncio.Event()
    stop.set()
    await demo.run_demo(data, stop, web_port=0)
    assert not stale.exists() or b"DIR_Path=/elsewhere" not in stale.read_bytes()
