"""Segment files: naming, scanning (torn tail vs damage) and decoding of trusted batches.

    <stream dir>/<seq0>.arrows   open or sealed segment: Arrow IPC stream
                                 = schema message, framed batches (store/_ipc.py), [end marker]
    <stream dir>/<seq0>.arrow    sealed segment rewritten as an Arrow IPC file (optionally zstd);
                                 schema metadata `sunpm.uncompressed_bytes` = size as first written
                                 (informative: the quota counts the file as it is on flash)

`seq0` is the first sequence number the segment holds (or will hold), in decimal.

Invariants: batches are only ever appended after the last trusted one; bytes after the last
trusted batch with no trusted batch after them are a torn tail; a bad region followed by a trusted
batch is damage and stays in place (reported, skipped).
"""

from __future__ import annotations

import itertools
import mmap
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pyarrow as pa

from store._ipc import CONTINUATION, EOS, BatchFrame, FrameError, read_batch, schema_message

STREAM_SUFFIX: Final = ".arrows"
FILE_SUFFIX: Final = ".arrow"
UNCOMPRESSED_KEY: Final = b"sunpm.uncompressed_bytes"
_NAME = re.compile(r"^(\d{1,20})\.(arrows|arrow)$")


def parse_name(name: str) -> tuple[int, bool] | None:
    """(seq0, is_ipc_file) for a segment file name, None for anything else."""
    m = _NAME.match(name)
    if m is None:
        return None
    return int(m.group(1)), m.group(2) == "arrow"


def segment_name(seq0: int, *, ipc_file: bool = False) -> str:
    return f"{seq0}{FILE_SUFFIX if ipc_file else STREAM_SUFFIX}"


@dataclass(frozen=True, slots=True)
class Region:
    offset: int
    length: int


@dataclass(slots=True)
class Scan:
    """What a walk over a stream segment found."""

    header_ok: bool  # starts with our schema message
    foreign: str = ""  # why the file is not ours, when it is not
    batches: list[BatchFrame] = field(default_factory=list)
    damage: list[Region] = field(default_factory=list)
    torn: Region | None = None
    ended: bool = False  # an end-of-stream marker closes it: sealed
    good_end: int = 0  # end of the last trusted batch (or of the schema message)


Raw = bytes | bytearray | mmap.mmap


def scan_stream(data: Raw, schema: pa.Schema, *, verify: bool = True,
                verify_last: bool = False) -> Scan:
    """Walk a stream segment's bytes; never raises for bad content.

    `verify`: check every batch's CRC. `verify_last` (with verify=False): check only the last
    batch's, which is where a torn write can be (read-only opens; full checks are `fsck`'s).
    """
    scan = _walk(data, schema, verify=verify)
    if verify_last and not verify and scan.batches and scan.torn is None and not scan.ended:
        last = scan.batches[-1]
        try:
            read_batch(memoryview(data), last.start, verify=True)
        except FrameError:
            scan.batches.pop()
            scan.torn = Region(last.start, len(data) - last.start)
            scan.good_end = last.start
    return scan


def _walk(data: Raw, schema: pa.Schema, *, verify: bool) -> Scan:
    buf = memoryview(data)
    header = schema_message(schema)
    n = len(buf)
    if n < len(header):
        if bytes(buf) == header[:n]:
            # Torn while being created: the header itself is the tail.
            return Scan(header_ok=False, torn=Region(0, n) if n else None)
        return Scan(header_ok=False, foreign="does not start with the sunpm schema")
    if bytes(buf[: len(header)]) != header:
        return Scan(header_ok=False, foreign="does not start with the sunpm schema")
    scan = Scan(header_ok=True, good_end=len(header))
    pos = len(header)
    while pos < n:
        try:
            frame = read_batch(buf, pos, verify=verify)
        except FrameError:
            frame = None
        else:
            if frame is None and pos + len(EOS) == n:
                scan.ended = True
                return scan
        if frame is None:
            # A batch that fails its checks, or an end marker with bytes after it (not ours to
            # interpret): resynchronise at the next trusted batch, else it is a torn tail.
            nxt = _resync(data, buf, pos + 1)
            if nxt is None:
                scan.torn = Region(pos, n - pos)
                return scan
            scan.damage.append(Region(pos, nxt - pos))
            pos = nxt
            continue
        scan.batches.append(frame)
        pos = frame.end
        scan.good_end = pos
    return scan


def _resync(data: Raw, buf: memoryview, start: int) -> int | None:
    """Offset of the next trusted batch at or after `start` (found by its continuation marker)."""
    pos = start
    while True:
        pos = data.find(CONTINUATION, pos)
        if pos < 0:
            return None
        try:
            if read_batch(buf, pos, verify=True) is not None:
                return pos
        except FrameError:
            pass  # not a batch start; keep looking
        pos += 1


def decode_frames(buf: memoryview | pa.Buffer, schema: pa.Schema, frames: list[BatchFrame]
                  ) -> list[pa.RecordBatch]:
    """Decode trusted frames into record batches (zero-copy when they are contiguous)."""
    if not frames:
        return []
    header = schema_message(schema)
    pabuf = buf if isinstance(buf, pa.Buffer) else pa.py_buffer(buf)
    contiguous = all(a.end == b.start for a, b in itertools.pairwise(frames))
    if contiguous and frames[0].start == len(header):
        source = pabuf.slice(0, frames[-1].end)
    else:
        parts = [header] + [pabuf.slice(f.start, f.end - f.start).to_pybytes() for f in frames]
        source = pa.py_buffer(b"".join(parts))
    table = pa.ipc.open_stream(pa.BufferReader(source)).read_all()
    if table.num_rows == 0:
        return []
    # One batch per segment: a live segment holds one small batch per commit, and per-batch
    # costs downstream (concatenation, scans) dwarf this one merge in C++.
    merged: list[pa.RecordBatch] = table.combine_chunks().to_batches()
    return merged


def read_ipc_file(path: Path) -> tuple[list[pa.RecordBatch], dict[bytes, bytes]]:
    """Batches of a sealed `.arrow` segment (zero-copy over a memory map) and its metadata."""
    source = pa.memory_map(str(path))
    reader = pa.ipc.open_file(source)
    meta = dict(reader.schema.metadata or {})
    batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
    return batches, meta
