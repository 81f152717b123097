"""Decoding a sealed file's verified frames column by column, one zstd context per thread.

What `decode_frames` does through pyarrow's IPC reader, for the case a scan spends most of its
time in: a sealed `.arrow` file (zstd, as compaction writes it) of which a query wants a few
columns. pyarrow's reader sets up a new zstd context for every buffer it decompresses, which
costs about as much as the decompression itself on these ~100 kB buffers; here each thread keeps
one (`zstandard.ZstdDecompressor`), and only the buffers of the wanted columns are touched.

Only bytes a walk verified are decoded (every frame's CRC-32C, length and row count checked on
this read), and every array is validated by pyarrow as it is built. Anything this decoder
does not know (another codec, a nested type, several dictionaries, a delta dictionary) returns
None: the caller decodes through pyarrow instead.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from typing import Final

import pyarrow as pa
import zstandard

from store._ipc import DICTIONARY_MSG, RECORD_BATCH_MSG, BatchFrame, FrameError, _Table, _u32

_I64 = struct.Struct("<q")
_ZSTD: Final = 1  # CompressionType.ZSTD in Arrow's Message.fbs (LZ4_FRAME is 0)
_UNCOMPRESSED: Final = -1  # a compressed body's buffer stored as is (its length prefix says so)

_local = threading.local()
_EMPTY: Final = pa.py_buffer(b"")


def _decompressor() -> zstandard.ZstdDecompressor:
    found: zstandard.ZstdDecompressor | None = getattr(_local, "zstd", None)
    if found is None:
        found = _local.zstd = zstandard.ZstdDecompressor()
    return found


class _Unknown(Exception):
    """A layout this decoder leaves to pyarrow."""


def _buffer_counts(schema: pa.Schema) -> list[int] | None:
    """Buffers of each field in a record batch message (validity first), None when a field's
    type is not a flat one this decoder knows."""
    counts = []
    for field in schema:
        kind = field.type
        t = pa.types
        if t.is_dictionary(kind) or t.is_integer(kind) or t.is_floating(kind) or \
                t.is_timestamp(kind) or t.is_boolean(kind):
            counts.append(2)
        elif pa.types.is_string(kind) or pa.types.is_binary(kind):
            counts.append(3)
        else:
            return None
    return counts


_COUNTS: dict[int, tuple[pa.Schema, list[int] | None]] = {}


def _counts_of(schema: pa.Schema) -> list[int] | None:
    known = _COUNTS.get(id(schema))
    if known is None or known[0] is not schema:
        known = (schema, _buffer_counts(schema))
        _COUNTS[id(schema)] = known
    return known[1]


def _struct_vector(table: _Table, index: int) -> tuple[int, int]:
    """(first element, count) of a vector of 16-byte structs (FieldNode, Buffer)."""
    p = table._field(index)
    if not p:
        return 0, 0
    target = p + _u32(table.buf, p)
    n = _u32(table.buf, target)
    if target + 4 + 16 * n > len(table.buf):
        raise FrameError("struct vector out of range")
    return target + 4, n


def _pairs(table: _Table, index: int) -> tuple[int, ...]:
    """A vector of 16-byte structs (FieldNode, Buffer) flat: (first, second) of struct `i` at
    `2 * i`, `2 * i + 1`."""
    first, n = _struct_vector(table, index)
    return _FLAT[n].unpack_from(table.buf, first) if n < len(_FLAT) else \
        struct.unpack_from(f"<{2 * n}q", table.buf, first)


_FLAT: Final = [struct.Struct(f"<{2 * n}q") for n in range(64)]


class _Batch:
    """A record batch message's layout: rows, field nodes and buffers (flat pairs: `length,
    null_count` and `offset, length`), whether zstd."""

    __slots__ = ("body", "buffers", "nodes", "rows", "zstd")

    def __init__(self, header: _Table, body: memoryview) -> None:
        self.rows = header.i64(0)
        self.nodes = _pairs(header, 1)
        self.buffers = _pairs(header, 2)
        compression = header.table(3)
        if compression is None:
            self.zstd = False
        elif compression.u8(0) == _ZSTD and compression.u8(1) == 0:  # per buffer
            self.zstd = True
        else:
            raise _Unknown
        self.body = body

    def buffer(self, index: int, *, validity: bool = False) -> pa.Buffer | None:
        """A buffer decompressed; an absent one is None for a validity bitmap (no nulls), else
        empty."""
        offset = self.buffers[2 * index]
        length = self.buffers[2 * index + 1]
        if length == 0:
            return None if validity else _EMPTY
        if offset < 0 or length < 0 or offset + length > len(self.body):
            raise FrameError("buffer out of range")
        if not self.zstd:
            return pa.py_buffer(self.body[offset : offset + length])
        if length < 8:
            raise FrameError("compressed buffer without its length")
        size = _I64.unpack_from(self.body, offset)[0]
        if size == _UNCOMPRESSED:
            return pa.py_buffer(self.body[offset + 8 : offset + length])
        if size < 0:
            raise FrameError("bad uncompressed length")
        if size == 0:
            return _EMPTY
        out = _decompressor().decompress(self.body[offset + 8 : offset + length],
                                         max_output_size=size)
        if len(out) != size:
            raise FrameError("buffer does not decompress to its stated length")
        return pa.py_buffer(out)


def _message(buf: memoryview, pos: int) -> tuple[int, _Table, int, memoryview]:
    """(kind, header table, end, body) of the message at `pos` (bounds-checked)."""
    meta_len = _u32(buf, pos + 4)
    meta_start = pos + 8
    body_start = meta_start + meta_len
    meta = buf[meta_start:body_start]
    root = _Table(meta, _u32(meta, 0))
    kind = root.u8(1)
    body_len = root.i64(3)
    header = root.table(2)
    end = body_start + body_len
    if header is None or body_len < 0 or end > len(buf):
        raise FrameError("bad message")
    return kind, header, end, buf[body_start:end]


class _Plan:
    """What decoding `columns` of `schema` needs, worked out once per (schema, columns)."""

    __slots__ = ("columns", "counts", "dictionary_type", "out_schema", "wants_dictionary")

    def __init__(self, schema: pa.Schema, counts: list[int], columns: list[int]) -> None:
        starts = [sum(counts[:i]) for i in range(len(counts))]
        self.counts = counts
        self.out_schema = pa.schema([schema.field(i) for i in columns])
        dict_fields = [i for i, f in enumerate(schema) if pa.types.is_dictionary(f.type)]
        self.wants_dictionary = any(i in dict_fields for i in columns)
        if self.wants_dictionary and len(dict_fields) != 1:
            raise _Unknown
        self.dictionary_type = schema.field(dict_fields[0]).type if dict_fields else None
        # (field index, type, first buffer, dictionary-encoded)
        self.columns = [(i, schema.field(i).type, starts[i],
                         pa.types.is_dictionary(schema.field(i).type)) for i in columns]


_PLANS: dict[tuple[int, tuple[int, ...]], tuple[pa.Schema, _Plan | None]] = {}


def _plan_of(schema: pa.Schema, columns: list[int]) -> _Plan | None:
    key = (id(schema), tuple(columns))
    known = _PLANS.get(key)
    if known is None or known[0] is not schema:
        counts = _counts_of(schema)
        try:
            plan = None if counts is None else _Plan(schema, counts, columns)
        except _Unknown:
            plan = None
        if len(_PLANS) > 256:
            _PLANS.clear()
        known = _PLANS[key] = (schema, plan)
    return known[1]


# Decoded dictionaries by the bytes of their message (verified before they are looked up: a
# frame's CRC covers them): the sealed files of a store mostly carry the same one or two, so a
# scan decodes each once and hands every batch the same array.
_DICTIONARIES: dict[tuple[str, bytes], pa.Array] = {}
_DICTIONARIES_MAX: Final = 1024


def decode_sealed(data: bytes, schema: pa.Schema, frames: list[BatchFrame],
                  columns: list[int], keep: Callable[[BatchFrame], bool] | None = None
                  ) -> list[pa.RecordBatch] | None:
    """The `columns` (field indexes, schema order) of each verified frame of a sealed file, one
    record batch per frame; None for a layout left to pyarrow (see the module docstring).
    `keep`: only the frames it accepts are decoded (the file's dictionary, which the first frame
    carries, is still read when a dictionary column is asked for)."""
    plan = _plan_of(schema, columns)
    if plan is None or not frames:
        return None
    counts = plan.counts
    wants_dictionary = plan.wants_dictionary
    dictionary: pa.Array | None = None
    buf = memoryview(data)
    batches = []
    try:
        for frame in frames:
            skipped = keep is not None and not keep(frame)
            if skipped and (not wants_dictionary or frame is not frames[0]):
                continue
            pos = frame.start
            batch: _Batch | None = None
            while pos < frame.end:
                start = pos
                kind, header, pos, body = _message(buf, pos)
                if kind == DICTIONARY_MSG:
                    if not wants_dictionary:
                        continue
                    if header.i64(0) != 0 or header.u8(2) or dictionary is not None:
                        raise _Unknown  # one dictionary, written once, as compaction does
                    dictionary = _dictionary(plan, header, body, bytes(buf[start:pos]))
                elif skipped:
                    break  # the first frame, read for its dictionary alone
                elif kind == RECORD_BATCH_MSG:
                    batch = _Batch(header, body)
                else:
                    raise FrameError("unexpected message")
            if skipped:
                continue
            if batch is None or batch.rows != frame.rows or len(batch.nodes) != 2 * len(counts) \
                    or len(batch.buffers) != 2 * sum(counts):
                raise FrameError("frame does not hold the schema's record batch")
            arrays = []
            for i, kind_, first, encoded in plan.columns:
                if encoded:
                    if dictionary is None:
                        raise FrameError("dictionary column without its dictionary")
                    indices = pa.Array.from_buffers(
                        kind_.index_type, batch.nodes[2 * i],
                        [batch.buffer(first, validity=True), batch.buffer(first + 1)],
                        batch.nodes[2 * i + 1])
                    arrays.append(pa.DictionaryArray.from_arrays(indices, dictionary))
                else:
                    arrays.append(_array(kind_, batch, i, first))
            # Each array was validated as it was built (`from_buffers`, `from_arrays`).
            if any(len(array) != batch.rows for array in arrays):
                raise FrameError("column length differs from the batch's")
            batches.append(pa.RecordBatch.from_arrays(arrays, schema=plan.out_schema))
    except (_Unknown, zstandard.ZstdError):
        return None
    except (FrameError, struct.error, pa.ArrowInvalid) as err:
        # The frames verified: bytes that do not decode are a writer's error, not damage.
        raise pa.ArrowInvalid(f"verified frames that do not decode: {err}") from err
    return batches


def _dictionary(plan: _Plan, header: _Table, body: memoryview, message: bytes) -> pa.Array:
    """The dictionary a dictionary message holds, decoded once per distinct message."""
    assert plan.dictionary_type is not None
    value_type = plan.dictionary_type.value_type
    key = (str(value_type), message)
    found = _DICTIONARIES.get(key)
    if found is not None:
        return found
    data_table = header.table(1)
    if data_table is None:
        raise FrameError("dictionary without data")
    values = _Batch(data_table, body)
    if len(values.nodes) != 2 or len(values.buffers) != 6 or not pa.types.is_string(value_type):
        raise _Unknown
    found = _array(value_type, values, 0, 0)
    if len(_DICTIONARIES) >= _DICTIONARIES_MAX:
        _DICTIONARIES.clear()
    _DICTIONARIES[key] = found
    return found


def _array(kind: pa.DataType, batch: _Batch, node: int, first: int) -> pa.Array:
    length = batch.nodes[2 * node]
    nulls = batch.nodes[2 * node + 1]
    if pa.types.is_string(kind) or pa.types.is_binary(kind):
        buffers = [batch.buffer(first, validity=True), batch.buffer(first + 1),
                   batch.buffer(first + 2)]
    else:
        buffers = [batch.buffer(first, validity=True), batch.buffer(first + 1)]
    if buffers[0] is None and nulls:
        raise FrameError("nulls without a validity bitmap")
    return pa.Array.from_buffers(kind, length, buffers, nulls)
