"""`sunpm sd sql`'s `time`: a microsecond TIMESTAMPTZ, so steps between records subtract, and a
time range reaches the scan (the batches outside it are not decoded)."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
from plant import DAY, METER_DEF, NS, T0, Plant, day_batch, first_line_then_gone, hashes, sunpm

from sdcard.dump import open_dump
from sdcard.scan import duckdb_connection, records_dataset
from store import Log, StoreOptions


def test_the_steps_between_records_subtract(month: Plant) -> None:
    before = hashes(month.dump)
    ran = sunpm("sd", "sql", month.dump,
                "SELECT DISTINCT device, time - lag(time) OVER (PARTITION BY device, var "
                "ORDER BY time) AS step FROM records WHERE var = 1 ORDER BY ALL", "--format", "csv")
    assert ran.code == 0, ran.err
    rows = list(csv.reader(io.StringIO(ran.out)))
    # Every ten minutes; the first record of each device has no step.
    assert rows == [["device", "step"], ["1", "00:10:00"], ["1", ""], ["2", "00:10:00"],
                    ["2", ""]]
    span = sunpm("sd", "sql", month.dump, "SELECT max(time) - min(time) AS span, "
                 "age(max(time), min(time)) IS NOT NULL AS aged FROM records", "--format", "json")
    assert span.code == 0, span.err
    assert '"span": "31 days 00:30:00"' in span.out and '"aged": true' in span.out
    journal = sunpm("sd", "sql", month.dump, "SELECT min(time) + INTERVAL 1 DAY - min(time) AS d "
                    "FROM journal", "--format", "csv")
    assert journal.code == 0, journal.err
    assert list(csv.reader(io.StringIO(journal.out))) == [["d"], ["1 day"]]
    assert hashes(month.dump) == before


def test_a_time_range_is_handed_to_the_scan_and_answers_as_the_nanoseconds_do(
        month: Plant) -> None:
    dump = open_dump(month.dump)
    con = duckdb_connection(dump)
    where = "time >= '2021-02-10 00:00:00+00' AND time < '2021-02-11 00:00:00+00'"
    plan = con.execute(f"EXPLAIN SELECT count(*) FROM records WHERE {where}").fetchall()[0][1]
    scan = plan[plan.index("PYTHON_ARROW_SCAN"):]
    assert "Filters:" in scan and '"ts" >= ' in scan, plan
    (count, first, last), = con.execute(
        f"SELECT count(*), epoch_us(min(time)), epoch_us(max(time)) FROM records "
        f"WHERE {where}").fetchall()
    # The same rows as a filter on the store's own nanoseconds.
    table = records_dataset(dump).to_table(columns=["ts"])
    day = [t for t in table.column("ts").cast("int64").to_pylist()
           if 1_612_915_200 * NS <= t < 1_613_001_600 * NS]
    assert count == len(day) == 144 * 4 * 2
    assert (first, last) == (min(day) // 1000, max(day) // 1000)


def test_sub_microsecond_times_are_truncated_not_rounded_into_the_next_day(
        tmp_path: Path) -> None:
    # A parameter read 500 ns before midnight belongs to its UTC day; rounded to the
    # microsecond (as DuckDB's cast does) it would move to the next one.
    async def record() -> None:
        log = await Log.open(tmp_path / "store", StoreOptions(flush_s=0.05))
        try:
            def_id = log.put_definition("meter.csv", METER_DEF)
            batch = day_batch("1", def_id, [T0 + DAY])
            late = batch.column("ts").cast("int64").to_pylist()
            ts = pa.array([t - 500 for t in late], pa.int64()).cast(batch.schema.field("ts").type)
            await log.append_records("1", batch.set_column(0, "ts", ts))
            await log.commit()
        finally:
            await log.close()

    asyncio.run(record())
    con = duckdb_connection(open_dump(tmp_path / "store"))
    rows = con.execute("SELECT time::VARCHAR, count(*) FROM records "
                       "WHERE time < '2021-02-02 00:00:00+00' GROUP BY ALL").fetchall()
    assert rows == [("2021-02-01 23:59:59.999999+00", 4)]


def test_days_are_utc_days_whatever_the_zone_of_the_machine(month: Plant) -> None:
    # Two analysts, one in New York: the same question gives the same daily totals.
    root = Path(__file__).resolve().parents[2]
    query = "SELECT time::DATE AS day, count(*) AS n FROM records GROUP BY 1 ORDER BY 1 LIMIT 1"
    answers = []
    for zone in ("UTC", "America/New_York"):
        ran = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "sd", "sql", str(month.dump), query,
             "--format", "csv"], capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "TZ": zone, "PYTHONPATH": str(root)}, cwd=root)
        assert ran.returncode == 0, ran.stderr
        answers.append(ran.stdout)
    assert answers[0] == answers[1] == "day,n\n2021-02-01,1144\n"
    # The plant's local days, when asked for.
    local = sunpm("sd", "sql", month.dump, f"SET TimeZone = 'Europe/Paris'; {query}",
                  "--format", "csv")
    assert local.out == "day,n\n2021-02-01,1096\n", local.err


def test_a_reader_that_goes_away_ends_the_answer_quietly(month: Plant) -> None:
    # `sunpm sd sql ... | head -1`: the rest of the answer has nowhere to go; not an error.
    code, err = first_line_then_gone(month.dump, "SELECT * FROM records", {})
    assert (code, err) == (0, b"")
