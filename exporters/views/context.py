"""What a view needs besides its events: the window's configuration snapshot, and dates.

`ViewConfig` is the part of a configuration snapshot the views print (docs/behaviour.md §5.1
step 4): uid, time zone, the server's header option, date format and MQTT payload limit, and the
daq devices (those of the window's snapshot, and `former_device` for a device it no longer lists:
the row of the last snapshot that did). Building it from the snapshot is the caller's work; the
views only read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from config.errors import SunpmError
from config.model import Daq, DefinitionFile, Device, GatewaySettings, ServerSettings
from store.events import JournalItem

_NS: Final = 1_000_000_000


class ViewError(SunpmError):
    """A window cannot be rendered: its events name something its snapshots lack."""


#: A journal event left out of its file because it cannot be written there (a device alarm or
#: a parameter read without its definition snapshot, a damaged body), and why: every rendering
#: of the window leaves it out alike (docs/spec-notes.md, "Event set aside from a file").
SetAside = tuple[JournalItem, SunpmError]


class Interface(StrEnum):
    """The `<interface>` of DATA and `_P_` file names (docs/formats.md §9.1)."""

    MODBUS = "MODBUS"
    IO = "IO"
    TIC = "TIC"


def interface_of(device_index: str) -> Interface:
    """MODBUS for a numeric daq index, IO for `IO`, TIC for `TIC1`."""
    upper = device_index.upper()
    if upper == "IO":
        return Interface.IO
    if upper.startswith("TIC"):
        return Interface.TIC
    if device_index.isdigit():
        return Interface.MODBUS
    raise ViewError(f"device index {device_index!r} is not a daq.csv index")


def device_order(device_index: str) -> tuple[int, int]:
    """Sort key: MODBUS by ascending number, then IO, then TIC1 (docs/formats.md §9.2, §14.2)."""
    interface = interface_of(device_index)
    if interface is Interface.MODBUS:
        return (0, int(device_index))
    return (1, 0) if interface is Interface.IO else (2, 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class ViewConfig:
    uid: str
    time_zone: str = "UTC"
    header_option: bool = True
    euro_date_format: bool = False
    max_payload_kb: int = 256
    devices: tuple[Device, ...] = ()
    #: The daq row of a device `devices` no longer lists, from the last snapshot that did
    #: (docs/behaviour.md §5.1 step 4), asked only for a device of the window not listed.
    former_device: Callable[[str], Device | None] | None = field(default=None, compare=False,
                                                                  repr=False)

    @classmethod
    def for_server(cls, gateway: GatewaySettings, server: ServerSettings, daq: Daq) -> ViewConfig:
        """One server slot's snapshot (`former_device` is the caller's, `exporters.rendering`)."""
        return cls(uid=gateway.uid, time_zone=gateway.time_zone,
                   header_option=server.header_option,
                   euro_date_format=server.euro_date_format,
                   max_payload_kb=server.max_payload_kb, devices=daq.devices)

    def device(self, index: str) -> Device | None:
        for dev in self.devices:
            if dev.index == index:
                return dev
        return None if self.former_device is None else self.former_device(index)

    def device_name(self, index: str) -> str:
        """A device in no configuration snapshot left (the journal's quota deleted the last
        that listed it) is named by its index: refusing its records failed the same window at
        every session, and nothing after it was delivered."""
        dev = self.device(index)
        if dev is None:
            return index
        return dev.name or dev.index


def definition_for(definitions: Mapping[str, DefinitionFile], def_id: str | None,
                   what: str) -> DefinitionFile:
    if def_id is None:
        raise ViewError(f"{what} has no definition snapshot")
    try:
        return definitions[def_id]
    except KeyError:
        raise ViewError(f"{what}: definition snapshot {def_id} is missing; "
                        f"restore defs/ from the store or card") from None


class Dates:
    """Local date texts of one time zone, cached per second (windows repeat record times)."""

    def __init__(self, time_zone: str) -> None:
        try:
            self.zone = ZoneInfo(time_zone)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ViewError(f"time zone {time_zone!r} is unknown to this system's tz data") from err
        self._cache: dict[tuple[int, bool], str] = {}

    def local(self, ts_ns: int) -> datetime:
        return datetime.fromtimestamp(ts_ns // _NS, UTC).astimezone(self.zone)

    def record(self, ts_ns: int, euro: bool = False) -> str:
        """`YY/MM/DD-hh:mm:ss` (euro: `DD/MM/YY-hh:mm:ss`), local, truncated to the second."""
        key = (ts_ns // _NS, euro)
        text = self._cache.get(key)
        if text is None:
            local = self.local(ts_ns)
            text = local.strftime("%d/%m/%y-%H:%M:%S" if euro else "%y/%m/%d-%H:%M:%S")
            self._cache[key] = text
        return text

    def log(self, ts_ns: int) -> str:
        """`YYYY-MM-DD hh:mm:ss.mmm`, local, milliseconds truncated (docs/formats.md §11)."""
        local = self.local(ts_ns)
        return f"{local:%Y-%m-%d %H:%M:%S}.{(ts_ns // 1_000_000) % 1000:03d}"

    def sunspec(self, ts_ns: int) -> str:
        return f"{self.local(ts_ns):%Y-%m-%d %H:%M:%S}"

    def trace(self, ts_ns: int) -> str:
        """`DD/MM/YYYY hh:mm:ss.mmm`, local (frame traces, docs/formats.md §11)."""
        local = self.local(ts_ns)
        return f"{local:%d/%m/%Y %H:%M:%S}.{(ts_ns // 1_000_000) % 1000:03d}"

    @cached_property
    def name(self) -> str:
        return str(self.zone)


def timestamp_ms(ts_ns: int) -> int:
    """MQTT `timestamp`: UTC milliseconds, truncated."""
    return ts_ns // 1_000_000
