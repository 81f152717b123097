"""`Refreshed`: the status and alarms that requests share. The first request waits; later
ones never wait for a recomputation, and a stale value is recomputed once in the background."""

from __future__ import annotations

import asyncio

from pipeline.web.facade import Refreshed


async def test_stale_values_are_answered_at_once_and_refreshed_in_the_background() -> None:
    calls = 0
    release = asyncio.Event()

    async def compute() -> int:
        nonlocal calls
        calls += 1
        if calls > 1:
            await release.wait()
        return calls

    shared = Refreshed(compute, ttl_s=0.0)
    assert await shared.get() == 1
    await asyncio.sleep(0.001)
    # Stale: answered as it is, one recomputation started, not one per request.
    assert [await shared.get() for _ in range(5)] == [1] * 5
    await asyncio.sleep(0)
    assert calls == 2
    release.set()
    await asyncio.sleep(0.01)
    assert await shared.get() == 2
    shared.forget()
    assert await shared.get() == 3


async def test_a_failed_refresh_keeps_the_last_value() -> None:
    results: list[int | Exception] = [1, RuntimeError("store closed"), 3]

    async def compute() -> int:
        result = results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    shared = Refreshed(compute, ttl_s=0.0)
    assert await shared.get() == 1
    assert await shared.get() == 1
    await asyncio.sleep(0.01)        # the failing refresh ran
    assert await shared.get() == 1
    await asyncio.sleep(0.01)
    assert await shared.get() == 3
