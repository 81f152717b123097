"""A sealed file's columns decoded with one zstd context a thread (`store._decode`) equal what
pyarrow's IPC reader decodes from the same verified frames, for every column subset a scan asks,
nulls, text, several batches a file and files left uncompressed; a layout it does not know is
left to pyarrow."""

from __future__ import annotations

import itertools
from pathlib import Path

import pyarrow as pa
import pytest
from records_util import T0

import store._decode as decode
from store import RECORDS_SCHEMA
from store._decode import decode_sealed
from store._ipc import frame_batch, read_message, schema_message
from store._segment import (
    IPC_FILE_MAGIC,
    decode_frames,
    scan_ipc_file,
    scan_stream,
    write_ipc_file,
)

ROWS = 1_000


def _table() -> pa.Table:
    values = [None if i % 7 == 0 else i * 0.5 for i in range(ROWS)]
    text = [None if i % 3 else f"état {i}" for i in range(ROWS)]
    defs = pa.DictionaryArray.from_arrays(
        pa.array([i % 3 for i in range(ROWS)], pa.int32()),
        pa.array(["a" * 64 + ":inverter.csv", "b" * 64 + ":meter.csv", "c" * 64 + ":io.csv"]))
    return pa.table([
        pa.array([T0 + i * 10**9 for i in range(ROWS)], pa.int64()).cast(
            pa.timestamp("ns", tz="UTC")),
        pa.array(range(1, ROWS + 1), pa.uint64()),
        pa.array([i % 17 for i in range(ROWS)], pa.int32()),
        pa.array(values, pa.float64()),
        pa.array([None] * ROWS, pa.float64()),
        pa.array([v if v is None else v + 1 for v in values], pa.float64()),
        pa.array(text, pa.string()),
        pa.array([i % 4 for i in range(ROWS)], pa.uint8()),
        defs,
    ], schema=RECORDS_SCHEMA)


@pytest.mark.parametrize("compress", [True, False])
def test_every_column_subset_decodes_as_pyarrow_decodes_it(tmp_path: Path, compress: bool
                                                            ) -> None:
    path = tmp_path / "1.arrow"
    write_ipc_file(path, _table(), RECORDS_SCHEMA, compress=compress, chunk_rows=300)
    data = path.read_bytes()
    scan, _ = scan_ipc_file(data, RECORDS_SCHEMA)
    assert len(scan.batches) == 4 and not scan.damage
    header = read_message(memoryview(data), len(IPC_FILE_MAGIC))
    assert header is not None
    fields = range(len(RECORDS_SCHEMA))
    subsets = [list(c) for n in (1, 2, 3) for c in itertools.combinations(fields, n)]
    for columns in [*subsets, list(fields)]:
        ours = decode_sealed(data, RECORDS_SCHEMA, scan.batches, columns)
        theirs = decode_frames(pa.py_buffer(data), RECORDS_SCHEMA, scan.batches,
                               header=(header.start, header.end), combine=False, columns=columns)
        assert ours is not None
        assert len(ours) == len(theirs) == 4
        for mine, reference in zip(ours, theirs, strict=True):
            assert mine.equals(reference), columns


def test_layouts_it_does_not_know_are_left_to_pyarrow(tmp_path: Path) -> None:
    # A stream segment: every framed batch carries its own dictionary (a replacement).
    table = _table()
    data = bytearray(schema_message(RECORDS_SCHEMA))
    for batch in table.to_batches(max_chunksize=400):
        seq = batch.column(1)[0].as_py()
        data += frame_batch(RECORDS_SCHEMA, batch, seq_first=seq, seq_last=seq, ts_min=0,
                            ts_max=0)
    scan = scan_stream(bytes(data), RECORDS_SCHEMA)
    assert len(scan.batches) == 3 and not scan.damage
    assert decode_sealed(bytes(data), RECORDS_SCHEMA, scan.batches, [0, 8]) is None
    # A type it does not decode itself.
    path = tmp_path / "1.arrow"
    write_ipc_file(path, table, RECORDS_SCHEMA, compress=True)
    sealed = path.read_bytes()
    frames = scan_ipc_file(sealed, RECORDS_SCHEMA)[0].batches
    other = pa.schema([pa.field("x", pa.list_(pa.int32()))])
    assert decode_sealed(sealed, other, frames, [0]) is None
    assert decode_sealed(sealed, RECORDS_SCHEMA, frames, [0, 8]) is not None


def test_each_file_decodes_its_own_dictionary_one_decoding_each(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dictionaries are decoded once per distinct message: files under the same definitions
    share one array; a file under others gets its own (what pyarrow decodes, file by file)."""
    monkeypatch.setattr(decode, "_DICTIONARIES", {})
    decoded: list[int] = []
    plain = decode._array

    def counted(kind: pa.DataType, batch: decode._Batch, node: int, first: int) -> pa.Array:
        if pa.types.is_string(kind) and len(batch.nodes) == 2:  # a dictionary message's
            decoded.append(batch.rows)
        return plain(kind, batch, node, first)

    monkeypatch.setattr(decode, "_array", counted)
    table = _table()
    other = table.set_column(8, "def", pa.DictionaryArray.from_arrays(
        pa.array([i % 2 for i in range(ROWS)], pa.int32()),
        pa.array(["d" * 64 + ":tic.csv", "e" * 64 + ":s0.csv"])))
    files = []
    for name, source in (("1", table), ("2", table), ("3", other)):
        path = tmp_path / f"{name}.arrow"
        write_ipc_file(path, source, RECORDS_SCHEMA, compress=True, chunk_rows=300)
        files.append(path.read_bytes())
    found = []
    for data in files:
        scan, _ = scan_ipc_file(data, RECORDS_SCHEMA)
        header = read_message(memoryview(data), len(IPC_FILE_MAGIC))
        assert header is not None
        ours = decode_sealed(data, RECORDS_SCHEMA, scan.batches, [2, 8])
        theirs = decode_frames(pa.py_buffer(data), RECORDS_SCHEMA, scan.batches,
                               header=(header.start, header.end), combine=False, columns=[2, 8])
        assert ours is not None and len(ours) == len(theirs) == 4
        for mine, reference in zip(ours, theirs, strict=True):
            assert mine.equals(reference)
        found.append(ours[0].column(1).dictionary)
    assert decoded == [3, 2]  # the first file's dictionary, then the third's
    assert found[0].buffers()[2].address == found[1].buffers()[2].address
    assert found[2].to_pylist() == ["d" * 64 + ":tic.csv", "e" * 64 + ":s0.csv"]
