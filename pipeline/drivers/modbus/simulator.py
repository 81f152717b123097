"""Simulated Modbus devices: a lean TCP server and an RTU responder over a file descriptor.

Used by the demo plant, the tests and benchmarks/poll_sweep.py. Lean on purpose: one asyncio
server can host hundreds of devices, which pymodbus' server cannot do at benchmark speed. Faults a
real bus shows can be switched on per device: late answers, exceptions for unconfigured addresses
("holes") or long reads, a wrong unit id, a bad CRC, garbage before the reply.
"""

from __future__ import annotations

import asyncio
import os
import struct
import tty
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Self

from pipeline.drivers.modbus.frames import crc16, mbap, parse_mbap, rtu_frame

__all__ = ["RtuResponder", "SimulatedDevice", "TcpSimulator", "serve_fleet", "serve_rtu_bus"]

#: How early a wire-timed reply's timer fires, to be written on time (epoll's resolution).
_TIMER_SLACK_S = 0.001


@dataclass(slots=True)
class SimulatedDevice:
    """A register image with switchable faults; mutable so tests can change it between polls."""

    holding: dict[int, int] = field(default_factory=dict)
    input: dict[int, int] = field(default_factory=dict)
    coils: dict[int, int] = field(default_factory=dict)
    discrete: dict[int, int] = field(default_factory=dict)
    #: Seconds before answering (a late device); the responder stays busy meanwhile.
    delay_s: float = 0.0
    #: Reads touching an address no image names answer exception 0x02.
    strict_holes: bool = False
    #: Reads longer than this answer exception 0x03.
    max_read: int | None = None
    #: Answer every request with this exception code.
    exception: int | None = None
    #: Answer with this unit id instead of the request's.
    answer_unit: int | None = None
    bad_crc: bool = False
    garbage: bytes = b""
    server_id: bytes = b"sunpm-sim"
    requests: int = 0

    def table(self, function: int) -> dict[int, int]:
        return {1: self.coils, 2: self.discrete, 3: self.holding, 4: self.input,
                5: self.coils, 6: self.holding, 15: self.coils, 16: self.holding}[function]

    def set_words(self, address: int, words: Iterable[int], *, kind: int = 3) -> None:
        table = self.table(kind)
        for offset, word in enumerate(words):
            table[address + offset] = word & 0xFFFF

    def answer(self, pdu: bytes) -> bytes:
        """The reply PDU for a request PDU."""
        self.requests += 1
        function = pdu[0]
        if self.exception is not None:
            return bytes((function | 0x80, self.exception))
        if function == 0x11:            # report server id: a reply length no table gives
            return bytes((0x11, len(self.server_id) + 1)) + self.server_id + b"\xff"
        if function not in (1, 2, 3, 4, 5, 6, 15, 16):
            return bytes((function | 0x80, 1))
        address, count = struct.unpack(">HH", pdu[1:5])
        table = self.table(function)
        if function in (5, 6):
            if function == 5:
                table[address] = 1 if count == 0xFF00 else 0
            else:
                table[address] = count
            return pdu[:5]
        if function in (15, 16):
            body = pdu[6:]
            if function == 16:
                for i in range(count):
                    table[address + i] = int.from_bytes(body[2 * i:2 * i + 2], "big")
            else:
                for i in range(count):
                    table[address + i] = (body[i >> 3] >> (i & 7)) & 1
            return pdu[:5]
        limit = 2000 if function in (1, 2) else 125
        if count < 1 or count > limit or (self.max_read is not None and count > self.max_read):
            return bytes((function | 0x80, 3))
        addresses = range(address, address + count)
        if self.strict_holes and any(a not in table for a in addresses):
            return bytes((function | 0x80, 2))
        if function in (1, 2):
            bits = bytearray((count + 7) // 8)
            for i, a in enumerate(addresses):
                if table.get(a, 0):
                    bits[i >> 3] |= 1 << (i & 7)
            return bytes((function, len(bits))) + bytes(bits)
        get = table.get
        data = struct.pack(f">{count}H", *(get(a, 0) for a in addresses))
        return bytes((function, len(data))) + data


class _TcpPeer(asyncio.Protocol):
    """One client connection; requests are answered in order, each after its device's delay."""

    def __init__(self, units: dict[int, SimulatedDevice], peers: set[_TcpPeer],
                 max_clients: int | None = None) -> None:
        self.units = units
        self.peers = peers
        self.max_clients = max_clients
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy_until = 0.0
        self.pending: set[asyncio.TimerHandle] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.max_clients is not None and len(self.peers) >= self.max_clients:
            transport.close()           # its client slots are taken, as on many inverters
            return
        self.peers.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.peers.discard(self)
        for handle in self.pending:
            handle.cancel()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 7:
            tid, _, length, unit = parse_mbap(bytes(self.buffer[:7]))
            if len(self.buffer) < 6 + length:
                return
            pdu = bytes(self.buffer[7:6 + length])
            del self.buffer[:6 + length]
            device = self.units.get(unit)
            if device is None:
                continue
            reply_unit = device.answer_unit if device.answer_unit is not None else unit
            frame = device.garbage + mbap(tid, reply_unit, device.answer(pdu))
            loop = asyncio.get_running_loop()
            if not device.delay_s and self.busy_until <= loop.time():
                assert self.transport is not None
                self.transport.write(frame)
                continue
            # Answers leave in request order, each after its device's delay, as a real device
            # working through its requests one at a time.
            self.busy_until = max(loop.time(), self.busy_until) + device.delay_s
            self.pending.add(loop.call_at(self.busy_until, self._send_later, frame))

    def _send_later(self, frame: bytes) -> None:
        now = asyncio.get_running_loop().time()
        self.pending = {h for h in self.pending if h.when() > now}
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)


class TcpSimulator:
    """A Modbus TCP server on 127.0.0.1 answering for `units`; unknown units never answer.

    `max_clients`: connections beyond it are closed at once (a device taking one client only).
    """

    def __init__(self, units: dict[int, SimulatedDevice], host: str = "127.0.0.1",
                 port: int = 0, max_clients: int | None = None) -> None:
        self.units = units
        self.host = host
        self.port = port
        self.max_clients = max_clients
        self._server: asyncio.Server | None = None
        self._peers: set[_TcpPeer] = set()

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _TcpPeer(self.units, self._peers,
                                                                         self.max_clients),
                                                self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def drop_clients(self) -> None:
        """Close every client connection (a device rebooting)."""
        for peer in list(self._peers):
            if peer.transport is not None:
                peer.transport.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self.drop_clients()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class RtuResponder:
    """Answers RTU requests arriving on `fd` (the master side of a pty) for `units`.

    Each device works on its own, as on a real bus: it answers after its `delay_s`, and a request
    reaching it while it is still busy with the previous one is ignored (counted in
    `ignored_busy`). Requests end at the length their function implies; a bad CRC drops the
    buffer, as a real device ignores a corrupted frame. Unit 0 (broadcast) is executed by every
    device and answered by none; each is busy with it for its `delay_s`.

    With `baud`, frames take their real time on the simulated wire (`char_bits` per character):
    a request ends `len(frame)` characters after it arrived (a pty hands it over at once, when the
    gateway writes it), the device's `delay_s` runs from there, and its reply is written when its
    last byte would be complete. Without, replies leave as soon as the delay allows. Either way
    `silences` gets the silence on the wire before every request but the first, from the end of
    the last frame before it (negative: it collided with a reply still on the wire).
    """

    def __init__(self, fd: int, units: dict[int, SimulatedDevice], *, baud: int | None = None,
                 char_bits: int = 10) -> None:
        self.fd = fd
        self.units = units
        self.char_s = char_bits / baud if baud else 0.0
        self.frames_seen = 0
        self.bad_frames = 0
        self.ignored_busy = 0
        self.silences: list[float] = []
        self._buffer = bytearray()
        self._frame_start = 0.0
        #: End of the last frame on the wire (event loop seconds); None before the first.
        self._quiet_from: float | None = None
        #: unit -> its reply on the wire (start, end) and the timer writing it at its end.
        self._busy: dict[int, tuple[float, float, asyncio.TimerHandle]] = {}
        #: unit -> when it is done executing a broadcast (it answers none, but works `delay_s`).
        self._executing: dict[int, float] = {}

    def start(self) -> None:
        os.set_blocking(self.fd, False)
        asyncio.get_running_loop().add_reader(self.fd, self._readable)

    async def stop(self) -> None:
        asyncio.get_running_loop().remove_reader(self.fd)
        for _, _, handle in self._busy.values():
            handle.cancel()
        self._busy.clear()

    def inject(self, data: bytes) -> None:
        """Put raw bytes on the bus (garbage, a stray frame)."""
        self._write(data)

    def _write(self, data: bytes) -> None:
        """`data` ends on the wire now. The time is read before the write: the gateway may read
        the bytes the moment they are written, and this process may lose the CPU right after
        (a loaded box), so a time read after the write can fall past the gateway's next request
        and shorten the silence seen before it."""
        written_at = asyncio.get_running_loop().time()
        os.write(self.fd, data)
        self._line_used_until(written_at)

    def _line_used_until(self, end: float) -> None:
        self._quiet_from = end if self._quiet_from is None else max(self._quiet_from, end)

    def _readable(self) -> None:
        now = asyncio.get_running_loop().time()
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return
        if not self._buffer:
            self._frame_start = now
        self._buffer += data
        while True:
            size = _request_length(self._buffer)
            if size is None or len(self._buffer) < size:
                return
            frame, self._buffer = bytes(self._buffer[:size]), self._buffer[size:]
            start, self._frame_start = self._frame_start, now
            self._note_silence(start)
            end = start + size * self.char_s
            self._line_used_until(end)
            if crc16(frame[:-2]) != int.from_bytes(frame[-2:], "little"):
                self.bad_frames += 1
                self._buffer.clear()
                return
            self.frames_seen += 1
            self._handle(frame[0], frame[1:-2], end)

    def _note_silence(self, request_start: float) -> None:
        quiet_from = self._quiet_from
        for reply_start, reply_end, _ in self._busy.values():
            if reply_start <= request_start:
                quiet_from = reply_end if quiet_from is None else max(quiet_from, reply_end)
        if quiet_from is not None:
            self.silences.append(request_start - quiet_from)

    def _handle(self, unit: int, pdu: bytes, request_end: float) -> None:
        if unit == 0:
            for number, each in self.units.items():
                each.answer(pdu)
                self._executing[number] = request_end + each.delay_s
            return
        device = self.units.get(unit)
        if device is None:
            return
        if unit in self._busy or self._executing.get(unit, 0.0) > request_end:
            self.ignored_busy += 1
            return
        reply_unit = device.answer_unit if device.answer_unit is not None else unit
        out = rtu_frame(reply_unit, device.answer(pdu))
        if device.bad_crc:
            out = out[:-1] + bytes((out[-1] ^ 0xFF,))
        out = device.garbage + out
        if not device.delay_s and not self.char_s:
            self._write(out)
            return
        reply_start = request_end + device.delay_s
        reply_end = reply_start + len(out) * self.char_s
        loop = asyncio.get_running_loop()
        if self.char_s:
            # epoll wakes up to a millisecond late; the wire is never late, so wake that much
            # early and wait out the rest.
            handle = loop.call_at(reply_end - _TIMER_SLACK_S, self._send_at, unit, out,
                                  reply_end)
        else:
            handle = loop.call_at(reply_end, self._send_later, unit, out)
        self._busy[unit] = (reply_start, reply_end, handle)

    def _send_at(self, unit: int, out: bytes, at: float) -> None:
        loop = asyncio.get_running_loop()
        while loop.time() < at:
            pass
        self._send_later(unit, out)

    def _send_later(self, unit: int, out: bytes) -> None:
        self._busy.pop(unit, None)
        # Written late when the loop was busy: the reply ends on the wire now, not as planned.
        self._write(out)


def _request_length(buffer: bytes | bytearray) -> int | None:
    if len(buffer) < 2:
        return None
    function = buffer[1]
    if function in (1, 2, 3, 4, 5, 6):
        return 8
    if function in (15, 16):
        return None if len(buffer) < 7 else 9 + buffer[6]
    return 4        # unknown function: unit, function, CRC; the device answers exception 0x01


def serve_fleet(devices: int, registers: int, unit_id: int, pipe: Connection, *,
                delays_s: Sequence[float] | None = None) -> None:
    """Process entry point: `devices` servers on 127.0.0.1, each one device of `registers`
    holding registers (register r of device k holds k + r), device k answering after
    `delays_s[k]` when given (in request order, one at a time, as a real device or RTU gateway
    does); sends the ports over `pipe`, then serves until anything arrives on it."""

    async def main() -> None:
        sims = []
        for k in range(devices):
            device = SimulatedDevice(delay_s=delays_s[k] if delays_s is not None else 0.0)
            device.set_words(0, [(k + r) & 0xFFFF for r in range(registers)])
            sims.append(TcpSimulator({unit_id: device}))
        ports = [await sim.start() for sim in sims]
        pipe.send(ports)
        await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
        for sim in sims:
            await sim.stop()

    asyncio.run(main())


def serve_rtu_bus(units: dict[int, SimulatedDevice], baud: int, pipe: Connection) -> None:
    """Process entry point: a pty whose master side a wire-timed `RtuResponder` at `baud` serves
    for `units`. Sends the slave's path over `pipe`, then answers each "silences" received with
    the responder's `silences` so far (and forgets them), until "stop"."""

    async def main() -> None:
        master, slave = os.openpty()
        tty.setraw(master)
        tty.setraw(slave)
        responder = RtuResponder(master, units, baud=baud)
        responder.start()
        loop = asyncio.get_running_loop()
        try:
            pipe.send(os.ttyname(slave))
            while await loop.run_in_executor(None, pipe.recv) == "silences":
                pipe.send(responder.silences)
                responder.silences = []
        finally:
            await responder.stop()
            os.close(master)
            os.close(slave)

    asyncio.run(main())
