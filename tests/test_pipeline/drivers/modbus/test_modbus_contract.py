"""The driver contract (docs/behaviour.md §1) run against both Modbus drivers.

A new Modbus transport joins by adding one fixture parameter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal

import pytest
from _modbus_defs import definition, var

from config.model import DataType, Device, Quality, SerialPort
from pipeline.drivers._base import DeviceError, ProtocolDriver, Reading
from pipeline.drivers.modbus.planner import plan_reads
from pipeline.drivers.modbus.rtu import ModbusRtuDriver, RtuBus
from pipeline.drivers.modbus.simulator import RtuResponder, SimulatedDevice, TcpSimulator
from pipeline.drivers.modbus.tcp import ModbusTcpDriver


@dataclass
class Peer:
    driver: ProtocolDriver
    units: dict[int, SimulatedDevice]
    device: Callable[[int], Device]


@pytest.fixture(params=["modbusTCP", "modbusRTU"])
async def peer(request: pytest.FixtureRequest,
               pty_pair: tuple[int, str]) -> AsyncIterator[Peer]:
    units = {u: SimulatedDevice() for u in (1, 2)}
    for u, dev in units.items():
        dev.set_words(0, [u * 10 + a for a in range(10)])
    if request.param == "modbusTCP":
        async with TcpSimulator(units) as sim:
            tcp = ModbusTcpDriver()
            try:
                yield Peer(tcp, units, lambda u: Device(
                    line=1, index=str(u), interface=f"127.0.0.1:{sim.port}", name=f"d{u}",
                    address=u, timeout_ms=80))
            finally:
                await tcp.close()
        return
    master, path = pty_pair
    responder = RtuResponder(master, units)
    responder.start()
    rtu = ModbusRtuDriver()
    rtu.attach(RtuBus(SerialPort(line=1, port="SERIAL1", speed=115200), path=path))
    try:
        yield Peer(rtu, units, lambda u: Device(line=1, index=str(u), interface="SERIAL1",
                                                name=f"d{u}", address=u, timeout_ms=80))
    finally:
        await rtu.close()
        await responder.stop()


async def test_read_gives_a_raw_value_per_variable(peer: Peer) -> None:
    d = definition(var(1, 3, 0), var(2, 3, 1, DataType.U32), var(3, 3, 4, sf=4),
                   var(4, 3, 3, DataType.I16))
    peer.units[2].set_words(3, [0xFFFF])
    readings = await peer.driver.read(peer.device(2), plan_reads(d))
    assert readings.device == "2" and readings.requests == 1 and readings.ts_ns > 0
    assert dict(readings.values) == {1: Reading(20, Quality.GOOD),
                                     2: Reading(21 << 16 | 22, Quality.GOOD),
                                     3: Reading(Decimal("2.4"), Quality.GOOD),
                                     4: Reading(-1, Quality.GOOD)}


async def test_device_faults_are_quality_codes_never_exceptions(peer: Peer) -> None:
    d = definition(var(1, 3, 0))
    silent = await peer.driver.read(peer.device(7), plan_reads(d))
    peer.units[1].exception = 4
    failing = await peer.driver.read(peer.device(1), plan_reads(d))
    assert silent.values[1] == Reading(None, Quality.TIMEOUT)
    assert failing.values[1] == Reading(None, Quality.EXCEPTION)


async def test_merged_read_refused_for_a_hole_falls_back_per_variable(peer: Peer) -> None:
    peer.units[1].strict_holes = True
    del peer.units[1].holding[3]
    plan = plan_reads(definition(var(1, 3, 2), var(2, 3, 4)), max_gap=1)
    first = await peer.driver.read(peer.device(1), plan)
    again = await peer.driver.read(peer.device(1), plan)
    assert {i: r.value for i, r in first.values.items()} == {1: 12, 2: 14}
    assert (first.requests, again.requests) == (3, 2)


async def test_write_is_read_back_and_refusals_raise_device_error(peer: Peer) -> None:
    d = definition(var(1, 3, 8, DataType.F32), var(2, 4, 0))
    await peer.driver.write(peer.device(2), d.variable(1), 1.1)
    assert (await peer.driver.read(peer.device(2), plan_reads(d))).values[1] == \
        Reading(1.1, Quality.GOOD)
    with pytest.raises(DeviceError, match="input registers are read-only"):
        await peer.driver.write(peer.device(2), d.variable(2), 1)
