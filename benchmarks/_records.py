"""Generated record rows shared by the store benchmarks: one definition, one epoch, every
column of RECORDS_SCHEMA filled the way the recorder fills it for a plain numeric value."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from store import RECORDS_SCHEMA

T0 = 1_612_483_200 * 1_000_000_000  # 2021-02-05 00:00:00 UTC, in ns
DEF = "0" * 64 + ":inverter.csv"


Column = Sequence[int] | Sequence[float] | np.ndarray[Any, Any]


def records_batch(ts: Column, seq: Column, var: Column, value: Column) -> pa.RecordBatch:
    """Rows with `value` only (min, max and text null), quality 0 and the one definition."""
    n = len(ts)
    return pa.RecordBatch.from_arrays([
        pa.array(ts, pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
        pa.array(seq, pa.uint64()),
        pa.array(var, pa.int32()),
        pa.array(value, pa.float64()),
        pa.nulls(n, pa.float64()),
        pa.nulls(n, pa.float64()),
        pa.nulls(n, pa.string()),
        pa.array([0] * n, pa.uint8()),
        pa.DictionaryArray.from_arrays(pa.array([0] * n, pa.int32()), pa.array([DEF])),
    ], schema=RECORDS_SCHEMA)


def verification_cost(paths: Sequence[Path]) -> dict[str, float]:
    """What checking the CRC-32C of every byte of `paths` costs, as the store's readers check
    every frame they return (files read first, so this is the checksum alone): seconds, MB."""
    import crc32c

    datas = [p.read_bytes() for p in paths]
    started = time.perf_counter()
    for data in datas:
        crc32c.crc32c(data)
    return {"verify_s": round(time.perf_counter() - started, 4),
            "verified_mb": round(sum(map(len, datas)) / 2**20, 1)}
