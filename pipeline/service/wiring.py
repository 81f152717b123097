"""From a loaded `Site` to what the poll loop runs: drivers, links and read plans.

One Modbus TCP driver serves every TCP endpoint (it keeps one connection per `ip:port`); one
Modbus RTU driver per serial port with a `path`; the I/O device on the simulator backend or a
Modbus I/O module; `TIC1` on a `TicReader` of `TIC_Port`. Definitions are stored in the store
(content-addressed) so each record names the exact file it was decoded with.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from config import Site
from config.model import DefinitionFile, Device, DeviceKind, Variable
from pipeline.drivers._base import DeviceError, LinkSettings, ProtocolDriver, ReadPlan
from pipeline.drivers.io import ModbusIoBackend, SimBackend, backend_module
from pipeline.drivers.modbus.planner import plan_reads
from pipeline.drivers.modbus.trace import TraceHook
from pipeline.drivers.registry import DriverContext, new_driver, read_plans
from pipeline.drivers.tic import AccessoryListener, TicReader
from pipeline.poller import PolledDevice, PollLink, link_name
from store.log import Log

log = logging.getLogger("sunpm.system")


@dataclass(slots=True)
class Plant:
    """The links to poll and the drivers to open and close."""

    links: list[PollLink] = field(default_factory=list)
    #: Each driver with the settings it opens with.
    drivers: list[tuple[ProtocolDriver, LinkSettings]] = field(default_factory=list)
    tic_reader: TicReader | None = None
    #: daq index -> (device row, definition), for alarms and status.
    devices: dict[str, tuple[Device, DefinitionFile]] = field(default_factory=dict)

    async def open(self) -> None:
        for driver, settings in self.drivers:
            try:
                await driver.open(settings)
            except DeviceError as err:
                log.error("Driver did not open; its devices fail until it does. driver=%s "
                          "error=%s", driver.name, err)

    async def close(self) -> None:
        for driver, _ in self.drivers:
            try:
                await driver.close()
            except Exception as err:  # noqa: BLE001 - one driver's failure must not stop the rest
                log.warning("Driver close failed. driver=%s error=%s", driver.name, err)


def build_plant(site: Site, store: Log, *, on_accessory: AccessoryListener | None = None,
                trace: TraceHook | None = None) -> Plant:
    """Drivers and links of every polled device of `site` (devices on a port without driver,
    or a serial port without `path`, are logged once and left out)."""
    plant = Plant()
    context = DriverContext(trace=trace, tcp_inter_frame_ms=site.daq.tcp_inter_frame_ms)
    tcp = new_driver(DeviceKind.MODBUS_TCP, context)
    rtu: dict[str, ProtocolDriver] = {}
    unwired: set[str] = set()
    grouped: dict[str, list[PolledDevice]] = {}
    driver_of: dict[str, ProtocolDriver] = {}
    io_devices: list[Device] = []
    for device in site.polled_devices:
        definition = site.definition_of(device)
        assert definition is not None
        try:
            store.put_definition(definition.file_name,
                                 site.files()[f"DEF/{definition.file_name}"])
        except OSError as err:
            # A full disk must not stop the acquisition (docs/behaviour.md §6): the gateway
            # stores it again with the configuration's snapshot once there is room.
            log.error("%s: definition snapshot not stored (%s); stored once the store can write",
                      definition.file_name, err.strerror or err)
        kind = device.kind
        driver: ProtocolDriver
        if kind is DeviceKind.MODBUS_TCP:
            driver = tcp
        elif kind is DeviceKind.MODBUS_RTU:
            port = device.serial_port
            assert port is not None
            if not site.daq.port(port).path:
                if port not in unwired:
                    log.warning("%s has no path in daq.csv; its devices are not polled", port)
                    unwired.add(port)
                continue
            if port not in rtu:
                rtu[port] = new_driver(kind, context)
            driver = rtu[port]
        elif kind is DeviceKind.IO:
            io_devices.append(device)
            continue
        else:
            if not site.settings.tic_port:
                log.warning("TIC1 is configured but TIC_Port is empty; it is not polled")
                continue
            # TIC1's `parameters` fixes the mode (docs/behaviour.md §2.9 step 4); empty: detected.
            baud = int(device.parameters) if device.parameters in ("1200", "9600") else None
            plant.tic_reader = TicReader(site.settings.tic_port, baud=baud,
                                         on_accessory=on_accessory, trace=trace)
            driver = new_driver(kind, replace(context, tic_reader=plant.tic_reader))
        _add(site, plant, grouped, driver_of, device, definition, driver)
    for device in io_devices:
        definition = site.definition_of(device)
        assert definition is not None
        module = backend_module(device.parameters)
        backend: SimBackend | ModbusIoBackend
        if module is None:
            backend = SimBackend()
        else:
            row = site.daq.device(module)
            module_def = site.definition_of(row)
            assert module_def is not None
            module_driver = driver_of.get(link_name(row))
            if module_driver is None:
                log.warning("IO: its module %s is on %s, which has no path; not polled",
                            row.name, row.interface)
                continue
            backend = ModbusIoBackend(module_driver, row, module_def, _io_plan)
        _add(site, plant, grouped, driver_of, device, definition,
             new_driver(DeviceKind.IO, replace(context, io_backend=backend)))
    plant.links = [PollLink(name=name, driver=driver_of[name], devices=tuple(devices),
                            category=_category(devices[0].device))
                   for name, devices in grouped.items()]
    port_of = {id(driver): port for port, driver in rtu.items()}
    for driver in dict.fromkeys(driver_of.values()):
        port = port_of.get(id(driver))
        plant.drivers.append((driver, LinkSettings(serial=site.daq.port(port)) if port else
                              LinkSettings(tcp_inter_frame_ms=site.daq.tcp_inter_frame_ms)))
    return plant


def _io_plan(definition: DefinitionFile, variables: Sequence[Variable]) -> ReadPlan:
    return plan_reads(definition, 0, variables=list(variables))


def _add(site: Site, plant: Plant, grouped: dict[str, list[PolledDevice]],
         driver_of: dict[str, ProtocolDriver], device: Device, definition: DefinitionFile,
         driver: ProtocolDriver) -> None:
    plan, parameter_plan = read_plans(definition, site.settings.daq_modbus_max_gap)
    name = link_name(device)
    grouped.setdefault(name, []).append(PolledDevice(
        device=device, definition=definition, plan=plan, parameter_plan=parameter_plan))
    driver_of.setdefault(name, driver)
    plant.devices[device.index] = (device, definition)


def _category(device: Device) -> str:
    return {DeviceKind.IO: "io", DeviceKind.TIC: "tic"}.get(device.kind, "modbus")
