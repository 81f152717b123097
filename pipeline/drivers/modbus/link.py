"""What every Modbus link (a TCP connection, an RTU bus) shares: the request queue and its task,
the link's clock, frame traces, late frames, connection generations and reconnection.

One task per link sends one request at a time, so nothing else ever shares the wire. Writes go
ahead of other requests (docs/behaviour.md §2.1 item 4), and a newer write to the same register of
the same unit replaces one still queued (§2.7 item 4, `pipeline.drivers.writes`): the older caller
gets a `WriteReplaced` error. Other requests are first come, first served, which makes the tunnel
and the polls alternate.

A subclass implements `_exchange` (send one PDU, return the answer's PDU, raising
`ModbusRequestError`) and `_shutdown` (release the socket or port), and reports outages to its
`Reconnection`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Final

from config.model import Quality
from pipeline.clock import NS_PER_S, SYSTEM_CLOCK, Clock
from pipeline.drivers._base import DeviceError, ModbusRequestError
from pipeline.drivers.modbus.frames import read_request, unpack_read_reply
from pipeline.drivers.modbus.trace import (
    Direction,
    FrameTrace,
    ModbusCounters,
    TraceError,
    TraceHook,
)
from pipeline.drivers.writes import WriteQueue

__all__ = ["Job", "QueuedLink", "Receiver", "Reconnection", "WriteReplaced"]

log = logging.getLogger("sunpm.modbus")

#: Bounded: pollers, the tunnel and discovery wait here when the link falls behind. Writes are
#: bounded upstream (the poll loop's write queue of each link) and by the one-per-register rule.
QUEUE_SIZE: Final = 64
_WRITE_FUNCTIONS: Final = frozenset({5, 6, 15, 16})
_SUMMARY_EVERY_S: Final = 3600.0
#: What a receiver keeps of bytes nobody asked for (a peer streaming, noise on an idle bus).
_MAX_BUFFERED: Final = 64 * 1024


class Receiver(asyncio.Protocol):
    """A link's incoming bytes, collected into a buffer its task parses; never blocks the loop.

    The buffer keeps its last 64 KiB: the cut leaves the stream out of step, which the next
    request detects (TCP reconnects; an RTU bus flushes its buffer before each request).
    """

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.arrived = asyncio.Event()
        self.lost: Exception | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > _MAX_BUFFERED:
            del self.buffer[:-_MAX_BUFFERED]
        self.received(data)
        self.arrived.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or self.closed_error()
        self.arrived.set()

    def received(self, data: bytes) -> None:
        """Called with each chunk once it is buffered, before the link's task is woken."""

    def closed_error(self) -> Exception:
        """What `lost` holds when the other end closed without an error."""
        return ConnectionResetError("connection closed")


class WriteReplaced(DeviceError):
    """A queued write was dropped because a newer write to the same register arrived."""


@dataclass(slots=True)
class Job:
    unit_id: int
    pdu: bytes
    timeout_ms: int
    future: asyncio.Future[bytes]
    #: The counters of the device asking; None for the tunnel and discovery, whose late frames
    #: count on the link only.
    counters: ModbusCounters | None = None


class Reconnection:
    """A link that is down: when to try again, and what to say (docs/style.md §4: a WARNING when
    it goes down, then one summary an hour, INFO when it is back).

    `delays` are the waits after each failure in a row (the last repeats), each drawn within
    ±`jitter` of its value; `failed(retry_now=True)` allows the next attempt at once.
    """

    def __init__(self, name: str, clock: Clock, delays: tuple[float, ...], *, jitter: float,
                 went_down: str, still_down: str, came_back: str) -> None:
        self.name = name
        self.clock = clock
        self.delays = delays
        self.jitter = jitter
        #: Log formats: (name, reason), (name, reason, failed attempts), (name,).
        self._went_down = went_down
        self._still_down = still_down
        self._came_back = came_back
        self.down = False
        self.reason = ""
        self._failures = 0
        self._next_attempt = 0.0
        self._failed_since_summary = 0
        self._last_summary = 0.0

    def _now(self) -> float:
        return self.clock.monotonic_ns() / NS_PER_S

    @property
    def waiting(self) -> bool:
        """The next attempt is not due yet: requests fail at once meanwhile."""
        return self._now() < self._next_attempt

    def failed(self, reason: str, *, retry_now: bool = False) -> None:
        now = self._now()
        if not self.down:
            self.down = True
            self._last_summary = now
            self._failed_since_summary = 0
            log.warning(self._went_down, self.name, reason)
        else:
            self._failed_since_summary += 1
            if now - self._last_summary >= _SUMMARY_EVERY_S:
                log.warning(self._still_down, self.name, reason, self._failed_since_summary)
                self._last_summary = now
                self._failed_since_summary = 0
        self.reason = reason
        if retry_now:
            self._failures = 0
            self._next_attempt = now
            return
        delay = self.delays[min(self._failures, len(self.delays) - 1)]
        self._failures += 1
        if self.jitter:
            delay *= random.uniform(1 - self.jitter, 1 + self.jitter)
        self._next_attempt = now + delay

    def restored(self) -> None:
        if self.down:
            log.info(self._came_back, self.name)
        self.down = False
        self._failures = 0
        self._next_attempt = 0.0


class QueuedLink:
    """Queue + task + what a link reports; see the module docstring."""

    name = "link"

    def __init__(self, *, interface: str, peer: str = "", trace: TraceHook | None = None,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        #: The trace's interface (`ethernet`, `serial<k>`) and peer (`ip:port` on Ethernet).
        self.interface = interface
        self.peer = peer
        self.trace = trace
        self.clock = clock
        #: Frames discarded: late answers, answers for another request, noise before a request.
        #: Each one also counts for the device whose request it answers, when one does
        #: (`_discard`), never for whichever device happens to be polled when it arrives.
        self.late_frames = 0
        #: Counts the connections (ports) opened after a loss, or the first: a device whose
        #: previous poll saw another generation is *returning* (`Readings.reconnected`).
        self.generation = 0
        self._requests: deque[Job] = deque()
        self._room = asyncio.Semaphore(QUEUE_SIZE)
        self._writes: WriteQueue[Hashable, Job] = WriteQueue(self._replaced)
        self._queued = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._in_flight = False

    # ------------------------------------------------------------------ for subclasses

    def _now(self) -> float:
        """Monotonic seconds on the link's clock."""
        return self.clock.monotonic_ns() / NS_PER_S

    def _emit(self, direction: Direction, data: bytes, error: TraceError = TraceError.NONE) -> None:
        if self.trace is not None:
            self.trace(FrameTrace(ts_ns=self.clock.wall_ns(), interface=self.interface,
                                  direction=direction, data=data, peer=self.peer, error=error))

    def _discard(self, data: bytes, owner: ModbusCounters | None) -> None:
        """A frame that answers no request on the wire: counted late and traced, never used.

        `owner` holds the counters of the device whose earlier request it answers, if any."""
        self.late_frames += 1
        if owner is not None:
            owner.late_frames += 1
        self._emit(Direction.RECEIVED, data, TraceError.DISCARDED)

    async def _exchange(self, job: Job) -> bytes:
        raise NotImplementedError

    def _shutdown(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ queue

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing on the wire."""
        return not self._in_flight and not self._requests and not self._writes

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._serve(), name=f"modbus:{self.name}")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._shutdown()
        requests, self._requests = self._requests, deque()
        for job in requests:
            self._room.release()
            if not job.future.done():
                job.future.set_exception(self._closed())
        self._writes.fail_all(self._closed)

    def _closed(self) -> ModbusRequestError:
        return ModbusRequestError(f"{self.name}: link closed", quality=Quality.DISCONNECTED)

    def _replaced(self, key: Hashable) -> WriteReplaced:
        unit = key[0] if isinstance(key, tuple) else "?"
        return WriteReplaced(f"{self.name}: unit {unit}: write replaced by a newer one")

    async def transact(self, unit_id: int, pdu: bytes, timeout_ms: int, *,
                       urgent: bool = False, counters: ModbusCounters | None = None) -> bytes:
        """Send `pdu` to `unit_id` and return the answer's PDU (an exception PDU included).

        `urgent` (writes) goes ahead of the other requests. `counters` are the asking device's:
        a late answer to this request counts there. Raises ModbusRequestError when no usable
        answer came (its `quality` says why).
        """
        self.start()
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        job = Job(unit_id, pdu, timeout_ms, future, counters)
        if not urgent:
            await self._room.acquire()
            self._requests.append(job)
            self._queued.set()
            return await future
        # An urgent request that writes no register (none today) replaces nothing: its own key.
        key: Hashable = _write_key(unit_id, pdu) or job
        self._writes.put(key, job, future)
        self._queued.set()
        try:
            return await future
        finally:
            self._writes.discard(key, future)

    async def read_registers(self, unit_id: int, function: int, address: int, count: int,
                             timeout_ms: int) -> list[int]:
        """`RegisterReader`: registers or bits, or ModbusRequestError."""
        pdu = read_request(function, address, count)
        return unpack_read_reply(pdu, await self.transact(unit_id, pdu, timeout_ms))

    def _next_job(self) -> Job | None:
        write = self._writes.pop()
        if write is not None:
            return write[0]
        if self._requests:
            self._room.release()
            return self._requests.popleft()
        return None

    async def _serve(self) -> None:
        try:
            while True:
                job = self._next_job()
                if job is None:
                    self._queued.clear()
                    await self._queued.wait()
                    continue
                if job.future.done():       # its caller was cancelled, or a newer write won
                    continue
                self._in_flight = True
                try:
                    reply = await self._exchange(job)
                except ModbusRequestError as err:
                    if not job.future.done():
                        job.future.set_exception(err)
                except asyncio.CancelledError:
                    # The link is closing: the caller of the request on the wire would
                    # otherwise wait for ever, since `close` fails only the queued ones.
                    if not job.future.done():
                        job.future.set_exception(self._closed())
                    raise
                except Exception as err:  # the link must outlive one request; logged with context
                    log.exception("%s: request failed unexpectedly", self.name)
                    self._shutdown()
                    if not job.future.done():
                        job.future.set_exception(ModbusRequestError(
                            f"{self.name}: {err}", quality=Quality.DISCONNECTED))
                else:
                    if not job.future.done():
                        job.future.set_result(reply)
                finally:
                    self._in_flight = False
        finally:
            self._shutdown()


def _write_key(unit_id: int, pdu: bytes) -> tuple[int, int, bytes] | None:
    if len(pdu) >= 3 and pdu[0] in _WRITE_FUNCTIONS:
        return unit_id, pdu[0], pdu[1:3]
    return None
