"""Discovery inside the running gateway (docs/behaviour.md §3, §7.2): the `discoverDevices`
command, and whatever else asks the service (the web UI).

One discovery at a time: `DiscoveryRunner.run` refuses a second with `discoverDevices: a discovery
is already running` while one goes on, whoever started either. SunSpec sweeps read through the
plant's own links (its TCP connection of `ip:port`, the RTU bus of `SERIAL<k>`), so discovery
requests queue with the polls; a target nobody polls gets its own connection for the run.
Devices not yet configured are added to daq.csv with their generated definition files in `DEF`;
the configuration watch then applies the change as a local one (polling starts on them).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

from config import Site, render_daq
from config.model import Daq
from pipeline.drivers._base import DiscoveryParams, RegisterReader
from pipeline.drivers.discovery import DiscoveryRefused, discover_devices
from pipeline.drivers.modbus.rtu import ModbusRtuDriver, RtuBus
from pipeline.drivers.modbus.tcp import ModbusTcpDriver, TcpConnection
from pipeline.drivers.sunspec import GeneratedDefinition, SunSpecDevice, write_definition
from pipeline.drivers.sunspec.importing import import_devices, is_configured
from pipeline.drivers.tic_discovery import definition_name, definition_text, detect_tic, tic_device
from pipeline.service.wiring import Plant
from store.fsio import write_file_durably

log = logging.getLogger("sunpm.discovery")

ALREADY_RUNNING = "discoverDevices: a discovery is already running"


class DiscoveryRunner:
    """The gateway's discovery lock and runs; `running` says whether one goes on."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    @property
    def running(self) -> bool:
        return self._lock.locked()

    async def run(self, params: DiscoveryParams, site: Site, plant: Plant | None,
                  config_dir: Path, *, progress_log: Callable[[str], None] | None = None) -> int:
        """Devices found (docs/formats.md §12.3); raises `DiscoveryRefused` with §3.1's text."""
        if self._lock.locked():
            raise DiscoveryRefused(ALREADY_RUNNING)
        async with self._lock:
            say = progress_log or (lambda line: log.info("%s", line))
            if params.protocol.lower() == "tic":
                return await self._tic(site, config_dir, say)
            if params.protocol.lower() != "sunspec":
                raise DiscoveryRefused(f"discoverDevices: protocol must be sunspec or tic, got "
                                       f"'{params.protocol}'")
            return await self._sunspec(params, site, plant, config_dir, say)

    async def _sunspec(self, params: DiscoveryParams, site: Site, plant: Plant | None,
                       config_dir: Path, say: Callable[[str], None]) -> int:
        own: list[TcpConnection | RtuBus] = []

        async def link_for(interface: str, target: str) -> RegisterReader:
            if target.startswith("SERIAL"):
                bus = _plant_bus(plant, target)
                if bus is None:
                    # A port nothing polls: the run opens it for itself.
                    bus = RtuBus(site.daq.port(interface))
                    bus.start()
                    own.append(bus)
                return bus
            host, _, port = target.rpartition(":")
            tcp = _plant_tcp(plant)
            if tcp is not None:
                return tcp.connection(host, int(port))
            connection = TcpConnection(host, int(port))
            own.append(connection)
            return connection

        try:
            found = await discover_devices(params, say, uid=site.uid, daq=site.daq,
                                           link_for=link_for)
        finally:
            for link in own:
                await link.close()
        fresh = [d for d in found if not is_configured(site.daq, d.target, d.unit_id)]
        if fresh:
            await asyncio.to_thread(_import, config_dir, site, fresh, params.timeout_ms)
        log.info("Discovery done: %d found, %d added", len(found), len(fresh))
        return len(found)

    async def _tic(self, site: Site, config_dir: Path, say: Callable[[str], None]) -> int:
        if any(d.index == "TIC1" for d in site.daq.devices):
            raise DiscoveryRefused("discoverDevices: TIC1 is already configured; delete it first")
        port = site.settings.tic_port
        if not port:
            raise DiscoveryRefused("discoverDevices: TIC_Port is not set")
        found = await detect_tic(port)
        if found is None:
            say("no TIC meter found")
            return 0
        name = write_definition(config_dir / "DEF", GeneratedDefinition(
            name=definition_name(site.uid, found.mode), text=definition_text(found))).name
        daq = site.daq
        row = tic_device(daq, found, name)
        await asyncio.to_thread(_write_daq, config_dir, site.uid, dataclasses.replace(
            daq, devices=daq.devices + (row,), blocks=daq.blocks | {"devices"}))
        say(f"{found.mode.value} meter {found.address} at {found.baud} baud -> {name}")
        return 1


def _plant_tcp(plant: Plant | None) -> ModbusTcpDriver | None:
    if plant is None:
        return None
    return next((d for d, _ in plant.drivers if isinstance(d, ModbusTcpDriver)), None)


def _plant_bus(plant: Plant | None, target: str) -> RtuBus | None:
    """The bus the plant polls `SERIAL<k>` through, if it polls that port."""
    if plant is None:
        return None
    for driver, settings in plant.drivers:
        if isinstance(driver, ModbusRtuDriver) and settings.serial is not None \
                and settings.serial.port.upper() == target:
            return driver.bus
    return None


def _import(config_dir: Path, site: Site, fresh: list[SunSpecDevice], timeout_ms: int) -> None:
    written: dict[tuple[str, int], str] = {}
    for device in fresh:
        written[device.target, device.unit_id] = write_definition(
            config_dir / "DEF", device.definition).name
    daq, added = import_devices(site.daq, fresh, timeout_ms=timeout_ms,
                                definition_names=written)
    if added:
        _write_daq(config_dir, site.uid, daq)


def _write_daq(config_dir: Path, uid: str, daq: Daq) -> None:
    write_file_durably(config_dir / "CONFIG" / f"{uid}_daq.csv", render_daq(daq))
