"""`Log`: the crash-safe append-only event log (docs/architecture.md §3, docs/behaviour.md §6).

On disk, under the store path:

    lock                          flock'ed by the one writer; holds its pid
    devices/<index>/<seq0>.arrows records of one device: Arrow IPC stream segments (store/_segment.py)
    devices/<index>/<seq0>.arrow  a sealed segment rewritten once as an IPC file: large batches,
                                  zstd when `compress_sealed`
    journal/<seq0>.arrows         the gateway journal, same framing
    defs/<sha256>.csv             definition snapshots (store/snapshots.py)
    config/<sha256>/<file>        configuration snapshots
    state/                        caches only (rebuildable from the journal)

Invariants:
- One writer task; each commit appends at most one framed batch per touched segment, then fsyncs
  it; an append's awaitable completes only after that fsync.
- Sequence numbers (records: per device; journal: one series) start at 1, are assigned at commit
  and are gap-free: a dropped record gets none.
- A failed write is cut back to the segment's last committed length; its items stay pending and
  are retried at the next commit.
- Only whole sealed segments are ever deleted (quota), never an open one's bytes.
"""

from __future__ import annotations

import asyncio
import copy
import fcntl
import itertools
import json
import logging
import os
import threading
import time
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import pyarrow as pa
import pyarrow.compute as pc

import fsio
from config.model import FullPolicy as _ConfigFullPolicy
from store import snapshots
from store._ipc import frame_batch, read_message, schema_message
from store._segment import (
    IPC_FILE_MAGIC,
    CheckedFile,
    checked_file,
    decode_frames,
    footer_matches,
    map_file,
    scan_ipc_file,
    still_verified,
)
from store._stream import DAY_NS, Segment, Stream
from store.errors import (
    ReportKind,
    StoreClosedError,
    StoreError,
    StoreIOError,
    StoreLockedError,
    StoreReadOnlyError,
    StoreReport,
)
from store.schema import JOURNAL_SCHEMA, RECORDS_SCHEMA

log = logging.getLogger("sunpm.store")

JOURNAL: Final = "journal"
_CHECKED_FILES_MAX: Final = 100_000  # ~2 KiB each; a store holds a few thousand sealed files
_SEQ_INDEX: Final = RECORDS_SCHEMA.get_field_index("seq")
_TS_INDEX: Final = RECORDS_SCHEMA.get_field_index("ts")
_INPUT_NAMES: Final = tuple(n for n in RECORDS_SCHEMA.names if n != "seq")
INPUT_SCHEMA: Final = pa.schema([f for f in RECORDS_SCHEMA if f.name != "seq"],
                                metadata=RECORDS_SCHEMA.metadata)
_LOOSE_SCHEMA: Final = pa.schema([pa.field(f.name, f.type) for f in INPUT_SCHEMA])


# STORE_FullPolicy is config's enum: one type, so `StoreOptions(full_policy=settings.
# store_full_policy)` is obeyed (the checks below compare by identity).
FullPolicy = _ConfigFullPolicy


# (device, segment's last seq, segment's last record time in ns) -> True when every record of the
# device up to there is delivered to every data-receiving server (docs/behaviour.md §6).
DeliveredFn = Callable[[str, int, int], bool]
# (segment's last journal seq, its last event time in ns) -> True when every event in it that some
# server gets is delivered (ALARM, PARAM, ACK, LOG, MQTT alarms and results).
JournalDeliveredFn = Callable[[int, int], bool]


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreOptions:
    flush_s: float = 1.0  # STORE_FlushSeconds
    device_quota_bytes: int = 50 * 2**20  # STORE_DeviceQuotaMB
    full_policy: FullPolicy = FullPolicy.STOP  # STORE_FullPolicy
    # The rewrite of sealed segments (compact_sealed) uses zstd: the quota counts bytes on flash
    # (docs/behaviour.md §6)
    compress_sealed: bool = True
    # Rewrite each sealed segment once as an IPC file of large batches: a live segment holds one
    # small batch per commit, and scans over months of them would pay per batch (store_query).
    compact_sealed: bool = True
    seal_bytes: int = 4 * 2**20  # an eighth of the quota when that is smaller
    journal_quota_bytes: int | None = None  # None: the device quota
    max_pending_bytes: int = 64 * 2**20  # in-memory limit while commits fail
    disk_error_log_interval_s: float = 60.0

    @property
    def segment_limit_bytes(self) -> int:
        return min(self.seal_bytes, max(self.device_quota_bytes // 8, 1))

    @property
    def journal_quota(self) -> int:
        return self.journal_quota_bytes or self.device_quota_bytes


@dataclass(frozen=True, slots=True)
class SeqRange:
    """Sequence numbers given to one append: `first..last` inclusive; empty when dropped."""

    first: int
    last: int
    dropped: bool = False

    def __len__(self) -> int:
        return max(0, self.last - self.first + 1)


@dataclass(frozen=True, slots=True)
class Watermark:
    """Last committed sequence number per device (0: none yet) and of the journal."""

    records: Mapping[str, int]
    journal: int

    def covers(self, device: str, seq: int) -> bool:
        return seq <= self.records.get(device, 0)


@dataclass(frozen=True, slots=True)
class DeviceStats:
    usage_bytes: int
    quota_bytes: int
    segments: int
    last_seq: int
    dropped: int  # records dropped by the quota (stop) or the memory limit while the disk failed
    evicted: int  # records deleted undelivered (evict-oldest)
    full: bool  # inside a storage-full episode


@dataclass(slots=True)
class _PendingBatch:
    batch: pa.RecordBatch
    future: asyncio.Future[SeqRange] | None
    nbytes: int
    order: int  # arrival number: the oldest goes first when memory must be freed


@dataclass(slots=True)
class _PendingEvent:
    ts_ns: int
    kind: str
    device: str | None
    def_: str | None
    body: str
    future: asyncio.Future[int] | None


@dataclass(slots=True)
class _Counters:
    """A device's quota counters. Owner: the writer (its commit job for the device, one at a
    time); other threads only read them (`stats`). Drops decided on the loop (the memory
    bound while the disk fails) are counted in `Log._memory_dropped` and handed over in `_Work`."""

    dropped: int = 0
    evicted: int = 0
    full: bool = False
    episode_dropped: int = 0
    episode_evicted: int = 0


@dataclass(slots=True)
class _Work:
    records: dict[str, list[_PendingBatch]]
    journal: list[_PendingEvent]
    memory_drops: dict[str, int]  # records dropped on the loop since the last commit, per device


@dataclass(slots=True)
class _Outcome:
    records: dict[str, list[SeqRange]] = field(default_factory=dict)
    failed_records: dict[str, list[_PendingBatch]] = field(default_factory=dict)
    journal: list[int] = field(default_factory=list)
    failed_journal: list[_PendingEvent] = field(default_factory=list)
    error: OSError | None = None
    compact: list[tuple[str, Segment]] = field(default_factory=list)
    carry: list[_PendingEvent] = field(default_factory=list)  # for the next commit
    # Acknowledgements, given on the loop after the watermark moved (never before).
    acks: list[tuple[asyncio.Future[SeqRange], SeqRange]] = field(default_factory=list)
    journal_acks: list[tuple[asyncio.Future[int], int]] = field(default_factory=list)


def _now_ns() -> int:
    return time.time_ns()


class Log:
    """The store: records per device and the gateway journal. Open with `await Log.open(...)`."""

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
        # `_Work` (loop -> writer) and `_Outcome` (writer -> loop, settled on the loop).
        self._counters: dict[str, _Counters] = {}
        self._memory_dropped: dict[str, int] = {}
        self._drops_to_hand: dict[str, int] = {}
        self._journal_full = False
        self._last_state_seq: int | None = None
        self._carry_events: list[_PendingEvent] = []
        self._delivered: DeliveredFn | None = None
        self._state_provider: Callable[[], Mapping[str, object]] | None = None
        self._state_asked_at = 0
        self._journal_delivered: JournalDeliveredFn | None = None
        self._pending: dict[str, list[_PendingBatch]] = {}
        self._pending_journal: list[_PendingEvent] = []
        self._pending_bytes = 0
        self._arrivals = 0
        self._committed: dict[str, int] = {}
        self._journal_committed = 0
        self._closing = False
        self._closed = False
        self._cycles = 0  # writer loop iterations done (commit() waits on it)
        self.commits = 0  # commits attempted (each: one framed batch + fsync per touched segment)
        self._in_commit = False
        self._wake: asyncio.Event | None = None
        self._room: asyncio.Condition | None = None
        self._task: asyncio.Task[None] | None = None
        self._io: ThreadPoolExecutor | None = None
        self.last_error: StoreIOError | None = None
        self._last_error_log = 0.0

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    async def open(cls, path: Path, options: StoreOptions | None = None, *,
                   read_only: bool = False) -> Log:
        """Open a store (creating it unless read-only); recovery runs before this returns.

        A writer takes the lock file and starts the writer task; read-only never writes a byte.
        """
        self = cls(Path(path), options or StoreOptions(), read_only)
        await asyncio.to_thread(self._open_sync)
        if not read_only:
            self._wake = asyncio.Event()
            self._room = asyncio.Condition()
            self._io = ThreadPoolExecutor(max_workers=8, thread_name_prefix="store-io")
            self._task = asyncio.create_task(self._writer(), name="store-writer")
            for report in self.reports:
                if report.kind in (ReportKind.TORN_TAIL, ReportKind.DAMAGE):
                    self._carry_events.append(_PendingEvent(
                        _now_ns(), "storage", None, None, _json(_report_body(report)), None))
        return self

    @classmethod
    def open_read_only(cls, path: Path, options: StoreOptions | None = None) -> Log:
        """Blocking read-only open (card dumps, offline tools): never writes a byte."""
        self = cls(Path(path), options or StoreOptions(), True)
        self._open_sync()
        return self

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Final commit of everything pending, then release the writer's lock."""
        if self._closed:
            return
        self._closing = True
        if self._task is not None:
            assert self._wake is not None
            self._wake.set()
            try:
                await self._task
            finally:
                self._task = None
        self._closed = True
        for stream in self._all_streams():
            stream.close_fd()
        if self._io is not None:
            self._io.shutdown(wait=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _open_sync(self) -> None:
        if not self.read_only:
            created = False
            for sub in ("devices", JOURNAL, "defs", "config", "state"):
                if not (self.path / sub).is_dir():
                    fsio.mkdir(self.path / sub, parents=True)
                    created = True
            if created:
                fsio.fsync_dir(self.path)  # the directories' entries survive a power cut too
            self._take_lock()
        elif not self.path.is_dir():
            raise StoreError(f"{self.path}: no store here (not a directory)")
        devices = self.path / "devices"
        if devices.is_dir():
            for entry in sorted(os.scandir(devices), key=lambda e: e.name):
                if not entry.is_dir():
                    self.reports.append(StoreReport(kind=ReportKind.FOREIGN, path=Path(entry.path),
                                                    detail="not a device directory"))
                    continue
                stream = Stream(entry.name, Path(entry.path), RECORDS_SCHEMA)
                try:
                    stream.load(read_only=self.read_only)
                except OSError as err:
                    self.reports.append(StoreReport(kind=ReportKind.UNREADABLE,
                                                    path=Path(entry.path), detail=str(err)))
                    continue
                self._adopt(stream)
                self._committed[stream.name] = stream.next_seq - 1
        if (self.path / JOURNAL).is_dir():
            journal = Stream(JOURNAL, self.path / JOURNAL, JOURNAL_SCHEMA)
            journal.load(read_only=self.read_only)
            self.reports.extend(journal.reports)
            self._noted.update(journal.reports)
            self._journal = journal
            self._journal_committed = journal.next_seq - 1
        for report in self.reports:
            if report.kind is ReportKind.TORN_TAIL:
                log.warning("%s", report)
            else:
                log.error("%s", report)

    def _adopt(self, stream: Stream) -> None:
        self.reports.extend(stream.reports)
        self._noted.update(stream.reports)
        self._streams[stream.name] = stream
        self._counters[stream.name] = _Counters()

    def _take_lock(self) -> None:
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreLockedError(self.path, f"pid {holder}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _all_streams(self) -> list[Stream]:
        streams = list(self._streams.values())
        if self._journal is not None:
            streams.append(self._journal)
        return streams

    # -- delivery hooks (set by the outbox) -----------------------------------------------

    def set_state_provider(self, provider: Callable[[], Mapping[str, object]] | None) -> None:
        """Who writes `state` events when the journal's quota needs one (blocking, called on
        the writer thread): typically `lambda: replay(log, reducers).to_body()` with the
        outbox's reducers. None: nobody; the journal then grows past its quota."""
        self._state_provider = provider

    def set_delivery_predicates(self, records: DeliveredFn | None,
                                journal: JournalDeliveredFn | None = None) -> None:
        """What counts as delivered for quota deletion; None: no server configured, any.

        Called on the store's writer threads, several devices at once: read-only and quick.
        """
        self._delivered = records
        self._journal_delivered = journal

    # -- appends ---------------------------------------------------------------------------

    async def append_records(self, device: str, batch: pa.RecordBatch, *,
                             commit_now: bool = False) -> SeqRange:
        """Append one or more records of `device`; completes once fsynced (acknowledged).

        `batch` has the columns of RECORDS_SCHEMA; `seq` may be absent and is ignored if present.
        Consecutive rows with the same `ts` form one record; each append starts a new record.
        Returns the records' sequence numbers, or an empty range with `dropped=True` when the
        quota (policy `stop`) or the memory limit during a disk failure dropped them. Waits for
        room first when the writer is behind (bounded memory).
        """
        self._check_writable()
        await self._make_room(batch.get_total_buffer_size())
        return await self.submit_records(device, batch, commit_now=commit_now)

    def submit_records(self, device: str, batch: pa.RecordBatch, *,
                       commit_now: bool = False) -> asyncio.Future[SeqRange]:
        """As `append_records` without waiting: returns the acknowledgement to await later.

        Does not wait for room: a producer that submits in bulk awaits `wait_for_room()`
        between submissions.
        """
        self._check_writable()
        if not device or "/" in device or device.startswith("."):
            raise StoreError(f"device {device!r}: not a valid device index")
        batch = _conform(batch)
        future: asyncio.Future[SeqRange] = asyncio.get_running_loop().create_future()
        if batch.num_rows == 0:
            seq = self._committed.get(device, 0) + 1
            future.set_result(SeqRange(seq, seq - 1))
            return future
        # Not `nbytes`: it de-duplicates buffers and costs 50x more per call on the hot path.
        nbytes = batch.get_total_buffer_size()
        self._arrivals += 1
        self._pending.setdefault(device, []).append(
            _PendingBatch(batch, future, nbytes, self._arrivals))
        self._pending_bytes += nbytes
        if commit_now:
            assert self._wake is not None
            self._wake.set()
        return future

    async def wait_for_room(self) -> None:
        """Wait until pending appends are within the memory bound."""
        self._check_writable()
        await self._make_room(0)

    async def append_journal(self, kind: str, body: Mapping[str, object], *,
                             device: str | None = None, def_: str | None = None,
                             ts_ns: int | None = None, commit_now: bool = False) -> int:
        """Append one journal event; completes with its `seq` once fsynced."""
        self._check_writable()
        try:
            text = _json(body)
        except (TypeError, ValueError) as err:
            raise StoreError(f"journal event {kind!r}: body is not JSON: {err}") from err
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        # Journal events are never dropped and never wait for room (docs/behaviour.md §6).
        self._pending_journal.append(_PendingEvent(
            _now_ns() if ts_ns is None else ts_ns, kind, device, def_, text, future))
        if commit_now:
            assert self._wake is not None
            self._wake.set()
        return await future

    async def commit(self) -> None:
        """Commit now and wait until a commit that started after this call has finished.

        Everything appended before the call is then acknowledged (or still pending if the disk
        fails), store events included.
        """
        self._check_writable()
        assert self._wake is not None and self._room is not None
        wake, room = self._wake, self._room
        target = self._cycles + (2 if self._in_commit else 1)
        while self._cycles < target and not self._closed:
            wake.set()
            async with room:
                await room.wait_for(lambda: self._cycles >= target or self._closed
                                    or not wake.is_set())

    def _check_writable(self) -> None:
        if self.read_only:
            raise StoreReadOnlyError(f"{self.path}: store is open read-only")
        if self._closing or self._closed:
            raise StoreClosedError(f"{self.path}: store is closed")

    async def _make_room(self, nbytes: int) -> None:
        assert self._room is not None
        if self._pending_bytes + nbytes <= self.options.max_pending_bytes:
            return
        if self.last_error is not None:
            self._drop_oldest_pending(nbytes)
            return
        # Bounded: when the writer falls behind, appenders wait here, so polling slows down
        # instead of memory growing. Waiting appenders also start the next commit at once
        # rather than at the next flush tick: under overload commits come closer together.
        assert self._wake is not None
        self._wake.set()
        async with self._room:
            await self._room.wait_for(
                lambda: self._pending_bytes + nbytes <= self.options.max_pending_bytes
                or self.last_error is not None or self._closing)
        if self.last_error is not None:
            self._drop_oldest_pending(nbytes)

    def _drop_oldest_pending(self, nbytes: int) -> None:
        """While commits fail: drop the oldest record batches (journal events always wait)."""
        while self._pending_bytes + nbytes > self.options.max_pending_bytes:
            oldest: tuple[str, _PendingBatch] | None = None
            for device, items in self._pending.items():
                if items and (oldest is None or items[0].order < oldest[1].order):
                    oldest = (device, items[0])
            if oldest is None:
                return
            device, item = oldest
            self._pending[device].pop(0)
            self._pending_bytes -= item.nbytes
            records = _count_records(item.batch)
            self._memory_dropped[device] = self._memory_dropped.get(device, 0) + records
            self._drops_to_hand[device] = self._drops_to_hand.get(device, 0) + records
            if item.future is not None and not item.future.done():
                seq = self._committed.get(device, 0) + 1
                item.future.set_result(SeqRange(seq, seq - 1, dropped=True))

    # -- the writer task -------------------------------------------------------------------

    async def _writer(self) -> None:
        assert self._wake is not None and self._room is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.flush_s
        while True:
            if not self._closing:
                try:
                    # Every flush_s from the previous commit's start, not from its end.
                    await asyncio.wait_for(self._wake.wait(),
                                           timeout=max(0.0, deadline - loop.time()))
                except TimeoutError:
                    pass
            self._wake.clear()
            deadline = loop.time() + self.options.flush_s
            work = self._take()
            self._in_commit = work is not None
            if work is not None:
                self.commits += 1
                try:
                    outcome = await asyncio.to_thread(self._commit_sync, work)
                except Exception as err:  # top of the writer task: fail this commit, keep going
                    log.exception("Store commit failed unexpectedly. path=%s", self.path)
                    self._fail_work(work, err)
                    outcome = _Outcome()
                else:
                    self._settle(outcome)
                for name, seg in outcome.compact:
                    await asyncio.to_thread(self._compact_sync, name, seg,
                                            self.options.compress_sealed)
                async with self._room:
                    self._room.notify_all()
                if outcome.error is not None and self._closing:
                    # Closing while the disk fails: what is pending stays unacknowledged.
                    self._fail_pending(outcome.error)
                    return
                if outcome.error is not None:
                    await asyncio.sleep(self.options.flush_s)
            self._in_commit = False
            self._cycles += 1
            async with self._room:
                self._room.notify_all()
            if self._closing and work is None:
                return

    def _take(self) -> _Work | None:
        if (not self._pending and not self._pending_journal and not self._carry_events
                and not self._drops_to_hand):
            return None
        journal = self._carry_events + self._pending_journal
        work = _Work(self._pending, journal, self._drops_to_hand)
        self._pending = {}
        self._pending_journal = []
        self._carry_events = []
        self._drops_to_hand = {}
        self._pending_bytes = 0
        return work

    def _settle(self, outcome: _Outcome) -> None:
        self._carry_events.extend(outcome.carry)
        for device, results in outcome.records.items():
            for result in results:
                if not result.dropped:
                    self._committed[device] = max(self._committed.get(device, 0), result.last)
        if outcome.journal:
            self._journal_committed = max(self._journal_committed, max(outcome.journal))
        for future, result in outcome.acks:
            if not future.done():
                future.set_result(result)
        for jfuture, seq in outcome.journal_acks:
            if not jfuture.done():
                jfuture.set_result(seq)
        # Failed items go back in front of anything appended meanwhile, in their order.
        for device, items in outcome.failed_records.items():
            self._pending[device] = items + self._pending.get(device, [])
            self._pending_bytes += sum(i.nbytes for i in items)
        self._pending_journal = outcome.failed_journal + self._pending_journal
        if outcome.error is None:
            if self.last_error is not None:
                log.info("Store writes resumed. path=%s", self.path)
                self._carry_events.append(_PendingEvent(
                    _now_ns(), "storage", None, None,
                    _json({"event": "disk_ok", "detail": str(self.last_error)}), None))
            self.last_error = None
        else:
            err = StoreIOError(f"{self.path}: commit failed: {outcome.error}; pending appends "
                               "wait in memory and are retried")
            first = self.last_error is None
            self.last_error = err
            now = time.monotonic()
            if first or now - self._last_error_log >= self.options.disk_error_log_interval_s:
                log.error("%s", err)
                self._last_error_log = now
            if first:
                self._carry_events.append(_PendingEvent(
                    _now_ns(), "storage", None, None,
                    _json({"event": "disk_error", "detail": str(outcome.error)}), None))

    def _fail_work(self, work: _Work, error: Exception) -> None:
        err = StoreError(f"{self.path}: commit failed: {error}")
        for items in work.records.values():
            for item in items:
                if item.future is not None and not item.future.done():
                    item.future.set_exception(err)
        for event in work.journal:
            if event.future is not None and not event.future.done():
                event.future.set_exception(err)

    def _fail_pending(self, error: OSError) -> None:
        err = StoreIOError(f"{self.path}: closed while commits fail: {error}")
        for items in self._pending.values():
            for item in items:
                if item.future is not None and not item.future.done():
                    item.future.set_exception(err)
        for event in self._pending_journal:
            if event.future is not None and not event.future.done():
                event.future.set_exception(err)
        self._pending.clear()
        self._pending_journal.clear()

    # -- commit (writer thread) ------------------------------------------------------------

    def _commit_sync(self, work: _Work) -> _Outcome:
        outcome = _Outcome()
        events: list[_PendingEvent] = []
        for device, records in work.memory_drops.items():
            # Before the device's job starts: the writer thread owns the counters here.
            # `dropped` stays the loop's (stats adds `_memory_dropped`); the episode's count
            # for its `available` event is the writer's.
            counters = self._counters.setdefault(device, _Counters())
            counters.episode_dropped += records
            self._start_episode(device, counters, events, "disk")
        assert self._io is not None
        # One job per device on a small pool: a device's framing is CPU work under the GIL, but
        # its fsyncs (and directory fsyncs of new segments) overlap with the other devices'.
        # Each job returns its events and sealed segments; nothing is shared between jobs.
        jobs = [(device, items, self._io.submit(self._commit_device, device, items))
                for device, items in work.records.items()]
        for device, items, job in jobs:
            job_result = job.result()
            events.extend(job_result.events)
            outcome.compact.extend(job_result.compact)
            if job_result.failure is not None:
                outcome.error = job_result.failure
                outcome.failed_records[device] = items
                continue
            outcome.records[device] = job_result.results
            for item, result in zip(items, job_result.results, strict=True):
                if item.future is not None:
                    outcome.acks.append((item.future, result))
        self._commit_journal(work.journal + events, outcome)
        return outcome

    def _commit_device(self, device: str, items: list[_PendingBatch]) -> _DeviceCommit:
        """Frame, check the quota, write and fsync one device's part of a commit (pool thread).

        On failure everything this commit did to the device's segments is rolled back.
        """
        done = _DeviceCommit()
        stream = self._device_stream(device)
        if isinstance(stream, OSError):
            done.failure = stream
            return done
        saved = stream.next_seq
        stream.checkpoint()
        try:
            writes, done.results = self._prepare_device(device, stream, items, done.events,
                                                        done.compact)
            done.failure = _write_all(stream, writes)
        except OSError as err:
            done.failure = err
        if done.failure is not None:
            with self._lock:
                stream.rollback()
            stream.next_seq = saved
            done.results = []
            # What the failed attempt counted (quota drops, evictions) stands: evicted segments
            # are gone. Its events go with the journal of this commit all the same.
            done.compact = []
        return done

    def _device_stream(self, device: str) -> Stream | OSError:
        stream = self._streams.get(device)
        if stream is not None:
            return stream
        directory = self.path / "devices" / device
        try:
            fsio.mkdir(directory)
            fsio.fsync_dir(directory.parent)
        except OSError as err:
            return err
        stream = Stream(device, directory, RECORDS_SCHEMA)
        with self._lock:
            self._adopt(stream)
        return stream

    def _prepare_device(self, device: str, stream: Stream, items: list[_PendingBatch],
                        events: list[_PendingEvent], compact: list[tuple[str, Segment]]
                        ) -> tuple[list[tuple[Segment, bytes]], list[SeqRange]]:
        """Frame the device's pending batches per UTC day, apply the quota, rotate segments.

        Returns the writes to do (segment, framed bytes) and one result per pending item.
        """
        counters = self._counters.setdefault(device, _Counters())
        firsts: dict[int, int] = {}
        lasts: dict[int, int] = {}
        dropped_items: set[int] = set()
        writes: list[tuple[Segment, bytes]] = []
        for day, merged_input, members, ts_min, ts_max in _plan_groups(
                [item.batch for item in items]):
            seq = stream.next_seq
            seq_buf = array("Q")
            for index, runs in members:
                firsts.setdefault(index, seq)
                for run in runs:
                    seq_buf.extend(array("Q", [seq]) * run)
                    seq += 1
                lasts[index] = seq - 1
            seq_arr = pa.Array.from_buffers(pa.uint64(), len(seq_buf),
                                            [None, pa.py_buffer(seq_buf)])
            columns = list(merged_input.columns)
            columns.insert(_SEQ_INDEX, seq_arr)
            merged = pa.RecordBatch.from_arrays(columns, schema=RECORDS_SCHEMA)
            frame = frame_batch(RECORDS_SCHEMA, merged, seq_first=stream.next_seq,
                                seq_last=seq - 1, ts_min=ts_min, ts_max=ts_max)
            records = seq - stream.next_seq
            seg = self._segment_for(stream, day, len(frame), writes, compact)
            evicted_before = counters.evicted
            if not self._make_quota_room(device, stream, seg, len(frame), counters, events,
                                         compact):
                counters.dropped += records
                counters.episode_dropped += records
                self._start_episode(device, counters, events, "quota")
                dropped_items.update(index for index, _ in members)
                continue
            if seg is None:
                seg = stream.create_segment(day)
            stream.next_seq = seq
            writes.append((seg, frame))
            # Size is known now so that later groups and quota checks see it.
            seg.size += len(frame)
            seg.ts_min = ts_min if seg.ts_min is None else min(seg.ts_min, ts_min)
            seg.ts_max = ts_max if seg.ts_max is None else max(seg.ts_max, ts_max)
            seg.seq_last = seq - 1
            if (counters.full and not dropped_items and counters.evicted == evicted_before
                    and self._pressure_over(device, stream)):
                # Stored with neither a drop nor an undelivered eviction: the episode ends.
                self._end_episode(device, counters, events)
        results: list[SeqRange] = []
        for index in range(len(items)):
            if index in dropped_items or index not in firsts:
                nxt = stream.next_seq
                results.append(SeqRange(nxt, nxt - 1, dropped=True))
            else:
                results.append(SeqRange(firsts[index], lasts[index]))
        return writes, results

    def _segment_for(self, stream: Stream, day: int, frame_len: int,
                     writes: list[tuple[Segment, bytes]], compact: list[tuple[str, Segment]]
                     ) -> Segment | None:
        """The open segment that takes this frame, sealing the current one if it must."""
        seg = stream.open_segment()
        if seg is None:
            return None
        if seg.day is None:
            seg.day = day
        header = len(schema_message(stream.schema))
        has_data = seg.size > header
        too_big = seg.size + frame_len > self._limit(stream)
        if seg.day == day and not (too_big and has_data) and not any(w[0] is seg for w in writes):
            return seg
        if any(w[0] is seg for w in writes):
            # The segment must seal after what this commit already planned for it: write that
            # first (a later failure rolls the whole stream back, stream.rollback).
            _write_all(stream, [w for w in writes if w[0] is seg], raise_errors=True)
            writes[:] = [w for w in writes if w[0] is not seg]
        with self._lock:
            stream.seal(seg)
        if self.options.compact_sealed:
            compact.append((stream.name, seg))
        return None

    def _limit(self, stream: Stream) -> int:
        if stream.name == JOURNAL:
            return min(self.options.seal_bytes, max(self.options.journal_quota // 8, 1))
        return self.options.segment_limit_bytes

    def _make_quota_room(self, device: str, stream: Stream, seg: Segment | None, frame_len: int,
                         counters: _Counters, events: list[_PendingEvent],
                         compact: list[tuple[str, Segment]]) -> bool:
        need = frame_len + (0 if seg is not None else len(schema_message(stream.schema)))
        quota = self.options.device_quota_bytes
        while self._quota_usage(stream, compact) + need > quota:
            sealed = [s for s in stream.segments if s.sealed]
            victim = next((s for s in sealed if self._is_delivered(device, stream, s)), None)
            if victim is not None:
                self._delete_segment(stream, victim)
                continue
            if self.options.full_policy is FullPolicy.STOP or not sealed:
                return False
            victim = sealed[0]
            if victim.seq_last is None:
                stream.walk(victim)
            count = (victim.seq_last - victim.seq0 + 1) if victim.seq_last is not None else 0
            self._delete_segment(stream, victim)
            counters.evicted += count
            counters.episode_evicted += count
            log.error("Storage full: undelivered records evicted. device=%s records=%d "
                      "from=%s to=%s", device, count, _iso(victim.ts_min), _iso(victim.ts_max))
            events.append(_PendingEvent(_now_ns(), "storage", device, None, _json({
                "event": "evicted", "device": device, "records": count,
                "seq_first": victim.seq0, "seq_last": victim.seq_last,
                "ts_min": victim.ts_min, "ts_max": victim.ts_max}), None))
            self._start_episode(device, counters, events, "quota")
        return True

    def _quota_usage(self, stream: Stream, compact: list[tuple[str, Segment]]) -> int:
        """Bytes on flash, a segment sealed in this commit counted as its rewrite will take.

        It is rewritten (compressed) right after the commit; counted as written, it would drop
        the records of each commit that seals one near the quota, and room would come back a
        commit later. Its rewrite is foreseen at the stream's last measured ratio.
        """
        if not (self.options.compact_sealed and self.options.compress_sealed):
            return stream.usage
        rewriting = {id(s) for name, s in compact if name == stream.name}
        return sum(round(s.size * stream.flash_ratio) if id(s) in rewriting else s.size
                   for s in stream.segments)

    def _pressure_over(self, device: str, stream: Stream) -> bool:
        """Whether the next segment's worth of records can be stored without an eviction.

        With `evict-oldest` under steady pressure every eviction frees one segment, so records
        are stored in between; ending the episode there would raise `Storage full` again at the
        next eviction. It ends once room or a delivered oldest segment is there instead.
        """
        if self.options.full_policy is FullPolicy.STOP:
            return True
        if stream.usage + 2 * self.options.segment_limit_bytes <= self.options.device_quota_bytes:
            return True
        oldest = next((s for s in stream.segments if s.sealed), None)
        return oldest is not None and self._is_delivered(device, stream, oldest)

    def _is_delivered(self, device: str, stream: Stream, seg: Segment) -> bool:
        if self._delivered is None:
            return True
        if seg.seq_last is None or seg.ts_max is None:
            stream.walk(seg)
        if seg.seq_last is None or seg.ts_max is None:
            return True  # holds no record
        return self._delivered(device, seg.seq_last, seg.ts_max)

    def _delete_segment(self, stream: Stream, seg: Segment) -> None:
        with self._lock:
            stream.delete(seg)

    def _start_episode(self, device: str, counters: _Counters, events: list[_PendingEvent],
                       reason: str) -> None:
        if counters.full:
            return
        counters.full = True
        log.error("Storage full. device=%s reason=%s policy=%s", device, reason,
                  self.options.full_policy.value)
        events.append(_PendingEvent(_now_ns(), "storage", device, None, _json({
            "event": "full", "device": device, "reason": reason,
            "policy": self.options.full_policy.value}), None))

    def _end_episode(self, device: str, counters: _Counters, events: list[_PendingEvent]) -> None:
        counters.full = False
        log.info("Storage available. device=%s dropped=%d evicted=%d", device,
                 counters.episode_dropped, counters.episode_evicted)
        events.append(_PendingEvent(_now_ns(), "storage", device, None, _json({
            "event": "available", "device": device, "dropped": counters.episode_dropped,
            "evicted": counters.episode_evicted}), None))
        counters.episode_dropped = counters.episode_evicted = 0

    def _commit_journal(self, events: list[_PendingEvent], outcome: _Outcome) -> None:
        if not events:
            return
        if self._journal is None:
            self._journal = Stream(JOURNAL, self.path / JOURNAL, JOURNAL_SCHEMA)
        stream = self._journal
        saved = stream.next_seq
        seqs = list(range(saved, saved + len(events)))
        stream.checkpoint()
        try:
            writes: list[tuple[Segment, bytes]] = []
            by_day: list[tuple[int, list[int]]] = []
            for i, event in enumerate(events):
                day = event.ts_ns // DAY_NS
                if by_day and by_day[-1][0] == day:
                    by_day[-1][1].append(i)
                else:
                    by_day.append((day, [i]))
            for day, indexes in by_day:
                chosen = [events[i] for i in indexes]
                batch = _journal_batch(chosen, [seqs[i] for i in indexes])
                ts = [e.ts_ns for e in chosen]
                frame = frame_batch(JOURNAL_SCHEMA, batch, seq_first=seqs[indexes[0]],
                                    seq_last=seqs[indexes[-1]], ts_min=min(ts), ts_max=max(ts))
                seg = self._segment_for(stream, day, len(frame), writes, outcome.compact)
                stream.next_seq = seqs[indexes[0]]  # a new segment is named by its first seq
                if seg is None:
                    seg = stream.create_segment(day)
                writes.append((seg, frame))
                seg.size += len(frame)
                seg.seq_last = seqs[indexes[-1]]
                seg.ts_min = min(ts) if seg.ts_min is None else min(seg.ts_min, min(ts))
                seg.ts_max = max(ts) if seg.ts_max is None else max(seg.ts_max, max(ts))
            err = _write_all(stream, writes)
            if err is not None:
                raise err
        except OSError as err:
            with self._lock:
                stream.rollback()
            stream.next_seq = saved
            outcome.error = err
            outcome.failed_journal = events
            return
        stream.next_seq = saved + len(events)
        outcome.journal = seqs
        for event, seq in zip(events, seqs, strict=True):
            if event.kind == "state":
                self._last_state_seq = seq
            if event.future is not None:
                outcome.journal_acks.append((event.future, seq))
        try:
            self._journal_quota(stream, outcome.carry)
        except OSError as err:
            log.error("Journal quota deletion failed. error=%s", err)

    def _journal_quota(self, stream: Stream, carry: list[_PendingEvent]) -> None:
        quota = self.options.journal_quota
        if stream.usage <= quota:
            self._journal_full = False
            return
        if self._last_state_seq is None:
            self._last_state_seq = self._find_last_state_seq()
        while stream.usage > quota:
            victim = next((s for s in stream.segments if s.sealed), None)
            if victim is not None and (victim.seq_last is None or victim.ts_max is None):
                stream.walk(victim)
            ok = (
                victim is not None and victim.seq_last is not None
                and self._last_state_seq > victim.seq_last
                and (self._journal_delivered is None
                     or self._journal_delivered(victim.seq_last, victim.ts_max or 0))
            )
            if (not ok and victim is not None and victim.seq_last is not None
                    and self._last_state_seq <= victim.seq_last and self._state_provider is not None
                    and self._state_asked_at < stream.next_seq - 1):
                # Only a later `state` event lets the oldest segment go: ask for one (it joins
                # the next commit); the segment goes at the commit after.
                self._state_asked_at = stream.next_seq - 1
                try:
                    body = _json(self._state_provider())
                except (StoreError, OSError, TypeError, ValueError) as err:
                    log.error("State snapshot for the journal quota failed. error=%s", err)
                else:
                    carry.append(_PendingEvent(_now_ns(), "state", None, None, body, None))
                    return
            if not ok:
                if not self._journal_full:
                    self._journal_full = True
                    log.error("Storage full. device=journal usage=%d quota=%d", stream.usage,
                              quota)
                    carry.append(_PendingEvent(_now_ns(), "storage", None, None,
                        _json({"event": "full", "device": JOURNAL, "reason": "quota"}), None))
                return
            assert victim is not None
            with self._lock:
                stream.delete(victim)

    def _find_last_state_seq(self) -> int:
        table = self.journal(kinds=["state"])
        if table.num_rows == 0:
            return 0
        return int(pc.max(table.column("seq")).as_py())

    def _compact_sync(self, name: str, seg: Segment, compress: bool) -> None:
        stream = self._journal if name == JOURNAL else self._streams.get(name)
        if stream is None or seg not in stream.segments or not seg.sealed or seg.ipc_file:
            return  # deleted meanwhile, or unsealed again by the rollback of a failed commit
        try:
            stream.compact(seg, compress=compress, lock=self._lock)
        except (OSError, pa.ArrowInvalid) as err:
            log.error("Rewrite of a sealed segment failed; it stays as written. "
                      "segment=%s error=%s", seg.path, err)

    # -- readers ---------------------------------------------------------------------------

    def devices(self) -> list[str]:
        with self._lock:
            return sorted(self._streams)

    def usage(self, device: str) -> int:
        """Bytes counted against the device's quota: on flash (sealed files as rewritten)."""
        with self._lock:
            stream = self._streams.get(device)
            return stream.usage if stream is not None else 0

    def journal_usage(self) -> int:
        with self._lock:
            return self._journal.usage if self._journal is not None else 0

    def stats(self, device: str) -> DeviceStats:
        counters = self._counters.get(device, _Counters())
        with self._lock:
            stream = self._streams.get(device)
            usage = stream.usage if stream is not None else 0
            segments = len(stream.segments) if stream is not None else 0
        # The writer's counts plus the drops the loop made while the disk failed (read on the
        # loop, which owns those; the writer's may lag by the commit in flight).
        memory = self._memory_dropped.get(device, 0)
        return DeviceStats(usage, self.options.device_quota_bytes, segments,
                           self._committed.get(device, 0), counters.dropped + memory,
                           counters.evicted, counters.full or device in self._drops_to_hand)

    def watermark(self) -> Watermark:
        return Watermark(dict(self._committed), self._journal_committed)

    def records(self, device: str, *, start_ns: int | None = None, end_ns: int | None = None,
                seq_from: int | None = None, seq_to: int | None = None) -> pa.Table:
        """A device's committed records with `start_ns <= ts < end_ns` and seq in
        `[seq_from, seq_to]` (blocking: call through `asyncio.to_thread` from the loop)."""
        stream = self._streams.get(device)
        batches = [] if stream is None else self._read(stream, start_ns, end_ns, seq_from, seq_to)
        table = pa.Table.from_batches(batches, schema=RECORDS_SCHEMA)
        return _filter(table, start_ns, end_ns, seq_from, seq_to)

    def journal(self, *, start_ns: int | None = None, end_ns: int | None = None,
                kinds: Sequence[str] | None = None, seq_from: int | None = None) -> pa.Table:
        """Committed journal events in a time window, of some kinds, from a seq on (blocking)."""
        batches = [] if self._journal is None else self._read(
            self._journal, start_ns, end_ns, seq_from, None)
        table = _filter(pa.Table.from_batches(batches, schema=JOURNAL_SCHEMA), start_ns, end_ns,
                        seq_from, None)
        if kinds is not None:
            wanted = pa.array(list(kinds), pa.string())
            table = table.filter(pc.is_in(table.column("kind").cast(pa.string()), wanted))
        return table

    def record_batches(self, device: str, columns: Sequence[str] | None = None
                       ) -> list[pa.RecordBatch]:
        """Every committed batch of a device, oldest first (for query helpers)."""
        return list(self.iter_record_batches(device, columns))

    def iter_record_batches(self, device: str, columns: Sequence[str] | None = None
                            ) -> Iterator[pa.RecordBatch]:
        """A device's committed batches, oldest first, one segment decoded at a time, each
        verified as it is read; `columns`: only those RECORDS_SCHEMA fields decoded (and
        decompressed), in schema order (blocking)."""
        stream = self._streams.get(device)
        if stream is None:
            return
        indexes = None if columns is None else \
            sorted(RECORDS_SCHEMA.get_field_index(name) for name in set(columns))
        if indexes is not None and (not indexes or indexes[0] < 0):
            raise ValueError(f"no record columns among {sorted(columns or [])}")
        with self._lock:
            segs = list(stream.segments)
        for seg in segs:
            yield from self._read_segment(stream, seg, indexes)

    def journal_batches(self) -> list[pa.RecordBatch]:
        return [] if self._journal is None else self._read(self._journal, None, None, None, None)

    def record_sources(self, device: str) -> tuple[list[Path], list[pa.RecordBatch]]:
        """A device's committed records split for a lazy scan: its sealed `.arrow` files, oldest
        first (to be opened through `verified_file`), and the verified batches of its stream
        segments (the open one; a sealed one whose compaction has not run yet)."""
        stream = self._streams.get(device)
        if stream is None:
            return [], []
        with self._lock:
            segs = list(stream.segments)
        files = [seg.path for seg in segs if seg.ipc_file]
        batches = [b for seg in segs if not seg.ipc_file for b in self._read_segment(stream, seg)]
        return files, batches

    def verified_file(self, path: Path) -> pa.Buffer:
        """A sealed `.arrow` file's bytes for a reader that follows its footer and decodes only
        the columns it needs: the file itself (memory-mapped) when every batch verifies (CRC-32C,
        length, rows) and the footer lists exactly those batches; otherwise an IPC file built in
        memory from its verified batches alone, what failed added to `reports`. A file gone
        since it was listed (deleted by the quota) reads as empty.

        Every call checks every byte: a file walked once is afterwards re-checked by its frames'
        CRCs and a comparison of the bytes around them (`still_verified`), as stream segments are.
        """
        journal = path.parent == self.path / JOURNAL
        schema = JOURNAL_SCHEMA if journal else RECORDS_SCHEMA
        try:
            data = map_file(path)
        except FileNotFoundError:
            return _ipc_file_bytes(schema, [])
        known = self._checked_files.get(path)
        if known is not None and still_verified(data, known):
            return pa.py_buffer(data)
        scan, meta = scan_ipc_file(data, schema)
        if footer_matches(data, scan, schema.with_metadata(meta)):
            if len(self._checked_files) >= _CHECKED_FILES_MAX:
                self._checked_files.clear()
            self._checked_files[path] = checked_file(data, scan)
            return pa.py_buffer(data)
        self._checked_files.pop(path, None)
        owner = self._journal if journal else self._streams.get(path.parent.name)
        with self._lock:
            seg = None if owner is None else next(
                (s for s in owner.segments if s.path == path), None)
        if owner is not None and seg is not None:
            self._note(owner.file_findings(seg, scan))
        batches: list[pa.RecordBatch] = []
        if scan.header_ok:
            first = read_message(memoryview(data), len(IPC_FILE_MAGIC))
            assert first is not None
            batches = decode_frames(pa.py_buffer(data), schema, scan.batches,
                                    header=(first.start, first.end), combine=False)
        return _ipc_file_bytes(schema, batches)

    def _read(self, stream: Stream, start_ns: int | None, end_ns: int | None,
              seq_from: int | None, seq_to: int | None) -> list[pa.RecordBatch]:
        with self._lock:
            segs = [(s, s.seq0, s.path) for s in stream.segments]
            bounds: list[int | None] = [s.seq0 for s in stream.segments[1:]]
            bounds.append(None)
        if not segs:
            return []
        out: list[pa.RecordBatch] = []
        for (seg, seq0, _), nxt in zip(segs, bounds, strict=True):
            if seq_to is not None and seq0 > seq_to:
                break
            if seq_from is not None and nxt is not None and nxt <= seq_from:
                continue
            if seg.ts_min is not None and seg.ts_max is not None and seg.sealed:
                if end_ns is not None and seg.ts_min >= end_ns:
                    continue
                if start_ns is not None and seg.ts_max < start_ns:
                    continue
            out.extend(self._read_segment(stream, seg))
        return out

    def _read_segment(self, stream: Stream, seg: Segment, columns: list[int] | None = None
                      ) -> list[pa.RecordBatch]:
        for _ in range(3):
            try:
                with self._lock:
                    snapshot = copy.copy(seg)
                batches, findings = stream.read(snapshot, columns)
                if seg.sealed and seg.ts_min is None:
                    seg.ts_min, seg.ts_max, seg.seq_last = (
                        snapshot.ts_min, snapshot.ts_max, snapshot.seq_last)
                with self._lock:
                    if seg.path == snapshot.path and not seg.ipc_file:
                        # The next read re-checks these by CRC only and walks what follows.
                        seg.frames = snapshot.frames
                self._note(findings)
                return batches
            except FileNotFoundError:
                # Compacted (renamed) or deleted by the quota while we read: look again.
                if seg not in stream.segments:
                    return []
            except (OSError, pa.ArrowInvalid) as err:
                self._note([StoreReport(kind=ReportKind.UNREADABLE, path=seg.path,
                                        detail=str(err).splitlines()[0])])
                return []
        return []

    def _note(self, findings: list[StoreReport]) -> None:
        """Add what a read met to `reports` (once per finding and open), logged as ERROR."""
        for report in findings:
            with self._lock:
                if report in self._noted:
                    continue
                self._noted.add(report)
                self.reports.append(report)
            log.error("%s", report)

    def check(self) -> list[StoreReport]:
        """Verify every batch of every segment (CRC-32C), as fsck does; blocking, reads all."""
        found: list[StoreReport] = []
        for stream in self._all_streams():
            with self._lock:
                segs = [copy.copy(s) for s in stream.segments]
            for seg in segs:
                seg.frames = None  # everything walked again, damage between frames included
                if not seg.ipc_file and (self.read_only or seg.sealed):
                    # Every byte on disk; a writer's open segment only up to what is committed
                    # (a write may be in flight after it).
                    seg.committed = os.path.getsize(seg.path)
                try:
                    _, findings = stream.read(seg)
                except (OSError, pa.ArrowInvalid) as err:
                    findings = [StoreReport(kind=ReportKind.UNREADABLE, path=seg.path,
                                            detail=str(err).splitlines()[0])]
                if not seg.ipc_file and self.read_only and not seg.sealed:
                    # A read-only open's last segment: failing bytes at its end are a torn tail
                    # it ignores, not damage.
                    findings = [_as_torn(f, seg) if f.offset is not None
                                and f.offset + (f.length or 0) == seg.committed
                                and f.kind is ReportKind.DAMAGE else f for f in findings]
                found.extend(findings)
        return found

    # -- state snapshots -------------------------------------------------------------------

    async def write_state_snapshot(self, body: Mapping[str, object] | None = None) -> int:
        """Journal a `state` event holding the replayed state, so older segments can go.

        With no `body`, the state is replayed here with the default reducers (store/state.py).
        """
        if body is None:
            from store.state import replay

            state = await asyncio.to_thread(replay, self)
            body = state.to_body()
        return await self.append_journal("state", body, commit_now=True)

    # -- content-addressed snapshots -------------------------------------------------------

    def put_definition(self, name: str, data: bytes) -> str:
        """Store a definition file's bytes; returns its snapshot id `<sha256>:<name>`."""
        self._check_writable()
        return snapshots.put_definition(self.path, name, data)

    def get_definition(self, snapshot_id: str) -> bytes:
        return snapshots.get_definition(self.path, snapshot_id)

    def put_config(self, files: Mapping[str, bytes]) -> str:
        """Store a configuration (file name -> bytes); returns its snapshot hash."""
        self._check_writable()
        return snapshots.put_config(self.path, files)

    def get_config(self, snapshot: str) -> dict[str, bytes]:
        return snapshots.get_config(self.path, snapshot)

    def config_snapshots(self) -> list[str]:
        return snapshots.list_configs(self.path)


# -- helpers -------------------------------------------------------------------------------


@dataclass(slots=True)
class _DeviceCommit:
    """What one device's commit job returns to the writer thread."""

    results: list[SeqRange] = field(default_factory=list)
    failure: OSError | None = None
    events: list[_PendingEvent] = field(default_factory=list)
    compact: list[tuple[str, Segment]] = field(default_factory=list)


def _ipc_file_bytes(schema: pa.Schema, batches: list[pa.RecordBatch]) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return sink.getvalue()


def _write_all(stream: Stream, writes: list[tuple[Segment, bytes]], *,
               raise_errors: bool = False) -> OSError | None:
    """Write and fsync each (segment, frame); returns the first error (after cut-back)."""
    try:
        for seg, frame in writes:
            seg.size -= len(frame)  # `size` was raised when planned; `write` sets it for real
            stream.write(seg, frame)
    except OSError as err:
        for seg, _ in writes:
            seg.size = seg.committed
        if raise_errors:
            raise
        return err
    return None


def _as_torn(report: StoreReport, seg: Segment) -> StoreReport:
    return StoreReport(kind=ReportKind.TORN_TAIL, path=seg.path, offset=report.offset,
                       length=report.length, cut=False)


def _json(body: Mapping[str, object]) -> str:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _report_body(report: StoreReport) -> dict[str, object]:
    return {"event": report.kind.value, "path": str(report.path), "offset": report.offset,
            "length": report.length, "kept_batches": report.kept_batches, "message": str(report)}


def _iso(ts_ns: int | None) -> str:
    if ts_ns is None:
        return "?"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts_ns // 1_000_000_000))


def _conform(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch with exactly INPUT_SCHEMA's columns (RECORDS_SCHEMA less `seq`, added at commit)."""
    if batch.schema.equals(INPUT_SCHEMA, check_metadata=False):
        return batch
    if "seq" in batch.schema.names:
        batch = batch.drop_columns(["seq"])
        if batch.schema.equals(INPUT_SCHEMA, check_metadata=False):
            return batch
    if tuple(batch.schema.names) != _INPUT_NAMES:
        raise StoreError(f"record batch columns {batch.schema.names} do not match the records "
                         f"schema {list(RECORDS_SCHEMA.names)}")
    try:
        if batch.schema.remove_metadata() == _LOOSE_SCHEMA:
            # Same types, only nullability flags differ (built without an explicit schema).
            return pa.RecordBatch.from_arrays(batch.columns, schema=INPUT_SCHEMA)
        return batch.cast(INPUT_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as err:
        raise StoreError(f"record batch does not fit the records schema: {err}") from err


def _plan_groups(batches: list[pa.RecordBatch]
                 ) -> list[tuple[int, pa.RecordBatch, list[tuple[int, list[int]]], int, int]]:
    """Split a device's pending batches into one group per run of UTC days, in arrival order.

    Each group: (day, its rows merged, [(batch index, record run lengths)], ts min, ts max).
    The common case (all on one day) costs a handful of vectorised calls for the whole commit,
    not per batch: that is what keeps 254 devices x 100-row batches above 1M rows/s.
    """
    merged = pa.concat_batches(batches) if len(batches) > 1 else batches[0]
    ts = merged.column(_TS_INDEX).cast(pa.int64())
    bounds = pc.min_max(ts)
    lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
    if lo // DAY_NS == hi // DAY_NS:
        n = len(ts)
        starts = {0}
        pos = 0
        for batch in batches:
            starts.add(pos)
            pos += batch.num_rows
        if lo != hi:
            change = pc.not_equal(ts.slice(1), ts.slice(0, n - 1))
            starts.update(i + 1 for i in pc.indices_nonzero(change).to_pylist())
        cuts = sorted(starts) + [n]
        members: list[tuple[int, list[int]]] = []
        pos = 0
        k = 0
        for index, batch in enumerate(batches):
            end = pos + batch.num_rows
            runs: list[int] = []
            while k < len(cuts) - 1 and cuts[k] < end:
                runs.append(cuts[k + 1] - cuts[k])
                k += 1
            members.append((index, runs))
            pos = end
        return [(lo // DAY_NS, merged, members, lo, hi)]
    groups: list[tuple[int, list[pa.RecordBatch], list[tuple[int, list[int]]]]] = []
    for index, batch in enumerate(batches):
        for day, part, runs in _split_by_day(batch):
            if groups and groups[-1][0] == day:
                groups[-1][1].append(part)
                groups[-1][2].append((index, runs))
            else:
                groups.append((day, [part], [(index, runs)]))
    out = []
    for day, parts, members in groups:
        rows = pa.concat_batches(parts) if len(parts) > 1 else parts[0]
        mm = pc.min_max(rows.column(_TS_INDEX).cast(pa.int64()))
        out.append((day, rows, members, mm["min"].as_py(), mm["max"].as_py()))
    return out


def _runs(ts: pa.Array) -> list[int]:
    """Lengths of the runs of equal time stamps (one record each)."""
    n = len(ts)
    if n == 0:
        return []
    values = ts.cast(pa.int64())
    bounds = pc.min_max(values)
    if bounds["min"] == bounds["max"]:
        return [n]
    change = pc.not_equal(values.slice(1), values.slice(0, n - 1))
    starts = [0] + [i + 1 for i in pc.indices_nonzero(change).to_pylist()] + [n]
    return [b - a for a, b in itertools.pairwise(starts)]


def _count_records(batch: pa.RecordBatch) -> int:
    return len(_runs(batch.column(_TS_INDEX)))


def _split_by_day(batch: pa.RecordBatch) -> list[tuple[int, pa.RecordBatch, list[int]]]:
    ts = batch.column(_TS_INDEX).cast(pa.int64())
    bounds = pc.min_max(ts)
    lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
    if lo // DAY_NS == hi // DAY_NS:
        return [(lo // DAY_NS, batch, _runs(batch.column(_TS_INDEX)))]
    out: list[tuple[int, pa.RecordBatch, list[int]]] = []
    days = pc.divide(ts, pa.scalar(DAY_NS, pa.int64()))
    # Records in order of arrival; a day's rows stay together, a record never spans two days.
    order: list[int] = []
    for day in days.to_pylist():
        if not order or order[-1] != day:
            order.append(day)
    for day in order:
        part = batch.filter(pc.equal(days, day))
        out.append((day, part, _runs(part.column(_TS_INDEX))))
    return out


def _filter(table: pa.Table, start_ns: int | None, end_ns: int | None, seq_from: int | None,
            seq_to: int | None) -> pa.Table:
    mask = None
    conds = []
    if start_ns is not None or end_ns is not None:
        ts = table.column("ts").cast(pa.int64())
        if start_ns is not None:
            conds.append(pc.greater_equal(ts, start_ns))
        if end_ns is not None:
            conds.append(pc.less(ts, end_ns))
    if seq_from is not None:
        conds.append(pc.greater_equal(table.column("seq"), pa.scalar(seq_from, pa.uint64())))
    if seq_to is not None:
        conds.append(pc.less_equal(table.column("seq"), pa.scalar(seq_to, pa.uint64())))
    for cond in conds:
        mask = cond if mask is None else pc.and_(mask, cond)
    return table if mask is None else table.filter(mask)


def _journal_batch(events: list[_PendingEvent], seqs: list[int]) -> pa.RecordBatch:
    return pa.record_batch([
        pa.array([e.ts_ns for e in events], pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
        pa.array(seqs, pa.uint64()),
        pa.array([e.kind for e in events], pa.string()).dictionary_encode(),
        pa.array([e.device for e in events], pa.string()),
        pa.array([e.def_ for e in events], pa.string()).dictionary_encode(),
        pa.array([e.body for e in events], pa.string()),
    ], schema=JOURNAL_SCHEMA)
