"""Frame traces kept until delivered (docs/architecture.md §3 `traces/`, docs/formats.md §11).

One directory per interface under `<store>/traces/`, each a run of numbered segment files of
checksummed lines::

    <store>/traces/lock                       flock'ed by the writer
    <store>/traces/<interface>/<n>.trc        segments, n = 1, 2, ... (oldest first)

A line is `<crc32 of the JSON, 8 hex> <JSON>\\n`, the JSON holding the entry's UTC ns time and raw
fields (`t`, `d` direction, `x` bytes in hex, `p` peer, `e` error, `c` I/O channels), never local
text: the LOG view renders the lines with the time zone of the window they are delivered in.

Appends are buffered (bounded; the drivers' hook must not block) and written with one fsync per
touched segment by `flush()`, which `run()` calls every `flush_s` off the event loop. On open, a
segment's bytes after its last good line, with no good line after them, are a torn tail and cut;
a bad line with good lines after it is skipped and reported, never cut. Each interface keeps at
most `cap_bytes` (oldest segments dropped and their entries counted), and segments whose every
line has been delivered to every file server are deleted by `delete_delivered`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Self

from fsio import fsync_dir
from store.errors import (
    ReportKind,
    StoreClosedError,
    StoreError,
    StoreReadOnlyError,
    StoreReport,
)
from store.lockfile import take_lock

__all__ = ["TRACE_INTERFACES", "TraceDeliveredFn", "TraceEntry", "TraceOptions", "TraceStats",
           "TraceStore", "UnknownTraceInterface"]

log = logging.getLogger("sunpm.store")

#: In the order their files go up in a LOG window (docs/behaviour.md §4.2 step 8).
TRACE_INTERFACES: Final = ("serial1", "serial2", "serial3", "ethernet", "io", "tic")

#: `(interface, newest entry time in UTC ns) -> True` when every file server has delivered the
#: LOG window holding that time (so everything older too).
TraceDeliveredFn = Callable[[str, int], bool]

_SUFFIX: Final = ".trc"
_MAX_LINE: Final = 1 << 20  # no frame or I/O poll comes near; a longer "line" is damage


class UnknownTraceInterface(StoreError, ValueError):
    def __init__(self, interface: str) -> None:
        super().__init__(f"trace interface {interface!r} is not one of "
                         f"{', '.join(TRACE_INTERFACES)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class TraceEntry:
    """One traced frame (`direction` `=>`/`<=`) or one I/O poll (`channels`, no direction)."""

    ts_ns: int
    interface: str
    direction: str = ""
    data: bytes = b""
    peer: str = ""
    error: str = ""
    channels: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> str:
        body: dict[str, object] = {"t": self.ts_ns}
        if self.direction:
            body["d"] = self.direction
        if self.data:
            body["x"] = self.data.hex()
        if self.peer:
            body["p"] = self.peer
        if self.error:
            body["e"] = self.error
        if self.channels:
            body["c"] = [list(c) for c in self.channels]
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, interface: str, text: str) -> TraceEntry:
        body = json.loads(text)
        return cls(ts_ns=int(body["t"]), interface=interface, direction=str(body.get("d", "")),
                   data=bytes.fromhex(body.get("x", "")), peer=str(body.get("p", "")),
                   error=str(body.get("e", "")),
                   channels=tuple((str(n), str(v)) for n, v in body.get("c", ())))


@dataclass(frozen=True, slots=True)
class TraceOptions:
    flush_s: float = 1.0
    #: Per interface: what its undelivered traces may take on disk (docs/behaviour.md §13).
    cap_bytes: int = 20_000_000
    segment_bytes: int = 1 << 20
    #: Lines waiting for the next flush, all interfaces together; past it the oldest are dropped.
    max_pending_bytes: int = 4 << 20

    @property
    def segment_limit(self) -> int:
        # Dropping whole segments must leave most of the cap in use.
        return max(4096, min(self.segment_bytes, self.cap_bytes // 8))


@dataclass(frozen=True, slots=True)
class TraceStats:
    bytes: int
    entries: int
    segments: int
    dropped: int  # entries dropped by the cap or the pending bound since open
    oldest_ns: int | None
    newest_ns: int | None


@dataclass(slots=True)
class _Segment:
    number: int
    path: Path
    size: int = 0
    entries: int = 0
    ts_min: int | None = None
    ts_max: int | None = None

    def note(self, ts_ns: int, nbytes: int) -> None:
        self.size += nbytes
        self.entries += 1
        self.ts_min = ts_ns if self.ts_min is None else min(self.ts_min, ts_ns)
        self.ts_max = ts_ns if self.ts_max is None else max(self.ts_max, ts_ns)


@dataclass(slots=True)
class _Area:
    directory: Path
    segments: list[_Segment] = field(default_factory=list)
    dropped: int = 0
    fd: int | None = None  # of segments[-1], opened for appending

    @property
    def size(self) -> int:
        return sum(s.size for s in self.segments)


def encode_line(entry: TraceEntry) -> bytes:
    text = entry.to_json().encode()
    return b"%08x %s\n" % (zlib.crc32(text), text)


def _decode_line(line: bytes) -> bytes | None:
    """The JSON of a whole line (newline excluded) whose checksum holds, else None."""
    if len(line) < 10 or line[8:9] != b" ":
        return None
    try:
        crc = int(line[:8], 16)
    except ValueError:
        return None
    body = line[9:]
    return body if zlib.crc32(body) == crc else None


def _scan(data: bytes) -> tuple[list[tuple[int, int, bytes]], int, list[tuple[int, int]]]:
    """Good lines `(offset, length with newline, json)`, the end of the last one, bad regions."""
    good: list[tuple[int, int, bytes]] = []
    bad: list[tuple[int, int]] = []
    pos = 0
    end_good = 0
    bad_start: int | None = None
    while pos < len(data):
        nl = data.find(b"\n", pos, pos + _MAX_LINE)
        stop = len(data) if nl < 0 else nl + 1
        body = _decode_line(data[pos:nl]) if nl >= 0 else None
        if body is None:
            if bad_start is None:
                bad_start = pos
        else:
            if bad_start is not None:
                bad.append((bad_start, pos - bad_start))
                bad_start = None
            good.append((pos, stop - pos, body))
            end_good = stop
        pos = stop
    return good, end_good, bad


class TraceStore:
    """The store's `traces/` area; opened beside `Log` on the same store directory."""

    def __init__(self, path: Path, options: TraceOptions, read_only: bool) -> None:
        self.path = path
        self.root = path / "traces"
        self.options = options
        self.read_only = read_only
        self.reports: list[StoreReport] = []
        self._areas: dict[str, _Area] = {}
        self._pending: deque[tuple[str, int, bytes]] = deque()
        self._pending_bytes = 0
        self._pending_lock = threading.Lock()
        self._io_lock = threading.Lock()
        self._lock_fd: int | None = None
        self._closed = False

    # ------------------------------------------------------------------ open / close

    @classmethod
    def open(cls, path: Path, options: TraceOptions | None = None, *,
             read_only: bool = False) -> TraceStore:
        """Open (blocking: from the loop, through `asyncio.to_thread`); torn tails are cut."""
        store = cls(Path(path), options or TraceOptions(), read_only)
        store._open_sync()
        return store

    def _open_sync(self) -> None:
        if not self.read_only:
            created = not self.root.exists()
            self.root.mkdir(parents=True, exist_ok=True)
            if created:
                fsync_dir(self.path)
            self._lock_fd = take_lock(self.root / "lock", self.root)
        for interface in TRACE_INTERFACES:
            area = _Area(self.root / interface)
            self._areas[interface] = area
            if area.directory.is_dir():
                self._load(interface, area)
        for report in self.reports:
            log.warning("%s", report)

    def _load(self, interface: str, area: _Area) -> None:
        numbered: list[tuple[int, Path]] = []
        for child in area.directory.iterdir():
            if child.suffix == _SUFFIX and child.stem.isdigit():
                numbered.append((int(child.stem), child))
            else:
                self.reports.append(StoreReport(kind=ReportKind.FOREIGN, path=child,
                                                detail="not a trace segment"))
        numbered.sort()
        for k, (number, seg_path) in enumerate(numbered):
            last = k == len(numbered) - 1
            try:
                data = seg_path.read_bytes()
            except OSError as err:
                self.reports.append(StoreReport(kind=ReportKind.UNREADABLE, path=seg_path,
                                                detail=err.strerror or str(err)))
                continue
            good, end_good, bad = _scan(data)
            seg = _Segment(number, seg_path)
            for _, length, body in good:
                seg.note(_entry_time(body), length)
            if end_good < len(data):
                # Bytes after the last good line: a torn write when nothing good follows them.
                tail = len(data) - end_good
                bad = [b for b in bad if b[0] < end_good]
                cut = last and not self.read_only
                if cut:
                    with open(seg_path, "r+b") as fh:
                        fh.truncate(end_good)
                        os.fsync(fh.fileno())
                self.reports.append(StoreReport(kind=ReportKind.TORN_TAIL, path=seg_path,
                                                length=tail, kept_batches=len(good), cut=cut))
            for offset, length in bad:
                self.reports.append(StoreReport(kind=ReportKind.DAMAGE, path=seg_path,
                                                offset=offset, length=length))
            # What lies past the good lines of a segment kept whole is never read.
            seg.size = end_good
            area.segments.append(seg)

    def close(self) -> None:
        """Flush what is pending, then release the files and the lock."""
        if self._closed:
            return
        if not self.read_only:
            self.flush()
        self._closed = True
        with self._io_lock:
            for area in self._areas.values():
                if area.fd is not None:
                    os.close(area.fd)
                    area.fd = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writing

    def append(self, entry: TraceEntry) -> int:
        """Queue one entry for the next flush (never blocks on I/O); returns its size on disk."""
        if self.read_only:
            raise StoreReadOnlyError(f"{self.root}: traces opened read-only; open them for writing")
        if self._closed:
            raise StoreClosedError(f"{self.root}: traces are closed; open them again to append")
        if entry.interface not in self._areas:
            raise UnknownTraceInterface(entry.interface)
        line = encode_line(entry)
        with self._pending_lock:
            self._pending.append((entry.interface, entry.ts_ns, line))
            self._pending_bytes += len(line)
            while self._pending_bytes > self.options.max_pending_bytes and len(self._pending) > 1:
                dropped_if, _, dropped_line = self._pending.popleft()
                self._pending_bytes -= len(dropped_line)
                self._areas[dropped_if].dropped += 1
        return len(line)

    def flush(self) -> int:
        """Write and fsync everything queued (blocking); returns the number of entries written."""
        with self._pending_lock:
            work = list(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
        if not work:
            return 0
        by_interface: dict[str, list[tuple[int, bytes]]] = {}
        for interface, ts_ns, line in work:
            by_interface.setdefault(interface, []).append((ts_ns, line))
        with self._io_lock:
            for interface, lines in by_interface.items():
                self._write_area(self._areas[interface], lines)
        return len(work)

    def _write_area(self, area: _Area, lines: list[tuple[int, bytes]]) -> None:
        limit = self.options.segment_limit
        touched: set[int] = set()
        chunk: list[bytes] = []
        for ts_ns, line in lines:
            seg = area.segments[-1] if area.segments else None
            if seg is None or (seg.size and seg.size + len(line) > limit):
                self._write_chunk(area, chunk, touched)
                chunk = []
                seg = self._new_segment(area)
            chunk.append(line)
            seg.note(ts_ns, len(line))
        self._write_chunk(area, chunk, touched)
        self._apply_cap(area)

    def _write_chunk(self, area: _Area, chunk: list[bytes], touched: set[int]) -> None:
        if not chunk:
            return
        fd = self._area_fd(area)
        data = b"".join(chunk)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        touched.add(area.segments[-1].number)

    def _area_fd(self, area: _Area) -> int:
        if area.fd is None:
            seg = area.segments[-1]
            fd = os.open(seg.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            # The tail past the good lines was cut on open; a kept-whole segment with damage at
            # its end cannot be the last one (appends then start a new segment).
            area.fd = fd
        return area.fd

    def _new_segment(self, area: _Area) -> _Segment:
        if area.fd is not None:
            os.close(area.fd)
            area.fd = None
        if not area.directory.is_dir():
            area.directory.mkdir(parents=True, exist_ok=True)
            fsync_dir(self.root)
        number = area.segments[-1].number + 1 if area.segments else 1
        seg = _Segment(number, area.directory / f"{number:012d}{_SUFFIX}")
        os.close(os.open(seg.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        fsync_dir(area.directory)
        area.segments.append(seg)
        return seg

    def _apply_cap(self, area: _Area) -> None:
        gone = False
        while area.size > self.options.cap_bytes and len(area.segments) > 1:
            seg = area.segments.pop(0)
            with self._pending_lock:  # `append` counts its drops from the loop's thread
                area.dropped += seg.entries
            seg.path.unlink(missing_ok=True)
            gone = True
        if gone:
            fsync_dir(area.directory)

    def delete_delivered(self, delivered: TraceDeliveredFn) -> int:
        """Delete, oldest first, segments all of whose lines are delivered; returns entries gone."""
        if self.read_only:
            raise StoreReadOnlyError(f"{self.root}: traces opened read-only; open them for writing")
        removed = 0
        with self._io_lock:
            for interface, area in self._areas.items():
                gone = False
                while area.segments:
                    seg = area.segments[0]
                    if seg.ts_max is not None and not delivered(interface, seg.ts_max):
                        break
                    if len(area.segments) == 1 and area.fd is not None:
                        os.close(area.fd)
                        area.fd = None
                    area.segments.pop(0)
                    seg.path.unlink(missing_ok=True)
                    removed += seg.entries
                    gone = True
                if gone:
                    fsync_dir(area.directory)
        return removed

    async def run(self) -> None:
        """Flush every `flush_s` off the event loop until cancelled (then flush once more)."""
        try:
            while True:
                await asyncio.sleep(self.options.flush_s)
                await asyncio.to_thread(self.flush)
        finally:
            if not self._closed:
                await asyncio.shield(asyncio.to_thread(self.flush))

    # ------------------------------------------------------------------ reading

    def entries(self, interface: str, *, start_ns: int | None = None,
                end_ns: int | None = None) -> list[TraceEntry]:
        """Committed entries with `start_ns <= ts < end_ns`, in time order (blocking)."""
        area = self._areas.get(interface)
        if area is None:
            raise UnknownTraceInterface(interface)
        out: list[TraceEntry] = []
        with self._io_lock:
            chosen = [(s.path, s.size) for s in area.segments
                      if s.ts_max is not None
                      and (start_ns is None or s.ts_max >= start_ns)
                      and (end_ns is None or s.ts_min is None or s.ts_min < end_ns)]
            chunks = []
            for seg_path, size in chosen:
                try:
                    with open(seg_path, "rb") as fh:
                        chunks.append(fh.read(size))
                except FileNotFoundError:
                    continue  # deleted by the cap between listing and reading
        for data in chunks:
            for _, _, body in _scan(data)[0]:
                entry = TraceEntry.from_json(interface, body.decode())
                if (start_ns is None or entry.ts_ns >= start_ns) and (
                        end_ns is None or entry.ts_ns < end_ns):
                    out.append(entry)
        out.sort(key=lambda e: e.ts_ns)  # stable: equal times keep their order of writing
        return out

    def interfaces(self) -> list[str]:
        """Interfaces holding committed traces, in upload order."""
        return [i for i in TRACE_INTERFACES if self._areas[i].segments
                and any(s.entries for s in self._areas[i].segments)]

    def oldest_ns(self) -> int | None:
        times = [s.ts_min for a in self._areas.values() for s in a.segments if s.ts_min is not None]
        return min(times) if times else None

    def stats(self, interface: str) -> TraceStats:
        area = self._areas.get(interface)
        if area is None:
            raise UnknownTraceInterface(interface)
        mins = [s.ts_min for s in area.segments if s.ts_min is not None]
        maxs = [s.ts_max for s in area.segments if s.ts_max is not None]
        return TraceStats(bytes=area.size, entries=sum(s.entries for s in area.segments),
                          segments=len(area.segments), dropped=area.dropped,
                          oldest_ns=min(mins) if mins else None,
                          newest_ns=max(maxs) if maxs else None)


def _entry_time(body: bytes) -> int:
    # `to_json` always writes the time first; parsing the whole line on open would cost 5x.
    if body.startswith(b'{"t":'):
        end = 5
        while end < len(body) and body[end] in b"-0123456789":
            end += 1
        return int(body[5:end])
    return int(json.loads(body)["t"])
