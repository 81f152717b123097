"""Readers: committed records and journal events as verified batches (every read checks each
batch's CRC-32C, length and rows), the sealed files a lazy scan opens, usage, stats and the
watermark. Blocking; any thread."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from store._core import JOURNAL, LogCore
from store._ipc import BatchFrame
from store._segment import (
    checked_file,
    decode_frames,
    file_header,
    footer_matches,
    map_file,
    scan_ipc_file,
    still_verified,
)
from store._stream import Segment, Stream
from store._work import Counters
from store.errors import ReportKind, StoreReport
from store.events import Watermark
from store.options import DeviceStats
from store.schema import JOURNAL_SCHEMA, RECORDS_SCHEMA, unknown_version

log = logging.getLogger("sunpm.store")

_CHECKED_FILES_MAX: Final = 100_000  # ~2 KiB each; a store holds a few thousand sealed files


class Readers(LogCore):
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
        counters = self._counters.get(device, Counters())
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
        return Watermark(devices=dict(self._committed), journal=self._journal_committed)

    def records(self, device: str, *, start_ns: int | None = None, end_ns: int | None = None,
                seq_from: int | None = None, seq_to: int | None = None,
                columns: Sequence[str] | None = None) -> pa.Table:
        """A device's committed records with `start_ns <= ts < end_ns` and seq in
        `[seq_from, seq_to]` (blocking: call through `asyncio.to_thread` from the loop);
        `columns`: only those RECORDS_SCHEMA fields, in that order (and only they decoded,
        with those the range filters on): the times of a month of records are a tenth of
        the records."""
        indexes, schema = _projection(columns, seq_from, seq_to)
        stream = self._streams.get(device)
        batches = [] if stream is None else self._read(stream, start_ns, end_ns, seq_from,
                                                       seq_to, indexes, schema)
        table = _filter(pa.Table.from_batches(batches, schema=schema), start_ns, end_ns,
                        seq_from, seq_to)
        return table if columns is None else table.select(list(columns))

    def iter_records(self, device: str, *, start_ns: int | None = None,
                     columns: Sequence[str] | None = None) -> Iterator[pa.Table]:
        """`records(device, start_ns=, columns=)` a segment at a time, oldest first
        (blocking): what a month of a device's records is counted by holds a day of them."""
        indexes, schema = _projection(columns, None, None)
        stream = self._streams.get(device)
        if stream is None:
            return
        with self._lock:
            segs = list(stream.segments)
        keep = _frames_within(start_ns, None, None, None)
        for seg in segs:
            if seg.sealed and seg.ts_max is not None and start_ns is not None \
                    and seg.ts_max < start_ns:
                continue
            table = _filter(pa.Table.from_batches(
                self._read_segment(stream, seg, indexes, keep=keep), schema=schema),
                start_ns, None, None, None)
            yield table if columns is None else table.select(list(columns))

    def journal(self, *, start_ns: int | None = None, end_ns: int | None = None,
                kinds: Sequence[str] | None = None, seq_from: int | None = None) -> pa.Table:
        """Committed journal events in a time window, of some kinds, from a seq on (blocking)."""
        batches = [] if self._journal is None else self._read(
            self._journal, start_ns, end_ns, seq_from, None)
        table = _filter(pa.Table.from_batches(batches, schema=JOURNAL_SCHEMA), start_ns, end_ns,
                        seq_from, None)
        return _of_kinds(table, kinds)

    def journal_newest_first(self, kinds: Sequence[str] | None = None) -> Iterator[pa.Table]:
        """The committed journal events of `kinds` (None: all), one segment at a time, the
        newest segment first, each table in seq order (blocking). A caller that stops once it
        has found what it looks for never reads the older segments: the latest event of a kind
        costs the segments since it, not the journal."""
        if self._journal is None:
            return
        stream = self._journal
        with self._lock:
            segs = list(stream.segments)
        for seg in reversed(segs):
            table = pa.Table.from_batches(self._read_segment(stream, seg), schema=JOURNAL_SCHEMA)
            yield _of_kinds(table, kinds).sort_by("seq")

    def journal_since_latest(self, anchor: str, kinds: Sequence[str] | None = None
                             ) -> pa.Table:
        """The latest `anchor` event, then every event of `kinds` (None: all) committed after
        it, in seq order; with no `anchor` event, every event of `kinds` (blocking).

        Segments are read newest first and the read stops at the one holding the anchor: the
        events since the latest `state` snapshot cost the segments since it, however old the
        journal is.
        """
        wanted = None if kinds is None else [*kinds, anchor]
        found: list[pa.Table] = []
        for table in self.journal_newest_first(wanted):
            is_anchor = pc.equal(table.column("kind").cast(pa.string()), anchor)
            if table.num_rows and pc.any(is_anchor).as_py():
                seqs = table.column("seq")
                at = int(pc.max(pc.filter(seqs, is_anchor)).as_py())
                found.append(table.filter(pc.greater_equal(seqs, pa.scalar(at, pa.uint64()))))
                break
            found.append(table)
        if not found:
            return JOURNAL_SCHEMA.empty_table()
        return pa.concat_tables(reversed(found)).sort_by("seq")

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

    def record_sources(self, device: str, columns: list[int] | None = None
                       ) -> tuple[list[Path], list[pa.RecordBatch]]:
        """A device's committed records split for a lazy scan: its sealed `.arrow` files, oldest
        first (to be opened through `verified_file`), and the verified batches of its stream
        segments (the open one; a sealed one whose compaction has not run yet); `columns`:
        the indexes of the only RECORDS_SCHEMA fields decoded from those, in schema order."""
        stream = self._streams.get(device)
        if stream is None:
            return [], []
        with self._lock:
            segs = list(stream.segments)
        files = [seg.path for seg in segs if seg.ipc_file]
        batches = [b for seg in segs if not seg.ipc_file
                   for b in self._read_segment(stream, seg, columns)]
        return files, batches

    def live_segments(self, device: str) -> list[tuple[Path, int]]:
        """A device's stream segments (what `record_sources` reads through the reader) as
        listed: path and committed length."""
        stream = self._streams.get(device)
        if stream is None:
            return []
        with self._lock:
            return [(seg.path, seg.committed) for seg in stream.segments if not seg.ipc_file]

    def sealed_files(self, device: str) -> list[Path]:
        """A device's sealed `.arrow` files, oldest first, as listed (nothing read)."""
        stream = self._streams.get(device)
        if stream is None:
            return []
        with self._lock:
            return [seg.path for seg in stream.segments if seg.ipc_file]

    def verified_file(self, path: Path) -> pa.Buffer:
        """A sealed `.arrow` file's bytes for a reader that follows its footer and decodes only
        the columns it needs: the file itself (memory-mapped) when every batch verifies (CRC-32C,
        length, rows) and the footer lists exactly those batches; otherwise an IPC file built in
        memory from its verified batches alone, what failed added to `reports`. A file gone
        since it was listed (deleted by the quota) reads as empty.

        Every call checks every byte: a file walked once is afterwards re-checked by its frames'
        CRCs and a comparison of the bytes around them (`still_verified`), as stream segments are.
        The batches are in file order: a records file in ranges of variables (its schema
        metadata says so, `store._segment.by_variable`) gives its rows in record order through
        `store._segment.in_record_order`.
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
        if scan.header_ok and (version := unknown_version(meta)) is not None:
            self._note([StoreReport(kind=ReportKind.SCHEMA, path=path, detail=version)])
            return _ipc_file_bytes(schema, [])
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
            batches = decode_frames(pa.py_buffer(data), schema, scan.batches,
                                    header=file_header(data, scan, schema), combine=False)
        return _ipc_file_bytes(schema, batches)

    def _read(self, stream: Stream, start_ns: int | None, end_ns: int | None,
              seq_from: int | None, seq_to: int | None, columns: list[int] | None = None,
              schema: pa.Schema | None = None) -> list[pa.RecordBatch]:
        with self._lock:
            segs = [(s, s.seq0, s.path) for s in stream.segments]
            bounds: list[int | None] = [s.seq0 for s in stream.segments[1:]]
            bounds.append(None)
        if not segs:
            return []
        keep = _frames_within(start_ns, end_ns, seq_from, seq_to)
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
            batches = self._read_segment(stream, seg, columns, keep=keep)
            if keep is not None and seg.ipc_file:
                # A sealed file comes back whole (its frames are not skipped as a live
                # segment's are), and before its bounds are first learned every file of the
                # stream is read: the rows out of range go here, a file at a time, or the first
                # read of a day of a month's device held the month (about 100 MB).
                batches = _filter(pa.Table.from_batches(batches, schema=schema or stream.schema),
                                  start_ns, end_ns, seq_from, seq_to).to_batches()
            out.extend(batches)
        return out

    def _read_segment(self, stream: Stream, seg: Segment, columns: list[int] | None = None, *,
                      keep: Callable[[BatchFrame], bool] | None = None
                      ) -> list[pa.RecordBatch]:
        for _ in range(3):
            try:
                with self._lock:
                    snapshot = copy.copy(seg)
                batches, findings = stream.read(snapshot, columns, keep)
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



def _ipc_file_bytes(schema: pa.Schema, batches: list[pa.RecordBatch]) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return sink.getvalue()




def _projection(columns: Sequence[str] | None, seq_from: int | None, seq_to: int | None
                ) -> tuple[list[int] | None, pa.Schema]:
    """The RECORDS_SCHEMA fields to decode for `columns` and a range (its filter reads `ts`,
    and `seq` when bounded), and their schema; all of them for None."""
    if columns is None:
        return None, RECORDS_SCHEMA
    wanted = {*columns, "ts", *(["seq"] if seq_from is not None or seq_to is not None else [])}
    indexes = sorted(RECORDS_SCHEMA.get_field_index(name) for name in wanted)
    if indexes[0] < 0:
        raise ValueError(f"no record columns among {sorted(columns)}")
    return indexes, pa.schema([RECORDS_SCHEMA.field(i) for i in indexes])


def _frames_within(start_ns: int | None, end_ns: int | None, seq_from: int | None,
                   seq_to: int | None) -> Callable[[BatchFrame], bool] | None:
    """Whether a frame may hold rows of the range (its metadata's bounds; `_filter` then picks
    the rows); None when the range is everything."""
    if start_ns is None and end_ns is None and seq_from is None and seq_to is None:
        return None

    def keep(frame: BatchFrame) -> bool:
        return not ((seq_to is not None and frame.seq_first > seq_to)
                    or (seq_from is not None and frame.seq_last < seq_from)
                    or (end_ns is not None and frame.ts_min >= end_ns)
                    or (start_ns is not None and frame.ts_max < start_ns))
    return keep


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


def _of_kinds(table: pa.Table, kinds: Sequence[str] | None) -> pa.Table:
    """The journal rows of `kinds` (None: all)."""
    if kinds is None:
        return table
    wanted = pa.array(list(kinds), pa.string())
    return table.filter(pc.is_in(table.column("kind").cast(pa.string()), wanted))
