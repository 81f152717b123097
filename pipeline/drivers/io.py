"""I/O channels of the `IO` device: 4 analog inputs, 4 digital inputs (ON/OFF or S0), 1 relay.

Spec: docs/behaviour.md §2.10, docs/formats.md §8.2. The `IO` row's `parameters` pick the backend:

- `sim` (or empty): the deterministic functions of UTC seconds of docs/behaviour.md §2.10, so a demo
  plant and the tests see known values at known instants.
- `modbus:<index>`: a Modbus I/O module (the daq device `<index>`) read through the Modbus driver;
  its variables tagged `io:AI1..4`, `io:DI1..4`, `io:CNT1..4` and `io:RELAY` supply the channels,
  read every poll whatever their action. Module pulse counters are turned into running totals
  that survive a module reset or a register wrap (`S0Counter`).

Raw values: analog in mA or V (`Info3` 1: 4-20 mA, 2: 0-10 V), digital 1 closed / 0 open, S0 the
cumulative count, relay 1 energised.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Protocol

from config.decimal_text import scaled
from config.model import (
    DataType,
    DefinitionFile,
    Device,
    IoKind,
    IoPoint,
    Quality,
    RegisterKind,
    Variable,
)
from pipeline.clock import SYSTEM_CLOCK, Clock
from pipeline.drivers._base import (
    DeviceError,
    LinkSettings,
    ProtocolDriver,
    RawValue,
    Reading,
    Readings,
    ReadPlan,
)

log = logging.getLogger("sunpm.io")

#: The S0 origin of the simulator: 2020-01-01T00:00:00Z.
S0_EPOCH_S: Final = 1577836800
ANALOG_MA: Final = 1
ANALOG_V: Final = 2
DIGITAL_ON_OFF: Final = 1
DIGITAL_S0: Final = 2
#: (low, high) of each analog range, in its unit.
ANALOG_RANGES: Final[Mapping[int, tuple[float, float]]] = {ANALOG_MA: (4.0, 20.0),
                                                           ANALOG_V: (0.0, 10.0)}


class IoBackend(Protocol):
    """Where channel values come from."""

    async def sample(self, points: Sequence[IoPoint]) -> dict[IoPoint, Reading]: ...
    async def set_relay(self, state: int) -> None: ...


# --------------------------------------------------------------------------- simulator


def sim_analog(channel: int, mode: int, t_s: float) -> float:
    """Mid-range + 40 % of the span × sin(2π(t/3600 + k/4))."""
    low, high = ANALOG_RANGES.get(mode, ANALOG_RANGES[ANALOG_MA])
    mid, span = (low + high) / 2, high - low
    return mid + 0.4 * span * math.sin(2 * math.pi * (t_s / 3600 + channel / 4))


def sim_digital(channel: int, t_s: float) -> int:
    """1 in the first half of each 10·k-minute cycle."""
    cycle = 600 * channel
    return 1 if t_s % cycle < cycle / 2 else 0


def sim_s0(channel: int, t_s: float) -> int:
    """⌊(t − 1577836800)·k/10⌋ pulses."""
    return math.floor((t_s - S0_EPOCH_S) * channel / 10)


class SimBackend:
    def __init__(self, *, relay: int = 0, clock_s: Callable[[], float] = time.time) -> None:
        self.relay = relay
        self._clock_s = clock_s

    async def sample(self, points: Sequence[IoPoint]) -> dict[IoPoint, Reading]:
        t = self._clock_s()
        out: dict[IoPoint, Reading] = {}
        for point in points:
            value: RawValue
            if point.kind is IoKind.ANALOG:
                value = sim_analog(point.channel, point.mode or ANALOG_MA, t)
            elif point.kind is IoKind.DIGITAL:
                value = sim_s0(point.channel, t) if point.mode == DIGITAL_S0 \
                    else sim_digital(point.channel, t)
            else:
                value = self.relay
            out[point] = Reading(value, Quality.GOOD)
        return out

    async def set_relay(self, state: int) -> None:
        self.relay = state


# --------------------------------------------------------------------------- Modbus I/O module


@dataclass(slots=True)
class S0Counter:
    """A running pulse total from a module counter that may wrap or be reset.

    A counter going down wrapped when the old value was above 90 % and the new one is below 10 %
    of the register range; otherwise the module was reset and counted `new` pulses since.
    `module_value` and `total` are saved with each record so pulses counted while the gateway was
    stopped are kept (the first read after a restore adds them).
    """

    register_range: int
    module_value: int | None = None
    total: int = 0

    def update(self, new: int) -> int:
        # A register declared signed (I16, I32) reads negative past half its range: the same
        # count, as the module keeps it.
        new %= self.register_range
        old = self.module_value
        if old is None:
            increment = 0
        elif new >= old:
            increment = new - old
        elif old > 0.9 * self.register_range and new < 0.1 * self.register_range:
            increment = new + self.register_range - old
        else:
            increment = new
        self.module_value = new
        self.total += increment
        return self.total


_CHANNEL_TAGS: Final = (*(f"io:{kind}{k}" for kind in ("AI", "DI", "CNT") for k in (1, 2, 3, 4)),
                        "io:RELAY")


def tagged_channels(definition: DefinitionFile) -> dict[str, Variable]:
    """The module's variables by `io:` tag (any case)."""
    out: dict[str, Variable] = {}
    for var in definition.variables:
        tag = var.tag.strip()
        if tag.lower().startswith("io:") and var.modbus is not None:
            canonical = "io:" + tag[3:].upper()
            if canonical in _CHANNEL_TAGS:
                out[canonical] = var
    return out


def _register_range(var: Variable) -> int:
    point = var.modbus
    if point is None or point.data_type is None:
        return 2
    bits = {DataType.U8: 8, DataType.I8: 8, DataType.U32: 32, DataType.I32: 32,
            DataType.U64: 64, DataType.I64: 64}.get(point.data_type, 16)
    return 1 << bits


class ModbusIoBackend:
    """Channels from a Modbus I/O module polled through the Modbus driver of its link."""

    def __init__(self, driver: ProtocolDriver, module: Device, definition: DefinitionFile,
                 plan_for: Callable[[DefinitionFile, Sequence[Variable]], ReadPlan]) -> None:
        self._driver = driver
        self._module = module
        self._channels = tagged_channels(definition)
        self._plan = plan_for(definition, list(self._channels.values()))
        self.counters: dict[int, S0Counter] = {
            k: S0Counter(_register_range(self._channels[f"io:CNT{k}"]))
            for k in (1, 2, 3, 4) if f"io:CNT{k}" in self._channels}

    def restore_counter(self, channel: int, module_value: int, total: int) -> None:
        counter = self.counters.get(channel)
        if counter is not None:
            counter.module_value = module_value
            counter.total = total

    async def sample(self, points: Sequence[IoPoint]) -> dict[IoPoint, Reading]:
        readings = await self._driver.read(self._module, self._plan)
        by_tag: dict[str, Reading] = {}
        for tag, var in self._channels.items():
            reading = readings.values.get(var.index, Reading(None, Quality.DECODE_ERROR))
            by_tag[tag] = self._channel_value(tag, var, reading)
        out: dict[IoPoint, Reading] = {}
        for point in points:
            tag = _tag_of(point)
            out[point] = by_tag.get(tag, Reading(None, Quality.NOT_IMPLEMENTED))
        return out

    def _channel_value(self, tag: str, var: Variable, reading: Reading) -> Reading:
        if reading.value is None or not reading.quality.is_good:
            return reading
        raw = reading.value
        if isinstance(raw, str):
            return Reading(None, Quality.DECODE_ERROR)
        if tag.startswith("io:AI"):
            # Analog channels are the module's scaled value (mA or V), CoefA × raw + CoefB.
            exact = scaled(var.coef_a, Decimal(str(raw)), var.coef_b)
            return Reading(float(exact), reading.quality)
        if tag.startswith("io:CNT"):
            total = self.counters[int(tag[-1])].update(int(raw))
            return Reading(total, reading.quality)
        return Reading(1 if int(raw) else 0, reading.quality)

    async def set_relay(self, state: int) -> None:
        var = self._channels.get("io:RELAY")
        if var is None:
            raise DeviceError(f"setRelay: device {self._module.index} has no variable tagged "
                              "io:RELAY")
        if var.modbus is None or var.modbus.kind is not RegisterKind.COIL:
            raise DeviceError(f"setRelay: io:RELAY of device {self._module.index} is not a coil")
        await self._driver.write(self._module, var, state)


def _tag_of(point: IoPoint) -> str:
    if point.kind is IoKind.ANALOG:
        return f"io:AI{point.channel}"
    if point.kind is IoKind.DIGITAL:
        return f"io:CNT{point.channel}" if point.mode == DIGITAL_S0 else f"io:DI{point.channel}"
    return "io:RELAY"


def backend_module(parameters: str) -> str | None:
    """`modbus:<index>` → the module's daq index; `sim` or empty → None."""
    text = parameters.strip()
    if text in ("", "sim"):
        return None
    kind, sep, index = text.partition(":")
    if kind != "modbus" or not sep or not index:
        raise DeviceError(f"IO: parameters '{parameters}' is neither 'sim' nor 'modbus:<index>'")
    return index


# --------------------------------------------------------------------------- driver


class IoDriver(ProtocolDriver):
    """The `IO` device's `ProtocolDriver` over one backend."""

    name = "io"

    def __init__(self, backend: IoBackend, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.backend = backend
        self.clock = clock
        #: Told each state the relay took, whatever drove it (`setRelay`, `writeVariable`, a
        #: script), so the service keeps the last commanded one.
        self.on_relay: Callable[[int], None] | None = None

    async def open(self, link: LinkSettings) -> None:
        return None

    async def read(self, device: Device, plan: ReadPlan) -> Readings:
        points = [var.io for var in plan.variables if var.io is not None]
        try:
            sampled = await self.backend.sample(points)
        except DeviceError as err:
            log.warning("I/O backend failed. device=%s error=%s", device.index, err)
            sampled = {p: Reading(None, Quality.DISCONNECTED) for p in points}
        values = {var.index: sampled.get(var.io, Reading(None, Quality.DECODE_ERROR))
                  if var.io is not None else Reading(None, Quality.DECODE_ERROR)
                  for var in plan.variables}
        return Readings(device=device.index, ts_ns=self.clock.wall_ns(), values=values)

    async def write(self, device: Device, var: Variable, raw: RawValue) -> RawValue:
        if var.io is None or var.io.kind is not IoKind.RELAY:
            raise DeviceError(f"writeVariable: {device.name}: only the relay can be written")
        await self.set_relay(raw)
        return raw

    async def set_relay(self, raw: RawValue) -> None:
        if isinstance(raw, str) or raw not in (0, 1):
            raise DeviceError(f"setRelay: state must be 0 or 1, got {raw}")
        await self.backend.set_relay(int(raw))
        if self.on_relay is not None:
            self.on_relay(int(raw))

    async def close(self) -> None:
        return None
