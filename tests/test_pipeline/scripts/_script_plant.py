"""A small plant for the script tests: pymodbus devices on 127.0.0.1, the Modbus TCP driver, the
real poll loop and a real store, behind the real `PollerHost`.

    two inverters (units 1, 2 of one pymodbus server): W (tag acPower), WMaxLimPct (tag
      cmdPwrPercent, scale factor WMaxLimPct_SF = -1), WMaxLimPct_Ena (tag WMaxLimPct_Ena)
    a meter named Linky (unit 1 of a second server, so it can fall silent alone): SINSTI
Every device is polled each second. Alarms go to the store's journal, as the service's do.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

import config
from config.model import DefinitionFile, Device
from pipeline.clock import SystemClock
from pipeline.drivers.modbus.planner import plan_reads
from pipeline.drivers.modbus.tcp import ModbusTcpDriver
from pipeline.poller import PolledDevice, Poller, PollLink
from pipeline.recorder import Recorder
from pipeline.scripts import PollerHost, ScriptRunner
from store import Log, StoreOptions

INVERTER: Final = b"""modbusTCP;Inverter;ACME;Sim
Index;Info1;Info2;Info3;Info4;Name;Tag;CoefA;CoefB;Unit;Action
1;3;100;U16;;W;acPower;1;0;W;4
2;3;101;U16;WMaxLimPct_SF;WMaxLimPct;cmdPwrPercent;1;0;%;4
3;3;102;I16;;WMaxLimPct_SF;;1;0;;4
4;3;103;U16;;WMaxLimPct_Ena;WMaxLimPct_Ena;1;0;;4
"""
METER: Final = b"""modbusTCP;Meter;ACME;Linky
Index;Info1;Info2;Info3;Info4;Name;Tag;CoefA;CoefB;Unit;Action
1;3;200;U32;;SINSTI;;1;0;VA;4
"""
W, PCT, SF, ENA = 100, 101, 102, 103
SINSTI: Final = 200


@dataclass
class Plant:
    host: PollerHost
    poller: Poller
    store: Log
    inverters: ModbusTcpServer
    meter: ModbusTcpServer
    alarms: list[tuple[str, str, str | None]] = field(default_factory=list)

    async def register(self, unit: int, address: int, meter: bool = False) -> int:
        server = self.meter if meter else self.inverters
        return int((await server.async_getValues(unit, 3, address, 1))[0])

    async def set_register(self, unit: int, address: int, words: Sequence[int],
                           meter: bool = False) -> None:
        server = self.meter if meter else self.inverters
        await server.async_setValues(unit, 3, address, list(words))

    async def stop_meter(self) -> None:
        """The meter falls silent: its server goes away."""
        await self.meter.shutdown()  # type: ignore[no-untyped-call]

    async def set_export(self, va: int) -> None:
        await self.set_register(1, SINSTI, [va >> 16, va & 0xFFFF], meter=True)

    async def wait_register(self, unit: int, address: int, wanted: object,
                            timeout_s: float = 10.0) -> int:
        """Wait until the register holds `wanted` (a value, or a predicate)."""
        async with asyncio.timeout(timeout_s):
            while True:
                value = await self.register(unit, address)
                if (wanted(value) if callable(wanted) else value == wanted):
                    return value
                await asyncio.sleep(0.05)


def _device(unit: int, blocks: dict[int, list[int]]) -> SimDevice:
    return SimDevice(unit, simdata=[SimData(a, values=v, datatype=DataType.REGISTERS)
                                    for a, v in sorted(blocks.items())])


@contextlib.asynccontextmanager
async def _server(devices: list[SimDevice]) -> AsyncIterator[ModbusTcpServer]:
    server = ModbusTcpServer(devices, address=("127.0.0.1", 0))
    task = asyncio.create_task(server.serve_forever(), name="pymodbus-server")
    try:
        for _ in range(200):
            if server.transport is not None:
                break
            await asyncio.sleep(0.01)
        yield server
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def port_of(server: ModbusTcpServer) -> int:
    transport = server.transport
    assert isinstance(transport, asyncio.Server)
    return int(transport.sockets[0].getsockname()[1])


@contextlib.asynccontextmanager
async def running_plant(store_dir: Path, *, export_va: int = 5000) -> AsyncIterator[Plant]:
    inverter = config.parse_definition(INVERTER, "acme_sim.csv").value
    meter = config.parse_definition(METER, "acme_linky.csv").value
    inverter_image = {W: [3000, 1000, 0xFFFF, 0]}
    meter_image = {SINSTI: [export_va >> 16, export_va & 0xFFFF]}
    async with _server([_device(1, inverter_image), _device(2, {W: [2500, 1000, 0xFFFF, 0]})]) \
            as inverters, _server([_device(1, meter_image)]) as meter_server:
        devices = [
            Device(line=1, index="1", interface=f"127.0.0.1:{port_of(inverters)}", name="inv_a",
                   address=1, acq_period_s=1, timeout_ms=300, def_file="acme_sim.csv"),
            Device(line=2, index="2", interface=f"127.0.0.1:{port_of(inverters)}", name="inv_b",
                   address=2, acq_period_s=1, timeout_ms=300, def_file="acme_sim.csv"),
            Device(line=3, index="3", interface=f"127.0.0.1:{port_of(meter_server)}",
                   name="Linky", address=1, acq_period_s=1, timeout_ms=300,
                   def_file="acme_linky.csv"),
        ]
        definitions: dict[str, DefinitionFile] = {"acme_sim.csv": inverter,
                                                  "acme_linky.csv": meter}
        links: dict[str, list[PolledDevice]] = {}
        for device in devices:
            definition = definitions[device.def_file]
            links.setdefault(device.interface, []).append(PolledDevice(
                device=device, definition=definition, plan=plan_reads(definition)))
        driver = ModbusTcpDriver()
        store = await Log.open(store_dir, StoreOptions(flush_s=0.05))
        poller = Poller([PollLink(name=name, driver=driver, devices=tuple(polled))
                         for name, polled in links.items()],
                        recorder=Recorder(), record_sink=store.append_records,
                        daq_poll_period_s=1)
        alarms: list[tuple[str, str, str | None]] = []

        async def alarm(name: str, subject: str, text: str | None) -> None:
            alarms.append((name, subject, text))
            await store.append_journal("alarm", {"alarm": name, "subject": subject,
                                                 "text": text}, commit_now=True)

        host = PollerHost(devices=devices, definitions=definitions, poller=poller, store=store,
                          alarm=alarm, clock=SystemClock(), daq_poll_period_s=1)
        polling = asyncio.create_task(poller.run(), name="poller")
        try:
            yield Plant(host=host, poller=poller, store=store, inverters=inverters,
                        meter=meter_server, alarms=alarms)
        finally:
            poller.stop()
            try:
                async with asyncio.timeout(5):
                    await polling
            finally:
                if not polling.done():
                    polling.cancel()
                    await asyncio.gather(polling, return_exceptions=True)
                await driver.close()
                await store.close()


@contextlib.asynccontextmanager
async def bare_host(store_dir: Path) -> AsyncIterator[tuple[PollerHost, list[tuple[str, str,
                                                                                  str | None]]]]:
    """A host with no devices over a real store (RPC and persistence tests)."""
    store = await Log.open(store_dir, StoreOptions(flush_s=0.05))
    alarms: list[tuple[str, str, str | None]] = []

    async def alarm(name: str, subject: str, text: str | None) -> None:
        alarms.append((name, subject, text))

    poller = Poller([], recorder=Recorder(), record_sink=store.append_records)
    try:
        yield PollerHost(devices=[], definitions={}, poller=poller, store=store, alarm=alarm,
                         clock=SystemClock()), alarms
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def running(runner: ScriptRunner) -> AsyncIterator[None]:
    """Run a `ScriptRunner` as a task until the block ends; its scripts are enabled on entry."""
    task = asyncio.create_task(runner.run(), name="scripts")
    try:
        async with asyncio.timeout(10):
            started = asyncio.ensure_future(runner.started.wait())
            done, _ = await asyncio.wait({started, task}, return_when=asyncio.FIRST_COMPLETED)
            started.cancel()
            if task in done:
                task.result()
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
