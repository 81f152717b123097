"""A Poller run on the wall clock in an end-to-end test (tests/test_pipeline, tests/integration).

Import side (`tests/` is on sys.path): `wait_whole_second()`, and `polling(poller, *closers)`,
an async context manager that runs `poller.run()` as a task and yields `stop()`: stop the
poller and await its task (5 s at most). On the way out, a task still running (the body failed
before `stop()`) is cancelled and awaited, then each closer (a driver's or a store's `close`) is
awaited in order, so no test leaves a poll loop or a socket behind.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from pipeline.poller import Poller

STOP_TIMEOUT_S = 5.0


async def wait_whole_second() -> None:
    """Start a little after a wall-clock second, so polls at whole seconds never straddle one
    and a 1 s period holds whole polls."""
    await asyncio.sleep(1 - (time.time() % 1) + 0.05)


@asynccontextmanager
async def polling(poller: Poller, *closers: Callable[[], Awaitable[object]]
                  ) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    task = asyncio.create_task(poller.run(), name="poller")

    async def stop() -> None:
        poller.stop()
        async with asyncio.timeout(STOP_TIMEOUT_S):
            await task

    try:
        yield stop
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for close in closers:
            await close()
