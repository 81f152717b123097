"""Arrow IPC framing at the byte level: self-verifying batches and a tolerant message walker.

Why our own walker: the Arrow reader alone reads a zero-filled or bit-flipped tail back as a
plausible batch (DESIGN.md §3), and it cannot resume after a damaged message. Walking the
messages ourselves gives byte offsets for reports, lets recovery resynchronise on the next
continuation marker, and costs no decoding.

One framed batch (what a commit appends to a segment):

    [dictionary message]*        one per dictionary column (a replacement: each batch carries its own)
    record batch message         custom metadata:
        sunpm.rows      row count
        sunpm.body_len  bytes of the message bodies (dictionaries + batch), 16 digits
        sunpm.crc32c    CRC-32C of every byte of the framed batch, messages' metadata included,
                        with these 10 digits read as "0000000000"
        sunpm.seq_first, sunpm.seq_last, sunpm.ts_min, sunpm.ts_max   (indexes, covered by the CRC)

The CRC covers the flatbuffer metadata as well as the bodies: a flipped buffer offset or row count
would otherwise decode into a wrong batch, or an error, with a matching body checksum.

A message: 0xFFFFFFFF, int32 metadata length, flatbuffer `Message`, body. End of stream: 0xFFFFFFFF
followed by int32 0.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

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


class FrameError(Exception):
    """Bytes that are not a well-formed message (internal: callers turn it into a report)."""


@dataclass(frozen=True, slots=True)
class Message:
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


def read_message(buf: memoryview, pos: int) -> Message | None:
    """The message at `pos`; None at an end-of-stream marker. Raises FrameError on anything else."""
    if pos + 8 > len(buf):
        raise FrameError("truncated message prefix")
    if bytes(buf[pos : pos + 4]) != CONTINUATION:
        raise FrameError("no continuation marker")
    meta_len = int(_I32.unpack_from(buf, pos + 4)[0])
    if meta_len == 0:
        return None
    if meta_len < 0 or meta_len > _MAX_METADATA or meta_len % 8:
        raise FrameError("bad metadata length")
    meta_start = pos + 8
    body_start = meta_start + meta_len
    if body_start > len(buf):
        raise FrameError("truncated metadata")
    meta = buf[meta_start:body_start]
    root = _Table(meta, _u32(meta, 0))
    kind = root.u8(1)
    body_len = root.i64(3)
    if body_len < 0 or body_len > _MAX_BODY or body_len % 8:
        raise FrameError("bad body length")
    end = body_start + body_len
    if end > len(buf):
        raise FrameError("truncated body")
    rows = 0
    if kind == RECORD_BATCH_MSG:
        header = root.table(2)
        if header is None:
            raise FrameError("record batch without header")
        rows = header.i64(0)
    custom: dict[str, str] = {}
    value_pos: dict[str, int] = {}
    vec = root.vector(4)
    if vec is not None:
        first, n = vec
        for i in range(n):
            p = first + 4 * i
            kv = _Table(meta, p + _u32(meta, p))
            key, _ = kv.string(0)
            value, at = kv.string(1)
            custom[key] = value
            value_pos[key] = meta_start + at
    return Message(pos, end, kind, body_start, body_len, rows, custom, value_pos)


@dataclass(frozen=True, slots=True)
class BatchFrame:
    """A framed batch as found in a segment: byte range and the facts its metadata states."""

    start: int
    end: int
    rows: int
    seq_first: int
    seq_last: int
    ts_min: int
    ts_max: int


def read_batch(buf: memoryview, pos: int, *, verify: bool = True) -> BatchFrame | None:
    """The framed batch starting at `pos` (its dictionaries, then its record batch).

    None at end of stream. Raises FrameError when the bytes do not hold a batch that is trusted:
    row count, body length and CRC-32C all as its metadata says (with `verify=False` the CRC is not
    computed, for walking sealed segments fast).
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
        meta = msg.custom
        try:
            want_rows = int(meta["sunpm.rows"])
            want_len = int(meta["sunpm.body_len"])
            want_crc = int(meta["sunpm.crc32c"])
            frame = BatchFrame(
                pos,
                msg.end,
                want_rows,
                int(meta["sunpm.seq_first"]),
                int(meta["sunpm.seq_last"]),
                int(meta["sunpm.ts_min"]),
                int(meta["sunpm.ts_max"]),
            )
        except (KeyError, ValueError) as err:
            raise FrameError("batch without sunpm metadata") from err
        if want_rows != msg.rows or want_len != covered:
            raise FrameError("batch does not match its row count or length")
        if verify:
            at = msg.value_pos["sunpm.crc32c"]
            if len(meta["sunpm.crc32c"]) != _CRC_DIGITS:
                raise FrameError("bad checksum field")
            crc = _crc.crc32c(buf[pos:at])
            crc = _crc.crc32c(_CRC_ZERO, crc)
            crc = _crc.crc32c(buf[at + _CRC_DIGITS : msg.end], crc)
            if crc != want_crc:
                raise FrameError("batch does not match its checksum")
        return frame


def frame_batch(
    schema: pa.Schema, batch: pa.RecordBatch, *, seq_first: int, seq_last: int, ts_min: int,
    ts_max: int,
) -> bytes:
    """Serialise `batch` as one self-verifying framed batch (no schema message, no end marker).

    One serialisation with fixed-width placeholders, then the body length and CRC are patched in.
    """
    prefix = len(schema_message(schema))
    meta = {
        "sunpm.rows": str(batch.num_rows),
        "sunpm.body_len": "0" * _LEN_DIGITS,
        "sunpm.crc32c": _CRC_ZERO.decode(),
        "sunpm.seq_first": str(seq_first),
        "sunpm.seq_last": str(seq_last),
        "sunpm.ts_min": str(ts_min),
        "sunpm.ts_max": str(ts_max),
    }
    framed = bytearray(memoryview(_serialise(schema, batch, meta))[prefix:])
    view = memoryview(framed)
    covered = 0
    p = 0
    last: Message | None = None
    while p < len(view):
        msg = read_message(view, p)
        if msg is None:
            break
        covered += msg.body_len
        last = msg
        p = msg.end
    assert last is not None and last.kind == RECORD_BATCH_MSG
    at = last.value_pos["sunpm.body_len"]
    view[at : at + _LEN_DIGITS] = f"{covered:0{_LEN_DIGITS}d}".encode()
    crc = _crc.crc32c(view)  # the CRC digits are still zeros here
    at = last.value_pos["sunpm.crc32c"]
    view[at : at + _CRC_DIGITS] = f"{crc:0{_CRC_DIGITS}d}".encode()
    del view
    return bytes(framed)


_SCHEMA_BYTES: dict[int, bytes] = {}


def schema_message(schema: pa.Schema) -> bytes:
    key = id(schema)
    cached = _SCHEMA_BYTES.get(key)
    if cached is None:
        cached = schema.serialize().to_pybytes()
        _SCHEMA_BYTES[key] = cached
    return cached


def _serialise(schema: pa.Schema, batch: pa.RecordBatch, meta: dict[str, str] | None) -> bytes:
    sink = pa.BufferOutputStream()
    writer = pa.ipc.new_stream(sink, schema)
    writer.write_batch(batch, custom_metadata=meta)
    # Not closed: closing would append the end-of-stream marker, which only a sealed file gets.
    return bytes(sink.getvalue())
