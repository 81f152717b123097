"""What the memory probes (scripts a test runs in a process of its own) share: a month of
records built in batches, and the process's own memory figures."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from store import RECORDS_SCHEMA

NS = 1_000_000_000


def status_mib(field: str) -> float:
    """A figure of /proc/self/status (`VmRSS:`, `VmHWM:`) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} in /proc/self/status")


def period_records(def_id: str, start_ns: int, period_s: int, variables: tuple[int, ...],
                   first: int, count: int) -> pa.RecordBatch:
    """Records `first` to `first + count - 1` of a device polled every `period_s` from
    `start_ns`, one value a variable, all of definition `def_id`."""
    rows = count * len(variables)
    ts = [start_ns + (first + k) * period_s * NS for k in range(count) for _ in variables]
    values = [float((first + k) % 997 + v) for k in range(count) for v in variables]
    return pa.RecordBatch.from_arrays([
        pa.array(ts, pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
        pa.array([0] * rows, pa.uint64()),
        pa.array(list(variables) * count, pa.int32()),
        pa.array(values, pa.float64()),
        pa.nulls(rows, pa.float64()),
        pa.nulls(rows, pa.float64()),
        pa.nulls(rows, pa.string()),
        pa.array([0] * rows, pa.uint8()),
        pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), pa.array([def_id])),
    ], schema=RECORDS_SCHEMA)


async def submit_days(store: Any, devices: int, days: int, period_s: int, chunk: int,
                      batch: Callable[[int, int], pa.RecordBatch]) -> None:
    """`days` of records a device, `chunk` records an append (`batch(first, count)`), each
    device in turn; committed, none dropped."""
    acks = []
    per_device = days * 86_400 // period_s
    for device in range(1, devices + 1):
        for first in range(0, per_device, chunk):
            acks.append(store.submit_records(str(device), batch(first, min(chunk,
                                                                           per_device - first))))
            await store.wait_for_room()
    await store.commit()
    assert not any(r.dropped for r in await asyncio.gather(*acks))
