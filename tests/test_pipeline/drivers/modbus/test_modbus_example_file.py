"""The SunSpec example definition of docs/formats.md §8.5, parsed, planned and read end to end."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from config import parse_definition
from config.model import DefinitionFile, Device, Quality
from pipeline.drivers._base import DeviceError, Reading
from pipeline.drivers.modbus.planner import plan_reads, polled_variables
from pipeline.drivers.modbus.simulator import SimulatedDevice, TcpSimulator
from pipeline.drivers.modbus.tcp import ModbusTcpDriver

EXAMPLE = Path(__file__).parent / "data" / \
    "WPM00BDE4_SunSpec_inverter_SMA_Solar_Inverter_9301_modbusTCP.csv"


@pytest.fixture(scope="module")
def sma() -> DefinitionFile:
    return parse_definition(EXAMPLE.read_bytes(), EXAMPLE.name).value


def test_polls_of_the_example_need_two_reads_or_one_across_the_model_header(
        sma: DefinitionFile) -> None:
    # Actions 4 run from 40072 to 40147 except model 123's two header registers (action 1).
    assert [(r.address, r.count) for r in plan_reads(sma).requests] == \
        [(40072, 50), (40124, 24)]
    assert [(r.address, r.count) for r in plan_reads(sma, max_gap=2).requests] == \
        [(40072, 76)]
    # Parameters: the common model and headers, plus the scale factors the polls also read.
    parameters = plan_reads(sma, variables=polled_variables(sma, parameters=True))
    assert [(r.address, r.count) for r in parameters.requests] == \
        [(40002, 67), (40070, 2), (40076, 1), (40083, 1), (40085, 1), (40087, 1), (40089, 1),
         (40091, 1), (40093, 1), (40096, 1), (40098, 1), (40100, 1), (40102, 1), (40107, 1),
         (40122, 2), (40145, 3)]


async def test_example_device_reads_exact_scaled_values_and_quality_6(sma: DefinitionFile) -> None:
    image = SimulatedDevice()
    image.set_words(40002, [1, 66])
    name = b"SMA".ljust(32, b"\0")
    image.set_words(40004, [int.from_bytes(name[i:i + 2], "big") for i in range(0, 32, 2)])
    image.set_words(40072, [0xFFFF, 120, 121, 122, 0xFFFE])        # A not implemented, A_SF -2
    image.set_words(40084, [2305, 0xFFFF])                          # W 2305, W_SF -1
    image.set_words(40086, [5002, 0xFFFE])                          # Hz 50.02
    image.set_words(40094, [0x075B, 0xCD15, 0])                     # WH 123456789, WH_SF 0
    image.set_words(40127, [100])                                   # WMaxLimPct
    image.set_words(40145, [0x8000, 0xFFFD, 0])                     # WMaxLimPct_SF invalid
    async with TcpSimulator({126: image}) as sim:
        driver = ModbusTcpDriver()
        device = Device(line=2, index="3", interface=f"127.0.0.1:{sim.port}", name="SMA",
                        address=126, timeout_ms=500)
        try:
            readings = await driver.read(device, plan_reads(sma))
            params = await driver.read(device, plan_reads(
                sma, variables=polled_variables(sma, parameters=True)))
            with pytest.raises(DeviceError, match="scale factor 123_WMaxLimPct_SF not read yet"):
                await driver.write(device, sma.variable(60), Decimal(50))
            await driver.write(device, sma.variable(65), Decimal("0.95"))   # OutPFSet, sf -3
        finally:
            await driver.close()
    values = readings.values
    assert readings.requests == 2
    assert values[12] == Reading(None, Quality.NOT_IMPLEMENTED)
    assert values[13] == Reading(Decimal("1.20"), Quality.GOOD)
    assert values[24] == Reading(Decimal("230.5"), Quality.GOOD)
    assert values[26] == Reading(Decimal("50.02"), Quality.GOOD)
    assert values[34] == Reading(Decimal(123456789), Quality.GOOD)
    assert values[60] == Reading(None, Quality.NOT_IMPLEMENTED)
    assert params.values[3] == Reading("SMA", Quality.GOOD)
    assert params.values[1] == Reading(1, Quality.GOOD)
    assert image.holding[40132] == 950
