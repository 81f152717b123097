"""Record batches for the store's tests and benchmarks: columnar, one record per call."""

from __future__ import annotations

import pyarrow as pa

from store import RECORDS_SCHEMA

DAY_NS = 86_400 * 1_000_000_000
T0 = 1_612_483_200 * 1_000_000_000  # 2021-02-05T00:00:00Z
DEF = "0" * 64 + ":inverter.csv"
INPUT_SCHEMA = pa.schema([f for f in RECORDS_SCHEMA if f.name != "seq"])


def record(ts_ns: int, n_vars: int = 10, first_value: float = 0.0) -> pa.RecordBatch:
    """One record: `n_vars` rows sharing `ts_ns`, values first_value + var."""
    return pa.RecordBatch.from_arrays([
        pa.array([ts_ns] * n_vars, pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
        pa.array(range(1, n_vars + 1), pa.int32()),
        pa.array([first_value + i for i in range(n_vars)], pa.float64()),
        pa.nulls(n_vars, pa.float64()),
        pa.nulls(n_vars, pa.float64()),
        pa.nulls(n_vars, pa.string()),
        pa.array([0] * n_vars, pa.uint8()),
        pa.DictionaryArray.from_arrays(pa.array([0] * n_vars, pa.int32()), pa.array([DEF])),
    ], schema=INPUT_SCHEMA)


def records(ts_list: list[int], n_vars: int = 10, first_value: float = 0.0) -> pa.RecordBatch:
    """Several records in one batch, one per time stamp."""
    parts = [record(ts, n_vars, first_value + k * 1000) for k, ts in enumerate(ts_list)]
    return pa.Table.from_batches(parts).combine_chunks().to_batches()[0]
