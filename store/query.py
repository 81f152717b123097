"""Analysis over a store: DuckDB SQL views and polars lazy frames, with no database file.

The Arrow segments are the database (docs/architecture.md §3). `records_dataset` is a lazy
`pyarrow.dataset` over a store: its sealed `.arrow` files are scanned in place, a batch at a time,
decoding (and decompressing) only the columns a query reads, which DuckDB and polars push down;
each file is verified when the scan opens it (`Log.verified_file`: every batch's CRC-32C over its
compressed bytes, and a footer listing exactly those batches), so only trusted batches are read.
The stream segments (today's, one small batch per commit) are read through the store's reader
when the dataset is made. Nothing is written, so a store or a card dump can be queried while a
writer appends (what is visible is what was committed when the call ran; a sealed file deleted
by the quota before the scan reaches it reads as empty).

    records   device (dictionary string), ts, seq, var, value, vmin, vmax, text, quality, def
    journal   ts, seq, kind, device, def, body
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from store.log import Log
from store.schema import JOURNAL_SCHEMA, RECORDS_SCHEMA

if TYPE_CHECKING:
    import duckdb
    import polars as pl

RECORDS_VIEW_SCHEMA: Final[pa.Schema] = pa.schema(
    # Nullable only as a dataset's partition column must be; never null.
    [pa.field("device", pa.dictionary(pa.int32(), pa.string())),
     *RECORDS_SCHEMA],
    metadata=RECORDS_SCHEMA.metadata,
)

# Live segments hold one small batch per commit; scans run far faster over fewer, larger batches.
_COALESCE_ROWS: Final = 65_536
_SMALL_ROWS: Final = 8_192


def _as_log(source: Path | str | Log) -> Log:
    return source if isinstance(source, Log) else Log.open_read_only(Path(source))


class _VerifiedFiles(pafs.FileSystemHandler):  # type: ignore[misc]  # pyarrow is untyped
    """Read-only file system that hands a dataset scan each sealed file as `Log.verified_file`
    returns it (the file itself, or only its verified batches)."""

    def __init__(self, store: Log) -> None:
        self._store = store

    def open_input_file(self, path: str) -> pa.NativeFile:
        return pa.BufferReader(self._store.verified_file(Path(path)))

    def open_input_stream(self, path: str) -> pa.NativeFile:
        return self.open_input_file(path)

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        found = []
        for path in paths:
            try:
                found.append(pafs.FileInfo(path, pafs.FileType.File, size=os.stat(path).st_size))
            except FileNotFoundError:
                found.append(pafs.FileInfo(path, pafs.FileType.NotFound))
        return found

    def get_type_name(self) -> str:
        return "sunpm-verified"

    def normalize_path(self, path: str) -> str:
        return path

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _VerifiedFiles) and other._store is self._store

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return id(self._store)

    def _read_only(self, *_: object, **__: object) -> None:
        raise OSError("the store's segments are read-only here")

    get_file_info_selector = create_dir = delete_dir = delete_dir_contents = _read_only
    delete_root_dir_contents = delete_file = move = copy_file = _read_only
    open_output_stream = open_append_stream = _read_only


def records_dataset(source: Path | str | Log, devices: Iterable[str] | None = None
                    ) -> ds.Dataset:
    """Every committed record of the chosen devices (default all), with a `device` column, as
    a lazy dataset (see the module's docstring)."""
    store = _as_log(source)
    chosen = store.devices() if devices is None else list(devices)
    files: list[str] = []
    partitions: list[pc.Expression] = []
    in_memory: list[pa.Table] = []
    device_type = RECORDS_VIEW_SCHEMA.field("device").type
    for device in chosen:
        paths, batches = store.record_sources(device)
        files += [str(p) for p in paths]
        # The device is constant per file: a partition expression adds the column for free.
        partitions += [pc.field("device") == pa.scalar(device, pa.string()).cast(device_type)
                       ] * len(paths)
        table = _device_table(device, _coalesce(batches))
        if table is not None:
            in_memory.append(table)
    parts: list[ds.Dataset] = []
    if files:
        sealed = ds.FileSystemDataset.from_paths(
            files, schema=pa.schema(list(RECORDS_SCHEMA)), format=ds.IpcFileFormat(),
            filesystem=pafs.PyFileSystem(_VerifiedFiles(store)), partitions=partitions)
        parts.append(sealed.replace_schema(RECORDS_VIEW_SCHEMA))
    if in_memory:
        parts.append(ds.dataset(pa.concat_tables(in_memory)))
    if not parts:
        return ds.dataset(RECORDS_VIEW_SCHEMA.empty_table())
    return parts[0] if len(parts) == 1 else ds.dataset(parts)


def records_table(source: Path | str | Log, devices: Iterable[str] | None = None,
                  columns: list[str] | None = None) -> pa.Table:
    """All committed records of the chosen devices (default all), with a `device` column
    (`columns`: only those, each decoded alone)."""
    return records_dataset(source, devices).to_table(columns=columns)


def _device_table(device: str, found: list[pa.RecordBatch]) -> pa.Table | None:
    if not found:
        return None
    table = pa.Table.from_batches(found, schema=RECORDS_SCHEMA)
    # One all-zero dictionary column, sliced per chunk: the device column costs no copy.
    longest = max(b.num_rows for b in found)
    indices = pa.Array.from_buffers(pa.int32(), longest, [None, pa.py_buffer(bytes(4 * longest))])
    column = pa.DictionaryArray.from_arrays(indices, pa.array([device], pa.string()))
    device_col = pa.chunked_array([column.slice(0, b.num_rows) for b in found],
                                  type=RECORDS_VIEW_SCHEMA.field("device").type)
    return table.add_column(0, RECORDS_VIEW_SCHEMA.field("device"), device_col) \
        .replace_schema_metadata(RECORDS_VIEW_SCHEMA.metadata)


def _coalesce(batches: list[pa.RecordBatch]) -> list[pa.RecordBatch]:
    """Runs of small batches (a live segment's, one per commit) merged; large ones kept as-is."""
    out: list[pa.RecordBatch] = []
    run: list[pa.RecordBatch] = []
    rows = 0
    for batch in batches:
        if batch.num_rows >= _SMALL_ROWS:
            if run:
                out.append(pa.concat_batches(run))
                run, rows = [], 0
            out.append(batch)
            continue
        run.append(batch)
        rows += batch.num_rows
        if rows >= _COALESCE_ROWS:
            out.append(pa.concat_batches(run))
            run, rows = [], 0
    if run:
        out.append(pa.concat_batches(run))
    return out


def journal_table(source: Path | str | Log) -> pa.Table:
    store = _as_log(source)
    return pa.Table.from_batches(store.journal_batches(), schema=JOURNAL_SCHEMA)


def duckdb_connection(source: Path | str | Log, devices: Iterable[str] | None = None
                      ) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with views `records` and `journal` over the store."""
    import duckdb

    store = _as_log(source)
    con = duckdb.connect(":memory:")
    con.register("records", records_dataset(store, devices))
    con.register("journal", journal_table(store))
    return con


def records_lazy(source: Path | str | Log, devices: Iterable[str] | None = None) -> pl.LazyFrame:
    """The records as a polars lazy frame; column selections and filters reach the scan."""
    import polars as pl

    return pl.scan_pyarrow_dataset(records_dataset(source, devices))


def journal_lazy(source: Path | str | Log) -> pl.LazyFrame:
    import polars as pl

    frame = pl.from_arrow(journal_table(source))
    assert isinstance(frame, pl.DataFrame)
    return frame.lazy()
