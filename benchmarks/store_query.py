"""Daily energy SQL over 30 days x 100 devices x 100 variables at a 600 s period (DESIGN.md §7).

The store is laid out as a live gateway leaves it: per device, 29 sealed days rewritten as IPC
files and today's open segment, one small batch per commit. Ours: `store.query.duckdb_connection`
over the store directory (opening it read-only, reading the segments, registering the views)
plus the query, all timed. Baseline: the same query over the same rows already loaded into a
native DuckDB table (what keeping a database file beside the log would give, load not timed).

    python benchmarks/store_query.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _records import T0, records_batch
from _report import emit, figure_line

from store import RECORDS_SCHEMA
from store._ipc import EOS, frame_batch, schema_message
from store._segment import UNCOMPRESSED_KEY, write_ipc_file
from store.query import duckdb_connection

DAY_NS = 86_400 * 10**9
QUERY = """
    SELECT device, date_trunc('day', ts) AS day, max(value) - min(value) AS energy
    FROM records WHERE var = 1
    GROUP BY ALL ORDER BY device, day
"""


def _day_records(day: int, period_s: int, variables: int) -> tuple[pa.Table, int]:
    per_day = 86_400 // period_s
    seq0 = day * per_day + 1
    ts, seq, var, value = [], [], [], []
    for r in range(per_day):
        t = T0 + day * DAY_NS + (r + 1) * period_s * 10**9 - 1
        for v in range(1, variables + 1):
            ts.append(t)
            seq.append(seq0 + r)
            var.append(v)
            # Variable 1 is an energy counter; the others move around.
            value.append(float((day * per_day + r) * 5 if v == 1 else (r * v) % 997))
    table = pa.Table.from_batches([records_batch(ts, seq, var, value)])
    return table, seq0


def _sealed_file(path: Path, table: pa.Table) -> None:
    """As the store's compaction writes a sealed day: an IPC file of self-verifying batches."""
    meta = dict(RECORDS_SCHEMA.metadata or {})
    meta[UNCOMPRESSED_KEY] = str(table.nbytes).encode()
    write_ipc_file(path, table, RECORDS_SCHEMA.with_metadata(meta), compress=False)


def _live_segment(path: Path, table: pa.Table, variables: int) -> None:
    data = bytearray(schema_message(RECORDS_SCHEMA))
    for batch in table.to_batches(max_chunksize=variables):  # one record per commit
        seq = batch.column(1)[0].as_py()
        ts = batch.column(0).cast(pa.int64())[0].as_py()
        data += frame_batch(RECORDS_SCHEMA, batch, seq_first=seq, seq_last=seq, ts_min=ts,
                            ts_max=ts)
    path.write_bytes(bytes(data))
    assert EOS not in data[-8:]


def build_store(root: Path, devices: int, days: int, period_s: int, variables: int) -> int:
    templates = root / "templates"
    templates.mkdir(parents=True)
    files: list[Path] = []
    rows = 0
    for day in range(days):
        table, seq0 = _day_records(day, period_s, variables)
        rows += table.num_rows
        if day < days - 1:
            path = templates / f"{seq0}.arrow"
            _sealed_file(path, table)
        else:
            path = templates / f"{seq0}.arrows"
            _live_segment(path, table, variables)
        files.append(path)
    for dev in range(1, devices + 1):
        target = root / "store" / "devices" / str(dev)
        target.mkdir(parents=True)
        for path in files:
            os.link(path, target / path.name)  # read-only benchmark: devices share the bytes
    (root / "store" / "journal").mkdir()
    return rows * devices


def _ours(store: Path) -> tuple[float, list[tuple[object, ...]]]:
    started = time.perf_counter()
    con = duckdb_connection(store)
    rows = con.sql(QUERY).fetchall()
    elapsed = time.perf_counter() - started
    con.close()
    return elapsed, rows


def _native(store: Path, db: Path) -> object:
    import duckdb

    con = duckdb.connect(str(db))
    source = duckdb_connection(store)
    table = source.sql("SELECT device::VARCHAR AS device, ts, var, value FROM records").arrow()
    con.register("incoming", table)
    con.execute("CREATE TABLE records AS SELECT * FROM incoming")
    con.unregister("incoming")
    source.close()
    return con


def run(devices: int = 100, days: int = 30, period_s: int = 600, variables: int = 100,
        n: int = 3) -> dict[str, object]:
    base = Path(tempfile.mkdtemp(prefix="sunpm-bench-query-"))
    try:
        total_rows = build_store(base, devices, days, period_s, variables)
        _ours(base / "store")  # warm-up
        ours_s: list[float] = []
        result: list[tuple[object, ...]] = []
        for _ in range(n):
            elapsed, result = _ours(base / "store")
            ours_s.append(elapsed)
        assert len(result) == devices * days, len(result)
        con = _native(base / "store", base / "native.duckdb")
        theirs_s: list[float] = []
        for _ in range(n):
            started = time.perf_counter()
            native_rows = con.sql(QUERY).fetchall()  # type: ignore[attr-defined]
            theirs_s.append(time.perf_counter() - started)
        assert [r[2] for r in native_rows] == [r[2] for r in result]
        con.close()  # type: ignore[attr-defined]
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return figure_line(
        "store_query",
        "same SQL over the same rows in a native DuckDB table (loaded beforehand)",
        "s", ours_s, theirs_s, digits=3, speedup_digits=3,
        n=n,
        rows=total_rows,
        devices=devices,
        days=days,
        variables=variables,
        period_s=period_s,
        ours_includes="read-only open, segment reads, view registration, query",
        ours_s=[round(x, 3) for x in ours_s])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny size, for a smoke test")
    args = parser.parse_args()
    if args.quick:
        result = run(devices=3, days=3, period_s=3600, variables=5, n=1)
    else:
        result = run()
    emit(result)


if __name__ == "__main__":
    main()
