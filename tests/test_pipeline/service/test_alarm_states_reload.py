"""Alarm states across a configuration reload and a restart (docs/behaviour.md §8): an alarm
raised before either is neither raised again nor left without its end after it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import pty
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from _service_plant import UID, RunningPlant, reconfigure, running_gateway, wait_for, write_site

from pipeline.drivers import tic
from pipeline.drivers.modbus.simulator import TcpSimulator
from pipeline.drivers.tic import TicReader
from pipeline.service.demo import DemoInverter

TIC_DEF = b"tic;Meter;Enedis;Linky\n1;ADCO;;;;ADCO;;1;0;;1\n2;BASE;;;;BASE;;1;0;Wh;4\n"


@dataclasses.dataclass
class StateInverter(DemoInverter):
    """A demo inverter whose `St` (Index 16, action 8) is the test's."""

    state: int = 4

    def refresh(self, t_s: float) -> None:
        super().refresh(t_s)
        self.holding[40108] = self.state


def device_alarm_values(plant: RunningPlant) -> list[str]:
    store = plant.gateway.store
    assert store is not None
    table = store.journal(kinds=["alarm"]).sort_by("seq")
    return [body["value"] for body in map(json.loads, table.column("body").to_pylist())
            if body["source"] != "GATEWAY"]


def gateway_alarms(plant: RunningPlant) -> list[str]:
    store = plant.gateway.store
    assert store is not None
    table = store.journal(kinds=["alarm"]).sort_by("seq")
    return [body["alarm"] for body in map(json.loads, table.column("body").to_pylist())
            if "alarm" in body and body["alarm"] != "Power ON"]


@contextlib.contextmanager
def meter_link() -> Iterator[tuple[Path, str]]:
    """`TIC_Port` as a symlink to a pty's slave: removing the link unplugs the meter. The link
    is under /dev/ (a port must be, docs/formats.md §4), in a folder of its own in /dev/shm."""
    master, slave = pty.openpty()
    with tempfile.TemporaryDirectory(dir="/dev/shm") as folder:
        link = Path(folder) / "ttyTIC"
        link.symlink_to(os.ttyname(slave))
        try:
            yield link, os.ttyname(slave)
        finally:
            os.close(master)
            os.close(slave)


def write_tic_site(tmp_path: Path, port: Path) -> None:
    config = tmp_path / "config"
    write_site(config, tmp_path / "server", [], {f"DEF/{UID}_TIC.csv": TIC_DEF})
    daq = config / "CONFIG" / f"{UID}_daq.csv"
    daq.write_bytes(daq.read_bytes() + f"TIC1;;Linky;;10;;;1200;Meter;Linky;{UID}_TIC.csv\n"
                    .encode())
    ini = config / "CONFIG" / f"{UID}_config.ini"
    ini.write_bytes(ini.read_bytes() + f"TIC_Port={port}\n".encode())


async def _meter_unplugged(plant: RunningPlant, link: Path) -> TicReader:
    """The meter's port seen open, then gone: its loss raised; the reader that saw it."""
    reader = plant.gateway.plant.tic_reader if plant.gateway.plant else None
    assert reader is not None
    await wait_for(lambda: reader.present, 20, "the meter's port open")
    link.unlink()
    await wait_for(lambda: gateway_alarms(plant) == ["Loss of ICT accessory"], 20, "the loss")
    return reader


async def test_a_reload_while_the_meter_is_unplugged_keeps_its_loss_and_raises_its_return(
        tmp_path: Path) -> None:
    with meter_link() as (link, target):
        write_tic_site(tmp_path, link)
        async with running_gateway(tmp_path, inverters=0, site_written=True) as plant:
            reader = await _meter_unplugged(plant, link)
            await reconfigure(plant, {"LOG_Level": "debug"})

            def reloaded_reader() -> TicReader | None:
                current = plant.gateway.plant.tic_reader if plant.gateway.plant else None
                return current if current is not reader else None

            await wait_for(reloaded_reader, 20, "the reloaded configuration's reader")
            reloaded = reloaded_reader()
            assert reloaded is not None
            link.symlink_to(target)
            await wait_for(lambda: reloaded.present, 20, "the meter's port open again")
            await wait_for(lambda: len(gateway_alarms(plant)) >= 2, 20, "the return")
            assert gateway_alarms(plant) == ["Loss of ICT accessory", "Return ICT accessory"]


async def test_a_device_lost_before_a_reload_is_back_after_it_and_not_lost_again(
        tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as plant:
        daq = plant.config_dir / "CONFIG" / f"{UID}_daq.csv"
        # Recorded every second: 3 periods without a good read take 3 s, not 30.
        daq.write_text(daq.read_text().replace(";inverter_1;1;10;", ";inverter_1;1;1;"))
        await reconfigure(plant, {"ALARM_DeviceLost": "1"})
        inverter = plant.simulators[0].units.pop(1)         # it stops answering
        await wait_for(lambda: gateway_alarms(plant) == ["Device lost"], 30, "the loss")
        await reconfigure(plant, {"LOG_Level": "debug"})
        plant.simulators[0].units[1] = inverter
        await wait_for(lambda: len(gateway_alarms(plant)) >= 2, 30, "the device back")
        assert gateway_alarms(plant) == ["Device lost", "Device back"]


async def test_a_device_lost_before_a_restart_is_not_lost_again_and_is_back_after_it(
        tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as plant:
        port = plant.simulators[0].port
        daq = plant.config_dir / "CONFIG" / f"{UID}_daq.csv"
        daq.write_text(daq.read_text().replace(";inverter_1;1;10;", ";inverter_1;1;1;"))
        await reconfigure(plant, {"ALARM_DeviceLost": "1"})
        plant.simulators[0].units.pop(1)
        await wait_for(lambda: gateway_alarms(plant) == ["Device lost"], 30, "the loss")
    async with running_gateway(tmp_path, inverters=0, site_written=True) as plant:
        # Still silent for more than 3 recording periods: the loss stands, it is not raised
        # again (5 s of polls every second, nothing to wait for but their number).
        await asyncio.sleep(5)
        assert gateway_alarms(plant) == ["Device lost", "Power OFF"]
        async with TcpSimulator({1: DemoInverter(number=1)}, port=port):
            await wait_for(lambda: len(gateway_alarms(plant)) >= 3, 30, "the device back")
        assert gateway_alarms(plant) == ["Device lost", "Power OFF", "Device back"]


async def test_a_value_changed_across_a_reload_raises_its_alarm(tmp_path: Path) -> None:
    # docs/behaviour.md §8: the first value after start-up raises none; a reload is no start.
    async with running_gateway(tmp_path) as plant:
        simulator = plant.simulators[0]
        simulator.units[1] = StateInverter(number=1, state=7)
        poller = plant.gateway.poller
        assert poller is not None
        polls = poller.recorder.counters("1").polls
        await wait_for(lambda: poller.recorder.counters("1").polls >= polls + 2, 20,
                       "polls of St 7")
        inverter = simulator.units.pop(1)       # silent across the reload: no poll sees 5 before
        await reconfigure(plant, {"LOG_Level": "debug"})
        await wait_for(lambda: plant.gateway.poller is not poller, 20, "the new poll loop")
        inverter.state = 5
        simulator.units[1] = inverter
        await wait_for(lambda: device_alarm_values(plant), 20, "the change's alarm")
        assert device_alarm_values(plant)[0] == "5"


async def test_a_meter_lost_before_a_restart_is_not_lost_again_and_returns_after_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A reader missing this long after a start is lost (the start's Decision): 2 s, not 60.
    monkeypatch.setattr(tic, "MISSING_AT_START_S", 2)
    with meter_link() as (link, target):
        write_tic_site(tmp_path, link)
        async with running_gateway(tmp_path, inverters=0, site_written=True) as plant:
            await _meter_unplugged(plant, link)
        async with running_gateway(tmp_path, inverters=0, site_written=True) as plant:
            reader = plant.gateway.plant.tic_reader if plant.gateway.plant else None
            assert reader is not None and reader.lost
            # Past the start's 2 s, still missing: the loss stands, it is not raised again.
            await asyncio.sleep(4)
            assert gateway_alarms(plant) == ["Loss of ICT accessory", "Power OFF"]
            link.symlink_to(target)
            await wait_for(lambda: len(gateway_alarms(plant)) >= 3, 20, "the return")
            assert gateway_alarms(plant) == ["Loss of ICT accessory", "Power OFF",
                                             "Return ICT accessory"]
