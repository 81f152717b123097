"""Fixtures of the Modbus tests: simulated peers on 127.0.0.1 and a pty pair for RTU."""

from __future__ import annotations

import asyncio
import os
import sys
import tty
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
async def _no_task_left_behind() -> AsyncIterator[None]:
    yield
    await asyncio.sleep(0)
    current = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert not left, f"tasks left running: {[t.get_name() for t in left]}"


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, str]]:
    """(master fd for the simulated devices, slave path for the gateway's serial port)."""
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    try:
        yield master, os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)
