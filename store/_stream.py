"""One stream's segments on disk (a device's records or the journal), used by the writer thread.

Everything here is blocking and runs off the event loop. A `Stream` is mutated only by the
writer thread (commit, seal, quota) or by `Log.open`; readers take a snapshot of `segments` under
the log's lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

import fsio
from store._ipc import EOS, BatchFrame, schema_message
from store._segment import (
    FILE_SUFFIX,
    JOURNAL_BATCH_ROWS,
    SEQ_LAST_KEY,
    UNCOMPRESSED_KEY,
    Region,
    Scan,
    decode_frames,
    header_damaged,
    map_file,
    parse_name,
    read_ipc_file,
    rescan_stream,
    scan_ipc_file,
    scan_stream,
    segment_name,
    write_ipc_file,
)
from store.errors import ReportKind, StoreReport

log = logging.getLogger("sunpm.store")

DAY_NS: Final = 86_400 * 1_000_000_000


_DEFAULT_BLOCK_BYTES: Final = 4096


def block_bytes(directory: Path) -> int:
    """The allocation unit of the file system holding `directory` (or its nearest existing
    parent: a stream's folder may not be created yet)."""
    for path in (directory, *directory.parents):
        try:
            size = os.statvfs(path).f_frsize
        except FileNotFoundError:
            continue
        except OSError:
            break
        return size if size > 0 else _DEFAULT_BLOCK_BYTES
    return _DEFAULT_BLOCK_BYTES


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
    # Trusted frames of a stream segment as last verified (checked again by CRC on each read).
    frames: list[BatchFrame] | None = None

    def summarise(self, frames: list[BatchFrame]) -> None:
        if frames:
            # The largest, not the last frame's: a sealed file ordered by variable states each
            # batch's seq bounds, and its last batch need not hold the last record.
            self.seq_last = max(f.seq_last for f in frames)
            self.ts_min = min(f.ts_min for f in frames)
            self.ts_max = max(f.ts_max for f in frames)
            if self.day is None:
                self.day = frames[0].ts_min // DAY_NS


class Stream:
    """Segments of one stream, and the open segment's file descriptor while writing."""

    def __init__(self, name: str, directory: Path, schema: pa.Schema,
                 overlay: Mapping[Path, bytes] | None = None) -> None:
        self.name = name
        # A read-only open's segments as the commit log restores them (store/_wal.py), read
        # instead of the files: such an open writes nothing.
        self.overlay: Mapping[Path, bytes] = overlay or {}
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
        #: The file system's allocation unit: a file occupies whole blocks on flash.
        self.block_bytes = block_bytes(directory)

    # -- opening ---------------------------------------------------------------------------

    def load(self, *, read_only: bool, high_water: int = 0) -> None:
        """List segments, check the last one, cut a torn tail (writer only). `high_water`: the
        highest seq number given before, as the store recorded it (store/_wal.py `seqs`): the
        next one is above it whatever rotted since."""
        self._load(read_only=read_only)
        self.next_seq = max(self.next_seq, high_water + 1)

    def _load(self, *, read_only: bool) -> None:
        found: dict[int, Path] = {}
        for entry in sorted(os.scandir(self.dir), key=lambda e: e.name):
            parsed = parse_name(entry.name)
            if parsed is None or not entry.is_file():
                rewrite = entry.name.endswith(".tmp") and parse_name(entry.name[:-4]) is not None
                if rewrite and not read_only:
                    # A compaction cut short by a crash; its source segment is still there.
                    fsio.unlink(Path(entry.path))
                    continue
                self._report(ReportKind.FOREIGN, Path(entry.path), (
                    "a rewrite cut short, its segment kept; a writer's open deletes it"
                    if rewrite else "not a segment file name"))
                continue
            seq0, ipc_file = parsed
            other = found.get(seq0)
            if other is not None:
                # A crash between the rename and the unlink of a compaction: the file wins, if
                # it verifies whole; else the segment it was made from stays.
                rewritten = Path(entry.path) if ipc_file else other
                source = other if ipc_file else Path(entry.path)
                keep, stale = (rewritten, source) if self._whole(rewritten) else (source, None)
                if stale is not None and not read_only:
                    fsio.unlink(stale)
                    fsio.fsync_dir(self.dir)
                elif stale is None and not read_only:
                    # Its name is the next compaction's; the bytes are kept aside.
                    fsio.rename(rewritten, rewritten.with_name(rewritten.name + ".corrupt"))
                    fsio.fsync_dir(self.dir)
                found[seq0] = keep
                continue
            found[seq0] = Path(entry.path)
        for seq0 in sorted(found):
            path = found[seq0]
            # The quota counts bytes on flash (docs/behaviour.md §6): a stat, no file read.
            size = self.file_size(path)
            seg = Segment(seq0, path, path.suffix == FILE_SUFFIX, size, size, sealed=True)
            self.segments.append(seg)
        self.next_seq = self.segments[0].seq0 if self.segments else 1
        for seg in self.segments[:-1]:
            if not seg.ipc_file:
                self._check_sealed_end(seg)
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

    def _whole(self, path: Path) -> bool:
        """Whether a compaction's file verifies whole (reported when it does not)."""
        try:
            scan, _ = scan_ipc_file(map_file(path), self.schema)
        except OSError as err:
            self._report(ReportKind.UNREADABLE, path, str(err))
            return False
        if scan.header_ok and scan.ended and not scan.damage and scan.torn is None:
            return True
        self._report(ReportKind.DAMAGE, path, "rewritten segment; the segment it was made from "
                     "is kept", offset=(scan.damage[0].offset if scan.damage else scan.good_end),
                     length=scan.damage[0].length if scan.damage else None)
        return False

    def _check_sealed_end(self, seg: Segment) -> None:
        """A stream segment before the last one ends with its end-of-stream marker, unless it
        was closed because of damage (appends moved on to a new segment, the marker never
        written): such a one is walked now, so its damage is reported on every open."""
        try:
            if seg.path in self.overlay:
                data = self.overlay[seg.path]
                if data.endswith(EOS):
                    return
            else:
                with open(seg.path, "rb") as fh:
                    fh.seek(max(0, seg.size - len(EOS)))
                    if fh.read(len(EOS)) == EOS:
                        return
                    fh.seek(0)
                    data = fh.read()
        except OSError as err:
            self._report(ReportKind.UNREADABLE, seg.path, str(err))
            seg.damaged = True
            return
        scan = scan_stream(data, self.schema)
        seg.damaged = True
        if scan.foreign:
            self._report(ReportKind.FOREIGN, seg.path, scan.foreign)
            seg.committed = 0
            return
        for region in [*scan.damage, *([scan.torn] if scan.torn is not None else [])]:
            self._report(ReportKind.DAMAGE, seg.path, "", offset=region.offset,
                         length=region.length)
        seg.committed = scan.good_end if scan.header_ok else 0
        seg.summarise(scan.batches)
        seg.frames = scan.batches

    def _check_last(self, *, read_only: bool) -> None:
        seg = self.segments[-1]
        if seg.ipc_file:
            try:
                _, meta, scan = read_ipc_file(seg.path, self.schema)
            except (OSError, pa.ArrowInvalid) as err:
                self._report(ReportKind.UNREADABLE, seg.path, str(err).splitlines()[0])
                self.segments.pop()
                self.next_seq = max(self.next_seq, seg.seq0)
                return
            self._report_file_scan(seg, scan)
            if not scan.header_ok:
                self.segments.pop()
                self.next_seq = self._next_after_previous(seg.seq0)
                return
            seg.summarise(scan.batches)
            last = seg.seq_last if seg.seq_last is not None else seg.seq0 - 1
            # A damaged last batch must not have its seq numbers given again: the file states
            # the last one it was written with (a hint only; never lower than what was read).
            with contextlib.suppress(ValueError):
                last = max(last, int(meta.get(SEQ_LAST_KEY, b"0")))
            self.next_seq = last + 1
            return
        data = self.file_bytes(seg.path)
        # Every batch is CRC-checked, by a writer (it appends after them) and by a read-only
        # open (a card dump) alike: both keep exactly the same batches.
        scan = scan_stream(data, self.schema)
        if scan.foreign:
            self._report(ReportKind.FOREIGN, seg.path, scan.foreign)
            self.segments.pop()
            if not read_only:
                # It holds the name the next segment needs; move it aside, keep its bytes.
                fsio.rename(seg.path, seg.path.with_name(seg.path.name + ".corrupt"))
                fsio.fsync_dir(self.dir)
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
            fsio.unlink(seg.path)
            fsio.fsync_dir(self.dir)
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

    def file_size(self, path: Path) -> int:
        image = self.overlay.get(path)
        return len(image) if image is not None else path.stat().st_size

    def file_bytes(self, path: Path, limit: int = -1) -> bytes:
        image = self.overlay.get(path)
        if image is not None:
            return image if limit < 0 else image[:limit]
        with open(path, "rb") as fh:
            return fh.read(limit)

    def _next_after_previous(self, fallback: int) -> int:
        # `fallback` is the first seq of the segment dropped: every number below it was given.
        if not self.segments:
            return fallback
        prev = self.segments[-1]
        if prev.seq_last is None:
            self.walk(prev)
        return max((prev.seq_last + 1) if prev.seq_last is not None else prev.seq0, fallback)

    def _cut(self, seg: Segment, length: int) -> None:
        fd = fsio.open_append(seg.path)
        try:
            fsio.ftruncate(fd, length)
            fsio.fsync(fd)
        finally:
            fsio.close(fd)

    def _report(self, kind: ReportKind, path: Path, detail: str, *, offset: int | None = None,
                length: int | None = None) -> None:
        self.reports.append(StoreReport(kind=kind, path=path, detail=detail, offset=offset,
                                        length=length))

    # -- reading ---------------------------------------------------------------------------

    def walk(self, seg: Segment) -> list[pa.RecordBatch]:
        """Trusted batches of a segment (committed part only), filling in its summary."""
        return self.read(seg)[0]

    def read(self, seg: Segment, columns: list[int] | None = None,
             keep: Callable[[BatchFrame], bool] | None = None
             ) -> tuple[list[pa.RecordBatch], list[StoreReport]]:
        """Trusted batches of a segment (committed part only, each batch's CRC verified) and
        what the walk found wrong (damage, a sealed file not ours), filling in its summary.
        `columns`: the indexes of the only fields decoded (the CRC covers the bytes as stored,
        so verifying needs no decoding). `keep`: of a live segment, only the frames it accepts
        are decoded (by the seq and time ranges their verified metadata states), so a reader
        of the last minutes does not decode the hours before them.

        Verified on every read, not trusted from an earlier check: bytes can rot on flash
        after they were checked, and a damaged batch must never come back as data.
        """
        if seg.ipc_file:
            batches, _, scan = read_ipc_file(seg.path, self.schema, columns)
            if seg.seq_last is None or seg.ts_min is None:
                seg.summarise(scan.batches)
            return batches, self.file_findings(seg, scan)
        if seg.committed == 0:
            return [], []
        # Copied, not mapped: a failed commit's cut-back may shorten the file under a reader.
        data = self.file_bytes(seg.path, seg.committed)
        scan = rescan_stream(data, self.schema, seg.frames)
        seg.summarise(scan.batches)
        seg.frames = scan.batches
        found = [StoreReport(kind=ReportKind.DAMAGE, path=seg.path, offset=r.offset,
                             length=r.length) for r in scan.damage]
        if scan.foreign:
            found.append(StoreReport(kind=ReportKind.FOREIGN, path=seg.path,
                                     detail=scan.foreign))
        if scan.torn is not None:
            # Inside the committed bytes nothing is a tail (torn tails were cut, or left outside
            # them read-only): bytes that fail there are damage.
            found.append(StoreReport(kind=ReportKind.DAMAGE, path=seg.path,
                                     offset=scan.torn.offset, length=scan.torn.length))
        frames = scan.batches if keep is None else [f for f in scan.batches if keep(f)]
        if header_damaged(scan):
            # The frames are decoded after the store's own schema message, never the file's.
            header = schema_message(self.schema)
            data = header + data[len(header):]
        return decode_frames(memoryview(data), self.schema, frames, columns=columns), found

    def file_findings(self, seg: Segment, scan: Scan) -> list[StoreReport]:
        found = [StoreReport(kind=ReportKind.DAMAGE, path=seg.path, offset=r.offset,
                             length=r.length) for r in scan.damage]
        if scan.foreign:
            found.append(StoreReport(kind=ReportKind.FOREIGN, path=seg.path,
                                     detail=scan.foreign))
        if scan.unknown_version is not None:
            found.append(StoreReport(kind=ReportKind.SCHEMA, path=seg.path,
                                     detail=scan.unknown_version))
        if scan.torn is not None or (scan.header_ok and not scan.ended):
            region = scan.torn or Region(scan.good_end, 0)
            found.append(StoreReport(kind=ReportKind.DAMAGE, path=seg.path,
                                     offset=region.offset, length=region.length))
        return found

    def _report_file_scan(self, seg: Segment, scan: Scan) -> None:
        self.reports.extend(self.file_findings(seg, scan))

    # -- writing (writer thread) -----------------------------------------------------------

    @property
    def usage(self) -> int:
        """Bytes the segments occupy on flash: each file in whole blocks, as `du` counts."""
        block = self.block_bytes
        return sum(-(-s.size // block) * block for s in self.segments)

    def on_flash(self, size: int) -> int:
        """Bytes a file of `size` bytes occupies on this stream's file system."""
        return -(-size // self.block_bytes) * self.block_bytes

    def open_segment(self) -> Segment | None:
        if self.segments and not self.segments[-1].sealed:
            return self.segments[-1]
        return None

    def create_segment(self, day: int) -> Segment:
        header = schema_message(self.schema)
        path = self.dir / segment_name(self.next_seq)
        # O_EXCL: a name already taken means our numbering is wrong; never overwrite a segment.
        fd = fsio.open_new(path, exclusive=True)
        try:
            fsio.pwrite_all(fd, header, 0)
            fsio.fsync(fd)
        except OSError:
            fsio.close(fd)
            fsio.unlink(path)
            raise
        fsio.fsync_dir(self.dir)
        seg = Segment(self.next_seq, path, False, len(header), len(header), sealed=False, day=day,
                      fd=fd)
        self.segments.append(seg)
        self._created.append(seg)
        return seg

    def ensure_fd(self, seg: Segment) -> int:
        if seg.fd is None:
            seg.fd = fsio.open_append(seg.path)
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
                fsio.unlink(seg.path)
            except OSError as err:
                log.error("Could not remove a segment of a failed commit. segment=%s error=%s",
                          seg.path, err)
            if seg in self.segments:
                self.segments.remove(seg)
        for seg, committed, sealed, size in self._checkpoint:
            if seg.committed != committed and seg in self.segments:
                try:
                    fsio.truncate(seg.path, committed)
                except OSError as err:
                    log.error("Cut-back failed. segment=%s error=%s", seg.path, err)
                    continue
            seg.committed, seg.sealed, seg.size = committed, sealed, size
        try:
            fsio.fsync_dir(self.dir)
        except OSError as err:
            log.error("Directory fsync failed. dir=%s error=%s", self.dir, err)
        self._created = []

    def write(self, seg: Segment, frame: bytes | bytearray) -> int:
        """Append one framed batch, without fsync (the commit log's fsync makes the commit
        durable, store/_wal.py); returns its offset. On failure cut back to the committed length.
        """
        fd = self.ensure_fd(seg)
        offset = seg.committed
        try:
            fsio.pwrite_all(fd, frame, offset)
        except OSError:
            try:
                fsio.ftruncate(fd, seg.committed)
            except OSError as cut_err:
                log.error("Cut-back after a failed write failed. segment=%s error=%s",
                          seg.path, cut_err)
            raise
        seg.committed += len(frame)
        seg.size = seg.committed
        return offset

    def sync(self, seg: Segment) -> None:
        """fsync a segment written since the last checkpoint (a commit log checkpoint)."""
        if seg.fd is not None:
            fsio.fsync(seg.fd)
            return
        fd = fsio.open_append(seg.path)
        try:
            fsio.fsync(fd)
        finally:
            fsio.close(fd)

    def seal(self, seg: Segment) -> None:
        fd = self.ensure_fd(seg)
        try:
            fsio.pwrite_all(fd, EOS, seg.committed)
            fsio.fsync(fd)
        except OSError:
            fsio.ftruncate(fd, seg.committed)
            raise
        seg.committed += len(EOS)
        seg.size = seg.committed
        seg.sealed = True
        self._close(seg)

    def _close(self, seg: Segment) -> None:
        if seg.fd is not None:
            fsio.close(seg.fd)
            seg.fd = None

    def close_fd(self) -> None:
        for seg in self.segments:
            self._close(seg)

    def delete(self, seg: Segment) -> None:
        self._close(seg)
        fsio.unlink(seg.path)
        fsio.fsync_dir(self.dir)
        self.segments.remove(seg)

    def compact(self, seg: Segment, *, compress: bool, lock: threading.Lock) -> None:
        """Rewrite a sealed stream segment once as an IPC file of large batches
        (docs/architecture.md §3).

        Written under a temporary name, fsynced, renamed, then the stream file goes; a crash in
        between leaves both and `load` keeps the IPC file when it verifies whole (else the
        stream file, the IPC file renamed `.corrupt` and reported).
        """
        batches, findings = self.read(seg)
        if findings:
            # Rewriting would drop the damaged bytes, and with them the evidence: left in place.
            raise OSError(f"not rewritten, {findings[0]}")
        table = pa.Table.from_batches(batches, schema=self.schema).unify_dictionaries()
        meta = dict(self.schema.metadata or {})
        meta[UNCOMPRESSED_KEY] = str(seg.size).encode()
        if seg.seq_last is not None:
            meta[SEQ_LAST_KEY] = str(seg.seq_last).encode()
        final = seg.path.with_suffix(FILE_SUFFIX)
        tmp = final.with_name(final.name + ".tmp")
        records = meta.get(b"sunpm.stream") == b"records"
        if records:
            write_ipc_file(tmp, table, self.schema.with_metadata(meta), compress=compress,
                           by_variable=True)
        else:
            state = pc.equal(table.column("kind").cast(pa.string()), "state")
            write_ipc_file(tmp, table, self.schema.with_metadata(meta), compress=compress,
                           chunk_rows=JOURNAL_BATCH_ROWS, alone=state)
        # Readers hold the lock only to copy a segment's entry: the rewrite above runs without
        # it; the switch of name and kind is atomic for them.
        with lock:
            fsio.rename(tmp, final)
            old = seg.path
            seg.path = final
            seg.ipc_file = True
            written = seg.size
            seg.size = seg.committed = os.path.getsize(final)
            self.flash_ratio = seg.size / max(1, written)
            seg.frames = None
        fsio.fsync_dir(self.dir)
        fsio.unlink(old)
        fsio.fsync_dir(self.dir)
