"""Commit planning: the pure functions that conform an appended batch to the records schema,
split a device's pending batches by UTC day into records (runs of equal time stamps) and build
the journal's batches."""

from __future__ import annotations

import itertools
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from store._stream import DAY_NS
from store._work import PendingEvent
from store.errors import StoreError
from store.schema import JOURNAL_SCHEMA, RECORDS_SCHEMA

SEQ_INDEX: Final = RECORDS_SCHEMA.get_field_index("seq")
_TS_INDEX: Final = RECORDS_SCHEMA.get_field_index("ts")
_INPUT_NAMES: Final = tuple(n for n in RECORDS_SCHEMA.names if n != "seq")
INPUT_SCHEMA: Final = pa.schema([f for f in RECORDS_SCHEMA if f.name != "seq"],
                                metadata=RECORDS_SCHEMA.metadata)
_LOOSE_SCHEMA: Final = pa.schema([pa.field(f.name, f.type) for f in INPUT_SCHEMA])


def conform(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch with exactly INPUT_SCHEMA's columns (RECORDS_SCHEMA less `seq`, added at commit)."""
    if batch.schema.equals(INPUT_SCHEMA, check_metadata=False):
        return batch
    if "seq" in batch.schema.names:
        batch = batch.drop_columns(["seq"])
        if batch.schema.equals(INPUT_SCHEMA, check_metadata=False):
            return batch
    if tuple(batch.schema.names) != _INPUT_NAMES:
        raise StoreError(f"record batch columns {batch.schema.names} do not match the records "
                         f"schema {list(RECORDS_SCHEMA.names)}")
    try:
        if batch.schema.remove_metadata() == _LOOSE_SCHEMA:
            # Same types, only nullability flags differ (built without an explicit schema).
            return pa.RecordBatch.from_arrays(batch.columns, schema=INPUT_SCHEMA)
        return batch.cast(INPUT_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as err:
        raise StoreError(f"record batch does not fit the records schema: {err}") from err


def plan_groups(batches: list[pa.RecordBatch]
                 ) -> list[tuple[int, pa.RecordBatch, list[tuple[int, list[int]]], int, int]]:
    """Split a device's pending batches into one group per run of UTC days, in arrival order.

    Each group: (day, its rows merged, [(batch index, record run lengths)], ts min, ts max).
    The common case (all on one day) costs a handful of vectorised calls for the whole commit,
    not per batch: that is what keeps 254 devices x 100-row batches above 1M rows/s.
    """
    merged = pa.concat_batches(batches) if len(batches) > 1 else batches[0]
    ts = merged.column(_TS_INDEX).cast(pa.int64())
    bounds = pc.min_max(ts)
    lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
    if lo // DAY_NS == hi // DAY_NS:
        n = len(ts)
        starts = {0}
        pos = 0
        for batch in batches:
            starts.add(pos)
            pos += batch.num_rows
        if lo != hi:
            change = pc.not_equal(ts.slice(1), ts.slice(0, n - 1))
            starts.update(i + 1 for i in pc.indices_nonzero(change).to_pylist())
        cuts = sorted(starts) + [n]
        members: list[tuple[int, list[int]]] = []
        pos = 0
        k = 0
        for index, batch in enumerate(batches):
            end = pos + batch.num_rows
            runs: list[int] = []
            while k < len(cuts) - 1 and cuts[k] < end:
                runs.append(cuts[k + 1] - cuts[k])
                k += 1
            members.append((index, runs))
            pos = end
        return [(lo // DAY_NS, merged, members, lo, hi)]
    groups: list[tuple[int, list[pa.RecordBatch], list[tuple[int, list[int]]]]] = []
    for index, batch in enumerate(batches):
        for day, part, runs in split_by_day(batch):
            if groups and groups[-1][0] == day:
                groups[-1][1].append(part)
                groups[-1][2].append((index, runs))
            else:
                groups.append((day, [part], [(index, runs)]))
    out = []
    for day, parts, members in groups:
        rows = pa.concat_batches(parts) if len(parts) > 1 else parts[0]
        mm = pc.min_max(rows.column(_TS_INDEX).cast(pa.int64()))
        out.append((day, rows, members, mm["min"].as_py(), mm["max"].as_py()))
    return out


def record_runs(ts: pa.Array) -> list[int]:
    """Lengths of the runs of equal time stamps (one record each)."""
    n = len(ts)
    if n == 0:
        return []
    values = ts.cast(pa.int64())
    bounds = pc.min_max(values)
    if bounds["min"] == bounds["max"]:
        return [n]
    change = pc.not_equal(values.slice(1), values.slice(0, n - 1))
    starts = [0] + [i + 1 for i in pc.indices_nonzero(change).to_pylist()] + [n]
    return [b - a for a, b in itertools.pairwise(starts)]


def count_records(batch: pa.RecordBatch) -> int:
    return len(record_runs(batch.column(_TS_INDEX)))


def split_by_day(batch: pa.RecordBatch) -> list[tuple[int, pa.RecordBatch, list[int]]]:
    ts = batch.column(_TS_INDEX).cast(pa.int64())
    bounds = pc.min_max(ts)
    lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
    if lo // DAY_NS == hi // DAY_NS:
        return [(lo // DAY_NS, batch, record_runs(batch.column(_TS_INDEX)))]
    out: list[tuple[int, pa.RecordBatch, list[int]]] = []
    days = pc.divide(ts, pa.scalar(DAY_NS, pa.int64()))
    # Records in order of arrival; a day's rows stay together, a record never spans two days.
    order: list[int] = []
    for day in days.to_pylist():
        if not order or order[-1] != day:
            order.append(day)
    for day in order:
        part = batch.filter(pc.equal(days, day))
        out.append((day, part, record_runs(part.column(_TS_INDEX))))
    return out




def journal_batch(events: list[PendingEvent], seqs: list[int]) -> pa.RecordBatch:
    return pa.record_batch([
        pa.array([e.ts_ns for e in events], pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
        pa.array(seqs, pa.uint64()),
        pa.array([e.kind for e in events], pa.string()).dictionary_encode(),
        pa.array([e.device for e in events], pa.string()),
        pa.array([e.def_ for e in events], pa.string()).dictionary_encode(),
        pa.array([e.body for e in events], pa.string()),
    ], schema=JOURNAL_SCHEMA)
