"""Modbus RTU: one task per serial bus, strictly one request in flight (docs/behaviour.md §2.4).

Before each request the line must have been silent max(`interFrame(ms)`, 3.5 characters; 1.75 ms
above 19200 baud), then stray input is flushed (counted late, traced `*** DISCARDED ***`). The
3.5 characters are 38.5 bit times whatever the port's framing: the Modbus serial line standard
counts an RTU character as 11 bits (8N1 ports included, whose characters take 10 on the wire).
A reply ends at the length its function implies and is accepted only if unit id, function and CRC
match. `timeout(ms)` runs from the end of the request to the end of the reply.

Late replies: after a request to unit U times out, nothing is sent to U until the line has been
silent one more `timeout(ms)` at a stretch, counted from the last byte heard or sent. Any such
stretch since the timeout counts, idle time between polls included, so a switched-off unit costs
its timeout once per poll, not twice. Another unit may be served meanwhile, since a late reply
from U fails its unit check. So a reply up to twice its timeout late is never taken for another
request.

Peer quirks: some converters put a 0x00 before the reply when the line turns around, and 2-wire
adapters with local echo hand back the request itself; the first fails the unit check, the second
the length or CRC check, and both are discarded with quality 3 rather than guessed at.
"""

from __future__ import annotations

import asyncio
import termios
from collections.abc import Callable
from typing import Final, NoReturn

import serial
import serial_asyncio

from config.model import Device, DeviceKind, Parity, Quality, SerialPort
from pipeline.clock import NS_PER_S, SYSTEM_CLOCK, Clock
from pipeline.drivers._base import DeviceError, LinkSettings, ModbusRequestError
from pipeline.drivers.modbus.driver import ModbusDriver
from pipeline.drivers.modbus.frames import crc16, rtu_frame, rtu_reply_length
from pipeline.drivers.modbus.link import Job, QueuedLink, Receiver, Reconnection
from pipeline.drivers.modbus.trace import Direction, ModbusCounters, TraceError, TraceHook

__all__ = ["ModbusRtuDriver", "RtuBus"]

_REOPEN_EVERY_S: Final = 10.0
_PARITY: Final = {Parity.NONE: serial.PARITY_NONE, Parity.EVEN: serial.PARITY_EVEN,
                  Parity.ODD: serial.PARITY_ODD}
#: 3.5 characters of 11 bits (docs/behaviour.md §2.4 item 2).
_SILENCE_BITS: Final = 38.5
#: Above 19200 baud the standard fixes the silence instead of scaling it with the speed.
_FAST_SILENCE_S: Final = 0.00175
#: After a broadcast, the line stays quiet this long so that every unit executes it before the
#: next request (Modbus over serial line §2.4.1: "turnaround delay", typically 100 to 200 ms;
#: **Decision**: the upper end).
TURNAROUND_S: Final = 0.2
#: What pyserial raises while opening or configuring a port: SerialException (an OSError) for
#: a missing device, termios.error from tcsetattr for settings the port refuses (a parity a
#: USB adapter or pty cannot set), ValueError for values it rejects before asking the port.
_PORT_ERRORS: Final = (OSError, termios.error, ValueError)


class _SerialReceiver(Receiver):
    """Also times the last byte heard (the inter-frame silence counts from it)."""

    def __init__(self, heard: Callable[[int], None], clock: Clock) -> None:
        super().__init__()
        self._heard = heard
        self._clock = clock
        self.last_rx = 0.0

    def received(self, data: bytes) -> None:
        self.last_rx = self._clock.monotonic_ns() / NS_PER_S
        self._heard(len(data))

    def closed_error(self) -> Exception:
        return OSError("serial port closed")


class RtuBus(QueuedLink):
    """One RS485 bus; a `RegisterReader` and a `poller.ModbusLink`.

    `path` overrides the port row's device (tests pass a pty).
    """

    def __init__(self, port: SerialPort, *, path: str | None = None,
                 trace: TraceHook | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(interface=f"serial{port.number}", trace=trace, clock=clock)
        self.name = self.interface
        self.port = port
        self.path = path or port.path
        self.requests_sent = 0
        #: Bytes heard on the line, answers and noise alike.
        self.bytes_received = 0
        bits = 1 + port.data_bits + (0 if port.parity is Parity.NONE else 1) + port.stop_bits
        #: How long one character of this port's framing takes on the wire.
        self.char_s = bits / port.speed
        three_and_half = _FAST_SILENCE_S if port.speed > 19200 else _SILENCE_BITS / port.speed
        self.silence_s = max(port.inter_frame_ms / 1000, three_and_half)
        self._receiver: _SerialReceiver | None = None
        #: A port that fails to open, or fails while open, is tried again every 10 s. It is back
        #: once a request went out and its wait ended without a port error (an answer, or a
        #: unit's silence), not when it opens: a port that opens and fails at each use (a USB
        #: adapter whose device went away) is one episode, one WARNING.
        self._reconnection = Reconnection(
            self.interface, clock, (_REOPEN_EVERY_S,), jitter=0.0,
            went_down="%s: %s; its devices get quality 5, reopening every "
                      f"{int(_REOPEN_EVERY_S)} s",
            still_down="%s: still unavailable (%s); %d attempts failed in the last hour",
            came_back="%s: " + (self.path or "").replace("%", "%%") + " open again")
        self._last_tx_end = 0.0
        #: The end of the turnaround delay after the last broadcast (monotonic seconds).
        self._turnaround_until = 0.0
        #: When the last byte heard or sent ended on the wire (monotonic seconds).
        self._line_quiet_from = 0.0
        #: unit id -> (monotonic time its last request timed out, its timeout in seconds): nothing
        #: is sent to it until the line has been silent that long since (docs/behaviour.md §2.4
        #: item 5).
        self._quarantine: dict[int, tuple[float, float]] = {}
        #: unit id -> counters of the device that sent its last request: stray bytes flushed
        #: before a request count as a late frame of the unit they come from (their first byte),
        #: not of the device about to be asked (None: the tunnel or discovery asked).
        self._askers: dict[int, ModbusCounters | None] = {}

    # ------------------------------------------------------------------ one exchange

    async def _open(self) -> _SerialReceiver:
        if self._receiver is not None and self._receiver.lost is None:
            return self._receiver
        self._close_port()
        if self._reconnection.waiting:
            raise ModbusRequestError(f"{self.interface}: port unavailable",
                                     quality=Quality.DISCONNECTED)
        if not self.path:
            raise ModbusRequestError(f"{self.interface}: no serial device configured",
                                     quality=Quality.DISCONNECTED)
        try:
            transport, receiver = await serial_asyncio.create_serial_connection(
                asyncio.get_running_loop(), lambda: _SerialReceiver(self._heard, self.clock),
                self.path,
                baudrate=self.port.speed, bytesize=self.port.data_bits,
                parity=_PARITY[self.port.parity], stopbits=self.port.stop_bits,
                # An exclusive lock (flock): a second process on the line (`sunpm discover`
                # beside the gateway) would read half of each answer and garble the polls.
                exclusive=True)
        except _PORT_ERRORS as err:
            self._reconnection.failed(f"cannot open {self.path} ({err})")
            raise ModbusRequestError(f"{self.interface}: cannot open {self.path} ({err})",
                                     quality=Quality.DISCONNECTED) from err
        assert isinstance(receiver, _SerialReceiver)
        # pyserial-asyncio calls connection_made on the next loop turn; the transport is ours now.
        receiver.transport = transport
        self._receiver = receiver
        self.generation += 1
        return receiver

    def _shutdown(self) -> None:
        self._close_port()

    def _close_port(self) -> None:
        receiver, self._receiver = self._receiver, None
        if receiver is not None and receiver.transport is not None:
            receiver.transport.close()

    def _line_busy(self, start: float, end: float) -> None:
        """Bytes on the wire from `start` to `end`: the silence before them ended at `start`, and
        a unit waiting out a late reply is free if that silence lasted its timeout."""
        quiet_from = self._line_quiet_from
        for unit, (timed_out_at, timeout_s) in list(self._quarantine.items()):
            if start - max(quiet_from, timed_out_at) >= timeout_s:
                del self._quarantine[unit]
        self._line_quiet_from = max(quiet_from, end)

    def _heard(self, size: int) -> None:
        self.bytes_received += size
        now = self._now()
        # A chunk arrives when its last byte is complete; it began size characters earlier.
        self._line_busy(now - size * self.char_s, now)

    async def _wait_silence(self, receiver: _SerialReceiver, silence_s: float,
                            since: float = 0.0) -> None:
        """Wait until nothing has arrived for `silence_s` (counting from `since` at the least)."""
        while True:
            quiet_from = max(receiver.last_rx, self._last_tx_end, since)
            wait = quiet_from + silence_s - self._now()
            if wait <= 0:
                return
            await self.clock.sleep(wait)

    def _flush(self, receiver: _SerialReceiver) -> None:
        if receiver.buffer:
            data = bytes(receiver.buffer)
            receiver.buffer.clear()
            self._discard(data, self._askers.get(data[0]))

    async def _exchange(self, job: Job) -> bytes:
        receiver = await self._open()
        quarantined = self._quarantine.pop(job.unit_id, None)
        if quarantined is not None:
            timed_out_at, timeout_s = quarantined
            await self._wait_silence(receiver, timeout_s, since=timed_out_at)
        await self._wait_silence(receiver, self.silence_s, since=self._turnaround_until)
        self._flush(receiver)
        frame = rtu_frame(job.unit_id, job.pdu)
        assert receiver.transport is not None
        receiver.transport.write(frame)
        self.requests_sent += 1
        self._askers[job.unit_id] = job.counters
        sent_at = self._now()
        self._last_tx_end = sent_at + len(frame) * self.char_s
        self._line_busy(sent_at, self._last_tx_end)
        self._emit(Direction.SENT, frame)
        if job.unit_id == 0:
            self._turnaround_until = self._last_tx_end + TURNAROUND_S
            return b""
        deadline = self._last_tx_end + job.timeout_ms / 1000
        try:
            reply = await self._receive(receiver, job, deadline)
        except ModbusRequestError as err:
            if err.quality in (Quality.TIMEOUT, Quality.BAD_FRAME):
                # Counted from the request's deadline even when another unit's stray frame failed
                # it earlier: the unit may still be answering until then, and one timeout more.
                self._quarantine[job.unit_id] = (max(deadline, self._now()),
                                                 job.timeout_ms / 1000)
                self._reconnection.restored()
            raise
        self._reconnection.restored()
        return reply

    async def _receive(self, receiver: _SerialReceiver, job: Job, deadline: float) -> bytes:
        buffer = receiver.buffer
        while True:
            if receiver.lost is not None:
                self._close_port()
                self._reconnection.failed(f"port error ({receiver.lost})")
                raise ModbusRequestError(f"{self.interface}: port error ({receiver.lost})",
                                         quality=Quality.DISCONNECTED)
            if buffer and buffer[0] != job.unit_id:
                self._bad(receiver, TraceError.BAD_SLAVE,
                          f"reply from unit {buffer[0]}, expected {job.unit_id}",
                          other_unit=buffer[0])
            if len(buffer) >= 2 and buffer[1] not in (job.pdu[0], job.pdu[0] | 0x80):
                self._bad(receiver, TraceError.BAD_SLAVE,
                          f"reply function {buffer[1]}, expected {job.pdu[0]}")
            size = rtu_reply_length(bytes(buffer[:3]))
            if size == -1:
                # Unknown function (tunnel): the frame ends at a 3.5-character silence.
                if self._now() - receiver.last_rx >= self.silence_s:
                    return self._accept(receiver, len(buffer))
            elif size is not None and len(buffer) >= size:
                return self._accept(receiver, size)
            remaining = deadline - self._now()
            if remaining <= 0:
                if not buffer:
                    self._emit(Direction.RECEIVED, b"", TraceError.TIMEOUT)
                    raise ModbusRequestError(
                        f"{self.interface}: unit {job.unit_id}: no answer within "
                        f"{job.timeout_ms} ms", quality=Quality.TIMEOUT)
                self._bad(receiver, TraceError.CRC, "incomplete reply")
            receiver.arrived.clear()
            wait = remaining if size != -1 else min(remaining, self.silence_s)
            await self.clock.wait_until(self.clock.monotonic_ns() + round(wait * NS_PER_S),
                                        receiver.arrived)

    def _accept(self, receiver: _SerialReceiver, size: int) -> bytes:
        frame = bytes(receiver.buffer[:size])
        del receiver.buffer[:size]
        if crc16(frame[:-2]) != int.from_bytes(frame[-2:], "little"):
            self._emit(Direction.RECEIVED, frame, TraceError.CRC)
            raise ModbusRequestError(f"{self.interface}: CRC error", quality=Quality.BAD_FRAME)
        error = TraceError.EXCEPTION if frame[1] & 0x80 else TraceError.NONE
        self._emit(Direction.RECEIVED, frame, error)
        return frame[1:-2]

    def _bad(self, receiver: _SerialReceiver, error: TraceError, detail: str, *,
             other_unit: int | None = None) -> NoReturn:
        data = bytes(receiver.buffer)
        receiver.buffer.clear()
        self._emit(Direction.RECEIVED, data, error)
        raise ModbusRequestError(f"{self.interface}: {detail}", quality=Quality.BAD_FRAME,
                                 other_unit=other_unit)


class ModbusRtuDriver(ModbusDriver[RtuBus]):
    """The Modbus RTU `ProtocolDriver` for one serial port (daq.csv `protocol` modbusRTU)."""

    name = "modbusRTU"

    def __init__(self, *, trace: TraceHook | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(trace=trace, clock=clock)
        self.bus: RtuBus | None = None

    async def open(self, link: LinkSettings) -> None:
        if link.serial is None:
            raise DeviceError("modbusRTU: no serial port row to open")
        self.bus = RtuBus(link.serial, trace=self.trace, clock=self.clock)
        self.bus.start()

    def attach(self, bus: RtuBus) -> None:
        """Use an existing bus (tests on a pty; the tunnel shares the same bus)."""
        self.bus = bus

    def _link_of(self, device: Device) -> RtuBus:
        if self.bus is None:
            raise DeviceError(f"device {device.index}: modbusRTU driver is not open")
        if device.kind is not DeviceKind.MODBUS_RTU:
            raise DeviceError(f"device {device.index}: '{device.interface}' is not a serial port")
        return self.bus

    async def close(self) -> None:
        if self.bus is not None:
            await self.bus.close()
            self.bus = None
