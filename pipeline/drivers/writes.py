"""Queued writes, where a newer write to the same target replaces one still waiting
(docs/behaviour.md §2.7 item 4).

The one implementation of that rule: the poll loop queues writes per daq variable ahead of its
polls, and each Modbus link queues them per unit and register ahead of its requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

__all__ = ["WriteQueue"]

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class WriteQueue(Generic[K, T]):
    """Writes in arrival order, at most one per key; each with the future its caller awaits.

    A write put under a key already queued replaces it and goes to the back: the older caller's
    future gets `replaced(key)`. Whoever runs the writes takes them with `pop`, and skips a write
    whose future is already done (its caller gave up).
    """

    __slots__ = ("_queued", "_replaced")

    def __init__(self, replaced: Callable[[K], BaseException]) -> None:
        self._replaced = replaced
        self._queued: dict[K, tuple[T, asyncio.Future[Any]]] = {}

    def __len__(self) -> int:
        return len(self._queued)

    def __contains__(self, key: object) -> bool:
        return key in self._queued

    def put(self, key: K, item: T, done: asyncio.Future[Any]) -> bool:
        """Queue `item`; True when it replaced a write still queued under `key`."""
        older = self._queued.pop(key, None)
        if older is not None and not older[1].done():
            older[1].set_exception(self._replaced(key))
        self._queued[key] = (item, done)
        return older is not None

    def pop(self) -> tuple[T, asyncio.Future[Any]] | None:
        """The oldest queued write, or None."""
        if not self._queued:
            return None
        return self._queued.pop(next(iter(self._queued)))

    def discard(self, key: K, done: asyncio.Future[Any]) -> None:
        """Forget the write of `done` if it is still queued (its caller was cancelled)."""
        queued = self._queued.get(key)
        if queued is not None and queued[1] is done:
            del self._queued[key]

    def fail_all(self, error: Callable[[], BaseException]) -> None:
        """Fail every queued write (the link or loop is closing)."""
        queued, self._queued = self._queued, {}
        for _, done in queued.values():
            if not done.done():
                done.set_exception(error())
