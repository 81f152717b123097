"""One poll or one write of one device over a link, the same for TCP and RTU.

A link (`tcp.TcpConnection`, `rtu.RtuBus`) moves one PDU and its answer; this module turns a read
plan into requests, answers into Readings (spec/behaviour.md §2.5, §2.6) and a write into a
request plus its read-back (§2.7). Device faults become quality codes, never exceptions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from config.model import Device, Quality, RegisterKind, Variable
from pipeline.drivers._base import DeviceError, ModbusRequestError, RawValue, Reading, Readings, \
    ReadPlan
from pipeline.drivers.modbus import codec
from pipeline.drivers.modbus.frames import check_write_reply, unpack_read_reply, \
    write_coil_request, write_registers_request
from pipeline.drivers.modbus.planner import ReadRequest, requests_of, split_plan
from pipeline.drivers.modbus.trace import DeviceCounters

__all__ = ["ModbusLink", "PollState", "poll_device", "write_variable"]

log = logging.getLogger("sunpm.modbus")

#: Exceptions after which a merged read is split per variable (spec/behaviour.md §2.5).
_SPLIT_EXCEPTIONS = frozenset({2, 3})


class ModbusLink(Protocol):
    """A TCP connection or an RTU bus: one request in flight, answers strictly matched."""

    async def transact(self, unit_id: int, pdu: bytes, timeout_ms: int, *,
                       urgent: bool = False) -> bytes: ...


@dataclass(slots=True)
class PollState:
    """What a driver remembers of a device between polls."""

    counters: DeviceCounters = field(default_factory=DeviceCounters)
    #: Split plans by the merged plan they replace, kept until the configuration changes.
    split: dict[ReadPlan, ReadPlan] = field(default_factory=dict)
    #: Last good scale factor per Index, for writes (spec/behaviour.md §2.7).
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


def _slice(request: ReadRequest, values: Sequence[int], var: Variable) -> list[int]:
    assert var.modbus is not None
    offset = var.modbus.address - request.address
    return list(values[offset:offset + var.modbus.register_count])


async def poll_device(link: ModbusLink, device: Device, plan: ReadPlan,
                      state: PollState) -> Readings:
    """Read every variable of `plan` from `device`; never raises for a device fault."""
    unit = unit_of(device)
    by_index = {v.index: v for v in plan.variables}
    effective = state.split.get(plan, plan)
    words: dict[int, list[int]] = {}
    failed: dict[int, Quality] = {}
    sent = 0
    pending = list(requests_of(effective))
    while pending:
        request = pending.pop(0)
        sent += 1
        try:
            values = await _read(link, unit, request, device.timeout_ms, state.counters)
        except ModbusRequestError as err:
            if (err.exception_code in _SPLIT_EXCEPTIONS and len(request.indexes) > 1
                    and effective is plan):
                effective = split_plan(plan)
                state.split[plan] = effective
                log.info("Merged read refused; reading per variable from now on. device=%s "
                         "function=%d address=%d count=%d exception=%s", device.index,
                         request.function, request.address, request.count, err.exception_code)
                done = {i for i in by_index if i in words or i in failed}
                pending = [r for r in requests_of(effective) if r.indexes[0] not in done]
                continue
            for index in request.indexes:
                failed[index] = err.quality
            continue
        for index in request.indexes:
            words[index] = _slice(request, values, by_index[index])
    readings = _decode(plan.variables, words, failed, state)
    for reading in readings.values():
        state.counters.qualities[reading.quality] += 1
    return Readings(device=device.index, ts_ns=time.time_ns(), values=readings, requests=sent)


def _decode(variables: Sequence[Variable], words: Mapping[int, list[int]],
            failed: Mapping[int, Quality], state: PollState) -> dict[int, Reading]:
    readings: dict[int, Reading] = {}
    # Scale factors first: they carry no Info4 of their own (spec/formats.md §8.3).
    ordered = sorted(variables, key=lambda v: v.scale_factor_index is not None)
    for var in ordered:
        if var.index in failed:
            readings[var.index] = Reading(None, failed[var.index])
            continue
        sf_reading = (readings.get(var.scale_factor_index)
                      if var.scale_factor_index is not None else None)
        reading = codec.decode_variable(var, words.get(var.index, []), sf_reading)
        readings[var.index] = reading
    for index in {v.scale_factor_index for v in variables} - {None}:
        assert index is not None
        sf = codec.decode_scale_factor(readings[index]) if index in readings else None
        if sf is not None:
            state.scale_factors[index] = sf
    return {v.index: readings[v.index] for v in variables}


async def write_variable(link: ModbusLink, device: Device, var: Variable, raw: RawValue,
                         state: PollState) -> Reading:
    """Write `raw` (a raw value, spec/formats.md §8.3) and read it back; returns the read-back.

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
