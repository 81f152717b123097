"""The poll's block decode gives what decoding each variable on its own gives (docs/formats.md
§8.3).

`poll_device` decodes the plain integers of a read with one precompiled `struct` unpack and hands
an all-good poll over as one column; every other variable goes through `codec.decode_variable`.
These properties compare a whole poll, answered by the simulator's register image, with the
per-variable decode of the same registers: same Indexes, same qualities, same value types and the
same exact text (a scaled Decimal's exponent included).
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

from _modbus_defs import definition, var
from hypothesis import given, settings
from hypothesis import strategies as st

from config.model import TYPE_REGISTERS, ByteOrder, DataType, Device, Quality, Variable
from pipeline.drivers._base import GoodReadings, RawValue, Reading
from pipeline.drivers.modbus import codec
from pipeline.drivers.modbus.planner import plan_reads
from pipeline.drivers.modbus.poller import PollState, poll_device
from pipeline.drivers.modbus.simulator import SimulatedDevice
from pipeline.drivers.modbus.trace import ModbusCounters

NUMERIC = [DataType.U16, DataType.I16, DataType.U32, DataType.I32, DataType.U64, DataType.I64,
           DataType.F32, DataType.F64]
OTHER = [DataType.U8, DataType.I8, DataType.BITS, DataType.STRING, DataType.IP, DataType.MAC]
DEVICE = Device(line=1, index="1", interface="127.0.0.1:502", name="inv", address=1)


class _AnsweringLink:
    """A link whose peer is the simulator's register image, answered in-process."""

    def __init__(self, device: SimulatedDevice) -> None:
        self.device = device

    async def transact(self, unit_id: int, pdu: bytes, timeout_ms: int, *,
                       urgent: bool = False, counters: ModbusCounters | None = None) -> bytes:
        reply: bytes = self.device.answer(pdu)
        return reply


def _width(data_type: DataType, string_bytes: int | None) -> int:
    if data_type is DataType.STRING:
        assert string_bytes is not None
        return (string_bytes + 1) // 2
    return int(TYPE_REGISTERS[data_type])


@st.composite
def polls(draw: st.DrawFn, *, plain_only: bool = False) -> tuple[list[Variable], dict[int, int],
                                                                 int]:
    """Variables at random (often overlapping) addresses, some scaled by SunSpec factors, the
    register image and `DAQ_ModbusMaxGap`."""
    types = NUMERIC[:6] if plain_only else NUMERIC + OTHER
    count = draw(st.integers(1, 30))
    variables: list[Variable] = []
    address = 0
    factors: list[int] = []
    for index in range(1, count + 1):
        address += draw(st.integers(0, 3)) if not plain_only else draw(st.integers(0, 2))
        data_type = draw(st.sampled_from(types))
        order = ByteOrder.BIG_ENDIAN if plain_only else draw(st.sampled_from(list(ByteOrder)))
        string_bytes = draw(st.integers(1, 8)) if data_type is DataType.STRING else None
        kw: dict[str, object] = {}
        if data_type is DataType.U8 or data_type is DataType.I8:
            kw["byte"] = draw(st.integers(0, 1))
        if data_type is DataType.BITS and draw(st.booleans()):
            kw["bit"], kw["nbits"] = draw(st.integers(0, 12)), draw(st.integers(1, 4))
        sf: int | None = None
        if not plain_only and factors and data_type in NUMERIC[:6] and draw(st.booleans()):
            sf = draw(st.sampled_from(factors))
        is_factor = data_type in (DataType.I16, DataType.U16) and draw(st.booleans())
        variables.append(var(index, draw(st.sampled_from([3, 4])) if not plain_only else 3,
                             address, data_type, order=order, string_bytes=string_bytes,
                             sf=sf, info4="" if sf is None else f"v{sf}", **kw))  # type: ignore[arg-type]
        if is_factor and sf is None:
            factors.append(index)
        if plain_only or draw(st.booleans()):
            address += _width(data_type, string_bytes)
    words = draw(st.lists(st.sampled_from([0, 1, 0x7FFF, 0x8000, 0xFFFF, 0x7F80, 0xFFC0, 10, 0xFFF6])
                          | st.integers(0, 0xFFFF), min_size=address + 8,
                          max_size=address + 8))
    image = dict(enumerate(words))
    return variables, image, draw(st.integers(0, 4))


def _per_variable(variables: list[Variable], image: dict[int, int]) -> dict[int, Reading]:
    """The reference: each variable decoded alone from its own registers."""
    out: dict[int, Reading] = {}
    for v in sorted(variables, key=lambda v: v.scale_factor_index is not None):
        assert v.modbus is not None
        words = [image.get(v.modbus.address + k, 0) for k in range(v.modbus.register_count)]
        factor = None if v.scale_factor_index is None else out[v.scale_factor_index]
        out[v.index] = codec.decode_variable(v, words, factor)
    return out


def _exact(reading: Reading) -> tuple[str, str, Quality]:
    value: RawValue | None = reading.value
    return type(value).__name__, repr(value), reading.quality


def _poll(variables: list[Variable], image: dict[int, int], max_gap: int,
          ) -> tuple[dict[int, Reading], GoodReadings | None, PollState]:
    device = SimulatedDevice()
    for kind in (3, 4):
        device.set_words(0, [image[a] for a in sorted(image)], kind=kind)
    plan = plan_reads(definition(*variables), max_gap)
    state = PollState()
    readings = asyncio.run(poll_device(_AnsweringLink(device), DEVICE, plan, state))
    column = readings.values if isinstance(readings.values, GoodReadings) else None
    return dict(readings.values), column, state


@settings(max_examples=300, deadline=None)
@given(polls())
def test_a_poll_decodes_as_each_variable_alone(case: tuple[list[Variable], dict[int, int], int]
                                               ) -> None:
    variables, image, max_gap = case
    got, _, state = _poll(variables, image, max_gap)
    want = _per_variable(variables, image)
    assert list(got) == [v.index for v in variables]
    assert {i: _exact(r) for i, r in got.items()} == {i: _exact(r) for i, r in want.items()}
    assert sum(state.counters.qualities.values()) == len(variables)
    for quality, n in state.counters.qualities.items():
        assert n == sum(1 for r in want.values() if r.quality is quality)


@settings(max_examples=200, deadline=None)
@given(polls(plain_only=True))
def test_plain_integers_come_as_one_column(case: tuple[list[Variable], dict[int, int], int]
                                           ) -> None:
    variables, image, max_gap = case
    got, column, _ = _poll(variables, image, max_gap)
    want = _per_variable(variables, image)
    overlapping = any(
        a.modbus is not None and b.modbus is not None and a.index != b.index
        and a.modbus.address < b.modbus.address + b.modbus.register_count
        and b.modbus.address < a.modbus.address + a.modbus.register_count
        for a in variables for b in variables)
    if not overlapping:
        assert column is not None
        assert len(column.raw) == len(variables)
    assert {i: _exact(r) for i, r in got.items()} == {i: _exact(r) for i, r in want.items()}


def test_a_scaled_u64_keeps_its_exact_decimal_text() -> None:
    sf = var(1, 3, 0, DataType.I16)
    energy = var(2, 3, 1, DataType.U64, sf=1, info4="v1")
    image = {0: 0xFFFE, 1: 0xFFFF, 2: 0xFFFF, 3: 0xFFFF, 4: 0xFFFE}
    got, column, _ = _poll([sf, energy], image, 0)
    assert column is None
    assert got[1] == Reading(-2, Quality.GOOD)
    assert got[2] == Reading(Decimal("184467440737095516.14"), Quality.GOOD)
    assert str(got[2].value) == "184467440737095516.14"


def test_a_not_implemented_pattern_stays_quality_6() -> None:
    sf = var(1, 3, 0, DataType.I16)
    power = var(2, 3, 1, DataType.I16, sf=1, info4="v1")
    got, _, _ = _poll([sf, power], {0: 0xFFFF, 1: 0x8000}, 0)
    assert got[2] == Reading(None, Quality.NOT_IMPLEMENTED)


def test_a_column_reads_as_a_mapping() -> None:
    variables = [var(1, 3, 0, DataType.U16), var(2, 3, 1, DataType.I32), var(3, 3, 5)]
    got, column, _ = _poll(variables, {0: 7, 1: 0xFFFF, 2: 0xFFFE, 3: 0, 4: 0, 5: 9}, 2)
    assert column is not None
    assert got == {1: Reading(7, Quality.GOOD), 2: Reading(-2, Quality.GOOD),
                   3: Reading(9, Quality.GOOD)}
    assert 2 in column and 4 not in column
    assert column.get(4) is None
    assert len(column) == 3
