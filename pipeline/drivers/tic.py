"""TIC (Linky and older Enedis meters): decoder, serial reader and the `TIC1` driver.

Spec: docs/behaviour.md §2.9 after the Enedis TIC specification (Enedis-NOI-CPT_54E). Wire facts the
code relies on:

- 7 data bits, even parity, 1 stop bit; historic mode at 1200 baud (SP separators), standard mode
  at 9600 baud (HT separators, optional horodate field).
- Frame: STX 0x02 … ETX 0x03. EOT 0x04, a new STX or the end of the input interrupts a frame;
  the groups already checked are kept (each carries its own checksum).
- Group: LF 0x0A … CR 0x0D; the byte before CR is the checksum, the one before it the separator.
  Checksum = (sum of the span & 0x3F) + 0x20. Historic span: label SP data (the SP before the
  checksum excluded); standard span: label's first byte through the HT before the checksum.
- A meter's reader may start mid-frame: bytes before the first STX are skipped, not counted.

The decoder is a pure byte-in, frames-out state machine: it never raises on any input (fuzzed), so
noise on the line only moves counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import termios
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

import serial_asyncio

from config.model import Device, Quality, Variable
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
from pipeline.drivers.modbus.trace import Direction, FrameTrace, TraceHook

log = logging.getLogger("sunpm.tic")

STX: Final = 0x02
ETX: Final = 0x03
EOT: Final = 0x04
LF: Final = 0x0A
CR: Final = 0x0D
SP: Final = 0x20
HT: Final = 0x09
MAX_GROUP_BYTES: Final = 256
#: A standard-mode frame is about 1 KiB; past this an open frame is cut (interrupted).
MAX_FRAME_BYTES: Final = 16384
_LABEL_CHARS: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-")
_SEASONS: Final = frozenset(b"EeHh ")
#: Plans whose last read the driver remembers (a poll plan and a parameter plan per definition).
_MAX_PLANS: Final = 8


class TicMode(StrEnum):
    HISTORIC = "historic"
    STANDARD = "standard"

    @property
    def baud(self) -> int:
        return 1200 if self is TicMode.HISTORIC else 9600

    @property
    def separator(self) -> int:
        return SP if self is TicMode.HISTORIC else HT

    @classmethod
    def from_baud(cls, baud: int) -> TicMode:
        return cls.HISTORIC if baud == 1200 else cls.STANDARD


def checksum(span: bytes) -> int:
    return (sum(span) & 0x3F) + 0x20


@dataclass(frozen=True, slots=True)
class TicGroup:
    label: str
    data: str                       # verbatim, without horodate
    horodate: str | None            # standard mode only, 13 characters
    mode: TicMode


class GroupFault(StrEnum):
    CHECKSUM = "checksum"
    MALFORMED = "malformed"


def parse_group(content: bytes, mode: TicMode | None = None) -> TicGroup | GroupFault:
    """One group's bytes between LF and CR. `mode` None: HT present = standard, else historic."""
    if mode is None:
        mode = TicMode.STANDARD if HT in content else TicMode.HISTORIC
    if len(content) > MAX_GROUP_BYTES or len(content) < 4 or content[-2] != mode.separator:
        return GroupFault.MALFORMED
    span = content[:-2] if mode is TicMode.HISTORIC else content[:-1]
    if checksum(span) != content[-1]:
        return GroupFault.CHECKSUM
    body = content[:-2]
    horodate: bytes | None = None
    if mode is TicMode.HISTORIC:
        label, sep, data = body.partition(b" ")
        if not sep or SP in data or HT in body:
            return GroupFault.MALFORMED
    else:
        fields = body.split(b"\t")
        if len(fields) == 2:
            label, data = fields
        elif len(fields) == 3:
            label, horodate, data = fields
            if not _horodate_ok(horodate):
                return GroupFault.MALFORMED
        else:
            return GroupFault.MALFORMED
    if not 1 <= len(label) <= 16 or not set(label) <= _LABEL_CHARS:
        return GroupFault.MALFORMED
    if any(b < 0x20 or b > 0x7E for b in data):
        return GroupFault.MALFORMED
    return TicGroup(label=label.decode("ascii"), data=data.decode("ascii"),
                    horodate=horodate.decode("ascii") if horodate is not None else None,
                    mode=mode)


def _horodate_ok(value: bytes) -> bool:
    return len(value) == 13 and value[0] in _SEASONS and value[1:].isdigit()


def encode_group(label: str, data: str, mode: TicMode, horodate: str | None = None) -> bytes:
    """LF … CR bytes of a valid group (captures, simulators, tests)."""
    if mode is TicMode.HISTORIC:
        span = f"{label} {data}".encode("ascii")
        return b"\n" + span + b" " + bytes([checksum(span)]) + b"\r"
    fields = [label] + ([horodate] if horodate is not None else []) + [data]
    span = ("\t".join(fields) + "\t").encode("ascii")
    return b"\n" + span + bytes([checksum(span)]) + b"\r"


def encode_frame(groups: list[tuple[str, str]] | list[tuple[str, str, str | None]],
                 mode: TicMode) -> bytes:
    parts: list[bytes] = []
    for group in groups:
        horodate = group[2] if len(group) == 3 else None
        parts.append(encode_group(group[0], group[1], mode, horodate))
    return b"\x02" + b"".join(parts) + b"\x03"


@dataclass(frozen=True, slots=True)
class TicFrame:
    groups: tuple[TicGroup, ...]
    interrupted: bool
    checksum_errors: int
    malformed: int
    #: The frame's bytes as received, STX through ETX or EOT (frame traces).
    raw: bytes = b""

    @property
    def mode(self) -> TicMode | None:
        return self.groups[0].mode if self.groups else None

    def values(self) -> dict[str, str]:
        return {g.label: g.data for g in self.groups}


@dataclass(slots=True)
class TicCounters:
    """Running totals (web UI, status, hourly warning)."""

    frames: int = 0
    interrupted: int = 0
    valid_groups: int = 0
    checksum_errors: int = 0
    malformed: int = 0
    noise: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"frames": self.frames, "interrupted": self.interrupted,
                "validGroups": self.valid_groups, "checksumErrors": self.checksum_errors,
                "malformed": self.malformed, "noise": self.noise}


@dataclass(slots=True)
class _OpenFrame:
    groups: list[TicGroup] = field(default_factory=list)
    checksum_errors: int = 0
    malformed: int = 0
    raw: bytearray = field(default_factory=bytearray)


class TicDecoder:
    """Incremental decoder: `feed` bytes as they come, get the frames they complete."""

    def __init__(self, mode: TicMode | None = None) -> None:
        self.mode = mode
        self.counters = TicCounters()
        self._synced = False            # an STX seen: bytes outside frames are now noise
        self._frame: _OpenFrame | None = None
        self._group: bytearray | None = None
        self._group_overflow = False
        #: Valid groups in a row (no dropped group between them): mode detection waits for 3.
        self.consecutive_valid = 0
        #: Called with each valid group as soon as it is checked (mode detection, live values).
        self.on_group: Callable[[TicGroup], None] | None = None

    def feed(self, data: bytes) -> list[TicFrame]:
        done: list[TicFrame] = []
        for byte in data:
            frame = self._byte(byte)
            if frame is not None:
                done.append(frame)
        return done

    def finish(self) -> list[TicFrame]:
        """End of input: an open frame is interrupted."""
        if self._frame is None:
            return []
        return [self._close(interrupted=True)]

    def _byte(self, byte: int) -> TicFrame | None:
        if byte == STX:
            previous = self._close(interrupted=True) if self._frame is not None else None
            self._synced = True
            self._frame = _OpenFrame()
            self._frame.raw.append(byte)
            return previous
        if self._frame is None:
            if self._synced:
                self.counters.noise += 1
            return None
        self._frame.raw.append(byte)
        if byte == ETX:
            return self._close(interrupted=False)
        if len(self._frame.raw) > MAX_FRAME_BYTES:
            # A line that never sends ETX must not grow memory: the frame is cut here.
            return self._close(interrupted=True)
        if byte == EOT:
            return self._close(interrupted=True)
        if byte == LF:
            if self._group is not None:
                self._drop(GroupFault.MALFORMED)
            self._group = bytearray()
            self._group_overflow = False
            return None
        if self._group is None:
            self.counters.noise += 1
            return None
        if byte == CR:
            self._end_group()
            return None
        if len(self._group) >= MAX_GROUP_BYTES:
            self._group_overflow = True
        else:
            self._group.append(byte)
        return None

    def _end_group(self) -> None:
        assert self._group is not None and self._frame is not None
        content = bytes(self._group)
        self._group = None
        if self._group_overflow:
            self._drop(GroupFault.MALFORMED)
            return
        result = parse_group(content, self.mode)
        if isinstance(result, GroupFault):
            self._drop(result)
            return
        self._frame.groups.append(result)
        self.counters.valid_groups += 1
        self.consecutive_valid += 1
        if self.on_group is not None:
            self.on_group(result)

    def _drop(self, fault: GroupFault) -> None:
        assert self._frame is not None
        self._group = None
        self.consecutive_valid = 0
        if fault is GroupFault.CHECKSUM:
            self._frame.checksum_errors += 1
            self.counters.checksum_errors += 1
        else:
            self._frame.malformed += 1
            self.counters.malformed += 1

    def _close(self, *, interrupted: bool) -> TicFrame:
        assert self._frame is not None
        if self._group is not None:
            self._drop(GroupFault.MALFORMED)      # a group cut by the frame's end
        frame = TicFrame(groups=tuple(self._frame.groups), interrupted=interrupted,
                         checksum_errors=self._frame.checksum_errors,
                         malformed=self._frame.malformed, raw=bytes(self._frame.raw))
        self._frame = None
        self.counters.frames += 1
        if interrupted:
            self.counters.interrupted += 1
        return frame


def decode_capture(data: bytes, mode: TicMode | None = None) -> tuple[list[TicFrame], TicCounters]:
    """Every frame of a capture file (no speed known: each group's own mode, unless `mode`)."""
    decoder = TicDecoder(mode)
    frames = decoder.feed(data) + decoder.finish()
    return frames, decoder.counters


# --------------------------------------------------------------------------- serial reader

#: Loss and return messages (the manual's French "ICT" kept, docs/formats.md §1.3).
LOSS_MESSAGE: Final = "Loss of ICT accessory"
RETURN_MESSAGE: Final = "Return ICT accessory"
DETECTION_SLOT_S: Final = 5.0
DETECTION_GROUPS: Final = 3
REDETECT_AFTER_S: Final = 60.0
MISSING_AT_START_S: Final = 60.0
PATH_CHECK_S: Final = 1.0

#: Receives accessory events ("loss" or "return") so the service can journal and alarm them.
AccessoryListener = Callable[[str], None]
#: Opens the port at a speed; returns a byte stream reader and a closer.
PortOpener = Callable[[str, int], Awaitable[tuple[asyncio.StreamReader, Callable[[], None]]]]


async def open_serial(path: str, baud: int) -> tuple[asyncio.StreamReader, Callable[[], None]]:
    """pyserial-asyncio at `baud`, 7E1. A pseudo-terminal (a software bridge, the demo's meter)
    refuses 7-bit framing on Linux (EINVAL): it is opened 8N1, TIC bytes being 7-bit anyway. The
    gateway's reader, its discovery and the `sunpm tic`/`discover` commands all open through here,
    so a port one of them reads the others read too."""
    try:
        reader, writer = await serial_asyncio.open_serial_connection(
            url=path, baudrate=baud, bytesize=7, parity="E", stopbits=1)
    except (OSError, termios.error) as err:
        # termios.error is no OSError: its errno is its first argument.
        code = err.errno if isinstance(err, OSError) else (err.args[0] if err.args else None)
        if not os.path.realpath(path).startswith("/dev/pts/") or code not in (errno.EINVAL, None):
            raise
        reader, writer = await serial_asyncio.open_serial_connection(url=path, baudrate=baud)
    return reader, writer.close


@dataclass(frozen=True, slots=True)
class LabelValue:
    data: str
    horodate: str | None
    received_ns: int                # monotonic


class _ReaderRemoved(DeviceError):
    """The `TIC_Port` path went away while open: the accessory's loss, no port failure."""


class TicReader:
    """Reads `TIC_Port` for ever: mode detection, frames, accessory loss and return.

    Keeps each label's last valid value; `run()` is the task body (the owner's TaskGroup runs it).
    """

    def __init__(self, path: str, *, baud: int | None = None,
                 on_accessory: AccessoryListener | None = None,
                 opener: PortOpener | None = None,
                 clock: Clock = SYSTEM_CLOCK,
                 detection_slot_s: float = DETECTION_SLOT_S,
                 trace: TraceHook | None = None) -> None:
        self.path = path
        self.trace = trace
        self.fixed_baud = baud
        self.counters = TicCounters()
        self.values: dict[str, LabelValue] = {}
        self.mode: TicMode | None = TicMode.from_baud(baud) if baud else None
        self.present = False
        self.lost = False
        self.frames: asyncio.Queue[TicFrame] | None = None
        self._on_accessory = on_accessory
        self._opener: PortOpener = opener or open_serial
        self.clock = clock
        self._started_ns = clock.monotonic_ns()
        self._was_present = False
        self._detection_slot_ns = int(detection_slot_s * 1e9)
        self._last_valid_ns = clock.monotonic_ns()
        self._dropped_reported = (0, 0)
        self._last_hourly_ns = clock.monotonic_ns()
        self._port_failures = 0
        self._port_warned_ns = 0

    def subscribe(self, maxsize: int = 64) -> asyncio.Queue[TicFrame]:
        # Bounded: a slow consumer (the CLI printing) loses frames rather than growing memory.
        self.frames = asyncio.Queue(maxsize=maxsize)
        return self.frames

    def resume(self, previous: TicReader) -> None:
        """Take over the accessory's state from the reader this one replaces (a configuration
        reload is no start): a loss it raised is not raised again and its return is raised, a
        meter it saw is lost at once when missing, and one missing since the start is lost 60 s
        after that start."""
        self.lost = previous.lost
        self._was_present = previous._was_present
        self._started_ns = previous._started_ns

    def restore_loss(self) -> None:
        """The accessory was lost when the gateway last stopped (the journal says so): its loss
        is not raised again, and its return is."""
        self.lost = True

    def _signal(self, event: str) -> None:
        if event == "loss":
            if self.lost:
                return
            self.lost = True
            log.error(LOSS_MESSAGE)
        else:
            if not self.lost:
                return
            self.lost = False
            log.info(RETURN_MESSAGE)
        if self._on_accessory is not None:
            self._on_accessory(event)

    async def run(self) -> None:
        while True:
            if not os.path.exists(self.path):
                self.present = False
                if self.lost or self._was_present \
                        or self.clock.monotonic_ns() - self._started_ns >= MISSING_AT_START_S * 1e9:
                    self._signal("loss")
                await self.clock.sleep(PATH_CHECK_S)
                continue
            try:
                await self._read_port()
            except _ReaderRemoved:
                self.present = False            # the loss line below says it all
                self._signal("loss")
                await self.clock.sleep(PATH_CHECK_S)
            except (OSError, termios.error, DeviceError) as err:
                self._port_failed(err)
                self.present = False
                self._signal("loss")
                await self.clock.sleep(PATH_CHECK_S)

    def _port_failed(self, err: BaseException) -> None:
        # Retried every PATH_CHECK_S: a port that cannot open (no dialout right) would log
        # a warning a second. The first failure warns, the rest are counted and summed up hourly.
        now = self.clock.monotonic_ns()
        self._port_failures += 1
        if self._port_failures == 1 or now - self._port_warned_ns >= 3600 * 10**9:
            if self._port_failures == 1:
                log.warning("TIC port read failed. path=%s error=%s", self.path, err)
            else:
                log.warning("TIC port read failed %d times since the first failure. path=%s "
                            "error=%s", self._port_failures, self.path, err)
            self._port_warned_ns = now
        else:
            log.debug("TIC port read failed. path=%s error=%s", self.path, err)

    async def _read_port(self) -> None:
        bauds = self._speeds()
        baud = next(bauds)
        opened = await self._open(baud)
        reader, close = opened
        working = False
        decoder = self._decoder(baud)
        slot_start = self.clock.monotonic_ns()
        try:
            while True:
                if not os.path.exists(self.path):
                    raise _ReaderRemoved(f"{self.path}: TIC reader removed")
                try:
                    async with asyncio.timeout(PATH_CHECK_S):
                        chunk = await reader.read(256)
                except TimeoutError:
                    chunk = b""
                else:
                    if not chunk:
                        raise DeviceError(f"{self.path}: end of stream")
                if not working:
                    # Back once a read went through: a reader that opens but fails every read
                    # is one loss, not a loss and a return at every retry.
                    working = True
                    self._port_back()
                self._handle(decoder.feed(chunk))
                self._hourly_warning()
                now = self.clock.monotonic_ns()
                if self.fixed_baud is None and self._should_switch(now, slot_start):
                    close()
                    self._handle(decoder.finish())
                    baud = next(bauds)
                    reader, close = await self._open(baud)
                    decoder = self._decoder(baud)
                    slot_start = now
        finally:
            close()
            # The end of the input interrupts an open frame (docs/behaviour.md §2.9 item 1):
            # counted and traced, its valid groups already kept.
            self._handle(decoder.finish())

    def _port_back(self) -> None:
        if self._port_failures:
            log.info("TIC port open again after %d failed attempts. path=%s",
                     self._port_failures, self.path)
            self._port_failures = 0
        self._was_present = True
        self.present = True
        self._signal("return")

    def _should_switch(self, now: int, slot_start: int) -> bool:
        if self.mode is None:
            return now - slot_start >= self._detection_slot_ns
        if now - self._last_valid_ns >= REDETECT_AFTER_S * 1e9:
            log.info("No valid TIC group for %d s; detecting the mode again. path=%s",
                     int(REDETECT_AFTER_S), self.path)
            self.mode = None
            return True
        return False

    def _speeds(self) -> Iterator[int]:
        if self.fixed_baud is not None:
            while True:
                yield self.fixed_baud
        # A port opened again (the meter plugged back, a read error) starts at the speed its
        # mode was detected at: a detected mode never switches until 60 s without a valid group.
        first = self.mode.baud if self.mode is not None else 9600
        while True:
            yield first
            yield 1200 if first == 9600 else 9600

    async def _open(self, baud: int) -> tuple[asyncio.StreamReader, Callable[[], None]]:
        return await self._opener(self.path, baud)

    def _decoder(self, baud: int) -> TicDecoder:
        mode = TicMode.from_baud(baud)
        decoder = TicDecoder(mode)
        decoder.counters = self.counters

        def on_group(group: TicGroup) -> None:
            now = self.clock.monotonic_ns()
            self._last_valid_ns = now
            self.values[group.label] = LabelValue(group.data, group.horodate, now)
            if self.mode is None and decoder.consecutive_valid >= DETECTION_GROUPS:
                self.mode = mode
                log.info("%s mode detected at %d baud", mode.value, baud)

        decoder.on_group = on_group
        return decoder

    def _handle(self, frames: list[TicFrame]) -> None:
        if self.trace is not None:
            for frame in frames:
                # `tic` traces: one `<=` line per frame (docs/formats.md §11).
                self.trace(FrameTrace(ts_ns=self.clock.wall_ns(), interface="tic",
                                      direction=Direction.RECEIVED, data=frame.raw))
        if self.frames is None:
            return
        for frame in frames:
            with contextlib.suppress(asyncio.QueueFull):
                self.frames.put_nowait(frame)

    def _hourly_warning(self) -> None:
        now = self.clock.monotonic_ns()
        if now - self._last_hourly_ns < 3600 * 10**9:
            return
        self._last_hourly_ns = now
        checksum_total, malformed_total = self._dropped_reported
        c = self.counters.checksum_errors - checksum_total
        m = self.counters.malformed - malformed_total
        self._dropped_reported = (self.counters.checksum_errors, self.counters.malformed)
        if c or m:
            log.warning("%d groups dropped in the last hour (%d checksum, %d malformed)",
                        c + m, c, m)


# --------------------------------------------------------------------------- driver


class TicDriver(ProtocolDriver):
    """The `TIC1` device: each variable is the label named by its `Info1`.

    A label counts as read in a poll when a valid group carrying it arrived since the previous
    poll (quality 1 otherwise); while the accessory is lost every variable has quality 5.
    """

    name = "tic"

    def __init__(self, reader: TicReader) -> None:
        self.reader = reader
        self._task: asyncio.Task[None] | None = None
        self._last_poll_ns: int | None = None
        self._opened_ns = reader.clock.monotonic_ns()
        #: When each plan (by file and variables, so a reload's equal plan keeps its window) was
        #: last read, and where the latest read's window began: a parameter read right after a
        #: poll shares that poll's window instead of opening an empty one of its own.
        self._plan_reads: dict[tuple[str, tuple[int, ...]], int] = {}
        self._window_start = self._opened_ns
        self._warned_addresses: set[str] = set()

    async def open(self, link: LinkSettings) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.reader.run(), name=f"tic:{self.reader.path}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def read(self, device: Device, plan: ReadPlan) -> Readings:
        now = self.reader.clock.monotonic_ns()
        key = (plan.definition.file_name, tuple(v.index for v in plan.variables))
        since = max(self._plan_reads.get(key, self._opened_ns), self._window_start)
        if len(self._plan_reads) >= _MAX_PLANS and key not in self._plan_reads:
            self._plan_reads.clear()        # plans replaced many times over: start afresh
        self._plan_reads[key] = now
        self._window_start = since
        self._last_poll_ns = now
        self._check_address(device)
        values: dict[int, Reading] = {}
        for var in plan.variables:
            values[var.index] = self._reading(var, since)
        return Readings(device=device.index, ts_ns=self.reader.clock.wall_ns(), values=values)

    def _reading(self, var: Variable, since_ns: int) -> Reading:
        if self.reader.lost or not self.reader.present:
            return Reading(None, Quality.DISCONNECTED)
        label = var.tic_label or var.info1
        got = self.reader.values.get(label)
        if got is None or got.received_ns < since_ns:
            return Reading(None, Quality.TIMEOUT)
        return Reading(got.data, Quality.GOOD)

    def _check_address(self, device: Device) -> None:
        for label in ("ADCO", "ADSC"):
            got = self.reader.values.get(label)
            if got is None or not device.serial_number or got.data == device.serial_number:
                continue
            if got.data not in self._warned_addresses:
                self._warned_addresses.add(got.data)
                log.warning("Meter address %s differs from serialNumber %s. device=%s",
                            got.data, device.serial_number, device.index)

    async def write(self, device: Device, var: Variable, raw: RawValue) -> RawValue:
        raise DeviceError(f"{device.name}: TIC variables cannot be written")
