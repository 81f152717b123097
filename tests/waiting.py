"""Waiting for a condition instead of sleeping a guessed time.

A test that sleeps "long enough" for a task, a peer or a thread to get somewhere is slow on an idle
box and flaky on a loaded one. These poll a predicate until it holds, and fail with what was
awaited once a generous deadline passes: the deadline only bounds a test that is failing anyway.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

#: Generous: reached only by a test that fails; a shared CI box may stall for seconds.
DEFAULT_TIMEOUT_S = 10.0
_POLL_S = 0.005


async def wait_until(predicate: Callable[[], object | Awaitable[object]],
                     within_s: float = DEFAULT_TIMEOUT_S, *, what: str = "",
                     every: float = _POLL_S) -> None:
    """Return once `predicate()` (a plain or an async function) is true, asking `every` seconds;
    AssertionError after `within_s` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        answer = predicate()
        if inspect.isawaitable(answer):
            answer = await answer
        if answer:
            return
        if loop.time() >= deadline:
            raise AssertionError(f"not true within {within_s} s: {what or _name(predicate)}")
        await asyncio.sleep(every)


def wait_until_sync(predicate: Callable[[], T], within_s: float = DEFAULT_TIMEOUT_S, *,
                    what: str = "", every: float = _POLL_S) -> T:
    """`wait_until` for threads and processes outside an event loop; the predicate's first true
    answer."""
    deadline = time.monotonic() + within_s
    while not (answer := predicate()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true within {within_s} s: {what or _name(predicate)}")
        time.sleep(every)
    return answer


def _name(predicate: Callable[[], object]) -> str:
    code = getattr(predicate, "__code__", None)
    if code is None:
        return repr(predicate)
    return f"{code.co_name} at {code.co_filename.rsplit('/', 1)[-1]}:{code.co_firstlineno}"
