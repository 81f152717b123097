"""The driver contract (docs/behaviour.md §1) shared by every protocol driver.

A driver owns its port or connection, keeps one request in flight, and reads and writes devices.
It knows nothing of records, the store or exporters: `read` returns a raw value or a quality code
per variable and never raises for a device fault.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final, NamedTuple, Protocol

from config.errors import SunpmError
from config.model import DefinitionFile, Device, Quality, SerialPort, Variable

#: A decoded raw value: int for integer types (exact, U64 included), float for F32/F64 and analog
#: inputs, Decimal for a value scaled by a SunSpec factor (exact `v × 10^sf`), str for text types.
RawValue = int | float | Decimal | str

#: A TIC data field that is a number (docs/formats.md §8.2): ASCII digits, an optional sign and
#: point, no exponent (a Linky status word `01E40000` is hexadecimal, not 10^40000).
_TIC_NUMBER: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


def tic_number(text: str) -> Decimal | None:
    """The decimal value of a TIC data field, None when it is text; the one rule of the
    recorder, scripts and the web UI."""
    return Decimal(text) if _TIC_NUMBER.fullmatch(text) else None


class DeviceError(SunpmError):
    """A driver could not do what was asked (a write refused, a port that cannot open)."""


class Reading(NamedTuple):
    """One variable's answer. A named tuple rather than a frozen dataclass: a poll makes one per
    variable, and `tuple.__new__` builds a whole block of them without a Python-level `__init__`
    (about 4x cheaper)."""

    value: RawValue | None       # None when the read failed; `quality` then says why
    quality: Quality


class GoodReadings(Mapping[int, Reading]):
    """A poll whose every value is good, as one column: what a block decode gives.

    `positions` (Index -> row, shared by every poll of a plan) and `raw` (the values in that
    order) are what the recorder reads; a `Reading` is made only when one is looked up, so the
    hot path makes no object per value.
    """

    __slots__ = ("positions", "raw")

    def __init__(self, positions: Mapping[int, int], raw: Sequence[RawValue]) -> None:
        if len(positions) != len(raw):
            raise ValueError(f"{len(raw)} values for {len(positions)} variables")
        self.positions = positions
        self.raw = raw

    def __getitem__(self, index: int) -> Reading:
        return Reading(self.raw[self.positions[index]], Quality.GOOD)

    def __contains__(self, index: object) -> bool:
        return index in self.positions

    def __iter__(self) -> Iterator[int]:
        return iter(self.positions)

    def __len__(self) -> int:
        return len(self.positions)

    def __repr__(self) -> str:
        return f"GoodReadings({dict(self)!r})"


@dataclass(frozen=True, slots=True, kw_only=True)
class Readings:
    """The answer to one poll of one device."""

    device: str                  # daq index
    ts_ns: int                   # UTC ns when the poll's last answer arrived
    values: Mapping[int, Reading]  # by definition-file Index
    requests: int = 0            # requests sent for this poll
    #: The link was (re)connected since this device's previous poll: the recorder takes the next
    #: good poll as a *return* (docs/behaviour.md §2.2) and reads the device's parameters again.
    reconnected: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkSettings:
    """What a driver needs to open its link: a serial port row, or a TCP endpoint."""

    serial: SerialPort | None = None
    host: str | None = None
    port: int | None = None
    tcp_inter_frame_ms: int = 0
    keep_alive: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadPlan:
    """The variables a poll reads (built once per definition file and kept: drivers cache what
    they derive from a plan by its identity).

    TIC and I/O read every variable of the plan; a protocol that sends requests extends it with
    them, typed (Modbus: `modbus.planner.ModbusPlan`).
    """

    definition: DefinitionFile
    variables: tuple[Variable, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class DiscoveryParams:
    protocol: str = "sunspec"
    interface: str | None = None
    ip: str | None = None
    port: int = 502
    first_address: int = 1
    last_address: int = 240
    max_devices: int = 240
    timeout_ms: int = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class FoundDevice:
    unit_id: int
    target: str                  # `<ip>:<port>` or `SERIAL<k>`
    manufacturer: str = ""
    model: str = ""
    options: str = ""
    version: str = ""
    serial_number: str = ""
    models: tuple[int, ...] = ()
    definition_name: str = ""
    definition_text: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)


#: Receives each progress line of a discovery run (docs/formats.md §11 SunSpec log), unformatted.
DiscoveryLog = Callable[[str], None]


class ProtocolDriver(Protocol):
    """What the poll loop drives; every driver class states it implements it (mypy checks).

    Discovery is no part of it: it runs over a link (`RegisterReader`, the TIC port) with its own
    progress log, in `discovery.py` and `tic_discovery.py`, not through a polling driver.
    """

    #: The daq.csv `protocol` the driver serves (log lines, the registry).
    name: str

    async def open(self, link: LinkSettings) -> None:
        """Take the port or prepare the connections; a port that cannot open is not an error
        here when the driver retries by itself (its devices read quality 5 meanwhile)."""
        ...

    async def read(self, device: Device, plan: ReadPlan) -> Readings:
        """One poll of `device`: a value or a quality per variable of `plan`; raises
        `DeviceError` only when the link itself is unusable (the poll loop records quality 5)."""
        ...

    async def write(self, device: Device, var: Variable, raw: RawValue) -> RawValue:
        """Write one raw value; returns the raw value the device was sent (a register holds
        `raw` rounded to its type and scale factor); raises `DeviceError` worded as
        docs/behaviour.md §2.7."""
        ...

    async def close(self) -> None: ...


class ModbusRequestError(DeviceError):
    """A Modbus request got no usable answer; `quality` is the code its variables get."""

    def __init__(self, message: str, *, quality: Quality,
                 exception_code: int | None = None, other_unit: int | None = None) -> None:
        super().__init__(message)
        self.quality = quality
        self.exception_code = exception_code
        #: A bus frame from this other unit came instead of the answer (quality 3): a late reply
        #: of an earlier request, which says nothing of the unit asked.
        self.other_unit = other_unit


class RegisterReader(Protocol):
    """One Modbus link (a TCP connection or an RTU bus) as discovery and the tunnel use it.

    Raises `ModbusRequestError` (timeout: quality 1, exception: 2 with `exception_code`, bad frame:
    3, no link: 5); never returns a partial answer.
    """

    async def read_registers(self, unit_id: int, function: int, address: int, count: int,
                             timeout_ms: int) -> list[int]: ...
