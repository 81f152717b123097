"""The writer: the task that commits every `flush_s` (or at once when asked), and the commit
itself on a writer thread, device by device (frame, quota, seal, write; small parts on the
writer thread, bulk ones and those that may block on the disk on a small pool), then the
journal and the commit log's fsync; failures roll a stream back to its last committed length
and leave the items pending. Sealed segments are rewritten (compacted) after the commit."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import operator
import time
from concurrent import futures
from pathlib import Path
from typing import Final

import pyarrow as pa

import fsio
from store._core import JOURNAL
from store._ipc import COMPRESS_FROM_ROWS, frame_batch, schema_message
from store._journal_gc import JournalGC
from store._planning import INPUT_SCHEMA, SEQ_INDEX, journal_batch, plan_groups, seq_column
from store._quota import Quota
from store._stream import DAY_NS, Segment, Stream
from store._work import (
    Counters,
    DeviceCommit,
    Frame,
    JournalCommit,
    Outcome,
    PendingBatch,
    PendingEvent,
    Work,
    json_text,
    now_ns,
)
from store.errors import StoreError, StoreIOError
from store.options import SeqRange
from store.schema import JOURNAL_SCHEMA, RECORDS_SCHEMA

log = logging.getLogger("sunpm.store")

#: Pool jobs rewriting the segments a commit sealed (see `Writer._compact_all`).
COMPACT_WORKERS: Final = 2

_SEQ_FIELD: Final = RECORDS_SCHEMA.field("seq")
_NOT_FULL: Final = Counters()
_INPUT_TS: Final = INPUT_SCHEMA.get_field_index("ts")
#: Pool jobs framing a commit's bulk devices: the box's two cores.
_BULK_JOBS: Final = 2
# A commit's per-item sums in C (`sum(map(...))`): a bulk commit has 25k items.
_NBYTES: Final = operator.attrgetter("nbytes")
_ROWS: Final = operator.attrgetter("batch.num_rows")
_BATCH: Final = operator.attrgetter("batch")


class _Part(enum.Enum):
    """A device's part of a commit, by where it is framed (`Writer._part_kind`)."""

    SMALL = "framed on the commit thread"
    BULK = "framed by one of the bulk jobs"
    IO = "a pool job of its own"


class Writer(Quota, JournalGC):
    async def _writer(self) -> None:
        assert self._wake is not None and self._room is not None and self._space is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.flush_s
        while True:
            if not self._closing:
                # Every flush_s from the previous commit's start, not from its end.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(),
                                           timeout=max(0.0, deadline - loop.time()))
            self._wake.clear()
            deadline = loop.time() + self.options.flush_s
            work = self._take()
            self._in_commit = work is not None
            if work is not None:
                self.commits += 1
                # What waits for the next commit starts again from nothing: appenders waiting
                # for room go on filling it while this one runs, rather than after it.
                await _notify(self._space)
                try:
                    outcome = await asyncio.to_thread(self._commit_sync, work)
                except Exception as err:  # top of the writer task: fail this commit, keep going
                    log.exception("Store commit failed unexpectedly. path=%s", self.path)
                    self._fail_work(work, err)
                    outcome = Outcome()
                else:
                    self._settle(outcome)
                if outcome.compact:
                    await self._compact_all(outcome.compact)
                await _notify(self._room, self._space)
                if outcome.error is not None and self._closing:
                    # Closing while the disk fails: what is pending stays unacknowledged.
                    self._fail_pending(outcome.error)
                    return
                if outcome.error is not None:
                    await asyncio.sleep(self.options.flush_s)
            self._in_commit = False
            self._cycles += 1
            await _notify(self._room, self._space)
            if self._closing and work is None:
                return

    def _take(self) -> Work | None:
        if (not self._pending and not self._pending_journal and not self._carry_events
                and not self._drops_to_hand):
            return None
        journal = self._carry_events + self._pending_journal
        work = Work(self._pending, journal, self._drops_to_hand)
        self._pending = {}
        self._pending_journal = []
        self._carry_events = []
        self._drops_to_hand = {}
        self._pending_bytes = 0
        return work

    def _settle(self, outcome: Outcome) -> None:
        self._carry_events.extend(outcome.carry)
        for device, last in outcome.records.items():
            if last > self._committed.get(device, 0):
                self._committed[device] = last
        if outcome.journal:
            self._journal_committed = max(self._journal_committed, max(outcome.journal))
        for items, results in outcome.acks:
            for item, result in zip(items, results, strict=True):
                future = item.future
                if future is not None and not future.done():
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
                self._carry_events.append(PendingEvent(
                    now_ns(), "storage", None, None,
                    json_text({"event": "disk_ok", "detail": str(self.last_error)}), None))
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
                self._carry_events.append(PendingEvent(
                    now_ns(), "storage", None, None,
                    json_text({"event": "disk_error", "detail": str(outcome.error)}), None))

    def _fail_work(self, work: Work, error: Exception) -> None:
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

    def _commit_sync(self, work: Work) -> Outcome:
        outcome = Outcome()
        events: list[PendingEvent] = []
        for device, records in work.memory_drops.items():
            # Before the device's job starts: the writer thread owns the counters here.
            # `dropped` stays the loop's (stats adds `_memory_dropped`); the episode's count
            # for its `available` event is the writer's.
            counters = self._counters.setdefault(device, Counters())
            counters.episode_dropped += records
            self._start_episode(device, counters, events, "disk")
        assert self._io is not None
        # A device whose part may wait on the disk (a new segment or a seal fsyncs, a quota
        # deletion, a frame fsynced in place) is a job of its own on a small pool, so that its
        # fsyncs overlap with the other devices'. Devices with bulk rows are framed by
        # `_BULK_JOBS` pool jobs (concatenation and compression run without the GIL; more
        # threads only contend for it). The others, a live commit's one small record each, are
        # framed here one after the other: handing each to the pool cost more than framing it.
        # Each part returns its events and sealed segments; nothing is shared between them.
        parts = {device: self._part_kind(device, items)
                 for device, items in work.records.items()}
        pooled = {device: self._io.submit(self._commit_device, device, items)
                  for device, items in work.records.items() if parts[device] is _Part.IO}
        bulk = [(device, items) for device, items in work.records.items()
                if parts[device] is _Part.BULK]
        bulk_jobs = [self._io.submit(self._commit_devices, bulk[k::_BULK_JOBS])
                     for k in range(min(_BULK_JOBS, len(bulk)))]
        try:
            done_here = self._commit_devices([(device, items)
                                              for device, items in work.records.items()
                                              if parts[device] is _Part.SMALL])
        finally:
            # Even when a part here fails unexpectedly, no job may still write once this
            # commit is over.
            futures.wait(list(pooled.values()))
            futures.wait(bulk_jobs)
        for bulk_job in bulk_jobs:
            done_here.update(bulk_job.result())
        written: list[tuple[str, list[PendingBatch], DeviceCommit]] = []
        for device, items in work.records.items():
            job = pooled.get(device)
            job_result = job.result() if job is not None else done_here[device]
            events.extend(job_result.events)
            outcome.compact.extend(job_result.compact)
            if job_result.failure is not None:
                outcome.error = job_result.failure
                outcome.failed_records[device] = items
                continue
            written.append((device, items, job_result))
        journal = self._write_journal(work.journal + events, outcome)
        logged = [entry for _, _, done in written for entry in done.logged]
        if journal is not None:
            logged.extend(journal.logged)
        if logged:
            try:
                self._wal.append(logged)
            except OSError as err:
                # Nothing of this commit is durable: every stream it wrote goes back.
                outcome.error = err
                for device, items, done in written:
                    self._roll_back(self._streams[device], done.saved_seq)
                    outcome.failed_records[device] = items
                written = []
                if journal is not None:
                    assert self._journal is not None
                    self._roll_back(self._journal, journal.saved_seq)
                    outcome.failed_journal = journal.events
                    journal = None
                outcome.compact = []
        for device, items, done in written:
            outcome.records[device] = done.last_seq
            outcome.acks.append((items, done.results))
            self._wal_dirty.update((id(seg), (stream, seg)) for stream, seg in done.touched)
        if journal is not None:
            self._settle_journal(journal, outcome)
        if self._wal.size >= self.options.wal_checkpoint_bytes:
            self._checkpoint_sync()
        return outcome

    def _roll_back(self, stream: Stream, saved_seq: int) -> None:
        with self._lock:
            stream.rollback()
        stream.next_seq = saved_seq

    def _checkpoint_sync(self) -> None:
        """fsync every segment written since the last checkpoint, then empty the commit log."""
        try:
            for stream, seg in self._wal_dirty.values():
                # A sealed one was fsynced by its seal; a gone one (compacted into a fsynced
                # file, deleted) needs nothing.
                if seg in stream.segments and not seg.sealed and not seg.ipc_file:
                    stream.sync(seg)
            self._save_high_water()
            self._wal.reset()
        except OSError as err:
            # The log keeps covering them: retried at the next commit.
            log.error("Commit log checkpoint failed. error=%s", err)
            return
        self._wal_dirty.clear()

    def _commit_device(self, device: str, items: list[PendingBatch]) -> DeviceCommit:
        """Frame, check the quota, write and fsync one device's part of a commit (pool thread).

        On failure everything this commit did to the device's segments is rolled back.
        """
        done = DeviceCommit()
        stream = self._device_stream(device)
        if isinstance(stream, OSError):
            done.failure = stream
            return done
        saved = done.saved_seq = stream.next_seq
        stream.checkpoint()
        try:
            writes, done.results = self._prepare_device(device, stream, items, done.events,
                                                        done.compact)
            done.failure = write_all(stream, writes, done.logged, done.touched,
                                     direct_bytes=self.options.wal_direct_frame_bytes)
            done.last_seq = stream.next_seq - 1
        except OSError as err:
            done.failure = err
        if done.failure is not None:
            self._roll_back(stream, saved)
            done.results = []
            # What the failed attempt counted (quota drops, evictions) stands: evicted segments
            # are gone. Its events go with the journal of this commit all the same.
            done.compact = []
        return done

    def _commit_devices(self, parts: list[tuple[str, list[PendingBatch]]]
                        ) -> dict[str, DeviceCommit]:
        return {device: self._commit_device(device, items) for device, items in parts}

    def _part_kind(self, device: str, items: list[PendingBatch]) -> _Part:
        """What a device's part of a commit will likely be, from what costs nothing to look at
        (a wrong guess is only slower, never wrong)."""
        stream = self._streams.get(device)
        if stream is None:
            return _Part.IO
        seg = stream.open_segment()
        if seg is None or seg.day is None or self._counters.get(device, _NOT_FULL).full:
            return _Part.IO
        nbytes = sum(map(_NBYTES, items))
        if (seg.size + nbytes > self._limit(stream)
                or stream.usage + nbytes + self._limit(stream) > self.options.device_quota_bytes):
            return _Part.IO
        # The UTC day of the first and last rows.
        first, last = items[0].batch.column(_INPUT_TS), items[-1].batch.column(_INPUT_TS)
        lo, hi = first[0].value, last[len(last) - 1].value
        if lo is None or hi is None or not lo // DAY_NS == seg.day == hi // DAY_NS:
            return _Part.IO
        if sum(map(_ROWS, items)) >= COMPRESS_FROM_ROWS:
            return _Part.BULK
        return _Part.IO if nbytes >= self.options.wal_direct_frame_bytes else _Part.SMALL

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

    def _prepare_device(self, device: str, stream: Stream, items: list[PendingBatch],
                        events: list[PendingEvent], compact: list[tuple[str, Segment]]
                        ) -> tuple[list[tuple[Segment, Frame]], list[SeqRange]]:
        """Frame the device's pending batches per UTC day, apply the quota, rotate segments.

        Returns the writes to do (segment, framed bytes) and one result per pending item.
        """
        counters = self._counters.setdefault(device, Counters())
        firsts: dict[int, int] = {}
        lasts: dict[int, int] = {}
        dropped_items: set[int] = set()
        writes: list[tuple[Segment, Frame]] = []
        one_group: list[SeqRange] = []
        groups = plan_groups(list(map(_BATCH, items)))
        for group in groups:
            first = stream.next_seq
            if len(groups) == 1 and group.members is None:
                # Every item is in this group, one record each, in order.
                one_group = [SeqRange(first + k, first + k) for k in range(len(items))]
            elif len(groups) == 1:
                # Every item is in this group, in order: results straight from it (below).
                one_group = [SeqRange(first + k, first + k + count - 1)
                             for _, k, count in group.member_list()]
            else:
                for index, k, count in group.member_list():
                    firsts.setdefault(index, first + k)
                    lasts[index] = first + k + count - 1
            seq = first + len(group.starts)
            ts_min, ts_max, day = group.ts_min, group.ts_max, group.day
            merged = group.rows.add_column(SEQ_INDEX, _SEQ_FIELD, seq_column(
                first, group.starts, group.rows.num_rows))
            frame = frame_batch(RECORDS_SCHEMA, merged, seq_first=first, seq_last=seq - 1,
                                ts_min=ts_min, ts_max=ts_max)
            records = seq - stream.next_seq
            seg = self._segment_for(stream, day, len(frame), writes, compact)
            evicted_before = counters.evicted
            if not self._make_quota_room(device, stream, seg, len(frame), counters, events,
                                         compact):
                counters.dropped += records
                counters.episode_dropped += records
                self._start_episode(device, counters, events, "quota")
                dropped_items.update(index for index, _, _ in group.member_list())
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
        if len(groups) == 1 and not dropped_items:
            return writes, one_group
        results: list[SeqRange] = []
        for index in range(len(items)):
            if index in dropped_items or index not in firsts:
                nxt = stream.next_seq
                results.append(SeqRange(nxt, nxt - 1, dropped=True))
            else:
                results.append(SeqRange(firsts[index], lasts[index]))
        return writes, results

    def _segment_for(self, stream: Stream, day: int, frame_len: int,
                     writes: list[tuple[Segment, Frame]], compact: list[tuple[str, Segment]]
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
            write_all(stream, [w for w in writes if w[0] is seg], raise_errors=True)
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

    def _write_journal(self, events: list[PendingEvent], outcome: Outcome
                       ) -> JournalCommit | None:
        """Frame and write the commit's journal events (not yet durable: the commit log's fsync
        follows). None when there are none or the write failed (then rolled back, pending)."""
        if not events:
            return None
        if self._journal is None:
            self._journal = Stream(JOURNAL, self.path / JOURNAL, JOURNAL_SCHEMA)
        stream = self._journal
        done = JournalCommit(events=events, saved_seq=stream.next_seq)
        saved = stream.next_seq
        seqs = list(range(saved, saved + len(events)))
        stream.checkpoint()
        try:
            writes: list[tuple[Segment, Frame]] = []
            by_day: list[tuple[int, list[int]]] = []
            for i, event in enumerate(events):
                day = event.ts_ns // DAY_NS
                if by_day and by_day[-1][0] == day:
                    by_day[-1][1].append(i)
                else:
                    by_day.append((day, [i]))
            for day, indexes in by_day:
                chosen = [events[i] for i in indexes]
                batch = journal_batch(chosen, [seqs[i] for i in indexes])
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
            err = write_all(stream, writes, done.logged, done.touched,
                            direct_bytes=self.options.wal_direct_frame_bytes)
            if err is not None:
                raise err
        except OSError as err:
            self._roll_back(stream, saved)
            outcome.error = err
            outcome.failed_journal = events
            return None
        stream.next_seq = saved + len(events)
        done.seqs = seqs
        return done

    def _settle_journal(self, done: JournalCommit, outcome: Outcome) -> None:
        """After the commit log's fsync: the events are acknowledged, then the journal's quota
        may delete segments that a `state` event of this commit summarises."""
        assert self._journal is not None
        stream = self._journal
        self._wal_dirty.update((id(seg), (stream, seg)) for stream, seg in done.touched)
        outcome.journal = done.seqs
        for event, seq in zip(done.events, done.seqs, strict=True):
            if event.kind == "state" and self._state_seqs is not None:
                self._state_seqs = [*self._state_seqs, seq][-2:]
            if event.future is not None:
                outcome.journal_acks.append((event.future, seq))
        try:
            self._journal_quota(stream, outcome.carry, outcome.compact)
        except OSError as err:
            log.error("Journal quota deletion failed. error=%s", err)

    async def _compact_all(self, sealed: list[tuple[str, Segment]]) -> None:
        """Rewrite the segments a commit sealed, streams in parallel on `COMPACT_WORKERS` pool
        jobs (the zstd rewrite releases the GIL; a bulk commit, or UTC midnight, seals one
        segment per device at once), each stream's in order. Still before the next commit:
        only the writer touches streams.

        Two jobs, not one per stream: the rewrite is CPU work (2 cores), and each one in
        flight holds its segment decoded, sorted and compressed. At one job per stream (up to
        the pool's 8) a storm of 60 devices sealing together raised the writer's RSS by
        ~70 MB for good: pyarrow's allocator (mimalloc) kept the freed pages of every pool
        thread. Each job hands them back when it is done (`release_unused`)."""
        assert self._io is not None
        by_stream: dict[str, list[Segment]] = {}
        for name, seg in sealed:
            by_stream.setdefault(name, []).append(seg)
        todo = list(by_stream.items())
        loop = asyncio.get_running_loop()
        await asyncio.gather(*[loop.run_in_executor(self._io, self._compact_streams, todo)
                               for _ in range(min(COMPACT_WORKERS, len(todo)))])

    def _compact_streams(self, todo: list[tuple[str, list[Segment]]]) -> None:
        """Compact streams taken from `todo` (shared by the jobs: `list.pop` is atomic) until
        none is left, then release the memory the rewrites freed."""
        try:
            while todo:
                try:
                    name, segs = todo.pop()
                except IndexError:
                    break
                for seg in segs:
                    self._compact_sync(name, seg, self.options.compress_sealed)
        finally:
            pa.default_memory_pool().release_unused()

    def _compact_sync(self, name: str, seg: Segment, compress: bool) -> None:
        stream = self._journal if name == JOURNAL else self._streams.get(name)
        if stream is None or seg not in stream.segments or not seg.sealed or seg.ipc_file:
            return  # deleted meanwhile, or unsealed again by the rollback of a failed commit
        try:
            stream.compact(seg, compress=compress, lock=self._lock)
        except (OSError, pa.ArrowInvalid) as err:
            log.error("Rewrite of a sealed segment failed; it stays as written. "
                      "segment=%s error=%s", seg.path, err)


async def _notify(*conditions: asyncio.Condition) -> None:
    for condition in conditions:
        async with condition:
            condition.notify_all()


def write_all(stream: Stream, writes: list[tuple[Segment, Frame]],
              logged: list[tuple[Path, int, Frame]] | None = None,
              touched: list[tuple[Stream, Segment]] | None = None, *,
              direct_bytes: int = 0, raise_errors: bool = False) -> OSError | None:
    """Write each (segment, frame), noting it for the commit log in `logged` (path, offset,
    frame) and `touched`; returns the first error (after cut-back).

    A frame of `direct_bytes` or more is not logged: its segment is fsynced here instead (bulk
    appends: logging it would write its bytes twice for a saving of one fsync).
    """
    direct: list[Segment] = []
    try:
        for seg, frame in writes:
            seg.size -= len(frame)  # `size` was raised when planned; `write` sets it for real
            offset = stream.write(seg, frame)
            if logged is None:
                continue
            if direct_bytes and len(frame) >= direct_bytes:
                if seg not in direct:
                    direct.append(seg)
                continue
            logged.append((seg.path, offset, frame))
            if touched is not None:
                touched.append((stream, seg))
        for seg in direct:
            stream.sync(seg)
    except OSError as err:
        for seg, _ in writes:
            seg.size = seg.committed
        if raise_errors:
            raise
        return err
    return None


