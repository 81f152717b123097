"""Randomised fault soak: whatever the faults, a good reading is always the right device's value."""

from __future__ import annotations

import random

import pytest
from _modbus_defs import definition, var

from config.model import Device, Quality, SerialPort
from pipeline.drivers.modbus.planner import plan_reads
from pipeline.drivers.modbus.rtu import ModbusRtuDriver, RtuBus
from pipeline.drivers.modbus.simulator import RtuResponder, SimulatedDevice, TcpSimulator
from pipeline.drivers.modbus.tcp import ModbusTcpDriver

#: Long enough that the simulated bus keeps its promise on a busy box: the responder times a
#: late reply (1.5 x the timeout) from when its loop saw the request, which a descheduled
#: process sees late; past twice the timeout no RTU master can tell a late reply from the next
#: one (docs/behaviour.md §2.4 item 5), so the margin must cover those wake-up delays.
TIMEOUT_MS = 100


def fleet() -> dict[int, SimulatedDevice]:
    units = {u: SimulatedDevice() for u in (1, 2, 3)}
    for u, dev in units.items():
        dev.set_words(0, [u * 100 + a for a in range(20)])
    return units


def shake(rng: random.Random, dev: SimulatedDevice, *, rtu: bool) -> None:
    fault = rng.random()
    dev.delay_s = rng.choice([0.0, 0.0, 0.5, 1.2, 1.5]) * TIMEOUT_MS / 1000 if fault < 0.5 else 0
    dev.bad_crc = rtu and 0.5 <= fault < 0.6
    dev.garbage = bytes(rng.randrange(256) for _ in range(3)) if rtu and 0.6 <= fault < 0.7 \
        else b""
    dev.answer_unit = rng.choice([1, 2, 3]) if 0.7 <= fault < 0.75 else None


async def soak(driver: ModbusRtuDriver | ModbusTcpDriver, units: dict[int, SimulatedDevice],
               interface: str, *, seed: int, rtu: bool, faults: tuple[Quality, ...]) -> int:
    """150 reads of random units and registers, each after shaking that unit's faults; every
    good reading is that unit's own value, every other one a fault of `faults`. Returns how many
    were good."""
    rng = random.Random(seed)
    good = 0
    for _ in range(150):
        unit = rng.choice([1, 2, 3])
        address = rng.randrange(20)
        shake(rng, units[unit], rtu=rtu)
        device = Device(line=1, index=str(unit), interface=interface, name="d", address=unit,
                        timeout_ms=TIMEOUT_MS)
        reading = (await driver.read(device, plan_reads(definition(var(1, 3, address))))
                   ).values[1]
        if reading.quality is Quality.GOOD:
            good += 1
            assert reading.value == unit * 100 + address
        else:
            assert reading.quality in faults
    return good


@pytest.mark.slow
async def test_rtu_good_readings_are_never_another_units(pty_pair: tuple[int, str]) -> None:
    master, path = pty_pair
    units = fleet()
    responder = RtuResponder(master, units)
    responder.start()
    driver = ModbusRtuDriver()
    driver.attach(RtuBus(SerialPort(line=1, port="SERIAL1", speed=115200), path=path))
    try:
        good = await soak(driver, units, "SERIAL1", seed=5, rtu=True,
                          faults=(Quality.TIMEOUT, Quality.BAD_FRAME))
    finally:
        await driver.close()
        await responder.stop()
    assert good >= 25          # the run is not vacuous even on a loaded machine


@pytest.mark.slow
async def test_tcp_good_readings_are_never_another_units() -> None:
    units = fleet()
    async with TcpSimulator(units) as sim:
        driver = ModbusTcpDriver()
        try:
            good = await soak(driver, units, f"127.0.0.1:{sim.port}", seed=7, rtu=False,
                              faults=(Quality.TIMEOUT, Quality.DISCONNECTED))
        finally:
            await driver.close()
    assert good >= 25          # the run is not vacuous even on a loaded machine
