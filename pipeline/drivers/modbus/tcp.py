"""Modbus TCP: one connection task per `ip:port`, shared by the unit ids behind it.

Rules (docs/behaviour.md §2.3): one request in flight; `tcpInterFrameMs` of silence after each
answer; an answer must match transaction id, unit id and function (or function + 0x80), anything
else is discarded and counted late, so a reply that arrives after its request timed out is never
taken for the next one; a socket error, or 3 timeouts in a row of polls of units that have
answered since the connection opened, close the socket (timeouts of a unit that never answered,
an absent unit, or of a discovery probe, fail that request only); reconnection at once, then after 1, 2, 4 … 60 s
±10 %, and meanwhile requests fail at once with quality 5.

Own framing over an asyncio Protocol rather than pymodbus' client: the receive buffer is ours, so a
timeout never leaves half a frame consumed, and the matching rule above is exact. Peer quirks:
some devices answer with the request's unit id replaced (gateways answering unit 0 or 255); the
spec wants those discarded, and they are.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import resource
import socket
import struct
from typing import Final

from config.model import Device, DeviceKind, Quality
from pipeline.clock import NS_PER_S, SYSTEM_CLOCK, Clock
from pipeline.drivers._base import DeviceError, LinkSettings, ModbusRequestError
from pipeline.drivers.modbus.driver import ModbusDriver
from pipeline.drivers.modbus.frames import mbap
from pipeline.drivers.modbus.link import Job, QueuedLink, Receiver, Reconnection
from pipeline.drivers.modbus.trace import Direction, ModbusCounters, TraceError, TraceHook

__all__ = ["ModbusTcpDriver", "TcpConnection"]

log = logging.getLogger("sunpm.modbus")

_BACKOFF_S: Final = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0)
_TIMEOUTS_BEFORE_CLOSE: Final = 3
_MAX_MBAP_LENGTH: Final = 254
_MAX_REMEMBERED_DEVICES: Final = 4096
#: Requests whose late answers are still told apart by transaction id: a device answering after
#: this many later requests on its connection counts its late frame on the connection only.
_REMEMBERED_REQUESTS: Final = 64
_MBAP_HEADER: Final = struct.Struct(">HHHB")


class _Receiver(Receiver):
    def closed_error(self) -> Exception:
        return ConnectionResetError("connection closed by peer")


class TcpConnection(QueuedLink):
    """One Modbus TCP connection; a `RegisterReader` and a `poller.ModbusLink`."""

    def __init__(self, host: str, port: int, *, inter_frame_ms: int = 0, keep_alive: bool = True,
                 trace: TraceHook | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(interface="ethernet", peer=f"{host}:{port}", trace=trace, clock=clock)
        self.name = self.peer
        self.host = host
        self.port = port
        self.inter_frame_ms = inter_frame_ms
        self.keep_alive = keep_alive
        self._receiver: _Receiver | None = None
        self._tids = itertools.count(1)
        self._timeouts_in_row = 0
        #: Units that answered since the connection opened: only their timeouts count towards
        #: closing it, so probing absent unit ids never drops the units that are there.
        self._answered_units: set[int] = set()
        self._last_answer = 0.0
        #: Transaction id -> counters of the device that sent it, for the last requests: a late
        #: answer counts for the device it answers, not for the one being polled when it comes
        #: (nor does one to the tunnel or discovery, whose requests have none).
        self._askers: dict[int, ModbusCounters | None] = {}
        #: Reconnection at once, then after 1, 2, 4 … 60 s ±10 %.
        self._reconnection = Reconnection(
            self.peer, clock, _BACKOFF_S, jitter=0.1,
            went_down="%s: connection lost (%s); retrying",
            still_down="%s: still disconnected (%s); %d attempts failed in the last hour",
            came_back="%s: connection restored")
        #: A voluntary close (keep-alive 0) opens no new generation, so such devices are not
        #: taken as *returning* at every poll.
        self._closed_voluntarily = False

    # ------------------------------------------------------------------ public

    def disconnect(self) -> None:
        """Close the socket (keep-alive 0: after each poll cycle); the next request reopens it."""
        if self._receiver is not None:
            self._closed_voluntarily = True
        self._disconnect()

    @property
    def connected(self) -> bool:
        """A socket is open and the peer has not closed it."""
        return self._receiver is not None and self._receiver.lost is None

    @property
    def down_reason(self) -> str | None:
        """Why the connection is down (`Connection refused`, `bad MBAP header`), None while
        it is up or was never tried."""
        return self._reconnection.reason if self._reconnection.down else None

    # ------------------------------------------------------------------ one exchange

    async def _exchange(self, job: Job) -> bytes:
        receiver = await self._ensure_connected(job.timeout_ms)
        if self.inter_frame_ms:
            wait = self._last_answer + self.inter_frame_ms / 1000 - self._now()
            if wait > 0:
                await self.clock.sleep(wait)
        tid = next(self._tids) & 0xFFFF
        askers = self._askers
        askers.pop(tid, None)               # wrapped around: a new request, last in the order
        askers[tid] = job.counters
        if len(askers) > _REMEMBERED_REQUESTS:
            del askers[next(iter(askers))]
        frame = mbap(tid, job.unit_id, job.pdu)
        assert receiver.transport is not None
        receiver.transport.write(frame)
        self._emit(Direction.SENT, frame)
        deadline_ns = self.clock.monotonic_ns() + job.timeout_ms * (NS_PER_S // 1000)
        try:
            reply = await self._await_reply(receiver, tid, job.unit_id, job.pdu[0], deadline_ns)
        except TimeoutError:
            self._emit(Direction.RECEIVED, b"", TraceError.TIMEOUT)
            # A discovery probe (no device asking) may time out on any unit, polled ones
            # included (many ignore reads of registers they lack): it says nothing of the peer.
            if job.unit_id in self._answered_units and job.counters is not None:
                self._timeouts_in_row += 1
            if self._timeouts_in_row >= _TIMEOUTS_BEFORE_CLOSE:
                self._lost(f"{_TIMEOUTS_BEFORE_CLOSE} timeouts in a row", reconnect_now=True)
            raise ModbusRequestError(f"{self.peer}: unit {job.unit_id}: no answer within "
                                     f"{job.timeout_ms} ms", quality=Quality.TIMEOUT) from None
        self._timeouts_in_row = 0
        if not self._answered_units:
            # Recovered once the peer answers, not when it accepts: a peer that accepts and
            # closes at once (its client limit reached) is still down, one episode.
            self._reconnection.restored()
        self._answered_units.add(job.unit_id)
        self._last_answer = self._now()
        return reply

    async def _await_reply(self, receiver: _Receiver, tid: int, unit_id: int,
                           function: int, deadline_ns: int) -> bytes:
        while True:
            frame = self._next_frame(receiver)
            if frame is None:
                if receiver.lost is not None:
                    reason = str(receiver.lost) or type(receiver.lost).__name__
                    self._lost(reason, reconnect_now=True)
                    raise ModbusRequestError(f"{self.peer}: connection lost ({reason})",
                                             quality=Quality.DISCONNECTED)
                receiver.arrived.clear()
                if not await self.clock.wait_until(deadline_ns, receiver.arrived):
                    raise TimeoutError
                continue
            r_tid, _, _, r_unit = _MBAP_HEADER.unpack_from(frame)
            pdu = frame[7:]
            if r_tid == tid and r_unit == unit_id and pdu and pdu[0] in (function,
                                                                          function | 0x80):
                error = TraceError.EXCEPTION if pdu[0] & 0x80 else TraceError.NONE
                self._emit(Direction.RECEIVED, frame, error)
                return pdu
            self._discard(frame, self._askers.get(r_tid))

    def _next_frame(self, receiver: _Receiver) -> bytes | None:
        buffer = receiver.buffer
        if len(buffer) < 7:
            return None
        _, proto, length, _ = _MBAP_HEADER.unpack_from(buffer)
        if proto != 0 or not 2 <= length <= _MAX_MBAP_LENGTH:
            # The stream is out of step; nothing after this point can be trusted.
            junk = bytes(buffer)
            buffer.clear()
            self._discard(junk, None)
            self._lost("bad MBAP header", reconnect_now=True)
            raise ModbusRequestError(f"{self.peer}: bad MBAP header", quality=Quality.BAD_FRAME)
        if len(buffer) < 6 + length:
            return None
        frame = bytes(buffer[:6 + length])
        del buffer[:6 + length]
        return frame

    # ------------------------------------------------------------------ connection state

    async def _ensure_connected(self, timeout_ms: int) -> _Receiver:
        if self._receiver is not None:
            lost = self._receiver.lost
            if lost is None:
                return self._receiver
            # The peer closed while idle (many devices drop idle clients): reconnect at once,
            # an outage only if that fails, so such a device logs nothing at each poll.
            log.debug("%s: closed by the peer while idle (%s); reconnecting", self.peer,
                      str(lost) or type(lost).__name__)
            self._disconnect()
            self._answered_units.clear()
            self._closed_voluntarily = False
        if self._reconnection.waiting:
            raise ModbusRequestError(f"{self.peer}: disconnected ({self._reconnection.reason}); "
                                     "retrying", quality=Quality.DISCONNECTED)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(max(3.0, timeout_ms / 1000)):
                transport, receiver = await loop.create_connection(_Receiver, self.host,
                                                                   self.port)
        except (OSError, TimeoutError) as err:
            reason = _connect_failure(err)
            self._lost(reason, reconnect_now=False)
            raise ModbusRequestError(f"{self.peer}: cannot connect ({reason})",
                                     quality=Quality.DISCONNECTED) from err
        self._configure_socket(transport)
        self._receiver = receiver
        if not self._closed_voluntarily:
            self.generation += 1
        self._closed_voluntarily = False
        self._timeouts_in_row = 0
        self._answered_units.clear()
        return receiver

    def _configure_socket(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is None:
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.keep_alive:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for name, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
                if hasattr(socket, name):
                    sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)

    def _shutdown(self) -> None:
        self._disconnect()

    def _disconnect(self) -> None:
        receiver, self._receiver = self._receiver, None
        if receiver is not None and receiver.transport is not None:
            receiver.transport.close()

    def _lost(self, reason: str, *, reconnect_now: bool) -> None:
        """Close the socket and schedule the next attempt: at once, then 1, 2, 4 … 60 s ±10 %.

        Only a connection that was answered on is retried at once: one lost before any answer
        is a failed attempt, so a peer that accepts and drops every connection is paced."""
        answered = bool(self._answered_units)
        self._disconnect()
        self._answered_units.clear()
        self._closed_voluntarily = False
        self._reconnection.failed(reason, retry_now=reconnect_now and answered)


class ModbusTcpDriver(ModbusDriver[TcpConnection]):
    """The Modbus TCP `ProtocolDriver`: a connection per `ip:port`, devices polled through it.

    `read` for devices on different connections may run concurrently; the connections serialise
    their own units.
    """

    name = "modbusTCP"

    def __init__(self, *, inter_frame_ms: int = 0, trace: TraceHook | None = None,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(trace=trace, clock=clock)
        _raise_open_file_limit()
        self.inter_frame_ms = inter_frame_ms
        self._connections: dict[tuple[str, int], TcpConnection] = {}
        #: The connection of each daq row seen: parsing its interface at every poll costs more
        #: than the rest of the request path.
        self._device_connections: dict[Device, TcpConnection] = {}

    async def open(self, link: LinkSettings) -> None:
        self.inter_frame_ms = link.tcp_inter_frame_ms
        if link.host is not None:
            self.connection(link.host, link.port or 502, keep_alive=link.keep_alive)

    def connection(self, host: str, port: int = 502, *, keep_alive: bool = True) -> TcpConnection:
        """The shared connection of `host:port` (keep-alive 1 wins when devices disagree)."""
        key = (host, port)
        conn = self._connections.get(key)
        if conn is None:
            conn = TcpConnection(host, port, inter_frame_ms=self.inter_frame_ms,
                                 keep_alive=keep_alive, trace=self.trace, clock=self.clock)
            self._connections[key] = conn
        elif keep_alive and not conn.keep_alive:
            conn.keep_alive = True
        return conn

    def existing_connection(self, host: str, port: int) -> TcpConnection | None:
        """The connection of `host:port` if a device polled there has made it, else None."""
        return self._connections.get((host, port))

    def _link_of(self, device: Device) -> TcpConnection:
        conn = self._device_connections.get(device)
        if conn is not None:
            return conn
        conn = self._endpoint_connection(device)
        if len(self._device_connections) >= _MAX_REMEMBERED_DEVICES:
            self._device_connections.clear()    # daq rows changed many times over: start afresh
        self._device_connections[device] = conn
        return conn

    def _endpoint_connection(self, device: Device) -> TcpConnection:
        endpoint = device.tcp_endpoint
        if endpoint is None or device.kind is not DeviceKind.MODBUS_TCP:
            raise DeviceError(f"device {device.index}: '{device.interface}' is not a Modbus TCP "
                              "address")
        return self.connection(*endpoint, keep_alive=device.keep_alive)

    def _polled(self, link: TcpConnection) -> None:
        if not link.keep_alive and link.idle:
            # Keep-alive 0: closed once the connection's poll cycle is over, i.e. when no other
            # unit behind it has a request queued or on the wire.
            link.disconnect()

    async def close(self) -> None:
        connections, self._connections = list(self._connections.values()), {}
        self._device_connections.clear()
        for conn in connections:
            await conn.close()


def _raise_open_file_limit(wanted: int = 1024) -> None:
    """254 connections plus the store and servers need more than some systems' 256 default."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _connect_failure(err: OSError | TimeoutError) -> str:
    """`Connection refused`, `Name or service not known`: the reason alone. asyncio's own text
    (`[Errno 111] Connect call failed ('127.0.0.1', 502)`) repeats the peer the message already
    names, in Python's notation."""
    if isinstance(err, TimeoutError) and not str(err):
        return "no answer in time"
    if err.errno is not None and err.errno > 0 and not isinstance(err, socket.gaierror):
        return os.strerror(err.errno)
    return err.strerror or str(err) or type(err).__name__
