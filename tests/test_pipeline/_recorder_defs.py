"""Definition files, daq rows and a small in-process driver for the recorder and poller tests."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal

from config.model import (
    Action,
    DataType,
    DefinitionFile,
    Device,
    ModbusPoint,
    Protocol,
    Quality,
    RegisterKind,
    Variable,
)
from pipeline.clock import Clock
from pipeline.drivers._base import (
    DiscoveryLog,
    DiscoveryParams,
    FoundDevice,
    LinkSettings,
    RawValue,
    Reading,
    Readings,
    ReadPlan,
)

NS = 1_000_000_000
#: 2021-02-05 00:00:00 UTC
DAY0_NS = 1_612_483_200 * NS


def variable(index: int, action: Action, *, info3: str = "U16", name: str | None = None) -> Variable:
    return Variable(
        line=index + 1, index=index, info1="3", info2=str(40000 + index), info3=info3, info4="",
        name=name or f"v{index}", tag="", coef_a=Decimal(1), coef_b=Decimal(0), unit="",
        action=action,
        modbus=ModbusPoint(kind=RegisterKind.HOLDING_REGISTER, address=40000 + index,
                           data_type=DataType.U16),
        key=name or f"v{index}",
    )


def definition(variables: Sequence[Variable], *, file_name: str = "inv.csv",
               protocol: Protocol = Protocol.MODBUS_TCP) -> DefinitionFile:
    text = "\n".join(f"{v.index};{v.info1};{v.info2};{v.info3};{v.info4};{v.name};{v.action}"
                     for v in variables)
    return DefinitionFile(
        file_name=file_name, protocol=protocol, category="Inverter", manufacturer="ACME",
        model="X", variables=tuple(variables),
        sha256=hashlib.sha256(f"{protocol}\n{text}".encode()).hexdigest(),
    )


def device(index: str = "1", *, acq_period_s: int = 600, interface: str = "127.0.0.1:502",
           address: int = 1, def_file: str = "inv.csv") -> Device:
    return Device(line=1, index=index, interface=interface, name=f"dev{index}", address=address,
                  acq_period_s=acq_period_s, def_file=def_file)


def good(value: RawValue) -> Reading:
    return Reading(value, Quality.GOOD)


def bad(quality: Quality) -> Reading:
    return Reading(None, quality)


def readings(dev: str, ts_ns: int, values: Mapping[int, Reading], *,
             reconnected: bool = False) -> Readings:
    return Readings(device=dev, ts_ns=ts_ns, values=dict(values), reconnected=reconnected)


#: What the scripted driver answers for one read: Index -> Reading, for the device and its plan.
Answer = Callable[[Device, ReadPlan, int], Mapping[int, Reading]]


class ScriptedDriver:
    """A real `ProtocolDriver` whose device answers come from a function of (device, plan, n).

    It spends `read_s` seconds of its clock per read, stamps answers with the clock's wall time,
    and records every read and write in order, so tests can check what the poll loop asked.
    """

    name = "scripted"

    def __init__(self, clock: Clock, answer: Answer, *, read_s: float = 0.01) -> None:
        self.clock = clock
        self.answer = answer
        self.read_s = read_s
        self.log: list[tuple[str, str, int]] = []   # (op, device, mono ns at start)
        self.writes: list[tuple[str, int, RawValue]] = []
        self.reads = 0
        self.opened = False

    async def open(self, link: LinkSettings) -> None:
        self.opened = True

    async def read(self, device: Device, plan: ReadPlan) -> Readings:
        self.log.append(("read", device.index, self.clock.monotonic_ns()))
        n = self.reads
        self.reads += 1
        await self.clock.sleep(self.read_s)
        values = self.answer(device, plan, n)
        return Readings(device=device.index, ts_ns=self.clock.wall_ns(), values=values,
                        requests=1)

    async def write(self, device: Device, var: Variable, raw: RawValue) -> None:
        self.log.append(("write", device.index, self.clock.monotonic_ns()))
        await self.clock.sleep(self.read_s)
        self.writes.append((device.index, var.index, raw))

    async def discover(self, params: DiscoveryParams, log: DiscoveryLog) -> list[FoundDevice]:
        return []

    async def close(self) -> None:
        self.opened = False
