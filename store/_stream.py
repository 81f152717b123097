"""One stream's segments on disk (a device's records or the journal), used by the writer thread.

Everything here is blocking and runs off the event loop. A `Stream` is mutated only by the
writer thread (commit, seal, quota) or by `Log.open`; readers take a snapshot of `segments` under
the log's lock.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pyarrow as pa

from store._ipc import EOS, BatchFrame, schema_message
from store._segment import (
    FILE_SUFFIX,
    UNCOMPRESSED_KEY,
    decode_frames,
    parse_name,
    read_ipc_file,
    scan_stream,
    segment_name,
)
from store.errors import ReportKind, StoreReport
from store.fsio import fsync_dir as fsync_dir  # noqa: PLC0414  (store.log imports it from here)

log = logging.getLogger("sunpm.store")

DAY_NS: Final = 86_400 * 1_000_000_000
SEQ_LAST_KEY: Final = b"sunpm.seq_last"
TS_MIN_KEY: Final = b"sunpm.ts_min"
TS_MAX_KEY: Final = b"sunpm.ts_max"


@dataclass(slots=True)
class Segment:
    seq0: int
    path: Path
    ipc_file: bool
    size: int  # bytes for quota, on flash: as written, then the rewritten file's size
    committed: int  # trusted length of a stream segment (what readers may read)
    sealed: bool
    day: int | None = None  # UTC day of its records (records) or events (journal)
    seq_last: int | None = None  # None until known (walked or written)
    ts_min: int | None = None
    ts_max: int | None = None
    damaged: bool = False
    fd: int | None = None  # open for appends (writer only)
    frames: list[BatchFrame] | None = None  # trusted frames of `committed` bytes, when known

    def summarise(self, frames: list[BatchFrame]) -> None:
        if frames:
            self.seq_last = frames[-1].seq_last
            self.ts_min = min(f.ts_min for f in frames)
            self.ts_max = max(f.ts_max for f in frames)
            if self.day is None:
                self.day = frames[0].ts_min // DAY_NS


class Stream:
    """Segments of one stream, and the open segment's file descriptor while writing."""

    def __init__(self, name: str, directory: Path, schema: pa.Schema) -> None:
        self.name = name
        self.dir = directory
        self.schema = schema
        self.segments: list[Segment] = []
        self.next_seq = 1
        self.reports: list[StoreReport] = []
        self._checkpoint: list[tuple[Segment, int, bool, int]] = []
        self._created: list[Segment] = []
        #: On-flash size over written size of this stream's last rewritten segment: how the
        #: quota foresees a segment sealed in the commit under way, rewritten right after it.
        self.flash_ratio = 1.0

    # -- opening ---------------------------------------------------------------------------

    def load(self, *, read_only: bool) -> None:
        """List segments, check the last one, cut a torn tail (writer only)."""
        found: dict[int, Path] = {}
        for entry in sorted(os.scandir(self.dir), key=lambda e: e.name):
            parsed = parse_name(entry.name)
            if parsed is None or not entry.is_file():
                if entry.name.endswith(".tmp") and not read_only:
                    # A compaction cut short by a crash; its source segment is still there.
                    os.unlink(entry.path)
                    continue
                self._report(ReportKind.FOREIGN, Path(entry.path), "not a segment file name")
                continue
            seq0, ipc_file = parsed
            other = found.get(seq0)
            if other is not None:
                # A crash between the rename and the unlink of a compaction: the file wins.
                stale = other if ipc_file else Path(entry.path)
                keep = Path(entry.path) if ipc_file else other
                if not read_only:
                    os.unlink(stale)
                    fsync_dir(self.dir)
                found[seq0] = keep
                continue
            found[seq0] = Path(entry.path)
        for seq0 in sorted(found):
            path = found[seq0]
            # The quota counts bytes on flash (docs/behaviour.md §6): a stat, no file read.
            size = path.stat().st_size
            seg = Segment(seq0, path, path.suffix == FILE_SUFFIX, size, size, sealed=True)
            self.segments.append(seg)
        self.next_seq = self.segments[0].seq0 if self.segments else 1
        if self.segments:
            try:
                self._check_last(read_only=read_only)
            except OSError as err:
                # Unreadable (permissions, I/O error): reported; never appended to.
                seg = self.segments[-1]
                self._report(ReportKind.UNREADABLE, seg.path, str(err))
                seg.sealed = True
                seg.damaged = True
                self.next_seq = seg.seq_last + 1 if seg.seq_last is not None else seg.seq0

    def _check_last(self, *, read_only: bool) -> None:
        seg = self.segments[-1]
        if seg.ipc_file:
            try:
                batches, meta = read_ipc_file(seg.path)
            except (OSError, pa.ArrowInvalid) as err:
                self._report(ReportKind.UNREADABLE, seg.path, str(err).splitlines()[0])
                self.segments.pop()
                self.next_seq = max(self.next_seq, seg.seq0)
                return
            _summarise_meta(seg, meta)
            if seg.seq_last is None:
                _summarise_table(seg, batches)
            last = seg.seq_last if seg.seq_last is not None else seg.seq0 - 1
            self.next_seq = last + 1
            return
        with open(seg.path, "rb") as fh:
            data = fh.read()
        # A writer checks every batch (it appends after them); a read-only open (a card dump)
        # checks the structure and the last batch's CRC: torn tails are found, and damage
        # further in is `Log.check`'s (fsck) to report.
        scan = scan_stream(data, self.schema, verify=not read_only, verify_last=read_only)
        if scan.foreign:
            self._report(ReportKind.FOREIGN, seg.path, scan.foreign)
            self.segments.pop()
            if not read_only:
                # It holds the name the next segment needs; move it aside, keep its bytes.
                os.rename(seg.path, seg.path.with_name(seg.path.name + ".corrupt"))
                fsync_dir(self.dir)
            self.next_seq = self._next_after_previous(seg.seq0)
            return
        for region in scan.damage:
            self._report(ReportKind.DAMAGE, seg.path, "", offset=region.offset,
                         length=region.length)
        seg.summarise(scan.batches)
        seg.frames = scan.batches
        seg.damaged = bool(scan.damage)
        self.next_seq = seg.seq_last + 1 if seg.seq_last is not None else seg.seq0
        if not scan.header_ok and not read_only:
            # Torn while its header was written: it never held a batch; start it again.
            if scan.torn is not None:
                self.reports.append(StoreReport(
                    kind=ReportKind.TORN_TAIL, path=seg.path, offset=0, length=scan.torn.length,
                    kept_batches=0))
            os.unlink(seg.path)
            fsync_dir(self.dir)
            self.segments.pop()
            return
        if scan.torn is not None:
            self.reports.append(StoreReport(
                kind=ReportKind.TORN_TAIL, path=seg.path, offset=scan.torn.offset,
                length=scan.torn.length, kept_batches=len(scan.batches), cut=not read_only))
            if not read_only:
                self._cut(seg, scan.good_end if scan.header_ok else 0)
        seg.committed = scan.good_end if scan.header_ok else 0
        seg.size = seg.committed if not read_only else len(data)
        seg.sealed = scan.ended or seg.damaged

    def _next_after_previous(self, fallback: int) -> int:
        if not self.segments:
            return fallback
        prev = self.segments[-1]
        if prev.seq_last is None:
            self.walk(prev)
        return (prev.seq_last + 1) if prev.seq_last is not None else max(prev.seq0, fallback)

    def _cut(self, seg: Segment, length: int) -> None:
        fd = os.open(seg.path, os.O_WRONLY)
        try:
            os.ftruncate(fd, length)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _report(self, kind: ReportKind, path: Path, detail: str, *, offset: int | None = None,
                length: int | None = None) -> None:
        self.reports.append(StoreReport(kind=kind, path=path, detail=detail, offset=offset,
                                        length=length))

    # -- reading ---------------------------------------------------------------------------

    def walk(self, seg: Segment) -> list[pa.RecordBatch]:
        """Trusted batches of a segment (committed part only), filling in its summary."""
        if seg.ipc_file:
            batches, meta = read_ipc_file(seg.path)
            if seg.seq_last is None or seg.ts_min is None:
                _summarise_meta(seg, meta)
            return batches
        if seg.committed == 0:
            return []
        frames = seg.frames
        if frames is not None and (not frames or frames[-1].end <= seg.committed):
            # Frames known from the open's check: decode in place over a memory map.
            source = pa.memory_map(str(seg.path)).read_buffer(seg.committed)
            return decode_frames(source, self.schema, frames)
        with open(seg.path, "rb") as fh:
            data = fh.read(seg.committed)
        # Known damage hides from a structural walk (a zeroed body still parses): verify then.
        frames = scan_stream(data, self.schema, verify=seg.damaged).batches
        seg.summarise(frames)
        return decode_frames(memoryview(data), self.schema, frames)

    # -- writing (writer thread) -----------------------------------------------------------

    @property
    def usage(self) -> int:
        return sum(s.size for s in self.segments)

    def open_segment(self) -> Segment | None:
        if self.segments and not self.segments[-1].sealed:
            return self.segments[-1]
        return None

    def create_segment(self, day: int) -> Segment:
        header = schema_message(self.schema)
        path = self.dir / segment_name(self.next_seq)
        # O_EXCL: a name already taken means our numbering is wrong; never overwrite a segment.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, header)
            os.fsync(fd)
        except OSError:
            os.close(fd)
            os.unlink(path)
            raise
        fsync_dir(self.dir)
        seg = Segment(self.next_seq, path, False, len(header), len(header), sealed=False, day=day,
                      fd=fd)
        self.segments.append(seg)
        self._created.append(seg)
        return seg

    def ensure_fd(self, seg: Segment) -> int:
        if seg.fd is None:
            seg.fd = os.open(seg.path, os.O_WRONLY)
        return seg.fd

    def checkpoint(self) -> None:
        """Remember the segments' committed state before a commit touches them."""
        self._checkpoint = [(s, s.committed, s.sealed, s.size) for s in self.segments]
        self._created = []

    def rollback(self) -> None:
        """Undo a commit that failed part-way: cut every touched segment back, drop new ones.

        Nothing of this commit was acknowledged yet, so cutting its fsynced frames is safe and
        keeps sequence numbers gap-free when the items are retried.
        """
        for seg in self._created:
            self._close(seg)
            try:
                os.unlink(seg.path)
            except OSError as err:
                log.error("Could not remove a segment of a failed commit. segment=%s error=%s",
                          seg.path, err)
            if seg in self.segments:
                self.segments.remove(seg)
        for seg, committed, sealed, size in self._checkpoint:
            if seg.committed != committed and seg in self.segments:
                try:
                    os.truncate(seg.path, committed)
                except OSError as err:
                    log.error("Cut-back failed. segment=%s error=%s", seg.path, err)
                    continue
            seg.committed, seg.sealed, seg.size = committed, sealed, size
        try:
            fsync_dir(self.dir)
        except OSError as err:
            log.error("Directory fsync failed. dir=%s error=%s", self.dir, err)
        self._created = []

    def write(self, seg: Segment, frame: bytes) -> None:
        """Append one framed batch and fsync; on failure cut back to the committed length."""
        fd = self.ensure_fd(seg)
        try:
            view = memoryview(frame)
            done = 0
            while done < len(view):
                done += os.pwrite(fd, view[done:], seg.committed + done)
            os.fsync(fd)
        except OSError:
            try:
                os.ftruncate(fd, seg.committed)
            except OSError as cut_err:
                log.error("Cut-back after a failed write failed. segment=%s error=%s",
                          seg.path, cut_err)
            raise
        seg.committed += len(frame)
        seg.size = seg.committed
        seg.frames = None

    def seal(self, seg: Segment) -> None:
        fd = self.ensure_fd(seg)
        try:
            os.pwrite(fd, EOS, seg.committed)
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, seg.committed)
            raise
        seg.committed += len(EOS)
        seg.size = seg.committed
        seg.sealed = True
        self._close(seg)

    def _close(self, seg: Segment) -> None:
        if seg.fd is not None:
            os.close(seg.fd)
            seg.fd = None

    def close_fd(self) -> None:
        for seg in self.segments:
            self._close(seg)

    def delete(self, seg: Segment) -> None:
        self._close(seg)
        os.unlink(seg.path)
        fsync_dir(self.dir)
        self.segments.remove(seg)

    def compact(self, seg: Segment, *, compress: bool, lock: threading.Lock) -> None:
        """Rewrite a sealed stream segment once as an IPC file of large batches (DESIGN.md §3).

        Written under a temporary name, fsynced, renamed, then the stream file goes; a crash in
        between leaves both and `load` keeps the IPC file.
        """
        batches = self.walk(seg)
        table = pa.Table.from_batches(batches, schema=self.schema).unify_dictionaries()
        meta = dict(self.schema.metadata or {})
        meta[UNCOMPRESSED_KEY] = str(seg.size).encode()
        for key, value in ((SEQ_LAST_KEY, seg.seq_last), (TS_MIN_KEY, seg.ts_min),
                           (TS_MAX_KEY, seg.ts_max)):
            if value is not None:
                meta[key] = str(value).encode()
        schema = self.schema.with_metadata(meta)
        final = seg.path.with_suffix(FILE_SUFFIX)
        tmp = final.with_name(final.name + ".tmp")
        options = pa.ipc.IpcWriteOptions(compression="zstd" if compress else None)
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema,
                                                                 options=options) as writer:
            writer.write_table(table.cast(schema), max_chunksize=65_536)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        # Readers hold the lock only to copy a segment's entry: the rewrite above runs without
        # it; the switch of name and kind is atomic for them.
        with lock:
            os.rename(tmp, final)
            old = seg.path
            seg.path = final
            seg.ipc_file = True
            written = seg.size
            seg.size = seg.committed = os.path.getsize(final)
            self.flash_ratio = seg.size / max(1, written)
            seg.frames = None
        fsync_dir(self.dir)
        os.unlink(old)
        fsync_dir(self.dir)


def _summarise_meta(seg: Segment, meta: dict[bytes, bytes]) -> None:
    try:
        seg.seq_last = int(meta[SEQ_LAST_KEY])
        seg.ts_min = int(meta[TS_MIN_KEY])
        seg.ts_max = int(meta[TS_MAX_KEY])
    except (KeyError, ValueError):
        return  # written elsewhere: the summary stays unknown and readers filter rows instead


def _summarise_table(seg: Segment, batches: list[pa.RecordBatch]) -> None:
    rows = [b for b in batches if b.num_rows]
    if not rows:
        return
    seq_max = max(int(pa.compute.max(b.column("seq")).as_py()) for b in rows)
    ts_min = min(pa.compute.min(b.column("ts")).cast(pa.int64()).as_py() for b in rows)
    ts_max = max(pa.compute.max(b.column("ts")).cast(pa.int64()).as_py() for b in rows)
    seg.seq_last = seq_max
    seg.ts_min = int(ts_min)
    seg.ts_max = int(ts_max)
