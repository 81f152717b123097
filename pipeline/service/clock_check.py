"""The clock check of docs/behaviour.md §11: an SNTP query to `NTP_Server1`, then
`NTP_Server2`, 5 s each, at start and hourly. The host clock is never set.

- synchronised: the last good answer is less than 1 h old and its offset is at most 2 s;
- not synchronised (and before the first good answer): everything runs, good values get quality
  7 (the recorder's `clock_synchronised`);
- `Clock unsynchronised` when no server has answered for 1 h or an offset exceeds 2 s,
  `Clock synchronised` when good again (after an unsynchronised alarm only);
- no server configured: no check, the clock is trusted (logged at start).

SNTP (RFC 4330): a 48-byte client request (LI 0, version 4, mode 3) with its transmit time; the
offset is ((T2 - T1) + (T3 - T4)) / 2 from the server's receive and transmit times.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections.abc import Callable
from typing import Final

from pipeline.clock import NS_PER_S, Clock
from pipeline.service.alarms import Alarms

log = logging.getLogger("sunpm.clock")

NTP_PORT: Final = 123
QUERY_TIMEOUT_S: Final = 5.0
CHECK_EVERY_S: Final = 3600.0
MAX_OFFSET_S: Final = 2.0
NO_ANSWER_ALARM_S: Final = 3600.0
_NTP_EPOCH_OFFSET: Final = 2_208_988_800      # 1900-01-01 to 1970-01-01, in seconds


class SntpError(Exception):
    pass


def _to_ntp(t: float) -> bytes:
    seconds = int(t) + _NTP_EPOCH_OFFSET
    fraction = int((t % 1) * 2**32)
    return struct.pack("!II", seconds & 0xFFFFFFFF, fraction & 0xFFFFFFFF)


def _from_ntp(data: bytes) -> float:
    seconds, fraction = struct.unpack("!II", data)
    return float(seconds - _NTP_EPOCH_OFFSET + fraction / 2**32)


class _Query(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answer: asyncio.Future[tuple[bytes, float]] = \
            asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not self.answer.done():
            self.answer.set_result((data, time.time()))

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


async def sntp_offset(host: str, port: int = NTP_PORT,
                      timeout_s: float = QUERY_TIMEOUT_S) -> float:
    """The server's clock minus ours, in seconds; raises `SntpError` on no or a bad answer."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            address = infos[0][4]
            transport, protocol = await loop.create_datagram_endpoint(
                _Query, remote_addr=(str(address[0]), int(address[1])))
            try:
                sent = time.time()
                transport.sendto(b"\x23" + bytes(39) + _to_ntp(sent))
                data, received = await protocol.answer
            finally:
                transport.close()
    except TimeoutError:
        raise SntpError(f"{host}: no answer within {timeout_s:g} s") from None
    except OSError as err:
        # The reason in words (`Connection refused`), without Python's `[Errno 111]`.
        raise SntpError(f"{host}: {err.strerror or err}") from None
    if len(data) < 48 or data[0] & 0x07 not in (4, 5) or data[1] == 0:
        raise SntpError(f"{host}: not a server answer (mode {data[0] & 0x07 if data else '?'}, "
                        f"stratum {data[1] if len(data) > 1 else '?'})")
    if data[24:32] != _to_ntp(sent):
        raise SntpError(f"{host}: answer to another request")
    t2, t3 = _from_ntp(data[32:40]), _from_ntp(data[40:48])
    return ((t2 - sent) + (t3 - received)) / 2


class ClockCheck:
    """Runs the checks; `synchronised` is what the recorder is told (`on_change`)."""

    def __init__(self, servers: tuple[str, ...], alarms: Alarms, clock: Clock,
                 on_change: Callable[[bool], None], *, port: int = NTP_PORT,
                 every_s: float = CHECK_EVERY_S, timeout_s: float = QUERY_TIMEOUT_S) -> None:
        self.servers = servers
        self._alarms = alarms
        self._clock = clock
        self._on_change = on_change
        self._port = port
        self._every_s = every_s
        self._timeout_s = timeout_s
        self.synchronised = not servers
        self.alarmed = False
        self.last_offset_s: float | None = None
        self.last_server = ""
        self._last_answer_ns: int | None = None
        self._started_ns = clock.monotonic_ns()

    async def run(self) -> None:
        if not self.servers:
            log.info("No NTP server configured; the clock is trusted")
            return
        self._on_change(False)        # until the first good answer (docs/behaviour.md §11)
        while True:
            await self.check()
            await self._clock.sleep(self._every_s)

    async def check(self) -> None:
        offset: float | None = None
        for server in self.servers:
            try:
                offset = await sntp_offset(server, self._port, self._timeout_s)
            except SntpError as err:
                log.warning("Clock check failed: %s", err)
                continue
            self.last_server = server
            break
        now = self._clock.monotonic_ns()
        if offset is not None:
            self._last_answer_ns = now
            self.last_offset_s = offset
            good = abs(offset) <= MAX_OFFSET_S
            if not good:
                log.warning("Clock offset %+.3f s from %s is over %.0f s", offset,
                            self.last_server, MAX_OFFSET_S)
        else:
            since = self._last_answer_ns if self._last_answer_ns is not None \
                else self._started_ns
            good = self.synchronised and now - since < NO_ANSWER_ALARM_S * NS_PER_S
        silent_for = now - (self._last_answer_ns if self._last_answer_ns is not None
                            else self._started_ns)
        await self._set(good, alarm=not good and (
            offset is not None or silent_for >= NO_ANSWER_ALARM_S * NS_PER_S))

    async def _set(self, good: bool, *, alarm: bool) -> None:
        if good != self.synchronised:
            self.synchronised = good
            self._on_change(good)
            log.info("Clock %s", "synchronised" if good else "not synchronised")
        if good and self.alarmed:
            self.alarmed = False
            await self._alarms.gateway("Clock synchronised")
        elif alarm and not self.alarmed:
            self.alarmed = True
            await self._alarms.gateway("Clock unsynchronised")
