"""The request queue and task every Modbus link runs on (a TCP connection, an RTU bus).

One task per link sends one request at a time, so nothing else ever shares the wire. Writes go
ahead of polls (docs/behaviour.md §2.1 item 4), and a newer write to the same register of the same
unit replaces one still queued (§2.7 item 4): the older caller gets a DeviceError saying so.
Everything else is first come, first served, which makes the tunnel and the polls alternate.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass
from typing import Final

from config.model import Quality
from pipeline.drivers._base import DeviceError, ModbusRequestError
from pipeline.drivers.modbus.frames import read_request, unpack_read_reply

__all__ = ["Job", "QueuedLink", "WriteReplaced"]

log = logging.getLogger("sunpm.modbus")

#: Bounded: pollers, writes, the tunnel and discovery wait here when the link falls behind.
QUEUE_SIZE: Final = 64
_WRITE_FUNCTIONS: Final = frozenset({5, 6, 15, 16})


class WriteReplaced(DeviceError):
    """A queued write was dropped because a newer write to the same register arrived."""


@dataclass(slots=True)
class Job:
    unit_id: int
    pdu: bytes
    timeout_ms: int
    future: asyncio.Future[bytes]


class QueuedLink:
    """Queue + task; subclasses implement `_exchange` (send one PDU, return the answer's PDU)
    and `_shutdown` (release the socket or port)."""

    name = "link"

    def __init__(self) -> None:
        self._queue: asyncio.PriorityQueue[tuple[int, int, Job]] = \
            asyncio.PriorityQueue(QUEUE_SIZE)
        self._seq = itertools.count()
        self._task: asyncio.Task[None] | None = None
        #: (unit, function, address) -> the newest queued write to it.
        self._latest_write: dict[tuple[int, int, bytes], Job] = {}
        self._in_flight = False

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing on the wire."""
        return not self._in_flight and self._queue.empty()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._serve(), name=f"modbus:{self.name}")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._shutdown()
        while not self._queue.empty():
            _, _, job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(
                    ModbusRequestError(f"{self.name}: link closed", quality=Quality.DISCONNECTED))
        self._latest_write.clear()

    async def transact(self, unit_id: int, pdu: bytes, timeout_ms: int, *,
                       urgent: bool = False) -> bytes:
        """Send `pdu` to `unit_id` and return the answer's PDU (an exception PDU included).

        Raises ModbusRequestError when no usable answer came (its `quality` says why).
        """
        self.start()
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        job = Job(unit_id, pdu, timeout_ms, future)
        key = _write_key(unit_id, pdu) if urgent else None
        if key is not None:
            older = self._latest_write.get(key)
            if older is not None and not older.future.done():
                older.future.set_exception(WriteReplaced(
                    f"{self.name}: unit {unit_id}: write replaced by a newer one"))
            self._latest_write[key] = job
        try:
            await self._queue.put((0 if urgent else 1, next(self._seq), job))
            return await future
        finally:
            if key is not None and self._latest_write.get(key) is job:
                del self._latest_write[key]

    async def read_registers(self, unit_id: int, function: int, address: int, count: int,
                             timeout_ms: int) -> list[int]:
        """`RegisterReader`: registers or bits, or ModbusRequestError."""
        pdu = read_request(function, address, count)
        return unpack_read_reply(pdu, await self.transact(unit_id, pdu, timeout_ms))

    async def _serve(self) -> None:
        try:
            while True:
                _, _, job = await self._queue.get()
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
                        job.future.set_exception(ModbusRequestError(
                            f"{self.name}: link closed", quality=Quality.DISCONNECTED))
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

    async def _exchange(self, job: Job) -> bytes:
        raise NotImplementedError

    def _shutdown(self) -> None:
        raise NotImplementedError


def _write_key(unit_id: int, pdu: bytes) -> tuple[int, int, bytes] | None:
    if len(pdu) >= 3 and pdu[0] in _WRITE_FUNCTIONS:
        return unit_id, pdu[0], pdu[1:3]
    return None
