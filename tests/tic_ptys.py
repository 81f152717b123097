"""A TIC meter on a pty, for the TIC driver, detection and end-to-end tests.

Import side (`tests/` is on sys.path):
- `pty_opener(path, baud)`: the reader's port opener for a pty. A Linux pty keeps CS8 whatever
  is asked and then refuses pyserial's 7E1 `tcsetattr` (EINVAL), so it opens 8N1 at the asked
  speed; a pty has no parity to check anyway, and TIC bytes are 7-bit.
- `meter_pty(talk)`: an async context manager yielding the slave's path while `talk(master_fd)`
  runs as a task writing the meter's side; the task is cancelled and both ends closed on exit.
- `repeating_meter(frame)`: `meter_pty` of a meter writing `frame` every 0.05 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import serial_asyncio


async def pty_opener(path: str, baud: int) -> tuple[asyncio.StreamReader, Callable[[], None]]:
    reader, writer = await serial_asyncio.open_serial_connection(url=path, baudrate=baud)
    return reader, writer.close


@contextlib.asynccontextmanager
async def meter_pty(talk: Callable[[int], Coroutine[Any, Any, None]]) -> AsyncIterator[str]:
    master, slave = pty.openpty()
    task = asyncio.create_task(talk(master), name="linky")
    try:
        yield os.ttyname(slave)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        os.close(master)
        os.close(slave)


def repeating_meter(frame: bytes) -> contextlib.AbstractAsyncContextManager[str]:
    """A meter repeating `frame` every 0.05 s (`meter_pty`)."""
    async def talk(master: int) -> None:
        while True:
            os.write(master, frame)
            await asyncio.sleep(0.05)

    return meter_pty(talk)
