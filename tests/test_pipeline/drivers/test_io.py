"""I/O channels: simulator values at known instants, S0 totals, a Modbus I/O module on loopback."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config import parse_definition
from config.model import DefinitionFile, Device, Quality
from pipeline.drivers._base import DeviceError, Reading, ReadPlan
from pipeline.drivers.io import (
    IoDriver,
    ModbusIoBackend,
    S0Counter,
    SimBackend,
    backend_module,
    sim_analog,
    sim_digital,
    sim_s0,
)
from pipeline.drivers.modbus.planner import plan_reads
from pipeline.drivers.modbus.simulator import SimulatedDevice, TcpSimulator
from pipeline.drivers.modbus.tcp import ModbusTcpDriver

T0 = 1577836800          # 2020-01-01T00:00:00Z, a multiple of 3600 and of 600

# docs/formats.md §8.5's I/O file, plus S0 on DI2 and AI2 in volts as written there.
IO_FILE = b"""io;WebdynSunPM;Webdyn;ioSunPM
1;1;1;1;;AI1;;1;0;mA;4
2;1;2;2;;AI2;;1;0;V;2
3;1;3;1;;AI3;;1;0;mA;0
4;1;4;1;;AI4;;1;0;mA;0
5;2;1;1;;DI1;;1;0;;8
6;2;2;2;;S0_1;;1;0;Wh;4
7;2;3;1;;DI3;;1;0;;0
8;3;1;;;Relay;;1;0;;4
"""
IO_DEVICE = Device(line=9, index="IO", interface="", name="io", address=None, parameters="sim")


def _definition(data: bytes, name: str) -> DefinitionFile:
    return parse_definition(data, name).value


def _plan(definition: DefinitionFile) -> ReadPlan:
    return ReadPlan(definition=definition, variables=definition.variables)


def test_sim_analog_follows_the_sine_of_the_spec() -> None:
    # k/4 phase: channel 1 at its peak on the hour, 3 at its trough; 4-20 mA: 12 ± 6.4.
    assert sim_analog(1, 1, T0) == pytest.approx(18.4)
    assert sim_analog(2, 1, T0) == pytest.approx(12.0)
    assert sim_analog(3, 1, T0) == pytest.approx(5.6)
    assert sim_analog(1, 2, T0) == pytest.approx(9.0)          # 0-10 V: 5 ± 4
    assert sim_analog(1, 1, T0 + 900) == pytest.approx(12.0)   # a quarter hour later


def test_sim_digital_is_on_in_the_first_half_of_its_cycle() -> None:
    assert [sim_digital(1, T0 + s) for s in (0, 299, 300, 599, 600)] == [1, 1, 0, 0, 1]
    assert [sim_digital(2, T0 + s) for s in (599, 600, 1199, 1200)] == [1, 0, 0, 1]


def test_sim_s0_counts_k_pulses_every_10_seconds() -> None:
    assert sim_s0(1, T0) == 0
    assert sim_s0(3, T0 + 100) == 30
    assert sim_s0(2, T0 + 86400) == 17280
    assert sim_s0(1, T0 + 19.9) == 1


async def test_io_driver_reads_the_spec_example_file_at_a_known_instant() -> None:
    definition = _definition(IO_FILE, "WPM00BDE4_IO.csv")
    driver = IoDriver(SimBackend(clock_s=lambda: T0 + 3600 * 24 + 150))
    readings = await driver.read(IO_DEVICE, _plan(definition))
    values = {index: r.value for index, r in readings.values.items()}
    # 150 s past the hour: AI1 (mA) = 12 + 6.4 sin(2π(150/3600 + 1/4)) = 12 + 6.4 cos(π/12).
    assert values[1] == pytest.approx(12 + 6.4 * math.cos(math.pi / 12))
    assert values[2] == pytest.approx(5 - 4 * math.sin(math.pi / 12))   # AI2 in V, phase 1/2
    assert values[5] == 1                                      # DI1 at 150 s of its 600 s cycle
    assert values[6] == (86400 + 150) * 2 // 10                # S0 on channel 2
    assert values[8] == 0
    assert all(r.quality is Quality.GOOD for r in readings.values.values())
    relay = definition.variable(8)
    await driver.write(IO_DEVICE, relay, 1)
    again = await driver.read(IO_DEVICE, _plan(definition))
    assert again.values[8].value == 1
    with pytest.raises(DeviceError, match="state must be 0 or 1, got 2"):
        await driver.set_relay(2)
    with pytest.raises(DeviceError, match="only the relay"):
        await driver.write(IO_DEVICE, definition.variable(1), 1)


def test_s0_counter_wraps_or_resets_by_the_90_10_rule() -> None:
    counter = S0Counter(register_range=65536)
    assert counter.update(65000) == 0          # first read: the base
    assert counter.update(65500) == 500
    assert counter.update(100) == 500 + 36 + 100   # wrapped: 65500 > 90 %, 100 < 10 %
    assert counter.update(40) == 636 + 40          # went down, not a wrap: the module reset
    restored = S0Counter(65536, module_value=40, total=676)
    assert restored.update(90) == 726              # pulses counted while the gateway was stopped


@given(st.lists(st.integers(0, 65535), min_size=1, max_size=50))
def test_s0_total_never_decreases(values: Sequence[int]) -> None:
    counter = S0Counter(register_range=65536)
    totals = [counter.update(v) for v in values]
    assert totals == sorted(totals)


@given(st.lists(st.integers(-32768, 32767), min_size=1, max_size=50))
def test_s0_total_of_a_signed_register_never_decreases(values: Sequence[int]) -> None:
    # A module counter declared I16/I32 reads negative past half its range: still pulses.
    counter = S0Counter(register_range=65536)
    totals = [counter.update(v) for v in values]
    assert totals == sorted(totals)


def test_s0_counter_of_a_signed_register_counts_across_its_sign() -> None:
    counter = S0Counter(register_range=65536)
    counter.update(32767)
    assert counter.update(-32768) == 1             # 0x7FFF -> 0x8000: one pulse
    assert counter.update(-1) == 32768             # ... -> 0xFFFF
    assert counter.update(2) == 32771              # wrapped through 0


def test_backend_parameter_forms() -> None:
    assert backend_module("") is None and backend_module("sim") is None
    assert backend_module("modbus:12") == "12"
    with pytest.raises(DeviceError, match="neither 'sim' nor 'modbus:<index>'"):
        backend_module("modbus")


MODULE_FILE = b"""modbusTCP;IO;Acme;IO-8
1;3;0;U16;;Analog 1;io:AI1;0.001;0;mA;0
2;4;10;U16;;Counter 1;io:CNT2;1;0;;0
3;2;0;;;Input 1;io:DI1;1;0;;0
4;1;0;;;Relay;io:RELAY;1;0;;0
5;3;5;U16;;Unrelated;;1;0;;4
"""


async def test_modbus_module_supplies_channels_and_relay_over_tcp() -> None:
    module = SimulatedDevice(holding={0: 12250}, input={10: 65530}, discrete={0: 1},
                             coils={0: 0})
    async with TcpSimulator({7: module}) as sim:
        module_device = Device(line=3, index="12", interface=f"127.0.0.1:{sim.port}",
                               name="io_module", address=7, timeout_ms=500)
        modbus = ModbusTcpDriver()
        backend = ModbusIoBackend(modbus, module_device,
                                  _definition(MODULE_FILE, "module.csv"),
                                  lambda d, vs: plan_reads(d, 0, variables=vs))
        driver = IoDriver(backend)
        io_file = IO_FILE.replace(b"6;2;2;2;;S0_1", b"6;2;2;2;;S0_2")
        definition = _definition(io_file, "WPM00BDE4_IO.csv")
        try:
            first = await driver.read(IO_DEVICE, _plan(definition))
            assert first.values[1].value == pytest.approx(12.25)   # 12250 × 0.001 mA
            assert first.values[5].value == 1
            assert first.values[6].value == 0                      # first counter read: base
            assert first.values[8].value == 0
            assert first.values[2].quality is Quality.NOT_IMPLEMENTED   # AI2 not mapped
            module.input[10] = 20                                   # wrapped past 65535
            module.discrete[0] = 0
            await driver.set_relay(1)
            assert module.coils[0] == 1
            second = await driver.read(IO_DEVICE, _plan(definition))
            assert second.values[6].value == 26
            assert second.values[5].value == 0
            assert second.values[8].value == 1
        finally:
            await modbus.close()


async def test_analog_channel_is_the_exact_scaled_value_rounded_once() -> None:
    # CoefA just below the midpoint between 1 and the next float64: rounded to 28 digits first
    # it would cross the midpoint and read 1.0000000000000002.
    coef = "1.00000000000000011102230246251565404236316680908203124999"
    module = SimulatedDevice(holding={0: 1}, input={10: 0}, discrete={0: 0}, coils={0: 0})
    async with TcpSimulator({7: module}) as sim:
        module_device = Device(line=3, index="12", interface=f"127.0.0.1:{sim.port}",
                               name="io_module", address=7, timeout_ms=500)
        modbus = ModbusTcpDriver()
        module_file = MODULE_FILE.replace(b"io:AI1;0.001;", f"io:AI1;{coef};".encode())
        backend = ModbusIoBackend(modbus, module_device, _definition(module_file, "module.csv"),
                                  lambda d, vs: plan_reads(d, 0, variables=vs))
        definition = _definition(IO_FILE, "WPM00BDE4_IO.csv")
        try:
            readings = await IoDriver(backend).read(IO_DEVICE, _plan(definition))
            assert readings.values[1].value == 1.0
        finally:
            await modbus.close()


async def test_modbus_module_gone_gives_quality_of_the_link() -> None:
    module_device = Device(line=3, index="12", interface="127.0.0.1:9", name="m", address=7,
                           timeout_ms=200)
    modbus = ModbusTcpDriver()
    backend = ModbusIoBackend(modbus, module_device, _definition(MODULE_FILE, "module.csv"),
                              lambda d, vs: plan_reads(d, 0, variables=vs))
    definition = _definition(IO_FILE, "WPM00BDE4_IO.csv")
    try:
        readings = await IoDriver(backend).read(IO_DEVICE, _plan(definition))
    finally:
        await modbus.close()
    assert readings.values[1].quality is Quality.DISCONNECTED


async def test_a_module_polled_as_its_own_device_and_through_io_at_once_keeps_both_plans() -> None:
    # The module is also a daq device of its own, polled with another variable set than the IO
    # device's tagged channels; both polls go through the driver's state of that one device, and
    # the first answered must not be decoded with the other plan's layout.
    module_file = b"""modbusTCP;IO;Acme;IO-2
1;3;0;U16;;Analog 1;io:AI1;0.001;0;mA;0
2;3;10;U16;;Counter 1;io:CNT1;1;0;;0
3;3;5;U16;;Unrelated;;1;0;;4
"""
    module = SimulatedDevice(holding={0: 12250, 5: 42, 10: 3})
    async with TcpSimulator({7: module}) as sim:
        module_device = Device(line=3, index="12", interface=f"127.0.0.1:{sim.port}",
                               name="io_module", address=7, timeout_ms=500)
        modbus = ModbusTcpDriver()
        module_definition = _definition(module_file, "module.csv")
        io = IoDriver(ModbusIoBackend(modbus, module_device, module_definition,
                                      lambda d, vs: plan_reads(d, 0, variables=vs)))
        own_plan = plan_reads(module_definition, 0)
        io_plan = _plan(_definition(IO_FILE, "WPM00BDE4_IO.csv"))
        try:
            for _ in range(3):
                own, through_io = await asyncio.gather(modbus.read(module_device, own_plan),
                                                       io.read(IO_DEVICE, io_plan))
                assert dict(own.values) == {3: Reading(42, Quality.GOOD)}
                assert through_io.values[1].value == pytest.approx(12.25)
        finally:
            await modbus.close()
