"""What the service saves in the journal across restarts (S0 counters, the relay), read back
newest first from its own events and from the latest `state` snapshot, which keeps it once the
journal's quota has dropped those events."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from store.log import Log

_T = TypeVar("_T")


async def newest_saved(store: Log, kind: str, read: Callable[[str, str], _T | None]) -> _T | None:
    """The first value `read(event kind, body text)` finds in the `kind` events since the
    latest `state` snapshot, newest first, then in that snapshot; None when none holds one.

    The snapshot is where the search ends: replaying folds every earlier `kind` event into it
    (store.state), so an older event never says more than the snapshot does, and a store that
    never saved the value costs the segments since the snapshot, not the whole journal.
    """
    table = await asyncio.to_thread(store.journal_since_latest, "state", [kind])
    for event_kind, body_text in zip(reversed(table.column("kind").to_pylist()),
                                     reversed(table.column("body").to_pylist()), strict=True):
        found = read(event_kind, body_text)
        if found is not None:
            return found
    return None
