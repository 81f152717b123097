"""Scaled values are the float64 nearest the exact decimal `CoefA × raw + CoefB`, in `sd sql`,
`sd export-parquet` and `ingest` alike: `230.1` for a raw 2301 and a CoefA of 0.1, where
`raw × 0.1` gave `230.10000000000002`."""

from __future__ import annotations

import asyncio
import json
import struct
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
from hypothesis import assume, given
from hypothesis import strategies as st
from plant import NS, T0, UID, Plant, sunpm

from sdcard.scaling import Scaling
from store import Log, StoreOptions

_coefficients = st.decimals(min_value=-100_000, max_value=100_000, places=4,
                            allow_nan=False, allow_infinity=False)


@given(raw=st.integers(-2**31, 2**32), coef_a=_coefficients, coef_b=_coefficients)
def test_a_scaled_register_is_the_float_nearest_the_exact_decimal(
        raw: int, coef_a: Decimal, coef_b: Decimal) -> None:
    scaling = Scaling.of(coef_a, coef_b)
    # Exact while the numerator is an integer float64 holds exactly (registers and the
    # coefficients of definition files are far below this).
    assume(abs(raw * scaling.numerator_a) + abs(scaling.numerator_b) < 2**53)
    exact = coef_a * raw + coef_b  # Decimal: exact at these sizes
    assert scaling.apply(float(raw)) == float(exact)


def test_sql_and_parquet_give_the_decimal_the_files_give(month: Plant, tmp_path: Path) -> None:
    query = ("SELECT DISTINCT raw, scaled FROM records WHERE name = 'V_L1' AND raw = 2301")
    ran = sunpm("sd", "sql", month.dump, query, "--format", "csv")
    assert ran.out == "raw,scaled\n2301.0,230.1\n", ran.err
    assert sunpm("sd", "export-parquet", month.dump, tmp_path / "pq").code == 0


    rows = duckdb.sql(f"SELECT DISTINCT scaled FROM read_parquet('{tmp_path}/pq/uid=*/device=*/"
                      "date=*/*.parquet') WHERE name = 'V_L1' AND raw = 2301").fetchall()
    assert rows == [(230.1,)]


F32_DEF = (b"modbusTCP;Meter;ACME;M3\n"
           b"1;3;0;F32;;Temp;;1;0;C;4\n"
           b"2;3;2;F32;;Power;;0.1;0;W;2\n")


def _widened(value: float) -> float:
    """A float32 register as the store keeps it: widened to float64."""
    return float(struct.unpack(">f", struct.pack(">f", value))[0])


def test_an_f32_register_reads_as_its_files_write_it(tmp_path: Path) -> None:
    # Temp read 1.1 (float32: 1.100000023841858 widened); Power's period: min 1.9, max 2.2 as
    # read (float32s), mean 2.05 (a float64, not a read).
    async def record() -> None:
        async with await Log.open(tmp_path / "store", StoreOptions(flush_s=0.05)) as log:
            def_id = log.put_definition("f32.csv", F32_DEF)
            batch = pa.record_batch({
                "ts": pa.array([T0 * NS] * 2, pa.timestamp("ns", tz="UTC")),
                "var": pa.array([1, 2], pa.int32()),
                "value": pa.array([_widened(1.1), 2.05]),
                "vmin": pa.array([None, _widened(1.9)], pa.float64()),
                "vmax": pa.array([None, _widened(2.2)], pa.float64()),
                "text": pa.array([None, None], pa.string()),
                "quality": pa.array([0, 0], pa.uint8()),
                "def": pa.array([def_id] * 2).dictionary_encode(),
            })
            await log.append_records("1", batch)
            await log.commit()
            snapshot = log.put_config({f"CONFIG/{UID}_config.ini": b"", "DEF/f32.csv": F32_DEF})
            await log.append_journal("config", {"snapshot": snapshot}, ts_ns=T0 * NS,
                                     commit_now=True)

    asyncio.run(record())
    expected = [(1, 1.1, 1.1, None, None), (2, 2.05, 0.205, 1.9, 2.2)]
    ran = sunpm("sd", "sql", tmp_path / "store", "SELECT var, raw, scaled, min, max FROM "
                "records ORDER BY var", "--format", "json")
    assert ran.code == 0, ran.err
    got = [tuple(row.values()) for row in json.loads(ran.out)]
    assert got == expected
    assert sunpm("sd", "export-parquet", tmp_path / "store", tmp_path / "pq").code == 0
    rows = duckdb.sql(f"SELECT var, raw, scaled, min, max FROM read_parquet('{tmp_path}/pq/"
                      "uid=*/device=*/date=*/*.parquet') ORDER BY var").fetchall()
    assert rows == expected
