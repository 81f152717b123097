"""The commit log (`<store>/wal`): one fsync per commit, whatever the number of segments it touches.

A commit writes its framed batches into the segments without fsync, then appends one record to
this file holding every (segment, offset, frame) it wrote, and fsyncs the file once; the commit
is acknowledged after that fsync. After a power cut the page cache of the segments may be lost,
never the records: opening the store replays them (a writer rewrites and fsyncs the segments
that differ, then empties this file; a read-only open applies them in memory, writing nothing).

A checkpoint (the file past `StoreOptions.wal_checkpoint_bytes`, and on close) fsyncs every
segment written since the last one, writes each stream's highest seq number to `<store>/seqs`,
then empties this file: it holds at most that much. A writer's open does the same after replay.
A stream's last batches rotten after that (or its last files) leave no other trace of their
numbers; `seqs` keeps them from being given again.

A record: `SWR1`, payload length (u32 LE), CRC-32C of the payload (u32 LE), then the payload:
entry count (u32), and per entry the segment's path relative to the store (u16 length, UTF-8),
its offset (u64) and the frame (u32 length, bytes). A record whose magic, length or CRC fails
with no trusted record after it ends the log: a torn record was never acknowledged. One with a
trusted record after it is damage (reported with its offset), and the records after it are
replayed: each was acknowledged.

Replay, per segment in record order: where the bytes at the offset already equal the frame,
nothing; otherwise the segment becomes its bytes up to the offset followed by the frame (a later
record of the same segment, from a retried commit, replaces what an earlier one wrote there).
Segments gone (compacted into a fsynced `.arrow`, deleted by the quota) are skipped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import crc32c as _crc

import fsio
from store._ipc import FrameError, read_batch
from store.errors import ReportKind, StoreReport

log = logging.getLogger("sunpm.store")

WAL_NAME: Final = "wal"
#: Per stream, the highest seq number given as of the last checkpoint (see `read_high_water`).
SEQS_NAME: Final = "seqs"
_SEQS_MAGIC: Final = b"SWS1"
_MAGIC: Final = b"SWR1"
_HEAD: Final = struct.Struct("<4sII")
_COUNT: Final = struct.Struct("<I")
_PATH_LEN: Final = struct.Struct("<H")
_AT: Final = struct.Struct("<QI")


@dataclass(frozen=True, slots=True)
class WalEntry:
    path: str  # relative to the store, POSIX
    offset: int
    frame: bytes


def encode_record(entries: Sequence[tuple[str, int, bytes | bytearray]]) -> bytes:
    # The CRC runs over the parts and the head goes in front before the one join: a bulk
    # commit's record is tens of MB, copied once.
    parts: list[bytes | bytearray] = [b"", _COUNT.pack(len(entries))]
    for path, offset, frame in entries:
        name = path.encode()
        parts.append(_PATH_LEN.pack(len(name)) + name + _AT.pack(offset, len(frame)))
        parts.append(frame)
    crc = 0
    length = 0
    for part in parts:
        crc = _crc.crc32c(part, crc)
        length += len(part)
    parts[0] = _HEAD.pack(_MAGIC, length, crc)
    return b"".join(parts)


def read_records(data: bytes, damage: list[tuple[int, int]] | None = None
                 ) -> list[list[WalEntry]]:
    """The trusted records of a commit log's bytes, in order.

    Bytes that fail with no trusted record after them are a torn record, never acknowledged:
    the log ends there. Bytes that fail before a trusted record are damage (each record was
    fsynced, so acknowledged, before the next was written): added to `damage` as (offset,
    length), and the records after them are still replayed. Replaying past them is safe: a
    segment that lacks what a skipped record held is shorter than the next frame's offset and
    left to the segment checks, and one that holds other bytes there keeps them as damage."""
    records: list[list[WalEntry]] = []
    pos = 0
    while pos + _HEAD.size <= len(data):
        record, end = _record_at(data, pos)
        if record is None:
            nxt = _next_record(data, pos + 1)
            if nxt is None:
                break
            if damage is not None:
                damage.append((pos, nxt - pos))
            pos = nxt
            continue
        records.append(record)
        pos = end
    return records


def _record_at(data: bytes, pos: int) -> tuple[list[WalEntry] | None, int]:
    """The trusted record at `pos` and the offset after it; (None, pos) if there is none."""
    magic, length, crc = _HEAD.unpack_from(data, pos)
    start = pos + _HEAD.size
    if magic != _MAGIC or start + length > len(data):
        return None, pos
    payload = memoryview(data)[start:start + length]
    if _crc.crc32c(payload) != crc:
        return None, pos
    try:
        return _decode(payload), start + length
    except (struct.error, UnicodeDecodeError, ValueError):
        return None, pos


def _next_record(data: bytes, pos: int) -> int | None:
    """Offset of the next trusted record at or after `pos` (found by its magic)."""
    while True:
        pos = data.find(_MAGIC, pos)
        if pos < 0 or pos + _HEAD.size > len(data):
            return None
        if _record_at(data, pos)[0] is not None:
            return pos
        pos += 1


def _decode(payload: memoryview) -> list[WalEntry]:
    (count,) = _COUNT.unpack_from(payload, 0)
    pos = _COUNT.size
    out: list[WalEntry] = []
    for _ in range(count):
        (name_len,) = _PATH_LEN.unpack_from(payload, pos)
        pos += _PATH_LEN.size
        name = bytes(payload[pos:pos + name_len]).decode()
        pos += name_len
        offset, frame_len = _AT.unpack_from(payload, pos)
        pos += _AT.size
        if pos + frame_len > len(payload):
            raise ValueError("frame past the record")
        out.append(WalEntry(name, offset, bytes(payload[pos:pos + frame_len])))
        pos += frame_len
    if pos != len(payload):
        raise ValueError("bytes after the last entry")
    return out


def replayed_images(root: Path, reports: list[StoreReport] | None = None
                    ) -> dict[Path, tuple[bytes, int]]:
    """Each segment the commit log changes: (its bytes with the records applied, the first offset
    that differs from the file). Segments the records leave as they are, or gone, are absent.
    Damage met in the log is added to `reports`."""
    try:
        data = (root / WAL_NAME).read_bytes()
    except FileNotFoundError:
        return {}
    images: dict[Path, bytearray] = {}
    first_change: dict[Path, int] = {}
    gone: set[Path] = set()
    damage: list[tuple[int, int]] = []
    records = read_records(data, damage)
    if reports is not None:
        reports.extend(StoreReport(kind=ReportKind.DAMAGE, path=root / WAL_NAME, offset=offset,
                                   length=length) for offset, length in damage)
    for record in records:
        for entry in record:
            path = root / entry.path
            if path in gone:
                continue
            image = images.get(path)
            if image is None:
                try:
                    image = bytearray(path.read_bytes())
                except FileNotFoundError:
                    gone.add(path)
                    continue
                images[path] = image
            end = entry.offset + len(entry.frame)
            if image[entry.offset:end] == entry.frame:
                continue
            if len(image) < entry.offset:
                # Bytes before a logged frame are durable or logged earlier: not here, the file
                # is not what this log was written against. Left to the segment checks.
                log.error("Commit log replay: segment shorter than a logged frame's offset; "
                          "left as it is. segment=%s size=%d offset=%d", path, len(image),
                          entry.offset)
                gone.add(path)
                continue
            del image[entry.offset:]
            image += entry.frame
            first_change[path] = min(first_change.get(path, entry.offset), entry.offset)
    return {path: (bytes(images[path]), at) for path, at in first_change.items()
            if path not in gone}


def recover(root: Path, reports: list[StoreReport] | None = None) -> list[Path]:
    """Writer's open: rewrite and fsync the segments the commit log restores (damage met in it
    added to `reports`). The log is emptied by the open once the streams are loaded and the
    numbers of its frames saved (`write_high_water`).

    Idempotent: a power cut in the middle leaves the log as it was, replayed again next time.
    """
    changed = replayed_images(root, reports)
    for path, (image, at) in changed.items():
        fd = fsio.open_append(path)
        try:
            fsio.pwrite_all(fd, memoryview(image)[at:], at)
            fsio.ftruncate(fd, len(image))
            fsio.fsync(fd)
        finally:
            fsio.close(fd)
    if changed:
        log.warning("Segments restored from the commit log after an unclean stop. segments=%d",
                    len(changed))
    return sorted(changed)


class CommitLog:
    """The writer's handle on `<store>/wal` (writer thread only)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / WAL_NAME
        self._fd: int | None = None
        self.size = 0

    def create(self) -> bool:
        """Make sure the file exists; True when it was created (its directory needs an fsync)."""
        if self.path.exists():
            return False
        fsio.close(fsio.open_new(self.path, exclusive=True))
        return True

    def open(self) -> None:
        self._fd = fsio.open_append(self.path)
        self.size = self.path.stat().st_size

    def append(self, entries: Iterable[tuple[Path, int, bytes | bytearray]]) -> None:
        """Log one commit's frames and fsync: the commit's acknowledgement point.

        On failure the log is cut back to its previous length and the error raised.
        """
        assert self._fd is not None
        record = encode_record([(str(path.relative_to(self.root)), offset, frame)
                                for path, offset, frame in entries])
        try:
            fsio.pwrite_all(self._fd, record, self.size)
            fsio.fsync(self._fd)
        except OSError:
            try:
                fsio.ftruncate(self._fd, self.size)
            except OSError as cut_err:
                log.error("Cut-back of the commit log failed. error=%s", cut_err)
            raise
        self.size += len(record)

    def reset(self) -> None:
        """Empty the log, once every segment it covers is fsynced (a checkpoint)."""
        assert self._fd is not None
        fsio.ftruncate(self._fd, 0)
        fsio.fsync(self._fd)
        self.size = 0

    def close(self) -> None:
        if self._fd is not None:
            fsio.close(self._fd)
            self._fd = None


def logged_high_water(root: Path) -> dict[str, int]:
    """Per stream directory (relative to the store), the highest seq number of the frames the
    commit log holds, whether or not replay could put them back: each was acknowledged."""
    try:
        data = (root / WAL_NAME).read_bytes()
    except FileNotFoundError:
        return {}
    marks: dict[str, int] = {}
    for record in read_records(data):
        for entry in record:
            try:
                frame = read_batch(memoryview(entry.frame), 0)
            except FrameError:
                continue
            if frame is not None:
                stream = entry.path.rpartition("/")[0]
                marks[stream] = max(marks.get(stream, 0), frame.seq_last)
    return marks


def read_high_water(root: Path, reports: list[StoreReport] | None = None) -> dict[str, int]:
    """The `seqs` file: per stream directory (relative to the store), the highest seq number
    given as of the last checkpoint. A stream's last batches rotten, or its last files, after
    they were fsynced and the commit log emptied leave no other trace of their numbers, which
    must not be given again (delivery cursors are seq watermarks). Damaged: reported, {}."""
    path = root / SEQS_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    try:
        magic, length, crc = _HEAD.unpack_from(data, 0)
        payload = data[_HEAD.size:_HEAD.size + length]
        if magic != _SEQS_MAGIC or len(payload) != length or _crc.crc32c(payload) != crc:
            raise ValueError("magic, length or CRC-32C")
        marks = json.loads(payload)
        if not isinstance(marks, dict) or not all(
                isinstance(k, str) and type(v) is int for k, v in marks.items()):
            raise ValueError("not a mapping of streams to numbers")
    except (struct.error, ValueError) as err:
        if reports is not None:
            reports.append(StoreReport(kind=ReportKind.DAMAGE, path=path, offset=0,
                                       length=len(data), detail=str(err)))
        return {}
    return marks


def write_high_water(root: Path, marks: dict[str, int]) -> None:
    """Replace the `seqs` file, all or nothing, before the commit log that covers those numbers
    is emptied."""
    payload = json.dumps(marks, sort_keys=True, separators=(",", ":")).encode()
    tmp = root / (SEQS_NAME + ".tmp")
    try:
        fsio.write_file_durably(root / SEQS_NAME, _HEAD.pack(_SEQS_MAGIC, len(payload),
                                                             _crc.crc32c(payload)) + payload,
                                tmp=tmp)
    except OSError:
        # A full disk: no half-written file left beside the store's own.
        with contextlib.suppress(OSError):
            fsio.unlink(tmp)
        raise
