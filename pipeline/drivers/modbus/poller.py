"""One poll or one write of one device over a link, the same for TCP and RTU.

A link (`tcp.TcpConnection`, `rtu.RtuBus`) moves one PDU and its answer; this module turns a read
plan into requests, answers into Readings (docs/behaviour.md §2.5, §2.6) and a write into a
request plus its read-back (§2.7). Device faults become quality codes, never exceptions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from config.model import Device, Quality, RegisterKind, Variable
from pipeline.drivers._base import (
    DeviceError,
    ModbusRequestError,
    RawValue,
    Reading,
    Readings,
    ReadPlan,
)
from pipeline.drivers.modbus import codec
from pipeline.drivers.modbus.frames import (
    check_write_reply,
    unpack_read_reply,
    write_coil_request,
    write_registers_request,
)
from pipeline.drivers.modbus.link import WriteReplaced
from pipeline.drivers.modbus.planner import ReadRequest, requests_of, split_plan
from pipeline.drivers.modbus.trace import DeviceCounters

__all__ = ["ModbusLink", "PollState", "poll_device", "write_variable"]

log = logging.getLogger("sunpm.modbus")

#: Exceptions after which a merged read is split per variable (docs/behaviour.md §2.5).
_SPLIT_EXCEPTIONS = frozenset({2, 3})


class ModbusLink(Protocol):
    """A TCP connection or an RTU bus: one request in flight, answers strictly matched."""

    async def transact(self, unit_id: int, pdu: bytes, timeout_ms: int, *,
                       urgent: bool = False) -> bytes: ...


@dataclass(slots=True)
class PollState:
    """What a driver remembers of a device between polls."""

    counters: DeviceCounters = field(default_factory=DeviceCounters)
    #: The plan the caches below were built for; compared by identity, so a new plan (the
    #: configuration changed) resets them without hashing a whole definition at every poll.
    plan: ReadPlan | None = None
    #: The requests actually sent: the plan's, or one per variable after exception 0x02/0x03.
    requests: tuple[ReadRequest, ...] = ()
    split: bool = False
    decoders: dict[int, codec.OffsetDecoder] = field(default_factory=dict)
    #: Last good scale factor per Index, for writes (docs/behaviour.md §2.7).
    scale_factors: dict[int, int] = field(default_factory=dict)
    #: The link's connection count at this device's last poll (`Readings.reconnected`).
    link_generation: int = 0


def unit_of(device: Device) -> int:
    return device.address if device.address is not None else 1


async def _read(link: ModbusLink, unit: int, request: ReadRequest, timeout_ms: int,
                counters: DeviceCounters) -> list[int]:
    counters.requests += 1
    reply = await link.transact(unit, request.pdu, timeout_ms)
    return unpack_read_reply(request.pdu, reply)


def _prepare(plan: ReadPlan, state: PollState) -> None:
    if state.plan is plan:
        return
    state.plan = plan
    state.requests = requests_of(plan)
    state.split = False
    state.decoders = {v.index: codec.offset_decoder(v.modbus) for v in plan.variables
                      if v.modbus is not None}


async def poll_device(link: ModbusLink, device: Device, plan: ReadPlan,
                      state: PollState) -> Readings:
    """Read every variable of `plan` from `device`; never raises for a device fault."""
    _prepare(plan, state)
    unit = unit_of(device)
    by_index = {v.index: v for v in plan.variables}
    #: Index -> (the read's values, offset of the variable in them)
    located: dict[int, tuple[list[int], int]] = {}
    failed: dict[int, Quality] = {}
    sent = 0
    answered_ns = 0             # when the poll's last answer arrived (docs/behaviour.md §2.1)
    pending = list(state.requests)
    while pending:
        request = pending.pop(0)
        sent += 1
        try:
            values = await _read(link, unit, request, device.timeout_ms, state.counters)
        except ModbusRequestError as err:
            if (err.exception_code in _SPLIT_EXCEPTIONS and len(request.indexes) > 1
                    and not state.split):
                state.split = True
                state.requests = requests_of(split_plan(plan))
                log.info("Merged read refused; reading per variable from now on. device=%s "
                         "function=%d address=%d count=%d exception=%s", device.index,
                         request.function, request.address, request.count, err.exception_code)
                done = located.keys() | failed.keys()
                pending = [r for r in state.requests if r.indexes[0] not in done]
                continue
            for index in request.indexes:
                failed[index] = err.quality
            continue
        answered_ns = time.time_ns()
        for index in request.indexes:
            point = by_index[index].modbus
            assert point is not None
            located[index] = (values, point.address - request.address)
    readings = _decode(plan.variables, located, failed, state)
    qualities = state.counters.qualities
    for reading in readings.values():
        qualities[reading.quality] += 1
    return Readings(device=device.index, ts_ns=answered_ns or time.time_ns(), values=readings,
                    requests=sent)


def _decode(variables: Sequence[Variable], located: Mapping[int, tuple[list[int], int]],
            failed: Mapping[int, Quality], state: PollState) -> dict[int, Reading]:
    readings: dict[int, Reading] = {}
    decoders = state.decoders
    scaled: list[Variable] = []
    for var in variables:
        index = var.index
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
                         state: PollState) -> Reading:
    """Write `raw` (a raw value, docs/formats.md §8.3) and read it back; returns the read-back.

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
        check_write_reply(pdu, await link.transact(unit, pdu, device.timeout_ms, urgent=True))
    except WriteReplaced as err:
        raise DeviceError(f"writeVariable: {device.name}: {var.name}: replaced by a newer "
                          "write") from err
    except ModbusRequestError as err:
        raise DeviceError(f"writeVariable: {device.name}: {var.name}: {err}") from err
    request = ReadRequest(point.kind, point.address, point.register_count, (var.index,))
    try:
        back = codec.decode_point(point, await _read(link, unit, request, device.timeout_ms,
                                                     state.counters))
    except ModbusRequestError as err:
        log.warning("writeVariable: %s: %s: read-back failed: %s", device.name, var.name, err)
        return Reading(None, err.quality)
    if back != codec.decode_point(point, words):
        log.warning("writeVariable: %s: %s: read back %s after writing %s", device.name,
                    var.name, codec.value_text(back), codec.value_text(raw))
    value: RawValue = back
    if sf is not None and isinstance(back, int):
        value = codec.apply_scale(back, sf)
    return Reading(value, Quality.GOOD)
