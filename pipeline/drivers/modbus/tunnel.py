"""RTU-over-TCP tunnel (`forwardTcpPort`, docs/behaviour.md §2.8).

A Modbus TCP server per serial port that has `forwardTcpPort`: unit id + PDU become an RTU frame
on the bus, and the answer returns with the client's transaction id. The tunnel puts one request
at a time in the bus's queue (first come, first served), so tunnel and own requests alternate
when both wait; a client's requests not sent yet are dropped when it leaves. The bus keeps every
RTU rule (silence, flush, CRC, late replies); tunnel frames land in its trace.

Limits (**Decision** of the spec): 8 clients (a 9th connection is closed at once), 16 tunnel
requests waiting for the bus (more: exception 0x06, device busy, then that client's next requests
wait until one is done), the relay timeout is the largest device timeout on the port (then
exception 0x0B), unit 0 is a broadcast and gets no answer (not even 0x06), and a client idle for
5 minutes is closed. A client that does not read its answers is not read either.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Iterable
from typing import Final

from config.model import Device
from pipeline.drivers._base import ModbusRequestError
from pipeline.drivers.modbus.frames import mbap, parse_mbap
from pipeline.drivers.modbus.rtu import RtuBus

__all__ = ["RtuTunnel", "tunnel_for"]

log = logging.getLogger("sunpm.modbus")

MAX_CLIENTS: Final = 8
MAX_QUEUED: Final = 16
IDLE_S: Final = 300.0
_DEVICE_FAILURE: Final = 0x04
_BUSY: Final = 0x06
_TARGET_FAILED: Final = 0x0B
_MAX_MBAP_LENGTH: Final = 254


class _Client(asyncio.Protocol):
    def __init__(self, tunnel: RtuTunnel) -> None:
        self.tunnel = tunnel
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.idle: asyncio.TimerHandle | None = None
        #: Its requests not answered yet: cancelled when it leaves, so that a client gone does
        #: not keep the bus busy.
        self.pending: set[asyncio.Task[None]] = set()
        #: Why it is not read: its answers are not read (flow control), or it was answered
        #: 0x06 and the queue is still full.
        self.write_full = False
        self.held = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if len(self.tunnel.clients) >= self.tunnel.max_clients:
            self.tunnel.refused += 1
            transport.close()
            return
        self.tunnel.clients.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.buffer.clear()
        self.tunnel.clients.discard(self)
        if self.idle is not None:
            self.idle.cancel()
        for task in self.pending:
            task.cancel()

    def pause_writing(self) -> None:
        # A client that sends and does not read: its answers (0x06 at once past 16 queued) would
        # pile up in memory without end; it is not read until it reads.
        self.write_full = True
        self.update_reading()

    def resume_writing(self) -> None:
        self.write_full = False
        self.update_reading()

    def update_reading(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if self.write_full or self.held:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    def _arm_idle(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        assert self.transport is not None
        self.idle = asyncio.get_running_loop().call_later(self.tunnel.idle_s, self.transport.close)

    def data_received(self, data: bytes) -> None:
        self._arm_idle()
        self.buffer += data
        self.take_requests()

    def take_requests(self) -> None:
        if self.transport is None or self.transport.is_closing() or self.tunnel.stopping:
            return
        while len(self.buffer) >= 7 and not self.held:
            tid, proto, length, unit = parse_mbap(bytes(self.buffer[:7]))
            if proto != 0 or not 2 <= length <= _MAX_MBAP_LENGTH:
                assert self.transport is not None
                self.transport.close()          # out of step: nothing after this can be trusted
                return
            if len(self.buffer) < 6 + length:
                return
            pdu = bytes(self.buffer[7:6 + length])
            del self.buffer[:6 + length]
            self.tunnel.relay(self, tid, unit, pdu)

    def answer(self, tid: int, unit: int, pdu: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(mbap(tid, unit, pdu))


class RtuTunnel:
    """The `forwardTcpPort` server of one bus."""

    def __init__(self, bus: RtuBus, port: int, *, host: str = "127.0.0.1",
                 timeout_ms: int = 1000, max_clients: int = MAX_CLIENTS,
                 max_queued: int = MAX_QUEUED, idle_s: float = IDLE_S) -> None:
        self.bus = bus
        self.host = host
        self.port = port
        self.timeout_ms = timeout_ms
        self.max_clients = max_clients
        self.max_queued = max_queued
        self.idle_s = idle_s
        self.clients: set[_Client] = set()
        self.refused = 0
        self.busy_answers = 0
        self.failures = 0          # requests that failed with an error of ours (answered 0x04)
        self._queued = 0
        #: One tunnel request at a time in the bus's queue, the others wait here: the bus serves
        #: its queue in arrival order, so a poll request waits behind one tunnel request, not
        #: behind all 16 (docs/behaviour.md §2.8: when both wait, they alternate).
        self._turn = asyncio.Lock()
        self._held: set[_Client] = set()
        self.stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        """Listen; returns the port (useful with port 0)."""
        self.stopping = False
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Client(self), self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        if not _is_loopback(self.host):
            log.warning("%s: forwardTcpPort %d listens on %s; Modbus has no authentication",
                        self.bus.interface, self.port, self.host)
        log.info("%s: tunnel listening on %s:%d", self.bus.interface, self.host, self.port)
        return self.port

    async def stop(self) -> None:
        self.stopping = True
        if self._server is not None:
            self._server.close()
            for client in list(self.clients):
                if client.transport is not None:
                    client.transport.close()
            await self._server.wait_closed()
            self._server = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def relay(self, client: _Client, tid: int, unit: int, pdu: bytes) -> None:
        if not pdu:
            return
        if self._queued >= self.max_queued:
            self.busy_answers += 1
            if unit != 0:                   # a broadcast gets no answer, even a refusal
                client.answer(tid, unit, bytes((pdu[0] | 0x80, _BUSY)))
            # Its next requests are taken once a request is done: a flood answered 0x06 as
            # fast as it came took the event loop from the bus's own timing (polls timed out,
            # frames cut).
            client.held = True
            self._held.add(client)
            client.update_reading()
            return
        self._queued += 1
        task = asyncio.create_task(self._forward(client, tid, unit, pdu),
                                   name=f"tunnel:{self.bus.interface}:{tid}")
        self._tasks.add(task)
        client.pending.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(client.pending.discard)

    async def _forward(self, client: _Client, tid: int, unit: int, pdu: bytes) -> None:
        try:
            async with self._turn:
                reply = await self.bus.transact(unit, pdu, self.timeout_ms)
        except ModbusRequestError as err:
            # Timeout, bad frame or port down: the client sees "gateway target failed to respond".
            log.debug("Tunnel request failed. interface=%s unit=%d reason=%s",
                      self.bus.interface, unit, err)
            if unit != 0:
                client.answer(tid, unit, bytes((pdu[0] | 0x80, _TARGET_FAILED)))
            return
        except Exception as err:  # one request fails; the tunnel and its clients stay
            # Not a device's fault but ours: the client gets "server device failure" rather than
            # no answer, and the task's exception is not left unretrieved.
            self.failures += 1
            if self.failures == 1:
                log.error("Tunnel request failed unexpectedly. interface=%s unit=%d reason=%s",
                          self.bus.interface, unit, err, exc_info=err)
            else:
                log.warning("Tunnel request failed unexpectedly. interface=%s unit=%d "
                            "count=%d reason=%s", self.bus.interface, unit, self.failures, err)
            if unit != 0:
                client.answer(tid, unit, bytes((pdu[0] | 0x80, _DEVICE_FAILURE)))
            return
        finally:
            self._queued -= 1
            held, self._held = self._held, set()
            for each in held:
                each.held = False
                each.update_reading()
                each.take_requests()
        if unit != 0:
            client.answer(tid, unit, reply)


def tunnel_for(bus: RtuBus, devices: Iterable[Device], *,
               host: str = "127.0.0.1") -> RtuTunnel | None:
    """The tunnel of `bus` when its port row has `forwardTcpPort`, else None; the relay timeout
    is the largest timeout of the port's devices (1000 ms if none), docs/behaviour.md §2.8."""
    port = bus.port.forward_tcp_port
    if port is None:
        return None
    timeouts = [d.timeout_ms for d in devices if (d.serial_port or "") == bus.port.port]
    return RtuTunnel(bus, port, host=host, timeout_ms=max(timeouts, default=1000))


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
