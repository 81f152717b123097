"""Ranged reads decode only the frames their range may hold: a reader of the last minutes of a
live segment does not decode the hours before them, and gets exactly the rows a full read
filtered by the same range gives."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from records_util import T0, record

import store._stream
from store import Log, StoreOptions

FAST = StoreOptions(flush_s=0.01)
S = 10**9


def _filtered(table: pa.Table, start_ns: int | None, end_ns: int | None, seq_from: int | None,
              seq_to: int | None) -> list[tuple[int, int, int]]:
    rows = zip(table.column("seq").to_pylist(), table.column("var").to_pylist(),
               table.column("ts").cast(pa.int64()).to_pylist(), strict=True)
    return [(seq, var, ts) for seq, var, ts in rows
            if (start_ns is None or ts >= start_ns) and (end_ns is None or ts < end_ns)
            and (seq_from is None or seq >= seq_from) and (seq_to is None or seq <= seq_to)]


def _rows(table: pa.Table) -> list[tuple[int, int, int]]:
    return _filtered(table, None, None, None, None)


async def test_ranged_reads_equal_a_filtered_full_read_and_skip_frames(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(20261206)
    async with await Log.open(tmp_path, FAST) as log:
        # One commit a record: one frame each, in one live segment; some stamped out of order
        # (a late record, a clock step back), as a cut's window selection must cope with.
        stamps = [T0 + k * 10 * S + rng.choice([0, 0, 0, -700 * S, 300 * S]) for k in range(60)]
        for k, ts in enumerate(stamps):
            await log.append_records("1", record(ts, n_vars=3, first_value=k))
        full = log.records("1")
        assert full.num_rows == 180

        decoded: list[int] = []
        real = store._stream.decode_frames

        def counting(buf, schema, frames, **kwargs):  # type: ignore[no-untyped-def]
            decoded.append(len(frames))
            return real(buf, schema, frames, **kwargs)

        monkeypatch.setattr(store._stream, "decode_frames", counting)
        for _ in range(300):
            bounds = [rng.choice([None, v]) for v in (
                rng.choice(stamps) + rng.choice([-1, 0, 1]), rng.choice(stamps) + rng.choice([0, 1]),
                rng.randint(0, 62), rng.randint(0, 62))]
            got = log.records("1", start_ns=bounds[0], end_ns=bounds[1], seq_from=bounds[2],
                              seq_to=bounds[3])
            assert _rows(got) == _filtered(full, *bounds), bounds
        decoded.clear()
        tail = log.records("1", seq_from=58)
        assert pc.unique(tail.column("seq")).to_pylist() == [58, 59, 60]
        assert decoded == [3], "a read of the last 3 records decodes their 3 frames only"
        decoded.clear()
        assert log.records("1", start_ns=max(stamps) + 1).num_rows == 0
        assert decoded == [0]
