"""What the service saves in the journal across restarts (S0 counters, the relay), read back
newest first from its own events and from `state` snapshots, which keep it once the journal's
quota has dropped those events."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from store.log import Log

_T = TypeVar("_T")


async def newest_saved(store: Log, kind: str, read: Callable[[str, str], _T | None]) -> _T | None:
    """The first value `read(event kind, body text)` finds in the `kind` events and `state`
    snapshots, newest first; None when none holds one."""
    table = await asyncio.to_thread(store.journal, kinds=[kind, "state"])
    rows = table.sort_by("seq")
    for event_kind, body_text in zip(reversed(rows.column("kind").to_pylist()),
                                     reversed(rows.column("body").to_pylist()), strict=True):
        found = read(event_kind, body_text)
        if found is not None:
            return found
    return None
