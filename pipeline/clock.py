"""Clocks for the poll loop: the system clock, and a manual one that tests drive by hand.

Polling runs on the monotonic clock (docs/behaviour.md §11); record and poll times come from the
wall clock. Keeping both behind one small interface lets a test step the wall clock, or let an
hour of polling pass, without sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

NS_PER_S = 1_000_000_000


class Clock(Protocol):
    def monotonic_ns(self) -> int: ...

    def wall_ns(self) -> int: ...

    async def wait_until(self, deadline_ns: int, wake: asyncio.Event | None = None) -> bool:
        """Wait until the monotonic clock reaches `deadline_ns`, or `wake` is set.

        Returns True when `wake` ended the wait (the event is left set for the caller to clear).
        """
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The host's clocks; asyncio's loop time is monotonic, so deadlines map onto it directly."""

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()

    def wall_ns(self) -> int:
        return time.time_ns()

    async def wait_until(self, deadline_ns: int, wake: asyncio.Event | None = None) -> bool:
        delay_s = max(0.0, (deadline_ns - time.monotonic_ns()) / NS_PER_S)
        if wake is None:
            await asyncio.sleep(delay_s)
            return False
        if wake.is_set():
            return True
        try:
            async with asyncio.timeout(delay_s):
                await wake.wait()
        except TimeoutError:
            return False
        return True

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock that moves only when a test says so.

    `advance` moves both clocks, waking each sleeper at its own deadline in order and letting the
    woken tasks run before going further; `step_wall` moves the wall clock alone, as an NTP step or
    an operator's `date -s` does.
    """

    #: Loop turns given to woken tasks after each wake-up; enough for a poll cycle of in-process
    #: peers (no sockets) to reach its next wait.
    settle_turns: int = 50

    def __init__(self, wall_ns: int, monotonic_ns: int = 1_000 * NS_PER_S) -> None:
        self._mono = monotonic_ns
        self._offset = wall_ns - monotonic_ns
        self._sleepers: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def monotonic_ns(self) -> int:
        return self._mono

    def wall_ns(self) -> int:
        return self._mono + self._offset

    @property
    def waiting(self) -> int:
        """Tasks waiting on this clock: a test waits for a loop to reach its next wait before
        moving the clock past it."""
        return sum(1 for _, _, timer in self._sleepers if not timer.done())

    def step_wall(self, delta_ns: int) -> None:
        self._offset += delta_ns

    async def wait_until(self, deadline_ns: int, wake: asyncio.Event | None = None) -> bool:
        if wake is not None and wake.is_set():
            return True
        if deadline_ns <= self._mono:
            await asyncio.sleep(0)
            return False
        timer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline_ns, next(self._order), timer))
        if wake is None:
            await timer
            return False
        waker: asyncio.Future[Any] = asyncio.ensure_future(wake.wait())
        both: set[asyncio.Future[Any]] = {timer, waker}
        try:
            await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waker.cancel()
            timer.cancel()
        return wake.is_set()

    async def sleep(self, seconds: float) -> None:
        await self.wait_until(self._mono + round(seconds * NS_PER_S))

    async def settle(self) -> None:
        for _ in range(self.settle_turns):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        target = self._mono + round(seconds * NS_PER_S)
        await self.settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, timer = heapq.heappop(self._sleepers)
            if timer.done():
                continue
            self._mono = max(self._mono, deadline)
            timer.set_result(None)
            await self.settle()
        self._mono = target
        await self.settle()


#: The host's clocks, the default of every component that takes a `Clock`.
SYSTEM_CLOCK: Final[Clock] = SystemClock()


def local_time_stamper(time_zone: str) -> Callable[[], str]:
    """`YYYY-MM-DD hh:mm:ss` now in `time_zone` (the host's zone when empty or unknown): the
    time prefix of discovery progress lines (docs/behaviour.md §3.3)."""
    try:
        zone: ZoneInfo | None = ZoneInfo(time_zone) if time_zone else None
    except (ZoneInfoNotFoundError, ValueError):
        zone = None

    def now() -> str:
        moment = datetime.now(zone) if zone is not None else datetime.now().astimezone()
        return moment.strftime("%Y-%m-%d %H:%M:%S")

    return now
