"""The state `Log` is made of, shared by its rooms (appends, writer, quota, journal GC, readers,
fsck), each a mixin over `LogCore` in its own module."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

from store._segment import CheckedFile
from store._stream import Segment, Stream
from store._wal import CommitLog, write_high_water
from store._work import Counters, PendingBatch, PendingEvent
from store.errors import StoreIOError, StoreReport
from store.options import DeliveredFn, JournalDeliveredFn, StoreOptions

JOURNAL: Final = "journal"

class LogCore:
    """The state every room of `Log` shares, with its owners; the rooms are mixins over it."""

    def __init__(self, path: Path, options: StoreOptions, read_only: bool) -> None:
        self.path = path
        self.options = options
        self.read_only = read_only
        self.reports: list[StoreReport] = []
        self._noted: set[StoreReport] = set()
        # Sealed files a lazy scan verified whole, by path (see `verified_file`).
        self._checked_files: dict[Path, CheckedFile] = {}
        self._streams: dict[str, Stream] = {}
        self._journal: Stream | None = None
        self._lock = threading.Lock()  # guards segment lists against readers on other threads
        self._lock_fd: int | None = None
        # Ownership, so that no count rests on which list or int operation is atomic: the event
        # loop owns `_pending*`, `_pending_bytes`, `_memory_dropped`, `_drops_to_hand`,
        # `_carry_events`, `_committed`; the writer (its thread and, per device, the commit job
        # on the pool) owns `_counters`, the streams and the journal state. They meet only in
        # `Work` (loop -> writer) and `Outcome` (writer -> loop, settled on the loop).
        self._counters: dict[str, Counters] = {}
        self._memory_dropped: dict[str, int] = {}
        self._drops_to_hand: dict[str, int] = {}
        self._journal_full = False
        # The seqs of the two latest `state` events, oldest first (None: not looked up yet).
        self._state_seqs: list[int] | None = None
        self._carry_events: list[PendingEvent] = []
        self._delivered: DeliveredFn | None = None
        self._state_provider: Callable[[], Mapping[str, object]] | None = None
        self._state_asked_at = 0
        self._journal_delivered: JournalDeliveredFn | None = None
        self._pending: dict[str, list[PendingBatch]] = {}
        self._pending_journal: list[PendingEvent] = []
        self._pending_bytes = 0
        self._arrivals = 0
        self._committed: dict[str, int] = {}
        self._journal_committed = 0
        self._closing = False
        self._closed = False
        self._cycles = 0  # writer loop iterations done (commit() waits on it)
        self.commits = 0  # commits attempted (each: one framed batch per touched segment, one fsync)
        self._in_commit = False
        self._wake: asyncio.Event | None = None
        self._room: asyncio.Condition | None = None  # commit() waits here for whole cycles
        # Appenders waiting for room: notified when a commit takes the pending work, as well
        # as when one ends.
        self._space: asyncio.Condition | None = None
        self._task: asyncio.Task[None] | None = None
        self._io: ThreadPoolExecutor | None = None
        self.last_error: StoreIOError | None = None
        # The commit log and the segments written since its last checkpoint (writer's).
        self._wal = CommitLog(path)
        self._wal_dirty: dict[int, tuple[Stream, Segment]] = {}
        # Per stream directory, the highest seq number the `seqs` file holds (writer's).
        self._high_water: dict[str, int] = {}
        self._last_error_log = 0.0

    def forget_reports(self, count: int) -> None:
        """Keep the first `count` reports only: a later read reports again what it meets (the
        query server of `sunpm sd serve` says at each question what that question's reads met,
        as a process of its own would)."""
        with self._lock:
            del self.reports[count:]
            self._noted = set(self.reports)

    def _adopt(self, stream: Stream) -> None:
        self.reports.extend(stream.reports)
        self._noted.update(stream.reports)
        self._streams[stream.name] = stream
        self._counters[stream.name] = Counters()

    def _all_streams(self) -> list[Stream]:
        streams = list(self._streams.values())
        if self._journal is not None:
            streams.append(self._journal)
        return streams

    def _save_high_water(self) -> None:
        """Before the commit log is emptied: the numbers it covered go to `seqs` (store/_wal.py),
        so that none is given again after the segments holding them rot."""
        marks = dict(self._high_water)
        for stream in self._all_streams():
            if stream.next_seq > 1:
                key = stream.dir.relative_to(self.path).as_posix()
                marks[key] = max(marks.get(key, 0), stream.next_seq - 1)
        if marks != self._high_water:
            write_high_water(self.path, marks)
            self._high_water = marks
