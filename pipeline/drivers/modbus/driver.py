"""What the Modbus TCP and RTU drivers share: per-device state and counters (the links count a
late frame for the device whose request it answers), and a link (re)connection seen as a device's
return (docs/behaviour.md §2.2)."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import replace
from typing import Generic, TypeVar

from config.model import Device, Variable
from pipeline.clock import SYSTEM_CLOCK, Clock
from pipeline.drivers._base import LinkSettings, ProtocolDriver, RawValue, Readings, ReadPlan
from pipeline.drivers.modbus.link import QueuedLink
from pipeline.drivers.modbus.poller import PollState, poll_device, write_variable
from pipeline.drivers.modbus.trace import ModbusCounters, TraceHook

__all__ = ["ModbusDriver"]

LinkT = TypeVar("LinkT", bound=QueuedLink)


class ModbusDriver(ProtocolDriver, Generic[LinkT]):
    """A `ProtocolDriver` over `QueuedLink`s; a subclass says which link serves a device."""

    name = "modbus"

    def __init__(self, *, trace: TraceHook | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.trace = trace
        self.clock = clock
        self._states: dict[str, PollState] = {}

    @abstractmethod
    def _link_of(self, device: Device) -> LinkT:
        """The link serving `device`; DeviceError when the driver cannot reach it at all."""

    def _polled(self, link: LinkT) -> None:
        """Called after each poll of a device on `link` (TCP closes keep-alive 0 connections)."""

    @abstractmethod
    async def open(self, link: LinkSettings) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    def state(self, device_index: str) -> PollState:
        return self._states.setdefault(device_index, PollState())

    def counters(self, device_index: str) -> ModbusCounters:
        return self.state(device_index).counters

    async def read(self, device: Device, plan: ReadPlan) -> Readings:
        link = self._link_of(device)
        state = self.state(device.index)
        readings = await poll_device(link, device, plan, state, self.clock)
        if link.generation != state.link_generation:
            state.link_generation = link.generation
            readings = replace(readings, reconnected=True)
        self._polled(link)
        return readings

    async def write(self, device: Device, var: Variable, raw: RawValue) -> RawValue:
        return await write_variable(self._link_of(device), device, var, raw, self.state(device.index))
