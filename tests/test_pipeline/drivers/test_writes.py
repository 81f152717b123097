"""`WriteQueue`: a newer write to the same target replaces one still queued (docs/behaviour.md
§2.7 item 4), for the poll loop and the Modbus links alike."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pipeline.drivers._base import DeviceError
from pipeline.drivers.writes import WriteQueue


def _queue() -> WriteQueue[str, int]:
    return WriteQueue(lambda key: DeviceError(f"{key}: replaced"))


def _future() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


async def test_writes_come_out_in_arrival_order_and_a_replacement_goes_to_the_back() -> None:
    queue = _queue()
    first, second, newer = _future(), _future(), _future()
    assert not queue.put("a", 1, first)
    assert not queue.put("b", 2, second)
    assert queue.put("a", 3, newer)
    with pytest.raises(DeviceError, match=r"^a: replaced$"):
        first.result()
    assert len(queue) == 2 and "a" in queue
    assert queue.pop() == (2, second)
    assert queue.pop() == (3, newer)
    assert queue.pop() is None


async def test_a_write_already_taken_is_not_replaced() -> None:
    queue = _queue()
    sent, newer = _future(), _future()
    queue.put("a", 1, sent)
    assert queue.pop() == (1, sent)          # on the wire now
    assert not queue.put("a", 2, newer)
    assert not sent.done()


async def test_a_write_whose_caller_gave_up_is_replaced_without_an_error() -> None:
    queue = _queue()
    cancelled, newer = _future(), _future()
    queue.put("a", 1, cancelled)
    cancelled.cancel()
    assert queue.put("a", 2, newer)
    assert cancelled.cancelled()


async def test_discard_forgets_only_the_callers_own_write() -> None:
    queue = _queue()
    older, newer = _future(), _future()
    queue.put("a", 1, older)
    queue.put("a", 2, newer)
    queue.discard("a", older)                # the replaced caller's clean-up
    assert queue.pop() == (2, newer)
    queue.put("a", 3, older)
    queue.discard("a", older)
    assert len(queue) == 0


async def test_fail_all_answers_every_queued_caller() -> None:
    queue = _queue()
    futures = [_future() for _ in range(3)]
    for key, future in zip("abc", futures, strict=True):
        queue.put(key, 0, future)
    queue.fail_all(lambda: DeviceError("closed"))
    assert len(queue) == 0
    for future in futures:
        with pytest.raises(DeviceError, match=r"^closed$"):
            future.result()
