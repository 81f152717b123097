"""One poll or one write of one device over a link, the same for TCP and RTU.

A link (`tcp.TcpConnection`, `rtu.RtuBus`) moves one PDU and its answer; this module turns a read
plan into requests, answers into Readings (docs/behaviour.md §2.5, §2.6) and a write into a
request plus its read-back (§2.7). Device faults become quality codes, never exceptions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from typing import Protocol

from config.model import DataType, Device, Quality, RegisterKind, Variable
from pipeline.clock import SYSTEM_CLOCK, Clock
from pipeline.drivers._base import (
    DeviceError,
    GoodReadings,
    ModbusRequestError,
    RawValue,
    Reading,
    Readings,
    ReadPlan,
)
from pipeline.drivers.modbus import codec
from pipeline.drivers.modbus.frames import (
    check_read_reply,
    check_write_reply,
    read_reply_values,
    unpack_read_reply,
    write_coil_request,
    write_registers_request,
)
from pipeline.drivers.modbus.link import WriteReplaced
from pipeline.drivers.modbus.planner import ModbusPlan, ReadRequest, modbus_plan, split_read
from pipeline.drivers.modbus.trace import ModbusCounters

__all__ = ["ModbusLink", "PollState", "poll_device", "write_variable"]

log = logging.getLogger("sunpm.modbus")

#: Exceptions after which a merged read is split per variable (docs/behaviour.md §2.5).
_SPLIT_EXCEPTIONS = frozenset({2, 3})
#: A gateway's "no path to the unit" and "the unit did not respond": the unit is silent.
_GATEWAY_SILENT_UNIT = frozenset({0x0A, 0x0B})
_MAX_OTHER_PLANS = 8
_quality_of = itemgetter(1)


class ModbusLink(Protocol):
    """A TCP connection or an RTU bus: one request in flight, answers strictly matched."""

    async def transact(self, unit_id: int, pdu: bytes, timeout_ms: int, *,
                       urgent: bool = False, counters: ModbusCounters | None = None) -> bytes:
        """`counters`: the asking device's, where a late answer to this request counts."""


@dataclass(frozen=True, slots=True)
class _CompiledRead:
    """A read request with what its answer needs, built once per plan: the request PDU, the
    block decoder of its plain integers, and where its other variables sit in it."""

    request: ReadRequest
    pdu: bytes
    block: codec.BlockDecoder | None            # None for coils and discrete inputs
    rest: tuple[tuple[int, int], ...]           # (Index, offset) decoded one by one


@dataclass(slots=True)
class PollState:
    """What a driver remembers of a device between polls."""

    counters: ModbusCounters = field(default_factory=ModbusCounters)
    #: The plan the caches below were built for; compared by identity, so a new plan (the
    #: configuration changed) resets them without hashing a whole definition at every poll.
    plan: ModbusPlan | None = None
    #: The requests actually sent: the plan's, a refused merged read replaced by one read per
    #: variable (exception 0x02/0x03).
    requests: tuple[ReadRequest, ...] = ()
    reads: tuple[_CompiledRead, ...] = ()
    decoders: dict[int, codec.OffsetDecoder] = field(default_factory=dict)
    by_index: dict[int, Variable] = field(default_factory=dict)
    #: The block decoders alone give every variable, in the plan's order: a poll where every
    #: read was answered is their values as one column (`GoodReadings`).
    blocks_cover_plan: bool = False
    positions: dict[int, int] = field(default_factory=dict)     # Index -> row of that column
    #: Last good scale factor per Index, for writes (docs/behaviour.md §2.7).
    scale_factors: dict[int, int] = field(default_factory=dict)
    #: The link's connection count at this device's last poll (`Readings.reconnected`).
    link_generation: int = 0
    #: The caches of other plans polled on this device meanwhile, by plan identity: an I/O module
    #: also polled as a device of its own is read under two plans, and polls of the two overlap.
    other_plans: dict[int, PollState] = field(default_factory=dict)


def unit_of(device: Device) -> int:
    return device.address if device.address is not None else 1


async def _read(link: ModbusLink, unit: int, request: ReadRequest, timeout_ms: int,
                counters: ModbusCounters) -> list[int]:
    counters.requests += 1
    reply = await link.transact(unit, request.pdu, timeout_ms, counters=counters)
    return unpack_read_reply(request.pdu, reply)


def _compile(requests: Sequence[ReadRequest], by_index: Mapping[int, Variable]
             ) -> tuple[_CompiledRead, ...]:
    reads = []
    for request in requests:
        variables = [by_index[i] for i in request.indexes]
        block = None if request.kind.is_bit else codec.block_decoder(request.address, variables)
        rest = variables if block is None else block.rest
        reads.append(_CompiledRead(
            request=request, pdu=request.pdu, block=block,
            rest=tuple((v.index, v.modbus.address - request.address) for v in rest
                       if v.modbus is not None)))
    return tuple(reads)


def _set_requests(state: PollState, requests: tuple[ReadRequest, ...]) -> None:
    assert state.plan is not None
    state.requests = requests
    state.reads = _compile(requests, state.by_index)
    in_blocks = [i for read in state.reads if read.block is not None for i in read.block.indexes]
    state.blocks_cover_plan = in_blocks == [v.index for v in state.plan.variables]
    state.positions = {index: row for row, index in enumerate(in_blocks)}


def _state_of_plan(state: PollState, plan: ReadPlan) -> PollState:
    """`state`, or the one of its `other_plans` that caches `plan` (counters shared)."""
    if state.plan is None or state.plan is plan:
        return state
    own = state.other_plans.get(id(plan))
    if own is None or own.plan is not plan:
        if len(state.other_plans) >= _MAX_OTHER_PLANS:
            state.other_plans.clear()      # plans replaced many times over: start afresh
        own = state.other_plans[id(plan)] = PollState(counters=state.counters,
                                                      scale_factors=state.scale_factors)
    return own


def _prepare(plan: ReadPlan, state: PollState) -> None:
    if state.plan is plan:
        return
    state.plan = modbus_plan(plan)
    state.by_index = {v.index: v for v in plan.variables}
    state.decoders = {v.index: codec.offset_decoder(v.modbus) for v in plan.variables
                      if v.modbus is not None}
    _set_requests(state, state.plan.requests)


async def poll_device(link: ModbusLink, device: Device, plan: ReadPlan,
                      state: PollState, clock: Clock = SYSTEM_CLOCK) -> Readings:
    """Read every variable of `plan` from `device`; never raises for a device fault.

    Raises `DeviceError` for a plan the Modbus planner did not build (a wiring error)."""
    state = _state_of_plan(state, plan)
    _prepare(plan, state)
    unit = unit_of(device)
    timeout_ms = device.timeout_ms
    counters = state.counters
    #: Raw values the block decoders decoded, read by read.
    columns: list[tuple[int, ...]] = []
    blocks: list[codec.BlockDecoder] = []
    #: Index -> (the read's values, offset of the variable in them), for the others
    located: dict[int, tuple[list[int], int]] = {}
    failed: dict[int, Quality] = {}
    sent = 0
    answered_ns = 0             # when the poll's last answer arrived (docs/behaviour.md §2.1)
    pending = list(reversed(state.reads))
    split_now = False           # the column order below is the split plan's from now on
    heard = False               # the unit answered a read of this poll (an exception included)
    while pending:
        read = pending.pop()
        sent += 1
        counters.requests += 1
        try:
            reply = await link.transact(unit, read.pdu, timeout_ms, counters=counters)
            check_read_reply(read.pdu, reply)
        except ModbusRequestError as err:
            request = read.request
            silent = err.quality is Quality.TIMEOUT or err.exception_code in _GATEWAY_SILENT_UNIT
            if silent and not heard:
                # Silent from its first read: switched off or absent (a gateway in front says
                # so with 0x0A/0x0B, often after a serial timeout of its own). Its other reads
                # would each cost a timeout (on a bus, two: the late-reply wait comes first),
                # enough to overrun the link for every unit on it; they fail unsent, with the
                # first read's quality.
                for unsent in (read, *pending):
                    for index in unsent.request.indexes:
                        failed[index] = err.quality
                break
            heard = heard or err.quality is Quality.EXCEPTION
            if err.exception_code in _SPLIT_EXCEPTIONS and len(request.indexes) > 1:
                split_now = True
                _set_requests(state, split_read(plan, state.requests, request))
                log.info("Merged read refused; reading its variables one by one from now on. "
                         "device=%s function=%d address=%d count=%d exception=%s", device.index,
                         request.function, request.address, request.count, err.exception_code)
                refused = set(request.indexes)
                pending.extend(reversed([r for r in state.reads
                                         if r.request.indexes[0] in refused]))
                continue
            for index in request.indexes:
                failed[index] = err.quality
            continue
        heard = True
        answered_ns = clock.wall_ns()
        if read.block is not None:
            columns.append(read.block.values(reply, 2))
            blocks.append(read.block)
        if read.rest:
            values = read_reply_values(read.pdu, reply)
            for index, offset in read.rest:
                located[index] = (values, offset)
    readings: Mapping[int, Reading]
    if state.blocks_cover_plan and not failed and not split_now:
        raw = columns[0] if len(columns) == 1 else [v for column in columns for v in column]
        readings = GoodReadings(state.positions, raw)
        counters.qualities[Quality.GOOD] += len(raw)
    else:
        decoded: dict[int, Reading] = {}
        for block, column in zip(blocks, columns, strict=True):
            decoded.update(zip(block.indexes, map(Reading, column, repeat(Quality.GOOD)),
                               strict=False))
        readings = _decode(plan.variables, decoded, located, failed, state)
        counters.qualities.update(map(_quality_of, readings.values()))
    return Readings(device=device.index, ts_ns=answered_ns or clock.wall_ns(), values=readings,
                    requests=sent)


def _decode(variables: Sequence[Variable], decoded: Mapping[int, Reading],
            located: Mapping[int, tuple[list[int], int]], failed: Mapping[int, Quality],
            state: PollState) -> dict[int, Reading]:
    readings: dict[int, Reading] = dict(decoded)
    decoders = state.decoders
    scaled: list[Variable] = []
    for var in variables:
        index = var.index
        if index in readings:
            continue
        if index in failed:
            readings[index] = Reading(None, failed[index])
        elif var.scale_factor_index is not None:
            scaled.append(var)          # after the factors they name, decoded in this loop
        else:
            readings[index] = _decode_one(var, decoders[index], located[index], None)
    for var in scaled:
        assert var.scale_factor_index is not None
        factor = readings.get(var.scale_factor_index)
        if factor is None:
            readings[var.index] = Reading(None, Quality.DECODE_ERROR)
            continue
        readings[var.index] = _decode_one(var, decoders[var.index], located[var.index], factor)
        if factor.quality.is_good:
            sf = codec.decode_scale_factor(factor)
            if sf is not None:
                state.scale_factors[var.scale_factor_index] = sf
    return {v.index: readings[v.index] for v in variables}


def _decode_one(var: Variable, decoder: codec.OffsetDecoder, where: tuple[list[int], int],
                factor: Reading | None) -> Reading:
    try:
        value = decoder(*where)
    except (ValueError, UnicodeError, IndexError):
        return Reading(None, Quality.DECODE_ERROR)
    if factor is None and not isinstance(value, float):
        return Reading(value, Quality.GOOD)
    return codec.finish_reading(var, value, factor)


async def write_variable(link: ModbusLink, device: Device, var: Variable, raw: RawValue,
                         state: PollState) -> RawValue:
    """Write `raw` (a raw value, docs/formats.md §8.3) and read it back; returns the raw value
    the registers were sent (`raw` rounded to the register's type and scale factor: 55.55 at
    sf -1 sends 556, which is 55.6).

    Raises DeviceError with the spec's one-line wording when the write is refused or fails. A
    read-back that differs is a WARNING, not an error.
    """
    point = var.modbus
    if point is None:
        raise DeviceError(f"writeVariable: {device.name}: {var.name} is not a Modbus variable")
    sf: int | None = None
    if var.scale_factor_index is not None:
        sf = state.scale_factors.get(var.scale_factor_index)
        if sf is None:
            raise DeviceError(f"writeVariable: {device.name}: scale factor {var.info4} "
                              "not read yet")
    try:
        words = codec.encode_value(point, codec.raw_to_register_value(raw, sf))
    except codec.EncodeError as err:
        raise DeviceError(f"writeVariable: {device.name}: {err}") from err
    if point.kind is RegisterKind.COIL:
        pdu = write_coil_request(point.address, bool(words[0]))
    else:
        pdu = write_registers_request(point.address, words)
    unit = unit_of(device)
    try:
        state.counters.requests += 1
        check_write_reply(pdu, await link.transact(unit, pdu, device.timeout_ms, urgent=True,
                                                 counters=state.counters))
    except WriteReplaced as err:
        raise DeviceError(f"writeVariable: {device.name}: {var.name}: replaced by a newer "
                          "write") from err
    except ModbusRequestError as err:
        raise DeviceError(f"writeVariable: {device.name}: {var.name}: {err}") from err
    sent = codec.decode_point(point, words)
    sent_raw: RawValue = sent
    if sf is not None and isinstance(sent, int):
        sent_raw = codec.apply_scale(sent, sf)
    elif isinstance(sent, float) and point.data_type is DataType.F32:
        sent_raw = codec.shortest_f32(sent)     # 1.1 sent as a float32 is 1.1, as files write it
    request = ReadRequest(point.kind, point.address, point.register_count, (var.index,))
    try:
        back = codec.decode_point(point, await _read(link, unit, request, device.timeout_ms,
                                                     state.counters))
    except ModbusRequestError as err:
        log.warning("writeVariable: %s: %s: read-back failed: %s", device.name, var.name, err)
        return sent_raw
    if back != sent:
        log.warning("writeVariable: %s: %s: read back %s after writing %s", device.name,
                    var.name, codec.value_text(back), codec.value_text(sent_raw))
    return sent_raw
