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
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import crc32c
import pyarrow as pa
import pyarrow.compute as pc

import fsio
from store._ipc import (
    CONTINUATION,
    DICTIONARY_MSG,
    DICTS_KEY,
    DICTS_PLACEHOLDER,
    EOS,
    RECORD_BATCH_MSG,
    SCHEMA_MSG,
    VARS_KEY,
    BatchFrame,
    FrameError,
    _Table,
    _u32,
    batch_metadata,
    frame_intact,
    read_batch,
    read_message,
    schema_message,
    seal_frames,
)
from store.schema import unknown_version

STREAM_SUFFIX: Final = ".arrows"
FILE_SUFFIX: Final = ".arrow"
UNCOMPRESSED_KEY: Final = b"sunpm.uncompressed_bytes"
SEQ_LAST_KEY: Final = b"sunpm.seq_last"  # in a sealed file's schema metadata: seq numbering
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
    # A sealed file's: (start, end) of its own schema message, None when that is damaged (its
    # batches are then decoded after the store's); where its dictionary messages lie when the
    # first frame, which carries them, failed but a later batch verified them (`DICTS_KEY`).
    schema_at: tuple[int, int] | None = None
    dicts: Region | None = None
    #: A sealed file's schema version when this reader does not know it (nothing decoded).
    unknown_version: str | None = None


Raw = bytes | bytearray | mmap.mmap
IPC_FILE_MAGIC: Final = b"ARROW1\x00\x00"  # the magic and its padding, before the first message


def scan_stream(data: Raw, schema: pa.Schema) -> Scan:
    """Walk a stream segment's bytes, verifying every batch's CRC; never raises for bad content.

    A segment's schema message is always the store's own, so one that differs is damage when
    trusted batches follow it (reported at offset 0; the batches are read, decoded with the
    store's schema message, `header_damaged`), and a file not ours when none do."""
    buf = memoryview(data)
    header = schema_message(schema)
    n = len(buf)
    if n < len(header):
        if bytes(buf) == header[:n]:
            # Torn while being created: the header itself is the tail.
            return Scan(header_ok=False, torn=Region(0, n) if n else None)
        return Scan(header_ok=False, foreign="does not start with the sunpm schema")
    if bytes(buf[: len(header)]) != header:
        scan = _walk(data, buf, len(header), file_format=False)
        if not scan.batches:
            return Scan(header_ok=False, foreign="does not start with the sunpm schema")
        if scan.damage and scan.damage[0].offset == len(header):
            scan.damage[0] = Region(0, len(header) + scan.damage[0].length)
        else:
            scan.damage.insert(0, Region(0, len(header)))
        return scan
    return _walk(data, buf, len(header), file_format=False)


def header_damaged(scan: Scan) -> bool:
    """Whether a stream segment's scan found its schema message damaged (its batches are then
    decoded with the store's own, not the file's)."""
    return bool(scan.damage) and scan.damage[0].offset == 0


def rescan_stream(data: Raw, schema: pa.Schema, known: list[BatchFrame] | None) -> Scan:
    """As `scan_stream`, cheaper when `known` frames were verified before in the same file:
    those are checked again by their CRC alone, and only the bytes after them are walked.
    Any of them changed: a full scan (which finds and reports the damage)."""
    if not known:
        return scan_stream(data, schema)
    buf = memoryview(data)
    header = schema_message(schema)
    if bytes(buf[: len(header)]) != header or not all(frame_intact(buf, f) for f in known):
        return scan_stream(data, schema)
    rest = _walk(data, buf, known[-1].end, file_format=False)
    rest.batches[:0] = known
    return rest


def scan_ipc_file(data: Raw, schema: pa.Schema) -> tuple[Scan, dict[bytes, bytes]]:
    """Walk a sealed `.arrow` segment (an IPC file written by `write_ipc_file`) like a stream:
    every batch CRC-verified, the footer not trusted (its offsets are not covered by a CRC).

    Also returns the schema metadata (quota size and summary, see `write_ipc_file`).

    A schema message that is not the store's, with trusted batches after it, is damage (as in
    a stream segment): the batches are decoded after the store's schema message, and the
    metadata is the footer's copy when that one is the store's schema and agrees with them,
    else what they show (their order). A damaged first frame, which carries the file's
    dictionaries, costs its own rows only when a later batch verifies the dictionaries
    (`DICTS_KEY`); when none can, no batch of the file can be decoded: all are damage.
    """
    buf = memoryview(data)
    if bytes(buf[: len(IPC_FILE_MAGIC)]) != IPC_FILE_MAGIC:
        return Scan(header_ok=False, foreign="not an Arrow IPC file"), {}
    start = len(IPC_FILE_MAGIC)
    try:
        msg = read_message(buf, start)
        if msg is None or msg.kind != SCHEMA_MSG:
            raise FrameError("no schema message")
    except FrameError as err:
        msg, why = None, f"unreadable schema message ({err})"
    meta = None if msg is None else _file_schema_metadata(schema, bytes(buf[msg.start : msg.end]))
    if msg is not None and meta is not None:
        scan = _walk(data, buf, msg.end, file_format=True)
        scan.schema_at = (msg.start, msg.end)
        if not _metadata_agrees(meta, scan, schema):
            # No CRC covers the schema message's metadata: a flip there that still parses is
            # caught by what the verified batches say (reported; the batches are still read).
            scan.damage.insert(0, Region(msg.start, msg.end - msg.start))
        _find_dictionaries(data, buf, scan, schema)
        return scan, meta
    if msg is not None:
        why = "not the sunpm schema"
    first = _resync(data, buf, start)
    if first is None:
        return Scan(header_ok=False, foreign=why), {}
    scan = _walk(data, buf, first, file_format=True)
    scan.damage.insert(0, Region(start, first - start))
    meta = _footer_metadata(data, scan, schema)
    _find_dictionaries(data, buf, scan, schema)
    return scan, meta


def _footer_metadata(data: Raw, scan: Scan, schema: pa.Schema) -> dict[bytes, bytes]:
    """The schema metadata of a file whose schema message is damaged: the footer's copy of the
    schema when it is the store's and agrees with the verified batches; else the store's
    with the order the batches show (each states its variable bounds, or none does)."""
    try:
        found = pa.ipc.open_file(pa.BufferReader(pa.py_buffer(data))).schema
        meta = _file_schema_metadata(schema, found.serialize().to_pybytes())
    except (pa.ArrowException, OSError):
        meta = None
    if meta is not None and _metadata_agrees(meta, scan, schema):
        return meta
    meta = dict(schema.metadata or {})
    if scan.batches and all(f.var_min is not None for f in scan.batches):
        meta[ORDER_KEY] = BY_VARIABLE
    return meta


def _find_dictionaries(data: Raw, buf: memoryview, scan: Scan, schema: pa.Schema) -> None:
    """When the first frame of a file (which carries its dictionaries) did not verify: the
    dictionary messages as a later verified batch states them (place and CRC-32C), if they
    match; else no batch can be decoded and all are damage."""
    if not scan.batches or not any(pa.types.is_dictionary(f.type) for f in schema):
        return
    try:
        first = read_message(buf, scan.batches[0].start)
    except FrameError:
        first = None
    if first is not None and first.kind == DICTIONARY_MSG:
        return  # the first frame verified: its dictionaries with it
    for frame in scan.batches:
        if frame.dicts is None:
            continue
        at, length, crc = frame.dicts
        if _dictionary_messages(buf, at, length, crc):
            scan.dicts = Region(at, length)
            return
    lost = Region(scan.batches[0].start, scan.batches[-1].end - scan.batches[0].start)
    scan.damage = sorted([*scan.damage, lost], key=lambda r: r.offset)
    scan.batches = []


def _dictionary_messages(buf: memoryview, at: int, length: int, crc: int) -> bool:
    """Whether `length` bytes at `at` match `crc` and hold dictionary messages only."""
    end = at + length
    if at < len(IPC_FILE_MAGIC) or length <= 0 or end > len(buf) \
            or crc32c.crc32c(buf[at:end]) != crc:
        return False
    pos = at
    try:
        while pos < end:
            msg = read_message(buf, pos)
            if msg is None or msg.kind != DICTIONARY_MSG:
                return False
            pos = msg.end
    except FrameError:
        return False
    return pos == end


def file_header(data: Raw, scan: Scan, schema: pa.Schema) -> tuple[int, int] | bytes:
    """What a sealed file's verified frames are decoded after (`decode_frames`' `header`): its
    schema message in place; or the store's when the file's is damaged, followed by the
    file's dictionaries when the first frame that carries them is not among the frames."""
    if scan.dicts is None and scan.schema_at is not None:
        return scan.schema_at
    if scan.schema_at is not None:
        head = bytes(data[scan.schema_at[0] : scan.schema_at[1]])
    else:
        head = schema_message(schema)
    if scan.dicts is not None:
        head += bytes(data[scan.dicts.offset : scan.dicts.offset + scan.dicts.length])
    return head


_FILE_KEYS: dict[int, frozenset[bytes]] = {}  # per schema (the two stream kinds'): a few


def _metadata_agrees(meta: dict[bytes, bytes], scan: Scan, schema: pa.Schema) -> bool:
    """Whether a sealed file's schema metadata agrees with its verified batches: only the keys
    `Stream.compact` writes, the layout it states with their variable bounds (every batch of a
    file in ranges of variables states them, no batch of another does), its last seq with
    theirs (equal when every batch verified; a damaged batch may have held later ones)."""
    known = _FILE_KEYS.get(id(schema))
    if known is None:
        known = _FILE_KEYS[id(schema)] = frozenset(
            {*(schema.metadata or {}), UNCOMPRESSED_KEY, SEQ_LAST_KEY, ORDER_KEY})
    if not meta.keys() <= known:
        return False
    if not scan.batches:
        return True
    order = meta.get(ORDER_KEY)
    if order not in (None, BY_VARIABLE):
        return False
    bounded = sum(f.var_min is not None for f in scan.batches)
    if bounded != (len(scan.batches) if order == BY_VARIABLE else 0):
        return False
    stated = meta.get(SEQ_LAST_KEY)
    if stated is None:
        return True
    if not stated.isdigit():
        return False
    last = max(f.seq_last for f in scan.batches)
    whole = scan.ended and not scan.damage and scan.torn is None
    return int(stated) == last if whole else int(stated) >= last


_FILE_SCHEMAS: dict[tuple[int, bytes], dict[bytes, bytes]] = {}


def _file_schema_metadata(schema: pa.Schema, message: bytes) -> dict[bytes, bytes] | None:
    """The metadata of an IPC file's schema message when the message is byte-identical to
    `schema` carrying that metadata (so a flip in a field's type or name, outside any batch's
    CRC, cannot change how the batches decode); None otherwise."""
    key = (id(schema), message)
    known = _FILE_SCHEMAS.get(key)
    if known is not None:
        return known
    try:
        found = pa.ipc.read_schema(pa.py_buffer(message))
    except (pa.ArrowException, OSError):
        # Damaged bytes fail in many ways (ArrowInvalid, ArrowNotImplementedError for a flipped
        # integer width, OSError for a bad flatbuffer): all mean not the store's schema.
        return None
    meta = dict(found.metadata or {})
    if schema.with_metadata(meta).serialize().to_pybytes() != message:
        return None
    if len(_FILE_SCHEMAS) > 4096:  # one entry per distinct quota size: bounded all the same
        _FILE_SCHEMAS.clear()
    _FILE_SCHEMAS[key] = meta
    return meta


def _walk(data: Raw, buf: memoryview, pos: int, *, file_format: bool) -> Scan:
    """Trusted batches from `pos` (just after the schema message) on.

    A stream ends at its end-of-stream marker only if nothing follows it; a file's marker is
    followed by its footer.
    """
    n = len(buf)
    scan = Scan(header_ok=True, good_end=pos)
    while pos < n:
        try:
            frame = read_batch(buf, pos)
        except FrameError:
            frame = None
        else:
            if frame is None and (file_format or pos + len(EOS) == n):
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
            if read_batch(buf, pos) is not None:
                return pos
        except FrameError:
            pass  # not a batch start; keep looking
        pos += 1


def decode_frames(buf: memoryview | pa.Buffer, schema: pa.Schema, frames: list[BatchFrame], *,
                  header: tuple[int, int] | bytes | None = None, combine: bool = True,
                  columns: list[int] | None = None) -> list[pa.RecordBatch]:
    """Decode trusted frames into record batches (zero-copy when they are contiguous).

    `header`: (start, end) of the schema message inside `buf` (an IPC file's, which carries
    metadata), or the bytes to decode the frames after (`file_prefix`); default: `schema`'s
    own message at offset 0 (a stream segment). `combine`: one
    batch for all of them (a live segment's many small ones), else as written. `columns`: the
    indexes of the only fields decoded (and decompressed), in schema order; default all.
    """
    if not frames:
        return []
    pabuf = buf if isinstance(buf, pa.Buffer) else pa.py_buffer(buf)
    if header is None:
        header = (0, len(schema_message(schema)))
    contiguous = all(a.end == b.start for a, b in itertools.pairwise(frames))
    if isinstance(header, tuple) and contiguous and frames[0].start == header[1]:
        source = pabuf.slice(header[0], frames[-1].end - header[0])
    else:
        parts = [header if isinstance(header, bytes)
                 else pabuf.slice(header[0], header[1] - header[0]).to_pybytes()]
        parts += [pabuf.slice(f.start, f.end - f.start).to_pybytes() for f in frames]
        source = pa.py_buffer(b"".join(parts))
    # One thread: callers decode many small segments, and the pool's per-buffer tasks cost more
    # than they save (measured: a 3-column scan 2.5x slower with them on 2 cores).
    options = pa.ipc.IpcReadOptions(included_fields=columns or None, use_threads=False)
    table = pa.ipc.open_stream(pa.BufferReader(source), options=options).read_all()
    if table.num_rows == 0:
        return []
    if not combine:
        as_written: list[pa.RecordBatch] = table.to_batches()
        return as_written
    # One batch per segment: a live segment holds one small batch per commit, and per-batch
    # costs downstream (concatenation, scans) dwarf this one merge in C++.
    merged: list[pa.RecordBatch] = table.combine_chunks().to_batches()
    return merged


#: Schema metadata of a sealed records file whose rows are ordered by variable, then record
#: (`write_ipc_file`); absent: in record order, as appended.
ORDER_KEY: Final = b"sunpm.row_order"
BY_VARIABLE: Final = b"var-ranges"
#: A range of variables closes once it holds this many variables and rows: few enough that a
#: query of one variable decodes a small part of a day, enough that a record's time stamp and
#: seq still repeat down the range (zstd's ratio) and that a batch's own cost (metadata, walk,
#: a zstd frame a buffer) stays small beside its rows.
RANGE_VARIABLES: Final = 25
RANGE_ROWS: Final = 4096
#: Events a batch of a sealed journal file: a damaged batch costs its events, and a day of the
#: journal in one batch (up to 65,536 events) lost every window, delivery and `state` event of
#: the day to one flipped byte. Each batch costs ~1 KiB of its own (metadata, a zstd frame a
#: buffer), ~1 % of a full one; its verified time bounds also let readers skip it.
JOURNAL_BATCH_ROWS: Final = 1024


def write_ipc_file(path: Path, table: pa.Table, schema: pa.Schema, *, compress: bool,
                   chunk_rows: int = 65_536, by_variable: bool = False,
                   alone: pa.ChunkedArray | None = None) -> None:
    """Write `table` as an Arrow IPC file of self-verifying batches, fsynced (not its entry).

    Each batch carries the `sunpm.batch` metadata of a framed batch (store/_ipc.py); the
    dictionaries (unified, written once in a file) are covered by the first batch's CRC. Any
    Arrow reader still opens the file by its footer.

    `by_variable` (records): the variables are split in ranges (`RANGE_VARIABLES`,
    `RANGE_ROWS`), and each range written as batches of its own, its rows in record order, each batch
    stating its `var` bounds (`VARS_KEY`, under the batch's CRC); the schema metadata says so
    (`ORDER_KEY`). A scan filtering on variables decodes only the batches that can hold them,
    and `in_record_order` gives the rows of several batches back exactly as appended. Only rows
    appended in (seq, var) order are written so (sorting back is then exact); others are kept
    as they are.

    `alone` (not with `by_variable`): a boolean per row, true for a row written as a batch of
    its own (the journal's `state` events: two of them never share a batch, so one damaged
    batch cannot take both, docs/spec-notes.md *Journal deletion*).
    """
    table = table.cast(schema).combine_chunks()
    cuts: list[tuple[int, int]]
    if by_variable and table.num_rows and _in_seq_var_order(table):
        schema = schema.with_metadata({**(schema.metadata or {}), ORDER_KEY: BY_VARIABLE})
        group = _variable_groups(table.column("var"))
        order = pc.sort_indices(group)  # stable: within a group, rows stay in (seq, var) order
        table = table.cast(schema).take(order).combine_chunks()
        cuts = _runs(pc.take(group, order), chunk_rows)
    else:
        by_variable = False
        bounds = [0, table.num_rows]
        if alone is not None:
            rows = pc.indices_nonzero(pc.fill_null(alone, False)).to_pylist()
            bounds += [*rows, *(row + 1 for row in rows)]
        edges = sorted(set(bounds))
        cuts = [(start, min(start + chunk_rows, stop)) for begin, stop in itertools.pairwise(edges)
                for start in range(begin, stop, chunk_rows)]
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="zstd" if compress else None)
    with pa.ipc.new_file(sink, schema, options=options) as writer:
        for start, stop in cuts:
            batch = table.slice(start, stop - start).to_batches()[0]
            seq = batch.column("seq")
            ts = batch.column("ts").cast(pa.int64())
            bounds = pc.min_max(ts)
            seq_bounds = pc.min_max(seq)
            meta = batch_metadata(
                batch.num_rows, int(seq_bounds["min"].as_py()), int(seq_bounds["max"].as_py()),
                int(bounds["min"].as_py()), int(bounds["max"].as_py()))
            if by_variable:
                var_bounds = pc.min_max(batch.column("var"))
                meta[VARS_KEY] = f"{var_bounds['min'].as_py()} {var_bounds['max'].as_py()}"
            if start:
                meta[DICTS_KEY] = DICTS_PLACEHOLDER  # filled in by `seal_frames`
            writer.write_batch(batch, custom_metadata=meta)
    data = bytearray(sink.getvalue().to_pybytes())
    first = read_message(memoryview(data), len(IPC_FILE_MAGIC))
    assert first is not None
    seal_frames(data, first.end)
    fd = fsio.open_new(path)
    try:
        fsio.pwrite_all(fd, data, 0)
        fsio.fsync(fd)
    finally:
        fsio.close(fd)


def _in_seq_var_order(table: pa.Table) -> bool:
    """Whether the rows are ordered by (seq, var): then the stable sort by seq of their ranges
    (`in_record_order`) gives them back as they are, byte for byte."""
    if table.num_rows < 2:
        return True
    seq, var = table.column("seq"), table.column("var")
    n = table.num_rows - 1
    seq_a, seq_b, var_a, var_b = seq.slice(0, n), seq.slice(1), var.slice(0, n), var.slice(1)
    ordered = pc.or_(pc.less(seq_a, seq_b),
                     pc.and_(pc.equal(seq_a, seq_b), pc.less_equal(var_a, var_b)))
    return bool(pc.all(ordered).as_py())


def _variable_groups(var: pa.ChunkedArray) -> pa.Array:
    """Each row's range of variables: ascending, a range closed once it holds
    `RANGE_VARIABLES` variables and `RANGE_ROWS` rows."""
    counts = pc.value_counts(var)
    found = sorted(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(),
                       strict=True))
    numbers = []
    group = variables = rows = 0
    for _, count in found:
        numbers.append(group)
        variables += 1
        rows += count
        if variables >= RANGE_VARIABLES and rows >= RANGE_ROWS:
            group, variables, rows = group + 1, 0, 0
    index = pc.index_in(var, value_set=pa.array([v for v, _ in found], var.type))
    grouped: pa.Array = pc.take(pa.array(numbers, pa.int32()), index)
    return grouped


def _runs(values: pa.Array | pa.ChunkedArray, chunk_rows: int) -> list[tuple[int, int]]:
    """(start, stop) of each run of equal `values`, runs longer than `chunk_rows` cut."""
    n = len(values)
    changes: list[int] = []
    if n > 1:
        # One chunk, and never a comparison of empty chunked arrays: pyarrow 19 crashes on it.
        whole = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        changes = pc.indices_nonzero(pc.not_equal(whole.slice(1), whole.slice(0, n - 1))
                                     ).to_pylist()
    cuts: list[tuple[int, int]] = []
    begin = 0
    for stop in [*(int(i) + 1 for i in changes), n]:
        cuts.extend((at, min(at + chunk_rows, stop)) for at in range(begin, stop, chunk_rows))
        begin = stop
    return cuts


def by_variable(meta: dict[bytes, bytes]) -> bool:
    """Whether a sealed file's schema metadata says its rows are ordered by variable."""
    return meta.get(ORDER_KEY) == BY_VARIABLE


def in_record_order(table: pa.Table) -> pa.Table:
    """Rows of a file ordered by variable (or any subset of them, its batches in file order)
    back in the order they were appended: a stable sort by seq alone. The ranges come in
    ascending variable order, each in (seq, var) order, so for each seq the stable sort lists
    its rows by range, then within the range by var: (seq, var) order, as appended (see
    `write_ipc_file`). One integer key sorts ~2x faster than two."""
    ordered: pa.Table = table.take(pc.sort_indices(table.column("seq")))
    return ordered


def map_file(path: Path) -> Raw:
    """A file's bytes, memory-mapped (read-only) unless empty."""
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return b""
        return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)


def read_ipc_file(path: Path, schema: pa.Schema, columns: list[int] | None = None
                  ) -> tuple[list[pa.RecordBatch], dict[bytes, bytes], Scan]:
    """Verified batches of a sealed `.arrow` segment (zero-copy over a memory map; `columns`:
    only those fields decoded), its schema metadata and what the walk found (damage, a torn
    end, not ours)."""
    data = map_file(path)
    scan, meta = scan_ipc_file(data, schema)
    if not scan.header_ok:
        return [], meta, scan
    scan.unknown_version = unknown_version(meta)
    if scan.unknown_version is not None:
        return [], meta, scan
    header = file_header(data, scan, schema)
    if not by_variable(meta):
        batches = decode_frames(pa.py_buffer(data), schema, scan.batches,
                                header=header, combine=False, columns=columns)
        return batches, meta, scan
    keys = [schema.get_field_index("seq"), schema.get_field_index("var")]
    wanted = list(range(len(schema))) if columns is None else columns
    decoded = decode_frames(pa.py_buffer(data), schema, scan.batches,
                            header=header, combine=False, columns=sorted({*wanted, *keys}))
    if not decoded:
        return [], meta, scan
    table = in_record_order(pa.Table.from_batches(decoded))
    names = [schema.field(i).name for i in wanted]
    return table.select(names).combine_chunks().to_batches(), meta, scan



_BLOCK = struct.Struct("<qi4xq")  # Block {offset: long; metaDataLength: int; bodyLength: long}
_FILE_TRAILER: Final = b"ARROW1"


def footer_matches(data: Raw, scan: Scan, schema: pa.Schema) -> bool:
    """Whether a sealed file's footer, which no CRC covers, lists exactly the messages of the
    batches `scan` verified (dictionaries, then record batches, same offsets and lengths) under
    `schema` (with the file's metadata): then a reader that follows the footer (a
    `pyarrow.dataset` scan, which decodes only the columns a query asks for) reads verified
    bytes only, and decodes them as the walk did."""
    buf = memoryview(data)
    n = len(buf)
    if not scan.ended or scan.damage or scan.torn is not None or n < 16 \
            or bytes(buf[n - len(_FILE_TRAILER):]) != _FILE_TRAILER:
        return False
    try:
        footer_len = int(struct.unpack_from("<i", buf, n - 10)[0])
        footer_start = n - 10 - footer_len
        if footer_len <= 0 or footer_start < scan.good_end:
            return False
        root = _Table(buf[footer_start : n - 10], _u32(buf[footer_start : n - 10], 0))
        listed = [_blocks(root, 2), _blocks(root, 3)]
        written: list[list[tuple[int, int, int]]] = [[], []]
        for frame in scan.batches:
            pos = frame.start
            while pos < frame.end:
                msg = read_message(buf, pos)
                if msg is None:
                    return False
                written[msg.kind == RECORD_BATCH_MSG].append(
                    (msg.start, msg.body_start - msg.start, msg.body_len))
                pos = msg.end
        if listed != written or not _same_schema(buf, root):
            return False
        found = pa.ipc.open_file(pa.BufferReader(pa.py_buffer(data))).schema
    except (FrameError, struct.error, pa.ArrowException, OSError):
        return False
    return bool(found.equals(schema, check_metadata=True))


def _same_schema(buf: memoryview, footer: _Table) -> bool:
    """Whether the footer's schema is byte for byte the file's schema message's (which the walk
    compared with the store's). Both are built first in their flatbuffer, so the schema table
    and everything under it are the same bytes at the end of each; its own vtable lies before
    it. Comparing the parsed schemas is not enough: they compare equal with a dictionary id
    changed, and a reader following such a footer decodes one column's values with another's
    dictionary, or out of bounds."""
    msg = read_message(buf, len(IPC_FILE_MAGIC))
    if msg is None:
        return False
    meta = buf[msg.start + 8 : msg.body_start]
    ours = _Table(meta, _u32(meta, 0)).table(2)
    theirs = footer.table(1)
    if ours is None or theirs is None:
        return False
    tail = theirs.buf[theirs.pos:]
    expected = ours.buf[ours.pos:]
    return (ours.vt_len == theirs.vt_len
            and ours.buf[ours.vt : ours.vt + ours.vt_len] == theirs.buf[theirs.vt : theirs.vt
                                                                        + theirs.vt_len]
            and expected[: len(tail)] == tail and not any(expected[len(tail):]))


def _blocks(root: _Table, index: int) -> list[tuple[int, int, int]]:
    vec = root.vector(index)
    if vec is None:
        return []
    first, count = vec
    if first + _BLOCK.size * count > len(root.buf):
        raise FrameError("footer block vector out of range")
    return [_BLOCK.unpack_from(root.buf, first + _BLOCK.size * i) for i in range(count)]


@dataclass(frozen=True, slots=True)
class CheckedFile:
    """A sealed file as a full walk verified it: its contiguous frames (CRC-checked again on
    each read) and the bytes around them, compared as they are (schema message; end marker and
    footer), so a later read checks every byte without parsing any."""

    size: int
    frames: list[BatchFrame]
    head: bytes
    tail: bytes


def checked_file(data: Raw, scan: Scan) -> CheckedFile:
    start = scan.batches[0].start if scan.batches else scan.good_end
    return CheckedFile(len(data), scan.batches, bytes(data[:start]), bytes(data[scan.good_end:]))


def still_verified(data: Raw, checked: CheckedFile) -> bool:
    """Whether `data` holds exactly the bytes `checked` was made from (every frame by its CRC)."""
    buf = memoryview(data)
    if len(buf) != checked.size or buf[: len(checked.head)] != checked.head \
            or buf[len(buf) - len(checked.tail):] != checked.tail:
        return False
    return all(frame_intact(buf, frame) for frame in checked.frames)
