"""The window arithmetic and what a view makes of a window (docs/behaviour.md §5.1, §5.3).

Pure values shared by the outbox (which builds, journals and uploads windows) and the re-exports
(`sunpm export`, the offline card re-export). What fixes a window's content (`WindowSpec`, the
`window` event's body and its membership rule) is the store's currency, `store.delivery`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

from store.delivery import Stream, WindowSpec
from store.events import Watermark

from .names import WindowBounds, split_window
from .names import cut_of as cut_of_ns

NS_PER_S: Final = 1_000_000_000
DAY_NS: Final = 86_400 * NS_PER_S


def bounds_of(spec: WindowSpec) -> tuple[WindowBounds, list[WindowBounds]]:
    """The selection arguments of `names.select_records` / `select_journal` for a window spec."""
    window = WindowBounds(end_ns=spec.end_ns, watermark=spec.membership)
    previous = [] if spec.after is None else [
        WindowBounds(end_ns=spec.after.end_ns, watermark=spec.after.membership)]
    return window, previous


@dataclass(frozen=True, slots=True, kw_only=True)
class Rendered:
    """One file of a window as a view made it."""

    name: str
    directory: str          # remote directory: /DATA, /ALARM, /CMD, /LOG
    data: bytes
    text_sha256: str        # SHA-256 of the uncompressed text (docs/formats.md §9.4)


class WindowSource(Protocol):
    """Content of one server's windows: the views over the store, for that server's settings.

    `render` is pure of its arguments and the store's stored items (the same spec renders the
    same bytes); it may block, the outbox runs it off the loop.
    """

    def oldest_ns(self, stream: Stream) -> int | None:
        """Time of the oldest stored item of the stream, None when there is none."""
        ...

    def first_item_ns(self, stream: Stream, start_ns: int, end_ns: int) -> int | None:
        """Time of the stream's first stored item timed in `[start, end)`, None when none is."""
        ...

    def membership(self) -> Watermark:
        """The store's watermark now."""
        ...

    def config_snapshot(self, end_ns: int) -> str:
        """Id of the configuration snapshot in force at `end_ns`."""
        ...

    def render(self, spec: WindowSpec) -> list[Rendered]: ...


# --------------------------------------------------------------------------- arithmetic


def split_range(start_ns: int, cut_ns: int) -> list[tuple[int, int]]:
    """`[start, cut)` as windows: split at every UTC midnight inside when longer than 24 h."""
    return split_window(start_ns, cut_ns)


def split_backfill(start_ns: int, end_ns: int) -> list[tuple[int, int]]:
    """`[start, end)` cut at every UTC midnight inside, whatever its length (docs/behaviour.md §5.3
    step 1)."""
    bounds = [start_ns]
    midnight = (start_ns // DAY_NS + 1) * DAY_NS
    while midnight < end_ns:
        bounds.append(midnight)
        midnight += DAY_NS
    bounds.append(end_ns)
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def cut_of(session_start: datetime) -> int:
    """The cut of a session started at `session_start` (aware), UTC ns: `names.cut_of` of its
    exact nanoseconds, so both forms truncate by the one rule."""
    return cut_of_ns((session_start - _EPOCH) // timedelta(microseconds=1) * 1000)


def ns_to_datetime(ts_ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ts_ns // 1000)
