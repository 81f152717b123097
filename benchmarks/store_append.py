"""Sustained log append with crash safety: 254 devices sending 100-row batches (DESIGN.md §7).

Ours: `store.Log`, group commit every second, one framed batch and one fsync per touched segment
per commit; the time runs until the last append is acknowledged (fsynced).
Baseline: DuckDB receiving the same batches, one INSERT per batch into one table, committed on the
same interval (a COMMIT is DuckDB's fsync of its write-ahead log).

    python benchmarks/store_append.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _records import DEF, T0
from _report import emit, figure_line

from store import RECORDS_SCHEMA, Log, StoreOptions

INPUT = pa.schema([f for f in RECORDS_SCHEMA if f.name != "seq"])


def make_batches(devices: int, rows: int, steps: int) -> list[list[pa.RecordBatch]]:
    """steps x devices batches: one record of `rows` variables each, as a recorder sends them."""
    var = pa.array(range(1, rows + 1), pa.int32())
    nulls = pa.nulls(rows, pa.float64())
    text = pa.nulls(rows, pa.string())
    quality = pa.array([0] * rows, pa.uint8())
    def_col = pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), pa.array([DEF]))
    out = []
    for step in range(steps):
        ts = pa.array([T0 + step * 10**9] * rows, pa.int64()).cast(pa.timestamp("ns", tz="UTC"))
        row = []
        for dev in range(devices):
            value = pa.array([float(step * 1000 + dev + i) for i in range(rows)], pa.float64())
            row.append(pa.RecordBatch.from_arrays(
                [ts, var, value, nulls, nulls, text, quality, def_col], schema=INPUT))
        out.append(row)
    return out


async def _ours(root: Path, batches: list[list[pa.RecordBatch]], flush_s: float
                ) -> tuple[float, int]:
    log = await Log.open(root, StoreOptions(flush_s=flush_s))
    names = [str(d + 1) for d in range(len(batches[0]))]
    # Devices already recording (their directories and open segments exist): sustained rate.
    await asyncio.gather(*[log.append_records(name, batch, commit_now=True)
                           for name, batch in zip(names, batches[0], strict=True)])
    started = time.perf_counter()
    commits_before = log.commits
    acks = []
    for row in batches[1:]:
        for name, batch in zip(names, row, strict=True):
            acks.append(log.submit_records(name, batch))
        await log.wait_for_room()
    results = await asyncio.gather(*acks)
    elapsed = time.perf_counter() - started
    commits = log.commits - commits_before
    await log.close()
    assert all(not r.dropped for r in results)
    return elapsed, commits


def _theirs(root: Path, batches: list[list[pa.RecordBatch]], flush_s: float) -> float:
    import duckdb

    con = duckdb.connect(str(root / "bench.duckdb"))
    con.execute("CREATE TABLE records (device VARCHAR, ts TIMESTAMPTZ, var INTEGER, "
                "value DOUBLE, vmin DOUBLE, vmax DOUBLE, text VARCHAR, quality UTINYINT, "
                "def VARCHAR)")
    for dev, batch in enumerate(batches[0]):
        con.register("incoming", batch)
        con.execute(f"INSERT INTO records SELECT '{dev + 1}', * FROM incoming")
        con.unregister("incoming")
    started = time.perf_counter()
    last_commit = started
    con.execute("BEGIN")
    for row in batches[1:]:
        for dev, batch in enumerate(row):
            con.register("incoming", batch)
            con.execute(f"INSERT INTO records SELECT '{dev + 1}', * FROM incoming")
            con.unregister("incoming")
        now = time.perf_counter()
        if now - last_commit >= flush_s:
            con.execute("COMMIT")
            con.execute("BEGIN")
            last_commit = now
    con.execute("COMMIT")
    elapsed = time.perf_counter() - started
    con.close()
    return elapsed


def run(devices: int = 254, rows: int = 100, steps: int = 401, theirs_steps: int = 4,
        flush_s: float = 1.0, n: int = 3) -> dict[str, object]:
    batches = make_batches(devices, rows, steps)
    total = devices * rows * (steps - 1)  # the first step only warms the devices up
    theirs_batches = batches[:theirs_steps + 1]
    theirs_total = devices * rows * theirs_steps
    ours_s: list[float] = []
    theirs_s: list[float] = []
    base = Path(tempfile.mkdtemp(prefix="sunpm-bench-append-"))
    try:
        # Warm-up: imports, first segment creation, DuckDB start-up.
        asyncio.run(_ours(base / "warm", batches[:3], flush_s))
        _theirs(_fresh(base / "warm-db"), batches[:2], flush_s)
        commits: list[int] = []
        for k in range(n):
            elapsed, count = asyncio.run(_ours(base / f"ours{k}", batches, flush_s))
            ours_s.append(elapsed)
            commits.append(count)
            theirs_s.append(_theirs(_fresh(base / f"theirs{k}"), theirs_batches, flush_s))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    # Rates per run: for the odd n used here their median is total / median(time).
    return figure_line(
        "store_append",
        f"duckdb {_duckdb_version()}, same batches, one INSERT each, COMMIT every {flush_s:g} s",
        "records/s", [total / x for x in ours_s], [theirs_total / x for x in theirs_s],
        digits=None, speedup_digits=2,
        n=n,
        devices=devices,
        rows_per_batch=rows,
        records_ours=total,
        records_theirs=theirs_total,
        flush_s=flush_s,
        ours_s=[round(x, 3) for x in ours_s],
        # Appenders blocked by the 64 MiB bound start the next commit early: under this
        # overload commits come closer than flush_s (still one fsync per segment per commit).
        ours_commits=commits,
        theirs_s=[round(x, 3) for x in theirs_s])


def _fresh(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _duckdb_version() -> str:
    import duckdb

    return str(duckdb.__version__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny size, for a smoke test")
    args = parser.parse_args()
    if args.quick:
        result = run(devices=6, rows=10, steps=6, theirs_steps=2, flush_s=0.05, n=1)
    else:
        result = run()
    emit(result)


if __name__ == "__main__":
    main()
