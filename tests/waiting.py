"""Waiting for a condition instead of sleeping a guessed time.

A test that sleeps "long enough" for a task, a peer or a thread to get somewhere is slow on an idle
box and flaky on a loaded one. These poll a predicate until it holds, and fail with what was
awaited once a generous deadline passes: the deadline only bounds a test that is failing anyway.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

#: Generous: reached only by a test that fails; a shared CI box may stall for seconds.
DEFAULT_TIMEOUT_S = 10.0
_POLL_S = 0.005


async def wait_until(predicate: Callable[[], object], timeout: float = DEFAULT_TIMEOUT_S, *,
                     what: str = "") -> None:
    """Return once `predicate()` is true; AssertionError after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() >= deadline:
            raise AssertionError(f"not true within {timeout} s: {what or _name(predicate)}")
        await asyncio.sleep(_POLL_S)


def wait_until_sync(predicate: Callable[[], object], timeout: float = DEFAULT_TIMEOUT_S, *,
                    what: str = "") -> None:
    """`wait_until` for threads and processes outside an event loop."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true within {timeout} s: {what or _name(predicate)}")
        time.sleep(_POLL_S)


def _name(predicate: Callable[[], object]) -> str:
    code = getattr(predicate, "__code__", None)
    if code is None:
        return repr(predicate)
    return f"{code.co_name} at {code.co_filename.rsplit('/', 1)[-1]}:{code.co_firstlineno}"
