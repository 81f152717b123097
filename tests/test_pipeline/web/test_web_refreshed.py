"""`Refreshed`: the status and alarms that requests share. The first request waits; later
ones never wait for a recomputation, and a stale value is recomputed once in the background."""

from __future__ import annotations

import asyncio
import time

from waiting import wait_until

from pipeline.web.facade import Refreshed


async def test_stale_values_are_answered_at_once_and_refreshed_in_the_background() -> None:
    calls = 0
    computed = 0
    release = asyncio.Event()

    async def compute() -> int:
        nonlocal calls, computed
        calls += 1
        if calls > 1:
            await release.wait()
        computed += 1
        return calls

    shared = Refreshed(compute, ttl_s=0.0)
    assert await shared.get() == 1
    # Stale once the monotonic clock has moved past the value's time (ttl 0).
    started = time.monotonic()
    await wait_until(lambda: time.monotonic() > started)
    # Stale: answered as it is, one recomputation started, not one per request.
    assert [await shared.get() for _ in range(5)] == [1] * 5
    await asyncio.sleep(0)      # one turn of the loop: the recomputation task starts
    assert calls == 2
    release.set()
    # The value is stored in the same step as the computation returns.
    await wait_until(lambda: computed == 2, what="the background recomputation")
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
    # The failing refresh ran (it pops its result and fails in one step).
    await wait_until(lambda: len(results) == 1, what="the failing refresh")
    assert await shared.get() == 1
    await wait_until(lambda: not results, what="the next refresh")
    assert await shared.get() == 3
