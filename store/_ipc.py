"""Arrow IPC framing at the byte level: self-verifying batches and a tolerant message walker.

Why our own walker: the Arrow reader alone reads a zero-filled or bit-flipped tail back as a
plausible batch (docs/architecture.md §3), and it cannot resume after a damaged message. Walking the
messages ourselves gives byte offsets for reports, lets recovery resynchronise on the next
continuation marker, and costs no decoding.

One framed batch (what a commit appends to a segment):

    [dictionary message]*        one per dictionary column (a replacement: each batch carries its own)
    record batch message         custom metadata, one key (one key to parse per batch keeps
                                 recovery fast), space-separated decimal fields:
        sunpm.batch = "<crc32c> <body_len> <rows> <seq_first> <seq_last> <ts_min> <ts_max>"
            crc32c      10 digits: CRC-32C of every byte of the framed batch, the messages'
                        metadata included, with these 10 digits read as "0000000000"
            body_len    16 digits: bytes of the message bodies (dictionaries + batch)
            rows        row count
            seq_first, seq_last, ts_min, ts_max   indexes for readers (covered by the CRC)

The CRC covers the flatbuffer metadata as well as the bodies: a flipped buffer offset or row count
would otherwise decode into a wrong batch, or an error, with a matching body checksum.

A message: 0xFFFFFFFF, int32 metadata length, flatbuffer `Message`, body. End of stream: 0xFFFFFFFF
followed by int32 0.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

import crc32c as _crc
import pyarrow as pa

CONTINUATION: Final = b"\xff\xff\xff\xff"
EOS: Final = CONTINUATION + b"\x00\x00\x00\x00"

SCHEMA_MSG: Final = 1
DICTIONARY_MSG: Final = 2
RECORD_BATCH_MSG: Final = 3

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_I64 = struct.Struct("<q")

# Metadata bigger than this is not one of ours (a 9-column batch needs well under 4 KiB); the bound
# keeps a garbage length from sending the walker far away.
_MAX_METADATA: Final = 1 << 20
_MAX_BODY: Final = 1 << 34
_CRC_DIGITS: Final = 10
_CRC_ZERO: Final = b"0" * _CRC_DIGITS
_LEN_DIGITS: Final = 16
BATCH_KEY: Final = "sunpm.batch"
#: A record batch's `var` bounds, "<min> <max>", beside `BATCH_KEY` and covered by the same CRC
#: (sealed files ordered by variable, store/_segment.py).
VARS_KEY: Final = "sunpm.vars"
#: In a sealed file, every record batch after the first: "<offset> <length> <crc32c>" of the
#: file's dictionary messages (which the first frame carries, under its CRC), covered by this
#: batch's CRC. When the first frame is damaged, its dictionaries are still verified by it and
#: the later batches decoded with them; without it, one flipped byte in the first batch lost
#: every row of the file.
DICTS_KEY: Final = "sunpm.dicts"
_DICTS_DIGITS: Final = (16, 16, _CRC_DIGITS)
DICTS_PLACEHOLDER: Final = " ".join("0" * n for n in _DICTS_DIGITS)


class FrameError(Exception):
    """Bytes that are not a well-formed message (internal: callers turn it into a report)."""


class Message(NamedTuple):
    start: int
    end: int  # first byte after the body
    kind: int  # SCHEMA_MSG, DICTIONARY_MSG, RECORD_BATCH_MSG or other header types
    body_start: int
    body_len: int
    rows: int  # record batch length (0 for other messages)
    custom: dict[str, str]
    value_pos: dict[str, int]  # absolute offset of each custom metadata value's bytes


def _u32(buf: memoryview, pos: int) -> int:
    if pos < 0 or pos + 4 > len(buf):
        raise FrameError("offset out of range")
    return int(_U32.unpack_from(buf, pos)[0])


class _Table:
    """Minimal bounds-checked flatbuffer table reader."""

    __slots__ = ("buf", "pos", "vt", "vt_len")

    def __init__(self, buf: memoryview, pos: int) -> None:
        if pos < 0 or pos + 4 > len(buf):
            raise FrameError("table out of range")
        self.buf = buf
        self.pos = pos
        self.vt = pos - int(_I32.unpack_from(buf, pos)[0])
        if self.vt < 0 or self.vt + 4 > len(buf):
            raise FrameError("vtable out of range")
        self.vt_len = int(_U16.unpack_from(buf, self.vt)[0])
        if self.vt_len < 4 or self.vt + self.vt_len > len(buf):
            raise FrameError("bad vtable")

    def _field(self, index: int) -> int:
        off = 4 + 2 * index
        if off + 2 > self.vt_len:
            return 0
        rel = int(_U16.unpack_from(self.buf, self.vt + off)[0])
        return 0 if rel == 0 else self.pos + rel

    def u8(self, index: int) -> int:
        p = self._field(index)
        if not p:
            return 0
        if p >= len(self.buf):
            raise FrameError("field out of range")
        return self.buf[p]

    def i64(self, index: int) -> int:
        p = self._field(index)
        if not p:
            return 0
        if p + 8 > len(self.buf):
            raise FrameError("field out of range")
        return int(_I64.unpack_from(self.buf, p)[0])

    def table(self, index: int) -> _Table | None:
        p = self._field(index)
        return None if not p else _Table(self.buf, p + _u32(self.buf, p))

    def vector(self, index: int) -> tuple[int, int] | None:
        """(first element position, length) of a vector field."""
        p = self._field(index)
        if not p:
            return None
        target = p + _u32(self.buf, p)
        n = _u32(self.buf, target)
        if target + 4 + 4 * n > len(self.buf):
            raise FrameError("vector out of range")
        return target + 4, n

    def string(self, index: int) -> tuple[str, int]:
        """The string field and the offset of its bytes."""
        p = self._field(index)
        if not p:
            return "", 0
        target = p + _u32(self.buf, p)
        n = _u32(self.buf, target)
        if target + 4 + n > len(self.buf):
            raise FrameError("string out of range")
        try:
            return bytes(self.buf[target + 4 : target + 4 + n]).decode(), target + 4
        except UnicodeDecodeError as err:
            raise FrameError("bad string") from err


_SLOTS = [struct.Struct(f"<{n}H") for n in range(6)]


_PREFIX = struct.Struct("<4si")


def read_message(buf: memoryview, pos: int) -> Message | None:
    """The message at `pos`; None at an end-of-stream marker. Raises FrameError on anything else.

    The `Message` table is read inline (every read-only open and cold scan walks each batch of
    a segment through here); every offset is bounds-checked against the metadata."""
    if pos < 0 or pos + 8 > len(buf):
        raise FrameError("truncated message prefix")
    marker, meta_len = _PREFIX.unpack_from(buf, pos)
    if marker != CONTINUATION:
        raise FrameError("no continuation marker")
    if meta_len == 0:
        return None
    if meta_len < 0 or meta_len > _MAX_METADATA or meta_len % 8:
        raise FrameError("bad metadata length")
    meta_start = pos + 8
    body_start = meta_start + meta_len
    if body_start > len(buf):
        raise FrameError("truncated metadata")
    meta = buf[meta_start:body_start]
    try:
        root = _U32.unpack_from(meta, 0)[0]
        vtable, vt_len = _vtable(meta, root, meta_len)
        # Message fields: version, header_type (1), header (2), bodyLength (3), custom_metadata (4).
        present = min(5, (vt_len - 4) // 2)
        slots = (*_SLOTS[present].unpack_from(meta, vtable + 4), 0, 0, 0, 0, 0)
        kind = meta[root + slots[1]] if slots[1] else 0
        body_len = _I64.unpack_from(meta, root + slots[3])[0] if slots[3] else 0
    except struct.error as err:
        raise FrameError("message table out of range") from err
    except IndexError as err:
        raise FrameError("field out of range") from err
    if slots[3] and root + slots[3] + 8 > meta_len:
        raise FrameError("field out of range")
    if body_len < 0 or body_len > _MAX_BODY or body_len % 8:
        raise FrameError("bad body length")
    end = body_start + body_len
    if end > len(buf):
        raise FrameError("truncated body")
    rows = 0
    if kind == RECORD_BATCH_MSG:
        if not slots[2]:
            raise FrameError("record batch without header")
        rows = _rows(meta, root + slots[2], meta_len)
    custom: dict[str, str] = {}
    value_pos: dict[str, int] = {}
    if slots[4]:
        at = root + slots[4]
        target = at + _u32(meta, at)
        count = _u32(meta, target)
        if target + 4 + 4 * count > meta_len:
            raise FrameError("vector out of range")
        try:
            _key_values(meta, target + 4, count, meta_start, custom, value_pos)
        except (struct.error, UnicodeDecodeError) as err:
            raise FrameError("bad custom metadata") from err
    return Message(pos, end, kind, body_start, body_len, rows, custom, value_pos)


def _vtable(meta: memoryview, table: int, size: int) -> tuple[int, int]:
    """The position and length of the vtable of the flatbuffer table at `table`, checked to lie
    within the `size` bytes of metadata."""
    if table + 4 > size:
        raise FrameError("table out of range")
    vtable = table - _I32.unpack_from(meta, table)[0]
    if vtable < 0 or vtable + 4 > size:
        raise FrameError("vtable out of range")
    vt_len = _U16.unpack_from(meta, vtable)[0]
    if vt_len < 4 or vtable + vt_len > size:
        raise FrameError("bad vtable")
    return vtable, vt_len


def _rows(meta: memoryview, at: int, size: int) -> int:
    """The `length` (field 0) of the RecordBatch table the offset at `at` points to, as
    `_Table(...).i64(0)` reads it, without building a `_Table` (a walk reads it from every
    batch)."""
    if at < 0 or at + 4 > size:
        raise FrameError("offset out of range")
    table = at + _U32.unpack_from(meta, at)[0]
    vtable, vt_len = _vtable(meta, table, size)
    if vt_len < 6:
        return 0
    rel = _U16.unpack_from(meta, vtable + 4)[0]
    if not rel:
        return 0
    if table + rel + 8 > size:
        raise FrameError("field out of range")
    return int(_I64.unpack_from(meta, table + rel)[0])


_KV_VTABLE = struct.Struct("<HHHH")


def _key_values(meta: memoryview, first: int, n: int, meta_start: int, custom: dict[str, str],
                value_pos: dict[str, int]) -> None:
    """Custom metadata KeyValue tables, inlined: recovery walks every batch of a segment, and
    this loop is most of its cost (store_open benchmark)."""
    size = len(meta)
    u32 = _U32.unpack_from
    for i in range(n):
        p = first + 4 * i
        table = p + u32(meta, p)[0]
        vtable = table - _I32.unpack_from(meta, table)[0]
        if vtable < 0 or vtable + 8 > size:
            raise FrameError("vtable out of range")
        vt_len, _, off_key, off_value = _KV_VTABLE.unpack_from(meta, vtable)
        if vt_len < 8 or not off_key or not off_value:
            raise FrameError("bad key-value table")
        kp = table + off_key
        kp += u32(meta, kp)[0]
        kn = u32(meta, kp)[0]
        vp = table + off_value
        vp += u32(meta, vp)[0]
        vn = u32(meta, vp)[0]
        if kp + 4 + kn > size or vp + 4 + vn > size:
            raise FrameError("string out of range")
        key = str(meta[kp + 4 : kp + 4 + kn], "utf-8")
        custom[key] = str(meta[vp + 4 : vp + 4 + vn], "utf-8")
        value_pos[key] = meta_start + vp + 4


class BatchFrame(NamedTuple):
    """A framed batch as found in a segment: byte range and the facts its metadata states."""

    start: int
    end: int
    rows: int
    seq_first: int
    seq_last: int
    ts_min: int
    ts_max: int
    crc: int  # the CRC-32C it was verified against
    crc_at: int  # offset of that CRC's 10 digits
    # The batch's smallest and largest `var` (records in a sealed file ordered by variable,
    # `VARS_KEY`); None when the batch does not state them.
    var_min: int | None = None
    var_max: int | None = None
    # Where the file's dictionary messages lie and their CRC-32C (`DICTS_KEY`): (offset,
    # length, crc); None when the batch does not state them.
    dicts: tuple[int, int, int] | None = None


def frame_intact(buf: memoryview, frame: BatchFrame) -> bool:
    """Whether a frame verified earlier still holds the same bytes: its CRC alone, no parsing
    (the CRC covers every byte of the frame, so unchanged bytes mean the same trusted batch)."""
    if frame.end > len(buf):
        return False
    crc = _crc.crc32c(buf[frame.start : frame.crc_at])
    crc = _crc.crc32c(_CRC_ZERO, crc)
    crc = _crc.crc32c(buf[frame.crc_at + _CRC_DIGITS : frame.end], crc)
    return bool(crc == frame.crc)


def read_batch(buf: memoryview, pos: int) -> BatchFrame | None:
    """The framed batch starting at `pos` (its dictionaries, then its record batch).

    None at end of stream. Raises FrameError when the bytes do not hold a batch that is trusted:
    row count, body length and CRC-32C all as its metadata says.
    """
    covered = 0
    p = pos
    while True:
        msg = read_message(buf, p)
        if msg is None:
            if p != pos:
                raise FrameError("end of stream inside a batch")
            return None
        covered += msg.body_len
        p = msg.end
        if msg.kind == DICTIONARY_MSG:
            continue
        if msg.kind != RECORD_BATCH_MSG:
            raise FrameError("unexpected message type")
        try:
            fields = msg.custom[BATCH_KEY].split(" ")
            crc_text = fields[0]
            want_crc, want_len, want_rows, seq_first, seq_last, ts_min, ts_max = map(int, fields)
            var_min: int | None = None
            var_max: int | None = None
            if VARS_KEY in msg.custom:
                var_min, var_max = map(int, msg.custom[VARS_KEY].split(" "))
            dicts: tuple[int, int, int] | None = None
            if DICTS_KEY in msg.custom:
                at, length, crc = map(int, msg.custom[DICTS_KEY].split(" "))
                dicts = (at, length, crc)
        except (KeyError, ValueError) as err:
            raise FrameError("batch without sunpm metadata") from err
        if want_rows != msg.rows or want_len != covered:
            raise FrameError("batch does not match its row count or length")
        if len(crc_text) != _CRC_DIGITS:
            raise FrameError("bad checksum field")
        frame = BatchFrame(pos, msg.end, want_rows, seq_first, seq_last, ts_min, ts_max,
                           want_crc, msg.value_pos[BATCH_KEY], var_min, var_max, dicts)
        if not frame_intact(buf, frame):
            raise FrameError("batch does not match its checksum")
        return frame


def frame_batch(
    schema: pa.Schema, batch: pa.RecordBatch, *, seq_first: int, seq_last: int, ts_min: int,
    ts_max: int,
) -> bytearray:
    """Serialise `batch` as one self-verifying framed batch (no schema message, no end marker).

    One serialisation with fixed-width placeholders, then the body length and CRC are patched in.
    """
    prefix = len(schema_message(schema))
    # One copy of the serialised bytes (patched in place), handed to the writes as it is.
    framed = bytearray(memoryview(_serialise(schema, batch, batch_metadata(
        batch.num_rows, seq_first, seq_last, ts_min, ts_max)))[prefix:])
    _seal_frame(framed)
    return framed


_PLACEHOLDER: Final = _CRC_ZERO + b" " + b"0" * _LEN_DIGITS + b" "


def _seal_frame(frame: bytearray) -> None:
    """`seal_frames` for the one framed batch our own writer just produced: the messages' lengths
    are read straight from their flatbuffers (trusted bytes, no bounds to check) and the
    placeholder is found in the record batch's metadata. A live commit frames one small batch
    per device, where the general walker cost more than the serialisation itself."""
    u16, u32, i32, i64 = _U16.unpack_from, _U32.unpack_from, _I32.unpack_from, _I64.unpack_from
    pos = 0
    covered = 0
    while True:
        meta_start = pos + 8
        meta_end = meta_start + i32(frame, pos + 4)[0]
        root = meta_start + u32(frame, meta_start)[0]
        vtable = root - i32(frame, root)[0]
        # Message fields: version, header_type (1), header, bodyLength (3), custom_metadata.
        vt_len = u16(frame, vtable)[0]
        kind_at = u16(frame, vtable + 6)[0] if vt_len > 6 else 0
        length_at = u16(frame, vtable + 10)[0] if vt_len > 10 else 0
        body_len = i64(frame, root + length_at)[0] if length_at else 0
        covered += body_len
        pos = meta_end + body_len
        if kind_at and frame[root + kind_at] == RECORD_BATCH_MSG:
            break
    at = frame.find(_PLACEHOLDER, meta_start, meta_end)
    if at < 0 or pos != len(frame):
        raise AssertionError("a framed batch holds exactly one record batch, ours")
    frame[at + _CRC_DIGITS + 1 : at + _CRC_DIGITS + 1 + _LEN_DIGITS] = b"%016d" % covered
    frame[at : at + _CRC_DIGITS] = b"%010d" % _crc.crc32c(frame)


def batch_metadata(rows: int, seq_first: int, seq_last: int, ts_min: int, ts_max: int
                   ) -> dict[str, str]:
    """The custom metadata of a record batch before `seal_frames` patches its CRC and length."""
    return {BATCH_KEY: f"{_CRC_ZERO.decode()} {'0' * _LEN_DIGITS} {rows} "
                       f"{seq_first} {seq_last} {ts_min} {ts_max}"}


def seal_frames(buf: bytearray, pos: int) -> int:
    """Patch body length and CRC-32C into every framed batch from `pos` to the end-of-stream
    marker (or the end of `buf`); returns how many were patched.

    The batches carry `batch_metadata` placeholders; the dictionary messages before each record
    batch belong to its frame (in an IPC file, the unified dictionaries go with the first batch).
    A batch with a `DICTS_KEY` placeholder gets the place and CRC of the first frame's
    dictionary messages, before its own CRC is taken.
    """
    view = memoryview(buf)
    count = 0
    start = pos
    covered = 0
    dicts: str | None = None
    while pos < len(view):
        msg = read_message(view, pos)
        if msg is None:
            break
        covered += msg.body_len
        pos = msg.end
        if msg.kind != RECORD_BATCH_MSG:
            continue
        if dicts is None:
            dicts = " ".join(f"{value:0{n}d}" for value, n in zip(
                (start, msg.start - start, _crc.crc32c(view[start : msg.start])), _DICTS_DIGITS,
                strict=True))
        if DICTS_KEY in msg.value_pos:
            here = msg.value_pos[DICTS_KEY]
            view[here : here + len(DICTS_PLACEHOLDER)] = dicts.encode()
        at = msg.value_pos[BATCH_KEY]
        view[at + _CRC_DIGITS + 1 : at + _CRC_DIGITS + 1 + _LEN_DIGITS] = \
            f"{covered:0{_LEN_DIGITS}d}".encode()
        crc = _crc.crc32c(view[start : msg.end])  # the CRC digits are still zeros here
        view[at : at + _CRC_DIGITS] = f"{crc:0{_CRC_DIGITS}d}".encode()
        count += 1
        start = pos
        covered = 0
    return count


_SCHEMA_BYTES: dict[int, bytes] = {}


def schema_message(schema: pa.Schema) -> bytes:
    key = id(schema)
    cached = _SCHEMA_BYTES.get(key)
    if cached is None:
        cached = schema.serialize().to_pybytes()
        _SCHEMA_BYTES[key] = cached
    return cached


#: Rows from which a framed batch's buffers are LZ4-compressed (Arrow IPC body compression, read
#: back by any Arrow reader; the CRC covers the bytes as stored). Bulk commits write 3-6x fewer
#: bytes for less CPU than the copy they save; a live commit's frame of a few dozen rows stays
#: plain (LZ4's per-buffer set-up would cost 30x its serialisation).
COMPRESS_FROM_ROWS: Final = 2048
# Explicit options (no environment lookups per frame) and no Arrow thread pool: the writer's
# pool already frames devices in parallel, and handing each buffer to another pool costs more
# than compressing it here.
_PLAIN: Final = pa.ipc.IpcWriteOptions(use_threads=False)
_LZ4: Final = pa.ipc.IpcWriteOptions(compression="lz4", use_threads=False)


def _serialise(schema: pa.Schema, batch: pa.RecordBatch, meta: dict[str, str] | None
               ) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    writer = pa.ipc.new_stream(sink, schema, options=_LZ4 if batch.num_rows >= COMPRESS_FROM_ROWS
                               else _PLAIN)
    writer.write_batch(batch, custom_metadata=meta)
    # Not closed: closing would append the end-of-stream marker, which only a sealed file gets.
    return sink.getvalue()
