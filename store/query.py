"""Analysis over a store: DuckDB SQL views and polars lazy frames, with no database file.

The Arrow segments are the database (docs/architecture.md §3): each call reads the committed
segments through the store's own reader (trusted batches only, torn tails and damage skipped) into
Arrow tables that DuckDB scans in place. Nothing is written, so a store or a card dump can be
queried while a writer appends (what is visible is what was committed when the call ran).

    records   device (dictionary string), ts, seq, var, value, vmin, vmax, text, quality, def
    journal   ts, seq, kind, device, def, body
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pyarrow as pa

from store.log import Log
from store.schema import JOURNAL_SCHEMA, RECORDS_SCHEMA

if TYPE_CHECKING:
    import duckdb
    import polars as pl

RECORDS_VIEW_SCHEMA: Final[pa.Schema] = pa.schema(
    [pa.field("device", pa.dictionary(pa.int32(), pa.string()), nullable=False),
     *RECORDS_SCHEMA],
    metadata=RECORDS_SCHEMA.metadata,
)

# Live segments hold one small batch per commit; scans run far faster over fewer, larger batches.
_COALESCE_ROWS: Final = 65_536
_SMALL_ROWS: Final = 8_192


def _as_log(source: Path | str | Log) -> Log:
    return source if isinstance(source, Log) else Log.open_read_only(Path(source))


def records_table(source: Path | str | Log, devices: Iterable[str] | None = None) -> pa.Table:
    """All committed records of the chosen devices (default all), with a `device` column."""
    store = _as_log(source)
    chosen = store.devices() if devices is None else list(devices)
    # One thread: the per-file work is mostly Python and pyarrow call overhead, and measured
    # slower on a 4-thread pool than alone.
    tables = [t for t in (_device_table(store, device) for device in chosen) if t is not None]
    if not tables:
        return RECORDS_VIEW_SCHEMA.empty_table()
    return pa.concat_tables(tables)


def _device_table(store: Log, device: str) -> pa.Table | None:
    found = _coalesce(store.record_batches(device))
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
    con.register("records", records_table(store, devices))
    con.register("journal", journal_table(store))
    return con


def records_lazy(source: Path | str | Log, devices: Iterable[str] | None = None) -> pl.LazyFrame:
    import polars as pl

    frame = pl.from_arrow(records_table(source, devices))
    assert isinstance(frame, pl.DataFrame)
    return frame.lazy()


def journal_lazy(source: Path | str | Log) -> pl.LazyFrame:
    import polars as pl

    frame = pl.from_arrow(journal_table(source))
    assert isinstance(frame, pl.DataFrame)
    return frame.lazy()
